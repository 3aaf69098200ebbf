/*
 * user_cmd.c — `authd user add|roles|disable|enable|delete|list|unlock`:
 * the operator's commands on the users of a local data directory. `authd
 * user add NAME --email E --role admin` is how the first admin comes to be:
 * authd ships no default account.
 *
 * They are subcommands of the authd binary rather than a tool of their own
 * so that they read the same flags and environment (--data-dir,
 * --map-size-mb, --argon2-*, --password-min-bits, AUTHD_*) as the server
 * they sit beside, and apply its rules with its code: usernames, emails and
 * roles through validate.h, new passwords through authd_validate_password
 * and the zxcvbn check (strength.h) exactly as Register does, hashes with
 * the server's argon2id parameters (password.h), and logins canonicalized
 * as Login does (authd_login_canonical), so `unlock` clears exactly the
 * counter Login counts.
 *
 * Each command is one store call, so one LMDB write transaction; LMDB
 * allows this second process while authd runs on the same directory, and
 * authd's next read sees the change: a disabled user's token fails its
 * next Verify. The store calls are the ones the admin RPCs make, so the
 * rules that live in the store (the last-admin rule, disable revoking
 * every session) hold here too.
 *
 * Exit status: 0 done; 1 refused or failed (no such user, name taken, the
 * last-admin rule, the store failed); 2 usage or invalid input.
 */
#include "user_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "log.h"
#include "password.h"
#include "service.h"
#include "store.h"
#include "strength.h"
#include "validate.h"

#define ARGS_MAX     64
#define PW_BYTES_MAX (AUTHD_PASSWORD_MAX * 4) /* validate.c's byte cap */
#define LIST_PAGE    100

static int usage(FILE *out)
{
    fprintf(out,
        "usage: authd user add USERNAME --email EMAIL [--role ROLE]... [--password-stdin]\n"
        "       authd user roles USER (--set R1,R2,... | [--add ROLE]... [--remove ROLE]...)\n"
        "       authd user disable USER\n"
        "       authd user enable USER\n"
        "       authd user delete USER\n"
        "       authd user list [--prefix PREFIX]\n"
        "       authd user unlock LOGIN\n"
        "  each with [--data-dir DIR] [--map-size-mb N] or any other server flag or AUTHD_*\n"
        "  variable (add hashes with --argon2-ops/--argon2-mem-kib and checks strength\n"
        "  with --password-min-bits, as Register does). USER and LOGIN are a username or\n"
        "  an email address. Safe while authd runs on the same --data-dir.\n"
        "\n"
        "  add      creates an active user; the password is asked twice on the terminal\n"
        "           without echo, or read from stdin (one line) with --password-stdin.\n"
        "           `authd user add root --email you@example.com --role admin` makes the\n"
        "           first admin.\n"
        "  roles    replaces (--set; \"\" for none) or edits the user's roles; a role is\n"
        "           1-64 of a-z 0-9 _ . : - (at most 16). Verify sees it at once.\n"
        "  disable  refuses the user's logins and revokes every session at once.\n"
        "  enable   lets the user log in again (revoked sessions stay revoked).\n"
        "  delete   removes the user and all their sessions; the username and email\n"
        "           are free again.\n"
        "  list     users in username order, optionally those starting with PREFIX.\n"
        "  unlock   clears the failed-login count and any lockout of LOGIN.\n"
        "  The last active admin cannot be disabled, deleted or lose the admin role:\n"
        "  make another user admin first.\n"
        "exit status: 0 done, 1 refused or failed, 2 usage or invalid input\n");
    return out == stdout ? 0 : 2;
}

/* sub_usage is the one usage line of subcommand sub (on a usage error). */
static int sub_usage(const char *sub)
{
    static const char *const lines[][2] = {
        { "add", "add USERNAME --email EMAIL [--role ROLE]... [--password-stdin]" },
        { "roles", "roles USER (--set R1,R2,... | [--add ROLE]... [--remove ROLE]...)" },
        { "disable", "disable USER" },
        { "enable", "enable USER" },
        { "delete", "delete USER" },
        { "list", "list [--prefix PREFIX]" },
        { "unlock", "unlock LOGIN" },
    };

    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        if (strcmp(lines[i][0], sub) == 0)
            fprintf(stderr,
                "usage: authd user %s [--data-dir DIR] [flags]\n  (authd user --help)\n",
                lines[i][1]);
    return 2;
}

