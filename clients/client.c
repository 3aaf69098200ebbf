/*
** client.c — libauthd-client: one connection to authd that speaks nng's SP
** req0 wire format itself over TLS (OpenSSL), driven by one I/O thread per
** client; the generic envelope call every generated per-RPC wrapper goes
** through; the mapping of transport failures to gRPC canonical codes.
**
** Wire (nng req0/rep0, so any nng rep0 server works): after the TCP connect
** and the TLS handshake each side sends the 8-byte SP header
** 00 'S' 'P' 00 <proto hi> <proto lo> 00 00 (we are req0, 0x0030; the peer
** must be rep0, 0x0031). Then every message is a frame: an 8-byte
** big-endian length N and N bytes, the first 4 of which are the request id
** with its top bit set; a reply carries the id of its request first.
**
** Threads and locks. Each client has one I/O thread, blocked in epoll_wait
** on the socket and an eventfd (close and write failures wake it). It dials
** and redials, reads replies, expires deadlines and runs every callback,
** with no lock held. Two mutexes:
**   ssl_mtx  the socket and the SSL object: whoever reads or writes them
**            holds it (the I/O thread to read or dial, a writer to write),
**            so OpenSSL never sees two threads on one SSL.
**   mtx      the rest of the shared state: calls in flight (an id table
**            and a list in deadline order), the output buffers, the
**            connection state. Never held across a system call other than
**            epoll_ctl; never taken before ssl_mtx (order: ssl_mtx, mtx).
**
** Sending: a call serializes its frame with no lock held, then under mtx
** registers itself and appends the frame to c->out. One thread at a time is
** the writer (c->writer): it moves c->out to c->wbuf and writes that with as
** few SSL_write calls as possible, while other threads keep appending to
** c->out and return at once; the writer loops until both are empty. A call
** from another thread becomes the writer itself when there is none (the
** lowest latency: no hand-off to the I/O thread); a call made from a
** callback on the I/O thread only appends, and the I/O thread flushes once
** after its batch of callbacks, so a closed loop costs one write per batch
** of replies. A write that would block arms EPOLLOUT; the I/O thread
** finishes it.
**
** Receiving: the I/O thread reads as much as there is (OpenSSL read-ahead,
** a large buffer), matches every complete frame to its call by id (replies
** with an unknown id, e.g. of a call that already timed out, are dropped),
** then runs the callbacks of that batch; raw replies are handed out in place.
**
** Deadlines: every call of a client has the same timeout, so deadline order
** is the order in which calls start: the calls in flight sit in one list in
** that order (O(1) to add, to remove and to find the earliest). The I/O
** thread sleeps until the earliest deadline, or for one timeout when there
** is none: a call started meanwhile cannot expire before it wakes up, so
** starting a call never has to wake it.
**
** Delivery is at most once: a call whose frame was handed to a connection
** fails UNAVAILABLE if that connection drops, and is never sent again. A
** call started while there is no connection waits (its frame parked in the
** call) for the next one, up to its deadline, then fails UNAVAILABLE.
*/
#include "authd/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "authd/v1/envelope.pb-c.h"
#include "client_envelope.h"
#include "sp_wire.h"
#include "sysutil.h"

#define MAX_PEM_FILE     (1024 * 1024)
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000
#define NS_PER_MS        1000000ull
#define FRAME_HDR_LEN    12 /* length (8) + request id (4) */
#define RBUF_FREE_MIN    (64 * 1024) /* room ensured before each read */
#define TLS_READ_BUF     (64 * 1024) /* OpenSSL read-ahead buffer: many records per recv */
#define TABLE_MIN        256 /* id table buckets */
#define STACK_FRAME      1536 /* requests up to about this size are built on the stack */
#define WHY_LEN          256 /* texts saying why a connection failed */

/* ---- data -------------------------------------------------------------------- */

/* A byte buffer: [off, len) holds data not yet consumed. */
struct buf {
    uint8_t *p;
    size_t off;
    size_t len;
    size_t cap;
};

enum outcome { OUT_REPLY, OUT_DEADLINE, OUT_LOST, OUT_NO_CONN, OUT_CANCELLED };

/*
** call is one call in flight. It sits in c->table (by id) and on c->head's
** list (by deadline) from start to completion, then on the I/O thread's
** batch of completed calls, then back on c->free_calls for reuse.
*/
struct call {
    struct call *prev, *next; /* deadline list; next: free list */
    struct call *hnext; /* id table chain */
    struct call *dnext; /* batch of completed calls */
    uint32_t sp_id; /* request id on the wire, without the top bit */
    bool parked; /* not sent: waits for a connection; frame below */
    uint8_t *frame; /* parked only: the whole frame (heap, wiped) */
    size_t frame_len;
    uint64_t deadline; /* CLOCK_MONOTONIC ns */
    uint64_t req_id; /* envelope request id; 0 for a raw call */
    const ProtobufCMessageDescriptor *resp_desc; /* NULL for a raw call */
    authd_client_cb cb;
    authd_client_raw_cb raw_cb;
    void *arg;
    enum outcome outcome; /* set when completed */
    const uint8_t *reply; /* OUT_REPLY: the reply in c->rbuf */
    size_t reply_len;
};

enum conn_state { CS_IDLE, CS_DIALING, CS_UP };
enum dial_phase { DP_CONNECTING, DP_TLS, DP_SP_SEND, DP_SP_RECV };

/* A batch of completed calls and the texts their statuses need. */
struct batch {
    struct call *head, *tail;
    char lost_why[WHY_LEN];
    char no_conn_why[WHY_LEN];
};

struct authd_client {
    /* Fixed at open. */
    char url[256];
    char host[256];
    char port[8];
    int family; /* AF_UNSPEC, AF_INET, AF_INET6 */
    bool tls;
    bool has_cert;
    char server_name[256];
    bool name_is_ip; /* check the certificate's IP addresses, send no SNI */
    int timeout_ms;
    uint64_t timeout_ns;
    uint64_t idle_ns; /* close an idle connection after this; 0 = never */
    size_t max_reply;
    SSL_CTX *ctx;
    BIO_METHOD *bio_meth;
    int ep; /* epoll */
    int evfd; /* eventfd: wakes the I/O thread */
    pthread_t thread;
    _Atomic uint64_t next_req_id;

    /* Guarded by ssl_mtx (and written only by the thread dialing). */
    pthread_mutex_t ssl_mtx;
    int fd;
    SSL *ssl;
    enum dial_phase phase; /* of the dial in progress */
    struct addrinfo *ai, *ai_next; /* addresses of the dial in progress */
    int dial_errno; /* of the last address that failed */
    uint64_t dial_deadline;
    uint8_t hdr_out[SP_HDR_LEN];
    uint8_t hdr_in[SP_HDR_LEN];
    size_t hdr_out_len, hdr_in_len;
    char io_err[160]; /* why the last read or write failed */
    const char *io_tls_err; /* OpenSSL's reason for it, if any (static) */
    bool io_alert; /* it was an alert from the server */

    /* Guarded by mtx. */
    pthread_mutex_t mtx;
    enum conn_state state;
    bool closing; /* authd_client_close has begun */
    bool writer; /* a thread is flushing (see the top of the file) */
    bool wblocked; /* the last write would block: wait for the I/O thread */
    bool broken; /* a writer saw the connection fail */
    bool ep_added; /* fd is in the epoll set */
    uint32_t ep_events;
    struct buf out; /* frames appended, not yet taken by the writer */
    struct buf wbuf; /* frames the writer is writing */
    struct call *head, *tail; /* calls in flight, in deadline order */
    size_t npending;
    struct call **table; /* id table, table_mask + 1 buckets */
    size_t table_mask;
    struct call *free_calls;
    uint32_t next_sp_id;
    uint64_t redial_at;
    bool dormant; /* idle and unconnected: the next call dials (redial_at = never) */
    uint64_t last_active; /* a call started or replies came (CS_UP) */
    int backoff_ms;
    char last_err[WHY_LEN]; /* why the client is not connected */

