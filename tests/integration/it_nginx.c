/*
 * it_nginx.c — real nginx (Debian's package) in front of a small upstream,
 * with auth_request to authd's /forward-auth: the configuration of
 * examples/proxies/nginx.conf, run unprivileged on loopback from a temp
 * prefix. The upstream (python3's http.server) echoes every header it
 * receives, so the test sees exactly what an application would.
 *
 * Exits 77 (ctest SKIP) when nginx is not installed; CI installs it.
 */
#include "harness.h"
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NGINX_BIN   "/usr/sbin/nginx"
#define PYTHON3_BIN "/usr/bin/python3"
#define TOK_MAX     4096
#define PASSWORD    "nginx front door password"

/* The upstream: echoes the request's headers as its body, one per line. */
static const char echo_py[]
    = "import http.server, os, sys\n"
      "class H(http.server.BaseHTTPRequestHandler):\n"
      "    protocol_version = 'HTTP/1.1'\n"
      "    def do_GET(self):\n"
      "        body = ''.join('%s: %s\\n' % (k, v) for k, v in self.headers.items()).encode()\n"
      "        self.send_response(200)\n"
      "        self.send_header('Content-Type', 'text/plain')\n"
      "        self.send_header('Content-Length', str(len(body)))\n"
      "        self.end_headers()\n"
      "        self.wfile.write(body)\n"
      "    def log_message(self, *a):\n"
      "        pass\n"
      "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
      "with open(sys.argv[1] + '.tmp', 'w') as f:\n"
      "    f.write(str(s.server_address[1]))\n"
      "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
      "s.serve_forever()\n";

struct rig {
    it_server *s;
    char authd_http[256]; /* authd's side port URL */
    char dir[256]; /* nginx prefix + the echo server's files */
    pid_t echo_pid, nginx_pid;
    int app_port, nginx_port;
    char front[64]; /* http://127.0.0.1:PORT of nginx */
};

static char *read_whole(const char *path)
{
    char *t = it_read_file(path, NULL);
    if (t == NULL)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    return t;
}

static void write_whole(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* free_port asks the kernel for a free loopback port (nginx cannot listen
 * on port 0 and tell us which it got). */
static int free_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static pid_t spawn(const char *const *argv, const char *log)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* reap stops pid with sig and waits up to the deadline, then kills. */
static void reap(pid_t pid, int sig)
{
    int st;
    if (pid <= 0)
        return;
    kill(pid, sig);
    uint64_t end = it_mono_ms() + IT_STOP_DEADLINE_MS;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (it_mono_ms() >= end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return;
        }
        it_nap_ms(10);
    }
}

/* subst replaces every @NAME@ of text with its value (pairs,
 * NULL-terminated); returns a malloc'ed string. */
