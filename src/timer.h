/*
 * timer.h — one thread that runs callbacks at given times.
 *
 * The failure-time floor of Login: a reply that is ready early is parked
 * here until its time instead of holding a hashing worker in sleep. One
 * thread keeps a min-heap of pending callbacks ordered by due time and
 * waits on a condition variable (CLOCK_MONOTONIC) until the earliest is
 * due, so any number of parked replies cost one thread and a few words
 * each.
 */
#ifndef AUTHD_TIMER_H
#define AUTHD_TIMER_H

#include <stdint.h>

#include "status.h"

typedef struct authd_timer authd_timer;
typedef void (*authd_timer_fn)(void *arg);

/* authd_timer_create starts the timer thread. Free with
 * authd_timer_destroy. */
AUTHD_MUST_CHECK authd_code authd_timer_create(authd_timer **out);

/* authd_timer_at runs fn(arg) on the timer thread once CLOCK_MONOTONIC
 * reaches due_ns (at once if it already has). Callbacks due at the same
 * time run in no particular order; each should be quick (answer a reply),
 * since it delays the ones after it. When the entry cannot be stored (no
 * memory) or the timer has been shut down, fn(arg) runs at once on the
 * calling thread: the reply is early rather than lost. Always takes arg. */
void authd_timer_at(authd_timer *t, uint64_t due_ns, authd_timer_fn fn, void *arg);

/* authd_timer_shutdown runs every pending callback now (in due order) and
 * joins the thread; later authd_timer_at calls run their callback at once.
 * Idempotent; accepts NULL. */
void authd_timer_shutdown(authd_timer *t);

/* authd_timer_destroy shuts t down (if not yet) and frees it. Accepts NULL. */
void authd_timer_destroy(authd_timer *t);

/* authd_timer_pending: callbacks waiting (for tests and metrics). */
unsigned authd_timer_pending(authd_timer *t);

#endif
