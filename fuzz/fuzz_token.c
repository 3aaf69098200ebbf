/*
 * fuzz_token.c — libFuzzer harness for authd_token_verify.
 *
 * Two properties, checked on every input:
 *
 * 1. The fast paths never change an outcome. token.c takes a shortcut for
 *    a header byte-equal to ours and for claims laid out exactly as
 *    authd_token_issue writes them (claims_fast), and falls back to jansson
 *    otherwise. Both are static, so the harness reaches the general path
 *    from outside: JSON allows whitespace before a value, and a leading
 *    space is enough to miss both shortcuts (ours starts with '{'). So for
 *    every header H and claims C signed with our key,
 *        verify(H.C) == verify(H." "C) == verify(" "H.C)
 *    with the same claims out on success — the second and third always go
 *    through jansson, the first through the fast path when it applies.
 *
 * 2. Nothing is accepted that was not signed with our key: whenever verify
 *    gets past the MAC (any result but MALFORMED and BAD_SIGNATURE), an
 *    independent HMAC-SHA256 (libsodium, one-shot) over the bytes before
 *    the last dot must equal the decoded signature; and every token signed
 *    here with another key must fail as BAD_SIGNATURE (or MALFORMED).
 *
 * 3. The key set also holds a published ES256 key. No token naming its kid
 *    ever gets past the signature: the harness cannot make an ECDSA
 *    signature, and an HS256 MAC (by our key, which mode 2 can put under
 *    any header) must not pass for it — the algorithm comes from the key.
 *
 * 4. The verified-token cache (token_cache.c) never changes an outcome:
 *    every token verify_checked sees also goes through one of two caches
 *    that live across inputs (one indexed normally, one where every token
 *    hashes alike, so the whole-token compare alone separates them); a
 *    token that verified is asked again (a hit) and at a later and an
 *    earlier time; each answer (and the claims) must equal
 *    authd_token_verify's at that time.
 *
 * Input layout: byte 0 picks the mode, byte 1 moves the clock around the
 * seeds' iat/nbf/exp, the rest is the mode's data:
 *   0  a raw token;
 *   1  claims JSON, signed under our canonical header;
 *   2  byte 2 = header length h, then h bytes of header JSON, then claims;
 *   3  74 bytes of claims (sub, sid, iat, nbf, exp) for authd_token_issue,
 *      whose token must verify as the clock says and round-trip the claims.
 */
#define _GNU_SOURCE /* memmem */
#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "token.h"
#include "token_cache.h"

#define KEY        "fuzz-signing-key-0123456789abcdef"
#define OTHER_KEY  "fuzz-other-key-abcdefghijklmnopqrs"
#define ISS        "https://authd.example"
#define AUD        "authd-internal"
#define LEEWAY     30
#define BASE_TIME  1700000000
#define HEADER_MAX 256 /* token.c: decoded headers above this are refused */
#define PART_MAX   (AUTHD_TOKEN_MAX + 2) /* JSON bytes worth signing */

/* The published ES256 key (fixed, so runs are reproducible). */
static const char es_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                             "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxeCFsn27eiMmRD7i\n"
                             "251XGxMtMMmdf4lI1CSkkf7QDTehRANCAATJPpNo6QPkvyb3T3H4ROQ4JDe6sW7T\n"
                             "glCIkxu3a8lHjd8fNClRPQz7ajZN3n+69FrFeQxlZnbYLm9aqhB9gbT9\n"
                             "-----END PRIVATE KEY-----\n";

static authd_tokens *toks;
static authd_token_cache *cache, *cache_collide; /* property 4 */
static char our_header[128];
static char es_kid[AUTHD_KID_MAX + 1];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    authd_tokens_options o = { (const uint8_t *)KEY, strlen(KEY), ISS, AUD, LEEWAY, 0 };

    (void)argc;
    (void)argv;
    char err[160];

    if (sodium_init() < 0 || authd_tokens_create(&o, &toks) != AUTHD_OK)
        abort();
    authd_key_spec set[] = {
        { "HS256", NULL, (const uint8_t *)KEY, strlen(KEY), AUTHD_KEY_ACTIVE, 0 },
        { "ES256", NULL, (const uint8_t *)es_pem, sizeof es_pem - 1, AUTHD_KEY_PUBLISHED, 0 },
    };
    if (authd_tokens_set_keys(toks, set, 2, err, sizeof err) != AUTHD_OK
        || authd_token_key_check("ES256", set[1].material, set[1].material_len, es_kid) != AUTHD_OK)
        abort();
    if (authd_token_cache_create(toks, 64, &cache) != AUTHD_OK
        || authd_token_cache_create(toks, 4, &cache_collide) != AUTHD_OK)
        abort();
    authd_token_cache_test_collide(cache_collide);
    snprintf(our_header, sizeof our_header, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}",
        authd_tokens_kid(toks));
    return 0;
}

