/*
 * net/conn.c — a connection's I/O and lifetime: its receive and output
 * buffers (which exist only while they hold bytes) and the loop's lent
 * buffers, the output path every reply takes (conn_out_grow,
 * conn_out_append), TLS or plain reads and writes, conn_read (read, hand
 * to the protocol, pause on a full window or output), conn_flush (write,
 * resume), conn_close and conn_unref.
 *
 * Knows struct conn and struct loop (net/conn.h), OpenSSL's SSL_read and
 * SSL_write. Must not know the server (authd_server), its admission policy
 * or server-wide counters, SP framing or the service: the protocol is
 * reached through lp->proto, the window through lp->max_inflight, and the
 * server's counts on close and free through lp->ops (struct conn_ops).
 * The loop is net/loop.c; a connection's start, TLS handshake and
 * deadlines, and admission, are the server's (src/server.c).
 *
 * Threads: everything here runs on the connection's loop, except
 * conn_unref (any thread).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/conn.h"
#include "sysutil.h"

#define READ_BUDGET (256 * 1024) /* bytes one connection may read per turn */

/* conn_rbuf_release and conn_obuf_release wipe what was written and free the
 * buffer, or give it back if the loop lent it. */
void conn_rbuf_release(struct conn *c)
{
    authd_wipe(c->rbuf, c->rhigh);
    if (c->rbuf != c->lp->rloan)
        free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = c->rlen = c->rhigh = 0;
}

void conn_obuf_release(struct conn *c)
{
    authd_wipe(c->obuf, c->ohigh);
    if (c->obuf != c->lp->oloan)
        free(c->obuf);
    c->obuf = NULL;
    c->ocap = c->olen = c->ohigh = 0;
}

/* conn_buf_resize: see net/conn.h. */
bool conn_buf_resize(
    uint8_t **buf, size_t *bufcap, size_t *high, size_t len, size_t cap, const uint8_t *loan)
{
    uint8_t *nb = malloc(cap);
    if (nb == NULL)
        return false;
    if (len > 0)
        memcpy(nb, *buf, len);
    authd_wipe(*buf, *high);
    if (*buf != loan)
        free(*buf);
    *buf = nb;
    *bufcap = cap;
    *high = len;
    return true;
}

#ifdef AUTHD_FAULT_INJECTION
/* Test builds only (the authd-faulty binary, never installed): with
 * IT_FAULT_OUT_RESERVE=N in the environment, the Nth output-buffer
 * allocation of the process fails, as if out of memory. */
static atomic_long fault_out_reserve = -1; /* -1: not read yet; 0: off */

static bool fault_hit(void)
{
    long n = atomic_load(&fault_out_reserve);
    if (n < 0) {
        const char *e = getenv("IT_FAULT_OUT_RESERVE");
        long v = e != NULL ? strtol(e, NULL, 10) : 0;
        atomic_compare_exchange_strong(&fault_out_reserve, &n, v > 0 ? v : 0);
    }
    for (;;) {
        n = atomic_load(&fault_out_reserve);
        if (n <= 0)
            return false;
        if (atomic_compare_exchange_weak(&fault_out_reserve, &n, n - 1))
            return n == 1;
    }
}
#else
static inline bool fault_hit(void)
{
    return false;
}
#endif

/* conn_out_grow: conn_out_reserve (net/conn.h) found no room. */
bool conn_out_grow(struct conn *c, size_t more)
{
    if (fault_hit())
        return false;
    struct loop *lp = c->lp;
    if (c->obuf == NULL && lp->reading == c && more <= LOAN_OUT
        && (lp->oloan != NULL || (lp->oloan = malloc(LOAN_OUT)) != NULL)) {
        c->obuf = lp->oloan; /* given back or kept by conn_read */
        c->ocap = LOAN_OUT;
        return true;
    }
    size_t cap = c->ocap > 0 ? c->ocap : 4096;
    while (cap < c->olen + more)
        cap *= 2;
    return conn_buf_resize(&c->obuf, &c->ocap, &c->ohigh, c->olen, cap, lp->oloan);
}

