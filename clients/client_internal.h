/*
** client_internal.h — what the three parts of libauthd-client share, private
** to the library (not installed):
**   client_tls.c   TLS: the OpenSSL context from the options, the socket
**                  BIO, the handshake, reads and writes on the SSL object;
**   client_conn.c  the connection: its state machine (dial, SP header
**                  exchange, up, down, redial with back-off), the output and
**                  input buffers, and the I/O thread;
**   client_call.c  calls: status texts, the call pool, the id table and the
**                  deadline list, envelopes, completing calls, open/close
**                  and the public API.
** Who calls whom: call opens the client (cl_make_tls, cl_dial_sync,
** cl_io_main) and hands frames to conn (cl_buf_append, cl_flush); conn
** drives tls (handshake, reads, writes) and hands completed calls back to
** call (cl_table_find, cl_run_batch, cl_expire); every part reports with
** cl_set_status. The rules for locks are below; each prototype says which
** lock its caller holds.
** Every name here is hidden in the shared library (visibility) and carries
** the cl_ prefix, so a program that links the static library meets no
** clash with its own names.
**
** Wire (nng req0/rep0, so any nng rep0 server works): after the TCP connect
** and the TLS handshake each side sends the 8-byte SP header
** 00 'S' 'P' 00 <proto hi> <proto lo> 00 00 (we are req0, 0x0030; the peer
** must be rep0, 0x0031). Then every message is a frame: an 8-byte
** big-endian length N and N bytes, the first 4 of which are the request id
** with its top bit set; a reply carries the id of its request first.
**
** Threads and locks. Each client has one I/O thread, blocked in epoll_wait
** on the socket and an eventfd (close and write failures wake it). It dials
** and redials, reads replies, expires deadlines and runs every callback,
** with no lock held. Two mutexes:
**   ssl_mtx  the socket and the SSL object: whoever reads or writes them
**            holds it (the I/O thread to read or dial, a writer to write),
**            so OpenSSL never sees two threads on one SSL.
**   mtx      the rest of the shared state: calls in flight (an id table
**            and a list in deadline order), the output buffers, the
**            connection state. Never held across a system call other than
**            epoll_ctl; never taken before ssl_mtx (order: ssl_mtx, mtx).
**
** Sending: a call serializes its frame with no lock held, then under mtx
** registers itself and appends the frame to c->out. One thread at a time is
** the writer (c->writer): it moves c->out to c->wbuf and writes that with as
** few SSL_write calls as possible, while other threads keep appending to
** c->out and return at once; the writer loops until both are empty. A call
** from another thread becomes the writer itself when there is none (the
** lowest latency: no hand-off to the I/O thread); a call made from a
** callback on the I/O thread only appends, and the I/O thread flushes once
** after its batch of callbacks, so a closed loop costs one write per batch
** of replies. A write that would block arms EPOLLOUT; the I/O thread
** finishes it.
**
** Receiving: the I/O thread reads as much as there is (OpenSSL read-ahead,
** a large buffer), matches every complete frame to its call by id (replies
** with an unknown id, e.g. of a call that already timed out, are dropped),
** then runs the callbacks of that batch; raw replies are handed out in place.
**
** Deadlines: every call of a client has the same timeout, so deadline order
** is the order in which calls start: the calls in flight sit in one list in
** that order (O(1) to add, to remove and to find the earliest). The I/O
** thread sleeps until the earliest deadline, or for one timeout when there
** is none: a call started meanwhile cannot expire before it wakes up, so
** starting a call never has to wake it.
**
** Delivery is at most once: a call whose frame was handed to a connection
** fails UNAVAILABLE if that connection drops, and is never sent again. A
** call started while there is no connection waits (its frame parked in the
** call) for the next one, up to its deadline, then fails UNAVAILABLE.
*/
#ifndef AUTHD_CLIENT_INTERNAL_H
#define AUTHD_CLIENT_INTERNAL_H

#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "authd/client.h"
#include "sp_wire.h"

#pragma GCC visibility push(hidden)

