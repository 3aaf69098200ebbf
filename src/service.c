/*
 * service.c — the handlers of authd.v1.Auth: Register, Login, Logout, Verify
 * (Refresh: rpc_refresh.c), and what the handler files share (rpc_common.h).
 *
 * Each handler validates its input on the calling thread, then either
 * answers at once (Verify, every validation failure) or hands the slow part
 * to a pool: argon2id work (Register, Login) to the hashing pool, the store
 * write of Logout to the write pool. The pools' queues are bounded; when one
 * is full the call is answered RESOURCE_EXHAUSTED rather than queued.
 *
 * Login answers every failure (unknown user, wrong password, disabled user,
 * throttled or locked account) with the same status, reason and message.
 * Every login that is allowed costs the same work: one argon2 verify,
 * against a dummy hash when the user does not exist. A Login runs in three
 * steps: on the write pool the store resolves the login, counts the attempt
 * and decides (authd_store_login_begin: one write transaction, before any
 * hash); on the hashing pool the password is checked, only if allowed; on
 * the write pool a success becomes a session (and clears the counter).
 *
 * Per-source limits (in memory, bounded: ratelimit.h) stand in front of
 * both Login and Register: failed logins and registration attempts per end
 * user's address (from a trusted front-end's ClientContext) and per
 * calling service. Over a limit the call is answered RESOURCE_EXHAUSTED /
 * RATE_LIMITED before any store access or hashing; with a trusted end-user
 * address only that address's limit refuses (over_limit). A Login's token
 * is taken when it starts and given back when it succeeds. Every failed
 * Login's line names what was tried as login_hash (log_login_hash).
 *
 * Every failed Login is answered no earlier than the failure-time floor
 * after receipt (the reply waits on the timer, not on a hashing thread),
 * so a stored hash with cheaper parameters than the dummy's, or a
 * throttled attempt that skips the hash, does not answer sooner. Hashing
 * jobs are charged to the caller's source and connection
 * (authd_workpool_submit_fair), so one caller cannot fill the queue.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "rpc_common.h"
#include "rpc_refresh.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "strength.h"
#include "token_cache.h"
#include "validate.h"
#include "writebatch.h"

#define LOGIN_MAX          AUTHD_LOGIN_MAX
#define PASSWORD_BYTES_MAX (AUTHD_PASSWORD_MAX * 4)
#define CLIENT_IP_MAX      45 /* INET6_ADDRSTRLEN - 1 */
#define USER_AGENT_MAX     256

/* The per-source limit tables, one per (what is counted, who). */
enum { LIM_SOURCE_LOGIN, LIM_CALLER_LOGIN, LIM_SOURCE_REGISTER, LIM_CALLER_REGISTER, LIM_N };

#define FLOOR_SAMPLES 2 /* dummy-hash verifies timed at start-up */
#define FLOOR_MARGIN  2 /* floor = FLOOR_MARGIN x the slowest of them */

struct authd_service {
    authd_service_options o;
    char dummy_hash[AUTHD_HASH_MAX];
    uint64_t fail_floor_ns;
    authd_ratelimit *lim[LIM_N]; /* NULL: that limit is off */
    authd_lograte lim_log[LIM_N]; /* a bite is logged at most every LIM_LOG_NS */
};

#define LIM_LOG_NS (10 * UINT64_C(1000000000))

static const char *const lim_names[LIM_N] = { "source_login_failures", "caller_login_failures",
    "source_registrations", "caller_registrations" };

/* The calling loop's verified-token cache (authd_service_thread_start);
 * NULL on every other thread, and with the cache off. */
static _Thread_local authd_token_cache *tl_verify_cache;

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

/* hash_owner: whom a pool job is charged to (its share in the pool). */
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

static int64_t now_ms(const authd_service *svc)
{
    if (svc->o.clock != NULL)
        return svc->o.clock() * 1000;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* printable_ua is true for UTF-8 text without C0 or C1 control characters
 * or DEL (a user agent is logged; it must not carry line breaks or
 * terminal escapes). */
static bool printable_ua(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;

    if (!authd_utf8_valid(s, len))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return false;
        if (u[i] == 0xc2 && i + 1 < len && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f)
            return false;
    }
    return true;
}

/*
 * read_client checks the optional ClientContext and fills *w. The context
 * is validated whoever sent it (bad input is refused, not ignored), but
 * believed only from a trusted front-end (req->trusted_frontend): from any
 * other caller it could be anything the caller likes, so the caller's own
 * address stands in and only the caller limits apply. A believed end-user
 * address also keys the call's failure-line gate, so one end user's
 * failures cannot hold back the lines of the others behind that front-end.
 */
