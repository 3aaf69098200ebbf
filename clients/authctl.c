/*
** authctl.c — the authd command-line client: register, login, verify,
** logout, refresh, the caller's own account (me, passwd, logout-all), the
** admin-only RPCs (admin ...) and GetJwks over libauthd-client.
**
** Secrets never come from argv (which any local user can read in /proc):
** passwords are typed on the terminal with echo off or read as one line of
** stdin (--password-stdin); tokens come from $AUTHD_TOKEN /
** $AUTHD_REFRESH_TOKEN, stdin, or (refresh tokens) a 0600 file. They
** are read with read(2), not stdio, so no copy lingers in a stdio buffer,
** and every buffer that held one is wiped before exit.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "authd/client_rpc.h"
#include "sysutil.h"

#define EXIT_OK        0
#define EXIT_FAILED    1
#define EXIT_USAGE     2
#define EXIT_TRANSPORT 3

/* The build passes the project version; this is for builds without it. */
#ifndef AUTHD_VERSION
#define AUTHD_VERSION "0.1.0"
#endif

#define MAX_PASSWORD 4096
#define MAX_TOKEN    16384
#define DEFAULT_URL  "tls+tcp://127.0.0.1:7443"
#define DEFAULT_CA   "./var/tls/ca.crt"

static const char main_usage[]
    = "usage: authctl [OPTIONS] COMMAND [COMMAND OPTIONS]\n"
      "\n"
      "Calls an authd server over TLS (SP req/rep on tls+tcp://).\n"
      "\n"
      "Commands:\n"
      "  register   create a user\n"
      "  login      open a session; prints the access token on stdout\n"
      "  verify     check an access token; prints whose it is\n"
      "  logout     revoke the session of an access token\n"
      "  refresh    exchange a refresh token for a new access + refresh token\n"
      "  me         show your own profile and session (access token required)\n"
      "  passwd     change your password (access token required)\n"
      "  logout-all revoke every one of your sessions (access token required)\n"
      "  health     is the server ready? exit 0 only when it is SERVING\n"
      "  admin SUBCOMMAND  admin-only calls (admin token required):\n"
      "             get-user, list-users, set-roles, disable, enable, delete,\n"
      "             revoke-sessions, unlock (see authctl help admin)\n"
      "  jwks       print the server's public keys (JWKS JSON)\n"
      "  help [COMMAND]   this text, or a command's\n"
      "\n"
      "Options (before the command; environment fallback in brackets):\n"
      "  --url URL           server [AUTHD_URL]; default " DEFAULT_URL "\n"
      "  --ca FILE           CA bundle the server certificate must chain to\n"
      "                      [AUTHD_CA]; default " DEFAULT_CA "\n"
      "  --cert FILE         client certificate for mutual TLS [AUTHD_CERT]\n"
      "  --key FILE          its private key, unencrypted PEM [AUTHD_KEY]\n"
      "  --server-name NAME  DNS name or IP address the server certificate\n"
      "                      must match; default: the host of the URL\n"
      "                      (localhost for a loopback address)\n"
      "  --timeout MS        deadline of the call in ms (default 5000)\n"
      "  --plaintext         allow a tcp:// URL without TLS (testing only)\n"
      "  -h, --help          show this help\n"
      "  --version           print the version\n"
      "\n"
      "Secrets are never taken from arguments. Passwords are typed on the\n"
      "terminal with echo off, or read as one line of stdin with\n"
      "--password-stdin (at most 4096 bytes; a trailing \\n or \\r\\n is\n"
      "removed). Tokens come from AUTHD_TOKEN if set, else the first line of\n"
      "stdin.\n"
      "\n"
      "Exit status:\n"
      "  0  success\n"
      "  1  the server refused the call; stderr has\n"
      "     \"authctl: CODE: message [REASON]\", e.g.\n"
      "     \"authctl: UNAUTHENTICATED: token expired [EXPIRED]\"\n"
      "  2  usage or configuration error (bad option, unreadable CA file)\n"
      "  3  transport failure: server unreachable, TLS failure or timeout\n"
      "     (UNAVAILABLE or DEADLINE_EXCEEDED, reason TRANSPORT)\n"
      "\n"
      "Example:\n"
      "  authctl register --username alice --email alice@example.com\n"
      "  TOKEN=$(authctl login --login alice --password-stdin < pw.txt)\n"
      "  printf '%s\\n' \"$TOKEN\" | authctl verify\n"
      "  AUTHD_TOKEN=$TOKEN authctl logout\n"
      "  TOKEN=$(authctl login --login alice --refresh-file ~/.authd-refresh < pw.txt)\n"
      "  TOKEN=$(authctl refresh --refresh-file ~/.authd-refresh)\n";

static const char register_usage[]
    = "usage: authctl [OPTIONS] register --username USER --email EMAIL "
      "[--password-stdin]\n"
      "\n"
      "Creates a user. Without --password-stdin the password is asked twice\n"
      "on the terminal (echo off); with it, it is the first line of stdin.\n"
      "Prints the new user on stdout:\n"
      "  user_id=... username=... email=... roles=... status=... "
      "created_at=...\n"
      "Fails with INVALID_ARGUMENT (reason names the rule, e.g. "
      "WEAK_PASSWORD)\n"
      "or ALREADY_EXISTS.\n";

static const char login_usage[]
    = "usage: authctl [OPTIONS] login --login USERNAME_OR_EMAIL "
      "[--password-stdin] [--refresh-file FILE]\n"
      "\n"
      "Opens a session. Without --password-stdin the password is asked on\n"
      "the terminal (echo off); with it, it is the first line of stdin.\n"
      "Prints the access token alone on stdout, so TOKEN=$(authctl login ...)\n"
      "works, and on stderr:\n"
      "  session_id=... user_id=... expires_at=UNIX (ISO-8601 UTC) "
      "refresh_expires_at=UNIX\n"
      "With --refresh-file FILE the refresh token is written to FILE (mode\n"
      "0600, replaced whole) for `authctl refresh`; without it, it is not shown.\n"
      "Every failure is UNAUTHENTICATED.\n";

static const char verify_usage[]
    = "usage: authctl [OPTIONS] verify [--token-stdin]\n"
      "\n"
      "Checks an access token: from AUTHD_TOKEN if set, else the first line\n"
      "of stdin (--token-stdin: always stdin). Prints on stdout:\n"
      "  user_id=... username=... roles=a,b session_id=... expires_at=UNIX\n"
      "Fails with UNAUTHENTICATED (reason e.g. EXPIRED).\n";

static const char refresh_usage[]
    = "usage: authctl [OPTIONS] refresh [--refresh-file FILE] [--token-stdin]\n"
      "\n"
      "Exchanges a refresh token for a new access token and a new refresh\n"
      "token; the one sent is used up. The refresh token comes from\n"
      "AUTHD_REFRESH_TOKEN if set, else FILE's first line, else the first\n"
      "line of stdin (--token-stdin: always stdin). Prints the access token\n"
      "on stdout; the new refresh token replaces FILE (mode 0600) when\n"
      "--refresh-file is given, else it is the second line of stdout.\n"
      "Fails with UNAUTHENTICATED (reason e.g. REFRESH_TOKEN_REUSED,\n"
      "SESSION_EXPIRED).\n";

