/*
 * test_health.c — the readiness checks (health.h): what /readyz and the
 * Health RPC report through start-up, a failing check and draining.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "health.h"

/* One process-wide state: the cases run in order, as a life would. */
static void health_life_cycle(void **state)
{
    const char *f[AUTHD_HEALTH_CHECKS_MAX];
    size_t n = 99;

    /* nothing declared yet: not serving, nothing named */
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_NOT_SERVING);
    assert_int_equal(n, 0);

    authd_health_expect(AUTHD_HEALTH_STORE | AUTHD_HEALTH_KEYS | AUTHD_HEALTH_LISTENERS);
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_NOT_SERVING);
    assert_int_equal(n, 3);
    assert_string_equal(f[0], "store");
    assert_string_equal(f[1], "keys");
    assert_string_equal(f[2], "listeners");

    authd_health_set(AUTHD_HEALTH_STORE, true);
    authd_health_set(AUTHD_HEALTH_KEYS, true);
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_NOT_SERVING);
    assert_int_equal(n, 1);
    assert_string_equal(f[0], "listeners");

    /* a check not expected (no side port) does not count */
    authd_health_set(AUTHD_HEALTH_LISTENERS, true);
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_SERVING);
    assert_int_equal(n, 0);
    assert_string_equal(authd_health_status_name(AUTHD_HEALTH_SERVING), "SERVING");

    /* a check that fails later */
    authd_health_set(AUTHD_HEALTH_KEYS, false);
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_NOT_SERVING);
    assert_int_equal(n, 1);
    assert_string_equal(f[0], "keys");
    authd_health_set(AUTHD_HEALTH_KEYS, true);

    /* draining wins over everything, and is named */
    authd_health_set(AUTHD_HEALTH_DRAINING, true);
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_STATE_DRAINING);
    assert_int_equal(n, 1);
    assert_string_equal(f[0], "draining");
    assert_string_equal(authd_health_status_name(AUTHD_HEALTH_STATE_DRAINING), "DRAINING");
    authd_health_set(AUTHD_HEALTH_STORE, false);
    assert_int_equal(authd_health_get(f, AUTHD_HEALTH_CHECKS_MAX, &n), AUTHD_HEALTH_STATE_DRAINING);
    assert_int_equal(n, 2);

    /* a small cap is respected */
    assert_int_equal(authd_health_get(f, 1, &n), AUTHD_HEALTH_STATE_DRAINING);
    assert_int_equal(n, 1);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_life_cycle),
    };
    return cmocka_run_group_tests_name("unit.test_health", tests, NULL, NULL);
}
