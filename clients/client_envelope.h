/*
** client_envelope.h — libauthd-client's codec of the wire envelopes
** (authd.v1.RequestEnvelope, authd.v1.ReplyEnvelope in envelope.proto) on
** the per-call hot path, internal to the library (not installed).
**
** Both directions are protobuf wire format written or read by hand, because
** protobuf-c's generic code costs more per call than the rest of the call:
** a request envelope was packed into a buffer of its own and copied into the
** frame, and a reply envelope was unpacked into heap memory (the message,
** its strings, a copy of the body) only to be freed again. Here the request
** envelope's fields are written straight into the frame, ahead of the body,
** which the caller packs right behind them; and a reply envelope in the
** canonical form a protobuf encoder writes is read in place, its body left
** where it is in the frame.
**
** The reply reader is a fast path in front of protobuf-c, not a second
** parser: it takes only the canonical form (each field at most once, in
** field-number order, one-byte tags of the declared wire type, no unknown
** fields) and answers "not mine" for anything else, which then goes to
** authd__v1__reply_envelope__unpack as before. Whatever it takes, protobuf-c
** takes too, with the same values: the outcome never differs, only the cost.
** tests/unit/test_client_envelope.c and fuzz/fuzz_client_envelope.c check
** that against protobuf-c itself.
*/
#ifndef AUTHD_CLIENT_ENVELOPE_H
#define AUTHD_CLIENT_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
** authd_cenv_request_head_len returns how many bytes of a request envelope
** come before the body: method (field 1), request_id (field 2) and the tag
** and length of body (field 3), each left out when empty or zero as a proto3
** encoder does, so head + body is byte for byte what
** authd__v1__request_envelope__pack writes.
*/
size_t authd_cenv_request_head_len(size_t method_len, uint64_t request_id, size_t body_len);

/*
** authd_cenv_request_head writes those bytes at p (which has room for
** authd_cenv_request_head_len of them) and returns p plus their number:
** where the body, body_len bytes, must follow.
*/
uint8_t *authd_cenv_request_head(
    uint8_t *p, const char *method, size_t method_len, uint64_t request_id, size_t body_len);

/*
** authd_cenv_request_tail_len / authd_cenv_request_tail: the fields after
** the body: authorization (field 4; left out when empty), so head + body +
** tail is still what authd__v1__request_envelope__pack writes (fields in
** number order). tail writes at p and returns p plus their number.
*/
size_t authd_cenv_request_tail_len(size_t auth_len);
uint8_t *authd_cenv_request_tail(uint8_t *p, const char *authorization, size_t auth_len);

/*
** authd_cenv_reply is a reply envelope read in place: the pointers point
** into the bytes given to authd_cenv_reply_fast and live as long as they do;
** message and reason are not NUL-terminated (and, as on the wire, may hold
** a NUL: protobuf-c's copy would end there). Absent fields are 0 / empty.
*/
typedef struct authd_cenv_reply {
    int32_t code;
    uint64_t request_id;
    const uint8_t *body;
    size_t body_len;
    const char *message;
    size_t message_len;
    const char *reason;
    size_t reason_len;
} authd_cenv_reply;

/*
** authd_cenv_reply_fast reads the reply envelope in data[0, len) when it is
** in the canonical form (see the top of the file) and returns true with *out
** filled; otherwise returns false, leaves *out in an unspecified state, and
** the caller must unpack data with protobuf-c, which decides whether it is
** a valid envelope at all.
*/
bool authd_cenv_reply_fast(const uint8_t *data, size_t len, authd_cenv_reply *out);

#endif /* AUTHD_CLIENT_ENVELOPE_H */
