/*
 * pbwire.h — reading protocol buffers' wire format field by field, without
 * a schema and without allocating: for the few hot paths that must look at
 * encoded bytes themselves (dispatch's UTF-8 check of request strings,
 * Verify's lean reading of stored records, the server's reply envelope and
 * the client library's request and reply envelopes). Everything else
 * decodes with protobuf-c. In common/: the server and the client library
 * share it.
 *
 * The reader is at least as strict as protobuf-c 1.4.1's unpack about the
 * framing: a varint longer than 10 bytes or with bits past the 64th
 * (protobuf-c drops them, but reads such a bool as true: a lean reader
 * that dropped them too would see an unrevoked session where the full
 * decoder sees a revoked one), a tag longer than 5 bytes, field number 0, the group wire types (3,
 * 4) and the unused ones (6, 7), and a payload that runs past the end are all refused.
 */
#ifndef AUTHD_PBWIRE_H
#define AUTHD_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { PBW_VARINT = 0, PBW_I64 = 1, PBW_LEN = 2, PBW_I32 = 5 };

/* One field: its number and wire type, and its value: v for PBW_VARINT,
 * data/len for PBW_LEN (pointing into the input), nothing for the fixed
 * widths (skipped). */
typedef struct pbw_field {
    uint32_t num;
    unsigned type;
    uint64_t v;
    const uint8_t *data;
    size_t len;
} pbw_field;

/* pbw_varint reads a base-128 varint of at most max bytes (10 for values,
 * 5 for tags); false when it runs off the end or is longer. */
static inline bool pbw_varint(const uint8_t **p, const uint8_t *end, unsigned max, uint64_t *out)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < max && *p < end; i++) {
        uint8_t b = *(*p)++;
        if (i == 9 && b > 1)
            return false; /* bits past 64: refused (protobuf-c would drop them) */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* pbw_next reads the field at *p and advances past it; false on malformed
 * framing (see the file comment). The caller stops when *p == end. */
static inline bool pbw_next(const uint8_t **p, const uint8_t *end, pbw_field *f)
{
    uint64_t tag, n;

    if (!pbw_varint(p, end, 5, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return false;
    f->num = (uint32_t)(tag >> 3);
    f->type = (unsigned)(tag & 7);
    switch (f->type) {
    case PBW_VARINT:
        return pbw_varint(p, end, 10, &f->v);
    case PBW_I64:
        if ((size_t)(end - *p) < 8)
            return false;
        *p += 8;
        return true;
    case PBW_I32:
        if ((size_t)(end - *p) < 4)
            return false;
        *p += 4;
        return true;
    case PBW_LEN:
        if (!pbw_varint(p, end, 10, &n) || n > (uint64_t)(end - *p))
            return false;
        f->data = *p;
        f->len = (size_t)n;
        *p += n;
        return true;
    default:
        return false;
    }
}

/* ---- writing ------------------------------------------------------------ */

/* pbw_varint_len is the size of v as a varint (1..10 bytes). */
static inline size_t pbw_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* pbw_put_varint writes v at p and returns the byte after it. */
static inline uint8_t *pbw_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

#endif
