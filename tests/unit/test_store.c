/*
 * test_store.c — unit tests of the LMDB store (src/store.c).
 *
 * Each test runs against its own mkdtemp directory under /tmp, removed
 * afterwards. Corrupt records are planted with the raw LMDB API while the
 * store is closed, so the store needs no test hooks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "authd/store/v1/records.pb-c.h"
#include "log.h"
#include "store.h"
#include "store_codec.h"

#define MiB    ((size_t)1 << 20)
#define HASH_A "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
#define HASH_B "$argon2id$v=19$m=65536,t=2,p=1$bmV3c2FsdA$bmV3aGFzaG5ld2hhc2g"

/* ---- fixture ------------------------------------------------------------ */

typedef struct fx {
    char dir[64];
    authd_store *st;
} fx;

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    char sub[512];

    if (d == NULL) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
}

static authd_code fx_open(fx *f, size_t map_size, unsigned max_readers)
{
    authd_store_options o = { .dir = f->dir, .map_size = map_size, .max_readers = max_readers };
    return authd_store_open(&o, &f->st);
}

static void fx_reopen(fx *f)
{
    authd_store_close(f->st);
    f->st = NULL;
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
}

static int setup_dir(void **state)
{
    fx *f = calloc(1, sizeof *f);

    assert_non_null(f);
    strcpy(f->dir, "/tmp/authd-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int setup(void **state)
{
    fx *f;

    setup_dir(state);
    f = *state;
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;

    authd_store_close(f->st);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */

static void make_id(uint8_t id[AUTHD_ID_BYTES], uint8_t kind, uint32_t n)
{
    memset(id, 0x5a, AUTHD_ID_BYTES);
    id[0] = kind;
    id[12] = (uint8_t)(n >> 24);
    id[13] = (uint8_t)(n >> 16);
    id[14] = (uint8_t)(n >> 8);
    id[15] = (uint8_t)n;
}

static void make_user(authd_user *u, uint32_t n, const char *username, const char *email)
{
    memset(u, 0, sizeof *u);
    make_id(u->id, 'u', n);
    snprintf(u->username, sizeof u->username, "%s", username);
    snprintf(u->email, sizeof u->email, "%s", email);
    snprintf(u->password_hash, sizeof u->password_hash, "%s", HASH_A);
    u->status = AUTHD_USER_ACTIVE;
    u->n_roles = 3;
    snprintf(u->roles[0], sizeof u->roles[0], "%s", "user");
    /* Not "admin": the last-admin rule (tests below) would refuse to
     * disable or delete a sole admin, which tests of other things do. */
    snprintf(u->roles[1], sizeof u->roles[1], "%s", "ops");
    snprintf(u->roles[2], sizeof u->roles[2], "%s", "auditor");
    u->created_at = 1700000000 + (int64_t)n;
    u->updated_at = 1700000100 + (int64_t)n;
    u->password_changed_at = 1700000200 + (int64_t)n;
}

static void make_session(authd_session *s, uint32_t n, const uint8_t uid[AUTHD_ID_BYTES],
    int64_t created, int64_t expires)
{
    memset(s, 0, sizeof *s);
    make_id(s->id, 's', n);
    memcpy(s->user_id, uid, AUTHD_ID_BYTES);
    s->created_at = created;
    s->expires_at = expires;
}

/* view_is: Verify's view holds exactly what the session and user say. */
static void view_is(const authd_verify_view *v, const authd_session *s, const authd_user *u)
{
    assert_memory_equal(v->user_id, s->user_id, AUTHD_ID_BYTES);
    assert_int_equal(v->expires_at, s->expires_at);
    assert_int_equal(v->revoked, s->revoked);
    assert_memory_equal(v->user_id, u->id, AUTHD_ID_BYTES);
    assert_int_equal(v->status, u->status);
    assert_string_equal(v->username, u->username);
    assert_int_equal(v->n_roles, u->n_roles);
    for (uint32_t i = 0; i < u->n_roles; i++)
        assert_string_equal(v->roles[i], u->roles[i]);
}

static void create_ok(authd_store *st, const authd_user *u)
{
    const char *conflict = NULL;

    assert_int_equal(authd_store_user_create(st, u, &conflict), AUTHD_OK);
    assert_null(conflict);
}

static void assert_counts(authd_store *st, size_t users, size_t sessions)
{
    size_t nu = 9999, ns = 9999;

    assert_int_equal(authd_store_count(st, &nu, &ns), AUTHD_OK);
    assert_int_equal(nu, users);
    assert_int_equal(ns, sessions);
}

/* raw_put writes key -> val into a named database with the raw LMDB API
 * (the store must be closed). val NULL deletes the key. */
static void raw_put(
    const char *dir, const char *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_val k = { .mv_size = klen, .mv_data = (void *)key };
    MDB_val v = { .mv_size = vlen, .mv_data = (void *)val };

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    if (val != NULL)
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    else
        assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* ---- open ----------------------------------------------------------------- */

static void test_open_creates_dir_0700(void **state)
{
    fx *f = *state;
    char sub[128];
    char data[160];
    struct stat sb;
    authd_store *st = NULL;
    authd_store_options o = { .dir = sub }; /* default map size and readers */
    authd_store_options bad = { .dir = NULL };

    snprintf(sub, sizeof sub, "%s/store", f->dir);
    assert_int_equal(authd_store_open(&o, &st), AUTHD_OK);
    assert_non_null(st);
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(data, sizeof data, "%s/data.mdb", sub);
    assert_int_equal(stat(data, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_counts(st, 0, 0);
    authd_store_close(st);
    authd_store_close(NULL);

    st = NULL;
    assert_int_equal(authd_store_open(&bad, &st), AUTHD_INVALID_ARGUMENT);
    assert_null(st);
    assert_int_equal(authd_store_open(NULL, &st), AUTHD_INVALID_ARGUMENT);
}

/* A store written by a later schema is refused; a zero schema is damage. */
static void test_open_schema_version(void **state)
{
    fx *f = *state;
    static const uint8_t v2[4] = { 0, 0, 0, 2 };
    static const uint8_t v0[4] = { 0, 0, 0, 0 };
    static const uint8_t v1[4] = { 0, 0, 0, 1 };

    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
    authd_store_close(f->st);
    f->st = NULL;

    raw_put(f->dir, "meta", "schema", 6, v2, sizeof v2);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_FAILED_PRECONDITION);
    raw_put(f->dir, "meta", "schema", 6, v0, sizeof v0);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_DATA_LOSS);
    raw_put(f->dir, "meta", "schema", 6, "1", 1);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_DATA_LOSS);
    raw_put(f->dir, "meta", "schema", 6, v1, sizeof v1);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
}

/* ---- users ---------------------------------------------------------------- */

static void test_user_roundtrip(void **state)
{
    fx *f = *state;
    authd_user u, big, got;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);

    memset(&got, 0xab, sizeof got);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_memory_equal(&got, &u, sizeof u);
    memset(&got, 0xab, sizeof got);
    assert_int_equal(authd_store_user_find_by_username(f->st, "alice", &got), AUTHD_OK);
    assert_memory_equal(&got, &u, sizeof u);
    memset(&got, 0xab, sizeof got);
    assert_int_equal(authd_store_user_find_by_email(f->st, "alice@example.com", &got), AUTHD_OK);
    assert_memory_equal(&got, &u, sizeof u);
    assert_string_equal(got.roles[2], "auditor");
    assert_int_equal(got.created_at, 1700000001);
    assert_int_equal(got.password_changed_at, 1700000201);

    /* Every field at its bound, negative timestamps, disabled. */
    make_user(&big, 2, "", "");
    memset(big.username, 'b', AUTHD_USERNAME_MAX);
    memset(big.email, 'e', AUTHD_EMAIL_MAX);
    memset(big.password_hash, 'h', AUTHD_HASH_MAX - 1);
    big.status = AUTHD_USER_DISABLED;
    big.n_roles = AUTHD_ROLES_MAX;
    for (int i = 0; i < AUTHD_ROLES_MAX; i++) {
        memset(big.roles[i], 'a' + i, AUTHD_ROLE_MAX);
        big.roles[i][AUTHD_ROLE_MAX] = '\0';
    }
    big.created_at = INT64_MIN;
    big.updated_at = -1;
    big.password_changed_at = INT64_MAX;
    create_ok(f->st, &big);
    assert_int_equal(authd_store_user_find_by_email(f->st, big.email, &got), AUTHD_OK);
    assert_memory_equal(&got, &big, sizeof big);

    assert_counts(f->st, 2, 0);
}

static void test_user_invalid_rejected(void **state)
{
    fx *f = *state;
    authd_user u;

    make_user(&u, 1, "x", "x@example.com");
    memset(u.username, 'a', sizeof u.username); /* not NUL-terminated */
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_INVALID_ARGUMENT);

    make_user(&u, 1, "x", "");
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_INVALID_ARGUMENT);

    make_user(&u, 1, "x", "x@example.com");
    u.status = 7;
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_INVALID_ARGUMENT);

    make_user(&u, 1, "x", "x@example.com");
    u.n_roles = AUTHD_ROLES_MAX + 1;
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_INVALID_ARGUMENT);

    make_user(&u, 1, "x", "x@example.com");
    memset(u.roles[1], 'r', sizeof u.roles[1]);
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_INVALID_ARGUMENT);

    make_user(&u, 1, "x", "x@example.com");
    assert_int_equal(authd_store_user_set_status(f->st, u.id, 3, 5), AUTHD_INVALID_ARGUMENT);

    assert_counts(f->st, 0, 0);
}

