/*
** test_client_wire.c — libauthd-client's transport against a hand-driven
** SP rep0 peer: the test thread itself plays the server on a plain TCP
** socket on loopback (accept, the 8-byte SP headers, length-prefixed
** frames), so each case decides exactly what goes on the wire and when.
** TLS is covered by the integration tests; nng rep0 interop by
** test_client_gen.
**
** Cases: the frame layout, replies out of order, replies with unknown ids
** dropped, a late reply to a timed-out call dropped, malformed and
** oversized frames, the peer's protocol checked at open, open bounded by
** its timeout, calls lost with their connection vs. calls parked until the
** next one, thousands of calls in flight and expiring, calls started from
** callbacks sent as one batch, close with calls in flight, reply envelopes
** (canonical, reordered, errors, malformed) reaching the caller.
**
** Waiting is always polling with a deadline, never a bare sleep.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "authd/client_rpc.h"
#include "authd/v1/envelope.pb-c.h"

#define WAIT_MS 10000 /* the most any step may take */

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* ---- the peer -------------------------------------------------------------- */

typedef struct peer {
    int lfd; /* listening socket */
    int fd; /* the accepted connection, -1 if none */
    char url[64];
    uint8_t hdr[8]; /* the SP header the peer sends */
    uint8_t got_hdr[8]; /* the client's */
    pthread_t thread; /* accept_begin's helper */
    /* bytes read, not yet taken as frames */
    uint8_t *in;
    size_t in_len, in_cap;
    int reads; /* recv calls that returned data */
} peer;

static const uint8_t rep0_hdr[8] = { 0, 'S', 'P', 0, 0, 0x31, 0, 0 };

static void peer_listen(peer *p)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);

    memset(p, 0, sizeof(*p));
    p->fd = -1;
    memcpy(p->hdr, rep0_hdr, sizeof(p->hdr));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->lfd >= 0);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(p->lfd, 16), 0);
    assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&a, &len), 0);
    snprintf(p->url, sizeof(p->url), "tcp://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
}

static void peer_drop(peer *p)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    p->in_len = 0;
}

static void peer_close(peer *p)
{
    peer_drop(p);
    close(p->lfd);
    free(p->in);
}

/* wait_fd polls fd for ev until the deadline; returns whether it is ready. */
static bool wait_fd(int fd, short ev, int ms)
{
    struct pollfd pf = { .fd = fd, .events = ev };
    uint64_t end = mono_ms() + (uint64_t)ms;

    for (;;) {
        uint64_t now = mono_ms();
        int n = poll(&pf, 1, now >= end ? 0 : (int)(end - now));
        if (n > 0) {
            return true;
        }
        if (n == 0 || errno != EINTR) {
            return false;
        }
    }
}

static void send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *b = buf;

    while (len > 0) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        assert_true(n > 0);
        b += n;
        len -= (size_t)n;
    }
}

