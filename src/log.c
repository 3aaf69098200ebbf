/*
 * log.c — structured logging: one JSON object per line, one write(2) each.
 *
 * A record is assembled in the caller's authd_logrec (no allocation, no
 * lock) and handed to the kernel in a single write, so concurrent lines
 * never interleave (a pipe guarantees that up to PIPE_BUF = 4096 bytes,
 * more than AUTHD_LOGREC_MAX). Every string, keys included, goes through
 * one escaper that leaves nothing raw that could end a string or a line.
 */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once at start by authd_log_setup, read on every record. Atomics so a
 * late reconfiguration (or a test) is not a data race; relaxed is enough,
 * nothing else is published through them. */
static atomic_int min_level = AUTHD_LOG_INFO;
static atomic_int out_fd = 2;

#define TAIL_TRUNCATED ",\"truncated\":true}\n"
#define TAIL_PLAIN     "}\n"

/* The body may grow to LIMIT bytes: that always leaves room for the longer
 * tail, and the whole line stays strictly below AUTHD_LOGREC_MAX. */
#define LIMIT (AUTHD_LOGREC_MAX - 1 - (sizeof(TAIL_TRUNCATED) - 1))

static const char *const level_names[] = { "debug", "info", "warn", "error", "off" };

void authd_log_setup(authd_log_level min, int fd)
{
    atomic_store_explicit(&min_level, (int)min, memory_order_relaxed);
    atomic_store_explicit(&out_fd, fd, memory_order_relaxed);
}

bool authd_log_level_parse(const char *s, authd_log_level *out)
{
    if (s == NULL)
        return false;
    for (int i = AUTHD_LOG_DEBUG; i <= AUTHD_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (authd_log_level)i;
            return true;
        }
    }
    return false;
}

bool authd_log_enabled(authd_log_level level)
{
    int l = (int)level;
    if (l < AUTHD_LOG_DEBUG || l >= AUTHD_LOG_OFF)
        return false;
    return l >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

/* put appends n raw bytes if they fit under LIMIT; all or nothing. */
static bool put(authd_logrec *r, const char *s, size_t n)
{
    if (n > LIMIT - r->len)
        return false;
    memcpy(r->buf + r->len, s, n);
    r->len += n;
    return true;
}

/* utf8_seq returns the length (2..4) of the well-formed multi-byte UTF-8
 * sequence at s[0..n) and its code point, or 0 when s does not start one.
 * Same rules as authd_utf8_valid (RFC 3629 table: no overlongs, no
 * surrogates, nothing above U+10FFFF); kept here so log depends on nothing. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    uint32_t c;

    if (b >= 0xC2 && b <= 0xDF) {
        len = 2;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        len = 3;
        c = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (b == 0xED)
            hi = 0x9F; /* surrogates U+D800..U+DFFF */
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4;
        c = b & 0x07;
        if (b == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (b == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* ASCII, stray continuation, C0/C1, F5..FF */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    c = (c << 6) | (s[1] & 0x3F);
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return len;
}

/* put_str appends s[0..n) as a quoted JSON string. Control characters
 * (C0, DEL and the C1 range U+0080..U+009F, which some terminals obey) are
 * escaped, every byte that is not part of well-formed UTF-8 becomes
 * \ufffd. On overflow it returns false with r->len somewhere inside the
 * string (callers roll back), unless partial is set: then it stops at the
 * last whole character and still closes the quote. */
static bool put_str(authd_logrec *r, const char *str, size_t n, bool partial)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    char esc[6];
    size_t i = 0;

    /* Keep one byte back for the closing quote. */
    if (!put(r, "\"", 1) || r->len >= LIMIT)
        return false;
    while (i < n) {
        unsigned char c = s[i];
        const char *u = esc;
        size_t ulen = 2, step = 1;
        uint32_t cp = 0;
        bool uesc = false;

        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            /* Fast path: a run of plain ASCII, copied as far as it fits. */
            size_t j = i + 1;
            while (j < n && s[j] >= 0x20 && s[j] < 0x7F && s[j] != '"' && s[j] != '\\')
                j++;
            size_t take = j - i, room = LIMIT - 1 - r->len;
            if (take > room) {
                if (!partial)
                    return false;
                take = room;
            }
            memcpy(r->buf + r->len, s + i, take);
            r->len += take;
            i += take;
            if (i < j)
                break; /* out of room */
            continue;
        }
        esc[0] = '\\';
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x80) {
            uesc = true; /* NUL, other C0 control or DEL */
            cp = c;
        } else if ((step = utf8_seq(s + i, n - i, &cp)) == 0) {
            step = 1;
            u = "\\ufffd";
            ulen = 6;
        } else if (cp <= 0x9F) {
            uesc = true; /* C1 control */
        } else {
            u = (const char *)s + i; /* well-formed: copied through */
            ulen = step;
        }
        if (uesc) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[cp >> 4];
            esc[5] = hex[cp & 0xF];
            ulen = 6;
        }
        if (ulen > LIMIT - 1 - r->len) {
            if (!partial)
                return false;
            break;
        }
        memcpy(r->buf + r->len, u, ulen);
        r->len += ulen;
        i += step;
    }
    if (i < n)
        r->truncated = true; /* partial mode ran out of room */
    r->buf[r->len++] = '"'; /* room was kept for it */
    return true;
}

