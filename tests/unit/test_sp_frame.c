/*
 * test_sp_frame.c — SP input framing over byte buffers (src/sp_frame.c):
 * the peer's header, incomplete frames, the exact body limit, oversized
 * announcements seen from the length alone, and malformed backtraces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sp_frame.h"
#include "sp_wire.h"

#define MAX 100

/* frame: hops backtrace words (the last with the top bit) and body bytes. */
static size_t frame(uint8_t *out, unsigned hops, size_t body)
{
    sp_put64(out, 4 * hops + body);
    for (unsigned i = 0; i < hops; i++) {
        memset(out + 8 + 4 * i, 0, 4);
        out[8 + 4 * i] = i + 1 == hops ? 0x80 : 0x01;
    }
    memset(out + 8 + 4 * hops, 'b', body);
    return 8 + 4 * hops + body;
}

static void header(void **state)
{
    uint8_t h[8];
    (void)state;
    sp_header(h, SP_PROTO_REQ0);
    assert_int_equal(sp_frame_header(h, 7), 0);
    assert_int_equal(sp_frame_header(h, 8), 1);
    sp_header(h, SP_PROTO_REP0);
    assert_int_equal(sp_frame_header(h, 8), -1);
    memcpy(h, "GET / HT", 8);
    assert_int_equal(sp_frame_header(h, 8), -1);
}

static void need_more_then_ready(void **state)
{
    uint8_t b[256];
    sp_frame f;
    size_t need = 0;
    (void)state;
    size_t n = frame(b, 1, 10);
    assert_int_equal(sp_frame_next(b, 3, MAX, &f, &need), SP_FRAME_NEED_MORE);
    assert_int_equal(need, 8);
    assert_int_equal(sp_frame_next(b, n - 1, MAX, &f, &need), SP_FRAME_NEED_MORE);
    assert_int_equal(need, n);
    assert_int_equal(sp_frame_next(b, n, MAX, &f, &need), SP_FRAME_READY);
    assert_int_equal(f.frame_len, n);
    assert_int_equal(f.bt_len, 4);
    assert_int_equal(f.body_len, 10);
    assert_ptr_equal(f.body, b + 12);
}

static void body_limit_exact(void **state)
{
    uint8_t b[512];
    (void)state;
    for (unsigned hops = 1; hops <= SP_MAX_HOPS; hops++) {
        size_t n = frame(b, hops, MAX);
        assert_int_equal(sp_frame_next(b, n, MAX, NULL, NULL), SP_FRAME_READY);
        n = frame(b, hops, MAX + 1);
        assert_int_equal(sp_frame_next(b, n, MAX, NULL, NULL), SP_FRAME_TOO_LARGE);
    }
}

static void too_large_from_length(void **state)
{
    uint8_t b[8];
    size_t need = 0;
    (void)state;
    sp_put64(b, MAX + 4 * SP_MAX_HOPS);
    assert_int_equal(sp_frame_next(b, 8, MAX, NULL, &need), SP_FRAME_NEED_MORE);
    assert_int_equal(need, 8 + MAX + 4 * SP_MAX_HOPS);
    sp_put64(b, MAX + 4 * SP_MAX_HOPS + 1);
    assert_int_equal(sp_frame_next(b, 8, MAX, NULL, NULL), SP_FRAME_TOO_LARGE);
    sp_put64(b, UINT64_MAX);
    assert_int_equal(sp_frame_next(b, 8, MAX, NULL, NULL), SP_FRAME_TOO_LARGE);
}

static void bad_backtraces(void **state)
{
    uint8_t b[512];
    (void)state;
    size_t n = frame(b, SP_MAX_HOPS + 1, 0); /* too many hops */
    assert_int_equal(sp_frame_next(b, n, MAX, NULL, NULL), SP_FRAME_BAD);
    n = frame(b, 1, 0);
    b[8] = 0; /* no end word */
    assert_int_equal(sp_frame_next(b, n, MAX, NULL, NULL), SP_FRAME_BAD);
    sp_put64(b, 3); /* shorter than one word */
    assert_int_equal(sp_frame_next(b, 11, MAX, NULL, NULL), SP_FRAME_BAD);
    sp_put64(b, 0);
    assert_int_equal(sp_frame_next(b, 8, MAX, NULL, NULL), SP_FRAME_BAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header),
        cmocka_unit_test(need_more_then_ready),
        cmocka_unit_test(body_limit_exact),
        cmocka_unit_test(too_large_from_length),
        cmocka_unit_test(bad_backtraces),
    };
    return cmocka_run_group_tests_name("unit.sp_frame", tests, NULL, NULL);
}
