/*
 * config.c — the option table, environment and flag parsing, --help.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "password.h"

#define TOKEN_TTL_CEILING (12 * 3600) /* seconds; longer only with --insecure-weak-params */

enum kind { STR, BOOL, INT };

struct opt {
    const char *flag; /* without the leading "--" */
    const char *env;
    enum kind kind;
    size_t off;
    const char *def; /* default, as text ("" = unset for STR) */
    int64_t min, max; /* INT bounds */
    const char *help;
};

#define O(f) offsetof(authd_config, f)

static const struct opt opts[] = {
    { "listen", "AUTHD_LISTEN", STR, O(listen), "tls+tcp://127.0.0.1:7443", 0, 0,
        "URL to listen on: tls+tcp://HOST:PORT (port 0 picks a free port)" },
    { "data-dir", "AUTHD_DATA_DIR", STR, O(data_dir), "./var/data", 0, 0,
        "directory of the LMDB store (created 0700 if absent)" },
    { "tls-cert", "AUTHD_TLS_CERT", STR, O(tls_cert), "./var/tls/server.crt", 0, 0,
        "server certificate chain (PEM)" },
    { "tls-key", "AUTHD_TLS_KEY", STR, O(tls_key), "./var/tls/server.key", 0, 0,
        "server private key (PEM)" },
    { "tls-client-ca", "AUTHD_TLS_CLIENT_CA", STR, O(tls_client_ca), "", 0, 0,
        "CA bundle (PEM): when set, clients must present a certificate it signed (mTLS)" },
    { "tls-crl", "AUTHD_TLS_CRL", STR, O(tls_crl), "", 0, 0,
        "CRLs (PEM) of the client CAs: a revoked client certificate fails the handshake; needs "
        "--tls-client-ca; reloaded on SIGHUP" },
    { "caller-policy", "AUTHD_CALLER_POLICY", STR, O(caller_policy), "", 0, 0,
        "caller policy file (INI): which client-certificate identities may call which RPCs, and "
        "which are front-ends; needs --tls-client-ca; reloaded on SIGHUP" },
    { "signing-key", "AUTHD_SIGNING_KEY", STR, O(signing_key), "./var/signing.key", 0, 0,
        "token signing key file: >= 32 random bytes, mode 0600, owned by authd's user or root,"
        " in a directory only they can write" },
    { "create-signing-key", "AUTHD_CREATE_SIGNING_KEY", BOOL, O(create_signing_key), "0", 0, 0,
        "create the signing key (64 random bytes, 0600) if the file is absent (development)" },
    { "key-dir", "AUTHD_KEY_DIR", STR, O(key_dir), "", 0, 0,
        "directory of a rotating key set (HS256/ES256, managed by `authd keys`); when set it "
        "replaces --signing-key; reloaded on SIGHUP and every minute" },
    { "key-publish-min-s", "AUTHD_KEY_PUBLISH_MIN_S", INT, O(key_publish_min_s), "900", 0, 604800,
        "`authd keys activate` refuses an ES256 key published (in the JWKS) for less than this "
        "many seconds, so verifiers' JWKS caches have it before it signs (--force overrides)" },
    { "insecure-plaintext", "AUTHD_INSECURE_PLAINTEXT", BOOL, O(insecure_plaintext), "0", 0, 0,
        "allow a plaintext tcp:// listen URL (local development only)" },
    { "insecure-weak-params", "AUTHD_INSECURE_WEAK_PARAMS", BOOL, O(insecure_weak_params), "0", 0,
        0,
        "allow argon2id below 19456 KiB / t=2 and --token-ttl above 43200 (development and "
        "tests only; logged as a warning)" },
    { "issuer", "AUTHD_ISSUER", STR, O(issuer), "authd", 0, 0, "token 'iss' claim" },
    { "audience", "AUTHD_AUDIENCE", STR, O(audience), "authd", 0, 0, "token 'aud' claim" },
    { "token-ttl", "AUTHD_TOKEN_TTL", INT, O(token_ttl), "900", 1, 86400 * 366,
        "access token lifetime, seconds (at most 43200 = 12 h without --insecure-weak-params)" },
    { "session-idle-ttl", "AUTHD_SESSION_IDLE_TTL", INT, O(session_idle_ttl), "604800", 1,
        86400 * 366,
        "a session (and its refresh token) ends this many seconds after login or its last "
        "Refresh" },
    { "session-max-ttl", "AUTHD_SESSION_MAX_TTL", INT, O(session_max_ttl), "2592000", 1,
        86400 * 366, "a session ends this many seconds after login, however often refreshed" },
    { "refresh-grace-ms", "AUTHD_REFRESH_GRACE_MS", INT, O(refresh_grace_ms), "10000", 0, 300000,
        "a used refresh token may be sent again this long after its Refresh and gets the same "
        "new pair back (a lost reply); later, or an older token, revokes the session" },
    { "clock-leeway", "AUTHD_CLOCK_LEEWAY", INT, O(clock_leeway), "30", 0, 600,
        "clock skew allowed on exp/nbf, seconds" },
    { "argon2-ops", "AUTHD_ARGON2_OPS", INT, O(argon2_ops), "2", 1, 100,
        "argon2id iterations (t) for new hashes (at least 2 without --insecure-weak-params)" },
    { "argon2-mem-kib", "AUTHD_ARGON2_MEM_KIB", INT, O(argon2_mem_kib), "19456", 8, 4194304,
        "argon2id memory (m) for new hashes, KiB (19456 = 19 MiB, OWASP's minimum: the floor "
        "without --insecure-weak-params)" },
    { "password-min-bits", "AUTHD_PASSWORD_MIN_BITS", INT, O(password_min_bits), "30", 26, 128,
        "refuse new passwords that zxcvbn estimates at fewer bits (log2 of guesses)" },
    { "hash-workers", "AUTHD_HASH_WORKERS", INT, O(hash_workers), "0", 0, 256,
        "password hashing threads (0 = number of CPUs)" },
    { "hash-queue", "AUTHD_HASH_QUEUE", INT, O(hash_queue), "64", 1, 100000,
        "hashing jobs allowed to wait; beyond it RESOURCE_EXHAUSTED" },
    { "hash-queue-per-source", "AUTHD_HASH_QUEUE_PER_SOURCE", INT, O(hash_queue_per_source), "0", 0,
        200000,
        "hashing jobs (waiting + running) one source address (IPv6: /64) may hold; beyond it "
        "RESOURCE_EXHAUSTED (0 = hash workers + half of --hash-queue)" },
    { "hash-queue-per-conn", "AUTHD_HASH_QUEUE_PER_CONN", INT, O(hash_queue_per_conn), "0", 0,
        200000,
        "hashing jobs (waiting + running) one connection may hold; beyond it RESOURCE_EXHAUSTED "
        "(0 = hash workers + a quarter of --hash-queue)" },
    { "write-batch-max", "AUTHD_WRITE_BATCH_MAX", INT, O(write_batch_max), "256", 1, 4096,
        "store writes (Register, Login, Refresh, Logout) committed together in one transaction "
        "and one fsync, at most (group commit; only what is queued at that moment, never "
        "waiting for more); 1 = a commit per write" },
    { "login-fail-floor-ms", "AUTHD_LOGIN_FAIL_FLOOR_MS", INT, O(login_fail_floor_ms), "0", 0,
        60000,
        "a failed Login is answered no earlier than this after receipt (0 = measured at "
        "start-up: twice the slower of 2 dummy-hash verifies)" },
    { "max-inflight", "AUTHD_MAX_INFLIGHT", INT, O(max_inflight), "128", 1, 65536,
        "requests in flight per connection; beyond it the connection is not read" },
    { "max-msg-bytes", "AUTHD_MAX_MSG_BYTES", INT, O(max_msg_bytes), "65536", 1024,
        16 * 1024 * 1024, "largest request frame accepted; larger closes the connection" },
    { "max-connections", "AUTHD_MAX_CONNECTIONS", INT, O(max_connections), "4096", 1, 1000000,
        "open client connections allowed; at the cap the oldest idle one is closed for a "
        "newcomer, and with none idle the newcomer is closed at once" },
    { "max-connections-per-source", "AUTHD_MAX_CONNECTIONS_PER_SOURCE", INT,
        O(max_conns_per_source), "512", 1, 1000000,
        "open connections per source (IPv4 address, IPv6 /64); more are closed at once" },
    { "max-handshakes-per-source", "AUTHD_MAX_HANDSHAKES_PER_SOURCE", INT,
        O(max_handshakes_per_source), "64", 1, 1000000,
        "unfinished TLS + SP handshakes per source; more connections are closed at once" },
    { "max-handshakes", "AUTHD_MAX_HANDSHAKES", INT, O(max_handshakes), "0", 0, 1000000,
        "unfinished TLS + SP handshakes in all; a newcomer over it closes the oldest one (0 = a "
        "quarter of --max-connections, at least 16 or --max-connections)" },
    { "handshake-timeout-ms", "AUTHD_HANDSHAKE_TIMEOUT_MS", INT, O(handshake_timeout_ms), "10000",
        100, 600000,
        "a connection must finish its TLS + SP handshake this long after it is accepted" },
    { "idle-timeout-ms", "AUTHD_IDLE_TIMEOUT_MS", INT, O(idle_timeout_ms), "120000", 0, 86400000,
        "close a connection with nothing in flight for this long (0 = never); keep it above "
        "the clients' own idle close (libauthd-client: 60000)" },
    { "frame-timeout-ms", "AUTHD_FRAME_TIMEOUT_MS", INT, O(frame_timeout_ms), "10000", 100, 600000,
        "a started request frame must be complete this long after its first byte" },
    { "io-threads", "AUTHD_IO_THREADS", INT, O(io_threads), "0", 0, 64,
        "network event-loop threads (0 = number of CPUs); Verify runs on them" },
    { "map-size-mb", "AUTHD_MAP_SIZE_MB", INT, O(map_size_mb), "4096", 1, 1048576,
        "LMDB map size (maximum store size), MiB" },
    { "log-level", "AUTHD_LOG_LEVEL", STR, O(log_level), "info", 0, 0,
        "debug, info, warn, error or off (JSON lines on stderr)" },
    { "log-buffer-kib", "AUTHD_LOG_BUFFER_KIB", INT, O(log_buffer_kib), "1024", 16, 1048576,
        "log ring between the server and the log thread, KiB; when full, lines are dropped and "
        "counted (log_dropped)" },
    { "log-failure-rate", "AUTHD_LOG_FAILURE_RATE", INT, O(log_failure_rate), "10", 0, 1000000,
        "failure lines per second per source address (0 = no limit); held-back lines are counted "
        "(log_suppressed)" },
    { "log-failure-burst", "AUTHD_LOG_FAILURE_BURST", INT, O(log_failure_burst), "50", 1, 1000000,
        "failure lines a source may write at once before --log-failure-rate applies" },
    { "url-file", "AUTHD_URL_FILE", STR, O(url_file), "", 0, 0,
        "once listening, write the bound URL to this file (for scripts and tests)" },
    { "shutdown-grace-ms", "AUTHD_SHUTDOWN_GRACE_MS", INT, O(shutdown_grace_ms), "10000", 0, 600000,
        "on SIGINT/SIGTERM, how long to let in-flight requests finish" },
    { "login-free-attempts", "AUTHD_LOGIN_FREE_ATTEMPTS", INT, O(login_free_attempts), "5", 0, 100,
        "login attempts per account allowed without delay (since the last success)" },
    { "login-backoff-base-ms", "AUTHD_LOGIN_BACKOFF_BASE_MS", INT, O(login_backoff_base_ms), "1000",
        1, 3600000, "after the free attempts, the first delay between attempts; it doubles" },
    { "login-backoff-max-ms", "AUTHD_LOGIN_BACKOFF_MAX_MS", INT, O(login_backoff_max_ms), "900000",
        1, 86400000, "the longest delay between login attempts of one account" },
    { "login-lockout", "AUTHD_LOGIN_LOCKOUT", INT, O(login_lockout), "100", 1, 100,
        "consecutive failed logins that lock an account until `authd user unlock`" },
    { "login-reset-after-s", "AUTHD_LOGIN_RESET_AFTER_S", INT, O(login_reset_after_s), "86400", 0,
        31536000,
        "an unlocked account's failure count is forgotten after this quiet time (0 = never)" },
    { "source-login-failures", "AUTHD_SOURCE_LOGIN_FAILURES", INT, O(source_login_failures), "30",
        0, 1000000,
        "failed logins per minute per end-user address (trusted ClientContext; 0 = off)" },
    { "caller-login-failures", "AUTHD_CALLER_LOGIN_FAILURES", INT, O(caller_login_failures), "600",
        0, 1000000, "failed logins per minute per calling service address (0 = off)" },
    { "source-registrations", "AUTHD_SOURCE_REGISTRATIONS", INT, O(source_registrations), "10", 0,
        1000000,
        "Register calls per minute per end-user address (trusted ClientContext; 0 = off)" },
    { "caller-registrations", "AUTHD_CALLER_REGISTRATIONS", INT, O(caller_registrations), "600", 0,
        1000000, "Register calls per minute per calling service address (0 = off)" },
    { "ratelimit-keys", "AUTHD_RATELIMIT_KEYS", INT, O(ratelimit_keys), "65536", 16, 16777216,
        "addresses each per-source limit remembers (memory bound, about 24 bytes each)" },
    { "http-listen", "AUTHD_HTTP_LISTEN", STR, O(http_listen), "", 0, 0,
        "side HTTP port for /healthz, /readyz, forward-auth and JWKS: http://HOST:PORT or "
        "https://HOST:PORT (port 0 picks one); unset = none" },
    { "http-allow-plaintext", "AUTHD_HTTP_ALLOW_PLAINTEXT", BOOL, O(http_allow_plaintext), "0", 0,
        0,
        "allow an http:// side port on a non-loopback address (tokens and identity headers in "
        "the clear: only on a private network to the proxy)" },
    { "http-tls-cert", "AUTHD_HTTP_TLS_CERT", STR, O(http_tls_cert), "", 0, 0,
        "certificate chain (PEM) of an https:// side port (default: --tls-cert)" },
    { "http-tls-key", "AUTHD_HTTP_TLS_KEY", STR, O(http_tls_key), "", 0, 0,
        "private key (PEM) of an https:// side port (default: --tls-key)" },
    { "http-threads", "AUTHD_HTTP_THREADS", INT, O(http_threads), "1", 1, 64,
        "event-loop threads of the side port (forward-auth runs Verify on them)" },
    { "http-max-connections", "AUTHD_HTTP_MAX_CONNECTIONS", INT, O(http_max_connections), "1024",
        1, 1000000, "open connections on the side port; more are refused" },
    { "http-url-file", "AUTHD_HTTP_URL_FILE", STR, O(http_url_file), "", 0, 0,
        "once listening, write the side port's bound URL to this file (for scripts and tests)" },
    { "http-auth-cookie", "AUTHD_HTTP_AUTH_COOKIE", STR, O(http_auth_cookie), "", 0, 0,
        "forward-auth also takes the access token from this cookie (when no Authorization "
        "header is sent)" },
    { "http-trusted-proxies", "AUTHD_HTTP_TRUSTED_PROXIES", STR, O(http_trusted_proxies), "", 0, 0,
        "addresses (CIDR list, comma-separated) whose X-Forwarded-* headers the side port "
        "believes; from any other peer they are ignored" },
};

