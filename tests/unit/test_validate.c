/*
 * test_validate.c — UTF-8, username, email and password rules, as tables
 * of named cases. Inputs carry explicit lengths so embedded NULs count.
 * Password strength (strength.h, zxcvbn) is tested here too, since it is
 * the second half of the new-password rule. Every rejection is also checked for its reason, for a
 * message that names the field, and for not echoing the input back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "strength.h"
#include "validate.h"

/* The compiled-in list, to check its order and that every entry is found. */
extern const char *const authd_common_passwords[];
extern const size_t authd_common_passwords_count;

#define S(lit) lit, sizeof(lit) - 1

/* repeat builds n copies of unit (+ tail) into buf; returns the length. */
static size_t repeat(char *buf, size_t cap, const char *unit, size_t n, const char *tail)
{
    size_t u = strlen(unit), t = strlen(tail), len = 0;

    assert_true(u * n + t < cap);
    for (size_t i = 0; i < n; i++, len += u)
        memcpy(buf + len, unit, u);
    memcpy(buf + len, tail, t);
    len += t;
    buf[len] = '\0';
    return len;
}

/* check_rejection: reason as expected, message names the field, fits the
 * buffer, and does not contain the input (for inputs of 4+ bytes, where a
 * coincidental match with the rule text is not a leak). */
static void check_rejection(const char *name, const authd_error *err, const char *reason,
    const char *field, const char *in, size_t len)
{
    char copy[1024];

    if (strcmp(err->reason, reason) != 0)
        fail_msg("%s: reason %s, want %s", name, err->reason, reason);
    if (strncmp(err->message, field, strlen(field)) != 0 || err->message[strlen(field)] != ':')
        fail_msg("%s: message does not name the field: %s", name, err->message);
    assert_true(strlen(err->message) < sizeof err->message - 1);
    if (len >= 4 && len < sizeof copy) {
        memcpy(copy, in, len);
        copy[len] = '\0'; /* up to any NUL inside: still the user's bytes */
        if (strlen(copy) >= 4 && strstr(err->message, copy) != NULL)
            fail_msg("%s: message echoes the input", name);
    }
}

/* ---- UTF-8 -------------------------------------------------------------- */

static void test_utf8(void **state)
{
    static const struct {
        const char *name;
        const char *s;
        size_t len;
        bool ok;
    } cases[] = {
        { "empty", S(""), true },
        { "ascii", S("hello, world ~"), true },
        { "2-byte U+00E9", S("\xc3\xa9"), true },
        { "2-byte lowest U+0080", S("\xc2\x80"), true },
        { "3-byte U+20AC", S("\xe2\x82\xac"), true },
        { "3-byte lowest U+0800", S("\xe0\xa0\x80"), true },
        { "3-byte U+D7FF", S("\xed\x9f\xbf"), true },
        { "3-byte U+E000", S("\xee\x80\x80"), true },
        { "3-byte U+FFFF", S("\xef\xbf\xbf"), true },
        { "4-byte lowest U+10000", S("\xf0\x90\x80\x80"), true },
        { "emoji U+1F600", S("\xf0\x9f\x98\x80"), true },
        { "highest U+10FFFF", S("\xf4\x8f\xbf\xbf"), true },
        { "mixed", S("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z"), true },
        { "lone continuation", S("\x80"), false },
        { "continuation after ascii", S("a\xbf"), false },
        { "overlong slash C0 AF", S("\xc0\xaf"), false },
        { "overlong NUL C0 80", S("\xc0\x80"), false },
        { "overlong C1 BF", S("\xc1\xbf"), false },
        { "overlong E0 80 80", S("\xe0\x80\x80"), false },
        { "overlong E0 9F BF", S("\xe0\x9f\xbf"), false },
        { "overlong F0 8F BF BF", S("\xf0\x8f\xbf\xbf"), false },
        { "surrogate ED A0 80", S("\xed\xa0\x80"), false },
        { "surrogate ED BF BF", S("\xed\xbf\xbf"), false },
        { "above U+10FFFF F4 90 80 80", S("\xf4\x90\x80\x80"), false },
        { "F5 lead", S("\xf5\x80\x80\x80"), false },
        { "FF", S("\xff"), false },
        { "FE", S("\xfe"), false },
        { "truncated E2 82", S("\xe2\x82"), false },
        { "truncated then ascii", S("\xe2\x82z"), false },
        { "truncated 4-byte", S("\xf0\x9f\x98"), false },
        { "lead then lead", S("\xc3\xc3\xa9"), false },
        { "embedded NUL", S("ab\0cd"), false },
        { "only NUL", S("\0"), false },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (authd_utf8_valid(cases[i].s, cases[i].len) != cases[i].ok)
            fail_msg("%s: want %s", cases[i].name, cases[i].ok ? "valid" : "invalid");
    }
    /* The length is honoured: bytes past it are not looked at. */
    assert_true(authd_utf8_valid("ab\xff", 2));

    /* The eight-bytes-at-a-time ASCII path: a NUL, a stray continuation
     * byte and a valid two-byte sequence at every offset of a long string,
     * and strings ending at every length. */
    char buf[40];
    for (size_t pos = 0; pos + 1 < sizeof buf; pos++) {
        memset(buf, 'a', sizeof buf);
        assert_true(authd_utf8_valid(buf, sizeof buf));
        buf[pos] = '\0';
        assert_false(authd_utf8_valid(buf, sizeof buf));
        buf[pos] = (char)0x80;
        assert_false(authd_utf8_valid(buf, sizeof buf));
        buf[pos] = (char)0xC3;
        buf[pos + 1] = (char)0xA9; /* U+00E9 */
        assert_true(authd_utf8_valid(buf, sizeof buf));
        assert_false(authd_utf8_valid(buf, pos + 1)); /* cut inside it */
        assert_true(authd_utf8_valid(buf, pos));
    }
    assert_true(authd_utf8_valid(NULL, 0));
    assert_false(authd_utf8_valid(NULL, 1));
}

