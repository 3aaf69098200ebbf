/*
 * keys_cmd.c — `authd keys list|add|activate|retire`: the signing key set
 * of --key-dir, changed from the command line, safely while authd runs.
 *
 * Like `authd user`, a subcommand of the authd binary so that it reads the
 * same flags and environment as the server (--key-dir, --token-ttl,
 * --clock-leeway, --key-publish-min-s, AUTHD_*). Each command takes the
 * directory's lock, reads keys.state, changes it and replaces it
 * atomically (keydir.h); a new key's file is written and fsynced before
 * the state names it. authd picks the new state up on SIGHUP or within a
 * minute, and a reader of the directory sees the old set or the new one.
 *
 * The life of a key: add (published: in the JWKS, verifies, does not sign)
 * -> activate (signs; the key it replaces is retired) -> retired (verifies
 * until every token it signed has expired: retired_at + --token-ttl +
 * --clock-leeway) -> dropped from the set and its file removed by the next
 * command after that. activate refuses an ES256 key published less than
 * --key-publish-min-s ago while another key is active (verifiers must have
 * fetched it first); --force overrides.
 */
#include "keys_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "keydir.h"
#include "keyfile.h"
#include "log.h"

#define ARGS_MAX 64

static int usage(FILE *out)
{
    fprintf(out,
        "usage: authd keys list                       [--key-dir DIR] [flags]\n"
        "       authd keys add hs256|es256 [--from FILE] [--key-dir DIR] [flags]\n"
        "       authd keys activate KID [--force]     [--key-dir DIR] [flags]\n"
        "       authd keys retire KID                 [--key-dir DIR] [flags]\n"
        "  Manage the signing key set of --key-dir (created 0700 by the first add). A key\n"
        "  is added published (it verifies and is in the JWKS, it does not sign), then\n"
        "  activated (it signs; the key it replaces is retired), and a retired key verifies\n"
        "  until every token it signed has expired. Safe while authd runs: authd loads the\n"
        "  new set on SIGHUP or within a minute. Give the same flags or AUTHD_* environment\n"
        "  as the server (--token-ttl and --clock-leeway decide when a retired key expires).\n");
    return out == stdout ? 0 : 2;
}

static void iso(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "-");
}

static authd_keydir_entry *find(authd_keydir *kd, const char *kid)
{
    for (size_t i = 0; i < kd->n; i++)
        if (strcmp(kd->e[i].kid, kid) == 0)
            return &kd->e[i];
    return NULL;
}

/* verifies_until: the last second a retired key verifies (keydir.h). */
static int64_t verifies_until(const authd_config *cfg, const authd_keydir_entry *e)
{
    return e->retired_at + cfg->token_ttl + cfg->clock_leeway;
}

/* prune drops retired keys whose tokens have all expired from kd and
 * lists their kids in gone (their files are removed after the new state is
 * written). */
static size_t prune(
    const authd_config *cfg, authd_keydir *kd, int64_t now, char gone[][AUTHD_KID_MAX + 1])
{
    size_t n = 0, w = 0;

    for (size_t i = 0; i < kd->n; i++) {
        if (kd->e[i].state == AUTHD_KEY_RETIRED && now >= verifies_until(cfg, &kd->e[i])) {
            memcpy(gone[n++], kd->e[i].kid, AUTHD_KID_MAX + 1);
            continue;
        }
        kd->e[w++] = kd->e[i];
    }
    kd->n = w;
    return n;
}

static void log_event(const char *event, const authd_keydir_entry *e)
{
    authd_logrec r;

    if (authd_log_begin(&r, AUTHD_LOG_WARN, event)) {
        authd_log_str(&r, "kid", e->kid);
        authd_log_str(&r, "alg", e->alg);
        authd_log_end(&r);
    }
}

static void list(const authd_config *cfg, const authd_keydir *kd, int64_t now)
{
    printf("%-16s %-5s %-9s %-20s %-20s %-20s %s\n", "KID", "ALG", "STATE", "CREATED", "ACTIVATED",
        "RETIRED", "VERIFIES_UNTIL");
    for (size_t i = 0; i < kd->n; i++) {
        const authd_keydir_entry *e = &kd->e[i];
        char c[32], a[32], r[32], u[32];
        const char *st = authd_key_state_name(e->state);
        iso(e->created_at, c);
        iso(e->activated_at, a);
        iso(e->retired_at, r);
        if (e->state == AUTHD_KEY_RETIRED) {
            iso(verifies_until(cfg, e), u);
            if (now >= verifies_until(cfg, e))
                st = "expired";
        } else {
            snprintf(u, sizeof u, "-");
        }
        printf("%-16s %-5s %-9s %-20s %-20s %-20s %s\n", e->kid, e->alg, st, c, a, r, u);
    }
}

