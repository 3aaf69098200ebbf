/*
 * it_mtls.c — mTLS and the caller policy (issue 7, items 10 and 13):
 * callers without a certificate or with one from another CA are refused at
 * the handshake; a certified caller outside the policy gets
 * PERMISSION_DENIED (CALLER_NOT_ALLOWED) for what it may not call and an
 * audit line; a front-end's ClientContext feeds the per-source limits
 * while another caller's is ignored; SIGHUP reloads the policy (a broken
 * file keeps the old one) and the CRL (a revoked certificate can no longer
 * connect, another still can); the identity is the URI SAN, else the DNS
 * SAN, else the CN.
 *
 * Client certificates with other names, and CRLs, are made here with the
 * openssl CLI from the dev CA the harness made (tls/). Every refusal is
 * followed in the same test by a correctly configured client that
 * succeeds, so no test can pass with the server down.
 */
#include "harness.h"

#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PW               "a perfectly good password"
#define WRONG            "not the password at all"
#define SHORT_TIMEOUT_MS 3000
#define RELOAD_WAIT_MS   15000

/* A client certificate made by make_cert: files in the test server's dir. */
struct cert {
    char crt[320];
    char key[320];
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* openssl runs the openssl CLI with argv (after "openssl"), asserting. */
static void openssl(const char *const *args)
{
    const char *argv[32] = { OPENSSL_BIN };
    size_t n = 1;
    it_proc p;

    while (args[n - 1] != NULL && n < 31) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    it_run(argv, NULL, NULL, &p);
    if (p.status != 0)
        fail_msg("openssl %s: %s", args[0], p.err);
    it_proc_free(&p);
}

/*
 * make_cert issues a client certificate from the dev CA into dir/name.crt
 * and .key: subject subj, and (when san is not NULL) that subjectAltName.
 * Serial numbers are random (tests run in parallel on one CA).
 */
static void make_cert(
    const char *dir, const char *name, const char *subj, const char *san, struct cert *out)
{
    char csr[320], ext[320], text[512], serial[40];
    uint8_t rnd[8];

    snprintf(out->crt, sizeof out->crt, "%s/%s.crt", dir, name);
    snprintf(out->key, sizeof out->key, "%s/%s.key", dir, name);
    snprintf(csr, sizeof csr, "%s/%s.csr", dir, name);
    snprintf(ext, sizeof ext, "%s/%s.ext", dir, name);
    snprintf(text, sizeof text,
        "%s%s\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
        san != NULL ? "subjectAltName=" : "", san != NULL ? san : "");
    write_file(ext, text);
    randombytes_buf(rnd, sizeof rnd);
    snprintf(serial, sizeof serial, "0x%02x%02x%02x%02x%02x%02x%02x", rnd[0] & 0x7f, rnd[1], rnd[2],
        rnd[3], rnd[4], rnd[5], rnd[6]);
    const char *req[] = { "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", out->key, "-out", csr, "-subj", subj, NULL };
    openssl(req);
    const char *x509[] = { "x509", "-req", "-in", csr, "-CA", IT_CA, "-CAkey", IT_TLS_DIR "/ca.key",
        "-set_serial", serial, "-days", "30", "-extfile", ext, "-out", out->crt, NULL };
    openssl(x509);
}

/* A tiny `openssl ca` setup on the dev CA, only to revoke and make CRLs. */
struct crlca {
    char cnf[320];
    char crl[320]; /* the CRL file authd is given */
};

static void crlca_init(const char *dir, struct crlca *ca)
{
    char index[320], num[320], text[1400];

    snprintf(ca->cnf, sizeof ca->cnf, "%s/ca.cnf", dir);
    snprintf(ca->crl, sizeof ca->crl, "%s/crl.pem", dir);
    snprintf(index, sizeof index, "%s/index.txt", dir);
    snprintf(num, sizeof num, "%s/crlnumber", dir);
    write_file(index, "");
    write_file(num, "1000\n");
    snprintf(text, sizeof text,
        "[ca]\ndefault_ca = dev\n[dev]\ndatabase = %s\ncrlnumber = %s\n"
        "certificate = %s\nprivate_key = %s\ndefault_md = sha256\ndefault_crl_days = 30\n",
        index, num, IT_CA, IT_TLS_DIR "/ca.key");
    write_file(ca->cnf, text);
}

/* crlca_gencrl writes ca->crl through a temp file and a rename, so the
 * server never reads half a file. */
static void crlca_gencrl(const struct crlca *ca)
{
    char tmp[340];
    snprintf(tmp, sizeof tmp, "%s.tmp", ca->crl);
    const char *gen[] = { "ca", "-config", ca->cnf, "-gencrl", "-out", tmp, NULL };
    openssl(gen);
    assert_int_equal(rename(tmp, ca->crl), 0);
}

static void crlca_revoke(const struct crlca *ca, const struct cert *c)
{
    const char *rev[] = { "ca", "-config", ca->cnf, "-revoke", c->crt, NULL };
    openssl(rev);
}

/* write_policy replaces the policy file atomically (temp + rename). */
static void write_policy(const char *path, const char *text)
{
    char tmp[340];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    write_file(tmp, text);
    assert_int_equal(rename(tmp, path), 0);
}

/* client_opts: a client of s with certificate c (NULL: none). */
static authd_client_options client_opts(const it_server *s, const struct cert *c)
{
    authd_client_options o = { 0 };
    o.url = s->url;
    o.ca_file = IT_CA;
    o.timeout_ms = SHORT_TIMEOUT_MS;
    if (c != NULL) {
        o.cert_file = c->crt;
        o.key_file = c->key;
    }
    return o;
}

/* open_as opens a client with certificate c; asserts. */
static authd_client *open_as(const it_server *s, const struct cert *c)
{
    authd_client_options o = client_opts(s, c);
    authd_client *cl = NULL;
    authd_status st;
    o.timeout_ms = IT_CALL_TIMEOUT_MS;
    if (it_client_try(&o, &cl, &st) != AUTHD_OK)
        fail_msg("cannot open a client with %s: %s [%s]: %s", c != NULL ? c->crt : "no cert",
            authd_code_str(st.code), st.reason, st.message);
    return cl;
}

/* try_register opens a fresh client with c and registers user (a new
 * connection every time); returns the first failure's code, or OK. */
static int try_register(
    const it_server *s, const struct cert *c, const char *user, authd_status *st)
{
    authd_client_options o = client_opts(s, c);
    authd_client *cl = NULL;
    char email[96];

    if (it_client_try(&o, &cl, st) != AUTHD_OK)
        return st->code;
    snprintf(email, sizeof email, "%s@example.com", user);
    it_register(cl, user, email, PW, st, NULL);
    authd_client_close(cl);
    return st->code;
}

/* try_verify opens a fresh client with c and verifies token. */
static int try_verify(const it_server *s, const struct cert *c, const char *token, authd_status *st)
{
    authd_client_options o = client_opts(s, c);
    authd_client *cl = NULL;

    if (it_client_try(&o, &cl, st) != AUTHD_OK)
        return st->code;
    it_verify(cl, token, st, NULL);
    authd_client_close(cl);
    return st->code;
}

/* start_policy starts authd with mTLS, the policy text (in its dir) and
 * the extra flags (NULL-terminated, may be NULL). policy_path receives
 * the file's path (it must outlive the server: it is in its argv). */
static it_server *start_policy(const char *text, char *policy_path, const char *const *flags)
{
    it_opts o = { .extra = { "--tls-client-ca", IT_CA, "--caller-policy", policy_path } };
    size_t n = 4;
    for (size_t i = 0; flags != NULL && flags[i] != NULL && n < IT_MAX_EXTRA; i++)
        o.extra[n++] = flags[i];
    it_server *s = it_new(&o);
    snprintf(policy_path, 320, "%s/policy.ini", s->dir);
    write_policy(policy_path, text);
    it_launch(s);
    return s;
}

/* ---- tests ------------------------------------------------------------------ */

/*
 * No certificate and a certificate from another CA are refused at the
 * handshake; with the same policy a certified, allowed caller registers at
 * once after.
 */
static void mtls_handshake_refusals(void **state)
{
    (void)state;
    static char path[320];
    it_server *s = start_policy("[authd-dev-client]\nallow = *\n", path, NULL);
    authd_status st;

    int rc = try_register(s, NULL, "nocert", &st);
    if (rc == AUTHD_OK)
        fail_msg("a client without a certificate registered");
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, NULL);
    struct cert other = { IT_TLS_OTHER_DIR "/client.crt", IT_TLS_OTHER_DIR "/client.key" };
    rc = try_register(s, &other, "othercert", &st);
    if (rc == AUTHD_OK)
        fail_msg("a certificate from another CA registered");
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, NULL);
    assert_true(it_log_wait(s, "\"event\":\"tls_handshake_failed\"", RELOAD_WAIT_MS));

    struct cert dev = { IT_CLIENT_CERT, IT_CLIENT_KEY };
    assert_int_equal(try_register(s, &dev, "devcert", &st), AUTHD_OK);
    it_finish(s);
}

