/*
** client.c — libauthd-client: one nng req0 connection to authd over TLS,
** the generic envelope call every generated per-RPC wrapper goes through,
** and the mapping of transport failures to gRPC canonical status codes.
**
** Threading: a client owns one socket and one dialer. Each synchronous
** call opens its own nng context and aio, so calls from many threads are
** in flight over the one connection at once. Asynchronous calls take a
** context + aio slot from a per-client pool (under c->calls_mtx) and give
** it back when they complete, so a steady stream of them allocates only
** messages. The other shared mutable state is the id of the live pipe
** (under c->mtx), the request-id counter and the closing flag (atomics).
**
** Delivery is at most once. nng 1.5.2's req0 resends a request every 60 s
** by default and, worse, at once on the next connection when the pipe it
** went out on closes. With the resend time set to NNG_DURATION_INFINITE it
** does neither: the pending receive fails with NNG_ECONNRESET (checked
** against Debian 12's libnng 1.5.2), which we report as UNAVAILABLE.
*/
#include "authd/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "authd/v1/envelope.pb-c.h"

#define MAX_PEM_FILE     (1024 * 1024)
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000

struct call;

struct authd_client {
    nng_socket sock;
    nng_duration timeout;
    char url[256];
    nng_mtx *mtx; /* guards pipe */
    uint32_t pipe; /* id of the live pipe, 0 while disconnected */
    _Atomic uint64_t next_id;
    /* Async calls: a pool of reusable context + aio slots. */
    nng_mtx *calls_mtx; /* guards free_calls, all_calls */
    struct call *free_calls; /* idle slots, LIFO */
    struct call *all_calls; /* every slot, for close */
    atomic_bool closing; /* authd_client_close has begun */
};

/* authd_code_str: the names come from the proto's Code enum, the contract
 * itself, so they cannot drift from the server's. */
const char *authd_code_str(int code)
{
    const ProtobufCEnumValue *v
        = protobuf_c_enum_descriptor_get_value(&authd__v1__code__descriptor, code);
    return v != NULL ? v->name : "UNKNOWN";
}

/* wipe clears memory that held secrets in a way the compiler keeps. */
static void wipe(void *p, size_t n)
{
    if (p != NULL && n > 0) {
        explicit_bzero(p, n);
    }
}

/*
** copy_text copies a string from the wire into a fixed buffer so that it is
** safe to print: control characters become '?', and when it must be cut
** the cut does not split a UTF-8 sequence.
*/
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = 0;

    if (src != NULL) {
        for (; src[n] != '\0' && n + 1 < cap; n++) {
            unsigned char ch = (unsigned char)src[n];
            dst[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
        }
        if (src[n] != '\0') {
            /* Truncated: drop a trailing partial UTF-8 sequence. */
            size_t k = n;
            while (k > 0 && ((unsigned char)dst[k - 1] & 0xC0) == 0x80) {
                k--;
            }
            if (k > 0 && ((unsigned char)dst[k - 1] & 0xC0) == 0xC0) {
                unsigned char lead = (unsigned char)dst[k - 1];
                size_t want = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
                if (n - (k - 1) < want) {
                    n = k - 1;
                }
            }
        }
    }
    dst[n] = '\0';
}

