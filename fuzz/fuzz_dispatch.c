/*
 * fuzz_dispatch.c — libFuzzer harness for the request path behind the
 * transport: the RequestEnvelope decode, dispatch's method lookup and wire
 * checks, and the handlers, against a real LMDB store in a temporary
 * directory (tmpfs when there is one: fsync there is free), unlinked as
 * soon as the store is open.
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
 * A resident user is registered and logged in at start. A Verify or Logout
 * whose body holds the bytes "$TOKEN" is sent with its live access token
 * (which the fuzzer could never forge), so the success paths run too: the
 * live token must verify, and a logout is followed by a fresh login.
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
#define METHOD           "/authd.v1.Auth/"
#define USER             "resident"
#define PASSWORD         "the resident's passphrase"

static char dir[64];
static authd_store *store;
static authd_tokens *tokens;
static authd_workpool *hash_pool, *write_pool;
static authd_service *svc;
static bool verbose; /* FUZZ_VERBOSE=1: one line per reply on stderr */
static char live_token[AUTHD_TOKEN_MAX]; /* the resident user's access token */

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

/* run dispatches one request as the transport would and checks its reply;
 * returns the reply's code (its body stays in cur.body until the next run). */
static authd_code run(const char *method, const uint8_t *body, size_t body_len, uint64_t id)
{
    authd_code code;

    pthread_mutex_lock(&cur.mu);
    FUZZ_CHECK(cur.done <= 1, "a late second done() for the previous request");
    memset(&cur.req, 0, sizeof cur.req);
    cur.done = 0;
    cur.req.request_id = id;
    cur.req.method = method;
    cur.req.method_len = strlen(method);
    cur.req.body = body;
    cur.req.body_len = body_len;
    snprintf(cur.req.peer, sizeof cur.req.peer, "127.0.0.1:4242");
    cur.req.conn_id = 1;
    cur.req.start_ns = authd_monotonic_ns();
    cur.req.done = on_done;
    pthread_mutex_unlock(&cur.mu);

    authd_dispatch(svc, &cur.req);
    FUZZ_CHECK(wait_reply(), "no reply within %d s", REPLY_DEADLINE_S);
    pthread_mutex_lock(&cur.mu);
    if (verbose)
        fprintf(stderr, "%s -> %d %s\n", method, (int)cur.code, cur.reason);
    check_reply(method);
    code = cur.code;
    pthread_mutex_unlock(&cur.mu);
    return code;
}

/* run_msg packs m and runs it. */
static authd_code run_msg(const char *method, const ProtobufCMessage *m)
{
    uint8_t buf[1024];
    size_t n = protobuf_c_message_get_packed_size(m);

    FUZZ_CHECK(n <= sizeof buf, "request too large");
    protobuf_c_message_pack(m, buf);
    return run(method, buf, n, 1);
}

/* log_in logs the resident user in and keeps its access token; false
 * (and no live token) when the login is refused: once account throttling
 * exists, the fuzzer's wrong passwords for "resident" may lock it. */
