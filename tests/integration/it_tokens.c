/*
 * it_tokens.c — forged and damaged access tokens against the real Verify.
 *
 * The harness wrote authd's signing key, so the claim cases are signed with
 * the real key: structurally valid tokens where only the property under
 * test is wrong (the session id comes from a real login). Every case must
 * be answered UNAUTHENTICATED with the expected reason, never OK.
 */
#include "harness.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fixed EC P-256 public key: the "verify HS256 with the public key PEM"
 * algorithm-confusion attack MACs with these bytes. */
static const char ec_public_pem[]
    = "-----BEGIN PUBLIC KEY-----\n"
      "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPOtmPmQ9LBSEUR5WJEKwDupN6vuA\n"
      "nLOblxs7ul/vMMqSNHmzXLnUop7LbTw+ppzMINoeh6c5c7QOP9uVZ8XWzw==\n"
      "-----END PUBLIC KEY-----\n";

#define TOK_MAX 4096

static void claims(char *out, size_t cap, const char *iss, const char *aud, const char *sub,
    const char *sid, const char *jti, int64_t iat, int64_t nbf, int64_t exp)
{
    int n = snprintf(out, cap,
        "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"sid\":\"%s\",\"jti\":\"%s\","
        "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}",
        iss, aud, sub, sid, jti, (long long)iat, (long long)nbf, (long long)exp);
    assert_true(n > 0 && (size_t)n < cap);
}

static void header(char *out, size_t cap, const char *alg, const char *typ, const char *kid)
{
    int n = snprintf(out, cap, "{\"alg\":\"%s\",\"typ\":\"%s\",\"kid\":\"%s\"}", alg, typ, kid);
    assert_true(n > 0 && (size_t)n < cap);
}

/* unsigned_token: b64(header).b64(claims). with an empty signature. */
static void unsigned_token(const char *hdr, const char *cl, char *out, size_t cap)
{
    it_b64url(hdr, strlen(hdr), out, cap);
    size_t n = strlen(out);
    out[n++] = '.';
    it_b64url(cl, strlen(cl), out + n, cap - n);
    n += strlen(out + n);
    assert_true(n + 1 < cap);
    out[n++] = '.';
    out[n] = '\0';
}

struct tcase {
    const char *name;
    char token[TOK_MAX];
    const char *reason; /* NULL: must verify OK (controls) */
};

