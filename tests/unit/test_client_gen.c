/*
** test_client_gen.c — the generated client wrappers and the client call
** path of libauthd-client, against a fake nng rep0 server on loopback
** (plaintext tcp://, so no certificate files are needed; TLS is covered
** by the integration tests).
**
** The fake server runs in a child process forked before nng starts, as a
** real server would: with both ends in one process they share nng's reaper
** thread, and nng 1.5.2's known nng_close deadlock (nanomsg/nng #1543,
** #1813; fixed in 1.8.0) then showed up about once in 40 runs. It answers
** according to `mode`, set through shared memory: a canned reply, an
** error status, a wrong request id, garbage, silence, a dropped
** connection, an oversized reply. Every case asserts the status the
** client maps it to. The async cases check the callback contract: exactly
** once, off the caller's thread, resp only on OK, closed loops that
** re-issue from the callback, close with calls in flight, raw frames.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include "authd/client_rpc.h"
#include "authd/v1/envelope.pb-c.h"

enum mode {
    MODE_OK,
    MODE_ERROR,
    MODE_BAD_ID,
    MODE_GARBAGE,
    MODE_SILENT,
    MODE_DROP,
    MODE_HUGE,
    MODE_LONG_TEXT,
};

enum { SERVER_UP = 1, SERVER_DOWN, SERVER_EXIT };

/*
** The fake server's control block, shared between the test process and the
** server process: the test sets mode and asks for up/down/exit by bumping
** seq; the server acknowledges in done.
*/
struct server {
    char url[64]; /* where it listens (fixed by the first start) */
    _Atomic int mode;
    _Atomic int requests; /* envelopes received */
    _Atomic int pipes; /* connections set up (SP headers exchanged) */
    char last_method[64]; /* of the last envelope, written before requests++ */
    _Atomic int want;
    _Atomic int seq;
    _Atomic int done;
};

static struct server *srv;
static pid_t srv_pid;

/*
** answer builds the reply to one request: Verify echoes the token as the
** username, so concurrent callers can check they got their own reply.
*/
static nng_msg *answer(struct server *s, const Authd__V1__RequestEnvelope *env)
{
    Authd__V1__ReplyEnvelope rep = AUTHD__V1__REPLY_ENVELOPE__INIT;
    Authd__V1__VerifyResponse vr = AUTHD__V1__VERIFY_RESPONSE__INIT;
    Authd__V1__VerifyRequest *vq = NULL;
    char *roles[] = { "admin", "user" };
    uint8_t *body = NULL;
    nng_msg *m = NULL;
    int mode = atomic_load(&s->mode);

    rep.request_id = env->request_id;
    if (mode == MODE_BAD_ID) {
        rep.request_id++;
    }
    if (mode == MODE_LONG_TEXT) {
        static char text[301];
        for (int i = 0; i < 300; i += 2) { /* 150 x U+00E9, 2 bytes each */
            text[i] = (char)0xC3;
            text[i + 1] = (char)0xA9;
        }
        rep.code = AUTHD__V1__CODE__NOT_FOUND;
        rep.message = text;
        rep.reason = "A_REASON_LONGER_THAN_SIXTY_FOUR_BYTES_IS_CUT_TO_FIT_THE_STATUS_"
                     "FIELD";
    } else if (mode == MODE_ERROR) {
        rep.code = AUTHD__V1__CODE__UNAUTHENTICATED;
        rep.message = "token expired\n\x1b[2J";
        rep.reason = "EXPIRED";
    } else if (strcmp(env->method, "/authd.v1.Auth/Verify") == 0) {
        vq = authd__v1__verify_request__unpack(NULL, env->body.len, env->body.data);
        if (vq == NULL) {
            rep.code = AUTHD__V1__CODE__INVALID_ARGUMENT;
        } else {
            vr.user_id = "0123456789abcdef0123456789abcdef";
            vr.username = vq->access_token;
            vr.roles = roles;
            vr.n_roles = 2;
            vr.session_id = "s1";
            vr.expires_at = 1700000000;
            rep.body.len = authd__v1__verify_response__get_packed_size(&vr);
            body = malloc(rep.body.len + 1);
            authd__v1__verify_response__pack(&vr, body);
            rep.body.data = body;
        }
    } else if (strcmp(env->method, "/authd.v1.Auth/Logout") == 0) {
        rep.code = AUTHD__V1__CODE__OK; /* empty LogoutResponse */
    } else {
        rep.code = AUTHD__V1__CODE__UNIMPLEMENTED;
    }
    if (mode == MODE_HUGE) {
        free(body);
        rep.body.len = 2 * 1024 * 1024;
        body = calloc(1, rep.body.len);
        rep.body.data = body;
    }
    if (mode == MODE_GARBAGE) {
        if (nng_msg_alloc(&m, 3) == 0) {
            memcpy(nng_msg_body(m), "\xff\xff\xff", 3);
        }
    } else if (nng_msg_alloc(&m, authd__v1__reply_envelope__get_packed_size(&rep)) == 0) {
        authd__v1__reply_envelope__pack(&rep, nng_msg_body(m));
    }
    if (vq != NULL) {
        authd__v1__verify_request__free_unpacked(vq, NULL);
    }
    free(body);
    return m;
}

