/*
 * it_transport.c — the transport's guarantees (src/server.c), driven by
 * hand-made SP frames on raw TLS streams against the real authd binary:
 *
 *  - a peer that pipelines requests and never reads its replies stalls only
 *    itself (authd stops reading it) while other clients are served, and
 *    once it reads it gets exactly one valid reply per request it sent;
 *  - pipelined requests on one connection each get one reply echoing their
 *    backtrace and request_id;
 *  - multi-hop backtraces are echoed whole; too many hops, or none ending
 *    the backtrace, close the connection without a reply;
 *  - a peer announcing another protocol (or no SP at all) is closed;
 *  - at --max-connections a newcomer closes the least recently active idle
 *    connection, and the count goes back down whichever side ends one;
 *  - connections that never finish connecting (no TLS, no SP header, half a
 *    header) are closed after the negotiation timeout, negotiated idle ones
 *    are not;
 *  - on SIGTERM a request in flight still gets its reply, later requests are
 *    answered UNAVAILABLE (or the connection closes), and authd exits 0;
 *  - a frame header announcing more than --max-msg-bytes closes the
 *    connection even while the in-flight window is full, before any buffer
 *    is sized from it;
 *  - with several event loops (--io-threads), replies made on the loop
 *    (Verify) and on the worker pools (Login, Logout) interleave on each
 *    connection and every call gets its own answer.
 *
 * Waiting is always polling with a deadline or a blocking read with a
 * timeout, never a bare sleep. IT_ONLY=<pattern> runs only the matching
 * tests (cmocka's test filter).
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <nng/supplemental/tls/tls.h>

#define VERIFY   "/authd.v1.Auth/Verify"
#define LOGIN    "/authd.v1.Auth/Login"
#define ID_BIT   0x80000000u
#define MAX_HOPS 8 /* backtrace words authd accepts (src/server.c) */

static const uint8_t SP_REQ0[8] = { 0, 'S', 'P', 0, 0, 0x30, 0, 0 };
static const uint8_t SP_REP0[8] = { 0, 'S', 'P', 0, 0, 0x31, 0, 0 };

/* ---- byte order --------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)(v & 0xff);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)(v & 0xff);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int tcp_port(const char *url)
{
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    return atoi(colon + 1);
}

/* ---- raw peers ------------------------------------------------------------ */

/*
 * peer: a hand-driven req0 peer on an nng TLS stream. Unlike it_raw it
 * builds whole frames itself (any backtrace, many frames per write) and
 * reads replies through a buffer, frame by frame.
 *
 * nng 1.5.2's TLS stream can lose the end of a connection: when the TCP
 * connection under it fails while no receive is posted on the TLS stream,
 * a receive posted afterwards never completes, not even at its timeout
 * (authd's side of the same bug is what transport_max_connections
 * catches). So every wait here is bounded by the test
 * itself, and while waiting it also watches the TCP connection under the
 * stream (TCP_INFO on nng's descriptor): if the server has closed it and
 * nothing is left to read, the wait ends as NNG_ECONNSHUT (counted in
 * lost_close). A wait that
 * ends this way or at its deadline closes the stream (that completes the
 * stuck operation).
 */
typedef struct peer {
    nng_stream_dialer *d;
    nng_stream *st;
    uint16_t lport, rport; /* the TCP connection: our port, the server's */
    int fd; /* nng's descriptor for our end, only looked at; -1: unknown */
    uint8_t *in; /* received, not yet returned: in[off, off + len) */
    size_t off, len, cap;
    int lost_close; /* ends seen only in the kernel's TCP state */
    int slot; /* in held[], + 1 (0: none) */
} peer;

/* What every open peer holds, so that a failed test (cmocka jumps out of
 * it, its peers on the stack are lost) can still release it: teardown(). */
#define MAX_HELD 32
static struct held {
    nng_stream_dialer *d;
    nng_stream *st;
    uint8_t *in;
} held[MAX_HELD];

static void hold(peer *p)
{
    if (p->slot == 0) {
        for (int i = 0; i < MAX_HELD && p->slot == 0; i++)
            if (held[i].d == NULL)
                p->slot = i + 1;
        assert_int_not_equal(p->slot, 0);
    }
    held[p->slot - 1] = (struct held) { p->d, p->st, p->in };
}

static void release(struct held *h)
{
    if (h->st != NULL) {
        nng_stream_close(h->st);
        nng_stream_free(h->st);
    }
    if (h->d != NULL)
        nng_stream_dialer_free(h->d);
    free(h->in);
    memset(h, 0, sizeof *h);
}

/* find_fd: the descriptor of our end of the TCP connection lport -> rport
 * (nng does not expose it), or -1. */
static int find_fd(uint16_t lport, uint16_t rport)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int found = -1;

    if (d == NULL)
        return -1;
    while (found < 0 && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        struct sockaddr_in a;
        socklen_t l = sizeof a;
        if (e->d_name[0] == '.' || getsockname(fd, (struct sockaddr *)&a, &l) != 0
            || a.sin_family != AF_INET || ntohs(a.sin_port) != lport)
            continue;
        l = sizeof a;
        if (getpeername(fd, (struct sockaddr *)&a, &l) == 0 && ntohs(a.sin_port) == rport)
            found = fd;
    }
    closedir(d);
    return found;
}

/* tcp_gone: the kernel says the server has ended p's TCP connection (or
 * our end is closed) and no byte is left to read. */
static bool tcp_gone(const peer *p)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    int unread = 0;

    if (p->fd < 0)
        return false;
    /* the descriptor closed (and perhaps reused): our end is gone */
    if (getsockname(p->fd, (struct sockaddr *)&a, &l) != 0 || a.sin_family != AF_INET
        || ntohs(a.sin_port) != p->lport)
        return true;
    if (getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0)
        return true;
    if (ti.tcpi_state == TCP_ESTABLISHED)
        return false;
    return ioctl(p->fd, FIONREAD, &unread) != 0 || unread == 0;
}

struct io_done {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool fired;
};

static void io_done_cb(void *arg)
{
    struct io_done *d = arg;
    pthread_mutex_lock(&d->mu);
    d->fired = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* io_once: one send or receive of at most len bytes on p's stream, until
 * end (it_mono_ms time); *n bytes moved. 0 or the nng error. */
static int io_once(peer *p, bool sending, void *buf, size_t len, uint64_t end, size_t *n)
{
    struct io_done d = { .fired = false };
    pthread_condattr_t ca;
    nng_aio *aio = NULL;
    uint64_t start = it_mono_ms(), gone_since = 0, forced_at = 0;
    int forced = 0;

    *n = 0;
    if (p->st == NULL)
        return NNG_ECLOSED;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&d.mu, NULL);
    assert_int_equal(nng_aio_alloc(&aio, io_done_cb, &d), 0);
    nng_iov iov = { buf, len };
    nng_aio_set_iov(aio, 1, &iov);
    nng_aio_set_timeout(aio, NNG_DURATION_INFINITE); /* bounded here instead */
    if (sending)
        nng_stream_send(p->st, aio);
    else
        nng_stream_recv(p->st, aio);

    pthread_mutex_lock(&d.mu);
    while (!d.fired) {
        uint64_t now = it_mono_ms();
        if (forced == 0) {
            if (now >= end) {
                forced = NNG_ETIMEDOUT;
            } else if (now - start >= 100) {
                bool gone = tcp_gone(p);
                if (!gone)
                    gone_since = 0;
                else if (gone_since == 0)
                    gone_since = now;
                else if (now - gone_since >= 200) /* nng had its chance to say so */
                    forced = NNG_ECONNSHUT;
            }
            if (forced != 0) {
                if (forced == NNG_ECONNSHUT)
                    p->lost_close++;
                forced_at = now;
                pthread_mutex_unlock(&d.mu);
                nng_stream_close(p->st); /* completes the operation */
                pthread_mutex_lock(&d.mu);
                continue;
            }
        } else if (now - forced_at > 5000) {
            pthread_mutex_unlock(&d.mu);
            fail_msg("an nng stream operation did not complete after the stream was closed");
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d.cv, &d.mu, &ts);
    }
    pthread_mutex_unlock(&d.mu);
    int rv = nng_aio_result(aio);
    *n = rv == 0 ? nng_aio_count(aio) : 0;
    nng_aio_free(aio);
    pthread_cond_destroy(&d.cv);
    pthread_mutex_destroy(&d.mu);
    if (forced != 0 && rv != 0)
        return forced;
    return rv == 0 && *n == 0 ? NNG_ECONNSHUT : rv;
}