/* read_exact reads len bytes within WAIT_MS; returns false on EOF or timeout. */
static bool read_exact(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n;
        if (!wait_fd(fd, POLLIN, WAIT_MS)) {
            return false;
        }
        n = recv(fd, buf, len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* peer_accept takes the next connection and exchanges SP headers. */
static void peer_accept(peer *p)
{
    static const uint8_t req0_hdr[8] = { 0, 'S', 'P', 0, 0, 0x30, 0, 0 };
    static const int one = 1;

    peer_drop(p);
    assert_true(wait_fd(p->lfd, POLLIN, WAIT_MS));
    p->fd = accept(p->lfd, NULL, NULL);
    assert_true(p->fd >= 0);
    (void)setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    send_all(p->fd, p->hdr, sizeof(p->hdr));
    assert_true(read_exact(p->fd, p->got_hdr, sizeof(p->got_hdr)));
    assert_memory_equal(p->got_hdr, req0_hdr, sizeof(req0_hdr));
}

static void *accept_main(void *arg)
{
    peer_accept(arg);
    return NULL;
}

/* accept_begin accepts on a helper thread, for while the test thread is in
 * authd_client_open (which waits for our SP header). */
static void accept_begin(peer *p)
{
    assert_int_equal(pthread_create(&p->thread, NULL, accept_main, p), 0);
}

static void accept_end(peer *p)
{
    assert_int_equal(pthread_join(p->thread, NULL), 0);
    assert_true(p->fd >= 0);
}

/* A request frame as the peer saw it. */
typedef struct frame {
    uint32_t id; /* with the top bit, as on the wire */
    uint8_t body[64];
    size_t len;
} frame;

/*
** peer_frames reads until it has n complete frames (within WAIT_MS each
** read), counting the recv calls that returned data in p->reads.
*/
static void peer_frames(peer *p, frame *out, size_t n)
{
    size_t got = 0;

    while (got < n) {
        size_t off = 0;
        /* Take what is complete. */
        while (got < n && p->in_len - off >= 8) {
            uint64_t len = get64(p->in + off);
            assert_true(len >= 4 && len - 4 <= sizeof(out[0].body));
            if (p->in_len - off < 8 + len) {
                break;
            }
            out[got].id = get32(p->in + off + 8);
            out[got].len = (size_t)len - 4;
            memcpy(out[got].body, p->in + off + 12, out[got].len);
            got++;
            off += 8 + (size_t)len;
        }
        if (off > 0) {
            memmove(p->in, p->in + off, p->in_len - off);
            p->in_len -= off;
        }
        if (got == n) {
            break;
        }
        if (p->in_cap - p->in_len < 65536) {
            p->in_cap = p->in_cap * 2 + 65536;
            p->in = realloc(p->in, p->in_cap);
            assert_non_null(p->in);
        }
        assert_true(wait_fd(p->fd, POLLIN, WAIT_MS));
        ssize_t r = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
        assert_true(r > 0);
        p->in_len += (size_t)r;
        p->reads++;
    }
}

/* put_frame appends one reply frame (id as given, body) to buf at *off. */
static void put_frame(uint8_t *buf, size_t *off, uint32_t id, const void *body, size_t len)
{
    put64(buf + *off, 4 + (uint64_t)len);
    put32(buf + *off + 8, id);
    memcpy(buf + *off + 12, body, len);
    *off += 12 + len;
}

static void peer_reply(peer *p, uint32_t id, const void *body, size_t len)
{
    uint8_t buf[256];
    size_t off = 0;

    assert_true(len + 12 <= sizeof(buf));
    put_frame(buf, &off, id, body, len);
    send_all(p->fd, buf, off);
}

/* ---- the client side: raw calls and what their callbacks saw --------------- */

#define MAX_CALLS 12000

typedef struct results results;

typedef struct rcall {
    results *r;
    int i;
    char want[64]; /* the reply expected, for OK */
} rcall;

struct results {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    authd_client *c;
    int done;
    int calls[MAX_CALLS];
    int codes[MAX_CALLS];
    size_t lens[MAX_CALLS]; /* reply length, for OK */
    char reasons[MAX_CALLS][64];
    char message[256]; /* of the last failure */
    int mismatched; /* OK replies that were not the one expected */
    /* closed loop: calls each callback still starts */
    int chain_left[MAX_CALLS];
    int reissue_failed;
    int sync_from_cb; /* code authd_client_call returned inside a callback */
    rcall rc[MAX_CALLS];
};

static results *results_new(authd_client *c)
{
    results *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->c = c;
    r->sync_from_cb = -1;
    for (int i = 0; i < MAX_CALLS; i++) {
        r->rc[i].r = r;
        r->rc[i].i = i;
    }
    return r;
}

static void results_free(results *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int start_raw(results *r, int i, const char *payload);

static void raw_cb(void *arg, int code, const authd_status *st, const void *reply, size_t len)
{
    rcall *k = arg;
    results *r = k->r;
    bool again = false;

    pthread_mutex_lock(&r->mu);
    r->calls[k->i]++;
    r->codes[k->i] = code;
    snprintf(r->reasons[k->i], sizeof(r->reasons[0]), "%s", st->reason);
    r->lens[k->i] = len;
    if (code != AUTHD_OK) {
        snprintf(r->message, sizeof(r->message), "%s", st->message);
    } else if (len != strlen(k->want) || memcmp(reply, k->want, len) != 0) {
        r->mismatched++;
    }
    if (r->chain_left[k->i] > 0) {
        r->chain_left[k->i]--;
        again = true;
    }
    if (r->sync_from_cb < 0) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        Authd__V1__VerifyResponse *resp = NULL;
        req.access_token = "x";
        r->sync_from_cb = authd_client_verify(r->c, &req, &resp, NULL);
    }
    pthread_mutex_unlock(&r->mu);
    if (again && start_raw(r, k->i, k->want) == AUTHD_OK) {
        return; /* counted when that one completes */
    }
    pthread_mutex_lock(&r->mu);
    r->reissue_failed += again;
    r->done++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* start_raw sends payload as call i; the peer is to answer with the same. */
static int start_raw(results *r, int i, const char *payload)
{
    snprintf(r->rc[i].want, sizeof(r->rc[i].want), "%s", payload);
    return authd_client_call_raw_async(r->c, payload, strlen(payload), raw_cb, &r->rc[i]);
}

/* wait_done waits up to WAIT_MS for n completed chains in all. */
static void wait_done(results *r, int n)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&r->mu);
    while (r->done < n && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) { }
    assert_int_equal(r->done, n);
    pthread_mutex_unlock(&r->mu);
}

static int done_now(results *r)
{
    int n;

    pthread_mutex_lock(&r->mu);
    n = r->done;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* open_on opens a plaintext client to p, the peer accepting on a helper. */
static authd_client *open_on(peer *p, int timeout_ms, size_t max_reply)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;

    o.url = p->url;
    o.allow_plaintext = true;
    o.timeout_ms = timeout_ms;
    o.max_reply_size = max_reply;
    accept_begin(p);
    if (authd_client_open(&o, &c, &st) != AUTHD_OK) {
        fail_msg("open: %s [%s]: %s", authd_code_str(st.code), st.reason, st.message);
    }
    accept_end(p);
    return c;
}

/* ---- cases --------------------------------------------------------------------- */

/* The frame on the wire: length, id with the top bit, the bytes as given. */
static void wire_frame_layout(void **state)
{
    peer p;
    frame f[2];
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 0);
    r = results_new(c);
    assert_int_equal(start_raw(r, 0, "hello"), AUTHD_OK);
    assert_int_equal(start_raw(r, 1, ""), AUTHD_OK);
    peer_frames(&p, f, 2);
    assert_true((f[0].id & 0x80000000u) != 0);
    assert_true((f[1].id & 0x80000000u) != 0);
    assert_true(f[0].id != f[1].id);
    assert_int_equal(f[0].len, 5);
    assert_memory_equal(f[0].body, "hello", 5);
    assert_int_equal(f[1].len, 0);
    peer_reply(&p, f[1].id, "", 0);
    peer_reply(&p, f[0].id, "hello", 5);
    wait_done(r, 2);
    assert_int_equal(r->codes[0], AUTHD_OK);
    assert_int_equal(r->codes[1], AUTHD_OK);
    assert_int_equal(r->mismatched, 0);
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* Replies in any order reach their own calls. */
static void wire_replies_out_of_order(void **state)
{
    static const char *const payload[] = { "first", "second", "third", "fourth" };
    static const int order[] = { 2, 0, 3, 1 };
    uint8_t buf[256];
    size_t off = 0;
    peer p;
    frame f[4];
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 0);
    r = results_new(c);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(start_raw(r, i, payload[i]), AUTHD_OK);
    }
    peer_frames(&p, f, 4);
    for (int i = 0; i < 4; i++) {
        int k = order[i];
        put_frame(buf, &off, f[k].id, f[k].body, f[k].len);
    }
    send_all(p.fd, buf, off);
    wait_done(r, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r->calls[i], 1);
        assert_int_equal(r->codes[i], AUTHD_OK);
    }
    assert_int_equal(r->mismatched, 0);
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/*
** Replies whose id matches no call in flight (or lacks the top bit) are
** dropped; the connection stays up and the real reply still arrives.
*/
static void wire_unknown_ids_are_dropped(void **state)
{
    uint8_t buf[256];
    size_t off = 0;
    peer p;
    frame f[1];
    authd_client *c;
    results *r;
    int fd;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 0);
    r = results_new(c);
    fd = p.fd;
    assert_int_equal(start_raw(r, 0, "mine"), AUTHD_OK);
    peer_frames(&p, f, 1);
    put_frame(buf, &off, (f[0].id + 1000) | 0x80000000u, "nobody's", 8);
    put_frame(buf, &off, f[0].id & 0x7fffffffu, "no top bit", 10);
    put_frame(buf, &off, f[0].id, "mine", 4);
    send_all(p.fd, buf, off);
    wait_done(r, 1);
    assert_int_equal(r->codes[0], AUTHD_OK);
    assert_int_equal(r->mismatched, 0);

    /* Same connection: the next call comes on the same socket. */
    assert_int_equal(start_raw(r, 1, "again"), AUTHD_OK);
    peer_frames(&p, f, 1);
    assert_int_equal(p.fd, fd);
    peer_reply(&p, f[0].id, "again", 5);
    wait_done(r, 2);
    assert_int_equal(r->codes[1], AUTHD_OK);
    assert_int_equal(r->calls[0], 1);
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* A reply after its call's deadline is dropped; the connection lives on. */
static void wire_late_reply_is_dropped(void **state)
{
    peer p;
    frame f[1];
    authd_client *c;
    results *r;
    uint64_t t0;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 300, 0);
    r = results_new(c);
    t0 = mono_ms();
    assert_int_equal(start_raw(r, 0, "slow"), AUTHD_OK);
    peer_frames(&p, f, 1);
    wait_done(r, 1);
    assert_true(mono_ms() - t0 >= 290);
    assert_int_equal(r->codes[0], AUTHD_DEADLINE_EXCEEDED);
    assert_string_equal(r->reasons[0], AUTHD_REASON_TRANSPORT);
    peer_reply(&p, f[0].id, "slow", 4); /* too late */

    assert_int_equal(start_raw(r, 1, "next"), AUTHD_OK);
    peer_frames(&p, f, 1);
    peer_reply(&p, f[0].id, "next", 4);
    wait_done(r, 2);
    assert_int_equal(r->codes[1], AUTHD_OK);
    assert_int_equal(r->calls[0], 1);
    assert_int_equal(r->mismatched, 0);
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/*
** A frame too short to hold an id, or longer than max_reply_size (refused
** from its length alone, before its body arrives), ends the connection:
** the calls on it fail UNAVAILABLE at once; the client redials.
*/
static void wire_bad_frames_end_the_connection(void **state)
{
    uint8_t buf[16];
    peer p;
    frame f[1];
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 1024);
    r = results_new(c);

    assert_int_equal(start_raw(r, 0, "short"), AUTHD_OK);
    peer_frames(&p, f, 1);
    put64(buf, 2);
    buf[8] = buf[9] = 0;
    send_all(p.fd, buf, 10);
    wait_done(r, 1);
    assert_int_equal(r->codes[0], AUTHD_UNAVAILABLE);
    assert_string_equal(r->reasons[0], AUTHD_REASON_TRANSPORT);

    peer_accept(&p); /* the redial */
    assert_int_equal(start_raw(r, 1, "huge"), AUTHD_OK);
    peer_frames(&p, f, 1);
    put64(buf, 4 + 1025);
    put32(buf + 8, f[0].id);
    send_all(p.fd, buf, 12);
    wait_done(r, 2);
    assert_int_equal(r->codes[1], AUTHD_UNAVAILABLE);
    if (strstr(r->message, "exceeds the maximum") == NULL) {
        fail_msg("message does not name the limit: %s", r->message);
    }

    /* A reply frame of exactly the maximum is fine. */
    peer_accept(&p);
    {
        static uint8_t big[12 + 1020];
        assert_int_equal(start_raw(r, 2, "max"), AUTHD_OK);
        peer_frames(&p, f, 1);
        put64(big, 1024);
        put32(big + 8, f[0].id);
        memset(big + 12, 'm', 1020);
        send_all(p.fd, big, sizeof(big));
        wait_done(r, 3);
        assert_int_equal(r->codes[2], AUTHD_OK);
        assert_int_equal(r->lens[2], 1020); /* (not "max": counted as mismatched) */
    }
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* open checks the peer's SP header: an SP peer of another protocol, or not SP. */
static void wire_open_checks_the_peer(void **state)
{
    static const struct {
        uint8_t hdr[8];
        const char *says;
    } cases[] = {
        { { 0, 'S', 'P', 0, 0, 0x30, 0, 0 }, "not rep0" },
        { { 'H', 'T', 'T', 'P', '/', '1', '.', '1' }, "does not speak the SP protocol" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        authd_client_options o = { 0 };
        authd_client *c = NULL;
        authd_status st;
        peer p;
        peer_listen(&p);
        memcpy(p.hdr, cases[i].hdr, 8);
        o.url = p.url;
        o.allow_plaintext = true;
        o.timeout_ms = 5000;
        accept_begin(&p);
        assert_int_equal(authd_client_open(&o, &c, &st), AUTHD_UNAVAILABLE);
        accept_end(&p);
        assert_null(c);
        assert_string_equal(st.reason, AUTHD_REASON_TRANSPORT);
        if (strstr(st.message, cases[i].says) == NULL) {
            fail_msg("case %zu: %s", i, st.message);
        }
        peer_close(&p);
    }
}

/*
** A server that takes the TCP connection but never answers: open gives up
** after timeout_ms with UNAVAILABLE.
*/
static void wire_open_is_bounded_by_the_timeout(void **state)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;
    uint64_t t0, took;
    peer p;

    (void)state;
    peer_listen(&p); /* never accepts: the kernel completes the handshake */
    o.url = p.url;
    o.allow_plaintext = true;
    o.timeout_ms = 300;
    t0 = mono_ms();
    assert_int_equal(authd_client_open(&o, &c, &st), AUTHD_UNAVAILABLE);
    took = mono_ms() - t0;
    assert_null(c);
    assert_string_equal(st.reason, AUTHD_REASON_TRANSPORT);
    assert_true(took >= 290);
    assert_true(took < 3000);
    if (strstr(st.message, "no connection within 300 ms") == NULL) {
        fail_msg("%s", st.message);
    }
    peer_close(&p);
}

