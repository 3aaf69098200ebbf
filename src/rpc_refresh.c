/*
 * rpc_refresh.c — Refresh: a refresh token for a new access token and a
 * new refresh token (rotation), with reuse detection.
 *
 * The decision is the store's, in one write transaction
 * (authd_store_refresh_exchange): the newest token of a family rotates;
 * its immediate parent, replayed within the grace window, gets the same
 * child again (a client that lost the response retries); any other used
 * token revokes that session, and only it, with an audit line
 * ("refresh_reuse").
 *
 * The same child, not a new one: the child's 32 random bytes are stored
 * sealed (crypto_secretbox) under a key derived from the parent token,
 * which the store never holds, so only a caller presenting the parent can
 * open them, and only while the store still answers REPLAYED. The
 * alternative, deriving children from a server secret, would let anyone
 * with that secret (a backup and a key file) mint every live refresh
 * token; sealing keeps the random bytes random and unrecoverable without
 * the parent. The nonce is the child's hash (unique per child, and
 * already stored). The replayed access token is the first one again
 * (same iat and exp, so the same HS256 bytes).
 *
 * A failed refresh is a failed credential: it spends a token of the
 * failed-login limits of the end user's address and of the caller
 * (rpc_common.h), and a good one gives it back.
 */
#include "rpc_refresh.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "authd/v1/auth.pb-c.h"
#include "rpc_common.h"
#include "writebatch.h"

#define RT_VERSION 1
#define RT_SIGNED                                                                                  \
    (1 + AUTHD_ID_BYTES + 4 + AUTHD_REFRESH_SECRET_BYTES) /* 53: what the tag covers */
#define RT_RAW     (RT_SIGNED + AUTHD_REFRESH_TAG_BYTES) /* 69 */
#define RT_TEXT    92 /* base64url of 69 bytes, no padding */
#define OFF_SID    1
#define OFF_GEN    (OFF_SID + AUTHD_ID_BYTES)
#define OFF_SECRET (OFF_GEN + 4)

_Static_assert(RT_TEXT + 1 <= AUTHD_REFRESH_TOKEN_MAX, "refresh token text fits");
_Static_assert(AUTHD_REFRESH_BOX_BYTES == AUTHD_REFRESH_SECRET_BYTES + crypto_secretbox_MACBYTES,
    "a sealed secret fits the store's box");
_Static_assert(crypto_secretbox_NONCEBYTES <= AUTHD_REFRESH_HASH_BYTES, "nonce from a hash");

static const unsigned char personal_hash[crypto_generichash_blake2b_PERSONALBYTES]
    = "authd.rt.hash.1";
static const unsigned char personal_key[crypto_generichash_blake2b_PERSONALBYTES]
    = "authd.rt.seal.1";

/* raw_build lays out a token: version, sid, generation, secret, MAC. */
static void raw_build(const authd_store *st, const uint8_t sid[AUTHD_ID_BYTES], uint32_t gen,
    const uint8_t secret[AUTHD_REFRESH_SECRET_BYTES], uint8_t raw[RT_RAW])
{
    raw[0] = RT_VERSION;
    memcpy(raw + OFF_SID, sid, AUTHD_ID_BYTES);
    raw[OFF_GEN] = (uint8_t)(gen >> 24);
    raw[OFF_GEN + 1] = (uint8_t)(gen >> 16);
    raw[OFF_GEN + 2] = (uint8_t)(gen >> 8);
    raw[OFF_GEN + 3] = (uint8_t)gen;
    memcpy(raw + OFF_SECRET, secret, AUTHD_REFRESH_SECRET_BYTES);
    authd_store_refresh_tag(st, raw, RT_SIGNED, raw + RT_SIGNED);
}

/* raw_hash: the store's hash of a token (BLAKE2b-256, its own personalization). */
static void raw_hash(const uint8_t raw[RT_RAW], uint8_t out[AUTHD_REFRESH_HASH_BYTES])
{
    crypto_generichash_blake2b_salt_personal(
        out, AUTHD_REFRESH_HASH_BYTES, raw, RT_RAW, NULL, 0, NULL, personal_hash);
}

/* raw_seal_key: the key that seals a token's child (another personalization,
 * so it cannot be computed from the stored hash). */
