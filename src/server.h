/*
 * server.h — the transport: nng's SP req/rep wire format over TLS
 * (epoll + OpenSSL), envelopes, limits.
 *
 * Knows sockets, TLS and the envelope messages; hands each request to the
 * service layer as an authd_request and sends back whatever reply comes.
 * Knows nothing of LMDB or JWT.
 */
#ifndef AUTHD_SERVER_H
#define AUTHD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "service.h"
#include "status.h"

typedef struct authd_server authd_server;

typedef struct authd_server_options {
    const char *url; /* tls+tcp://host:port (tcp:// only if allow_plaintext) */
    const char *tls_cert; /* PEM file */
    const char *tls_key; /* PEM file */
    const char *tls_client_ca; /* NULL: no client certificates; else required */
    const char *tls_crl; /* NULL, or PEM CRLs of the client CAs (needs tls_client_ca) */
    bool allow_plaintext;
    size_t max_msg; /* largest request frame; larger closes the connection */
    unsigned max_inflight; /* requests in flight per connection before it is paused */
    unsigned max_connections; /* open connections; at the cap the oldest idle one is closed */
    unsigned max_conns_per_source; /* open connections per source (IPv4 address, IPv6 /64) */
    unsigned max_handshakes_per_source; /* unfinished TLS + SP handshakes per source */
    unsigned
        max_handshakes; /* unfinished handshakes in all; 0 = max_connections / 4, at least 16 */
    unsigned handshake_timeout_ms; /* TLS + SP handshake deadline; 0 = 10000 */
    unsigned idle_timeout_ms; /* nothing in flight, nothing to write: closed after this */
    unsigned frame_timeout_ms; /* a started frame must be complete within this */
    unsigned io_threads; /* event loops; 0 = one per CPU */
    bool echo; /* benchmarks only (authd-echo --engine authd): answer every
                * frame with its own bytes, no envelope, no service */
} authd_server_options;

/* authd_server_start listens and starts serving. On failure returns a code
 * and writes a one-line reason for the operator into err. The caller stops
 * the server with authd_server_drain + authd_server_close. */
AUTHD_MUST_CHECK authd_code authd_server_start(const authd_server_options *o, authd_service *svc,
    authd_server **out, char *err, size_t errlen);

/* authd_server_url is the URL actually bound (port 0 resolved). */
const char *authd_server_url(const authd_server *s);

/* authd_server_io_threads is the number of event loops running. */
unsigned authd_server_io_threads(const authd_server *s);

/* authd_server_reload_tls re-reads the TLS files (certificate, key, client
 * CA, CRL) into a new context for new connections; established ones keep
 * theirs. On failure the old context stays and err names the file;
 * AUTHD_UNIMPLEMENTED on a plaintext listener (nothing to reload). Any
 * thread. */
AUTHD_MUST_CHECK authd_code authd_server_reload_tls(authd_server *s, char *err, size_t errlen);

/* authd_server_loops_turning is true when every event loop has come round
 * to its deadline sweep (which it does at least 4 times a second while it
 * turns) within the last within_ms: none is wedged in a handler, a lock or
 * a system call. For the systemd watchdog (main.c). Any thread. */
bool authd_server_loops_turning(const authd_server *s, unsigned within_ms);
/* authd_server_check_tls builds (and frees) the TLS context o's files make,
 * as authd_server_start would: for `authd check-config`. On failure err
 * names the file and the cause (a missing file, a permission, a bad PEM,
 * a key that does not match the certificate). */
AUTHD_MUST_CHECK authd_code authd_server_check_tls(
    const authd_server_options *o, char *err, size_t errlen);

/* authd_server_drain refuses new connections (existing ones stay open so
 * replies in flight reach their callers), answers new requests
 * UNAVAILABLE and waits up to grace_ms for requests in flight to finish.
 * Returns how many were still in flight at the deadline. */
unsigned authd_server_drain(authd_server *s, int grace_ms);

/* authd_server_close closes the socket and frees everything. Accepts NULL.
 * Call only after the pools feeding replies have been destroyed or drained. */
void authd_server_close(authd_server *s);

#endif
