/*
 * http.c — the side port (http.h) on libmicrohttpd: the listener, the
 * route table and the endpoints.
 *
 * libmicrohttpd parses HTTP/1.1 and runs its own epoll threads; we bind
 * the socket ourselves (so port 0 and the loopback rule are decided here)
 * and hand it over. Every route is one row of routes[]: a path and a
 * function that answers. Endpoints that need the service (forward-auth)
 * build an authd_request and call authd_dispatch, the same entry the main
 * port uses; Verify completes synchronously on the calling thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "health.h"
#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "sysutil.h"

#define HTTP_URL_MAX         300
#define HTTP_PEM_MAX         (1024 * 1024)
#define HTTP_DEFAULT_CONNS   1024
#define HTTP_DEFAULT_TIMEOUT 30
#define HTTP_CONN_MEMORY     (32 * 1024) /* per connection: bounds request headers */
#define HTTP_DEFAULT_PER_SRC 64
#define HTTP_LOG_NS          (1000u * 1000000u) /* libmicrohttpd's lines: at most one a second */
/* GnuTLS priorities of an https:// side port: what the main port allows
 * (server.c: TLS 1.2 and 1.3, ECDHE, AEAD suites only). libmicrohttpd's
 * default ("NORMAL") also took TLS 1.0/1.1 and CBC-SHA1 suites. */
#define HTTP_TLS_PRIORITIES                                                                        \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"            \
    "+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA"

struct authd_http {
    struct MHD_Daemon *d;
    authd_service *svc;
    char url[HTTP_URL_MAX];
    char *cert_pem; /* https: what MHD was given (it keeps pointers) */
    char *key_pem;
};

/* One request as a route sees it. */
struct http_req {
    authd_http *h;
    struct MHD_Connection *conn;
    const char *path;
    bool head; /* HEAD: headers only */
};

typedef enum MHD_Result (*http_route_fn)(const struct http_req *r);

static enum MHD_Result route_healthz(const struct http_req *r);
static enum MHD_Result route_readyz(const struct http_req *r);
static enum MHD_Result route_metrics(const struct http_req *r);

/* The route table: one row per path (exact match). */
static const struct http_route {
    const char *path;
    http_route_fn fn;
} routes[] = {
    { "/healthz", route_healthz },
    { "/readyz", route_readyz },
    { "/metrics", route_metrics },
};

/* ---- answering ---------------------------------------------------------- */

/* respond queues status with body (copied) and the headers every answer of
 * the side port carries: nothing here may be cached by a proxy. hdrs is a
 * NULL-terminated list of name, value pairs, or NULL. */