    /* I/O thread only. */
    struct buf rbuf; /* bytes read, [off, len) not yet parsed */
    size_t rneed; /* size the partial frame at rbuf.off needs */
    bool read_again; /* stopped reading with data left: no epoll wait */
    bool read_wants_write; /* TLS must write before it can read on */
};

/* The client whose I/O thread this is, if any. */
static _Thread_local authd_client *io_self;

/* ---- small helpers ----------------------------------------------------------- */

/* authd_code_str: the names come from the proto's Code enum, the contract
 * itself, so they cannot drift from the server's. */
const char *authd_code_str(int code)
{
    const ProtobufCEnumValue *v
        = protobuf_c_enum_descriptor_get_value(&authd__v1__code__descriptor, code);
    return v != NULL ? v->name : "UNKNOWN";
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* random64: from the kernel; a fixed fallback only if it fails. */
static uint64_t random64(void)
{
    uint64_t v = 0;

    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
        v = authd_monotonic_ns() * 0x9E3779B97F4A7C15ull;
    }
    return v;
}

/*
** copy_text_n copies a string from the wire, the first len bytes of src or
** up to a NUL, into a fixed buffer so that it is safe to print: control
** characters become '?', and when it must be cut the cut does not split a
** UTF-8 sequence. (Ending at a NUL is what a copy unpacked by protobuf-c,
** a C string, would show.)
*/
static void copy_text_n(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = 0;

    if (src != NULL) {
        for (; n < len && src[n] != '\0' && n + 1 < cap; n++) {
            unsigned char ch = (unsigned char)src[n];
            dst[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
        }
        if (n < len && src[n] != '\0') {
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

/* copy_text: copy_text_n of a NUL-terminated string. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    copy_text_n(dst, cap, src, SIZE_MAX);
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

/* ---- buffers ----------------------------------------------------------------- */

/*
** buf_reserve makes room for n more bytes after the data, moving the data to
** the front or into a larger block. Memory given up is wiped first (it may
** hold a password or a token). Returns 0, or -1 when out of memory.
*/
static int buf_reserve(struct buf *b, size_t n)
{
    size_t used = b->len - b->off;
    size_t cap;
    uint8_t *p;

    if (b->cap - b->len >= n) {
        return 0;
    }
    if (b->cap - used >= n) {
        memmove(b->p, b->p + b->off, used);
        authd_wipe(b->p + used, b->len - used);
        b->off = 0;
        b->len = used;
        return 0;
    }
    if (n > SIZE_MAX / 2 - used) {
        return -1;
    }
    for (cap = b->cap > 0 ? b->cap : 4096; cap - used < n; cap *= 2) { }
    if ((p = malloc(cap)) == NULL) {
        return -1;
    }
    if (used > 0) {
        memcpy(p, b->p + b->off, used);
    }
    if (b->p != NULL) {
        authd_wipe(b->p, b->len);
        free(b->p);
    }
    b->p = p;
    b->cap = cap;
    b->off = 0;
    b->len = used;
    return 0;
}

static int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (buf_reserve(b, n) != 0) {
        return -1;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* buf_consume drops (and wipes) the first n bytes of the data. */
static void buf_consume(struct buf *b, size_t n)
{
    authd_wipe(b->p + b->off, n);
    b->off += n;
    if (b->off == b->len) {
        b->off = b->len = 0;
    }
}

static void buf_clear(struct buf *b)
{
    authd_wipe(b->p, b->len);
    b->off = b->len = 0;
}

static void buf_free(struct buf *b)
{
    buf_clear(b);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static void buf_swap(struct buf *a, struct buf *b)
{
    struct buf t = *a;

    *a = *b;
    *b = t;
}

/* ---- options: URL, server name, TLS material ----------------------------------- */

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
        authd_wipe(buf, (size_t)sb.st_size + 1);
        free(buf);
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/*
** parse_url accepts tls+tcp:// (and tcp:// when plaintext is allowed, each
** also with a 4 or 6 suffix) followed by host:port, the host an IPv6
** address in brackets, an IPv4 address or a DNS name, the port 1-65535.
*/
static int parse_url(const authd_client_options *o, authd_client *c, authd_status *st)
{
    const char *u = o->url, *rest, *host, *host_end, *port;
    size_t host_len;
    unsigned long pn;
    char *end;

    if (u == NULL || u[0] == '\0') {
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "no server URL given");
    }
    if (strlen(u) >= sizeof(c->url)) {
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "invalid server URL (want tls+tcp://host:port)");
    }
    if ((rest = sp_url_scheme(u, &c->tls, &c->family)) == NULL) {
        const char *sep = strstr(u, "://");
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            sep != NULL ? "unsupported URL scheme %.*s:// (want tls+tcp://)"
                        : "invalid server URL%.*s (want tls+tcp://host:port)",
            sep != NULL ? (int)(sep - u > 32 ? 32 : sep - u) : 0, u);
    }
    if (!c->tls && !o->allow_plaintext) {
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "plaintext %.*s refused: use tls+tcp:// (or allow plaintext for tests)",
            (int)(rest - u), u);
    }
    if (rest[0] == '[') {
        host = rest + 1;
        if ((host_end = strchr(host, ']')) == NULL || host_end[1] != ':') {
            return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "server URL needs a host and a port");
        }
        port = host_end + 2;
    } else {
        host = rest;
        host_end = strchr(host, ':');
        if (host_end == NULL) {
            return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "server URL needs a host and a port");
        }
        port = host_end + 1;
    }
    host_len = (size_t)(host_end - host);
    errno = 0;
    pn = port[0] >= '0' && port[0] <= '9' ? strtoul(port, &end, 10) : 0;
    if (host_len == 0 || pn == 0 || pn > 65535 || errno != 0) {
        return set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "server URL needs a host and a port");
    }
    if (*end != '\0' || memchr(host, '/', host_len) != NULL || memchr(host, '@', host_len) != NULL
        || memchr(host, ' ', host_len) != NULL) {
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "invalid server URL (want tls+tcp://host:port)");
    }
    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    snprintf(c->port, sizeof(c->port), "%lu", pn);
    snprintf(c->url, sizeof(c->url), "%s", u);
    return 0;
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
static int pick_server_name(const authd_client_options *o, authd_client *c, authd_status *st)
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
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "server name too long");
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
static int make_tls(const authd_client_options *o, authd_client *c, authd_status *st)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    size_t ca_len = 0, cert_len = 0, key_len = 0;
    EVP_PKEY *pk = NULL;
    BIO *b = NULL;
    int rc = 0;

    if (o->ca_file == NULL || o->ca_file[0] == '\0') {
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "a CA file is required for tls+tcp:// (the server is always verified)");
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
    if ((c->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        rc = set_status(
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
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "CA file %s: no usable certificate: %s", o->ca_file, ssl_reason());
        goto out;
    }
    if (cert != NULL) {
        if (load_pem_certs(c->ctx, NULL, cert, cert_len) <= 0) {
            rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "client certificate %s: no usable certificate: %s", o->cert_file, ssl_reason());
            goto out;
        }
        if ((b = BIO_new_mem_buf(key, (int)key_len)) == NULL
            || (pk = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL)) == NULL
            || SSL_CTX_use_PrivateKey(c->ctx, pk) != 1 || SSL_CTX_check_private_key(c->ctx) != 1) {
            rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "client certificate %s / key %s: %s (want an unencrypted PEM key that "
                "matches the certificate)",
                o->cert_file, o->key_file, ssl_reason());
            goto out;
        }
        c->has_cert = true;
    }
    if ((c->bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "authd-socket"))
        == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
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