static void raw_seal_key(const uint8_t raw[RT_RAW], uint8_t out[crypto_secretbox_KEYBYTES])
{
    crypto_generichash_blake2b_salt_personal(
        out, crypto_secretbox_KEYBYTES, raw, RT_RAW, NULL, 0, NULL, personal_key);
}

static void raw_text(const uint8_t raw[RT_RAW], char text[AUTHD_REFRESH_TOKEN_MAX])
{
    sodium_bin2base64(
        text, AUTHD_REFRESH_TOKEN_MAX, raw, RT_RAW, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void authd_refresh_token_make(const authd_store *st, const uint8_t sid[AUTHD_ID_BYTES],
    uint32_t gen, const uint8_t secret[AUTHD_REFRESH_SECRET_BYTES],
    char text[AUTHD_REFRESH_TOKEN_MAX], uint8_t hash[AUTHD_REFRESH_HASH_BYTES])
{
    uint8_t raw[RT_RAW];

    raw_build(st, sid, gen, secret, raw);
    raw_hash(raw, hash);
    raw_text(raw, text);
    sodium_memzero(raw, sizeof raw);
}

/* raw_parse decodes text into raw and checks version, generation and MAC.
 * Strict: exactly RT_TEXT base64url characters (69 bytes leave no spare
 * bits, so the decoding is canonical). */
static bool raw_parse(const authd_store *st, const char *text, size_t len, uint8_t raw[RT_RAW])
{
    uint8_t tag[AUTHD_REFRESH_TAG_BYTES];
    const char *end = NULL;
    size_t n = 0;

    if (len != RT_TEXT
        || sodium_base642bin(
               raw, RT_RAW, text, len, NULL, &n, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING)
            != 0
        || n != RT_RAW || end != text + len || raw[0] != RT_VERSION)
        return false;
    if ((raw[OFF_GEN] | raw[OFF_GEN + 1] | raw[OFF_GEN + 2] | raw[OFF_GEN + 3]) == 0)
        return false;
    authd_store_refresh_tag(st, raw, RT_SIGNED, tag);
    return sodium_memcmp(tag, raw + RT_SIGNED, sizeof tag) == 0;
}

static uint32_t raw_gen(const uint8_t raw[RT_RAW])
{
    return (uint32_t)raw[OFF_GEN] << 24 | (uint32_t)raw[OFF_GEN + 1] << 16
        | (uint32_t)raw[OFF_GEN + 2] << 8 | raw[OFF_GEN + 3];
}

struct refresh_job {
    authd_write_op op; /* first: the write pool hands back &op */
    authd_call *call;
    authd_who who;
    uint8_t raw[RT_RAW]; /* the presented token, decoded */
    /* Made before the job is queued (refresh_prepare): */
    authd_refresh_request rq; /* now_ms is set in apply */
    uint8_t child[RT_RAW]; /* the child, had the token rotated */
    /* Kept from apply for done: */
    authd_code rc; /* the store's answer */
    int outcome;
    authd_session s;
    authd_user u;
    authd_refresh_family fam;
};

static void job_free(struct refresh_job *job)
{
    sodium_memzero(job, sizeof *job);
    free(job);
}

/* refresh_failed answers UNAUTHENTICATED with reason; the line is the
 * audit event event and names the token only by its fingerprint. */
static void refresh_failed(
    authd_call *call, const char *event, const char *cause, const char *reason, const char *message)
{
    Authd__V1__RefreshRequest *in = (Authd__V1__RefreshRequest *)call->input;
    char fp[AUTHD_FINGERPRINT_LEN + 1];

    authd_call_audit(call, event);
    authd_call_log_str(call, "cause", cause);
    if (authd_call_log_wanted(call)) {
        authd_token_fingerprint(in->refresh_token, strlen(in->refresh_token), fp);
        authd_call_log_str(call, "token_fp", fp);
    }
    authd_call_finish(call, AUTHD_UNAUTHENTICATED, reason, message, NULL);
}

/* open_child recovers the newest token of fam (the child of the presented
 * token raw): its secret is sealed under raw's key, nonce = its hash. The
 * rebuilt token must hash to what the store holds. */
static bool open_child(const authd_store *st, const uint8_t raw[RT_RAW],
    const authd_refresh_family *fam, char text[AUTHD_REFRESH_TOKEN_MAX])
{
    uint8_t key[crypto_secretbox_KEYBYTES];
    uint8_t secret[AUTHD_REFRESH_SECRET_BYTES];
    uint8_t child[RT_RAW];
    uint8_t h[AUTHD_REFRESH_HASH_BYTES];
    bool ok = false;

    raw_seal_key(raw, key);
    if (!fam->has_box
        || crypto_secretbox_open_easy(
               secret, fam->child_box, sizeof fam->child_box, fam->token_hash, key)
            != 0)
        goto out;
    raw_build(st, raw + OFF_SID, fam->generation, secret, child);
    raw_hash(child, h);
    if (sodium_memcmp(h, fam->token_hash, sizeof h) != 0)
        goto out;
    raw_text(child, text);
    ok = true;
out:
    sodium_memzero(key, sizeof key);
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(child, sizeof child);
    return ok;
}

/* refresh_prepare (event loop, before queueing): the child and the
 * store's request. Made before the decision (a replay or a failure throws
 * it away), and off the write pool: its thread is the one every store
 * write of the server waits for, so the crypto (four BLAKE2b, one
 * secretbox) runs on the loops, in parallel, instead. */
static void refresh_prepare(const authd_store *st, struct refresh_job *job)
{
    authd_refresh_request *rq = &job->rq;
    uint8_t key[crypto_secretbox_KEYBYTES];
    uint8_t secret[AUTHD_REFRESH_SECRET_BYTES];

    memcpy(rq->session_id, job->raw + OFF_SID, AUTHD_ID_BYTES);
    rq->generation = raw_gen(job->raw);
    raw_hash(job->raw, rq->token_hash);
    randombytes_buf(secret, sizeof secret);
    raw_build(st, rq->session_id, rq->generation + 1, secret, job->child);
    raw_hash(job->child, rq->new_hash);
    raw_seal_key(job->raw, key);
    crypto_secretbox_easy(rq->new_box, secret, sizeof secret, rq->new_hash, key);
    sodium_memzero(key, sizeof key);
    sodium_memzero(secret, sizeof secret);
}

/* refresh_apply (write pool, in a batch): let the store decide. */
static void refresh_apply(authd_write_op *op, authd_store_batch *b)
{
    struct refresh_job *job = (struct refresh_job *)op;
    authd_service *svc = job->call->svc;

    job->rq.now_ms = authd_rpc_now_ms(svc);
    job->rq.policy = *authd_rpc_session_policy(svc);
    job->rc = authd_store_batch_refresh_exchange(
        b, &job->rq, &job->outcome, &job->s, &job->u, &job->fam);
}

/* refresh_done (write pool, after the batch's commit): answer. */
static void refresh_done(authd_write_op *op, authd_code commit)
{
    struct refresh_job *job = (struct refresh_job *)op;
    authd_call *call = job->call;
    authd_service *svc = call->svc;
    authd_store *st = authd_rpc_store(svc);
    authd_session *s = &job->s;
    authd_user *u = &job->u;
    authd_refresh_family *fam = &job->fam;
    char refresh[AUTHD_REFRESH_TOKEN_MAX];
    char token[AUTHD_TOKEN_MAX];
    char sidhex[AUTHD_ID_HEX + 1];
    int outcome = job->outcome;
    authd_code rc = commit != AUTHD_OK ? commit : job->rc;

    refresh[0] = token[0] = '\0';
    authd_rpc_hex(job->raw + OFF_SID, AUTHD_ID_BYTES, sidhex);
    authd_call_log_str(call, "session_id", sidhex);
    authd_call_log_u64(call, "generation", raw_gen(job->raw));
    authd_rpc_log_who(call, &job->who);
    if (rc != AUTHD_OK) {
        authd_rpc_fail_store(call, rc);
        goto out;
    }
    switch (outcome) {
    case AUTHD_REFRESH_ROTATED:
        raw_text(job->child, refresh);
        break;
    case AUTHD_REFRESH_REPLAYED:
        if (!open_child(st, job->raw, fam, refresh)) {
            authd_call_finish(call, AUTHD_INTERNAL, "INTERNAL", "", NULL);
            goto out;
        }
        break;
    case AUTHD_REFRESH_REUSED:
        memcpy(call->user_id, s->user_id, sizeof s->user_id);
        call->has_user = true;
        authd_call_log_bool(call, "session_revoked", true);
        refresh_failed(call, "refresh_reuse", "reused", "REFRESH_TOKEN_REUSED",
            "refresh token was already used; the session is revoked");
        goto out;
    case AUTHD_REFRESH_REVOKED:
        refresh_failed(call, "refresh_failure", "revoked", "REVOKED", "session has been revoked");
        goto out;
    case AUTHD_REFRESH_EXPIRED:
        refresh_failed(
            call, "refresh_failure", "expired", "SESSION_EXPIRED", "session has expired");
        goto out;
    case AUTHD_REFRESH_USER_DISABLED:
        refresh_failed(
            call, "refresh_failure", "user_disabled", "USER_DISABLED", "user is disabled");
        goto out;
    default:
        refresh_failed(call, "refresh_failure", "unknown_token", "INVALID_REFRESH_TOKEN",
            "refresh token is invalid");
        goto out;
    }

    /* The pair: for a replay the first access token again (same claims,
     * so the same bytes), for a rotation a new one. */
    authd_claims c;
    memcpy(c.sub, u->id, sizeof c.sub);
    memcpy(c.sid, s->id, sizeof c.sid);
    c.iat = c.nbf = fam->issued_at;
    c.exp = fam->access_expires_at;
    if (authd_token_issue(authd_rpc_tokens(svc), &c, token, sizeof token) != AUTHD_OK) {
        authd_call_finish(call, AUTHD_INTERNAL, "INTERNAL", "", NULL);
        goto out;
    }
    memcpy(call->user_id, u->id, sizeof u->id);
    call->has_user = true;
    authd_call_audit(call, "refresh");
    authd_call_log_bool(call, "replayed", outcome == AUTHD_REFRESH_REPLAYED);
    authd_rpc_refund_credential_limit(svc, &job->who);

    Authd__V1__RefreshResponse resp = AUTHD__V1__REFRESH_RESPONSE__INIT;
    Authd__V1__User pu;
    char idhex[AUTHD_ID_HEX + 1];
    char *roles[AUTHD_ROLES_MAX];
    authd_rpc_user_view(&pu, u, idhex, roles);
    resp.access_token = token;
    resp.token_type = "Bearer";
    resp.expires_at = c.exp;
    resp.session_id = sidhex;
    resp.user = &pu;
    resp.refresh_token = refresh;
    resp.refresh_expires_at = s->expires_at;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
out:
    job_free(job);
    sodium_memzero(refresh, sizeof refresh);
    sodium_memzero(token, sizeof token);
}

void authd_handle_refresh(authd_service *svc, authd_call *call)
{
    Authd__V1__RefreshRequest *in = (Authd__V1__RefreshRequest *)call->input;
    struct refresh_job *job = NULL;
    authd_error err;
    authd_code rc;

    if ((job = calloc(1, sizeof *job)) == NULL) {
        authd_rpc_fail_busy(call, AUTHD_RESOURCE_EXHAUSTED);
        return;
    }
    job->call = call;
    if ((rc = authd_rpc_read_client(call, in->client, &job->who, &err)) != AUTHD_OK) {
        job_free(job);
        authd_call_finish(call, rc, err.reason, err.message, NULL);
        return;
    }
    /* Before any store access: the attempt spends a token now, a good
     * token gives it back (refresh_done). */
    if (authd_rpc_over_credential_limit(svc, &job->who)) {
        job_free(job);
        authd_rpc_fail_rate_limited(call, "too many failed logins from this source; retry later");
        return;
    }
    if (!raw_parse(authd_rpc_store(svc), in->refresh_token, strlen(in->refresh_token), job->raw)) {
        authd_rpc_log_who(call, &job->who);
        job_free(job);
        refresh_failed(call, "refresh_failure", "malformed", "INVALID_REFRESH_TOKEN",
            "refresh token is invalid");
        return;
    }
    /* Charged to the caller's source and connection, as Login's store step
     * is: one source's flood of refreshes cannot fill the write queue that
     * everyone's Logins and Logouts share. */
    refresh_prepare(authd_rpc_store(svc), job);
    authd_workpool_owner w = { call->req->source, call->req->conn_id };
    job->op.store = authd_rpc_store(svc);
    job->op.apply = refresh_apply;
    job->op.done = refresh_done;
    if ((rc = authd_write_op_submit(authd_rpc_write_pool(svc), &w, &job->op)) != AUTHD_OK) {
        job_free(job);
        authd_rpc_fail_busy(call, rc);
    }
}