static int set_status(authd_status *st, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* set_status fills st (keeping its request id) and returns code. */
static int set_status(authd_status *st, int code, const char *reason, const char *fmt, ...)
{
    va_list ap;

    st->code = code;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
    copy_text(st->reason, sizeof(st->reason), reason);
    return code;
}

static void clear_status(authd_status *st)
{
    memset(st, 0, sizeof(*st));
}

/*
** transport_status maps an nng error from dialing or from a call to a
** status: TLS and connection failures are UNAVAILABLE (the caller may
** retry), timeouts DEADLINE_EXCEEDED, local exhaustion RESOURCE_EXHAUSTED.
*/
static int transport_status(authd_status *st, int rv, const char *what)
{
    switch (rv) {
    case NNG_ETIMEDOUT:
        return set_status(
            st, AUTHD_DEADLINE_EXCEEDED, AUTHD_REASON_TRANSPORT, "%s: %s", what, nng_strerror(rv));
    case NNG_ECRYPTO:
    case NNG_EPEERAUTH:
        return set_status(st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
            "%s: TLS failure: %s (check the CA file and server name)", what, nng_strerror(rv));
    case NNG_EPROTO:
        return set_status(st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
            "%s: %s (is the peer an authd server?)", what, nng_strerror(rv));
    case NNG_ENOMEM:
        return set_status(
            st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "%s: %s", what, nng_strerror(rv));
    default:
        return set_status(
            st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT, "%s: %s", what, nng_strerror(rv));
    }
}

/*
** read_pem reads a whole PEM file into a NUL-terminated heap buffer, so
** that a missing or unreadable file is reported by name before nng or
** mbedTLS sees it. The caller frees *out (wiping it first if it holds a
** key).
*/
static int read_pem(const char *path, const char *what, char **out, size_t *lenp, authd_status *st)
{
    struct stat sb;
    char *buf = NULL;
    size_t len = 0;
    int fd = -1;
    int rc = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "cannot open %s %s: %s",
            what, path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0
        || sb.st_size > MAX_PEM_FILE) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "%s %s: not a regular file of 1 byte to 1 MiB", what, path);
        goto out;
    }
    if ((buf = malloc((size_t)sb.st_size + 1)) == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    while (len < (size_t)sb.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)sb.st_size - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
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
        wipe(buf, (size_t)sb.st_size + 1);
        free(buf);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/*
** make_tls builds the client TLS configuration: the server must present a
** certificate chaining to ca_file and matching server_name; an optional
** client certificate for mutual TLS. The key is wiped from our buffer once
** mbedTLS has parsed it. On success the caller owns *out (one reference).
*/
static int make_tls(
    const authd_client_options *o, const char *server_name, nng_tls_config **out, authd_status *st)
{
    nng_tls_config *cfg = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    size_t ca_len = 0, cert_len = 0, key_len = 0;
    int rc = 0;
    int rv;

    if (o->ca_file == NULL || o->ca_file[0] == '\0') {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "a CA file is required for tls+tcp:// (the server is always "
            "verified)");
        goto out;
    }
    if ((o->cert_file == NULL) != (o->key_file == NULL)) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
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
    if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT)) != 0) {
        rc = transport_status(st, rv, "TLS setup");
        goto out;
    }
    if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
        rc = transport_status(st, rv, "TLS setup");
        goto out;
    }
    if ((rv = nng_tls_config_ca_chain(cfg, ca, NULL)) != 0) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "CA file %s: no usable certificate: %s", o->ca_file, nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_tls_config_server_name(cfg, server_name)) != 0) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "server name %s: %s",
            server_name, nng_strerror(rv));
        goto out;
    }
    if (cert != NULL && (rv = nng_tls_config_own_cert(cfg, cert, key, NULL))) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "client certificate %s / key %s: %s", o->cert_file, o->key_file, nng_strerror(rv));
        goto out;
    }
    *out = cfg;
    cfg = NULL;
out:
    if (cfg != NULL) {
        nng_tls_config_free(cfg);
    }
    if (key != NULL) {
        wipe(key, key_len);
        free(key);
    }
    free(cert);
    free(ca);
    return rc;
}

/*
** pipe_event tracks whether the client is connected, so that a call that
** times out waiting for a connection says UNAVAILABLE, not
** DEADLINE_EXCEEDED. nng runs it with no socket lock held, and before it
** removes the pipe from the socket (which nng_close waits for).
*/
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    authd_client *c = arg;
    uint32_t id = (uint32_t)nng_pipe_id(p);

    nng_mtx_lock(c->mtx);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        c->pipe = id;
    } else if (ev == NNG_PIPE_EV_REM_POST && id == c->pipe) {
        c->pipe = 0;
    }
    nng_mtx_unlock(c->mtx);
}

