/*
 * it_tls.c — transport security: TLS is not optional, the server is
 * verified against the right CA, and with --tls-client-ca only clients
 * holding a certificate from that CA get in.
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
    authd_client_options o = { 0 };
    authd_status st;

    o.url = s->url;
    o.ca_file = IT_OTHER_CA;
    o.timeout_ms = SHORT_TIMEOUT_MS;
    int rc = attempt(&o, "other-ca", &st);
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, NULL);
    assert_int_equal(rc, AUTHD_UNAVAILABLE);

    /* control: the same options with the right CA work */
    o.ca_file = IT_CA;
    attempt(&o, "right-ca", &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
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

    /* no client certificate */
    int rc = attempt(&co, "no-cert", &st);
    if (rc == AUTHD_OK)
        fail_msg("a client without a certificate got through mTLS");
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, NULL);

    /* a client certificate from another CA */
    co.cert_file = IT_TLS_OTHER_DIR "/client.crt";
    co.key_file = IT_TLS_OTHER_DIR "/client.key";
    rc = attempt(&co, "other-cert", &st);
    if (rc == AUTHD_OK)
        fail_msg("a client certificate from another CA got through mTLS");
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, NULL);

    /* the dev client certificate */
    co.cert_file = IT_CLIENT_CERT;
    co.key_file = IT_CLIENT_KEY;
    attempt(&co, "dev-cert", &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* and the refused ones left nothing behind */
    authd_client *c = NULL;
    assert_int_equal(it_client_try(&co, &c, &st), AUTHD_OK);
    it_register(c, "no-cert", "no-cert@example.com", "a perfectly good password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
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
    };
    return cmocka_run_group_tests_name("integration.tls", tests, NULL, NULL);
}