/* Pipes open on the server, so that "down" can drop them. */
static nng_pipe open_pipes[64];
static nng_mtx *pipes_mtx;

static void server_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct server *s = arg;

    if (ev == NNG_PIPE_EV_ADD_POST) {
        atomic_fetch_add(&s->pipes, 1);
    }
    nng_mtx_lock(pipes_mtx);
    for (size_t i = 0; i < 64; i++) {
        if (ev == NNG_PIPE_EV_ADD_POST && nng_pipe_id(open_pipes[i]) <= 0) {
            open_pipes[i] = p;
            break;
        }
        if (ev == NNG_PIPE_EV_REM_POST && nng_pipe_id(open_pipes[i]) == nng_pipe_id(p)) {
            open_pipes[i] = (nng_pipe)NNG_PIPE_INITIALIZER;
            break;
        }
    }
    nng_mtx_unlock(pipes_mtx);
}

/* serve_one receives one request (waiting at most 20 ms) and acts on it. */
static void serve_one(struct server *s, nng_socket sock)
{
    Authd__V1__RequestEnvelope *env;
    nng_msg *m, *r;

    if (nng_recvmsg(sock, &m, 0) != 0) {
        return;
    }
    env = authd__v1__request_envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    snprintf(s->last_method, sizeof(s->last_method), "%s", env != NULL ? env->method : "");
    atomic_fetch_add(&s->requests, 1); /* seq_cst: publishes last_method */
    if (env == NULL || atomic_load(&s->mode) == MODE_SILENT) {
        nng_msg_free(m);
    } else if (atomic_load(&s->mode) == MODE_DROP) {
        nng_pipe_close(nng_msg_get_pipe(m));
        nng_msg_free(m);
    } else {
        nng_msg_free(m);
        if ((r = answer(s, env)) != NULL && nng_sendmsg(sock, r, 0)) {
            nng_msg_free(r);
        }
    }
    if (env != NULL) {
        authd__v1__request_envelope__free_unpacked(env, NULL);
    }
}

/*
** server_main is the server process. "Down" closes the listener and every
** pipe but keeps the socket: nng_close is what can deadlock in 1.5.2, and
** the process simply exits at the end.
*/
static void server_main(struct server *s)
{
    nng_socket sock;
    nng_listener l;
    nng_sockaddr sa;
    bool up = false;
    int seen = 0;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (nng_mtx_alloc(&pipes_mtx) != 0 || nng_rep0_open(&sock) != 0
        || nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 20) != 0
        || nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, server_pipe_event, s) != 0
        || nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, server_pipe_event, s) != 0) {
        _exit(1);
    }
    for (;;) {
        int seq = atomic_load(&s->seq);
        if (seq != seen) {
            int want = atomic_load(&s->want);
            if (up) {
                nng_listener_close(l);
                nng_mtx_lock(pipes_mtx);
                for (size_t i = 0; i < 64; i++) {
                    if (nng_pipe_id(open_pipes[i]) > 0) {
                        nng_pipe_close(open_pipes[i]);
                    }
                }
                nng_mtx_unlock(pipes_mtx);
                up = false;
            }
            if (want == SERVER_EXIT) {
                _exit(0);
            }
            if (want == SERVER_UP) {
                if (nng_listener_create(&l, sock, s->url[0] ? s->url : "tcp://127.0.0.1:0")
                    || nng_listener_start(l, 0) || nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa)) {
                    _exit(1);
                }
                snprintf(s->url, sizeof(s->url), "tcp://127.0.0.1:%u",
                    (unsigned)((sa.s_in.sa_port >> 8) | ((sa.s_in.sa_port & 0xff) << 8)));
                up = true;
            }
            seen = seq;
            atomic_store(&s->done, seq);
        }
        if (up) {
            serve_one(s, sock);
        } else {
            nng_msleep(5);
        }
    }
}

/* server_set asks the server process to go up, down or exit, and waits. */
static void server_set(int want)
{
    int seq;

    atomic_store(&srv->want, want);
    seq = atomic_fetch_add(&srv->seq, 1) + 1;
    for (int i = 0; i < 1000 && atomic_load(&srv->done) != seq; i++) {
        nng_msleep(10);
    }
    assert_int_equal(atomic_load(&srv->done), seq);
}

/*
** wait_at_least polls a counter of the server process until it reaches
** want or ms have passed; returns the elapsed milliseconds, or -1 when the
** deadline passed first. Used instead of fixed sleeps: the test waits for
** the event itself, however slow the machine is.
*/
static int wait_at_least(_Atomic int *v, int want, int ms)
{
    nng_time t0 = nng_clock();

    while (atomic_load(v) < want) {
        if (nng_clock() - t0 > (nng_time)ms) {
            return -1;
        }
        nng_msleep(2);
    }
    return (int)(nng_clock() - t0);
}

