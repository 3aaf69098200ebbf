/*
 * it_keys.c — the rotating key set against the real binary: `authd keys`
 * on a --key-dir, ES256 tokens checked by an independent implementation
 * (PyJWT, Debian's python3-jwt) against the JWKS that GetJwks returns,
 * rotation (a token of the previous key still verifies after a new key is
 * activated, and the previous key leaves the JWKS once every token it
 * signed has expired), and algorithm confusion against the ES256 key
 * (HS256 MAC'd with its public key, alg none, a kid of the other
 * algorithm).
 */
#include "harness.h"

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOK_MAX 4096
#define PYTHON  "/usr/bin/python3"

/* PyJWT: the token's kid picks a key of the JWKS; ES256 only; iss and aud
 * checked. Prints "OK <alg> <kid>"; exits non-zero on any failure. */
static const char pyjwt_check[]
    = "import sys, json, jwt\n"
      "d = json.load(sys.stdin)\n"
      "h = jwt.get_unverified_header(d['token'])\n"
      "ks = jwt.PyJWKSet.from_json(d['jwks'])\n"
      "k = [k for k in ks.keys if k.key_id == h['kid']]\n"
      "if not k: sys.exit('kid not in the JWKS')\n"
      "c = jwt.decode(d['token'], k[0].key, algorithms=['ES256'], audience='authd', "
      "issuer='authd')\n"
      "print('OK', h['alg'], h['kid'], c['sub'])\n";

struct kserver {
    it_server *s;
    char kdir[400];
    const char *ttl;
};

/* keys_cmd runs `authd keys ARGS... --key-dir D --token-ttl T
 * --clock-leeway 0` and returns its exit status; out (may be NULL) gets
 * the first line of stdout. */
static int keys_cmd(const struct kserver *k, const char *a1, const char *a2, const char *a3,
    char *out, size_t cap, char *err, size_t errcap)
{
    const char *argv[16];
    size_t n = 0;
    it_proc p;

    argv[n++] = AUTHD_BIN;
    argv[n++] = "keys";
    argv[n++] = a1;
    if (a2 != NULL)
        argv[n++] = a2;
    if (a3 != NULL)
        argv[n++] = a3;
    argv[n++] = "--key-dir";
    argv[n++] = k->kdir;
    argv[n++] = "--token-ttl";
    argv[n++] = k->ttl;
    argv[n++] = "--clock-leeway";
    argv[n++] = "0";
    argv[n] = NULL;
    it_run(argv, NULL, NULL, &p);
    if (out != NULL) {
        snprintf(out, cap, "%s", p.out);
        out[strcspn(out, "\n")] = '\0';
    }
    if (err != NULL)
        snprintf(err, errcap, "%s", p.err);
    int status = p.status;
    it_proc_free(&p);
    return status;
}

static void add_key(const struct kserver *k, const char *alg, char kid[17])
{
    char out[128], err[1024];

    if (keys_cmd(k, "add", alg, NULL, out, sizeof out, err, sizeof err) != 0)
        fail_msg("authd keys add %s: %s", alg, err);
    assert_int_equal(strlen(out), 16);
    memcpy(kid, out, 17);
}

/* kserver_new: a server whose key set lives in DIR/keys, with the first
 * key (alg) added and activated before it starts. */
static void kserver_start(struct kserver *k, const char *alg, const char *ttl, char kid[17])
{
    static char ttl_buf[16];
    char err[1024];
    it_opts o = { .key_len = -1 };

    k->s = it_new(&o);
    k->ttl = ttl;
    snprintf(k->kdir, sizeof k->kdir, "%s/keys", k->s->dir);
    add_key(k, alg, kid);
    /* The first key of an empty set activates at once: nothing signs yet. */
    if (keys_cmd(k, "activate", kid, NULL, NULL, 0, err, sizeof err) != 0)
        fail_msg("authd keys activate: %s", err);
    snprintf(ttl_buf, sizeof ttl_buf, "%s", ttl);
    size_t e = 0;
    k->s->opts.extra[e++] = "--key-dir";
    k->s->opts.extra[e++] = k->kdir;
    k->s->opts.extra[e++] = "--token-ttl";
    k->s->opts.extra[e++] = ttl_buf;
    k->s->opts.extra[e++] = "--clock-leeway";
    k->s->opts.extra[e++] = "0";
    k->s->opts.extra[e] = NULL;
    it_launch(k->s);
}