static void test_duplicates_leave_nothing_behind(void **state)
{
    fx *f = *state;
    authd_user a, u, got;
    const char *conflict = NULL;

    make_user(&a, 1, "alice", "alice@example.com");
    create_ok(f->st, &a);

    /* Username taken: the new email must not be left in the index. */
    make_user(&u, 2, "alice", "bob@example.com");
    assert_int_equal(authd_store_user_create(f->st, &u, &conflict), AUTHD_ALREADY_EXISTS);
    assert_non_null(conflict);
    assert_string_equal(conflict, "username");
    assert_int_equal(
        authd_store_user_find_by_email(f->st, "bob@example.com", &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_NOT_FOUND);

    /* Email taken: the new username must not be left in the index. */
    make_user(&u, 3, "carol", "alice@example.com");
    conflict = NULL;
    assert_int_equal(authd_store_user_create(f->st, &u, &conflict), AUTHD_ALREADY_EXISTS);
    assert_string_equal(conflict, "email");
    assert_int_equal(authd_store_user_find_by_username(f->st, "carol", &got), AUTHD_NOT_FOUND);

    /* Id taken. */
    make_user(&u, 1, "dave", "dave@example.com");
    conflict = NULL;
    assert_int_equal(authd_store_user_create(f->st, &u, &conflict), AUTHD_ALREADY_EXISTS);
    assert_string_equal(conflict, "id");
    assert_int_equal(authd_store_user_find_by_username(f->st, "dave", &got), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_find_by_email(f->st, "dave@example.com", &got), AUTHD_NOT_FOUND);

    /* NULL conflict is allowed. */
    assert_int_equal(authd_store_user_create(f->st, &a, NULL), AUTHD_ALREADY_EXISTS);

    /* The names the failed creates tried are all still free. */
    make_user(&u, 4, "carol", "bob@example.com");
    create_ok(f->st, &u);
    make_user(&u, 5, "dave", "dave@example.com");
    create_ok(f->st, &u);
    assert_counts(f->st, 3, 0);

    /* And the original is untouched. */
    assert_int_equal(authd_store_user_find_by_username(f->st, "alice", &got), AUTHD_OK);
    assert_memory_equal(&got, &a, sizeof a);
}

/* A batch is all or nothing: a collision with the store, inside the batch
 * or an unstorable user anywhere leaves no trace, and names the culprit. */
static void test_user_create_batch(void **state)
{
    fx *f = *state;
    enum { N = 2000 };
    authd_user *b = calloc(N, sizeof *b);
    authd_user got;
    const char *conflict = NULL;
    size_t failed = 9999;
    char name[32], mail[64];

    assert_non_null(b);
    assert_int_equal(authd_store_user_create_batch(f->st, NULL, 0, &failed, &conflict), AUTHD_OK);
    assert_int_equal(authd_store_user_create_batch(NULL, b, 1, NULL, NULL), AUTHD_INVALID_ARGUMENT);
    for (uint32_t i = 0; i < N; i++) {
        snprintf(name, sizeof name, "seed%07u", i);
        snprintf(mail, sizeof mail, "seed%07u@example.com", i);
        make_user(&b[i], 100 + i, name, mail);
    }

    /* A duplicate username inside the batch: nothing written. */
    memcpy(b[N - 1].username, b[7].username, sizeof b[0].username);
    assert_int_equal(
        authd_store_user_create_batch(f->st, b, N, &failed, &conflict), AUTHD_ALREADY_EXISTS);
    assert_int_equal(failed, N - 1);
    assert_string_equal(conflict, "username");
    assert_counts(f->st, 0, 0);
    assert_int_equal(
        authd_store_user_find_by_username(f->st, "seed0000007", &got), AUTHD_NOT_FOUND);
    snprintf(b[N - 1].username, sizeof b[0].username, "seed%07u", N - 1);

    /* An unstorable user is refused before the transaction. */
    b[5].status = 0;
    failed = 9999;
    assert_int_equal(
        authd_store_user_create_batch(f->st, b, N, &failed, NULL), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(failed, 5);
    assert_counts(f->st, 0, 0);
    b[5].status = AUTHD_USER_ACTIVE;

    /* An email already in the store. */
    make_user(&got, 1, "alice", "seed0001234@example.com");
    create_ok(f->st, &got);
    conflict = NULL;
    assert_int_equal(
        authd_store_user_create_batch(f->st, b, N, &failed, &conflict), AUTHD_ALREADY_EXISTS);
    assert_int_equal(failed, 1234);
    assert_string_equal(conflict, "email");
    assert_counts(f->st, 1, 0);
    snprintf(b[1234].email, sizeof b[0].email, "%s", "seed1234-other@example.com");

    /* The whole batch, then every user readable by id, name and email. */
    conflict = NULL;
    failed = 9999;
    assert_int_equal(authd_store_user_create_batch(f->st, b, N, &failed, &conflict), AUTHD_OK);
    assert_null(conflict);
    assert_int_equal(failed, 9999);
    assert_counts(f->st, N + 1, 0);
    for (uint32_t i = 0; i < N; i += 97) {
        memset(&got, 0xab, sizeof got);
        assert_int_equal(authd_store_user_get(f->st, b[i].id, &got), AUTHD_OK);
        assert_memory_equal(&got, &b[i], sizeof got);
        assert_int_equal(authd_store_user_find_by_username(f->st, b[i].username, &got), AUTHD_OK);
        assert_memory_equal(got.id, b[i].id, AUTHD_ID_BYTES);
        assert_int_equal(authd_store_user_find_by_email(f->st, b[i].email, &got), AUTHD_OK);
        assert_memory_equal(got.id, b[i].id, AUTHD_ID_BYTES);
    }

    /* The same batch again collides on its first user. */
    assert_int_equal(
        authd_store_user_create_batch(f->st, b, N, &failed, &conflict), AUTHD_ALREADY_EXISTS);
    assert_int_equal(failed, 0);
    assert_string_equal(conflict, "username");
    fx_reopen(f);
    assert_counts(f->st, N + 1, 0);
    free(b);
}

static void test_not_found(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    authd_user u, got, pattern;
    authd_session s, sgot, spattern;
    uint8_t nobody[AUTHD_ID_BYTES];
    char longname[300];

    make_id(nobody, 'u', 999);
    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);

    memset(&pattern, 0xab, sizeof pattern);
    memset(&spattern, 0xcd, sizeof spattern);
    got = pattern;
    sgot = spattern;
    assert_int_equal(authd_store_user_get(f->st, nobody, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_find_by_username(f->st, "bob", &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_find_by_username(f->st, "", &got), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_find_by_username(f->st, "alice@example.com", &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_find_by_email(f->st, "alice", &got), AUTHD_NOT_FOUND);
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(authd_store_user_find_by_email(f->st, longname, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_find_by_username(f->st, longname, &got), AUTHD_NOT_FOUND);
    assert_memory_equal(&got, &pattern, sizeof got); /* out untouched on failure */

    make_session(&s, 1, u.id, 100, 200);
    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_session_revoke(f->st, s.id, 150), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_set_status(f->st, nobody, AUTHD_USER_DISABLED, 5), AUTHD_NOT_FOUND);

    make_session(&s, 2, nobody, 100, 200);
    assert_int_equal(authd_store_login_commit(f->st, nobody, NULL, &s, 100), AUTHD_NOT_FOUND);
    assert_counts(f->st, 1, 0);
}

/* Two threads race to create the same username, many rounds: LMDB's one
 * writer plus MDB_NOOVERWRITE must make exactly one win each round. */
#define RACE_ROUNDS 200

struct race {
    authd_store *st;
    pthread_barrier_t bar;
};

struct race_arg {
    struct race *r;
    int tid;
    authd_code code[RACE_ROUNDS];
    const char *conflict[RACE_ROUNDS];
};

static void *race_main(void *p)
{
    struct race_arg *a = p;
    authd_user u;
    char name[AUTHD_USERNAME_MAX + 1];
    char mail[64];

    for (int i = 0; i < RACE_ROUNDS; i++) {
        snprintf(name, sizeof name, "race%d", i);
        snprintf(mail, sizeof mail, "race%d-t%d@example.com", i, a->tid);
        make_user(&u, (uint32_t)(i * 2 + a->tid), name, mail);
        a->conflict[i] = NULL;
        pthread_barrier_wait(&a->r->bar);
        a->code[i] = authd_store_user_create(a->r->st, &u, &a->conflict[i]);
    }
    return NULL;
}

static void test_create_race_one_winner(void **state)
{
    fx *f = *state;
    struct race r;
    static struct race_arg args[2];
    pthread_t th[2];
    authd_user got;
    char name[AUTHD_USERNAME_MAX + 1];

    r.st = f->st;
    assert_int_equal(pthread_barrier_init(&r.bar, NULL, 2), 0);
    for (int t = 0; t < 2; t++) {
        args[t].r = &r;
        args[t].tid = t;
        assert_int_equal(pthread_create(&th[t], NULL, race_main, &args[t]), 0);
    }
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    pthread_barrier_destroy(&r.bar);

    for (int i = 0; i < RACE_ROUNDS; i++) {
        int winner = -1;
        int wins = 0;
        for (int t = 0; t < 2; t++) {
            if (args[t].code[i] == AUTHD_OK) {
                wins++;
                winner = t;
                assert_null(args[t].conflict[i]);
            } else {
                assert_int_equal(args[t].code[i], AUTHD_ALREADY_EXISTS);
                assert_non_null(args[t].conflict[i]);
                assert_string_equal(args[t].conflict[i], "username");
            }
        }
        assert_int_equal(wins, 1);
        snprintf(name, sizeof name, "race%d", i);
        assert_int_equal(authd_store_user_find_by_username(f->st, name, &got), AUTHD_OK);
        assert_int_equal(got.id[15], (uint8_t)(i * 2 + winner));
    }
    assert_counts(f->st, RACE_ROUNDS, 0);
}

/* ---- sessions --------------------------------------------------------------- */

static void test_login_commit(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    authd_user u, other, got;
    authd_session s, s2, sgot;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_user(&other, 2, "bob", "bob@example.com");
    create_ok(f->st, &other);

    /* No rehash: the user record is untouched. */
    make_session(&s, 1, u.id, 1000, 4600);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 1000), AUTHD_OK);
    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_OK);
    assert_memory_equal(&sgot, &s, sizeof s);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_memory_equal(&got, &u, sizeof u);

    /* verify_lookup returns the session and its user. */
    memset(&view, 0xab, sizeof view);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_OK);
    view_is(&view, &s, &u);

    /* Rehash: hash replaced, updated_at = now, password_changed_at kept. */
    make_session(&s2, 2, u.id, 2000, 5600);
    assert_int_equal(authd_store_login_commit(f->st, u.id, HASH_B, &s2, 2000), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_string_equal(got.password_hash, HASH_B);
    assert_int_equal(got.updated_at, 2000);
    assert_int_equal(got.password_changed_at, u.password_changed_at);
    assert_int_equal(got.created_at, u.created_at);
    assert_int_equal(authd_store_session_get(f->st, s2.id, &sgot), AUTHD_OK);
    assert_memory_equal(&sgot, &s2, sizeof s2);

    /* A duplicate session id fails as a whole: the rehash is not kept. */
    assert_int_equal(
        authd_store_login_commit(f->st, u.id, HASH_A, &s2, 3000), AUTHD_ALREADY_EXISTS);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_string_equal(got.password_hash, HASH_B);
    assert_int_equal(got.updated_at, 2000);

    /* The session must belong to the user being logged in. */
    make_session(&s2, 3, other.id, 3000, 6600);
    assert_int_equal(
        authd_store_login_commit(f->st, u.id, NULL, &s2, 3000), AUTHD_INVALID_ARGUMENT);
    assert_counts(f->st, 2, 2);
}

static void test_login_commit_disabled(void **state)
{
    fx *f = *state;
    authd_user u, got;
    authd_session s, sgot;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    assert_int_equal(authd_store_user_set_status(f->st, u.id, AUTHD_USER_DISABLED, 5000), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_int_equal(got.status, AUTHD_USER_DISABLED);
    assert_int_equal(got.updated_at, 5000);
    assert_string_equal(got.password_hash, HASH_A);

    make_session(&s, 1, u.id, 6000, 9600);
    assert_int_equal(
        authd_store_login_commit(f->st, u.id, HASH_B, &s, 6000), AUTHD_FAILED_PRECONDITION);
    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_string_equal(got.password_hash, HASH_A); /* no rehash either */
    assert_counts(f->st, 1, 0);

    /* Nothing left in the expiry index either: a purge finds nothing. */
    size_t purged = 99;
    assert_int_equal(authd_store_purge_expired(f->st, INT64_MAX, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 0);

    assert_int_equal(authd_store_user_set_status(f->st, u.id, AUTHD_USER_ACTIVE, 7000), AUTHD_OK);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 7000), AUTHD_OK);
    assert_counts(f->st, 1, 1);
}

static void test_session_revoke_idempotent(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    authd_user u;
    authd_session s, sgot;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_session(&s, 1, u.id, 1000, 4600);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 1000), AUTHD_OK);

    assert_int_equal(authd_store_session_revoke(f->st, s.id, 1500), AUTHD_OK);
    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_OK);
    assert_true(sgot.revoked);
    assert_int_equal(sgot.revoked_at, 1500);
    assert_int_equal(sgot.expires_at, 4600);

    assert_int_equal(authd_store_session_revoke(f->st, s.id, 2500), AUTHD_OK);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_OK);
    assert_true(view.revoked);
    assert_memory_equal(view.user_id, u.id, AUTHD_ID_BYTES);
    assert_counts(f->st, 1, 1);
}

/* purge walks the expiry index oldest first, including negative expiries
 * (which must sort before positive ones), and stops at max and at now. */
static void test_purge_expired(void **state)
{
    fx *f = *state;
    static const int64_t exp[] = { 400, -5, 200, 100, 300, 250 };
    authd_user u;
    authd_session s, sgot;
    size_t purged = 99;
    uint8_t sid[AUTHD_ID_BYTES];

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    for (uint32_t i = 0; i < sizeof exp / sizeof exp[0]; i++) {
        make_session(&s, i, u.id, -100, exp[i]);
        assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 0), AUTHD_OK);
    }
    /* Revoked sessions are purged like any other. */
    make_id(sid, 's', 3); /* expires 100 */
    assert_int_equal(authd_store_session_revoke(f->st, sid, 50), AUTHD_OK);

    assert_int_equal(authd_store_purge_expired(f->st, 250, 0, &purged), AUTHD_OK);
    assert_int_equal(purged, 0);
    assert_counts(f->st, 1, 6);

    /* max 2: the two oldest (-5 and 100) go. */
    assert_int_equal(authd_store_purge_expired(f->st, 250, 2, &purged), AUTHD_OK);
    assert_int_equal(purged, 2);
    assert_counts(f->st, 1, 4);
    make_id(sid, 's', 1);
    assert_int_equal(authd_store_session_get(f->st, sid, &sgot), AUTHD_NOT_FOUND);
    make_id(sid, 's', 3);
    assert_int_equal(authd_store_session_get(f->st, sid, &sgot), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_session_revoke(f->st, sid, 300), AUTHD_NOT_FOUND);
    make_id(sid, 's', 2);
    assert_int_equal(authd_store_session_get(f->st, sid, &sgot), AUTHD_OK);

    /* expires_at == now is expired; later ones stay. */
    assert_int_equal(authd_store_purge_expired(f->st, 250, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 2); /* 200 and 250 */
    assert_counts(f->st, 1, 2);
    assert_int_equal(authd_store_purge_expired(f->st, 250, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 0);
    make_id(sid, 's', 4);
    assert_int_equal(authd_store_session_get(f->st, sid, &sgot), AUTHD_OK);
    assert_int_equal(sgot.expires_at, 300);
    make_id(sid, 's', 0);
    assert_int_equal(authd_store_session_get(f->st, sid, &sgot), AUTHD_OK);

    assert_int_equal(authd_store_purge_expired(f->st, INT64_MAX, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 2);
    assert_counts(f->st, 1, 0);
}

static void test_reopen_persists(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    authd_user u, u2, got;
    authd_session s, s2, sgot;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_user(&u2, 2, "bob", "bob@example.com");
    create_ok(f->st, &u2);
    make_session(&s, 1, u.id, 1000, 4600);
    assert_int_equal(authd_store_login_commit(f->st, u.id, HASH_B, &s, 1000), AUTHD_OK);
    make_session(&s2, 2, u.id, 1001, 4601);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s2, 1001), AUTHD_OK);
    assert_int_equal(authd_store_session_revoke(f->st, s.id, 1200), AUTHD_OK);
    assert_int_equal(
        authd_store_user_set_status(f->st, u2.id, AUTHD_USER_DISABLED, 1300), AUTHD_OK);

    fx_reopen(f);

    assert_counts(f->st, 2, 2);
    assert_int_equal(authd_store_user_find_by_username(f->st, "alice", &got), AUTHD_OK);
    assert_string_equal(got.password_hash, HASH_B);
    assert_int_equal(got.updated_at, 1000);
    assert_int_equal(authd_store_user_find_by_email(f->st, "bob@example.com", &got), AUTHD_OK);
    assert_int_equal(got.status, AUTHD_USER_DISABLED);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_OK);
    assert_true(view.revoked);
    assert_int_equal(view.status, AUTHD_USER_ACTIVE);
    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_OK);
    assert_int_equal(sgot.revoked_at, 1200);
    assert_int_equal(authd_store_session_get(f->st, s2.id, &sgot), AUTHD_OK);
    assert_false(sgot.revoked);

    /* The expiry index survived too. */
    size_t purged = 0;
    assert_int_equal(authd_store_purge_expired(f->st, 4600, 10, &purged), AUTHD_OK);
    assert_int_equal(purged, 1);
    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_NOT_FOUND);
}

/* Many readers through a pool of only 4 read transactions while a writer
 * adds users and sessions: every lookup must succeed (exceeding the 4
 * reader slots would surface as MDB_READERS_FULL -> INTERNAL). */
#define POOL_READERS 4
#define N_READERS    6
#define N_BASE       8
#define READ_ITERS   20000
#define WRITE_ITERS  300

struct conc {
    authd_store *st;
    pthread_barrier_t bar;
    atomic_int errors;
    atomic_int reads;
    atomic_int writes;
    atomic_bool stop;
    authd_code first_error;
};