/* setup resets the server to a clean, listening, answering state. */
static int setup(void **state)
{
    (void)state;
    if (atomic_load(&srv->want) != SERVER_UP) {
        server_set(SERVER_UP);
    }
    atomic_store(&srv->mode, MODE_OK);
    return 0;
}

static authd_client *client_for(int timeout_ms)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;

    o.url = srv->url;
    o.allow_plaintext = true;
    o.timeout_ms = timeout_ms;
    assert_int_equal(authd_client_open(&o, &c, &st), AUTHD_OK);
    assert_non_null(c);
    return c;
}

/* The generated table is the service descriptor, method for method. */
static void test_table_matches_descriptor(void **state)
{
    const ProtobufCServiceDescriptor *svc = &authd__v1__auth__descriptor;
    char want[128];

    (void)state;
    assert_int_equal(AUTHD_CLIENT_N_METHODS, svc->n_methods);
    for (unsigned i = 0; i < svc->n_methods; i++) {
        snprintf(want, sizeof(want), "/%s/%s", svc->name, svc->methods[i].name);
        assert_string_equal(authd_client_methods[i].name, want);
        assert_ptr_equal(authd_client_methods[i].input, svc->methods[i].input);
        assert_ptr_equal(authd_client_methods[i].output, svc->methods[i].output);
    }
    assert_null(authd_client_methods[svc->n_methods].name);
    assert_null(authd_client_methods[svc->n_methods].input);
    assert_null(authd_client_methods[svc->n_methods].output);
}

/* last_call_was: the server's last envelope named this method. */
static void last_call_was(const char *method)
{
    (void)atomic_load(&srv->requests); /* pairs with the server's increment */
    assert_string_equal(srv->last_method, method);
}

struct any_cb {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void any_cb_fn(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct any_cb *a = arg;

    (void)code;
    (void)st;
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    pthread_mutex_lock(&a->mu);
    a->done++;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* any_cb_wait waits up to 10 s for the n-th callback. */
static void any_cb_wait(struct any_cb *a, int n)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&a->mu);
    while (a->done < n && pthread_cond_timedwait(&a->cv, &a->mu, &until) == 0) { }
    assert_int_equal(a->done, n);
    pthread_mutex_unlock(&a->mu);
}

/*
** Each generated wrapper, sync and async, sends its own method: the server
** records the method of every envelope it receives. (The fake server
** answers Register and Login UNIMPLEMENTED; only the name matters here.)
*/
static void test_wrappers_call_their_method(void **state)
{
    Authd__V1__RegisterRequest rq = AUTHD__V1__REGISTER_REQUEST__INIT;
    Authd__V1__LoginRequest lq = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__LogoutRequest oq = AUTHD__V1__LOGOUT_REQUEST__INIT;
    Authd__V1__VerifyRequest vq = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__RegisterResponse *rr = NULL;
    Authd__V1__LoginResponse *lr = NULL;
    Authd__V1__LogoutResponse * or = NULL;
    Authd__V1__VerifyResponse *vr = NULL;
    struct any_cb a = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
    authd_status st;
    authd_client *c;

    (void)state;
    c = client_for(2000);
    rq.username = "u";
    lq.login = "u";
    oq.access_token = "t";
    vq.access_token = "t";
    assert_int_equal(authd_client_register(c, &rq, &rr, &st), AUTHD_UNIMPLEMENTED);
    last_call_was("/authd.v1.Auth/Register");
    assert_int_equal(authd_client_login(c, &lq, &lr, &st), AUTHD_UNIMPLEMENTED);
    last_call_was("/authd.v1.Auth/Login");
    assert_int_equal(authd_client_logout(c, &oq, & or, &st), AUTHD_OK);
    last_call_was("/authd.v1.Auth/Logout");
    authd__v1__logout_response__free_unpacked(or, NULL);
    assert_int_equal(authd_client_verify(c, &vq, &vr, &st), AUTHD_OK);
    last_call_was("/authd.v1.Auth/Verify");
    authd__v1__verify_response__free_unpacked(vr, NULL);

    assert_int_equal(authd_client_register_async(c, &rq, any_cb_fn, &a), AUTHD_OK);
    any_cb_wait(&a, 1);
    last_call_was("/authd.v1.Auth/Register");
    assert_int_equal(authd_client_login_async(c, &lq, any_cb_fn, &a), AUTHD_OK);
    any_cb_wait(&a, 2);
    last_call_was("/authd.v1.Auth/Login");
    assert_int_equal(authd_client_logout_async(c, &oq, any_cb_fn, &a), AUTHD_OK);
    any_cb_wait(&a, 3);
    last_call_was("/authd.v1.Auth/Logout");
    assert_int_equal(authd_client_verify_async(c, &vq, any_cb_fn, &a), AUTHD_OK);
    any_cb_wait(&a, 4);
    last_call_was("/authd.v1.Auth/Verify");
    authd_client_close(c);
}

