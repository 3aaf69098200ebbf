/*
 * test_service.c — the RPC handlers through authd_dispatch, without nng.
 *
 * Real store (temp directory), real token signer, real worker pools, cheap
 * argon2 parameters and a clock the tests move. Each call packs a request
 * message exactly as the transport would hand it over and waits (bounded)
 * for the done callback.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authd/v1/auth.pb-c.h"
#include "log.h"
#include "service.h"

static _Atomic int64_t fake_now = 1800000000;
static int64_t clock_fn(void)
{
    return atomic_load(&fake_now);
}

static const authd_pwparams cheap = { 1, 64 * 1024 };

/* What make_service configures beyond the defaults, and what the next
 * request claims about its caller (set by a test, reset by setup). */
static authd_throttle_policy svc_throttle;
static authd_source_limits svc_limits;
static bool next_trusted;
static authd_source next_source;
static char next_caller[AUTHD_CALLER_MAX];

struct env {
    char dir[64];
    authd_store *store;
    authd_tokens *tokens;
    authd_workpool *hash_pool;
    authd_workpool *write_pool;
    authd_service *svc;
};

struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done; /* times done() ran */
    authd_code code;
    char reason[64];
    char message[256];
    uint8_t body[4096];
    size_t body_len;
};

struct pending {
    authd_request req;
    uint8_t buf[4096];
    struct result res;
};

static void on_done(authd_request *req, const authd_reply *rep)
{
    struct pending *p = (struct pending *)((char *)req - offsetof(struct pending, req));
    pthread_mutex_lock(&p->res.mu);
    p->res.done++;
    p->res.code = rep->code;
    snprintf(p->res.reason, sizeof p->res.reason, "%s", rep->reason ? rep->reason : "");
    snprintf(p->res.message, sizeof p->res.message, "%s", rep->message ? rep->message : "");
    p->res.body_len = rep->body_len <= sizeof p->res.body ? rep->body_len : 0;
    if (rep->body_len > 0 && rep->body_len <= sizeof p->res.body)
        memcpy(p->res.body, rep->body, rep->body_len);
    pthread_cond_broadcast(&p->res.cv);
    pthread_mutex_unlock(&p->res.mu);
}

/* start_raw hands the transport-level request (method, raw body) to
 * dispatch; the pending must stay alive until wait() returns. */
static struct pending *start_raw(struct env *e, const char *method, const uint8_t *body, size_t len)
{
    struct pending *p = calloc(1, sizeof *p);
    assert_non_null(p);
    assert_true(len <= sizeof p->buf);
    pthread_mutex_init(&p->res.mu, NULL);
    pthread_cond_init(&p->res.cv, NULL);
    memcpy(p->buf, body, len);
    p->req.method = method;
    p->req.method_len = strlen(method);
    p->req.body = p->buf;
    p->req.body_len = len;
    p->req.request_id = 42;
    snprintf(p->req.peer, sizeof p->req.peer, "test");
    p->req.source = next_source;
    p->req.trusted_frontend = next_trusted;
    memcpy(p->req.caller, next_caller, sizeof p->req.caller);
    p->req.start_ns = authd_monotonic_ns();
    p->req.done = on_done;
    authd_dispatch(e->svc, &p->req);
    return p;
}

static struct pending *start(struct env *e, const char *method, const ProtobufCMessage *m)
{
    uint8_t buf[4096];
    size_t n = protobuf_c_message_pack(m, buf);
    return start_raw(e, method, buf, n);
}

/* wait_done waits up to 10 s for the reply and checks done ran once. */
static void wait_done(struct pending *p)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&p->res.mu);
    while (p->res.done == 0)
        if (pthread_cond_timedwait(&p->res.cv, &p->res.mu, &dl) != 0)
            break;
    pthread_mutex_unlock(&p->res.mu);
    assert_int_equal(p->res.done, 1);
}

static struct pending *call(struct env *e, const char *method, const ProtobufCMessage *m)
{
    struct pending *p = start(e, method, m);
    wait_done(p);
    return p;
}

static void finish(struct pending *p)
{
    pthread_mutex_destroy(&p->res.mu);
    pthread_cond_destroy(&p->res.cv);
    free(p);
}

static authd_code do_register(
    struct env *e, const char *user, const char *email, const char *pw, char *reason_out)
{
    Authd__V1__RegisterRequest r = AUTHD__V1__REGISTER_REQUEST__INIT;
    r.username = (char *)user;
    r.email = (char *)email;
    r.password = (char *)pw;
    struct pending *p = call(e, "/authd.v1.Auth/Register", &r.base);
    authd_code c = p->res.code;
    if (reason_out != NULL)
        strcpy(reason_out, p->res.reason);
    finish(p);
    return c;
}

