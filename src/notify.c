/*
 * notify.c — sd_notify through libsystemd, which speaks the protocol
 * (a datagram to $NOTIFY_SOCKET, abstract or path, with credentials) so
 * authd does not carry its own copy.
 */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>

#include <systemd/sd-daemon.h>

void authd_notify(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    (void)sd_notify(0, buf);
}

uint64_t authd_notify_watchdog_usec(void)
{
    uint64_t usec = 0;

    /* > 0: enabled for this process (WATCHDOG_PID, when set, is ours). */
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    return usec;
}
