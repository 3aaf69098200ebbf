/*
 * net/conn.h — a connection and its event loop as the transport's parts
 * share them: the loop (src/net/loop.c), connection I/O (src/net/conn.c),
 * the server and its admission (src/server.c), and the protocol spoken on
 * the connections (src/protocol/sp_rep.c, behind struct conn_proto).
 * Internal to the server library; not an API. The loop's small hot-path
 * helpers (loop_mark_ready, loop_touch, the activity list) are inline
 * here, so that every part uses them without a call.
 *
 * Knows descriptors, buffers, TLS state, deadlines and the queues of a
 * loop. Must not know SP framing, envelopes, protobuf or the service: a
 * protocol is reached through conn_proto and its own proto_arg. Two things
 * of the protocol still live here because moving them would change
 * behaviour or the hot path (see the notes at enum conn_state and
 * conn.inflight): the SP header exchange as a connection state, and the
 * count of requests in flight that pauses reading.
 *
 * The loop (net/loop.c) and the connection (net/conn.c) reach the server
 * only through struct loop_ops (net/loop.h) and struct conn_ops: the
 * server (src/server.c) keeps admission (per-source counts, handshake and
 * connection caps, eviction), the TLS handshake and the deadline sweep.
 *
 * Threads: a connection belongs to one loop for life; everything here is
 * that loop's alone unless a field says otherwise.
 */
#ifndef AUTHD_NET_CONN_H
#define AUTHD_NET_CONN_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "log.h"
#include "netaddr.h"
#include "server.h"
#include "service.h"

/* Buffer sizes the loop and the connection share (net/conn.c). */
#define RBUF_MIN 16384 /* the loop's lent receive buffer; a connection's first */
#define LOAN_OUT 16384 /* the loop's lent output buffer */
#define OUT_HIGH (256 * 1024) /* unwritten reply bytes before reading pauses */

struct conn;
struct handoff;
struct loop;
struct loop_ops;
struct rreq;

/*
 * conn_ops: what a connection's close and free reach in the server that
 * owns its loop, so that net/conn.c knows nothing of admission (Redis's
 * ConnectionType and nng's transport ops are the models). closed (loop
 * thread, from conn_close, once per connection) gives back c's places in
 * the server's counts: its source's connection and, if c->in_hs, its
 * handshake; the connection and handshake caps. freed (any thread, from
 * the last conn_unref, after c is freed) counts one connection struct
 * fewer.
 */
struct conn_ops {
    void (*closed)(struct conn *c);
    void (*freed)(struct loop *lp);
};

/*
 * conn_proto: what a loop calls on the protocol of its connections.
 * open queues the protocol's greeting as a connection's first output
 * (false: out of memory); input handles what the receive buffer holds,
 * every complete message the window allows (false: protocol violation;
 * it may close c itself, see conn_close); loop_end frees what the
 * protocol keeps per loop, when the loop stops.
 */
struct conn_proto {
    bool (*open)(struct conn *c);
    bool (*input)(struct conn *c);
    void (*loop_end)(struct loop *lp);
};

/* ST_HEADER (the SP header exchange after TLS) is the protocol's, kept
 * among the connection's states as it was: the handshake deadline and the
 * per-source handshake count cover TLS and SP together. */
enum conn_state { ST_HANDSHAKE, ST_HEADER, ST_OPEN };

/* A reply framed by another thread, waiting for the loop. */
struct frame {
    struct frame *next;
    size_t len;
    uint8_t data[];
};

struct conn {
    struct loop *lp;
    int fd;
    SSL *ssl; /* NULL on a plaintext (tcp://) listener */
    enum conn_state state;
    bool closed; /* written by the loop; read by other threads under mu */
    bool queued; /* in lp->pend, under lp->mu */
    bool paused; /* not reading: window or output full */
    bool want_write; /* the socket refused output: wait for EPOLLOUT */
    atomic_int refs;
    /* Loop only: requests whose reply is not yet in obuf. The protocol's
     * window, kept here because conn_read pauses on it (max_inflight). */
    unsigned inflight;
    uint64_t nego_deadline; /* ns, until ST_OPEN */
    uint64_t out_since; /* ns: output pending without progress since */
    uint64_t last_read; /* ns: when bytes last arrived */
    bool tls_bufs; /* OpenSSL may hold record buffers (not freed since last I/O) */
    /* Both buffers exist only while they hold bytes, so an idle
     * connection costs no buffer memory; *high is the most ever written,
     * what must be wiped before the memory goes back. */
    uint8_t *rbuf; /* received, not yet handled */
    size_t rcap, rlen, rhigh;
    uint8_t *obuf; /* plaintext replies not yet taken by TLS */
    size_t ocap, olen, ohigh;
    pthread_mutex_t mu; /* guards posted, closed (for other threads) */
    struct frame *posted, *posted_tail;
    unsigned nposted;
    struct conn *prev, *next; /* the loop's list */
    struct conn *pend_next; /* lp->pend */
    struct conn *ready_next; /* lp->ready */
    bool ready; /* in lp->ready (loop only) */
    bool in_unflushed; /* counted in lp->unflushed */
    uint64_t frame_start; /* ns: the first byte of an incomplete frame came; 0 = none */
    bool in_hs; /* an unfinished handshake: counted for its source and in srv->nhs, on lp->hs */
    struct conn *hs_prev, *hs_next; /* lp->hs */
    char peer[AUTHD_PEER_MAX];
    authd_source source; /* the peer's address as a limit key */
    uint64_t id; /* unique for the process's life */
    char caller[AUTHD_CALLER_MAX]; /* mTLS: the client certificate's identity (take_caller) */
    unsigned tls_gen; /* the TLS context generation its certificate was last checked against */
};

