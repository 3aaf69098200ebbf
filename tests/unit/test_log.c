/*
 * test_log.c — structured logging: every record is one line holding one
 * well-formed JSON object, whatever the caller puts in it.
 *
 * Output is captured through a pipe set with authd_log_setup. Each line is
 * checked by a small strict JSON checker written here (test_log links only
 * authd_base, no JSON library): one flat object, string escapes well-formed,
 * no raw control characters, raw bytes well-formed UTF-8, then "\n" and
 * nothing after.
 *
 * The ring and the log thread (authd_log_start/shutdown) are tested with
 * pipes of their own: a full ring drops and counts, lines come out whole
 * and in order per thread, shutdown is bounded even on a pipe nobody reads.
 * The test that leaves a stuck log thread behind runs last.
 */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* ---- capture ------------------------------------------------------------ */

static int pipe_r = -1, pipe_w = -1;

static int setup(void **state)
{
    int fds[2];

    if (pipe(fds) != 0)
        return -1;
    pipe_r = fds[0];
    pipe_w = fds[1];
    /* Reads below never block: a record either was written or was not. */
    if (fcntl(pipe_r, F_SETFL, O_NONBLOCK) != 0)
        return -1;
    authd_log_setup(AUTHD_LOG_INFO, pipe_w);
    return 0;
}

static int teardown(void **state)
{
    authd_log_setup(AUTHD_LOG_INFO, 2);
    close(pipe_r);
    close(pipe_w);
    return 0;
}

/* drain reads everything written so far; returns its length. */
static size_t drain(char *buf, size_t cap)
{
    size_t n = 0;

    for (;;) {
        assert_true(n < cap);
        ssize_t r = read(pipe_r, buf + n, cap - 1 - n);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN: empty */
    }
    buf[n] = '\0';
    return n;
}

/* ---- a strict checker for one line ------------------------------------- */

#define MAX_KEYS 256

typedef struct parsed {
    int n_keys;
    char keys[MAX_KEYS][64]; /* raw (escaped) key text */
    const char *val[MAX_KEYS];
    size_t val_len[MAX_KEYS]; /* raw value text, quotes included */
} parsed;

/* utf8_len returns the length of a well-formed UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;

    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        len = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        len = 3;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        len = 4;
    else
        return 0;
    if (s[0] == 0xE0)
        lo = 0xA0;
    if (s[0] == 0xED)
        hi = 0x9F;
    if (s[0] == 0xF0)
        lo = 0x90;
    if (s[0] == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* json_string checks a JSON string at s[*i] and moves *i past it. */
static int json_string(const unsigned char *s, size_t n, size_t *i)
{
    if (*i >= n || s[*i] != '"')
        return 0;
    (*i)++;
    while (*i < n) {
        unsigned char c = s[*i];
        if (c == '"') {
            (*i)++;
            return 1;
        }
        if (c < 0x20 || c == 0x7F)
            return 0; /* raw control character */
        if (c == '\\') {
            if (*i + 1 >= n)
                return 0;
            c = s[*i + 1];
            if (c == 'u') {
                if (*i + 6 > n)
                    return 0;
                for (size_t k = 2; k < 6; k++) {
                    unsigned char h = s[*i + k];
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f')
                            || (h >= 'A' && h <= 'F')))
                        return 0;
                }
                *i += 6;
            } else if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
                *i += 2;
            } else {
                return 0;
            }
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_len(s + *i, n - *i);
            if (l == 0)
                return 0;
            *i += l;
            continue;
        }
        (*i)++;
    }
    return 0;
}

static int json_value(const unsigned char *s, size_t n, size_t *i)
{
    if (*i >= n)
        return 0;
    if (s[*i] == '"')
        return json_string(s, n, i);
    if (n - *i >= 4 && memcmp(s + *i, "true", 4) == 0) {
        *i += 4;
        return 1;
    }
    if (n - *i >= 5 && memcmp(s + *i, "false", 5) == 0) {
        *i += 5;
        return 1;
    }
    if (n - *i >= 4 && memcmp(s + *i, "null", 4) == 0) {
        *i += 4;
        return 1;
    }
    size_t start = *i;
    if (s[*i] == '-')
        (*i)++;
    if (*i >= n || s[*i] < '0' || s[*i] > '9')
        return 0;
    if (s[*i] == '0' && *i + 1 < n && s[*i + 1] >= '0' && s[*i + 1] <= '9')
        return 0; /* leading zero */
    while (*i < n && s[*i] >= '0' && s[*i] <= '9')
        (*i)++;
    return *i > start;
}

/* check_line returns 1 when line[0..n) is exactly one flat JSON object
 * followed by "\n", starting with "ts","level","event"; fills p. */
