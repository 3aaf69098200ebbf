/*
 * test_password.c — argon2id hashing and the bounded worker pool.
 *
 * Uses cheap argon2 parameters (t=1, 64 KiB) so the suite stays
 * fast; the product default is checked separately to stay >= OWASP's minimum.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "password.h"
#include "workpool.h"

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

/* ---- workpool ---- */

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    atomic_int started;
    atomic_int ran;
};

static void blocked_job(void *arg)
{
    struct gate *g = arg;
    atomic_fetch_add(&g->started, 1);
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&g->ran, 1);
}

static void test_pool_bounded_queue(void **state)
{
    (void)state;
    struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, 0 };
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 2, .queue_max = 3, .nice = 5 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);

    /* 2 running + 3 queued fit; the 6th is refused at once. Wait until both
     * workers hold a job so the count is exact. */
    int accepted = 0;
    for (int i = 0; i < 2; i++)
        accepted += authd_workpool_submit(p, blocked_job, &g) == AUTHD_OK;
    for (int spin = 0; spin < 5000 && atomic_load(&g.started) != 2; spin++)
        usleep(1000); /* poll, bounded at 5 s */
    assert_int_equal(atomic_load(&g.started), 2);
    assert_int_equal(authd_workpool_pending(p), 2);
    for (int i = 0; i < 4; i++)
        accepted += authd_workpool_submit(p, blocked_job, &g) == AUTHD_OK;
    assert_int_equal(accepted, 5);
    assert_int_equal(authd_workpool_submit(p, blocked_job, &g), AUTHD_RESOURCE_EXHAUSTED);

    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    authd_workpool_destroy(p); /* runs everything queued */
    assert_int_equal(atomic_load(&g.ran), 5);
}

static void count_job(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void test_pool_runs_all(void **state)
{
    (void)state;
    atomic_int n = 0;
    authd_workpool *p = NULL;
    authd_workpool_options o = { .threads = 4, .queue_max = 10000, .nice = 0 };
    assert_int_equal(authd_workpool_create(&o, &p), AUTHD_OK);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(authd_workpool_submit(p, count_job, &n), AUTHD_OK);
    authd_workpool_destroy(p);
    assert_int_equal(atomic_load(&n), 5000);
}

static void test_pool_invalid_options(void **state)
{
    (void)state;
    authd_workpool *p = NULL;
    authd_workpool_options none = { .threads = 0, .queue_max = 1 };
    authd_workpool_options noq = { .threads = 1, .queue_max = 0 };
    assert_int_equal(authd_workpool_create(&none, &p), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_workpool_create(&noq, &p), AUTHD_INVALID_ARGUMENT);
    authd_workpool_destroy(NULL);
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
        cmocka_unit_test(test_pool_bounded_queue),
        cmocka_unit_test(test_pool_runs_all),
        cmocka_unit_test(test_pool_invalid_options),
    };
    return cmocka_run_group_tests_name("password", tests, NULL, NULL);
}