/* ---- calls in flight: pool, id table, deadline list (all under mtx) ---------------- */

static struct call *call_alloc(authd_client *c)
{
    struct call *k = c->free_calls;

    if (k != NULL) {
        c->free_calls = k->next;
        memset(k, 0, sizeof(*k));
        return k;
    }
    return calloc(1, sizeof(*k));
}

static void call_free_frame(struct call *k)
{
    if (k->frame != NULL) {
        authd_wipe(k->frame, k->frame_len);
        free(k->frame);
        k->frame = NULL;
    }
}

/* table_grow doubles the id table once calls outnumber its buckets. */
static int table_grow(authd_client *c)
{
    size_t n = c->table == NULL ? TABLE_MIN : 2 * (c->table_mask + 1);
    struct call **t;

    if ((t = calloc(n, sizeof(*t))) == NULL) {
        return -1;
    }
    if (c->table != NULL) {
        for (size_t i = 0; i <= c->table_mask; i++) {
            struct call *k, *next;
            for (k = c->table[i]; k != NULL; k = next) {
                next = k->hnext;
                k->hnext = t[k->sp_id & (n - 1)];
                t[k->sp_id & (n - 1)] = k;
            }
        }
        free(c->table);
    }
    c->table = t;
    c->table_mask = n - 1;
    return 0;
}

static struct call *table_find(authd_client *c, uint32_t id)
{
    struct call *k;

    for (k = c->table[id & c->table_mask]; k != NULL && k->sp_id != id; k = k->hnext) { }
    return k;
}

static void table_remove(authd_client *c, struct call *k)
{
    struct call **pp = &c->table[k->sp_id & c->table_mask];

    while (*pp != k) {
        pp = &(*pp)->hnext;
    }
    *pp = k->hnext;
}

/* pending_remove takes k out of the table and the deadline list. */
static void pending_remove(authd_client *c, struct call *k)
{
    table_remove(c, k);
    if (k->prev != NULL) {
        k->prev->next = k->next;
    } else {
        c->head = k->next;
    }
    if (k->next != NULL) {
        k->next->prev = k->prev;
    } else {
        c->tail = k->prev;
    }
    k->prev = k->next = NULL;
    c->npending--;
}

static void batch_add(struct batch *b, struct call *k, enum outcome o)
{
    k->outcome = o;
    k->dnext = NULL;
    if (b->tail != NULL) {
        b->tail->dnext = k;
    } else {
        b->head = k;
    }
    b->tail = k;
}

/* ---- epoll interest and wake-ups ----------------------------------------------------- */

/* set_interest makes the socket's epoll events ev (under mtx). */
static void set_interest(authd_client *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev, .data.u32 = 1 };

    if (c->fd < 0 || (c->ep_added && c->ep_events == ev)) {
        return;
    }
    if (epoll_ctl(c->ep, c->ep_added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) == 0) {
        c->ep_added = true;
        c->ep_events = ev;
    }
}

static void wake(authd_client *c)
{
    uint64_t one = 1;

    while (write(c->evfd, &one, sizeof(one)) < 0 && errno == EINTR) { }
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
static void tls_err_reset(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

/*
** io_fail records in c->io_err why an SSL call r failed, or returns 0 with
** *want set when it only has to wait for the socket.
*/
static ssize_t io_fail(authd_client *c, int r, uint32_t *want)
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
static ssize_t conn_write(authd_client *c, const uint8_t *p, size_t n, uint32_t *want)
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
    tls_err_reset();
    errno = 0;
    r = SSL_write(c->ssl, p, (int)n);
    return r > 0 ? r : io_fail(c, (int)r, want);
}

/* conn_read: bytes read (> 0); 0: would block (*want); -1: closed or failed (c->io_err). */
static ssize_t conn_read(authd_client *c, uint8_t *p, size_t n, uint32_t *want)
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
    tls_err_reset();
    errno = 0;
    r = SSL_read(c->ssl, p, (int)n);
    return r > 0 ? r : io_fail(c, (int)r, want);
}

/* conn_close frees the SSL object and closes the socket (ssl_mtx held). */
static void conn_close(authd_client *c)
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

/* ---- dialing (ssl_mtx held; by open before the I/O thread exists, then by it) ------- */

enum { DIAL_WAIT, DIAL_UP, DIAL_FAIL };

/*
** dial_next starts connecting to the next address of the dial. Returns
** DIAL_WAIT with *want (connecting), or DIAL_FAIL with err once no address
** is left; with the connect already done, goes on with dial_step.
*/
static int dial_step(authd_client *c, uint32_t ready, uint32_t *want, char *err, size_t cap);

static int dial_next(authd_client *c, uint32_t *want, char *err, size_t cap)
{
    static const int one = 1;

    while (c->ai_next != NULL) {
        struct addrinfo *a = c->ai_next;
        c->ai_next = a->ai_next;
        c->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            c->dial_errno = errno;
            continue;
        }
        (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(c->fd, a->ai_addr, a->ai_addrlen) == 0) {
            c->phase = DP_CONNECTING;
            return dial_step(c, EPOLLOUT, want, err, cap);
        }
        if (errno == EINPROGRESS) {
            c->phase = DP_CONNECTING;
            *want = EPOLLOUT;
            return DIAL_WAIT;
        }
        c->dial_errno = errno;
        close(c->fd);
        c->fd = -1;
    }
    snprintf(err, cap, "%s", strerror(c->dial_errno != 0 ? c->dial_errno : ECONNREFUSED));
    return DIAL_FAIL;
}

/* dial_begin resolves the host and starts the first connect. */
static int dial_begin(authd_client *c, uint64_t now, uint32_t *want, char *err, size_t cap)
{
    struct addrinfo hints = { 0 };
    int rv;

    conn_close(c);
    hints.ai_family = c->family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((rv = getaddrinfo(c->host, c->port, &hints, &c->ai)) != 0) {
        c->ai = NULL;
        snprintf(err, cap, "cannot resolve %.64s: %s", c->host,
            rv == EAI_SYSTEM ? strerror(errno) : gai_strerror(rv));
        return DIAL_FAIL;
    }
    c->ai_next = c->ai;
    c->dial_errno = 0;
    c->dial_deadline = now + c->timeout_ns;
    c->hdr_in_len = c->hdr_out_len = 0;
    sp_header(c->hdr_out, SP_PROTO_REQ0);
    return dial_next(c, want, err, cap);
}

/* tls_begin puts an SSL object on the connected socket. */
static int tls_begin(authd_client *c, char *err, size_t cap)
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
static void tls_fail_text(authd_client *c, char *err, size_t cap)
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

