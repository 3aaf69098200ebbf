/*
 * env_wire.c — see env_wire.h.
 */
#include "env_wire.h"

#include <string.h>

#include "pbwire.h"

/* Tags: field number << 3 | wire type; every field here fits one byte. */
#define TAG_CODE       0x08 /* 1, varint */
#define TAG_MESSAGE    0x12 /* 2, length-delimited */
#define TAG_REQUEST_ID 0x18 /* 3, varint */
#define TAG_BODY       0x22 /* 4, length-delimited */
#define TAG_REASON     0x2a /* 5, length-delimited */

/* An enum is an int32 on the wire: a negative one is sign-extended to ten
 * bytes, as protobuf-c (and every encoder) writes it. */
static uint64_t enum_bits(int32_t v)
{
    return (uint64_t)(int64_t)v;
}

static size_t len_field(size_t n)
{
    return n == 0 ? 0 : 1 + pbw_varint_len(n) + n;
}

size_t authd_reply_env_len(const authd_reply_env *e)
{
    size_t n = 0;

    if (e->code != 0)
        n += 1 + pbw_varint_len(enum_bits(e->code));
    n += len_field(e->message_len);
    if (e->request_id != 0)
        n += 1 + pbw_varint_len(e->request_id);
    n += len_field(e->body_len);
    n += len_field(e->reason_len);
    return n;
}

static uint8_t *put_len(uint8_t *p, uint8_t tag, const void *data, size_t n)
{
    if (n == 0)
        return p;
    *p++ = tag;
    p = pbw_put_varint(p, n);
    memcpy(p, data, n);
    return p + n;
}

uint8_t *authd_reply_env_put(uint8_t *p, const authd_reply_env *e)
{
    if (e->code != 0) {
        *p++ = TAG_CODE;
        p = pbw_put_varint(p, enum_bits(e->code));
    }
    p = put_len(p, TAG_MESSAGE, e->message, e->message_len);
    if (e->request_id != 0) {
        *p++ = TAG_REQUEST_ID;
        p = pbw_put_varint(p, e->request_id);
    }
    p = put_len(p, TAG_BODY, e->body, e->body_len);
    return put_len(p, TAG_REASON, e->reason, e->reason_len);
}
