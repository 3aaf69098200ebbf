/*
 * dispatch.c — the method table, request decoding and the reply path.
 *
 * The method table is built from protoc-c's service descriptor, so a method
 * added to auth.proto is known here (and answered UNIMPLEMENTED) until a
 * handler is written. Every reply goes through authd_call_finish, which is
 * also where each request gets its one log line: "event":"rpc", with
 * "audit" set for audit events and the handler's fields appended. A line
 * about a failure the caller caused is written only if the caller's source
 * is within its log rate (authd_log_source_allow); a successful Verify's
 * line is debug-level; INTERNAL errors are always written, at error.
 *
 * The interceptor runs before every handler. With an mTLS caller policy it
 * checks that the calling service (req->caller, the client certificate's
 * identity) may call the method, and marks front-ends, whose ClientContext
 * the handlers then believe. For protected routes (routes[]: flags and
 * role) it then authenticates the caller's own token from the envelope,
 * exactly as Verify does, checks the route's role, and leaves the caller's
 * identity in the call for the handler.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "arena.h"
#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "log.h"
#include "policy.h"
#include "rpc_common.h"
#include "rpc_refresh.h"
#include "validate.h"

#define METHOD_PREFIX "/authd.v1.Auth/"

/*
 * A route: one row per rpc, declaring once what the interceptor checks
 * before its handler runs. flags: AUTHD_ROUTE_AUTH for a caller who must
 * present their own access token in the envelope; role: the role that
 * caller must hold now (by the store's record), or NULL. The admin RPCs
 * slot in as rows like { "GetUser", authd_handle_get_user,
 * AUTHD_ROUTE_AUTH, "admin" }; no handler checks a token or a role itself.
 */
struct route {
    const char *name; /* short name, as in the proto */
    authd_handler fn;
    unsigned flags; /* AUTHD_ROUTE_* */
    const char *role; /* required role (implies AUTHD_ROUTE_AUTH), or NULL */
};

/* In the order of auth.proto's methods (find_method relies on it for
 * speed, not for correctness). */
static const struct route routes[] = {
    { "Register", authd_handle_register, 0, NULL },
    { "Login", authd_handle_login, 0, NULL },
    { "Logout", authd_handle_logout, 0, NULL },
    { "Verify", authd_handle_verify, 0, NULL },
    { "Refresh", authd_handle_refresh, 0, NULL },
    { "GetJwks", authd_handle_get_jwks, 0, NULL },
    { "Me", authd_handle_me, AUTHD_ROUTE_AUTH, NULL },
    { "LogoutAll", authd_handle_logout_all, AUTHD_ROUTE_AUTH, NULL },
    { "ChangePassword", authd_handle_change_password, AUTHD_ROUTE_AUTH, NULL },
    { "GetUser", authd_handle_get_user, AUTHD_ROUTE_AUTH, "admin" },
    { "ListUsers", authd_handle_list_users, AUTHD_ROUTE_AUTH, "admin" },
    { "SetRoles", authd_handle_set_roles, AUTHD_ROUTE_AUTH, "admin" },
    { "DisableUser", authd_handle_disable_user, AUTHD_ROUTE_AUTH, "admin" },
    { "EnableUser", authd_handle_enable_user, AUTHD_ROUTE_AUTH, "admin" },
    { "DeleteUser", authd_handle_delete_user, AUTHD_ROUTE_AUTH, "admin" },
    { "RevokeSessions", authd_handle_revoke_sessions, AUTHD_ROUTE_AUTH, "admin" },
    { "UnlockUser", authd_handle_unlock_user, AUTHD_ROUTE_AUTH, "admin" },
    { "Health", authd_handle_health, 0, NULL },
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

uint64_t authd_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* find_method maps a full gRPC name to the proto's method descriptor and our
 * route; false when the name is not one of authd.v1.Auth's methods. */
static bool find_method(
    const char *name, size_t len, const ProtobufCMethodDescriptor **md, const struct route **rt)
{
    const ProtobufCServiceDescriptor *sd = &authd__v1__auth__descriptor;
    size_t plen = sizeof(METHOD_PREFIX) - 1;

    if (len <= plen || memcmp(name, METHOD_PREFIX, plen) != 0)
        return false;
    name += plen;
    len -= plen;
    for (unsigned i = 0; i < sd->n_methods; i++) {
        const char *mn = sd->methods[i].name;
        if (strlen(mn) == len && memcmp(mn, name, len) == 0) {
            *md = &sd->methods[i];
            *rt = NULL;
            /* routes[] is in the proto's order: row i is method i (one
             * compare on the hot path); a misordered row is still found. */
            if (i < N_ROUTES && strcmp(routes[i].name, mn) == 0) {
                *rt = &routes[i];
                return true;
            }
            for (size_t j = 0; j < N_ROUTES; j++)
                if (strcmp(routes[j].name, mn) == 0)
                    *rt = &routes[j];
            return true;
        }
    }
    return false;
}

static void reply_direct(
    authd_request *req, authd_code code, const char *reason, const char *message)
{
    authd_reply rep = { code, message, reason, NULL, 0 };
    authd_logrec r;

    if (authd_log_enabled(AUTHD_LOG_INFO) && authd_log_source_allow(&req->source)
        && authd_log_begin(&r, AUTHD_LOG_INFO, "rpc")) {
        authd_log_u64_str(&r, "request_id", req->request_id);
        authd_log_strn(&r, "method", req->method, req->method_len);
        authd_log_str(&r, "peer", req->peer);
        authd_log_str(&r, "code", authd_code_name(code));
        authd_log_str(&r, "reason", reason);
        authd_log_u64(&r, "latency_us", (authd_monotonic_ns() - req->start_ns) / 1000);
        authd_log_end(&r);
    }
    req->done(req, &rep);
}

/* read_varint reads a base-128 varint; false when it runs off the end or
 * is longer than 10 bytes. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/*
 * wire_strings_ok walks a serialized message against its descriptor and
 * checks every string field (nested messages too, to a small depth) for
 * valid UTF-8 without NUL. It must look at the wire bytes: protobuf-c 1.4.1
 * checks neither, and after unpacking an embedded NUL is invisible
 * ("admin\0x" unpacks as the C string "admin"). Malformed wire data is
 * refused here too; unpack would refuse it anyway.
 */
static bool wire_strings_ok(
    const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, int depth)
{
    const uint8_t *end;
    uint64_t tag, n;

    if (depth > 8)
        return false;
    if (len == 0) /* an absent body is NULL, and NULL + 0 is undefined in C */
        return true;
    end = p + len;
    while (p < end) {
        if (!read_varint(&p, end, &tag))
            return false;
        switch (tag & 7) {
        case 0:
            if (!read_varint(&p, end, &n))
                return false;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return false;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return false;
            p += 4;
            break;
        case 2: {
            if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return false;
            const ProtobufCFieldDescriptor *f = NULL;
            if ((tag >> 3) <= UINT32_MAX)
                f = protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING
                && !authd_utf8_valid((const char *)p, (size_t)n))
                return false;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE
                && !wire_strings_ok(f->descriptor, p, (size_t)n, depth + 1))
                return false;
            p += n;
            break;
        }
        default: /* groups (3, 4) and invalid wire types */
            return false;
        }
    }
    return true;
}

