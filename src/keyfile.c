/*
 * keyfile.c — loading (and, for development, creating) the signing key.
 *
 * The key file is raw bytes: every byte of it is key material. Anyone who
 * can read it, or replace it, can mint tokens for any user, so it is
 * refused rather than used when that is possible for anyone but the
 * account authd runs as (or root):
 *
 *   - the file: a regular file (not followed through a symlink), owned by
 *     the running user or root, no access at all for group or others;
 *   - its directory: owned by the running user or root, not writable by
 *     group or others (else they could rename it away and put their own);
 *   - every directory above, up to /: owned by the running user or root,
 *     and not writable by group or others unless sticky (like /tmp: there
 *     only an entry's owner may rename or remove it, and the entry below
 *     is checked to be ours or root's).
 *
 * This is OpenSSH's StrictModes walk (misc.c safe_path(), used by sshd for
 * authorized_keys) with one deviation: OpenSSH refuses any group- or
 * world-writable ancestor, sticky or not, and stops at the user's home
 * directory; authd has no home directory and accepts sticky ancestors, so
 * a key below $TMPDIR works in tests. The walk runs on the directory the
 * opened file really lives in (/proc/self/fd), so a symlinked directory is
 * judged by its target, and the check is of the file that was opened.
 */
#define _GNU_SOURCE /* readlink on /proc, dirname */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"

/* trusted_uid: the running user and root may own the key and the
 * directories above it (root can read the key anyway). */
static bool trusted_uid(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

/* check_dirs walks from dir (an absolute, symlink-free path) up to /, and
 * returns 0, or -1 with err filled, by the rules in the file comment;
 * sticky_here lets dir itself be sticky and world-writable too, as its
 * ancestors may (settings files: /tmp/authd.conf is nobody else's to
 * replace; the key keeps OpenSSH's stricter rule). */
static int check_dirs(
    const char *what, const char *path, const char *dir, bool sticky_here, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    bool first = !sticky_here;

    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        snprintf(err, errlen, "%s %s: path too long", what, path);
        return -1;
    }
    for (;;) {
        struct stat st;
        if (stat(buf, &st) != 0) {
            snprintf(err, errlen, "%s %s: cannot check directory %s: %s", what, path, buf,
                strerror(errno));
            return -1;
        }
        if (!trusted_uid(st.st_uid)) {
            snprintf(err, errlen,
                "%s %s: directory %s is owned by uid %u, not by uid %u (authd) or root", what, path,
                buf, (unsigned)st.st_uid, (unsigned)geteuid());
            return -1;
        }
        if ((st.st_mode & 022) != 0 && (first || (st.st_mode & S_ISVTX) == 0)) {
            snprintf(err, errlen,
                "%s %s: directory %s (mode %04o) is writable by group or others; "
                "run chmod go-w %s",
                what, path, buf, (unsigned)(st.st_mode & 07777), buf);
            return -1;
        }
        if (strcmp(buf, "/") == 0)
            return 0;
        char *up = dirname(buf); /* may return a static "/" or "." */
        if (strcmp(up, ".") == 0)
            return 0; /* not absolute: cannot happen for a resolved path */
        memmove(buf, up, strlen(up) + 1);
        first = false;
    }
}

/* parent_of writes the resolved directory part of path to out. */
static int parent_of(const char *path, char out[PATH_MAX])
{
    char copy[PATH_MAX];

    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy)
        return -1;
    return realpath(dirname(copy), out) != NULL ? 0 : -1;
}

/* opened_dir writes the directory the file open on fd lives in, from
 * /proc/self/fd; falls back to resolving path when /proc is missing. */
static int opened_dir(int fd, const char *path, char out[PATH_MAX])
{
    char link[64], real[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, real, sizeof real - 1);
    if (n <= 0 || real[0] != '/')
        return parent_of(path, out);
    real[n] = '\0';
    char *d = dirname(real);
    memmove(out, d, strlen(d) + 1);
    return 0;
}

static authd_code create_key(const char *path, char *err, size_t errlen)
{
    uint8_t buf[AUTHD_KEYFILE_NEW_BYTES];
    char dir[PATH_MAX];
    authd_code rc = AUTHD_INTERNAL;
    int fd;

    /* Judge the directory before anything is put in it. */
    if (parent_of(path, dir) != 0) {
        snprintf(
            err, errlen, "signing key %s: cannot create: directory: %s", path, strerror(errno));
        return AUTHD_FAILED_PRECONDITION;
    }
    if (check_dirs("signing key", path, dir, false, err, errlen) != 0)
        return AUTHD_FAILED_PRECONDITION;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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

/* read_open checks the file open on fd and its directories by the rules
 * in the file comment, then reads up to cap bytes of it into buf. */
static authd_code read_open(const char *what, const char *path, int fd, uint8_t *buf, size_t cap,
    size_t *len, char *err, size_t errlen)
{
    struct stat st;
    char dir[PATH_MAX];
    size_t n = 0;

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s %s: not a regular file", what, path);
        return AUTHD_FAILED_PRECONDITION;
    }
    if (!trusted_uid(st.st_uid)) {
        snprintf(err, errlen,
            "%s %s: owned by uid %u, not by uid %u (the user authd runs as) or root; "
            "another account could replace it",
            what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        return AUTHD_FAILED_PRECONDITION;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, errlen, "%s %s: mode %04o lets group or others access it; run chmod 600 %s",
            what, path, (unsigned)(st.st_mode & 07777), path);
        return AUTHD_FAILED_PRECONDITION;
    }
    if (opened_dir(fd, path, dir) != 0) {
        snprintf(
            err, errlen, "%s %s: cannot resolve its directory: %s", what, path, strerror(errno));
        return AUTHD_FAILED_PRECONDITION;
    }
    if (check_dirs(what, path, dir, false, err, errlen) != 0)
        return AUTHD_FAILED_PRECONDITION;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s %s: cannot read: %s", what, path, strerror(errno));
            return AUTHD_FAILED_PRECONDITION;
        }
        if (r == 0 || (n += (size_t)r) == cap)
            break;
    }
    *len = n;
    return AUTHD_OK;
}