/* xfer moves exactly len bytes within timeout_ms; 0 or the nng error
 * (NNG_ECONNSHUT at end of stream). */
static int xfer(peer *p, bool sending, void *buf, size_t len, int timeout_ms)
{
    uint64_t end = it_mono_ms() + (uint64_t)timeout_ms;

    while (len > 0) {
        size_t n = 0;
        int rv = io_once(p, sending, buf, len, end, &n);
        if (rv != 0)
            return rv;
        buf = (uint8_t *)buf + n;
        len -= n;
    }
    return 0;
}

/* recv_some: one receive of at most len bytes; *n > 0 on success. */
static int recv_some(peer *p, void *buf, size_t len, int timeout_ms, size_t *n)
{
    return io_once(p, false, buf, len, it_mono_ms() + (uint64_t)timeout_ms, n);
}

/* send_unbounded sends all of buf, for as long as it takes (the writer
 * thread: no cmocka there; the main thread bounds it by closing the
 * stream). */
static int send_unbounded(nng_stream *st, const uint8_t *buf, size_t len)
{
    nng_aio *aio = NULL;
    size_t sent = 0;
    int rv = 0;

    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        return NNG_ENOMEM;
    nng_aio_set_timeout(aio, NNG_DURATION_INFINITE); /* a timeout would end the stream */
    while (sent < len) {
        nng_iov iov = { (void *)(buf + sent), len - sent };
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(st, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) != 0)
            break;
        sent += nng_aio_count(aio);
    }
    nng_aio_free(aio);
    return rv;
}

/* peer_dial: TCP connect and a TLS client trusting the dev CA (the TLS
 * handshake runs with the first I/O). 0 or the nng error. */
static int peer_dial(peer *p, const it_server *s)
{
    nng_tls_config *tls = NULL;
    nng_aio *aio = NULL;
    int rv;

    memset(p, 0, sizeof *p);
    p->fd = -1;
    assert_int_equal(nng_stream_dialer_alloc(&p->d, s->url), 0);
    hold(p);
    assert_int_equal(nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT), 0);
    assert_int_equal(nng_tls_config_ca_file(tls, IT_CA), 0);
    assert_int_equal(nng_tls_config_server_name(tls, "localhost"), 0);
    assert_int_equal(nng_tls_config_auth_mode(tls, NNG_TLS_AUTH_MODE_REQUIRED), 0);
    assert_int_equal(nng_stream_dialer_set_ptr(p->d, NNG_OPT_TLS_CONFIG, tls), 0);
    nng_tls_config_free(tls); /* the dialer holds a reference */
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, IT_CALL_TIMEOUT_MS);
    nng_stream_dialer_dial(p->d, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) == 0) {
        nng_sockaddr sa;
        p->st = nng_aio_get_output(aio, 0);
        assert_int_equal(nng_stream_get_addr(p->st, NNG_OPT_LOCADDR, &sa), 0);
        assert_int_equal(sa.s_family, NNG_AF_INET);
        p->lport = ntohs(sa.s_in.sa_port);
        p->rport = (uint16_t)tcp_port(s->url);
        p->fd = find_fd(p->lport, p->rport);
        hold(p);
    }
    nng_aio_free(aio);
    return rv;
}

/* peer_hello sends hdr as our SP header and reads the server's, which must
 * be rep0's. 0, NNG_EPROTO for another header, or the nng error. */
static int peer_hello(peer *p, const uint8_t hdr[8])
{
    uint8_t out[8], in[8];
    int rv;

    memcpy(out, hdr, sizeof out);
    if ((rv = xfer(p, true, out, sizeof out, IT_CALL_TIMEOUT_MS)) != 0
        || (rv = xfer(p, false, in, sizeof in, IT_CALL_TIMEOUT_MS)) != 0)
        return rv;
    return memcmp(in, SP_REP0, sizeof in) == 0 ? 0 : NNG_EPROTO;
}

static void peer_close(peer *p)
{
    struct held h = { p->d, p->st, p->in };
    release(&h);
    if (p->slot != 0)
        memset(&held[p->slot - 1], 0, sizeof held[0]);
    memset(p, 0, sizeof *p);
}

/* peer_try_open = dial + req0 hello; on failure the peer is closed. */
static int peer_try_open(peer *p, const it_server *s)
{
    int rv = peer_dial(p, s);
    if (rv == 0)
        rv = peer_hello(p, SP_REQ0);
    if (rv != 0)
        peer_close(p);
    return rv;
}

static void peer_open(peer *p, const it_server *s)
{
    int rv = peer_try_open(p, s);
    if (rv != 0)
        fail_msg("raw peer to %s: %s", s->url, nng_strerror(rv));
}

/* peer_frame returns the next whole frame from the server: *f points at its
 * payload (backtrace + envelope, *n bytes) in the peer's buffer, valid
 * until the next call. 0, or the nng error (the connection ended, or
 * nothing within timeout_ms: NNG_ETIMEDOUT). */
static int peer_frame(peer *p, int timeout_ms, const uint8_t **f, size_t *n)
{
    uint64_t end = it_mono_ms() + (uint64_t)timeout_ms;

    for (;;) {
        if (p->len >= 8) {
            uint64_t fl = get64(p->in + p->off);
            if (fl > 1024 * 1024)
                return NNG_EPROTO;
            if (p->len - 8 >= fl) {
                *f = p->in + p->off + 8;
                *n = (size_t)fl;
                p->off += 8 + (size_t)fl;
                p->len -= 8 + (size_t)fl;
                return 0;
            }
        }
        if (p->off > 0) {
            memmove(p->in, p->in + p->off, p->len);
            p->off = 0;
        }
        if (p->cap - p->len < 16384) {
            size_t cap = p->cap * 2 + 65536;
            uint8_t *nb = realloc(p->in, cap);
            if (nb == NULL)
                return NNG_ENOMEM;
            p->in = nb;
            hold(p);
            p->cap = cap;
        }
        uint64_t now = it_mono_ms();
        if (now >= end)
            return NNG_ETIMEDOUT;
        size_t got = 0;
        int rv = recv_some(p, p->in + p->len, p->cap - p->len, (int)(end - now), &got);
        if (rv != 0)
            return rv;
        p->len += got;
    }
}

/* peer_until_closed reads until the server ends the connection; returns
 * the error that ended it (NNG_ETIMEDOUT: it did not within timeout_ms)
 * and the number of bytes that came before. */
static int peer_until_closed(peer *p, int timeout_ms, size_t *bytes)
{
    uint64_t end = it_mono_ms() + (uint64_t)timeout_ms;
    uint8_t buf[4096];

    *bytes = p->len;
    for (;;) {
        uint64_t now = it_mono_ms();
        if (now >= end)
            return NNG_ETIMEDOUT;
        size_t got = 0;
        int rv = recv_some(p, buf, sizeof buf, (int)(end - now), &got);
        if (rv != 0)
            return rv;
        *bytes += got;
    }
}

