/*
 * service.c — the handlers of authd.v1.Auth: Register, Login, Logout, Verify.
 *
 * Each handler validates its input on the calling thread, then either
 * answers at once (Verify, every validation failure) or hands the slow part
 * to a pool: argon2id work (Register, Login) to the hashing pool, the store
 * write of Logout to the write pool. The pools' queues are bounded; when one
 * is full the call is answered RESOURCE_EXHAUSTED rather than queued.
 *
 * Login answers every failure (unknown user, wrong password, disabled user)
 * with the same status, reason and message, after the same work: one argon2
 * verify, against a dummy hash when the user does not exist; and no earlier
 * than the failure-time floor after receipt (the reply waits on the timer,
 * not on a hashing thread), so a stored hash with cheaper parameters than
 * the dummy's does not answer sooner.
 *
 * Hashing jobs are charged to the caller's source and connection
 * (authd_workpool_submit_fair), so one caller cannot fill the queue.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "log.h"
#include "strength.h"
#include "validate.h"

#define LOGIN_MAX          254
#define PASSWORD_BYTES_MAX (AUTHD_PASSWORD_MAX * 4)

#define FLOOR_SAMPLES 2 /* dummy-hash verifies timed at start-up */
#define FLOOR_MARGIN  2 /* floor = FLOOR_MARGIN x the slowest of them */

struct authd_service {
    authd_service_options o;
    char dummy_hash[AUTHD_HASH_MAX];
    uint64_t fail_floor_ns;
};

static int64_t now_s(const authd_service *svc)
{
    return svc->o.clock != NULL ? svc->o.clock() : (int64_t)time(NULL);
}

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* wipe_str zeroes a secret held in an unpacked request before it is freed. */
static void wipe_str(char *s)
{
    if (s != NULL)
        sodium_memzero(s, strlen(s));
}

/* fail_store answers a call whose store operation failed unexpectedly. */
static void fail_store(authd_call *call, authd_code rc)
{
    if (rc == AUTHD_RESOURCE_EXHAUSTED)
        authd_call_finish(call, rc, "STORE_FULL", "storage is full; try again later", NULL);
    else
        authd_call_finish(call, AUTHD_INTERNAL, "INTERNAL", "", NULL);
}

/* hash_owner: whom a hashing job is charged to (its share in the pool). */
static authd_workpool_owner hash_owner(const authd_call *call)
{
    authd_workpool_owner w = { call->req->source, call->req->conn_id };
    return w;
}

/* fail_busy answers a call whose pool refused the job. */
static void fail_busy(authd_call *call, authd_code rc)
{
    if (rc == AUTHD_UNAVAILABLE)
        authd_call_finish(call, rc, "SHUTTING_DOWN", "server is shutting down", NULL);
    else
        authd_call_finish(
            call, AUTHD_RESOURCE_EXHAUSTED, "OVERLOADED", "server is busy; retry later", NULL);
}

/* user_view fills the public profile message from a record. The strings
 * point into u and idhex/roles, which must outlive the message. */
static void user_view(Authd__V1__User *pu, const authd_user *u, char idhex[AUTHD_ID_HEX + 1],
    char *roles[AUTHD_ROLES_MAX])
{
    authd__v1__user__init(pu);
    to_hex(u->id, AUTHD_ID_BYTES, idhex);
    pu->id = idhex;
    pu->username = (char *)u->username;
    pu->email = (char *)u->email;
    for (uint32_t i = 0; i < u->n_roles && i < AUTHD_ROLES_MAX; i++)
        roles[i] = (char *)u->roles[i];
    pu->n_roles = u->n_roles;
    pu->roles = roles;
    pu->status = u->status == AUTHD_USER_ACTIVE ? AUTHD__V1__USER_STATUS__USER_STATUS_ACTIVE
                                                : AUTHD__V1__USER_STATUS__USER_STATUS_DISABLED;
    pu->created_at = u->created_at;
    pu->updated_at = u->updated_at;
}

/* ---- Register --------------------------------------------------------- */

struct register_job {
    authd_call *call;
    authd_user user;
};

