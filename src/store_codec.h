/*
 * store_codec.h — the store's record codec, as far as code outside
 * store.c needs it: the fuzz harness (fuzz/fuzz_record.c) and unit tests
 * hold Verify's lean readers against the full decoders. Handlers use
 * store.h only.
 */
#ifndef AUTHD_STORE_CODEC_H
#define AUTHD_STORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

/* The full decoders (protobuf-c, then every bound checked): OK, or
 * DATA_LOSS (logged) with *out untouched. A user record must carry the id
 * it is stored under. */
AUTHD_MUST_CHECK authd_code authd_record_user_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_user *out);
AUTHD_MUST_CHECK authd_code authd_record_session_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_session *out);

/* Verify's lean readers: fill the session part (user_id, expires_at,
 * revoked) or the user part (status, username, roles) of *out, or answer
 * DATA_LOSS (not logged; *out then partly written). Whatever they accept,
 * the full decoders accept with the same values. */
AUTHD_MUST_CHECK authd_code authd_record_session_view(
    const void *data, size_t len, authd_verify_view *out);
AUTHD_MUST_CHECK authd_code authd_record_user_view(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_verify_view *out);

#endif
