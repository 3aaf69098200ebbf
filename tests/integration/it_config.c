/*
 * it_config.c — configuration and operation of the real authd binary: the
 * config file and its precedence (flags > environment > file > defaults),
 * `authd check-config`, start-up errors that name the cause and the path,
 * SIGHUP (under load, a new certificate, the log level and a reopened
 * --log-file, and never fatal, also during start-up and shutdown).
 */
#define _GNU_SOURCE
#include "harness.h"
#include "http_client.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef IT_SOURCE_DIR
#error "IT_SOURCE_DIR (the repository root) must be defined"
#endif

#define RELOAD_WAIT_MS 15000

/* ---- helpers --------------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void path_in(const it_server *s, const char *name, char *out, size_t cap)
{
    assert_true(snprintf(out, cap, "%s/%s", s->dir, name) < (int)cap);
}

/* count_in counts needle in the file at path (0 if it cannot be read). */
static int count_in(const char *path, const char *needle)
{
    size_t len = 0;
    char *text = it_read_file(path, &len);
    int n = 0;

    for (const char *p = text; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(text);
    return n;
}

/* wait_count polls until path holds needle at least n times. */
static bool wait_count(const char *path, const char *needle, int n, int deadline_ms)
{
    uint64_t end = it_mono_ms() + (uint64_t)deadline_ms;

    while (count_in(path, needle) < n) {
        if (it_mono_ms() > end)
            return false;
        it_nap_ms(20);
    }
    return true;
}

/* check_config runs `authd check-config` with args (NULL-terminated) and
 * env (may be NULL). */
static void check_config(const char *const *args, const char *const *env, it_proc *p)
{
    const char *argv[32] = { AUTHD_BIN, "check-config" };
    size_t n = 2;

    for (; args[n - 2] != NULL; n++) {
        assert_true(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n] = args[n - 2];
    }
    argv[n] = NULL;
    it_run(argv, env, NULL, p);
}

/* value_line finds "key ... = value  ; source" in check-config's output
 * and returns the line (a static copy) for assertions. */
static const char *value_line(const char *out, const char *key)
{
    static char line[512];
    size_t klen = strlen(key);

    for (const char *p = out; p != NULL && *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (n > klen && strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == '=')) {
            snprintf(line, sizeof line, "%.*s", (int)n, p);
            return line;
        }
        p = nl != NULL ? nl + 1 : NULL;
    }
    fail_msg("no line for %s in:\n%s", key, out);
    return NULL;
}

/* ---- the config file and precedence ----------------------------------------- */

/* The same setting in the file, the environment and a flag: the flag wins;
 * without the flag the environment; without both the file; without the
 * file the default. Each line of check-config's listing says which. */
static void config_precedence_flag_env_file_default(void **state)
{
    it_server *s = it_new(NULL);
    char conf[400], want[600];
    it_proc p;

    path_in(s, "authd.conf", conf, sizeof conf);
    write_file(conf,
        "# precedence test\n"
        "token-ttl = 600\n"
        "issuer = from-file\n",
        0640);
    const char *with_flag[] = { "--config", conf, "--token-ttl", "800", NULL };
    const char *no_flag[] = { "--config", conf, NULL };
    const char *no_file[] = { NULL };
    const char *env[] = { "AUTHD_TOKEN_TTL=700", NULL };

    check_config(with_flag, env, &p);
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "= 800  ; flag --token-ttl"));
    assert_non_null(strstr(value_line(p.out, "issuer"), "= from-file  ; file"));
    it_proc_free(&p);

    check_config(no_flag, env, &p);
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "= 700  ; env AUTHD_TOKEN_TTL"));
    it_proc_free(&p);

    check_config(no_flag, NULL, &p);
    snprintf(want, sizeof want, "= 600  ; file %s:2", conf);
    assert_non_null(strstr(value_line(p.out, "token-ttl"), want));
    it_proc_free(&p);

    check_config(no_file, NULL, &p);
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "= 900  ; default"));
    assert_non_null(strstr(value_line(p.out, "issuer"), "= authd  ; default"));
    it_proc_free(&p);

    /* AUTHD_CONFIG names the file as --config does. */
    snprintf(want, sizeof want, "AUTHD_CONFIG=%s", conf);
    const char *env_file[] = { want, NULL };
    check_config(no_file, env_file, &p);
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "= 600  ; file"));
    it_proc_free(&p);
    it_free(s);
    (void)state;
}

