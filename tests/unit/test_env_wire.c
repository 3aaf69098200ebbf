/*
 * test_env_wire.c — the server's reply-envelope writer (src/env_wire.c)
 * against protobuf-c: for every combination of present and absent fields,
 * of varint widths (one to ten bytes, negative codes) and of lengths that
 * need one, two and three length bytes, the bytes must equal
 * authd__v1__reply_envelope__pack's, and protobuf-c must read back the
 * same values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "authd/v1/envelope.pb-c.h"
#include "env_wire.h"

static void check(int32_t code, const char *msg, uint64_t rid, size_t body_len, const char *reason)
{
    static uint8_t body[70000], ours[80000], theirs[80000];
    Authd__V1__ReplyEnvelope env = AUTHD__V1__REPLY_ENVELOPE__INIT;
    authd_reply_env e = { code, msg, strlen(msg), rid, body, body_len, reason, strlen(reason) };

    for (size_t i = 0; i < body_len; i++)
        body[i] = (uint8_t)(i * 7 + 1);
    env.code = (Authd__V1__Code)code;
    env.message = (char *)msg;
    env.request_id = rid;
    env.body.data = body;
    env.body.len = body_len;
    env.reason = (char *)reason;

    size_t n = authd_reply_env_len(&e);
    assert_int_equal(n, authd__v1__reply_envelope__get_packed_size(&env));
    memset(ours, 0xee, sizeof ours);
    assert_ptr_equal(authd_reply_env_put(ours, &e), ours + n);
    assert_int_equal(ours[n], 0xee); /* nothing written past the end */
    assert_int_equal(authd__v1__reply_envelope__pack(&env, theirs), n);
    assert_memory_equal(ours, theirs, n);

    Authd__V1__ReplyEnvelope *back = authd__v1__reply_envelope__unpack(NULL, n, ours);
    assert_non_null(back);
    assert_true((int32_t)back->code == code);
    assert_string_equal(back->message, msg);
    assert_string_equal(back->reason, reason);
    assert_true(back->request_id == rid);
    assert_int_equal(back->body.len, body_len);
    if (body_len > 0)
        assert_memory_equal(back->body.data, body, body_len);
    authd__v1__reply_envelope__free_unpacked(back, NULL);
}

static void test_matches_protobuf_c(void **state)
{
    static const int32_t codes[] = { 0, 1, 16, 127, 128, -1, INT32_MIN, INT32_MAX };
    static const uint64_t ids[] = { 0, 1, 127, 128, 16383, 16384, UINT32_MAX, UINT64_MAX };
    static const size_t bodies[] = { 0, 1, 127, 128, 300, 16383, 16384, 65568 };
    static const char *msgs[] = { "", "token has expired", NULL };
    static const char *reasons[] = { "", "EXPIRED" };
    char long_msg[200];

    (void)state;
    memset(long_msg, 'm', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = '\0';
    for (size_t c = 0; c < sizeof codes / sizeof codes[0]; c++)
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
            for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++)
                for (size_t m = 0; m < 3; m++)
                    for (size_t r = 0; r < 2; r++)
                        check(codes[c], msgs[m] != NULL ? msgs[m] : long_msg, ids[i], bodies[b],
                            reasons[r]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_protobuf_c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
