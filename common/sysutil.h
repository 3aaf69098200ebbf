/*
 * sysutil.h — the two small system helpers that the server (src/) and the
 * client library (clients/) both need: wiping memory that held a secret,
 * and the monotonic clock in nanoseconds. Header-only, like the rest of
 * common/, so neither side links an object of the other's.
 */
#ifndef AUTHD_SYSUTIL_H
#define AUTHD_SYSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* authd_wipe clears n bytes at p in a way the compiler keeps (a plain
 * memset of a buffer about to be freed may be optimised away). Accepts
 * NULL and 0. */
static inline void authd_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        explicit_bzero(p, n);
}

/* authd_monotonic_ns: CLOCK_MONOTONIC in nanoseconds (never jumps with the
 * wall clock: use it for deadlines and durations). */
static inline uint64_t authd_monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
