/*
 * password.c — argon2id hashes with libsodium's crypto_pwhash_str.
 *
 * libsodium 1.0.18's crypto_pwhash_str is argon2id with p = 1 and a random
 * salt; the parameters travel inside the string, so a hash made with older
 * parameters still verifies, and after the next successful login it is
 * upgraded — in each dimension only upwards (authd_password_rehash_params:
 * libsodium's own needs_rehash is true for any difference, which re-hashed
 * a 19 MiB hash down to 8 KiB when authd ran with weaker settings).
 */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
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

/* read_field parses "<name>=<decimal>" at *s and moves *s past it. */
static bool read_field(const char **s, const char *name, unsigned long long *v)
{
    size_t n = strlen(name);
    char *end = NULL;

    if (strncmp(*s, name, n) != 0 || (*s)[n] != '=' || (*s)[n + 1] < '0' || (*s)[n + 1] > '9')
        return false;
    errno = 0;
    *v = strtoull(*s + n + 1, &end, 10);
    if (errno != 0)
        return false;
    *s = end;
    return true;
}

bool authd_password_params(const char *hash, authd_pwparams *out)
{
    const char *prefix = crypto_pwhash_argon2id_STRPREFIX; /* "$argon2id$" */
    const char *s = hash;
    unsigned long long v, m, t, par;

    if (strncmp(s, prefix, strlen(prefix)) != 0)
        return false;
    s += strlen(prefix);
    if (!read_field(&s, "v", &v) || *s++ != '$' || !read_field(&s, "m", &m) || *s++ != ','
        || !read_field(&s, "t", &t) || *s++ != ',' || !read_field(&s, "p", &par) || *s != '$')
        return false;
    if (m == 0 || t == 0 || m > SIZE_MAX / 1024u)
        return false;
    out->opslimit = t;
    out->memlimit = (size_t)m * 1024u;
    return true;
}

bool authd_password_rehash_params(const char *hash, const authd_pwparams *want, authd_pwparams *out)
{
    authd_pwparams have;

    if (!authd_password_params(hash, &have)) {
        *out = *want;
        return true;
    }
    if (have.opslimit >= want->opslimit && have.memlimit >= want->memlimit)
        return false;
    out->opslimit = have.opslimit > want->opslimit ? have.opslimit : want->opslimit;
    out->memlimit = have.memlimit > want->memlimit ? have.memlimit : want->memlimit;
    return true;
}

bool authd_password_needs_rehash(const char *hash, const authd_pwparams *p)
{
    authd_pwparams unused;
    return authd_password_rehash_params(hash, p, &unused);
}
