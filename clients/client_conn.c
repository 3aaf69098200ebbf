/*
** client_conn.c — libauthd-client's connection (see client_internal.h for
** the design): the byte buffers, the dial state machine (TCP connect, TLS
** through client_tls.c, the SP header exchange), connection up and down
** with back-off, the writer that flushes queued frames, the reader that
** splits replies into frames and matches them to their calls, and the I/O
** thread that drives all of it.
*/
#include "client_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sysutil.h"

/* The client whose I/O thread this is, if any. */
_Thread_local authd_client *cl_io_self;

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

int cl_buf_append(struct buf *b, const void *p, size_t n)
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

void cl_buf_free(struct buf *b)
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

void cl_wake(authd_client *c)
{
    uint64_t one = 1;

    while (write(c->evfd, &one, sizeof(one)) < 0 && errno == EINTR) { }
}

static int dial_step(authd_client *c, uint32_t ready, uint32_t *want, char *err, size_t cap);

/* ---- dialing (ssl_mtx held; by open before the I/O thread exists, then by it) ------- */

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

    cl_conn_close(c);
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
            if (c->tls && cl_tls_begin(c, err, cap) != 0) {
                return DIAL_FAIL;
            }
            c->phase = c->tls ? DP_TLS : DP_SP_SEND;
            break;
        }
        case DP_TLS:
            cl_tls_err_reset();
            errno = 0;
            r = SSL_connect(c->ssl);
            if (r == 1) {
                c->phase = DP_SP_SEND;
                break;
            }
            if (cl_io_fail(c, r, want) == 0) {
                return DIAL_WAIT;
            }
            cl_tls_fail_text(c, err, cap);
            return DIAL_FAIL;
        case DP_SP_SEND:
            n = cl_conn_write(c, c->hdr_out + c->hdr_out_len, SP_HDR_LEN - c->hdr_out_len, want);
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
            n = cl_conn_read(c, c->hdr_in + c->hdr_in_len, SP_HDR_LEN - c->hdr_in_len, want);
            if (n == 0) {
                return DIAL_WAIT;
            }
            if (n < 0) {
                if (c->ssl != NULL && SSL_get_verify_result(c->ssl) != X509_V_OK) {
                    cl_tls_fail_text(c, err, cap);
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
        if (k->parked && cl_buf_append(&c->out, k->frame, k->frame_len) == 0) {
            cl_call_free_frame(k);
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
                cl_pending_remove(c, k);
                cl_batch_add(b, k, OUT_LOST);
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
    cl_conn_close(c);
}

/* ---- writing -------------------------------------------------------------------------- */

/*
** flush writes what is queued, as the one writer: the caller has set
** c->writer under mtx, and flush clears it. It takes c->out into c->wbuf
** (appending it when a partial write is pending) and writes wbuf until both
** are empty, the socket is full (EPOLLOUT is armed and the I/O thread goes
** on) or the connection fails (the I/O thread is woken to end it).
*/
void cl_flush(authd_client *c)
{
    uint32_t want = 0;
    ssize_t n;

    pthread_mutex_lock(&c->ssl_mtx);
    pthread_mutex_lock(&c->mtx);
    while (c->state == CS_UP && !c->broken) {
        if (c->wbuf.off == c->wbuf.len) {
            buf_swap(&c->out, &c->wbuf);
        } else if (c->out.len > c->out.off
            && cl_buf_append(&c->wbuf, c->out.p + c->out.off, c->out.len - c->out.off) == 0) {
            buf_clear(&c->out);
        }
        if (c->wbuf.off == c->wbuf.len) {
            break;
        }
        pthread_mutex_unlock(&c->mtx);
        n = cl_conn_write(c, c->wbuf.p + c->wbuf.off, c->wbuf.len - c->wbuf.off, &want);
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
        cl_wake(c); /* the I/O thread ends the connection */
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
        n = cl_conn_read(c, c->rbuf.p + c->rbuf.len, space, &want);
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
        id = sp_get32(f + 8);
        if ((id & SP_ID_BIT) != 0 && (k = cl_table_find(c, id & ~SP_ID_BIT)) != NULL
            && !k->parked) {
            cl_pending_remove(c, k);
            k->reply = f + FRAME_HDR_LEN;
            k->reply_len = (size_t)n - 4;
            cl_batch_add(b, k, OUT_REPLY);
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
        cl_conn_close(c);
        buf_clear(&c->rbuf);
        c->rneed = 0;
        pthread_mutex_unlock(&c->ssl_mtx);
        return false;
    }
    if (closing) {
        struct call *k;
        pthread_mutex_lock(&c->mtx);
        while ((k = c->head) != NULL) {
            cl_pending_remove(c, k);
            cl_batch_add(&b, k, OUT_CANCELLED);
        }
        c->state = CS_IDLE;
        pthread_mutex_unlock(&c->mtx);
        if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
            (void)SSL_shutdown(c->ssl); /* close_notify, best effort */
        }
        cl_conn_close(c);
        pthread_mutex_unlock(&c->ssl_mtx);
        cl_run_batch(c, &b); /* calls they start fail: closing */
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
    cl_expire(c, now, &b);
    if (b.head != NULL) {
        c->last_active = now;
    }
    pthread_mutex_unlock(&c->mtx);

    cl_run_batch(c, &b);
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
        cl_flush(c);
    }
    return false;
}

void *cl_io_main(void *arg)
{
    authd_client *c = arg;
    struct epoll_event ev[4];

    cl_io_self = c;
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

/* ---- the first dial (by open, before the I/O thread exists) -------------------------------- */

/*
** dial_sync is open's dial, on the caller's thread with poll() and the
** client's timeout for connect + handshake + SP headers. Fills st on failure.
*/
int cl_dial_sync(authd_client *c, authd_status *st)
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
    cl_conn_close(c);
    return cl_set_status(
        st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT, "cannot connect to %s: %s", c->url, err);
}
