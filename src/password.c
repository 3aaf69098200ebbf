/*
 * password.c — argon2id hashes with libsodium's crypto_pwhash_str.
 *
 * libsodium 1.0.18's crypto_pwhash_str is argon2id with p = 1 and a random
 * salt; the parameters travel inside the string, so a hash made with older
 * parameters still verifies and crypto_pwhash_str_needs_rehash tells us to
 * upgrade it after the next successful login.
 */
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "password.h"

authd_code authd_pwparams_check(const authd_pwparams *p)
{
    if (p->opslimit < crypto_pwhash_argon2id_OPSLIMIT_MIN
        || p->opslimit > crypto_pwhash_argon2id_OPSLIMIT_MAX)
        return AUTHD_INVALID_ARGUMENT;
    if (p->memlimit < crypto_pwhash_argon2id_MEMLIMIT_MIN
        || p->memlimit > crypto_pwhash_argon2id_MEMLIMIT_MAX)
        return AUTHD_INVALID_ARGUMENT;
    return AUTHD_OK;
}

/*
 * authd_password_hash: crypto_pwhash_str fails only when it cannot get
 * memlimit bytes (or on absurd parameters, which authd_pwparams_check
 * refused at start-up), so a failure is reported as RESOURCE_EXHAUSTED.
 */
authd_code authd_password_hash(
    const char *pw, size_t len, const authd_pwparams *p, char out[AUTHD_HASH_MAX])
{
    char tmp[crypto_pwhash_STRBYTES];
    authd_code rc = AUTHD_OK;

    _Static_assert(crypto_pwhash_STRBYTES <= AUTHD_HASH_MAX, "hash buffer too small");
    if (crypto_pwhash_str_alg(tmp, pw, len, p->opslimit, p->memlimit, crypto_pwhash_ALG_ARGON2ID13)
        != 0) {
        rc = AUTHD_RESOURCE_EXHAUSTED;
        goto out;
    }
    memcpy(out, tmp, sizeof tmp);
out:
    sodium_memzero(tmp, sizeof tmp);
    return rc;
}

bool authd_password_verify(const char *hash, const char *pw, size_t len)
{
    if (strncmp(hash, crypto_pwhash_argon2id_STRPREFIX, strlen(crypto_pwhash_argon2id_STRPREFIX))
        != 0)
        return false;
    return crypto_pwhash_str_verify(hash, pw, len) == 0;
}

bool authd_password_needs_rehash(const char *hash, const authd_pwparams *p)
{
    return crypto_pwhash_argon2id_str_needs_rehash(hash, p->opslimit, p->memlimit) != 0;
}