/*
** Calls sent on a connection that drops fail UNAVAILABLE at once (never
** resent); a call started while the client redials waits for the next
** connection and goes out on it.
*/
static void wire_lost_vs_parked_calls(void **state)
{
    peer p;
    frame f[1];
    authd_client *c;
    results *r;
    uint64_t t0;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 0);
    r = results_new(c);
    assert_int_equal(start_raw(r, 0, "lost"), AUTHD_OK);
    peer_frames(&p, f, 1);
    t0 = mono_ms();
    peer_drop(&p);
    wait_done(r, 1);
    assert_true(mono_ms() - t0 < 1000);
    assert_int_equal(r->codes[0], AUTHD_UNAVAILABLE);
    assert_string_equal(r->reasons[0], AUTHD_REASON_TRANSPORT);

    /* The redial is waiting in our backlog: the client is not connected. */
    assert_true(wait_fd(p.lfd, POLLIN, WAIT_MS));
    assert_int_equal(start_raw(r, 1, "parked"), AUTHD_OK);
    assert_int_equal(done_now(r), 1);
    peer_accept(&p);
    peer_frames(&p, f, 1);
    assert_int_equal(f[0].len, 6);
    assert_memory_equal(f[0].body, "parked", 6);
    peer_reply(&p, f[0].id, "parked", 6);
    wait_done(r, 2);
    assert_int_equal(r->codes[1], AUTHD_OK);
    assert_int_equal(r->calls[0], 1);
    /* "lost" was not resent on the new connection. */
    assert_false(wait_fd(p.fd, POLLIN, 100));
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* A parked call whose deadline passes before a connection fails UNAVAILABLE. */
static void wire_parked_call_times_out_unavailable(void **state)
{
    peer p;
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 300, 0);
    r = results_new(c);
    peer_drop(&p);
    assert_true(wait_fd(p.lfd, POLLIN, WAIT_MS)); /* redialing */
    assert_int_equal(start_raw(r, 0, "waits"), AUTHD_OK);
    wait_done(r, 1);
    assert_int_equal(r->codes[0], AUTHD_UNAVAILABLE);
    assert_string_equal(r->reasons[0], AUTHD_REASON_TRANSPORT);
    if (strstr(r->message, "not connected") == NULL) {
        fail_msg("%s", r->message);
    }
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* Ten thousand calls in flight on one connection, answered in reverse. */
static void wire_many_calls_in_flight(void **state)
{
    enum { N = 10000 };
    static frame f[N];
    uint8_t *buf;
    size_t off = 0;
    peer p;
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 20000, 0);
    r = results_new(c);
    for (int i = 0; i < N; i++) {
        char payload[16];
        snprintf(payload, sizeof(payload), "n%d", i);
        assert_int_equal(start_raw(r, i, payload), AUTHD_OK);
    }
    peer_frames(&p, f, N);
    buf = malloc((size_t)N * 32);
    assert_non_null(buf);
    for (int i = N - 1; i >= 0; i--) {
        put_frame(buf, &off, f[i].id, f[i].body, f[i].len);
    }
    send_all(p.fd, buf, off);
    free(buf);
    wait_done(r, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r->calls[i], 1);
        assert_int_equal(r->codes[i], AUTHD_OK);
    }
    assert_int_equal(r->mismatched, 0);
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* Two thousand calls nobody answers each expire once, near their deadline. */
static void wire_many_calls_expire(void **state)
{
    enum { N = 2000 };
    peer p;
    authd_client *c;
    results *r;
    uint64_t t0, took;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 300, 0);
    r = results_new(c);
    t0 = mono_ms();
    for (int i = 0; i < N; i++) {
        assert_int_equal(start_raw(r, i, "silence"), AUTHD_OK);
    }
    wait_done(r, N);
    took = mono_ms() - t0;
    assert_true(took >= 290);
    assert_true(took < 5000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r->calls[i], 1);
        assert_int_equal(r->codes[i], AUTHD_DEADLINE_EXCEEDED);
    }
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/*
** Calls started from callbacks go out as one batch: the peer answers 32
** calls with one write, and the 32 calls their callbacks start arrive
** together, in one read. A synchronous call from a callback is refused.
*/
static void wire_callbacks_batch_their_calls(void **state)
{
    enum { N = 32 };
    uint8_t buf[N * 32];
    size_t off = 0;
    frame f[N];
    peer p;
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 0);
    r = results_new(c);
    for (int i = 0; i < N; i++) {
        char payload[16];
        snprintf(payload, sizeof(payload), "c%d", i);
        r->chain_left[i] = 1;
        assert_int_equal(start_raw(r, i, payload), AUTHD_OK);
    }
    peer_frames(&p, f, N);
    for (int i = 0; i < N; i++) {
        put_frame(buf, &off, f[i].id, f[i].body, f[i].len);
    }
    p.reads = 0;
    send_all(p.fd, buf, off);
    peer_frames(&p, f, N); /* the calls the callbacks started */
    assert_int_equal(p.reads, 1);
    off = 0;
    for (int i = 0; i < N; i++) {
        put_frame(buf, &off, f[i].id, f[i].body, f[i].len);
    }
    send_all(p.fd, buf, off);
    wait_done(r, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r->calls[i], 2);
        assert_int_equal(r->codes[i], AUTHD_OK);
    }
    assert_int_equal(r->mismatched, 0);
    assert_int_equal(r->reissue_failed, 0);
    assert_int_equal(r->sync_from_cb, AUTHD_INVALID_ARGUMENT);
    authd_client_close(c);
    results_free(r);
    peer_close(&p);
}

