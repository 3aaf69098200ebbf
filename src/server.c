/*
 * server.c — the transport: SP req/rep framing over TLS, on epoll + OpenSSL.
 *
 * authd speaks the scalability-protocols wire format that nng req0 clients
 * expect on tls+tcp:// (TLS, then an 8-byte header exchange, then frames of
 * an 8-byte big-endian length, the request's backtrace and the body), so
 * any nng req0 socket is a client. It does not use nng to serve it: nng
 * 1.5.2's rep0 socket stops accepting for good after one peer disconnects
 * during negotiation (nng #1518), and on its stream API every message hops
 * between nng's poller and task-queue threads (two wakeups per direction),
 * which profiling showed to be most of the CPU time of a Verify.
 *
 * Parts (DESIGN.md, "Split the transport by concern"): this file is the
 * server: setting the loops up and what they call back (struct loop_ops:
 * accepting, a connection's start and TLS handshake, the deadline sweep),
 * admission (per source limits, eviction; what a close gives back, through
 * struct conn_ops) and the public API of server.h. The loop itself (epoll,
 * eventfd, the ready and posted queues, the sweep's timer) is net/loop.c;
 * connection I/O and lifetime (buffers and loans, TLS read/write, flush,
 * pause, close, unref) net/conn.c. The TLS context
 * is built in net/tls.c, the listening socket opened in net/listen.c, and
 * the protocol (SP header, frames, envelopes, requests and replies) is
 * protocol/sp_rep.c, reached through the loop's conn_proto (net/conn.h:
 * the connection and loop structures the parts share).
 *
 * Threads: io_threads event loops (default: one per CPU), each an epoll set
 * holding the connections it serves. Loop 0 also holds the one listening
 * socket (bound without SO_REUSEPORT, so a second process on the port
 * fails with "address already in use" instead of silently taking a share
 * of the connections) and deals accepted connections round-robin to the
 * loops through their inboxes (a mutex and the loop's eventfd). A
 * connection belongs to one loop for
 * life: only that loop touches its socket, its TLS state and its buffers,
 * so none of that needs a lock. Requests are dispatched on the loop;
 * Verify answers synchronously and its reply goes straight into the
 * connection's output buffer, which is written once after every frame of
 * a read has been handled — one TLS record and one send for a whole batch.
 * Replies from other threads (the hashing and write pools) are queued on
 * the connection under its mutex and the loop is woken with an eventfd.
 *
 * Limits: a connection has at most max_inflight requests between receipt
 * and their reply entering its output buffer, and at most OUT_HIGH bytes of
 * replies not yet written; past either it is not read until they drain, so
 * a peer that never reads its replies stalls only itself and costs bounded
 * memory. The receive buffer grows with the bytes that arrived (doubling,
 * up to the frame), never to the length a peer announces. Deadlines,
 * checked by each loop's sweep every SWEEP_MS: output that makes no
 * progress for SEND_TIMEOUT_MS, a TLS handshake plus SP header exchange
 * longer than handshake_timeout_ms, a started frame not complete within
 * frame_timeout_ms, and nothing in flight for idle_timeout_ms close the
 * connection. Per source (IPv4 address, IPv6 /64) at most
 * max_conns_per_source connections and max_hs_per_source unfinished
 * handshakes are open (counted by the listening loop in a fixed-size
 * table); over max_handshakes in all, a newcomer closes the oldest
 * unfinished handshake, and at max_conns the oldest unfinished handshake,
 * else the least recently active idle connection, of the loop it is dealt
 * to (see conn_start). Every limit logs
 * when it bites, at most once a second. Every accept or handshake error
 * ends only the connection it concerns.
 *
 * Lifetime: a connection's socket and TLS state are freed by its loop when
 * it closes; the struct itself when its reference count drops to zero.
 * References: the loop ("open"), each request in the service layer, and a
 * place in the loop's queue of connections with posted replies.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "log.h"
#include "metrics.h"
#include "protocol/sp_rep.h"
#include "net/conn.h"
#include "net/listen.h"
#include "net/loop.h"
#include "net/tls.h"
#include "ratelimit.h"
#include "server.h"
#include "sysutil.h"

#define SEND_TIMEOUT_MS 10000
#define IDLE_FREE_MS    1000 /* idle this long: TLS record buffers are freed */
#define ACCEPT_BATCH    32
#define MAX_LOOPS       64
#define EVICT_SCAN      64 /* oldest connections looked at for an idle one at the cap */
#define LIMIT_LOG_NS    (1000u * 1000000u) /* a limit that bites logs at most once a second */
#define HS_LOG_KEYS     1024 /* sources whose handshake-failure lines are rate-limited */

/* A connection accepted by the listening loop for another loop. */
struct handoff {
    struct handoff *next;
    int fd;
    unsigned hops; /* loops that passed it on, finding no room (see conn_start) */
    struct sockaddr_storage sa;
};

/*
 * Per-source counts of open connections and unfinished handshakes: an
 * open-addressing table (linear probing, backward-shift deletion) of
 * entries that exist only while their source has a connection, sized at
 * start to at least twice max_conns slots and kept at most three quarters
 * full, so it never grows and probes stay short. Keys
 * are hashed with SipHash under a per-process random key.
 */
struct srcent {
    authd_source key;
    uint32_t conns; /* 0: free slot */
    uint32_t hs;
};

struct srctab {
    pthread_mutex_t mu;
    struct srcent *slots;
    size_t mask;
    size_t used;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
};

