/*
 * it_refresh.c — refresh tokens, session lifetimes and Logout, against the
 * real authd over TLS: rotation; the parent replayed inside and after the
 * grace window; a grandparent replayed; 50 parallel Refreshes of one
 * token; Logout killing refresh; a disabled user; idle and absolute
 * expiry; forged tokens; throttling; tokens never logged.
 *
 * The store is opened directly (a second LMDB process, as `authd user`
 * does) only to disable a user, which no RPC does yet.
 */
#include "harness.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int it_store_set_status(const char *dir, const char *user_hex, int active, long long now);

#define PW "correct horse battery staple"

static int do_refresh(
    authd_client *c, const char *rt, authd_status *st, Authd__V1__RefreshResponse **out)
{
    Authd__V1__RefreshRequest req = AUTHD__V1__REFRESH_REQUEST__INIT;
    Authd__V1__RefreshResponse *resp = NULL;

    req.refresh_token = (char *)rt;
    int rc = authd_client_refresh(c, &req, &resp, st);
    if (rc == AUTHD_OK && out != NULL)
        *out = resp;
    else if (rc == AUTHD_OK)
        authd__v1__refresh_response__free_unpacked(resp, NULL);
    return rc;
}

/* login_rt registers user (if password is given the first time) and logs
 * in, returning the response (caller frees). */
static Authd__V1__LoginResponse *login_user(authd_client *c, const char *user, bool reg)
{
    char email[128];
    char tok[4096];
    authd_status st;
    Authd__V1__LoginResponse *lr = NULL;

    if (reg) {
        snprintf(email, sizeof email, "%s@example.com", user);
        it_register(c, user, email, PW, &st, NULL);
        IT_EXPECT(&st, AUTHD_OK, NULL);
    }
    it_login_token(c, user, PW, tok, sizeof tok, &lr);
    assert_non_null(lr->refresh_token);
    return lr;
}

static void expect_verify(authd_client *c, const char *tok, int code, const char *reason)
{
    authd_status st;
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, code, reason);
}

/* Login returns a refresh token; Refresh gives a working new access token
 * and a new refresh token for the same session; the old access token goes
 * on working until its own exp (same session); the child refreshes again;
 * the user comes from the store. */
