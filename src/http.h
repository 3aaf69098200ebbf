/*
 * http.h — the side port: a small HTTP/1.1 listener (libmicrohttpd) for
 * operators and proxies, beside the main SP/TLS port.
 *
 * Routes, one row per path in http.c's routes[]: /healthz (the process
 * answers), /readyz (health.h's checks), and the endpoints that call the
 * service layer through authd_dispatch exactly as the main port does (no
 * second implementation of any RPC). A protocol layer: it knows HTTP,
 * sockets and the request/reply types of service.h, never LMDB or JWT.
 */
#ifndef AUTHD_HTTP_H
#define AUTHD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "service.h"
#include "status.h"

typedef struct authd_http authd_http;

typedef struct authd_http_options {
    const char *url; /* http://HOST:PORT or https://HOST:PORT; port 0 picks one */
    bool allow_plaintext; /* http:// on a non-loopback address */
    const char *tls_cert; /* PEM file (https only) */
    const char *tls_key; /* PEM file (https only) */
    unsigned threads; /* libmicrohttpd's event-loop threads; 0 = 1 */
    unsigned max_connections; /* open connections; 0 = 1024 */
    unsigned max_conns_per_source; /* open connections per peer address; 0 = 64 */
    unsigned timeout_s; /* an idle connection is closed after this; 0 = 30 */
    const char *auth_cookie; /* forward-auth: the cookie holding the token, or NULL */
    const char *trusted_proxies; /* CIDR list (comma/space separated) or NULL */
} authd_http_options;

/* authd_http_start binds the side port and starts its threads; svc is
 * borrowed and must outlive the listener. On failure writes a one-line
 * cause naming the flag or file to err. Stop with authd_http_stop. */
AUTHD_MUST_CHECK authd_code authd_http_start(
    const authd_http_options *o, authd_service *svc, authd_http **out, char *err, size_t errlen);

/* authd_http_check_url applies start-up's checks of o->url (the form, the
 * host resolves, plaintext only on loopback unless o->allow_plaintext)
 * without binding: for `authd check-config`. On failure err says why. */
AUTHD_MUST_CHECK authd_code authd_http_check_url(
    const authd_http_options *o, char *err, size_t errlen);

/* authd_http_url is the URL actually bound (port 0 resolved). */
const char *authd_http_url(const authd_http *h);

/* authd_http_reload_tls puts a new certificate and key (PEM files) in
 * force on an https:// side port (SIGHUP): the pair is checked first, and
 * on any failure err says why and the pair in force stays.
 * AUTHD_UNIMPLEMENTED for a plaintext side port (nothing to reload). Not
 * thread-safe against authd_http_stop: call both from one thread. */
AUTHD_MUST_CHECK authd_code authd_http_reload_tls(
    authd_http *h, const char *cert, const char *key, char *err, size_t errlen);

/* authd_http_stop closes the listener, waits for its threads (requests in
 * progress finish first) and frees everything. Accepts NULL. Call before
 * the service is destroyed. */
void authd_http_stop(authd_http *h);

#endif
