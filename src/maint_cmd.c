/*
 * maint_cmd.c — `authd backup DIR` and `authd calibrate`.
 *
 * backup: a hot, consistent, compacted copy of the store (store.h,
 * authd_store_backup: one LMDB read snapshot, written by mdb_env_copyfd2
 * with MDB_CP_COMPACT), safe while authd serves the same --data-dir: like
 * `authd user`, it opens the store as a second process, which LMDB allows,
 * and a read snapshot blocks no writer. With --include-keys the signing
 * key material comes along (the --signing-key file, or the --key-dir set:
 * keys.state and every key it names, copied under the directory's lock so
 * no `authd keys` command changes it half-way). Keys are left out by
 * default because keydir.h's rule holds: whoever holds a store backup
 * should not also be able to sign for it unless the operator says so (a
 * backup that must restore sessions needs them; README "Backup and
 * restore" says how to keep them apart).
 *
 * Never a half backup under DIR's name: everything is written into a
 * fresh directory beside DIR (.NAME.partial-XXXXXX, mode 0700), each file
 * created 0600 (fchmod, whatever the umask), fsynced, the directory
 * fsynced, and only then renamed to DIR (an empty DIR is replaced; a
 * non-empty one is refused before anything is written), and the parent
 * fsynced. A failure removes the partial directory.
 *
 * calibrate: picks argon2id parameters for a target hash time on this
 * machine, memory first as RFC 9106 (section 4) and OWASP advise: the
 * largest memory within --max-memory-kib whose hash fits the target at
 * t = 2, and only at the memory cap more iterations. Never below authd's
 * floors (19456 KiB, t = 2). p is 1: libsodium's argon2id has one lane,
 * and authd's parallelism is several hashes at once (--hash-workers).
 * Bounded: at most CAL_STEPS measurements of CAL_SAMPLES hashes, each
 * predicted near the target.
 */
#include "maint_cmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "keydir.h"
#include "keyfile.h"
#include "log.h"
#include "password.h"
#include "store.h"

#define ARGS_MAX     64
#define PATH_CAP     4096
#define KEY_FILE_CAP 16384 /* bytes of one key file (an ES256 PEM is ~250) */

/* ---- files ------------------------------------------------------------------ */

/* join writes dir/name into out (PATH_CAP bytes); false when too long. */
static bool join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_CAP, "%s/%s", dir, name);

    return n > 0 && n < PATH_CAP;
}

/* fsync_path fsyncs a directory (or file) by name. */
static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* create_private creates path (it must not exist) mode 0600 whatever the
 * umask. Returns the descriptor (the caller closes it), or -1 with errno. */
static int create_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

    if (fd >= 0 && fchmod(fd, 0600) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    return fd;
}