static void test_code_str(void **state)
{
    (void)state;
    assert_string_equal(authd_code_str(AUTHD_OK), "OK");
    assert_string_equal(authd_code_str(AUTHD_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(authd_code_str(16), "UNAUTHENTICATED");
    assert_string_equal(authd_code_str(17), "UNKNOWN");
    assert_string_equal(authd_code_str(-1), "UNKNOWN");
    assert_int_equal(AUTHD_UNAVAILABLE, AUTHD__V1__CODE__UNAVAILABLE);
    assert_int_equal(AUTHD_UNAUTHENTICATED, AUTHD__V1__CODE__UNAUTHENTICATED);
}

/* Unusable options fail in open with INVALID_ARGUMENT/CONFIG, *out kept. */
static void test_open_rejects_bad_options(void **state)
{
    static const struct {
        const char *url;
        const char *ca;
        bool plaintext;
        const char *why;
    } cases[] = {
        { NULL, NULL, false, "no url" },
        { "tcp://127.0.0.1:7443", NULL, false, "plaintext not allowed" },
        { "ws://127.0.0.1:7443", NULL, true, "unsupported scheme" },
        { "tls+tcp://127.0.0.1:7443", NULL, false, "TLS without CA" },
        { "tls+tcp://127.0.0.1:7443", "/nonexistent/ca.crt", false, "unreadable CA" },
        { "tls+tcp://10.0.0.1:7443", "/dev/null", false, "CA file not a regular file" },
        { "tcp://127.0.0.1", NULL, true, "no port" },
        { "tcp://127.0.0.1:0", NULL, true, "port 0" },
        { "tcp://127.0.0.1:65536", NULL, true, "port out of range" },
        { "tcp://:7443", NULL, true, "no host" },
        { "tcp://[::1:7443", NULL, true, "unclosed IPv6 bracket" },
        { "tcp://127.0.0.1:7443/path", NULL, true, "a path" },
        { "127.0.0.1:7443", NULL, true, "no scheme" },
    };
    authd_client *sentinel = (authd_client *)&cases;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        authd_client_options o = { 0 };
        authd_client *c = sentinel;
        authd_status st;
        o.url = cases[i].url;
        o.ca_file = cases[i].ca;
        o.allow_plaintext = cases[i].plaintext;
        print_message("case: %s\n", cases[i].why);
        assert_int_equal(authd_client_open(&o, &c, &st), AUTHD_INVALID_ARGUMENT);
        assert_int_equal(st.code, AUTHD_INVALID_ARGUMENT);
        assert_string_equal(st.reason, AUTHD_REASON_CONFIG);
        assert_true(st.message[0] != '\0');
        assert_ptr_equal(c, sentinel);
    }
}

/* Nothing listening: open fails fast with UNAVAILABLE/TRANSPORT. */
static void test_open_refused(void **state)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;

    (void)state;
    server_set(SERVER_DOWN); /* the port is now closed */
    o.url = srv->url;
    o.allow_plaintext = true;
    assert_int_equal(authd_client_open(&o, &c, &st), AUTHD_UNAVAILABLE);
    assert_string_equal(st.reason, AUTHD_REASON_TRANSPORT);
    assert_null(c);
}

static void test_verify_ok(void **state)
{
    authd_client *c;
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    authd_status st;

    (void)state;
    c = client_for(2000);
    req.access_token = "alice";
    assert_int_equal(authd_client_verify(c, &req, &resp, &st), AUTHD_OK);
    assert_int_equal(st.code, AUTHD_OK);
    assert_string_equal(st.message, "");
    assert_string_equal(st.reason, "");
    assert_true(st.request_id != 0);
    assert_non_null(resp);
    assert_string_equal(resp->username, "alice");
    assert_int_equal(resp->n_roles, 2);
    assert_string_equal(resp->roles[1], "user");
    assert_int_equal(resp->expires_at, 1700000000);
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    /* An empty response message is fine too. */
    {
        Authd__V1__LogoutRequest lq = AUTHD__V1__LOGOUT_REQUEST__INIT;
        Authd__V1__LogoutResponse *lr = NULL;
        uint64_t first = st.request_id;
        lq.access_token = "alice";
        assert_int_equal(authd_client_logout(c, &lq, &lr, &st), AUTHD_OK);
        assert_non_null(lr);
        assert_true(st.request_id != first);
        authd__v1__logout_response__free_unpacked(lr, NULL);
    }
    authd_client_close(c);
}

