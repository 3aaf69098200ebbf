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
 * write the user or session on the write pool; Logout runs on the write
 * pool. Each completes from the pool it ends on.
 */
#ifndef AUTHD_SERVICE_H
#define AUTHD_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"
#include "password.h"
#include "status.h"
#include "store.h"
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
    char peer[AUTHD_PEER_MAX]; /* "ip:port" of the caller, for logs */
    /* With mTLS: the client certificate's subject CN, else its first SAN
     * (DNS, URI or email), printable ASCII; "" without a client
     * certificate. The caller policy matches on it. */
    char caller[AUTHD_CALLER_MAX];
    authd_source source; /* the caller's address as a limit key (IPv6: its /64) */
    uint64_t conn_id; /* the connection it came on: unique for the process's life, never 0 */
    uint64_t start_ns; /* CLOCK_MONOTONIC at receipt, for latency */
    authd_done_fn done;
    void *transport; /* the transport's own per-request state */
};

typedef struct authd_service authd_service;

typedef struct authd_service_options {
    authd_store *store; /* borrowed */
    authd_tokens *tokens; /* borrowed */
    authd_workpool *hash_pool; /* borrowed: argon2 work */
    authd_workpool *write_pool; /* borrowed: store writes without hashing */
    authd_pwparams pwparams; /* for new hashes and the dummy hash */
    int64_t token_ttl; /* seconds */
    int64_t (*clock)(void); /* Unix seconds; NULL = time(NULL). For tests. */
} authd_service_options;

/* authd_service_create makes the service; it computes the dummy hash that
 * unknown-user logins verify against, so it takes one hash time. Free with
 * authd_service_destroy (after the pools have drained). */
AUTHD_MUST_CHECK authd_code authd_service_create(
    const authd_service_options *o, authd_service **out);
void authd_service_destroy(authd_service *svc);

/* authd_dispatch routes req to its handler. req must stay valid until
 * req->done has been called. */
void authd_dispatch(authd_service *svc, authd_request *req);

/* authd_service_maintain does periodic upkeep (purging expired sessions).
 * Call it every minute or so from any thread. */
void authd_service_maintain(authd_service *svc);

/* authd_monotonic_ns: CLOCK_MONOTONIC in nanoseconds. */
uint64_t authd_monotonic_ns(void);

#endif
