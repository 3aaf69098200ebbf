/*
** client_call.c — libauthd-client's calls and public API (see
** client_internal.h for the design): status texts, the pool of call
** records, the id table and the deadline list, the request envelope written
** into its frame, replies unpacked and handed to callbacks, open and close,
** and the asynchronous and synchronous calls.
*/
#include "client_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "authd/v1/envelope.pb-c.h"
#include "client_envelope.h"
#include "sysutil.h"

/* ---- small helpers ----------------------------------------------------------- */

/* authd_code_str: the names come from the proto's Code enum, the contract
 * itself, so they cannot drift from the server's. */
const char *authd_code_str(int code)
{
    const ProtobufCEnumValue *v
        = protobuf_c_enum_descriptor_get_value(&authd__v1__code__descriptor, code);
    return v != NULL ? v->name : "UNKNOWN";
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

/* set_status fills st (keeping its request id) and returns code. */
int cl_set_status(authd_status *st, int code, const char *reason, const char *fmt, ...)
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

/* ---- options: the URL ---------------------------------------------------------------------- */

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
        return cl_set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "no server URL given");
    }
    if (strlen(u) >= sizeof(c->url)) {
        return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "invalid server URL (want tls+tcp://host:port)");
    }
    if ((rest = sp_url_scheme(u, &c->tls, &c->family)) == NULL) {
        const char *sep = strstr(u, "://");
        return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            sep != NULL ? "unsupported URL scheme %.*s:// (want tls+tcp://)"
                        : "invalid server URL%.*s (want tls+tcp://host:port)",
            sep != NULL ? (int)(sep - u > 32 ? 32 : sep - u) : 0, u);
    }
    if (!c->tls && !o->allow_plaintext) {
        return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "plaintext %.*s refused: use tls+tcp:// (or allow plaintext for tests)",
            (int)(rest - u), u);
    }
    if (rest[0] == '[') {
        host = rest + 1;
        if ((host_end = strchr(host, ']')) == NULL || host_end[1] != ':') {
            return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "server URL needs a host and a port");
        }
        port = host_end + 2;
    } else {
        host = rest;
        host_end = strchr(host, ':');
        if (host_end == NULL) {
            return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
                "server URL needs a host and a port");
        }
        port = host_end + 1;
    }
    host_len = (size_t)(host_end - host);
    errno = 0;
    pn = port[0] >= '0' && port[0] <= '9' ? strtoul(port, &end, 10) : 0;
    if (host_len == 0 || pn == 0 || pn > 65535 || errno != 0) {
        return cl_set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG, "server URL needs a host and a port");
    }
    if (*end != '\0' || memchr(host, '/', host_len) != NULL || memchr(host, '@', host_len) != NULL
        || memchr(host, ' ', host_len) != NULL) {
        return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "invalid server URL (want tls+tcp://host:port)");
    }
    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    snprintf(c->port, sizeof(c->port), "%lu", pn);
    snprintf(c->url, sizeof(c->url), "%s", u);
    return 0;
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

void cl_call_free_frame(struct call *k)
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

struct call *cl_table_find(authd_client *c, uint32_t id)
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
void cl_pending_remove(authd_client *c, struct call *k)
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

void cl_batch_add(struct batch *b, struct call *k, enum outcome o)
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
            return cl_set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT,
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
        rc = cl_set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT,
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
        rc = cl_set_status(st, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT, "unparsable %s in the reply",
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
void cl_run_batch(authd_client *c, struct batch *b)
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
            cl_set_status(&st, AUTHD_DEADLINE_EXCEEDED, AUTHD_REASON_TRANSPORT,
                "no reply from %s within %d ms", c->url, c->timeout_ms);
            break;
        case OUT_LOST:
            cl_set_status(&st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
                "connection to %s lost before the reply (%s); the request may have been "
                "processed",
                c->url, b->lost_why);
            break;
        case OUT_NO_CONN:
            cl_set_status(&st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT,
                "not connected to %s (no connection within %d ms%s%s)", c->url, c->timeout_ms,
                b->no_conn_why[0] != '\0' ? ": " : "", b->no_conn_why);
            break;
        case OUT_CANCELLED:
        default:
            cl_set_status(&st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client was closed");
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
        cl_call_free_frame(k);
        k->next = c->free_calls;
        c->free_calls = k;
    }
    pthread_mutex_unlock(&c->mtx);
    b->head = b->tail = NULL;
}

/* expire completes the calls whose deadline has passed (under mtx). */
void cl_expire(authd_client *c, uint64_t now, struct batch *b)
{
    while (c->head != NULL && c->head->deadline <= now) {
        struct call *k = c->head;
        cl_pending_remove(c, k);
        if (k->parked) {
            cl_call_free_frame(k);
            snprintf(b->no_conn_why, sizeof(b->no_conn_why), "%s", c->last_err);
        }
        cl_batch_add(b, k, k->parked ? OUT_NO_CONN : OUT_DEADLINE);
    }
}

