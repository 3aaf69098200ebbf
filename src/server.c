/*
 * server.c — the transport: SP req/rep framing over nng TLS streams.
 *
 * authd speaks the scalability-protocols wire format that nng req0 clients
 * expect (an 8-byte header exchange, then frames of an 8-byte big-endian
 * length, the request's backtrace and the body), but runs its own accept
 * loop on nng's public stream API instead of an nng rep0 socket. nng
 * 1.5.2's socket core stops accepting for good after one peer disconnects
 * during negotiation (fixed upstream in nng 1.6, PR #1519): a port scanner,
 * a TCP health check or a client with the wrong CA would silently wedge the
 * listener. Here every accept error only ends that one connection.
 *
 * Each connection reads frames into one buffer and dispatches them as they
 * arrive; replies may come back in any order (from nng's callback threads
 * for Verify, from the worker pools for the rest) and are queued and sent
 * in batches. A connection has at most max_inflight requests between
 * receipt and the end of sending their reply; past that it is not read
 * until replies drain, so a peer that never reads its replies stalls only
 * itself and costs bounded memory. A reply that cannot be sent for
 * SEND_TIMEOUT_MS closes the connection.
 *
 * Lifetime: a connection is freed when its reference count drops to zero;
 * references are held by "open", a posted receive, a posted send, and each
 * request in the service layer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "authd/v1/envelope.pb-c.h"
#include "log.h"
#include "server.h"

#define NEGO_TIMEOUT_MS 10000
#define SEND_TIMEOUT_MS 10000
#define RBUF_MIN        4096
#define SWEEP_MS        500 /* dead-connection sweep period */
#define MAX_HOPS        8 /* backtrace words accepted, as nng's rep0 */
#define TX_BATCH        8 /* frames per send */

struct frame {
    struct frame *next;
    size_t len; /* bytes in data */
    size_t off; /* bytes already sent */
    uint8_t data[];
};

struct conn {
    authd_server *srv;
    nng_stream *st;
    nng_aio *rxa;
    nng_aio *txa;
    pthread_mutex_t mu;
    int refs;
    bool closed;
    bool negotiated; /* peer header received and checked */
    bool rx_paused; /* in-flight window full: not reading */
    bool tx_busy; /* a send is posted */
    unsigned inflight;
    uint8_t hdr_out[8];
    uint8_t hdr_in[8];
    size_t hdr_got;
    uint8_t *rbuf;
    size_t rcap, rlen;
    struct frame *txq, *txq_tail; /* replies waiting to be sent */
    struct frame *batch[TX_BATCH]; /* replies being sent */
    unsigned nbatch;
    nng_iov iov[TX_BATCH];
    char peer[AUTHD_PEER_MAX];
    struct conn *prev, *next; /* the server's list, under srv->mu */
};

/* One request between receipt and reply. */
struct rreq {
    authd_request req;
    struct conn *c;
    Authd__V1__RequestEnvelope *env;
    size_t bt_len;
    size_t flen;
    uint8_t frame[]; /* backtrace + envelope bytes: flen */
};

struct authd_server {
    nng_stream_listener *listener;
    nng_aio *acc;
    nng_aio *acc_timer;
    nng_aio *sweep; /* finds connections whose peer is gone */
    nng_tls_config *tls;
    authd_service *svc;
    size_t max_msg;
    unsigned max_inflight;
    unsigned max_conns;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct conn *conns; /* open connections */
    unsigned nconns; /* allocated connections (open or closing) */
    bool stopping;
    atomic_uint inflight; /* requests received and not yet answered on the wire */
    atomic_bool draining;
    char url[256];
};

static void conn_rx_cb(void *arg);
static void conn_tx_cb(void *arg);
static void start_rx(struct conn *c);

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static void sockaddr_str(const nng_sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    snprintf(out, outlen, "unknown");
    if (sa->s_family == NNG_AF_INET) {
        inet_ntop(AF_INET, &sa->s_in.sa_addr, ip, sizeof ip);
        snprintf(out, outlen, "%s:%u", ip, ntohs(sa->s_in.sa_port));
    } else if (sa->s_family == NNG_AF_INET6) {
        inet_ntop(AF_INET6, sa->s_in6.sa_addr, ip, sizeof ip);
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(sa->s_in6.sa_port));
    }
}