/* b64 appends base64url (no padding) of in[0..n) at out[*pos]; false when
 * it would not fit in cap. */
static bool b64(char *out, size_t cap, size_t *pos, const void *in, size_t n)
{
    size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

    if (need > cap - *pos)
        return false;
    sodium_bin2base64(out + *pos, need, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *pos += strlen(out + *pos);
    return true;
}

/* hmac_with: HMAC-SHA256 under the whole key string (the one-shot
 * crypto_auth_hmacsha256 would take exactly 32 bytes of it). */
static void hmac_with(const char *key, uint8_t mac[32], const char *in, size_t n)
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, (const uint8_t *)key, strlen(key));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)in, n);
    crypto_auth_hmacsha256_final(&st, mac);
}

/* sign builds b64(hdr).b64([" "]claims).b64(HMAC(key)) into out (NUL-
 * terminated); returns its length, or 0 when it does not fit. */
static size_t sign(char *out, size_t cap, const void *hdr, size_t hdr_len, bool hdr_space,
    const void *claims, size_t claims_len, bool claims_space, const char *key)
{
    static uint8_t buf[PART_MAX + 1];
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    size_t pos = 0;

    if (hdr_len > PART_MAX || claims_len > PART_MAX)
        return 0;
    buf[0] = ' ';
    memcpy(buf + 1, hdr, hdr_len);
    if (!b64(out, cap, &pos, hdr_space ? buf : buf + 1, hdr_len + hdr_space) || pos + 1 >= cap)
        return 0;
    out[pos++] = '.';
    memcpy(buf + 1, claims, claims_len);
    if (!b64(out, cap, &pos, claims_space ? buf : buf + 1, claims_len + claims_space))
        return 0;
    hmac_with(key, mac, out, pos);
    if (pos + 1 >= cap)
        return 0;
    out[pos++] = '.';
    if (!b64(out, cap, &pos, mac, sizeof mac))
        return 0;
    return pos;
}

static const char *rname(authd_token_result r)
{
    return r == AUTHD_TOKEN_OK ? "OK" : authd_token_result_reason(r);
}

static bool past_mac(authd_token_result r)
{
    return r != AUTHD_TOKEN_MALFORMED && r != AUTHD_TOKEN_BAD_SIGNATURE;
}

/* check_signed: if verify got past the MAC, tok[0..n) carries our MAC over
 * everything before its last dot (checked without token.c). */