static authd_code read_client(
    authd_call *call, const Authd__V1__ClientContext *cc, authd_who *w, authd_error *err)
{
    const authd_request *req = call->req;
    authd_source src;
    size_t iplen = 0, ualen = 0;

    memset(w, 0, sizeof *w);
    /* A certified caller is one service wherever it connects from (several
     * hosts, several addresses): its limits follow its identity. */
    if (req->caller[0] != '\0') {
        crypto_generichash(w->caller.key, sizeof w->caller.key, (const unsigned char *)req->caller,
            strnlen(req->caller, sizeof req->caller), NULL, 0);
        w->caller_id = req->caller;
    } else {
        w->caller = req->source;
    }
    if (cc != NULL) {
        iplen = strlen(cc->ip_address);
        ualen = strlen(cc->user_agent);
        if (iplen > 0
            && (iplen > CLIENT_IP_MAX || !authd_source_from_text(cc->ip_address, iplen, &src))) {
            err->reason = "INVALID_CLIENT_CONTEXT";
            snprintf(err->message, sizeof err->message, "%s",
                "client.ip_address: must be a literal IPv4 or IPv6 address");
            return AUTHD_INVALID_ARGUMENT;
        }
        if (ualen > USER_AGENT_MAX || !printable_ua(cc->user_agent, ualen)) {
            err->reason = "INVALID_CLIENT_CONTEXT";
            snprintf(err->message, sizeof err->message, "%s",
                "client.user_agent: must be printable text of at most 256 bytes");
            return AUTHD_INVALID_ARGUMENT;
        }
    }
    if (cc == NULL || !req->trusted_frontend)
        return AUTHD_OK;
    w->trusted = true;
    memcpy(w->ip, cc->ip_address, iplen + 1);
    memcpy(w->user_agent, cc->user_agent, ualen + 1);
    if (iplen > 0) {
        w->has_source = true;
        w->source = src;
        call->has_gate_source = true;
        call->gate_source = src;
    }
    return AUTHD_OK;
}

/* log_who adds the end user's context to an audit line (escaped by the
 * log writer); nothing when no trusted front-end gave one. */
static void log_who(authd_call *call, const authd_who *w)
{
    if (w == NULL || !w->trusted)
        return;
    if (w->ip[0] != '\0')
        authd_call_log_str(call, "client_ip", w->ip);
    if (w->user_agent[0] != '\0')
        authd_call_log_str(call, "user_agent", w->user_agent);
}

/* bitten logs that limit lim ran out for key (named by name when not
 * NULL), at most once per LIM_LOG_NS per limit, with the number of bites
 * not logged since; refused says whether the call was refused for it (a
 * front-end's own limit only warns: see over_limit). */
static void bitten(authd_service *svc, int lim, const authd_source *key, const char *name,
    bool refused, uint64_t now)
{
    uint64_t held = 0;
    char text[AUTHD_SOURCE_TEXT_MAX];
    authd_logrec r;

    if (!authd_lograte_allow(&svc->lim_log[lim], LIM_LOG_NS, now, &held))
        return;
    if (authd_log_begin(&r, AUTHD_LOG_WARN, "rate_limited")) {
        authd_source_str(key, text);
        authd_log_str(&r, "limit", lim_names[lim]);
        if (name != NULL)
            authd_log_str(&r, "caller", name);
        else
            authd_log_str(&r, "source", text);
        authd_log_bool(&r, "refused", refused);
        authd_log_u64(&r, "not_logged", held);
        authd_log_end(&r);
    }
}

/*
 * over_limit takes one token from the end user's address and one from
 * the caller in the given pair of tables, and is true when the call must
 * be refused. The attempt is counted when it starts, not when it fails,
 * so a burst of attempts in flight cannot pass the limit; a Login that
 * succeeds gives its tokens back (refund_attempt).
 *
 * With an end-user address from a trusted front-end, that address's limit
 * decides: the caller (the front-end) is still counted, and logged when
 * it runs out, but not refused, or a few end users emptying the
 * front-end's bucket would block every login through it. Without one the
 * caller's limit refuses: authd cannot tell the caller's end users apart.
 */
static bool over_limit(authd_service *svc, int source_lim, int caller_lim, const authd_who *w)
{
    uint64_t now = authd_monotonic_ns();
    authd_ratelimit *ls = w->has_source ? svc->lim[source_lim] : NULL;
    authd_ratelimit *lc = svc->lim[caller_lim];
    const size_t kl = sizeof w->source.key;

    if (ls != NULL && !authd_ratelimit_take(ls, w->source.key, kl, 1, now)) {
        bitten(svc, source_lim, &w->source, NULL, true, now);
        return true;
    }
    if (lc == NULL || authd_ratelimit_take(lc, w->caller.key, kl, 1, now))
        return false;
    bitten(svc, caller_lim, &w->caller, w->caller_id, !w->has_source, now);
    if (!w->has_source)
        return true;
    authd_ratelimit_charge(lc, w->caller.key, kl, 1, now); /* counted, not refused */
    return false;
}

/* refund_attempt gives back the tokens over_limit took for a Login that
 * succeeded: only failures count against the login limits. */
static void refund_attempt(authd_service *svc, const authd_who *w)
{
    uint64_t now = authd_monotonic_ns();
    const size_t kl = sizeof w->source.key;

    if (w->has_source && svc->lim[LIM_SOURCE_LOGIN] != NULL)
        authd_ratelimit_charge(svc->lim[LIM_SOURCE_LOGIN], w->source.key, kl, -1, now);
    if (svc->lim[LIM_CALLER_LOGIN] != NULL)
        authd_ratelimit_charge(svc->lim[LIM_CALLER_LOGIN], w->caller.key, kl, -1, now);
}