/* ---- the command line ------------------------------------------------------ */

typedef struct cmd {
    const char *sub; /* add, roles, ... */
    const char *name; /* USERNAME / USER / LOGIN as typed */
    const char *email;
    const char *prefix;
    const char *set; /* --set's list, or NULL */
    const char *add[AUTHD_ROLES_MAX + 1]; /* --role (add) or --add (roles) */
    size_t n_add;
    const char *remove[AUTHD_ROLES_MAX + 1];
    size_t n_remove;
    bool password_stdin;
    authd_config cfg;
} cmd;

/* take_list appends the comma-separated names of arg to list (role names
 * hold no comma, so "a,b" and --role a --role b mean the same). Splits into
 * buf, which must outlive list. False when there are too many. */
static bool take_list(char *buf, const char **list, size_t *n)
{
    char *save = NULL;

    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (*n > AUTHD_ROLES_MAX)
            return false;
        list[(*n)++] = t;
    }
    return true;
}

/* parse takes our own options out of argv and hands the rest to the
 * server's config table (argv[1], the subcommand, stands in for a program
 * name there). Returns 0, or 2 after a message. */
static int parse(int argc, char **argv, cmd *c, char **bufs)
{
    char *args[ARGS_MAX + 1];
    int nargs = 0, i = 2;
    size_t nbufs = 0;

    memset(c, 0, sizeof *c);
    c->sub = argv[1];
    if (strcmp(c->sub, "list") != 0) {
        if (argc < 3 || strncmp(argv[2], "--", 2) == 0)
            return sub_usage(c->sub);
        c->name = argv[i++];
    }
    args[nargs++] = argv[1];
    for (; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        bool is_add = strcmp(c->sub, "add") == 0, is_roles = strcmp(c->sub, "roles") == 0;
        if (nbufs == ARGS_MAX)
            return sub_usage(c->sub);
        if (is_add && strcmp(a, "--email") == 0 && has_val) {
            c->email = argv[++i];
        } else if (is_add && strcmp(a, "--password-stdin") == 0) {
            c->password_stdin = true;
        } else if (((is_add && strcmp(a, "--role") == 0) || (is_roles && strcmp(a, "--add") == 0))
            && has_val) {
            if ((bufs[nbufs] = strdup(argv[++i])) == NULL
                || !take_list(bufs[nbufs++], c->add, &c->n_add)) {
                fprintf(stderr, "authd user %s: at most %d roles\n", c->sub, AUTHD_ROLES_MAX);
                return 2;
            }
        } else if (is_roles && strcmp(a, "--remove") == 0 && has_val) {
            if ((bufs[nbufs] = strdup(argv[++i])) == NULL
                || !take_list(bufs[nbufs++], c->remove, &c->n_remove)) {
                fprintf(stderr, "authd user roles: too many roles to remove\n");
                return 2;
            }
        } else if (is_roles && strcmp(a, "--set") == 0 && has_val && c->set == NULL) {
            c->set = argv[++i];
        } else if (strcmp(c->sub, "list") == 0 && strcmp(a, "--prefix") == 0 && has_val) {
            c->prefix = argv[++i];
        } else if (nargs < ARGS_MAX) {
            args[nargs++] = argv[i];
        } else {
            return sub_usage(c->sub);
        }
    }
    args[nargs] = NULL;
    if (strcmp(c->sub, "add") == 0 && c->email == NULL) {
        fprintf(stderr, "authd user add: --email EMAIL is required\n");
        return 2;
    }
    if (strcmp(c->sub, "roles") == 0 && ((c->set == NULL) == (c->n_add == 0 && c->n_remove == 0))) {
        fprintf(stderr, "authd user roles: give --set LIST, or --add/--remove ROLE\n");
        return 2;
    }
    if (authd_config_load(&c->cfg, nargs, args, stderr) != 0)
        return 2;
    return 0;
}

/* ---- reading a password ------------------------------------------------------ */

/* The terminal's settings while echo is off, so a signal can restore them. */
static int tty_fd = -1;
static struct termios tty_saved;

static void tty_restore_on_signal(int sig)
{
    if (tty_fd >= 0)
        tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* read_line reads one line from fd into buf (cap bytes with the NUL),
 * without the line end. Returns its length, or -1 at a read error, or when
 * the line does not fit (the rest is not read: a too-long password is
 * refused, never cut). */
static ssize_t read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0 || ch == '\n')
            break;
        if (n + 1 >= cap)
            return -1;
        buf[n++] = ch;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return (ssize_t)n;
}

