/*
** authbench.c — load generator for authd (and for authd-echo, the
** transport baseline), built on libauthd-client's async calls.
**
** Model: a run has one or two groups of connections. Each group owns C
** clients (C TLS connections) and N "ops" (the requests in flight, spread
** over its connections). In a closed loop every op re-issues its next
** request from the completion callback; in an open loop (--rate) a
** scheduler thread releases request k at t0 + k/R to a free op, and the
** latency of request k is measured from t0 + k/R, so a server that falls
** behind shows its queueing instead of hiding it (coordinated omission).
**
** Threads: main (phases, progress, results), the scheduler in open-loop
** runs, and each client's I/O thread (one per connection), on which its
** callbacks run. Samples go to a histogram of the thread that records them
** (thread-local, registered once per thread), merged after the run has
** drained: recording takes no lock and allocates nothing.
**
** Phases: setup (users, tokens), warm-up (load, not recorded), measure
** (recorded: completions inside the window count), drain (no new requests;
** wait for those in flight). Client CPU (getrusage) and server CPU and
** memory (/proc/PID) are sampled at both ends of the measured window.
*/
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "authd/client_rpc.h"
#include "authd/v1/envelope.pb-c.h"
#include "bench_hist.h"
#include "sysutil.h"
#include "user_pattern.h"

/* The build passes the project version; this is for builds without it. */
#ifndef AUTHD_VERSION
#define AUTHD_VERSION "0.1.0"
#endif

#define DEFAULT_URL   "tls+tcp://127.0.0.1:7443"
#define DEFAULT_CA    "./var/tls/ca.crt"
#define MAX_CONNS     1024
#define MAX_INFLIGHT  100000
#define MAX_USERS     100000
#define MAX_REASONS   32 /* distinct (kind, code, reason) per thread */
#define NS_PER_S      1000000000ull
#define NS_PER_MS     1000000ull
#define FLOOD_DEFAULT 32
#define PASSWORD_MAX  512 /* bytes: 128 code points of up to 4 bytes */
#define NAME_MAX_LEN  32 /* authd's longest username */
#define PATTERN_MAX   100000000ul

/* ---- options ----------------------------------------------------------- */

enum workload { W_VERIFY, W_LOGIN, W_REGISTER, W_MIXED, W_FLOOD, W_ECHO, W_REFRESH, W_LOGOUT };
static const char *const workload_names[] = { "verify", "login", "register", "mixed",
    "verify-under-login-flood", "echo", "refresh", "logout" };

enum kind { K_VERIFY, K_LOGIN, K_REGISTER, K_ECHO, K_REFRESH, K_LOGOUT, N_KINDS };
static const char *const kind_names[]
    = { "verify", "login", "register", "echo", "refresh", "logout" };

#define REFRESH_TOKEN_MAX 128 /* authd's are 92 characters */
#define ACCESS_TOKEN_MAX  4096 /* authd's are a few hundred characters */

enum format { F_TABLE, F_CSV, F_JSON };

struct opts {
    const char *url;
    const char *ca;
    const char *cert;
    const char *key;
    const char *server_name;
    bool plaintext;
    int conns;
    int inflight;
    double duration;
    double warmup;
    double rate; /* 0: closed loop */
    enum workload wl;
    int users;
    double invalid_share; /* percent */
    double mix[3]; /* verify, login, register percent */
    int flood_conns;
    int flood_inflight;
    int timeout_ms;
    long server_pid;
    enum format format;
    const char *out;
    const char *label;
    int progress; /* -1 auto */
    long payload_bytes; /* echo: 0 = a Verify request's size */
    bool no_header;
    const char *user_pattern; /* pre-existing users (authd-seed) instead of registering */
    unsigned long user_count;
    unsigned long user_first;
    const char *password; /* NULL: random (registered users) or authd-seed's default */
    bool peak_window; /* reset the server's VmHWM when the measured window opens */
};

/* ---- run state --------------------------------------------------------- */

enum phase { P_SETUP, P_WARMUP, P_MEASURE, P_DRAIN };

struct bench;
struct group;

/* One request slot: what is in flight, and for whom. */
struct op {
    struct bench *b;
    struct group *g;
    unsigned conn; /* closed loop: the op's connection in its group */
    uint32_t rng;
    enum kind kind;
    bool expect_ok; /* false: an invalid token, UNAUTHENTICATED expected */
    int token; /* index in b->tokens for verify */
    uint64_t t0_ns; /* send time (closed loop) or scheduled time (open) */
    struct op *next_free; /* open loop: on the group's free stack */
    /* refresh: the op's own chain. Only one Refresh of it is ever in
     * flight (the op's), so the reply's token is the next one to send. */
    char refresh[REFRESH_TOKEN_MAX];
    /* logout: the access token of the session the op logged in to and
     * will log out next; empty: the op logs in first. */
    char access[ACCESS_TOKEN_MAX];
};

struct group {
    struct bench *b;
    int id; /* 0: measured group, 1: login flood */
    const char *name;
    authd_client **clients;
    unsigned nconns;
    struct op *ops;
    unsigned nops;
    double mix[3]; /* cumulative thresholds, out of 1e6 */
    bool open_loop;
    /* open loop */
    pthread_mutex_t mu;
    struct op *free_ops;
    uint64_t issued; /* requests handed to an op */
    uint64_t due; /* requests whose scheduled time has come */
    uint64_t sched_t0;
    double interval_ns;
    uint64_t backlog_max; /* most requests due but not yet sent */
    uint64_t unsent_at_end; /* due but unsent when the window closed */
};

struct token {
    char *jwt;
    char username[40];
    bool valid;
};

struct user {
    char username[40];
    char email[96];
};

/* One thread's counters; reasons is a short table of distinct statuses. */
struct reason_count {
    uint8_t kind;
    uint8_t code;
    bool expected;
    char reason[48];
    uint64_t n;
};

struct tstats {
    struct tstats *next;
    _Atomic uint64_t completed[2]; /* per group, every phase: progress */
    _Atomic uint64_t failed[2]; /* per group, unexpected outcomes: progress */
    uint64_t ok[N_KINDS];
    uint64_t rejected[N_KINDS]; /* expected rejections (invalid tokens) */
    uint64_t errors[N_KINDS]; /* unexpected outcomes */
    uint64_t wrong_accept[N_KINDS]; /* invalid token answered OK */
    struct reason_count reasons[MAX_REASONS];
    unsigned nreasons;
    uint64_t reasons_dropped;
    bench_hist hist[N_KINDS];
};

struct proc_sample {
    bool ok;
    double cpu_s; /* utime + stime */
    long rss_kb; /* VmRSS */
    long hwm_kb; /* VmHWM: peak RSS */
};

struct bench {
    struct opts o;
    char run_id[9];
    _Atomic int phase;
    _Atomic long outstanding; /* ops with a call in flight */
    _Atomic uint64_t reg_seq; /* register: unique names */
    struct group groups[2];
    unsigned ngroups;
    struct user *users;
    unsigned nusers;
    user_pattern pat; /* with --user-pattern: the pre-existing users' names */
    bool use_pattern;
    char password[PASSWORD_MAX + 1];
    struct token *tokens;
    unsigned ntokens, nvalid;
    uint8_t *payload; /* echo */
    size_t payload_len;
    size_t request_bytes; /* the size of a representative request envelope */
    pthread_mutex_t stats_mu; /* guards the thread registry */
    struct tstats *all_stats;
    pthread_mutex_t park_mu; /* ops whose call could not start */
    struct op **parked;
    unsigned nparked, park_cap;
    pthread_t sched_thread;
    bool sched_running;
    /* measured window */
    uint64_t t_begin, t_end;
    struct rusage ru_begin, ru_end;
    struct proc_sample srv_begin, srv_end;
};

static _Thread_local struct tstats *my_stats;
static struct bench *the_bench; /* for my_stats registration only */
static volatile sig_atomic_t interrupted;

static void sleep_until(uint64_t t)
{
    struct timespec ts = { .tv_sec = (time_t)(t / NS_PER_S), .tv_nsec = (long)(t % NS_PER_S) };

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !interrupted) { }
}

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("authbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ---- per-thread statistics ------------------------------------------------ */

/*
** stats returns the calling thread's counters, making and registering them
** on the thread's first sample (one allocation per thread, ever).
*/
static struct tstats *stats(void)
{
    struct tstats *t = my_stats;

    if (t != NULL) {
        return t;
    }
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        fputs("authbench: out of memory\n", stderr);
        abort();
    }
    for (int k = 0; k < N_KINDS; k++) {
        bench_hist_init(&t->hist[k]);
    }
    pthread_mutex_lock(&the_bench->stats_mu);
    t->next = the_bench->all_stats;
    the_bench->all_stats = t;
    pthread_mutex_unlock(&the_bench->stats_mu);
    return my_stats = t;
}

static void count_reason(
    struct tstats *t, enum kind kind, int code, bool expected, const char *reason)
{
    for (unsigned i = 0; i < t->nreasons; i++) {
        struct reason_count *r = &t->reasons[i];
        if (r->kind == kind && r->code == code && r->expected == expected
            && strcmp(r->reason, reason) == 0) {
            r->n++;
            return;
        }
    }
    if (t->nreasons == MAX_REASONS) {
        t->reasons_dropped++;
        return;
    }
    t->reasons[t->nreasons] = (struct reason_count) {
        .kind = (uint8_t)kind, .code = (uint8_t)code, .expected = expected, .n = 1
    };
    snprintf(t->reasons[t->nreasons].reason, sizeof(t->reasons[0].reason), "%s", reason);
    t->nreasons++;
}

