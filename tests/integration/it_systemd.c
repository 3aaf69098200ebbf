/*
 * it_systemd.c — authd's sd_notify messages, received for real without
 * systemd: the test binds a unix datagram socket and starts authd with
 * NOTIFY_SOCKET (and WATCHDOG_USEC) naming it, which is all systemd does
 * for a Type=notify service (sd_notify(3)'s documented protocol).
 *
 * notify_ready_watchdog_stopping: READY=1 arrives, and when it does the
 * port accepts (a Verify is answered); WATCHDOG=1 arrives again and again
 * at about half WATCHDOG_USEC; STOPPING=1 arrives on SIGTERM, after which
 * authd exits 0.
 *
 * watchdog_stops_when_a_loop_wedges: authd-faulty with
 * IT_FAULT_WEDGE_LOOP_MS wedges one event loop (of two) after a while,
 * as a handler stuck in a lock would: WATCHDOG=1 stops coming (systemd
 * would restart authd), STATUS= says why, and the log has
 * watchdog_withheld. Before the wedge the pings came.
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MSG_MAX 64

struct note {
    uint64_t at; /* it_mono_ms() at receipt */
    char text[512];
};

/* notify_socket binds a datagram socket at dir/notify.sock; path gets
 * "NOTIFY_SOCKET=..." for the child's environment. */
static int notify_socket(const it_server *s, char *env, size_t cap)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_true((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify.sock", s->dir)
        < sizeof sa.sun_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    snprintf(env, cap, "NOTIFY_SOCKET=%s", sa.sun_path);
    return fd;
}

/* recv_note waits up to ms for one message; false on timeout. */
static bool recv_note(int fd, int ms, struct note *n)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    if (poll(&p, 1, ms) <= 0)
        return false;
    ssize_t r = recv(fd, n->text, sizeof n->text - 1, 0);
    assert_true(r >= 0);
    n->text[r] = '\0';
    n->at = it_mono_ms();
    return true;
}

/* has_line: text holds the assignment line want (sd_notify's format). */
static bool has_line(const char *text, const char *want)
{
    size_t n = strlen(want);

    for (const char *p = text; p != NULL; p = strchr(p, '\n')) {
        if (*p == '\n')
            p++;
        if (strncmp(p, want, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
    }
    return false;
}

/* verify_answers: a Verify of a made-up token gets an answer (the port
 * accepts and serves). */
static void verify_answers(const it_server *s)
{
    authd_client *c = it_client(s);
    authd_status st;

    it_verify(c, "not.a.token", &st, NULL);
    assert_int_equal(st.code, AUTHD_UNAUTHENTICATED);
    authd_client_close(c);
}

static void notify_ready_watchdog_stopping(void **state)
{
    it_server *s = it_new(NULL);
    char env[200];
    int fd = notify_socket(s, env, sizeof env);
    const char *extra[] = { env, "WATCHDOG_USEC=1000000", NULL };
    struct note n;
    bool ready = false;

    it_launch_bin(s, AUTHD_BIN, extra);
    /* READY=1, with a STATUS= line; when it is here, the port serves. */
    uint64_t end = it_mono_ms() + IT_START_DEADLINE_MS;
    while (!ready && it_mono_ms() < end && recv_note(fd, 1000, &n)) {
        assert_false(has_line(n.text, "STOPPING=1"));
        if (has_line(n.text, "READY=1")) {
            ready = true;
            assert_non_null(strstr(n.text, "STATUS=serving on tls+tcp://127.0.0.1:"));
        }
    }
    assert_true(ready);
    verify_answers(s);

    /* WATCHDOG=1 again and again, about every 500 ms. */
    int pings = 0;
    uint64_t first = 0, last = 0;
    end = it_mono_ms() + 4000;
    while (it_mono_ms() < end && recv_note(fd, 2000, &n)) {
        if (has_line(n.text, "WATCHDOG=1")) {
            if (pings++ == 0)
                first = n.at;
            last = n.at;
        }
    }
    fprintf(stderr, "[ systemd ] %d WATCHDOG=1 in %llu ms\n", pings,
        (unsigned long long)(last - first));
    assert_true(pings >= 4); /* 8 expected in 4 s; generous for busy machines */
    assert_true(last - first >= 1000);
    assert_true(it_log_wait(s, "\"event\":\"watchdog\"", 5000));

    /* SIGTERM: STOPPING=1 (read after the exit: datagrams wait in the
     * socket), and a clean exit. */
    it_stop(s);
    bool stopping = false;
    while (!stopping && recv_note(fd, 2000, &n))
        stopping = has_line(n.text, "STOPPING=1");
    assert_true(stopping);
    close(fd);
    it_free(s);
    (void)state;
}

static void watchdog_stops_when_a_loop_wedges(void **state)
{
    it_opts o = { .extra = { "--io-threads", "2" } };
    it_server *s = it_new(&o);
    char env[200];
    int fd = notify_socket(s, env, sizeof env);
    const char *extra[] = { env, "WATCHDOG_USEC=1000000", "IT_FAULT_WEDGE_LOOP_MS=2500", NULL };
    struct note n;
    int pings = 0;
    uint64_t last_ping = 0, gap = 0;
    bool stalled = false;

    it_launch_bin(s, AUTHD_FAULTY_BIN, extra);
    uint64_t start = it_mono_ms(), end = start + 12000;
    while (it_mono_ms() < end) {
        if (!recv_note(fd, 200, &n)) {
            if (pings > 0 && it_mono_ms() - last_ping > gap)
                gap = it_mono_ms() - last_ping;
            if (stalled && gap >= 4000)
                break; /* 4 s without a ping: systemd (WatchdogSec=1) would have acted */
            continue;
        }
        if (has_line(n.text, "WATCHDOG=1")) {
            if (pings > 0 && n.at - last_ping > gap)
                gap = n.at - last_ping;
            pings++;
            last_ping = n.at;
        }
        if (strstr(n.text, "STATUS=an event loop is stalled") != NULL)
            stalled = true;
    }
    fprintf(stderr, "[ systemd ] wedged loop: %d pings before, then none for %llu ms\n", pings,
        (unsigned long long)gap);
    assert_true(pings >= 1); /* before the wedge */
    assert_true(stalled);
    assert_true(gap >= 4000);
    assert_true(it_log_wait(s, "\"event\":\"watchdog_withheld\"", 5000));
    it_stop(s); /* the wedged loop lets go when the server stops */
    close(fd);
    it_free(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(notify_ready_watchdog_stopping, it_teardown),
        cmocka_unit_test_teardown(watchdog_stops_when_a_loop_wedges, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