/* conn_out_append: see net/conn.h. */
bool conn_out_append(struct conn *c, const uint8_t *p, size_t n)
{
    if (!conn_out_reserve(c, n))
        return false;
    memcpy(c->obuf + c->olen, p, n);
    conn_out_added(c, n);
    return true;
}

/* io_write writes up to n bytes: returns the count, 0 when the socket is
 * full, -1 when the connection is broken. */
static ssize_t io_write(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->ssl == NULL) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w >= 0)
            return w;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    }
    int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (w > 0)
        return w;
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
        return 0;
    ERR_clear_error(); /* see io_read */
    return -1;
}

/* io_read reads up to n bytes: returns the count, 0 when nothing is
 * available, -1 on end of stream or error. */
static ssize_t io_read(struct conn *c, uint8_t *p, size_t n)
{
    if (c->ssl == NULL) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r > 0)
            return r;
        if (r == 0)
            return -1;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    }
    int r = SSL_read(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    /* SSL_get_error looks at this thread's error queue, so it must be
     * empty before each call: rather than clearing it before every read
     * and write (costly in OpenSSL 3), it is cleared after every failure. */
    ERR_clear_error();
    return -1;
}

/*
 * conn_flush writes as much of the output buffer as the socket takes, in
 * one call when it can. The bytes written are wiped (replies carry tokens).
 * Reading resumes if it was paused and the connection has room again.
 */
void conn_flush(struct conn *c)
{
    size_t off = 0;

    if (c->closed || c->state == ST_HANDSHAKE || c->olen == 0)
        return;
    while (off < c->olen) {
        ssize_t w = io_write(c, c->obuf + off, c->olen - off);
        if (w < 0) {
            conn_close(c, AUTHD_LOG_DEBUG, "send failed");
            return;
        }
        if (w == 0) {
            c->want_write = true;
            break;
        }
        off += (size_t)w;
    }
    c->tls_bufs = true;
    if (off > 0) {
        c->out_since = c->lp->now;
        if (off == c->olen) {
            c->want_write = false;
            conn_unflushed_done(c);
            conn_obuf_release(c);
        } else {
            memmove(c->obuf, c->obuf + off, c->olen - off);
            c->olen -= off;
        }
    }
    if (c->paused && c->inflight < c->lp->max_inflight && c->olen < OUT_HIGH) {
        c->paused = false;
        loop_mark_ready(c); /* frames may be buffered, and the socket is edge-triggered */
    }
}

/* loans_end: conn_read is done with c. A lent buffer that still holds
 * bytes (an incomplete frame, replies the socket did not take) moves into
 * one of c's own; an empty one is wiped and given back. False when that
 * copy cannot be allocated. */
static bool loans_end(struct conn *c)
{
    struct loop *lp = c->lp;

    if (c->rbuf != NULL && c->rbuf == lp->rloan) {
        if (c->rlen == 0)
            conn_rbuf_release(c);
        else if (!conn_buf_resize(&c->rbuf, &c->rcap, &c->rhigh, c->rlen, RBUF_MIN, lp->rloan))
            return false;
    }
    if (c->obuf != NULL && c->obuf == lp->oloan) {
        if (c->olen == 0)
            conn_obuf_release(c);
        else if (!conn_buf_resize(&c->obuf, &c->ocap, &c->ohigh, c->olen, c->olen, lp->oloan))
            return false;
    }
    return true;
}

/*
 * conn_read (loop thread): read until the socket is empty or the window
 * is full, handling frames as they complete, then write the replies. The
 * sockets are edge-triggered, so a paused connection is read again
 * explicitly when it resumes.
 *
 * A connection without buffers of its own borrows the loop's for the
 * duration (lp->reading): with one request at a time per connection (many
 * connections, one call each) the request is read, answered and written
 * with no allocation, and the loan is wiped as far as it was written, as an
 * own buffer would be before it is freed.
 */