static enum MHD_Result respond(const struct http_req *r, unsigned status, const char *ctype,
    const char *body, size_t len, const char *const *hdrs)
{
    struct MHD_Response *rsp
        = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok;

    if (rsp == NULL)
        return MHD_NO; /* closes the connection */
    (void)MHD_add_response_header(rsp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (ctype != NULL)
        (void)MHD_add_response_header(rsp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i += 2)
        (void)MHD_add_response_header(rsp, hdrs[i], hdrs[i + 1]);
    ok = MHD_queue_response(r->conn, status, rsp);
    MHD_destroy_response(rsp);
    return ok;
}

static enum MHD_Result respond_text(const struct http_req *r, unsigned status, const char *text)
{
    return respond(r, status, "text/plain; charset=utf-8", text, strlen(text), NULL);
}

/* ---- /healthz, /readyz ----------------------------------------------------- */

/* route_healthz: the process is alive and its side port answers; nothing
 * else is checked (an orchestrator restarts on failure, so a dependency's
 * trouble must not fail it). Stays 200 while draining, until exit. */
static enum MHD_Result route_healthz(const struct http_req *r)
{
    return respond(r, MHD_HTTP_OK, "application/json", "{\"status\":\"alive\"}\n",
        strlen("{\"status\":\"alive\"}\n"), NULL);
}

/* route_readyz: health.h's checks; 200 when SERVING, else 503 naming the
 * failing checks, so a load balancer stops sending before the drain. */
static enum MHD_Result route_readyz(const struct http_req *r)
{
    const char *failing[AUTHD_HEALTH_CHECKS_MAX];
    size_t n = 0, off = 0;
    char body[256];
    authd_health_status st = authd_health_get(failing, AUTHD_HEALTH_CHECKS_MAX, &n);

    off += (size_t)snprintf(body + off, sizeof body - off, "{\"status\":\"%s\",\"failing\":[",
        authd_health_status_name(st));
    for (size_t i = 0; i < n && off < sizeof body; i++)
        off += (size_t)snprintf(
            body + off, sizeof body - off, "%s\"%s\"", i > 0 ? "," : "", failing[i]);
    if (off < sizeof body)
        off += (size_t)snprintf(body + off, sizeof body - off, "]}\n");
    if (off >= sizeof body)
        off = sizeof body - 1;
    return respond(r, st == AUTHD_HEALTH_SERVING ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
        "application/json", body, off, NULL);
}

/* ---- /metrics ------------------------------------------------------------------ */

/* route_metrics: every metric in the Prometheus text format 0.0.4
 * (authd_service_metrics: the per-thread counters summed, the store, pool
 * and log gauges read now); 503 when out of memory. */
static enum MHD_Result route_metrics(const struct http_req *r)
{
    char *text = NULL;
    size_t len = 0;

    if (authd_service_metrics(r->h->svc, &text, &len) != AUTHD_OK)
        return respond_text(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    enum MHD_Result ok
        = respond(r, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
    free(text);
    return ok;
}

/* ---- dispatch ---------------------------------------------------------------- */

/* on_request is libmicrohttpd's access handler: GET and HEAD only (no
 * route takes a body), exact path match against routes[]. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data, size_t *upload_data_size,
    void **con_cls)
{
    struct http_req r = { .h = cls, .conn = conn, .path = url };

    (void)version;
    (void)upload_data;
    (void)con_cls;
    if (*upload_data_size != 0)
        return MHD_NO; /* a body on GET: no route reads one */
    r.head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!r.head && strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        static const char *const allow[] = { MHD_HTTP_HEADER_ALLOW, "GET, HEAD", NULL };
        return respond(&r, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
            "method not allowed\n", strlen("method not allowed\n"), allow);
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(routes[i].path, url) == 0)
            return routes[i].fn(&r);
    return respond_text(&r, MHD_HTTP_NOT_FOUND, "not found\n");
}

/*
 * on_mhd_log sends libmicrohttpd's own messages to authd's log, at most
 * one a second with the count held back since the previous one: it writes
 * a line for every malformed request, every connection closed half-way and
 * every connection refused at a cap, so an unauthenticated peer would
 * otherwise choose how fast authd's log (and its disk) fills, and crowd
 * out the audit lines in the log ring. Called on MHD's threads.
 */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    static authd_lograte lr = AUTHD_LOGRATE_INIT;
    uint64_t held = 0;
    authd_logrec rec;
    char msg[256];
    int n;

    (void)cls;
    if (!authd_lograte_allow(&lr, HTTP_LOG_NS, authd_monotonic_ns(), &held))
        return;
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n > 0 && msg[strlen(msg) - 1] == '\n')
        msg[strlen(msg) - 1] = '\0';
    if (authd_log_begin(&rec, AUTHD_LOG_WARN, "http_error")) {
        authd_log_str(&rec, "msg", n >= 0 ? msg : "?");
        authd_log_u64(&rec, "suppressed", held);
        authd_log_end(&rec);
    }
}

/* ---- start and stop ------------------------------------------------------ */

/* read_pem reads a PEM file whole (libmicrohttpd takes PEM in memory),
 * naming the file and the cause on failure. */
static char *read_pem(const char *path, const char *flag, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t n = 0;

    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", flag, path, strerror(errno));
        return NULL;
    }
    if ((buf = malloc(HTTP_PEM_MAX + 1)) != NULL) {
        n = fread(buf, 1, HTTP_PEM_MAX + 1, f);
        if (ferror(f) || n > HTTP_PEM_MAX || n == 0) {
            snprintf(err, errlen, "%s %s: %s", flag, path,
                ferror(f)    ? strerror(errno)
                    : n == 0 ? "empty file"
                             : "larger than 1 MiB");
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    } else {
        snprintf(err, errlen, "out of memory");
    }
    fclose(f);
    return buf;
}

