/*
 * log.h — structured logging: one JSON object per line, written off the
 * callers' threads.
 *
 * Every line has "ts" (UTC, RFC 3339 with microseconds), "level" and
 * "event"; callers add fields. Strings are JSON-escaped: quotes, backslash
 * and every control character are escaped, and bytes that are not valid
 * UTF-8 are written as \ufffd, so no input can forge or break a line.
 * Secrets never go in: tokens only as authd_token_fingerprint().
 *
 *     authd_logrec r;
 *     if (authd_log_begin(&r, AUTHD_LOG_INFO, "login_failure")) {
 *         authd_log_u64_str(&r, "request_id", id);
 *         authd_log_str(&r, "peer", peer);
 *         authd_log_end(&r);
 *     }
 *
 * A record is built in a fixed buffer on the caller's stack (no allocation);
 * a record that would overflow it is truncated at a field boundary and gets
 * "truncated":true.
 *
 * Two modes. Until authd_log_start (unit tests, authd-seed and every tool
 * that never calls it) authd_log_end writes the line itself with one
 * write(2). After authd_log_start, authd_log_end only copies the line into a
 * bounded ring under a short mutex and returns: a log thread is the only
 * writer of the fd, so a write that blocks (stderr on a pipe nobody reads)
 * blocks only that thread. A full ring drops the line and counts it; the log
 * thread writes a "log_dropped" line with the count once it can.
 * authd_log_shutdown flushes and stops the thread within a deadline.
 *
 * Failure lines caused by a peer (failed requests, protocol violations) go
 * through a per-source gate (authd_log_source_allow): a token bucket per
 * source address, so one flooding host cannot flood the log nor hide
 * another host's lines. Held-back lines are counted per source and
 * reported as "log_suppressed" lines (one per source, once a second).
 */
#ifndef AUTHD_LOG_H
#define AUTHD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netaddr.h"

typedef enum authd_log_level {
    AUTHD_LOG_DEBUG = 0,
    AUTHD_LOG_INFO = 1,
    AUTHD_LOG_WARN = 2,
    AUTHD_LOG_ERROR = 3,
    AUTHD_LOG_OFF = 4,
} authd_log_level;

#define AUTHD_LOGREC_MAX 2048

typedef struct authd_logrec {
    char buf[AUTHD_LOGREC_MAX];
    size_t len;
    bool truncated;
} authd_logrec;

/* authd_log_setup sets the minimum level written and the file descriptor
 * lines go to (default: level INFO, fd 2). Not thread-safe: call at start. */
void authd_log_setup(authd_log_level min, int fd);

/* authd_log_set_level changes the minimum level written (SIGHUP); safe
 * from any thread at any time. */
void authd_log_set_level(authd_log_level min);

/* authd_log_swap_fd makes fd the descriptor lines go to from now on and
 * takes ownership of it (a reopened --log-file, SIGHUP). With the log
 * thread running, the thread itself switches between two batches and
 * closes the old descriptor (unless it is 0, 1 or 2), so no line is
 * written to a closed descriptor and no producer ever waits for it;
 * without the thread the switch happens at once. */
void authd_log_swap_fd(int fd);

/* authd_log_level_parse maps "debug", "info", "warn", "error", "off" to a
 * level; returns false for anything else. */
bool authd_log_level_parse(const char *s, authd_log_level *out);

/* authd_log_enabled is true when a record at this level would be written. */
bool authd_log_enabled(authd_log_level level);

/* authd_log_begin starts a record. Returns false (and the record must not
 * be used further) when the level is below the minimum. */
bool authd_log_begin(authd_logrec *r, authd_log_level level, const char *event);

void authd_log_str(authd_logrec *r, const char *key, const char *val);
/* authd_log_strn writes len bytes of val (which may hold anything: NULs,
 * control characters, invalid UTF-8) as an escaped JSON string. */
void authd_log_strn(authd_logrec *r, const char *key, const char *val, size_t len);
void authd_log_i64(authd_logrec *r, const char *key, int64_t val);
void authd_log_u64(authd_logrec *r, const char *key, uint64_t val);
/* authd_log_u64_str writes val as a decimal JSON *string*: for 64-bit ids
 * (request_id), which lose precision as JSON numbers in jq and JavaScript. */
