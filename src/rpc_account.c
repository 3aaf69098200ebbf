/*
 * rpc_account.c — the caller's own account: Me, LogoutAll, ChangePassword.
 *
 * All three are protected routes: the interceptor (dispatch.c) has already
 * checked the caller's own access token from the envelope, as Verify does,
 * and left who it is in call->identity. Nothing here reads a user or a
 * session id from the request message, so a caller can only ever act on
 * their own account.
 *
 * Me reads on the calling thread (two reads, as Verify does). LogoutAll is
 * one write on the write pool. ChangePassword is Login's path with a second
 * password: the new password's strength on the hashing pool (zxcvbn can
 * take milliseconds, and a weak new password must not count as a failed
 * attempt); the current password counted against the account's login
 * throttle in the store's write transaction, before any hash
 * (authd_store_login_begin, as Login); the argon2 check of the current
 * password and the hash of the new one on the hashing pool; and one write
 * transaction that sets the hash, clears the counter and revokes every
 * other session (authd_store_password_change). The per-source failed-login
 * limits are Login's (authd_rpc_over_credential_limit), spent at entry and
 * given back on success.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "password.h"
#include "rpc_common.h"
#include "strength.h"

#define PASSWORD_BYTES_MAX (AUTHD_PASSWORD_MAX * 4)

/* ---- Me --------------------------------------------------------------------- */

#define ME_SESSIONS_MAX 100

void authd_handle_me(authd_service *svc, authd_call *call)
{
    const authd_identity *id = call->identity;
    authd_store *st = authd_rpc_store(svc);
    int64_t now = authd_rpc_now_s(svc);
    authd_user u;
    authd_session s, *all = NULL;
    size_t n_all = 0, total = 0;
    authd_code rc;

    all = malloc(ME_SESSIONS_MAX * sizeof *all);
    if (all == NULL) {
        authd_rpc_fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    if ((rc = authd_store_user_get(st, id->user_id, &u)) != AUTHD_OK
        || (rc = authd_store_session_get(st, id->session_id, &s)) != AUTHD_OK
        || (rc = authd_store_user_sessions(st, id->user_id, all, ME_SESSIONS_MAX, &n_all, &total))
            != AUTHD_OK) {
        /* Gone since the interceptor's snapshot: as Verify would say now. */
        if (rc == AUTHD_NOT_FOUND)
            authd_call_finish(
                call, AUTHD_UNAUTHENTICATED, "REVOKED", "session has been revoked", NULL);
        else
            authd_rpc_fail_store(call, rc);
        free(all);
        return;
    }
    sodium_memzero(u.password_hash, sizeof u.password_hash);

    Authd__V1__MeResponse resp = AUTHD__V1__ME_RESPONSE__INIT;
    Authd__V1__User pu;
    Authd__V1__Session ps = AUTHD__V1__SESSION__INIT;
    Authd__V1__Session live[ME_SESSIONS_MAX], *plive[ME_SESSIONS_MAX];
    char hex[ME_SESSIONS_MAX][AUTHD_ID_HEX + 1];
    char idhex[AUTHD_ID_HEX + 1], sidhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];
    size_t n_live = 0;
    authd_rpc_user_view(&pu, &u, idhex, roles);
    authd_rpc_hex(s.id, sizeof s.id, sidhex);
    ps.id = sidhex;
    ps.created_at = s.created_at;
    ps.expires_at = s.expires_at;
    for (size_t i = 0; i < n_all; i++) {
        if (all[i].revoked || all[i].expires_at <= now)
            continue;
        authd__v1__session__init(&live[n_live]);
        authd_rpc_hex(all[i].id, sizeof all[i].id, hex[n_live]);
        live[n_live].id = hex[n_live];
        live[n_live].created_at = all[i].created_at;
        live[n_live].expires_at = all[i].expires_at;
        plive[n_live] = &live[n_live];
        n_live++;
    }
    resp.user = &pu;
    resp.session = &ps;
    resp.n_sessions = n_live;
    resp.sessions = n_live > 0 ? plive : NULL;
    resp.sessions_total = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
    free(all);
}

/* ---- LogoutAll ---------------------------------------------------------------- */

static void logout_all_work(void *arg)
{
    authd_call *call = arg;
    authd_service *svc = call->svc;
    size_t n = 0;

    authd_code rc = authd_store_user_revoke_sessions(
        authd_rpc_store(svc), call->identity->user_id, NULL, authd_rpc_now_s(svc), &n);
    if (rc != AUTHD_OK) {
        authd_rpc_fail_store(call, rc);
        return;
    }
    authd_call_audit(call, "logout_all");
    authd_call_log_u64(call, "sessions_revoked", n);
    Authd__V1__LogoutAllResponse resp = AUTHD__V1__LOGOUT_ALL_RESPONSE__INIT;
    resp.sessions_revoked = (uint32_t)n;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
}