/*
** dial_step drives the dial as far as the socket allows: connect, TLS
** handshake, SP header out, SP header in. ready holds the events seen on
** the socket. Returns DIAL_WAIT with *want, DIAL_UP, or DIAL_FAIL with err.
*/
static int dial_step(authd_client *c, uint32_t ready, uint32_t *want, char *err, size_t cap)
{
    ssize_t n;
    int r;

    for (;;) {
        switch (c->phase) {
        case DP_CONNECTING: {
            int e = 0;
            socklen_t len = sizeof(e);
            if ((ready & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
                *want = EPOLLOUT;
                return DIAL_WAIT;
            }
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) {
                e = errno;
            }
            if (e != 0) {
                c->dial_errno = e;
                close(c->fd);
                c->fd = -1;
                return dial_next(c, want, err, cap);
            }
            if (c->tls && tls_begin(c, err, cap) != 0) {
                return DIAL_FAIL;
            }
            c->phase = c->tls ? DP_TLS : DP_SP_SEND;
            break;
        }
        case DP_TLS:
            tls_err_reset();
            errno = 0;
            r = SSL_connect(c->ssl);
            if (r == 1) {
                c->phase = DP_SP_SEND;
                break;
            }
            if (io_fail(c, r, want) == 0) {
                return DIAL_WAIT;
            }
            tls_fail_text(c, err, cap);
            return DIAL_FAIL;
        case DP_SP_SEND:
            n = conn_write(c, c->hdr_out + c->hdr_out_len, SP_HDR_LEN - c->hdr_out_len, want);
            if (n == 0) {
                return DIAL_WAIT;
            }
            if (n < 0) {
                snprintf(err, cap, "%s", c->io_err);
                return DIAL_FAIL;
            }
            if ((c->hdr_out_len += (size_t)n) == SP_HDR_LEN) {
                c->phase = DP_SP_RECV;
            }
            break;
        case DP_SP_RECV: {
            n = conn_read(c, c->hdr_in + c->hdr_in_len, SP_HDR_LEN - c->hdr_in_len, want);
            if (n == 0) {
                return DIAL_WAIT;
            }
            if (n < 0) {
                if (c->ssl != NULL && SSL_get_verify_result(c->ssl) != X509_V_OK) {
                    tls_fail_text(c, err, cap);
                } else {
                    snprintf(err, cap, "%.96s during the SP header exchange%s", c->io_err,
                        c->tls && !c->has_cert ? " (does the server require a client certificate?)"
                                               : " (is the peer an authd server?)");
                }
                return DIAL_FAIL;
            }
            if ((c->hdr_in_len += (size_t)n) < SP_HDR_LEN) {
                break;
            }
            int proto = sp_header_proto(c->hdr_in);
            if (proto < 0) {
                snprintf(
                    err, cap, "the peer does not speak the SP protocol (is it an authd server?)");
                return DIAL_FAIL;
            }
            if ((unsigned)proto != SP_PROTO_REP0) {
                snprintf(err, cap,
                    "the peer speaks SP protocol %d, not rep0 (%u): is it an authd server?", proto,
                    SP_PROTO_REP0);
                return DIAL_FAIL;
            }
            return DIAL_UP;
        }
        default:
            snprintf(err, cap, "internal error: dial phase %d", (int)c->phase);
            return DIAL_FAIL;
        }
    }
}

/*
** conn_up makes the new connection the client's (ssl_mtx held): the frames
** of calls that waited for it go out first, in the order they started.
*/
static void conn_up(authd_client *c)
{
    pthread_mutex_lock(&c->mtx);
    c->state = CS_UP;
    c->last_active = authd_monotonic_ns();
    c->backoff_ms = RECONNECT_MIN_MS;
    c->last_err[0] = '\0';
    c->wblocked = false;
    c->broken = false;
    for (struct call *k = c->head; k != NULL; k = k->next) {
        if (k->parked && buf_append(&c->out, k->frame, k->frame_len) == 0) {
            call_free_frame(k);
            k->parked = false;
        }
    }
    set_interest(c, EPOLLIN);
    pthread_mutex_unlock(&c->mtx);
    buf_clear(&c->rbuf);
    c->rneed = 0;
    c->read_again = false;
    c->read_wants_write = false;
    if (c->ai != NULL) {
        freeaddrinfo(c->ai);
        c->ai = c->ai_next = NULL;
    }
}

/*
** conn_down ends the connection or the dial (ssl_mtx held): calls whose
** frame went to the connection fail (they may have reached the server:
** never resent); parked calls keep waiting; the next dial is scheduled.
*/
static void conn_down(authd_client *c, const char *why, uint64_t now, struct batch *b)
{
    pthread_mutex_lock(&c->mtx);
    if (c->state == CS_UP) {
        struct call *k, *next;
        for (k = c->head; k != NULL; k = next) {
            next = k->next;
            if (!k->parked) {
                pending_remove(c, k);
                batch_add(b, k, OUT_LOST);
            }
        }
        snprintf(b->lost_why, sizeof(b->lost_why), "%s", why);
    } else {
        c->backoff_ms = c->backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : c->backoff_ms * 2;
    }
    c->state = CS_IDLE;
    c->redial_at = now + (uint64_t)c->backoff_ms * NS_PER_MS;
    buf_clear(&c->out);
    buf_clear(&c->wbuf);
    c->wblocked = false;
    c->broken = false;
    snprintf(c->last_err, sizeof(c->last_err), "%s", why);
    pthread_mutex_unlock(&c->mtx);
    conn_close(c);
}

/* ---- writing -------------------------------------------------------------------------- */

/*
** flush writes what is queued, as the one writer: the caller has set
** c->writer under mtx, and flush clears it. It takes c->out into c->wbuf
** (appending it when a partial write is pending) and writes wbuf until both
** are empty, the socket is full (EPOLLOUT is armed and the I/O thread goes
** on) or the connection fails (the I/O thread is woken to end it).
*/
static void flush(authd_client *c)
{
    uint32_t want = 0;
    ssize_t n;

    pthread_mutex_lock(&c->ssl_mtx);
    pthread_mutex_lock(&c->mtx);
    while (c->state == CS_UP && !c->broken) {
        if (c->wbuf.off == c->wbuf.len) {
            buf_swap(&c->out, &c->wbuf);
        } else if (c->out.len > c->out.off
            && buf_append(&c->wbuf, c->out.p + c->out.off, c->out.len - c->out.off) == 0) {
            buf_clear(&c->out);
        }
        if (c->wbuf.off == c->wbuf.len) {
            break;
        }
        pthread_mutex_unlock(&c->mtx);
        n = conn_write(c, c->wbuf.p + c->wbuf.off, c->wbuf.len - c->wbuf.off, &want);
        pthread_mutex_lock(&c->mtx);
        if (n > 0) {
            buf_consume(&c->wbuf, (size_t)n);
            continue;
        }
        if (n == 0) {
            c->wblocked = true;
            if (want == EPOLLOUT) {
                set_interest(c, EPOLLIN | EPOLLOUT);
            } /* else the I/O thread flushes again after its next read */
            break;
        }
        c->broken = true;
        snprintf(c->last_err, sizeof(c->last_err), "%s", c->io_err);
        wake(c); /* the I/O thread ends the connection */
        break;
    }
    c->writer = false;
    pthread_mutex_unlock(&c->mtx);
    pthread_mutex_unlock(&c->ssl_mtx);
}

/* ---- reading (I/O thread, ssl_mtx held) ----------------------------------------------- */

/*
** read_some reads what the connection has into rbuf: until the socket would
** block, OpenSSL holds no more, or rbuf is full (then read_again). Returns
** 0, or -1 when the connection is closed or failed (c->io_err).
*/
static int read_some(authd_client *c)
{
    size_t room = c->rneed > c->rbuf.len - c->rbuf.off ? c->rneed - (c->rbuf.len - c->rbuf.off) : 0;
    uint32_t want = 0;

    c->read_again = false;
    c->read_wants_write = false;
    if (buf_reserve(&c->rbuf, room > RBUF_FREE_MIN ? room : RBUF_FREE_MIN) != 0) {
        snprintf(c->io_err, sizeof(c->io_err), "out of memory for a reply");
        return -1;
    }
    for (;;) {
        size_t space = c->rbuf.cap - c->rbuf.len;
        ssize_t n;
        if (space == 0) {
            c->read_again = true;
            return 0;
        }
        n = conn_read(c, c->rbuf.p + c->rbuf.len, space, &want);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            if (want == EPOLLOUT) { /* TLS wants to write first */
                c->read_wants_write = true;
                pthread_mutex_lock(&c->mtx);
                set_interest(c, EPOLLIN | EPOLLOUT);
                pthread_mutex_unlock(&c->mtx);
            }
            return 0;
        }
        c->rbuf.len += (size_t)n;
        if (c->ssl != NULL ? !SSL_has_pending(c->ssl) : (size_t)n < space) {
            return 0; /* drained: epoll says when there is more */
        }
    }
}

