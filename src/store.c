/*
 * store.c — users and sessions in LMDB (see store.h for the contract).
 *
 * One environment, nine named databases:
 *
 *   users               16-byte user id             -> UserRecord (protobuf)
 *   users_by_username   canonical username          -> 16-byte user id
 *   users_by_email      normalized email            -> 16-byte user id
 *   sessions            16-byte session id          -> SessionRecord (protobuf)
 *   sessions_by_expiry  8-byte expiry || session id -> empty (for purge)
 *   meta                "schema"                    -> 4-byte big-endian version
 *                       "throttle_key"              -> 32 random bytes
 *                       "refresh_key"               -> 32 random bytes
 *   login_throttle      16-byte user id, or 32-byte -> ThrottleRecord (protobuf)
 *                       keyed hash of an identifier
 *                       that names no user
 *   refresh_families    16-byte session id          -> RefreshRecord (protobuf)
 *   sessions_by_user    user id || session id       -> empty (a user's sessions)
 *
 * login_throttle was added without a schema bump: it is created when
 * absent, and a store without it simply has no counters yet. Its two key
 * lengths cannot collide. The keyed hash is BLAKE2b under throttle_key,
 * which is made once per store (not per process), so an unknown
 * identifier's counter survives a restart exactly as an account's does.
 *
 * refresh_families (and refresh_key) came the same way, without a schema
 * bump: a session without a family cannot be refreshed. A family lives
 * and dies with its session: purge deletes both.
 *
 * sessions_by_user came without a schema bump too. Every writer that
 * creates a session adds its entry in the same transaction, and every
 * writer that deletes one (purge, user delete) removes it. A store made
 * before the table existed gets it at open: when the table is absent, or
 * holds a different number of entries than sessions (an older authd
 * wrote sessions after the table was made), open rebuilds it from the
 * sessions table inside its one write transaction, O(sessions), once.
 * Safety never rests on the index alone: Verify and Refresh read the
 * user's record too, so a session the index missed still dies with its
 * user's disable or delete; the index is what lets those calls revoke
 * and remove sessions without scanning every session.
 *
 * The expiry in sessions_by_expiry is expires_at with its sign bit flipped,
 * big-endian, so that byte order is numeric order for every int64 (negative
 * values included) and purge can walk the index from the start.
 *
 * Writers take LMDB's one write transaction. Readers come from a pool of
 * read-only transactions (the env is opened MDB_NOTLS so a handle may move
 * between threads): a handle is mdb_txn_reset() when returned and
 * mdb_txn_renew()'d when taken, so the hot path (authd_store_verify_lookup)
 * costs no mdb_txn_begin and no malloc. Records are decoded with protobuf-c
 * through an arena allocator on the caller's stack, falling back to malloc
 * only for records too large to be valid anyway.
 *
 * Everything handed out is copied out of the map before the transaction
 * ends (LMDB 0.9.24: values live only until txn end or the next write).
 */
#include "store.h"
#include "store_codec.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <lmdb.h>
#include <sodium.h>

#include "authd/store/v1/records.pb-c.h"
#include "arena.h"
#include "log.h"
#include "pbwire.h"
#include "validate.h"

#define SCHEMA_VERSION      1u
#define DEFAULT_MAP_SIZE    ((size_t)4 << 30)
#define DEFAULT_MAX_READERS 126u
#define MAX_DBS             10u /* nine in use, one spare for a later schema */

#define EXPIRY_KEY_BYTES   (8 + AUTHD_ID_BYTES)
#define USER_SESSION_BYTES (2 * AUTHD_ID_BYTES) /* sessions_by_user: user id || session id */

/* Largest packed records: every field at its bound, int64s as 10-byte
 * varints. A user is about 1.6 KiB, a session under 64 bytes. */
#define USER_PACK_MAX     2048
#define SESSION_PACK_MAX  96
#define THROTTLE_PACK_MAX 64
#define REFRESH_PACK_MAX  192 /* 3 x 32-48 bytes + 5 varints */

#define THROTTLE_KEY_BYTES  32 /* the secret of the keyed hash */
#define THROTTLE_HASH_BYTES AUTHD_LOGIN_HASH_BYTES /* a key of an identifier that names no user */

/* Stack arena for decoding. A maximal valid UserRecord unpacks into less
 * than 3 KiB (struct, strings, role pointers, protobuf-c's scan slabs). */
#define ARENA_BYTES 4096

struct authd_store {
    MDB_env *env;
    MDB_dbi users;
    MDB_dbi by_username;
    MDB_dbi by_email;
    MDB_dbi sessions;
    MDB_dbi by_expiry;
    MDB_dbi meta;
    MDB_dbi throttle;
    MDB_dbi refresh;
    MDB_dbi by_user;
    uint8_t throttle_key[THROTTLE_KEY_BYTES];
    uint8_t refresh_key[THROTTLE_KEY_BYTES];

    /* The read-transaction pool. idle[0..n_idle) are reset handles;
     * n_open counts every live handle (idle or in use) and never exceeds
     * max_readers. Waiters sleep on cv until a handle comes back. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sync_ready;
    MDB_txn **idle;
    unsigned n_idle;
    unsigned n_open;
    unsigned max_readers;

    /* Test hook (authd_store_fault_next_batch_commit): the next batch
     * commit fails with this code instead of committing. 0 = none. */
    _Atomic int fault_batch_commit;
};

/* A group of writes in one LMDB write transaction: each write runs in a
 * nested transaction of txn (see authd_store_batch_begin). */
struct authd_store_batch {
    authd_store *st;
    MDB_txn *txn;
};

/* ---- errors and logging ------------------------------------------------ */

/* log_lmdb writes the LMDB error string to the log, the only place it goes:
 * callers get a canonical code. */
static void log_lmdb(const char *op, int rc)
{
    authd_logrec r;

    if (authd_log_begin(&r, AUTHD_LOG_ERROR, "store_error")) {
        authd_log_str(&r, "op", op);
        authd_log_str(&r, "error", mdb_strerror(rc));
        authd_log_end(&r);
    }
}

/* log_data_loss records a record that did not decode, with the key that
 * holds it, so an operator can find it. */
static void log_data_loss(const char *op, const char *what, const void *key, size_t len)
{
    authd_logrec r;

    if (authd_log_begin(&r, AUTHD_LOG_ERROR, "store_error")) {
        authd_log_str(&r, "op", op);
        authd_log_str(&r, "error", what);
        if (key != NULL)
            authd_log_hex(&r, "key", key, len);
        authd_log_end(&r);
    }
}

/* lmdb_code translates an LMDB return code where the store meets its
 * callers. NOT_FOUND and ALREADY_EXISTS are ordinary answers and are not
 * logged; everything else is. */
static authd_code lmdb_code(int rc, const char *op)
{
    switch (rc) {
    case MDB_SUCCESS:
        return AUTHD_OK;
    case MDB_NOTFOUND:
        return AUTHD_NOT_FOUND;
    case MDB_KEYEXIST:
        return AUTHD_ALREADY_EXISTS;
    case MDB_MAP_FULL:
        log_lmdb(op, rc);
        return AUTHD_RESOURCE_EXHAUSTED;
    default:
        log_lmdb(op, rc);
        return AUTHD_INTERNAL;
    }
}

/* ---- records ------------------------------------------------------------ */

static bool status_valid(uint32_t status)
{
    return status == AUTHD_USER_ACTIVE || status == AUTHD_USER_DISABLED;
}

/* user_valid is the one definition of a storable user, applied before
 * every write and after every decode, so the store never writes what it
 * could not read back and never hands out what it did not validate.
 * Strings must be NUL-terminated inside their arrays. */
static bool user_valid(const authd_user *u)
{
    size_t n;

    n = strnlen(u->username, sizeof u->username);
    if (n == 0 || n > AUTHD_USERNAME_MAX)
        return false;
    n = strnlen(u->email, sizeof u->email);
    if (n == 0 || n > AUTHD_EMAIL_MAX)
        return false;
    n = strnlen(u->password_hash, sizeof u->password_hash);
    if (n == 0 || n >= AUTHD_HASH_MAX)
        return false;
    if (!status_valid(u->status) || u->n_roles > AUTHD_ROLES_MAX)
        return false;
    for (uint32_t i = 0; i < u->n_roles; i++) {
        if (strnlen(u->roles[i], sizeof u->roles[i]) > AUTHD_ROLE_MAX)
            return false;
    }
    return true;
}

/* copy_str copies a decoded string into a fixed array, refusing (rather
 * than truncating) one that does not fit with its NUL. */
static bool copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap);

    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* user_pack encodes u as a schema-1 UserRecord into buf. */
static authd_code user_pack(const authd_user *u, uint8_t *buf, size_t cap, size_t *len)
{
    Authd__Store__V1__UserRecord rec = AUTHD__STORE__V1__USER_RECORD__INIT;
    char *roles[AUTHD_ROLES_MAX];
    size_t n;

    rec.schema_version = SCHEMA_VERSION;
    rec.id.data = (uint8_t *)u->id;
    rec.id.len = AUTHD_ID_BYTES;
    rec.username = (char *)u->username;
    rec.email = (char *)u->email;
    rec.password_hash = (char *)u->password_hash;
    rec.status = u->status;
    for (uint32_t i = 0; i < u->n_roles; i++)
        roles[i] = (char *)u->roles[i];
    rec.n_roles = u->n_roles;
    rec.roles = u->n_roles ? roles : NULL;
    rec.created_at = u->created_at;
    rec.updated_at = u->updated_at;
    rec.password_changed_at = u->password_changed_at;

    n = authd__store__v1__user_record__get_packed_size(&rec);
    if (n > cap) {
        log_data_loss("user_pack", "record larger than USER_PACK_MAX", u->id, AUTHD_ID_BYTES);
        return AUTHD_INTERNAL;
    }
    *len = authd__store__v1__user_record__pack(&rec, buf);
    return AUTHD_OK;
}

/* user_decode turns the bytes stored under key id into *out. Anything
 * that is not a schema-1 record whose every field fits its array, whose id
 * is the key it is stored under, and that passes user_valid is DATA_LOSS.
 * Decoding uses a stack arena, so a valid record costs no malloc. */
static authd_code user_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_user *out)
{
    alignas(max_align_t) unsigned char mem[ARENA_BYTES];
    authd_arena a = { mem, sizeof mem, 0 };
    ProtobufCAllocator alloc = authd_arena_allocator(&a);
    Authd__Store__V1__UserRecord *rec = NULL;
    authd_user u;
    authd_code code = AUTHD_DATA_LOSS;
    const char *what = "record does not decode";

    memset(&u, 0, sizeof u);
    rec = authd__store__v1__user_record__unpack(&alloc, len, data);
    if (rec == NULL)
        goto out;
    what = "record out of bounds";
    if (rec->schema_version != SCHEMA_VERSION) {
        what = "unknown schema_version";
        goto out;
    }
    if (rec->id.len != AUTHD_ID_BYTES || memcmp(rec->id.data, id, AUTHD_ID_BYTES) != 0)
        goto out;
    if (rec->n_roles > AUTHD_ROLES_MAX)
        goto out;
    memcpy(u.id, rec->id.data, AUTHD_ID_BYTES);
    if (!copy_str(u.username, sizeof u.username, rec->username)
        || !copy_str(u.email, sizeof u.email, rec->email)
        || !copy_str(u.password_hash, sizeof u.password_hash, rec->password_hash))
        goto out;
    for (size_t i = 0; i < rec->n_roles; i++) {
        if (!copy_str(u.roles[i], sizeof u.roles[i], rec->roles[i]))
            goto out;
    }
    u.n_roles = (uint32_t)rec->n_roles;
    u.status = rec->status;
    u.created_at = rec->created_at;
    u.updated_at = rec->updated_at;
    u.password_changed_at = rec->password_changed_at;
    if (!user_valid(&u))
        goto out;
    *out = u;
    code = AUTHD_OK;
out:
    if (rec != NULL)
        authd__store__v1__user_record__free_unpacked(rec, &alloc);
    if (code != AUTHD_OK)
        log_data_loss("user_decode", what, id, AUTHD_ID_BYTES);
    return code;
}

/* session_pack encodes s as a schema-1 SessionRecord (the id is the key). */
static authd_code session_pack(const authd_session *s, uint8_t *buf, size_t cap, size_t *len)
{
    Authd__Store__V1__SessionRecord rec = AUTHD__STORE__V1__SESSION_RECORD__INIT;
    size_t n;

    rec.schema_version = SCHEMA_VERSION;
    rec.user_id.data = (uint8_t *)s->user_id;
    rec.user_id.len = AUTHD_ID_BYTES;
    rec.created_at = s->created_at;
    rec.expires_at = s->expires_at;
    rec.revoked = s->revoked;
    rec.revoked_at = s->revoked_at;

    n = authd__store__v1__session_record__get_packed_size(&rec);
    if (n > cap) {
        log_data_loss("session_pack", "record larger than SESSION_PACK_MAX", s->id, AUTHD_ID_BYTES);
        return AUTHD_INTERNAL;
    }
    *len = authd__store__v1__session_record__pack(&rec, buf);
    return AUTHD_OK;
}