/* authd_handle_logout_all revokes every live session of the caller, the
 * calling one included, in one write transaction (through the store's
 * per-user session index: authd_store_user_revoke_sessions). */
void authd_handle_logout_all(authd_service *svc, authd_call *call)
{
    authd_code rc;

    if ((rc = authd_workpool_submit(authd_rpc_write_pool(svc), logout_all_work, call)) != AUTHD_OK)
        authd_rpc_fail_busy(call, rc);
}

/* ---- ChangePassword ------------------------------------------------------------ */

/* A password change on its way through its four steps. */
struct cp_job {
    authd_call *call;
    authd_who who;
    authd_user u; /* from the throttle step: the stored hash */
    char new_hash[AUTHD_HASH_MAX];
};

static void cp_job_free(struct cp_job *job)
{
    sodium_memzero(job, sizeof *job);
    free(job);
}

/* cp_wipe zeroes both passwords in the request (dispatch wipes them again
 * when the call ends; this is as soon as they are no longer needed). */
static void cp_wipe(authd_call *call)
{
    Authd__V1__ChangePasswordRequest *in = (Authd__V1__ChangePasswordRequest *)call->input;

    sodium_memzero(in->current_password, strlen(in->current_password));
    sodium_memzero(in->new_password, strlen(in->new_password));
}

/* cp_fail answers with code/reason/message, wipes and frees. */
static void cp_fail(struct cp_job *job, authd_code code, const char *reason, const char *message)
{
    authd_call *call = job->call;

    cp_wipe(call);
    authd_rpc_log_who(call, &job->who);
    cp_job_free(job);
    authd_call_finish(call, code, reason, message, NULL);
}

/* cp_denied: the current password was not proven (wrong, throttled or
 * locked): one answer for all, as Login's; the cause is in the audit line. */
