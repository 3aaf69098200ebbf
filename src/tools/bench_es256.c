/*
 * bench_es256.c — what an ES256 Verify costs authd's token code, against
 * a raw OpenSSL ECDSA P-256 verify on a pre-parsed key, in the same run.
 *
 *   authd-bench-es256 [--n N] [--rounds R]
 *
 * "authd" is authd_token_verify on an ES256 token of a one-key set: the
 * shape checks, the header compare, base64url, the r || s to DER step,
 * EVP_DigestVerifyInit + EVP_DigestVerify, the claims and the time checks.
 * "raw" is what a careful caller of OpenSSL writes with the key already
 * parsed: EVP_MD_CTX_new, EVP_DigestVerifyInit, EVP_DigestVerify over the
 * same signing input and a DER signature, EVP_MD_CTX_free. The two
 * alternate in rounds of N; each op's figure is the median round, in
 * thread CPU time (another process's load on the machine does not count).
 * Also printed for scale: HS256 through the same code.
 *
 * Target (issue 8): authd / raw <= 1.3.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "token.h"

#define NOW 1700000100

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static void die(const char *what)
{
    fprintf(stderr, "authd-bench-es256: %s\n", what);
    exit(1);
}

int main(int argc, char **argv)
{
    int n = 2000, rounds = 9;
    uint8_t pem[AUTHD_SIGNING_KEY_MAX + 1];
    size_t pem_len;
    char kid[AUTHD_KID_MAX + 1], err[256], tok[AUTHD_TOKEN_MAX], htok[AUTHD_TOKEN_MAX];
    authd_tokens *t = NULL, *h = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: authd-bench-es256 [--n N] [--rounds R]\n");
            return 2;
        }
    }
    if (n < 1 || rounds < 1 || rounds > 99 || sodium_init() < 0)
        die("bad arguments");

    /* authd: a one-key ES256 set, and a token it issued. */
    if (authd_token_key_generate("ES256", pem, sizeof pem, &pem_len, kid) != AUTHD_OK)
        die("cannot generate a key");
    authd_tokens_options o = { NULL, 0, "https://authd.example", "authd-internal", 30, 900 };
    authd_key_spec ks = { "ES256", kid, pem, pem_len, AUTHD_KEY_ACTIVE, 0 };
    if (authd_tokens_create(&o, &t) != AUTHD_OK
        || authd_tokens_set_keys(t, &ks, 1, err, sizeof err) != AUTHD_OK)
        die("cannot make the key set");
    authd_claims c = { .iat = NOW, .nbf = NOW, .exp = NOW + 900 };
    randombytes_buf(c.sub, sizeof c.sub);
    randombytes_buf(c.sid, sizeof c.sid);
    if (authd_token_issue(t, &c, tok, sizeof tok) != AUTHD_OK)
        die("cannot issue");
    const char hkey[] = "bench-hs256-key-0123456789abcdef0123456789";
    authd_tokens_options ho = { (const uint8_t *)hkey, sizeof hkey - 1, "https://authd.example",
        "authd-internal", 30, 900 };
    if (authd_tokens_create(&ho, &h) != AUTHD_OK || authd_token_issue(h, &c, htok, sizeof htok))
        die("cannot make the HS256 set");

    /* raw: the same key parsed once, the same signing input, the same
     * signature as DER. */
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (pkey == NULL)
        die("cannot parse the key");
    const char *dot2 = strrchr(tok, '.');
    size_t msg_len = (size_t)(dot2 - tok);
    uint8_t rs[64], der[80];
    size_t rs_len = 0;
    if (sodium_base642bin(rs, sizeof rs, dot2 + 1, strlen(dot2 + 1), NULL, &rs_len, NULL,
            sodium_base64_VARIANT_URLSAFE_NO_PADDING)
            != 0
        || rs_len != 64)
        die("bad signature");
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(rs, 32, NULL), BN_bin2bn(rs + 32, 32, NULL));
    unsigned char *dp = der;
    int der_len = i2d_ECDSA_SIG(es, &dp);
    ECDSA_SIG_free(es);

    double a[99], r[99], hs[99];
    unsigned bad = 0;
    size_t tlen = strlen(tok), hlen = strlen(htok);
    for (int k = 0; k < rounds; k++) {
        double t0 = cpu_s();
        for (int i = 0; i < n; i++)
            bad += authd_token_verify(t, tok, tlen, NOW, &c) != AUTHD_TOKEN_OK;
        double t1 = cpu_s();
        for (int i = 0; i < n; i++) {
            EVP_MD_CTX *ctx = EVP_MD_CTX_new();
            bad += EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1
                || EVP_DigestVerify(ctx, der, (size_t)der_len, (const uint8_t *)tok, msg_len) != 1;
            EVP_MD_CTX_free(ctx);
        }
        double t2 = cpu_s();
        for (int i = 0; i < n; i++)
            bad += authd_token_verify(h, htok, hlen, NOW, &c) != AUTHD_TOKEN_OK;
        double t3 = cpu_s();
        a[k] = (t1 - t0) / n * 1e6;
        r[k] = (t2 - t1) / n * 1e6;
        hs[k] = (t3 - t2) / n * 1e6;
    }
    if (bad != 0)
        die("a verify failed");
    double ma = median(a, rounds), mr = median(r, rounds), mh = median(hs, rounds);
    printf("bench=es256 n=%d rounds=%d authd_es256_verify_us=%.2f raw_evp_p256_verify_us=%.2f "
           "ratio=%.3f authd_hs256_verify_us=%.2f\n",
        n, rounds, ma, mr, ma / mr, mh);
    EVP_PKEY_free(pkey);
    authd_tokens_destroy(t);
    authd_tokens_destroy(h);
    sodium_memzero(pem, sizeof pem);
    return ma / mr <= 1.3 ? 0 : 3;
}