/* prompt_tty asks for the password twice on /dev/tty with echo off. */
static int prompt_tty(const char *user, char *pw, size_t cap)
{
    char again[PW_BYTES_MAX + 2];
    struct termios quiet;
    struct sigaction sa, old[4];
    static const int sigs[4] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    ssize_t n1 = -1, n2 = -1;
    int status = 2;

    tty_fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (tty_fd < 0 || tcgetattr(tty_fd, &tty_saved) != 0) {
        fprintf(stderr,
            "authd user add: no terminal to ask for the password on; give "
            "--password-stdin and the password on stdin\n");
        goto out;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tty_restore_on_signal;
    for (int i = 0; i < 4; i++)
        sigaction(sigs[i], &sa, &old[i]);
    quiet = tty_saved;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    quiet.c_lflag |= ICANON;
    dprintf(tty_fd, "Password for %s: ", user);
    if (tcsetattr(tty_fd, TCSAFLUSH, &quiet) == 0) {
        n1 = read_line(tty_fd, pw, cap);
        dprintf(tty_fd, "\nAgain: ");
        if (n1 >= 0)
            n2 = read_line(tty_fd, again, sizeof again);
        dprintf(tty_fd, "\n");
        tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
    }
    for (int i = 0; i < 4; i++)
        sigaction(sigs[i], &old[i], NULL);
    if (n1 < 0 || n2 < 0) {
        fprintf(stderr, "authd user add: the password could not be read (at most %d bytes)\n",
            PW_BYTES_MAX);
        goto out;
    }
    if (n1 != n2 || sodium_memcmp(pw, again, (size_t)n1) != 0) {
        fprintf(stderr, "authd user add: the two passwords differ\n");
        goto out;
    }
    status = 0;
out:
    sodium_memzero(again, sizeof again);
    if (tty_fd >= 0)
        close(tty_fd);
    tty_fd = -1;
    return status;
}

/* read_password fills pw from stdin (--password-stdin: its first line) or
 * the terminal. Returns 0 or 2 after a message. */
static int read_password(const cmd *c, char *pw, size_t cap)
{
    if (!c->password_stdin)
        return prompt_tty(c->name, pw, cap);
    if (read_line(STDIN_FILENO, pw, cap) < 0) {
        fprintf(stderr, "authd user add: no password on stdin, or longer than %d bytes\n",
            PW_BYTES_MAX);
        return 2;
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static void iso(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "-");
}

static void roles_text(const authd_user *u, char *out, size_t cap)
{
    size_t n = 0;

    out[0] = '\0';
    for (uint32_t i = 0; i < u->n_roles && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "", u->roles[i]);
    if (u->n_roles == 0)
        snprintf(out, cap, "-");
}

/* open_store opens cfg's data directory, as the server would. */
static authd_store *open_store(const cmd *c)
{
    authd_store *st = NULL;
    authd_store_options so
        = { .dir = c->cfg.data_dir, .map_size = (size_t)c->cfg.map_size_mb * 1024u * 1024u };

    if (authd_store_open(&so, &st) != AUTHD_OK) {
        fprintf(stderr, "authd user %s: cannot open the store in %s\n", c->sub,
            c->cfg.data_dir != NULL ? c->cfg.data_dir : "(unset)");
        return NULL;
    }
    return st;
}

/* find_user resolves USER (a username or an email, canonicalized as Login
 * does) to its record. Returns 0, or 1 after a message. */
static int find_user(authd_store *st, const cmd *c, authd_user *u)
{
    char canon[AUTHD_LOGIN_MAX + 1];
    size_t len = strlen(c->name);
    authd_code rc = AUTHD_NOT_FOUND;

    if (len >= 1 && len <= AUTHD_LOGIN_MAX) {
        int kind = authd_login_canonical(c->name, len, canon);
        if (kind == AUTHD_LOGIN_USERNAME)
            rc = authd_store_user_find_by_username(st, canon, u);
        else if (kind == AUTHD_LOGIN_EMAIL)
            rc = authd_store_user_find_by_email(st, canon, u);
    }
    if (rc == AUTHD_NOT_FOUND) {
        fprintf(stderr, "authd user %s: no user %s\n", c->sub, c->name);
        return 1;
    }
    if (rc != AUTHD_OK) {
        fprintf(stderr, "authd user %s: the store failed (see the store_error line)\n", c->sub);
        return 1;
    }
    return 0;
}

/* store_failed explains a refused or failed store call. Returns 1. */
static int store_failed(const cmd *c, authd_code rc)
{
    if (rc == AUTHD_FAILED_PRECONDITION)
        fprintf(stderr,
            "authd user %s: refused: %s is the last active admin (role \"%s\"); make another "
            "user admin first\n",
            c->sub, c->name, AUTHD_ROLE_ADMIN);
    else if (rc == AUTHD_NOT_FOUND)
        fprintf(stderr, "authd user %s: no user %s (deleted meanwhile?)\n", c->sub, c->name);
    else
        fprintf(stderr, "authd user %s: the store failed: %s (see the store_error line)\n", c->sub,
            authd_code_name(rc));
    return 1;
}

/* audit writes the operator's change to the log (stderr), as the server's
 * audit events do: the user by id, never a password. */
static void audit(const char *event, const authd_user *u)
{
    authd_logrec r;

    if (authd_log_begin(&r, AUTHD_LOG_WARN, event)) {
        authd_log_str(&r, "source", "authd user");
        authd_log_hex(&r, "user_id", u->id, sizeof u->id);
        authd_log_end(&r);
    }
}

/* ---- the commands ------------------------------------------------------------- */

/* add_roles checks roles[0..n) and copies the distinct ones into u. */
static int set_user_roles(authd_user *u, const char *const *roles, size_t n, const char *sub)
{
    const char *uniq[AUTHD_ROLES_MAX + 1] = { NULL };
    size_t k = 0;
    authd_error err;

    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < k; j++)
            dup = dup || strcmp(uniq[j], roles[i]) == 0;
        if (!dup && k <= AUTHD_ROLES_MAX)
            uniq[k++] = roles[i];
    }
    if (authd_validate_roles(uniq, k, &err) != AUTHD_OK) {
        fprintf(stderr, "authd user %s: %s\n", sub, err.message);
        return 2;
    }
    memset(u->roles, 0, sizeof u->roles);
    for (size_t i = 0; i < k; i++)
        snprintf(u->roles[i], sizeof u->roles[i], "%s", uniq[i]);
    u->n_roles = (uint32_t)k;
    return 0;
}