/* ---- envelope calls: what the peer's reply envelope becomes ------------------- */

/* One Verify call's outcome, as its callback saw it. */
typedef struct vcall {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int code;
    authd_status st;
    char username[64];
    size_t nroles;
} vcall;

static void verify_cb(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    vcall *v = arg;
    Authd__V1__VerifyResponse *vr = (Authd__V1__VerifyResponse *)resp;

    pthread_mutex_lock(&v->mu);
    v->code = code;
    v->st = *st;
    if (vr != NULL) {
        snprintf(v->username, sizeof(v->username), "%s", vr->username);
        v->nroles = vr->n_roles;
        authd__v1__verify_response__free_unpacked(vr, NULL);
    }
    v->done = true;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

/*
** verify_with_reply starts a Verify of token "tok", checks the request
** envelope the peer gets, answers it with the reply envelope build() makes
** (given the request id) and returns the call's outcome in *v.
*/
static void verify_with_reply(
    authd_client *c, peer *p, size_t (*build)(uint8_t *buf, size_t cap, uint64_t id), vcall *v)
{
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__RequestEnvelope *env;
    Authd__V1__VerifyRequest *got;
    static uint8_t buf[65536];
    size_t off = 0, n;
    struct timespec until;
    frame f[1];

    memset(v, 0, sizeof(*v));
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    req.access_token = "tok";
    assert_int_equal(authd_client_verify_async(c, &req, verify_cb, v), AUTHD_OK);
    peer_frames(p, f, 1);
    env = authd__v1__request_envelope__unpack(NULL, f[0].len, f[0].body);
    assert_non_null(env);
    assert_string_equal(env->method, "/authd.v1.Auth/Verify");
    assert_true(env->request_id != 0);
    got = authd__v1__verify_request__unpack(NULL, env->body.len, env->body.data);
    assert_non_null(got);
    assert_string_equal(got->access_token, "tok");
    authd__v1__verify_request__free_unpacked(got, NULL);
    n = build(buf + 12, sizeof(buf) - 12, env->request_id);
    put64(buf, 4 + (uint64_t)n);
    put32(buf + 8, f[0].id);
    off = 12 + n;
    send_all(p->fd, buf, off);
    authd__v1__request_envelope__free_unpacked(env, NULL);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&v->mu);
    while (!v->done && pthread_cond_timedwait(&v->cv, &v->mu, &until) == 0) { }
    assert_true(v->done);
    pthread_mutex_unlock(&v->mu);
    pthread_cond_destroy(&v->cv);
    pthread_mutex_destroy(&v->mu);
}

