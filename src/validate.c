/*
 * validate.c — what users may send: UTF-8, usernames, email addresses,
 * new passwords, and the canonical forms stored for them.
 *
 * Everything here is pure: no allocation, no global state except the
 * compiled-in common-password list. Error messages are fixed strings that
 * name the field and the rule; none of them ever includes the input.
 */
#include "validate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Generated from data/common-passwords.txt by cmake/embed_lines.cmake:
 * lower-cased, de-duplicated, sorted bytewise (strcmp order). */
extern const char *const authd_common_passwords[];
extern const size_t authd_common_passwords_count;

#define R_USERNAME "INVALID_USERNAME"
#define R_EMAIL    "INVALID_EMAIL"
#define R_PASSWORD "INVALID_PASSWORD"
#define R_WEAK     "WEAK_PASSWORD"
#define R_ROLE     "INVALID_ROLE"

/* Worst case: every code point takes four bytes. Checked before the UTF-8
 * scan so an enormous input costs nothing. */
#define PASSWORD_MAX_BYTES (AUTHD_PASSWORD_MAX * 4)

/* fail fills *err (when given) and returns AUTHD_INVALID_ARGUMENT, so every
 * rejection is one line at the call site. */
static authd_code fail(authd_error *err, const char *reason, const char *message)
{
    if (err != NULL) {
        err->reason = reason;
        snprintf(err->message, sizeof err->message, "%s", message);
    }
    return AUTHD_INVALID_ARGUMENT;
}

/* authd_utf8_valid follows the well-formed byte sequences table of
 * RFC 3629 / Unicode 15 §3.9 (Table 3-7): the second byte's range depends
 * on the lead byte, which is what rules out overlongs (C0, C1, E0 80..9F,
 * F0 80..8F), surrogates (ED A0..BF) and code points above U+10FFFF
 * (F4 90.., F5..FF). NUL is refused too: C code downstream would see a
 * shorter string than was checked ("admin\0x"). */
bool authd_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    if (s == NULL)
        return len == 0;
    while (i < len) {
        /* Eight ASCII bytes without NUL at a time: tokens are all ASCII. */
        while (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, sizeof w);
            if (((w | ((w - 0x0101010101010101u) & ~w)) & 0x8080808080808080u) != 0)
                break; /* a byte >= 0x80, or a NUL: the careful path */
            i += 8;
        }
        if (i >= len)
            break;
        unsigned char b = s[i];
        unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
        size_t n;

        if (b < 0x80) {
            if (b == 0)
                return false;
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF) {
            n = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            n = 3;
            if (b == 0xE0)
                lo = 0xA0;
            else if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            n = 4;
            if (b == 0xF0)
                lo = 0x90;
            else if (b == 0xF4)
                hi = 0x8F;
        } else {
            return false; /* stray continuation, C0/C1, F5..FF */
        }
        if (len - i < n || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static bool is_lower_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

authd_code authd_validate_username(
    const char *in, size_t len, char out[AUTHD_USERNAME_MAX + 1], authd_error *err)
{
    static const char rule[]
        = "username: must be 3 to 32 characters from a-z 0-9 . _ - (letters are lower-cased)";
    char buf[AUTHD_USERNAME_MAX + 1];

    if (!authd_utf8_valid(in, len))
        return fail(err, R_USERNAME, "username: must be valid UTF-8 without NUL");
    if (len < AUTHD_USERNAME_MIN || len > AUTHD_USERNAME_MAX)
        return fail(err, R_USERNAME, rule);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = ascii_lower((unsigned char)in[i]);
        if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-')
            return fail(err, R_USERNAME, rule);
        buf[i] = (char)c;
    }
    buf[len] = '\0';
    memcpy(out, buf, len + 1);
    return AUTHD_OK;
}

/* The role rule is narrow on purpose: roles travel in tokens' claims,
 * logs and the admin CLI's comma-separated lists, so no comma, space,
 * quote or upper case (which would invite "Admin" != "admin" confusion),
 * and ':' '.' for namespaces ("billing:read"). */
authd_code authd_validate_role(const char *in, size_t len, authd_error *err)
{
    static const char rule[] = "role: must be 1 to 64 characters from a-z 0-9 _ . : - and start "
                               "with a letter or digit";

    if (in == NULL || len < 1 || len > AUTHD_ROLE_MAX)
        return fail(err, R_ROLE, rule);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_lower_alnum(c))
            continue;
        if (i == 0 || (c != '_' && c != '.' && c != ':' && c != '-'))
            return fail(err, R_ROLE, rule);
    }
    return AUTHD_OK;
}

authd_code authd_validate_roles(const char *const *roles, size_t n, authd_error *err)
{
    authd_code rc;

    if (n > AUTHD_ROLES_MAX)
        return fail(err, R_ROLE, "roles: at most 16 roles per user");
    for (size_t i = 0; i < n; i++) {
        if (roles == NULL || roles[i] == NULL)
            return fail(err, R_ROLE, "roles: a role is missing");
        size_t len = strnlen(roles[i], AUTHD_ROLE_MAX + 1);
        if ((rc = authd_validate_role(roles[i], len, err)) != AUTHD_OK)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(roles[i], roles[j]) == 0)
                return fail(err, R_ROLE, "roles: a role is listed twice");
    }
    return AUTHD_OK;
}

/* RFC 5322 atext: letters, digits and these. */
static bool is_atext(unsigned char c)
{
    return is_lower_alnum(ascii_lower(c))
        || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* check_local: 1..64 of atext and '.', dots only between atext runs
 * (RFC 5322 dot-atom; no quoted strings, no comments). */
static const char *check_local(const unsigned char *s, size_t n)
{
    if (n < 1 || n > 64)
        return "email: the part before @ must be 1 to 64 characters";
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (i == 0 || i == n - 1 || s[i - 1] == '.')
                return "email: the part before @ must not start or end with a dot or hold two dots "
                       "in a row";
        } else if (!is_atext(s[i])) {
            return "email: the part before @ may hold only letters, digits, dots and ! # $ % & ' * "
                   "+ - / = ? ^ _ ` { | } ~";
        }
    }
    return NULL;
}