static void register_commit_work(void *arg);

static void register_job_free(struct register_job *job)
{
    sodium_memzero(job->user.password_hash, sizeof job->user.password_hash);
    free(job);
}

/* register_work (hashing pool): the hash only; the user is stored from the
 * write pool (register_commit_work), as for Login, so a hashing thread
 * never waits for an fsync. */
static void register_work(void *arg)
{
    struct register_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    Authd__V1__RegisterRequest *in = (Authd__V1__RegisterRequest *)call->input;
    authd_error err;
    authd_code rc;

    /* Strength here, not on the loop: zxcvbn takes up to ~12 ms on a long
     * repetitive password (strength.h). */
    rc = authd_password_strong_enough(
        in->password, job->user.username, job->user.email, svc->o.password_min_bits, &err);
    if (rc != AUTHD_OK) {
        wipe_str(in->password);
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        register_job_free(job);
        return;
    }
    rc = authd_password_hash(
        in->password, strlen(in->password), &svc->o.pwparams, job->user.password_hash);
    wipe_str(in->password);
    if (rc == AUTHD_OK)
        rc = authd_workpool_submit(svc->o.write_pool, register_commit_work, job);
    if (rc != AUTHD_OK) {
        fail_busy(call, rc);
        register_job_free(job);
    }
}

/* register_commit_work (write pool): store the user, answer. */
static void register_commit_work(void *arg)
{
    struct register_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    authd_user *u = &job->user;
    const char *conflict = NULL;
    authd_code rc;

    randombytes_buf(u->id, sizeof u->id);
    u->status = AUTHD_USER_ACTIVE;
    u->created_at = u->updated_at = u->password_changed_at = now_s(svc);
    rc = authd_store_user_create(svc->o.store, u, &conflict);
    if (rc == AUTHD_ALREADY_EXISTS && conflict != NULL && strcmp(conflict, "email") == 0) {
        authd_call_finish(call, rc, "EMAIL_TAKEN", "email: is already registered", NULL);
        goto out;
    }
    if (rc == AUTHD_ALREADY_EXISTS) {
        authd_call_finish(call, rc, "USERNAME_TAKEN", "username: is already taken", NULL);
        goto out;
    }
    if (rc != AUTHD_OK) {
        fail_store(call, rc);
        goto out;
    }

    memcpy(call->user_id, u->id, sizeof u->id);
    call->has_user = true;
    authd_call_audit(call, "register");
    authd_call_log_str(call, "username", u->username);

    Authd__V1__RegisterResponse resp = AUTHD__V1__REGISTER_RESPONSE__INIT;
    Authd__V1__User pu;
    char idhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];
    user_view(&pu, u, idhex, roles);
    resp.user = &pu;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
out:
    register_job_free(job);
}