/*
** record classifies one outcome and, inside the measured window, records
** its latency. Verify of an invalid token must be UNAUTHENTICATED; a yes
** there is a wrong accept (and an error); every other kind must be OK.
*/
static void record(struct op *op, int code, const char *reason, uint64_t end)
{
    struct bench *b = op->b;
    struct tstats *t = stats();
    enum kind k = op->kind;
    bool bad;

    bad = op->expect_ok ? code != AUTHD_OK : code != AUTHD_UNAUTHENTICATED;
    atomic_fetch_add_explicit(&t->completed[op->g->id], 1, memory_order_relaxed);
    if (bad) {
        atomic_fetch_add_explicit(&t->failed[op->g->id], 1, memory_order_relaxed);
    }
    if (atomic_load_explicit(&b->phase, memory_order_relaxed) != P_MEASURE) {
        return;
    }
    bench_hist_record(&t->hist[k], end > op->t0_ns ? end - op->t0_ns : 0);
    if (!bad) {
        if (code == AUTHD_OK) {
            t->ok[k]++;
        } else {
            t->rejected[k]++;
            count_reason(t, k, code, true, reason);
        }
        return;
    }
    t->errors[k]++;
    if (code == AUTHD_OK) {
        t->wrong_accept[k]++;
        count_reason(t, k, code, false, "WRONG_ACCEPT");
    } else {
        count_reason(t, k, code, false, reason);
    }
}

/* ---- issuing requests ------------------------------------------------------- */

static void op_issue(struct op *op, uint64_t t0);

static bool running(struct bench *b)
{
    int p = atomic_load_explicit(&b->phase, memory_order_relaxed);
    return (p == P_WARMUP || p == P_MEASURE) && !interrupted;
}

/*
** op_next decides what an op does once its call completed: the next
** request (closed loop), the next one due (open loop), or rest.
*/
static void op_next(struct op *op)
{
    struct group *g = op->g;
    struct bench *b = op->b;

    if (!running(b)) {
        atomic_fetch_sub(&b->outstanding, 1);
        return;
    }
    if (!g->open_loop) {
        op_issue(op, authd_monotonic_ns());
        return;
    }
    pthread_mutex_lock(&g->mu);
    if (g->issued < g->due) {
        uint64_t k = g->issued++;
        pthread_mutex_unlock(&g->mu);
        op_issue(op, g->sched_t0 + (uint64_t)((double)k * g->interval_ns));
        return;
    }
    op->next_free = g->free_ops;
    g->free_ops = op;
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_sub(&b->outstanding, 1);
}

