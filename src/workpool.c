/*
 * workpool.c — fixed worker threads behind a bounded, fair queue.
 *
 * Everything the queue uses is allocated once, at creation: queue_max job
 * slots, and two small tables of owners (sources and connections) that hold
 * at least one job. Every owner in a table holds a job waiting or running,
 * so neither table can hold more than queue_max + threads entries, and
 * submitting never allocates: a flood cannot grow memory, it is refused
 * with RESOURCE_EXHAUSTED at once.
 *
 * Scheduling: each source keeps its waiting jobs in a FIFO list; the
 * sources with waiting jobs stand in a ring, and a worker takes one job
 * from the source at the head and sends that source to the back. A source
 * with 30 jobs waiting and one with a single job therefore alternate: the
 * lone job waits for at most one job of each other source, not for all 30.
 * Jobs without an owner are one anonymous source, never limited.
 *
 * Batching: a worker of a pool with a batch runner takes, in that same
 * round-robin order, every job waiting when it wakes (up to batch_max)
 * and runs them through the runner at once; every job's owners stay
 * charged until the whole batch is done, since no job of it is finished
 * (acknowledged) before the batch's commit. It never waits for more
 * jobs: an idle pool's first job runs alone, at once.
 *
 * Workers lower their own priority with setpriority(PRIO_PROCESS, tid) —
 * on Linux that applies to the calling thread — so hashing yields the CPU
 * to the event loops serving Verify.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "ratelimit.h"
#include "workpool.h"

#define NIL    UINT32_MAX
#define ANON   0u /* the anonymous source's slot in the source table */
#define KEYLEN AUTHD_SOURCE_KEY_BYTES

struct job {
    authd_work_fn fn;
    void *arg;
    uint32_t next; /* next waiting job of the same source, or the free list */
    uint32_t src; /* slot in the source table */
    uint32_t conn; /* slot in the connection table, NIL for none */
};

/* An owner (a source or a connection) holding at least one job. */
struct owner {
    uint8_t key[KEYLEN];
    uint32_t hnext; /* hash chain, or the free list */
    uint32_t held; /* its jobs waiting + running */
    uint32_t qhead, qtail; /* its waiting jobs (sources only) */
};

/* A fixed-size chained hash table of owners; slots never move, so a job
 * keeps its owners' slot numbers. */
struct table {
    struct owner *slot;
    uint32_t cap;
    uint32_t *bucket;
    uint32_t mask; /* buckets - 1 (a power of two >= 2 * cap) */
    uint32_t free; /* free list through hnext */
};

struct authd_workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *jobs;
    uint32_t jobs_free; /* free job slots through next */
    unsigned cap; /* queue_max */
    unsigned count; /* jobs waiting */
    unsigned running;
    struct table src, conn;
    uint32_t *ready; /* ring of sources with waiting jobs */
    uint32_t ready_head, ready_count;
    unsigned per_source_max, per_conn_max;
    uint64_t seed;
    authd_lograte bite_log;
    const char *name;
    int nice;
    unsigned batch_max; /* >= 2 when batch is set */
    authd_batch_fn batch;
    void *batch_ctx;
    bool stopping;
    unsigned nthreads;
    pthread_t *threads;
};

/* ---- owner tables ------------------------------------------------------- */

/* mix64: murmur3's 64-bit finaliser, a bijection in which every input bit
 * reaches every output bit. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

/* key_hash: the 16-byte key through two seeded rounds of mix64, so keys
 * that differ only in their last byte (neighbouring IPv4 addresses) land in
 * unrelated buckets. The seed is random per process, so keys cannot be
 * chosen to share a chain; and a chain is never longer than the number of
 * owners holding a job, which the queue bounds. */
static uint32_t key_hash(const authd_workpool *p, const uint8_t key[KEYLEN])
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    return (uint32_t)mix64(mix64(p->seed ^ a) ^ b);
}