/*
** check_url accepts tls+tcp:// (and tcp:// when plaintext is allowed) with
** a host and a port, and returns the host for the default server name.
*/
static int check_url(const authd_client_options *o, nng_url **out, bool *tls, authd_status *st)
{
    static const char *const tls_schemes[] = { "tls+tcp", "tls+tcp4", "tls+tcp6" };
    static const char *const tcp_schemes[] = { "tcp", "tcp4", "tcp6" };
    nng_url *u = NULL;
    int rc = 0;
    int rv;

    if (o->url == NULL || o->url[0] == '\0') {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "no server URL given");
        goto out;
    }
    if (strlen(o->url) >= 256 || (rv = nng_url_parse(&u, o->url)) != 0) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "invalid server URL (want tls+tcp://host:port)");
        goto out;
    }
    *tls = false;
    rc = AUTHD_INVALID_ARGUMENT;
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(u->u_scheme, tls_schemes[i]) == 0) {
            *tls = true;
            rc = 0;
        } else if (strcmp(u->u_scheme, tcp_schemes[i]) == 0) {
            rc = 0;
        }
    }
    if (rc != 0) {
        set_status(st, rc, AUTHD_REASON_CONFIG, "unsupported URL scheme %.32s:// (want tls+tcp://)",
            u->u_scheme);
        goto out;
    }
    if (!*tls && !o->allow_plaintext) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "plaintext %.32s:// refused: use tls+tcp:// (or allow plaintext "
            "for tests)",
            u->u_scheme);
        goto out;
    }
    if (u->u_hostname[0] == '\0' || u->u_port[0] == '\0' || strcmp(u->u_port, "0") == 0) {
        rc = set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "server URL needs a host and a port");
        goto out;
    }
    *out = u;
    u = NULL;
out:
    if (u != NULL) {
        nng_url_free(u);
    }
    return rc;
}

/*
** pick_server_name chooses the name the server certificate must carry.
** mbedTLS 2.28 (nng's TLS engine here) matches only dNSName entries, never
** iPAddress ones, so an IP address can never verify. A loopback address
** therefore defaults to "localhost" (what dev certificates carry); any
** other address needs an explicit server_name, and we say so now rather
** than fail later with "Cryptographic error".
*/
static int pick_server_name(
    const authd_client_options *o, const char *host, const char **name, authd_status *st)
{
    unsigned char a[16];

    if (o->server_name != NULL && o->server_name[0] != '\0') {
        *name = o->server_name;
        return 0;
    }
    if (inet_pton(AF_INET, host, a) == 1) {
        if (a[0] == 127) {
            *name = "localhost";
            return 0;
        }
    } else if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char loop6[16] = { [15] = 1 };
        if (memcmp(a, loop6, sizeof(a)) == 0) {
            *name = "localhost";
            return 0;
        }
    } else {
        *name = host;
        return 0;
    }
    return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
        "URL host %.64s is an IP address, which the TLS engine (mbedTLS "
        "2.28) cannot match against a certificate: set the server name to "
        "a DNS name in the server certificate",
        host);
}

