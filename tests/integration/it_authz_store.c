/*
 * it_authz_store.c — it_authz's direct store access, in its own file:
 * store.h (the server's status codes) and the client library's header
 * define the same AUTHD_* names, so one file cannot include both.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "password.h"
#include "store.h"

int it_store_add_user(const char *dir, const char *username, const char *password,
    const char *const *roles, size_t n_roles, char id_hex[33]);

/* it_store_add_user opens the store in dir as a second process (as `authd
 * user` does, while authd runs) and creates an active user with roles
 * (the first admin's way in: no RPC grants roles yet), its password hashed
 * with cheap parameters (a login verifies with the hash's own). Writes the
 * id as hex. Returns 0 on success. */
int it_store_add_user(const char *dir, const char *username, const char *password,
    const char *const *roles, size_t n_roles, char id_hex[33])
{
    authd_store_options so = { .dir = dir };
    authd_pwparams pp = { .opslimit = 1, .memlimit = 64 * 1024 };
    authd_store *st = NULL;
    authd_user u;
    int rc = -1;

    if (sodium_init() < 0 || n_roles > AUTHD_ROLES_MAX)
        return -1;
    memset(&u, 0, sizeof u);
    randombytes_buf(u.id, sizeof u.id);
    snprintf(u.username, sizeof u.username, "%s", username);
    snprintf(u.email, sizeof u.email, "%s@example.com", username);
    u.status = AUTHD_USER_ACTIVE;
    u.n_roles = (uint32_t)n_roles;
    for (size_t i = 0; i < n_roles; i++)
        snprintf(u.roles[i], sizeof u.roles[i], "%s", roles[i]);
    u.created_at = u.updated_at = u.password_changed_at = 1700000000;
    if (authd_password_hash(password, strlen(password), &pp, u.password_hash) != AUTHD_OK)
        return -1;
    if (authd_store_open(&so, &st) != AUTHD_OK)
        return -1;
    if (authd_store_user_create(st, &u, NULL) == AUTHD_OK)
        rc = 0;
    authd_store_close(st);
    for (int i = 0; i < AUTHD_ID_BYTES; i++)
        snprintf(id_hex + 2 * i, 3, "%02x", u.id[i]);
    return rc;
}
