/*
 * net/tls.c — the server's TLS configuration: a context built from the
 * certificate, key, client CA and CRL files (at start, on reload, for
 * check-config), with start-up errors in the operator's words, and the
 * identity a client certificate names (mTLS).
 *
 * Knows OpenSSL and files. Must not know connections, event loops, SP,
 * envelopes or the service: the server (src/server.c) owns the context in
 * force and swaps it on reload; a connection asks here only for its
 * caller's name.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "net/tls.h"

/*
 * ssl_err says which file failed and why, in the operator's words. OpenSSL
 * reports a missing or unreadable file as a system error first and
 * "SSL routines::system lib" last, so the whole queue is read: a system
 * error becomes strerror ("No such file or directory"), anything else the
 * first reason (a bad PEM: "PEM routines::no start line").
 */
static void ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e, first = 0;
    int sys = 0;
    char buf[256];

    while ((e = ERR_get_error()) != 0) {
        if (ERR_SYSTEM_ERROR(e) && sys == 0)
            sys = ERR_GET_REASON(e);
        if (first == 0)
            first = e;
    }
    if (sys != 0) {
        snprintf(err, errlen, "cannot read TLS %s %s: %s", what, file, strerror(sys));
        return;
    }
    const char *lib = first != 0 ? ERR_lib_error_string(first) : NULL;
    const char *why = first != 0 ? ERR_reason_error_string(first) : NULL;
    if (why == NULL) {
        ERR_error_string_n(first, buf, sizeof buf);
        why = buf;
    }
    snprintf(err, errlen, "TLS %s %s rejected: %s%s%s", what, file, lib != NULL ? lib : "",
        lib != NULL ? ": " : "", first != 0 ? why : "unknown error");
}

/* check_readable opens path as OpenSSL will, so a missing file or a
 * permission problem is named as such (with the path) before OpenSSL
 * turns it into a generic error. */
static authd_code check_readable(const char *what, const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot read TLS %s %s: %s", what, path, strerror(e));
        return e == ENOENT ? AUTHD_NOT_FOUND : AUTHD_PERMISSION_DENIED;
    }
    bool reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!reg) {
        snprintf(err, errlen, "cannot read TLS %s %s: not a regular file", what, path);
        return AUTHD_INVALID_ARGUMENT;
    }
    return AUTHD_OK;
}

/*
 * load_crls adds the CRLs of the PEM file path to ctx's store and turns on
 * revocation checks of the client's own certificate (X509_V_FLAG_CRL_CHECK,
 * the leaf only: CRL_CHECK_ALL would need a CRL from every CA of the chain,
 * the root included). Each CRL must be signed by a CA of the client CA file
 * and not be past its nextUpdate: OpenSSL refuses every certificate of an
 * issuer whose CRL is missing, expired or badly signed, so such a file is
 * refused here, at start or reload, rather than locking every caller out.
 */
static authd_code load_crls(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    BIO *in = BIO_new_file(path, "r");
    X509_CRL *crl = NULL;
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(st);
    authd_code rc = AUTHD_INVALID_ARGUMENT;
    int n = 0;

    if (in == NULL) {
        ssl_err(err, errlen, "CRL file", path);
        return AUTHD_NOT_FOUND;
    }
    while ((crl = PEM_read_bio_X509_CRL(in, NULL, NULL, NULL)) != NULL) {
        n++;
        X509 *issuer = NULL;
        for (int i = 0; i < sk_X509_OBJECT_num(objs) && issuer == NULL; i++) {
            X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
            if (ca != NULL
                && X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0
                && X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1)
                issuer = ca;
        }
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
        if (issuer == NULL) {
            snprintf(err, errlen,
                "tls: CRL file %s: CRL %d is not signed by a CA of the client CA file", path, n);
            goto out;
        }
        if (next != NULL && X509_cmp_current_time(next) < 0) {
            snprintf(err, errlen,
                "tls: CRL file %s: CRL %d is past its nextUpdate (issue a fresh one)", path, n);
            goto out;
        }
        if (X509_STORE_add_crl(st, crl) != 1) {
            ssl_err(err, errlen, "CRL file", path);
            goto out;
        }
        X509_CRL_free(crl);
        crl = NULL;
    }
    unsigned long e = ERR_peek_last_error();
    if (n == 0 || (e != 0 && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)) {
        if (n == 0)
            snprintf(err, errlen, "tls: CRL file %s holds no PEM CRL", path);
        else
            ssl_err(err, errlen, "CRL file", path);
        goto out;
    }
    ERR_clear_error();
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    rc = AUTHD_OK;
out:
    ERR_clear_error();
    X509_CRL_free(crl);
    BIO_free(in);
    return rc;
}

