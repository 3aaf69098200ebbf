/*
 * it_groupcommit.c — group commit against the real authd over TLS: many
 * writes in flight at once on one connection, so the write pool commits
 * several in one transaction, and every one of them still gets its own,
 * correct answer: Refreshes of distinct chains rotate, a reused token
 * revokes only its session, Registers of free names succeed, of taken
 * names (taken before, or by a batch-mate) fail alone. Afterwards every
 * acknowledged write is there (the children refresh again, the new users
 * log in) and the server's debug log shows batches of more than one
 * write. The same run with --write-batch-max 1 gives the same answers.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PW     "correct horse battery staple"
#define CHAINS 24
#define FRESH  8 /* registers of free names */
#define TAKEN  4 /* registers of a name taken before */
#define DUPS   2 /* registers of one free name: exactly one wins */
#define NCALLS (CHAINS + 1 + FRESH + TAKEN + DUPS)

struct slot {
    int kind; /* 0 refresh, 1 register */
    atomic_int done;
    int code;
    char reason[64];
    char token[128]; /* refresh: the child */
};

static void on_done(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct slot *sl = arg;

    sl->code = code;
    snprintf(sl->reason, sizeof sl->reason, "%s", st->reason);
    if (code == AUTHD_OK && sl->kind == 0 && resp != NULL) {
        Authd__V1__RefreshResponse *rr = (Authd__V1__RefreshResponse *)resp;
        snprintf(sl->token, sizeof sl->token, "%s", rr->refresh_token);
    }
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    atomic_store(&sl->done, 1);
}