static int table_init(struct table *t, uint32_t cap)
{
    uint32_t nb = 16;
    while (nb < 2 * cap)
        nb <<= 1;
    t->cap = cap;
    t->mask = nb - 1;
    t->slot = calloc(cap, sizeof *t->slot);
    t->bucket = malloc(nb * sizeof *t->bucket);
    if (t->slot == NULL || t->bucket == NULL)
        return -1;
    for (uint32_t i = 0; i < nb; i++)
        t->bucket[i] = NIL;
    for (uint32_t i = 0; i < cap; i++)
        t->slot[i].hnext = i + 1 < cap ? i + 1 : NIL;
    t->free = 0;
    return 0;
}

static void table_free(struct table *t)
{
    free(t->slot);
    free(t->bucket);
}

/* table_find returns key's slot, or NIL when key holds no job. */
static uint32_t table_find(const authd_workpool *p, const struct table *t, const uint8_t *key)
{
    for (uint32_t i = t->bucket[key_hash(p, key) & t->mask]; i != NIL; i = t->slot[i].hnext)
        if (memcmp(t->slot[i].key, key, KEYLEN) == 0)
            return i;
    return NIL;
}

/* table_add takes a free slot for key (which must not be present); the
 * caller has checked that one is free. */
static uint32_t table_add(const authd_workpool *p, struct table *t, const uint8_t *key)
{
    uint32_t i = t->free;
    struct owner *o = &t->slot[i];
    t->free = o->hnext;
    uint32_t *b = &t->bucket[key_hash(p, key) & t->mask];
    memcpy(o->key, key, KEYLEN);
    o->held = 0;
    o->qhead = o->qtail = NIL;
    o->hnext = *b;
    *b = i;
    return i;
}

/* table_release drops one job from slot i and frees the slot once it holds
 * none. */
static void table_release(const authd_workpool *p, struct table *t, uint32_t i)
{
    struct owner *o = &t->slot[i];
    if (--o->held > 0)
        return;
    uint32_t *link = &t->bucket[key_hash(p, o->key) & t->mask];
    while (*link != i)
        link = &t->slot[*link].hnext;
    *link = o->hnext;
    o->hnext = t->free;
    t->free = i;
}

/* ---- workers ------------------------------------------------------------ */

/* take_job (mutex held, count > 0): the first waiting job of the source at
 * the head of the ring; that source goes to the back if it has more. */
static struct job take_job(authd_workpool *p)
{
    uint32_t s = p->ready[p->ready_head];
    p->ready_head = (p->ready_head + 1) % p->src.cap;
    p->ready_count--;
    struct owner *o = &p->src.slot[s];
    uint32_t ji = o->qhead;
    struct job j = p->jobs[ji];
    o->qhead = j.next;
    if (o->qhead == NIL)
        o->qtail = NIL;
    else
        p->ready[(p->ready_head + p->ready_count++) % p->src.cap] = s;
    p->jobs[ji].next = p->jobs_free;
    p->jobs_free = ji;
    p->count--;
    return j;
}

/* release_job (mutex held): the job is done; its owners are charged one less. */
static void release_job(authd_workpool *p, const struct job *j)
{
    if (j->src != ANON)
        table_release(p, &p->src, j->src);
    if (j->conn != NIL)
        table_release(p, &p->conn, j->conn);
}

/* worker_batch runs batches: every job waiting (up to batch_max), through
 * the batch runner. js and items are this worker's, batch_max each. */
static void worker_batch(authd_workpool *p, struct job *js, authd_work_item *items)
{
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0 && p->stopping)
            break;
        size_t n = 0;
        while (n < p->batch_max && p->count > 0) {
            js[n] = take_job(p);
            items[n].fn = js[n].fn;
            items[n].arg = js[n].arg;
            n++;
        }
        p->running += (unsigned)n;
        pthread_mutex_unlock(&p->mu);
        p->batch(p->batch_ctx, items, n);
        pthread_mutex_lock(&p->mu);
        p->running -= (unsigned)n;
        for (size_t i = 0; i < n; i++)
            release_job(p, &js[i]);
    }
    pthread_mutex_unlock(&p->mu);
}

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
    if (p->batch != NULL) {
        struct job *js = calloc(p->batch_max, sizeof *js);
        authd_work_item *items = calloc(p->batch_max, sizeof *items);
        if (js != NULL && items != NULL) {
            worker_batch(p, js, items);
            free(js);
            free(items);
            return NULL;
        }
        free(js); /* out of memory: run the jobs one at a time instead */
        free(items);
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0 && p->stopping)
            break;
        struct job j = take_job(p);
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j.fn(j.arg);
        pthread_mutex_lock(&p->mu);
        p->running--;
        release_job(p, &j);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

