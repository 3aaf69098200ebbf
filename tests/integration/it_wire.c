/*
 * it_wire.c — hand-made SP frames on a raw TLS stream (it_raw): bad
 * envelopes, unknown methods, bodies that are not the request message,
 * strings with NUL or invalid UTF-8, oversized frames; and peers that hang
 * up at every stage of connecting. After each, the server must still serve
 * a normal client.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nng/supplemental/tls/tls.h>

#define VERIFY   "/authd.v1.Auth/Verify"
#define REGISTER "/authd.v1.Auth/Register"
#define LOGIN    "/authd.v1.Auth/Login"

/* still_serves: a fresh client can register, log in and verify. */
static void still_serves(const it_server *s, const char *tag)
{
    authd_client *c = it_client(s);
    authd_status st;
    char user[64], email[96], tok[4096];

    snprintf(user, sizeof user, "after-%s", tag);
    snprintf(email, sizeof email, "after-%s@example.com", tag);
    it_register(c, user, email, "still serving password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, user, "still serving password", tok, sizeof tok, NULL);
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
}

static void expect_reply(
    Authd__V1__ReplyEnvelope *rep, uint64_t id, int code, const char *reason, const char *what)
{
    if ((int)rep->code != code || (reason != NULL && strcmp(rep->reason, reason) != 0))
        fail_msg("%s: want %s [%s], got %s [%s]: %s", what, authd_code_str(code),
            reason != NULL ? reason : "*", authd_code_str((int)rep->code), rep->reason,
            rep->message);
    if (id != 0)
        assert_int_equal(rep->request_id, id);
    if (code != AUTHD_OK)
        assert_int_equal(rep->body.len, 0);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
}

/* A valid Verify envelope on the same raw connection still gets a real
 * answer (the connection survived the bad frame). */
static void raw_verify_still_answers(it_raw *r)
{
    Authd__V1__VerifyRequest vr = AUTHD__V1__VERIFY_REQUEST__INIT;
    uint8_t body[64];
    vr.access_token = "x.y.z";
    size_t n = authd__v1__verify_request__pack(&vr, body);
    expect_reply(it_raw_rpc(r, VERIFY, 77, body, n), 77, AUTHD_UNAUTHENTICATED, "MALFORMED",
        "valid Verify after a bad frame");
}

static void wire_garbage_is_bad_envelope(void **state)
{
    it_server *s = it_start(NULL);
    it_raw r;
    static const uint8_t ff[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    static const char http[] = "GET / HTTP/1.1\r\nHost: authd\r\n\r\n";
    const struct {
        const void *p;
        size_t n;
        const char *what;
    } frames[] = {
        { ff, sizeof ff, "0xff bytes" },
        { http, sizeof http - 1, "an HTTP request" },
    };

    it_raw_open(&r, s);
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        uint8_t *reply = NULL;
        size_t rlen = 0;
        int rv = it_raw_call(&r, frames[i].p, frames[i].n, IT_CALL_TIMEOUT_MS, &reply, &rlen);
        if (rv != 0)
            fail_msg("%s: no reply: %s", frames[i].what, nng_strerror(rv));
        Authd__V1__ReplyEnvelope *rep = authd__v1__reply_envelope__unpack(NULL, rlen, reply);
        free(reply);
        assert_non_null(rep);
        expect_reply(rep, 0, AUTHD_INVALID_ARGUMENT, "BAD_ENVELOPE", frames[i].what);
    }
    raw_verify_still_answers(&r);
    it_raw_close(&r);
    still_serves(s, "garbage");
    it_finish(s);
    (void)state;
}

static void wire_unknown_method_is_unimplemented(void **state)
{
    it_server *s = it_start(NULL);
    it_raw r;
    const char *methods[] = { "/authd.v1.Auth/Frobnicate", "/other.v1.Svc/Verify",
        "/authd.v1.Auth/", "/authd.v1.Auth/verify", "Verify", "" };

    it_raw_open(&r, s);
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        expect_reply(it_raw_rpc(&r, methods[i], 1000 + i, NULL, 0), 1000 + i, AUTHD_UNIMPLEMENTED,
            NULL, methods[i]);
    raw_verify_still_answers(&r);
    it_raw_close(&r);
    still_serves(s, "unknown-method");
    it_finish(s);
    (void)state;
}

static void wire_body_not_the_request_message(void **state)
{
    it_server *s = it_start(NULL);
    it_raw r;
    /* field 1 (a string in every request) sent as a varint */
    static const uint8_t wrong_type[] = { 0x08, 0x01 };
    /* field 1, length 5, but only 2 bytes follow */
    static const uint8_t truncated[] = { 0x0a, 0x05, 'a', 'b' };
    /* a wire type (7) that does not exist */
    static const uint8_t bad_wiretype[] = { 0x0f, 0x00 };

    it_raw_open(&r, s);
    expect_reply(it_raw_rpc(&r, VERIFY, 11, wrong_type, sizeof wrong_type), 11,
        AUTHD_INVALID_ARGUMENT, "BAD_REQUEST", "Verify with a varint for a string field");
    expect_reply(it_raw_rpc(&r, REGISTER, 12, truncated, sizeof truncated), 12,
        AUTHD_INVALID_ARGUMENT, NULL, "Register with a truncated field");
    expect_reply(it_raw_rpc(&r, LOGIN, 13, bad_wiretype, sizeof bad_wiretype), 13,
        AUTHD_INVALID_ARGUMENT, NULL, "Login with wire type 7");
    raw_verify_still_answers(&r);
    it_raw_close(&r);
    still_serves(s, "bad-body");
    it_finish(s);
    (void)state;
}

/* put_str appends protobuf field `field` (length-delimited) to buf. */
static size_t put_str(uint8_t *buf, size_t pos, unsigned field, const char *s, size_t n)
{
    assert_true(n < 128);
    buf[pos++] = (uint8_t)(field << 3 | 2);
    buf[pos++] = (uint8_t)n;
    memcpy(buf + pos, s, n);
    return pos + n;
}

static void wire_nul_and_invalid_utf8_are_invalid_encoding(void **state)
{
    it_server *s = it_start(NULL);
    it_raw r;
    uint8_t body[256];
    size_t n;
    static const char nul_name[] = "admin\0x"; /* 7 bytes */
    static const char bad_utf8[] = "adm\xff"
                                   "in";
    static const char email[] = "admin@example.com";
    static const char pw[] = "admins long password";

    it_raw_open(&r, s);
    n = put_str(body, 0, 1, nul_name, 7);
    n = put_str(body, n, 2, email, strlen(email));
    n = put_str(body, n, 3, pw, strlen(pw));
    expect_reply(it_raw_rpc(&r, REGISTER, 21, body, n), 21, AUTHD_INVALID_ARGUMENT,
        "INVALID_ENCODING", "Register username \"admin\\0x\"");

    n = put_str(body, 0, 1, bad_utf8, strlen(bad_utf8));
    n = put_str(body, n, 2, email, strlen(email));
    n = put_str(body, n, 3, pw, strlen(pw));
    expect_reply(it_raw_rpc(&r, REGISTER, 22, body, n), 22, AUTHD_INVALID_ARGUMENT,
        "INVALID_ENCODING", "Register username with invalid UTF-8");

    /* the same check guards every method: a password with a NUL in Login */
    n = put_str(body, 0, 1, "admin", 5);
    n = put_str(body, n, 2, "admins long\0password", 20);
    expect_reply(it_raw_rpc(&r, LOGIN, 23, body, n), 23, AUTHD_INVALID_ARGUMENT, "INVALID_ENCODING",
        "Login password with NUL");
    raw_verify_still_answers(&r);
    it_raw_close(&r);

    /* Nothing was created: "admin" and its email are still free. */
    authd_client *c = it_client(s);
    authd_status st;
    it_register(c, "admin", email, pw, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    still_serves(s, "encoding");
    it_finish(s);
    (void)state;
}

/* With --max-msg-bytes 4096 a 3000-byte frame is answered, a 64 KiB one
 * is dropped: the server closes the connection without a reply. */
static void wire_oversized_frame_is_dropped(void **state)
{
    it_opts o = { .extra = { "--max-msg-bytes", "4096" } };
    it_server *s = it_start(&o);
    it_raw r;
    Authd__V1__VerifyRequest vr = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
    static char big_token[64 * 1024];
    static uint8_t body[70 * 1024], frame[72 * 1024];

    it_raw_open(&r, s);

    /* control: under the limit, answered */
    memset(big_token, 'a', 2900);
    big_token[2900] = '\0';
    vr.access_token = big_token;
    size_t bn = authd__v1__verify_request__pack(&vr, body);
    expect_reply(it_raw_rpc(&r, VERIFY, 31, body, bn), 31, AUTHD_UNAUTHENTICATED, "MALFORMED",
        "3000-byte Verify");

    /* 64 KiB: dropped */
    memset(big_token, 'a', sizeof big_token - 1);
    big_token[sizeof big_token - 1] = '\0';
    bn = authd__v1__verify_request__pack(&vr, body);
    env.method = VERIFY;
    env.request_id = 32;
    env.body.data = body;
    env.body.len = bn;
    size_t fn = authd__v1__request_envelope__pack(&env, frame);
    assert_true(fn > 64 * 1024);
    (void)it_raw_send(&r, frame, fn); /* may fail part-way: the server hangs up */
    uint8_t *reply = NULL;
    size_t rlen = 0;
    int rv = it_raw_recv(&r, IT_CALL_TIMEOUT_MS, &reply, &rlen);
    if (rv == 0) {
        free(reply);
        fail_msg("the 64 KiB frame got a reply");
    }
    if (rv == NNG_ETIMEDOUT)
        fail_msg("the server neither answered nor closed the connection");
    /* any other error is the connection going down (reset, shut, ...) */
    it_raw_close(&r);

    still_serves(s, "oversized");
    it_finish(s);
    (void)state;
}

/* serves_within: a fresh client gets a real Verify answer within ms. */
static bool serves_within(const it_server *s, int ms)
{
    authd_client_options o = { .url = s->url, .ca_file = IT_CA, .timeout_ms = ms };
    authd_client *c = NULL;
    authd_status st;

    if (it_client_try(&o, &c, &st) == AUTHD_OK) {
        it_verify(c, "x.y.z", &st, NULL);
        authd_client_close(c);
    }
    if (st.code == AUTHD_UNAUTHENTICATED && strcmp(st.reason, "MALFORMED") == 0)
        return true;
    print_error("fresh client: %s [%s]: %s\n", authd_code_str(st.code), st.reason, st.message);
    return false;
}

/* tcp_port: the port of a tls+tcp://127.0.0.1:PORT URL. */
static int tcp_port(const char *url)
{
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    return atoi(colon + 1);
}

/* tcp_vanish opens a plain TCP connection, sends data (if any) and goes
 * away: with a FIN, or with a RST when reset is set. */
static void tcp_vanish(int port, const void *data, size_t len, bool reset)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    if (len > 0)
        assert_int_equal(send(fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
    if (reset) {
        struct linger lg = { 1, 0 };
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    }
    close(fd);
}

/* tls_vanish dials a TLS stream (nng runs the TLS handshake with the
 * first I/O), starts sending the first sp_len bytes of sp (an SP header,
 * possibly partial or wrong) and goes away: delay_us after starting (so
 * mid-handshake or mid-header), or once the send is done (delay_us < 0),
 * or, with read_header, after reading the server's header too. */
static void tls_vanish(
    nng_stream_dialer *d, long delay_us, const void *sp, size_t sp_len, bool read_header)
{
    nng_aio *aio = NULL;
    nng_stream *c;
    uint8_t hdr[8];

    /* No cmocka asserts here: this runs on sweeper threads too. A failed
     * dial is not what is under test (serves_within is). */
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        return;
    nng_aio_set_timeout(aio, IT_CALL_TIMEOUT_MS);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    if (nng_aio_result(aio) != 0) {
        nng_aio_free(aio);
        return;
    }
    c = nng_aio_get_output(aio, 0);
    if (sp_len > 0) {
        nng_iov iov = { (void *)sp, sp_len };
        (void)nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(c, aio);
        if (delay_us >= 0) {
            struct timespec ts = { delay_us / 1000000L, delay_us % 1000000L * 1000L };
            nanosleep(&ts, NULL);
            nng_stream_close(c); /* aborts the handshake or the send */
        }
        nng_aio_wait(aio);
        if (read_header && nng_aio_result(aio) == 0) {
            nng_iov in = { hdr, sizeof hdr };
            (void)nng_aio_set_iov(aio, 1, &in);
            nng_stream_recv(c, aio);
            nng_aio_wait(aio);
        }
    }
    nng_stream_close(c);
    nng_stream_free(c);
    nng_aio_free(aio);
}

/* A sweep: one thread of TLS clients that hang up mid-connect, at delays
 * spread over 0 to 1.5 times a whole connect; SWEEPERS threads interleave
 * their delays, so together they cover the connect finely and at once. */
#define SWEEPERS    4
#define SWEEP_STEPS 12

struct sweep {
    nng_stream_dialer *d;
    long connect_us;
    int offset;
};

static void *sweep_run(void *arg)
{
    static const uint8_t sp_req0[8] = { 0, 'S', 'P', 0, 0, 0x30, 0, 0 };
    struct sweep *sw = arg;
    for (int i = 0; i < SWEEP_STEPS; i++) {
        long slot = (long)i * SWEEPERS + sw->offset;
        tls_vanish(sw->d, sw->connect_us * 3 * slot / (2 * SWEEPERS * SWEEP_STEPS), sp_req0,
            sizeof sp_req0, false);
    }
    return NULL;
}

/* Peers that go away at any stage of connecting must cost authd only that
 * connection: port scanners and health checks (connect, close or reset),
 * non-TLS bytes, a partial ClientHello, TLS clients vanishing mid-handshake
 * (hanging up at points spread over a whole connect), and after the
 * handshake with no, half, a wrong or a whole SP header. After each round a
 * fresh client must be served. */
static void wire_clients_vanishing_at_any_stage_do_not_stop_the_listener(void **state)
{
    static const uint8_t hello_part[] = { 0x16, 0x03, 0x01, 0x00, 0xff, 0x01 };
    static const char http[] = "GET / HTTP/1.0\r\n\r\n";
    static const uint8_t sp_req0[8] = { 0, 'S', 'P', 0, 0, 0x30, 0, 0 };
    static const uint8_t sp_pub0[8] = { 0, 'S', 'P', 0, 0, 0x20, 0, 0 };
    it_server *s = it_start(NULL);
    nng_stream_dialer *d = NULL;
    nng_tls_config *tls = NULL;
    int port = tcp_port(s->url);

    assert_int_equal(nng_stream_dialer_alloc(&d, s->url), 0);
    assert_int_equal(nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT), 0);
    assert_int_equal(nng_tls_config_ca_file(tls, IT_CA), 0);
    assert_int_equal(nng_tls_config_server_name(tls, "localhost"), 0);
    assert_int_equal(nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls), 0);
    nng_tls_config_free(tls);

    /* How long a whole connect takes here (TCP, TLS handshake, SP headers),
     * so the hang-ups below land at every point of it, whatever the build. */
    uint64_t t0 = it_mono_ms();
    tls_vanish(d, -1, sp_req0, sizeof sp_req0, true);
    long connect_us = (long)(it_mono_ms() - t0) * 1000 + 1000;

    for (int round = 0; round < 2; round++) {
        tcp_vanish(port, NULL, 0, false);
        tcp_vanish(port, NULL, 0, true);
        tcp_vanish(port, http, sizeof http - 1, false);
        tcp_vanish(port, hello_part, sizeof hello_part, false);
        tcp_vanish(port, hello_part, sizeof hello_part, true);
        tls_vanish(d, -1, NULL, 0, false); /* TCP up, TLS never started */
        struct sweep sw[SWEEPERS];
        pthread_t th[SWEEPERS];
        for (int t = 0; t < SWEEPERS; t++) {
            sw[t] = (struct sweep) { d, connect_us, t };
            assert_int_equal(pthread_create(&th[t], NULL, sweep_run, &sw[t]), 0);
        }
        for (int t = 0; t < SWEEPERS; t++)
            assert_int_equal(pthread_join(th[t], NULL), 0);
        tls_vanish(d, -1, sp_req0, 4, false);
        tls_vanish(d, -1, sp_pub0, sizeof sp_pub0, true);
        tls_vanish(d, -1, sp_req0, sizeof sp_req0, false);
        tls_vanish(d, -1, sp_req0, sizeof sp_req0, true);
        if (!serves_within(s, 3000))
            fail_msg("authd stopped serving new connections after round %d of vanishing peers",
                round + 1);
    }
    nng_stream_dialer_free(d);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(wire_garbage_is_bad_envelope, it_teardown),
        cmocka_unit_test_teardown(wire_unknown_method_is_unimplemented, it_teardown),
        cmocka_unit_test_teardown(wire_body_not_the_request_message, it_teardown),
        cmocka_unit_test_teardown(wire_nul_and_invalid_utf8_are_invalid_encoding, it_teardown),
        cmocka_unit_test_teardown(wire_oversized_frame_is_dropped, it_teardown),
        cmocka_unit_test_teardown(
            wire_clients_vanishing_at_any_stage_do_not_stop_the_listener, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.wire", tests, NULL, NULL);
}
