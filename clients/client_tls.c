/*
** client_tls.c — libauthd-client's TLS (see client_internal.h for the
** parts and their locks): the SSL_CTX made from the options (CA bundle,
** optional client certificate, the server name or address the certificate
** must match), a socket BIO that sends with MSG_NOSIGNAL, the handshake,
** and reads and writes on the SSL object with OpenSSL's errors turned into
** "would block" or a text saying why the connection failed. Everything
** here that touches the socket or the SSL object runs with ssl_mtx held.
*/
#include "client_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sysutil.h"

/* ---- options: server name, TLS material ---------------------------------------------------- */

/*
** read_pem reads a whole PEM file into a NUL-terminated heap buffer, so
** that a missing or unreadable file is reported by name before OpenSSL sees
** it. The caller frees *out (wiping it first if it holds a key).
*/
static int read_pem(const char *path, const char *what, char **out, size_t *lenp, authd_status *st)
{
    struct stat sb;
    char *buf = NULL;
    size_t len = 0;
    int fd = -1;
    int rc = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "cannot open %s %s: %s",
            what, path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0
        || sb.st_size > MAX_PEM_FILE) {
        rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "%s %s: not a regular file of 1 byte to 1 MiB", what, path);
        goto out;
    }
    if ((buf = malloc((size_t)sb.st_size + 1)) == NULL) {
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    while (len < (size_t)sb.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)sb.st_size - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "cannot read %s %s: %s", what, path, n < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *lenp = len;
    buf = NULL;
out:
    if (buf != NULL) {
        authd_wipe(buf, (size_t)sb.st_size + 1);
        free(buf);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static bool is_ip(const char *s)
{
    unsigned char a[16];

    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

static bool is_loopback(const char *s)
{
    static const unsigned char loop6[16] = { [15] = 1 };
    unsigned char a[16];

    if (inet_pton(AF_INET, s, a) == 1) {
        return a[0] == 127;
    }
    return inet_pton(AF_INET6, s, a) == 1 && memcmp(a, loop6, sizeof(loop6)) == 0;
}

/*
** pick_server_name chooses what the server certificate must match:
** server_name if set; else the URL's host if it is a DNS name; for a
** loopback address "localhost" (what dev certificates carry); for any other
** IP address that address. A DNS name is checked against the certificate's
** DNS names and sent as SNI; an IP address (also as server_name) against
** its IP addresses, with no SNI (RFC 6066 allows none for addresses).
*/
int cl_pick_server_name(const authd_client_options *o, authd_client *c, authd_status *st)
{
    const char *name;

    if (o->server_name != NULL && o->server_name[0] != '\0') {
        name = o->server_name;
    } else if (is_loopback(c->host)) {
        name = "localhost";
    } else {
        name = c->host;
    }
    if (strlen(name) >= sizeof(c->server_name)) {
        return cl_set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "server name too long");
    }
    snprintf(c->server_name, sizeof(c->server_name), "%s", name);
    c->name_is_ip = is_ip(name);
    return 0;
}

/* no_password refuses to ask for a PEM pass phrase (keys must be unencrypted). */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* ssl_reason is the text of OpenSSL's last error on this thread (and clears it). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *s = e != 0 ? ERR_reason_error_string(e) : NULL;

    ERR_clear_error();
    return s != NULL ? s : "unknown error";
}

/*
** load_pem_certs adds every certificate of a PEM buffer to the CA store
** (store != NULL) or, store == NULL, makes the first the client
** certificate and the rest its chain. Returns how many were used, or -1.
*/
static int load_pem_certs(SSL_CTX *ctx, X509_STORE *store, const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    int n = 0;

    if (b == NULL) {
        return -1;
    }
    while ((x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
        int ok;
        if (store != NULL) {
            ok = X509_STORE_add_cert(store, x) == 1;
            X509_free(x);
        } else if (n == 0) {
            ok = SSL_CTX_use_certificate(ctx, x) == 1;
            X509_free(x);
        } else if (!(ok = SSL_CTX_add0_chain_cert(ctx, x) == 1)) {
            X509_free(x);
        }
        if (!ok) {
            n = -1;
            break;
        }
        n++;
    }
    BIO_free(b);
    if (n > 0) {
        ERR_clear_error(); /* the end of the file reads as "no start line" */
    }
    return n;
}

/*
** make_tls builds the client's SSL_CTX: TLS 1.2 or newer; the server must
** present a certificate chaining to ca_file (the name is checked per
** connection, see pick_server_name); an optional client certificate for
** mutual TLS. Our copy of the key is wiped once OpenSSL has parsed it.
*/
int cl_make_tls(const authd_client_options *o, authd_client *c, authd_status *st)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    size_t ca_len = 0, cert_len = 0, key_len = 0;
    EVP_PKEY *pk = NULL;
    BIO *b = NULL;
    int rc = 0;

    if (o->ca_file == NULL || o->ca_file[0] == '\0') {
        rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "a CA file is required for tls+tcp:// (the server is always verified)");
        goto out;
    }
    if ((o->cert_file == NULL) != (o->key_file == NULL)) {
        rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "a client certificate needs both cert_file and key_file");
        goto out;
    }
    if ((rc = read_pem(o->ca_file, "CA file", &ca, &ca_len, st)) != 0) {
        goto out;
    }
    if (o->cert_file != NULL
        && ((rc = read_pem(o->cert_file, "certificate file", &cert, &cert_len, st)) != 0
            || (rc = read_pem(o->key_file, "key file", &key, &key_len, st)) != 0)) {
        goto out;
    }
    if ((c->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        rc = cl_set_status(
            st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "TLS setup: %s", ssl_reason());
        goto out;
    }
    /* nng's TLS engine (mbedTLS 2.28) speaks only TLS 1.2; allow 1.3. */
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Partial writes: our buffers are retried from where a write stopped. */
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(c->ctx, 1);
    SSL_CTX_set_default_read_buffer_len(c->ctx, TLS_READ_BUF);
    if (load_pem_certs(c->ctx, SSL_CTX_get_cert_store(c->ctx), ca, ca_len) <= 0) {
        rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "CA file %s: no usable certificate: %s", o->ca_file, ssl_reason());
        goto out;
    }
    if (cert != NULL) {
        if (load_pem_certs(c->ctx, NULL, cert, cert_len) <= 0) {
            rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "client certificate %s: no usable certificate: %s", o->cert_file, ssl_reason());
            goto out;
        }
        if ((b = BIO_new_mem_buf(key, (int)key_len)) == NULL
            || (pk = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL)) == NULL
            || SSL_CTX_use_PrivateKey(c->ctx, pk) != 1 || SSL_CTX_check_private_key(c->ctx) != 1) {
            rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "client certificate %s / key %s: %s (want an unencrypted PEM key that "
                "matches the certificate)",
                o->cert_file, o->key_file, ssl_reason());
            goto out;
        }
        c->has_cert = true;
    }
    if ((c->bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "authd-socket"))
        == NULL) {
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
out:
    EVP_PKEY_free(pk);
    BIO_free(b);
    if (key != NULL) {
        authd_wipe(key, key_len);
        free(key);
    }
    free(cert);
    free(ca);
    return rc;
}

