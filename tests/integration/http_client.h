/*
 * http_client.h — a minimal HTTP/1.1 client for the side-port tests: one
 * request per connection (Connection: close), plain TCP or TLS (OpenSSL,
 * verifying against a CA file), the client socket optionally bound to a
 * chosen loopback address so authd sees that source.
 *
 * It only reads what authd and nginx answer in these tests (status line,
 * headers, a small body up to EOF); it is not a general HTTP parser.
 */
#ifndef AUTHD_IT_HTTP_CLIENT_H
#define AUTHD_IT_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct it_http_resp {
    int status; /* 0 when no answer came */
    char *raw; /* the whole answer, NUL-terminated (malloc'ed) */
    const char *body; /* into raw */
} it_http_resp;

/*
 * it_http_get sends "GET path" to url (http://HOST:PORT or https://...;
 * https verifies against ca_file and the name "localhost") with the extra
 * request header lines in headers ("Name: value", NULL-terminated; may be
 * NULL), from local_ip (NULL: any). Asserts that an answer arrives within
 * the deadline; free with it_http_free.
 */
void it_http_get(const char *url, const char *path, const char *const *headers,
    const char *local_ip, const char *ca_file, it_http_resp *out);

/* it_http_request is it_http_get with another method. */
void it_http_request(const char *url, const char *method, const char *path,
    const char *const *headers, const char *local_ip, const char *ca_file, it_http_resp *out);

/* it_http_header copies the value of the first header called name (any
 * case) into out and returns true; false when absent. */
bool it_http_header(const it_http_resp *r, const char *name, char *out, size_t cap);

void it_http_free(it_http_resp *r);

/* it_http_wait_status polls url+path until it answers want (true) or
 * deadline_ms passes (false). */
bool it_http_wait_status(const char *url, const char *path, int want, int deadline_ms);

#endif
