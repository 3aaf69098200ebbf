/*
 * log.c — structured logging: one JSON object per line; the ring and the
 * log thread; the per-source gate for failure lines.
 *
 * A record is assembled in the caller's authd_logrec (no allocation, no
 * lock). Every string, keys included, goes through one escaper that leaves
 * nothing raw that could end a string or a line.
 *
 * Before authd_log_start a finished line is handed to the kernel in one
 * write(2), so concurrent lines never interleave (a pipe guarantees that up
 * to PIPE_BUF = 4096 bytes, more than AUTHD_LOGREC_MAX). After it, the line
 * is copied into a byte ring under a mutex held only for the copy; the log
 * thread writes what is between tail and head without the lock (producers
 * only ever write outside that range) and moves tail on afterwards. Lines
 * are whole and in the order their authd_log_end calls took the lock.
 */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ratelimit.h"

/* Set once at start by authd_log_setup, read on every record. Atomics so a
 * late reconfiguration (or a test) is not a data race; relaxed is enough,
 * nothing else is published through them. */
static atomic_int min_level = AUTHD_LOG_INFO;
static atomic_int out_fd = 2;
static atomic_int next_fd = -1; /* handed to the log thread by authd_log_swap_fd */

#define TAIL_TRUNCATED ",\"truncated\":true}\n"
#define TAIL_PLAIN     "}\n"

/* The body may grow to LIMIT bytes: that always leaves room for the longer
 * tail, and the whole line stays strictly below AUTHD_LOGREC_MAX. */
#define LIMIT (AUTHD_LOGREC_MAX - 1 - (sizeof(TAIL_TRUNCATED) - 1))

/* The fields buffer keeps the same reserve; its fields are appended raw. */
#define FIELDS_LIMIT (AUTHD_LOGFIELDS_MAX)

/* out: the buffer a field is appended to: a record's or a fields set's. */
struct out {
    char *buf;
    size_t *len;
    bool *truncated;
    size_t limit;
};

#define REC_OUT(r)    ((struct out) { (r)->buf, &(r)->len, &(r)->truncated, LIMIT })
#define FIELDS_OUT(f) ((struct out) { (f)->buf, &(f)->len, &(f)->truncated, FIELDS_LIMIT })

static const char *const level_names[] = { "debug", "info", "warn", "error", "off" };

void authd_log_setup(authd_log_level min, int fd)
{
    atomic_store_explicit(&min_level, (int)min, memory_order_relaxed);
    atomic_store_explicit(&out_fd, fd, memory_order_relaxed);
}

void authd_log_set_level(authd_log_level min)
{
    atomic_store_explicit(&min_level, (int)min, memory_order_relaxed);
}

/* take_next_fd puts a descriptor handed over by authd_log_swap_fd in force
 * and closes the one it replaces; only the fd's single writer calls it. */
static void take_next_fd(void)
{
    int nf = atomic_exchange(&next_fd, -1);
    if (nf < 0)
        return;
    int old = atomic_exchange(&out_fd, nf);
    if (old > 2)
        close(old);
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

/* put appends n raw bytes if they fit under the limit; all or nothing. */
static bool put(struct out *o, const char *s, size_t n)
{
    if (n > o->limit - *o->len)
        return false;
    memcpy(o->buf + *o->len, s, n);
    *o->len += n;
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
 * \ufffd. On overflow it returns false with *o->len somewhere inside the
 * string (callers roll back), unless partial is set: then it stops at the
 * last whole character and still closes the quote. */
static bool put_str(struct out *o, const char *str, size_t n, bool partial)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    char esc[6];
    size_t i = 0;

    /* Keep one byte back for the closing quote. */
    if (!put(o, "\"", 1) || *o->len >= o->limit)
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
            size_t take = j - i, room = o->limit - 1 - *o->len;
            if (take > room) {
                if (!partial)
                    return false;
                take = room;
            }
            memcpy(o->buf + *o->len, s + i, take);
            *o->len += take;
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
        if (ulen > o->limit - 1 - *o->len) {
            if (!partial)
                return false;
            break;
        }
        memcpy(o->buf + *o->len, u, ulen);
        *o->len += ulen;
        i += step;
    }
    if (i < n)
        *o->truncated = true; /* partial mode ran out of room */
    o->buf[(*o->len)++] = '"'; /* room was kept for it */
    return true;
}

/* field_start opens ,"key": and records where the field began, so a field
 * that does not fit can be removed whole. Once a buffer is truncated every
 * later field is dropped too: a reader then sees a prefix of the fields,
 * never a gap. active is false for a record whose begin failed. */