static void fail_rate_limited(authd_call *call, const char *what)
{
    authd_metrics_rate_limited(call->route);
    authd_call_finish(call, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED", what, NULL);
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
    authd_write_op op; /* first: the write pool hands back &op */
    authd_call *call;
    authd_user user;
    authd_who who;
    authd_code rc; /* the store's answer (register_apply) */
    const char *conflict;
};

static void register_apply(authd_write_op *op, authd_store_batch *b);
static void register_done(authd_write_op *op, authd_code commit);

static void register_job_free(struct register_job *job)
{
    sodium_memzero(job->user.password_hash, sizeof job->user.password_hash);
    free(job);
}

/* register_work (hashing pool): the hash only; the user is stored from the
 * write pool (register_apply, register_done), as for Login, so a hashing thread
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
    if (rc == AUTHD_OK) {
        job->op.store = svc->o.store;
        job->op.apply = register_apply;
        job->op.done = register_done;
        rc = authd_write_op_submit(svc->o.write_pool, NULL, &job->op);
    }
    if (rc != AUTHD_OK) {
        fail_busy(call, rc);
        register_job_free(job);
    }
}

/* register_apply (write pool, in a batch): store the user. */
static void register_apply(authd_write_op *op, authd_store_batch *b)
{
    struct register_job *job = (struct register_job *)op;
    authd_user *u = &job->user;

    randombytes_buf(u->id, sizeof u->id);
    u->status = AUTHD_USER_ACTIVE;
    u->created_at = u->updated_at = u->password_changed_at = now_s(job->call->svc);
    job->conflict = NULL;
    job->rc = authd_store_batch_user_create(b, u, &job->conflict);
}

/* register_done (write pool, after the batch's commit): answer. */
static void register_done(authd_write_op *op, authd_code commit)
{
    struct register_job *job = (struct register_job *)op;
    authd_call *call = job->call;
    authd_user *u = &job->user;
    const char *conflict = job->conflict;
    authd_code rc = commit != AUTHD_OK ? commit : job->rc;

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
    log_who(call, &job->who);

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
    if ((rc = read_client(call, in->client, &job->who, &err)) != AUTHD_OK) {
        wipe_str(in->password);
        free(job);
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        return;
    }
    /* Every attempt counts (not only failures): each one costs a hash, may
     * fill the store, and may learn whether an email is registered. */
    if (over_limit(svc, LIM_SOURCE_REGISTER, LIM_CALLER_REGISTER, &job->who)) {
        wipe_str(in->password);
        free(job);
        fail_rate_limited(call, "too many registrations from this source; retry later");
        return;
    }
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

/* authd_login_canonical: see service.h. */
int authd_login_canonical(const char *login, size_t len, char out[AUTHD_LOGIN_MAX + 1])
{
    authd_error err;

    if (memchr(login, '@', len) != NULL) {
        if (authd_validate_email(login, len, out, &err) == AUTHD_OK)
            return AUTHD_LOGIN_EMAIL;
    } else if (authd_validate_username(login, len, out, &err) == AUTHD_OK) {
        return AUTHD_LOGIN_USERNAME;
    }
    memcpy(out, login, len);
    out[len] = '\0';
    return AUTHD_LOGIN_OTHER;
}

/* login_failed_reply (timer thread, or at once): the one answer of every
 * failed Login. */
static void login_failed_reply(void *arg)
{
    authd_call_finish(
        (authd_call *)arg, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS", invalid_credentials, NULL);
}

/* log_login_hash adds login_hash to a failed Login's line: the keyed hash
 * of the canonical login (authd_store_login_hash), computed only when the
 * line will be written. */
static void log_login_hash(authd_call *call)
{
    const Authd__V1__LoginRequest *in = (const Authd__V1__LoginRequest *)call->input;
    char canon[AUTHD_LOGIN_MAX + 1];
    uint8_t h[AUTHD_LOGIN_HASH_BYTES];

    if (!authd_call_log_wanted(call))
        return;
    int kind = authd_login_canonical(in->login, strlen(in->login), canon);
    authd_store_login_hash(call->svc->o.store, kind, canon, h);
    authd_call_log_hex(call, "login_hash", h, sizeof h);
    sodium_memzero(canon, sizeof canon);
}

/* login_failed logs why a Login failed and answers it, no earlier than the
 * floor after receipt: the reply is parked on the timer, so the thread that
 * found the failure goes on at once. The line names what was tried as
 * login_hash, the keyed hash of the canonical login (the unknown-login
 * throttle counter's key, authd_store_login_hash): attempts on one
 * identifier can be grouped without the log holding it. */
static void login_failed(authd_call *call, const authd_user *u, const char *why, const authd_who *w)
{
    authd_service *svc = call->svc;

    authd_call_audit(call, "login_failure");
    authd_metrics_login_failure(authd_metrics_login_cause_of(why));
    if (u != NULL) {
        memcpy(call->user_id, u->id, sizeof u->id);
        call->has_user = true;
    }
    /* The cause and the hash first: the end user's context (a user agent
     * of up to 256 bytes, the end user's choice) can fill the call's
     * fields, and what does not fit is dropped. */
    authd_call_log_str(call, "cause", why);
    log_login_hash(call);
    log_who(call, w);
    uint64_t due = call->req->start_ns + svc->fail_floor_ns;
    if (svc->o.timer != NULL && svc->fail_floor_ns > 0 && due > authd_monotonic_ns())
        authd_timer_at(svc->o.timer, due, login_failed_reply, call);
    else
        login_failed_reply(call);
}

/* A login on its way through the three steps (begin, hash, commit). */
struct login_job {
    authd_write_op op; /* first: the write pool hands back &op (begin and commit) */
    authd_call *call;
    authd_who who;
    bool found; /* the login names a user: u holds it */
    authd_user u;
    bool rehash;
    char new_hash[AUTHD_HASH_MAX];
    /* Kept from an apply for its done: */
    authd_code rc; /* the store's answer */
    int verdict; /* begin: enum authd_login_verdict */
    int64_t now; /* commit: */
    authd_session s;
    authd_refresh_family fam;
    char refresh[AUTHD_REFRESH_TOKEN_MAX];
};

static void login_job_free(struct login_job *job)
{
    sodium_memzero(job, sizeof *job);
    free(job);
}

/* login_refused answers a failed login (any cause) the one way and frees
 * the job (the per-source limits counted it when it started). */
static void login_refused(struct login_job *job, const char *why)
{
    authd_call *call = job->call;
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)call->input;

    wipe_str(in->password);
    login_failed(call, job->found ? &job->u : NULL, why, &job->who);
    login_job_free(job);
}

static void login_work(void *arg);
static void login_commit_apply(authd_write_op *op, authd_store_batch *b);
static void login_commit_done(authd_write_op *op, authd_code commit);

/*
 * login_begin_apply (write pool, in a batch): resolve the login, count
 * the attempt and decide, in one store write, before any hash.
 */
static void login_begin_apply(authd_write_op *op, authd_store_batch *b)
{
    struct login_job *job = (struct login_job *)op;
    authd_service *svc = job->call->svc;
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)job->call->input;
    char canon[AUTHD_LOGIN_MAX + 1];

    int kind = authd_login_canonical(in->login, strlen(in->login), canon);
    job->verdict = 0;
    job->rc = authd_store_batch_login_begin(
        b, kind, canon, &svc->o.throttle, now_ms(svc), &job->found, &job->u, &job->verdict, NULL);
    sodium_memzero(canon, sizeof canon);
}

/*
 * login_begin_done (write pool, after the batch's commit): a throttled or
 * locked login is refused here without hashing; the reply is the same
 * INVALID_CREDENTIALS, the cause is only in the audit line. An allowed
 * one goes to the hashing pool.
 */
static void login_begin_done(authd_write_op *op, authd_code commit)
{
    struct login_job *job = (struct login_job *)op;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)call->input;
    int verdict = job->verdict;
    authd_code rc = commit != AUTHD_OK ? commit : job->rc;

    if (rc != AUTHD_OK) {
        wipe_str(in->password);
        fail_store(call, rc);
        login_job_free(job);
        return;
    }
    authd_workpool_owner w = hash_owner(call);
    if (verdict != AUTHD_LOGIN_ALLOWED) {
        const char *why = verdict == AUTHD_LOGIN_LOCKED ? "locked" : "throttled";
        /* Answered as an allowed attempt would be: OVERLOADED when the
         * caller's hashing share is full, else the one failure reply.
         * Otherwise a full share tells throttled (not hashed) from allowed
         * (refused by the pool), and so which logins name one account. */
        if (!authd_workpool_fair_would_admit(svc->o.hash_pool, &w)) {
            authd_metrics_login_failure(authd_metrics_login_cause_of(why));
            wipe_str(in->password);
            authd_call_log_str(call, "cause", why);
            log_login_hash(call);
            fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
            login_job_free(job);
            return;
        }
        login_refused(job, why);
        return;
    }
    if ((rc = authd_workpool_submit_fair(svc->o.hash_pool, &w, login_work, job)) != AUTHD_OK) {
        /* Counted against the account and (at entry) the source: a flood
         * refused here is limited like failures. */
        wipe_str(in->password);
        log_login_hash(call);
        fail_busy(call, rc);
        login_job_free(job);
    }
}

