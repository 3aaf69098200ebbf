/*
 * policy.h — the mTLS caller policy: which calling service may call which
 * RPC, and which callers are front-ends (trusted to pass the end user's
 * address and user agent along).
 *
 * A caller is named by the identity of its client certificate (see
 * authd_request.caller). The policy file is INI (libinih):
 *
 *     ; one section per caller identity; "*" is any other certified caller
 *     [gateway.internal]
 *     allow = Register Login Logout Verify
 *     frontend = yes
 *
 *     [*]
 *     allow = Verify
 *
 * `allow` lists method short names from the service (or "*" for all); a
 * name the service does not have is an error, so a typo cannot silently
 * open or close anything. A caller without a section (and no "*") may call
 * nothing. A loaded policy is immutable: reloading builds a new one.
 */
#ifndef AUTHD_POLICY_H
#define AUTHD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define AUTHD_POLICY_METHODS_MAX 64

typedef struct authd_policy authd_policy;

/* authd_policy_load parses path; methods[0..n) are the service's method
 * short names (n <= AUTHD_POLICY_METHODS_MAX), a method's index is its
 * position there. On failure returns INVALID_ARGUMENT (or NOT_FOUND when
 * the file cannot be opened) and writes a one-line reason naming the file
 * and line into err. On success the caller frees *out with
 * authd_policy_free. */
AUTHD_MUST_CHECK authd_code authd_policy_load(const char *path, const char *const *methods,
    size_t n, authd_policy **out, char *err, size_t errlen);

/* authd_policy_parse_string is authd_policy_load on a string (tests). */
AUTHD_MUST_CHECK authd_code authd_policy_parse_string(const char *text, const char *const *methods,
    size_t n, authd_policy **out, char *err, size_t errlen);

/* authd_policy_free frees p. Accepts NULL. */
void authd_policy_free(authd_policy *p);

/* authd_policy_allows is true when caller may call the method with this
 * index; *frontend (when not NULL) says whether the caller is a front-end.
 * A NULL or empty caller matches only "*". No allocation, no lock: safe on
 * the event loops. */
bool authd_policy_allows(
    const authd_policy *p, const char *caller, unsigned method, bool *frontend);

/* authd_policy_callers is the number of sections (for the start-up log). */
size_t authd_policy_callers(const authd_policy *p);

/*
 * The policy in force, swapped on reload while the event loops read it.
 *
 * A reader brackets its look at the policy with authd_policy_enter and
 * authd_policy_exit (same thread, no other enter in between): two stores
 * to the thread's own record and one load, no lock, no shared write. A
 * swapped-out policy is retired and freed by authd_policy_slot_reap once
 * every thread that was looking at it has left (each thread's record
 * counts its enters and exits; the reaper waits for the odd ones to move).
 * A thread's record is allocated at its first enter and kept for the
 * process's life.
 */
typedef struct authd_policy_slot authd_policy_slot;

/* authd_policy_slot_create makes a slot holding p (taken: the slot frees
 * it). On failure p still belongs to the caller. Free with
 * authd_policy_slot_destroy. */
AUTHD_MUST_CHECK authd_code authd_policy_slot_create(authd_policy *p, authd_policy_slot **out);

/* authd_policy_slot_destroy frees the slot, its policy and any retired
 * ones. No reader may be inside. Accepts NULL. */
void authd_policy_slot_destroy(authd_policy_slot *s);

/* authd_policy_slot_install puts p (taken) in force; the one it replaces
 * is retired, then a reap is tried. Any thread. */
void authd_policy_slot_install(authd_policy_slot *s, authd_policy *p);

/* authd_policy_slot_reap frees retired policies no reader can still see;
 * waits at most about 100 ms for readers inside. Returns how many are
 * still retired (tried again on the next call). Any thread but a reader. */
size_t authd_policy_slot_reap(authd_policy_slot *s);

/* authd_policy_enter returns the policy in force, valid until
 * authd_policy_exit on this thread; NULL only when this thread's record
 * cannot be allocated (then no exit is due: refuse the request). */
const authd_policy *authd_policy_enter(authd_policy_slot *s);
void authd_policy_exit(void);

#endif
