/*
 * harness.c — starting and stopping the real authd, child processes, the
 * client and raw-socket helpers and token forging for the integration
 * tests. See harness.h.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/supplemental/tls/tls.h>

extern char **environ;

#define MAX_LIVE 8

static it_server *live[MAX_LIVE]; /* servers not yet freed, for teardown */

/* ---- small utilities --------------------------------------------------- */

int64_t it_now(void)
{
    return (int64_t)time(NULL);
}

uint64_t it_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void it_nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) { }
}

char *it_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap * 2 + 8192;
            char *nb = realloc(buf, cap);
            assert_non_null(nb);
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *dir)
{
    const char *keep = getenv("IT_KEEP");
    if (keep != NULL && keep[0] == '1') {
        fprintf(stderr, "[ harness ] keeping %s\n", dir);
        return;
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_tmpdir(char *out, size_t cap, const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(out, cap, "%s/authd-it-%s-XXXXXX", base, tag);
    assert_true(n > 0 && (size_t)n < cap);
    assert_non_null(mkdtemp(out));
}

/* child_env builds the environment for a child: ours without AUTHD_*
 * (so a developer's settings cannot leak into a test) and without
 * systemd's NOTIFY_SOCKET / WATCHDOG_* (a test run inside a unit must not
 * speak for it; it_systemd passes its own), plus extra. */
static char **child_env(const char *const *extra)
{
    size_t n = 0, m = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    while (extra != NULL && extra[m] != NULL)
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    assert_non_null(env);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "AUTHD_", 6) != 0 && strncmp(environ[i], "NOTIFY_SOCKET=", 14) != 0
            && strncmp(environ[i], "WATCHDOG_", 9) != 0)
            env[k++] = environ[i];
    for (size_t i = 0; i < m; i++)
        env[k++] = (char *)extra[i];
    env[k] = NULL;
    return env;
}

/* spawn forks and execs argv[0] with stdin/stdout/stderr on the given fds.
 * Between fork and exec only async-signal-safe calls: the test process
 * has nng threads. The child dies with us (PR_SET_PDEATHSIG), so a test
 * killed by its ctest timeout leaves no authd behind. */
static pid_t spawn(const char *const *argv, char **envp, int in_fd, int out_fd, int err_fd)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
            _exit(126);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(argv[0], (char *const *)argv, envp);
        _exit(127);
    }
    return pid;
}

/* wait_exit polls for pid's exit until deadline_ms; returns the exit code
 * (128 + signal if killed by one) or -1 on timeout. */
static int wait_exit(pid_t pid, int deadline_ms)
{
    uint64_t end = it_mono_ms() + (uint64_t)deadline_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        assert_true(r == 0 || errno == EINTR);
        if (it_mono_ms() >= end)
            return -1;
        it_nap_ms(5);
    }
}

/* ---- server life cycle ----------------------------------------------- */

void it_kid(const uint8_t *key, size_t len, char out[17])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, key, len);
    sodium_bin2hex(out, 17, h, 8);
}

void it_fingerprint(const char *token, char out[17])
{
    it_kid((const uint8_t *)token, strlen(token), out);
}

it_server *it_new(const it_opts *o)
{
    it_server *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_true(sodium_init() >= 0);
    if (o != NULL)
        s->opts = *o;
    make_tmpdir(s->dir, sizeof s->dir, "srv");
    snprintf(s->data_dir, sizeof s->data_dir, "%s/data", s->dir);
    snprintf(s->key_path, sizeof s->key_path, "%s/signing.key", s->dir);
    snprintf(s->url_file, sizeof s->url_file, "%s/url", s->dir);
    snprintf(s->log_path, sizeof s->log_path, "%s/authd.log", s->dir);

    if (s->opts.key_len >= 0) {
        size_t n = s->opts.key_len == 0 ? IT_KEY_BYTES : (size_t)s->opts.key_len;
        assert_true(n <= sizeof s->key);
        randombytes_buf(s->key, n);
        s->key_len = n;
        int fd = open(s->key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, s->key, n), (ssize_t)n);
        assert_int_equal(fchmod(fd, s->opts.key_mode != 0 ? s->opts.key_mode : 0600), 0);
        assert_int_equal(close(fd), 0);
        it_kid(s->key, n, s->kid);
    }
    for (int i = 0; i < MAX_LIVE; i++) {
        if (live[i] == NULL) {
            live[i] = s;
            return s;
        }
    }
    fail_msg("harness: more than %d servers at once", MAX_LIVE);
    return NULL;
}