/* do_login returns the code and, on OK, the token (malloc'd) in *token. */
static authd_code do_login(
    struct env *e, const char *login, const char *pw, char **token, struct result *res_out)
{
    Authd__V1__LoginRequest r = AUTHD__V1__LOGIN_REQUEST__INIT;
    r.login = (char *)login;
    r.password = (char *)pw;
    struct pending *p = call(e, "/authd.v1.Auth/Login", &r.base);
    authd_code c = p->res.code;
    if (res_out != NULL)
        *res_out = p->res;
    if (c == AUTHD_OK && token != NULL) {
        Authd__V1__LoginResponse *lr
            = authd__v1__login_response__unpack(NULL, p->res.body_len, p->res.body);
        assert_non_null(lr);
        *token = strdup(lr->access_token);
        assert_string_equal(lr->token_type, "Bearer");
        assert_int_equal(lr->expires_at, clock_fn() + 900);
        assert_int_equal(strlen(lr->session_id), 32);
        assert_non_null(lr->user);
        authd__v1__login_response__free_unpacked(lr, NULL);
    }
    finish(p);
    return c;
}

static authd_code do_verify(
    struct env *e, const char *token, char *reason_out, Authd__V1__VerifyResponse **resp)
{
    Authd__V1__VerifyRequest r = AUTHD__V1__VERIFY_REQUEST__INIT;
    r.access_token = (char *)token;
    struct pending *p = call(e, "/authd.v1.Auth/Verify", &r.base);
    authd_code c = p->res.code;
    if (reason_out != NULL)
        strcpy(reason_out, p->res.reason);
    if (resp != NULL)
        *resp = c == AUTHD_OK
            ? authd__v1__verify_response__unpack(NULL, p->res.body_len, p->res.body)
            : NULL;
    finish(p);
    return c;
}