static int cmd_add(cmd *c)
{
    authd_user u;
    authd_error err;
    authd_store *st = NULL;
    authd_pwparams pp = { .opslimit = (unsigned long long)c->cfg.argon2_ops,
        .memlimit = (size_t)c->cfg.argon2_mem_kib * 1024u };
    char pw[PW_BYTES_MAX + 2];
    char idhex[AUTHD_ID_HEX + 1], roles[AUTHD_ROLES_MAX * (AUTHD_ROLE_MAX + 1) + 1];
    const char *conflict = NULL;
    int status = 2;
    authd_code rc;

    memset(&u, 0, sizeof u);
    memset(pw, 0, sizeof pw);
    if (authd_validate_username(c->name, strlen(c->name), u.username, &err) != AUTHD_OK
        || authd_validate_email(c->email, strlen(c->email), u.email, &err) != AUTHD_OK) {
        fprintf(stderr, "authd user add: %s\n", err.message);
        goto out;
    }
    if ((status = set_user_roles(&u, c->add, c->n_add, "add")) != 0)
        goto out;
    status = 2;
    if (authd_pwparams_check(&pp) != AUTHD_OK) {
        fprintf(stderr, "authd user add: invalid argon2 parameters\n");
        goto out;
    }
    if (read_password(c, pw, sizeof pw) != 0)
        goto out;
    /* Register's rules, in Register's order, with its messages. */
    if (authd_validate_password(pw, strlen(pw), &err) != AUTHD_OK
        || authd_password_strong_enough(
               pw, u.username, u.email, (unsigned)c->cfg.password_min_bits, &err)
            != AUTHD_OK) {
        fprintf(stderr, "authd user add: %s\n", err.message);
        goto out;
    }
    status = 1;
    if ((rc = authd_password_hash(pw, strlen(pw), &pp, u.password_hash)) != AUTHD_OK) {
        fprintf(stderr, "authd user add: hashing failed: %s\n", authd_code_name(rc));
        goto out;
    }
    sodium_memzero(pw, sizeof pw);
    if ((st = open_store(c)) == NULL)
        goto out;
    randombytes_buf(u.id, sizeof u.id);
    u.status = AUTHD_USER_ACTIVE;
    u.created_at = u.updated_at = u.password_changed_at = (int64_t)time(NULL);
    rc = authd_store_user_create(st, &u, &conflict);
    if (rc == AUTHD_ALREADY_EXISTS) {
        fprintf(stderr, "authd user add: %s\n",
            conflict != NULL && strcmp(conflict, "email") == 0 ? "email: is already registered"
                                                               : "username: is already taken");
        goto out;
    }
    if (rc != AUTHD_OK) {
        store_failed(c, rc);
        goto out;
    }
    hex(u.id, sizeof u.id, idhex);
    roles_text(&u, roles, sizeof roles);
    printf("added user %s (id %s, roles %s)\n", u.username, idhex, roles);
    audit("user_added", &u);
    status = 0;
out:
    sodium_memzero(pw, sizeof pw);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
    authd_store_close(st);
    return status;
}