void it_argv(const it_server *s, const char *listen, const char **argv, size_t cap)
{
    size_t n = 0;
#define ARG(x)                                                                                     \
    do {                                                                                           \
        assert_true(n + 1 < cap);                                                                  \
        argv[n++] = (x);                                                                           \
    } while (0)
    ARG(AUTHD_BIN);
    ARG("--listen");
    if (listen == NULL)
        listen = s->opts.listen != NULL ? s->opts.listen : "tls+tcp://127.0.0.1:0";
    ARG(listen);
    ARG("--url-file");
    ARG(s->url_file);
    ARG("--data-dir");
    ARG(s->data_dir);
    ARG("--signing-key");
    ARG(s->key_path);
    ARG("--tls-cert");
    ARG(IT_TLS_DIR "/server.crt");
    ARG("--tls-key");
    ARG(IT_TLS_DIR "/server.key");
    if (!s->opts.cheap_argon2_off) {
        ARG("--argon2-ops");
        ARG("1");
        ARG("--argon2-mem-kib");
        ARG("64");
        ARG("--insecure-weak-params"); /* below the floors: only with the dev flag */
    }
    for (int i = 0; i < IT_MAX_EXTRA && s->opts.extra[i] != NULL; i++)
        ARG(s->opts.extra[i]);
#undef ARG
    argv[n] = NULL;
}

void it_print_log_tail(const it_server *s, int lines)
{
    size_t len = 0;
    char *log = it_read_file(s->log_path, &len);
    if (log == NULL) {
        fprintf(stderr, "[ harness ] no log at %s\n", s->log_path);
        return;
    }
    size_t start = len;
    int seen = 0;
    while (start > 0) {
        if (log[start - 1] == '\n' && start != len && ++seen == lines)
            break;
        start--;
    }
    fprintf(stderr, "[ harness ] ---- tail of %s ----\n%s", s->log_path, log + start);
    if (len > 0 && log[len - 1] != '\n')
        fputc('\n', stderr);
    fprintf(stderr, "[ harness ] ---- end of log ----\n");
    free(log);
}

/*
 * launch starts bin (authd or a build of it) with s's flags and env_extra
 * added to its environment; its stdout and stderr go to err_fd, or to a
 * new log file (s->log_path) when err_fd < 0. Then it waits for the url
 * file, failing the test if the process exits or the deadline passes.
 */
static void launch(it_server *s, const char *bin, const char *const *env_extra, int err_fd)
{
    const char *argv[64];
    char **envp;
    int in_fd, log_fd = err_fd;

    assert_int_equal(s->pid, 0);
    if (err_fd < 0 && s->starts > 0)
        snprintf(s->log_path, sizeof s->log_path, "%s/authd-%d.log", s->dir, s->starts + 1);
    s->starts++;
    unlink(s->url_file); /* a stale file must not pass for the new server */
    it_argv(s, NULL, argv, sizeof argv / sizeof argv[0]);
    if (bin != NULL)
        argv[0] = bin;
    envp = child_env(env_extra);
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (err_fd < 0)
        log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(in_fd >= 0 && log_fd >= 0);
    s->pid = spawn(argv, envp, in_fd, log_fd, log_fd);
    close(in_fd);
    if (err_fd < 0)
        close(log_fd);
    free(envp);

    /* Poll for the url file (written atomically by authd once listening). */
    uint64_t end = it_mono_ms() + IT_START_DEADLINE_MS;
    for (;;) {
        size_t len = 0;
        char *url = it_read_file(s->url_file, &len);
        if (url != NULL) {
            while (len > 0 && (url[len - 1] == '\n' || url[len - 1] == '\r'))
                url[--len] = '\0';
            assert_true(len > 0 && len < sizeof s->url);
            memcpy(s->url, url, len + 1);
            free(url);
            return;
        }
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            if (err_fd < 0)
                it_print_log_tail(s, 30);
            fail_msg("%s exited during start-up (status 0x%x)", argv[0], status);
        }
        if (it_mono_ms() >= end) {
            if (err_fd < 0)
                it_print_log_tail(s, 30);
            fail_msg("%s did not write its url file within %d ms", argv[0], IT_START_DEADLINE_MS);
        }
        it_nap_ms(10);
    }
}

