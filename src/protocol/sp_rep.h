/*
 * protocol/sp_rep.h — nng's SP rep0 protocol on the transport's
 * connections: header exchange, request frames and envelopes in, framed
 * replies out.
 *
 * Knows SP framing, envelopes and the service's request contract; must not
 * know sockets, epoll or TLS (see protocol/sp_rep.c).
 */
#ifndef AUTHD_PROTOCOL_SP_REP_H
#define AUTHD_PROTOCOL_SP_REP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "service.h"

struct conn_proto;

/* The settings of SP rep, shared by every loop (the loops' proto_arg). */
typedef struct sp_rep_conf {
    authd_service *svc; /* borrowed; unused when echo */
    size_t max_msg; /* largest request frame; larger closes the connection */
    unsigned max_inflight; /* requests in flight per connection before it is paused */
    bool echo; /* benchmarks only: answer every frame with its own bytes */
    atomic_bool draining; /* set by authd_server_drain: new requests get UNAVAILABLE */
} sp_rep_conf;

/* The SP rep protocol's operations, for a loop's proto. */
extern const struct conn_proto authd_sp_rep;

#endif