static bool field_start(struct out *o, bool active, const char *key, size_t *mark)
{
    if (!active || *o->truncated)
        return false;
    if (key == NULL)
        key = "";
    *mark = *o->len;
    if (put(o, ",", 1) && put_str(o, key, strlen(key), false) && put(o, ":", 1))
        return true;
    *o->len = *mark;
    *o->truncated = true;
    return false;
}

static void field_drop(struct out *o, size_t mark)
{
    *o->len = mark;
    *o->truncated = true;
}

/* A record whose begin failed has len 0: fields and end leave it alone. */
static bool rec_active(const authd_logrec *r)
{
    return r != NULL && r->len != 0;
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
    struct out o = REC_OUT(r);
    if (!put(&o, head, (size_t)n) || !put_str(&o, event, strlen(event), true)) {
        r->len = 0;
        return false;
    }
    return true;
}

/* The field writers, shared by records and fields sets. */

static void field_str(struct out *o, bool active, const char *key, const char *val, size_t len)
{
    size_t mark;

    if (!field_start(o, active, key, &mark))
        return;
    if (val == NULL ? !put(o, "null", 4) : !put_str(o, val, len, false))
        field_drop(o, mark);
}

static void field_raw(struct out *o, bool active, const char *key, const char *raw, size_t n)
{
    size_t mark;

    if (!field_start(o, active, key, &mark))
        return;
    if (!put(o, raw, n))
        field_drop(o, mark);
}

static void field_u64(struct out *o, bool active, const char *key, uint64_t val, bool quoted)
{
    char num[24];
    int n = snprintf(num, sizeof num, quoted ? "\"%" PRIu64 "\"" : "%" PRIu64, val);

    if (n > 0)
        field_raw(o, active, key, num, (size_t)n);
}

static void field_hex(struct out *o, bool active, const char *key, const uint8_t *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t mark;

    if (!field_start(o, active, key, &mark))
        return;
    if (bytes == NULL)
        len = 0;
    /* Opening quote, 2 chars a byte, closing quote. */
    size_t room = o->limit - *o->len;
    if (len > room / 2 || 2 * len + 2 > room) {
        field_drop(o, mark);
        return;
    }
    o->buf[(*o->len)++] = '"';
    for (size_t i = 0; i < len; i++) {
        o->buf[(*o->len)++] = hex[bytes[i] >> 4];
        o->buf[(*o->len)++] = hex[bytes[i] & 0xF];
    }
    o->buf[(*o->len)++] = '"';
}

void authd_log_str(authd_logrec *r, const char *key, const char *val)
{
    struct out o = REC_OUT(r);
    field_str(&o, rec_active(r), key, val, val != NULL ? strlen(val) : 0);
}

void authd_log_strn(authd_logrec *r, const char *key, const char *val, size_t len)
{
    struct out o = REC_OUT(r);
    field_str(&o, rec_active(r), key, val, len);
}

void authd_log_i64(authd_logrec *r, const char *key, int64_t val)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, val);
    struct out o = REC_OUT(r);

    if (n > 0)
        field_raw(&o, rec_active(r), key, num, (size_t)n);
}

void authd_log_u64(authd_logrec *r, const char *key, uint64_t val)
{
    struct out o = REC_OUT(r);
    field_u64(&o, rec_active(r), key, val, false);
}

void authd_log_u64_str(authd_logrec *r, const char *key, uint64_t val)
{
    struct out o = REC_OUT(r);
    field_u64(&o, rec_active(r), key, val, true);
}

void authd_log_bool(authd_logrec *r, const char *key, bool val)
{
    struct out o = REC_OUT(r);
    field_raw(&o, rec_active(r), key, val ? "true" : "false", val ? 4 : 5);
}

void authd_log_hex(authd_logrec *r, const char *key, const uint8_t *bytes, size_t len)
{
    struct out o = REC_OUT(r);
    field_hex(&o, rec_active(r), key, bytes, len);
}

void authd_logfields_str(authd_logfields *f, const char *key, const char *val)
{
    struct out o = FIELDS_OUT(f);
    field_str(&o, true, key, val, val != NULL ? strlen(val) : 0);
}

void authd_logfields_u64(authd_logfields *f, const char *key, uint64_t val)
{
    struct out o = FIELDS_OUT(f);
    field_u64(&o, true, key, val, false);
}

void authd_logfields_bool(authd_logfields *f, const char *key, bool val)
{
    struct out o = FIELDS_OUT(f);
    field_raw(&o, true, key, val ? "true" : "false", val ? 4 : 5);
}

void authd_logfields_hex(authd_logfields *f, const char *key, const uint8_t *bytes, size_t len)
{
    struct out o = FIELDS_OUT(f);
    field_hex(&o, true, key, bytes, len);
}

