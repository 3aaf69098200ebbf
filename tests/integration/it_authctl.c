/*
 * it_authctl.c — the authctl CLI against a running authd: secrets on stdin
 * or in AUTHD_TOKEN, results on stdout, failures as exit status + a
 * "authctl: CODE: message [REASON]" line on stderr.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PASSWORD "dave's cli password"

/* ctl runs authctl --url --ca CA ARGS... (args NULL-terminated). */
static void ctl(const it_server *s, const char *ca, const char *const *args, const char *const *env,
    const char *stdin_data, it_proc *p)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = AUTHCTL_BIN;
    argv[n++] = "--url";
    argv[n++] = s->url;
    argv[n++] = "--ca";
    argv[n++] = ca;
    for (size_t i = 0; args[i] != NULL; i++) {
        assert_true(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    it_run(argv, env, stdin_data, p);
}

static void expect_exit(const it_proc *p, int code, const char *what)
{
    if (p->status != code)
        fail_msg(
            "%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, p->status, code, p->out, p->err);
}

/* field copies the value of "name=" (up to a blank) from text. */
static void field(const char *text, const char *name, char *out, size_t cap)
{
    char key[64];
    snprintf(key, sizeof key, "%s=", name);
    const char *v = strstr(text, key);
    if (v == NULL)
        fail_msg("no %s in: %s", key, text);
    v += strlen(key);
    size_t n = strcspn(v, " \n");
    assert_true(n < cap);
    memcpy(out, v, n);
    out[n] = '\0';
}

static void authctl_help_exits_zero(void **state)
{
    const char *argv[] = { AUTHCTL_BIN, "--help", NULL };
    const char *argv2[] = { AUTHCTL_BIN, "help", "login", NULL };
    it_proc p;

    it_run(argv, NULL, NULL, &p);
    expect_exit(&p, 0, "authctl --help");
    assert_non_null(strstr(p.out, "usage: authctl"));
    for (const char *cmd = "register\0login\0verify\0logout\0"; *cmd; cmd += strlen(cmd) + 1)
        assert_non_null(strstr(p.out, cmd));
    it_proc_free(&p);
    it_run(argv2, NULL, NULL, &p);
    expect_exit(&p, 0, "authctl help login");
    assert_non_null(strstr(p.out, "--password-stdin"));
    it_proc_free(&p);
    (void)state;
}

static void authctl_register_login_verify_logout(void **state)
{
    it_server *s = it_start(NULL);
    it_proc p;
    char token[4096], env_tok[4200], uid[64], sid[64], v[64];

    const char *reg[] = { "register", "--username", "Dave", "--email", "dave@example.com",
        "--password-stdin", NULL };
    ctl(s, IT_CA, reg, NULL, PASSWORD "\n", &p);
    expect_exit(&p, 0, "register");
    field(p.out, "username", v, sizeof v);
    assert_string_equal(v, "dave");
    field(p.out, "user_id", uid, sizeof uid);
    assert_int_equal(strlen(uid), 32);
    it_proc_free(&p);

    ctl(s, IT_CA, reg, NULL, PASSWORD "\n", &p);
    expect_exit(&p, 1, "register again");
    assert_non_null(strstr(p.err, "ALREADY_EXISTS"));
    it_proc_free(&p);

    const char *login[] = { "login", "--login", "dave", "--password-stdin", NULL };
    ctl(s, IT_CA, login, NULL, PASSWORD "\n", &p);
    expect_exit(&p, 0, "login");
    /* stdout is the token alone, one line */
    size_t tl = strcspn(p.out, "\n");
    assert_true(tl > 0 && tl < sizeof token);
    assert_string_equal(p.out + tl, "\n");
    memcpy(token, p.out, tl);
    token[tl] = '\0';
    assert_non_null(strchr(token, '.'));
    field(p.err, "session_id", sid, sizeof sid);
    it_proc_free(&p);

    snprintf(env_tok, sizeof env_tok, "AUTHD_TOKEN=%s", token);
    const char *env[] = { env_tok, NULL };
    const char *verify[] = { "verify", NULL };
    ctl(s, IT_CA, verify, env, NULL, &p);
    expect_exit(&p, 0, "verify");
    field(p.out, "user_id", v, sizeof v);
    assert_string_equal(v, uid);
    field(p.out, "username", v, sizeof v);
    assert_string_equal(v, "dave");
    field(p.out, "session_id", v, sizeof v);
    assert_string_equal(v, sid);
    it_proc_free(&p);

    /* the token on stdin works too */
    char line[4200];
    snprintf(line, sizeof line, "%s\n", token);
    ctl(s, IT_CA, verify, NULL, line, &p);
    expect_exit(&p, 0, "verify (token on stdin)");
    it_proc_free(&p);

    const char *logout[] = { "logout", NULL };
    ctl(s, IT_CA, logout, env, NULL, &p);
    expect_exit(&p, 0, "logout");
    it_proc_free(&p);

    ctl(s, IT_CA, verify, env, NULL, &p);
    expect_exit(&p, 1, "verify after logout");
    assert_non_null(strstr(p.err, "UNAUTHENTICATED"));
    assert_non_null(strstr(p.err, "[REVOKED]"));
    assert_string_equal(p.out, "");
    it_proc_free(&p);

    ctl(s, IT_CA, login, NULL, "not dave's password\n", &p);
    expect_exit(&p, 1, "login with a wrong password");
    assert_non_null(strstr(p.err, "UNAUTHENTICATED"));
    assert_string_equal(p.out, "");
    it_proc_free(&p);

    /* a server certificate from another CA: a transport failure (exit 3),
     * for the certificate (a server that is down gives exit 3 as well) */
    ctl(s, IT_OTHER_CA, verify, env, NULL, &p);
    expect_exit(&p, 3, "verify trusting another CA");
    assert_non_null(strstr(p.err, "UNAVAILABLE"));
    if (strstr(p.err, "server certificate was not accepted") == NULL)
        fail_msg("the refusal does not name the certificate: %s", p.err);
    it_proc_free(&p);
    /* and right after, the same server serves a client with the right CA */
    ctl(s, IT_CA, login, NULL, PASSWORD "\n", &p);
    expect_exit(&p, 0, "login with the right CA after the refusal");
    it_proc_free(&p);

    it_finish(s);
    (void)state;
}

/* login --refresh-file writes the refresh token to a 0600 file (never to
 * stdout or argv); refresh reads it, prints the new access token and
 * replaces the file; the used-up token then fails (from the environment)
 * and revokes the session. */
static void authctl_refresh(void **state)
{
    it_opts o = { .extra = { "--refresh-grace-ms", "0" } };
    it_server *s = it_start(&o);
    it_proc p;
    char file[400], old[256], env_rt[300], token[4096];
    struct stat sb;

    const char *reg[] = { "register", "--username", "rita", "--email", "rita@example.com",
        "--password-stdin", NULL };
    ctl(s, IT_CA, reg, NULL, PASSWORD "\n", &p);
    expect_exit(&p, 0, "register");
    it_proc_free(&p);

    snprintf(file, sizeof file, "%s/refresh", s->dir);
    const char *login[]
        = { "login", "--login", "rita", "--password-stdin", "--refresh-file", file, NULL };
    ctl(s, IT_CA, login, NULL, PASSWORD "\n", &p);
    expect_exit(&p, 0, "login --refresh-file");
    assert_int_equal(strcspn(p.out, "\n") + 1, strlen(p.out)); /* the access token alone */
    it_proc_free(&p);
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    size_t len = 0;
    char *rt = it_read_file(file, &len);
    assert_non_null(rt);
    assert_int_equal(len, 93); /* 92 characters + newline */
    rt[92] = '\0';
    snprintf(old, sizeof old, "%s", rt);
    free(rt);

    const char *refresh[] = { "refresh", "--refresh-file", file, NULL };
    ctl(s, IT_CA, refresh, NULL, NULL, &p);
    expect_exit(&p, 0, "refresh");
    size_t tl = strcspn(p.out, "\n");
    assert_true(tl > 0 && tl < sizeof token && p.out[tl + 1] == '\0');
    memcpy(token, p.out, tl);
    token[tl] = '\0';
    assert_non_null(strstr(p.err, "refresh_expires_at="));
    it_proc_free(&p);
    rt = it_read_file(file, &len);
    assert_non_null(rt);
    assert_int_equal(len, 93);
    assert_memory_not_equal(rt, old, 92);
    free(rt);

    char env_tok[4200];
    snprintf(env_tok, sizeof env_tok, "AUTHD_TOKEN=%s", token);
    const char *env_v[] = { env_tok, NULL };
    const char *verify[] = { "verify", NULL };
    ctl(s, IT_CA, verify, env_v, NULL, &p);
    expect_exit(&p, 0, "verify the refreshed token");
    it_proc_free(&p);

    /* The used-up token, from the environment: refused, session revoked. */
    snprintf(env_rt, sizeof env_rt, "AUTHD_REFRESH_TOKEN=%s", old);
    const char *env[] = { env_rt, NULL };
    const char *again[] = { "refresh", NULL };
    ctl(s, IT_CA, again, env, NULL, &p);
    expect_exit(&p, 1, "refresh with a used token");
    assert_non_null(strstr(p.err, "[REFRESH_TOKEN_REUSED]"));
    it_proc_free(&p);
    ctl(s, IT_CA, verify, env_v, NULL, &p);
    expect_exit(&p, 1, "verify after reuse");
    assert_non_null(strstr(p.err, "[REVOKED]"));
    it_proc_free(&p);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(authctl_help_exits_zero, it_teardown),
        cmocka_unit_test_teardown(authctl_register_login_verify_logout, it_teardown),
        cmocka_unit_test_teardown(authctl_refresh, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.authctl", tests, NULL, NULL);
}
