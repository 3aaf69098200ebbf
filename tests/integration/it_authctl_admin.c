/*
 * it_authctl_admin.c — `authctl admin ...`, `authctl jwks` and
 * `authbench --workload logout` against a running authd over TLS.
 *
 * The first admin is made as an operator would, with `authd user add
 * --role admin --password-stdin` on the server's data directory; every
 * admin subcommand is then run with that admin's token (from AUTHD_TOKEN
 * or stdin), and with a non-admin's (exit 1, PERMISSION_DENIED). Usage
 * errors (exit 2) are checked against an unreachable URL, so they must be
 * found before any connection is tried (which would exit 3).
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PW      "admin cli passphrase 1234"
#define USER_PW "plain user passphrase 5678"
#define NOWHERE "tls+tcp://127.0.0.1:1" /* nothing listens: a connect exits 3 */

/* ctl runs authctl --url URL --ca CA ARGS... (args NULL-terminated). */
static void ctl(const char *url, const char *const *args, const char *const *env,
    const char *stdin_data, it_proc *p)
{
    const char *argv[32];
    size_t n = 0;

    argv[n++] = AUTHCTL_BIN;
    argv[n++] = "--url";
    argv[n++] = url;
    argv[n++] = "--ca";
    argv[n++] = IT_CA;
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

/* field copies the value of " name=" or a leading "name=" (up to a blank
 * or newline) from text. */
static void field(const char *text, const char *name, char *out, size_t cap)
{
    char key[64];
    const char *v;

    snprintf(key, sizeof key, "%s=", name);
    v = strncmp(text, key, strlen(key)) == 0 ? text : NULL;
    if (v == NULL) {
        snprintf(key, sizeof key, " %s=", name);
        v = strstr(text, key);
    }
    if (v == NULL)
        fail_msg("no %s= in: %s", name, text);
    v = strchr(v, '=') + 1;
    size_t n = strcspn(v, " \n");
    assert_true(n < cap);
    memcpy(out, v, n);
    out[n] = '\0';
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* admin_add runs `authd user add NAME --role admin --password-stdin` on
 * the server's data directory (cheap argon2, as the server has). */
static void admin_add(const it_server *s, const char *name)
{
    char email[96];
    it_proc p;

    snprintf(email, sizeof email, "%s@example.com", name);
    const char *argv[] = { AUTHD_BIN, "user", "add", name, "--email", email, "--role", "admin",
        "--password-stdin", "--data-dir", s->data_dir, "--argon2-ops", "1", "--argon2-mem-kib",
        "64", "--insecure-weak-params", NULL };
    it_run(argv, NULL, PW "\n", &p);
    expect_exit(&p, 0, "authd user add --role admin");
    it_proc_free(&p);
}

/* reg registers name through authctl and writes its user id. */
static void reg(const it_server *s, const char *name, char id[64])
{
    char email[96];
    it_proc p;

    snprintf(email, sizeof email, "%s@example.com", name);
    const char *args[]
        = { "register", "--username", name, "--email", email, "--password-stdin", NULL };
    ctl(s->url, args, NULL, USER_PW "\n", &p);
    expect_exit(&p, 0, "register");
    field(p.out, "user_id", id, 64);
    it_proc_free(&p);
}

/* login logs name in through authctl; env gets "AUTHD_TOKEN=<token>".
 * Returns the exit status (the caller asserts). */
static int login(const it_server *s, const char *name, const char *pw, char *env, size_t cap)
{
    char line[256];
    it_proc p;
    int status;

    snprintf(line, sizeof line, "%s\n", pw);
    const char *args[] = { "login", "--login", name, "--password-stdin", NULL };
    ctl(s->url, args, NULL, line, &p);
    status = p.status;
    if (status == 0) {
        size_t tl = strcspn(p.out, "\n");
        assert_true(tl > 0 && tl + 13 < cap);
        snprintf(env, cap, "AUTHD_TOKEN=%.*s", (int)tl, p.out);
    }
    it_proc_free(&p);
    return status;
}

/* admin runs `authctl admin SUB ARGS...` with env (one "AUTHD_TOKEN=..."
 * entry) and expects exit code; p keeps the output. */
static void admin(const it_server *s, const char *env, int code, it_proc *p, const char *sub,
    const char *a1, const char *a2, const char *a3)
{
    const char *args[] = { "admin", sub, a1, a2, a3, NULL };
    const char *envv[] = { env, NULL };
    char what[96];

    ctl(s->url, args, env != NULL ? envv : NULL, NULL, p);
    snprintf(what, sizeof what, "admin %s", sub);
    expect_exit(p, code, what);
}

static void authctl_admin_help(void **state)
{
    const char *help[] = { AUTHCTL_BIN, "help", "admin", NULL };
    const char *top[] = { AUTHCTL_BIN, "--help", NULL };
    it_proc p;

    it_run(help, NULL, NULL, &p);
    expect_exit(&p, 0, "authctl help admin");
    for (const char *sub = "get-user\0list-users\0set-roles\0disable\0enable\0delete\0"
                           "revoke-sessions\0unlock\0--yes\0AUTHD_TOKEN\0";
         *sub; sub += strlen(sub) + 1)
        if (strstr(p.out, sub) == NULL)
            fail_msg("authctl help admin does not mention %s", sub);
    it_proc_free(&p);
    it_run(top, NULL, NULL, &p);
    expect_exit(&p, 0, "authctl --help");
    assert_non_null(strstr(p.out, "admin SUBCOMMAND"));
    assert_non_null(strstr(p.out, "jwks"));
    it_proc_free(&p);
    (void)state;
}

/* Usage errors exit 2 before any connection (the URL leads nowhere, so a
 * connect attempt would exit 3), and a token is never taken from argv. */
static void authctl_admin_usage_errors(void **state)
{
    const char *env[] = { "AUTHD_TOKEN=x.y.z", NULL };
    static const char *const cases[][6] = {
        { "admin", NULL },
        { "admin", "frobnicate", "0123", NULL },
        { "admin", "get-user", NULL },
        { "admin", "get-user", "a", "b", NULL },
        { "admin", "get-user", "", NULL },
        { "admin", "get-user", "--token", "x.y.z", NULL },
        { "admin", "get-user", "--token=x.y.z", "0123", NULL },
        { "admin", "set-roles", "0123", NULL },
        { "admin", "set-roles", "0123", "a,,b", NULL },
        { "admin", "list-users", "0123", NULL },
        { "admin", "list-users", "--page-size", "0", NULL },
        { "admin", "list-users", "--page-size", "1001", NULL },
        { "admin", "list-users", "--page-size", NULL },
        { "admin", "list-users", "--all", "--page-token", "t", NULL },
        { "admin", "disable", "--yes", "0123", NULL }, /* --yes is delete's alone */
        { "admin", "delete", "0123", NULL }, /* no terminal to confirm on */
        { "jwks", "extra", NULL },
    };
    it_proc p;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ctl(NOWHERE, cases[i], env, NULL, &p);
        if (p.status != 2)
            fail_msg("authctl %s %s %s: exit %d, want 2\nstderr: %s", cases[i][0],
                cases[i][1] ? cases[i][1] : "", cases[i][1] && cases[i][2] ? cases[i][2] : "",
                p.status, p.err);
        assert_non_null(strstr(p.err, "authctl: "));
        it_proc_free(&p);
    }
    /* No token anywhere (no AUTHD_TOKEN, empty stdin): exit 2, no call. */
    const char *get[] = { "admin", "get-user", "0123", NULL };
    ctl(NOWHERE, get, NULL, "", &p);
    expect_exit(&p, 2, "admin get-user without a token");
    assert_non_null(strstr(p.err, "no access token"));
    it_proc_free(&p);
    /* A well-formed call does try to connect: exit 3 (so the 2s above are
     * the parser's, not the transport's). */
    ctl(NOWHERE, get, env, NULL, &p);
    expect_exit(&p, 3, "admin get-user to nowhere");
    it_proc_free(&p);
    (void)state;
}

/* on_tty runs `authctl admin delete ID` with AUTHD_TOKEN=tok on a new
 * pseudo-terminal (its controlling terminal), answers the confirmation
 * prompt with answer, and returns the exit status; out gets what it
 * wrote on the terminal. Bounded by a 30 s deadline. */
static int delete_on_tty(
    const it_server *s, const char *tok, const char *id, const char *answer, char *out, size_t cap)
{
    int master, status = -1;
    size_t n = 0;
    bool answered = false;
    uint64_t deadline = it_mono_ms() + 30000;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);

    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("AUTHD_TOKEN", tok, 1);
        execl(AUTHCTL_BIN, AUTHCTL_BIN, "--url", s->url, "--ca", IT_CA, "admin", "delete", id,
            (char *)NULL);
        _exit(127);
    }
    out[0] = '\0';
    while (it_mono_ms() < deadline) {
        struct pollfd pf = { .fd = master, .events = POLLIN };
        int r = poll(&pf, 1, 200);
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        if (r > 0) {
            ssize_t got = read(master, out + n, cap - 1 - n);
            if (got <= 0)
                break; /* EIO: the child closed the terminal */
            n += (size_t)got;
            out[n] = '\0';
            if (n + 1 >= cap)
                break;
        }
        if (!answered && strstr(out, "[y/N]") != NULL) {
            assert_int_equal(write(master, answer, strlen(answer)), (ssize_t)strlen(answer));
            answered = true;
        }
    }
    /* The terminal closes a moment before the process is gone. */
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && it_mono_ms() < deadline)
        it_nap_ms(10);
    if (w == 0) {
        /* Past the deadline, or the output filled out: make sure it ends. */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        close(master);
        fail_msg("authctl admin delete on a terminal did not finish: %s", out);
    }
    close(master);
    if (!answered)
        fail_msg("no [y/N] prompt on the terminal: %s", out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void authctl_admin_subcommands(void **state)
{
    it_server *s = it_start(NULL);
    char root_env[4200], bob_env[4200], root_id[64], bob_id[64], id[64], v[256];
    char tok_line[4200];
    it_proc p;

    admin_add(s, "root");
    assert_int_equal(login(s, "root", PW, root_env, sizeof root_env), 0);
    reg(s, "bob", bob_id);
    reg(s, "carol", id);
    reg(s, "cathy", id);
    assert_int_equal(login(s, "bob", USER_PW, bob_env, sizeof bob_env), 0);

    /* get-user: one line, the user as stored. */
    admin(s, root_env, 0, &p, "get-user", bob_id, NULL, NULL);
    assert_int_equal(count_lines(p.out), 1);
    field(p.out, "user_id", v, sizeof v);
    assert_string_equal(v, bob_id);
    field(p.out, "username", v, sizeof v);
    assert_string_equal(v, "bob");
    field(p.out, "email", v, sizeof v);
    assert_string_equal(v, "bob@example.com");
    field(p.out, "status", v, sizeof v);
    assert_string_equal(v, "ACTIVE");
    field(p.out, "updated_at", v, sizeof v);
    it_proc_free(&p);

    /* The admin token as the first line of stdin works as well. */
    snprintf(tok_line, sizeof tok_line, "%s\n", root_env + strlen("AUTHD_TOKEN="));
    const char *get_stdin[] = { "admin", "get-user", bob_id, NULL };
    ctl(s->url, get_stdin, NULL, tok_line, &p);
    expect_exit(&p, 0, "get-user, token on stdin");
    assert_non_null(strstr(p.out, "username=bob"));
    it_proc_free(&p);

    /* list-users: username order, one page, the next page, --all. */
    admin(s, root_env, 0, &p, "list-users", "--prefix", "ca", NULL);
    assert_int_equal(count_lines(p.out), 2);
    assert_non_null(strstr(p.out, "username=carol"));
    assert_true(strstr(p.out, "username=carol") < strstr(p.out, "username=cathy"));
    assert_null(strstr(p.err, "next_page_token="));
    it_proc_free(&p);
    const char *page1[] = { "admin", "list-users", "--prefix", "ca", "--page-size", "1", NULL };
    const char *envr[] = { root_env, NULL };
    ctl(s->url, page1, envr, NULL, &p);
    expect_exit(&p, 0, "list-users page 1");
    assert_int_equal(count_lines(p.out), 1);
    assert_non_null(strstr(p.out, "username=carol"));
    char next[256];
    field(p.err, "next_page_token", next, sizeof next);
    it_proc_free(&p);
    const char *page2[] = { "admin", "list-users", "--prefix", "ca", "--page-size", "1",
        "--page-token", next, NULL };
    ctl(s->url, page2, envr, NULL, &p);
    expect_exit(&p, 0, "list-users page 2");
    assert_int_equal(count_lines(p.out), 1);
    assert_non_null(strstr(p.out, "username=cathy"));
    it_proc_free(&p);
    const char *all[]
        = { "admin", "list-users", "--page-size", "1", "--all", NULL }; /* root bob carol cathy */
    ctl(s->url, all, envr, NULL, &p);
    expect_exit(&p, 0, "list-users --all");
    assert_int_equal(count_lines(p.out), 4);
    assert_null(strstr(p.err, "next_page_token="));
    it_proc_free(&p);

    /* set-roles: replaced, printed; "" clears. */
    admin(s, root_env, 0, &p, "set-roles", bob_id, "auditor,ops", NULL);
    field(p.out, "roles", v, sizeof v);
    assert_string_equal(v, "auditor,ops");
    it_proc_free(&p);
    admin(s, root_env, 0, &p, "set-roles", bob_id, "", NULL);
    field(p.out, "roles", v, sizeof v);
    assert_string_equal(v, "");
    it_proc_free(&p);

    /* A non-admin gets PERMISSION_DENIED (exit 1) from every subcommand,
     * and nothing on stdout. */
    static const char *const subs[][3] = { { "get-user", "ID", NULL }, { "list-users", NULL, NULL },
        { "set-roles", "ID", "admin" }, { "disable", "ID", NULL }, { "enable", "ID", NULL },
        { "delete", "ID", "--yes" }, { "revoke-sessions", "ID", NULL }, { "unlock", "ID", NULL } };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        /* bob acting on his own id: still admin-only. */
        const char *a1 = subs[i][1] != NULL ? bob_id : NULL;
        admin(s, bob_env, 1, &p, subs[i][0], a1, subs[i][2], NULL);
        if (strstr(p.err, "authctl: PERMISSION_DENIED") == NULL)
            fail_msg("admin %s as a non-admin: %s", subs[i][0], p.err);
        assert_string_equal(p.out, "");
        it_proc_free(&p);
    }

    /* revoke-sessions kills bob's session: his token no longer verifies. */
    admin(s, root_env, 0, &p, "revoke-sessions", bob_id, NULL, NULL);
    field(p.out, "sessions_revoked", v, sizeof v);
    assert_string_equal(v, "1");
    it_proc_free(&p);
    const char *verify[] = { "verify", NULL };
    const char *envb[] = { bob_env, NULL };
    ctl(s->url, verify, envb, NULL, &p);
    expect_exit(&p, 1, "verify after revoke-sessions");
    it_proc_free(&p);

    /* disable: bob cannot log in; enable: he can again; unlock answers OK. */
    admin(s, root_env, 0, &p, "disable", bob_id, NULL, NULL);
    assert_non_null(strstr(p.err, "disabled"));
    it_proc_free(&p);
    admin(s, root_env, 0, &p, "get-user", bob_id, NULL, NULL);
    field(p.out, "status", v, sizeof v);
    assert_string_equal(v, "DISABLED");
    it_proc_free(&p);
    assert_int_equal(login(s, "bob", USER_PW, bob_env, sizeof bob_env), 1);
    admin(s, root_env, 0, &p, "enable", bob_id, NULL, NULL);
    it_proc_free(&p);
    assert_int_equal(login(s, "bob", USER_PW, bob_env, sizeof bob_env), 0);
    admin(s, root_env, 0, &p, "unlock", bob_id, NULL, NULL);
    assert_non_null(strstr(p.err, "unlocked"));
    it_proc_free(&p);

    /* The last admin cannot disable themselves: FAILED_PRECONDITION. */
    admin(s, root_env, 0, &p, "list-users", "--prefix", "root", NULL);
    field(p.out, "user_id", root_id, sizeof root_id);
    it_proc_free(&p);
    admin(s, root_env, 1, &p, "disable", root_id, NULL, NULL);
    assert_non_null(strstr(p.err, "FAILED_PRECONDITION"));
    it_proc_free(&p);

    /* delete on a terminal asks first: "n" keeps the user. */
    char tty[4096];
    int st = delete_on_tty(s, root_env + strlen("AUTHD_TOKEN="), bob_id, "n\n", tty, sizeof tty);
    if (st != 1 || strstr(tty, "not deleted") == NULL)
        fail_msg("delete answered n: exit %d, terminal: %s", st, tty);
    admin(s, root_env, 0, &p, "get-user", bob_id, NULL, NULL);
    it_proc_free(&p);

    /* delete --yes: the sessions go, the user is gone. */
    admin(s, root_env, 0, &p, "delete", bob_id, "--yes", NULL);
    field(p.out, "sessions_deleted", v, sizeof v);
    assert_true(atoi(v) >= 1);
    it_proc_free(&p);
    admin(s, root_env, 1, &p, "get-user", bob_id, NULL, NULL);
    assert_non_null(strstr(p.err, "NOT_FOUND"));
    it_proc_free(&p);
    ctl(s->url, verify, envb, NULL, &p);
    expect_exit(&p, 1, "verify after delete");
    it_proc_free(&p);

    /* ... and "y" deletes. */
    reg(s, "dora", id);
    st = delete_on_tty(s, root_env + strlen("AUTHD_TOKEN="), id, "y\n", tty, sizeof tty);
    if (st != 0 || strstr(tty, "sessions_deleted=0") == NULL)
        fail_msg("delete answered y: exit %d, terminal: %s", st, tty);
    admin(s, root_env, 1, &p, "get-user", id, NULL, NULL);
    assert_non_null(strstr(p.err, "NOT_FOUND"));
    it_proc_free(&p);

    /* jwks: the document (HS256 only here: no keys). */
    const char *jwks[] = { "jwks", NULL };
    ctl(s->url, jwks, NULL, NULL, &p);
    expect_exit(&p, 0, "jwks");
    assert_non_null(strstr(p.out, "{\"keys\":"));
    it_proc_free(&p);

    it_finish(s);
    (void)state;
}