/* session_decode is user_decode for sessions. */
static authd_code session_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_session *out)
{
    alignas(max_align_t) unsigned char mem[512];
    authd_arena a = { mem, sizeof mem, 0 };
    ProtobufCAllocator alloc = authd_arena_allocator(&a);
    Authd__Store__V1__SessionRecord *rec = NULL;
    authd_session s;
    authd_code code = AUTHD_DATA_LOSS;
    const char *what = "record does not decode";

    memset(&s, 0, sizeof s);
    rec = authd__store__v1__session_record__unpack(&alloc, len, data);
    if (rec == NULL)
        goto out;
    what = "record out of bounds";
    if (rec->schema_version != SCHEMA_VERSION) {
        what = "unknown schema_version";
        goto out;
    }
    if (rec->user_id.len != AUTHD_ID_BYTES)
        goto out;
    memcpy(s.id, id, AUTHD_ID_BYTES);
    memcpy(s.user_id, rec->user_id.data, AUTHD_ID_BYTES);
    s.created_at = rec->created_at;
    s.expires_at = rec->expires_at;
    s.revoked = rec->revoked != 0;
    s.revoked_at = rec->revoked_at;
    *out = s;
    code = AUTHD_OK;
out:
    if (rec != NULL)
        authd__store__v1__session_record__free_unpacked(rec, &alloc);
    if (code != AUTHD_OK)
        log_data_loss("session_decode", what, id, AUTHD_ID_BYTES);
    return code;
}

/* ---- Verify's lean reading of the two records ------------------------------
 *
 * Verify needs five fields of two records. Unpacking them whole with
 * protobuf-c (every string copied, then validated, then copied again into
 * authd_user) was a tenth of a Verify's instructions, so Verify reads the
 * stored bytes directly with pbwire.h. The rules are the full decoders'
 * (session_decode, user_decode + user_valid), kept at least as strict:
 * every known field must have its wire type, every string its bounds and
 * no NUL. Whatever the lean reader accepts, the full decoder accepts with
 * the same values (fuzz/fuzz_record.c checks exactly that); the converse
 * may fail only for encodings the store never writes (an embedded NUL, an
 * overlong varint). */

/* str_ok: a stored string field of at most max bytes without NUL (the
 * full decoder's strnlen bound; an embedded NUL is refused outright). */
static bool str_ok(const pbw_field *f, size_t min, size_t max)
{
    return f->type == PBW_LEN && f->len >= min && f->len <= max
        && (f->len == 0 || memchr(f->data, 0, f->len) == NULL);
}

authd_code authd_record_session_view(const void *data, size_t len, authd_verify_view *out)
{
    const uint8_t *p = data, *end = p + len;
    bool have_uid = false;
    uint64_t schema = 0;
    pbw_field f;

    out->expires_at = 0;
    out->revoked = false;
    while (p < end) {
        if (!pbw_next(&p, end, &f))
            return AUTHD_DATA_LOSS;
        switch (f.num) {
        case 1:
            if (f.type != PBW_VARINT)
                return AUTHD_DATA_LOSS;
            schema = f.v;
            break;
        case 2:
            if (f.type != PBW_LEN)
                return AUTHD_DATA_LOSS;
            have_uid = f.len == AUTHD_ID_BYTES;
            if (have_uid)
                memcpy(out->user_id, f.data, AUTHD_ID_BYTES);
            break;
        case 3:
        case 6:
            if (f.type != PBW_VARINT)
                return AUTHD_DATA_LOSS;
            break;
        case 4:
            if (f.type != PBW_VARINT)
                return AUTHD_DATA_LOSS;
            out->expires_at = (int64_t)f.v;
            break;
        case 5:
            if (f.type != PBW_VARINT)
                return AUTHD_DATA_LOSS;
            out->revoked = f.v != 0;
            break;
        default: /* unknown fields are skipped, as protobuf-c does */
            break;
        }
    }
    return schema == SCHEMA_VERSION && have_uid ? AUTHD_OK : AUTHD_DATA_LOSS;
}

authd_code authd_record_user_view(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_verify_view *out)
{
    const uint8_t *p = data, *end = p + len;
    bool have_id = false, have_name = false, have_email = false, have_hash = false;
    uint64_t schema = 0, status = 0;
    uint32_t n_roles = 0;
    pbw_field f;

    while (p < end) {
        if (!pbw_next(&p, end, &f))
            return AUTHD_DATA_LOSS;
        switch (f.num) {
        case 1:
        case 6:
            if (f.type != PBW_VARINT)
                return AUTHD_DATA_LOSS;
            if (f.num == 1)
                schema = f.v;
            else
                status = f.v;
            break;
        case 2:
            if (f.type != PBW_LEN)
                return AUTHD_DATA_LOSS;
            have_id = f.len == AUTHD_ID_BYTES && memcmp(f.data, id, AUTHD_ID_BYTES) == 0;
            break;
        case 3:
            if (!(have_name = str_ok(&f, 1, AUTHD_USERNAME_MAX)))
                return AUTHD_DATA_LOSS;
            memcpy(out->username, f.data, f.len);
            out->username[f.len] = '\0';
            break;
        case 4:
            if (!(have_email = str_ok(&f, 1, AUTHD_EMAIL_MAX)))
                return AUTHD_DATA_LOSS;
            break;
        case 5:
            if (!(have_hash = str_ok(&f, 1, AUTHD_HASH_MAX - 1)))
                return AUTHD_DATA_LOSS;
            break;
        case 7:
            if (n_roles == AUTHD_ROLES_MAX || !str_ok(&f, 0, AUTHD_ROLE_MAX))
                return AUTHD_DATA_LOSS;
            memcpy(out->roles[n_roles], f.data, f.len);
            out->roles[n_roles][f.len] = '\0';
            n_roles++;
            break;
        case 8:
        case 9:
        case 10:
            if (f.type != PBW_VARINT)
                return AUTHD_DATA_LOSS;
            break;
        default:
            break;
        }
    }
    /* The full decoder takes the low 32 bits of status (a uint32 field). */
    if (schema != SCHEMA_VERSION || !have_id || !have_name || !have_email || !have_hash
        || status > UINT32_MAX || !status_valid((uint32_t)status))
        return AUTHD_DATA_LOSS;
    out->status = (uint32_t)status;
    out->n_roles = n_roles;
    return AUTHD_OK;
}

authd_code authd_record_user_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_user *out)
{
    return user_decode(data, len, id, out);
}

authd_code authd_record_session_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_session *out)
{
    return session_decode(data, len, id, out);
}

/* expiry_key builds the sessions_by_expiry key: expires_at with the sign
 * bit flipped, big-endian (so memcmp order is numeric order), then the
 * session id. */
static void expiry_key(
    uint8_t key[EXPIRY_KEY_BYTES], int64_t expires_at, const uint8_t sid[AUTHD_ID_BYTES])
{
    uint64_t v = (uint64_t)expires_at ^ (UINT64_C(1) << 63);

    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)v;
        v >>= 8;
    }
    memcpy(key + 8, sid, AUTHD_ID_BYTES);
}

static int64_t expiry_key_time(const uint8_t key[EXPIRY_KEY_BYTES])
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | key[i];
    return (int64_t)(v ^ (UINT64_C(1) << 63));
}

/* ---- transactions ------------------------------------------------------- */

/* A thread's own read transaction (authd_store_reader_pin): taken from
 * the pool once and kept, reset, between uses, so the thread renews it
 * without the pool's lock. Every event loop runs Verify; through the pool
 * they all took and released one mutex twice per Verify, and that cache
 * line moving between cores cost more than the lookups. */
static _Thread_local struct {
    authd_store *st; /* the store the transaction belongs to, or NULL */
    MDB_txn *txn;
    bool busy; /* renewed and in use */
} tl_reader;

/* pool_release forgets a live handle that is gone (aborted): one more may
 * be opened. */
static void pool_release(authd_store *st)
{
    pthread_mutex_lock(&st->mu);
    st->n_open--;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* reader_get takes the thread's pinned read transaction when it has one
 * for st, else one from the pool, renewing it to the latest snapshot, or
 * begins a new one while fewer than max_readers exist. When all
 * max_readers are in use it waits: LMDB would otherwise answer
 * MDB_READERS_FULL, and a Verify that waits a microsecond beats one that
 * fails. */
static authd_code reader_get(authd_store *st, MDB_txn **out)
{
    MDB_txn *txn = NULL;
    bool fresh = false;
    int rc;

    if (tl_reader.st == st && !tl_reader.busy) {
        rc = mdb_txn_renew(tl_reader.txn);
        if (rc != MDB_SUCCESS) {
            mdb_txn_abort(tl_reader.txn);
            tl_reader.st = NULL;
            tl_reader.txn = NULL;
            pool_release(st);
            return lmdb_code(rc, "read_txn_renew");
        }
        tl_reader.busy = true;
        *out = tl_reader.txn;
        return AUTHD_OK;
    }
    pthread_mutex_lock(&st->mu);
    while (st->n_idle == 0 && st->n_open >= st->max_readers)
        pthread_cond_wait(&st->cv, &st->mu);
    if (st->n_idle > 0) {
        txn = st->idle[--st->n_idle];
    } else {
        st->n_open++;
        fresh = true;
    }
    pthread_mutex_unlock(&st->mu);

    if (fresh)
        rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    else
        rc = mdb_txn_renew(txn);
    if (rc != MDB_SUCCESS) {
        if (!fresh)
            mdb_txn_abort(txn);
        pool_release(st);
        return lmdb_code(rc, fresh ? "read_txn_begin" : "read_txn_renew");
    }
    *out = txn;
    return AUTHD_OK;
}

/* reader_put returns a read transaction to the pool, or resets the
 * thread's pinned one. A transaction that saw an internal LMDB error is
 * aborted instead of reused (a pinned one is then unpinned). */
static void reader_put(authd_store *st, MDB_txn *txn, authd_code code)
{
    bool keep = code != AUTHD_INTERNAL;

    if (keep)
        mdb_txn_reset(txn);
    else
        mdb_txn_abort(txn);
    if (txn == tl_reader.txn && tl_reader.st == st) {
        tl_reader.busy = false;
        if (!keep) {
            tl_reader.st = NULL;
            tl_reader.txn = NULL;
            pool_release(st);
        }
        return;
    }
    pthread_mutex_lock(&st->mu);
    if (keep)
        st->idle[st->n_idle++] = txn;
    else
        st->n_open--;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

authd_code authd_store_reader_pin(authd_store *st)
{
    MDB_txn *txn = NULL;
    authd_code code;

    if (st == NULL || tl_reader.st != NULL)
        return AUTHD_FAILED_PRECONDITION;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    mdb_txn_reset(txn);
    tl_reader.st = st;
    tl_reader.txn = txn;
    tl_reader.busy = false;
    return AUTHD_OK;
}

void authd_store_reader_unpin(authd_store *st)
{
    if (st == NULL || tl_reader.st != st || tl_reader.busy)
        return;
    mdb_txn_abort(tl_reader.txn);
    tl_reader.st = NULL;
    tl_reader.txn = NULL;
    pool_release(st);
}

static authd_code writer_begin(authd_store *st, MDB_txn **txn)
{
    return lmdb_code(mdb_txn_begin(st->env, NULL, 0, txn), "write_txn_begin");
}

/* writer_begin_in begins the write transaction of one write: a top-level
 * one when parent is NULL, else a transaction nested in parent (a batch),
 * whose commit lands in parent and whose abort undoes only this write. */
static authd_code writer_begin_in(authd_store *st, MDB_txn *parent, MDB_txn **txn)
{
    return lmdb_code(mdb_txn_begin(st->env, parent, 0, txn), "write_txn_begin");
}

/* writer_commit commits and forgets txn: LMDB frees the handle whether or
 * not the commit succeeds. */
static authd_code writer_commit(MDB_txn **txn)
{
    int rc = mdb_txn_commit(*txn);

    *txn = NULL;
    return lmdb_code(rc, "commit");
}

/* get_user reads and decodes the user under id inside txn. */
static authd_code get_user(
    authd_store *st, MDB_txn *txn, const uint8_t id[AUTHD_ID_BYTES], authd_user *out)
{
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)id };
    MDB_val v;
    int rc = mdb_get(txn, st->users, &k, &v);

    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_user");
    return user_decode(v.mv_data, v.mv_size, id, out);
}

/* get_session reads and decodes the session under id inside txn. */
static authd_code get_session(
    authd_store *st, MDB_txn *txn, const uint8_t id[AUTHD_ID_BYTES], authd_session *out)
{
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)id };
    MDB_val v;
    int rc = mdb_get(txn, st->sessions, &k, &v);

    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_session");
    return session_decode(v.mv_data, v.mv_size, id, out);
}

/* put_user overwrites the record of an existing user (the indexes are
 * unchanged: username and email never change here). */