/* wipe_strings zeroes every string field of an unpacked request before it
 * is freed: requests carry passwords and bearer tokens. */
static void wipe_strings(ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)((char *)m + f->quantifier_offset);
            char **v = *(char ***)((char *)m + f->offset);
            for (size_t j = 0; j < n; j++)
                if (v[j] != NULL)
                    sodium_memzero(v[j], strlen(v[j]));
        } else {
            char *v = *(char **)((char *)m + f->offset);
            if (v != NULL && v != (char *)f->default_value)
                sodium_memzero(v, strlen(v));
        }
    }
}

/* ---- the call's log line ------------------------------------------------- */

void authd_call_audit(authd_call *call, const char *event)
{
    call->audit = event;
}

/* gate asks the source gate once per call: for the end user a trusted
 * front-end named when the handler set one, else for the peer. */
static bool gate(authd_call *call)
{
    if (call->log_gate == 0)
        call->log_gate = authd_log_source_allow(
                             call->has_gate_source ? &call->gate_source : &call->req->source)
            ? 1
            : -1;
    return call->log_gate > 0;
}

bool authd_call_log_wanted(authd_call *call)
{
    return authd_log_enabled(AUTHD_LOG_INFO) && gate(call);
}

void authd_call_log_str(authd_call *call, const char *key, const char *val)
{
    authd_logfields_str(&call->log, key, val);
}

void authd_call_log_hex(authd_call *call, const char *key, const uint8_t *bytes, size_t len)
{
    authd_logfields_hex(&call->log, key, bytes, len);
}

void authd_call_log_u64(authd_call *call, const char *key, uint64_t val)
{
    authd_logfields_u64(&call->log, key, val);
}

void authd_call_log_bool(authd_call *call, const char *key, bool val)
{
    authd_logfields_bool(&call->log, key, val);
}

/* bearer_token finds the token in an envelope's authorization value:
 * "Bearer <token>" (the scheme in any case, RFC 6750 / RFC 9110, one or
 * more spaces) or the bare token. Sets *len; NULL when there is none. A
 * value that is neither is handed on as it is and fails as a malformed
 * token. */