struct conc_arg {
    struct conc *c;
    int tid;
};

static void conc_fail(struct conc *c, authd_code code)
{
    if (atomic_fetch_add(&c->errors, 1) == 0)
        c->first_error = code;
}

static void *conc_reader(void *p)
{
    authd_verify_view view;
    struct conc_arg *a = p;
    struct conc *c = a->c;
    authd_user u;
    uint8_t sid[AUTHD_ID_BYTES], uid[AUTHD_ID_BYTES];
    char name[32];
    size_t nu, ns;
    authd_code code;

    pthread_barrier_wait(&c->bar);
    for (int i = 0; i < READ_ITERS; i++) {
        uint32_t n = (uint32_t)(i + a->tid) % N_BASE;
        make_id(sid, 's', n);
        code = authd_store_verify_lookup(c->st, sid, &view);
        if (code != AUTHD_OK) {
            conc_fail(c, code);
            continue;
        }
        snprintf(name, sizeof name, "base%u", n);
        make_id(uid, 'u', n);
        if (memcmp(view.user_id, uid, sizeof uid) != 0 || strcmp(view.username, name) != 0)
            conc_fail(c, AUTHD_UNKNOWN);
        if (i % 64 == 0) {
            if (authd_store_count(c->st, &nu, &ns) != AUTHD_OK || nu < N_BASE || ns < N_BASE)
                conc_fail(c, AUTHD_UNKNOWN);
            if (authd_store_user_find_by_username(c->st, name, &u) != AUTHD_OK)
                conc_fail(c, AUTHD_UNKNOWN);
        }
        atomic_fetch_add(&c->reads, 1);
    }
    return NULL;
}

static void *conc_writer(void *p)
{
    struct conc_arg *a = p;
    struct conc *c = a->c;
    authd_user u;
    authd_session s;
    char name[32], mail[64];

    pthread_barrier_wait(&c->bar);
    for (uint32_t i = 0; i < WRITE_ITERS; i++) {
        snprintf(name, sizeof name, "new%u", i);
        snprintf(mail, sizeof mail, "new%u@example.com", i);
        make_user(&u, 1000 + i, name, mail);
        make_session(&s, 1000 + i, u.id, 10, 100000);
        if (authd_store_user_create(c->st, &u, NULL) != AUTHD_OK
            || authd_store_login_commit(c->st, u.id, HASH_B, &s, 20) != AUTHD_OK
            || authd_store_session_revoke(c->st, s.id, 30) != AUTHD_OK)
            conc_fail(c, AUTHD_INTERNAL);
        atomic_fetch_add(&c->writes, 1);
    }
    return NULL;
}

static void test_verify_lookup_concurrent(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    static struct conc c;
    struct conc_arg args[N_READERS + 1];
    pthread_t th[N_READERS + 1];
    authd_user u;
    authd_session s;
    uint8_t sid[AUTHD_ID_BYTES];
    char name[32], mail[64];

    assert_int_equal(fx_open(f, 64 * MiB, POOL_READERS), AUTHD_OK);
    for (uint32_t n = 0; n < N_BASE; n++) {
        snprintf(name, sizeof name, "base%u", n);
        snprintf(mail, sizeof mail, "base%u@example.com", n);
        make_user(&u, n, name, mail);
        create_ok(f->st, &u);
        make_session(&s, n, u.id, 10, 100000);
        assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 10), AUTHD_OK);
    }

    memset(&c, 0, sizeof c);
    c.st = f->st;
    assert_int_equal(pthread_barrier_init(&c.bar, NULL, N_READERS + 1), 0);
    for (int t = 0; t <= N_READERS; t++) {
        args[t].c = &c;
        args[t].tid = t;
        assert_int_equal(
            pthread_create(&th[t], NULL, t == N_READERS ? conc_writer : conc_reader, &args[t]), 0);
    }
    for (int t = 0; t <= N_READERS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    pthread_barrier_destroy(&c.bar);

    if (atomic_load(&c.errors) != 0)
        print_error("first error: %s\n", authd_code_name(c.first_error));
    assert_int_equal(atomic_load(&c.errors), 0);
    assert_int_equal(atomic_load(&c.reads), N_READERS * READ_ITERS);
    assert_int_equal(atomic_load(&c.writes), WRITE_ITERS);
    assert_counts(f->st, N_BASE + WRITE_ITERS, N_BASE + WRITE_ITERS);
    make_id(sid, 's', 1000 + WRITE_ITERS - 1);
    assert_int_equal(authd_store_verify_lookup(f->st, sid, &view), AUTHD_OK);
    assert_true(view.revoked);
    assert_int_equal(authd_store_session_get(f->st, sid, &s), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, s.user_id, &u), AUTHD_OK);
    assert_string_equal(u.password_hash, HASH_B);
}

/* A pinned reader (what every event loop holds) sees each write made
 * after it was pinned, counts against max_readers while pinned, and gives
 * its slot back when unpinned or when its transaction fails. */
struct pin_arg {
    authd_store *st;
    const uint8_t *sid;
    authd_code code;
};

static void *pin_other_thread(void *p)
{
    struct pin_arg *a = p;
    authd_verify_view view;

    a->code = authd_store_verify_lookup(a->st, a->sid, &view);
    return NULL;
}

static void test_reader_pin(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    authd_user u;
    authd_session s;
    pthread_t t;

    authd_store_close(f->st);
    assert_int_equal(fx_open(f, 64 * MiB, 2), AUTHD_OK);
    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_session(&s, 1, u.id, 10, 1000);

    assert_int_equal(authd_store_reader_pin(f->st), AUTHD_OK);
    assert_int_equal(authd_store_reader_pin(f->st), AUTHD_FAILED_PRECONDITION);
    /* Written after the pin: the pinned transaction is renewed per read. */
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 10), AUTHD_OK);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_OK);
    view_is(&view, &s, &u);
    assert_int_equal(authd_store_session_revoke(f->st, s.id, 20), AUTHD_OK);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_OK);
    assert_true(view.revoked);
    /* Other reads on this thread (through the pool or the pin) still work. */
    assert_int_equal(authd_store_user_get(f->st, u.id, &u), AUTHD_OK);

    /* One of two slots is pinned here: another thread reads with the other. */
    struct pin_arg a = { f->st, s.id, AUTHD_UNKNOWN };
    assert_int_equal(pthread_create(&t, NULL, pin_other_thread, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.code, AUTHD_OK);

    /* Pin and unpin many times over: slots come back (else the pool of 2
     * would run dry and the reads below would wait for ever). */
    authd_store_reader_unpin(f->st);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(authd_store_reader_pin(f->st), AUTHD_OK);
        assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_OK);
        authd_store_reader_unpin(f->st);
    }
    authd_store_reader_unpin(f->st); /* not pinned: nothing happens */
    assert_int_equal(authd_store_reader_pin(f->st), AUTHD_OK);
    for (int i = 0; i < 2; i++) {
        a.code = AUTHD_UNKNOWN;
        assert_int_equal(pthread_create(&t, NULL, pin_other_thread, &a), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(a.code, AUTHD_OK);
    }
    authd_store_reader_unpin(f->st);
}

/* ---- failure modes ---------------------------------------------------------- */

/* A tiny map fills; MDB_MAP_FULL must come back as RESOURCE_EXHAUSTED, be
 * logged, and leave the failed create's index entries unwritten. */
static void test_map_full(void **state)
{
    fx *f = *state;
    char logpath[128];
    char logbuf[8192];
    authd_user u, got;
    char name[32], mail[64];
    authd_code code = AUTHD_OK;
    size_t map;
    uint32_t n;
    int fd;
    ssize_t got_len;

    /* Too small to create the databases at all: refused at open. */
    for (map = 4096; map <= 16 * 1024; map += 4096) {
        assert_int_equal(fx_open(f, map, 0), AUTHD_RESOURCE_EXHAUSTED);
        assert_null(f->st);
    }
    rm_rf(f->dir);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    /* 64 KiB: LMDB needs 5 pages for the databases, leaving a few. */
    assert_int_equal(fx_open(f, 64 * 1024, 0), AUTHD_OK);

    snprintf(logpath, sizeof logpath, "%s/store.log", f->dir);
    fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    authd_log_setup(AUTHD_LOG_ERROR, fd);

    for (n = 0; n < 10000; n++) {
        snprintf(name, sizeof name, "user%u", n);
        snprintf(mail, sizeof mail, "user%u-with-a-long-address@example.com", n);
        make_user(&u, n, name, mail);
        code = authd_store_user_create(f->st, &u, NULL);
        if (code != AUTHD_OK)
            break;
    }
    authd_log_setup(AUTHD_LOG_OFF, 2);
    assert_int_equal(code, AUTHD_RESOURCE_EXHAUSTED);
    assert_true(n > 0);
    print_message("users before MAP_FULL: %u\n", n);

    /* The failed create left nothing; everything before it is readable. */
    assert_int_equal(authd_store_user_find_by_username(f->st, name, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_find_by_email(f->st, mail, &got), AUTHD_NOT_FOUND);
    assert_counts(f->st, n, 0);
    assert_int_equal(authd_store_user_find_by_username(f->st, "user0", &got), AUTHD_OK);

    /* A batch that does not fit is refused whole. */
    {
        authd_user batch[2];
        size_t failed = 99;
        make_user(&batch[0], 90000, "batch0", "batch0@example.com");
        make_user(&batch[1], 90001, "batch1", "batch1@example.com");
        authd_log_setup(AUTHD_LOG_ERROR, fd);
        assert_int_equal(authd_store_user_create_batch(f->st, batch, 2, &failed, NULL),
            AUTHD_RESOURCE_EXHAUSTED);
        authd_log_setup(AUTHD_LOG_OFF, 2);
        assert_true(failed <= 1);
        assert_counts(f->st, n, 0);
        assert_int_equal(authd_store_user_find_by_username(f->st, "batch0", &got), AUTHD_NOT_FOUND);
    }

    got_len = pread(fd, logbuf, sizeof logbuf - 1, 0);
    close(fd);
    assert_true(got_len > 0);
    logbuf[got_len] = '\0';
    assert_non_null(strstr(logbuf, "store_error"));
    assert_non_null(strstr(logbuf, "MDB_MAP_FULL"));
}

/* corrupt_user packs a mutated version of u for variant v. Returns the
 * length, or 0 when the variant is raw garbage written into buf. */
#define N_CORRUPT 14

static size_t corrupt_user(int v, const authd_user *u, uint8_t *buf, size_t cap)
{
    Authd__Store__V1__UserRecord rec = AUTHD__STORE__V1__USER_RECORD__INIT;
    static char big[400];
    static char *many[200];
    static char *roles[AUTHD_ROLES_MAX + 1];
    uint8_t other[AUTHD_ID_BYTES];
    size_t len;

    memset(big, 'z', sizeof big - 1);
    for (int i = 0; i < 200; i++)
        many[i] = big + sizeof big - 1 - AUTHD_ROLE_MAX; /* 64-char roles */
    for (int i = 0; i <= AUTHD_ROLES_MAX; i++)
        roles[i] = (char *)"r";

    rec.schema_version = 1;
    rec.id.data = (uint8_t *)u->id;
    rec.id.len = AUTHD_ID_BYTES;
    rec.username = (char *)u->username;
    rec.email = (char *)u->email;
    rec.password_hash = (char *)u->password_hash;
    rec.status = u->status;
    rec.created_at = u->created_at;

    switch (v) {
    case 0: /* not protobuf at all */
        memset(buf, 0xff, 40);
        return 40;
    case 1:
        rec.schema_version = 0;
        break;
    case 2:
        rec.schema_version = 2;
        break;
    case 3:
        rec.id.len = AUTHD_ID_BYTES - 1;
        break;
    case 4: /* a valid id, but not the key it is stored under */
        memcpy(other, u->id, sizeof other);
        other[1] ^= 1;
        rec.id.data = other;
        break;
    case 5:
        rec.username = big + sizeof big - 1 - (AUTHD_USERNAME_MAX + 1);
        break;
    case 6:
        rec.email = big + sizeof big - 1 - (AUTHD_EMAIL_MAX + 1);
        break;
    case 7:
        rec.password_hash = big + sizeof big - 1 - AUTHD_HASH_MAX;
        break;
    case 8:
        rec.n_roles = AUTHD_ROLES_MAX + 1;
        rec.roles = roles;
        break;
    case 9: /* one role one byte too long */
        roles[0] = big + sizeof big - 1 - (AUTHD_ROLE_MAX + 1);
        rec.n_roles = 1;
        rec.roles = roles;
        break;
    case 10:
        rec.status = 0;
        break;
    case 11: /* large enough to overflow the decode arena */
        rec.n_roles = 200;
        rec.roles = many;
        break;
    case 12:
        rec.username = (char *)"";
        break;
    case 13: /* truncated in the middle */
        break;
    }
    len = authd__store__v1__user_record__get_packed_size(&rec);
    assert_true(len <= cap);
    len = authd__store__v1__user_record__pack(&rec, buf);
    if (v == 13)
        len -= 3;
    return len;
}

static void test_corrupt_records_are_data_loss(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    static uint8_t buf[32768];
    authd_user u[N_CORRUPT + 1], got;
    authd_session s[N_CORRUPT + 1];
    char name[32], mail[64];
    size_t len;

    for (int v = 0; v <= N_CORRUPT; v++) {
        snprintf(name, sizeof name, "user%d", v);
        snprintf(mail, sizeof mail, "user%d@example.com", v);
        make_user(&u[v], (uint32_t)v, name, mail);
        create_ok(f->st, &u[v]);
        make_session(&s[v], (uint32_t)v, u[v].id, 10, 1000);
        assert_int_equal(authd_store_login_commit(f->st, u[v].id, NULL, &s[v], 10), AUTHD_OK);
    }
    authd_store_close(f->st);
    f->st = NULL;
    for (int v = 0; v < N_CORRUPT; v++) {
        len = corrupt_user(v, &u[v], buf, sizeof buf);
        raw_put(f->dir, "users", u[v].id, AUTHD_ID_BYTES, buf, len);
    }
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);

    for (int v = 0; v < N_CORRUPT; v++) {
        memset(&got, 0xab, sizeof got);
        assert_int_equal(authd_store_user_get(f->st, u[v].id, &got), AUTHD_DATA_LOSS);
        assert_int_equal(got.id[0], 0xab);
        assert_int_equal(
            authd_store_user_find_by_username(f->st, u[v].username, &got), AUTHD_DATA_LOSS);
        assert_int_equal(authd_store_user_find_by_email(f->st, u[v].email, &got), AUTHD_DATA_LOSS);
        assert_int_equal(authd_store_verify_lookup(f->st, s[v].id, &view), AUTHD_DATA_LOSS);
        assert_int_equal(
            authd_store_login_commit(f->st, u[v].id, NULL, &s[v], 10), AUTHD_DATA_LOSS);
        assert_int_equal(
            authd_store_user_set_status(f->st, u[v].id, AUTHD_USER_DISABLED, 1), AUTHD_DATA_LOSS);
    }
    /* The untouched user still reads fine. */
    assert_int_equal(authd_store_verify_lookup(f->st, s[N_CORRUPT].id, &view), AUTHD_OK);
    view_is(&view, &s[N_CORRUPT], &u[N_CORRUPT]);
    assert_int_equal(authd_store_user_get(f->st, u[N_CORRUPT].id, &got), AUTHD_OK);
    assert_memory_equal(&got, &u[N_CORRUPT], sizeof got);
}

