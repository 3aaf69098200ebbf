/*
** client.h — the authd C client library (libauthd-client).
**
** One authd_client holds one connection to an authd server over
** tls+tcp:// (OpenSSL) and is safe to share between threads: many calls,
** from any number of threads, are in flight over the one connection at
** once (pipelined, matched to their replies by request id). The library
** speaks the wire format of nng's req0 protocol itself, so it works with
** any nng (or mangos) rep0 server, but does not use nng.
**
** Each client has one I/O thread of its own: it connects and reconnects,
** reads replies, expires deadlines and runs the asynchronous callbacks.
** Requests are written by the calling thread when the connection is idle,
** and are otherwise batched with the requests already queued.
**
** The typed per-RPC wrappers (authd_client_verify, authd_client_login,
** ...) and the method table are generated from the proto files into
** <authd/client_rpc.h>; this header holds the connection, the status type
** and the generic call they use.
**
** Calls are synchronous (authd_client_call and the typed wrappers) or
** asynchronous (authd_client_call_async and the generated
** authd_client_<rpc>_async wrappers: the outcome goes to a callback that
** runs on the client's I/O thread; see below for ownership and threading).
**
** Conventions (as in nng): functions return 0 on success or a status code;
** out-parameters are written only on success; every prototype says who
** owns what it hands back.
*/
#ifndef AUTHD_CLIENT_H
#define AUTHD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define AUTHD_CLIENT_WUR __attribute__((warn_unused_result))
#else
#define AUTHD_CLIENT_WUR
#endif

/*
** Status codes: gRPC's canonical codes, same names and numbers as
** authd.v1.Code in envelope.proto (AUTHD__V1__CODE__* in the generated
** code).
*/
#define AUTHD_OK                  0
#define AUTHD_CANCELLED           1
#define AUTHD_UNKNOWN             2
#define AUTHD_INVALID_ARGUMENT    3
#define AUTHD_DEADLINE_EXCEEDED   4
#define AUTHD_NOT_FOUND           5
#define AUTHD_ALREADY_EXISTS      6
#define AUTHD_PERMISSION_DENIED   7
#define AUTHD_RESOURCE_EXHAUSTED  8
#define AUTHD_FAILED_PRECONDITION 9
#define AUTHD_ABORTED             10
#define AUTHD_OUT_OF_RANGE        11
#define AUTHD_UNIMPLEMENTED       12
#define AUTHD_INTERNAL            13
#define AUTHD_UNAVAILABLE         14
#define AUTHD_DATA_LOSS           15
#define AUTHD_UNAUTHENTICATED     16

/*
** Reasons set by the client library itself (the server's reasons are
** listed in the README):
**   "TRANSPORT"  the call did not complete over the wire: connection
**                refused, closed, lost or not made in time (UNAVAILABLE),
**                TLS failure (UNAVAILABLE), no reply in time
**                (DEADLINE_EXCEEDED), a reply that does not parse or does
**                not echo our request id (INTERNAL).
**   "CONFIG"     the options passed to authd_client_open are unusable
**                (INVALID_ARGUMENT): bad URL, unreadable CA/cert/key file.
**   "CLIENT"     a bad argument to a call or a local failure such as
**                out of memory (INVALID_ARGUMENT, RESOURCE_EXHAUSTED), or
**                the client was closed (CANCELLED).
*/
#define AUTHD_REASON_TRANSPORT "TRANSPORT"
#define AUTHD_REASON_CONFIG    "CONFIG"
#define AUTHD_REASON_CLIENT    "CLIENT"

/*
** authd_status is the outcome of one call. code is AUTHD_OK or one of the
** codes above; message is safe to show to a user (control characters are
** replaced, the text is truncated to fit); reason is the server's
** UPPER_SNAKE_CASE reason or one of the AUTHD_REASON_* above; request_id
** is the id the call was sent with (0 if it never got that far).
** Plain data owned by the caller: nothing to free.
*/
typedef struct authd_status {
    int code;
    char message[256];
    char reason[64];
    uint64_t request_id;
} authd_status;

