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
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "authd/v1/auth.pb-c.h"
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
#define HTTP_PROXIES_MAX     64
#define HTTP_FORWARDED_MAX   256 /* the "forwarded" log field */
#define HTTP_ROLES_TEXT_MAX  2048
#define HTTP_COOKIE_NAME_MAX 128
#define METHOD_VERIFY        "/authd.v1.Auth/Verify"
#define METHOD_GET_JWKS      "/authd.v1.Auth/GetJwks"

/* A trusted proxy network: an address (IPv4 as v4-mapped) and a prefix. */
struct cidr {
    uint8_t addr[16];
    unsigned bits; /* 0..128 (IPv4 prefixes + 96) */
};

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
    bool tls;
    /* What a daemon is started with, kept for a TLS reload's new daemon. */
    unsigned threads, max_connections, max_per_source, timeout_s;
    char cookie[HTTP_COOKIE_NAME_MAX + 1]; /* forward-auth's cookie name; "" = none */
    size_t nproxies;
    struct cidr proxies[HTTP_PROXIES_MAX];
    /* Request ids of the side port's calls: the side port's own line,
     * never touched by the main port's loops. */
    _Alignas(64) atomic_uint_fast64_t next_id;
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
static enum MHD_Result route_forward_auth(const struct http_req *r);
static enum MHD_Result route_jwks(const struct http_req *r);

/* The route table: one row per path. A path matches exactly, or with
 * subtree set also as a prefix followed by "/" (Envoy's ext_authz appends
 * the original path to its path_prefix: /forward-auth/orders/7). */
static const struct http_route {
    const char *path;
    http_route_fn fn;
    bool subtree;
} routes[] = {
    { "/healthz", route_healthz, false },
    { "/readyz", route_readyz, false },
    { "/metrics", route_metrics, false },
    { "/forward-auth", route_forward_auth, true },
    { "/.well-known/jwks.json", route_jwks, false },
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

/* ---- calling the service --------------------------------------------------- */

/* One RPC made on the side port's behalf: the request handed to
 * authd_dispatch and what its done() copied back. */
struct http_call {
    authd_request req;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    authd_code code;
    char reason[64];
    uint8_t *body; /* the serialized response (OK only; malloc'ed), or NULL */
    size_t body_len;
};

/* call_done (authd_done_fn) copies the reply; any thread, exactly once. */
static void call_done(authd_request *req, const authd_reply *rep)
{
    struct http_call *hc = req->transport;
    uint8_t *body = NULL;

    if (rep->code == AUTHD_OK && rep->body_len > 0 && (body = malloc(rep->body_len)) != NULL)
        memcpy(body, rep->body, rep->body_len);
    pthread_mutex_lock(&hc->mu);
    hc->code = rep->code == AUTHD_OK && rep->body_len > 0 && body == NULL ? AUTHD_RESOURCE_EXHAUSTED
                                                                          : rep->code;
    snprintf(hc->reason, sizeof hc->reason, "%s", rep->reason != NULL ? rep->reason : "");
    hc->body = body;
    hc->body_len = body != NULL ? rep->body_len : 0;
    hc->done = true;
    pthread_cond_signal(&hc->cv);
    pthread_mutex_unlock(&hc->mu);
}

/* peer_of fills req's peer text and source from the connection's address;
 * returns the address (NULL when libmicrohttpd has none). */
static const struct sockaddr *peer_of(struct MHD_Connection *conn, authd_request *req)
{
    const union MHD_ConnectionInfo *ci
        = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
    }
    snprintf(req->peer, sizeof req->peer, "%s:%u", ip, port);
    if (sa != NULL)
        (void)authd_source_from_sockaddr(sa, &req->source);
    return sa;
}

/*
 * The side port's threads run Verify inline, as the event loops do, so
 * each gets what a loop gets (authd_service_thread_start): its own read
 * transaction and its own verified-token cache. libmicrohttpd has no
 * thread-start hook, so a thread starts at its first call, and a
 * thread-specific key's destructor stops it on the same thread when
 * libmicrohttpd ends it (authd_http_stop, before the service goes).
 */
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static _Thread_local bool thread_started;