/* pack_ok: an OK envelope with nroles roles (protobuf-c's canonical packing). */
static size_t pack_ok(uint8_t *buf, size_t cap, uint64_t id, size_t nroles)
{
    Authd__V1__ReplyEnvelope rep = AUTHD__V1__REPLY_ENVELOPE__INIT;
    Authd__V1__VerifyResponse vr = AUTHD__V1__VERIFY_RESPONSE__INIT;
    static uint8_t body[60000];
    char *roles[2000];
    size_t n;

    assert_true(nroles <= 2000);
    for (size_t i = 0; i < nroles; i++) {
        roles[i] = "role-with-a-long-name";
    }
    vr.user_id = "0123456789abcdef0123456789abcdef";
    vr.username = "alice";
    vr.roles = roles;
    vr.n_roles = nroles;
    vr.expires_at = 1700000000;
    assert_true(authd__v1__verify_response__get_packed_size(&vr) <= sizeof(body));
    rep.body.len = authd__v1__verify_response__pack(&vr, body);
    rep.body.data = body;
    rep.request_id = id;
    n = authd__v1__reply_envelope__get_packed_size(&rep);
    assert_true(n <= cap);
    return authd__v1__reply_envelope__pack(&rep, buf);
}

static size_t reply_ok(uint8_t *buf, size_t cap, uint64_t id)
{
    return pack_ok(buf, cap, id, 2);
}