static authd_code put_user(authd_store *st, MDB_txn *txn, const authd_user *u)
{
    uint8_t buf[USER_PACK_MAX];
    size_t len = 0;
    authd_code code = user_pack(u, buf, sizeof buf, &len);
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)u->id };
    MDB_val v = { .mv_size = len, .mv_data = buf };

    if (code != AUTHD_OK)
        return code;
    return lmdb_code(mdb_put(txn, st->users, &k, &v, 0), "put_user");
}

/* user_session_key builds the sessions_by_user key: user id, then session
 * id, so one user's sessions are one contiguous range. */
static void user_session_key(uint8_t key[USER_SESSION_BYTES], const uint8_t uid[AUTHD_ID_BYTES],
    const uint8_t sid[AUTHD_ID_BYTES])
{
    memcpy(key, uid, AUTHD_ID_BYTES);
    memcpy(key + AUTHD_ID_BYTES, sid, AUTHD_ID_BYTES);
}

static authd_code user_session_put(authd_store *st, MDB_txn *txn, const uint8_t uid[AUTHD_ID_BYTES],
    const uint8_t sid[AUTHD_ID_BYTES])
{
    uint8_t key[USER_SESSION_BYTES];
    MDB_val k = { .mv_size = sizeof key, .mv_data = key };
    MDB_val v = { .mv_size = 0, .mv_data = NULL };

    user_session_key(key, uid, sid);
    return lmdb_code(mdb_put(txn, st->by_user, &k, &v, 0), "put_session_user");
}

/* user_session_del removes a sessions_by_user entry; an absent one is
 * AUTHD_OK (a store whose index was rebuilt may lack it). */
static authd_code user_session_del(authd_store *st, MDB_txn *txn, const uint8_t uid[AUTHD_ID_BYTES],
    const uint8_t sid[AUTHD_ID_BYTES])
{
    uint8_t key[USER_SESSION_BYTES];
    MDB_val k = { .mv_size = sizeof key, .mv_data = key };
    int rc;

    user_session_key(key, uid, sid);
    rc = mdb_del(txn, st->by_user, &k, NULL);
    return rc == MDB_NOTFOUND ? AUTHD_OK : lmdb_code(rc, "del_session_user");
}

/* put_session writes session s and, when is_new, its expiry and per-user
 * index entries; a new session must not already exist. */
static authd_code put_session(authd_store *st, MDB_txn *txn, const authd_session *s, bool is_new)
{
    uint8_t buf[SESSION_PACK_MAX];
    uint8_t ek[EXPIRY_KEY_BYTES];
    size_t len = 0;
    authd_code code = session_pack(s, buf, sizeof buf, &len);
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)s->id };
    MDB_val v = { .mv_size = len, .mv_data = buf };
    MDB_val ik = { .mv_size = sizeof ek, .mv_data = ek };
    MDB_val iv = { .mv_size = 0, .mv_data = NULL };

    if (code != AUTHD_OK)
        return code;
    code = lmdb_code(
        mdb_put(txn, st->sessions, &k, &v, is_new ? MDB_NOOVERWRITE : 0), "put_session");
    if (code != AUTHD_OK || !is_new)
        return code;
    expiry_key(ek, s->expires_at, s->id);
    code = lmdb_code(mdb_put(txn, st->by_expiry, &ik, &iv, 0), "put_session_expiry");
    if (code != AUTHD_OK)
        return code;
    return user_session_put(st, txn, s->user_id, s->id);
}

/* ---- refresh families: records ------------------------------------------------ */

/* family_pack encodes f as a schema-1 RefreshRecord. */
static authd_code family_pack(const authd_refresh_family *f, uint8_t *buf, size_t cap, size_t *len)
{
    Authd__Store__V1__RefreshRecord rec = AUTHD__STORE__V1__REFRESH_RECORD__INIT;

    rec.schema_version = SCHEMA_VERSION;
    rec.generation = f->generation;
    rec.token_hash.data = (uint8_t *)f->token_hash;
    rec.token_hash.len = sizeof f->token_hash;
    if (f->has_parent) {
        rec.parent_hash.data = (uint8_t *)f->parent_hash;
        rec.parent_hash.len = sizeof f->parent_hash;
    }
    rec.parent_used_at_ms = f->parent_used_at_ms;
    if (f->has_box) {
        rec.child_box.data = (uint8_t *)f->child_box;
        rec.child_box.len = sizeof f->child_box;
    }
    rec.issued_at = f->issued_at;
    rec.access_expires_at = f->access_expires_at;
    if (authd__store__v1__refresh_record__get_packed_size(&rec) > cap)
        return AUTHD_INTERNAL;
    *len = authd__store__v1__refresh_record__pack(&rec, buf);
    return AUTHD_OK;
}

/* family_decode is user_decode for refresh families: every bytes field
 * must have its exact size (or be empty where empty is allowed). */
static authd_code family_decode(
    const void *data, size_t len, const uint8_t id[AUTHD_ID_BYTES], authd_refresh_family *out)
{
    alignas(max_align_t) unsigned char mem[1024];
    authd_arena a = { mem, sizeof mem, 0 };
    ProtobufCAllocator alloc = authd_arena_allocator(&a);
    Authd__Store__V1__RefreshRecord *rec
        = authd__store__v1__refresh_record__unpack(&alloc, len, data);
    authd_refresh_family f;
    authd_code code = AUTHD_DATA_LOSS;

    memset(&f, 0, sizeof f);
    if (rec == NULL || rec->schema_version != SCHEMA_VERSION || rec->generation == 0
        || rec->token_hash.len != sizeof f.token_hash
        || (rec->parent_hash.len != 0 && rec->parent_hash.len != sizeof f.parent_hash)
        || (rec->child_box.len != 0 && rec->child_box.len != sizeof f.child_box))
        goto out;
    f.generation = rec->generation;
    memcpy(f.token_hash, rec->token_hash.data, sizeof f.token_hash);
    f.has_parent = rec->parent_hash.len != 0;
    if (f.has_parent)
        memcpy(f.parent_hash, rec->parent_hash.data, sizeof f.parent_hash);
    f.parent_used_at_ms = rec->parent_used_at_ms;
    f.has_box = rec->child_box.len != 0;
    if (f.has_box)
        memcpy(f.child_box, rec->child_box.data, sizeof f.child_box);
    f.issued_at = rec->issued_at;
    f.access_expires_at = rec->access_expires_at;
    *out = f;
    code = AUTHD_OK;
out:
    if (rec != NULL)
        authd__store__v1__refresh_record__free_unpacked(rec, &alloc);
    if (code != AUTHD_OK)
        log_data_loss("family_decode", "record does not decode", id, AUTHD_ID_BYTES);
    sodium_memzero(&f, sizeof f);
    return code;
}

/* get_family reads the refresh family of session id inside txn. */
static authd_code get_family(
    authd_store *st, MDB_txn *txn, const uint8_t id[AUTHD_ID_BYTES], authd_refresh_family *out)
{
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)id };
    MDB_val v;
    int rc = mdb_get(txn, st->refresh, &k, &v);

    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_family");
    return family_decode(v.mv_data, v.mv_size, id, out);
}

/* put_family writes the family of session id; a new one must not exist. */
static authd_code put_family(authd_store *st, MDB_txn *txn, const uint8_t id[AUTHD_ID_BYTES],
    const authd_refresh_family *f, bool is_new)
{
    uint8_t buf[REFRESH_PACK_MAX];
    size_t len = 0;
    authd_code code = family_pack(f, buf, sizeof buf, &len);
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)id };
    MDB_val v = { .mv_size = len, .mv_data = buf };

    if (code == AUTHD_OK)
        code = lmdb_code(
            mdb_put(txn, st->refresh, &k, &v, is_new ? MDB_NOOVERWRITE : 0), "put_family");
    sodium_memzero(buf, sizeof buf);
    return code;
}

/* move_session_expiry rewrites session s with a new end, moving its
 * expiry index entry with it (purge finds sessions through the index). */
static authd_code move_session_expiry(
    authd_store *st, MDB_txn *txn, authd_session *s, int64_t expires_at)
{
    uint8_t ek[EXPIRY_KEY_BYTES];
    MDB_val ik = { .mv_size = sizeof ek, .mv_data = ek };
    MDB_val iv = { .mv_size = 0, .mv_data = NULL };
    authd_code code;
    int rc;

    if (expires_at == s->expires_at)
        return put_session(st, txn, s, false);
    expiry_key(ek, s->expires_at, s->id);
    rc = mdb_del(txn, st->by_expiry, &ik, NULL);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return lmdb_code(rc, "del_session_expiry");
    s->expires_at = expires_at;
    code = put_session(st, txn, s, false);
    if (code != AUTHD_OK)
        return code;
    expiry_key(ek, s->expires_at, s->id);
    return lmdb_code(mdb_put(txn, st->by_expiry, &ik, &iv, 0), "put_session_expiry");
}

/* ---- open / close ------------------------------------------------------- */

static void store_free(authd_store *st)
{
    if (st == NULL)
        return;
    for (unsigned i = 0; i < st->n_idle; i++)
        mdb_txn_abort(st->idle[i]);
    if (st->env != NULL)
        mdb_env_close(st->env);
    if (st->sync_ready) {
        pthread_cond_destroy(&st->cv);
        pthread_mutex_destroy(&st->mu);
    }
    free(st->idle);
    sodium_memzero(st->throttle_key, sizeof st->throttle_key);
    sodium_memzero(st->refresh_key, sizeof st->refresh_key);
    free(st);
}

/* check_schema records the schema version in a new store and refuses a
 * store written by a later authd (FAILED_PRECONDITION: it is intact, we
 * are too old) or one whose version is unreadable (DATA_LOSS). */
static authd_code check_schema(authd_store *st, MDB_txn *txn)
{
    static const char name[] = "schema";
    MDB_val k = { .mv_size = sizeof name - 1, .mv_data = (void *)name };
    MDB_val v;
    uint8_t be[4];
    uint32_t version;
    int rc = mdb_get(txn, st->meta, &k, &v);

    if (rc == MDB_NOTFOUND) {
        be[0] = 0;
        be[1] = 0;
        be[2] = 0;
        be[3] = SCHEMA_VERSION;
        v.mv_size = sizeof be;
        v.mv_data = be;
        return lmdb_code(mdb_put(txn, st->meta, &k, &v, MDB_NOOVERWRITE), "put_schema");
    }
    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_schema");
    if (v.mv_size != sizeof be) {
        log_data_loss("open", "meta schema is not 4 bytes", NULL, 0);
        return AUTHD_DATA_LOSS;
    }
    memcpy(be, v.mv_data, sizeof be);
    version = (uint32_t)be[0] << 24 | (uint32_t)be[1] << 16 | (uint32_t)be[2] << 8 | be[3];
    if (version == 0) {
        log_data_loss("open", "meta schema is 0", NULL, 0);
        return AUTHD_DATA_LOSS;
    }
    if (version > SCHEMA_VERSION) {
        log_data_loss("open", "store written by a newer schema", NULL, 0);
        return AUTHD_FAILED_PRECONDITION;
    }
    return AUTHD_OK;
}

/* load_secret reads one of the store's secrets (the throttle key of keyed
 * identifier hashes, the refresh key of refresh-token MACs) from meta,
 * making it on first open. Every process that opens the store (authd, the
 * unlock command) gets the same one. */
static authd_code load_secret(
    authd_store *st, MDB_txn *txn, const char *name, uint8_t key[THROTTLE_KEY_BYTES])
{
    MDB_val k = { .mv_size = strlen(name), .mv_data = (void *)name };
    MDB_val v;
    int rc = mdb_get(txn, st->meta, &k, &v);

    if (rc == MDB_NOTFOUND) {
        randombytes_buf(key, THROTTLE_KEY_BYTES);
        v.mv_size = THROTTLE_KEY_BYTES;
        v.mv_data = key;
        return lmdb_code(mdb_put(txn, st->meta, &k, &v, MDB_NOOVERWRITE), "put_secret");
    }
    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_secret");
    if (v.mv_size != THROTTLE_KEY_BYTES) {
        log_data_loss("open", "meta secret has the wrong size", name, strlen(name));
        return AUTHD_DATA_LOSS;
    }
    memcpy(key, v.mv_data, THROTTLE_KEY_BYTES);
    return AUTHD_OK;
}

/* rebuild_user_sessions fills the (empty) sessions_by_user table from the
 * sessions table inside txn: one entry per session whose record names its
 * user. A record that does not decode is skipped (authd-fsck reports it). */
static authd_code rebuild_user_sessions(authd_store *st, MDB_txn *txn, size_t *added)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    authd_verify_view sv;
    authd_code code;
    int rc;

    *added = 0;
    code = lmdb_code(mdb_cursor_open(txn, st->sessions, &cur), "rebuild_cursor");
    if (code != AUTHD_OK)
        return code;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != AUTHD_ID_BYTES
            || authd_record_session_view(v.mv_data, v.mv_size, &sv) != AUTHD_OK)
            continue;
        code = user_session_put(st, txn, sv.user_id, k.mv_data);
        if (code != AUTHD_OK)
            goto out;
        (*added)++;
    }
    if (rc != MDB_NOTFOUND)
        code = lmdb_code(rc, "rebuild_scan");