/* token_header decodes a token's header into hdr (NUL-terminated). */
static void token_header(const char *tok, char *hdr, size_t cap)
{
    size_t n = it_b64url_decode(tok, strcspn(tok, "."), (uint8_t *)hdr, cap - 1);
    hdr[n] = '\0';
}

static bool token_has_kid(const char *tok, const char *alg, const char *kid)
{
    char hdr[256], want[128];

    token_header(tok, hdr, sizeof hdr);
    snprintf(want, sizeof want, "{\"alg\":\"%s\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", alg, kid);
    return strcmp(hdr, want) == 0;
}

/* jwks fetches the JWKS document (malloc'ed) through the client library. */
static char *jwks(authd_client *c)
{
    Authd__V1__GetJwksRequest req = AUTHD__V1__GET_JWKS_REQUEST__INIT;
    Authd__V1__GetJwksResponse *resp = NULL;
    authd_status st;

    assert_int_equal(authd_client_get_jwks(c, &req, &resp, &st), 0);
    IT_EXPECT(&st, 0, NULL);
    char *doc = strdup(resp->jwks);
    authd__v1__get_jwks_response__free_unpacked(resp, NULL);
    assert_non_null(doc);
    return doc;
}

/* jwks_has: the document is {"keys":[...]} and lists kid, as a P-256
 * ES256 signing key. */
static bool jwks_has(const char *doc, const char *kid)
{
    json_error_t e;
    json_t *o = json_loads(doc, JSON_REJECT_DUPLICATES, &e), *keys, *k;
    size_t i;
    bool found = false;

    assert_non_null(o);
    keys = json_object_get(o, "keys");
    assert_true(json_is_array(keys));
    json_array_foreach(keys, i, k)
    {
        assert_string_equal(json_string_value(json_object_get(k, "kty")), "EC");
        assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
        assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
        assert_null(json_object_get(k, "d")); /* never the private part */
        if (strcmp(json_string_value(json_object_get(k, "kid")), kid) == 0)
            found = true;
    }
    json_decref(o);
    return found;
}

/* pyjwt runs PyJWT on token against doc; true when it accepts. */
static bool pyjwt(const char *token, const char *doc)
{
    const char *argv[] = { PYTHON, "-c", pyjwt_check, NULL };
    json_t *in = json_pack("{s:s, s:s}", "token", token, "jwks", doc);
    char *text = json_dumps(in, 0);
    it_proc p;

    it_run(argv, NULL, text, &p);
    bool ok = p.status == 0 && strncmp(p.out, "OK ES256 ", 9) == 0;
    if (!ok)
        print_message("pyjwt: status %d: %s%s\n", p.status, p.out, p.err);
    it_proc_free(&p);
    free(text);
    json_decref(in);
    return ok;
}

/* jwks_pem turns the JWKS entry of kid into a PEM public key with
 * OpenSSL (x and y, base64url, into an uncompressed P-256 point): the
 * key as a verifier that knows nothing but the JWKS would build it.
 * malloc'ed, or NULL when kid is not there or does not decode. */