struct authd_server {
    int lfd; /* the first listening socket, until loop 0 takes it */
    struct sockaddr_storage laddr; /* its bound address, for the others */
    socklen_t laddr_len;
    /* The TLS context new connections are made from; swapped by
     * authd_server_reload_tls under ctx_mu. A connection's SSL holds its
     * own reference, so an established connection keeps the context it
     * was made with. */
    pthread_mutex_t ctx_mu;
    SSL_CTX *ctx;
    atomic_uint tls_gen; /* bumped by each reload; the sweeps re-check client certificates */
    bool tls;
    char *tls_cert, *tls_key, *tls_client_ca, *tls_crl; /* for reloads */
    /* What the protocol needs (the loops' proto_arg): the service, the
     * frame size limit, the window, echo, draining. */
    sp_rep_conf rep;
    unsigned max_conns;
    unsigned max_per_source;
    unsigned max_hs_per_source;
    unsigned max_hs; /* unfinished handshakes in all */
    uint64_t hs_ns; /* the TLS + SP handshake deadline */
    uint64_t idle_ns; /* 0: never */
    uint64_t frame_ns;
    bool mtls;
    unsigned nloops;
    /* SSL_free_buffers on a connection holding part of a record is a
     * use-after-free before OpenSSL 3.0.14 (CVE-2024-4741); Debian 12 ships
     * a fixed 3.0, but with an older library idle buffers are kept. */
    bool free_buffers_ok;
    struct loop *loops;
    atomic_uint nconns; /* connections counted against max_conns */
    atomic_uint nhs; /* unfinished handshakes, counted against max_hs */
    atomic_uint nalloc; /* conn structs not yet freed */
    atomic_uint_fast64_t next_conn_id;
    atomic_bool stopping;
    struct srctab src;
    /* Each limit logs when it bites, at most once a second. */
    authd_lograte lr_source, lr_hs, lr_cap, lr_evict, lr_idle, lr_frame, lr_nego, lr_hscap;
    authd_ratelimit *hs_log; /* handshake-failure lines per source */
    atomic_uint_fast64_t hs_log_held; /* handshake-failure lines held back */
    char url[256];
};

static void take_inbox(struct loop *lp, bool start);
static void take_caller(struct conn *c);
static SSL *ssl_new(authd_server *s, unsigned *gen);
static SSL_CTX *ctx_get(authd_server *s, unsigned *gen);

static uint64_t now_ns(void)
{
    return authd_monotonic_ns();
}

static void sockaddr_str(const struct sockaddr_storage *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    snprintf(out, outlen, "unknown");
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        snprintf(out, outlen, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(s6->sin6_port));
    }
}

/*
 * log_limit writes one line when a limit bites, at most once a second per
 * limit, with the count of bites held back since the previous line.
 */
static void log_limit(authd_lograte *lr, const char *event, const char *peer,
    const authd_source *src, const char *why)
{
    uint64_t held = 0;
    authd_logrec r;

    if (!authd_lograte_allow(lr, LIMIT_LOG_NS, now_ns(), &held))
        return;
    if (authd_log_begin(&r, AUTHD_LOG_WARN, event)) {
        char text[AUTHD_SOURCE_TEXT_MAX];
        authd_log_str(&r, "peer", peer);
        if (src != NULL) {
            authd_source_str(src, text);
            authd_log_str(&r, "source", text);
        }
        authd_log_str(&r, "why", why);
        authd_log_u64(&r, "suppressed", held);
        authd_log_end(&r);
    }
}

/* ---- per-source counts ------------------------------------------------------ */

static bool srctab_init(struct srctab *t, unsigned max_conns)
{
    size_t n = 16;

    while (n < 2 * (size_t)max_conns)
        n *= 2;
    if ((t->slots = calloc(n, sizeof *t->slots)) == NULL)
        return false;
    t->mask = n - 1;
    t->used = 0;
    crypto_shorthash_keygen(t->hkey);
    pthread_mutex_init(&t->mu, NULL);
    return true;
}

static void srctab_free(struct srctab *t)
{
    if (t->slots == NULL)
        return;
    free(t->slots);
    t->slots = NULL;
    pthread_mutex_destroy(&t->mu);
}

static size_t srctab_home(const struct srctab *t, const authd_source *k)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, k->key, sizeof k->key, t->hkey);
    return (size_t)h & t->mask;
}

/* srctab_find: k's slot, or the free slot where it would go (under mu). */
static size_t srctab_find(const struct srctab *t, const authd_source *k)
{
    size_t i = srctab_home(t, k);
    while (t->slots[i].conns != 0 && memcmp(&t->slots[i].key, k, sizeof *k) != 0)
        i = (i + 1) & t->mask;
    return i;
}

enum admit { ADMIT_OK, ADMIT_CONNS, ADMIT_HS, ADMIT_FULL };

/* src_admit counts a new connection (and handshake) of source k, unless
 * that would pass either cap. */
static enum admit src_admit(authd_server *s, const authd_source *k)
{
    struct srctab *t = &s->src;
    enum admit a = ADMIT_OK;

    pthread_mutex_lock(&t->mu);
    size_t i = srctab_find(t, k);
    struct srcent *e = &t->slots[i];
    if (e->conns == 0 && t->used >= (t->mask + 1) / 4 * 3) {
        /* 1.5 x max_conns sources: more than can be open, even counting
         * newcomers admitted here but not yet placed by a loop (which
         * then evict an idle connection or are refused). */
        a = ADMIT_FULL;
    } else if (e->conns >= s->max_per_source) {
        a = ADMIT_CONNS;
    } else if (e->hs >= s->max_hs_per_source) {
        a = ADMIT_HS;
    } else {
        if (e->conns == 0) {
            e->key = *k;
            t->used++;
        }
        e->conns++;
        e->hs++;
    }
    pthread_mutex_unlock(&t->mu);
    return a;
}

