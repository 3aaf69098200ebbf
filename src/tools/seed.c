/*
 * seed.c — authd-seed, a development tool: bulk-loads benchmark users into
 * an authd data directory through the store API, and times one argon2id
 * hash (--time-hash). Built with the tree, never installed.
 *
 * Users are stored exactly as Register stores them (service.c): a random
 * 16-byte id, the canonical username, the normalized email, status ACTIVE,
 * no roles, created_at = updated_at = password_changed_at = now. The one
 * difference is the password hash: it is computed ONCE, with the cheap
 * argon2id parameters given here, and shared by every user, which is what
 * makes a million users load in seconds — and what makes the data fit for
 * benchmarks only.
 *
 * Writes go in batches of --batch users per LMDB write transaction
 * (authd_store_user_create_batch): one fsync per batch, not per user. The
 * random ids are drawn up front and inserted in sorted order: inserted in
 * random order, every batch would rewrite (copy on write) nearly every
 * leaf of the users table, and the pages the last batches free would stay
 * on LMDB's free list — tens of thousands of pages for a million users,
 * which every later write transaction (each Login) then pays to carry,
 * unlike a store grown one Register at a time. Sorted, each batch touches
 * only its own key range. The set of ids is as random as Register's; the
 * tables end up more densely packed than ones grown in random order.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "password.h"
#include "store.h"
#include "user_pattern.h"
#include "validate.h"

#define SEED_OPS_DEFAULT     1
#define SEED_MEM_KIB_DEFAULT 8 /* libsodium's minimum */
#define BATCH_DEFAULT        20000
#define COUNT_MAX            10000000ul

static const char usage[]
    = "usage: authd-seed --data-dir DIR --count N [OPTIONS]\n"
      "       authd-seed --time-hash [--argon2-ops T] [--argon2-mem-kib M] [--repeat R]\n"
      "                  [--threads N]\n"
      "\n"
      "Bulk-loads N users into an authd LMDB data directory (authd must not be\n"
      "running on it), stored as Register would store them, for benchmarks.\n"
      "BENCHMARK DATA ONLY: every user gets the same password and the same hash,\n"
      "computed once with cheap argon2id parameters. Start authd on the directory\n"
      "with the same --argon2-ops/--argon2-mem-kib, or each user's first login\n"
      "re-hashes the password with authd's own parameters.\n"
      "\n"
      "Seeding:\n"
      "  --data-dir DIR        the store (created 0700 if absent)\n"
      "  --count N             users to create (1 to 10000000)\n"
      "  --first K             number of the first user (default 0): users K..K+N-1\n"
      "  --pattern P           username of user n (default " USER_PATTERN_DEFAULT "): literal\n"
      "                        text around one %u, %Nu or %0Nu; the names must be\n"
      "                        canonical (lower-case a-z 0-9 . _ -, 3 to 32 characters)\n"
      "  --email-domain D      email of user n is <username>@D "
      "(default " USER_PATTERN_DEFAULT_DOMAIN ")\n"
      "  --password P          every user's password (default " USER_PATTERN_DEFAULT_PASSWORD ")\n"
      "  --argon2-ops T        argon2id t of the shared hash (default 1)\n"
      "  --argon2-mem-kib M    argon2id m of the shared hash, KiB (default 8)\n"
      "  --batch B             users per write transaction (default 20000)\n"
      "  --map-size-mb N       LMDB map size, as authd's option (default 4096)\n"
      "\n"
      "Timing (--time-hash): hashes a password R times (default 5, after one\n"
      "untimed) with authd's own hashing function, in each of N threads at once\n"
      "(default 1), and prints the median time of one hash and the hashes per\n"
      "second of all threads together (N = cores shows what parallel hashes cost\n"
      "each other: memory bandwidth and a shared cache):\n"
      "  hash_ms=.. argon2_ops=T argon2_mem_kib=M threads=N runs=R min_ms=..\n"
      "  max_ms=.. hashes_per_s=..\n"
      "Here the parameters default to authd's: t=2, m=19456 KiB.\n"
      "\n"
      "Output of a load: one line\n"
      "  seeded=N first=K pattern=P email_domain=D argon2_ops=T argon2_mem_kib=M\n"
      "  users_total=.. seconds=.. users_per_s=..\n"
      "Exit status: 0 done, 1 failure (nothing of the failing batch is written),\n"
      "2 usage error.\n";

struct seed_opts {
    const char *data_dir;
    unsigned long count;
    unsigned long first;
    const char *pattern;
    const char *domain;
    const char *password;
    long ops; /* -1: the mode's default */
    long mem_kib;
    unsigned long batch;
    unsigned long map_mb;
    bool time_hash;
    unsigned long repeat;
    unsigned long threads;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("authd-seed: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(authd-seed --help lists the options)\n", stderr);
    exit(2);
}