/* field_start opens ",key": and records where the field began, so a field
 * that does not fit can be removed whole. Once a record is truncated every
 * later field is dropped too: a reader then sees a prefix of the fields,
 * never a gap. A record whose begin failed (len 0) is left alone. */
static bool field_start(authd_logrec *r, const char *key, size_t *mark)
{
    if (r == NULL || r->len == 0 || r->truncated)
        return false;
    if (key == NULL)
        key = "";
    *mark = r->len;
    if (put(r, ",", 1) && put_str(r, key, strlen(key), false) && put(r, ":", 1))
        return true;
    r->len = *mark;
    r->truncated = true;
    return false;
}

static void field_drop(authd_logrec *r, size_t mark)
{
    r->len = mark;
    r->truncated = true;
}

/* Writes "ts","level","event". The event is a literal from our code, but it
 * is escaped like anything else and, should it ever be too long, cut short
 * rather than dropped: a line without its event would be useless. */
bool authd_log_begin(authd_logrec *r, authd_log_level level, const char *event)
{
    struct timespec ts;
    struct tm tm;
    char head[96];
    int n;

    r->len = 0;
    r->truncated = false;
    if (!authd_log_enabled(level))
        return false;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL) {
        memset(&tm, 0, sizeof tm);
        tm.tm_year = 70;
        tm.tm_mday = 1;
        ts.tv_nsec = 0;
    }
    n = snprintf(head, sizeof head,
        "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\",\"event\":",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (long)(ts.tv_nsec / 1000), level_names[level]);
    if (n < 0 || (size_t)n >= sizeof head)
        return false; /* cannot happen for years below 10000 */
    if (event == NULL)
        event = "";
    if (!put(r, head, (size_t)n) || !put_str(r, event, strlen(event), true)) {
        r->len = 0;
        return false;
    }
    return true;
}

void authd_log_str(authd_logrec *r, const char *key, const char *val)
{
    size_t mark;

    if (!field_start(r, key, &mark))
        return;
    if (val == NULL ? !put(r, "null", 4) : !put_str(r, val, strlen(val), false))
        field_drop(r, mark);
}

void authd_log_strn(authd_logrec *r, const char *key, const char *val, size_t len)
{
    size_t mark;

    if (!field_start(r, key, &mark))
        return;
    if (val == NULL ? !put(r, "null", 4) : !put_str(r, val, len, false))
        field_drop(r, mark);
}

void authd_log_i64(authd_logrec *r, const char *key, int64_t val)
{
    char num[24];
    size_t mark;
    int n = snprintf(num, sizeof num, "%" PRId64, val);

    if (!field_start(r, key, &mark))
        return;
    if (n < 0 || !put(r, num, (size_t)n))
        field_drop(r, mark);
}

void authd_log_u64(authd_logrec *r, const char *key, uint64_t val)
{
    char num[24];
    size_t mark;
    int n = snprintf(num, sizeof num, "%" PRIu64, val);

    if (!field_start(r, key, &mark))
        return;
    if (n < 0 || !put(r, num, (size_t)n))
        field_drop(r, mark);
}

void authd_log_bool(authd_logrec *r, const char *key, bool val)
{
    size_t mark;

    if (!field_start(r, key, &mark))
        return;
    if (!(val ? put(r, "true", 4) : put(r, "false", 5)))
        field_drop(r, mark);
}

void authd_log_hex(authd_logrec *r, const char *key, const uint8_t *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t mark;

    if (!field_start(r, key, &mark))
        return;
    if (bytes == NULL)
        len = 0;
    /* Opening quote, 2 chars a byte, closing quote. */
    if (len > (LIMIT - r->len) / 2 || 2 * len + 2 > LIMIT - r->len) {
        field_drop(r, mark);
        return;
    }
    r->buf[r->len++] = '"';
    for (size_t i = 0; i < len; i++) {
        r->buf[r->len++] = hex[bytes[i] >> 4];
        r->buf[r->len++] = hex[bytes[i] & 0xF];
    }
    r->buf[r->len++] = '"';
}

/* write_all hands the line to the kernel in one write(2) and only loops if
 * the kernel took part of it (a signal, a full disk) or was interrupted.
 * Errors are dropped: there is nowhere left to report a failing log. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void authd_log_end(authd_logrec *r)
{
    int fd;
    int saved = errno; /* logging must not disturb the caller's errno */

    if (r == NULL || r->len == 0)
        return;
    /* LIMIT kept room for either tail. */
    if (r->truncated) {
        memcpy(r->buf + r->len, TAIL_TRUNCATED, sizeof(TAIL_TRUNCATED) - 1);
        r->len += sizeof(TAIL_TRUNCATED) - 1;
    } else {
        memcpy(r->buf + r->len, TAIL_PLAIN, sizeof(TAIL_PLAIN) - 1);
        r->len += sizeof(TAIL_PLAIN) - 1;
    }
    fd = atomic_load_explicit(&out_fd, memory_order_relaxed);
    if (fd >= 0)
        write_all(fd, r->buf, r->len);
    r->len = 0; /* a second end (or a field after it) is a no-op */
    errno = saved;
}

void authd_log_msg(authd_log_level level, const char *event, const char *msg)
{
    authd_logrec r;

    if (!authd_log_begin(&r, level, event))
        return;
    authd_log_str(&r, "msg", msg);
    authd_log_end(&r);
}