void authd_log_u64_str(authd_logrec *r, const char *key, uint64_t val);
void authd_log_bool(authd_logrec *r, const char *key, bool val);
/* authd_log_hex writes bytes as lowercase hex (ids). */
void authd_log_hex(authd_logrec *r, const char *key, const uint8_t *bytes, size_t len);

/* authd_log_end closes the record and hands it on as one line: written
 * at once (before authd_log_start) or copied into the ring, never blocking
 * and never calling write(2) (after). Preserves errno. */
void authd_log_end(authd_logrec *r);

/* authd_log_msg is a one-call shortcut: {"ts","level","event","msg"}. */
void authd_log_msg(authd_log_level level, const char *event, const char *msg);

/* ---- fields gathered ahead of their line ------------------------------- */

/*
 * authd_logfields holds fields (already escaped, each as ,"key":value) that
 * code deep in a request gathers for the line written at its end, so a
 * failed request writes one line, not one per layer. Zero-initialise it.
 * A field that does not fit is dropped with every later one, and the line
 * gets "truncated":true.
 */
#define AUTHD_LOGFIELDS_MAX 320

typedef struct authd_logfields {
    char buf[AUTHD_LOGFIELDS_MAX];
    size_t len;
    bool truncated;
} authd_logfields;

void authd_logfields_str(authd_logfields *f, const char *key, const char *val);
void authd_logfields_u64(authd_logfields *f, const char *key, uint64_t val);
void authd_logfields_bool(authd_logfields *f, const char *key, bool val);
void authd_logfields_hex(authd_logfields *f, const char *key, const uint8_t *bytes, size_t len);

/* authd_log_fields appends f's fields to r (all, or none and r is marked
 * truncated). */
void authd_log_fields(authd_logrec *r, const authd_logfields *f);

/* ---- the log thread ------------------------------------------------------ */

#define AUTHD_LOG_RING_MIN (4 * AUTHD_LOGREC_MAX)

/* authd_log_start moves logging off the callers' threads: it allocates a
 * ring of ring_bytes (at least AUTHD_LOG_RING_MIN) and starts the log
 * thread (with every signal blocked), which is from now on the only writer
 * of the fd given to authd_log_setup. Call once, after authd_log_setup.
 * Returns false (and logging stays synchronous) when memory or the thread
 * cannot be had. */
bool authd_log_start(size_t ring_bytes);

/* authd_log_shutdown reports what the source gate held back, lets the log
 * thread write everything in the ring and stops it, waiting at most
 * deadline_ms (a write stuck on a full pipe must not hang shutdown).
 * Returns true when everything was written; then logging is synchronous
 * again. On false the thread is abandoned and later lines are dropped. Also
 * frees the source gate. Safe to call when authd_log_start never ran. */
bool authd_log_shutdown(int deadline_ms);

/* authd_log_dropped: lines dropped because the ring was full, since start. */
uint64_t authd_log_dropped(void);

/* ---- the per-source gate for failure lines --------------------------------- */

/* authd_log_gate_setup limits failure lines to rate per second per source
 * with bursts of burst, remembering up to max_keys sources (the memory
 * bound; quiet sources are forgotten first). Until it is called (or when
 * rate <= 0) every line is allowed. Returns false on bad values or no
 * memory. Call at start, before other threads log. */
bool authd_log_gate_setup(double rate, double burst, size_t max_keys);

/* authd_log_source_allow is true when a failure line about src may be
 * written now; otherwise the line is counted as suppressed for src. */
bool authd_log_source_allow(const authd_source *src);

/* authd_log_flush_suppressed writes one "log_suppressed" line per source
 * with lines held back since the last flush (with "source" and "count"),
 * and one with "source":"other" for sources the bounded table could not
 * hold. The log thread calls it once a second; without the thread (unit
 * tests), call it yourself. */
void authd_log_flush_suppressed(void);

#endif