/*
** authd_client_open: see client.h. Options are set on the socket before
** any context exists (contexts copy the resend time when they are
** created) and on the dialer before it starts.
*/
int authd_client_open(const authd_client_options *o, authd_client **out, authd_status *st)
{
    authd_status local;
    authd_client *c = NULL;
    nng_tls_config *tls = NULL;
    nng_url *u = NULL;
    nng_dialer d;
    const char *server_name = NULL;
    bool is_tls = false;
    bool sock_open = false;
    size_t max_reply;
    int rc = 0;
    int rv;

    if (st == NULL) {
        st = &local;
    }
    clear_status(st);
    if (o == NULL || out == NULL) {
        rc = set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "authd_client_open: NULL argument");
        goto out;
    }
    if (o->timeout_ms < 0) {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "timeout must be positive (0 = default)");
        goto out;
    }
    if ((rc = check_url(o, &u, &is_tls, st)) != 0) {
        goto out;
    }
    if (is_tls
        && ((rc = pick_server_name(o, u->u_hostname, &server_name, st)) != 0
            || (rc = make_tls(o, server_name, &tls, st)) != 0)) {
        goto out;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    snprintf(c->url, sizeof(c->url), "%s", o->url);
    c->timeout = o->timeout_ms > 0 ? o->timeout_ms : AUTHD_CLIENT_DEFAULT_TIMEOUT_MS;
    max_reply = o->max_reply_size > 0 ? o->max_reply_size : AUTHD_CLIENT_DEFAULT_MAX_REPLY;
    /* Random start, so ids from restarted clients do not line up. */
    atomic_init(&c->next_id, ((uint64_t)nng_random() << 32) | (uint64_t)nng_random());
    atomic_init(&c->closing, false);
    if ((rv = nng_mtx_alloc(&c->mtx)) != 0 || (rv = nng_mtx_alloc(&c->calls_mtx)) != 0) {
        rc = transport_status(st, rv, "client setup");
        goto out;
    }
    if ((rv = nng_req0_open(&c->sock)) != 0) {
        rc = transport_status(st, rv, "client setup");
        goto out;
    }
    sock_open = true;
    /*
    ** Never resend (see the top of this file): Register and Login are not
    ** idempotent, and each call has its own deadline anyway. Contexts copy
    ** this value when they are created.
    */
    if ((rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0
        || (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_event, c)) != 0
        || (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_event, c)) != 0
        || (rv = nng_dialer_create(&d, c->sock, o->url)) != 0
        || (rv = nng_dialer_set_size(d, NNG_OPT_RECVMAXSZ, max_reply)) != 0
        || (rv = nng_dialer_set_ms(d, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS)) != 0
        || (rv = nng_dialer_set_ms(d, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS)) != 0
        || (tls != NULL && (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls)) != 0)) {
        rc = set_status(st, rv == NNG_ENOMEM ? AUTHD_RESOURCE_EXHAUSTED : AUTHD_INVALID_ARGUMENT,
            AUTHD_REASON_CONFIG, "cannot set up a dialer for %s: %s", c->url, nng_strerror(rv));
        goto out;
    }
    /* Synchronous: a refused connection or a bad certificate fails here. */
    if ((rv = nng_dialer_start(d, 0)) != 0) {
        char what[400];
        snprintf(what, sizeof(what), "cannot connect to %s%s", c->url,
            (is_tls && o->cert_file == NULL && (rv == NNG_ECONNSHUT || rv == NNG_ECONNRESET))
                ? " (closed during the TLS handshake: does the server "
                  "require a client certificate?)"
                : "");
        rc = transport_status(st, rv, what);
        goto out;
    }
    *out = c;
    c = NULL;
out:
    if (c != NULL) {
        if (sock_open) {
            nng_close(c->sock);
        }
        if (c->mtx != NULL) {
            nng_mtx_free(c->mtx);
        }
        if (c->calls_mtx != NULL) {
            nng_mtx_free(c->calls_mtx);
        }
        free(c);
    }
    if (tls != NULL) {
        nng_tls_config_free(tls); /* the dialer holds its own reference */
    }
    if (u != NULL) {
        nng_url_free(u);
    }
    return rc;
}

static void calls_close(authd_client *c);

/*
** authd_client_close: nng_close waits until every pipe is gone, and the
** pipe callbacks (which use c->mtx) run before a pipe is removed, so none
** can run after it returns. Closing the socket aborts the async calls in
** flight; calls_close then waits for their callbacks and frees the pool.
*/
void authd_client_close(authd_client *c)
{
    if (c == NULL) {
        return;
    }
    /* Under calls_mtx: no slot is being added once closing is seen set. */
    nng_mtx_lock(c->calls_mtx);
    atomic_store(&c->closing, true);
    nng_mtx_unlock(c->calls_mtx);
    nng_close(c->sock);
    calls_close(c);
    nng_mtx_free(c->calls_mtx);
    nng_mtx_free(c->mtx);
    free(c);
}

