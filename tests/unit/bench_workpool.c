/*
 * bench_workpool.c — what a submit costs in the hashing pool, plain and fair.
 *
 * One worker is held by a gate job while Q jobs are submitted (timed: the
 * submit cost), then the gate opens and the worker drains them (timed: take
 * + run of an empty job). ROUNDS rounds; prints the best and the median
 * per job. Not a test (no assertion): built as bench_workpool, run by hand:
 *
 *   build-test/tests/bench_workpool 0      plain authd_workpool_submit
 *   build-test/tests/bench_workpool N      submit_fair, N distinct owners
 *
 * To compare with an older pool, compile this file against that
 * workpool.c with -DPLAIN_ONLY (only the plain submit).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "workpool.h"

#define Q      4096
#define ROUNDS 200

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int gate_open;
static atomic_int done, started;

static void gate(void *arg)
{
    (void)arg;
    atomic_store(&started, 1);
    pthread_mutex_lock(&mu);
    while (!gate_open)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void nop(void *arg)
{
    (void)arg;
    atomic_fetch_add(&done, 1);
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int owners = argc > 1 ? atoi(argv[1]) : 0;
    static double sub[ROUNDS], take[ROUNDS];
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 1, .queue_max = Q };

    if (authd_workpool_create(&o, &p) != AUTHD_OK)
        return 1;
    for (int r = 0; r < ROUNDS; r++) {
        gate_open = 0;
        atomic_store(&done, 0);
        atomic_store(&started, 0);
        if (authd_workpool_submit(p, gate, NULL) != AUTHD_OK)
            return 2;
        while (!atomic_load(&started))
            ;
        double t0 = now_ns();
        for (int i = 0; i < Q; i++) {
            authd_code rc;
#ifndef PLAIN_ONLY
            if (owners > 0) {
                authd_workpool_owner w;
                memset(&w, 0, sizeof w);
                w.source.key[10] = w.source.key[11] = 0xff;
                w.source.key[12] = 10;
                w.source.key[14] = (unsigned char)((i % owners) >> 8);
                w.source.key[15] = (unsigned char)(i % owners);
                w.conn_id = (uint64_t)(i % owners) + 1;
                rc = authd_workpool_submit_fair(p, &w, nop, NULL);
            } else
#endif
                rc = authd_workpool_submit(p, nop, NULL);
            if (rc != AUTHD_OK)
                return 3;
        }
        double t1 = now_ns();
        pthread_mutex_lock(&mu);
        gate_open = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        while (atomic_load(&done) != Q)
            ;
        double t2 = now_ns();
        while (authd_workpool_pending(p) != 0)
            ;
        sub[r] = (t1 - t0) / Q;
        take[r] = (t2 - t1) / Q;
    }
    qsort(sub, ROUNDS, sizeof *sub, cmp);
    qsort(take, ROUNDS, sizeof *take, cmp);
    printf(
        "owners %d: submit ns/job best %.1f median %.1f | take+run ns/job best %.1f median %.1f\n",
        owners, sub[0], sub[ROUNDS / 2], take[0], take[ROUNDS / 2]);
    authd_workpool_destroy(p);
    return 0;
}
