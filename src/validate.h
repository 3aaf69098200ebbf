/*
 * validate.h — rules for what users may send, and canonical forms.
 *
 * protobuf-c 1.4.1 checks neither UTF-8 nor embedded NULs in string
 * fields, so every string from the wire passes authd_utf8_valid first
 * (the functions below call it themselves).
 *
 * On failure each returns AUTHD_INVALID_ARGUMENT and fills *err with a
 * machine-readable reason and a message that names the field and the rule,
 * safe to send back to the caller (it never echoes the input).
 */
#ifndef AUTHD_VALIDATE_H
#define AUTHD_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"
#include "store.h"

#define AUTHD_PASSWORD_MIN 12 /* Unicode code points */
#define AUTHD_PASSWORD_MAX 128 /* Unicode code points */
#define AUTHD_USERNAME_MIN 3

typedef struct authd_error {
    const char *reason; /* static, UPPER_SNAKE: "INVALID_USERNAME", ... */
    char message[192];
} authd_error;

/* authd_utf8_valid is true when s[0..len) is well-formed UTF-8 (no
 * overlongs, no surrogates, nothing above U+10FFFF) holding no NUL. */
bool authd_utf8_valid(const char *s, size_t len);

/* authd_validate_username checks and canonicalizes a username: ASCII
 * letters are lower-cased first, then the result must be 3..32 characters
 * from [a-z0-9._-]. out receives the canonical form (NUL-terminated).
 * reason "INVALID_USERNAME". */
AUTHD_MUST_CHECK authd_code authd_validate_username(
    const char *in, size_t len, char out[AUTHD_USERNAME_MAX + 1], authd_error *err);

/* authd_validate_email checks and normalizes an email address: at most 254
 * bytes, ASCII only, exactly one '@', a local part of 1..64 characters from
 * RFC 5322 atext and dots (no leading, trailing or double dot), a domain of
 * dot-separated labels of 1..63 [a-z0-9-] not starting or ending with '-',
 * at least two labels, the last not all digits. The normalized form is the
 * whole address lower-cased. reason "INVALID_EMAIL". */
AUTHD_MUST_CHECK authd_code authd_validate_email(
    const char *in, size_t len, char out[AUTHD_EMAIL_MAX + 1], authd_error *err);

/* authd_validate_password checks a new password: valid UTF-8 without NUL,
 * 12..128 Unicode code points, any characters, no composition rules, and
 * not in the shipped list of the 10,000 most common passwords (compared
 * ASCII-case-insensitively). reasons "INVALID_PASSWORD" (encoding/length)
 * and "WEAK_PASSWORD" (common). Cheap enough for an event loop; the
 * strength estimate (strength.h), which is not, is the second step. */
AUTHD_MUST_CHECK authd_code authd_validate_password(const char *pw, size_t len, authd_error *err);

/* authd_validate_role checks a role name: 1..64 (AUTHD_ROLE_MAX) characters
 * from [a-z0-9_.:-], starting with a letter or digit. Role names are
 * compared as bytes (Verify's required roles, the last-admin rule), so
 * they are not case-folded: an upper-case letter is refused, not lowered,
 * and "Admin" can never pass for "admin". reason "INVALID_ROLE". */
AUTHD_MUST_CHECK authd_code authd_validate_role(const char *in, size_t len, authd_error *err);

/* authd_validate_roles checks a whole set of roles as a user would hold
 * it: at most AUTHD_ROLES_MAX names, each valid (authd_validate_role),
 * no two equal. reason "INVALID_ROLE". */
AUTHD_MUST_CHECK authd_code authd_validate_roles(
    const char *const *roles, size_t n, authd_error *err);

/* authd_password_is_common is true when pw is in the common list
 * (ASCII-case-insensitive). Exposed for tests. */
bool authd_password_is_common(const char *pw, size_t len);

/* authd_common_password_count is the number of entries in the list. */
size_t authd_common_password_count(void);

#endif
