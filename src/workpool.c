/*
 * workpool.c — fixed worker threads behind a bounded FIFO.
 *
 * The queue is a ring of queue_max slots allocated once, so submitting
 * never allocates and a flood cannot grow memory: when the ring is full,
 * submit says RESOURCE_EXHAUSTED at once. Workers lower their own priority
 * with setpriority(PRIO_PROCESS, tid) — on Linux that applies to the calling
 * thread — so hashing yields the CPU to the nng threads serving Verify.
 */
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "workpool.h"

struct job {
    authd_work_fn fn;
    void *arg;
};

struct authd_workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *ring;
    unsigned cap;
    unsigned head; /* next job to take */
    unsigned count; /* jobs waiting */
    unsigned running;
    int nice;
    bool stopping;
    unsigned nthreads;
    pthread_t *threads;
};

static void *worker(void *argp)
{
    authd_workpool *p = argp;

    if (p->nice != 0) {
        pid_t tid = (pid_t)syscall(SYS_gettid);
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, (id_t)tid);
        if (errno == 0)
            (void)setpriority(PRIO_PROCESS, (id_t)tid, cur + p->nice);
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0 && p->stopping)
            break;
        struct job j = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j.fn(j.arg);
        pthread_mutex_lock(&p->mu);
        p->running--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

authd_code authd_workpool_create(const authd_workpool_options *o, authd_workpool **out)
{
    authd_workpool *p = NULL;
    authd_code rc = AUTHD_OK;

    if (o->threads < 1 || o->queue_max < 1)
        return AUTHD_INVALID_ARGUMENT;
    if ((p = calloc(1, sizeof *p)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->cap = o->queue_max;
    p->nice = o->nice;
    p->ring = calloc(p->cap, sizeof *p->ring);
    p->threads = calloc(o->threads, sizeof *p->threads);
    if (p->ring == NULL || p->threads == NULL) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    for (unsigned i = 0; i < o->threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            rc = AUTHD_RESOURCE_EXHAUSTED;
            goto out;
        }
        p->nthreads++;
    }
out:
    if (rc != AUTHD_OK) {
        authd_workpool_destroy(p);
        return rc;
    }
    *out = p;
    return AUTHD_OK;
}

authd_code authd_workpool_submit(authd_workpool *p, authd_work_fn fn, void *arg)
{
    authd_code rc = AUTHD_OK;

    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        rc = AUTHD_UNAVAILABLE;
    } else if (p->count == p->cap) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
    } else {
        p->ring[(p->head + p->count) % p->cap] = (struct job) { fn, arg };
        p->count++;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

size_t authd_workpool_pending(authd_workpool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = (size_t)p->count + p->running;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void authd_workpool_shutdown(authd_workpool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
}

void authd_workpool_destroy(authd_workpool *p)
{
    if (p == NULL)
        return;
    authd_workpool_shutdown(p);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->ring);
    free(p);
}