/*
** Each misbehaviour of the server maps to its status; *resp is untouched
** and st is filled even though the call failed.
*/
static void test_failures_map_to_status(void **state)
{
    static const struct {
        enum mode mode;
        int code;
        const char *reason;
    } cases[] = {
        { MODE_ERROR, AUTHD_UNAUTHENTICATED, "EXPIRED" },
        { MODE_BAD_ID, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT },
        { MODE_GARBAGE, AUTHD_INTERNAL, AUTHD_REASON_TRANSPORT },
        { MODE_SILENT, AUTHD_DEADLINE_EXCEEDED, AUTHD_REASON_TRANSPORT },
        { MODE_DROP, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT },
        { MODE_HUGE, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT },
        { MODE_LONG_TEXT, AUTHD_NOT_FOUND,
            "A_REASON_LONGER_THAN_SIXTY_FOUR_BYTES_IS_CUT_TO_FIT_THE_STATUS_" },
    };
    authd_client *c;

    (void)state;
    c = client_for(300);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        Authd__V1__VerifyResponse *resp = (Authd__V1__VerifyResponse *)&cases; /* sentinel */
        authd_status st;
        nng_time t0 = nng_clock(), elapsed;
        int before = atomic_load(&srv->requests);
        int pipes = atomic_load(&srv->pipes);

        atomic_store(&srv->mode, cases[i].mode);
        req.access_token = "t";
        print_message("mode %d\n", (int)cases[i].mode);
        assert_int_equal(authd_client_verify(c, &req, &resp, &st), cases[i].code);
        elapsed = nng_clock() - t0;
        assert_int_equal(st.code, cases[i].code);
        assert_string_equal(st.reason, cases[i].reason);
        assert_ptr_equal(resp, (Authd__V1__VerifyResponse *)&cases);
        if (cases[i].mode == MODE_ERROR) {
            /* The server's message, made safe to print. */
            assert_string_equal(st.message, "token expired??[2J");
        }
        if (cases[i].mode == MODE_LONG_TEXT) {
            /* Cut to fit, but never inside a UTF-8 sequence. */
            size_t n = strlen(st.message);
            assert_int_equal(n, 254);
            assert_int_equal((unsigned char)st.message[n - 2], 0xC3);
            assert_int_equal((unsigned char)st.message[n - 1], 0xA9);
        }
        if (cases[i].mode == MODE_DROP || cases[i].mode == MODE_HUGE) {
            /* The connection is gone; the client redials on its own. */
            if (wait_at_least(&srv->pipes, pipes + 1, 10000) < 0) {
                fail_msg("mode %d: the client did not reconnect within 10 s", (int)cases[i].mode);
            }
        }
        if (cases[i].mode == MODE_DROP) {
            /* Failed at once, not at the deadline, and never resent: a
            ** resend would go out on the new connection before any later
            ** call, so once a probe has its answer the server has seen
            ** exactly the dropped request and the probe. */
            Authd__V1__VerifyRequest probe = AUTHD__V1__VERIFY_REQUEST__INIT;
            Authd__V1__VerifyResponse *pr = NULL;
            assert_true(elapsed < 250);
            atomic_store(&srv->mode, MODE_OK);
            probe.access_token = "probe";
            assert_int_equal(authd_client_verify(c, &probe, &pr, &st), AUTHD_OK);
            assert_string_equal(pr->username, "probe");
            authd__v1__verify_response__free_unpacked(pr, NULL);
            assert_int_equal(atomic_load(&srv->requests), before + 2);
        }
    }
    /* After all that, the connection still works. */
    {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        Authd__V1__VerifyResponse *resp = NULL;
        authd_status st;
        atomic_store(&srv->mode, MODE_OK);
        req.access_token = "again";
        assert_int_equal(authd_client_verify(c, &req, &resp, &st), AUTHD_OK);
        assert_string_equal(resp->username, "again");
        authd__v1__verify_response__free_unpacked(resp, NULL);
    }
    authd_client_close(c);
}