static void on_reply(void *arg, int code, const authd_status *st, ProtobufCMessage *resp)
{
    struct op *op = arg;
    uint64_t end = authd_monotonic_ns();
    const char *reason = st->reason;

    if (code == AUTHD_OK && op->kind == K_VERIFY && resp != NULL) {
        /* The reply must be about the token's own user. */
        Authd__V1__VerifyResponse *vr = (Authd__V1__VerifyResponse *)resp;
        const struct token *tk = &op->b->tokens[op->token];
        if (vr->username == NULL || strcmp(vr->username, tk->username) != 0) {
            code = AUTHD_INTERNAL;
            reason = "WRONG_USER";
        }
    }
    if (op->kind == K_REFRESH) {
        /* The chain moves on: a reply must carry a token unlike the one
         * sent (an old or duplicated answer would not), which the next
         * Refresh sends. A failed one leaves the op's chain as it was. */
        Authd__V1__RefreshResponse *rr = (Authd__V1__RefreshResponse *)resp;
        if (code == AUTHD_OK
            && (rr == NULL || rr->refresh_token == NULL
                || strlen(rr->refresh_token) >= sizeof(op->refresh)
                || strcmp(rr->refresh_token, op->refresh) == 0)) {
            code = AUTHD_INTERNAL;
            reason = "STALE_REFRESH_TOKEN";
        } else if (code == AUTHD_OK) {
            snprintf(op->refresh, sizeof(op->refresh), "%s", rr->refresh_token);
        }
    }
    if (op->b->o.wl == W_LOGOUT && op->kind == K_LOGIN) {
        /* The login half of a pair: keep its session for the Logout. */
        Authd__V1__LoginResponse *lr = (Authd__V1__LoginResponse *)resp;
        if (code == AUTHD_OK
            && (lr == NULL || lr->access_token == NULL || lr->access_token[0] == '\0'
                || strlen(lr->access_token) >= sizeof(op->access))) {
            code = AUTHD_INTERNAL;
            reason = "NO_ACCESS_TOKEN";
        } else if (code == AUTHD_OK) {
            snprintf(op->access, sizeof(op->access), "%s", lr->access_token);
        }
    } else if (op->kind == K_LOGOUT) {
        /* Whatever the answer, that session is done with: the next call
         * logs in to a fresh one (a failed Logout is not retried). */
        op->access[0] = '\0';
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    record(op, code, reason, end);
    op_next(op);
}

static void on_echo(void *arg, int code, const authd_status *st, const void *reply, size_t len)
{
    struct op *op = arg;
    uint64_t end = authd_monotonic_ns();
    const char *reason = st->reason;

    if (code == AUTHD_OK
        && (len != op->b->payload_len || memcmp(reply, op->b->payload, len) != 0)) {
        code = AUTHD_INTERNAL;
        reason = "ECHO_MISMATCH";
    }
    record(op, code, reason, end);
    op_next(op);
}

/* pick_kind draws the op's next request kind from the group's mix. */
static enum kind pick_kind(struct op *op)
{
    struct group *g = op->g;
    double r;

    if (op->b->o.wl == W_ECHO) {
        return K_ECHO;
    }
    if (op->b->o.wl == W_REFRESH) {
        return K_REFRESH;
    }
    if (op->b->o.wl == W_LOGOUT) {
        return op->access[0] == '\0' ? K_LOGIN : K_LOGOUT;
    }
    r = (double)(xorshift(&op->rng) % 1000000u);
    if (r < g->mix[0]) {
        return K_VERIFY;
    }
    if (r < g->mix[1]) {
        return K_LOGIN;
    }
    return K_REGISTER;
}

/*
** op_issue starts the op's next call, its latency counted from t0. A call
** that cannot start (out of memory, client closing) counts as an error
** and parks the op; the main loop restarts parked ops every tick.
*/
static void op_issue(struct op *op, uint64_t t0)
{
    struct bench *b = op->b;
    struct group *g = op->g;
    authd_client *c;
    int rc = AUTHD_INVALID_ARGUMENT;

    op->kind = pick_kind(op);
    op->expect_ok = true;
    op->t0_ns = t0;
    c = g->clients[g->open_loop ? xorshift(&op->rng) % g->nconns : op->conn];
    switch (op->kind) {
    case K_VERIFY: {
        Authd__V1__VerifyRequest req = AUTHD__V1__VERIFY_REQUEST__INIT;
        uint32_t r = xorshift(&op->rng);
        if (b->ntokens > b->nvalid && (double)(r % 1000000u) < b->o.invalid_share * 10000.0) {
            op->token = (int)(b->nvalid + xorshift(&op->rng) % (b->ntokens - b->nvalid));
            op->expect_ok = false;
        } else {
            op->token = (int)(xorshift(&op->rng) % b->nvalid);
        }
        req.access_token = b->tokens[op->token].jwt;
        rc = authd_client_verify_async(c, &req, on_reply, op);
        break;
    }
    case K_LOGIN: {
        Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
        char name[NAME_MAX_LEN + 1];
        if (b->o.wl == W_LOGOUT) {
            /* Each slot its own user (as refresh): logins of one account
             * in flight at once count against its throttle before the
             * password is checked, so piling them up gets them refused. */
            req.login = b->users[(unsigned)(op - g->ops) % b->nusers].username;
        } else if (b->use_pattern) {
            /* Any user of the seeded range: the whole index is in play. */
            unsigned long n = b->o.user_first
                + (((unsigned long)xorshift(&op->rng) << 32) | xorshift(&op->rng))
                    % b->o.user_count;
            user_pattern_format(&b->pat, n, name, sizeof(name));
            req.login = name;
        } else {
            req.login = b->users[xorshift(&op->rng) % b->nusers].username;
        }
        req.password = b->password;
        rc = authd_client_login_async(c, &req, on_reply, op);
        break;
    }
    case K_REGISTER: {
        Authd__V1__RegisterRequest req = AUTHD__V1__REGISTER_REQUEST__INIT;
        char name[40], email[96];
        uint64_t n = atomic_fetch_add(&b->reg_seq, 1);
        snprintf(name, sizeof(name), "b%sr%" PRIu64, b->run_id, n);
        snprintf(email, sizeof(email), "%s@bench.example.com", name);
        req.username = name;
        req.email = email;
        req.password = b->password;
        rc = authd_client_register_async(c, &req, on_reply, op);
        break;
    }
    case K_ECHO:
        rc = authd_client_call_raw_async(c, b->payload, b->payload_len, on_echo, op);
        break;
    case K_REFRESH: {
        Authd__V1__RefreshRequest req = AUTHD__V1__REFRESH_REQUEST__INIT;
        req.refresh_token = op->refresh;
        rc = authd_client_refresh_async(c, &req, on_reply, op);
        break;
    }
    case K_LOGOUT: {
        Authd__V1__LogoutRequest req = AUTHD__V1__LOGOUT_REQUEST__INIT;
        req.access_token = op->access;
        rc = authd_client_logout_async(c, &req, on_reply, op);
        break;
    }
    case N_KINDS:
        break;
    }
    if (rc == AUTHD_OK) {
        return;
    }
    record(op, rc, "NOT_STARTED", authd_monotonic_ns());
    atomic_fetch_sub(&b->outstanding, 1);
    pthread_mutex_lock(&b->park_mu);
    if (b->nparked < b->park_cap) {
        b->parked[b->nparked++] = op;
    }
    pthread_mutex_unlock(&b->park_mu);
}

/* unpark restarts ops whose call could not start (main thread, each tick). */
static void unpark(struct bench *b)
{
    struct op *list[64];
    unsigned n;

    do {
        pthread_mutex_lock(&b->park_mu);
        n = b->nparked < 64 ? b->nparked : 64;
        b->nparked -= n;
        memcpy(list, b->parked + b->nparked, n * sizeof(list[0]));
        pthread_mutex_unlock(&b->park_mu);
        for (unsigned i = 0; i < n; i++) {
            if (!running(b)) {
                if (list[i]->g->open_loop) {
                    pthread_mutex_lock(&list[i]->g->mu);
                    list[i]->next_free = list[i]->g->free_ops;
                    list[i]->g->free_ops = list[i];
                    pthread_mutex_unlock(&list[i]->g->mu);
                }
                continue;
            }
            atomic_fetch_add(&b->outstanding, 1);
            op_issue(list[i], list[i]->g->open_loop ? list[i]->t0_ns : authd_monotonic_ns());
        }
    } while (n == 64);
}

/*
** scheduler is the open-loop clock of group g: request k is due at
** sched_t0 + k * interval. Each wake-up hands every due request to a free
** op (in order); what finds no free op waits in the backlog, and
** completing ops take from it (op_next), still timed from their schedule.
*/
static void *scheduler(void *arg)
{
    struct group *g = arg;
    struct bench *b = g->b;
    struct op *batch[256];
    uint64_t ks[256];

    while (running(b)) {
        uint64_t now = authd_monotonic_ns(), next;
        unsigned n = 0;

        pthread_mutex_lock(&g->mu);
        if (now >= g->sched_t0) {
            uint64_t due = (uint64_t)((double)(now - g->sched_t0) / g->interval_ns) + 1;
            if (due > g->due) {
                g->due = due;
            }
        }
        while (g->free_ops != NULL && g->issued < g->due && n < 256) {
            batch[n] = g->free_ops;
            g->free_ops = batch[n]->next_free;
            ks[n++] = g->issued++;
        }
        if (g->due - g->issued > g->backlog_max) {
            g->backlog_max = g->due - g->issued;
        }
        next = g->sched_t0 + (uint64_t)((double)g->due * g->interval_ns);
        pthread_mutex_unlock(&g->mu);

        atomic_fetch_add(&b->outstanding, (long)n);
        for (unsigned i = 0; i < n; i++) {
            op_issue(batch[i], g->sched_t0 + (uint64_t)((double)ks[i] * g->interval_ns));
        }
        if (n == 256) {
            continue;
        }
        /* Sleep to the next due time, in steps of 50 us to 5 ms. */
        now = authd_monotonic_ns();
        if (next < now + 50000) {
            next = now + 50000;
        }
        if (next > now + 5 * NS_PER_MS) {
            next = now + 5 * NS_PER_MS;
        }
        sleep_until(next);
    }
    return NULL;
}

/* ---- setup ------------------------------------------------------------------ */

static authd_client *open_client(const struct opts *o)
{
    authd_client_options co = { 0 };
    authd_client *c = NULL;
    authd_status st;

    co.url = o->url;
    co.ca_file = o->ca;
    co.cert_file = o->cert;
    co.key_file = o->key;
    co.server_name = o->server_name;
    co.timeout_ms = o->timeout_ms;
    co.allow_plaintext = o->plaintext;
    if (authd_client_open(&co, &c, &st) != AUTHD_OK) {
        die("cannot connect to %s: %s: %s [%s]", o->url, authd_code_str(st.code), st.message,
            st.reason);
    }
    return c;
}

static void random_hex(char *out, size_t nbytes)
{
    for (size_t i = 0; i < nbytes; i++) {
        snprintf(out + 2 * i, 3, "%02x", (unsigned)(nng_random() & 0xff));
    }
}

/* call_ok runs one synchronous setup call and dies on failure. */
static void setup_check(int rc, const authd_status *st, const char *what)
{
    if (rc != AUTHD_OK) {
        die("setup: %s: %s: %s [%s]", what, authd_code_str(st->code), st->message, st->reason);
    }
}

static char *login_token(authd_client *c, struct bench *b, unsigned u)
{
    Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__LoginResponse *resp = NULL;
    authd_status st;
    char *jwt;

    req.login = b->users[u].username;
    req.password = b->password;
    setup_check(authd_client_login(c, &req, &resp, &st), &st, "login");
    if ((jwt = strdup(resp->access_token)) == NULL) {
        die("out of memory");
    }
    authd__v1__login_response__free_unpacked(resp, NULL);
    return jwt;
}

/*
** setup_refresh logs each op of group g in once, as user i % nusers: every
** op then refreshes its own session's chain, so no two calls in flight
** ever present the same token (which the server would answer REPLAYED or
** REUSED, not rotate).
*/
static void setup_refresh(struct bench *b, struct group *g)
{
    uint64_t t0 = authd_monotonic_ns();

    for (unsigned i = 0; i < g->nops; i++) {
        Authd__V1__LoginRequest req = AUTHD__V1__LOGIN_REQUEST__INIT;
        Authd__V1__LoginResponse *resp = NULL;
        authd_status st;
        req.login = b->users[i % b->nusers].username;
        req.password = b->password;
        setup_check(authd_client_login(g->clients[0], &req, &resp, &st), &st, "login");
        if (resp->refresh_token == NULL || resp->refresh_token[0] == '\0'
            || strlen(resp->refresh_token) >= sizeof(g->ops[i].refresh)) {
            die("setup: login: no usable refresh token in the reply");
        }
        snprintf(g->ops[i].refresh, sizeof(g->ops[i].refresh), "%s", resp->refresh_token);
        authd__v1__login_response__free_unpacked(resp, NULL);
    }
    fprintf(stderr, "authbench: setup: %u sessions logged in for refresh in %.1f s\n", g->nops,
        (double)(authd_monotonic_ns() - t0) / 1e9);
}

/*
** pick_seeded fills b->users with --users users of the --user-pattern
** range, which already exist (authd-seed): user i is drawn at random from
** the i-th of --users equal slices of the range, so they are distinct and
** spread over the whole store.
*/
static void pick_seeded(struct bench *b)
{
    unsigned long count = b->o.user_count;
    uint32_t rng = (uint32_t)nng_random() | 1u;

    for (unsigned i = 0; i < b->nusers; i++) {
        unsigned long lo = (unsigned long)((double)count * i / b->nusers);
        unsigned long hi = (unsigned long)((double)count * (i + 1) / b->nusers);
        unsigned long n = b->o.user_first + lo + (hi > lo ? xorshift(&rng) % (hi - lo) : 0);
        user_pattern_format(&b->pat, n, b->users[i].username, sizeof(b->users[i].username));
    }
}

/*
** setup_users registers the run's users (unique names: a random run id),
** or with --user-pattern picks pre-existing ones, and, for verify, logs
** each in once for a valid token. Invalid tokens: half are valid ones with
** one signature character changed (BAD_SIGNATURE), half belong to sessions
** logged out here (REVOKED).
*/
static void setup_users(struct bench *b, authd_client *c, bool need_tokens)
{
    unsigned nbad;
    uint64_t t0 = authd_monotonic_ns();

    b->nusers = (unsigned)b->o.users;
    if ((b->users = calloc(b->nusers, sizeof(*b->users))) == NULL) {
        die("out of memory");
    }
    if (b->use_pattern) {
        pick_seeded(b);
    }
    for (unsigned i = 0; i < b->nusers && !b->use_pattern; i++) {
        Authd__V1__RegisterRequest req = AUTHD__V1__REGISTER_REQUEST__INIT;
        Authd__V1__RegisterResponse *resp = NULL;
        authd_status st;
        snprintf(b->users[i].username, sizeof(b->users[i].username), "b%su%u", b->run_id, i);
        snprintf(b->users[i].email, sizeof(b->users[i].email), "%s@bench.example.com",
            b->users[i].username);
        req.username = b->users[i].username;
        req.email = b->users[i].email;
        req.password = b->password;
        setup_check(authd_client_register(c, &req, &resp, &st), &st, "register");
        authd__v1__register_response__free_unpacked(resp, NULL);
    }
    if (!need_tokens) {
        if (!b->use_pattern) {
            fprintf(stderr, "authbench: setup: %u users registered in %.1f s\n", b->nusers,
                (double)(authd_monotonic_ns() - t0) / 1e9);
        }
        return;
    }
    nbad = b->o.invalid_share > 0 ? (b->nusers < 4 ? 2 * b->nusers : b->nusers) : 0;
    if (nbad < 2 && b->o.invalid_share > 0) {
        nbad = 2;
    }
    b->nvalid = b->nusers;
    b->ntokens = b->nvalid + nbad;
    if ((b->tokens = calloc(b->ntokens, sizeof(*b->tokens))) == NULL) {
        die("out of memory");
    }
    for (unsigned i = 0; i < b->nvalid; i++) {
        b->tokens[i].jwt = login_token(c, b, i);
        b->tokens[i].valid = true;
        snprintf(b->tokens[i].username, sizeof(b->tokens[i].username), "%s", b->users[i].username);
    }
    for (unsigned j = 0; j < nbad; j++) {
        struct token *t = &b->tokens[b->nvalid + j];
        unsigned u = j % b->nusers;
        snprintf(t->username, sizeof(t->username), "%s", b->users[u].username);
        if (j % 2 == 0) {
            /* Tampered: one character of the signature changed. */
            size_t len;
            if ((t->jwt = strdup(b->tokens[u].jwt)) == NULL) {
                die("out of memory");
            }
            len = strlen(t->jwt);
            t->jwt[len - 10] = t->jwt[len - 10] == 'A' ? 'B' : 'A';
        } else {
            /* Revoked: a session of its own, logged out. */
            Authd__V1__LogoutRequest req = AUTHD__V1__LOGOUT_REQUEST__INIT;
            Authd__V1__LogoutResponse *resp = NULL;
            authd_status st;
            t->jwt = login_token(c, b, u);
            req.access_token = t->jwt;
            setup_check(authd_client_logout(c, &req, &resp, &st), &st, "logout");
            authd__v1__logout_response__free_unpacked(resp, NULL);
        }
    }
    fprintf(stderr, "authbench: setup: %u %s users, %u valid + %u invalid tokens in %.1f s\n",
        b->nusers, b->use_pattern ? "pre-existing" : "registered", b->nvalid, nbad,
        (double)(authd_monotonic_ns() - t0) / 1e9);
}

/* b64_len: unpadded base64url length of n bytes. */
static size_t b64_len(size_t n)
{
    return (4 * n + 2) / 3;
}

/*
** setup_payload builds the echo request: a real Verify request envelope
** whose token has the exact shape of authd's (HS256 at+jwt header with a
** 16-hex kid; iss/aud "authd", 32-hex sub/sid/jti, 10-digit times; 32-byte
** MAC), so echo moves the same bytes as verify; or one --payload-bytes long.
*/
static void setup_payload(struct bench *b, const char *real_token)
{
    Authd__V1__RequestEnvelope env = AUTHD__V1__REQUEST_ENVELOPE__INIT;
    Authd__V1__VerifyRequest vq = AUTHD__V1__VERIFY_REQUEST__INIT;
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"0123456789abcdef\"}";
    const char *claims = "{\"iss\":\"authd\",\"aud\":\"authd\","
                         "\"sub\":\"0123456789abcdef0123456789abcdef\","
                         "\"sid\":\"0123456789abcdef0123456789abcdef\","
                         "\"jti\":\"0123456789abcdef0123456789abcdef\","
                         "\"iat\":1700000000,\"nbf\":1700000000,\"exp\":1700000900}";
    size_t tlen = b64_len(strlen(hdr)) + 1 + b64_len(strlen(claims)) + 1 + b64_len(32);
    uint8_t body[16384];
    char *tok;

    if (real_token != NULL) {
        tlen = strlen(real_token);
    }
    if ((tok = malloc(tlen + 1)) == NULL) {
        die("out of memory");
    }
    if (real_token != NULL) {
        memcpy(tok, real_token, tlen + 1);
    } else {
        for (size_t i = 0; i < tlen; i++) {
            tok[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i % 64];
        }
        tok[tlen] = '\0';
    }
    vq.access_token = tok;
    env.method = "/authd.v1.Auth/Verify";
    env.request_id = ((uint64_t)nng_random() << 32) | nng_random() | (1ull << 63);
    env.body.len = authd__v1__verify_request__pack(&vq, body);
    env.body.data = body;
    b->request_bytes = authd__v1__request_envelope__get_packed_size(&env);
    free(tok);
    if (b->o.wl != W_ECHO) {
        return;
    }
    b->payload_len = b->o.payload_bytes > 0 ? (size_t)b->o.payload_bytes : b->request_bytes;
    if ((b->payload
            = calloc(1, b->payload_len > b->request_bytes ? b->payload_len : b->request_bytes))
        == NULL) {
        die("out of memory");
    }
    authd__v1__request_envelope__pack(&env, b->payload);
    for (size_t i = b->request_bytes; i < b->payload_len; i++) {
        b->payload[i] = (uint8_t)i;
    }
}

static void group_init(struct bench *b, struct group *g, int id, const char *name, int conns,
    int inflight, const double mix[3], double rate)
{
    g->b = b;
    g->id = id;
    g->name = name;
    g->nconns = (unsigned)conns;
    g->nops = (unsigned)inflight;
    g->mix[0] = mix[0] * 10000.0;
    g->mix[1] = (mix[0] + mix[1]) * 10000.0;
    g->mix[2] = 1e6;
    g->open_loop = rate > 0;
    g->interval_ns = rate > 0 ? 1e9 / rate : 0;
    pthread_mutex_init(&g->mu, NULL);
    if ((g->clients = calloc(g->nconns, sizeof(*g->clients))) == NULL
        || (g->ops = calloc(g->nops, sizeof(*g->ops))) == NULL) {
        die("out of memory");
    }
    for (unsigned i = 0; i < g->nconns; i++) {
        g->clients[i] = open_client(&b->o);
    }
    for (unsigned i = 0; i < g->nops; i++) {
        struct op *op = &g->ops[i];
        op->b = b;
        op->g = g;
        op->conn = i % g->nconns;
        op->rng = (uint32_t)(0x9E3779B9u * (i + 1) + 7919u * (unsigned)id) | 1u;
        if (g->open_loop) {
            op->next_free = g->free_ops;
            g->free_ops = op;
        }
    }
}

/* group_start puts the group's load on: every op issues (closed loop), or
** the scheduler starts (open loop). */
static void group_start(struct group *g)
{
    struct bench *b = g->b;

    if (!g->open_loop) {
        atomic_fetch_add(&b->outstanding, (long)g->nops);
        for (unsigned i = 0; i < g->nops; i++) {
            op_issue(&g->ops[i], authd_monotonic_ns());
        }
        return;
    }
    g->sched_t0 = authd_monotonic_ns();
    if (pthread_create(&b->sched_thread, NULL, scheduler, g) != 0) {
        die("cannot start the scheduler thread");
    }
    b->sched_running = true;
}

/* ---- measurements ------------------------------------------------------------- */

/* proc_sample reads utime+stime (from /proc/PID/stat), VmRSS and VmHWM. */
static struct proc_sample proc_read(long pid)
{
    struct proc_sample s = { 0 };
    char path[64], buf[4096], *p;
    unsigned long long ut, st;
    FILE *f;
    size_t n;

    if (pid <= 0) {
        return s;
    }
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r")) == NULL) {
        return s;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which may hold spaces: from the last ')'. */
    if ((p = strrchr(buf, ')')) == NULL
        || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        return s;
    }
    s.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    if ((f = fopen(path, "r")) != NULL) {
        while (fgets(buf, sizeof(buf), f) != NULL) {
            sscanf(buf, "VmRSS: %ld", &s.rss_kb);
            sscanf(buf, "VmHWM: %ld", &s.hwm_kb);
        }
        fclose(f);
    }
    s.ok = true;
    return s;
}

/* proc_reset_peak resets the peak RSS (VmHWM) of pid to its current RSS
** (Linux 4.0+: "5" to /proc/PID/clear_refs; the process must be ours). */
static void proc_reset_peak(long pid)
{
    char path[64];
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/clear_refs", pid);
    if ((f = fopen(path, "w")) == NULL || fputs("5", f) == EOF || fclose(f) != 0) {
        fprintf(stderr,
            "authbench: cannot reset the peak RSS of %ld (%s): the peak is since its start\n", pid,
            path);
        if (f != NULL) {
            fclose(f);
        }
    }
}

static double ru_cpu(const struct rusage *r)
{
    return (double)r->ru_utime.tv_sec + (double)r->ru_utime.tv_usec / 1e6
        + (double)r->ru_stime.tv_sec + (double)r->ru_stime.tv_usec / 1e6;
}

/* A result row: one request kind (or all kinds) of one group. */
struct row {
    const char *bench; /* authd | echo */
    const char *group; /* verify, login, register, echo, all */
    const char *mode; /* closed | open */
    unsigned conns, inflight;
    double rate;
    uint64_t requests, ok, rejected, errors, wrong_accept;
    double rps, mean_us, min_us, p50_us, p90_us, p99_us, p999_us, max_us;
    uint64_t backlog_max, unsent;
    char statuses[1024]; /* "CODE/REASON=n;..." (expected ones marked with *) */
    struct reason_count reasons[MAX_REASONS * 2];
    unsigned nreasons;
};

struct totals {
    uint64_t ok[N_KINDS], rejected[N_KINDS], errors[N_KINDS], wrong_accept[N_KINDS];
    bench_hist hist[N_KINDS];
    struct reason_count reasons[MAX_REASONS * 4];
    unsigned nreasons;
    uint64_t reasons_dropped;
};

static void merge_stats(struct bench *b, struct totals *T)
{
    memset(T, 0, sizeof(*T));
    for (int k = 0; k < N_KINDS; k++) {
        bench_hist_init(&T->hist[k]);
    }
    pthread_mutex_lock(&b->stats_mu);
    for (struct tstats *t = b->all_stats; t != NULL; t = t->next) {
        for (int k = 0; k < N_KINDS; k++) {
            T->ok[k] += t->ok[k];
            T->rejected[k] += t->rejected[k];
            T->errors[k] += t->errors[k];
            T->wrong_accept[k] += t->wrong_accept[k];
            bench_hist_merge(&T->hist[k], &t->hist[k]);
        }
        T->reasons_dropped += t->reasons_dropped;
        for (unsigned i = 0; i < t->nreasons; i++) {
            const struct reason_count *r = &t->reasons[i];
            unsigned j;
            for (j = 0; j < T->nreasons; j++) {
                struct reason_count *q = &T->reasons[j];
                if (q->kind == r->kind && q->code == r->code && q->expected == r->expected
                    && strcmp(q->reason, r->reason) == 0) {
                    q->n += r->n;
                    break;
                }
            }
            if (j == T->nreasons && T->nreasons < MAX_REASONS * 4) {
                T->reasons[T->nreasons++] = *r;
            }
        }
    }
    pthread_mutex_unlock(&b->stats_mu);
}

/* fill_row computes one row from the kinds in mask. */
static void fill_row(struct bench *b, const struct totals *T, struct row *r, unsigned mask,
    const char *group, const struct group *g)
{
    bench_hist h;
    double secs = (double)(b->t_end - b->t_begin) / 1e9;
    size_t used = 0;

    memset(r, 0, sizeof(*r));
    bench_hist_init(&h);
    r->bench = b->o.wl == W_ECHO ? "echo" : "authd";
    r->group = group;
    r->mode = g->open_loop ? "open" : "closed";
    r->conns = g->nconns;
    r->inflight = g->nops;
    r->rate = g->open_loop ? 1e9 / g->interval_ns : 0;
    r->backlog_max = g->backlog_max;
    r->unsent = g->unsent_at_end;
    for (int k = 0; k < N_KINDS; k++) {
        if (!(mask & (1u << k))) {
            continue;
        }
        r->ok += T->ok[k];
        r->rejected += T->rejected[k];
        r->errors += T->errors[k];
        r->wrong_accept += T->wrong_accept[k];
        bench_hist_merge(&h, &T->hist[k]);
    }
    r->requests = h.n;
    r->rps = secs > 0 ? (double)h.n / secs : 0;
    r->mean_us = bench_hist_mean(&h) / 1e3;
    r->min_us = h.n ? (double)h.min_ns / 1e3 : 0;
    r->p50_us = bench_hist_quantile(&h, 0.50) / 1e3;
    r->p90_us = bench_hist_quantile(&h, 0.90) / 1e3;
    r->p99_us = bench_hist_quantile(&h, 0.99) / 1e3;
    r->p999_us = bench_hist_quantile(&h, 0.999) / 1e3;
    r->max_us = (double)h.max_ns / 1e3;
    for (unsigned i = 0; i < T->nreasons; i++) {
        const struct reason_count *q = &T->reasons[i];
        int n;
        if (!(mask & (1u << q->kind))) {
            continue;
        }
        if (r->nreasons < sizeof(r->reasons) / sizeof(r->reasons[0])) {
            r->reasons[r->nreasons++] = *q;
        }
        n = snprintf(r->statuses + used, sizeof(r->statuses) - used, "%s%s%s/%s=%" PRIu64,
            used ? ";" : "", q->expected ? "*" : "", authd_code_str(q->code), q->reason, q->n);
        if (n > 0 && used + (size_t)n < sizeof(r->statuses)) {
            used += (size_t)n;
        }
    }
}

/* ---- output --------------------------------------------------------------------- */

struct common {
    double elapsed_s;
    double client_cpu_s, client_cpu_pct, client_cpu_us_per_req;
    long client_rss_peak_kb;
    bool have_server;
    double server_cpu_s, server_cpu_pct, server_cpu_us_per_req;
    long server_rss_kb, server_rss_peak_kb;
    uint64_t all_requests;
    long timestamp;
};

/* csv_field writes s for CSV: quoted when it holds a comma, quote or space. */
static void csv_str(FILE *f, const char *s)
{
    if (strpbrk(s, ",\" \n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') {
            fputc('"', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            fprintf(f, "\\%c", ch);
        } else if (ch < 0x20) {
            fprintf(f, "\\u%04x", ch);
        } else {
            fputc(ch, f);
        }
    }
    fputc('"', f);
}

static const char csv_header[]
    = "bench,label,workload,group,mode,conns,inflight,rate,duration_s,warmup_s,elapsed_s,"
      "requests,ok,rejected,errors,wrong_accept,rps,mean_us,min_us,p50_us,p90_us,p99_us,"
      "p999_us,max_us,backlog_max,unsent,request_bytes,client_cpu_s,client_cpu_pct,"
      "client_cpu_us_per_req,client_rss_peak_kb,server_cpu_s,server_cpu_pct,"
      "server_cpu_us_per_req,server_rss_kb,server_rss_peak_kb,url,timestamp,statuses\n";

static void put_csv(FILE *f, const struct bench *b, const struct row *r, const struct common *c)
{
    fprintf(f, "%s,", r->bench);
    csv_str(f, b->o.label ? b->o.label : "");
    fprintf(f,
        ",%s,%s,%s,%u,%u,%.0f,%.3f,%.3f,%.3f,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
        ",%" PRIu64 ",%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%" PRIu64 ",%" PRIu64 ",%zu,%.3f,"
        "%.1f,%.2f,%ld,",
        workload_names[b->o.wl], r->group, r->mode, r->conns, r->inflight, r->rate, b->o.duration,
        b->o.warmup, c->elapsed_s, r->requests, r->ok, r->rejected, r->errors, r->wrong_accept,
        r->rps, r->mean_us, r->min_us, r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us,
        r->backlog_max, r->unsent, b->o.wl == W_ECHO ? b->payload_len : b->request_bytes,
        c->client_cpu_s, c->client_cpu_pct, c->client_cpu_us_per_req, c->client_rss_peak_kb);
    if (c->have_server) {
        fprintf(f, "%.3f,%.1f,%.2f,%ld,%ld,", c->server_cpu_s, c->server_cpu_pct,
            c->server_cpu_us_per_req, c->server_rss_kb, c->server_rss_peak_kb);
    } else {
        fputs(",,,,,", f);
    }
    csv_str(f, b->o.url);
    fprintf(f, ",%ld,", c->timestamp);
    csv_str(f, r->statuses);
    fputc('\n', f);
}

static void put_json(FILE *f, const struct bench *b, const struct row *r, const struct common *c)
{
    fprintf(f, "{\"bench\":\"%s\",\"label\":", r->bench);
    json_str(f, b->o.label ? b->o.label : "");
    fprintf(f,
        ",\"workload\":\"%s\",\"group\":\"%s\",\"mode\":\"%s\",\"conns\":%u,\"inflight\":%u,"
        "\"rate\":%.0f,\"duration_s\":%.3f,\"warmup_s\":%.3f,\"elapsed_s\":%.3f,"
        "\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"rejected\":%" PRIu64 ",\"errors\":%" PRIu64
        ",\"wrong_accept\":%" PRIu64
        ",\"rps\":%.1f,\"mean_us\":%.1f,\"min_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
        "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"backlog_max\":%" PRIu64
        ",\"unsent\":%" PRIu64 ",\"request_bytes\":%zu,\"client_cpu_s\":%.3f,"
        "\"client_cpu_pct\":%.1f,\"client_cpu_us_per_req\":%.2f,\"client_rss_peak_kb\":%ld",
        workload_names[b->o.wl], r->group, r->mode, r->conns, r->inflight, r->rate, b->o.duration,
        b->o.warmup, c->elapsed_s, r->requests, r->ok, r->rejected, r->errors, r->wrong_accept,
        r->rps, r->mean_us, r->min_us, r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us,
        r->backlog_max, r->unsent, b->o.wl == W_ECHO ? b->payload_len : b->request_bytes,
        c->client_cpu_s, c->client_cpu_pct, c->client_cpu_us_per_req, c->client_rss_peak_kb);
    if (c->have_server) {
        fprintf(f,
            ",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f,\"server_cpu_us_per_req\":%.2f,"
            "\"server_rss_kb\":%ld,\"server_rss_peak_kb\":%ld",
            c->server_cpu_s, c->server_cpu_pct, c->server_cpu_us_per_req, c->server_rss_kb,
            c->server_rss_peak_kb);
    }
    fputs(",\"url\":", f);
    json_str(f, b->o.url);
    fprintf(f, ",\"timestamp\":%ld,\"statuses\":[", c->timestamp);
    for (unsigned i = 0; i < r->nreasons; i++) {
        const struct reason_count *q = &r->reasons[i];
        fprintf(f, "%s{\"kind\":\"%s\",\"code\":%d,\"name\":\"%s\",\"reason\":", i ? "," : "",
            kind_names[q->kind], q->code, authd_code_str(q->code));
        json_str(f, q->reason);
        fprintf(f, ",\"expected\":%s,\"count\":%" PRIu64 "}", q->expected ? "true" : "false", q->n);
    }
    fputs("]}\n", f);
}

/* put_kv writes the stable one-line summary, parsed like the gRPC peer's. */
static void put_kv(FILE *f, const struct bench *b, const struct row *r, const struct common *c)
{
    fprintf(f, "bench=%s workload=%s group=%s mode=%s conns=%u inflight=%u", r->bench,
        workload_names[b->o.wl], r->group, r->mode, r->conns, r->inflight);
    if (b->o.label != NULL) {
        fputs(" label=", f);
        for (const char *s = b->o.label; *s; s++) {
            fputc(*s == ' ' || *s == '=' ? '_' : *s, f);
        }
    }
    if (r->rate > 0) {
        fprintf(f, " rate=%.0f", r->rate);
    }
    fprintf(f,
        " rps=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f"
        " requests=%" PRIu64 " errors=%" PRIu64 " rejected=%" PRIu64 " client_cpu_pct=%.1f",
        r->rps, r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us, r->requests, r->errors,
        r->rejected, c->client_cpu_pct);
    if (c->have_server) {
        fprintf(f, " server_cpu_pct=%.1f server_rss_peak_kb=%ld", c->server_cpu_pct,
            c->server_rss_peak_kb);
    }
    fputc('\n', f);
}

static void put_table(
    FILE *f, const struct bench *b, const struct row *rows, unsigned n, const struct common *c)
{
    fprintf(f, "\nauthbench: %s against %s, %.1f s measured (+%.1f s warm-up)\n",
        workload_names[b->o.wl], b->o.url, c->elapsed_s, b->o.warmup);
    fprintf(f, "%-9s %-6s %5s %8s %9s %10s %8s %8s %8s %8s %8s %9s %9s %7s %8s\n", "group", "mode",
        "conns", "inflight", "requests", "rps", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us",
        "max_us", "errors", "wrong", "rejected");
    for (unsigned i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        fprintf(f,
            "%-9s %-6s %5u %8u %9" PRIu64 " %10.0f %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f %9" PRIu64
            " %7" PRIu64 " %8" PRIu64 "\n",
            r->group, r->mode, r->conns, r->inflight, r->requests, r->rps, r->mean_us, r->p50_us,
            r->p90_us, r->p99_us, r->p999_us, r->max_us, r->errors, r->wrong_accept, r->rejected);
        if (r->rate > 0) {
            fprintf(f,
                "          open loop at %.0f/s: backlog max %" PRIu64
                ", due but unsent at the end %" PRIu64 "\n",
                r->rate, r->backlog_max, r->unsent);
        }
    }
    for (unsigned i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (r->nreasons == 0
            || (n > 1 && strcmp(r->group, "all") != 0 && i > 0
                && strcmp(rows[0].group, "all") == 0)) {
            continue;
        }
        fprintf(f, "statuses (%s):\n", r->group);
        for (unsigned j = 0; j < r->nreasons; j++) {
            const struct reason_count *q = &r->reasons[j];
            fprintf(f, "  %-9s %-20s %-22s %10" PRIu64 "%s\n", kind_names[q->kind],
                authd_code_str(q->code), q->reason, q->n, q->expected ? "  (expected)" : "");
        }
    }
    fprintf(f, "client: cpu %.2f s = %.1f%% of one core, %.2f us/request; peak rss %ld KiB\n",
        c->client_cpu_s, c->client_cpu_pct, c->client_cpu_us_per_req, c->client_rss_peak_kb);
    if (c->have_server) {
        fprintf(f,
            "server: cpu %.2f s = %.1f%% of one core, %.2f us/request; rss %ld KiB, peak %ld "
            "KiB\n",
            c->server_cpu_s, c->server_cpu_pct, c->server_cpu_us_per_req, c->server_rss_kb,
            c->server_rss_peak_kb);
    }
    if (c->client_cpu_pct > 85.0 * (double)sysconf(_SC_NPROCESSORS_ONLN) / 2.0) {
        fprintf(f, "note: the client used %.0f%% of a core: it may be the bottleneck\n",
            c->client_cpu_pct);
    }
    fputc('\n', f);
}

/* ---- the run ------------------------------------------------------------------------ */

static long total_completed(struct bench *b, int group, uint64_t *failed)
{
    uint64_t n = 0, e = 0;

    pthread_mutex_lock(&b->stats_mu);
    for (struct tstats *t = b->all_stats; t != NULL; t = t->next) {
        n += atomic_load_explicit(&t->completed[group], memory_order_relaxed);
        e += atomic_load_explicit(&t->failed[group], memory_order_relaxed);
    }
    pthread_mutex_unlock(&b->stats_mu);
    if (failed != NULL) {
        *failed = e;
    }
    return (long)n;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/*
** run drives the phases from the main thread: ticks of 50 ms restart
** parked ops and, once a second, print the progress line.
*/
static void run(struct bench *b, bool progress)
{
    uint64_t t_start = authd_monotonic_ns();
    uint64_t t_measure = t_start + (uint64_t)(b->o.warmup * 1e9);
    uint64_t t_stop = t_measure + (uint64_t)(b->o.duration * 1e9);
    uint64_t next_progress = t_start + NS_PER_S, last_t = t_start;
    long last[2] = { 0, 0 };
    uint64_t drain_deadline;

    atomic_store(&b->phase, b->o.warmup > 0 ? P_WARMUP : P_MEASURE);
    if (b->o.warmup <= 0) {
        if (b->o.peak_window && b->o.server_pid > 0) {
            proc_reset_peak(b->o.server_pid);
        }
        getrusage(RUSAGE_SELF, &b->ru_begin);
        b->srv_begin = proc_read(b->o.server_pid);
        b->t_begin = authd_monotonic_ns();
    }
    for (unsigned i = 0; i < b->ngroups; i++) {
        group_start(&b->groups[i]);
    }
    /* Issuing the first requests can take a while (1,000 connections each
     * starting a call): the warm-up and the window start after it. */
    uint64_t t_started = authd_monotonic_ns();
    if (t_started - t_start > NS_PER_S) {
        fprintf(stderr, "authbench: starting the first %u requests took %.1f s\n",
            b->groups[0].nops, (double)(t_started - t_start) / 1e9);
    }
    t_measure += t_started - t_start;
    t_stop += t_started - t_start;
    for (;;) {
        uint64_t now = authd_monotonic_ns();
        int phase = atomic_load(&b->phase);
        if (interrupted) {
            break;
        }
        if (phase == P_WARMUP && now >= t_measure) {
            if (b->o.peak_window && b->o.server_pid > 0) {
                proc_reset_peak(b->o.server_pid);
            }
            getrusage(RUSAGE_SELF, &b->ru_begin);
            b->srv_begin = proc_read(b->o.server_pid);
            b->t_begin = authd_monotonic_ns();
            atomic_store(&b->phase, P_MEASURE);
        } else if (phase == P_MEASURE && now >= t_stop) {
            break;
        }
        unpark(b);
        if (progress && now >= next_progress) {
            double dt = (double)(now - last_t) / 1e9;
            fprintf(stderr, "\r[%s %5.1f/%.0fs]", phase == P_WARMUP ? "warm-up" : "measure",
                (double)(now - t_start) / 1e9, b->o.warmup + b->o.duration);
            for (unsigned i = 0; i < b->ngroups; i++) {
                uint64_t failed;
                long n = total_completed(b, (int)i, &failed);
                fprintf(stderr, " %s %.0f/s errors %" PRIu64, b->groups[i].name,
                    (double)(n - last[i]) / dt, failed);
                last[i] = n;
            }
            fputs("   ", stderr);
            last_t = now;
            next_progress += NS_PER_S;
        }
        sleep_until(now + 50 * NS_PER_MS < t_stop ? now + 50 * NS_PER_MS : t_stop);
    }
    /* Close the window: samples from here on are not recorded. */
    b->t_end = authd_monotonic_ns();
    atomic_store(&b->phase, P_DRAIN);
    getrusage(RUSAGE_SELF, &b->ru_end);
    b->srv_end = proc_read(b->o.server_pid);
    if (b->t_begin == 0) { /* interrupted during warm-up */
        b->t_begin = b->t_end;
        b->ru_begin = b->ru_end;
        b->srv_begin = b->srv_end;
    }
    for (unsigned i = 0; i < b->ngroups; i++) {
        struct group *g = &b->groups[i];
        if (g->open_loop) {
            pthread_mutex_lock(&g->mu);
            g->unsent_at_end = g->due - g->issued;
            pthread_mutex_unlock(&g->mu);
        }
    }
    if (progress) {
        fputs("\r\033[K", stderr);
    }
    if (b->sched_running) {
        pthread_join(b->sched_thread, NULL);
    }
    unpark(b); /* returns parked ops to their free lists */
    /* Drain: wait for the calls in flight (they end by their deadline). */
    drain_deadline = authd_monotonic_ns() + (uint64_t)b->o.timeout_ms * NS_PER_MS + 2 * NS_PER_S;
    while (atomic_load(&b->outstanding) > 0 && authd_monotonic_ns() < drain_deadline) {
        nng_msleep(5);
    }
}

/* ---- options ------------------------------------------------------------------------- */

static const char usage[]
    = "usage: authbench [OPTIONS]\n"
      "\n"
      "Load generator for authd (and authd-echo) over TLS, on libauthd-client's\n"
      "async calls. Prints a table, a CSV row or a JSON object per result, and a\n"
      "key=value summary line per result (on stderr when stdout has csv/json).\n"
      "\n"
      "Target:\n"
      "  --url URL             server (default " DEFAULT_URL ")\n"
      "  --ca FILE             CA the server certificate must chain to (default " DEFAULT_CA ")\n"
      "  --cert FILE --key FILE  client certificate for mutual TLS\n"
      "  --server-name NAME    name the server certificate must match\n"
      "  --plaintext           allow a tcp:// URL (testing only)\n"
      "  --timeout-ms MS       deadline of each call (default 5000)\n"
      "\n"
      "Load:\n"
      "  --workload W          verify (default), login, register, mixed,\n"
      "                        verify-under-login-flood, echo (against authd-echo),\n"
      "                        refresh (each in-flight slot logs in once, then\n"
      "                        refreshes its own token chain), logout (each\n"
      "                        in-flight slot repeats a pair: Login (the\n"
      "                        \"login\" row), then Logout of that fresh session\n"
      "                        (the \"logout\" row: its latency is Logout's\n"
      "                        alone, but its rate is bounded by the Logins\n"
      "                        between; a Logout not OK is an error). Slot i\n"
      "                        logs in as user i mod --users: keep --users >=\n"
      "                        --inflight / --login-free-attempts (5), or logins\n"
      "                        of one account in flight at once are throttled\n"
      "  --connections C       TLS connections, one client each (default 1)\n"
      "  --inflight N          requests outstanding in all, spread over the\n"
      "                        connections (default 16); with --rate, the most\n"
      "                        that may be outstanding\n"
      "  --duration S          measured seconds (default 10)\n"
      "  --warmup S            seconds of load before measuring (default 1)\n"
      "  --rate R              open loop: R requests/s on a fixed schedule; latency\n"
      "                        counts from each request's scheduled time (default:\n"
      "                        closed loop, each completion sends the next)\n"
      "  --users K             users registered (and logged in) at setup (default 16);\n"
      "                        tokens live --token-ttl (900 s by default) on the server\n"
      "  --user-pattern P      use pre-existing users (authd-seed) instead of\n"
      "                        registering: user n is named P with n for its %u,\n"
      "                        %Nu or %0Nu (e.g. seed%07u); logins go to users drawn\n"
      "                        at random from the whole range, and verify logs in\n"
      "                        --users K of them, spread over the range, for tokens\n"
      "  --user-count N        with --user-pattern: the range is N users ...\n"
      "  --user-first F        ... from user F (default 0)\n"
      "  --password P          the users' password (default: a random one for the\n"
      "                        registered users; with --user-pattern, authd-seed's\n"
      "                        default, " USER_PATTERN_DEFAULT_PASSWORD ")\n"
      "  --invalid-share P     verify: percent of requests with a tampered or\n"
      "                        revoked token, which must fail UNAUTHENTICATED (default 0)\n"
      "  --mix V,L,R           mixed: percent verify, login, register (default 95,4,1);\n"
      "                        a closed loop is paced by its slow logins: add --rate\n"
      "  --flood-connections F  verify-under-login-flood: connections of the login\n"
      "                        group (default 1); the verify group uses --connections\n"
      "  --flood-inflight N    logins in flight in the flood group (default 32)\n"
      "  --payload-bytes N     echo: message size (default: the size of a Verify\n"
      "                        request envelope with a token of authd's shape)\n"
      "\n"
      "Report:\n"
      "  --server-pid PID      also report the server's CPU time over the window\n"
      "                        (/proc/PID/stat) and its peak RSS (VmHWM)\n"
      "  --server-peak-window  reset that peak (/proc/PID/clear_refs) when the\n"
      "                        measured window opens, so it is the window's peak\n"
      "                        rather than the process's since it started\n"
      "  --format F            table (default), csv, json (one object per line)\n"
      "  --out FILE            append the rows (in --format csv or json; csv if\n"
      "                        table) to FILE, a CSV header first when it is empty;\n"
      "                        stdout then gets the table\n"
      "  --no-header           csv on stdout: no header line\n"
      "  --label TEXT          a tag for this run in every row (e.g. the system)\n"
      "  --progress, --no-progress  the per-second progress line on stderr\n"
      "                        (default: on a terminal, for runs over 3 s)\n"
      "  -h, --help            this text\n"
      "      --version         print the version\n"
      "\n"
      "Latency is measured per request from send (closed loop) or scheduled\n"
      "time (open loop) to the callback, in a log-linear histogram (<1% error).\n"
      "errors counts unexpected outcomes (wrong = an invalid token accepted);\n"
      "rejected counts the expected rejections of --invalid-share.\n"
      "\n"
      "Summary line, one per result row:\n"
      "  bench=authd workload=verify group=verify mode=closed conns=1 inflight=16\n"
      "  rps=.. p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. requests=..\n"
      "  errors=.. rejected=.. client_cpu_pct=.. [server_cpu_pct=.. server_rss_peak_kb=..]\n"
      "Exit status: 0 done (even with errors), 1 setup or connection failure,\n"
      "2 usage error, 3 wrong accepts (an invalid token verified OK).\n";

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("authbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(authbench --help lists the options)\n", stderr);
    exit(2);
}

static double num(const char *name, const char *v, double lo, double hi)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(d >= lo && d <= hi)) {
        usage_error("--%s: want a number from %g to %g, got '%s'", name, lo, hi, v);
    }
    return d;
}