/* src_release takes back what src_admit counted: one connection, and its
 * handshake when hs. An entry whose count drops to 0 leaves the table,
 * the entries after it shifted back into the gap. */
static void src_release(authd_server *s, const authd_source *k, bool conn, bool hs)
{
    struct srctab *t = &s->src;

    pthread_mutex_lock(&t->mu);
    size_t i = srctab_find(t, k);
    struct srcent *e = &t->slots[i];
    if (e->conns == 0) { /* not counted: cannot happen */
        pthread_mutex_unlock(&t->mu);
        return;
    }
    if (hs && e->hs > 0)
        e->hs--;
    if (conn && --e->conns == 0) {
        t->used--;
        size_t gap = i, j = i;
        for (;;) {
            j = (j + 1) & t->mask;
            if (t->slots[j].conns == 0)
                break;
            size_t home = srctab_home(t, &t->slots[j].key);
            /* Move j into the gap unless its home lies cyclically in (gap, j]. */
            bool stays = gap <= j ? (home > gap && home <= j) : (home > gap || home <= j);
            if (!stays) {
                t->slots[gap] = t->slots[j];
                gap = j;
            }
        }
        memset(&t->slots[gap], 0, sizeof t->slots[gap]);
    }
    pthread_mutex_unlock(&t->mu);
}

/* hs_join: c starts its handshake, last on its loop's list of them. */
static void hs_join(struct conn *c)
{
    struct loop *lp = c->lp;

    c->in_hs = true;
    atomic_fetch_add(&lp->srv->nhs, 1);
    c->hs_next = NULL;
    c->hs_prev = lp->hs_tail;
    if (lp->hs_tail != NULL)
        lp->hs_tail->hs_next = c;
    else
        lp->hs = c;
    lp->hs_tail = c;
}

/* hs_leave: c is no longer an unfinished handshake (done, or closing):
 * off its loop's list and the server's count. Its source's count is the
 * caller's to release. */
static void hs_leave(struct conn *c)
{
    struct loop *lp = c->lp;

    if (!c->in_hs)
        return;
    c->in_hs = false;
    atomic_fetch_sub(&lp->srv->nhs, 1);
    if (c->hs_prev != NULL)
        c->hs_prev->hs_next = c->hs_next;
    else
        lp->hs = c->hs_next;
    if (c->hs_next != NULL)
        c->hs_next->hs_prev = c->hs_prev;
    else
        lp->hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
}

/* conn_hs_done: c finished its handshake: its source may start another. */
void conn_hs_done(struct conn *c)
{
    if (c->in_hs) {
        hs_leave(c);
        src_release(c->lp->srv, &c->source, false, true);
    }
}

/* ---- buffers ---------------------------------------------------------------- */

/* ---- connection lifetime ------------------------------------------------ */

/* ---- what a connection's close and free reach here (conn_ops) ---------------- */

/* srv_conn_closed: c closed; its places in the admission counts (its
 * source's connection and, if unfinished, handshake; the caps) go back. */
static void srv_conn_closed(struct conn *c)
{
    authd_server *s = c->lp->srv;
    bool hs = c->in_hs;
    hs_leave(c);
    src_release(s, &c->source, true, hs);
    atomic_fetch_sub(&s->nconns, 1);
    authd_metrics_conn(AUTHD_MX_CONN_CLOSED);
}

/* srv_conn_freed: a connection struct of lp's server was freed (any
 * thread); authd_server_close waits for the count to reach zero. */
static void srv_conn_freed(struct loop *lp)
{
    atomic_fetch_sub(&lp->srv->nalloc, 1);
}

static const struct conn_ops srv_conn_ops = {
    .closed = srv_conn_closed,
    .freed = srv_conn_freed,
};

/* ---- requests -------------------------------------------------------------- */

/* take_caller keeps the client certificate's identity as c->caller (see
 * authd_tls_caller). */
static void take_caller(struct conn *c)
{
    authd_tls_caller(c->ssl, c->peer, c->caller, sizeof c->caller);
}

/* conn_handshake (loop thread) advances the TLS handshake; once done, our
 * SP header goes out and the peer's is read. */
