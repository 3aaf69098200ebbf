/*
 * ratelimit.h — bounded, keyed token buckets, and a once-per-interval gate.
 *
 * authd_ratelimit: one token bucket per key (a source address, a calling
 * service, a login identifier, ...) in a table of fixed size allocated at
 * creation, so a flood of new keys costs no memory. Keys are hashed with
 * SipHash under a random per-process key, so an attacker cannot aim keys at
 * one slot. When a key's neighbourhood is full, the slot whose bucket has
 * refilled completely (nothing to forget) is reused first, else the one
 * seen longest ago, and the eviction is counted: a full table forgets the
 * quietest keys, never refuses to count.
 *
 * All functions are thread-safe (sharded mutexes); none allocates after
 * creation, so they may run on the event loops.
 *
 * authd_lograte: "log this at most once per interval", with a count of the
 * lines it held back, for the limits whose bites are logged.
 */
#ifndef AUTHD_RATELIMIT_H
#define AUTHD_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct authd_ratelimit authd_ratelimit;

typedef struct authd_ratelimit_options {
    double rate; /* tokens added per second (> 0) */
    double burst; /* bucket size, and what a new key starts with (>= 1) */
    size_t max_keys; /* keys remembered at once (>= 16); the memory bound */
} authd_ratelimit_options;

/* authd_ratelimit_create allocates the whole table (about 24 bytes a key).
 * INVALID_ARGUMENT for bad options. Free with authd_ratelimit_destroy. */
AUTHD_MUST_CHECK authd_code authd_ratelimit_create(
    const authd_ratelimit_options *o, authd_ratelimit **out);

/* authd_ratelimit_destroy frees rl. Accepts NULL. */
void authd_ratelimit_destroy(authd_ratelimit *rl);

/* authd_ratelimit_take spends cost tokens from key's bucket and returns
 * true when it holds at least cost; otherwise spends nothing and returns
 * false (the caller is over its limit). now_ns: CLOCK_MONOTONIC. */
bool authd_ratelimit_take(
    authd_ratelimit *rl, const void *key, size_t keylen, double cost, uint64_t now_ns);

/* authd_ratelimit_check is true when key's bucket holds at least cost
 * tokens; it spends nothing. Use with authd_ratelimit_charge to count only
 * some outcomes (failures) but refuse before the work. */
bool authd_ratelimit_check(
    authd_ratelimit *rl, const void *key, size_t keylen, double cost, uint64_t now_ns);

/* authd_ratelimit_charge spends cost tokens whatever the balance (down to
 * at most -burst, so a key that stops misbehaving recovers in bounded
 * time). A negative cost gives tokens back (up to burst): the refund of a
 * token taken for an attempt that turned out not to count (a success). */
void authd_ratelimit_charge(
    authd_ratelimit *rl, const void *key, size_t keylen, double cost, uint64_t now_ns);

/* authd_ratelimit_evictions counts keys forgotten while their bucket was
 * not full (for logs and metrics). */
uint64_t authd_ratelimit_evictions(authd_ratelimit *rl);

/* ---- once per interval ------------------------------------------------ */

typedef struct authd_lograte {
    _Atomic uint64_t next_ns; /* earliest time of the next allowed line */
    _Atomic uint64_t suppressed; /* lines held back since the last one */
} authd_lograte;

#define AUTHD_LOGRATE_INIT                                                                         \
    {                                                                                              \
        0, 0                                                                                       \
    }

/* authd_lograte_allow is true at most once per interval_ns; then
 * *suppressed (when not NULL) is how many calls returned false since the
 * previous true, which the line should report. */
bool authd_lograte_allow(
    authd_lograte *lr, uint64_t interval_ns, uint64_t now_ns, uint64_t *suppressed);

#endif