out:
    mdb_cursor_close(cur);
    return code;
}

/* open_user_sessions opens sessions_by_user, making it (and filling it
 * from the sessions table) when the store predates it, and rebuilding it
 * when its entry count differs from the sessions table's: an older authd
 * that ran on the store after the table was made wrote or purged sessions
 * without it. Counting is two mdb_stat calls, so an ordinary open costs
 * nothing more; a rebuild is logged. */
static authd_code open_user_sessions(authd_store *st, MDB_txn *txn)
{
    MDB_stat ss, su;
    authd_logrec r;
    const char *why = NULL;
    size_t added = 0;
    authd_code code;
    int rc = mdb_dbi_open(txn, "sessions_by_user", 0, &st->by_user);

    if (rc == MDB_NOTFOUND) {
        why = "new_table";
        rc = mdb_dbi_open(txn, "sessions_by_user", MDB_CREATE, &st->by_user);
    }
    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "dbi_open");
    if (why == NULL) {
        if ((rc = mdb_stat(txn, st->sessions, &ss)) != MDB_SUCCESS
            || (rc = mdb_stat(txn, st->by_user, &su)) != MDB_SUCCESS)
            return lmdb_code(rc, "stat_sessions");
        if (ss.ms_entries == su.ms_entries)
            return AUTHD_OK;
        why = "count_mismatch";
        if ((rc = mdb_drop(txn, st->by_user, 0)) != MDB_SUCCESS)
            return lmdb_code(rc, "drop_session_user");
    }
    code = rebuild_user_sessions(st, txn, &added);
    if (code == AUTHD_OK && added > 0
        && authd_log_begin(&r, AUTHD_LOG_WARN, "store_index_rebuilt")) {
        authd_log_str(&r, "index", "sessions_by_user");
        authd_log_str(&r, "why", why);
        authd_log_u64(&r, "entries", added);
        authd_log_end(&r);
    }
    return code;
}

/* authd_store_open creates the directory (0700, one level) when absent,
 * opens the environment MDB_NOTLS (so pooled read transactions can move
 * between threads), clears reader slots left by dead processes, and
 * creates the named databases in one write transaction. */
authd_code authd_store_open(const authd_store_options *opts, authd_store **out)
{
    static const char *const names[] = {
        "users",
        "users_by_username",
        "users_by_email",
        "sessions",
        "sessions_by_expiry",
        "meta",
        "login_throttle",
        "refresh_families",
    };
    authd_store *st = NULL;
    MDB_txn *txn = NULL;
    authd_code code = AUTHD_OK;
    const char *op = NULL;
    int dead = 0;
    int rc = MDB_SUCCESS;

    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0' || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;

    if (mkdir(opts->dir, 0700) != 0 && errno != EEXIST) {
        op = "mkdir";
        rc = errno; /* mdb_strerror passes errno values to strerror */
        goto leave;
    }
    st = calloc(1, sizeof *st);
    if (st == NULL) {
        code = AUTHD_RESOURCE_EXHAUSTED;
        goto leave;
    }
    st->max_readers = opts->max_readers ? opts->max_readers : DEFAULT_MAX_READERS;
    st->idle = calloc(st->max_readers, sizeof *st->idle);
    if (st->idle == NULL) {
        code = AUTHD_RESOURCE_EXHAUSTED;
        goto leave;
    }
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        code = AUTHD_RESOURCE_EXHAUSTED;
        goto leave;
    }
    if (pthread_cond_init(&st->cv, NULL) != 0) {
        pthread_mutex_destroy(&st->mu);
        code = AUTHD_RESOURCE_EXHAUSTED;
        goto leave;
    }
    st->sync_ready = true;

    op = "env_create";
    if ((rc = mdb_env_create(&st->env)) != MDB_SUCCESS) {
        st->env = NULL;
        goto leave;
    }
    op = "env_set";
    if ((rc = mdb_env_set_maxdbs(st->env, MAX_DBS)) != MDB_SUCCESS
        || (rc = mdb_env_set_mapsize(st->env, opts->map_size ? opts->map_size : DEFAULT_MAP_SIZE))
            != MDB_SUCCESS
        || (rc = mdb_env_set_maxreaders(st->env, st->max_readers)) != MDB_SUCCESS)
        goto leave;
    op = "env_open";
    if ((rc = mdb_env_open(st->env, opts->dir, MDB_NOTLS, 0600)) != MDB_SUCCESS)
        goto leave;
    op = "reader_check";
    if ((rc = mdb_reader_check(st->env, &dead)) != MDB_SUCCESS)
        goto leave;
    op = "open_txn_begin";
    if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != MDB_SUCCESS)
        goto leave;
    op = "dbi_open";
    {
        MDB_dbi *slots[] = { &st->users, &st->by_username, &st->by_email, &st->sessions,
            &st->by_expiry, &st->meta, &st->throttle, &st->refresh };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if ((rc = mdb_dbi_open(txn, names[i], MDB_CREATE, slots[i])) != MDB_SUCCESS)
                goto leave;
        }
    }
    rc = MDB_SUCCESS;
    code = check_schema(st, txn);
    if (code != AUTHD_OK)
        goto leave;
    code = open_user_sessions(st, txn);
    if (code != AUTHD_OK)
        goto leave;
    code = load_secret(st, txn, "throttle_key", st->throttle_key);
    if (code != AUTHD_OK)
        goto leave;
    code = load_secret(st, txn, "refresh_key", st->refresh_key);
    if (code != AUTHD_OK)
        goto leave;
    code = writer_commit(&txn);
    if (code != AUTHD_OK)
        goto leave;
    *out = st;
    st = NULL;

leave:
    if (rc != MDB_SUCCESS)
        code = lmdb_code(rc, op);
    if (txn != NULL)
        mdb_txn_abort(txn);
    store_free(st);
    return code;
}

/* authd_store_close aborts the pooled read transactions, then closes the
 * environment. */
void authd_store_close(authd_store *st)
{
    store_free(st);
}

/* authd_store_backup: mdb_env_copyfd2 takes its own read transaction (a
 * reader slot, so MDB_NOTLS matters not) and writes from a second thread of
 * LMDB's; a full disk comes back as ENOSPC. */
authd_code authd_store_backup(authd_store *st, int fd)
{
    int rc;

    if (st == NULL || fd < 0)
        return AUTHD_INVALID_ARGUMENT;
    rc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT);
    if (rc == ENOSPC) {
        log_lmdb("env_copy", rc);
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    return lmdb_code(rc, "env_copy");
}

/* ---- users -------------------------------------------------------------- */

static authd_code check_last_admin(
    authd_store *st, MDB_txn *txn, const authd_user *before, bool stays_admin);
static authd_code revoke_user_sessions(authd_store *st, MDB_txn *txn,
    const uint8_t uid[AUTHD_ID_BYTES], const uint8_t *except, int64_t now, size_t *revoked);

/* insert_user puts the two index entries and then the record of u, each
 * MDB_NOOVERWRITE, inside txn; the first that exists names the conflict in
 * *what ("username", "email" or "id"). The caller aborts txn on failure. */
static authd_code insert_user(authd_store *st, MDB_txn *txn, const authd_user *u, const char **what)
{
    uint8_t buf[USER_PACK_MAX];
    size_t len = 0;
    MDB_val id, name, mail, rec;
    authd_code code;

    *what = NULL;
    code = user_pack(u, buf, sizeof buf, &len);
    if (code != AUTHD_OK)
        return code;
    id.mv_size = AUTHD_ID_BYTES;
    id.mv_data = (void *)u->id;
    name.mv_size = strlen(u->username);
    name.mv_data = (void *)u->username;
    mail.mv_size = strlen(u->email);
    mail.mv_data = (void *)u->email;
    rec.mv_size = len;
    rec.mv_data = buf;

    *what = "username";
    code = lmdb_code(mdb_put(txn, st->by_username, &name, &id, MDB_NOOVERWRITE), "put_username");
    if (code != AUTHD_OK)
        return code;
    *what = "email";
    code = lmdb_code(mdb_put(txn, st->by_email, &mail, &id, MDB_NOOVERWRITE), "put_email");
    if (code != AUTHD_OK)
        return code;
    *what = "id";
    return lmdb_code(mdb_put(txn, st->users, &id, &rec, MDB_NOOVERWRITE), "put_user");
}

/* authd_store_user_create inserts the two index entries and then the
 * record, each MDB_NOOVERWRITE, in one write transaction; the first that
 * exists names the conflict and the whole transaction is aborted, so a
 * failed create leaves nothing behind. LMDB's single writer makes the
 * check-and-insert atomic against concurrent creates. */
static authd_code user_create_in(
    authd_store *st, MDB_txn *parent, const authd_user *u, const char **conflict)
{
    MDB_txn *txn = NULL;
    const char *what = NULL;
    authd_code code;

    if (st == NULL || u == NULL || !user_valid(u))
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin_in(st, parent, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = insert_user(st, txn, u, &what);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);

out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (code == AUTHD_ALREADY_EXISTS && conflict != NULL)
        *conflict = what;
    return code;
}

authd_code authd_store_user_create(authd_store *st, const authd_user *u, const char **conflict)
{
    return user_create_in(st, NULL, u, conflict);
}

/* authd_store_user_create_batch is authd_store_user_create for n users in
 * ONE write transaction (one commit, one fsync): all of them or none. It
 * exists for bulk loads (authd-seed), where a commit per user would cost
 * an fsync per user. Every user is validated before the transaction
 * begins. */
authd_code authd_store_user_create_batch(
    authd_store *st, const authd_user *users, size_t n, size_t *failed, const char **conflict)
{
    MDB_txn *txn = NULL;
    const char *what = NULL;
    authd_code code = AUTHD_OK;
    size_t i = 0;

    if (st == NULL || (users == NULL && n > 0))
        return AUTHD_INVALID_ARGUMENT;
    for (i = 0; i < n; i++) {
        if (!user_valid(&users[i])) {
            code = AUTHD_INVALID_ARGUMENT;
            goto out;
        }
    }
    if (n == 0)
        return AUTHD_OK;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK) {
        i = 0;
        goto out;
    }
    for (i = 0; i < n; i++) {
        code = insert_user(st, txn, &users[i], &what);
        if (code != AUTHD_OK)
            goto out;
    }
    i = 0;
    code = writer_commit(&txn);

out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (code != AUTHD_OK && failed != NULL)
        *failed = i;
    if (code == AUTHD_ALREADY_EXISTS && conflict != NULL)
        *conflict = what;
    return code;
}

authd_code authd_store_user_get(authd_store *st, const uint8_t id[AUTHD_ID_BYTES], authd_user *out)
{
    MDB_txn *txn = NULL;
    authd_user u;
    authd_code code;

    if (st == NULL || id == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, id, &u);
    if (code == AUTHD_OK)
        *out = u;
out:
    if (txn != NULL)
        reader_put(st, txn, code);
    return code;
}

/* find_in_txn resolves name through an index to a user inside txn. The
 * index value must be a 16-byte id, the user must exist and must carry the
 * name it was found under: anything else is a broken index (DATA_LOSS),
 * not an absent user. Names too long to have been stored are simply
 * NOT_FOUND. */
static authd_code find_in_txn(
    authd_store *st, MDB_txn *txn, bool by_email, const char *name, authd_user *out)
{
    uint8_t id[AUTHD_ID_BYTES];
    size_t max = by_email ? AUTHD_EMAIL_MAX : AUTHD_USERNAME_MAX;
    size_t n = strnlen(name, max + 1);
    MDB_val k, v;
    authd_user u;
    authd_code code;

    if (n == 0 || n > max)
        return AUTHD_NOT_FOUND;
    k.mv_size = n;
    k.mv_data = (void *)name;
    code = lmdb_code(mdb_get(txn, by_email ? st->by_email : st->by_username, &k, &v), "get_index");
    if (code != AUTHD_OK)
        return code;
    if (v.mv_size != AUTHD_ID_BYTES) {
        log_data_loss("find_user", "index value is not an id", name, n);
        return AUTHD_DATA_LOSS;
    }
    memcpy(id, v.mv_data, sizeof id);
    code = get_user(st, txn, id, &u);
    if (code == AUTHD_NOT_FOUND) {
        log_data_loss("find_user", "index names a missing user", id, sizeof id);
        return AUTHD_DATA_LOSS;
    }
    if (code != AUTHD_OK)
        return code;
    if (strcmp(by_email ? u.email : u.username, name) != 0) {
        log_data_loss("find_user", "index and record disagree", id, sizeof id);
        return AUTHD_DATA_LOSS;
    }
    *out = u;
    return AUTHD_OK;
}