/* check_domain: labels of 1..63 [a-z0-9-] (case-insensitive), separated by
 * single dots, not starting or ending with '-'; at least two labels; the
 * last not all digits (so neither "localhost" nor an IPv4 address, nor an
 * address literal, passes). No trailing root dot. */
static const char *check_domain(const unsigned char *s, size_t n)
{
    static const char label_rule[]
        = "email: the domain must be dot-separated labels of 1 to 63 letters, digits or hyphens, "
          "not starting or ending with a hyphen";
    size_t labels = 0, start = 0;
    bool all_digits = true;

    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            size_t l = i - start;
            if (l < 1 || l > 63 || s[start] == '-' || s[i - 1] == '-')
                return label_rule;
            labels++;
            if (i < n) {
                start = i + 1;
                all_digits = true;
            }
            continue;
        }
        unsigned char c = ascii_lower(s[i]);
        if (!is_lower_alnum(c) && c != '-')
            return label_rule;
        if (!(c >= '0' && c <= '9'))
            all_digits = false;
    }
    if (labels < 2 || all_digits)
        return "email: the domain must have at least two labels and a top-level label that is not "
               "all digits";
    return NULL;
}

/* The rules are the header's, checked in this order (the first failure is
 * reported): length 1..254 bytes; valid UTF-8 without NUL; ASCII only;
 * exactly one '@'; local part; domain. Addresses are compared and stored
 * lower-cased whole: strictly the local part is case-sensitive, but no
 * provider we care about treats it so, and one canonical form keeps
 * "Bob@x.org" and "bob@x.org" from being two accounts. */
authd_code authd_validate_email(
    const char *in, size_t len, char out[AUTHD_EMAIL_MAX + 1], authd_error *err)
{
    const unsigned char *s = (const unsigned char *)in;
    const unsigned char *at = NULL;
    const char *why;
    char buf[AUTHD_EMAIL_MAX + 1];

    if (len == 0 || len > AUTHD_EMAIL_MAX)
        return fail(err, R_EMAIL, "email: must be 1 to 254 characters");
    if (!authd_utf8_valid(in, len))
        return fail(err, R_EMAIL, "email: must be valid UTF-8 without NUL");
    for (size_t i = 0; i < len; i++) {
        if (s[i] >= 0x80)
            return fail(
                err, R_EMAIL, "email: must be ASCII; internationalized addresses are not accepted");
        if (s[i] == '@') {
            if (at != NULL)
                return fail(err, R_EMAIL, "email: must contain exactly one @");
            at = s + i;
        }
    }
    if (at == NULL)
        return fail(err, R_EMAIL, "email: must contain exactly one @");
    if ((why = check_local(s, (size_t)(at - s))) != NULL)
        return fail(err, R_EMAIL, why);
    if ((why = check_domain(at + 1, len - (size_t)(at - s) - 1)) != NULL)
        return fail(err, R_EMAIL, why);
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)ascii_lower(s[i]);
    buf[len] = '\0';
    memcpy(out, buf, len + 1);
    return AUTHD_OK;
}

/* Lookup key for bsearch: the candidate as given, lower-cased on the fly,
 * so the password is never copied. */
struct pw_key {
    const unsigned char *s;
    size_t n;
};

/* cmp_common orders exactly as strcmp would order the lower-cased key
 * against an entry (entries hold no NUL, and a key with a NUL inside sorts
 * consistently and matches nothing). */
static int cmp_common(const void *k, const void *e)
{
    const struct pw_key *key = k;
    const unsigned char *ent = *(const unsigned char *const *)e;

    for (size_t i = 0;; i++) {
        if (i == key->n)
            return ent[i] == '\0' ? 0 : -1;
        if (ent[i] == '\0')
            return 1;
        unsigned char c = ascii_lower(key->s[i]);
        if (c != ent[i])
            return c < ent[i] ? -1 : 1;
    }
}

bool authd_password_is_common(const char *pw, size_t len)
{
    struct pw_key key = { (const unsigned char *)pw, len };

    if (pw == NULL)
        return false;
    return bsearch(&key, authd_common_passwords, authd_common_passwords_count,
               sizeof authd_common_passwords[0], cmp_common)
        != NULL;
}

size_t authd_common_password_count(void)
{
    return authd_common_passwords_count;
}

/* Lengths count code points (NIST SP 800-63B §5.1.1.2): every character is
 * allowed and counts as one, so a 12-character password in any script is
 * long enough. A byte cap comes first so the scan itself is bounded. */
authd_code authd_validate_password(const char *pw, size_t len, authd_error *err)
{
    size_t cps = 0;

    if (len > PASSWORD_MAX_BYTES)
        return fail(err, R_PASSWORD, "password: must be at most 128 characters");
    if (!authd_utf8_valid(pw, len))
        return fail(err, R_PASSWORD, "password: must be valid UTF-8 without NUL");
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)pw[i] & 0xC0) != 0x80)
            cps++;
    if (cps < AUTHD_PASSWORD_MIN)
        return fail(err, R_PASSWORD, "password: must be at least 12 characters");
    if (cps > AUTHD_PASSWORD_MAX)
        return fail(err, R_PASSWORD, "password: must be at most 128 characters");
    if (authd_password_is_common(pw, len))
        return fail(err, R_WEAK, "password: is too common; choose a less common one");
    return AUTHD_OK;
}
