/*
 * main.c — authd: configuration, start-up in dependency order, the
 * maintenance loop, reloads on SIGHUP (caller policy, TLS files, key set,
 * log level, log file; the key set also every minute) and a clean shutdown
 * on SIGINT/SIGTERM; `authd user ...`, `authd keys ...`, `authd backup ...`,
 * `authd calibrate` and `authd check-config` run operator commands instead.
 *
 * Under systemd (Type=notify) it says READY=1 once the listeners accept,
 * STOPPING=1 when it starts to drain, and, when the unit sets WatchdogSec=,
 * WATCHDOG=1 every half interval while every event loop is turning
 * (authd_server_loops_turning), so a wedged loop gets authd restarted.
 *
 * Start: store -> tokens -> pools + timer -> service -> server. Stop in
 * reverse, after draining: requests in flight finish (up to
 * --shutdown-grace-ms), queued hashing jobs complete and answer, failed
 * Logins parked on the timer are answered, then the socket closes and LMDB
 * is closed last.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "check_config.h"
#include "config.h"
#include "dirlock.h"
#include "health.h"
#include "http.h"
#include "keydir.h"
#include "keyfile.h"
#include "keys_cmd.h"
#include "log.h"
#include "maint_cmd.h"
#include "notify.h"
#include "policy.h"
#include "server.h"
#include "service.h"
#include "user_cmd.h"
#include "writebatch.h"

#ifndef AUTHD_VERSION
#define AUTHD_VERSION "0.1.0"
#endif

#define MAINTAIN_EVERY_S 60
#define LOG_FLUSH_MS     2000 /* at exit, for the log thread to write what it holds */
#define LOG_GATE_SOURCES 4096 /* sources the failure-line gate remembers */
#define WATCHDOG_MIN_MS  1000 /* a loop sweeps every 250 ms: allow a busy machine this */