static void parse(int argc, char **argv, struct opts *o)
{
    enum {
        O_URL = 256,
        O_CA,
        O_CERT,
        O_KEY,
        O_SNAME,
        O_PLAIN,
        O_TIMEOUT,
        O_WL,
        O_CONNS,
        O_INFL,
        O_DUR,
        O_WARM,
        O_RATE,
        O_USERS,
        O_INVALID,
        O_MIX,
        O_FCONNS,
        O_FINFL,
        O_PAYLOAD,
        O_PID,
        O_FMT,
        O_OUT,
        O_NOHDR,
        O_LABEL,
        O_PROG,
        O_NOPROG,
        O_UPAT,
        O_UCOUNT,
        O_UFIRST,
        O_PASSWORD,
        O_PEAKWIN,
        O_VERSION
    };
    static const struct option lo[] = {
        { "url", required_argument, NULL, O_URL },
        { "ca", required_argument, NULL, O_CA },
        { "cert", required_argument, NULL, O_CERT },
        { "key", required_argument, NULL, O_KEY },
        { "server-name", required_argument, NULL, O_SNAME },
        { "plaintext", no_argument, NULL, O_PLAIN },
        { "timeout-ms", required_argument, NULL, O_TIMEOUT },
        { "workload", required_argument, NULL, O_WL },
        { "connections", required_argument, NULL, O_CONNS },
        { "inflight", required_argument, NULL, O_INFL },
        { "duration", required_argument, NULL, O_DUR },
        { "warmup", required_argument, NULL, O_WARM },
        { "rate", required_argument, NULL, O_RATE },
        { "users", required_argument, NULL, O_USERS },
        { "invalid-share", required_argument, NULL, O_INVALID },
        { "mix", required_argument, NULL, O_MIX },
        { "flood-connections", required_argument, NULL, O_FCONNS },
        { "flood-inflight", required_argument, NULL, O_FINFL },
        { "payload-bytes", required_argument, NULL, O_PAYLOAD },
        { "server-pid", required_argument, NULL, O_PID },
        { "format", required_argument, NULL, O_FMT },
        { "out", required_argument, NULL, O_OUT },
        { "no-header", no_argument, NULL, O_NOHDR },
        { "label", required_argument, NULL, O_LABEL },
        { "progress", no_argument, NULL, O_PROG },
        { "no-progress", no_argument, NULL, O_NOPROG },
        { "user-pattern", required_argument, NULL, O_UPAT },
        { "user-count", required_argument, NULL, O_UCOUNT },
        { "user-first", required_argument, NULL, O_UFIRST },
        { "password", required_argument, NULL, O_PASSWORD },
        { "server-peak-window", no_argument, NULL, O_PEAKWIN },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 },
    };
    int ch;

    *o = (struct opts) {
        .url = DEFAULT_URL,
        .ca = DEFAULT_CA,
        .conns = 1,
        .inflight = 16,
        .duration = 10,
        .warmup = 1,
        .wl = W_VERIFY,
        .users = 16,
        .mix = { 95, 4, 1 },
        .flood_conns = 1,
        .flood_inflight = FLOOD_DEFAULT,
        .timeout_ms = 5000,
        .progress = -1,
    };
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(usage, stdout);
            exit(0);
        case O_VERSION:
            printf("authbench %s\n", AUTHD_VERSION);
            exit(0);
        case O_URL:
            o->url = optarg;
            break;
        case O_CA:
            o->ca = optarg;
            break;
        case O_CERT:
            o->cert = optarg;
            break;
        case O_KEY:
            o->key = optarg;
            break;
        case O_SNAME:
            o->server_name = optarg;
            break;
        case O_PLAIN:
            o->plaintext = true;
            break;
        case O_TIMEOUT:
            o->timeout_ms = (int)num("timeout-ms", optarg, 1, 3600000);
            break;
        case O_WL: {
            size_t i;
            for (i = 0; i < sizeof(workload_names) / sizeof(workload_names[0]); i++) {
                if (strcmp(optarg, workload_names[i]) == 0) {
                    o->wl = (enum workload)i;
                    break;
                }
            }
            if (i == sizeof(workload_names) / sizeof(workload_names[0])) {
                usage_error("--workload: unknown workload '%s'", optarg);
            }
            break;
        }
        case O_CONNS:
            o->conns = (int)num("connections", optarg, 1, MAX_CONNS);
            break;
        case O_INFL:
            o->inflight = (int)num("inflight", optarg, 1, MAX_INFLIGHT);
            break;
        case O_DUR:
            o->duration = num("duration", optarg, 0.1, 86400);
            break;
        case O_WARM:
            o->warmup = num("warmup", optarg, 0, 3600);
            break;
        case O_RATE:
            o->rate = num("rate", optarg, 0, 1e8);
            break;
        case O_USERS:
            o->users = (int)num("users", optarg, 1, MAX_USERS);
            break;
        case O_INVALID:
            o->invalid_share = num("invalid-share", optarg, 0, 100);
            break;
        case O_MIX: {
            char *a = optarg, *end;
            for (int i = 0; i < 3; i++) {
                errno = 0;
                o->mix[i] = strtod(a, &end);
                if (errno != 0 || end == a || o->mix[i] < 0 || (i < 2 && *end != ',')
                    || (i == 2 && *end != '\0')) {
                    usage_error("--mix: want V,L,R percentages, got '%s'", optarg);
                }
                a = end + 1;
            }
            if (fabs(o->mix[0] + o->mix[1] + o->mix[2] - 100.0) > 0.001) {
                usage_error("--mix: the percentages must add up to 100");
            }
            break;
        }
        case O_FCONNS:
            o->flood_conns = (int)num("flood-connections", optarg, 1, MAX_CONNS);
            break;
        case O_FINFL:
            o->flood_inflight = (int)num("flood-inflight", optarg, 1, MAX_INFLIGHT);
            break;
        case O_PAYLOAD:
            o->payload_bytes = (long)num("payload-bytes", optarg, 1, 16 << 20);
            break;
        case O_PID:
            o->server_pid = (long)num("server-pid", optarg, 1, 1 << 30);
            break;
        case O_FMT:
            if (strcmp(optarg, "table") == 0) {
                o->format = F_TABLE;
            } else if (strcmp(optarg, "csv") == 0) {
                o->format = F_CSV;
            } else if (strcmp(optarg, "json") == 0) {
                o->format = F_JSON;
            } else {
                usage_error("--format: table, csv or json");
            }
            break;
        case O_OUT:
            o->out = optarg;
            break;
        case O_NOHDR:
            o->no_header = true;
            break;
        case O_LABEL:
            o->label = optarg;
            break;
        case O_PROG:
            o->progress = 1;
            break;
        case O_NOPROG:
            o->progress = 0;
            break;
        case O_PEAKWIN:
            o->peak_window = true;
            break;
        case O_UPAT:
            o->user_pattern = optarg;
            break;
        case O_UCOUNT:
            o->user_count = (unsigned long)num("user-count", optarg, 1, (double)PATTERN_MAX);
            break;
        case O_UFIRST:
            o->user_first = (unsigned long)num("user-first", optarg, 0, (double)PATTERN_MAX);
            break;
        case O_PASSWORD:
            if (strlen(optarg) == 0 || strlen(optarg) > PASSWORD_MAX) {
                usage_error("--password: want 1 to %d bytes", PASSWORD_MAX);
            }
            o->password = optarg;
            break;
        default:
            usage_error("unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (o->server_pid > 0) {
        char path[64];
        struct stat sb;
        snprintf(path, sizeof(path), "/proc/%ld/stat", o->server_pid);
        if (stat(path, &sb) != 0) {
            usage_error("--server-pid %ld: no such process", o->server_pid);
        }
    }
    if (o->user_pattern == NULL && (o->user_count > 0 || o->user_first > 0)) {
        usage_error("--user-count and --user-first go with --user-pattern");
    }
    if (o->user_pattern != NULL && o->user_count == 0) {
        usage_error("--user-pattern needs --user-count (how many users authd-seed loaded)");
    }
    if (o->user_pattern != NULL && (unsigned long)o->users > o->user_count) {
        usage_error("--users %d: more than the %lu users of --user-count", o->users, o->user_count);
    }
    if (o->inflight < o->conns) {
        fprintf(stderr,
            "authbench: note: %d in flight over %d connections leaves %d of them idle\n",
            o->inflight, o->conns, o->conns - o->inflight);
    }
}

