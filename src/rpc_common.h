/*
 * rpc_common.h — what the handler files share: the end user behind a call
 * (ClientContext), the per-source limits on failed credentials, the
 * service's settings and the common failure answers.
 *
 * Internal to the RPC layer (service.c and the rpc_*.c handler files);
 * defined in service.c, which owns the service struct.
 */
#ifndef AUTHD_RPC_COMMON_H
#define AUTHD_RPC_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "netaddr.h"
#include "store.h"
#include "validate.h"

#define AUTHD_CLIENT_IP_MAX  45 /* INET6_ADDRSTRLEN - 1 */
#define AUTHD_USER_AGENT_MAX 256

/* Who a call is for: the end user as a trusted front-end describes them
 * (ClientContext), else nobody but the caller itself. */
typedef struct authd_who {
    bool trusted; /* ip/user_agent came from a trusted front-end's context */
    bool has_source; /* source is the end user's address */
    authd_source source;
    authd_source caller; /* the calling service's key: its mTLS identity hashed, else its address */
    const char *caller_id; /* that identity (points into the request), NULL when keyed by address */
    char ip[AUTHD_CLIENT_IP_MAX + 1];
    char user_agent[AUTHD_USER_AGENT_MAX + 1];
} authd_who;

/* authd_rpc_read_client checks the optional ClientContext cc and fills *w
 * (see service.c read_client). On failure returns the code and fills
 * *err; the call is not answered. */
AUTHD_MUST_CHECK authd_code authd_rpc_read_client(
    authd_call *call, const Authd__V1__ClientContext *cc, authd_who *w, authd_error *err);

/* authd_rpc_log_who adds the end user's context to the call's line. */
void authd_rpc_log_who(authd_call *call, const authd_who *w);

/* authd_rpc_over_credential_limit takes one token from the failed-login
 * limits (--source-login-failures, --caller-login-failures) for w and is
 * true when the call must be refused (RATE_LIMITED). A credential that
 * turns out good gives it back with authd_rpc_refund_credential_limit:
 * only failures count. Login and Refresh share these buckets: guessing a
 * password and guessing a refresh token are the same abuse. */
bool authd_rpc_over_credential_limit(authd_service *svc, const authd_who *w);
void authd_rpc_refund_credential_limit(authd_service *svc, const authd_who *w);

/* The service's parts and settings. */
authd_store *authd_rpc_store(const authd_service *svc);
authd_tokens *authd_rpc_tokens(const authd_service *svc);
authd_workpool *authd_rpc_write_pool(const authd_service *svc);
const authd_session_policy *authd_rpc_session_policy(const authd_service *svc);
int64_t authd_rpc_now_ms(const authd_service *svc); /* Unix ms (the test clock when set) */
/* Unix seconds: the clock Verify decides token and key lifetimes by (time(2),
 * which can lag CLOCK_REALTIME by a tick: use this one wherever an answer
 * must agree with Verify's, as the JWKS must). */
int64_t authd_rpc_now_s(const authd_service *svc);

/* Common answers: a failed store call (STORE_FULL or INTERNAL), a pool
 * that refused a job (OVERLOADED or SHUTTING_DOWN), RATE_LIMITED. */
void authd_rpc_fail_store(authd_call *call, authd_code rc);
void authd_rpc_fail_busy(authd_call *call, authd_code rc);
void authd_rpc_fail_rate_limited(authd_call *call, const char *what);

/* authd_rpc_hex writes n bytes as 2n lowercase hex digits + NUL. */
void authd_rpc_hex(const uint8_t *b, size_t n, char *out);

/* authd_rpc_user_view fills the public profile message from u; the
 * strings point into u, idhex and roles, which must outlive pu. */
void authd_rpc_user_view(Authd__V1__User *pu, const authd_user *u, char idhex[AUTHD_ID_HEX + 1],
    char *roles[AUTHD_ROLES_MAX]);

/* authd_rpc_authenticate checks the access token tok (len bytes) exactly
 * as Verify does and fills *id from the verified token and the store. On
 * AUTHD_UNAUTHENTICATED (the token fails; Verify's reasons) and on a store
 * failure (STORE_FULL / INTERNAL) sets *reason and *message and marks the
 * call's line; the call is not answered. For the interceptor. */
AUTHD_MUST_CHECK authd_code authd_rpc_authenticate(authd_call *call, const char *tok, size_t len,
    authd_identity *id, const char **reason, const char **message);

/* More of the service's parts and settings, for the account RPCs. */
authd_workpool *authd_rpc_hash_pool(const authd_service *svc);
const authd_throttle_policy *authd_rpc_throttle_policy(const authd_service *svc);
const authd_pwparams *authd_rpc_pwparams(const authd_service *svc);
unsigned authd_rpc_password_min_bits(const authd_service *svc);

#endif