struct loop {
    /* Each loop on cache lines of its own: now and the counters are written
     * every iteration, and the neighbour's first fields read as often. */
    alignas(64) authd_server *srv;
    /* The protocol its connections speak, and that protocol's settings. */
    const struct conn_proto *proto;
    void *proto_arg;
    /* The protocol's window (max_inflight requests a connection may have
     * in flight before conn_read pauses it), copied from the settings at
     * start so that net/conn.c need not know the server. */
    unsigned max_inflight;
    /* What a connection's close and free reach in the server, what the
     * loop calls on it (net/loop.h), and the server's stop flag. */
    const struct conn_ops *ops;
    const struct loop_ops *lops;
    const atomic_bool *stop;
    pthread_t thread;
    int ep;
    int efd; /* eventfd: posted replies, stop, drain */
    pthread_mutex_t mu; /* guards pend, woken */
    struct conn *pend; /* connections with posted replies */
    bool woken;
    /* Loop only: its connections, least recently active first (moved to
     * the tail when bytes arrive), so the oldest idle one is near the head. */
    struct conn *conns, *conns_tail;
    /* Loop only: its unfinished handshakes, oldest first (accept order). */
    struct conn *hs, *hs_tail;
    struct handoff *inbox; /* under mu: accepted connections handed to this loop */
    uint64_t next_sweep;
    uint64_t accept_resume; /* ns; 0 = accepting */
    bool listening; /* lfd is in this loop's epoll set */
    bool started; /* thread is running */
    struct conn *dead; /* closed this iteration: unreferenced after it */
    /* Connections with more to read than one turn allows, or resumed after
     * a pause: served after the events of each iteration, so one busy
     * peer cannot keep the loop from its other connections, its timers
     * and its posted replies. Each holds a reference. */
    struct conn *ready, *ready_tail;
    int lfd; /* the listening socket (loop 0 only), -1 if none */
    unsigned rr; /* loop 0: the loop the next accepted connection goes to */
    /* Buffers lent to the connection conn_read is serving (lp->reading)
     * when it has none of its own, so a connection that holds one request
     * at a time reads, answers and writes it with no allocation (see
     * conn_read). RBUF_MIN and LOAN_OUT bytes; NULL until first needed. */
    struct conn *reading;
    uint8_t *rloan, *oloan;
    /* ns: when epoll_wait last returned. The clock of last_read and
     * out_since, whose deadlines are seconds long: read once per
     * iteration instead of several times per request. */
    uint64_t now;
    /* Counted by the loop alone (loop_add), read by authd_server_drain:
     * requests received whose reply is not yet in an output buffer, and
     * connections with output not yet written. Per loop, so no two loops
     * write one cache line per request. */
    atomic_uint inflight, unflushed;
    /* ns: the start of the loop's latest deadline sweep. Written by the
     * loop at each sweep (not per request), read by the watchdog check. */
    atomic_uint_fast64_t beat;
    /* Loop only: the protocol's freed requests kept for reuse
     * (protocol/sp_rep.c). */
    struct rreq *free_rreqs;
    unsigned n_free_rreqs;
};

/* loop_add changes a counter only its loop writes: a plain load and
 * store, atomic only so that drain may read it from another thread. */
static inline void loop_add(atomic_uint *a, int d)
{
    atomic_store_explicit(
        a, atomic_load_explicit(a, memory_order_relaxed) + (unsigned)d, memory_order_relaxed);
}

/* The loop this thread runs, if any (initial-exec: read per reply). */
extern _Thread_local struct loop *tl_loop __attribute__((tls_model("initial-exec")));

/* loop_mark_ready queues c to be read later in this loop iteration. */
static inline void loop_mark_ready(struct conn *c)
{
    struct loop *lp = c->lp;

    if (c->ready || c->closed)
        return;
    c->ready = true;
    atomic_fetch_add(&c->refs, 1);
    c->ready_next = NULL;
    if (lp->ready_tail != NULL)
        lp->ready_tail->ready_next = c;
    else
        lp->ready = c;
    lp->ready_tail = c;
}