/* ---- the socket BIO: send/recv with MSG_NOSIGNAL (no SIGPIPE) --------------------- */

static int sock_write(BIO *b, const char *p, int n)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    do {
        r = send(fd, p, (size_t)n, MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_write(b);
    }
    return (int)r;
}

static int sock_read(BIO *b, char *p, int n)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    do {
        r = recv(fd, p, (size_t)n, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        BIO_set_retry_read(b);
    }
    return (int)r;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* cl_tls_bio_methods fills m with the socket BIO's callbacks above; false
 * when OpenSSL refuses one. */
bool cl_tls_bio_methods(BIO_METHOD *m)
{
    return BIO_meth_set_write(m, sock_write) == 1 && BIO_meth_set_read(m, sock_read) == 1
        && BIO_meth_set_ctrl(m, sock_ctrl) == 1 && BIO_meth_set_create(m, sock_create) == 1;
}

/* ---- the connection: reads and writes (ssl_mtx held) --------------------------------- */

/*
** tls_err_reset empties this thread's OpenSSL error queue before an SSL
** call, as SSL_get_error needs. ERR_clear_error walks all 16 slots of the
** queue every time (about 800 instructions, two calls per request), while
** the queue is almost always empty already: io_fail and ssl_reason clear
** it after every failure. So look first (ERR_peek_error is cheap) and
** clear only what an earlier failure, or an application callback sharing
** this thread, left behind.
*/
void cl_tls_err_reset(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

/*
** io_fail records in c->io_err why an SSL call r failed, or returns 0 with
** *want set when it only has to wait for the socket.
*/
ssize_t cl_io_fail(authd_client *c, int r, uint32_t *want)
{
    int e = SSL_get_error(c->ssl, r);
    unsigned long ee = ERR_peek_last_error();

    c->io_tls_err = NULL;
    c->io_alert = false;
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = EPOLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want = EPOLLOUT;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        snprintf(c->io_err, sizeof(c->io_err), "closed by the server");
        break;
    case SSL_ERROR_SYSCALL:
        snprintf(c->io_err, sizeof(c->io_err), "%s",
            errno != 0 && ee == 0 ? strerror(errno) : "closed by the server");
        break;
    default:
        if (ERR_GET_LIB(ee) == ERR_LIB_SSL
            && ERR_GET_REASON(ee) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            snprintf(c->io_err, sizeof(c->io_err), "closed by the server");
        } else {
            c->io_alert
                = ERR_GET_LIB(ee) == ERR_LIB_SSL && ERR_GET_REASON(ee) >= SSL_AD_REASON_OFFSET;
            c->io_tls_err = ssl_reason();
            snprintf(c->io_err, sizeof(c->io_err), "TLS error: %s", c->io_tls_err);
        }
        break;
    }
    ERR_clear_error();
    return -1;
}

/* conn_write: bytes written (> 0); 0: would block (*want); -1: failed (c->io_err). */
ssize_t cl_conn_write(authd_client *c, const uint8_t *p, size_t n, uint32_t *want)
{
    ssize_t r;

    if (n > INT_MAX) {
        n = INT_MAX;
    }
    if (c->ssl == NULL) {
        do {
            r = send(c->fd, p, n, MSG_NOSIGNAL);
        } while (r < 0 && errno == EINTR);
        if (r >= 0) {
            return r;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = EPOLLOUT;
            return 0;
        }
        snprintf(c->io_err, sizeof(c->io_err), "%s", strerror(errno));
        return -1;
    }
    cl_tls_err_reset();
    errno = 0;
    r = SSL_write(c->ssl, p, (int)n);
    return r > 0 ? r : cl_io_fail(c, (int)r, want);
}

/* conn_read: bytes read (> 0); 0: would block (*want); -1: closed or failed (c->io_err). */
ssize_t cl_conn_read(authd_client *c, uint8_t *p, size_t n, uint32_t *want)
{
    ssize_t r;

    if (n > INT_MAX) {
        n = INT_MAX;
    }
    if (c->ssl == NULL) {
        do {
            r = recv(c->fd, p, n, 0);
        } while (r < 0 && errno == EINTR);
        if (r > 0) {
            return r;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            *want = EPOLLIN;
            return 0;
        }
        snprintf(
            c->io_err, sizeof(c->io_err), "%s", r == 0 ? "closed by the server" : strerror(errno));
        return -1;
    }
    cl_tls_err_reset();
    errno = 0;
    r = SSL_read(c->ssl, p, (int)n);
    return r > 0 ? r : cl_io_fail(c, (int)r, want);
}

/* conn_close frees the SSL object and closes the socket (ssl_mtx held). */
void cl_conn_close(authd_client *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl); /* and its BIO */
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd); /* leaves the epoll set too */
        c->fd = -1;
    }
    if (c->ai != NULL) {
        freeaddrinfo(c->ai);
        c->ai = c->ai_next = NULL;
    }
    c->ep_added = false;
    c->ep_events = 0;
}

