/*
 * keydir.c — the key set on disk: reading, checking and atomically
 * replacing keys.state, and writing key files. See keydir.h for the layout
 * and why it is files.
 *
 * Every file is read through authd_keyfile_read, so the state file and
 * each key get the signing key's StrictModes checks (regular file, no
 * symlink, owned by authd's user or root, no group or other access, no
 * directory above writable by others).
 */
#define _GNU_SOURCE /* O_NOFOLLOW, flock */
#include "keydir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "keyfile.h"

#define STATE_FILE  "keys.state"
#define LOCK_FILE   "keys.lock"
#define STATE_MAGIC "# authd key set v1"

const char *authd_key_state_name(authd_key_state s)
{
    switch (s) {
    case AUTHD_KEY_PUBLISHED:
        return "published";
    case AUTHD_KEY_ACTIVE:
        return "active";
    case AUTHD_KEY_RETIRED:
        return "retired";
    case AUTHD_KEY_GONE:
        break;
    }
    return "gone";
}

/* kid_ok: 1..32 of [A-Za-z0-9_-]: safe in a file name and in JSON. */
static bool kid_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > AUTHD_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
                || c == '_'))
            return false;
    }
    return true;
}

static int path_of(char *out, size_t cap, const char *dir, const char *name, const char *ext)
{
    int n = snprintf(out, cap, "%s/%s%s", dir, name, ext);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* parse_line reads one key line; 0 if it is well formed. */
static int parse_line(const char *line, authd_keydir_entry *e)
{
    char kid[AUTHD_KID_MAX + 2], alg[8], state[16];
    long long c, a, r;
    int end = -1;

    if (sscanf(line, "%33s %7s %15s %lld %lld %lld %n", kid, alg, state, &c, &a, &r, &end) != 6
        || end < 0 || line[end] != '\0' || !kid_ok(kid)
        || (strcmp(alg, "HS256") != 0 && strcmp(alg, "ES256") != 0) || c < 0 || a < 0 || r < 0)
        return -1;
    memset(e, 0, sizeof *e);
    memcpy(e->kid, kid, strlen(kid) + 1);
    memcpy(e->alg, alg, strlen(alg) + 1);
    if (strcmp(state, "published") == 0)
        e->state = AUTHD_KEY_PUBLISHED;
    else if (strcmp(state, "active") == 0)
        e->state = AUTHD_KEY_ACTIVE;
    else if (strcmp(state, "retired") == 0 && r > 0)
        e->state = AUTHD_KEY_RETIRED;
    else
        return -1;
    e->created_at = c;
    e->activated_at = a;
    e->retired_at = r;
    return 0;
}

authd_code authd_keydir_read(
    const char *dir, authd_keydir *kd, uint8_t digest[32], char *err, size_t errlen)
{
    char path[PATH_MAX];
    uint8_t buf[AUTHD_KEYDIR_STATE_MAX + 1];
    size_t len = 0, active = 0;
    authd_code rc;

    memset(kd, 0, sizeof *kd);
    if (digest != NULL)
        memset(digest, 0, 32);
    if (dir == NULL || dir[0] == '\0' || path_of(path, sizeof path, dir, STATE_FILE, "") != 0) {
        snprintf(err, errlen, "no key directory (--key-dir)");
        return AUTHD_FAILED_PRECONDITION;
    }
    rc = authd_keyfile_read("key state file", path, buf, sizeof buf - 1, &len, err, errlen);
    if (rc == AUTHD_NOT_FOUND) {
        err[0] = '\0';
        return AUTHD_OK;
    }
    if (rc != AUTHD_OK)
        return rc;
    buf[len] = '\0';
    if (digest != NULL)
        crypto_hash_sha256(digest, buf, len);
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(err, errlen, "key state file %s: holds a NUL byte", path);
        return AUTHD_FAILED_PRECONDITION;
    }
    unsigned lineno = 0;
    for (char *save = NULL, *line = strtok_r((char *)buf, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (kd->n == AUTHD_KEYS_MAX) {
            snprintf(err, errlen, "key state file %s: more than %d keys", path, AUTHD_KEYS_MAX);
            return AUTHD_FAILED_PRECONDITION;
        }
        authd_keydir_entry *e = &kd->e[kd->n];
        if (parse_line(line, e) != 0) {
            snprintf(err, errlen,
                "key state file %s: line %u is not \"kid alg state "
                "created_at activated_at retired_at\"",
                path, lineno);
            return AUTHD_FAILED_PRECONDITION;
        }
        for (size_t i = 0; i < kd->n; i++)
            if (strcmp(kd->e[i].kid, e->kid) == 0) {
                snprintf(err, errlen, "key state file %s: key %s listed twice", path, e->kid);
                return AUTHD_FAILED_PRECONDITION;
            }
        active += e->state == AUTHD_KEY_ACTIVE;
        kd->n++;
    }
    if (active > 1) {
        snprintf(err, errlen, "key state file %s: %zu active keys; one at most", path, active);
        return AUTHD_FAILED_PRECONDITION;
    }
    return AUTHD_OK;
}

/* the key materials of one load, on the heap (32 KiB), wiped on free */
struct materials {
    uint8_t m[AUTHD_KEYS_MAX][AUTHD_SIGNING_KEY_MAX + 1];
    size_t len[AUTHD_KEYS_MAX];
};

authd_code authd_keydir_load(
    authd_tokens *t, const char *dir, uint8_t last[32], bool *changed, char *err, size_t errlen)
{
    authd_keydir kd;
    uint8_t digest[32];
    authd_key_spec specs[AUTHD_KEYS_MAX];
    struct materials *mat = NULL;
    char path[PATH_MAX];
    authd_code rc;

    if (changed != NULL)
        *changed = false;
    if ((rc = authd_keydir_read(dir, &kd, digest, err, errlen)) != AUTHD_OK)
        return rc;
    if (kd.n == 0) {
        snprintf(err, errlen,
            "key directory %s holds no key set: run `authd keys add es256 --key-dir %s` (or "
            "hs256), then `authd keys activate KID --force`",
            dir, dir);
        return AUTHD_FAILED_PRECONDITION;
    }
    if (last != NULL && sodium_memcmp(last, digest, 32) == 0)
        return AUTHD_OK;
    if ((mat = calloc(1, sizeof *mat)) == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    for (size_t i = 0; i < kd.n; i++) {
        const authd_keydir_entry *e = &kd.e[i];
        if (path_of(path, sizeof path, dir, e->kid, ".key") != 0) {
            snprintf(err, errlen, "key %s: path too long", e->kid);
            rc = AUTHD_FAILED_PRECONDITION;
            goto out;
        }
        rc = authd_keyfile_read(
            "key", path, mat->m[i], sizeof mat->m[i], &mat->len[i], err, errlen);
        if (rc != AUTHD_OK) {
            rc = AUTHD_FAILED_PRECONDITION;
            goto out;
        }
        specs[i] = (authd_key_spec) { .alg = e->alg,
            .kid = e->kid,
            .material = mat->m[i],
            .material_len = mat->len[i],
            .state = e->state,
            .retired_at = e->retired_at };
    }
    if ((rc = authd_tokens_set_keys(t, specs, kd.n, err, errlen)) != AUTHD_OK)
        goto out;
    if (last != NULL)
        memcpy(last, digest, 32);
    if (changed != NULL)
        *changed = true;
out:
    if (mat != NULL) {
        sodium_memzero(mat, sizeof *mat);
        free(mat);
    }
    return rc;
}

/* fsync_dir makes a rename or a new entry in dir durable. */
static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = -1;

    if (fd >= 0) {
        rc = fsync(fd);
        close(fd);
    }
    return rc;
}

/* write_all writes n bytes and fsyncs; closes fd. */
static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    int rc = 0;

    while (n > 0 && rc == 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            rc = -1;
        else {
            b += w;
            n -= (size_t)w;
        }
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -1;
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

authd_code authd_keydir_write(const char *dir, const authd_keydir *kd, char *err, size_t errlen)
{
    char text[AUTHD_KEYDIR_STATE_MAX], path[PATH_MAX], tmp[PATH_MAX];
    size_t pos = 0;
    int n, fd;

    n = snprintf(text, sizeof text,
        STATE_MAGIC "\n# kid alg state created_at activated_at retired_at: written by `authd "
                    "keys`; do not edit while it runs\n");
    pos = (size_t)n;
    for (size_t i = 0; i < kd->n; i++) {
        const authd_keydir_entry *e = &kd->e[i];
        n = snprintf(text + pos, sizeof text - pos,
            "%s %s %s %" PRId64 " %" PRId64 " %" PRId64 "\n", e->kid, e->alg,
            authd_key_state_name(e->state), e->created_at, e->activated_at, e->retired_at);
        if (n < 0 || (size_t)n >= sizeof text - pos) {
            snprintf(err, errlen, "key set too large");
            return AUTHD_INVALID_ARGUMENT;
        }
        pos += (size_t)n;
    }
    if (path_of(path, sizeof path, dir, STATE_FILE, "") != 0
        || path_of(tmp, sizeof tmp, dir, STATE_FILE, ".tmp") != 0) {
        snprintf(err, errlen, "key directory %s: path too long", dir);
        return AUTHD_INVALID_ARGUMENT;
    }
    unlink(tmp); /* left by a command that died */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, text, pos) != 0 || rename(tmp, path) != 0 || fsync_dir(dir) != 0) {
        snprintf(err, errlen, "key state file %s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return AUTHD_INTERNAL;
    }
    return AUTHD_OK;
}

authd_code authd_keydir_lock(const char *dir, int *fd, char *err, size_t errlen)
{
    char path[PATH_MAX];

    if (dir == NULL || dir[0] == '\0') {
        snprintf(err, errlen, "no key directory (--key-dir)");
        return AUTHD_INVALID_ARGUMENT;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "key directory %s: cannot create: %s", dir, strerror(errno));
        return AUTHD_FAILED_PRECONDITION;
    }
    if (path_of(path, sizeof path, dir, LOCK_FILE, "") != 0) {
        snprintf(err, errlen, "key directory %s: path too long", dir);
        return AUTHD_INVALID_ARGUMENT;
    }
    *fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (*fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return AUTHD_FAILED_PRECONDITION;
    }
    while (flock(*fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            snprintf(err, errlen, "%s: cannot lock: %s", path, strerror(errno));
            close(*fd);
            *fd = -1;
            return AUTHD_FAILED_PRECONDITION;
        }
    }
    return AUTHD_OK;
}