/* 2,000 roles: a body of ~46 KB, lengths of three varint bytes. */
static size_t reply_ok_large(uint8_t *buf, size_t cap, uint64_t id)
{
    return pack_ok(buf, cap, id, 2000);
}

/* The same OK reply, fields reversed, code 0 written out, an unknown field. */
static size_t reply_ok_reordered(uint8_t *buf, size_t cap, uint64_t id)
{
    uint8_t tmp[4096];
    Authd__V1__ReplyEnvelope *rep;
    size_t n = pack_ok(tmp, sizeof(tmp), id, 2), off = 0;

    rep = authd__v1__reply_envelope__unpack(NULL, n, tmp);
    assert_non_null(rep);
    assert_true(rep->body.len < 128 && 3 + rep->body.len + 14 <= cap);
    buf[off++] = 0x22; /* body, field 4 */
    buf[off++] = (uint8_t)rep->body.len;
    memcpy(buf + off, rep->body.data, rep->body.len);
    off += rep->body.len;
    buf[off++] = 0x78; /* field 15, varint: unknown */
    buf[off++] = 0x07;
    buf[off++] = 0x18; /* request_id, field 3 */
    for (uint64_t v = id;; v >>= 7) {
        buf[off++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
        if (v < 0x80) {
            break;
        }
    }
    buf[off++] = 0x08; /* code OK, field 1 */
    buf[off++] = 0x00;
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return off;
}

/* An error whose message holds control characters and a NUL. */
static size_t reply_error(uint8_t *buf, size_t cap, uint64_t id)
{
    static const char msg[] = "token\texpired\0hidden";
    Authd__V1__ReplyEnvelope rep = AUTHD__V1__REPLY_ENVELOPE__INIT;
    size_t off;

    rep.code = AUTHD__V1__CODE__UNAUTHENTICATED;
    rep.request_id = id;
    rep.reason = "EXPIRED";
    off = authd__v1__reply_envelope__pack(&rep, buf);
    assert_true(off + 2 + sizeof(msg) <= cap);
    /* message (field 2) goes between code (1) and request_id (3): canonical. */
    memmove(buf + 2 + 2 + sizeof(msg) - 1, buf + 2, off - 2);
    buf[2] = 0x12;
    buf[3] = (uint8_t)(sizeof(msg) - 1);
    memcpy(buf + 4, msg, sizeof(msg) - 1);
    return off + 2 + sizeof(msg) - 1;
}

static size_t reply_wrong_id(uint8_t *buf, size_t cap, uint64_t id)
{
    return pack_ok(buf, cap, id + 1, 2);
}

/* A body length that runs past the end of the envelope. */
static size_t reply_truncated(uint8_t *buf, size_t cap, uint64_t id)
{
    size_t n = pack_ok(buf, cap, id, 2);

    return n - 1;
}

/* A well-formed envelope around a body that is not a VerifyResponse. */
static size_t reply_bad_body(uint8_t *buf, size_t cap, uint64_t id)
{
    Authd__V1__ReplyEnvelope rep = AUTHD__V1__REPLY_ENVELOPE__INIT;
    static uint8_t body[] = { 0x0a, 0x10, 'x' }; /* user_id: 16 bytes, 1 there */

    (void)cap;
    rep.request_id = id;
    rep.body.data = body;
    rep.body.len = sizeof(body);
    return authd__v1__reply_envelope__pack(&rep, buf);
}

/*
** Reply envelopes, canonical (read in place) or not (protobuf-c), reach the
** caller the same way; malformed ones fail INTERNAL/TRANSPORT and the
** connection stays up.
*/
static void wire_envelope_replies(void **state)
{
    peer p;
    authd_client *c;
    vcall v;
    int fd;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 5000, 0);
    fd = p.fd;

    verify_with_reply(c, &p, reply_ok, &v);
    assert_int_equal(v.code, AUTHD_OK);
    assert_string_equal(v.username, "alice");
    assert_int_equal(v.nroles, 2);

    verify_with_reply(c, &p, reply_ok_large, &v);
    assert_int_equal(v.code, AUTHD_OK);
    assert_int_equal(v.nroles, 2000);

    verify_with_reply(c, &p, reply_ok_reordered, &v);
    assert_int_equal(v.code, AUTHD_OK);
    assert_string_equal(v.username, "alice");
    assert_int_equal(v.nroles, 2);

    verify_with_reply(c, &p, reply_error, &v);
    assert_int_equal(v.code, AUTHD_UNAUTHENTICATED);
    assert_string_equal(v.st.message, "token?expired");
    assert_string_equal(v.st.reason, "EXPIRED");

    verify_with_reply(c, &p, reply_wrong_id, &v);
    assert_int_equal(v.code, AUTHD_INTERNAL);
    assert_string_equal(v.st.reason, AUTHD_REASON_TRANSPORT);
    assert_non_null(strstr(v.st.message, "carries request id"));

    verify_with_reply(c, &p, reply_truncated, &v);
    assert_int_equal(v.code, AUTHD_INTERNAL);
    assert_string_equal(v.st.reason, AUTHD_REASON_TRANSPORT);
    assert_non_null(strstr(v.st.message, "unparsable reply envelope"));

    verify_with_reply(c, &p, reply_bad_body, &v);
    assert_int_equal(v.code, AUTHD_INTERNAL);
    assert_string_equal(v.st.reason, AUTHD_REASON_TRANSPORT);
    assert_non_null(strstr(v.st.message, "unparsable authd.v1.VerifyResponse"));

    /* Still the first connection: none of these dropped it. */
    assert_int_equal(p.fd, fd);
    verify_with_reply(c, &p, reply_ok, &v);
    assert_int_equal(v.code, AUTHD_OK);
    authd_client_close(c);
    peer_close(&p);
}

