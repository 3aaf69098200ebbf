/*
 * test_policy.c — the caller policy: parsing, errors that name the line,
 * lookups, and the slot that swaps policies under readers (run under
 * ASan and TSan by scripts/test.sh).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy.h"

static const char *const methods[] = { "Register", "Login", "Logout", "Verify" };
enum { REGISTER, LOGIN, LOGOUT, VERIFY };

static authd_policy *parse_ok(const char *text)
{
    authd_policy *p = NULL;
    char err[256] = "";
    authd_code rc = authd_policy_parse_string(text, methods, 4, &p, err, sizeof err);
    if (rc != AUTHD_OK)
        fail_msg("policy refused: %s", err);
    return p;
}

static void parse_bad(const char *text, const char *needle)
{
    authd_policy *p = NULL;
    char err[256] = "";
    assert_int_equal(
        authd_policy_parse_string(text, methods, 4, &p, err, sizeof err), AUTHD_INVALID_ARGUMENT);
    assert_null(p);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' lacks '%s'", err, needle);
}

static void gateway_and_default(void **state)
{
    (void)state;
    authd_policy *p = parse_ok("; callers\n"
                               "[gateway.internal]\n"
                               "allow = Register, Login Logout Verify\n"
                               "frontend = yes\n"
                               "\n"
                               "[billing.internal]\n"
                               "allow = Verify Logout\n"
                               "[*]\n"
                               "allow = Verify\n");
    bool fe = false;
    assert_int_equal(authd_policy_callers(p), 3);
    assert_true(authd_policy_allows(p, "gateway.internal", REGISTER, &fe));
    assert_true(fe);
    assert_true(authd_policy_allows(p, "gateway.internal", VERIFY, &fe));
    assert_true(authd_policy_allows(p, "billing.internal", LOGOUT, &fe));
    assert_false(fe);
    assert_false(authd_policy_allows(p, "billing.internal", LOGIN, NULL));
    /* Anyone else: the "*" rule; not a front-end. */
    assert_true(authd_policy_allows(p, "unknown.internal", VERIFY, &fe));
    assert_false(fe);
    assert_false(authd_policy_allows(p, "unknown.internal", LOGIN, NULL));
    assert_false(authd_policy_allows(p, "", REGISTER, NULL));
    assert_true(authd_policy_allows(p, NULL, VERIFY, NULL));
    /* Case and prefixes matter: identities match exactly. */
    assert_false(authd_policy_allows(p, "Gateway.internal", REGISTER, NULL));
    assert_false(authd_policy_allows(p, "gateway.internal.evil", REGISTER, NULL));
    /* Out-of-range method index. */
    assert_false(authd_policy_allows(p, "gateway.internal", 63, NULL));
    authd_policy_free(p);
}

static void no_default_denies(void **state)
{
    (void)state;
    authd_policy *p = parse_ok("[gw]\nallow = *\n");
    for (unsigned m = REGISTER; m <= VERIFY; m++) {
        assert_true(authd_policy_allows(p, "gw", m, NULL));
        assert_false(authd_policy_allows(p, "other", m, NULL));
    }
    bool fe = true;
    assert_false(authd_policy_allows(p, "other", VERIFY, &fe));
    assert_false(fe);
    authd_policy_free(p);
    /* An empty policy allows nothing. */
    p = parse_ok("; nothing\n");
    assert_false(authd_policy_allows(p, "gw", VERIFY, NULL));
    authd_policy_free(p);
}

static void errors_name_the_line(void **state)
{
    (void)state;
    parse_bad("[gw]\nallow = Verfy\n", "line 2: unknown method 'Verfy' in [gw]");
    parse_bad("[gw]\nallow = Verify\nfrontend = maybe\n", "line 3: frontend in [gw]");
    parse_bad("[gw]\nalow = Verify\n", "unknown key 'alow'");
    parse_bad("allow = Verify\n", "outside a [caller] section");
    parse_bad("[gw]\nthis is not ini\n", "line 2");
    authd_policy *p = NULL;
    char err[256];
    assert_int_equal(authd_policy_load("/nonexistent/policy.ini", methods, 4, &p, err, sizeof err),
        AUTHD_NOT_FOUND);
    assert_non_null(strstr(err, "/nonexistent/policy.ini"));
}