/* write_private writes len bytes to a new 0600 file at path and fsyncs it. */
static int write_private(const char *path, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    int fd = create_private(path);

    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

/* make_private_dir creates path mode 0700 whatever the umask. */
static int make_private_dir(const char *path)
{
    if (mkdir(path, 0700) != 0)
        return -1;
    return chmod(path, 0700);
}

/* remove_tree removes what backup writes under dir: files, and
 * directories of files (keys/), then dir itself. Best effort. */
static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[PATH_CAP];

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
                continue;
            if (unlink(p) != 0 && errno == EISDIR && depth > 0)
                remove_tree(p, depth - 1);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* dir_state: 0 absent, 1 an empty directory, 2 anything else. */
static int dir_state(const char *path)
{
    struct stat sb;
    DIR *d;
    struct dirent *e;
    int state = 1;

    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? 0 : 2;
    if (!S_ISDIR(sb.st_mode) || (d = opendir(path)) == NULL)
        return 2;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            state = 2;
    closedir(d);
    return state;
}

/* ---- the command line -------------------------------------------------------- */

typedef struct bcmd {
    const char *dir;
    bool include_keys;
    authd_config cfg;
} bcmd;

static int backup_usage(FILE *out)
{
    fprintf(out,
        "usage: authd backup DIR [--include-keys] [--data-dir D] [flags]\n"
        "  Writes a consistent, compacted copy of the store of --data-dir to the new\n"
        "  directory DIR (mode 0700; files 0600): DIR/data.mdb and DIR/BACKUP (what was\n"
        "  copied, when). Safe while authd serves from D. DIR must not exist or be empty;\n"
        "  the copy is made under a temporary name and renamed to DIR when complete.\n"
        "  --include-keys also copies the signing key material: --signing-key as\n"
        "  DIR/signing.key, or --key-dir's set as DIR/keys/ (keys.state and its keys).\n"
        "  Without it the keys are NOT in the backup: back them up on their own.\n"
        "  Give the same flags or AUTHD_* environment as the server.\n"
        "  Restore: README \"Backup and restore\".\n"
        "exit status: 0 done, 1 refused or failed (nothing left at DIR), 2 usage\n");
    return out == stdout ? 0 : 2;
}

/* parse_backup takes DIR and --include-keys and hands the rest to the
 * server's config table (argv[0] stands in for a program name there). */
static int parse_backup(int argc, char **argv, bcmd *c)
{
    char *args[ARGS_MAX + 1];
    int nargs = 0;

    memset(c, 0, sizeof *c);
    args[nargs++] = argv[0];
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        backup_usage(stdout);
        return -1;
    }
    /* DIR first, as `authd user` takes its USER: a flag's value is never
     * mistaken for it. */
    if (argc < 2 || strncmp(argv[1], "-", 1) == 0)
        return backup_usage(stderr);
    c->dir = argv[1];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--include-keys") == 0)
            c->include_keys = true;
        else if (nargs < ARGS_MAX)
            args[nargs++] = argv[i];
        else
            return backup_usage(stderr);
    }
    args[nargs] = NULL;
    if (c->dir == NULL || c->dir[0] == '\0')
        return backup_usage(stderr);
    if (authd_config_load(&c->cfg, nargs, args, stderr) != 0)
        return 2;
    return 0;
}

/* ---- backup ------------------------------------------------------------------ */

/* copy_key_file copies one key file (read with keyfile.h's ownership and
 * mode checks) to dst, 0600. Returns 0, or 1 after a message. */
static int copy_key_file(const char *what, const char *src, const char *dst)
{
    uint8_t *buf = sodium_malloc(KEY_FILE_CAP);
    size_t len = 0;
    char err[512];
    int status = 1;

    if (buf == NULL) {
        fprintf(stderr, "authd backup: out of memory\n");
        return 1;
    }
    if (authd_keyfile_read(what, src, buf, KEY_FILE_CAP, &len, err, sizeof err) != AUTHD_OK) {
        fprintf(stderr, "authd backup: %s\n", err);
        goto out;
    }
    if (write_private(dst, buf, len) != 0) {
        fprintf(stderr, "authd backup: cannot write %s: %s\n", dst, strerror(errno));
        goto out;
    }
    status = 0;
out:
    sodium_memzero(buf, KEY_FILE_CAP);
    sodium_free(buf);
    return status;
}

/* copy_keydir copies the key set of src into dst (created 0700) under the
 * set's command lock. Returns 0, or 1 after a message. */