/*
 * login_work (hashing pool): the password check and nothing else, so the
 * hashing threads spend their time hashing; the session is written from
 * the write pool (login_commit_work), whose fsync would otherwise keep a
 * hashing thread idle.
 */
static void login_work(void *arg)
{
    struct login_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)call->input;
    authd_code rc;

    bool found = job->found;
    bool match = authd_password_verify(
        found ? job->u.password_hash : svc->dummy_hash, in->password, strlen(in->password));
    if (!found || !match || job->u.status != AUTHD_USER_ACTIVE) {
        login_refused(job, !found ? "unknown_user" : !match ? "wrong_password" : "user_disabled");
        return;
    }
    authd_pwparams np; /* only ever stronger than the stored hash (finding 10) */
    if (authd_password_rehash_params(job->u.password_hash, &svc->o.pwparams, &np))
        job->rehash = authd_password_hash(in->password, strlen(in->password), &np, job->new_hash)
            == AUTHD_OK;
    wipe_str(in->password);
    job->op.apply = login_commit_apply;
    job->op.done = login_commit_done;
    if ((rc = authd_write_op_submit(svc->o.write_pool, NULL, &job->op)) != AUTHD_OK) {
        fail_busy(call, rc);
        login_job_free(job);
    }
}

/* login_commit_apply (write pool, in a batch): the session and its
 * refresh family. */
