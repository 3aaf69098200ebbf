/*
 * it_http.c — the side HTTP port: /healthz, /readyz and the Health RPC
 * (with `authctl health`) through start, serving and draining; the
 * listener's refusals; forward-auth over the real binary.
 */
#include "harness.h"
#include "http_client.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEALTH "/authd.v1.Auth/Health"

/* One server with a side port, and where to reach it. */
struct hs {
    it_server *s;
    char url_file[400];
    char http[256]; /* the side port's bound URL */
};

/*
 * hs_start starts authd with --http-listen (http://127.0.0.1:0 unless
 * listen says otherwise) and more flags (NULL-terminated, may be NULL),
 * and reads the side port's URL from --http-url-file.
 */
static void hs_start(struct hs *h, const char *listen, const char *const *more)
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
    it_launch(h->s);
    size_t len = 0;
    char *u = it_read_file(h->url_file, &len);
    assert_non_null(u);
    while (len > 0 && (u[len - 1] == '\n' || u[len - 1] == '\r'))
        u[--len] = '\0';
    snprintf(h->http, sizeof h->http, "%s", u);
    free(u);
}

/* authctl_health runs `authctl health` against s; returns its exit status
 * and copies its stdout into out. */
static int authctl_health(const it_server *s, char *out, size_t cap)
{
    const char *argv[] = { AUTHCTL_BIN, "--url", s->url, "--ca", IT_CA, "health", NULL };
    it_proc p;
    it_run(argv, NULL, NULL, &p);
    snprintf(out, cap, "%s", p.out);
    int st = p.status;
    it_proc_free(&p);
    return st;
}

/* ---- health and readiness ------------------------------------------------ */

/* A serving authd: /healthz and /readyz 200 (JSON, not cacheable), HEAD
 * too; other methods 405, other paths 404; the Health RPC says SERVING
 * and `authctl health` exits 0. */
