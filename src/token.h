/*
 * token.h — access tokens: JWS compact serialization, signed by a key set.
 *
 * We sign and check tokens ourselves (OpenSSL for HMAC-SHA256 and ECDSA,
 * libsodium for base64url and constant-time compares, jansson for JSON)
 * rather than through libjwt 1.10.2, because that version overwrites the
 * "typ" header with "JWT" when encoding and rejects any other "typ" when
 * decoding, so it cannot issue or accept "typ":"at+jwt" (RFC 9068); it also
 * accepts alg "none" and unsigned tokens when given a NULL key, takes the
 * algorithm from the token, checks no claims, and re-parses PEM keys on
 * every call.
 *
 * Header:  {"alg":"HS256"|"ES256","typ":"at+jwt","kid":"<kid>"}
 * Claims:  {"iss","aud","sub":<user id hex>,"sid":<session id hex>,
 *           "jti":<session id hex>,"iat","nbf","exp"}
 *
 * The key set: keys indexed by kid, each pinned to the algorithm it was
 * made for (token_alg.h). One key is active and signs; published keys (not
 * yet signing), the active key, and retired keys until every token they
 * signed has expired (retired_at + max_ttl + leeway) verify. The header's
 * alg must equal the key's; it never picks the algorithm.
 *
 * authd_token_verify checks, in order: size and shape (three base64url
 * parts, no padding); the header (byte-equal to one of our keys' headers,
 * or else: alg, typ "at+jwt" and kid are its only members, no duplicates,
 * kid names a key of the set, alg is exactly that key's algorithm —
 * "none", "None", "RS256", HS256 with an ES256 key's kid, … are rejected —
 * and the key may verify now); the signature (HS256 in constant time;
 * ES256 through OpenSSL); the claims (all present with the right types;
 * iss and aud equal to ours; sid == jti; sub and sid 32 lowercase hex
 * digits); then exp and nbf against now with the leeway. Unknown claims are
 * ignored (so a later authd may add one); unknown header members are not.
 * No allocation escapes; secrets are wiped on destroy.
 */
#ifndef AUTHD_TOKEN_H
#define AUTHD_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define AUTHD_TOKEN_MAX       4096 /* longest token accepted or produced, bytes */
#define AUTHD_SIGNING_KEY_MIN 32 /* bytes */
#define AUTHD_SIGNING_KEY_MAX 1024 /* bytes */
#define AUTHD_KID_MAX         32
#define AUTHD_FINGERPRINT_LEN 16 /* hex chars, without NUL */
#define AUTHD_KEYS_MAX        32 /* keys in one key set */
#define AUTHD_KEYS_LIFE_MAX   256 /* distinct keys one process loads in its life */
#define AUTHD_JWKS_MAX        (AUTHD_KEYS_MAX * 256 + 16) /* longest JWKS document */

typedef struct authd_tokens authd_tokens;

typedef struct authd_tokens_options {
    /* One HS256 secret (>= AUTHD_SIGNING_KEY_MIN bytes; not kept), the
     * whole key set of a --signing-key deployment; or NULL: the keys come
     * from authd_tokens_set_keys. */
    const uint8_t *key;
    size_t key_len;
    const char *issuer; /* "iss" issued and required; copied */
    const char *audience; /* "aud" issued and required; copied */
    int64_t leeway; /* seconds of clock skew allowed on exp/nbf */
    int64_t max_ttl; /* longest token lifetime issued, seconds: how long a retired key still
                        verifies (plus leeway); 0 = 43200 (12 h) */
} authd_tokens_options;

typedef enum authd_key_state {
    AUTHD_KEY_GONE = 0, /* not in the key set (any more): verifies nothing */
    AUTHD_KEY_PUBLISHED = 1, /* verifies (and is in the JWKS), does not sign yet */
    AUTHD_KEY_ACTIVE = 2, /* signs and verifies; exactly one per set */
    AUTHD_KEY_RETIRED = 3, /* verifies until retired_at + max_ttl + leeway, then nothing */
} authd_key_state;

/* authd_key_spec: one key of a set, as the key directory describes it. */
typedef struct authd_key_spec {
    const char *alg; /* "HS256" or "ES256" */
    const char *kid; /* must equal the kid derived from the material; NULL = take it */
    const uint8_t *material; /* HS256: the raw secret; ES256: a PEM private key on P-256 */
    size_t material_len;
    authd_key_state state;
    int64_t retired_at; /* RETIRED only: Unix seconds */
} authd_key_spec;

typedef struct authd_claims {
    uint8_t sub[16]; /* user id */
    uint8_t sid[16]; /* session id (also the jti) */
    int64_t iat;
    int64_t nbf;
    int64_t exp;
} authd_claims;

typedef enum authd_token_result {
    AUTHD_TOKEN_OK = 0,
    AUTHD_TOKEN_MALFORMED, /* shape, encoding, header JSON, alg, typ, kid */
    AUTHD_TOKEN_BAD_SIGNATURE, /* MAC does not match (empty/truncated too) */
    AUTHD_TOKEN_INVALID_CLAIMS, /* claims JSON, missing/mistyped claim, iss/aud */
    AUTHD_TOKEN_EXPIRED, /* now >= exp + leeway */
    AUTHD_TOKEN_NOT_YET_VALID, /* now + leeway < nbf */
} authd_token_result;