static unsigned long number(const char *name, const char *v, unsigned long lo, unsigned long hi)
{
    char *end;
    unsigned long n;

    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n < lo || n > hi) {
        fprintf(stderr, "authd-seed: --%s: want a whole number from %lu to %lu, got '%s'\n", name,
            lo, hi, v);
        exit(2);
    }
    return n;
}

static void parse(int argc, char **argv, struct seed_opts *o)
{
    enum {
        O_DIR = 256,
        O_COUNT,
        O_FIRST,
        O_PAT,
        O_DOM,
        O_PW,
        O_OPS,
        O_MEM,
        O_BATCH,
        O_MAP,
        O_TIME,
        O_REPEAT,
        O_THREADS
    };
    static const struct option lo[] = {
        { "data-dir", required_argument, NULL, O_DIR },
        { "count", required_argument, NULL, O_COUNT },
        { "first", required_argument, NULL, O_FIRST },
        { "pattern", required_argument, NULL, O_PAT },
        { "email-domain", required_argument, NULL, O_DOM },
        { "password", required_argument, NULL, O_PW },
        { "argon2-ops", required_argument, NULL, O_OPS },
        { "argon2-mem-kib", required_argument, NULL, O_MEM },
        { "batch", required_argument, NULL, O_BATCH },
        { "map-size-mb", required_argument, NULL, O_MAP },
        { "time-hash", no_argument, NULL, O_TIME },
        { "repeat", required_argument, NULL, O_REPEAT },
        { "threads", required_argument, NULL, O_THREADS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;

    *o = (struct seed_opts) {
        .pattern = USER_PATTERN_DEFAULT,
        .domain = USER_PATTERN_DEFAULT_DOMAIN,
        .password = USER_PATTERN_DEFAULT_PASSWORD,
        .ops = -1,
        .mem_kib = -1,
        .batch = BATCH_DEFAULT,
        .map_mb = 4096,
        .repeat = 5,
        .threads = 1,
    };
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(usage, stdout);
            exit(0);
        case O_DIR:
            o->data_dir = optarg;
            break;
        case O_COUNT:
            o->count = number("count", optarg, 1, COUNT_MAX);
            break;
        case O_FIRST:
            o->first = number("first", optarg, 0, COUNT_MAX);
            break;
        case O_PAT:
            o->pattern = optarg;
            break;
        case O_DOM:
            o->domain = optarg;
            break;
        case O_PW:
            o->password = optarg;
            break;
        case O_OPS: /* authd's --argon2-ops range */
            o->ops = (long)number("argon2-ops", optarg, 1, 100);
            break;
        case O_MEM: /* authd's --argon2-mem-kib range */
            o->mem_kib = (long)number("argon2-mem-kib", optarg, 8, 4194304);
            break;
        case O_BATCH:
            o->batch = number("batch", optarg, 1, 100000);
            break;
        case O_MAP:
            o->map_mb = number("map-size-mb", optarg, 1, 1ul << 24);
            break;
        case O_TIME:
            o->time_hash = true;
            break;
        case O_REPEAT:
            o->repeat = number("repeat", optarg, 1, 1000);
            break;
        case O_THREADS:
            o->threads = number("threads", optarg, 1, 256);
            break;
        default:
            usage_error("unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->time_hash && (o->data_dir == NULL || o->count == 0))
        usage_error("--data-dir and --count are required (or --time-hash)");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

struct hash_thread {
    const struct seed_opts *o;
    const authd_pwparams *pp;
    pthread_barrier_t *start;
    double *ms; /* o->repeat samples */
    bool failed;
};

/* hash_worker does one untimed hash (the first allocation's page faults),
 * waits for its siblings at the barrier, then times o->repeat hashes. */
static void *hash_worker(void *arg)
{
    struct hash_thread *t = arg;
    char hash[AUTHD_HASH_MAX];

    for (unsigned long i = 0; i <= t->o->repeat; i++) {
        double t0;
        if (i == 1)
            pthread_barrier_wait(t->start);
        t0 = now_s();
        if (authd_password_hash(t->o->password, strlen(t->o->password), t->pp, hash) != AUTHD_OK) {
            t->failed = true;
            if (i == 0)
                pthread_barrier_wait(t->start);
            break;
        }
        if (i > 0)
            t->ms[i - 1] = (now_s() - t0) * 1e3;
    }
    sodium_memzero(hash, sizeof hash);
    return NULL;
}

/* time_hash prints the median time of one authd_password_hash at the given
 * parameters, with --threads threads hashing --repeat times each at once,
 * and the hashes per second they achieved together. */
static int time_hash(const struct seed_opts *o)
{
    authd_pwparams pp = {
        .opslimit = (unsigned long long)(o->ops > 0 ? o->ops : AUTHD_ARGON2_OPS_DEFAULT),
        .memlimit = o->mem_kib > 0 ? (size_t)o->mem_kib * 1024u : AUTHD_ARGON2_MEM_DEFAULT,
    };
    unsigned long n = o->repeat * o->threads;
    struct hash_thread *th = calloc(o->threads, sizeof *th);
    pthread_t *tid = calloc(o->threads, sizeof *tid);
    double *ms = calloc(n, sizeof *ms);
    pthread_barrier_t start;
    double t0, wall;
    int status = 1;

    if (th == NULL || tid == NULL || ms == NULL) {
        fputs("authd-seed: out of memory\n", stderr);
        goto out;
    }
    if (authd_pwparams_check(&pp) != AUTHD_OK) {
        fputs("authd-seed: argon2 parameters refused by libsodium\n", stderr);
        goto out;
    }
    /* The main thread is at the barrier too: the clock starts with them. */
    pthread_barrier_init(&start, NULL, (unsigned)o->threads + 1);
    for (unsigned long i = 0; i < o->threads; i++) {
        th[i] = (struct hash_thread) { o, &pp, &start, ms + i * o->repeat, false };
        if (pthread_create(&tid[i], NULL, hash_worker, &th[i]) != 0) {
            fputs("authd-seed: cannot start a thread\n", stderr);
            exit(1); /* the others would wait at the barrier for ever */
        }
    }
    pthread_barrier_wait(&start);
    t0 = now_s();
    for (unsigned long i = 0; i < o->threads; i++)
        pthread_join(tid[i], NULL);
    wall = now_s() - t0;
    pthread_barrier_destroy(&start);
    for (unsigned long i = 0; i < o->threads; i++) {
        if (th[i].failed) {
            fputs("authd-seed: argon2id hash failed (out of memory?)\n", stderr);
            goto out;
        }
    }
    qsort(ms, n, sizeof *ms, cmp_double);
    printf("hash_ms=%.3f argon2_ops=%llu argon2_mem_kib=%zu threads=%lu runs=%lu min_ms=%.3f "
           "max_ms=%.3f hashes_per_s=%.1f\n",
        n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2, pp.opslimit, pp.memlimit / 1024u,
        o->threads, o->repeat, ms[0], ms[n - 1], (double)n / wall);
    status = 0;
out:
    free(ms);
    free(tid);
    free(th);
    return status;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, AUTHD_ID_BYTES);
}

/* make_user fills u as Register would for user n: canonical username,
 * normalized email, the random id given, ACTIVE, no roles, all times now.
 * The shared hash is copied in. False (with a message) when the pattern does
 * not give a valid, canonical name for n. */
static bool make_user(const user_pattern *pat, const char *domain, unsigned long n,
    const uint8_t id[AUTHD_ID_BYTES], const char *hash, int64_t now, authd_user *u)
{
    char name[128], email[AUTHD_EMAIL_MAX + 2];
    authd_error err;
    size_t len = user_pattern_format(pat, n, name, sizeof name);
    int elen;

    memset(u, 0, sizeof *u);
    if (len == 0 || authd_validate_username(name, len, u->username, &err) != AUTHD_OK
        || strcmp(u->username, name) != 0) {
        fprintf(stderr,
            "authd-seed: user %lu: '%s' is not a canonical username (lower-case a-z 0-9 . _ -, "
            "3 to 32 characters)\n",
            n, len ? name : "(too long)");
        return false;
    }
    elen = snprintf(email, sizeof email, "%s@%s", name, domain);
    if (elen < 0 || (size_t)elen >= sizeof email
        || authd_validate_email(email, (size_t)elen, u->email, &err) != AUTHD_OK) {
        fprintf(stderr, "authd-seed: user %lu: '%s@%s' is not a valid email: %s\n", n, name, domain,
            elen > 0 && (size_t)elen < sizeof email ? err.message : "too long");
        return false;
    }
    memcpy(u->id, id, sizeof u->id);
    memcpy(u->password_hash, hash, strlen(hash) + 1);
    u->status = AUTHD_USER_ACTIVE;
    u->created_at = u->updated_at = u->password_changed_at = now;
    return true;
}

static int seed(const struct seed_opts *o)
{
    authd_pwparams pp = {
        .opslimit = (unsigned long long)(o->ops > 0 ? o->ops : SEED_OPS_DEFAULT),
        .memlimit = (size_t)(o->mem_kib > 0 ? o->mem_kib : SEED_MEM_KIB_DEFAULT) * 1024u,
    };
    authd_store_options so = { .dir = o->data_dir, .map_size = (size_t)o->map_mb << 20 };
    authd_store *st = NULL;
    authd_user *batch = NULL;
    uint8_t(*ids)[AUTHD_ID_BYTES] = NULL;
    user_pattern pat;
    authd_error err;
    char hash[AUTHD_HASH_MAX];
    size_t users = 0, sessions = 0;
    unsigned long done = 0, next_report;
    double t0 = now_s();
    int64_t now = (int64_t)time(NULL);
    int status = 1;

    if (o->count > COUNT_MAX - o->first) {
        fputs("authd-seed: --first + --count is too large\n", stderr);
        return 2;
    }
    if (!user_pattern_parse(o->pattern, &pat)) {
        fprintf(stderr, "authd-seed: --pattern '%s': want text around one %%u, %%Nu or %%0Nu\n",
            o->pattern);
        return 2;
    }
    if (authd_validate_password(o->password, strlen(o->password), &err) != AUTHD_OK) {
        fprintf(stderr, "authd-seed: --password: Register would refuse it: %s\n", err.message);
        return 2;
    }
    if (authd_pwparams_check(&pp) != AUTHD_OK) {
        fputs("authd-seed: argon2 parameters refused by libsodium\n", stderr);
        return 2;
    }
    if (authd_password_hash(o->password, strlen(o->password), &pp, hash) != AUTHD_OK) {
        fputs("authd-seed: argon2id hash failed (out of memory?)\n", stderr);
        return 1;
    }
    if ((batch = calloc(o->batch, sizeof *batch)) == NULL
        || (ids = malloc(o->count * sizeof *ids)) == NULL) {
        fputs("authd-seed: out of memory\n", stderr);
        goto out;
    }
    randombytes_buf(ids, o->count * sizeof *ids);
    qsort(ids, o->count, sizeof *ids, cmp_id);
    if (authd_store_open(&so, &st) != AUTHD_OK) {
        fprintf(stderr, "authd-seed: cannot open the store in %s (see the store_error line)\n",
            o->data_dir);
        goto out;
    }
    next_report = o->count >= 200000 ? o->count / 10 : o->count;
    while (done < o->count) {
        unsigned long n = o->count - done < o->batch ? o->count - done : o->batch;
        const char *conflict = NULL;
        size_t failed = 0;
        authd_code rc;

        for (unsigned long i = 0; i < n; i++) {
            if (!make_user(
                    &pat, o->domain, o->first + done + i, ids[done + i], hash, now, &batch[i]))
                goto out;
        }
        rc = authd_store_user_create_batch(st, batch, n, &failed, &conflict);
        if (rc == AUTHD_ALREADY_EXISTS) {
            fprintf(stderr,
                "authd-seed: user %lu (%s): its %s is already in the store; seed a fresh "
                "--data-dir or use --first\n",
                o->first + done + failed, batch[failed].username, conflict ? conflict : "name");
            goto out;
        }
        if (rc != AUTHD_OK) {
            fprintf(stderr, "authd-seed: batch at user %lu: %s%s\n", o->first + done,
                authd_code_name(rc),
                rc == AUTHD_RESOURCE_EXHAUSTED ? " (the map is full: raise --map-size-mb)" : "");
            goto out;
        }
        done += n;
        if (done >= next_report && done < o->count) {
            fprintf(stderr, "authd-seed: %lu / %lu users, %.1f s\n", done, o->count, now_s() - t0);
            next_report += o->count / 10;
        }
    }
    if (authd_store_count(st, &users, &sessions) != AUTHD_OK) {
        fputs("authd-seed: cannot count the users\n", stderr);
        goto out;
    }
    {
        double secs = now_s() - t0;
        printf("seeded=%lu first=%lu pattern=%s email_domain=%s argon2_ops=%llu "
               "argon2_mem_kib=%zu users_total=%zu seconds=%.2f users_per_s=%.0f\n",
            done, o->first, o->pattern, o->domain, pp.opslimit, pp.memlimit / 1024u, users, secs,
            secs > 0 ? (double)done / secs : 0.0);
    }
    status = 0;
out:
    authd_store_close(st);
    if (batch != NULL) {
        sodium_memzero(batch, o->batch * sizeof *batch);
        free(batch);
    }
    free(ids);
    sodium_memzero(hash, sizeof hash);
    return status;
}

int main(int argc, char **argv)
{
    struct seed_opts o;

    parse(argc, argv, &o);
    if (sodium_init() < 0) {
        fputs("authd-seed: libsodium failed to initialize\n", stderr);
        return 1;
    }
    authd_log_setup(AUTHD_LOG_ERROR, 2);
    return o.time_hash ? time_hash(&o) : seed(&o);
}
