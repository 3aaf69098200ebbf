/*
 * store.h — users and sessions, kept in LMDB.
 *
 * The store knows LMDB and the record encoding (authd/store/v1/records.proto)
 * and nothing of nng or JWT. All functions are safe to call from any number
 * of threads at once. LMDB serialises writers; readers never block.
 *
 * Records handed out are copies in caller-owned fixed-size structs: nothing
 * returned points into the LMDB map.
 *
 * Errors are canonical codes: MDB_NOTFOUND -> AUTHD_NOT_FOUND,
 * MDB_KEYEXIST -> AUTHD_ALREADY_EXISTS, MDB_MAP_FULL -> AUTHD_RESOURCE_EXHAUSTED,
 * a record that does not decode -> AUTHD_DATA_LOSS, anything else ->
 * AUTHD_INTERNAL (logged by the store with the LMDB error string; that string
 * never travels further up).
 */
#ifndef AUTHD_STORE_H
#define AUTHD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define AUTHD_ID_BYTES     16
#define AUTHD_ID_HEX       (AUTHD_ID_BYTES * 2)
#define AUTHD_USERNAME_MAX 32
#define AUTHD_EMAIL_MAX    254
#define AUTHD_HASH_MAX     128 /* crypto_pwhash_STRBYTES, NUL included */
#define AUTHD_ROLES_MAX    16
#define AUTHD_ROLE_MAX     64
#define AUTHD_ROLE_ADMIN   "admin" /* the role the last-admin rule protects */

enum authd_user_status {
    AUTHD_USER_ACTIVE = 1,
    AUTHD_USER_DISABLED = 2,
};

typedef struct authd_user {
    uint8_t id[AUTHD_ID_BYTES];
    char username[AUTHD_USERNAME_MAX + 1]; /* canonical, NUL-terminated */
    char email[AUTHD_EMAIL_MAX + 1]; /* normalized, NUL-terminated */
    char password_hash[AUTHD_HASH_MAX]; /* NUL-terminated */
    uint32_t status; /* enum authd_user_status */
    uint32_t n_roles;
    char roles[AUTHD_ROLES_MAX][AUTHD_ROLE_MAX + 1];
    int64_t created_at; /* Unix seconds */
    int64_t updated_at;
    int64_t password_changed_at;
} authd_user;

typedef struct authd_session {
    uint8_t id[AUTHD_ID_BYTES];
    uint8_t user_id[AUTHD_ID_BYTES];
    int64_t created_at;
    int64_t expires_at;
    bool revoked;
    int64_t revoked_at;
} authd_session;

typedef struct authd_store authd_store;

typedef struct authd_store_options {
    const char *dir; /* directory holding data.mdb; created (0700) if absent */
    size_t map_size; /* bytes; 0 = default (4 GiB, sparse) */
    unsigned max_readers; /* 0 = default (126) */
} authd_store_options;

/* authd_store_open opens (creating if needed) the store in opts->dir.
 * Errors: INVALID_ARGUMENT (bad options), RESOURCE_EXHAUSTED (map too small
 * to hold the tables), FAILED_PRECONDITION (written by a newer schema),
 * DATA_LOSS (unreadable schema entry).
 * The expiry index key is expires_at with its sign bit flipped, big-endian,
 * then the session id, so byte order is numeric order.
 * A store from before the per-user session index (sessions_by_user) gets
 * it here, built from the sessions in the open's write transaction; so
 * does one whose index an older authd let fall out of step (store.c).
 * On success *out is the store, which the caller frees with
 * authd_store_close. */
AUTHD_MUST_CHECK authd_code authd_store_open(const authd_store_options *opts, authd_store **out);

/* authd_store_close closes the environment. Accepts NULL. No call may be
 * in progress on other threads. */
void authd_store_close(authd_store *st);

