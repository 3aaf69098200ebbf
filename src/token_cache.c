/*
 * token_cache.c — the per-loop verified-token cache (token_cache.h for the
 * contract and what a hit still checks).
 *
 * Why a hit answers as the full path would: the full path's outcome for a
 * given token is a function of (a) the token's bytes, (b) the key its
 * header names, (c) that key's state, and (d) now. (a) is compared whole;
 * (b) never changes for the same bytes, because a kid is bound to one key
 * for the life of the authd_tokens object (token.c refuses a reload that
 * would change it) and keys are never freed before it, so the stored key
 * pointer stays the key the full path would find; (c) and (d) are checked
 * on every hit with the full path's own functions. The generation check
 * is belt and braces on top of (c): any committed reload empties the cache
 * in effect, whatever it changed.
 */
#include "token_cache.h"

#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "token_alg.h"

/* One entry: 640 bytes, ten cache lines, so no two entries share one. */
struct slot {
    alignas(64) const authd_key *key; /* the key that verified the token */
    uint64_t gen; /* authd_tokens_generation when the full verify began */
    authd_claims c; /* its claims, as the full path decoded them */
    uint32_t len; /* 0: empty */
    char tok[AUTHD_TOKEN_CACHE_TOKEN_MAX];
};
_Static_assert(sizeof(struct slot) == AUTHD_TOKEN_CACHE_SLOT_BYTES, "slot size");

struct authd_token_cache {
    alignas(64) const authd_tokens *t;
    uint8_t hkey[crypto_shorthash_KEYBYTES]; /* SipHash key, random per cache */
    uint32_t nbuckets; /* two slots each */
    uint64_t *tags; /* 2 per bucket: the token's SipHash | 1, or 0 when empty */
    uint8_t *lru; /* per bucket: the way to replace next */
    struct slot *slots; /* 2 per bucket */
    bool collide; /* tests: every hash is 0 (authd_token_cache_test_collide) */
    authd_token_cache_stats st;
};

/* aligned_zalloc: n bytes, zeroed, on their own cache lines (a loop's
 * cache shares no line with another thread's data). Free with free(). */
static void *aligned_zalloc(size_t n)
{
    size_t r = (n + 63) / 64 * 64;
    void *p = aligned_alloc(64, r);

    if (p != NULL)
        memset(p, 0, r);
    return p;
}

authd_code authd_token_cache_create(const authd_tokens *t, size_t entries, authd_token_cache **out)
{
    authd_token_cache *tc = NULL;
    authd_code rc = AUTHD_RESOURCE_EXHAUSTED;

    if (t == NULL || out == NULL || entries < 1 || entries > AUTHD_TOKEN_CACHE_ENTRIES_MAX)
        return AUTHD_INVALID_ARGUMENT;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if ((tc = aligned_zalloc(sizeof *tc)) == NULL)
        goto out;
    tc->t = t;
    tc->nbuckets = (uint32_t)((entries + 1) / 2);
    randombytes_buf(tc->hkey, sizeof tc->hkey);
    if ((tc->tags = aligned_zalloc(2 * (size_t)tc->nbuckets * sizeof *tc->tags)) == NULL
        || (tc->lru = aligned_zalloc(tc->nbuckets)) == NULL
        || (tc->slots = aligned_zalloc(2 * (size_t)tc->nbuckets * sizeof *tc->slots)) == NULL)
        goto out;
    *out = tc;
    tc = NULL;
    rc = AUTHD_OK;
out:
    authd_token_cache_destroy(tc);
    return rc;
}

void authd_token_cache_destroy(authd_token_cache *tc)
{
    if (tc == NULL)
        return;
    if (tc->slots != NULL)
        sodium_memzero(tc->slots, 2 * (size_t)tc->nbuckets * sizeof *tc->slots);
    free(tc->slots);
    free(tc->lru);
    free(tc->tags);
    sodium_memzero(tc, sizeof *tc);
    free(tc);
}

