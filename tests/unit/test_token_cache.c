/*
 * test_token_cache.c — the per-loop verified-token cache (token_cache.c):
 * hits, misses, eviction, that a token differing in any byte misses and
 * gets the full path's answer, that expiry, nbf, the key's state and the
 * key-set generation are rechecked on a hit (the token layer takes the time
 * as an argument, so the clock here is a plain number), that nothing but a
 * verified token is stored, and a differential run against
 * authd_token_verify over random tokens, times and reloads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "token.h"
#include "token_cache.h"

#define ISS    "https://authd.example"
#define AUD    "authd-internal"
#define NOW    1700000100
#define TTL    900
#define LEEWAY 30
#define HS_A   "hs-key-a-0123456789abcdefghijklmnopq" /* >= 32 bytes */
#define HS_B   "hs-key-b-0123456789abcdefghijklmnopq"

static authd_key_spec hs(const char *key, authd_key_state st, int64_t retired)
{
    return (authd_key_spec) { .alg = "HS256",
        .material = (const uint8_t *)key,
        .material_len = strlen(key),
        .state = st,
        .retired_at = retired };
}

static void set(authd_tokens *t, const authd_key_spec *s, size_t n)
{
    char err[256] = "";
    if (authd_tokens_set_keys(t, s, n, err, sizeof err) != AUTHD_OK)
        fail_msg("set_keys: %s", err);
}

/* make: a key set of HS_A alone, active. */
static authd_tokens *make_iss(const char *iss, const char *aud)
{
    authd_tokens_options o = { NULL, 0, iss, aud, LEEWAY, TTL };
    authd_tokens *t = NULL;
    authd_key_spec a = hs(HS_A, AUTHD_KEY_ACTIVE, 0);

    assert_int_equal(authd_tokens_create(&o, &t), AUTHD_OK);
    set(t, &a, 1);
    return t;
}

static authd_tokens *make(void)
{
    return make_iss(ISS, AUD);
}

static void issue_at(const authd_tokens *t, int64_t nbf, int64_t exp, char *out)
{
    authd_claims c = { .iat = nbf, .nbf = nbf, .exp = exp };
    randombytes_buf(c.sub, sizeof c.sub);
    randombytes_buf(c.sid, sizeof c.sid);
    assert_int_equal(authd_token_issue(t, &c, out, AUTHD_TOKEN_MAX), AUTHD_OK);
}

static void issue(const authd_tokens *t, char *out)
{
    issue_at(t, NOW - 10, NOW + TTL, out);
}

static authd_token_result cached(
    const authd_tokens *t, authd_token_cache *tc, const char *tok, int64_t now)
{
    authd_claims c;
    return authd_token_verify_cached(t, tc, tok, strlen(tok), now, &c);
}

static authd_token_result full(const authd_tokens *t, const char *tok, int64_t now)
{
    authd_claims c;
    return authd_token_verify(t, tok, strlen(tok), now, &c);
}

static authd_token_cache_stats stats(const authd_token_cache *tc)
{
    authd_token_cache_stats s;
    authd_token_cache_stats_get(tc, &s);
    return s;
}

static authd_token_cache *cache(const authd_tokens *t, size_t entries)
{
    authd_token_cache *tc = NULL;
    assert_int_equal(authd_token_cache_create(t, entries, &tc), AUTHD_OK);
    return tc;
}

