/*
 * fuzz_sp_frame.c — libFuzzer harness for the SP req0 input framing
 * (src/sp_frame.c: sp_frame_header, sp_frame_next), built only when that
 * file exists (fuzz/CMakeLists.txt).
 *
 * Input: bytes 0-1 set max_body (0..65535), bytes 2-3 seed the chunk
 * sizes, the rest is what a peer sends: its 8-byte header, then frames.
 * What must hold:
 * - the stream parsed whole: every READY frame is consistent (its length
 *   prefix = backtrace + body, a backtrace of 1..SP_MAX_HOPS words whose
 *   last and only last word has its top bit set, a body of at most
 *   max_body, everything inside the bytes given); NEED_MORE asks for more
 *   than is there and never more than the largest legal frame;
 * - the same stream arriving in chunks (the buffer growing as a server's
 *   does, frames consumed as they complete) yields exactly the same frames
 *   and ends in the same state;
 * - f and need may be NULL and change nothing.
 * Every call sees an exact-size heap copy, so ASan catches any read past
 * the bytes given.
 */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "sp_frame.h"
#include "sp_wire.h"

#define MAX_FRAMES 4096

struct parse {
    int header; /* sp_frame_header's last answer */
    sp_frame_status end; /* the status that stopped the parse */
    size_t frames;
    size_t off[MAX_FRAMES], len[MAX_FRAMES], bt_len[MAX_FRAMES];
};

/* next_on_copy runs sp_frame_next on an exact-size copy of p[0..n) and
 * maps the frame's pointers back into p. */
static sp_frame_status next_on_copy(
    const uint8_t *p, size_t n, size_t max_body, sp_frame *f, size_t *need)
{
    uint8_t *c = malloc(n > 0 ? n : 1);
    sp_frame g, *fp = f != NULL ? &g : NULL;
    sp_frame_status st, st_null;
    size_t need2 = 0;

    FUZZ_CHECK(c != NULL, "out of memory");
    memcpy(c, p, n);
    st = sp_frame_next(c, n, max_body, fp, &need2);
    st_null = sp_frame_next(c, n, max_body, NULL, NULL);
    FUZZ_CHECK(st == st_null, "status %d with f/need, %d without", (int)st, (int)st_null);
    if (st == SP_FRAME_READY && f != NULL) {
        FUZZ_CHECK(g.bt == c + SP_LEN_LEN && g.body == g.bt + g.bt_len, "frame pointers");
        *f = g;
        f->bt = p + SP_LEN_LEN;
        f->body = f->bt + f->bt_len;
    }
    if (need != NULL)
        *need = need2;
    free(c);
    return st;
}

/* check_frame: a READY frame at p (n bytes there) is consistent. */
static void check_frame(const uint8_t *p, size_t n, size_t max_body, const sp_frame *f)
{
    uint64_t announced = sp_get64(p);

    FUZZ_CHECK(f->frame_len <= n, "frame of %zu bytes, %zu there", f->frame_len, n);
    FUZZ_CHECK(f->frame_len == SP_LEN_LEN + f->bt_len + f->body_len
            && announced == f->bt_len + f->body_len,
        "lengths do not add up");
    FUZZ_CHECK(f->bt_len % 4 == 0 && f->bt_len >= 4 && f->bt_len <= 4 * SP_MAX_HOPS,
        "backtrace of %zu bytes", f->bt_len);
    for (size_t w = 0; w < f->bt_len; w += 4)
        FUZZ_CHECK(((f->bt[w] & 0x80) != 0) == (w + 4 == f->bt_len),
            "top bit of backtrace word %zu", w / 4);
    FUZZ_CHECK(f->body_len <= max_body, "body %zu over %zu", f->body_len, max_body);
}

/* step parses the frames at the front of p[0..n) into r; returns the bytes
 * consumed. */