static void test_corrupt_sessions_and_indexes(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    Authd__Store__V1__SessionRecord rec = AUTHD__STORE__V1__SESSION_RECORD__INIT;
    uint8_t buf[128];
    uint8_t garbage[24];
    uint8_t missing[AUTHD_ID_BYTES];
    authd_user a, b, c, got;
    authd_session s[4], sgot;
    size_t len;

    make_user(&a, 1, "alice", "alice@example.com");
    make_user(&b, 2, "bob", "bob@example.com");
    make_user(&c, 3, "carol", "carol@example.com");
    create_ok(f->st, &a);
    create_ok(f->st, &b);
    create_ok(f->st, &c);
    for (uint32_t i = 0; i < 4; i++) {
        make_session(&s[i], i, a.id, 10, 1000);
        assert_int_equal(authd_store_login_commit(f->st, a.id, NULL, &s[i], 10), AUTHD_OK);
    }
    authd_store_close(f->st);
    f->st = NULL;

    memset(garbage, 0xff, sizeof garbage);
    raw_put(f->dir, "sessions", s[0].id, AUTHD_ID_BYTES, garbage, sizeof garbage);
    rec.schema_version = 2;
    rec.user_id.data = a.id;
    rec.user_id.len = AUTHD_ID_BYTES;
    len = authd__store__v1__session_record__pack(&rec, buf);
    raw_put(f->dir, "sessions", s[1].id, AUTHD_ID_BYTES, buf, len);
    rec.schema_version = 1;
    rec.user_id.len = AUTHD_ID_BYTES - 1;
    len = authd__store__v1__session_record__pack(&rec, buf);
    raw_put(f->dir, "sessions", s[2].id, AUTHD_ID_BYTES, buf, len);
    /* Indexes: a value that is not an id; an id with no user behind it. */
    raw_put(f->dir, "users_by_username", "bob", 3, "short", 5);
    make_id(missing, 'u', 77);
    raw_put(f->dir, "users_by_email", "carol@example.com", 17, missing, sizeof missing);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(authd_store_session_get(f->st, s[i].id, &sgot), AUTHD_DATA_LOSS);
        assert_int_equal(authd_store_verify_lookup(f->st, s[i].id, &view), AUTHD_DATA_LOSS);
        assert_int_equal(authd_store_session_revoke(f->st, s[i].id, 20), AUTHD_DATA_LOSS);
    }
    assert_int_equal(authd_store_verify_lookup(f->st, s[3].id, &view), AUTHD_OK);
    assert_int_equal(authd_store_user_find_by_username(f->st, "bob", &got), AUTHD_DATA_LOSS);
    assert_int_equal(authd_store_user_find_by_email(f->st, "bob@example.com", &got), AUTHD_OK);
    assert_int_equal(
        authd_store_user_find_by_email(f->st, "carol@example.com", &got), AUTHD_DATA_LOSS);
    assert_int_equal(authd_store_user_find_by_username(f->st, "carol", &got), AUTHD_OK);

    /* Purge still removes the damaged sessions (it reads only the index). */
    size_t purged = 0;
    assert_int_equal(authd_store_purge_expired(f->st, 1000, 10, &purged), AUTHD_OK);
    assert_int_equal(purged, 4);
    assert_counts(f->st, 3, 0);
}

/* A session whose user has vanished: verify_lookup is NOT_FOUND. */
static void test_verify_lookup_user_gone(void **state)
{
    fx *f = *state;
    authd_verify_view view;
    authd_user u;
    authd_session s, sgot;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_session(&s, 1, u.id, 10, 1000);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 10), AUTHD_OK);
    authd_store_close(f->st);
    f->st = NULL;
    raw_put(f->dir, "users", u.id, AUTHD_ID_BYTES, NULL, 0);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);

    assert_int_equal(authd_store_session_get(f->st, s.id, &sgot), AUTHD_OK);
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &view), AUTHD_NOT_FOUND);
}

/* ---- login throttle ------------------------------------------------------------ */

static const authd_throttle_policy test_policy = {
    .free_attempts = 3,
    .base_delay_ms = 1000,
    .max_delay_ms = 4000,
    .lockout = 8,
    .reset_after_ms = 3600 * 1000,
};

static int begin(fx *f, int kind, const char *login, int64_t now_ms, bool *found, authd_user *u,
    authd_throttle_state *s)
{
    int v = 0;
    bool fd = false;
    authd_user tmp;
    assert_int_equal(authd_store_login_begin(f->st, kind, login, &test_policy, now_ms, &fd,
                         u != NULL ? u : &tmp, &v, s),
        AUTHD_OK);
    if (found != NULL)
        *found = fd;
    return v;
}

/* The schedule: free attempts at once, then a doubling delay up to the
 * cap, measured from the previous counted attempt; refused attempts are
 * not counted; the attempt that reaches the lockout locks. */
static void test_throttle_schedule(void **state)
{
    fx *f = *state;
    authd_user u, got;
    authd_throttle_state s;
    bool found = false;
    int64_t t = 1800000000000;

    make_user(&u, 1, "tina", "tina@example.com");
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_OK);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(
            begin(f, AUTHD_LOGIN_USERNAME, "tina", t, &found, &got, &s), AUTHD_LOGIN_ALLOWED);
        assert_true(found);
        assert_memory_equal(got.id, u.id, AUTHD_ID_BYTES);
        assert_int_equal(s.failures, (uint32_t)i);
    }
    /* Attempt 4 waits 1 s, 5 waits 2 s, 6 waits 4 s, 7 and 8 the 4 s cap. */
    int64_t waits[] = { 1000, 2000, 4000, 4000, 4000 };
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s.retry_at_ms, t + waits[i]);
        assert_int_equal(begin(f, AUTHD_LOGIN_USERNAME, "tina", t + waits[i] - 1, NULL, NULL, &s),
            AUTHD_LOGIN_THROTTLED);
        assert_int_equal(s.failures, (uint32_t)(3 + i)); /* not counted */
        t += waits[i];
        assert_int_equal(
            begin(f, AUTHD_LOGIN_USERNAME, "tina", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
        assert_int_equal(s.failures, (uint32_t)(4 + i));
    }
    assert_true(s.locked); /* the 8th counted attempt reached the lockout */
    assert_int_equal(begin(f, AUTHD_LOGIN_USERNAME, "tina", t + 86400000LL * 365, NULL, NULL, &s),
        AUTHD_LOGIN_LOCKED);
    assert_int_equal(s.failures, 8);
}