static void from_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_policy_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "[svc-a]\nallow = Verify\n[svc-a]\nallow = Logout\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (int)sizeof text - 1);
    close(fd);
    authd_policy *p = NULL;
    char err[256];
    assert_int_equal(authd_policy_load(path, methods, 4, &p, err, sizeof err), AUTHD_OK);
    unlink(path);
    /* A section given twice adds up. */
    assert_int_equal(authd_policy_callers(p), 1);
    assert_true(authd_policy_allows(p, "svc-a", VERIFY, NULL));
    assert_true(authd_policy_allows(p, "svc-a", LOGOUT, NULL));
    assert_false(authd_policy_allows(p, "svc-a", LOGIN, NULL));
    authd_policy_free(p);
}

/* Many callers: the binary search finds each, and nothing else. */
static void many_callers(void **state)
{
    (void)state;
    size_t cap = 200 * 40;
    char *text = malloc(cap), *w = text;
    for (int i = 0; i < 200; i++)
        w += snprintf(w, cap - (size_t)(w - text), "[svc-%03d]\nallow = %s\n", (i * 7919) % 200,
            i % 2 ? "Verify" : "Login");
    authd_policy *p = parse_ok(text);
    free(text);
    assert_int_equal(authd_policy_callers(p), 200);
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "svc-%03d", (i * 7919) % 200);
        assert_int_equal(authd_policy_allows(p, id, VERIFY, NULL), i % 2 == 1);
        assert_int_equal(authd_policy_allows(p, id, LOGIN, NULL), i % 2 == 0);
    }
    assert_false(authd_policy_allows(p, "svc-200", VERIFY, NULL));
    assert_false(authd_policy_allows(p, "svc-", VERIFY, NULL));
    authd_policy_free(p);
}

/* libinih keeps 49 characters of a section name: longer identities (SPIFFE
 * IDs) must still match exactly, never by a cut prefix; longer than an
 * identity can be, or lines inih would split, are errors. */
static void long_identities(void **state)
{
    (void)state;
    char id[128], text[512];
    memset(id, 'a', 127);
    id[127] = '\0';
    memcpy(id, "spiffe://", 9);
    snprintf(text, sizeof text,
        "[short]\nallow = Login\n[%s]\nallow = Register\n[%.49s]\nallow = Verify\n", id, id);
    authd_policy *p = parse_ok(text);
    assert_int_equal(authd_policy_callers(p), 3);
    assert_true(authd_policy_allows(p, id, REGISTER, NULL));
    assert_false(authd_policy_allows(p, id, VERIFY, NULL));
    char cut[50];
    snprintf(cut, sizeof cut, "%.49s", id);
    assert_true(authd_policy_allows(p, cut, VERIFY, NULL));
    assert_false(authd_policy_allows(p, cut, REGISTER, NULL));
    assert_true(authd_policy_allows(p, "short", LOGIN, NULL));
    authd_policy_free(p);

    snprintf(text, sizeof text, "[%sb]\nallow = Verify\n", id);
    parse_bad(text, "line 1: caller identity longer than 127");
    snprintf(text, sizeof text, "[gw]\nallow = Verify  %0200d\n", 0);
    parse_bad(text, "line 2: longer than 199");
    /* errors after a long section keep their line and name it */
    snprintf(text, sizeof text, "; x\n[%s]\nallow = Nope\n", id);
    parse_bad(text, "line 3: unknown method 'Nope'");
}

/* A section line that inih reads but prepare() did not recognise (a UTF-8
 * BOM before the first line, or leading whitespace other than space and
 * tab) got no stand-in, so inih cut its long name to 49 characters and a
 * certificate named with that prefix got the long name's rights. */
static void long_identities_after_bom_or_odd_space(void **state)
{
    (void)state;
    static const char *const leads[] = { "\xEF\xBB\xBF", "\v", "\f", "\r" };
    char id[61], cut[50], text[512];
    memset(id, 'a', 60);
    id[60] = '\0';
    memcpy(id, "spiffe://", 9);
    snprintf(cut, sizeof cut, "%.49s", id);
    for (size_t i = 0; i < sizeof leads / sizeof leads[0]; i++) {
        snprintf(text, sizeof text, "%s[%s]\nallow = Register\n", leads[i], id);
        authd_policy *p = NULL;
        char err[256] = "";
        if (authd_policy_parse_string(text, methods, 4, &p, err, sizeof err) != AUTHD_OK)
            continue; /* refusing the file is fine too */
        if (authd_policy_allows(p, cut, REGISTER, NULL))
            fail_msg("lead %zu: a 49-character prefix got the long identity's rights", i);
        assert_true(authd_policy_allows(p, id, REGISTER, NULL));
        authd_policy_free(p);
    }
}