/* ---- frames ----------------------------------------------------------------- */

/* put_frame writes one SP frame (length, backtrace words bt[0..nbt), a
 * RequestEnvelope{method, rid, body}) into out; returns its size. */
static size_t put_frame(uint8_t *out, size_t cap, const uint32_t *bt, size_t nbt,
    const char *method, uint64_t rid, const void *body, size_t body_len)
{
    Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;

    env.method = (char *)method;
    env.request_id = rid;
    env.body.data = (uint8_t *)body;
    env.body.len = body_len;
    size_t elen = authd__v1__request_envelope__get_packed_size(&env);
    size_t total = 8 + 4 * nbt + elen;
    assert_true(total <= cap);
    put64(out, 4 * nbt + elen);
    for (size_t i = 0; i < nbt; i++)
        put32(out + 8 + 4 * i, bt[i]);
    authd__v1__request_envelope__pack(&env, out + 8 + 4 * nbt);
    return total;
}

/* verify_body: a serialized VerifyRequest for token. */
static size_t verify_body(const char *token, uint8_t *out, size_t cap)
{
    Authd__V1__VerifyRequest vr = AUTHD__V1__VERIFY_REQUEST__INIT;
    vr.access_token = (char *)token;
    assert_true(authd__v1__verify_request__get_packed_size(&vr) <= cap);
    return authd__v1__verify_request__pack(&vr, out);
}

/* put_verify: a Verify frame with a one-word backtrace (id | ID_BIT) and a
 * token that is not one ("x.y.z": UNAUTHENTICATED / MALFORMED). */
static size_t put_verify(uint8_t *out, size_t cap, uint32_t id, uint64_t rid)
{
    uint8_t body[64];
    uint32_t bt = id | ID_BIT;
    size_t bn = verify_body("x.y.z", body, sizeof body);
    return put_frame(out, cap, &bt, 1, VERIFY, rid, body, bn);
}

typedef struct reply {
    uint32_t bt[MAX_HOPS + 1];
    size_t nbt;
    Authd__V1__ReplyEnvelope *env; /* free with reply_free */
} reply;

/* parse_reply splits a reply payload into its backtrace (words up to the
 * one with the top bit) and its ReplyEnvelope; false if it is neither. */
static bool parse_reply(const uint8_t *f, size_t n, reply *r)
{
    size_t pos = 0;

    memset(r, 0, sizeof *r);
    for (;;) {
        if (pos + 4 > n || r->nbt > MAX_HOPS)
            return false;
        uint32_t w = get32(f + pos);
        r->bt[r->nbt++] = w;
        pos += 4;
        if (w & ID_BIT)
            break;
    }
    r->env = authd__v1__reply_envelope__unpack(NULL, n - pos, f + pos);
    return r->env != NULL;
}

static void reply_free(reply *r)
{
    if (r->env != NULL)
        authd__v1__reply_envelope__free_unpacked(r->env, NULL);
    r->env = NULL;
}

/* next_reply: the next reply on p, parsed; fails the test if none comes
 * within the call timeout or it does not parse. */
static void next_reply(peer *p, reply *r, const char *what)
{
    const uint8_t *f = NULL;
    size_t n = 0;
    int rv = peer_frame(p, IT_CALL_TIMEOUT_MS, &f, &n);
    if (rv != 0)
        fail_msg("%s: no reply: %s", what, nng_strerror(rv));
    if (!parse_reply(f, n, r))
        fail_msg("%s: the reply (%zu bytes) is not backtrace + ReplyEnvelope", what, n);
}

static void expect_code(const reply *r, int code, const char *reason, const char *what)
{
    if ((int)r->env->code != code || (reason != NULL && strcmp(r->env->reason, reason) != 0))
        fail_msg("%s: want %s [%s], got %s [%s]: %s", what, authd_code_str(code),
            reason != NULL ? reason : "*", authd_code_str((int)r->env->code), r->env->reason,
            r->env->message);
}

/* expect_closed: the server ends p's connection (within the call timeout)
 * without sending anything but, at most, its own 8-byte SP header. */
static void expect_closed(peer *p, size_t allowed_bytes, const char *what)
{
    size_t bytes = 0;
    int rv = peer_until_closed(p, IT_CALL_TIMEOUT_MS, &bytes);
    if (rv == NNG_ETIMEDOUT)
        fail_msg("%s: the server neither answered nor closed the connection", what);
    if (bytes > allowed_bytes)
        fail_msg("%s: the server sent %zu bytes (want at most %zu) before closing", what, bytes,
            allowed_bytes);
}

/* ---- server-side checks -------------------------------------------------- */

/* serves: a fresh client gets a real Verify answer. */
static void serves(const it_server *s, const char *what)
{
    authd_client *c = it_client(s);
    authd_status st;
    it_verify(c, "x.y.z", &st, NULL);
    if (st.code != AUTHD_UNAUTHENTICATED || strcmp(st.reason, "MALFORMED") != 0)
        fail_msg("%s: a fresh client got %s [%s]: %s", what, authd_code_str(st.code), st.reason,
            st.message);
    authd_client_close(c);
}

/* tcp_connect: a plain TCP connection to 127.0.0.1:port; the fd, or -errno. */
static int tcp_connect(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* wait_exit: authd's exit status within ms (asserts it exits). */
static int wait_exit(it_server *s, int ms)
{
    uint64_t end = it_mono_ms() + (uint64_t)ms;
    int status;

    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        assert_true(r == 0 || errno == EINTR);
        if (it_mono_ms() >= end) {
            it_print_log_tail(s, 30);
            fail_msg("authd did not exit within %d ms", ms);
        }
        it_nap_ms(5);
    }
}

/* ---- 1. slow reader isolation ------------------------------------------ */

#define SLOW_MAX      400000 /* frames prepared; authd must push back long before */
#define SLOW_RID_BASE (UINT64_C(1) << 40) /* request_ids all 6-byte varints */
#define SLOW_MARKER   0x7fffffffu /* id of the frame sent after the stop */
#define STALL_MS      1000 /* no progress for this long: authd stopped reading */
#define OTHER_CALLS   50

/* The writer thread pushes the prepared frames as fast as the stream takes
 * them, never reading. Told to stop, it completes the frame it is in, then
 * sends one marker frame; frames_done is the number of whole frames
 * before the marker. */
struct writer {
    nng_stream *st;
    uint8_t *buf;
    size_t fsize; /* every frame has this size */
    size_t total; /* bytes in buf */
    uint8_t marker[128];
    size_t marker_len;
    atomic_size_t sent; /* bytes accepted by the stream */
    atomic_bool stop;
    atomic_size_t frames_done; /* set before the marker is sent */
    atomic_bool done;
    atomic_int err;
    uint8_t *seen; /* the reader's: seen[id] once a reply names id */
};

/* the writer of a test that failed, for teardown() */
static struct writer *live_writer;
static pthread_t live_writer_th;
static bool live_writer_joinable;

static void *writer_run(void *arg)
{
    struct writer *w = arg;
    nng_aio *aio = NULL;
    size_t sent = 0, target = w->total;
    int rv = 0;

    if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
        atomic_store(&w->err, NNG_ENOMEM);
        atomic_store(&w->done, true);
        return NULL;
    }
    nng_aio_set_timeout(aio, NNG_DURATION_INFINITE); /* a timeout would end the stream */
    for (;;) {
        if (atomic_load(&w->stop))
            target = (sent + w->fsize - 1) / w->fsize * w->fsize; /* this frame's end */
        if (sent >= target)
            break;
        nng_iov iov = { w->buf + sent, target - sent };
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(w->st, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) != 0)
            break;
        sent += nng_aio_count(aio);
        atomic_store(&w->sent, sent);
    }
    nng_aio_free(aio);
    if (rv == 0) {
        atomic_store(&w->frames_done, sent / w->fsize);
        rv = send_unbounded(w->st, w->marker, w->marker_len);
    }
    atomic_store(&w->err, rv);
    atomic_store(&w->done, true);
    return NULL;
}

