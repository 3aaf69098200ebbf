/*
 * it_verify_cache.c — the per-loop verified-token cache (--verify-cache-
 * entries) against the real binary. Each test verifies a token several
 * times on one connection first (one I/O thread, so every call is on the
 * loop whose cache holds it), then changes what the cache must not hide:
 * a logout takes effect at once; a token past exp fails; a token whose key
 * was dropped from the key set fails after the reload; every tampered copy
 * of a cached token fails. The same script with the cache off (0) gets the
 * same answers, and the servers' exit lines (verify_cache) show that the
 * first answered from its cache and the second had none.
 */
#include "harness.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX 4096
#define PASS    "correct horse battery staple 9"

/* start: a server with one I/O thread, the cache at entries ("0" off),
 * and up to four more flags. */
static it_server *start(
    const char *entries, const char *f1, const char *v1, const char *f2, const char *v2)
{
    it_opts o = { .extra = { "--io-threads", "1", "--verify-cache-entries", entries } };
    size_t e = 4;
    if (f1 != NULL) {
        o.extra[e++] = f1;
        o.extra[e++] = v1;
    }
    if (f2 != NULL) {
        o.extra[e++] = f2;
        o.extra[e++] = v2;
    }
    return it_start(&o);
}

static void login(authd_client *c, const char *user, char *tok)
{
    char email[128];
    authd_status st;

    snprintf(email, sizeof email, "%s@example.com", user);
    if (it_register(c, user, email, PASS, &st, NULL) != 0)
        IT_EXPECT(&st, 6, NULL); /* ALREADY_EXISTS: a second login of the user */
    it_login_token(c, user, PASS, tok, TOK_MAX, NULL);
}

/* verify_ok verifies tok n times, each answered OK. */
static void verify_ok(authd_client *c, const char *tok, int n)
{
    authd_status st;
    for (int i = 0; i < n; i++)
        if (it_verify(c, tok, &st, NULL) != 0)
            fail_msg("verify %d: code %d %s", i, st.code, st.reason);
}

/* cache_hits stops s and sums the hits of its loops' verify_cache lines;
 * -1 when there is none (the cache is off). */
static long cache_hits(it_server *s)
{
    long hits = -1;
    size_t i;
    json_t *line;

    it_stop(s);
    json_t *all = it_log_json(s);
    json_array_foreach(all, i, line)
    {
        const char *ev = json_string_value(json_object_get(line, "event"));
        if (ev != NULL && strcmp(ev, "verify_cache") == 0)
            hits = (hits < 0 ? 0 : hits) + (long)json_integer_value(json_object_get(line, "hits"));
    }
    json_decref(all);
    return hits;
}

/* ---- the script run with the cache on and off ---------------------------- */

#define MAX_STEPS 64

struct answers {
    int n;
    int code[MAX_STEPS];
    char reason[MAX_STEPS][64];
};

static void record(struct answers *a, const authd_status *st, int rc)
{
    assert_true(a->n < MAX_STEPS);
    a->code[a->n] = rc == 0 ? 0 : st->code;
    snprintf(a->reason[a->n], sizeof a->reason[a->n], "%s", rc == 0 ? "" : st->reason);
    a->n++;
}

/* tampered writes variant v (0..n) of tok into out; false past the last.
 * Every variant differs from tok in at least one byte, in each of its
 * three parts, at its ends, and around it. */
static bool tampered(const char *tok, int v, char *out, size_t cap)
{
    size_t n = strlen(tok);
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    size_t h = (size_t)(d1 - tok), s = (size_t)(d2 - tok) + 1;

    assert_true(n + 2 < cap);
    memcpy(out, tok, n + 1);
    switch (v) {
    case 0: /* header, first character */
        out[0] = out[0] == 'e' ? 'f' : 'e';
        return true;
    case 1: /* header, last character */
        out[h - 1] = out[h - 1] == 'A' ? 'Q' : 'A';
        return true;
    case 2: /* claims, a middle character */
        out[(h + s) / 2] = out[(h + s) / 2] == 'A' ? 'B' : 'A';
        return true;
    case 3: /* signature, first character */
        out[s] = out[s] == 'A' ? 'B' : 'A';
        return true;
    case 4: /* signature, last character: non-canonical trailing bits (43
             * characters for 32 bytes: the last one's low two bits are 0) */
        out[n - 1] = out[n - 1] == 'B' ? 'C' : 'B';
        return true;
    case 5: /* signature, last character: another canonical value */
        out[n - 1] = out[n - 1] == 'A' ? 'E' : 'A';
        return true;
    case 6: /* padding */
        memcpy(out + n, "=", 2);
        return true;
    case 7: /* a trailing space */
        memcpy(out + n, " ", 2);
        return true;
    case 8: /* no signature */
        out[s] = '\0';
        return true;
    case 9: /* a leading character */
        memmove(out + 1, out, n + 1);
        out[0] = 'e';
        return true;
    default:
        return false;
    }
}

/* script: a user's token verified (cached), its tampered copies, a
 * second user's token, a logout of the first, then both again. */