void authd_handle_register(authd_service *svc, authd_call *call)
{
    Authd__V1__RegisterRequest *in = (Authd__V1__RegisterRequest *)call->input;
    struct register_job *job = NULL;
    authd_error err;
    authd_code rc;

    if ((job = calloc(1, sizeof *job)) == NULL) {
        wipe_str(in->password);
        fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    if ((rc = authd_validate_username(in->username, strlen(in->username), job->user.username, &err))
            != AUTHD_OK
        || (rc = authd_validate_email(in->email, strlen(in->email), job->user.email, &err))
            != AUTHD_OK
        || (rc = authd_validate_password(in->password, strlen(in->password), &err)) != AUTHD_OK) {
        wipe_str(in->password);
        free(job);
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        return;
    }
    authd_workpool_owner w = hash_owner(call);
    if ((rc = authd_workpool_submit_fair(svc->o.hash_pool, &w, register_work, job)) != AUTHD_OK) {
        wipe_str(in->password);
        free(job);
        fail_busy(call, rc);
    }
}

/* ---- Login ---------------------------------------------------------------- */

static const char invalid_credentials[] = "invalid login or password";

/* find_login resolves what the caller typed to a user: an address with '@'
 * is looked up as an email, anything else as a username, both in their
 * canonical forms. Text that is neither cannot name a user: NOT_FOUND. */
static authd_code find_login(authd_store *st, const char *login, authd_user *u)
{
    char canon[AUTHD_EMAIL_MAX + 1];
    authd_error err;
    size_t len = strlen(login);

    if (memchr(login, '@', len) != NULL) {
        if (authd_validate_email(login, len, canon, &err) != AUTHD_OK)
            return AUTHD_NOT_FOUND;
        return authd_store_user_find_by_email(st, canon, u);
    }
    if (authd_validate_username(login, len, canon, &err) != AUTHD_OK)
        return AUTHD_NOT_FOUND;
    return authd_store_user_find_by_username(st, canon, u);
}

/* login_failed_reply (timer thread, or at once): the one answer of every
 * failed Login. */
static void login_failed_reply(void *arg)
{
    authd_call_finish(
        (authd_call *)arg, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS", invalid_credentials, NULL);
}

/* login_failed logs why a Login failed and answers it, no earlier than the
 * floor after receipt: the reply is parked on the timer, so the thread that
 * found the failure goes on at once. */
static void login_failed(authd_call *call, const authd_user *u, const char *why)
{
    authd_service *svc = call->svc;

    authd_call_audit(call, "login_failure");
    if (u != NULL) {
        memcpy(call->user_id, u->id, sizeof u->id);
        call->has_user = true;
    }
    authd_call_log_str(call, "cause", why);
    uint64_t due = call->req->start_ns + svc->fail_floor_ns;
    if (svc->o.timer != NULL && svc->fail_floor_ns > 0 && due > authd_monotonic_ns())
        authd_timer_at(svc->o.timer, due, login_failed_reply, call);
    else
        login_failed_reply(call);
}

/* A login whose password matched, on its way from the hashing pool to the
 * write pool. */
struct login_job {
    authd_call *call;
    authd_user u;
    bool rehash;
    char new_hash[AUTHD_HASH_MAX];
};

static void login_job_free(struct login_job *job)
{
    sodium_memzero(job, sizeof *job);
    free(job);
}

static void login_commit_work(void *arg);

/*
 * login_work (hashing pool): the password check and nothing else, so the
 * hashing threads spend their time hashing; the session is written from
 * the write pool (login_commit_work), whose fsync would otherwise keep a
 * hashing thread idle.
 */
static void login_work(void *arg)
{
    authd_call *call = arg;
    authd_service *svc = call->svc;
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)call->input;
    struct login_job *job = calloc(1, sizeof *job);
    authd_code rc;

    if (job == NULL) {
        wipe_str(in->password);
        fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    rc = find_login(svc->o.store, in->login, &job->u);
    if (rc != AUTHD_OK && rc != AUTHD_NOT_FOUND) {
        wipe_str(in->password);
        fail_store(call, rc);
        login_job_free(job);
        return;
    }
    bool found = rc == AUTHD_OK;
    bool match = authd_password_verify(
        found ? job->u.password_hash : svc->dummy_hash, in->password, strlen(in->password));
    if (!found || !match || job->u.status != AUTHD_USER_ACTIVE) {
        wipe_str(in->password);
        login_failed(call, found ? &job->u : NULL,
            !found       ? "unknown_user"
                : !match ? "wrong_password"
                         : "user_disabled");
        login_job_free(job);
        return;
    }
    authd_pwparams np; /* only ever stronger than the stored hash (finding 10) */
    if (authd_password_rehash_params(job->u.password_hash, &svc->o.pwparams, &np))
        job->rehash = authd_password_hash(in->password, strlen(in->password), &np, job->new_hash)
            == AUTHD_OK;
    wipe_str(in->password);
    if ((rc = authd_workpool_submit(svc->o.write_pool, login_commit_work, job)) != AUTHD_OK) {
        fail_busy(call, rc);
        login_job_free(job);
    }
}

/* login_commit_work (write pool): the session, the token, the reply. */
static void login_commit_work(void *arg)
{
    struct login_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    authd_user u = job->u;
    authd_session s;
    bool rehash = job->rehash;
    char token[AUTHD_TOKEN_MAX];
    authd_code rc;

    int64_t now = now_s(svc);
    memset(&s, 0, sizeof s);
    randombytes_buf(s.id, sizeof s.id);
    memcpy(s.user_id, u.id, sizeof u.id);
    s.created_at = now;
    s.expires_at = now + svc->o.token_ttl;
    rc = authd_store_login_commit(svc->o.store, u.id, rehash ? job->new_hash : NULL, &s, now);
    if (rc == AUTHD_FAILED_PRECONDITION || rc == AUTHD_NOT_FOUND) {
        login_failed(call, &u, "user_disabled");
        goto out;
    }
    if (rc != AUTHD_OK) {
        fail_store(call, rc);
        goto out;
    }

    authd_claims c;
    memcpy(c.sub, u.id, sizeof c.sub);
    memcpy(c.sid, s.id, sizeof c.sid);
    c.iat = c.nbf = now;
    c.exp = s.expires_at;
    if (authd_token_issue(svc->o.tokens, &c, token, sizeof token) != AUTHD_OK) {
        authd_call_finish(call, AUTHD_INTERNAL, "INTERNAL", "", NULL);
        goto out;
    }

    memcpy(call->user_id, u.id, sizeof u.id);
    call->has_user = true;
    char sidhex[AUTHD_ID_HEX + 1];
    to_hex(s.id, sizeof s.id, sidhex);
    authd_call_audit(call, "login_success");
    authd_call_log_str(call, "session_id", sidhex);
    authd_call_log_bool(call, "rehashed", rehash);

    Authd__V1__LoginResponse resp = AUTHD__V1__LOGIN_RESPONSE__INIT;
    Authd__V1__User pu;
    char idhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];
    user_view(&pu, &u, idhex, roles);
    resp.access_token = token;
    resp.token_type = "Bearer";
    resp.expires_at = c.exp;
    resp.session_id = sidhex;
    resp.user = &pu;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
out:
    login_job_free(job);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    sodium_memzero(token, sizeof token);
}

void authd_handle_login(authd_service *svc, authd_call *call)
{
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)call->input;
    size_t llen = strlen(in->login), plen = strlen(in->password);
    authd_code rc;

    if (llen == 0 || llen > LOGIN_MAX) {
        wipe_str(in->password);
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_LOGIN",
            "login: must be a username or an email address of 1 to 254 bytes", NULL);
        return;
    }
    if (plen == 0 || plen > PASSWORD_BYTES_MAX) {
        wipe_str(in->password);
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_PASSWORD",
            "password: must be 1 to 128 characters", NULL);
        return;
    }
    authd_workpool_owner w = hash_owner(call);
    if ((rc = authd_workpool_submit_fair(svc->o.hash_pool, &w, login_work, call)) != AUTHD_OK) {
        wipe_str(in->password);
        fail_busy(call, rc);
    }
}

