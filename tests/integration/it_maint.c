/*
 * it_maint.c — `authd backup` and the documented restore, and `authd
 * calibrate`, against the real authd binary.
 *
 * backup_restore_under_load: a client registers users and logs each one in,
 * without pause, while `authd backup DIR --include-keys` runs against the
 * SAME data directory of the serving authd. Then the README's restore
 * procedure: stop authd, move the data directory and the signing key
 * aside, copy the backup's data.mdb and signing.key back (0700/0600),
 * check the store (authd-fsck), start authd on it. Every user and every
 * session acknowledged before the backup began is there: each user logs
 * in, and each access token issued before the backup still Verifies (with
 * the restored key: the original key file is gone). A user whose Register
 * was sent only after the backup exited is not (so it really is the
 * restored copy serving).
 *
 * backup_modes_and_refusals: 0700/0600 under umask 0; a non-empty DIR is
 * refused and left as it was; an empty DIR is filled; a missing store
 * writes nothing (no DIR, no partial directory); --key-dir sets come along
 * as keys/ with --include-keys, and are left out (and said so) without.
 *
 * calibrate_prints_accepted_params: a tiny target and cap give the floors;
 * a small cap gives parameters within it; authd starts with the printed
 * flags (no --insecure-weak-params) and logs them; a cap below the floor
 * is a usage error.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PW        "correct horse battery staple 42"
#define LOAD_MAX  4000
#define TOKEN_CAP 1024

/* ---- the load: Register + Login, recorded as acknowledged ----------------- */

struct acked {
    char name[32];
    char token[TOKEN_CAP];
};

struct load {
    const it_server *s;
    struct acked *a; /* LOAD_MAX */
    atomic_int issued; /* Registers sent (index of the next one + 1) */
    atomic_int acked; /* entries of a[] complete: user and session acknowledged */
    atomic_bool stop;
    int failures;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    authd_client *c = it_client(l->s);
    authd_status st;

    for (int i = 0; i < LOAD_MAX && !atomic_load(&l->stop); i++) {
        struct acked *e = &l->a[i];
        char email[64];
        Authd__V1__LoginResponse *lr = NULL;

        snprintf(e->name, sizeof e->name, "load%05d", i);
        snprintf(email, sizeof email, "load%05d@example.com", i);
        atomic_store(&l->issued, i + 1);
        if (it_register(c, e->name, email, PW, &st, NULL) != AUTHD_OK
            || it_login(c, e->name, PW, &st, &lr) != AUTHD_OK) {
            fprintf(stderr, "[ maint ] load %d: %s %s\n", i, authd_code_str(st.code), st.reason);
            l->failures++;
            break;
        }
        snprintf(e->token, sizeof e->token, "%s", lr->access_token);
        authd__v1__login_response__free_unpacked(lr, NULL);
        atomic_store(&l->acked, i + 1); /* publishes e */
    }
    authd_client_close(c);
    return NULL;
}

/* wait_acked polls until the load has acknowledged at least n. */
static void wait_acked(struct load *l, int n)
{
    uint64_t end = it_mono_ms() + 60000;

    while (atomic_load(&l->acked) < n && l->failures == 0 && it_mono_ms() < end)
        it_nap_ms(10);
    if (atomic_load(&l->acked) < n)
        fail_msg("the load acknowledged %d, wanted %d", atomic_load(&l->acked), n);
}

/* ---- files --------------------------------------------------------------- */

static void copy_file(const char *from, const char *to, mode_t mode)
{
    size_t len = 0;
    char *b = it_read_file(from, &len);
    int fd;

    assert_non_null(b);
    fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    assert_int_equal(fsync(fd), 0);
    close(fd);
    free(b);
}

static mode_t mode_of(const char *path)
{
    struct stat sb;

    assert_int_equal(lstat(path, &sb), 0);
    return sb.st_mode & 07777;
}

static bool exists(const char *path)
{
    struct stat sb;

    return lstat(path, &sb) == 0;
}

/* backup runs `authd backup dir --data-dir data ...extra` and returns its
 * exit status; *p keeps the output. */
