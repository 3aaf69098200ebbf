/*
 * example_service.c — authd-example: a small HTTP service whose protected
 * routes are guarded by authd. The pattern to copy when a service of yours
 * must ask authd "who is this, and may they do this?" on every request.
 *
 *   GET /public   no authentication: 200
 *   GET /me       any valid access token: 200 and the caller as authd says
 *   GET /admin    a valid token of a user with the role "admin": 200, else 403
 *
 * The token comes in "Authorization: Bearer <token>". The answers follow
 * RFC 6750: 401 with WWW-Authenticate when there is no usable token or
 * authd refuses it, 403 (insufficient_scope) when a role is missing, and
 * 503 with Retry-After when authd cannot be asked. A route never answers
 * 200 unless authd said yes to this request (the guard's cache is off
 * unless --cache-ttl-ms is given, and then only positive answers are kept).
 *
 * Shape, and why:
 *   - HTTP is libmicrohttpd's (a packaged, maintained parser: never write
 *     your own). It runs its own threads (a pool of --threads, each with
 *     its own epoll); a handler blocks its thread while the guard asks
 *     authd, so size the pool for the requests you want in flight at once.
 *   - ONE authd_client and ONE authd_guard for the whole process, made at
 *     start-up and shared by every handler thread. Both are documented as
 *     thread-safe: the client pipelines every thread's calls over its one
 *     TLS connection and redials on its own (backing off 100 ms to 2 s) when
 *     authd goes away; a call made while it is reconnecting waits for the
 *     connection up to --timeout-ms, then fails (the route answers 503).
 *     A waiting call does not hasten the next redial, so keep --timeout-ms
 *     above the 2 s longest back-off (default 3000): then the first request
 *     after authd is back is answered normally, never a 503.
 *     Never open a client per request: each open is a TCP + TLS handshake.
 *   - Signals: SIGINT and SIGTERM are blocked in every thread (the mask is
 *     set before any thread starts, and threads inherit it) and taken by
 *     the main thread with sigwait, so shutdown runs in plain code, not in
 *     a signal handler: stop HTTP first (MHD_stop_daemon waits for the
 *     handlers running), then free the guard, then close the client.
 *
 *   authd-example --authd-url tls+tcp://127.0.0.1:4433 --ca ca.crt
 *                 [--listen 127.0.0.1:8080] [--cert F --key F] [--server-name N]
 *                 [--timeout-ms 3000] [--cache-ttl-ms 0] [--threads 4]
 *                 [--url-file PATH]
 *
 * Exit status: 0 after a clean shutdown, 1 when start-up fails (authd not
 * reachable, bad TLS files, port taken), 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "authd/client.h"
#include "authd/guard.h"

#define BODY_MAX 2048 /* the longest answer this service writes */

static enum MHD_Result answer_public(struct MHD_Connection *conn, const authd_guard_result *g);
static enum MHD_Result answer_me(struct MHD_Connection *conn, const authd_guard_result *g);
static enum MHD_Result answer_admin(struct MHD_Connection *conn, const authd_guard_result *g);

/* The routes: one row each, with what it needs. Adding a route touches one
 * row and one answer function; the guarding is the same for every row. */
struct route {
    const char *path;
    int protect; /* 0: public, no token looked at; 1: a valid token needed */
    const char *const *roles; /* and every one of these roles (may be none) */
    size_t n_roles;
    enum MHD_Result (*answer)(struct MHD_Connection *conn, const authd_guard_result *g);
};

static const char *const admin_roles[] = { "admin" };
static const struct route routes[] = {
    { "/public", 0, NULL, 0, answer_public },
    { "/me", 1, NULL, 0, answer_me },
    { "/admin", 1, admin_roles, 1, answer_admin },
};

/* The one guard of the process, over the one client (both made in main
 * before the HTTP threads start, freed after they stopped). */
static authd_guard *guard;

/* json_str appends s to out (capacity cap, NUL-terminated) as a JSON
 * string. authd validates usernames and roles, but a service must not
 * rely on another service's rules to keep its own output well-formed. */
static void json_str(char *out, size_t cap, const char *s)
{
    size_t n = strlen(out);

    if (n + 1 >= cap)
        return;
    out[n++] = '"';
    for (; *s != '\0' && n + 8 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    if (n + 1 < cap)
        out[n++] = '"';
    out[n] = '\0';
}

/* reply queues one answer with body (copied), its content type and,
 * when not NULL, one extra header. Returns MHD's result. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *type,
    const char *body, const char *hname, const char *hvalue)
{
    struct MHD_Response *r
        = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (r == NULL)
        return MHD_NO; /* out of memory: MHD closes the connection */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (hname != NULL)
        MHD_add_response_header(r, hname, hvalue);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r); /* MHD keeps its own reference until sent */
    return ret;
}

