/*
 * writebatch.c — group commit of the write pool's store writes.
 *
 * Per-write outcomes come from the store's batch contract (store.h):
 * each write runs in its own nested transaction, so one Register's
 * ALREADY_EXISTS or one Refresh's REUSED is that write's answer and its
 * batch-mates still commit. Nested transactions rather than
 * validate-then-apply: a write's checks then read everything earlier
 * writes of the batch did (two Refreshes of one token in one batch see
 * each other exactly as if run one after the other), and the checks stay
 * in the one store function that already makes them, not in a second
 * copy.
 *
 * A job queued as a write op has fn == write_op_alone, which is also how
 * it runs without batching (a pool without a batch runner, or
 * --write-batch-max 1): a batch of one, the same code path.
 */
#include "writebatch.h"

#include "log.h"

static void write_op_alone(void *arg);

/* run_group: ops items[0..n) (all write ops, n >= 1) in one store batch. */
static void run_group(const authd_work_item *items, size_t n)
{
    authd_write_op *first = items[0].arg;
    authd_store_batch *b = NULL;
    authd_code commit = authd_store_batch_begin(first->store, &b);

    if (commit == AUTHD_OK) {
        for (size_t i = 0; i < n; i++) {
            authd_write_op *op = items[i].arg;
            op->apply(op, b);
        }
        commit = authd_store_batch_commit(b);
    }
    authd_logrec r;
    if (authd_log_enabled(AUTHD_LOG_DEBUG) && authd_log_begin(&r, AUTHD_LOG_DEBUG, "write_batch")) {
        authd_log_u64(&r, "writes", n);
        authd_log_str(&r, "commit", authd_code_name(commit));
        authd_log_end(&r);
    }
    /* done may free or hand on its op: read each op only before its done. */
    for (size_t i = 0; i < n; i++) {
        authd_write_op *op = items[i].arg;
        op->done(op, commit);
    }
}

static void write_op_alone(void *arg)
{
    authd_work_item it = { write_op_alone, arg };
    run_group(&it, 1);
}

authd_code authd_write_op_submit(
    authd_workpool *pool, const authd_workpool_owner *owner, authd_write_op *op)
{
    if (owner != NULL)
        return authd_workpool_submit_fair(pool, owner, write_op_alone, op);
    return authd_workpool_submit(pool, write_op_alone, op);
}

/* authd_write_batch_run: consecutive write ops form one group; a job of
 * another kind ends the group before it and runs alone, so the pool's
 * order is kept. All ops of a run share one store: there is one. */
void authd_write_batch_run(void *ctx, const authd_work_item *items, size_t n)
{
    (void)ctx;
    size_t i = 0;
    while (i < n) {
        if (items[i].fn != write_op_alone) {
            items[i].fn(items[i].arg);
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && items[j].fn == write_op_alone)
            j++;
        run_group(items + i, j - i);
        i = j;
    }
}
