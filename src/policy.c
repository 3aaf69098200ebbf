/*
 * policy.c — parsing the caller policy (libinih) and looking callers up.
 *
 * The parsed policy is a sorted array of {identity, allowed-method mask,
 * frontend}, looked up by binary search: a handful of string compares per
 * request, no allocation.
 *
 * The slot (the policy in force) is a small epoch scheme: each reading
 * thread owns a counter that is odd while it looks at a policy. The
 * reloader swaps the pointer, then waits for every odd counter it sees to
 * move before freeing the old policy. The enter store and the swap are
 * sequentially consistent, so a reader that got the old pointer is odd
 * when the reaper looks; the exit store (release) read by the reaper
 * (acquire) orders the reader's last look before the free (TSan sees it).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ini.h>

#include "keyfile.h"
#include "policy.h"

struct rule {
    char *id; /* certificate identity, or "*" */
    uint64_t allow; /* bit i: method i */
    bool frontend;
};

struct authd_policy {
    struct rule *rules; /* sorted by id, unique */
    size_t n, cap;
    const struct rule *any; /* the "*" rule, if any */
    authd_policy *retired_next; /* on its slot's retired list */
};

/*
 * libinih r55 (Debian 12) keeps at most 49 characters of a section name and
 * silently drops the rest, and splits lines longer than 199 characters. A
 * cut identity could match another caller, so prepare() checks every line
 * first and gives each section name longer than inih keeps a short
 * stand-in ("\x01" and its number: no identity starts with a control
 * byte), which on_entry maps back. Line numbers are unchanged.
 */
#define INIH_SECTION_MAX 49
#define INIH_LINE_MAX    199
#define POLICY_FILE_MAX  (1024 * 1024)
#define IDENTITY_MAX     127 /* AUTHD_CALLER_MAX - 1: a longer name is never a caller's */
#define LONG_MARK        '\x01'

struct longnames {
    char **v;
    size_t n;
};

struct parse {
    authd_policy *p;
    const char *const *methods;
    size_t nmethods;
    struct longnames longs; /* section names too long for inih (see prepare) */
    char why[160]; /* the first error */
};

static struct rule *rule_for(struct parse *ps, const char *id)
{
    authd_policy *p = ps->p;

    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->rules[i].id, id) == 0)
            return &p->rules[i];
    if (p->n == p->cap) {
        size_t cap = p->cap > 0 ? p->cap * 2 : 8;
        struct rule *r = realloc(p->rules, cap * sizeof *r);
        if (r == NULL)
            return NULL;
        p->rules = r;
        p->cap = cap;
    }
    struct rule *r = &p->rules[p->n];
    if ((r->id = strdup(id)) == NULL)
        return NULL;
    r->allow = 0;
    r->frontend = false;
    p->n++;
    return r;
}

/* fail keeps the first error's text and makes inih count the line as bad. */
__attribute__((format(printf, 2, 3))) static int fail(struct parse *ps, const char *fmt, ...)
{
    va_list ap;

    if (ps->why[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(ps->why, sizeof ps->why, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* parse_allow adds the methods of a space- or comma-separated list. */
static int parse_allow(struct parse *ps, struct rule *r, const char *value)
{
    const char *s = value;

    while (*s != '\0') {
        size_t skip = strspn(s, " \t,");
        s += skip;
        size_t len = strcspn(s, " \t,");
        if (len == 0)
            break;
        if (len == 1 && s[0] == '*') {
            r->allow = ps->nmethods >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << ps->nmethods) - 1;
        } else {
            size_t i;
            for (i = 0; i < ps->nmethods; i++)
                if (strlen(ps->methods[i]) == len && memcmp(ps->methods[i], s, len) == 0)
                    break;
            if (i == ps->nmethods) {
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(len < 60 ? len : 60), s);
                return fail(ps, "unknown method '%s' in [%s]", name, r->id);
            }
            r->allow |= (uint64_t)1 << i;
        }
        s += len;
    }
    return 1;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    struct parse *ps = user;

    if (section[0] == '\0')
        return fail(ps, "'%s' outside a [caller] section", name);
    if (section[0] == LONG_MARK) {
        size_t i = (size_t)strtoul(section + 1, NULL, 10);
        if (i >= ps->longs.n)
            return fail(ps, "bad section name");
        section = ps->longs.v[i];
    }
    struct rule *r = rule_for(ps, section);
    if (r == NULL)
        return fail(ps, "out of memory");
    if (strcmp(name, "allow") == 0)
        return parse_allow(ps, r, value);
    if (strcmp(name, "frontend") == 0) {
        if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0
            || strcmp(value, "1") == 0)
            r->frontend = true;
        else if (strcasecmp(value, "no") == 0 || strcasecmp(value, "false") == 0
            || strcmp(value, "0") == 0)
            r->frontend = false;
        else
            return fail(ps, "frontend in [%s]: expected yes or no, not '%s'", section, value);
        return 1;
    }
    return fail(ps, "unknown key '%s' in [%s] (expected allow or frontend)", name, section);
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct rule *)a)->id, ((const struct rule *)b)->id);
}

