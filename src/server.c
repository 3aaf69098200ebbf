/*
 * server.c — nng rep0 over TLS: a pool of contexts, each an aio state machine.
 *
 * Each context loops RECV -> (dispatch) -> SEND -> RECV. A reply may come
 * back synchronously from dispatch (Verify) or later from a worker thread
 * (Register, Login, Logout); either way it is sent on the context's aio.
 * nng runs the callbacks on its small task pool, so nothing here blocks.
 *
 * Shutdown drains: new connections are refused, new requests are answered
 * UNAVAILABLE, and requests in flight finish before the socket closes.
 *
 * Limits: NNG_OPT_RECVMAXSZ bounds frames (nng 1.5.2 defaults to no limit);
 * a pipe-notify hook bounds open connections (nng has no option for it).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "authd/v1/envelope.pb-c.h"
#include "log.h"
#include "server.h"

enum { ST_RECV, ST_BUSY, ST_SEND };

struct sctx {
    authd_server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    int state;
    nng_msg *msg; /* the request frame while BUSY */
    Authd__V1__RequestEnvelope *env; /* its decoded envelope */
    authd_request req;
};

struct authd_server {
    nng_socket sock;
    nng_listener listener;
    nng_tls_config *tls;
    authd_service *svc;
    struct sctx *ctxs;
    unsigned nctx;
    atomic_uint inflight;
    atomic_uint pipes;
    unsigned max_pipes;
    atomic_bool draining;
    char url[256];
};

static void ctx_cb(void *arg);

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

/* peer_str formats the remote address of the pipe a message came on. */
static void peer_str(nng_msg *m, char *out, size_t outlen)
{
    nng_sockaddr sa;
    nng_pipe p = nng_msg_get_pipe(m);
    char ip[INET6_ADDRSTRLEN];

    snprintf(out, outlen, "unknown");
    if (nng_pipe_id(p) < 0 || nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
        return;
    if (sa.s_family == NNG_AF_INET) {
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        snprintf(out, outlen, "%s:%u", ip, ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip);
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(sa.s_in6.sa_port));
    }
}

/* release_request frees the request frame and its envelope, wiping both:
 * they may hold a password. */
static void release_request(struct sctx *c)
{
    if (c->env != NULL) {
        if (c->env->body.data != NULL)
            wipe(c->env->body.data, c->env->body.len);
        authd__v1__request_envelope__free_unpacked(c->env, NULL);
        c->env = NULL;
    }
    if (c->msg != NULL) {
        wipe(nng_msg_body(c->msg), nng_msg_len(c->msg));
        nng_msg_free(c->msg);
        c->msg = NULL;
    }
}

static void recv_next(struct sctx *c)
{
    c->state = ST_RECV;
    nng_ctx_recv(c->ctx, c->aio);
}

/* send_reply packs a reply envelope into a new message and sends it on the
 * context. If even that fails, the request is dropped: the client's
 * timeout tells it. */
static void send_reply(struct sctx *c, const authd_reply *rep)
{
    Authd__V1__ReplyEnvelope env = AUTHD__V1__REPLY_ENVELOPE__INIT;
    nng_msg *m = NULL;

    env.code = (Authd__V1__Code)rep->code;
    env.message = (char *)(rep->message != NULL ? rep->message : "");
    env.reason = (char *)(rep->reason != NULL ? rep->reason : "");
    env.request_id = c->req.request_id;
    env.body.data = (uint8_t *)rep->body;
    env.body.len = rep->body_len;
    size_t n = authd__v1__reply_envelope__get_packed_size(&env);
    release_request(c);
    if (nng_msg_alloc(&m, n) != 0) {
        atomic_fetch_sub(&c->srv->inflight, 1);
        recv_next(c);
        return;
    }
    authd__v1__reply_envelope__pack(&env, nng_msg_body(m));
    c->state = ST_SEND;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

/* request_done is the authd_request's done callback: any thread, once. */
static void request_done(authd_request *req, const authd_reply *rep)
{
    send_reply(req->transport, rep);
}

static void on_request(struct sctx *c, nng_msg *m)
{
    authd_server *s = c->srv;

    c->msg = m;
    memset(&c->req, 0, sizeof c->req);
    c->req.start_ns = authd_monotonic_ns();
    c->req.done = request_done;
    c->req.transport = c;
    atomic_fetch_add(&s->inflight, 1);
    c->state = ST_BUSY;

    c->env = authd__v1__request_envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    peer_str(m, c->req.peer, sizeof c->req.peer);
    if (c->env == NULL) {
        authd_reply rep = { AUTHD_INVALID_ARGUMENT, "request is not a RequestEnvelope",
            "BAD_ENVELOPE", NULL, 0 };
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_INFO, "bad_envelope")) {
            authd_log_str(&r, "peer", c->req.peer);
            authd_log_u64(&r, "bytes", nng_msg_len(m));
            authd_log_end(&r);
        }
        send_reply(c, &rep);
        return;
    }
    c->req.request_id = c->env->request_id;
    c->req.method = c->env->method;
    c->req.method_len = strlen(c->env->method);
    c->req.body = c->env->body.data;
    c->req.body_len = c->env->body.len;
    if (atomic_load(&s->draining)) {
        authd_reply rep
            = { AUTHD_UNAVAILABLE, "server is shutting down", "SHUTTING_DOWN", NULL, 0 };
        send_reply(c, &rep);
        return;
    }
    authd_dispatch(s->svc, &c->req);
}