void it_launch(it_server *s)
{
    launch(s, NULL, NULL, -1);
}

void it_stop(it_server *s)
{
    assert_true(s->pid > 0);
    assert_int_equal(kill(s->pid, SIGTERM), 0);
    int code = wait_exit(s->pid, IT_STOP_DEADLINE_MS);
    if (code < 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
        it_print_log_tail(s, 30);
        fail_msg("authd did not exit within %d ms of SIGTERM", IT_STOP_DEADLINE_MS);
    }
    s->pid = 0;
    if (code != 0) {
        it_print_log_tail(s, 60);
        fail_msg("authd exited with status %d after SIGTERM (want 0)", code);
    }
}

void it_free(it_server *s)
{
    if (s == NULL)
        return;
    if (s->pid > 0) {
        fprintf(stderr, "[ harness ] authd (pid %d) still running at teardown: test failed\n",
            (int)s->pid);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
        it_print_log_tail(s, 30);
    }
    rm_rf(s->dir);
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == s)
            live[i] = NULL;
    sodium_memzero(s->key, sizeof s->key);
    free(s);
}

it_server *it_start(const it_opts *o)
{
    it_server *s = it_new(o);
    it_launch(s);
    return s;
}

void it_finish(it_server *s)
{
    it_stop(s);
    it_free(s);
}

int it_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] != NULL)
            it_free(live[i]);
    return 0;
}

/* ---- child processes ---------------------------------------------------- */

void it_run(
    const char *const *argv, const char *const *env_extra, const char *stdin_data, it_proc *p)
{
    char dir[256], in_path[300], out_path[300], err_path[300];
    int in_fd, out_fd, err_fd;

    memset(p, 0, sizeof *p);
    make_tmpdir(dir, sizeof dir, "run");
    snprintf(in_path, sizeof in_path, "%s/stdin", dir);
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    if (stdin_data != NULL) {
        int fd = open(in_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        size_t n = strlen(stdin_data);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, stdin_data, n), (ssize_t)n);
        close(fd);
        in_fd = open(in_path, O_RDONLY | O_CLOEXEC);
    } else {
        in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(in_fd >= 0 && out_fd >= 0 && err_fd >= 0);

    char **envp = child_env(env_extra);
    pid_t pid = spawn(argv, envp, in_fd, out_fd, err_fd);
    close(in_fd);
    close(out_fd);
    close(err_fd);
    free(envp);

    p->status = wait_exit(pid, IT_RUN_DEADLINE_MS);
    if (p->status < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    p->out = it_read_file(out_path, NULL);
    p->err = it_read_file(err_path, NULL);
    assert_non_null(p->out);
    assert_non_null(p->err);
    unlink(in_path);
    unlink(out_path);
    unlink(err_path);
    rmdir(dir);
    if (p->status < 0)
        fail_msg("%s did not exit within %d ms; stderr:\n%s", argv[0], IT_RUN_DEADLINE_MS, p->err);
}

void it_proc_free(it_proc *p)
{
    free(p->out);
    free(p->err);
    p->out = p->err = NULL;
}

/* ---- client library ----------------------------------------------------- */

int it_client_try(const authd_client_options *o, authd_client **c, authd_status *st)
{
    return authd_client_open(o, c, st);
}

authd_client *it_client(const it_server *s)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;

    o.url = s->url;
    o.ca_file = IT_CA;
    o.timeout_ms = IT_CALL_TIMEOUT_MS;
    if (authd_client_open(&o, &c, &st) != AUTHD_OK)
        fail_msg("cannot open a client to %s: %s [%s]: %s", s->url, authd_code_str(st.code),
            st.reason, st.message);
    return c;
}