/* next_request_id: unique per client; 0 is skipped (it reads as "unset"). */
static uint64_t next_request_id(authd_client *c)
{
    uint64_t id;

    do {
        id = atomic_fetch_add_explicit(&c->next_id, 1, memory_order_relaxed);
    } while (id == 0);
    return id;
}

/*
** pack_request serializes the envelope (method, id, body) straight into a
** new nng message. The serialized body, which may hold a password, is
** wiped before it is freed. On success the caller owns *out.
*/
static int pack_request(
    const char *method, uint64_t id, const ProtobufCMessage *req, nng_msg **out, authd_status *st)
{
    Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
    uint8_t *body = NULL;
    size_t body_len;
    nng_msg *msg = NULL;
    int rc = 0;
    int rv;

    body_len = protobuf_c_message_get_packed_size(req);
    if ((body = malloc(body_len > 0 ? body_len : 1)) == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    protobuf_c_message_pack(req, body);
    env.method = (char *)method;
    env.request_id = id;
    env.body.len = body_len;
    env.body.data = body;
    if ((rv = nng_msg_alloc(&msg, authd__v1__request_envelope__get_packed_size(&env))) != 0) {
        rc = transport_status(st, rv, "cannot build the request");
        goto out;
    }
    authd__v1__request_envelope__pack(&env, nng_msg_body(msg));
    *out = msg;
out:
    if (body != NULL) {
        wipe(body, body_len);
        free(body);
    }
    return rc;
}

/*
** unpack_reply checks the reply envelope (parses, echoes our id), turns a
** failure code into the status, and on OK unpacks the response body.
** Codes outside gRPC's range become UNKNOWN.
*/
static int unpack_reply(nng_msg *msg, uint64_t id, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, authd_status *st)
{
    Authd__V1__ReplyEnvelope *rep;
    ProtobufCMessage *m;
    int rc;

    rep = authd__v1__reply_envelope__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    if (rep == NULL) {
        return set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT,
            "unparsable reply envelope (%zu bytes)", nng_msg_len(msg));
    }
    if (rep->request_id != id) {
        rc = set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT,
            "reply carries request id %llu, expected %llu", (unsigned long long)rep->request_id,
            (unsigned long long)id);
        goto out;
    }
    if (rep->code != AUTHD__V1__CODE__OK) {
        int code = (int)rep->code;
        st->code = (code > 0
                       && protobuf_c_enum_descriptor_get_value(&authd__v1__code__descriptor, code)
                           != NULL)
            ? code
            : AUTHD_UNKNOWN;
        copy_text(st->message, sizeof(st->message), rep->message);
        copy_text(st->reason, sizeof(st->reason), rep->reason);
        rc = st->code;
        goto out;
    }
    m = protobuf_c_message_unpack(resp_desc, NULL, rep->body.len, rep->body.data);
    if (m == NULL) {
        rc = set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT, "unparsable %s in the reply",
            resp_desc->name);
        goto out;
    }
    *resp = m;
    rc = AUTHD_OK;
out:
    wipe(rep->body.data, rep->body.len); /* may hold an access token */
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return rc;
}

/* connected reports whether the client has a live connection right now. */
static bool connected(authd_client *c)
{
    bool up;

    nng_mtx_lock(c->mtx);
    up = c->pipe != 0;
    nng_mtx_unlock(c->mtx);
    return up;
}