/* Bad arguments to a call are INVALID_ARGUMENT/CLIENT, st optional. */
static void test_call_bad_arguments(void **state)
{
    authd_client *c;
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    authd_status st;

    (void)state;
    c = client_for(1000);
    assert_int_equal(authd_client_verify(c, NULL, &resp, &st), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(st.reason, AUTHD_REASON_CLIENT);
    assert_int_equal(authd_client_verify(c, &req, NULL, NULL), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_client_verify(NULL, &req, &resp, NULL), AUTHD_INVALID_ARGUMENT);
    assert_null(resp);
    /* st == NULL is allowed on a good call as well. */
    req.access_token = "x";
    assert_int_equal(authd_client_verify(c, &req, &resp, NULL), AUTHD_OK);
    authd__v1__verify_response__free_unpacked(resp, NULL);
    authd_client_close(c);
    authd_client_close(NULL);
}

/*
** The server goes away and comes back on the same port: a call while it is
** down fails UNAVAILABLE at its deadline; once it is back, the dialer
** reconnects by itself, without a call asking for it, within the longest
** backoff (2 s, plus slack for a loaded machine), and the next call
** succeeds at its first try.
*/
static void test_reconnects(void **state)
{
    authd_client *c;
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    authd_status st;
    int pipes, waited, code = -1;
    nng_time t0;

    (void)state;
    c = client_for(300);
    req.access_token = "a";
    server_set(SERVER_DOWN);
    /* Until the client has seen the drop, a call may still go out on the
    ** dead connection and time out; after that it fails UNAVAILABLE. */
    t0 = nng_clock();
    while (code != AUTHD_UNAVAILABLE && nng_clock() - t0 < 10000) {
        code = authd_client_verify(c, &req, &resp, &st);
        if (code != AUTHD_UNAVAILABLE && code != AUTHD_DEADLINE_EXCEEDED) {
            fail_msg("a call while the server is down: %s", authd_code_str(code));
        }
    }
    assert_int_equal(code, AUTHD_UNAVAILABLE);
    assert_string_equal(st.reason, AUTHD_REASON_TRANSPORT);
    assert_null(resp);

    pipes = atomic_load(&srv->pipes);
    server_set(SERVER_UP); /* same port */
    waited = wait_at_least(&srv->pipes, pipes + 1, 2000 + 3000);
    if (waited < 0) {
        fail_msg("no reconnect within 5 s of the server's return (backoff is at most 2 s)");
    }
    print_message("reconnected %d ms after the server came back\n", waited);
    assert_int_equal(authd_client_verify(c, &req, &resp, &st), AUTHD_OK);
    authd__v1__verify_response__free_unpacked(resp, NULL);
    authd_client_close(c);
}

#define N_THREADS 8
#define N_CALLS   200

struct worker {
    authd_client *c;
    int id;
    int ok;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char token[32];

    for (int i = 0; i < N_CALLS; i++) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        Authd__V1__VerifyResponse *resp = NULL;
        authd_status st;
        snprintf(token, sizeof(token), "w%d-%d", w->id, i);
        req.access_token = token;
        if (authd_client_verify(w->c, &req, &resp, &st) == AUTHD_OK) {
            w->ok += strcmp(resp->username, token) == 0;
            authd__v1__verify_response__free_unpacked(resp, NULL);
        }
    }
    return NULL;
}

/* Many threads share one client; every reply reaches its own caller. */
static void test_concurrent_calls(void **state)
{
    struct worker w[N_THREADS];
    pthread_t t[N_THREADS];
    authd_client *c;
    int before;

    (void)state;
    c = client_for(10000);
    before = atomic_load(&srv->requests);
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker) { .c = c, .id = i, .ok = 0 };
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].ok, N_CALLS);
    }
    assert_int_equal(atomic_load(&srv->requests) - before, N_THREADS * N_CALLS);
    authd_client_close(c);
}

/* ---- asynchronous calls ----------------------------------------------- */

#define N_ASYNC 64

/* What the callbacks saw, for the test thread to check. */
struct async_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    authd_client *c;
    int done; /* callbacks run */
    int calls[N_ASYNC]; /* callbacks per call: must end at exactly 1 */
    int codes[N_ASYNC];
    char reasons[N_ASYNC][64];
    int matched; /* OK replies that carried the caller's own token */
    int chain_left[N_ASYNC]; /* for the closed loop: calls still to start */
    bool resp_null_on_error;
    bool on_nng_thread; /* never ran on the test thread */
    pthread_t test_thread;
};

struct async_call {
    struct async_state *s;
    int i;
    char token[32];
};

static void async_state_init(struct async_state *s, authd_client *c)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->c = c;
    s->resp_null_on_error = true;
    s->on_nng_thread = true;
    s->test_thread = pthread_self();
}

static void async_state_fini(struct async_state *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

/* wait_done waits up to 10 s for n callbacks in all. */
static void wait_done(struct async_state *s, int n)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&s->mu);
    while (s->done < n && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) { }
    assert_int_equal(s->done, n);
    pthread_mutex_unlock(&s->mu);
}