static void ctx_cb(void *arg)
{
    struct sctx *c = arg;
    int rv = nng_aio_result(c->aio);

    switch (c->state) {
    case ST_RECV:
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
            return; /* shutting down */
        if (rv != 0) {
            recv_next(c);
            return;
        }
        on_request(c, nng_aio_get_msg(c->aio));
        return;
    case ST_SEND:
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(c->aio)); /* peer went away */
        atomic_fetch_sub(&c->srv->inflight, 1);
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
            return;
        recv_next(c);
        return;
    default:
        return;
    }
}

/* pipe_event bounds open connections: a pipe closed in ADD_PRE never
 * reaches the socket and gets no further events (nng_pipe_notify(3)), so
 * the count goes up in ADD_PRE and down in REM_POST. */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    authd_server *s = arg;

    if (ev == NNG_PIPE_EV_ADD_PRE) {
        if (atomic_load(&s->draining)) {
            nng_pipe_close(p); /* shutting down: no new connections */
            return;
        }
        if (atomic_fetch_add(&s->pipes, 1) >= s->max_pipes) {
            atomic_fetch_sub(&s->pipes, 1);
            nng_pipe_close(p);
            authd_log_msg(AUTHD_LOG_WARN, "connection_refused", "max-connections reached");
        }
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        atomic_fetch_sub(&s->pipes, 1);
    }
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

/* bound_url rebuilds the listen URL with the port the listener got. */
static void bound_url(authd_server *s, const char *url)
{
    nng_sockaddr sa;
    const char *scheme_end = strstr(url, "://");
    char ip[INET6_ADDRSTRLEN];

    snprintf(s->url, sizeof s->url, "%s", url);
    if (scheme_end == NULL || nng_listener_get_addr(s->listener, NNG_OPT_LOCADDR, &sa) != 0)
        return;
    int slen = (int)(scheme_end - url);
    if (sa.s_family == NNG_AF_INET) {
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        snprintf(s->url, sizeof s->url, "%.*s://%s:%u", slen, url, ip, ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip);
        snprintf(s->url, sizeof s->url, "%.*s://[%s]:%u", slen, url, ip, ntohs(sa.s_in6.sa_port));
    }
}

authd_code authd_server_start(
    const authd_server_options *o, authd_service *svc, authd_server **out, char *err, size_t errlen)
{
    authd_server *s = NULL;
    authd_code rc = AUTHD_INTERNAL;
    bool tls = strncmp(o->url, "tls+tcp://", 10) == 0;
    bool plain = strncmp(o->url, "tcp://", 6) == 0;
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
    s->max_pipes = o->max_connections;
    s->nctx = o->contexts;
    if ((rv = nng_rep0_open(&s->sock)) != 0) {
        snprintf(err, errlen, "socket: %s", nng_strerror(rv));
        free(s);
        return AUTHD_INTERNAL;
    }
    if ((rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, o->max_msg)) != 0
        || (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_PRE, pipe_event, s)) != 0
        || (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, pipe_event, s)) != 0) {
        snprintf(err, errlen, "socket options: %s", nng_strerror(rv));
        goto out;
    }
    if ((s->ctxs = calloc(s->nctx, sizeof *s->ctxs)) == NULL) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    for (unsigned i = 0; i < s->nctx; i++) {
        struct sctx *c = &s->ctxs[i];
        c->srv = s;
        if ((rv = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0
            || (rv = nng_ctx_open(&c->ctx, s->sock)) != 0) {
            snprintf(err, errlen, "contexts: %s", nng_strerror(rv));
            goto out;
        }
    }
    if ((rv = nng_listener_create(&s->listener, s->sock, o->url)) != 0) {
        snprintf(err, errlen, "listen URL %s: %s", o->url, nng_strerror(rv));
        rc = AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    if (tls) {
        if ((rc = tls_setup(s, o, err, errlen)) != AUTHD_OK)
            goto out;
        rc = AUTHD_INTERNAL;
        if ((rv = nng_listener_set_ptr(s->listener, NNG_OPT_TLS_CONFIG, s->tls)) != 0) {
            snprintf(err, errlen, "tls: %s", nng_strerror(rv));
            goto out;
        }
    }
    if ((rv = nng_listener_start(s->listener, 0)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", o->url, nng_strerror(rv));
        rc = rv == NNG_EADDRINUSE ? AUTHD_UNAVAILABLE : AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    bound_url(s, o->url);
    for (unsigned i = 0; i < s->nctx; i++)
        recv_next(&s->ctxs[i]);
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

unsigned authd_server_drain(authd_server *s, int grace_ms)
{
    /* Not nng_listener_close: it also closes every pipe the listener
     * accepted, and the replies in flight would be lost. New connections
     * are refused in pipe_event instead. */
    atomic_store(&s->draining, true);
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
    nng_close(s->sock);
    if (s->ctxs != NULL) {
        for (unsigned i = 0; i < s->nctx; i++) {
            struct sctx *c = &s->ctxs[i];
            if (c->aio != NULL) {
                nng_aio_stop(c->aio);
                nng_aio_free(c->aio);
            }
            release_request(c);
        }
        free(s->ctxs);
    }
    if (s->tls != NULL)
        nng_tls_config_free(s->tls);
    free(s);
}