/*
** parse_frames hands every complete frame in rbuf to its call (under mtx).
** Frames with an unknown id are dropped. Returns 0, or -1 with why for a
** frame the connection cannot survive (too large, too short).
*/
static int parse_frames(authd_client *c, struct batch *b, char *why, size_t cap)
{
    int rc = 0;

    pthread_mutex_lock(&c->mtx);
    c->rneed = 0;
    while (c->rbuf.len - c->rbuf.off >= 8) {
        const uint8_t *f = c->rbuf.p + c->rbuf.off;
        uint64_t n = sp_get64(f);
        uint32_t id;
        struct call *k;
        if (n > c->max_reply) {
            snprintf(why, cap, "a reply of %llu bytes exceeds the maximum of %zu",
                (unsigned long long)n, c->max_reply);
            rc = -1;
            break;
        }
        if (n < 4) {
            snprintf(why, cap, "malformed reply frame (%llu bytes)", (unsigned long long)n);
            rc = -1;
            break;
        }
        if (c->rbuf.len - c->rbuf.off < 8 + n) {
            c->rneed = 8 + (size_t)n;
            break;
        }
        id = get32(f + 8);
        if ((id & SP_ID_BIT) != 0 && (k = table_find(c, id & ~SP_ID_BIT)) != NULL && !k->parked) {
            pending_remove(c, k);
            k->reply = f + FRAME_HDR_LEN;
            k->reply_len = (size_t)n - 4;
            batch_add(b, k, OUT_REPLY);
        }
        c->rbuf.off += 8 + (size_t)n;
    }
    pthread_mutex_unlock(&c->mtx);
    return rc;
}

/* rbuf_compact wipes what the batch has used and keeps a partial frame. */
static void rbuf_compact(authd_client *c)
{
    struct buf *r = &c->rbuf;
    size_t used = r->off;

    if (used == 0) {
        return;
    }
    authd_wipe(r->p, used);
    if (r->len > used) {
        memmove(r->p, r->p + used, r->len - used);
        authd_wipe(r->p + (r->len - used), used); /* stale copies behind the moved bytes */
    }
    r->len -= used;
    r->off = 0;
}

/* ---- completing calls (I/O thread, no lock held) --------------------------------------- */

/*
** unpack_reply checks the reply envelope (parses, echoes our id), turns a
** failure code into the status, and on OK unpacks the response body.
** Codes outside gRPC's range become UNKNOWN. A canonical envelope (what
** authd sends) is read in place (client_envelope.h); any other goes through
** protobuf-c, whose copy of the body is wiped before it is freed (it may
** hold an access token). The frame itself is wiped by the caller.
*/
static int unpack_reply(const uint8_t *data, size_t len, uint64_t id,
    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, authd_status *st)
{
    Authd__V1__ReplyEnvelope *rep = NULL;
    authd_cenv_reply r;
    ProtobufCMessage *m;
    int rc;

    if (!authd_cenv_reply_fast(data, len, &r)) {
        rep = authd__v1__reply_envelope__unpack(NULL, len, data);
        if (rep == NULL) {
            return set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT,
                "unparsable reply envelope (%zu bytes)", len);
        }
        r.code = (int32_t)rep->code;
        r.request_id = rep->request_id;
        r.body = rep->body.data;
        r.body_len = rep->body.len;
        r.message = rep->message;
        r.message_len = SIZE_MAX;
        r.reason = rep->reason;
        r.reason_len = SIZE_MAX;
    }
    if (r.request_id != id) {
        rc = set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT,
            "reply carries request id %llu, expected %llu", (unsigned long long)r.request_id,
            (unsigned long long)id);
        goto out;
    }
    if (r.code != AUTHD__V1__CODE__OK) {
        int code = (int)r.code;
        st->code = (code > 0
                       && protobuf_c_enum_descriptor_get_value(&authd__v1__code__descriptor, code)
                           != NULL)
            ? code
            : AUTHD_UNKNOWN;
        copy_text_n(st->message, sizeof(st->message), r.message, r.message_len);
        copy_text_n(st->reason, sizeof(st->reason), r.reason, r.reason_len);
        rc = st->code;
        goto out;
    }
    m = protobuf_c_message_unpack(resp_desc, NULL, r.body_len, r.body);
    if (m == NULL) {
        rc = set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT, "unparsable %s in the reply",
            resp_desc->name);
        goto out;
    }
    *resp = m;
    rc = AUTHD_OK;
out:
    if (rep != NULL) {
        authd_wipe(rep->body.data, rep->body.len); /* may hold an access token */
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
    }
    return rc;
}