#define MAX_PEM_FILE     (1024 * 1024)
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000
#define NS_PER_MS        1000000ull
#define FRAME_HDR_LEN    12 /* length (8) + request id (4) */
#define RBUF_FREE_MIN    (64 * 1024) /* room ensured before each read */
#define TLS_READ_BUF     (64 * 1024) /* OpenSSL read-ahead buffer: many records per recv */
#define TABLE_MIN        256 /* id table buckets */
#define STACK_FRAME      1536 /* requests up to about this size are built on the stack */
#define WHY_LEN          256 /* texts saying why a connection failed */

/* ---- data -------------------------------------------------------------------- */

/* A byte buffer: [off, len) holds data not yet consumed. */
struct buf {
    uint8_t *p;
    size_t off;
    size_t len;
    size_t cap;
};

enum outcome { OUT_REPLY, OUT_DEADLINE, OUT_LOST, OUT_NO_CONN, OUT_CANCELLED };

/*
** call is one call in flight. It sits in c->table (by id) and on c->head's
** list (by deadline) from start to completion, then on the I/O thread's
** batch of completed calls, then back on c->free_calls for reuse.
*/
struct call {
    struct call *prev, *next; /* deadline list; next: free list */
    struct call *hnext; /* id table chain */
    struct call *dnext; /* batch of completed calls */
    uint32_t sp_id; /* request id on the wire, without the top bit */
    bool parked; /* not sent: waits for a connection; frame below */
    uint8_t *frame; /* parked only: the whole frame (heap, wiped) */
    size_t frame_len;
    uint64_t deadline; /* CLOCK_MONOTONIC ns */
    uint64_t req_id; /* envelope request id; 0 for a raw call */
    const ProtobufCMessageDescriptor *resp_desc; /* NULL for a raw call */
    authd_client_cb cb;
    authd_client_raw_cb raw_cb;
    void *arg;
    enum outcome outcome; /* set when completed */
    const uint8_t *reply; /* OUT_REPLY: the reply in c->rbuf */
    size_t reply_len;
};

enum conn_state { CS_IDLE, CS_DIALING, CS_UP };

enum dial_phase { DP_CONNECTING, DP_TLS, DP_SP_SEND, DP_SP_RECV };

/* A batch of completed calls and the texts their statuses need. */
struct batch {
    struct call *head, *tail;
    char lost_why[WHY_LEN];
    char no_conn_why[WHY_LEN];
};

struct authd_client {
    /* Fixed at open. */
    char url[256];
    char host[256];
    char port[8];
    int family; /* AF_UNSPEC, AF_INET, AF_INET6 */
    bool tls;
    bool has_cert;
    char server_name[256];
    bool name_is_ip; /* check the certificate's IP addresses, send no SNI */
    int timeout_ms;
    uint64_t timeout_ns;
    uint64_t idle_ns; /* close an idle connection after this; 0 = never */
    size_t max_reply;
    SSL_CTX *ctx;
    BIO_METHOD *bio_meth;
    int ep; /* epoll */
    int evfd; /* eventfd: wakes the I/O thread */
    pthread_t thread;
    _Atomic uint64_t next_req_id;

    /* Guarded by ssl_mtx (and written only by the thread dialing). */
    pthread_mutex_t ssl_mtx;
    int fd;
    SSL *ssl;
    enum dial_phase phase; /* of the dial in progress */
    struct addrinfo *ai, *ai_next; /* addresses of the dial in progress */
    int dial_errno; /* of the last address that failed */
    uint64_t dial_deadline;
    uint8_t hdr_out[SP_HDR_LEN];
    uint8_t hdr_in[SP_HDR_LEN];
    size_t hdr_out_len, hdr_in_len;
    char io_err[160]; /* why the last read or write failed */
    const char *io_tls_err; /* OpenSSL's reason for it, if any (static) */
    bool io_alert; /* it was an alert from the server */

    /* Guarded by mtx. */
    pthread_mutex_t mtx;
    enum conn_state state;
    bool closing; /* authd_client_close has begun */
    bool writer; /* a thread is flushing (see the top of the file) */
    bool wblocked; /* the last write would block: wait for the I/O thread */
    bool broken; /* a writer saw the connection fail */
    bool ep_added; /* fd is in the epoll set */
    uint32_t ep_events;
    struct buf out; /* frames appended, not yet taken by the writer */
    struct buf wbuf; /* frames the writer is writing */
    struct call *head, *tail; /* calls in flight, in deadline order */
    size_t npending;
    struct call **table; /* id table, table_mask + 1 buckets */
    size_t table_mask;
    struct call *free_calls;
    uint32_t next_sp_id;
    uint64_t redial_at;
    bool dormant; /* idle and unconnected: the next call dials (redial_at = never) */
    uint64_t last_active; /* a call started or replies came (CS_UP) */
    int backoff_ms;
    char last_err[WHY_LEN]; /* why the client is not connected */

