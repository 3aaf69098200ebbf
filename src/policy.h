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

#endif
