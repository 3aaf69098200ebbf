/*
** echo_server.c — authd-echo, the transport baseline for authbench: an nng
** rep0 socket over tls+tcp:// (the same nng 1.5.2 + mbedTLS stack, the same
** SP req/rep wire format as authd) that answers every request with its own
** bytes. Whatever authd adds on top of this (envelope decoding, dispatch,
** token check, LMDB) is what authbench's verify-vs-echo comparison shows.
**
**   authd-echo [--listen URL] --tls-cert F --tls-key F [--url-file F]
**              [--contexts N] [--max-msg-bytes N] [--plaintext]
**
** Many requests are in flight at once: a pool of rep contexts, each an aio
** state machine (receive -> send the same message back -> receive), as
** the DESIGN notes describe for the server. No thread of its own beyond
** nng's; the main thread waits for SIGINT/SIGTERM.
**
** Known limit (nng 1.5.2, fixed in 1.6, PR #1519): a peer that disconnects
** during the TLS/SP negotiation can make a rep0 listener stop accepting.
** authd avoids it with its own accept loop; for a benchmark baseline that
** is started, measured and stopped by one script, the plain socket is fine.
**
** --engine authd answers from authd's own transport instead (src/server.c,
** epoll + OpenSSL, same wire format, echo mode): the ceiling of the
** transport authd actually runs, the fairer baseline for its Verify.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "server.h"

#define DEFAULT_LISTEN   "tls+tcp://127.0.0.1:0"
#define DEFAULT_CONTEXTS 1024
#define DEFAULT_MAX_MSG  65536
#define MAX_PEM          (1024 * 1024)

static const char usage[]
    = "usage: authd-echo [OPTIONS]\n"
      "\n"
      "Answers every nng req0 request with its own bytes, over TLS: the\n"
      "transport baseline authbench --workload echo measures against.\n"
      "\n"
      "  --listen URL         where to listen (default " DEFAULT_LISTEN ");\n"
      "                       port 0 picks a free port\n"
      "  --tls-cert FILE      server certificate chain (PEM), required for TLS\n"
      "  --tls-key FILE       its private key (PEM), required for TLS\n"
      "  --url-file FILE      write the bound URL here once listening\n"
      "  --contexts N         rep contexts, i.e. requests handled at once\n"
      "                       (default 1024)\n"
      "  --max-msg-bytes N    largest request accepted (default 65536)\n"
      "  --plaintext          allow a tcp:// URL (no TLS)\n"
      "  --engine E           nng (default): an nng rep0 socket; authd: authd's\n"
      "                       own transport (epoll + OpenSSL) in echo mode\n"
      "  --io-threads N       --engine authd: event loops (default: CPUs)\n"
      "  -h, --help           this text\n"
      "\n"
      "Prints the bound URL on stdout, runs until SIGINT or SIGTERM.\n";

/* One rep context and its aio: receive, then send the message back. */
struct echo_ctx {
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
};

/*
** echo_cb runs on an nng thread when a receive or a send completes. A
** failed send still owns its message, which is freed; any failure other
** than the socket closing goes back to receiving.
*/
static void echo_cb(void *arg)
{
    struct echo_ctx *e = arg;
    int rv = nng_aio_result(e->aio);
    nng_msg *m;

    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
        if (e->sending && (m = nng_aio_get_msg(e->aio)) != NULL) {
            nng_aio_set_msg(e->aio, NULL);
            nng_msg_free(m);
        }
        return;
    }
    if (!e->sending && rv == 0) {
        /* The message came in: send it back, body unchanged. */
        e->sending = true;
        nng_ctx_send(e->ctx, e->aio);
        return;
    }
    if (e->sending && rv != 0 && (m = nng_aio_get_msg(e->aio)) != NULL) {
        nng_aio_set_msg(e->aio, NULL);
        nng_msg_free(m);
    }
    e->sending = false;
    nng_ctx_recv(e->ctx, e->aio);
}