/* inflight_sub: n requests of c are done (reply sent or dropped). */
static void inflight_sub(struct conn *c, unsigned n)
{
    c->inflight -= n;
    atomic_fetch_sub(&c->srv->inflight, n);
}

static bool parse_frames(struct conn *c);

/* ---- connection lifetime ------------------------------------------------ */

/* conn_free runs when the last reference goes. It may run on an aio
 * callback of this connection, hence nng_aio_reap. */
static void conn_free(struct conn *c)
{
    authd_server *s = c->srv;
    struct frame *f;

    while ((f = c->txq) != NULL) {
        c->txq = f->next;
        free(f);
    }
    for (unsigned i = 0; i < c->nbatch; i++)
        free(c->batch[i]);
    atomic_fetch_sub(&s->inflight, c->inflight); /* replies never sent */
    nng_aio_reap(c->rxa);
    nng_aio_reap(c->txa);
    nng_stream_free(c->st);
    if (c->rbuf != NULL) {
        wipe(c->rbuf, c->rcap);
        free(c->rbuf);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);

    pthread_mutex_lock(&s->mu);
    s->nconns--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* unref drops n references taken under c->mu (which the caller holds and
 * which unref releases). */
static void unref_unlock(struct conn *c, int n)
{
    c->refs -= n;
    bool last = c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        conn_free(c);
}

/* close_locked closes the stream once: pending receive and send complete
 * with errors and drop their references; queued replies are discarded as
 * their requests finish. Drops the "open" reference. Caller holds c->mu;
 * it is released. */
static void close_unlock(struct conn *c)
{
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->closed = true;
    nng_stream_close(c->st);

    authd_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pthread_mutex_unlock(&s->mu);
    unref_unlock(c, 1);
}

static void conn_close(struct conn *c, const char *why)
{
    if (why != NULL) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_DEBUG, "connection_closed")) {
            authd_log_str(&r, "peer", c->peer);
            authd_log_str(&r, "why", why);
            authd_log_end(&r);
        }
    }
    pthread_mutex_lock(&c->mu);
    close_unlock(c);
}

/*
 * resume_rx_locked restarts reading a paused connection once its in-flight
 * window has room: frames already buffered are dispatched first (the peer
 * may be waiting for replies before it sends more), then a receive is
 * posted. The caller holds c->mu and a reference of its own.
 */
static void resume_rx_locked(struct conn *c)
{
    if (!c->rx_paused || c->closed || c->inflight >= c->srv->max_inflight)
        return;
    c->rx_paused = false;
    if (!parse_frames(c)) {
        if (!c->closed) {
            close_unlock(c);
            pthread_mutex_lock(&c->mu);
        }
        return;
    }
    if (c->closed)
        return;
    if (c->inflight >= c->srv->max_inflight)
        c->rx_paused = true;
    else
        start_rx(c);
}

/* ---- sending ------------------------------------------------------------------ */

/* start_tx_locked posts a send of up to TX_BATCH queued frames. */
static void start_tx_locked(struct conn *c)
{
    if (c->tx_busy || c->closed || c->txq == NULL)
        return;
    c->nbatch = 0;
    while (c->txq != NULL && c->nbatch < TX_BATCH) {
        struct frame *f = c->txq;
        c->txq = f->next;
        if (c->txq == NULL)
            c->txq_tail = NULL;
        c->batch[c->nbatch++] = f;
    }
    for (unsigned i = 0; i < c->nbatch; i++) {
        c->iov[i].iov_buf = c->batch[i]->data;
        c->iov[i].iov_len = c->batch[i]->len;
    }
    c->tx_busy = true;
    c->refs++;
    nng_aio_set_iov(c->txa, c->nbatch, c->iov);
    nng_aio_set_timeout(c->txa, SEND_TIMEOUT_MS);
    nng_stream_send(c->st, c->txa);
}