/* Username and email name one account: one counter. */
static void test_throttle_aliases_count_once(void **state)
{
    fx *f = *state;
    authd_user u;
    authd_throttle_state s;
    int64_t t = 1800000000000;

    make_user(&u, 2, "ann", "ann@example.com");
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_OK);
    assert_int_equal(begin(f, AUTHD_LOGIN_USERNAME, "ann", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_EMAIL, "ann@example.com", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(begin(f, AUTHD_LOGIN_USERNAME, "ann", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(s.failures, 3);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_EMAIL, "ann@example.com", t, NULL, NULL, &s), AUTHD_LOGIN_THROTTLED);
    assert_int_equal(authd_store_login_throttle_get(
                         f->st, AUTHD_LOGIN_EMAIL, "ann@example.com", &test_policy, t, &s),
        AUTHD_OK);
    assert_int_equal(s.failures, 3);
}

/* An identifier that names no user is counted on the same schedule, under
 * its own key: unknown spellings do not share a counter with each other or
 * with an account, and the kind is part of the key. */
static void test_throttle_unknown_identifiers(void **state)
{
    fx *f = *state;
    authd_throttle_state s;
    bool found = true;
    int64_t t = 1800000000000;

    for (int i = 0; i < 3; i++)
        assert_int_equal(
            begin(f, AUTHD_LOGIN_USERNAME, "ghost", t, &found, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_false(found);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_USERNAME, "ghost", t, NULL, NULL, &s), AUTHD_LOGIN_THROTTLED);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_EMAIL, "ghost@example.com", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(s.failures, 1);
    assert_int_equal(begin(f, AUTHD_LOGIN_OTHER, "ghost", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(s.failures, 1);
    /* The counter survives a reopen (the hash key is the store's, not the
     * process's). */
    fx_reopen(f);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_USERNAME, "ghost", t, NULL, NULL, &s), AUTHD_LOGIN_THROTTLED);
    assert_int_equal(s.failures, 3);
}

/* A success (login commit) clears the counter; a refused commit does not;
 * unlock clears a lockout, by login or by user id. */
static void test_throttle_reset_and_unlock(void **state)
{
    fx *f = *state;
    authd_user u;
    authd_session ses;
    authd_throttle_state s, before;
    bool found = false;
    int64_t t = 1800000000000;

    make_user(&u, 3, "bob", "bob@example.com");
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            begin(f, AUTHD_LOGIN_USERNAME, "bob", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    make_session(&ses, 1, u.id, 1800000000, 1800000900);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &ses, 1800000000), AUTHD_OK);
    assert_int_equal(
        authd_store_login_throttle_get(f->st, AUTHD_LOGIN_USERNAME, "bob", &test_policy, t, &s),
        AUTHD_OK);
    assert_int_equal(s.failures, 0);

    /* Lock it: 8 counted attempts, each after its delay. */
    for (int i = 0; i < 8; i++) {
        assert_int_equal(
            begin(f, AUTHD_LOGIN_USERNAME, "bob", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
        t += 10000;
    }
    assert_true(s.locked);
    /* A disabled user's refused commit leaves the lockout in place. */
    assert_int_equal(authd_store_user_set_status(f->st, u.id, AUTHD_USER_DISABLED, 1), AUTHD_OK);
    make_session(&ses, 2, u.id, 1800000000, 1800000900);
    assert_int_equal(
        authd_store_login_commit(f->st, u.id, NULL, &ses, 1800000000), AUTHD_FAILED_PRECONDITION);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_EMAIL, "bob@example.com", t, NULL, NULL, &s), AUTHD_LOGIN_LOCKED);

    assert_int_equal(
        authd_store_login_unlock(f->st, AUTHD_LOGIN_EMAIL, "bob@example.com", &found, &before),
        AUTHD_OK);
    assert_true(found);
    assert_true(before.locked);
    assert_int_equal(before.failures, 8);
    assert_int_equal(begin(f, AUTHD_LOGIN_USERNAME, "bob", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(s.failures, 1);

    assert_int_equal(authd_store_user_unlock(f->st, u.id), AUTHD_OK);
    assert_int_equal(
        authd_store_login_throttle_get(f->st, AUTHD_LOGIN_USERNAME, "bob", &test_policy, t, &s),
        AUTHD_OK);
    assert_int_equal(s.failures, 0);
    uint8_t nobody[AUTHD_ID_BYTES];
    make_id(nobody, 'u', 999);
    assert_int_equal(authd_store_user_unlock(f->st, nobody), AUTHD_NOT_FOUND);
}

/* After a quiet reset_after_ms an unlocked counter starts again and is
 * purged; a locked one is neither reset nor purged. */
static void test_throttle_quiet_reset_and_purge(void **state)
{
    fx *f = *state;
    authd_throttle_state s;
    size_t purged = 99;
    int64_t t = 1800000000000;

    for (int i = 0; i < 3; i++)
        assert_int_equal(
            begin(f, AUTHD_LOGIN_USERNAME, "quiet", t, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    for (int i = 0; i < 8; i++)
        assert_int_equal(begin(f, AUTHD_LOGIN_USERNAME, "locked", t + i * 10000, NULL, NULL, &s),
            AUTHD_LOGIN_ALLOWED);
    assert_true(s.locked);
    assert_int_equal(
        authd_store_throttle_purge(f->st, &test_policy, t + 1000, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 0);
    int64_t later = t + test_policy.reset_after_ms + 100000;
    assert_int_equal(authd_store_login_throttle_get(
                         f->st, AUTHD_LOGIN_USERNAME, "quiet", &test_policy, later, &s),
        AUTHD_OK);
    assert_int_equal(s.failures, 0);
    assert_int_equal(
        authd_store_throttle_purge(f->st, &test_policy, later, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 1);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_USERNAME, "locked", later, NULL, NULL, &s), AUTHD_LOGIN_LOCKED);
    assert_int_equal(
        begin(f, AUTHD_LOGIN_USERNAME, "quiet", later, NULL, NULL, &s), AUTHD_LOGIN_ALLOWED);
    assert_int_equal(s.failures, 1);
}

struct throttle_race {
    authd_store *st;
    pthread_barrier_t bar;
    _Atomic int allowed;
};

static void *throttle_race_main(void *arg)
{
    struct throttle_race *r = arg;
    authd_user u;
    bool found;
    int v;

    pthread_barrier_wait(&r->bar);
    for (int i = 0; i < 25; i++) {
        if (authd_store_login_begin(r->st, i % 2 ? AUTHD_LOGIN_EMAIL : AUTHD_LOGIN_USERNAME,
                i % 2 ? "race@example.com" : "racer", &test_policy, 1800000000000, &found, &u, &v,
                NULL)
                == AUTHD_OK
            && v == AUTHD_LOGIN_ALLOWED)
            atomic_fetch_add(&r->allowed, 1);
    }
    return NULL;
}

/* 8 threads x 25 attempts at one instant, by both aliases: exactly the 3
 * free attempts get through (no read-modify-write race). */
static void test_throttle_parallel_attempts(void **state)
{
    fx *f = *state;
    struct throttle_race r = { .st = f->st, .allowed = 0 };
    pthread_t th[8];
    authd_user u;

    make_user(&u, 4, "racer", "race@example.com");
    assert_int_equal(authd_store_user_create(f->st, &u, NULL), AUTHD_OK);
    assert_int_equal(pthread_barrier_init(&r.bar, NULL, 8), 0);
    for (int t = 0; t < 8; t++)
        assert_int_equal(pthread_create(&th[t], NULL, throttle_race_main, &r), 0);
    for (int t = 0; t < 8; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    pthread_barrier_destroy(&r.bar);
    assert_int_equal(atomic_load(&r.allowed), 3);
}

static void test_throttle_bad_arguments(void **state)
{
    fx *f = *state;
    authd_throttle_policy bad = test_policy;
    authd_user u;
    bool found;
    int v;

    bad.lockout = AUTHD_LOCKOUT_MAX + 1;
    assert_false(authd_throttle_policy_valid(&bad));
    assert_int_equal(
        authd_store_login_begin(f->st, AUTHD_LOGIN_USERNAME, "x", &bad, 0, &found, &u, &v, NULL),
        AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_store_login_begin(f->st, 9, "x", &test_policy, 0, &found, &u, &v, NULL),
        AUTHD_INVALID_ARGUMENT);
    assert_int_equal(authd_store_login_begin(
                         f->st, AUTHD_LOGIN_USERNAME, "", &test_policy, 0, &found, &u, &v, NULL),
        AUTHD_INVALID_ARGUMENT);
}

/* ---- refresh families ------------------------------------------------------- */

/* fam_login opens session n of a new user with family gen 1, token hash
 * filled with tag; session created at 1000 s (Unix), ending at 1000 + 100. */
static void fam_login(fx *f, uint32_t n, authd_session *s, uint8_t tag)
{
    authd_user u;
    authd_refresh_family fam;
    char name[32], mail[64];

    snprintf(name, sizeof name, "fam%u", n);
    snprintf(mail, sizeof mail, "fam%u@example.com", n);
    make_user(&u, 500 + n, name, mail);
    create_ok(f->st, &u);
    make_session(s, 500 + n, u.id, 1000, 1100);
    memset(&fam, 0, sizeof fam);
    fam.generation = 1;
    memset(fam.token_hash, tag, sizeof fam.token_hash);
    fam.issued_at = 1000;
    fam.access_expires_at = 1010;
    assert_int_equal(authd_store_login_commit_family(f->st, u.id, NULL, s, &fam, 1000), AUTHD_OK);
}

static authd_refresh_request fam_req(
    const authd_session *s, uint32_t gen, uint8_t tag, uint8_t child, int64_t now_ms)
{
    authd_refresh_request rq;

    memset(&rq, 0, sizeof rq);
    memcpy(rq.session_id, s->id, AUTHD_ID_BYTES);
    rq.generation = gen;
    memset(rq.token_hash, tag, sizeof rq.token_hash);
    memset(rq.new_hash, child, sizeof rq.new_hash);
    memset(rq.new_box, child, sizeof rq.new_box);
    rq.now_ms = now_ms;
    rq.policy.idle_ttl = 100;
    rq.policy.max_ttl = 150;
    rq.policy.token_ttl = 10;
    rq.policy.grace_ms = 5000;
    return rq;
}

static int fam_exchange(fx *f, const authd_refresh_request *rq, authd_refresh_family *fam)
{
    authd_session s;
    authd_user u;
    authd_refresh_family tmp;
    int oc = 0;

    assert_int_equal(
        authd_store_refresh_exchange(f->st, rq, &oc, &s, &u, fam ? fam : &tmp), AUTHD_OK);
    return oc;
}

/* Rotation, grace replay, reuse after grace and of older generations,
 * unknown tokens; the session's end and its expiry index move on rotation. */
static void test_refresh_family_lifecycle(void **state)
{
    fx *f = *state;
    authd_session s, s2, got;
    authd_refresh_family fam;
    authd_refresh_request rq;
    size_t purged = 0;

    fam_login(f, 1, &s, 0x11);
    fam_login(f, 2, &s2, 0x22);
    /* Unknown: wrong hash at the right generation, a future generation. */
    rq = fam_req(&s, 1, 0x99, 0x12, 1001000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_UNKNOWN);
    rq = fam_req(&s, 7, 0x11, 0x12, 1001000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_UNKNOWN);
    /* Rotate at t = 1050 s: the end moves to min(1000 + 150, 1050 + 100). */
    rq = fam_req(&s, 1, 0x11, 0x12, 1050000);
    assert_int_equal(fam_exchange(f, &rq, &fam), AUTHD_REFRESH_ROTATED);
    assert_int_equal(fam.generation, 2);
    assert_int_equal(fam.issued_at, 1050);
    assert_int_equal(fam.access_expires_at, 1060);
    assert_int_equal(authd_store_session_get(f->st, s.id, &got), AUTHD_OK);
    assert_int_equal(got.expires_at, 1150);
    assert_false(got.revoked);
    /* The parent again, within grace: the same child, nothing written. */
    rq = fam_req(&s, 1, 0x11, 0x13, 1054999);
    assert_int_equal(fam_exchange(f, &rq, &fam), AUTHD_REFRESH_REPLAYED);
    assert_int_equal(fam.generation, 2);
    assert_int_equal(fam.token_hash[0], 0x12);
    assert_int_equal(fam.child_box[0], 0x12);
    assert_int_equal(authd_store_refresh_get(f->st, s.id, &fam), AUTHD_OK);
    assert_int_equal(fam.generation, 2);
    /* The child rotates once more; the grandparent then revokes. */
    rq = fam_req(&s, 2, 0x12, 0x14, 1055000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_ROTATED);
    rq = fam_req(&s, 1, 0x11, 0x15, 1055001);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_REUSED);
    assert_int_equal(authd_store_session_get(f->st, s.id, &got), AUTHD_OK);
    assert_true(got.revoked);
    rq = fam_req(&s, 3, 0x14, 0x16, 1055002);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_REVOKED);
    /* The other session: the parent after grace revokes it too. */
    rq = fam_req(&s2, 1, 0x22, 0x23, 1001000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_ROTATED);
    rq = fam_req(&s2, 1, 0x22, 0x24, 1006000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_REUSED);
    /* Absolute end: no rotation at or after 1150 (s2 ends at 1101). */
    /* Purge at 1200 takes both sessions and both families. */
    assert_int_equal(authd_store_purge_expired(f->st, 1200, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 2);
    assert_int_equal(authd_store_refresh_get(f->st, s.id, &fam), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_refresh_get(f->st, s2.id, &fam), AUTHD_NOT_FOUND);
}

/* Expiry: idle end and absolute end; a disabled user, a deleted one. */
static void test_refresh_family_expiry_and_user(void **state)
{
    fx *f = *state;
    authd_session s, s2;
    authd_refresh_request rq;
    authd_refresh_family fam;

    fam_login(f, 3, &s, 0x31);
    rq = fam_req(&s, 1, 0x31, 0x32, 1100000); /* the session ends at 1100 */
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_EXPIRED);
    rq = fam_req(&s, 1, 0x31, 0x32, 1099000);
    assert_int_equal(fam_exchange(f, &rq, &fam), AUTHD_REFRESH_ROTATED);
    rq = fam_req(&s, 2, 0x32, 0x33, 1149000); /* capped at 1000 + 150 */
    assert_int_equal(fam_exchange(f, &rq, &fam), AUTHD_REFRESH_ROTATED);
    assert_int_equal(fam.access_expires_at, 1150);
    rq = fam_req(&s, 3, 0x33, 0x34, 1150000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_EXPIRED);

    fam_login(f, 4, &s2, 0x41);
    assert_int_equal(
        authd_store_user_set_status(f->st, s2.user_id, AUTHD_USER_DISABLED, 1001), AUTHD_OK);
    rq = fam_req(&s2, 1, 0x41, 0x42, 1001000);
    /* Disabling revoked the session in the same transaction, and REVOKED
     * is decided before the user is read. */
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_REVOKED);
    /* A session without a family (opened by authd_store_login_commit). */
    authd_session s3;
    make_session(&s3, 600, s2.user_id, 1000, 1100);
    assert_int_equal(
        authd_store_user_set_status(f->st, s2.user_id, AUTHD_USER_ACTIVE, 1001), AUTHD_OK);
    assert_int_equal(authd_store_login_commit(f->st, s2.user_id, NULL, &s3, 1000), AUTHD_OK);
    rq = fam_req(&s3, 1, 0x41, 0x42, 1001000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_UNKNOWN);
    /* A user record gone from under a live session with a family (planted
     * with raw LMDB while the store is closed; authd_store_user_delete
     * would have removed the session too): refused as USER_DISABLED. */
    authd_session s4;
    authd_refresh_family fam4;
    make_session(&s4, 601, s2.user_id, 1000, 1100);
    memset(&fam4, 0, sizeof fam4);
    fam4.generation = 1;
    memset(fam4.token_hash, 0x51, sizeof fam4.token_hash);
    assert_int_equal(
        authd_store_login_commit_family(f->st, s2.user_id, NULL, &s4, &fam4, 1000), AUTHD_OK);
    authd_store_close(f->st);
    f->st = NULL;
    raw_put(f->dir, "users", s2.user_id, AUTHD_ID_BYTES, NULL, 0);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
    rq = fam_req(&s4, 1, 0x51, 0x52, 1001000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_USER_DISABLED);
}

#define FAM_RACERS 16

struct fam_race {
    authd_store *st;
    authd_refresh_request rq;
    pthread_barrier_t *bar;
    int outcome;
    authd_code rc;
};

static void *fam_racer(void *p)
{
    struct fam_race *r = p;
    authd_session s;
    authd_user u;
    authd_refresh_family fam;

    pthread_barrier_wait(r->bar);
    r->rc = authd_store_refresh_exchange(r->st, &r->rq, &r->outcome, &s, &u, &fam);
    return NULL;
}

/* FAM_RACERS threads exchange one token at once, each with its own
 * child, straight on the store (no write pool in front): exactly one
 * rotates; with no grace window every other one finds a used token. */
/* LogoutAll's and ChangePassword's writes: every live session of the user
 * but the excepted one is revoked, other users' and already dead ones are
 * left alone, a second call revokes none; a password change sets the hash,
 * clears the login counter and does the same revocation in one commit. */
static void test_user_sessions_revoke_and_password_change(void **state)
{
    fx *f = *state;
    authd_user u, other, got;
    authd_session s[4], o, sgot;
    authd_throttle_state ts;
    size_t n = 99;

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_user(&other, 2, "bob", "bob@example.com");
    create_ok(f->st, &other);
    for (uint32_t i = 0; i < 4; i++) {
        make_session(&s[i], 10 + i, u.id, 1000, i == 3 ? 1500 : 9000); /* s[3] expires at 1500 */
        assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s[i], 1000), AUTHD_OK);
    }
    make_session(&o, 20, other.id, 1000, 9000);
    assert_int_equal(authd_store_login_commit(f->st, other.id, NULL, &o, 1000), AUTHD_OK);
    assert_int_equal(authd_store_session_revoke(f->st, s[2].id, 1100), AUTHD_OK);

    /* All but s[0]: s[1] revoked now; s[2] was, s[3] expired: not counted. */
    assert_int_equal(authd_store_user_revoke_sessions(f->st, u.id, s[0].id, 2000, &n), AUTHD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(authd_store_session_get(f->st, s[0].id, &sgot), AUTHD_OK);
    assert_false(sgot.revoked);
    assert_int_equal(authd_store_session_get(f->st, s[1].id, &sgot), AUTHD_OK);
    assert_true(sgot.revoked);
    assert_int_equal(sgot.revoked_at, 2000);
    assert_int_equal(authd_store_session_get(f->st, s[2].id, &sgot), AUTHD_OK);
    assert_int_equal(sgot.revoked_at, 1100); /* the first revocation is kept */
    assert_int_equal(authd_store_session_get(f->st, o.id, &sgot), AUTHD_OK);
    assert_false(sgot.revoked);
    assert_int_equal(authd_store_user_revoke_sessions(f->st, u.id, s[0].id, 2001, &n), AUTHD_OK);
    assert_int_equal(n, 0);

    /* ChangePassword: two failed attempts on the counter, then the change. */
    begin(f, AUTHD_LOGIN_USERNAME, "alice", 3000, NULL, NULL, NULL);
    begin(f, AUTHD_LOGIN_USERNAME, "alice", 3001, NULL, NULL, NULL);
    make_session(&s[1], 30, u.id, 3000, 9000);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s[1], 3000), AUTHD_OK);
    /* login_commit clears the counter too; count two more. */
    begin(f, AUTHD_LOGIN_USERNAME, "alice", 3002, NULL, NULL, NULL);
    begin(f, AUTHD_LOGIN_USERNAME, "alice", 3003, NULL, NULL, NULL);
    assert_int_equal(authd_store_login_throttle_get(
                         f->st, AUTHD_LOGIN_USERNAME, "alice", &test_policy, 3004, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 2);
    assert_int_equal(authd_store_password_change(f->st, u.id, HASH_B, s[1].id, 4000, &n), AUTHD_OK);
    assert_int_equal(n, 1); /* s[0]; s[1] is kept */
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_string_equal(got.password_hash, HASH_B);
    assert_int_equal(got.password_changed_at, 4000);
    assert_int_equal(got.updated_at, 4000);
    assert_int_equal(authd_store_login_throttle_get(
                         f->st, AUTHD_LOGIN_USERNAME, "alice", &test_policy, 4001, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 0);
    assert_int_equal(authd_store_session_get(f->st, s[0].id, &sgot), AUTHD_OK);
    assert_true(sgot.revoked);
    assert_int_equal(authd_store_session_get(f->st, s[1].id, &sgot), AUTHD_OK);
    assert_false(sgot.revoked);

    /* A disabled user cannot change a password; nothing is written (the
     * disable itself revoked the sessions). */
    assert_int_equal(authd_store_user_set_status(f->st, u.id, AUTHD_USER_DISABLED, 5000), AUTHD_OK);
    assert_int_equal(authd_store_password_change(f->st, u.id, HASH_A, NULL, 5001, &n),
        AUTHD_FAILED_PRECONDITION);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_string_equal(got.password_hash, HASH_B);
    assert_int_equal(got.updated_at, 5000);
    assert_int_equal(
        authd_store_password_change(f->st, u.id, "", NULL, 5001, &n), AUTHD_INVALID_ARGUMENT);
}

static void test_refresh_family_race(void **state)
{
    fx *f = *state;
    static struct fam_race r[FAM_RACERS];
    pthread_t th[FAM_RACERS];
    pthread_barrier_t bar;
    authd_session s;
    authd_refresh_family fam;
    int rotated = 0, reused = 0, revoked = 0;

    fam_login(f, 5, &s, 0x51);
    assert_int_equal(pthread_barrier_init(&bar, NULL, FAM_RACERS), 0);
    for (int i = 0; i < FAM_RACERS; i++) {
        r[i].st = f->st;
        r[i].rq = fam_req(&s, 1, 0x51, (uint8_t)(0x60 + i), 1001000);
        r[i].rq.policy.grace_ms = 0;
        r[i].bar = &bar;
        assert_int_equal(pthread_create(&th[i], NULL, fam_racer, &r[i]), 0);
    }
    for (int i = 0; i < FAM_RACERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&bar);
    uint8_t winner = 0;
    for (int i = 0; i < FAM_RACERS; i++) {
        assert_int_equal(r[i].rc, AUTHD_OK);
        if (r[i].outcome == AUTHD_REFRESH_ROTATED) {
            rotated++;
            winner = (uint8_t)(0x60 + i);
        }
        reused += r[i].outcome == AUTHD_REFRESH_REUSED;
        revoked += r[i].outcome == AUTHD_REFRESH_REVOKED;
    }
    assert_int_equal(rotated, 1);
    assert_true(reused >= 1);
    assert_int_equal(rotated + reused + revoked, FAM_RACERS);
    assert_int_equal(authd_store_refresh_get(f->st, s.id, &fam), AUTHD_OK);
    assert_int_equal(fam.generation, 2);
    assert_int_equal(fam.token_hash[0], winner);
}

/* ---- administration: roles, disable, revoke, delete, list -------------------- */

static void set_roles_ok(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], int64_t now, size_t n, ...)
{
    const char *roles[AUTHD_ROLES_MAX + 1];
    va_list ap;

    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        roles[i] = va_arg(ap, const char *);
    va_end(ap);
    assert_int_equal(authd_store_user_set_roles(st, id, roles, n, now), AUTHD_OK);
}