static char *jwks_pem(const char *doc, const char *kid)
{
    json_error_t e;
    json_t *o = json_loads(doc, 0, &e), *k;
    size_t i, xl = 0, yl = 0;
    unsigned char pt[65];
    char *pem = NULL;

    if (o == NULL)
        return NULL;
    json_array_foreach(json_object_get(o, "keys"), i, k)
    {
        const char *x = json_string_value(json_object_get(k, "x"));
        const char *y = json_string_value(json_object_get(k, "y"));
        if (strcmp(json_string_value(json_object_get(k, "kid")), kid) != 0 || x == NULL
            || y == NULL)
            continue;
        pt[0] = 0x04;
        if (sodium_base642bin(
                pt + 1, 32, x, strlen(x), NULL, &xl, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
                != 0
            || sodium_base642bin(pt + 33, 32, y, strlen(y), NULL, &yl, NULL,
                   sodium_base64_VARIANT_URLSAFE_NO_PADDING)
                != 0
            || xl != 32 || yl != 32)
            break;
        OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        EVP_PKEY *pk = NULL;
        BIO *bio = BIO_new(BIO_s_mem());
        if (b != NULL && ctx != NULL && bio != NULL
            && OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0)
            && OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt)
            && (params = OSSL_PARAM_BLD_to_param(b)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1
            && EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) == 1
            && PEM_write_bio_PUBKEY(bio, pk) == 1) {
            char *data = NULL;
            long n = BIO_get_mem_data(bio, &data);
            if (n > 0 && (pem = malloc((size_t)n + 1)) != NULL) {
                memcpy(pem, data, (size_t)n);
                pem[n] = '\0';
            }
        }
        BIO_free(bio);
        EVP_PKEY_free(pk);
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(b);
        break;
    }
    json_decref(o);
    return pem;
}

/* openssl_ok verifies token's ES256 signature with OpenSSL alone, with
 * the key the JWKS publishes for kid (no authd code on the path: the
 * JWS signing input, SHA-256, the raw r||s signature turned into DER).
 * The second independent check beside PyJWT; libjwt, which the issue also
 * names, cannot be one: libjwt 1.10 (Debian 12) refuses any token whose
 * typ is not "JWT", and authd's are "at+jwt" (RFC 9068). */
static bool openssl_ok(const char *token, const char *doc, const char *kid)
{
    char *pem = jwks_pem(doc, kid);
    const char *dot2 = strrchr(token, '.');
    unsigned char sig[64], *der = NULL;
    size_t sl = 0;
    bool ok = false;

    assert_non_null(pem);
    assert_non_null(dot2);
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pk = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    ECDSA_SIG *es = ECDSA_SIG_new();
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (pk != NULL && es != NULL && md != NULL
        && sodium_base642bin(sig, sizeof sig, dot2 + 1, strlen(dot2 + 1), NULL, &sl, NULL,
               sodium_base64_VARIANT_URLSAFE_NO_PADDING)
            == 0
        && sl == 64) {
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *sv = BN_bin2bn(sig + 32, 32, NULL);
        if (r != NULL && sv != NULL && ECDSA_SIG_set0(es, r, sv) == 1) {
            int dl = i2d_ECDSA_SIG(es, &der);
            ok = dl > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) == 1
                && EVP_DigestVerify(
                       md, der, (size_t)dl, (const unsigned char *)token, (size_t)(dot2 - token))
                    == 1;
        } else {
            BN_free(r);
            BN_free(sv);
        }
    }
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    ECDSA_SIG_free(es);
    EVP_PKEY_free(pk);
    BIO_free(bio);
    free(pem);
    return ok;
}

static void login(authd_client *c, const char *user, char *tok)
{
    char email[128];
    authd_status st;

    snprintf(email, sizeof email, "%s@example.com", user);
    if (it_register(c, user, email, "correct horse battery staple 9", &st, NULL) != 0)
        IT_EXPECT(&st, 6, NULL); /* ALREADY_EXISTS: a second login of the user */
    it_login_token(c, user, "correct horse battery staple 9", tok, TOK_MAX, NULL);
}

static int verify(authd_client *c, const char *tok, authd_status *st)
{
    return it_verify(c, tok, st, NULL);
}

/* An ES256 key set: authd signs ES256, GetJwks publishes the key, and
 * PyJWT, knowing nothing but the JWKS, accepts the token; a token changed
 * by one bit of its claims it refuses (the check can fail). */
