/*
 * ratelimit.c — keyed token buckets in a fixed table; the log gate.
 *
 * Layout: SHARDS shards, each a mutex and an array of slots. A key's 64-bit
 * SipHash picks the shard and a home slot; the key lives in one of the
 * PROBE slots from there. Only the hash is stored: two keys collide only
 * when SipHash-2-4 collides on 64 bits under a random key.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ratelimit.h"

#define SHARDS 16
#define PROBE  8

struct slot {
    uint64_t tag; /* the key's hash with the low bit set; 0 = empty */
    uint64_t last_ns; /* when tokens was last brought up to date */
    double tokens;
};

struct shard {
    pthread_mutex_t mu;
    struct slot *slots;
};

struct authd_ratelimit {
    double rate, burst;
    size_t per_shard; /* slots in each shard */
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    atomic_uint_fast64_t evictions;
    struct shard shards[SHARDS];
};

/*
 * slots_alloc maps n zeroed slots. Not calloc: once glibc's dynamic mmap
 * threshold has risen (freeing one argon2 block raises it to 19 MiB), a
 * table of ~100 KiB comes from the heap and calloc writes every byte of it,
 * so a table sized for 65,536 keys would be resident from the start. An
 * anonymous mapping costs memory only for the slots keys actually use.
 */
static struct slot *slots_alloc(size_t n)
{
    void *p = mmap(
        NULL, n * sizeof(struct slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

authd_code authd_ratelimit_create(const authd_ratelimit_options *o, authd_ratelimit **out)
{
    authd_ratelimit *rl;

    if (!(o->rate > 0) || !(o->burst >= 1) || o->max_keys < SHARDS
        || o->max_keys > ((size_t)1 << 28))
        return AUTHD_INVALID_ARGUMENT;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if ((rl = calloc(1, sizeof *rl)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    rl->rate = o->rate;
    rl->burst = o->burst;
    rl->per_shard = (o->max_keys + SHARDS - 1) / SHARDS;
    if (rl->per_shard < PROBE)
        rl->per_shard = PROBE;
    randombytes_buf(rl->hkey, sizeof rl->hkey);
    atomic_init(&rl->evictions, 0);
    for (unsigned i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&rl->shards[i].mu, NULL);
        rl->shards[i].slots = slots_alloc(rl->per_shard);
        if (rl->shards[i].slots == NULL) {
            authd_ratelimit_destroy(rl);
            return AUTHD_RESOURCE_EXHAUSTED;
        }
    }
    *out = rl;
    return AUTHD_OK;
}

void authd_ratelimit_destroy(authd_ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (unsigned i = 0; i < SHARDS; i++) {
        if (rl->shards[i].slots != NULL)
            munmap(rl->shards[i].slots, rl->per_shard * sizeof(struct slot));
        pthread_mutex_destroy(&rl->shards[i].mu);
    }
    free(rl);
}

uint64_t authd_ratelimit_evictions(authd_ratelimit *rl)
{
    return atomic_load(&rl->evictions);
}

/* refill brings a slot's tokens up to now. */
static void refill(const authd_ratelimit *rl, struct slot *s, uint64_t now_ns)
{
    if (now_ns > s->last_ns) {
        s->tokens += (double)(now_ns - s->last_ns) * 1e-9 * rl->rate;
        if (s->tokens > rl->burst)
            s->tokens = rl->burst;
        s->last_ns = now_ns;
    }
}

/*
 * find returns the key's slot, locked (the caller unlocks *mu), its tokens
 * brought up to now. A key not in the table takes an empty slot, else one
 * whose bucket has refilled (forgetting it loses nothing), else the one
 * seen longest ago (counted as an eviction), and starts with a full bucket.
 */
static struct slot *find(
    authd_ratelimit *rl, const void *key, size_t keylen, uint64_t now_ns, pthread_mutex_t **mu)
{
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;

    crypto_shorthash(h, key, keylen, rl->hkey);
    memcpy(&v, h, sizeof v);
    uint64_t tag = v | 1;
    struct shard *sh = &rl->shards[(v >> 1) % SHARDS];
    size_t home = (size_t)((v >> 5) % rl->per_shard);
    struct slot *victim = NULL, *full = NULL, *empty = NULL;

    pthread_mutex_lock(&sh->mu);
    *mu = &sh->mu;
    for (size_t i = 0; i < PROBE; i++) {
        struct slot *s = &sh->slots[(home + i) % rl->per_shard];
        if (s->tag == tag) {
            refill(rl, s, now_ns);
            return s;
        }
        if (s->tag == 0) {
            if (empty == NULL)
                empty = s;
            continue;
        }
        if (full == NULL) {
            refill(rl, s, now_ns);
            if (s->tokens >= rl->burst)
                full = s;
        }
        if (victim == NULL || s->last_ns < victim->last_ns)
            victim = s;
    }
    struct slot *s = empty != NULL ? empty : full != NULL ? full : victim;
    if (s != empty && s != full)
        atomic_fetch_add(&rl->evictions, 1);
    s->tag = tag;
    s->last_ns = now_ns;
    s->tokens = rl->burst;
    return s;
}

bool authd_ratelimit_take(
    authd_ratelimit *rl, const void *key, size_t keylen, double cost, uint64_t now_ns)
{
    pthread_mutex_t *mu;
    struct slot *s = find(rl, key, keylen, now_ns, &mu);
    bool ok = s->tokens >= cost;
    if (ok)
        s->tokens -= cost;
    pthread_mutex_unlock(mu);
    return ok;
}

bool authd_ratelimit_check(
    authd_ratelimit *rl, const void *key, size_t keylen, double cost, uint64_t now_ns)
{
    pthread_mutex_t *mu;
    struct slot *s = find(rl, key, keylen, now_ns, &mu);
    bool ok = s->tokens >= cost;
    pthread_mutex_unlock(mu);
    return ok;
}

void authd_ratelimit_charge(
    authd_ratelimit *rl, const void *key, size_t keylen, double cost, uint64_t now_ns)
{
    pthread_mutex_t *mu;
    struct slot *s = find(rl, key, keylen, now_ns, &mu);
    s->tokens -= cost;
    if (s->tokens < -rl->burst)
        s->tokens = -rl->burst;
    if (s->tokens > rl->burst)
        s->tokens = rl->burst;
    pthread_mutex_unlock(mu);
}

bool authd_lograte_allow(
    authd_lograte *lr, uint64_t interval_ns, uint64_t now_ns, uint64_t *suppressed)
{
    uint64_t next = atomic_load_explicit(&lr->next_ns, memory_order_relaxed);
    if (now_ns >= next
        && atomic_compare_exchange_strong(&lr->next_ns, &next, now_ns + interval_ns)) {
        uint64_t n = atomic_exchange(&lr->suppressed, 0);
        if (suppressed != NULL)
            *suppressed = n;
        return true;
    }
    atomic_fetch_add_explicit(&lr->suppressed, 1, memory_order_relaxed);
    return false;
}