static const char *bearer_token(const char *auth, size_t *len)
{
    if (auth == NULL || auth[0] == '\0')
        return NULL;
    if (strncasecmp(auth, "bearer ", 7) == 0) {
        auth += 7;
        while (*auth == ' ')
            auth++;
        if (*auth == '\0')
            return NULL;
    }
    *len = strnlen(auth, AUTHD_TOKEN_MAX + 1);
    return auth;
}

/*
 * authenticate_caller is the interceptor's half for protected routes: the
 * envelope's token is checked as Verify checks one (authd_rpc_authenticate,
 * the same code), then the route's role against the store's current
 * roles. The identity it leaves in call->identity comes from the verified
 * token and the store only. Failures: UNAUTHENTICATED (NO_AUTHORIZATION, or
 * Verify's reasons) as the audit event "auth_failure"; PERMISSION_DENIED /
 * MISSING_ROLE as "auth_denied".
 */
static authd_code authenticate_caller(
    const struct route *rt, authd_call *call, const char **reason, const char **message)
{
    authd_request *req = call->req;
    authd_identity *id = NULL;
    size_t len = 0;
    const char *tok = bearer_token(req->authorization, &len);

    if (tok == NULL) {
        authd_call_audit(call, "auth_failure");
        *reason = "NO_AUTHORIZATION";
        *message = "this method needs the caller's access token in the envelope's authorization";
        return AUTHD_UNAUTHENTICATED;
    }
    id = req->arena != NULL ? authd_arena_alloc(req->arena, sizeof *id) : malloc(sizeof *id);
    if (id == NULL) {
        *reason = "OVERLOADED";
        *message = "server is overloaded";
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    call->identity = id; /* freed by finish, whatever happens next */
    authd_code rc = authd_rpc_authenticate(call, tok, len, id, reason, message);
    if (rc != AUTHD_OK)
        return rc;
    if (rt->role != NULL) {
        bool held = false;
        for (uint32_t i = 0; i < id->n_roles && !held; i++)
            held = strcmp(id->roles[i], rt->role) == 0;
        if (!held) {
            authd_call_audit(call, "auth_denied");
            authd_call_log_str(call, "missing_role", rt->role);
            *reason = "MISSING_ROLE";
            *message = "the caller does not hold the role this method needs";
            return AUTHD_PERMISSION_DENIED;
        }
    }
    return AUTHD_OK;
}

/*
 * intercept: the caller policy, then, for protected routes, authentication
 * of the caller's own token and its role (authenticate_caller). On refusal
 * returns the code and sets *reason and *message. The policy is consulted for every method (the
 * method's index is its place in the service descriptor, the order authd_method_names gives the
 * policy loader); a refused caller's line is an audit event naming it.
 */
static authd_code intercept(
    const struct route *rt, authd_call *call, const char **reason, const char **message)
{
    authd_policy_slot *slot = authd_service_policy(call->svc);

    if (slot != NULL) {
        authd_request *req = call->req;
        unsigned mi = (unsigned)(call->method - authd__v1__auth__descriptor.methods);
        bool frontend = false;
        const authd_policy *p = authd_policy_enter(slot);
        if (p == NULL) { /* this thread's reader record: out of memory */
            *reason = "OVERLOADED";
            *message = "server is overloaded";
            return AUTHD_RESOURCE_EXHAUSTED;
        }
        bool ok = authd_policy_allows(p, req->caller, mi, &frontend);
        authd_policy_exit();
        if (!ok) {
            authd_call_audit(call, "caller_denied");
            authd_call_log_str(call, "caller", req->caller[0] != '\0' ? req->caller : "(none)");
            *reason = "CALLER_NOT_ALLOWED";
            *message = "the caller policy does not allow this caller this method";
            return AUTHD_PERMISSION_DENIED;
        }
        req->trusted_frontend = frontend;
    }
    if (rt->flags == 0 && rt->role == NULL)
        return AUTHD_OK; /* public rpc */
    return authenticate_caller(rt, call, reason, message);
}

size_t authd_method_names(const char **names, size_t cap)
{
    const ProtobufCServiceDescriptor *sd = &authd__v1__auth__descriptor;
    size_t n = sd->n_methods < cap ? sd->n_methods : cap;

    for (size_t i = 0; i < n; i++)
        names[i] = sd->methods[i].name;
    return n;
}

void authd_dispatch(authd_service *svc, authd_request *req)
{
    const ProtobufCMethodDescriptor *md = NULL;
    const struct route *rt = NULL;
    authd_call *call = NULL;

    if (!find_method(req->method, req->method_len, &md, &rt) || rt == NULL) {
        reply_direct(req, AUTHD_UNIMPLEMENTED, "UNKNOWN_METHOD", "unknown method");
        return;
    }
    if ((call = req->arena != NULL ? authd_arena_alloc(req->arena, sizeof *call)
                                   : malloc(sizeof *call))
        == NULL) {
        reply_direct(req, AUTHD_RESOURCE_EXHAUSTED, "OVERLOADED", "server is overloaded");
        return;
    }
    memset(call, 0, sizeof *call);
    call->svc = svc;
    call->req = req;
    call->method = md;
    if (!wire_strings_ok(md->input, req->body, req->body_len, 0)) {
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "INVALID_ENCODING",
            "request is malformed or a string field is not valid UTF-8 without NUL", NULL);
        return;
    }
    ProtobufCAllocator al;
    if (req->arena != NULL)
        al = authd_arena_allocator(req->arena);
    call->input = protobuf_c_message_unpack(
        md->input, req->arena != NULL ? &al : NULL, req->body_len, req->body);
    if (call->input == NULL) {
        authd_call_finish(call, AUTHD_INVALID_ARGUMENT, "BAD_REQUEST",
            "request body does not parse as the method's request message", NULL);
        return;
    }
    const char *why = NULL, *msg = NULL;
    authd_code rc = intercept(rt, call, &why, &msg);
    if (rc != AUTHD_OK) {
        authd_call_finish(call, rc, why, msg, NULL);
        return;
    }
    rt->fn(svc, call);
}

