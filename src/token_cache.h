/*
 * token_cache.h — a verified-token cache for Verify, one per event loop.
 *
 * After a token has verified once (shape, header, signature, claims, time),
 * a later Verify of the byte-identical token on the same loop skips the
 * base64url decode, the signature and the claims parse: the technique of
 * Envoy's jwt_authn jwt_cache_config. Only what cannot change is skipped.
 * Every hit still checks, against the current time and key set:
 *
 *   - exp and nbf, with the same leeway (authd_tokens_check_time);
 *   - that the key set has not changed since the entry was made (a
 *     generation number that every committed reload bumps), and that the
 *     token's key may verify now (published, active, or retired within its
 *     window: the same key_usable as the full path).
 *
 * A hit that fails a recheck drops the entry and takes the full path, so
 * the answer (and its reason) is the full path's. The caller still does
 * everything after the token: the session lookup (a logout takes effect at
 * once), the user's status, required roles and audience.
 *
 * Indexing: SipHash-2-4 (libsodium's crypto_shorthash) of the whole token
 * under a random key of the cache's own, so nobody outside the process can
 * aim tokens at one bucket; then the whole token is compared with the
 * stored copy in constant time (a word-wise XOR/OR, token_cache.c). Two slots per bucket, the
 * least recently used replaced. Only tokens that verified are stored
 * (there is no negative cache); tokens longer than AUTHD_TOKEN_CACHE_TOKEN_MAX
 * are not cached. Fixed size: entries * sizeof slot (640 bytes) plus 9
 * bytes of index per entry, allocated at create; no allocation after.
 *
 * Not thread-safe, by design: one cache belongs to one loop thread (no
 * lock, no shared cache line). The key set it reads may change under it
 * from another thread (authd_tokens_set_keys), which is safe.
 */
#ifndef AUTHD_TOKEN_CACHE_H
#define AUTHD_TOKEN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "token.h"

#define AUTHD_TOKEN_CACHE_TOKEN_MAX   560 /* longest token cached, bytes */
#define AUTHD_TOKEN_CACHE_ENTRIES_MAX 65536
#define AUTHD_TOKEN_CACHE_SLOT_BYTES  640 /* memory per entry (+ 10 bytes of index) */

typedef struct authd_token_cache authd_token_cache;

typedef struct authd_token_cache_stats {
    uint64_t hits; /* answered from the cache */
    uint64_t misses; /* full path taken (not found, too long, or stale) */
    uint64_t stale; /* found, but a recheck failed: dropped, then the full path */
    uint64_t inserts;
    uint64_t evictions; /* an insert replaced a live entry */
} authd_token_cache_stats;

/* authd_token_cache_create makes a cache of entries (1..65536; rounded up
 * to even) for tokens verified by t, which must outlive it. The caller
 * frees *out with authd_token_cache_destroy. AUTHD_INVALID_ARGUMENT for a
 * size out of range, AUTHD_RESOURCE_EXHAUSTED without memory. */
AUTHD_MUST_CHECK authd_code authd_token_cache_create(
    const authd_tokens *t, size_t entries, authd_token_cache **out);

/* authd_token_cache_destroy wipes the stored tokens and frees. Accepts NULL. */
void authd_token_cache_destroy(authd_token_cache *tc);

/* authd_token_verify_cached answers exactly as authd_token_verify(t, ...)
 * would, from the cache when it can. tc may be NULL, or a cache of another
 * key set: then it is authd_token_verify. On AUTHD_TOKEN_OK fills *out. */
authd_token_result authd_token_verify_cached(const authd_tokens *t, authd_token_cache *tc,
    const char *token, size_t len, int64_t now, authd_claims *out);

/* authd_token_cache_test_collide, for tests only: from now on every token
 * hashes alike (one bucket, one tag), so that the whole-token compare alone
 * tells tokens apart, as it must after a SipHash collision. */
void authd_token_cache_test_collide(authd_token_cache *tc);

/* authd_token_cache_stats copies the counters (for tests and profiles). */
void authd_token_cache_stats_get(const authd_token_cache *tc, authd_token_cache_stats *out);

#endif