static void keys_es256_pyjwt(void **state)
{
    (void)state;
    struct kserver k;
    char kid[17], tok[TOK_MAX];
    authd_status st;

    kserver_start(&k, "es256", "600", kid);
    authd_client *c = it_client(k.s);
    login(c, "es-alice", tok);
    assert_true(token_has_kid(tok, "ES256", kid));
    assert_int_equal(verify(c, tok, &st), 0);

    char *doc = jwks(c);
    assert_true(jwks_has(doc, kid));
    assert_true(pyjwt(tok, doc));
    assert_true(openssl_ok(tok, doc, kid));

    /* Tampered: one character of the claims changed. */
    char bad[TOK_MAX];
    snprintf(bad, sizeof bad, "%s", tok);
    char *p = strchr(bad, '.') + 5;
    *p = *p == 'A' ? 'B' : 'A';
    assert_false(pyjwt(bad, doc));
    assert_false(openssl_ok(bad, doc, kid));
    verify(c, bad, &st);
    IT_EXPECT(&st, 16, NULL); /* UNAUTHENTICATED */

    free(doc);
    authd_client_close(c);
    it_finish(k.s);
}

/* wait_login_kid logs in until the token carries kid (authd loads the new
 * set on SIGHUP, a moment after the signal). */
static void wait_login_kid(authd_client *c, const char *user, const char *kid, char *tok)
{
    uint64_t end = it_mono_ms() + IT_CALL_TIMEOUT_MS;

    for (;;) {
        login(c, user, tok);
        if (token_has_kid(tok, "ES256", kid))
            return;
        if (it_mono_ms() > end)
            fail_msg("no token signed by %s after the reload", kid);
        it_nap_ms(100);
    }
}

/* Rotation: publish K2 (in the JWKS, not signing), activate it (the
 * refusal without --force first), then K1's token still verifies, through
 * authd and PyJWT; once every token K1 signed has expired (its retire
 * time + --token-ttl), K1 leaves the JWKS and the next command drops its
 * file. */
static void keys_rotation(void **state)
{
    (void)state;
    struct kserver k;
    char k1[17], k2[17], t1[TOK_MAX], t2[TOK_MAX], err[1024], out[256];
    authd_status st;
    const int ttl = 12;

    kserver_start(&k, "es256", "12", k1);
    authd_client *c = it_client(k.s);
    login(c, "rot-alice", t1);
    assert_true(token_has_kid(t1, "ES256", k1));

    /* Publish K2: it shows in the JWKS after the reload, and does not sign. */
    add_key(&k, "es256", k2);
    assert_int_equal(kill(k.s->pid, SIGHUP), 0);
    uint64_t end = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    char *doc = NULL;
    for (;;) {
        free(doc);
        doc = jwks(c);
        if (jwks_has(doc, k2))
            break;
        if (it_mono_ms() > end)
            fail_msg("K2 not published after SIGHUP: %s", doc);
        it_nap_ms(100);
    }
    assert_true(jwks_has(doc, k1));
    /* A fresh K1 token (K2 is published, not signing), so that the checks
     * after the activation below run well inside its 12 s lifetime even
     * on a slow sanitizer build. */
    login(c, "rot-alice", t1);
    assert_true(token_has_kid(t1, "ES256", k1));

    /* Activation waits for JWKS caches unless forced. */
    assert_int_equal(keys_cmd(&k, "activate", k2, NULL, NULL, 0, err, sizeof err), 1);
    assert_non_null(strstr(err, "--key-publish-min-s"));
    if (keys_cmd(&k, "activate", k2, "--force", NULL, 0, err, sizeof err) != 0)
        fail_msg("activate --force: %s", err);
    int64_t retired = it_now();
    assert_int_equal(kill(k.s->pid, SIGHUP), 0);
    wait_login_kid(c, "rot-alice", k2, t2);

    /* Old and new tokens both verify, through authd and through PyJWT. */
    assert_int_equal(verify(c, t1, &st), 0);
    assert_int_equal(verify(c, t2, &st), 0);
    free(doc);
    doc = jwks(c);
    assert_true(jwks_has(doc, k1) && jwks_has(doc, k2));
    assert_true(pyjwt(t1, doc));
    assert_true(pyjwt(t2, doc));

    /* K1 retired: listed so, and still verifying. */
    assert_int_equal(keys_cmd(&k, "list", NULL, NULL, NULL, 0, NULL, 0), 0);
    {
        const char *argv[] = { AUTHD_BIN, "keys", "list", "--key-dir", k.kdir, "--token-ttl", "12",
            "--clock-leeway", "0", NULL };
        it_proc p;
        it_run(argv, NULL, NULL, &p);
        snprintf(out, sizeof out, "%s ES256 retired", k1);
        if (strstr(p.out, out) == NULL)
            fail_msg("list: %s", p.out);
        it_proc_free(&p);
    }

    /* Every token K1 signed has expired at retired + ttl (leeway 0): then
     * K1 leaves the JWKS, and its tokens are refused. */
    end = it_mono_ms() + (uint64_t)(ttl + 30) * 1000;
    for (;;) {
        free(doc);
        doc = jwks(c);
        if (!jwks_has(doc, k1))
            break;
        if (it_mono_ms() > end)
            fail_msg("K1 still in the JWKS long after it expired: %s", doc);
        it_nap_ms(200);
    }
    assert_true(it_now() >= retired + ttl - 1); /* not dropped early */
    assert_true(jwks_has(doc, k2));
    verify(c, t1, &st);
    IT_EXPECT(&st, 16, NULL);

    /* The next command drops the expired key from the set and its file. */
    char hk[17], path[512];
    add_key(&k, "hs256", hk);
    snprintf(path, sizeof path, "%s/%s.key", k.kdir, k1);
    assert_null(it_read_file(path, NULL));
    snprintf(path, sizeof path, "%s/%s.key", k.kdir, k2);
    char *still = it_read_file(path, NULL);
    assert_non_null(still);
    free(still);

    free(doc);
    authd_client_close(c);
    it_finish(k.s);
}