/* A second Verify of the same token is a hit with the same claims. */
static void hit(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 1024);
    char tok[AUTHD_TOKEN_MAX];
    authd_claims c1, c2, c3;

    issue(t, tok);
    assert_int_equal(authd_token_verify_cached(t, tc, tok, strlen(tok), NOW, &c1), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 0);
    assert_int_equal(stats(tc).inserts, 1);
    assert_int_equal(authd_token_verify_cached(t, tc, tok, strlen(tok), NOW, &c2), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 1);
    assert_int_equal(authd_token_verify(t, tok, strlen(tok), NOW, &c3), AUTHD_TOKEN_OK);
    assert_memory_equal(&c1, &c2, sizeof c1);
    assert_memory_equal(&c2, &c3, sizeof c2);

    /* A second token is its own entry. */
    char tok2[AUTHD_TOKEN_MAX];
    issue(t, tok2);
    assert_int_equal(cached(t, tc, tok2, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok2, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 3);
    assert_int_equal(stats(tc).inserts, 2);

    /* A cache of another key set is not used (the full path answers). */
    authd_tokens *other = make();
    authd_token_cache *tco = cache(other, 16);
    assert_int_equal(cached(t, tco, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tco).inserts, 0);
    assert_int_equal(cached(t, NULL, tok, NOW), AUTHD_TOKEN_OK);

    authd_token_cache_destroy(tco);
    authd_tokens_destroy(other);
    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* Every one-byte change of a cached token (to every other byte value at
 * every position), its truncations and extensions (padding, whitespace,
 * a dot) miss, and get exactly the full path's answer: never OK. */
static void one_byte_different(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 64);
    char tok[AUTHD_TOKEN_MAX], bad[AUTHD_TOKEN_MAX + 8];

    issue(t, tok);
    size_t n = strlen(tok);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    uint64_t hits = stats(tc).hits;
    assert_int_equal(hits, 1);

    for (size_t i = 0; i < n; i++) {
        for (int v = 1; v < 256; v++) {
            if (v == (unsigned char)tok[i])
                continue;
            memcpy(bad, tok, n + 1);
            bad[i] = (char)v;
            authd_claims c;
            authd_token_result got = authd_token_verify_cached(t, tc, bad, n, NOW, &c);
            authd_token_result want = authd_token_verify(t, bad, n, NOW, &c);
            if (got != want || got == AUTHD_TOKEN_OK)
                fail_msg("byte %zu = 0x%02x: cached %d, full %d", i, v, got, want);
        }
    }
    const char *tails[] = { "=", "==", " ", "\n", ".", "A", "\0x" };
    for (size_t k = 0; k < sizeof tails / sizeof tails[0]; k++) {
        size_t tl = k == 6 ? 2 : strlen(tails[k]);
        memcpy(bad, tok, n);
        memcpy(bad + n, tails[k], tl);
        assert_int_not_equal(authd_token_verify_cached(t, tc, bad, n + tl, NOW, NULL), 0);
    }
    for (size_t cut = 1; cut < n; cut++)
        assert_int_not_equal(authd_token_verify_cached(t, tc, tok, n - cut, NOW, NULL), 0);
    assert_int_equal(stats(tc).hits, hits); /* not one of them hit */
    assert_int_equal(stats(tc).inserts, 1); /* nor was stored */
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK); /* the original still hits */
    assert_int_equal(stats(tc).hits, hits + 1);

    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* A SipHash collision (forced: every token hashes alike) leaves only the
 * whole-token compare: every one-byte change of a cached token still
 * misses, and two good tokens in one bucket each get their own claims. */
static void collision(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 64);
    char a[AUTHD_TOKEN_MAX], b[AUTHD_TOKEN_MAX], bad[AUTHD_TOKEN_MAX];
    authd_claims ca, cb, cx;

    authd_token_cache_test_collide(tc);
    issue(t, a);
    issue(t, b);
    size_t n = strlen(a);
    assert_int_equal(authd_token_verify_cached(t, tc, a, n, NOW, &ca), AUTHD_TOKEN_OK);
    assert_int_equal(authd_token_verify_cached(t, tc, b, strlen(b), NOW, &cb), AUTHD_TOKEN_OK);
    assert_int_equal(authd_token_verify_cached(t, tc, a, n, NOW, &cx), AUTHD_TOKEN_OK);
    assert_memory_equal(&cx, &ca, sizeof cx);
    assert_int_equal(authd_token_verify_cached(t, tc, b, strlen(b), NOW, &cx), AUTHD_TOKEN_OK);
    assert_memory_equal(&cx, &cb, sizeof cx);
    assert_int_equal(stats(tc).hits, 2);
    assert_memory_not_equal(ca.sid, cb.sid, sizeof ca.sid);

    for (size_t i = 0; i < n; i++) {
        for (int v = 1; v < 256; v += 7) {
            if (v == (unsigned char)a[i])
                continue;
            memcpy(bad, a, n + 1);
            bad[i] = (char)v;
            authd_token_result got = authd_token_verify_cached(t, tc, bad, n, NOW, &cx);
            authd_token_result want = authd_token_verify(t, bad, n, NOW, &cx);
            if (got != want || got == AUTHD_TOKEN_OK)
                fail_msg("byte %zu = 0x%02x: cached %d, full %d", i, v, got, want);
        }
    }
    assert_int_equal(stats(tc).hits, 2);
    assert_int_equal(stats(tc).inserts, 2);

    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* Two entries (one bucket): a third token evicts the least recently used. */
