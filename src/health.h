/*
 * health.h — authd's readiness, in one place: which of its checks pass.
 *
 * main.c and the transports set the checks as the process starts and stops
 * (store open, keys loaded, listeners up, draining); the side port's
 * /readyz and the Health RPC read them. Reads and writes are relaxed atomics
 * on a cache line of their own: nothing on the Verify path touches it.
 */
#ifndef AUTHD_HEALTH_H
#define AUTHD_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

/* The checks, each a bit; a check passes while its bit is set, except
 * AUTHD_HEALTH_DRAINING, which fails readiness while set. */
typedef enum authd_health_check {
    AUTHD_HEALTH_STORE = 1u << 0, /* the store is open */
    AUTHD_HEALTH_KEYS = 1u << 1, /* a signing key is loaded */
    AUTHD_HEALTH_LISTENERS = 1u << 2, /* the main listener is up */
    AUTHD_HEALTH_HTTP = 1u << 3, /* the side port is up (only when configured) */
    AUTHD_HEALTH_DRAINING = 1u << 4, /* shutting down */
} authd_health_check;

typedef enum authd_health_status {
    AUTHD_HEALTH_SERVING = 1,
    AUTHD_HEALTH_NOT_SERVING = 2,
    AUTHD_HEALTH_STATE_DRAINING = 3,
} authd_health_status;

#define AUTHD_HEALTH_CHECKS_MAX 5

/* authd_health_expect declares the checks this process needs to pass
 * (AUTHD_HEALTH_HTTP only with a side port); call once at start-up, before
 * any reader. Until then nothing is expected and nothing is set, so the
 * status is NOT_SERVING with no failing check. */
void authd_health_expect(unsigned checks);

/* authd_health_set sets (on = true) or clears one check. Any thread. */
void authd_health_set(authd_health_check check, bool on);

/* authd_health_get returns the status now and writes the names of the
 * failing checks ("store", "keys", "listeners", "http", "draining"; static
 * strings) into failing (cap entries), their count into *n. DRAINING
 * whenever draining is set, else SERVING when every expected check
 * passes, else NOT_SERVING. Any thread. */
authd_health_status authd_health_get(const char **failing, size_t cap, size_t *n);

/* authd_health_status_name: "SERVING", "NOT_SERVING" or "DRAINING". */
const char *authd_health_status_name(authd_health_status st);

#endif