static void login_commit_apply(authd_write_op *op, authd_store_batch *b)
{
    struct login_job *job = (struct login_job *)op;
    authd_service *svc = job->call->svc;
    authd_session *s = &job->s;
    authd_refresh_family *fam = &job->fam;
    uint8_t secret[AUTHD_REFRESH_SECRET_BYTES];
    const authd_session_policy *sp = &svc->o.sessions;

    int64_t now = job->now = now_s(svc);
    memset(s, 0, sizeof *s);
    memset(fam, 0, sizeof *fam);
    randombytes_buf(s->id, sizeof s->id);
    memcpy(s->user_id, job->u.id, sizeof job->u.id);
    s->created_at = now;
    /* The session lives idle_ttl unless refreshed, never past max_ttl; the
     * access token never outlives it. */
    s->expires_at = now + (sp->idle_ttl < sp->max_ttl ? sp->idle_ttl : sp->max_ttl);
    randombytes_buf(secret, sizeof secret);
    fam->generation = 1;
    authd_refresh_token_make(
        svc->o.store, s->id, fam->generation, secret, job->refresh, fam->token_hash);
    sodium_memzero(secret, sizeof secret);
    fam->issued_at = now;
    fam->access_expires_at
        = now + svc->o.token_ttl < s->expires_at ? now + svc->o.token_ttl : s->expires_at;
    job->rc = authd_store_batch_login_commit_family(
        b, job->u.id, job->rehash ? job->new_hash : NULL, s, fam, now);
}

/* login_commit_done (write pool, after the batch's commit): the token,
 * the reply. */