/* authd_store_backup writes a compacted copy of the store's data file
 * (free pages left out, pages renumbered: mdb_env_copyfd2 with
 * MDB_CP_COMPACT) to fd, which the caller opened for writing and still
 * owns (it fsyncs and closes it). The copy is one read transaction's
 * snapshot: consistent, and safe while authd serves from the same
 * directory in another process (writers are not blocked). Its map size is
 * the store's. Errors: INTERNAL (logged, with the LMDB or system error),
 * RESOURCE_EXHAUSTED when the disk is full. */
AUTHD_MUST_CHECK authd_code authd_store_backup(authd_store *st, int fd);

/* authd_store_user_create inserts u (id, username and email already
 * canonical). Uniqueness of id, username and email is enforced inside one
 * write transaction: of two concurrent creates of one name, exactly one wins.
 * Returns AUTHD_ALREADY_EXISTS and sets *conflict (when conflict is not NULL)
 * to the static string "username" or "email" (or "id") naming what is taken. */
AUTHD_MUST_CHECK authd_code authd_store_user_create(
    authd_store *st, const authd_user *u, const char **conflict);

/* authd_store_user_create_batch inserts users[0..n) as authd_store_user_create
 * would, but in ONE write transaction: all of them or none. For bulk loads
 * (authd-seed), where a transaction per user would cost an fsync each.
 * AUTHD_INVALID_ARGUMENT when a user is not storable; AUTHD_ALREADY_EXISTS
 * when one collides with the store or with an earlier user of the batch
 * (*conflict as above); AUTHD_RESOURCE_EXHAUSTED when the map is full. On
 * any failure nothing is written and, when failed is not NULL, *failed is
 * the index of the user at fault (0 for a failure of the transaction
 * itself). A batch must fit in one LMDB transaction: keep n to tens of
 * thousands. */
AUTHD_MUST_CHECK authd_code authd_store_user_create_batch(
    authd_store *st, const authd_user *users, size_t n, size_t *failed, const char **conflict);

/* authd_store_user_get copies the user with this id into *out.
 * AUTHD_NOT_FOUND when there is none; *out is written only on AUTHD_OK. */
AUTHD_MUST_CHECK authd_code authd_store_user_get(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], authd_user *out);

/* authd_store_user_find looks a user up by canonical username or normalized
 * email (exact byte match on the stored canonical forms; the caller
 * canonicalizes). NOT_FOUND when neither matches. */
AUTHD_MUST_CHECK authd_code authd_store_user_find_by_username(
    authd_store *st, const char *username, authd_user *out);
AUTHD_MUST_CHECK authd_code authd_store_user_find_by_email(
    authd_store *st, const char *email, authd_user *out);

/* authd_store_user_set_status sets status (enum authd_user_status) and
 * updated_at = now, in one write transaction. Disabling also revokes every
 * live session of the user in that transaction (as
 * authd_store_user_revoke_sessions), so the user's access and refresh
 * tokens die at the commit; enabling revokes nothing and restores nothing.
 * Errors: NOT_FOUND (no such user), FAILED_PRECONDITION (the last-admin
 * rule: the user is the last active holder of AUTHD_ROLE_ADMIN and would
 * be disabled; nothing written), INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
 * DATA_LOSS, INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_user_set_status(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], uint32_t status, int64_t now);

/* ---- administration ----------------------------------------------------------
 *
 * The calls behind `authd user ...` and the admin RPCs. Each write is ONE
 * write transaction: its checks and its changes commit together or not at
 * all.
 *
 * The last-admin rule lives here, not in the callers, so no caller can
 * forget it: a change that would leave the store with no ACTIVE user
 * holding AUTHD_ROLE_ADMIN is refused with FAILED_PRECONDITION when the
 * user changed is such a user now (a store that has no admin at all is
 * not held to it: disabling or editing a non-admin is always allowed).
 * Checking it scans the users table, in the write transaction, until it
 * finds another active admin: O(users) lean record reads in the worst
 * case (0.20-0.25 us each measured here: 20-25 ms for 100,000 users,
 * during which other writers wait), and it runs only when an active admin loses the
 * role, is disabled or is deleted. A PostgreSQL backend does the same with
 * one indexed count under the row lock. */