    /* I/O thread only. */
    struct buf rbuf; /* bytes read, [off, len) not yet parsed */
    size_t rneed; /* size the partial frame at rbuf.off needs */
    bool read_again; /* stopped reading with data left: no epoll wait */
    bool read_wants_write; /* TLS must write before it can read on */
};

/* The client whose I/O thread this is, if any (client_conn.c). */
extern _Thread_local authd_client *cl_io_self;

/* Outcomes of a dial step (client_conn.c, client_tls.c). */
enum { DIAL_WAIT, DIAL_UP, DIAL_FAIL };

/* ---- client_tls.c (each definition's comment says more) -------------------------- */

/* At open, before the I/O thread exists. cl_make_tls makes c->ctx and
 * c->bio_meth, owned by c and freed by client_free. On failure they fill
 * st and return its code. cl_tls_bio_methods fills m with the socket BIO's
 * callbacks; false when OpenSSL refuses one. */
int cl_pick_server_name(const authd_client_options *o, authd_client *c, authd_status *st);
int cl_make_tls(const authd_client_options *o, authd_client *c, authd_status *st);
bool cl_tls_bio_methods(BIO_METHOD *m);

/* The connection's TLS, ssl_mtx held. conn_write / conn_read return the
 * bytes moved, or -1 with *want set (EPOLLIN/EPOLLOUT: would block) or
 * with *want 0 and c->io_err saying why the connection failed. */
void cl_tls_err_reset(void);
ssize_t cl_io_fail(authd_client *c, int r, uint32_t *want);
ssize_t cl_conn_write(authd_client *c, const uint8_t *p, size_t n, uint32_t *want);
ssize_t cl_conn_read(authd_client *c, uint8_t *p, size_t n, uint32_t *want);
void cl_conn_close(authd_client *c);
int cl_tls_begin(authd_client *c, char *err, size_t cap); /* DIAL_* */
void cl_tls_fail_text(authd_client *c, char *err, size_t cap);

/* ---- client_conn.c ---------------------------------------------------------------- */

/* Buffers: append copies n bytes (0, or -1 when out of memory); free
 * wipes the data and frees the memory (the struct stays, zeroed). */
int cl_buf_append(struct buf *b, const void *p, size_t n);
void cl_buf_free(struct buf *b);
/* cl_wake wakes the I/O thread (any thread, any lock). cl_flush writes
 * what is queued, as the writer (called with no lock held, c->writer set
 * by the caller under mtx). */
void cl_wake(authd_client *c);
void cl_flush(authd_client *c);
/* cl_io_main is the I/O thread (pthread_create's start routine, arg is
 * the client); cl_dial_sync makes open's first connection before it
 * starts. */
void *cl_io_main(void *arg);
int cl_dial_sync(authd_client *c, authd_status *st);

/* ---- client_call.c ---------------------------------------------------------------- */

/* cl_set_status fills st (keeping its request id) and returns code. */
int cl_set_status(authd_status *st, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Calls in flight, mtx held: find by wire id, take off the deadline list,
 * put on a batch of completed calls, wipe and free a parked frame. */
void cl_call_free_frame(struct call *k);
struct call *cl_table_find(authd_client *c, uint32_t id);
void cl_pending_remove(authd_client *c, struct call *k);
void cl_batch_add(struct batch *b, struct call *k, enum outcome o);
/* On the I/O thread: cl_expire moves the calls whose deadline passed by
 * now onto b (mtx held); cl_run_batch runs the callbacks of a batch and
 * puts its calls back in the pool (no lock held). */
void cl_run_batch(authd_client *c, struct batch *b);
void cl_expire(authd_client *c, uint64_t now, struct batch *b);

#pragma GCC visibility pop

#endif
