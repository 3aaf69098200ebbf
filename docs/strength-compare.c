/*
 * strength-compare.c — the measurement behind authd's choice of zxcvbn
 * over libpwquality (docs/password-strength.md). Not part of the build:
 *
 *   apt-get install libzxcvbn-dev libpwquality-dev cracklib-runtime
 *   gcc -O2 -o /tmp/strength-compare docs/strength-compare.c -lzxcvbn -lpwquality -lm
 *   /tmp/strength-compare
 *
 * For each password: zxcvbn's estimate (bits = log2 guesses) with the
 * context words "newuser" and "newuser.smith", and libpwquality's verdict
 * with its defaults (/etc/security/pwquality.conf, minlen raised to 12 as
 * authd requires, user "newuser"): a score 0..100 or an error. Then the cost
 * of one check, the median of 5 rounds.
 */
#define _POSIX_C_SOURCE 200809L
#include <pwquality.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zxcvbn.h>

static const char *ctx[] = { "newuser", "newuser.smith", NULL };

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median5(double *v)
{
    qsort(v, 5, sizeof *v, cmp);
    return v[2];
}

int main(void)
{
    static const char *const pws[]
        = { "123456789012", "aaaaaaaaaaaa", "password1234", "Password1234!", "newuser12345",
              "newuser2024!!", "Summer2024!!", "qwertyuiopas", "correct horse battery staple",
              "mauve kettle under oak", "gravel-pianist-orbit-lemon", "my cat eats blue cheese",
              "vacuum-stapler-7-tundra", "Jb8#kq2!Lm9z", "Tr0ub4dor&3xyz", NULL };
    pwquality_settings_t *pq = pwquality_default_settings();
    void *aux = NULL;
    char buf[256];

    if (pwquality_read_config(pq, NULL, &aux) != 0)
        fprintf(stderr, "note: pwquality_read_config failed; using built-in defaults\n");
    pwquality_set_int_value(pq, PWQ_SETTING_MIN_LENGTH, 12);

    printf("| password | zxcvbn bits | pwquality |\n|---|---|---|\n");
    for (int i = 0; pws[i] != NULL; i++) {
        double bits = ZxcvbnMatch(pws[i], ctx, NULL);
        aux = NULL;
        int s = pwquality_check(pq, pws[i], NULL, "newuser", &aux);
        if (s < 0)
            printf("| `%s` | %.1f | error: %s |\n", pws[i], bits,
                pwquality_strerror(buf, sizeof buf, s, aux));
        else
            printf("| `%s` | %.1f | score %d |\n", pws[i], bits, s);
    }

    static char r128[129], a128[129], w128[129], d128[129];
    const char *alph = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*";
    unsigned x = 12345;
    for (int i = 0; i < 128; i++) {
        x = x * 1103515245u + 12345u;
        r128[i] = alph[(x >> 16) % 70];
        a128[i] = 'a';
        w128[i] = "password"[i % 8];
        d128[i] = (char)('0' + i % 10);
    }
    const struct {
        const char *name, *pw;
    } cost[] = {
        { "`Password1234!` (13)", "Password1234!" },
        { "4-word passphrase (28)", "correct horse battery staple" },
        { "128 random printable", r128 },
        { "128 × `a`", a128 },
        { "128: `password` × 16", w128 },
        { "128: `0123456789…`", d128 },
    };
    printf("\n| input | zxcvbn µs | pwquality µs |\n|---|---|---|\n");
    for (size_t c = 0; c < sizeof cost / sizeof cost[0]; c++) {
        double zx[5], pw[5];
        for (int r = 0; r < 5; r++) {
            int n = 20;
            double t0 = now_us();
            for (int i = 0; i < n; i++)
                (void)ZxcvbnMatch(cost[c].pw, ctx, NULL);
            zx[r] = (now_us() - t0) / n;
            t0 = now_us();
            for (int i = 0; i < n; i++) {
                aux = NULL;
                int s = pwquality_check(pq, cost[c].pw, NULL, "newuser", &aux);
                if (s < 0)
                    pwquality_strerror(buf, sizeof buf, s, aux); /* frees aux */
            }
            pw[r] = (now_us() - t0) / n;
        }
        printf("| %s | %.1f | %.1f |\n", cost[c].name, median5(zx), median5(pw));
    }
    pwquality_free_settings(pq);
    return 0;
}