static size_t admins(authd_store *st)
{
    size_t n = 9999;

    assert_int_equal(authd_store_admin_count(st, &n), AUTHD_OK);
    return n;
}

/* session_live: what Verify would see of session n: there, and not revoked. */
static bool session_live(authd_store *st, const uint8_t sid[AUTHD_ID_BYTES])
{
    authd_verify_view v;
    authd_code rc = authd_store_verify_lookup(st, sid, &v);

    assert_true(rc == AUTHD_OK || rc == AUTHD_NOT_FOUND);
    return rc == AUTHD_OK && !v.revoked;
}

/* raw_index_check opens the closed store with the raw LMDB API and checks
 * that sessions_by_user and sessions agree entry for entry: every index
 * entry names a session of that user, every session has its entry.
 * Returns the number of index entries. drop_one (when true) deletes the
 * first index entry afterwards, to make the store an older authd would
 * leave; drop_table removes the table itself (a store from before it). */
static size_t raw_index_check(const char *dir, bool drop_one, bool drop_table)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi sess, byu;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0, ns = 0;
    int rc;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "sessions", 0, &sess), 0);
    assert_int_equal(mdb_dbi_open(txn, "sessions_by_user", 0, &byu), 0);
    assert_int_equal(mdb_cursor_open(txn, byu, &cur), 0);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        MDB_val sk
            = { .mv_size = AUTHD_ID_BYTES, .mv_data = (uint8_t *)k.mv_data + AUTHD_ID_BYTES };
        MDB_val sv;
        authd_session s;
        assert_int_equal(k.mv_size, 2 * AUTHD_ID_BYTES);
        assert_int_equal(v.mv_size, 0);
        assert_int_equal(mdb_get(txn, sess, &sk, &sv), 0);
        assert_int_equal(
            authd_record_session_decode(sv.mv_data, sv.mv_size, sk.mv_data, &s), AUTHD_OK);
        assert_memory_equal(s.user_id, k.mv_data, AUTHD_ID_BYTES);
        n++;
    }
    assert_int_equal(rc, MDB_NOTFOUND);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_cursor_open(txn, sess, &cur), 0);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t key[2 * AUTHD_ID_BYTES];
        MDB_val ik = { .mv_size = sizeof key, .mv_data = key }, iv;
        authd_session s;
        assert_int_equal(
            authd_record_session_decode(v.mv_data, v.mv_size, k.mv_data, &s), AUTHD_OK);
        memcpy(key, s.user_id, AUTHD_ID_BYTES);
        memcpy(key + AUTHD_ID_BYTES, k.mv_data, AUTHD_ID_BYTES);
        assert_int_equal(mdb_get(txn, byu, &ik, &iv), 0);
        ns++;
    }
    mdb_cursor_close(cur);
    assert_int_equal(n, ns);
    if (drop_one) {
        assert_int_equal(mdb_cursor_open(txn, byu, &cur), 0);
        assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
        assert_int_equal(mdb_cursor_del(cur, 0), 0);
        mdb_cursor_close(cur);
    }
    if (drop_table)
        assert_int_equal(mdb_drop(txn, byu, 1), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    return n;
}

/* index_check closes f's store, checks its index, and reopens it. */
static size_t index_check(fx *f)
{
    size_t n;

    authd_store_close(f->st);
    f->st = NULL;
    n = raw_index_check(f->dir, false, false);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
    return n;
}

static void test_set_roles(void **state)
{
    fx *f = *state;
    authd_user u, got;
    authd_verify_view v;
    authd_session s;
    uint8_t nobody[AUTHD_ID_BYTES];
    const char *bad[][3] = {
        { "Admin", NULL, NULL }, /* upper case is refused, not folded */
        { "", NULL, NULL }, { "-ops", NULL, NULL }, { "a b", NULL, NULL }, { "a,b", NULL, NULL },
        { "ops", "ops", NULL }, /* twice */
    };
    const char *many[AUTHD_ROLES_MAX + 1];
    char names[AUTHD_ROLES_MAX + 1][8];
    char longest[AUTHD_ROLE_MAX + 2];

    make_user(&u, 1, "alice", "alice@example.com");
    create_ok(f->st, &u);
    make_session(&s, 1, u.id, 100, 5000);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s, 100), AUTHD_OK);

    set_roles_ok(f->st, u.id, 200, 3, "billing:read", "ops.team_1", "x-y");
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_int_equal(got.n_roles, 3);
    assert_string_equal(got.roles[0], "billing:read");
    assert_string_equal(got.roles[1], "ops.team_1");
    assert_string_equal(got.roles[2], "x-y");
    assert_int_equal(got.updated_at, 200);
    assert_string_equal(got.password_hash, HASH_A);
    /* Verify's view follows at once. */
    assert_int_equal(authd_store_verify_lookup(f->st, s.id, &v), AUTHD_OK);
    assert_int_equal(v.n_roles, 3);
    assert_string_equal(v.roles[1], "ops.team_1");

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = bad[i][1] != NULL ? 2 : 1;
        assert_int_equal(
            authd_store_user_set_roles(f->st, u.id, bad[i], n, 300), AUTHD_INVALID_ARGUMENT);
    }
    for (size_t i = 0; i <= AUTHD_ROLES_MAX; i++) {
        snprintf(names[i], sizeof names[i], "r%zu", i);
        many[i] = names[i];
    }
    assert_int_equal(authd_store_user_set_roles(f->st, u.id, many, AUTHD_ROLES_MAX + 1, 300),
        AUTHD_INVALID_ARGUMENT);
    memset(longest, 'a', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0'; /* 65 characters */
    many[0] = longest;
    assert_int_equal(authd_store_user_set_roles(f->st, u.id, many, 1, 300), AUTHD_INVALID_ARGUMENT);
    longest[AUTHD_ROLE_MAX] = '\0'; /* 64: fine */
    assert_int_equal(authd_store_user_set_roles(f->st, u.id, many, 1, 300), AUTHD_OK);
    assert_int_equal(authd_store_user_set_roles(f->st, u.id, many, AUTHD_ROLES_MAX, 301), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_int_equal(got.n_roles, AUTHD_ROLES_MAX);
    assert_string_equal(got.roles[0], longest);
    assert_int_equal(got.updated_at, 301);

    /* No roles at all is a valid set. */
    assert_int_equal(authd_store_user_set_roles(f->st, u.id, NULL, 0, 400), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_OK);
    assert_int_equal(got.n_roles, 0);

    make_id(nobody, 'u', 999);
    assert_int_equal(authd_store_user_set_roles(f->st, nobody, NULL, 0, 1), AUTHD_NOT_FOUND);
}

/* The last-admin rule, in every call that can break it. */
static void test_last_admin_rule(void **state)
{
    fx *f = *state;
    authd_user a, b, c, got;

    make_user(&a, 1, "alice", "alice@example.com");
    make_user(&b, 2, "bob", "bob@example.com");
    make_user(&c, 3, "carol", "carol@example.com");
    create_ok(f->st, &a);
    create_ok(f->st, &b);
    create_ok(f->st, &c);

    /* A store without admins is not held to the rule. */
    assert_int_equal(admins(f->st), 0);
    assert_int_equal(authd_store_user_set_status(f->st, b.id, AUTHD_USER_DISABLED, 10), AUTHD_OK);
    assert_int_equal(authd_store_user_set_status(f->st, b.id, AUTHD_USER_ACTIVE, 11), AUTHD_OK);

    /* alice is the only admin: she cannot lose the role, be disabled or
     * be deleted, and nothing is written when refused. */
    set_roles_ok(f->st, a.id, 20, 2, "user", "admin");
    assert_int_equal(admins(f->st), 1);
    const char *demoted[] = { "user" };
    assert_int_equal(
        authd_store_user_set_roles(f->st, a.id, demoted, 1, 30), AUTHD_FAILED_PRECONDITION);
    assert_int_equal(
        authd_store_user_set_roles(f->st, a.id, NULL, 0, 30), AUTHD_FAILED_PRECONDITION);
    assert_int_equal(authd_store_user_set_status(f->st, a.id, AUTHD_USER_DISABLED, 30),
        AUTHD_FAILED_PRECONDITION);
    assert_int_equal(authd_store_user_delete(f->st, a.id, NULL), AUTHD_FAILED_PRECONDITION);
    assert_int_equal(authd_store_user_get(f->st, a.id, &got), AUTHD_OK);
    assert_int_equal(got.status, AUTHD_USER_ACTIVE);
    assert_int_equal(got.n_roles, 2);
    assert_int_equal(got.updated_at, 20);
    /* Keeping the role while changing others is fine; so is re-enabling. */
    set_roles_ok(f->st, a.id, 31, 1, "admin");
    assert_int_equal(authd_store_user_set_status(f->st, a.id, AUTHD_USER_ACTIVE, 32), AUTHD_OK);
    /* Non-admins are never held. */
    assert_int_equal(authd_store_user_set_status(f->st, c.id, AUTHD_USER_DISABLED, 33), AUTHD_OK);

    /* With bob an admin too, alice may step down; then bob is the last. */
    set_roles_ok(f->st, b.id, 40, 1, "admin");
    assert_int_equal(admins(f->st), 2);
    assert_int_equal(authd_store_user_set_roles(f->st, a.id, demoted, 1, 41), AUTHD_OK);
    assert_int_equal(admins(f->st), 1);
    assert_int_equal(authd_store_user_set_status(f->st, b.id, AUTHD_USER_DISABLED, 42),
        AUTHD_FAILED_PRECONDITION);

    /* A disabled admin does not count: carol (disabled) made admin leaves
     * bob the last active one. */
    set_roles_ok(f->st, c.id, 50, 1, "admin");
    assert_int_equal(admins(f->st), 1);
    assert_int_equal(authd_store_user_delete(f->st, b.id, NULL), AUTHD_FAILED_PRECONDITION);
    /* carol enabled: now bob may go, and carol may not. */
    assert_int_equal(authd_store_user_set_status(f->st, c.id, AUTHD_USER_ACTIVE, 51), AUTHD_OK);
    assert_int_equal(admins(f->st), 2);
    assert_int_equal(authd_store_user_delete(f->st, b.id, NULL), AUTHD_OK);
    assert_int_equal(admins(f->st), 1);
    assert_int_equal(
        authd_store_user_set_roles(f->st, c.id, NULL, 0, 52), AUTHD_FAILED_PRECONDITION);
    /* Disabling the already-disabled or demoting a non-admin is no issue. */
    assert_int_equal(authd_store_user_set_roles(f->st, a.id, NULL, 0, 53), AUTHD_OK);
}

/* Disabling revokes every live session of the user at once (what Verify
 * reads), and only that user's; enabling restores none. */
static void test_disable_revokes_sessions(void **state)
{
    fx *f = *state;
    authd_user u, other;
    authd_session s[4], so, got;
    authd_session list[8];
    size_t n = 0, total = 0;

    make_user(&u, 1, "alice", "alice@example.com");
    make_user(&other, 2, "bob", "bob@example.com");
    create_ok(f->st, &u);
    create_ok(f->st, &other);
    for (uint32_t i = 0; i < 4; i++) {
        make_session(&s[i], i, u.id, 100, i == 3 ? 150 : 5000); /* s[3] ends at 150 */
        assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s[i], 100), AUTHD_OK);
    }
    make_session(&so, 9, other.id, 100, 5000);
    assert_int_equal(authd_store_login_commit(f->st, other.id, NULL, &so, 100), AUTHD_OK);
    assert_int_equal(authd_store_session_revoke(f->st, s[2].id, 120), AUTHD_OK);

    assert_int_equal(authd_store_user_set_status(f->st, u.id, AUTHD_USER_DISABLED, 200), AUTHD_OK);
    for (int i = 0; i < 3; i++) {
        assert_false(session_live(f->st, s[i].id));
        assert_int_equal(authd_store_session_get(f->st, s[i].id, &got), AUTHD_OK);
        assert_true(got.revoked);
    }
    assert_int_equal(authd_store_session_get(f->st, s[0].id, &got), AUTHD_OK);
    assert_int_equal(got.revoked_at, 200);
    assert_int_equal(authd_store_session_get(f->st, s[2].id, &got), AUTHD_OK);
    assert_int_equal(got.revoked_at, 120); /* the first revoke stands */
    assert_int_equal(authd_store_session_get(f->st, s[3].id, &got), AUTHD_OK);
    assert_false(got.revoked); /* expired before the disable: left as it was */
    assert_true(session_live(f->st, so.id));

    assert_int_equal(authd_store_user_set_status(f->st, u.id, AUTHD_USER_ACTIVE, 300), AUTHD_OK);
    assert_false(session_live(f->st, s[0].id));
    assert_int_equal(authd_store_user_sessions(f->st, u.id, list, 8, &n, &total), AUTHD_OK);
    assert_int_equal(n, 4);
    assert_int_equal(total, 4);
    assert_int_equal(index_check(f), 5);
}