static int set(authd_config *cfg, const struct opt *o, const char *val, const char *src, FILE *err)
{
    char *p = (char *)cfg + o->off;

    switch (o->kind) {
    case STR:
        *(const char **)p = val[0] != '\0' ? val : NULL;
        return 0;
    case BOOL:
        if (strcmp(val, "1") == 0 || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0) {
            *(bool *)p = true;
            return 0;
        }
        if (strcmp(val, "0") == 0 || strcmp(val, "false") == 0 || strcmp(val, "no") == 0) {
            *(bool *)p = false;
            return 0;
        }
        fprintf(err, "authd: %s %s: expected 1/0, true/false or yes/no\n", src, o->flag);
        return -1;
    case INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno != 0 || end == val || *end != '\0' || v < o->min || v > o->max) {
            fprintf(err, "authd: %s %s: expected an integer from %lld to %lld\n", src, o->flag,
                (long long)o->min, (long long)o->max);
            return -1;
        }
        *(int64_t *)p = v;
        return 0;
    }
    }
    return -1;
}

/* check_floors refuses settings that weaken every stored password or
 * token beyond the advice authd follows, unless the development flag
 * says so; the message names the floor and the way past it. */
static int check_floors(const authd_config *cfg, FILE *err)
{
    static const char how[]
        = "pass --insecure-weak-params (or AUTHD_INSECURE_WEAK_PARAMS=1) to allow it, "
          "for development and tests only";

    if (cfg->insecure_weak_params)
        return 0;
    if (cfg->argon2_mem_kib < (int64_t)AUTHD_ARGON2_MEM_KIB_FLOOR) {
        fprintf(err,
            "authd: --argon2-mem-kib %lld is below the floor of %u KiB (OWASP's minimum for "
            "argon2id); %s\n",
            (long long)cfg->argon2_mem_kib, AUTHD_ARGON2_MEM_KIB_FLOOR, how);
        return -1;
    }
    if (cfg->argon2_ops < AUTHD_ARGON2_OPS_FLOOR) {
        fprintf(err,
            "authd: --argon2-ops %lld is below the floor of %d (OWASP's minimum for argon2id); "
            "%s\n",
            (long long)cfg->argon2_ops, AUTHD_ARGON2_OPS_FLOOR, how);
        return -1;
    }
    if (cfg->token_ttl > TOKEN_TTL_CEILING) {
        fprintf(err, "authd: --token-ttl %lld is above the ceiling of %d s (12 h); %s\n",
            (long long)cfg->token_ttl, TOKEN_TTL_CEILING, how);
        return -1;
    }
    return 0;
}