/* send_header posts our half of the SP negotiation. */
static void send_header_locked(struct conn *c)
{
    c->hdr_out[0] = 0;
    c->hdr_out[1] = 'S';
    c->hdr_out[2] = 'P';
    c->hdr_out[3] = 0;
    c->hdr_out[4] = (uint8_t)(NNG_REP0_SELF >> 8);
    c->hdr_out[5] = (uint8_t)(NNG_REP0_SELF & 0xff);
    c->hdr_out[6] = 0;
    c->hdr_out[7] = 0;
    c->nbatch = 0;
    c->iov[0].iov_buf = c->hdr_out;
    c->iov[0].iov_len = sizeof c->hdr_out;
    c->tx_busy = true;
    c->refs++;
    nng_aio_set_iov(c->txa, 1, c->iov);
    nng_aio_set_timeout(c->txa, NEGO_TIMEOUT_MS);
    nng_stream_send(c->st, c->txa);
}

/*
 * conn_tx_cb: a send finished, perhaps partly. Fully sent frames are freed
 * and leave the in-flight window (which may let reading resume); a partial
 * send is continued from where it stopped.
 */
static void conn_tx_cb(void *arg)
{
    struct conn *c = arg;
    int rv = nng_aio_result(c->txa);
    size_t n = rv == 0 ? nng_aio_count(c->txa) : 0;
    unsigned done = 0;

    pthread_mutex_lock(&c->mu);
    c->tx_busy = false;
    if (rv != 0) {
        if (!c->closed && rv == NNG_ETIMEDOUT)
            authd_log_msg(AUTHD_LOG_WARN, "connection_closed", "peer did not read its replies");
        for (unsigned i = 0; i < c->nbatch; i++)
            free(c->batch[i]);
        inflight_sub(c, c->nbatch);
        c->nbatch = 0;
        c->refs++; /* keep c alive through close_unlock */
        close_unlock(c);
        pthread_mutex_lock(&c->mu);
        unref_unlock(c, 2); /* the send, and the one just taken */
        return;
    }
    if (c->nbatch == 0) {
        /* header (partial sends of 8 bytes are continued) */
        if (n < c->iov[0].iov_len) {
            c->iov[0].iov_buf = (uint8_t *)c->iov[0].iov_buf + n;
            c->iov[0].iov_len -= n;
            c->tx_busy = true;
            nng_aio_set_iov(c->txa, 1, c->iov);
            nng_stream_send(c->st, c->txa);
            pthread_mutex_unlock(&c->mu);
            return;
        }
    } else {
        for (unsigned i = 0; i < c->nbatch && n > 0; i++) {
            struct frame *f = c->batch[i];
            size_t take = f->len - f->off < n ? f->len - f->off : n;
            f->off += take;
            n -= take;
        }
        while (done < c->nbatch && c->batch[done]->off == c->batch[done]->len) {
            free(c->batch[done]);
            done++;
        }
        if (done < c->nbatch) { /* partial: send the rest of this batch */
            unsigned k = 0;
            for (unsigned i = done; i < c->nbatch; i++, k++) {
                c->batch[k] = c->batch[i];
                c->iov[k].iov_buf = c->batch[k]->data + c->batch[k]->off;
                c->iov[k].iov_len = c->batch[k]->len - c->batch[k]->off;
            }
            c->nbatch = k;
            inflight_sub(c, done);
            c->tx_busy = true;
            nng_aio_set_iov(c->txa, c->nbatch, c->iov);
            nng_stream_send(c->st, c->txa);
            pthread_mutex_unlock(&c->mu);
            return;
        }
        inflight_sub(c, c->nbatch);
        c->nbatch = 0;
    }
    start_tx_locked(c);
    resume_rx_locked(c);
    unref_unlock(c, 1);
}

/* ---- requests -------------------------------------------------------------------- */

static void rreq_free(struct rreq *q, size_t frame_len)
{
    if (q->env != NULL) {
        if (q->env->body.data != NULL)
            wipe(q->env->body.data, q->env->body.len);
        authd__v1__request_envelope__free_unpacked(q->env, NULL);
    }
    wipe(q->frame, frame_len);
    free(q);
}

/*
 * request_done (any thread, once per request): frame the reply with the
 * request's backtrace and queue it. If the connection has gone, the reply
 * is dropped: the caller will see its connection fail.
 */
