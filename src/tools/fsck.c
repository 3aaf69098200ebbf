/*
 * fsck.c — authd-fsck, an operator and test tool: walks an authd data
 * directory READ-ONLY and checks that the store's tables agree with each
 * other. Built with the tree, never installed.
 *
 * What it checks (the layout is the one store.c documents at its top):
 *   - meta "schema" is version 1;
 *   - every users record decodes, its id is the key it is stored under,
 *     its fields are in bounds, and users_by_username[username] and
 *     users_by_email[email] both point back at that id;
 *   - every users_by_username and users_by_email entry points at a user
 *     whose canonical username (normalized email) is that key, so the two
 *     indexes and the users table have the same number of entries;
 *   - every sessions record decodes, its user exists, and its entry in
 *     sessions_by_expiry (expiry || id) exists;
 *   - every sessions_by_expiry entry names a session with that expiry;
 *   - every session has its sessions_by_user entry (user id || session
 *     id) and every such entry names a session of that user (a store no
 *     authd with the table has opened yet has none: open builds it).
 * A user half-written (in one index and not the other, or an index entry
 * without its record) and a session without its expiry entry are exactly
 * what a torn write would leave behind, which is why scripts/durability.sh
 * runs this after every kill -9.
 *
 * The environment is opened MDB_RDONLY in ONE read transaction, so the
 * walk sees one consistent snapshot even if authd is running. It links LMDB
 * and the record codec directly, not authd_store: store.h has no read-only
 * open and no iteration, and this tool must never write. The price is that
 * it repeats the table layout of store.c; a change there must change this.
 *
 * --dump FILE writes what it walked, one record a line, for the durability
 * checker to compare with its journal (index entries as found, whether or
 * not they check out):
 *   user <id-hex> <username> <email>
 *   username <username> <id-hex>
 *   email <email> <id-hex>
 *   session <id-hex> <user-id-hex> <expires_at> <revoked 0|1>
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "authd/store/v1/records.pb-c.h"

#define SCHEMA_VERSION   1u
#define ID_BYTES         16
#define EXPIRY_KEY_BYTES (8 + ID_BYTES)
#define USERNAME_MAX     32
#define EMAIL_MAX        254
#define HASH_MAX         128
#define MAX_REPORTED     20

static const char usage[] = "usage: authd-fsck --data-dir DIR [--dump FILE] [--quiet]\n"
                            "\n"
                            "Checks an authd LMDB store read-only: every record decodes, the\n"
                            "username and email indexes and the users table agree entry for\n"
                            "entry, every session has its user, its expiry-index entry and\n"
                            "its per-user index entry.\n"
                            "Exit status: 0 clean, 1 problems found (listed on stderr),\n"
                            "2 usage error or the store cannot be opened.\n";

struct fsck {
    MDB_txn *txn;
    MDB_dbi users, by_username, by_email, sessions, by_expiry, meta, by_user;
    bool have_by_user;
    FILE *dump;
    unsigned long problems;
    size_t n_users, n_usernames, n_emails, n_sessions, n_expiry, n_by_user;
};

/* problem counts one inconsistency and prints the first MAX_REPORTED, so
 * a badly broken store does not flood the terminal. */