static void eviction(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 2);
    char a[AUTHD_TOKEN_MAX], b[AUTHD_TOKEN_MAX], c[AUTHD_TOKEN_MAX];

    issue(t, a);
    issue(t, b);
    issue(t, c);
    assert_int_equal(cached(t, tc, a, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, b, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, a, NOW), AUTHD_TOKEN_OK); /* a is now the recent one */
    assert_int_equal(stats(tc).hits, 1);
    assert_int_equal(stats(tc).evictions, 0);
    assert_int_equal(cached(t, tc, c, NOW), AUTHD_TOKEN_OK); /* evicts b */
    assert_int_equal(stats(tc).evictions, 1);
    assert_int_equal(cached(t, tc, a, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 2);
    assert_int_equal(cached(t, tc, b, NOW), AUTHD_TOKEN_OK); /* a miss, evicts c */
    assert_int_equal(stats(tc).hits, 2);
    assert_int_equal(stats(tc).evictions, 2);
    assert_int_equal(stats(tc).inserts, 4);

    /* Many tokens through a small cache: the memory is fixed, answers right. */
    authd_token_cache *small = cache(t, 8);
    for (int i = 0; i < 200; i++) {
        char x[AUTHD_TOKEN_MAX];
        issue(t, x);
        assert_int_equal(cached(t, small, x, NOW), AUTHD_TOKEN_OK);
        assert_int_equal(cached(t, small, x, NOW), AUTHD_TOKEN_OK);
    }
    assert_int_equal(stats(small).hits, 200);
    assert_true(stats(small).evictions >= 200 - 8);

    authd_token_cache_destroy(small);
    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* exp and nbf are rechecked on every hit, with the leeway: the clock
 * moving past exp + leeway fails a cached token, as does a clock stepped
 * back before nbf - leeway. */
static void time_rechecked(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 16);
    char tok[AUTHD_TOKEN_MAX];
    int64_t nbf = NOW, exp = NOW + 60;

    issue_at(t, nbf, exp, tok);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, exp + LEEWAY - 1), AUTHD_TOKEN_OK); /* a hit */
    assert_int_equal(stats(tc).hits, 1);
    assert_int_equal(cached(t, tc, tok, exp + LEEWAY), AUTHD_TOKEN_EXPIRED);
    assert_int_equal(stats(tc).stale, 1);
    assert_int_equal(stats(tc).hits, 1);
    assert_int_equal(cached(t, tc, tok, exp + LEEWAY), AUTHD_TOKEN_EXPIRED); /* and stays so */

    /* Back in time: re-stored, then the clock steps back before nbf. */
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, nbf - LEEWAY), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, nbf - LEEWAY - 1), AUTHD_TOKEN_NOT_YET_VALID);
    assert_int_equal(full(t, tok, nbf - LEEWAY - 1), AUTHD_TOKEN_NOT_YET_VALID);

    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* The key set: any committed reload makes every entry miss once (the
 * generation); a key dropped from the set fails its cached token; a
 * retired key's token verifies until the key's window ends, then fails,
 * even though it was cached while the key was active. */
static void key_set_rechecked(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 16);
    char tok[AUTHD_TOKEN_MAX];

    issue(t, tok); /* by HS_A */
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 1);

    /* The same set again: the generation moves, one miss, then hits. */
    authd_key_spec same = hs(HS_A, AUTHD_KEY_ACTIVE, 0);
    set(t, &same, 1);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).stale, 1);
    assert_int_equal(stats(tc).hits, 1);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 2);

    /* B active, A retired at NOW: A's token still verifies, cached. */
    authd_key_spec rot[2] = { hs(HS_B, AUTHD_KEY_ACTIVE, 0), hs(HS_A, AUTHD_KEY_RETIRED, NOW) };
    set(t, rot, 2);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tc).hits, 3);
    /* A's window ends at NOW + TTL + LEEWAY, with no reload: the hit path
     * asks the key, not only the generation. The token's own exp is later
     * here (a token may outlive its key's window when --token-ttl was
     * lowered after it was issued). */
    char late[AUTHD_TOKEN_MAX];
    authd_key_spec a_only = hs(HS_A, AUTHD_KEY_ACTIVE, 0);
    set(t, &a_only, 1);
    issue_at(t, NOW, NOW + 10 * TTL, late);
    set(t, rot, 2);
    assert_int_equal(cached(t, tc, late, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, late, NOW + TTL + LEEWAY - 1), AUTHD_TOKEN_OK);
    uint64_t h = stats(tc).hits;
    assert_int_equal(cached(t, tc, late, NOW + TTL + LEEWAY), AUTHD_TOKEN_MALFORMED);
    assert_int_equal(full(t, late, NOW + TTL + LEEWAY), AUTHD_TOKEN_MALFORMED);
    assert_int_equal(stats(tc).hits, h);

    /* A dropped from the set: its cached token fails at once. */
    authd_key_spec b_only = hs(HS_B, AUTHD_KEY_ACTIVE, 0);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_OK);
    set(t, &b_only, 1);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_MALFORMED);
    assert_int_equal(full(t, tok, NOW), AUTHD_TOKEN_MALFORMED);

    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* Failures are never stored; tokens over the slot's bound are verified but
 * not stored. */