/*
 * A certified caller outside the policy: Register is refused with
 * PERMISSION_DENIED / CALLER_NOT_ALLOWED and an audit line naming it,
 * while Verify (allowed to everyone) works; the gateway registers. The
 * identity is the URI SAN, not the CN: a certificate with CN=gateway but a
 * URI SAN of another service is that other service.
 */
static void mtls_policy_refuses_outside_caller(void **state)
{
    (void)state;
    static char path[320];
    /* spiffe://t/ and 116 x: 127 characters, the longest identity */
    char long_id[128], long_san[200], longer_san[200], text[400];
    snprintf(long_id, sizeof long_id, "spiffe://t/%0116d", 0);
    assert_int_equal(strlen(long_id), 127);
    snprintf(long_san, sizeof long_san, "URI:%s", long_id);
    snprintf(longer_san, sizeof longer_san, "URI:%s0", long_id);
    snprintf(text, sizeof text,
        "[spiffe://test/gateway]\nallow = *\nfrontend = yes\n[*]\nallow = Verify\n"
        "[%s]\nallow = Register\n",
        long_id);
    it_server *s = start_policy(text, path, NULL);
    struct cert gw, billing, fake, longc, longer;
    make_cert(s->dir, "long", "/CN=long", long_san, &longc);
    make_cert(s->dir, "longer", "/CN=longer", longer_san, &longer);
    make_cert(s->dir, "gw", "/CN=ignored-cn", "URI:spiffe://test/gateway,DNS:gw.internal", &gw);
    make_cert(s->dir, "billing", "/CN=billing", "DNS:billing.internal", &billing);
    make_cert(
        s->dir, "fake", "/CN=spiffe:\\/\\/test\\/gateway", "URI:spiffe://test/billing", &fake);
    authd_status st;

    /* The gateway registers and logs in. */
    authd_client *g = open_as(s, &gw);
    it_register(g, "alice", "alice@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    char tok[2048];
    it_login_token(g, "alice", PW, tok, sizeof tok, NULL);

    /* billing.internal may verify, not register. */
    authd_client *b = open_as(s, &billing);
    it_register(b, "mallory", "mallory@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
    it_login(b, "alice", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
    it_verify(b, tok, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    /* The CN says gateway, the URI SAN billing: it is billing. */
    assert_int_equal(try_register(s, &fake, "mallory2", &st), AUTHD_PERMISSION_DENIED);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
    assert_int_equal(try_verify(s, &fake, tok, &st), AUTHD_OK);
    /* A name longer than 127 characters is no identity (only [*] applies),
     * never cut to one: its first 127 characters are the long caller's. */
    assert_int_equal(try_register(s, &longc, "longname", &st), AUTHD_OK);
    assert_int_equal(try_register(s, &longer, "longername", &st), AUTHD_PERMISSION_DENIED);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
    assert_int_equal(try_verify(s, &longer, tok, &st), AUTHD_OK);

    /* One audit line per refusal, naming the caller. */
    assert_true(it_log_wait(s, "\"caller\":\"billing.internal\"", RELOAD_WAIT_MS));
    assert_true(it_log_wait(s, "\"caller\":\"spiffe://test/billing\"", RELOAD_WAIT_MS));
    size_t len = 0;
    char *log = it_read_file(s->log_path, &len);
    assert_non_null(log);
    int denied = 0;
    for (char *l = strtok(log, "\n"); l != NULL; l = strtok(NULL, "\n"))
        if (strstr(l, "\"audit\":\"caller_denied\"") != NULL) {
            assert_non_null(strstr(l, "\"code\":\"PERMISSION_DENIED\""));
            assert_non_null(strstr(l, "\"reason\":\"CALLER_NOT_ALLOWED\""));
            denied++;
        }
    free(log);
    assert_int_equal(denied, 4); /* billing x2, fake, longer */
    /* The refused register left nothing behind; the gateway still works. */
    it_register(g, "mallory", "mallory@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(b);
    authd_client_close(g);
    it_finish(s);
}

/*
 * Identity kinds cannot collide (red team: a CN-only certificate with
 * CN=spiffe://test/gateway, or a DNS SAN of that text, got the gateway's
 * rights). A URI SAN must be a URI (scheme ":"), a DNS SAN or CN a host
 * name; a name that is not valid for its kind is no identity (only [*]
 * applies), and a host name cannot name a URI's caller or the reverse.
 * Valid names of each kind still get their sections.
 */
static void mtls_identity_kinds_do_not_collide(void **state)
{
    (void)state;
    static char path[320];
    it_server *s = start_policy("[spiffe://test/gateway]\nallow = *\nfrontend = yes\n"
                                "[gw.internal]\nallow = *\n[admin-web]\nallow = Register\n"
                                "[*]\nallow = Verify\n",
        path, NULL);
    struct cert cn, dns, uri, admin, gw;
    make_cert(s->dir, "cn", "/CN=spiffe:\\/\\/test\\/gateway", NULL, &cn);
    make_cert(s->dir, "dns", "/CN=x", "DNS:spiffe://test/gateway", &dns);
    make_cert(s->dir, "uri", "/CN=gw.internal", "URI:gw.internal", &uri);
    make_cert(s->dir, "admin", "/CN=admin-web", NULL, &admin);
    make_cert(s->dir, "gw", "/CN=x", "URI:spiffe://test/gateway", &gw);
    authd_status st;

    const struct cert *bad[] = { &cn, &dns, &uri };
    static const char *const what[]
        = { "CN spiffe://test/gateway", "DNS SAN spiffe://test/gateway", "URI SAN gw.internal" };
    for (int i = 0; i < 3; i++) {
        char user[32];
        snprintf(user, sizeof user, "kind%d", i);
        if (try_register(s, bad[i], user, &st) != AUTHD_PERMISSION_DENIED)
            fail_msg("a certificate with %s: Register %s, not PERMISSION_DENIED", what[i],
                authd_code_str(st.code));
        IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
        /* [*] still applies: Verify gets past the policy to the token check. */
        assert_int_equal(try_verify(s, bad[i], "not-a-token", &st), AUTHD_UNAUTHENTICATED);
    }
    assert_int_equal(try_register(s, &admin, "adminweb", &st), AUTHD_OK);
    assert_int_equal(try_register(s, &gw, "gateway", &st), AUTHD_OK);
    it_finish(s);
}

/* login_ctx logs in over c with a ClientContext (ip); returns the code. */
static int login_ctx(
    authd_client *c, const char *login, const char *pw, const char *ip, authd_status *st)
{
    Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__ClientContext cc = AUTHD__V1__CLIENT_CONTEXT__INIT;
    Authd__V1__LoginResponse *resp = NULL;

    cc.ip_address = (char *)ip;
    cc.user_agent = "it_mtls";
    req.login = (char *)login;
    req.password = (char *)pw;
    req.client = &cc;
    (void)!authd_client_login(c, &req, &resp, st);
    if (resp != NULL)
        authd__v1__login_response__free_unpacked(resp, NULL);
    return st->code;
}

/*
 * Front-ends: the gateway's ClientContext is believed, so failed logins
 * are counted per end-user address: 198.51.100.7 runs into RATE_LIMITED
 * while 198.51.100.8, through the same connection, logs in. A caller that
 * is not a front-end passing the same address is not limited by it (its
 * context is ignored: the per-caller limit is off here), and its failures
 * do not count against that address either.
 */
static void mtls_frontend_context_believed(void **state)
{
    (void)state;
    static char path[320];
    static const char *const flags[]
        = { "--source-login-failures", "3", "--caller-login-failures", "0", NULL };
    it_server *s = start_policy("[gw.internal]\nallow = *\nfrontend = yes\n"
                                "[svc.internal]\nallow = Login Verify\n",
        path, flags);
    struct cert gw, svc;
    make_cert(s->dir, "gw", "/CN=gw", "DNS:gw.internal", &gw);
    make_cert(s->dir, "svc", "/CN=svc", "DNS:svc.internal", &svc);
    authd_status st;
    char name[32];

    authd_client *g = open_as(s, &gw);
    it_register(g, "bob", "bob@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* The non-front-end first: 8 failures "from" 198.51.100.7, none limited. */
    authd_client *v = open_as(s, &svc);
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "svcguess%d", i);
        assert_int_equal(login_ctx(v, name, WRONG, "198.51.100.7", &st), AUTHD_UNAUTHENTICATED);
    }

    /* The front-end: its end user 198.51.100.7 is limited after 3 (the
     * svc failures above did not count: else the first would bite). */
    int i, code = AUTHD_UNAUTHENTICATED;
    for (i = 0; i < 10 && code == AUTHD_UNAUTHENTICATED; i++) {
        snprintf(name, sizeof name, "gwguess%d", i);
        code = login_ctx(g, name, WRONG, "198.51.100.7", &st);
    }
    IT_EXPECT(&st, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED");
    assert_int_equal(i, 4); /* 3 failures, the 4th attempt refused */
    assert_int_equal(login_ctx(g, "bob", PW, "198.51.100.7", &st), AUTHD_RESOURCE_EXHAUSTED);
    /* Another end user through the same connection logs in. */
    assert_int_equal(login_ctx(g, "bob", PW, "198.51.100.8", &st), AUTHD_OK);
    /* The non-front-end's context is still ignored: it logs bob in. */
    assert_int_equal(login_ctx(v, "bob", PW, "198.51.100.7", &st), AUTHD_OK);
    /* The front-end's end user is in the audit line; the service's is not. */
    assert_true(it_log_wait(s, "\"client_ip\":\"198.51.100.7\"", RELOAD_WAIT_MS));
    authd_client_close(v);
    authd_client_close(g);
    it_finish(s);
}

/*
 * A front-end's end users cannot block each other through the front-end's
 * own limit (red team: the gateway kill switch). 4 end-user addresses
 * each fail 3 logins (their own limit, 3), emptying the gateway's
 * per-caller bucket (12); a fifth address still logs in with the right
 * password, and more end users may still fail. The gateway's exhausted
 * bucket is logged as a warning that refused nothing.
 */
static void mtls_frontend_end_users_cannot_block_others(void **state)
{
    (void)state;
    static char path[320];
    static const char *const flags[]
        = { "--source-login-failures", "3", "--caller-login-failures", "12", NULL };
    it_server *s = start_policy("[gw.internal]\nallow = *\nfrontend = yes\n", path, flags);
    struct cert gw;
    make_cert(s->dir, "gw", "/CN=gw", "DNS:gw.internal", &gw);
    authd_status st;
    char name[32], ip[32];

    authd_client *g = open_as(s, &gw);
    it_register(g, "bob", "bob@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    for (int a = 0; a < 5; a++) {
        snprintf(ip, sizeof ip, "203.0.113.%d", 10 + a);
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "guess%d-%d", a, i);
            assert_int_equal(login_ctx(g, name, WRONG, ip, &st), AUTHD_UNAUTHENTICATED);
        }
        /* each address's own limit still bites */
        assert_int_equal(login_ctx(g, "bob", PW, ip, &st), AUTHD_RESOURCE_EXHAUSTED);
        IT_EXPECT(&st, AUTHD_RESOURCE_EXHAUSTED, "RATE_LIMITED");
    }
    assert_int_equal(login_ctx(g, "bob", PW, "198.51.100.99", &st), AUTHD_OK);
    assert_true(it_log_wait(s,
        "\"limit\":\"caller_login_failures\",\"caller\":\"gw.internal\",\"refused\":false",
        RELOAD_WAIT_MS));
    authd_client_close(g);
    it_finish(s);
}

/*
 * The failure-line gate follows the end user a front-end names, not the
 * front-end's address (red team): 20 failures of one end user fill its
 * gate (burst 10), and another end user's failed login through the same
 * connection is still written.
 */
static void mtls_log_gate_per_end_user(void **state)
{
    (void)state;
    static char path[320];
    static const char *const flags[] = { "--source-login-failures", "0", "--caller-login-failures",
        "0", "--log-failure-rate", "1", "--log-failure-burst", "10", NULL };
    it_server *s = start_policy("[gw.internal]\nallow = *\nfrontend = yes\n", path, flags);
    struct cert gw;
    make_cert(s->dir, "gw", "/CN=gw", "DNS:gw.internal", &gw);
    authd_status st;
    char name[32];

    authd_client *g = open_as(s, &gw);
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "noise%d", i);
        assert_int_equal(login_ctx(g, name, WRONG, "203.0.113.66", &st), AUTHD_UNAUTHENTICATED);
    }
    assert_int_equal(
        login_ctx(g, "victim-account", WRONG, "198.51.100.5", &st), AUTHD_UNAUTHENTICATED);
    if (!it_log_wait(s, "\"client_ip\":\"198.51.100.5\"", RELOAD_WAIT_MS))
        fail_msg("another end user's failed login was held back by the first one's gate");
    /* the noisy end user's own lines were held back (the gate works) */
    json_t *lines = it_log_json(s);
    size_t i, noisy = 0;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *ip = json_string_value(json_object_get(l, "client_ip"));
        if (ip != NULL && strcmp(ip, "203.0.113.66") == 0)
            noisy++;
    }
    json_decref(lines);
    assert_true(noisy >= 1 && noisy < 20);
    authd_client_close(g);
    it_finish(s);
}

