/*
 * dirlock.h — one authd per data directory.
 */
#ifndef AUTHD_DIRLOCK_H
#define AUTHD_DIRLOCK_H

#include <stddef.h>

#include "status.h"

#define AUTHD_DIRLOCK_NAME "authd.lock"

/* authd_dirlock_take takes an exclusive flock(2) on DIR/authd.lock
 * (created 0600, never followed through a symlink) and writes our pid into
 * it. On success *fd holds the lock: it lasts until authd_dirlock_release
 * or the process ends, however it ends, so a crash leaves no stale lock
 * (the file itself stays; its content is informative only). When another
 * process holds it: AUTHD_FAILED_PRECONDITION and err says
 * "data directory DIR is in use by another authd (pid N)". Other errors:
 * AUTHD_INTERNAL with the system error in err.
 *
 * It is a server lock, not a store lock: local commands that open the store
 * while authd runs (authd-seed, account unlock) do not take it. */
AUTHD_MUST_CHECK authd_code authd_dirlock_take(const char *dir, int *fd, char *err, size_t errlen);

/* authd_dirlock_release drops the lock taken by authd_dirlock_take; a
 * negative fd is ignored. The file is left in place: removing it would let
 * a starting authd lock a new file while a third still holds the old. */
void authd_dirlock_release(int fd);

#endif
