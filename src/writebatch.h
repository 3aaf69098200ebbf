/*
 * writebatch.h — group commit: the write pool commits the store writes
 * queued at one moment in one transaction, and each write is answered
 * only after that commit.
 *
 * A handler that writes splits its job in two: apply (the store call,
 * inside a batch, keeping its result in the job) and done (everything
 * that acts on the result: the reply, logs, further jobs). The write pool
 * runs done only once the batch has committed, or failed: then every
 * write of the batch is answered with the failure, since none of them
 * happened.
 *
 * Jobs that are not write ops may share the write pool: they run alone,
 * in queue order, between batches.
 */
#ifndef AUTHD_WRITEBATCH_H
#define AUTHD_WRITEBATCH_H

#include <stddef.h>

#include "status.h"
#include "store.h"
#include "workpool.h"

typedef struct authd_write_op authd_write_op;

struct authd_write_op {
    authd_store *store;
    /* apply does the op's store writes in b (authd_store_batch_*) and
     * keeps what they answered in the op. It must not answer, log or
     * hand the op on: the batch may still fail. */
    void (*apply)(authd_write_op *op, authd_store_batch *b);
    /* done acts on the op's result. commit is AUTHD_OK when the batch
     * committed (what apply saw stands), else the batch's failure, which
     * done answers instead (nothing apply saw happened). done owns the op
     * from then on (frees it, or hands it on). */
    void (*done)(authd_write_op *op, authd_code commit);
};

/* authd_write_op_submit queues op on the write pool pool, charged to
 * owner (authd_workpool_submit_fair) or to nobody when owner is NULL. On
 * AUTHD_OK the pool owns op until done is called; otherwise (the pool's
 * RESOURCE_EXHAUSTED or UNAVAILABLE) neither callback runs and op still
 * belongs to the caller. */
AUTHD_MUST_CHECK authd_code authd_write_op_submit(
    authd_workpool *pool, const authd_workpool_owner *owner, authd_write_op *op);

/* authd_write_batch_run is the write pool's batch runner
 * (authd_workpool_options.batch; ctx unused): runs of write ops share one
 * store batch (one commit); other jobs run alone, in order. */
void authd_write_batch_run(void *ctx, const authd_work_item *items, size_t n);

#endif
