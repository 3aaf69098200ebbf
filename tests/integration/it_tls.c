/*
 * it_tls.c — transport security: TLS is not optional, the server is
 * verified against the right CA and the right name (a DNS name or an IP
 * address), and with --tls-client-ca only clients holding a certificate
 * from that CA get in.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHORT_TIMEOUT_MS 3000

/* attempt opens a client with o and, if that works, makes one Register
 * call; returns the first failure's code (st filled), or AUTHD_OK when the
 * call went through. */
static int attempt(const authd_client_options *o, const char *user, authd_status *st)
{
    authd_client *c = NULL;
    char email[96];

    if (it_client_try(o, &c, st) != AUTHD_OK)
        return st->code;
    snprintf(email, sizeof email, "%s@example.com", user);
    it_register(c, user, email, "a perfectly good password", st, NULL);
    authd_client_close(c);
    return st->code;
}

/*
 * refused_then_served: a client with the bad options is refused at the TLS
 * layer (UNAVAILABLE/TRANSPORT, and a message containing hint, which only
 * a handshake that took place can produce), and right after, in the same
 * test, a correctly configured client is served by the same server. A
 * refusal alone would also be seen with the server down or not accepting.
 */
static void refused_then_served(const authd_client_options *bad, const char *bad_user,
    const char *hint, const authd_client_options *good, const char *good_user)
{
    authd_status st;

    int rc = attempt(bad, bad_user, &st);
    if (rc == AUTHD_OK)
        fail_msg("%s: a misconfigured client got through", bad_user);
    print_message("%s: %s [%s]: %s\n", bad_user, authd_code_str(rc), st.reason, st.message);
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, AUTHD_REASON_TRANSPORT);
    if (strstr(st.message, hint) == NULL)
        fail_msg("%s: expected \"%s\" in: %s", bad_user, hint, st.message);

    attempt(good, good_user, &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
}

/* plain_url rewrites tls+tcp://HOST:PORT to tcp://HOST:PORT. */
static void plain_url(const char *url, char *out, size_t cap)
{
    assert_int_equal(strncmp(url, "tls+tcp://", 10), 0);
    snprintf(out, cap, "tcp://%s", url + 10);
}

