/*
 * token.h — access tokens: JWS compact serialization, HS256.
 *
 * We sign and check tokens ourselves (libsodium HMAC-SHA256 and base64url,
 * jansson for JSON) rather than through libjwt 1.10.2, because that version
 * overwrites the "typ" header with "JWT" when encoding and rejects any
 * other "typ" when decoding, so it cannot issue or accept "typ":"at+jwt"
 * (RFC 9068); it also accepts alg "none" and unsigned tokens when given a
 * NULL key and checks no claims.
 *
 * Header:  {"alg":"HS256","typ":"at+jwt","kid":"<kid>"}
 * Claims:  {"iss","aud","sub":<user id hex>,"sid":<session id hex>,
 *           "jti":<session id hex>,"iat","nbf","exp"}
 *
 * authd_token_verify checks, in order: size and shape (three base64url
 * parts, no padding); the header (exactly alg HS256 — "none", "None",
 * "RS256", … are rejected — typ "at+jwt", a known kid, no jku/x5u/jwk/x5c/
 * crit: the header's members are exactly alg, typ and kid; no duplicate
 * members); the signature, in constant time; the claims
 * (all present with the right types; iss and aud equal to ours; sid == jti;
 * sub and sid 32 lowercase hex digits); then exp and nbf against now with
 * the leeway. Unknown claims are ignored (so a later authd may add one);
 * unknown header members are not. No allocation escapes; secrets are wiped
 * on destroy.
 */
#ifndef AUTHD_TOKEN_H
#define AUTHD_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define AUTHD_TOKEN_MAX       4096 /* longest token accepted or produced, bytes */
#define AUTHD_SIGNING_KEY_MIN 32 /* bytes */
#define AUTHD_SIGNING_KEY_MAX 1024 /* bytes */
#define AUTHD_KID_MAX         32
#define AUTHD_FINGERPRINT_LEN 16 /* hex chars, without NUL */

typedef struct authd_tokens authd_tokens;

typedef struct authd_tokens_options {
    const uint8_t *key; /* HMAC secret, >= AUTHD_SIGNING_KEY_MIN bytes; copied */
    size_t key_len;
    const char *issuer; /* "iss" issued and required; copied */
    const char *audience; /* "aud" issued and required; copied */
    int64_t leeway; /* seconds of clock skew allowed on exp/nbf */
} authd_tokens_options;

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
 * 1..128 printable ASCII characters without quote or backslash; leeway 0..86400. The kid is the
 * first 8 bytes of SHA-256(key) as 16 lowercase hex digits. Returns AUTHD_INVALID_ARGUMENT for a
 * short key or empty issuer/audience. The caller frees *out with authd_tokens_destroy. */
AUTHD_MUST_CHECK authd_code authd_tokens_create(
    const authd_tokens_options *opts, authd_tokens **out);

/* authd_tokens_destroy wipes the key and frees. Accepts NULL. */
void authd_tokens_destroy(authd_tokens *t);

/* authd_tokens_kid returns the key id (static for the object's life). */
const char *authd_tokens_kid(const authd_tokens *t);

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
