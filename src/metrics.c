/*
 * metrics.c — per-thread counter blocks and the Prometheus text renderer.
 *
 * Every counter of one thread lives in one flat array of 64-bit atomics
 * (struct block), cache-line aligned and padded to whole lines, so no two
 * threads ever write the same cache line. The owner adds with a relaxed
 * load and a relaxed store (not a read-modify-write: only the owner
 * writes), which compiles to a plain load/add/store. A scrape takes the
 * list's lock (only registration and scrapes take it), sums every block
 * with relaxed loads and renders the sums.
 *
 * Blocks are never freed while the process runs: a thread that ends (a
 * pool shut down) leaves its counts behind, so counters never go down.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define NCODES   (AUTHD_CODE_MAX + 1)
#define NMETHODS (AUTHD_METRICS_METHODS_MAX + 1) /* the last row is "unknown" */

/* Latency buckets (upper bounds), 10 µs to 10 s: Verify sits in the first
 * few, Login (argon2id plus the failure-time floor) in the middle. The
 * rendered le values are the same numbers, written out exactly. */
static const uint64_t bucket_ns[] = { 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000u,
    5000000000u, 10000000000u };
static const char *const bucket_le[]
    = { "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
          "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10" };
#define NFINITE  (sizeof bucket_ns / sizeof bucket_ns[0])
#define NBUCKETS (NFINITE + 1) /* + Inf */

/* Offsets into a block's flat array. */
#define OFF_REQ   0
#define OFF_HIST  (OFF_REQ + NMETHODS * NCODES)
#define OFF_HSUM  (OFF_HIST + NMETHODS * NBUCKETS)
#define OFF_LOGIN (OFF_HSUM + NMETHODS)
#define OFF_RL    (OFF_LOGIN + AUTHD_MX_LOGIN_CAUSES)
#define OFF_CONN  (OFF_RL + NMETHODS)
#define NVALUES   (OFF_CONN + AUTHD_MX_CONN_EVENTS)

#define LINE 64

struct block {
    _Atomic uint64_t v[NVALUES];
    struct block *next; /* written before the block is published, then never */
};

static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct block *blocks; /* under blocks_mu */
static _Thread_local struct block *tl_block __attribute__((tls_model("initial-exec")));

static const char *method_names[AUTHD_METRICS_METHODS_MAX];
static size_t n_methods;

static const char *const cause_names[AUTHD_MX_LOGIN_CAUSES]
    = { "unknown_user", "wrong_password", "user_disabled", "throttled", "locked", "other" };

void authd_metrics_set_methods(const char *const *names, size_t n)
{
    if (n > AUTHD_METRICS_METHODS_MAX)
        n = AUTHD_METRICS_METHODS_MAX;
    for (size_t i = 0; i < n; i++)
        method_names[i] = names[i];
    n_methods = n;
}

/* my_block returns this thread's block, making and registering it on the
 * thread's first event; NULL when out of memory (the event is not
 * counted, and the next one tries again). */
static struct block *my_block(void)
{
    struct block *b = tl_block;
    if (__builtin_expect(b != NULL, 1))
        return b;
    size_t size = (sizeof *b + LINE - 1) / LINE * LINE; /* whole lines: no neighbour */
    b = aligned_alloc(LINE, size);
    if (b == NULL)
        return NULL;
    memset(b, 0, size);
    pthread_mutex_lock(&blocks_mu);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&blocks_mu);
    tl_block = b;
    return b;
}

/* add: the owner's increment. Only the owning thread writes v, so a load
 * and a store suffice; both are atomic so a scrape never reads a torn
 * value. */
static inline void add(struct block *b, size_t i, uint64_t d)
{
    atomic_store_explicit(
        &b->v[i], atomic_load_explicit(&b->v[i], memory_order_relaxed) + d, memory_order_relaxed);
}

