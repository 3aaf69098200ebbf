/*
 * fuzz_validate.c — libFuzzer harness for validate.c: UTF-8, usernames,
 * email addresses, passwords and their canonical forms.
 *
 * Every input goes through all of them. What must hold:
 * - authd_utf8_valid agrees with jansson's UTF-8 decoder (an independent
 *   implementation: json_stringn refuses ill-formed UTF-8, overlongs,
 *   surrogates and code points above U+10FFFF) plus "no NUL";
 * - an accepted username or email is valid UTF-8, its canonical form is
 *   the input with ASCII letters lower-cased, within the size limits, and
 *   canonical(canonical(x)) == canonical(x);
 * - an accepted password is valid UTF-8 of 12..128 code points and not on
 *   the common list; WEAK_PASSWORD is given only for a listed one;
 * - a refusal names an UPPER_SNAKE reason and a NUL-terminated message;
 * - nothing is written past the output buffers: they are heap blocks of
 *   exactly the documented size, so ASan sees any overrun.
 */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "validate.h"

static bool upper_snake(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* utf8_oracle: jansson's decoder, plus authd's own "no NUL". */
static bool utf8_oracle(const char *s, size_t n)
{
    json_t *j;

    if (memchr(s, '\0', n) != NULL)
        return false;
    j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

static size_t code_points(const char *s, size_t n)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

/* lowered: out[0..n) is in[0..n) with only A-Z changed, to a-z. */
static bool lowered(const char *in, size_t n, const char *out)
{
    if (strlen(out) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char want = in[i] >= 'A' && in[i] <= 'Z' ? (char)(in[i] - 'A' + 'a') : in[i];
        if (out[i] != want)
            return false;
    }
    return true;
}

static void check_refusal(const authd_error *e, const char *what)
{
    FUZZ_CHECK(upper_snake(e->reason), "%s: reason not UPPER_SNAKE", what);
    FUZZ_CHECK(memchr(e->message, '\0', sizeof e->message) != NULL && e->message[0] != '\0',
        "%s: message empty or not terminated", what);
}

static void check_username(const char *in, size_t n, bool utf8)
{
    char *out = malloc(AUTHD_USERNAME_MAX + 1), *again = malloc(AUTHD_USERNAME_MAX + 1);
    authd_error e = { 0 };

    FUZZ_CHECK(out != NULL && again != NULL, "out of memory");
    if (authd_validate_username(in, n, out, &e) == AUTHD_OK) {
        size_t len = strlen(out);
        FUZZ_CHECK(utf8, "username accepted with invalid UTF-8");
        FUZZ_CHECK(len >= AUTHD_USERNAME_MIN && len <= AUTHD_USERNAME_MAX, "length %zu", len);
        FUZZ_CHECK(strspn(out, "abcdefghijklmnopqrstuvwxyz0123456789._-") == len,
            "canonical username has a character outside [a-z0-9._-]");
        FUZZ_CHECK(lowered(in, n, out), "canonical username is not the input lower-cased");
        FUZZ_CHECK(
            authd_validate_username(out, len, again, &e) == AUTHD_OK && strcmp(out, again) == 0,
            "canonical username is not a fixed point");
    } else {
        check_refusal(&e, "username");
        FUZZ_CHECK(strcmp(e.reason, "INVALID_USERNAME") == 0, "username reason %s", e.reason);
    }
    free(again);
    free(out);
}

static void check_email(const char *in, size_t n, bool utf8)
{
    char *out = malloc(AUTHD_EMAIL_MAX + 1), *again = malloc(AUTHD_EMAIL_MAX + 1);
    authd_error e = { 0 };

    FUZZ_CHECK(out != NULL && again != NULL, "out of memory");
    if (authd_validate_email(in, n, out, &e) == AUTHD_OK) {
        size_t len = strlen(out);
        const char *at = strchr(out, '@');
        FUZZ_CHECK(utf8, "email accepted with invalid UTF-8");
        FUZZ_CHECK(len <= AUTHD_EMAIL_MAX, "length %zu", len);
        FUZZ_CHECK(at != NULL && strchr(at + 1, '@') == NULL && at != out && at[1] != '\0',
            "accepted email without exactly one '@' between non-empty parts");
        for (size_t i = 0; i < len; i++)
            FUZZ_CHECK((unsigned char)out[i] > 0x20 && (unsigned char)out[i] < 0x7f
                    && !(out[i] >= 'A' && out[i] <= 'Z'),
                "normalized email has byte 0x%02x", (unsigned char)out[i]);
        FUZZ_CHECK(lowered(in, n, out), "normalized email is not the input lower-cased");
        FUZZ_CHECK(authd_validate_email(out, len, again, &e) == AUTHD_OK && strcmp(out, again) == 0,
            "normalized email is not a fixed point");
    } else {
        check_refusal(&e, "email");
        FUZZ_CHECK(strcmp(e.reason, "INVALID_EMAIL") == 0, "email reason %s", e.reason);
    }
    free(again);
    free(out);
}

static void check_password(const char *in, size_t n, bool utf8)
{
    authd_error e = { 0 };

    if (authd_validate_password(in, n, &e) == AUTHD_OK) {
        size_t k = code_points(in, n);
        FUZZ_CHECK(utf8, "password accepted with invalid UTF-8");
        FUZZ_CHECK(k >= AUTHD_PASSWORD_MIN && k <= AUTHD_PASSWORD_MAX, "%zu code points", k);
        FUZZ_CHECK(!authd_password_is_common(in, n), "common password accepted");
    } else {
        check_refusal(&e, "password");
        if (strcmp(e.reason, "WEAK_PASSWORD") == 0)
            FUZZ_CHECK(
                authd_password_is_common(in, n) && utf8, "WEAK_PASSWORD for an unlisted one");
        else
            FUZZ_CHECK(strcmp(e.reason, "INVALID_PASSWORD") == 0, "password reason %s", e.reason);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: a read past len lands in ASan's redzone. */
    char *in = calloc(1, size > 0 ? size : 1);
    bool utf8;

    FUZZ_CHECK(in != NULL, "out of memory");
    if (size > 0)
        memcpy(in, data, size);
    utf8 = authd_utf8_valid(in, size);
    FUZZ_CHECK(
        utf8 == utf8_oracle(in, size), "authd_utf8_valid says %d, jansson the opposite", (int)utf8);
    check_username(in, size, utf8);
    check_email(in, size, utf8);
    check_password(in, size, utf8);
    free(in);
    return 0;
}