/* add_key makes (or, with from, imports) a key and adds it, published. */
static int add_key(const authd_config *cfg, const char *dir, authd_keydir *kd, const char *alg,
    const char *from, int64_t now, char *err, size_t errlen)
{
    uint8_t m[AUTHD_SIGNING_KEY_MAX + 1];
    size_t len = 0;
    char kid[AUTHD_KID_MAX + 1];
    int status = 1;

    (void)cfg;
    if (kd->n == AUTHD_KEYS_MAX) {
        snprintf(
            err, errlen, "the key set already holds %d keys; retire some first", AUTHD_KEYS_MAX);
        goto out;
    }
    if (from != NULL) {
        if (authd_keyfile_read("key", from, m, sizeof m, &len, err, errlen) != AUTHD_OK)
            goto out;
        if (authd_token_key_check(alg, m, len, kid) != AUTHD_OK) {
            snprintf(err, errlen,
                "%s: not a valid %s key (HS256: %d..%d raw bytes; ES256: a PEM "
                "P-256 private key without a passphrase)",
                from, alg, AUTHD_SIGNING_KEY_MIN, AUTHD_SIGNING_KEY_MAX);
            goto out;
        }
    } else if (authd_token_key_generate(alg, m, sizeof m, &len, kid) != AUTHD_OK) {
        snprintf(err, errlen, "cannot generate a %s key", alg);
        goto out;
    }
    if (find(kd, kid) != NULL) {
        snprintf(err, errlen, "key %s is already in the set", kid);
        goto out;
    }
    authd_code rc = authd_keydir_put_key(dir, kid, m, len, err, errlen);
    if (rc == AUTHD_ALREADY_EXISTS) {
        /* A file the set does not name: an add that died before writing
         * the state. Same kid, so same key (a kid is a hash of it). */
        authd_keydir_remove_key(dir, kid);
        rc = authd_keydir_put_key(dir, kid, m, len, err, errlen);
    }
    if (rc != AUTHD_OK)
        goto out;
    authd_keydir_entry *e = &kd->e[kd->n++];
    memset(e, 0, sizeof *e);
    memcpy(e->kid, kid, sizeof kid);
    snprintf(e->alg, sizeof e->alg, "%s", alg);
    e->state = AUTHD_KEY_PUBLISHED;
    e->created_at = now;
    status = 0;
out:
    sodium_memzero(m, sizeof m);
    return status;
}

static int activate(const authd_config *cfg, authd_keydir *kd, const char *kid, bool force,
    int64_t now, char *err, size_t errlen)
{
    authd_keydir_entry *e = find(kd, kid), *cur = NULL;

    for (size_t i = 0; i < kd->n; i++)
        if (kd->e[i].state == AUTHD_KEY_ACTIVE)
            cur = &kd->e[i];
    if (e == NULL) {
        snprintf(err, errlen, "no key %s in the set", kid);
        return 1;
    }
    if (e == cur) {
        snprintf(err, errlen, "key %s is already active", kid);
        return 0;
    }
    if (e->state != AUTHD_KEY_PUBLISHED) {
        snprintf(err, errlen, "key %s is %s; only a published key can be activated (add a new one)",
            kid, authd_key_state_name(e->state));
        return 1;
    }
    int64_t ready = e->created_at + cfg->key_publish_min_s;
    if (cur != NULL && strcmp(e->alg, "ES256") == 0 && now < ready && !force) {
        snprintf(err, errlen,
            "key %s was published %lld s ago; verifiers may not have fetched the JWKS yet: wait "
            "%lld s more (--key-publish-min-s), or use --force",
            kid, (long long)(now - e->created_at), (long long)(ready - now));
        return 1;
    }
    if (cur != NULL) {
        cur->state = AUTHD_KEY_RETIRED;
        cur->retired_at = now;
    }
    e->state = AUTHD_KEY_ACTIVE;
    e->activated_at = now;
    return 0;
}

static int retire(authd_keydir *kd, const char *kid, int64_t now, char *err, size_t errlen)
{
    authd_keydir_entry *e = find(kd, kid);

    if (e == NULL) {
        snprintf(err, errlen, "no key %s in the set", kid);
        return 1;
    }
    if (e->state == AUTHD_KEY_ACTIVE) {
        snprintf(err, errlen,
            "key %s is active: activate another key first (that retires this one)", kid);
        return 1;
    }
    if (e->state == AUTHD_KEY_RETIRED) {
        snprintf(err, errlen, "key %s is already retired", kid);
        return 0;
    }
    e->state = AUTHD_KEY_RETIRED;
    e->retired_at = now;
    return 0;
}