void authd_metrics_request(unsigned method, authd_code code, uint64_t latency_ns)
{
    struct block *b = my_block();
    unsigned c = (unsigned)code;
    size_t k = 0;

    if (b == NULL)
        return;
    if (method > AUTHD_METRICS_METHOD_UNKNOWN)
        method = AUTHD_METRICS_METHOD_UNKNOWN;
    if (c > AUTHD_CODE_MAX)
        c = AUTHD_UNKNOWN;
    while (k < NFINITE && latency_ns > bucket_ns[k])
        k++;
    add(b, OFF_REQ + (size_t)method * NCODES + c, 1);
    add(b, OFF_HIST + (size_t)method * NBUCKETS + k, 1);
    add(b, OFF_HSUM + method, latency_ns);
}

authd_metrics_login_cause authd_metrics_login_cause_of(const char *cause)
{
    for (int i = 0; i < AUTHD_MX_LOGIN_OTHER; i++)
        if (cause != NULL && strcmp(cause, cause_names[i]) == 0)
            return (authd_metrics_login_cause)i;
    return AUTHD_MX_LOGIN_OTHER;
}

void authd_metrics_login_failure(authd_metrics_login_cause cause)
{
    struct block *b = my_block();

    if (b == NULL)
        return;
    if ((unsigned)cause >= AUTHD_MX_LOGIN_CAUSES)
        cause = AUTHD_MX_LOGIN_OTHER;
    add(b, OFF_LOGIN + (size_t)cause, 1);
}

void authd_metrics_rate_limited(unsigned method)
{
    struct block *b = my_block();

    if (b == NULL)
        return;
    if (method > AUTHD_METRICS_METHOD_UNKNOWN)
        method = AUTHD_METRICS_METHOD_UNKNOWN;
    add(b, OFF_RL + method, 1);
}

void authd_metrics_conn(authd_metrics_conn_event ev)
{
    struct block *b = my_block();

    if (b == NULL || (unsigned)ev >= AUTHD_MX_CONN_EVENTS)
        return;
    add(b, OFF_CONN + (size_t)ev, 1);
}

void authd_metrics_reset(void)
{
    pthread_mutex_lock(&blocks_mu);
    for (struct block *b = blocks; b != NULL; b = b->next)
        for (size_t i = 0; i < NVALUES; i++)
            atomic_store_explicit(&b->v[i], 0, memory_order_relaxed);
    pthread_mutex_unlock(&blocks_mu);
}

/* ---- rendering ---------------------------------------------------------------- */

/* A growing output buffer; after a failed allocation every append is a
 * no-op and oom stays set. */
