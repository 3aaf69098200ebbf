/*
 * timer.c — a min-heap of (due time, callback) served by one thread.
 *
 * The heap array grows by doubling and never shrinks; its size is bounded
 * by the replies that can be pending at once (connections x in-flight
 * window), so its growth is bounded too. The thread sleeps in
 * pthread_cond_timedwait on CLOCK_MONOTONIC until the earliest entry is
 * due or a new earlier one arrives; callbacks run without the lock held.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "timer.h"

struct entry {
    uint64_t due_ns;
    uint64_t seq; /* arrival order: ties are served first in, first out */
    authd_timer_fn fn;
    void *arg;
};

struct authd_timer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct entry *heap;
    unsigned n, cap;
    uint64_t seq;
    bool stopping;
    bool started;
    pthread_t thread;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool before(const struct entry *a, const struct entry *b)
{
    return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void heap_push(authd_timer *t, struct entry e)
{
    unsigned i = t->n++;
    while (i > 0) {
        unsigned up = (i - 1) / 2;
        if (!before(&e, &t->heap[up]))
            break;
        t->heap[i] = t->heap[up];
        i = up;
    }
    t->heap[i] = e;
}

static struct entry heap_pop(authd_timer *t)
{
    struct entry top = t->heap[0], last = t->heap[--t->n];
    unsigned i = 0;
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= t->n)
            break;
        if (c + 1 < t->n && before(&t->heap[c + 1], &t->heap[c]))
            c++;
        if (!before(&t->heap[c], &last))
            break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (t->n > 0)
        t->heap[i] = last;
    return top;
}

/* timer_thread: run what is due; sleep until the next due time (or a
 * signal of an earlier entry or of shutdown). On shutdown everything left
 * runs at once. */
static void *timer_thread(void *arg)
{
    authd_timer *t = arg;

    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (t->n == 0) {
            if (t->stopping)
                break;
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        uint64_t due = t->heap[0].due_ns;
        if (!t->stopping && due > mono_ns()) {
            struct timespec ts = { (time_t)(due / 1000000000u), (long)(due % 1000000000u) };
            (void)pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            continue;
        }
        struct entry e = heap_pop(t);
        pthread_mutex_unlock(&t->mu);
        e.fn(e.arg);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

authd_code authd_timer_create(authd_timer **out)
{
    authd_timer *t = calloc(1, sizeof *t);
    pthread_condattr_t ca;

    if (t == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->cap = 64;
    if ((t->heap = malloc(t->cap * sizeof *t->heap)) == NULL
        || pthread_create(&t->thread, NULL, timer_thread, t) != 0) {
        authd_timer_destroy(t);
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    t->started = true;
    *out = t;
    return AUTHD_OK;
}

void authd_timer_at(authd_timer *t, uint64_t due_ns, authd_timer_fn fn, void *arg)
{
    pthread_mutex_lock(&t->mu);
    if (t->stopping)
        goto now;
    if (t->n == t->cap) {
        struct entry *h = t->cap < (1u << 30) ? realloc(t->heap, 2 * t->cap * sizeof *h) : NULL;
        if (h == NULL)
            goto now;
        t->heap = h;
        t->cap *= 2;
    }
    bool earliest = t->n == 0 || due_ns < t->heap[0].due_ns;
    heap_push(t, (struct entry) { due_ns, t->seq++, fn, arg });
    if (earliest)
        pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return;
now:
    pthread_mutex_unlock(&t->mu);
    fn(arg);
}

unsigned authd_timer_pending(authd_timer *t)
{
    pthread_mutex_lock(&t->mu);
    unsigned n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void authd_timer_shutdown(authd_timer *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->started) {
        pthread_join(t->thread, NULL);
        t->started = false;
    }
}

void authd_timer_destroy(authd_timer *t)
{
    if (t == NULL)
        return;
    authd_timer_shutdown(t);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t->heap);
    free(t);
}