/* verify_cb records one outcome; with chain_left set, starts the next call. */
static void verify_cb(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct async_call *a = arg;
    struct async_state *s = a->s;
    Authd__V1__VerifyResponse *vr = (Authd__V1__VerifyResponse *)resp;
    bool again = false;

    pthread_mutex_lock(&s->mu);
    s->calls[a->i]++;
    s->codes[a->i] = code;
    snprintf(s->reasons[a->i], sizeof(s->reasons[a->i]), "%s", st->reason);
    if (code != st->code || (code != AUTHD_OK && resp != NULL)) {
        s->resp_null_on_error = false;
    }
    if (pthread_equal(pthread_self(), s->test_thread)) {
        s->on_nng_thread = false;
    }
    if (code == AUTHD_OK && vr != NULL && vr->username != NULL
        && strcmp(vr->username, a->token) == 0) {
        s->matched++;
    }
    if (s->chain_left[a->i] > 0) {
        s->chain_left[a->i]--;
        again = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    if (again) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        req.access_token = a->token;
        if (authd_client_verify_async(s->c, &req, verify_cb, a) == AUTHD_OK) {
            return; /* this call's callback will count it */
        }
        pthread_mutex_lock(&s->mu);
        s->codes[a->i] = -1;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    s->done++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/*
** Many async calls in flight on one client: each callback runs exactly
** once, off the caller's thread, with its own reply; the request is
** borrowed only during the call (the buffer is reused at once).
*/
static void test_async_calls(void **state)
{
    struct async_state s;
    struct async_call a[N_ASYNC];
    char token[32];
    authd_client *c;

    (void)state;
    c = client_for(5000);
    async_state_init(&s, c);
    for (int i = 0; i < N_ASYNC; i++) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        a[i] = (struct async_call) { .s = &s, .i = i };
        snprintf(a[i].token, sizeof(a[i].token), "async-%d", i);
        snprintf(token, sizeof(token), "%s", a[i].token);
        req.access_token = token;
        assert_int_equal(authd_client_verify_async(c, &req, verify_cb, &a[i]), AUTHD_OK);
        memset(token, 'x', sizeof(token) - 1); /* borrowed only during the call */
    }
    wait_done(&s, N_ASYNC);
    for (int i = 0; i < N_ASYNC; i++) {
        assert_int_equal(s.calls[i], 1);
        assert_int_equal(s.codes[i], AUTHD_OK);
    }
    assert_int_equal(s.matched, N_ASYNC);
    assert_true(s.on_nng_thread);
    assert_true(s.resp_null_on_error);
    authd_client_close(c);
    async_state_fini(&s);
}

/* A closed loop: each callback starts the next call on the same client. */
static void test_async_closed_loop(void **state)
{
    enum { CHAINS = 8, PER_CHAIN = 50 };
    struct async_state s;
    struct async_call a[CHAINS];
    authd_client *c;
    int before;

    (void)state;
    c = client_for(5000);
    async_state_init(&s, c);
    before = atomic_load(&srv->requests);
    for (int i = 0; i < CHAINS; i++) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        a[i] = (struct async_call) { .s = &s, .i = i };
        snprintf(a[i].token, sizeof(a[i].token), "chain-%d", i);
        s.chain_left[i] = PER_CHAIN - 1;
        req.access_token = a[i].token;
        assert_int_equal(authd_client_verify_async(c, &req, verify_cb, &a[i]), AUTHD_OK);
    }
    wait_done(&s, CHAINS);
    for (int i = 0; i < CHAINS; i++) {
        assert_int_equal(s.calls[i], PER_CHAIN);
        assert_int_equal(s.codes[i], AUTHD_OK);
        assert_int_equal(s.chain_left[i], 0);
    }
    assert_int_equal(s.matched, CHAINS * PER_CHAIN);
    assert_int_equal(atomic_load(&srv->requests) - before, CHAINS * PER_CHAIN);
    authd_client_close(c);
    async_state_fini(&s);
}

/*
** Failures reach the callback as statuses, with resp NULL; bad arguments
** fail at once and never call back.
*/
static void test_async_failures(void **state)
{
    struct async_state s;
    struct async_call a[2];
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    authd_client *c;

    (void)state;
    c = client_for(300);
    async_state_init(&s, c);
    for (int i = 0; i < 2; i++) {
        a[i] = (struct async_call) { .s = &s, .i = i };
        snprintf(a[i].token, sizeof(a[i].token), "t");
    }
    req.access_token = "t";
    assert_int_equal(authd_client_verify_async(c, NULL, verify_cb, &a[0]), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_client_verify_async(c, &req, NULL, &a[0]), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(
        authd_client_verify_async(NULL, &req, verify_cb, &a[0]), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_client_call_async(c, "Verify", &req.base,
                         &authd__v1__verify_response__descriptor, verify_cb, &a[0]),
        AUTHD_INVALID_ARGUMENT);

    atomic_store(&srv->mode, MODE_ERROR);
    assert_int_equal(authd_client_verify_async(c, &req, verify_cb, &a[0]), AUTHD_OK);
    wait_done(&s, 1);
    assert_int_equal(s.codes[0], AUTHD_UNAUTHENTICATED);
    assert_string_equal(s.reasons[0], "EXPIRED");

    atomic_store(&srv->mode, MODE_SILENT);
    assert_int_equal(authd_client_verify_async(c, &req, verify_cb, &a[1]), AUTHD_OK);
    wait_done(&s, 2);
    assert_int_equal(s.codes[1], AUTHD_DEADLINE_EXCEEDED);
    assert_string_equal(s.reasons[1], AUTHD_REASON_TRANSPORT);

    assert_int_equal(s.calls[0], 1);
    assert_int_equal(s.calls[1], 1);
    assert_true(s.resp_null_on_error);
    authd_client_close(c);
    async_state_fini(&s);
}

/*
** Closing a client with async calls in flight completes each of them,
** exactly once, before close returns; a call started from such a callback
** is refused (CANCELLED) and never calls back.
*/
static void test_async_close_in_flight(void **state)
{
    enum { N = 16 };
    struct async_state s;
    struct async_call a[N];
    authd_client *c;
    int before;

    (void)state;
    c = client_for(10000);
    async_state_init(&s, c);
    atomic_store(&srv->mode, MODE_SILENT);
    before = atomic_load(&srv->requests);
    for (int i = 0; i < N; i++) {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        a[i] = (struct async_call) { .s = &s, .i = i };
        snprintf(a[i].token, sizeof(a[i].token), "c%d", i);
        s.chain_left[i] = 1; /* each callback tries once to start another */
        req.access_token = a[i].token;
        assert_int_equal(authd_client_verify_async(c, &req, verify_cb, &a[i]), AUTHD_OK);
    }
    /* Wait until every call has reached the server (which stays silent),
    ** so that close really finds them in flight, not still queued. */
    if (wait_at_least(&srv->requests, before + N, 10000) < 0) {
        fail_msg("only %d of %d calls reached the server", atomic_load(&srv->requests) - before, N);
    }
    authd_client_close(c);
    /* No waiting: close has run every callback. */
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(s.calls[i], 1);
        assert_int_equal(s.codes[i], -1); /* the re-issue was refused */
    }
    pthread_mutex_unlock(&s.mu);
    async_state_fini(&s);
}