static int backup(const char *dir, const char *data, const char *const *extra, it_proc *p)
{
    const char *argv[24];
    size_t n = 0;

    argv[n++] = AUTHD_BIN;
    argv[n++] = "backup";
    argv[n++] = dir;
    argv[n++] = "--data-dir";
    argv[n++] = data;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 22; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    it_run(argv, NULL, NULL, p);
    if (p->status != 0)
        fprintf(stderr, "[ maint ] authd backup %s: exit %d\n%s%s", dir, p->status, p->out, p->err);
    return p->status;
}

static void fsck_ok(const char *data_dir)
{
    const char *argv[] = { AUTHD_FSCK_BIN, "--data-dir", data_dir, NULL };
    it_proc p;

    it_run(argv, NULL, NULL, &p);
    if (p.status != 0)
        fprintf(stderr, "[ maint ] authd-fsck: exit %d\n%s%s", p.status, p.out, p.err);
    assert_int_equal(p.status, 0);
    it_proc_free(&p);
}

/* ---- tests ---------------------------------------------------------------- */

static void backup_restore_under_load(void **state)
{
    it_opts o = { .extra = { "--caller-registrations", "0", "--caller-login-failures", "0" } };
    it_server *s = it_start(&o);
    struct load l = { .s = s };
    pthread_t th;
    char bdir[400], path[1024], aside[1024];
    it_proc p;
    authd_status st;

    l.a = calloc(LOAD_MAX, sizeof *l.a);
    assert_non_null(l.a);
    snprintf(bdir, sizeof bdir, "%s/backup-1", s->dir);
    assert_int_equal(pthread_create(&th, NULL, load_main, &l), 0);

    wait_acked(&l, 300);
    int before = atomic_load(&l.acked); /* all acknowledged before the backup began */
    const char *extra[] = { "--signing-key", s->key_path, "--include-keys", NULL };
    uint64_t t0 = it_mono_ms();
    assert_int_equal(backup(bdir, s->data_dir, extra, &p), 0);
    uint64_t took = it_mono_ms() - t0;
    int acked_at_exit = atomic_load(&l.acked), issued_at_exit = atomic_load(&l.issued);
    assert_non_null(strstr(p.out, "complete in"));
    it_proc_free(&p);
    /* The load goes on after the backup: it was running all through. */
    wait_acked(&l, issued_at_exit + 5);
    atomic_store(&l.stop, true);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(l.failures, 0);
    int after = atomic_load(&l.acked);
    fprintf(stderr,
        "[ maint ] backup took %llu ms under load: %d users+sessions acknowledged before it, "
        "%d while it ran, %d in all\n",
        (unsigned long long)took, before, acked_at_exit - before, after);

    /* The backup: modes, manifest, key. */
    assert_int_equal(mode_of(bdir), 0700);
    snprintf(path, sizeof path, "%s/data.mdb", bdir);
    assert_int_equal(mode_of(path), 0600);
    snprintf(path, sizeof path, "%s/signing.key", bdir);
    assert_int_equal(mode_of(path), 0600);
    size_t klen = 0;
    char *k = it_read_file(path, &klen);
    assert_non_null(k);
    assert_int_equal(klen, s->key_len);
    assert_memory_equal(k, s->key, klen);
    free(k);

    /* Restore, as README "Backup and restore" says: stop, move aside,
     * copy back with the modes, check, start. */
    it_stop(s);
    snprintf(aside, sizeof aside, "%s.before-restore", s->data_dir);
    assert_int_equal(rename(s->data_dir, aside), 0);
    snprintf(aside, sizeof aside, "%s.before-restore", s->key_path);
    assert_int_equal(rename(s->key_path, aside), 0);
    assert_int_equal(mkdir(s->data_dir, 0700), 0);
    snprintf(path, sizeof path, "%s/data.mdb", bdir);
    char to[1024];
    snprintf(to, sizeof to, "%s/data.mdb", s->data_dir);
    copy_file(path, to, 0600);
    snprintf(path, sizeof path, "%s/signing.key", bdir);
    copy_file(path, s->key_path, 0600);
    fsck_ok(s->data_dir);
    it_launch(s);

    /* Every user and session acknowledged before the backup began. */
    authd_client *c = it_client(s);
    for (int i = 0; i < before; i++) {
        Authd__V1__VerifyResponse *v = NULL;
        if (it_verify(c, l.a[i].token, &st, &v) != AUTHD_OK)
            fail_msg("restored: the token of %s (acknowledged before the backup) fails Verify: "
                     "%s %s",
                l.a[i].name, authd_code_str(st.code), st.reason);
        assert_string_equal(v->username, l.a[i].name);
        authd__v1__verify_response__free_unpacked(v, NULL);
        if (it_login(c, l.a[i].name, PW, &st, NULL) != AUTHD_OK)
            fail_msg("restored: %s (acknowledged before the backup) cannot log in: %s %s",
                l.a[i].name, authd_code_str(st.code), st.reason);
    }
    /* Registered only after the backup exited: not in it. */
    assert_true(after > issued_at_exit);
    it_login(c, l.a[issued_at_exit].name, PW, &st, NULL);
    assert_int_not_equal(st.code, AUTHD_OK);
    authd_client_close(c);
    it_finish(s);
    free(l.a);
    (void)state;
}