static void script(it_server *s, struct answers *a)
{
    authd_client *c = it_client(s), *c2 = it_client(s);
    char tok[TOK_MAX], tok2[TOK_MAX], bad[TOK_MAX + 4];
    authd_status st;

    login(c, "vc-alice", tok);
    login(c, "vc-bob", tok2);
    for (int i = 0; i < 3; i++)
        record(a, &st, it_verify(c, tok, &st, NULL));
    for (int v = 0; tampered(tok, v, bad, sizeof bad); v++) {
        record(a, &st, it_verify(c, bad, &st, NULL));
        record(a, &st, it_verify(c, tok, &st, NULL)); /* the original still good */
    }
    for (int i = 0; i < 2; i++)
        record(a, &st, it_verify(c, tok2, &st, NULL));
    assert_int_equal(it_logout(c2, tok, &st), 0);
    /* At once: the very next Verify, on the loop that cached it. */
    record(a, &st, it_verify(c, tok, &st, NULL));
    record(a, &st, it_verify(c2, tok, &st, NULL));
    record(a, &st, it_verify(c, tok2, &st, NULL));
    authd_client_close(c2);
    authd_client_close(c);
}

static void check_script(const struct answers *a)
{
    int i = 0;
    for (int k = 0; k < 3; k++, i++)
        assert_int_equal(a->code[i], 0);
    for (int v = 0; v < 10; v++) {
        if (a->code[i] != 16)
            fail_msg("tampered variant %d: code %d %s", v, a->code[i], a->reason[i]);
        i++;
        assert_int_equal(a->code[i++], 0);
    }
    assert_int_equal(a->code[i++], 0);
    assert_int_equal(a->code[i++], 0);
    for (int k = 0; k < 2; k++, i++) {
        assert_int_equal(a->code[i], 16);
        assert_string_equal(a->reason[i], "REVOKED");
    }
    assert_int_equal(a->code[i++], 0); /* bob is untouched */
    assert_int_equal(a->n, i);
}

/* The script with the cache on: logout at once, every tampered copy
 * refused, and the cache did answer (hits in its exit line). */
static void cache_logout_and_tamper(void **state)
{
    (void)state;
    struct answers on = { 0 };
    it_server *s = start("1024", NULL, NULL, NULL, NULL);

    script(s, &on);
    check_script(&on);
    long hits = cache_hits(s);
    if (hits < 12)
        fail_msg("the cache answered %ld Verify calls; the script repeats a token 15 times", hits);
    it_free(s);
}

/* The same script with --verify-cache-entries 0: the same answers, and no
 * cache at all. */
static void cache_off_same_answers(void **state)
{
    (void)state;
    struct answers on = { 0 }, off = { 0 };
    it_server *s = start("1024", NULL, NULL, NULL, NULL);
    script(s, &on);
    it_finish(s);

    s = start("0", NULL, NULL, NULL, NULL);
    script(s, &off);
    check_script(&off);
    assert_int_equal(on.n, off.n);
    for (int i = 0; i < on.n; i++) {
        if (on.code[i] != off.code[i] || strcmp(on.reason[i], off.reason[i]) != 0)
            fail_msg("step %d: cache on %d %s, off %d %s", i, on.code[i], on.reason[i], off.code[i],
                off.reason[i]);
    }
    assert_int_equal(cache_hits(s), -1);
    it_free(s);
}

/* A cached token past its exp fails (--token-ttl 2, no leeway): verified
 * OK several times, then EXPIRED once the clock passes exp, on the same
 * connection. */
static void cache_expired(void **state)
{
    (void)state;
    it_server *s = start("1024", "--token-ttl", "2", "--clock-leeway", "0");
    authd_client *c = it_client(s);
    char tok[TOK_MAX];
    authd_status st;
    Authd__V1__VerifyResponse *resp = NULL;

    login(c, "vc-carol", tok);
    assert_int_equal(it_verify(c, tok, &st, &resp), 0);
    int64_t exp = resp->expires_at;
    authd__v1__verify_response__free_unpacked(resp, NULL);
    verify_ok(c, tok, 2); /* cached */
    uint64_t end = it_mono_ms() + 4 * IT_CALL_TIMEOUT_MS;
    int oks = 0;
    for (;;) {
        int64_t before = it_now();
        if (it_verify(c, tok, &st, NULL) != 0)
            break;
        oks++;
        /* An OK must be before exp (to the second, with no leeway). */
        if (before > exp)
            fail_msg("OK at %lld, after exp %lld", (long long)before, (long long)exp);
        if (it_mono_ms() > end)
            fail_msg("the token never expired");
        it_nap_ms(50);
    }
    IT_EXPECT(&st, 16, "EXPIRED");
    assert_true(it_now() >= exp);
    assert_true(oks >= 1);
    authd_client_close(c);
    long hits = cache_hits(s);
    assert_true(hits >= 3); /* the OKs came from the cache */
    it_free(s);
}

/* Two loops, each with its own cache: a token cached on both (many
 * connections, spread over the loops) is refused on every connection at
 * once after a logout on one of them. */