static int check_line(const char *line, size_t n, parsed *p)
{
    const unsigned char *s = (const unsigned char *)line;
    size_t i = 1;

    memset(p, 0, sizeof *p);
    if (n < 3 || s[0] != '{' || s[n - 1] != '\n' || s[n - 2] != '}')
        return 0;
    if (memchr(line, '\n', n - 1) != NULL)
        return 0;
    n--; /* the object proper */
    for (;;) {
        size_t k0 = i;
        if (!json_string(s, n, &i) || p->n_keys >= MAX_KEYS || i - k0 - 2 >= 64)
            return 0;
        memcpy(p->keys[p->n_keys], line + k0 + 1, i - k0 - 2);
        if (i >= n || s[i] != ':')
            return 0;
        i++;
        size_t v0 = i;
        if (!json_value(s, n, &i))
            return 0;
        p->val[p->n_keys] = line + v0;
        p->val_len[p->n_keys] = i - v0;
        p->n_keys++;
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        break;
    }
    if (i + 1 != n || s[i] != '}')
        return 0;
    if (p->n_keys < 3 || strcmp(p->keys[0], "ts") != 0 || strcmp(p->keys[1], "level") != 0
        || strcmp(p->keys[2], "event") != 0)
        return 0;
    /* "ts":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
    const char *pat = "\"dddd-dd-ddTdd:dd:dd.ddddddZ\"";
    if (p->val_len[0] != strlen(pat))
        return 0;
    for (size_t k = 0; pat[k]; k++) {
        char c = p->val[0][k];
        if (pat[k] == 'd' ? (c < '0' || c > '9') : c != pat[k])
            return 0;
    }
    return 1;
}

/* value_is: the raw JSON text of key equals want. */
static int value_is(const parsed *p, const char *key, const char *want)
{
    for (int k = 0; k < p->n_keys; k++)
        if (strcmp(p->keys[k], key) == 0)
            return p->val_len[k] == strlen(want) && memcmp(p->val[k], want, p->val_len[k]) == 0;
    return 0;
}

static int has_key(const parsed *p, const char *key)
{
    for (int k = 0; k < p->n_keys; k++)
        if (strcmp(p->keys[k], key) == 0)
            return 1;
    return 0;
}

/* one_line drains the pipe, asserts it held exactly one valid line. */
static void one_line(char *buf, size_t cap, parsed *p)
{
    size_t n = drain(buf, cap);
    assert_true(n > 0);
    assert_true(n < AUTHD_LOGREC_MAX);
    assert_ptr_equal(memchr(buf, '\n', n), buf + n - 1);
    assert_true(check_line(buf, n, p));
}

/* ---- the checker itself must reject what it should ----------------------- */

static void test_checker_rejects(void **state)
{
    static const struct {
        const char *name, *line;
    } bad[] = {
        { "no newline",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"e\"}" },
        { "raw newline in string",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"a\nb\"}\n" },
        { "raw tab",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"a\tb\"}\n" },
        { "two objects",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"e\"}{\"a\":1}"
            "\n" },
        { "bad escape",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"\\x\"}\n" },
        { "invalid utf8",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"\xff\"}\n" },
        { "unterminated",
            "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"e}\n" },
        { "wrong order",
            "{\"level\":\"info\",\"ts\":\"2026-11-24T04:35:44.123456Z\",\"event\":\"e\"}\n" },
        { "bad ts", "{\"ts\":\"2026-11-24 04:35:44Z\",\"level\":\"info\",\"event\":\"e\"}\n" },
    };
    parsed p;

    assert_true(check_line(
        "{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"e\",\"n\":-1}\n",
        strlen("{\"ts\":\"2026-11-24T04:35:44.123456Z\",\"level\":\"info\",\"event\":\"e\",\"n\":-"
               "1}\n"),
        &p));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (check_line(bad[i].line, strlen(bad[i].line), &p))
            fail_msg("checker accepted: %s", bad[i].name);
    }
}

/* ---- records ------------------------------------------------------------- */

static void test_record_shape(void **state)
{
    char buf[8192];
    parsed p;
    authd_logrec r;
    static const uint8_t id[] = { 0x00, 0x01, 0xab, 0xff };

    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "login_failure"));
    authd_log_u64(&r, "request_id", UINT64_MAX);
    authd_log_i64(&r, "delta", INT64_MIN);
    authd_log_str(&r, "peer", "10.0.0.1:443");
    authd_log_bool(&r, "ok", false);
    authd_log_bool(&r, "retry", true);
    authd_log_hex(&r, "id", id, sizeof id);
    authd_log_hex(&r, "empty", id, 0);
    authd_log_str(&r, "none", NULL);
    authd_log_end(&r);

    one_line(buf, sizeof buf, &p);
    static const char *const keys[] = { "ts", "level", "event", "request_id", "delta", "peer", "ok",
        "retry", "id", "empty", "none" };
    assert_int_equal(p.n_keys, sizeof keys / sizeof keys[0]);
    for (int k = 0; k < p.n_keys; k++)
        assert_string_equal(p.keys[k], keys[k]);
    assert_true(value_is(&p, "level", "\"info\""));
    assert_true(value_is(&p, "event", "\"login_failure\""));
    assert_true(value_is(&p, "request_id", "18446744073709551615"));
    assert_true(value_is(&p, "delta", "-9223372036854775808"));
    assert_true(value_is(&p, "peer", "\"10.0.0.1:443\""));
    assert_true(value_is(&p, "ok", "false"));
    assert_true(value_is(&p, "retry", "true"));
    assert_true(value_is(&p, "id", "\"0001abff\""));
    assert_true(value_is(&p, "empty", "\"\""));
    assert_true(value_is(&p, "none", "null"));
    assert_null(strstr(buf, "truncated"));
}

