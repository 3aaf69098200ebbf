/*
 * it_http_abuse.c — what one peer can do to the side HTTP port (issue 9,
 * red team), against the real binary: hold every connection slot so the
 * health probes and the scraper of another address are starved, and make
 * authd write a log line per malformed request; an https:// side port
 * offering older TLS than the main port.
 *
 * The peers are plain TCP sockets bound to chosen 127.0.0.0/8 addresses,
 * so authd sees distinct sources. Every refusal is paired with a request
 * from another source that must still succeed. Waiting is polling with a
 * deadline or a read with a timeout, never a bare sleep.
 */
#include "harness.h"
#include "http_client.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/ssl.h>

#define WAIT_MS 10000 /* generous: ASan builds on two busy cores */

struct hs {
    it_server *s;
    char url_file[400];
    char http[256];
    int port;
};

/* hs_start_at starts authd with a side port on listen (NULL: plaintext on
 * 127.0.0.1) and more flags (NULL-terminated, may be NULL), under a
 * descriptor limit of nofile (0: this process's). */
static void hs_start_at(struct hs *h, const char *listen, const char *const *more, unsigned nofile)
{
    it_opts o = { 0 };
    size_t k = 0;

    memset(h, 0, sizeof *h);
    h->s = it_new(&o);
    snprintf(h->url_file, sizeof h->url_file, "%s/http-url", h->s->dir);
    h->s->opts.extra[k++] = "--http-listen";
    h->s->opts.extra[k++] = listen != NULL ? listen : "http://127.0.0.1:0";
    h->s->opts.extra[k++] = "--http-url-file";
    h->s->opts.extra[k++] = h->url_file;
    for (size_t i = 0; more != NULL && more[i] != NULL; i++) {
        assert_true(k < IT_MAX_EXTRA);
        h->s->opts.extra[k++] = more[i];
    }
    h->s->opts.extra[k] = NULL;
    if (nofile == 0) {
        it_launch(h->s);
    } else {
        /* A wrapper lowers the descriptor limit (soft and hard) for authd
         * alone; this process keeps its own. */
        char wrap[400];
        snprintf(wrap, sizeof wrap, "%s/nofile.sh", h->s->dir);
        FILE *f = fopen(wrap, "w");
        assert_non_null(f);
        fprintf(f, "#!/bin/sh\nulimit -n %u || exit 125\nexec %s \"$@\"\n", nofile, AUTHD_BIN);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(chmod(wrap, 0700), 0);
        it_launch_bin(h->s, wrap, NULL);
    }
    size_t len = 0;
    char *u = it_read_file(h->url_file, &len);
    assert_non_null(u);
    while (len > 0 && (u[len - 1] == '\n' || u[len - 1] == '\r'))
        u[--len] = '\0';
    snprintf(h->http, sizeof h->http, "%s", u);
    free(u);
    const char *colon = strrchr(h->http, ':');
    assert_non_null(colon);
    h->port = atoi(colon + 1);
}

static void hs_start(struct hs *h, const char *const *more)
{
    hs_start_at(h, NULL, more, 0);
}

/* tcp_from connects to 127.0.0.1:port from local_ip; -1 when refused or
 * not accepted within 2 s. */
static int tcp_from(int port, const char *local_ip)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct sockaddr_in la = { .sin_family = AF_INET };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr), 1);
    assert_int_equal(inet_pton(AF_INET, local_ip, &la.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&la, sizeof la), 0);
    /* A full listen backlog drops SYNs: connect() gives up after this
     * (Linux applies the send timeout to connect) instead of retrying. */
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* closed_by_peer: true when fd reads EOF (or a reset) within deadline_ms. */
static bool closed_by_peer(int fd, int deadline_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char buf[512];

    for (uint64_t end = it_mono_ms() + (uint64_t)deadline_ms; it_mono_ms() < end;) {
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
    }
    return false;
}

/* count_events counts the log lines of event ev; *max_suppressed is the
 * largest "suppressed" among them. */
static size_t count_events(const it_server *s, const char *ev, json_int_t *max_suppressed)
{
    json_t *all = it_log_json(s), *line;
    size_t i, n = 0;

    *max_suppressed = 0;
    json_array_foreach(all, i, line)
    {
        if (!json_is_string(json_object_get(line, "event"))
            || strcmp(json_string_value(json_object_get(line, "event")), ev) != 0)
            continue;
        n++;
        json_t *sup = json_object_get(line, "suppressed");
        if (json_is_integer(sup) && json_integer_value(sup) > *max_suppressed)
            *max_suppressed = json_integer_value(sup);
    }
    json_decref(all);
    return n;
}

/* bad_request sends one malformed request (HTTP/0.9 style: no version)
 * from 127.0.0.4 and waits for authd to close the connection. */