static void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct fsck *f, const char *fmt, ...)
{
    va_list ap;

    if (++f->problems > MAX_REPORTED)
        return;
    fputs("authd-fsck: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void hex(const void *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* printable is true when the bytes are a key we can print on one dump
 * line: no NUL, no whitespace, no control byte. Canonical usernames and
 * normalized emails always are; anything else is itself a problem. */
static bool printable(const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++) {
        if (b[i] <= 0x20 || b[i] == 0x7f)
            return false;
    }
    return n > 0;
}

/* index_points_at is true when index dbi maps key (the username or email
 * of user id) back to id. */
static bool index_points_at(struct fsck *f, MDB_dbi dbi, const char *key, const uint8_t *id)
{
    MDB_val k = { .mv_size = strlen(key), .mv_data = (void *)key };
    MDB_val v;

    if (mdb_get(f->txn, dbi, &k, &v) != MDB_SUCCESS)
        return false;
    return v.mv_size == ID_BYTES && memcmp(v.mv_data, id, ID_BYTES) == 0;
}

/* check_users walks the users table; each record must decode, match its
 * key and be found through both indexes. */
static int check_users(struct fsck *f)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    char idh[2 * ID_BYTES + 1];
    int rc;

    if ((rc = mdb_cursor_open(f->txn, f->users, &cur)) != MDB_SUCCESS)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Authd__Store__V1__UserRecord *u;

        f->n_users++;
        if (k.mv_size != ID_BYTES) {
            problem(f, "users: key of %zu bytes, want %d", k.mv_size, ID_BYTES);
            continue;
        }
        hex(k.mv_data, ID_BYTES, idh);
        u = authd__store__v1__user_record__unpack(NULL, v.mv_size, v.mv_data);
        if (u == NULL) {
            problem(f, "users[%s]: record does not decode", idh);
            continue;
        }
        if (u->schema_version != SCHEMA_VERSION || u->id.len != ID_BYTES
            || memcmp(u->id.data, k.mv_data, ID_BYTES) != 0) {
            problem(f, "users[%s]: wrong schema_version or id inside the record", idh);
        } else if (strlen(u->username) == 0 || strlen(u->username) > USERNAME_MAX
            || strlen(u->email) == 0 || strlen(u->email) > EMAIL_MAX
            || strlen(u->password_hash) == 0 || strlen(u->password_hash) >= HASH_MAX
            || (u->status != 1 && u->status != 2)) {
            problem(f, "users[%s]: field out of bounds", idh);
        } else if (!printable(u->username, strlen(u->username))
            || !printable(u->email, strlen(u->email))) {
            problem(f, "users[%s]: username or email with blank or control bytes", idh);
        } else {
            if (!index_points_at(f, f->by_username, u->username, k.mv_data))
                problem(
                    f, "users[%s]: users_by_username[%s] missing or another id", idh, u->username);
            if (!index_points_at(f, f->by_email, u->email, k.mv_data))
                problem(f, "users[%s]: users_by_email[%s] missing or another id", idh, u->email);
            if (f->dump != NULL)
                fprintf(f->dump, "user %s %s %s\n", idh, u->username, u->email);
        }
        authd__store__v1__user_record__free_unpacked(u, NULL);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

/* check_index walks users_by_username (by_email false) or users_by_email:
 * each entry must name a user whose username (email) is the key. */
static int check_index(struct fsck *f, MDB_dbi dbi, bool by_email)
{
    const char *name = by_email ? "users_by_email" : "users_by_username";
    MDB_cursor *cur = NULL;
    MDB_val k, v, uv;
    char idh[2 * ID_BYTES + 1];
    int rc;

    if ((rc = mdb_cursor_open(f->txn, dbi, &cur)) != MDB_SUCCESS)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Authd__Store__V1__UserRecord *u;
        const char *field;

        if (by_email)
            f->n_emails++;
        else
            f->n_usernames++;
        if (v.mv_size != ID_BYTES || !printable(k.mv_data, k.mv_size)) {
            problem(f, "%s: malformed entry (key %zu bytes, value %zu bytes)", name, k.mv_size,
                v.mv_size);
            continue;
        }
        hex(v.mv_data, ID_BYTES, idh);
        /* Dumped as found, even when wrong: the journal checker then
         * judges the index on its own, not only through this walk. */
        if (f->dump != NULL)
            fprintf(f->dump, "%s %.*s %s\n", by_email ? "email" : "username", (int)k.mv_size,
                (const char *)k.mv_data, idh);
        uv = (MDB_val) { 0 };
        if (mdb_get(f->txn, f->users, &v, &uv) != MDB_SUCCESS) {
            problem(f, "%s[%.*s] -> %s: no such user (half-written?)", name, (int)k.mv_size,
                (const char *)k.mv_data, idh);
            continue;
        }
        u = authd__store__v1__user_record__unpack(NULL, uv.mv_size, uv.mv_data);
        if (u == NULL)
            continue; /* reported by check_users */
        field = by_email ? u->email : u->username;
        if (strlen(field) != k.mv_size || memcmp(field, k.mv_data, k.mv_size) != 0)
            problem(f, "%s[%.*s] -> %s: that user's %s is %s", name, (int)k.mv_size,
                (const char *)k.mv_data, idh, by_email ? "email" : "username", field);
        authd__store__v1__user_record__free_unpacked(u, NULL);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

/* expiry_key is store.c's sessions_by_expiry key: expires_at with the sign
 * bit flipped, big-endian, then the session id. */
static void expiry_key(uint8_t key[EXPIRY_KEY_BYTES], int64_t expires_at, const uint8_t *sid)
{
    uint64_t x = (uint64_t)expires_at ^ (UINT64_C(1) << 63);

    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)x;
        x >>= 8;
    }
    memcpy(key + 8, sid, ID_BYTES);
}

/* check_sessions walks sessions: each record decodes, names an existing
 * user and has its expiry-index entry. */
