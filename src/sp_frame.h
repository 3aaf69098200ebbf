/*
 * sp_frame.h — SP req0 input framing as pure functions over a byte buffer:
 * the peer's 8-byte header, then frames of an 8-byte big-endian length, a
 * backtrace (4-byte words, the last with its top bit set) and a body.
 *
 * No allocation, no I/O, no globals: the server (src/server.c) calls these
 * on its receive buffer, and a fuzzer can call them on any bytes. The wire
 * format itself is stated in sp_wire.h.
 */
#ifndef AUTHD_SP_FRAME_H
#define AUTHD_SP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SP_MAX_HOPS 8 /* backtrace words accepted, as nng's rep0 */
#define SP_LEN_LEN  8 /* the length prefix of every frame */

typedef enum sp_frame_status {
    SP_FRAME_NEED_MORE, /* incomplete: *need is the bytes a complete frame takes */
    SP_FRAME_READY, /* *f describes one complete, well-formed frame */
    SP_FRAME_TOO_LARGE, /* announced length, or body, over the limit */
    SP_FRAME_BAD, /* backtrace without an end word, or more than SP_MAX_HOPS */
} sp_frame_status;

/* sp_frame: one complete frame; every pointer is into the caller's buffer. */
typedef struct sp_frame {
    size_t frame_len; /* SP_LEN_LEN + announced length: bytes to consume */
    const uint8_t *bt; /* the backtrace, bt_len bytes (a multiple of 4) */
    size_t bt_len;
    const uint8_t *body; /* what follows the backtrace (the envelope) */
    size_t body_len;
} sp_frame;

/*
 * sp_frame_header checks the peer's header in the first n bytes of p:
 * returns 1 when it is an SP header announcing req0, 0 when fewer than 8
 * bytes are there (need more), -1 for anything else (close the peer).
 */
int sp_frame_header(const uint8_t *p, size_t n);

/*
 * sp_frame_next looks at the frame that starts at p, of which n bytes are
 * there, and says what it is:
 *   - TOO_LARGE as soon as the length prefix is there and announces more
 *     than max_body + 4 * SP_MAX_HOPS bytes (the most any frame with a
 *     body of max_body bytes can take), and for a complete frame whose
 *     body after the backtrace is over max_body;
 *   - NEED_MORE with *need = the bytes the whole frame takes (SP_LEN_LEN
 *     while the prefix itself is incomplete); *need never exceeds
 *     SP_LEN_LEN + max_body + 4 * SP_MAX_HOPS;
 *   - BAD for a complete frame whose backtrace does not end within
 *     SP_MAX_HOPS words and within the frame;
 *   - READY with *f filled (pointers into p).
 * The limit is checked before completeness, so a caller that stops
 * reading (a full in-flight window) still learns of an oversized frame
 * from its first 8 bytes. need and f may be NULL.
 */
sp_frame_status sp_frame_next(
    const uint8_t *p, size_t n, size_t max_body, sp_frame *f, size_t *need);

#endif