/* authd_store_user_set_roles replaces the user's roles with
 * roles[0..n_roles) (each authd_validate_role, no two equal, n_roles <=
 * AUTHD_ROLES_MAX; order kept) and sets updated_at = now. Verify reads
 * roles from the store, so the change takes effect on the next Verify.
 * Errors: INVALID_ARGUMENT (a bad role set; nothing written), NOT_FOUND,
 * FAILED_PRECONDITION (the last-admin rule), RESOURCE_EXHAUSTED,
 * DATA_LOSS, INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_user_set_roles(authd_store *st,
    const uint8_t id[AUTHD_ID_BYTES], const char *const *roles, size_t n_roles, int64_t now);

/* authd_store_user_revoke_sessions revokes, at now, every live session of
 * the user (not revoked, not expired) except the one whose id is except
 * (NULL: none excepted; ChangePassword keeps the caller's own), and sets
 * *revoked (when not NULL) to how many it revoked. A revoked session's
 * refresh family is dead with it (Refresh checks the session first).
 * Idempotent: a second call revokes 0. Errors: NOT_FOUND (no such user),
 * INVALID_ARGUMENT, RESOURCE_EXHAUSTED, DATA_LOSS, INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_user_revoke_sessions(authd_store *st,
    const uint8_t user_id[AUTHD_ID_BYTES], const uint8_t *except, int64_t now, size_t *revoked);

/* authd_store_user_delete removes the user and everything that hangs on
 * it, in one write transaction: every session (record, expiry entry,
 * refresh family, per-user index entry), the login throttle counter, the
 * username and email index entries (so both are free for a new Register
 * at once) and the record. A token of a deleted user fails Verify at once
 * (its session is gone). *sessions (when not NULL) is how many sessions
 * went. Errors: NOT_FOUND, FAILED_PRECONDITION (the last-admin rule:
 * nothing written), INVALID_ARGUMENT, RESOURCE_EXHAUSTED, DATA_LOSS,
 * INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_user_delete(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], size_t *sessions);

#define AUTHD_USER_LIST_MAX 1000 /* users per page at most */

/* authd_store_user_list reads one page of users in canonical-username
 * order (byte order, through the username index) from one read snapshot:
 * those whose username starts with prefix ("" or NULL: all) and sorts
 * after `after` (the last username of the previous page; "" or NULL: from
 * the start), at most cap (1..AUTHD_USER_LIST_MAX) of them, copied into
 * out[0..*n). password_hash is left empty in every copy: a listing never
 * carries hashes. *more says whether a further matching user exists (ask
 * again with after = out[*n - 1].username). Pages taken one after another
 * see a store that may change in between: a user created behind the
 * cursor is not seen, one deleted ahead of it is not returned. prefix and
 * after are compared as given (the caller canonicalizes: lower case).
 * Errors: INVALID_ARGUMENT (cap, or prefix/after longer than a username),
 * DATA_LOSS (an index entry without its user), INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_user_list(authd_store *st, const char *prefix,
    const char *after, authd_user *out, size_t cap, size_t *n, bool *more);

/* authd_store_user_sessions copies up to cap sessions of the user (any
 * state: revoked and expired ones not yet purged too), in session-id
 * order, into out[0..*n), and sets *total to how many the user has (for
 * Me and admin tools). NOT_FOUND when there is no such user. */
AUTHD_MUST_CHECK authd_code authd_store_user_sessions(authd_store *st,
    const uint8_t user_id[AUTHD_ID_BYTES], authd_session *out, size_t cap, size_t *n,
    size_t *total);

/* authd_store_admin_count sets *admins to the number of ACTIVE users that
 * hold AUTHD_ROLE_ADMIN, from one read snapshot: a full scan of the users
 * table (O(users)); for tools and tests, not for a request path. */
AUTHD_MUST_CHECK authd_code authd_store_admin_count(authd_store *st, size_t *admins);

