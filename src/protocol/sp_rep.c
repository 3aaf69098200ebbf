/*
 * protocol/sp_rep.c — the SP rep side on a connection: the SP header
 * exchange, request frames (framing: sp_frame.c) unpacked into envelopes
 * and handed to dispatch as authd_requests, and replies framed with their
 * request's backtrace, written on the connection's loop or posted to it
 * from the pools.
 *
 * Knows SP framing, the request and reply envelopes, the window of
 * requests in flight and the service's request/reply contract. Must not
 * know sockets, epoll or TLS: it reads and writes the connection's
 * buffers through net/conn.h and is reached by the loops only through
 * authd_sp_rep (struct conn_proto). Knows nothing of LMDB or JWT.
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "authd/v1/envelope.pb-c.h"
#include "env_wire.h"
#include "log.h"
#include "metrics.h"
#include "net/conn.h"
#include "protocol/sp_rep.h"
#include "sp_frame.h"
#include "sp_wire.h"
#include "sysutil.h"

/* One request between receipt and reply. The envelope is unpacked from
 * the receive buffer into the request's own arena (protobuf-c copies what
 * it keeps), and dispatch puts its call and the unpacked input there too:
 * a request that fits costs one allocation, none when a loop reuses a
 * freed one. Only the backtrace is copied by hand. */
#define RREQ_ARENA    2048
#define RREQ_FREE_MAX 64 /* kept per loop for reuse */
struct rreq {
    authd_request req;
    struct conn *c;
    Authd__V1__RequestEnvelope *env;
    struct rreq *next_free; /* in its loop's free list */
    size_t bt_len;
    uint8_t bt[4 * SP_MAX_HOPS];
    authd_arena arena;
    alignas(max_align_t) unsigned char mem[RREQ_ARENA];
};

/* rreq_free frees q's envelope, wipes what the arena handed out (the
 * request's strings: passwords, tokens), and keeps q for reuse when it is
 * freed on its connection's loop, else frees it. */
static void rreq_free(struct rreq *q)
{
    struct loop *lp = q->c->lp;

    if (q->env != NULL) {
        ProtobufCAllocator al = authd_arena_allocator(&q->arena);
        if (q->env->body.data != NULL)
            authd_wipe(q->env->body.data, q->env->body.len);
        authd__v1__request_envelope__free_unpacked(q->env, &al);
    }
    authd_wipe(q->mem, q->arena.used);
    if (tl_loop == lp && lp->n_free_rreqs < RREQ_FREE_MAX) {
        q->next_free = lp->free_rreqs;
        lp->free_rreqs = q;
        lp->n_free_rreqs++;
        return;
    }
    free(q);
}

/* rreq_new (loop thread) takes a request from the loop's free list or
 * allocates one, with every field but the arena's memory zeroed. */
static struct rreq *rreq_new(struct loop *lp)
{
    struct rreq *q = lp->free_rreqs;

    if (q != NULL) {
        lp->free_rreqs = q->next_free;
        lp->n_free_rreqs--;
    } else if ((q = malloc(sizeof *q)) == NULL) {
        return NULL;
    }
    memset(q, 0, offsetof(struct rreq, mem));
    q->arena.buf = q->mem;
    q->arena.cap = sizeof q->mem;
    q->req.arena = &q->arena;
    return q;
}

/*
 * request_done (any thread, once per request): frame the reply with the
 * request's backtrace. On the connection's own loop (Verify, and every
 * reply made without the service layer) it goes straight into the output
 * buffer, flushed after the current batch; from other threads it is posted
 * and the loop woken. If the connection has gone, the reply is dropped.
 */