/* ---- main ----------------------------------------------------------------------------- */

/* name_canonical is true when s is a username authd stores as is: 3 to 32
 * characters from a-z 0-9 . _ - (Verify answers with that form). */
static bool name_canonical(const char *s, size_t len)
{
    if (len < 3 || len > NAME_MAX_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_'
                || ch == '-')) {
            return false;
        }
    }
    return true;
}

/*
** setup_pattern parses --user-pattern and checks that the first and the
** last user of the range have canonical names (names only grow in between),
** so every request can format its user's name without a check.
*/
static void setup_pattern(struct bench *b)
{
    unsigned long ends[2] = { b->o.user_first, b->o.user_first + b->o.user_count - 1 };
    char name[NAME_MAX_LEN + 1];

    if (b->o.user_pattern == NULL) {
        return;
    }
    if (!user_pattern_parse(b->o.user_pattern, &b->pat)) {
        usage_error(
            "--user-pattern '%s': want text around one %%u, %%Nu or %%0Nu", b->o.user_pattern);
    }
    if (b->o.user_count > PATTERN_MAX - b->o.user_first) {
        usage_error("--user-first + --user-count is too large");
    }
    for (int i = 0; i < 2; i++) {
        size_t len = user_pattern_format(&b->pat, ends[i], name, sizeof(name));
        if (len == 0 || !name_canonical(name, len)) {
            usage_error("--user-pattern: user %lu's name is not a canonical username "
                        "(3 to 32 of a-z 0-9 . _ -)",
                ends[i]);
        }
    }
    b->use_pattern = true;
}