/* read_file reads a whole PEM file into a NUL-terminated heap buffer. */
static char *read_file(const char *path)
{
    struct stat sb;
    char *buf = NULL;
    size_t len = 0;
    int fd;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "authd-echo: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &sb) != 0 || sb.st_size <= 0 || sb.st_size > MAX_PEM
        || (buf = malloc((size_t)sb.st_size + 1)) == NULL) {
        fprintf(stderr, "authd-echo: %s: not a readable file of 1 byte to 1 MiB\n", path);
        goto out;
    }
    while (len < (size_t)sb.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)sb.st_size - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "authd-echo: %s: read failed\n", path);
            free(buf);
            buf = NULL;
            goto out;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
out:
    close(fd);
    return buf;
}

/* write_url_file publishes the bound URL atomically (write + rename). */
static int write_url_file(const char *path, const char *url)
{
    char tmp[4096];
    FILE *f;
    int bad;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)
        || (f = fopen(tmp, "w")) == NULL) {
        return -1;
    }
    bad = fprintf(f, "%s\n", url) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/*
** bound_url rebuilds the URL with the port actually bound (port 0 in
** --listen picks one): scheme and host as given.
*/
static int bound_url(nng_listener l, const char *listen, char *out, size_t cap)
{
    nng_sockaddr sa;
    nng_url *u = NULL;
    unsigned port;
    int n;

    if (nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa) != 0 || nng_url_parse(&u, listen) != 0) {
        return -1;
    }
    if (sa.s_family == NNG_AF_INET) {
        port = ntohs(sa.s_in.sa_port);
    } else if (sa.s_family == NNG_AF_INET6) {
        port = ntohs(sa.s_in6.sa_port);
    } else {
        nng_url_free(u);
        return -1;
    }
    n = snprintf(out, cap, strchr(u->u_hostname, ':') != NULL ? "%s://[%s]:%u" : "%s://%s:%u",
        u->u_scheme, u->u_hostname, port);
    nng_url_free(u);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

