/*
 * user_cmd.c — `authd user unlock LOGIN`: clear an account's login
 * throttle and lockout from the command line.
 *
 * It is a subcommand of the authd binary rather than a tool of its own so
 * that it reads the same flags and environment (--data-dir, --map-size-mb,
 * AUTHD_DATA_DIR, ...) as the server it sits beside, and canonicalizes the
 * login with the same code as Login (authd_login_canonical), so it clears
 * exactly the counter Login counts. It opens the store as a second LMDB
 * process, which LMDB allows while authd runs: the unlock is one write
 * transaction, and the server's next login of the account (a new write
 * transaction) sees it. It calls authd_store_login_unlock, the store call a
 * later admin RPC will make too.
 */
#include "user_cmd.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "service.h"
#include "store.h"

static int usage(FILE *out)
{
    fprintf(out,
        "usage: authd user unlock LOGIN [--data-dir DIR] [--map-size-mb N]\n"
        "  Clears the failed-login count and any lockout of LOGIN (a username or an\n"
        "  email). Safe while authd runs on the same --data-dir.\n");
    return out == stdout ? 0 : 2;
}

static int unlock(const char *login, int argc, char **argv)
{
    authd_config cfg;
    authd_store *st = NULL;
    authd_throttle_state before;
    char canon[AUTHD_LOGIN_MAX + 1];
    size_t len = strlen(login);
    bool found = false;
    int status = 1;

    if (authd_config_load(&cfg, argc, argv, stderr) != 0)
        return 2;
    if (len == 0 || len > AUTHD_LOGIN_MAX) {
        fprintf(stderr, "authd user unlock: LOGIN must be 1 to %d bytes\n", AUTHD_LOGIN_MAX);
        return 2;
    }
    authd_log_setup(AUTHD_LOG_WARN, STDERR_FILENO);
    authd_store_options so
        = { .dir = cfg.data_dir, .map_size = (size_t)cfg.map_size_mb * 1024u * 1024u };
    if (authd_store_open(&so, &st) != AUTHD_OK) {
        fprintf(stderr, "authd user unlock: cannot open the store in %s\n",
            cfg.data_dir != NULL ? cfg.data_dir : "(unset)");
        goto out;
    }
    int kind = authd_login_canonical(login, len, canon);
    if (authd_store_login_unlock(st, kind, canon, &found, &before) != AUTHD_OK) {
        fprintf(stderr, "authd user unlock: the store failed (see the store_error line)\n");
        goto out;
    }
    printf("%s %s: cleared %u failed login%s%s\n", found ? "account" : "unknown identifier", canon,
        before.failures, before.failures == 1 ? "" : "s", before.locked ? " and the lockout" : "");
    authd_logrec r;
    if (authd_log_begin(&r, AUTHD_LOG_WARN, "login_unlocked")) {
        authd_log_bool(&r, "account", found);
        authd_log_u64(&r, "failures", before.failures);
        authd_log_bool(&r, "was_locked", before.locked);
        authd_log_end(&r);
    }
    status = 0;
out:
    authd_store_close(st);
    return status;
}

int authd_user_command(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
        return usage(stdout);
    if (argc >= 3 && strcmp(argv[1], "unlock") == 0 && strncmp(argv[2], "--", 2) != 0) {
        /* The flags after LOGIN go through the server's own table; argv[2]
         * stands in for a program name there. */
        return unlock(argv[2], argc - 2, argv + 2);
    }
    return usage(stderr);
}