static void test_levels_named(void **state)
{
    static const struct {
        authd_log_level level;
        const char *name;
    } cases[] = {
        { AUTHD_LOG_INFO, "\"info\"" },
        { AUTHD_LOG_WARN, "\"warn\"" },
        { AUTHD_LOG_ERROR, "\"error\"" },
    };
    char buf[8192];
    parsed p;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        authd_log_msg(cases[i].level, "ev", "hello");
        one_line(buf, sizeof buf, &p);
        assert_true(value_is(&p, "level", cases[i].name));
        assert_int_equal(p.n_keys, 4);
        assert_string_equal(p.keys[3], "msg");
        assert_true(value_is(&p, "msg", "\"hello\""));
    }
    authd_log_setup(AUTHD_LOG_DEBUG, pipe_w);
    authd_log_msg(AUTHD_LOG_DEBUG, "ev", "hello");
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "level", "\"debug\""));
}

/* Each case: bytes in (with length, so NULs count), the JSON text out. */
static void test_escaping(void **state)
{
    static const struct {
        const char *name;
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
#define C(name, in, out) { name, in, sizeof(in) - 1, out }
        C("plain", "hello world", "\"hello world\""),
        C("empty", "", "\"\""),
        C("quote", "a\"b", "\"a\\\"b\""),
        C("backslash", "a\\b", "\"a\\\\b\""),
        C("newline", "a\nb", "\"a\\nb\""),
        C("carriage return", "a\rb", "\"a\\rb\""),
        C("tab", "a\tb", "\"a\\tb\""),
        C("0x01",
            "a\x01"
            "b",
            "\"a\\u0001b\""),
        C("0x1f",
            "a\x1f"
            "b",
            "\"a\\u001fb\""),
        C("DEL",
            "a\x7f"
            "b",
            "\"a\\u007fb\""),
        C("escape (terminal)", "\x1b[31m", "\"\\u001b[31m\""),
        C("NUL inside", "ad\0min", "\"ad\\u0000min\""),
        C("invalid 0xff",
            "a\xff"
            "b",
            "\"a\\ufffdb\""),
        C("lone continuation", "\x80", "\"\\ufffd\""),
        C("overlong slash", "\xc0\xaf", "\"\\ufffd\\ufffd\""),
        C("surrogate", "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""),
        C("above U+10FFFF", "\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""),
        C("truncated at end", "x\xe2\x82", "\"x\\ufffd\\ufffd\""),
        C("truncated then ASCII", "\xe2\x82z", "\"\\ufffd\\ufffdz\""),
        C("2-byte", "j\xc3\xbcrgen", "\"j\xc3\xbcrgen\""),
        C("3-byte", "\xe2\x82\xac", "\"\xe2\x82\xac\""),
        C("emoji", "\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""),
        C("C1 control NEL", "\xc2\x85", "\"\\u0085\""),
        C("C1 CSI",
            "\xc2\x9b"
            "2J",
            "\"\\u009b2J\""),
        C("U+00A0 copied", "\xc2\xa0", "\"\xc2\xa0\""),
        C("forged line", "\"}\n{\"event\":\"x", "\"\\\"}\\n{\\\"event\\\":\\\"x\""),
#undef C
    };
    char buf[8192];
    parsed p;
    authd_logrec r;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_true(authd_log_begin(&r, AUTHD_LOG_WARN, "esc"));
        authd_log_strn(&r, "v", cases[i].in, cases[i].len);
        authd_log_end(&r);
        size_t n = drain(buf, sizeof buf);
        if (n == 0 || memchr(buf, '\n', n) != buf + n - 1 || !check_line(buf, n, &p))
            fail_msg("%s: not one valid line: %s", cases[i].name, buf);
        if (p.n_keys != 4 || !value_is(&p, "v", cases[i].out))
            fail_msg("%s: got %s", cases[i].name, buf);
    }
}

/* A NUL-terminated str stops at the NUL; keys and the event are escaped too. */
static void test_keys_and_event_escaped(void **state)
{
    char buf[8192];
    parsed p;
    authd_logrec r;

    assert_true(authd_log_begin(&r, AUTHD_LOG_ERROR, "ev\"\n"));
    authd_log_str(&r, "k\"ey", "v");
    authd_log_str(&r, "nul", "ab\0cd");
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "event", "\"ev\\\"\\n\""));
    assert_string_equal(p.keys[3], "k\\\"ey");
    assert_true(value_is(&p, "nul", "\"ab\""));
}