/* csv_value returns column name of the csv row whose group is group
 * (-1 if either is missing); csv is authbench --format csv output. */
static long long csv_value(const char *csv, const char *group, const char *name)
{
    char key[64], line[2048];
    int want = -1, col = 0;
    long long v = -1;

    for (const char *h = csv; *h != '\n' && *h != '\0'; col++) {
        size_t w = strcspn(h, ",\n");
        if (w == strlen(name) && strncmp(h, name, w) == 0)
            want = col;
        h += w;
        if (*h == ',')
            h++;
    }
    snprintf(key, sizeof key, ",%s,", group);
    const char *row = strstr(csv, key);
    if (want < 0 || row == NULL)
        return -1;
    while (row > csv && row[-1] != '\n')
        row--;
    size_t n = strcspn(row, "\n");
    if (n >= sizeof line)
        return -1;
    memcpy(line, row, n);
    line[n] = '\0';
    col = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save), col++)
        if (col == want)
            v = atoll(t);
    return v;
}

/* authbench --workload logout for a short run: Login + Logout pairs, a
 * row for each, no errors in either (each slot logs in as its own user,
 * so the account throttle never sees logins pile up). */
static void authbench_logout_workload(void **state)
{
    it_server *s = it_start(NULL);
    const char *argv[] = { AUTHBENCH_BIN, "--url", s->url, "--ca", IT_CA, "--workload", "logout",
        "--users", "2", "--inflight", "4", "--duration", "1", "--warmup", "0", "--format", "csv",
        "--no-progress", NULL };
    it_proc p;

    it_run(argv, NULL, NULL, &p);
    expect_exit(&p, 0, "authbench --workload logout");
    long long lo = csv_value(p.out, "logout", "requests");
    long long lo_err = csv_value(p.out, "logout", "errors");
    long long li = csv_value(p.out, "login", "requests");
    long long li_err = csv_value(p.out, "login", "errors");
    /* Every Logout follows its own Login, so the counts differ by at most
     * the slots in flight when the window opened or closed. */
    if (lo <= 0 || lo_err != 0 || li <= 0 || li_err != 0 || lo > li + 4 || li > lo + 4)
        fail_msg("logout %lld (errors %lld), login %lld (errors %lld)\n%s\n%s", lo, lo_err, li,
            li_err, p.out, p.err);
    it_proc_free(&p);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(authctl_admin_help),
        cmocka_unit_test(authctl_admin_usage_errors),
        cmocka_unit_test_teardown(authctl_admin_subcommands, it_teardown),
        cmocka_unit_test_teardown(authbench_logout_workload, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
