/*
 * keyfile.c — loading (and, for development, creating) the signing key.
 *
 * The key file is raw bytes: every byte of it is key material. A key that
 * others can read is refused rather than used: anyone who has it can mint
 * tokens for any user.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"

static authd_code create_key(const char *path, char *err, size_t errlen)
{
    uint8_t buf[AUTHD_KEYFILE_NEW_BYTES];
    authd_code rc = AUTHD_INTERNAL;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0) {
        snprintf(err, errlen, "signing key %s: cannot create: %s", path, strerror(errno));
        return AUTHD_FAILED_PRECONDITION;
    }
    randombytes_buf(buf, sizeof buf);
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fsync(fd) != 0) {
        snprintf(err, errlen, "signing key %s: cannot write: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        goto out;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "signing key %s: cannot write: %s", path, strerror(errno));
        unlink(path);
        goto out;
    }
    rc = AUTHD_OK;
out:
    sodium_memzero(buf, sizeof buf);
    return rc;
}

authd_code authd_keyfile_load(const char *path, bool create, uint8_t *key, size_t *len,
    bool *created, char *err, size_t errlen)
{
    struct stat st;
    uint8_t buf[AUTHD_SIGNING_KEY_MAX + 1];
    authd_code rc = AUTHD_FAILED_PRECONDITION;
    ssize_t n = 0;
    int fd = -1;

    *created = false;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if (path == NULL) {
        snprintf(err, errlen, "no signing key file configured (--signing-key)");
        return rc;
    }
    /* O_NONBLOCK: a FIFO at the path must not hang start-up (it is then
     * refused as not a regular file). */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && create) {
        if ((rc = create_key(path, err, errlen)) != AUTHD_OK)
            return rc;
        *created = true;
        rc = AUTHD_FAILED_PRECONDITION;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    }
    if (fd < 0) {
        snprintf(err, errlen, "signing key %s: cannot open: %s%s", path, strerror(errno),
            errno == ENOENT ? " (create one: head -c 64 /dev/urandom > FILE; chmod 600 FILE)" : "");
        return rc;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "signing key %s: not a regular file", path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen,
            "signing key %s: mode %04o lets group or others access it; run chmod 600 %s", path,
            (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - (size_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "signing key %s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0 || (size_t)(n += r) == sizeof buf)
            break;
    }
    if ((size_t)n < AUTHD_SIGNING_KEY_MIN) {
        snprintf(err, errlen, "signing key %s: holds %zd bytes; at least %d random bytes needed",
            path, n, AUTHD_SIGNING_KEY_MIN);
        goto out;
    }
    if ((size_t)n > AUTHD_SIGNING_KEY_MAX) {
        snprintf(err, errlen, "signing key %s: longer than %d bytes", path, AUTHD_SIGNING_KEY_MAX);
        goto out;
    }
    memcpy(key, buf, (size_t)n);
    *len = (size_t)n;
    rc = AUTHD_OK;
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