static const char logout_usage[]
    = "usage: authctl [OPTIONS] logout [--token-stdin]\n"
      "\n"
      "Revokes the session of an access token: from AUTHD_TOKEN if set, else\n"
      "the first line of stdin (--token-stdin: always stdin). Idempotent.\n"
      "Prints nothing on stdout.\n";

/* Global options, resolved against the environment and the defaults. */
struct globals {
    const char *url;
    const char *ca;
    const char *cert;
    const char *key;
    const char *server_name;
    int timeout_ms;
    bool plaintext;
};

/*
** A command parses its arguments and reads its secrets first, so that a
** usage error is reported before any connection is made, then connects.
*/
typedef int (*command_fn)(const authd_client_options *o, int argc, char **argv);

static int usage_error(const char *help_of, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
** usage_error prints "authctl: <message>" and where to find help, and
** returns EXIT_USAGE. help_of is "" or "COMMAND ".
*/
static int usage_error(const char *help_of, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "authctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see authctl %s--help)\n", help_of);
    return EXIT_USAGE;
}

/*
** opt_value matches argv[*i] against --name VALUE or --name=VALUE.
** Returns 1 (and *val, advancing *i past VALUE) on a match, 0 if argv[*i]
** is another option, -1 if the value is missing.
*/
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);

    if (strncmp(argv[*i], name, n) != 0) {
        return 0;
    }
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') {
        return 0;
    }
    if (*i + 1 >= argc) {
        return -1;
    }
    *i += 1;
    *val = argv[*i];
    return 1;
}

static bool is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* put_safe prints a server-supplied string with control characters hidden. */
static void put_safe(FILE *f, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc((ch < 0x20 || ch == 0x7f) ? '?' : ch, f);
    }
}

static void put_roles(FILE *f, char **roles, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            fputc(',', f);
        }
        put_safe(f, roles[i]);
    }
}

static void iso_utc(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;

    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(buf, cap, "?");
    }
}

/*
** report prints a failed status as "authctl: CODE: message [REASON]" and
** returns the exit status for it.
*/
static int report(const authd_status *st)
{
    fprintf(stderr, "authctl: %s", authd_code_str(st->code));
    if (st->message[0] != '\0') {
        fprintf(stderr, ": %s", st->message);
    }
    if (st->reason[0] != '\0') {
        fprintf(stderr, " [%s]", st->reason);
    }
    fputc('\n', stderr);
    if (strcmp(st->reason, AUTHD_REASON_TRANSPORT) == 0
        && (st->code == AUTHD_UNAVAILABLE || st->code == AUTHD_DEADLINE_EXCEEDED)) {
        return EXIT_TRANSPORT;
    }
    if (strcmp(st->reason, AUTHD_REASON_CONFIG) == 0) {
        return EXIT_USAGE;
    }
    return EXIT_FAILED;
}

/* open_client connects; returns 0, or the exit status after reporting. */
static int open_client(const authd_client_options *o, authd_client **c)
{
    authd_status st;

    if (authd_client_open(o, c, &st) != AUTHD_OK) {
        return report(&st);
    }
    return 0;
}

/*
** read_line reads one line from fd byte by byte (so nothing is buffered
** beyond it), without the trailing \n or \r\n. buf holds cap bytes, of
** which at most cap-1 are text. Returns the length, -1 on a read error,
** -2 if the line is longer than cap-1 bytes, -3 at end of input with
** nothing read.
*/
static long read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    bool any = false;

    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            if (!any) {
                return -3;
            }
            break;
        }
        any = true;
        if (ch == '\n') {
            break;
        }
        if (n + 1 >= cap) {
            authd_wipe(&ch, 1);
            return -2;
        }
        buf[n++] = ch;
    }
    if (n > 0 && buf[n - 1] == '\r') {
        n--;
    }
    buf[n] = '\0';
    return (long)n;
}

/* The terminal state to put back if a signal arrives while echo is off. */
static struct termios saved_tty;
static volatile sig_atomic_t saved_tty_fd = -1;

static void restore_tty(int sig)
{
    if (saved_tty_fd >= 0) {
        tcsetattr(saved_tty_fd, TCSAFLUSH, &saved_tty);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
** prompt_secret asks for a secret on the controlling terminal with echo
** off (restored even if interrupted by a signal). Returns the length, or
** a negative value after printing why.
*/
static long prompt_secret(const char *prompt, char *buf, size_t cap)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP };
    struct sigaction sa, old[5];
    struct termios quiet;
    bool handlers = false, echo_off = false;
    long n = -1;
    int fd;

    if ((fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
        fprintf(stderr,
            "authctl: no terminal to ask for a secret on (%s); pipe it on "
            "stdin instead\n",
            strerror(errno));
        return -1;
    }
    if (tcgetattr(fd, &saved_tty) != 0) {
        fprintf(stderr, "authctl: cannot read terminal settings: %s\n", strerror(errno));
        goto out;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = restore_tty;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < 5; i++) {
        sigaction(sigs[i], NULL, &old[i]);
        if (old[i].sa_handler != SIG_IGN) { /* keep what our parent ignores */
            sigaction(sigs[i], &sa, NULL);
        }
    }
    handlers = true;
    saved_tty_fd = fd;
    quiet = saved_tty;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
        fprintf(stderr, "authctl: cannot turn echo off: %s\n", strerror(errno));
        goto out;
    }
    echo_off = true;
    if (write(fd, prompt, strlen(prompt)) < 0) {
        goto out;
    }
    n = read_line(fd, buf, cap);
    if (n == -2) {
        fprintf(stderr, "authctl: too long (at most %zu bytes)\n", cap - 1);
    } else if (n < 0) {
        fprintf(stderr, "authctl: nothing read from the terminal\n");
    }
out:
    if (echo_off) {
        tcsetattr(fd, TCSAFLUSH, &saved_tty);
        if (write(fd, "\n", 1) < 0) {
            /* nothing to do: the prompt line stays unterminated */
        }
    }
    saved_tty_fd = -1;
    if (handlers) {
        for (size_t i = 0; i < 5; i++) {
            sigaction(sigs[i], &old[i], NULL);
        }
    }
    close(fd);
    return n;
}

