/*
 * strength.c — the password strength estimate (zxcvbn) and the reason
 * given when a password is refused.
 *
 * Why zxcvbn and not libpwquality: measured on Debian 12 (issue 7 note),
 * libpwquality accepts "password1234" and "Password1234!" (scores 22 and 40
 * of 100, no error), needs /etc/security/pwquality.conf and cracklib's
 * dictionaries at run time, is not thread-safe (cracklib keeps the open
 * dictionary in static variables) and costs 0.3-16 ms per check. zxcvbn
 * refuses all four of finding 9, has its dictionary compiled in (nothing to
 * read at run time, no mutable global state), and costs 20-45 µs for a
 * typical password.
 */
#include "strength.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zxcvbn.h>

#define R_WEAK "WEAK_PASSWORD"

#define WORD_MAX (AUTHD_EMAIL_MAX + 1)

const char *authd_weakness_text(authd_weakness w)
{
    switch (w) {
    case AUTHD_WEAK_NONE:
        return "strong enough";
    case AUTHD_WEAK_CONTEXT:
        return "contains your username or email address";
    case AUTHD_WEAK_REPEAT:
        return "a repeated pattern";
    case AUTHD_WEAK_SEQUENCE:
        return "a sequence (like 1234 or abcd)";
    case AUTHD_WEAK_KEYBOARD:
        return "a keyboard pattern (like qwerty)";
    case AUTHD_WEAK_DATE:
        return "mostly a date or year";
    case AUTHD_WEAK_COMMON_CHANGED:
        return "a common password with small changes";
    case AUTHD_WEAK_COMMON_WORDS:
        return "only common words or passwords; add more words, or less common ones";
    case AUTHD_WEAK_SHORT:
        break;
    }
    return "too short for the kinds of characters it uses";
}

/* only_lower_words: true when pw is lower-case ASCII letters and spaces,
 * which makes a dictionary hit "common words" rather than "a common
 * password with small changes" (digits, symbols, capitals). */
static bool only_lower_words(const char *pw)
{
    for (const unsigned char *p = (const unsigned char *)pw; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == ' '))
            return false;
    return true;
}

/* classify names the weakest part of a password zxcvbn found weak: a
 * context word anywhere wins (it is the most specific advice); otherwise
 * the kind of match that covers the most characters, ties going to the
 * earlier kind in authd_weakness order. */
static authd_weakness classify(const char *pw, const ZxcMatch_t *info)
{
    int cover[AUTHD_WEAK_SHORT + 1] = { 0 };
    bool leet = false;

    for (const ZxcMatch_t *m = info; m != NULL; m = m->Next) {
        authd_weakness w;
        if (m->Length <= 0)
            continue; /* LONG_PWD_MATCH: the tail beyond zxcvbn's detail length */
        if ((m->Type & MULTIPLE_MATCH) != 0) {
            cover[AUTHD_WEAK_REPEAT] += m->Length;
            continue;
        }
        switch ((int)m->Type) {
        case USER_MATCH:
        case USER_LEET_MATCH:
            return AUTHD_WEAK_CONTEXT;
        case REPEATS_MATCH:
            w = AUTHD_WEAK_REPEAT;
            break;
        case SEQUENCE_MATCH:
            w = AUTHD_WEAK_SEQUENCE;
            break;
        case SPATIAL_MATCH:
            w = AUTHD_WEAK_KEYBOARD;
            break;
        case DATE_MATCH:
        case YEAR_MATCH:
            w = AUTHD_WEAK_DATE;
            break;
        case DICT_LEET_MATCH:
            leet = true;
            w = AUTHD_WEAK_COMMON_CHANGED;
            break;
        case DICTIONARY_MATCH:
            w = AUTHD_WEAK_COMMON_CHANGED;
            break;
        default:
            continue; /* brute force: nothing to name */
        }
        cover[w] += m->Length;
    }
    if (cover[AUTHD_WEAK_COMMON_CHANGED] > 0 && !leet && only_lower_words(pw)) {
        cover[AUTHD_WEAK_COMMON_WORDS] = cover[AUTHD_WEAK_COMMON_CHANGED];
        cover[AUTHD_WEAK_COMMON_CHANGED] = 0;
    }
    authd_weakness best = AUTHD_WEAK_SHORT;
    int most = 0;
    for (int w = AUTHD_WEAK_REPEAT; w < AUTHD_WEAK_SHORT; w++) {
        if (cover[w] > most) {
            most = cover[w];
            best = (authd_weakness)w;
        }
    }
    return best;
}

double authd_password_strength(
    const char *pw, const char *const *context, double min_bits, authd_weakness *why)
{
    ZxcMatch_t *info = NULL;
    double bits;

    /* zxcvbn's prototype lacks the inner const; it only reads the words. */
    bits = ZxcvbnMatch(pw, (const char **)(uintptr_t)context, why != NULL ? &info : NULL);
    if (why != NULL) {
        *why = bits >= min_bits ? AUTHD_WEAK_NONE : classify(pw, info);
        ZxcvbnFreeInfo(info);
    }
    return bits;
}

/* add_word appends s[0..n) to the context list when it is long enough to
 * mean something (3+ characters) and there is room. */
static void add_word(
    char words[][WORD_MAX], const char **list, size_t *count, const char *s, size_t n)
{
    if (n < 3 || n >= WORD_MAX || *count >= AUTHD_STRENGTH_CONTEXT_MAX)
        return;
    memcpy(words[*count], s, n);
    words[*count][n] = '\0';
    list[*count] = words[*count];
    (*count)++;
}

/* add_with_pieces adds s[0..n) and, when it has separators, each piece. */
static void add_with_pieces(
    char words[][WORD_MAX], const char **list, size_t *count, const char *s, size_t n)
{
    size_t start = 0;
    bool split = false;

    add_word(words, list, count, s, n);
    for (size_t i = 0; i <= n; i++) {
        if (i == n || strchr("._-+", s[i]) != NULL) {
            if (i < n)
                split = true;
            if (split)
                add_word(words, list, count, s + start, i - start);
            start = i + 1;
        }
    }
}

authd_code authd_password_strong_enough(
    const char *pw, const char *username, const char *email, unsigned min_bits, authd_error *err)
{
    char words[AUTHD_STRENGTH_CONTEXT_MAX][WORD_MAX];
    const char *list[AUTHD_STRENGTH_CONTEXT_MAX + 1];
    size_t count = 0;
    authd_weakness why;

    if (username != NULL)
        add_with_pieces(words, list, &count, username, strlen(username));
    if (email != NULL) {
        const char *at = strchr(email, '@');
        add_with_pieces(
            words, list, &count, email, at != NULL ? (size_t)(at - email) : strlen(email));
    }
    list[count] = NULL;
    if (min_bits == 0)
        min_bits = AUTHD_STRENGTH_MIN_BITS_DEFAULT;
    authd_password_strength(pw, list, (double)min_bits, &why);
    if (why == AUTHD_WEAK_NONE)
        return AUTHD_OK;
    if (err != NULL) {
        err->reason = R_WEAK;
        snprintf(err->message, sizeof err->message, "password: too easy to guess: %s",
            authd_weakness_text(why));
    }
    return AUTHD_INVALID_ARGUMENT;
}
