/*
 * it_admin.c — the admin RPCs against the real authd over TLS: the
 * interceptor's role check on every one (PERMISSION_DENIED for a
 * non-admin, UNAUTHENTICATED without a token), and what each does to the
 * store as the next Verify, Login or Register sees it; the last-admin rule.
 *
 * Calls go over a raw req0 stream with a hand-made envelope (it_raw), as
 * it_authz's protected calls; the first admin is made in the store
 * directly (it_authz_store.c), as `authd user add --role admin` does.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int it_store_add_user(const char *dir, const char *username, const char *password,
    const char *const *roles, size_t n_roles, char id_hex[33]);

#define PW    "correct horse battery staple"
#define WRONG "not the password at all"
#define M(x)  "/authd.v1.Auth/" x

/* acall sends req (NULL: empty body) to method with "Bearer tok" (tok
 * NULL: no authorization), checks code and reason (NULL: any) and returns
 * the reply (caller frees). */
static Authd__V1__ReplyEnvelope *acall(it_raw *r, const char *method, const char *tok,
    const ProtobufCMessage *req, int code, const char *reason)
{
    static uint64_t next_id = 1;
    char auth[4200];
    uint8_t *body = NULL;
    size_t blen = 0;

    if (req != NULL) {
        blen = protobuf_c_message_get_packed_size(req);
        body = malloc(blen + 1);
        assert_non_null(body);
        protobuf_c_message_pack(req, body);
    }
    if (tok != NULL)
        snprintf(auth, sizeof auth, "Bearer %s", tok);
    Authd__V1__ReplyEnvelope *rep
        = it_raw_rpc_as(r, method, next_id++, tok != NULL ? auth : NULL, body, blen);
    free(body);
    if ((int)rep->code != code || (reason != NULL && strcmp(rep->reason, reason) != 0))
        fail_msg("%s: expected code %d reason %s, got %d %s (%s)", method, code,
            reason ? reason : "*", (int)rep->code, rep->reason, rep->message);
    return rep;
}

/* by_id calls one of the RPCs whose request is just user_id (all of them
 * put it in field 1, so GetUserRequest's encoding serves for each). */
static void by_id(
    it_raw *r, const char *method, const char *tok, const char *id, int code, const char *reason)
{
    Authd__V1__GetUserRequest req = AUTHD__V1__GET_USER_REQUEST__INIT;
    req.user_id = (char *)id;
    authd__v1__reply_envelope__free_unpacked(acall(r, method, tok, &req.base, code, reason), NULL);
}

static Authd__V1__User *get_user(it_raw *r, const char *tok, const char *id)
{
    Authd__V1__GetUserRequest req = AUTHD__V1__GET_USER_REQUEST__INIT;
    req.user_id = (char *)id;
    Authd__V1__ReplyEnvelope *rep = acall(r, M("GetUser"), tok, &req.base, AUTHD_OK, NULL);
    Authd__V1__GetUserResponse *g
        = authd__v1__get_user_response__unpack(NULL, rep->body.len, rep->body.data);
    assert_non_null(g);
    assert_non_null(g->user);
    Authd__V1__User *u = g->user;
    g->user = NULL;
    authd__v1__get_user_response__free_unpacked(g, NULL);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return u;
}

static void set_roles(it_raw *r, const char *tok, const char *id, const char *const *roles,
    size_t n, int code, const char *reason)
{
    Authd__V1__SetRolesRequest req = AUTHD__V1__SET_ROLES_REQUEST__INIT;
    req.user_id = (char *)id;
    req.roles = (char **)roles;
    req.n_roles = n;
    Authd__V1__ReplyEnvelope *rep = acall(r, M("SetRoles"), tok, &req.base, code, reason);
    if (code == AUTHD_OK) {
        Authd__V1__SetRolesResponse *m
            = authd__v1__set_roles_response__unpack(NULL, rep->body.len, rep->body.data);
        assert_non_null(m);
        assert_non_null(m->user);
        assert_int_equal(m->user->n_roles, n);
        for (size_t i = 0; i < n; i++)
            assert_string_equal(m->user->roles[i], roles[i]);
        authd__v1__set_roles_response__free_unpacked(m, NULL);
    }
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
}

/* list returns one page (caller frees). */
static Authd__V1__ListUsersResponse *list(
    it_raw *r, const char *tok, const char *prefix, uint32_t size, const char *after)
{
    Authd__V1__ListUsersRequest req = AUTHD__V1__LIST_USERS_REQUEST__INIT;
    req.prefix = (char *)prefix;
    req.page_size = size;
    req.page_token = (char *)after;
    Authd__V1__ReplyEnvelope *rep = acall(r, M("ListUsers"), tok, &req.base, AUTHD_OK, NULL);
    Authd__V1__ListUsersResponse *m
        = authd__v1__list_users_response__unpack(NULL, rep->body.len, rep->body.data);
    assert_non_null(m);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    return m;
}

