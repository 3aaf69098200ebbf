/*
 * test_user_pattern.c — unit tests of the benchmark user-name patterns
 * (src/tools/user_pattern.c), shared by authd-seed and authbench.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "user_pattern.h"

static void test_parse_and_format(void **state)
{
    static const struct {
        const char *pattern;
        unsigned long n;
        const char *want;
    } cases[] = {
        { "seed%07u", 0, "seed0000000" },
        { "seed%07u", 999999, "seed0999999" },
        { "seed%07u", 12345678, "seed12345678" }, /* wider than the width: all digits */
        { "%u", 42, "42" },
        { "u%4u.x", 7, "u   7.x" },
        { "a%%b%03uc%%", 5, "a%b005c%" },
        { "%0u", 0, "0" },
        { "x%020u", 18446744073709551615ul, "x18446744073709551615" },
    };
    char out[64];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        user_pattern p;
        size_t len;
        assert_true(user_pattern_parse(cases[i].pattern, &p));
        len = user_pattern_format(&p, cases[i].n, out, sizeof out);
        print_message("%s %lu -> %s\n", cases[i].pattern, cases[i].n, out);
        assert_int_equal(len, strlen(cases[i].want));
        assert_string_equal(out, cases[i].want);
    }
}

static void test_parse_rejects(void **state)
{
    static const char *const bad[] = {
        "",
        "seed",
        "seed%d",
        "seed%s",
        "%u%u",
        "a%ub%07u",
        "%",
        "a%",
        "%-5u",
        "%lu",
        "%021u",
        "%07",
        "%%",
        "%99999999999999999999u",
        "0123456789012345678901234567890123456789012345678901234567890123456789%u",
    };
    user_pattern p;

    memset(&p, 0x5a, sizeof p);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("refuses '%s'\n", bad[i]);
        assert_false(user_pattern_parse(bad[i], &p));
        assert_int_equal(((unsigned char *)&p)[0], 0x5a); /* untouched */
    }
    assert_false(user_pattern_parse(NULL, &p));
}

static void test_format_bounds(void **state)
{
    user_pattern p;
    char out[12];

    assert_true(user_pattern_parse("seed%07u", &p));
    assert_int_equal(user_pattern_format(&p, 1, out, sizeof out), 11); /* 11 + NUL fits */
    assert_int_equal(user_pattern_format(&p, 10000000, out, sizeof out), 0); /* 12 does not */
    assert_int_equal(user_pattern_format(&p, 1, out, 11), 0);
}

/* Distinct numbers give distinct names, also without padding and with a
 * suffix that starts with a digit. */
static void test_distinct(void **state)
{
    user_pattern p;
    char a[32], b[32];

    assert_true(user_pattern_parse("u%u1", &p));
    for (unsigned long i = 0; i < 2000; i++) {
        user_pattern_format(&p, i, a, sizeof a);
        for (unsigned long j = i + 1; j < 2000; j += 37) {
            user_pattern_format(&p, j, b, sizeof b);
            assert_string_not_equal(a, b);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_format_bounds),
        cmocka_unit_test(test_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