static void cache_logout_every_loop(void **state)
{
    (void)state;
    enum { NC = 8 };
    it_opts o = { .extra = { "--io-threads", "2", "--verify-cache-entries", "1024" } };
    it_server *s = it_start(&o);
    authd_client *c[NC];
    char tok[TOK_MAX];
    authd_status st;

    for (int i = 0; i < NC; i++)
        c[i] = it_client(s);
    login(c[0], "vc-erin", tok);
    for (int i = 0; i < NC; i++)
        verify_ok(c[i], tok, 2);
    assert_int_equal(it_logout(c[NC - 1], tok, &st), 0);
    for (int i = 0; i < NC; i++) {
        assert_int_not_equal(it_verify(c[i], tok, &st, NULL), 0);
        IT_EXPECT(&st, 16, "REVOKED");
    }
    for (int i = 0; i < NC; i++)
        authd_client_close(c[i]);
    assert_true(cache_hits(s) >= NC);
    it_free(s);
}

/* ---- the key set ------------------------------------------------------- */

/* keys runs `authd keys A1 [A2] --key-dir D --token-ttl 1 --clock-leeway
 * 0` (a keys command that thinks tokens live a second: it drops a retired
 * key a second after retiring it, while authd's own tokens live 600 s);
 * out gets stdout's first line. */
static void keys(const char *kdir, const char *a1, const char *a2, char *out, size_t cap)
{
    const char *argv[12];
    size_t n = 0;
    it_proc p;

    argv[n++] = AUTHD_BIN;
    argv[n++] = "keys";
    argv[n++] = a1;
    if (a2 != NULL)
        argv[n++] = a2;
    argv[n++] = "--key-dir";
    argv[n++] = kdir;
    argv[n++] = "--token-ttl";
    argv[n++] = "1";
    argv[n++] = "--clock-leeway";
    argv[n++] = "0";
    argv[n] = NULL;
    it_run(argv, NULL, NULL, &p);
    if (p.status != 0)
        fail_msg("authd keys %s: %s", a1, p.err);
    if (out != NULL) {
        snprintf(out, cap, "%s", p.out);
        out[strcspn(out, "\n")] = '\0';
    }
    it_proc_free(&p);
}

/* A token whose key was dropped from the set fails after the reload,
 * though it was cached. While its key is only retired it still verifies
 * (the rule of the full path, kept by the cache). */
static void cache_key_dropped(void **state)
{
    (void)state;
    it_opts o = { .key_len = -1 };
    it_server *s = it_new(&o);
    char kdir[400], k1[64], k2[64], tok[TOK_MAX];
    authd_status st;

    snprintf(kdir, sizeof kdir, "%s/keys", s->dir);
    keys(kdir, "add", "hs256", k1, sizeof k1);
    keys(kdir, "activate", k1, NULL, 0);
    const char *extra[] = { "--key-dir", kdir, "--token-ttl", "600", "--clock-leeway", "0",
        "--io-threads", "1", "--verify-cache-entries", "1024", NULL };
    for (size_t i = 0; extra[i] != NULL; i++)
        s->opts.extra[i] = extra[i];
    it_launch(s);
    authd_client *c = it_client(s);
    login(c, "vc-dave", tok);
    verify_ok(c, tok, 3);

    /* K2 active, K1 retired; authd reloads: K1's token still verifies. */
    keys(kdir, "add", "hs256", k2, sizeof k2);
    keys(kdir, "activate", k2, NULL, 0);
    int64_t retired = it_now();
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    assert_true(it_log_wait(s, k2, IT_CALL_TIMEOUT_MS)); /* the reload is logged with kids */
    verify_ok(c, tok, 3);

    /* A second after, the next command drops K1 (its --token-ttl is 1). */
    uint64_t end = it_mono_ms() + IT_CALL_TIMEOUT_MS;
    while (it_now() <= retired + 1) {
        assert_true(it_mono_ms() < end);
        it_nap_ms(100);
    }
    char k3[64];
    keys(kdir, "add", "hs256", k3, sizeof k3);
    char *state_file = NULL;
    char path[480];
    snprintf(path, sizeof path, "%s/keys.state", kdir);
    assert_non_null(state_file = it_read_file(path, NULL));
    assert_null(strstr(state_file, k1)); /* dropped */
    free(state_file);
    assert_int_equal(kill(s->pid, SIGHUP), 0);
    end = it_mono_ms() + 2 * IT_CALL_TIMEOUT_MS;
    while (it_verify(c, tok, &st, NULL) == 0) {
        if (it_mono_ms() > end)
            fail_msg("a token of the dropped key %s still verifies", k1);
        it_nap_ms(50);
    }
    IT_EXPECT(&st, 16, "MALFORMED");
    assert_int_not_equal(it_verify(c, tok, &st, NULL), 0); /* and stays refused */
    authd_client_close(c);
    assert_true(cache_hits(s) >= 4);
    it_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cache_logout_and_tamper),
        cmocka_unit_test(cache_off_same_answers),
        cmocka_unit_test(cache_expired),
        cmocka_unit_test(cache_logout_every_loop),
        cmocka_unit_test(cache_key_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