static void login_commit_done(authd_write_op *op, authd_code commit)
{
    struct login_job *job = (struct login_job *)op;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    authd_user u = job->u;
    authd_session s = job->s;
    authd_refresh_family fam = job->fam;
    bool rehash = job->rehash;
    char token[AUTHD_TOKEN_MAX];
    char refresh[AUTHD_REFRESH_TOKEN_MAX];
    int64_t now = job->now;
    authd_code rc = commit != AUTHD_OK ? commit : job->rc;

    memcpy(refresh, job->refresh, sizeof refresh);
    if (rc == AUTHD_FAILED_PRECONDITION || rc == AUTHD_NOT_FOUND) {
        login_refused(job, "user_disabled");
        job = NULL;
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
    c.exp = fam.access_expires_at;
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
    log_who(call, &job->who);
    refund_attempt(svc, &job->who);

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
    resp.refresh_token = refresh;
    resp.refresh_expires_at = s.expires_at;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
out:
    if (job != NULL)
        login_job_free(job);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    sodium_memzero(token, sizeof token);
    sodium_memzero(refresh, sizeof refresh);
}

void authd_handle_login(authd_service *svc, authd_call *call)
{
    Authd__V1__LoginRequest *in = (Authd__V1__LoginRequest *)call->input;
    size_t llen = strlen(in->login), plen = strlen(in->password);
    struct login_job *job = NULL;
    authd_error err;
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
    if ((job = calloc(1, sizeof *job)) == NULL) {
        wipe_str(in->password);
        fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    if ((rc = read_client(call, in->client, &job->who, &err)) != AUTHD_OK) {
        wipe_str(in->password);
        login_job_free(job);
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        return;
    }
    /* Refused before any store access or hashing. The attempt spends a
     * token now; a success gives it back (login_commit_done). */
    if (over_limit(svc, LIM_SOURCE_LOGIN, LIM_CALLER_LOGIN, &job->who)) {
        wipe_str(in->password);
        login_job_free(job);
        log_login_hash(call);
        fail_rate_limited(call, "too many failed logins from this source; retry later");
        return;
    }
    /* Charged to the caller's source: round-robin between sources and a
     * share of the queue each, so one source's burst cannot fill it. */
    authd_workpool_owner w = hash_owner(call);
    job->op.store = svc->o.store;
    job->op.apply = login_begin_apply;
    job->op.done = login_begin_done;
    if ((rc = authd_write_op_submit(svc->o.write_pool, &w, &job->op)) != AUTHD_OK) {
        wipe_str(in->password);
        login_job_free(job);
        log_login_hash(call);
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

/*
 * authenticate is Verify's check of an access token, and the interceptor's
 * (authd_rpc_authenticate): signature and claims (token.c), then the
 * session and its user from one store snapshot (not revoked, the session's
 * sub, not expired, user active). Returns AUTHD_OK with *c and *v filled;
 * AUTHD_UNAUTHENTICATED with *reason / *message; or a store error (for
 * fail_store). Marks the call's user once the token's signature holds.
 * static inline: Verify, the hot path, pays no call for the sharing.
 */
static inline authd_code authenticate(authd_service *svc, authd_call *call, const char *tok,
    size_t len, int64_t now, authd_claims *c, authd_verify_view *v, const char **reason,
    const char **message)
{
    authd_token_result tr
        = authd_token_verify_cached(svc->o.tokens, tl_verify_cache, tok, len, now, c);
    if (tr != AUTHD_TOKEN_OK) {
        *reason = authd_token_result_reason(tr);
        *message = token_message(tr);
        return AUTHD_UNAUTHENTICATED;
    }
    memcpy(call->user_id, c->sub, sizeof c->sub);
    call->has_user = true;
    authd_code rc = authd_store_verify_lookup(svc->o.store, c->sid, v);
    if (rc == AUTHD_NOT_FOUND
        || (rc == AUTHD_OK
            && (v->revoked || sodium_memcmp(v->user_id, c->sub, sizeof c->sub) != 0))) {
        *reason = "REVOKED";
        *message = "session has been revoked";
        return AUTHD_UNAUTHENTICATED;
    }
    if (rc != AUTHD_OK)
        return rc;
    if (v->expires_at <= now) {
        *reason = "EXPIRED";
        *message = "token has expired";
        return AUTHD_UNAUTHENTICATED;
    }
    if (v->status != AUTHD_USER_ACTIVE) {
        *reason = "USER_DISABLED";
        *message = "user is disabled";
        return AUTHD_UNAUTHENTICATED;
    }
    return AUTHD_OK;
}

/* has_role is true when the view's current roles hold role. */
static bool has_role(const authd_verify_view *v, const char *role)
{
    for (uint32_t i = 0; i < v->n_roles; i++)
        if (strcmp(v->roles[i], role) == 0)
            return true;
    return false;
}

/*
 * verify_authorize checks a valid token's VerifyRequest.required_roles
 * (all held, by the store's current record) and audience (the token's
 * aud). Returns AUTHD_OK, or answers the call (PERMISSION_DENIED:
 * MISSING_ROLE / WRONG_AUDIENCE, with an audit line; INVALID_ARGUMENT for
 * a request that cannot be a role set) and returns that code. Kept out of
 * line: a Verify without either pays one test.
 */
static authd_code verify_authorize(authd_service *svc, authd_call *call,
    const Authd__V1__VerifyRequest *in, const authd_verify_view *v)
{
    if (in->n_required_roles > AUTHD_ROLES_MAX) {
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_ROLES",
            "required_roles: at most 16 roles", NULL);
        return AUTHD_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < in->n_required_roles; i++) {
        const char *role = in->required_roles[i];
        size_t rl = strlen(role);
        if (rl == 0 || rl > AUTHD_ROLE_MAX) {
            authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_ROLES",
                "required_roles: each role is 1 to 64 bytes", NULL);
            return AUTHD_INVALID_ARGUMENT;
        }
        if (!has_role(v, role)) {
            authd_call_audit(call, "verify_denied");
            authd_call_log_str(call, "missing_role", role);
            authd_call_finish(call, AUTHD_PERMISSION_DENIED, "MISSING_ROLE",
                "the token's user does not hold a required role", NULL);
            return AUTHD_PERMISSION_DENIED;
        }
    }
    if (in->audience[0] != '\0'
        && !authd_tokens_audience_is(svc->o.tokens, in->audience, strlen(in->audience))) {
        authd_call_audit(call, "verify_denied");
        authd_call_log_str(call, "cause", "wrong_audience");
        authd_call_finish(call, AUTHD_PERMISSION_DENIED, "WRONG_AUDIENCE",
            "the token is not for the expected audience", NULL);
        return AUTHD_PERMISSION_DENIED;
    }
    return AUTHD_OK;
}

void authd_handle_verify(authd_service *svc, authd_call *call)
{
    Authd__V1__VerifyRequest *in = (Authd__V1__VerifyRequest *)call->input;
    const char *tok = in->access_token;
    const char *reason = NULL, *message = NULL;
    authd_claims c;
    authd_verify_view v;

    authd_code rc
        = authenticate(svc, call, tok, strlen(tok), now_s(svc), &c, &v, &reason, &message);
    if (rc == AUTHD_UNAUTHENTICATED) {
        token_failed(call, tok, "verify_failure", reason, message);
        return;
    }
    if (rc != AUTHD_OK) {
        fail_store(call, rc);
        return;
    }
    if ((in->n_required_roles != 0 || in->audience[0] != '\0')
        && verify_authorize(svc, call, in, &v) != AUTHD_OK)
        return;

    Authd__V1__VerifyResponse resp = AUTHD__V1__VERIFY_RESPONSE__INIT;
    char uidhex[AUTHD_ID_HEX + 1], sidhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];
    to_hex(v.user_id, sizeof v.user_id, uidhex);
    to_hex(c.sid, sizeof c.sid, sidhex);
    for (uint32_t i = 0; i < v.n_roles; i++)
        roles[i] = v.roles[i];
    resp.user_id = uidhex;
    resp.username = v.username;
    resp.n_roles = v.n_roles;
    resp.roles = roles;
    resp.session_id = sidhex;
    resp.expires_at = c.exp;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
}

struct logout_job {
    authd_write_op op; /* first: the write pool hands back &op */
    authd_call *call;
    uint8_t sid[AUTHD_ID_BYTES];
    authd_code rc; /* the store's answer (logout_apply) */
};

/* logout_apply (write pool, in a batch): revoke the session. */
static void logout_apply(authd_write_op *op, authd_store_batch *b)
{
    struct logout_job *job = (struct logout_job *)op;

    job->rc = authd_store_batch_session_revoke(b, job->sid, now_s(job->call->svc));
}

/* logout_done (write pool, after the batch's commit): answer. */
static void logout_done(authd_write_op *op, authd_code commit)
{
    struct logout_job *job = (struct logout_job *)op;
    authd_call *call = job->call;
    char sidhex[AUTHD_ID_HEX + 1];

    to_hex(job->sid, sizeof job->sid, sidhex);
    authd_code rc = commit != AUTHD_OK ? commit : job->rc;
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
    job->op.store = svc->o.store;
    job->op.apply = logout_apply;
    job->op.done = logout_done;
    if ((rc = authd_write_op_submit(svc->o.write_pool, NULL, &job->op)) != AUTHD_OK) {
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
    authd_dispatch_metrics_init();
    svc->o = *o;
    if (svc->o.throttle.lockout == 0)
        svc->o.throttle = (authd_throttle_policy)AUTHD_THROTTLE_DEFAULTS;
    if (!authd_throttle_policy_valid(&svc->o.throttle)) {
        free(svc);
        return AUTHD_INVALID_ARGUMENT;
    }
    if (svc->o.sessions.idle_ttl == 0) {
        svc->o.sessions.idle_ttl = AUTHD_SESSION_IDLE_TTL_DEFAULT;
        svc->o.sessions.max_ttl = AUTHD_SESSION_MAX_TTL_DEFAULT;
        svc->o.sessions.grace_ms = AUTHD_REFRESH_GRACE_MS_DEFAULT;
    }
    svc->o.sessions.token_ttl = o->token_ttl;
    if (svc->o.sessions.idle_ttl < 1 || svc->o.sessions.max_ttl < 1
        || svc->o.sessions.grace_ms < 0) {
        free(svc);
        return AUTHD_INVALID_ARGUMENT;
    }
    const uint32_t per_min[LIM_N]
        = { o->limits.source_login_failures, o->limits.caller_login_failures,
              o->limits.source_registrations, o->limits.caller_registrations };
    for (int i = 0; i < LIM_N; i++) {
        if (per_min[i] == 0)
            continue;
        authd_ratelimit_options ro = { .rate = per_min[i] / 60.0,
            .burst = per_min[i],
            .max_keys = o->limits.max_keys ? o->limits.max_keys : 65536 };
        if ((rc = authd_ratelimit_create(&ro, &svc->lim[i])) != AUTHD_OK) {
            authd_service_destroy(svc);
            return rc;
        }
    }
    /* The dummy hash: made with the current parameters from a random
     * password nobody knows, so an unknown-user login costs what a real one
     * does and can never succeed. */
    randombytes_buf(junk, sizeof junk);
    rc = authd_password_hash((const char *)junk, sizeof junk, &o->pwparams, svc->dummy_hash);
    sodium_memzero(junk, sizeof junk);
    if (rc != AUTHD_OK) {
        authd_service_destroy(svc);
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
    if (svc == NULL)
        return;
    for (int i = 0; i < LIM_N; i++)
        authd_ratelimit_destroy(svc->lim[i]);
    free(svc);
}

uint64_t authd_service_fail_floor_ns(const authd_service *svc)
{
    return svc->fail_floor_ns;
}

authd_policy_slot *authd_service_policy(const authd_service *svc)
{
    return svc->o.policy;
}

void authd_service_thread_start(authd_service *svc)
{
    authd_logrec r;

    if (svc != NULL && authd_store_reader_pin(svc->o.store) != AUTHD_OK
        && authd_log_begin(&r, AUTHD_LOG_WARN, "reader_pin")) {
        authd_log_str(&r, "msg", "a loop has no read transaction of its own: it shares the pool");
        authd_log_end(&r);
    }
    if (svc != NULL && svc->o.verify_cache_entries > 0 && tl_verify_cache == NULL
        && authd_token_cache_create(svc->o.tokens, svc->o.verify_cache_entries, &tl_verify_cache)
            != AUTHD_OK
        && authd_log_begin(&r, AUTHD_LOG_WARN, "verify_cache")) {
        authd_log_str(&r, "msg", "a loop has no verified-token cache: Verify takes the full path");
        authd_log_end(&r);
    }
}

/* authd_service_thread_stop: the loop's cache counters go in one line at
 * exit (how well the cache served, for sizing --verify-cache-entries). */
void authd_service_thread_stop(authd_service *svc)
{
    authd_logrec r;
    authd_token_cache_stats st;

    if (svc != NULL)
        authd_store_reader_unpin(svc->o.store);
    if (tl_verify_cache != NULL) {
        authd_token_cache_stats_get(tl_verify_cache, &st);
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "verify_cache")) {
            authd_log_u64(&r, "hits", st.hits);
            authd_log_u64(&r, "misses", st.misses);
            authd_log_u64(&r, "stale", st.stale);
            authd_log_u64(&r, "inserts", st.inserts);
            authd_log_u64(&r, "evictions", st.evictions);
            authd_log_end(&r);
        }
    }
    authd_token_cache_destroy(tl_verify_cache);
    tl_verify_cache = NULL;
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

    /* Login counters that read as zero (quiet for reset_after, not locked):
     * mostly identifiers that name no user, which nothing else removes. */
    total = 0;
    do {
        rc = authd_store_throttle_purge(svc->o.store, &svc->o.throttle, now_ms(svc), batch, &n);
        if (rc == AUTHD_OK)
            total += n;
    } while (rc == AUTHD_OK && n == batch);
    if (total > 0) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "login_counters_purged")) {
            authd_log_u64(&r, "count", total);
            authd_log_end(&r);
        }
    }
}