/* The fields were escaped when they were added: they go in raw, whole. */
void authd_log_fields(authd_logrec *r, const authd_logfields *f)
{
    if (!rec_active(r) || r->truncated || f == NULL)
        return;
    if (f->len > LIMIT - r->len) {
        r->truncated = true;
        return;
    }
    memcpy(r->buf + r->len, f->buf, f->len);
    r->len += f->len;
    if (f->truncated)
        r->truncated = true;
}

/* write_all hands the bytes to the kernel and only loops if the kernel took
 * part of them (a signal, a full disk) or was interrupted. Errors are
 * dropped: there is nowhere left to report a failing log. */
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

/* ---- the ring and the log thread ----------------------------------------- */

enum { MODE_SYNC = 0, MODE_RING = 1, MODE_CLOSED = 2 };

#define NAP_NS        1000000 /* after a batch: let lines gather (1 ms) */
#define FLUSH_SUPP_NS 1000000000ull /* log_suppressed lines once a second */

/* ring: head and tail count bytes in and out since start; buf[pos % cap].
 * mode says how authd_log_end treats a line; it changes only under mu
 * (and is read without it first, so the synchronous mode costs no lock). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the log thread waits here for lines */
    pthread_cond_t exited_cv; /* shutdown waits here for the thread */
    atomic_int mode;
    char *buf;
    size_t cap;
    uint64_t head, tail;
    bool waiting; /* the thread sleeps on wake: a new line signals it */
    bool stop; /* shutdown asked: write everything, then exit */
    bool exited;
    uint64_t dropped; /* since the last log_dropped line */
    atomic_uint_fast64_t dropped_total;
    pthread_t thread;
} ring = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .mode = MODE_SYNC,
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec mono_at(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    return ts;
}

/* ring_put copies a finished line into the ring; false when it is full
 * (the line is counted as dropped) or the ring is gone. */