authd_code authd_workpool_create(const authd_workpool_options *o, authd_workpool **out)
{
    authd_workpool *p = NULL;
    authd_code rc = AUTHD_OK;

    if (o->threads < 1 || o->queue_max < 1 || o->queue_max > 1u << 24 || o->threads > 1u << 16)
        return AUTHD_INVALID_ARGUMENT;
    if ((p = calloc(1, sizeof *p)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->cap = o->queue_max;
    p->nice = o->nice;
    p->per_source_max = o->per_source_max;
    p->per_conn_max = o->per_conn_max;
    p->name = o->name != NULL ? o->name : "pool";
    if (o->batch != NULL && o->batch_max >= 2) {
        p->batch = o->batch;
        p->batch_ctx = o->batch_ctx;
        p->batch_max = o->batch_max < o->queue_max ? o->batch_max : o->queue_max;
        if (p->batch_max < 2)
            p->batch = NULL;
    }
    if (getrandom(&p->seed, sizeof p->seed, 0) != (ssize_t)sizeof p->seed)
        p->seed = (uint64_t)time(NULL) * 0x2545f4914f6cdd1du; /* only spreads keys */
    /* Owners holding a job: at most queue_max waiting + threads running,
     * plus the anonymous source's permanent slot. */
    uint32_t owners = o->queue_max + o->threads + 1;
    p->jobs = calloc(p->cap, sizeof *p->jobs);
    p->ready = calloc(owners, sizeof *p->ready);
    p->threads = calloc(o->threads, sizeof *p->threads);
    if (p->jobs == NULL || p->ready == NULL || p->threads == NULL
        || table_init(&p->src, owners) != 0 || table_init(&p->conn, owners) != 0) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    for (uint32_t i = 0; i < p->cap; i++)
        p->jobs[i].next = i + 1 < p->cap ? i + 1 : NIL;
    p->jobs_free = 0;
    /* Slot 0 of the source table is the anonymous source: taken off the
     * free list for good and never put in a hash chain. */
    p->src.free = p->src.slot[ANON].hnext;
    p->src.slot[ANON].qhead = p->src.slot[ANON].qtail = NIL;
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

/* enqueue (mutex held, a free job slot exists): append the job to source
 * s's list, charge it to s and connection c (NIL for none). */
static void enqueue(authd_workpool *p, uint32_t s, uint32_t c, authd_work_fn fn, void *arg)
{
    uint32_t ji = p->jobs_free;
    struct job *j = &p->jobs[ji];
    struct owner *o = &p->src.slot[s];

    p->jobs_free = j->next;
    *j = (struct job) { fn, arg, NIL, s, c };
    if (o->qtail == NIL) {
        o->qhead = ji;
        p->ready[(p->ready_head + p->ready_count++) % p->src.cap] = s;
    } else {
        p->jobs[o->qtail].next = ji;
    }
    o->qtail = ji;
    o->held++;
    if (c != NIL)
        p->conn.slot[c].held++;
    p->count++;
    pthread_cond_signal(&p->cv);
}

authd_code authd_workpool_submit(authd_workpool *p, authd_work_fn fn, void *arg)
{
    authd_code rc = AUTHD_OK;

    pthread_mutex_lock(&p->mu);
    if (p->stopping)
        rc = AUTHD_UNAVAILABLE;
    else if (p->count == p->cap)
        rc = AUTHD_RESOURCE_EXHAUSTED;
    else
        enqueue(p, ANON, NIL, fn, arg);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* log_bite writes the (rate-limited) line saying which share was exceeded. */
static void log_bite(
    authd_workpool *p, const authd_workpool_owner *owner, const char *limit, unsigned max)
{
    uint64_t held_back = 0;
    struct timespec ts;
    authd_logrec r;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (!authd_lograte_allow(&p->bite_log, 1000000000u, now, &held_back))
        return;
    if (authd_log_begin(&r, AUTHD_LOG_WARN, "pool_share_exceeded")) {
        char src[AUTHD_SOURCE_TEXT_MAX];
        authd_source_str(&owner->source, src);
        authd_log_str(&r, "pool", p->name);
        authd_log_str(&r, "limit", limit);
        authd_log_u64(&r, "max", max);
        authd_log_str(&r, "source", src);
        authd_log_u64(&r, "conn_id", owner->conn_id);
        authd_log_u64(&r, "held_back", held_back);
        authd_log_end(&r);
    }
}

authd_code authd_workpool_submit_fair(
    authd_workpool *p, const authd_workpool_owner *owner, authd_work_fn fn, void *arg)
{
    uint8_t ckey[KEYLEN] = { 0 };
    const char *bite = NULL;
    unsigned bite_max = 0;
    authd_code rc = AUTHD_OK;

    memcpy(ckey, &owner->conn_id, sizeof owner->conn_id);
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        rc = AUTHD_UNAVAILABLE;
        goto out;
    }
    if (p->count == p->cap) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    uint32_t s = table_find(p, &p->src, owner->source.key);
    uint32_t c = table_find(p, &p->conn, ckey);
    if (s != NIL && p->per_source_max > 0 && p->src.slot[s].held >= p->per_source_max) {
        bite = "per_source";
        bite_max = p->per_source_max;
    } else if (c != NIL && p->per_conn_max > 0 && p->conn.slot[c].held >= p->per_conn_max) {
        bite = "per_conn";
        bite_max = p->per_conn_max;
    }
    if (bite != NULL) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    if ((s == NIL && p->src.free == NIL) || (c == NIL && p->conn.free == NIL)) {
        rc = AUTHD_RESOURCE_EXHAUSTED; /* cannot happen: see the sizing in create */
        goto out;
    }
    if (s == NIL)
        s = table_add(p, &p->src, owner->source.key);
    if (c == NIL)
        c = table_add(p, &p->conn, ckey);
    enqueue(p, s, c, fn, arg);
out:
    pthread_mutex_unlock(&p->mu);
    if (bite != NULL)
        log_bite(p, owner, bite, bite_max);
    return rc;
}

bool authd_workpool_fair_would_admit(authd_workpool *p, const authd_workpool_owner *owner)
{
    uint8_t ckey[KEYLEN] = { 0 };
    bool ok;

    memcpy(ckey, &owner->conn_id, sizeof owner->conn_id);
    pthread_mutex_lock(&p->mu);
    uint32_t s = table_find(p, &p->src, owner->source.key);
    uint32_t c = table_find(p, &p->conn, ckey);
    ok = !p->stopping && p->count < p->cap
        && !(s != NIL && p->per_source_max > 0 && p->src.slot[s].held >= p->per_source_max)
        && !(c != NIL && p->per_conn_max > 0 && p->conn.slot[c].held >= p->per_conn_max);
    pthread_mutex_unlock(&p->mu);
    return ok;
}

size_t authd_workpool_pending(authd_workpool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = (size_t)p->count + p->running;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void authd_workpool_stats(authd_workpool *p, size_t *waiting, size_t *running, size_t *threads)
{
    pthread_mutex_lock(&p->mu);
    *waiting = p->count;
    *running = p->running;
    *threads = p->nthreads;
    pthread_mutex_unlock(&p->mu);
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
    free(p->jobs);
    free(p->ready);
    table_free(&p->src);
    table_free(&p->conn);
    free(p);
}
