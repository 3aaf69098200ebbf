/*
 * it_users.c — `authd user ...` on the data directory of a RUNNING authd,
 * checked over the wire: the first admin made by `authd user add --role
 * admin` logs in and Verify answers its admin role; `disable` kills the
 * user's live token at its next Verify and refuses Login; `enable` lets
 * the user log in again; `roles` changes what the next Verify answers;
 * `delete` frees the username and the email for a new Register; the
 * last-admin rule refuses, and usage errors and weak passwords exit 2.
 *
 * The commands run as a second process on the same LMDB environment while
 * authd serves, which is the point: no restart, no signal.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PW  "correct horse battery staple 42"
#define PW2 "another long passphrase for ops 7"

/* user_cmd runs `authd user ARGS... --data-dir DIR` plus cheap argon2 (as
 * the harness gives the server) with stdin_data on stdin, and returns its
 * exit status; *p keeps its output (the caller frees it). */
static int user_cmd(const it_server *s, const char *stdin_data, it_proc *p, ...)
{
    const char *argv[32];
    size_t n = 0;
    va_list ap;
    const char *a;

    argv[n++] = AUTHD_BIN;
    argv[n++] = "user";
    va_start(ap, p);
    while ((a = va_arg(ap, const char *)) != NULL && n < 20)
        argv[n++] = a;
    va_end(ap);
    argv[n++] = "--data-dir";
    argv[n++] = s->data_dir;
    argv[n++] = "--argon2-ops";
    argv[n++] = "1";
    argv[n++] = "--argon2-mem-kib";
    argv[n++] = "64";
    argv[n++] = "--insecure-weak-params";
    argv[n] = NULL;
    it_run(argv, NULL, stdin_data, p);
    if (p->status != 0)
        fprintf(
            stderr, "[ users ] authd user %s: exit %d\n%s%s", argv[2], p->status, p->out, p->err);
    return p->status;
}

/* user_ok: the command exits 0 and prints want on stdout. */
static void user_ok(const it_server *s, const char *stdin_data, const char *want, ...)
{
    const char *args[16];
    size_t n = 0;
    va_list ap;
    const char *a;
    it_proc p;

    va_start(ap, want);
    while ((a = va_arg(ap, const char *)) != NULL && n < 15)
        args[n++] = a;
    va_end(ap);
    while (n < 15)
        args[n++] = NULL;
    assert_int_equal(user_cmd(s, stdin_data, &p, args[0], args[1], args[2], args[3], args[4],
                         args[5], args[6], args[7], NULL),
        0);
    assert_non_null(strstr(p.out, want));
    it_proc_free(&p);
}

static bool has_role(const Authd__V1__VerifyResponse *v, const char *role)
{
    for (size_t i = 0; i < v->n_roles; i++)
        if (strcmp(v->roles[i], role) == 0)
            return true;
    return false;
}

/* verify_roles verifies tok (asserting OK) and says whether it has role. */
static bool verify_has(authd_client *c, const char *tok, const char *role)
{
    Authd__V1__VerifyResponse *v = NULL;
    authd_status st;
    bool yes;

    it_verify(c, tok, &st, &v);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    yes = has_role(v, role);
    authd__v1__verify_response__free_unpacked(v, NULL);
    return yes;
}

/* expect_dead: tok fails Verify as a dead session's token should. */
static void expect_dead(authd_client *c, const char *tok)
{
    authd_status st;

    it_verify(c, tok, &st, NULL);
    assert_int_equal(st.code, AUTHD_UNAUTHENTICATED);
    if (strcmp(st.reason, "REVOKED") != 0 && strcmp(st.reason, "USER_DISABLED") != 0)
        fail_msg("Verify of a dead session's token answered %s", st.reason);
}