/*
 * A peer pipelines Verify frames and never reads: authd must stop reading
 * it (its socket stops taking bytes) once its in-flight window is full,
 * while another client is served normally. When the slow peer finally
 * reads, every whole frame it sent is answered exactly once, each reply
 * valid and echoing its request's backtrace and request_id.
 */
static void transport_slow_reader_stalls_only_itself(void **state)
{
    /* warn: not two log lines for each of the ~10^5 requests */
    it_opts o = { .extra = { "--max-inflight", "8", "--log-level", "warn" } };
    it_server *s = it_start(&o);
    peer slow;
    /* heap: the writer thread may outlive a failed test */
    struct writer *w = calloc(1, sizeof *w);
    uint8_t one[128];
    pthread_t th;

    assert_non_null(w);
    peer_open(&slow, s);
    w->st = slow.st;
    w->fsize = put_verify(one, sizeof one, 1, SLOW_RID_BASE);
    w->total = w->fsize * SLOW_MAX;
    w->buf = malloc(w->total);
    assert_non_null(w->buf);
    for (uint32_t i = 0; i < SLOW_MAX; i++)
        assert_int_equal(
            put_verify(w->buf + (size_t)i * w->fsize, w->fsize, i, SLOW_RID_BASE + i), w->fsize);
    w->marker_len = put_verify(w->marker, sizeof w->marker, SLOW_MARKER, 1);

    assert_int_equal(pthread_create(&th, NULL, writer_run, w), 0);
    live_writer = w;
    live_writer_th = th;
    live_writer_joinable = true;

    /* Wait for the writer to stop making progress: authd has stopped
     * reading this connection. */
    uint64_t t0 = it_mono_ms(), end = t0 + 20000, changed = t0;
    size_t last = 0;
    for (;;) {
        uint64_t now = it_mono_ms();
        size_t sent = atomic_load(&w->sent);
        if (atomic_load(&w->done))
            fail_msg("the writer ended (%s) after %zu of %zu bytes: authd never stopped reading "
                     "a peer that does not read its replies",
                nng_strerror(atomic_load(&w->err)), sent, w->total);
        if (sent != last) {
            last = sent;
            changed = now;
        } else if (sent > 0 && now - changed >= STALL_MS) {
            break;
        }
        if (now >= end)
            fail_msg("the writer never stalled within 20 s (%zu bytes sent)", sent);
        it_nap_ms(10);
    }
    size_t stalled_at = last;
    print_message("[ transport ] slow peer stalled after %zu frames (%zu bytes) in %llu ms\n",
        stalled_at / w->fsize, stalled_at, (unsigned long long)(it_mono_ms() - t0 - STALL_MS));

    /* Meanwhile a normal client is served, call after call. */
    authd_client *c = it_client(s);
    uint64_t worst = 0;
    for (int i = 0; i < OTHER_CALLS; i++) {
        authd_status st;
        uint64_t c0 = it_mono_ms();
        it_verify(c, "x.y.z", &st, NULL);
        uint64_t took = it_mono_ms() - c0;
        if (st.code != AUTHD_UNAUTHENTICATED || strcmp(st.reason, "MALFORMED") != 0)
            fail_msg("call %d of the other client while the slow peer is stalled: %s [%s]: %s", i,
                authd_code_str(st.code), st.reason, st.message);
        worst = took > worst ? took : worst;
    }
    authd_client_close(c);
    assert_true(worst < IT_CALL_TIMEOUT_MS);
    /* and the slow peer was still stuck all along */
    assert_false(atomic_load(&w->done));
    assert_int_equal(atomic_load(&w->sent), stalled_at);
    print_message("[ transport ] %d calls of another client meanwhile, slowest %llu ms\n",
        OTHER_CALLS, (unsigned long long)worst);

    /* Now the slow peer reads: one valid reply per whole frame sent, then
     * the marker's. */
    atomic_store(&w->stop, true);
    uint8_t *seen = w->seen = calloc(SLOW_MAX, 1);
    assert_non_null(seen);
    size_t got = 0, in_order = 0;
    bool marker = false;
    uint32_t prev = 0;
    end = it_mono_ms() + 30000;
    while (!(marker && got == atomic_load(&w->frames_done))) {
        const uint8_t *f = NULL;
        size_t n = 0;
        reply r;
        uint64_t now = it_mono_ms();
        if (now >= end)
            fail_msg("the slow peer got %zu replies in 30 s (marker %s, %zu frames sent)", got,
                marker ? "seen" : "not seen", atomic_load(&w->frames_done));
        int rv = peer_frame(&slow, (int)(end - now), &f, &n);
        if (rv != 0)
            fail_msg("the slow peer's connection failed after %zu replies: %s%s", got,
                nng_strerror(rv), slow.lost_close ? " (seen only in the TCP state)" : "");
        if (!parse_reply(f, n, &r))
            fail_msg("reply %zu is not backtrace + ReplyEnvelope", got);
        assert_int_equal(r.nbt, 1);
        uint32_t id = r.bt[0] & ~ID_BIT;
        if (id == SLOW_MARKER) {
            assert_false(marker);
            marker = true;
            assert_int_equal(r.env->request_id, 1);
        } else {
            if (id >= SLOW_MAX || seen[id])
                fail_msg("reply for id %u: %s", id, id >= SLOW_MAX ? "never sent" : "twice");
            /* frames_done is known before the marker is sent, so before
             * any reply can name an id beyond it */
            size_t done = atomic_load(&w->frames_done);
            if (done > 0 && id >= done)
                fail_msg("reply for id %u, but only %zu whole frames were sent", id, done);
            seen[id] = 1;
            got++;
            in_order += id == 0 || id == prev + 1;
            prev = id;
            assert_int_equal(r.env->request_id, SLOW_RID_BASE + id);
        }
        expect_code(&r, AUTHD_UNAUTHENTICATED, "MALFORMED", "slow peer's reply");
        assert_int_equal(r.env->body.len, 0);
        reply_free(&r);
    }
    live_writer_joinable = false;
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&w->err), 0);
    size_t frames = atomic_load(&w->frames_done);
    assert_true(frames * w->fsize >= stalled_at); /* at least what it had sent when stalled */
    for (size_t i = 0; i < frames; i++)
        assert_int_equal(seen[i], 1);
    print_message("[ transport ] slow peer: %zu replies for %zu frames (%zu in order)\n", got,
        frames, in_order);

    live_writer = NULL;
    free(seen);
    free(w->buf);
    free(w);
    peer_close(&slow);
    serves(s, "after the slow peer");
    it_finish(s);
    (void)state;
}

/* ---- 2. pipelining ------------------------------------------------------------ */

#define PIPE_N 200

/* pipeline sends PIPE_N Verify frames in one write, then reads PIPE_N
 * replies: each id once, each echoing its request_id. */