int it_register(authd_client *c, const char *username, const char *email, const char *password,
    authd_status *st, Authd__V1__RegisterResponse **out)
{
    Authd__V1__RegisterRequest req = AUTHD__V1__REGISTER_REQUEST__INIT;
    Authd__V1__RegisterResponse *resp = NULL;

    req.username = (char *)username;
    req.email = (char *)email;
    req.password = (char *)password;
    int rc = authd_client_register(c, &req, &resp, st);
    if (rc == AUTHD_OK && out != NULL)
        *out = resp;
    else if (rc == AUTHD_OK)
        authd__v1__register_response__free_unpacked(resp, NULL);
    return rc;
}

int it_login(authd_client *c, const char *login, const char *password, authd_status *st,
    Authd__V1__LoginResponse **out)
{
    Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__LoginResponse *resp = NULL;

    req.login = (char *)login;
    req.password = (char *)password;
    int rc = authd_client_login(c, &req, &resp, st);
    if (rc == AUTHD_OK && out != NULL)
        *out = resp;
    else if (rc == AUTHD_OK)
        authd__v1__login_response__free_unpacked(resp, NULL);
    return rc;
}

int it_verify(authd_client *c, const char *token, authd_status *st, Authd__V1__VerifyResponse **out)
{
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;

    req.access_token = (char *)token;
    int rc = authd_client_verify(c, &req, &resp, st);
    if (rc == AUTHD_OK && out != NULL)
        *out = resp;
    else if (rc == AUTHD_OK)
        authd__v1__verify_response__free_unpacked(resp, NULL);
    return rc;
}

int it_logout(authd_client *c, const char *token, authd_status *st)
{
    Authd__V1__LogoutRequest req = AUTHD__V1__LOGOUT_REQUEST__INIT;
    Authd__V1__LogoutResponse *resp = NULL;

    req.access_token = (char *)token;
    int rc = authd_client_logout(c, &req, &resp, st);
    if (rc == AUTHD_OK)
        authd__v1__logout_response__free_unpacked(resp, NULL);
    return rc;
}

void it_login_token(authd_client *c, const char *login, const char *password, char *tok, size_t cap,
    Authd__V1__LoginResponse **out)
{
    Authd__V1__LoginResponse *resp = NULL;
    authd_status st;

    it_login(c, login, password, &st, &resp);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_non_null(resp->access_token);
    assert_true(strlen(resp->access_token) < cap);
    snprintf(tok, cap, "%s", resp->access_token);
    if (out != NULL)
        *out = resp;
    else
        authd__v1__login_response__free_unpacked(resp, NULL);
}

void it_expect_at(const authd_status *st, int code, const char *reason, const char *file, int line)
{
    if (st->code == code && (reason == NULL || strcmp(st->reason, reason) == 0))
        return;
    print_error("%s:%d: expected %s [%s], got %s [%s]: %s\n", file, line, authd_code_str(code),
        reason != NULL ? reason : "*", authd_code_str(st->code), st->reason, st->message);
    _fail(file, line);
}

/* ---- raw SP frames over TLS -------------------------------------------- */

static const uint8_t sp_req0_header[8] = { 0, 'S', 'P', 0, 0, 0x30, 0, 0 }; /* req0 = 48 */
static const uint8_t sp_rep0_header[8] = { 0, 'S', 'P', 0, 0, 0x31, 0, 0 }; /* rep0 = 49 */

/* stream_io moves exactly len bytes (send or receive) within timeout_ms;
 * returns 0 or the nng error (NNG_ECONNSHUT at end of stream). */
static int stream_io(nng_stream *c, bool sending, void *buf, size_t len, int timeout_ms)
{
    nng_aio *aio = NULL;
    uint64_t end = it_mono_ms() + (uint64_t)timeout_ms;
    int rv = 0;

    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    while (len > 0) {
        uint64_t now = it_mono_ms();
        if (now >= end) {
            rv = NNG_ETIMEDOUT;
            break;
        }
        nng_iov iov = { buf, len };
        assert_int_equal(nng_aio_set_iov(aio, 1, &iov), 0);
        nng_aio_set_timeout(aio, (nng_duration)(end - now));
        if (sending)
            nng_stream_send(c, aio);
        else
            nng_stream_recv(c, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) != 0)
            break;
        size_t n = nng_aio_count(aio);
        if (n == 0) {
            rv = NNG_ECONNSHUT;
            break;
        }
        buf = (uint8_t *)buf + n;
        len -= n;
    }
    nng_aio_free(aio);
    return rv;
}

