/*
 * user_pattern.c — benchmark user names from a pattern (see user_pattern.h).
 */
#include "user_pattern.h"

#include <string.h>

/* take_literal copies pat[*i..] into dst up to the next lone '%' (or the
 * end), turning "%%" into '%'. False when it does not fit. */
static bool take_literal(const char *pat, size_t *i, char *dst, size_t cap)
{
    size_t n = 0;

    while (pat[*i] != '\0') {
        if (pat[*i] == '%') {
            if (pat[*i + 1] != '%')
                break;
            (*i)++;
        }
        if (n + 1 >= cap)
            return false;
        dst[n++] = pat[(*i)++];
    }
    dst[n] = '\0';
    return true;
}

bool user_pattern_parse(const char *pat, user_pattern *out)
{
    user_pattern p;
    size_t i = 0;

    memset(&p, 0, sizeof p);
    if (pat == NULL || !take_literal(pat, &i, p.prefix, sizeof p.prefix) || pat[i] != '%')
        return false;
    i++;
    if (pat[i] == '0') {
        p.zero = true;
        i++;
    }
    while (pat[i] >= '0' && pat[i] <= '9') {
        p.width = p.width * 10 + (unsigned)(pat[i++] - '0');
        if (p.width > 20)
            return false;
    }
    if (pat[i++] != 'u')
        return false;
    if (!take_literal(pat, &i, p.suffix, sizeof p.suffix) || pat[i] != '\0')
        return false;
    *out = p;
    return true;
}

size_t user_pattern_format(const user_pattern *p, unsigned long n, char *out, size_t cap)
{
    char digits[24];
    size_t nd = 0, pad, lp = strlen(p->prefix), ls = strlen(p->suffix), len;

    do {
        digits[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    pad = p->width > nd ? p->width - nd : 0;
    len = lp + pad + nd + ls;
    if (len + 1 > cap)
        return 0;
    memcpy(out, p->prefix, lp);
    memset(out + lp, p->zero ? '0' : ' ', pad);
    for (size_t k = 0; k < nd; k++)
        out[lp + pad + k] = digits[nd - 1 - k];
    memcpy(out + lp + pad + nd, p->suffix, ls + 1);
    return len;
}