/* ---- the handshake (ssl_mtx held) ---------------------------------------------------------- */

/* tls_begin puts an SSL object on the connected socket. */
int cl_tls_begin(authd_client *c, char *err, size_t cap)
{
    BIO *b;

    if ((c->ssl = SSL_new(c->ctx)) == NULL || (b = BIO_new(c->bio_meth)) == NULL) {
        snprintf(err, cap, "TLS setup: %s", ssl_reason());
        return -1;
    }
    BIO_set_data(b, (void *)(intptr_t)c->fd);
    SSL_set_bio(c->ssl, b, b);
    SSL_set_connect_state(c->ssl);
    if (c->name_is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->server_name) != 1) {
            snprintf(err, cap, "TLS setup: bad server address %.64s", c->server_name);
            return -1;
        }
    } else {
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set_tlsext_host_name(c->ssl, c->server_name) != 1
            || SSL_set1_host(c->ssl, c->server_name) != 1) {
            snprintf(err, cap, "TLS setup: bad server name %.64s", c->server_name);
            return -1;
        }
    }
    return 0;
}

/* tls_fail_text explains a failed handshake, with a hint at the usual causes. */
void cl_tls_fail_text(authd_client *c, char *err, size_t cap)
{
    long v = SSL_get_verify_result(c->ssl);

    if (v != X509_V_OK) {
        snprintf(err, cap,
            "TLS failure: the server certificate was not accepted: %s (check the CA file and "
            "the server name %.64s)",
            X509_verify_cert_error_string(v), c->server_name);
        return;
    }
    if (c->io_alert) {
        snprintf(err, cap, "TLS failure: the server refused the handshake: %.96s%s", c->io_tls_err,
            c->has_cert ? " (does it trust the client certificate?)"
                        : " (does it require a client certificate?)");
    } else if (c->io_tls_err == NULL) {
        snprintf(err, cap, "TLS failure: %.96s during the handshake%s", c->io_err,
            c->has_cert ? " (does the server trust the client certificate?)"
                        : " (does the server require a client certificate?)");
    } else {
        snprintf(err, cap, "TLS failure: %.96s (check the CA file and server name)", c->io_tls_err);
    }
}
