/*
 * check_config.c — `authd check-config`: the configuration a run would
 * use (same flags, environment and --config file), validated as far as it
 * can be without serving, and printed with where each value came from.
 *
 * Every check runs even after one fails, so an operator sees every
 * problem at once. Nothing is created or changed: the data directory and
 * a --create-signing-key key that do not exist yet are reported as "will
 * be created", after checking that they can be.
 */
#include "check_config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "keydir.h"
#include "keyfile.h"
#include "log.h"
#include "policy.h"
#include "server.h"
#include "service.h"

/* problem counts and reports one failed check on stderr. */
static void problem(int *n, const char *msg)
{
    fprintf(stderr, "authd: check-config: %s\n", msg);
    (*n)++;
}

/* parent_writable is true when a file or directory could be created at
 * path (its parent exists and this user may write there); why says why not. */
static bool parent_writable(const char *path, char *why, size_t whylen)
{
    char copy[4096];

    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy) {
        snprintf(why, whylen, "path too long");
        return false;
    }
    const char *dir = dirname(copy);
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(why, whylen, "its parent %s is not usable: %s", dir, strerror(errno));
        return false;
    }
    return true;
}

/* check_data_dir: an existing directory this user may read, write and
 * enter (with its LMDB files, if any, readable and writable), or one that
 * can be created. */
static void check_data_dir(const char *dir, int *n)
{
    char msg[4600], why[4300], file[4200];
    struct stat st;

    if (dir == NULL) {
        problem(n, "no --data-dir");
        return;
    }
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT) {
            snprintf(msg, sizeof msg, "data directory %s: %s", dir, strerror(errno));
            problem(n, msg);
        } else if (!parent_writable(dir, why, sizeof why)) {
            snprintf(msg, sizeof msg, "data directory %s does not exist and %s", dir, why);
            problem(n, msg);
        } else {
            printf("; data directory %s does not exist yet: it will be created (0700)\n", dir);
        }
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(msg, sizeof msg, "data directory %s is not a directory", dir);
        problem(n, msg);
        return;
    }
    if (access(dir, R_OK | W_OK | X_OK) != 0) {
        snprintf(msg, sizeof msg, "data directory %s is not usable: %s", dir, strerror(errno));
        problem(n, msg);
        return;
    }
    static const char *const files[] = { "data.mdb", "lock.mdb" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(file, sizeof file, "%s/%s", dir, files[i]);
        if (access(file, F_OK) == 0 && access(file, R_OK | W_OK) != 0) {
            snprintf(msg, sizeof msg, "store file %s is not usable: %s", file, strerror(errno));
            problem(n, msg);
        }
    }
}

/* check_log_file: --log-file can be opened for appending (or created). */
static void check_log_file(const char *path, int *n)
{
    char msg[4600], why[4300];

    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
        close(fd);
        return;
    }
    if (errno != ENOENT) {
        snprintf(msg, sizeof msg, "cannot open log file %s: %s", path, strerror(errno));
        problem(n, msg);
    } else if (!parent_writable(path, why, sizeof why)) {
        snprintf(msg, sizeof msg, "log file %s does not exist and %s", path, why);
        problem(n, msg);
    }
}

/* check_keys: the signing key (or the key set of --key-dir) loads as it
 * would at start, with the same ownership and mode checks. */