/*
** read_password fills buf (MAX_PASSWORD + 1 bytes) from stdin or the
** terminal; confirm asks twice and compares. Returns 0 or an exit status.
*/
static int read_password(bool from_stdin, bool confirm, char *buf, size_t cap)
{
    char again[MAX_PASSWORD + 1];
    long n;
    int rc = EXIT_USAGE;

    if (from_stdin) {
        n = read_line(STDIN_FILENO, buf, cap);
        if (n == -2) {
            fprintf(stderr, "authctl: password longer than %d bytes\n", MAX_PASSWORD);
        } else if (n == -3) {
            fprintf(stderr, "authctl: no password on stdin\n");
        } else if (n < 0) {
            fprintf(stderr, "authctl: reading stdin: %s\n", strerror(errno));
        } else {
            rc = 0;
        }
        goto out;
    }
    if (prompt_secret("Password: ", buf, cap) < 0) {
        goto out;
    }
    if (confirm) {
        if (prompt_secret("Repeat password: ", again, sizeof(again)) < 0) {
            goto out;
        }
        if (strcmp(buf, again) != 0) {
            fprintf(stderr, "authctl: the passwords do not match\n");
            goto out;
        }
    }
    rc = 0;
out:
    authd_wipe(again, sizeof(again));
    if (rc != 0) {
        authd_wipe(buf, cap);
    }
    return rc;
}

/*
** read_token fills buf from $AUTHD_TOKEN, or (if unset, or from_stdin) the
** first line of stdin, asking with echo off if stdin is a terminal.
** Surrounding blanks are dropped (pasted tokens). Returns 0 or an exit
** status.
*/
/* read_named_token reads a token from the environment variable env_name
 * if set (and not from_stdin), else from the terminal or the first line
 * of stdin; what names it in prompts and errors. */
static int read_named_token(
    const char *env_name, const char *what, bool from_stdin, char *buf, size_t cap)
{
    const char *env = getenv(env_name);
    char prompt[64];
    size_t start = 0, len;
    long n;

    if (!from_stdin && env != NULL && env[0] != '\0') {
        if (strlen(env) >= cap) {
            fprintf(stderr, "authctl: %s is too long\n", env_name);
            return EXIT_USAGE;
        }
        memcpy(buf, env, strlen(env) + 1);
        n = (long)strlen(env);
    } else if (isatty(STDIN_FILENO)) {
        snprintf(prompt, sizeof(prompt), "%c%s: ", what[0] - 'a' + 'A', what + 1);
        n = prompt_secret(prompt, buf, cap);
    } else {
        n = read_line(STDIN_FILENO, buf, cap);
        if (n == -2) {
            fprintf(stderr, "authctl: token longer than %zu bytes\n", cap - 1);
        } else if (n == -1) {
            fprintf(stderr, "authctl: reading stdin: %s\n", strerror(errno));
        }
    }
    if (n < 0) {
        n = 0;
        buf[0] = '\0';
    }
    len = (size_t)n;
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t')) {
        len--;
    }
    while (start < len && (buf[start] == ' ' || buf[start] == '\t')) {
        start++;
    }
    memmove(buf, buf + start, len - start);
    buf[len - start] = '\0';
    if (buf[0] == '\0') {
        fprintf(stderr, "authctl: no %s: set %s or give it as the first line of stdin\n", what,
            env_name);
        return EXIT_USAGE;
    }
    return 0;
}

static int read_token(bool from_stdin, char *buf, size_t cap)
{
    return read_named_token("AUTHD_TOKEN", "access token", from_stdin, buf, cap);
}

/* read_token_file reads the first line of a token file into buf. */
static int read_token_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    long n;

    if (fd < 0) {
        fprintf(stderr, "authctl: %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    n = read_line(fd, buf, cap);
    close(fd);
    if (n <= 0) {
        fprintf(stderr, "authctl: %s: no token on its first line\n", path);
        buf[0] = '\0';
        return EXIT_USAGE;
    }
    return 0;
}

/* write_token_file replaces path with token + "\n", mode 0600, through a
 * new file renamed over it, so a crash leaves the old token or the new
 * one, never half of one. */
static int write_token_file(const char *path, const char *token)
{
    char tmp[4096];
    size_t len = strlen(token);
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, "authctl: %s: path too long\n", path);
        return EXIT_USAGE;
    }
    (void)unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write(fd, token, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) != 0
        || close(fd) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "authctl: writing %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            (void)unlink(tmp);
        }
        return EXIT_USAGE;
    }
    return 0;
}

