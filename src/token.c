/*
 * token.c — issuing and verifying authd's access tokens (JWS compact,
 * HS256, "typ":"at+jwt"): HMAC-SHA256 over OpenSSL's SHA-256 (which uses
 * the CPU's SHA extensions; libsodium's portable C SHA-256 was a quarter
 * of a Verify's instructions under callgrind), libsodium for constant-time
 * compares, hex and encoding, jansson for JSON. See token.h for the
 * contract and why not libjwt.
 *
 * The MAC uses OpenSSL's low-level SHA256_* calls, deprecated in 3.0 in
 * favour of EVP but present throughout 3.x: with them the keyed midstates
 * are plain structs copied on the stack. Through EVP, each MAC cost three
 * allocations (a context and two provider copies) and the provider
 * dispatch: 1.5 us against 0.5 us here, a fifth of what a Verify at 1,000
 * connections costs the server beyond the echo (docs/benchmarks.md). Both
 * use the same SHA-NI block function.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: see above */
#include "token.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/sha.h>
#include <sodium.h>

#define B64_VARIANT   sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define MAC_LEN       32 /* HMAC-SHA256 */
#define SHA256_BLOCK  64
#define NAME_LEN_MAX  128 /* issuer, audience */
#define TIME_MAX      ((int64_t)1 << 40) /* iat/nbf/exp upper bound */
#define LEEWAY_MAX    86400 /* a day of skew is already a config error */
#define HEADER_MAX    256 /* decoded header bytes worth parsing; ours is 56 */
#define HEADER_B64MAX 128 /* our own header segment (74 chars) + NUL */
#define CLAIMS_MAX    640 /* our claims JSON; 128-byte iss and aud need < 480 */
#define BIN_MAX       (AUTHD_TOKEN_MAX / 4 * 3) /* all three parts, decoded */
#define ID_HEX_LEN    32 /* sub, sid, jti */

struct authd_tokens {
    /* HMAC-SHA256 (RFC 2104) already keyed: SHA-256 states that have
     * absorbed key^ipad and key^opad. Key-equivalent; never written after
     * create (each MAC works on a copy, wiped after), wiped by destroy. */
    SHA256_CTX ipad, opad;
    char kid[AUTHD_KID_MAX + 1];
    char header[HEADER_B64MAX]; /* base64url of our exact header JSON */
    size_t header_len;
    char iss[NAME_LEN_MAX + 1];
    size_t iss_len;
    char aud[NAME_LEN_MAX + 1];
    size_t aud_len;
    int64_t leeway;
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

/* hmac_key absorbs the padded key into the inner and outer states (a key
 * longer than a block is hashed first, as RFC 2104 says). */
static void hmac_key(authd_tokens *t, const uint8_t *key, size_t key_len)
{
    uint8_t k[SHA256_BLOCK] = { 0 }, pad[SHA256_BLOCK];

    if (key_len > SHA256_BLOCK)
        crypto_hash_sha256(k, key, key_len);
    else
        memcpy(k, key, key_len);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    SHA256_Init(&t->ipad);
    SHA256_Update(&t->ipad, pad, sizeof pad);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&t->opad);
    SHA256_Update(&t->opad, pad, sizeof pad);
    sodium_memzero(k, sizeof k);
    sodium_memzero(pad, sizeof pad);
}

/* hmac computes HMAC-SHA256(key, p[0..n)) from the keyed states. Safe to
 * call from many threads at once: the keyed states are only copied. The
 * low-level SHA-256 calls cannot fail (they only return 1) and allocate
 * nothing. */
static void hmac(const authd_tokens *t, const void *p, size_t n, uint8_t out[MAC_LEN])
{
    SHA256_CTX c = t->ipad;
    uint8_t inner[MAC_LEN];

    SHA256_Update(&c, p, n);
    SHA256_Final(inner, &c);
    c = t->opad;
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
    sodium_memzero(&c, sizeof c);
    sodium_memzero(inner, sizeof inner);
}

/* authd_tokens_create keys the HMAC once (so each verify saves the two
 * compression rounds of key setup and never touches the raw key again),
 * derives the kid and encodes our own header segment, which verify
 * compares byte for byte before falling back to parsing. The raw key is
 * not kept. */
