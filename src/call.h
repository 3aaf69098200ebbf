/*
 * call.h — one RPC in progress, shared by dispatch.c and service.c only.
 *
 * dispatch.c creates the call (method found, body unpacked), hands it to
 * the handler, and authd_call_finish() packs the response, answers the
 * transport, writes the request's log line and frees the call.
 *
 * One request, one line: a handler does not write lines of its own about a
 * request; it marks the call as an audit event (authd_call_audit) and adds
 * what the line should carry (authd_call_log_*), and finish writes it all
 * in the request's "rpc" line.
 */
#ifndef AUTHD_CALL_H
#define AUTHD_CALL_H

#include <protobuf-c/protobuf-c.h>

#include "log.h"
#include "service.h"

typedef struct authd_call authd_call;

/* The authenticated caller of a protected route: set by the interceptor
 * from the envelope's verified token and the store's current records, and
 * from nothing else. Handlers read it; none re-authenticates. */
typedef struct authd_identity {
    uint8_t user_id[AUTHD_ID_BYTES];
    uint8_t session_id[AUTHD_ID_BYTES]; /* the calling token's session (its sid) */
    int64_t token_exp; /* the calling token's exp, Unix seconds */
    int64_t session_expires_at; /* the session's end as stored */
    char username[AUTHD_USERNAME_MAX + 1];
    uint32_t n_roles;
    char roles[AUTHD_ROLES_MAX][AUTHD_ROLE_MAX + 1];
} authd_identity;
typedef void (*authd_handler)(authd_service *svc, authd_call *call);

struct authd_call {
    authd_service *svc;
    authd_request *req;
    const ProtobufCMethodDescriptor *method;
    ProtobufCMessage *input; /* unpacked request; freed by finish */
    bool has_user; /* user_id known: goes into the log line */
    uint8_t user_id[AUTHD_ID_BYTES];
    const char *audit; /* audit event of the line ("login_failure", ...), or NULL */
    int log_gate; /* source gate for a failure line: 0 not asked, 1 allowed, -1 held back */
    bool has_gate_source; /* gate on gate_source (an end user's address), not req->source */
    authd_source gate_source;
    authd_logfields log; /* the handler's fields for the line */
    /* The caller, on a protected route (NULL on a public one): owned by the
     * call, freed by finish. */
    const authd_identity *identity;
};

/* authd_call_audit marks the call's line as the audit event event (a
 * string literal): the line gets "audit":event after "event":"rpc". */
void authd_call_audit(authd_call *call, const char *event);

/* authd_call_log_wanted is true when a failure line for this call will be
 * written (INFO enabled and the caller's source not over its log rate).
 * The gate is asked once per call; finish reuses the answer. Use it to skip
 * work (a fingerprint) for a line that would be held back. */
bool authd_call_log_wanted(authd_call *call);

/* Fields for the call's line (after the standard ones). */
void authd_call_log_str(authd_call *call, const char *key, const char *val);
void authd_call_log_hex(authd_call *call, const char *key, const uint8_t *bytes, size_t len);
void authd_call_log_u64(authd_call *call, const char *key, uint64_t val);
void authd_call_log_bool(authd_call *call, const char *key, bool val);

/* authd_call_finish answers the call and frees it (and its input): call must
 * not be used afterwards. On code == AUTHD_OK resp is the response (packed
 * here, still owned by the caller); otherwise resp is ignored and message is
 * what the caller sees. For AUTHD_INTERNAL the message is replaced by one
 * that carries only the request id. */
void authd_call_finish(authd_call *call, authd_code code, const char *reason, const char *message,
    const ProtobufCMessage *resp);

/* Route flags (dispatch.c's routes[]): what the interceptor checks before
 * the handler runs. */
#define AUTHD_ROUTE_AUTH 1u /* an authenticated caller (envelope authorization) */

/* The handlers, one per rpc (service.c). */
void authd_handle_register(authd_service *svc, authd_call *call);
void authd_handle_login(authd_service *svc, authd_call *call);
void authd_handle_logout(authd_service *svc, authd_call *call);
void authd_handle_verify(authd_service *svc, authd_call *call);
void authd_handle_get_jwks(authd_service *svc, authd_call *call); /* rpc_jwks.c */
void authd_handle_me(authd_service *svc, authd_call *call); /* rpc_account.c */
void authd_handle_logout_all(authd_service *svc, authd_call *call); /* rpc_account.c */
void authd_handle_change_password(authd_service *svc, authd_call *call); /* rpc_account.c */
void authd_handle_get_user(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_list_users(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_set_roles(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_disable_user(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_enable_user(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_delete_user(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_revoke_sessions(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_unlock_user(authd_service *svc, authd_call *call); /* rpc_admin.c */
void authd_handle_health(authd_service *svc, authd_call *call); /* rpc_health.c */

#endif
