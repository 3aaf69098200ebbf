/*
 * token_alg.h — the seam between the JWS code (token.c) and the signing
 * algorithms (alg_hs256.c, alg_es256.c). Internal to the token module.
 *
 * An algorithm is a row of {name, load, sign, verify, jwk, unload}, as
 * OpenSSH's sshkey.c keeps keyimpls[]: token.c never names an algorithm
 * except to look one up by the name a key was created with, and a key is
 * pinned to its algorithm for its whole life. The token's own "alg" header
 * only has to agree with the key's; it never chooses the code that checks
 * the signature.
 *
 * Key objects are immutable once loaded, except their state words (state,
 * retired_at), which a reload changes with atomic stores. They are freed
 * only by authd_tokens_destroy, so a reader on an event loop needs no lock
 * and no epoch to use one (see token.c, "the key set").
 */
#ifndef AUTHD_TOKEN_ALG_H
#define AUTHD_TOKEN_ALG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: see alg_hs256.c */
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "token.h"

#define AUTHD_SIG_MAX    64 /* longest raw JWS signature of any algorithm (ES256: r || s) */
#define AUTHD_HEADER_B64 128 /* our own header segment (at most 102 chars) + NUL */
#define AUTHD_JWK_MAX    256 /* one public JWK, JSON */

typedef struct authd_key authd_key;

typedef struct authd_token_alg {
    const char *name; /* the JWS "alg" value, e.g. "HS256" */
    size_t sig_len; /* raw signature bytes in the token */
    /* load parses the key material once (HS256: raw secret bytes; ES256: a
     * PEM private key) into k and derives k->kid from it (16 lowercase hex
     * digits: the first 8 bytes of SHA-256 of the secret, or of the public
     * point); 0 on success. On failure nothing is held. */
    int (*load)(authd_key *k, const uint8_t *material, size_t len);
    /* unload frees and wipes what load made. */
    void (*unload)(authd_key *k);
    /* sign writes sig_len bytes of signature over msg; 0 on success. */
    int (*sign)(const authd_key *k, const void *msg, size_t n, uint8_t *sig);
    /* verify: sig (sig_len bytes, checked by the caller) is a valid
     * signature of msg by k. Thread-safe; must not allocate more than the
     * library needs. */
    bool (*verify)(const authd_key *k, const void *msg, size_t n, const uint8_t *sig);
    /* generate writes fresh key material (what load reads) into out (cap
     * bytes) and its length to *len; 0 on success. For `authd keys add`. */
    int (*generate)(uint8_t *out, size_t cap, size_t *len);
    /* public_jwk: true for algorithms whose public key may be published
     * (the key's JWK is then in k->jwk); false for secret-key algorithms. */
    bool public_jwk;
} authd_token_alg;

extern const authd_token_alg authd_alg_hs256;
extern const authd_token_alg authd_alg_es256;

struct authd_key {
    const authd_token_alg *alg;
    char kid[AUTHD_KID_MAX + 1];
    char header[AUTHD_HEADER_B64]; /* base64url of our exact header JSON for this key */
    size_t header_len;
    uint8_t material_id[32]; /* SHA-256 of the material: a reload may not change a kid's key */
    _Atomic int state; /* authd_key_state, or 0: no longer in the key set */
    _Atomic int64_t retired_at;
    authd_key *next; /* the set's list; written before the key is published */
    union {
        struct {
            /* HMAC-SHA256 already keyed: states that absorbed key^ipad and
             * key^opad; never written after load; wiped by unload. */
            SHA256_CTX ipad, opad;
        } hs;
        struct {
            EVP_PKEY *pkey; /* private key (its public half verifies); parsed once */
            char jwk[AUTHD_JWK_MAX]; /* {"kty":"EC",...} */
        } es;
    } u;
};

/* The token module's own entry points for the verified-token cache
 * (token_cache.c); see token.c. */

/* authd_token_verify_key is authd_token_verify that also returns the key
 * that verified (on AUTHD_TOKEN_OK only; key may be NULL). */
authd_token_result authd_token_verify_key(const authd_tokens *t, const char *token, size_t len,
    int64_t now, authd_claims *out, const authd_key **key);

/* authd_tokens_key_usable: k may verify a token at now (published or
 * active, or retired less than max_ttl + leeway ago). */
bool authd_tokens_key_usable(const authd_tokens *t, const authd_key *k, int64_t now);

/* authd_tokens_check_time: the exp / nbf check of a verify, with the
 * leeway: AUTHD_TOKEN_OK, _EXPIRED or _NOT_YET_VALID. */
authd_token_result authd_tokens_check_time(
    const authd_tokens *t, const authd_claims *c, int64_t now);

/* authd_tokens_generation changes (grows) with every key-set change that
 * authd_tokens_set_keys commits; read with acquire order. */
uint64_t authd_tokens_generation(const authd_tokens *t);

#endif