static int usage_error(const char *what)
{
    fprintf(stderr, "authd-echo: %s\n%s", what, usage);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen = DEFAULT_LISTEN, *cert_file = NULL, *key_file = NULL;
    const char *url_file = NULL;
    long contexts = DEFAULT_CONTEXTS, max_msg = DEFAULT_MAX_MSG, io_threads = 0;
    bool engine_authd = false;
    bool plaintext = false, is_tls;
    nng_socket sock = NNG_SOCKET_INITIALIZER;
    nng_listener l;
    nng_tls_config *tls = NULL;
    struct echo_ctx *ec = NULL;
    char *cert = NULL, *key = NULL;
    char url[300];
    sigset_t sigs;
    int sig = 0;
    int status = 1;
    int rv;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--plaintext") == 0) {
            plaintext = true;
            continue;
        }
        if (v == NULL) {
            return usage_error("missing option or value");
        }
        i++;
        if (strcmp(a, "--listen") == 0 || strcmp(a, "--url") == 0) {
            listen = v;
        } else if (strcmp(a, "--tls-cert") == 0) {
            cert_file = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            key_file = v;
        } else if (strcmp(a, "--url-file") == 0) {
            url_file = v;
        } else if (strcmp(a, "--contexts") == 0) {
            contexts = strtol(v, &end, 10);
            if (*end != '\0' || contexts < 1 || contexts > 100000) {
                return usage_error("--contexts: 1 to 100000");
            }
        } else if (strcmp(a, "--engine") == 0) {
            if (strcmp(v, "authd") != 0 && strcmp(v, "nng") != 0) {
                return usage_error("--engine: nng or authd");
            }
            engine_authd = strcmp(v, "authd") == 0;
        } else if (strcmp(a, "--io-threads") == 0) {
            io_threads = strtol(v, &end, 10);
            if (*end != '\0' || io_threads < 0 || io_threads > 64) {
                return usage_error("--io-threads: 0 to 64");
            }
        } else if (strcmp(a, "--max-msg-bytes") == 0) {
            max_msg = strtol(v, &end, 10);
            if (*end != '\0' || max_msg < 64 || max_msg > 64L * 1024 * 1024) {
                return usage_error("--max-msg-bytes: 64 to 64 MiB");
            }
        } else {
            return usage_error("unknown option");
        }
    }
    is_tls = strncmp(listen, "tls+", 4) == 0;
    if (!is_tls && !plaintext) {
        return usage_error("a plaintext URL needs --plaintext");
    }
    if (is_tls && (cert_file == NULL || key_file == NULL)) {
        return usage_error("TLS needs --tls-cert and --tls-key");
    }

    /* Signals are taken by sigwait in this thread only. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (engine_authd) {
        authd_server_options so = {
            .url = listen,
            .tls_cert = cert_file,
            .tls_key = key_file,
            .allow_plaintext = plaintext,
            .max_msg = (size_t)max_msg,
            .max_inflight = (unsigned)contexts,
            .max_connections = 100000,
            .io_threads = (unsigned)io_threads,
            .echo = true,
        };
        authd_server *srv = NULL;
        char err[512];
        if (authd_server_start(&so, NULL, &srv, err, sizeof err) != AUTHD_OK) {
            fprintf(stderr, "authd-echo: %s\n", err);
            goto out;
        }
        snprintf(url, sizeof url, "%s", authd_server_url(srv));
        if (url_file != NULL && write_url_file(url_file, url) != 0) {
            fprintf(stderr, "authd-echo: cannot write --url-file %s\n", url_file);
            goto out;
        }
        printf("%s\n", url);
        fflush(stdout);
        while (sigwait(&sigs, &sig) != 0) { }
        authd_server_drain(srv, 1000);
        authd_server_close(srv);
        status = 0;
        goto out;
    }

    if (is_tls) {
        if ((cert = read_file(cert_file)) == NULL || (key = read_file(key_file)) == NULL) {
            goto out;
        }
        if ((rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_SERVER)) != 0
            || (rv = nng_tls_config_own_cert(tls, cert, key, NULL)) != 0) {
            fprintf(stderr, "authd-echo: TLS setup: %s\n", nng_strerror(rv));
            goto out;
        }
    }
    if ((rv = nng_rep0_open(&sock)) != 0 || (rv = nng_listener_create(&l, sock, listen)) != 0
        || (rv = nng_listener_set_size(l, NNG_OPT_RECVMAXSZ, (size_t)max_msg)) != 0
        || (tls != NULL && (rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls)) != 0)
        || (rv = nng_listener_start(l, 0)) != 0) {
        fprintf(stderr, "authd-echo: cannot listen on %s: %s\n", listen, nng_strerror(rv));
        goto out;
    }
    if ((ec = calloc((size_t)contexts, sizeof(*ec))) == NULL) {
        fprintf(stderr, "authd-echo: out of memory\n");
        goto out;
    }
    for (long i = 0; i < contexts; i++) {
        if ((rv = nng_aio_alloc(&ec[i].aio, echo_cb, &ec[i])) != 0
            || (rv = nng_ctx_open(&ec[i].ctx, sock)) != 0) {
            fprintf(stderr, "authd-echo: context setup: %s\n", nng_strerror(rv));
            goto out;
        }
        nng_ctx_recv(ec[i].ctx, ec[i].aio);
    }
    if (bound_url(l, listen, url, sizeof(url)) != 0) {
        fprintf(stderr, "authd-echo: cannot read the bound address\n");
        goto out;
    }
    if (url_file != NULL && write_url_file(url_file, url) != 0) {
        fprintf(stderr, "authd-echo: cannot write --url-file %s\n", url_file);
        goto out;
    }
    printf("%s\n", url);
    fflush(stdout);

    while (sigwait(&sigs, &sig) != 0) { }
    status = 0;
out:
    /*
    ** nng_close in nng 1.5.2 can rarely deadlock (nanomsg/nng #1543); a
    ** benchmark server has nothing to flush, so leave without it.
    */
    fflush(stdout);
    if (tls != NULL) {
        nng_tls_config_free(tls);
    }
    free(cert);
    free(key);
    _exit(status);
}
