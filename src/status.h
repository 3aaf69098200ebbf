/*
 * status.h — authd's one status type: gRPC's canonical codes.
 *
 * Every module returns these. Library errors (LMDB, libsodium, nng) are
 * translated into them where the modules meet, never passed through raw.
 */
#ifndef AUTHD_STATUS_H
#define AUTHD_STATUS_H

typedef enum authd_code {
    AUTHD_OK = 0,
    AUTHD_CANCELLED = 1,
    AUTHD_UNKNOWN = 2,
    AUTHD_INVALID_ARGUMENT = 3,
    AUTHD_DEADLINE_EXCEEDED = 4,
    AUTHD_NOT_FOUND = 5,
    AUTHD_ALREADY_EXISTS = 6,
    AUTHD_PERMISSION_DENIED = 7,
    AUTHD_RESOURCE_EXHAUSTED = 8,
    AUTHD_FAILED_PRECONDITION = 9,
    AUTHD_ABORTED = 10,
    AUTHD_OUT_OF_RANGE = 11,
    AUTHD_UNIMPLEMENTED = 12,
    AUTHD_INTERNAL = 13,
    AUTHD_UNAVAILABLE = 14,
    AUTHD_DATA_LOSS = 15,
    AUTHD_UNAUTHENTICATED = 16,
} authd_code;

#define AUTHD_CODE_MAX AUTHD_UNAUTHENTICATED

/* authd_code_name returns the canonical name ("NOT_FOUND") of a code, or
 * "UNKNOWN" for a value outside the enum. The string is static. */
const char *authd_code_name(int code);

#if defined(__GNUC__)
#define AUTHD_MUST_CHECK __attribute__((warn_unused_result))
#else
#define AUTHD_MUST_CHECK
#endif

#endif
