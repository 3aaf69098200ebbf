/*
 * test_token.c — token.c against known answers and an attack table.
 *
 * Hostile and reference tokens are built here independently of token.c:
 * hand-written JSON, libsodium's HMAC-SHA256 and base64url, and libjwt for
 * the alg "none" and algorithm-confusion tokens it is happy to make. The
 * known-answer token and kid were computed once with Python's hmac/hashlib.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jwt.h>
#include <sodium.h>

#include "token.h"

#define KEY       "authd-kat-signing-key-0123456789" /* 32 bytes */
#define OTHER_KEY "another-signing-key-abcdefghijkl"
#define KID       "454fea3e83773119" /* SHA-256(KEY)[0..8), Python */
#define ISS       "https://authd.example"
#define AUD       "authd-internal"
#define SUB       "00112233445566778899aabbccddeeff"
#define SID       "0123456789abcdef0123456789abcdef"
#define IAT       1700000000
#define NBF       1700000000
#define EXP       1700000900
#define NOW       1700000100
#define LEEWAY    30

/* Python: hmac.new(KEY, b64(HDR) + "." + b64(CLAIMS), sha256). */
#define KAT_TOKEN                                                                                  \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6IjQ1NGZlYTNlODM3NzMxMTkifQ."                  \
    "eyJpc3MiOiJodHRwczovL2F1dGhkLmV4YW1wbGUiLCJhdWQiOiJhdXRoZC1pbnRlcm5hbCIsInN1YiI6IjAw"         \
    "MTEyMjMzNDQ1NTY2Nzc4ODk5YWFiYmNjZGRlZWZmIiwic2lkIjoiMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"         \
    "ODlhYmNkZWYiLCJqdGkiOiIwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiIsImlhdCI6MTcwMDAw"         \
    "MDAwMCwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDA5MDB9."                                        \
    "H2QTn9xTb7eX-Dwm_KnyKpFsH6qLBgsiJc7VQbnPdFU"
#define KAT_FINGERPRINT "3a2f33bf27aad41f"

/* An EC P-256 public key: the classic algorithm-confusion "HMAC key". */
static const char pem[] = "-----BEGIN PUBLIC KEY-----\n"
                          "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeBlWfLVp8Ut2NPwSlQVeM7zxfTgn\n"
                          "swr8Drh2R0rJ4n17wTUsMNQVncsgef2jlBfQXuJh7FPpLVNxJbkHtVobVA==\n"
                          "-----END PUBLIC KEY-----\n";

#define Q(s)        "\"" s "\""
#define HDR_X(body) "{" body "}"
#define HDR         HDR_X("\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":" Q(KID))
#define HDR_ALG(a)  HDR_X("\"alg\":" a ",\"typ\":\"at+jwt\",\"kid\":" Q(KID))
#define HDR_TYP(t)  HDR_X("\"alg\":\"HS256\",\"typ\":" t ",\"kid\":" Q(KID))
#define HDR_KID(k)  HDR_X("\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":" k)
#define HDR_PLUS(m) HDR_X("\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":" Q(KID) "," m)
#define CLAIMS_X(iss, aud, sub, sid, jti, iat, nbf, exp)                                           \
    "{\"iss\":" iss ",\"aud\":" aud ",\"sub\":" sub ",\"sid\":" sid ",\"jti\":" jti                \
    ",\"iat\":" iat ",\"nbf\":" nbf ",\"exp\":" exp "}"
#define CLAIMS_EXP(e)                                                                              \
    CLAIMS_X(Q(ISS), Q(AUD), Q(SUB), Q(SID), Q(SID), "1700000000", "1700000000", e)
#define CLAIMS CLAIMS_EXP("1700000900")
#define CLAIMS_PLUS(m)                                                                             \
    "{\"iss\":" Q(ISS) ",\"aud\":" Q(AUD) ",\"sub\":" Q(SUB) ",\"sid\":" Q(SID) ",\"jti\":" Q(     \
        SID) ",\"iat\":1700000000,\"nbf\":1700000000,\"exp\":1700000900," m "}"

static authd_tokens *toks; /* KEY, leeway 30 */
static authd_tokens *toks0; /* KEY, leeway 0 */

static const char *rname(authd_token_result r)
{
    return r == AUTHD_TOKEN_OK ? "OK" : authd_token_result_reason(r);
}

static authd_tokens_options opts_for(const char *key, int64_t leeway)
{
    authd_tokens_options o = { (const uint8_t *)key, strlen(key), ISS, AUD, leeway, 0 };
    return o;
}