static void test_level_filter(void **state)
{
    char buf[8192];
    authd_logrec r;

    /* setup() set INFO. */
    assert_false(authd_log_enabled(AUTHD_LOG_DEBUG));
    assert_true(authd_log_enabled(AUTHD_LOG_INFO));
    assert_true(authd_log_enabled(AUTHD_LOG_ERROR));
    assert_false(authd_log_enabled(AUTHD_LOG_OFF));
    assert_false(authd_log_begin(&r, AUTHD_LOG_DEBUG, "dropped"));
    /* Misuse after a refused begin writes nothing. */
    authd_log_str(&r, "k", "v");
    authd_log_end(&r);
    authd_log_msg(AUTHD_LOG_DEBUG, "dropped", "x");
    assert_int_equal(drain(buf, sizeof buf), 0);

    authd_log_setup(AUTHD_LOG_ERROR, pipe_w);
    authd_log_msg(AUTHD_LOG_WARN, "dropped", "x");
    assert_int_equal(drain(buf, sizeof buf), 0);
    authd_log_msg(AUTHD_LOG_ERROR, "kept", "x");
    assert_true(drain(buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "\"event\":\"kept\""));

    authd_log_setup(AUTHD_LOG_OFF, pipe_w);
    assert_false(authd_log_enabled(AUTHD_LOG_ERROR));
    authd_log_msg(AUTHD_LOG_ERROR, "dropped", "x");
    assert_int_equal(drain(buf, sizeof buf), 0);

    /* A record at level OFF (or out of range) is never written. */
    authd_log_setup(AUTHD_LOG_DEBUG, pipe_w);
    assert_false(authd_log_begin(&r, AUTHD_LOG_OFF, "dropped"));
    assert_false(authd_log_begin(&r, (authd_log_level)99, "dropped"));
    assert_false(authd_log_begin(&r, (authd_log_level)-1, "dropped"));
    assert_int_equal(drain(buf, sizeof buf), 0);
}

static void test_level_parse(void **state)
{
    static const struct {
        const char *s;
        bool ok;
        authd_log_level level;
    } cases[] = {
        { "debug", true, AUTHD_LOG_DEBUG },
        { "info", true, AUTHD_LOG_INFO },
        { "warn", true, AUTHD_LOG_WARN },
        { "error", true, AUTHD_LOG_ERROR },
        { "off", true, AUTHD_LOG_OFF },
        { "", false, 0 },
        { "INFO", false, 0 },
        { "warning", false, 0 },
        { "info ", false, 0 },
        { NULL, false, 0 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        authd_log_level out = (authd_log_level)77;
        assert_int_equal(authd_log_level_parse(cases[i].s, &out), cases[i].ok);
        assert_int_equal(out, cases[i].ok ? cases[i].level : (authd_log_level)77);
    }
}

/* A field that does not fit is dropped whole, with every field after it;
 * the fields before it stay and the line says "truncated":true. */
static void test_truncation(void **state)
{
    static char big[5000];
    char buf[8192];
    parsed p;
    authd_logrec r;

    memset(big, 'A', sizeof big);
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "trunc"));
    authd_log_u64(&r, "before", 1);
    authd_log_strn(&r, "big", big, sizeof big);
    authd_log_u64(&r, "after", 2);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    size_t n = strlen(buf);
    assert_true(n < AUTHD_LOGREC_MAX);
    assert_true(n > strlen(",\"truncated\":true}\n"));
    assert_string_equal(buf + n - strlen(",\"truncated\":true}\n"), ",\"truncated\":true}\n");
    assert_true(value_is(&p, "before", "1"));
    assert_false(has_key(&p, "big"));
    assert_false(has_key(&p, "after"));

    /* Escaping expands: 1000 quotes need 2000 bytes. */
    memset(big, '"', 1000);
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "trunc"));
    authd_log_strn(&r, "q", big, 1000);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_false(has_key(&p, "q"));
    assert_true(value_is(&p, "truncated", "true"));

    /* Hex doubles. */
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "trunc"));
    authd_log_hex(&r, "h", (const uint8_t *)big, 1500);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_false(has_key(&p, "h"));
    assert_true(value_is(&p, "truncated", "true"));

    /* Many small fields: fill up, the last ones dropped, still valid. */
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "trunc"));
    for (int i = 0; i < 400; i++)
        authd_log_u64(&r, "k", UINT64_MAX);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "truncated", "true"));

    /* An over-long event is cut short, not dropped. */
    memset(big, 'e', 4999);
    big[4999] = '\0';
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, big));
    authd_log_u64(&r, "x", 1);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_true(has_key(&p, "event"));
    assert_false(has_key(&p, "x"));
    assert_true(value_is(&p, "truncated", "true"));
}

/* Sizes around the limit: every line is valid and below AUTHD_LOGREC_MAX,
 * and a value is either all there or absent. */
static void test_truncation_edges(void **state)
{
    static char val[AUTHD_LOGREC_MAX];
    char buf[8192];
    parsed p;
    authd_logrec r;
    int kept = 0, dropped = 0;

    memset(val, 'b', sizeof val);
    for (size_t len = 1800; len < sizeof val; len++) {
        assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "edge"));
        authd_log_strn(&r, "v", val, len);
        authd_log_end(&r);
        one_line(buf, sizeof buf, &p);
        if (has_key(&p, "v")) {
            assert_int_equal(p.val_len[3], len + 2);
            assert_false(has_key(&p, "truncated"));
            kept++;
        } else {
            assert_true(value_is(&p, "truncated", "true"));
            dropped++;
        }
    }
    assert_true(kept > 0);
    assert_true(dropped > 0);
}

static void test_errno_preserved(void **state)
{
    char buf[8192];

    errno = ENOENT;
    authd_log_msg(AUTHD_LOG_ERROR, "ev", "x");
    assert_int_equal(errno, ENOENT);
    assert_true(drain(buf, sizeof buf) > 0);

    /* A failing write (EBADF: the read end) is dropped quietly. */
    authd_log_setup(AUTHD_LOG_INFO, pipe_r);
    errno = ENOENT;
    authd_log_msg(AUTHD_LOG_ERROR, "ev", "x");
    assert_int_equal(errno, ENOENT);
    authd_log_setup(AUTHD_LOG_INFO, -1); /* no fd: nothing written */
    authd_log_msg(AUTHD_LOG_ERROR, "ev", "x");
    assert_int_equal(errno, ENOENT);
    authd_log_setup(AUTHD_LOG_INFO, pipe_w);
    assert_int_equal(drain(buf, sizeof buf), 0);
}