/* authd_store_login_commit is the write half of a successful login, in one
 * write transaction: it re-reads the user, fails with
 * AUTHD_FAILED_PRECONDITION if the user is no longer active (or NOT_FOUND if
 * gone), replaces the password hash with new_hash when new_hash is not NULL
 * (setting updated_at = now and leaving password_changed_at untouched: a
 * re-hash is not a password change), and inserts session s (s->user_id must
 * equal user_id). A successful commit also clears the user's login
 * throttle counter in the same transaction (a success ends the run of
 * failures); a refused commit leaves the counter as it was. */
AUTHD_MUST_CHECK authd_code authd_store_login_commit(authd_store *st,
    const uint8_t user_id[AUTHD_ID_BYTES], const char *new_hash, const authd_session *s,
    int64_t now);

/* ---- refresh families ------------------------------------------------------
 *
 * A session carries one refresh family: the newest refresh token and its
 * immediate parent, kept only as hashes (the store never sees a token).
 * What a token looks like, how it is hashed and how a child is encrypted
 * is the caller's business (rpc_refresh.c); the store keeps the bytes and
 * decides, in one write transaction, what a presented token means. */

#define AUTHD_REFRESH_HASH_BYTES 32
#define AUTHD_REFRESH_BOX_BYTES  48 /* a 32-byte secret + a 16-byte MAC */
#define AUTHD_REFRESH_TAG_BYTES  16

typedef struct authd_refresh_family {
    uint32_t generation; /* of the newest token; the first is 1 */
    uint8_t token_hash[AUTHD_REFRESH_HASH_BYTES]; /* of the newest token */
    bool has_parent; /* false at generation 1 */
    uint8_t parent_hash[AUTHD_REFRESH_HASH_BYTES];
    int64_t parent_used_at_ms; /* Unix ms the parent was exchanged */
    bool has_box; /* false at generation 1 */
    uint8_t
        child_box[AUTHD_REFRESH_BOX_BYTES]; /* the newest token's secret, sealed by the parent */
    int64_t issued_at; /* Unix s: iat of the newest pair */
    int64_t access_expires_at; /* exp of the newest pair's access token */
} authd_refresh_family;

/* Session lifetimes, seconds (grace in ms). A session ends idle_ttl after
 * it was opened or last refreshed, and never later than max_ttl after it
 * was opened; an access token never outlives its session. */
typedef struct authd_session_policy {
    int64_t idle_ttl; /* >= 1 */
    int64_t max_ttl; /* >= 1 */
    int64_t token_ttl; /* >= 1: access token lifetime */
    int64_t grace_ms; /* >= 0: how long the immediate parent may be replayed */
} authd_session_policy;

/* authd_store_login_commit_family is authd_store_login_commit that also
 * stores fam (when not NULL) as the new session's refresh family, in the
 * same write transaction. */
AUTHD_MUST_CHECK authd_code authd_store_login_commit_family(authd_store *st,
    const uint8_t user_id[AUTHD_ID_BYTES], const char *new_hash, const authd_session *s,
    const authd_refresh_family *fam, int64_t now);

/* A presented refresh token, as the caller parsed it, and the child the
 * store is to record if the token is the newest of its family. */
typedef struct authd_refresh_request {
    uint8_t session_id[AUTHD_ID_BYTES];
    uint32_t generation; /* as the token claims (its MAC already checked by the caller) */
    uint8_t token_hash[AUTHD_REFRESH_HASH_BYTES];
    uint8_t new_hash[AUTHD_REFRESH_HASH_BYTES]; /* of the child */
    uint8_t new_box[AUTHD_REFRESH_BOX_BYTES]; /* the child's secret sealed by the presented token */
    int64_t now_ms; /* Unix ms */
    authd_session_policy policy;
} authd_refresh_request;

enum authd_refresh_outcome {
    AUTHD_REFRESH_ROTATED = 1, /* committed: *fam is the new family (generation + 1) */
    AUTHD_REFRESH_REPLAYED = 2, /* the parent within the grace window: nothing written; *fam is
                                   the current family, whose child_box holds the child */
    AUTHD_REFRESH_REUSED = 3, /* an older token: the session is now revoked (committed) */
    AUTHD_REFRESH_UNKNOWN = 4, /* no such session, family or token: nothing written */
    AUTHD_REFRESH_REVOKED = 5, /* the session was revoked before: nothing written */
    AUTHD_REFRESH_EXPIRED = 6, /* the session is past its idle or absolute end */
    AUTHD_REFRESH_USER_DISABLED = 7, /* the user is disabled or gone */
};