static void longnames_free(struct longnames *ln)
{
    for (size_t i = 0; i < ln->n; i++)
        free(ln->v[i]);
    free(ln->v);
}

static authd_code prepare(
    const char *text, const char *what, struct longnames *ln, char **out, char *err, size_t errlen)
{
    size_t len = strlen(text);
    char *buf = malloc(len + 1), *w = buf;
    int line = 0;

    if (buf == NULL) {
        snprintf(err, errlen, "policy %s: out of memory", what);
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    for (const char *p = text; *p != '\0';) {
        size_t ll = strcspn(p, "\n");
        const char *next = p[ll] == '\n' ? p + ll + 1 : p + ll;
        line++;
        if (ll > INIH_LINE_MAX) {
            snprintf(err, errlen, "policy %s line %d: longer than %d characters", what, line,
                INIH_LINE_MAX);
            goto bad;
        }
        /* What inih skips before a '[': a UTF-8 BOM on the first line,
         * then isspace() bytes (not only spaces and tabs); a section line
         * this missed would reach inih unprepared and be cut. */
        size_t bom = line == 1 && ll >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
        size_t lead = bom + strspn(p + bom, " \t\v\f\r");
        const char *close = lead < ll && p[lead] == '[' ? memchr(p + lead, ']', ll - lead) : NULL;
        size_t nlen = close != NULL ? (size_t)(close - (p + lead) - 1) : 0;
        if (close != NULL && nlen > INIH_SECTION_MAX) {
            if (nlen > IDENTITY_MAX) {
                snprintf(err, errlen,
                    "policy %s line %d: caller identity longer than %d characters", what, line,
                    IDENTITY_MAX);
                goto bad;
            }
            char **v = realloc(ln->v, (ln->n + 1) * sizeof *v);
            if (v == NULL || (v[ln->n] = strndup(p + lead + 1, nlen)) == NULL) {
                if (v != NULL)
                    ln->v = v;
                snprintf(err, errlen, "policy %s: out of memory", what);
                free(buf);
                return AUTHD_RESOURCE_EXHAUSTED;
            }
            ln->v = v;
            /* "[" + mark + number + the rest of the line from "]" */
            w += sprintf(w, "%.*s[%c%zu", (int)lead, p, LONG_MARK, ln->n++);
            memcpy(w, close, (size_t)(next - close));
            w += next - close;
        } else {
            memcpy(w, p, (size_t)(next - p));
            w += next - p;
        }
        p = next;
    }
    *w = '\0';
    *out = buf;
    return AUTHD_OK;
bad:
    free(buf);
    return AUTHD_INVALID_ARGUMENT;
}

static authd_code load(const char *text, const char *what, const char *const *methods, size_t n,
    authd_policy **out, char *err, size_t errlen)
{
    struct parse ps = { .methods = methods, .nmethods = n };
    char *prepared = NULL;
    authd_code rc;

    if (n > AUTHD_POLICY_METHODS_MAX) {
        snprintf(err, errlen, "policy %s: too many methods", what);
        return AUTHD_INVALID_ARGUMENT;
    }
    if ((rc = prepare(text, what, &ps.longs, &prepared, err, errlen)) != AUTHD_OK)
        goto out;
    rc = AUTHD_RESOURCE_EXHAUSTED;
    if ((ps.p = calloc(1, sizeof *ps.p)) == NULL) {
        snprintf(err, errlen, "policy %s: out of memory", what);
        goto out;
    }
    int line = ini_parse_string(prepared, on_entry, &ps);
    if (line != 0) {
        if (ps.why[0] != '\0')
            snprintf(err, errlen, "policy %s line %d: %s", what, line, ps.why);
        else
            snprintf(err, errlen, "policy %s line %d: not INI (expected [caller] or key = value)",
                what, line);
        authd_policy_free(ps.p);
        ps.p = NULL;
        rc = AUTHD_INVALID_ARGUMENT;
        goto out;
    }
    authd_policy *p = ps.p;
    if (p->n > 0)
        qsort(p->rules, p->n, sizeof *p->rules, by_id);
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->rules[i].id, "*") == 0)
            p->any = &p->rules[i];
    *out = p;
    rc = AUTHD_OK;
