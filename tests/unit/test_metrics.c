/*
 * test_metrics.c — the per-thread counters and the Prometheus text renderer.
 *
 * Counts are made on several threads and must add up in one scrape; the
 * output is checked line by line here, and once whole by Prometheus's own
 * parser (python3-prometheus-client's text_string_to_metric_families,
 * through /usr/bin/python3), so a format mistake the string checks miss
 * still fails.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"

static const char *const methods[] = { "Register", "Login", "Verify" };
enum { M_REGISTER, M_LOGIN, M_VERIFY };

static int setup(void **state)
{
    (void)state;
    authd_metrics_set_methods(methods, 3);
    authd_metrics_reset();
    return 0;
}

/* render returns the scrape with the given gauges (NULL: none but the
 * build info); the caller frees it. */
static char *render(const authd_metrics_gauges *g)
{
    authd_metrics_gauges none = { .version = "0.1.0", .commit = "abc" };
    char *out = NULL;
    size_t len = 0;

    assert_int_equal(authd_metrics_render(g != NULL ? g : &none, &out, &len), AUTHD_OK);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

/* value finds the line that starts with series (name and labels, exactly)
 * followed by a space and returns its value; -1 when there is none. */
static double value(const char *text, const char *series)
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

struct burst {
    unsigned method;
    authd_code code;
    uint64_t latency_ns;
    int n;
};

static void *count_burst(void *arg)
{
    const struct burst *b = arg;
    for (int i = 0; i < b->n; i++)
        authd_metrics_request(b->method, b->code, b->latency_ns);
    return NULL;
}

/* Counts from three threads (two of them already gone at the scrape) add
 * up; the histogram's buckets are cumulative and its count is the sum. */
static void threads_add_up(void **state)
{
    (void)state;
    struct burst a = { M_VERIFY, AUTHD_OK, 5000, 1000 }; /* 5 µs: first bucket */
    struct burst b = { M_VERIFY, AUTHD_OK, 30000, 500 }; /* 30 µs: le 5e-05 */
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, count_burst, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, count_burst, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    authd_metrics_request(M_VERIFY, AUTHD_UNAUTHENTICATED, 20000000000u); /* 20 s: +Inf only */

    char *t = render(NULL);
    assert_true(value(t, "authd_requests_total{method=\"Verify\",code=\"OK\"}") == 1500);
    assert_true(value(t, "authd_requests_total{method=\"Verify\",code=\"UNAUTHENTICATED\"}") == 1);
    /* OK is there from zero for every named method; other codes once seen. */
    assert_true(value(t, "authd_requests_total{method=\"Login\",code=\"OK\"}") == 0);
    assert_true(value(t, "authd_requests_total{method=\"Login\",code=\"INTERNAL\"}") == -1);
    const char *h = "authd_request_duration_seconds";
    char s[160];
    snprintf(s, sizeof s, "%s_bucket{method=\"Verify\",le=\"1e-05\"}", h);
    assert_true(value(t, s) == 1000);
    snprintf(s, sizeof s, "%s_bucket{method=\"Verify\",le=\"2.5e-05\"}", h);
    assert_true(value(t, s) == 1000);
    snprintf(s, sizeof s, "%s_bucket{method=\"Verify\",le=\"5e-05\"}", h);
    assert_true(value(t, s) == 1500);
    snprintf(s, sizeof s, "%s_bucket{method=\"Verify\",le=\"10\"}", h);
    assert_true(value(t, s) == 1500);
    snprintf(s, sizeof s, "%s_bucket{method=\"Verify\",le=\"+Inf\"}", h);
    assert_true(value(t, s) == 1501);
    snprintf(s, sizeof s, "%s_count{method=\"Verify\"}", h);
    assert_true(value(t, s) == 1501);
    /* 1000 x 5 µs + 500 x 30 µs + 20 s, exactly */
    assert_non_null(
        strstr(t, "authd_request_duration_seconds_sum{method=\"Verify\"} 20.020000000\n"));
    free(t);
}

/* Method indexes past the named ones, and codes past the enum, are folded
 * into "unknown" / UNKNOWN: the label set stays bounded. */
static void unknown_is_bounded(void **state)
{
    (void)state;
    authd_metrics_request(AUTHD_METRICS_METHOD_UNKNOWN, AUTHD_UNIMPLEMENTED, 1000);
    authd_metrics_request(7, AUTHD_OK, 1000); /* not named */
    authd_metrics_request(9999, (authd_code)99, 1000); /* out of range */
    authd_metrics_rate_limited(9999);

    char *t = render(NULL);
    assert_true(value(t, "authd_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}") == 1);
    assert_true(value(t, "authd_requests_total{method=\"unknown\",code=\"OK\"}") == 1);
    assert_true(value(t, "authd_requests_total{method=\"unknown\",code=\"UNKNOWN\"}") == 1);
    assert_true(value(t, "authd_request_duration_seconds_count{method=\"unknown\"}") == 3);
    assert_true(value(t, "authd_rate_limited_total{method=\"unknown\"}") == 1);
    assert_null(strstr(t, "method=\"(null)\""));
    free(t);
}

/* Login causes, rate limits, connection events and the gauges. */
static void logins_conns_gauges(void **state)
{
    (void)state;
    authd_metrics_login_failure(authd_metrics_login_cause_of("wrong_password"));
    authd_metrics_login_failure(authd_metrics_login_cause_of("wrong_password"));
    authd_metrics_login_failure(authd_metrics_login_cause_of("locked"));
    authd_metrics_login_failure(authd_metrics_login_cause_of("throttled"));
    authd_metrics_login_failure(authd_metrics_login_cause_of("something new"));
    authd_metrics_rate_limited(M_LOGIN);
    for (int i = 0; i < 5; i++) {
        authd_metrics_conn(AUTHD_MX_CONN_ACCEPTED);
        authd_metrics_conn(AUTHD_MX_CONN_OPENED);
    }
    authd_metrics_conn(AUTHD_MX_CONN_CLOSED);
    authd_metrics_conn(AUTHD_MX_CONN_REFUSED_PER_SOURCE);
    authd_metrics_conn(AUTHD_MX_CONN_EVICTED_IDLE);

    authd_metrics_gauges g = { .has_store = true,
        .sessions = 42,
        .users = 7,
        .has_hash_pool = true,
        .hash_queued = 3,
        .hash_running = 2,
        .hash_workers = 2,
        .log_dropped = 11,
        .version = "0.1.0",
        .commit = "a\"b\\c\nd" };
    char *t = render(&g);
    assert_true(value(t, "authd_login_failures_total{cause=\"wrong_password\"}") == 2);
    assert_true(value(t, "authd_login_failures_total{cause=\"locked\"}") == 1);
    assert_true(value(t, "authd_login_failures_total{cause=\"throttled\"}") == 1);
    assert_true(value(t, "authd_login_failures_total{cause=\"other\"}") == 1);
    assert_true(value(t, "authd_login_failures_total{cause=\"unknown_user\"}") == 0);
    assert_true(value(t, "authd_rate_limited_total{method=\"Login\"}") == 1);
    assert_true(value(t, "authd_connections_open") == 4);
    assert_true(value(t, "authd_connections_accepted_total") == 5);
    assert_true(
        value(t, "authd_connections_refused_total{limit=\"max_connections_per_source\"}") == 1);
    assert_true(value(t, "authd_connections_evicted_total{kind=\"idle\"}") == 1);
    assert_true(value(t, "authd_sessions") == 42);
    assert_true(value(t, "authd_users") == 7);
    assert_true(value(t, "authd_pool_queued_jobs{pool=\"hash\"}") == 3);
    assert_true(value(t, "authd_pool_running_jobs{pool=\"hash\"}") == 2);
    assert_true(value(t, "authd_pool_workers{pool=\"hash\"}") == 2);
    assert_true(value(t, "authd_pool_queued_jobs{pool=\"write\"}") == -1); /* not given */
    assert_true(value(t, "authd_log_lines_dropped_total") == 11);
    /* Label values are escaped as the format wants. */
    assert_true(value(t, "authd_build_info{version=\"0.1.0\",commit=\"a\\\"b\\\\c\\nd\"}") == 1);
    /* Every metric has its HELP and TYPE. */
    assert_non_null(strstr(t, "# TYPE authd_requests_total counter\n"));
    assert_non_null(strstr(t, "# TYPE authd_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE authd_sessions gauge\n"));
    assert_non_null(strstr(t, "# HELP authd_build_info "));
    free(t);
}

static const char parser_script[]
    = "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families\n"
      "fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}\n"
      "def val(fam, sample, **labels):\n"
      "    for s in fams[fam].samples:\n"
      "        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):\n"
      "            return s.value\n"
      "    raise SystemExit('missing %s %s %r' % (fam, sample, labels))\n"
      "assert fams['authd_requests'].type == 'counter'\n"
      "assert fams['authd_request_duration_seconds'].type == 'histogram'\n"
      "assert val('authd_requests', 'authd_requests_total', method='Verify', code='OK') == 2\n"
      "assert val('authd_request_duration_seconds', 'authd_request_duration_seconds_count',"
      " method='Verify') == 2\n"
      "assert abs(val('authd_request_duration_seconds', 'authd_request_duration_seconds_sum',"
      " method='Verify') - 8e-05) < 1e-12\n"
      "assert val('authd_login_failures', 'authd_login_failures_total',"
      " cause='unknown_user') == 1\n"
      "assert val('authd_build_info', 'authd_build_info', commit='quote\"d') == 1\n"
      "for f in fams.values():\n"
      "    if f.type != 'histogram':\n"
      "        continue\n"
      "    for m in {s.labels['method'] for s in f.samples}:\n"
      "        b = [s for s in f.samples if s.name.endswith('_bucket') and s.labels['method'] == "
      "m]\n"
      "        les = [float(s.labels['le']) for s in b]\n"
      "        assert les == sorted(les) and les[-1] == float('inf'), les\n"
      "        assert all(x.value <= y.value for x, y in zip(b, b[1:]))\n"
      "        assert b[-1].value == val(f.name, f.name + '_count', method=m)\n"
      "print('parsed', len(fams), 'families')\n";

/* The whole scrape, with every kind of series present, parsed by
 * Prometheus's Python parser; the script checks a few values as the
 * parser read them and the histogram's shape (buckets rising, +Inf equal
 * to _count). */
static void real_parser_reads_it(void **state)
{
    (void)state;
    authd_metrics_request(M_VERIFY, AUTHD_OK, 40000);
    authd_metrics_request(M_VERIFY, AUTHD_OK, 40000);
    authd_metrics_request(M_LOGIN, AUTHD_UNAUTHENTICATED, 30000000);
    authd_metrics_request(AUTHD_METRICS_METHOD_UNKNOWN, AUTHD_UNIMPLEMENTED, 1000);
    authd_metrics_login_failure(AUTHD_MX_LOGIN_UNKNOWN_USER);
    authd_metrics_rate_limited(M_REGISTER);
    authd_metrics_conn(AUTHD_MX_CONN_OPENED);
    authd_metrics_gauges g = { .has_store = true,
        .sessions = 1,
        .users = 1,
        .has_hash_pool = true,
        .has_write_pool = true,
        .hash_workers = 2,
        .write_workers = 1,
        .version = "0.1.0",
        .commit = "quote\"d" };
    char *t = render(&g);

    char path[] = "/tmp/test_metrics.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t, strlen(t)), (ssize_t)strlen(t));
    close(fd);
    free(t);
    char spath[] = "/tmp/test_metrics_py.XXXXXX";
    fd = mkstemp(spath);
    assert_true(fd >= 0);
    assert_int_equal(
        write(fd, parser_script, strlen(parser_script)), (ssize_t)strlen(parser_script));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", spath, path);
    int st = system(cmd);
    unlink(path);
    unlink(spath);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(threads_add_up, setup),
        cmocka_unit_test_setup(unknown_is_bounded, setup),
        cmocka_unit_test_setup(logins_conns_gauges, setup),
        cmocka_unit_test_setup(real_parser_reads_it, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