/* refuse answers a request the guard did not let through: 401 and 403
 * carry the guard's WWW-Authenticate value, 503 a Retry-After, anything
 * else (500: a bad route definition) a bare status. The body says only
 * what the header says: authd's reasons are for logs, not for callers. */
static enum MHD_Result refuse(struct MHD_Connection *conn, const authd_guard_result *g)
{
    switch (g->http_status) {
    case 401:
        return reply(conn, MHD_HTTP_UNAUTHORIZED, "text/plain", "unauthorized\n",
            MHD_HTTP_HEADER_WWW_AUTHENTICATE, g->www_authenticate);
    case 403:
        return reply(conn, MHD_HTTP_FORBIDDEN, "text/plain", "forbidden\n",
            MHD_HTTP_HEADER_WWW_AUTHENTICATE, g->www_authenticate);
    case 503:
        /* authd unreachable or overloaded: never guess, never let through. */
        fprintf(stderr, "authd-example: authd unavailable: %s %s\n", g->status.reason,
            g->status.message);
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", "unavailable\n",
            MHD_HTTP_HEADER_RETRY_AFTER, "1");
    default:
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "error\n", NULL, NULL);
    }
}

/* handle is libmicrohttpd's access handler: it runs on one of MHD's
 * threads for each request. GET and HEAD only; the routes take no body,
 * so the answer is queued on the first call (MHD then discards a body a
 * client sent anyway and closes that connection). */
static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data, size_t *upload_size,
    void **con_cls)
{
    const struct route *rt = NULL;
    authd_guard_result g;

    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)con_cls;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(url, routes[i].path) == 0)
            rt = &routes[i];
    if (rt == NULL)
        return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n", NULL, NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n",
            MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (!rt->protect)
        return rt->answer(conn, NULL);

    /* The guard checks the header's form, asks authd's Verify (with the
     * roles the route needs) and says what to answer. The header may be
     * absent (NULL): that is a 401 without an error attribute. */
    const char *authz
        = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (authd_guard_check(guard, authz, rt->roles, rt->n_roles, &g) != 200)
        return refuse(conn, &g);
    return rt->answer(conn, &g);
}

/* ---- the routes' answers: g is the caller as authd said (NULL on a public
 * route). Identity comes only from there, never from the request. -------- */

static enum MHD_Result answer_public(struct MHD_Connection *conn, const authd_guard_result *g)
{
    (void)g;
    return reply(conn, MHD_HTTP_OK, "text/plain", "hello, anyone\n", NULL, NULL);
}

/* answer_me: the caller's id, username and roles, as JSON. */
static enum MHD_Result answer_me(struct MHD_Connection *conn, const authd_guard_result *g)
{
    char body[BODY_MAX];

    snprintf(body, sizeof body, "{\"user_id\":");
    json_str(body, sizeof body, g->user_id);
    strncat(body, ",\"username\":", sizeof body - strlen(body) - 1);
    json_str(body, sizeof body, g->username);
    strncat(body, ",\"roles\":[", sizeof body - strlen(body) - 1);
    for (size_t i = 0; i < g->n_roles; i++) {
        if (i > 0)
            strncat(body, ",", sizeof body - strlen(body) - 1);
        json_str(body, sizeof body, g->roles[i]);
    }
    strncat(body, "]}\n", sizeof body - strlen(body) - 1);
    return reply(conn, MHD_HTTP_OK, "application/json", body, NULL, NULL);
}

static enum MHD_Result answer_admin(struct MHD_Connection *conn, const authd_guard_result *g)
{
    char body[BODY_MAX];

    snprintf(body, sizeof body, "hello, admin %s\n", g->username);
    return reply(conn, MHD_HTTP_OK, "text/plain", body, NULL, NULL);
}

