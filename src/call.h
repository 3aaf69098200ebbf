/*
 * call.h — one RPC in progress, shared by dispatch.c and service.c only.
 *
 * dispatch.c creates the call (method found, body unpacked), hands it to
 * the handler, and authd_call_finish() packs the response, answers the
 * transport, writes the request's log line and frees the call.
 */
#ifndef AUTHD_CALL_H
#define AUTHD_CALL_H

#include <protobuf-c/protobuf-c.h>

#include "service.h"

typedef struct authd_call authd_call;
typedef void (*authd_handler)(authd_service *svc, authd_call *call);

struct authd_call {
    authd_service *svc;
    authd_request *req;
    const ProtobufCMethodDescriptor *method;
    ProtobufCMessage *input; /* unpacked request; freed by finish */
    bool has_user; /* user_id known: goes into the log line */
    uint8_t user_id[AUTHD_ID_BYTES];
};

/* authd_call_finish answers the call and frees it (and its input): call must
 * not be used afterwards. On code == AUTHD_OK resp is the response (packed
 * here, still owned by the caller); otherwise resp is ignored and message is
 * what the caller sees. For AUTHD_INTERNAL the message is replaced by one
 * that carries only the request id. */
void authd_call_finish(authd_call *call, authd_code code, const char *reason, const char *message,
    const ProtobufCMessage *resp);

/* The handlers, one per rpc (service.c). */
void authd_handle_register(authd_service *svc, authd_call *call);
void authd_handle_login(authd_service *svc, authd_call *call);
void authd_handle_logout(authd_service *svc, authd_call *call);
void authd_handle_verify(authd_service *svc, authd_call *call);

#endif
