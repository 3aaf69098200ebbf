/*
 * it_example.c — the example service (clients/examples, authd-example)
 * against the real authd over real TLS, driven over real HTTP/1.1 on
 * loopback: a plain socket client writes the request and reads the whole
 * answer, so what is checked is exactly what any HTTP client would get.
 *
 * One test, in order, because the point is one long-lived example process
 * with its one authd_client: public route, 401 (no header, malformed
 * header, refused token), /me for a user, 403 then 200 on /admin, a logout
 * seen at once (no cache), 503 while authd is down (never 200), the same
 * client serving again after authd restarts on the same address, and a
 * clean exit on SIGTERM. A second test: one address holding connections
 * open does not take the service away from the others.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define PW       "correct horse battery staple"
#define ADMIN_PW "tangerine wombat orchestra ladder"

/* An HTTP answer: status, the headers as received, the body. */
struct http {
    int status;
    char head[4096];
    char body[4096];
};

/* http_get sends "GET path" with the given Authorization value (NULL:
 * none) to 127.0.0.1:port and reads the answer to EOF (Connection:
 * close), everything bounded by a deadline. */
static void http_get(unsigned port, const char *path, const char *authz, struct http *h)
{
    char req[8192], buf[16384];
    size_t have = 0;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    uint64_t end = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    int n;

    memset(h, 0, sizeof *h);
    assert_true(fd >= 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    if (authz != NULL)
        n = snprintf(req, sizeof req,
            "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\nConnection: close\r\n\r\n",
            path, authz);
    else
        n = snprintf(req, sizeof req,
            "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    assert_true(n > 0 && (size_t)n < sizeof req);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        uint64_t now = it_mono_ms();
        if (now >= end)
            fail_msg("GET %s: no complete answer within %d ms", path, IT_CALL_TIMEOUT_MS);
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        assert_true(r >= 0);
        if (r == 0)
            break;
        have += (size_t)r;
        assert_true(have < sizeof buf - 1);
    }
    close(fd);
    buf[have] = '\0';
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &h->status), 1);
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    *sep = '\0';
    assert_true(strlen(buf) < sizeof h->head && strlen(sep + 4) < sizeof h->body);
    memcpy(h->head, buf, strlen(buf) + 1);
    memcpy(h->body, sep + 4, strlen(sep + 4) + 1);
}

/* header returns the value of header name (case-insensitive) in h, or
 * NULL, copied into out. */
static const char *header(const struct http *h, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);

    for (const char *line = strstr(h->head, "\r\n"); line != NULL; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            size_t len = e != NULL ? (size_t)(e - v) : strlen(v);
            snprintf(out, cap, "%.*s", (int)len, v);
            return out;
        }
    }
    return NULL;
}

/* get_expect is http_get asserting the status. */
static void get_expect(
    unsigned port, const char *path, const char *authz, int status, struct http *h)
{
    http_get(port, path, authz, h);
    if (h->status != status)
        fail_msg(
            "GET %s: expected %d, got %d\n%s\n\n%s", path, status, h->status, h->head, h->body);
}

/* The example process, started and stopped by the test. */
struct example {
    pid_t pid;
    unsigned port;
    char dir[256];
    char log[320];
};