/* ---- random input --------------------------------------------------------- */

static uint32_t rng = 2463534242u;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* put_cp appends code point c as UTF-8; returns the bytes written. */
static size_t put_cp(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Random bytes, biased towards the interesting ones, always give one valid
 * line; random well-formed text without anything to escape comes out
 * byte for byte. */
static void test_random_input(void **state)
{
    static const unsigned char pick[] = { '"', '\\', '\n', '\r', 0, 0x01, 0x1f, 0x7f, 0x80, 0xbf,
        0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff };
    char in[1200], want[1300], buf[8192];
    parsed p;
    authd_logrec r;

    for (int iter = 0; iter < 5000; iter++) {
        size_t len = next() % 400;
        for (size_t i = 0; i < len; i++) {
            uint32_t x = next();
            in[i] = (char)(x % 3 == 0 ? pick[(x >> 8) % sizeof pick]
                    : x % 3 == 1      ? 0x20 + (x >> 8) % 95
                                      : x >> 8);
        }
        assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "fuzz"));
        authd_log_strn(&r, "v", in, len);
        authd_log_end(&r);
        one_line(buf, sizeof buf, &p);
        assert_true(has_key(&p, "v"));
    }
    for (int iter = 0; iter < 5000; iter++) {
        size_t len = 0, n = next() % 200;
        for (size_t i = 0; i < n; i++) {
            uint32_t c;
            do
                c = next() % 0x110000;
            while (c < 0xA0 || (c >= 0xD800 && c <= 0xDFFF));
            if (next() % 2)
                c = 0x20 + next() % 95; /* some ASCII too */
            if (c == '"' || c == '\\')
                c = 'q';
            len += put_cp(in + len, c);
        }
        assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "fuzz"));
        authd_log_strn(&r, "v", in, len);
        authd_log_end(&r);
        one_line(buf, sizeof buf, &p);
        want[0] = '"';
        memcpy(want + 1, in, len);
        want[len + 1] = '"';
        want[len + 2] = '\0';
        if (!value_is(&p, "v", want))
            fail_msg("iteration %d: text changed: %s", iter, buf);
    }
}

/* ---- concurrency -------------------------------------------------------- */

#define THREADS    8
#define PER_THREAD 1000

struct sink {
    char *buf;
    size_t len, cap;
};

static void *reader(void *arg)
{
    struct sink *s = arg;

    for (;;) {
        if (s->len == s->cap)
            return NULL;
        ssize_t n = read(pipe_r, s->buf + s->len, s->cap - s->len);
        if (n > 0)
            s->len += (size_t)n;
        else if (n == 0)
            return NULL; /* all writers closed */
        else if (errno != EINTR && errno != EAGAIN)
            return NULL;
    }
}

static void *writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    char pad[300];

    /* Long enough that interleaving at any level would show. */
    memset(pad, 'a' + t, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++) {
        authd_logrec r;
        if (!authd_log_begin(&r, AUTHD_LOG_INFO, "concurrent"))
            continue;
        authd_log_i64(&r, "thread", t);
        authd_log_i64(&r, "seq", i);
        authd_log_str(&r, "pad", pad);
        authd_log_str(&r, "nasty", "\"}\n{");
        authd_log_end(&r);
    }
    return NULL;
}