static void refresh_rotation(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "rot", true);
    Authd__V1__RefreshResponse *r1 = NULL, *r2 = NULL;
    Authd__V1__VerifyResponse *vr = NULL;
    authd_status st;

    assert_int_equal(strlen(lr->refresh_token), 92); /* 69 bytes: >= 256 random bits inside */
    assert_true(lr->refresh_expires_at >= lr->expires_at);
    do_refresh(c, lr->refresh_token, &st, &r1);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_equal(r1->token_type, "Bearer");
    assert_string_equal(r1->session_id, lr->session_id);
    assert_string_not_equal(r1->refresh_token, lr->refresh_token);
    assert_non_null(r1->user);
    assert_string_equal(r1->user->id, lr->user->id);
    assert_string_equal(r1->user->username, "rot");
    assert_true(r1->expires_at > it_now());
    assert_true(r1->refresh_expires_at >= lr->refresh_expires_at);

    it_verify(c, r1->access_token, &st, &vr);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_equal(vr->session_id, lr->session_id);
    assert_string_equal(vr->user_id, lr->user->id);
    authd__v1__verify_response__free_unpacked(vr, NULL);
    expect_verify(c, lr->access_token, AUTHD_OK, NULL); /* same session, still alive */

    do_refresh(c, r1->refresh_token, &st, &r2);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_not_equal(r2->refresh_token, r1->refresh_token);
    expect_verify(c, r2->access_token, AUTHD_OK, NULL);

    authd__v1__refresh_response__free_unpacked(r2, NULL);
    authd__v1__refresh_response__free_unpacked(r1, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* The immediate parent replayed within the grace window gets the same
 * pair back (no new branch); the child keeps working afterwards. */
static void refresh_replay_within_grace(void **state)
{
    it_opts o = { .extra = { "--refresh-grace-ms", "60000" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "graceful", true);
    Authd__V1__RefreshResponse *a = NULL, *b = NULL, *d = NULL;
    authd_status st;

    do_refresh(c, lr->refresh_token, &st, &a);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    do_refresh(c, lr->refresh_token, &st, &b);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_equal(b->refresh_token, a->refresh_token);
    assert_string_equal(b->access_token, a->access_token);
    assert_int_equal(b->expires_at, a->expires_at);
    assert_int_equal(b->refresh_expires_at, a->refresh_expires_at);

    do_refresh(c, a->refresh_token, &st, &d);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    expect_verify(c, d->access_token, AUTHD_OK, NULL);

    authd__v1__refresh_response__free_unpacked(d, NULL);
    authd__v1__refresh_response__free_unpacked(b, NULL);
    authd__v1__refresh_response__free_unpacked(a, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* The parent replayed after the grace window revokes that session (its
 * access and refresh tokens die at once) with an audit line; another
 * session of the same user lives on. */
static void refresh_replay_after_grace_revokes(void **state)
{
    it_opts o = { .extra = { "--refresh-grace-ms", "300" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "late", true);
    Authd__V1__LoginResponse *other = login_user(c, "late", false);
    Authd__V1__RefreshResponse *a = NULL, *b = NULL;
    authd_status st;
    int oks = 0;

    do_refresh(c, lr->refresh_token, &st, &a);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    /* Replays answer the same child until the window closes, then REUSED. */
    uint64_t deadline = it_mono_ms() + 10000;
    for (;;) {
        b = NULL;
        if (do_refresh(c, lr->refresh_token, &st, &b) != AUTHD_OK)
            break;
        assert_string_equal(b->refresh_token, a->refresh_token);
        authd__v1__refresh_response__free_unpacked(b, NULL);
        oks++;
        assert_true(it_mono_ms() < deadline);
        it_nap_ms(50);
    }
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REFRESH_TOKEN_REUSED");
    expect_verify(c, a->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    expect_verify(c, lr->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    do_refresh(c, a->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    assert_true(it_log_wait(s, "\"audit\":\"refresh_reuse\"", 5000));
    assert_true(it_log_wait(s, lr->session_id, 5000));

    /* The user's other session is untouched. */
    expect_verify(c, other->access_token, AUTHD_OK, NULL);
    do_refresh(c, other->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    authd__v1__refresh_response__free_unpacked(a, NULL);
    authd__v1__login_response__free_unpacked(other, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* A grandparent (two generations back) revokes the session even inside
 * the grace window; the other session survives. Forged and garbled
 * tokens are refused without revoking anything. */
static void refresh_grandparent_and_forgery(void **state)
{
    it_opts o = { .extra = { "--refresh-grace-ms", "60000" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "granny", true);
    Authd__V1__LoginResponse *other = login_user(c, "granny", false);
    Authd__V1__RefreshResponse *a = NULL, *b = NULL;
    authd_status st;
    char forged[128];

    do_refresh(c, lr->refresh_token, &st, &a);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    do_refresh(c, a->refresh_token, &st, &b);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* Forgeries first: none of them may revoke the session. A token with
     * one character changed (in the MAC, in the random part), garbage,
     * the empty string, an access token. */
    const char *bad[] = { "", "x", lr->access_token, NULL, NULL };
    snprintf(forged, sizeof forged, "%s", b->refresh_token);
    forged[91] = forged[91] == 'A' ? 'B' : 'A';
    bad[3] = forged;
    static char forged2[128];
    snprintf(forged2, sizeof forged2, "%s", lr->refresh_token);
    forged2[40] = forged2[40] == 'A' ? 'B' : 'A';
    bad[4] = forged2;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        do_refresh(c, bad[i], &st, NULL);
        IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_REFRESH_TOKEN");
    }
    expect_verify(c, b->access_token, AUTHD_OK, NULL);

    do_refresh(c, lr->refresh_token, &st, NULL); /* the grandparent */
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REFRESH_TOKEN_REUSED");
    expect_verify(c, b->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    do_refresh(c, b->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    expect_verify(c, other->access_token, AUTHD_OK, NULL);
    do_refresh(c, other->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    authd__v1__refresh_response__free_unpacked(b, NULL);
    authd__v1__refresh_response__free_unpacked(a, NULL);
    authd__v1__login_response__free_unpacked(other, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

#define RACERS 50

struct racer {
    authd_client *c;
    const char *rt;
    pthread_barrier_t *go;
    authd_status st;
    char refresh[128];
    char access[4096];
};

static void *race(void *arg)
{
    struct racer *r = arg;
    Authd__V1__RefreshResponse *resp = NULL;

    pthread_barrier_wait(r->go);
    if (do_refresh(r->c, r->rt, &r->st, &resp) == AUTHD_OK) {
        snprintf(r->refresh, sizeof r->refresh, "%s", resp->refresh_token);
        snprintf(r->access, sizeof r->access, "%s", resp->access_token);
        authd__v1__refresh_response__free_unpacked(resp, NULL);
    }
    return NULL;
}

/* 50 Refreshes of one token at once, over 5 connections: at most one child
 * exists afterwards. Within the grace window every racer gets that child;
 * with no grace window one wins and the rest revoke the session. */
static void refresh_race(const char *grace, bool expect_all_ok)
{
    it_opts o = { .extra = { "--refresh-grace-ms", grace } };
    it_server *s = it_start(&o);
    authd_client *c[5];
    for (int i = 0; i < 5; i++)
        c[i] = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c[0], "racer", true);
    static struct racer r[RACERS];
    pthread_t th[RACERS];
    pthread_barrier_t go;
    authd_status st;

    pthread_barrier_init(&go, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].c = c[i % 5];
        r[i].rt = lr->refresh_token;
        r[i].go = &go;
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);

    const char *child = NULL;
    int ok = 0, reused = 0;
    for (int i = 0; i < RACERS; i++) {
        if (r[i].st.code == AUTHD_OK) {
            ok++;
            if (child == NULL)
                child = r[i].refresh;
            assert_string_equal(r[i].refresh, child); /* one child, never two */
        } else if (strcmp(r[i].st.reason, "REFRESH_TOKEN_REUSED") == 0) {
            IT_EXPECT(&r[i].st, AUTHD_UNAUTHENTICATED, "REFRESH_TOKEN_REUSED");
            reused++;
        } else { /* after the first reuse revoked the session */
            IT_EXPECT(&r[i].st, AUTHD_UNAUTHENTICATED, "REVOKED");
        }
    }
    assert_non_null(child);
    if (expect_all_ok) {
        assert_int_equal(ok, RACERS);
        do_refresh(c[0], child, &st, NULL); /* the one child is the live one */
        IT_EXPECT(&st, AUTHD_OK, NULL);
    } else {
        assert_int_equal(ok, 1);
        assert_true(reused >= 1);
        do_refresh(c[0], child, &st, NULL);
        IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    }

    authd__v1__login_response__free_unpacked(lr, NULL);
    for (int i = 0; i < 5; i++)
        authd_client_close(c[i]);
    it_finish(s);
}

static void refresh_race_in_grace(void **state)
{
    refresh_race("60000", true);
    (void)state;
}

static void refresh_race_no_grace(void **state)
{
    refresh_race("0", false);
    (void)state;
}

/* Logout revokes the session and its refresh family: the next Verify and
 * the next Refresh fail at once. */
static void refresh_after_logout(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "leaver", true);
    Authd__V1__RefreshResponse *a = NULL;
    authd_status st;

    do_refresh(c, lr->refresh_token, &st, &a);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_logout(c, lr->access_token, &st); /* the old access token names the same session */
    IT_EXPECT(&st, AUTHD_OK, NULL);
    expect_verify(c, a->access_token, AUTHD_UNAUTHENTICATED, "REVOKED");
    do_refresh(c, a->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    do_refresh(c, lr->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");

    authd__v1__refresh_response__free_unpacked(a, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* A disabled user cannot refresh (disabled through the store, from this
 * second process, while authd runs): disabling revoked the session, so
 * Refresh answers REVOKED, and enabling again does not bring it back; a
 * new login does refresh. */
static void refresh_disabled_user(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "dora", true);
    Authd__V1__LoginResponse *lr2 = NULL;
    authd_status st;

    assert_int_equal(it_store_set_status(s->data_dir, lr->user->id, 0, it_now()), 0);
    do_refresh(c, lr->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    assert_int_equal(it_store_set_status(s->data_dir, lr->user->id, 1, it_now()), 0);
    do_refresh(c, lr->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    lr2 = login_user(c, "dora", false);
    do_refresh(c, lr2->refresh_token, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    authd__v1__login_response__free_unpacked(lr2, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Idle lifetime: refreshing keeps a session alive past its first idle
 * end; left alone it ends (Verify EXPIRED, Refresh SESSION_EXPIRED). */
static void refresh_idle_expiry(void **state)
{
    it_opts o = { .extra = { "--session-idle-ttl", "3", "--session-max-ttl", "600" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "idler", true);
    Authd__V1__RefreshResponse *r = NULL;
    authd_status st;
    char rt[128], at[4096];

    assert_true(lr->refresh_expires_at <= it_now() + 3);
    assert_true(lr->expires_at <= lr->refresh_expires_at); /* the access token never outlives it */
    snprintf(rt, sizeof rt, "%s", lr->refresh_token);
    /* Keep it alive, refreshing every 0.2 s, until past its first end; each
     * new access token verifies at once (the end has 1 s granularity, so
     * only right after a refresh is "alive" certain). */
    uint64_t deadline = it_mono_ms() + 30000;
    while (it_now() <= lr->refresh_expires_at + 1) {
        do_refresh(c, rt, &st, &r);
        IT_EXPECT(&st, AUTHD_OK, NULL);
        assert_true(r->refresh_expires_at >= lr->refresh_expires_at);
        snprintf(rt, sizeof rt, "%s", r->refresh_token);
        snprintf(at, sizeof at, "%s", r->access_token);
        authd__v1__refresh_response__free_unpacked(r, NULL);
        expect_verify(c, at, AUTHD_OK, NULL);
        assert_true(it_mono_ms() < deadline);
        it_nap_ms(200);
    }
    /* Left alone, it ends. */
    for (;;) {
        if (it_verify(c, at, &st, NULL) != AUTHD_OK)
            break;
        assert_true(it_mono_ms() < deadline);
        it_nap_ms(100);
    }
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "EXPIRED");
    do_refresh(c, rt, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "SESSION_EXPIRED");

    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Absolute lifetime: however often refreshed, the session ends max_ttl
 * after login. */
static void refresh_absolute_expiry(void **state)
{
    it_opts o = { .extra = { "--session-idle-ttl", "2", "--session-max-ttl", "3" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    int64_t t0 = it_now();
    Authd__V1__LoginResponse *lr = login_user(c, "forever", true);
    int64_t t1 = it_now(); /* the session was opened in [t0, t1] */
    Authd__V1__RefreshResponse *r = NULL;
    authd_status st;
    char rt[128];

    snprintf(rt, sizeof rt, "%s", lr->refresh_token);
    uint64_t deadline = it_mono_ms() + 30000;
    for (;;) {
        r = NULL;
        if (do_refresh(c, rt, &st, &r) != AUTHD_OK)
            break;
        assert_true(r->refresh_expires_at <= it_now() + 3);
        assert_true(r->refresh_expires_at <= t1 + 3);
        assert_true(r->expires_at <= r->refresh_expires_at);
        snprintf(rt, sizeof rt, "%s", r->refresh_token);
        authd__v1__refresh_response__free_unpacked(r, NULL);
        assert_true(it_mono_ms() < deadline);
        it_nap_ms(200);
    }
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "SESSION_EXPIRED");
    assert_true(it_now() >= t0 + 2); /* not before its end (1 s clock granularity) */

    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Failed refreshes spend the failed-login budget of the caller (no
 * trusted end-user address here): past it, RATE_LIMITED before any
 * store access, even for a good token. Successes are refunded. */
static void refresh_throttled(void **state)
{
    it_opts o = { .extra = { "--caller-login-failures", "4" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "guesser", true); /* refunded */
    authd_status st;
    char rt[128];

    snprintf(rt, sizeof rt, "%s", lr->refresh_token);
    for (int i = 0; i < 3; i++) { /* successes cost nothing */
        Authd__V1__RefreshResponse *r = NULL;
        do_refresh(c, rt, &st, &r);
        IT_EXPECT(&st, AUTHD_OK, NULL);
        snprintf(rt, sizeof rt, "%s", r->refresh_token);
        authd__v1__refresh_response__free_unpacked(r, NULL);
    }
    for (int i = 0; i < 4; i++) {
        do_refresh(c, "not-a-refresh-token", &st, NULL);
        IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_REFRESH_TOKEN");
    }
    do_refresh(c, "not-a-refresh-token", &st, NULL);
    IT_EXPECT(&st, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED");
    do_refresh(c, rt, &st, NULL);
    IT_EXPECT(&st, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED");

    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Refresh tokens never reach the log, only their fingerprint. */
static void refresh_tokens_not_logged(void **state)
{
    it_opts o = { .extra = { "--log-level", "debug" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *lr = login_user(c, "quiet", true);
    Authd__V1__RefreshResponse *r = NULL;
    authd_status st;
    char fp[17];

    do_refresh(c, lr->refresh_token, &st, &r);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    do_refresh(c, "bogus-token", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_REFRESH_TOKEN");
    it_fingerprint("bogus-token", fp);
    assert_true(it_log_wait(s, fp, 5000));
    assert_true(it_log_wait(s, "\"audit\":\"refresh\"", 5000));
    it_stop(s);
    size_t len = 0;
    char *log = it_read_file(s->log_path, &len);
    assert_non_null(log);
    assert_null(strstr(log, lr->refresh_token));
    assert_null(strstr(log, r->refresh_token));
    assert_null(strstr(log, "bogus-token"));
    free(log);

    authd__v1__refresh_response__free_unpacked(r, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd_client_close(c);
    it_free(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(refresh_rotation, it_teardown),
        cmocka_unit_test_teardown(refresh_replay_within_grace, it_teardown),
        cmocka_unit_test_teardown(refresh_replay_after_grace_revokes, it_teardown),
        cmocka_unit_test_teardown(refresh_grandparent_and_forgery, it_teardown),
        cmocka_unit_test_teardown(refresh_race_in_grace, it_teardown),
        cmocka_unit_test_teardown(refresh_race_no_grace, it_teardown),
        cmocka_unit_test_teardown(refresh_after_logout, it_teardown),
        cmocka_unit_test_teardown(refresh_disabled_user, it_teardown),
        cmocka_unit_test_teardown(refresh_idle_expiry, it_teardown),
        cmocka_unit_test_teardown(refresh_absolute_expiry, it_teardown),
        cmocka_unit_test_teardown(refresh_throttled, it_teardown),
        cmocka_unit_test_teardown(refresh_tokens_not_logged, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
