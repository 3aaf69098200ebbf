/*
 * it_strength.c — new-password strength through Register on the real
 * binary: the four passwords of finding 9, context words, good passphrases,
 * the --password-min-bits setting and its floor.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOO_EASY "password: too easy to guess: "

/* expect_weak registers and asserts INVALID_ARGUMENT / WEAK_PASSWORD with
 * exactly message. */
static void expect_weak(
    authd_client *c, const char *user, const char *email, const char *pw, const char *message)
{
    authd_status st;
    it_register(c, user, email, pw, &st, NULL);
    IT_EXPECT(&st, AUTHD_INVALID_ARGUMENT, "WEAK_PASSWORD");
    if (strcmp(st.message, message) != 0)
        fail_msg("\"%s\": message \"%s\", want \"%s\"", pw, st.message, message);
}

/* Finding 9: accepted before (12+ characters, not in the common list);
 * now each is refused with its reason, and nothing is stored: the same
 * username then registers with a good passphrase. */
static void strength_finding9_refused(void **state)
{
    static const struct {
        const char *pw, *message;
    } cases[] = {
        { "123456789012", TOO_EASY "a sequence (like 1234 or abcd)" },
        { "aaaaaaaaaaaa", TOO_EASY "a repeated pattern" },
        { "password1234", TOO_EASY "a common password with small changes" },
        { "Password1234!", TOO_EASY "a common password with small changes" },
    };
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status st;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_weak(c, "weakling", "weakling@example.com", cases[i].pw, cases[i].message);
    it_login(c, "weakling", "password1234", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_register(c, "weakling", "weakling@example.com", "gravel-pianist-orbit-lemon", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login(c, "weakling", "gravel-pianist-orbit-lemon", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* 128 repeated characters: the estimator's slowest input (about 10 ms,
     * on the hashing pool), still refused */
    char longpw[129];
    memset(longpw, 'a', 128);
    longpw[128] = '\0';
    expect_weak(c, "weakling2", "weakling2@example.com", longpw, TOO_EASY "a repeated pattern");

    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* The username and the email's local part are context words: a password
 * built on them is refused, while the same password is fine for someone
 * else. */
static void strength_context_words(void **state)
{
    static const char ctx[] = TOO_EASY "contains your username or email address";
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status st;

    expect_weak(c, "zorblax", "zorblax@example.com", "zorblax2024!!", ctx);
    expect_weak(c, "zorblax", "zorblax@example.com", "Zorblax_Zorblax", ctx);
    expect_weak(c, "someone", "quibbix.vent@example.com", "quibbix2024!!", ctx);
    it_register(c, "someone", "someone@example.com", "zorblax2024!!", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Passphrases and random passwords register. */
static void strength_good_passwords_register(void **state)
{
    static const char *const good[] = {
        "correct horse battery staple",
        "mauve kettle under oak",
        "my cat eats blue cheese",
        "Jb8#kq2!Lm9z",
        "Schnee f\xc3\xa4llt \xc3\xbc"
        "ber \xc3\x84pfel",
    };
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char user[32], email[64];
        authd_status st;
        snprintf(user, sizeof user, "good%zu", i);
        snprintf(email, sizeof email, "good%zu@example.com", i);
        it_register(c, user, email, good[i], &st, NULL);
        IT_EXPECT(&st, AUTHD_OK, NULL);
    }
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* --password-min-bits raises the bar ("Tr0ub4dor&3xyz" is about 55 bits);
 * below its floor (26 bits) authd does not start. */
static void strength_min_bits_setting(void **state)
{
    it_opts o = { .extra = { "--password-min-bits", "80" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    authd_status st;

    it_register(c, "troubadour", "t@example.com", "Tr0ub4dor&3xyz", &st, NULL);
    IT_EXPECT(&st, AUTHD_INVALID_ARGUMENT, "WEAK_PASSWORD");
    it_register(c, "troubadour", "t@example.com", "correct horse battery staple mauve", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);

    s = it_start(NULL);
    c = it_client(s);
    it_register(c, "troubadour", "t@example.com", "Tr0ub4dor&3xyz", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);

    it_opts low = { .extra = { "--password-min-bits", "20" } };
    s = it_new(&low);
    const char *argv[64];
    it_proc p;
    it_argv(s, NULL, argv, sizeof argv / sizeof argv[0]);
    it_run(argv, NULL, NULL, &p);
    if (p.status == 0 || strstr(p.err, "password-min-bits") == NULL)
        fail_msg("--password-min-bits 20: status %d, stderr:\n%s", p.status, p.err);
    it_proc_free(&p);
    it_free(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(strength_finding9_refused, it_teardown),
        cmocka_unit_test_teardown(strength_context_words, it_teardown),
        cmocka_unit_test_teardown(strength_good_passwords_register, it_teardown),
        cmocka_unit_test_teardown(strength_min_bits_setting, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