static void pipeline(const it_server *s)
{
    static uint8_t buf[PIPE_N * 128];
    const uint32_t base = 0x00abc000u;
    uint8_t seen[PIPE_N] = { 0 };
    size_t len = 0;
    peer p;

    peer_open(&p, s);
    for (uint32_t i = 0; i < PIPE_N; i++)
        len += put_verify(buf + len, sizeof buf - len, base + i * 3, 9000 + i);
    assert_int_equal(xfer(&p, true, buf, len, IT_CALL_TIMEOUT_MS), 0);
    for (int k = 0; k < PIPE_N; k++) {
        reply r;
        next_reply(&p, &r, "pipelined Verify");
        assert_int_equal(r.nbt, 1);
        uint32_t id = r.bt[0] & ~ID_BIT;
        assert_true(id >= base && (id - base) % 3 == 0 && (id - base) / 3 < PIPE_N);
        uint32_t i = (id - base) / 3;
        if (seen[i])
            fail_msg("reply for id 0x%x twice", (unsigned)id);
        seen[i] = 1;
        assert_int_equal(r.env->request_id, 9000 + i);
        expect_code(&r, AUTHD_UNAUTHENTICATED, "MALFORMED", "pipelined Verify");
        reply_free(&r);
    }
    /* no stray reply: the next one is for the next request */
    len = put_verify(buf, sizeof buf, 0x7654321, 4242);
    assert_int_equal(xfer(&p, true, buf, len, IT_CALL_TIMEOUT_MS), 0);
    reply r;
    next_reply(&p, &r, "Verify after the pipeline");
    assert_int_equal(r.bt[0], 0x7654321u | ID_BIT);
    assert_int_equal(r.env->request_id, 4242);
    reply_free(&r);
    peer_close(&p);
}

/* With the default window (128) and with a window of 4, where reading is
 * paused and resumed many times with frames already buffered. */
static void transport_pipelined_requests_each_answered_once(void **state)
{
    it_server *s = it_start(NULL);
    pipeline(s);
    it_finish(s);

    it_opts o = { .extra = { "--max-inflight", "4" } };
    s = it_start(&o);
    pipeline(s);
    it_finish(s);
    (void)state;
}

/* ---- 3. backtraces ------------------------------------------------------------- */

static void send_raw(peer *p, const uint8_t *buf, size_t len)
{
    uint8_t copy[512];
    assert_true(len <= sizeof copy);
    memcpy(copy, buf, len);
    assert_int_equal(xfer(p, true, copy, len, IT_CALL_TIMEOUT_MS), 0);
}

/* hops_frame: a Verify frame with backtrace bt[0..nbt). */
static size_t hops_frame(uint8_t *out, size_t cap, const uint32_t *bt, size_t nbt, uint64_t rid)
{
    uint8_t body[64];
    size_t bn = verify_body("x.y.z", body, sizeof body);
    return put_frame(out, cap, bt, nbt, VERIFY, rid, body, bn);
}

/* A request that went through devices carries one backtrace word per hop
 * before its id; the reply echoes them all. Eight words is the most
 * accepted; more, or a backtrace whose words all lack the top bit, is a
 * bad peer: the connection closes without a reply. */
static void transport_backtrace_hops(void **state)
{
    it_server *s = it_start(NULL);
    uint8_t buf[512];
    size_t n;
    reply r;
    peer p;

    peer_open(&p, s);

    /* two words: a hop (top bit clear), then the request id */
    const uint32_t two[2] = { 0x00000005u, 0x80000007u };
    n = hops_frame(buf, sizeof buf, two, 2, 51);
    send_raw(&p, buf, n);
    next_reply(&p, &r, "two-word backtrace");
    assert_int_equal(r.nbt, 2);
    assert_int_equal(r.bt[0], two[0]);
    assert_int_equal(r.bt[1], two[1]);
    assert_int_equal(r.env->request_id, 51);
    expect_code(&r, AUTHD_UNAUTHENTICATED, "MALFORMED", "two-word backtrace");
    reply_free(&r);

    /* eight words, the most accepted */
    uint32_t eight[MAX_HOPS];
    for (uint32_t i = 0; i < MAX_HOPS; i++)
        eight[i] = 0x01020300u + i;
    eight[MAX_HOPS - 1] = 0xdeadbeefu;
    n = hops_frame(buf, sizeof buf, eight, MAX_HOPS, 52);
    send_raw(&p, buf, n);
    next_reply(&p, &r, "eight-word backtrace");
    assert_int_equal(r.nbt, MAX_HOPS);
    for (int i = 0; i < MAX_HOPS; i++)
        assert_int_equal(r.bt[i], eight[i]);
    assert_int_equal(r.env->request_id, 52);
    reply_free(&r);

    /* nine words, none with the top bit: closed, no reply */
    uint32_t nine[MAX_HOPS + 1];
    for (uint32_t i = 0; i <= MAX_HOPS; i++)
        nine[i] = 0x00000100u + i;
    n = hops_frame(buf, sizeof buf, nine, MAX_HOPS + 1, 53);
    send_raw(&p, buf, n);
    expect_closed(&p, 0, "nine backtrace words without an id");
    peer_close(&p);

    /* nine words, the ninth an id: one hop too many */
    nine[MAX_HOPS] = 0x80000009u;
    peer_open(&p, s);
    n = hops_frame(buf, sizeof buf, nine, MAX_HOPS + 1, 54);
    send_raw(&p, buf, n);
    expect_closed(&p, 0, "nine backtrace words");
    peer_close(&p);

    /* a frame that ends inside the backtrace: one word, no top bit */
    static const uint8_t short_bt[12] = { 0, 0, 0, 0, 0, 0, 0, 4, 0x00, 0x00, 0x00, 0x01 };
    peer_open(&p, s);
    send_raw(&p, short_bt, sizeof short_bt);
    expect_closed(&p, 0, "a frame that is one hop word");
    peer_close(&p);

    serves(s, "after bad backtraces");
    it_finish(s);
    (void)state;
}

/* ---- 4. SP header ------------------------------------------------------------------- */

/* A peer whose SP header is not req0's (another protocol, ours, a bad
 * version or reserved byte, or not SP at all) is closed; it never gets a
 * reply to a request it sends anyway, and the server goes on serving. */
static void transport_bad_sp_header_closes(void **state)
{
    static const struct {
        uint8_t h[8];
        const char *what;
    } bad[] = {
        { { 0, 'S', 'P', 0, 0, 0x20, 0, 0 }, "pub0 header" },
        { { 0, 'S', 'P', 0, 0, 0x31, 0, 0 }, "rep0 header (a server's)" },
        { { 0, 'S', 'P', 0, 0, 0x21, 0, 0 }, "sub0 header" },
        { { 'G', 'E', 'T', ' ', '/', ' ', 'H', 'T' }, "an HTTP request" },
        { { 0, 'S', 'P', 1, 0, 0x30, 0, 0 }, "req0 header, version 1" },
        { { 0, 'S', 'P', 0, 0, 0x30, 0, 1 }, "req0 header, reserved byte set" },
        { { 0, 'S', 'P', 0, 1, 0x30, 0, 0 }, "protocol 0x130" },
    };
    it_server *s = it_start(NULL);
    uint8_t frame[128];
    size_t fn = put_verify(frame, sizeof frame, 1, 61);

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        peer p;
        uint8_t h[8];
        assert_int_equal(peer_dial(&p, s), 0);
        memcpy(h, bad[i].h, sizeof h);
        int rv = xfer(&p, true, h, sizeof h, IT_CALL_TIMEOUT_MS);
        if (rv == 0)
            (void)xfer(&p, true, frame, fn, IT_CALL_TIMEOUT_MS); /* may fail: closed */
        /* at most the server's own header comes back, then the end */
        expect_closed(&p, 8, bad[i].what);
        peer_close(&p);
    }
    /* control: the right header on the same server is served */
    peer p;
    peer_open(&p, s);
    send_raw(&p, frame, fn);
    reply r;
    next_reply(&p, &r, "Verify after a req0 header");
    assert_int_equal(r.env->request_id, 61);
    reply_free(&r);
    peer_close(&p);
    serves(s, "after bad SP headers");
    it_finish(s);
    (void)state;
}

/* ---- 5. --max-connections ------------------------------------------------------------ */

#define MAXC         3
#define HANGUP_BURST 30

