/*
 * harness.h — the integration harness: the real authd binary on an
 * ephemeral loopback port, real TLS, a real LMDB store in a temp directory.
 *
 * A test starts authd with it_start(), talks to it through the C client
 * library (it_client and the it_register/login/verify/logout helpers), a
 * raw nng req0 TLS socket (it_raw_*) or authctl (it_run), and stops it
 * with it_finish(), which asserts a clean exit (SIGTERM -> exit 0).
 *
 * Failure handling: every helper asserts (cmocka) and so fails the test at
 * the caller. A server still running when it_teardown() runs means its
 * test failed: the tail of its log is printed, it is killed and its temp
 * directory removed. Set IT_KEEP=1 to keep temp directories.
 *
 * Everything is bounded: start, stop and child processes have deadlines;
 * waiting is polling with a deadline, never a bare sleep.
 */
#ifndef AUTHD_IT_HARNESS_H
#define AUTHD_IT_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/types.h>

#include <nng/nng.h>

#include "authd/client_rpc.h"
#include "authd/v1/envelope.pb-c.h"

/* Deadlines, generous enough for ASan+UBSan builds on 2 busy cores. */
#define IT_START_DEADLINE_MS 15000
#define IT_STOP_DEADLINE_MS  15000
#define IT_RUN_DEADLINE_MS   15000
#define IT_CALL_TIMEOUT_MS   10000

#define IT_CA          IT_TLS_DIR "/ca.crt"
#define IT_CLIENT_CERT IT_TLS_DIR "/client.crt"
#define IT_CLIENT_KEY  IT_TLS_DIR "/client.key"
#define IT_OTHER_CA    IT_TLS_OTHER_DIR "/ca.crt"

#define IT_KEY_BYTES 64 /* what the harness writes by default */
#define IT_MAX_EXTRA 16

/* it_opts: how a server is set up. Zero-initialize, then set. */
typedef struct it_opts {
    const char *extra[IT_MAX_EXTRA + 1]; /* extra authd flags, NULL-terminated */
    int key_len; /* signing key bytes the harness writes: 0 = 64, -1 = write none */
    unsigned key_mode; /* mode of that file: 0 = 0600 */
    bool cheap_argon2_off; /* true: do not add --argon2-ops 1 --argon2-mem-kib 64
                              --insecure-weak-params */
    const char *listen; /* NULL: tls+tcp://127.0.0.1:0 */
} it_opts;

typedef struct it_server {
    char dir[256]; /* temp root, removed by it_free */
    char data_dir[320];
    char key_path[320];
    char url_file[320];
    char log_path[320]; /* authd's stderr (JSON lines) of the latest start */
    char url[256]; /* bound URL of the running server */
    uint8_t key[1024]; /* the signing key the harness wrote */
    size_t key_len;
    char kid[17]; /* first 8 bytes of SHA-256(key), hex */
    pid_t pid; /* > 0 while running */
    int starts;
    it_opts opts;
} it_server;

/* ---- server life cycle ---------------------------------------------- */

/* it_new makes a temp directory and (unless opts say otherwise) writes a
 * random signing key into it. o may be NULL. Freed by it_free. */
it_server *it_new(const it_opts *o);

/* it_launch starts authd on s's directory (again after it_stop: same data
 * dir and key, a fresh port and log file) and waits for its url file. */
void it_launch(it_server *s);

/* it_stop sends SIGTERM and asserts exit status 0 within the deadline. */
void it_stop(it_server *s);

/* it_free kills s if still running (printing its log tail: the test
 * failed) and removes its temp directory. Accepts NULL. */
void it_free(it_server *s);

/* it_start = it_new + it_launch; it_finish = it_stop + it_free. */
it_server *it_start(const it_opts *o);
void it_finish(it_server *s);

/* it_teardown: cmocka teardown for every test: frees servers left over. */
int it_teardown(void **state);