static void bad_request(const struct hs *h)
{
    int fd = tcp_from(h->port, "127.0.0.4");
    assert_true(fd >= 0);
    send_all(fd, "GET /healthz\r\n\r\n");
    assert_true(closed_by_peer(fd, WAIT_MS));
    close(fd);
}

/* open_fds counts the descriptors process pid has open (/proc). */
static size_t open_fds(pid_t pid)
{
    char path[64];
    size_t n = 0;
    DIR *d;
    struct dirent *e;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    if ((d = opendir(path)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* wait_fds_settle waits (deadline WAIT_MS) until pid's descriptor count
 * has not changed for a second: authd has accepted what it will. */
static size_t wait_fds_settle(pid_t pid)
{
    size_t last = open_fds(pid);
    uint64_t since = it_mono_ms(), end = since + WAIT_MS;

    while (it_mono_ms() < end && it_mono_ms() - since < 1000) {
        it_nap_ms(50);
        size_t now = open_fds(pid);
        if (now != last) {
            last = now;
            since = it_mono_ms();
        }
    }
    return last;
}

/* ---- tests ----------------------------------------------------------------- */

/*
 * One source opens every slot of the side port (--http-max-connections)
 * and sends half a request line on each, as slowloris does, never
 * finishing. Before the per-source cap, every later connection waited in
 * the backlog: /healthz and /readyz from the orchestrator's address timed
 * out (a liveness probe would restart authd) and /metrics went dark. Now
 * the connections past --http-max-connections-per-source (default 64) are
 * closed at once and another address is still answered.
 */
static void http_one_source_cannot_hold_every_slot(void **state)
{
    static const char *const more[] = { "--http-max-connections", "100", NULL };
    enum { HOLD = 100 };
    struct hs h;
    int fds[HOLD];
    size_t closed = 0;
    it_http_resp r;

    (void)state;
    hs_start(&h, more);
    for (int i = 0; i < HOLD; i++) {
        fds[i] = tcp_from(h.port, "127.0.0.2");
        assert_true(fds[i] >= 0); /* the kernel's backlog takes it either way */
        send_all(fds[i], "GET /healthz HTTP/1.1\r\n");
    }
    /* Another address: the probe must be answered, within the deadline. */
    it_http_get(h.http, "/healthz", NULL, "127.0.0.3", NULL, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    it_http_get(h.http, "/readyz", NULL, "127.0.0.3", NULL, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    /* And the holder got no more than its share: the rest were closed. */
    for (uint64_t end = it_mono_ms() + WAIT_MS; closed < HOLD - 64 && it_mono_ms() < end;) {
        struct pollfd p[HOLD];
        char buf[256];
        for (int i = 0; i < HOLD; i++)
            p[i] = (struct pollfd) { .fd = fds[i], .events = POLLIN };
        if (poll(p, HOLD, 100) <= 0)
            continue;
        for (int i = 0; i < HOLD; i++) {
            if (fds[i] < 0 || (p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
                continue;
            ssize_t n = recv(fds[i], buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                close(fds[i]);
                fds[i] = -1; /* poll ignores it from now on */
                closed++;
            }
        }
    }
    print_message("%d connections from one source: %zu closed by authd\n", HOLD, closed);
    assert_true(closed >= HOLD - 64);
    for (int i = 0; i < HOLD; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    it_finish(h.s);
}

/*
 * libmicrohttpd writes a line for every malformed request and every
 * connection dropped half-way; authd passed each on as an http_error
 * warning, so any peer chose how fast the log grew (and crowded the audit
 * lines out of the log ring). Now: at most one a second, the next one
 * counting those held back. Also, a clean start writes no http_error line
 * (MHD used to warn that its logger option was not given first).
 */
static void http_error_lines_are_rate_limited(void **state)
{
    enum { BAD = 100 };
    struct hs h;
    json_int_t sup = 0;

    (void)state;
    hs_start(&h, NULL);
    assert_int_equal(count_events(h.s, "http_error", &sup), 0);

    uint64_t t0 = it_mono_ms();
    for (int i = 0; i < BAD; i++)
        bad_request(&h);
    uint64_t secs = (it_mono_ms() - t0) / 1000 + 1;
    assert_true(it_log_wait(h.s, "\"http_error\"", WAIT_MS));
    size_t lines = count_events(h.s, "http_error", &sup);
    print_message("%d malformed requests in %llu s: %zu http_error lines\n", BAD,
        (unsigned long long)secs, lines);
    assert_true(lines >= 1);
    assert_true(lines <= secs + 1);

    /* A later line reports how many were held back. */
    bool reported = false;
    for (uint64_t end = it_mono_ms() + WAIT_MS; !reported && it_mono_ms() < end;) {
        bad_request(&h);
        it_nap_ms(100);
        count_events(h.s, "http_error", &sup);
        reported = sup >= 1;
    }
    assert_true(reported);

    /* The side port still answers everyone else. */
    it_http_resp r;
    it_http_get(h.http, "/healthz", NULL, "127.0.0.3", NULL, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    it_finish(h.s);
}

/* tls_handshake_ok: does a TLS handshake with 127.0.0.1:port succeed for a
 * client offering at most max_ver (0: any) and ciphers (TLS 1.2 suites;
 * NULL: OpenSSL's defaults)? The client trusts the dev CA. */
static bool tls_handshake_ok(int port, int max_ver, const char *ciphers)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;
    int fd = tcp_from(port, "127.0.0.5");
    struct timeval tv = { WAIT_MS / 1000, 0 };
    bool ok;

    assert_non_null(ctx);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, IT_CA, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (max_ver != 0) {
        SSL_CTX_set_min_proto_version(ctx, 0);
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_ver), 1);
    }
    if (ciphers != NULL)
        assert_int_equal(SSL_CTX_set_cipher_list(ctx, ciphers), 1);
    ssl = SSL_new(ctx);
    assert_non_null(ssl);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    ok = SSL_connect(ssl) == 1;
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return ok;
}

/*
 * An https:// side port (it serves identity headers and tokens once
 * forward-auth is there) offers what the main port offers: TLS 1.2 and
 * 1.3, ECDHE, AEAD suites. libmicrohttpd's default GnuTLS priorities also
 * completed handshakes at TLS 1.0 and 1.1 and with CBC-SHA1 suites.
 */
static void http_tls_side_port_refuses_old_tls(void **state)
{
    static const struct {
        const char *what;
        int max_ver;
        const char *ciphers;
    } old[] = {
        { "TLS 1.0 only", TLS1_VERSION, "DEFAULT:@SECLEVEL=0" },
        { "TLS 1.1 only", TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0" },
        { "CBC suites only", TLS1_2_VERSION,
            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
            "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-SHA256" },
        { "RSA key exchange only", TLS1_2_VERSION,
            "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES128-SHA" },
    };
    struct hs h;
    it_http_resp r;

    (void)state;
    hs_start_at(&h, "https://127.0.0.1:0", NULL, 0);
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
        if (tls_handshake_ok(h.port, old[i].max_ver, old[i].ciphers))
            fail_msg("%s: the side port completed the handshake", old[i].what);
        /* and a modern client right after */
        assert_true(tls_handshake_ok(h.port, 0, NULL));
    }
    assert_true(tls_handshake_ok(h.port, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256"));
    it_http_get(h.http, "/healthz", NULL, NULL, IT_CA, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    it_finish(h.s);
}

/*
 * Side-port connections are descriptors of authd's own process. Under a
 * descriptor limit of 1024 (a common soft default outside the packaged
 * unit), peers holding side-port connections (60 from each of 20
 * addresses, within every per-source cap) used up the process's
 * descriptors and the main port's accept() failed: no client could
 * connect. Now the side port's cap is cut to what the limit leaves after
 * --max-connections (logged as fd_limit), and a client of the main port
 * is served while the side port is full.
 */
static void http_side_port_cannot_use_up_main_port_fds(void **state)
{
    static const char *const more[] = { "--max-connections", "256", NULL };
    enum { SOURCES = 20, PER = 60 };
    struct rlimit old;
    static int fds[SOURCES * PER];
    size_t n = 0;
    struct hs h;
    authd_status st;
    json_int_t sup;

    (void)state;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    if (old.rlim_max < SOURCES * PER + 256)
        skip(); /* this test needs room for its own sockets */
    if (old.rlim_cur < old.rlim_max) {
        old.rlim_cur = old.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    }
    hs_start_at(&h, NULL, more, 1024);
    assert_true(it_log_wait(h.s, "\"fd_limit\"", WAIT_MS));
    assert_int_equal(count_events(h.s, "fd_limit", &sup), 1);

    char src[32];
    for (int a = 0; a < SOURCES; a++) {
        snprintf(src, sizeof src, "127.0.0.%d", 10 + a);
        for (int i = 0; i < PER; i++) {
            int fd = tcp_from(h.port, src);
            if (fd < 0)
                continue;
            (void)send(fd, "GET /healthz HTTP/1.1\r\n", 23, MSG_NOSIGNAL);
            fds[n++] = fd;
        }
    }
    /* Once authd has taken what it will, the main port still answers a
     * new client. */
    size_t held = wait_fds_settle(h.s->pid);
    print_message("%zu side-port connections opened; authd holds %zu descriptors\n", n, held);
    authd_client *c = it_client(h.s);
    assert_int_equal(it_verify(c, "not-a-token", &st, NULL), AUTHD_UNAUTHENTICATED);
    authd_client_close(c);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    it_finish(h.s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(http_one_source_cannot_hold_every_slot, it_teardown),
        cmocka_unit_test_teardown(http_error_lines_are_rate_limited, it_teardown),
        cmocka_unit_test_teardown(http_tls_side_port_refuses_old_tls, it_teardown),
        cmocka_unit_test_teardown(http_side_port_cannot_use_up_main_port_fds, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