static void conn_handshake(struct conn *c)
{
    authd_server *s = c->lp->srv;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = ST_HEADER;
        if (s->mtls)
            take_caller(c);
        conn_flush(c);
        conn_read(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    unsigned long err = ERR_peek_error();
    const char *reason = err != 0 ? ERR_reason_error_string(err) : NULL;
    ERR_clear_error();
    if (reason == NULL) {
        /* The peer went away without a TLS error: a port scan or a TCP
         * health check, not a failed negotiation. */
        conn_close(c, AUTHD_LOG_DEBUG, "connection closed during the TLS handshake");
        return;
    }
    /* At info, with the cause (a client offering only old protocols or
     * ciphers says so here), at most a few lines a second per source. */
    if (authd_ratelimit_take(s->hs_log, c->source.key, sizeof c->source.key, 1, now_ns())) {
        authd_logrec rec;
        if (authd_log_begin(&rec, AUTHD_LOG_INFO, "tls_handshake_failed")) {
            authd_log_str(&rec, "peer", c->peer);
            authd_log_str(&rec, "why", reason);
            /* A refused client certificate: say why (revoked, unknown CA,
             * expired CRL ...). */
            long vr = SSL_get_verify_result(c->ssl);
            if (s->mtls && vr != X509_V_OK)
                authd_log_str(&rec, "verify", X509_verify_cert_error_string(vr));
            authd_log_u64(&rec, "suppressed", atomic_exchange(&s->hs_log_held, 0));
            authd_log_end(&rec);
        }
    } else {
        atomic_fetch_add(&s->hs_log_held, 1);
    }
    conn_close(c, AUTHD_LOG_DEBUG, reason);
}

/* ---- accepting --------------------------------------------------------------- */

/* handoff_post hands an accepted connection to loop to (any thread but
 * to's). Returns false (fd still the caller's) when out of memory. */
static bool handoff_post(struct loop *to, int fd, const struct sockaddr_storage *sa, unsigned hops)
{
    struct handoff *h = malloc(sizeof *h);
    bool wake = false;

    if (h == NULL)
        return false;
    h->fd = fd;
    h->hops = hops;
    h->sa = *sa;
    pthread_mutex_lock(&to->mu);
    h->next = to->inbox;
    to->inbox = h;
    if (!to->woken) {
        to->woken = true;
        wake = true;
    }
    pthread_mutex_unlock(&to->mu);
    if (wake)
        loop_wake(to);
    return true;
}

/* refuse closes a connection admitted by src_admit before it started. */
static void refuse(authd_server *s, int fd, const authd_source *src)
{
    close(fd);
    src_release(s, src, true, true);
}

/* evict_hs closes lp's oldest unfinished handshake, logging why (at most
 * once a second per lr). Returns false when lp has none. */
static bool evict_hs(struct loop *lp, authd_lograte *lr, const char *why)
{
    struct conn *c = lp->hs;

    if (c == NULL)
        return false;
    log_limit(lr, "connection_evicted", c->peer, &c->source, why);
    authd_metrics_conn(AUTHD_MX_CONN_EVICTED_HANDSHAKE);
    conn_close(c, AUTHD_LOG_DEBUG, "handshake evicted for a newcomer");
    return true;
}

/* evict_idle closes lp's least recently active connection with nothing in
 * flight and nothing to write (handshakes have our SP header queued, so
 * they are never chosen: evict_hs goes first), looking at most EVICT_SCAN
 * of the oldest. Returns false when there is none. */
static bool evict_idle(struct loop *lp)
{
    int n = 0;

    for (struct conn *c = lp->conns; c != NULL && n < EVICT_SCAN; c = c->next, n++) {
        if (c->inflight == 0 && c->olen == 0) {
            log_limit(&lp->srv->lr_evict, "connection_evicted", c->peer, &c->source,
                "max-connections reached: closed the oldest idle connection");
            authd_metrics_conn(AUTHD_MX_CONN_EVICTED_IDLE);
            conn_close(c, AUTHD_LOG_DEBUG, "evicted for a newcomer at max-connections");
            return true;
        }
    }
    return false;
}

/*
 * conn_start (loop thread) starts serving an accepted connection, already
 * counted for its source by the listening loop. At --max-connections the
 * loop closes its oldest unfinished handshake, else its oldest idle
 * connection, to make room: connections that never finish a handshake
 * (plain TCP, spread over sources) must not push out established
 * clients. A loop with neither passes the newcomer on to the next loop,
 * and after every loop has had a look it is refused. At --max-handshakes
 * the newcomer closes the loop's oldest unfinished handshake, so squatters
 * cannot fill --max-connections either. Each loop decides only about its
 * own connections, so this needs no lock (the handshake count may pass
 * its cap by at most one per loop that has none to close); with
 * connections dealt round-robin the loops hold equal shares, and "oldest
 * on the loop it lands on" is close to the oldest overall.
 */
static void conn_start(struct loop *lp, int fd, const struct sockaddr_storage *sa, unsigned hops)
{
    authd_server *s = lp->srv;
    authd_source src;
    int one = 1;

    (void)authd_source_from_sockaddr((const struct sockaddr *)sa, &src);
    if (atomic_load(&s->rep.draining) || atomic_load(&s->stopping)) {
        refuse(s, fd, &src);
        return;
    }
    unsigned n = atomic_fetch_add(&s->nconns, 1);
    if (n >= s->max_conns) {
        atomic_fetch_sub(&s->nconns, 1);
        bool room = evict_hs(lp, &s->lr_evict,
                        "max-connections reached: closed the oldest unfinished handshake")
            || evict_idle(lp);
        if (room)
            n = atomic_fetch_add(&s->nconns, 1);
        if (!room || n >= s->max_conns) {
            if (room)
                atomic_fetch_sub(&s->nconns, 1);
            if (hops + 1 < s->nloops) {
                struct loop *next = &s->loops[(size_t)(lp - s->loops + 1) % s->nloops];
                if (handoff_post(next, fd, sa, hops + 1))
                    return;
            }
            char peer[AUTHD_PEER_MAX];
            sockaddr_str(sa, peer, sizeof peer);
            log_limit(&s->lr_cap, "connection_refused", peer, &src,
                "max-connections reached and no idle connection to close");
            authd_metrics_conn(AUTHD_MX_CONN_REFUSED_MAX);
            refuse(s, fd, &src);
            return;
        }
    }
    if (atomic_load(&s->nhs) >= s->max_hs)
        evict_hs(
            lp, &s->lr_hscap, "max-handshakes reached: closed the oldest unfinished handshake");
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        atomic_fetch_sub(&s->nconns, 1);
        refuse(s, fd, &src);
        return;
    }
    c->lp = lp;
    c->fd = fd;
    sockaddr_str(sa, c->peer, sizeof c->peer);
    c->source = src;
    c->id = atomic_fetch_add(&s->next_conn_id, 1) + 1;
    authd_metrics_conn(AUTHD_MX_CONN_OPENED); /* conn_close counts it closed */
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->refs, 1);
    atomic_fetch_add(&s->nalloc, 1);

    /* Nagle and delayed ACKs would add ~40 ms to every handshake and to
     * every lone reply. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);

    loop_list_append(lp, c);
    hs_join(c);
    authd_logrec r;
    if (authd_log_begin(&r, AUTHD_LOG_DEBUG, "connection_accepted")) {
        authd_log_str(&r, "peer", c->peer);
        authd_log_u64(&r, "loop", (uint64_t)(lp - s->loops));
        authd_log_end(&r);
    }
    c->last_read = now_ns();
    c->tls_bufs = true;
    c->nego_deadline = c->last_read + s->hs_ns;

    /* The protocol's greeting (our SP header) is the first output; it
     * goes out once TLS is up. */
    if (!lp->proto->open(c)) {
        conn_close(c, AUTHD_LOG_WARN, "out of memory");
        return;
    }
    if (s->tls) {
        if ((c->ssl = ssl_new(s, &c->tls_gen)) == NULL || SSL_set_fd(c->ssl, fd) != 1) {
            ERR_clear_error(); /* see io_read */
            conn_close(c, AUTHD_LOG_WARN, "cannot create TLS state");
            return;
        }
        SSL_set_accept_state(c->ssl);
        c->state = ST_HANDSHAKE;
    } else {
        c->state = ST_HEADER;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
    if (epoll_ctl(lp->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        conn_close(c, AUTHD_LOG_WARN, "epoll_ctl failed");
        return;
    }
    /* The client speaks first in TLS; in plaintext, send our header now. */
    if (c->state == ST_HANDSHAKE)
        conn_handshake(c);
    else
        conn_read(c); /* flushes our header */
}

/*
 * loop_accept (the listening loop) takes new connections: each is checked
 * against its source's caps (over one: closed at once), then dealt to the
 * loops round-robin, through their inboxes (one eventfd write per
 * connection to another loop).
 */
static void loop_accept(struct loop *lp)
{
    authd_server *s = lp->srv;

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(lp->lfd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            authd_metrics_conn(AUTHD_MX_CONN_ACCEPTED);
            authd_source src;
            (void)authd_source_from_sockaddr((const struct sockaddr *)&sa, &src);
            enum admit a = src_admit(s, &src);
            if (a != ADMIT_OK) {
                char peer[AUTHD_PEER_MAX];
                sockaddr_str(&sa, peer, sizeof peer);
                authd_metrics_conn(a == ADMIT_HS ? AUTHD_MX_CONN_REFUSED_HS_PER_SOURCE
                        : a == ADMIT_CONNS       ? AUTHD_MX_CONN_REFUSED_PER_SOURCE
                                                 : AUTHD_MX_CONN_REFUSED_MAX);
                if (a == ADMIT_HS)
                    log_limit(&s->lr_hs, "connection_refused", peer, &src,
                        "max-handshakes-per-source reached");
                else
                    log_limit(&s->lr_source, "connection_refused", peer, &src,
                        a == ADMIT_CONNS ? "max-connections-per-source reached"
                                         : "max-connections reached");
                close(fd);
                continue;
            }
            struct loop *to = &s->loops[lp->rr];
            lp->rr = (lp->rr + 1) % s->nloops;
            if (to == lp)
                conn_start(lp, fd, &sa, 0);
            else if (!handoff_post(to, fd, &sa, 0))
                refuse(s, fd, &src);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED
            || errno == EPROTO)
            return;
        if (errno == EINVAL) { /* shut down for draining */
            epoll_ctl(lp->ep, EPOLL_CTL_DEL, lp->lfd, NULL);
            lp->listening = false;
            return;
        }
        /* Out of descriptors or memory: stop accepting for a moment
         * instead of spinning on a socket that stays readable. */
        authd_log_msg(AUTHD_LOG_WARN, "accept_failed", strerror(errno));
        epoll_ctl(lp->ep, EPOLL_CTL_DEL, lp->lfd, NULL);
        lp->listening = false;
        lp->accept_resume = now_ns() + 100 * 1000000u;
        return;
    }
}