/* authd_store_refresh_exchange checks the presented token against its
 * session's family and acts on it in ONE write transaction, so of N
 * concurrent exchanges of one token exactly one rotates and the rest see
 * its result (REPLAYED within the grace window, else REUSED). In order:
 * no session -> UNKNOWN; revoked -> REVOKED; expired -> EXPIRED; user
 * missing or not active -> USER_DISABLED; no family -> UNKNOWN; then the
 * token: the newest (generation and hash match) -> ROTATED: the family
 * moves one generation on (the presented hash becomes the parent, rq's
 * child becomes the newest), the session's end moves to min(opened +
 * max_ttl, now + idle_ttl) (its expiry index with it) and the new access
 * expiry is min(now + token_ttl, that end); the immediate parent (hash
 * match) less than grace_ms after its exchange -> REPLAYED (never with
 * grace_ms 0); the immediate parent later, or any older generation ->
 * REUSED (the session is revoked, and only it); anything else -> UNKNOWN.
 * On AUTHD_OK *outcome is set, and for ROTATED and REPLAYED *session,
 * *user and *fam are copies (after the change); for REUSED *session is.
 * Errors: INVALID_ARGUMENT, RESOURCE_EXHAUSTED (map full: nothing
 * written), DATA_LOSS, INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_refresh_exchange(authd_store *st,
    const authd_refresh_request *rq, int *outcome, authd_session *session, authd_user *user,
    authd_refresh_family *fam);

/* authd_store_refresh_get copies the family of session id (for tests and
 * tools). NOT_FOUND when the session has none. */
AUTHD_MUST_CHECK authd_code authd_store_refresh_get(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], authd_refresh_family *out);

/* authd_store_refresh_tag writes a MAC (keyed BLAKE2b under the store's
 * refresh key, made once per store like the throttle key) of msg into
 * out: refresh tokens carry it so that a token authd never issued is
 * told apart from a used-up one without a lookup, and so that nobody
 * without the key can make a token that revokes someone's session.
 * Thread-safe; never fails. */
void authd_store_refresh_tag(
    const authd_store *st, const uint8_t *msg, size_t len, uint8_t out[AUTHD_REFRESH_TAG_BYTES]);

/* ---- login throttling ----------------------------------------------------
 *
 * Every login attempt is counted against one throttle subject before its
 * password is checked: the account the login names (by user id, so its
 * username and its email share one counter), or, when it names none, the
 * identifier itself (by a keyed hash of its canonical form, under a secret
 * the store keeps, so an unknown identifier is throttled exactly like an
 * account and the store holds no plain identifiers). */

/* What the caller typed, in canonical form: a username, an email, or text
 * that is neither (kept as typed, so it is still counted). */
enum authd_login_kind {
    AUTHD_LOGIN_USERNAME = 1,
    AUTHD_LOGIN_EMAIL = 2,
    AUTHD_LOGIN_OTHER = 3,
};

#define AUTHD_LOGIN_MAX   254 /* bytes of a login as typed or canonical */
#define AUTHD_LOCKOUT_MAX 100 /* NIST SP 800-63B: at most 100 consecutive failures */

/* The schedule. An attempt is counted when it is allowed; attempt number
 * n (1-based, since the last success or unlock) is allowed at once for n
 * <= free_attempts, else only once delay(n) has passed since the previous
 * counted attempt, where delay(n) = base_delay_ms * 2^(n - free_attempts -
 * 1), capped at max_delay_ms. The attempt that makes failures reach
 * lockout locks the subject: every later attempt is refused until
 * authd_store_login_unlock. A subject quiet for reset_after_ms (0: never)
 * while not locked starts again from zero. */