void authd_keydir_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* drops the flock */
}

authd_code authd_keydir_put_key(
    const char *dir, const char *kid, const uint8_t *material, size_t len, char *err, size_t errlen)
{
    char path[PATH_MAX];
    uint8_t back[AUTHD_SIGNING_KEY_MAX + 1];
    size_t blen = 0;
    authd_code rc;
    int fd;

    if (!kid_ok(kid) || path_of(path, sizeof path, dir, kid, ".key") != 0) {
        snprintf(err, errlen, "key %s: bad kid or path too long", kid);
        return AUTHD_INVALID_ARGUMENT;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "key file %s: cannot create: %s", path, strerror(errno));
        return errno == EEXIST ? AUTHD_ALREADY_EXISTS : AUTHD_FAILED_PRECONDITION;
    }
    if (write_all(fd, material, len) != 0 || fsync_dir(dir) != 0) {
        snprintf(err, errlen, "key file %s: cannot write: %s", path, strerror(errno));
        unlink(path);
        return AUTHD_INTERNAL;
    }
    /* Read it back the way authd will: the directory's checks apply now. */
    rc = authd_keyfile_read("key", path, back, sizeof back, &blen, err, errlen);
    sodium_memzero(back, sizeof back);
    if (rc != AUTHD_OK) {
        unlink(path);
        return AUTHD_FAILED_PRECONDITION;
    }
    return AUTHD_OK;
}

void authd_keydir_remove_key(const char *dir, const char *kid)
{
    char path[PATH_MAX];

    if (kid_ok(kid) && path_of(path, sizeof path, dir, kid, ".key") == 0)
        (void)unlink(path);
}
