/*
 * durload.c — authd-durload, the load and check driver of
 * scripts/durability.sh (kill -9 crash tests, MAP_FULL) and of the Logout
 * side of scripts/soak.sh. It talks to authd only through libauthd-client,
 * so it keeps working while the server's internals change.
 *
 * Modes (one per run; see usage below):
 *
 *   wait   poll authd's --url-file, then call Verify with a junk token until
 *          authd answers UNAUTHENTICATED; print the URL.
 *   load   Register, Login (every other one followed by a Refresh) and
 *          Logout from --threads threads until SIGTERM
 *          (or --seconds): the load that scripts/durability.sh kills authd
 *          under.
 *   fill   Register until authd answers RESOURCE_EXHAUSTED/STORE_FULL, then
 *          probe Logout, Verify and Login on the full store.
 *   check  after a restart: read the journal and a dump of the store
 *          (authd-fsck --dump) and check every acknowledged write is there,
 *          and every unacknowledged Register is all there or not at all.
 *   churn  soak: Login, Verify, Logout, Verify (must be REVOKED) and a
 *          tampered token (must be refused), in a loop at --rate cycles/s,
 *          with the counts written to --stats every second.
 *
 * The journal is a text file, one record a line, fields separated by one
 * space (no field holds a space: usernames, emails, base64url passwords,
 * hex ids and JWTs):
 *
 *   R? <username> <email> <password>  a Register is about to be sent
 *   R <username> <user-id>            authd answered OK (fsynced first)
 *   R- <username> <code> <reason>     authd answered with an error: not stored
 *   L <username> <sid> <exp> <token>  a Login answered OK (fsynced first)
 *   O? <sid>                          a Logout is about to be sent
 *   O <sid>                           authd answered OK (fsynced first)
 *   R! <username> present <id>|absent what check found for an R? without R
 *   O! <sid> valid|revoked            what check found for an O? without O
 *   F? <sid>                          a Refresh of that session is about to be sent
 *   F <sid> <refresh-token>           authd answered OK with this new refresh
 *                                     token (fsynced first); check refreshes it
 *                                     (it must still be the live one) and
 *                                     journals the next F
 *   C <n>                             check number n passed up to here
 *
 * An acknowledged record is written and fdatasync'd BEFORE the operation
 * is counted, so the journal never claims less than authd acknowledged.
 * An intent line (R?, O?) is written before the request goes out, so a
 * request that was in flight at the kill always has one. The R! and O!
 * lines make later checks stricter: once an unacknowledged write has been
 * seen after a crash, it must stay as it was seen.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "authd/client_rpc.h"

#define MAX_THREADS     32
#define FIELD_MAX       2048
#define MAX_FAIL_SHOWN  30
#define PASSWORD_CHARS  22
#define DEFAULT_TIMEOUT 3000

static const char usage[]
    = "usage: authd-durload MODE [OPTIONS]\n"
      "\n"
      "Modes:\n"
      "  wait   --url-file F --ca CA [--deadline-ms N] [--pid P]\n"
      "         print authd's URL once it answers; with --pid, give up at once if\n"
      "         process P has exited\n"
      "  load   --url U --ca CA --journal J [--threads N] [--seconds S] [--tag T]\n"
      "  fill   --url U --ca CA --journal J [--tag T] [--max-users N]\n"
      "  check  --url U --ca CA --journal J --dump D [--login-sample N] [--store-full-ok]\n"
      "  churn  --url U --ca CA --seconds S --stats F [--rate R] [--users K]\n"
      "\n"
      "Common: --timeout-ms MS (deadline of each call, default 3000).\n"
      "load and fill append to the journal; check reads it (and a dump written by\n"
      "authd-fsck --dump) and appends what it resolved. Exit status: 0 all\n"
      "checks passed, 1 a check failed, 2 usage or setup error.\n";

/* ---- options ------------------------------------------------------------ */

struct opts {
    const char *mode;
    const char *url;
    const char *url_file;
    const char *ca;
    const char *journal;
    const char *dump;
    const char *stats;
    const char *tag;
    int threads;
    double seconds;
    double rate;
    int timeout_ms;
    int deadline_ms;
    int login_sample;
    int users;
    long pid; /* wait: the authd process to watch, 0 = none */
    long max_users;
    bool store_full_ok;
};

static struct opts O = {
    .tag = "0",
    .threads = 4,
    .rate = 20,
    .timeout_ms = DEFAULT_TIMEOUT,
    .deadline_ms = 30000,
    .login_sample = 20,
    .users = 8,
    .max_users = 200000,
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("authd-durload: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* rnd returns 32 random bits from a per-thread xorshift seeded once from
 * getrandom: choices of the load need no crypto, only independence. */
static uint32_t rnd(void)
{
    static _Thread_local uint32_t s;

    while (s == 0) {
        if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
            s = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)&s;
    }
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
}

/* random_password writes PASSWORD_CHARS base64url characters from the
 * kernel's CSPRNG: long and random, so no strength check refuses it. */
static void random_password(char out[PASSWORD_CHARS + 1])
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t b[PASSWORD_CHARS];

    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        die("getrandom: %s", strerror(errno));
    for (int i = 0; i < PASSWORD_CHARS; i++)
        out[i] = a[b[i] & 63];
    out[PASSWORD_CHARS] = '\0';
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s != NULL ? s : "");

    if (p == NULL)
        die("out of memory");
    return p;
}

/* transport_failure is true when the call's outcome is unknown: the
 * library, not authd, ended it (connection lost, no reply in time). Such
 * a request may or may not have been acted on. */
static bool transport_failure(const authd_status *st)
{
    return strcmp(st->reason, AUTHD_REASON_TRANSPORT) == 0
        || strcmp(st->reason, AUTHD_REASON_CLIENT) == 0;
}

static authd_client *open_client(const char *url)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;

    o.url = url;
    o.ca_file = O.ca;
    o.timeout_ms = O.timeout_ms;
    if (authd_client_open(&o, &c, &st) != AUTHD_OK)
        die("cannot connect to %s: %s [%s] %s", url, authd_code_str(st.code), st.reason,
            st.message);
    return c;
}

/* ---- journal -------------------------------------------------------------- */

static int jfd = -1;
static pthread_mutex_t jmu = PTHREAD_MUTEX_INITIALIZER;

