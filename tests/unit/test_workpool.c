/*
 * test_workpool.c — the bounded worker pool (its fair queue: per-source and
 * per-connection shares, round-robin between sources) and the timer that
 * parks replies until their time.
 *
 * Jobs block on a gate the test opens, so queue contents are exact when
 * the test counts; every wait is a poll with a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "timer.h"
#include "workpool.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* wait_for polls *v until it reaches want, for at most 5 s. */
static void wait_for(atomic_int *v, int want)
{
    for (int spin = 0; spin < 5000 && atomic_load(v) < want; spin++)
        usleep(1000);
    assert_int_equal(atomic_load(v), want);
}

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    atomic_int started;
    atomic_int ran;
};

#define GATE_INIT                                                                                  \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, 0                           \
    }

static void blocked_job(void *arg)
{
    struct gate *g = arg;
    atomic_fetch_add(&g->started, 1);
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&g->ran, 1);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static authd_workpool_owner owner(uint8_t src, uint64_t conn)
{
    authd_workpool_owner o;
    memset(&o, 0, sizeof o);
    o.source.key[10] = 0xff;
    o.source.key[11] = 0xff;
    o.source.key[12] = 127;
    o.source.key[15] = src;
    o.conn_id = conn;
    return o;
}

static void test_pool_bounded_queue(void **state)
{
    (void)state;
    struct gate g = GATE_INIT;
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 2, .queue_max = 3, .nice = 5 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    /* 2 running + 3 queued fit; the 6th is refused at once. Wait until both
     * workers hold a job so the count is exact. */
    int accepted = 0;
    for (int i = 0; i < 2; i++)
        accepted += authd_workpool_submit(p, blocked_job, &g) == AUTHD_OK;
    wait_for(&g.started, 2);
    assert_int_equal(authd_workpool_pending(p), 2);
    for (int i = 0; i < 4; i++)
        accepted += authd_workpool_submit(p, blocked_job, &g) == AUTHD_OK;
    assert_int_equal(accepted, 5);
    assert_int_equal(authd_workpool_submit(p, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);
    authd_workpool_owner a = owner(2, 1);
    assert_int_equal(authd_workpool_submit_fair(p, &a, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);

    gate_open(&g);
    authd_workpool_destroy(p); /* runs everything queued */
    assert_int_equal(atomic_load(&g.ran), 5);
}

static void count_job(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void test_pool_runs_all(void **state)
{
    (void)state;
    atomic_int n = 0;
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 4, .queue_max = 10000, .nice = 0 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(authd_workpool_submit(p, count_job, &n), AUTHD_OK);
    authd_workpool_destroy(p);
    assert_int_equal(atomic_load(&n), 5000);
}

static void test_pool_invalid_options(void **state)
{
    (void)state;
    authd_workpool *p = NULL;
    authd_workpool_options none = { .threads = 0, .queue_max = 1 };
    authd_workpool_options noq = { .threads = 1, .queue_max = 0 };
    assert_int_equal(authd_workpool_create(&none, &p), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_workpool_create(&noq, &p), AUTHD_INVALID_ARGUMENT);
    authd_workpool_destroy(NULL);
}

/* One source holds at most per_source_max jobs (running ones count); a
 * second source still gets in; once the first's jobs have run it may
 * submit again (its slot was given back). */
static void test_pool_per_source_share(void **state)
{
    (void)state;
    struct gate g = GATE_INIT;
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 1, .queue_max = 16, .per_source_max = 4 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    int accepted = 0;
    for (uint64_t conn = 1; conn <= 10; conn++) { /* many connections, one source */
        authd_workpool_owner a = owner(2, conn);
        accepted += authd_workpool_submit_fair(p, &a, blocked_job, &g) == AUTHD_OK;
    }
    assert_int_equal(accepted, 4);
    authd_workpool_owner b = owner(3, 99);
    assert_int_equal(authd_workpool_submit_fair(p, &b, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_pending(p), 5);

    gate_open(&g);
    wait_for(&g.ran, 5);
    for (int spin = 0; spin < 5000 && authd_workpool_pending(p) > 0; spin++)
        usleep(1000);
    assert_int_equal(authd_workpool_pending(p), 0);
    accepted = 0;
    for (uint64_t conn = 1; conn <= 10; conn++) {
        authd_workpool_owner a = owner(2, conn);
        accepted += authd_workpool_submit_fair(p, &a, blocked_job, &g) == AUTHD_OK;
    }
    assert_true(accepted >= 4); /* open gate: jobs may finish while we submit */
    authd_workpool_destroy(p);
}

/* authd_workpool_fair_would_admit answers what submit_fair would, for
 * each share and the whole queue, without queueing anything. */
static void test_pool_would_admit(void **state)
{
    (void)state;
    struct gate g = GATE_INIT;
    authd_workpool *p = NULL;
    authd_workpool_options o
        = { .threads = 1, .queue_max = 4, .per_source_max = 3, .per_conn_max = 2 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    authd_workpool_owner a1 = owner(2, 1), a2 = owner(2, 2), a3 = owner(2, 3), b = owner(3, 9);
    assert_true(authd_workpool_fair_would_admit(p, &a1));
    assert_int_equal(authd_workpool_pending(p), 0);
    assert_int_equal(authd_workpool_submit_fair(p, &a1, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_submit_fair(p, &a1, blocked_job, &g), AUTHD_OK);
    /* connection 1 is full, connection 2 of the same source is not */
    assert_false(authd_workpool_fair_would_admit(p, &a1));
    assert_int_equal(authd_workpool_submit_fair(p, &a1, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);
    assert_true(authd_workpool_fair_would_admit(p, &a2));
    assert_int_equal(authd_workpool_submit_fair(p, &a2, blocked_job, &g), AUTHD_OK);
    /* source 2 is full (3), on a fresh connection too; source 3 is not */
    assert_false(authd_workpool_fair_would_admit(p, &a3));
    assert_true(authd_workpool_fair_would_admit(p, &b));
    wait_for(&g.started, 1);
    assert_int_equal(authd_workpool_submit_fair(p, &b, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_submit_fair(p, &b, blocked_job, &g), AUTHD_OK);
    /* 1 running, 4 waiting: the queue is full for everyone */
    authd_workpool_owner c = owner(4, 10);
    assert_false(authd_workpool_fair_would_admit(p, &c));
    assert_int_equal(authd_workpool_submit_fair(p, &c, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);
    gate_open(&g);
    wait_for(&g.ran, 5);
    authd_workpool_shutdown(p);
    assert_false(authd_workpool_fair_would_admit(p, &c));
    authd_workpool_destroy(p);
}

/* One connection holds at most per_conn_max jobs; another connection of the
 * same source still gets in. */
static void test_pool_per_conn_share(void **state)
{
    (void)state;
    struct gate g = GATE_INIT;
    authd_workpool *p = NULL;
    authd_workpool_options o
        = { .threads = 1, .queue_max = 16, .per_source_max = 8, .per_conn_max = 2 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    authd_workpool_owner c1 = owner(2, 1), c2 = owner(2, 2);
    assert_int_equal(authd_workpool_submit_fair(p, &c1, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_submit_fair(p, &c1, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_submit_fair(p, &c1, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);
    assert_int_equal(authd_workpool_submit_fair(p, &c2, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_submit_fair(p, &c2, blocked_job, &g), AUTHD_OK);
    assert_int_equal(authd_workpool_submit_fair(p, &c2, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);
    /* Jobs without an owner are not charged to anyone. */
    assert_int_equal(authd_workpool_submit(p, blocked_job, &g), AUTHD_OK);
    gate_open(&g);
    authd_workpool_destroy(p);
    assert_int_equal(atomic_load(&g.ran), 5);
}

struct order {
    struct gate *g;
    pthread_mutex_t mu;
    char seen[32];
    int n;
};

struct tagged {
    struct order *o;
    char tag;
};

static void tagged_job(void *arg)
{
    struct tagged *t = arg;
    pthread_mutex_lock(&t->o->mu);
    t->o->seen[t->o->n++] = t->tag;
    pthread_mutex_unlock(&t->o->mu);
}

/* The worker takes one job per source in turn: five jobs of A queued
 * before one of B and one of C do not make B and C wait behind all of A. */
static void test_pool_round_robin(void **state)
{
    (void)state;
    struct gate g = GATE_INIT;
    struct order ord = { .g = &g, .mu = PTHREAD_MUTEX_INITIALIZER };
    struct tagged jobs[] = { { &ord, 'a' }, { &ord, 'a' }, { &ord, 'a' }, { &ord, 'a' },
        { &ord, 'a' }, { &ord, 'b' }, { &ord, 'c' } };
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 1, .queue_max = 16 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    assert_int_equal(authd_workpool_submit(p, blocked_job, &g), AUTHD_OK);
    wait_for(&g.started, 1); /* the one worker is held: the rest queue */
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        authd_workpool_owner w = owner((uint8_t)jobs[i].tag, 100 + i);
        assert_int_equal(authd_workpool_submit_fair(p, &w, tagged_job, &jobs[i]), AUTHD_OK);
    }
    gate_open(&g);
    authd_workpool_destroy(p);
    assert_string_equal(ord.seen, "abcaaaa");
}

/* Batch mode: a worker hands every job queued at that moment (up to
 * batch_max) to the runner at once, in the fair order; it never waits for
 * more (the first job, alone in the queue, runs alone); a job's owners
 * stay charged until its whole batch is done. */
struct batches {
    struct gate *g;
    pthread_mutex_t mu;
    char seen[64]; /* tags, with '|' after each batch */
    size_t len;
    atomic_int jobs;
};

static void batch_runner(void *ctx, const authd_work_item *items, size_t n)
{
    struct batches *bt = ctx;

    for (size_t i = 0; i < n; i++) {
        if (items[i].fn == blocked_job) {
            items[i].fn(items[i].arg);
            continue;
        }
        struct tagged *t = items[i].arg;
        pthread_mutex_lock(&bt->mu);
        bt->seen[bt->len++] = t->tag;
        pthread_mutex_unlock(&bt->mu);
        atomic_fetch_add(&bt->jobs, 1);
    }
    pthread_mutex_lock(&bt->mu);
    bt->seen[bt->len++] = '|';
    pthread_mutex_unlock(&bt->mu);
}

static void test_pool_batches(void **state)
{
    (void)state;
    struct gate g = GATE_INIT;
    struct batches bt = { .g = &g, .mu = PTHREAD_MUTEX_INITIALIZER };
    struct tagged jobs[] = { { NULL, 'a' }, { NULL, 'a' }, { NULL, 'a' }, { NULL, 'a' },
        { NULL, 'a' }, { NULL, 'b' }, { NULL, 'c' } };
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 1,
        .queue_max = 16,
        .per_source_max = 5,
        .batch_max = 4,
        .batch = batch_runner,
        .batch_ctx = &bt };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    assert_int_equal(authd_workpool_submit(p, blocked_job, &g), AUTHD_OK);
    wait_for(&g.started, 1); /* a batch of one, held: the rest queue */
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        authd_workpool_owner w = owner((uint8_t)jobs[i].tag, 100 + i);
        assert_int_equal(authd_workpool_submit_fair(p, &w, tagged_job, &jobs[i]), AUTHD_OK);
    }
    /* Source a holds its five: a sixth is refused while they wait. */
    authd_workpool_owner wa = owner('a', 999);
    assert_int_equal(
        authd_workpool_submit_fair(p, &wa, tagged_job, &jobs[0]), AUTHD_RESOURCE_EXHAUSTED);
    assert_int_equal(authd_workpool_pending(p), 8);
    gate_open(&g);
    authd_workpool_shutdown(p);
    /* The blocker alone; then four (round-robin: a b c a); then the rest. */
    bt.seen[bt.len] = '\0';
    assert_string_equal(bt.seen, "|abca|aaa|");
    assert_int_equal(atomic_load(&bt.jobs), 7);
    assert_int_equal(authd_workpool_pending(p), 0);
    authd_workpool_destroy(p);
}

/* Many distinct owners coming and going: the tables give every slot back
 * (a leak would end in refusals), and every job runs exactly once. */
static void test_pool_owner_churn(void **state)
{
    (void)state;
    atomic_int n = 0;
    authd_workpool *p = NULL;
    authd_workpool_options o
        = { .threads = 2, .queue_max = 8, .per_source_max = 3, .per_conn_max = 2 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);
    int ok = 0;
    for (int i = 0; i < 20000; i++) {
        authd_workpool_owner w = owner((uint8_t)(i % 251), (uint64_t)(i % 1009) + 1);
        w.source.key[14] = (uint8_t)(i / 251);
        authd_code rc;
        while ((rc = authd_workpool_submit_fair(p, &w, count_job, &n)) == AUTHD_RESOURCE_EXHAUSTED)
            sched_yield(); /* queue or share full: let the workers drain it */
        assert_int_equal(rc, AUTHD_OK);
        ok++;
    }
    authd_workpool_destroy(p);
    assert_int_equal(atomic_load(&n), ok);
}

/* ---- timer ---- */

struct fired {
    pthread_mutex_t mu;
    int n;
    int tag[8];
    uint64_t at[8];
    atomic_int count;
};

struct shot {
    struct fired *f;
    int tag;
};

static void shot_fn(void *arg)
{
    struct shot *s = arg;
    pthread_mutex_lock(&s->f->mu);
    s->f->tag[s->f->n] = s->tag;
    s->f->at[s->f->n] = mono_ns();
    s->f->n++;
    pthread_mutex_unlock(&s->f->mu);
    atomic_fetch_add(&s->f->count, 1);
}

static void test_timer_order_and_never_early(void **state)
{
    (void)state;
    struct fired f = { .mu = PTHREAD_MUTEX_INITIALIZER };
    struct shot s[4] = { { &f, 30 }, { &f, 10 }, { &f, 20 }, { &f, 0 } };
    authd_timer *t = NULL;
    assert_int_equal(authd_timer_create(&t), AUTHD_OK);
    uint64_t t0 = mono_ns();
    for (int i = 0; i < 3; i++)
        authd_timer_at(t, t0 + (uint64_t)s[i].tag * 1000000u, shot_fn, &s[i]);
    authd_timer_at(t, t0 - 1, shot_fn, &s[3]); /* already due */
    wait_for(&f.count, 4);
    assert_int_equal(authd_timer_pending(t), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(f.tag[i], i * 10);
        assert_true(f.at[i] >= t0 + (uint64_t)f.tag[i] * 1000000u);
    }
    authd_timer_destroy(t);
}

/* Shut down with a callback an hour away: it runs now (a parked reply is
 * answered, not lost), and later ones run on the caller's thread. */
static void test_timer_shutdown_runs_pending(void **state)
{
    (void)state;
    struct fired f = { .mu = PTHREAD_MUTEX_INITIALIZER };
    struct shot s[2] = { { &f, 1 }, { &f, 2 } };
    authd_timer *t = NULL;
    assert_int_equal(authd_timer_create(&t), AUTHD_OK);
    authd_timer_at(t, mono_ns() + 3600ull * 1000000000u, shot_fn, &s[0]);
    assert_int_equal(authd_timer_pending(t), 1);
    uint64_t t0 = mono_ns();
    authd_timer_shutdown(t);
    assert_int_equal(atomic_load(&f.count), 1);
    assert_true(mono_ns() - t0 < 5000000000ull);
    authd_timer_at(t, mono_ns() + 3600ull * 1000000000u, shot_fn, &s[1]);
    assert_int_equal(atomic_load(&f.count), 2);
    authd_timer_destroy(t);
    authd_timer_destroy(NULL);
}

struct sorted {
    uint64_t last_due; /* only the timer thread touches it */
    atomic_int count;
    atomic_int out_of_order;
};

struct sorted_shot {
    struct sorted *s;
    uint64_t due;
};

static void sorted_fn(void *arg)
{
    struct sorted_shot *x = arg;
    if (x->due < x->s->last_due)
        atomic_fetch_add(&x->s->out_of_order, 1);
    x->s->last_due = x->due;
    atomic_fetch_add(&x->s->count, 1);
}

/* Many entries (the heap grows past its first allocation), due in reverse
 * order of arrival: they come out sorted. */
static void test_timer_many(void **state)
{
    (void)state;
    enum { N = 1000 };
    static struct sorted_shot x[N];
    struct sorted s = { 0, 0, 0 };
    authd_timer *t = NULL;
    assert_int_equal(authd_timer_create(&t), AUTHD_OK);
    uint64_t t0 = mono_ns() + 20000000u;
    for (int i = 0; i < N; i++) {
        x[i] = (struct sorted_shot) { &s, t0 + (uint64_t)(N - i) * 10000u };
        authd_timer_at(t, x[i].due, sorted_fn, &x[i]);
    }
    wait_for(&s.count, N);
    assert_int_equal(atomic_load(&s.out_of_order), 0);
    authd_timer_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_bounded_queue),
        cmocka_unit_test(test_pool_runs_all),
        cmocka_unit_test(test_pool_invalid_options),
        cmocka_unit_test(test_pool_per_source_share),
        cmocka_unit_test(test_pool_would_admit),
        cmocka_unit_test(test_pool_per_conn_share),
        cmocka_unit_test(test_pool_round_robin),
        cmocka_unit_test(test_pool_batches),
        cmocka_unit_test(test_pool_owner_churn),
        cmocka_unit_test(test_timer_order_and_never_early),
        cmocka_unit_test(test_timer_shutdown_runs_pending),
        cmocka_unit_test(test_timer_many),
    };
    return cmocka_run_group_tests_name("workpool", tests, NULL, NULL);
}
