/*
 * dirlock.c — one authd per data directory: a flock on DIR/authd.lock held
 * for the server's lifetime.
 *
 * Two authd processes on one store would both be correct for LMDB, but
 * they would split the clients and keep two sets of in-memory state
 * (throttles, caches) that each believes complete. flock(2) rather than a
 * pid file alone: the kernel drops the lock when the process dies, even by
 * SIGKILL, so a crash never needs a manual clean-up, and a pid that was
 * reused by an unrelated process can never block a start. The pid in the
 * file is only there for the message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "dirlock.h"

/* holder_pid reads the pid written by the holder; 0 when there is none
 * yet (it may be between taking the lock and writing). */
static long holder_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return (end != buf && pid > 0) ? pid : 0;
}

authd_code authd_dirlock_take(const char *dir, int *fd_out, char *err, size_t errlen)
{
    char path[4096], line[32];
    int fd = -1, n;

    if (dir == NULL
        || snprintf(path, sizeof path, "%s/%s", dir, AUTHD_DIRLOCK_NAME) >= (int)sizeof path) {
        snprintf(err, errlen, "data directory: no path or path too long");
        return AUTHD_INTERNAL;
    }
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "data directory %s: cannot open %s: %s", dir, path, strerror(errno));
        return AUTHD_INTERNAL;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK) {
            long pid = holder_pid(fd);
            if (pid > 0)
                snprintf(err, errlen, "data directory %s is in use by another authd (pid %ld)", dir,
                    pid);
            else
                snprintf(
                    err, errlen, "data directory %s is in use by another authd (pid unknown)", dir);
            close(fd);
            return AUTHD_FAILED_PRECONDITION;
        }
        snprintf(err, errlen, "data directory %s: cannot lock %s: %s", dir, path, strerror(errno));
        close(fd);
        return AUTHD_INTERNAL;
    }
    n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n) {
        snprintf(err, errlen, "data directory %s: cannot write %s: %s", dir, path, strerror(errno));
        close(fd);
        return AUTHD_INTERNAL;
    }
    *fd_out = fd;
    return AUTHD_OK;
}

void authd_dirlock_release(int fd)
{
    if (fd >= 0)
        close(fd); /* drops the flock */
}
