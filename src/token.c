/*
 * token.c — issuing and verifying authd's access tokens (JWS compact,
 * "typ":"at+jwt"): the JWS code (strict base64url, the header fence,
 * claims and time checks) and the key set, in one place. The algorithms
 * live behind the seam of token_alg.h (alg_hs256.c, alg_es256.c);
 * libsodium for constant-time compares, hex and encoding, jansson for
 * JSON. See token.h for the contract and why not libjwt.
 *
 * The key set. Keys are loaded (parsed, keyed) once and then never change
 * but for their state words; they are kept on one list, newest first, for
 * the object's life, and freed only by authd_tokens_destroy. A reload
 * (authd_tokens_set_keys) adds keys it has not seen to the head of the list
 * (a release store: a reader that finds a key sees it whole) and stores
 * each key's new state; the active key is one more atomic pointer. So the
 * readers, on every event loop, take no lock and no epoch: a Verify reads
 * at most a few pointers and state words more than with one fixed key. The
 * price is that a key dropped from the set stays in memory (a few hundred
 * bytes, its secret included) until exit, and a process loads at most
 * AUTHD_KEYS_LIFE_MAX distinct keys; restart authd after that many
 * rotations (about 8 months of daily ones).
 */
#include "token.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "token_alg.h"

#define B64_VARIANT  sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define NAME_LEN_MAX 128 /* issuer, audience */
#define TIME_MAX     ((int64_t)1 << 40) /* iat/nbf/exp upper bound */
#define LEEWAY_MAX   86400 /* a day of skew is already a config error */
#define MAX_TTL_DEF  43200 /* 12 h: the ceiling of --token-ttl */
#define HEADER_MAX   256 /* decoded header bytes worth parsing; ours is at most 71 */
#define CLAIMS_MAX   640 /* our claims JSON; 128-byte iss and aud need < 480 */
#define BIN_MAX      (AUTHD_TOKEN_MAX / 4 * 3) /* all three parts, decoded */
#define ID_HEX_LEN   32 /* sub, sid, jti */

static const authd_token_alg *const algs[] = { &authd_alg_hs256, &authd_alg_es256 };

struct authd_tokens {
    _Atomic(authd_key *) keys; /* every key loaded, newest first; see the file comment */
    _Atomic(authd_key *) active; /* the one that signs; NULL: none yet */
    _Atomic uint64_t generation; /* bumped by every set_keys that commits (token_cache.c) */
    pthread_mutex_t mu; /* set_keys */
    size_t loaded; /* keys on the list (mu) */
    char iss[NAME_LEN_MAX + 1];
    size_t iss_len;
    char aud[NAME_LEN_MAX + 1];
    size_t aud_len;
    int64_t leeway;
    int64_t max_ttl;
};

/* name_ok: issuer and audience are written into the claims JSON verbatim,
 * so they must be 1..128 bytes of printable ASCII with nothing that JSON
 * would escape (no quote, no backslash, no control character). Non-ASCII
 * is refused too: the issuer must compare byte-equal after jansson decodes
 * it, and URLs and service names have no need for it. */
