/*
 * policy.c — parsing the caller policy (libinih) and looking callers up.
 *
 * The parsed policy is a sorted array of {identity, allowed-method mask,
 * frontend}, looked up by binary search: a handful of string compares per
 * request, no allocation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

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
};

struct parse {
    authd_policy *p;
    const char *const *methods;
    size_t nmethods;
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

typedef int (*parse_fn)(const char *src, ini_handler h, void *user);

static authd_code load(parse_fn fn, const char *src, const char *what, const char *const *methods,
    size_t n, authd_policy **out, char *err, size_t errlen)
{
    struct parse ps = { .methods = methods, .nmethods = n };

    if (n > AUTHD_POLICY_METHODS_MAX) {
        snprintf(err, errlen, "policy %s: too many methods", what);
        return AUTHD_INVALID_ARGUMENT;
    }
    if ((ps.p = calloc(1, sizeof *ps.p)) == NULL) {
        snprintf(err, errlen, "policy %s: out of memory", what);
        return AUTHD_RESOURCE_EXHAUSTED;
    }
    int line = fn(src, on_entry, &ps);
    if (line != 0) {
        if (line == -1)
            snprintf(err, errlen, "policy %s: cannot open", what);
        else if (ps.why[0] != '\0')
            snprintf(err, errlen, "policy %s line %d: %s", what, line, ps.why);
        else
            snprintf(err, errlen, "policy %s line %d: not INI (expected [caller] or key = value)",
                what, line);
        authd_policy_free(ps.p);
        return line == -1 ? AUTHD_NOT_FOUND : AUTHD_INVALID_ARGUMENT;
    }
    authd_policy *p = ps.p;
    if (p->n > 0)
        qsort(p->rules, p->n, sizeof *p->rules, by_id);
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->rules[i].id, "*") == 0)
            p->any = &p->rules[i];
    *out = p;
    return AUTHD_OK;
}

static int parse_file(const char *path, ini_handler h, void *user)
{
    return ini_parse(path, h, user);
}

static int parse_string(const char *text, ini_handler h, void *user)
{
    return ini_parse_string(text, h, user);
}

authd_code authd_policy_load(const char *path, const char *const *methods, size_t n,
    authd_policy **out, char *err, size_t errlen)
{
    return load(parse_file, path, path, methods, n, out, err, errlen);
}

authd_code authd_policy_parse_string(const char *text, const char *const *methods, size_t n,
    authd_policy **out, char *err, size_t errlen)
{
    return load(parse_string, text, "(string)", methods, n, out, err, errlen);
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