/* authd_tokens_create makes a signer/verifier. issuer and audience must be
 * 1..128 printable ASCII characters without quote or backslash; leeway 0..86400. With a key, the
 * set is that one HS256 key, active, its kid the first 8 bytes of SHA-256(key) as 16 lowercase
 * hex digits; without one, the set is empty (nothing verifies, issue fails) until
 * authd_tokens_set_keys. Returns AUTHD_INVALID_ARGUMENT for a short key or empty issuer/audience.
 * The caller frees *out with authd_tokens_destroy. */
AUTHD_MUST_CHECK authd_code authd_tokens_create(
    const authd_tokens_options *opts, authd_tokens **out);

/* authd_tokens_destroy wipes the key and frees. Accepts NULL. */
void authd_tokens_destroy(authd_tokens *t);

/* authd_tokens_set_keys makes specs (n of them, at most AUTHD_KEYS_MAX) the key set: exactly
 * one ACTIVE, kids unique, each kid the one its material derives, and a kid already loaded must
 * keep its algorithm and material. Keys are parsed once, here; a kid seen before keeps its loaded
 * key and only changes state; a loaded key missing from specs becomes GONE. All or nothing: on an
 * error (AUTHD_INVALID_ARGUMENT, AUTHD_RESOURCE_EXHAUSTED after AUTHD_KEYS_LIFE_MAX distinct
 * keys) the set in force is unchanged and err says why. Safe while other threads issue and
 * verify (they see each key's old or new state); one caller at a time. */
AUTHD_MUST_CHECK authd_code authd_tokens_set_keys(
    authd_tokens *t, const authd_key_spec *specs, size_t n, char *err, size_t errlen);

/* authd_tokens_kid returns the active key's id ("" with no key); the string lives as long as
 * t. */
const char *authd_tokens_kid(const authd_tokens *t);

/* authd_tokens_audience_is is true when aud (len bytes) is the audience
 * every token of t carries (the "aud" issued and required). */
bool authd_tokens_audience_is(const authd_tokens *t, const char *aud, size_t len);

/* authd_tokens_alg returns the active key's algorithm name ("" with no key; static). */
const char *authd_tokens_alg(const authd_tokens *t);

/* authd_tokens_jwks writes the JWKS document of the public keys that verify at now
 * ({"keys":[...]}: ES256 keys published, active, or retired and not yet expired; HS256 keys are
 * secret and never in it) into out (cap >= AUTHD_JWKS_MAX is always enough), NUL-terminated.
 * Returns AUTHD_INVALID_ARGUMENT when it does not fit. Thread-safe. */
AUTHD_MUST_CHECK authd_code authd_tokens_jwks(
    const authd_tokens *t, int64_t now, char *out, size_t cap);

/* authd_token_key_generate writes fresh key material for alg ("HS256": 64 random bytes;
 * "ES256": a PKCS#8 PEM P-256 private key) into out (cap >= AUTHD_SIGNING_KEY_MAX) and its
 * kid (16 hex digits + NUL). The caller wipes out. */
AUTHD_MUST_CHECK authd_code authd_token_key_generate(
    const char *alg, uint8_t *out, size_t cap, size_t *len, char kid[AUTHD_KID_MAX + 1]);

/* authd_token_key_check parses material as a key of alg and writes its kid; the check
 * authd_tokens_set_keys makes of each key. AUTHD_INVALID_ARGUMENT if alg is unknown or the
 * material is not a key of it. */
AUTHD_MUST_CHECK authd_code authd_token_key_check(
    const char *alg, const uint8_t *material, size_t len, char kid[AUTHD_KID_MAX + 1]);

/* authd_token_issue writes a signed, NUL-terminated token into out
 * (out_size >= AUTHD_TOKEN_MAX is always enough). Thread-safe. */
AUTHD_MUST_CHECK authd_code authd_token_issue(
    const authd_tokens *t, const authd_claims *c, char *out, size_t out_size);

/* authd_token_verify checks token (len bytes, need not be NUL-terminated)
 * at time now. On AUTHD_TOKEN_OK fills *out; otherwise *out is untouched.
 * Thread-safe; this is on Verify's hot path. */
authd_token_result authd_token_verify(
    const authd_tokens *t, const char *token, size_t len, int64_t now, authd_claims *out);

/* authd_token_result_reason: "MALFORMED", "BAD_SIGNATURE", "INVALID_CLAIMS",
 * "EXPIRED", "NOT_YET_VALID" (static strings; "" for OK). */
const char *authd_token_result_reason(authd_token_result r);

/* authd_token_fingerprint writes the first 8 bytes of SHA-256(token) as 16
 * hex digits + NUL into out: the only form in which a token may be logged. */
void authd_token_fingerprint(const char *token, size_t len, char out[AUTHD_FINGERPRINT_LEN + 1]);

#endif
