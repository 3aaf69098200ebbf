/*
 * net/tls.h — the server's TLS configuration: contexts built from files,
 * and a client certificate's identity.
 *
 * Knows OpenSSL and files; must not know connections, loops, SP or the
 * service (see net/tls.c).
 */
#ifndef AUTHD_NET_TLS_H
#define AUTHD_NET_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "status.h"

/* The files a server TLS context is made of. Borrowed strings. */
typedef struct authd_tls_files {
    const char *cert, *key; /* PEM; both required */
    const char *client_ca; /* NULL: no client certificates; else required */
    const char *crl; /* NULL, or PEM CRLs of the client CAs (needs client_ca) */
} authd_tls_files;

/* authd_tls_ctx_new builds a server TLS context from the files, at start,
 * on every reload and for check-config. On success *out is a new context
 * the caller owns (SSL_CTX_free); on failure nothing is kept and err names
 * the file and the cause (missing, permission, bad PEM, key mismatch). */
AUTHD_MUST_CHECK authd_code authd_tls_ctx_new(
    const authd_tls_files *f, SSL_CTX **out, char *err, size_t errlen);

/* authd_tls_caller writes into out (cap bytes) the identity of ssl's client
 * certificate: its first URI SAN, else its first DNS SAN, else its CN;
 * "" when there is none or the chosen name is not valid for its kind.
 * Logs it at debug level with peer (borrowed). */
void authd_tls_caller(const SSL *ssl, const char *peer, char *out, size_t cap);

#endif
