/*
 * test_ratelimit.c — keyed token buckets, the log gate, source keys.
 *
 * Time is passed in, so every case runs on a made-up clock: no sleeps.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "netaddr.h"
#include "ratelimit.h"

#define S(x) ((uint64_t)(x)*1000000000u)

static authd_ratelimit *make(double rate, double burst, size_t keys)
{
    authd_ratelimit_options o = { .rate = rate, .burst = burst, .max_keys = keys };
    authd_ratelimit *rl = NULL;
    assert_int_equal(authd_ratelimit_create(&o, &rl), AUTHD_OK);
    return rl;
}

static void burst_then_refill(void **state)
{
    (void)state;
    authd_ratelimit *rl = make(2, 5, 1024);
    for (int i = 0; i < 5; i++)
        assert_true(authd_ratelimit_take(rl, "a", 1, 1, S(100)));
    assert_false(authd_ratelimit_take(rl, "a", 1, 1, S(100)));
    /* Another key has a bucket of its own. */
    assert_true(authd_ratelimit_take(rl, "b", 1, 1, S(100)));
    /* 2 tokens a second: half a second buys one. */
    assert_false(authd_ratelimit_take(rl, "a", 1, 1, S(100) + 400000000u));
    assert_true(authd_ratelimit_take(rl, "a", 1, 1, S(100) + 500000000u));
    assert_false(authd_ratelimit_take(rl, "a", 1, 1, S(100) + 500000000u));
    /* Never more than burst, however long the wait. */
    for (int i = 0; i < 5; i++)
        assert_true(authd_ratelimit_take(rl, "a", 1, 1, S(10000)));
    assert_false(authd_ratelimit_take(rl, "a", 1, 1, S(10000)));
    assert_int_equal(authd_ratelimit_evictions(rl), 0);
    authd_ratelimit_destroy(rl);
}

static void check_and_charge(void **state)
{
    (void)state;
    authd_ratelimit *rl = make(1, 3, 64);
    assert_true(authd_ratelimit_check(rl, "k", 1, 1, S(1)));
    for (int i = 0; i < 3; i++)
        authd_ratelimit_charge(rl, "k", 1, 1, S(1));
    assert_false(authd_ratelimit_check(rl, "k", 1, 1, S(1)));
    /* Charging past empty goes down to -burst and no further: 3 + 3 s at
     * 1/s to be allowed again, not 100 + 3. */
    for (int i = 0; i < 100; i++)
        authd_ratelimit_charge(rl, "k", 1, 1, S(1));
    assert_false(authd_ratelimit_check(rl, "k", 1, 1, S(4) - 1));
    assert_true(authd_ratelimit_check(rl, "k", 1, 1, S(5)));
    /* A negative charge refunds a token taken, never above burst. */
    authd_ratelimit *r2 = make(1, 3, 64);
    for (int i = 0; i < 3; i++)
        assert_true(authd_ratelimit_take(r2, "k", 1, 1, S(1)));
    assert_false(authd_ratelimit_check(r2, "k", 1, 1, S(1)));
    authd_ratelimit_charge(r2, "k", 1, -1, S(1));
    assert_true(authd_ratelimit_take(r2, "k", 1, 1, S(1)));
    for (int i = 0; i < 10; i++)
        authd_ratelimit_charge(r2, "k", 1, -1, S(1));
    for (int i = 0; i < 3; i++)
        assert_true(authd_ratelimit_take(r2, "k", 1, 1, S(1)));
    assert_false(authd_ratelimit_take(r2, "k", 1, 1, S(1)));
    authd_ratelimit_destroy(r2);
    authd_ratelimit_destroy(rl);
}

/* A flood of new keys cannot grow memory, and forgets quiet keys first:
 * a key still being limited survives while its neighbours are full ones. */
static void bounded_table(void **state)
{
    (void)state;
    authd_ratelimit *rl = make(1, 2, 256);
    char key[32];
    for (unsigned i = 0; i < 100000; i++) {
        int n = snprintf(key, sizeof key, "flood-%u", i);
        assert_true(authd_ratelimit_take(rl, key, (size_t)n, 1, S(50)));
    }
    /* Every flood key still holds 1 of 2 tokens, so the table is full of
     * keys with state: evictions were counted. */
    assert_true(authd_ratelimit_evictions(rl) > 0);
    /* Keys whose bucket refilled are forgotten for free (checking spends
     * nothing, so the new keys stay full too). */
    uint64_t before = authd_ratelimit_evictions(rl);
    for (unsigned i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "later-%u", i);
        assert_true(authd_ratelimit_check(rl, key, (size_t)n, 1, S(60)));
    }
    assert_int_equal(authd_ratelimit_evictions(rl), before);
    authd_ratelimit_destroy(rl);
}