/* find_by_index is find_in_txn in a pooled read transaction. */
static authd_code find_by_index(authd_store *st, bool by_email, const char *name, authd_user *out)
{
    MDB_txn *txn = NULL;
    authd_code code;

    if (st == NULL || name == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    code = find_in_txn(st, txn, by_email, name, out);
    reader_put(st, txn, code);
    return code;
}

authd_code authd_store_user_find_by_username(authd_store *st, const char *username, authd_user *out)
{
    if (st == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return find_by_index(st, false, username, out);
}

authd_code authd_store_user_find_by_email(authd_store *st, const char *email, authd_user *out)
{
    if (st == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return find_by_index(st, true, email, out);
}

/* authd_store_user_set_status is a read-modify-write of the user record
 * inside one write transaction, so it cannot lose a concurrent update; a
 * disable checks the last-admin rule and revokes the user's sessions in
 * that same transaction (the helpers are in the administration part
 * below). */
authd_code authd_store_user_set_status(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], uint32_t status, int64_t now)
{
    MDB_txn *txn = NULL;
    authd_user u;
    authd_code code;

    if (st == NULL || id == NULL || !status_valid(status))
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, id, &u);
    if (code != AUTHD_OK)
        goto out;
    if (status == AUTHD_USER_DISABLED) {
        code = check_last_admin(st, txn, &u, false);
        if (code != AUTHD_OK)
            goto out;
        code = revoke_user_sessions(st, txn, id, NULL, now, NULL);
        if (code != AUTHD_OK)
            goto out;
    }
    u.status = status;
    u.updated_at = now;
    code = put_user(st, txn, &u);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

/* ---- login throttle: records and subjects ------------------------------------ */

typedef struct throttle_rec {
    uint32_t failures;
    int64_t last_attempt_ms;
    bool locked;
    int64_t locked_at_ms;
} throttle_rec;

/* A subject's key: a user id or a keyed hash of an identifier. */
typedef struct subject {
    uint8_t key[THROTTLE_HASH_BYTES];
    size_t len;
} subject;

bool authd_throttle_policy_valid(const authd_throttle_policy *p)
{
    return p != NULL && p->base_delay_ms >= 1 && p->max_delay_ms >= p->base_delay_ms
        && p->lockout >= 1 && p->lockout <= AUTHD_LOCKOUT_MAX && p->reset_after_ms >= 0
        && p->free_attempts <= AUTHD_LOCKOUT_MAX;
}

static authd_code throttle_pack(const throttle_rec *t, uint8_t *buf, size_t cap, size_t *len)
{
    Authd__Store__V1__ThrottleRecord rec = AUTHD__STORE__V1__THROTTLE_RECORD__INIT;

    rec.schema_version = SCHEMA_VERSION;
    rec.failures = t->failures;
    rec.last_attempt_ms = t->last_attempt_ms;
    rec.locked = t->locked;
    rec.locked_at_ms = t->locked_at_ms;
    if (authd__store__v1__throttle_record__get_packed_size(&rec) > cap)
        return AUTHD_INTERNAL;
    *len = authd__store__v1__throttle_record__pack(&rec, buf);
    return AUTHD_OK;
}

/* throttle_decode is user_decode for throttle counters. */
static authd_code throttle_decode(
    const void *data, size_t len, const subject *sj, throttle_rec *out)
{
    alignas(max_align_t) unsigned char mem[256];
    authd_arena a = { mem, sizeof mem, 0 };
    ProtobufCAllocator alloc = authd_arena_allocator(&a);
    Authd__Store__V1__ThrottleRecord *rec
        = authd__store__v1__throttle_record__unpack(&alloc, len, data);
    authd_code code = AUTHD_DATA_LOSS;

    if (rec != NULL && rec->schema_version == SCHEMA_VERSION) {
        out->failures = rec->failures;
        out->last_attempt_ms = rec->last_attempt_ms;
        out->locked = rec->locked != 0;
        out->locked_at_ms = rec->locked_at_ms;
        code = AUTHD_OK;
    }
    if (rec != NULL)
        authd__store__v1__throttle_record__free_unpacked(rec, &alloc);
    if (code != AUTHD_OK)
        log_data_loss("throttle_decode", "record does not decode", sj->key, sj->len);
    return code;
}

/* throttle_get reads a subject's counter; an absent one reads as zero. */
static authd_code throttle_get(authd_store *st, MDB_txn *txn, const subject *sj, throttle_rec *out)
{
    MDB_val k = { .mv_size = sj->len, .mv_data = (void *)sj->key };
    MDB_val v;
    int rc = mdb_get(txn, st->throttle, &k, &v);

    memset(out, 0, sizeof *out);
    if (rc == MDB_NOTFOUND)
        return AUTHD_OK;
    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_throttle");
    return throttle_decode(v.mv_data, v.mv_size, sj, out);
}

static authd_code throttle_put(
    authd_store *st, MDB_txn *txn, const subject *sj, const throttle_rec *t)
{
    uint8_t buf[THROTTLE_PACK_MAX];
    size_t len = 0;
    authd_code code = throttle_pack(t, buf, sizeof buf, &len);
    MDB_val k = { .mv_size = sj->len, .mv_data = (void *)sj->key };
    MDB_val v = { .mv_size = len, .mv_data = buf };

    if (code != AUTHD_OK)
        return code;
    return lmdb_code(mdb_put(txn, st->throttle, &k, &v, 0), "put_throttle");
}

/* throttle_clear deletes a counter; an absent one is AUTHD_OK. */
static authd_code throttle_clear(authd_store *st, MDB_txn *txn, const void *key, size_t len)
{
    MDB_val k = { .mv_size = len, .mv_data = (void *)key };
    int rc = mdb_del(txn, st->throttle, &k, NULL);

    return rc == MDB_NOTFOUND ? AUTHD_OK : lmdb_code(rc, "del_throttle");
}

/* throttle_delay_ms is how long attempt number n must wait after the
 * previous counted attempt: 0 within the free attempts, then doubling from
 * base_delay_ms up to max_delay_ms. */
static int64_t throttle_delay_ms(const authd_throttle_policy *p, uint32_t n)
{
    if (n <= p->free_attempts)
        return 0;
    uint32_t doublings = n - p->free_attempts - 1;
    if (doublings >= 32)
        return p->max_delay_ms;
    uint64_t d = (uint64_t)p->base_delay_ms << doublings;
    return d >= p->max_delay_ms ? (int64_t)p->max_delay_ms : (int64_t)d;
}

/* throttle_effective applies the schedule's forgetting: a counter quiet
 * for reset_after_ms that is not locked counts as zero. Also locks a
 * counter that a lowered --login-lockout now puts over the limit. */
static void throttle_effective(const authd_throttle_policy *p, int64_t now_ms, throttle_rec *t)
{
    if (!t->locked && p->reset_after_ms > 0 && t->failures > 0
        && now_ms - t->last_attempt_ms >= p->reset_after_ms)
        memset(t, 0, sizeof *t);
    if (t->failures >= p->lockout)
        t->locked = true;
}

/* throttle_state describes t for callers: retry_at_ms is when attempt
 * number failures + 1 is allowed. */
static void throttle_state(
    const authd_throttle_policy *p, const throttle_rec *t, authd_throttle_state *out)
{
    out->failures = t->failures;
    out->locked = t->locked;
    out->last_attempt_ms = t->last_attempt_ms;
    out->retry_at_ms = 0;
    if (p != NULL && !t->locked) {
        int64_t d = throttle_delay_ms(p, t->failures + 1);
        out->retry_at_ms = d > 0 ? t->last_attempt_ms + d : 0;
    }
}

/* resolve_subject looks login up inside txn and names its throttle
 * subject: the user's id when the login names a user (then *found and
 * *user), else BLAKE2b(throttle_key, kind || login). */
static authd_code resolve_subject(authd_store *st, MDB_txn *txn, int kind, const char *login,
    bool *found, authd_user *user, subject *sj)
{
    authd_code code = AUTHD_NOT_FOUND;

    *found = false;
    if (kind == AUTHD_LOGIN_USERNAME || kind == AUTHD_LOGIN_EMAIL)
        code = find_in_txn(st, txn, kind == AUTHD_LOGIN_EMAIL, login, user);
    if (code == AUTHD_OK) {
        *found = true;
        memcpy(sj->key, user->id, AUTHD_ID_BYTES);
        sj->len = AUTHD_ID_BYTES;
        return AUTHD_OK;
    }
    if (code != AUTHD_NOT_FOUND)
        return code;
    authd_store_login_hash(st, kind, login, sj->key);
    sj->len = THROTTLE_HASH_BYTES;
    return AUTHD_OK;
}

/* authd_store_login_hash: see store.h. throttle_key is written once, at
 * open, so this reads it without a transaction or lock. */
void authd_store_login_hash(
    const authd_store *st, int kind, const char *login, uint8_t out[AUTHD_LOGIN_HASH_BYTES])
{
    size_t n = strnlen(login, AUTHD_LOGIN_MAX + 1);
    uint8_t tag = (uint8_t)kind;
    crypto_generichash_state h;

    crypto_generichash_init(&h, st->throttle_key, sizeof st->throttle_key, THROTTLE_HASH_BYTES);
    crypto_generichash_update(&h, &tag, 1);
    crypto_generichash_update(&h, (const unsigned char *)login, n);
    crypto_generichash_final(&h, out, THROTTLE_HASH_BYTES);
}

static bool login_args_valid(int kind, const char *login)
{
    size_t n;

    if (kind != AUTHD_LOGIN_USERNAME && kind != AUTHD_LOGIN_EMAIL && kind != AUTHD_LOGIN_OTHER)
        return false;
    if (login == NULL)
        return false;
    n = strnlen(login, AUTHD_LOGIN_MAX + 1);
    return n >= 1 && n <= AUTHD_LOGIN_MAX;
}

/* ---- sessions ----------------------------------------------------------- */

/* authd_store_login_commit re-checks the user inside the write
 * transaction that creates the session, so a user disabled between the
 * password check and this commit gets no session. The optional re-hash
 * rides in the same transaction; nothing is written unless all of it is. */
authd_code authd_store_login_commit(authd_store *st, const uint8_t user_id[AUTHD_ID_BYTES],
    const char *new_hash, const authd_session *s, int64_t now)
{
    return authd_store_login_commit_family(st, user_id, new_hash, s, NULL, now);
}

/* authd_store_login_commit_family: the session and its first refresh
 * family go in together, so no session exists whose family is missing
 * for want of a second commit. */
static authd_code login_commit_in(authd_store *st, MDB_txn *parent,
    const uint8_t user_id[AUTHD_ID_BYTES], const char *new_hash, const authd_session *s,
    const authd_refresh_family *fam, int64_t now)
{
    MDB_txn *txn = NULL;
    authd_user u;
    authd_code code;
    size_t n;

    if (st == NULL || user_id == NULL || s == NULL
        || memcmp(s->user_id, user_id, AUTHD_ID_BYTES) != 0)
        return AUTHD_INVALID_ARGUMENT;
    if (new_hash != NULL) {
        n = strnlen(new_hash, AUTHD_HASH_MAX);
        if (n == 0 || n >= AUTHD_HASH_MAX)
            return AUTHD_INVALID_ARGUMENT;
    }
    code = writer_begin_in(st, parent, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, user_id, &u);
    if (code != AUTHD_OK)
        goto out;
    if (u.status != AUTHD_USER_ACTIVE) {
        code = AUTHD_FAILED_PRECONDITION;
        goto out;
    }
    if (new_hash != NULL) {
        memcpy(u.password_hash, new_hash, strlen(new_hash) + 1);
        u.updated_at = now;
        code = put_user(st, txn, &u);
        if (code != AUTHD_OK)
            goto out;
    }
    code = put_session(st, txn, s, true);
    if (code != AUTHD_OK)
        goto out;
    if (fam != NULL) {
        code = put_family(st, txn, s->id, fam, true);
        if (code != AUTHD_OK)
            goto out;
    }
    code = throttle_clear(st, txn, user_id, AUTHD_ID_BYTES);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return code;
}

authd_code authd_store_login_commit_family(authd_store *st, const uint8_t user_id[AUTHD_ID_BYTES],
    const char *new_hash, const authd_session *s, const authd_refresh_family *fam, int64_t now)
{
    return login_commit_in(st, NULL, user_id, new_hash, s, fam, now);
}

authd_code authd_store_session_get(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], authd_session *out)
{
    MDB_txn *txn = NULL;
    authd_session s;
    authd_code code;

    if (st == NULL || id == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_session(st, txn, id, &s);
    if (code == AUTHD_OK)
        *out = s;
out:
    if (txn != NULL)
        reader_put(st, txn, code);
    return code;
}

/* authd_store_session_revoke writes only on the first revoke; a repeat
 * is answered from the record without a write (and keeps revoked_at). */
static authd_code session_revoke_in(
    authd_store *st, MDB_txn *parent, const uint8_t id[AUTHD_ID_BYTES], int64_t now)
{
    MDB_txn *txn = NULL;
    authd_session s;
    authd_code code;

    if (st == NULL || id == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin_in(st, parent, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_session(st, txn, id, &s);
    if (code != AUTHD_OK || s.revoked)
        goto out; /* already revoked: OK, nothing to write */
    s.revoked = true;
    s.revoked_at = now;
    code = put_session(st, txn, &s, false);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    return code;
}

authd_code authd_store_password_change(authd_store *st, const uint8_t user_id[AUTHD_ID_BYTES],
    const char *new_hash, const uint8_t *keep, int64_t now, size_t *revoked)
{
    MDB_txn *txn = NULL;
    authd_user u;
    size_t n = 0, hl;
    authd_code code;

    if (st == NULL || user_id == NULL || new_hash == NULL)
        return AUTHD_INVALID_ARGUMENT;
    hl = strnlen(new_hash, AUTHD_HASH_MAX);
    if (hl == 0 || hl >= AUTHD_HASH_MAX)
        return AUTHD_INVALID_ARGUMENT;
    if ((code = writer_begin(st, &txn)) != AUTHD_OK)
        goto out;
    if ((code = get_user(st, txn, user_id, &u)) != AUTHD_OK)
        goto out;
    if (u.status != AUTHD_USER_ACTIVE) {
        code = AUTHD_FAILED_PRECONDITION;
        goto out;
    }
    memcpy(u.password_hash, new_hash, hl + 1);
    u.updated_at = u.password_changed_at = now;
    if ((code = put_user(st, txn, &u)) != AUTHD_OK)
        goto out;
    if ((code = throttle_clear(st, txn, user_id, AUTHD_ID_BYTES)) != AUTHD_OK)
        goto out;
    if ((code = revoke_user_sessions(st, txn, user_id, keep, now, &n)) != AUTHD_OK)
        goto out;
    if ((code = writer_commit(&txn)) != AUTHD_OK)
        goto out;
    if (revoked != NULL)
        *revoked = n;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

authd_code authd_store_session_revoke(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], int64_t now)
{
    return session_revoke_in(st, NULL, id, now);
}

/* authd_store_verify_lookup reads session and user from one snapshot, so
 * Verify never pairs a session with a user state from another moment. It
 * takes a pooled read transaction and decodes through stack arenas: no
 * mdb_txn_begin, no malloc, no write. */
authd_code authd_store_verify_lookup(
    authd_store *st, const uint8_t session_id[AUTHD_ID_BYTES], authd_verify_view *out)
{
    MDB_txn *txn = NULL;
    MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)session_id };
    MDB_val v;
    authd_code code;
    int rc;

    if (st == NULL || session_id == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    rc = mdb_get(txn, st->sessions, &k, &v);
    if (rc != MDB_SUCCESS) {
        code = lmdb_code(rc, "get_session");
        goto out;
    }
    code = authd_record_session_view(v.mv_data, v.mv_size, out);
    if (code != AUTHD_OK) {
        log_data_loss("session_view", "record out of bounds", session_id, AUTHD_ID_BYTES);
        goto out;
    }
    k.mv_data = out->user_id;
    rc = mdb_get(txn, st->users, &k, &v);
    if (rc != MDB_SUCCESS) {
        code = lmdb_code(rc, "get_user");
        goto out;
    }
    code = authd_record_user_view(v.mv_data, v.mv_size, out->user_id, out);
    if (code != AUTHD_OK)
        log_data_loss("user_view", "record out of bounds", out->user_id, AUTHD_ID_BYTES);
out:
    reader_put(st, txn, code);
    return code;
}

/* authd_store_purge_expired repeatedly takes the first entry of
 * sessions_by_expiry (the oldest expiry) and deletes it and its session,
 * stopping at the first entry still in the future or after max. The key is
 * copied out before the first delete, since a write invalidates it. A
 * malformed index key stops the purge with DATA_LOSS rather than being
 * skipped silently. */
authd_code authd_store_purge_expired(authd_store *st, int64_t now, size_t max, size_t *purged)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    uint8_t key[EXPIRY_KEY_BYTES];
    MDB_val k, v;
    size_t n = 0;
    authd_code code;
    int rc;

    if (st == NULL || purged == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if (max == 0) {
        *purged = 0;
        return AUTHD_OK;
    }
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = lmdb_code(mdb_cursor_open(txn, st->by_expiry, &cur), "purge_cursor");
    if (code != AUTHD_OK)
        goto out;
    while (n < max) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND)
            break;
        code = lmdb_code(rc, "purge_scan");
        if (code != AUTHD_OK)
            goto out;
        if (k.mv_size != EXPIRY_KEY_BYTES) {
            log_data_loss("purge", "expiry index key has the wrong size", k.mv_data, k.mv_size);
            code = AUTHD_DATA_LOSS;
            goto out;
        }
        memcpy(key, k.mv_data, sizeof key);
        if (expiry_key_time(key) > now)
            break;
        k.mv_size = AUTHD_ID_BYTES;
        k.mv_data = key + 8;
        /* The session's user names its sessions_by_user entry. A record
         * that does not decode is purged all the same; its index entry (if
         * any) is left, and the readers of the index skip a missing
         * session. */
        rc = mdb_get(txn, st->sessions, &k, &v);
        if (rc == MDB_SUCCESS) {
            authd_verify_view sv;
            if (authd_record_session_view(v.mv_data, v.mv_size, &sv) == AUTHD_OK) {
                code = user_session_del(st, txn, sv.user_id, key + 8);
                if (code != AUTHD_OK)
                    goto out;
            }
        } else if (rc != MDB_NOTFOUND) {
            code = lmdb_code(rc, "purge_get_session");
            goto out;
        }
        rc = mdb_del(txn, st->sessions, &k, NULL);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
            code = lmdb_code(rc, "purge_del_session");
            goto out;
        }
        rc = mdb_del(txn, st->refresh, &k, NULL);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
            code = lmdb_code(rc, "purge_del_family");
            goto out;
        }
        k.mv_size = sizeof key;
        k.mv_data = key;
        code = lmdb_code(mdb_del(txn, st->by_expiry, &k, NULL), "purge_del_expiry");
        if (code != AUTHD_OK)
            goto out;
        n++;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    if (n > 0) {
        code = writer_commit(&txn);
        if (code != AUTHD_OK)
            goto out;
    }
    *purged = n;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return code;
}