static void cp_denied(struct cp_job *job, const char *cause)
{
    authd_call_audit(job->call, "change_password_failure");
    authd_call_log_str(job->call, "cause", cause);
    cp_fail(job, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS", "current password is not correct");
}

static void cp_begin_work(void *arg);
static void cp_hash_work(void *arg);
static void cp_commit_work(void *arg);

/* cp_strength_work (hashing pool): the new password's strength, before
 * anything is counted: a weak choice is not a failed attempt. */
static void cp_strength_work(void *arg)
{
    struct cp_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    Authd__V1__ChangePasswordRequest *in = (Authd__V1__ChangePasswordRequest *)call->input;
    authd_user u;
    authd_error err;
    authd_code rc;

    /* The profile for the strength check (a password built from one's own
     * name or email is weak). */
    if ((rc = authd_store_user_get(authd_rpc_store(svc), call->identity->user_id, &u))
        != AUTHD_OK) {
        if (rc == AUTHD_NOT_FOUND)
            cp_fail(job, AUTHD_UNAUTHENTICATED, "REVOKED", "session has been revoked");
        else {
            cp_wipe(call);
            cp_job_free(job);
            authd_rpc_fail_store(call, rc);
        }
        return;
    }
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    rc = authd_password_strong_enough(
        in->new_password, u.username, u.email, authd_rpc_password_min_bits(svc), &err);
    if (rc != AUTHD_OK) {
        authd_call_audit(call, "change_password_failure");
        authd_call_log_str(call, "cause", "weak_password");
        authd_rpc_refund_credential_limit(svc, &job->who); /* not a credential failure */
        cp_fail(job, rc, err.reason, err.message);
        return;
    }
    if ((rc = authd_workpool_submit(authd_rpc_write_pool(svc), cp_begin_work, job)) != AUTHD_OK) {
        cp_wipe(call);
        cp_job_free(job);
        authd_rpc_fail_busy(call, rc);
    }
}

/*
 * cp_begin_work (write pool): count the attempt against the account's
 * login throttle and decide, in the store's one write transaction, before
 * any hash: Login's authd_store_login_begin on the caller's username, so
 * password guesses through ChangePassword and through Login share one
 * counter. THROTTLED and LOCKED are refused here without hashing.
 */
static void cp_begin_work(void *arg)
{
    struct cp_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    bool found = false;
    int verdict = 0;
    authd_code rc;

    rc = authd_store_login_begin(authd_rpc_store(svc), AUTHD_LOGIN_USERNAME,
        call->identity->username, authd_rpc_throttle_policy(svc), authd_rpc_now_ms(svc), &found,
        &job->u, &verdict, NULL);
    if (rc != AUTHD_OK) {
        cp_wipe(call);
        cp_job_free(job);
        authd_rpc_fail_store(call, rc);
        return;
    }
    if (!found || memcmp(job->u.id, call->identity->user_id, AUTHD_ID_BYTES) != 0
        || job->u.status != AUTHD_USER_ACTIVE) {
        cp_fail(job, AUTHD_UNAUTHENTICATED, "USER_DISABLED", "user is disabled");
        return;
    }
    if (verdict != AUTHD_LOGIN_ALLOWED) {
        cp_denied(job, verdict == AUTHD_LOGIN_LOCKED ? "locked" : "throttled");
        return;
    }
    authd_workpool_owner w = { call->req->source, call->req->conn_id };
    if ((rc = authd_workpool_submit_fair(authd_rpc_hash_pool(svc), &w, cp_hash_work, job))
        != AUTHD_OK) {
        cp_wipe(call);
        cp_job_free(job);
        authd_rpc_fail_busy(call, rc);
    }
}

/* cp_hash_work (hashing pool): check the current password against the
 * stored hash, then hash the new one with today's parameters. */
static void cp_hash_work(void *arg)
{
    struct cp_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    Authd__V1__ChangePasswordRequest *in = (Authd__V1__ChangePasswordRequest *)call->input;
    authd_code rc;

    bool match = authd_password_verify(
        job->u.password_hash, in->current_password, strlen(in->current_password));
    sodium_memzero(job->u.password_hash, sizeof job->u.password_hash);
    if (!match) {
        cp_denied(job, "wrong_password");
        return;
    }
    rc = authd_password_hash(
        in->new_password, strlen(in->new_password), authd_rpc_pwparams(svc), job->new_hash);
    cp_wipe(call);
    if (rc == AUTHD_OK)
        rc = authd_workpool_submit(authd_rpc_write_pool(svc), cp_commit_work, job);
    if (rc != AUTHD_OK) {
        cp_job_free(job);
        authd_rpc_fail_busy(call, rc);
    }
}

/* cp_commit_work (write pool): the new hash, the cleared counter and the
 * other sessions revoked, in one transaction; the calling session lives. */
static void cp_commit_work(void *arg)
{
    struct cp_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    size_t n = 0;

    authd_code rc = authd_store_password_change(authd_rpc_store(svc), call->identity->user_id,
        job->new_hash, call->identity->session_id, authd_rpc_now_s(svc), &n);
    if (rc == AUTHD_NOT_FOUND || rc == AUTHD_FAILED_PRECONDITION) {
        cp_fail(job, AUTHD_UNAUTHENTICATED, "USER_DISABLED", "user is disabled");
        return;
    }
    if (rc != AUTHD_OK) {
        cp_job_free(job);
        authd_rpc_fail_store(call, rc);
        return;
    }
    authd_rpc_refund_credential_limit(svc, &job->who);
    authd_call_audit(call, "password_changed");
    authd_call_log_u64(call, "sessions_revoked", n);
    authd_rpc_log_who(call, &job->who);
    cp_job_free(job);
    Authd__V1__ChangePasswordResponse resp = AUTHD__V1__CHANGE_PASSWORD_RESPONSE__INIT;
    resp.sessions_revoked = (uint32_t)n;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
}

void authd_handle_change_password(authd_service *svc, authd_call *call)
{
    Authd__V1__ChangePasswordRequest *in = (Authd__V1__ChangePasswordRequest *)call->input;
    size_t clen = strlen(in->current_password);
    struct cp_job *job = NULL;
    authd_error err;
    authd_code rc;

    if (clen == 0 || clen > PASSWORD_BYTES_MAX) {
        cp_wipe(call);
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_PASSWORD",
            "current_password: must be 1 to 128 characters", NULL);
        return;
    }
    if ((rc = authd_validate_password(in->new_password, strlen(in->new_password), &err))
        != AUTHD_OK) {
        cp_wipe(call);
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        return;
    }
    if ((job = calloc(1, sizeof *job)) == NULL) {
        cp_wipe(call);
        authd_rpc_fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    if ((rc = authd_rpc_read_client(call, in->client, &job->who, &err)) != AUTHD_OK) {
        cp_fail(job, rc, err.reason, err.message);
        return;
    }
    /* Login's failed-credential limits, spent now, given back on success. */
    if (authd_rpc_over_credential_limit(svc, &job->who)) {
        cp_fail(job, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED",
            "too many failed logins from this source; retry later");
        return;
    }
    authd_workpool_owner w = { call->req->source, call->req->conn_id };
    if ((rc = authd_workpool_submit_fair(authd_rpc_hash_pool(svc), &w, cp_strength_work, job))
        != AUTHD_OK) {
        cp_wipe(call);
        cp_job_free(job);
        authd_rpc_fail_busy(call, rc);
    }
}
