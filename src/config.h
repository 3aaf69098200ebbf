/*
 * config.h — authd's settings: built-in defaults, then the config file
 * (--config / AUTHD_CONFIG, INI, keys are the flag names), then AUTHD_*
 * environment variables, then command-line flags, each overriding the one
 * before, setting by setting.
 *
 * One table in config.c drives parsing (flags, environment and file), the
 * environment names, --help and `authd check-config`'s listing, so they
 * cannot disagree.
 */
#ifndef AUTHD_CONFIG_H
#define AUTHD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AUTHD_CONFIG_OPTS_MAX 96 /* rows of config.c's table, at most */

/* Where a setting's value came from. */
typedef enum authd_config_source {
    AUTHD_CFG_DEFAULT = 0,
    AUTHD_CFG_FILE,
    AUTHD_CFG_ENV,
    AUTHD_CFG_FLAG,
} authd_config_source;

typedef struct authd_config {
    const char *config;
    const char *log_file;
    const char *listen;
    const char *data_dir;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_client_ca;
    const char *tls_crl;
    const char *caller_policy;
    const char *signing_key;
    bool create_signing_key;
    const char *key_dir;
    int64_t key_publish_min_s;
    bool insecure_plaintext;
    bool insecure_weak_params;
    const char *issuer;
    const char *audience;
    int64_t token_ttl;
    int64_t session_idle_ttl;
    int64_t session_max_ttl;
    int64_t refresh_grace_ms;
    int64_t clock_leeway;
    int64_t argon2_ops;
    int64_t argon2_mem_kib;
    int64_t password_min_bits;
    int64_t hash_workers;
    int64_t hash_queue;
    int64_t hash_queue_per_source;
    int64_t hash_queue_per_conn;
    int64_t write_batch_max;
    int64_t login_fail_floor_ms;
    int64_t max_inflight;
    int64_t io_threads;
    int64_t verify_cache_entries;
    int64_t max_msg_bytes;
    int64_t max_connections;
    int64_t max_conns_per_source;
    int64_t max_handshakes_per_source;
    int64_t max_handshakes;
    int64_t handshake_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t frame_timeout_ms;
    int64_t map_size_mb;
    const char *log_level;
    int64_t log_buffer_kib;
    int64_t log_failure_rate;
    int64_t log_failure_burst;
    const char *url_file;
    int64_t shutdown_grace_ms;
    int64_t login_free_attempts;
    int64_t login_backoff_base_ms;
    int64_t login_backoff_max_ms;
    int64_t login_lockout;
    int64_t login_reset_after_s;
    int64_t source_login_failures;
    int64_t caller_login_failures;
    int64_t source_registrations;
    int64_t caller_registrations;
    int64_t ratelimit_keys;
    const char *http_listen;
    bool http_allow_plaintext;
    const char *http_tls_cert;
    const char *http_tls_key;
    int64_t http_threads;
    int64_t http_max_connections;
    int64_t http_max_conns_per_source;
    const char *http_url_file;
    const char *http_auth_cookie;
    const char *http_trusted_proxies;
    bool help;
    bool version;
    /* Bookkeeping, by row of the table: where each value came from, the
     * file line that set it (0 = not the file), and the file's strings,
     * which cfg owns (authd_config_free). */
    unsigned char source[AUTHD_CONFIG_OPTS_MAX];
    int file_line[AUTHD_CONFIG_OPTS_MAX];
    char *owned[AUTHD_CONFIG_OPTS_MAX];
} authd_config;

/* authd_config_load fills cfg from defaults, the config file, the
 * environment and argv, in that order of increasing precedence. Returns
 * 0, or -1 after writing a one-line error to err (for the file: naming
 * file:line and the key). The file must be a regular file that is not
 * world-writable and is owned by root or the effective user. Strings in
 * cfg point into argv, the environment, static defaults or memory cfg
 * owns: call authd_config_free after either result. Security settings
 * beyond their floors (argon2id below 19456 KiB or t=2, --token-ttl above
 * 12 h) are refused unless insecure_weak_params is set. */
int authd_config_load(authd_config *cfg, int argc, char **argv, FILE *err);

/* authd_config_free frees the strings cfg took from the config file (the
 * pointers into them become invalid). Accepts a zeroed or freed cfg. */
void authd_config_free(authd_config *cfg);

/* authd_config_print writes the effective configuration, one setting a
 * line: `name = value  # source` (source: default, env NAME, flag, or
 * file:line). No setting holds a secret (keys are named by their files). */
void authd_config_print(const authd_config *cfg, FILE *out);

/* authd_config_usage writes --help text. */
void authd_config_usage(FILE *out);

#endif