static void only_verified_stored(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 16);
    char tok[AUTHD_TOKEN_MAX];

    issue_at(t, NOW - 100, NOW - 50, tok); /* expired */
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_EXPIRED);
    assert_int_equal(cached(t, tc, tok, NOW), AUTHD_TOKEN_EXPIRED);
    assert_int_equal(cached(t, tc, "a.b.c", NOW), AUTHD_TOKEN_MALFORMED);
    assert_int_equal(cached(t, tc, "", NOW), AUTHD_TOKEN_MALFORMED);
    assert_int_equal(stats(tc).inserts, 0);

    /* 128-byte issuer and audience: a token longer than a slot. */
    char name[129];
    memset(name, 'n', 128);
    name[128] = '\0';
    authd_tokens *big = make_iss(name, name);
    authd_token_cache *tcb = cache(big, 16);
    issue(big, tok);
    assert_true(strlen(tok) > AUTHD_TOKEN_CACHE_TOKEN_MAX);
    assert_int_equal(cached(big, tcb, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(cached(big, tcb, tok, NOW), AUTHD_TOKEN_OK);
    assert_int_equal(stats(tcb).inserts, 0);
    assert_int_equal(stats(tcb).hits, 0);

    assert_int_equal(authd_token_cache_create(t, 0, &tc), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_token_cache_create(t, AUTHD_TOKEN_CACHE_ENTRIES_MAX + 1, &tc),
        AUTHD_INVALID_ARGUMENT);

    authd_token_cache_destroy(tcb);
    authd_tokens_destroy(big);
    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

/* Differential: random tokens (valid, expired, mutated by one byte,
 * signed by a key later dropped), random times and random reloads; the
 * cached answer always equals authd_token_verify's, and the cache hits
 * (so the comparison is not of two full paths). */
static void differential(void **state)
{
    (void)state;
    authd_tokens *t = make();
    authd_token_cache *tc = cache(t, 16);
    enum { N = 24 };
    static char toks[N][AUTHD_TOKEN_MAX];
    authd_key_spec sets[3][2] = { { hs(HS_A, AUTHD_KEY_ACTIVE, 0) },
        { hs(HS_B, AUTHD_KEY_ACTIVE, 0), hs(HS_A, AUTHD_KEY_RETIRED, NOW) },
        { hs(HS_B, AUTHD_KEY_ACTIVE, 0) } };
    size_t set_n[3] = { 1, 2, 1 };

    for (int i = 0; i < N; i++) {
        if (i == N / 2) {
            set(t, sets[1], 2); /* half by A, half by B */
        }
        int64_t nbf = NOW - 60 + (int64_t)randombytes_uniform(120);
        issue_at(t, nbf, nbf + 30 + (int64_t)randombytes_uniform(2 * TTL), toks[i]);
        if (i % 6 == 5) { /* a mutated copy of the one before */
            memcpy(toks[i], toks[i - 1], sizeof toks[i]);
            size_t n = strlen(toks[i]);
            toks[i][randombytes_uniform((uint32_t)n)] ^= (char)(1 + randombytes_uniform(127));
            if (strlen(toks[i]) != n)
                toks[i][strlen(toks[i])] = 'x';
        }
    }
    for (int step = 0; step < 20000; step++) {
        if (randombytes_uniform(500) == 0) {
            uint32_t k = randombytes_uniform(3);
            set(t, sets[k], set_n[k]);
        }
        const char *tok = toks[randombytes_uniform(N)];
        int64_t now = NOW - 120 + (int64_t)randombytes_uniform(3 * TTL);
        authd_claims a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        authd_token_result got = authd_token_verify_cached(t, tc, tok, strlen(tok), now, &a);
        authd_token_result want = authd_token_verify(t, tok, strlen(tok), now, &b);
        if (got != want)
            fail_msg("step %d: cached %d, full %d", step, got, want);
        if (got == AUTHD_TOKEN_OK)
            assert_memory_equal(&a, &b, sizeof a);
    }
    /* Hits vary with the draws (900 to 3,000 in 30 runs); far from 0. */
    assert_true(stats(tc).hits > 300);
    assert_true(stats(tc).stale > 10);

    authd_token_cache_destroy(tc);
    authd_tokens_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hit),
        cmocka_unit_test(one_byte_different),
        cmocka_unit_test(collision),
        cmocka_unit_test(eviction),
        cmocka_unit_test(time_rechecked),
        cmocka_unit_test(key_set_rechecked),
        cmocka_unit_test(only_verified_stored),
        cmocka_unit_test(differential),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
