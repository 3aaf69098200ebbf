/*
 * workpool.h — a fixed pool of worker threads with a bounded queue.
 *
 * The hashing pool: argon2id runs here, at lower scheduling priority, so a
 * flood of logins fills this queue (and is then refused with
 * AUTHD_RESOURCE_EXHAUSTED) instead of nng's callback threads or memory.
 */
#ifndef AUTHD_WORKPOOL_H
#define AUTHD_WORKPOOL_H

#include <stddef.h>

#include "status.h"

typedef struct authd_workpool authd_workpool;
typedef void (*authd_work_fn)(void *arg);

typedef struct authd_workpool_options {
    unsigned threads; /* >= 1 */
    unsigned queue_max; /* jobs waiting (not counting running ones), >= 1 */
    int nice; /* added to each worker's nice value (0 = unchanged) */
} authd_workpool_options;

/* authd_workpool_create starts the threads. The caller frees *out with
 * authd_workpool_destroy. */
AUTHD_MUST_CHECK authd_code authd_workpool_create(
    const authd_workpool_options *o, authd_workpool **out);

/* authd_workpool_submit queues fn(arg) to run on a worker. Returns
 * AUTHD_RESOURCE_EXHAUSTED when queue_max jobs are already waiting and
 * AUTHD_UNAVAILABLE once the pool is shutting down; in both cases fn is
 * not called and arg still belongs to the caller. */
AUTHD_MUST_CHECK authd_code authd_workpool_submit(authd_workpool *p, authd_work_fn fn, void *arg);

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

#endif