/* reg_user registers name (password PW), logs in, and writes the token
 * and the user's id. */
static void reg_user(authd_client *c, const char *name, char *tok, size_t cap, char id[33])
{
    char email[128];
    authd_status st;
    Authd__V1__LoginResponse *lr = NULL;

    snprintf(email, sizeof email, "%s@example.com", name);
    it_register(c, name, email, PW, &st, NULL);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    it_login_token(c, name, PW, tok, cap, &lr);
    snprintf(id, 33, "%s", lr->user->id);
    authd__v1__login_response__free_unpacked(lr, NULL);
}

static void expect_verify(authd_client *c, const char *tok, int code, const char *reason)
{
    authd_status st;
    it_verify(c, tok, &st, NULL);
    IT_EXPECT(&st, code, reason);
}

static const char *const all_by_id[] = { M("GetUser"), M("SetRoles"), M("DisableUser"),
    M("EnableUser"), M("DeleteUser"), M("RevokeSessions"), M("UnlockUser"), M("ListUsers") };

/* A non-admin is PERMISSION_DENIED on every admin RPC, no token is
 * UNAUTHENTICATED, and neither touches the target. */
static void admin_rpcs_need_admin(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    char tok[4096], id[33], vtok[4096], vid[33];
    it_raw r;

    reg_user(c, "mallory", tok, sizeof tok, id);
    reg_user(c, "victim", vtok, sizeof vtok, vid);
    it_raw_open(&r, s);
    for (size_t i = 0; i < sizeof all_by_id / sizeof all_by_id[0]; i++) {
        by_id(&r, all_by_id[i], tok, vid, AUTHD_PERMISSION_DENIED, NULL);
        by_id(&r, all_by_id[i], NULL, vid, AUTHD_UNAUTHENTICATED, "NO_AUTHORIZATION");
        by_id(&r, all_by_id[i], "not.a.token", vid, AUTHD_UNAUTHENTICATED, NULL);
    }
    /* mallory cannot make herself admin either. */
    const char *adm[] = { "admin" };
    set_roles(&r, tok, id, adm, 1, AUTHD_PERMISSION_DENIED, NULL);
    expect_verify(c, vtok, AUTHD_OK, NULL); /* not disabled, not deleted */
    it_raw_close(&r);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* An admin's whole round: get, bad ids, set roles (seen by the next
 * Verify), disable (the live token dies), enable, revoke, delete (the
 * username is free again), and the audit lines. */