static size_t step(const uint8_t *p, size_t n, size_t max_body, struct parse *r)
{
    size_t pos = 0, need;
    sp_frame f;

    for (;;) {
        sp_frame_status st = next_on_copy(p + pos, n - pos, max_body, &f, &need);
        r->end = st;
        if (st == SP_FRAME_NEED_MORE) {
            FUZZ_CHECK(need > n - pos, "NEED_MORE for %zu bytes, %zu there", need, n - pos);
            FUZZ_CHECK(need <= SP_LEN_LEN + max_body + 4 * SP_MAX_HOPS, "need %zu", need);
            return pos;
        }
        if (st != SP_FRAME_READY)
            return pos;
        check_frame(p + pos, n - pos, max_body, &f);
        FUZZ_CHECK(r->frames < MAX_FRAMES, "too many frames");
        r->off[r->frames] = pos;
        r->len[r->frames] = f.frame_len;
        r->bt_len[r->frames] = f.bt_len;
        r->frames++;
        pos += f.frame_len;
    }
}

static int header_on_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n > 0 ? n : 1);
    int h;

    FUZZ_CHECK(c != NULL, "out of memory");
    memcpy(c, p, n);
    h = sp_frame_header(c, n);
    free(c);
    FUZZ_CHECK(h == (n < SP_HDR_LEN ? 0 : h) && h >= -1 && h <= 1, "header answer %d", h);
    return h;
}

/* parse_whole: the stream all at once. */
static void parse_whole(const uint8_t *s, size_t n, size_t max_body, struct parse *r)
{
    memset(r, 0, sizeof *r);
    r->header = header_on_copy(s, n);
    if (r->header == 1)
        (void)step(s + SP_HDR_LEN, n - SP_HDR_LEN, max_body, r);
}

/* parse_chunked: the stream in chunks, as a server reads it: frames are
 * consumed from the front as they complete; the rest waits for more. */
static void parse_chunked(
    const uint8_t *s, size_t n, size_t max_body, unsigned seed, struct parse *r)
{
    size_t have = 0, base = 0; /* bytes arrived; start of unconsumed bytes */
    bool open = false;

    memset(r, 0, sizeof *r);
    while (have < n) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = 1 + (seed >> 16) % 64;
        have = have + chunk < n ? have + chunk : n;
        if (!open) {
            r->header = header_on_copy(s, have);
            if (r->header == 0)
                continue;
            if (r->header < 0)
                return;
            open = true;
            base = SP_HDR_LEN;
        }
        size_t before = r->frames;
        size_t used = step(s + base, have - base, max_body, r);
        for (size_t i = before; i < r->frames; i++)
            r->off[i] += base - SP_HDR_LEN; /* offsets as in the whole parse */
        base += used;
        if (r->end == SP_FRAME_TOO_LARGE || r->end == SP_FRAME_BAD)
            return; /* the server closes the peer */
    }
    if (!open) /* the header never completed */
        r->header = header_on_copy(s, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct parse whole, chunked;
    size_t max_body;
    unsigned seed;

    if (size < 4)
        return 0;
    max_body = (size_t)data[0] << 8 | data[1];
    seed = (unsigned)data[2] << 8 | data[3];
    data += 4;
    size -= 4;

    parse_whole(data, size, max_body, &whole);
    parse_chunked(data, size, max_body, seed, &chunked);
    FUZZ_CHECK(whole.header == chunked.header, "header %d whole, %d chunked", whole.header,
        chunked.header);
    FUZZ_CHECK(whole.frames == chunked.frames, "%zu frames whole, %zu chunked", whole.frames,
        chunked.frames);
    for (size_t i = 0; i < whole.frames; i++)
        FUZZ_CHECK(whole.off[i] == chunked.off[i] && whole.len[i] == chunked.len[i]
                && whole.bt_len[i] == chunked.bt_len[i],
            "frame %zu differs", i);
    if (whole.header == 1)
        FUZZ_CHECK(whole.end == chunked.end, "ends %d whole, %d chunked", (int)whole.end,
            (int)chunked.end);
    return 0;
}