/* it_argv fills argv (cap entries, NULL-terminated) with authd's argv for
 * s: binary, listen URL, TLS files, data dir, key, url file, cheap argon2
 * and s->opts.extra. listen (else s->opts.listen, else an ephemeral
 * tls+tcp loopback port) is the URL to listen on. */
void it_argv(const it_server *s, const char *listen, const char **argv, size_t cap);

/* it_print_log_tail prints the last lines of s's log to stderr. */
void it_print_log_tail(const it_server *s, int lines);

/* ---- child processes (authd run to completion, authctl) ---------------- */

typedef struct it_proc {
    int status; /* exit code, or 128 + signal */
    char *out; /* stdout, NUL-terminated (malloc'ed) */
    char *err; /* stderr, NUL-terminated (malloc'ed) */
} it_proc;

/* it_run runs argv[0] with the environment minus every AUTHD_* variable,
 * plus env_extra ("NAME=value", NULL-terminated; may be NULL), stdin_data
 * on stdin (NULL: /dev/null), and waits up to IT_RUN_DEADLINE_MS (killing
 * it and failing the test after). Free with it_proc_free. */
void it_run(
    const char *const *argv, const char *const *env_extra, const char *stdin_data, it_proc *p);
void it_proc_free(it_proc *p);

/* ---- client library ----------------------------------------------------- */

/* it_client opens a client to s trusting the dev CA; asserts success. */
authd_client *it_client(const it_server *s);

/* it_client_try opens with explicit options; returns the status code. */
int it_client_try(const authd_client_options *o, authd_client **c, authd_status *st);

/* The per-RPC helpers return st->code; out may be NULL (else the caller
 * frees *out with the message's free_unpacked). */
int it_register(authd_client *c, const char *username, const char *email, const char *password,
    authd_status *st, Authd__V1__RegisterResponse **out);
int it_login(authd_client *c, const char *login, const char *password, authd_status *st,
    Authd__V1__LoginResponse **out);
int it_verify(
    authd_client *c, const char *token, authd_status *st, Authd__V1__VerifyResponse **out);
int it_logout(authd_client *c, const char *token, authd_status *st);

/* it_login_token logs in (asserting OK) and copies the token into tok. */
void it_login_token(authd_client *c, const char *login, const char *password, char *tok, size_t cap,
    Authd__V1__LoginResponse **out);

/* IT_EXPECT asserts a status: code and (unless NULL) reason; on mismatch
 * prints what came back. */
#define IT_EXPECT(st, code, reason) it_expect_at((st), (code), (reason), __FILE__, __LINE__)
void it_expect_at(const authd_status *st, int code, const char *reason, const char *file, int line);

/* ---- raw SP frames over TLS ------------------------------------------ */

/*
 * it_raw is a hand-driven req0 peer on an nng TLS *stream*: the harness
 * itself exchanges the SP headers and frames each message (8-byte length,
 * 4-byte request id, body). Unlike an nng req0 socket it never redials or
 * resends, so a connection the server drops stays dropped and is seen as
 * such.
 */
typedef struct it_raw {
    nng_stream_dialer *dialer;
    nng_stream *conn;
    uint32_t next_id; /* req0 request id of the next message */
    uint32_t last_id; /* of the last one sent: the reply must echo it */
} it_raw;

/* it_raw_open connects to s (dev CA) and exchanges SP headers; asserts. */
void it_raw_open(it_raw *r, const it_server *s);
void it_raw_close(it_raw *r);

/* it_raw_send sends len bytes as one req0 message. Returns 0 or the nng
 * error (the server may drop the connection while we write). */
int it_raw_send(it_raw *r, const void *msg, size_t len);

/* it_raw_recv waits up to timeout_ms for one reply message; returns 0 and
 * its body in *out (malloc'ed, *len bytes), or the nng error: NNG_ETIMEDOUT
 * if nothing came, another (NNG_ECONNSHUT, NNG_ECONNRESET, ...) when the
 * server closed the connection. */
