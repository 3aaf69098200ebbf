/*
 * password.h — argon2id password hashes through libsodium.
 *
 * Hashing and verifying are slow on purpose (tens of milliseconds and
 * memlimit bytes each): call them only from the hashing worker pool
 * (workpool.h), never on nng's callback threads.
 */
#ifndef AUTHD_PASSWORD_H
#define AUTHD_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

/* OWASP's minimum for argon2id: m = 19 MiB, t = 2, p = 1. */
#define AUTHD_ARGON2_OPS_DEFAULT 2
#define AUTHD_ARGON2_MEM_DEFAULT (19u * 1024u * 1024u)

/* The floors below which authd refuses to start unless the development
 * flag --insecure-weak-params is given (OWASP's minimum again: a default
 * may move up; the floor stays where the advice is). */
#define AUTHD_ARGON2_OPS_FLOOR     2
#define AUTHD_ARGON2_MEM_KIB_FLOOR 19456u

typedef struct authd_pwparams {
    unsigned long long opslimit; /* argon2 t (iterations) */
    size_t memlimit; /* bytes */
} authd_pwparams;

/* authd_pwparams_check returns AUTHD_INVALID_ARGUMENT when libsodium would
 * refuse the parameters (opslimit < 1, memlimit < 8 KiB, ...). */
AUTHD_MUST_CHECK authd_code authd_pwparams_check(const authd_pwparams *p);

/* authd_password_hash writes a NUL-terminated "$argon2id$..." string into
 * out. AUTHD_RESOURCE_EXHAUSTED when memory for the hash is not available. */
AUTHD_MUST_CHECK authd_code authd_password_hash(
    const char *pw, size_t len, const authd_pwparams *p, char out[AUTHD_HASH_MAX]);

/* authd_password_verify is true when pw matches hash (constant time in the
 * password; a malformed hash is false). */
AUTHD_MUST_CHECK bool authd_password_verify(const char *hash, const char *pw, size_t len);

/* authd_password_params reads the parameters hash was made with (m, t;
 * libsodium only makes p = 1). False when hash is not an argon2id string of
 * the form libsodium writes. */
AUTHD_MUST_CHECK bool authd_password_params(const char *hash, authd_pwparams *out);

/* authd_password_rehash_params decides the re-hash after a successful
 * login. A re-hash only ever strengthens: it is needed when hash is weaker
 * than want in memory or in iterations (or unreadable), and then *out is,
 * per dimension, the larger of the stored and the wanted value, so
 * lowering a setting never lowers a stored hash. False (and *out
 * untouched) when hash is at least as strong as want in both. */
AUTHD_MUST_CHECK bool authd_password_rehash_params(
    const char *hash, const authd_pwparams *want, authd_pwparams *out);

/* authd_password_needs_rehash is authd_password_rehash_params without the
 * new parameters. */
bool authd_password_needs_rehash(const char *hash, const authd_pwparams *p);

#endif