/* ---- shared with the handler files (rpc_common.h) ------------------------------ */

authd_code authd_rpc_read_client(
    authd_call *call, const Authd__V1__ClientContext *cc, authd_who *w, authd_error *err)
{
    return read_client(call, cc, w, err);
}

void authd_rpc_log_who(authd_call *call, const authd_who *w)
{
    log_who(call, w);
}

bool authd_rpc_over_credential_limit(authd_service *svc, const authd_who *w)
{
    return over_limit(svc, LIM_SOURCE_LOGIN, LIM_CALLER_LOGIN, w);
}

void authd_rpc_refund_credential_limit(authd_service *svc, const authd_who *w)
{
    refund_attempt(svc, w);
}

authd_store *authd_rpc_store(const authd_service *svc)
{
    return svc->o.store;
}

authd_tokens *authd_rpc_tokens(const authd_service *svc)
{
    return svc->o.tokens;
}

authd_workpool *authd_rpc_write_pool(const authd_service *svc)
{
    return svc->o.write_pool;
}

const authd_session_policy *authd_rpc_session_policy(const authd_service *svc)
{
    return &svc->o.sessions;
}

int64_t authd_rpc_now_ms(const authd_service *svc)
{
    return now_ms(svc);
}

int64_t authd_rpc_now_s(const authd_service *svc)
{
    return now_s(svc);
}