int it_raw_recv(it_raw *r, int timeout_ms, uint8_t **out, size_t *len);

/* it_raw_call = it_raw_send + it_raw_recv. */
int it_raw_call(
    it_raw *r, const void *msg, size_t len, int timeout_ms, uint8_t **out, size_t *olen);

/* it_raw_rpc sends a RequestEnvelope(method, id, body) and returns its
 * decoded reply (free with authd__v1__reply_envelope__free_unpacked);
 * asserts a reply arrives and parses. */
Authd__V1__ReplyEnvelope *it_raw_rpc(
    it_raw *r, const char *method, uint64_t id, const void *body, size_t body_len);
/* it_raw_rpc_as is it_raw_rpc with the envelope's authorization field set
 * (NULL: absent), for protected RPCs. */
Authd__V1__ReplyEnvelope *it_raw_rpc_as(it_raw *r, const char *method, uint64_t id,
    const char *authorization, const void *body, size_t body_len);

/* ---- tokens ------------------------------------------------------------ */

/* it_b64url encodes n bytes as unpadded base64url into out. */
void it_b64url(const void *bin, size_t n, char *out, size_t cap);

/* it_b64url_decode decodes a segment; returns its length, asserts. */
size_t it_b64url_decode(const char *s, size_t slen, uint8_t *out, size_t cap);

/* it_forge builds b64(header).b64(claims).b64(HMAC-SHA256(key, signing
 * input)) into out. */
void it_forge(const void *key, size_t key_len, const char *header_json, const char *claims_json,
    char *out, size_t cap);

/* it_kid computes the server's kid for a key. */
void it_kid(const uint8_t *key, size_t len, char out[17]);

/* it_fingerprint: first 8 bytes of SHA-256(token) as hex (as authd logs). */
void it_fingerprint(const char *token, char out[17]);

/* ---- files and time -------------------------------------------------- */

/* it_read_file returns the file's bytes + NUL (malloc'ed), or NULL. */
char *it_read_file(const char *path, size_t *len);
int64_t it_now(void);
uint64_t it_mono_ms(void);
void it_nap_ms(int ms); /* only inside deadline-bounded polling loops */

/* it_hashing_now: a thread of authd with a higher nice than its main
 * thread (the hash workers run at +10) is running, i.e. an argon2 job is in
 * progress. Reads /proc/PID/task/TID/stat. */
bool it_hashing_now(pid_t pid);

/* ---- logging (issue 7) ------------------------------------------------- */

/* it_launch_err_fd is it_launch with authd's stdout and stderr on err_fd
 * (for example the write end of a pipe nobody reads) and env_extra
 * ("NAME=value", NULL-terminated; may be NULL) in its environment;
 * s->log_path is not written. The caller keeps err_fd open as it likes. */
void it_launch_err_fd(it_server *s, int err_fd, const char *const *env_extra);

/* it_raw_open_from is it_raw_open with the client socket bound to
 * local_ip (an IPv4 literal; any 127.0.0.0/8 address works on loopback),
 * so the server sees that source address. */
void it_raw_open_from(it_raw *r, const it_server *s, const char *local_ip);

/* it_log_wait polls s's log file until it contains needle (true) or
 * deadline_ms passes (false). Lines are written by authd's log thread, a
 * moment after the event: a test that reads the log of a running server
 * must wait for the line, not read once. */
bool it_log_wait(const it_server *s, const char *needle, int deadline_ms);

/* it_log_json parses every line of s's log with jansson, asserting each
 * is one JSON object, and returns them as a JSON array (json_decref it). */
struct json_t *it_log_json(const it_server *s);

/* ---- another binary (tests/integration/it_abuse_net.c) ------------------ */

/* it_launch_bin is it_launch running bin (same flags) with env_extra
 * ("NAME=value", NULL-terminated; may be NULL) added to its environment. */
void it_launch_bin(it_server *s, const char *bin, const char *const *env_extra);

#endif
