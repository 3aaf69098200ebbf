/*
 * sp_wire.h — the pieces of nng's SP req/rep wire format that both ends of
 * authd speak: the server (src/server.c) and libauthd-client
 * (clients/client_*.c). Header-only, in common/ (the one directory both
 * sides include), so the client library needs no object of the server's.
 *
 * After TCP connect (and TLS on tls+tcp://) each side sends an 8-byte
 * header: 00 'S' 'P' 00, its protocol number (big-endian), 00 00. Then
 * every message is a frame: an 8-byte big-endian length, then that many
 * bytes: the backtrace (4-byte words, the last, the request id, with its
 * top bit set) and the body.
 */
#ifndef AUTHD_SP_WIRE_H
#define AUTHD_SP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define SP_HDR_LEN    8
#define SP_PROTO_REQ0 0x0030u
#define SP_PROTO_REP0 0x0031u
#define SP_ID_BIT     0x80000000u

static inline void sp_put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)(v & 0xff);
}

static inline uint64_t sp_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* sp_put32 / sp_get32: a 4-byte big-endian word (a request id). */
static inline void sp_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t sp_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* sp_header writes the header announcing protocol proto. */
static inline void sp_header(uint8_t out[SP_HDR_LEN], unsigned proto)
{
    static const uint8_t h[SP_HDR_LEN] = { 0, 'S', 'P', 0, 0, 0, 0, 0 };
    memcpy(out, h, sizeof h);
    out[4] = (uint8_t)(proto >> 8);
    out[5] = (uint8_t)(proto & 0xff);
}

/* sp_header_proto: the protocol a peer's header announces, or -1 when it
 * is not an SP header at all. */
static inline int sp_header_proto(const uint8_t h[SP_HDR_LEN])
{
    if (h[0] != 0 || h[1] != 'S' || h[2] != 'P' || h[3] != 0 || h[6] != 0 || h[7] != 0)
        return -1;
    return h[4] << 8 | h[5];
}

/* sp_url_scheme recognises the URL schemes authd speaks: tls+tcp, tcp and
 * their 4/6 forms (which force the address family). Returns what follows
 * "://" and sets *tls and *family, or returns NULL. */
static inline const char *sp_url_scheme(const char *url, bool *tls, int *family)
{
    static const struct {
        const char *scheme;
        bool tls;
        int family;
    } schemes[] = {
        { "tls+tcp://", true, AF_UNSPEC },
        { "tls+tcp4://", true, AF_INET },
        { "tls+tcp6://", true, AF_INET6 },
        { "tcp://", false, AF_UNSPEC },
        { "tcp4://", false, AF_INET },
        { "tcp6://", false, AF_INET6 },
    };

    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncmp(url, schemes[i].scheme, n) == 0) {
            *tls = schemes[i].tls;
            *family = schemes[i].family;
            return url + n;
        }
    }
    return NULL;
}

#endif