int authd_config_load(authd_config *cfg, int argc, char **argv, FILE *err)
{
    const size_t n = sizeof opts / sizeof opts[0];

    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < n; i++)
        if (set(cfg, &opts[i], opts[i].def, "default", err) != 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(opts[i].env);
        if (v != NULL && set(cfg, &opts[i], v, opts[i].env, err) != 0)
            return -1;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            cfg->help = true;
            continue;
        }
        if (strcmp(arg, "--version") == 0) {
            cfg->version = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(err, "authd: unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        bool negated = false;
        const struct opt *o = NULL;
        for (size_t i = 0; i < n && o == NULL; i++) {
            if (strlen(opts[i].flag) == nlen && strncmp(opts[i].flag, name, nlen) == 0)
                o = &opts[i];
            else if (opts[i].kind == BOOL && nlen == strlen(opts[i].flag) + 3
                && strncmp(name, "no-", 3) == 0 && strncmp(name + 3, opts[i].flag, nlen - 3) == 0) {
                o = &opts[i];
                negated = true;
            }
        }
        if (o == NULL) {
            fprintf(err, "authd: unknown option '%.*s' (see --help)\n", (int)(nlen + 2), arg);
            return -1;
        }
        const char *val;
        if (o->kind == BOOL && eq == NULL) {
            val = negated ? "0" : "1";
        } else if (negated) {
            fprintf(err, "authd: --no-%s takes no value\n", o->flag);
            return -1;
        } else if (eq != NULL) {
            val = eq + 1;
        } else if (a + 1 < argc) {
            val = argv[++a];
        } else {
            fprintf(err, "authd: option --%s needs a value\n", o->flag);
            return -1;
        }
        if (set(cfg, o, val, "option", err) != 0)
            return -1;
    }
    if (!cfg->help && !cfg->version && check_floors(cfg, err) != 0)
        return -1;
    return 0;
}

void authd_config_usage(FILE *out)
{
    fprintf(out,
        "usage: authd [OPTIONS]\n"
        "       authd user add|roles|disable|enable|delete|list|unlock ... --data-dir DIR (authd "
        "user --help)\n"
        "       authd keys list|add|activate|retire ... --key-dir DIR (authd keys --help)\n\n"
        "authd: authentication service (Register, Login, Logout, Verify, Refresh, GetJwks over "
        "nng/TLS).\n"
        "Every option can also be set with the environment variable shown;\n"
        "options override the environment, which overrides the defaults.\n\n");
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const struct opt *o = &opts[i];
        char left[64];
        if (o->kind == BOOL)
            snprintf(left, sizeof left, "--[no-]%s", o->flag);
        else
            snprintf(left, sizeof left, "--%s %s", o->flag, o->kind == INT ? "N" : "VALUE");
        fprintf(out, "  %-30s %s\n  %-30s env %s, default: %s\n", left, o->help, "", o->env,
            o->kind == BOOL ? (o->def[0] == '1' ? "on" : "off")
                            : (o->def[0] != '\0' ? o->def : "(none)"));
    }
    fprintf(out,
        "\n  -h, --help                     this text\n"
        "      --version                  print the version\n");
}