static void backup_modes_and_refusals(void **state)
{
    it_server *s = it_start(NULL);
    char bdir[400], path[1024], kdir[400];
    it_proc p;
    mode_t old = umask(0);

    /* Modes whatever the umask; keys left out (and said so) by default. */
    snprintf(bdir, sizeof bdir, "%s/b1", s->dir);
    assert_int_equal(backup(bdir, s->data_dir, NULL, &p), 0);
    assert_non_null(strstr(p.out, "not in it"));
    it_proc_free(&p);
    assert_int_equal(mode_of(bdir), 0700);
    snprintf(path, sizeof path, "%s/data.mdb", bdir);
    assert_int_equal(mode_of(path), 0600);
    snprintf(path, sizeof path, "%s/BACKUP", bdir);
    assert_int_equal(mode_of(path), 0600);
    char *man = it_read_file(path, NULL);
    assert_non_null(man);
    assert_non_null(strstr(man, "keys=not included"));
    free(man);
    snprintf(path, sizeof path, "%s/signing.key", bdir);
    assert_false(exists(path));

    /* A non-empty DIR is refused and left alone. */
    snprintf(path, sizeof path, "%s/BACKUP", bdir);
    char *before = it_read_file(path, NULL);
    assert_int_equal(backup(bdir, s->data_dir, NULL, &p), 1);
    assert_non_null(strstr(p.err, "not an empty directory"));
    it_proc_free(&p);
    char *after = it_read_file(path, NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* An empty DIR (say, a mount point's subdirectory made ahead) is filled. */
    snprintf(bdir, sizeof bdir, "%s/b2", s->dir);
    assert_int_equal(mkdir(bdir, 0755), 0);
    assert_int_equal(backup(bdir, s->data_dir, NULL, &p), 0);
    it_proc_free(&p);
    assert_int_equal(mode_of(bdir), 0700);
    snprintf(path, sizeof path, "%s/data.mdb", bdir);
    assert_int_equal(mode_of(path), 0600);

    /* No store: nothing written, no partial directory left. */
    snprintf(bdir, sizeof bdir, "%s/b3", s->dir);
    snprintf(path, sizeof path, "%s/no-such-data", s->dir);
    assert_int_equal(backup(bdir, path, NULL, &p), 1);
    assert_non_null(strstr(p.err, "no store"));
    it_proc_free(&p);
    assert_false(exists(bdir));
    assert_false(exists(path));
    DIR *d = opendir(s->dir);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, ".partial-"));
    closedir(d);

    /* A --key-dir set comes along as keys/ with --include-keys. */
    snprintf(kdir, sizeof kdir, "%s/keys", s->dir);
    const char *add[] = { AUTHD_BIN, "keys", "add", "hs256", "--key-dir", kdir, NULL };
    it_run(add, NULL, NULL, &p);
    assert_int_equal(p.status, 0);
    it_proc_free(&p);
    snprintf(bdir, sizeof bdir, "%s/b4", s->dir);
    const char *extra[] = { "--key-dir", kdir, "--include-keys", NULL };
    assert_int_equal(backup(bdir, s->data_dir, extra, &p), 0);
    assert_non_null(strstr(p.out, "1 keys"));
    it_proc_free(&p);
    snprintf(path, sizeof path, "%s/keys", bdir);
    assert_int_equal(mode_of(path), 0700);
    snprintf(path, sizeof path, "%s/keys/keys.state", bdir);
    assert_int_equal(mode_of(path), 0600);
    char src[1024];
    snprintf(src, sizeof src, "%s/keys.state", kdir);
    char *a = it_read_file(src, NULL), *b = it_read_file(path, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    int nkeys = 0;
    snprintf(path, sizeof path, "%s/keys", bdir);
    d = opendir(path);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".key") == 0) {
            char kp[1400];
            snprintf(kp, sizeof kp, "%s/%s", path, e->d_name);
            assert_int_equal(mode_of(kp), 0600);
            nkeys++;
        }
    }
    closedir(d);
    assert_int_equal(nkeys, 1);

    umask(old);
    it_finish(s);
    (void)state;
}

