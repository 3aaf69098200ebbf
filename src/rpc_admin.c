/*
 * rpc_admin.c — the admin RPCs: GetUser, ListUsers, SetRoles, DisableUser,
 * EnableUser, DeleteUser, RevokeSessions, UnlockUser.
 *
 * Every one is a protected route with role "admin" (dispatch.c routes[]):
 * the interceptor has checked the caller's token and that the store says
 * they hold "admin" now before any handler here runs; no handler checks a
 * token or a role itself. The last-admin rule lives in the store
 * (FAILED_PRECONDITION), which this file answers as LAST_ADMIN.
 *
 * GetUser is one read on the calling thread (as Me). The writes, and
 * ListUsers (a scan of up to 1000 records), run on the write pool, never
 * on the event loop. Every admin action writes an audit line
 * (admin_action) with the admin's user id, the action and the target.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "rpc_common.h"

#define LIST_PAGE_DEFAULT 50

/* The admin actions; each a route with a work function on the write pool. */
enum admin_action {
    ACT_SET_ROLES,
    ACT_DISABLE,
    ACT_ENABLE,
    ACT_DELETE,
    ACT_REVOKE,
    ACT_UNLOCK,
};

static const char *const action_names[] = {
    [ACT_SET_ROLES] = "set_roles",
    [ACT_DISABLE] = "disable_user",
    [ACT_ENABLE] = "enable_user",
    [ACT_DELETE] = "delete_user",
    [ACT_REVOKE] = "revoke_sessions",
    [ACT_UNLOCK] = "unlock_user",
};

/* A write on its way to the write pool: the call and its parsed target. */
struct admin_job {
    authd_call *call;
    enum admin_action act;
    uint8_t target[AUTHD_ID_BYTES];
};

/* parse_user_id reads exactly 32 lowercase hex digits into out: an id in
 * another form (upper case, short, padded) is not the same id, so it is
 * refused rather than normalized. */