/* Bad files are refused with file:line and the key, by check-config and by
 * a start alike (exit 2, nothing served). */
static void config_bad_file_names_file_line_and_key(void **state)
{
    static const struct {
        const char *text;
        int line;
        const char *says;
    } cases[] = {
        { "token-ttl = 600\n\n# comment\ntoken-tt = 5\n", 4, "token-tt: unknown key" },
        { "listen = tls+tcp://127.0.0.1:0\ntoken-ttl = 0\n", 2,
            "token-ttl: expected an integer from 1 to" },
        { "token-ttl = 12abc\n", 1, "token-ttl: expected an integer" },
        { "insecure-plaintext = maybe\n", 1, "insecure-plaintext: expected 1/0" },
        { "token-ttl = 600\ntoken-ttl = 700\n", 2, "token-ttl: set twice (also on line 1)" },
        { "; ok\n[server]\nlisten = x\n", 2, "sections are not used" },
        { "listen = tls+tcp://127.0.0.1:0\n  token-ttl = 5\n", 2, "indented line" },
        { "just words\n", 1, "expected `key = value`" },
        { "config = /etc/other.conf\n", 1, "config: cannot be set in the config file" },
    };
    it_server *s = it_new(NULL);
    char conf[400], want[600];
    const char *argv[64];
    it_proc p;

    path_in(s, "bad.conf", conf, sizeof conf);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(conf, cases[i].text, 0600);
        snprintf(want, sizeof want, "authd: %s:%d: ", conf, cases[i].line);

        const char *args[] = { "--config", conf, NULL };
        check_config(args, NULL, &p);
        assert_int_equal(p.status, 1);
        if (strstr(p.err, want) == NULL || strstr(p.err, cases[i].says) == NULL)
            fail_msg("case %zu: wanted '%s...%s' in:\n%s", i, want, cases[i].says, p.err);
        it_proc_free(&p);

        /* The server itself refuses the same file the same way. */
        it_argv(s, NULL, argv, 60);
        size_t n = 0;
        while (argv[n] != NULL)
            n++;
        argv[n++] = "--config";
        argv[n++] = conf;
        argv[n] = NULL;
        it_run(argv, NULL, NULL, &p);
        assert_int_equal(p.status, 2);
        if (strstr(p.err, want) == NULL || strstr(p.err, cases[i].says) == NULL)
            fail_msg("case %zu (authd): wanted '%s...%s' in:\n%s", i, want, cases[i].says, p.err);
        it_proc_free(&p);
    }
    it_free(s);
    (void)state;
}

/* A config file others can write is refused (whoever edits it can turn off
 * mTLS or the hashing floors), as OpenSSH's StrictModes refuses such an
 * authorized_keys: world-writable, group-writable (red team, issue 9: 0664
 * used to pass), or in a directory others can write (they could rename it
 * away and put another file there); go-w makes it acceptable. */
static void config_world_writable_file_refused(void **state)
{
    it_server *s = it_new(NULL);
    char conf[400], dir[400], inner[500];
    it_proc p;

    path_in(s, "ww.conf", conf, sizeof conf);
    write_file(conf, "token-ttl = 600\n", 0666);
    const char *args[] = { "--config", conf, NULL };
    check_config(args, NULL, &p);
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.err, "is world-writable"));
    assert_non_null(strstr(p.err, conf));
    it_proc_free(&p);

    assert_int_equal(chmod(conf, 0664), 0);
    check_config(args, NULL, &p);
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.err, "is group-writable"));
    assert_non_null(strstr(p.err, conf));
    it_proc_free(&p);

    /* Accepted (check-config may still list other problems: no TLS files
     * at the default paths). */
    assert_int_equal(chmod(conf, 0644), 0);
    check_config(args, NULL, &p);
    assert_null(strstr(p.err, "writable"));
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "= 600  ; file"));
    it_proc_free(&p);

    /* A good file in a directory anyone can write (not sticky). */
    path_in(s, "open", dir, sizeof dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0777), 0);
    snprintf(inner, sizeof inner, "%s/authd.conf", dir);
    write_file(inner, "token-ttl = 600\n", 0644);
    const char *args2[] = { "--config", inner, NULL };
    check_config(args2, NULL, &p);
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.err, "writable by group or others"));
    assert_non_null(strstr(p.err, dir));
    it_proc_free(&p);
    assert_int_equal(chmod(dir, 0755), 0);
    check_config(args2, NULL, &p);
    assert_null(strstr(p.err, "writable"));
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "= 600  ; file"));
    it_proc_free(&p);
    it_free(s);
    (void)state;
}