/* raw_cb checks the reply to a hand-built envelope. */
struct raw_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int code;
    uint64_t want_id;
    char username[32];
};

static void raw_cb(void *arg, int code, const authd_status *st, const void *reply, size_t len)
{
    struct raw_state *r = arg;
    Authd__V1__ReplyEnvelope *rep = NULL;
    Authd__V1__VerifyResponse *vr = NULL;

    (void)st;
    if (code == AUTHD_OK && (rep = authd__v1__reply_envelope__unpack(NULL, len, reply)) != NULL
        && rep->request_id == r->want_id && rep->code == AUTHD__V1__CODE__OK) {
        vr = authd__v1__verify_response__unpack(NULL, rep->body.len, rep->body.data);
    }
    pthread_mutex_lock(&r->mu);
    r->code = code;
    if (vr != NULL) {
        snprintf(r->username, sizeof(r->username), "%s", vr->username);
    }
    r->done++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (vr != NULL) {
        authd__v1__verify_response__free_unpacked(vr, NULL);
    }
    if (rep != NULL) {
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
    }
}

/* A raw call carries the caller's bytes both ways, unparsed. */
static void test_async_raw(void **state)
{
    Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
    Authd__V1__VerifyRequest vq = AUTHD__V1__VERIFY_REQUEST__INIT;
    struct raw_state r;
    uint8_t body[64], frame[256];
    struct timespec until;
    authd_client *c;
    size_t n;

    (void)state;
    c = client_for(5000);
    memset(&r, 0, sizeof(r));
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    vq.access_token = "raw-bytes";
    env.method = "/authd.v1.Auth/Verify";
    env.request_id = r.want_id = 4242;
    env.body.len = authd__v1__verify_request__pack(&vq, body);
    env.body.data = body;
    n = authd__v1__request_envelope__pack(&env, frame);
    assert_int_equal(authd_client_call_raw_async(c, NULL, 1, raw_cb, &r), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_client_call_raw_async(c, frame, n, raw_cb, &r), AUTHD_OK);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&r.mu);
    while (r.done == 0 && pthread_cond_timedwait(&r.cv, &r.mu, &until) == 0) { }
    assert_int_equal(r.done, 1);
    assert_int_equal(r.code, AUTHD_OK);
    assert_string_equal(r.username, "raw-bytes");
    pthread_mutex_unlock(&r.mu);
    authd_client_close(c);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_descriptor),
        cmocka_unit_test(test_code_str),
        cmocka_unit_test(test_open_rejects_bad_options),
        cmocka_unit_test_setup(test_open_refused, setup),
        cmocka_unit_test_setup(test_verify_ok, setup),
        cmocka_unit_test_setup(test_wrappers_call_their_method, setup),
        cmocka_unit_test_setup(test_failures_map_to_status, setup),
        cmocka_unit_test_setup(test_call_bad_arguments, setup),
        cmocka_unit_test_setup(test_reconnects, setup),
        cmocka_unit_test_setup(test_concurrent_calls, setup),
        cmocka_unit_test_setup(test_async_calls, setup),
        cmocka_unit_test_setup(test_async_closed_loop, setup),
        cmocka_unit_test_setup(test_async_failures, setup),
        cmocka_unit_test_setup(test_async_close_in_flight, setup),
        cmocka_unit_test_setup(test_async_raw, setup),
    };
    int status, rc;

    /* Fork the server before this process makes any nng call. */
    srv = mmap(NULL, sizeof(*srv), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (srv == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(srv, 0, sizeof(*srv));
    if ((srv_pid = fork()) < 0) {
        perror("fork");
        return 1;
    }
    if (srv_pid == 0) {
        server_main(srv);
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    atomic_store(&srv->want, SERVER_EXIT);
    atomic_fetch_add(&srv->seq, 1);
    if (waitpid(srv_pid, &status, 0) != srv_pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fake server process failed\n");
        rc = rc != 0 ? rc : 1;
    }
    return rc;
}