typedef struct authd_throttle_policy {
    uint32_t free_attempts;
    uint32_t base_delay_ms; /* >= 1 */
    uint32_t max_delay_ms; /* >= base_delay_ms */
    uint32_t lockout; /* 1 .. AUTHD_LOCKOUT_MAX */
    int64_t reset_after_ms; /* >= 0 */
} authd_throttle_policy;

enum authd_login_verdict {
    AUTHD_LOGIN_ALLOWED = 1, /* counted: check the password */
    AUTHD_LOGIN_THROTTLED = 2, /* too soon after the previous attempt: not counted */
    AUTHD_LOGIN_LOCKED = 3, /* at the lockout: not counted */
};

typedef struct authd_throttle_state {
    uint32_t failures; /* counted attempts since the last success or unlock */
    bool locked;
    int64_t last_attempt_ms; /* Unix ms; 0 when none */
    int64_t retry_at_ms; /* when not locked: earliest time the next attempt is allowed */
} authd_throttle_state;

/* authd_store_login_begin resolves a login and takes the throttle decision
 * in ONE write transaction: it looks the login up (kind USERNAME or EMAIL;
 * OTHER never names a user), reads the subject's counter, decides from the
 * value the attempt would make, and when ALLOWED writes the incremented
 * counter before committing. LMDB's single writer serialises these, so N
 * parallel attempts can never get more than the schedule allows (no
 * read-modify-write race). THROTTLED and LOCKED write nothing.
 * On AUTHD_OK: *found says whether the login names a user, and if so *user
 * is a copy of it (any status: the caller refuses disabled users after the
 * hash, as for a wrong password); *verdict is an enum authd_login_verdict;
 * *state (when not NULL) is the subject's state after the call.
 * Errors: INVALID_ARGUMENT (bad policy, kind or login), RESOURCE_EXHAUSTED
 * (map full: the attempt is not counted and must be refused), DATA_LOSS,
 * INTERNAL. now_ms: Unix milliseconds. */
AUTHD_MUST_CHECK authd_code authd_store_login_begin(authd_store *st, int kind, const char *login,
    const authd_throttle_policy *p, int64_t now_ms, bool *found, authd_user *user, int *verdict,
    authd_throttle_state *state);

#define AUTHD_LOGIN_HASH_BYTES 32

/* authd_store_login_hash writes into out the keyed hash (BLAKE2b under the
 * store's secret throttle key, made once per store) of a canonical login
 * of kind kind: the key of that identifier's throttle counter when it
 * names no user. The same login gives the same value across restarts, and
 * without the key nobody can tell which login it is: a failed login's log
 * line names what was tried by it. Thread-safe; never fails. */
void authd_store_login_hash(
    const authd_store *st, int kind, const char *login, uint8_t out[AUTHD_LOGIN_HASH_BYTES]);

/* authd_store_login_unlock clears the throttle counter (and any lockout)
 * of what login names: the account when it names one, else the identifier.
 * This is the operator's unlock (`authd user unlock`) and the call a later
 * admin RPC makes. It is safe while authd runs in another process: that
 * authd's next login of the account begins a new write transaction and
 * sees the cleared counter. On AUTHD_OK *found says whether login names a
 * user and *before (when not NULL) is the state that was cleared (all zero
 * when there was none). Errors as for authd_store_login_begin. */
AUTHD_MUST_CHECK authd_code authd_store_login_unlock(
    authd_store *st, int kind, const char *login, bool *found, authd_throttle_state *before);

/* authd_store_user_unlock clears the throttle counter of the user with
 * this id (the admin-RPC form). NOT_FOUND when there is no such user;
 * AUTHD_OK (nothing written) when there was no counter. */
AUTHD_MUST_CHECK authd_code authd_store_user_unlock(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES]);

/* authd_store_login_throttle_get reads the throttle state of what login
 * names, without counting anything (for tools and tests). Policy p gives
 * retry_at_ms. */
AUTHD_MUST_CHECK authd_code authd_store_login_throttle_get(authd_store *st, int kind,
    const char *login, const authd_throttle_policy *p, int64_t now_ms, authd_throttle_state *out);

