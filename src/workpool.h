/*
 * workpool.h — a fixed pool of worker threads with a bounded, fair queue.
 *
 * The hashing pool: argon2id runs here, at lower scheduling priority, so a
 * flood of logins fills this queue (and is then refused with
 * AUTHD_RESOURCE_EXHAUSTED) instead of the event loops or memory.
 *
 * Fairness: a job may name its owner (the caller's source address and
 * connection). Jobs are then limited per source and per connection
 * (counting the owner's jobs waiting and running), and workers take jobs
 * from the sources round-robin, one at a time, so one source can neither
 * fill the queue nor push other sources' jobs behind all of its own. Jobs
 * without an owner (authd_workpool_submit) share one anonymous turn in
 * that rotation and no per-owner limit: a pool fed only by them is FIFO.
 */
#ifndef AUTHD_WORKPOOL_H
#define AUTHD_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"
#include "status.h"

typedef struct authd_workpool authd_workpool;
typedef void (*authd_work_fn)(void *arg);

/* A queued job, as a batch runner sees it. */
typedef struct authd_work_item {
    authd_work_fn fn;
    void *arg;
} authd_work_item;

/* A batch runner: runs items[0..n) (each exactly once, in order or with
 * the same effect), on one worker. items is valid only during the call. */
typedef void (*authd_batch_fn)(void *ctx, const authd_work_item *items, size_t n);

typedef struct authd_workpool_options {
    unsigned threads; /* >= 1 */
    unsigned queue_max; /* jobs waiting (not counting running ones), >= 1 */
    int nice; /* added to each worker's nice value (0 = unchanged) */
    unsigned per_source_max; /* jobs (waiting + running) one source may hold; 0 = no limit */
    unsigned per_conn_max; /* jobs (waiting + running) one connection may hold; 0 = no limit */
    const char *name; /* for log lines ("hash"); NULL = "pool" */
    /* Batching (the write pool's group commit). With batch set and
     * batch_max >= 2, a worker takes every job queued at that moment, up
     * to batch_max, in the usual fair order (never waiting for more), and
     * hands them to batch(batch_ctx, ...) at once. Otherwise (batch NULL
     * or batch_max <= 1) each job runs alone as fn(arg). */
    unsigned batch_max;
    authd_batch_fn batch;
    void *batch_ctx;
} authd_workpool_options;

/* The owner of a job: who it is charged to. */
typedef struct authd_workpool_owner {
    authd_source source;
    uint64_t conn_id;
} authd_workpool_owner;

/* authd_workpool_create starts the threads and allocates everything the
 * queue will ever use. The caller frees *out with authd_workpool_destroy. */
AUTHD_MUST_CHECK authd_code authd_workpool_create(
    const authd_workpool_options *o, authd_workpool **out);

/* authd_workpool_submit queues fn(arg) to run on a worker, owned by nobody.
 * Returns AUTHD_RESOURCE_EXHAUSTED when queue_max jobs are already waiting
 * and AUTHD_UNAVAILABLE once the pool is shutting down; in both cases fn is
 * not called and arg still belongs to the caller. */
AUTHD_MUST_CHECK authd_code authd_workpool_submit(authd_workpool *p, authd_work_fn fn, void *arg);

/* authd_workpool_submit_fair is authd_workpool_submit for a job charged to
 * owner (copied; not kept). It also answers AUTHD_RESOURCE_EXHAUSTED when
 * owner's source already holds per_source_max jobs or its connection
 * per_conn_max (logged, at most once a second). Never allocates. */
AUTHD_MUST_CHECK authd_code authd_workpool_submit_fair(
    authd_workpool *p, const authd_workpool_owner *owner, authd_work_fn fn, void *arg);

/* authd_workpool_fair_would_admit is true when authd_workpool_submit_fair
 * for owner would queue a job now (pool running, queue not full, neither
 * of owner's shares full). Nothing is queued or logged; the answer may be
 * stale by the time the caller acts on it. For a caller that must answer
 * a request it will not submit as it would answer one it would. */
bool authd_workpool_fair_would_admit(authd_workpool *p, const authd_workpool_owner *owner);

/* authd_workpool_shutdown runs every job already queued and joins the
 * threads; from then on submit answers AUTHD_UNAVAILABLE. The pool stays
 * allocated, so late submitters (a transport still finishing its callbacks)
 * are safe until authd_workpool_destroy. Idempotent; accepts NULL. */
void authd_workpool_shutdown(authd_workpool *p);

/* authd_workpool_destroy shuts the pool down (if not yet) and frees it.
 * Accepts NULL. */
void authd_workpool_destroy(authd_workpool *p);

/* authd_workpool_pending returns jobs waiting + running (for tests/metrics). */
size_t authd_workpool_pending(authd_workpool *p);

/* authd_workpool_stats sets *waiting (jobs queued), *running (workers
 * running a job now) and *threads (the pool's workers), read together under
 * the pool's lock (for metrics). */
void authd_workpool_stats(authd_workpool *p, size_t *waiting, size_t *running, size_t *threads);

#endif