static int cmd_roles(cmd *c, authd_store *st)
{
    authd_user u, want;
    const char *names[2 * AUTHD_ROLES_MAX + 2];
    const char *ptrs[AUTHD_ROLES_MAX];
    char *setbuf = NULL;
    char roles[AUTHD_ROLES_MAX * (AUTHD_ROLE_MAX + 1) + 1];
    size_t n = 0;
    int status;
    authd_code rc;

    if ((status = find_user(st, c, &u)) != 0)
        return status;
    if (c->set != NULL) {
        if ((setbuf = strdup(c->set)) == NULL)
            return 1;
        if (!take_list(setbuf, names, &n)) {
            free(setbuf);
            fprintf(stderr, "authd user roles: at most %d roles\n", AUTHD_ROLES_MAX);
            return 2;
        }
    } else {
        /* The user's roles, less --remove, plus --add. */
        for (uint32_t i = 0; i < u.n_roles; i++) {
            bool drop = false;
            for (size_t j = 0; j < c->n_remove; j++)
                drop = drop || strcmp(u.roles[i], c->remove[j]) == 0;
            if (!drop)
                names[n++] = u.roles[i];
        }
        for (size_t j = 0; j < c->n_add; j++)
            names[n++] = c->add[j];
    }
    want = u;
    status = set_user_roles(&want, names, n, "roles");
    free(setbuf);
    if (status != 0)
        return status;
    for (uint32_t i = 0; i < want.n_roles; i++)
        ptrs[i] = want.roles[i];
    rc = authd_store_user_set_roles(st, u.id, ptrs, want.n_roles, (int64_t)time(NULL));
    if (rc != AUTHD_OK)
        return store_failed(c, rc);
    roles_text(&want, roles, sizeof roles);
    printf("user %s: roles %s\n", u.username, roles);
    audit("user_roles_set", &u);
    return 0;
}

static int cmd_status(cmd *c, authd_store *st, uint32_t to)
{
    authd_user u;
    int status;
    authd_code rc;

    if ((status = find_user(st, c, &u)) != 0)
        return status;
    rc = authd_store_user_set_status(st, u.id, to, (int64_t)time(NULL));
    if (rc != AUTHD_OK)
        return store_failed(c, rc);
    if (to == AUTHD_USER_DISABLED)
        printf("user %s: disabled; every session revoked\n", u.username);
    else
        printf("user %s: enabled (sessions revoked before stay revoked)\n", u.username);
    audit(to == AUTHD_USER_DISABLED ? "user_disabled" : "user_enabled", &u);
    return 0;
}

static int cmd_delete(cmd *c, authd_store *st)
{
    authd_user u;
    size_t sessions = 0;
    int status;
    authd_code rc;

    if ((status = find_user(st, c, &u)) != 0)
        return status;
    rc = authd_store_user_delete(st, u.id, &sessions);
    if (rc != AUTHD_OK)
        return store_failed(c, rc);
    printf("user %s: deleted with %zu session%s; the username and email are free\n", u.username,
        sessions, sessions == 1 ? "" : "s");
    audit("user_deleted", &u);
    return 0;
}