/*
** send_status maps the failure of a send (which waits for a connection
** while there is none) to a status: a timeout while disconnected is
** UNAVAILABLE, not DEADLINE_EXCEEDED. Returns the code.
*/
static int send_status(authd_client *c, int rv, authd_status *st)
{
    if (atomic_load_explicit(&c->closing, memory_order_relaxed)
        && (rv == NNG_ECLOSED || rv == NNG_ECANCELED)) {
        return set_status(st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client was closed");
    }
    if (rv == NNG_ETIMEDOUT && !connected(c)) {
        return set_status(st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
            "not connected to %s (no connection within %d ms)", c->url, (int)c->timeout);
    }
    return transport_status(st, rv, "cannot send the request");
}

/* recv_status maps the failure of the receive of a reply to a status. */
static int recv_status(authd_client *c, int rv, authd_status *st)
{
    switch (rv) {
    case NNG_ETIMEDOUT:
        return set_status(st, AUTHD_DEADLINE_EXCEEDED, AUTHD_REASON_TRANSPORT,
            "no reply from %s within %d ms", c->url, (int)c->timeout);
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
    case NNG_ECONNABORTED:
        return set_status(st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
            "connection to %s lost before the reply (closed by the server, "
            "or the reply exceeded the maximum size); the request may have "
            "been processed",
            c->url);
    case NNG_ECLOSED:
    case NNG_ECANCELED:
        if (atomic_load_explicit(&c->closing, memory_order_relaxed)) {
            return set_status(st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client was closed");
        }
        return transport_status(st, rv, "no reply");
    default:
        return transport_status(st, rv, "no reply");
    }
}

/*
** authd_client_call: see client.h. One context and aio per call; one
** deadline of c->timeout covers both the send (which waits for a
** connection while there is none: the dialer is reconnecting) and the
** reply.
*/
int authd_client_call(authd_client *c, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, authd_status *st)
{
    authd_status local;
    nng_ctx ctx = NNG_CTX_INITIALIZER;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    nng_time deadline;
    nng_duration left;
    bool ctx_open = false;
    uint64_t id;
    int rc = 0;
    int rv;

    if (st == NULL) {
        st = &local;
    }
    clear_status(st);
    if (c == NULL || method == NULL || method[0] != '/' || req == NULL || resp_desc == NULL
        || resp == NULL || resp_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        rc = set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "authd_client_call: bad argument");
        goto out;
    }
    if (!protobuf_c_message_check(req)) {
        rc = set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "malformed %s", req->descriptor->name);
        goto out;
    }
    id = next_request_id(c);
    st->request_id = id;
    if ((rc = pack_request(method, id, req, &msg, st)) != 0) {
        goto out;
    }
    if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0 || (rv = nng_ctx_open(&ctx, c->sock)) != 0) {
        rc = transport_status(st, rv, "cannot start the call");
        goto out;
    }
    ctx_open = true;

    deadline = nng_clock() + (nng_time)c->timeout;
    nng_aio_set_msg(aio, msg);
    nng_aio_set_timeout(aio, c->timeout);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        /* Not sent: the message is still ours (and is wiped below). */
        msg = nng_aio_get_msg(aio);
        rc = send_status(c, rv, st);
        goto out;
    }
    msg = NULL; /* nng owns it now */

    left = (nng_duration)(deadline - nng_clock());
    nng_aio_set_timeout(aio, left > 0 ? left : 1);
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        rc = recv_status(c, rv, st);
        goto out;
    }
    msg = nng_aio_get_msg(aio);
    nng_aio_set_msg(aio, NULL);
    rc = unpack_reply(msg, id, resp_desc, resp, st);
out:
    if (ctx_open) {
        nng_ctx_close(ctx);
    }
    if (aio != NULL) {
        nng_aio_free(aio);
    }
    if (msg != NULL) {
        wipe(nng_msg_body(msg), nng_msg_len(msg));
        nng_msg_free(msg);
    }
    return rc;
}

/* ---- asynchronous calls --------------------------------------------------- */

enum call_state { CALL_SENDING, CALL_RECEIVING };

/*
** call is one slot of the async pool: an nng context and an aio kept open
** and reused, call after call (a req0 context may carry one request after
** another). While a call runs, the slot holds what completing it needs.
*/
struct call {
    authd_client *c;
    struct call *next_free; /* on c->free_calls while idle */
    struct call *next_all; /* on c->all_calls always */
    nng_ctx ctx;
    nng_aio *aio;
    enum call_state state;
    uint64_t id; /* request id; 0 for a raw call */
    nng_time deadline;
    const ProtobufCMessageDescriptor *resp_desc; /* NULL for a raw call */
    authd_client_cb cb;
    authd_client_raw_cb raw_cb;
    void *arg;
};