static void thread_end(void *svc)
{
    authd_service_thread_stop(svc);
}

static void make_thread_key(void)
{
    if (pthread_key_create(&thread_key, thread_end) != 0)
        abort(); /* only EAGAIN/ENOMEM, at the first request */
}

static void thread_begin(authd_http *h)
{
    if (thread_started)
        return;
    thread_started = true;
    (void)pthread_once(&thread_key_once, make_thread_key);
    authd_service_thread_start(h->svc);
    (void)pthread_setspecific(thread_key, h->svc);
}

/*
 * call_service runs method with the serialized request body through
 * authd_dispatch, the entry the main port uses, and waits for its done()
 * (Verify and GetJwks complete before dispatch returns; the wait is for
 * any that would not). hc->req's peer, source and forwarded are the
 * caller's to fill first. Free hc->body after.
 */
static void call_service(
    authd_http *h, struct http_call *hc, const char *method, const uint8_t *body, size_t len)
{
    uint64_t id = atomic_fetch_add_explicit(&h->next_id, 1, memory_order_relaxed) + 1;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    hc->req.method = method;
    hc->req.method_len = strlen(method);
    hc->req.body = body;
    hc->req.body_len = len;
    hc->req.request_id = id;
    hc->req.authorization = "";
    hc->req.conn_id = (UINT64_C(1) << 63) | id; /* apart from the main port's ids */
    hc->req.start_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    hc->req.done = call_done;
    hc->req.transport = hc;
    pthread_mutex_init(&hc->mu, NULL);
    pthread_cond_init(&hc->cv, NULL);
    thread_begin(h);
    authd_dispatch(h->svc, &hc->req);
    pthread_mutex_lock(&hc->mu);
    while (!hc->done)
        pthread_cond_wait(&hc->cv, &hc->mu);
    pthread_mutex_unlock(&hc->mu);
    pthread_cond_destroy(&hc->cv);
    pthread_mutex_destroy(&hc->mu);
}

/* ---- trusted proxies -------------------------------------------------------- */

/* parse_ip reads a literal IPv4 or IPv6 address of len bytes (IPv4 as
 * v4-mapped); false when it is not one. */
static bool parse_ip(const char *text, size_t len, uint8_t out[16], bool *v4)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in_addr a4;

    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return true;
    }
    *v4 = false;
    return inet_pton(AF_INET6, buf, out) == 1;
}

/* parse_proxies reads --http-trusted-proxies: addresses or CIDR networks,
 * separated by commas or spaces. */
static bool parse_proxies(authd_http *h, const char *list, char *err, size_t errlen)
{
    const char *p = list;

    while (*p != '\0') {
        p += strspn(p, ", \t");
        if (*p == '\0')
            break;
        size_t n = strcspn(p, ", \t");
        const char *slash = memchr(p, '/', n);
        size_t alen = slash != NULL ? (size_t)(slash - p) : n;
        struct cidr c = { 0 };
        bool v4 = false;
        if (h->nproxies == HTTP_PROXIES_MAX) {
            snprintf(err, errlen, "--http-trusted-proxies: at most %d entries", HTTP_PROXIES_MAX);
            return false;
        }
        if (!parse_ip(p, alen, c.addr, &v4)) {
            snprintf(err, errlen,
                "--http-trusted-proxies: '%.*s' is not an address or CIDR network", (int)n, p);
            return false;
        }
        c.bits = 128;
        if (slash != NULL) {
            char *end = NULL;
            long bits = strtol(slash + 1, &end, 10);
            if (end != p + n || end == slash + 1 || bits < 0 || bits > (v4 ? 32 : 128)) {
                snprintf(
                    err, errlen, "--http-trusted-proxies: '%.*s': bad prefix length", (int)n, p);
                return false;
            }
            c.bits = (unsigned)bits + (v4 ? 96u : 0u);
        }
        h->proxies[h->nproxies++] = c;
        p += n;
    }
    return true;
}

