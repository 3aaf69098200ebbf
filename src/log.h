/*
 * log.h — structured logging: one JSON object per line.
 *
 * Every line has "ts" (UTC, RFC 3339 with microseconds), "level" and
 * "event"; callers add fields. Strings are JSON-escaped: quotes, backslash
 * and every control character are escaped, and bytes that are not valid
 * UTF-8 are written as \ufffd, so no input can forge or break a line.
 * Secrets never go in: tokens only as authd_token_fingerprint().
 *
 *     authd_logrec r;
 *     if (authd_log_begin(&r, AUTHD_LOG_INFO, "login_failure")) {
 *         authd_log_u64(&r, "request_id", id);
 *         authd_log_str(&r, "peer", peer);
 *         authd_log_end(&r);
 *     }
 *
 * A record is built in a fixed buffer on the caller's stack (no allocation);
 * a record that would overflow it is truncated at a field boundary and gets
 * "truncated":true. authd_log_end writes the line with one write(2), so lines
 * from many threads never interleave.
 */
#ifndef AUTHD_LOG_H
#define AUTHD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
void authd_log_bool(authd_logrec *r, const char *key, bool val);
/* authd_log_hex writes bytes as lowercase hex (ids). */
void authd_log_hex(authd_logrec *r, const char *key, const uint8_t *bytes, size_t len);

/* authd_log_end closes the record and writes it as one line. */
void authd_log_end(authd_logrec *r);

/* authd_log_msg is a one-call shortcut: {"ts","level","event","msg"}. */
void authd_log_msg(authd_log_level level, const char *event, const char *msg);

#endif
