/*
 * netaddr.h — source keys: the address a limit or a log line is about.
 *
 * A source key is 16 bytes: an IPv4 address as its IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d), an IPv6 address masked to its /64 (one subscriber's
 * prefix: per-address limits on IPv6 are bypassed by rotating the low 64
 * bits). Keys come from the transport's peer address or, for end users,
 * from the client context a trusted front-end passes along.
 */
#ifndef AUTHD_NETADDR_H
#define AUTHD_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTHD_SOURCE_KEY_BYTES 16
#define AUTHD_SOURCE_TEXT_MAX  52 /* INET6_ADDRSTRLEN + "/64", rounded up */

typedef struct authd_source {
    uint8_t key[AUTHD_SOURCE_KEY_BYTES];
} authd_source;

struct sockaddr;

/* authd_source_from_sockaddr fills *out from an AF_INET or AF_INET6
 * address (v4-mapped IPv6 counts as IPv4). Returns false (and *out all
 * zeros) for any other family. */
bool authd_source_from_sockaddr(const struct sockaddr *sa, authd_source *out);

/* authd_source_from_text parses a literal IPv4 or IPv6 address (no port,
 * no brackets, no zone, no names) of len bytes into *out. Returns false
 * when it is not one. */
bool authd_source_from_text(const char *text, size_t len, authd_source *out);

/* authd_source_str writes the key for logs: "a.b.c.d" or "2001:db8::/64". */
void authd_source_str(const authd_source *s, char out[AUTHD_SOURCE_TEXT_MAX]);

/* authd_source_is_v4 is true for an IPv4 key. */
bool authd_source_is_v4(const authd_source *s);

#endif