static void test_revoke_sessions(void **state)
{
    fx *f = *state;
    authd_user u, other;
    authd_session s[3], so;
    uint8_t nobody[AUTHD_ID_BYTES];
    size_t revoked = 99;

    make_user(&u, 1, "alice", "alice@example.com");
    make_user(&other, 2, "bob", "bob@example.com");
    create_ok(f->st, &u);
    create_ok(f->st, &other);
    for (uint32_t i = 0; i < 3; i++) {
        make_session(&s[i], i, u.id, 100, 5000);
        assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s[i], 100), AUTHD_OK);
    }
    make_session(&so, 9, other.id, 100, 5000);
    assert_int_equal(authd_store_login_commit(f->st, other.id, NULL, &so, 100), AUTHD_OK);

    /* ChangePassword's form: all but the caller's own session. */
    assert_int_equal(
        authd_store_user_revoke_sessions(f->st, u.id, s[1].id, 200, &revoked), AUTHD_OK);
    assert_int_equal(revoked, 2);
    assert_false(session_live(f->st, s[0].id));
    assert_true(session_live(f->st, s[1].id));
    assert_false(session_live(f->st, s[2].id));
    assert_true(session_live(f->st, so.id));
    revoked = 99;
    assert_int_equal(
        authd_store_user_revoke_sessions(f->st, u.id, s[1].id, 201, &revoked), AUTHD_OK);
    assert_int_equal(revoked, 0);
    /* LogoutAll's form: every one. */
    assert_int_equal(authd_store_user_revoke_sessions(f->st, u.id, NULL, 202, &revoked), AUTHD_OK);
    assert_int_equal(revoked, 1);
    assert_false(session_live(f->st, s[1].id));
    assert_true(session_live(f->st, so.id));
    /* A user without sessions, and no user. */
    assert_int_equal(authd_store_user_revoke_sessions(f->st, u.id, NULL, 203, NULL), AUTHD_OK);
    make_id(nobody, 'u', 999);
    assert_int_equal(
        authd_store_user_revoke_sessions(f->st, nobody, NULL, 203, &revoked), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_revoke_sessions(f->st, NULL, NULL, 203, &revoked), AUTHD_INVALID_ARGUMENT);
}

/* Deleting removes the user, its sessions, families and throttle counter
 * in one go and frees the username and the email. */
static void test_user_delete(void **state)
{
    fx *f = *state;
    authd_user u, other, again, got;
    authd_session s1, s2, so;
    authd_refresh_family fam, fgot;
    authd_throttle_policy p
        = { .free_attempts = 5, .base_delay_ms = 1, .max_delay_ms = 1, .lockout = 100 };
    authd_throttle_state ts;
    authd_user lu;
    bool found = false;
    int verdict = 0;
    size_t gone = 99, purged = 99;

    make_user(&u, 1, "alice", "alice@example.com");
    make_user(&other, 2, "bob", "bob@example.com");
    create_ok(f->st, &u);
    create_ok(f->st, &other);
    make_session(&s1, 1, u.id, 100, 5000);
    memset(&fam, 0, sizeof fam);
    fam.generation = 1;
    memset(fam.token_hash, 7, sizeof fam.token_hash);
    assert_int_equal(authd_store_login_commit_family(f->st, u.id, NULL, &s1, &fam, 100), AUTHD_OK);
    make_session(&s2, 2, u.id, 100, 6000);
    assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s2, 100), AUTHD_OK);
    assert_int_equal(authd_store_session_revoke(f->st, s2.id, 150), AUTHD_OK);
    make_session(&so, 9, other.id, 100, 7000);
    assert_int_equal(authd_store_login_commit(f->st, other.id, NULL, &so, 100), AUTHD_OK);
    assert_int_equal(authd_store_login_begin(f->st, AUTHD_LOGIN_USERNAME, "alice", &p, 1000, &found,
                         &lu, &verdict, NULL),
        AUTHD_OK);
    assert_true(found);
    assert_counts(f->st, 2, 3);

    assert_int_equal(authd_store_user_delete(f->st, u.id, &gone), AUTHD_OK);
    assert_int_equal(gone, 2);
    assert_counts(f->st, 1, 1);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_user_find_by_username(f->st, "alice", &got), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_find_by_email(f->st, "alice@example.com", &got), AUTHD_NOT_FOUND);
    assert_false(session_live(f->st, s1.id));
    assert_int_equal(authd_store_session_get(f->st, s2.id, &s1), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_refresh_get(f->st, s1.id, &fgot), AUTHD_NOT_FOUND);
    assert_true(session_live(f->st, so.id));
    /* The expiry entries went too: a purge of everything finds bob's only. */
    assert_int_equal(authd_store_purge_expired(f->st, INT64_MAX, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 1);
    assert_counts(f->st, 1, 0);
    assert_int_equal(authd_store_user_delete(f->st, u.id, NULL), AUTHD_NOT_FOUND);

    /* The name and the email are free at once, for a new id; the old
     * throttle counter did not follow the name. */
    make_user(&again, 3, "alice", "alice@example.com");
    create_ok(f->st, &again);
    assert_int_equal(
        authd_store_login_throttle_get(f->st, AUTHD_LOGIN_USERNAME, "alice", &p, 1000, &ts),
        AUTHD_OK);
    assert_int_equal(ts.failures, 0);
    assert_int_equal(index_check(f), 0);
}

/* The per-user index follows every session writer: login commits (with
 * and without a family), revoke (no change), refresh rotation (no
 * change), purge and delete; and a store without it (or with it out of
 * step) gets it rebuilt at open. */
static void test_session_index(void **state)
{
    fx *f = *state;
    authd_user u[3];
    authd_session s, list[4];
    authd_refresh_family fam;
    size_t n = 0, total = 0, purged = 0;
    char name[16], mail[32];

    for (uint32_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "user%u", i);
        snprintf(mail, sizeof mail, "user%u@example.com", i);
        make_user(&u[i], i, name, mail);
        create_ok(f->st, &u[i]);
    }
    /* user0: 6 sessions expiring at 1000 + 100 k; user1: 2; user2: none. */
    for (uint32_t k = 0; k < 6; k++) {
        make_session(&s, k, u[0].id, 0, 1000 + 100 * (int64_t)k);
        memset(&fam, 0, sizeof fam);
        fam.generation = 1;
        assert_int_equal(
            authd_store_login_commit_family(f->st, u[0].id, NULL, &s, k % 2 ? &fam : NULL, 0),
            AUTHD_OK);
    }
    for (uint32_t k = 10; k < 12; k++) {
        make_session(&s, k, u[1].id, 0, 9000);
        assert_int_equal(authd_store_login_commit(f->st, u[1].id, NULL, &s, 0), AUTHD_OK);
    }
    make_id(s.id, 's', 0);
    assert_int_equal(authd_store_session_revoke(f->st, s.id, 10), AUTHD_OK);

    assert_int_equal(authd_store_user_sessions(f->st, u[0].id, list, 4, &n, &total), AUTHD_OK);
    assert_int_equal(n, 4); /* cap */
    assert_int_equal(total, 6);
    for (size_t i = 0; i < n; i++)
        assert_memory_equal(list[i].user_id, u[0].id, AUTHD_ID_BYTES);
    assert_true(list[0].revoked);
    assert_int_equal(authd_store_user_sessions(f->st, u[2].id, list, 4, &n, &total), AUTHD_OK);
    assert_int_equal(n, 0);
    assert_int_equal(total, 0);
    assert_int_equal(authd_store_user_sessions(f->st, u[1].id, NULL, 0, &n, &total), AUTHD_OK);
    assert_int_equal(total, 2);
    assert_int_equal(index_check(f), 8);

    /* Purge takes user0's first three (1000, 1100, 1200) with their entries. */
    assert_int_equal(authd_store_purge_expired(f->st, 1200, 100, &purged), AUTHD_OK);
    assert_int_equal(purged, 3);
    assert_int_equal(authd_store_user_sessions(f->st, u[0].id, list, 4, &n, &total), AUTHD_OK);
    assert_int_equal(total, 3);
    assert_int_equal(index_check(f), 5);

    /* A store from before the table: rebuilt at open, then used. */
    authd_store_close(f->st);
    f->st = NULL;
    assert_int_equal(raw_index_check(f->dir, false, true), 5);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
    assert_int_equal(authd_store_user_sessions(f->st, u[0].id, list, 4, &n, &total), AUTHD_OK);
    assert_int_equal(total, 3);
    /* An index an older authd let fall out of step: rebuilt too. */
    authd_store_close(f->st);
    f->st = NULL;
    assert_int_equal(raw_index_check(f->dir, true, false), 5);
    assert_int_equal(fx_open(f, 64 * MiB, 0), AUTHD_OK);
    assert_int_equal(index_check(f), 5);
    size_t revoked = 0;
    assert_int_equal(
        authd_store_user_revoke_sessions(f->st, u[1].id, NULL, 20, &revoked), AUTHD_OK);
    assert_int_equal(revoked, 2);
    assert_int_equal(authd_store_user_delete(f->st, u[0].id, &n), AUTHD_OK);
    assert_int_equal(n, 3);
    assert_int_equal(index_check(f), 2);
    assert_counts(f->st, 2, 2);
}

static void list_names(authd_store *st, const char *prefix, const char *after, size_t cap,
    const char *want, bool want_more)
{
    authd_user *out = calloc(cap, sizeof *out);
    char got[1024] = "";
    size_t n = 999;
    bool more = !want_more;

    assert_non_null(out);
    assert_int_equal(authd_store_user_list(st, prefix, after, out, cap, &n, &more), AUTHD_OK);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(got, " ");
        strcat(got, out[i].username);
        assert_string_equal(out[i].password_hash, ""); /* no hashes in listings */
        assert_true(out[i].email[0] != '\0');
    }
    assert_string_equal(got, want);
    assert_int_equal(more, want_more);
    free(out);
}