/* conn_unflushed_done: c has no output left to count for drain. */
static inline void conn_unflushed_done(struct conn *c)
{
    if (c->in_unflushed) {
        c->in_unflushed = false;
        loop_add(&c->lp->unflushed, -1);
    }
}

/* The loop's connection list, in order of last activity (loop thread). */
static inline void loop_list_unlink(struct loop *lp, struct conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        lp->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        lp->conns_tail = c->prev;
    c->prev = c->next = NULL;
}

static inline void loop_list_append(struct loop *lp, struct conn *c)
{
    c->next = NULL;
    c->prev = lp->conns_tail;
    if (lp->conns_tail != NULL)
        lp->conns_tail->next = c;
    else
        lp->conns = c;
    lp->conns_tail = c;
}

/* loop_touch: c was active; it goes to the tail (the most recent). */
static inline void loop_touch(struct conn *c)
{
    struct loop *lp = c->lp;
    if (lp->conns_tail != c) {
        loop_list_unlink(lp, c);
        loop_list_append(lp, c);
    }
}

/* conn_out_grow is conn_out_reserve's slow path: a loan or a bigger
 * buffer (net/conn.c). */
bool conn_out_grow(struct conn *c, size_t more);

/* conn_out_reserve makes room for more output bytes; the caller then
 * writes them at obuf + olen and calls conn_out_added. False: out of
 * memory. Inline: every reply passes here. */
static inline bool conn_out_reserve(struct conn *c, size_t more)
{
    if (c->olen + more <= c->ocap)
        return true;
    return conn_out_grow(c, more);
}

/* conn_out_added counts n bytes written at obuf + olen. Output counts as
 * a reply still to deliver (authd_server_drain waits for it) only on an
 * open connection: our SP header, queued while the peer has not finished
 * its handshake, must not hold a shutdown up. */
static inline void conn_out_added(struct conn *c, size_t n)
{
    if (c->olen == 0) {
        c->out_since = c->lp->now;
        if (c->state == ST_OPEN && !c->in_unflushed) {
            c->in_unflushed = true;
            loop_add(&c->lp->unflushed, 1);
        }
    }
    c->olen += n;
    if (c->olen > c->ohigh)
        c->ohigh = c->olen;
}

/* conn_out_append queues n bytes of p for the peer (loop thread); p is
 * copied. False: out of memory. */
bool conn_out_append(struct conn *c, const uint8_t *p, size_t n);

/* conn_buf_resize moves the first len bytes of *buf into a new buffer of
 * cap bytes (wiping the old one's first *high bytes) and sets *high = len.
 * The old buffer is freed unless it is loan, the loop's, which is only
 * wiped. False: out of memory (nothing changed). */
bool conn_buf_resize(
    uint8_t **buf, size_t *bufcap, size_t *high, size_t len, size_t cap, const uint8_t *loan);

/* conn_rbuf_release wipes what was written of c's receive buffer and frees
 * it, or gives it back if the loop lent it. */
void conn_rbuf_release(struct conn *c);

/* conn_obuf_release wipes what was written of c's output buffer and frees
 * it, or gives it back if the loop lent it. */
void conn_obuf_release(struct conn *c);

/* conn_hs_done: c finished its handshake (TLS and the protocol's
 * greeting): its source may start another. */
void conn_hs_done(struct conn *c);

/* conn_flush (loop thread) writes as much of c's output as the socket
 * takes, and resumes reading a paused c that has room again. */
void conn_flush(struct conn *c);

/* conn_read (loop thread) reads c until its socket is empty, its window
 * full or its turn's budget spent, hands what arrived to the protocol and
 * writes the replies. */
void conn_read(struct conn *c);

/* conn_log writes one line event about c (its peer and why) at lvl. */
void conn_log(authd_log_level lvl, const char *event, const struct conn *c, const char *why);

/* conn_close (loop thread) frees c's socket, TLS state and buffers at once
 * and logs why (NULL: no line); replies that come later are dropped. c
 * itself stays valid until the end of the loop iteration. */
void conn_close(struct conn *c, authd_log_level lvl, const char *why);

/* conn_unref drops a reference to c (any thread); the last frees it. */
void conn_unref(struct conn *c);

/* conn_post (any thread but c's loop) queues the framed reply f for c's
 * loop and wakes it; f (malloc'd, or NULL for a reply lost to a failed
 * allocation, which closes c) and one reference to c are taken over. On a
 * closed connection f is dropped. */
void conn_post(struct conn *c, struct frame *f);

/* loop_wake wakes lp (any thread) through its eventfd. */
void loop_wake(struct loop *lp);

#endif