static bool ring_put(const char *line, size_t n, bool *sync)
{
    bool ok = false;

    *sync = false;
    pthread_mutex_lock(&ring.mu);
    int mode = atomic_load_explicit(&ring.mode, memory_order_relaxed);
    if (mode == MODE_SYNC) {
        *sync = true; /* the thread has stopped cleanly since we looked */
    } else if (mode == MODE_RING && n <= ring.cap - (size_t)(ring.head - ring.tail)) {
        size_t at = (size_t)(ring.head % ring.cap), first = ring.cap - at;
        if (first >= n) {
            memcpy(ring.buf + at, line, n);
        } else {
            memcpy(ring.buf + at, line, first);
            memcpy(ring.buf, line + first, n - first);
        }
        ring.head += n;
        if (ring.waiting) {
            ring.waiting = false;
            pthread_cond_signal(&ring.wake);
        }
        ok = true;
    } else if (mode == MODE_RING) {
        ring.dropped++;
        atomic_fetch_add_explicit(&ring.dropped_total, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&ring.mu);
    return ok;
}

void authd_log_end(authd_logrec *r)
{
    int saved = errno; /* logging must not disturb the caller's errno */
    bool sync = true;

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
    if (atomic_load_explicit(&ring.mode, memory_order_relaxed) != MODE_SYNC)
        (void)ring_put(r->buf, r->len, &sync);
    if (sync) {
        int fd = atomic_load_explicit(&out_fd, memory_order_relaxed);
        if (fd >= 0)
            write_all(fd, r->buf, r->len);
    }
    r->len = 0; /* a second end (or a field after it) is a no-op */
    errno = saved;
}

/* write_dropped is the log thread's own line about lines it lost; it is
 * written directly (the thread is the fd's only writer). */
static void write_dropped(int fd, uint64_t count)
{
    authd_logrec r;

    if (!authd_log_begin(&r, AUTHD_LOG_WARN, "log_dropped"))
        return;
    authd_log_u64(&r, "count", count);
    authd_log_u64(&r, "ring_bytes", ring.cap);
    memcpy(r.buf + r.len, TAIL_PLAIN, sizeof(TAIL_PLAIN) - 1);
    write_all(fd, r.buf, r.len + sizeof(TAIL_PLAIN) - 1);
}

/* log_thread: wait for lines, write [tail, head) without the lock, then
 * free that space. After a batch it naps briefly, so under load lines
 * gather into large writes and producers rarely have to wake it. */
static void *log_thread(void *arg)
{
    uint64_t next_flush = mono_ns() + FLUSH_SUPP_NS;
    bool final_flush = false;

    (void)arg;
    pthread_mutex_lock(&ring.mu);
    for (;;) {
        uint64_t now = mono_ns();
        if (now >= next_flush || (ring.stop && !final_flush)) {
            /* Its lines go through the ring: drop the lock meanwhile. */
            final_flush = ring.stop;
            next_flush = now + FLUSH_SUPP_NS;
            pthread_mutex_unlock(&ring.mu);
            authd_log_flush_suppressed();
            pthread_mutex_lock(&ring.mu);
            continue;
        }
        if (ring.head == ring.tail && ring.dropped == 0) {
            if (ring.stop)
                break;
            struct timespec until = mono_at(next_flush);
            ring.waiting = true;
            pthread_cond_timedwait(&ring.wake, &ring.mu, &until);
            ring.waiting = false;
            continue;
        }
        uint64_t t = ring.tail, h = ring.head, d = ring.dropped;
        bool stopping = ring.stop;
        ring.dropped = 0;
        pthread_mutex_unlock(&ring.mu);

        take_next_fd(); /* lines written after a swap go to the new file */
        int fd = atomic_load_explicit(&out_fd, memory_order_relaxed);
        while (t < h && fd >= 0) {
            size_t at = (size_t)(t % ring.cap);
            size_t n = (size_t)(h - t);
            if (n > ring.cap - at)
                n = ring.cap - at; /* up to the end of the buffer first */
            write_all(fd, ring.buf + at, n);
            t += n;
        }
        if (d > 0 && fd >= 0)
            write_dropped(fd, d);
        if (!stopping) {
            struct timespec nap = { 0, NAP_NS };
            nanosleep(&nap, NULL);
        }

        pthread_mutex_lock(&ring.mu);
        ring.tail = h;
        if (atomic_load_explicit(&ring.mode, memory_order_relaxed) == MODE_CLOSED)
            break; /* shutdown gave up on us while we were stuck */
    }
    ring.exited = true;
    pthread_cond_broadcast(&ring.exited_cv);
    pthread_mutex_unlock(&ring.mu);
    return NULL;
}

bool authd_log_start(size_t ring_bytes)
{
    pthread_condattr_t ca;
    sigset_t all, old;
    char *buf;
    int rc;

    if (atomic_load(&ring.mode) != MODE_SYNC || ring.buf != NULL)
        return false;
    if (ring_bytes < AUTHD_LOG_RING_MIN)
        ring_bytes = AUTHD_LOG_RING_MIN;
    if ((buf = malloc(ring_bytes)) == NULL)
        return false;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ring.wake, &ca);
    pthread_cond_init(&ring.exited_cv, &ca);
    pthread_condattr_destroy(&ca);
    ring.buf = buf;
    ring.cap = ring_bytes;
    ring.head = ring.tail = 0;
    ring.stop = ring.exited = ring.waiting = false;
    ring.dropped = 0;
    atomic_store(&ring.dropped_total, 0);
    atomic_store(&ring.mode, MODE_RING);

    /* The thread must not take the process's signals (main waits for
     * SIGINT/SIGTERM with sigtimedwait). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&ring.thread, NULL, log_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        atomic_store(&ring.mode, MODE_SYNC);
        ring.buf = NULL;
        free(buf);
        pthread_cond_destroy(&ring.wake);
        pthread_cond_destroy(&ring.exited_cv);
        return false;
    }
    return true;
}

static void gate_free(void);

bool authd_log_shutdown(int deadline_ms)
{
    bool clean = true;

    if (atomic_load(&ring.mode) == MODE_RING) {
        uint64_t until_ns = mono_ns() + (uint64_t)(deadline_ms > 0 ? deadline_ms : 0) * 1000000u;
        struct timespec until = mono_at(until_ns);

        pthread_mutex_lock(&ring.mu);
        ring.stop = true;
        pthread_cond_signal(&ring.wake);
        while (!ring.exited)
            if (pthread_cond_timedwait(&ring.exited_cv, &ring.mu, &until) == ETIMEDOUT)
                break;
        clean = ring.exited;
        /* Either way no line enters the ring from now on. */
        atomic_store(&ring.mode, clean ? MODE_SYNC : MODE_CLOSED);
        pthread_mutex_unlock(&ring.mu);
        if (clean) {
            pthread_join(ring.thread, NULL);
            take_next_fd(); /* a swap the thread had no line left to take */
            free(ring.buf);
            ring.buf = NULL;
            pthread_cond_destroy(&ring.wake);
            pthread_cond_destroy(&ring.exited_cv);
        } else {
            /* Stuck in write(2): leave it (and its buffer) to process exit. */
            pthread_detach(ring.thread);
        }
    } else {
        authd_log_flush_suppressed();
    }
    gate_free();
    return clean;
}