static bool parse_user_id(const char *hex, uint8_t out[AUTHD_ID_BYTES])
{
    if (hex == NULL || strlen(hex) != AUTHD_ID_HEX)
        return false;
    for (size_t i = 0; i < AUTHD_ID_HEX; i++) {
        char c = hex[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    for (size_t i = 0; i < AUTHD_ID_BYTES; i++) {
        int hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
        int lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* audit marks the call's line as admin_action with who did what to whom. */
static void audit(authd_call *call, const char *action, const uint8_t *target)
{
    authd_call_audit(call, "admin_action");
    authd_call_log_hex(call, "admin_id", call->identity->user_id, AUTHD_ID_BYTES);
    authd_call_log_str(call, "action", action);
    if (target != NULL)
        authd_call_log_hex(call, "target_user_id", target, AUTHD_ID_BYTES);
}

/* fail_target answers a store failure about one target user: NOT_FOUND and
 * the last-admin rule have their own reasons; the rest are common. */
static void fail_target(authd_call *call, authd_code rc)
{
    if (rc == AUTHD_NOT_FOUND)
        authd_call_finish(call, AUTHD_NOT_FOUND, "USER_NOT_FOUND", "no such user", NULL);
    else if (rc == AUTHD_FAILED_PRECONDITION)
        authd_call_finish(call, AUTHD_FAILED_PRECONDITION, "LAST_ADMIN",
            "the last active admin cannot stop being one", NULL);
    else if (rc == AUTHD_INVALID_ARGUMENT)
        authd_call_finish(call, rc, "INVALID_ROLE", "roles: not a valid set of roles", NULL);
    else
        authd_rpc_fail_store(call, rc);
}

static void fail_bad_id(authd_call *call)
{
    authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_USER_ID",
        "user_id: must be 32 lowercase hex digits", NULL);
}

/* answer_user answers with the user as stored now (never the hash). */
static void answer_user(authd_call *call, authd_user *u, bool get)
{
    Authd__V1__User pu;
    char idhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];

    sodium_memzero(u->password_hash, sizeof u->password_hash);
    authd_rpc_user_view(&pu, u, idhex, roles);
    if (get) {
        Authd__V1__GetUserResponse resp = AUTHD__V1__GET_USER_RESPONSE__INIT;
        resp.user = &pu;
        authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
    } else {
        Authd__V1__SetRolesResponse resp = AUTHD__V1__SET_ROLES_RESPONSE__INIT;
        resp.user = &pu;
        authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
    }
}

/* admin_work (write pool): the one store write of the action, its audit
 * line and its answer. */
static void admin_work(void *arg)
{
    struct admin_job *job = arg;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    authd_store *st = authd_rpc_store(svc);
    uint8_t target[AUTHD_ID_BYTES];
    enum admin_action act = job->act;
    authd_user u;
    size_t n = 0;
    authd_code rc = AUTHD_INTERNAL;

    memcpy(target, job->target, sizeof target);
    free(job);
    audit(call, action_names[act], target);
    switch (act) {
    case ACT_SET_ROLES: {
        Authd__V1__SetRolesRequest *in = (Authd__V1__SetRolesRequest *)call->input;
        rc = authd_store_user_set_roles(
            st, target, (const char *const *)in->roles, in->n_roles, authd_rpc_now_s(svc));
        if (rc == AUTHD_OK)
            rc = authd_store_user_get(st, target, &u);
        if (rc != AUTHD_OK)
            break;
        answer_user(call, &u, false);
        return;
    }
    case ACT_DISABLE:
    case ACT_ENABLE:
        rc = authd_store_user_set_status(st, target,
            act == ACT_DISABLE ? AUTHD_USER_DISABLED : AUTHD_USER_ACTIVE, authd_rpc_now_s(svc));
        if (rc != AUTHD_OK)
            break;
        if (act == ACT_DISABLE) {
            Authd__V1__DisableUserResponse resp = AUTHD__V1__DISABLE_USER_RESPONSE__INIT;
            authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
        } else {
            Authd__V1__EnableUserResponse resp = AUTHD__V1__ENABLE_USER_RESPONSE__INIT;
            authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
        }
        return;
    case ACT_DELETE: {
        rc = authd_store_user_delete(st, target, &n);
        if (rc != AUTHD_OK)
            break;
        authd_call_log_u64(call, "sessions_deleted", n);
        Authd__V1__DeleteUserResponse resp = AUTHD__V1__DELETE_USER_RESPONSE__INIT;
        resp.sessions_deleted = (uint32_t)n;
        authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
        return;
    }
    case ACT_REVOKE: {
        rc = authd_store_user_revoke_sessions(st, target, NULL, authd_rpc_now_s(svc), &n);
        if (rc != AUTHD_OK)
            break;
        authd_call_log_u64(call, "sessions_revoked", n);
        Authd__V1__RevokeSessionsResponse resp = AUTHD__V1__REVOKE_SESSIONS_RESPONSE__INIT;
        resp.sessions_revoked = (uint32_t)n;
        authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
        return;
    }
    case ACT_UNLOCK: {
        if ((rc = authd_store_user_unlock(st, target)) != AUTHD_OK)
            break;
        Authd__V1__UnlockUserResponse resp = AUTHD__V1__UNLOCK_USER_RESPONSE__INIT;
        authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
        return;
    }
    }
    fail_target(call, rc);
}

/* submit parses the target id (INVALID_ARGUMENT before any work) and hands
 * the action to the write pool. */
static void submit(authd_service *svc, authd_call *call, const char *user_id, enum admin_action act)
{
    struct admin_job *job;
    authd_code rc;

    if ((job = calloc(1, sizeof *job)) == NULL) {
        authd_rpc_fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    job->act = act;
    if (!parse_user_id(user_id, job->target)) {
        free(job);
        fail_bad_id(call);
        return;
    }
    if ((rc = authd_workpool_submit(authd_rpc_write_pool(svc), admin_work, job)) != AUTHD_OK) {
        free(job);
        authd_rpc_fail_busy(call, rc);
    }
}

/* ---- GetUser --------------------------------------------------------------- */

void authd_handle_get_user(authd_service *svc, authd_call *call)
{
    Authd__V1__GetUserRequest *in = (Authd__V1__GetUserRequest *)call->input;
    uint8_t target[AUTHD_ID_BYTES];
    authd_user u;
    authd_code rc;

    if (!parse_user_id(in->user_id, target)) {
        fail_bad_id(call);
        return;
    }
    audit(call, "get_user", target);
    if ((rc = authd_store_user_get(authd_rpc_store(svc), target, &u)) != AUTHD_OK) {
        fail_target(call, rc);
        return;
    }
    answer_user(call, &u, true);
}

/* ---- ListUsers ------------------------------------------------------------- */

static void list_work(void *arg)
{
    authd_call *call = arg;
    Authd__V1__ListUsersRequest *in = (Authd__V1__ListUsersRequest *)call->input;
    size_t cap = in->page_size == 0 ? LIST_PAGE_DEFAULT : in->page_size;
    authd_user *users = NULL;
    Authd__V1__User *views = NULL, **ptrs = NULL;
    char(*ids)[AUTHD_ID_HEX + 1] = NULL;
    char *(*roles)[AUTHD_ROLES_MAX] = NULL;
    size_t n = 0;
    bool more = false;
    authd_code rc;

    audit(call, "list_users", NULL);
    users = calloc(cap, sizeof *users);
    views = calloc(cap, sizeof *views);
    ptrs = calloc(cap, sizeof *ptrs);
    ids = calloc(cap, sizeof *ids);
    roles = calloc(cap, sizeof *roles);
    if (users == NULL || views == NULL || ptrs == NULL || ids == NULL || roles == NULL) {
        authd_rpc_fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        goto out;
    }
    /* Usernames are stored in canonical (lower-case) form: a prefix is
     * matched as its lower case, as Login matches a typed username. One
     * longer than a username is passed on as it is, for the store to refuse. */
    char prefix[AUTHD_USERNAME_MAX + 2];
    const char *pfx = in->prefix;
    size_t pl = strlen(in->prefix);
    if (pl < sizeof prefix) {
        for (size_t i = 0; i <= pl; i++) {
            char ch = in->prefix[i];
            prefix[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
        }
        pfx = prefix;
    }
    rc = authd_store_user_list(
        authd_rpc_store(call->svc), pfx, in->page_token, users, cap, &n, &more);
    if (rc == AUTHD_INVALID_ARGUMENT) {
        authd_call_finish(
            call, rc, "INVALID_ARGUMENT", "prefix/page_token: longer than a username", NULL);
        goto out;
    }
    if (rc != AUTHD_OK) {
        authd_rpc_fail_store(call, rc);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        authd_rpc_user_view(&views[i], &users[i], ids[i], roles[i]);
        ptrs[i] = &views[i];
    }
    authd_call_log_u64(call, "users", n);
    Authd__V1__ListUsersResponse resp = AUTHD__V1__LIST_USERS_RESPONSE__INIT;
    resp.users = ptrs;
    resp.n_users = n;
    resp.next_page_token = (more && n > 0) ? users[n - 1].username : "";
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
out:
    free(roles);
    free(ids);
    free(ptrs);
    free(views);
    free(users);
}

void authd_handle_list_users(authd_service *svc, authd_call *call)
{
    Authd__V1__ListUsersRequest *in = (Authd__V1__ListUsersRequest *)call->input;
    authd_code rc;

    if (in->page_size > AUTHD_USER_LIST_MAX) {
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_PAGE_SIZE",
            "page_size: must be at most 1000", NULL);
        return;
    }
    if ((rc = authd_workpool_submit(authd_rpc_write_pool(svc), list_work, call)) != AUTHD_OK)
        authd_rpc_fail_busy(call, rc);
}

/* ---- the writes -------------------------------------------------------------- */

void authd_handle_set_roles(authd_service *svc, authd_call *call)
{
    Authd__V1__SetRolesRequest *in = (Authd__V1__SetRolesRequest *)call->input;
    authd_error err;
    authd_code rc;

    if (in->n_roles > AUTHD_ROLES_MAX) {
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_ROLE", "roles: too many", NULL);
        return;
    }
    if ((rc = authd_validate_roles((const char *const *)in->roles, in->n_roles, &err))
        != AUTHD_OK) {
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        return;
    }
    submit(svc, call, in->user_id, ACT_SET_ROLES);
}

void authd_handle_disable_user(authd_service *svc, authd_call *call)
{
    submit(svc, call, ((Authd__V1__DisableUserRequest *)call->input)->user_id, ACT_DISABLE);
}

void authd_handle_enable_user(authd_service *svc, authd_call *call)
{
    submit(svc, call, ((Authd__V1__EnableUserRequest *)call->input)->user_id, ACT_ENABLE);
}

void authd_handle_delete_user(authd_service *svc, authd_call *call)
{
    submit(svc, call, ((Authd__V1__DeleteUserRequest *)call->input)->user_id, ACT_DELETE);
}

void authd_handle_revoke_sessions(authd_service *svc, authd_call *call)
{
    submit(svc, call, ((Authd__V1__RevokeSessionsRequest *)call->input)->user_id, ACT_REVOKE);
}

void authd_handle_unlock_user(authd_service *svc, authd_call *call)
{
    submit(svc, call, ((Authd__V1__UnlockUserRequest *)call->input)->user_id, ACT_UNLOCK);
}
