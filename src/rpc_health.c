/*
 * rpc_health.c — Health: whether authd is ready to serve, from the
 * readiness checks of health.h (the same ones the side port's /readyz
 * reads). Public and cheap: no token, no store access. The transport lets
 * it through while draining, so a caller on an open connection sees
 * DRAINING rather than a refusal.
 */
#include "authd/v1/auth.pb-c.h"
#include "call.h"
#include "health.h"

void authd_handle_health(authd_service *svc, authd_call *call)
{
    const char *failing[AUTHD_HEALTH_CHECKS_MAX];
    size_t n = 0;
    authd_health_status st = authd_health_get(failing, AUTHD_HEALTH_CHECKS_MAX, &n);
    Authd__V1__HealthResponse resp = AUTHD__V1__HEALTH_RESPONSE__INIT;

    (void)svc;
    switch (st) {
    case AUTHD_HEALTH_SERVING:
        resp.status = AUTHD__V1__HEALTH_RESPONSE__STATUS__SERVING;
        break;
    case AUTHD_HEALTH_STATE_DRAINING:
        resp.status = AUTHD__V1__HEALTH_RESPONSE__STATUS__DRAINING;
        break;
    case AUTHD_HEALTH_NOT_SERVING:
        resp.status = AUTHD__V1__HEALTH_RESPONSE__STATUS__NOT_SERVING;
        break;
    }
    resp.n_failing = n;
    resp.failing = (char **)failing; /* static strings; pack only reads them */
    authd_call_finish(call, AUTHD_OK, "", "", &resp.base);
}