/*
** close completes every call in flight (CANCELLED) before it returns, and
** refuses the calls their callbacks try to start.
*/
static void wire_close_with_calls_in_flight(void **state)
{
    enum { N = 1000 };
    static frame f[N];
    peer p;
    authd_client *c;
    results *r;

    (void)state;
    peer_listen(&p);
    c = open_on(&p, 20000, 0);
    r = results_new(c);
    for (int i = 0; i < N; i++) {
        r->chain_left[i] = 1;
        assert_int_equal(start_raw(r, i, "pending"), AUTHD_OK);
    }
    peer_frames(&p, f, N);
    authd_client_close(c);
    /* No waiting: close has run every callback. */
    assert_int_equal(done_now(r), N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r->calls[i], 1);
        assert_int_equal(r->codes[i], AUTHD_CANCELLED);
        assert_string_equal(r->reasons[i], AUTHD_REASON_CLIENT);
    }
    assert_int_equal(r->reissue_failed, N);
    results_free(r);
    peer_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wire_frame_layout),
        cmocka_unit_test(wire_replies_out_of_order),
        cmocka_unit_test(wire_unknown_ids_are_dropped),
        cmocka_unit_test(wire_late_reply_is_dropped),
        cmocka_unit_test(wire_bad_frames_end_the_connection),
        cmocka_unit_test(wire_open_checks_the_peer),
        cmocka_unit_test(wire_open_is_bounded_by_the_timeout),
        cmocka_unit_test(wire_lost_vs_parked_calls),
        cmocka_unit_test(wire_parked_call_times_out_unavailable),
        cmocka_unit_test(wire_many_calls_in_flight),
        cmocka_unit_test(wire_many_calls_expire),
        cmocka_unit_test(wire_callbacks_batch_their_calls),
        cmocka_unit_test(wire_envelope_replies),
        cmocka_unit_test(wire_close_with_calls_in_flight),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