static int cmd_list(cmd *c, authd_store *st)
{
    char prefix[AUTHD_USERNAME_MAX + 1], after[AUTHD_USERNAME_MAX + 1] = "";
    char roles[AUTHD_ROLES_MAX * (AUTHD_ROLE_MAX + 1) + 1], when[32];
    size_t plen = c->prefix != NULL ? strlen(c->prefix) : 0, n = 0, total = 0;
    authd_user *page = NULL;
    bool more = true;
    int status = 1;

    if (plen > AUTHD_USERNAME_MAX) {
        fprintf(stderr, "authd user list: --prefix is longer than a username\n");
        return 2;
    }
    /* Usernames are stored lower-cased (validate.h). */
    for (size_t i = 0; i < plen; i++)
        prefix[i] = (char)((c->prefix[i] >= 'A' && c->prefix[i] <= 'Z') ? c->prefix[i] - 'A' + 'a'
                                                                        : c->prefix[i]);
    prefix[plen] = '\0';
    if ((page = calloc(LIST_PAGE, sizeof *page)) == NULL)
        return 1;
    printf("%-32s %-40s %-8s %-20s %s\n", "USERNAME", "EMAIL", "STATUS", "CREATED", "ROLES");
    while (more) {
        authd_code rc = authd_store_user_list(st, prefix, after, page, LIST_PAGE, &n, &more);
        if (rc != AUTHD_OK) {
            store_failed(c, rc);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            roles_text(&page[i], roles, sizeof roles);
            iso(page[i].created_at, when);
            printf("%-32s %-40s %-8s %-20s %s\n", page[i].username, page[i].email,
                page[i].status == AUTHD_USER_ACTIVE ? "active" : "disabled", when, roles);
        }
        total += n;
        if (n > 0)
            memcpy(after, page[n - 1].username, sizeof after);
    }
    fprintf(stderr, "authd user list: %zu user%s\n", total, total == 1 ? "" : "s");
    status = 0;
out:
    free(page);
    return status;
}

static int cmd_unlock(cmd *c, authd_store *st)
{
    authd_throttle_state before;
    char canon[AUTHD_LOGIN_MAX + 1];
    size_t len = strlen(c->name);
    bool found = false;

    if (len == 0 || len > AUTHD_LOGIN_MAX) {
        fprintf(stderr, "authd user unlock: LOGIN must be 1 to %d bytes\n", AUTHD_LOGIN_MAX);
        return 2;
    }
    int kind = authd_login_canonical(c->name, len, canon);
    if (authd_store_login_unlock(st, kind, canon, &found, &before) != AUTHD_OK) {
        fprintf(stderr, "authd user unlock: the store failed (see the store_error line)\n");
        return 1;
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
    return 0;
}

int authd_user_command(int argc, char **argv)
{
    static const char *const subs[]
        = { "add", "roles", "disable", "enable", "delete", "list", "unlock" };
    char *bufs[ARGS_MAX] = { NULL };
    authd_store *st = NULL;
    cmd c;
    bool known = false;
    int status;

    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
        return usage(stdout);
    for (size_t i = 0; argc >= 2 && i < sizeof subs / sizeof subs[0]; i++)
        known = known || strcmp(argv[1], subs[i]) == 0;
    if (!known)
        return usage(stderr);
    if (argc >= 3 && (strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0))
        return usage(stdout);
    memset(&c, 0, sizeof c); /* c.cfg is freed at out:, loaded or not */
    if ((status = parse(argc, argv, &c, bufs)) != 0)
        goto out;
    if (sodium_init() < 0) {
        status = 1;
        goto out;
    }
    authd_log_setup(AUTHD_LOG_WARN, STDERR_FILENO);
    if (strcmp(c.sub, "add") == 0) {
        status = cmd_add(&c); /* opens the store itself, after the password */
        goto out;
    }
    if ((st = open_store(&c)) == NULL) {
        status = 1;
        goto out;
    }
    if (strcmp(c.sub, "roles") == 0)
        status = cmd_roles(&c, st);
    else if (strcmp(c.sub, "disable") == 0)
        status = cmd_status(&c, st, AUTHD_USER_DISABLED);
    else if (strcmp(c.sub, "enable") == 0)
        status = cmd_status(&c, st, AUTHD_USER_ACTIVE);
    else if (strcmp(c.sub, "delete") == 0)
        status = cmd_delete(&c, st);
    else if (strcmp(c.sub, "list") == 0)
        status = cmd_list(&c, st);
    else
        status = cmd_unlock(&c, st);
out:
    authd_store_close(st);
    authd_config_free(&c.cfg);
    for (size_t i = 0; i < ARGS_MAX; i++)
        free(bufs[i]);
    return status;
}
