/*
 * net/listen.h — the listening socket of a listen URL.
 *
 * Knows sockets and addresses; must not know loops, connections, TLS
 * state, SP or the service (see net/listen.c).
 */
#ifndef AUTHD_NET_LISTEN_H
#define AUTHD_NET_LISTEN_H

#include <stdbool.h>
#include <sys/socket.h>

#include "status.h"

typedef struct authd_listener {
    int fd; /* non-blocking, close-on-exec, listening; the caller owns it */
    bool tls; /* the scheme asks for TLS (tls+tcp*) */
    struct sockaddr_storage addr; /* the address bound */
    socklen_t addr_len;
    char url[256]; /* the URL bound: url with port 0 resolved */
} authd_listener;

/* authd_listen_open parses url (scheme://host:port; schemes tls+tcp,
 * tls+tcp4, tls+tcp6, tcp, tcp4, tcp6; host a name, an IPv4 address,
 * [IPv6], empty or '*'), binds and listens. On failure out->fd is -1 and
 * err says why in the operator's words (AUTHD_UNAVAILABLE: the address is
 * in use). */
AUTHD_MUST_CHECK authd_code authd_listen_open(
    const char *url, authd_listener *out, char *err, size_t errlen);

#endif