/* ---- username ----------------------------------------------------------- */

static void test_username(void **state)
{
    static const struct {
        const char *name;
        const char *in;
        size_t len;
        const char *out; /* NULL: rejected */
    } cases[] = {
        { "lower-cased", S("Alice"), "alice" },
        { "all upper", S("BOB_SMITH"), "bob_smith" },
        { "3 chars", S("abc"), "abc" },
        { "2 chars", S("ab"), NULL },
        { "1 char", S("a"), NULL },
        { "empty", S(""), NULL },
        { "32 chars", S("abcdefghijklmnopqrstuvwxyz012345"), "abcdefghijklmnopqrstuvwxyz012345" },
        { "33 chars", S("abcdefghijklmnopqrstuvwxyz0123456"), NULL },
        { "punctuation", S("a.b_c-d"), "a.b_c-d" },
        { "digits", S("007"), "007" },
        { "space", S("bob smith"), NULL },
        { "at sign", S("bob@x"), NULL },
        { "slash", S("bob/x"), NULL },
        { "plus", S("bob+x"), NULL },
        { "non-ASCII", S("j\xc3\xbcrgen"), NULL },
        { "fullwidth letters", S("\xef\xbd\x81\xef\xbd\x84\xef\xbd\x8d"), NULL },
        { "embedded NUL", S("admin\0x"), NULL },
        { "invalid UTF-8", S("adm\xff"), NULL },
        { "newline", S("admin\n"), NULL },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[AUTHD_USERNAME_MAX + 1];
        authd_error err = { 0 };

        memset(out, 'Z', sizeof out);
        authd_code rc = authd_validate_username(cases[i].in, cases[i].len, out, &err);
        if (cases[i].out != NULL) {
            if (rc != AUTHD_OK)
                fail_msg("%s: rejected: %s", cases[i].name, err.message);
            assert_string_equal(out, cases[i].out);
        } else {
            if (rc != AUTHD_INVALID_ARGUMENT)
                fail_msg("%s: accepted", cases[i].name);
            assert_int_equal(out[0], 'Z'); /* out untouched on failure */
            check_rejection(
                cases[i].name, &err, "INVALID_USERNAME", "username", cases[i].in, cases[i].len);
        }
    }
}