/* emit writes every row in the format asked, where asked. */
static void emit(struct bench *b, const struct row *rows, unsigned n, const struct common *c)
{
    FILE *out = NULL;
    bool header = false;
    enum format file_fmt = b->o.format == F_JSON ? F_JSON : F_CSV;

    if (b->o.out != NULL) {
        struct stat sb;
        header = stat(b->o.out, &sb) != 0 || sb.st_size == 0;
        if ((out = fopen(b->o.out, "a")) == NULL) {
            fprintf(stderr, "authbench: cannot append to %s: %s\n", b->o.out, strerror(errno));
        }
    }
    if (out != NULL) {
        if (file_fmt == F_CSV && header) {
            fputs(csv_header, out);
        }
        for (unsigned i = 0; i < n; i++) {
            if (file_fmt == F_CSV) {
                put_csv(out, b, &rows[i], c);
            } else {
                put_json(out, b, &rows[i], c);
            }
        }
        fclose(out);
    }
    if (b->o.format == F_TABLE || b->o.out != NULL) {
        put_table(stdout, b, rows, n, c);
        for (unsigned i = 0; i < n; i++) {
            put_kv(stdout, b, &rows[i], c);
        }
    } else {
        if (b->o.format == F_CSV && !b->o.no_header) {
            fputs(csv_header, stdout);
        }
        for (unsigned i = 0; i < n; i++) {
            if (b->o.format == F_CSV) {
                put_csv(stdout, b, &rows[i], c);
            } else {
                put_json(stdout, b, &rows[i], c);
            }
            put_kv(stderr, b, &rows[i], c);
        }
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    static struct totals T;
    static struct row rows[N_KINDS + 2];
    struct common c = { 0 };
    struct sigaction sa;
    unsigned nrows = 0, kinds = 0;
    bool progress;
    double mix_verify[3] = { 100, 0, 0 }, mix_login[3] = { 0, 100, 0 },
           mix_register[3] = { 0, 0, 100 };
    const double *mix = mix_verify;

    parse(argc, argv, &b->o);
    the_bench = b;
    pthread_mutex_init(&b->stats_mu, NULL);
    pthread_mutex_init(&b->park_mu, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    random_hex(b->run_id, 4);
    setup_pattern(b);
    if (b->o.password != NULL) {
        snprintf(b->password, sizeof(b->password), "%s", b->o.password);
    } else if (b->use_pattern) {
        snprintf(b->password, sizeof(b->password), "%s", USER_PATTERN_DEFAULT_PASSWORD);
    } else {
        snprintf(b->password, sizeof(b->password), "bench-pw-");
        random_hex(b->password + 9, 10);
    }

    /* Connections first (a failure here is quick), then the data. */
    switch (b->o.wl) {
    case W_LOGIN:
        mix = mix_login;
        break;
    case W_REGISTER:
        mix = mix_register;
        break;
    case W_MIXED:
        mix = b->o.mix;
        break;
    default:
        break;
    }
    group_init(b, &b->groups[0], 0, b->o.wl == W_ECHO ? "echo" : workload_names[b->o.wl],
        b->o.conns, b->o.inflight, mix, b->o.rate);
    b->ngroups = 1;
    if (b->o.wl == W_FLOOD) {
        b->groups[0].name = "verify";
        group_init(
            b, &b->groups[1], 1, "login", b->o.flood_conns, b->o.flood_inflight, mix_login, 0);
        b->ngroups = 2;
    }
    b->park_cap = b->groups[0].nops + (b->ngroups > 1 ? b->groups[1].nops : 0);
    if ((b->parked = calloc(b->park_cap, sizeof(*b->parked))) == NULL) {
        die("out of memory");
    }
    if (b->o.wl != W_ECHO && b->o.wl != W_REGISTER) {
        bool tokens = b->o.wl == W_VERIFY || b->o.wl == W_MIXED || b->o.wl == W_FLOOD;
        setup_users(b, b->groups[0].clients[0], tokens);
    } else if (b->o.wl == W_REGISTER) {
        b->nusers = 0;
    }
    if (b->o.wl == W_REFRESH) {
        setup_refresh(b, &b->groups[0]);
    }
    if (b->o.wl == W_MIXED && b->o.mix[1] > 0 && b->nusers == 0) {
        die("mixed with logins needs --users > 0");
    }
    setup_payload(b, b->ntokens > 0 ? b->tokens[0].jwt : NULL);

    progress = b->o.progress == 1
        || (b->o.progress == -1 && isatty(STDERR_FILENO) && b->o.warmup + b->o.duration > 3);
    fprintf(stderr, "authbench: %s, %u connection(s), %u in flight%s, %.1f s + %.1f s warm-up\n",
        workload_names[b->o.wl], b->groups[0].nconns, b->groups[0].nops,
        b->o.rate > 0 ? " (open loop)" : "", b->o.duration, b->o.warmup);
    run(b, progress);
    if (interrupted) {
        fprintf(stderr, "authbench: interrupted: the results cover the %.1f s measured so far\n",
            (double)(b->t_end - b->t_begin) / 1e9);
    }

    merge_stats(b, &T);
    c.elapsed_s = (double)(b->t_end - b->t_begin) / 1e9;
    c.client_cpu_s = ru_cpu(&b->ru_end) - ru_cpu(&b->ru_begin);
    c.client_cpu_pct = c.elapsed_s > 0 ? 100.0 * c.client_cpu_s / c.elapsed_s : 0;
    c.client_rss_peak_kb = b->ru_end.ru_maxrss;
    c.timestamp = (long)time(NULL);
    for (int k = 0; k < N_KINDS; k++) {
        c.all_requests += T.hist[k].n;
        if (T.hist[k].n > 0) {
            kinds |= 1u << k;
        }
    }
    c.client_cpu_us_per_req = c.all_requests ? 1e6 * c.client_cpu_s / (double)c.all_requests : 0;
    if (b->srv_begin.ok && b->srv_end.ok) {
        c.have_server = true;
        c.server_cpu_s = b->srv_end.cpu_s - b->srv_begin.cpu_s;
        c.server_cpu_pct = c.elapsed_s > 0 ? 100.0 * c.server_cpu_s / c.elapsed_s : 0;
        c.server_cpu_us_per_req
            = c.all_requests ? 1e6 * c.server_cpu_s / (double)c.all_requests : 0;
        c.server_rss_kb = b->srv_end.rss_kb;
        c.server_rss_peak_kb = b->srv_end.hwm_kb;
    } else if (b->o.server_pid > 0) {
        fprintf(stderr, "authbench: could not read /proc/%ld\n", b->o.server_pid);
    }

    if (b->o.wl == W_FLOOD) {
        fill_row(b, &T, &rows[nrows++], 1u << K_VERIFY, "verify", &b->groups[0]);
        fill_row(b, &T, &rows[nrows++], 1u << K_LOGIN, "login", &b->groups[1]);
    } else if (b->o.wl == W_MIXED) {
        fill_row(b, &T, &rows[nrows++], (1u << N_KINDS) - 1, "all", &b->groups[0]);
        for (int k = 0; k < N_KINDS; k++) {
            if (kinds & (1u << k)) {
                fill_row(b, &T, &rows[nrows++], 1u << k, kind_names[k], &b->groups[0]);
            }
        }
    } else if (b->o.wl == W_LOGOUT) {
        fill_row(b, &T, &rows[nrows++], 1u << K_LOGOUT, "logout", &b->groups[0]);
        fill_row(b, &T, &rows[nrows++], 1u << K_LOGIN, "login", &b->groups[0]);
    } else {
        enum kind k = b->o.wl == W_ECHO ? K_ECHO
            : b->o.wl == W_LOGIN        ? K_LOGIN
            : b->o.wl == W_REGISTER     ? K_REGISTER
            : b->o.wl == W_REFRESH      ? K_REFRESH
                                        : K_VERIFY;
        fill_row(b, &T, &rows[nrows++], 1u << k, kind_names[k], &b->groups[0]);
    }
    if (T.reasons_dropped > 0) {
        fprintf(stderr,
            "authbench: %" PRIu64 " outcomes with further distinct statuses not itemized\n",
            T.reasons_dropped);
    }
    emit(b, rows, nrows, &c);

    if (atomic_load(&b->outstanding) > 0) {
        /* Calls still in flight past their deadline: do not wait in close. */
        fprintf(stderr, "authbench: %ld calls did not complete; exiting without closing\n",
            atomic_load(&b->outstanding));
        _exit(1);
    }
    for (unsigned i = 0; i < b->ngroups; i++) {
        for (unsigned j = 0; j < b->groups[i].nconns; j++) {
            authd_client_close(b->groups[i].clients[j]);
        }
    }
    for (unsigned i = 0; i < b->ntokens; i++) {
        explicit_bzero(b->tokens[i].jwt, strlen(b->tokens[i].jwt));
        free(b->tokens[i].jwt);
    }
    for (int k = 0; k < N_KINDS; k++) {
        if (T.wrong_accept[k] > 0) {
            return 3; /* an invalid token was accepted: never fine */
        }
    }
    return 0;
}