out:
    longnames_free(&ps.longs);
    free(prepared);
    return rc;
}

authd_code authd_policy_load(const char *path, const char *const *methods, size_t n,
    authd_policy **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char *text = NULL;
    authd_code rc;

    if (f == NULL) {
        snprintf(err, errlen, "policy %s: cannot open: %s", path, strerror(errno));
        return AUTHD_NOT_FOUND;
    }
    /* Whoever can edit the policy can grant any certificate every RPC. */
    if ((rc = authd_keyfile_check_settings("policy", path, fileno(f), err, errlen)) != AUTHD_OK) {
        fclose(f);
        return rc;
    }
    if ((text = malloc(POLICY_FILE_MAX + 1)) == NULL) {
        fclose(f);
        snprintf(err, errlen, "policy %s: out of memory", path);
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    size_t len = fread(text, 1, POLICY_FILE_MAX + 1, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || len > POLICY_FILE_MAX || memchr(text, '\0', len) != NULL) {
        snprintf(err, errlen, "policy %s: %s", path,
            bad                         ? "read error"
                : len > POLICY_FILE_MAX ? "larger than 1 MiB"
                                        : "holds a NUL byte");
        free(text);
        return AUTHD_INVALID_ARGUMENT;
    }
    text[len] = '\0';
    rc = load(text, path, methods, n, out, err, errlen);
    free(text);
    return rc;
}

authd_code authd_policy_parse_string(const char *text, const char *const *methods, size_t n,
    authd_policy **out, char *err, size_t errlen)
{
    return load(text, "(string)", methods, n, out, err, errlen);
}

void authd_policy_free(authd_policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->rules[i].id);
    free(p->rules);
    free(p);
}

size_t authd_policy_callers(const authd_policy *p)
{
    return p->n;
}