/*
 * A front-end's user agent of the longest allowed size (256 bytes, the end
 * user's to choose) must not push the failed login's cause out of its
 * audit line: the per-call fields hold 320 bytes, and the cause went in
 * after the client address and the user agent, so it was dropped.
 */
static void mtls_long_user_agent_keeps_cause(void **state)
{
    (void)state;
    static char path[320];
    it_server *s = start_policy("[gw.internal]\nallow = *\nfrontend = yes\n", path, NULL);
    struct cert gw;
    make_cert(s->dir, "gw", "/CN=gw", "DNS:gw.internal", &gw);
    authd_status st;
    static char ua[257];
    Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__ClientContext cc = AUTHD__V1__CLIENT_CONTEXT__INIT;
    Authd__V1__LoginResponse *resp = NULL;

    memset(ua, 'A', 256);
    cc.ip_address = "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe";
    cc.user_agent = ua;
    req.login = "nobody-by-that-name";
    req.password = (char *)WRONG;
    req.client = &cc;
    authd_client *g = open_as(s, &gw);
    (void)!authd_client_login(g, &req, &resp, &st);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    assert_null(resp);
    assert_true(it_log_wait(s, "\"audit\":\"login_failure\"", RELOAD_WAIT_MS));
    if (!it_log_wait(s, "\"cause\":\"unknown_user\"", 2000))
        fail_msg("the failed login's audit line lost its cause to a long user agent");
    authd_client_close(g);
    it_finish(s);
}

