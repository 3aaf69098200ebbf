/*
 * config.c — the option table; the config file, environment and flag
 * parsing; --help and the effective-configuration listing.
 *
 * The config file is INI without sections: `key = value` lines whose keys
 * are the flag names (without "--"), `#` or `;` comments. It is parsed by
 * libinih from a buffer this file has checked first (inih r55 splits lines
 * longer than 199 characters and would join an indented line to the one
 * before: both are refused here, as a key given twice is).
 */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "keyfile.h"
#include "password.h"

#define FILE_MAX      (1024 * 1024) /* a config file larger than this is refused */
#define INIH_LINE_MAX 199 /* r55: INI_MAX_LINE 200, including the NUL */

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
    { "config", "AUTHD_CONFIG", STR, O(config), "", 0, 0,
        "config file (INI: `flag-name = value` lines, see examples/authd.conf); flags and the "
        "environment override it; writable only by its owner (root or authd's user), in "
        "directories no one else can write; its log-level is re-read on SIGHUP" },
    { "log-file", "AUTHD_LOG_FILE", STR, O(log_file), "", 0, 0,
        "append log lines to this file (created 0600) instead of stderr; reopened on SIGHUP "
        "(for logrotate)" },
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
    { "verify-cache-entries", "AUTHD_VERIFY_CACHE_ENTRIES", INT, O(verify_cache_entries), "1024", 0,
        65536,
        "verified access tokens remembered per event loop (about 650 bytes each), so a repeated "
        "Verify skips the signature and claims parse; expiry, key set and session are still "
        "checked on every call (0 = off)" },
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
    { "http-max-connections", "AUTHD_HTTP_MAX_CONNECTIONS", INT, O(http_max_connections), "1024", 1,
        1000000, "open connections on the side port; more are refused" },
    { "http-max-connections-per-source", "AUTHD_HTTP_MAX_CONNECTIONS_PER_SOURCE", INT,
        O(http_max_conns_per_source), "64", 1, 1000000,
        "open connections on the side port from one peer address (IPv6: the whole address); "
        "more are closed at once, so one client cannot hold every --http-max-connections slot "
        "and starve the health probes and the scraper; behind a proxy (forward-auth) every "
        "request comes from the proxy: raise it to the proxy's concurrent auth requests" },
    { "http-url-file", "AUTHD_HTTP_URL_FILE", STR, O(http_url_file), "", 0, 0,
        "once listening, write the side port's bound URL to this file (for scripts and tests)" },
    { "http-auth-cookie", "AUTHD_HTTP_AUTH_COOKIE", STR, O(http_auth_cookie), "", 0, 0,
        "forward-auth also takes the access token from this cookie (when no Authorization "
        "header is sent)" },
    { "http-trusted-proxies", "AUTHD_HTTP_TRUSTED_PROXIES", STR, O(http_trusted_proxies), "", 0, 0,
        "addresses (CIDR list, comma-separated) whose X-Forwarded-* headers the side port "
        "believes; from any other peer they are ignored" },
};

#define NOPTS (sizeof opts / sizeof opts[0])
_Static_assert(NOPTS <= AUTHD_CONFIG_OPTS_MAX, "raise AUTHD_CONFIG_OPTS_MAX");

/* set parses val into o's field; on error it returns -1 with why naming
 * the setting and what it expects (the caller says where val came from). */
static int set(authd_config *cfg, const struct opt *o, const char *val, char *why, size_t whylen)
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
        snprintf(why, whylen, "%s: expected 1/0, true/false or yes/no", o->flag);
        return -1;
    case INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno != 0 || end == val || *end != '\0' || v < o->min || v > o->max) {
            snprintf(why, whylen, "%s: expected an integer from %lld to %lld", o->flag,
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

static const struct opt *find_opt(const char *name, size_t nlen)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].flag) == nlen && strncmp(opts[i].flag, name, nlen) == 0)
            return &opts[i];
    return NULL;
}

/* ---- the config file ---------------------------------------------------------------- */

/* fileparse: the checked text, handed to inih a line at a time (so the
 * handler knows its line), and the first error found. */
struct fileparse {
    authd_config *cfg;
    const char *path;
    const char *buf;
    size_t len, pos;
    int line; /* the line the reader handed out last */
    int err_line; /* the first error the handler found (0: none) */
    char why[320];
};

static char *file_reader(char *str, int num, void *stream)
{
    struct fileparse *fp = stream;
    size_t n = 0;

    if (fp->pos >= fp->len || num < 2)
        return NULL;
    while (fp->pos + n < fp->len && fp->buf[fp->pos + n] != '\n')
        n++;
    if (fp->pos + n < fp->len)
        n++; /* the newline */
    if (n > (size_t)num - 1)
        n = (size_t)num - 1; /* cannot happen: precheck() measured every line */
    memcpy(str, fp->buf + fp->pos, n);
    str[n] = '\0';
    fp->pos += n;
    fp->line++;
    return str;
}

