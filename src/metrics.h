/*
 * metrics.h — Prometheus counters, histograms and gauges, rendered as the
 * text exposition format 0.0.4.
 *
 * A leaf module: it knows counters, not sockets, LMDB or pools. Code on the
 * hot path calls authd_metrics_request() and friends; each thread that
 * does so owns a block of counters (cache-line aligned, made on its first
 * call, kept for the life of the process), written only by that thread with
 * relaxed atomic loads and stores (a plain add on x86-64: no lock prefix,
 * no shared cache line). A scrape sums the blocks of every thread. A scrape
 * that races a writer sees each counter either before or after one event,
 * never torn, so counters never go backwards between scrapes.
 *
 * What counters cannot know (sessions in the store, pool queues, log lines
 * dropped, build info) is read by the caller at scrape time and handed to
 * authd_metrics_render in an authd_metrics_gauges.
 *
 * Method labels are bounded: authd_metrics_set_methods() names them once,
 * at start-up, from dispatch's route table; any other index counts under
 * "unknown".
 */
#ifndef AUTHD_METRICS_H
#define AUTHD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* At most this many named methods; more are counted as "unknown". */
#define AUTHD_METRICS_METHODS_MAX 32
/* The method index of anything that is not a named method (an unknown
 * method name, an envelope that does not parse, a refusal while draining). */
#define AUTHD_METRICS_METHOD_UNKNOWN AUTHD_METRICS_METHODS_MAX

/* Why a Login failed, as the audit line's "cause" says. */
typedef enum authd_metrics_login_cause {
    AUTHD_MX_LOGIN_UNKNOWN_USER,
    AUTHD_MX_LOGIN_WRONG_PASSWORD,
    AUTHD_MX_LOGIN_USER_DISABLED,
    AUTHD_MX_LOGIN_THROTTLED, /* the account's failure counter says wait */
    AUTHD_MX_LOGIN_LOCKED, /* the account is locked out */
    AUTHD_MX_LOGIN_OTHER,
    AUTHD_MX_LOGIN_CAUSES
} authd_metrics_login_cause;

/* What happened to a connection on the main port. */
typedef enum authd_metrics_conn_event {
    AUTHD_MX_CONN_ACCEPTED, /* accept() returned it */
    AUTHD_MX_CONN_OPENED, /* it is being served (counted against max-connections) */
    AUTHD_MX_CONN_CLOSED, /* a served connection closed, for any reason */
    AUTHD_MX_CONN_REFUSED_PER_SOURCE, /* max-connections-per-source */
    AUTHD_MX_CONN_REFUSED_HS_PER_SOURCE, /* max-handshakes-per-source */
    AUTHD_MX_CONN_REFUSED_MAX, /* max-connections (no room could be made) */
    AUTHD_MX_CONN_EVICTED_HANDSHAKE, /* an unfinished handshake closed for a newcomer */
    AUTHD_MX_CONN_EVICTED_IDLE, /* an idle connection closed for a newcomer */
    AUTHD_MX_CONN_EVENTS
} authd_metrics_conn_event;

/* Gauges read by the caller at scrape time. has_* false: not rendered. */
typedef struct authd_metrics_gauges {
    bool has_store;
    uint64_t sessions; /* sessions stored (live, or expired and not yet purged) */
    uint64_t users;
    bool has_hash_pool;
    uint64_t hash_queued, hash_running, hash_workers;
    bool has_write_pool;
    uint64_t write_queued, write_running, write_workers;
    uint64_t log_dropped; /* authd_log_dropped() */
    const char *version; /* build info; NULL = "" */
    const char *commit;
} authd_metrics_gauges;

/* authd_metrics_set_methods names the method labels: names[i] is method
 * index i (dispatch's route order). Call once, before any thread counts;
 * the strings must live as long as the process (string literals). Names
 * past AUTHD_METRICS_METHODS_MAX are ignored. */
void authd_metrics_set_methods(const char *const *names, size_t n);

/* authd_metrics_request counts one answered request: method index (or
 * AUTHD_METRICS_METHOD_UNKNOWN), its status and how long it took from
 * receipt to answer. The hot-path call: a few stores to this thread's own
 * block. */
void authd_metrics_request(unsigned method, authd_code code, uint64_t latency_ns);

/* authd_metrics_login_failure counts a failed Login by cause. */
void authd_metrics_login_failure(authd_metrics_login_cause cause);

/* authd_metrics_login_cause maps an audit line's cause ("unknown_user",
 * "wrong_password", "user_disabled", "throttled", "locked") to its enum;
 * anything else is AUTHD_MX_LOGIN_OTHER. */
authd_metrics_login_cause authd_metrics_login_cause_of(const char *cause);

/* authd_metrics_rate_limited counts a request refused by a per-source or
 * per-caller rate limit (RATE_LIMITED), by method index. */
void authd_metrics_rate_limited(unsigned method);

/* authd_metrics_conn counts a connection event. */
void authd_metrics_conn(authd_metrics_conn_event ev);

/* authd_metrics_render writes every metric in the Prometheus text format
 * 0.0.4 into a new NUL-terminated buffer: *out (length *len) on AUTHD_OK,
 * which the caller frees with free(). AUTHD_RESOURCE_EXHAUSTED when out of
 * memory (nothing allocated). Safe from any thread, at any time. */
AUTHD_MUST_CHECK authd_code authd_metrics_render(
    const authd_metrics_gauges *g, char **out, size_t *len);

/* authd_metrics_reset zeroes every thread's counters. For tests only: a
 * thread counting at the same time may lose its event. */
void authd_metrics_reset(void);

#endif
