/*
 * test_password.c — argon2id hashing, reading a hash's parameters, and the
 * re-hash rule (only ever stronger). The worker pool is in test_workpool.c.
 *
 * Uses cheap argon2 parameters (t=1, 64 KiB) so the suite stays
 * fast; the product default is checked separately to stay >= OWASP's minimum.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <string.h>

#include "password.h"

static const authd_pwparams cheap = { 1, 64 * 1024 };

static void test_default_params_are_owasp_minimum(void **state)
{
    (void)state;
    assert_true(AUTHD_ARGON2_OPS_DEFAULT >= 2);
    assert_true(AUTHD_ARGON2_MEM_DEFAULT >= 19u * 1024u * 1024u);
    authd_pwparams p = { AUTHD_ARGON2_OPS_DEFAULT, AUTHD_ARGON2_MEM_DEFAULT };
    assert_int_equal(authd_pwparams_check(&p), AUTHD_OK);
}

static void test_params_check_rejects_nonsense(void **state)
{
    (void)state;
    authd_pwparams zero_ops = { 0, 64 * 1024 };
    authd_pwparams tiny_mem = { 2, 1024 };
    assert_int_equal(authd_pwparams_check(&zero_ops), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_pwparams_check(&tiny_mem), AUTHD_INVALID_ARGUMENT);
}

static void test_hash_verify_roundtrip(void **state)
{
    (void)state;
    char h[AUTHD_HASH_MAX];
    const char *pw = "correct horse battery staple";
    assert_int_equal(authd_password_hash(pw, strlen(pw), &cheap, h), AUTHD_OK);
    assert_non_null(strstr(h, "$argon2id$"));
    assert_true(authd_password_verify(h, pw, strlen(pw)));
    assert_false(authd_password_verify(h, "correct horse battery stapl", strlen(pw) - 1));
    assert_false(authd_password_verify(h, "Correct horse battery staple", strlen(pw)));
}

static void test_salted(void **state)
{
    (void)state;
    char a[AUTHD_HASH_MAX], b[AUTHD_HASH_MAX];
    assert_int_equal(authd_password_hash("same password!", 14, &cheap, a), AUTHD_OK);
    assert_int_equal(authd_password_hash("same password!", 14, &cheap, b), AUTHD_OK);
    assert_string_not_equal(a, b);
}

static void test_known_answer_verifies(void **state)
{
    (void)state;
    /* A hash string made by libsodium's crypto_pwhash_str (argon2id, t=1,
     * m=64 KiB) for "password123456"; verification must not depend on our
     * own hashing code. */
    char h[AUTHD_HASH_MAX];
    assert_int_equal(
        crypto_pwhash_str_alg(h, "password123456", 14, 1, 64 * 1024, crypto_pwhash_ALG_ARGON2ID13),
        0);
    assert_true(authd_password_verify(h, "password123456", 14));
    assert_false(authd_password_verify(h, "password123457", 14));
}

static void test_rejects_non_argon2id(void **state)
{
    (void)state;
    /* An argon2i string, or garbage, never verifies. */
    char h[AUTHD_HASH_MAX];
    assert_int_equal(
        crypto_pwhash_str_alg(h, "password123456", 14, 3, 64 * 1024, crypto_pwhash_ALG_ARGON2I13),
        0);
    assert_false(authd_password_verify(h, "password123456", 14));
    assert_false(authd_password_verify("", "x", 1));
    assert_false(authd_password_verify("$argon2id$garbage", "x", 1));
}

static void test_needs_rehash(void **state)
{
    (void)state;
    char h[AUTHD_HASH_MAX];
    authd_pwparams stronger = { 2, 128 * 1024 };
    assert_int_equal(authd_password_hash("a password here", 15, &cheap, h), AUTHD_OK);
    assert_false(authd_password_needs_rehash(h, &cheap));
    assert_true(authd_password_needs_rehash(h, &stronger));
}