static void request_done(authd_request *req, const authd_reply *rep)
{
    struct rreq *q = req->transport;
    struct conn *c = q->c;
    Authd__V1__ReplyEnvelope env = AUTHD__V1__REPLY_ENVELOPE__INIT;
    struct frame *f = NULL;

    env.code = (Authd__V1__Code)rep->code;
    env.message = (char *)(rep->message != NULL ? rep->message : "");
    env.reason = (char *)(rep->reason != NULL ? rep->reason : "");
    env.request_id = req->request_id;
    env.body.data = (uint8_t *)rep->body;
    env.body.len = rep->body_len;
    size_t elen = authd__v1__reply_envelope__get_packed_size(&env);
    size_t flen = 8 + q->bt_len + elen;
    if ((f = malloc(sizeof *f + flen)) != NULL) {
        f->next = NULL;
        f->len = flen;
        f->off = 0;
        put64(f->data, q->bt_len + elen);
        memcpy(f->data + 8, q->frame, q->bt_len);
        authd__v1__reply_envelope__pack(&env, f->data + 8 + q->bt_len);
    }
    rreq_free(q, q->flen);

    pthread_mutex_lock(&c->mu);
    if (f == NULL || c->closed) {
        free(f);
        inflight_sub(c, 1);
        resume_rx_locked(c);
        unref_unlock(c, 1);
        return;
    }
    if (c->txq_tail != NULL)
        c->txq_tail->next = f;
    else
        c->txq = f;
    c->txq_tail = f;
    start_tx_locked(c);
    unref_unlock(c, 1); /* the request's reference; the frame counts in inflight */
}

/* reply_now answers a request without the service layer. */
static void reply_now(struct rreq *q, authd_code code, const char *reason, const char *message)
{
    authd_reply rep = { code, message, reason, NULL, 0 };
    request_done(&q->req, &rep);
}

/*
 * on_frame handles one complete frame (backtrace + envelope) that sits in
 * the receive buffer; it copies what it keeps. Returns false when the
 * frame breaks the protocol and the connection must close.
 */
static bool on_frame(struct conn *c, const uint8_t *p, size_t len)
{
    authd_server *s = c->srv;
    size_t bt = 0;
    struct rreq *q;

    /* The backtrace: 4-byte words, the last (the request id) with its top
     * bit set; more hops than MAX_HOPS, or none at all, is a bad peer. */
    for (;;) {
        if (bt + 4 > len || bt / 4 >= MAX_HOPS)
            return false;
        bt += 4;
        if (p[bt - 4] & 0x80)
            break;
    }
    if ((q = calloc(1, sizeof *q + len)) == NULL)
        return false;
    memcpy(q->frame, p, len);
    q->flen = len;
    q->c = c;
    q->bt_len = bt;
    q->req.start_ns = authd_monotonic_ns();
    q->req.done = request_done;
    q->req.transport = q;
    memcpy(q->req.peer, c->peer, sizeof q->req.peer);
    c->refs++;
    c->inflight++;
    atomic_fetch_add(&s->inflight, 1);

    q->env = authd__v1__request_envelope__unpack(NULL, len - bt, q->frame + bt);
    if (q->env == NULL) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "bad_envelope")) {
            authd_log_str(&r, "peer", c->peer);
            authd_log_u64(&r, "bytes", len - bt);
            authd_log_end(&r);
        }
        pthread_mutex_unlock(&c->mu);
        reply_now(q, AUTHD_INVALID_ARGUMENT, "BAD_ENVELOPE", "request is not a RequestEnvelope");
        pthread_mutex_lock(&c->mu);
        return true;
    }
    q->req.request_id = q->env->request_id;
    q->req.method = q->env->method;
    q->req.method_len = strlen(q->env->method);
    q->req.body = q->env->body.data;
    q->req.body_len = q->env->body.len;
    pthread_mutex_unlock(&c->mu);
    if (atomic_load(&s->draining))
        reply_now(q, AUTHD_UNAVAILABLE, "SHUTTING_DOWN", "server is shutting down");
    else
        authd_dispatch(s->svc, &q->req);
    pthread_mutex_lock(&c->mu);
    return true;
}