static void test_concurrent_lines(void **state)
{
    pthread_t rd, wr[THREADS];
    struct sink s = { .cap = (size_t)THREADS * PER_THREAD * 600 };
    static unsigned char seen[THREADS][PER_THREAD];
    int fds[2];

    /* A fresh blocking pipe, so the reader can wait for the writers. */
    assert_int_equal(pipe(fds), 0);
    close(pipe_r);
    close(pipe_w);
    pipe_r = fds[0];
    pipe_w = fds[1];
    authd_log_setup(AUTHD_LOG_INFO, pipe_w);

    s.buf = malloc(s.cap);
    assert_non_null(s.buf);
    memset(seen, 0, sizeof seen);
    assert_int_equal(pthread_create(&rd, NULL, reader, &s), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&wr[t], NULL, writer, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(wr[t], NULL);
    authd_log_setup(AUTHD_LOG_INFO, 2);
    close(pipe_w); /* EOF for the reader */
    pipe_w = -1;
    pthread_join(rd, NULL);
    assert_true(s.len < s.cap);

    int lines = 0;
    char expect_pad[301]; /* the 299-byte pad, quoted */
    for (size_t off = 0; off < s.len;) {
        char *nl = memchr(s.buf + off, '\n', s.len - off);
        assert_non_null(nl);
        size_t n = (size_t)(nl - (s.buf + off)) + 1;
        parsed p;
        if (!check_line(s.buf + off, n, &p))
            fail_msg("bad line %d: %.*s", lines, (int)n, s.buf + off);
        assert_int_equal(p.n_keys, 7);
        int t = atoi(p.val[3]), i = atoi(p.val[4]);
        assert_true(t >= 0 && t < THREADS && i >= 0 && i < PER_THREAD);
        assert_int_equal(seen[t][i], 0);
        seen[t][i] = 1;
        expect_pad[0] = '"';
        memset(expect_pad + 1, 'a' + t, sizeof expect_pad - 2);
        expect_pad[sizeof expect_pad - 1] = '"';
        assert_int_equal(p.val_len[5], sizeof expect_pad);
        assert_memory_equal(p.val[5], expect_pad, sizeof expect_pad);
        assert_true(value_is(&p, "nasty", "\"\\\"}\\n{\""));
        lines++;
        off += n;
    }
    assert_int_equal(lines, THREADS * PER_THREAD);
    free(s.buf);

    /* Leave a pipe for teardown to close. */
    assert_int_equal(pipe(fds), 0);
    close(pipe_r);
    pipe_r = fds[0];
    pipe_w = fds[1];
}

/* ---- fields gathered ahead of their line, ids as strings ------------------ */

static void test_u64_str_and_fields(void **state)
{
    char buf[4096];
    parsed p;
    authd_logrec r;
    authd_logfields f = { 0 };
    const uint8_t id[4] = { 0xde, 0xad, 0xbe, 0xef };

    authd_logfields_str(&f, "reason", "BAD\"SIG");
    authd_logfields_hex(&f, "user_id", id, sizeof id);
    authd_logfields_u64(&f, "n", 7);
    authd_logfields_bool(&f, "ok", false);
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "rpc"));
    authd_log_u64_str(&r, "request_id", UINT64_MAX);
    authd_log_fields(&r, &f);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_int_equal(p.n_keys, 8);
    assert_true(value_is(&p, "request_id", "\"18446744073709551615\""));
    assert_true(value_is(&p, "reason", "\"BAD\\\"SIG\""));
    assert_true(value_is(&p, "user_id", "\"deadbeef\""));
    assert_true(value_is(&p, "n", "7"));
    assert_true(value_is(&p, "ok", "false"));
    assert_false(has_key(&p, "truncated"));

    /* A field that does not fit is dropped with every later one. */
    char big[AUTHD_LOGFIELDS_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memset(&f, 0, sizeof f);
    authd_logfields_str(&f, "a", "kept");
    authd_logfields_str(&f, "big", big);
    authd_logfields_str(&f, "c", "after");
    assert_true(authd_log_begin(&r, AUTHD_LOG_INFO, "rpc"));
    authd_log_fields(&r, &f);
    authd_log_end(&r);
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "a", "\"kept\""));
    assert_false(has_key(&p, "big"));
    assert_false(has_key(&p, "c"));
    assert_true(value_is(&p, "truncated", "true"));
    (void)state;
}

/* ---- the per-source gate ------------------------------------------------- */

static void test_source_gate(void **state)
{
    char buf[8192];
    authd_source a, b;
    int allowed_a = 0;

    assert_true(authd_source_from_text("127.0.0.2", 9, &a));
    assert_true(authd_source_from_text("127.0.0.3", 9, &b));
    /* 1 line a second, bursts of 3: a flood of 100 lets about 3 through. */
    assert_true(authd_log_gate_setup(1, 3, 64));
    for (int i = 0; i < 100; i++)
        allowed_a += authd_log_source_allow(&a);
    assert_in_range(allowed_a, 3, 4); /* one more if a second went by */
    assert_true(authd_log_source_allow(&b)); /* a's flood does not hide b */
    assert_int_equal(drain(buf, sizeof buf), 0); /* the gate writes nothing itself */

    authd_log_flush_suppressed();
    parsed p;
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "event", "\"log_suppressed\""));
    assert_true(value_is(&p, "source", "\"127.0.0.2\""));
    char want[32];
    snprintf(want, sizeof want, "%d", 100 - allowed_a);
    assert_true(value_is(&p, "count", want));
    authd_log_flush_suppressed(); /* counted once */
    assert_int_equal(drain(buf, sizeof buf), 0);

    /* Without a gate (shutdown frees it) every line is allowed. */
    assert_true(authd_log_shutdown(1000));
    for (int i = 0; i < 100; i++)
        assert_true(authd_log_source_allow(&a));
    (void)state;
}

/* ---- the ring and the log thread ----------------------------------------- */

struct collector {
    int fd;
    char *buf;
    size_t len, cap;
    atomic_int start; /* the reader waits for this before reading */
};