/* check-config on a good configuration (the repository's example file,
 * with the paths of this test's files given as flags): exit 0, every
 * setting listed. Then the same with one thing wrong at a time: exit 1
 * and the problem named. Nothing is served and nothing created. */
static void config_check_config_good_and_bad(void **state)
{
    it_server *s = it_new(NULL);
    char datadir[400], conf[400];
    it_proc p;

    path_in(s, "not-yet", datadir, sizeof datadir);
    const char *good[] = { "--config", IT_SOURCE_DIR "/examples/authd.conf", "--data-dir", datadir,
        "--signing-key", s->key_path, "--tls-cert", IT_TLS_DIR "/server.crt", "--tls-key",
        IT_TLS_DIR "/server.key", "--tls-client-ca", IT_CA, "--key-dir", "", NULL };
    check_config(good, NULL, &p);
    if (p.status != 0)
        fail_msg("check-config refused the example:\n%s\n%s", p.out, p.err);
    assert_non_null(strstr(p.out, "; configuration OK"));
    assert_non_null(strstr(p.out, "will be created"));
    assert_non_null(strstr(value_line(p.out, "tls-cert"), "; flag --tls-cert"));
    assert_non_null(strstr(value_line(p.out, "token-ttl"), "; file "));
    it_proc_free(&p);
    struct stat st;
    assert_int_equal(stat(datadir, &st), -1); /* not created */

    /* A key that does not match the certificate. */
    const char *mismatch[] = { "--data-dir", s->data_dir, "--signing-key", s->key_path,
        "--tls-cert", IT_TLS_DIR "/server.crt", "--tls-key", IT_CLIENT_KEY, NULL };
    check_config(mismatch, NULL, &p);
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.err, "does not match certificate"));
    it_proc_free(&p);

    /* Several problems at once are all reported. */
    path_in(s, "policy.ini", conf, sizeof conf);
    write_file(conf, "[gateway.internal]\nallow = NoSuchMethod\n", 0600);
    const char *many[] = { "--data-dir", s->data_dir, "--signing-key", "/nonexistent/key",
        "--tls-cert", IT_TLS_DIR "/server.crt", "--tls-key", IT_TLS_DIR "/server.key",
        "--tls-client-ca", "/nonexistent/ca.crt", "--caller-policy", conf, NULL };
    check_config(many, NULL, &p);
    assert_int_equal(p.status, 1);
    assert_non_null(
        strstr(p.err, "cannot read TLS client CA file /nonexistent/ca.crt: No such file"));
    assert_non_null(strstr(p.err, "/nonexistent/key"));
    assert_non_null(strstr(p.err, conf)); /* the policy's error names its file */
    assert_non_null(strstr(p.err, "3 problems"));
    it_proc_free(&p);

    /* A plaintext side port off loopback: refused as start-up refuses it,
     * and accepted with --http-allow-plaintext. */
    const char *open_http[] = { "--data-dir", s->data_dir, "--signing-key", s->key_path,
        "--tls-cert", IT_TLS_DIR "/server.crt", "--tls-key", IT_TLS_DIR "/server.key",
        "--http-listen", "http://0.0.0.0:0", NULL };
    check_config(open_http, NULL, &p);
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.err, "plaintext HTTP is allowed only on a loopback address"));
    it_proc_free(&p);
    const char *open_http_ok[] = { "--data-dir", s->data_dir, "--signing-key", s->key_path,
        "--tls-cert", IT_TLS_DIR "/server.crt", "--tls-key", IT_TLS_DIR "/server.key",
        "--http-listen", "http://0.0.0.0:0", "--http-allow-plaintext", NULL };
    check_config(open_http_ok, NULL, &p);
    if (p.status != 0)
        fail_msg("check-config refused --http-allow-plaintext:\n%s\n%s", p.out, p.err);
    it_proc_free(&p);
    it_free(s);
    (void)state;
}

/* ---- start-up errors --------------------------------------------------------- */

/* run_authd_with runs authd (prefix: a wrapper argv, may be NULL) with
 * the harness's flags plus extra and expects it to fail at start-up with
 * want on stderr. */