static void test_username_messages(void **state)
{
    char out[AUTHD_USERNAME_MAX + 1];
    authd_error err;

    assert_int_equal(authd_validate_username(S("ab"), out, &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.message,
        "username: must be 3 to 32 characters from a-z 0-9 . _ - (letters are lower-cased)");
    assert_int_equal(authd_validate_username(S("admin\0x"), out, &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.message, "username: must be valid UTF-8 without NUL");
    /* err may be NULL. */
    assert_int_equal(authd_validate_username(S("ab"), out, NULL), AUTHD_INVALID_ARGUMENT);
}

/* ---- email -------------------------------------------------------------- */

static void test_email(void **state)
{
    static const struct {
        const char *name;
        const char *in;
        size_t len;
        const char *out; /* NULL: rejected */
    } cases[] = {
        { "lower-cased whole", S("Bob.Smith+tag@Example.COM"), "bob.smith+tag@example.com" },
        { "simple", S("a@b.cd"), "a@b.cd" },
        { "atext specials", S("!#$%&'*+-/=?^_`{|}~@x.org"), "!#$%&'*+-/=?^_`{|}~@x.org" },
        { "hyphen inside label", S("a@my-host.example.org"), "a@my-host.example.org" },
        { "digit labels ok", S("a@123.example"), "a@123.example" },
        { "alnum tld", S("a@b.c0"), "a@b.c0" },
        { "no @", S("bob.example.com"), NULL },
        { "two @", S("bob@x@example.com"), NULL },
        { "empty local", S("@example.com"), NULL },
        { "empty domain", S("bob@"), NULL },
        { "leading dot local", S(".bob@example.com"), NULL },
        { "trailing dot local", S("bob.@example.com"), NULL },
        { "double dot local", S("bo..b@example.com"), NULL },
        { "domain without dot", S("bob@localhost"), NULL },
        { "label starting with -", S("bob@-x.example.com"), NULL },
        { "label ending with -", S("bob@x-.example.com"), NULL },
        { "tld ending with -", S("bob@x.com-"), NULL },
        { "numeric TLD", S("a@b.123"), NULL },
        { "IPv4", S("bob@10.0.0.1"), NULL },
        { "address literal", S("bob@[10.0.0.1]"), NULL },
        { "leading dot domain", S("bob@.example.com"), NULL },
        { "trailing dot domain", S("bob@example.com."), NULL },
        { "double dot domain", S("bob@example..com"), NULL },
        { "underscore in domain", S("bob@ex_ample.com"), NULL },
        { "space", S("bob smith@example.com"), NULL },
        { "quoted local", S("\"bob\"@example.com"), NULL },
        { "comma", S("bob,x@example.com"), NULL },
        { "non-ASCII local", S("j\xc3\xbcrgen@example.com"), NULL },
        { "non-ASCII domain",
            S("bob@b\xc3\xbc"
              "cher.de"),
            NULL },
        { "NUL", S("bob@example.com\0.evil"), NULL },
        { "invalid UTF-8", S("bob\xff@example.com"), NULL },
        { "newline", S("bob@example.com\n"), NULL },
        { "empty", S(""), NULL },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[AUTHD_EMAIL_MAX + 1];
        authd_error err = { 0 };

        memset(out, 'Z', sizeof out);
        authd_code rc = authd_validate_email(cases[i].in, cases[i].len, out, &err);
        if (cases[i].out != NULL) {
            if (rc != AUTHD_OK)
                fail_msg("%s: rejected: %s", cases[i].name, err.message);
            assert_string_equal(out, cases[i].out);
        } else {
            if (rc != AUTHD_INVALID_ARGUMENT)
                fail_msg("%s: accepted", cases[i].name);
            assert_int_equal(out[0], 'Z');
            check_rejection(
                cases[i].name, &err, "INVALID_EMAIL", "email", cases[i].in, cases[i].len);
        }
    }
}

/* Length limits: whole address 254, local part 64, label 63. */
static void test_email_lengths(void **state)
{
    char a[512], out[AUTHD_EMAIL_MAX + 1];
    authd_error err;
    size_t len;
    const char *l63 = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk";

    assert_int_equal(strlen(l63), 63);

    /* local 64 ok, 65 rejected */
    len = repeat(a, sizeof a, "l", 64, "@example.com");
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_OK);
    assert_string_equal(out, a);
    len = repeat(a, sizeof a, "l", 65, "@example.com");
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_INVALID_ARGUMENT);
    check_rejection("local 65", &err, "INVALID_EMAIL", "email", a, len);

    /* label 63 ok, 64 rejected */
    len = (size_t)snprintf(a, sizeof a, "bob@%s.com", l63);
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_OK);
    len = (size_t)snprintf(a, sizeof a, "bob@%sx.com", l63);
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_INVALID_ARGUMENT);
    check_rejection("label 64", &err, "INVALID_EMAIL", "email", a, len);
    len = (size_t)snprintf(a, sizeof a, "bob@example.%sx", l63); /* the TLD too */
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_INVALID_ARGUMENT);

    /* 254 bytes total ok, 255 rejected: 64 local + '@' + 63.63.61 = 254 */
    len = (size_t)snprintf(a, sizeof a, "%.64s@%s.%s.%.61s",
        "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll", l63, l63, l63);
    assert_int_equal(len, 254);
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_OK);
    assert_string_equal(out, a);
    len = (size_t)snprintf(a, sizeof a, "%.64s@%s.%s.%.62s",
        "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll", l63, l63, l63);
    assert_int_equal(len, 255);
    assert_int_equal(authd_validate_email(a, len, out, &err), AUTHD_INVALID_ARGUMENT);
    check_rejection("255 total", &err, "INVALID_EMAIL", "email", a, len);
    assert_string_equal(err.message, "email: must be 1 to 254 characters");

    /* Huge input: refused on length, nothing read past it matters. */
    memset(a, 'a', sizeof a);
    assert_int_equal(authd_validate_email(a, sizeof a, out, NULL), AUTHD_INVALID_ARGUMENT);
}

