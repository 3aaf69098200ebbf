/*
 * fuzz_record.c — libFuzzer harness holding Verify's lean record readers
 * (authd_record_session_view, authd_record_user_view: src/store_codec.h)
 * against the store's full decoders (protobuf-c, then every bound).
 *
 * Input: byte 0 picks the record (even: session, odd: user), bytes 1..16
 * are the id it is stored under, the rest is the stored value. What must
 * hold: whatever a lean reader accepts, the full decoder accepts too, with
 * the same values (user id, expiry, revoked; status, username, roles in
 * order). A lean reader may refuse more (encodings the store never
 * writes), never less: Verify must not see a live session, an active user
 * or a role the full decoder would not. The value is an exact-size heap
 * copy, so ASan catches any read past it.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "log.h"
#include "store_codec.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    authd_log_setup(AUTHD_LOG_OFF, 2); /* the full decoders log DATA_LOSS */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t id[AUTHD_ID_BYTES];
    authd_verify_view v;
    authd_session s;
    authd_user u;

    if (size < 1 + AUTHD_ID_BYTES)
        return 0;
    memcpy(id, data + 1, AUTHD_ID_BYTES);
    size_t n = size - 1 - AUTHD_ID_BYTES;
    uint8_t *val = malloc(n > 0 ? n : 1);
    if (val == NULL)
        return 0;
    memcpy(val, data + 1 + AUTHD_ID_BYTES, n);

    memset(&v, 0, sizeof v);
    if ((data[0] & 1) == 0) {
        if (authd_record_session_view(val, n, &v) == AUTHD_OK) {
            FUZZ_CHECK(authd_record_session_decode(val, n, id, &s) == AUTHD_OK,
                "lean session reader accepted what the full decoder refuses");
            FUZZ_CHECK(memcmp(v.user_id, s.user_id, AUTHD_ID_BYTES) == 0, "user_id differs");
            FUZZ_CHECK(v.expires_at == s.expires_at, "expires_at %lld vs %lld",
                (long long)v.expires_at, (long long)s.expires_at);
            FUZZ_CHECK(v.revoked == s.revoked, "revoked %d vs %d", v.revoked, s.revoked);
        }
    } else if (authd_record_user_view(val, n, id, &v) == AUTHD_OK) {
        FUZZ_CHECK(authd_record_user_decode(val, n, id, &u) == AUTHD_OK,
            "lean user reader accepted what the full decoder refuses");
        FUZZ_CHECK(v.status == u.status, "status %u vs %u", v.status, u.status);
        FUZZ_CHECK(strcmp(v.username, u.username) == 0, "username differs");
        FUZZ_CHECK(v.n_roles == u.n_roles, "n_roles %u vs %u", v.n_roles, u.n_roles);
        for (uint32_t i = 0; i < v.n_roles; i++)
            FUZZ_CHECK(strcmp(v.roles[i], u.roles[i]) == 0, "role %u differs", i);
    }
    free(val);
    return 0;
}
