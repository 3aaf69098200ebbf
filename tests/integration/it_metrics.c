/*
 * it_metrics.c — /metrics on the side HTTP port of the real authd, scraped
 * and parsed by Prometheus's own parser (scrape_metrics.py: urllib, then
 * python3-prometheus-client's text_string_to_metric_families, through
 * /usr/bin/python3), with counters moving as requests are made over the
 * main port: N Verify calls raise the Verify OK counter and its histogram
 * count by exactly N, a wrong password raises the failure counter of its
 * cause, a connection opened and closed moves the open-connections gauge.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SCRAPE_PY
#error "SCRAPE_PY: the path of tests/integration/scrape_metrics.py"
#endif

#define PYTHON "/usr/bin/python3"

/* One server with a side port, and where to reach it. */
struct ms {
    it_server *s;
    char url_file[400];
    char metrics_url[300];
    char out[400]; /* where the scraper writes the samples */
};

static void ms_start(struct ms *m)
{
    it_opts o = { 0 };

    memset(m, 0, sizeof *m);
    m->s = it_new(&o);
    snprintf(m->url_file, sizeof m->url_file, "%s/http-url", m->s->dir);
    snprintf(m->out, sizeof m->out, "%s/samples", m->s->dir);
    m->s->opts.extra[0] = "--http-listen";
    m->s->opts.extra[1] = "http://127.0.0.1:0";
    m->s->opts.extra[2] = "--http-url-file";
    m->s->opts.extra[3] = m->url_file;
    m->s->opts.extra[4] = NULL;
    it_launch(m->s);
    size_t len = 0;
    char *u = it_read_file(m->url_file, &len);
    assert_non_null(u);
    while (len > 0 && (u[len - 1] == '\n' || u[len - 1] == '\r'))
        u[--len] = '\0';
    snprintf(m->metrics_url, sizeof m->metrics_url, "%s/metrics", u);
    free(u);
}

/* scrape fetches /metrics and parses it with the real parser; returns the
 * samples, one "name{labels sorted} value" per line (free it). Fails the
 * test when the fetch, the content type, the parse or a histogram's shape
 * is wrong (the script's exit status and stderr say which). */
static char *scrape(const struct ms *m)
{
    const char *argv[] = { PYTHON, SCRAPE_PY, m->metrics_url, m->out, NULL };
    it_proc p;

    it_run(argv, NULL, NULL, &p);
    if (p.status != 0)
        fail_msg("scrape_metrics.py exited %d: %s", p.status, p.err);
    it_proc_free(&p);
    size_t len = 0;
    char *text = it_read_file(m->out, &len);
    assert_non_null(text);
    return text;
}

/* sample returns the value of series (exactly, labels sorted by name;
 * "name{}" for none) in a scrape, or -1 when it is absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

/* counter is sample() for a counter series that may not exist yet (0). */
static double counter(const char *text, const char *series)
{
    double v = sample(text, series);
    return v < 0 ? 0 : v;
}

#define VERIFY_OK   "authd_requests_total{code=\"OK\",method=\"Verify\"}"
#define VERIFY_CNT  "authd_request_duration_seconds_count{method=\"Verify\"}"
#define VERIFY_SUM  "authd_request_duration_seconds_sum{method=\"Verify\"}"
#define VERIFY_INF  "authd_request_duration_seconds_bucket{le=\"+Inf\",method=\"Verify\"}"
#define LOGIN_UNAUT "authd_requests_total{code=\"UNAUTHENTICATED\",method=\"Login\"}"
#define WRONG_PW    "authd_login_failures_total{cause=\"wrong_password\"}"
#define UNKNOWN_U   "authd_login_failures_total{cause=\"unknown_user\"}"
#define CONNS_OPEN  "authd_connections_open{}"
#define CONNS_ACC   "authd_connections_accepted_total{}"

/* Counters move by exactly what was done: N Verify calls, one wrong
 * password, one unknown user; the store gauges and build info are there. */