/* ---- password ----------------------------------------------------------- */

static void test_password(void **state)
{
    static const struct {
        const char *name;
        const char *unit; /* repeated count times */
        size_t count;
        const char *reason; /* NULL: accepted */
    } cases[] = {
        { "11 ASCII", "x", 11, "INVALID_PASSWORD" },
        { "12 ASCII", "x", 12, NULL },
        { "12 x e-acute (24 bytes)", "\xc3\xa9", 12, NULL },
        { "11 x e-acute (22 bytes)", "\xc3\xa9", 11, "INVALID_PASSWORD" },
        { "11 x euro (33 bytes)", "\xe2\x82\xac", 11, "INVALID_PASSWORD" },
        { "12 x euro", "\xe2\x82\xac", 12, NULL },
        { "12 emoji (48 bytes)", "\xf0\x9f\x98\x80", 12, NULL },
        { "128 ASCII", "y", 128, NULL },
        { "129 ASCII", "y", 129, "INVALID_PASSWORD" },
        { "128 emoji (512 bytes)", "\xf0\x9f\x98\x80", 128, NULL },
        { "129 emoji (516 bytes)", "\xf0\x9f\x98\x80", 129, "INVALID_PASSWORD" },
        { "128 x euro", "\xe2\x82\xac", 128, NULL },
        { "129 x euro (387 bytes)", "\xe2\x82\xac", 129, "INVALID_PASSWORD" },
        { "1000 ASCII", "z", 1000, "INVALID_PASSWORD" },
        { "spaces count", " ", 12, NULL },
        { "lone continuation bytes", "\x80", 20, "INVALID_PASSWORD" },
        { "overlong", "\xc0\xaf", 12, "INVALID_PASSWORD" },
        { "surrogates", "\xed\xa0\x80", 12, "INVALID_PASSWORD" },
        { "above U+10FFFF", "\xf4\x90\x80\x80", 12, "INVALID_PASSWORD" },
    };
    char buf[8192];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = repeat(buf, sizeof buf, cases[i].unit, cases[i].count, "");
        authd_error err = { 0 };
        authd_code rc = authd_validate_password(buf, len, &err);

        if (cases[i].reason == NULL) {
            if (rc != AUTHD_OK)
                fail_msg("%s: rejected: %s", cases[i].name, err.message);
        } else {
            if (rc != AUTHD_INVALID_ARGUMENT)
                fail_msg("%s: accepted", cases[i].name);
            check_rejection(cases[i].name, &err, cases[i].reason, "password", buf, len);
        }
    }
}

static void test_password_encoding(void **state)
{
    static const struct {
        const char *name;
        const char *pw;
        size_t len;
    } cases[] = {
        { "embedded NUL", S("correct horse\0battery staple") },
        { "trailing NUL", S("correct horse battery\0") },
        { "invalid byte", S("correct horse \xff battery") },
        { "truncated at end", S("correct horse battery \xe2\x82") },
        { "overlong NUL", S("correct horse \xc0\x80 battery") },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        authd_error err = { 0 };
        if (authd_validate_password(cases[i].pw, cases[i].len, &err) != AUTHD_INVALID_ARGUMENT)
            fail_msg("%s: accepted", cases[i].name);
        check_rejection(
            cases[i].name, &err, "INVALID_PASSWORD", "password", cases[i].pw, cases[i].len);
        assert_string_equal(err.message, "password: must be valid UTF-8 without NUL");
    }
}