void it_raw_open(it_raw *r, const it_server *s)
{
    nng_tls_config *tls = NULL;
    nng_aio *aio = NULL;
    uint8_t hdr[8];
    int rv;

    memset(r, 0, sizeof *r);
    r->next_id = 1;
    assert_int_equal(nng_stream_dialer_alloc(&r->dialer, s->url), 0);
    assert_int_equal(nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT), 0);
    assert_int_equal(nng_tls_config_ca_file(tls, IT_CA), 0);
    assert_int_equal(nng_tls_config_server_name(tls, "localhost"), 0);
    assert_int_equal(nng_tls_config_auth_mode(tls, NNG_TLS_AUTH_MODE_REQUIRED), 0);
    assert_int_equal(nng_stream_dialer_set_ptr(r->dialer, NNG_OPT_TLS_CONFIG, tls), 0);
    nng_tls_config_free(tls); /* the dialer holds a reference */
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, IT_CALL_TIMEOUT_MS);
    nng_stream_dialer_dial(r->dialer, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        fail_msg("raw dial %s: %s", s->url, nng_strerror(rv));
    r->conn = nng_aio_get_output(aio, 0);
    nng_aio_free(aio);

    memcpy(hdr, sp_req0_header, sizeof hdr);
    if ((rv = stream_io(r->conn, true, hdr, sizeof hdr, IT_CALL_TIMEOUT_MS)) != 0
        || (rv = stream_io(r->conn, false, hdr, sizeof hdr, IT_CALL_TIMEOUT_MS)) != 0)
        fail_msg("raw SP header exchange with %s: %s", s->url, nng_strerror(rv));
    assert_memory_equal(hdr, sp_rep0_header, sizeof hdr);
}

void it_raw_close(it_raw *r)
{
    if (r->conn != NULL) {
        nng_stream_close(r->conn);
        nng_stream_free(r->conn);
        r->conn = NULL;
    }
    if (r->dialer != NULL) {
        nng_stream_dialer_free(r->dialer);
        r->dialer = NULL;
    }
}

int it_raw_send(it_raw *r, const void *msg, size_t len)
{
    size_t total = 12 + len;
    uint8_t *buf = malloc(total);
    uint64_t n = 4 + (uint64_t)len;
    uint32_t id = r->next_id++ | 0x80000000u;

    r->last_id = id;

    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        buf[8 + i] = (uint8_t)(id >> (24 - 8 * i));
    if (len > 0)
        memcpy(buf + 12, msg, len);
    int rv = stream_io(r->conn, true, buf, total, IT_CALL_TIMEOUT_MS);
    free(buf);
    return rv;
}

int it_raw_recv(it_raw *r, int timeout_ms, uint8_t **out, size_t *len)
{
    uint8_t hdr[8];
    uint64_t n = 0;
    int rv;

    if ((rv = stream_io(r->conn, false, hdr, sizeof hdr, timeout_ms)) != 0)
        return rv;
    for (int i = 0; i < 8; i++)
        n = n << 8 | hdr[i];
    assert_true(n >= 4 && n <= 16u * 1024 * 1024);
    uint8_t *buf = malloc((size_t)n);
    assert_non_null(buf);
    if ((rv = stream_io(r->conn, false, buf, (size_t)n, timeout_ms)) != 0) {
        free(buf);
        return rv;
    }
    uint32_t id = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    assert_int_equal(id, r->last_id); /* the backtrace: our request id, echoed */
    memmove(buf, buf + 4, (size_t)n - 4);
    *out = buf;
    *len = (size_t)n - 4;
    return 0;
}

int it_raw_call(it_raw *r, const void *msg, size_t len, int timeout_ms, uint8_t **out, size_t *olen)
{
    int rv = it_raw_send(r, msg, len);
    return rv != 0 ? rv : it_raw_recv(r, timeout_ms, out, olen);
}