static void http_health_serving(void **state)
{
    struct hs h;
    it_http_resp r;
    char v[256];

    hs_start(&h, NULL, NULL);
    assert_true(strncmp(h.http, "http://127.0.0.1:", 17) == 0);

    it_http_get(h.http, "/healthz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(it_http_header(&r, "Cache-Control", v, sizeof v));
    assert_string_equal(v, "no-store");
    assert_non_null(strstr(r.body, "\"alive\""));
    it_http_free(&r);

    it_http_get(h.http, "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(it_http_header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json");
    assert_non_null(strstr(r.body, "{\"status\":\"SERVING\",\"failing\":[]}"));
    it_http_free(&r);

    it_http_request(h.http, "HEAD", "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    it_http_free(&r);

    it_http_request(h.http, "POST", "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_true(it_http_header(&r, "Allow", v, sizeof v));
    it_http_free(&r);

    it_http_get(h.http, "/metricz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    it_http_free(&r);
    it_http_get(h.http, "/healthz/", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 404); /* exact paths only */
    it_http_free(&r);

    it_raw raw;
    it_raw_open(&raw, h.s);
    Authd__V1__ReplyEnvelope *rep = it_raw_rpc(&raw, HEALTH, 1, NULL, 0);
    assert_int_equal(rep->code, AUTHD_OK);
    Authd__V1__HealthResponse *hr
        = authd__v1__health_response__unpack(NULL, rep->body.len, rep->body.data);
    assert_non_null(hr);
    assert_int_equal(hr->status, AUTHD__V1__HEALTH_RESPONSE__STATUS__SERVING);
    assert_int_equal(hr->n_failing, 0);
    authd__v1__health_response__free_unpacked(hr, NULL);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    it_raw_close(&raw);

    assert_int_equal(authctl_health(h.s, v, sizeof v), 0);
    assert_string_equal(v, "SERVING\n");

    it_finish(h.s);
    (void)state;
}

/* The failed Login parked on the fail floor: in flight while we look. */
struct parked {
    atomic_int done;
    int code;
};

static void on_login(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct parked *p = arg;
    (void)st;
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    p->code = code;
    atomic_store(&p->done, 1);
}

/*
 * Draining: with a request in flight (a failed Login held until the
 * 3 s fail floor), SIGTERM turns /readyz 503 naming "draining" and the
 * Health RPC on an open connection DRAINING (other calls are refused),
 * while /healthz stays 200; the Login is still answered, then authd exits
 * 0 and the side port is gone.
 */
static void http_draining(void **state)
{
    static const char *const more[] = { "--login-fail-floor-ms", "3000", NULL };
    struct hs h;
    it_http_resp r;
    struct parked p = { 0 };
    authd_status st;

    hs_start(&h, NULL, more);
    authd_client *c = it_client(h.s);
    it_register(c, "drainer", "drainer@example.com", "a password for draining", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* The Login goes first on the connection; once the Health call sent
     * after it is answered, authd has read the Login: it is in flight. */
    Authd__V1__LoginRequest lr = AUTHD__V1__LOGIN_REQUEST__INIT;
    lr.login = "drainer";
    lr.password = "not the password";
    uint64_t sent = it_mono_ms();
    assert_int_equal(authd_client_login_async(c, &lr, on_login, &p), 0);
    Authd__V1__HealthRequest hq = AUTHD__V1__HEALTH_REQUEST__INIT;
    Authd__V1__HealthResponse *hr = NULL;
    assert_int_equal(authd_client_health(c, &hq, &hr, &st), AUTHD_OK);
    assert_int_equal(hr->status, AUTHD__V1__HEALTH_RESPONSE__STATUS__SERVING);
    authd__v1__health_response__free_unpacked(hr, NULL);
    hr = NULL;
    assert_int_equal(atomic_load(&p.done), 0);

    assert_int_equal(kill(h.s->pid, SIGTERM), 0);
    assert_true(it_http_wait_status(h.http, "/readyz", 503, IT_CALL_TIMEOUT_MS));
    /* Still before the Login's answer (3 s from its receipt): the checks
     * below see a draining server, not a stopped one. */
    it_http_get(h.http, "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"status\":\"DRAINING\""));
    assert_non_null(strstr(r.body, "\"draining\""));
    it_http_free(&r);
    it_http_get(h.http, "/healthz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    /* An open connection still gets Health's answer: DRAINING. */
    assert_int_equal(authd_client_health(c, &hq, &hr, &st), AUTHD_OK);
    assert_int_equal(hr->status, AUTHD__V1__HEALTH_RESPONSE__STATUS__DRAINING);
    assert_int_equal(hr->n_failing, 1);
    assert_string_equal(hr->failing[0], "draining");
    authd__v1__health_response__free_unpacked(hr, NULL);
    /* ...while other calls are refused. */
    it_verify(c, "x.y.z", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, "SHUTTING_DOWN");
    if (atomic_load(&p.done))
        fail_msg("the Login was answered before the checks ended (%llu ms after it was sent): "
                 "the machine is too slow for this test's 3 s window",
            (unsigned long long)(it_mono_ms() - sent));

    /* The Login is answered, then authd exits 0 (it_stop's SIGTERM is a
     * second one; it waits for the exit). */
    uint64_t end = it_mono_ms() + 3000 + IT_CALL_TIMEOUT_MS;
    while (!atomic_load(&p.done) && it_mono_ms() < end)
        it_nap_ms(10);
    assert_int_equal(atomic_load(&p.done), 1);
    assert_int_equal(p.code, AUTHD_UNAUTHENTICATED);
    authd_client_close(c);
    it_stop(h.s);
    it_http_get(h.http, "/healthz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 0); /* connection refused: gone with the process */
    it_http_free(&r);
    it_free(h.s);
    (void)state;
}

/* authctl health against a server that is gone: non-zero (3, transport). */
static void http_authctl_health_unreachable(void **state)
{
    struct hs h;
    char out[256];

    hs_start(&h, NULL, NULL);
    it_stop(h.s);
    int st = authctl_health(h.s, out, sizeof out);
    assert_int_equal(st, 3);
    assert_string_equal(out, "");
    it_free(h.s);
    (void)state;
}

/* ---- the listener's rules ------------------------------------------------ */

/* run_refused runs authd with these side-port flags and expects exit 2 or
 * 1 (start-up refused) with needle in stderr. */
static void run_refused(const char *const *flags, const char *needle)
{
    it_opts o = { 0 };
    it_server *s = it_new(&o);
    const char *argv[64];
    size_t n = 0;
    it_proc p;

    it_argv(s, NULL, argv, 40);
    while (argv[n] != NULL)
        n++;
    for (size_t i = 0; flags[i] != NULL; i++)
        argv[n++] = flags[i];
    argv[n] = NULL;
    it_run(argv, NULL, NULL, &p);
    assert_int_not_equal(p.status, 0);
    if (strstr(p.err, needle) == NULL)
        fail_msg("stderr lacks \"%s\":\n%s", needle, p.err);
    it_proc_free(&p);
    it_free(s);
}

/* Plaintext on a non-loopback address is refused at start-up, with the
 * reason and the way out; a bad URL and a missing certificate name the
 * flag or the file. */
static void http_listener_refusals(void **state)
{
    static const char *const plain[] = { "--http-listen", "http://0.0.0.0:0", NULL };
    static const char *const scheme[] = { "--http-listen", "ftp://127.0.0.1:0", NULL };
    static const char *const path[] = { "--http-listen", "http://127.0.0.1:0/x", NULL };
    static const char *const nocert[]
        = { "--http-listen", "https://127.0.0.1:0", "--http-tls-cert", "/nonexistent/c.pem", NULL };

    run_refused(plain, "plaintext HTTP is allowed only on a loopback address");
    run_refused(plain, "--http-allow-plaintext");
    run_refused(scheme, "expected http://HOST:PORT or https://HOST:PORT");
    run_refused(path, "expected HOST:PORT");
    run_refused(nocert, "/nonexistent/c.pem: No such file or directory");
    (void)state;
}

/* --http-allow-plaintext lets a non-loopback plaintext port start (bound
 * to the wildcard address; reached here over loopback). */
static void http_allow_plaintext_flag(void **state)
{
    static const char *const more[] = { "--http-allow-plaintext", NULL };
    struct hs h;
    it_http_resp r;
    char url[300];

    hs_start(&h, "http://0.0.0.0:0", more);
    const char *port = strrchr(h.http, ':');
    snprintf(url, sizeof url, "http://127.0.0.1%s", port);
    it_http_get(url, "/healthz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    it_finish(h.s);
    (void)state;
}

/* https:// on the side port, with the main port's certificate by default:
 * a client verifying against the dev CA gets /readyz. */
static void http_tls_side_port(void **state)
{
    struct hs h;
    it_http_resp r;

    hs_start(&h, "https://127.0.0.1:0", NULL);
    assert_true(strncmp(h.http, "https://127.0.0.1:", 18) == 0);
    it_http_get(h.http, "/readyz", NULL, NULL, IT_CA, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    it_finish(h.s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(http_health_serving, it_teardown),
        cmocka_unit_test_teardown(http_draining, it_teardown),
        cmocka_unit_test_teardown(http_authctl_health_unreachable, it_teardown),
        cmocka_unit_test_teardown(http_listener_refusals, it_teardown),
        cmocka_unit_test_teardown(http_allow_plaintext_flag, it_teardown),
        cmocka_unit_test_teardown(http_tls_side_port, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.http", tests, NULL, NULL);
}