static int check_sessions(struct fsck *f)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v, x;
    uint8_t ek[EXPIRY_KEY_BYTES];
    char idh[2 * ID_BYTES + 1], uidh[2 * ID_BYTES + 1];
    int rc;

    if ((rc = mdb_cursor_open(f->txn, f->sessions, &cur)) != MDB_SUCCESS)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Authd__Store__V1__SessionRecord *s;

        f->n_sessions++;
        if (k.mv_size != ID_BYTES) {
            problem(f, "sessions: key of %zu bytes, want %d", k.mv_size, ID_BYTES);
            continue;
        }
        hex(k.mv_data, ID_BYTES, idh);
        s = authd__store__v1__session_record__unpack(NULL, v.mv_size, v.mv_data);
        if (s == NULL) {
            problem(f, "sessions[%s]: record does not decode", idh);
            continue;
        }
        if (s->schema_version != SCHEMA_VERSION || s->user_id.len != ID_BYTES) {
            problem(f, "sessions[%s]: wrong schema_version or user id", idh);
            goto next;
        }
        hex(s->user_id.data, ID_BYTES, uidh);
        x = (MDB_val) { .mv_size = ID_BYTES, .mv_data = s->user_id.data };
        if (mdb_get(f->txn, f->users, &x, &(MDB_val) { 0 }) != MDB_SUCCESS)
            problem(f, "sessions[%s]: its user %s does not exist", idh, uidh);
        expiry_key(ek, s->expires_at, k.mv_data);
        x = (MDB_val) { .mv_size = sizeof ek, .mv_data = ek };
        if (mdb_get(f->txn, f->by_expiry, &x, &(MDB_val) { 0 }) != MDB_SUCCESS)
            problem(f, "sessions[%s]: no sessions_by_expiry entry for expires_at %" PRId64, idh,
                s->expires_at);
        if (f->have_by_user) {
            uint8_t uk[2 * ID_BYTES];
            memcpy(uk, s->user_id.data, ID_BYTES);
            memcpy(uk + ID_BYTES, k.mv_data, ID_BYTES);
            x = (MDB_val) { .mv_size = sizeof uk, .mv_data = uk };
            if (mdb_get(f->txn, f->by_user, &x, &(MDB_val) { 0 }) != MDB_SUCCESS)
                problem(f, "sessions[%s]: no sessions_by_user entry", idh);
        }
        if (f->dump != NULL)
            fprintf(f->dump, "session %s %s %" PRId64 " %d\n", idh, uidh, s->expires_at,
                s->revoked ? 1 : 0);
    next:
        authd__store__v1__session_record__free_unpacked(s, NULL);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

/* check_expiry walks sessions_by_expiry: each entry names a session whose
 * expires_at is the entry's. */
static int check_expiry(struct fsck *f)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v, sk, sv;
    uint8_t ek[EXPIRY_KEY_BYTES];
    char idh[2 * ID_BYTES + 1];
    int rc;

    if ((rc = mdb_cursor_open(f->txn, f->by_expiry, &cur)) != MDB_SUCCESS)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Authd__Store__V1__SessionRecord *s;

        f->n_expiry++;
        if (k.mv_size != EXPIRY_KEY_BYTES) {
            problem(
                f, "sessions_by_expiry: key of %zu bytes, want %d", k.mv_size, EXPIRY_KEY_BYTES);
            continue;
        }
        hex((const uint8_t *)k.mv_data + 8, ID_BYTES, idh);
        sk = (MDB_val) { .mv_size = ID_BYTES, .mv_data = (uint8_t *)k.mv_data + 8 };
        if (mdb_get(f->txn, f->sessions, &sk, &sv) != MDB_SUCCESS) {
            problem(f, "sessions_by_expiry -> %s: no such session", idh);
            continue;
        }
        s = authd__store__v1__session_record__unpack(NULL, sv.mv_size, sv.mv_data);
        if (s == NULL)
            continue; /* reported by check_sessions */
        expiry_key(ek, s->expires_at, sk.mv_data);
        if (memcmp(ek, k.mv_data, sizeof ek) != 0)
            problem(f, "sessions_by_expiry -> %s: the session's expires_at differs", idh);
        authd__store__v1__session_record__free_unpacked(s, NULL);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

/* check_by_user walks sessions_by_user: each key is user id || session
 * id, with an empty value, naming a session of that user. */
static int check_by_user(struct fsck *f)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v, sk, sv;
    char idh[2 * ID_BYTES + 1];
    int rc;

    if ((rc = mdb_cursor_open(f->txn, f->by_user, &cur)) != MDB_SUCCESS)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Authd__Store__V1__SessionRecord *s;

        f->n_by_user++;
        if (k.mv_size != 2 * ID_BYTES || v.mv_size != 0) {
            problem(f, "sessions_by_user: key of %zu bytes or a value, want %d and none", k.mv_size,
                2 * ID_BYTES);
            continue;
        }
        hex((const uint8_t *)k.mv_data + ID_BYTES, ID_BYTES, idh);
        sk = (MDB_val) { .mv_size = ID_BYTES, .mv_data = (uint8_t *)k.mv_data + ID_BYTES };
        if (mdb_get(f->txn, f->sessions, &sk, &sv) != MDB_SUCCESS) {
            problem(f, "sessions_by_user -> %s: no such session", idh);
            continue;
        }
        s = authd__store__v1__session_record__unpack(NULL, sv.mv_size, sv.mv_data);
        if (s == NULL)
            continue; /* reported by check_sessions */
        if (s->user_id.len != ID_BYTES || memcmp(s->user_id.data, k.mv_data, ID_BYTES) != 0)
            problem(f, "sessions_by_user -> %s: the session's user differs", idh);
        authd__store__v1__session_record__free_unpacked(s, NULL);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

