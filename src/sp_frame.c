/*
 * sp_frame.c — SP req0 input framing over a byte buffer (see sp_frame.h).
 */
#include "sp_frame.h"
#include "sp_wire.h"

int sp_frame_header(const uint8_t *p, size_t n)
{
    if (n < SP_HDR_LEN)
        return 0;
    return sp_header_proto(p) == (int)SP_PROTO_REQ0 ? 1 : -1;
}

sp_frame_status sp_frame_next(
    const uint8_t *p, size_t n, size_t max_body, sp_frame *f, size_t *need)
{
    if (n < SP_LEN_LEN) {
        if (need != NULL)
            *need = SP_LEN_LEN;
        return SP_FRAME_NEED_MORE;
    }
    uint64_t len = sp_get64(p);
    if (len > (uint64_t)max_body + 4 * SP_MAX_HOPS)
        return SP_FRAME_TOO_LARGE;
    if (n - SP_LEN_LEN < len) {
        if (need != NULL)
            *need = SP_LEN_LEN + (size_t)len;
        return SP_FRAME_NEED_MORE;
    }
    /* The backtrace: 4-byte words, the last (the request id) with its top
     * bit set; more hops than SP_MAX_HOPS, or none at all, is a bad peer. */
    const uint8_t *q = p + SP_LEN_LEN;
    size_t bt = 0;
    for (;;) {
        if (bt + 4 > len || bt / 4 >= SP_MAX_HOPS)
            return SP_FRAME_BAD;
        bt += 4;
        if (q[bt - 4] & 0x80)
            break;
    }
    if (len - bt > max_body)
        return SP_FRAME_TOO_LARGE;
    if (f != NULL) {
        f->frame_len = SP_LEN_LEN + (size_t)len;
        f->bt = q;
        f->bt_len = bt;
        f->body = q + bt;
        f->body_len = (size_t)len - bt;
    }
    return SP_FRAME_READY;
}
