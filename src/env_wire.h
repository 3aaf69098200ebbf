/*
 * env_wire.h — the server's writer of authd.v1.ReplyEnvelope (envelope.proto)
 * on the per-request hot path: the envelope written straight into the
 * frame with pbwire.h, byte for byte what protobuf-c's
 * authd__v1__reply_envelope__pack writes (fields in number order, proto3
 * defaults left out), without protobuf-c's generic size and pack walks
 * (about 900 instructions of a Verify). tests/unit/test_env_wire.c holds it
 * against protobuf-c. Requests are still unpacked by protobuf-c.
 */
#ifndef AUTHD_ENV_WIRE_H
#define AUTHD_ENV_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* The fields of a reply envelope; message and reason are NUL-free text of
 * the given lengths (NULL with length 0 for none). */
typedef struct authd_reply_env {
    int32_t code; /* authd.v1.Code */
    const char *message;
    size_t message_len;
    uint64_t request_id;
    const uint8_t *body;
    size_t body_len;
    const char *reason;
    size_t reason_len;
} authd_reply_env;

/* authd_reply_env_len is the size of e's encoding. */
size_t authd_reply_env_len(const authd_reply_env *e);

/* authd_reply_env_put writes e's encoding at p (room for
 * authd_reply_env_len(e) bytes) and returns the byte after it. */
uint8_t *authd_reply_env_put(uint8_t *p, const authd_reply_env *e);

#endif