static bool log_in(void)
{
    Authd__V1__LoginRequest lq = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__LoginResponse *lr;

    lq.login = (char *)USER;
    lq.password = (char *)PASSWORD;
    live_token[0] = '\0';
    if (run_msg(METHOD "Login", &lq.base) != AUTHD_OK)
        return false;
    lr = authd__v1__login_response__unpack(NULL, cur.body_len, cur.body);
    FUZZ_CHECK(lr != NULL && strlen(lr->access_token) < sizeof live_token, "login response");
    snprintf(live_token, sizeof live_token, "%s", lr->access_token);
    authd__v1__login_response__free_unpacked(lr, NULL);
    return true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const uint8_t key[32] = "fuzz-dispatch-signing-key-012345";
    authd_store_options so = { .map_size = 256u << 20 };
    authd_tokens_options to = { key, sizeof key, "https://authd.example", "authd-internal", 30, 0 };
    authd_workpool_options ho = { .threads = 1, .queue_max = 16 };
    authd_workpool_options wo = { .threads = 1, .queue_max = 64 };
    authd_service_options svo
        = { .pwparams = { 1, 8 * 1024 }, .token_ttl = 900, .clock = fixed_clock };
    int null_fd;

    (void)argc;
    (void)argv;
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    snprintf(dir, sizeof dir, "%s/authd-fuzz-XXXXXX",
        access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (sodium_init() < 0 || mkdtemp(dir) == NULL)
        abort();
    if ((null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
        abort();
    authd_log_setup(AUTHD_LOG_DEBUG, null_fd);
    so.dir = dir;
    if (authd_store_open(&so, &store) != AUTHD_OK)
        abort();
    /* LMDB keeps its files open: unlinked now, they vanish with the process
     * however it ends (libFuzzer leaves with _Exit, so atexit would not run). */
    nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    if (authd_tokens_create(&to, &tokens) != AUTHD_OK
        || authd_workpool_create(&ho, &hash_pool) != AUTHD_OK
        || authd_workpool_create(&wo, &write_pool) != AUTHD_OK)
        abort();
    svo.store = store;
    svo.tokens = tokens;
    svo.hash_pool = hash_pool;
    svo.write_pool = write_pool;
    if (authd_service_create(&svo, &svc) != AUTHD_OK)
        abort();

    /* A resident user, registered and logged in. */
    Authd__V1__RegisterRequest rq = AUTHD__V1__REGISTER_REQUEST__INIT;
    rq.username = (char *)USER;
    rq.email = (char *)USER "@example.com";
    rq.password = (char *)PASSWORD;
    FUZZ_CHECK(run_msg(METHOD "Register", &rq.base) == AUTHD_OK, "resident register failed");
    FUZZ_CHECK(log_in(), "resident login failed");
    return 0;
}

/* with_live_token: a Verify or Logout whose body holds the bytes "$TOKEN"
 * is sent with the resident user's live access token instead, so that the
 * success paths (which need a token only authd can sign) are fuzzed too. */
static bool with_live_token(
    const Authd__V1__RequestEnvelope *env, uint8_t *buf, size_t cap, size_t *len)
{
    Authd__V1__VerifyRequest vq = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__LogoutRequest oq = AUTHD__V1__LOGOUT_REQUEST__INIT;
    const ProtobufCMessage *m;

    if (env->body.len < 6 || memmem(env->body.data, env->body.len, "$TOKEN", 6) == NULL)
        return false;
    if (strcmp(env->method, METHOD "Verify") == 0) {
        vq.access_token = live_token;
        m = &vq.base;
    } else if (strcmp(env->method, METHOD "Logout") == 0) {
        oq.access_token = live_token;
        m = &oq.base;
    } else {
        return false;
    }
    FUZZ_CHECK(protobuf_c_message_get_packed_size(m) <= cap, "token request too large");
    *len = protobuf_c_message_pack(m, buf);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[AUTHD_TOKEN_MAX + 64];
    Authd__V1__RequestEnvelope *env;
    size_t len;

    /* As the server: the envelope is unpacked from the frame. */
    env = authd__v1__request_envelope__unpack(NULL, size, data);
    if (env == NULL)
        return 0;
    if (with_live_token(env, buf, sizeof buf, &len)) {
        authd_code code = run(env->method, buf, len, env->request_id);
        if (strcmp(env->method, METHOD "Verify") == 0 && live_token[0] != '\0')
            FUZZ_CHECK(code == AUTHD_OK, "the live token did not verify: %d", (int)code);
        else if (code == AUTHD_OK)
            (void)log_in(); /* logged out: a new live token */
    } else {
        (void)run(env->method, env->body.data, env->body.len, env->request_id);
    }
    authd__v1__request_envelope__free_unpacked(env, NULL);
    return 0;
}