/* trusted is true when addr lies in one of the trusted proxy networks. */
static bool trusted(const authd_http *h, const uint8_t addr[16])
{
    for (size_t i = 0; i < h->nproxies; i++) {
        const struct cidr *c = &h->proxies[i];
        unsigned full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(addr, c->addr, full) != 0)
            continue;
        if (rest == 0 || ((addr[full] ^ c->addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0)
            return true;
    }
    return false;
}

/* sockaddr_ip: the peer's address as 16 bytes (IPv4 as v4-mapped). */
static bool sockaddr_ip(const struct sockaddr *sa, uint8_t out[16])
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

/*
 * forwarded_client finds the end user's address in X-Forwarded-For (only
 * called when the peer is a trusted proxy): walking from the right (the
 * entry the nearest proxy appended), trusted proxies are skipped and the
 * first address that is not one is the client (the leftmost when all
 * are). A malformed entry makes the whole header ignored. Writes the
 * address text and its source key; false when there is none.
 */
static bool forwarded_client(
    const authd_http *h, const char *xff, char *out, size_t cap, authd_source *src)
{
    size_t end = strlen(xff);

    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        uint8_t ip[16];
        bool v4;
        if (!parse_ip(xff + a, b - a, ip, &v4))
            return false;
        if (!trusted(h, ip) || start == 0) {
            if (!authd_source_from_text(xff + a, b - a, src))
                return false;
            snprintf(out, cap, "%.*s", (int)(b - a), xff + a);
            return true;
        }
        end = start - 1;
    }
    return false;
}

/* printable copies src into out as printable ASCII only (others become
 * '?'), for the log line. */