/* take_inbox (loop thread) starts the connections handed to this loop. */
static void take_inbox(struct loop *lp, bool start)
{
    pthread_mutex_lock(&lp->mu);
    struct handoff *h = lp->inbox, *fifo = NULL;
    lp->inbox = NULL;
    pthread_mutex_unlock(&lp->mu);
    while (h != NULL) { /* pushed newest first: start them in accept order */
        struct handoff *next = h->next;
        h->next = fifo;
        fifo = h;
        h = next;
    }
    h = fifo;
    while (h != NULL) {
        struct handoff *next = h->next;
        if (start) {
            conn_start(lp, h->fd, &h->sa, h->hops);
        } else {
            authd_source src;
            (void)authd_source_from_sockaddr((const struct sockaddr *)&h->sa, &src);
            refuse(lp->srv, h->fd, &src);
        }
        free(h);
        h = next;
    }
}

static bool listen_on(struct loop *lp)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->lfd, &ev) != 0)
        return false;
    lp->listening = true;
    lp->accept_resume = 0;
    return true;
}

/* ---- the loop ------------------------------------------------------------------ */

/*
 * client_still_valid checks an established connection's client
 * certificate against a reloaded context's store (client CA, CRL), as the
 * handshake would now: a certificate revoked since (or expired) fails, and
 * the line says why.
 */
static bool client_still_valid(struct conn *c, SSL_CTX *ctx)
{
    X509 *leaf = SSL_get0_peer_certificate(c->ssl);
    X509_STORE_CTX *xc = X509_STORE_CTX_new();
    bool ok = false;
    int err = X509_V_ERR_OUT_OF_MEM;

    if (leaf != NULL && xc != NULL
        && X509_STORE_CTX_init(
               xc, SSL_CTX_get_cert_store(ctx), leaf, SSL_get_peer_cert_chain(c->ssl))
            == 1
        && X509_STORE_CTX_set_default(xc, "ssl_client") == 1) {
        ok = X509_verify_cert(xc) == 1;
        err = X509_STORE_CTX_get_error(xc);
    }
    X509_STORE_CTX_free(xc);
    ERR_clear_error();
    if (!ok) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "tls_client_revalidation_failed")) {
            authd_log_str(&r, "peer", c->peer);
            authd_log_str(&r, "caller", c->caller);
            authd_log_str(&r, "verify", X509_verify_cert_error_string(err));
            authd_log_end(&r);
        }
    }
    return ok;
}