Authd__V1__ReplyEnvelope *it_raw_rpc(
    it_raw *r, const char *method, uint64_t id, const void *body, size_t body_len)
{
    return it_raw_rpc_as(r, method, id, NULL, body, body_len);
}

Authd__V1__ReplyEnvelope *it_raw_rpc_as(it_raw *r, const char *method, uint64_t id,
    const char *authorization, const void *body, size_t body_len)
{
    Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
    uint8_t *reply = NULL;
    size_t rlen = 0;

    env.method = (char *)method;
    env.request_id = id;
    env.body.data = (uint8_t *)body;
    env.body.len = body_len;
    if (authorization != NULL)
        env.authorization = (char *)authorization;
    size_t n = authd__v1__request_envelope__get_packed_size(&env);
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    authd__v1__request_envelope__pack(&env, buf);
    int rv = it_raw_call(r, buf, n, IT_CALL_TIMEOUT_MS, &reply, &rlen);
    free(buf);
    if (rv != 0)
        fail_msg("raw call %s: no reply: %s", method, nng_strerror(rv));
    Authd__V1__ReplyEnvelope *rep = authd__v1__reply_envelope__unpack(NULL, rlen, reply);
    free(reply);
    assert_non_null(rep);
    return rep;
}

/* ---- tokens ------------------------------------------------------------ */

void it_b64url(const void *bin, size_t n, char *out, size_t cap)
{
    assert_true(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) <= cap);
    sodium_bin2base64(out, cap, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

size_t it_b64url_decode(const char *s, size_t slen, uint8_t *out, size_t cap)
{
    size_t len = 0;
    assert_int_equal(sodium_base642bin(out, cap, s, slen, NULL, &len, NULL,
                         sodium_base64_VARIANT_URLSAFE_NO_PADDING),
        0);
    return len;
}

void it_forge(const void *key, size_t key_len, const char *header_json, const char *claims_json,
    char *out, size_t cap)
{
    crypto_auth_hmacsha256_state st;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    size_t pos;

    assert_true(sodium_init() >= 0);
    it_b64url(header_json, strlen(header_json), out, cap);
    pos = strlen(out);
    assert_true(pos + 2 < cap);
    out[pos++] = '.';
    it_b64url(claims_json, strlen(claims_json), out + pos, cap - pos);
    pos += strlen(out + pos);
    crypto_auth_hmacsha256_init(&st, key, key_len);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)out, pos);
    crypto_auth_hmacsha256_final(&st, mac);
    assert_true(pos + 2 < cap);
    out[pos++] = '.';
    it_b64url(mac, sizeof mac, out + pos, cap - pos);
}

/* stat_fields reads /proc/PID/task/TID/stat: state and nice. */
static bool stat_fields(const char *path, char *state, long *nice)
{
    char *txt = it_read_file(path, NULL);
    if (txt == NULL)
        return false;
    char *p = strrchr(txt, ')');
    bool ok = false;
    if (p != NULL) {
        /* after ") ": state ppid pgrp session tty_nr tpgid flags minflt
         * cminflt majflt cmajflt utime stime cutime cstime priority nice */
        char st;
        long f[15];
        int n = sscanf(p + 2, "%c %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld", &st,
            &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9], &f[10], &f[11],
            &f[12], &f[13], &f[14]);
        if (n == 16) {
            *state = st;
            *nice = f[14];
            ok = true;
        }
    }
    free(txt);
    return ok;
}

/* hashing_now: a thread of authd with a higher nice than its main thread
 * (the hash workers run at +10) is running: an argon2 job is in progress. */
bool it_hashing_now(pid_t pid)
{
    char path[128];
    char st;
    long main_nice, nice;
    bool found = false;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!stat_fields(path, &st, &main_nice))
        return false;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char tpath[300];
        snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/stat", (int)pid, e->d_name);
        if (stat_fields(tpath, &st, &nice) && nice > main_nice && st == 'R')
            found = true;
    }
    closedir(d);
    return found;
}

/* ==== logging (issue 7, part "logging off the loops") ======================== */

#include <jansson.h>