/* ---- receiving ---------------------------------------------------------------------- */

/* start_rx posts a receive into the free end of the buffer. c->mu held. */
static void start_rx(struct conn *c)
{
    nng_iov iov;

    if (!c->negotiated) {
        iov.iov_buf = c->hdr_in + c->hdr_got;
        iov.iov_len = sizeof c->hdr_in - c->hdr_got;
        nng_aio_set_timeout(c->rxa, NEGO_TIMEOUT_MS);
    } else {
        iov.iov_buf = c->rbuf + c->rlen;
        iov.iov_len = c->rcap - c->rlen;
        nng_aio_set_timeout(c->rxa, NNG_DURATION_INFINITE);
    }
    c->refs++;
    nng_aio_set_iov(c->rxa, 1, &iov);
    nng_stream_recv(c->st, c->rxa);
}

/* parse_frames dispatches every complete frame in the buffer, makes room
 * for the next one, and returns false on a protocol violation. */
static bool parse_frames(struct conn *c)
{
    authd_server *s = c->srv;
    size_t pos = 0;

    while (c->rlen - pos >= 8 && c->inflight < s->max_inflight && !c->closed) {
        uint64_t len = get64(c->rbuf + pos);
        if (len > s->max_msg + 4 * MAX_HOPS) {
            authd_logrec r;
            if (authd_log_begin(&r, AUTHD_LOG_INFO, "frame_too_large")) {
                authd_log_str(&r, "peer", c->peer);
                authd_log_u64(&r, "bytes", len);
                authd_log_end(&r);
            }
            return false;
        }
        if (c->rlen - pos - 8 < len)
            break;
        if (!on_frame(c, c->rbuf + pos + 8, (size_t)len))
            return false;
        wipe(c->rbuf + pos, 8 + (size_t)len);
        pos += 8 + (size_t)len;
    }
    if (pos > 0) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
    }
    /* Make room for a frame larger than the buffer; shrink back after. */
    if (c->rlen >= 8) {
        uint64_t need = 8 + get64(c->rbuf);
        if (need > c->rcap) {
            uint8_t *nb = realloc(c->rbuf, (size_t)need);
            if (nb == NULL)
                return false;
            c->rbuf = nb;
            c->rcap = (size_t)need;
        }
    } else if (c->rcap > RBUF_MIN) {
        uint8_t *nb = realloc(c->rbuf, RBUF_MIN);
        if (nb != NULL) {
            c->rbuf = nb;
            c->rcap = RBUF_MIN;
        }
    }
    return true;
}

static void conn_rx_cb(void *arg)
{
    struct conn *c = arg;
    int rv = nng_aio_result(c->rxa);
    size_t n = rv == 0 ? nng_aio_count(c->rxa) : 0;

    pthread_mutex_lock(&c->mu);
    if (rv != 0 || c->closed) {
        c->refs++; /* keep c alive through close_unlock */
        close_unlock(c);
        pthread_mutex_lock(&c->mu);
        unref_unlock(c, 2); /* the receive, and the one just taken */
        return;
    }
    if (!c->negotiated) {
        c->hdr_got += n;
        if (c->hdr_got == sizeof c->hdr_in) {
            const uint8_t *h = c->hdr_in;
            uint16_t peer = (uint16_t)(h[4] << 8 | h[5]);
            if (h[0] != 0 || h[1] != 'S' || h[2] != 'P' || h[3] != 0 || h[6] != 0 || h[7] != 0
                || peer != NNG_REQ0_SELF) {
                c->refs++;
                close_unlock(c);
                pthread_mutex_lock(&c->mu);
                unref_unlock(c, 2);
                return;
            }
            c->negotiated = true;
        }
    } else {
        c->rlen += n;
        if (!parse_frames(c)) {
            c->refs++;
            close_unlock(c);
            pthread_mutex_lock(&c->mu);
            unref_unlock(c, 2);
            return;
        }
    }
    if (c->closed) {
        unref_unlock(c, 1);
        return;
    }
    if (c->negotiated && c->inflight >= c->srv->max_inflight)
        c->rx_paused = true; /* resumed as replies drain */
    else
        start_rx(c);
    unref_unlock(c, 1);
}