/* sweep closes connections past their deadlines, and after a TLS reload
 * those whose client certificate the new context refuses. */
static void loop_sweep(struct loop *lp, uint64_t now)
{
    authd_server *s = lp->srv;
    struct conn *c = lp->conns;
    unsigned gen = s->mtls ? atomic_load(&s->tls_gen) : 0;
    SSL_CTX *ctx = NULL; /* taken when a connection needs a re-check */

    while (c != NULL) {
        struct conn *next = c->next;
        uint64_t active = c->last_read > c->out_since ? c->last_read : c->out_since;
        if (s->mtls && c->tls_gen != gen && c->ssl != NULL && c->state != ST_HANDSHAKE) {
            if (ctx == NULL)
                ctx = ctx_get(s, &gen);
            if (!client_still_valid(c, ctx)) {
                conn_close(c, AUTHD_LOG_DEBUG, "client certificate refused after a reload");
                c = next;
                continue;
            }
            c->tls_gen = gen;
        }
        if (c->state != ST_OPEN && now > c->nego_deadline) {
            log_limit(&s->lr_nego, "handshake_timeout", c->peer, &c->source,
                "TLS and SP handshake not done in time");
            conn_close(c, AUTHD_LOG_DEBUG, "handshake timeout");
        } else if (c->olen > 0 && now - c->out_since > (uint64_t)SEND_TIMEOUT_MS * 1000000u) {
            conn_close(c, AUTHD_LOG_WARN, "peer did not read its replies");
        } else if (c->frame_start != 0 && !c->paused && now - c->frame_start > s->frame_ns) {
            log_limit(&s->lr_frame, "frame_timeout", c->peer, &c->source,
                "a started frame was not completed within --frame-timeout-ms");
            conn_close(c, AUTHD_LOG_DEBUG, "frame timeout");
        } else if (s->idle_ns != 0 && c->state == ST_OPEN && c->inflight == 0 && c->olen == 0
            && c->rlen == 0 && now - active > s->idle_ns) {
            log_limit(&s->lr_idle, "idle_timeout", c->peer, &c->source,
                "nothing in flight for --idle-timeout-ms");
            conn_close(c, AUTHD_LOG_DEBUG, "idle timeout");
        } else if (s->free_buffers_ok && c->tls_bufs && c->ssl != NULL && c->olen == 0
            && c->inflight == 0 && now - c->last_read > (uint64_t)IDLE_FREE_MS * 1000000u) {
            /* ~34 KiB a connection: 1,000 idle clients should not pin 34 MiB.
             * Fails harmlessly while OpenSSL still holds unread data. */
            if (SSL_free_buffers(c->ssl) == 1)
                c->tls_bufs = false;
        }
        c = next;
    }
    SSL_CTX_free(ctx);
    if (!lp->listening && lp->accept_resume != 0 && now >= lp->accept_resume
        && !atomic_load(&s->rep.draining))
        listen_on(lp);
    lp->next_sweep = now + (uint64_t)SWEEP_MS * 1000000u;
}

#ifdef AUTHD_FAULT_INJECTION
/* Test builds only: with IT_FAULT_WEDGE_LOOP_MS=N in the environment, loop
 * 0 stops turning N ms after its start (it sleeps until the server stops),
 * as a loop stuck in a handler would: the watchdog must stop (it_systemd). */
static void fault_wedge(struct loop *lp, uint64_t now)
{
    static uint64_t wedge_at; /* loop 0 only */
    const char *e;

    if (lp != &lp->srv->loops[0])
        return;
    if (wedge_at == 0) {
        e = getenv("IT_FAULT_WEDGE_LOOP_MS");
        wedge_at = e != NULL && atol(e) > 0 ? now + (uint64_t)atol(e) * 1000000u : UINT64_MAX;
    }
    while (now >= wedge_at && !atomic_load(&lp->srv->stopping)) {
        struct timespec ts = { 0, 50 * 1000000 };
        nanosleep(&ts, NULL);
    }
}
#else
static inline void fault_wedge(struct loop *lp, uint64_t now)
{
    (void)lp;
    (void)now;
}
#endif

bool authd_server_loops_turning(const authd_server *s, unsigned within_ms)
{
    uint64_t now = now_ns(), limit = (uint64_t)within_ms * 1000000u;

    for (unsigned i = 0; i < s->nloops; i++) {
        uint64_t beat = atomic_load_explicit(&s->loops[i].beat, memory_order_relaxed);
        if (now > beat && now - beat > limit)
            return false;
    }
    return true;
}

/* ---- setup ------------------------------------------------------------------------ */

/* ssl_new makes a connection's TLS state from the context in force, and
 * says which generation that is. */
/* ---- what the loops reach here (loop_ops) ----------------------------------- */

/* srv_listener: loop 0's listening socket is readable: accept, or stop
 * listening once draining. */
static void srv_listener(struct loop *lp)
{
    if (atomic_load(&lp->srv->rep.draining)) {
        epoll_ctl(lp->ep, EPOLL_CTL_DEL, lp->lfd, NULL);
        lp->listening = false;
    } else {
        loop_accept(lp);
    }
}

/* srv_sweep: the loop's deadline sweep, and the test builds' wedge. */
static void srv_sweep(struct loop *lp, uint64_t now)
{
    loop_sweep(lp, now);
    fault_wedge(lp, now);
}