static void metrics_counters_move(void **state)
{
    (void)state;
    struct ms m;
    authd_status st;
    char tok[2048];
    enum { N = 37 };

    ms_start(&m);
    authd_client *c = it_client(m.s);
    it_register(c, "metrics.user", "metrics.user@example.com", "correct horse battery", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, "metrics.user", "correct horse battery", tok, sizeof tok, NULL);

    char *before = scrape(&m);
    assert_true(sample(before, "authd_users{}") == 1);
    assert_true(sample(before, "authd_sessions{}") == 1);
    assert_true(sample(before, "authd_requests_total{code=\"OK\",method=\"Register\"}") == 1);
    assert_true(sample(before, "authd_requests_total{code=\"OK\",method=\"Login\"}") == 1);
    assert_true(sample(before, "authd_pool_workers{pool=\"hash\"}") >= 1);
    assert_true(sample(before, "authd_log_lines_dropped_total{}") == 0);
    assert_non_null(strstr(before, "authd_build_info{commit=\""));
    assert_non_null(strstr(before, "\",version=\"0.1.0\"} 1.0\n"));

    for (int i = 0; i < N; i++) {
        it_verify(c, tok, &st, NULL);
        IT_EXPECT(&st, AUTHD_OK, NULL);
    }
    it_login(c, "metrics.user", "not the password at all", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_login(c, "nobody.here", "not the password at all", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");

    /* Each request is counted before its reply is sent: no waiting. */
    char *after = scrape(&m);
    assert_true(counter(after, VERIFY_OK) - counter(before, VERIFY_OK) == N);
    assert_true(counter(after, VERIFY_CNT) - counter(before, VERIFY_CNT) == N);
    assert_true(counter(after, VERIFY_INF) == counter(after, VERIFY_CNT));
    assert_true(counter(after, VERIFY_SUM) > counter(before, VERIFY_SUM));
    assert_true(counter(after, LOGIN_UNAUT) - counter(before, LOGIN_UNAUT) == 2);
    assert_true(counter(after, WRONG_PW) - counter(before, WRONG_PW) == 1);
    assert_true(counter(after, UNKNOWN_U) - counter(before, UNKNOWN_U) == 1);
    /* A failed login is answered no sooner than the failure floor: its
     * latency lands in the Login histogram, not Verify's. */
    assert_true(counter(after, "authd_request_duration_seconds_count{method=\"Login\"}") == 3);

    free(before);
    free(after);
    authd_client_close(c);
    it_finish(m.s);
}

/* wait_open polls the gauge until it reads want (true) or the deadline
 * passes: a connection is counted by the loop that serves it, a moment
 * after the client sees it connected or closed. */
static bool wait_open(const struct ms *m, double want, double *seen)
{
    uint64_t end = it_mono_ms() + 15000;
    do {
        char *t = scrape(m);
        *seen = sample(t, CONNS_OPEN);
        free(t);
        if (*seen == want)
            return true;
        it_nap_ms(50);
    } while (it_mono_ms() < end);
    return false;
}

/* The open-connections gauge follows a connection opened and closed on
 * the main port; accepted counts it. */
static void metrics_connections_gauge(void **state)
{
    (void)state;
    struct ms m;
    it_raw r;
    double seen = -1;

    ms_start(&m);
    char *t0 = scrape(&m);
    double open0 = sample(t0, CONNS_OPEN), acc0 = counter(t0, CONNS_ACC);
    assert_true(open0 >= 0);
    free(t0);

    it_raw_open(&r, m.s); /* TLS and SP headers exchanged: being served */
    if (!wait_open(&m, open0 + 1, &seen))
        fail_msg("connections_open: %g, want %g", seen, open0 + 1);
    char *t1 = scrape(&m);
    assert_true(counter(t1, CONNS_ACC) - acc0 == 1);
    free(t1);
    it_raw_close(&r);
    if (!wait_open(&m, open0, &seen))
        fail_msg("connections_open after close: %g, want %g", seen, open0);
    it_finish(m.s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(metrics_counters_move, it_teardown),
        cmocka_unit_test_teardown(metrics_connections_gauge, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