static void check_keys(const authd_config *cfg, int *n)
{
    uint8_t key[AUTHD_SIGNING_KEY_MAX];
    size_t key_len = 0;
    bool created = false;
    char err[512];
    authd_tokens *tokens = NULL;

    if (cfg->key_dir == NULL) {
        if (cfg->signing_key == NULL) {
            problem(n, "no --signing-key and no --key-dir");
            return;
        }
        if (cfg->create_signing_key && access(cfg->signing_key, F_OK) != 0 && errno == ENOENT) {
            if (!parent_writable(cfg->signing_key, err, sizeof err)) {
                char msg[1024];
                snprintf(
                    msg, sizeof msg, "signing key %s does not exist and %s", cfg->signing_key, err);
                problem(n, msg);
            } else {
                printf("; signing key %s does not exist yet: it will be created "
                       "(--create-signing-key)\n",
                    cfg->signing_key);
            }
        } else if (authd_keyfile_load(
                       cfg->signing_key, false, key, &key_len, &created, err, sizeof err)
            != AUTHD_OK) {
            problem(n, err);
        }
    }
    authd_tokens_options to = { .key = key_len > 0 ? key : NULL,
        .key_len = key_len,
        .issuer = cfg->issuer,
        .audience = cfg->audience,
        .leeway = cfg->clock_leeway,
        .max_ttl = cfg->token_ttl };
    if (authd_tokens_create(&to, &tokens) != AUTHD_OK) {
        problem(n,
            "invalid token settings: issuer/audience must be 1-128 printable characters "
            "without quotes or backslashes");
    } else if (cfg->key_dir != NULL
        && authd_keydir_load(tokens, cfg->key_dir, NULL, NULL, err, sizeof err) != AUTHD_OK) {
        problem(n, err);
    } else if (cfg->key_dir != NULL) {
        printf("; key set %s: active kid %s (%s)\n", cfg->key_dir, authd_tokens_kid(tokens),
            authd_tokens_alg(tokens));
    }
    authd_tokens_destroy(tokens);
    sodium_memzero(key, sizeof key);
}

int authd_check_config(int argc, char **argv)
{
    authd_config cfg;
    authd_log_level level;
    char err[512];
    int n = 0;

    /* The loaders below may log (store, keys): keep it off stdout's way. */
    authd_log_setup(AUTHD_LOG_OFF, STDERR_FILENO);
    if (authd_config_load(&cfg, argc, argv, stderr) != 0) {
        authd_config_free(&cfg);
        return 1;
    }
    if (cfg.help) {
        printf("usage: authd check-config [OPTIONS]: the options, environment and --config file "
               "of a run (authd --help)\n");
        authd_config_free(&cfg);
        return 0;
    }
    if (sodium_init() < 0) {
        problem(&n, "libsodium failed to initialise");
        goto out;
    }
    authd_config_print(&cfg, stdout);

    if (!authd_log_level_parse(cfg.log_level, &level))
        problem(&n, "log-level: expected debug, info, warn, error or off");
    check_log_file(cfg.log_file, &n);
    if (cfg.listen == NULL)
        problem(&n, "no listen URL (--listen)");
    else if (strncmp(cfg.listen, "tls+", 4) != 0 && !cfg.insecure_plaintext)
        problem(&n, "the listen URL is plaintext: use tls+tcp:// (or --insecure-plaintext)");
    if ((cfg.caller_policy != NULL || cfg.tls_crl != NULL) && cfg.tls_client_ca == NULL)
        problem(&n, "--caller-policy and --tls-crl need --tls-client-ca");
    if (cfg.login_backoff_max_ms < cfg.login_backoff_base_ms)
        problem(&n, "--login-backoff-max-ms must be >= --login-backoff-base-ms");
    if (cfg.listen != NULL && strncmp(cfg.listen, "tls+", 4) == 0) {
        authd_server_options so = { .tls_cert = cfg.tls_cert,
            .tls_key = cfg.tls_key,
            .tls_client_ca = cfg.tls_client_ca,
            .tls_crl = cfg.tls_client_ca != NULL ? cfg.tls_crl : NULL };
        if (authd_server_check_tls(&so, err, sizeof err) != AUTHD_OK)
            problem(&n, err);
    }
    if (cfg.http_listen != NULL) {
        authd_http_options ho
            = { .url = cfg.http_listen, .allow_plaintext = cfg.http_allow_plaintext };
        if (authd_http_check_url(&ho, err, sizeof err) != AUTHD_OK)
            problem(&n, err);
    }
    if (cfg.caller_policy != NULL) {
        const char *methods[AUTHD_POLICY_METHODS_MAX];
        size_t nm = authd_method_names(methods, AUTHD_POLICY_METHODS_MAX);
        authd_policy *p = NULL;
        if (authd_policy_load(cfg.caller_policy, methods, nm, &p, err, sizeof err) != AUTHD_OK)
            problem(&n, err);
        authd_policy_free(p);
    }
    check_keys(&cfg, &n);
    check_data_dir(cfg.data_dir, &n);
out:
    if (n == 0)
        printf("; configuration OK\n");
    else
        fprintf(stderr, "authd: check-config: %d problem%s\n", n, n == 1 ? "" : "s");
    authd_config_free(&cfg);
    return n == 0 ? 0 : 1;
}