/* check_schema reads meta "schema": a 4-byte big-endian version 1. */
static void check_schema(struct fsck *f)
{
    static const char name[] = "schema";
    MDB_val k = { .mv_size = sizeof name - 1, .mv_data = (void *)name };
    MDB_val v;
    const uint8_t *b;

    if (mdb_get(f->txn, f->meta, &k, &v) != MDB_SUCCESS || v.mv_size != 4) {
        problem(f, "meta: no 4-byte schema entry");
        return;
    }
    b = v.mv_data;
    if (((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3])
        != SCHEMA_VERSION)
        problem(f, "meta: schema version is not %u", SCHEMA_VERSION);
}

int main(int argc, char **argv)
{
    static const char *const names[] = { "users", "users_by_username", "users_by_email", "sessions",
        "sessions_by_expiry", "meta" };
    const char *dir = NULL, *dump_path = NULL;
    bool quiet = false;
    struct fsck f = { 0 };
    MDB_env *env = NULL;
    MDB_dbi *slots[]
        = { &f.users, &f.by_username, &f.by_email, &f.sessions, &f.by_expiry, &f.meta };
    int rc, status = 2;
    const char *step = "open";

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--dump") == 0 && i + 1 < argc) {
            dump_path = argv[++i];
        } else if (strcmp(argv[i], "--quiet") == 0) {
            quiet = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "authd-fsck: unknown argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    if (dir == NULL) {
        fputs(usage, stderr);
        return 2;
    }
    if (dump_path != NULL && (f.dump = fopen(dump_path, "w")) == NULL) {
        perror(dump_path);
        return 2;
    }
    if ((rc = mdb_env_create(&env)) != MDB_SUCCESS
        || (rc = mdb_env_set_maxdbs(env, 10)) != MDB_SUCCESS
        || (rc = mdb_env_open(env, dir, MDB_RDONLY, 0600)) != MDB_SUCCESS
        || (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &f.txn)) != MDB_SUCCESS)
        goto out;
    step = "open a table";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((rc = mdb_dbi_open(f.txn, names[i], 0, slots[i])) != MDB_SUCCESS)
            goto out;
    }
    rc = mdb_dbi_open(f.txn, "sessions_by_user", 0, &f.by_user);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        goto out;
    f.have_by_user = rc == MDB_SUCCESS;
    check_schema(&f);
    step = "walk";
    if ((rc = check_users(&f)) != MDB_SUCCESS || (rc = check_index(&f, f.by_username, false))
        || (rc = check_index(&f, f.by_email, true)) || (rc = check_sessions(&f))
        || (rc = check_expiry(&f)) || (f.have_by_user && (rc = check_by_user(&f))))
        goto out;
    if (f.n_users != f.n_usernames || f.n_users != f.n_emails)
        problem(&f, "users %zu, users_by_username %zu, users_by_email %zu: counts differ",
            f.n_users, f.n_usernames, f.n_emails);
    if (f.n_sessions != f.n_expiry)
        problem(
            &f, "sessions %zu, sessions_by_expiry %zu: counts differ", f.n_sessions, f.n_expiry);
    if (f.have_by_user && f.n_sessions != f.n_by_user)
        problem(&f, "sessions %zu, sessions_by_user %zu: counts differ", f.n_sessions, f.n_by_user);
    status = f.problems == 0 ? 0 : 1;
    if (!quiet || status != 0)
        fprintf(stderr, "authd-fsck: %s: users=%zu sessions=%zu problems=%lu%s\n", dir, f.n_users,
            f.n_sessions, f.problems, f.problems > MAX_REPORTED ? " (first 20 shown)" : "");
out:
    if (status == 2)
        fprintf(stderr, "authd-fsck: %s: cannot %s: %s\n", dir, step, mdb_strerror(rc));
    if (f.txn != NULL)
        mdb_txn_abort(f.txn);
    if (env != NULL)
        mdb_env_close(env);
    if (f.dump != NULL && fclose(f.dump) != 0 && status == 0) {
        perror(dump_path);
        status = 2;
    }
    return status;
}
