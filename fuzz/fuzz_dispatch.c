/*
 * fuzz_dispatch.c — libFuzzer harness for the request path behind the
 * transport: the RequestEnvelope decode, dispatch's method lookup and wire
 * checks, and the handlers, against a real LMDB store in a temporary
 * directory (tmpfs when there is one: fsync there is free).
 *
 * Each input is one SP message body as the server would hand it on: it is
 * unpacked as a RequestEnvelope exactly as src/server.c does (a message
 * that does not unpack is answered BAD_ENVELOPE there, without dispatch),
 * then given to authd_dispatch. Replies come from the pools, so the harness
 * waits for done() on a condition variable with a deadline; a request
 * that gets no reply within it is a finding. What must hold for every reply:
 * - done() runs exactly once;
 * - the code is a canonical status (0..16); the reason is "" on OK and
 *   UPPER_SNAKE otherwise; the message is valid UTF-8 ("" on OK);
 * - a body comes only with OK, and it parses as the method's response.
 *
 * Argon2 is cheap here (8 KiB, t=1): the harness looks for bugs, not for
 * password strength. Log lines go to /dev/null at debug level, so the log
 * code runs on every request too.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authd/v1/auth.pb-c.h"
#include "authd/v1/envelope.pb-c.h"
#include "fuzz.h"
#include "log.h"
#include "service.h"
#include "validate.h"

#define REPLY_DEADLINE_S 30 /* a reply slower than this is a hang */

static char dir[64];
static authd_store *store;
static authd_tokens *tokens;
static authd_workpool *hash_pool, *write_pool;
static authd_service *svc;

