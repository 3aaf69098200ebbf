/*
 * net/listen.c — the listening socket: a listen URL (tls+tcp://HOST:PORT
 * and its tcp/4/6 variants) parsed, resolved, bound and listening, and the
 * URL actually bound (port 0 resolved).
 *
 * Knows sockets and addresses. Must not know event loops, connections,
 * TLS state, SP or the service: the server puts the descriptor into its
 * listening loop and accepts from it there.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/listen.h"
#include "sp_wire.h"

/*
 * parse_url splits scheme://host:port. Schemes: tls+tcp, tls+tcp4,
 * tls+tcp6, tcp, tcp4, tcp6 (the address family of the 4/6 forms is
 * forced). host may be a name, an IPv4 address, [IPv6], empty or '*'
 * (every address).
 */
static bool parse_url(
    const char *url, bool *tls, int *family, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *rest = sp_url_scheme(url, tls, family);

    if (rest == NULL)
        return false;
    const char *colon;
    if (rest[0] == '[') {
        const char *end = strchr(rest, ']');
        if (end == NULL || end[1] != ':')
            return false;
        if ((size_t)(end - rest - 1) >= hostlen)
            return false;
        snprintf(host, hostlen, "%.*s", (int)(end - rest - 1), rest + 1);
        colon = end + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL || (size_t)(colon - rest) >= hostlen)
            return false;
        snprintf(host, hostlen, "%.*s", (int)(colon - rest), rest);
    }
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) >= portlen || strspn(p, "0123456789") != strlen(p))
        return false;
    snprintf(port, portlen, "%s", p);
    if (strcmp(host, "*") == 0)
        host[0] = '\0';
    return true;
}

authd_code authd_listen_open(const char *url, authd_listener *out, char *err, size_t errlen)
{
    char host[256], port[16];
    int family;
    struct addrinfo hints, *res = NULL;

    memset(out, 0, sizeof *out);
    out->fd = -1;
    if (!parse_url(url, &out->tls, &family, host, sizeof host, port, sizeof port)) {
        snprintf(err, errlen, "listen URL %s: expected tls+tcp://HOST:PORT", url);
        return AUTHD_INVALID_ARGUMENT;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
    if (gai != 0 || res == NULL) {
        snprintf(err, errlen, "listen URL %s: %s", url, gai_strerror(gai));
        return AUTHD_INVALID_ARGUMENT;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return AUTHD_INTERNAL;
    }
    /* SO_REUSEADDR only (restart over TIME_WAIT). Never SO_REUSEPORT: it
     * would let a second process of the same user bind the port too and
     * silently take a share of the connections (two stores!). */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s%s", url,
            e == EADDRINUSE ? "address already in use" : strerror(e),
            e == EADDRINUSE ? " (is another authd running on this port?)" : "");
        freeaddrinfo(res);
        close(fd);
        return e == EADDRINUSE ? AUTHD_UNAVAILABLE : AUTHD_INVALID_ARGUMENT;
    }
    freeaddrinfo(res);
    out->fd = fd;

    /* The URL actually bound: the port after the last ':' replaced. */
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    snprintf(out->url, sizeof out->url, "%s", url);
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) == 0) {
        out->addr = sa;
        out->addr_len = salen;
        unsigned bport = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                                  : ntohs(((struct sockaddr_in *)&sa)->sin_port);
        const char *colon = strrchr(url, ':');
        snprintf(out->url, sizeof out->url, "%.*s:%u", (int)(colon - url), url, bport);
    }
    return AUTHD_OK;
}