static int cmd_register(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__RegisterRequest req = AUTHD__V1__REGISTER_REQUEST__INIT;
    Authd__V1__RegisterResponse *resp = NULL;
    authd_status st;
    const char *username = NULL, *email = NULL;
    char password[MAX_PASSWORD + 1];
    bool pw_stdin = false;
    int rc;

    password[0] = '\0';
    for (int i = 1; i < argc; i++) {
        int m;
        if ((m = opt_value(argc, argv, &i, "--username", &username)) == 0
            && (m = opt_value(argc, argv, &i, "--email", &email)) == 0) {
            if (strcmp(argv[i], "--password-stdin") == 0) {
                pw_stdin = true;
                continue;
            }
            rc = usage_error("register ", "register: unknown argument %s", argv[i]);
            goto out;
        }
        if (m < 0) {
            rc = usage_error("register ", "register: %s needs a value", argv[i]);
            goto out;
        }
    }
    if (username == NULL || email == NULL) {
        rc = usage_error("register ", "register: --username and --email are required");
        goto out;
    }
    if ((rc = read_password(pw_stdin, true, password, sizeof(password))) != 0) {
        goto out;
    }
    req.username = (char *)username;
    req.email = (char *)email;
    req.password = password;
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_register(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    if (resp->user != NULL) {
        const Authd__V1__User *u = resp->user;
        const ProtobufCEnumValue *sv = protobuf_c_enum_descriptor_get_value(
            &authd__v1__user_status__descriptor, (int)u->status);
        const char *sname = sv != NULL ? sv->name : "UNKNOWN";
        if (strncmp(sname, "USER_STATUS_", 12) == 0) {
            sname += 12;
        }
        printf("user_id=");
        put_safe(stdout, u->id);
        printf(" username=");
        put_safe(stdout, u->username);
        printf(" email=");
        put_safe(stdout, u->email);
        printf(" roles=");
        put_roles(stdout, u->roles, u->n_roles);
        printf(" status=%s created_at=%lld\n", sname, (long long)u->created_at);
    }
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(password, sizeof(password));
    if (resp != NULL) {
        authd__v1__register_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static int cmd_login(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__LoginResponse *resp = NULL;
    authd_status st;
    const char *login = NULL;
    const char *refresh_file = NULL;
    char password[MAX_PASSWORD + 1];
    char when[32];
    bool pw_stdin = false;
    int rc;

    password[0] = '\0';
    for (int i = 1; i < argc; i++) {
        int m = opt_value(argc, argv, &i, "--login", &login);
        if (m == 0) {
            m = opt_value(argc, argv, &i, "--refresh-file", &refresh_file);
        }
        if (m == 0) {
            if (strcmp(argv[i], "--password-stdin") == 0) {
                pw_stdin = true;
                continue;
            }
            rc = usage_error("login ", "login: unknown argument %s", argv[i]);
            goto out;
        }
        if (m < 0) {
            rc = usage_error("login ", "login: %s needs a value", argv[i]);
            goto out;
        }
    }
    if (login == NULL) {
        rc = usage_error("login ", "login: --login is required");
        goto out;
    }
    if ((rc = read_password(pw_stdin, false, password, sizeof(password))) != 0) {
        goto out;
    }
    req.login = (char *)login;
    req.password = password;
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_login(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    if (refresh_file != NULL && resp->refresh_token != NULL && resp->refresh_token[0] != '\0'
        && (rc = write_token_file(refresh_file, resp->refresh_token)) != 0) {
        goto out;
    }
    put_safe(stdout, resp->access_token);
    fputc('\n', stdout);
    iso_utc(resp->expires_at, when, sizeof(when));
    fprintf(stderr, "session_id=");
    put_safe(stderr, resp->session_id);
    fprintf(stderr, " user_id=");
    put_safe(stderr, resp->user != NULL ? resp->user->id : "");
    fprintf(stderr, " expires_at=%lld (%s) refresh_expires_at=%lld\n", (long long)resp->expires_at,
        when, (long long)resp->refresh_expires_at);
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(password, sizeof(password));
    if (resp != NULL) {
        if (resp->access_token != NULL) {
            authd_wipe(resp->access_token, strlen(resp->access_token));
        }
        if (resp->refresh_token != NULL) {
            authd_wipe(resp->refresh_token, strlen(resp->refresh_token));
        }
        authd__v1__login_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static int cmd_refresh(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__RefreshRequest req = AUTHD__V1__REFRESH_REQUEST__INIT;
    Authd__V1__RefreshResponse *resp = NULL;
    authd_status st;
    const char *refresh_file = NULL;
    char token[MAX_TOKEN + 1];
    char when[32];
    bool from_stdin = false;
    int rc;

    token[0] = '\0';
    for (int i = 1; i < argc; i++) {
        int m = opt_value(argc, argv, &i, "--refresh-file", &refresh_file);
        if (m == 0 && strcmp(argv[i], "--token-stdin") == 0) {
            from_stdin = true;
            continue;
        }
        if (m == 0) {
            rc = usage_error("refresh ", "refresh: unknown argument %s", argv[i]);
            goto out;
        }
        if (m < 0) {
            rc = usage_error("refresh ", "refresh: %s needs a value", argv[i]);
            goto out;
        }
    }
    /* From AUTHD_REFRESH_TOKEN, else the file, else stdin. */
    const char *env = getenv("AUTHD_REFRESH_TOKEN");
    if (refresh_file != NULL && !from_stdin && (env == NULL || env[0] == '\0')) {
        rc = read_token_file(refresh_file, token, sizeof(token));
    } else {
        rc = read_named_token(
            "AUTHD_REFRESH_TOKEN", "refresh token", from_stdin, token, sizeof(token));
    }
    if (rc != 0) {
        goto out;
    }
    req.refresh_token = token;
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_refresh(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    if (refresh_file != NULL && (rc = write_token_file(refresh_file, resp->refresh_token)) != 0) {
        goto out;
    }
    put_safe(stdout, resp->access_token);
    fputc('\n', stdout);
    if (refresh_file == NULL) {
        put_safe(stdout, resp->refresh_token);
        fputc('\n', stdout);
    }
    iso_utc(resp->expires_at, when, sizeof(when));
    fprintf(stderr, "session_id=");
    put_safe(stderr, resp->session_id);
    fprintf(stderr, " expires_at=%lld (%s) refresh_expires_at=%lld\n", (long long)resp->expires_at,
        when, (long long)resp->refresh_expires_at);
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    if (resp != NULL) {
        if (resp->access_token != NULL) {
            authd_wipe(resp->access_token, strlen(resp->access_token));
        }
        if (resp->refresh_token != NULL) {
            authd_wipe(resp->refresh_token, strlen(resp->refresh_token));
        }
        authd__v1__refresh_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* token_options parses the options of verify and logout. */
static int token_options(const char *cmd, int argc, char **argv, bool *from_stdin)
{
    char help_of[16];

    snprintf(help_of, sizeof(help_of), "%s ", cmd);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--token-stdin") == 0) {
            *from_stdin = true;
        } else {
            return usage_error(help_of, "%s: unknown argument %s", cmd, argv[i]);
        }
    }
    return 0;
}

static int cmd_verify(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    authd_status st;
    char token[MAX_TOKEN + 1];
    bool from_stdin = false;
    int rc;

    token[0] = '\0';
    if ((rc = token_options("verify", argc, argv, &from_stdin)) != 0
        || (rc = read_token(from_stdin, token, sizeof(token))) != 0) {
        goto out;
    }
    req.access_token = token;
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_verify(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    printf("user_id=");
    put_safe(stdout, resp->user_id);
    printf(" username=");
    put_safe(stdout, resp->username);
    printf(" roles=");
    put_roles(stdout, resp->roles, resp->n_roles);
    printf(" session_id=");
    put_safe(stdout, resp->session_id);
    printf(" expires_at=%lld\n", (long long)resp->expires_at);
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    if (resp != NULL) {
        authd__v1__verify_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static int cmd_logout(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__LogoutRequest req = AUTHD__V1__LOGOUT_REQUEST__INIT;
    Authd__V1__LogoutResponse *resp = NULL;
    authd_status st;
    char token[MAX_TOKEN + 1];
    bool from_stdin = false;
    int rc;

    token[0] = '\0';
    if ((rc = token_options("logout", argc, argv, &from_stdin)) != 0
        || (rc = read_token(from_stdin, token, sizeof(token))) != 0) {
        goto out;
    }
    req.access_token = token;
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_logout(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    fprintf(stderr, "authctl: logged out\n");
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    if (resp != NULL) {
        authd__v1__logout_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static const char me_usage[]
    = "usage: authctl [OPTIONS] me [--token-stdin]\n"
      "\n"
      "Shows the profile of the access token's own user and its session:\n"
      "the token (from AUTHD_TOKEN if set, else the first line of stdin) is\n"
      "sent as the request envelope's authorization. Prints on stdout:\n"
      "  user_id=... username=... email=... roles=a,b session_id=...\n"
      "  session_expires_at=UNIX_SECONDS\n";

static const char logout_all_usage[]
    = "usage: authctl [OPTIONS] logout-all [--token-stdin]\n"
      "\n"
      "Revokes every session of the access token's user, this one included\n"
      "(token from AUTHD_TOKEN if set, else the first line of stdin).\n"
      "Prints the number of sessions revoked.\n";

static const char health_usage[]
    = "usage: authctl [OPTIONS] health\n"
      "\n"
      "Asks the server whether it is ready to serve (the Health RPC: no token\n"
      "needed). Prints SERVING, NOT_SERVING or DRAINING on stdout, followed by\n"
      "failing=CHECK,... when a check fails (store, keys, listeners, http,\n"
      "draining). Exit status 0 only when SERVING, 1 otherwise (3 when the\n"
      "server cannot be reached): a container HEALTHCHECK can call it as is.\n";

/* cmd_health: the Health RPC; exit 0 only for SERVING (HEALTHCHECK). */
static int cmd_health(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__HealthRequest req = AUTHD__V1__HEALTH_REQUEST__INIT;
    Authd__V1__HealthResponse *resp = NULL;
    authd_status st;
    int rc;

    if (argc > 1) {
        rc = usage_error("health ", "health takes no arguments");
        goto out;
    }
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_health(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    switch (resp->status) {
    case AUTHD__V1__HEALTH_RESPONSE__STATUS__SERVING:
        printf("SERVING");
        break;
    case AUTHD__V1__HEALTH_RESPONSE__STATUS__DRAINING:
        printf("DRAINING");
        break;
    default:
        printf("NOT_SERVING");
        break;
    }
    for (size_t i = 0; i < resp->n_failing; i++) {
        printf("%s", i == 0 ? " failing=" : ",");
        put_safe(stdout, resp->failing[i]);
    }
    printf("\n");
    rc = resp->status == AUTHD__V1__HEALTH_RESPONSE__STATUS__SERVING ? EXIT_OK : EXIT_FAILED;
out:
    authd_client_close(c);
    if (resp != NULL) {
        authd__v1__health_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static const char passwd_usage[]
    = "usage: authctl [OPTIONS] passwd [--password-stdin]\n"
      "\n"
      "Changes the password of the access token's user (token from\n"
      "AUTHD_TOKEN, which must be set). The current password and the new one\n"
      "are asked on the terminal (echo off; the new one twice), or with\n"
      "--password-stdin are the first and second lines of stdin. Every other\n"
      "session of the user is revoked; this one lives on.\n";

static int cmd_me(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__MeRequest req = AUTHD__V1__ME_REQUEST__INIT;
    Authd__V1__MeResponse *resp = NULL;
    authd_status st;
    char token[MAX_TOKEN + 1];
    bool from_stdin = false;
    int rc;

    token[0] = '\0';
    if ((rc = token_options("me", argc, argv, &from_stdin)) != 0
        || (rc = read_token(from_stdin, token, sizeof(token))) != 0) {
        goto out;
    }
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_me_as(c, token, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    printf("user_id=");
    put_safe(stdout, resp->user != NULL ? resp->user->id : "");
    printf(" username=");
    put_safe(stdout, resp->user != NULL ? resp->user->username : "");
    printf(" email=");
    put_safe(stdout, resp->user != NULL ? resp->user->email : "");
    printf(" roles=");
    if (resp->user != NULL) {
        put_roles(stdout, resp->user->roles, resp->user->n_roles);
    }
    printf(" session_id=");
    put_safe(stdout, resp->session != NULL ? resp->session->id : "");
    printf(" session_expires_at=%lld\n",
        (long long)(resp->session != NULL ? resp->session->expires_at : 0));
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    if (resp != NULL) {
        authd__v1__me_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static int cmd_logout_all(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__LogoutAllRequest req = AUTHD__V1__LOGOUT_ALL_REQUEST__INIT;
    Authd__V1__LogoutAllResponse *resp = NULL;
    authd_status st;
    char token[MAX_TOKEN + 1];
    bool from_stdin = false;
    int rc;

    token[0] = '\0';
    if ((rc = token_options("logout-all", argc, argv, &from_stdin)) != 0
        || (rc = read_token(from_stdin, token, sizeof(token))) != 0) {
        goto out;
    }
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_logout_all_as(c, token, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    printf("sessions_revoked=%u\n", (unsigned)resp->sessions_revoked);
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    if (resp != NULL) {
        authd__v1__logout_all_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static int cmd_passwd(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__ChangePasswordRequest req = AUTHD__V1__CHANGE_PASSWORD_REQUEST__INIT;
    Authd__V1__ChangePasswordResponse *resp = NULL;
    authd_status st;
    char token[MAX_TOKEN + 1];
    char current[MAX_PASSWORD + 1], next[MAX_PASSWORD + 1];
    const char *env = getenv("AUTHD_TOKEN");
    bool pw_stdin = false;
    int rc;

    token[0] = current[0] = next[0] = '\0';
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--password-stdin") == 0) {
            pw_stdin = true;
        } else {
            rc = usage_error("passwd ", "passwd: unknown argument %s", argv[i]);
            goto out;
        }
    }
    if (env == NULL || env[0] == '\0') {
        rc = usage_error("passwd ", "passwd: set AUTHD_TOKEN to your access token");
        goto out;
    }
    if ((rc = read_token(false, token, sizeof(token))) != 0) {
        goto out;
    }
    if (!pw_stdin) {
        fprintf(stderr, "Current password, then the new one twice.\n");
    }
    if ((rc = read_password(pw_stdin, false, current, sizeof(current))) != 0
        || (rc = read_password(pw_stdin, !pw_stdin, next, sizeof(next))) != 0) {
        goto out;
    }
    req.current_password = current;
    req.new_password = next;
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_change_password_as(c, token, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    fprintf(stderr, "authctl: password changed; %u other session(s) revoked\n",
        (unsigned)resp->sessions_revoked);
    rc = EXIT_OK;
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    authd_wipe(current, sizeof(current));
    authd_wipe(next, sizeof(next));
    if (resp != NULL) {
        authd__v1__change_password_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* ---- admin: the admin-only RPCs (the caller's token must carry "admin") ---- */

static const char admin_usage[]
    = "usage: authctl [OPTIONS] admin SUBCOMMAND [ARGS] [--token-stdin]\n"
      "\n"
      "Calls the admin-only RPCs. The admin's own access token comes from\n"
      "AUTHD_TOKEN if set, else the first line of stdin (--token-stdin:\n"
      "always stdin), never from arguments; it is sent as the request\n"
      "envelope's authorization. A token without the admin role gets\n"
      "PERMISSION_DENIED (exit 1). Users print one line each:\n"
      "  user_id=... username=... email=... roles=a,b status=ACTIVE|DISABLED\n"
      "  created_at=UNIX updated_at=UNIX\n"
      "\n"
      "Subcommands:\n"
      "  get-user USER_ID          print the user\n"
      "  list-users [--prefix P] [--page-size N] [--page-token T | --all]\n"
      "                            users in username order, whose username\n"
      "                            starts with P; one page of N (1 to 1000,\n"
      "                            default the server's 50), the next page's\n"
      "                            token on stderr as next_page_token=T;\n"
      "                            --all follows every page\n"
      "  set-roles USER_ID ROLE,...  replace the user's roles (\"\" = none);\n"
      "                            prints the user\n"
      "  disable USER_ID           disable the user (revokes every session)\n"
      "  enable USER_ID            enable the user again\n"
      "  delete USER_ID [--yes]    delete the user and its sessions; asks for\n"
      "                            confirmation on a terminal, and without a\n"
      "                            terminal refuses unless --yes; prints\n"
      "                            sessions_deleted=N\n"
      "  revoke-sessions USER_ID   revoke every session of the user; prints\n"
      "                            sessions_revoked=N\n"
      "  unlock USER_ID            reset the user's login throttle\n"
      "\n"
      "The last active admin cannot remove their own admin role or disable or\n"
      "delete themselves (FAILED_PRECONDITION).\n"
      "\n"
      "Example:\n"
      "  export AUTHD_TOKEN=$(authctl login --login root)\n"
      "  authctl admin list-users --prefix al --all\n"
      "  authctl admin set-roles 0123...cdef admin,auditor\n";

static const char jwks_usage[]
    = "usage: authctl [OPTIONS] jwks\n"
      "\n"
      "Prints the server's JSON Web Key Set (the GetJwks RPC: no token\n"
      "needed): the public ES256 keys that verify its tokens, as one line of\n"
      "JSON, {\"keys\":[]} when it signs with HS256 only.\n";

/* put_user prints a user as register does, plus updated_at, and a newline. */
static void put_user(FILE *f, const Authd__V1__User *u)
{
    const ProtobufCEnumValue *sv
        = protobuf_c_enum_descriptor_get_value(&authd__v1__user_status__descriptor, (int)u->status);
    const char *sname = sv != NULL ? sv->name : "UNKNOWN";

    if (strncmp(sname, "USER_STATUS_", 12) == 0) {
        sname += 12;
    }
    fprintf(f, "user_id=");
    put_safe(f, u->id);
    fprintf(f, " username=");
    put_safe(f, u->username);
    fprintf(f, " email=");
    put_safe(f, u->email);
    fprintf(f, " roles=");
    put_roles(f, u->roles, u->n_roles);
    fprintf(f, " status=%s created_at=%lld updated_at=%lld\n", sname, (long long)u->created_at,
        (long long)u->updated_at);
}

/* The parsed arguments of an admin subcommand. */
struct admin_args {
    const char *sub;
    const char *user_id; /* the first positional argument, if any */
    const char *roles; /* set-roles: the second one */
    const char *prefix;
    const char *page_token;
    uint32_t page_size;
    bool all;
    bool yes;
    bool token_stdin;
};

/* split_roles splits "a,b" into a malloc'ed array of pointers into s
 * (which it modifies); "" gives none. Returns 0, or EXIT_USAGE for an
 * empty element such as "a,,b". */
static int split_roles(char *s, char ***out, size_t *n)
{
    size_t cap = 1;
    char **v;

    *out = NULL;
    *n = 0;
    if (s[0] == '\0') {
        return 0;
    }
    for (const char *p = s; *p != '\0'; p++) {
        cap += *p == ',';
    }
    if ((v = calloc(cap, sizeof(*v))) == NULL) {
        fprintf(stderr, "authctl: out of memory\n");
        return EXIT_FAILED;
    }
    for (char *p = s;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        if (p[0] == '\0') {
            free(v);
            return usage_error("admin ", "admin set-roles: an empty role in the list");
        }
        v[(*n)++] = p;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *out = v;
    return 0;
}

/*
** admin_parse checks the subcommand's arguments (before anything is read
** or sent). Returns 0 or EXIT_USAGE after saying why.
*/
static int admin_parse(int argc, char **argv, struct admin_args *a)
{
    static const char *const subs[] = { "get-user", "list-users", "set-roles", "disable", "enable",
        "delete", "revoke-sessions", "unlock", NULL };
    const char *pos[2] = { NULL, NULL };
    const char *size = NULL;
    size_t npos = 0, want;
    bool known = false;

    if (argc < 2) {
        return usage_error("admin ", "admin: which subcommand?");
    }
    a->sub = argv[1];
    for (size_t k = 0; subs[k] != NULL; k++) {
        known = known || strcmp(subs[k], a->sub) == 0;
    }
    if (!known) {
        return usage_error("admin ", "admin: unknown subcommand %s", a->sub);
    }
    for (int i = 2; i < argc; i++) {
        bool list = strcmp(a->sub, "list-users") == 0;
        int m = 0;
        if (strcmp(argv[i], "--token-stdin") == 0) {
            a->token_stdin = true;
            continue;
        }
        if (strcmp(a->sub, "delete") == 0 && strcmp(argv[i], "--yes") == 0) {
            a->yes = true;
            continue;
        }
        if (list && strcmp(argv[i], "--all") == 0) {
            a->all = true;
            continue;
        }
        if (list
            && ((m = opt_value(argc, argv, &i, "--prefix", &a->prefix)) != 0
                || (m = opt_value(argc, argv, &i, "--page-size", &size)) != 0
                || (m = opt_value(argc, argv, &i, "--page-token", &a->page_token)) != 0)) {
            if (m < 0) {
                return usage_error("admin ", "admin %s: %s needs a value", a->sub, argv[i]);
            }
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            return usage_error("admin ", "admin %s: unknown option %s", a->sub, argv[i]);
        }
        if (npos == 2) {
            return usage_error("admin ", "admin %s: too many arguments", a->sub);
        }
        pos[npos++] = argv[i];
    }
    want = strcmp(a->sub, "list-users") == 0 ? 0 : strcmp(a->sub, "set-roles") == 0 ? 2 : 1;
    if (npos != want) {
        return usage_error("admin ", "admin %s: want %s", a->sub,
            want == 0       ? "no USER_ID"
                : want == 1 ? "USER_ID"
                            : "USER_ID ROLE,... (\"\" for none)");
    }
    a->user_id = pos[0];
    a->roles = pos[1];
    if (a->user_id != NULL && a->user_id[0] == '\0') {
        return usage_error("admin ", "admin %s: empty USER_ID", a->sub);
    }
    if (a->all && a->page_token != NULL) {
        return usage_error("admin ", "admin list-users: --all or --page-token, not both");
    }
    if (size != NULL) {
        char *end;
        long v;
        errno = 0;
        v = strtol(size, &end, 10);
        if (errno != 0 || end == size || *end != '\0' || v < 1 || v > 1000) {
            return usage_error("admin ", "admin list-users: --page-size %s: want 1 to 1000", size);
        }
        a->page_size = (uint32_t)v;
    }
    return 0;
}

/*
** confirm_delete asks on the terminal before a delete. Without a terminal
** (stdin or stderr not one) nobody can be asked, so it refuses: scripts
** say --yes. Returns 0 to go ahead, else an exit status.
*/
static int confirm_delete(const char *user_id)
{
    char answer[16];
    char prompt[160];
    int fd;
    long n;

    if (!isatty(STDIN_FILENO) || !isatty(STDERR_FILENO)) {
        return usage_error("admin ", "admin delete: no terminal to confirm on; add --yes");
    }
    if ((fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
        return usage_error("admin ", "admin delete: cannot open the terminal; add --yes");
    }
    snprintf(prompt, sizeof(prompt), "Delete user %.64s and all its sessions? [y/N] ", user_id);
    n = write(fd, prompt, strlen(prompt)) < 0 ? -1 : read_line(fd, answer, sizeof(answer));
    close(fd);
    if (n < 0 || (strcmp(answer, "y") != 0 && strcmp(answer, "yes") != 0)) {
        fprintf(stderr, "authctl: not deleted\n");
        return EXIT_FAILED;
    }
    return 0;
}

/* admin_list runs list-users: one page, or every page with --all. */
static int admin_list(authd_client *c, const char *token, const struct admin_args *a)
{
    Authd__V1__ListUsersRequest req = AUTHD__V1__LIST_USERS_REQUEST__INIT;
    Authd__V1__ListUsersResponse *resp = NULL;
    authd_status st;
    char *next = NULL; /* the page token in req, once past the first page */
    int rc = EXIT_OK;

    req.prefix = (char *)(a->prefix != NULL ? a->prefix : "");
    req.page_size = a->page_size;
    req.page_token = (char *)(a->page_token != NULL ? a->page_token : "");
    for (;;) {
        char *fresh = NULL;
        if (authd_client_list_users_as(c, token, &req, &resp, &st) != AUTHD_OK) {
            rc = report(&st);
            goto out;
        }
        for (size_t i = 0; i < resp->n_users; i++) {
            put_user(stdout, resp->users[i]);
        }
        if (resp->next_page_token != NULL && resp->next_page_token[0] != '\0') {
            /* A token that does not move on would loop for ever. */
            if (strcmp(resp->next_page_token, req.page_token) == 0) {
                fprintf(stderr, "authctl: the server repeated a page token\n");
                rc = EXIT_FAILED;
                goto out;
            }
            if ((fresh = strdup(resp->next_page_token)) == NULL) {
                fprintf(stderr, "authctl: out of memory\n");
                rc = EXIT_FAILED;
                goto out;
            }
        }
        /* req.page_token may point into next: replace it only now. */
        free(next);
        next = fresh;
        authd__v1__list_users_response__free_unpacked(resp, NULL);
        resp = NULL;
        if (next == NULL) {
            break;
        }
        if (!a->all) {
            fprintf(stderr, "next_page_token=");
            put_safe(stderr, next);
            fputc('\n', stderr);
            break;
        }
        req.page_token = next;
    }
out:
    free(next);
    if (resp != NULL) {
        authd__v1__list_users_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* admin_by_id runs the subcommands whose request is a user id alone. */
static int admin_by_id(authd_client *c, const char *token, const struct admin_args *a)
{
    authd_status st;
    ProtobufCMessage *resp = NULL;
    char *id = (char *)a->user_id;
    int rc;

    if (strcmp(a->sub, "get-user") == 0) {
        Authd__V1__GetUserRequest req = AUTHD__V1__GET_USER_REQUEST__INIT;
        Authd__V1__GetUserResponse *r = NULL;
        req.user_id = id;
        rc = authd_client_get_user_as(c, token, &req, &r, &st);
        if (rc == AUTHD_OK && r->user != NULL) {
            put_user(stdout, r->user);
        }
        resp = r != NULL ? &r->base : NULL;
    } else if (strcmp(a->sub, "disable") == 0) {
        Authd__V1__DisableUserRequest req = AUTHD__V1__DISABLE_USER_REQUEST__INIT;
        Authd__V1__DisableUserResponse *r = NULL;
        req.user_id = id;
        rc = authd_client_disable_user_as(c, token, &req, &r, &st);
        resp = r != NULL ? &r->base : NULL;
    } else if (strcmp(a->sub, "enable") == 0) {
        Authd__V1__EnableUserRequest req = AUTHD__V1__ENABLE_USER_REQUEST__INIT;
        Authd__V1__EnableUserResponse *r = NULL;
        req.user_id = id;
        rc = authd_client_enable_user_as(c, token, &req, &r, &st);
        resp = r != NULL ? &r->base : NULL;
    } else if (strcmp(a->sub, "delete") == 0) {
        Authd__V1__DeleteUserRequest req = AUTHD__V1__DELETE_USER_REQUEST__INIT;
        Authd__V1__DeleteUserResponse *r = NULL;
        req.user_id = id;
        rc = authd_client_delete_user_as(c, token, &req, &r, &st);
        if (rc == AUTHD_OK) {
            printf("sessions_deleted=%u\n", (unsigned)r->sessions_deleted);
        }
        resp = r != NULL ? &r->base : NULL;
    } else if (strcmp(a->sub, "revoke-sessions") == 0) {
        Authd__V1__RevokeSessionsRequest req = AUTHD__V1__REVOKE_SESSIONS_REQUEST__INIT;
        Authd__V1__RevokeSessionsResponse *r = NULL;
        req.user_id = id;
        rc = authd_client_revoke_sessions_as(c, token, &req, &r, &st);
        if (rc == AUTHD_OK) {
            printf("sessions_revoked=%u\n", (unsigned)r->sessions_revoked);
        }
        resp = r != NULL ? &r->base : NULL;
    } else {
        Authd__V1__UnlockUserRequest req = AUTHD__V1__UNLOCK_USER_REQUEST__INIT;
        Authd__V1__UnlockUserResponse *r = NULL;
        req.user_id = id;
        rc = authd_client_unlock_user_as(c, token, &req, &r, &st);
        resp = r != NULL ? &r->base : NULL;
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    if (rc != AUTHD_OK) {
        return report(&st);
    }
    if (strcmp(a->sub, "disable") == 0 || strcmp(a->sub, "enable") == 0
        || strcmp(a->sub, "unlock") == 0) {
        fprintf(stderr, "authctl: user ");
        put_safe(stderr, id);
        fprintf(stderr, " %s\n",
            a->sub[0] == 'd'       ? "disabled"
                : a->sub[0] == 'e' ? "enabled"
                                   : "unlocked");
    }
    return EXIT_OK;
}

/* admin_set_roles replaces the user's roles and prints the user. */
static int admin_set_roles(authd_client *c, const char *token, const struct admin_args *a)
{
    Authd__V1__SetRolesRequest req = AUTHD__V1__SET_ROLES_REQUEST__INIT;
    Authd__V1__SetRolesResponse *resp = NULL;
    authd_status st;
    char *list = strdup(a->roles);
    int rc;

    if (list == NULL) {
        fprintf(stderr, "authctl: out of memory\n");
        return EXIT_FAILED;
    }
    if ((rc = split_roles(list, &req.roles, &req.n_roles)) != 0) {
        goto out;
    }
    req.user_id = (char *)a->user_id;
    if (authd_client_set_roles_as(c, token, &req, &resp, &st) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    if (resp->user != NULL) {
        put_user(stdout, resp->user);
    }
    rc = EXIT_OK;
out:
    free(req.roles);
    free(list);
    if (resp != NULL) {
        authd__v1__set_roles_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/*
** cmd_admin: arguments are checked first (exit 2 before anything is read
** or sent), then the token is read, a delete is confirmed, and the call
** made.
*/
static int cmd_admin(const authd_client_options *o, int argc, char **argv)
{
    struct admin_args a = { 0 };
    authd_client *c = NULL;
    char token[MAX_TOKEN + 1];
    int rc;

    token[0] = '\0';
    if ((rc = admin_parse(argc, argv, &a)) != 0) {
        goto out;
    }
    if (strcmp(a.sub, "set-roles") == 0) {
        /* An empty element is a usage error: find it before the token. */
        char *copy = strdup(a.roles);
        char **v = NULL;
        size_t n;
        rc = copy == NULL ? EXIT_FAILED : split_roles(copy, &v, &n);
        free(v);
        free(copy);
        if (rc != 0) {
            goto out;
        }
    }
    if ((rc = read_token(a.token_stdin, token, sizeof(token))) != 0) {
        goto out;
    }
    if (strcmp(a.sub, "delete") == 0 && !a.yes && (rc = confirm_delete(a.user_id)) != 0) {
        goto out;
    }
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if (strcmp(a.sub, "list-users") == 0) {
        rc = admin_list(c, token, &a);
    } else if (strcmp(a.sub, "set-roles") == 0) {
        rc = admin_set_roles(c, token, &a);
    } else {
        rc = admin_by_id(c, token, &a);
    }
out:
    authd_client_close(c);
    authd_wipe(token, sizeof(token));
    return rc;
}

/* cmd_jwks: GetJwks, the document printed as the server sent it. */
static int cmd_jwks(const authd_client_options *o, int argc, char **argv)
{
    authd_client *c = NULL;
    Authd__V1__GetJwksRequest req = AUTHD__V1__GET_JWKS_REQUEST__INIT;
    Authd__V1__GetJwksResponse *resp = NULL;
    authd_status st;
    int rc;

    (void)argv;
    if (argc > 1) {
        rc = usage_error("jwks ", "jwks takes no arguments");
        goto out;
    }
    if ((rc = open_client(o, &c)) != 0) {
        goto out;
    }
    if ((rc = authd_client_get_jwks(c, &req, &resp, &st)) != AUTHD_OK) {
        rc = report(&st);
        goto out;
    }
    put_safe(stdout, resp->jwks);
    printf("\n");
    rc = EXIT_OK;
out:
    authd_client_close(c);
    if (resp != NULL) {
        authd__v1__get_jwks_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static const struct command {
    const char *name;
    command_fn fn;
    const char *usage;
} commands[] = {
    { "register", cmd_register, register_usage },
    { "login", cmd_login, login_usage },
    { "verify", cmd_verify, verify_usage },
    { "logout", cmd_logout, logout_usage },
    { "refresh", cmd_refresh, refresh_usage },
    { "me", cmd_me, me_usage },
    { "passwd", cmd_passwd, passwd_usage },
    { "logout-all", cmd_logout_all, logout_all_usage },
    { "health", cmd_health, health_usage },
    { "admin", cmd_admin, admin_usage },
    { "jwks", cmd_jwks, jwks_usage },
    { NULL, NULL, NULL },
};

static const struct command *find_command(const char *name)
{
    for (const struct command *k = commands; k->name != NULL; k++) {
        if (strcmp(k->name, name) == 0) {
            return k;
        }
    }
    return NULL;
}

static const char *env_or(const char *opt, const char *var, const char *dflt)
{
    const char *v;

    if (opt != NULL) {
        return opt;
    }
    v = getenv(var);
    return (v != NULL && v[0] != '\0') ? v : dflt;
}

/*
** parse_globals consumes the options before the command and resolves them
** against the environment. Returns the index of the command (argc if
** none), or -1 after a usage error, -2 after printing the help or the
** version.
*/
static int parse_globals(int argc, char **argv, struct globals *g)
{
    const char *timeout = NULL;
    int i;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        int m;
        if (is_help(argv[i])) {
            fputs(main_usage, stdout);
            return -2;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("authctl %s\n", AUTHD_VERSION);
            return -2;
        }
        if (strcmp(argv[i], "--plaintext") == 0) {
            g->plaintext = true;
            continue;
        }
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if ((m = opt_value(argc, argv, &i, "--url", &g->url)) == 0
            && (m = opt_value(argc, argv, &i, "--ca", &g->ca)) == 0
            && (m = opt_value(argc, argv, &i, "--cert", &g->cert)) == 0
            && (m = opt_value(argc, argv, &i, "--key", &g->key)) == 0
            && (m = opt_value(argc, argv, &i, "--server-name", &g->server_name)) == 0
            && (m = opt_value(argc, argv, &i, "--timeout", &timeout)) == 0) {
            usage_error("", "unknown option %s", argv[i]);
            return -1;
        }
        if (m < 0) {
            usage_error("", "%s needs a value", argv[i]);
            return -1;
        }
    }
    if (timeout != NULL) {
        char *end;
        long v;
        errno = 0;
        v = strtol(timeout, &end, 10);
        if (errno != 0 || end == timeout || *end != '\0' || v < 1 || v > 3600000) {
            usage_error("", "--timeout %s: want milliseconds, 1 to 3600000", timeout);
            return -1;
        }
        g->timeout_ms = (int)v;
    }
    g->url = env_or(g->url, "AUTHD_URL", DEFAULT_URL);
    g->ca = env_or(g->ca, "AUTHD_CA", DEFAULT_CA);
    g->cert = env_or(g->cert, "AUTHD_CERT", NULL);
    g->key = env_or(g->key, "AUTHD_KEY", NULL);
    if ((g->cert == NULL) != (g->key == NULL)) {
        usage_error("", "--cert and --key go together");
        return -1;
    }
    return i;
}

int main(int argc, char **argv)
{
    struct globals g = { 0 };
    authd_client_options o = { 0 };
    const struct command *cmd;
    int i, rc;

    if ((i = parse_globals(argc, argv, &g)) < 0) {
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    }
    if (i >= argc) {
        fputs(main_usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 >= argc) {
            fputs(main_usage, stdout);
            return EXIT_OK;
        }
        if ((cmd = find_command(argv[i + 1])) == NULL) {
            return usage_error("", "no command %s", argv[i + 1]);
        }
        fputs(cmd->usage, stdout);
        return EXIT_OK;
    }
    if ((cmd = find_command(argv[i])) == NULL) {
        return usage_error("", "unknown command %s", argv[i]);
    }
    for (int k = i + 1; k < argc; k++) {
        if (is_help(argv[k])) {
            fputs(cmd->usage, stdout);
            return EXIT_OK;
        }
    }

    o.url = g.url;
    o.ca_file = g.ca;
    o.cert_file = g.cert;
    o.key_file = g.key;
    o.server_name = g.server_name;
    o.timeout_ms = g.timeout_ms;
    o.allow_plaintext = g.plaintext;
    rc = cmd->fn(&o, argc - i, argv + i);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "authctl: writing stdout: %s\n", strerror(errno));
        if (rc == EXIT_OK) {
            rc = EXIT_FAILED;
        }
    }
    return rc;
}