/* it_launch_err_fd is it_launch with authd's stdout and stderr on err_fd
 * (a pipe the test holds and never reads, say) instead of the log file,
 * and env_extra added to its environment. */
void it_launch_err_fd(it_server *s, int err_fd, const char *const *env_extra)
{
    launch(s, NULL, env_extra, err_fd);
}

void it_raw_open_from(it_raw *r, const it_server *s, const char *local_ip)
{
    nng_tls_config *tls = NULL;
    nng_aio *aio = NULL;
    nng_sockaddr sa;
    uint8_t hdr[8];
    int rv;

    memset(r, 0, sizeof *r);
    memset(&sa, 0, sizeof sa);
    r->next_id = 1;
    sa.s_in.sa_family = NNG_AF_INET;
    assert_int_equal(inet_pton(AF_INET, local_ip, &sa.s_in.sa_addr), 1);
    sa.s_in.sa_port = 0;
    assert_int_equal(nng_stream_dialer_alloc(&r->dialer, s->url), 0);
    assert_int_equal(nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT), 0);
    assert_int_equal(nng_tls_config_ca_file(tls, IT_CA), 0);
    assert_int_equal(nng_tls_config_server_name(tls, "localhost"), 0);
    assert_int_equal(nng_tls_config_auth_mode(tls, NNG_TLS_AUTH_MODE_REQUIRED), 0);
    assert_int_equal(nng_stream_dialer_set_ptr(r->dialer, NNG_OPT_TLS_CONFIG, tls), 0);
    nng_tls_config_free(tls);
    if ((rv = nng_stream_dialer_set_addr(r->dialer, NNG_OPT_LOCADDR, &sa)) != 0)
        fail_msg("cannot bind the dialer to %s: %s", local_ip, nng_strerror(rv));
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, IT_CALL_TIMEOUT_MS);
    nng_stream_dialer_dial(r->dialer, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        fail_msg("raw dial %s from %s: %s", s->url, local_ip, nng_strerror(rv));
    r->conn = nng_aio_get_output(aio, 0);
    nng_aio_free(aio);

    memcpy(hdr, sp_req0_header, sizeof hdr);
    if ((rv = stream_io(r->conn, true, hdr, sizeof hdr, IT_CALL_TIMEOUT_MS)) != 0
        || (rv = stream_io(r->conn, false, hdr, sizeof hdr, IT_CALL_TIMEOUT_MS)) != 0)
        fail_msg("raw SP header exchange with %s: %s", s->url, nng_strerror(rv));
    assert_memory_equal(hdr, sp_rep0_header, sizeof hdr);
}

struct json_t *it_log_json(const it_server *s)
{
    size_t len = 0;
    char *log = it_read_file(s->log_path, &len);
    json_t *all = json_array();
    int n = 0;

    assert_non_null(log);
    assert_non_null(all);
    for (const char *line = log; *line != '\0'; n++) {
        const char *nl = strchr(line, '\n');
        if (nl == NULL)
            fail_msg("log line %d is not terminated: %s", n + 1, line);
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (!json_is_object(o))
            fail_msg("log line %d is not a JSON object (%s): %.*s", n + 1, jerr.text,
                (int)(nl - line), line);
        assert_int_equal(json_array_append_new(all, o), 0);
        line = nl + 1;
    }
    free(log);
    return all;
}

bool it_log_wait(const it_server *s, const char *needle, int deadline_ms)
{
    uint64_t end = it_mono_ms() + (uint64_t)deadline_ms;
    for (;;) {
        char *log = it_read_file(s->log_path, NULL);
        bool found = log != NULL && strstr(log, needle) != NULL;
        free(log);
        if (found)
            return true;
        if (it_mono_ms() >= end)
            return false;
        it_nap_ms(5);
    }
}

/* ---- another binary (tests/integration/it_abuse_net.c) ------------------ */

/* it_launch_bin is it_launch with bin instead of authd (the same flags),
 * and env_extra ("NAME=value", NULL-terminated; may be NULL) added to the
 * environment. For authd-faulty, the fault-injection build. */
void it_launch_bin(it_server *s, const char *bin, const char *const *env_extra)
{
    launch(s, bin, env_extra, -1);
}