static void admin_manages_users(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    const char *admin_roles[] = { "admin" };
    char atok[4096], aid[33], tok[4096], id[33], tok2[4096], id2[33];
    it_raw r;

    assert_int_equal(it_store_add_user(s->data_dir, "root", PW, admin_roles, 1, aid), 0);
    it_login_token(c, "root", PW, atok, sizeof atok, NULL);
    reg_user(c, "carol", tok, sizeof tok, id);
    it_raw_open(&r, s);

    Authd__V1__User *u = get_user(&r, atok, id);
    assert_string_equal(u->id, id);
    assert_string_equal(u->username, "carol");
    assert_string_equal(u->email, "carol@example.com");
    authd__v1__user__free_unpacked(u, NULL);
    assert_true(it_log_wait(s, "\"audit\":\"admin_action\"", 5000));

    /* Malformed and unknown ids. */
    char upper[33];
    snprintf(upper, sizeof upper, "%s", id);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    const char *unknown = "00000000000000000000000000000000";
    for (size_t i = 0; i + 1 < sizeof all_by_id / sizeof all_by_id[0]; i++) {
        by_id(&r, all_by_id[i], atok, "xyz", AUTHD_INVALID_ARGUMENT, "INVALID_USER_ID");
        by_id(&r, all_by_id[i], atok, "", AUTHD_INVALID_ARGUMENT, "INVALID_USER_ID");
        if (strcmp(upper, id) != 0)
            by_id(&r, all_by_id[i], atok, upper, AUTHD_INVALID_ARGUMENT, "INVALID_USER_ID");
        if (strcmp(all_by_id[i], M("SetRoles")) != 0) /* SetRoles with no roles: valid */
            by_id(&r, all_by_id[i], atok, unknown, AUTHD_NOT_FOUND, "USER_NOT_FOUND");
    }

    /* Roles: the next Verify with required roles sees them. */
    const char *ops[] = { "ops", "billing" };
    set_roles(&r, atok, id, ops, 2, AUTHD_OK, NULL);
    Authd__V1__VerifyResponse *vr = NULL;
    authd_status st;
    it_verify(c, tok, &st, &vr);
    IT_EXPECT(&st, AUTHD_OK, NULL);
    assert_int_equal(vr->n_roles, 2);
    assert_string_equal(vr->roles[0], "ops");
    assert_string_equal(vr->roles[1], "billing");
    authd__v1__verify_response__free_unpacked(vr, NULL);
    const char *bad_roles[] = { "Ops" };
    set_roles(&r, atok, id, bad_roles, 1, AUTHD_INVALID_ARGUMENT, NULL);

    /* Disable: the live token fails its next Verify; enable: a new login works. */
    by_id(&r, M("DisableUser"), atok, id, AUTHD_OK, NULL);
    expect_verify(c, tok, AUTHD_UNAUTHENTICATED, NULL);
    it_login(c, "carol", PW, &st, NULL);
    assert_int_not_equal(st.code, AUTHD_OK);
    by_id(&r, M("EnableUser"), atok, id, AUTHD_OK, NULL);
    it_login_token(c, "carol", PW, tok, sizeof tok, NULL);
    it_login_token(c, "carol", PW, tok2, sizeof tok2, NULL);
    expect_verify(c, tok, AUTHD_OK, NULL);

    /* Revoke: both sessions, counted. */
    Authd__V1__GetUserRequest rq = AUTHD__V1__GET_USER_REQUEST__INIT;
    rq.user_id = id;
    Authd__V1__ReplyEnvelope *rep = acall(&r, M("RevokeSessions"), atok, &rq.base, AUTHD_OK, NULL);
    Authd__V1__RevokeSessionsResponse *rv
        = authd__v1__revoke_sessions_response__unpack(NULL, rep->body.len, rep->body.data);
    assert_non_null(rv);
    assert_int_equal(rv->sessions_revoked, 2);
    authd__v1__revoke_sessions_response__free_unpacked(rv, NULL);
    authd__v1__reply_envelope__free_unpacked(rep, NULL);
    expect_verify(c, tok, AUTHD_UNAUTHENTICATED, NULL);
    expect_verify(c, tok2, AUTHD_UNAUTHENTICATED, NULL);

    /* Delete: gone, and the username and email register again. */
    it_login_token(c, "carol", PW, tok, sizeof tok, NULL);
    by_id(&r, M("DeleteUser"), atok, id, AUTHD_OK, NULL);
    by_id(&r, M("GetUser"), atok, id, AUTHD_NOT_FOUND, "USER_NOT_FOUND");
    expect_verify(c, tok, AUTHD_UNAUTHENTICATED, NULL);
    reg_user(c, "carol", tok, sizeof tok, id2);
    assert_string_not_equal(id, id2);

    /* The audit line names the admin, the action and the target. */
    char *log = it_read_file(s->log_path, NULL);
    assert_non_null(log);
    char want[128];
    snprintf(want, sizeof want, "\"target_user_id\":\"%s\"", id);
    assert_non_null(strstr(log, want));
    snprintf(want, sizeof want, "\"admin_id\":\"%s\"", aid);
    assert_non_null(strstr(log, want));
    assert_non_null(strstr(log, "\"action\":\"delete_user\""));
    free(log);

    it_raw_close(&r);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* ListUsers: prefix, paging by the cursor, page_size bounds. */
static void admin_lists_users(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    const char *admin_roles[] = { "admin" };
    char atok[4096], aid[33], tok[4096], id[33], name[32];
    it_raw r;

    assert_int_equal(it_store_add_user(s->data_dir, "root", PW, admin_roles, 1, aid), 0);
    it_login_token(c, "root", PW, atok, sizeof atok, NULL);
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "pg%d", i);
        reg_user(c, name, tok, sizeof tok, id);
    }
    reg_user(c, "other", tok, sizeof tok, id);
    it_raw_open(&r, s);

    Authd__V1__ListUsersResponse *p = list(&r, atok, "", 0, "");
    assert_int_equal(p->n_users, 7); /* root, other, pg0..pg4 */
    assert_string_equal(p->next_page_token, "");
    for (size_t i = 0; i < p->n_users; i++)
        assert_string_equal(p->users[i]->email + strlen(p->users[i]->username), "@example.com");
    authd__v1__list_users_response__free_unpacked(p, NULL);

    char cursor[64] = "";
    int seen = 0;
    for (int page = 0; page < 3; page++) {
        p = list(&r, atok, "pg", 2, cursor);
        for (size_t i = 0; i < p->n_users; i++) {
            snprintf(name, sizeof name, "pg%d", seen++);
            assert_string_equal(p->users[i]->username, name);
        }
        snprintf(cursor, sizeof cursor, "%s", p->next_page_token);
        bool last = page == 2;
        assert_int_equal(p->n_users, last ? 1 : 2);
        assert_int_equal(cursor[0] == '\0', last);
        authd__v1__list_users_response__free_unpacked(p, NULL);
    }
    assert_int_equal(seen, 5);
    /* A prefix is matched in canonical (lower) case, as usernames are stored. */
    p = list(&r, atok, "PG", 10, "");
    assert_int_equal(p->n_users, 5);
    assert_string_equal(p->users[0]->username, "pg0");
    authd__v1__list_users_response__free_unpacked(p, NULL);

    Authd__V1__ListUsersRequest req = AUTHD__V1__LIST_USERS_REQUEST__INIT;
    req.page_size = 1001;
    authd__v1__reply_envelope__free_unpacked(
        acall(&r, M("ListUsers"), atok, &req.base, AUTHD_INVALID_ARGUMENT, "INVALID_PAGE_SIZE"),
        NULL);

    it_raw_close(&r);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* The last admin can neither drop their own admin role nor disable or
 * delete themselves; with a second admin they can. */