/*
 * SIGHUP reloads the policy: svc may not Register, the file is changed to
 * allow it, SIGHUP, and Register works (polled with a deadline). A broken
 * file on the next SIGHUP is refused with its line in the log, and the
 * policy in force stays (svc still registers).
 */
static void mtls_sighup_reloads_policy(void **state)
{
    (void)state;
    static char path[320];
    it_server *s = start_policy("[svc.internal]\nallow = Verify\n", path, NULL);
    struct cert svc;
    make_cert(s->dir, "svc", "/CN=svc", "DNS:svc.internal", &svc);
    authd_status st;
    char user[32];

    assert_int_equal(try_register(s, &svc, "before", &st), AUTHD_PERMISSION_DENIED);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");

    write_policy(path, "[svc.internal]\nallow = Verify Register\n");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    uint64_t end = it_mono_ms() + RELOAD_WAIT_MS;
    int n = 0, code;
    do {
        snprintf(user, sizeof user, "after%d", n++);
        code = try_register(s, &svc, user, &st);
        if (code == AUTHD_OK)
            break;
        IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
        it_nap_ms(50);
    } while (it_mono_ms() < end);
    assert_int_equal(code, AUTHD_OK);
    assert_true(it_log_wait(s, "\"event\":\"reloaded\"", RELOAD_WAIT_MS));

    /* A broken file: refused, named with its line; the old policy stays. */
    write_policy(path, "[svc.internal]\nallow = Verify Regsiter\n");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, "\"event\":\"reload_failed\"", RELOAD_WAIT_MS));
    assert_true(it_log_wait(s, "line 2: unknown method 'Regsiter'", RELOAD_WAIT_MS));
    assert_int_equal(try_register(s, &svc, "stillok", &st), AUTHD_OK);
    /* And the same caller is still refused what it never had. */
    write_policy(path, "[svc.internal]\nallow = Verify\n");
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    end = it_mono_ms() + RELOAD_WAIT_MS;
    do {
        snprintf(user, sizeof user, "again%d", n++);
        code = try_register(s, &svc, user, &st);
        if (code != AUTHD_OK)
            break;
        it_nap_ms(50);
    } while (it_mono_ms() < end);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
    struct cert dev = { IT_CLIENT_CERT, IT_CLIENT_KEY };
    authd_client *cl = open_as(s, &dev);
    it_register(cl, "devuser", "devuser@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_PERMISSION_DENIED, "CALLER_NOT_ALLOWED");
    authd_client_close(cl);
    it_finish(s);
}