static void users_first_admin_lifecycle(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status st;
    char tok[4096], tok2[4096], tok3[4096];
    it_proc p;

    /* The first admin, made while authd runs; logs in over the wire, and
     * Verify answers the role from the store. */
    user_ok(s, PW "\n", "added user root", "add", "Root", "--email", "root@example.com", "--role",
        "admin", "--password-stdin", NULL);
    it_login_token(c, "root", PW, tok, sizeof tok, NULL);
    assert_true(verify_has(c, tok, "admin"));

    /* root is the last admin: disable, delete and losing the role are
     * refused, and the token still works. */
    assert_int_equal(user_cmd(s, NULL, &p, "disable", "root", NULL), 1);
    assert_non_null(strstr(p.err, "last active admin"));
    it_proc_free(&p);
    assert_int_equal(user_cmd(s, NULL, &p, "roles", "root", "--remove", "admin", NULL), 1);
    it_proc_free(&p);
    assert_int_equal(user_cmd(s, NULL, &p, "delete", "root@example.com", NULL), 1);
    it_proc_free(&p);
    assert_true(verify_has(c, tok, "admin"));

    /* A second admin; now root can be disabled: the live token dies at
     * its next Verify, and Login is refused like a wrong password. */
    user_ok(s, PW2 "\n", "added user ops", "add", "ops", "--email", "ops@example.com", "--role",
        "admin,support", "--password-stdin", NULL);
    user_ok(s, NULL, "user root: disabled", "disable", "root", NULL);
    expect_dead(c, tok);
    it_login(c, "root", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    /* ops is the last ACTIVE admin now. */
    assert_int_equal(user_cmd(s, NULL, &p, "disable", "ops", NULL), 1);
    it_proc_free(&p);

    /* Enabled again: a new login works; the old token stays dead. */
    user_ok(s, NULL, "user root: enabled", "enable", "root", NULL);
    it_login_token(c, "root", PW, tok2, sizeof tok2, NULL);
    assert_true(verify_has(c, tok2, "admin"));
    expect_dead(c, tok);

    /* Roles: the next Verify of the same token follows the store. */
    user_ok(s, NULL, "user root: roles auditor", "roles", "root", "--set", "auditor", NULL);
    assert_false(verify_has(c, tok2, "admin"));
    assert_true(verify_has(c, tok2, "auditor"));
    user_ok(s, NULL, "user root: roles auditor,admin", "roles", "root", "--add", "admin", NULL);
    assert_true(verify_has(c, tok2, "admin"));

    /* list, in username order, with a prefix. */
    user_ok(s, NULL, "root", "list", NULL);
    user_ok(s, NULL, "ops", "list", "--prefix", "o", NULL);
    assert_int_equal(user_cmd(s, NULL, &p, "list", "--prefix", "o", NULL), 0);
    assert_null(strstr(p.out, "root"));
    it_proc_free(&p);

    /* Delete: the token dies, and the username and email are free for a
     * new Register at once. */
    user_ok(s, NULL, "user root: deleted with 2 sessions", "delete", "root", NULL);
    expect_dead(c, tok2);
    it_login(c, "root", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_register(c, "root", "root@example.com", "a brand new passphrase 2026", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, "root", "a brand new passphrase 2026", tok3, sizeof tok3, NULL);
    assert_false(verify_has(c, tok3, "admin")); /* a new user: no roles */

    /* The store's tables agree (authd-fsck, read-only, while authd runs):
     * the per-user session index included, after disable, delete and
     * the new Register's login. */
    const char *fsck[] = { AUTHD_FSCK_BIN, "--data-dir", s->data_dir, NULL };
    it_run(fsck, NULL, NULL, &p);
    if (p.status != 0)
        fprintf(stderr, "authd-fsck: %s", p.err);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.err, "users=2 sessions=1 problems=0"));
    it_proc_free(&p);

    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Input errors exit 2 and write nothing: bad names, a weak password (the
 * same zxcvbn rule as Register), no terminal for the prompt, a bad role. */
static void users_input_errors(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status st;
    it_proc p;

    assert_int_equal(user_cmd(s, "password12345\n", &p, "add", "weakling", "--email",
                         "weak@example.com", "--password-stdin", NULL),
        2);
    assert_non_null(strstr(p.err, "password: too easy to guess"));
    it_proc_free(&p);
    assert_int_equal(user_cmd(s, "weakling1234567\n", &p, "add", "weakling", "--email",
                         "weak@example.com", "--password-stdin", NULL),
        2); /* the username inside the password */
    it_proc_free(&p);
    /* No --password-stdin and no terminal (stdin is /dev/null, no tty). */
    assert_int_equal(
        user_cmd(s, NULL, &p, "add", "weakling", "--email", "weak@example.com", NULL), 2);
    assert_non_null(strstr(p.err, "--password-stdin"));
    it_proc_free(&p);
    assert_int_equal(
        user_cmd(s, PW "\n", &p, "add", "x", "--email", "x@example.com", "--password-stdin", NULL),
        2);
    assert_non_null(strstr(p.err, "username:"));
    it_proc_free(&p);
    assert_int_equal(user_cmd(s, PW "\n", &p, "add", "weakling", "--email", "weak@example.com",
                         "--role", "Admin", "--password-stdin", NULL),
        2);
    assert_non_null(strstr(p.err, "role:"));
    it_proc_free(&p);
    assert_int_equal(user_cmd(s, PW "\n", &p, "add", "weakling", "--password-stdin", NULL), 2);
    it_proc_free(&p);
    assert_int_equal(user_cmd(s, NULL, &p, "roles", "nobody", "--add", "x", NULL), 1);
    assert_non_null(strstr(p.err, "no user nobody"));
    it_proc_free(&p);
    const char *bare[] = { AUTHD_BIN, "user", "disable", NULL };
    it_run(bare, NULL, NULL, &p);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "usage: authd user disable"));
    it_proc_free(&p);
    const char *help[] = { AUTHD_BIN, "user", "--help", NULL };
    it_run(help, NULL, NULL, &p);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, "authd user add USERNAME --email EMAIL"));
    it_proc_free(&p);

    /* Nothing of that was stored: the name is free. */
    it_register(c, "weakling", "weak@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(users_first_admin_lifecycle, it_teardown),
        cmocka_unit_test_teardown(users_input_errors, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
