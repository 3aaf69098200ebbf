/*
 * netaddr.c — source keys from socket addresses and from text.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "netaddr.h"

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static void from_v4(const void *a4, authd_source *out)
{
    memcpy(out->key, v4mapped, sizeof v4mapped);
    memcpy(out->key + 12, a4, 4);
}

static void from_v6(const uint8_t a6[16], authd_source *out)
{
    if (memcmp(a6, v4mapped, sizeof v4mapped) == 0) {
        from_v4(a6 + 12, out);
        return;
    }
    memcpy(out->key, a6, 8);
    memset(out->key + 8, 0, 8);
}

bool authd_source_from_sockaddr(const struct sockaddr *sa, authd_source *out)
{
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        from_v4(&s4->sin_addr, out);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        from_v6(s6->sin6_addr.s6_addr, out);
        return true;
    }
    return false;
}

bool authd_source_from_text(const char *text, size_t len, authd_source *out)
{
    char buf[INET6_ADDRSTRLEN];
    uint8_t a[16];

    memset(out, 0, sizeof *out);
    if (len == 0 || len >= sizeof buf || memchr(text, '\0', len) != NULL)
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, a) == 1) {
        from_v4(a, out);
        return true;
    }
    if (inet_pton(AF_INET6, buf, a) == 1) {
        from_v6(a, out);
        return true;
    }
    return false;
}

bool authd_source_is_v4(const authd_source *s)
{
    return memcmp(s->key, v4mapped, sizeof v4mapped) == 0;
}

void authd_source_str(const authd_source *s, char out[AUTHD_SOURCE_TEXT_MAX])
{
    char ip[INET6_ADDRSTRLEN];

    if (authd_source_is_v4(s)) {
        if (inet_ntop(AF_INET, s->key + 12, ip, sizeof ip) == NULL)
            snprintf(ip, sizeof ip, "?");
        snprintf(out, AUTHD_SOURCE_TEXT_MAX, "%s", ip);
        return;
    }
    if (inet_ntop(AF_INET6, s->key, ip, sizeof ip) == NULL)
        snprintf(ip, sizeof ip, "?");
    snprintf(out, AUTHD_SOURCE_TEXT_MAX, "%s/64", ip);
}