/* ---- Verify and Logout ------------------------------------------------------ */

static const char *token_message(authd_token_result tr)
{
    switch (tr) {
    case AUTHD_TOKEN_MALFORMED:
        return "token is malformed";
    case AUTHD_TOKEN_BAD_SIGNATURE:
        return "token signature is invalid";
    case AUTHD_TOKEN_INVALID_CLAIMS:
        return "token claims are invalid";
    case AUTHD_TOKEN_EXPIRED:
        return "token has expired";
    case AUTHD_TOKEN_NOT_YET_VALID:
        return "token is not yet valid";
    case AUTHD_TOKEN_OK:
        break;
    }
    return "";
}

/* token_failed answers UNAUTHENTICATED with reason, its line marked as the
 * audit event event; the token appears in it only as its fingerprint,
 * computed only when the line will be written. */
static void token_failed(
    authd_call *call, const char *token, const char *event, const char *reason, const char *message)
{
    char fp[AUTHD_FINGERPRINT_LEN + 1];

    authd_call_audit(call, event);
    if (authd_call_log_wanted(call)) {
        authd_token_fingerprint(token, strlen(token), fp);
        authd_call_log_str(call, "token_fp", fp);
    }
    authd_call_finish(call, AUTHD_UNAUTHENTICATED, reason, message, NULL);
}