void authd_log_swap_fd(int fd)
{
    int prev = atomic_exchange(&next_fd, fd);
    if (prev > 2)
        close(prev); /* handed over but never taken: superseded */
    pthread_mutex_lock(&ring.mu);
    if (atomic_load_explicit(&ring.mode, memory_order_relaxed) == MODE_SYNC)
        take_next_fd(); /* no thread: callers write themselves, under no lock */
    else if (ring.waiting) {
        ring.waiting = false;
        pthread_cond_signal(&ring.wake);
    }
    pthread_mutex_unlock(&ring.mu);
}

uint64_t authd_log_dropped(void)
{
    return atomic_load_explicit(&ring.dropped_total, memory_order_relaxed);
}

/* ---- the per-source gate --------------------------------------------------- */

/* Held-back counts live in a small table of their own (the token buckets
 * keep only a hash of each key, and the line must name the source). It is
 * bounded: a source that finds no slot is counted under "other". */
#define SUPP_SLOTS 256
#define SUPP_PROBE 8

struct supp {
    authd_source src;
    uint64_t count; /* 0 = free */
};

static struct {
    pthread_mutex_t mu;
    _Atomic(authd_ratelimit *) rl;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    struct supp slots[SUPP_SLOTS];
    uint64_t other;
} gate = { .mu = PTHREAD_MUTEX_INITIALIZER };

bool authd_log_gate_setup(double rate, double burst, size_t max_keys)
{
    authd_ratelimit *rl = NULL;

    if (!(rate > 0))
        return true; /* no limit */
    authd_ratelimit_options o = { .rate = rate, .burst = burst, .max_keys = max_keys };
    if (authd_ratelimit_create(&o, &rl) != AUTHD_OK)
        return false;
    randombytes_buf(gate.hkey, sizeof gate.hkey);
    authd_ratelimit_destroy(atomic_exchange(&gate.rl, rl));
    return true;
}

static void gate_free(void)
{
    authd_ratelimit_destroy(atomic_exchange(&gate.rl, NULL));
}

bool authd_log_source_allow(const authd_source *src)
{
    authd_ratelimit *rl = atomic_load_explicit(&gate.rl, memory_order_acquire);
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t hv;

    if (rl == NULL || src == NULL)
        return true;
    if (authd_ratelimit_take(rl, src->key, sizeof src->key, 1.0, mono_ns()))
        return true;
    crypto_shorthash(h, src->key, sizeof src->key, gate.hkey);
    memcpy(&hv, h, sizeof hv);
    pthread_mutex_lock(&gate.mu);
    struct supp *free_slot = NULL, *hit = NULL;
    for (unsigned i = 0; i < SUPP_PROBE && hit == NULL; i++) {
        struct supp *sp = &gate.slots[(hv + i) % SUPP_SLOTS];
        if (sp->count == 0) {
            if (free_slot == NULL)
                free_slot = sp;
        } else if (memcmp(sp->src.key, src->key, sizeof src->key) == 0) {
            hit = sp;
        }
    }
    if (hit == NULL && free_slot != NULL) {
        hit = free_slot;
        hit->src = *src;
    }
    if (hit != NULL)
        hit->count++;
    else
        gate.other++;
    pthread_mutex_unlock(&gate.mu);
    return false;
}

void authd_log_flush_suppressed(void)
{
    struct supp out[SUPP_SLOTS];
    size_t n = 0;
    uint64_t other;

    pthread_mutex_lock(&gate.mu);
    for (size_t i = 0; i < SUPP_SLOTS; i++) {
        if (gate.slots[i].count > 0) {
            out[n++] = gate.slots[i];
            gate.slots[i].count = 0;
        }
    }
    other = gate.other;
    gate.other = 0;
    pthread_mutex_unlock(&gate.mu);

    for (size_t i = 0; i <= n; i++) {
        char text[AUTHD_SOURCE_TEXT_MAX];
        uint64_t count = i < n ? out[i].count : other;
        authd_logrec r;

        if (count == 0 || !authd_log_begin(&r, AUTHD_LOG_INFO, "log_suppressed"))
            continue;
        if (i < n)
            authd_source_str(&out[i].src, text);
        authd_log_str(&r, "source", i < n ? text : "other");
        authd_log_u64(&r, "count", count);
        authd_log_end(&r);
    }
}

void authd_log_msg(authd_log_level level, const char *event, const char *msg)
{
    authd_logrec r;

    if (!authd_log_begin(&r, level, event))
        return;
    authd_log_str(&r, "msg", msg);
    authd_log_end(&r);
}