static void tls_plaintext_client_is_refused(void **state)
{
    it_server *s = it_start(NULL);
    authd_client_options o = { 0 };
    authd_status st;
    char url[300];

    plain_url(s->url, url, sizeof url);
    o.url = url;
    o.allow_plaintext = true;
    o.timeout_ms = SHORT_TIMEOUT_MS;
    int rc = attempt(&o, "plain-client", &st);
    if (rc == AUTHD_OK)
        fail_msg("a plaintext client registered a user over the TLS port");
    print_message("plaintext client: %s [%s]: %s\n", authd_code_str(rc), st.reason, st.message);

    /* The user was not created, and TLS clients are still served. */
    authd_client *c = it_client(s);
    it_register(
        c, "plain-client", "plain-client@example.com", "a perfectly good password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

static void tls_client_trusting_another_ca_is_refused(void **state)
{
    it_server *s = it_start(NULL);
    authd_client_options bad = { 0 }, good;

    bad.url = s->url;
    bad.ca_file = IT_OTHER_CA;
    bad.timeout_ms = SHORT_TIMEOUT_MS;
    good = bad;
    good.ca_file = IT_CA; /* the same options with the right CA */
    refused_then_served(&bad, "other-ca", "server certificate was not accepted", &good, "right-ca");
    it_finish(s);
    (void)state;
}

/* A tcp:// listen URL is refused unless --insecure-plaintext is given. */
static void tls_plaintext_listen_needs_insecure_flag(void **state)
{
    it_server *s = it_new(NULL);
    const char *argv[64];
    it_proc p;

    it_argv(s, "tcp://127.0.0.1:0", argv, sizeof argv / sizeof argv[0]);
    it_run(argv, NULL, NULL, &p);
    assert_int_not_equal(p.status, 0);
    if (strstr(p.err, "plaintext") == NULL || strstr(p.err, "tls+tcp://") == NULL)
        fail_msg("stderr does not explain the refusal:\n%s", p.err);
    assert_int_not_equal(access(s->url_file, F_OK), 0); /* never listened */
    it_proc_free(&p);
    it_free(s);

    /* control: with the flag it starts, and a plaintext client works */
    it_opts o = { .listen = "tcp://127.0.0.1:0", .extra = { "--insecure-plaintext" } };
    s = it_start(&o);
    assert_int_equal(strncmp(s->url, "tcp://127.0.0.1:", 16), 0);
    authd_client_options co = { .url = s->url, .allow_plaintext = true };
    authd_status st;
    attempt(&co, "plain-ok", &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_finish(s);
    (void)state;
}

static void tls_mtls_requires_a_trusted_client_certificate(void **state)
{
    it_opts o = { .extra = { "--tls-client-ca", IT_CA } };
    it_server *s = it_start(&o);
    authd_client_options co = { 0 };
    authd_status st;

    co.url = s->url;
    co.ca_file = IT_CA;
    co.timeout_ms = SHORT_TIMEOUT_MS;
    authd_client_options other = co, dev = co;
    other.cert_file = IT_TLS_OTHER_DIR "/client.crt";
    other.key_file = IT_TLS_OTHER_DIR "/client.key";
    dev.cert_file = IT_CLIENT_CERT;
    dev.key_file = IT_CLIENT_KEY;

    /* no client certificate; then the dev client certificate is served */
    refused_then_served(&co, "no-cert", "alert certificate required", &dev, "dev-cert");
    /* a client certificate from another CA; then the dev one again */
    refused_then_served(&other, "other-cert", "alert unknown ca", &dev, "dev-cert-2");
    co = dev;

    /* and the refused ones left nothing behind */
    authd_client *c = NULL;
    assert_int_equal(it_client_try(&co, &c, &st), AUTHD_OK);
    it_register(c, "no-cert", "no-cert@example.com", "a perfectly good password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/*
 * make_cert issues a server certificate from the dev CA with the given
 * subjectAltName (CN=not-a-host-name) into dir/name.crt and dir/name.key.
 */
static void make_cert(const char *dir, const char *name, const char *san, char *crt, char *key)
{
    char csr[320], ext[320], text[256];
    it_proc p;

    snprintf(crt, 320, "%s/%s.crt", dir, name);
    snprintf(key, 320, "%s/%s.key", dir, name);
    snprintf(csr, sizeof csr, "%s/%s.csr", dir, name);
    snprintf(ext, sizeof ext, "%s/%s.ext", dir, name);
    snprintf(text, sizeof text,
        "subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
        san);
    FILE *f = fopen(ext, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    const char *req[]
        = { OPENSSL_BIN, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=not-a-host-name", NULL };
    it_run(req, NULL, NULL, &p);
    if (p.status != 0)
        fail_msg("openssl req: %s", p.err);
    it_proc_free(&p);
    const char *x509[]
        = { OPENSSL_BIN, "x509", "-req", "-in", csr, "-CA", IT_CA, "-CAkey", IT_TLS_DIR "/ca.key",
              "-set_serial", "4242", "-days", "30", "-extfile", ext, "-out", crt, NULL };
    it_run(x509, NULL, NULL, &p);
    if (p.status != 0)
        fail_msg("openssl x509: %s", p.err);
    it_proc_free(&p);
}

/* expect_name runs attempt() with server_name name and checks the outcome. */
static void expect_name(
    const it_server *s, const char *name, const char *user, int code, const char *why_in_message)
{
    authd_client_options o = { 0 };
    authd_status st;

    o.url = s->url;
    o.ca_file = IT_CA;
    o.server_name = name;
    o.timeout_ms = SHORT_TIMEOUT_MS;
    print_message("server_name %s\n", name != NULL ? name : "(default)");
    attempt(&o, user, &st);
    IT_EXPECT(&st, code, code == AUTHD_OK ? NULL : AUTHD_REASON_TRANSPORT);
    if (why_in_message != NULL && strstr(st.message, why_in_message) == NULL)
        fail_msg("server_name %s: expected \"%s\" in: %s", name, why_in_message, st.message);
}

/*
 * The certificate name check: a DNS name against the certificate's DNS
 * names, an IP address against its IP addresses. A certificate with only
 * IP:127.0.0.1 fails the loopback default (localhost) and passes with
 * server_name 127.0.0.1; the dev certificate (DNS:localhost,
 * IP:127.0.0.1, IP:::1) passes both ways.
 */
static void tls_server_name_is_a_dns_name_or_an_ip_address(void **state)
{
    char crt[320], key[320];
    it_server *s = it_new(NULL);

    make_cert(s->dir, "ip-only", "IP:127.0.0.1", crt, key);
    s->opts.extra[0] = "--tls-cert";
    s->opts.extra[1] = crt;
    s->opts.extra[2] = "--tls-key";
    s->opts.extra[3] = key;
    it_launch(s);
    expect_name(s, NULL, "ip-default", AUTHD_UNAVAILABLE, "hostname mismatch");
    expect_name(s, "localhost", "ip-localhost", AUTHD_UNAVAILABLE, "hostname mismatch");
    expect_name(s, "127.0.0.2", "ip-other", AUTHD_UNAVAILABLE, "IP address mismatch");
    expect_name(s, "::1", "ip-v6", AUTHD_UNAVAILABLE, "IP address mismatch");
    expect_name(s, "127.0.0.1", "ip-ok", AUTHD_OK, NULL);
    it_finish(s);

    s = it_start(NULL); /* the dev certificate */
    expect_name(s, NULL, "dev-default", AUTHD_OK, NULL);
    expect_name(s, "127.0.0.1", "dev-ip", AUTHD_OK, NULL);
    expect_name(s, "other.example", "dev-other", AUTHD_UNAVAILABLE, "hostname mismatch");
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(tls_plaintext_client_is_refused, it_teardown),
        cmocka_unit_test_teardown(tls_client_trusting_another_ca_is_refused, it_teardown),
        cmocka_unit_test_teardown(tls_plaintext_listen_needs_insecure_flag, it_teardown),
        cmocka_unit_test_teardown(tls_mtls_requires_a_trusted_client_certificate, it_teardown),
        cmocka_unit_test_teardown(tls_server_name_is_a_dns_name_or_an_ip_address, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.tls", tests, NULL, NULL);
}