static int setup(void **state)
{
    authd_tokens_options o = opts_for(KEY, LEEWAY);

    if (authd_tokens_create(&o, &toks) != AUTHD_OK)
        return -1;
    o.leeway = 0;
    if (authd_tokens_create(&o, &toks0) != AUTHD_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    authd_tokens_destroy(toks);
    authd_tokens_destroy(toks0);
    return 0;
}

/* ---- an independent signer ------------------------------------------------ */

enum sig { SIG_OURS, SIG_OTHER, SIG_PEM, SIG_EMPTY, SIG_STALE };

static size_t b64(char *out, size_t cap, const void *in, size_t n)
{
    size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

    assert_true(need <= cap);
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return strlen(out);
}

static void hmac(uint8_t mac[32], const void *key, size_t key_len, const char *in, size_t n)
{
    crypto_auth_hmacsha256_state st;

    assert_int_equal(crypto_auth_hmacsha256_init(&st, key, key_len), 0);
    assert_int_equal(crypto_auth_hmacsha256_update(&st, (const uint8_t *)in, n), 0);
    assert_int_equal(crypto_auth_hmacsha256_final(&st, mac), 0);
}

/* make_token writes b64(hdr).b64(claims).sig into out (cap >= 8192) and
 * returns its length. SIG_STALE signs HDR.CLAIMS instead: a tampered body
 * under the original signature. */
static size_t make_token(char *out, size_t cap, const char *hdr, const char *claims, enum sig how)
{
    uint8_t mac[32];
    size_t pos = 0;

    pos += b64(out, cap, hdr, strlen(hdr));
    out[pos++] = '.';
    pos += b64(out + pos, cap - pos, claims, strlen(claims));
    switch (how) {
    case SIG_OURS:
        hmac(mac, KEY, strlen(KEY), out, pos);
        break;
    case SIG_OTHER:
        hmac(mac, OTHER_KEY, strlen(OTHER_KEY), out, pos);
        break;
    case SIG_PEM:
        hmac(mac, pem, strlen(pem), out, pos);
        break;
    case SIG_STALE: {
        char good[1024];
        size_t n = make_token(good, sizeof good, HDR, CLAIMS, SIG_OURS);
        char *dot = strrchr(good, '.');
        assert_non_null(dot);
        out[pos] = '\0';
        assert_true(pos + (size_t)(good + n - dot) < cap);
        memcpy(out + pos, dot, (size_t)(good + n - dot) + 1);
        return pos + (size_t)(good + n - dot);
    }
    case SIG_EMPTY:
        out[pos++] = '.';
        out[pos] = '\0';
        return pos;
    }
    out[pos++] = '.';
    pos += b64(out + pos, cap - pos, mac, sizeof mac);
    return pos;
}

static void expect(const char *name, const authd_tokens *t, const char *tok, size_t len,
    int64_t now, authd_token_result want)
{
    authd_claims c, before;
    authd_token_result got;

    memset(&c, 0xa5, sizeof c);
    before = c;
    got = authd_token_verify(t, tok, len, now, &c);
    if (got != want)
        fail_msg("%s: got %s, want %s", name, rname(got), rname(want));
    if (got != AUTHD_TOKEN_OK && memcmp(&c, &before, sizeof c) != 0)
        fail_msg("%s: *out written on failure", name);
}

/* ---- known answers ---------------------------------------------------------- */

static authd_claims kat_claims(void)
{
    authd_claims c;

    assert_int_equal(sodium_hex2bin(c.sub, sizeof c.sub, SUB, 32, NULL, NULL, NULL), 0);
    assert_int_equal(sodium_hex2bin(c.sid, sizeof c.sid, SID, 32, NULL, NULL, NULL), 0);
    c.iat = IAT;
    c.nbf = NBF;
    c.exp = EXP;
    return c;
}

static void test_kid_known_answer(void **state)
{
    assert_string_equal(authd_tokens_kid(toks), KID);
    assert_string_equal(authd_tokens_kid(toks0), KID); /* stable for a key */
}

static void test_kid_differs_between_keys(void **state)
{
    authd_tokens_options o = opts_for(OTHER_KEY, 0);
    authd_tokens *t = NULL;
    const char *k;

    assert_int_equal(authd_tokens_create(&o, &t), AUTHD_OK);
    k = authd_tokens_kid(t);
    assert_int_equal(strlen(k), 16);
    assert_int_equal(strspn(k, "0123456789abcdef"), 16);
    assert_string_not_equal(k, KID);
    authd_tokens_destroy(t);
    authd_tokens_destroy(NULL);
}

static void test_issue_known_answer(void **state)
{
    authd_claims c = kat_claims();
    char out[AUTHD_TOKEN_MAX];
    char mine[8192];

    /* The test's own signer agrees with Python's answer... */
    make_token(mine, sizeof mine, HDR, CLAIMS, SIG_OURS);
    assert_string_equal(mine, KAT_TOKEN);
    /* ...and so does token.c. */
    assert_int_equal(authd_token_issue(toks, &c, out, sizeof out), AUTHD_OK);
    assert_string_equal(out, KAT_TOKEN);
}

static void test_verify_known_answer(void **state)
{
    authd_claims want = kat_claims(), got;

    memset(&got, 0, sizeof got);
    assert_int_equal(
        authd_token_verify(toks, KAT_TOKEN, strlen(KAT_TOKEN), NOW, &got), AUTHD_TOKEN_OK);
    assert_memory_equal(got.sub, want.sub, 16);
    assert_memory_equal(got.sid, want.sid, 16);
    assert_int_equal(got.iat, IAT);
    assert_int_equal(got.nbf, NBF);
    assert_int_equal(got.exp, EXP);
    /* Not NUL-terminated: only len bytes are read. */
    char copy[sizeof KAT_TOKEN];
    memcpy(copy, KAT_TOKEN, sizeof copy);
    copy[sizeof copy - 1] = 'X';
    assert_int_equal(authd_token_verify(toks, copy, sizeof copy - 1, NOW, &got), AUTHD_TOKEN_OK);
}

static void test_round_trip(void **state)
{
    authd_claims c, got;
    char tok[AUTHD_TOKEN_MAX];

    for (int i = 0; i < 50; i++) {
        randombytes_buf(c.sub, sizeof c.sub);
        randombytes_buf(c.sid, sizeof c.sid);
        c.iat = NOW - i;
        c.nbf = NOW - i;
        c.exp = NOW + 900 + i;
        assert_int_equal(authd_token_issue(toks, &c, tok, sizeof tok), AUTHD_OK);
        memset(&got, 0, sizeof got);
        assert_int_equal(authd_token_verify(toks, tok, strlen(tok), NOW, &got), AUTHD_TOKEN_OK);
        assert_memory_equal(&got, &c, sizeof c);
    }
    /* Extremes of the time range survive too. */
    c.iat = 0;
    c.nbf = 0;
    c.exp = (int64_t)1 << 40;
    assert_int_equal(authd_token_issue(toks, &c, tok, sizeof tok), AUTHD_OK);
    assert_int_equal(authd_token_verify(toks, tok, strlen(tok), NOW, &got), AUTHD_TOKEN_OK);
    assert_int_equal(got.exp, (int64_t)1 << 40);
}

static void test_round_trip_longest_names(void **state)
{
    char name[129];
    authd_tokens_options o = opts_for(KEY, 0);
    authd_tokens *t = NULL;
    authd_claims c = kat_claims(), got;
    char tok[AUTHD_TOKEN_MAX];

    memset(name, '~', 128);
    name[128] = '\0';
    name[0] = ' ';
    o.issuer = name;
    o.audience = name;
    assert_int_equal(authd_tokens_create(&o, &t), AUTHD_OK);
    assert_int_equal(authd_token_issue(t, &c, tok, sizeof tok), AUTHD_OK);
    assert_int_equal(authd_token_verify(t, tok, strlen(tok), NOW, &got), AUTHD_TOKEN_OK);
    assert_memory_equal(got.sub, c.sub, 16);
    /* Same key, other issuer: the MAC matches, the claims do not. */
    assert_int_equal(
        authd_token_verify(toks, tok, strlen(tok), NOW, &got), AUTHD_TOKEN_INVALID_CLAIMS);
    authd_tokens_destroy(t);
}

/* ---- the attack table: hand-built header and claims ----------------------- */

struct json_case {
    const char *name;
    const char *hdr;
    const char *claims;
    enum sig sig;
    authd_token_result want;
};

/* A case where only the claims differ from the good token's. */
#define CLAIMS_CASE(name, claims, want)                                                            \
    {                                                                                              \
        name, HDR, claims, SIG_OURS, want                                                          \
    }

static const struct json_case json_cases[] = {
    /* sanity: the table's own builder makes good tokens */
    { "control: good token", HDR, CLAIMS, SIG_OURS, AUTHD_TOKEN_OK },
    { "header reordered with whitespace",
        "{ \"kid\" : \"" KID "\" ,\n\"typ\":\"at+jwt\", \"alg\":\"HS256\" }", CLAIMS, SIG_OURS,
        AUTHD_TOKEN_OK },
    { "alg spelled with \\u escapes is still HS256", HDR_ALG(Q("HS\\u0032\\u0035\\u0036")), CLAIMS,
        SIG_OURS, AUTHD_TOKEN_OK },
    CLAIMS_CASE("unknown extra claim is ignored", CLAIMS_PLUS("\"role\":\"x\""), AUTHD_TOKEN_OK),

    /* alg */
    { "alg none, empty signature", HDR_ALG(Q("none")), CLAIMS, SIG_EMPTY, AUTHD_TOKEN_MALFORMED },
    { "alg None, empty signature", HDR_ALG(Q("None")), CLAIMS, SIG_EMPTY, AUTHD_TOKEN_MALFORMED },
    { "alg NONE, empty signature", HDR_ALG(Q("NONE")), CLAIMS, SIG_EMPTY, AUTHD_TOKEN_MALFORMED },
    { "alg none, bare header, empty signature", "{\"alg\":\"none\"}", CLAIMS, SIG_EMPTY,
        AUTHD_TOKEN_MALFORMED },
    { "alg none, MAC'd with our key", HDR_ALG(Q("none")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg hs256 (case)", HDR_ALG(Q("hs256")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg RS256", HDR_ALG(Q("RS256")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg RS256, MAC'd with public key PEM", HDR_ALG(Q("RS256")), CLAIMS, SIG_PEM,
        AUTHD_TOKEN_MALFORMED },
    { "alg ES256", HDR_ALG(Q("ES256")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg HS512", HDR_ALG(Q("HS512")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg \"HS256 \"", HDR_ALG(Q("HS256 ")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg HS256 with NUL suffix", HDR_ALG(Q("HS256\\u0000")), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "alg null", HDR_ALG("null"), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg as array", HDR_ALG("[\"HS256\"]"), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "alg missing", "{\"typ\":\"at+jwt\",\"kid\":" Q(KID) "}", CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "duplicate alg (same value)", HDR_PLUS("\"alg\":\"HS256\""), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "duplicate alg (second none)", HDR_PLUS("\"alg\":\"none\""), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },

    /* signature */
    { "MAC'd with another key", HDR, CLAIMS, SIG_OTHER, AUTHD_TOKEN_BAD_SIGNATURE },
    { "MAC'd with an EC public key PEM as HMAC key", HDR, CLAIMS, SIG_PEM,
        AUTHD_TOKEN_BAD_SIGNATURE },
    { "empty signature", HDR, CLAIMS, SIG_EMPTY, AUTHD_TOKEN_BAD_SIGNATURE },
    { "tampered payload (exp), signature kept", HDR, CLAIMS_EXP("1800000900"), SIG_STALE,
        AUTHD_TOKEN_BAD_SIGNATURE },
    { "tampered payload (sub), signature kept", HDR,
        CLAIMS_X(Q(ISS), Q(AUD), Q("ffffffffffffffffffffffffffffffff"), Q(SID), Q(SID),
            "1700000000", "1700000000", "1700000900"),
        SIG_STALE, AUTHD_TOKEN_BAD_SIGNATURE },

    /* typ */
    { "typ JWT", HDR_TYP(Q("JWT")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "typ AT+JWT", HDR_TYP(Q("AT+JWT")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "typ application/at+jwt", HDR_TYP(Q("application/at+jwt")), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "typ missing", "{\"alg\":\"HS256\",\"kid\":" Q(KID) "}", CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },

    /* kid */
    { "kid unknown", HDR_KID(Q("0000000000000000")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "kid of the other key", HDR_KID(Q("ffffffffffffffff")), CLAIMS, SIG_OTHER,
        AUTHD_TOKEN_MALFORMED },
    { "kid uppercase", HDR_KID(Q("454FEA3E83773119")), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "kid as number", HDR_KID("454"), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "kid missing", "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },

    /* dangerous or unknown header members */
    { "jku header", HDR_PLUS("\"jku\":\"https://evil.example/jwks\""), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "x5u header", HDR_PLUS("\"x5u\":\"https://evil.example/cert\""), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "jwk header", HDR_PLUS("\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}"), CLAIMS, SIG_OURS,
        AUTHD_TOKEN_MALFORMED },
    { "x5c header", HDR_PLUS("\"x5c\":[\"MIIB\"]"), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "x5t header", HDR_PLUS("\"x5t\":\"abc\""), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "crit header", HDR_PLUS("\"crit\":[\"exp\"]"), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "b64 header", HDR_PLUS("\"b64\":false"), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "zip header", HDR_PLUS("\"zip\":\"DEF\""), CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },

    /* header not a JSON object */
    { "header []", "[]", CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header {}", "{}", CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header null", "null", CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header string", "\"HS256\"", CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header truncated JSON", "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"" KID "\"", CLAIMS,
        SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header trailing garbage", HDR "x", CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header two objects", HDR HDR, CLAIMS, SIG_OURS, AUTHD_TOKEN_MALFORMED },
    { "header deeply nested", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", CLAIMS,
        SIG_OURS, AUTHD_TOKEN_MALFORMED },

    /* claims: iss, aud */
    CLAIMS_CASE("wrong iss",
        CLAIMS_X(Q("https://evil.example"), Q(AUD), Q(SUB), Q(SID), Q(SID), "1700000000",
            "1700000000", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("iss with NUL suffix",
        CLAIMS_X(Q(ISS "\\u0000x"), Q(AUD), Q(SUB), Q(SID), Q(SID), "1700000000", "1700000000",
            "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("wrong aud",
        CLAIMS_X(Q(ISS), Q("authd-internal2"), Q(SUB), Q(SID), Q(SID), "1700000000", "1700000000",
            "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("aud as array holding ours",
        CLAIMS_X(Q(ISS), "[" Q(AUD) "]", Q(SUB), Q(SID), Q(SID), "1700000000", "1700000000",
            "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("iss missing",
        "{\"aud\":" Q(AUD) ",\"sub\":" Q(SUB) ",\"sid\":" Q(SID) ",\"jti\":" Q(
            SID) ",\"iat\":1700000000,\"nbf\":1700000000,\"exp\":1700000900}",
        AUTHD_TOKEN_INVALID_CLAIMS),

    /* claims: ids */
    CLAIMS_CASE("sid != jti",
        CLAIMS_X(Q(ISS), Q(AUD), Q(SUB), Q(SID), Q("0123456789abcdef0123456789abcdee"),
            "1700000000", "1700000000", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("jti missing",
        "{\"iss\":" Q(ISS) ",\"aud\":" Q(AUD) ",\"sub\":" Q(SUB) ",\"sid\":" Q(
            SID) ",\"iat\":1700000000,\"nbf\":1700000000,\"exp\":1700000900}",
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("sub not hex",
        CLAIMS_X(Q(ISS), Q(AUD), Q("0011223344556677889900aabbccddgg"), Q(SID), Q(SID),
            "1700000000", "1700000000", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("sub uppercase hex",
        CLAIMS_X(Q(ISS), Q(AUD), Q("00112233445566778899AABBCCDDEEFF"), Q(SID), Q(SID),
            "1700000000", "1700000000", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("sub 30 hex digits",
        CLAIMS_X(Q(ISS), Q(AUD), Q("00112233445566778899aabbccddee"), Q(SID), Q(SID), "1700000000",
            "1700000000", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("sub as number",
        CLAIMS_X(Q(ISS), Q(AUD), "1234", Q(SID), Q(SID), "1700000000", "1700000000", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("sid and jti both not hex",
        CLAIMS_X(Q(ISS), Q(AUD), Q(SUB), Q("admin"), Q("admin"), "1700000000", "1700000000",
            "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),

    /* claims: times */
    CLAIMS_CASE("exp as string", CLAIMS_EXP("\"1700000900\""), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp as float", CLAIMS_EXP("1700000900.0"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp in exponent form", CLAIMS_EXP("17000009e2"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp as boolean", CLAIMS_EXP("true"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp null", CLAIMS_EXP("null"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp negative", CLAIMS_EXP("-1"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp over 2^40", CLAIMS_EXP("1099511627777"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("exp over int64", CLAIMS_EXP("99999999999999999999"), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("nbf as float",
        CLAIMS_X(Q(ISS), Q(AUD), Q(SUB), Q(SID), Q(SID), "1700000000", "1.7e9", "1700000900"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("iat missing",
        "{\"iss\":" Q(ISS) ",\"aud\":" Q(AUD) ",\"sub\":" Q(SUB) ",\"sid\":" Q(SID) ",\"jti\":" Q(
            SID) ",\"nbf\":1700000000,\"exp\":1700000900}",
        AUTHD_TOKEN_INVALID_CLAIMS),

    /* claims: not a clean object */
    CLAIMS_CASE("duplicate claim (exp, later value extends)", CLAIMS_PLUS("\"exp\":1800000000"),
        AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("duplicate claim (sub)",
        CLAIMS_PLUS("\"sub\":\"ffffffffffffffffffffffffffffffff\""), AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("claims []", "[]", AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("claims not JSON", "not json", AUTHD_TOKEN_INVALID_CLAIMS),
    CLAIMS_CASE("claims with trailing garbage", CLAIMS "}", AUTHD_TOKEN_INVALID_CLAIMS),
};

static void test_attack_table(void **state)
{
    char tok[8192];

    for (size_t i = 0; i < sizeof json_cases / sizeof json_cases[0]; i++) {
        const struct json_case *k = &json_cases[i];
        size_t n = make_token(tok, sizeof tok, k->hdr, k->claims, k->sig);
        expect(k->name, toks, tok, n, NOW, k->want);
    }
}

/* ---- the attack table: byte-level damage to the known-answer token ------- */

typedef size_t (*mutator)(char *t, size_t len);

static size_t cut(char *t, size_t len, size_t at, size_t n)
{
    memmove(t + at, t + at + n, len - at - n + 1);
    return len - n;
}

static size_t ins(char *t, size_t len, size_t at, const char *s, size_t n)
{
    memmove(t + at + n, t + at, len - at + 1);
    memcpy(t + at, s, n);
    return len + n;
}

static size_t dot1(const char *t)
{
    return (size_t)(strchr(t, '.') - t);
}

static size_t dot2(const char *t)
{
    return (size_t)(strrchr(t, '.') - t);
}

static size_t no_dots(char *t, size_t len)
{
    len = cut(t, len, dot2(t), 1);
    return cut(t, len, dot1(t), 1);
}
static size_t one_dot(char *t, size_t len)
{
    t[dot2(t)] = '\0';
    return strlen(t);
}
static size_t four_parts(char *t, size_t len)
{
    return ins(t, len, len, ".AAAA", 5);
}
static size_t trailing_dot(char *t, size_t len)
{
    return ins(t, len, len, ".", 1);
}
static size_t empty_header(char *t, size_t len)
{
    return cut(t, len, 0, dot1(t));
}
static size_t empty_claims(char *t, size_t len)
{
    size_t a = dot1(t) + 1;
    return cut(t, len, a, dot2(t) - a);
}
static size_t header_padding(char *t, size_t len)
{
    return ins(t, len, dot1(t), "==", 2); /* 74 chars: real padding would be "==" */
}
static size_t sig_padding(char *t, size_t len)
{
    return ins(t, len, len, "=", 1);
}
static size_t claims_plus(char *t, size_t len)
{
    t[dot1(t) + 5] = '+';
    return len;
}
static size_t claims_slash(char *t, size_t len)
{
    t[dot1(t) + 5] = '/';
    return len;
}
static size_t header_bang(char *t, size_t len)
{
    t[3] = '!';
    return len;
}
static size_t inner_space(char *t, size_t len)
{
    return ins(t, len, dot1(t) + 4, " ", 1);
}
static size_t trailing_newline(char *t, size_t len)
{
    return ins(t, len, len, "\n", 1);
}
static size_t inner_nul(char *t, size_t len)
{
    t[dot1(t) + 8] = '\0';
    return len;
}
static size_t trailing_nul(char *t, size_t len)
{
    t[len] = '\0';
    return len + 1;
}
static size_t sig_truncated(char *t, size_t len)
{
    return len - 3; /* 40 chars: 30 bytes, canonical */
}
static size_t sig_extra_char(char *t, size_t len)
{
    return ins(t, len, len, "A", 1); /* 44 chars: 33 bytes */
}
static size_t sig_noncanonical(char *t, size_t len)
{
    assert_int_equal(t[len - 1], 'U');
    t[len - 1] = 'V'; /* same 32 bytes, low bits set */
    return len;
}
static size_t sig_last_byte(char *t, size_t len)
{
    t[len - 1] = 'Y'; /* canonical, different last byte */
    return len;
}
static size_t sig_flip(char *t, size_t len)
{
    size_t at = dot2(t) + 10;
    t[at] = t[at] == 'A' ? 'B' : 'A';
    return len;
}
static size_t empty_token(char *t, size_t len)
{
    return 0;
}
static size_t only_dots(char *t, size_t len)
{
    strcpy(t, "..");
    return 2;
}

struct raw_case {
    const char *name;
    mutator mutate;
    authd_token_result want;
};

static const struct raw_case raw_cases[] = {
    { "no dots", no_dots, AUTHD_TOKEN_MALFORMED },
    { "one dot (signature missing)", one_dot, AUTHD_TOKEN_MALFORMED },
    { "four parts", four_parts, AUTHD_TOKEN_MALFORMED },
    { "trailing dot (empty fourth part)", trailing_dot, AUTHD_TOKEN_MALFORMED },
    { "only dots", only_dots, AUTHD_TOKEN_MALFORMED },
    { "empty token", empty_token, AUTHD_TOKEN_MALFORMED },
    { "empty header part", empty_header, AUTHD_TOKEN_MALFORMED },
    { "empty claims part", empty_claims, AUTHD_TOKEN_MALFORMED },
    { "base64 padding on header", header_padding, AUTHD_TOKEN_MALFORMED },
    { "base64 padding on signature", sig_padding, AUTHD_TOKEN_MALFORMED },
    { "'+' (standard alphabet) in claims", claims_plus, AUTHD_TOKEN_MALFORMED },
    { "'/' (standard alphabet) in claims", claims_slash, AUTHD_TOKEN_MALFORMED },
    { "'!' in header", header_bang, AUTHD_TOKEN_MALFORMED },
    { "space inside claims", inner_space, AUTHD_TOKEN_MALFORMED },
    { "trailing newline", trailing_newline, AUTHD_TOKEN_MALFORMED },
    { "embedded NUL in claims", inner_nul, AUTHD_TOKEN_MALFORMED },
    { "trailing NUL counted in len", trailing_nul, AUTHD_TOKEN_MALFORMED },
    { "signature non-canonical trailing bits", sig_noncanonical, AUTHD_TOKEN_MALFORMED },
    { "signature truncated", sig_truncated, AUTHD_TOKEN_BAD_SIGNATURE },
    { "signature with an extra char", sig_extra_char, AUTHD_TOKEN_BAD_SIGNATURE },
    { "signature last byte changed", sig_last_byte, AUTHD_TOKEN_BAD_SIGNATURE },
    { "signature one char flipped", sig_flip, AUTHD_TOKEN_BAD_SIGNATURE },
};

static void test_raw_table(void **state)
{
    char tok[8192];

    for (size_t i = 0; i < sizeof raw_cases / sizeof raw_cases[0]; i++) {
        size_t len;
        memset(tok, 0, sizeof tok);
        strcpy(tok, KAT_TOKEN);
        len = raw_cases[i].mutate(tok, strlen(tok));
        expect(raw_cases[i].name, toks, tok, len, NOW, raw_cases[i].want);
    }
    /* A NULL token is malformed, not a crash. */
    expect("NULL token", toks, NULL, 10, NOW, AUTHD_TOKEN_MALFORMED);
}

/* ---- tokens made by libjwt ---------------------------------------------- */

static char *jwt_token(jwt_alg_t alg, const void *key, size_t key_len)
{
    jwt_t *j = NULL;
    char *s;

    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_set_alg(j, alg, key, (int)key_len), 0);
    assert_int_equal(jwt_add_header(j, "kid", KID), 0);
    assert_int_equal(jwt_add_grant(j, "iss", ISS), 0);
    assert_int_equal(jwt_add_grant(j, "aud", AUD), 0);
    assert_int_equal(jwt_add_grant(j, "sub", SUB), 0);
    assert_int_equal(jwt_add_grant(j, "sid", SID), 0);
    assert_int_equal(jwt_add_grant(j, "jti", SID), 0);
    assert_int_equal(jwt_add_grant_int(j, "iat", IAT), 0);
    assert_int_equal(jwt_add_grant_int(j, "nbf", NBF), 0);
    assert_int_equal(jwt_add_grant_int(j, "exp", EXP), 0);
    s = jwt_encode_str(j);
    assert_non_null(s);
    jwt_free(j);
    return s;
}

static void test_libjwt_tokens(void **state)
{
    char *s;

    /* alg none: libjwt emits "header.claims." with an empty signature. */
    s = jwt_token(JWT_ALG_NONE, NULL, 0);
    assert_int_equal(s[strlen(s) - 1], '.');
    expect("libjwt alg none", toks, s, strlen(s), NOW, AUTHD_TOKEN_MALFORMED);
    free(s);

    /* HS256 with our own key: refused for its typ "JWT" alone. */
    s = jwt_token(JWT_ALG_HS256, KEY, strlen(KEY));
    expect("libjwt HS256, our key, typ JWT", toks, s, strlen(s), NOW, AUTHD_TOKEN_MALFORMED);
    free(s);

    /* HS256 keyed with a public key PEM (algorithm confusion). */
    s = jwt_token(JWT_ALG_HS256, pem, strlen(pem));
    expect("libjwt HS256 keyed with PEM", toks, s, strlen(s), NOW, AUTHD_TOKEN_MALFORMED);
    free(s);
}

/* ---- time ------------------------------------------------------------------ */

struct time_case {
    const char *name;
    int leeway; /* 0 or LEEWAY: which tokens object */
    int64_t now;
    authd_token_result want;
};

static const struct time_case time_cases[] = {
    { "well inside", LEEWAY, NOW, AUTHD_TOKEN_OK },
    { "expired beyond leeway", LEEWAY, EXP + LEEWAY + 1, AUTHD_TOKEN_EXPIRED },
    { "now == exp + leeway", LEEWAY, EXP + LEEWAY, AUTHD_TOKEN_EXPIRED },
    { "past exp, within leeway", LEEWAY, EXP + LEEWAY - 1, AUTHD_TOKEN_OK },
    { "exp exactly now, leeway 0", 0, EXP, AUTHD_TOKEN_EXPIRED },
    { "exp exactly now, within leeway", LEEWAY, EXP, AUTHD_TOKEN_OK },
    { "one second before exp, leeway 0", 0, EXP - 1, AUTHD_TOKEN_OK },
    { "nbf in the future beyond leeway", LEEWAY, NBF - LEEWAY - 1, AUTHD_TOKEN_NOT_YET_VALID },
    { "nbf in the future within leeway", LEEWAY, NBF - LEEWAY, AUTHD_TOKEN_OK },
    { "nbf one second ahead, leeway 0", 0, NBF - 1, AUTHD_TOKEN_NOT_YET_VALID },
    { "nbf exactly now, leeway 0", 0, NBF, AUTHD_TOKEN_OK },
    { "now INT64_MAX", LEEWAY, INT64_MAX, AUTHD_TOKEN_EXPIRED },
    { "now INT64_MIN", LEEWAY, INT64_MIN, AUTHD_TOKEN_NOT_YET_VALID },
};

static void test_time_table(void **state)
{
    for (size_t i = 0; i < sizeof time_cases / sizeof time_cases[0]; i++) {
        const struct time_case *k = &time_cases[i];
        expect(k->name, k->leeway ? toks : toks0, KAT_TOKEN, strlen(KAT_TOKEN), k->now, k->want);
    }
}

/* ---- size limit ------------------------------------------------------------ */

/* find_sized builds a genuinely signed token of exactly want bytes: header
 * padded with spaces, claims with an extra (ignored) claim. */
static size_t find_sized(char *tok, size_t cap, size_t want)
{
    static char hdr[64], claims[4096];

    for (int sp = 0; sp < 3; sp++) {
        snprintf(hdr, sizeof hdr, "{%*s\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"" KID "\"}",
            sp, "");
        for (size_t pad = 0; pad < 3200; pad++) {
            size_t n = (size_t)snprintf(claims, sizeof claims, "%.*s,\"pad\":\"%*s\"}",
                (int)strlen(CLAIMS) - 1, CLAIMS, (int)pad, "");
            assert_true(n < sizeof claims);
            size_t total = (strlen(hdr) * 4 + 2) / 3 + 1 + (n * 4 + 2) / 3 + 1 + 43;
            if (total == want)
                return make_token(tok, cap, hdr, claims, SIG_OURS);
            if (total > want)
                break;
        }
    }
    fail_msg("no padding gives %zu bytes", want);
    return 0;
}

static void test_size_limit(void **state)
{
    char tok[8192];
    size_t n;

    n = find_sized(tok, sizeof tok, AUTHD_TOKEN_MAX);
    assert_int_equal(n, AUTHD_TOKEN_MAX);
    expect("signed token of exactly AUTHD_TOKEN_MAX", toks, tok, n, NOW, AUTHD_TOKEN_OK);
    n = find_sized(tok, sizeof tok, AUTHD_TOKEN_MAX + 1);
    assert_int_equal(n, AUTHD_TOKEN_MAX + 1);
    expect("signed token one byte over AUTHD_TOKEN_MAX", toks, tok, n, NOW, AUTHD_TOKEN_MALFORMED);
    expect("huge len", toks, tok, SIZE_MAX, NOW, AUTHD_TOKEN_MALFORMED);
}

/* ---- create, issue, fingerprint ------------------------------------------- */

static void test_create_rejects(void **state)
{
    static const char key31[] = "0123456789012345678901234567890";
    static char key1025[1026], long_name[130];
    authd_tokens *sentinel = (authd_tokens *)&sentinel, *t;
    struct {
        const char *name;
        authd_tokens_options o;
    } cases[] = {
        { "31-byte key", { (const uint8_t *)key31, 31, ISS, AUD, 0, 0 } },
        { "1025-byte key", { (const uint8_t *)key1025, 1025, ISS, AUD, 0, 0 } },
        { "NULL key", { NULL, 32, ISS, AUD, 0, 0 } },
        { "issuer with a quote", { (const uint8_t *)KEY, 32, "https://a\"b", AUD, 0, 0 } },
        { "issuer with a backslash", { (const uint8_t *)KEY, 32, "a\\b", AUD, 0, 0 } },
        { "issuer with a newline", { (const uint8_t *)KEY, 32, "a\nb", AUD, 0, 0 } },
        { "issuer non-ASCII", { (const uint8_t *)KEY, 32, "caf\xc3\xa9", AUD, 0, 0 } },
        { "issuer empty", { (const uint8_t *)KEY, 32, "", AUD, 0, 0 } },
        { "issuer NULL", { (const uint8_t *)KEY, 32, NULL, AUD, 0, 0 } },
        { "audience 129 bytes", { (const uint8_t *)KEY, 32, ISS, long_name, 0, 0 } },
        { "audience with DEL", { (const uint8_t *)KEY, 32, ISS, "a\x7f", 0, 0 } },
        { "negative leeway", { (const uint8_t *)KEY, 32, ISS, AUD, -1, 0 } },
        { "leeway over a day", { (const uint8_t *)KEY, 32, ISS, AUD, 86401, 0 } },
    };

    memset(key1025, 'k', 1025);
    memset(long_name, 'a', 129);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t = sentinel;
        if (authd_tokens_create(&cases[i].o, &t) != AUTHD_INVALID_ARGUMENT)
            fail_msg("%s: accepted", cases[i].name);
        if (t != sentinel)
            fail_msg("%s: *out written on failure", cases[i].name);
    }
    assert_int_equal(authd_tokens_create(NULL, &t), AUTHD_INVALID_ARGUMENT);
    authd_tokens_options ok = opts_for(KEY, 0);
    assert_int_equal(authd_tokens_create(&ok, NULL), AUTHD_INVALID_ARGUMENT);

    /* The boundaries themselves are accepted. */
    ok.key = (const uint8_t *)key1025;
    ok.key_len = 1024;
    ok.leeway = 86400;
    assert_int_equal(authd_tokens_create(&ok, &t), AUTHD_OK);
    authd_tokens_destroy(t);
}

/* The MAC for every key length, against libsodium's HMAC-SHA256: a key
 * longer than the 64-byte block is hashed first (RFC 2104), a shorter
 * one zero-padded; 64 and 65 are the edge. */
static void test_mac_key_lengths(void **state)
{
    static const size_t lens[] = { 32, 63, 64, 65, 100, 1024 };
    authd_claims c = kat_claims();
    char tok[AUTHD_TOKEN_MAX];
    static char key[1024];
    uint8_t mac[32];
    char want[64];

    (void)state;
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (char)('!' + i % 90);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        authd_tokens_options o = opts_for(KEY, 0);
        authd_tokens *t = NULL;
        o.key = (const uint8_t *)key;
        o.key_len = lens[i];
        assert_int_equal(authd_tokens_create(&o, &t), AUTHD_OK);
        assert_int_equal(authd_token_issue(t, &c, tok, sizeof tok), AUTHD_OK);
        char *dot = strrchr(tok, '.');
        assert_non_null(dot);
        hmac(mac, key, lens[i], tok, (size_t)(dot - tok));
        b64(want, sizeof want, mac, sizeof mac);
        if (strcmp(dot + 1, want) != 0)
            fail_msg("key of %zu bytes: MAC %s, want %s", lens[i], dot + 1, want);
        authd_tokens_destroy(t);
    }
}

static void test_issue_small_buffer(void **state)
{
    authd_claims c = kat_claims();
    char buf[AUTHD_TOKEN_MAX];
    size_t need = strlen(KAT_TOKEN) + 1;

    memset(buf, '#', sizeof buf);
    assert_int_equal(authd_token_issue(toks, &c, buf, need - 1), AUTHD_INVALID_ARGUMENT);
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != '#')
            fail_msg("byte %zu written on failure", i);
    assert_int_equal(authd_token_issue(toks, &c, buf, 0), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_token_issue(toks, &c, buf, need), AUTHD_OK);
    assert_string_equal(buf, KAT_TOKEN);
}

static void test_issue_rejects_bad_claims(void **state)
{
    authd_claims c = kat_claims();
    char buf[AUTHD_TOKEN_MAX];

    c.exp = -1;
    assert_int_equal(authd_token_issue(toks, &c, buf, sizeof buf), AUTHD_INVALID_ARGUMENT);
    c = kat_claims();
    c.nbf = ((int64_t)1 << 40) + 1;
    assert_int_equal(authd_token_issue(toks, &c, buf, sizeof buf), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_token_issue(toks, NULL, buf, sizeof buf), AUTHD_INVALID_ARGUMENT);
}

static void test_fingerprint(void **state)
{
    char a[AUTHD_FINGERPRINT_LEN + 1], b[AUTHD_FINGERPRINT_LEN + 1];
    char tok[AUTHD_TOKEN_MAX];
    authd_claims c = kat_claims();

    authd_token_fingerprint("abc", 3, a);
    assert_string_equal(a, "ba7816bf8f01cfea"); /* SHA-256("abc") */
    authd_token_fingerprint(KAT_TOKEN, strlen(KAT_TOKEN), a);
    assert_string_equal(a, KAT_FINGERPRINT);
    assert_int_equal(strlen(a), AUTHD_FINGERPRINT_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), AUTHD_FINGERPRINT_LEN);

    c.exp += 1;
    assert_int_equal(authd_token_issue(toks, &c, tok, sizeof tok), AUTHD_OK);
    authd_token_fingerprint(tok, strlen(tok), b);
    assert_int_equal(strspn(b, "0123456789abcdef"), AUTHD_FINGERPRINT_LEN);
    assert_string_not_equal(a, b);
}

/* hex16 writes the first 8 bytes of SHA-256(in) as hex, independently of
 * token.c. */
static void hex16(const char *in, size_t n, char out[AUTHD_FINGERPRINT_LEN + 1])
{
    uint8_t d[crypto_hash_sha256_BYTES];

    crypto_hash_sha256(d, (const uint8_t *)in, n);
    for (size_t i = 0; i < AUTHD_FINGERPRINT_LEN / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/*
 * A fingerprint is SHA-256 of the whole token, signature included, so a
 * forged token and the genuine one with the same claims log differently,
 * and it shares no 16-character run with the token. Checked over random
 * tokens rather than one constant (the known answer above pins a single
 * value; a check against a constant cannot fail once that one passed).
 */
static void test_fingerprint_hashes_whole_token(void **state)
{
    char tok[AUTHD_TOKEN_MAX], forged[AUTHD_TOKEN_MAX];
    char got[AUTHD_FINGERPRINT_LEN + 1], want[AUTHD_FINGERPRINT_LEN + 1];
    char prev[AUTHD_FINGERPRINT_LEN + 1] = "";
    authd_claims c = kat_claims();

    for (int i = 0; i < 200; i++) {
        randombytes_buf(c.sub, sizeof c.sub);
        randombytes_buf(c.sid, sizeof c.sid);
        assert_int_equal(authd_token_issue(toks, &c, tok, sizeof tok), AUTHD_OK);
        size_t n = strlen(tok);
        authd_token_fingerprint(tok, n, got);
        hex16(tok, n, want);
        assert_string_equal(got, want);
        assert_null(strstr(tok, got));
        assert_string_not_equal(got, prev);
        memcpy(prev, got, sizeof prev);

        /* The same header and claims under another signature. */
        memcpy(forged, tok, n + 1);
        forged[n - 1] = forged[n - 1] == 'A' ? 'B' : 'A';
        authd_token_fingerprint(forged, n, want);
        assert_string_not_equal(got, want);
    }
}

static void test_reasons(void **state)
{
    assert_string_equal(authd_token_result_reason(AUTHD_TOKEN_OK), "");
    assert_string_equal(authd_token_result_reason(AUTHD_TOKEN_MALFORMED), "MALFORMED");
    assert_string_equal(authd_token_result_reason(AUTHD_TOKEN_BAD_SIGNATURE), "BAD_SIGNATURE");
    assert_string_equal(authd_token_result_reason(AUTHD_TOKEN_INVALID_CLAIMS), "INVALID_CLAIMS");
    assert_string_equal(authd_token_result_reason(AUTHD_TOKEN_EXPIRED), "EXPIRED");
    assert_string_equal(authd_token_result_reason(AUTHD_TOKEN_NOT_YET_VALID), "NOT_YET_VALID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kid_known_answer),
        cmocka_unit_test(test_kid_differs_between_keys),
        cmocka_unit_test(test_issue_known_answer),
        cmocka_unit_test(test_verify_known_answer),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_longest_names),
        cmocka_unit_test(test_attack_table),
        cmocka_unit_test(test_raw_table),
        cmocka_unit_test(test_libjwt_tokens),
        cmocka_unit_test(test_time_table),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_create_rejects),
        cmocka_unit_test(test_issue_small_buffer),
        cmocka_unit_test(test_mac_key_lengths),
        cmocka_unit_test(test_issue_rejects_bad_claims),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_fingerprint_hashes_whole_token),
        cmocka_unit_test(test_reasons),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, setup, teardown);
}
