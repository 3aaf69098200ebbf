/*
 * it_authz.c — authorization against the real authd over TLS: the
 * protected-RPC interceptor (the caller's token in the envelope's
 * authorization field, nowhere else), Verify's required roles and
 * audience, Me, LogoutAll and ChangePassword.
 *
 * Protected calls go over a raw req0 stream with a hand-made envelope
 * (it_raw), so the tests pin the wire contract itself; public calls go
 * through libauthd-client. Users with roles are created in the store
 * directly (a second LMDB process, as `authd user` does), since no RPC
 * grants roles yet.
 */
#include "harness.h"

#include "authd/guard.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int it_store_add_user(const char *dir, const char *username, const char *password,
    const char *const *roles, size_t n_roles, char id_hex[33]);

#define PW     "correct horse battery staple"
#define NEW_PW "purple elephant juggling quietly"

#define M_ME     "/authd.v1.Auth/Me"
#define M_LOGALL "/authd.v1.Auth/LogoutAll"
#define M_CHPW   "/authd.v1.Auth/ChangePassword"

/* pcall sends one envelope with authorization auth (NULL: the field is
 * absent) and body, and returns the decoded reply (caller frees). */
static Authd__V1__ReplyEnvelope *pcall(
    it_raw *r, const char *method, const char *auth, const void *body, size_t body_len)
{
    static uint64_t next_id = 1;

    return it_raw_rpc_as(r, method, next_id++, auth, body, body_len);
}

static void expect_rep(const Authd__V1__ReplyEnvelope *rep, int code, const char *reason)
{
    if ((int)rep->code != code || (reason != NULL && strcmp(rep->reason, reason) != 0))
        fail_msg("expected code %d reason %s, got %d %s (%s)", code, reason ? reason : "*",
            (int)rep->code, rep->reason, rep->message);
}

/* bearer formats "Bearer <tok>" into out. */
static const char *bearer(const char *tok, char *out, size_t cap)
{
    snprintf(out, cap, "Bearer %s", tok);
    return out;
}

static Authd__V1__MeResponse *me(it_raw *r, const char *tok, int code, const char *reason)
{
    char auth[4200];
    Authd__V1__ReplyEnvelope *rep
        = pcall(r, M_ME, tok != NULL ? bearer(tok, auth, sizeof auth) : NULL, NULL, 0);
    Authd__V1__MeResponse *m = NULL;

    expect_rep(rep, code, reason);
    if (code == AUTHD_OK) {
        m = authd__v1__me_response__unpack(NULL, rep->body.len, rep->body.data);
        assert_non_null(m);
    }
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return m;
}

static uint32_t logout_all(it_raw *r, const char *tok, int code, const char *reason)
{
    char auth[4200];
    Authd__V1__ReplyEnvelope *rep = pcall(r, M_LOGALL, bearer(tok, auth, sizeof auth), NULL, 0);
    uint32_t n = 0;

    expect_rep(rep, code, reason);
    if (code == AUTHD_OK) {
        Authd__V1__LogoutAllResponse *m
            = authd__v1__logout_all_response__unpack(NULL, rep->body.len, rep->body.data);
        assert_non_null(m);
        n = m->sessions_revoked;
        authd__v1__logout_all_response__free_unpacked(m, NULL);
    }
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return n;
}

static uint32_t change_pw(
    it_raw *r, const char *tok, const char *cur, const char *next, int code, const char *reason)
{
    Authd__V1__ChangePasswordRequest req = AUTHD__V1__CHANGE_PASSWORD_REQUEST__INIT;
    char auth[4200];
    uint8_t body[1024];
    uint32_t n = 0;

    req.current_password = (char *)cur;
    req.new_password = (char *)next;
    size_t blen = authd__v1__change_password_request__pack(&req, body);
    Authd__V1__ReplyEnvelope *rep = pcall(r, M_CHPW, bearer(tok, auth, sizeof auth), body, blen);
    expect_rep(rep, code, reason);
    if (code == AUTHD_OK) {
        Authd__V1__ChangePasswordResponse *m
            = authd__v1__change_password_response__unpack(NULL, rep->body.len, rep->body.data);
        assert_non_null(m);
        n = m->sessions_revoked;
        authd__v1__change_password_response__free_unpacked(m, NULL);
    }
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return n;
}

static void expect_verify(authd_client *c, const char *tok, int code, const char *reason)
{
    authd_status st;
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, code, reason);
}

