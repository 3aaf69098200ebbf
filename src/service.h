/*
 * service.h — the RPC layer: what the transport hands authd, and back.
 *
 * The server (transport) fills an authd_request from a request envelope and
 * calls authd_dispatch(); exactly once, from some thread, the dispatch layer
 * calls req->done() with the reply. Nothing here knows nng; the service
 * knows the store, password hashing and tokens but no wire envelopes.
 *
 * Verify completes synchronously on the caller's thread (it only reads);
 * Register and Login hash (or check) the password on the hashing pool and
 * write the user or session on the write pool; Logout and Refresh run on
 * the write pool. Each completes from the pool it ends on.
 */
#ifndef AUTHD_SERVICE_H
#define AUTHD_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"
#include "password.h"
#include "policy.h"
#include "status.h"
#include "store.h"
#include "timer.h"
#include "token.h"
#include "workpool.h"

#define AUTHD_PEER_MAX   64
#define AUTHD_CALLER_MAX 128

typedef struct authd_reply {
    authd_code code;
    const char *message; /* safe to show; "" on OK */
    const char *reason; /* UPPER_SNAKE machine-readable reason, "" on OK */
    const uint8_t *body; /* serialized response (OK only); valid during done() */
    size_t body_len;
} authd_reply;

typedef struct authd_request authd_request;

/* Called exactly once per request. rep and everything it points to are
 * valid only during the call; the transport copies what it sends. */
typedef void (*authd_done_fn)(authd_request *req, const authd_reply *rep);

struct authd_request {
    const char *method; /* gRPC full name, not NUL-terminated */
    size_t method_len;
    const uint8_t *body; /* serialized request message; valid until done() */
    size_t body_len;
    uint64_t request_id;
    /* The envelope's authorization (the caller's own access token, with or
     * without "Bearer "), NUL-terminated, "" when absent; valid until
     * done(). Read only by the interceptor, for protected routes. */
    const char *authorization;
    char peer[AUTHD_PEER_MAX]; /* "ip:port" of the caller, for logs */
    /* With mTLS: the client certificate's identity: its first URI SAN
     * (a SPIFFE ID), else its first DNS SAN, else its subject CN;
     * printable ASCII; "" without a client certificate. The caller policy
     * matches on it. */
    char caller[AUTHD_CALLER_MAX];
    authd_source source; /* the caller's address as a limit key (IPv6: its /64) */
    uint64_t conn_id; /* the connection it came on: unique for the process's life, never 0 */
    bool trusted_frontend; /* the caller is a front-end whose ClientContext is believed: set
                              by dispatch from the mTLS caller policy (false without one) */
    uint64_t start_ns; /* CLOCK_MONOTONIC at receipt, for latency */
    authd_done_fn done;
    void *transport; /* the transport's own per-request state */
    /* Memory the transport lends for the request's own allocations (the
     * call, the unpacked input), or NULL: valid until done() is called.
     * What does not fit falls back to malloc (arena.h). */
    struct authd_arena *arena;
};

typedef struct authd_service authd_service;

/* Per-source limits, in events per minute (a token bucket whose burst is
 * the same number); 0 switches a limit off. "source" is the end user's
 * address from a trusted front-end's ClientContext (IPv6 by /64); "caller"
 * is the calling service: its mTLS identity (authd_request.caller) when it
 * has one, else its peer address. Without a trusted context only the caller
 * limits apply. */
typedef struct authd_source_limits {
    uint32_t source_login_failures;
    uint32_t caller_login_failures;
    uint32_t source_registrations;
    uint32_t caller_registrations;
    uint32_t max_keys; /* addresses remembered per limit; 0 = 65536 */
} authd_source_limits;

