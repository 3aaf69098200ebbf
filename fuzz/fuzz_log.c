/*
 * fuzz_log.c — libFuzzer harness for the log escaper (authd_log_strn and
 * the keys that go through the same code).
 *
 * Input: byte 0 = length k of a key (cut at its first NUL, as a C string
 * key is), then k key bytes, then the value bytes. One record is written
 * with that key (value "k") and then the value under the key "v", into a
 * memfd, and read back. What must hold for any bytes:
 * - exactly one line: one '\n', at the very end;
 * - that line is one JSON object (jansson parses it, nothing after it);
 * - "v" decodes to exactly the input when the input is valid UTF-8 (NULs
 *   included), and to valid UTF-8 of at most 3 bytes per input byte
 *   otherwise (ill-formed bytes become U+FFFD);
 * - a record too long for the buffer says "truncated": true, and then "v"
 *   is whole, absent, or (should the log ever cut a value short) a prefix.
 * The input is cut at 8 KiB: records are 2 KiB, so more adds nothing.
 */
#define _GNU_SOURCE /* memfd_create */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"

static int fd = -1;
static char line[2 * AUTHD_LOGREC_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("authd-fuzz-log", 0);
    if (fd < 0)
        abort();
    authd_log_setup(AUTHD_LOG_DEBUG, fd);
    return 0;
}

/* utf8_ok: jansson's own check (json_stringn refuses ill-formed UTF-8). */
static bool utf8_ok(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char key[256];
    const char *val;
    size_t k, vlen, n;
    authd_logrec r;
    json_t *o, *v, *tr;
    json_error_t jerr;
    ssize_t got;

    if (size < 1 || size > 8192)
        return 0;
    k = data[0];
    if (size < 1 + k)
        return 0;
    memcpy(key, data + 1, k);
    key[k] = '\0';
    val = (const char *)data + 1 + k;
    vlen = size - 1 - k;

    FUZZ_CHECK(ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0, "memfd reset");
    FUZZ_CHECK(authd_log_begin(&r, AUTHD_LOG_INFO, "fuzz"), "begin refused");
    authd_log_str(&r, key, "k");
    authd_log_strn(&r, "v", val, vlen);
    authd_log_end(&r);

    FUZZ_CHECK(lseek(fd, 0, SEEK_SET) == 0, "memfd seek");
    got = read(fd, line, sizeof line);
    FUZZ_CHECK(got > 0 && (size_t)got < sizeof line, "read %zd bytes", got);
    n = (size_t)got;
    FUZZ_CHECK(line[n - 1] == '\n' && memchr(line, '\n', n - 1) == NULL, "not exactly one line");

    o = json_loadb(line, n, JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(json_is_object(o), "not one JSON object: %s: %.*s", jerr.text, (int)n, line);
    tr = json_object_get(o, "truncated");
    v = json_object_get(o, "v");
    if (strcmp(key, "truncated") == 0 && !json_is_true(tr)) /* our key took that name */
        tr = NULL;
    if (tr == NULL)
        FUZZ_CHECK(json_is_string(v), "\"v\" missing from an untruncated record");
    else
        FUZZ_CHECK(json_is_true(tr), "\"truncated\" is not true");
    /* Our key "v" with the value field dropped leaves the key's "k". */
    if (tr != NULL && strcmp(key, "v") == 0)
        v = NULL;
    if (v != NULL) {
        size_t vn;
        FUZZ_CHECK(json_is_string(v), "\"v\" is not a string");
        vn = json_string_length(v);
        if (utf8_ok(val, vlen))
            /* Whole; or, in a truncated record, at most a prefix. */
            FUZZ_CHECK((vn == vlen || (tr != NULL && vn < vlen))
                    && memcmp(json_string_value(v), val, vn) == 0,
                "valid UTF-8 did not round-trip");
        else
            FUZZ_CHECK(vn <= 3 * vlen, "decoded value too long");
    }
    json_decref(o);
    return 0;
}
