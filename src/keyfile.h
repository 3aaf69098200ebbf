/*
 * keyfile.h — the token signing key on disk.
 */
#ifndef AUTHD_KEYFILE_H
#define AUTHD_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "token.h"

#define AUTHD_KEYFILE_NEW_BYTES 64 /* what a created key holds */

/* authd_keyfile_load reads the signing key at path into key (capacity
 * AUTHD_SIGNING_KEY_MAX) and sets *len. When the file does not exist and
 * create is true, it first writes AUTHD_KEYFILE_NEW_BYTES random bytes with
 * mode 0600 (and sets *created). It refuses — with a one-line reason for the
 * operator in err — a file that is not a regular file, that group or others
 * may read or write, or that holds fewer than AUTHD_SIGNING_KEY_MIN bytes. */
AUTHD_MUST_CHECK authd_code authd_keyfile_load(const char *path, bool create, uint8_t *key,
    size_t *len, bool *created, char *err, size_t errlen);

#endif
