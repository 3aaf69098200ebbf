/*
 * test_writebatch.c — unit tests of group commit's runner (src/writebatch.c)
 * over a real store: ops of one run share one commit and each keeps its
 * own outcome; a plain job between ops ends the group and runs in order;
 * a failed commit is every op's answer; a pool without a batch runner
 * runs each op as a batch of one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "writebatch.h"

#define HASH "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

typedef struct fx {
    char dir[64];
    authd_store *st;
    char trace[64]; /* what ran, in order */
    size_t n;
} fx;

/* One Register-like op: apply creates its user, done records the answer. */
struct op {
    authd_write_op op; /* first */
    fx *f;
    char tag;
    authd_user u;
    authd_code rc; /* apply's */
    authd_code commit; /* done's */
    atomic_int done;
};

static void op_apply(authd_write_op *wo, authd_store_batch *b)
{
    struct op *o = (struct op *)wo;
    o->f->trace[o->f->n++] = o->tag;
    o->rc = authd_store_batch_user_create(b, &o->u, NULL);
}

static void op_done(authd_write_op *wo, authd_code commit)
{
    struct op *o = (struct op *)wo;
    o->f->trace[o->f->n++] = (char)(o->tag - 'a' + 'A'); /* done: upper case */
    o->commit = commit;
    atomic_store(&o->done, 1);
}

static void plain_job(void *arg)
{
    fx *f = arg;
    f->trace[f->n++] = '.';
}

static void op_init(struct op *o, fx *f, char tag, const char *name)
{
    memset(o, 0, sizeof *o);
    o->op.store = f->st;
    o->op.apply = op_apply;
    o->op.done = op_done;
    o->f = f;
    o->tag = tag;
    memset(o->u.id, tag, sizeof o->u.id);
    snprintf(o->u.username, sizeof o->u.username, "%s", name);
    snprintf(o->u.email, sizeof o->u.email, "%s@example.com", name);
    snprintf(o->u.password_hash, sizeof o->u.password_hash, "%s", HASH);
    o->u.status = AUTHD_USER_ACTIVE;
    o->u.created_at = o->u.updated_at = o->u.password_changed_at = 1700000000;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/authd-wb-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    authd_store_options o = { .dir = f->dir, .map_size = 16u << 20 };
    assert_int_equal(authd_store_open(&o, &f->st), AUTHD_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char p[128];
    authd_store_close(f->st);
    snprintf(p, sizeof p, "%s/data.mdb", f->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", f->dir);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    atomic_int started;
};

static void held_job(void *arg)
{
    struct gate *g = arg;
    atomic_fetch_add(&g->started, 1);
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* run_pool queues, behind a held job, ops[0..n) with a plain job after
 * ops[plain_after - 1] (none when 0), on a one-thread pool with the batch
 * runner (batch_max 0: none), and returns once every job ran. */
static void run_pool(fx *f, struct op **ops, size_t n, size_t plain_after, unsigned batch_max)
{
    struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 1,
        .queue_max = 64,
        .batch_max = batch_max,
        .batch = batch_max > 0 ? authd_write_batch_run : NULL };

    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);
    assert_int_equal(authd_workpool_submit(p, held_job, &g), AUTHD_OK);
    for (int spin = 0; spin < 5000 && atomic_load(&g.started) == 0; spin++)
        usleep(1000);
    assert_int_equal(atomic_load(&g.started), 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(authd_write_op_submit(p, NULL, &ops[i]->op), AUTHD_OK);
        if (i + 1 == plain_after)
            assert_int_equal(authd_workpool_submit(p, plain_job, f), AUTHD_OK);
    }
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    authd_workpool_destroy(p); /* runs what is queued, joins */
    f->trace[f->n] = '\0';
}

/* a and b share a commit and are answered before the plain job queued
 * after them runs; c (the name b took) fails alone; d commits with it. */
static void test_groups_and_outcomes(void **state)
{
    fx *f = *state;
    struct op a, b, c, d;
    struct op *ops[] = { &a, &b, &c, &d };
    authd_user got;

    op_init(&a, f, 'a', "alice");
    op_init(&b, f, 'b', "bob");
    op_init(&c, f, 'c', "bob");
    op_init(&d, f, 'd', "dave");
    run_pool(f, ops, 4, 2, 16);
    assert_string_equal(f->trace, "abAB.cdCD");
    assert_int_equal(a.rc, AUTHD_OK);
    assert_int_equal(b.rc, AUTHD_OK);
    assert_int_equal(c.rc, AUTHD_ALREADY_EXISTS);
    assert_int_equal(d.rc, AUTHD_OK);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(ops[i]->commit, AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, a.u.id, &got), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, b.u.id, &got), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, c.u.id, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_get(f->st, d.u.id, &got), AUTHD_OK);
}

/* A failed commit is the answer of every op of the batch, whatever each
 * applied; nothing of it is stored. */
static void test_commit_failure_answers_all(void **state)
{
    fx *f = *state;
    struct op a, b, c;
    struct op *ops[] = { &a, &b, &c };
    authd_user got;

    op_init(&a, f, 'a', "alice");
    op_init(&b, f, 'b', "bob");
    op_init(&c, f, 'c', "bob");
    authd_store_fault_next_batch_commit(f->st, AUTHD_RESOURCE_EXHAUSTED);
    run_pool(f, ops, 3, 0, 16);
    assert_string_equal(f->trace, "abcABC");
    assert_int_equal(a.rc, AUTHD_OK); /* what apply saw ... */
    assert_int_equal(c.rc, AUTHD_ALREADY_EXISTS);
    for (size_t i = 0; i < 3; i++) /* ... never happened */
        assert_int_equal(ops[i]->commit, AUTHD_RESOURCE_EXHAUSTED);
    assert_int_equal(authd_store_user_get(f->st, a.u.id, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_get(f->st, b.u.id, &got), AUTHD_NOT_FOUND);
}

/* Without a batch runner (or --write-batch-max 1) each op is a batch of
 * one: apply, commit, done, then the next. */
static void test_no_batching(void **state)
{
    fx *f = *state;
    struct op a, b, c;
    struct op *ops[] = { &a, &b, &c };
    authd_user got;

    op_init(&a, f, 'a', "alice");
    op_init(&b, f, 'b', "bob");
    op_init(&c, f, 'c', "bob");
    run_pool(f, ops, 3, 1, 0);
    assert_string_equal(f->trace, "aA.bBcC");
    assert_int_equal(c.rc, AUTHD_ALREADY_EXISTS);
    assert_int_equal(c.commit, AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, b.u.id, &got), AUTHD_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_groups_and_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure_answers_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_batching, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
