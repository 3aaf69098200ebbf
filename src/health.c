/*
 * health.c — the readiness checks (health.h): one word of bits, set by
 * start-up and shutdown, read by /readyz and the Health RPC.
 */
#include <stdatomic.h>

#include "health.h"

/* Aligned to a cache line of its own: it is written rarely (start, stop)
 * and read only by health checks, and must not share a line with anything
 * the hot path writes. */
static struct {
    _Alignas(64) atomic_uint set;
    atomic_uint expected;
    char pad[64 - 2 * sizeof(atomic_uint)];
} health;

static const struct {
    authd_health_check bit;
    const char *name;
} names[] = {
    { AUTHD_HEALTH_STORE, "store" },
    { AUTHD_HEALTH_KEYS, "keys" },
    { AUTHD_HEALTH_LISTENERS, "listeners" },
    { AUTHD_HEALTH_HTTP, "http" },
};

void authd_health_expect(unsigned checks)
{
    atomic_store_explicit(
        &health.expected, checks & ~(unsigned)AUTHD_HEALTH_DRAINING, memory_order_relaxed);
}

void authd_health_set(authd_health_check check, bool on)
{
    if (on)
        atomic_fetch_or_explicit(&health.set, (unsigned)check, memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&health.set, ~(unsigned)check, memory_order_relaxed);
}

authd_health_status authd_health_get(const char **failing, size_t cap, size_t *n)
{
    unsigned set = atomic_load_explicit(&health.set, memory_order_relaxed);
    unsigned want = atomic_load_explicit(&health.expected, memory_order_relaxed);
    size_t k = 0;

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((want & names[i].bit) != 0 && (set & names[i].bit) == 0 && k < cap)
            failing[k++] = names[i].name;
    if ((set & AUTHD_HEALTH_DRAINING) != 0 && k < cap)
        failing[k++] = "draining";
    *n = k;
    if ((set & AUTHD_HEALTH_DRAINING) != 0)
        return AUTHD_HEALTH_STATE_DRAINING;
    return k == 0 && want != 0 ? AUTHD_HEALTH_SERVING : AUTHD_HEALTH_NOT_SERVING;
}

const char *authd_health_status_name(authd_health_status st)
{
    switch (st) {
    case AUTHD_HEALTH_SERVING:
        return "SERVING";
    case AUTHD_HEALTH_STATE_DRAINING:
        return "DRAINING";
    case AUTHD_HEALTH_NOT_SERVING:
        break;
    }
    return "NOT_SERVING";
}