/* ---- accepting ---------------------------------------------------------------------------- */

static void accept_next(authd_server *s)
{
    nng_stream_listener_accept(s->listener, s->acc);
}

static void conn_start(authd_server *s, nng_stream *st)
{
    struct conn *c = calloc(1, sizeof *c);
    nng_sockaddr sa;

    if (c == NULL || (c->rbuf = malloc(RBUF_MIN)) == NULL
        || nng_aio_alloc(&c->rxa, conn_rx_cb, c) != 0
        || nng_aio_alloc(&c->txa, conn_tx_cb, c) != 0) {
        if (c != NULL) {
            nng_aio_free(c->rxa);
            free(c->rbuf);
            free(c);
        }
        nng_stream_free(st);
        return;
    }
    c->srv = s;
    c->st = st;
    c->rcap = RBUF_MIN;
    pthread_mutex_init(&c->mu, NULL);
    if (nng_stream_get_addr(st, NNG_OPT_REMADDR, &sa) == 0)
        sockaddr_str(&sa, c->peer, sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "unknown");

    pthread_mutex_lock(&s->mu);
    bool refuse = s->stopping || atomic_load(&s->draining) || s->nconns >= s->max_conns;
    if (!refuse) {
        s->nconns++;
        c->next = s->conns;
        if (s->conns != NULL)
            s->conns->prev = c;
        s->conns = c;
    }
    pthread_mutex_unlock(&s->mu);
    if (refuse) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_WARN, "connection_refused")) {
            authd_log_str(&r, "peer", c->peer);
            authd_log_str(&r, "why", "max-connections reached or shutting down");
            authd_log_end(&r);
        }
        nng_stream_free(st);
        nng_aio_free(c->rxa);
        nng_aio_free(c->txa);
        pthread_mutex_destroy(&c->mu);
        free(c->rbuf);
        free(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->refs = 1; /* open */
    send_header_locked(c);
    start_rx(c);
    pthread_mutex_unlock(&c->mu);
}

/* accept_cb: any error ends only the connection it concerns; the loop
 * always goes on (after a pause when the process is out of memory or file
 * descriptors) until the listener is closed. */
static void accept_cb(void *arg)
{
    authd_server *s = arg;
    int rv = nng_aio_result(s->acc);

    if (rv == 0) {
        conn_start(s, nng_aio_get_output(s->acc, 0));
        accept_next(s);
        return;
    }
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stopping || rv == NNG_ECANCELED)
        return;
    if (rv == NNG_ENOMEM || rv == NNG_ENOFILES) {
        authd_log_msg(AUTHD_LOG_WARN, "accept_failed", nng_strerror(rv));
        nng_sleep_aio(100, s->acc_timer);
        return;
    }
    accept_next(s);
}

/*
 * sweep_cb: nng 1.5.2's TLS stream can leave a receive pending for ever
 * (its timeout never fires) when the peer hangs up while no receive was
 * posted; such a connection would hold its --max-connections slot until
 * restart. Every SWEEP_MS each connection's peer address is probed (it
 * fails once the socket is gone) and dead ones are closed, which completes
 * the stuck receive. trylock on the connection, because close_unlock takes
 * the locks in the other order; a busy connection is looked at next time.
 */
static void sweep_cb(void *arg)
{
    authd_server *s = arg;
    struct conn *gone[64];
    unsigned n = 0;

    if (nng_aio_result(s->sweep) != 0)
        return;
    pthread_mutex_lock(&s->mu);
    for (struct conn *c = s->conns; c != NULL && n < 64; c = c->next) {
        nng_sockaddr sa;
        if (pthread_mutex_trylock(&c->mu) != 0)
            continue;
        if (!c->closed && nng_stream_get_addr(c->st, NNG_OPT_REMADDR, &sa) != 0) {
            c->refs++;
            gone[n++] = c;
        }
        pthread_mutex_unlock(&c->mu);
    }
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < n; i++) {
        conn_close(gone[i], "peer gone");
        pthread_mutex_lock(&gone[i]->mu);
        unref_unlock(gone[i], 1);
    }
    if (!stopping)
        nng_sleep_aio(SWEEP_MS, s->sweep);
}