/* authd_store_throttle_purge deletes at most max throttle counters that
 * are not locked and have been quiet for p->reset_after_ms (they would
 * read as zero anyway), in one write transaction, and sets *purged. With
 * reset_after_ms == 0 nothing is ever stale. Called periodically. */
AUTHD_MUST_CHECK authd_code authd_store_throttle_purge(
    authd_store *st, const authd_throttle_policy *p, int64_t now_ms, size_t max, size_t *purged);

/* authd_throttle_policy_valid is true when p is a usable schedule. */
bool authd_throttle_policy_valid(const authd_throttle_policy *p);

/* authd_store_session_get copies the session with this id into *out. */
AUTHD_MUST_CHECK authd_code authd_store_session_get(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], authd_session *out);

/* authd_store_session_revoke marks the session revoked at now. Revoking a
 * revoked session is AUTHD_OK and keeps the first revoked_at. NOT_FOUND when
 * there is no such session (e.g. already purged). */
AUTHD_MUST_CHECK authd_code authd_store_session_revoke(
    authd_store *st, const uint8_t id[AUTHD_ID_BYTES], int64_t now);

/* authd_store_password_change is ChangePassword's write, in ONE write
 * transaction: it re-reads the user (NOT_FOUND when gone,
 * FAILED_PRECONDITION when not active), replaces the password hash with
 * new_hash (password_changed_at = updated_at = now), clears the user's login
 * throttle counter (a proven password ends the run of failures, as a
 * Login does), and revokes every live session of the user but keep (as
 * authd_store_user_revoke_sessions does, through the per-user index); *revoked
 * (when not NULL) is how many. All of it commits together or not at all:
 * no moment exists in which the new password works and an old session
 * still verifies. Errors as above. */
AUTHD_MUST_CHECK authd_code authd_store_password_change(authd_store *st,
    const uint8_t user_id[AUTHD_ID_BYTES], const char *new_hash, const uint8_t *keep, int64_t now,
    size_t *revoked);

/* What Verify answers from: a session and its user, read in one snapshot.
 * roles[0..n_roles) hold NUL-terminated strings; the rest is not set. */
typedef struct authd_verify_view {
    uint8_t user_id[AUTHD_ID_BYTES]; /* the session's user */
    int64_t expires_at;
    bool revoked;
    uint32_t status; /* enum authd_user_status */
    char username[AUTHD_USERNAME_MAX + 1];
    uint32_t n_roles;
    char roles[AUTHD_ROLES_MAX][AUTHD_ROLE_MAX + 1];
} authd_verify_view;

/* authd_store_verify_lookup is Verify's read: in ONE read transaction it
 * reads the session and then its user into *out. NOT_FOUND if either is
 * missing; DATA_LOSS (logged) if either record is damaged. This is the hot
 * path: no write, no allocation, and only the fields Verify answers are
 * read out of the records (store_codec.h). The read transaction is the
 * thread's pinned one (authd_store_reader_pin) or one from the pool
 * (mdb_txn_reset / mdb_txn_renew, env opened MDB_NOTLS). */
AUTHD_MUST_CHECK authd_code authd_store_verify_lookup(
    authd_store *st, const uint8_t session_id[AUTHD_ID_BYTES], authd_verify_view *out);

/* authd_store_reader_pin gives the calling thread a read transaction of
 * its own, taken from the pool (it counts against max_readers), so the
 * thread's reads skip the pool's lock: for the event loops, which all run
 * Verify. FAILED_PRECONDITION if the thread already has one (for any
 * store). authd_store_reader_unpin gives it back; every pin must be undone
 * before authd_store_close, on the same thread. */
AUTHD_MUST_CHECK authd_code authd_store_reader_pin(authd_store *st);
void authd_store_reader_unpin(authd_store *st);

/* authd_store_purge_expired deletes at most max sessions whose expires_at is
 * <= now (revoked or not), oldest first, in one write transaction, and sets
 * *purged to how many went. Called periodically by the server. */