static void tokens_attack_table(void **state)
{
    it_opts o = { .extra = { "--token-ttl", "600" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *la = NULL, *lb = NULL;
    authd_status st;
    char real[TOK_MAX], real_b[TOK_MAX];
    static struct tcase cases[32];
    size_t n = 0;
    char hdr[512], good_hdr[512], cl[1024], good_cl[1024];
    uint8_t other_key[64];
    int64_t now = it_now();

    /* The harness's kid is the server's: forging uses the right key. */
    char kid_field[64];
    snprintf(kid_field, sizeof kid_field, "\"kid\":\"%s\"", s->kid);
    assert_true(it_log_wait(s, kid_field, IT_CALL_TIMEOUT_MS));

    it_register(c, "tok-alice", "tok-alice@example.com", "alice token password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_register(c, "tok-bob", "tok-bob@example.com", "bobs token password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, "tok-alice", "alice token password", real, sizeof real, &la);
    it_login_token(c, "tok-bob", "bobs token password", real_b, sizeof real_b, &lb);
    const char *sub = la->user->id, *sid = la->session_id, *sub_b = lb->user->id;

    header(good_hdr, sizeof good_hdr, "HS256", "at+jwt", s->kid);
    claims(good_cl, sizeof good_cl, "authd", "authd", sub, sid, sid, now, now, now + 600);

#define CASE(nm, rsn) (cases[n].name = (nm), cases[n].reason = (rsn), cases[n++].token)

    /* controls: the real token, and one forged with the real key */
    snprintf(CASE("control: the real token", NULL), TOK_MAX, "%s", real);
    it_forge(
        s->key, s->key_len, good_hdr, good_cl, CASE("control: forged, all correct", NULL), TOK_MAX);

    /* header attacks */
    header(hdr, sizeof hdr, "none", "at+jwt", s->kid);
    unsigned_token(hdr, good_cl, CASE("alg none, empty signature", "MALFORMED"), TOK_MAX);
    header(hdr, sizeof hdr, "None", "at+jwt", s->kid);
    unsigned_token(hdr, good_cl, CASE("alg None, empty signature", "MALFORMED"), TOK_MAX);
    header(hdr, sizeof hdr, "NONE", "at+jwt", s->kid);
    unsigned_token(hdr, good_cl, CASE("alg NONE, empty signature", "MALFORMED"), TOK_MAX);
    header(hdr, sizeof hdr, "none", "at+jwt", s->kid);
    it_forge(s->key, s->key_len, hdr, good_cl, CASE("alg none, real MAC", "MALFORMED"), TOK_MAX);
    header(hdr, sizeof hdr, "RS256", "at+jwt", s->kid);
    it_forge(s->key, s->key_len, hdr, good_cl, CASE("alg RS256", "MALFORMED"), TOK_MAX);
    header(hdr, sizeof hdr, "HS256", "JWT", s->kid);
    it_forge(s->key, s->key_len, hdr, good_cl, CASE("typ JWT", "MALFORMED"), TOK_MAX);
    header(hdr, sizeof hdr, "HS256", "at+jwt", "0123456789abcdef");
    it_forge(s->key, s->key_len, hdr, good_cl, CASE("unknown kid", "MALFORMED"), TOK_MAX);
    snprintf(hdr, sizeof hdr,
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",\"jku\":\"https://evil.example/"
        "jwks\"}",
        s->kid);
    it_forge(s->key, s->key_len, hdr, good_cl, CASE("jku header", "MALFORMED"), TOK_MAX);
    snprintf(CASE("not a JWT", "MALFORMED"), TOK_MAX, "not-a-token");
    snprintf(CASE("empty token", "MALFORMED"), TOK_MAX, "%s", "");

    /* signature attacks */
    randombytes_buf(other_key, sizeof other_key);
    it_forge(other_key, sizeof other_key, good_hdr, good_cl,
        CASE("HS256 with another key", "BAD_SIGNATURE"), TOK_MAX);
    it_forge(ec_public_pem, strlen(ec_public_pem), good_hdr, good_cl,
        CASE("HS256 with a public key PEM as secret", "BAD_SIGNATURE"), TOK_MAX);
    {
        /* tampered payload: sub swapped for bob's, real signature kept */
        const char *d1 = strchr(real, '.'), *d2 = strrchr(real, '.');
        uint8_t body[1024];
        size_t blen = it_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), body, sizeof body - 1);
        body[blen] = '\0';
        char *at = strstr((char *)body, sub);
        assert_non_null(at);
        memcpy(at, sub_b, 32);
        char *t = CASE("payload tampered (sub changed)", "BAD_SIGNATURE");
        size_t hl = (size_t)(d1 - real) + 1;
        memcpy(t, real, hl);
        it_b64url(body, blen, t + hl, TOK_MAX - hl);
        snprintf(t + strlen(t), TOK_MAX - strlen(t), "%s", d2);

        t = CASE("empty signature", "BAD_SIGNATURE");
        snprintf(t, TOK_MAX, "%.*s", (int)(d2 - real + 1), real);
        t = CASE("truncated signature", "BAD_SIGNATURE");
        assert_true(strlen(d2 + 1) == 43);
        snprintf(t, TOK_MAX, "%.*s", (int)(d2 - real + 1 + 40), real);
    }

    /* claims attacks, MAC'd with the real key */
    claims(cl, sizeof cl, "authd", "authd", sub, sid, sid, now - 7200, now - 7200, now - 3600);
    it_forge(s->key, s->key_len, good_hdr, cl, CASE("expired", "EXPIRED"), TOK_MAX);
    claims(cl, sizeof cl, "authd", "authd", sub, sid, sid, now, now + 3600, now + 7200);
    it_forge(s->key, s->key_len, good_hdr, cl, CASE("nbf in the future", "NOT_YET_VALID"), TOK_MAX);
    claims(cl, sizeof cl, "evil", "authd", sub, sid, sid, now, now, now + 600);
    it_forge(s->key, s->key_len, good_hdr, cl, CASE("wrong iss", "INVALID_CLAIMS"), TOK_MAX);
    claims(cl, sizeof cl, "authd", "other-service", sub, sid, sid, now, now, now + 600);
    it_forge(s->key, s->key_len, good_hdr, cl, CASE("wrong aud", "INVALID_CLAIMS"), TOK_MAX);
    claims(cl, sizeof cl, "authd", "authd", sub, sid, lb->session_id, now, now, now + 600);
    it_forge(s->key, s->key_len, good_hdr, cl, CASE("jti != sid", "INVALID_CLAIMS"), TOK_MAX);

    /* well-formed, right key, but no such session / not this user's */
    {
        uint8_t r[16];
        char fake_sid[33];
        randombytes_buf(r, sizeof r);
        sodium_bin2hex(fake_sid, sizeof fake_sid, r, sizeof r);
        claims(cl, sizeof cl, "authd", "authd", sub, fake_sid, fake_sid, now, now, now + 600);
        it_forge(
            s->key, s->key_len, good_hdr, cl, CASE("session does not exist", "REVOKED"), TOK_MAX);
        claims(cl, sizeof cl, "authd", "authd", sub_b, sid, sid, now, now, now + 600);
        it_forge(
            s->key, s->key_len, good_hdr, cl, CASE("another user's session", "REVOKED"), TOK_MAX);
    }
#undef CASE
    assert_true(n <= sizeof cases / sizeof cases[0]);

    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        it_verify(c, cases[i].token, &st, NULL);
        int want = cases[i].reason == NULL ? AUTHD_OK : AUTHD_UNAUTHENTICATED;
        const char *want_reason = cases[i].reason == NULL ? "" : cases[i].reason;
        if (st.code != want || strcmp(st.reason, want_reason) != 0) {
            print_error("case '%s': want %s [%s], got %s [%s]: %s\n", cases[i].name,
                authd_code_str(want), want_reason, authd_code_str(st.code), st.reason, st.message);
            failures++;
        }
    }
    assert_int_equal(failures, 0);

    /* A forged token cannot log anyone out; the real one still works. */
    size_t other = 0;
    while (other < n && strcmp(cases[other].name, "HS256 with another key") != 0)
        other++;
    assert_true(other < n);
    it_logout(c, cases[other].token, &st);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "BAD_SIGNATURE");
    it_verify(c, real, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    authd__v1__login_response__free_unpacked(la, NULL);
    authd__v1__login_response__free_unpacked(lb, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(tokens_attack_table, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.tokens", tests, NULL, NULL);
}
