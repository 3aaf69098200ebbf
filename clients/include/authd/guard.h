/*
** guard.h — the protected-route middleware for services that link
** libauthd-client: one call per incoming HTTP request decides whether the
** request may go on, and who is behind it.
**
** A guard wraps an authd_client (shared, reused: one TLS connection for
** every request of the service) and asks authd's Verify, with the roles
** the route needs and, optionally, the expected audience. It answers with
** the HTTP status to send (200: go on; 401 with the WWW-Authenticate value
** it gives; 403; 503 when authd cannot be asked) and, on 200, the caller's
** identity (user id, username, roles, session id) as authd says it now.
**
**     authd_guard *g;
**     authd_guard_options go = { .cache_ttl_ms = 2000 };
**     if (authd_guard_new(client, &go, &g) != AUTHD_OK) ...
**     ...per request...
**     const char *need[] = { "billing" };
**     authd_guard_result r;
**     authd_guard_check(g, header("Authorization"), need, 1, &r);
**     if (r.http_status != 200) {
**         if (r.www_authenticate[0] != '\0')
**             set_header("WWW-Authenticate", r.www_authenticate);
**         return respond(r.http_status);
**     }
**     handle(request, r.user_id, r.username);
**
** The header value is checked before anything is sent: the scheme
** "Bearer" (any case) followed by one or more spaces and a token of
** RFC 6750's b64token characters, at most 4096 bytes. Anything else is
** 401 with error="invalid_request"; no header (NULL or "") is 401 with
** no error attribute (RFC 6750 §3.1); a token authd refuses is 401 with
** error="invalid_token"; a valid token lacking a role or for another
** audience is 403 with error="insufficient_scope". For a token carried in
** a cookie, authd_guard_check_token takes the bare value.
**
** The cache (off unless cache_ttl_ms > 0): positive answers only, kept at
** most cache_ttl_ms (at most 60 s; choose it well under the access
** token's life) and at most cache_entries of them. An entry is found by
** the token's session id (its "sid", read from the token's payload
** without trusting it) and used only when the presented token is byte for
** byte the one authd verified: a forged token naming a cached session
** misses and goes to authd; an entry is never keyed by a hash of the
** token's bytes. The roles a route needs are checked against the roles
** authd returned for the cached answer. The price: a logout, a revoked
** session or a removed role is seen by this service up to cache_ttl_ms
** late (Verify itself sees it at once); keep the TTL at 0 where that
** matters.
**
** Thread-safe: one guard may serve every thread of the service.
*/
#ifndef AUTHD_GUARD_H
#define AUTHD_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "authd/client.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AUTHD_GUARD_TOKEN_MAX 4096 /* longest token accepted, bytes */
#define AUTHD_GUARD_ROLES_MAX 16
#define AUTHD_GUARD_TTL_MAX   60000 /* ms */

typedef struct authd_guard authd_guard;

typedef struct authd_guard_options {
    uint32_t cache_ttl_ms; /* 0: no cache; at most AUTHD_GUARD_TTL_MAX */
    uint32_t cache_entries; /* 0: 1024 (with a TTL); at most 1048576 */
    const char *audience; /* the expected "aud", or NULL: not checked; copied */
} authd_guard_options;

typedef struct authd_guard_result {
    int http_status; /* 200, 401, 403, 500 (a bad route definition), 503 */
    char www_authenticate[128]; /* the WWW-Authenticate value for 401/403, else "" */
    authd_status status; /* authd's answer (code, reason, message); a local refusal: reason
                            "BAD_AUTHORIZATION_HEADER" or "NO_TOKEN" */
    int from_cache; /* 1: answered from the cache */
    /* On 200: the caller, as authd said. */
    char user_id[33];
    char session_id[33];
    char username[33];
    size_t n_roles;
    char roles[AUTHD_GUARD_ROLES_MAX][65];
    int64_t expires_at; /* the token's exp, Unix seconds */
} authd_guard_result;

/*
** authd_guard_new makes a guard that asks through c (borrowed: it must
** outlive the guard). Returns AUTHD_OK, AUTHD_INVALID_ARGUMENT (options)
** or AUTHD_RESOURCE_EXHAUSTED. Free with authd_guard_free.
*/
AUTHD_CLIENT_WUR int authd_guard_new(
    authd_client *c, const authd_guard_options *o, authd_guard **out);
void authd_guard_free(authd_guard *g);

/*
** authd_guard_check decides on an Authorization header value (NULL or ""
** when the request had none) for a route that needs every role of
** roles[0..n_roles) (n_roles may be 0). Fills *r; returns r->http_status.
*/
int authd_guard_check(authd_guard *g, const char *authorization, const char *const *roles,
    size_t n_roles, authd_guard_result *r);

/* authd_guard_check_token is authd_guard_check for a bare token (a cookie's
 * value). */
int authd_guard_check_token(authd_guard *g, const char *token, const char *const *roles,
    size_t n_roles, authd_guard_result *r);

#ifdef __cplusplus
}
#endif

#endif