void authd_handle_verify(authd_service *svc, authd_call *call)
{
    Authd__V1__VerifyRequest *in = (Authd__V1__VerifyRequest *)call->input;
    const char *tok = in->access_token;
    int64_t now = now_s(svc);
    authd_claims c;
    authd_session s;
    authd_user u;

    authd_token_result tr = authd_token_verify(svc->o.tokens, tok, strlen(tok), now, &c);
    if (tr != AUTHD_TOKEN_OK) {
        token_failed(call, tok, "verify_failure", authd_token_result_reason(tr), token_message(tr));
        return;
    }
    memcpy(call->user_id, c.sub, sizeof c.sub);
    call->has_user = true;
    authd_code rc = authd_store_verify_lookup(svc->o.store, c.sid, &s, &u);
    if (rc == AUTHD_NOT_FOUND
        || (rc == AUTHD_OK && (s.revoked || sodium_memcmp(s.user_id, c.sub, sizeof c.sub) != 0))) {
        token_failed(call, tok, "verify_failure", "REVOKED", "session has been revoked");
        return;
    }
    if (rc != AUTHD_OK) {
        fail_store(call, rc);
        return;
    }
    if (s.expires_at <= now) {
        token_failed(call, tok, "verify_failure", "EXPIRED", "token has expired");
        return;
    }
    if (u.status != AUTHD_USER_ACTIVE) {
        token_failed(call, tok, "verify_failure", "USER_DISABLED", "user is disabled");
        return;
    }

    Authd__V1__VerifyResponse resp = AUTHD__V1__VERIFY_RESPONSE__INIT;
    char uidhex[AUTHD_ID_HEX + 1], sidhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];
    to_hex(u.id, sizeof u.id, uidhex);
    to_hex(s.id, sizeof s.id, sidhex);
    for (uint32_t i = 0; i < u.n_roles && i < AUTHD_ROLES_MAX; i++)
        roles[i] = u.roles[i];
    resp.user_id = uidhex;
    resp.username = u.username;
    resp.n_roles = u.n_roles;
    resp.roles = roles;
    resp.session_id = sidhex;
    resp.expires_at = c.exp;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
}

struct logout_job {
    authd_call *call;
    uint8_t sid[AUTHD_ID_BYTES];
};

static void logout_work(void *arg)
{
    struct logout_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    char sidhex[AUTHD_ID_HEX + 1];

    to_hex(job->sid, sizeof job->sid, sidhex);
    authd_code rc = authd_store_session_revoke(svc->o.store, job->sid, now_s(svc));
    free(job);
    if (rc != AUTHD_OK && rc != AUTHD_NOT_FOUND) { /* NOT_FOUND: purged, so dead */
        fail_store(call, rc);
        return;
    }
    authd_call_audit(call, "logout");
    authd_call_log_str(call, "session_id", sidhex);
    Authd__V1__LogoutResponse resp = AUTHD__V1__LOGOUT_RESPONSE__INIT;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
}

/*
 * authd_handle_logout: the token must be authd's own (signature and claims
 * check out) for its session to be revoked. An expired token's session is
 * already dead, so logging it out succeeds without a write; logging out a
 * revoked session succeeds too (Logout is idempotent).
 */