static void expect_startup_error(
    it_server *s, const char *const *prefix, const char *const *extra, const char *want)
{
    const char *argv[80];
    const char *base[64];
    size_t n = 0;
    it_proc p;

    it_argv(s, NULL, base, 60);
    for (size_t i = 0; prefix != NULL && prefix[i] != NULL; i++)
        argv[n++] = prefix[i];
    for (size_t i = 0; base[i] != NULL; i++)
        argv[n++] = base[i];
    for (size_t i = 0; extra[i] != NULL; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    it_run(argv, NULL, NULL, &p);
    assert_int_not_equal(p.status, 0);
    if (strstr(p.err, want) == NULL)
        fail_msg("wanted '%s' in authd's stderr:\n%s", want, p.err);
    assert_null(strstr(p.err, "system lib")); /* the old, useless message */
    it_proc_free(&p);
}

/* A missing certificate, a bad PEM and an unreadable key are each named
 * with the path and the real cause, in one line. */
static void config_startup_errors_name_cause_and_path(void **state)
{
    it_server *s = it_new(NULL);
    char missing[400], bad[400], key[400], want[1024];

    path_in(s, "missing.crt", missing, sizeof missing);
    snprintf(want, sizeof want, "authd: cannot read TLS certificate %s: No such file or directory",
        missing);
    const char *e1[] = { "--tls-cert", missing, NULL };
    expect_startup_error(s, NULL, e1, want);

    path_in(s, "bad.crt", bad, sizeof bad);
    write_file(bad, "this is not a certificate\n", 0644);
    snprintf(
        want, sizeof want, "authd: TLS certificate %s rejected: PEM routines: no start line", bad);
    const char *e2[] = { "--tls-cert", bad, NULL };
    expect_startup_error(s, NULL, e2, want);

    /* An unreadable key. Tests run as root, which reads a mode-000 file
     * anyway (CAP_DAC_OVERRIDE); so authd runs under setpriv with
     * CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of its bounding set:
     * still uid 0 and owner of its other files, but held to the key's
     * mode bits like any user. As another user, chmod 000 is enough. */
    size_t klen = 0;
    char *pem = it_read_file(IT_TLS_DIR "/server.key", &klen);
    assert_non_null(pem);
    path_in(s, "server.key", key, sizeof key);
    write_file(key, pem, 0000);
    free(pem);
    snprintf(want, sizeof want, "authd: cannot read TLS key %s: Permission denied", key);
    const char *e3[] = { "--tls-key", key, NULL };
    const char *drop[]
        = { "/usr/bin/setpriv", "--bounding-set=-dac_override,-dac_read_search", NULL };
    if (geteuid() == 0) {
        if (access(drop[0], X_OK) != 0)
            skip(); /* util-linux's setpriv is part of Debian's base system */
        expect_startup_error(s, drop, e3, want);
    } else {
        expect_startup_error(s, NULL, e3, want);
    }
    it_free(s);
    (void)state;
}

/* The caller policy is held to the same rules (whoever edits it can grant
 * any certified caller every RPC): a group-writable one stops start-up,
 * naming the file and the fix. It used to be read whatever its mode. */
static void config_writable_caller_policy_refused(void **state)
{
    it_server *s = it_new(NULL);
    char pol[400], want[600];

    path_in(s, "policy.ini", pol, sizeof pol);
    write_file(pol, "[authd-dev-client]\nallow = *\n", 0664);
    snprintf(want, sizeof want, "policy %s is group-writable", pol);
    const char *e[] = { "--tls-client-ca", IT_CA, "--caller-policy", pol, NULL };
    expect_startup_error(s, NULL, e, want);
    it_free(s);
    (void)state;
}

/* ---- SIGHUP ---------------------------------------------------------------------- */

/* served_serial is the serial number (hex, as openssl prints it) of the
 * certificate a new TLS connection to s is served. */
static void served_serial_at(const char *url, char *out, size_t cap)
{
    const char *hostport = strstr(url, "://");
    it_proc p, q;

    assert_non_null(hostport);
    const char *sc[]
        = { OPENSSL_BIN, "s_client", "-connect", hostport + 3, "-servername", "localhost", NULL };
    it_run(sc, NULL, "", &p);
    assert_non_null(strstr(p.out, "-----BEGIN CERTIFICATE-----"));
    const char *x[] = { OPENSSL_BIN, "x509", "-noout", "-serial", NULL };
    it_run(x, NULL, p.out, &q);
    assert_int_equal(q.status, 0);
    char *eq = strchr(q.out, '=');
    assert_non_null(eq);
    snprintf(out, cap, "%s", eq + 1);
    out[strcspn(out, "\r\n")] = '\0';
    it_proc_free(&p);
    it_proc_free(&q);
}

static void served_serial(const it_server *s, char *out, size_t cap)
{
    served_serial_at(s->url, out, cap);
}

/* load: Verify calls without pause until told to stop, on one long-lived
 * connection and on a new connection every few calls (so handshakes with
 * the old and the new TLS context happen during reloads). No assert here:
 * cmocka asserts only on the test's own thread. */
struct load {
    const it_server *s;
    char token[4096];
    atomic_bool stop;
    atomic_ulong ok, failed, connections;
    char first_error[1024];
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    authd_client_options o = { .url = l->s->url, .ca_file = IT_CA, .timeout_ms = 10000 };
    authd_client *longlived = NULL, *fresh = NULL;
    authd_status st;

    if (authd_client_open(&o, &longlived, &st) != AUTHD_OK) {
        snprintf(l->first_error, sizeof l->first_error, "open: %s", st.message);
        atomic_fetch_add(&l->failed, 1);
        return NULL;
    }
    for (unsigned i = 0; !atomic_load(&l->stop); i++) {
        authd_client *c = longlived;
        if (i % 8 == 0) {
            authd_client_close(fresh);
            fresh = NULL;
            if (authd_client_open(&o, &fresh, &st) != AUTHD_OK) {
                if (atomic_fetch_add(&l->failed, 1) == 0)
                    snprintf(l->first_error, sizeof l->first_error, "open: %s [%s]: %s",
                        authd_code_str(st.code), st.reason, st.message);
                continue;
            }
            atomic_fetch_add(&l->connections, 1);
        }
        if (i % 2 == 0 && fresh != NULL)
            c = fresh;
        if (it_verify(c, l->token, &st, NULL) == AUTHD_OK) {
            atomic_fetch_add(&l->ok, 1);
        } else if (atomic_fetch_add(&l->failed, 1) == 0) {
            snprintf(l->first_error, sizeof l->first_error, "verify: %s [%s]: %s",
                authd_code_str(st.code), st.reason, st.message);
        }
    }
    authd_client_close(fresh);
    authd_client_close(longlived);
    return NULL;
}

/* make_cert issues a new server certificate (serial 0x5EED...) for
 * localhost from the dev CA into dir/new.crt and dir/new.key. */
static void make_cert(const it_server *s, const char *serial)
{
    char key[400], csr[400], ext[400], crt[400];
    it_proc p;

    path_in(s, "new.key", key, sizeof key);
    path_in(s, "new.csr", csr, sizeof csr);
    path_in(s, "new.ext", ext, sizeof ext);
    path_in(s, "new.crt", crt, sizeof crt);
    write_file(ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\n",
        0600);
    const char *req[]
        = { OPENSSL_BIN, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost", NULL };
    it_run(req, NULL, NULL, &p);
    assert_int_equal(p.status, 0);
    it_proc_free(&p);
    const char *sign[] = { OPENSSL_BIN, "x509", "-req", "-in", csr, "-CA", IT_TLS_DIR "/ca.crt",
        "-CAkey", IT_TLS_DIR "/ca.key", "-set_serial", serial, "-days", "30", "-extfile", ext,
        "-out", crt, NULL };
    it_run(sign, NULL, NULL, &p);
    assert_int_equal(p.status, 0);
    it_proc_free(&p);
}

/* SIGHUP under load: a client doing Verify calls without pause (on a
 * long-lived connection and on new ones) through several reloads loses no
 * request; the certificate files are replaced before the first reload,
 * and new connections are served the new certificate (its serial) after
 * it, while the old connections keep working. */
static void config_sighup_under_load_new_cert_no_request_lost(void **state)
{
    it_server *s = it_new(NULL);
    char crt[400], key[400], newcrt[400], newkey[400], serial[64];
    size_t len = 0;
    struct load l = { .s = s };
    pthread_t th;

    path_in(s, "server.crt", crt, sizeof crt);
    path_in(s, "server.key", key, sizeof key);
    char *pem = it_read_file(IT_TLS_DIR "/server.crt", &len);
    assert_non_null(pem);
    write_file(crt, pem, 0644);
    free(pem);
    pem = it_read_file(IT_TLS_DIR "/server.key", &len);
    assert_non_null(pem);
    write_file(key, pem, 0600);
    free(pem);
    s->opts.extra[0] = "--tls-cert";
    s->opts.extra[1] = crt;
    s->opts.extra[2] = "--tls-key";
    s->opts.extra[3] = key;
    it_launch(s);

    char before[64];
    served_serial(s, before, sizeof before);
    authd_client *c = it_client(s);
    authd_status st;
    it_register(c, "hup-user", "hup@example.com", "reload me gently please", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, "hup-user", "reload me gently please", l.token, sizeof l.token, NULL);
    authd_client_close(c);

    make_cert(s, "0x5EED1234");
    assert_int_equal(pthread_create(&th, NULL, load_main, &l), 0);
    /* Let the load get going before the first reload. */
    uint64_t end = it_mono_ms() + 10000;
    while (atomic_load(&l.ok) < 50 && it_mono_ms() < end)
        it_nap_ms(5);

    path_in(s, "new.crt", newcrt, sizeof newcrt);
    path_in(s, "new.key", newkey, sizeof newkey);
    assert_int_equal(rename(newkey, key), 0);
    assert_int_equal(rename(newcrt, crt), 0);
    const int reloads = 5;
    for (int i = 1; i <= reloads; i++) {
        unsigned long at = atomic_load(&l.ok);
        assert_int_equal(kill(s->pid, SIGHUP), 0);
        if (!wait_count(s->log_path, "\"event\":\"reloaded\"", i, RELOAD_WAIT_MS))
            fail_msg("reload %d not logged", i);
        /* Some calls complete between reloads. */
        end = it_mono_ms() + 10000;
        while (atomic_load(&l.ok) < at + 20 && it_mono_ms() < end)
            it_nap_ms(2);
    }
    served_serial(s, serial, sizeof serial);
    atomic_store(&l.stop, true);
    pthread_join(th, NULL);

    print_message("[ config ] %lu Verify calls, %lu new connections, %lu failed, over %d reloads\n",
        atomic_load(&l.ok), atomic_load(&l.connections), atomic_load(&l.failed), reloads);
    if (atomic_load(&l.failed) != 0)
        fail_msg(
            "%lu requests lost during reloads; first: %s", atomic_load(&l.failed), l.first_error);
    assert_true(atomic_load(&l.ok) >= 50 + (unsigned long)reloads * 20);
    assert_true(atomic_load(&l.connections) >= 10);
    assert_string_not_equal(before, "5EED1234");
    assert_string_equal(serial, "5EED1234");
    assert_int_equal(count_in(s->log_path, "\"event\":\"reload_failed\""), 0);
    it_finish(s);
    (void)state;
}

/* SIGHUP renews the https:// side port's certificate too (libmicrohttpd
 * cannot: a new daemon takes the socket over); a pair that does not load
 * is refused with reload_failed and the certificate in force stays. */
static void config_sighup_side_port_new_cert(void **state)
{
    it_server *s = it_new(NULL);
    char crt[400], key[400], newcrt[400], newkey[400], hurl_file[400], before[64], serial[64];
    size_t len = 0;

    path_in(s, "server.crt", crt, sizeof crt);
    path_in(s, "server.key", key, sizeof key);
    path_in(s, "http-url", hurl_file, sizeof hurl_file);
    char *pem = it_read_file(IT_TLS_DIR "/server.crt", &len);
    assert_non_null(pem);
    write_file(crt, pem, 0644);
    free(pem);
    pem = it_read_file(IT_TLS_DIR "/server.key", &len);
    assert_non_null(pem);
    write_file(key, pem, 0600);
    free(pem);
    const char *extra[] = { "--tls-cert", crt, "--tls-key", key, "--http-listen",
        "https://127.0.0.1:0", "--http-url-file", hurl_file };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        s->opts.extra[i] = extra[i];
    it_launch(s);
    char *hurl = NULL;
    uint64_t end = it_mono_ms() + RELOAD_WAIT_MS;
    while ((hurl = it_read_file(hurl_file, &len)) == NULL && it_mono_ms() < end)
        it_nap_ms(20);
    assert_non_null(hurl);
    hurl[strcspn(hurl, "\r\n")] = '\0';

    served_serial_at(hurl, before, sizeof before);
    make_cert(s, "0x5EED5678");
    path_in(s, "new.crt", newcrt, sizeof newcrt);
    path_in(s, "new.key", newkey, sizeof newkey);
    assert_int_equal(rename(newkey, key), 0);
    assert_int_equal(rename(newcrt, crt), 0);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, "\"http_tls\":true", RELOAD_WAIT_MS));
    served_serial_at(hurl, serial, sizeof serial);
    assert_string_not_equal(before, "5EED5678");
    assert_string_equal(serial, "5EED5678");
    served_serial(s, serial, sizeof serial); /* the main port too */
    assert_string_equal(serial, "5EED5678");

    /* A key that is not the certificate's: refused, the pair in force stays. */
    make_cert(s, "0x5EED9999");
    assert_int_equal(rename(newkey, key), 0); /* the new key, the old (5678) certificate */
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, "the side port's certificate in force", RELOAD_WAIT_MS));
    served_serial_at(hurl, serial, sizeof serial);
    assert_string_equal(serial, "5EED5678");
    it_http_resp r;
    it_http_get(hurl, "/readyz", NULL, NULL, IT_CA, &r);
    assert_int_equal(r.status, 200);
    it_http_free(&r);
    free(hurl);
    it_finish(s);
    (void)state;
}