/* authd_store_count reads the entry counts of users and sessions from one
 * snapshot. */
authd_code authd_store_count(authd_store *st, size_t *users, size_t *sessions)
{
    MDB_txn *txn = NULL;
    MDB_stat su, ss;
    authd_code code;

    if (st == NULL || users == NULL || sessions == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = lmdb_code(mdb_stat(txn, st->users, &su), "stat_users");
    if (code != AUTHD_OK)
        goto out;
    code = lmdb_code(mdb_stat(txn, st->sessions, &ss), "stat_sessions");
    if (code != AUTHD_OK)
        goto out;
    *users = su.ms_entries;
    *sessions = ss.ms_entries;
out:
    if (txn != NULL)
        reader_put(st, txn, code);
    return code;
}

/* ---- login throttle: operations ------------------------------------------------ */

/* authd_store_login_begin: see store.h. The lookup, the read of the
 * counter, the decision and the write of the incremented counter share
 * one write transaction; a refused attempt aborts it (no fsync), so a
 * flood of throttled attempts costs no disk writes. */
static authd_code login_begin_in(authd_store *st, MDB_txn *parent, int kind, const char *login,
    const authd_throttle_policy *p, int64_t now_ms, bool *found, authd_user *user, int *verdict,
    authd_throttle_state *state)
{
    MDB_txn *txn = NULL;
    authd_user u;
    subject sj;
    throttle_rec t;
    bool is_user = false;
    int v;
    authd_code code;

    if (st == NULL || !login_args_valid(kind, login) || !authd_throttle_policy_valid(p)
        || found == NULL || user == NULL || verdict == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin_in(st, parent, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = resolve_subject(st, txn, kind, login, &is_user, &u, &sj);
    if (code != AUTHD_OK)
        goto out;
    code = throttle_get(st, txn, &sj, &t);
    if (code != AUTHD_OK)
        goto out;
    throttle_effective(p, now_ms, &t);
    if (t.locked) {
        v = AUTHD_LOGIN_LOCKED;
    } else if (now_ms < t.last_attempt_ms + throttle_delay_ms(p, t.failures + 1)) {
        v = AUTHD_LOGIN_THROTTLED;
    } else {
        v = AUTHD_LOGIN_ALLOWED;
        t.failures++;
        t.last_attempt_ms = now_ms;
        if (t.failures >= p->lockout) {
            t.locked = true;
            t.locked_at_ms = now_ms;
        }
        code = throttle_put(st, txn, &sj, &t);
        if (code != AUTHD_OK)
            goto out;
        code = writer_commit(&txn);
        if (code != AUTHD_OK)
            goto out;
    }
    *found = is_user;
    if (is_user)
        *user = u;
    *verdict = v;
    if (state != NULL)
        throttle_state(p, &t, state);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

authd_code authd_store_login_begin(authd_store *st, int kind, const char *login,
    const authd_throttle_policy *p, int64_t now_ms, bool *found, authd_user *user, int *verdict,
    authd_throttle_state *state)
{
    return login_begin_in(st, NULL, kind, login, p, now_ms, found, user, verdict, state);
}

/* authd_store_login_unlock: see store.h. */
authd_code authd_store_login_unlock(
    authd_store *st, int kind, const char *login, bool *found, authd_throttle_state *before)
{
    MDB_txn *txn = NULL;
    authd_user u;
    subject sj;
    throttle_rec t;
    bool is_user = false;
    authd_code code;

    if (st == NULL || !login_args_valid(kind, login) || found == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = resolve_subject(st, txn, kind, login, &is_user, &u, &sj);
    if (code != AUTHD_OK)
        goto out;
    code = throttle_get(st, txn, &sj, &t);
    if (code != AUTHD_OK && code != AUTHD_DATA_LOSS) /* an unreadable counter is cleared too */
        goto out;
    if (code == AUTHD_DATA_LOSS)
        memset(&t, 0, sizeof t);
    code = throttle_clear(st, txn, sj.key, sj.len);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
    if (code != AUTHD_OK)
        goto out;
    *found = is_user;
    if (before != NULL)
        throttle_state(NULL, &t, before);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

/* authd_store_user_unlock: see store.h. */
authd_code authd_store_user_unlock(authd_store *st, const uint8_t id[AUTHD_ID_BYTES])
{
    MDB_txn *txn = NULL;
    authd_user u;
    authd_code code;

    if (st == NULL || id == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, id, &u);
    if (code != AUTHD_OK)
        goto out;
    code = throttle_clear(st, txn, id, AUTHD_ID_BYTES);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

/* authd_store_login_throttle_get: see store.h. A pooled read transaction:
 * it resolves and reads as authd_store_login_begin would, writes nothing. */
authd_code authd_store_login_throttle_get(authd_store *st, int kind, const char *login,
    const authd_throttle_policy *p, int64_t now_ms, authd_throttle_state *out)
{
    MDB_txn *txn = NULL;
    authd_user u;
    subject sj;
    throttle_rec t;
    bool is_user = false;
    authd_code code;

    if (st == NULL || !login_args_valid(kind, login) || !authd_throttle_policy_valid(p)
        || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    code = resolve_subject(st, txn, kind, login, &is_user, &u, &sj);
    if (code == AUTHD_OK)
        code = throttle_get(st, txn, &sj, &t);
    reader_put(st, txn, code);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    if (code != AUTHD_OK)
        return code;
    throttle_effective(p, now_ms, &t);
    throttle_state(p, &t, out);
    return AUTHD_OK;
}

/* authd_store_throttle_purge walks login_throttle once and deletes up to
 * max counters that read as zero (quiet, not locked). A counter that does
 * not decode is left for the operator (logged), not deleted. */
authd_code authd_store_throttle_purge(
    authd_store *st, const authd_throttle_policy *p, int64_t now_ms, size_t max, size_t *purged)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0;
    authd_code code;
    int rc;

    if (st == NULL || !authd_throttle_policy_valid(p) || purged == NULL)
        return AUTHD_INVALID_ARGUMENT;
    *purged = 0;
    if (max == 0 || p->reset_after_ms == 0)
        return AUTHD_OK;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = lmdb_code(mdb_cursor_open(txn, st->throttle, &cur), "throttle_cursor");
    if (code != AUTHD_OK)
        goto out;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        subject sj;
        throttle_rec t;
        sj.len = k.mv_size < sizeof sj.key ? k.mv_size : sizeof sj.key;
        memcpy(sj.key, k.mv_data, sj.len);
        if (throttle_decode(v.mv_data, v.mv_size, &sj, &t) != AUTHD_OK)
            continue;
        throttle_effective(p, now_ms, &t);
        if (t.failures != 0 || t.locked)
            continue;
        code = lmdb_code(mdb_cursor_del(cur, 0), "throttle_purge_del");
        if (code != AUTHD_OK)
            goto out;
        n++;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        code = lmdb_code(rc, "throttle_purge_scan");
        goto out;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    if (n > 0) {
        code = writer_commit(&txn);
        if (code != AUTHD_OK)
            goto out;
    }
    *purged = n;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (txn != NULL)
        mdb_txn_abort(txn);
    return code;
}

/* ---- refresh families: operations -------------------------------------------- */

static bool session_policy_valid(const authd_session_policy *p)
{
    return p->idle_ttl >= 1 && p->max_ttl >= 1 && p->token_ttl >= 1 && p->grace_ms >= 0;
}

/* authd_store_refresh_exchange: see store.h. Everything the decision
 * reads (session, user, family) and everything it writes share one write
 * transaction: LMDB has one writer at a time, so a second exchange of the
 * same token starts only after the first has committed and sees the
 * family already moved on. Outcomes that change nothing abort (no
 * fsync). */
static authd_code refresh_exchange_in(authd_store *st, MDB_txn *parent,
    const authd_refresh_request *rq, int *outcome, authd_session *session, authd_user *user,
    authd_refresh_family *fam)
{
    MDB_txn *txn = NULL;
    authd_session s;
    authd_user u;
    authd_refresh_family f;
    int64_t now = 0, end;
    int oc = AUTHD_REFRESH_UNKNOWN;
    authd_code code;

    memset(&u, 0, sizeof u);
    memset(&f, 0, sizeof f);
    if (st == NULL || rq == NULL || outcome == NULL || session == NULL || user == NULL
        || fam == NULL || rq->generation == 0 || !session_policy_valid(&rq->policy))
        return AUTHD_INVALID_ARGUMENT;
    now = rq->now_ms / 1000;
    code = writer_begin_in(st, parent, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_session(st, txn, rq->session_id, &s);
    if (code == AUTHD_NOT_FOUND) {
        code = AUTHD_OK;
        goto decided; /* UNKNOWN */
    }
    if (code != AUTHD_OK)
        goto out;
    if (s.revoked) {
        oc = AUTHD_REFRESH_REVOKED;
        goto decided;
    }
    if (s.expires_at <= now) {
        oc = AUTHD_REFRESH_EXPIRED;
        goto decided;
    }
    code = get_user(st, txn, s.user_id, &u);
    if (code == AUTHD_NOT_FOUND || (code == AUTHD_OK && u.status != AUTHD_USER_ACTIVE)) {
        code = AUTHD_OK;
        oc = AUTHD_REFRESH_USER_DISABLED;
        goto decided;
    }
    if (code != AUTHD_OK)
        goto out;
    code = get_family(st, txn, rq->session_id, &f);
    if (code == AUTHD_NOT_FOUND) {
        code = AUTHD_OK;
        goto decided; /* UNKNOWN: a session from before refresh tokens */
    }
    if (code != AUTHD_OK)
        goto out;

    if (rq->generation == f.generation
        && sodium_memcmp(rq->token_hash, f.token_hash, sizeof f.token_hash) == 0) {
        /* The newest token: rotate. */
        end = s.created_at + rq->policy.max_ttl;
        if (now + rq->policy.idle_ttl < end)
            end = now + rq->policy.idle_ttl;
        memcpy(f.parent_hash, f.token_hash, sizeof f.parent_hash);
        f.has_parent = true;
        f.parent_used_at_ms = rq->now_ms;
        f.generation++;
        memcpy(f.token_hash, rq->new_hash, sizeof f.token_hash);
        memcpy(f.child_box, rq->new_box, sizeof f.child_box);
        f.has_box = true;
        f.issued_at = now;
        f.access_expires_at = now + rq->policy.token_ttl < end ? now + rq->policy.token_ttl : end;
        if (f.generation == 0) { /* 2^32 rotations: end the session rather than wrap */
            oc = AUTHD_REFRESH_EXPIRED;
            goto decided;
        }
        code = move_session_expiry(st, txn, &s, end);
        if (code == AUTHD_OK)
            code = put_family(st, txn, rq->session_id, &f, false);
        if (code == AUTHD_OK)
            code = writer_commit(&txn);
        if (code != AUTHD_OK)
            goto out;
        oc = AUTHD_REFRESH_ROTATED;
    } else if (rq->generation + 1 == f.generation && f.has_parent
        && sodium_memcmp(rq->token_hash, f.parent_hash, sizeof f.parent_hash) == 0
        && rq->now_ms - f.parent_used_at_ms < rq->policy.grace_ms) {
        oc = AUTHD_REFRESH_REPLAYED; /* the same child again: nothing to write */
    } else if (rq->generation < f.generation
        && (rq->generation + 1 != f.generation
            || (f.has_parent
                && sodium_memcmp(rq->token_hash, f.parent_hash, sizeof f.parent_hash) == 0))) {
        /* A used-up token of this family: someone else holds a copy. */
        s.revoked = true;
        s.revoked_at = now;
        code = put_session(st, txn, &s, false);
        if (code == AUTHD_OK)
            code = writer_commit(&txn);
        if (code != AUTHD_OK)
            goto out;
        oc = AUTHD_REFRESH_REUSED;
    }
    /* else UNKNOWN: a generation not issued yet, or a hash that matches nothing. */

decided:
    *outcome = oc;
    if (oc == AUTHD_REFRESH_ROTATED || oc == AUTHD_REFRESH_REPLAYED) {
        *session = s;
        *user = u;
        *fam = f;
    } else if (oc == AUTHD_REFRESH_REUSED) {
        *session = s;
    }
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    sodium_memzero(&f, sizeof f);
    return code;
}

authd_code authd_store_refresh_exchange(authd_store *st, const authd_refresh_request *rq,
    int *outcome, authd_session *session, authd_user *user, authd_refresh_family *fam)
{
    return refresh_exchange_in(st, NULL, rq, outcome, session, user, fam);
}

authd_code authd_store_refresh_get(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], authd_refresh_family *out)
{
    MDB_txn *txn = NULL;
    authd_refresh_family f;
    authd_code code;

    if (st == NULL || id == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    code = get_family(st, txn, id, &f);
    reader_put(st, txn, code);
    if (code == AUTHD_OK)
        *out = f;
    sodium_memzero(&f, sizeof f);
    return code;
}

/* authd_store_refresh_tag: see store.h. refresh_key is written once, at
 * open, so this reads it without a transaction or lock. */
void authd_store_refresh_tag(
    const authd_store *st, const uint8_t *msg, size_t len, uint8_t out[AUTHD_REFRESH_TAG_BYTES])
{
    crypto_generichash(
        out, AUTHD_REFRESH_TAG_BYTES, msg, len, st->refresh_key, sizeof st->refresh_key);
}

/* ---- administration ------------------------------------------------------ */

static bool has_role(const char (*roles)[AUTHD_ROLE_MAX + 1], uint32_t n, const char *role)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(roles[i], role) == 0)
            return true;
    return false;
}

/* another_active_admin scans users inside txn for an ACTIVE user other
 * than id that holds AUTHD_ROLE_ADMIN, stopping at the first. It reads
 * with Verify's lean reader (no allocation, no copy of the hash); a record
 * that does not decode counts as no admin, so damage can only make the
 * rule stricter. Cost: see store.h. */
static authd_code another_active_admin(
    authd_store *st, MDB_txn *txn, const uint8_t id[AUTHD_ID_BYTES], bool *found)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    authd_verify_view uv;
    authd_code code;
    int rc;

    *found = false;
    code = lmdb_code(mdb_cursor_open(txn, st->users, &cur), "admin_cursor");
    if (code != AUTHD_OK)
        return code;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != AUTHD_ID_BYTES || memcmp(k.mv_data, id, AUTHD_ID_BYTES) == 0)
            continue;
        if (authd_record_user_view(v.mv_data, v.mv_size, k.mv_data, &uv) != AUTHD_OK)
            continue;
        if (uv.status == AUTHD_USER_ACTIVE
            && has_role(
                (const char(*)[AUTHD_ROLE_MAX + 1]) uv.roles, uv.n_roles, AUTHD_ROLE_ADMIN)) {
            *found = true;
            break;
        }
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        code = lmdb_code(rc, "admin_scan");
    mdb_cursor_close(cur);
    return code;
}

/* check_last_admin is the last-admin rule for a change to user `before`
 * after which it is an active admin exactly when stays_admin: refused
 * (FAILED_PRECONDITION) when before is an active admin, stops being one,
 * and no other active admin exists in txn's snapshot. Because it runs in
 * the writer's transaction, two admins cannot demote each other at once
 * and leave none: the second sees the first's change. */
static authd_code check_last_admin(
    authd_store *st, MDB_txn *txn, const authd_user *before, bool stays_admin)
{
    bool other = false;
    authd_code code;

    if (stays_admin || before->status != AUTHD_USER_ACTIVE
        || !has_role(
            (const char(*)[AUTHD_ROLE_MAX + 1]) before->roles, before->n_roles, AUTHD_ROLE_ADMIN))
        return AUTHD_OK;
    code = another_active_admin(st, txn, before->id, &other);
    if (code != AUTHD_OK)
        return code;
    return other ? AUTHD_OK : AUTHD_FAILED_PRECONDITION;
}

/* user_sessions_next finds, inside txn, the first sessions_by_user entry
 * of uid after session id `after` (NULL: the first of all), copying its
 * session id into sid. NOT_FOUND when there is none. Every step seeks
 * afresh from a copied key, so the caller may write (even delete the
 * entry) between steps without a cursor going stale. */
static authd_code user_sessions_next(authd_store *st, MDB_txn *txn,
    const uint8_t uid[AUTHD_ID_BYTES], const uint8_t *after, uint8_t sid[AUTHD_ID_BYTES])
{
    uint8_t key[USER_SESSION_BYTES];
    MDB_cursor *cur = NULL;
    MDB_val k = { .mv_size = sizeof key, .mv_data = key };
    MDB_val v;
    authd_code code;
    int rc;

    memcpy(key, uid, AUTHD_ID_BYTES);
    if (after != NULL)
        memcpy(key + AUTHD_ID_BYTES, after, AUTHD_ID_BYTES);
    else
        memset(key + AUTHD_ID_BYTES, 0, AUTHD_ID_BYTES);
    code = lmdb_code(mdb_cursor_open(txn, st->by_user, &cur), "user_sessions_cursor");
    if (code != AUTHD_OK)
        return code;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && after != NULL && k.mv_size == sizeof key
        && memcmp(k.mv_data, key, sizeof key) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    if (rc == MDB_SUCCESS
        && (k.mv_size != USER_SESSION_BYTES || memcmp(k.mv_data, uid, AUTHD_ID_BYTES) != 0))
        rc = MDB_NOTFOUND; /* past this user's range */
    if (rc == MDB_SUCCESS)
        memcpy(sid, (const uint8_t *)k.mv_data + AUTHD_ID_BYTES, AUTHD_ID_BYTES);
    mdb_cursor_close(cur);
    return lmdb_code(rc, "user_sessions_scan");
}

/* revoke_user_sessions revokes inside txn every live session of uid but
 * except, through sessions_by_user; an index entry whose session is gone
 * is dropped on the way. *revoked (when not NULL) counts the revokes. */
static authd_code revoke_user_sessions(authd_store *st, MDB_txn *txn,
    const uint8_t uid[AUTHD_ID_BYTES], const uint8_t *except, int64_t now, size_t *revoked)
{
    uint8_t sid[AUTHD_ID_BYTES];
    const uint8_t *after = NULL;
    authd_session s;
    size_t n = 0;
    authd_code code;

    for (;;) {
        code = user_sessions_next(st, txn, uid, after, sid);
        if (code == AUTHD_NOT_FOUND)
            break;
        if (code != AUTHD_OK)
            return code;
        after = sid;
        code = get_session(st, txn, sid, &s);
        if (code == AUTHD_NOT_FOUND) {
            code = user_session_del(st, txn, uid, sid);
            if (code != AUTHD_OK)
                return code;
            continue;
        }
        if (code != AUTHD_OK)
            return code;
        if (s.revoked || s.expires_at <= now
            || (except != NULL && memcmp(sid, except, AUTHD_ID_BYTES) == 0))
            continue;
        s.revoked = true;
        s.revoked_at = now;
        code = put_session(st, txn, &s, false);
        if (code != AUTHD_OK)
            return code;
        n++;
    }
    if (revoked != NULL)
        *revoked = n;
    return AUTHD_OK;
}

authd_code authd_store_user_set_roles(authd_store *st, const uint8_t id[AUTHD_ID_BYTES],
    const char *const *roles, size_t n_roles, int64_t now)
{
    MDB_txn *txn = NULL;
    authd_user u;
    bool admin_after = false;
    authd_code code;

    memset(&u, 0, sizeof u);
    if (st == NULL || id == NULL || authd_validate_roles(roles, n_roles, NULL) != AUTHD_OK)
        return AUTHD_INVALID_ARGUMENT;
    for (size_t i = 0; i < n_roles; i++)
        admin_after = admin_after || strcmp(roles[i], AUTHD_ROLE_ADMIN) == 0;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, id, &u);
    if (code != AUTHD_OK)
        goto out;
    code = check_last_admin(st, txn, &u, admin_after);
    if (code != AUTHD_OK)
        goto out;
    memset(u.roles, 0, sizeof u.roles);
    for (size_t i = 0; i < n_roles; i++)
        memcpy(u.roles[i], roles[i], strlen(roles[i]) + 1);
    u.n_roles = (uint32_t)n_roles;
    u.updated_at = now;
    code = put_user(st, txn, &u);
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

authd_code authd_store_user_revoke_sessions(authd_store *st, const uint8_t user_id[AUTHD_ID_BYTES],
    const uint8_t *except, int64_t now, size_t *revoked)
{
    MDB_txn *txn = NULL;
    authd_user u;
    size_t n = 0;
    authd_code code;

    memset(&u, 0, sizeof u);
    if (st == NULL || user_id == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, user_id, &u);
    if (code != AUTHD_OK)
        goto out;
    code = revoke_user_sessions(st, txn, user_id, except, now, &n);
    if (code != AUTHD_OK)
        goto out;
    if (n > 0) { /* nothing revoked: nothing to commit (no fsync) */
        code = writer_commit(&txn);
        if (code != AUTHD_OK)
            goto out;
    }
    if (revoked != NULL)
        *revoked = n;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

/* del_index_entry deletes name from a username/email index when it points
 * at id; an entry pointing elsewhere is left alone (it is another user's),
 * an absent one is fine. */
static authd_code del_index_entry(
    MDB_txn *txn, MDB_dbi dbi, const char *name, const uint8_t id[AUTHD_ID_BYTES])
{
    MDB_val k = { .mv_size = strlen(name), .mv_data = (void *)name };
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);

    if (rc == MDB_NOTFOUND)
        return AUTHD_OK;
    if (rc != MDB_SUCCESS)
        return lmdb_code(rc, "get_index");
    if (v.mv_size != AUTHD_ID_BYTES || memcmp(v.mv_data, id, AUTHD_ID_BYTES) != 0)
        return AUTHD_OK;
    return lmdb_code(mdb_del(txn, dbi, &k, NULL), "del_index");
}

/* authd_store_user_delete: see store.h. Sessions are found through
 * sessions_by_user and deleted whole (record, expiry entry, family, index
 * entry), so no session outlives its user: authd-fsck requires every
 * session's user to exist. */
authd_code authd_store_user_delete(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], size_t *sessions)
{
    MDB_txn *txn = NULL;
    authd_user u;
    authd_session s;
    uint8_t sid[AUTHD_ID_BYTES], ek[EXPIRY_KEY_BYTES];
    size_t n = 0;
    authd_code code;
    int rc;

    memset(&u, 0, sizeof u);
    if (st == NULL || id == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = writer_begin(st, &txn);
    if (code != AUTHD_OK)
        goto out;
    code = get_user(st, txn, id, &u);
    if (code != AUTHD_OK)
        goto out;
    code = check_last_admin(st, txn, &u, false);
    if (code != AUTHD_OK)
        goto out;
    /* Always from the first entry: each pass deletes the one it found. */
    while ((code = user_sessions_next(st, txn, id, NULL, sid)) == AUTHD_OK) {
        MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = sid };
        /* A session record that does not decode goes too (a damaged
         * record must not keep its user alive); only its expiry entry,
         * whose key it holds, is left for purge, which skips it. */
        code = get_session(st, txn, sid, &s);
        if (code != AUTHD_OK && code != AUTHD_NOT_FOUND && code != AUTHD_DATA_LOSS)
            goto out;
        if (code != AUTHD_NOT_FOUND) {
            MDB_val ik = { .mv_size = sizeof ek, .mv_data = ek };
            rc = MDB_SUCCESS;
            if (code == AUTHD_OK) {
                expiry_key(ek, s.expires_at, sid);
                rc = mdb_del(txn, st->by_expiry, &ik, NULL);
            }
            if (rc == MDB_SUCCESS || rc == MDB_NOTFOUND)
                rc = mdb_del(txn, st->sessions, &k, NULL);
            if (rc == MDB_SUCCESS || rc == MDB_NOTFOUND)
                rc = mdb_del(txn, st->refresh, &k, NULL);
            if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
                code = lmdb_code(rc, "delete_user_session");
                goto out;
            }
            n++;
        }
        code = user_session_del(st, txn, id, sid);
        if (code != AUTHD_OK)
            goto out;
    }
    if (code != AUTHD_NOT_FOUND)
        goto out;
    code = throttle_clear(st, txn, id, AUTHD_ID_BYTES);
    if (code == AUTHD_OK)
        code = del_index_entry(txn, st->by_username, u.username, id);
    if (code == AUTHD_OK)
        code = del_index_entry(txn, st->by_email, u.email, id);
    if (code == AUTHD_OK) {
        MDB_val k = { .mv_size = AUTHD_ID_BYTES, .mv_data = (void *)id };
        code = lmdb_code(mdb_del(txn, st->users, &k, NULL), "del_user");
    }
    if (code != AUTHD_OK)
        goto out;
    code = writer_commit(&txn);
    if (code == AUTHD_OK && sessions != NULL)
        *sessions = n;
out:
    if (txn != NULL)
        mdb_txn_abort(txn);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

/* authd_store_user_list walks users_by_username from max(prefix, after)
 * in one read transaction; every name found is resolved to its record
 * (the index value must be a stored user carrying that name, as for
 * find_in_txn). One entry past the page is peeked at to answer *more. */
authd_code authd_store_user_list(authd_store *st, const char *prefix, const char *after,
    authd_user *out, size_t cap, size_t *n, bool *more)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    char name[AUTHD_USERNAME_MAX + 1];
    size_t plen, alen, got = 0;
    bool skip_equal = false;
    authd_code code;
    int rc;

    if (prefix == NULL)
        prefix = "";
    if (after == NULL)
        after = "";
    plen = strnlen(prefix, AUTHD_USERNAME_MAX + 1);
    alen = strnlen(after, AUTHD_USERNAME_MAX + 1);
    if (st == NULL || out == NULL || n == NULL || more == NULL || cap == 0
        || cap > AUTHD_USER_LIST_MAX || plen > AUTHD_USERNAME_MAX || alen > AUTHD_USERNAME_MAX)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    code = lmdb_code(mdb_cursor_open(txn, st->by_username, &cur), "list_cursor");
    if (code != AUTHD_OK)
        goto out;
    /* Start at whichever of prefix and after sorts later. */
    if (alen > 0 && strcmp(after, prefix) >= 0) {
        k.mv_size = alen;
        k.mv_data = (void *)after;
        skip_equal = true;
    } else {
        k.mv_size = plen;
        k.mv_data = (void *)prefix;
    }
    if (k.mv_size == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    else
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && skip_equal && k.mv_size == alen && memcmp(k.mv_data, after, alen) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    *more = false;
    for (; rc == MDB_SUCCESS; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break; /* past the prefix's range */
        if (got == cap) {
            *more = true;
            break;
        }
        if (k.mv_size == 0 || k.mv_size > AUTHD_USERNAME_MAX) {
            log_data_loss("list_users", "index key out of bounds", k.mv_data, k.mv_size);
            code = AUTHD_DATA_LOSS;
            goto out;
        }
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        /* find_in_txn re-reads the index entry the cursor stands on:
         * reads do not move the cursor, so the walk continues from here. */
        code = find_in_txn(st, txn, false, name, &out[got]);
        if (code == AUTHD_NOT_FOUND)
            code = AUTHD_DATA_LOSS;
        if (code != AUTHD_OK)
            goto out;
        sodium_memzero(out[got].password_hash, sizeof out[got].password_hash);
        got++;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        code = lmdb_code(rc, "list_scan");
        goto out;
    }
    *n = got;
    code = AUTHD_OK;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (code != AUTHD_OK) {
        for (size_t i = 0; i < got; i++)
            sodium_memzero(out[i].password_hash, sizeof out[i].password_hash);
    }
    reader_put(st, txn, code);
    return code;
}

authd_code authd_store_user_sessions(authd_store *st, const uint8_t user_id[AUTHD_ID_BYTES],
    authd_session *out, size_t cap, size_t *n, size_t *total)
{
    MDB_txn *txn = NULL;
    authd_user u;
    uint8_t sid[AUTHD_ID_BYTES];
    const uint8_t *after = NULL;
    authd_session s;
    size_t got = 0, all = 0;
    authd_code code;

    memset(&u, 0, sizeof u);
    if (st == NULL || user_id == NULL || (out == NULL && cap > 0) || n == NULL || total == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    code = get_user(st, txn, user_id, &u);
    if (code != AUTHD_OK)
        goto out;
    for (;;) {
        code = user_sessions_next(st, txn, user_id, after, sid);
        if (code == AUTHD_NOT_FOUND)
            break;
        if (code != AUTHD_OK)
            goto out;
        after = sid;
        code = get_session(st, txn, sid, &s);
        if (code == AUTHD_NOT_FOUND)
            continue; /* a stale index entry: the session is gone */
        if (code != AUTHD_OK)
            goto out;
        if (got < cap)
            out[got++] = s;
        all++;
    }
    *n = got;
    *total = all;
    code = AUTHD_OK;
out:
    reader_put(st, txn, code);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    return code;
}

authd_code authd_store_admin_count(authd_store *st, size_t *admins)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    authd_verify_view uv;
    size_t count = 0;
    authd_code code;
    int rc;

    if (st == NULL || admins == NULL)
        return AUTHD_INVALID_ARGUMENT;
    code = reader_get(st, &txn);
    if (code != AUTHD_OK)
        return code;
    code = lmdb_code(mdb_cursor_open(txn, st->users, &cur), "admin_cursor");
    if (code != AUTHD_OK)
        goto out;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size == AUTHD_ID_BYTES
            && authd_record_user_view(v.mv_data, v.mv_size, k.mv_data, &uv) == AUTHD_OK
            && uv.status == AUTHD_USER_ACTIVE
            && has_role((const char(*)[AUTHD_ROLE_MAX + 1]) uv.roles, uv.n_roles, AUTHD_ROLE_ADMIN))
            count++;
    }
    if (rc != MDB_NOTFOUND) {
        code = lmdb_code(rc, "admin_scan");
        goto out;
    }
    *admins = count;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    reader_put(st, txn, code);
    return code;
}

/* ---- group commit ------------------------------------------------------------- */

/* authd_store_batch_begin: see store.h. One top-level write transaction;
 * each write of the batch runs in a transaction nested in it
 * (writer_begin_in), so a write that fails its own checks aborts only
 * itself, and a later write reads what earlier ones wrote. */
authd_code authd_store_batch_begin(authd_store *st, authd_store_batch **out)
{
    authd_store_batch *b = NULL;
    authd_code code;

    if (st == NULL || out == NULL)
        return AUTHD_INVALID_ARGUMENT;
    if ((b = calloc(1, sizeof *b)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    b->st = st;
    code = writer_begin_in(st, NULL, &b->txn);
    if (code != AUTHD_OK) {
        free(b);
        return code;
    }
    *out = b;
    return AUTHD_OK;
}

/* authd_store_batch_commit: the one commit (and fsync) of the batch. */
authd_code authd_store_batch_commit(authd_store_batch *b)
{
    authd_code code;

    if (b == NULL)
        return AUTHD_INVALID_ARGUMENT;
    int fault = atomic_exchange(&b->st->fault_batch_commit, 0);
    if (fault != 0) {
        mdb_txn_abort(b->txn);
        b->txn = NULL;
        code = (authd_code)fault;
    } else {
        code = writer_commit(&b->txn);
    }
    free(b);
    return code;
}

void authd_store_batch_abort(authd_store_batch *b)
{
    if (b == NULL)
        return;
    if (b->txn != NULL)
        mdb_txn_abort(b->txn);
    free(b);
}

void authd_store_fault_next_batch_commit(authd_store *st, authd_code code)
{
    atomic_store(&st->fault_batch_commit, (int)code);
}

authd_code authd_store_batch_user_create(
    authd_store_batch *b, const authd_user *u, const char **conflict)
{
    if (b == NULL || b->txn == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return user_create_in(b->st, b->txn, u, conflict);
}

authd_code authd_store_batch_login_begin(authd_store_batch *b, int kind, const char *login,
    const authd_throttle_policy *p, int64_t now_ms, bool *found, authd_user *user, int *verdict,
    authd_throttle_state *state)
{
    if (b == NULL || b->txn == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return login_begin_in(b->st, b->txn, kind, login, p, now_ms, found, user, verdict, state);
}

authd_code authd_store_batch_login_commit_family(authd_store_batch *b,
    const uint8_t user_id[AUTHD_ID_BYTES], const char *new_hash, const authd_session *s,
    const authd_refresh_family *fam, int64_t now)
{
    if (b == NULL || b->txn == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return login_commit_in(b->st, b->txn, user_id, new_hash, s, fam, now);
}

authd_code authd_store_batch_session_revoke(
    authd_store_batch *b, const uint8_t id[AUTHD_ID_BYTES], int64_t now)
{
    if (b == NULL || b->txn == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return session_revoke_in(b->st, b->txn, id, now);
}

authd_code authd_store_batch_refresh_exchange(authd_store_batch *b, const authd_refresh_request *rq,
    int *outcome, authd_session *session, authd_user *user, authd_refresh_family *fam)
{
    if (b == NULL || b->txn == NULL)
        return AUTHD_INVALID_ARGUMENT;
    return refresh_exchange_in(b->st, b->txn, rq, outcome, session, user, fam);
}