static void printable(char *out, size_t cap, const char *src)
{
    size_t n = 0;
    for (; *src != '\0' && n + 1 < cap; src++)
        out[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    out[n] = '\0';
}

/* ---- /forward-auth ------------------------------------------------------------- */

/* bearer_of returns the token of an "Authorization: Bearer T" value (the
 * scheme in any case, RFC 6750 / RFC 9110), or NULL when the value uses
 * another scheme or is empty. */
static const char *bearer_of(const char *auth)
{
    if (strncasecmp(auth, "bearer", 6) != 0 || (auth[6] != ' ' && auth[6] != '\t'))
        return NULL;
    auth += 6;
    while (*auth == ' ' || *auth == '\t')
        auth++;
    return *auth != '\0' ? auth : NULL;
}

/* split_roles appends the comma-separated roles of list (spaces around
 * each trimmed, empty ones skipped) to roles[], copying them into buf; at
 * most cap in all (Verify refuses more than AUTHD_ROLES_MAX, so the caller
 * passes one more, to be refused). */
static void split_roles(
    const char *list, char *buf, size_t bufcap, size_t *used, char **roles, size_t *n, size_t cap)
{
    const char *p = list;

    while (p != NULL && *p != '\0' && *n < cap) {
        size_t len = strcspn(p, ",");
        size_t a = 0, b = len;
        while (a < b && (p[a] == ' ' || p[a] == '\t'))
            a++;
        while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
            b--;
        if (b > a && *used + (b - a) + 1 <= bufcap) {
            memcpy(buf + *used, p + a, b - a);
            buf[*used + (b - a)] = '\0';
            roles[(*n)++] = buf + *used;
            *used += b - a + 1;
        }
        p += len;
        if (*p == ',')
            p++;
    }
}

/* respond_denied answers a refused forward-auth: 401 with a Bearer
 * challenge (RFC 6750 section 3: no error attribute when no token came),
 * 403 insufficient_scope, 400 invalid_request, or 503/500 when authd
 * itself cannot answer. X-Auth-Reason carries authd's reason. */
static enum MHD_Result respond_denied(const struct http_req *r, authd_code code, const char *reason)
{
    char challenge[160], body[96];
    unsigned status;
    const char *err = NULL;

    switch (code) {
    case AUTHD_UNAUTHENTICATED:
        status = MHD_HTTP_UNAUTHORIZED;
        err = strcmp(reason, "NO_TOKEN") == 0   ? NULL
            : strcmp(reason, "NOT_BEARER") == 0 ? "invalid_request"
                                                : "invalid_token";
        break;
    case AUTHD_PERMISSION_DENIED:
        status = MHD_HTTP_FORBIDDEN;
        err = "insufficient_scope";
        break;
    case AUTHD_INVALID_ARGUMENT:
        status = MHD_HTTP_BAD_REQUEST;
        err = "invalid_request";
        break;
    case AUTHD_RESOURCE_EXHAUSTED:
    case AUTHD_UNAVAILABLE:
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        break;
    default:
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        break;
    }
    if (err != NULL)
        snprintf(challenge, sizeof challenge,
            "Bearer realm=\"authd\", error=\"%s\", error_description=\"%s\"", err, reason);
    else
        snprintf(challenge, sizeof challenge, "Bearer realm=\"authd\"");
    const char *hdrs[] = { MHD_HTTP_HEADER_WWW_AUTHENTICATE, challenge, "X-Auth-Reason", reason,
        status == MHD_HTTP_SERVICE_UNAVAILABLE ? MHD_HTTP_HEADER_RETRY_AFTER : NULL, "1", NULL };
    snprintf(body, sizeof body, "%s\n", reason);
    return respond(r, status, "text/plain; charset=utf-8", body, strlen(body), hdrs);
}

/*
 * route_forward_auth: the endpoint of nginx auth_request, Traefik
 * ForwardAuth, Envoy ext_authz (HTTP) and Caddy forward_auth. The token
 * (Authorization: Bearer, else the --http-auth-cookie cookie), the
 * required roles (?roles=a,b and X-Auth-Required-Roles, together) and the
 * audience (?aud= or X-Auth-Audience) become a VerifyRequest handed to
 * authd_dispatch: Verify's own code decides, as on the main port. 200
 * carries the identity in X-Auth-User-Id, X-Auth-Username and
 * X-Auth-Roles. X-Forwarded-* count only from --http-trusted-proxies: for
 * the log line and the source whose failure lines are rate-limited.
 */
static enum MHD_Result route_forward_auth(const struct http_req *r)
{
    authd_http *h = r->h;
    struct MHD_Connection *conn = r->conn;
    struct http_call hc;
    Authd__V1__VerifyRequest vr = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    char rolebuf[HTTP_ROLES_TEXT_MAX], fwd[HTTP_FORWARDED_MAX];
    char *roles[AUTHD_ROLES_MAX + 1];
    size_t nroles = 0, used = 0, plen = 0;
    uint8_t *packed = NULL, pip[16];
    enum MHD_Result ok;

    memset(&hc, 0, sizeof hc);
    const struct sockaddr *sa = peer_of(conn, &hc.req);

    /* X-Forwarded-*: believed from trusted proxies only. */
    if (h->nproxies > 0 && sockaddr_ip(sa, pip) && trusted(h, pip)) {
        const char *xff = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-For");
        char client[INET6_ADDRSTRLEN + 1];
        authd_source src;
        if (xff != NULL && forwarded_client(h, xff, client, sizeof client, &src)) {
            hc.req.source = src;
            snprintf(hc.req.peer, sizeof hc.req.peer, "%s", client);
        }
        const char *m = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-Method");
        const char *pr = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-Proto");
        const char *ho = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-Host");
        const char *u = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-Uri");
        if (m != NULL || pr != NULL || ho != NULL || u != NULL) {
            char tmp[HTTP_FORWARDED_MAX];
            snprintf(tmp, sizeof tmp, "%s %s://%s%s", m != NULL ? m : "-", pr != NULL ? pr : "-",
                ho != NULL ? ho : "-", u != NULL ? u : "");
            printable(fwd, sizeof fwd, tmp);
            hc.req.forwarded = fwd;
        }
    }

    /* The token. */
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    const char *tok = auth != NULL ? bearer_of(auth) : NULL;
    if (tok == NULL && h->cookie[0] != '\0')
        tok = MHD_lookup_connection_value(conn, MHD_COOKIE_KIND, h->cookie);
    if (tok == NULL || tok[0] == '\0')
        return respond_denied(
            r, AUTHD_UNAUTHENTICATED, auth != NULL && auth[0] != '\0' ? "NOT_BEARER" : "NO_TOKEN");

    /* What the route requires: both sources count (a client can only add
     * requirements this way, never remove the proxy's). */
    split_roles(MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "roles"), rolebuf,
        sizeof rolebuf, &used, roles, &nroles, AUTHD_ROLES_MAX + 1);
    split_roles(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Required-Roles"),
        rolebuf, sizeof rolebuf, &used, roles, &nroles, AUTHD_ROLES_MAX + 1);
    const char *aud_q = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "aud");
    const char *aud_h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Auth-Audience");
    if (aud_q != NULL && aud_h != NULL && strcmp(aud_q, aud_h) != 0)
        return respond_denied(r, AUTHD_PERMISSION_DENIED, "WRONG_AUDIENCE"); /* both must hold */

    vr.access_token = (char *)tok;
    vr.n_required_roles = nroles;
    vr.required_roles = roles;
    vr.audience = (char *)(aud_q != NULL ? aud_q : aud_h != NULL ? aud_h : "");
    plen = authd__v1__verify_request__get_packed_size(&vr);
    if ((packed = malloc(plen)) == NULL)
        return respond_denied(r, AUTHD_RESOURCE_EXHAUSTED, "OVERLOADED");
    authd__v1__verify_request__pack(&vr, packed);
    call_service(h, &hc, METHOD_VERIFY, packed, plen);
    sodium_memzero(packed, plen); /* holds the token */
    free(packed);

    if (hc.code != AUTHD_OK) {
        ok = respond_denied(r, hc.code, hc.reason[0] != '\0' ? hc.reason : "DENIED");
        goto out;
    }
    resp = authd__v1__verify_response__unpack(NULL, hc.body_len, hc.body);
    if (resp == NULL) {
        ok = respond_denied(r, AUTHD_INTERNAL, "INTERNAL");
        goto out;
    }
    char rl[AUTHD_ROLES_MAX * (AUTHD_ROLE_MAX + 1) + 1];
    size_t off = 0;
    rl[0] = '\0';
    for (size_t i = 0; i < resp->n_roles && off < sizeof rl; i++)
        off += (size_t)snprintf(
            rl + off, sizeof rl - off, "%s%s", i > 0 ? "," : "", resp->roles[i]);
    const char *hdrs[] = { "X-Auth-User-Id", resp->user_id, "X-Auth-Username", resp->username,
        "X-Auth-Roles", rl, NULL };
    ok = respond(r, MHD_HTTP_OK, "text/plain; charset=utf-8", "", 0, hdrs);
