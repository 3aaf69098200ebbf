/*
** test_client_envelope.c — libauthd-client's hand-written envelope codec
** (clients/client_envelope.c) against protobuf-c, the reference it must
** never disagree with.
**
** Cases: the request envelope's bytes equal authd__v1__request_envelope__pack
** at every varint boundary; every reply envelope a protobuf encoder writes
** (what authd sends) takes the fast path with the same values; non-canonical
** but valid envelopes are left to protobuf-c, which accepts them; malformed
** ones are left to protobuf-c, which refuses them; and a differential run
** over 200,000 mutated and random inputs: whatever the fast path accepts,
** protobuf-c accepts with the same values.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authd/v1/envelope.pb-c.h"
#include "client_envelope.h"

static uint32_t rng_state = 0x9E3779B9u;

static uint32_t rnd(void)
{
    uint32_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* ---- request envelopes ------------------------------------------------------ */

/* request_head_matches_protobuf_c: head + body == protobuf-c's packing. */
static void request_head_matches_protobuf_c(void **state)
{
    static const size_t method_lens[] = { 0, 1, 21, 127, 128, 300 };
    static const uint64_t ids[] = { 0, 1, 127, 128, 16383, 16384, 0xFFFFFFFFull, 0x100000000ull,
        0x7FFFFFFFFFFFFFFFull, UINT64_MAX };
    static const size_t body_lens[] = { 0, 1, 127, 128, 16383, 16384, 70000 };
    char *method = malloc(301);
    uint8_t *body = malloc(70000);
    uint8_t *want = malloc(80000), *got = malloc(80000);
    int cases = 0;

    (void)state;
    assert_non_null(method);
    assert_non_null(body);
    assert_non_null(want);
    assert_non_null(got);
    for (size_t i = 0; i < 300; i++) {
        method[i] = (char)('a' + i % 26);
    }
    for (size_t i = 0; i < 70000; i++) {
        body[i] = (uint8_t)rnd();
    }
    for (size_t a = 0; a < sizeof(method_lens) / sizeof(method_lens[0]); a++) {
        for (size_t b = 0; b < sizeof(ids) / sizeof(ids[0]); b++) {
            for (size_t c = 0; c < sizeof(body_lens) / sizeof(body_lens[0]); c++) {
                Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
                size_t ml = method_lens[a], bl = body_lens[c], want_len, head;
                uint8_t *p;
                method[ml] = '\0';
                env.method = method;
                env.request_id = ids[b];
                env.body.data = body;
                env.body.len = bl;
                want_len = authd__v1__request_envelope__pack(&env, want);
                head = authd_cenv_request_head_len(ml, ids[b], bl);
                assert_int_equal(head + bl, want_len);
                p = authd_cenv_request_head(got, method, ml, ids[b], bl);
                assert_ptr_equal(p, got + head);
                memcpy(p, body, bl);
                assert_memory_equal(got, want, want_len);
                method[ml] = (char)('a' + ml % 26);
                cases++;
            }
        }
    }
    assert_int_equal(cases, 6 * 10 * 7);
    free(method);
    free(body);
    free(want);
    free(got);
}

/* request_tail_matches_protobuf_c: head + body + tail (authorization)
 * == protobuf-c's packing, for authorization lengths across the varint
 * boundaries, with and without a body. */
static void request_tail_matches_protobuf_c(void **state)
{
    static const size_t auth_lens[] = { 0, 1, 127, 128, 4096, 16384 };
    static const size_t body_lens[] = { 0, 5, 200 };
    char *auth = malloc(16385);
    uint8_t body[200];
    uint8_t *want = malloc(20000), *got = malloc(20000);
    int cases = 0;

    (void)state;
    assert_non_null(auth);
    assert_non_null(want);
    assert_non_null(got);
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t)rnd();
    }
    for (size_t a = 0; a < sizeof(auth_lens) / sizeof(auth_lens[0]); a++) {
        for (size_t c = 0; c < sizeof(body_lens) / sizeof(body_lens[0]); c++) {
            Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
            size_t al = auth_lens[a], bl = body_lens[c], want_len, head, tail;
            uint8_t *p;
            memset(auth, 'A' + (int)a, al);
            auth[al] = '\0';
            env.method = "/authd.v1.Auth/Me";
            env.request_id = 77;
            env.body.data = body;
            env.body.len = bl;
            env.authorization = auth;
            want_len = authd__v1__request_envelope__pack(&env, want);
            head = authd_cenv_request_head_len(strlen(env.method), 77, bl);
            tail = authd_cenv_request_tail_len(al);
            assert_int_equal(head + bl + tail, want_len);
            p = authd_cenv_request_head(got, env.method, strlen(env.method), 77, bl);
            memcpy(p, body, bl);
            p = authd_cenv_request_tail(p + bl, auth, al);
            assert_ptr_equal(p, got + want_len);
            assert_memory_equal(got, want, want_len);
            cases++;
        }
    }
    assert_int_equal(cases, 6 * 3);
    free(auth);
    free(want);
    free(got);
}