static void test_user_list(void **state)
{
    fx *f = *state;
    static const char *const names[]
        = { "bob", "al", "alice", "alicia", "zed", "al.x", "al-y", "carl", "ali" };
    authd_user u, out[2];
    size_t n;
    bool more;
    char mail[64], longp[AUTHD_USERNAME_MAX + 2];

    /* An empty store. */
    list_names(f->st, NULL, NULL, 5, "", false);
    for (uint32_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(mail, sizeof mail, "%s@example.com", names[i]);
        make_user(&u, i, names[i], mail);
        create_ok(f->st, &u);
    }
    /* Byte order ('-' < '.' < letters), all of them, in pages. */
    list_names(f->st, "", "", 100, "al al-y al.x ali alice alicia bob carl zed", false);
    list_names(f->st, NULL, NULL, 4, "al al-y al.x ali", true);
    list_names(f->st, NULL, "ali", 4, "alice alicia bob carl", true);
    list_names(f->st, NULL, "carl", 4, "zed", false);
    list_names(f->st, NULL, "zed", 4, "", false);
    /* A page that ends exactly at the last match: no more. */
    list_names(f->st, NULL, "bob", 2, "carl zed", false);
    /* A cursor between names works (a user deleted since). */
    list_names(f->st, NULL, "alib", 2, "alice alicia", true);
    /* Prefix filter, with paging inside it. */
    list_names(f->st, "ali", NULL, 10, "ali alice alicia", false);
    list_names(f->st, "ali", NULL, 2, "ali alice", true);
    list_names(f->st, "ali", "alice", 2, "alicia", false);
    list_names(f->st, "ali", "alicia", 2, "", false);
    list_names(f->st, "al", NULL, 3, "al al-y al.x", true);
    list_names(f->st, "alicia", NULL, 3, "alicia", false);
    list_names(f->st, "alx", NULL, 3, "", false);
    list_names(f->st, "zz", NULL, 3, "", false);
    /* A cursor before the prefix starts at the prefix; one after it ends. */
    list_names(f->st, "c", "a", 3, "carl", false);
    list_names(f->st, "b", "c", 3, "", false);

    assert_int_equal(
        authd_store_user_list(f->st, NULL, NULL, out, 0, &n, &more), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(
        authd_store_user_list(f->st, NULL, NULL, out, AUTHD_USER_LIST_MAX + 1, &n, &more),
        AUTHD_INVALID_ARGUMENT);
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(
        authd_store_user_list(f->st, longp, NULL, out, 2, &n, &more), AUTHD_INVALID_ARGUMENT);
    assert_int_equal(
        authd_store_user_list(f->st, NULL, longp, out, 2, &n, &more), AUTHD_INVALID_ARGUMENT);
}

/* Two admins, each removed at the same moment by its own thread (role
 * removal or disable, alternately): the rule is checked inside each
 * writer's transaction, so exactly one change commits and one admin is
 * left, every round. */
struct admin_race {
    authd_store *st;
    const uint8_t *id;
    bool disable;
    pthread_barrier_t *bar;
    authd_code rc;
};

static void *admin_racer(void *p)
{
    struct admin_race *r = p;

    pthread_barrier_wait(r->bar);
    if (r->disable)
        r->rc = authd_store_user_set_status(r->st, r->id, AUTHD_USER_DISABLED, 10);
    else
        r->rc = authd_store_user_set_roles(r->st, r->id, NULL, 0, 10);
    return NULL;
}

static void test_last_admin_race(void **state)
{
    fx *f = *state;
    authd_user a, b;
    pthread_barrier_t bar;

    make_user(&a, 1, "alice", "alice@example.com");
    make_user(&b, 2, "bob", "bob@example.com");
    create_ok(f->st, &a);
    create_ok(f->st, &b);
    assert_int_equal(pthread_barrier_init(&bar, NULL, 2), 0);
    for (int round = 0; round < 40; round++) {
        struct admin_race r[2] = {
            { f->st, a.id, round % 2 == 1, &bar, AUTHD_INTERNAL },
            { f->st, b.id, round % 4 >= 2, &bar, AUTHD_INTERNAL },
        };
        pthread_t t[2];
        set_roles_ok(f->st, a.id, 1, 1, "admin");
        set_roles_ok(f->st, b.id, 1, 1, "admin");
        assert_int_equal(authd_store_user_set_status(f->st, a.id, AUTHD_USER_ACTIVE, 1), AUTHD_OK);
        assert_int_equal(authd_store_user_set_status(f->st, b.id, AUTHD_USER_ACTIVE, 1), AUTHD_OK);
        assert_int_equal(admins(f->st), 2);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, admin_racer, &r[i]), 0);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_true((r[0].rc == AUTHD_OK && r[1].rc == AUTHD_FAILED_PRECONDITION)
            || (r[1].rc == AUTHD_OK && r[0].rc == AUTHD_FAILED_PRECONDITION));
        assert_int_equal(admins(f->st), 1);
    }
    pthread_barrier_destroy(&bar);
}

/* ---- group commit ----------------------------------------------------------- */

/* Several writes in one batch, each with its own outcome: a Register that
 * collides fails alone, a Refresh replayed in the same batch sees its
 * batch-mate's rotation, a reuse revokes its own session; nothing is
 * visible before the commit, everything that succeeded is after. */
static void test_batch_per_write_outcomes(void **state)
{
    fx *f = *state;
    authd_store_batch *b = NULL;
    authd_user taken, nb, nc, got, u;
    authd_session s, s2, s3, gs;
    authd_refresh_family fam;
    authd_refresh_request rq;
    const char *conflict = NULL;
    int oc = 0;

    make_user(&taken, 1, "taken", "taken@example.com");
    create_ok(f->st, &taken);
    fam_login(f, 10, &s, 0x41);
    fam_login(f, 11, &s2, 0x51);
    fam_login(f, 12, &s3, 0x61);
    rq = fam_req(&s2, 1, 0x51, 0x52, 1001000); /* s2 moves to generation 2 */
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_ROTATED);

    assert_int_equal(authd_store_batch_begin(f->st, &b), AUTHD_OK);
    make_user(&nb, 2, "newbie", "newbie@example.com");
    assert_int_equal(authd_store_batch_user_create(b, &nb, &conflict), AUTHD_OK);
    make_user(&nc, 3, "taken", "other@example.com");
    assert_int_equal(authd_store_batch_user_create(b, &nc, &conflict), AUTHD_ALREADY_EXISTS);
    assert_string_equal(conflict, "username");
    /* Same name as a batch-mate: the batch-mate's write is seen. */
    make_user(&nc, 4, "newbie", "third@example.com");
    assert_int_equal(authd_store_batch_user_create(b, &nc, &conflict), AUTHD_ALREADY_EXISTS);
    rq = fam_req(&s, 1, 0x41, 0x42, 1002000);
    assert_int_equal(authd_store_batch_refresh_exchange(b, &rq, &oc, &gs, &u, &fam), AUTHD_OK);
    assert_int_equal(oc, AUTHD_REFRESH_ROTATED);
    rq = fam_req(&s, 1, 0x41, 0x43, 1002001); /* the same token again */
    assert_int_equal(authd_store_batch_refresh_exchange(b, &rq, &oc, &gs, &u, &fam), AUTHD_OK);
    assert_int_equal(oc, AUTHD_REFRESH_REPLAYED);
    assert_int_equal(fam.token_hash[0], 0x42);
    rq = fam_req(&s2, 1, 0x51, 0x53, 1009000); /* s2's parent after grace: reuse */
    assert_int_equal(authd_store_batch_refresh_exchange(b, &rq, &oc, &gs, &u, &fam), AUTHD_OK);
    assert_int_equal(oc, AUTHD_REFRESH_REUSED);
    assert_int_equal(authd_store_batch_session_revoke(b, s3.id, 1003), AUTHD_OK);
    make_id(gs.id, 's', 9999);
    assert_int_equal(authd_store_batch_session_revoke(b, gs.id, 1003), AUTHD_NOT_FOUND);

    /* Nothing is visible before the commit. */
    assert_int_equal(authd_store_user_get(f->st, nb.id, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_refresh_get(f->st, s.id, &fam), AUTHD_OK);
    assert_int_equal(fam.generation, 1);

    assert_int_equal(authd_store_batch_commit(b), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, nb.id, &got), AUTHD_OK);
    assert_string_equal(got.username, "newbie");
    make_id(nc.id, 'u', 3);
    assert_int_equal(authd_store_user_get(f->st, nc.id, &got), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_find_by_email(f->st, "other@example.com", &got), AUTHD_NOT_FOUND);
    assert_int_equal(
        authd_store_user_find_by_email(f->st, "third@example.com", &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_refresh_get(f->st, s.id, &fam), AUTHD_OK);
    assert_int_equal(fam.generation, 2);
    assert_int_equal(fam.token_hash[0], 0x42);
    assert_int_equal(authd_store_session_get(f->st, s.id, &gs), AUTHD_OK);
    assert_false(gs.revoked);
    assert_int_equal(authd_store_session_get(f->st, s2.id, &gs), AUTHD_OK);
    assert_true(gs.revoked);
    assert_int_equal(authd_store_session_get(f->st, s3.id, &gs), AUTHD_OK);
    assert_true(gs.revoked);
    assert_int_equal(gs.revoked_at, 1003);
}

/* A batch whose commit fails leaves none of its writes, whatever each
 * write answered inside it; the store works on afterwards. An aborted
 * batch likewise. */
static void test_batch_commit_failure_writes_nothing(void **state)
{
    fx *f = *state;
    authd_store_batch *b = NULL;
    authd_user nd, got, u;
    authd_session s, s3, gs;
    authd_refresh_family fam;
    authd_refresh_request rq;
    int oc = 0;
    static const authd_code faults[] = { AUTHD_RESOURCE_EXHAUSTED, AUTHD_INTERNAL };

    fam_login(f, 20, &s, 0x71);
    fam_login(f, 21, &s3, 0x81);
    make_user(&nd, 30, "dora", "dora@example.com");
    for (size_t i = 0; i <= sizeof faults / sizeof faults[0]; i++) {
        assert_int_equal(authd_store_batch_begin(f->st, &b), AUTHD_OK);
        assert_int_equal(authd_store_batch_user_create(b, &nd, NULL), AUTHD_OK);
        rq = fam_req(&s, 1, 0x71, 0x72, 1002000);
        assert_int_equal(authd_store_batch_refresh_exchange(b, &rq, &oc, &gs, &u, &fam), AUTHD_OK);
        assert_int_equal(oc, AUTHD_REFRESH_ROTATED);
        assert_int_equal(authd_store_batch_session_revoke(b, s3.id, 1003), AUTHD_OK);
        if (i < sizeof faults / sizeof faults[0]) {
            authd_store_fault_next_batch_commit(f->st, faults[i]);
            assert_int_equal(authd_store_batch_commit(b), faults[i]);
        } else {
            authd_store_batch_abort(b);
        }
        assert_int_equal(authd_store_user_get(f->st, nd.id, &got), AUTHD_NOT_FOUND);
        assert_int_equal(authd_store_refresh_get(f->st, s.id, &fam), AUTHD_OK);
        assert_int_equal(fam.generation, 1);
        assert_int_equal(authd_store_session_get(f->st, s3.id, &gs), AUTHD_OK);
        assert_false(gs.revoked);
    }
    /* The same writes, plainly, still succeed: the failure left no trace. */
    create_ok(f->st, &nd);
    rq = fam_req(&s, 1, 0x71, 0x72, 1002000);
    assert_int_equal(fam_exchange(f, &rq, NULL), AUTHD_REFRESH_ROTATED);
    assert_int_equal(authd_store_session_revoke(f->st, s3.id, 1003), AUTHD_OK);
    /* The hook fires once. */
    assert_int_equal(authd_store_batch_begin(f->st, &b), AUTHD_OK);
    assert_int_equal(authd_store_batch_commit(b), AUTHD_OK);
}

/* A write that fails for want of room (MAP_FULL inside its own nested
 * transaction) fails alone: the batch-mates before and after it commit.
 * The map is first filled by plain creates; the batch then revokes
 * sessions (rewrites of existing records, which fit in the pages earlier
 * commits freed) around creates that no longer fit. */
static void test_batch_map_full_fails_one_write(void **state)
{
    fx *f = *state;
    authd_store_batch *b = NULL;
    authd_user u, got;
    authd_session s[4], gs;
    char name[32], mail[64];
    authd_code code = AUTHD_OK;
    uint32_t n;

    assert_int_equal(fx_open(f, 96 * 1024, 0), AUTHD_OK);
    authd_log_setup(AUTHD_LOG_OFF, 2);
    make_user(&u, 90000, "owner", "owner@example.com");
    create_ok(f->st, &u);
    for (int i = 0; i < 4; i++) {
        make_session(&s[i], 90000 + (uint32_t)i, u.id, 1000, 5000);
        assert_int_equal(authd_store_login_commit(f->st, u.id, NULL, &s[i], 1000), AUTHD_OK);
    }
    for (n = 0; n < 10000; n++) {
        snprintf(name, sizeof name, "user%u", n);
        snprintf(mail, sizeof mail, "user%u-with-a-long-address@example.com", n);
        make_user(&u, n, name, mail);
        if ((code = authd_store_user_create(f->st, &u, NULL)) != AUTHD_OK)
            break;
    }
    assert_int_equal(code, AUTHD_RESOURCE_EXHAUSTED);

    assert_int_equal(authd_store_batch_begin(f->st, &b), AUTHD_OK);
    assert_int_equal(authd_store_batch_session_revoke(b, s[0].id, 2000), AUTHD_OK);
    assert_int_equal(authd_store_batch_user_create(b, &u, NULL), AUTHD_RESOURCE_EXHAUSTED);
    assert_int_equal(authd_store_batch_session_revoke(b, s[1].id, 2001), AUTHD_OK);
    assert_int_equal(authd_store_batch_commit(b), AUTHD_OK);
    assert_int_equal(authd_store_user_get(f->st, u.id, &got), AUTHD_NOT_FOUND);
    assert_int_equal(authd_store_session_get(f->st, s[0].id, &gs), AUTHD_OK);
    assert_true(gs.revoked);
    assert_int_equal(authd_store_session_get(f->st, s[1].id, &gs), AUTHD_OK);
    assert_true(gs.revoked);
    assert_int_equal(authd_store_session_get(f->st, s[2].id, &gs), AUTHD_OK);
    assert_false(gs.revoked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_dir_0700, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_open_schema_version, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_user_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_invalid_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_leave_nothing_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_create_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_race_one_winner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_user_sessions_revoke_and_password_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_commit_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_revoke_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_lookup_concurrent, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_records_are_data_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_sessions_and_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_lookup_user_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_schedule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_aliases_count_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_unknown_identifiers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_reset_and_unlock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_quiet_reset_and_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_parallel_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_family_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_family_expiry_and_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_family_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_roles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_admin_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_admin_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disable_revokes_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_per_write_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_commit_failure_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_map_full_fails_one_write, setup_dir, teardown),
    };

    /* The store logs every damaged record it meets; the tests make many. */
    authd_log_setup(AUTHD_LOG_OFF, 2);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