typedef struct authd_service_options {
    authd_store *store; /* borrowed */
    authd_tokens *tokens; /* borrowed */
    authd_workpool *hash_pool; /* borrowed: argon2 work */
    authd_workpool *write_pool; /* borrowed: store writes without hashing */
    authd_pwparams pwparams; /* for new hashes and the dummy hash */
    authd_timer *timer; /* borrowed: parks failed Logins until the floor; NULL = no floor */
    uint64_t fail_floor_ns; /* failed-Login floor from receipt; 0 = measure (with a timer) */
    int64_t token_ttl; /* seconds */
    /* Session lifetimes and the refresh grace window; idle_ttl == 0 = the
     * defaults below. Its token_ttl is ignored (token_ttl above is used). */
    authd_session_policy sessions;
    unsigned password_min_bits; /* strength of new passwords (0 = the default, strength.h) */
    int64_t (*clock)(void); /* Unix seconds; NULL = time(NULL). For tests. */
    authd_throttle_policy throttle; /* login schedule; all zero = the defaults below */
    authd_source_limits limits; /* all zero = no per-source limits */
    authd_policy_slot *policy; /* borrowed: the mTLS caller policy; NULL = every caller may call
                                  every method, and none is a front-end */
} authd_service_options;

/* The default login schedule: 5 free attempts, then 1 s doubling to 15
 * min, lockout at 100, a counter forgotten after 24 quiet hours. */
#define AUTHD_THROTTLE_DEFAULTS                                                                    \
    {                                                                                              \
        .free_attempts = 5, .base_delay_ms = 1000, .max_delay_ms = 900000,                         \
        .lockout = AUTHD_LOCKOUT_MAX, .reset_after_ms = 86400000                                   \
    }

/* The default session lifetimes: 7 days idle, 30 days in all, and 10 s
 * in which a refresh token's immediate parent may be replayed. */
#define AUTHD_SESSION_IDLE_TTL_DEFAULT (7 * 86400)
#define AUTHD_SESSION_MAX_TTL_DEFAULT  (30 * 86400)
#define AUTHD_REFRESH_GRACE_MS_DEFAULT 10000

/* authd_service_create makes the service; it computes the dummy hash that
 * unknown-user logins verify against, so it takes one hash time, and with a
 * timer but no fail_floor_ns it measures the failed-Login floor (a few more
 * verifies; logged as login_fail_floor). Free with authd_service_destroy
 * (after the pools and the timer have drained). */
AUTHD_MUST_CHECK authd_code authd_service_create(
    const authd_service_options *o, authd_service **out);
void authd_service_destroy(authd_service *svc);

/* authd_service_fail_floor_ns: the failed-Login floor in use (0 = none). */
uint64_t authd_service_fail_floor_ns(const authd_service *svc);

/* The one method a draining transport still hands to dispatch: Health,
 * which then answers DRAINING (read-only, no token, never blocks). */
#define AUTHD_METHOD_HEALTH "/authd.v1.Auth/Health"

/* authd_dispatch routes req to its handler. req must stay valid until
 * req->done has been called. */
void authd_dispatch(authd_service *svc, authd_request *req);

/* authd_service_policy is the caller policy slot (NULL: none). */
authd_policy_slot *authd_service_policy(const authd_service *svc);

/* authd_method_names writes the service's method short names, in the order
 * the caller policy numbers them (the proto's), into names (cap entries);
 * returns how many. The strings are static. */
size_t authd_method_names(const char **names, size_t cap);

/* authd_service_thread_start / _stop bracket the life of a thread that
 * runs handlers inline (an event loop): they give it and take back its own
 * read transaction (authd_store_reader_pin), so Verify renews it without
 * a lock shared by every loop. Start may fail (no reader free, then the
 * thread uses the pool as any other); stop must run on the same thread
 * before authd_service_destroy. */
void authd_service_thread_start(authd_service *svc);
void authd_service_thread_stop(authd_service *svc);

/* authd_service_maintain does periodic upkeep (purging expired sessions).
 * Call it every minute or so from any thread. */
void authd_service_maintain(authd_service *svc);

/* authd_login_canonical maps what a caller typed as a login to the form
 * the store keys it by: an address with '@' as a normalized email
 * (AUTHD_LOGIN_EMAIL), anything else as a canonical username
 * (AUTHD_LOGIN_USERNAME); text that is neither stays as typed
 * (AUTHD_LOGIN_OTHER: it names no user, but is still throttled). Returns
 * the kind and writes out (NUL-terminated); len must be 1..AUTHD_LOGIN_MAX.
 * Shared by Login and `authd user unlock`, so both name the same counter. */
int authd_login_canonical(const char *login, size_t len, char out[AUTHD_LOGIN_MAX + 1]);

/* authd_monotonic_ns: CLOCK_MONOTONIC in nanoseconds. */
uint64_t authd_monotonic_ns(void);

#endif
