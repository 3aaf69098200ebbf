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
 * create is true (a development setting, off by default), it first writes
 * AUTHD_KEYFILE_NEW_BYTES random bytes with mode 0600 (and sets *created);
 * an absent file without create is an error that says how to make one. It
 * refuses — AUTHD_FAILED_PRECONDITION, with a one-line reason for the
 * operator in err — a file that is not a regular file or is a symlink, that
 * is owned by anyone but the running user or root, that group or others may
 * access, whose directory is not owned by the running user or root or is
 * writable by group or others, with an ancestor directory that fails the
 * same rules (sticky ancestors such as /tmp excepted), or that holds fewer
 * than AUTHD_SIGNING_KEY_MIN bytes. */
AUTHD_MUST_CHECK authd_code authd_keyfile_load(const char *path, bool create, uint8_t *key,
    size_t *len, bool *created, char *err, size_t errlen);

/* authd_keyfile_read reads the whole file at path (fewer than cap bytes) into buf and sets *len,
 * after the same checks as authd_keyfile_load (regular file, no symlink, owner, mode 0600 or
 * stricter, the directories above); what names the file in err ("key", "key state file").
 * AUTHD_NOT_FOUND when it does not exist; AUTHD_FAILED_PRECONDITION otherwise, with err filled.
 * The caller wipes buf if it holds a secret. */
AUTHD_MUST_CHECK authd_code authd_keyfile_read(const char *what, const char *path, uint8_t *buf,
    size_t cap, size_t *len, char *err, size_t errlen);

/* authd_keyfile_check_settings checks a settings file already open on fd
 * (the --config file, the --caller-policy): whoever can change it can turn
 * authd's defences off, so it must be a regular file owned by authd's user
 * or root, writable by no one else (it may be readable: it holds no
 * secret), in directories that pass the key's walk above (the file's own
 * directory may be sticky, like /tmp). path and what
 * ("config file") only name it in err. AUTHD_FAILED_PRECONDITION with err
 * filled when it fails. */
AUTHD_MUST_CHECK authd_code authd_keyfile_check_settings(
    const char *what, const char *path, int fd, char *err, size_t errlen);

#endif