authd_code authd_tls_ctx_new(const authd_tls_files *f, SSL_CTX **out, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    authd_code rc = AUTHD_INVALID_ARGUMENT;

    if (ctx == NULL) {
        snprintf(err, errlen, "tls: cannot create a TLS context");
        return AUTHD_INTERNAL;
    }
    /* nng's own clients (mbedTLS 2.28) speak TLS 1.2; TLS 1.3 is taken
     * when the client offers it. Forward-secret AEAD suites only. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
        snprintf(err, errlen, "tls: cipher list rejected");
        rc = AUTHD_INTERNAL;
        goto out;
    }
    /* CLEANSE_PLAINTEXT: records (passwords) are wiped from OpenSSL's
     * buffers once read. */
    SSL_CTX_set_options(ctx,
        SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION
            | SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_NO_TICKET);
    /* Partial writes, and retries from a buffer that moved: conn_flush
     * compacts its buffer between attempts. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Not SSL_MODE_RELEASE_BUFFERS: with CLEANSE_PLAINTEXT it wipes and
     * frees the whole 16 KiB read buffer after every read, which callgrind
     * showed as a quarter of a Verify's instructions. Idle connections
     * give their buffers back in the sweep instead (IDLE_FREE_MS). */
    /* Read whole socket buffers, not one record at a time. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* No resumption: no session cache, no TLS 1.2 tickets (NO_TICKET
     * above), no TLS 1.3 tickets. The id context is set anyway: without it
     * OpenSSL fails any resumption attempt under client verification with
     * an internal error instead of a full handshake. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    static const unsigned char sid_ctx[] = "authd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);

    if (f->cert == NULL || f->key == NULL) {
        snprintf(err, errlen, "a TLS listener needs --tls-cert and --tls-key");
        goto out;
    }
    if ((rc = check_readable("certificate", f->cert, err, errlen)) != AUTHD_OK)
        goto out;
    rc = AUTHD_INVALID_ARGUMENT;
    if (SSL_CTX_use_certificate_chain_file(ctx, f->cert) != 1) {
        ssl_err(err, errlen, "certificate", f->cert);
        goto out;
    }
    if ((rc = check_readable("key", f->key, err, errlen)) != AUTHD_OK)
        goto out;
    rc = AUTHD_INVALID_ARGUMENT;
    if (SSL_CTX_use_PrivateKey_file(ctx, f->key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen, "TLS key %s does not match certificate %s", f->key, f->cert);
        } else {
            ssl_err(err, errlen, "key", f->key);
        }
        goto out;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "TLS key %s does not match certificate %s", f->key, f->cert);
        goto out;
    }
    if (f->client_ca != NULL) {
        if ((rc = check_readable("client CA file", f->client_ca, err, errlen)) != AUTHD_OK)
            goto out;
        rc = AUTHD_INVALID_ARGUMENT;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(f->client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, f->client_ca, NULL) != 1) {
            if (names != NULL)
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            ssl_err(err, errlen, "client CA file", f->client_ca);
            goto out;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        if (f->crl != NULL && (rc = load_crls(ctx, f->crl, err, errlen)) != AUTHD_OK)
            goto out;
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    *out = ctx;
    return AUTHD_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

static bool is_alpha(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_alnum(char ch)
{
    return is_alpha(ch) || (ch >= '0' && ch <= '9');
}

/* uri_name: t is a URI as RFC 3986 starts one: a scheme (a letter, then
 * letters, digits, '+', '-', '.'), ':' and something after it. */
static bool uri_name(const char *t)
{
    size_t i = 1;

    if (!is_alpha(t[0]))
        return false;
    while (is_alnum(t[i]) || t[i] == '+' || t[i] == '-' || t[i] == '.')
        i++;
    return t[i] == ':' && t[i + 1] != '\0';
}

/* host_name: t is a host name: dot-separated labels of 1-63 letters,
 * digits, '-' and '_', none starting or ending with '-' (no wildcard, no
 * trailing dot). It has neither ':' nor '/', so no URI is one. */
static bool host_name(const char *t)
{
    size_t len = 0;

    for (const char *p = t;; p++) {
        if (*p == '.' || *p == '\0') {
            if (len == 0 || len > 63 || p[-1] == '-' || p[-len] == '-')
                return false;
            if (*p == '\0')
                return true;
            len = 0;
        } else if (is_alnum(*p) || *p == '-' || *p == '_') {
            len++;
        } else {
            return false;
        }
    }
}

/* caller_text copies an ASN1 string that is printable ASCII, fits and is a
 * valid name of its kind (valid(), uri_name or host_name), and leaves out
 * "" (no identity) for anything else: a name with control bytes must not
 * reach logs or the policy, neither truncating nor replacing bytes may
 * make two certificates' names equal, and a CN or DNS SAN that reads
 * "spiffe://..." must not pass for that URI SAN's caller. */
static void caller_text(char *out, size_t cap, const ASN1_STRING *a, bool (*valid)(const char *))
{
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, a);
    bool ok = n > 0 && (size_t)n < cap;

    for (int i = 0; ok && i < n; i++)
        ok = u[i] >= 0x20 && u[i] < 0x7f;
    if (ok)
        memcpy(out, u, (size_t)n);
    out[ok ? n : 0] = '\0';
    if (ok && !valid(out))
        out[0] = '\0';
    OPENSSL_free(u);
}