/* --log-file: lines go to the file (0600), not stderr; after the file is
 * renamed (logrotate) and SIGHUP, new lines go to a new file at the path
 * while the renamed one keeps the old lines. The same SIGHUP re-reads the
 * log level from the config file: debug lines (a successful Verify's rpc
 * line) appear only after the file says debug. */
static void config_log_file_reopened_and_level_reloaded(void **state)
{
    it_server *s = it_new(NULL);
    char log[300], rotated[400], conf[400], stderr_path[400];
    char token[4096];
    struct stat st;
    authd_status ast;

    path_in(s, "service.log", log, sizeof log);
    path_in(s, "service.log.1", rotated, sizeof rotated);
    path_in(s, "authd.conf", conf, sizeof conf);
    char text[600];
    snprintf(text, sizeof text, "log-level = info\ndata-dir = %s\n", s->data_dir);
    write_file(conf, text, 0600);
    s->opts.extra[0] = "--log-file";
    s->opts.extra[1] = log;
    s->opts.extra[2] = "--config";
    s->opts.extra[3] = conf;
    it_launch(s);
    snprintf(stderr_path, sizeof stderr_path, "%s", s->log_path);
    snprintf(s->log_path, sizeof s->log_path, "%s", log); /* it_log_wait reads the file */

    assert_true(it_log_wait(s, "\"event\":\"listening\"", RELOAD_WAIT_MS));
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_in(stderr_path, "\"event\""), 0); /* nothing on stderr */

    authd_client *c = it_client(s);
    it_register(c, "log-user", "log@example.com", "rotate the logs nightly", &ast, NULL);
    IT_EXPECT(&ast, AUTHD_OK, NULL);
    it_login_token(c, "log-user", "rotate the logs nightly", token, sizeof token, NULL);
    it_verify(c, token, &ast, NULL);
    IT_EXPECT(&ast, AUTHD_OK, NULL);
    assert_true(it_log_wait(s, "\"audit\":\"login_success\"", RELOAD_WAIT_MS));

    /* The operator commands read the same file: `authd user list` finds
     * the store through its data-dir. */
    const char *list[] = { AUTHD_BIN, "user", "list", "--config", conf, NULL };
    it_proc p;
    it_run(list, NULL, NULL, &p);
    if (p.status != 0 || strstr(p.out, "log-user") == NULL)
        fail_msg("authd user list --config: status %d\n%s\n%s", p.status, p.out, p.err);
    it_proc_free(&p);

    /* logrotate: rename, then SIGHUP; the level goes to debug meanwhile. */
    assert_int_equal(rename(log, rotated), 0);
    snprintf(text, sizeof text, "log-level = debug\ndata-dir = %s\n", s->data_dir);
    write_file(conf, text, 0600);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, "\"event\":\"log_reloaded\"", RELOAD_WAIT_MS));
    assert_true(it_log_wait(s, "\"log_level\":\"debug\"", RELOAD_WAIT_MS));
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    it_verify(c, token, &ast, NULL);
    IT_EXPECT(&ast, AUTHD_OK, NULL);
    assert_true(it_log_wait(s, "\"method\":\"Verify\",\"peer\"", RELOAD_WAIT_MS));
    /* The old lines stayed in the renamed file, and only there. */
    assert_true(count_in(rotated, "\"event\":\"listening\"") == 1);
    assert_true(count_in(rotated, "\"audit\":\"login_success\"") == 1);
    assert_int_equal(count_in(rotated, "\"event\":\"log_reloaded\""), 0);
    assert_int_equal(count_in(rotated, "\"method\":\"Verify\""), 0);
    assert_int_equal(count_in(log, "\"event\":\"listening\""), 0);

    /* A config file that no longer loads keeps the level in force. */
    write_file(conf, "log-level = loud\n", 0600);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, "\"event\":\"reload_failed\"", RELOAD_WAIT_MS));
    assert_true(it_log_wait(s, "the log level in force", RELOAD_WAIT_MS));
    authd_client_close(c);
    it_stop(s);
    assert_true(count_in(log, "\"event\":\"stopped\"") == 1);
    it_free(s);
    (void)state;
}

