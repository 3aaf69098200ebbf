/*
 * alg_hs256.c — HS256 (HMAC-SHA256) behind the token-algorithm seam.
 *
 * The MAC uses OpenSSL's low-level SHA256_* calls, deprecated in 3.0 in
 * favour of EVP but present throughout 3.x: with them the keyed midstates
 * are plain structs copied on the stack. Through EVP, each MAC cost three
 * allocations (a context and two provider copies) and the provider
 * dispatch: 1.5 us against 0.5 us here, a fifth of what a Verify at 1,000
 * connections costs the server beyond the echo (docs/benchmarks.md). Both
 * use the same SHA-NI block function (libsodium's portable C SHA-256 was a
 * quarter of a Verify's instructions under callgrind).
 */
#include <string.h>

#include <sodium.h>

#include "token_alg.h"

#define MAC_LEN      32
#define SHA256_BLOCK 64

/* hs_load absorbs the padded key into the inner and outer states (a key
 * longer than a block is hashed first, as RFC 2104 says), and derives the
 * kid as authd always has: the first 8 bytes of SHA-256(key), in hex. The
 * raw key is not kept. */
static int hs_load(authd_key *k, const uint8_t *key, size_t key_len)
{
    uint8_t kb[SHA256_BLOCK] = { 0 }, pad[SHA256_BLOCK], d[crypto_hash_sha256_BYTES];

    if (key_len < AUTHD_SIGNING_KEY_MIN || key_len > AUTHD_SIGNING_KEY_MAX)
        return -1;
    crypto_hash_sha256(d, key, key_len);
    sodium_bin2hex(k->kid, sizeof k->kid, d, 8);
    sodium_memzero(d, sizeof d);
    if (key_len > SHA256_BLOCK)
        crypto_hash_sha256(kb, key, key_len);
    else
        memcpy(kb, key, key_len);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = kb[i] ^ 0x36;
    SHA256_Init(&k->u.hs.ipad);
    SHA256_Update(&k->u.hs.ipad, pad, sizeof pad);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = kb[i] ^ 0x5c;
    SHA256_Init(&k->u.hs.opad);
    SHA256_Update(&k->u.hs.opad, pad, sizeof pad);
    sodium_memzero(kb, sizeof kb);
    sodium_memzero(pad, sizeof pad);
    return 0;
}

static void hs_unload(authd_key *k)
{
    sodium_memzero(&k->u.hs, sizeof k->u.hs);
}

/* hmac computes HMAC-SHA256(key, p[0..n)) from the keyed states. Safe to
 * call from many threads at once: the keyed states are only copied. The
 * low-level SHA-256 calls cannot fail (they only return 1) and allocate
 * nothing. */
static void hmac(const authd_key *k, const void *p, size_t n, uint8_t out[MAC_LEN])
{
    SHA256_CTX c = k->u.hs.ipad;
    uint8_t inner[MAC_LEN];

    SHA256_Update(&c, p, n);
    SHA256_Final(inner, &c);
    c = k->u.hs.opad;
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
    sodium_memzero(&c, sizeof c);
    sodium_memzero(inner, sizeof inner);
}

static int hs_sign(const authd_key *k, const void *msg, size_t n, uint8_t *sig)
{
    hmac(k, msg, n, sig);
    return 0;
}

/* hs_verify compares in constant time, and wipes the computed MAC: it is a
 * valid signature for whatever the caller sent. */
static bool hs_verify(const authd_key *k, const void *msg, size_t n, const uint8_t *sig)
{
    uint8_t mac[MAC_LEN];

    hmac(k, msg, n, mac);
    bool ok = crypto_verify_32(mac, sig) == 0;
    sodium_memzero(mac, sizeof mac);
    return ok;
}

/* hs_generate: 64 random bytes, as --create-signing-key writes. */
static int hs_generate(uint8_t *out, size_t cap, size_t *len)
{
    if (cap < 64)
        return -1;
    randombytes_buf(out, 64);
    *len = 64;
    return 0;
}

const authd_token_alg authd_alg_hs256 = {
    .name = "HS256",
    .sig_len = MAC_LEN,
    .load = hs_load,
    .unload = hs_unload,
    .sign = hs_sign,
    .verify = hs_verify,
    .generate = hs_generate,
    .public_jwk = false,
};