/*
** run_batch hands each completed call's outcome to its callback, then puts
** the calls back in the pool (one lock for the batch). Callbacks may start
** calls: from here those only queue, and the I/O thread flushes after.
*/
static void run_batch(authd_client *c, struct batch *b)
{
    struct call *k;

    if (b->head == NULL) {
        return;
    }
    for (k = b->head; k != NULL; k = k->dnext) {
        ProtobufCMessage *resp = NULL;
        authd_status st;

        clear_status(&st);
        st.request_id = k->req_id;
        switch (k->outcome) {
        case OUT_REPLY:
            if (k->raw_cb != NULL) {
                st.code = AUTHD_OK;
            } else {
                unpack_reply(k->reply, k->reply_len, k->req_id, k->resp_desc, &resp, &st);
            }
            break;
        case OUT_DEADLINE:
            set_status(&st, AUTHD_DEADLINE_EXCEEDED, AUTHD_REASON_TRANSPORT,
                "no reply from %s within %d ms", c->url, c->timeout_ms);
            break;
        case OUT_LOST:
            set_status(&st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
                "connection to %s lost before the reply (%s); the request may have been "
                "processed",
                c->url, b->lost_why);
            break;
        case OUT_NO_CONN:
            set_status(&st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
                "not connected to %s (no connection within %d ms%s%s)", c->url, c->timeout_ms,
                b->no_conn_why[0] != '\0' ? ": " : "", b->no_conn_why);
            break;
        case OUT_CANCELLED:
        default:
            set_status(&st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client was closed");
            break;
        }
        if (k->raw_cb != NULL) {
            bool ok = st.code == AUTHD_OK;
            k->raw_cb(k->arg, st.code, &st, ok ? k->reply : NULL, ok ? k->reply_len : 0);
        } else {
            k->cb(k->arg, st.code, &st, resp);
        }
    }
    pthread_mutex_lock(&c->mtx);
    for (k = b->head; k != NULL; k = k->dnext) {
        call_free_frame(k);
        k->next = c->free_calls;
        c->free_calls = k;
    }
    pthread_mutex_unlock(&c->mtx);
    b->head = b->tail = NULL;
}

/* expire completes the calls whose deadline has passed (under mtx). */
static void expire(authd_client *c, uint64_t now, struct batch *b)
{
    while (c->head != NULL && c->head->deadline <= now) {
        struct call *k = c->head;
        pending_remove(c, k);
        if (k->parked) {
            call_free_frame(k);
            snprintf(b->no_conn_why, sizeof(b->no_conn_why), "%s", c->last_err);
        }
        batch_add(b, k, k->parked ? OUT_NO_CONN : OUT_DEADLINE);
    }
}

/* ---- the I/O thread ---------------------------------------------------------------------- */

/* io_timeout: ms until the I/O thread must look at the clock again. */
static int io_timeout(authd_client *c, uint64_t now)
{
    uint64_t wake = now + c->timeout_ns; /* see the top of the file */

    if (c->read_again) {
        return 0;
    }
    pthread_mutex_lock(&c->mtx);
    if (c->head != NULL && c->head->deadline < wake) {
        wake = c->head->deadline;
    }
    if (c->state == CS_UP && c->idle_ns != 0 && c->head == NULL
        && c->last_active + c->idle_ns < wake) {
        wake = c->last_active + c->idle_ns;
    }
    if (c->state == CS_IDLE && c->redial_at < wake) {
        wake = c->redial_at;
    } else if (c->state == CS_DIALING && c->dial_deadline < wake) {
        wake = c->dial_deadline;
    }
    pthread_mutex_unlock(&c->mtx);
    if (wake <= now) {
        return 0;
    }
    /* Round up, so that the deadline has passed when epoll_wait returns. */
    return (int)((wake - now + NS_PER_MS - 1) / NS_PER_MS);
}

/*
** io_dial advances the dial in progress (or starts one when it is due) and
** turns its end into a connection or a scheduled retry (ssl_mtx held).
*/
static void io_dial(authd_client *c, uint32_t ready, uint64_t now, struct batch *b)
{
    char err[WHY_LEN] = "";
    uint32_t want = 0;
    int r;

    if (c->state == CS_IDLE) {
        if (now < c->redial_at) {
            return;
        }
        r = dial_begin(c, now, &want, err, sizeof(err));
    } else if (ready != 0) {
        r = dial_step(c, ready, &want, err, sizeof(err));
    } else {
        r = DIAL_WAIT;
    }
    if (r == DIAL_WAIT && now >= c->dial_deadline) {
        snprintf(err, sizeof(err), "no connection within %d ms", c->timeout_ms);
        r = DIAL_FAIL;
    }
    switch (r) {
    case DIAL_WAIT:
        pthread_mutex_lock(&c->mtx);
        c->state = CS_DIALING;
        set_interest(c, want);
        pthread_mutex_unlock(&c->mtx);
        break;
    case DIAL_UP:
        conn_up(c);
        break;
    default:
        conn_down(c, err, now, b);
        break;
    }
}

/*
** io_round is one turn of the I/O thread after epoll_wait: read or dial,
** expire, run the callbacks, flush. Returns true once the client is closed
** (every call completed).
*/
static bool io_round(authd_client *c, uint32_t ready)
{
    struct batch b = { 0 };
    uint64_t now = authd_monotonic_ns();
    bool closing, broken, do_flush = false;
    char why[WHY_LEN];

    pthread_mutex_lock(&c->ssl_mtx);
    pthread_mutex_lock(&c->mtx);
    closing = c->closing;
    broken = c->broken;
    if (c->state == CS_UP && (ready & EPOLLOUT) != 0) {
        c->wblocked = false;
        set_interest(c, EPOLLIN);
    }
    /* Idle: no call in flight or queued, nothing being written, and no
     * activity for idle_ns. Under both locks, so a call starting now
     * either came first (head != NULL) or finds the client dormant and
     * wakes us to dial. */
    bool idle_close = !closing && !broken && c->state == CS_UP && c->idle_ns != 0 && c->head == NULL
        && !c->writer && c->out.len == c->out.off && c->wbuf.len == c->wbuf.off
        && now >= c->last_active + c->idle_ns && (ready & EPOLLIN) == 0 && !c->read_again;
    if (idle_close) {
        c->state = CS_IDLE;
        c->dormant = true;
        c->redial_at = UINT64_MAX;
        c->wblocked = false;
        snprintf(c->last_err, sizeof(c->last_err), "idle connection closed");
    }
    pthread_mutex_unlock(&c->mtx);
    if (idle_close) {
        if (c->ssl != NULL) {
            (void)SSL_shutdown(c->ssl); /* close_notify, best effort */
            ERR_clear_error();
        }
        conn_close(c);
        buf_clear(&c->rbuf);
        c->rneed = 0;
        pthread_mutex_unlock(&c->ssl_mtx);
        return false;
    }
    if (closing) {
        struct call *k;
        pthread_mutex_lock(&c->mtx);
        while ((k = c->head) != NULL) {
            pending_remove(c, k);
            batch_add(&b, k, OUT_CANCELLED);
        }
        c->state = CS_IDLE;
        pthread_mutex_unlock(&c->mtx);
        if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
            (void)SSL_shutdown(c->ssl); /* close_notify, best effort */
        }
        conn_close(c);
        pthread_mutex_unlock(&c->ssl_mtx);
        run_batch(c, &b); /* calls they start fail: closing */
        return true;
    }
    if (c->state == CS_UP) {
        if (broken) {
            snprintf(why, sizeof(why), "%s", c->io_err);
            conn_down(c, why, now, &b);
        } else if ((ready & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 || c->read_again
            || (c->read_wants_write && (ready & EPOLLOUT) != 0)) {
            int r = read_some(c);
            if (parse_frames(c, &b, why, sizeof(why)) != 0) {
                conn_down(c, why, now, &b);
            } else if (r != 0) {
                snprintf(why, sizeof(why), "%s", c->io_err);
                conn_down(c, why, now, &b);
            } else {
                pthread_mutex_lock(&c->mtx);
                c->wblocked = c->wblocked && (c->ep_events & EPOLLOUT) != 0;
                pthread_mutex_unlock(&c->mtx);
            }
        }
    } else {
        io_dial(c, ready, now, &b);
    }
    pthread_mutex_unlock(&c->ssl_mtx);

    pthread_mutex_lock(&c->mtx);
    expire(c, now, &b);
    if (b.head != NULL) {
        c->last_active = now;
    }
    pthread_mutex_unlock(&c->mtx);

    run_batch(c, &b);
    rbuf_compact(c);

    pthread_mutex_lock(&c->mtx);
    if (c->state != CS_UP) {
        buf_clear(&c->rbuf);
        c->rneed = 0;
        c->read_again = false;
    }
    if (c->state == CS_UP && !c->writer && !c->wblocked
        && (c->out.len > c->out.off || c->wbuf.len > c->wbuf.off)) {
        c->writer = do_flush = true;
    }
    pthread_mutex_unlock(&c->mtx);
    if (do_flush) {
        flush(c);
    }
    return false;
}

static void *io_main(void *arg)
{
    authd_client *c = arg;
    struct epoll_event ev[4];

    io_self = c;
    for (;;) {
        uint32_t ready = 0;
        int n = epoll_wait(c->ep, ev, 4, io_timeout(c, authd_monotonic_ns()));
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u32 == 0) {
                uint64_t v;
                while (read(c->evfd, &v, sizeof(v)) < 0 && errno == EINTR) { }
            } else {
                ready |= ev[i].events;
            }
        }
        if (io_round(c, ready)) {
            break;
        }
    }
    return NULL;
}

/* ---- open and close ------------------------------------------------------------------- */