void conn_read(struct conn *c)
{
    struct loop *lp = c->lp;
    size_t budget = READ_BUDGET;
    bool got = false;

    lp->reading = c;
    while (!c->closed && !c->paused) {
        /* Frames already buffered first (a resumed connection has some). */
        if (!lp->proto->input(c)) {
            conn_close(c, AUTHD_LOG_INFO, "protocol violation");
            break;
        }
        if (c->closed)
            break;
        if (c->inflight >= c->lp->max_inflight || c->olen >= OUT_HIGH
            || (c->rbuf != NULL && c->rlen == c->rcap)) {
            c->paused = true; /* resumed by conn_flush as replies drain */
            break;
        }
        if (c->rbuf == NULL) {
            if (lp->rloan == NULL)
                lp->rloan = malloc(RBUF_MIN);
            if (lp->rloan != NULL) {
                c->rbuf = lp->rloan; /* given back or kept by loans_end */
                c->rcap = RBUF_MIN;
            } else if (!conn_buf_resize(&c->rbuf, &c->rcap, &c->rhigh, 0, RBUF_MIN, NULL)) {
                conn_close(c, AUTHD_LOG_WARN, "out of memory");
                break;
            }
        }
        if (budget == 0) {
            loop_mark_ready(c); /* the rest after the loop's other work */
            break;
        }
        size_t want = c->rcap - c->rlen < budget ? c->rcap - c->rlen : budget;
        ssize_t r = io_read(c, c->rbuf + c->rlen, want);
        if (r < 0) {
            if (c->olen > 0)
                conn_flush(c); /* a half-closed peer may still read its replies */
            conn_close(c, AUTHD_LOG_DEBUG, "peer closed");
            break;
        }
        if (r == 0)
            break;
        budget -= (size_t)r;
        c->rlen += (size_t)r;
        if (c->rlen > c->rhigh)
            c->rhigh = c->rlen;
        c->tls_bufs = true;
        c->last_read = lp->now;
        got = true;
    }
    if (!c->closed) {
        if (got)
            loop_touch(c);
        if (c->rlen == 0 && c->rbuf != NULL)
            conn_rbuf_release(c);
        if (c->olen > 0)
            conn_flush(c);
        if (!c->closed && !loans_end(c))
            conn_close(c, AUTHD_LOG_WARN, "out of memory");
    }
    lp->reading = NULL; /* a closed c gave its loans back in conn_close */
}

/* ---- lifetime -------------------------------------------------------------- */

/* conn_log: see net/conn.h. */
void conn_log(authd_log_level lvl, const char *event, const struct conn *c, const char *why)
{
    authd_logrec r;
    if (authd_log_begin(&r, lvl, event)) {
        authd_log_str(&r, "peer", c->peer);
        authd_log_str(&r, "why", why);
        authd_log_end(&r);
    }
}

/* conn_unref: see net/conn.h. The last reference frees c, then tells
 * the server (lp->ops->freed). */
void conn_unref(struct conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    struct loop *lp = c->lp;
    struct frame *f;
    while ((f = c->posted) != NULL) {
        c->posted = f->next;
        authd_wipe(f->data, f->len);
        free(f);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
    lp->ops->freed(lp);
}

/*
 * conn_close (loop thread): frees the socket, the TLS state and the
 * buffers at once; replies that come back later for this connection's
 * requests are dropped (their callers see the connection fail). Requests
 * already counted in flight on the server stop counting.
 */
void conn_close(struct conn *c, authd_log_level lvl, const char *why)
{
    if (c->closed)
        return;
    if (why != NULL)
        conn_log(lvl, "connection_closed", c, why);
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_mutex_unlock(&c->mu);
    conn_unflushed_done(c);
    loop_add(&c->lp->inflight, -(int)c->inflight);
    c->inflight = 0;
    if (c->ssl != NULL)
        SSL_free(c->ssl); /* no close_notify: the peer is gone or misbehaving */
    c->ssl = NULL;
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    conn_rbuf_release(c);
    conn_obuf_release(c);
    struct loop *lp = c->lp;
    lp->ops->closed(c); /* the server's counts: admission, caps, metrics */
    loop_list_unlink(lp, c);
    /* The "open" reference goes at the end of this loop iteration: the
     * code that closed c may still look at it. */
    c->next = lp->dead;
    lp->dead = c;
}