/* ---- reply envelopes: the differential check -------------------------------- */

/*
** agree checks one input: when the fast path takes it, protobuf-c must take
** it too, with the same values (its strings end at a NUL: C strings).
** Returns whether the fast path took it.
*/
static bool agree(const uint8_t *data, size_t len)
{
    Authd__V1__ReplyEnvelope *rep;
    authd_cenv_reply r;
    bool fast = authd_cenv_reply_fast(data, len, &r);

    if (!fast) {
        return false;
    }
    rep = authd__v1__reply_envelope__unpack(NULL, len, data);
    if (rep == NULL) {
        fail_msg("the fast path took %zu bytes protobuf-c refuses", len);
    }
    assert_int_equal(r.code, (int32_t)rep->code);
    assert_true(r.request_id == rep->request_id);
    assert_int_equal(r.body_len, rep->body.len);
    if (r.body_len > 0) {
        assert_memory_equal(r.body, rep->body.data, r.body_len);
    }
    assert_int_equal(
        strnlen(r.message == NULL ? "" : r.message, r.message_len), strlen(rep->message));
    assert_memory_equal(r.message == NULL ? "" : r.message, rep->message, strlen(rep->message));
    assert_int_equal(strnlen(r.reason == NULL ? "" : r.reason, r.reason_len), strlen(rep->reason));
    assert_memory_equal(r.reason == NULL ? "" : r.reason, rep->reason, strlen(rep->reason));
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return true;
}

/* pack_reply packs a reply envelope with protobuf-c into buf (cap 4096). */
static size_t pack_reply(uint8_t *buf, int code, const char *message, uint64_t id,
    const uint8_t *body, size_t body_len, const char *reason)
{
    Authd__V1__ReplyEnvelope rep = AUTHD__V1__REPLY_ENVELOPE__INIT;

    rep.code = (Authd__V1__Code)code;
    rep.message = (char *)message;
    rep.request_id = id;
    rep.body.data = (uint8_t *)body;
    rep.body.len = body_len;
    rep.reason = (char *)reason;
    assert_true(authd__v1__reply_envelope__get_packed_size(&rep) <= 4096);
    return authd__v1__reply_envelope__pack(&rep, buf);
}

/* reply_fast_takes_what_authd_sends: every canonical envelope, fast. */
static void reply_fast_takes_what_authd_sends(void **state)
{
    static const int codes[] = { 0, 1, 3, 8, 13, 16, 127 };
    static const uint64_t ids[] = { 0, 1, 300, 0xFFFFFFFFull, UINT64_MAX };
    static const size_t body_lens[] = { 0, 1, 127, 128, 2000 };
    static const char *texts[] = { "", "token expired", "a\x1b[2Jb" };
    uint8_t body[2000], buf[4096];
    int n = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t)rnd();
    }
    for (size_t a = 0; a < sizeof(codes) / sizeof(codes[0]); a++) {
        for (size_t b = 0; b < sizeof(ids) / sizeof(ids[0]); b++) {
            for (size_t c = 0; c < sizeof(body_lens) / sizeof(body_lens[0]); c++) {
                for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
                    size_t len = pack_reply(
                        buf, codes[a], texts[t], ids[b], body, body_lens[c], texts[2 - t]);
                    assert_true(agree(buf, len));
                    n++;
                }
            }
        }
    }
    assert_int_equal(n, 7 * 5 * 5 * 3);
    assert_true(agree((const uint8_t *)"", 0)); /* all fields absent */
}

/* A hand-written input and whether protobuf-c accepts it. */
struct handmade {
    const char *what;
    const char *bytes;
    size_t len;
    bool valid; /* protobuf-c unpacks it */
};

#define HM(what, lit, valid)                                                                       \
    {                                                                                              \
        what, lit, sizeof(lit) - 1, valid                                                          \
    }