static void acc_timer_cb(void *arg)
{
    authd_server *s = arg;
    if (nng_aio_result(s->acc_timer) == 0)
        accept_next(s);
}

/* read_file reads a whole (small) file into a NUL-terminated buffer. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || n > 1024 * 1024
        || fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n + 1)) == NULL) {
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

static authd_code tls_setup(
    authd_server *s, const authd_server_options *o, char *err, size_t errlen)
{
    char *cert = NULL, *key = NULL;
    authd_code rc = AUTHD_INVALID_ARGUMENT;
    int rv;

    if ((rv = nng_tls_config_alloc(&s->tls, NNG_TLS_MODE_SERVER)) != 0) {
        snprintf(err, errlen, "tls: %s", nng_strerror(rv));
        return AUTHD_INTERNAL;
    }
    /* mbedTLS 2.28 (nng 1.5.2's engine) tops out at TLS 1.2. */
    if ((rv = nng_tls_config_version(s->tls, NNG_TLS_1_2, NNG_TLS_1_2)) != 0) {
        snprintf(err, errlen, "tls: cannot pin TLS 1.2: %s", nng_strerror(rv));
        goto out;
    }
    if ((cert = read_file(o->tls_cert)) == NULL) {
        snprintf(
            err, errlen, "tls: cannot read certificate file %s: %s", o->tls_cert, strerror(errno));
        goto out;
    }
    if ((key = read_file(o->tls_key)) == NULL) {
        snprintf(err, errlen, "tls: cannot read key file %s: %s", o->tls_key, strerror(errno));
        goto out;
    }
    if ((rv = nng_tls_config_own_cert(s->tls, cert, key, NULL)) != 0) {
        snprintf(err, errlen, "tls: certificate %s / key %s rejected: %s", o->tls_cert, o->tls_key,
            nng_strerror(rv));
        goto out;
    }
    if (o->tls_client_ca != NULL) {
        if ((rv = nng_tls_config_ca_file(s->tls, o->tls_client_ca)) != 0) {
            snprintf(err, errlen, "tls: client CA file %s rejected: %s", o->tls_client_ca,
                nng_strerror(rv));
            goto out;
        }
        rv = nng_tls_config_auth_mode(s->tls, NNG_TLS_AUTH_MODE_REQUIRED);
    } else {
        rv = nng_tls_config_auth_mode(s->tls, NNG_TLS_AUTH_MODE_NONE);
    }
    if (rv != 0) {
        snprintf(err, errlen, "tls: %s", nng_strerror(rv));
        goto out;
    }
    rc = AUTHD_OK;
out:
    if (key != NULL) {
        wipe(key, strlen(key));
        free(key);
    }
    free(cert);
    return rc;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static void bound_url(authd_server *s, const char *url)
{
    const char *scheme_end = strstr(url, "://");
    int port = 0;

    snprintf(s->url, sizeof s->url, "%s", url);
    if (scheme_end == NULL
        || nng_stream_listener_get_int(s->listener, NNG_OPT_TCP_BOUND_PORT, &port) != 0)
        return;
    /* Replace the port after the last ':' of the authority. */
    const char *host = scheme_end + 3;
    const char *colon = strrchr(host, ':');
    const char *bracket = strrchr(host, ']');
    if (colon == NULL || (bracket != NULL && colon < bracket))
        return;
    snprintf(s->url, sizeof s->url, "%.*s:%d", (int)(colon - url), url, port);
}

