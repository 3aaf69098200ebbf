/*
 * notify.h — telling systemd how authd is doing (sd_notify, libsystemd):
 * READY=1 once the listeners accept, STATUS= lines, STOPPING=1 at drain,
 * and WATCHDOG=1 while the event loops turn. Every call is a no-op when
 * authd was not started by systemd (no NOTIFY_SOCKET), so the server calls
 * them unconditionally.
 */
#ifndef AUTHD_NOTIFY_H
#define AUTHD_NOTIFY_H

#include <stdint.h>

/* authd_notify sends state ("READY=1\nSTATUS=...": sd_notify's
 * newline-separated assignments), printf-style. Errors are ignored: a
 * missing or full notify socket must never stop authd. */
void authd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* authd_notify_watchdog_usec is the watchdog interval systemd asked for
 * (WATCHDOG_USEC, for this process), or 0 when there is none. */
uint64_t authd_notify_watchdog_usec(void);

#endif