/* Algorithm confusion against an ES256 key: its kid with alg HS256 and a
 * MAC keyed with its public key (PEM, and the JWK), alg none, and an HS256
 * kid with alg ES256 are all refused as MALFORMED before any signature
 * check; the genuine token passes (control). */
static void keys_alg_confusion(void **state)
{
    (void)state;
    struct kserver k;
    char kid[17], hk[17], tok[TOK_MAX], forged[TOK_MAX], hdr[256], cl[1024], err[1024];
    authd_status st;

    kserver_start(&k, "es256", "600", kid);
    add_key(&k, "hs256", hk); /* published: verifies, so its kid is known */
    assert_int_equal(kill(k.s->pid, SIGHUP), 0);
    assert_true(it_log_wait(k.s, "\"event\":\"keys_loaded\"", IT_CALL_TIMEOUT_MS));
    authd_client *c = it_client(k.s);
    login(c, "conf-alice", tok);
    assert_int_equal(verify(c, tok, &st), 0);
    /* The real claims, so only the header and signature are wrong. */
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    size_t cn = it_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), (uint8_t *)cl, sizeof cl - 1);
    cl[cn] = '\0';

    /* The public key PEM, as a verifier would download it. */
    char keypath[512];
    snprintf(keypath, sizeof keypath, "%s/%s.key", k.kdir, kid);
    const char *argv[] = { OPENSSL_BIN, "pkey", "-in", keypath, "-pubout", NULL };
    it_proc p;
    it_run(argv, NULL, NULL, &p);
    assert_int_equal(p.status, 0);
    assert_non_null(strstr(p.out, "BEGIN PUBLIC KEY"));

    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid);
    it_forge(p.out, strlen(p.out), hdr, cl, forged, sizeof forged);
    verify(c, forged, &st);
    IT_EXPECT(&st, 16, "MALFORMED");
    it_proc_free(&p);

    char *doc = jwks(c);
    it_forge(doc, strlen(doc), hdr, cl, forged, sizeof forged);
    verify(c, forged, &st);
    IT_EXPECT(&st, 16, "MALFORMED");
    free(doc);

    /* alg none, the ES256 kid, no signature. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"none\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", kid);
    it_forge("k", 1, hdr, cl, forged, sizeof forged);
    *(strrchr(forged, '.') + 1) = '\0';
    verify(c, forged, &st);
    IT_EXPECT(&st, 16, "MALFORMED");

    /* ES256 named with the HS256 key's kid, the real ES256 signature. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", hk);
    char b64h[512];
    it_b64url(hdr, strlen(hdr), b64h, sizeof b64h);
    snprintf(forged, sizeof forged, "%s%s", b64h, d1);
    verify(c, forged, &st);
    IT_EXPECT(&st, 16, "MALFORMED");

    /* HS256 with the HS256 key's own kid but MAC'd with the public key. */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", hk);
    it_forge(kid, strlen(kid), hdr, cl, forged, sizeof forged);
    verify(c, forged, &st);
    IT_EXPECT(&st, 16, "BAD_SIGNATURE");

    (void)err;
    authd_client_close(c);
    it_finish(k.s);
}