out:
    if (resp != NULL)
        authd__v1__verify_response__free_unpacked(resp, NULL);
    free(hc.body);
    return ok;
}

/* ---- /.well-known/jwks.json ---------------------------------------------------- */

/* route_jwks: the document GetJwks answers (rpc_jwks.c, through
 * dispatch), as application/jwk-set+json; 404 while no ES256 key is
 * published (HS256 keys are secret: nothing to show). */
static enum MHD_Result route_jwks(const struct http_req *r)
{
    struct http_call hc;
    Authd__V1__GetJwksResponse *resp = NULL;
    enum MHD_Result ok;

    memset(&hc, 0, sizeof hc);
    (void)peer_of(r->conn, &hc.req);
    call_service(r->h, &hc, METHOD_GET_JWKS, NULL, 0);
    if (hc.code == AUTHD_OK)
        resp = authd__v1__get_jwks_response__unpack(NULL, hc.body_len, hc.body);
    if (resp == NULL)
        ok = respond_text(r,
            hc.code == AUTHD_RESOURCE_EXHAUSTED || hc.code == AUTHD_UNAVAILABLE
                ? MHD_HTTP_SERVICE_UNAVAILABLE
                : MHD_HTTP_INTERNAL_SERVER_ERROR,
            "unavailable\n");
    else if (strcmp(resp->jwks, "{\"keys\":[]}") == 0)
        ok = respond_text(r, MHD_HTTP_NOT_FOUND, "no public keys (no ES256 key is published)\n");
    else
        ok = respond(
            r, MHD_HTTP_OK, "application/jwk-set+json", resp->jwks, strlen(resp->jwks), NULL);
    if (resp != NULL)
        authd__v1__get_jwks_response__free_unpacked(resp, NULL);
    free(hc.body);
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

    static int headers_seen;