static void *collect(void *arg)
{
    struct collector *c = arg;

    while (!atomic_load(&c->start)) {
        struct timespec t = { 0, 1000000 };
        nanosleep(&t, NULL);
    }
    for (;;) {
        assert_true(c->len < c->cap);
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n > 0)
            c->len += (size_t)n;
        else if (n == 0 || errno != EINTR)
            return NULL; /* EOF: the write end closed */
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* value_u64 reads the number (or numeric string) of key; asserts it is there. */
static uint64_t value_u64(const parsed *p, const char *key)
{
    for (int k = 0; k < p->n_keys; k++)
        if (strcmp(p->keys[k], key) == 0)
            return strtoull(p->val[k] + (p->val[k][0] == '"'), NULL, 10);
    fail_msg("no key %s", key);
    return 0;
}

struct ring_result {
    uint64_t lines; /* "seq" lines seen */
    uint64_t dropped_lines; /* sum of the log_dropped counts */
};

/* check_ring_output: every line is whole and valid; lines of each thread
 * come in increasing seq; counts them. */
static void check_ring_output(const char *buf, size_t len, int threads, struct ring_result *res)
{
    static parsed p;
    int64_t last[64];

    assert_true(threads <= 64);
    for (int t = 0; t < threads; t++)
        last[t] = -1;
    memset(res, 0, sizeof *res);
    for (size_t off = 0; off < len;) {
        const char *nl = memchr(buf + off, '\n', len - off);
        assert_non_null(nl);
        size_t n = (size_t)(nl - (buf + off)) + 1;
        if (!check_line(buf + off, n, &p))
            fail_msg("bad line at %zu: %.*s", off, (int)n, buf + off);
        if (value_is(&p, "event", "\"log_dropped\"")) {
            res->dropped_lines += value_u64(&p, "count");
        } else {
            assert_true(value_is(&p, "event", "\"ring\""));
            int t = (int)value_u64(&p, "thread");
            int64_t seq = (int64_t)value_u64(&p, "seq");
            assert_true(t >= 0 && t < threads);
            if (seq <= last[t])
                fail_msg("thread %d: seq %lld after %lld", t, (long long)seq, (long long)last[t]);
            last[t] = seq;
            res->lines++;
        }
        off += n;
    }
}

static void ring_line(int t, int seq)
{
    static const char pad[]
        = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvw"
          "xyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr";
    authd_logrec r;

    if (!authd_log_begin(&r, AUTHD_LOG_INFO, "ring"))
        return;
    authd_log_i64(&r, "thread", t);
    authd_log_i64(&r, "seq", seq);
    authd_log_str(&r, "pad", pad);
    authd_log_end(&r);
}

/* A ring of the minimum size in front of a pipe nobody reads yet: the
 * writer is never held up, the lines that do not fit are dropped and
 * counted, and once the pipe is read the log thread reports the count. */
static void test_ring_full_drops_and_counts(void **state)
{
    enum { N = 2000 };
    int fds[2];
    struct collector c = { .cap = 16u << 20 };
    pthread_t rd;

    assert_int_equal(pipe(fds), 0);
    (void)fcntl(fds[1], F_SETPIPE_SZ, 4096); /* as small as the kernel allows */
    authd_log_setup(AUTHD_LOG_INFO, fds[1]);
    assert_true(authd_log_start(AUTHD_LOG_RING_MIN));
    c.fd = fds[0];
    c.buf = malloc(c.cap);
    assert_non_null(c.buf);
    assert_int_equal(pthread_create(&rd, NULL, collect, &c), 0);

    /* ~250-byte lines: 2000 of them are 500 KB, far more than pipe + ring. */
    uint64_t t0 = now_ms();
    for (int i = 0; i < N; i++)
        ring_line(0, i);
    uint64_t took = now_ms() - t0;
    /* Nobody reads, yet the loop finished: authd_log_end never blocked. */
    assert_true(took < 5000);
    uint64_t dropped = authd_log_dropped();
    assert_true(dropped > 0);
    assert_true(dropped < N);

    atomic_store(&c.start, 1); /* now read: the thread drains and reports the drops */
    assert_true(authd_log_shutdown(10000));
    authd_log_setup(AUTHD_LOG_INFO, 2);
    close(fds[1]);
    pthread_join(rd, NULL);
    close(fds[0]);

    struct ring_result res;
    check_ring_output(c.buf, c.len, 1, &res);
    assert_int_equal(res.dropped_lines, dropped);
    assert_int_equal(res.lines + res.dropped_lines, N);
    free(c.buf);
    (void)state;
}

#define RING_THREADS    8
#define RING_PER_THREAD 2000

static void *ring_writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < RING_PER_THREAD; i++)
        ring_line(t, i);
    return NULL;
}

/* Many threads through a small ring with a reader: every line that comes
 * out is whole, each thread's lines in order, and lines out + lines
 * reported dropped = lines in. Then a ring big enough for all: none lost. */
static void test_ring_many_threads(void **state)
{
    const size_t sizes[] = { 64u << 10, 16u << 20 };

    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int fds[2];
        struct collector c = { .cap = 32u << 20, .start = 1 };
        pthread_t rd, wr[RING_THREADS];

        assert_int_equal(pipe(fds), 0);
        authd_log_setup(AUTHD_LOG_INFO, fds[1]);
        assert_true(authd_log_start(sizes[k]));
        c.fd = fds[0];
        c.buf = malloc(c.cap);
        assert_non_null(c.buf);
        assert_int_equal(pthread_create(&rd, NULL, collect, &c), 0);
        for (int t = 0; t < RING_THREADS; t++)
            assert_int_equal(pthread_create(&wr[t], NULL, ring_writer, (void *)(intptr_t)t), 0);
        for (int t = 0; t < RING_THREADS; t++)
            pthread_join(wr[t], NULL);
        uint64_t dropped = authd_log_dropped();
        assert_true(authd_log_shutdown(30000));
        authd_log_setup(AUTHD_LOG_INFO, 2);
        close(fds[1]);
        pthread_join(rd, NULL);
        close(fds[0]);

        struct ring_result res;
        check_ring_output(c.buf, c.len, RING_THREADS, &res);
        assert_int_equal(res.dropped_lines, dropped);
        assert_int_equal(res.lines + res.dropped_lines, RING_THREADS * RING_PER_THREAD);
        if (k == 1)
            assert_int_equal(dropped, 0); /* 16 MiB holds all ~4 MB */
        free(c.buf);
    }
    (void)state;
}