authd_code authd_tokens_create(const authd_tokens_options *opts, authd_tokens **out)
{
    authd_tokens *t = NULL;
    uint8_t digest[crypto_hash_sha256_BYTES];
    char hdr[96];
    int n;
    authd_code rc;

    if (opts == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if (opts->key == NULL || opts->key_len < AUTHD_SIGNING_KEY_MIN
        || opts->key_len > AUTHD_SIGNING_KEY_MAX || !name_ok(opts->issuer)
        || !name_ok(opts->audience) || opts->leeway < 0 || opts->leeway > LEEWAY_MAX)
        return AUTHD_INVALID_ARGUMENT;

    if ((t = calloc(1, sizeof *t)) == NULL) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    hmac_key(t, opts->key, opts->key_len);
    if (crypto_hash_sha256(digest, opts->key, opts->key_len) != 0) {
        rc = AUTHD_INTERNAL;
        goto out;
    }
    sodium_bin2hex(t->kid, sizeof t->kid, digest, 8);

    n = snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", t->kid);
    if (n < 0 || (size_t)n >= sizeof hdr
        || sodium_base64_ENCODED_LEN((size_t)n, B64_VARIANT) > sizeof t->header) {
        rc = AUTHD_INTERNAL;
        goto out;
    }
    sodium_bin2base64(t->header, sizeof t->header, (const uint8_t *)hdr, (size_t)n, B64_VARIANT);
    t->header_len = strlen(t->header);

    t->iss_len = strlen(opts->issuer);
    memcpy(t->iss, opts->issuer, t->iss_len + 1);
    t->aud_len = strlen(opts->audience);
    memcpy(t->aud, opts->audience, t->aud_len + 1);
    t->leeway = opts->leeway;

    *out = t;
    t = NULL;
    rc = AUTHD_OK;
out:
    sodium_memzero(digest, sizeof digest);
    authd_tokens_destroy(t);
    return rc;
}

/* authd_tokens_destroy wipes the keyed states with the rest. */
void authd_tokens_destroy(authd_tokens *t)
{
    if (t == NULL)
        return;
    sodium_memzero(t, sizeof *t);
    free(t);
}

const char *authd_tokens_kid(const authd_tokens *t)
{
    return t->kid;
}

/* authd_token_issue builds the token in a stack buffer and copies it out
 * only when it fits, so a short buffer is left untouched. The buffer and
 * MAC are wiped: a finished token is a bearer credential. */
authd_code authd_token_issue(
    const authd_tokens *t, const authd_claims *c, char *out, size_t out_size)
{
    char claims[CLAIMS_MAX];
    char buf[AUTHD_TOKEN_MAX + 1];
    char sub[ID_HEX_LEN + 1], sid[ID_HEX_LEN + 1];
    uint8_t mac[MAC_LEN];
    size_t pos;
    int n;
    authd_code rc;

    if (t == NULL || c == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if (!time_ok(c->iat) || !time_ok(c->nbf) || !time_ok(c->exp))
        return AUTHD_INVALID_ARGUMENT;

    sodium_bin2hex(sub, sizeof sub, c->sub, sizeof c->sub);
    sodium_bin2hex(sid, sizeof sid, c->sid, sizeof c->sid);
    n = snprintf(claims, sizeof claims,
        "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"%s\",\"sid\":\"%s\",\"jti\":\"%s\","
        "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}",
        t->iss, t->aud, sub, sid, sid, (long long)c->iat, (long long)c->nbf, (long long)c->exp);

    memcpy(buf, t->header, t->header_len);
    pos = t->header_len;
    buf[pos++] = '.';
    if (n < 0 || (size_t)n >= sizeof claims
        || sodium_base64_ENCODED_LEN((size_t)n, B64_VARIANT) + 1
                + sodium_base64_ENCODED_LEN(MAC_LEN, B64_VARIANT)
            > sizeof buf - pos) {
        rc = AUTHD_INTERNAL; /* cannot happen with validated iss/aud */
        goto out;
    }
    sodium_bin2base64(buf + pos, sizeof buf - pos, (const uint8_t *)claims, (size_t)n, B64_VARIANT);
    pos += strlen(buf + pos);

    hmac(t, buf, pos, mac);
    buf[pos++] = '.';
    sodium_bin2base64(buf + pos, sizeof buf - pos, mac, sizeof mac, B64_VARIANT);
    pos += strlen(buf + pos);

    if (pos + 1 > out_size) {
        rc = AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    memcpy(out, buf, pos + 1);
    rc = AUTHD_OK;
out:
    sodium_memzero(mac, sizeof mac);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* str_is: v is a JSON string of exactly the n bytes s. */
static bool str_is(const json_t *v, const char *s, size_t n)
{
    return json_is_string(v) && json_string_length(v) == n
        && memcmp(json_string_value(v), s, n) == 0;
}

/* check_header: the slow path for a header that is not byte-equal to ours
 * (other member order, whitespace, escapes). This JSON comes from anyone,
 * before the MAC is checked, so it is fenced before jansson sees it: small,
 * one '{' and no '[' (nothing nests, so jansson's recursive descent stays
 * one level deep). Then it must be an object of exactly alg, typ and kid:
 * jku, x5u, jwk, x5c, x5t, crit, zip, b64 and anything else are refused by
 * that count, and duplicates by JSON_REJECT_DUPLICATES. Returns 0 if ok. */
static int check_header(const authd_tokens *t, const uint8_t *json, size_t len)
{
    const uint8_t *brace;
    json_t *o = NULL;
    int rc = -1;

    if (len > HEADER_MAX || memchr(json, '[', len) != NULL
        || (brace = memchr(json, '{', len)) == NULL
        || memchr(brace + 1, '{', len - (size_t)(brace + 1 - json)) != NULL)
        goto out;
    o = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o) || json_object_size(o) != 3
        || !str_is(json_object_get(o, "alg"), "HS256", 5)
        || !str_is(json_object_get(o, "typ"), "at+jwt", 6)
        || !str_is(json_object_get(o, "kid"), t->kid, strlen(t->kid)))
        goto out;
    rc = 0;
out:
    json_decref(o);
    return rc;
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

/* authd_token_verify: Verify's hot path. Everything decodes into one stack
 * buffer; the MAC is computed from the pre-keyed state over the token's
 * own bytes; jansson is reached before the MAC only for a header that is
 * not byte-equal to ours, and then only behind check_header's fence. The
 * claims are parsed only after the MAC has matched. */
authd_token_result authd_token_verify(
    const authd_tokens *t, const char *token, size_t len, int64_t now, authd_claims *out)
{
    uint8_t bin[BIN_MAX];
    uint8_t mac[MAC_LEN];
    const char *dot1, *dot2;
    const uint8_t *hdr, *body, *sig;
    size_t hdr_len, body_len, sig_len, used = 0, hdr_b64, signed_len;
    authd_claims c;
    authd_token_result r;
    bool keyed = false;

    /* Size and shape: three parts, two dots, header and claims non-empty
     * (an empty signature is a bad signature, reported after the header). */
    if (t == NULL || token == NULL || len == 0 || len > AUTHD_TOKEN_MAX
        || (dot1 = memchr(token, '.', len)) == NULL
        || (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) == NULL
        || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL || dot1 == token
        || dot2 == dot1 + 1) {
        r = AUTHD_TOKEN_MALFORMED;
        goto out;
    }
    hdr_b64 = (size_t)(dot1 - token);
    signed_len = (size_t)(dot2 - token);
    /* Header: our own bytes (then there is nothing to decode), or something
     * that decodes and parses to the same. */
    bool ours = hdr_b64 == t->header_len && memcmp(token, t->header, hdr_b64) == 0;
    if ((!ours && b64_part(token, hdr_b64, bin, sizeof bin, &used, &hdr, &hdr_len) != 0)
        || b64_part(dot1 + 1, signed_len - hdr_b64 - 1, bin, sizeof bin, &used, &body, &body_len)
            != 0
        || b64_part(dot2 + 1, len - signed_len - 1, bin, sizeof bin, &used, &sig, &sig_len) != 0
        || (!ours && check_header(t, hdr, hdr_len) != 0)) {
        r = AUTHD_TOKEN_MALFORMED;
        goto out;
    }

    /* Signature: exactly 32 bytes, compared in constant time. */
    if (sig_len != MAC_LEN) {
        r = AUTHD_TOKEN_BAD_SIGNATURE;
        goto out;
    }
    keyed = true;
    hmac(t, token, signed_len, mac);
    if (crypto_verify_32(mac, sig) != 0) {
        r = AUTHD_TOKEN_BAD_SIGNATURE;
        goto out;
    }

    if (check_claims(t, body, body_len, &c) != 0) {
        r = AUTHD_TOKEN_INVALID_CLAIMS;
        goto out;
    }

    /* Time. exp, nbf <= 2^40 and leeway <= a day, so nothing overflows
     * whatever now is. */
    if (now >= c.exp + t->leeway) {
        r = AUTHD_TOKEN_EXPIRED;
        goto out;
    }
    if (c.nbf - t->leeway > now) {
        r = AUTHD_TOKEN_NOT_YET_VALID;
        goto out;
    }

    if (out != NULL)
        *out = c;
    r = AUTHD_TOKEN_OK;
out:
    if (keyed) /* the MAC is a valid signature for whatever the caller sent */
        sodium_memzero(mac, sizeof mac);
    return r;
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