/* open_within: a new connection is accepted (the count went down) within
 * ms, retrying while it is refused. */
static void open_within(peer *p, const it_server *s, int ms, const char *what)
{
    uint64_t end = it_mono_ms() + (uint64_t)ms;
    int tries = 0, rv;

    while ((rv = peer_try_open(p, s)) != 0) {
        tries++;
        if (it_mono_ms() >= end)
            fail_msg("%s: no connection accepted within %d ms (%d tries, last: %s): the slot of "
                     "the connection that ended was never released",
                what, ms, tries, nng_strerror(rv));
        it_nap_ms(10);
    }
}

/* raw_verify: one Verify on p, answered. */
static void raw_verify(peer *p, uint32_t id, const char *what)
{
    uint8_t frame[128];
    size_t fn = put_verify(frame, sizeof frame, id, id);
    send_raw(p, frame, fn);
    reply r;
    next_reply(p, &r, what);
    assert_int_equal(r.bt[0], id | ID_BIT);
    assert_int_equal(r.env->request_id, id);
    expect_code(&r, AUTHD_UNAUTHENTICATED, "MALFORMED", what);
    reply_free(&r);
}

/* Activity order of the held connections: the server evicts the least
 * recently active idle one (one event loop, so the order is exact). */
static uint64_t act_clock, act[MAXC];

static void verify_at(peer *c, int k, uint32_t id, const char *what)
{
    raw_verify(&c[k], id, what);
    act[k] = ++act_clock;
}

/*
 * expect_evicts: with MAXC idle connections open, a newcomer is served and
 * the least recently active of them is closed for it (the others still
 * serve); the newcomer takes its place in c[]. Over the count (a slot
 * leaked) the newcomer would be refused or more would go; under it (a slot
 * released twice) nobody would be closed.
 */
static void expect_evicts(const it_server *s, peer *c, const char *what)
{
    peer n;
    int victim = 0;
    size_t bytes = 0;
    char w[160];

    for (int i = 1; i < MAXC; i++)
        if (act[i] < act[victim])
            victim = i;
    snprintf(w, sizeof w, "%s: newcomer at the cap", what);
    assert_int_equal(peer_try_open(&n, s), 0);
    raw_verify(&n, 70, w);
    int rv = peer_until_closed(&c[victim], IT_CALL_TIMEOUT_MS, &bytes);
    if (rv == NNG_ETIMEDOUT)
        fail_msg("%s: the oldest idle connection was not closed for the newcomer", what);
    peer_close(&c[victim]);
    c[victim] = n;
    act[victim] = ++act_clock;
    for (int i = 0; i < MAXC; i++) {
        snprintf(w, sizeof w, "%s: connection %d still served", what, i);
        verify_at(c, i, 80 + (uint32_t)i, w);
    }
}

/*
 * With --max-connections 3 (one loop), three negotiated connections are
 * served, and a fourth is served by closing the least recently active idle
 * one. Each way a connection can end frees its slot (the client hanging up
 * idle or with a reply in flight, the server closing a peer with a bad
 * header, a reset), and the count is still exact after each: no drift
 * either way (see expect_evicts).
 */
static void transport_max_connections(void **state)
{
    it_opts o = { .extra = { "--max-connections", "3", "--io-threads", "1" } };
    it_server *s = it_start(&o);
    peer c[MAXC];
    char what[96];

    for (int i = 0; i < MAXC; i++) {
        peer_open(&c[i], s);
        verify_at(c, i, 100 + (uint32_t)i, "one of the first three");
    }
    expect_evicts(s, c, "fourth");

    for (int round = 0; round < 8; round++) {
        int k = round % MAXC;
        switch (round % 4) {
        case 0: /* idle hang-up */
            peer_close(&c[k]);
            break;
        case 1: { /* hang up with a request in flight */
            uint8_t frame[128];
            size_t fn = put_verify(frame, sizeof frame, 999, 999);
            send_raw(&c[k], frame, fn);
            peer_close(&c[k]);
            break;
        }
        case 2: { /* hang up mid-frame: half a request sent */
            uint8_t frame[128];
            size_t fn = put_verify(frame, sizeof frame, 998, 998);
            send_raw(&c[k], frame, fn / 2);
            peer_close(&c[k]);
            break;
        }
        case 3: { /* the server closes it: a bad header takes the free slot */
            peer_close(&c[k]);
            peer b;
            uint64_t end = it_mono_ms() + 5000;
            for (;;) { /* retry until the slot is free, then the header is refused */
                assert_int_equal(peer_dial(&b, s), 0);
                size_t bytes = 0;
                uint8_t pub0[8] = { 0, 'S', 'P', 0, 0, 0x20, 0, 0 };
                (void)xfer(&b, true, pub0, sizeof pub0, IT_CALL_TIMEOUT_MS);
                int rv = peer_until_closed(&b, IT_CALL_TIMEOUT_MS, &bytes);
                peer_close(&b);
                assert_int_not_equal(rv, NNG_ETIMEDOUT);
                if (bytes == 8) /* it got our header: it had a slot */
                    break;
                assert_true(it_mono_ms() < end);
                it_nap_ms(10);
            }
            break;
        }
        }
        static const char *const how[4] = { "idle hang-up", "hang-up in flight",
            "hang-up mid-frame", "server closed a bad header" };
        snprintf(what, sizeof what, "round %d (%s)", round, how[round % 4]);
        open_within(&c[k], s, 5000, what);
        verify_at(c, k, 200 + (uint32_t)round, what);
        expect_evicts(s, c, what);
    }

    /* A burst of the commonest ending: a request sent, then the client
     * hangs up at once. Each needs the slot the previous one had. */
    peer_close(&c[0]);
    for (int i = 0; i < HANGUP_BURST; i++) {
        uint8_t frame[128];
        size_t fn = put_verify(frame, sizeof frame, 400 + (uint32_t)i, 400 + (uint32_t)i);
        snprintf(what, sizeof what, "hang-up right after a request, %d of %d", i + 1, HANGUP_BURST);
        open_within(&c[0], s, 5000, what);
        send_raw(&c[0], frame, fn);
        peer_close(&c[0]);
    }
    open_within(&c[0], s, 5000, "after the burst of hang-ups");
    verify_at(c, 0, 500, "after the burst of hang-ups");
    expect_evicts(s, c, "fourth after the burst of hang-ups");

    /* all three go: three new ones fit, a fourth still does not */
    for (int i = 0; i < MAXC; i++)
        peer_close(&c[i]);
    for (int i = 0; i < MAXC; i++) {
        snprintf(what, sizeof what, "reopening %d of 3", i + 1);
        open_within(&c[i], s, 5000, what);
        verify_at(c, i, 300 + (uint32_t)i, what);
    }
    expect_evicts(s, c, "fourth after reopening");
    for (int i = 0; i < MAXC; i++)
        peer_close(&c[i]);

    assert_true(it_log_wait(s, "\"event\":\"connection_evicted\"", IT_CALL_TIMEOUT_MS));
    it_finish(s);
    (void)state;
}

/* ---- 6. negotiation timeout ---------------------------------------------------------- */

/*
 * Connections that never finish connecting are closed after the
 * negotiation timeout (10 s): TCP without TLS, TLS without our SP header,
 * half an SP header. They do not hold up other clients meanwhile, and a
 * negotiated connection idle for as long is not closed.
 */
