/*
 * consumer.c — an out-of-tree program built against the *installed* authd
 * client library (tests/install/check-install.sh builds it with pkg-config
 * and with find_package(authd-client CONFIG), shared and static).
 *
 *   consumer URL CA_FILE USERNAME
 *
 * Registers USERNAME, logs in, verifies the token and checks that Verify
 * names the same user. Prints "consumer: ok <user id>" and exits 0, or
 * says what failed and exits 1. It includes only the installed headers.
 */
#include <stdio.h>
#include <string.h>

#include <authd/client.h>
#include <authd/client_rpc.h>

/* fail prints what failed with the call's status; returns 1 (exit code). */
static int fail(const char *what, const authd_status *st)
{
    fprintf(stderr, "consumer: %s: %s [%s]: %s\n", what, authd_code_str(st->code), st->reason,
        st->message);
    return 1;
}

int main(int argc, char **argv)
{
    authd_client_options o = { 0 };
    authd_client *c = NULL;
    authd_status st;
    Authd__V1__RegisterRequest rreq = AUTHD__V1__REGISTER_REQUEST__INIT;
    Authd__V1__LoginRequest lreq = AUTHD__V1__LOGIN_REQUEST__INIT;
    Authd__V1__VerifyRequest vreq = AUTHD__V1__VERIFY_REQUEST__INIT;
    Authd__V1__RegisterResponse *rresp = NULL;
    Authd__V1__LoginResponse *lresp = NULL;
    Authd__V1__VerifyResponse *vresp = NULL;
    char email[160];
    char password[] = "an installed library works";
    int rc = 1;

    if (argc != 4) {
        fprintf(stderr, "usage: consumer URL CA_FILE USERNAME\n");
        return 2;
    }
    o.url = argv[1];
    o.ca_file = argv[2];
    o.timeout_ms = 10000;
    if (authd_client_open(&o, &c, &st) != AUTHD_OK)
        return fail("open", &st);

    snprintf(email, sizeof email, "%s@example.com", argv[3]);
    rreq.username = argv[3];
    rreq.email = email;
    rreq.password = password;
    if (authd_client_register(c, &rreq, &rresp, &st) != AUTHD_OK) {
        rc = fail("register", &st);
        goto out;
    }
    lreq.login = argv[3];
    lreq.password = password;
    if (authd_client_login(c, &lreq, &lresp, &st) != AUTHD_OK) {
        rc = fail("login", &st);
        goto out;
    }
    vreq.access_token = lresp->access_token;
    if (authd_client_verify(c, &vreq, &vresp, &st) != AUTHD_OK) {
        rc = fail("verify", &st);
        goto out;
    }
    if (rresp->user == NULL || strcmp(vresp->user_id, rresp->user->id) != 0) {
        fprintf(stderr, "consumer: verify names user %s, register made %s\n", vresp->user_id,
            rresp->user != NULL ? rresp->user->id : "(none)");
        goto out;
    }
    printf("consumer: ok %s\n", vresp->user_id);
    rc = 0;
out:
    if (vresp != NULL)
        authd__v1__verify_response__free_unpacked(vresp, NULL);
    if (lresp != NULL)
        authd__v1__login_response__free_unpacked(lresp, NULL);
    if (rresp != NULL)
        authd__v1__register_response__free_unpacked(rresp, NULL);
    authd_client_close(c);
    return rc;
}
