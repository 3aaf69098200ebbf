/*
 * guard.c — the protected-route middleware (guard.h): an HTTP
 * Authorization value in, an HTTP status and the caller's identity out,
 * through authd's Verify on a shared client, with an optional short cache
 * of positive answers keyed by session id (never by a hash of the token).
 */
#include "authd/guard.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "authd/client_rpc.h"

#define SID_BYTES 32 /* hex characters */

struct entry {
    char sid[SID_BYTES];
    char *token; /* the exact token authd verified (malloc'ed), or NULL: empty slot */
    size_t token_len;
    uint64_t until_ms; /* CLOCK_MONOTONIC ms */
    authd_guard_result ok; /* the 200 answer */
};

struct authd_guard {
    authd_client *c;
    char *audience;
    uint32_t ttl_ms;
    size_t n; /* slots (0: no cache) */
    struct entry *slots;
    pthread_mutex_t mu;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int authd_guard_new(authd_client *c, const authd_guard_options *o, authd_guard **out)
{
    authd_guard *g = NULL;
    authd_guard_options none = { 0, 0, NULL };

    if (o == NULL)
        o = &none;
    if (c == NULL || out == NULL || o->cache_ttl_ms > AUTHD_GUARD_TTL_MAX
        || o->cache_entries > (1u << 20))
        return AUTHD_INVALID_ARGUMENT;
    if ((g = calloc(1, sizeof *g)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    g->c = c;
    g->ttl_ms = o->cache_ttl_ms;
    if (o->audience != NULL && o->audience[0] != '\0'
        && (g->audience = strdup(o->audience)) == NULL)
        goto nomem;
    if (g->ttl_ms > 0) {
        g->n = o->cache_entries != 0 ? o->cache_entries : 1024;
        if ((g->slots = calloc(g->n, sizeof *g->slots)) == NULL)
            goto nomem;
    }
    if (pthread_mutex_init(&g->mu, NULL) != 0)
        goto nomem;
    *out = g;
    return AUTHD_OK;
nomem:
    free(g->slots);
    free(g->audience);
    free(g);
    return AUTHD_RESOURCE_EXHAUSTED;
}

static void entry_clear(struct entry *e)
{
    if (e->token != NULL) {
        OPENSSL_cleanse(e->token, e->token_len);
        free(e->token);
    }
    memset(e, 0, sizeof *e);
}

void authd_guard_free(authd_guard *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->n; i++)
        entry_clear(&g->slots[i]);
    free(g->slots);
    free(g->audience);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* b64token_ok: RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" /
 * "~" / "+" / "/" ) *"=". */
static int b64token_ok(const char *t, size_t len)
{
    size_t i = 0;

    while (i < len
        && ((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z')
            || (t[i] >= '0' && t[i] <= '9') || strchr("-._~+/", t[i]) != NULL))
        i++;
    if (i == 0)
        return 0;
    while (i < len && t[i] == '=')
        i++;
    return i == len;
}

static int answer(authd_guard_result *r, int http, const char *www, int code, const char *reason,
    const char *message)
{
    r->http_status = http;
    snprintf(r->www_authenticate, sizeof r->www_authenticate, "%s", www);
    r->status.code = code;
    snprintf(r->status.reason, sizeof r->status.reason, "%s", reason);
    snprintf(r->status.message, sizeof r->status.message, "%s", message);
    return http;
}

/* b64url_val: the value of one base64url character, or -1. */
static int b64url_val(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

/* token_sid finds the "sid" of a JWS compact token's payload as authd
 * writes it ("sid":"<32 hex>") without trusting it: it only picks the
 * cache slot, and a hit also needs the exact token bytes. 0 when absent. */
static int token_sid(const char *tok, size_t len, char sid[SID_BYTES])
{
    const char *p = memchr(tok, '.', len), *q;
    unsigned char buf[3072];
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    static const char key[] = "\"sid\":\"";

    if (p == NULL)
        return 0;
    p++;
    q = memchr(p, '.', len - (size_t)(p - tok));
    if (q == NULL)
        return 0;
    for (const char *s = p; s < q; s++) {
        int v = b64url_val(*s);
        if (v < 0)
            return 0;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == sizeof buf)
                return 0;
            buf[n++] = (unsigned char)(acc >> bits);
        }
    }
    for (size_t i = 0; i + sizeof key - 1 + SID_BYTES < n; i++) {
        if (memcmp(buf + i, key, sizeof key - 1) != 0)
            continue;
        const unsigned char *h = buf + i + sizeof key - 1;
        for (int j = 0; j < SID_BYTES; j++)
            if (!((h[j] >= '0' && h[j] <= '9') || (h[j] >= 'a' && h[j] <= 'f')))
                return 0;
        if (h[SID_BYTES] != '"')
            return 0;
        memcpy(sid, h, SID_BYTES);
        return 1;
    }
    return 0;
}

static size_t slot_of(const authd_guard *g, const char sid[SID_BYTES])
{
    uint64_t h = 1469598103934665603u; /* FNV-1a over the (random) session id */
    for (int i = 0; i < SID_BYTES; i++)
        h = (h ^ (unsigned char)sid[i]) * 1099511628211u;
    return (size_t)(h % g->n);
}

static int holds_all(const authd_guard_result *ok, const char *const *roles, size_t n_roles)
{
    for (size_t i = 0; i < n_roles; i++) {
        int held = 0;
        for (size_t j = 0; j < ok->n_roles && !held; j++)
            held = strcmp(ok->roles[j], roles[i]) == 0;
        if (!held)
            return 0;
    }
    return 1;
}

/* cache_get copies a live entry for exactly this token whose roles cover
 * roles into *r; 1 on a hit. */
static int cache_get(authd_guard *g, const char sid[SID_BYTES], const char *tok, size_t len,
    const char *const *roles, size_t n_roles, authd_guard_result *r)
{
    int hit = 0;

    pthread_mutex_lock(&g->mu);
    struct entry *e = &g->slots[slot_of(g, sid)];
    if (e->token != NULL && memcmp(e->sid, sid, SID_BYTES) == 0) {
        if (mono_ms() >= e->until_ms || (int64_t)time(NULL) >= e->ok.expires_at)
            entry_clear(e);
        else if (e->token_len == len && CRYPTO_memcmp(e->token, tok, len) == 0
            && holds_all(&e->ok, roles, n_roles)) {
            *r = e->ok;
            r->from_cache = 1;
            hit = 1;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return hit;
}

static void cache_put(authd_guard *g, const char sid[SID_BYTES], const char *tok, size_t len,
    const authd_guard_result *ok)
{
    char *copy = malloc(len);

    if (copy == NULL)
        return;
    memcpy(copy, tok, len);
    pthread_mutex_lock(&g->mu);
    struct entry *e = &g->slots[slot_of(g, sid)];
    entry_clear(e);
    memcpy(e->sid, sid, SID_BYTES);
    e->token = copy;
    e->token_len = len;
    e->until_ms = mono_ms() + g->ttl_ms;
    e->ok = *ok;
    pthread_mutex_unlock(&g->mu);
}

int authd_guard_check_token(authd_guard *g, const char *tok, const char *const *roles,
    size_t n_roles, authd_guard_result *r)
{
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    char sid[SID_BYTES];
    size_t len;
    int cacheable = 0;

    memset(r, 0, sizeof *r);
    if (g == NULL || n_roles > AUTHD_GUARD_ROLES_MAX || (n_roles > 0 && roles == NULL))
        return answer(r, 500, "", AUTHD_INVALID_ARGUMENT, "BAD_ROUTE", "bad guard call");
    if (tok == NULL || tok[0] == '\0')
        return answer(r, 401, "Bearer", AUTHD_UNAUTHENTICATED, "NO_TOKEN", "no access token");
    len = strnlen(tok, AUTHD_GUARD_TOKEN_MAX + 1);
    if (len > AUTHD_GUARD_TOKEN_MAX || !b64token_ok(tok, len))
        return answer(r, 401, "Bearer error=\"invalid_request\"", AUTHD_UNAUTHENTICATED,
            "BAD_AUTHORIZATION_HEADER", "malformed access token");
    if (g->n > 0 && token_sid(tok, len, sid)) {
        cacheable = 1;
        if (cache_get(g, sid, tok, len, roles, n_roles, r))
            return r->http_status;
    }

    req.access_token = (char *)tok;
    req.required_roles = (char **)roles;
    req.n_required_roles = n_roles;
    if (g->audience != NULL)
        req.audience = g->audience;
    int rc = authd_client_verify(g->c, &req, &resp, &r->status);
    switch (rc) {
    case AUTHD_OK:
        break;
    case AUTHD_UNAUTHENTICATED:
        r->http_status = 401;
        snprintf(r->www_authenticate, sizeof r->www_authenticate, "Bearer error=\"invalid_token\"");
        return 401;
    case AUTHD_PERMISSION_DENIED:
        r->http_status = 403;
        snprintf(
            r->www_authenticate, sizeof r->www_authenticate, "Bearer error=\"insufficient_scope\"");
        return 403;
    case AUTHD_INVALID_ARGUMENT:
        r->http_status = 500; /* the route's roles are not a valid role set */
        return 500;
    default:
        r->http_status = 503;
        return 503;
    }
    r->http_status = 200;
    snprintf(r->user_id, sizeof r->user_id, "%s", resp->user_id);
    snprintf(r->session_id, sizeof r->session_id, "%s", resp->session_id);
    snprintf(r->username, sizeof r->username, "%s", resp->username);
    for (size_t i = 0; i < resp->n_roles && i < AUTHD_GUARD_ROLES_MAX; i++)
        snprintf(r->roles[r->n_roles++], sizeof r->roles[0], "%s", resp->roles[i]);
    r->expires_at = resp->expires_at;
    authd__v1__verify_response__free_unpacked(resp, NULL);
    if (cacheable && strncmp(r->session_id, sid, SID_BYTES) == 0)
        cache_put(g, sid, tok, len, r);
    return 200;
}

int authd_guard_check(authd_guard *g, const char *authorization, const char *const *roles,
    size_t n_roles, authd_guard_result *r)
{
    const char *p = authorization;

    if (p == NULL || p[0] == '\0')
        return authd_guard_check_token(g, NULL, roles, n_roles, r);
    /* credentials = auth-scheme 1*SP token68 (RFC 9110 §11.4); the scheme
     * is case-insensitive. */
    if (strncasecmp(p, "Bearer", 6) != 0 || p[6] != ' ') {
        memset(r, 0, sizeof *r);
        if (g == NULL || n_roles > AUTHD_GUARD_ROLES_MAX)
            return answer(r, 500, "", AUTHD_INVALID_ARGUMENT, "BAD_ROUTE", "bad guard call");
        return answer(r, 401, "Bearer error=\"invalid_request\"", AUTHD_UNAUTHENTICATED,
            "BAD_AUTHORIZATION_HEADER", "the Authorization header is not a Bearer token");
    }
    p += 6;
    while (*p == ' ')
        p++;
    if (*p == '\0') {
        memset(r, 0, sizeof *r);
        return answer(r, 401, "Bearer error=\"invalid_request\"", AUTHD_UNAUTHENTICATED,
            "BAD_AUTHORIZATION_HEADER", "the Authorization header has no token");
    }
    return authd_guard_check_token(g, p, roles, n_roles, r);
}