/*
** dial_sync is open's dial, on the caller's thread with poll() and the
** client's timeout for connect + handshake + SP headers. Fills st on failure.
*/
static int dial_sync(authd_client *c, authd_status *st)
{
    char err[WHY_LEN] = "";
    uint32_t want = 0;
    uint64_t now = authd_monotonic_ns();
    int r;

    r = dial_begin(c, now, &want, err, sizeof(err));
    while (r == DIAL_WAIT) {
        struct pollfd p = { .fd = c->fd, .events = 0 };
        int n;
        now = authd_monotonic_ns();
        if (now >= c->dial_deadline) {
            snprintf(err, sizeof(err), "no connection within %d ms", c->timeout_ms);
            r = DIAL_FAIL;
            break;
        }
        p.events = (short)(((want & EPOLLIN) != 0 ? POLLIN : 0)
            | ((want & EPOLLOUT) != 0 ? POLLOUT : 0));
        n = poll(&p, 1, (int)((c->dial_deadline - now + NS_PER_MS - 1) / NS_PER_MS));
        if (n < 0 && errno != EINTR) {
            snprintf(err, sizeof(err), "poll: %s", strerror(errno));
            r = DIAL_FAIL;
        } else if (n > 0) {
            uint32_t ready = ((p.revents & POLLIN) != 0 ? EPOLLIN : 0)
                | ((p.revents & POLLOUT) != 0 ? EPOLLOUT : 0)
                | ((p.revents & POLLERR) != 0 ? EPOLLERR : 0)
                | ((p.revents & POLLHUP) != 0 ? EPOLLHUP : 0);
            r = dial_step(c, ready, &want, err, sizeof(err));
        }
    }
    if (r == DIAL_UP) {
        conn_up(c);
        return 0;
    }
    conn_close(c);
    return set_status(
        st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT, "cannot connect to %s: %s", c->url, err);
}

/* client_free releases what open made; the I/O thread is not running. */
static void client_free(authd_client *c)
{
    struct call *k;

    conn_close(c);
    while ((k = c->free_calls) != NULL) {
        c->free_calls = k->next;
        call_free_frame(k);
        free(k);
    }
    free(c->table);
    buf_free(&c->out);
    buf_free(&c->wbuf);
    buf_free(&c->rbuf);
    if (c->ep >= 0) {
        close(c->ep);
    }
    if (c->evfd >= 0) {
        close(c->evfd);
    }
    SSL_CTX_free(c->ctx);
    BIO_meth_free(c->bio_meth);
    pthread_mutex_destroy(&c->mtx);
    pthread_mutex_destroy(&c->ssl_mtx);
    free(c);
}

/*
** authd_client_open: see client.h. The I/O thread starts only once the
** first connection is up; it runs with every signal blocked, so that the
** application's handlers run on its own threads.
*/
int authd_client_open(const authd_client_options *o, authd_client **out, authd_status *st)
{
    authd_status local;
    authd_client *c = NULL;
    sigset_t all, old;
    int rc = 0;

    if (st == NULL) {
        st = &local;
    }
    clear_status(st);
    if (o == NULL || out == NULL) {
        return set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "authd_client_open: NULL argument");
    }
    if (o->timeout_ms < 0) {
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "timeout must be positive (0 = default)");
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
    }
    c->fd = c->ep = c->evfd = -1;
    pthread_mutex_init(&c->mtx, NULL);
    pthread_mutex_init(&c->ssl_mtx, NULL);
    if ((rc = parse_url(o, c, st)) != 0) {
        goto out;
    }
    if (c->tls && ((rc = pick_server_name(o, c, st)) != 0 || (rc = make_tls(o, c, st)) != 0)) {
        goto out;
    }
    if (c->bio_meth != NULL
        && (BIO_meth_set_write(c->bio_meth, sock_write) != 1
            || BIO_meth_set_read(c->bio_meth, sock_read) != 1
            || BIO_meth_set_ctrl(c->bio_meth, sock_ctrl) != 1
            || BIO_meth_set_create(c->bio_meth, sock_create) != 1)) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "TLS setup failed");
        goto out;
    }
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : AUTHD_CLIENT_DEFAULT_TIMEOUT_MS;
    c->timeout_ns = (uint64_t)c->timeout_ms * NS_PER_MS;
    c->idle_ns = o->idle_timeout_ms < 0
        ? 0
        : (uint64_t)(o->idle_timeout_ms > 0 ? o->idle_timeout_ms
                                            : AUTHD_CLIENT_DEFAULT_IDLE_TIMEOUT_MS)
            * NS_PER_MS;
    c->max_reply = o->max_reply_size > 0 ? o->max_reply_size : AUTHD_CLIENT_DEFAULT_MAX_REPLY;
    c->backoff_ms = RECONNECT_MIN_MS;
    /* Random starts, so ids from restarted clients do not line up. */
    atomic_init(&c->next_req_id, random64());
    c->next_sp_id = (uint32_t)random64() & ~SP_ID_BIT;
    if (table_grow(c) != 0) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    if ((c->ep = epoll_create1(EPOLL_CLOEXEC)) < 0
        || (c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = set_status(
            st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "client setup: %s", strerror(errno));
        goto out;
    }
    {
        struct epoll_event e = { .events = EPOLLIN, .data.u32 = 0 };
        if (epoll_ctl(c->ep, EPOLL_CTL_ADD, c->evfd, &e) != 0) {
            rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "client setup: %s",
                strerror(errno));
            goto out;
        }
    }
    /* Synchronous: a refused connection or a bad certificate fails here. */
    if ((rc = dial_sync(c, st)) != 0) {
        goto out;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&c->thread, NULL, io_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT,
            "cannot start the I/O thread: %s", strerror(rc));
        goto out;
    }
    *out = c;
    c = NULL;
out:
    if (c != NULL) {
        client_free(c);
    }
    return rc;
}

/*
** authd_client_close: the I/O thread completes every call in flight
** (CANCELLED) when it sees closing, then exits; close waits for that.
*/
void authd_client_close(authd_client *c)
{
    if (c == NULL) {
        return;
    }
    if (io_self == c) {
        /* From a callback: the I/O thread cannot wait for itself. */
        fputs("authd_client_close called from a callback of the same client\n", stderr);
        abort();
    }
    pthread_mutex_lock(&c->mtx);
    c->closing = true;
    pthread_mutex_unlock(&c->mtx);
    wake(c);
    pthread_join(c->thread, NULL);
    client_free(c);
}

/* ---- starting calls ----------------------------------------------------------------------- */

/* next_request_id: unique per client; 0 is skipped (it reads as "unset"). */
static uint64_t next_request_id(authd_client *c)
{
    uint64_t id;

    do {
        id = atomic_fetch_add_explicit(&c->next_req_id, 1, memory_order_relaxed);
    } while (id == 0);
    return id;
}