void authd_handle_logout(authd_service *svc, authd_call *call)
{
    Authd__V1__LogoutRequest *in = (Authd__V1__LogoutRequest *)call->input;
    const char *tok = in->access_token;
    struct logout_job *job = NULL;
    authd_claims c;
    authd_code rc;

    authd_token_result tr = authd_token_verify(svc->o.tokens, tok, strlen(tok), now_s(svc), &c);
    if (tr == AUTHD_TOKEN_EXPIRED) {
        Authd__V1__LogoutResponse resp = AUTHD__V1__LOGOUT_RESPONSE__INIT;
        authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
        return;
    }
    if (tr != AUTHD_TOKEN_OK) {
        token_failed(call, tok, "logout_failure", authd_token_result_reason(tr), token_message(tr));
        return;
    }
    memcpy(call->user_id, c.sub, sizeof c.sub);
    call->has_user = true;
    if ((job = calloc(1, sizeof *job)) == NULL) {
        fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    memcpy(job->sid, c.sid, sizeof c.sid);
    if ((rc = authd_workpool_submit(svc->o.write_pool, logout_work, job)) != AUTHD_OK) {
        free(job);
        fail_busy(call, rc);
    }
}

/* ---- life cycle --------------------------------------------------------------- */

/*
 * measure_floor times FLOOR_SAMPLES verifies of a wrong password against
 * the dummy hash and returns FLOOR_MARGIN x the slowest: the work of a
 * failed Login with today's parameters, with room for a busy machine (two
 * hashes at once run slower than one each). A failure answered at this
 * floor looks the same whatever its cause. Few samples, because each
 * costs a hash time at start-up (seconds with large parameters on a loaded
 * machine); the margin, not the sample count, covers the noise.
 */
static uint64_t measure_floor(const authd_service *svc, uint64_t *slowest)
{
    static const char wrong[] = "not the dummy password";
    uint64_t max = 0;

    for (int i = 0; i < FLOOR_SAMPLES; i++) {
        uint64_t t0 = authd_monotonic_ns();
        bool ok = authd_password_verify(svc->dummy_hash, wrong, sizeof wrong - 1);
        uint64_t dt = authd_monotonic_ns() - t0;
        (void)ok;
        if (dt > max)
            max = dt;
    }
    *slowest = max;
    return FLOOR_MARGIN * max;
}

authd_code authd_service_create(const authd_service_options *o, authd_service **out)
{
    authd_service *svc = NULL;
    unsigned char junk[32];
    authd_code rc;

    if (o->store == NULL || o->tokens == NULL || o->hash_pool == NULL || o->write_pool == NULL
        || o->token_ttl <= 0)
        return AUTHD_INVALID_ARGUMENT;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if ((rc = authd_pwparams_check(&o->pwparams)) != AUTHD_OK)
        return rc;
    if ((svc = calloc(1, sizeof *svc)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    svc->o = *o;
    /* The dummy hash: made with the current parameters from a random
     * password nobody knows, so an unknown-user login costs what a real one
     * does and can never succeed. */
    randombytes_buf(junk, sizeof junk);
    rc = authd_password_hash((const char *)junk, sizeof junk, &o->pwparams, svc->dummy_hash);
    sodium_memzero(junk, sizeof junk);
    if (rc != AUTHD_OK) {
        free(svc);
        return rc;
    }
    if (o->timer != NULL) {
        uint64_t slowest = 0;
        svc->fail_floor_ns = o->fail_floor_ns > 0 ? o->fail_floor_ns : measure_floor(svc, &slowest);
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "login_fail_floor")) {
            authd_log_u64(&r, "floor_us", svc->fail_floor_ns / 1000);
            authd_log_bool(&r, "measured", o->fail_floor_ns == 0);
            if (o->fail_floor_ns == 0)
                authd_log_u64(&r, "slowest_verify_us", slowest / 1000);
            authd_log_end(&r);
        }
    }
    *out = svc;
    return AUTHD_OK;
}

void authd_service_destroy(authd_service *svc)
{
    free(svc);
}

uint64_t authd_service_fail_floor_ns(const authd_service *svc)
{
    return svc->fail_floor_ns;
}

void authd_service_maintain(authd_service *svc)
{
    size_t total = 0, n = 0;
    const size_t batch = 1000;
    authd_code rc;

    do {
        rc = authd_store_purge_expired(svc->o.store, now_s(svc), batch, &n);
        if (rc == AUTHD_OK)
            total += n;
    } while (rc == AUTHD_OK && n == batch);
    if (total > 0) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "sessions_purged")) {
            authd_log_u64(&r, "count", total);
            authd_log_end(&r);
        }
    }
}