static void srv_thread_start(struct loop *lp)
{
    if (!lp->srv->rep.echo)
        authd_service_thread_start(lp->srv->rep.svc);
}

static void srv_thread_stop(struct loop *lp)
{
    if (!lp->srv->rep.echo)
        authd_service_thread_stop(lp->srv->rep.svc);
}

static const struct loop_ops srv_loop_ops = {
    .listener = srv_listener,
    .inbox = take_inbox,
    .handshake = conn_handshake,
    .sweep = srv_sweep,
    .thread_start = srv_thread_start,
    .thread_stop = srv_thread_stop,
};

static SSL *ssl_new(authd_server *s, unsigned *gen)
{
    pthread_mutex_lock(&s->ctx_mu);
    SSL *ssl = SSL_new(s->ctx);
    *gen = atomic_load(&s->tls_gen);
    pthread_mutex_unlock(&s->ctx_mu);
    return ssl;
}

/* ctx_get returns the context in force with a reference (SSL_CTX_free it)
 * and its generation. */
static SSL_CTX *ctx_get(authd_server *s, unsigned *gen)
{
    pthread_mutex_lock(&s->ctx_mu);
    SSL_CTX *ctx = s->ctx;
    SSL_CTX_up_ref(ctx);
    *gen = atomic_load(&s->tls_gen);
    pthread_mutex_unlock(&s->ctx_mu);
    return ctx;
}

authd_code authd_server_reload_tls(authd_server *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = NULL, *old;
    authd_code rc;

    if (!s->tls)
        return AUTHD_UNIMPLEMENTED;
    authd_tls_files f = { s->tls_cert, s->tls_key, s->tls_client_ca, s->tls_crl };
    if ((rc = authd_tls_ctx_new(&f, &ctx, err, errlen)) != AUTHD_OK)
        return rc;
    pthread_mutex_lock(&s->ctx_mu);
    old = s->ctx;
    s->ctx = ctx;
    atomic_fetch_add(&s->tls_gen, 1);
    pthread_mutex_unlock(&s->ctx_mu);
    SSL_CTX_free(old); /* live connections hold their own references */
    return AUTHD_OK;
}

authd_code authd_server_check_tls(const authd_server_options *o, char *err, size_t errlen)
{
    authd_tls_files f = { o->tls_cert, o->tls_key, o->tls_client_ca, o->tls_crl };
    SSL_CTX *ctx = NULL;
    authd_code rc = authd_tls_ctx_new(&f, &ctx, err, errlen);

    SSL_CTX_free(ctx);
    return rc;
}
/* listen_setup opens the listening socket of url (net/listen.c) and
 * keeps its descriptor, bound address and bound URL. */
static authd_code listen_setup(
    authd_server *s, const char *url, char *err, size_t errlen, bool *is_tls)
{
    authd_listener l;
    authd_code rc = authd_listen_open(url, &l, err, errlen);

    if (rc != AUTHD_OK)
        return rc;
    s->lfd = l.fd;
    s->laddr = l.addr;
    s->laddr_len = l.addr_len;
    *is_tls = l.tls;
    snprintf(s->url, sizeof s->url, "%s", l.url);
    return AUTHD_OK;
}

/* dup_opt copies an optional string setting (NULL stays NULL). */
static bool dup_opt(char **out, const char *v)
{
    *out = v != NULL ? strdup(v) : NULL;
    return v == NULL || *out != NULL;
}