/*
** start_call registers a call and queues (or parks) its frame: frame holds
** FRAME_HDR_LEN bytes of header (length filled in, id filled in here) and
** the body. The frame is the caller's: wiped by the caller once this
** returns. Returns 0, or a status code with st filled; then cb never runs.
*/
static int start_call(authd_client *c, uint8_t *frame, size_t flen, uint64_t req_id,
    const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb, authd_client_raw_cb raw_cb,
    void *arg, authd_status *st)
{
    struct call *k = NULL;
    bool do_flush = false, do_wake = false;
    int rc = 0;

    pthread_mutex_lock(&c->mtx);
    if (c->closing) {
        rc = set_status(st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client is closing");
        goto out;
    }
    if ((c->npending >= c->table_mask + 1 && table_grow(c) != 0) || (k = call_alloc(c)) == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    do {
        c->next_sp_id = (c->next_sp_id + 1) & ~SP_ID_BIT;
    } while (table_find(c, c->next_sp_id) != NULL);
    k->sp_id = c->next_sp_id;
    put32(frame + 8, k->sp_id | SP_ID_BIT);
    if (c->state == CS_UP) {
        if (buf_append(&c->out, frame, flen) != 0) {
            rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
            goto out;
        }
        /* From the I/O thread only queue: it flushes after the batch. */
        if (io_self != c && !c->writer && !c->wblocked) {
            c->writer = do_flush = true;
        }
    } else {
        if ((k->frame = malloc(flen)) == NULL) {
            rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
            goto out;
        }
        memcpy(k->frame, frame, flen);
        k->frame_len = flen;
        k->parked = true;
        if (c->dormant) { /* idle-closed: dial now */
            c->dormant = false;
            c->redial_at = 0;
            do_wake = io_self != c;
        }
    }
    k->req_id = req_id;
    k->resp_desc = resp_desc;
    k->cb = cb;
    k->raw_cb = raw_cb;
    k->arg = arg;
    k->deadline = authd_monotonic_ns() + c->timeout_ns; /* under mtx: the list stays in order */
    c->last_active = k->deadline - c->timeout_ns;
    k->hnext = c->table[k->sp_id & c->table_mask];
    c->table[k->sp_id & c->table_mask] = k;
    k->prev = c->tail;
    k->next = NULL;
    if (c->tail != NULL) {
        c->tail->next = k;
    } else {
        c->head = k;
    }
    c->tail = k;
    c->npending++;
    k = NULL;
out:
    if (k != NULL) {
        k->next = c->free_calls;
        c->free_calls = k;
    }
    pthread_mutex_unlock(&c->mtx);
    if (do_wake) {
        wake(c);
    }
    if (do_flush) {
        flush(c);
    }
    return rc;
}

/*
** call_envelope serializes the request envelope (method, id, body) into a
** frame, on the stack when it is small, with no lock held, and starts the
** call. The envelope's fields are written ahead of the body and the body
** is packed right behind them (client_envelope.h): one pass, no copy. The
** frame, which may hold a password, is wiped before it is released.
*/
static int call_envelope(authd_client *c, const char *method, const char *authorization,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb,
    void *arg, authd_status *st)
{
    uint8_t sframe[STACK_FRAME];
    uint8_t *frame = sframe, *body;
    size_t body_len, method_len, head_len, auth_len, flen = 0;
    uint64_t id = next_request_id(c);
    int rc;

    st->request_id = id;
    body_len = protobuf_c_message_get_packed_size(req);
    method_len = strlen(method);
    auth_len = authorization != NULL ? strlen(authorization) : 0;
    if (body_len > SIZE_MAX / 2 || method_len > SIZE_MAX / 4 || auth_len > SIZE_MAX / 8) {
        frame = NULL;
        rc = set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "request too large");
        goto out;
    }
    head_len = authd_cenv_request_head_len(method_len, id, body_len);
    size_t tail_len = authd_cenv_request_tail_len(auth_len);
    flen = FRAME_HDR_LEN + head_len + body_len + tail_len;
    if (flen > sizeof(sframe) && (frame = malloc(flen)) == NULL) {
        rc = set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    sp_put64(frame, 4 + (uint64_t)head_len + body_len + tail_len);
    body = authd_cenv_request_head(frame + FRAME_HDR_LEN, method, method_len, id, body_len);
    if (protobuf_c_message_pack(req, body) != body_len) {
        rc = set_status(st, AUTHD_INTERNAL, AUTHD_REASON_CLIENT, "%s packed to another size",
            req->descriptor->name);
        goto out;
    }
    authd_cenv_request_tail(body + body_len, authorization, auth_len);
    rc = start_call(c, frame, flen, id, resp_desc, cb, NULL, arg, st);
out:
    if (frame != NULL) {
        authd_wipe(frame, flen);
        if (frame != sframe) {
            free(frame);
        }
    }
    return rc;
}

/* authd_client_call_async: see client.h. */
int authd_client_call_async(authd_client *c, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb, void *arg)
{
    authd_status st;

    clear_status(&st);
    if (c == NULL || method == NULL || method[0] != '/' || req == NULL || resp_desc == NULL
        || cb == NULL || resp_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return AUTHD_INVALID_ARGUMENT;
    }
    if (!protobuf_c_message_check(req)) {
        return AUTHD_INVALID_ARGUMENT;
    }
    return call_envelope(c, method, NULL, req, resp_desc, cb, arg, &st);
}

/* authd_client_call_as_async: see client.h. */
int authd_client_call_as_async(authd_client *c, const char *authorization, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb,
    void *arg)
{
    authd_status st;

    clear_status(&st);
    if (c == NULL || method == NULL || method[0] != '/' || req == NULL || resp_desc == NULL
        || cb == NULL || resp_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return AUTHD_INVALID_ARGUMENT;
    }
    if (!protobuf_c_message_check(req)) {
        return AUTHD_INVALID_ARGUMENT;
    }
    return call_envelope(c, method, authorization, req, resp_desc, cb, arg, &st);
}

/* authd_client_call_raw_async: see client.h. */
int authd_client_call_raw_async(
    authd_client *c, const void *req, size_t len, authd_client_raw_cb cb, void *arg)
{
    authd_status st;
    uint8_t sframe[STACK_FRAME];
    uint8_t *frame = sframe;
    size_t flen;
    int rc;

    clear_status(&st);
    if (c == NULL || (req == NULL && len > 0) || cb == NULL || len > SIZE_MAX - FRAME_HDR_LEN) {
        return AUTHD_INVALID_ARGUMENT;
    }
    flen = FRAME_HDR_LEN + len;
    if (flen > sizeof(sframe) && (frame = malloc(flen)) == NULL) {
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    sp_put64(frame, 4 + (uint64_t)len);
    if (len > 0) {
        memcpy(frame + FRAME_HDR_LEN, req, len);
    }
    rc = start_call(c, frame, flen, 0, NULL, NULL, cb, arg, &st);
    authd_wipe(frame, flen);
    if (frame != sframe) {
        free(frame);
    }
    return rc;
}

/* ---- synchronous calls ------------------------------------------------------------------ */

/* A synchronous call waits for its async callback here. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    authd_status st;
    ProtobufCMessage *resp;
};

static void waiter_cb(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    w->st = *st;
    w->resp = code == AUTHD_OK ? resp : NULL;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/*
** authd_client_call: see client.h. An async call and a wait: the I/O
** thread completes every call by its deadline, so the wait is bounded.
*/
static int call_sync(authd_client *c, const char *method, const char *authorization,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, authd_status *st)
{
    authd_status local;
    struct waiter w;
    int rc;

    if (st == NULL) {
        st = &local;
    }
    clear_status(st);
    if (c == NULL || method == NULL || method[0] != '/' || req == NULL || resp_desc == NULL
        || resp == NULL || resp_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "authd_client_call: bad argument");
    }
    if (!protobuf_c_message_check(req)) {
        return set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "malformed %s", req->descriptor->name);
    }
    if (io_self == c) {
        return set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT,
            "authd_client_call from a callback of the same client would wait forever");
    }
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    if ((rc = call_envelope(c, method, authorization, req, resp_desc, waiter_cb, &w, st)) == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            pthread_cond_wait(&w.cv, &w.mu);
        }
        pthread_mutex_unlock(&w.mu);
        *st = w.st;
        rc = st->code;
        if (rc == AUTHD_OK) {
            *resp = w.resp;
        }
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

int authd_client_call(authd_client *c, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, authd_status *st)
{
    return call_sync(c, method, NULL, req, resp_desc, resp, st);
}

/* authd_client_call_as: see client.h. */
int authd_client_call_as(authd_client *c, const char *authorization, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, authd_status *st)
{
    return call_sync(c, method, authorization, req, resp_desc, resp, st);
}