/*
 * authd_tls_caller writes the client certificate's identity into out and
 * logs it (debug, with peer): its first URI SAN (a SPIFFE ID such as
 * spiffe://example.org/gateway), else its first DNS SAN, else its subject
 * CN. SANs come first because they are what current PKIs (SPIFFE, service
 * meshes, ACME-style issuers) make unique and check, while the CN is free
 * text that many CAs copy from the request; the CN stays the fallback for
 * simple internal CAs that issue CN-only client certificates. A chosen
 * name that is not printable ASCII, is too long or is not valid for its
 * kind (a URI SAN must be a URI, a DNS SAN or CN a host name: see
 * caller_text) gives no identity ("": only the policy's "*" matches),
 * never the next name down the list.
 */
void authd_tls_caller(const SSL *ssl, const char *peer, char *out, size_t cap)
{
    X509 *x = SSL_get0_peer_certificate(ssl);

    out[0] = '\0';
    if (x == NULL)
        return;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    static const int kinds[] = { GEN_URI, GEN_DNS };
    static bool (*const valid[])(const char *) = { uri_name, host_name };
    bool named = false; /* the first of these found names the caller, usable or not */
    for (size_t k = 0; sans != NULL && !named && k < sizeof kinds / sizeof kinds[0]; k++) {
        for (int j = 0; j < sk_GENERAL_NAME_num(sans); j++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, j);
            if (g->type == kinds[k]) {
                caller_text(out, cap, g->d.ia5, valid[k]);
                named = true;
                break;
            }
        }
    }
    GENERAL_NAMES_free(sans);
    X509_NAME *name = X509_get_subject_name(x);
    int i = name != NULL ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (!named && i >= 0)
        caller_text(out, cap, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)), host_name);
    authd_logrec r;
    if (authd_log_begin(&r, AUTHD_LOG_DEBUG, "tls_client")) {
        char subj[256];
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
        authd_log_str(&r, "peer", peer);
        authd_log_str(&r, "subject", subj);
        authd_log_str(&r, "caller", out);
        authd_log_end(&r);
    }
}