/*
** authd_client_options configures authd_client_open. Zero-initialize it
** and set what you need; strings are copied or read during open and need
** not outlive the call.
**   url             required: "tls+tcp://host:port" (also tls+tcp4/6), or
**                   "tcp://host:port" only when allow_plaintext is true.
**   ca_file         PEM CA bundle the server certificate must chain to;
**                   required for TLS (the server is always verified).
**   cert_file       optional PEM client certificate for mutual TLS; needs
**   key_file        key_file (an unencrypted PEM private key) and vice versa.
**   server_name     what the server certificate must match. Default: the
**                   host part of url when it is a DNS name; "localhost"
**                   when it is a loopback address (127.0.0.0/8, ::1: what
**                   dev certificates carry); the address itself for any
**                   other IP address. A DNS name is matched against the
**                   certificate's DNS names (subjectAltName, else the
**                   common name; "*." wildcards only as a whole first
**                   label) and sent as SNI; an IP address, given here or
**                   taken from url, is matched against the certificate's
**                   IP addresses only, and no SNI is sent.
**   timeout_ms      deadline of each call, from its start to its reply
**                   (waiting for a connection included); also the limit
**                   for each connection attempt (TCP connect, TLS
**                   handshake, SP header exchange); 0 = 5000.
**   max_reply_size  largest reply frame accepted (4-byte request id plus
**                   the reply envelope); 0 = 1 MiB. A larger frame drops
**                   the connection before it is read (the calls in flight
**                   on it fail UNAVAILABLE).
**   allow_plaintext permit a tcp:// URL (no TLS). For tests only.
**   idle_timeout_ms close the connection after this long with no call in
**                   flight (0 = 60000; negative = never). The next call
**                   dials again (it waits for the new connection within
**                   its own deadline), so callers do not notice. authd
**                   closes connections idle for --idle-timeout-ms (default
**                   120000); keep this value well below the server's, so
**                   it is the client that closes an idle connection:
**                   otherwise a call sent just as the server closes it
**                   fails UNAVAILABLE (the request may have been lost and
**                   is never resent). A connection the server closed
**                   while no call was in flight is redialed in the
**                   background as before, and that one is closed after
**                   idle_timeout_ms in turn.
*/
typedef struct authd_client_options {
    const char *url;
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *server_name;
    int timeout_ms;
    size_t max_reply_size;
    bool allow_plaintext;
    int idle_timeout_ms;
} authd_client_options;

#define AUTHD_CLIENT_DEFAULT_TIMEOUT_MS      5000
#define AUTHD_CLIENT_DEFAULT_IDLE_TIMEOUT_MS 60000
#define AUTHD_CLIENT_DEFAULT_MAX_REPLY       (1024u * 1024u)

/* An open connection to authd; opaque. */
typedef struct authd_client authd_client;

/*
** authd_client_method describes one RPC: its gRPC full name
** ("/authd.v1.Auth/Verify") and the descriptors of its request and
** response messages. The generated table authd_client_methods[] in
** <authd/client_rpc.h> lists every RPC; all of it is static data.
*/
typedef struct authd_client_method {
    const char *name;
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
} authd_client_method;

/*
** authd_code_str returns the canonical name of a status code
** ("UNAUTHENTICATED"), or "UNKNOWN" for a number that is not a code.
** The string is static: do not free it.
*/
const char *authd_code_str(int code);

/*
** authd_client_open connects to the server named by o->url and returns
** the client in *out. The dial is synchronous, bounded by timeout_ms, so
** an unusable option or CA file (INVALID_ARGUMENT/CONFIG), a refused or
** unanswered connection, a server certificate that does not verify or a
** peer that is not an SP rep0 server (UNAVAILABLE/TRANSPORT) fail here
** with a clear status; once connected, the client redials on its own (in
** the background, backing off from 100 ms to 2 s) if the connection drops
** later, and at the next call after it closed an idle connection itself
** (see idle_timeout_ms).
**
** Returns 0 and sets *out on success; the caller owns *out and releases it
** with authd_client_close. On failure returns the status code, fills *st
** (if st is not NULL) and leaves *out untouched.
*/
int authd_client_open(
    const authd_client_options *o, authd_client **out, authd_status *st) AUTHD_CLIENT_WUR;

/*
** authd_client_close closes the connection and frees the client. Call it
** only once no synchronous call on c is still running and no other thread
** starts calls on c; asynchronous calls still in flight are completed
** (their callbacks run, CANCELLED) before it returns, then the I/O thread
** is joined. It does not wait for the server. Never call it from an async
** callback of c (the process aborts: the I/O thread cannot wait for
** itself). Accepts NULL.
*/
void authd_client_close(authd_client *c);

/*
** authd_client_call sends one request and waits for its reply. method is
** the gRPC full name ("/authd.v1.Auth/Verify"), req the request message
** (borrowed: not modified, not freed), resp_desc the descriptor of the
** response message expected. Prefer the typed wrappers of client_rpc.h.
**
** Returns st->code: 0 (AUTHD_OK) or a status code. st may be NULL; when
** given, it is always filled. On AUTHD_OK, *resp is the unpacked response,
** owned by the caller, who frees it with
** protobuf_c_message_free_unpacked(*resp, NULL) (or the message's
** generated ..._free_unpacked). On failure *resp is untouched.
**
** The serialized request (which may hold a password) is wiped from every
** buffer this library owns once it is sent, and the library's copy of a
** reply (which may hold a token) once it is unpacked. OpenSSL's own record
** buffers are not ours to wipe.
**
** Requests are sent at most once, never resent: a call fails with
** UNAVAILABLE if the connection drops before its reply arrives, and with
** DEADLINE_EXCEEDED if no reply comes in time. The server may or may not
** have acted on either. While the client is reconnecting, a call waits for
** the connection up to its deadline (its request is sent once connected),
** then fails with UNAVAILABLE. A reply that comes after its call has
** failed is dropped.
**
** Must not be called from an async callback of the same client (it would
** wait for the thread it runs on): that fails with INVALID_ARGUMENT/CLIENT.
*/
int authd_client_call(authd_client *c, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
    authd_status *st) AUTHD_CLIENT_WUR;