/* hup_spammer sends SIGHUP to the server without pause until told to
 * stop, through start-up (the pid is set before the harness waits for the
 * url file). A pid is only signalled while its process is unreaped (the
 * test stops this thread before it reaps), so no other process can be
 * hit. */
struct spam {
    it_server *s;
    atomic_bool stop;
    atomic_ulong sent;
};

/* hup_blocked is true once pid's main() has blocked SIGHUP (its first
 * step): /proc/PID/status, SigBlk bit 0. Before that the process is the
 * harness's child before exec, the dynamic loader or ASan's start-up, where
 * a SIGHUP kills any program whose parent did not block it. */
static bool hup_blocked(pid_t pid)
{
    char path[64], line[256];
    bool blocked = false;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long long mask;
        if (sscanf(line, "SigBlk: %llx", &mask) == 1) {
            blocked = (mask & 1u) != 0; /* bit SIGHUP - 1 */
            break;
        }
    }
    fclose(f);
    return blocked;
}

static void *hup_spammer(void *arg)
{
    struct spam *sp = arg;
    while (!atomic_load(&sp->stop)) {
        pid_t pid = __atomic_load_n(&sp->s->pid, __ATOMIC_RELAXED);
        if (pid > 0 && hup_blocked(pid) && kill(pid, SIGHUP) == 0)
            atomic_fetch_add(&sp->sent, 1);
        struct timespec ts = { 0, 200000 };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* SIGHUP never kills authd: not during start-up (from main()'s first
 * step, which blocks it: before main() no program can, unless its parent
 * blocked it), not while serving, not during shutdown (SIGTERM,
 * then SIGHUPs until it has exited: status 0). */
static void config_sighup_never_fatal(void **state)
{
    it_server *s = it_new(NULL);
    struct spam sp = { .s = s };
    pthread_t th;
    int status = 0;
    unsigned long during_stop = 0;

    assert_int_equal(pthread_create(&th, NULL, hup_spammer, &sp), 0);
    it_launch(s); /* fails if authd dies during start-up */
    authd_client *c = it_client(s);
    authd_status st;
    it_register(c, "spam-user", "spam@example.com", "signals all the way down", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    atomic_store(&sp.stop, true);
    pthread_join(th, NULL);
    assert_true(atomic_load(&sp.sent) > 10);

    assert_int_equal(kill(s->pid, SIGTERM), 0);
    uint64_t end = it_mono_ms() + IT_STOP_DEADLINE_MS;
    for (;;) {
        pid_t w = waitpid(s->pid, &status, WNOHANG); /* reaped only here */
        if (w == s->pid)
            break;
        assert_true(it_mono_ms() < end);
        if (kill(s->pid, SIGHUP) == 0)
            during_stop++;
        it_nap_ms(1);
    }
    s->pid = 0;
    print_message("[ config ] %lu SIGHUPs while starting and serving, %lu while stopping\n",
        atomic_load(&sp.sent), during_stop);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        it_print_log_tail(s, 30);
        fail_msg("authd ended with status 0x%x under SIGHUPs (want exit 0)", status);
    }
    assert_true(during_stop > 0);
    it_free(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(config_precedence_flag_env_file_default, it_teardown),
        cmocka_unit_test_teardown(config_bad_file_names_file_line_and_key, it_teardown),
        cmocka_unit_test_teardown(config_world_writable_file_refused, it_teardown),
        cmocka_unit_test_teardown(config_writable_caller_policy_refused, it_teardown),
        cmocka_unit_test_teardown(config_check_config_good_and_bad, it_teardown),
        cmocka_unit_test_teardown(config_startup_errors_name_cause_and_path, it_teardown),
        cmocka_unit_test_teardown(config_sighup_under_load_new_cert_no_request_lost, it_teardown),
        cmocka_unit_test_teardown(config_sighup_side_port_new_cert, it_teardown),
        cmocka_unit_test_teardown(config_log_file_reopened_and_level_reloaded, it_teardown),
        cmocka_unit_test_teardown(config_sighup_never_fatal, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.config", tests, NULL, NULL);
}