struct out {
    char *p;
    size_t len, cap;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static void outf(struct out *o, const char *fmt, ...)
{
    va_list ap;

    if (o->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2;
        while (cap - o->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (p == NULL) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

/* escape writes a label value with \, " and newline escaped, as the text
 * format wants, into buf (truncated to fit). */
static const char *escape(const char *s, char *buf, size_t cap)
{
    size_t n = 0;

    for (; s != NULL && *s != '\0' && n + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            buf[n++] = '\\';
            buf[n++] = *s;
        } else if (*s == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else {
            buf[n++] = *s;
        }
    }
    buf[n] = '\0';
    return buf;
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* method_label: the label value of method row m; rows past the named
 * methods are folded into "unknown" by sum_blocks. */
static const char *method_label(size_t m)
{
    return m < n_methods ? method_names[m] : "unknown";
}

/* sum_blocks adds every thread's block into t[NVALUES], then folds the rows
 * of unnamed method indexes into the "unknown" row. */
static void sum_blocks(uint64_t *t)
{
    pthread_mutex_lock(&blocks_mu);
    for (struct block *b = blocks; b != NULL; b = b->next)
        for (size_t i = 0; i < NVALUES; i++)
            t[i] += atomic_load_explicit(&b->v[i], memory_order_relaxed);
    pthread_mutex_unlock(&blocks_mu);
    const size_t u = AUTHD_METRICS_METHOD_UNKNOWN;
    for (size_t m = n_methods; m < u; m++) {
        for (size_t c = 0; c < NCODES; c++)
            t[OFF_REQ + u * NCODES + c] += t[OFF_REQ + m * NCODES + c];
        for (size_t k = 0; k < NBUCKETS; k++)
            t[OFF_HIST + u * NBUCKETS + k] += t[OFF_HIST + m * NBUCKETS + k];
        t[OFF_HSUM + u] += t[OFF_HSUM + m];
        t[OFF_RL + u] += t[OFF_RL + m];
    }
}

/* rows: the method rows rendered: the named ones, then "unknown". */
static bool row_rendered(size_t m)
{
    return m < n_methods || m == AUTHD_METRICS_METHOD_UNKNOWN;
}

static void render_requests(struct out *o, const uint64_t *t)
{
    head(o, "authd_requests_total", "counter",
        "RPCs answered on the main port, by method and gRPC status code.");
    for (size_t m = 0; m < NMETHODS; m++) {
        if (!row_rendered(m))
            continue;
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t v = t[OFF_REQ + m * NCODES + c];
            /* OK is always there (a series from 0); other codes once seen. */
            if (v != 0 || (c == AUTHD_OK && m != AUTHD_METRICS_METHOD_UNKNOWN))
                outf(o, "authd_requests_total{method=\"%s\",code=\"%s\"} %" PRIu64 "\n",
                    method_label(m), authd_code_name((int)c), v);
        }
    }
    head(o, "authd_request_duration_seconds", "histogram",
        "Time from a request's receipt to its answer, by method.");
    for (size_t m = 0; m < NMETHODS; m++) {
        if (!row_rendered(m))
            continue;
        const uint64_t *h = t + OFF_HIST + m * NBUCKETS;
        uint64_t cum = 0;
        for (size_t k = 0; k < NBUCKETS; k++)
            cum += h[k];
        if (cum == 0 && m == AUTHD_METRICS_METHOD_UNKNOWN)
            continue;
        const char *ml = method_label(m);
        cum = 0;
        for (size_t k = 0; k < NBUCKETS; k++) {
            cum += h[k];
            outf(o, "authd_request_duration_seconds_bucket{method=\"%s\",le=\"%s\"} %" PRIu64 "\n",
                ml, k < NFINITE ? bucket_le[k] : "+Inf", cum);
        }
        uint64_t ns = t[OFF_HSUM + m];
        outf(o,
            "authd_request_duration_seconds_sum{method=\"%s\"} %" PRIu64 ".%09" PRIu64 "\n"
            "authd_request_duration_seconds_count{method=\"%s\"} %" PRIu64 "\n",
            ml, ns / 1000000000u, ns % 1000000000u, ml, cum);
    }
}

static void render_logins(struct out *o, const uint64_t *t)
{
    head(o, "authd_login_failures_total", "counter",
        "Failed logins by cause (the audit line's cause; the caller sees one answer for all). "
        "throttled and locked are the account throttle's refusals.");
    for (size_t i = 0; i < AUTHD_MX_LOGIN_CAUSES; i++)
        outf(o, "authd_login_failures_total{cause=\"%s\"} %" PRIu64 "\n", cause_names[i],
            t[OFF_LOGIN + i]);
    head(o, "authd_rate_limited_total", "counter",
        "Requests refused RATE_LIMITED by a per-source or per-caller limit, by method.");
    for (size_t m = 0; m < NMETHODS; m++)
        if (row_rendered(m) && t[OFF_RL + m] != 0)
            outf(o, "authd_rate_limited_total{method=\"%s\"} %" PRIu64 "\n", method_label(m),
                t[OFF_RL + m]);
}

static void render_conns(struct out *o, const uint64_t *t)
{
    const uint64_t *c = t + OFF_CONN;
    uint64_t opened = c[AUTHD_MX_CONN_OPENED], closed = c[AUTHD_MX_CONN_CLOSED];

    head(o, "authd_connections_open", "gauge", "Connections being served on the main port.");
    /* A scrape racing a close on another thread may see the close first. */
    outf(o, "authd_connections_open %" PRIu64 "\n", opened > closed ? opened - closed : 0);
    head(o, "authd_connections_accepted_total", "counter",
        "Connections accepted on the main port (before the connection limits).");
    outf(o, "authd_connections_accepted_total %" PRIu64 "\n", c[AUTHD_MX_CONN_ACCEPTED]);
    head(o, "authd_connections_refused_total", "counter",
        "Connections closed at once because a connection limit was reached, by limit.");
    outf(o,
        "authd_connections_refused_total{limit=\"max_connections_per_source\"} %" PRIu64 "\n"
        "authd_connections_refused_total{limit=\"max_handshakes_per_source\"} %" PRIu64 "\n"
        "authd_connections_refused_total{limit=\"max_connections\"} %" PRIu64 "\n",
        c[AUTHD_MX_CONN_REFUSED_PER_SOURCE], c[AUTHD_MX_CONN_REFUSED_HS_PER_SOURCE],
        c[AUTHD_MX_CONN_REFUSED_MAX]);
    head(o, "authd_connections_evicted_total", "counter",
        "Open connections closed to make room for a newcomer at max-connections or "
        "max-handshakes, by what was closed.");
    outf(o,
        "authd_connections_evicted_total{kind=\"handshake\"} %" PRIu64 "\n"
        "authd_connections_evicted_total{kind=\"idle\"} %" PRIu64 "\n",
        c[AUTHD_MX_CONN_EVICTED_HANDSHAKE], c[AUTHD_MX_CONN_EVICTED_IDLE]);
}

static void render_gauges(struct out *o, const authd_metrics_gauges *g)
{
    char v[128], c[128];

    if (g->has_store) {
        head(o, "authd_sessions", "gauge",
            "Sessions in the store: live ones and expired ones not yet purged.");
        outf(o, "authd_sessions %" PRIu64 "\n", g->sessions);
        head(o, "authd_users", "gauge", "Users in the store.");
        outf(o, "authd_users %" PRIu64 "\n", g->users);
    }
    if (g->has_hash_pool || g->has_write_pool) {
        head(o, "authd_pool_queued_jobs", "gauge",
            "Jobs waiting in a worker pool's queue (hash: argon2id; write: store writes).");
        if (g->has_hash_pool)
            outf(o, "authd_pool_queued_jobs{pool=\"hash\"} %" PRIu64 "\n", g->hash_queued);
        if (g->has_write_pool)
            outf(o, "authd_pool_queued_jobs{pool=\"write\"} %" PRIu64 "\n", g->write_queued);
        head(o, "authd_pool_running_jobs", "gauge",
            "Jobs a pool is running now (hash: one per busy worker; write: the jobs of the batch "
            "being committed).");
        if (g->has_hash_pool)
            outf(o, "authd_pool_running_jobs{pool=\"hash\"} %" PRIu64 "\n", g->hash_running);
        if (g->has_write_pool)
            outf(o, "authd_pool_running_jobs{pool=\"write\"} %" PRIu64 "\n", g->write_running);
        head(o, "authd_pool_workers", "gauge", "Worker threads of a pool.");
        if (g->has_hash_pool)
            outf(o, "authd_pool_workers{pool=\"hash\"} %" PRIu64 "\n", g->hash_workers);
        if (g->has_write_pool)
            outf(o, "authd_pool_workers{pool=\"write\"} %" PRIu64 "\n", g->write_workers);
    }
    head(o, "authd_log_lines_dropped_total", "counter",
        "Log lines dropped because the log ring was full.");
    outf(o, "authd_log_lines_dropped_total %" PRIu64 "\n", g->log_dropped);
    head(o, "authd_build_info", "gauge", "Always 1; the labels name the build.");
    outf(o, "authd_build_info{version=\"%s\",commit=\"%s\"} 1\n", escape(g->version, v, sizeof v),
        escape(g->commit, c, sizeof c));
}

authd_code authd_metrics_render(const authd_metrics_gauges *g, char **out, size_t *len)
{
    struct out o = { NULL, 0, 16384, false };
    uint64_t *t = NULL;
    authd_code rc = AUTHD_RESOURCE_EXHAUSTED;

    if (g == NULL || out == NULL || len == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if ((t = calloc(NVALUES, sizeof *t)) == NULL || (o.p = malloc(o.cap)) == NULL)
        goto out;
    o.p[0] = '\0';
    sum_blocks(t);
    render_requests(&o, t);
    render_logins(&o, t);
    render_conns(&o, t);
    render_gauges(&o, g);
    if (o.oom)
        goto out;
    *out = o.p;
    *len = o.len;
    o.p = NULL;
    rc = AUTHD_OK;
out:
    free(o.p);
    free(t);
    return rc;
}
