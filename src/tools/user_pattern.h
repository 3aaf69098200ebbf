/*
 * user_pattern.h — the names of benchmark users: "seed%07u" and the like.
 *
 * Shared by authd-seed, which stores users under these names, and
 * authbench, which logs in as them. A pattern is literal text around
 * exactly one conversion %u, %Nu or %0Nu (N at most 20); "%%" is a literal
 * percent sign. It is parsed here rather than handed to printf, so a
 * pattern from the command line is never a format string.
 */
#ifndef AUTHD_USER_PATTERN_H
#define AUTHD_USER_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

/* The defaults both tools agree on: benchmark data only, never real. */
#define USER_PATTERN_DEFAULT          "seed%07u"
#define USER_PATTERN_DEFAULT_DOMAIN   "example.com"
#define USER_PATTERN_DEFAULT_PASSWORD "authd-seed-password"

#define USER_PATTERN_TEXT_MAX 64

typedef struct user_pattern {
    char prefix[USER_PATTERN_TEXT_MAX + 1];
    char suffix[USER_PATTERN_TEXT_MAX + 1];
    unsigned width; /* minimum digits */
    bool zero; /* pad with zeros, not spaces */
} user_pattern;

/* user_pattern_parse reads pat into *out. False (and *out untouched) when
 * pat has no conversion or more than one, another conversion than u, or
 * literal text longer than USER_PATTERN_TEXT_MAX on either side. */
bool user_pattern_parse(const char *pat, user_pattern *out);

/* user_pattern_format writes the name of user n into out (cap bytes, NUL
 * included) and returns its length, or 0 when it does not fit. Distinct n
 * give distinct names. */
size_t user_pattern_format(const user_pattern *p, unsigned long n, char *out, size_t cap);

#endif