static void last_admin_stays(void **state)
{
    it_server *s = it_start(NULL);
    authd_client *c = it_client(s);
    const char *admin_roles[] = { "admin" };
    const char *none[] = { "ops" };
    char atok[4096], aid[33], tok[4096], id[33];
    it_raw r;

    assert_int_equal(it_store_add_user(s->data_dir, "root", PW, admin_roles, 1, aid), 0);
    it_login_token(c, "root", PW, atok, sizeof atok, NULL);
    it_raw_open(&r, s);
    set_roles(&r, atok, aid, none, 1, AUTHD_FAILED_PRECONDITION, "LAST_ADMIN");
    by_id(&r, M("DisableUser"), atok, aid, AUTHD_FAILED_PRECONDITION, "LAST_ADMIN");
    by_id(&r, M("DeleteUser"), atok, aid, AUTHD_FAILED_PRECONDITION, "LAST_ADMIN");
    expect_verify(c, atok, AUTHD_OK, NULL);

    /* A second admin, made by the first; then the first may step down. */
    reg_user(c, "deputy", tok, sizeof tok, id);
    set_roles(&r, atok, id, admin_roles, 1, AUTHD_OK, NULL);
    by_id(&r, M("GetUser"), tok, aid, AUTHD_OK, NULL); /* deputy is admin now */
    set_roles(&r, atok, aid, none, 1, AUTHD_OK, NULL);
    by_id(&r, M("GetUser"), atok, id, AUTHD_PERMISSION_DENIED, NULL);
    by_id(&r, M("DisableUser"), tok, id, AUTHD_FAILED_PRECONDITION, "LAST_ADMIN");

    it_raw_close(&r);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

/* UnlockUser clears the login lockout, as `authd user unlock` does. */
static void admin_unlocks(void **state)
{
    it_opts o = { .extra = { "--login-lockout", "6", "--login-free-attempts", "6", NULL } };
    it_server *s = it_start(&o);
    authd_client *c = it_client(s);
    const char *admin_roles[] = { "admin" };
    char atok[4096], aid[33], tok[4096], id[33];
    authd_status st;
    it_raw r;

    assert_int_equal(it_store_add_user(s->data_dir, "root", PW, admin_roles, 1, aid), 0);
    it_login_token(c, "root", PW, atok, sizeof atok, NULL);
    reg_user(c, "locky", tok, sizeof tok, id);
    for (int i = 0; i < 6; i++) {
        it_login(c, "locky", WRONG, &st, NULL);
        IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    }
    it_login(c, "locky", PW, &st, NULL); /* locked: the right password fails */
    IT_EXPECT(&st, AUTHD_UNAUTHENTICATED, "INVALID_CREDENTIALS");
    it_raw_open(&r, s);
    by_id(&r, M("UnlockUser"), atok, id, AUTHD_OK, NULL);
    it_login_token(c, "locky", PW, tok, sizeof tok, NULL);
    it_raw_close(&r);
    authd_client_close(c);
    it_finish(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(admin_rpcs_need_admin),
        cmocka_unit_test(admin_manages_users),
        cmocka_unit_test(admin_lists_users),
        cmocka_unit_test(last_admin_stays),
        cmocka_unit_test(admin_unlocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