authd_code authd_keyfile_check_settings(
    const char *what, const char *path, int fd, char *err, size_t errlen)
{
    struct stat st;
    char dir[PATH_MAX];

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s %s: not a regular file", what, path);
        return AUTHD_FAILED_PRECONDITION;
    }
    if (!trusted_uid(st.st_uid)) {
        snprintf(err, errlen,
            "%s %s is owned by uid %u, neither root nor authd's user (uid %u): refused, that "
            "account could change authd's settings",
            what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        return AUTHD_FAILED_PRECONDITION;
    }
    if ((st.st_mode & 022) != 0) {
        snprintf(err, errlen,
            "%s %s is %s-writable (mode %04o): refused, %s could change authd's settings "
            "(run chmod go-w %s)",
            what, path, (st.st_mode & S_IWOTH) != 0 ? "world" : "group",
            (unsigned)(st.st_mode & 07777),
            (st.st_mode & S_IWOTH) != 0 ? "anyone" : "every member of its group", path);
        return AUTHD_FAILED_PRECONDITION;
    }
    if (opened_dir(fd, path, dir) != 0) {
        snprintf(
            err, errlen, "%s %s: cannot resolve its directory: %s", what, path, strerror(errno));
        return AUTHD_FAILED_PRECONDITION;
    }
    return check_dirs(what, path, dir, true, err, errlen) == 0 ? AUTHD_OK
                                                               : AUTHD_FAILED_PRECONDITION;
}

authd_code authd_keyfile_read(const char *what, const char *path, uint8_t *buf, size_t cap,
    size_t *len, char *err, size_t errlen)
{
    authd_code rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

    if (fd < 0) {
        snprintf(err, errlen, "%s %s: cannot open: %s%s", what, path, strerror(errno),
            errno == ELOOP ? " (a symlink is not followed)" : "");
        return errno == ENOENT ? AUTHD_NOT_FOUND : AUTHD_FAILED_PRECONDITION;
    }
    rc = read_open(what, path, fd, buf, cap, len, err, errlen);
    if (rc == AUTHD_OK && *len == cap) {
        snprintf(err, errlen, "%s %s: %zu bytes or more; too long", what, path, cap);
        rc = AUTHD_FAILED_PRECONDITION;
    }
    close(fd);
    return rc;
}

authd_code authd_keyfile_load(const char *path, bool create, uint8_t *key, size_t *len,
    bool *created, char *err, size_t errlen)
{
    uint8_t buf[AUTHD_SIGNING_KEY_MAX + 1];
    authd_code rc = AUTHD_FAILED_PRECONDITION;
    size_t n = 0;
    int fd = -1;

    *created = false;
    if (sodium_init() < 0)
        return AUTHD_INTERNAL;
    if (path == NULL || path[0] == '\0') {
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
    if (fd < 0 && errno == ENOENT) {
        snprintf(err, errlen,
            "signing key %s: no such file; authd does not create one unless asked: start it "
            "once with --create-signing-key, or run (umask 077; head -c 64 /dev/urandom > %s)",
            path, path);
        return rc;
    }
    if (fd < 0) {
        snprintf(err, errlen, "signing key %s: cannot open: %s%s", path, strerror(errno),
            errno == ELOOP ? " (a symlink is not followed)" : "");
        return rc;
    }
    /* One byte more than a key may hold, so that "too long" is seen. */
    if ((rc = read_open("signing key", path, fd, buf, sizeof buf, &n, err, errlen)) != AUTHD_OK)
        goto out;
    rc = AUTHD_FAILED_PRECONDITION;
    if (n < AUTHD_SIGNING_KEY_MIN) {
        snprintf(err, errlen, "signing key %s: holds %zu bytes; at least %d random bytes needed",
            path, n, AUTHD_SIGNING_KEY_MIN);
        goto out;
    }
    if (n > AUTHD_SIGNING_KEY_MAX) {
        snprintf(err, errlen, "signing key %s: longer than %d bytes", path, AUTHD_SIGNING_KEY_MAX);
        goto out;
    }
    memcpy(key, buf, n);
    *len = n;
    rc = AUTHD_OK;
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