static void fatal(const char *event, const char *msg)
{
    authd_log_msg(AUTHD_LOG_ERROR, event, msg);
    fprintf(stderr, "authd: %s\n", msg);
    authd_notify("STATUS=%s: %s", event, msg);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * watchdog_tick pings systemd's watchdog only when every event loop has
 * turned within the interval: the main thread alone being alive proves
 * nothing about serving. A wedged loop gets no ping, and systemd restarts
 * authd after WatchdogSec=. The change either way is logged once.
 */
static void watchdog_tick(const authd_server *srv, unsigned every_ms, bool *withheld)
{
    unsigned within = every_ms > WATCHDOG_MIN_MS ? every_ms : WATCHDOG_MIN_MS;

    if (authd_server_loops_turning(srv, within)) {
        authd_notify("WATCHDOG=1");
        if (*withheld) {
            authd_log_msg(AUTHD_LOG_WARN, "watchdog_resumed", "every event loop turns again");
            authd_notify("STATUS=serving");
        }
        *withheld = false;
        return;
    }
    if (!*withheld) {
        authd_log_msg(AUTHD_LOG_ERROR, "watchdog_withheld",
            "an event loop has not turned within the watchdog interval; not pinging systemd");
        authd_notify("STATUS=an event loop is stalled; watchdog withheld");
    }
    *withheld = true;
}

#define FD_RESERVE 256 /* descriptors kept for the store, logs, key files, epoll, eventfds */

/*
 * side_port_fds sizes the side port's connection cap to the descriptors
 * the process may open. The soft RLIMIT_NOFILE is raised to the hard one
 * first (1024 is a common soft default outside the packaged unit). The
 * side port then gets at most what is left after --max-connections and a
 * reserve: its connections are descriptors of the same process, and
 * without this a peer holding side-port connections could use them all
 * up, so the main port's accept() failed (EMFILE) and no client could
 * connect. Logs fd_limit when it cuts the side port's cap.
 */
static unsigned side_port_fds(const authd_config *cfg)
{
    struct rlimit rl;
    uint64_t want = (uint64_t)cfg->http_max_connections;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return (unsigned)want;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    uint64_t lim = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    uint64_t used = (uint64_t)cfg->max_connections + FD_RESERVE;
    uint64_t left = lim > used ? lim - used : 0;
    uint64_t cap = want;
    if (cap > left)
        cap = left > 16 ? left : 16;
    if (cap < want) {
        authd_logrec r;
        if (authd_log_begin(&r, AUTHD_LOG_WARN, "fd_limit")) {
            authd_log_u64(&r, "nofile", lim);
            authd_log_u64(&r, "max_connections", (uint64_t)cfg->max_connections);
            authd_log_u64(&r, "http_max_connections", cap);
            authd_log_str(&r, "msg",
                "the descriptor limit (RLIMIT_NOFILE) is below --max-connections + "
                "--http-max-connections + 256: the side port's cap is lowered so it cannot "
                "use up the main port's descriptors; raise the limit (LimitNOFILE=, ulimit -n)");
            authd_log_end(&r);
        }
    }
    return (unsigned)cap;
}

/* write_url_file publishes the bound URL atomically (write + rename), so a
 * reader polling for the file never sees it half-written. */
static int write_url_file(const char *path, const char *url)
{
    char tmp[4096];
    FILE *f;

    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -1;
    if ((f = fopen(tmp, "w")) == NULL)
        return -1;
    int bad = fprintf(f, "%s\n", url) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* open_log_file opens --log-file for appending, created 0600 (log lines
 * name users and addresses). Returns the fd, or -1 with errno set. */
static int open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
}

/*
 * reload_log (SIGHUP): the log level, re-read with the rest of the
 * configuration (flags > environment > file, as at start: only the file
 * can have changed, so a level given by flag or environment stays), and
 * the log file reopened at its path (after logrotate renamed it). Nothing
 * else read from the file changes before a restart. A configuration that
 * no longer loads, or a log file that cannot be opened, keeps what is in
 * force and logs why.
 */
static void reload_log(int argc, char **argv, const authd_config *cfg)
{
    authd_config fresh;
    authd_log_level level;
    char msg[1024];
    authd_logrec r;
    char *buf = NULL;
    size_t len = 0;
    FILE *errs = open_memstream(&buf, &len);
    bool level_ok = false, file_ok = false;

    memset(&fresh, 0, sizeof fresh);
    if (errs == NULL || authd_config_load(&fresh, argc, argv, errs) != 0) {
        if (errs != NULL)
            fflush(errs);
        snprintf(msg, sizeof msg, "%s",
            buf != NULL && len > 0 ? buf : "the configuration does not load");
        msg[strcspn(msg, "\n")] = '\0';
    } else if (!authd_log_level_parse(fresh.log_level, &level)) {
        snprintf(msg, sizeof msg, "log-level %s: expected debug, info, warn, error or off",
            fresh.log_level != NULL ? fresh.log_level : "(none)");
    } else {
        authd_log_set_level(level);
        level_ok = true;
    }
    if (!level_ok && authd_log_begin(&r, AUTHD_LOG_ERROR, "reload_failed")) {
        authd_log_str(&r, "error", msg);
        authd_log_str(&r, "kept", "the log level in force");
        authd_log_end(&r);
    }
    if (errs != NULL)
        fclose(errs);
    free(buf);
    if (cfg->log_file != NULL) {
        int fd = open_log_file(cfg->log_file);
        if (fd >= 0) {
            authd_log_swap_fd(fd);
            file_ok = true;
        } else if (authd_log_begin(&r, AUTHD_LOG_ERROR, "reload_failed")) {
            authd_log_str(&r, "log_file", cfg->log_file);
            authd_log_str(&r, "error", strerror(errno));
            authd_log_str(&r, "kept", "the log file open before");
            authd_log_end(&r);
        }
    }
    if (authd_log_begin(&r, AUTHD_LOG_INFO, "log_reloaded")) {
        if (level_ok)
            authd_log_str(&r, "log_level", fresh.log_level);
        if (cfg->log_file != NULL) {
            authd_log_str(&r, "log_file", cfg->log_file);
            authd_log_bool(&r, "reopened", file_ok);
        }
        authd_log_end(&r);
    }
    authd_config_free(&fresh);
}

/* load_policy reads the caller policy file against the service's methods. */
static authd_code load_policy(const char *path, authd_policy **out, char *err, size_t errlen)
{
    const char *methods[AUTHD_POLICY_METHODS_MAX];
    size_t n = authd_method_names(methods, AUTHD_POLICY_METHODS_MAX);

    return authd_policy_load(path, methods, n, out, err, errlen);
}

/*
 * reload_keys puts the key set of --key-dir in force when keys.state has
 * changed since the last load (SIGHUP and every maintenance tick: the
 * `authd keys` commands only write files). A set that fails to load keeps
 * the one in force and logs why.
 */
static void reload_keys(const authd_config *cfg, authd_tokens *tokens, uint8_t digest[32])
{
    char err[512];
    bool changed = false;
    authd_logrec r;

    if (cfg->key_dir == NULL)
        return;
    if (authd_keydir_load(tokens, cfg->key_dir, digest, &changed, err, sizeof err) != AUTHD_OK) {
        if (authd_log_begin(&r, AUTHD_LOG_ERROR, "reload_failed")) {
            authd_log_str(&r, "key_dir", cfg->key_dir);
            authd_log_str(&r, "error", err);
            authd_log_str(&r, "kept", "the key set in force");
            authd_log_end(&r);
        }
        return;
    }
    if (changed && authd_log_begin(&r, AUTHD_LOG_INFO, "keys_loaded")) {
        authd_log_str(&r, "key_dir", cfg->key_dir);
        authd_log_str(&r, "kid", authd_tokens_kid(tokens));
        authd_log_str(&r, "alg", authd_tokens_alg(tokens));
        authd_log_end(&r);
    }
}

/*
 * reload (SIGHUP): the caller policy and the TLS files, each on its own. A
 * part that fails to load keeps what is in force and logs an error naming
 * the file (and line); what did load is put in force and logged.
 */
static void reload(
    const authd_config *cfg, authd_policy_slot *slot, authd_server *srv, authd_http *http)
{
    char err[512];
    authd_policy *p = NULL;
    size_t callers = 0;
    bool policy_ok = false, tls_ok = false, http_tls = false, http_tls_ok = false;
    authd_logrec r;

    if (slot != NULL) {
        if (load_policy(cfg->caller_policy, &p, err, sizeof err) == AUTHD_OK) {
            callers = authd_policy_callers(p);
            authd_policy_slot_install(slot, p);
            policy_ok = true;
        } else if (authd_log_begin(&r, AUTHD_LOG_ERROR, "reload_failed")) {
            authd_log_str(&r, "file", cfg->caller_policy);
            authd_log_str(&r, "error", err);
            authd_log_str(&r, "kept", "the caller policy in force");
            authd_log_end(&r);
        }
    }
    authd_code rc = authd_server_reload_tls(srv, err, sizeof err);
    if (rc != AUTHD_UNIMPLEMENTED) { /* plaintext: no TLS files */
        if (rc == AUTHD_OK) {
            tls_ok = true;
        } else if (authd_log_begin(&r, AUTHD_LOG_ERROR, "reload_failed")) {
            authd_log_str(&r, "error", err);
            authd_log_str(&r, "kept", "the TLS context in force");
            authd_log_end(&r);
        }
    }
    if (http != NULL) {
        const char *cert = cfg->http_tls_cert != NULL ? cfg->http_tls_cert : cfg->tls_cert;
        const char *key = cfg->http_tls_key != NULL ? cfg->http_tls_key : cfg->tls_key;
        rc = authd_http_reload_tls(http, cert, key, err, sizeof err);
        if (rc != AUTHD_UNIMPLEMENTED) { /* http://: no TLS files */
            http_tls = true;
            if (rc == AUTHD_OK) {
                http_tls_ok = true;
            } else if (authd_log_begin(&r, AUTHD_LOG_ERROR, "reload_failed")) {
                authd_log_str(&r, "error", err);
                authd_log_str(&r, "kept", "the side port's certificate in force");
                authd_log_end(&r);
            }
        }
    }
    if ((policy_ok || tls_ok || http_tls_ok) && authd_log_begin(&r, AUTHD_LOG_INFO, "reloaded")) {
        if (policy_ok) {
            authd_log_str(&r, "caller_policy", cfg->caller_policy);
            authd_log_u64(&r, "callers", callers);
        }
        authd_log_bool(&r, "tls", tls_ok);
        if (http_tls)
            authd_log_bool(&r, "http_tls", http_tls_ok);
        authd_log_end(&r);
    }
}

int main(int argc, char **argv)
{
    authd_config cfg;
    authd_log_level level;
    authd_store *store = NULL;
    authd_tokens *tokens = NULL;
    authd_workpool *hash_pool = NULL, *write_pool = NULL;
    authd_timer *timer = NULL;
    authd_service *svc = NULL;
    authd_server *srv = NULL;
    authd_http *http = NULL;
    authd_policy_slot *policy = NULL;
    size_t policy_callers = 0;
    int dirlock = -1;
    uint8_t key[AUTHD_SIGNING_KEY_MAX];
    size_t key_len = 0;
    uint8_t keys_digest[32] = { 0 }; /* of the key set's state file in force */
    bool created = false;
    char err[512];
    int status = 1;
    sigset_t sigs;

    /* `authd user ...`: local operator commands on the store, not a server. */
    if (argc >= 2 && strcmp(argv[1], "user") == 0)
        return authd_user_command(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "keys") == 0)
        return authd_keys_command(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "backup") == 0)
        return authd_backup_command(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "calibrate") == 0)
        return authd_calibrate_command(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "check-config") == 0)
        return authd_check_config(argc - 1, argv + 1);
    /* A SIGHUP (reload) during start-up must not kill authd: it waits,
     * pending, for the signal loop below. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (authd_config_load(&cfg, argc, argv, stderr) != 0) {
        authd_config_free(&cfg);
        return 2;
    }
    if (cfg.help || cfg.version) {
        if (cfg.help)
            authd_config_usage(stdout);
        else
            printf("authd %s\n", AUTHD_VERSION);
        authd_config_free(&cfg);
        return 0;
    }
    if (!authd_log_level_parse(cfg.log_level, &level)) {
        fprintf(stderr, "authd: --log-level: expected debug, info, warn, error or off\n");
        authd_config_free(&cfg);
        return 2;
    }
    int log_fd = STDERR_FILENO;
    if (cfg.log_file != NULL && (log_fd = open_log_file(cfg.log_file)) < 0) {
        fprintf(stderr, "authd: cannot open log file %s: %s\n", cfg.log_file, strerror(errno));
        authd_config_free(&cfg);
        return 2;
    }
    authd_log_setup(level, log_fd);
    if (cfg.insecure_weak_params)
        authd_log_msg(AUTHD_LOG_WARN, "insecure_weak_params",
            "--insecure-weak-params is on: argon2id and token lifetime floors are not enforced "
            "(development and tests only)");

    if ((cfg.caller_policy != NULL || cfg.tls_crl != NULL) && cfg.tls_client_ca == NULL) {
        fatal("startup_failed",
            cfg.caller_policy != NULL
                ? "--caller-policy needs --tls-client-ca: callers are named by their client "
                  "certificates"
                : "--tls-crl needs --tls-client-ca: it revokes client certificates");
        status = 2;
        goto out;
    }

    signal(SIGPIPE, SIG_IGN);

    if (sodium_init() < 0) {
        fatal("startup_failed", "libsodium failed to initialise");
        goto out;
    }
    /* From here every line goes through the log thread; out: flushes it. */
    if (!authd_log_gate_setup(
            (double)cfg.log_failure_rate, (double)cfg.log_failure_burst, LOG_GATE_SOURCES)
        || !authd_log_start((size_t)cfg.log_buffer_kib * 1024u)) {
        fatal("startup_failed", "cannot start the log thread");
        goto out;
    }

    /* --key-dir replaces --signing-key (which has a default path). */
    if (cfg.key_dir == NULL
        && authd_keyfile_load(
               cfg.signing_key, cfg.create_signing_key, key, &key_len, &created, err, sizeof err)
            != AUTHD_OK) {
        fatal("startup_failed", err);
        goto out;
    }
    if (created)
        authd_log_msg(AUTHD_LOG_WARN, "signing_key_created",
            "created a new signing key (--create-signing-key)");

    authd_store_options so
        = { .dir = cfg.data_dir, .map_size = (size_t)cfg.map_size_mb * 1024u * 1024u };
    if (authd_store_open(&so, &store) != AUTHD_OK) {
        snprintf(err, sizeof err, "cannot open the store in %s (see the store_error line)",
            cfg.data_dir != NULL ? cfg.data_dir : "(unset)");
        fatal("startup_failed", err);
        goto out;
    }
    /* The store may be opened by local commands while authd runs; the
     * server itself is one per data directory. */
    if (authd_dirlock_take(cfg.data_dir, &dirlock, err, sizeof err) != AUTHD_OK) {
        fatal("startup_failed", err);
        goto out;
    }
    /* Readiness (health.h): what /readyz and the Health RPC check. */
    authd_health_expect(AUTHD_HEALTH_STORE | AUTHD_HEALTH_KEYS | AUTHD_HEALTH_LISTENERS
        | (cfg.http_listen != NULL ? AUTHD_HEALTH_HTTP : 0u));
    authd_health_set(AUTHD_HEALTH_STORE, true);

    authd_tokens_options to = { .key = cfg.key_dir == NULL ? key : NULL,
        .key_len = cfg.key_dir == NULL ? key_len : 0,
        .issuer = cfg.issuer,
        .audience = cfg.audience,
        .leeway = cfg.clock_leeway,
        .max_ttl = cfg.token_ttl };
    if (authd_tokens_create(&to, &tokens) != AUTHD_OK) {
        fatal("startup_failed",
            "invalid token settings: issuer/audience must be 1-128 "
            "printable characters without quotes or backslashes");
        goto out;
    }
    sodium_memzero(key, sizeof key);
    if (cfg.key_dir != NULL
        && authd_keydir_load(tokens, cfg.key_dir, keys_digest, NULL, err, sizeof err) != AUTHD_OK) {
        fatal("startup_failed", err);
        goto out;
    }
    authd_health_set(AUTHD_HEALTH_KEYS, true);

    /* Signals are taken synchronously by the main thread (sigtimedwait), so
     * block them before any thread (ours or nng's) exists. Until here a
     * SIGINT/SIGTERM simply ends start-up. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned hash_threads
        = cfg.hash_workers > 0 ? (unsigned)cfg.hash_workers : (unsigned)(ncpu > 0 ? ncpu : 1);
    /* Shares of the hashing queue: by default one source may keep every
     * worker busy and hold half the queue besides, one connection a quarter:
     * a lone caller on an idle server loses no throughput, and one caller
     * can never leave the others no room. */
    authd_workpool_options ho = {
        .threads = hash_threads,
        .queue_max = (unsigned)cfg.hash_queue,
        .nice = 10,
        .per_source_max = cfg.hash_queue_per_source > 0
            ? (unsigned)cfg.hash_queue_per_source
            : hash_threads + ((unsigned)cfg.hash_queue + 1) / 2,
        .per_conn_max = cfg.hash_queue_per_conn > 0
            ? (unsigned)cfg.hash_queue_per_conn
            : hash_threads + ((unsigned)cfg.hash_queue + 3) / 4,
        .name = "hash",
    };
    /* The write pool: Login's first step is charged to its source, which
     * may hold a quarter of the queue (a burst from one source cannot
     * leave the others OVERLOADED); other writes are anonymous. */
    authd_workpool_options wo = { .threads = 1,
        .queue_max = 4096,
        .nice = 0,
        .per_source_max = 1024,
        .name = "write",
        .batch_max = (unsigned)cfg.write_batch_max, /* group commit (writebatch.h) */
        .batch = authd_write_batch_run };
    if (authd_workpool_create(&ho, &hash_pool) != AUTHD_OK
        || authd_workpool_create(&wo, &write_pool) != AUTHD_OK
        || authd_timer_create(&timer) != AUTHD_OK) {
        fatal("startup_failed", "cannot start worker threads");
        goto out;
    }

    if (cfg.caller_policy != NULL) {
        authd_policy *p = NULL;
        if (load_policy(cfg.caller_policy, &p, err, sizeof err) != AUTHD_OK) {
            fatal("startup_failed", err);
            goto out;
        }
        policy_callers = authd_policy_callers(p);
        if (authd_policy_slot_create(p, &policy) != AUTHD_OK) {
            authd_policy_free(p);
            fatal("startup_failed", "out of memory");
            goto out;
        }
    }

    authd_service_options vo = {
        .store = store,
        .tokens = tokens,
        .hash_pool = hash_pool,
        .write_pool = write_pool,
        .pwparams = { .opslimit = (unsigned long long)cfg.argon2_ops,
            .memlimit = (size_t)cfg.argon2_mem_kib * 1024u },
        .timer = timer,
        .fail_floor_ns = (uint64_t)cfg.login_fail_floor_ms * 1000000u,
        .token_ttl = cfg.token_ttl,
        .verify_cache_entries = (uint32_t)cfg.verify_cache_entries,
        .sessions = { .idle_ttl = cfg.session_idle_ttl,
            .max_ttl = cfg.session_max_ttl,
            .grace_ms = cfg.refresh_grace_ms },
        .password_min_bits = (unsigned)cfg.password_min_bits,
        .throttle = { .free_attempts = (uint32_t)cfg.login_free_attempts,
            .base_delay_ms = (uint32_t)cfg.login_backoff_base_ms,
            .max_delay_ms = (uint32_t)cfg.login_backoff_max_ms,
            .lockout = (uint32_t)cfg.login_lockout,
            .reset_after_ms = cfg.login_reset_after_s * 1000 },
        .limits = { .source_login_failures = (uint32_t)cfg.source_login_failures,
            .caller_login_failures = (uint32_t)cfg.caller_login_failures,
            .source_registrations = (uint32_t)cfg.source_registrations,
            .caller_registrations = (uint32_t)cfg.caller_registrations,
            .max_keys = (uint32_t)cfg.ratelimit_keys },
        .policy = policy,
    };
    if (cfg.login_backoff_max_ms < cfg.login_backoff_base_ms) {
        fatal("startup_failed", "--login-backoff-max-ms must be >= --login-backoff-base-ms");
        goto out;
    }
    if (authd_service_create(&vo, &svc) != AUTHD_OK) {
        fatal("startup_failed", "invalid argon2 parameters (see --argon2-ops, --argon2-mem-kib)");
        goto out;
    }

    authd_server_options sv = {
        .url = cfg.listen,
        .tls_cert = cfg.tls_cert,
        .tls_key = cfg.tls_key,
        .tls_client_ca = cfg.tls_client_ca,
        .tls_crl = cfg.tls_crl,
        .allow_plaintext = cfg.insecure_plaintext,
        .max_msg = (size_t)cfg.max_msg_bytes,
        .max_inflight = (unsigned)cfg.max_inflight,
        .max_connections = (unsigned)cfg.max_connections,
        .max_conns_per_source = (unsigned)cfg.max_conns_per_source,
        .max_handshakes_per_source = (unsigned)cfg.max_handshakes_per_source,
        .max_handshakes = (unsigned)cfg.max_handshakes,
        .handshake_timeout_ms = (unsigned)cfg.handshake_timeout_ms,
        .idle_timeout_ms = (unsigned)cfg.idle_timeout_ms,
        .frame_timeout_ms = (unsigned)cfg.frame_timeout_ms,
        .io_threads = (unsigned)cfg.io_threads,
    };
    if (cfg.listen == NULL) {
        fatal("startup_failed", "no listen URL (--listen)");
        goto out;
    }
    if (authd_server_start(&sv, svc, &srv, err, sizeof err) != AUTHD_OK) {
        fatal("startup_failed", err);
        goto out;
    }
    authd_health_set(AUTHD_HEALTH_LISTENERS, true);
    if (cfg.http_listen != NULL) {
        authd_http_options hto = {
            .url = cfg.http_listen,
            .allow_plaintext = cfg.http_allow_plaintext,
            .tls_cert = cfg.http_tls_cert != NULL ? cfg.http_tls_cert : cfg.tls_cert,
            .tls_key = cfg.http_tls_key != NULL ? cfg.http_tls_key : cfg.tls_key,
            .threads = (unsigned)cfg.http_threads,
            .max_connections = side_port_fds(&cfg),
            .max_conns_per_source = (unsigned)cfg.http_max_conns_per_source,
            .auth_cookie = cfg.http_auth_cookie,
            .trusted_proxies = cfg.http_trusted_proxies,
        };
        if (authd_http_start(&hto, svc, &http, err, sizeof err) != AUTHD_OK) {
            fatal("startup_failed", err);
            goto out;
        }
        authd_health_set(AUTHD_HEALTH_HTTP, true);
        if (cfg.http_url_file != NULL
            && write_url_file(cfg.http_url_file, authd_http_url(http)) != 0) {
            snprintf(err, sizeof err, "cannot write --http-url-file %s", cfg.http_url_file);
            fatal("startup_failed", err);
            goto out;
        }
    }
    if (cfg.url_file != NULL && write_url_file(cfg.url_file, authd_server_url(srv)) != 0) {
        snprintf(err, sizeof err, "cannot write --url-file %s", cfg.url_file);
        fatal("startup_failed", err);
        goto out;
    }
    if (cfg.tls_client_ca == NULL)
        authd_log_msg(AUTHD_LOG_WARN, "no_mtls",
            "no --tls-client-ca: any host that can reach the port can call every RPC (use mTLS "
            "and a --caller-policy in production)");
    authd_logrec r;
    if (authd_log_begin(&r, AUTHD_LOG_INFO, "listening")) {
        authd_log_str(&r, "url", authd_server_url(srv));
        if (http != NULL)
            authd_log_str(&r, "http_url", authd_http_url(http));
        authd_log_str(&r, "version", AUTHD_VERSION);
        authd_log_str(&r, "data_dir", cfg.data_dir);
        authd_log_str(&r, "kid", authd_tokens_kid(tokens));
        authd_log_str(&r, "alg", authd_tokens_alg(tokens));
        if (cfg.key_dir != NULL)
            authd_log_str(&r, "key_dir", cfg.key_dir);
        else
            authd_log_str(&r, "signing_key", cfg.signing_key);
        if (strncmp(authd_server_url(srv), "tls+", 4) == 0) {
            authd_log_str(&r, "tls_cert", cfg.tls_cert);
            authd_log_str(&r, "tls_key", cfg.tls_key);
        }
        if (cfg.tls_client_ca != NULL)
            authd_log_str(&r, "tls_client_ca", cfg.tls_client_ca);
        if (cfg.tls_crl != NULL)
            authd_log_str(&r, "tls_crl", cfg.tls_crl);
        if (cfg.config != NULL)
            authd_log_str(&r, "config", cfg.config);
        authd_log_bool(&r, "mtls", cfg.tls_client_ca != NULL);
        if (cfg.caller_policy != NULL) {
            authd_log_str(&r, "caller_policy", cfg.caller_policy);
            authd_log_u64(&r, "callers", policy_callers);
        }
        authd_log_bool(&r, "crl", cfg.tls_crl != NULL);
        authd_log_u64(&r, "hash_workers", ho.threads);
        authd_log_u64(&r, "io_threads", authd_server_io_threads(srv));
        authd_log_u64(&r, "argon2_mem_kib", (uint64_t)cfg.argon2_mem_kib);
        authd_log_u64(&r, "argon2_ops", (uint64_t)cfg.argon2_ops);
        authd_log_u64(&r, "hash_queue_per_source", ho.per_source_max);
        authd_log_u64(&r, "hash_queue_per_conn", ho.per_conn_max);
        authd_log_u64(&r, "login_fail_floor_us", authd_service_fail_floor_ns(svc) / 1000);
        authd_log_end(&r);
    }

    authd_service_maintain(svc);
    authd_notify("READY=1\nSTATUS=serving on %s", authd_server_url(srv));
    /* Ping at half systemd's interval, as sd_watchdog_enabled(3) advises. */
    unsigned wd_ms = (unsigned)(authd_notify_watchdog_usec() / 2000u);
    bool wd_withheld = false;
    if (wd_ms > 0 && authd_log_begin(&r, AUTHD_LOG_INFO, "watchdog")) {
        authd_log_u64(&r, "ping_every_ms", wd_ms);
        authd_log_end(&r);
    }
    uint64_t next_maintain = mono_ms() + MAINTAIN_EVERY_S * 1000u;
    uint64_t next_ping = mono_ms() + wd_ms;
    for (;;) {
        uint64_t now = mono_ms(), until = next_maintain;
        if (wd_ms > 0 && next_ping < until)
            until = next_ping;
        uint64_t wait = until > now ? until - now : 0;
        struct timespec ts = { (time_t)(wait / 1000u), (long)(wait % 1000u) * 1000000L };
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM)
            break;
        if (sig == SIGHUP) {
            reload_log(argc, argv, &cfg);
            reload(&cfg, policy, srv, http);
            reload_keys(&cfg, tokens, keys_digest);
        }
        now = mono_ms();
        if (wd_ms > 0 && now >= next_ping) {
            watchdog_tick(srv, wd_ms, &wd_withheld);
            next_ping = now + wd_ms;
        }
        if (now >= next_maintain) {
            reload_keys(&cfg, tokens, keys_digest);
            authd_service_maintain(svc);
            next_maintain = now + MAINTAIN_EVERY_S * 1000u;
        }
        if (policy != NULL)
            (void)authd_policy_slot_reap(policy);
    }

    /* /readyz turns 503 (and Health says DRAINING) before the drain, so a
     * balancer stops sending; /healthz answers until the side port closes. */
    authd_health_set(AUTHD_HEALTH_DRAINING, true);
    authd_notify("STOPPING=1\nSTATUS=draining requests in flight");
    authd_log_msg(AUTHD_LOG_INFO, "shutting_down", "draining requests in flight");
    unsigned left = authd_server_drain(srv, (int)cfg.shutdown_grace_ms);
    if (left > 0 && authd_log_begin(&r, AUTHD_LOG_WARN, "shutdown_deadline")) {
        authd_log_u64(&r, "unfinished", left);
        authd_log_end(&r);
    }
    status = 0;
out:
    /* Pools stop first: their queued jobs still answer through the server.
     * Then the timer answers the failed Logins it still holds (the pools'
     * last jobs may have parked some). They are freed only after the server
     * is closed, because a transport callback that is still finishing may
     * submit (and be told UNAVAILABLE, or answered at once). The side
     * port stops before them: its requests run the service inline. */
    authd_http_stop(http);
    authd_workpool_shutdown(hash_pool);
    authd_workpool_shutdown(write_pool);
    authd_timer_shutdown(timer);
    authd_server_close(srv);
    authd_workpool_destroy(hash_pool);
    authd_workpool_destroy(write_pool);
    authd_timer_destroy(timer);
    authd_service_destroy(svc);
    authd_policy_slot_destroy(policy);
    authd_tokens_destroy(tokens);
    authd_store_close(store);
    authd_dirlock_release(dirlock);
    sodium_memzero(key, sizeof key);
    if (status == 0)
        authd_log_msg(AUTHD_LOG_INFO, "stopped", "clean shutdown");
    /* Not a word on stderr if this fails: stderr is what is stuck. */
    (void)authd_log_shutdown(LOG_FLUSH_MS);
    authd_config_free(&cfg);
    return status;
}