/*
 * same_token: a and b (n bytes each) are equal, in a time that depends on
 * n alone: the XORs of eight bytes at a time OR-ed together, then the
 * tail, with no branch on the data. Not CRYPTO_memcmp or sodium_memcmp:
 * both go one byte at a time, and for a 390-byte token that was 2,740
 * instructions, more than half of a hit (callgrind, docs/benchmarks.md);
 * this is ~250. The compare runs only after the 64-bit keyed tag matched,
 * and it must be whole: the tag alone is not trusted.
 */
static bool same_token(const char *a, const char *b, size_t n)
{
    uint64_t d = 0, x, y;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        d |= x ^ y;
    }
    for (; i < n; i++)
        d |= (uint64_t)((unsigned char)a[i] ^ (unsigned char)b[i]);
    return d == 0;
}

/* drop empties slot i (a stale entry: its token is wiped, it is a bearer
 * credential). */
static void drop(authd_token_cache *tc, size_t i)
{
    struct slot *s = &tc->slots[i];

    tc->tags[i] = 0;
    sodium_memzero(s->tok, s->len);
    s->len = 0;
    s->key = NULL;
}

authd_token_result authd_token_verify_cached(const authd_tokens *t, authd_token_cache *tc,
    const char *token, size_t len, int64_t now, authd_claims *out)
{
    if (tc == NULL || tc->t != t || token == NULL || len == 0
        || len > AUTHD_TOKEN_CACHE_TOKEN_MAX) {
        if (tc != NULL && tc->t == t)
            tc->st.misses++;
        return authd_token_verify(t, token, len, now, out);
    }

    /* Read before the full verify below, so that an entry made while a
     * reload commits carries the older generation and misses next time. */
    uint64_t gen = authd_tokens_generation(t);
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)token, len, tc->hkey);
    if (tc->collide)
        h = 0;
    uint64_t tag = h | 1;
    size_t b = (size_t)(((h >> 32) * (uint64_t)tc->nbuckets) >> 32);

    for (size_t w = 0; w < 2; w++) {
        size_t i = 2 * b + w;
        struct slot *s = &tc->slots[i];
        if (tc->tags[i] != tag || s->len != len || !same_token(s->tok, token, len))
            continue;
        /* The same token. Recheck what can change since it verified. */
        if (s->gen == gen && authd_tokens_key_usable(t, s->key, now)
            && authd_tokens_check_time(t, &s->c, now) == AUTHD_TOKEN_OK) {
            tc->lru[b] = (uint8_t)(w ^ 1);
            tc->st.hits++;
            if (out != NULL)
                *out = s->c;
            return AUTHD_TOKEN_OK;
        }
        tc->st.stale++;
        drop(tc, i);
        break;
    }

    tc->st.misses++;
    const authd_key *k = NULL;
    authd_claims c;
    authd_token_result r = authd_token_verify_key(t, token, len, now, &c, &k);
    if (r != AUTHD_TOKEN_OK)
        return r; /* never cached */

    size_t w = tc->tags[2 * b] == 0 ? 0 : tc->tags[2 * b + 1] == 0 ? 1 : tc->lru[b];
    size_t i = 2 * b + w;
    struct slot *s = &tc->slots[i];
    if (tc->tags[i] != 0) {
        tc->st.evictions++;
        sodium_memzero(s->tok, s->len);
    }
    s->key = k;
    s->gen = gen;
    s->c = c;
    s->len = (uint32_t)len;
    memcpy(s->tok, token, len);
    tc->tags[i] = tag;
    tc->lru[b] = (uint8_t)(w ^ 1);
    tc->st.inserts++;
    if (out != NULL)
        *out = c;
    return AUTHD_TOKEN_OK;
}

void authd_token_cache_test_collide(authd_token_cache *tc)
{
    tc->collide = true;
}

void authd_token_cache_stats_get(const authd_token_cache *tc, authd_token_cache_stats *out)
{
    if (tc == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = tc->st;
}