authd_code authd_server_start(
    const authd_server_options *o, authd_service *svc, authd_server **out, char *err, size_t errlen)
{
    authd_server *s = NULL;
    authd_code rc = AUTHD_INTERNAL;
    bool tls = strncmp(o->url, "tls+tcp", 7) == 0;
    bool plain = strncmp(o->url, "tcp://", 6) == 0 || strncmp(o->url, "tcp4://", 7) == 0
        || strncmp(o->url, "tcp6://", 7) == 0;
    int rv;

    if (!tls && !(plain && o->allow_plaintext)) {
        snprintf(err, errlen,
            plain ? "listen URL %s is plaintext: use tls+tcp:// (or --insecure-plaintext "
                    "for local development)"
                  : "listen URL %s: only tls+tcp:// is supported",
            o->url);
        return AUTHD_INVALID_ARGUMENT;
    }
    if ((s = calloc(1, sizeof *s)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    s->svc = svc;
    s->max_msg = o->max_msg;
    s->max_inflight = o->max_inflight > 0 ? o->max_inflight : 1;
    s->max_conns = o->max_connections;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if ((rv = nng_aio_alloc(&s->acc, accept_cb, s)) != 0
        || (rv = nng_aio_alloc(&s->acc_timer, acc_timer_cb, s)) != 0
        || (rv = nng_aio_alloc(&s->sweep, sweep_cb, s)) != 0) {
        snprintf(err, errlen, "aio: %s", nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_stream_listener_alloc(&s->listener, o->url)) != 0) {
        snprintf(err, errlen, "listen URL %s: %s", o->url, nng_strerror(rv));
        rc = AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    if (tls) {
        if ((rc = tls_setup(s, o, err, errlen)) != AUTHD_OK)
            goto out;
        rc = AUTHD_INTERNAL;
        if ((rv = nng_stream_listener_set_ptr(s->listener, NNG_OPT_TLS_CONFIG, s->tls)) != 0) {
            snprintf(err, errlen, "tls: %s", nng_strerror(rv));
            goto out;
        }
    }
    /* Our own listener does not get the SP socket's TCP_NODELAY default;
     * without it Nagle and delayed ACKs add ~40 ms to every handshake. */
    if ((rv = nng_stream_listener_set_bool(s->listener, NNG_OPT_TCP_NODELAY, true)) != 0
        || (rv = nng_stream_listener_set_bool(s->listener, NNG_OPT_TCP_KEEPALIVE, true)) != 0) {
        snprintf(err, errlen, "listener options: %s", nng_strerror(rv));
        goto out;
    }
    if ((rv = nng_stream_listener_listen(s->listener)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", o->url, nng_strerror(rv));
        rc = rv == NNG_EADDRINUSE ? AUTHD_UNAVAILABLE : AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    bound_url(s, o->url);
    accept_next(s);
    nng_sleep_aio(SWEEP_MS, s->sweep);
    *out = s;
    return AUTHD_OK;
out:
    authd_server_close(s);
    return rc;
}

const char *authd_server_url(const authd_server *s)
{
    return s->url;
}

/*
 * authd_server_drain: the listening socket closes (accepted connections are
 * separate streams and stay open), requests that arrive from now on are
 * answered UNAVAILABLE, and we wait for every reply in flight to be sent.
 */
unsigned authd_server_drain(authd_server *s, int grace_ms)
{
    atomic_store(&s->draining, true);
    nng_stream_listener_close(s->listener);
    uint64_t deadline = authd_monotonic_ns() + (uint64_t)grace_ms * 1000000u;
    unsigned left;
    while ((left = atomic_load(&s->inflight)) > 0 && authd_monotonic_ns() < deadline)
        nng_msleep(5);
    return left;
}

void authd_server_close(authd_server *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    if (s->listener != NULL)
        nng_stream_listener_close(s->listener);
    if (s->acc != NULL)
        nng_aio_stop(s->acc);
    if (s->acc_timer != NULL)
        nng_aio_stop(s->acc_timer);
    if (s->sweep != NULL)
        nng_aio_stop(s->sweep);

    /* Close every connection, then wait until all are freed (their aio
     * callbacks reference the server). */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct conn *c = s->conns;
        pthread_mutex_unlock(&s->mu);
        if (c == NULL)
            break;
        conn_close(c, "server closing");
    }
    pthread_mutex_lock(&s->mu);
    while (s->nconns > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);

    nng_aio_free(s->acc);
    nng_aio_free(s->acc_timer);
    nng_aio_free(s->sweep);
    nng_stream_listener_free(s->listener);
    if (s->tls != NULL)
        nng_tls_config_free(s->tls);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
