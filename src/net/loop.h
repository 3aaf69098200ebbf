/*
 * net/loop.h — the event loop's interface to the server that owns it
 * (net/loop.c): what a loop calls back (struct loop_ops) and its thread's
 * body. The loop's structure itself is struct loop in net/conn.h.
 *
 * Knows struct loop and struct conn. Must not know the server, admission,
 * SP framing or the service. Internal to the server library; not an API.
 */
#ifndef AUTHD_NET_LOOP_H
#define AUTHD_NET_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "net/conn.h"

#define SWEEP_MS 250 /* how often each loop checks its deadlines */

/*
 * loop_ops: what a loop calls on the server that owns it (Redis's ae.h and
 * nng's transport ops are the models), all on the loop's thread:
 * listener — the listening socket (lp->lfd) is readable; inbox — start
 * the connections handed to this loop (start false: close them, the loop
 * is stopping); handshake — an event on a connection in ST_HANDSHAKE;
 * sweep — the deadline sweep, every SWEEP_MS, which sets lp->next_sweep;
 * thread_start, thread_stop — at the start and end of the loop's thread.
 */
struct loop_ops {
    void (*listener)(struct loop *lp);
    void (*inbox)(struct loop *lp, bool start);
    void (*handshake)(struct conn *c);
    void (*sweep)(struct loop *lp, uint64_t now);
    void (*thread_start)(struct loop *lp);
    void (*thread_stop)(struct loop *lp);
};

/* loop_main is a loop's thread (arg: its struct loop, with the fields
 * proto, ops, lops and stop set, ep and efd open): it serves events until
 * *lp->stop, then closes every connection of the loop. */
void *loop_main(void *arg);

#endif