/* ---- open and close ------------------------------------------------------------------- */

/* client_free releases what open made; the I/O thread is not running. */
static void client_free(authd_client *c)
{
    struct call *k;

    cl_conn_close(c);
    while ((k = c->free_calls) != NULL) {
        c->free_calls = k->next;
        cl_call_free_frame(k);
        free(k);
    }
    free(c->table);
    cl_buf_free(&c->out);
    cl_buf_free(&c->wbuf);
    cl_buf_free(&c->rbuf);
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
        return cl_set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "authd_client_open: NULL argument");
    }
    if (o->timeout_ms < 0) {
        return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CONFIG,
            "timeout must be positive (0 = default)");
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
    }
    c->fd = c->ep = c->evfd = -1;
    pthread_mutex_init(&c->mtx, NULL);
    pthread_mutex_init(&c->ssl_mtx, NULL);
    if ((rc = parse_url(o, c, st)) != 0) {
        goto out;
    }
    if (c->tls
        && ((rc = cl_pick_server_name(o, c, st)) != 0 || (rc = cl_make_tls(o, c, st)) != 0)) {
        goto out;
    }
    if (c->bio_meth != NULL && !cl_tls_bio_methods(c->bio_meth)) {
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "TLS setup failed");
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
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    if ((c->ep = epoll_create1(EPOLL_CLOEXEC)) < 0
        || (c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = cl_set_status(
            st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "client setup: %s", strerror(errno));
        goto out;
    }
    {
        struct epoll_event e = { .events = EPOLLIN, .data.u32 = 0 };
        if (epoll_ctl(c->ep, EPOLL_CTL_ADD, c->evfd, &e) != 0) {
            rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT,
                "client setup: %s", strerror(errno));
            goto out;
        }
    }
    /* Synchronous: a refused connection or a bad certificate fails here. */
    if ((rc = cl_dial_sync(c, st)) != 0) {
        goto out;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&c->thread, NULL, cl_io_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT,
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
    if (cl_io_self == c) {
        /* From a callback: the I/O thread cannot wait for itself. */
        fputs("authd_client_close called from a callback of the same client\n", stderr);
        abort();
    }
    pthread_mutex_lock(&c->mtx);
    c->closing = true;
    pthread_mutex_unlock(&c->mtx);
    cl_wake(c);
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
        rc = cl_set_status(st, AUTHD_CANCELLED, AUTHD_REASON_CLIENT, "the client is closing");
        goto out;
    }
    if ((c->npending >= c->table_mask + 1 && table_grow(c) != 0) || (k = call_alloc(c)) == NULL) {
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    do {
        c->next_sp_id = (c->next_sp_id + 1) & ~SP_ID_BIT;
    } while (cl_table_find(c, c->next_sp_id) != NULL);
    k->sp_id = c->next_sp_id;
    sp_put32(frame + 8, k->sp_id | SP_ID_BIT);
    if (c->state == CS_UP) {
        if (cl_buf_append(&c->out, frame, flen) != 0) {
            rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
            goto out;
        }
        /* From the I/O thread only queue: it flushes after the batch. */
        if (cl_io_self != c && !c->writer && !c->wblocked) {
            c->writer = do_flush = true;
        }
    } else {
        if ((k->frame = malloc(flen)) == NULL) {
            rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
            goto out;
        }
        memcpy(k->frame, frame, flen);
        k->frame_len = flen;
        k->parked = true;
        if (c->dormant) { /* idle-closed: dial now */
            c->dormant = false;
            c->redial_at = 0;
            do_wake = cl_io_self != c;
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
        cl_wake(c);
    }
    if (do_flush) {
        cl_flush(c);
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
        rc = cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "request too large");
        goto out;
    }
    head_len = authd_cenv_request_head_len(method_len, id, body_len);
    size_t tail_len = authd_cenv_request_tail_len(auth_len);
    flen = FRAME_HDR_LEN + head_len + body_len + tail_len;
    if (flen > sizeof(sframe) && (frame = malloc(flen)) == NULL) {
        rc = cl_set_status(st, AUTHD_RESOURCE_EXHAUSTED, AUTHD_REASON_CLIENT, "out of memory");
        goto out;
    }
    sp_put64(frame, 4 + (uint64_t)head_len + body_len + tail_len);
    body = authd_cenv_request_head(frame + FRAME_HDR_LEN, method, method_len, id, body_len);
    if (protobuf_c_message_pack(req, body) != body_len) {
        rc = cl_set_status(st, AUTHD_INTERNAL, AUTHD_REASON_CLIENT, "%s packed to another size",
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
        return cl_set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "authd_client_call: bad argument");
    }
    if (!protobuf_c_message_check(req)) {
        return cl_set_status(
            st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT, "malformed %s", req->descriptor->name);
    }
    if (cl_io_self == c) {
        return cl_set_status(st, AUTHD_INVALID_ARGUMENT, AUTHD_REASON_CLIENT,
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