/* on_key sets one key of the file; the first error is kept (with its
 * line) and stops further settings from being applied. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct fileparse *fp = user;
    authd_config *cfg = fp->cfg;
    const struct opt *o;
    size_t i;

    if (fp->err_line != 0)
        return 1;
    (void)section; /* precheck() refused section lines: always "" */
    if ((o = find_opt(name, strlen(name))) == NULL) {
        snprintf(fp->why, sizeof fp->why,
            "%s: unknown key (keys are the option names without \"--\": authd --help)", name);
        goto bad;
    }
    i = (size_t)(o - opts);
    if (strcmp(o->flag, "config") == 0) {
        snprintf(fp->why, sizeof fp->why, "config: cannot be set in the config file itself");
        goto bad;
    }
    if (cfg->file_line[i] != 0) {
        snprintf(
            fp->why, sizeof fp->why, "%s: set twice (also on line %d)", name, cfg->file_line[i]);
        goto bad;
    }
    char *copy = strdup(value);
    if (copy == NULL) {
        snprintf(fp->why, sizeof fp->why, "out of memory");
        goto bad;
    }
    if (set(cfg, o, copy, fp->why, sizeof fp->why) != 0) {
        free(copy);
        goto bad;
    }
    free(cfg->owned[i]);
    cfg->owned[i] = copy; /* a STR field may point into it */
    cfg->file_line[i] = fp->line;
    cfg->source[i] = AUTHD_CFG_FILE;
    return 1;
bad:
    fp->err_line = fp->line;
    return 0;
}

/* precheck refuses what inih would read otherwise than it looks: NUL
 * bytes, lines longer than it keeps (it would split them), indented lines
 * (it would join them to the key before) and sections (not used: every
 * setting is a top-level key, as every flag is). */
