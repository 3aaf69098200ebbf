/*
 * fuzz_client_envelope.c — libauthd-client's reply-envelope fast path
 * (clients/client_envelope.c) against protobuf-c, on arbitrary bytes.
 *
 * Properties:
 *   1. Whatever the fast path takes, protobuf-c unpacks too, with the same
 *      code, request id, body and strings (protobuf-c's are C strings: they
 *      end at a NUL). So the client's outcome never depends on which path
 *      read a reply.
 *   2. Whatever protobuf-c unpacks to an envelope with a code in 0..127 and
 *      no unknown fields, packed again by protobuf-c (the canonical form
 *      authd sends), the fast path takes, with the same values: the fast
 *      path covers every reply authd writes.
 *
 * Input: the bytes of one reply envelope.
 */
#include <stdbool.h>
#include <string.h>

#include "authd/v1/envelope.pb-c.h"
#include "client_envelope.h"
#include "fuzz.h"

/* same checks a fast read against protobuf-c's unpacking of the same bytes. */
static void same(const authd_cenv_reply *r, const Authd__V1__ReplyEnvelope *rep)
{
    const char *msg = r->message != NULL ? r->message : "";
    const char *reason = r->reason != NULL ? r->reason : "";

    FUZZ_CHECK(r->code == (int32_t)rep->code, "code %d vs %d", r->code, (int)rep->code);
    FUZZ_CHECK(r->request_id == rep->request_id, "request id %llu vs %llu",
        (unsigned long long)r->request_id, (unsigned long long)rep->request_id);
    FUZZ_CHECK(r->body_len == rep->body.len, "body %zu vs %zu bytes", r->body_len, rep->body.len);
    FUZZ_CHECK(r->body_len == 0 || memcmp(r->body, rep->body.data, r->body_len) == 0, "body bytes");
    FUZZ_CHECK(strnlen(msg, r->message_len) == strlen(rep->message)
            && memcmp(msg, rep->message, strlen(rep->message)) == 0,
        "message");
    FUZZ_CHECK(strnlen(reason, r->reason_len) == strlen(rep->reason)
            && memcmp(reason, rep->reason, strlen(rep->reason)) == 0,
        "reason");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Authd__V1__ReplyEnvelope *rep = authd__v1__reply_envelope__unpack(NULL, size, data);
    authd_cenv_reply r;

    if (authd_cenv_reply_fast(data, size, &r)) {
        FUZZ_CHECK(rep != NULL, "fast path took %zu bytes protobuf-c refuses", size);
        same(&r, rep);
    }
    if (rep != NULL && (int)rep->code >= 0 && (int)rep->code < 128
        && rep->base.n_unknown_fields == 0) {
        size_t n = authd__v1__reply_envelope__get_packed_size(rep);
        uint8_t *canon = malloc(n > 0 ? n : 1);
        FUZZ_CHECK(canon != NULL, "out of memory");
        FUZZ_CHECK(authd__v1__reply_envelope__pack(rep, canon) == n, "pack size");
        FUZZ_CHECK(authd_cenv_reply_fast(canon, n, &r), "fast path refused a canonical envelope");
        same(&r, rep);
        free(canon);
    }
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return 0;
}