static int copy_keydir(const char *src, const char *dst, size_t *nkeys)
{
    authd_keydir kd;
    char err[512], from[PATH_CAP], to[PATH_CAP];
    int lock = -1, status = 1;
    struct stat sb;

    if (stat(src, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "authd backup: --key-dir %s is not a directory\n", src);
        return 1;
    }
    if (authd_keydir_lock(src, &lock, err, sizeof err) != AUTHD_OK) {
        fprintf(stderr, "authd backup: %s\n", err);
        return 1;
    }
    if (authd_keydir_read(src, &kd, NULL, err, sizeof err) != AUTHD_OK) {
        fprintf(stderr, "authd backup: %s\n", err);
        goto out;
    }
    if (kd.n == 0) {
        fprintf(stderr, "authd backup: --key-dir %s holds no key set (keys.state)\n", src);
        goto out;
    }
    if (make_private_dir(dst) != 0) {
        fprintf(stderr, "authd backup: cannot create %s: %s\n", dst, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < kd.n; i++) {
        if (snprintf(from, sizeof from, "%s/%s.key", src, kd.e[i].kid) >= (int)sizeof from
            || snprintf(to, sizeof to, "%s/%s.key", dst, kd.e[i].kid) >= (int)sizeof to) {
            fprintf(stderr, "authd backup: path too long\n");
            goto out;
        }
        if (copy_key_file("key", from, to) != 0)
            goto out;
    }
    /* The state last, as `authd keys` writes it: it names only keys
     * already in place. */
    if (snprintf(from, sizeof from, "%s/keys.state", src) >= (int)sizeof from
        || snprintf(to, sizeof to, "%s/keys.state", dst) >= (int)sizeof to
        || copy_key_file("key state file", from, to) != 0)
        goto out;
    if (fsync_path(dst) != 0) {
        fprintf(stderr, "authd backup: cannot fsync %s: %s\n", dst, strerror(errno));
        goto out;
    }
    *nkeys = kd.n;
    status = 0;
out:
    authd_keydir_unlock(lock);
    return status;
}

/* write_manifest writes DIR/BACKUP: a few lines that say what this is. */
static int write_manifest(const char *path, const bcmd *c, long long bytes, const char *keys)
{
    char text[2 * PATH_CAP];
    char when[32];
    time_t now = time(NULL);
    struct tm tm;

    if (gmtime_r(&now, &tm) == NULL || strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(when, sizeof when, "-");
    int n = snprintf(text, sizeof text,
        "# authd backup v1\n"
        "created_at=%s\n"
        "data_dir=%s\n"
        "data_mdb_bytes=%lld\n"
        "keys=%s\n",
        when, c->cfg.data_dir, bytes, keys);
    if (n < 0 || n >= (int)sizeof text)
        return -1;
    return write_private(path, text, (size_t)n);
}

/* do_backup writes everything into staging. Returns 0 or 1 after a
 * message; *keys says what key material came along. */
static int do_backup(const bcmd *c, const char *staging, char *keys, size_t keys_cap)
{
    authd_store *st = NULL;
    char path[PATH_CAP];
    int fd = -1, status = 1;
    struct stat sb;

    authd_store_options so
        = { .dir = c->cfg.data_dir, .map_size = (size_t)c->cfg.map_size_mb * 1024u * 1024u };
    /* authd_store_open would create an empty store: a typo in --data-dir
     * must not back up nothing and call it done. */
    if (snprintf(path, sizeof path, "%s/data.mdb", c->cfg.data_dir) >= (int)sizeof path
        || stat(path, &sb) != 0) {
        fprintf(stderr, "authd backup: no store in --data-dir %s (no data.mdb)\n", c->cfg.data_dir);
        return 1;
    }
    if (authd_store_open(&so, &st) != AUTHD_OK) {
        fprintf(stderr, "authd backup: cannot open the store in %s (see the store_error line)\n",
            c->cfg.data_dir);
        return 1;
    }
    if (!join(path, staging, "data.mdb") || (fd = create_private(path)) < 0) {
        fprintf(stderr, "authd backup: cannot create %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (authd_store_backup(st, fd) != AUTHD_OK) {
        fprintf(stderr, "authd backup: the copy failed (see the store_error line)\n");
        goto out;
    }
    if (fsync(fd) != 0 || fstat(fd, &sb) != 0) {
        fprintf(stderr, "authd backup: cannot fsync %s: %s\n", path, strerror(errno));
        goto out;
    }
    authd_store_close(st);
    st = NULL;

    snprintf(keys, keys_cap, "not included");
    if (c->include_keys && c->cfg.key_dir != NULL) {
        size_t n = 0;
        if (!join(path, staging, "keys") || copy_keydir(c->cfg.key_dir, path, &n) != 0)
            goto out;
        snprintf(keys, keys_cap, "keys/ (the --key-dir set, %zu keys)", n);
    } else if (c->include_keys) {
        if (!join(path, staging, "signing.key")
            || copy_key_file("signing key", c->cfg.signing_key, path) != 0)
            goto out;
        snprintf(keys, keys_cap, "signing.key (the --signing-key file)");
    }
    if (!join(path, staging, "BACKUP")
        || write_manifest(path, c, (long long)sb.st_size, keys) != 0) {
        fprintf(stderr, "authd backup: cannot write %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (fsync_path(staging) != 0) {
        fprintf(stderr, "authd backup: cannot fsync %s: %s\n", staging, strerror(errno));
        goto out;
    }
    status = 0;
out:
    if (fd >= 0)
        close(fd);
    authd_store_close(st);
    return status;
}

int authd_backup_command(int argc, char **argv)
{
    bcmd c;
    char dircopy[PATH_CAP], basecopy[PATH_CAP], staging[PATH_CAP], keys[128];
    const char *parent, *base;
    int status;

    if ((status = parse_backup(argc, argv, &c)) != 0)
        return status < 0 ? 0 : status;
    authd_log_setup(AUTHD_LOG_WARN, STDERR_FILENO);
    if (sodium_init() < 0) {
        fprintf(stderr, "authd backup: libsodium failed to initialise\n");
        return 1;
    }
    if (c.cfg.data_dir == NULL) {
        fprintf(stderr, "authd backup: no --data-dir\n");
        return 2;
    }
    if (strlen(c.dir) >= sizeof dircopy - 32) {
        fprintf(stderr, "authd backup: DIR is too long\n");
        return 2;
    }
    int state = dir_state(c.dir);
    if (state == 2) {
        fprintf(stderr,
            "authd backup: %s exists and is not an empty directory; refusing to write into it\n",
            c.dir);
        return 1;
    }
    snprintf(dircopy, sizeof dircopy, "%s", c.dir);
    snprintf(basecopy, sizeof basecopy, "%s", c.dir);
    parent = dirname(dircopy);
    base = basename(basecopy);
    if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        fprintf(stderr, "authd backup: DIR must name a new directory\n");
        return 2;
    }
    snprintf(staging, sizeof staging, "%s/.%s.partial-XXXXXX", parent, base);
    if (mkdtemp(staging) == NULL || chmod(staging, 0700) != 0) {
        fprintf(
            stderr, "authd backup: cannot create a directory in %s: %s\n", parent, strerror(errno));
        return 1;
    }
    status = do_backup(&c, staging, keys, sizeof keys);
    /* Renaming over an empty directory replaces it (rename(2)); a DIR made
     * meanwhile by someone else is not replaced unless empty. */
    if (status == 0 && rename(staging, c.dir) != 0) {
        fprintf(
            stderr, "authd backup: cannot rename %s to %s: %s\n", staging, c.dir, strerror(errno));
        status = 1;
    }
    if (status != 0) {
        remove_tree(staging, 1);
        return status;
    }
    if (fsync_path(parent) != 0) {
        fprintf(stderr, "authd backup: cannot fsync %s: %s\n", parent, strerror(errno));
        return 1;
    }
    printf("authd backup: complete in %s (data.mdb, BACKUP; keys: %s)\n", c.dir, keys);
    if (!c.include_keys)
        printf("authd backup: the signing keys are not in it: back up %s separately "
               "(or use --include-keys)\n",
            c.cfg.key_dir != NULL ? c.cfg.key_dir : c.cfg.signing_key);
    return 0;
}

/* ---- calibrate ---------------------------------------------------------------- */

#define CAL_SAMPLES      3
#define CAL_STEPS        10
#define CAL_MEM_STEP_KIB 1024u
#define CAL_OPS_MAX      100 /* --argon2-ops's bound */

static int calibrate_usage(FILE *out)
{
    fprintf(out,
        "usage: authd calibrate [--target-ms N] [--max-memory-kib M]\n"
        "  Measures argon2id on this machine and prints the --argon2-mem-kib and\n"
        "  --argon2-ops whose hash takes about N ms (default 250, 1-10000): the most\n"
        "  memory up to M KiB (default 262144 = 256 MiB, at least 19456) at t = 2, then,\n"
        "  at M, more iterations. Never below the floors (19456 KiB, t = 2). Run it on the\n"
        "  machine authd serves from, while it is otherwise quiet. Each hash worker\n"
        "  (--hash-workers) holds m KiB while it hashes.\n"
        "exit status: 0 printed, 1 a hash failed, 2 usage\n");
    return out == stdout ? 0 : 2;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* measure hashes a fixed password CAL_SAMPLES times with (mem_kib, ops) and
 * sets *ms to the median. One sample far over the target is answer
 * enough. Returns 0, or 1 after a message (memory refused). */
static int measure(uint32_t mem_kib, unsigned ops, double target_ms, double *ms)
{
    static const char pw[] = "calibrate: correct horse battery staple";
    authd_pwparams p = { .opslimit = ops, .memlimit = (size_t)mem_kib * 1024u };
    char out[AUTHD_HASH_MAX];
    double t[CAL_SAMPLES];
    int n = 0;

    while (n < CAL_SAMPLES) {
        uint64_t t0 = mono_ns();
        if (authd_password_hash(pw, sizeof pw - 1, &p, out) != AUTHD_OK) {
            fprintf(stderr,
                "authd calibrate: argon2id with m=%u KiB, t=%u failed (memory refused?); "
                "give a lower --max-memory-kib\n",
                mem_kib, ops);
            return 1;
        }
        t[n++] = (double)(mono_ns() - t0) / 1e6;
        if (n == 1 && t[0] > 2 * target_ms)
            break;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    *ms = t[n / 2];
    printf("  m=%u KiB t=%u: %.1f ms\n", mem_kib, ops, *ms);
    return 0;
}

/* scale_mem is mem_kib scaled by ratio (a little under, as the time is
 * not quite linear), in whole MiB, within [floor, cap]. */
static uint32_t scale_mem(uint32_t mem_kib, double ratio, uint32_t cap)
{
    double m = (double)mem_kib * ratio * 0.95;
    uint32_t r;

    if (m >= (double)cap)
        return cap;
    r = (uint32_t)m / CAL_MEM_STEP_KIB * CAL_MEM_STEP_KIB;
    return r < AUTHD_ARGON2_MEM_KIB_FLOOR ? AUTHD_ARGON2_MEM_KIB_FLOOR : r;
}

/* parse_uint reads --flag N within [lo, hi]. */
static bool parse_uint(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int authd_calibrate_command(int argc, char **argv)
{
    long target = 250, cap_l = 262144;
    uint32_t cap, mem = AUTHD_ARGON2_MEM_KIB_FLOOR;
    unsigned ops = AUTHD_ARGON2_OPS_FLOOR;
    double ms = 0, best_ms;
    uint32_t best_mem;
    unsigned best_ops;
    int steps = 0;
    uint64_t t0 = mono_ns();

    for (int i = 1; i < argc; i++) {
        bool has_val = i + 1 < argc;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return calibrate_usage(stdout);
        if (strcmp(argv[i], "--target-ms") == 0 && has_val) {
            if (!parse_uint(argv[++i], 1, 10000, &target)) {
                fprintf(stderr, "authd calibrate: --target-ms: expected 1 to 10000\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--max-memory-kib") == 0 && has_val) {
            if (!parse_uint(argv[++i], 1, 4194304, &cap_l)) {
                fprintf(stderr, "authd calibrate: --max-memory-kib: expected 19456 to 4194304\n");
                return 2;
            }
            if (cap_l < (long)AUTHD_ARGON2_MEM_KIB_FLOOR) {
                fprintf(stderr,
                    "authd calibrate: --max-memory-kib %ld is below the floor of %u KiB "
                    "(OWASP's minimum for argon2id)\n",
                    cap_l, AUTHD_ARGON2_MEM_KIB_FLOOR);
                return 2;
            }
        } else {
            return calibrate_usage(stderr);
        }
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "authd calibrate: libsodium failed to initialise\n");
        return 1;
    }
    cap = (uint32_t)cap_l;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("authd calibrate: argon2id (p=1), target %ld ms, memory cap %u KiB, %ld CPUs\n", target,
        cap, ncpu);

    /* The floor first: if even it is over the target, it is the answer. */
    if (measure(mem, ops, (double)target, &ms) != 0)
        return 1;
    best_mem = mem;
    best_ops = ops;
    best_ms = ms;
    steps++;
    /* Memory: the largest that fits. Time grows with memory but not quite
     * in proportion (caches), so: scale from the largest that fitted while
     * nothing was over, then interpolate between it and the smallest that
     * was over, in whole MiB, until within 10% or the steps run out. */
    uint32_t over = 0; /* smallest memory measured over the target; 0 = none */
    double over_ms = 0;
    while (steps < CAL_STEPS && best_ms < 0.9 * (double)target && best_mem < cap) {
        uint32_t next;
        if (over == 0) {
            next = scale_mem(best_mem, (double)target / best_ms, cap);
        } else {
            double f = ((double)target - best_ms) / (over_ms - best_ms);
            next = best_mem + (uint32_t)((double)(over - best_mem) * f);
            next = next / CAL_MEM_STEP_KIB * CAL_MEM_STEP_KIB;
            if (next >= over)
                next = over - CAL_MEM_STEP_KIB;
        }
        if (next <= best_mem)
            break;
        if (measure(next, ops, (double)target, &ms) != 0)
            return 1;
        steps++;
        if (ms <= (double)target) {
            best_mem = next;
            best_ms = ms;
        } else {
            over = next;
            over_ms = ms;
        }
    }
    ms = best_ms;
    /* Iterations, only at the memory cap. */
    if (best_mem == cap && ms < (double)target) {
        unsigned t = (unsigned)((double)best_ops * (double)target / ms);
        if (t > CAL_OPS_MAX)
            t = CAL_OPS_MAX;
        while (t > best_ops && steps < CAL_STEPS) {
            if (measure(cap, t, (double)target, &ms) != 0)
                return 1;
            steps++;
            if (ms <= (double)target) {
                best_ops = t;
                best_ms = ms;
                break;
            }
            t--;
        }
    }
    printf("chosen: argon2id m=%u KiB, t=%u, p=1: %.1f ms per hash (median of %d; %.1f s "
           "measuring)\n",
        best_mem, best_ops, best_ms, CAL_SAMPLES, (double)(mono_ns() - t0) / 1e9);
    if (best_ms > (double)target)
        printf("note: the floors (m=%u KiB, t=%d) already take longer than %ld ms here; authd "
               "never goes below them\n",
            AUTHD_ARGON2_MEM_KIB_FLOOR, AUTHD_ARGON2_OPS_FLOOR, target);
    printf("flags: --argon2-mem-kib %u --argon2-ops %u\n", best_mem, best_ops);
    printf("env: AUTHD_ARGON2_MEM_KIB=%u AUTHD_ARGON2_OPS=%u\n", best_mem, best_ops);
    printf("memory: each hash worker holds %u KiB while hashing (--hash-workers, default one per "
           "CPU: %ld x %u KiB = %ld MiB at peak)\n",
        best_mem, ncpu, best_mem, ncpu * (long)best_mem / 1024);
    return 0;
}