static void request_done(authd_request *req, const authd_reply *rep)
{
    struct rreq *q = req->transport;
    struct conn *c = q->c;
    authd_reply_env env = { 0 };

    env.code = (int32_t)rep->code;
    env.message = rep->message;
    env.message_len = rep->message != NULL ? strlen(rep->message) : 0;
    env.reason = rep->reason;
    env.reason_len = rep->reason != NULL ? strlen(rep->reason) : 0;
    env.request_id = req->request_id;
    env.body = rep->body;
    env.body_len = rep->body_len;
    size_t elen = authd_reply_env_len(&env);
    size_t flen = 8 + q->bt_len + elen;

    if (tl_loop == c->lp) {
        if (!c->closed) {
            c->inflight--;
            loop_add(&c->lp->inflight, -1);
            if (conn_out_reserve(c, flen)) {
                uint8_t *p = c->obuf + c->olen;
                sp_put64(p, q->bt_len + elen);
                memcpy(p + 8, q->bt, q->bt_len);
                authd_reply_env_put(p + 8 + q->bt_len, &env);
                conn_out_added(c, flen);
            } else { /* a lost reply would leave its caller waiting */
                conn_close(c, AUTHD_LOG_WARN, "out of memory");
            }
        }
        rreq_free(q);
        conn_unref(c);
        return;
    }

    struct frame *f = malloc(sizeof *f + flen);
    if (f != NULL) {
        f->next = NULL;
        f->len = flen;
        sp_put64(f->data, q->bt_len + elen);
        memcpy(f->data + 8, q->bt, q->bt_len);
        authd_reply_env_put(f->data + 8 + q->bt_len, &env);
    }
    rreq_free(q);

    conn_post(c, f); /* with the request's reference */
}

/* reply_now answers a request without the service layer (on the loop). */
static void reply_now(struct rreq *q, authd_code code, const char *reason, const char *message)
{
    authd_reply rep = { code, message, reason, NULL, 0 };
    authd_metrics_request(
        AUTHD_METRICS_METHOD_UNKNOWN, code, authd_monotonic_ns() - q->req.start_ns);
    request_done(&q->req, &rep);
}

/*
 * on_frame handles one complete frame f that sits in the receive buffer;
 * it copies what it keeps. Returns false when the connection must close
 * (out of memory). It may close c itself (a reply that cannot be
 * buffered): the caller must then not touch c's buffers, which are gone.
 */
static bool on_frame(struct conn *c, const sp_frame *f)
{
    const sp_rep_conf *s = c->lp->proto_arg;
    struct rreq *q;

    if (s->echo) { /* the transport alone, for benchmarks */
        size_t len = f->bt_len + f->body_len;
        if (!conn_out_reserve(c, 8 + len))
            return false;
        sp_put64(c->obuf + c->olen, len);
        memcpy(c->obuf + c->olen + 8, f->bt, len);
        conn_out_added(c, 8 + len);
        return true;
    }
    if ((q = rreq_new(c->lp)) == NULL)
        return false;
    memcpy(q->bt, f->bt, f->bt_len);
    q->c = c;
    q->bt_len = f->bt_len;
    q->req.start_ns = authd_monotonic_ns();
    q->req.done = request_done;
    q->req.transport = q;
    memcpy(q->req.peer, c->peer, sizeof q->req.peer);
    if (c->caller[0] != '\0')
        memcpy(q->req.caller, c->caller, sizeof q->req.caller);
    q->req.source = c->source;
    q->req.conn_id = c->id;
    atomic_fetch_add(&c->refs, 1);
    c->inflight++;
    loop_add(&c->lp->inflight, 1);

    ProtobufCAllocator al = authd_arena_allocator(&q->arena);
    q->env = authd__v1__request_envelope__unpack(&al, f->body_len, f->body);
    if (q->env == NULL) {
        authd_logrec r;
        if (authd_log_source_allow(&c->source)
            && authd_log_begin(&r, AUTHD_LOG_INFO, "bad_envelope")) {
            authd_log_str(&r, "peer", c->peer);
            authd_log_u64(&r, "bytes", f->body_len);
            authd_log_end(&r);
        }
        reply_now(q, AUTHD_INVALID_ARGUMENT, "BAD_ENVELOPE", "request is not a RequestEnvelope");
        return true;
    }
    q->req.request_id = q->env->request_id;
    q->req.method = q->env->method;
    q->req.method_len = strlen(q->env->method);
    q->req.body = q->env->body.data;
    q->req.body_len = q->env->body.len;
    q->req.authorization = q->env->authorization;
    if (atomic_load_explicit(&s->draining, memory_order_relaxed)
        && strcmp(q->req.method, AUTHD_METHOD_HEALTH) != 0)
        reply_now(q, AUTHD_UNAVAILABLE, "SHUTTING_DOWN", "server is shutting down");
    else
        authd_dispatch(s->svc, &q->req);
    return true;
}