/* verify_roles calls Verify with required roles and an audience. */
static void verify_roles(authd_client *c, const char *tok, const char *const *roles, size_t n,
    const char *aud, int code, const char *reason)
{
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    authd_status st;

    req.access_token = (char *)tok;
    req.required_roles = (char **)roles;
    req.n_required_roles = n;
    if (aud != NULL)
        req.audience = (char *)aud;
    if (authd_client_verify(c, &req, &resp, &st) != AUTHD_OK)
        resp = NULL;
    IT_EXPECT(&st, code, reason);
    if (resp != NULL)
        authd__v1__verify_response__free_unpacked(resp, NULL);
}

/* reg_login registers user (password PW) and logs in; the caller frees. */
static Authd__V1__LoginResponse *reg_login(authd_client *c, const char *user, bool reg)
{
    char email[128], tok[4096];
    authd_status st;
    Authd__V1__LoginResponse *lr = NULL;

    if (reg) {
        snprintf(email, sizeof email, "%s@example.com", user);
        it_register(c, user, email, PW, &st, NULL);
        IT_EXPECT(&st, AUTHD_OK, NULL);
    }
    it_login_token(c, user, PW, tok, sizeof tok, &lr);
    return lr;
}

/* Every protected RPC without a token, with an empty one, "Bearer" alone,
 * a malformed one, an expired one (signed with the server's key) and a
 * forged one answers UNAUTHENTICATED with the reason, before any handler. */
static void protected_needs_token(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = reg_login(c, "alice", true);
    const char *methods[] = { M_ME, M_LOGALL, M_CHPW };
    char hdr[128], claims[512], expired[4096], forged[4096];
    it_raw r;

    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", s->kid);
    snprintf(claims, sizeof claims,
        "{\"iss\":\"authd\",\"aud\":\"authd\",\"sub\":\"%s\",\"sid\":\"%s\",\"jti\":\"%s\","
        "\"iat\":1000,\"nbf\":1000,\"exp\":2000}",
        lr->user->id, lr->session_id, lr->session_id);
    it_forge(s->key, s->key_len, hdr, claims, expired, sizeof expired);
    it_forge("not the server's key, not at all!", 33, hdr, claims, forged, sizeof forged);

    it_raw_open(&r, s);
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        Authd__V1__ReplyEnvelope *rep = pcall(&r, methods[i], NULL, NULL, 0);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, "NO_AUTHORIZATION");
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
        rep = pcall(&r, methods[i], "", NULL, 0);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, "NO_AUTHORIZATION");
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
        rep = pcall(&r, methods[i], "Bearer ", NULL, 0);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, "NO_AUTHORIZATION");
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
        rep = pcall(&r, methods[i], "Bearer not.a.token", NULL, 0);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, NULL);
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
        char auth[4200];
        rep = pcall(&r, methods[i], bearer(expired, auth, sizeof auth), NULL, 0);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, "EXPIRED");
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
        rep = pcall(&r, methods[i], bearer(forged, auth, sizeof auth), NULL, 0);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, "BAD_SIGNATURE");
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
    }
    /* Nothing happened to the session: LogoutAll and ChangePassword were
     * refused before their handlers. */
    expect_verify(c, lr->access_token, AUTHD_OK, NULL);
    /* The scheme in any case, or the bare token, both work. */
    char auth[4200];
    snprintf(auth, sizeof auth, "bEaReR %s", lr->access_token);
    Authd__V1__ReplyEnvelope *rep = pcall(&r, M_ME, auth, NULL, 0);
    expect_rep(rep, AUTHD_OK, NULL);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    rep = pcall(&r, M_ME, lr->access_token, NULL, 0);
    expect_rep(rep, AUTHD_OK, NULL);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    /* The refusal is an audit line naming the token by fingerprint only. */
    assert_true(it_log_wait(s, "\"audit\":\"auth_failure\"", 5000));

    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* A token inside the request message is never authorization: LogoutAll
 * with a body that carries the token as field 1 (as LogoutRequest and
 * VerifyRequest do) and no envelope authorization is refused, and the
 * session lives on. */