static bool name_ok(const char *s)
{
    size_t n;

    if (s == NULL)
        return false;
    n = strnlen(s, NAME_LEN_MAX + 1);
    if (n == 0 || n > NAME_LEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

static bool time_ok(int64_t v)
{
    return v >= 0 && v <= TIME_MAX;
}

static const authd_token_alg *alg_named(const char *name)
{
    for (size_t i = 0; name != NULL && i < sizeof algs / sizeof algs[0]; i++)
        if (strcmp(algs[i]->name, name) == 0)
            return algs[i];
    return NULL;
}

/* key_free unloads (wipes) and frees one key. Accepts NULL. */
static void key_free(authd_key *k)
{
    if (k == NULL)
        return;
    k->alg->unload(k);
    sodium_memzero(k, sizeof *k);
    free(k);
}

/* key_load parses material as a key of alg, derives its kid and encodes
 * its header segment, which verify compares byte for byte before falling
 * back to parsing. The caller frees *out with key_free. */
static authd_code key_load(
    const authd_token_alg *alg, const uint8_t *material, size_t len, authd_key **out)
{
    authd_key *k = calloc(1, sizeof *k);
    char hdr[96];
    int n;

    if (k == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    if (material == NULL || alg->load(k, material, len) != 0) {
        sodium_memzero(k, sizeof *k);
        free(k);
        return AUTHD_INVALID_ARGUMENT;
    }
    k->alg = alg;
    crypto_hash_sha256(k->material_id, material, len);
    n = snprintf(
        hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", alg->name, k->kid);
    if (n < 0 || (size_t)n >= sizeof hdr
        || sodium_base64_ENCODED_LEN((size_t)n, B64_VARIANT) > sizeof k->header) {
        key_free(k);
        return AUTHD_INTERNAL;
    }
    sodium_bin2base64(k->header, sizeof k->header, (const uint8_t *)hdr, (size_t)n, B64_VARIANT);
    k->header_len = strlen(k->header);
    *out = k;
    return AUTHD_OK;
}

/* authd_tokens_create copies the settings; with a key, the set is that key
 * alone (the --signing-key deployment, as before key sets). */
authd_code authd_tokens_create(const authd_tokens_options *opts, authd_tokens **out)
{
    authd_tokens *t = NULL;
    char err[160];
    authd_code rc;

    if (opts == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if ((opts->key == NULL && opts->key_len != 0)
        || (opts->key != NULL
            && (opts->key_len < AUTHD_SIGNING_KEY_MIN || opts->key_len > AUTHD_SIGNING_KEY_MAX))
        || !name_ok(opts->issuer) || !name_ok(opts->audience) || opts->leeway < 0
        || opts->leeway > LEEWAY_MAX || opts->max_ttl < 0 || opts->max_ttl > TIME_MAX)
        return AUTHD_INVALID_ARGUMENT;

    if ((t = calloc(1, sizeof *t)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    pthread_mutex_init(&t->mu, NULL);
    t->iss_len = strlen(opts->issuer);
    memcpy(t->iss, opts->issuer, t->iss_len + 1);
    t->aud_len = strlen(opts->audience);
    memcpy(t->aud, opts->audience, t->aud_len + 1);
    t->leeway = opts->leeway;
    t->max_ttl = opts->max_ttl > 0 ? opts->max_ttl : MAX_TTL_DEF;
    if (opts->key != NULL) {
        authd_key_spec one = { .alg = "HS256",
            .material = opts->key,
            .material_len = opts->key_len,
            .state = AUTHD_KEY_ACTIVE };
        if ((rc = authd_tokens_set_keys(t, &one, 1, err, sizeof err)) != AUTHD_OK)
            goto out;
    }
    *out = t;
    t = NULL;
    rc = AUTHD_OK;
out:
    authd_tokens_destroy(t);
    return rc;
}

/* authd_tokens_destroy wipes and frees every key ever loaded. */
void authd_tokens_destroy(authd_tokens *t)
{
    if (t == NULL)
        return;
    authd_key *k = atomic_load(&t->keys);
    while (k != NULL) {
        authd_key *next = k->next;
        key_free(k);
        k = next;
    }
    pthread_mutex_destroy(&t->mu);
    sodium_memzero(t, sizeof *t);
    free(t);
}

static authd_key *key_by_kid(const authd_tokens *t, const char *kid, size_t len)
{
    for (authd_key *k = atomic_load_explicit(&((authd_tokens *)t)->keys, memory_order_acquire);
         k != NULL; k = k->next)
        if (strlen(k->kid) == len && memcmp(k->kid, kid, len) == 0)
            return k;
    return NULL;
}

/*
 * authd_tokens_set_keys loads what is new first, and only when every spec
 * checks out changes anything visible: new keys go on the list, then the
 * states are stored (keys that leave the set first, the new active key
 * last), then the active pointer. A Verify racing the reload sees each key
 * in its old or its new state; a token signed by the old active key is
 * good in both, because that key is retired, not gone.
 */
authd_code authd_tokens_set_keys(
    authd_tokens *t, const authd_key_spec *specs, size_t n, char *err, size_t errlen)
{
    authd_key *fresh[AUTHD_KEYS_MAX] = { NULL };
    authd_key *found[AUTHD_KEYS_MAX] = { NULL };
    size_t nfresh = 0, active = 0;
    authd_code rc = AUTHD_INVALID_ARGUMENT;

    if (t == NULL || (specs == NULL && n > 0))
        return AUTHD_INVALID_ARGUMENT;
    if (n > AUTHD_KEYS_MAX) {
        snprintf(err, errlen, "%zu keys: at most %d in a key set", n, AUTHD_KEYS_MAX);
        return AUTHD_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        const authd_key_spec *sp = &specs[i];
        const authd_token_alg *alg = alg_named(sp->alg);
        authd_key *k = NULL;
        uint8_t id[32];

        if (alg == NULL) {
            snprintf(err, errlen, "key %s: unknown algorithm %s", sp->kid ? sp->kid : "?",
                sp->alg ? sp->alg : "(none)");
            goto out;
        }
        if (sp->state < AUTHD_KEY_PUBLISHED || sp->state > AUTHD_KEY_RETIRED
            || (sp->state == AUTHD_KEY_RETIRED && !time_ok(sp->retired_at))) {
            snprintf(err, errlen, "key %s: bad state", sp->kid ? sp->kid : "?");
            goto out;
        }
        active += sp->state == AUTHD_KEY_ACTIVE;
        if (sp->material != NULL)
            crypto_hash_sha256(id, sp->material, sp->material_len);
        /* Without a kid, the material names it: load it to learn which. */
        if (sp->kid == NULL) {
            if ((rc = key_load(alg, sp->material, sp->material_len, &k)) != AUTHD_OK) {
                snprintf(err, errlen, "key: not a valid %s key", alg->name);
                goto out;
            }
            rc = AUTHD_INVALID_ARGUMENT;
            authd_key *old = key_by_kid(t, k->kid, strlen(k->kid));
            if (old != NULL) {
                key_free(k);
                k = old;
            } else {
                fresh[nfresh++] = k;
            }
        } else if ((k = key_by_kid(t, sp->kid, strlen(sp->kid))) == NULL) {
            if ((rc = key_load(alg, sp->material, sp->material_len, &k)) != AUTHD_OK) {
                snprintf(err, errlen, "key %s: not a valid %s key", sp->kid, alg->name);
                goto out;
            }
            rc = AUTHD_INVALID_ARGUMENT;
            fresh[nfresh++] = k;
            if (strcmp(sp->kid, k->kid) != 0) {
                snprintf(err, errlen, "key %s: its material derives kid %s", sp->kid, k->kid);
                goto out;
            }
        }
        /* A kid loaded before keeps its algorithm and its key for life. */
        if (k->alg != alg || sp->material == NULL
            || sodium_memcmp(k->material_id, id, sizeof id) != 0) {
            snprintf(err, errlen,
                "key %s: was loaded as another %s key; a kid never changes its key", k->kid,
                k->alg->name);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (found[j] == k || strcmp(found[j]->kid, k->kid) == 0) {
                snprintf(err, errlen, "key %s: listed twice", k->kid);
                goto out;
            }
        found[i] = k;
    }
    if (active != 1) {
        snprintf(err, errlen, "%zu active keys: exactly one must be active", active);
        goto out;
    }
    if (t->loaded + nfresh > AUTHD_KEYS_LIFE_MAX) {
        snprintf(err, errlen, "this process has loaded %zu keys, the most it will; restart authd",
            t->loaded);
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }

    /* Commit. New keys start GONE, so they verify nothing before their
     * state is stored below. */
    for (size_t i = 0; i < nfresh; i++) {
        fresh[i]->next = atomic_load_explicit(&t->keys, memory_order_relaxed);
        atomic_store_explicit(&t->keys, fresh[i], memory_order_release);
        fresh[i] = NULL;
        t->loaded++;
    }
    for (authd_key *k = atomic_load(&t->keys); k != NULL; k = k->next) {
        bool in = false;
        for (size_t i = 0; i < n && !in; i++)
            in = found[i] == k;
        if (!in)
            atomic_store(&k->state, AUTHD_KEY_GONE);
    }
    authd_key *act = NULL;
    for (size_t i = 0; i < n; i++) {
        if (specs[i].state == AUTHD_KEY_ACTIVE) {
            act = found[i];
            continue;
        }
        atomic_store(&found[i]->retired_at, specs[i].retired_at);
        atomic_store(&found[i]->state, (int)specs[i].state);
    }
    /* retired_at is left as it was: a reader that still sees this key
     * RETIRED must not pair that with a cleared time (it would refuse a
     * good token); it means nothing once ACTIVE. */
    atomic_store(&act->state, AUTHD_KEY_ACTIVE);
    atomic_store(&t->active, act);
    /* Last: a verified-token cache entry made under the old set stops
     * matching (token_cache.c). */
    atomic_fetch_add_explicit(&t->generation, 1, memory_order_release);
    rc = AUTHD_OK;
out:
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < nfresh; i++)
        key_free(fresh[i]);
    return rc;
}

const char *authd_tokens_kid(const authd_tokens *t)
{
    const authd_key *k = atomic_load(&((authd_tokens *)t)->active);
    return k != NULL ? k->kid : "";
}

/* authd_tokens_audience_is: every token authd accepts carries exactly this
 * aud (claims are checked byte-equal), so Verify's expected audience is
 * compared with it alone. */
bool authd_tokens_audience_is(const authd_tokens *t, const char *aud, size_t len)
{
    return len == t->aud_len && memcmp(aud, t->aud, len) == 0;
}

const char *authd_tokens_alg(const authd_tokens *t)
{
    const authd_key *k = atomic_load(&((authd_tokens *)t)->active);
    return k != NULL ? k->alg->name : "";
}

/* key_usable: k may verify a token at now (token.h: the key set). */
static bool key_usable(const authd_tokens *t, const authd_key *k, int64_t now)
{
    int st = atomic_load_explicit(&((authd_key *)k)->state, memory_order_acquire);

    if (st == AUTHD_KEY_PUBLISHED || st == AUTHD_KEY_ACTIVE)
        return true;
    if (st != AUTHD_KEY_RETIRED)
        return false;
    int64_t at = atomic_load_explicit(&((authd_key *)k)->retired_at, memory_order_relaxed);
    return now < at + t->max_ttl + t->leeway;
}

bool authd_tokens_key_usable(const authd_tokens *t, const authd_key *k, int64_t now)
{
    return key_usable(t, k, now);
}

authd_code authd_tokens_jwks(const authd_tokens *t, int64_t now, char *out, size_t cap)
{
    size_t pos = 0, n = 0;
    int w;

    if (t == NULL || out == NULL || cap < 12)
        return AUTHD_INVALID_ARGUMENT;
    memcpy(out, "{\"keys\":[", 9);
    pos = 9;
    for (const authd_key *k = atomic_load(&((authd_tokens *)t)->keys); k != NULL; k = k->next) {
        if (!k->alg->public_jwk || !key_usable(t, k, now))
            continue;
        w = snprintf(out + pos, cap - pos, "%s%s", n++ > 0 ? "," : "", k->u.es.jwk);
        if (w < 0 || (size_t)w >= cap - pos)
            return AUTHD_INVALID_ARGUMENT;
        pos += (size_t)w;
    }
    if (cap - pos < 3)
        return AUTHD_INVALID_ARGUMENT;
    memcpy(out + pos, "]}", 3);
    return AUTHD_OK;
}

authd_code authd_token_key_check(
    const char *alg, const uint8_t *material, size_t len, char kid[AUTHD_KID_MAX + 1])
{
    const authd_token_alg *a = alg_named(alg);
    authd_key *k = NULL;
    authd_code rc;

    if (a == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if ((rc = key_load(a, material, len, &k)) != AUTHD_OK)
        return rc;
    memcpy(kid, k->kid, sizeof k->kid);
    key_free(k);
    return AUTHD_OK;
}

authd_code authd_token_key_generate(
    const char *alg, uint8_t *out, size_t cap, size_t *len, char kid[AUTHD_KID_MAX + 1])
{
    const authd_token_alg *a = alg_named(alg);

    if (a == NULL || sodium_init() < 0)
        return AUTHD_INVALID_ARGUMENT;
    if (a->generate(out, cap, len) != 0)
        return AUTHD_INTERNAL;
    return authd_token_key_check(alg, out, *len, kid);
}

/* authd_token_issue builds the token in a stack buffer and copies it out
 * only when it fits, so a short buffer is left untouched. The buffer and
 * signature are wiped: a finished token is a bearer credential. */
authd_code authd_token_issue(
    const authd_tokens *t, const authd_claims *c, char *out, size_t out_size)
{
    char claims[CLAIMS_MAX];
    char buf[AUTHD_TOKEN_MAX + 1];
    char sub[ID_HEX_LEN + 1], sid[ID_HEX_LEN + 1];
    uint8_t sig[AUTHD_SIG_MAX];
    const authd_key *k;
    size_t pos;
    int n;
    authd_code rc;

    if (t == NULL || c == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if (!time_ok(c->iat) || !time_ok(c->nbf) || !time_ok(c->exp))
        return AUTHD_INVALID_ARGUMENT;
    if ((k = atomic_load_explicit(&((authd_tokens *)t)->active, memory_order_acquire)) == NULL)
        return AUTHD_FAILED_PRECONDITION;

    sodium_bin2hex(sub, sizeof sub, c->sub, sizeof c->sub);
    sodium_bin2hex(sid, sizeof sid, c->sid, sizeof c->sid);
    n = snprintf(claims, sizeof claims,
        "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"sid\":\"%s\",\"jti\":\"%s\","
        "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}",
        t->iss, t->aud, sub, sid, sid, (long long)c->iat, (long long)c->nbf, (long long)c->exp);

    memcpy(buf, k->header, k->header_len);
    pos = k->header_len;
    buf[pos++] = '.';
    if (n < 0 || (size_t)n >= sizeof claims
        || sodium_base64_ENCODED_LEN((size_t)n, B64_VARIANT) + 1
                + sodium_base64_ENCODED_LEN(AUTHD_SIG_MAX, B64_VARIANT)
            > sizeof buf - pos) {
        rc = AUTHD_INTERNAL; /* cannot happen with validated iss/aud */
        goto out;
    }
    sodium_bin2base64(buf + pos, sizeof buf - pos, (const uint8_t *)claims, (size_t)n, B64_VARIANT);
    pos += strlen(buf + pos);

    if (k->alg->sign(k, buf, pos, sig) != 0) {
        rc = AUTHD_INTERNAL;
        goto out;
    }
    buf[pos++] = '.';
    sodium_bin2base64(buf + pos, sizeof buf - pos, sig, k->alg->sig_len, B64_VARIANT);
    pos += strlen(buf + pos);

    if (pos + 1 > out_size) {
        rc = AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    memcpy(out, buf, pos + 1);
    rc = AUTHD_OK;
out:
    sodium_memzero(sig, sizeof sig);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* str_is: v is a JSON string of exactly the n bytes s. */
static bool str_is(const json_t *v, const char *s, size_t n)
{
    return json_is_string(v) && json_string_length(v) == n
        && memcmp(json_string_value(v), s, n) == 0;
}

/* check_header: the slow path for a header that is not byte-equal to one
 * of our keys' (other member order, whitespace, escapes). This JSON comes
 * from anyone, before the signature is checked, so it is fenced before
 * jansson sees it: small, one '{' and no '[' (nothing nests, so jansson's
 * recursive descent stays one level deep). Then it must be an object of
 * exactly alg, typ and kid: jku, x5u, jwk, x5c, x5t, crit, zip, b64 and
 * anything else are refused by that count, and duplicates by
 * JSON_REJECT_DUPLICATES. kid must name a key of the set, and alg must be
 * that key's algorithm, exactly: the key, never the token, says how the
 * signature is checked. Returns the key, or NULL. */
static const authd_key *check_header(const authd_tokens *t, const uint8_t *json, size_t len)
{
    const uint8_t *brace;
    const json_t *kid;
    const authd_key *k = NULL;
    json_t *o = NULL;

    if (len > HEADER_MAX || memchr(json, '[', len) != NULL
        || (brace = memchr(json, '{', len)) == NULL
        || memchr(brace + 1, '{', len - (size_t)(brace + 1 - json)) != NULL)
        goto out;
    o = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o) || json_object_size(o) != 3
        || !str_is(json_object_get(o, "typ"), "at+jwt", 6)
        || !json_is_string(kid = json_object_get(o, "kid"))
        || (k = key_by_kid(t, json_string_value(kid), json_string_length(kid))) == NULL
        || !str_is(json_object_get(o, "alg"), k->alg->name, strlen(k->alg->name)))
        k = NULL;
out:
    json_decref(o);
    return k;
}

static int nibble(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* hex_id: v is a string of exactly 32 lowercase hex digits; decoded into
 * out. Uppercase is refused so that each id has one spelling. */
static int hex_id(const json_t *v, uint8_t out[ID_HEX_LEN / 2])
{
    const char *s;

    if (!json_is_string(v) || json_string_length(v) != ID_HEX_LEN)
        return -1;
    s = json_string_value(v);
    for (size_t i = 0; i < ID_HEX_LEN / 2; i++) {
        int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* time_claim: v is a JSON integer (not a real, boolean or string) in
 * [0, 2^40]. */
static int time_claim(const json_t *v, int64_t *out)
{
    json_int_t i;

    if (!json_is_integer(v))
        return -1;
    i = json_integer_value(v);
    if (!time_ok((int64_t)i))
        return -1;
    *out = (int64_t)i;
    return 0;
}

/* check_claims runs only after the MAC has matched, so the JSON is ours;
 * it is still checked in full, because a bug or a stolen key should not
 * turn into a wrong identity. Unknown extra claims are ignored (RFC 7519),
 * which lets a later authd add one without breaking a rolling deploy. */
static int check_claims_json(
    const authd_tokens *t, const uint8_t *json, size_t len, authd_claims *c);

/* lit: the next bytes at *p are exactly s; advances past them. */
static bool lit(const uint8_t **p, const uint8_t *end, const char *s, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, s, n) != 0)
        return false;
    *p += n;
    return true;
}

/* hex_at decodes 32 lowercase hex digits at *p. */
static bool hex_at(const uint8_t **p, const uint8_t *end, uint8_t out[ID_HEX_LEN / 2])
{
    if ((size_t)(end - *p) < ID_HEX_LEN)
        return false;
    for (size_t i = 0; i < ID_HEX_LEN / 2; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            uint8_t ch = (*p)[2 * i + (size_t)k];
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            if (d < 0)
                return false;
            v = v << 4 | d;
        }
        out[i] = (uint8_t)v;
    }
    *p += ID_HEX_LEN;
    return true;
}

/* int_at reads a JSON integer in canonical form (no sign, no leading zero)
 * that time_ok accepts. */
static bool int_at(const uint8_t **p, const uint8_t *end, int64_t *out)
{
    const uint8_t *q = *p;
    int64_t v = 0;

    if (q == end || *q < '0' || *q > '9'
        || (*q == '0' && q + 1 < end && q[1] >= '0' && q[1] <= '9'))
        return false;
    while (q < end && *q >= '0' && *q <= '9') {
        if (q - *p >= 13) /* 2^40 has 13 digits */
            return false;
        v = v * 10 + (*q++ - '0');
    }
    if (!time_ok(v))
        return false;
    *out = v;
    *p = q;
    return true;
}

/*
 * claims_fast parses claims laid out exactly as authd_token_issue writes
 * them — the only layout a valid token of ours has — without building a
 * JSON tree. Anything else returns false and check_claims falls back to the
 * general jansson path, so the outcome never differs, only the cost.
 */
static bool claims_fast(const authd_tokens *t, const uint8_t *json, size_t len, authd_claims *c)
{
    const uint8_t *p = json, *end = json + len;
    uint8_t jti[ID_HEX_LEN / 2];
    authd_claims r;

    if (!lit(&p, end, "{\"iss\":\"", 8) || !lit(&p, end, t->iss, t->iss_len)
        || !lit(&p, end, "\",\"aud\":\"", 9) || !lit(&p, end, t->aud, t->aud_len)
        || !lit(&p, end, "\",\"sub\":\"", 9) || !hex_at(&p, end, r.sub)
        || !lit(&p, end, "\",\"sid\":\"", 9) || !hex_at(&p, end, r.sid)
        || !lit(&p, end, "\",\"jti\":\"", 9) || !hex_at(&p, end, jti)
        || !lit(&p, end, "\",\"iat\":", 8) || !int_at(&p, end, &r.iat)
        || !lit(&p, end, ",\"nbf\":", 7) || !int_at(&p, end, &r.nbf)
        || !lit(&p, end, ",\"exp\":", 7) || !int_at(&p, end, &r.exp) || !lit(&p, end, "}", 1)
        || p != end || memcmp(r.sid, jti, sizeof jti) != 0)
        return false;
    *c = r;
    return true;
}

static int check_claims(const authd_tokens *t, const uint8_t *json, size_t len, authd_claims *c)
{
    if (claims_fast(t, json, len, c))
        return 0;
    return check_claims_json(t, json, len, c);
}

static int check_claims_json(
    const authd_tokens *t, const uint8_t *json, size_t len, authd_claims *c)
{
    json_t *o;
    const json_t *sid, *jti;
    uint8_t jti_bin[ID_HEX_LEN / 2];
    int rc = -1;

    o = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o))
        goto out;
    sid = json_object_get(o, "sid");
    jti = json_object_get(o, "jti");
    if (!str_is(json_object_get(o, "iss"), t->iss, t->iss_len)
        || !str_is(json_object_get(o, "aud"), t->aud, t->aud_len)
        || hex_id(json_object_get(o, "sub"), c->sub) != 0 || hex_id(sid, c->sid) != 0
        || hex_id(jti, jti_bin) != 0 || memcmp(c->sid, jti_bin, sizeof jti_bin) != 0
        || time_claim(json_object_get(o, "iat"), &c->iat) != 0
        || time_claim(json_object_get(o, "nbf"), &c->nbf) != 0
        || time_claim(json_object_get(o, "exp"), &c->exp) != 0)
        goto out;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/* b64url_value maps the base64url alphabet to 0x40 | 0..63 and every other
 * byte to 0 (the array's zero initialisation): bit 0x40 marks a valid
 * character, so four characters are checked with one AND. */
#define B64V(v) (0x40 | (v))
static const uint8_t b64url_value[256] = {
    ['A'] = B64V(0),
    ['B'] = B64V(1),
    ['C'] = B64V(2),
    ['D'] = B64V(3),
    ['E'] = B64V(4),
    ['F'] = B64V(5),
    ['G'] = B64V(6),
    ['H'] = B64V(7),
    ['I'] = B64V(8),
    ['J'] = B64V(9),
    ['K'] = B64V(10),
    ['L'] = B64V(11),
    ['M'] = B64V(12),
    ['N'] = B64V(13),
    ['O'] = B64V(14),
    ['P'] = B64V(15),
    ['Q'] = B64V(16),
    ['R'] = B64V(17),
    ['S'] = B64V(18),
    ['T'] = B64V(19),
    ['U'] = B64V(20),
    ['V'] = B64V(21),
    ['W'] = B64V(22),
    ['X'] = B64V(23),
    ['Y'] = B64V(24),
    ['Z'] = B64V(25),
    ['a'] = B64V(26),
    ['b'] = B64V(27),
    ['c'] = B64V(28),
    ['d'] = B64V(29),
    ['e'] = B64V(30),
    ['f'] = B64V(31),
    ['g'] = B64V(32),
    ['h'] = B64V(33),
    ['i'] = B64V(34),
    ['j'] = B64V(35),
    ['k'] = B64V(36),
    ['l'] = B64V(37),
    ['m'] = B64V(38),
    ['n'] = B64V(39),
    ['o'] = B64V(40),
    ['p'] = B64V(41),
    ['q'] = B64V(42),
    ['r'] = B64V(43),
    ['s'] = B64V(44),
    ['t'] = B64V(45),
    ['u'] = B64V(46),
    ['v'] = B64V(47),
    ['w'] = B64V(48),
    ['x'] = B64V(49),
    ['y'] = B64V(50),
    ['z'] = B64V(51),
    ['0'] = B64V(52),
    ['1'] = B64V(53),
    ['2'] = B64V(54),
    ['3'] = B64V(55),
    ['4'] = B64V(56),
    ['5'] = B64V(57),
    ['6'] = B64V(58),
    ['7'] = B64V(59),
    ['8'] = B64V(60),
    ['9'] = B64V(61),
    ['-'] = B64V(62),
    ['_'] = B64V(63),
};

/*
 * b64_part decodes one base64url segment into bin[*used..cap), strictly:
 * the URL-safe alphabet only, no padding, no whitespace, no length that
 * leaves a lone character, and canonical trailing bits ("QR" is refused
 * where "QQ" is meant), so each token has exactly one spelling.
 *
 * Table-driven rather than libsodium's constant-time sodium_base642bin:
 * token bytes are not secret (the MAC comparison is what must be constant
 * time), and the constant-time decoder was the largest user-space cost of
 * a Verify in the profile.
 */
static int b64_part(const char *s, size_t n, uint8_t *bin, size_t cap, size_t *used,
    const uint8_t **part, size_t *part_len)
{
    size_t rem = n % 4, full = n - rem;
    size_t len = full / 4 * 3 + (rem == 0 ? 0 : rem - 1);
    uint8_t *out = bin + *used;
    const unsigned char *in = (const unsigned char *)s;
    size_t o = 0;

    if (rem == 1 || len > cap - *used)
        return -1;
    for (size_t i = 0; i < full; i += 4) {
        uint8_t a = b64url_value[in[i]], b = b64url_value[in[i + 1]];
        uint8_t c = b64url_value[in[i + 2]], d = b64url_value[in[i + 3]];
        if ((a & b & c & d & 0x40) == 0)
            return -1;
        uint32_t v = (uint32_t)(a & 63) << 18 | (uint32_t)(b & 63) << 12 | (uint32_t)(c & 63) << 6
            | (d & 63);
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    if (rem >= 2) {
        uint8_t a = b64url_value[in[full]], b = b64url_value[in[full + 1]];
        if ((a & b & 0x40) == 0)
            return -1;
        a &= 63;
        b &= 63;
        if (rem == 2) {
            if ((b & 0x0f) != 0) /* non-canonical trailing bits */
                return -1;
            out[o++] = (uint8_t)(a << 2 | b >> 4);
        } else {
            uint8_t c = b64url_value[in[full + 2]];
            if ((c & 0x40) == 0 || (c & 0x03) != 0)
                return -1;
            c &= 63;
            out[o++] = (uint8_t)(a << 2 | b >> 4);
            out[o++] = (uint8_t)(b << 4 | c >> 2);
        }
    }
    *part = out;
    *part_len = o;
    *used += o;
    return 0;
}

/* key_by_header finds the key whose own header segment the token's is,
 * byte for byte: the active key first (nearly every token), then the
 * others. NULL: not one of ours verbatim (check_header then decides). */
static const authd_key *key_by_header(const authd_tokens *t, const char *h, size_t n)
{
    const authd_key *a = atomic_load_explicit(&((authd_tokens *)t)->active, memory_order_acquire);

    if (a != NULL && n == a->header_len && memcmp(h, a->header, n) == 0)
        return a;
    for (const authd_key *k
         = atomic_load_explicit(&((authd_tokens *)t)->keys, memory_order_acquire);
         k != NULL; k = k->next)
        if (k != a && n == k->header_len && memcmp(h, k->header, n) == 0)
            return k;
    return NULL;
}

/* authd_token_verify: Verify's hot path. Everything decodes into one stack
 * buffer; the signature is checked by the key's own algorithm over the
 * token's own bytes; jansson is reached before the signature only for a
 * header that is not byte-equal to one of our keys', and then only behind
 * check_header's fence. The claims are parsed only after the signature has
 * matched. */
authd_token_result authd_token_verify_key(const authd_tokens *t, const char *token, size_t len,
    int64_t now, authd_claims *out, const authd_key **key)
{
    uint8_t bin[BIN_MAX];
    const char *dot1, *dot2;
    const uint8_t *hdr, *body, *sig;
    size_t hdr_len, body_len, sig_len, used = 0, hdr_b64, signed_len;
    const authd_key *k;
    authd_claims c;

    /* Size and shape: three parts, two dots, header and claims non-empty
     * (an empty signature is a bad signature, reported after the header). */
    if (t == NULL || token == NULL || len == 0 || len > AUTHD_TOKEN_MAX
        || (dot1 = memchr(token, '.', len)) == NULL
        || (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) == NULL
        || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL || dot1 == token
        || dot2 == dot1 + 1)
        return AUTHD_TOKEN_MALFORMED;
    hdr_b64 = (size_t)(dot1 - token);
    signed_len = (size_t)(dot2 - token);
    /* Header: one of our keys' own bytes (then there is nothing to decode),
     * or something that decodes and parses to a key of the set. */
    k = key_by_header(t, token, hdr_b64);
    bool ours = k != NULL;
    if ((!ours && b64_part(token, hdr_b64, bin, sizeof bin, &used, &hdr, &hdr_len) != 0)
        || b64_part(dot1 + 1, signed_len - hdr_b64 - 1, bin, sizeof bin, &used, &body, &body_len)
            != 0
        || b64_part(dot2 + 1, len - signed_len - 1, bin, sizeof bin, &used, &sig, &sig_len) != 0
        || (!ours && (k = check_header(t, hdr, hdr_len)) == NULL) || !key_usable(t, k, now))
        return AUTHD_TOKEN_MALFORMED;

    /* Signature: exactly the key's algorithm's length, checked by it. */
    if (sig_len != k->alg->sig_len || !k->alg->verify(k, token, signed_len, sig))
        return AUTHD_TOKEN_BAD_SIGNATURE;

    if (check_claims(t, body, body_len, &c) != 0)
        return AUTHD_TOKEN_INVALID_CLAIMS;

    authd_token_result r = authd_tokens_check_time(t, &c, now);
    if (r != AUTHD_TOKEN_OK)
        return r;
    if (out != NULL)
        *out = c;
    if (key != NULL)
        *key = k;
    return AUTHD_TOKEN_OK;
}

authd_token_result authd_token_verify(
    const authd_tokens *t, const char *token, size_t len, int64_t now, authd_claims *out)
{
    return authd_token_verify_key(t, token, len, now, out, NULL);
}

/* authd_tokens_check_time: exp and nbf against now with the leeway, the
 * last step of every verify, cached or not. exp, nbf <= 2^40 and leeway
 * <= a day, so nothing overflows whatever now is. */
authd_token_result authd_tokens_check_time(
    const authd_tokens *t, const authd_claims *c, int64_t now)
{
    if (now >= c->exp + t->leeway)
        return AUTHD_TOKEN_EXPIRED;
    if (c->nbf - t->leeway > now)
        return AUTHD_TOKEN_NOT_YET_VALID;
    return AUTHD_TOKEN_OK;
}

uint64_t authd_tokens_generation(const authd_tokens *t)
{
    return atomic_load_explicit(&((authd_tokens *)t)->generation, memory_order_acquire);
}

const char *authd_token_result_reason(authd_token_result r)
{
    switch (r) {
    case AUTHD_TOKEN_OK:
        return "";
    case AUTHD_TOKEN_MALFORMED:
        return "MALFORMED";
    case AUTHD_TOKEN_BAD_SIGNATURE:
        return "BAD_SIGNATURE";
    case AUTHD_TOKEN_INVALID_CLAIMS:
        return "INVALID_CLAIMS";
    case AUTHD_TOKEN_EXPIRED:
        return "EXPIRED";
    case AUTHD_TOKEN_NOT_YET_VALID:
        return "NOT_YET_VALID";
    }
    return "MALFORMED";
}

void authd_token_fingerprint(const char *token, size_t len, char out[AUTHD_FINGERPRINT_LEN + 1])
{
    uint8_t d[crypto_hash_sha256_BYTES];

    if (token == NULL)
        len = 0;
    crypto_hash_sha256(d, (const uint8_t *)(token != NULL ? token : ""), len);
    sodium_bin2hex(out, AUTHD_FINGERPRINT_LEN + 1, d, AUTHD_FINGERPRINT_LEN / 2);
}
