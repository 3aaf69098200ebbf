/*
 * keydir.h — the signing key set on disk (--key-dir), shared by the server
 * (which loads it at start, on SIGHUP and every minute) and by the
 * `authd keys` commands (which change it, safely while authd runs).
 *
 * Layout of the directory (mode 0700, the same ownership rules as the
 * --signing-key file: keyfile.h):
 *
 *   keys.state   the set: one line per key, "kid alg state created_at
 *                activated_at retired_at" (Unix seconds, 0 = never), after
 *                a "# authd key set v1" line. Replaced whole (write, fsync,
 *                rename, fsync the directory), so a reader sees the old set
 *                or the new one, never a mix.
 *   KID.key      one key's material (HS256: raw random bytes; ES256: a PEM
 *                P-256 private key), mode 0600, written (and fsynced)
 *                before keys.state names it, never rewritten.
 *   keys.lock    flock()ed by a command for its read-modify-write.
 *
 * Why files and not the LMDB store: the keys are secrets and the store is
 * backed up and copied for other reasons (a store backup must not carry
 * the keys that sign for it); the files get the StrictModes checks the
 * signing key always had; and a reload is a read of one small file.
 */
#ifndef AUTHD_KEYDIR_H
#define AUTHD_KEYDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "token.h"

#define AUTHD_KEYDIR_STATE_MAX 4096 /* bytes of keys.state */

typedef struct authd_keydir_entry {
    char kid[AUTHD_KID_MAX + 1];
    char alg[8]; /* "HS256", "ES256" */
    authd_key_state state; /* PUBLISHED, ACTIVE or RETIRED */
    int64_t created_at; /* = published */
    int64_t activated_at; /* 0: never active */
    int64_t retired_at; /* 0: not retired */
} authd_keydir_entry;

typedef struct authd_keydir {
    authd_keydir_entry e[AUTHD_KEYS_MAX];
    size_t n;
} authd_keydir;

/* authd_keydir_read reads dir/keys.state into *kd (checked: owner, mode,
 * directories; syntax; kids unique and of the safe alphabet; at most one
 * active). A missing file is an empty set (kd->n == 0), not an error. If
 * digest is not NULL it gets SHA-256 of the file's bytes (all zero when
 * missing). AUTHD_FAILED_PRECONDITION with err filled otherwise. */
AUTHD_MUST_CHECK authd_code authd_keydir_read(
    const char *dir, authd_keydir *kd, uint8_t digest[32], char *err, size_t errlen);

/* authd_keydir_load reads the set and every key it names, and makes it
 * t's key set (authd_tokens_set_keys: all or nothing). When the state
 * file's bytes equal last (32 bytes, updated on success; may be NULL)
 * nothing is read beyond it and *changed is false. An empty set (no
 * keys.state) is an error: authd needs an active key to sign. */
AUTHD_MUST_CHECK authd_code authd_keydir_load(
    authd_tokens *t, const char *dir, uint8_t last[32], bool *changed, char *err, size_t errlen);

/* authd_keydir_write replaces dir/keys.state with kd, atomically and
 * durably. The caller holds the lock. */
AUTHD_MUST_CHECK authd_code authd_keydir_write(
    const char *dir, const authd_keydir *kd, char *err, size_t errlen);

/* authd_keydir_lock creates dir (0700) if absent, checks it, and takes
 * the exclusive command lock; *fd is released by authd_keydir_unlock. */
AUTHD_MUST_CHECK authd_code authd_keydir_lock(const char *dir, int *fd, char *err, size_t errlen);
void authd_keydir_unlock(int fd);

/* authd_keydir_put_key writes dir/KID.key (mode 0600, O_EXCL, fsynced,
 * and the directory fsynced). */
AUTHD_MUST_CHECK authd_code authd_keydir_put_key(const char *dir, const char *kid,
    const uint8_t *material, size_t len, char *err, size_t errlen);

/* authd_keydir_remove_key unlinks dir/KID.key (a key dropped from the
 * set). Missing is fine. */
void authd_keydir_remove_key(const char *dir, const char *kid);

/* authd_key_state_name: "published", "active", "retired" ("gone" for 0). */
const char *authd_key_state_name(authd_key_state s);

#endif
