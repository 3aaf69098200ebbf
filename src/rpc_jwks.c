/*
 * rpc_jwks.c — GetJwks: the public half of the key set as a JWKS document
 * (RFC 7517), for services that verify ES256 access tokens themselves.
 *
 * What is listed is what verifies now (token.c decides, from the same key
 * states Verify reads): ES256 keys published, active, or retired until
 * their last token has expired. A key is listed before it signs (`authd
 * keys activate` waits --key-publish-min-s), so a verifier that refreshes
 * its JWKS cache on an unknown kid, or at least that often, never meets a
 * token it cannot check. The same document will be served over HTTP by the
 * side port.
 */
#include <stdlib.h>

#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "rpc_common.h"

void authd_handle_get_jwks(authd_service *svc, authd_call *call)
{
    char *doc = malloc(AUTHD_JWKS_MAX);

    if (doc == NULL) {
        authd_call_finish(call, AUTHD_RESOURCE_EXHAUSTED, "OVERLOADED", "server is busy", NULL);
        return;
    }
    if (authd_tokens_jwks(authd_rpc_tokens(svc), authd_rpc_now_s(svc), doc, AUTHD_JWKS_MAX)
        != AUTHD_OK) {
        free(doc);
        authd_call_finish(call, AUTHD_INTERNAL, "INTERNAL", "", NULL);
        return;
    }
    Authd__V1__GetJwksResponse resp = AUTHD__V1__GET_JWKS_RESPONSE__INIT;
    resp.jwks = doc;
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
    free(doc);
}