static void test_password_messages(void **state)
{
    authd_error err;

    assert_int_equal(authd_validate_password(S("short pw"), &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.message, "password: must be at least 12 characters");
    assert_int_equal(authd_validate_password(S("qwertyqwerty"), &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.reason, "WEAK_PASSWORD");
    assert_string_equal(err.message, "password: is too common; choose a less common one");
    assert_int_equal(authd_validate_password(S("correct horse battery staple"), &err), AUTHD_OK);
    assert_int_equal(authd_validate_password(S("qwertyqwerty"), NULL), AUTHD_INVALID_ARGUMENT);
}

/* Entries of 12+ characters from data/common-passwords.txt, as written
 * there, upper-cased, and mixed. */
static void test_password_common(void **state)
{
    static const struct {
        const char *name;
        const char *pw;
        size_t len;
        bool common;
    } cases[] = {
        { "as listed", S("qwertyqwerty"), true },
        { "upper", S("QWERTYQWERTY"), true },
        { "mixed", S("QwErTyQwErTy"), true },
        { "listed mixed-case", S("Mailcreated5240"), true },
        { "listed mixed-case, upper", S("MAILCREATED5240"), true },
        { "listed mixed-case, lower", S("mailcreated5240"), true },
        { "longest kind", S("PolniyPizdec0211"), true },
        { "digits", S("123456654321"), true },
        { "prefix of an entry", S("qwertyqwert"), false },
        { "entry plus a char", S("qwertyqwerty1"), false },
        { "entry with a NUL", S("qwertyqwerty\0"), false },
        { "not listed", S("correct horse battery staple"), false },
        { "empty", S(""), false },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (authd_password_is_common(cases[i].pw, cases[i].len) != cases[i].common)
            fail_msg("%s: want %s", cases[i].name, cases[i].common ? "common" : "not common");
    }
    /* Short common passwords are common, but fail the length rule first. */
    assert_true(authd_password_is_common(S("password")));
    assert_true(authd_password_is_common(S("PassWord")));
    authd_error err;
    assert_int_equal(authd_validate_password(S("password"), &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.reason, "INVALID_PASSWORD");

    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(
            authd_validate_password(cases[i].pw, cases[i].len, &err), AUTHD_INVALID_ARGUMENT);
        check_rejection(
            cases[i].name, &err, "WEAK_PASSWORD", "password", cases[i].pw, cases[i].len);
    }
}

/* The list as compiled: 10,000 lines, 9,913 after lower-casing and
 * de-duplication (measured: `tr A-Z a-z < data/common-passwords.txt |
 * sort -u | wc -l`). Strictly sorted in strcmp order, and every entry is
 * found by the lookup, so bsearch and the generator agree on the order. */
static void test_common_list(void **state)
{
    assert_int_equal(authd_common_password_count(), 9913);
    assert_int_equal(authd_common_passwords_count, authd_common_password_count());
    for (size_t i = 0; i < authd_common_passwords_count; i++) {
        const char *e = authd_common_passwords[i];
        if (i > 0 && strcmp(authd_common_passwords[i - 1], e) >= 0)
            fail_msg("entry %zu out of order", i);
        for (const char *p = e; *p; p++)
            assert_false(*p >= 'A' && *p <= 'Z');
        if (!authd_password_is_common(e, strlen(e)))
            fail_msg("entry %zu not found", i);
    }
}

/* ---- strength (zxcvbn) ----------------------------------------------------- */

#define TOO_EASY "password: too easy to guess: "

/* expect_weak: pw passes the length/encoding/common rules (so only the
 * estimator can catch it), and is refused with exactly message. */
static void expect_weak(
    const char *name, const char *pw, const char *username, const char *email, const char *message)
{
    authd_error err = { 0 };
    if (authd_validate_password(pw, strlen(pw), &err) != AUTHD_OK)
        fail_msg("%s: refused before the estimator: %s", name, err.message);
    if (authd_password_strong_enough(pw, username, email, 0, &err) != AUTHD_INVALID_ARGUMENT)
        fail_msg("%s: accepted", name);
    check_rejection(name, &err, "WEAK_PASSWORD", "password", pw, strlen(pw));
    if (strcmp(err.message, message) != 0)
        fail_msg("%s: message \"%s\", want \"%s\"", name, err.message, message);
}

/* Finding 9: these four were accepted (12+ characters, not in the list);
 * each is now refused, saying why. */
static void test_strength_finding9(void **state)
{
    static const struct {
        const char *pw, *message;
    } cases[] = {
        { "123456789012", TOO_EASY "a sequence (like 1234 or abcd)" },
        { "aaaaaaaaaaaa", TOO_EASY "a repeated pattern" },
        { "password1234", TOO_EASY "a common password with small changes" },
        { "Password1234!", TOO_EASY "a common password with small changes" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_weak(cases[i].pw, cases[i].pw, "newuser", "newuser@example.com", cases[i].message);
    (void)state;
}

/* Other kinds of weakness each get their own reason. */
static void test_strength_reasons(void **state)
{
    static const struct {
        const char *pw, *message;
    } cases[] = {
        { "abcabcabcabc", TOO_EASY "a repeated pattern" },
        { "11111111111a", TOO_EASY "a repeated pattern" },
        { "asdfghjkl;12", TOO_EASY "a keyboard pattern (like qwerty)" },
        { "01011990xyz!", TOO_EASY "mostly a date or year" },
        { "P@$$w0rd12345", TOO_EASY "a common password with small changes" },
        { "winterdragon",
            TOO_EASY "only common words or passwords; add more words, or less "
                     "common ones" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_weak(cases[i].pw, cases[i].pw, "newuser", "newuser@example.com", cases[i].message);
    (void)state;
}

/* The username, the email's local part and their pieces are context words:
 * "zorblax2024!!" is strong for anyone but zorblax. */
static void test_strength_context_words(void **state)
{
    static const char ctx[] = TOO_EASY "contains your username or email address";
    authd_error err;

    assert_true(authd_password_strength("zorblax2024!!", NULL, 30, NULL) >= 30);
    assert_int_equal(
        authd_password_strong_enough("zorblax2024!!", "someone", "someone@example.com", 0, &err),
        AUTHD_OK);
    expect_weak("username + digits", "zorblax2024!!", "zorblax", "someone@example.com", ctx);
    expect_weak("username twice", "Zorblax_Zorblax", "zorblax", "someone@example.com", ctx);
    expect_weak("email local part", "zorblax2024!!", "someone", "zorblax@example.com", ctx);
    expect_weak("piece of the username", "quibbix2024!!", "quibbix.vent", "x@example.com", ctx);
    expect_weak("piece of the email", "quibbix2024!!", "someone", "vent+quibbix@example.com", ctx);
    /* NULL context is allowed */
    assert_int_equal(authd_password_strong_enough("zorblax2024!!", NULL, NULL, 0, &err), AUTHD_OK);
    (void)state;
}

/* Passphrases and random passwords pass, in any script, up to 128
 * characters. */
static void test_strength_good(void **state)
{
    static const char *const good[] = {
        "correct horse battery staple",
        "mauve kettle under oak",
        "gravel-pianist-orbit-lemon",
        "my cat eats blue cheese",
        "vacuum-stapler-7-tundra",
        "Jb8#kq2!Lm9z",
        "Tr0ub4dor&3xyz",
        "Schnee f\xc3\xa4llt \xc3\xbc"
        "ber \xc3\x84pfel",
        "survives a restart",
        "X7v!pQ2#rL9@wE4$tY6%uI8^oP0&aS3*dF5(gH1)jK7-lZ9_xC2+vB4=nM6[qW8]eR0{tY2}uI4|oP6;aS8:dF0'"
        "gH2,jK4.lZ6/xC8?vB0~nM2`qW4<eR6>tY8",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        authd_error err = { 0 };
        if (authd_validate_password(good[i], strlen(good[i]), &err) != AUTHD_OK
            || authd_password_strong_enough(good[i], "newuser", "newuser@example.com", 0, &err)
                != AUTHD_OK)
            fail_msg("\"%s\" refused: %s", good[i], err.message);
    }
    (void)state;
}

/* min_bits: 0 means the default; a higher threshold refuses more. The
 * worst case for cost, 128 repeated characters, is still refused (its cost
 * is measured and reported, not timed here). */
static void test_strength_threshold(void **state)
{
    authd_error err;
    double bits = authd_password_strength("Tr0ub4dor&3xyz", NULL, 0, NULL);
    assert_true(bits > 40 && bits < 70);
    assert_int_equal(authd_password_strong_enough("Tr0ub4dor&3xyz", "u1", NULL, 0, &err), AUTHD_OK);
    assert_int_equal(authd_password_strong_enough(
                         "Tr0ub4dor&3xyz", "u1", NULL, AUTHD_STRENGTH_MIN_BITS_DEFAULT, &err),
        AUTHD_OK);
    assert_int_equal(authd_password_strong_enough("Tr0ub4dor&3xyz", "u1", NULL, 80, &err),
        AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.reason, "WEAK_PASSWORD");

    char buf[129];
    memset(buf, 'a', 128);
    buf[128] = '\0';
    assert_int_equal(
        authd_password_strong_enough(buf, "u1", NULL, 0, &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.message, TOO_EASY "a repeated pattern");
    (void)state;
}

/* ---- roles -------------------------------------------------------------- */

static void test_role(void **state)
{
    static const char *const good[]
        = { "admin", "a", "0", "billing:read", "ops.team_1", "x-y", "a:b.c_d-e", "9lives" };
    static const char *const bad[] = { "", "Admin", "ADMIN", "-x", ".x", ":x", "_x", "a b", "a,b",
        "a/b", "a\"b", "caf\xc3\xa9", "a\tb" };
    char longest[AUTHD_ROLE_MAX + 2];
    authd_error err;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(authd_validate_role(good[i], strlen(good[i]), &err), AUTHD_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        if (authd_validate_role(bad[i], strlen(bad[i]), &err) != AUTHD_INVALID_ARGUMENT)
            fail_msg("role %zu accepted", i);
        check_rejection("role", &err, "INVALID_ROLE", "role", bad[i], strlen(bad[i]));
    }
    /* An embedded NUL is refused (the length covers it). */
    assert_int_equal(authd_validate_role("ad\0min", 6, &err), AUTHD_INVALID_ARGUMENT);
    memset(longest, 'r', sizeof longest);
    assert_int_equal(authd_validate_role(longest, AUTHD_ROLE_MAX, &err), AUTHD_OK);
    assert_int_equal(
        authd_validate_role(longest, AUTHD_ROLE_MAX + 1, &err), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_validate_role(NULL, 0, &err), AUTHD_INVALID_ARGUMENT);
}

static void test_roles_set(void **state)
{
    const char *set[AUTHD_ROLES_MAX + 1];
    char names[AUTHD_ROLES_MAX + 1][8];
    authd_error err;

    (void)state;
    assert_int_equal(authd_validate_roles(NULL, 0, &err), AUTHD_OK);
    for (size_t i = 0; i <= AUTHD_ROLES_MAX; i++) {
        snprintf(names[i], sizeof names[i], "r%zu", i);
        set[i] = names[i];
    }
    assert_int_equal(authd_validate_roles(set, AUTHD_ROLES_MAX, &err), AUTHD_OK);
    assert_int_equal(authd_validate_roles(set, AUTHD_ROLES_MAX + 1, &err), AUTHD_INVALID_ARGUMENT);
    assert_string_equal(err.reason, "INVALID_ROLE");
    set[3] = "r1"; /* twice */
    assert_int_equal(authd_validate_roles(set, 4, &err), AUTHD_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "twice"));
    set[3] = "R3";
    assert_int_equal(authd_validate_roles(set, 4, &err), AUTHD_INVALID_ARGUMENT);
    set[3] = NULL;
    assert_int_equal(authd_validate_roles(set, 4, &err), AUTHD_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_username),
        cmocka_unit_test(test_username_messages),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_email_lengths),
        cmocka_unit_test(test_password),
        cmocka_unit_test(test_password_encoding),
        cmocka_unit_test(test_password_messages),
        cmocka_unit_test(test_password_common),
        cmocka_unit_test(test_common_list),
        cmocka_unit_test(test_strength_finding9),
        cmocka_unit_test(test_strength_reasons),
        cmocka_unit_test(test_strength_context_words),
        cmocka_unit_test(test_strength_good),
        cmocka_unit_test(test_strength_threshold),
        cmocka_unit_test(test_role),
        cmocka_unit_test(test_roles_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
