/*
 * http_client.c — the side-port tests' HTTP/1.1 client (http_client.h).
 */
#include "http_client.h"
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_ANSWER (1024 * 1024)

/* parse_url splits http[s]://IPV4:PORT; asserts. */
static void parse_url(const char *url, bool *tls, char host[64], int *port)
{
    const char *hp;
    if (strncmp(url, "https://", 8) == 0) {
        *tls = true;
        hp = url + 8;
    } else {
        assert_true(strncmp(url, "http://", 7) == 0);
        *tls = false;
        hp = url + 7;
    }
    const char *colon = strrchr(hp, ':');
    assert_non_null(colon);
    assert_true((size_t)(colon - hp) < 64);
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    *port = atoi(colon + 1);
}

/* connect_to opens a TCP connection, bound to local_ip when given; -1 when
 * refused. */
static int connect_to(const char *host, int port, const char *local_ip)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, host, &sa.sin_addr), 1);
    if (local_ip != NULL) {
        struct sockaddr_in la = { .sin_family = AF_INET };
        assert_int_equal(inet_pton(AF_INET, local_ip, &la.sin_addr), 1);
        assert_int_equal(bind(fd, (struct sockaddr *)&la, sizeof la), 0);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = { IT_CALL_TIMEOUT_MS / 1000, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* exchange sends req and reads until EOF (or the timeout); returns the
 * answer (malloc'ed), or NULL when the connection failed. */
static char *exchange(const char *url, const char *req, const char *local_ip, const char *ca_file)
{
    bool tls;
    char host[64];
    int port;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    char *buf = NULL;
    size_t len = 0;

    parse_url(url, &tls, host, &port);
    int fd = connect_to(host, port, local_ip);
    if (fd < 0)
        return NULL;
    if (tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        assert_non_null(ctx);
        assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca_file, NULL), 1);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ssl = SSL_new(ctx);
        assert_non_null(ssl);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        assert_int_equal(SSL_set1_host(ssl, "localhost"), 1);
        if (SSL_connect(ssl) != 1) {
            ERR_print_errors_fp(stderr);
            goto out;
        }
        if (SSL_write(ssl, req, (int)strlen(req)) != (int)strlen(req))
            goto out;
    } else if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        goto out;
    }
    buf = malloc(HTTP_MAX_ANSWER + 1);
    assert_non_null(buf);
    for (;;) {
        ssize_t n = tls ? SSL_read(ssl, buf + len, (int)(HTTP_MAX_ANSWER - len))
                        : read(fd, buf + len, HTTP_MAX_ANSWER - len);
        if (n <= 0 || len + (size_t)n >= HTTP_MAX_ANSWER)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
out:
    if (ssl != NULL)
        SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return buf;
}

void it_http_request(const char *url, const char *method, const char *path,
    const char *const *headers, const char *local_ip, const char *ca_file, it_http_resp *out)
{
    char req[8192];
    size_t off = 0;

    memset(out, 0, sizeof *out);
    off += (size_t)snprintf(req + off, sizeof req - off,
        "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", method, path);
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        off += (size_t)snprintf(req + off, sizeof req - off, "%s\r\n", headers[i]);
    off += (size_t)snprintf(req + off, sizeof req - off, "\r\n");
    assert_true(off < sizeof req);
    out->raw = exchange(url, req, local_ip, ca_file);
    if (out->raw == NULL) {
        out->raw = calloc(1, 1);
        out->body = out->raw;
        return;
    }
    if (strncmp(out->raw, "HTTP/1.", 7) == 0 && strlen(out->raw) >= 12)
        out->status = atoi(out->raw + 9);
    char *sep = strstr(out->raw, "\r\n\r\n");
    out->body = sep != NULL ? sep + 4 : out->raw + strlen(out->raw);
}

void it_http_get(const char *url, const char *path, const char *const *headers,
    const char *local_ip, const char *ca_file, it_http_resp *out)
{
    it_http_request(url, "GET", path, headers, local_ip, ca_file, out);
}

bool it_http_header(const it_http_resp *r, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = strstr(r->raw, "\r\n");

    while (p != NULL && p < r->body - 2) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1, *e = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            size_t vlen = e != NULL ? (size_t)(e - v) : strlen(v);
            snprintf(out, cap, "%.*s", (int)vlen, v);
            return true;
        }
        p = strstr(p, "\r\n");
    }
    return false;
}

void it_http_free(it_http_resp *r)
{
    free(r->raw);
    memset(r, 0, sizeof *r);
}

bool it_http_wait_status(const char *url, const char *path, int want, int deadline_ms)
{
    uint64_t end = it_mono_ms() + (uint64_t)deadline_ms;
    for (;;) {
        it_http_resp r;
        it_http_get(url, path, NULL, NULL, IT_CA, &r);
        int got = r.status;
        it_http_free(&r);
        if (got == want)
            return true;
        if (it_mono_ms() >= end)
            return false;
        it_nap_ms(20);
    }
}