static authd_code do_logout(struct env *e, const char *token, char *reason_out)
{
    Authd__V1__LogoutRequest r = AUTHD__V1__LOGOUT_REQUEST__INIT;
    r.access_token = (char *)token;
    struct pending *p = call(e, "/authd.v1.Auth/Logout", &r.base);
    authd_code c = p->res.code;
    if (reason_out != NULL)
        strcpy(reason_out, p->res.reason);
    finish(p);
    return c;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int make_service(
    struct env *e, authd_pwparams pw, unsigned hash_threads, unsigned hash_queue)
{
    authd_workpool_options ho = { .threads = hash_threads, .queue_max = hash_queue };
    authd_workpool_options wo = { .threads = 1, .queue_max = 64 };
    authd_service_options so = { .store = e->store,
        .tokens = e->tokens,
        .pwparams = pw,
        .token_ttl = 900,
        .clock = clock_fn,
        .throttle = svc_throttle,
        .limits = svc_limits };
    if (authd_workpool_create(&ho, &e->hash_pool) != AUTHD_OK
        || authd_workpool_create(&wo, &e->write_pool) != AUTHD_OK)
        return -1;
    so.hash_pool = e->hash_pool;
    so.write_pool = e->write_pool;
    return authd_service_create(&so, &e->svc) == AUTHD_OK ? 0 : -1;
}

static void drop_service(struct env *e)
{
    authd_workpool_destroy(e->hash_pool);
    authd_workpool_destroy(e->write_pool);
    authd_service_destroy(e->svc);
    e->hash_pool = e->write_pool = NULL;
    e->svc = NULL;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    uint8_t key[32];
    memset(key, 0x5a, sizeof key);
    atomic_store(&fake_now, 1800000000);
    memset(&svc_throttle, 0, sizeof svc_throttle);
    memset(&svc_limits, 0, sizeof svc_limits);
    next_trusted = false;
    memset(&next_source, 0, sizeof next_source);
    next_caller[0] = '\0';
    snprintf(e->dir, sizeof e->dir, "/tmp/authd-svc-XXXXXX");
    if (mkdtemp(e->dir) == NULL)
        return -1;
    authd_store_options so = { .dir = e->dir, .map_size = 64u << 20 };
    authd_tokens_options to = {
        .key = key, .key_len = sizeof key, .issuer = "authd-test", .audience = "svc", .leeway = 30
    };
    if (authd_store_open(&so, &e->store) != AUTHD_OK
        || authd_tokens_create(&to, &e->tokens) != AUTHD_OK)
        return -1;
    if (make_service(e, cheap, 2, 16) != 0)
        return -1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    drop_service(e);
    authd_tokens_destroy(e->tokens);
    authd_store_close(e->store);
    nftw(e->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static const char PW[] = "a perfectly fine passphrase";

static void test_register_returns_profile(void **state)
{
    struct env *e = *state;
    Authd__V1__RegisterRequest r = AUTHD__V1__REGISTER_REQUEST__INIT;
    r.username = "Alice";
    r.email = "Alice@Example.COM";
    r.password = (char *)PW;
    struct pending *p = call(e, "/authd.v1.Auth/Register", &r.base);
    assert_int_equal(p->res.code, AUTHD_OK);
    Authd__V1__RegisterResponse *rr
        = authd__v1__register_response__unpack(NULL, p->res.body_len, p->res.body);
    assert_non_null(rr);
    assert_non_null(rr->user);
    assert_string_equal(rr->user->username, "alice");
    assert_string_equal(rr->user->email, "alice@example.com");
    assert_int_equal(strlen(rr->user->id), 32);
    assert_int_equal(rr->user->status, AUTHD__V1__USER_STATUS__USER_STATUS_ACTIVE);
    assert_int_equal(rr->user->created_at, 1800000000);
    authd__v1__register_response__free_unpacked(rr, NULL);
    finish(p);

    authd_user u;
    assert_int_equal(authd_store_user_find_by_username(e->store, "alice", &u), AUTHD_OK);
    assert_non_null(strstr(u.password_hash, "$argon2id$"));
    assert_null(strstr(u.password_hash, PW));
}

static void test_register_conflicts(void **state)
{
    struct env *e = *state;
    char reason[64];
    assert_int_equal(do_register(e, "bob", "bob@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(do_register(e, "BOB", "other@example.com", PW, reason), AUTHD_ALREADY_EXISTS);
    assert_string_equal(reason, "USERNAME_TAKEN");
    assert_int_equal(do_register(e, "bobby", "Bob@Example.com", PW, reason), AUTHD_ALREADY_EXISTS);
    assert_string_equal(reason, "EMAIL_TAKEN");
}

static void test_register_validation(void **state)
{
    struct env *e = *state;
    static const struct {
        const char *user, *email, *pw, *reason;
    } cases[] = {
        { "ab", "a@example.com", PW, "INVALID_USERNAME" },
        { "has space", "a@example.com", PW, "INVALID_USERNAME" },
        { "carol", "not-an-email", PW, "INVALID_EMAIL" },
        { "carol", "carol@example.com", "short", "INVALID_PASSWORD" },
        { "carol", "carol@example.com", "qwerty123456", "WEAK_PASSWORD" },
    };
    char reason[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(do_register(e, cases[i].user, cases[i].email, cases[i].pw, reason),
            AUTHD_INVALID_ARGUMENT);
        assert_string_equal(reason, cases[i].reason);
    }
}

static void test_login_verify_logout(void **state)
{
    struct env *e = *state;
    char *tok = NULL;
    char reason[64];
    Authd__V1__VerifyResponse *vr = NULL;

    assert_int_equal(do_register(e, "dave", "dave@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(do_login(e, "DAVE", PW, &tok, NULL), AUTHD_OK);
    assert_int_equal(do_verify(e, tok, reason, &vr), AUTHD_OK);
    assert_non_null(vr);
    assert_string_equal(vr->username, "dave");
    assert_int_equal(strlen(vr->user_id), 32);
    assert_int_equal(strlen(vr->session_id), 32);
    assert_int_equal(vr->expires_at, clock_fn() + 900);
    authd__v1__verify_response__free_unpacked(vr, NULL);

    assert_int_equal(do_logout(e, tok, NULL), AUTHD_OK);
    assert_int_equal(do_verify(e, tok, reason, NULL), AUTHD_UNAUTHENTICATED);
    assert_string_equal(reason, "REVOKED");
    assert_int_equal(do_logout(e, tok, NULL), AUTHD_OK); /* idempotent */
    free(tok);

    /* by email, any case */
    assert_int_equal(do_login(e, "Dave@EXAMPLE.com", PW, &tok, NULL), AUTHD_OK);
    assert_int_equal(do_verify(e, tok, NULL, NULL), AUTHD_OK);
    free(tok);
}

static void test_login_failures_are_indistinguishable(void **state)
{
    struct env *e = *state;
    struct result unknown, wrong, disabled, badsyntax;
    authd_user u;

    assert_int_equal(do_register(e, "erin", "erin@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(do_register(e, "frank", "frank@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(authd_store_user_find_by_username(e->store, "frank", &u), AUTHD_OK);
    assert_int_equal(authd_store_user_set_status(e->store, u.id, AUTHD_USER_DISABLED, 1), AUTHD_OK);

    assert_int_equal(do_login(e, "nobody", PW, NULL, &unknown), AUTHD_UNAUTHENTICATED);
    assert_int_equal(
        do_login(e, "erin", "the wrong passphrase", NULL, &wrong), AUTHD_UNAUTHENTICATED);
    assert_int_equal(do_login(e, "frank", PW, NULL, &disabled), AUTHD_UNAUTHENTICATED);
    assert_int_equal(do_login(e, "no such user!", PW, NULL, &badsyntax), AUTHD_UNAUTHENTICATED);
    const struct result *all[] = { &unknown, &wrong, &disabled, &badsyntax };
    for (size_t i = 1; i < 4; i++) {
        assert_string_equal(all[i]->reason, all[0]->reason);
        assert_string_equal(all[i]->message, all[0]->message);
        assert_int_equal(all[i]->body_len, 0);
    }
    assert_string_equal(unknown.reason, "INVALID_CREDENTIALS");
}

static void test_verify_expiry_and_disable(void **state)
{
    struct env *e = *state;
    char *tok = NULL, *tok2 = NULL;
    char reason[64];
    authd_user u;

    assert_int_equal(do_register(e, "gina", "gina@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(do_login(e, "gina", PW, &tok, NULL), AUTHD_OK);
    assert_int_equal(do_login(e, "gina", PW, &tok2, NULL), AUTHD_OK);

    atomic_fetch_add(&fake_now, 900 + 30); /* exp + leeway */
    assert_int_equal(do_verify(e, tok, reason, NULL), AUTHD_UNAUTHENTICATED);
    assert_string_equal(reason, "EXPIRED");
    assert_int_equal(do_logout(e, tok, NULL), AUTHD_OK); /* expired: nothing to do */

    /* The sessions outlive their access tokens (a refresh token keeps
     * them going): the purge leaves them until their idle lifetime ends,
     * then removes both. */
    size_t users = 0, sessions = 0;
    authd_service_maintain(e->svc);
    assert_int_equal(authd_store_count(e->store, &users, &sessions), AUTHD_OK);
    assert_int_equal(sessions, 2);
    atomic_fetch_add(&fake_now, AUTHD_SESSION_IDLE_TTL_DEFAULT);
    authd_service_maintain(e->svc);
    assert_int_equal(authd_store_count(e->store, &users, &sessions), AUTHD_OK);
    assert_int_equal(sessions, 0);
    free(tok);
    free(tok2);

    assert_int_equal(do_login(e, "gina", PW, &tok, NULL), AUTHD_OK);
    assert_int_equal(authd_store_user_find_by_username(e->store, "gina", &u), AUTHD_OK);
    assert_int_equal(authd_store_user_set_status(e->store, u.id, AUTHD_USER_DISABLED, 1), AUTHD_OK);
    assert_int_equal(do_verify(e, tok, reason, NULL), AUTHD_UNAUTHENTICATED);
    /* Disabling revokes the user's sessions in the same transaction, and
     * Verify decides REVOKED before it looks at the user's status. */
    assert_string_equal(reason, "REVOKED");
    free(tok);
}

static void test_verify_garbage_token(void **state)
{
    struct env *e = *state;
    char reason[64];
    assert_int_equal(do_verify(e, "", reason, NULL), AUTHD_UNAUTHENTICATED);
    assert_string_equal(reason, "MALFORMED");
    assert_int_equal(do_verify(e, "a.b.c", reason, NULL), AUTHD_UNAUTHENTICATED);
    assert_int_equal(do_logout(e, "a.b.c", reason), AUTHD_UNAUTHENTICATED);
}

static void test_rehash_on_login(void **state)
{
    struct env *e = *state;
    authd_user before, after;
    char *tok = NULL;

    assert_int_equal(do_register(e, "hank", "hank@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(authd_store_user_find_by_username(e->store, "hank", &before), AUTHD_OK);
    /* Restart the service with stronger parameters: the next login upgrades. */
    drop_service(e);
    authd_pwparams stronger = { 2, 128 * 1024 };
    assert_int_equal(make_service(e, stronger, 2, 16), 0);
    assert_int_equal(do_login(e, "hank", PW, &tok, NULL), AUTHD_OK);
    free(tok);
    assert_int_equal(authd_store_user_find_by_username(e->store, "hank", &after), AUTHD_OK);
    assert_string_not_equal(before.password_hash, after.password_hash);
    assert_true(authd_password_needs_rehash(before.password_hash, &stronger));
    assert_false(authd_password_needs_rehash(after.password_hash, &stronger));
    assert_int_equal(after.password_changed_at, before.password_changed_at);
    /* and the old password still works, once */
    assert_int_equal(do_login(e, "hank", PW, &tok, NULL), AUTHD_OK);
    free(tok);
}

static void test_unknown_method_and_bad_bodies(void **state)
{
    struct env *e = *state;
    struct pending *p;
    /* Unknown method, wrong service, prefix only. */
    const char *methods[] = { "/authd.v1.Auth/Nope", "/other.Svc/Verify", "/authd.v1.Auth/", "" };
    for (size_t i = 0; i < 4; i++) {
        p = start_raw(e, methods[i], (const uint8_t *)"", 0);
        wait_done(p);
        assert_int_equal(p->res.code, AUTHD_UNIMPLEMENTED);
        finish(p);
    }
    /* Garbage that is not a protobuf message. */
    const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
    p = start_raw(e, "/authd.v1.Auth/Verify", garbage, sizeof garbage);
    wait_done(p);
    assert_int_equal(p->res.code, AUTHD_INVALID_ARGUMENT);
    finish(p);
    /* RegisterRequest.username = "admin\0x": field 1, length 7. */
    const uint8_t nul[] = { 0x0a, 7, 'a', 'd', 'm', 'i', 'n', 0, 'x' };
    p = start_raw(e, "/authd.v1.Auth/Register", nul, sizeof nul);
    wait_done(p);
    assert_int_equal(p->res.code, AUTHD_INVALID_ARGUMENT);
    assert_string_equal(p->res.reason, "INVALID_ENCODING");
    finish(p);
    /* LoginRequest.login = invalid UTF-8 (overlong '/'). */
    const uint8_t bad8[] = { 0x0a, 3, 'a', 0xc0, 0xaf };
    p = start_raw(e, "/authd.v1.Auth/Login", bad8, sizeof bad8);
    wait_done(p);
    assert_int_equal(p->res.code, AUTHD_INVALID_ARGUMENT);
    assert_string_equal(p->res.reason, "INVALID_ENCODING");
    finish(p);
    /* A length running past the end. */
    const uint8_t trunc[] = { 0x0a, 50, 'a' };
    p = start_raw(e, "/authd.v1.Auth/Verify", trunc, sizeof trunc);
    wait_done(p);
    assert_int_equal(p->res.code, AUTHD_INVALID_ARGUMENT);
    finish(p);
}

/* A job that holds a hashing worker until released. */
struct hold {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    atomic_int started;
};
static void hold_job(void *arg)
{
    struct hold *h = arg;
    atomic_fetch_add(&h->started, 1);
    pthread_mutex_lock(&h->mu);
    while (!h->open)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static void test_overload_is_resource_exhausted(void **state)
{
    struct env *e = *state;
    struct hold h = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };

    drop_service(e);
    assert_int_equal(make_service(e, cheap, 1, 1), 0);
    /* Occupy the one worker, then the one queue slot. */
    assert_int_equal(authd_workpool_submit(e->hash_pool, hold_job, &h), AUTHD_OK);
    for (int i = 0; i < 5000 && atomic_load(&h.started) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&h.started), 1);
    assert_int_equal(authd_workpool_submit(e->hash_pool, hold_job, &h), AUTHD_OK);

    Authd__V1__LoginRequest r = AUTHD__V1__LOGIN_REQUEST__INIT;
    r.login = "anyone";
    r.password = (char *)PW;
    struct pending *p = call(e, "/authd.v1.Auth/Login", &r.base); /* answered at once */
    assert_int_equal(p->res.code, AUTHD_RESOURCE_EXHAUSTED);
    assert_string_equal(p->res.reason, "OVERLOADED");
    finish(p);

    /* Verify is not behind the hashing pool: it still answers. */
    char reason[64];
    assert_int_equal(do_verify(e, "x.y.z", reason, NULL), AUTHD_UNAUTHENTICATED);

    pthread_mutex_lock(&h.mu);
    h.open = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    drop_service(e); /* runs the queued hold_job while h is still alive */
}

/* ---- throttling, client context, per-source limits ---------------------------- */

static const authd_throttle_policy small_policy = {
    .free_attempts = 2,
    .base_delay_ms = 10000,
    .max_delay_ms = 60000,
    .lockout = 5,
    .reset_after_ms = 0,
};

static void restart_with(
    struct env *e, const authd_throttle_policy *tp, const authd_source_limits *l)
{
    drop_service(e);
    if (tp != NULL)
        svc_throttle = *tp;
    if (l != NULL)
        svc_limits = *l;
    assert_int_equal(make_service(e, cheap, 2, 16), 0);
}

static void assert_same_failure(const struct result *a, const struct result *b)
{
    assert_int_equal(a->code, AUTHD_UNAUTHENTICATED);
    assert_int_equal(b->code, AUTHD_UNAUTHENTICATED);
    assert_string_equal(a->reason, b->reason);
    assert_string_equal(a->message, b->message);
    assert_int_equal(b->body_len, 0);
}

/* After the free attempts the right password is refused, with the reply
 * of a wrong one, until the delay has passed; the lockout holds whatever
 * the time until an unlock; username and email count as one account. */
static void test_login_backoff_and_lockout(void **state)
{
    struct env *e = *state;
    struct result wrong, throttled, locked;
    authd_throttle_state ts;
    char *tok = NULL;
    bool found = false;

    restart_with(e, &small_policy, NULL);
    assert_int_equal(do_register(e, "ivan", "ivan@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(
        do_login(e, "ivan", "a wrong passphrase!", NULL, &wrong), AUTHD_UNAUTHENTICATED);
    assert_int_equal(
        do_login(e, "IVAN@example.com", "a wrong passphrase!", NULL, NULL), AUTHD_UNAUTHENTICATED);
    /* Attempt 3 must wait 10 s after attempt 2: the right password fails. */
    assert_int_equal(do_login(e, "ivan", PW, NULL, &throttled), AUTHD_UNAUTHENTICATED);
    assert_same_failure(&wrong, &throttled);
    assert_int_equal(authd_store_login_throttle_get(e->store, AUTHD_LOGIN_USERNAME, "ivan",
                         &small_policy, clock_fn() * 1000, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 2); /* the refused attempt was not counted */
    atomic_fetch_add(&fake_now, 10);
    assert_int_equal(do_login(e, "ivan@example.com", PW, &tok, NULL), AUTHD_OK);
    free(tok);
    assert_int_equal(authd_store_login_throttle_get(
                         e->store, AUTHD_LOGIN_EMAIL, "ivan@example.com", &small_policy, 0, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 0); /* a success clears it */

    /* Five counted failures lock; the right password then fails forever. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(
            do_login(e, "ivan", "a wrong passphrase!", NULL, NULL), AUTHD_UNAUTHENTICATED);
        atomic_fetch_add(&fake_now, 60);
    }
    atomic_fetch_add(&fake_now, 86400 * 30);
    assert_int_equal(do_login(e, "ivan", PW, NULL, &locked), AUTHD_UNAUTHENTICATED);
    assert_same_failure(&wrong, &locked);
    assert_int_equal(
        authd_store_login_unlock(e->store, AUTHD_LOGIN_USERNAME, "ivan", &found, NULL), AUTHD_OK);
    assert_true(found);
    assert_int_equal(do_login(e, "ivan", PW, &tok, NULL), AUTHD_OK);
    free(tok);
}

/* An unknown login is throttled on the same schedule with the same reply;
 * so is text that is neither a username nor an email. */
static void test_unknown_login_throttled_alike(void **state)
{
    struct env *e = *state;
    struct result first, later;
    authd_throttle_state ts;

    restart_with(e, &small_policy, NULL);
    assert_int_equal(do_login(e, "nobody", PW, NULL, &first), AUTHD_UNAUTHENTICATED);
    for (int i = 0; i < 3; i++)
        assert_int_equal(do_login(e, "NoBody", PW, NULL, &later), AUTHD_UNAUTHENTICATED);
    assert_same_failure(&first, &later);
    assert_int_equal(authd_store_login_throttle_get(
                         e->store, AUTHD_LOGIN_USERNAME, "nobody", &small_policy, 0, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(do_login(e, "no such user!", PW, NULL, NULL), AUTHD_UNAUTHENTICATED);
    assert_int_equal(authd_store_login_throttle_get(
                         e->store, AUTHD_LOGIN_OTHER, "no such user!", &small_policy, 0, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 2);
}

/* Finding 12: a user disabled between the password check and the commit
 * gets exactly the reply of a wrong password. The hashing pool is held
 * while the login's first step (count + decide) runs, the user is disabled
 * through the store, then the hash goes ahead and passes: only the
 * commit's re-check can refuse it. */
static void test_disabled_before_commit_same_reply(void **state)
{
    struct env *e = *state;
    struct hold h = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };
    struct result wrong;
    authd_throttle_state ts = { 0 };
    authd_user u;

    drop_service(e);
    assert_int_equal(make_service(e, cheap, 1, 16), 0);
    assert_int_equal(do_register(e, "judy", "judy@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(
        do_login(e, "judy", "a wrong passphrase!", NULL, &wrong), AUTHD_UNAUTHENTICATED);
    assert_int_equal(authd_store_user_find_by_username(e->store, "judy", &u), AUTHD_OK);
    assert_int_equal(authd_store_user_unlock(e->store, u.id), AUTHD_OK); /* count from 0 */

    assert_int_equal(authd_workpool_submit(e->hash_pool, hold_job, &h), AUTHD_OK);
    Authd__V1__LoginRequest r = AUTHD__V1__LOGIN_REQUEST__INIT;
    r.login = "judy";
    r.password = (char *)PW;
    struct pending *p = start(e, "/authd.v1.Auth/Login", &r.base);
    for (int i = 0; i < 10000 && ts.failures == 0; i++) {
        assert_int_equal(authd_store_login_throttle_get(e->store, AUTHD_LOGIN_USERNAME, "judy",
                             &(authd_throttle_policy)AUTHD_THROTTLE_DEFAULTS, 0, &ts),
            AUTHD_OK);
        if (ts.failures == 0)
            usleep(1000);
    }
    assert_int_equal(ts.failures, 1); /* counted and allowed: now waiting for the hash */
    assert_int_equal(authd_store_user_set_status(e->store, u.id, AUTHD_USER_DISABLED, 1), AUTHD_OK);
    pthread_mutex_lock(&h.mu);
    h.open = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    wait_done(p);
    assert_same_failure(&wrong, &p->res);
    finish(p);
    size_t users = 0, sessions = 9;
    assert_int_equal(authd_store_count(e->store, &users, &sessions), AUTHD_OK);
    assert_int_equal(sessions, 0);
}

static void set_client(Authd__V1__ClientContext *cc, const char *ip, const char *ua)
{
    authd__v1__client_context__init(cc);
    cc->ip_address = (char *)ip;
    cc->user_agent = (char *)ua;
}

static authd_code login_from(
    struct env *e, const char *login, const char *pw, const char *ip, char *reason_out)
{
    Authd__V1__LoginRequest r = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__ClientContext cc;
    set_client(&cc, ip, "Mozilla/5.0 (test)");
    r.login = (char *)login;
    r.password = (char *)pw;
    r.client = &cc;
    struct pending *p = call(e, "/authd.v1.Auth/Login", &r.base);
    authd_code c = p->res.code;
    if (reason_out != NULL)
        strcpy(reason_out, p->res.reason);
    finish(p);
    return c;
}

/* The context is validated from any caller: an address that does not
 * parse, a control character or an over-long user agent is refused. */
static void test_client_context_validated(void **state)
{
    struct env *e = *state;
    static char long_ua[300];
    const char *bad[][2] = {
        { "203.0.113.7:443", "ok" },
        { "example.com", "ok" },
        { "203.0.113.7", "line\nbreak" },
        { "203.0.113.7", "esc\x1b[31m" },
        { "203.0.113.7", "c1\xc2\x85" },
        { "203.0.113.7", long_ua },
    };
    memset(long_ua, 'a', 257);
    for (int trusted = 0; trusted < 2; trusted++) {
        next_trusted = trusted;
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            Authd__V1__LoginRequest r = AUTHD__V1__LOGIN_REQUEST__INIT;
            Authd__V1__ClientContext cc;
            set_client(&cc, bad[i][0], bad[i][1]);
            r.login = "someone";
            r.password = (char *)PW;
            r.client = &cc;
            struct pending *p = call(e, "/authd.v1.Auth/Login", &r.base);
            assert_int_equal(p->res.code, AUTHD_INVALID_ARGUMENT);
            assert_string_equal(p->res.reason, "INVALID_CLIENT_CONTEXT");
            finish(p);
        }
    }
    long_ua[256] = '\0';
    char reason[64];
    assert_int_equal(login_from(e, "someone", PW, "2001:db8::1", reason), AUTHD_UNAUTHENTICATED);
    Authd__V1__RegisterRequest rr = AUTHD__V1__REGISTER_REQUEST__INIT;
    Authd__V1__ClientContext cc;
    set_client(&cc, "203.0.113.7", long_ua);
    rr.username = "kim";
    rr.email = "kim@example.com";
    rr.password = (char *)PW;
    rr.client = &cc;
    struct pending *p = call(e, "/authd.v1.Auth/Register", &rr.base);
    assert_int_equal(p->res.code, AUTHD_OK);
    finish(p);
}

/* Failed logins per end-user address (from a trusted front-end, IPv6 by
 * /64) and per caller: over the limit RATE_LIMITED, before any work; other
 * addresses go on. The caller's limit refuses only calls without a
 * trusted end-user address. An untrusted caller's context is not
 * believed. */
static void test_per_source_login_limits(void **state)
{
    struct env *e = *state;
    authd_source_limits l = { .source_login_failures = 3, .caller_login_failures = 8 };
    char reason[64];
    char *tok = NULL;

    restart_with(e, NULL, &l);
    assert_int_equal(do_register(e, "leo", "leo@example.com", PW, NULL), AUTHD_OK);
    next_trusted = true;
    for (int i = 0; i < 3; i++)
        assert_int_equal(login_from(e, "leo", "a wrong passphrase!", "2001:db8:1:2::1", reason),
            AUTHD_UNAUTHENTICATED);
    /* Same /64, other interface id: the same source. */
    assert_int_equal(
        login_from(e, "leo", PW, "2001:db8:1:2:ffff::9", reason), AUTHD_RESOURCE_EXHAUSTED);
    assert_string_equal(reason, "RATE_LIMITED");
    assert_int_equal(login_from(e, "leo", PW, "2001:db8:1:3::1", reason), AUTHD_OK);

    /* The caller's own limit (8 failures, 3 spent) is counted for every
     * address, but with a trusted end-user address it refuses nobody: the
     * address's limit decides, or a front-end's end users, each under
     * their own limit, would empty the front-end's bucket and block every
     * login through it (red team: the gateway kill switch). */
    for (int i = 0; i < 9; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "198.51.100.%d", i + 1);
        assert_int_equal(login_from(e, "nobody", PW, ip, reason), AUTHD_UNAUTHENTICATED);
    }
    assert_int_equal(login_from(e, "leo", PW, "198.51.100.200", reason), AUTHD_OK);
    /* Another caller is not affected. */
    next_source.key[15] = 1;
    assert_int_equal(do_login(e, "leo", PW, &tok, NULL), AUTHD_OK);
    free(tok);

    /* Untrusted: the claimed address is ignored, the caller's limit applies. */
    next_trusted = false;
    next_source.key[15] = 2;
    for (int i = 0; i < 8; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "192.0.2.%d", i + 1);
        assert_int_equal(login_from(e, "nobody", PW, ip, reason), AUTHD_UNAUTHENTICATED);
    }
    assert_int_equal(login_from(e, "leo", PW, "192.0.2.99", reason), AUTHD_RESOURCE_EXHAUSTED);

    /* A certified caller's limit follows its identity, not its address: the
     * same service from another host shares it, another service does not. */
    snprintf(next_caller, sizeof next_caller, "spiffe://test/billing");
    next_source.key[15] = 3;
    for (int i = 0; i < 8; i++)
        assert_int_equal(login_from(e, "nobody", PW, "192.0.2.1", reason), AUTHD_UNAUTHENTICATED);
    next_source.key[15] = 4;
    assert_int_equal(login_from(e, "leo", PW, "192.0.2.1", reason), AUTHD_RESOURCE_EXHAUSTED);
    assert_string_equal(reason, "RATE_LIMITED");
    snprintf(next_caller, sizeof next_caller, "spiffe://test/gateway");
    assert_int_equal(login_from(e, "leo", PW, "192.0.2.1", reason), AUTHD_OK);
}

/* Register attempts (not only failures) are limited per caller and per
 * end-user address: EMAIL_TAKEN answers count too. */
static void test_per_source_register_limits(void **state)
{
    struct env *e = *state;
    authd_source_limits l = { .caller_registrations = 3 };
    char reason[64];

    restart_with(e, NULL, &l);
    assert_int_equal(do_register(e, "mia", "mia@example.com", PW, NULL), AUTHD_OK);
    assert_int_equal(do_register(e, "mia2", "mia@example.com", PW, reason), AUTHD_ALREADY_EXISTS);
    assert_string_equal(reason, "EMAIL_TAKEN");
    assert_int_equal(do_register(e, "mia3", "mia@example.com", PW, reason), AUTHD_ALREADY_EXISTS);
    assert_int_equal(
        do_register(e, "mia4", "mia@example.com", PW, reason), AUTHD_RESOURCE_EXHAUSTED);
    assert_string_equal(reason, "RATE_LIMITED");
    next_source.key[15] = 7;
    assert_int_equal(do_register(e, "nina", "nina@example.com", PW, NULL), AUTHD_OK);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    authd_log_setup(AUTHD_LOG_OFF, 2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_returns_profile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_verify_logout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_failures_are_indistinguishable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_expiry_and_disable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_garbage_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rehash_on_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_method_and_bad_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overload_is_resource_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_backoff_and_lockout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_login_throttled_alike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disabled_before_commit_same_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_context_validated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_source_login_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_source_register_limits, setup, teardown),
    };
    return cmocka_run_group_tests_name("service", tests, NULL, NULL);
}
