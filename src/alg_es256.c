/*
 * alg_es256.c — ES256 (ECDSA on P-256 with SHA-256, RFC 7518 3.4) behind
 * the token-algorithm seam, through OpenSSL 3's EVP.
 *
 * The private key is parsed once, at load, into an EVP_PKEY that signs and
 * (its public half) verifies for the key's life; nothing re-reads PEM per
 * token (libjwt 1.10.2 does, and costs about 6x a raw verify for it). A
 * JWS carries the signature as r || s, 32 bytes each, where OpenSSL wants
 * a DER ECDSA-Sig-Value: verify writes the DER by hand into a stack buffer
 * (two INTEGERs in a SEQUENCE, under 128 bytes, so every length is one
 * byte), which spares the three allocations of BIGNUMs and an ECDSA_SIG.
 * OpenSSL itself refuses r or s of zero or not below the group order.
 */
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "token_alg.h"

#define COORD      32 /* bytes of r, s, x, y */
#define SIG_LEN    (2 * COORD)
#define DER_MAX    (2 + 2 * (2 + COORD + 1))
#define B64_COORD  44 /* base64url of 32 bytes (43) + NUL */
#define B64VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING

/* no_password: a PEM key with a passphrase is refused, never prompted for. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* coord writes the big-endian, zero-padded coordinate named param. */
static int coord(const EVP_PKEY *pkey, const char *param, uint8_t out[COORD])
{
    BIGNUM *bn = NULL;
    int rc = -1;

    if (EVP_PKEY_get_bn_param(pkey, param, &bn) == 1 && BN_bn2binpad(bn, out, COORD) == COORD)
        rc = 0;
    BN_free(bn);
    return rc;
}

/* es_load parses a PEM private key (PKCS#8 or SEC 1) that must be on
 * P-256, derives the kid from the public point (first 8 bytes of
 * SHA-256(0x04 || x || y), hex) and writes the key's public JWK. */
static int es_load(authd_key *k, const uint8_t *pem, size_t len)
{
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    char group[32];
    uint8_t point[1 + 2 * COORD], d[crypto_hash_sha256_BYTES];
    char x[B64_COORD], y[B64_COORD];
    int rc = -1;

    if (len == 0 || len > AUTHD_SIGNING_KEY_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
        goto out;
    if ((pkey = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL)) == NULL
        || !EVP_PKEY_is_a(pkey, "EC")
        || EVP_PKEY_get_utf8_string_param(
               pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL)
            != 1
        || strcmp(group, "prime256v1") != 0)
        goto out;
    point[0] = 0x04;
    if (coord(pkey, OSSL_PKEY_PARAM_EC_PUB_X, point + 1) != 0
        || coord(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, point + 1 + COORD) != 0)
        goto out;
    crypto_hash_sha256(d, point, sizeof point);
    sodium_bin2hex(k->kid, sizeof k->kid, d, 8);
    sodium_bin2base64(x, sizeof x, point + 1, COORD, B64VARIANT);
    sodium_bin2base64(y, sizeof y, point + 1 + COORD, COORD, B64VARIANT);
    int n = snprintf(k->u.es.jwk, sizeof k->u.es.jwk,
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\",\"kid\":\"%s\","
        "\"alg\":\"ES256\",\"use\":\"sig\"}",
        x, y, k->kid);
    if (n < 0 || (size_t)n >= sizeof k->u.es.jwk)
        goto out;
    k->u.es.pkey = pkey;
    pkey = NULL;
    rc = 0;
out:
    ERR_clear_error(); /* a refused file leaves nothing on this thread's queue */
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

static void es_unload(authd_key *k)
{
    EVP_PKEY_free(k->u.es.pkey);
    sodium_memzero(&k->u.es, sizeof k->u.es);
}

/* es_sign signs through EVP (DER out), then turns the DER into r || s. */
static int es_sign(const authd_key *k, const void *msg, size_t n, uint8_t *sig)
{
    EVP_MD_CTX *ctx = NULL;
    ECDSA_SIG *es = NULL;
    uint8_t der[DER_MAX + 8];
    size_t der_len = sizeof der;
    const unsigned char *p = der;
    const BIGNUM *r, *s;
    int rc = -1;

    if ((ctx = EVP_MD_CTX_new()) == NULL
        || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->u.es.pkey) != 1
        || EVP_DigestSign(ctx, der, &der_len, msg, n) != 1
        || (es = d2i_ECDSA_SIG(NULL, &p, (long)der_len)) == NULL)
        goto out;
    ECDSA_SIG_get0(es, &r, &s);
    if (BN_bn2binpad(r, sig, COORD) != COORD || BN_bn2binpad(s, sig + COORD, COORD) != COORD)
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* der_int appends one 32-byte big-endian unsigned integer as a DER
 * INTEGER: leading zero bytes dropped (one kept for zero), and a 0x00 put
 * back when the top bit is set, so it reads as positive. */
static size_t der_int(uint8_t *out, const uint8_t *v)
{
    size_t i = 0, o = 0;

    while (i < COORD - 1 && v[i] == 0)
        i++;
    bool pad = (v[i] & 0x80) != 0;
    out[o++] = 0x02;
    out[o++] = (uint8_t)(COORD - i + (pad ? 1 : 0));
    if (pad)
        out[o++] = 0x00;
    memcpy(out + o, v + i, COORD - i);
    return o + COORD - i;
}

/* es_verify: r || s to DER on the stack, then one EVP_DigestVerify. The
 * same code as a caller of OpenSSL with a pre-parsed key would write; the
 * ES256 bench (tools/bench_es256.c) holds it to that. */
static bool es_verify(const authd_key *k, const void *msg, size_t n, const uint8_t *sig)
{
    uint8_t der[DER_MAX];
    size_t len = 2;
    EVP_MD_CTX *ctx;
    bool ok = false;

    len += der_int(der + len, sig);
    len += der_int(der + len, sig + COORD);
    der[0] = 0x30;
    der[1] = (uint8_t)(len - 2);
    if ((ctx = EVP_MD_CTX_new()) == NULL)
        return false;
    if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->u.es.pkey) == 1)
        ok = EVP_DigestVerify(ctx, der, len, msg, n) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        ERR_clear_error(); /* a bad signature queues an error; keep the thread's queue empty */
    return ok;
}

/* es_generate writes a fresh P-256 private key as PKCS#8 PEM. */
static int es_generate(uint8_t *out, size_t cap, size_t *len)
{
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    char *data;
    long n;
    int rc = -1;

    if ((pkey = EVP_EC_gen("P-256")) == NULL || (bio = BIO_new(BIO_s_secmem())) == NULL
        || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1
        || (n = BIO_get_mem_data(bio, &data)) <= 0 || (size_t)n > cap)
        goto out;
    memcpy(out, data, (size_t)n);
    *len = (size_t)n;
    rc = 0;
out:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return rc;
}

const authd_token_alg authd_alg_es256 = {
    .name = "ES256",
    .sig_len = SIG_LEN,
    .load = es_load,
    .unload = es_unload,
    .sign = es_sign,
    .verify = es_verify,
    .generate = es_generate,
    .public_jwk = true,
};