/*
** reply_fast_leaves_the_rest_to_protobuf_c: valid but non-canonical
** envelopes and malformed ones all take the slow path, where protobuf-c
** gives its verdict as before.
*/
static void reply_fast_leaves_the_rest_to_protobuf_c(void **state)
{
    static const struct handmade cases[] = {
        HM("fields out of order", "\x18\x05\x08\x00", true),
        HM("a field twice", "\x18\x05\x18\x06", true),
        HM("an unknown field", "\x18\x05\x30\x01", true),
        HM("a two-byte tag for field 3", "\x98\x00\x05", true),
        HM("code as a two-byte varint", "\x08\x80\x01\x18\x05", true),
        HM("code 128", "\x08\x80\x01", true),
        HM("request id with a 10th byte of 2", "\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02",
            true),
        HM("a five-byte length", "\x22\x80\x80\x80\x80\x00", true),
        HM("body as a varint", "\x20\x05", false),
        HM("code as bytes", "\x0a\x01\x00", false),
        HM("field 0", "\x00\x01", false),
        HM("a truncated varint", "\x18\x80", false),
        HM("an 11-byte varint", "\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", false),
        HM("a length past the end", "\x22\x05\x01\x02", false),
        HM("a tag alone", "\x22", false),
        HM("a group wire type", "\x0b\x0c", false),
        HM("garbage", "\xff\xff\xff", false),
    };
    authd_cenv_reply r;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct handmade *h = &cases[i];
        Authd__V1__ReplyEnvelope *rep
            = authd__v1__reply_envelope__unpack(NULL, h->len, (const uint8_t *)h->bytes);
        if (authd_cenv_reply_fast((const uint8_t *)h->bytes, h->len, &r)) {
            fail_msg("fast path took %s", h->what);
        }
        if ((rep != NULL) != h->valid) {
            fail_msg("protobuf-c %s %s", rep != NULL ? "accepts" : "refuses", h->what);
        }
        authd__v1__reply_envelope__free_unpacked(rep, NULL);
    }
}

/* mutate changes buf[0, *len) at random: flips, stores, inserts, cuts. */
static void mutate(uint8_t *buf, size_t *len, size_t cap)
{
    static const uint8_t interesting[]
        = { 0x00, 0x01, 0x02, 0x08, 0x12, 0x18, 0x22, 0x2A, 0x30, 0x7f, 0x80, 0xff };
    unsigned n = 1 + rnd() % 4;

    for (unsigned k = 0; k < n; k++) {
        size_t at = *len > 0 ? rnd() % *len : 0;
        switch (rnd() % 5) {
        case 0:
            if (*len > 0) {
                buf[at] ^= (uint8_t)(1u << (rnd() % 8));
            }
            break;
        case 1:
            if (*len > 0) {
                buf[at] = interesting[rnd() % sizeof(interesting)];
            }
            break;
        case 2:
            if (*len < cap) {
                memmove(buf + at + 1, buf + at, *len - at);
                buf[at] = interesting[rnd() % sizeof(interesting)];
                (*len)++;
            }
            break;
        case 3:
            if (*len > 0) {
                memmove(buf + at, buf + at + 1, *len - at - 1);
                (*len)--;
            }
            break;
        default:
            *len = at;
            break;
        }
    }
}

/*
** reply_fast_never_disagrees: mutated canonical envelopes and random bytes
** from the envelope's own alphabet. Both outcomes must be common, or the
** run proves little.
*/
static void reply_fast_never_disagrees(void **state)
{
    uint8_t body[64], buf[4200];
    int fast = 0, slow = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t)rnd();
    }
    for (int i = 0; i < 200000; i++) {
        size_t len;
        if (i % 4 != 3) {
            len = pack_reply(buf, (int)(rnd() % 20), rnd() % 2 ? "denied" : "",
                (uint64_t)rnd() << (rnd() % 33), body, rnd() % sizeof(body),
                rnd() % 2 ? "A_REASON" : "");
            mutate(buf, &len, sizeof(buf));
        } else {
            static const uint8_t alphabet[]
                = { 0x00, 0x01, 0x02, 0x05, 0x08, 0x12, 0x18, 0x22, 0x2A, 0x80, 0xff };
            len = rnd() % 24;
            for (size_t k = 0; k < len; k++) {
                buf[k] = alphabet[rnd() % sizeof(alphabet)];
            }
        }
        if (agree(buf, len)) {
            fast++;
        } else {
            slow++;
        }
    }
    assert_true(fast > 20000);
    assert_true(slow > 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_head_matches_protobuf_c),
        cmocka_unit_test(request_tail_matches_protobuf_c),
        cmocka_unit_test(reply_fast_takes_what_authd_sends),
        cmocka_unit_test(reply_fast_leaves_the_rest_to_protobuf_c),
        cmocka_unit_test(reply_fast_never_disagrees),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
