/*
 * strength.h — how easy a new password is to guess, by zxcvbn.
 *
 * The common-password list (validate.h) only catches exact entries; this
 * catches what people do to them: "password1234", "Password1234!",
 * "123456789012", "aaaaaaaaaaaa", the username plus digits. zxcvbn (Debian's
 * libzxcvbn, the C port of Dropbox's estimator) finds the cheapest way to
 * build the password from dictionary words, names, common passwords,
 * keyboard walks, sequences, repeats, dates and the caller's own context
 * words, and returns log2 of the guesses that takes.
 *
 * Cost: about 20-45 µs for a typical password, but up to about 12 ms for a
 * 128-character repetition ("aaaa…"), so it must not run on an event loop.
 */
#ifndef AUTHD_STRENGTH_H
#define AUTHD_STRENGTH_H

#include <stddef.h>

#include "status.h"
#include "validate.h"

/* Default threshold: 2^30 ≈ 1.1e9 guesses. zxcvbn calls 1e8 "safely
 * unguessable: moderate protection from an offline slow-hash attack"; at
 * 20 ms per argon2id guess on one core, 2^30 guesses take about 8 months per
 * account. Online, the login throttle makes it far more. */
#define AUTHD_STRENGTH_MIN_BITS_DEFAULT 30
#define AUTHD_STRENGTH_MIN_BITS_FLOOR   26 /* 1e8: zxcvbn's "safely unguessable" */
#define AUTHD_STRENGTH_CONTEXT_MAX      12 /* context words passed to zxcvbn */

/* What made a password easy to guess: the part of the estimate that cost
 * an attacker least. */
typedef enum authd_weakness {
    AUTHD_WEAK_NONE = 0, /* strong enough */
    AUTHD_WEAK_CONTEXT, /* contains the username or the email address */
    AUTHD_WEAK_REPEAT, /* "aaaa", "abcabc", "passwordpassword" */
    AUTHD_WEAK_SEQUENCE, /* "1234", "abcd", "9876" */
    AUTHD_WEAK_KEYBOARD, /* "qwerty", "1qaz2wsx" */
    AUTHD_WEAK_DATE, /* years and dates */
    AUTHD_WEAK_COMMON_CHANGED, /* a common password or word plus digits, case, l33t */
    AUTHD_WEAK_COMMON_WORDS, /* lower-case common words or passwords, unchanged */
    AUTHD_WEAK_SHORT, /* nothing recognised, just too little of it */
} authd_weakness;

/* authd_password_strength returns zxcvbn's estimate in bits (log2 of
 * guesses) of the NUL-terminated pw, with context (NULL-terminated, may be
 * NULL) as words an attacker would try first, and sets *why (when not NULL)
 * to the kind of the password's weakest part, or AUTHD_WEAK_NONE when the
 * estimate reaches min_bits. Thread-safe (Debian's zxcvbn is built with the
 * dictionary compiled in: no mutable global state); allocates and frees
 * internally. */
double authd_password_strength(
    const char *pw, const char *const *context, double min_bits, authd_weakness *why);

/* authd_password_strong_enough checks a new password that already passed
 * authd_validate_password (so pw is NUL-terminated UTF-8, at most 128 code
 * points) and is below min_bits (0 = AUTHD_STRENGTH_MIN_BITS_DEFAULT).
 * username and email are the canonical forms from validate.h (may
 * be NULL); the username, the email's local part and their pieces split at
 * . _ - + (3 characters or more) are the context words. Refuses it with AUTHD_INVALID_ARGUMENT,
 * reason "WEAK_PASSWORD" and a message "password: too easy to guess: <why>" that never echoes the
 * input. */
AUTHD_MUST_CHECK authd_code authd_password_strong_enough(
    const char *pw, const char *username, const char *email, unsigned min_bits, authd_error *err);

/* authd_weakness_text is the message's reason for w ("a repeated pattern"). */
const char *authd_weakness_text(authd_weakness w);

#endif