/* ---- the slot ------------------------------------------------------------------ */

struct readers_arg {
    authd_policy_slot *slot;
    atomic_bool stop;
    atomic_uint_fast64_t looks;
    atomic_uint_fast64_t odd; /* looks that saw a policy without "gw" allowed */
};

static void *reader_main(void *arg)
{
    struct readers_arg *a = arg;
    while (!atomic_load(&a->stop)) {
        const authd_policy *p = authd_policy_enter(a->slot);
        assert_non_null(p);
        bool fe = false;
        /* Every installed policy allows gw Verify; each has 1 or 2 callers. */
        if (!authd_policy_allows(p, "gw", VERIFY, &fe) || authd_policy_callers(p) > 2)
            atomic_fetch_add(&a->odd, 1);
        authd_policy_exit();
        atomic_fetch_add(&a->looks, 1);
    }
    return NULL;
}

/* Readers look while the main thread installs and reaps 300 policies:
 * every look sees a whole policy (ASan: no use after free; TSan: no race
 * between a look and the free), and all retired ones are freed. */
static void slot_swaps_under_readers(void **state)
{
    (void)state;
    struct readers_arg a = { 0 };
    pthread_t th[3];

    assert_int_equal(
        authd_policy_slot_create(parse_ok("[gw]\nallow = Verify\n"), &a.slot), AUTHD_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &a), 0);
    for (int i = 0; i < 300; i++) {
        authd_policy_slot_install(a.slot,
            parse_ok(
                i % 2 ? "[gw]\nallow = Verify Login\n" : "[gw]\nallow = *\n[x]\nallow = Login\n"));
        if (i % 50 == 0) {
            /* let the readers make progress on a loaded machine */
            uint64_t seen = atomic_load(&a.looks);
            for (int k = 0; k < 2000 && atomic_load(&a.looks) == seen; k++)
                usleep(500);
        }
    }
    atomic_store(&a.stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_true(atomic_load(&a.looks) > 0);
    assert_int_equal(atomic_load(&a.odd), 0);
    assert_int_equal(authd_policy_slot_reap(a.slot), 0);
    authd_policy_slot_destroy(a.slot);
}

struct holder {
    authd_policy_slot *slot;
    atomic_int phase; /* 1: inside with the old policy; 2: told to leave; 3: left */
    bool old_allows_login;
};

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    const authd_policy *p = authd_policy_enter(h->slot);
    atomic_store(&h->phase, 1);
    while (atomic_load(&h->phase) != 2)
        usleep(1000);
    /* Still the old policy, still readable after the swap. */
    h->old_allows_login = authd_policy_allows(p, "gw", LOGIN, NULL);
    authd_policy_exit();
    atomic_store(&h->phase, 3);
    return NULL;
}

/* A reader inside keeps the policy it entered with alive: the reap after
 * the swap leaves it retired; once the reader has left, it is freed. */
static void slot_reader_inside_delays_free(void **state)
{
    (void)state;
    struct holder h = { 0 };
    pthread_t th;

    assert_int_equal(
        authd_policy_slot_create(parse_ok("[gw]\nallow = Login\n"), &h.slot), AUTHD_OK);
    assert_int_equal(pthread_create(&th, NULL, holder_main, &h), 0);
    while (atomic_load(&h.phase) != 1)
        usleep(1000);
    authd_policy_slot_install(h.slot, parse_ok("[gw]\nallow = Verify\n"));
    assert_int_equal(authd_policy_slot_reap(h.slot), 1);
    /* A new look sees the new policy. */
    const authd_policy *p = authd_policy_enter(h.slot);
    assert_false(authd_policy_allows(p, "gw", LOGIN, NULL));
    assert_true(authd_policy_allows(p, "gw", VERIFY, NULL));
    authd_policy_exit();
    atomic_store(&h.phase, 2);
    pthread_join(th, NULL);
    assert_true(h.old_allows_login);
    assert_int_equal(authd_policy_slot_reap(h.slot), 0);
    authd_policy_slot_destroy(h.slot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gateway_and_default),
        cmocka_unit_test(no_default_denies),
        cmocka_unit_test(errors_name_the_line),
        cmocka_unit_test(from_file),
        cmocka_unit_test(many_callers),
        cmocka_unit_test(long_identities),
        cmocka_unit_test(long_identities_after_bom_or_odd_space),
        cmocka_unit_test(slot_swaps_under_readers),
        cmocka_unit_test(slot_reader_inside_delays_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