/* calibrate runs `authd calibrate --target-ms t --max-memory-kib m`, returns
 * its status and the printed flags' values. */
static int calibrate(const char *t, const char *m, long *mem, long *ops)
{
    const char *argv[] = { AUTHD_BIN, "calibrate", "--target-ms", t, "--max-memory-kib", m, NULL };
    it_proc p;
    int status;

    it_run(argv, NULL, NULL, &p);
    status = p.status;
    if (status == 0) {
        const char *f = strstr(p.out, "flags: --argon2-mem-kib ");
        assert_non_null(f);
        assert_int_equal(sscanf(f, "flags: --argon2-mem-kib %ld --argon2-ops %ld", mem, ops), 2);
        fprintf(stderr, "[ maint ] calibrate %s ms, cap %s KiB:\n%s", t, m, p.out);
    }
    it_proc_free(&p);
    return status;
}

static void calibrate_prints_accepted_params(void **state)
{
    long mem = 0, ops = 0;
    char mem_s[32], ops_s[32];

    /* Nothing fits 1 ms: the floors, never below. */
    assert_int_equal(calibrate("1", "19456", &mem, &ops), 0);
    assert_int_equal(mem, 19456);
    assert_int_equal(ops, 2);

    /* A small cap: within it, never below the floors. */
    assert_int_equal(calibrate("150", "40960", &mem, &ops), 0);
    assert_true(mem >= 19456 && mem <= 40960);
    assert_true(ops >= 2 && ops <= 100);

    /* authd accepts them as they are, without the development flag. */
    snprintf(mem_s, sizeof mem_s, "%ld", mem);
    snprintf(ops_s, sizeof ops_s, "%ld", ops);
    it_opts o = { .cheap_argon2_off = true,
        .extra = { "--argon2-mem-kib", mem_s, "--argon2-ops", ops_s } };
    it_server *s = it_start(&o);
    char want[64];
    snprintf(want, sizeof want, "\"argon2_mem_kib\":%ld", mem);
    assert_true(it_log_wait(s, want, 10000));
    authd_client *c = it_client(s);
    authd_status st;
    it_register(c, "calibrated", "calibrated@example.com", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login(c, "calibrated", PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    authd_client_close(c);
    it_finish(s);

    /* Below the floor, or nonsense: usage errors. */
    assert_int_equal(calibrate("40", "1000", &mem, &ops), 2);
    assert_int_equal(calibrate("0", "19456", &mem, &ops), 2);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(backup_restore_under_load, it_teardown),
        cmocka_unit_test_teardown(backup_modes_and_refusals, it_teardown),
        cmocka_unit_test_teardown(calibrate_prints_accepted_params, it_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