static void bad_options(void **state)
{
    (void)state;
    authd_ratelimit *rl = NULL;
    authd_ratelimit_options o = { .rate = 0, .burst = 1, .max_keys = 64 };
    assert_int_equal(authd_ratelimit_create(&o, &rl), AUTHD_INVALID_ARGUMENT);
    o.rate = 1;
    o.burst = 0.5;
    assert_int_equal(authd_ratelimit_create(&o, &rl), AUTHD_INVALID_ARGUMENT);
    o.burst = 1;
    o.max_keys = 2;
    assert_int_equal(authd_ratelimit_create(&o, &rl), AUTHD_INVALID_ARGUMENT);
    assert_null(rl);
}

struct race {
    authd_ratelimit *rl;
    int granted;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 1000; i++)
        if (authd_ratelimit_take(r->rl, "shared", 6, 1, S(7)))
            r->granted++;
    return NULL;
}

/* Many threads spending one key at one instant get exactly burst tokens. */
static void concurrent_take(void **state)
{
    (void)state;
    authd_ratelimit *rl = make(1, 37, 64);
    pthread_t t[8];
    struct race r[8];
    int total = 0;
    for (int i = 0; i < 8; i++) {
        r[i] = (struct race) { rl, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, racer, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        total += r[i].granted;
    }
    assert_int_equal(total, 37);
    authd_ratelimit_destroy(rl);
}

static void lograte(void **state)
{
    (void)state;
    authd_lograte lr = AUTHD_LOGRATE_INIT;
    uint64_t sup = 99;
    assert_true(authd_lograte_allow(&lr, S(10), S(1000), &sup));
    assert_int_equal(sup, 0);
    for (int i = 0; i < 5; i++)
        assert_false(authd_lograte_allow(&lr, S(10), S(1005), NULL));
    assert_true(authd_lograte_allow(&lr, S(10), S(1010), &sup));
    assert_int_equal(sup, 5);
}

static void source_keys(void **state)
{
    (void)state;
    authd_source a, b;
    char txt[AUTHD_SOURCE_TEXT_MAX];

    assert_true(authd_source_from_text("192.0.2.7", 9, &a));
    assert_true(authd_source_is_v4(&a));
    authd_source_str(&a, txt);
    assert_string_equal(txt, "192.0.2.7");
    /* An IPv4-mapped IPv6 address is the IPv4 address. */
    assert_true(authd_source_from_text("::ffff:192.0.2.7", 16, &b));
    assert_memory_equal(a.key, b.key, sizeof a.key);
    /* IPv6: one /64 is one source, the next /64 another. */
    assert_true(authd_source_from_text("2001:db8:1:2:aaaa::1", 20, &a));
    assert_true(authd_source_from_text("2001:db8:1:2:ffff:ffff:ffff:ffff", 32, &b));
    assert_memory_equal(a.key, b.key, sizeof a.key);
    authd_source_str(&a, txt);
    assert_string_equal(txt, "2001:db8:1:2::/64");
    assert_true(authd_source_from_text("2001:db8:1:3::1", 15, &b));
    assert_memory_not_equal(a.key, b.key, sizeof a.key);
    /* Not addresses. */
    assert_false(authd_source_from_text("", 0, &a));
    assert_false(authd_source_from_text("example.com", 11, &a));
    assert_false(authd_source_from_text("192.0.2.7:80", 12, &a));
    assert_false(authd_source_from_text("[::1]", 5, &a));
    assert_false(authd_source_from_text("10.0.0.1\0x", 10, &a));
    assert_false(authd_source_from_text("10.0.0.256", 10, &a));

    struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(99) };
    inet_pton(AF_INET, "127.0.0.9", &s4.sin_addr);
    assert_true(authd_source_from_sockaddr((struct sockaddr *)&s4, &a));
    assert_true(authd_source_from_text("127.0.0.9", 9, &b));
    assert_memory_equal(a.key, b.key, sizeof a.key);
    struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:127.0.0.9", &s6.sin6_addr);
    assert_true(authd_source_from_sockaddr((struct sockaddr *)&s6, &b));
    assert_memory_equal(a.key, b.key, sizeof a.key);
    struct sockaddr unix_sa = { .sa_family = AF_UNIX };
    assert_false(authd_source_from_sockaddr(&unix_sa, &a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_refill),
        cmocka_unit_test(check_and_charge),
        cmocka_unit_test(bounded_table),
        cmocka_unit_test(bad_options),
        cmocka_unit_test(concurrent_take),
        cmocka_unit_test(lograte),
        cmocka_unit_test(source_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