/* A key directory that group or others may write is refused at start, as
 * the --signing-key file always was. */
static void keys_dir_permissions(void **state)
{
    (void)state;
    struct kserver k;
    char kid[17], path[512];
    it_opts o = { .key_len = -1 };

    k.s = it_new(&o);
    k.ttl = "600";
    snprintf(k.kdir, sizeof k.kdir, "%s/keys", k.s->dir);
    add_key(&k, "es256", kid);
    assert_int_equal(keys_cmd(&k, "activate", kid, NULL, NULL, 0, NULL, 0), 0);
    snprintf(path, sizeof path, "%s/%s.key", k.kdir, kid);
    assert_int_equal(chmod(path, 0640), 0);
    const char *argv[40];
    it_argv(k.s, NULL, argv, 32);
    size_t n = 0;
    while (argv[n] != NULL)
        n++;
    argv[n++] = "--key-dir";
    argv[n++] = k.kdir;
    argv[n] = NULL;
    it_proc p;
    it_run(argv, NULL, NULL, &p);
    assert_int_not_equal(p.status, 0);
    assert_non_null(strstr(p.err, "lets group or others access it"));
    it_proc_free(&p);
    it_free(k.s);
}

/* Moving a --signing-key deployment to a key set: the same secret
 * imported (`authd keys add hs256 --from FILE`) keeps its kid, so tokens
 * issued before the switch verify after it, and the next key can be
 * rotated in as usual. */
static void keys_import_signing_key(void **state)
{
    (void)state;
    struct kserver k;
    char tok[TOK_MAX], err[1024];
    authd_status st;

    k.s = it_start(NULL);
    k.ttl = "600";
    snprintf(k.kdir, sizeof k.kdir, "%s/keys", k.s->dir);
    authd_client *c = it_client(k.s);
    login(c, "mig-alice", tok);
    assert_true(strstr(tok, ".") != NULL);
    authd_client_close(c);
    it_stop(k.s);

    /* keys_cmd has no --from: run it by hand. */
    const char *argv[]
        = { AUTHD_BIN, "keys", "add", "hs256", "--from", k.s->key_path, "--key-dir", k.kdir, NULL };
    it_proc p;
    it_run(argv, NULL, NULL, &p);
    if (p.status != 0)
        fail_msg("add --from: %s", p.err);
    p.out[strcspn(p.out, "\n")] = '\0';
    assert_string_equal(p.out, k.s->kid); /* the kid authd always gave this key */
    it_proc_free(&p);
    /* The first key of an empty set: active at once. */
    if (keys_cmd(&k, "activate", k.s->kid, NULL, NULL, 0, err, sizeof err) != 0)
        fail_msg("activate: %s", err);

    size_t e = 0;
    while (k.s->opts.extra[e] != NULL)
        e++;
    k.s->opts.extra[e++] = "--key-dir";
    k.s->opts.extra[e++] = k.kdir;
    k.s->opts.extra[e] = NULL;
    it_launch(k.s);
    c = it_client(k.s);
    assert_int_equal(verify(c, tok, &st), 0); /* issued under --signing-key */
    char again[TOK_MAX];
    login(c, "mig-alice", again);
    assert_int_equal(strncmp(again, tok, strcspn(tok, ".")), 0); /* same header, same kid */
    authd_client_close(c);
    it_finish(k.s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(keys_es256_pyjwt, it_teardown),
        cmocka_unit_test_teardown(keys_alg_confusion, it_teardown),
        cmocka_unit_test_teardown(keys_dir_permissions, it_teardown),
        cmocka_unit_test_teardown(keys_import_signing_key, it_teardown),
        cmocka_unit_test_teardown(keys_rotation, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