static int precheck(const char *path, const char *buf, size_t len, FILE *err)
{
    int line = 1;

    for (size_t at = 0; at < len; line++) {
        const char *p = buf + at, *nl = memchr(p, '\n', len - at);
        size_t n = nl != NULL ? (size_t)(nl - p) : len - at;
        size_t lead = 0, bom = 0;

        at += n + (nl != NULL);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (memchr(p, '\0', n) != NULL) {
            fprintf(err, "authd: %s:%d: a NUL byte: not a text file\n", path, line);
            return -1;
        }
        if (n > INIH_LINE_MAX - 1) {
            fprintf(
                err, "authd: %s:%d: longer than %d characters\n", path, line, INIH_LINE_MAX - 1);
            return -1;
        }
        if (line == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
            lead = bom = 3;
        while (lead < n && (p[lead] == ' ' || p[lead] == '\t'))
            lead++;
        if (lead == n || p[lead] == '#' || p[lead] == ';')
            continue;
        if (p[lead] == '[') {
            fprintf(err,
                "authd: %s:%d: sections are not used (every key is an option name, at the top "
                "level)\n",
                path, line);
            return -1;
        }
        if (lead > bom) {
            fprintf(err, "authd: %s:%d: indented line: write each key at the start of its line\n",
                path, line);
            return -1;
        }
    }
    return 0;
}

/* read_checked opens the file once and checks what it is before reading
 * it through the same descriptor: keyfile.h's settings-file rules (a
 * regular file owned by root or authd's own user, writable by no one else,
 * in directories only they can change; whoever can edit it can turn off
 * mTLS or the hashing floors) and not larger than FILE_MAX. On success *out is a NUL-terminated
 * copy the caller frees. */
static int read_checked(const char *path, char **out, size_t *outlen, FILE *err)
{
    struct stat st;
    char why[PATH_MAX + 320];
    char *buf = NULL;
    size_t len = 0;
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        fprintf(err, "authd: cannot read config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        fprintf(err, "authd: cannot read config file %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (authd_keyfile_check_settings("config file", path, fd, why, sizeof why) != AUTHD_OK) {
        fprintf(err, "authd: %s\n", why);
        goto out;
    }
    if (st.st_size > FILE_MAX) {
        fprintf(err, "authd: config file %s is larger than %d bytes\n", path, FILE_MAX);
        goto out;
    }
    if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
        fprintf(err, "authd: config file %s: out of memory\n", path);
        goto out;
    }
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(err, "authd: cannot read config file %s: %s\n", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break; /* shrank meanwhile: parse what is there */
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

/* load_file applies the config file's keys to cfg (over the defaults). */
static int load_file(authd_config *cfg, const char *path, FILE *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = -1;

    if (read_checked(path, &buf, &len, err) != 0)
        return -1;
    if (precheck(path, buf, len, err) != 0)
        goto out;
    struct fileparse fp = { .cfg = cfg, .path = path, .buf = buf, .len = len };
    int line = ini_parse_stream(file_reader, &fp, on_key, &fp);
    if (line == 0) {
        rc = 0;
    } else if (line > 0 && line == fp.err_line) {
        fprintf(err, "authd: %s:%d: %s\n", path, line, fp.why);
    } else if (line > 0) {
        fprintf(err, "authd: %s:%d: expected `key = value` (a comment starts with # or ;)\n", path,
            line);
    } else {
        fprintf(err, "authd: config file %s: out of memory\n", path);
    }
out:
    free(buf);
    return rc;
}

/* ---- flags ---------------------------------------------------------------------------- */

/* parse_flags applies argv's options to cfg. */
static int parse_flags(authd_config *cfg, int argc, char **argv, FILE *err)
{
    char why[320];

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
        const struct opt *o = find_opt(name, nlen);
        for (size_t i = 0; i < NOPTS && o == NULL; i++) {
            if (opts[i].kind == BOOL && nlen == strlen(opts[i].flag) + 3
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
        if (set(cfg, o, val, why, sizeof why) != 0) {
            fprintf(err, "authd: option --%s\n", why);
            return -1;
        }
        cfg->source[o - opts] = AUTHD_CFG_FLAG;
    }
    return 0;
}

static int set_defaults(authd_config *cfg, FILE *err)
{
    char why[320];

    for (size_t i = 0; i < NOPTS; i++) {
        if (set(cfg, &opts[i], opts[i].def, why, sizeof why) != 0) {
            fprintf(err, "authd: default of %s\n", why);
            return -1;
        }
        cfg->source[i] = AUTHD_CFG_DEFAULT;
    }
    return 0;
}

int authd_config_load(authd_config *cfg, int argc, char **argv, FILE *err)
{
    authd_config flags_only;
    const char *file;
    char why[320];

    memset(cfg, 0, sizeof *cfg);
    /* Which file: --config (the flags are parsed once on their own for it,
     * which also reports a bad flag before the file is read), else
     * AUTHD_CONFIG. */
    memset(&flags_only, 0, sizeof flags_only);
    if (set_defaults(&flags_only, err) != 0 || parse_flags(&flags_only, argc, argv, err) != 0)
        return -1;
    file = flags_only.config != NULL ? flags_only.config : getenv("AUTHD_CONFIG");

    if (set_defaults(cfg, err) != 0)
        return -1;
    if (file != NULL && file[0] != '\0' && load_file(cfg, file, err) != 0)
        return -1;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v == NULL)
            continue;
        if (set(cfg, &opts[i], v, why, sizeof why) != 0) {
            fprintf(err, "authd: %s: %s\n", opts[i].env, why);
            return -1;
        }
        cfg->source[i] = AUTHD_CFG_ENV;
    }
    if (parse_flags(cfg, argc, argv, err) != 0)
        return -1;
    if (!cfg->help && !cfg->version && check_floors(cfg, err) != 0)
        return -1;
    return 0;
}

void authd_config_free(authd_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < AUTHD_CONFIG_OPTS_MAX; i++) {
        free(cfg->owned[i]);
        cfg->owned[i] = NULL;
    }
}

void authd_config_print(const authd_config *cfg, FILE *out)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        const char *p = (const char *)cfg + o->off;
        char val[64], from[96];
        const char *v = val;

        switch (o->kind) {
        case STR:
            v = *(const char *const *)p != NULL ? *(const char *const *)p : "";
            break;
        case BOOL:
            snprintf(val, sizeof val, "%s", *(const bool *)p ? "true" : "false");
            break;
        case INT:
            snprintf(val, sizeof val, "%lld", (long long)*(const int64_t *)p);
            break;
        }
        switch ((authd_config_source)cfg->source[i]) {
        case AUTHD_CFG_FILE:
            snprintf(from, sizeof from, "file %s:%d", cfg->config != NULL ? cfg->config : "?",
                cfg->file_line[i]);
            break;
        case AUTHD_CFG_ENV:
            snprintf(from, sizeof from, "env %s", o->env);
            break;
        case AUTHD_CFG_FLAG:
            snprintf(from, sizeof from, "flag --%s", o->flag);
            break;
        default:
            snprintf(from, sizeof from, "default");
            break;
        }
        /* The listing reads back as a config file; `config` itself cannot
         * be a key there, so it is shown as a comment. */
        fprintf(out, "%s%-28s = %s  ; %s\n", strcmp(o->flag, "config") == 0 ? "; " : "", o->flag, v,
            from);
    }
}

void authd_config_usage(FILE *out)
{
    fprintf(out,
        "usage: authd [OPTIONS]\n"
        "       authd user add|roles|disable|enable|delete|list|unlock ... --data-dir DIR (authd "
        "user --help)\n"
        "       authd keys list|add|activate|retire ... --key-dir DIR (authd keys --help)\n"
        "       authd backup DIR [--include-keys] --data-dir D (authd backup --help)\n"
        "       authd calibrate [--target-ms N] [--max-memory-kib M] (authd calibrate --help)\n\n"
        "authd: authentication service (Register, Login, Logout, Verify, Refresh, GetJwks over "
        "nng/TLS).\n"
        "       authd check-config [OPTIONS]   validate the configuration, print it, exit\n\n"
        "Every option can also be set with the environment variable shown, or as\n"
        "`name = value` in the --config file; options override the environment,\n"
        "which overrides the file, which overrides the defaults.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
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