static void transport_unfinished_connect_times_out(void **state)
{
    it_server *s = it_start(NULL);
    uint8_t hdr[8];
    peer no_hdr, half_hdr, idle;

    uint64_t t0 = it_mono_ms();
    int fd = tcp_connect(tcp_port(s->url)); /* never starts TLS */
    assert_true(fd >= 0);

    /* TLS up (the handshake runs with this read of the server's header),
     * but we never send ours */
    assert_int_equal(peer_dial(&no_hdr, s), 0);
    assert_int_equal(xfer(&no_hdr, false, hdr, sizeof hdr, IT_CALL_TIMEOUT_MS), 0);
    assert_memory_equal(hdr, SP_REP0, sizeof hdr);

    /* half a header */
    assert_int_equal(peer_dial(&half_hdr, s), 0);
    memcpy(hdr, SP_REQ0, sizeof hdr);
    assert_int_equal(xfer(&half_hdr, true, hdr, 4, IT_CALL_TIMEOUT_MS), 0);

    peer_open(&idle, s); /* negotiated, then idle */

    /* others are served while those hang */
    serves(s, "with unfinished connections open");

    /* The plain TCP one: the server closes it (EOF or reset). */
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int pr = poll(&pfd, 1, 13000);
    uint64_t tcp_closed = it_mono_ms() - t0;
    assert_int_equal(pr, 1);
    char b;
    ssize_t r = recv(fd, &b, 1, 0);
    assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
    close(fd);

    size_t bytes = 0;
    int rv = peer_until_closed(&no_hdr, 3000, &bytes);
    assert_int_not_equal(rv, NNG_ETIMEDOUT);
    assert_int_equal(bytes, 0);
    rv = peer_until_closed(&half_hdr, 3000, &bytes);
    assert_int_not_equal(rv, NNG_ETIMEDOUT);
    uint64_t all_closed = it_mono_ms() - t0;
    print_message("[ transport ] plain TCP closed after %llu ms, all after %llu ms\n",
        (unsigned long long)tcp_closed, (unsigned long long)all_closed);
    /* the negotiation timeout, not an immediate hang-up, and not never */
    assert_true(tcp_closed >= 5000);
    assert_true(all_closed <= 13000);
    peer_close(&no_hdr);
    peer_close(&half_hdr);

    /* the negotiated connection, idle all that time, still works */
    raw_verify(&idle, 81, "negotiated connection idle past the negotiation timeout");
    peer_close(&idle);
    it_finish(s);
    (void)state;
}

/* ---- 7. drain ---------------------------------------------------------------------------- */

/*
 * Two Logins in flight on a raw connection (slow argon2, one hash worker:
 * one hashing, one queued behind it) when SIGTERM arrives: both replies come
 * on that connection; once the listener is closed (drain has begun) a new
 * request on it is answered UNAVAILABLE / SHUTTING_DOWN, or the connection
 * closes after the Login replies; authd exits 0.
 */