/* parse_listen reads "A.B.C.D:PORT" (port 0: any free one) into *sa. */
static int parse_listen(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    char *end;
    unsigned long port;

    if (colon == NULL || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port > 65535)
        return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* write_url_file writes "http://ADDR:PORT\n" to path through a temporary
 * file and a rename, so a reader never sees half of it (tests wait for
 * it: it appears once the service is listening). */
static int write_url_file(const char *path, const struct sockaddr_in *sa, unsigned port)
{
    char tmp[4096], addr[INET_ADDRSTRLEN];
    FILE *f;

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp
        || inet_ntop(AF_INET, &sa->sin_addr, addr, sizeof addr) == NULL)
        return -1;
    f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "http://%s:%u\n", addr, port);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: authd-example --authd-url URL --ca FILE [--listen ADDR:PORT]\n"
        "                     [--cert FILE --key FILE] [--server-name NAME]\n"
        "                     [--timeout-ms MS] [--cache-ttl-ms MS] [--threads N]\n"
        "                     [--url-file PATH]\n"
        "  --authd-url     authd's URL, tls+tcp://HOST:PORT\n"
        "  --ca            the CA authd's certificate must chain to\n"
        "  --cert, --key   a client certificate, if authd requires mTLS\n"
        "  --server-name   the name authd's certificate must match\n"
        "  --listen        the HTTP address (default 127.0.0.1:8080; port 0: any)\n"
        "  --timeout-ms    deadline of each check with authd (default 3000)\n"
        "  --cache-ttl-ms  keep positive answers this long (default 0: ask every time)\n"
        "  --threads       HTTP handler threads (default 4)\n"
        "  --url-file      write http://ADDR:PORT here once listening\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "authd-url", required_argument, NULL, 'u' },
        { "ca", required_argument, NULL, 'c' },
        { "cert", required_argument, NULL, 'C' },
        { "key", required_argument, NULL, 'K' },
        { "server-name", required_argument, NULL, 'n' },
        { "listen", required_argument, NULL, 'l' },
        { "timeout-ms", required_argument, NULL, 't' },
        { "cache-ttl-ms", required_argument, NULL, 'T' },
        { "threads", required_argument, NULL, 'j' },
        { "url-file", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    authd_client_options co = { .timeout_ms = 3000 };
    authd_guard_options go = { 0 };
    const char *listen_at = "127.0.0.1:8080", *url_file = NULL;
    unsigned threads = 4;
    struct sockaddr_in sa;
    authd_client *client = NULL;
    struct MHD_Daemon *d = NULL;
    authd_status st;
    sigset_t stop;
    int opt, sig, rc = 1;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u':
            co.url = optarg;
            break;
        case 'c':
            co.ca_file = optarg;
            break;
        case 'C':
            co.cert_file = optarg;
            break;
        case 'K':
            co.key_file = optarg;
            break;
        case 'n':
            co.server_name = optarg;
            break;
        case 'l':
            listen_at = optarg;
            break;
        case 't':
            co.timeout_ms = atoi(optarg);
            break;
        case 'T':
            go.cache_ttl_ms = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'j':
            threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'f':
            url_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || co.url == NULL || co.ca_file == NULL || co.timeout_ms <= 0 || threads < 1
        || threads > 256 || parse_listen(listen_at, &sa) != 0) {
        usage(stderr);
        return 2;
    }

    /* Block the stop signals before any thread exists (the client's I/O
     * thread, MHD's pool): every thread inherits the mask, so only the
     * sigwait below ever takes them. Writes to a closed peer must not kill
     * the process either (both libraries use MSG_NOSIGNAL; this is belt and
     * braces for anything else). */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The one client: open dials authd now, so a wrong URL, CA or an authd
     * that is down fails start-up with a clear message. */
    if (authd_client_open(&co, &client, &st) != AUTHD_OK) {
        fprintf(stderr, "authd-example: cannot reach authd at %s: %s (%s)\n", co.url, st.message,
            st.reason);
        goto out;
    }
    if (authd_guard_new(client, &go, &guard) != AUTHD_OK) {
        fprintf(stderr, "authd-example: bad guard options (--cache-ttl-ms at most %d)\n",
            AUTHD_GUARD_TTL_MAX);
        goto out;
    }

    /* HTTP: a pool of threads, each with its own epoll; bounded connections
     * and an idle timeout so slow clients cannot hold every thread, and a
     * cap per client address, without which one address sending half a
     * request on each of 1024 connections (slowloris: each byte restarts
     * the idle timeout) holds every slot and the service is down for
     * everyone else. Behind a reverse proxy every request comes from the
     * proxy's address: there, raise the cap to the connection limit and
     * let the proxy cap its clients. */
    d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_PER_IP_CONNECTION_LIMIT, 64u,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "authd-example: cannot listen on %s\n", listen_at);
        goto out;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = di != NULL ? di->port : 0;
    if (url_file != NULL && write_url_file(url_file, &sa, port) != 0) {
        fprintf(stderr, "authd-example: cannot write %s: %s\n", url_file, strerror(errno));
        goto out;
    }
    fprintf(stderr, "authd-example: listening on port %u, authd at %s\n", port, co.url);

    while (sigwait(&stop, &sig) != 0) { }
    fprintf(stderr, "authd-example: signal %d, stopping\n", sig);
    rc = 0;

out:
    /* Reverse order of creation: no handler runs once MHD has stopped, so
     * the guard and the client can go. */
    if (d != NULL)
        MHD_stop_daemon(d);
    authd_guard_free(guard);
    authd_client_close(client);
    return rc;
}
