/*
** client_envelope.c — the request envelope written straight into its frame,
** and the canonical reply envelope read in place (see client_envelope.h for
** why, and for the rule that keeps the reader in step with protobuf-c).
**
** Wire format (protobuf): a field is a tag, (field number << 3) | wire type,
** as a varint, then a varint value (wire type 0) or a varint length and that
** many bytes (wire type 2). The envelopes' tags all fit in one byte:
**
**   RequestEnvelope  method 1 (0x0A)  request_id 2 (0x10)  body 3 (0x1A)
**   ReplyEnvelope    code 1 (0x08)    message 2 (0x12)     request_id 3 (0x18)
**                    body 4 (0x22)    reason 5 (0x2A)
*/
#include "client_envelope.h"

#include <string.h>

#include "pbwire.h" /* common/: the varint writer and reader, shared with the server */

#define TAG_REQ_METHOD        0x0A
#define TAG_REQ_ID            0x10
#define TAG_REQ_BODY          0x1A
#define TAG_REQ_AUTHORIZATION 0x22 /* field 4, length-delimited */
#define TAG_REP_CODE          0x08
#define TAG_REP_MSG           0x12
#define TAG_REP_ID            0x18
#define TAG_REP_BODY          0x22
#define TAG_REP_REASON        0x2A

/* authd_cenv_request_head_len: see client_envelope.h. */
size_t authd_cenv_request_head_len(size_t method_len, uint64_t request_id, size_t body_len)
{
    size_t n = 0;

    if (method_len > 0) {
        n += 1 + pbw_varint_len(method_len) + method_len;
    }
    if (request_id != 0) {
        n += 1 + pbw_varint_len(request_id);
    }
    if (body_len > 0) {
        n += 1 + pbw_varint_len(body_len);
    }
    return n;
}

/* authd_cenv_request_head: see client_envelope.h. */
uint8_t *authd_cenv_request_head(
    uint8_t *p, const char *method, size_t method_len, uint64_t request_id, size_t body_len)
{
    if (method_len > 0) {
        *p++ = TAG_REQ_METHOD;
        p = pbw_put_varint(p, method_len);
        memcpy(p, method, method_len);
        p += method_len;
    }
    if (request_id != 0) {
        *p++ = TAG_REQ_ID;
        p = pbw_put_varint(p, request_id);
    }
    if (body_len > 0) {
        *p++ = TAG_REQ_BODY;
        p = pbw_put_varint(p, body_len);
    }
    return p;
}

/* authd_cenv_request_tail_len: see client_envelope.h. */
size_t authd_cenv_request_tail_len(size_t auth_len)
{
    return auth_len > 0 ? 1 + pbw_varint_len(auth_len) + auth_len : 0;
}

/* authd_cenv_request_tail: see client_envelope.h. */
uint8_t *authd_cenv_request_tail(uint8_t *p, const char *authorization, size_t auth_len)
{
    if (auth_len > 0) {
        *p++ = TAG_REQ_AUTHORIZATION;
        p = pbw_put_varint(p, auth_len);
        memcpy(p, authorization, auth_len);
        p += auth_len;
    }
    return p;
}

/*
** get_u64 reads a varint of up to 10 bytes at data[*at] with pbwire.h's
** reader, which refuses a 10th byte above 1, so the value is exactly the
** 64-bit number protobuf-c's parse_uint64 makes of it (it keeps the low bit
** of a 10th byte and drops the rest; we leave those inputs to it).
*/
static bool get_u64(const uint8_t *data, size_t len, size_t *at, uint64_t *out)
{
    const uint8_t *p = data + *at;

    if (!pbw_varint(&p, data + len, 10, out)) {
        return false;
    }
    *at = (size_t)(p - data);
    return true;
}

/*
** get_bytes reads a length-delimited value at data[*at]: a length of up to
** 4 varint bytes (below 2^28, so protobuf-c's INT_MAX limit never applies)
** that fits in what is left.
*/
static bool get_bytes(const uint8_t *data, size_t len, size_t *at, const uint8_t **p, size_t *n)
{
    size_t v = 0;
    size_t i = *at;

    for (unsigned k = 0; k < 4 && i < len; k++, i++) {
        uint8_t b = data[i];
        v |= (size_t)(b & 0x7f) << (7 * k);
        if ((b & 0x80) == 0) {
            if (v > len - (i + 1)) {
                return false;
            }
            *p = data + i + 1;
            *n = v;
            *at = i + 1 + v;
            return true;
        }
    }
    return false;
}

/*
** authd_cenv_reply_fast: see client_envelope.h. Every tag must be one of
** the five one-byte tags above and name a higher field than the one before
** (so no field repeats, none is unknown, none has another wire type); code
** must be a one-byte varint (0-127: the int32 protobuf-c reads is the same).
*/
bool authd_cenv_reply_fast(const uint8_t *data, size_t len, authd_cenv_reply *out)
{
    size_t at = 0;
    unsigned last = 0;
    const uint8_t *p;
    size_t n;

    memset(out, 0, sizeof(*out));
    while (at < len) {
        uint8_t tag = data[at++];
        if ((unsigned)(tag >> 3) <= last) { /* field 0 too; multi-byte tags: default */
            return false;
        }
        last = tag >> 3;
        switch (tag) {
        case TAG_REP_CODE:
            if (at >= len || data[at] >= 0x80) {
                return false;
            }
            out->code = data[at++];
            break;
        case TAG_REP_ID:
            if (!get_u64(data, len, &at, &out->request_id)) {
                return false;
            }
            break;
        case TAG_REP_MSG:
        case TAG_REP_BODY:
        case TAG_REP_REASON:
            if (!get_bytes(data, len, &at, &p, &n)) {
                return false;
            }
            if (tag == TAG_REP_BODY) {
                out->body = p;
                out->body_len = n;
            } else if (tag == TAG_REP_MSG) {
                out->message = (const char *)p;
                out->message_len = n;
            } else {
                out->reason = (const char *)p;
                out->reason_len = n;
            }
            break;
        default:
            return false;
        }
    }
    return true;
}