static void call_cb(void *arg);

/*
** call_get takes an idle slot, or makes a new one. Returns 0, or a status
** code (CANCELLED once the client is closing, RESOURCE_EXHAUSTED) with st
** filled. Slots are made under calls_mtx, so that close, which sets
** closing first and then walks all_calls, sees every slot there will be.
*/
static int call_get(authd_client *c, struct call **out, authd_status *st)
{
    struct call *k = NULL;
    int rc = 0;
    int rv;

    nng_mtx_lock(c->calls_mtx);
    if (atomic_load(&c->closing)) {
        rc = set_status(st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client is closing");
        goto out;
    }
    if ((k = c->free_calls) != NULL) {
        c->free_calls = k->next_free;
        goto out;
    }
    if ((k = calloc(1, sizeof(*k))) == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    k->c = c;
    if ((rv = nng_aio_alloc(&k->aio, call_cb, k)) != 0) {
        rc = transport_status(st, rv, "cannot start the call");
        free(k);
        k = NULL;
        goto out;
    }
    if ((rv = nng_ctx_open(&k->ctx, c->sock)) != 0) {
        rc = transport_status(st, rv, "cannot start the call");
        nng_aio_free(k->aio);
        free(k);
        k = NULL;
        goto out;
    }
    k->next_all = c->all_calls;
    c->all_calls = k;
out:
    nng_mtx_unlock(c->calls_mtx);
    if (rc == 0) {
        *out = k;
    }
    return rc;
}

/* call_put returns a slot to the idle list. */
static void call_put(struct call *k)
{
    authd_client *c = k->c;

    nng_mtx_lock(c->calls_mtx);
    k->next_free = c->free_calls;
    c->free_calls = k;
    nng_mtx_unlock(c->calls_mtx);
}

/*
** calls_close frees the pool; the socket is already closed, so every call
** in flight has been or is being aborted. nng_aio_stop waits for a running
** callback (ours, and the user's inside it) to return and fails any
** operation started on that aio afterwards.
*/
static void calls_close(authd_client *c)
{
    struct call *k, *next;

    for (k = c->all_calls; k != NULL; k = k->next_all) {
        nng_aio_stop(k->aio);
    }
    for (k = c->all_calls; k != NULL; k = next) {
        next = k->next_all;
        nng_aio_free(k->aio);
        free(k);
    }
    c->all_calls = NULL;
    c->free_calls = NULL;
}

/*
** call_start sends msg (ours on entry; nng's or freed on return) on slot
** k, which already holds the callback. Never fails: errors come back
** through call_cb.
*/
static void call_start(struct call *k, nng_msg *msg)
{
    authd_client *c = k->c;

    k->state = CALL_SENDING;
    k->deadline = nng_clock() + (nng_time)c->timeout;
    nng_aio_set_msg(k->aio, msg);
    nng_aio_set_timeout(k->aio, c->timeout);
    nng_ctx_send(k->ctx, k->aio);
}

/*
** call_finish hands the outcome to the caller's callback. The slot goes
** back to the pool first (the callback may start the next call, which can
** reuse this very slot), so nothing here touches k after that.
*/
static void call_finish(
    struct call *k, authd_status *st, ProtobufCMessage *resp, const void *raw, size_t raw_len)
{
    authd_client_cb cb = k->cb;
    authd_client_raw_cb raw_cb = k->raw_cb;
    void *arg = k->arg;

    call_put(k);
    if (raw_cb != NULL) {
        raw_cb(arg, st->code, st, st->code == AUTHD_OK ? raw : NULL,
            st->code == AUTHD_OK ? raw_len : 0);
    } else {
        cb(arg, st->code, st, resp);
    }
}

/*
** call_cb drives one async call: the send completed (post the receive with
** what is left of the deadline), or the receive did (unpack and finish).
** It runs on an nng thread.
*/
static void call_cb(void *arg)
{
    struct call *k = arg;
    authd_client *c = k->c;
    authd_status st;
    ProtobufCMessage *resp = NULL;
    nng_msg *msg;
    nng_duration left;
    int rv = nng_aio_result(k->aio);

    clear_status(&st);
    st.request_id = k->id;
    if (k->state == CALL_SENDING) {
        if (rv != 0) {
            /* Not sent: the message is still ours. */
            if ((msg = nng_aio_get_msg(k->aio)) != NULL) {
                nng_aio_set_msg(k->aio, NULL);
                wipe(nng_msg_body(msg), nng_msg_len(msg));
                nng_msg_free(msg);
            }
            send_status(c, rv, &st);
            call_finish(k, &st, NULL, NULL, 0);
            return;
        }
        k->state = CALL_RECEIVING;
        left = (nng_duration)(k->deadline - nng_clock());
        nng_aio_set_timeout(k->aio, left > 0 ? left : 1);
        nng_ctx_recv(k->ctx, k->aio);
        return;
    }
    if (rv != 0) {
        recv_status(c, rv, &st);
        call_finish(k, &st, NULL, NULL, 0);
        return;
    }
    msg = nng_aio_get_msg(k->aio);
    nng_aio_set_msg(k->aio, NULL);
    if (k->resp_desc == NULL) {
        /* Raw: the bytes are the caller's for the length of the callback. */
        st.code = AUTHD_OK;
        call_finish(k, &st, NULL, nng_msg_body(msg), nng_msg_len(msg));
    } else {
        unpack_reply(msg, k->id, k->resp_desc, &resp, &st);
        call_finish(k, &st, resp, NULL, 0);
    }
    wipe(nng_msg_body(msg), nng_msg_len(msg));
    nng_msg_free(msg);
}

/* authd_client_call_async: see client.h. */
int authd_client_call_async(authd_client *c, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb, void *arg)
{
    authd_status st;
    struct call *k = NULL;
    nng_msg *msg = NULL;
    uint64_t id;
    int rc;

    clear_status(&st);
    if (c == NULL || method == NULL || method[0] != '/' || req == NULL || resp_desc == NULL
        || cb == NULL || resp_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return AUTHD_INVALID_ARGUMENT;
    }
    if (!protobuf_c_message_check(req)) {
        return AUTHD_INVALID_ARGUMENT;
    }
    id = next_request_id(c);
    if ((rc = pack_request(method, id, req, &msg, &st)) != 0 || (rc = call_get(c, &k, &st)) != 0) {
        if (msg != NULL) {
            wipe(nng_msg_body(msg), nng_msg_len(msg));
            nng_msg_free(msg);
        }
        return rc;
    }
    k->id = id;
    k->resp_desc = resp_desc;
    k->cb = cb;
    k->raw_cb = NULL;
    k->arg = arg;
    call_start(k, msg);
    return AUTHD_OK;
}

/* authd_client_call_raw_async: see client.h. */
int authd_client_call_raw_async(
    authd_client *c, const void *req, size_t len, authd_client_raw_cb cb, void *arg)
{
    authd_status st;
    struct call *k = NULL;
    nng_msg *msg = NULL;
    int rc;
    int rv;

    clear_status(&st);
    if (c == NULL || (req == NULL && len > 0) || cb == NULL) {
        return AUTHD_INVALID_ARGUMENT;
    }
    if ((rv = nng_msg_alloc(&msg, len)) != 0) {
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    if (len > 0) {
        memcpy(nng_msg_body(msg), req, len);
    }
    if ((rc = call_get(c, &k, &st)) != 0) {
        wipe(nng_msg_body(msg), nng_msg_len(msg));
        nng_msg_free(msg);
        return rc;
    }
    k->id = 0;
    k->resp_desc = NULL;
    k->cb = NULL;
    k->raw_cb = cb;
    k->arg = arg;
    call_start(k, msg);
    return AUTHD_OK;
}