/* wipe_free zeroes and frees a private key's PEM. */
static void wipe_free(char *s)
{
    if (s != NULL) {
        volatile char *p = s;
        while (*p != '\0')
            *p++ = '\0';
        free(s);
    }
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

/*
 * bind_url parses http[s]://HOST:PORT (IPv6 in brackets), binds and
 * listens; refuses plaintext on a non-loopback address unless allowed.
 * Returns the socket, or -1 with err set.
 */
static int bind_url(
    const authd_http_options *o, bool *tls, char *url_out, size_t url_cap, char *err, size_t errlen)
{
    const char *u = o->url, *hp;
    char host[256], port[16];
    struct addrinfo hints = { 0 }, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = -1, one = 1, rc;

    if (strncmp(u, "http://", 7) == 0) {
        *tls = false;
        hp = u + 7;
    } else if (strncmp(u, "https://", 8) == 0) {
        *tls = true;
        hp = u + 8;
    } else {
        snprintf(
            err, errlen, "--http-listen %s: expected http://HOST:PORT or https://HOST:PORT", u);
        return -1;
    }
    const char *colon = NULL, *hend;
    if (hp[0] == '[') {
        hend = strchr(hp, ']');
        if (hend == NULL || hend[1] != ':') {
            snprintf(err, errlen, "--http-listen %s: bad [IPv6]:PORT", u);
            return -1;
        }
        colon = hend + 1;
        hp++;
    } else {
        colon = strrchr(hp, ':');
        hend = colon;
    }
    if (colon == NULL || hend == hp || (size_t)(hend - hp) >= sizeof host || strlen(colon + 1) == 0
        || strlen(colon + 1) >= sizeof port
        || strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
        snprintf(err, errlen, "--http-listen %s: expected HOST:PORT after the scheme (no path)", u);
        return -1;
    }
    memcpy(host, hp, (size_t)(hend - hp));
    host[hend - hp] = '\0';
    snprintf(port, sizeof port, "%s", colon + 1);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "--http-listen %s: %s", u, gai_strerror(rc));
        return -1;
    }
    if (!*tls && !o->allow_plaintext && !is_loopback(ai->ai_addr)) {
        snprintf(err, errlen,
            "--http-listen %s: plaintext HTTP is allowed only on a loopback address (identity "
            "headers and tokens would cross the network in the clear); use https:// or pass "
            "--http-allow-plaintext",
            u);
        goto fail;
    }
    if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0)) < 0
        || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0
        || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0
        || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(err, errlen, "--http-listen %s: %s", u, strerror(errno));
        goto fail;
    }
    unsigned bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                              : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(url_out, url_cap, "%s://%s%s%s:%u", *tls ? "https" : "http",
        ai->ai_family == AF_INET6 ? "[" : "", host, ai->ai_family == AF_INET6 ? "]" : "", bound);
    freeaddrinfo(ai);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return -1;
}

authd_code authd_http_start(
    const authd_http_options *o, authd_service *svc, authd_http **out, char *err, size_t errlen)
{
    authd_http *h = NULL;
    bool tls = false;
    int fd = -1;

    if ((h = calloc(1, sizeof *h)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    h->svc = svc;
    if ((fd = bind_url(o, &tls, h->url, sizeof h->url, err, errlen)) < 0)
        goto fail;
    if (tls) {
        if (o->tls_cert == NULL || o->tls_key == NULL) {
            snprintf(err, errlen, "--http-listen %s: https needs a certificate and key", o->url);
            goto fail;
        }
        if ((h->cert_pem = read_pem(o->tls_cert, "certificate", err, errlen)) == NULL
            || (h->key_pem = read_pem(o->tls_key, "private key", err, errlen)) == NULL)
            goto fail;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (tls)
        flags |= MHD_USE_TLS;
    unsigned threads = o->threads > 0 ? o->threads : 1;
    /* The logger first: MHD warns (through its own logger, to stderr)
     * about any option that comes before it. */
    struct MHD_OptionItem opts[] = {
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL },
        { MHD_OPTION_LISTEN_SOCKET, fd, NULL },
        { MHD_OPTION_CONNECTION_LIMIT,
            (intptr_t)(o->max_connections > 0 ? o->max_connections : HTTP_DEFAULT_CONNS), NULL },
        /* One source must not hold every slot: the probes and the scraper
         * of /healthz, /readyz and /metrics come from other addresses. */
        { MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            (intptr_t)(o->max_conns_per_source > 0 ? o->max_conns_per_source
                                                   : HTTP_DEFAULT_PER_SRC),
            NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT,
            (intptr_t)(o->timeout_s > 0 ? o->timeout_s : HTTP_DEFAULT_TIMEOUT), NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_CONN_MEMORY, NULL },
        { threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL },
        { tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, h->cert_pem },
        { tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, h->key_pem },
        { tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0, (void *)HTTP_TLS_PRIORITIES },
        { MHD_OPTION_END, 0, NULL },
    };
    /* MHD_OPTION_END rows in the middle end the list early: compact it. */
    size_t k = 0;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].option != MHD_OPTION_END)
            opts[k++] = opts[i];
    opts[k] = (struct MHD_OptionItem) { MHD_OPTION_END, 0, NULL };
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (h->d == NULL) {
        snprintf(err, errlen,
            "--http-listen %s: libmicrohttpd failed to start (for https: is the key the "
            "certificate's, both PEM?)",
            o->url);
        goto fail;
    }
    *out = h;
    return AUTHD_OK;
fail:
    if (fd >= 0)
        close(fd);
    free(h->cert_pem);
    wipe_free(h->key_pem);
    free(h);
    return AUTHD_INVALID_ARGUMENT;
}

const char *authd_http_url(const authd_http *h)
{
    return h->url;
}

void authd_http_stop(authd_http *h)
{
    if (h == NULL)
        return;
    /* The listening socket is ours (MHD_OPTION_LISTEN_SOCKET): MHD closes
     * it in MHD_stop_daemon all the same. */
    MHD_stop_daemon(h->d);
    free(h->cert_pem);
    wipe_free(h->key_pem);
    free(h);
}