/*
** Asynchronous calls.
**
** authd_client_call_async starts the same call as authd_client_call and
** returns at once; the outcome is handed to cb. The generated wrappers
** authd_client_<rpc>_async in client_rpc.h fix method and resp_desc.
**
** Return value: 0 when the call is under way; cb will then run exactly
** once. Otherwise a status code (INVALID_ARGUMENT for a bad argument or a
** malformed req, RESOURCE_EXHAUSTED when out of memory, CANCELLED once
** authd_client_close has begun) and cb never runs.
**
** req is borrowed only for the duration of authd_client_call_async: it is
** serialized before the function returns, so the caller may reuse or free
** it at once (and may do so from the callback).
**
** The callback, authd_client_cb:
**   - runs on the client's I/O thread, never on the caller's thread during
**     authd_client_call_async, and possibly before that function has
**     returned;
**   - gets code (== st->code), st (filled exactly as by
**     authd_client_call; valid only until cb returns: copy what you keep)
**     and, when code is AUTHD_OK, resp: the unpacked response, owned by
**     the callback, which must free it with
**     protobuf_c_message_free_unpacked(resp, NULL) (or keep it and free it
**     later). resp is NULL whenever code is not AUTHD_OK;
**   - may start further asynchronous calls on any client (this is how a
**     closed loop keeps N calls in flight) but must not block: no
**     synchronous authd_client_call, no authd_client_close, no long
**     computation. It delays the other replies on that connection. Calls
**     started from callbacks on the same client are queued and sent
**     together once the callbacks of that batch of replies have run;
**   - runs with no lock of this library held.
**
** Delivery and deadlines are those of authd_client_call: at most once,
** timeout_ms from the start of the call to the reply. Each call in flight
** takes a small record from a pool kept by the client and reused (the pool
** grows to the largest number of calls ever in flight at once); requests
** up to about 1.5 KiB are serialized on the stack, and reply envelopes in
** the form authd writes are read in place, so a steady stream of async
** calls allocates memory only for the response messages handed to cb.
**
** Closing: calls still in flight when authd_client_close is called are
** completed by it: their callbacks run (with CANCELLED/CLIENT, or the
** outcome if the reply raced the close) before close returns. Calls
** started from those callbacks fail with CANCELLED and never call back.
** Do not start calls from other threads while close runs.
*/
typedef void (*authd_client_cb)(
    void *arg, int code, const authd_status *st, ProtobufCMessage *resp);

int authd_client_call_async(authd_client *c, const char *method, const ProtobufCMessage *req,
    const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb, void *arg) AUTHD_CLIENT_WUR;

/*
** authd_client_call_raw_async sends len bytes of req as one message as they
** are, and hands the reply message's bytes to cb: no request envelope, no
** request id, no reply parsing. authd itself answers only request
** envelopes; this is for transport baselines (an echo server, see
** authd-echo and authbench) and for tests that build their own frames.
**
** Same contract as authd_client_call_async (return value, exactly-once
** callback on the I/O thread, deadlines, closing), except that the
** callback gets the reply bytes: reply and len are valid only until cb
** returns (the bytes are then wiped); reply is NULL and len 0
** unless code is AUTHD_OK. st->request_id is 0. req is copied before the
** function returns.
*/
typedef void (*authd_client_raw_cb)(
    void *arg, int code, const authd_status *st, const void *reply, size_t len);

int authd_client_call_raw_async(authd_client *c, const void *req, size_t len,
    authd_client_raw_cb cb, void *arg) AUTHD_CLIENT_WUR;

/*
** authd_client_call_as and authd_client_call_as_async are authd_client_call
** and authd_client_call_async for a protected RPC (Me, LogoutAll,
** ChangePassword, ...): authorization, the end user's own credential
** ("Bearer <access token>", or the bare token), travels in the request
** envelope's authorization field, never in the request message. It is per
** call, as gRPC's per-call metadata is: one client (one connection) serves
** every user of the service that holds it. NULL or "" sends none. The
** string is borrowed only during the call and wiped from the frame with
** it. The generated wrappers have the same form: authd_client_me_as(c,
** authorization, req, &resp, &st).
*/
int authd_client_call_as(authd_client *c, const char *authorization, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
    ProtobufCMessage **resp, authd_status *st) AUTHD_CLIENT_WUR;
int authd_client_call_as_async(authd_client *c, const char *authorization, const char *method,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc, authd_client_cb cb,
    void *arg) AUTHD_CLIENT_WUR;

#ifdef __cplusplus
}
#endif

#endif /* AUTHD_CLIENT_H */