/* The one request in flight and what its done() saw. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    authd_request req;
    int done; /* calls of done() for the current request */
    authd_code code;
    char reason[128];
    char message[512];
    bool reason_null, message_null;
    uint8_t body[8192];
    size_t body_len;
    bool body_too_long;
} cur = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static int64_t fixed_clock(void)
{
    return 1800000000;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* cleanup removes the temporary store when the fuzzer exits. */
static void cleanup(void)
{
    if (dir[0] != '\0')
        nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const uint8_t key[32] = "fuzz-dispatch-signing-key-012345";
    authd_store_options so = { .map_size = 256u << 20 };
    authd_tokens_options to = { key, sizeof key, "https://authd.example", "authd-internal", 30 };
    authd_workpool_options ho = { .threads = 1, .queue_max = 16 };
    authd_workpool_options wo = { .threads = 1, .queue_max = 64 };
    authd_service_options svo
        = { .pwparams = { 1, 8 * 1024 }, .token_ttl = 900, .clock = fixed_clock };
    int null_fd;

    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "%s/authd-fuzz-XXXXXX",
        access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (sodium_init() < 0 || mkdtemp(dir) == NULL)
        abort();
    atexit(cleanup);
    if ((null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
        abort();
    authd_log_setup(AUTHD_LOG_DEBUG, null_fd);
    so.dir = dir;
    if (authd_store_open(&so, &store) != AUTHD_OK || authd_tokens_create(&to, &tokens) != AUTHD_OK
        || authd_workpool_create(&ho, &hash_pool) != AUTHD_OK
        || authd_workpool_create(&wo, &write_pool) != AUTHD_OK)
        abort();
    svo.store = store;
    svo.tokens = tokens;
    svo.hash_pool = hash_pool;
    svo.write_pool = write_pool;
    if (authd_service_create(&svo, &svc) != AUTHD_OK)
        abort();
    return 0;
}

static void on_done(authd_request *req, const authd_reply *rep)
{
    pthread_mutex_lock(&cur.mu);
    FUZZ_CHECK(req == &cur.req, "done() with another request");
    cur.done++;
    cur.code = rep->code;
    cur.reason_null = rep->reason == NULL;
    cur.message_null = rep->message == NULL;
    snprintf(cur.reason, sizeof cur.reason, "%s", rep->reason != NULL ? rep->reason : "");
    snprintf(cur.message, sizeof cur.message, "%s", rep->message != NULL ? rep->message : "");
    cur.body_too_long = rep->body_len > sizeof cur.body;
    cur.body_len = cur.body_too_long ? 0 : rep->body_len;
    if (cur.body_len > 0)
        memcpy(cur.body, rep->body, cur.body_len);
    pthread_cond_broadcast(&cur.cv);
    pthread_mutex_unlock(&cur.mu);
}

static bool upper_snake(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* output_of: the response descriptor of a known method, NULL otherwise. */
static const ProtobufCMessageDescriptor *output_of(const char *method)
{
    const ProtobufCServiceDescriptor *sd = &authd__v1__auth__descriptor;
    static const char prefix[] = "/authd.v1.Auth/";

    if (strncmp(method, prefix, sizeof prefix - 1) != 0)
        return NULL;
    for (unsigned i = 0; i < sd->n_methods; i++)
        if (strcmp(method + sizeof prefix - 1, sd->methods[i].name) == 0)
            return sd->methods[i].output;
    return NULL;
}

/* wait_reply waits for done() up to the deadline; false on a hang. */
static bool wait_reply(void)
{
    struct timespec dl;
    bool ok;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += REPLY_DEADLINE_S;
    pthread_mutex_lock(&cur.mu);
    while (cur.done == 0)
        if (pthread_cond_timedwait(&cur.cv, &cur.mu, &dl) != 0)
            break;
    ok = cur.done > 0;
    pthread_mutex_unlock(&cur.mu);
    return ok;
}

static void check_reply(const char *method)
{
    const ProtobufCMessageDescriptor *out;
    ProtobufCMessage *m;

    FUZZ_CHECK(cur.done == 1, "done() ran %d times", cur.done);
    FUZZ_CHECK(cur.code >= 0 && cur.code <= 16, "code %d out of range", (int)cur.code);
    FUZZ_CHECK(!cur.reason_null && !cur.message_null, "NULL reason or message");
    FUZZ_CHECK(!cur.body_too_long, "body over %zu bytes", sizeof cur.body);
    FUZZ_CHECK(authd_utf8_valid(cur.message, strlen(cur.message)), "message not UTF-8");
    if (cur.code == AUTHD_OK) {
        FUZZ_CHECK(cur.reason[0] == '\0' && cur.message[0] == '\0', "OK with a reason/message");
        out = output_of(method);
        FUZZ_CHECK(out != NULL, "OK for unknown method %s", method);
        m = protobuf_c_message_unpack(out, NULL, cur.body_len, cur.body);
        FUZZ_CHECK(m != NULL, "OK body does not parse as %s", out->name);
        protobuf_c_message_free_unpacked(m, NULL);
    } else {
        FUZZ_CHECK(upper_snake(cur.reason), "reason \"%s\" not UPPER_SNAKE", cur.reason);
        FUZZ_CHECK(cur.body_len == 0, "body with code %d", (int)cur.code);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Authd__V1__RequestEnvelope *env;

    /* As the server: the envelope is unpacked from the frame. */
    env = authd__v1__request_envelope__unpack(NULL, size, data);
    if (env == NULL)
        return 0;
    pthread_mutex_lock(&cur.mu);
    FUZZ_CHECK(cur.done <= 1, "a late second done() for the previous request");
    memset(&cur.req, 0, sizeof cur.req);
    cur.done = 0;
    cur.req.request_id = env->request_id;
    cur.req.method = env->method;
    cur.req.method_len = strlen(env->method);
    cur.req.body = env->body.data;
    cur.req.body_len = env->body.len;
    snprintf(cur.req.peer, sizeof cur.req.peer, "127.0.0.1:4242");
    cur.req.conn_id = 1;
    cur.req.start_ns = authd_monotonic_ns();
    cur.req.done = on_done;
    pthread_mutex_unlock(&cur.mu);

    authd_dispatch(svc, &cur.req);
    FUZZ_CHECK(wait_reply(), "no reply within %d s", REPLY_DEADLINE_S);
    pthread_mutex_lock(&cur.mu);
    check_reply(env->method);
    pthread_mutex_unlock(&cur.mu);
    authd__v1__request_envelope__free_unpacked(env, NULL);
    return 0;
}