void authd_rpc_fail_store(authd_call *call, authd_code rc)
{
    fail_store(call, rc);
}

void authd_rpc_fail_busy(authd_call *call, authd_code rc)
{
    fail_busy(call, rc);
}

void authd_rpc_fail_rate_limited(authd_call *call, const char *what)
{
    fail_rate_limited(call, what);
}

void authd_rpc_hex(const uint8_t *b, size_t n, char *out)
{
    to_hex(b, n, out);
}

void authd_rpc_user_view(Authd__V1__User *pu, const authd_user *u, char idhex[AUTHD_ID_HEX + 1],
    char *roles[AUTHD_ROLES_MAX])
{
    user_view(pu, u, idhex, roles);
}

/*
 * authd_rpc_authenticate: the interceptor's check of the envelope's token
 * is Verify's (authenticate), then the identity is copied from the
 * verified claims and the store's view: nothing from the request message.
 * A failure's line is the audit event "auth_failure" naming the token only
 * by its fingerprint.
 */
authd_code authd_rpc_authenticate(authd_call *call, const char *tok, size_t len, authd_identity *id,
    const char **reason, const char **message)
{
    authd_service *svc = call->svc;
    authd_claims c;
    authd_verify_view v;
    char fp[AUTHD_FINGERPRINT_LEN + 1];

    authd_code rc = authenticate(svc, call, tok, len, now_s(svc), &c, &v, reason, message);
    if (rc == AUTHD_UNAUTHENTICATED) {
        authd_call_audit(call, "auth_failure");
        if (authd_call_log_wanted(call)) {
            authd_token_fingerprint(tok, len, fp);
            authd_call_log_str(call, "token_fp", fp);
        }
        return rc;
    }
    if (rc != AUTHD_OK) {
        *reason = rc == AUTHD_RESOURCE_EXHAUSTED ? "STORE_FULL" : "INTERNAL";
        *message = rc == AUTHD_RESOURCE_EXHAUSTED ? "storage is full; try again later" : "";
        return rc == AUTHD_RESOURCE_EXHAUSTED ? rc : AUTHD_INTERNAL;
    }
    memcpy(id->user_id, v.user_id, sizeof id->user_id);
    memcpy(id->session_id, c.sid, sizeof id->session_id);
    id->token_exp = c.exp;
    id->session_expires_at = v.expires_at;
    memcpy(id->username, v.username, sizeof id->username);
    id->n_roles = v.n_roles;
    for (uint32_t i = 0; i < v.n_roles; i++)
        memcpy(id->roles[i], v.roles[i], sizeof id->roles[i]);
    return AUTHD_OK;
}

authd_workpool *authd_rpc_hash_pool(const authd_service *svc)
{
    return svc->o.hash_pool;
}

const authd_throttle_policy *authd_rpc_throttle_policy(const authd_service *svc)
{
    return &svc->o.throttle;
}

const authd_pwparams *authd_rpc_pwparams(const authd_service *svc)
{
    return &svc->o.pwparams;
}

unsigned authd_rpc_password_min_bits(const authd_service *svc)
{
    return svc->o.password_min_bits;
}

/* ---- metrics ------------------------------------------------------------------ */

#ifndef AUTHD_VERSION
#define AUTHD_VERSION "unknown"
#endif
#ifndef AUTHD_COMMIT
#define AUTHD_COMMIT "unknown"
#endif

/*
 * authd_service_metrics reads the gauges the counters cannot know and
 * renders every metric. Sessions come from the store's count (two O(1)
 * mdb_stat calls in a pooled read transaction), not from counters kept by
 * Login and Logout: sessions outlive a restart, end by expiry (purged in
 * batches) and by deletes of whole users, and a counter would drift from
 * all of that; the count is what is stored, expired-but-not-purged
 * included. A store that cannot be read leaves the store gauges out.
 */
authd_code authd_service_metrics(authd_service *svc, char **out, size_t *len)
{
    authd_metrics_gauges g = { .version = AUTHD_VERSION, .commit = AUTHD_COMMIT };
    size_t users = 0, sessions = 0, q = 0, r = 0, t = 0;

    if (authd_store_count(svc->o.store, &users, &sessions) == AUTHD_OK) {
        g.has_store = true;
        g.users = users;
        g.sessions = sessions;
    }
    authd_workpool_stats(svc->o.hash_pool, &q, &r, &t);
    g.has_hash_pool = true;
    g.hash_queued = q;
    g.hash_running = r;
    g.hash_workers = t;
    authd_workpool_stats(svc->o.write_pool, &q, &r, &t);
    g.has_write_pool = true;
    g.write_queued = q;
    g.write_running = r;
    g.write_workers = t;
    g.log_dropped = authd_log_dropped();
    return authd_metrics_render(&g, out, len);
}