static void check_signed(const char *tok, size_t n, authd_token_result r)
{
    uint8_t want[32], got[64];
    size_t got_len = 0;
    const char *dot = NULL;

    if (!past_mac(r))
        return;
    for (size_t i = 0; i < n; i++)
        if (tok[i] == '.')
            dot = tok + i;
    FUZZ_CHECK(dot != NULL, "accepted a token without a dot");
    static uint8_t hdr[AUTHD_TOKEN_MAX];
    size_t hdr_len = 0, first = 0;
    while (first < n && tok[first] != '.')
        first++;
    FUZZ_CHECK(sodium_base642bin(hdr, sizeof hdr - 1, tok, first, NULL, &hdr_len, NULL,
                   sodium_base64_VARIANT_URLSAFE_NO_PADDING)
            == 0,
        "%s for a token whose header is not base64url", rname(r));
    hdr[hdr_len] = '\0';
    FUZZ_CHECK(memmem(hdr, hdr_len, es_kid, strlen(es_kid)) == NULL,
        "%s for a token naming the ES256 key", rname(r));
    hmac_with(KEY, want, tok, (size_t)(dot - tok));
    FUZZ_CHECK(sodium_base642bin(got, sizeof got, dot + 1, n - (size_t)(dot + 1 - tok), NULL,
                   &got_len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
                == 0
            && got_len == sizeof want && memcmp(got, want, sizeof want) == 0,
        "%s for a token not signed with our key", rname(r));
}

/* cached_is: property 4 for one token at one time through cache tc; want
 * is authd_token_verify's answer (claims in *wc if OK). */
static void cached_is(authd_token_cache *tc, const char *tok, size_t n, int64_t now,
    authd_token_result want, const authd_claims *wc)
{
    authd_claims c;

    memset(&c, 0x5a, sizeof c);
    authd_token_result r = authd_token_verify_cached(toks, tc, tok, n, now, &c);
    FUZZ_CHECK(r == want, "cache%s: %s, full path %s", tc == cache ? "" : " (colliding)", rname(r),
        rname(want));
    if (r == AUTHD_TOKEN_OK)
        FUZZ_CHECK(memcmp(&c, wc, sizeof c) == 0, "cache: claims differ");
}

/* check_cached: property 4. Half the tokens (by length) go through the
 * colliding cache, where they meet every good token stored there; a
 * token that verified is asked again (a hit) and at a later and an
 * earlier time, each against the full path at that time. Kept to one extra
 * full verify for a bad token: the harness's rate is its coverage. */
static void check_cached(
    const char *tok, size_t n, int64_t now, authd_token_result want, const authd_claims *wc)
{
    authd_token_cache *tc = (n & 1) != 0 ? cache_collide : cache;

    cached_is(tc, tok, n, now, want, wc);
    if (want != AUTHD_TOKEN_OK)
        return;
    cached_is(tc, tok, n, now, want, wc);
    for (int k = 0; k < 2; k++) {
        int64_t then = now + (k == 0 ? 2000 : -2000);
        authd_claims tc_want;
        memset(&tc_want, 0xa5, sizeof tc_want);
        authd_token_result w = authd_token_verify(toks, tok, n, then, &tc_want);
        cached_is(tc, tok, n, then, w, &tc_want);
    }
}

/* verify_checked runs verify and the signature property on one token. */
static authd_token_result verify_checked(const char *tok, size_t n, int64_t now, authd_claims *out)
{
    authd_claims c;
    authd_token_result r;

    memset(&c, 0xa5, sizeof c);
    r = authd_token_verify(toks, tok, n, now, &c);
    check_signed(tok, n, r);
    check_cached(tok, n, now, r, &c);
    if (r == AUTHD_TOKEN_OK) {
        FUZZ_CHECK(now < c.exp + LEEWAY && c.nbf - LEEWAY <= now, "OK outside [nbf, exp)");
        *out = c;
    }
    return r;
}

/* same_outcome: the fast and the general path of one JSON pair agree. */
static void same_outcome(const char *what, authd_token_result a, const authd_claims *ca,
    authd_token_result b, const authd_claims *cb)
{
    FUZZ_CHECK(a == b, "%s: fast path %s, general path %s", what, rname(a), rname(b));
    if (a == AUTHD_TOKEN_OK)
        FUZZ_CHECK(memcmp(ca, cb, sizeof *ca) == 0, "%s: claims differ", what);
}

/* check_pair signs (hdr, claims) three ways with our key and once with
 * another, and checks both properties. */
static void check_pair(const void *hdr, size_t hl, const void *claims, size_t cl, int64_t now)
{
    static char t1[AUTHD_TOKEN_MAX + 64], t2[AUTHD_TOKEN_MAX + 64], t3[AUTHD_TOKEN_MAX + 64];
    authd_claims c1, c2, c3;
    authd_token_result r1, r2, r3;
    size_t n1, n2, n3;

    /* An empty part is refused for its shape, before any JSON is read;
     * its spaced variant is not empty. Nothing to compare there. */
    if (hl == 0 || cl == 0)
        return;
    /* One byte of slack so that the spaced variants stay within the limit. */
    n1 = sign(t1, sizeof t1, hdr, hl, false, claims, cl, false, KEY);
    if (n1 == 0 || n1 + 2 > AUTHD_TOKEN_MAX)
        return;
    r1 = verify_checked(t1, n1, now, &c1);

    n2 = sign(t2, sizeof t2, hdr, hl, false, claims, cl, true, KEY);
    if (n2 != 0 && n2 <= AUTHD_TOKEN_MAX) {
        r2 = verify_checked(t2, n2, now, &c2);
        same_outcome("claims", r1, &c1, r2, &c2);
    }
    if (hl + 1 <= HEADER_MAX) {
        n3 = sign(t3, sizeof t3, hdr, hl, true, claims, cl, false, KEY);
        if (n3 != 0 && n3 <= AUTHD_TOKEN_MAX) {
            r3 = verify_checked(t3, n3, now, &c3);
            same_outcome("header", r1, &c1, r3, &c3);
        }
    }

    n3 = sign(t3, sizeof t3, hdr, hl, false, claims, cl, false, OTHER_KEY);
    if (n3 != 0) {
        r3 = authd_token_verify(toks, t3, n3, now, &c3);
        FUZZ_CHECK(!past_mac(r3), "signed with another key: %s", rname(r3));
    }
}

/* check_issued: a token authd issues verifies (as the clock says) and
 * gives back exactly the claims it was issued with. */
static void check_issued(const uint8_t *d, size_t n, int64_t now)
{
    static char tok[AUTHD_TOKEN_MAX];
    authd_claims c, got;
    authd_token_result r;
    uint64_t v[3];

    if (n < 32 + 3 * 5)
        return;
    memcpy(c.sub, d, 16);
    memcpy(c.sid, d + 16, 16);
    for (int i = 0; i < 3; i++) { /* 5 bytes each: 0 .. 2^40 - 1 */
        v[i] = 0;
        for (int k = 0; k < 5; k++)
            v[i] = v[i] << 8 | d[32 + 5 * i + k];
    }
    /* Near the clock most of the time, so that OK is reached. */
    c.iat = (int64_t)(v[0] & 0x100 ? v[0] : BASE_TIME + (v[0] & 0xff));
    c.nbf = (int64_t)(v[1] & 0x100 ? v[1] : BASE_TIME + (v[1] & 0xff));
    c.exp = (int64_t)(v[2] & 0x100 ? v[2] : BASE_TIME + 900 + (v[2] & 0xff));
    FUZZ_CHECK(authd_token_issue(toks, &c, tok, sizeof tok) == AUTHD_OK, "issue failed");
    r = verify_checked(tok, strlen(tok), now, &got);
    if (now >= c.exp + LEEWAY)
        FUZZ_CHECK(r == AUTHD_TOKEN_EXPIRED, "issued, want EXPIRED, got %s", rname(r));
    else if (c.nbf - LEEWAY > now)
        FUZZ_CHECK(r == AUTHD_TOKEN_NOT_YET_VALID, "issued, want NOT_YET_VALID, got %s", rname(r));
    else
        FUZZ_CHECK(r == AUTHD_TOKEN_OK && memcmp(&got, &c, sizeof c) == 0,
            "issued token did not round-trip: %s", rname(r));
    /* And its claims, through the general path, give the same answer. */
    {
        static uint8_t bin[AUTHD_TOKEN_MAX];
        size_t bl = 0;
        const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
        FUZZ_CHECK(sodium_base642bin(bin, sizeof bin, d1 + 1, (size_t)(d2 - d1 - 1), NULL, &bl,
                       NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
                == 0,
            "issued claims are not base64url");
        check_pair(our_header, strlen(our_header), bin, bl, now);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t now;
    authd_claims c;

    if (size < 2)
        return 0;
    now = BASE_TIME + ((int64_t)data[1] - 128) * 16;
    switch (data[0] & 3) {
    case 0:
        (void)verify_checked((const char *)data + 2, size - 2, now, &c);
        break;
    case 1:
        check_pair(our_header, strlen(our_header), data + 2, size - 2, now);
        break;
    case 2: {
        size_t hl = size > 2 ? data[2] : 0;
        if (size < 3 + hl)
            return 0;
        check_pair(data + 3, hl, data + 3 + hl, size - 3 - hl, now);
        break;
    }
    default:
        check_issued(data + 2, size - 2, now);
        break;
    }
    return 0;
}