authd_code authd_server_start(
    const authd_server_options *o, authd_service *svc, authd_server **out, char *err, size_t errlen)
{
    authd_server *s = NULL;
    authd_code rc;
    bool tls = false;

    if ((s = calloc(1, sizeof *s)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    s->lfd = -1;
    pthread_mutex_init(&s->ctx_mu, NULL);
    s->rep.svc = svc;
    s->rep.max_msg = o->max_msg;
    s->rep.max_inflight = o->max_inflight > 0 ? o->max_inflight : 1;
    s->max_conns = o->max_connections > 0 ? o->max_connections : 1;
    s->max_per_source = o->max_conns_per_source > 0 ? o->max_conns_per_source : s->max_conns;
    s->max_hs_per_source
        = o->max_handshakes_per_source > 0 ? o->max_handshakes_per_source : s->max_per_source;
    /* Default: a quarter of max_conns, but at least 16 (or max_conns) so
     * that a small server's clients may dial a few connections at once. */
    unsigned hs_floor = s->max_conns < 16 ? s->max_conns : 16;
    s->max_hs = o->max_handshakes > 0 ? o->max_handshakes
                                      : (s->max_conns / 4 > hs_floor ? s->max_conns / 4 : hs_floor);
    s->hs_ns = (uint64_t)(o->handshake_timeout_ms > 0 ? o->handshake_timeout_ms : 10000) * 1000000u;
    s->idle_ns = (uint64_t)o->idle_timeout_ms * 1000000u;
    s->frame_ns = (uint64_t)(o->frame_timeout_ms > 0 ? o->frame_timeout_ms : 10000) * 1000000u;
    s->mtls = o->tls_client_ca != NULL;
    s->rep.echo = o->echo;
    authd_ratelimit_options hro = { .rate = 1, .burst = 5, .max_keys = HS_LOG_KEYS };
    if (!srctab_init(&s->src, s->max_conns)
        || authd_ratelimit_create(&hro, &s->hs_log) != AUTHD_OK) {
        snprintf(err, errlen, "out of memory");
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    if ((rc = listen_setup(s, o->url, err, errlen, &tls)) != AUTHD_OK)
        goto out;
    if (!tls && !o->allow_plaintext) {
        snprintf(err, errlen,
            "listen URL %s is plaintext: use tls+tcp:// (or --insecure-plaintext "
            "for local development)",
            o->url);
        rc = AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    if (tls) {
        s->tls = true;
        s->free_buffers_ok = OpenSSL_version_num() >= 0x300000e0L;
        if (!dup_opt(&s->tls_cert, o->tls_cert) || !dup_opt(&s->tls_key, o->tls_key)
            || !dup_opt(&s->tls_client_ca, o->tls_client_ca) || !dup_opt(&s->tls_crl, o->tls_crl)) {
            snprintf(err, errlen, "out of memory");
            rc = AUTHD_RESOURCE_EXHAUSTED;
            goto out;
        }
        authd_tls_files f = { s->tls_cert, s->tls_key, s->tls_client_ca, s->tls_crl };
        if ((rc = authd_tls_ctx_new(&f, &s->ctx, err, errlen)) != AUTHD_OK)
            goto out;
    }

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned nloops = o->io_threads > 0 ? o->io_threads : (ncpu > 0 ? (unsigned)ncpu : 1);
    if (nloops > MAX_LOOPS)
        nloops = MAX_LOOPS;
    rc = AUTHD_INTERNAL;
    if ((s->loops = aligned_alloc(alignof(struct loop), nloops * sizeof *s->loops)) == NULL)
        goto out;
    memset(s->loops, 0, nloops * sizeof *s->loops);
    s->nloops = nloops;
    for (unsigned i = 0; i < s->nloops; i++) {
        struct loop *lp = &s->loops[i];
        lp->srv = s;
        lp->proto = &authd_sp_rep;
        lp->proto_arg = &s->rep;
        lp->max_inflight = s->rep.max_inflight;
        lp->ops = &srv_conn_ops;
        lp->lops = &srv_loop_ops;
        lp->stop = &s->stopping;
        lp->ep = lp->efd = lp->lfd = -1;
        atomic_init(&lp->beat, now_ns()); /* started: counts as a turn */
        pthread_mutex_init(&lp->mu, NULL);
    }
    s->loops[0].lfd = s->lfd;
    s->lfd = -1;
    for (unsigned i = 0; i < s->nloops; i++) {
        struct loop *lp = &s->loops[i];
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = lp };
        if ((lp->ep = epoll_create1(EPOLL_CLOEXEC)) < 0
            || (lp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0
            || epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->efd, &ev) != 0
            || (lp->lfd >= 0 && !listen_on(lp))) {
            snprintf(err, errlen, "event loop: %s", strerror(errno));
            goto out;
        }
    }
    for (unsigned i = 0; i < s->nloops; i++) {
        if (pthread_create(&s->loops[i].thread, NULL, loop_main, &s->loops[i]) != 0) {
            snprintf(err, errlen, "cannot start I/O thread");
            goto out;
        }
        s->loops[i].started = true;
    }
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

unsigned authd_server_io_threads(const authd_server *s)
{
    return s->nloops;
}

/*
 * authd_server_drain: the listening socket stops accepting (accepted
 * connections stay open), requests that arrive from now on are answered
 * UNAVAILABLE, and we wait until every request in flight has been
 * answered and its reply written to the socket.
 */
unsigned authd_server_drain(authd_server *s, int grace_ms)
{
    atomic_store(&s->rep.draining, true);
    for (unsigned i = 0; i < s->nloops; i++) {
        if (s->loops[i].lfd >= 0) /* refuse new connections; wakes the loops */
            shutdown(s->loops[i].lfd, SHUT_RDWR);
    }
    uint64_t deadline = now_ns() + (uint64_t)grace_ms * 1000000u;
    struct timespec ts = { 0, 2 * 1000000 };
    for (;;) {
        unsigned left = 0, unflushed = 0;
        for (unsigned i = 0; i < s->nloops; i++) {
            left += atomic_load(&s->loops[i].inflight);
            unflushed += atomic_load(&s->loops[i].unflushed);
        }
        if ((left == 0 && unflushed == 0) || now_ns() >= deadline)
            return left;
        nanosleep(&ts, NULL);
    }
}

void authd_server_close(authd_server *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stopping, true);
    for (unsigned i = 0; i < s->nloops; i++) {
        struct loop *lp = &s->loops[i];
        if (lp->started) {
            loop_wake(lp);
            pthread_join(lp->thread, NULL);
        }
    }
    /* Connections handed to a loop after it stopped. */
    for (unsigned i = 0; i < s->nloops; i++)
        take_inbox(&s->loops[i], false);
    /* Requests still in the service layer hold their connection struct;
     * the pools feeding them are gone by now (see server.h), so this ends. */
    struct timespec ts = { 0, 1000000 };
    for (int i = 0; i < 10000 && atomic_load(&s->nalloc) > 0; i++)
        nanosleep(&ts, NULL);
    for (unsigned i = 0; i < s->nloops; i++) {
        struct loop *lp = &s->loops[i];
        if (lp->ep >= 0)
            close(lp->ep);
        if (lp->efd >= 0)
            close(lp->efd);
        if (lp->lfd >= 0)
            close(lp->lfd);
        free(lp->rloan); /* wiped each time it was given back */
        free(lp->oloan);
        pthread_mutex_destroy(&lp->mu);
    }
    free(s->loops);
    if (s->lfd >= 0)
        close(s->lfd);
    srctab_free(&s->src);
    authd_ratelimit_destroy(s->hs_log);
    SSL_CTX_free(s->ctx);
    pthread_mutex_destroy(&s->ctx_mu);
    free(s->tls_cert);
    free(s->tls_key);
    free(s->tls_client_ca);
    free(s->tls_crl);
    free(s);
}