/*
 * parse_input handles the peer's SP header, then every complete frame the
 * window allows (framing: sp_frame.c); returns false on a protocol
 * violation. It leaves the receive buffer holding only what is not yet
 * handled, grown (doubling, up to the frame's size) when an incomplete
 * frame fills it: memory follows the bytes that arrived, not the length
 * the peer announced. It notes when an incomplete frame started, for the
 * frame deadline.
 */
static bool parse_input(struct conn *c)
{
    const sp_rep_conf *s = c->lp->proto_arg;
    size_t pos = 0, need = 0;
    sp_frame_status st = SP_FRAME_NEED_MORE;

    if (c->state == ST_HEADER) {
        int h = sp_frame_header(c->rbuf, c->rlen);
        if (h <= 0)
            return h == 0;
        c->state = ST_OPEN;
        conn_hs_done(c);
        pos = SP_HDR_LEN;
    }
    while (!c->closed) {
        sp_frame f;
        st = sp_frame_next(c->rbuf + pos, c->rlen - pos, s->max_msg, &f, &need);
        if (st == SP_FRAME_TOO_LARGE) {
            authd_logrec r;
            if (authd_log_source_allow(&c->source)
                && authd_log_begin(&r, AUTHD_LOG_INFO, "frame_too_large")) {
                authd_log_str(&r, "peer", c->peer);
                authd_log_u64(&r, "bytes", sp_get64(c->rbuf + pos));
                authd_log_end(&r);
            }
            return false;
        }
        if (st == SP_FRAME_BAD)
            return false;
        if (st == SP_FRAME_NEED_MORE || c->inflight >= s->max_inflight)
            break;
        if (!on_frame(c, &f))
            return false;
        if (c->closed) /* a reply failed to buffer: c's buffers are freed */
            return true;
        authd_wipe(c->rbuf + pos, f.frame_len);
        pos += f.frame_len;
    }
    if (pos > 0 && pos == c->rlen) {
        conn_rbuf_release(c);
        c->frame_start = 0;
        return true;
    }
    if (pos > 0) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
    }
    if (c->state != ST_OPEN || c->rlen == 0 || st != SP_FRAME_NEED_MORE) {
        c->frame_start = 0; /* empty, or a whole frame waiting for the window */
        return true;
    }
    if (c->frame_start == 0 || pos > 0)
        c->frame_start = c->last_read;
    if (c->rlen == c->rcap && need > c->rcap) {
        size_t cap = c->rcap * 2 < need ? c->rcap * 2 : need;
        if (!conn_buf_resize(&c->rbuf, &c->rcap, &c->rhigh, c->rlen, cap, c->lp->rloan))
            return false;
    }
    return true;
}

/* sp_rep_open queues our SP header (rep0) as c's first output; it goes
 * out once TLS is up. */
static bool sp_rep_open(struct conn *c)
{
    uint8_t hdr[SP_HDR_LEN];

    sp_header(hdr, SP_PROTO_REP0);
    return conn_out_append(c, hdr, sizeof hdr);
}

/* sp_rep_loop_end frees the requests lp kept for reuse. */
static void sp_rep_loop_end(struct loop *lp)
{
    while (lp->free_rreqs != NULL) {
        struct rreq *q = lp->free_rreqs;
        lp->free_rreqs = q->next_free;
        free(q);
    }
    lp->n_free_rreqs = 0;
}

const struct conn_proto authd_sp_rep = {
    .open = sp_rep_open,
    .input = parse_input,
    .loop_end = sp_rep_loop_end,
};