/* After shutdown the log is synchronous again (a later line is written
 * at once), and a restart works. */
static void test_ring_restart_and_sync_after(void **state)
{
    char buf[4096];
    parsed p;

    assert_true(authd_log_start(AUTHD_LOG_RING_MIN));
    ring_line(0, 1);
    assert_true(authd_log_shutdown(5000)); /* flushed: the line is there */
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "seq", "1"));
    ring_line(0, 2); /* synchronous again */
    one_line(buf, sizeof buf, &p);
    assert_true(value_is(&p, "seq", "2"));
    (void)state;
}

/* ---- swapping the descriptor (a reopened --log-file) ---------------------- */

/* tmp_log makes an empty temp file; its path goes into path. */
static int tmp_log(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/authd-test-log-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    return fd;
}

static int file_count(const char *path, const char *needle)
{
    char buf[65536];
    int fd = open(path, O_RDONLY);
    int n = 0;

    assert_true(fd >= 0);
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(len >= 0);
    buf[len] = '\0';
    for (const char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void swap_line(const char *name)
{
    authd_logrec r;
    if (authd_log_begin(&r, AUTHD_LOG_INFO, "swap")) {
        authd_log_str(&r, "name", name);
        authd_log_end(&r);
    }
}

/* authd_log_swap_fd, synchronous and with the log thread: every line goes
 * whole to one file, the old descriptor is closed (by the thread, between
 * batches, when it runs), and lines after the swap are in the new file.
 * authd_log_set_level takes effect at once. */
static void test_swap_fd_and_set_level(void **state)
{
    char a[64], b[64], c[64];
    int fa = tmp_log(a, sizeof a), fb = tmp_log(b, sizeof b), fc = tmp_log(c, sizeof c);

    authd_log_setup(AUTHD_LOG_INFO, fa);
    swap_line("one");
    authd_log_swap_fd(fb); /* no thread: at once, and fa is closed */
    assert_int_equal(fcntl(fa, F_GETFD), -1);
    swap_line("two");
    assert_int_equal(file_count(a, "\"one\""), 1);
    assert_int_equal(file_count(a, "\"two\""), 0);
    assert_int_equal(file_count(b, "\"two\""), 1);

    assert_true(authd_log_start(AUTHD_LOG_RING_MIN));
    swap_line("three");
    for (int i = 0; i < 5000 && file_count(b, "\"three\"") == 0; i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_int_equal(file_count(b, "\"three\""), 1);
    authd_log_swap_fd(fc);
    swap_line("four");
    authd_log_set_level(AUTHD_LOG_WARN);
    swap_line("five"); /* below the level now: not written */
    authd_log_set_level(AUTHD_LOG_INFO);
    swap_line("six");
    assert_true(authd_log_shutdown(5000));
    assert_int_equal(fcntl(fb, F_GETFD), -1); /* closed by the thread */
    assert_int_equal(file_count(b, "\"four\""), 0);
    assert_int_equal(file_count(c, "\"four\""), 1);
    assert_int_equal(file_count(c, "\"five\""), 0);
    assert_int_equal(file_count(c, "\"six\""), 1);
    assert_int_equal(file_count(c, "\"three\""), 0);

    authd_log_setup(AUTHD_LOG_INFO, 2);
    close(fc);
    unlink(a);
    unlink(b);
    unlink(c);
    (void)state;
}

/* Shutdown with the log thread stuck in write(2) on a full pipe nobody
 * reads returns by its deadline; lines after it are dropped, never block.
 * Leaves the thread behind: must be the last test of the ring. */
static void test_ring_shutdown_bounded_on_stuck_pipe(void **state)
{
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    authd_log_setup(AUTHD_LOG_INFO, fds[1]);
    assert_true(authd_log_start(1u << 20));
    for (int i = 0; i < 2000; i++) /* ~500 KB: the pipe (64 KiB) fills */
        ring_line(0, i);
    uint64_t t0 = now_ms();
    assert_false(authd_log_shutdown(300));
    uint64_t took = now_ms() - t0;
    assert_true(took >= 250 && took < 5000);
    t0 = now_ms();
    for (int i = 0; i < 1000; i++)
        ring_line(0, i); /* dropped, and quickly */
    assert_true(now_ms() - t0 < 5000);
    assert_false(authd_log_start(AUTHD_LOG_RING_MIN)); /* the old thread still owns the ring */
    /* The read end stays open: the stuck thread must not get EPIPE midway
     * and write to a reused descriptor. It dies with the process. */
    (void)state;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_rejects),
        cmocka_unit_test_setup_teardown(test_record_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_and_event_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errno_preserved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_u64_str_and_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_gate, setup, teardown),
        cmocka_unit_test(test_ring_full_drops_and_counts), cmocka_unit_test(test_ring_many_threads),
        cmocka_unit_test_setup_teardown(test_ring_restart_and_sync_after, setup, teardown),
        cmocka_unit_test(test_swap_fd_and_set_level),
        cmocka_unit_test(test_ring_shutdown_bounded_on_stuck_pipe), /* last */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
