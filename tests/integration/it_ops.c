/*
 * it_ops.c — operating authd: restarts on the same store, the signing key
 * file rules, the audit log, and a clean shutdown with a request in flight.
 */
#define _GNU_SOURCE /* memmem */
#include "harness.h"

#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- restart --------------------------------------------------------------- */

/* Users, revocations and live sessions survive a SIGTERM + restart on the
 * same data directory and key. */
static void ops_restart_keeps_users_and_revocations(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    Authd__V1__LoginResponse *live_lr = NULL;
    Authd__V1__VerifyResponse *vr = NULL;
    authd_status st;
    char dead[4096], live[4096];

    it_register(c, "restart-user", "restart@example.com", "survives a restart", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, "restart-user", "survives a restart", dead, sizeof dead, NULL);
    it_login_token(c, "restart-user", "survives a restart", live, sizeof live, &live_lr);
    it_logout(c, dead, &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);

    it_stop(s); /* asserts exit 0 */
    it_launch(s); /* same data dir and key, new port */
    c = it_client(s);

    it_login(c, "restart-user", "survives a restart", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login(c, "restart-user", "not the password", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_verify(c, dead, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    it_verify(c, live, &st, &vr);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_equal(vr->session_id, live_lr->session_id);
    assert_string_equal(vr->user_id, live_lr->user->id);
    authd__v1__verify_response__free_unpacked(vr, NULL);
    /* the name is still taken */
    it_register(c, "Restart-User", "other@example.com", "survives a restart", &st, NULL);
    IT_EXPECT(&st, AUTHD_ALREADY_EXISTS, "USERNAME_TAKEN");

    authd__v1__login_response__free_unpacked(live_lr, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* ---- data directory ownership -------------------------------------------- */

/* A second authd on the same data directory (on another port) refuses to
 * start, naming the first one's pid; the first goes on serving. Once the
 * first is gone, even by SIGKILL (the kernel drops its flock), a new one
 * starts on the same directory. */
static void ops_second_authd_on_same_data_dir_is_refused(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    const char *argv[64];
    char want[4200], url_before[sizeof s->url];
    authd_status st;
    it_proc p;

    memcpy(url_before, s->url, sizeof url_before);
    it_argv(s, "tls+tcp://127.0.0.1:0", argv, sizeof argv / sizeof argv[0]);
    it_run(argv, NULL, NULL, &p);
    if (p.status == 0)
        fail_msg("a second authd on the same data directory exited 0; stderr:\n%s", p.err);
    snprintf(want, sizeof want, "data directory %s is in use by another authd (pid %d)",
        s->data_dir, (int)s->pid);
    if (strstr(p.err, want) == NULL)
        fail_msg("stderr lacks \"%s\":\n%s", want, p.err);
    it_proc_free(&p);

    /* the first one still serves, and still owns its url file */
    size_t len = 0;
    char *url = it_read_file(s->url_file, &len);
    assert_non_null(url);
    assert_non_null(strstr(url, url_before));
    free(url);
    it_register(c, "lock-user", "lock@example.com", "first one still serves", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);

    /* after a clean stop a new one starts */
    it_stop(s);
    it_launch(s);
    /* after a SIGKILL too: no stale lock */
    assert_int_equal(kill(s->pid, SIGKILL), 0);
    assert_int_equal(waitpid(s->pid, NULL, 0), s->pid);
    s->pid = 0;
    it_launch(s);
    c = it_client(s);
    it_login(c, "lock-user", "first one still serves", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* ---- signing key --------------------------------------------------------- */

/* expect_refusal runs authd on s and asserts it exits non-zero without
 * listening, with every needle in its stderr. */
static void expect_refusal(it_server *s, const char *const *needles)
{
    const char *argv[64];
    it_proc p;

    it_argv(s, NULL, argv, sizeof argv / sizeof argv[0]);
    it_run(argv, NULL, NULL, &p);
    if (p.status == 0)
        fail_msg("authd exited 0; stderr:\n%s", p.err);
    for (size_t i = 0; needles[i] != NULL; i++)
        if (strstr(p.err, needles[i]) == NULL)
            fail_msg("stderr lacks \"%s\":\n%s", needles[i], p.err);
    assert_int_not_equal(access(s->url_file, F_OK), 0);
    it_proc_free(&p);
}

static void ops_signing_key_too_short_is_refused(void **state)
{
    it_opts o = { .key_len = 16 };
    it_server *s = it_new(&o);
    const char *needles[] = { s->key_path, "16 bytes", "at least 32", NULL };
    expect_refusal(s, needles);
    it_free(s);
    (void)state;
}

static void ops_signing_key_readable_by_others_is_refused(void **state)
{
    it_opts o = { .key_mode = 0644 };
    it_server *s = it_new(&o);
    const char *needles[] = { s->key_path, "0644", "chmod 600", NULL };
    expect_refusal(s, needles);
    it_free(s);
    (void)state;
}

/* Creation is off by default: a mistyped --signing-key path must not mint
 * a fresh key silently; the refusal says how to make one. */
static void ops_signing_key_absent_without_create_is_refused(void **state)
{
    it_opts o = { .key_len = -1 };
    it_server *s = it_new(&o);
    const char *needles[] = { s->key_path, "no such file", "--create-signing-key", NULL };
    expect_refusal(s, needles);
    assert_int_not_equal(access(s->key_path, F_OK), 0); /* not created */
    it_free(s);
    (void)state;
}

/* A 0600 key owned by another account is refused: that account could
 * replace it with a key of its own. chown needs root (CI runs as root). */
static void ops_signing_key_owned_by_other_is_refused(void **state)
{
    if (geteuid() != 0) {
        fprintf(stderr, "[  SKIPPED ] needs root to chown the key to another account\n");
        skip();
    }
    struct passwd *pw = getpwnam("nobody");
    uid_t other = pw != NULL ? pw->pw_uid : 65534;
    it_server *s = it_new(NULL);
    char uidtext[32];
    assert_int_equal(chown(s->key_path, other, (gid_t)-1), 0);
    snprintf(uidtext, sizeof uidtext, "owned by uid %u", (unsigned)other);
    const char *needles[] = { s->key_path, uidtext, NULL };
    expect_refusal(s, needles);
    it_free(s);
    (void)state;
}

/* The key's directory must be the running user's (or root's) alone:
 * group-writable, world-writable even with the sticky bit, or owned by
 * another account are each refused, and creation refuses to put a key
 * there. */
static void ops_signing_key_unsafe_directory_is_refused(void **state)
{
    static const unsigned modes[] = { 0770, 0702, 01777 };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        it_server *s = it_new(NULL);
        char mode[16];
        snprintf(mode, sizeof mode, "mode %04o", modes[i]);
        assert_int_equal(chmod(s->dir, modes[i]), 0);
        const char *needles[] = { s->dir, mode, "writable by group or others", NULL };
        expect_refusal(s, needles);
        assert_int_equal(chmod(s->dir, 0700), 0);
        it_free(s);
    }

    it_opts o = { .key_len = -1, .extra = { "--create-signing-key" } };
    it_server *s = it_new(&o);
    assert_int_equal(chmod(s->dir, 0770), 0);
    const char *needles[] = { s->dir, "writable by group or others", NULL };
    expect_refusal(s, needles);
    assert_int_not_equal(access(s->key_path, F_OK), 0); /* not created */
    assert_int_equal(chmod(s->dir, 0700), 0);
    it_free(s);

    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        uid_t other = pw != NULL ? pw->pw_uid : 65534;
        s = it_new(NULL);
        assert_int_equal(chown(s->dir, other, (gid_t)-1), 0);
        const char *owner[] = { s->dir, "is owned by uid", NULL };
        expect_refusal(s, owner);
        assert_int_equal(chown(s->dir, 0, (gid_t)-1), 0);
        it_free(s);
    } else {
        fprintf(stderr, "[  NOTE    ] directory-owner case skipped: needs root to chown\n");
    }
    (void)state;
}

/* A symlink at the key path is not followed, even to a good key. */
static void ops_signing_key_symlink_is_refused(void **state)
{
    it_server *s = it_new(NULL);
    char real[sizeof s->key_path + 8];
    snprintf(real, sizeof real, "%s.real", s->key_path);
    assert_int_equal(rename(s->key_path, real), 0);
    assert_int_equal(symlink(real, s->key_path), 0);
    const char *needles[] = { s->key_path, "symlink", NULL };
    expect_refusal(s, needles);
    it_free(s);
    (void)state;
}

/* With --create-signing-key an absent key is created: 64 random bytes,
 * mode 0600, and it is the key the server signs with (its kid matches). */
static void ops_signing_key_absent_is_created_0600(void **state)
{
    it_opts o = { .key_len = -1, .extra = { "--create-signing-key" } };
    it_server *s = it_start(&o);
    struct stat sb;
    size_t len = 0;
    char kid[17], field[64];

    assert_int_equal(stat(s->key_path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, 64);
    char *key = it_read_file(s->key_path, &len);
    assert_non_null(key);
    assert_int_equal(len, 64);
    it_kid((const uint8_t *)key, len, kid);
    free(key);
    snprintf(field, sizeof field, "\"kid\":\"%s\"", kid);
    assert_true(it_log_wait(s, field, IT_CALL_TIMEOUT_MS));
    assert_true(it_log_wait(s, "\"event\":\"signing_key_created\"", IT_CALL_TIMEOUT_MS));
    it_finish(s);
    (void)state;
}

/* ---- logs ------------------------------------------------------------------- */

/* find_event returns the log line (a pointer into log) of the audit event
 * with request_id (a JSON string), or NULL. */
static const char *find_event(const char *log, const char *event, uint64_t request_id)
{
    char ev[96], rid[64];
    snprintf(ev, sizeof ev, "\"audit\":\"%s\"", event);
    snprintf(rid, sizeof rid, "\"request_id\":\"%llu\",", (unsigned long long)request_id);
    for (const char *line = log; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);
        char *copy = strndup(line, n);
        assert_non_null(copy);
        bool hit = strstr(copy, ev) != NULL && strstr(copy, rid) != NULL;
        free(copy);
        if (hit)
            return line;
        line += n + (nl != NULL);
    }
    return NULL;
}

static void ops_log_has_audit_events_and_no_secrets(void **state)
{
    static const char password[] = "Secret-Pa55word-In-Flight";
    static const char wrong[] = "Wrong-Pa55word-In-Flight";
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status st;
    char tok[4096], fp[17];
    uint64_t rid_register, rid_login_ok, rid_login_bad, rid_logout, rid_verify_bad;

    it_register(c, "log-user", "log-user@example.com", password, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    rid_register = st.request_id;
    it_login(c, "log-user", wrong, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    rid_login_bad = st.request_id;
    Authd__V1__LoginResponse *lr = NULL;
    it_login(c, "log-user", password, &st, &lr);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    rid_login_ok = st.request_id;
    snprintf(tok, sizeof tok, "%s", lr->access_token);
    authd__v1__login_response__free_unpacked(lr, NULL);
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_logout(c, tok, &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    rid_logout = st.request_id;
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    rid_verify_bad = st.request_id;
    authd_client_close(c);
    it_stop(s); /* every line written */

    size_t len = 0;
    char *log = it_read_file(s->log_path, &len);
    assert_non_null(log);

    /* JSON lines: every line is one object. */
    int lines = 0;
    for (const char *line = log; *line != '\0'; lines++) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl); /* every line is terminated */
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)(nl - line), JSON_DECODE_INT_AS_REAL, &jerr);
        if (!json_is_object(o))
            fail_msg("log line %d is not a JSON object (%s): %.*s", lines + 1, jerr.text,
                (int)(nl - line), line);
        assert_true(json_is_string(json_object_get(o, "event")));
        json_decref(o);
        line = nl + 1;
    }
    assert_true(lines >= 6);

    const struct {
        const char *event;
        uint64_t rid;
    } want[] = {
        { "register", rid_register },
        { "login_failure", rid_login_bad },
        { "login_success", rid_login_ok },
        { "logout", rid_logout },
        { "verify_failure", rid_verify_bad },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (find_event(log, want[i].event, want[i].rid) == NULL) {
            it_print_log_tail(s, 40);
            fail_msg("no \"%s\" event with request_id %llu", want[i].event,
                (unsigned long long)want[i].rid);
        }

    /* The token appears only as its fingerprint. */
    it_fingerprint(tok, fp);
    const char *vf = find_event(log, "verify_failure", rid_verify_bad);
    char fp_field[48];
    snprintf(fp_field, sizeof fp_field, "\"token_fp\":\"%s\"", fp);
    assert_true(strstr(vf, fp_field) != NULL && strstr(vf, fp_field) < strchr(vf, '\n'));

    /* Never a secret, anywhere in the file. */
    const char *sig = strrchr(tok, '.') + 1;
    const char *secrets[] = { password, wrong, tok, sig };
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (memmem(log, len, secrets[i], strlen(secrets[i])) != NULL)
            fail_msg("the log contains a secret (#%zu)", i);
    /* nor the claims segment (it carries the session id in token form) */
    const char *d1 = strchr(tok, '.');
    assert_null(memmem(log, len, d1 + 1, (size_t)(strrchr(tok, '.') - d1 - 1)));

    free(log);
    it_free(s);
    (void)state;
}

/* ---- shutdown ------------------------------------------------------------------ */

struct login_call {
    authd_client *c;
    authd_status st;
    char token[4096];
};

static void *do_login(void *arg)
{
    struct login_call *lc = arg;
    Authd__V1__LoginResponse *lr = NULL;
    if (it_login(lc->c, "drain-user", "drained, not dropped", &lc->st, &lr) == AUTHD_OK) {
        snprintf(lc->token, sizeof lc->token, "%s", lr->access_token);
        authd__v1__login_response__free_unpacked(lr, NULL);
    }
    return NULL;
}

/* A Login in flight when SIGTERM arrives still gets its OK reply, authd
 * exits 0, and the session it opened is real (it verifies after a restart).
 * The hash is made slow (real argon2 cost, one worker) and SIGTERM is sent
 * only once a hash worker is seen running the Login's job. */
static void ops_sigterm_lets_inflight_login_finish(void **state)
{
    it_opts o = { .cheap_argon2_off = true,
        .extra = { "--argon2-ops", "6", "--argon2-mem-kib", "65536", "--hash-workers", "1" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    struct login_call lc = { .c = c };
    pthread_t th;
    authd_status st;

    it_register(c, "drain-user", "drain@example.com", "drained, not dropped", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    /* The probe can say no: once Register's job has wound down, no hash
     * worker runs (polled: the worker answers before it goes back to sleep). */
    uint64_t idle_by = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    while (it_hashing_now(s->pid) && it_mono_ms() < idle_by)
        it_nap_ms(1);
    assert_false(it_hashing_now(s->pid));

    assert_int_equal(pthread_create(&th, NULL, do_login, &lc), 0);
    uint64_t end = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    bool seen = false;
    while (!(seen = it_hashing_now(s->pid)) && it_mono_ms() < end)
        it_nap_ms(1);
    if (!seen) {
        pthread_join(th, NULL);
        fail_msg("never saw the Login's hash running (login: %s)", authd_code_str(lc.st.code));
    }
    it_stop(s); /* SIGTERM now; asserts exit 0 */
    assert_int_equal(pthread_join(th, NULL), 0);
    IT_EXPECT(&lc.st, AUTHD_OK, NULL);
    assert_true(strlen(lc.token) > 0);
    authd_client_close(c);

    /* The reply was sent after shutdown began. */
    char *log = it_read_file(s->log_path, NULL);
    assert_non_null(log);
    const char *down = strstr(log, "\"event\":\"shutting_down\"");
    const char *ok = strstr(log, "\"audit\":\"login_success\"");
    assert_non_null(down);
    assert_non_null(ok);
    assert_true(down < ok);
    free(log);

    /* and the session it opened is real */
    it_launch(s);
    c = it_client(s);
    it_verify(c, lc.token, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(ops_restart_keeps_users_and_revocations, it_teardown),
        cmocka_unit_test_teardown(ops_second_authd_on_same_data_dir_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_too_short_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_readable_by_others_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_absent_without_create_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_owned_by_other_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_unsafe_directory_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_symlink_is_refused, it_teardown),
        cmocka_unit_test_teardown(ops_signing_key_absent_is_created_0600, it_teardown),
        cmocka_unit_test_teardown(ops_log_has_audit_events_and_no_secrets, it_teardown),
        cmocka_unit_test_teardown(ops_sigterm_lets_inflight_login_finish, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.ops", tests, NULL, NULL);
}
