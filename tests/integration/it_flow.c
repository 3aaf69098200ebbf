/*
 * it_flow.c — the user-facing flows over real TLS: register, login, verify,
 * logout; duplicates (sequential and racing); every validation rule.
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_hex32(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* register -> login -> verify -> logout -> verify fails REVOKED; logout is
 * idempotent; what verify returns matches what login returned. */
static void flow_register_login_verify_logout(void **state)
{
    it_opts o = { .extra = { "--token-ttl", "600" } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    Authd__V1__RegisterResponse *reg = NULL;
    Authd__V1__LoginResponse *lr = NULL;
    Authd__V1__VerifyResponse *vr = NULL;
    authd_status st;
    char tok[4096];

    it_register(c, "Alice.Flow", "Alice.Flow@Example.COM", "correct horse battery", &st, &reg);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_non_null(reg->user);
    assert_true(is_hex32(reg->user->id));
    assert_string_equal(reg->user->username, "alice.flow");
    assert_string_equal(reg->user->email, "alice.flow@example.com");
    assert_int_equal(reg->user->status, AUTHD__V1__USER_STATUS__USER_STATUS_ACTIVE);

    int64_t t0 = it_now();
    it_login_token(c, "ALICE.FLOW", "correct horse battery", tok, sizeof tok, &lr);
    int64_t t1 = it_now();
    assert_string_equal(lr->token_type, "Bearer");
    assert_true(is_hex32(lr->session_id));
    assert_non_null(lr->user);
    assert_string_equal(lr->user->id, reg->user->id);
    assert_true(lr->expires_at >= t0 + 600 && lr->expires_at <= t1 + 600);

    it_verify(c, tok, &st, &vr);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_equal(vr->user_id, reg->user->id);
    assert_string_equal(vr->username, "alice.flow");
    assert_string_equal(vr->session_id, lr->session_id);
    assert_int_equal(vr->expires_at, lr->expires_at);
    assert_int_equal(vr->n_roles, lr->user->n_roles);
    for (size_t i = 0; i < vr->n_roles; i++)
        assert_string_equal(vr->roles[i], lr->user->roles[i]);
    authd__v1__verify_response__free_unpacked(vr, NULL);

    it_logout(c, tok, &st);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_int_not_equal(it_verify(c, tok, &st, NULL), AUTHD_OK);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");
    it_logout(c, tok, &st); /* idempotent */
    IT_EXPECT(&st, AUTHD_OK, NULL);

    /* A new session (by email, any case) is independent of the revoked one. */
    char tok2[4096];
    Authd__V1__LoginResponse *lr2 = NULL;
    it_login_token(c, "ALICE.flow@example.com", "correct horse battery", tok2, sizeof tok2, &lr2);
    assert_string_not_equal(lr2->session_id, lr->session_id);
    it_verify(c, tok2, &st, &vr);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_string_equal(vr->session_id, lr2->session_id);
    authd__v1__verify_response__free_unpacked(vr, NULL);
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "REVOKED");

    authd__v1__login_response__free_unpacked(lr2, NULL);
    authd__v1__login_response__free_unpacked(lr, NULL);
    authd__v1__register_response__free_unpacked(reg, NULL);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Wrong password and unknown user are the same reply. */
static void flow_login_failures_look_the_same(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status wrong, unknown;

    it_register(c, "carol", "carol@example.com", "carols long password", &wrong, NULL);
    IT_EXPECT(&wrong, AUTHD_OK, NULL);
    it_login(c, "carol", "not carols password", &wrong, NULL);
    IT_EXPECT(&wrong, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_login(c, "nobody-here", "carols long password", &unknown, NULL);
    IT_EXPECT(&unknown, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    assert_string_equal(wrong.message, unknown.message);

    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* Usernames and emails are unique in their canonical (lower-case) form. */
static void flow_duplicate_username_and_email(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    authd_status st;

    it_register(c, "dupe", "dupe@example.com", "first users password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_register(c, "DuPe", "other@example.com", "second users password", &st, NULL);
    IT_EXPECT(&st, AUTHD_ALREADY_EXISTS, "USERNAME_TAKEN");
    assert_non_null(strstr(st.message, "username"));
    it_register(c, "someone-else", "DUPE@example.com", "second users password", &st, NULL);
    IT_EXPECT(&st, AUTHD_ALREADY_EXISTS, "EMAIL_TAKEN");
    assert_non_null(strstr(st.message, "email"));

    /* The losers left nothing behind: the first user's password still works
     * and the second's does not. */
    it_login(c, "dupe", "first users password", &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login(c, "dupe", "second users password", &st, NULL);
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");

    authd_client_close(c);
    it_finish(s);
    (void)state;
}

#define RACERS 4
#define ROUNDS 6

struct racer {
    authd_client *c;
    pthread_barrier_t *go;
    char username[40];
    char email[80];
    char password[64];
    authd_status st;
};

static void *race_register(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->go);
    (void)it_register(r->c, r->username, r->email, r->password, &r->st, NULL);
    return NULL;
}

/* Racing Registers of one name (or one email) from separate connections:
 * exactly one wins each round, the others get ALREADY_EXISTS, and the
 * stored user is the winner's. Half the rounds race on the username
 * (spelled in different cases), half on the email. */
static void flow_concurrent_register_one_winner(void **state)
{
    it_server *s = it_start(NULL);
    struct racer r[RACERS];
    pthread_t th[RACERS];
    pthread_barrier_t go;

    for (int i = 0; i < RACERS; i++)
        r[i].c = it_client(s);
    for (int round = 0; round < ROUNDS; round++) {
        bool by_name = round % 2 == 0;
        assert_int_equal(pthread_barrier_init(&go, NULL, RACERS), 0);
        for (int i = 0; i < RACERS; i++) {
            r[i].go = &go;
            if (by_name) {
                snprintf(r[i].username, sizeof r[i].username, i % 2 ? "RACE-%d" : "race-%d", round);
                snprintf(r[i].email, sizeof r[i].email, "racer%d.round%d@example.com", i, round);
            } else {
                snprintf(r[i].username, sizeof r[i].username, "racer%d-round%d", i, round);
                /* one address per round, spelled in two cases */
                snprintf(r[i].email, sizeof r[i].email, "%s%d@example.com",
                    i % 2 ? "SAME-RACE" : "same-race", round);
            }
            snprintf(
                r[i].password, sizeof r[i].password, "racer %d password of round %d", i, round);
            assert_int_equal(pthread_create(&th[i], NULL, race_register, &r[i]), 0);
        }
        for (int i = 0; i < RACERS; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        pthread_barrier_destroy(&go);

        int winner = -1;
        for (int i = 0; i < RACERS; i++) {
            if (r[i].st.code == AUTHD_OK) {
                if (winner >= 0)
                    fail_msg("round %d: racers %d and %d both registered", round, winner, i);
                winner = i;
            } else {
                IT_EXPECT(
                    &r[i].st, AUTHD_ALREADY_EXISTS, by_name ? "USERNAME_TAKEN" : "EMAIL_TAKEN");
            }
        }
        if (winner < 0)
            fail_msg("round %d: nobody registered", round);

        /* The stored account is the winner's: its password logs in, a
         * loser's does not. */
        authd_status st;
        const char *login = by_name ? r[winner].username : r[winner].email;
        it_login(r[0].c, login, r[winner].password, &st, NULL);
        IT_EXPECT(&st, AUTHD_OK, NULL);
        it_login(r[0].c, login, r[(winner + 1) % RACERS].password, &st, NULL);
        IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    }
    for (int i = 0; i < RACERS; i++)
        authd_client_close(r[i].c);
    it_finish(s);
    (void)state;
}

/* email_of_len builds a syntactically valid address of exactly len bytes
 * (197 < len <= 260): 64-byte local part starting with tag, 63+63+n+4
 * domain. */
static void email_of_len(char *out, size_t len, char tag)
{
    size_t n = 0;
    assert_true(len > 197 && len <= 260);
    out[n++] = tag;
    while (n < 64)
        out[n++] = 'l';
    out[n++] = '@';
    for (int i = 0; i < 63; i++)
        out[n++] = 'a';
    out[n++] = '.';
    for (int i = 0; i < 63; i++)
        out[n++] = 'b';
    out[n++] = '.';
    while (n < len - 4)
        out[n++] = 'c';
    memcpy(out + n, ".com", 5);
    assert_int_equal(strlen(out), len);
}

static void repeat(char *out, const char *unit, int times)
{
    out[0] = '\0';
    for (int i = 0; i < times; i++)
        strcat(out, unit);
}

/* distinct writes times two-byte code points from U+00C0..U+017F, none
 * repeated (step 71 is coprime with 192), so the strength estimate sees no
 * repetition: the length boundaries are tested, not the estimator. */
static void distinct(char *out, int times)
{
    for (int i = 0; i < times; i++) {
        unsigned cp = 0xC0u + (unsigned)(i * 71) % 192u;
        out[2 * i] = (char)(0xC0u | (cp >> 6));
        out[2 * i + 1] = (char)(0x80u | (cp & 0x3Fu));
    }
    out[2 * times] = '\0';
}

/* Every validation rule of Register, over the wire: the reason names the
 * rule and the message names the field. Boundary values that are valid are
 * in the table too, so the rules are shown to cut at the right place. */
static void flow_validation_rules_over_the_wire(void **state)
{
    static char u33[40], u32[40], e254[300], e255[300], local65[120];
    static char pw11e[64], pw12e[64], pw129x[200], pw129e[300], pw128e[300];
    struct vcase {
        const char *name;
        const char *username, *email, *password;
        int code;
        const char *reason, *field;
    } cases[] = {
        { "username too short", "ab", "v1@example.com", "valid password 1", AUTHD_INVALID_ARGUMENT,
            "INVALID_USERNAME", "username" },
        { "username empty", "", "v2@example.com", "valid password 1", AUTHD_INVALID_ARGUMENT,
            "INVALID_USERNAME", "username" },
        { "username too long (33)", u33, "v3@example.com", "valid password 1",
            AUTHD_INVALID_ARGUMENT, "INVALID_USERNAME", "username" },
        { "username with a space", "bad name", "v4@example.com", "valid password 1",
            AUTHD_INVALID_ARGUMENT, "INVALID_USERNAME", "username" },
        { "username with !", "bob!", "v5@example.com", "valid password 1", AUTHD_INVALID_ARGUMENT,
            "INVALID_USERNAME", "username" },
        { "username non-ASCII",
            "b\xc3\xb8"
            "b",
            "v6@example.com", "valid password 1", AUTHD_INVALID_ARGUMENT, "INVALID_USERNAME",
            "username" },
        { "email without @", "vuser7", "not-an-email", "valid password 1", AUTHD_INVALID_ARGUMENT,
            "INVALID_EMAIL", "email" },
        { "email with two @", "vuser8", "a@@example.com", "valid password 1",
            AUTHD_INVALID_ARGUMENT, "INVALID_EMAIL", "email" },
        { "email single-label domain", "vuser9", "a@localhost", "valid password 1",
            AUTHD_INVALID_ARGUMENT, "INVALID_EMAIL", "email" },
        { "email leading dot", "vuser10", ".a@example.com", "valid password 1",
            AUTHD_INVALID_ARGUMENT, "INVALID_EMAIL", "email" },
        { "email too long (255)", "vuser11", e255, "valid password 1", AUTHD_INVALID_ARGUMENT,
            "INVALID_EMAIL", "email" },
        { "email local part 65", "vuser12", local65, "valid password 1", AUTHD_INVALID_ARGUMENT,
            "INVALID_EMAIL", "email" },
        { "password 11 chars", "vuser13", "v13@example.com", "abcdefghijk", AUTHD_INVALID_ARGUMENT,
            "INVALID_PASSWORD", "password" },
        { "password 11 code points (22 bytes)", "vuser14", "v14@example.com", pw11e,
            AUTHD_INVALID_ARGUMENT, "INVALID_PASSWORD", "password" },
        { "password 129 chars", "vuser15", "v15@example.com", pw129x, AUTHD_INVALID_ARGUMENT,
            "INVALID_PASSWORD", "password" },
        { "password 129 code points", "vuser16", "v16@example.com", pw129e, AUTHD_INVALID_ARGUMENT,
            "INVALID_PASSWORD", "password" },
        { "password common", "vuser17", "v17@example.com", "qwerty123456", AUTHD_INVALID_ARGUMENT,
            "WEAK_PASSWORD", "password" },
        { "password common, other case", "vuser18", "v18@example.com", "QWERTY123456",
            AUTHD_INVALID_ARGUMENT, "WEAK_PASSWORD", "password" },
        /* valid boundaries */
        { "username 3 chars", "abc", "ok1@example.com", "valid password 1", AUTHD_OK, NULL, NULL },
        { "username 32 chars", u32, "ok2@example.com", "valid password 1", AUTHD_OK, NULL, NULL },
        { "email 254 bytes", "okuser3", e254, "valid password 1", AUTHD_OK, NULL, NULL },
        { "password 12 code points", "okuser4", "ok4@example.com", pw12e, AUTHD_OK, NULL, NULL },
        { "password 128 code points", "okuser5", "ok5@example.com", pw128e, AUTHD_OK, NULL, NULL },
    };
    memset(u33, 'u', 33);
    u33[33] = '\0';
    memset(u32, 'w', 32);
    u32[32] = '\0';
    email_of_len(e254, 254, 'p');
    email_of_len(e255, 255, 'q');
    memset(local65, 'x', 65);
    memcpy(local65 + 65, "@example.com", 13);
    repeat(pw11e, "\xc3\xa9", 11);
    distinct(pw12e, 12);
    memset(pw129x, 'x', 129);
    pw129x[129] = '\0';
    repeat(pw129e, "\xc3\xa9", 129);
    distinct(pw128e, 128);

    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    int failures = 0;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct vcase *k = &cases[i];
        authd_status st;
        it_register(c, k->username, k->email, k->password, &st, NULL);
        bool ok = st.code == k->code && (k->reason == NULL || strcmp(st.reason, k->reason) == 0)
            && (k->field == NULL || strstr(st.message, k->field) != NULL);
        if (!ok) {
            print_error("case '%s': want %s [%s] naming '%s', got %s [%s]: %s\n", k->name,
                authd_code_str(k->code), k->reason ? k->reason : "", k->field ? k->field : "",
                authd_code_str(st.code), st.reason, st.message);
            failures++;
        }
    }
    assert_int_equal(failures, 0);

    /* The valid boundary passwords round-trip through Login. */
    authd_status st;
    it_login(c, "okuser4", pw12e, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login(c, "okuser5", pw128e, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);

    authd_client_close(c);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(flow_register_login_verify_logout, it_teardown),
        cmocka_unit_test_teardown(flow_login_failures_look_the_same, it_teardown),
        cmocka_unit_test_teardown(flow_duplicate_username_and_email, it_teardown),
        cmocka_unit_test_teardown(flow_concurrent_register_one_winner, it_teardown),
        cmocka_unit_test_teardown(flow_validation_rules_over_the_wire, it_teardown),
    };
    return cmocka_run_group_tests_name("integration.flow", tests, NULL, NULL);
}