bool authd_policy_allows(const authd_policy *p, const char *caller, unsigned method, bool *frontend)
{
    const struct rule *r = NULL;

    if (caller != NULL && caller[0] != '\0' && strcmp(caller, "*") != 0) {
        size_t lo = 0, hi = p->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = strcmp(caller, p->rules[mid].id);
            if (c == 0) {
                r = &p->rules[mid];
                break;
            }
            if (c < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
    }
    if (r == NULL)
        r = p->any;
    if (frontend != NULL)
        *frontend = r != NULL && r->frontend;
    return r != NULL && method < 64 && (r->allow & ((uint64_t)1 << method)) != 0;
}

/* ---- the policy in force -------------------------------------------------- */

struct reader {
    _Alignas(64) atomic_uint_fast64_t seq; /* odd: inside; written by its thread only */
    struct reader *next;
};

static pthread_mutex_t readers_mu = PTHREAD_MUTEX_INITIALIZER;
static struct reader *readers; /* every thread that ever entered; never freed */
static _Thread_local struct reader *tl_reader;

struct authd_policy_slot {
    _Atomic(authd_policy *) cur;
    pthread_mutex_t mu; /* install and reap */
    authd_policy *retired;
};

authd_code authd_policy_slot_create(authd_policy *p, authd_policy_slot **out)
{
    authd_policy_slot *s = calloc(1, sizeof *s);

    if (s == NULL)
        return AUTHD_RESOURCE_EXHAUSTED;
    atomic_init(&s->cur, p);
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return AUTHD_OK;
}

void authd_policy_slot_destroy(authd_policy_slot *s)
{
    if (s == NULL)
        return;
    authd_policy_free(atomic_load(&s->cur));
    while (s->retired != NULL) {
        authd_policy *p = s->retired;
        s->retired = p->retired_next;
        authd_policy_free(p);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* reader_register gives this thread its record (first enter only). */
static struct reader *reader_register(void)
{
    struct reader *r = aligned_alloc(64, sizeof *r);

    if (r == NULL)
        return NULL;
    atomic_init(&r->seq, 0);
    pthread_mutex_lock(&readers_mu);
    r->next = readers;
    readers = r;
    pthread_mutex_unlock(&readers_mu);
    tl_reader = r;
    return r;
}

const authd_policy *authd_policy_enter(authd_policy_slot *s)
{
    struct reader *r = tl_reader;

    if (r == NULL && (r = reader_register()) == NULL)
        return NULL;
    uint64_t v = atomic_load_explicit(&r->seq, memory_order_relaxed);
    atomic_store(&r->seq, v + 1); /* seq_cst: ordered before the load below */
    return atomic_load(&s->cur);
}

void authd_policy_exit(void)
{
    struct reader *r = tl_reader;
    uint64_t v = atomic_load_explicit(&r->seq, memory_order_relaxed);
    atomic_store_explicit(&r->seq, v + 1, memory_order_release);
}

void authd_policy_slot_install(authd_policy_slot *s, authd_policy *p)
{
    pthread_mutex_lock(&s->mu);
    authd_policy *old = atomic_exchange(&s->cur, p);
    if (old != NULL) {
        old->retired_next = s->retired;
        s->retired = old;
    }
    pthread_mutex_unlock(&s->mu);
    (void)authd_policy_slot_reap(s);
}

/* quiet waits (up to ~100 ms) until r is not inside a look that may have
 * begun before the caller's swap: its counter even, or moved on. */
static bool quiet(struct reader *r)
{
    uint64_t v = atomic_load_explicit(&r->seq, memory_order_acquire);
    struct timespec nap = { 0, 100000 };

    for (int i = 0; (v & 1) != 0 && i < 1000; i++) {
        nanosleep(&nap, NULL);
        if (atomic_load_explicit(&r->seq, memory_order_acquire) != v)
            return true;
    }
    return (v & 1) == 0;
}

size_t authd_policy_slot_reap(authd_policy_slot *s)
{
    size_t left = 0;

    pthread_mutex_lock(&s->mu);
    authd_policy *list = s->retired; /* all retired before this point */
    s->retired = NULL;
    pthread_mutex_unlock(&s->mu);
    if (list == NULL)
        return 0;
    atomic_thread_fence(memory_order_seq_cst);
    bool all = true;
    pthread_mutex_lock(&readers_mu);
    for (struct reader *r = readers; r != NULL && all; r = r->next)
        all = quiet(r);
    pthread_mutex_unlock(&readers_mu);
    while (list != NULL) {
        authd_policy *p = list;
        list = p->retired_next;
        if (all) {
            authd_policy_free(p);
        } else {
            pthread_mutex_lock(&s->mu);
            p->retired_next = s->retired;
            s->retired = p;
            pthread_mutex_unlock(&s->mu);
            left++;
        }
    }
    return left;
}