static void example_start(struct example *e, const it_server *s)
{
    char url_file[320];
    pid_t parent = getpid();

    snprintf(e->dir, sizeof e->dir, "%s", s->dir);
    snprintf(url_file, sizeof url_file, "%s/example.url", e->dir);
    snprintf(e->log, sizeof e->log, "%s/example.log", e->dir);
    unlink(url_file);
    const char *argv[] = { AUTHD_EXAMPLE_BIN, "--authd-url", s->url, "--ca", IT_CA, "--listen",
        "127.0.0.1:0", "--url-file", url_file, NULL };
    int log_fd = open(e->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(log_fd >= 0);
    e->pid = fork();
    assert_true(e->pid >= 0);
    if (e->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        if (dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(log_fd);

    uint64_t end = it_mono_ms() + IT_START_DEADLINE_MS;
    for (;;) {
        char *u = it_read_file(url_file, NULL);
        if (u != NULL) {
            assert_int_equal(sscanf(u, "http://127.0.0.1:%u", &e->port), 1);
            free(u);
            return;
        }
        int status;
        if (waitpid(e->pid, &status, WNOHANG) == e->pid)
            fail_msg("authd-example exited during start-up (0x%x)", status);
        if (it_mono_ms() >= end)
            fail_msg("authd-example did not listen within %d ms", IT_START_DEADLINE_MS);
        it_nap_ms(10);
    }
}

/* example_stop sends SIGTERM and asserts a clean exit (status 0) within the
 * deadline. */
static void example_stop(struct example *e)
{
    uint64_t end = it_mono_ms() + IT_STOP_DEADLINE_MS;
    int status;

    assert_int_equal(kill(e->pid, SIGTERM), 0);
    for (;;) {
        pid_t r = waitpid(e->pid, &status, WNOHANG);
        if (r == e->pid)
            break;
        if (it_mono_ms() >= end) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, NULL, 0);
            fail_msg("authd-example did not exit within %d ms of SIGTERM", IT_STOP_DEADLINE_MS);
        }
        it_nap_ms(10);
    }
    e->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("authd-example exited with 0x%x", status);
}

static void example_end_to_end(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    struct example e;
    struct http h;
    authd_status st;
    char tok[4096], atok[4096], auth[4200], aauth[4200], v[256];

    /* A user who registers, and an admin made as the README says. */
    assert_int_equal(it_register(c, "alice", "alice@example.com", PW, &st, NULL), AUTHD_OK);
    const char *add[] = { AUTHD_BIN, "user", "add", "root", "--email", "root@example.com", "--role",
        "admin", "--password-stdin", "--data-dir", s->data_dir, "--insecure-weak-params",
        "--argon2-ops", "1", "--argon2-mem-kib", "64", NULL };
    it_proc p;
    it_run(add, NULL, ADMIN_PW "\n", &p);
    if (p.status != 0)
        fail_msg("authd user add: %d\n%s%s", p.status, p.out, p.err);
    it_proc_free(&p);
    it_login_token(c, "alice", PW, tok, sizeof tok, NULL);
    it_login_token(c, "root", ADMIN_PW, atok, sizeof atok, NULL);
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    snprintf(aauth, sizeof aauth, "Bearer %s", atok);

    example_start(&e, s);

    /* Public: no token needed; an unknown path is 404. */
    get_expect(e.port, "/public", NULL, 200, &h);
    get_expect(e.port, "/nowhere", auth, 404, &h);

    /* 401: no header (no error attribute), a malformed header, a token
     * authd refuses; always with WWW-Authenticate: Bearer. */
    get_expect(e.port, "/me", NULL, 401, &h);
    assert_non_null(header(&h, "WWW-Authenticate", v, sizeof v));
    assert_true(strncmp(v, "Bearer", 6) == 0);
    assert_null(strstr(v, "error="));
    get_expect(e.port, "/me", "Basic YWxpY2U6cHc=", 401, &h);
    assert_non_null(strstr(header(&h, "WWW-Authenticate", v, sizeof v), "invalid_request"));
    char forged[4200];
    snprintf(forged, sizeof forged, "%s", auth);
    /* A changed signature character, still in the base64url alphabet (a
     * bit flip of '-' or '_' would give a character no Bearer token may
     * hold, answered invalid_request instead). */
    char *sig = &forged[strlen(forged) - 3];
    *sig = *sig == 'A' ? 'B' : 'A';
    get_expect(e.port, "/me", forged, 401, &h);
    assert_non_null(strstr(header(&h, "WWW-Authenticate", v, sizeof v), "invalid_token"));
    get_expect(e.port, "/admin", NULL, 401, &h);

    /* 200: the caller as authd says. */
    get_expect(e.port, "/me", auth, 200, &h);
    assert_non_null(strstr(h.body, "\"username\":\"alice\""));
    assert_non_null(strstr(h.head, "application/json"));

    /* /admin: alice lacks the role (403, insufficient_scope), root has it. */
    get_expect(e.port, "/admin", auth, 403, &h);
    assert_non_null(strstr(header(&h, "WWW-Authenticate", v, sizeof v), "insufficient_scope"));
    get_expect(e.port, "/admin", aauth, 200, &h);
    assert_non_null(strstr(h.body, "hello, admin root"));
    get_expect(e.port, "/me", aauth, 200, &h);
    assert_non_null(strstr(h.body, "\"roles\":[\"admin\"]"));

    /* A logout is seen by the very next request: no cache by default. */
    assert_int_equal(it_logout(c, tok, &st), AUTHD_OK);
    get_expect(e.port, "/me", auth, 401, &h);
    authd_client_close(c);

    /* authd down: 503 with Retry-After, never 200, on every protected route. */
    s->opts.listen = s->url; /* the restart below binds the same address */
    it_stop(s);
    get_expect(e.port, "/me", aauth, 503, &h);
    assert_non_null(header(&h, "Retry-After", v, sizeof v));
    get_expect(e.port, "/admin", aauth, 503, &h);
    get_expect(e.port, "/public", NULL, 200, &h);

    /* authd back on the same address (same store and key: the token is
     * still good): the example's one client redials by itself, and the
     * very next request succeeds, with no 503 first: a call made while it
     * is reconnecting waits for the connection within its deadline (3 s by
     * default, above the client's 2 s longest back-off). */
    it_launch(s);
    get_expect(e.port, "/me", aauth, 200, &h);
    assert_non_null(strstr(h.body, "\"username\":\"root\""));
    get_expect(e.port, "/admin", aauth, 200, &h);

    example_stop(&e);
    it_finish(s);
    (void)state;
}

/*
 * One address opens as many connections as the example allows in all
 * (1024) and sends half a request line on each, never finishing
 * (slowloris). Before the per-address cap, every later client waited in
 * the listen backlog until those timed out: the service was down for
 * everyone. Now the connections past 64 from one address are closed at
 * once and a request from another address is answered.
 */
static void example_one_address_cannot_hold_every_connection(void **state)
{
    enum { HOLD = 1024 };
    it_server *s = it_start(NULL);
    struct example e;
    struct http h;
    struct rlimit rl;
    static int fds[HOLD];

    (void)state;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < HOLD + 256) {
        rl.rlim_cur = rl.rlim_max < HOLD + 256 ? rl.rlim_max : HOLD + 256;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < HOLD + 256)
            skip(); /* cannot open that many sockets here */
    }
    example_start(&e, s);
    for (int i = 0; i < HOLD; i++) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)e.port) };
        struct sockaddr_in la = { .sin_family = AF_INET };
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        inet_pton(AF_INET, "127.0.0.2", &la.sin_addr);
        assert_int_equal(bind(fds[i], (struct sockaddr *)&la, sizeof la), 0);
        if (connect(fds[i], (struct sockaddr *)&sa, sizeof sa) == 0)
            (void)send(fds[i], "GET /public HTTP/1.1\r\n", 23, MSG_NOSIGNAL);
    }
    /* From 127.0.0.1: answered within the deadline (http_get fails it
     * otherwise). */
    get_expect(e.port, "/public", NULL, 200, &h);
    for (int i = 0; i < HOLD; i++)
        close(fds[i]);
    example_stop(&e);
    it_finish(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(example_end_to_end, it_teardown),
        cmocka_unit_test_teardown(example_one_address_cannot_hold_every_connection, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