int authd_keys_command(int argc, char **argv)
{
    authd_config cfg;
    authd_keydir kd;
    char err[512] = "", gone[AUTHD_KEYS_MAX][AUTHD_KID_MAX + 1];
    char *args[ARGS_MAX + 1];
    const char *sub, *arg = NULL, *from = NULL;
    bool force = false, write = true;
    int nargs = 0, lock = -1, status = 1;

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(argc < 2 ? stderr : stdout);
    sub = argv[1];
    int i = 2;
    if (strcmp(sub, "list") != 0) {
        if (strcmp(sub, "add") != 0 && strcmp(sub, "activate") != 0 && strcmp(sub, "retire") != 0)
            return usage(stderr);
        if (argc < 3 || strncmp(argv[2], "--", 2) == 0)
            return usage(stderr);
        arg = argv[i++];
    }
    /* Our own options out; the rest go through the server's table, with
     * the subcommand standing in for a program name there. */
    args[nargs++] = argv[1];
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0 && strcmp(sub, "activate") == 0)
            force = true;
        else if (strcmp(argv[i], "--from") == 0 && strcmp(sub, "add") == 0 && i + 1 < argc)
            from = argv[++i];
        else if (nargs < ARGS_MAX)
            args[nargs++] = argv[i];
        else
            return usage(stderr);
    }
    args[nargs] = NULL;
    if (authd_config_load(&cfg, nargs, args, stderr) != 0) {
        authd_config_free(&cfg);
        return 2;
    }
    if (sodium_init() < 0) {
        authd_config_free(&cfg);
        return 1;
    }
    authd_log_setup(AUTHD_LOG_WARN, STDERR_FILENO);
    if (cfg.key_dir == NULL) {
        fprintf(stderr, "authd keys: no key directory: give --key-dir DIR or AUTHD_KEY_DIR\n");
        authd_config_free(&cfg);
        return 2;
    }
    char alg[8] = "";
    if (strcmp(sub, "add") == 0) {
        if (strcmp(arg, "hs256") == 0 || strcmp(arg, "HS256") == 0)
            snprintf(alg, sizeof alg, "HS256");
        else if (strcmp(arg, "es256") == 0 || strcmp(arg, "ES256") == 0)
            snprintf(alg, sizeof alg, "ES256");
        else {
            authd_config_free(&cfg);
            return usage(stderr);
        }
    }

    int64_t now = (int64_t)time(NULL);
    if (authd_keydir_lock(cfg.key_dir, &lock, err, sizeof err) != AUTHD_OK
        || authd_keydir_read(cfg.key_dir, &kd, NULL, err, sizeof err) != AUTHD_OK)
        goto out;
    size_t before = kd.n;
    if (strcmp(sub, "list") == 0) {
        list(&cfg, &kd, now);
        write = false;
        status = 0;
    } else if (strcmp(sub, "add") == 0) {
        status = add_key(&cfg, cfg.key_dir, &kd, alg, from, now, err, sizeof err);
        if (status == 0) {
            printf("%s\n", kd.e[kd.n - 1].kid);
            log_event("key_added", &kd.e[kd.n - 1]);
        }
    } else if (strcmp(sub, "activate") == 0) {
        status = activate(&cfg, &kd, arg, force, now, err, sizeof err);
        if (status == 0 && err[0] == '\0')
            log_event("key_activated", find(&kd, arg));
    } else {
        status = retire(&kd, arg, now, err, sizeof err);
        if (status == 0 && err[0] == '\0')
            log_event("key_retired", find(&kd, arg));
    }
    if (status != 0 || !write || (err[0] != '\0' && kd.n == before))
        goto out;
    size_t ngone = prune(&cfg, &kd, now, gone);
    if (authd_keydir_write(cfg.key_dir, &kd, err, sizeof err) != AUTHD_OK) {
        status = 1;
        goto out;
    }
    for (size_t g = 0; g < ngone; g++) {
        authd_keydir_remove_key(cfg.key_dir, gone[g]);
        fprintf(stderr,
            "authd keys: dropped key %s (retired, and every token it signed has "
            "expired)\n",
            gone[g]);
    }
    fprintf(stderr, "authd keys: done; authd loads the new set on SIGHUP or within a minute\n");
out:
    if (err[0] != '\0')
        fprintf(stderr, "authd keys %s: %s\n", sub, err);
    authd_keydir_unlock(lock);
    authd_config_free(&cfg); /* strings of cfg (from --config) were in use until here */
    return status;
}