AUTHD_MUST_CHECK authd_code authd_store_purge_expired(
    authd_store *st, int64_t now, size_t max, size_t *purged);

/* authd_store_count returns the number of users and sessions (for tests,
 * logs and later metrics). */
AUTHD_MUST_CHECK authd_code authd_store_count(authd_store *st, size_t *users, size_t *sessions);

/* ---- group commit ------------------------------------------------------------
 *
 * A batch is several writes committed together: one transaction, one
 * commit, one fsync, however many writes it holds. The write pool uses it
 * to commit what is queued at once (group commit).
 *
 * The contract, which any backend keeps (LMDB: nested write transactions
 * under one top-level one; SQL: one SAVEPOINT per write inside one
 * transaction):
 *   - each authd_store_batch_* write behaves exactly as its plain
 *     counterpart run at that point, with its own checks and its own
 *     outcome: a write refused by its checks (ALREADY_EXISTS, FAILED_-
 *     PRECONDITION, an outcome that writes nothing, or its own
 *     RESOURCE_EXHAUSTED) leaves nothing in the batch and does not affect
 *     the other writes;
 *   - writes run in call order and each sees every earlier write of the
 *     batch (two Refreshes of one token in one batch: the second sees the
 *     first's rotation);
 *   - what a write answers is provisional: nothing is durable or visible
 *     to readers until authd_store_batch_commit returns AUTHD_OK. When it
 *     does not, no write of the batch happened, and a caller must answer
 *     every one of them with that failure.
 * Only one batch (or plain write) is open at a time: LMDB has one writer,
 * so a second authd_store_batch_begin on another thread waits. Keep
 * batches to hundreds of writes. Not for use from the event loops. */
typedef struct authd_store_batch authd_store_batch;

/* authd_store_batch_begin opens a batch. On success *out belongs to the
 * caller until authd_store_batch_commit or authd_store_batch_abort frees
 * it. Errors: RESOURCE_EXHAUSTED, INTERNAL. */
AUTHD_MUST_CHECK authd_code authd_store_batch_begin(authd_store *st, authd_store_batch **out);

/* authd_store_batch_commit commits every write the batch holds and frees
 * b, whatever it returns. AUTHD_OK: all of them are durable. Otherwise
 * (RESOURCE_EXHAUSTED for a full map, INTERNAL for an I/O error) none is. */
AUTHD_MUST_CHECK authd_code authd_store_batch_commit(authd_store_batch *b);

/* authd_store_batch_abort drops every write of b and frees it. Accepts NULL. */
void authd_store_batch_abort(authd_store_batch *b);

/* The writes a batch can hold; each as the function of the same name
 * without "batch_", under the batch rules above. */
AUTHD_MUST_CHECK authd_code authd_store_batch_user_create(
    authd_store_batch *b, const authd_user *u, const char **conflict);
AUTHD_MUST_CHECK authd_code authd_store_batch_login_begin(authd_store_batch *b, int kind,
    const char *login, const authd_throttle_policy *p, int64_t now_ms, bool *found,
    authd_user *user, int *verdict, authd_throttle_state *state);
AUTHD_MUST_CHECK authd_code authd_store_batch_login_commit_family(authd_store_batch *b,
    const uint8_t user_id[AUTHD_ID_BYTES], const char *new_hash, const authd_session *s,
    const authd_refresh_family *fam, int64_t now);
AUTHD_MUST_CHECK authd_code authd_store_batch_session_revoke(
    authd_store_batch *b, const uint8_t id[AUTHD_ID_BYTES], int64_t now);
AUTHD_MUST_CHECK authd_code authd_store_batch_refresh_exchange(authd_store_batch *b,
    const authd_refresh_request *rq, int *outcome, authd_session *session, authd_user *user,
    authd_refresh_family *fam);

/* authd_store_fault_next_batch_commit (tests only): the next
 * authd_store_batch_commit on st aborts its transaction and returns code
 * instead of committing, as a failed fsync or a full map would. */
void authd_store_fault_next_batch_commit(authd_store *st, authd_code code);

#endif