    (void)version;
    (void)upload_data;
    if (*upload_data_size != 0)
        return MHD_NO; /* a body on GET: no route reads one */
    /* The first call comes with the headers alone; answering it at once
     * makes libmicrohttpd 0.9.75 close the connection after the reply
     * (Connection: close: no keep-alive for proxies). Answer the second,
     * once the request is complete. */
    if (*con_cls == NULL) {
        *con_cls = &headers_seen;
        return MHD_YES;
    }
    r.head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!r.head && strcmp(method, MHD_HTTP_METHOD_GET) != 0) {
        static const char *const allow[] = { MHD_HTTP_HEADER_ALLOW, "GET, HEAD", NULL };
        return respond(&r, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
            "method not allowed\n", strlen("method not allowed\n"), allow);
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t n = strlen(routes[i].path);
        if (strncmp(routes[i].path, url, n) == 0
            && (url[n] == '\0' || (routes[i].subtree && url[n] == '/')))
            return routes[i].fn(&r);
    }
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
    static authd_lograte rate = AUTHD_LOGRATE_INIT;
    uint64_t held = 0;
    authd_logrec r;
    char msg[256];

    (void)cls;
    if (!authd_lograte_allow(&rate, HTTP_LOG_NS, authd_monotonic_ns(), &held))
        return;
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = '\0';
    msg[strcspn(msg, "\n")] = '\0';
    if (authd_log_begin(&r, AUTHD_LOG_WARN, "http_error")) {
        authd_log_str(&r, "msg", msg);
        if (held > 0)
            authd_log_u64(&r, "suppressed", held);
        authd_log_end(&r);
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
static int bind_url(const authd_http_options *o, bool *tls, char *url_out, size_t url_cap,
    bool check_only, char *err, size_t errlen)
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
    if (check_only) {
        freeaddrinfo(ai);
        return 0;
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

/*
 * start_daemon starts libmicrohttpd on the listening socket fd (which it
 * then owns) with h's settings and, for https, the PEM texts given (MHD
 * keeps the pointers: they must outlive the daemon). With extra =
 * MHD_USE_NO_LISTEN_SOCKET and fd = -1 it only loads the certificate and
 * key, which is how a reload checks a new pair before it is put in force.
 * NULL when MHD refuses (a bad PEM, a key that is not the certificate's).
 */
static struct MHD_Daemon *start_daemon(
    authd_http *h, int fd, const char *cert_pem, const char *key_pem, unsigned extra)
{
    unsigned flags = MHD_USE_ERROR_LOG | extra;
    if (fd >= 0)
        flags |= MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC;
    if (h->tls)
        flags |= MHD_USE_TLS;
    /* The logger goes first (in the call below): MHD warns, through its
     * own logger to stderr, about any option that comes before it. */
    struct MHD_OptionItem opts[] = {
        { fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_END, fd, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, (intptr_t)h->max_connections, NULL },
        /* One source must not hold every slot: the probes and the scraper
         * of /healthz, /readyz and /metrics come from other addresses. */
        { MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)h->max_per_source, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)h->timeout_s, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_CONN_MEMORY, NULL },
        { fd >= 0 && h->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
            (intptr_t)h->threads, NULL },
        { h->tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)cert_pem },
        { h->tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *)key_pem },
        { h->tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0, (void *)HTTP_TLS_PRIORITIES },
        { MHD_OPTION_END, 0, NULL },
    };
    /* MHD_OPTION_END rows in the middle end the list early: compact it. */
    size_t k = 0;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].option != MHD_OPTION_END)
            opts[k++] = opts[i];
    opts[k] = (struct MHD_OptionItem) { MHD_OPTION_END, 0, NULL };
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, NULL, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
}