static char *subst(const char *text, const char *const *pairs)
{
    size_t cap = strlen(text) * 2 + 4096, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (const char *p = text; *p != '\0';) {
        bool done = false;
        for (size_t i = 0; pairs[i] != NULL && !done; i += 2) {
            size_t kl = strlen(pairs[i]);
            if (strncmp(p, pairs[i], kl) == 0) {
                size_t vl = strlen(pairs[i + 1]);
                assert_true(n + vl < cap);
                memcpy(out + n, pairs[i + 1], vl);
                n += vl;
                p += kl;
                done = true;
            }
        }
        if (!done) {
            assert_true(n + 1 < cap);
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

static void rig_start(struct rig *g)
{
    char path[512], port_file[512];

    memset(g, 0, sizeof *g);
    /* authd with its side port; nginx (on 127.0.0.1) is a trusted proxy */
    it_opts o = { 0 };
    g->s = it_new(&o);
    static char url_file[400];
    snprintf(url_file, sizeof url_file, "%s/http-url", g->s->dir);
    const char *extra[] = { "--http-listen", "http://127.0.0.1:0", "--http-url-file", url_file,
        "--http-trusted-proxies", "127.0.0.1", NULL };
    for (size_t i = 0; extra[i] != NULL; i++)
        g->s->opts.extra[i] = extra[i];
    it_launch(g->s);
    char *u = read_whole(url_file);
    u[strcspn(u, "\r\n")] = '\0';
    snprintf(g->authd_http, sizeof g->authd_http, "%s", u);
    free(u);

    /* the nginx prefix: readable by nginx's worker (nobody, when run as root) */
    snprintf(g->dir, sizeof g->dir, "/tmp/it-nginx-XXXXXX");
    assert_non_null(mkdtemp(g->dir));
    assert_int_equal(chmod(g->dir, 0755), 0);

    /* the upstream */
    snprintf(path, sizeof path, "%s/echo.py", g->dir);
    write_whole(path, echo_py);
    snprintf(port_file, sizeof port_file, "%s/echo.port", g->dir);
    char log[512];
    snprintf(log, sizeof log, "%s/echo.log", g->dir);
    const char *eargv[] = { PYTHON3_BIN, path, port_file, NULL };
    g->echo_pid = spawn(eargv, log);
    uint64_t end = it_mono_ms() + IT_START_DEADLINE_MS;
    char *pt = NULL;
    while ((pt = it_read_file(port_file, NULL)) == NULL && it_mono_ms() < end)
        it_nap_ms(20);
    if (pt == NULL)
        fail_msg("the echo upstream did not start (see %s)", log);
    g->app_port = atoi(pt);
    free(pt);

    /* nginx, with the example configuration */
    char *conf = read_whole(AUTHD_SOURCE_DIR "/examples/proxies/nginx.conf");
    char *sub = read_whole(AUTHD_SOURCE_DIR "/examples/proxies/authd_subrequest.conf");
    char *ident = read_whole(AUTHD_SOURCE_DIR "/examples/proxies/authd_identity.conf");
    snprintf(path, sizeof path, "%s/authd_subrequest.conf", g->dir);
    write_whole(path, sub);
    snprintf(path, sizeof path, "%s/authd_identity.conf", g->dir);
    write_whole(path, ident);
    free(sub);
    free(ident);
    char listen[64], authd[64], app[64];
    g->nginx_port = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", g->nginx_port);
    snprintf(authd, sizeof authd, "%s", g->authd_http + strlen("http://"));
    snprintf(app, sizeof app, "127.0.0.1:%d", g->app_port);
    const char *pairs[]
        = { "@PREFIX@", g->dir, "@LISTEN@", listen, "@AUTHD@", authd, "@APP@", app, NULL };
    char *text = subst(conf, pairs);
    free(conf);
    snprintf(path, sizeof path, "%s/nginx.conf", g->dir);
    if (geteuid() == 0) { /* the master stays root; the worker must not */
        char *t2 = malloc(strlen(text) + 64);
        assert_non_null(t2);
        sprintf(t2, "user nobody nogroup;\n%s", text);
        free(text);
        text = t2;
    }
    write_whole(path, text);
    free(text);
    char elog[512];
    snprintf(elog, sizeof elog, "%s/error.log", g->dir);
    snprintf(log, sizeof log, "%s/nginx.out", g->dir);
    const char *nargv[]
        = { NGINX_BIN, "-p", g->dir, "-e", elog, "-c", path, "-g", "daemon off;", NULL };
    g->nginx_pid = spawn(nargv, log);
    snprintf(g->front, sizeof g->front, "http://127.0.0.1:%d", g->nginx_port);

    /* ready once it answers (401: no token) */
    end = it_mono_ms() + IT_START_DEADLINE_MS;
    for (;;) {
        it_http_resp r;
        it_http_get(g->front, "/", NULL, NULL, NULL, &r);
        int st = r.status;
        it_http_free(&r);
        if (st == 401)
            break;
        int ws;
        if (waitpid(g->nginx_pid, &ws, WNOHANG) == g->nginx_pid) {
            g->nginx_pid = 0;
            char *out = it_read_file(log, NULL);
            fail_msg("nginx exited:\n%s", out != NULL ? out : "");
        }
        if (it_mono_ms() >= end)
            fail_msg("nginx did not answer 401 in time (last status %d)", st);
        it_nap_ms(20);
    }
}

static void rig_stop(struct rig *g)
{
    reap(g->nginx_pid, SIGQUIT);
    reap(g->echo_pid, SIGTERM);
    if (getenv("IT_KEEP") == NULL) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "[ it_nginx ] could not remove %s\n", g->dir);
    }
    it_finish(g->s);
}

/* front_get asks nginx for path, with "Authorization: Bearer tok" (tok
 * NULL: none) and the extra header lines (NULL-terminated, may be NULL). */
static void front_get(const struct rig *g, const char *path, const char *tok,
    const char *const *more, it_http_resp *r)
{
    static char auth[TOK_MAX + 64];
    const char *hdrs[16];
    size_t k = 0;
    if (tok != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
        hdrs[k++] = auth;
    }
    for (size_t i = 0; more != NULL && more[i] != NULL && k < 15; i++)
        hdrs[k++] = more[i];
    hdrs[k] = NULL;
    it_http_get(g->front, path, hdrs, NULL, NULL, r);
}

/* expect_refused: nginx answers status, from authd's decision; the
 * upstream was not reached (no echoed headers); 401 carries authd's
 * Bearer challenge. */
static void expect_refused(it_http_resp *r, int status, const char *challenge_part)
{
    char v[256];
    if (r->status != status)
        fail_msg("want %d, got %d:\n%s", status, r->status, r->raw);
    assert_null(strstr(r->body, "X-Auth-User-Id"));
    if (challenge_part != NULL) {
        assert_true(it_http_header(r, "WWW-Authenticate", v, sizeof v));
        assert_true(strncmp(v, "Bearer", 6) == 0);
        if (strstr(v, challenge_part) == NULL)
            fail_msg("challenge \"%s\" lacks %s", v, challenge_part);
    }
    it_http_free(r);
}

/* forge_expired signs an HS256 at+jwt with the server's key whose exp is
 * long past (beyond the clock leeway). */
static void forge_expired(const it_server *s, const char *uid, const char *sid, char *out)
{
    char hdr[256], cl[1024];
    int64_t now = it_now();
    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", s->kid);
    snprintf(cl, sizeof cl,
        "{\"iss\":\"authd\",\"aud\":\"authd\",\"sub\":\"%s\",\"sid\":\"%s\",\"jti\":\"%s\","
        "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}",
        uid, sid, sid, (long long)(now - 2000), (long long)(now - 2000), (long long)(now - 1000));
    it_forge(s->key, s->key_len, hdr, cl, out, TOK_MAX);
}

/*
 * The whole front door: a valid token reaches the upstream with authd's
 * identity headers, and a client's own identity headers (any case, "_"
 * spelling) never do; missing, malformed, expired and revoked tokens get
 * 401 with authd's challenge; a user without "admin" gets 403 on
 * /admin/, one with it gets through.
 */
static void nginx_front_door(void **state)
{
    struct rig g;
    it_http_resp r;
    authd_status st;
    Authd__V1__LoginResponse *lr = NULL;
    char tok[TOK_MAX], expired[TOK_MAX], want[256];

    rig_start(&g);
    authd_client *c = it_client(g.s);
    it_register(c, "nx-user", "nx-user@example.com", PASSWORD, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, "nx-user", PASSWORD, tok, sizeof tok, &lr);
    char uid[64], sid[64];
    snprintf(uid, sizeof uid, "%s", lr->user->id);
    snprintf(sid, sizeof sid, "%s", lr->session_id);
    authd__v1__login_response__free_unpacked(lr, NULL);

    /* valid: the upstream sees authd's identity and nothing forged */
    static const char *const forged[] = { "X-Auth-User-Id: forged-id-1",
        "x-auth-username: forged-name-2", "X_Auth_User_Id: forged-id-3",
        "X-Auth-Roles: admin,forged-4", "X-Forwarded-For: 192.0.2.66", NULL };
    front_get(&g, "/orders/7", tok, forged, &r);
    if (r.status != 200)
        fail_msg("valid token: %d\n%s", r.status, r.raw);
    snprintf(want, sizeof want, "X-Auth-User-Id: %s\n", uid);
    if (strstr(r.body, want) == NULL)
        fail_msg("upstream lacks \"%s\":\n%s", want, r.body);
    assert_non_null(strstr(r.body, "X-Auth-Username: nx-user\n"));
    assert_null(strstr(r.body, "forged"));
    assert_null(strstr(r.body, "X-Auth-Roles")); /* holds none: not sent at all */
    assert_null(strstr(r.body, "X_Auth"));
    it_http_free(&r);

    /* missing, malformed */
    front_get(&g, "/", NULL, NULL, &r);
    expect_refused(&r, 401, "realm=\"authd\"");
    front_get(&g, "/shop?q=1", "not.a.token", forged, &r);
    expect_refused(&r, 401, "error=\"invalid_token\"");
    /* authd's line for it: nginx's X-Forwarded-* (a trusted proxy), not
     * the client's forged X-Forwarded-For */
    assert_true(
        it_log_wait(g.s, "\"peer\":\"127.0.0.1\",\"forwarded\":\"GET http://localhost/shop?q=1\"",
            IT_CALL_TIMEOUT_MS));
    char *log = it_read_file(g.s->log_path, NULL);
    assert_non_null(log);
    assert_null(strstr(log, "192.0.2.66"));
    free(log);

    /* expired (signed with the server's key, exp long past) */
    forge_expired(g.s, uid, sid, expired);
    front_get(&g, "/", expired, NULL, &r);
    expect_refused(&r, 401, "error_description=\"EXPIRED\"");

    /* under-privileged, then privileged */
    front_get(&g, "/admin/users", tok, NULL, &r);
    expect_refused(&r, 403, NULL);
    const char *roles_argv[] = { AUTHD_BIN, "user", "roles", "nx-user", "--set", "admin,ops",
        "--data-dir", g.s->data_dir, NULL };
    it_proc p;
    it_run(roles_argv, NULL, NULL, &p);
    assert_int_equal(p.status, 0);
    it_proc_free(&p);
    front_get(&g, "/admin/users", tok, forged, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "X-Auth-Roles: admin,ops\n"));
    assert_null(strstr(r.body, "forged"));
    it_http_free(&r);

    /* revoked: Logout, then 401 at once */
    it_logout(c, tok, &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    front_get(&g, "/", tok, NULL, &r);
    expect_refused(&r, 401, "error_description=\"REVOKED\"");

    authd_client_close(c);
    rig_stop(&g);
    (void)state;
}

int main(void)
{
    if (access(NGINX_BIN, X_OK) != 0 || access(PYTHON3_BIN, X_OK) != 0) {
        fprintf(stderr, "it_nginx: SKIP: %s or %s is not installed\n", NGINX_BIN, PYTHON3_BIN);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(nginx_front_door, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.nginx", tests, NULL, NULL);
}