static void test_params_read(void **state)
{
    (void)state;
    char h[AUTHD_HASH_MAX];
    authd_pwparams got, p = { 3, 96 * 1024 };
    assert_int_equal(authd_password_hash("a password here", 15, &p, h), AUTHD_OK);
    assert_true(authd_password_params(h, &got));
    assert_int_equal(got.opslimit, 3);
    assert_int_equal(got.memlimit, 96 * 1024);
    assert_true(authd_password_params("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", &got));
    assert_int_equal(got.opslimit, 2);
    assert_int_equal(got.memlimit, 19456u * 1024u);
    const char *bad[] = {
        "",
        "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=0,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=19456,t=0,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$t=2,m=19456,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=-5,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=99999999999999999999999,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2id$v=19$m=19456,t=2,p=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(authd_password_params(bad[i], &got));
}

/* Finding 10: with weaker settings a login re-hashed a 19 MiB hash down to
 * 8 KiB. Now each dimension only goes up. */
static void test_rehash_only_upwards(void **state)
{
    (void)state;
    const char *strong = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    authd_pwparams out = { 0, 0 };
    authd_pwparams weaker = { 1, 8 * 1024 };
    authd_pwparams same = { 2, 19456u * 1024u };
    authd_pwparams more_mem = { 1, 65536u * 1024u };
    authd_pwparams more_ops = { 4, 8 * 1024 };
    authd_pwparams both = { 3, 65536u * 1024u };

    assert_false(authd_password_rehash_params(strong, &weaker, &out));
    assert_false(authd_password_needs_rehash(strong, &weaker));
    assert_false(authd_password_rehash_params(strong, &same, &out));
    assert_int_equal(out.opslimit, 0); /* untouched */

    /* More memory wanted, fewer iterations: memory goes up, t stays 2. */
    assert_true(authd_password_rehash_params(strong, &more_mem, &out));
    assert_int_equal(out.opslimit, 2);
    assert_int_equal(out.memlimit, 65536u * 1024u);
    /* More iterations wanted, less memory: t goes up, m stays 19 MiB. */
    assert_true(authd_password_rehash_params(strong, &more_ops, &out));
    assert_int_equal(out.opslimit, 4);
    assert_int_equal(out.memlimit, 19456u * 1024u);
    assert_true(authd_password_rehash_params(strong, &both, &out));
    assert_int_equal(out.opslimit, 3);
    assert_int_equal(out.memlimit, 65536u * 1024u);

    /* An unreadable hash (cannot have verified anyway) gets the wanted ones. */
    assert_true(authd_password_rehash_params("$argon2id$junk", &weaker, &out));
    assert_int_equal(out.opslimit, 1);
    assert_int_equal(out.memlimit, 8 * 1024);

    /* A real hash made with cheap parameters, then the rule end to end. */
    char h[AUTHD_HASH_MAX], h2[AUTHD_HASH_MAX];
    authd_pwparams mixed = { 2, 32 * 1024 }, got;
    assert_int_equal(authd_password_hash("pw of a user", 12, &cheap, h), AUTHD_OK);
    assert_true(authd_password_rehash_params(h, &mixed, &out));
    assert_int_equal(authd_password_hash("pw of a user", 12, &out, h2), AUTHD_OK);
    assert_true(authd_password_params(h2, &got));
    assert_int_equal(got.opslimit, 2);
    assert_int_equal(got.memlimit, 64 * 1024); /* cheap's 64 KiB, not 32 */
    assert_true(authd_password_verify(h2, "pw of a user", 12));
    assert_false(authd_password_needs_rehash(h2, &mixed));
    assert_false(authd_password_needs_rehash(h2, &cheap));
}

static void test_floors_are_owasp_minimum(void **state)
{
    (void)state;
    assert_int_equal(AUTHD_ARGON2_OPS_FLOOR, 2);
    assert_int_equal(AUTHD_ARGON2_MEM_KIB_FLOOR, 19456);
    assert_true(AUTHD_ARGON2_OPS_DEFAULT >= AUTHD_ARGON2_OPS_FLOOR);
    assert_true(AUTHD_ARGON2_MEM_DEFAULT >= AUTHD_ARGON2_MEM_KIB_FLOOR * 1024u);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_params_are_owasp_minimum),
        cmocka_unit_test(test_params_check_rejects_nonsense),
        cmocka_unit_test(test_hash_verify_roundtrip),
        cmocka_unit_test(test_salted),
        cmocka_unit_test(test_known_answer_verifies),
        cmocka_unit_test(test_rejects_non_argon2id),
        cmocka_unit_test(test_needs_rehash),
        cmocka_unit_test(test_params_read),
        cmocka_unit_test(test_rehash_only_upwards),
        cmocka_unit_test(test_floors_are_owasp_minimum),
    };
    return cmocka_run_group_tests_name("password", tests, NULL, NULL);
}