authd_code authd_http_check_url(const authd_http_options *o, char *err, size_t errlen)
{
    bool tls = false;
    char url[HTTP_URL_MAX];

    return bind_url(o, &tls, url, sizeof url, true, err, errlen) == 0 ? AUTHD_OK
                                                                      : AUTHD_INVALID_ARGUMENT;
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
    if (o->auth_cookie != NULL) {
        size_t n = strlen(o->auth_cookie);
        if (n == 0 || n > HTTP_COOKIE_NAME_MAX
            || strspn(o->auth_cookie,
                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")
                != n) {
            snprintf(err, errlen, "--http-auth-cookie: a cookie name is 1-%d token characters",
                HTTP_COOKIE_NAME_MAX);
            goto fail;
        }
        memcpy(h->cookie, o->auth_cookie, n + 1);
    }
    if (o->trusted_proxies != NULL && !parse_proxies(h, o->trusted_proxies, err, errlen))
        goto fail;
    if ((fd = bind_url(o, &tls, h->url, sizeof h->url, false, err, errlen)) < 0)
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
    h->tls = tls;
    h->threads = o->threads > 0 ? o->threads : 1;
    h->max_connections = o->max_connections > 0 ? o->max_connections : HTTP_DEFAULT_CONNS;
    h->max_per_source
        = o->max_conns_per_source > 0 ? o->max_conns_per_source : HTTP_DEFAULT_PER_SRC;
    h->timeout_s = o->timeout_s > 0 ? o->timeout_s : HTTP_DEFAULT_TIMEOUT;
    h->d = start_daemon(h, fd, h->cert_pem, h->key_pem, 0);
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

/*
 * authd_http_reload_tls (SIGHUP): libmicrohttpd has no way to change a
 * running daemon's certificate, so a new daemon takes over the listening
 * socket: the new pair is loaded first by a daemon without a socket (a bad
 * PEM or a mismatched key stops here, nothing changed); then the running
 * daemon is quiesced (stops accepting, gives the socket back), a new one
 * starts on that socket with the new pair, and the old one is stopped
 * (requests in progress finish; idle keep-alive connections close and the
 * proxy redials). Same PEM texts: nothing to do.
 */
authd_code authd_http_reload_tls(
    authd_http *h, const char *cert, const char *key, char *err, size_t errlen)
{
    char *cert_pem = NULL, *key_pem = NULL;
    struct MHD_Daemon *probe, *nd;
    authd_code rc = AUTHD_INVALID_ARGUMENT;

    if (h == NULL || !h->tls)
        return AUTHD_UNIMPLEMENTED;
    if ((cert_pem = read_pem(cert, "certificate", err, errlen)) == NULL
        || (key_pem = read_pem(key, "private key", err, errlen)) == NULL)
        goto out;
    if (strcmp(cert_pem, h->cert_pem) == 0 && strcmp(key_pem, h->key_pem) == 0) {
        rc = AUTHD_OK;
        goto out;
    }
    if ((probe = start_daemon(h, -1, cert_pem, key_pem, MHD_USE_NO_LISTEN_SOCKET)) == NULL) {
        snprintf(err, errlen,
            "side port: certificate %s / key %s refused (PEM? the key the certificate's?)", cert,
            key);
        goto out;
    }
    MHD_stop_daemon(probe);
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd == MHD_INVALID_SOCKET) {
        snprintf(err, errlen, "side port: libmicrohttpd would not hand its socket over");
        goto out;
    }
    if ((nd = start_daemon(h, fd, cert_pem, key_pem, 0)) == NULL) {
        /* The pair loaded a moment ago; if the socket's daemon still does
         * not start, the old pair goes back on it. */
        nd = start_daemon(h, fd, h->cert_pem, h->key_pem, 0);
        snprintf(err, errlen, "side port: libmicrohttpd failed to restart with the new pair%s",
            nd != NULL ? "; the old one serves" : " or the old one: the side port is down");
        if (nd == NULL)
            close(fd);
        MHD_stop_daemon(h->d);
        h->d = nd;
        goto out;
    }
    MHD_stop_daemon(h->d);
    h->d = nd;
    free(h->cert_pem);
    wipe_free(h->key_pem);
    h->cert_pem = cert_pem;
    h->key_pem = key_pem;
    cert_pem = key_pem = NULL;
    rc = AUTHD_OK;
out:
    free(cert_pem);
    wipe_free(key_pem);
    return rc;
}

void authd_http_stop(authd_http *h)
{
    if (h == NULL)
        return;
    /* The listening socket is ours (MHD_OPTION_LISTEN_SOCKET): MHD closes
     * it in MHD_stop_daemon all the same. */
    if (h->d != NULL)
        MHD_stop_daemon(h->d);
    free(h->cert_pem);
    wipe_free(h->key_pem);
    free(h);
}
