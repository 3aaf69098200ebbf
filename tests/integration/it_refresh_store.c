/*
 * it_refresh_store.c — it_refresh's direct store access, in its own file:
 * store.h (the server's status codes) and the client library's header
 * define the same AUTHD_* names, so one file cannot include both.
 */
#include <stdio.h>

#include "store.h"

int it_store_set_status(const char *dir, const char *user_hex, int active, long long now);

/* it_store_set_status opens the store in dir as a second process (as
 * `authd user` does, while authd runs), sets the user's status (active or
 * disabled) and closes it. Returns 0 on success. */
int it_store_set_status(const char *dir, const char *user_hex, int active, long long now)
{
    authd_store_options so = { .dir = dir };
    authd_store *st = NULL;
    uint8_t id[AUTHD_ID_BYTES];
    int rc = -1;

    for (int i = 0; i < AUTHD_ID_BYTES; i++)
        if (sscanf(user_hex + 2 * i, "%2hhx", &id[i]) != 1)
            return -1;
    if (authd_store_open(&so, &st) != AUTHD_OK)
        return -1;
    if (authd_store_user_set_status(
            st, id, active ? AUTHD_USER_ACTIVE : AUTHD_USER_DISABLED, (int64_t)now)
        == AUTHD_OK)
        rc = 0;
    authd_store_close(st);
    return rc;
}