static void transport_drain_answers_inflight(void **state)
{
    it_opts o = { .cheap_argon2_off = true,
        .extra = { "--argon2-ops", "3", "--argon2-mem-kib", "65536", "--hash-workers", "1" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    authd_status st;
    uint8_t frame[512], body[256];
    peer p;

    it_register(c, "drain-raw", "drain-raw@example.com", "drained over raw frames", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    uint64_t idle_by = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    while (it_hashing_now(s->pid) && it_mono_ms() < idle_by)
        it_nap_ms(1);
    assert_false(it_hashing_now(s->pid));

    peer_open(&p, s);
    Authd__V1__LoginRequest lr = AUTHD__V1__LOGIN_REQUEST__INIT;
    lr.login = "drain-raw";
    lr.password = "drained over raw frames";
    size_t bn = authd__v1__login_request__pack(&lr, body);
    uint32_t id1 = 0x80000001u, id2 = 0x80000002u;
    size_t n = put_frame(frame, sizeof frame, &id1, 1, LOGIN, 701, body, bn);
    send_raw(&p, frame, n);
    n = put_frame(frame, sizeof frame, &id2, 1, LOGIN, 702, body, bn);
    send_raw(&p, frame, n);
    /* Frames are taken in order and Verify is answered at once: when this
     * Verify's reply is back, both Logins have been received (the second
     * waits for the one hash worker). */
    raw_verify(&p, 700, "Verify behind the two Logins");

    uint64_t end = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    while (!it_hashing_now(s->pid)) {
        if (it_mono_ms() >= end)
            fail_msg("never saw the Login's hash running");
        it_nap_ms(1);
    }
    assert_int_equal(kill(s->pid, SIGTERM), 0);

    /* Drain has begun once the listener is closed: connect is refused. */
    int port = tcp_port(s->url);
    end = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    for (;;) {
        int fd = tcp_connect(port);
        if (fd == -ECONNREFUSED)
            break;
        if (fd >= 0)
            close(fd);
        if (it_mono_ms() >= end)
            fail_msg("the listener was not closed within %d ms of SIGTERM", IT_CALL_TIMEOUT_MS);
        it_nap_ms(2);
    }

    /* A request after shutdown began. */
    size_t vn = put_verify(frame, sizeof frame, 3, 703);
    int send_rv = xfer(&p, true, frame, vn, IT_CALL_TIMEOUT_MS);

    bool got1 = false, got2 = false, got3 = false;
    while (!(got1 && got2 && got3)) {
        const uint8_t *f = NULL;
        size_t fl = 0;
        reply r;
        int rv = peer_frame(&p, IT_CALL_TIMEOUT_MS, &f, &fl);
        if (rv != 0) {
            if (rv == NNG_ETIMEDOUT)
                fail_msg("no reply and no close within %d ms during drain", IT_CALL_TIMEOUT_MS);
            if (!(got1 && got2))
                fail_msg("the connection closed (%s) before both Login replies (%d, %d)",
                    nng_strerror(rv), got1, got2);
            break; /* closed after the Logins: allowed for the late request */
        }
        assert_true(parse_reply(f, fl, &r));
        assert_int_equal(r.nbt, 1);
        if (r.bt[0] == id1 || r.bt[0] == id2) {
            bool first = r.bt[0] == id1;
            assert_false(first ? got1 : got2);
            assert_int_equal(r.env->request_id, first ? 701 : 702);
            expect_code(&r, AUTHD_OK, NULL,
                first ? "first Login (hashing at SIGTERM)" : "second Login (queued at SIGTERM)");
            Authd__V1__LoginResponse *resp
                = authd__v1__login_response__unpack(NULL, r.env->body.len, r.env->body.data);
            assert_non_null(resp);
            assert_true(strlen(resp->access_token) > 0);
            authd__v1__login_response__free_unpacked(resp, NULL);
            *(first ? &got1 : &got2) = true;
        } else {
            assert_int_equal(r.bt[0], 3u | ID_BIT);
            assert_int_equal(send_rv, 0);
            assert_int_equal(r.env->request_id, 703);
            expect_code(&r, AUTHD_UNAVAILABLE, "SHUTTING_DOWN", "request after SIGTERM");
            got3 = true;
        }
        reply_free(&r);
    }
    print_message("[ transport ] the request after SIGTERM was %s\n",
        got3 ? "answered UNAVAILABLE/SHUTTING_DOWN" : "met by a closed connection");
    peer_close(&p);

    int code = wait_exit(s, IT_STOP_DEADLINE_MS);
    if (code != 0) {
        it_print_log_tail(s, 40);
        fail_msg("authd exited with status %d after SIGTERM (want 0)", code);
    }
    it_free(s);
    (void)state;
}

/* teardown: what a failed test left behind (peers, the writer thread),
 * then the harness's teardown (servers). */
static int teardown(void **state)
{
    for (int i = 0; i < MAX_HELD; i++)
        release(&held[i]); /* ends the writer's send, if it is stuck */
    if (live_writer != NULL) {
        if (live_writer_joinable)
            pthread_join(live_writer_th, NULL);
        live_writer_joinable = false;
        free(live_writer->buf);
        free(live_writer->seen);
        free(live_writer);
        live_writer = NULL;
    }
    return it_teardown(state);
}

/* ---- 8. an oversized header behind a full window ------------------------------- */

/* vm_peak_kib: the process's peak virtual size (VmPeak), or 0. */
static unsigned long vm_peak_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *st = it_read_file(path, NULL);
    unsigned long kib = 0;
    const char *l = st != NULL ? strstr(st, "VmPeak:") : NULL;
    if (l != NULL)
        kib = strtoul(l + 7, NULL, 10);
    free(st);
    return kib;
}

/* With --max-inflight 1 a slow Login fills the window; the next frame's
 * header announces 8 GiB. It must be refused as soon as it arrives (the
 * connection closes while the Login is still hashing), and authd must not
 * have reserved memory for it: a review found the buffer being sized from
 * the unchecked length while the window was full. */
static void transport_oversized_header_behind_full_window(void **state)
{
    it_opts o = { .cheap_argon2_off = true,
        .extra = { "--max-inflight", "1", "--argon2-ops", "3", "--argon2-mem-kib", "65536",
            "--hash-workers", "1" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    authd_status st;
    uint8_t frame[512], body[256];
    peer p;

    it_register(
        c, "window-full", "window-full@example.com", "slow hash fills the window", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    unsigned long before = vm_peak_kib(s->pid);
    assert_true(before > 0);

    peer_open(&p, s);
    Authd__V1__LoginRequest lr = AUTHD__V1__LOGIN_REQUEST__INIT;
    lr.login = "window-full";
    lr.password = "slow hash fills the window";
    size_t bn = authd__v1__login_request__pack(&lr, body);
    uint32_t id = 0x80000001u;
    size_t n = put_frame(frame, sizeof frame, &id, 1, LOGIN, 801, body, bn);
    uint8_t big[8] = { 0, 0, 0, 2, 0, 0, 0, 0 }; /* 8 GiB */
    memcpy(frame + n, big, sizeof big);
    send_raw(&p, frame, n + sizeof big);

    /* Closed without a reply: the Login is still hashing (argon2 t=3,
     * 64 MiB) when the header is refused. */
    expect_closed(&p, 0, "8 GiB header behind a full window");
    peer_close(&p);
    unsigned long after = vm_peak_kib(s->pid);
    if (after > before + 1024 * 1024)
        fail_msg(
            "VmPeak grew from %lu to %lu KiB: a buffer was sized from the header", before, after);
    assert_true(it_log_wait(s, "\"frame_too_large\"", IT_CALL_TIMEOUT_MS));
    it_finish(s);
    (void)state;
}

/* ---- 9. event loops and worker replies ------------------------------------------ */

#define MIX_CLIENTS 6
#define MIX_VERIFY  40 /* per client */
#define MIX_LOGIN   3 /* per client */

struct mix {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
    int verify_ok, verify_wrong_user, login_ok, other;
    char user_id[64];
};

static void mix_done(struct mix *m)
{
    pthread_mutex_lock(&m->mu);
    m->pending--;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static void mix_verify_cb(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct mix *m = arg;
    (void)st;
    pthread_mutex_lock(&m->mu);
    if (code == AUTHD_OK) {
        Authd__V1__VerifyResponse *r = (Authd__V1__VerifyResponse *)resp;
        if (strcmp(r->user_id, m->user_id) == 0)
            m->verify_ok++;
        else
            m->verify_wrong_user++;
        protobuf_c_message_free_unpacked(resp, NULL);
    } else {
        m->other++;
    }
    pthread_mutex_unlock(&m->mu);
    mix_done(m);
}

static void mix_login_cb(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct mix *m = arg;
    (void)st;
    pthread_mutex_lock(&m->mu);
    if (code == AUTHD_OK) {
        m->login_ok++;
        protobuf_c_message_free_unpacked(resp, NULL);
    } else {
        m->other++;
    }
    pthread_mutex_unlock(&m->mu);
    mix_done(m);
}

static void transport_io_threads_mixed_replies(void **state)
{
    /* 18 logins of one account in flight at once: each is counted before
     * its hash (the throttle's rule), so the free attempts must cover them. */
    it_opts o = { .extra = { "--io-threads", "3", "--login-free-attempts", "100" } };
    it_server *s = it_start(&o);
    authd_client *c[MIX_CLIENTS];
    struct mix m = { .pending = 0 };
    authd_status st;
    Authd__V1__RegisterResponse *reg = NULL;
    char tok[2048];

    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    for (int i = 0; i < MIX_CLIENTS; i++)
        c[i] = it_client(s);
    it_register(c[0], "mixer", "mixer@example.com", "mixing loop and pool replies", &st, &reg);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    snprintf(m.user_id, sizeof m.user_id, "%s", reg->user->id);
    protobuf_c_message_free_unpacked(&reg->base, NULL);
    it_login_token(c[0], "mixer", "mixing loop and pool replies", tok, sizeof tok, NULL);

    /* Every client pipelines Verifies (answered on its connection's loop)
     * with Logins (answered from the hashing and write pools). */
    Authd__V1__VerifyRequest vr = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__LoginRequest lr = AUTHD__V1__LOGIN_REQUEST__INIT;
    vr.access_token = tok;
    lr.login = "mixer";
    lr.password = "mixing loop and pool replies";
    pthread_mutex_lock(&m.mu);
    m.pending = MIX_CLIENTS * (MIX_VERIFY + MIX_LOGIN);
    pthread_mutex_unlock(&m.mu);
    for (int i = 0; i < MIX_CLIENTS; i++) {
        for (int k = 0; k < MIX_VERIFY + MIX_LOGIN; k++) {
            bool login = k % 14 == 7; /* k = 7, 21, 35: MIX_LOGIN of them */
            int rc = login ? authd_client_login_async(c[i], &lr, mix_login_cb, &m)
                           : authd_client_verify_async(c[i], &vr, mix_verify_cb, &m);
            assert_int_equal(rc, 0);
        }
    }
    uint64_t deadline = it_mono_ms() + 20000;
    pthread_mutex_lock(&m.mu);
    while (m.pending > 0 && it_mono_ms() < deadline) {
        pthread_mutex_unlock(&m.mu);
        it_nap_ms(10);
        pthread_mutex_lock(&m.mu);
    }
    int pending = m.pending;
    pthread_mutex_unlock(&m.mu);
    assert_int_equal(pending, 0);
    assert_int_equal(m.other, 0);
    assert_int_equal(m.verify_wrong_user, 0);
    assert_int_equal(m.login_ok, MIX_CLIENTS * MIX_LOGIN);
    assert_int_equal(m.verify_ok, MIX_CLIENTS * MIX_VERIFY);

    for (int i = 0; i < MIX_CLIENTS; i++)
        authd_client_close(c[i]);
    assert_true(it_log_wait(s, "\"io_threads\":3", IT_CALL_TIMEOUT_MS));
    it_finish(s);
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(transport_slow_reader_stalls_only_itself, teardown),
        cmocka_unit_test_teardown(transport_pipelined_requests_each_answered_once, teardown),
        cmocka_unit_test_teardown(transport_backtrace_hops, teardown),
        cmocka_unit_test_teardown(transport_bad_sp_header_closes, teardown),
        cmocka_unit_test_teardown(transport_max_connections, teardown),
        cmocka_unit_test_teardown(transport_unfinished_connect_times_out, teardown),
        cmocka_unit_test_teardown(transport_drain_answers_inflight, teardown),
        cmocka_unit_test_teardown(transport_oversized_header_behind_full_window, teardown),
        cmocka_unit_test_teardown(transport_io_threads_mixed_replies, teardown),
    };
    const char *only = getenv("IT_ONLY");
    if (only != NULL)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests_name("integration.transport", tests, NULL, NULL);
}