/*
 * CRL: two certificates work; one is revoked, the CRL rewritten, SIGHUP:
 * a new connection with it fails the handshake (logged with the cause)
 * while the other still connects. An established connection of the
 * revoked caller is closed; the other's stays.
 */
static void mtls_crl_revokes_on_sighup(void **state)
{
    (void)state;
    it_opts o = { .extra = { "--tls-client-ca", IT_CA, "--tls-crl", NULL } };
    it_server *s = it_new(&o);
    static struct crlca ca;
    struct cert victim, keeper;
    crlca_init(s->dir, &ca);
    crlca_gencrl(&ca);
    s->opts.extra[3] = ca.crl;
    make_cert(s->dir, "victim", "/CN=victim", "DNS:victim.internal", &victim);
    make_cert(s->dir, "keeper", "/CN=keeper", "DNS:keeper.internal", &keeper);
    it_launch(s);
    authd_status st;
    char user[32];

    assert_int_equal(try_register(s, &victim, "victim0", &st), AUTHD_OK);
    assert_int_equal(try_register(s, &keeper, "keeper0", &st), AUTHD_OK);
    authd_client *held = open_as(s, &victim);
    it_register(held, "held0", "held0@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client *kept = open_as(s, &keeper);
    it_register(kept, "kept0", "kept0@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    crlca_revoke(&ca, &victim);
    crlca_gencrl(&ca);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    uint64_t end = it_mono_ms() + RELOAD_WAIT_MS;
    int n = 0, code;
    do {
        snprintf(user, sizeof user, "victim%d", ++n);
        code = try_register(s, &victim, user, &st);
        if (code != AUTHD_OK)
            break;
        it_nap_ms(50);
    } while (it_mono_ms() < end);
    if (code == AUTHD_OK)
        fail_msg("the revoked certificate still connects after SIGHUP");
    IT_EXPECT(&st, AUTHD_UNAVAILABLE, NULL);
    assert_true(it_log_wait(s, "\"verify\":\"certificate revoked\"", RELOAD_WAIT_MS));
    assert_int_equal(try_register(s, &keeper, "keeper1", &st), AUTHD_OK);
    /* The revoked caller's connection made before the reload is closed
     * (the loops re-check established clients after a reload), and its
     * client cannot get back in; the keeper's stays open and works. */
    assert_true(it_log_wait(s, "\"event\":\"tls_client_revalidation_failed\"", RELOAD_WAIT_MS));
    assert_true(it_log_wait(s, "\"caller\":\"victim.internal\"", RELOAD_WAIT_MS));
    end = it_mono_ms() + RELOAD_WAIT_MS;
    do {
        snprintf(user, sizeof user, "held%d", ++n);
        char email[64];
        snprintf(email, sizeof email, "%s@example.com", user);
        it_register(held, user, email, PW, &st, NULL);
        if (st.code != AUTHD_OK)
            break;
        it_nap_ms(50);
    } while (it_mono_ms() < end);
    if (st.code == AUTHD_OK)
        fail_msg("the revoked caller's open connection still works after SIGHUP");
    authd_client_close(held);
    it_register(kept, "kept1", "kept1@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(kept);

    /* A CRL signed by another CA is refused on reload; the old one stays. */
    const char *gen[] = { "ca", "-config", ca.cnf, "-gencrl", "-keyfile",
        IT_TLS_OTHER_DIR "/ca.key", "-cert", IT_TLS_OTHER_DIR "/ca.crt", "-out", ca.crl, NULL };
    openssl(gen);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, "is not signed by a CA of the client CA file", RELOAD_WAIT_MS));
    assert_int_not_equal(try_register(s, &victim, "victimafter", &st), AUTHD_OK);
    assert_int_equal(try_register(s, &keeper, "keeper2", &st), AUTHD_OK);
    it_finish(s);
}

/*
 * Start-up: --caller-policy and --tls-crl without --tls-client-ca, and a
 * broken policy file, are refused with a clear message; without
 * --tls-client-ca authd warns that anyone who reaches the port can call
 * it; with mTLS it does not.
 */
static void mtls_startup_checks(void **state)
{
    (void)state;
    const char *argv[64];
    it_proc p;

    it_server *s = it_new(NULL);
    char policy[340];
    snprintf(policy, sizeof policy, "%s/policy.ini", s->dir);
    write_policy(policy, "[gw]\nallow = Verify\n");

    s->opts.extra[0] = "--caller-policy";
    s->opts.extra[1] = policy;
    it_argv(s, NULL, argv, 64);
    it_run(argv, NULL, NULL, &p);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "--caller-policy needs --tls-client-ca"));
    it_proc_free(&p);

    s->opts.extra[0] = "--tls-crl";
    it_argv(s, NULL, argv, 64);
    it_run(argv, NULL, NULL, &p);
    assert_int_equal(p.status, 2);
    assert_non_null(strstr(p.err, "--tls-crl needs --tls-client-ca"));
    it_proc_free(&p);

    write_policy(policy, "[gw]\nallow = Verify\nfrontend = perhaps\n");
    s->opts.extra[0] = "--tls-client-ca";
    s->opts.extra[1] = IT_CA;
    s->opts.extra[2] = "--caller-policy";
    s->opts.extra[3] = policy;
    it_argv(s, NULL, argv, 64);
    it_run(argv, NULL, NULL, &p);
    assert_int_not_equal(p.status, 0);
    assert_non_null(strstr(p.err, "line 3: frontend in [gw]"));
    it_proc_free(&p);

    /* Fixed, it starts (and does not warn about missing mTLS). */
    write_policy(policy, "[authd-dev-client]\nallow = Verify Register\n");
    it_launch(s);
    struct cert dev = { IT_CLIENT_CERT, IT_CLIENT_KEY };
    authd_status st;
    assert_int_equal(try_register(s, &dev, "fixed", &st), AUTHD_OK);
    assert_true(it_log_wait(s, "\"event\":\"listening\"", RELOAD_WAIT_MS));
    assert_true(it_log_wait(s, "\"callers\":1", RELOAD_WAIT_MS));
    assert_false(it_log_wait(s, "\"event\":\"no_mtls\"", 0));
    it_finish(s);

    /* Without --tls-client-ca: the warning, and it serves. */
    s = it_start(NULL);
    assert_true(it_log_wait(s, "\"event\":\"no_mtls\"", RELOAD_WAIT_MS));
    authd_client *c = it_client(s);
    it_register(c, "open", "open@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(mtls_handshake_refusals, it_teardown),
        cmocka_unit_test_teardown(mtls_policy_refuses_outside_caller, it_teardown),
        cmocka_unit_test_teardown(mtls_identity_kinds_do_not_collide, it_teardown),
        cmocka_unit_test_teardown(mtls_frontend_context_believed, it_teardown),
        cmocka_unit_test_teardown(mtls_long_user_agent_keeps_cause, it_teardown),
        cmocka_unit_test_teardown(mtls_frontend_end_users_cannot_block_others, it_teardown),
        cmocka_unit_test_teardown(mtls_log_gate_per_end_user, it_teardown),
        cmocka_unit_test_teardown(mtls_sighup_reloads_policy, it_teardown),
        cmocka_unit_test_teardown(mtls_crl_revokes_on_sighup, it_teardown),
        cmocka_unit_test_teardown(mtls_startup_checks, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