static void journal_open(void)
{
    if (O.journal == NULL)
        die("--journal is required");
    jfd = open(O.journal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (jfd < 0)
        die("%s: %s", O.journal, strerror(errno));
}

/* jput appends one line; with sync, fdatasync's it before returning, so
 * the caller may count the operation only afterwards. A journal that
 * cannot be written ends the run: a test that loses its own records
 * proves nothing. */
static void jput(bool sync, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jput(bool sync, const char *fmt, ...)
{
    char line[4 * FIELD_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 1)
        die("journal line too long");
    line[n++] = '\n';
    pthread_mutex_lock(&jmu);
    if (write(jfd, line, (size_t)n) != n || (sync && fdatasync(jfd) != 0))
        die("journal %s: %s", O.journal, strerror(errno));
    pthread_mutex_unlock(&jmu);
}

/* ---- a small string -> index table (open addressing, FNV-1a) -------------- */

struct table {
    const char **keys;
    long *vals;
    size_t cap; /* power of two */
    size_t n;
};

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void table_grow(struct table *t);

/* table_put maps key (borrowed: must outlive the table) to val,
 * replacing an earlier value. */
static void table_put(struct table *t, const char *key, long val)
{
    size_t i;

    if ((t->n + 1) * 2 > t->cap)
        table_grow(t);
    for (i = fnv(key) & (t->cap - 1); t->keys[i] != NULL; i = (i + 1) & (t->cap - 1)) {
        if (strcmp(t->keys[i], key) == 0) {
            t->vals[i] = val;
            return;
        }
    }
    t->keys[i] = key;
    t->vals[i] = val;
    t->n++;
}

static long table_get(const struct table *t, const char *key)
{
    if (t->cap == 0)
        return -1;
    for (size_t i = fnv(key) & (t->cap - 1); t->keys[i] != NULL; i = (i + 1) & (t->cap - 1)) {
        if (strcmp(t->keys[i], key) == 0)
            return t->vals[i];
    }
    return -1;
}

static void table_grow(struct table *t)
{
    struct table n = { 0 };

    n.cap = t->cap ? t->cap * 2 : 1024;
    n.keys = calloc(n.cap, sizeof *n.keys);
    n.vals = calloc(n.cap, sizeof *n.vals);
    if (n.keys == NULL || n.vals == NULL)
        die("out of memory");
    for (size_t i = 0; i < t->cap; i++) {
        if (t->keys[i] != NULL)
            table_put(&n, t->keys[i], t->vals[i]);
    }
    free(t->keys);
    free(t->vals);
    *t = n;
}

/* ---- what the journal says ------------------------------------------------ */

enum reg_state { REG_INTENT, REG_ACKED, REG_REFUSED };
enum resolved { RES_NONE, RES_PRESENT, RES_ABSENT, RES_VALID, RES_REVOKED };
enum logout_state { LO_NONE, LO_INTENT, LO_ACKED };

struct user {
    char *name, *email, *password, *id;
    enum reg_state state;
    enum resolved resolved;
    char *resolved_id;
    long acked_at; /* journal line of the R record */
};

struct session {
    char *sid, *user, *token;
    int64_t exp;
    enum logout_state logout;
    enum resolved resolved;
    char *refresh; /* the refresh token of the last acknowledged Refresh, or NULL */
    bool refresh_pending; /* a Refresh went out after it and was not acknowledged */
};

struct journal {
    struct user *users;
    size_t n_users, cap_users;
    struct session *sessions;
    size_t n_sessions, cap_sessions;
    struct table by_name, by_sid;
    long lines;
    long last_check_line; /* line of the last C record, 0 if none */
    long checks;
};

static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap ? *cap * 2 : 256;
    p = realloc(p, *cap * size);
    if (p == NULL)
        die("out of memory");
    return p;
}

static struct user *jr_user(struct journal *j, const char *name)
{
    long i = table_get(&j->by_name, name);

    return i < 0 ? NULL : &j->users[i];
}

static struct session *jr_session(struct journal *j, const char *sid)
{
    long i = table_get(&j->by_sid, sid);

    return i < 0 ? NULL : &j->sessions[i];
}

/* split cuts line at single spaces into at most max fields. */
static int split(char *line, char **f, int max)
{
    int n = 0;
    char *save = NULL;

    for (char *t = strtok_r(line, " ", &save); t != NULL && n < max; t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    return n;
}

/* journal_read loads the journal into *j (an absent file is an empty
 * journal). A line it cannot parse is fatal: the driver wrote every line
 * itself, so a bad one means the journal itself is damaged. */
static void journal_read(const char *path, struct journal *j)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;

    memset(j, 0, sizeof *j);
    if (fp == NULL) {
        if (errno == ENOENT)
            return;
        die("%s: %s", path, strerror(errno));
    }
    while ((len = getline(&line, &cap, fp)) >= 0) {
        char *f[8];
        int n;
        struct user *u;
        struct session *s;

        j->lines++;
        if (len > 0 && line[len - 1] == '\n')
            line[len - 1] = '\0';
        else if (len > 0)
            break; /* a torn last line: the driver died writing it */
        n = split(line, f, 8);
        if (n == 0)
            continue;
        if (strcmp(f[0], "R?") == 0 && n == 4) {
            j->users = grow(j->users, &j->cap_users, j->n_users, sizeof *j->users);
            u = &j->users[j->n_users];
            *u = (struct user) { .name = xstrdup(f[1]),
                .email = xstrdup(f[2]),
                .password = xstrdup(f[3]),
                .state = REG_INTENT };
            table_put(&j->by_name, u->name, (long)j->n_users++);
        } else if (strcmp(f[0], "R") == 0 && n == 3 && (u = jr_user(j, f[1])) != NULL) {
            u->state = REG_ACKED;
            u->id = xstrdup(f[2]);
            u->acked_at = j->lines;
        } else if (strcmp(f[0], "R-") == 0 && n >= 3 && (u = jr_user(j, f[1])) != NULL) {
            u->state = REG_REFUSED;
        } else if (strcmp(f[0], "R!") == 0 && n >= 3 && (u = jr_user(j, f[1])) != NULL) {
            u->resolved = strcmp(f[2], "present") == 0 ? RES_PRESENT : RES_ABSENT;
            u->resolved_id = n >= 4 ? xstrdup(f[3]) : NULL;
        } else if (strcmp(f[0], "L") == 0 && n == 5) {
            j->sessions = grow(j->sessions, &j->cap_sessions, j->n_sessions, sizeof *j->sessions);
            s = &j->sessions[j->n_sessions];
            *s = (struct session) { .user = xstrdup(f[1]),
                .sid = xstrdup(f[2]),
                .exp = strtoll(f[3], NULL, 10),
                .token = xstrdup(f[4]) };
            table_put(&j->by_sid, s->sid, (long)j->n_sessions++);
        } else if (strcmp(f[0], "O?") == 0 && n == 2 && (s = jr_session(j, f[1])) != NULL) {
            if (s->logout == LO_NONE)
                s->logout = LO_INTENT;
        } else if (strcmp(f[0], "O") == 0 && n == 2 && (s = jr_session(j, f[1])) != NULL) {
            s->logout = LO_ACKED;
        } else if (strcmp(f[0], "O!") == 0 && n == 3 && (s = jr_session(j, f[1])) != NULL) {
            s->resolved = strcmp(f[2], "revoked") == 0 ? RES_REVOKED : RES_VALID;
        } else if (strcmp(f[0], "F?") == 0 && n == 2 && (s = jr_session(j, f[1])) != NULL) {
            s->refresh_pending = true;
        } else if (strcmp(f[0], "F") == 0 && n == 3 && (s = jr_session(j, f[1])) != NULL) {
            free(s->refresh);
            s->refresh = xstrdup(f[2]);
            s->refresh_pending = false;
        } else if (strcmp(f[0], "C") == 0 && n == 2) {
            j->last_check_line = j->lines;
            j->checks++;
        } else {
            die("%s:%ld: unparsable journal line starting '%s'", path, j->lines, f[0]);
        }
    }
    free(line);
    fclose(fp);
}

/* ---- RPC helpers ------------------------------------------------------------ */

/* do_register sends one Register; on OK copies the new user's id. */
static int do_register(authd_client *c, const char *name, const char *email, const char *pw,
    char *id, size_t idcap, authd_status *st)
{
    Authd__V1__RegisterRequest req = AUTHD__V1__REGISTER_REQUEST__INIT;
    Authd__V1__RegisterResponse *resp = NULL;
    int rc;

    req.username = (char *)name;
    req.email = (char *)email;
    req.password = (char *)pw;
    rc = authd_client_register(c, &req, &resp, st);
    if (rc == AUTHD_OK) {
        snprintf(id, idcap, "%s", resp->user != NULL && resp->user->id ? resp->user->id : "");
        authd__v1__register_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* do_login sends one Login; on OK hands back the response (caller frees
 * it with authd__v1__login_response__free_unpacked). */
static int do_login(authd_client *c, const char *login, const char *pw,
    Authd__V1__LoginResponse **out, authd_status *st)
{
    Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;

    req.login = (char *)login;
    req.password = (char *)pw;
    return authd_client_login(c, &req, out, st);
}

static int do_logout(authd_client *c, const char *token, authd_status *st)
{
    Authd__V1__LogoutRequest req = AUTHD__V1__LOGOUT_REQUEST__INIT;
    Authd__V1__LogoutResponse *resp = NULL;
    int rc;

    req.access_token = (char *)token;
    rc = authd_client_logout(c, &req, &resp, st);
    if (rc == AUTHD_OK)
        authd__v1__logout_response__free_unpacked(resp, NULL);
    return rc;
}

/* do_verify sends one Verify; on OK copies the session id and username
 * (either may be NULL). */
static int do_verify(
    authd_client *c, const char *token, char *sid, char *user, size_t cap, authd_status *st)
{
    Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__VerifyResponse *resp = NULL;
    int rc;

    req.access_token = (char *)token;
    rc = authd_client_verify(c, &req, &resp, st);
    if (rc == AUTHD_OK) {
        if (sid != NULL)
            snprintf(sid, cap, "%s", resp->session_id ? resp->session_id : "");
        if (user != NULL)
            snprintf(user, cap, "%s", resp->username ? resp->username : "");
        authd__v1__verify_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* do_refresh sends one Refresh; on OK copies the new refresh token. */
static int do_refresh(authd_client *c, const char *rt, char *out, size_t cap, authd_status *st)
{
    Authd__V1__RefreshRequest req = AUTHD__V1__REFRESH_REQUEST__INIT;
    Authd__V1__RefreshResponse *resp = NULL;
    int rc;

    req.refresh_token = (char *)rt;
    rc = authd_client_refresh(c, &req, &resp, st);
    if (rc == AUTHD_OK) {
        snprintf(out, cap, "%s", resp->refresh_token ? resp->refresh_token : "");
        authd__v1__refresh_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static bool is_revoked(int rc, const authd_status *st)
{
    return rc == AUTHD_UNAUTHENTICATED && strcmp(st->reason, "REVOKED") == 0;
}

static bool is_store_full(int rc, const authd_status *st)
{
    return rc == AUTHD_RESOURCE_EXHAUSTED && strcmp(st->reason, "STORE_FULL") == 0;
}

/* ---- wait ---------------------------------------------------------------------- */

/* process_gone is true when process pid has exited (no /proc entry, or a
 * zombie its parent has not reaped yet), so wait can fail at once instead
 * of at its deadline when authd refused to start. */
static bool process_gone(long pid)
{
    char path[64], buf[512];
    FILE *fp;
    char *p;
    bool gone = true;

    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if ((fp = fopen(path, "r")) == NULL)
        return true;
    /* The state follows the command name, which is in parentheses. */
    if (fgets(buf, sizeof buf, fp) != NULL && (p = strrchr(buf, ')')) != NULL && p[1] == ' ')
        gone = p[2] == 'Z' || p[2] == 'X';
    fclose(fp);
    return gone;
}

/* mode_wait polls the url file authd writes once it listens, then calls
 * Verify with a junk token until authd answers it (UNAUTHENTICATED): the
 * store is open and requests are served. */
static int mode_wait(void)
{
    double deadline = now_s() + O.deadline_ms / 1000.0;
    char url[512];

    if (O.url_file == NULL)
        die("wait needs --url-file");
    for (;;) {
        FILE *fp = fopen(O.url_file, "r");
        if (fp != NULL) {
            bool got = fgets(url, sizeof url, fp) != NULL;
            fclose(fp);
            if (got) {
                url[strcspn(url, "\r\n")] = '\0';
                if (url[0] != '\0')
                    break;
            }
        }
        if (O.pid > 0 && process_gone(O.pid))
            die("authd (pid %ld) exited before it listened", O.pid);
        if (now_s() > deadline)
            die("no url in %s after %d ms", O.url_file, O.deadline_ms);
        sleep_ms(20);
    }
    for (;;) {
        authd_client_options o = { .url = url, .ca_file = O.ca, .timeout_ms = 2000 };
        authd_client *c = NULL;
        authd_status st;
        if (authd_client_open(&o, &c, &st) == AUTHD_OK) {
            int rc = do_verify(c, "junk", NULL, NULL, 0, &st);
            authd_client_close(c);
            if (rc == AUTHD_UNAUTHENTICATED)
                break;
        }
        if (now_s() > deadline)
            die("%s does not answer after %d ms: %s [%s]", url, O.deadline_ms,
                authd_code_str(st.code), st.reason);
        sleep_ms(50);
    }
    printf("%s\n", url);
    return 0;
}

/* ---- load and fill ---------------------------------------------------------------- */

/* Users and sessions this run can log in with and log out of: guarded by
 * pool_mu. Users come from the journal (earlier runs) and from this run's
 * acknowledged Registers; sessions only from this run's Logins. */
struct pool_user {
    char *name, *email, *password;
};

struct pool_session {
    char *sid, *token;
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pool_user *pusers;
static size_t n_pusers, cap_pusers;
static struct pool_session *psessions;
static size_t n_psessions, cap_psessions;
static atomic_ulong serial;

static struct {
    atomic_ulong reg_ok, reg_refused, reg_unknown;
    atomic_ulong login_ok, login_failed, login_unknown;
    atomic_ulong logout_ok, logout_failed, logout_unknown;
    atomic_ulong refresh_ok;
    atomic_ulong store_full;
} cnt;

static void pool_add_user(const char *name, const char *email, const char *pw)
{
    pthread_mutex_lock(&pool_mu);
    pusers = grow(pusers, &cap_pusers, n_pusers, sizeof *pusers);
    pusers[n_pusers++] = (struct pool_user) {
        .name = xstrdup(name), .email = xstrdup(email), .password = xstrdup(pw)
    };
    pthread_mutex_unlock(&pool_mu);
}

/* pool_pick_user copies a random known user; false when there is none. */
static bool pool_pick_user(struct pool_user *out)
{
    bool ok = false;

    pthread_mutex_lock(&pool_mu);
    if (n_pusers > 0) {
        struct pool_user *u = &pusers[rnd() % n_pusers];
        *out = (struct pool_user) { xstrdup(u->name), xstrdup(u->email), xstrdup(u->password) };
        ok = true;
    }
    pthread_mutex_unlock(&pool_mu);
    return ok;
}

static void pool_add_session(const char *sid, const char *token)
{
    pthread_mutex_lock(&pool_mu);
    psessions = grow(psessions, &cap_psessions, n_psessions, sizeof *psessions);
    psessions[n_psessions++] = (struct pool_session) { xstrdup(sid), xstrdup(token) };
    pthread_mutex_unlock(&pool_mu);
}

/* pool_take_session removes a random session (the caller now owns its
 * strings), so two threads never log out the same one. */
static bool pool_take_session(struct pool_session *out)
{
    bool ok = false;

    pthread_mutex_lock(&pool_mu);
    if (n_psessions > 0) {
        size_t i = rnd() % n_psessions;
        *out = psessions[i];
        psessions[i] = psessions[--n_psessions];
        ok = true;
    }
    pthread_mutex_unlock(&pool_mu);
    return ok;
}

/* op_register registers a fresh user, journaling the intent first and the
 * outcome after. Returns the status code (-1: not sent). */
static int op_register(authd_client *c, authd_status *st)
{
    char name[64], email[128], pw[PASSWORD_CHARS + 1], id[64];
    unsigned long n = atomic_fetch_add(&serial, 1);
    int rc;

    snprintf(name, sizeof name, "d%s-%lu", O.tag, n);
    snprintf(email, sizeof email, "%s@durability.example.com", name);
    random_password(pw);
    jput(false, "R? %s %s %s", name, email, pw);
    rc = do_register(c, name, email, pw, id, sizeof id, st);
    if (rc == AUTHD_OK) {
        jput(true, "R %s %s", name, id);
        atomic_fetch_add(&cnt.reg_ok, 1);
        pool_add_user(name, email, pw);
    } else if (transport_failure(st)) {
        atomic_fetch_add(&cnt.reg_unknown, 1);
    } else {
        jput(true, "R- %s %s %s", name, authd_code_str(rc), st->reason[0] ? st->reason : "-");
        atomic_fetch_add(&cnt.reg_refused, 1);
        if (is_store_full(rc, st))
            atomic_fetch_add(&cnt.store_full, 1);
    }
    return rc;
}

/* op_login logs a known user in, by username or by email at random. */
static int op_login(authd_client *c, authd_status *st)
{
    struct pool_user u;
    Authd__V1__LoginResponse *resp = NULL;
    int rc;

    if (!pool_pick_user(&u))
        return -1;
    rc = do_login(c, rnd() & 1 ? u.email : u.name, u.password, &resp, st);
    if (rc == AUTHD_OK) {
        jput(true, "L %s %s %" PRId64 " %s", u.name, resp->session_id, resp->expires_at,
            resp->access_token);
        atomic_fetch_add(&cnt.login_ok, 1);
        pool_add_session(resp->session_id, resp->access_token);
        /* Every other session is refreshed once: check then proves the
         * rotation survived (the new refresh token is the live one). */
        if ((rnd() & 1) && resp->refresh_token != NULL && resp->refresh_token[0] != '\0') {
            char next[256];
            authd_status fst;
            jput(false, "F? %s", resp->session_id);
            if (do_refresh(c, resp->refresh_token, next, sizeof next, &fst) == AUTHD_OK) {
                jput(true, "F %s %s", resp->session_id, next);
                atomic_fetch_add(&cnt.refresh_ok, 1);
            }
        }
        authd__v1__login_response__free_unpacked(resp, NULL);
    } else if (transport_failure(st)) {
        atomic_fetch_add(&cnt.login_unknown, 1);
    } else {
        atomic_fetch_add(&cnt.login_failed, 1);
        if (is_store_full(rc, st))
            atomic_fetch_add(&cnt.store_full, 1);
    }
    free(u.name);
    free(u.email);
    free(u.password);
    return rc;
}

static int op_logout(authd_client *c, authd_status *st)
{
    struct pool_session s;
    int rc;

    if (!pool_take_session(&s))
        return -1;
    jput(false, "O? %s", s.sid);
    rc = do_logout(c, s.token, st);
    if (rc == AUTHD_OK) {
        jput(true, "O %s", s.sid);
        atomic_fetch_add(&cnt.logout_ok, 1);
    } else if (transport_failure(st)) {
        atomic_fetch_add(&cnt.logout_unknown, 1);
    } else {
        atomic_fetch_add(&cnt.logout_failed, 1);
        if (is_store_full(rc, st))
            atomic_fetch_add(&cnt.store_full, 1);
    }
    free(s.sid);
    free(s.token);
    return rc;
}

struct worker {
    pthread_t th;
    authd_client *c;
};

/* load_thread runs the mix until stopped: 35% Register, 40% Login, 25%
 * Logout (falling back to whatever is possible). After a failure of the
 * transport (authd killed) it pauses briefly instead of spinning. */
static void *load_thread(void *arg)
{
    struct worker *w = arg;
    double end = O.seconds > 0 ? now_s() + O.seconds : 0;

    while (!stop_flag && (end == 0 || now_s() < end)) {
        authd_status st = { 0 };
        uint32_t r = rnd() % 100;
        int rc = -1;

        if (r < 25)
            rc = op_logout(w->c, &st);
        if (rc == -1 && r < 65)
            rc = op_login(w->c, &st);
        if (rc == -1)
            rc = op_register(w->c, &st);
        if (rc != AUTHD_OK && transport_failure(&st))
            sleep_ms(20);
    }
    return NULL;
}

/* load_known_users seeds the pool with the users the journal says were
 * acknowledged (or found present after a crash) by earlier runs. */
static void load_known_users(void)
{
    struct journal j;

    journal_read(O.journal, &j);
    for (size_t i = 0; i < j.n_users; i++) {
        struct user *u = &j.users[i];
        if (u->state == REG_ACKED || u->resolved == RES_PRESENT)
            pool_add_user(u->name, u->email, u->password);
    }
}

static void print_counts(const char *mode)
{
    printf("%s: registered=%lu register_refused=%lu register_unknown=%lu logins=%lu "
           "login_failed=%lu login_unknown=%lu logouts=%lu logout_failed=%lu "
           "logout_unknown=%lu refreshes=%lu store_full=%lu\n",
        mode, atomic_load(&cnt.reg_ok), atomic_load(&cnt.reg_refused),
        atomic_load(&cnt.reg_unknown), atomic_load(&cnt.login_ok), atomic_load(&cnt.login_failed),
        atomic_load(&cnt.login_unknown), atomic_load(&cnt.logout_ok),
        atomic_load(&cnt.logout_failed), atomic_load(&cnt.logout_unknown),
        atomic_load(&cnt.refresh_ok), atomic_load(&cnt.store_full));
    fflush(stdout);
}

static int mode_load(void)
{
    struct worker w[MAX_THREADS];
    authd_client *c;

    if (O.url == NULL)
        die("load needs --url");
    journal_open();
    load_known_users();
    c = open_client(O.url);
    for (int i = 0; i < O.threads; i++) {
        w[i].c = c;
        if (pthread_create(&w[i].th, NULL, load_thread, &w[i]) != 0)
            die("pthread_create failed");
    }
    for (int i = 0; i < O.threads; i++)
        pthread_join(w[i].th, NULL);
    authd_client_close(c);
    print_counts("load");
    /* Failures other than lost connections would be authd misbehaving
     * under a load it should carry: report them, but the verdict is the
     * check's (a refused Register is journaled and checked absent). */
    return 0;
}

/* mode_fill registers users until authd answers STORE_FULL FILL_STREAK
 * times in a row, having first opened one session. A full LMDB map is not
 * a wall: once a failed transaction is rolled back, a smaller write may
 * still find a free page, so OK answers between STORE_FULLs are fine;
 * any answer other than OK or STORE_FULL is not. Then it checks that the
 * full store still answers cleanly: Logout OK (the session then REVOKED)
 * or STORE_FULL (the session still valid), Login OK or STORE_FULL. */
#define FILL_STREAK 20
static int mode_fill(void)
{
    struct pool_session s;
    authd_client *c;
    authd_status st;
    int rc, failures = 0, streak = 0;
    long tries = 0, first_full = -1, ok_after = 0;

    if (O.url == NULL)
        die("fill needs --url");
    journal_open();
    c = open_client(O.url);
    if (op_register(c, &st) != AUTHD_OK || op_login(c, &st) != AUTHD_OK)
        die("fill: the first Register/Login failed: %s [%s] %s", authd_code_str(st.code), st.reason,
            st.message);
    while (!stop_flag && streak < FILL_STREAK && tries++ < O.max_users) {
        rc = op_register(c, &st);
        if (is_store_full(rc, &st)) {
            streak++;
            if (first_full < 0)
                first_full = tries;
            continue;
        }
        streak = 0;
        if (rc != AUTHD_OK) {
            fprintf(stderr, "fill: Register answered %s [%s] %s: neither OK nor STORE_FULL\n",
                authd_code_str(rc), st.reason, st.message);
            failures++;
            break;
        }
        if (first_full >= 0)
            ok_after++;
    }
    if (streak < FILL_STREAK) {
        fprintf(
            stderr, "fill: no %d STORE_FULL in a row after %ld Registers\n", FILL_STREAK, tries);
        failures++;
    }
    printf("fill: first STORE_FULL at Register %ld; %ld OK after it; %d STORE_FULL in a row "
           "at Register %ld\n",
        first_full + 1, ok_after, streak, tries + 1);
    if (pool_take_session(&s)) {
        char sid[64];
        pool_add_session(s.sid, s.token); /* op_logout takes it back */
        rc = op_logout(c, &st);
        printf("fill: Logout on the full store: %s %s\n", authd_code_str(rc), st.reason);
        if (rc != AUTHD_OK && !is_store_full(rc, &st)) {
            fprintf(stderr, "fill: Logout on the full store answered %s [%s]: not clean\n",
                authd_code_str(rc), st.reason);
            failures++;
        }
        int vr = do_verify(c, s.token, sid, NULL, sizeof sid, &st);
        if (rc == AUTHD_OK ? !is_revoked(vr, &st) : vr != AUTHD_OK) {
            fprintf(stderr, "fill: after Logout %s, Verify answered %s [%s]\n", authd_code_str(rc),
                authd_code_str(vr), st.reason);
            failures++;
        }
        free(s.sid);
        free(s.token);
    }
    rc = op_login(c, &st);
    printf("fill: Login on the full store: %s %s\n", authd_code_str(rc), st.reason);
    if (rc != AUTHD_OK && !is_store_full(rc, &st)) {
        fprintf(stderr, "fill: Login on the full store answered %s [%s]: not clean\n",
            authd_code_str(rc), st.reason);
        failures++;
    }
    authd_client_close(c);
    print_counts("fill");
    return failures == 0 ? 0 : 1;
}

/* ---- check -------------------------------------------------------------------- */

static unsigned long failures;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;

    if (++failures > MAX_FAIL_SHOWN)
        return;
    fputs("authd-durload: CHECK FAILED: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The store as authd-fsck --dump saw it: index key -> user id. */
struct dump {
    struct table by_username, by_email;
    char **ids; /* values, indexed by the tables' vals */
    size_t n, cap;
    size_t n_users, n_sessions;
};

static void dump_read(const char *path, struct dump *d)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;

    memset(d, 0, sizeof *d);
    if (fp == NULL)
        die("%s: %s", path, strerror(errno));
    while ((len = getline(&line, &cap, fp)) > 0) {
        char *f[5];
        int n;

        line[strcspn(line, "\n")] = '\0';
        n = split(line, f, 5);
        if (n == 3 && (strcmp(f[0], "username") == 0 || strcmp(f[0], "email") == 0)) {
            d->ids = grow(d->ids, &d->cap, d->n, sizeof *d->ids);
            d->ids[d->n] = xstrdup(f[2]);
            table_put(f[0][0] == 'u' ? &d->by_username : &d->by_email, xstrdup(f[1]), (long)d->n);
            d->n++;
        } else if (n >= 1 && strcmp(f[0], "user") == 0) {
            d->n_users++;
        } else if (n >= 1 && strcmp(f[0], "session") == 0) {
            d->n_sessions++;
        }
    }
    free(line);
    fclose(fp);
}

static const char *dump_id(const struct dump *d, const struct table *t, const char *key)
{
    long i = table_get(t, key);

    return i < 0 ? NULL : d->ids[i];
}

/* login_as checks Login with login (username or email) and the password
 * works and names user id. Returns 1 ok, 0 inconclusive (store full and
 * --store-full-ok), -1 failed (and says why). */
static int login_as(authd_client *c, const struct user *u, const char *login, const char *id)
{
    Authd__V1__LoginResponse *resp = NULL;
    authd_status st;
    int rc = do_login(c, login, u->password, &resp, &st);
    int res;

    if (rc == AUTHD_OK) {
        const char *got = resp->user != NULL && resp->user->id != NULL ? resp->user->id : "";
        res = strcmp(got, id) == 0 ? 1 : -1;
        if (res < 0)
            fail("Login %s: user id %s, the Register said %s", login, got, id);
        authd__v1__login_response__free_unpacked(resp, NULL);
        return res;
    }
    if (O.store_full_ok && is_store_full(rc, &st))
        return 0;
    fail(
        "Login %s with its password: %s [%s] %s", login, authd_code_str(rc), st.reason, st.message);
    return -1;
}

static int mode_check(void)
{
    struct journal j;
    struct dump d;
    authd_client *c;
    int64_t now = (int64_t)time(NULL);
    unsigned long users_acked = 0, users_ok = 0, inflight = 0, present = 0, absent = 0, refused = 0,
                  logins = 0, logins_inconclusive = 0, live_ok = 0, revoked_ok = 0,
                  unknown_valid = 0, unknown_revoked = 0, expired = 0, refresh_ok = 0,
                  refresh_skipped = 0;
    size_t n_old = 0;

    if (O.url == NULL || O.dump == NULL)
        die("check needs --url and --dump");
    journal_read(O.journal, &j);
    dump_read(O.dump, &d);
    journal_open();
    c = open_client(O.url);

    /* (a) and (b): users. */
    for (size_t i = 0; i < j.n_users; i++) {
        struct user *u = &j.users[i];
        const char *by_name = dump_id(&d, &d.by_username, u->name);
        const char *by_mail = dump_id(&d, &d.by_email, u->email);

        if (u->state == REG_ACKED) {
            users_acked++;
            if (by_name == NULL || by_mail == NULL || strcmp(by_name, u->id) != 0
                || strcmp(by_mail, u->id) != 0) {
                fail("acknowledged Register of %s (id %s) lost: by username %s, by email %s",
                    u->name, u->id, by_name ? by_name : "absent", by_mail ? by_mail : "absent");
                continue;
            }
            users_ok++;
            if (u->acked_at <= j.last_check_line)
                n_old++;
            continue;
        }
        bool is_present = by_name != NULL && by_mail != NULL && strcmp(by_name, by_mail) == 0;
        bool is_absent = by_name == NULL && by_mail == NULL;
        if (u->state == REG_REFUSED)
            refused++;
        else
            inflight++;
        if (!is_present && !is_absent) {
            fail("unacknowledged Register of %s is half-present: by username %s, by email %s",
                u->name, by_name ? by_name : "absent", by_mail ? by_mail : "absent");
            continue;
        }
        if (u->state == REG_REFUSED && is_present) {
            fail("Register of %s was refused but the user exists (%s)", u->name, by_name);
            continue;
        }
        if (u->resolved == RES_PRESENT
            && (!is_present || u->resolved_id == NULL || strcmp(u->resolved_id, by_name) != 0))
            fail("%s was present after an earlier crash, now %s", u->name,
                is_present ? "another id" : "absent");
        if (u->resolved == RES_ABSENT && is_present)
            fail("%s was absent after an earlier crash, now present", u->name);
        if (is_present) {
            present++;
            /* Fully there: Login works by username and by email, same id. */
            if (login_as(c, u, u->name, by_name) > 0 && login_as(c, u, u->email, by_name) > 0)
                logins += 2;
            if (u->resolved == RES_NONE)
                jput(true, "R! %s present %s", u->name, by_name);
        } else {
            absent++;
            if (u->resolved == RES_NONE && u->state == REG_INTENT)
                jput(true, "R! %s absent", u->name);
        }
    }

    /* (a): a sample of acknowledged users logs in: every one acknowledged
     * since the last check, up to --login-sample, and as many older ones
     * at random. */
    {
        int new_left = O.login_sample, old_left = O.login_sample;
        for (size_t i = j.n_users; i-- > 0 && new_left > 0;) {
            struct user *u = &j.users[i];
            if (u->state != REG_ACKED || u->acked_at <= j.last_check_line)
                continue;
            int r = login_as(c, u, (i & 1) ? u->email : u->name, u->id);
            logins += r > 0;
            logins_inconclusive += r == 0;
            new_left--;
        }
        for (int k = 0; k < 4 * O.login_sample && old_left > 0 && n_old > 0; k++) {
            struct user *u = &j.users[rnd() % j.n_users];
            if (u->state != REG_ACKED || u->acked_at > j.last_check_line)
                continue;
            int r = login_as(c, u, (k & 1) ? u->email : u->name, u->id);
            logins += r > 0;
            logins_inconclusive += r == 0;
            old_left--;
        }
    }

    /* (a): sessions and logouts. */
    for (size_t i = 0; i < j.n_sessions; i++) {
        struct session *s = &j.sessions[i];
        authd_status st;
        char sid[64] = "", user[64] = "";
        int rc;

        if (s->exp <= now + 5) {
            expired++;
            continue;
        }
        rc = do_verify(c, s->token, sid, user, sizeof sid, &st);
        if (rc != AUTHD_OK && transport_failure(&st)) {
            fail("Verify of session %s: %s [%s] %s", s->sid, authd_code_str(rc), st.reason,
                st.message);
            continue;
        }
        bool valid = rc == AUTHD_OK && strcmp(sid, s->sid) == 0 && strcmp(user, s->user) == 0;
        bool revoked = is_revoked(rc, &st);
        switch (s->logout) {
        case LO_ACKED:
            if (revoked)
                revoked_ok++;
            else
                fail("acknowledged Logout of session %s lost: Verify says %s [%s]", s->sid,
                    authd_code_str(rc), st.reason);
            break;
        case LO_NONE:
            if (valid)
                live_ok++;
            else
                fail("acknowledged Login session %s (%s) lost: Verify says %s [%s] sid=%s user=%s",
                    s->sid, s->user, authd_code_str(rc), st.reason, sid, user);
            if (!valid || s->refresh == NULL)
                break;
            /* The last acknowledged Refresh's token must be the live one.
             * Skipped when a later Refresh was in flight at the kill: if it
             * committed, that token is used up and would (rightly) revoke. */
            if (s->refresh_pending) {
                refresh_skipped++;
                break;
            }
            char next[256];
            jput(false, "F? %s", s->sid);
            rc = do_refresh(c, s->refresh, next, sizeof next, &st);
            if (rc == AUTHD_OK) {
                jput(true, "F %s %s", s->sid, next);
                refresh_ok++;
            } else if (!is_store_full(rc, &st) || !O.store_full_ok) {
                fail("acknowledged Refresh of session %s lost: Refresh says %s [%s]", s->sid,
                    authd_code_str(rc), st.reason);
            }
            break;
        case LO_INTENT:
            if (!valid && !revoked) {
                fail("session %s with a Logout in flight: Verify says %s [%s]", s->sid,
                    authd_code_str(rc), st.reason);
                break;
            }
            if ((s->resolved == RES_REVOKED && !revoked) || (s->resolved == RES_VALID && !valid))
                fail("session %s was %s after an earlier crash, now %s", s->sid,
                    s->resolved == RES_REVOKED ? "revoked" : "valid", valid ? "valid" : "revoked");
            if (s->resolved == RES_NONE)
                jput(true, "O! %s %s", s->sid, valid ? "valid" : "revoked");
            if (valid)
                unknown_valid++;
            else
                unknown_revoked++;
            break;
        }
    }
    authd_client_close(c);
    if (failures == 0)
        jput(true, "C %ld", j.checks + 1);
    printf("check: store_users=%zu store_sessions=%zu users_acked=%lu users_ok=%lu "
           "register_in_flight=%lu register_refused=%lu unacked_present=%lu unacked_absent=%lu "
           "logins_ok=%lu logins_store_full=%lu sessions_live_ok=%lu logouts_revoked_ok=%lu "
           "logout_in_flight_valid=%lu logout_in_flight_revoked=%lu sessions_expired=%lu "
           "refreshes_ok=%lu refreshes_in_flight_skipped=%lu failures=%lu\n",
        d.n_users, d.n_sessions, users_acked, users_ok, inflight, refused, present, absent, logins,
        logins_inconclusive, live_ok, revoked_ok, unknown_valid, unknown_revoked, expired,
        refresh_ok, refresh_skipped, failures);
    return failures == 0 ? 0 : 1;
}

/* ---- churn (soak) ---------------------------------------------------------------- */

static void write_stats(unsigned long cycles, unsigned long ops, unsigned long errors)
{
    char tmp[4096];
    FILE *fp;

    snprintf(tmp, sizeof tmp, "%s.tmp", O.stats);
    if ((fp = fopen(tmp, "w")) == NULL)
        return;
    fprintf(fp, "cycles=%lu ops=%lu errors=%lu\n", cycles, ops, errors);
    if (fclose(fp) == 0)
        rename(tmp, O.stats);
}

/* churn_error counts an unexpected outcome and prints the first few. */
static void churn_error(unsigned long *errors, const char *what, int rc, const authd_status *st)
{
    if (++*errors <= MAX_FAIL_SHOWN)
        fprintf(stderr, "authd-durload: churn: %s: %s [%s] %s\n", what, authd_code_str(rc),
            st->reason, st->message);
}

/* mode_churn is the soak's session churn, paced at --rate cycles/s: each
 * cycle logs a user in, verifies the token, logs out, verifies again
 * (must be REVOKED) and verifies a tampered copy (must be refused); every
 * tenth cycle registers a new user. Every outcome but those is an error. */
static int mode_churn(void)
{
    struct pool_user *users;
    authd_client *c;
    unsigned long cycles = 0, ops = 0, errors = 0;
    double t0, next_stats;
    int n = 0;

    if (O.url == NULL || O.stats == NULL || O.seconds <= 0)
        die("churn needs --url, --stats and --seconds");
    users = calloc((size_t)O.users, sizeof *users);
    if (users == NULL)
        die("out of memory");
    c = open_client(O.url);
    t0 = now_s();
    next_stats = t0;
    while (!stop_flag && now_s() - t0 < O.seconds) {
        authd_status st;
        Authd__V1__LoginResponse *resp = NULL;
        char name[64], email[128], pw[PASSWORD_CHARS + 1], id[64], sid[64];
        int rc;

        if (n < O.users || cycles % 10 == 0) {
            snprintf(name, sizeof name, "s%s-%lu", O.tag, cycles);
            snprintf(email, sizeof email, "%s@soak.example.com", name);
            random_password(pw);
            rc = do_register(c, name, email, pw, id, sizeof id, &st);
            ops++;
            if (rc != AUTHD_OK) {
                churn_error(&errors, "Register", rc, &st);
            } else {
                struct pool_user *u = &users[n < O.users ? n++ : (int)(rnd() % (uint32_t)n)];
                free(u->name);
                free(u->email);
                free(u->password);
                *u = (struct pool_user) { xstrdup(name), xstrdup(email), xstrdup(pw) };
            }
        }
        if (n > 0) {
            struct pool_user *u = &users[rnd() % (uint32_t)n];
            rc = do_login(c, cycles & 1 ? u->email : u->name, u->password, &resp, &st);
            ops++;
            if (rc != AUTHD_OK) {
                churn_error(&errors, "Login", rc, &st);
            } else {
                char *tok = xstrdup(resp->access_token);
                size_t tl = strlen(tok);
                rc = do_verify(c, tok, sid, NULL, sizeof sid, &st);
                ops++;
                if (rc != AUTHD_OK || strcmp(sid, resp->session_id) != 0)
                    churn_error(&errors, "Verify of a live token", rc, &st);
                rc = do_logout(c, tok, &st);
                ops++;
                if (rc != AUTHD_OK)
                    churn_error(&errors, "Logout", rc, &st);
                rc = do_verify(c, tok, NULL, NULL, 0, &st);
                ops++;
                if (!is_revoked(rc, &st))
                    churn_error(&errors, "Verify after Logout (want REVOKED)", rc, &st);
                /* Tamper with the signature's last-but-one character. */
                tok[tl - 2] = tok[tl - 2] == 'A' ? 'B' : 'A';
                rc = do_verify(c, tok, NULL, NULL, 0, &st);
                ops++;
                if (rc != AUTHD_UNAUTHENTICATED)
                    churn_error(
                        &errors, "Verify of a tampered token (want UNAUTHENTICATED)", rc, &st);
                free(tok);
                authd__v1__login_response__free_unpacked(resp, NULL);
            }
        }
        cycles++;
        if (now_s() >= next_stats) {
            write_stats(cycles, ops, errors);
            next_stats += 1.0;
        }
        /* Pace: cycle k starts no earlier than t0 + k / rate. */
        double due = t0 + (double)cycles / O.rate - now_s();
        if (due > 0)
            sleep_ms((int)(due * 1000));
    }
    write_stats(cycles, ops, errors);
    authd_client_close(c);
    for (int i = 0; i < n; i++) {
        free(users[i].name);
        free(users[i].email);
        free(users[i].password);
    }
    free(users);
    printf("churn: cycles=%lu ops=%lu errors=%lu\n", cycles, ops, errors);
    return errors == 0 ? 0 : 1;
}

/* ---- main ---------------------------------------------------------------------------- */

static double num(const char *flag, const char *v, double lo, double hi)
{
    char *end = NULL;
    double d = strtod(v, &end);

    if (end == v || *end != '\0' || d < lo || d > hi)
        die("%s: want a number from %g to %g, got '%s'", flag, lo, hi, v);
    return d;
}

int main(int argc, char **argv)
{
    struct sigaction sa = { 0 };

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    O.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--store-full-ok") == 0) {
            O.store_full_ok = true;
            continue;
        }
        if (v == NULL)
            die("%s needs a value\n%s", a, usage);
        i++;
        if (strcmp(a, "--url") == 0)
            O.url = v;
        else if (strcmp(a, "--url-file") == 0)
            O.url_file = v;
        else if (strcmp(a, "--ca") == 0)
            O.ca = v;
        else if (strcmp(a, "--journal") == 0)
            O.journal = v;
        else if (strcmp(a, "--dump") == 0)
            O.dump = v;
        else if (strcmp(a, "--stats") == 0)
            O.stats = v;
        else if (strcmp(a, "--tag") == 0)
            O.tag = v;
        else if (strcmp(a, "--threads") == 0)
            O.threads = (int)num(a, v, 1, MAX_THREADS);
        else if (strcmp(a, "--seconds") == 0)
            O.seconds = num(a, v, 0, 86400);
        else if (strcmp(a, "--rate") == 0)
            O.rate = num(a, v, 0.1, 100000);
        else if (strcmp(a, "--timeout-ms") == 0)
            O.timeout_ms = (int)num(a, v, 100, 600000);
        else if (strcmp(a, "--deadline-ms") == 0)
            O.deadline_ms = (int)num(a, v, 100, 3600000);
        else if (strcmp(a, "--login-sample") == 0)
            O.login_sample = (int)num(a, v, 0, 100000);
        else if (strcmp(a, "--users") == 0)
            O.users = (int)num(a, v, 1, 100000);
        else if (strcmp(a, "--pid") == 0)
            O.pid = (long)num(a, v, 1, 1e9);
        else if (strcmp(a, "--max-users") == 0)
            O.max_users = (long)num(a, v, 1, 1e8);
        else
            die("unknown option '%s'\n%s", a, usage);
    }
    if (O.ca == NULL)
        die("--ca is required");
    for (const char *t = O.tag; *t; t++) {
        if (!((*t >= 'a' && *t <= 'z') || (*t >= '0' && *t <= '9')))
            die("--tag: want a-z and 0-9 only");
    }
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (strcmp(O.mode, "wait") == 0)
        return mode_wait();
    if (strcmp(O.mode, "load") == 0)
        return mode_load();
    if (strcmp(O.mode, "fill") == 0)
        return mode_fill();
    if (strcmp(O.mode, "check") == 0)
        return mode_check();
    if (strcmp(O.mode, "churn") == 0)
        return mode_churn();
    die("unknown mode '%s'\n%s", O.mode, usage);
}