/*
 * authd_call_finish: the one exit of every call. The response is packed
 * into a stack buffer when small (all of authd's are), so a Verify reply
 * costs no allocation here.
 */
void authd_call_finish(authd_call *call, authd_code code, const char *reason, const char *message,
    const ProtobufCMessage *resp)
{
    authd_request *req = call->req;
    uint8_t stackbuf[2048];
    uint8_t *body = NULL;
    size_t body_len = 0;
    char internal_msg[96];
    authd_logrec r;

    if (code == AUTHD_OK && resp != NULL) {
        body_len = protobuf_c_message_get_packed_size(resp);
        body = body_len <= sizeof stackbuf ? stackbuf : malloc(body_len);
        if (body == NULL) {
            code = AUTHD_RESOURCE_EXHAUSTED;
            reason = "OVERLOADED";
            message = "server is overloaded";
            body_len = 0;
        } else {
            protobuf_c_message_pack(resp, body);
        }
    }
    if (code == AUTHD_OK) {
        reason = "";
        message = "";
    } else if (code == AUTHD_INTERNAL) {
        snprintf(internal_msg, sizeof internal_msg, "internal error (request id %" PRIu64 ")",
            req->request_id);
        message = internal_msg;
        reason = "INTERNAL";
    }

    /* A successful Verify is the hot path: its line is debug-level. */
    authd_log_level lvl = AUTHD_LOG_INFO;
    if (code == AUTHD_OK && strcmp(call->method->name, "Verify") == 0)
        lvl = AUTHD_LOG_DEBUG;
    else if (code == AUTHD_INTERNAL)
        lvl = AUTHD_LOG_ERROR;
    bool gated = code != AUTHD_OK && code != AUTHD_INTERNAL;
    if (authd_log_enabled(lvl) && (!gated || gate(call)) && authd_log_begin(&r, lvl, "rpc")) {
        if (call->audit != NULL)
            authd_log_str(&r, "audit", call->audit);
        authd_log_u64_str(&r, "request_id", req->request_id);
        authd_log_str(&r, "method", call->method->name);
        authd_log_str(&r, "peer", req->peer);
        if (call->has_user)
            authd_log_hex(&r, "user_id", call->user_id, sizeof call->user_id);
        authd_log_str(&r, "code", authd_code_name(code));
        if (reason[0] != '\0')
            authd_log_str(&r, "reason", reason);
        authd_log_u64(&r, "latency_us", (authd_monotonic_ns() - req->start_ns) / 1000);
        authd_log_fields(&r, &call->log);
        authd_log_end(&r);
    }

    authd_reply rep = { code, message, reason, body, body_len };
    ProtobufCAllocator al;
    if (req->arena != NULL)
        al = authd_arena_allocator(req->arena);
    if (call->identity != NULL) {
        authd_identity *id = (authd_identity *)call->identity;
        if (req->arena != NULL)
            authd_arena_free(req->arena, id);
        else
            free(id);
    }
    if (call->input != NULL) {
        wipe_strings(call->input);
        protobuf_c_message_free_unpacked(call->input, req->arena != NULL ? &al : NULL);
    }
    if (req->arena != NULL)
        authd_arena_free(req->arena, call);
    else
        free(call);
    req->done(req, &rep);
    if (body != NULL) {
        sodium_memzero(body, body_len); /* may hold an access token */
        if (body != stackbuf)
            free(body);
    }
}