static int refresh_sync(authd_client *c, const char *rt, char *child, size_t cap)
{
    Authd__V1__RefreshRequest req = AUTHD__V1__REFRESH_REQUEST__INIT;
    Authd__V1__RefreshResponse *resp = NULL;
    authd_status st;

    req.refresh_token = (char *)rt;
    int rc = authd_client_refresh(c, &req, &resp, &st);
    if (rc == AUTHD_OK) {
        if (child != NULL)
            snprintf(child, cap, "%s", resp->refresh_token);
        authd__v1__refresh_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* max_batch: the most writes one "write_batch" line of the log reports. */
static unsigned long max_batch(const it_server *s)
{
    size_t len = 0;
    char *log = it_read_file(s->log_path, &len);
    unsigned long best = 0;

    for (char *p = log; p != NULL && (p = strstr(p, "\"write_batch\"")) != NULL; p++) {
        char *eol = strchr(p, '\n');
        char *w = strstr(p, "\"writes\":");
        if (w != NULL && (eol == NULL || w < eol)) {
            unsigned long n = strtoul(w + 9, NULL, 10);
            if (n > best)
                best = n;
        }
    }
    free(log);
    return best;
}

static void run_mixed(const char *batch_max, bool expect_batches)
{
    it_opts o = { .extra = { "--refresh-grace-ms", "0", "--write-batch-max", batch_max,
                      "--log-level", "debug", "--caller-registrations", "0" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    static struct slot sl[NCALLS];
    char rts[CHAINS + 1][128];
    char parent[128];
    char name[64], email[96];
    authd_status st;
    int i, k;

    memset(sl, 0, sizeof sl);
    it_register(c, "gctaken", "gctaken@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    for (i = 0; i <= CHAINS; i++) {
        Authd__V1__LoginResponse *lr = NULL;
        char tok[4096];
        it_login_token(c, "gctaken", PW, tok, sizeof tok, &lr);
        snprintf(rts[i], sizeof rts[i], "%s", lr->refresh_token);
        authd__v1__login_response__free_unpacked(lr, NULL);
    }
    /* Chain CHAINS moves on once: its first token is then used up
     * (grace 0), and presenting it in the burst is a reuse. */
    snprintf(parent, sizeof parent, "%s", rts[CHAINS]);
    assert_int_equal(refresh_sync(c, parent, rts[CHAINS], sizeof rts[CHAINS]), AUTHD_OK);

    /* The burst: everything in flight at once, on one connection. */
    k = 0;
    for (i = 0; i <= CHAINS; i++, k++) {
        Authd__V1__RefreshRequest req = AUTHD__V1__REFRESH_REQUEST__INIT;
        sl[k].kind = 0;
        req.refresh_token = i < CHAINS ? rts[i] : parent;
        assert_int_equal(authd_client_refresh_async(c, &req, on_done, &sl[k]), AUTHD_OK);
    }
    for (i = 0; i < FRESH + TAKEN + DUPS; i++, k++) {
        Authd__V1__RegisterRequest req = AUTHD__V1__REGISTER_REQUEST__INIT;
        if (i < FRESH)
            snprintf(name, sizeof name, "gcfresh%d", i);
        else if (i < FRESH + TAKEN)
            snprintf(name, sizeof name, "gctaken");
        else
            snprintf(name, sizeof name, "gcdup");
        snprintf(email, sizeof email, "gc%d@example.com", i);
        sl[k].kind = 1;
        req.username = name;
        req.email = email;
        req.password = PW;
        assert_int_equal(authd_client_register_async(c, &req, on_done, &sl[k]), AUTHD_OK);
    }
    uint64_t deadline = it_mono_ms() + IT_CALL_TIMEOUT_MS * 3;
    for (i = 0; i < NCALLS; i++)
        while (!atomic_load(&sl[i].done) && it_mono_ms() < deadline)
            it_nap_ms(5);

    /* Each answer is its own. */
    for (i = 0; i < CHAINS; i++) {
        assert_true(atomic_load(&sl[i].done));
        assert_int_equal(sl[i].code, AUTHD_OK);
        assert_string_not_equal(sl[i].token, rts[i]);
    }
    assert_true(atomic_load(&sl[CHAINS].done));
    assert_int_equal(sl[CHAINS].code, AUTHD_UNAUTHENTICATED);
    assert_string_equal(sl[CHAINS].reason, "REFRESH_TOKEN_REUSED");
    int dup_ok = 0;
    for (i = 0; i < FRESH + TAKEN + DUPS; i++) {
        struct slot *r = &sl[CHAINS + 1 + i];
        assert_true(atomic_load(&r->done));
        if (i < FRESH) {
            assert_int_equal(r->code, AUTHD_OK);
        } else if (i < FRESH + TAKEN) {
            assert_int_equal(r->code, AUTHD_ALREADY_EXISTS);
            assert_string_equal(r->reason, "USERNAME_TAKEN");
        } else if (r->code == AUTHD_OK) {
            dup_ok++;
        } else {
            assert_int_equal(r->code, AUTHD_ALREADY_EXISTS);
        }
    }
    assert_int_equal(dup_ok, 1);

    /* Every acknowledged write is there: each child refreshes again, the
     * reused session is revoked (its newest token too), the new users log in. */
    for (i = 0; i < CHAINS; i++)
        assert_int_equal(refresh_sync(c, sl[i].token, NULL, 0), AUTHD_OK);
    assert_int_equal(refresh_sync(c, rts[CHAINS], NULL, 0), AUTHD_UNAUTHENTICATED);
    for (i = 0; i < FRESH; i++) {
        snprintf(name, sizeof name, "gcfresh%d", i);
        it_login(c, name, PW, &st, NULL);
        IT_EXPECT(&st, AUTHD_OK, NULL);
    }
    it_login(c, "gcdup", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* The writes really were grouped (or, with batching off, never). */
    if (expect_batches) {
        assert_true(it_log_wait(s, "\"write_batch\"", 5000));
        unsigned long best = max_batch(s);
        print_message("largest batch: %lu writes\n", best);
        assert_true(best >= 2);
    } else {
        assert_true(it_log_wait(s, "\"write_batch\"", 5000));
        assert_int_equal(max_batch(s), 1);
    }
    authd_client_close(c);
    it_finish(s);
}

static void groupcommit_mixed_burst(void **state)
{
    (void)state;
    run_mixed("64", true);
}

static void groupcommit_off_same_answers(void **state)
{
    (void)state;
    run_mixed("1", false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(groupcommit_mixed_burst),
        cmocka_unit_test(groupcommit_off_same_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