static void token_in_message_is_not_authorization(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = reg_login(c, "mallory", true);
    Authd__V1__VerifyRequest vr = AUTHD__V1__VERIFY_REQUEST__INIT;
    uint8_t body[4200];
    it_raw r;

    vr.access_token = lr->access_token;
    size_t blen = authd__v1__verify_request__pack(&vr, body);
    it_raw_open(&r, s);
    const char *methods[] = { M_ME, M_LOGALL, M_CHPW };
    for (size_t i = 0; i < 3; i++) {
        Authd__V1__ReplyEnvelope *rep = pcall(&r, methods[i], NULL, body, blen);
        expect_rep(rep, AUTHD_UNAUTHENTICATED, "NO_AUTHORIZATION");
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
    }
    expect_verify(c, lr->access_token, AUTHD_OK, NULL);
    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Verify with required roles (all must be held, from the store) and an
 * audience: a valid token lacking either is PERMISSION_DENIED, never
 * UNAUTHENTICATED; an invalid token stays UNAUTHENTICATED whatever roles
 * are asked for. */
static void verify_roles_and_audience(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    const char *admin_roles[] = { "admin", "ops" };
    char id[33], tok[4096];
    Authd__V1__LoginResponse *plain = reg_login(c, "plainuser", true);

    assert_int_equal(it_store_add_user(s->data_dir, "boss", PW, admin_roles, 2, id), 0);
    it_login_token(c, "boss", PW, tok, sizeof tok, NULL);

    const char *r_admin[] = { "admin" };
    const char *r_both[] = { "ops", "admin" };
    const char *r_more[] = { "admin", "billing" };
    verify_roles(c, tok, NULL, 0, NULL, AUTHD_OK, NULL);
    verify_roles(c, tok, r_admin, 1, NULL, AUTHD_OK, NULL);
    verify_roles(c, tok, r_both, 2, NULL, AUTHD_OK, NULL);
    verify_roles(c, tok, r_more, 2, NULL, AUTHD_PERMISSION_DENIED, "MISSING_ROLE");
    verify_roles(c, plain->access_token, r_admin, 1, NULL, AUTHD_PERMISSION_DENIED, "MISSING_ROLE");
    verify_roles(c, tok, r_admin, 1, "authd", AUTHD_OK, NULL);
    verify_roles(c, tok, NULL, 0, "billing-service", AUTHD_PERMISSION_DENIED, "WRONG_AUDIENCE");
    verify_roles(c, "not.a.token", r_admin, 1, NULL, AUTHD_UNAUTHENTICATED, NULL);
    const char *r_empty[] = { "" };
    verify_roles(c, tok, r_empty, 1, NULL, AUTHD_INVALID_ARGUMENT, "INVALID_ROLES");
    assert_true(it_log_wait(s, "\"audit\":\"verify_denied\"", 5000));

    authd__v1__login_response__free_unpacked(plain, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Me answers the caller's own profile and session, from the token alone:
 * two users each get their own, whatever else they send. */
static void me_is_only_the_caller(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a = reg_login(c, "anna", true);
    Authd__V1__LoginResponse *b = reg_login(c, "bert", true);
    it_raw r;

    it_raw_open(&r, s);
    Authd__V1__MeResponse *ma = me(&r, a->access_token, AUTHD_OK, NULL);
    assert_string_equal(ma->user->id, a->user->id);
    assert_string_equal(ma->user->username, "anna");
    assert_string_equal(ma->user->email, "anna@example.com");
    assert_non_null(ma->session);
    assert_string_equal(ma->session->id, a->session_id);
    assert_true(ma->session->expires_at > it_now());
    Authd__V1__MeResponse *mb = me(&r, b->access_token, AUTHD_OK, NULL);
    assert_string_equal(mb->user->id, b->user->id);
    assert_string_equal(mb->session->id, b->session_id);
    /* A MeRequest body naming another user's session (an unknown field)
     * changes nothing: identity is the token's. */
    uint8_t body[64];
    size_t n = 0;
    body[n++] = (1 << 3) | 2; /* field 1, length-delimited */
    body[n++] = 32;
    memcpy(body + n, a->session_id, 32);
    n += 32;
    char auth[4200];
    Authd__V1__ReplyEnvelope *rep
        = pcall(&r, M_ME, bearer(b->access_token, auth, sizeof auth), body, n);
    expect_rep(rep, AUTHD_OK, NULL);
    Authd__V1__MeResponse *mb2
        = authd__v1__me_response__unpack(NULL, rep->body.len, rep->body.data);
    assert_non_null(mb2);
    assert_string_equal(mb2->user->id, b->user->id);
    assert_string_equal(mb2->session->id, b->session_id);
    authd__v1__me_response__free_unpacked(mb2, NULL);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);

    /* The list of live sessions: bert's holds his one session only; anna's,
     * after a second login, both of hers, and after a logout of the second
     * the first alone (the revoked one still counts in sessions_total). */
    assert_int_equal(mb->n_sessions, 1);
    assert_string_equal(mb->sessions[0]->id, b->session_id);
    assert_int_equal(mb->sessions_total, 1);
    Authd__V1__LoginResponse *a2 = reg_login(c, "anna", false);
    Authd__V1__MeResponse *ma2 = me(&r, a->access_token, AUTHD_OK, NULL);
    assert_int_equal(ma2->n_sessions, 2);
    assert_int_equal(ma2->sessions_total, 2);
    bool saw1 = false, saw2 = false;
    for (size_t i = 0; i < ma2->n_sessions; i++) {
        saw1 = saw1 || strcmp(ma2->sessions[i]->id, a->session_id) == 0;
        saw2 = saw2 || strcmp(ma2->sessions[i]->id, a2->session_id) == 0;
    }
    assert_true(saw1 && saw2);
    authd__v1__me_response__free_unpacked(ma2, NULL);
    authd_status lst;
    it_logout(c, a2->access_token, &lst);
    IT_EXPECT(&lst, AUTHD_OK, NULL);
    ma2 = me(&r, a->access_token, AUTHD_OK, NULL);
    assert_int_equal(ma2->n_sessions, 1);
    assert_string_equal(ma2->sessions[0]->id, a->session_id);
    assert_int_equal(ma2->sessions_total, 2);
    authd__v1__me_response__free_unpacked(ma2, NULL);
    authd__v1__login_response__free_unpacked(a2, NULL);

    authd__v1__me_response__free_unpacked(ma, NULL);
    authd__v1__me_response__free_unpacked(mb, NULL);
    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(a, NULL);
    authd__v1__login_response__free_unpacked(b, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* LogoutAll kills every session of the caller at once (access and refresh
 * tokens), the calling one too, and nobody else's. */
static void logout_all_kills_callers_sessions(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a1 = reg_login(c, "carol", true);
    Authd__V1__LoginResponse *a2 = reg_login(c, "carol", false);
    Authd__V1__LoginResponse *b = reg_login(c, "dave", true);
    Authd__V1__RefreshRequest rq = AUTHD__V1__REFRESH_REQUEST__INIT;
    Authd__V1__RefreshResponse *rr = NULL;
    authd_status st;
    it_raw r;

    it_raw_open(&r, s);
    assert_int_equal(logout_all(&r, a1->access_token, AUTHD_OK, NULL), 2);
    expect_verify(c, a1->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    expect_verify(c, a2->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    rq.refresh_token = a2->refresh_token;
    if (authd_client_refresh(c, &rq, &rr, &st) == AUTHD_OK)
        authd__v1__refresh_response__free_unpacked(rr, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    expect_verify(c, b->access_token, AUTHD_OK, NULL);
    /* The calling token is dead too: a second LogoutAll is refused. */
    logout_all(&r, a2->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    assert_true(it_log_wait(s, "\"audit\":\"logout_all\"", 5000));

    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(a1, NULL);
    authd__v1__login_response__free_unpacked(a2, NULL);
    authd__v1__login_response__free_unpacked(b, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* ChangePassword: a wrong current password is refused, a weak new one is
 * refused (and does not count), a good change revokes the other sessions
 * at once and keeps the calling one; the old password stops working. */
static void change_password_flow(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a1 = reg_login(c, "erin", true);
    Authd__V1__LoginResponse *a2 = reg_login(c, "erin", false);
    Authd__V1__LoginResponse *b = reg_login(c, "frank", true);
    authd_status st;
    it_raw r;

    it_raw_open(&r, s);
    change_pw(&r, a1->access_token, "wrong password entirely", NEW_PW, AUTHD_UNAUTHENTICATED,
        "INVALID_CREDENTIALS");
    change_pw(&r, a1->access_token, PW, "short", AUTHD_INVALID_ARGUMENT, "INVALID_PASSWORD");
    change_pw(
        &r, a1->access_token, PW, "aaaaaaaaaaaaaaaa", AUTHD_INVALID_ARGUMENT, "WEAK_PASSWORD");
    change_pw(&r, a1->access_token, PW, "Password1234!", AUTHD_INVALID_ARGUMENT, "WEAK_PASSWORD");
    change_pw(&r, a1->access_token, PW, "", AUTHD_INVALID_ARGUMENT, NULL);
    expect_verify(c, a2->access_token, AUTHD_OK, NULL); /* refusals revoke nothing */
    assert_int_equal(change_pw(&r, a1->access_token, PW, NEW_PW, AUTHD_OK, NULL), 1);
    expect_verify(c, a2->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    expect_verify(c, a1->access_token, AUTHD_OK, NULL);
    expect_verify(c, b->access_token, AUTHD_OK, NULL);
    it_login(c, "erin", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_login(c, "erin", NEW_PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_true(it_log_wait(s, "\"audit\":\"password_changed\"", 5000));

    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(a1, NULL);
    authd__v1__login_response__free_unpacked(a2, NULL);
    authd__v1__login_response__free_unpacked(b, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Wrong current passwords count on Login's own per-account counter: after
 * the free attempts, even the right current password is refused, and so
 * is a Login with the right password (the same counter). */
static void change_password_throttled_like_login(void **state)
{
    it_opts o = { .extra = { "--login-free-attempts", "2", "--login-backoff-base-ms", "600000",
                      "--login-backoff-max-ms", "600000" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a = reg_login(c, "gina", true);
    authd_status st;
    it_raw r;

    it_raw_open(&r, s);
    for (int i = 0; i < 2; i++)
        change_pw(&r, a->access_token, "not my password", NEW_PW, AUTHD_UNAUTHENTICATED,
            "INVALID_CREDENTIALS");
    change_pw(&r, a->access_token, PW, NEW_PW, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    assert_true(it_log_wait(s, "\"cause\":\"throttled\"", 5000));
    it_login(c, "gina", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    expect_verify(c, a->access_token, AUTHD_OK, NULL); /* still the old password, still alive */

    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(a, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Wrong current passwords spend Login's per-caller failed-login limit. */
static void change_password_source_limit(void **state)
{
    it_opts o = { .extra = { "--caller-login-failures", "3" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a = reg_login(c, "hank", true);
    it_raw r;

    it_raw_open(&r, s);
    /* Login's success gave its token back: the bucket holds 3. */
    for (int i = 0; i < 3; i++)
        change_pw(&r, a->access_token, "not my password", NEW_PW, AUTHD_UNAUTHENTICATED,
            "INVALID_CREDENTIALS");
    change_pw(&r, a->access_token, PW, NEW_PW, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED");

    it_raw_close(&r);
    authd__v1__login_response__free_unpacked(a, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* guard_expect runs the guard on header and checks status, the
 * WWW-Authenticate value and whether the cache answered. */
static void guard_expect(authd_guard *g, const char *header, const char *const *roles, size_t n,
    int http, const char *www, int from_cache)
{
    authd_guard_result r;

    int got = authd_guard_check(g, header, roles, n, &r);
    if (got != http || r.http_status != http || strcmp(r.www_authenticate, www) != 0
        || (from_cache >= 0 && r.from_cache != from_cache))
        fail_msg("guard on \"%.40s\": got %d \"%s\" cache %d (%s), want %d \"%s\" cache %d",
            header ? header : "(null)", got, r.www_authenticate, r.from_cache, r.status.reason,
            http, www, from_cache);
}

/* The guard: every outcome, malformed header values included, and the
 * cache's rules (exact token, roles checked, a forged token with a cached
 * sid misses). */
static void guard_outcomes(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    const char *roles[] = { "admin", "ops" };
    const char *need_admin[] = { "admin" };
    const char *need_billing[] = { "billing" };
    char id[33], tok[4096], h[4200];
    authd_guard *g = NULL, *gc = NULL, *ga = NULL;
    authd_guard_options co = { .cache_ttl_ms = 60000, .cache_entries = 16 };
    authd_guard_options ao = { .audience = "another-service" };
    authd_guard_result r;

    assert_int_equal(it_store_add_user(s->data_dir, "gadmin", PW, roles, 2, id), 0);
    it_login_token(c, "gadmin", PW, tok, sizeof tok, NULL);
    assert_int_equal(authd_guard_new(c, NULL, &g), AUTHD_OK);
    assert_int_equal(authd_guard_new(c, &co, &gc), AUTHD_OK);
    assert_int_equal(authd_guard_new(c, &ao, &ga), AUTHD_OK);

    guard_expect(g, NULL, NULL, 0, 401, "Bearer", 0);
    guard_expect(g, "", NULL, 0, 401, "Bearer", 0);
    guard_expect(g, "Bearer", NULL, 0, 401, "Bearer error=\"invalid_request\"", 0);
    guard_expect(g, "Bearer ", NULL, 0, 401, "Bearer error=\"invalid_request\"", 0);
    guard_expect(g, "Basic dXNlcjpwdw==", NULL, 0, 401, "Bearer error=\"invalid_request\"", 0);
    snprintf(h, sizeof h, "Bearer %s extra", tok);
    guard_expect(g, h, NULL, 0, 401, "Bearer error=\"invalid_request\"", 0);
    char *big = malloc(100 * 1024 + 8);
    assert_non_null(big);
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', 100 * 1024);
    big[7 + 100 * 1024] = '\0';
    guard_expect(g, big, NULL, 0, 401, "Bearer error=\"invalid_request\"", 0);
    free(big);
    /* RFC 9110: the scheme in any case, one or more spaces. */
    snprintf(h, sizeof h, "bearer %s", tok);
    guard_expect(g, h, need_admin, 1, 200, "", 0);
    snprintf(h, sizeof h, "Bearer  %s", tok);
    guard_expect(g, h, need_admin, 1, 200, "", 0);
    snprintf(h, sizeof h, "Bearer %s", tok);
    assert_int_equal(authd_guard_check(g, h, roles, 2, &r), 200);
    assert_string_equal(r.user_id, id);
    assert_string_equal(r.username, "gadmin");
    assert_int_equal(r.n_roles, 2);
    guard_expect(g, h, need_billing, 1, 403, "Bearer error=\"insufficient_scope\"", 0);
    guard_expect(ga, h, NULL, 0, 403, "Bearer error=\"insufficient_scope\"", 0);
    guard_expect(g, "Bearer a.b.c", NULL, 0, 401, "Bearer error=\"invalid_token\"", 0);
    assert_int_equal(authd_guard_check_token(g, tok, need_admin, 1, &r), 200);

    /* The cache: a second look is answered from it; a role it does not
     * show goes to authd (and is refused); the same sid with another
     * signature misses and is refused by authd. */
    guard_expect(gc, h, need_admin, 1, 200, "", 0);
    guard_expect(gc, h, need_admin, 1, 200, "", 1);
    guard_expect(gc, h, NULL, 0, 200, "", 1);
    guard_expect(gc, h, need_billing, 1, 403, "Bearer error=\"insufficient_scope\"", 0);
    char forged[4200];
    snprintf(forged, sizeof forged, "%s", h);
    size_t fl = strlen(forged);
    forged[fl - 2] = forged[fl - 2] == 'A' ? 'B' : 'A';
    guard_expect(gc, forged, NULL, 0, 401, "Bearer error=\"invalid_token\"", 0);
    /* Without a cache, a logout is seen at once. */
    authd_status st;
    it_logout(c, tok, &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    guard_expect(g, h, NULL, 0, 401, "Bearer error=\"invalid_token\"", 0);

    authd_guard_free(g);
    authd_guard_free(gc);
    authd_guard_free(ga);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* The client library's per-call authorization: the generated _as
 * wrappers put the token in the envelope; the plain wrapper sends none. */
static void client_library_as(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a1 = reg_login(c, "ivy", true);
    Authd__V1__LoginResponse *a2 = reg_login(c, "ivy", false);
    Authd__V1__MeRequest mq = AUTHD__V1__ME_REQUEST__INIT;
    Authd__V1__MeResponse *mr = NULL;
    Authd__V1__ChangePasswordRequest cq = AUTHD__V1__CHANGE_PASSWORD_REQUEST__INIT;
    Authd__V1__ChangePasswordResponse *cr = NULL;
    Authd__V1__LogoutAllRequest lq = AUTHD__V1__LOGOUT_ALL_REQUEST__INIT;
    Authd__V1__LogoutAllResponse *lr = NULL;
    authd_status st;
    char auth[4200];

    assert_int_not_equal(authd_client_me(c, &mq, &mr, &st), AUTHD_OK);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "NO_AUTHORIZATION");
    assert_int_equal(
        authd_client_me_as(c, bearer(a1->access_token, auth, sizeof auth), &mq, &mr, &st),
        AUTHD_OK);
    assert_string_equal(mr->user->username, "ivy");
    assert_string_equal(mr->session->id, a1->session_id);
    authd__v1__me_response__free_unpacked(mr, NULL);
    cq.current_password = PW;
    cq.new_password = NEW_PW;
    assert_int_equal(authd_client_change_password_as(c, a1->access_token, &cq, &cr, &st), AUTHD_OK);
    assert_int_equal(cr->sessions_revoked, 1);
    authd__v1__change_password_response__free_unpacked(cr, NULL);
    expect_verify(c, a2->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    assert_int_equal(
        authd_client_logout_all_as(c, bearer(a1->access_token, auth, sizeof auth), &lq, &lr, &st),
        AUTHD_OK);
    assert_int_equal(lr->sessions_revoked, 1);
    authd__v1__logout_all_response__free_unpacked(lr, NULL);
    expect_verify(c, a1->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");

    authd__v1__login_response__free_unpacked(a1, NULL);
    authd__v1__login_response__free_unpacked(a2, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* ctl runs authctl --url --ca ARGS with env and stdin; asserts the exit. */
static void ctl(const it_server *s, const char *const *args, const char *const *env,
    const char *stdin_data, int want, it_proc *p)
{
    const char *argv[16];
    size_t n = 0;

    argv[n++] = AUTHCTL_BIN;
    argv[n++] = "--url";
    argv[n++] = s->url;
    argv[n++] = "--ca";
    argv[n++] = IT_CA;
    for (size_t i = 0; args[i] != NULL; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    it_run(argv, env, stdin_data, p);
    if (p->status != want)
        fail_msg("authctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", args[0], p->status, want,
            p->out, p->err);
}

/* authctl me / passwd / logout-all, the token from AUTHD_TOKEN. */
static void authctl_account(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *a1 = reg_login(c, "jill", true);
    Authd__V1__LoginResponse *a2 = reg_login(c, "jill", false);
    char env_tok[4200], want[64];
    const char *env[] = { env_tok, NULL };
    const char *me_args[] = { "me", NULL };
    const char *pw_args[] = { "passwd", "--password-stdin", NULL };
    const char *la_args[] = { "logout-all", NULL };
    it_proc p;

    snprintf(env_tok, sizeof env_tok, "AUTHD_TOKEN=%s", a1->access_token);
    ctl(s, me_args, env, NULL, 0, &p);
    assert_non_null(strstr(p.out, "username=jill "));
    assert_non_null(strstr(p.out, "email=jill@example.com"));
    snprintf(want, sizeof want, "session_id=%s", a1->session_id);
    assert_non_null(strstr(p.out, want));
    it_proc_free(&p);
    ctl(s, me_args, NULL, "", 2, &p); /* no token at all: refused before any call */
    it_proc_free(&p);
    const char *bad_env[] = { "AUTHD_TOKEN=not.a.token", NULL };
    ctl(s, me_args, bad_env, NULL, 1, &p);
    assert_non_null(strstr(p.err, "UNAUTHENTICATED"));
    it_proc_free(&p);
    ctl(s, pw_args, env, "wrong one here\n" NEW_PW "\n", 1, &p);
    assert_non_null(strstr(p.err, "INVALID_CREDENTIALS"));
    it_proc_free(&p);
    ctl(s, pw_args, env, PW "\n" NEW_PW "\n", 0, &p);
    it_proc_free(&p);
    expect_verify(c, a2->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    ctl(s, la_args, env, NULL, 0, &p);
    assert_non_null(strstr(p.out, "sessions_revoked=1"));
    it_proc_free(&p);
    expect_verify(c, a1->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");

    authd__v1__login_response__free_unpacked(a1, NULL);
    authd__v1__login_response__free_unpacked(a2, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(protected_needs_token),
        cmocka_unit_test(token_in_message_is_not_authorization),
        cmocka_unit_test(verify_roles_and_audience),
        cmocka_unit_test(me_is_only_the_caller),
        cmocka_unit_test(logout_all_kills_callers_sessions),
        cmocka_unit_test(change_password_flow),
        cmocka_unit_test(change_password_throttled_like_login),
        cmocka_unit_test(change_password_source_limit),
        cmocka_unit_test(guard_outcomes),
        cmocka_unit_test(client_library_as),
        cmocka_unit_test(authctl_account),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
