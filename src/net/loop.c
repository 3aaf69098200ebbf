/*
 * net/loop.c — the event loop: epoll, the eventfd, the queue of replies
 * posted by other threads (conn_post, take_posted), the ready queue
 * (connections with more to read than one turn allows), the end of
 * iteration burial of closed connections, and the timer of the deadline
 * sweep (SWEEP_MS).
 *
 * Knows descriptors, struct loop and struct conn (net/conn.h), and calls
 * the connection's I/O (conn_read, conn_flush in net/conn.c). Must not know
 * the server (authd_server), admission, the TLS context, SP framing or the
 * service: the listening socket, the inbox of accepted connections, the
 * TLS handshake, the deadline sweep itself and the service's per-thread
 * state are reached through lp->lops (struct loop_ops), which the server
 * fills; whether to stop through lp->stop.
 *
 * Threads: loop_main runs on the loop's own thread; conn_post and
 * loop_wake on any thread.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "net/conn.h"
#include "net/loop.h"
#include "sysutil.h"

#define MAX_EVENTS 128

_Thread_local struct loop *tl_loop; /* the loop this thread runs, if any */

/* loop_wake: see net/conn.h. */
void loop_wake(struct loop *lp)
{
    uint64_t one = 1;
    ssize_t w = write(lp->efd, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is saturated, the loop is awake anyway */
}

/*
 * conn_post (any thread): queue the framed reply f for c's loop and wake
 * it; see net/conn.h. Posted even when f is NULL (out of memory): the loop
 * must still take the request out of the connection's window.
 */
void conn_post(struct conn *c, struct frame *f)
{
    struct loop *lp = c->lp;
    bool wake = false;
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        if (f != NULL) {
            authd_wipe(f->data, f->len); /* a Login's or Refresh's tokens */
            free(f);
        }
        conn_unref(c);
        return;
    }
    if (f == NULL) {
        f = malloc(sizeof *f); /* an empty marker; if even that fails, the window stays shut */
        if (f != NULL) {
            f->next = NULL;
            f->len = 0;
        }
    }
    if (f != NULL) {
        if (c->posted_tail != NULL)
            c->posted_tail->next = f;
        else
            c->posted = f;
        c->posted_tail = f;
        c->nposted++;
    }
    if (!c->queued) {
        c->queued = true;
        atomic_fetch_add(&c->refs, 1); /* the queue's; the request's moves to... */
        pthread_mutex_lock(&lp->mu);
        c->pend_next = lp->pend;
        lp->pend = c;
        if (!lp->woken) {
            lp->woken = true;
            wake = true;
        }
        pthread_mutex_unlock(&lp->mu);
    }
    pthread_mutex_unlock(&c->mu);
    conn_unref(c); /* the request's */
    if (wake)
        loop_wake(lp);
}

/* take_posted (loop thread): move replies other threads posted into the
 * output buffers and write them. */
static void take_posted(struct loop *lp)
{
    uint64_t junk;
    ssize_t r = read(lp->efd, &junk, sizeof junk);
    (void)r;

    pthread_mutex_lock(&lp->mu);
    struct conn *list = lp->pend;
    lp->pend = NULL;
    lp->woken = false;
    pthread_mutex_unlock(&lp->mu);

    while (list != NULL) {
        struct conn *c = list;
        list = c->pend_next;
        pthread_mutex_lock(&c->mu);
        struct frame *f = c->posted;
        unsigned n = c->nposted;
        c->posted = c->posted_tail = NULL;
        c->nposted = 0;
        c->queued = false;
        pthread_mutex_unlock(&c->mu);
        if (!c->closed) {
            c->inflight -= n;
            loop_add(&lp->inflight, -(int)n);
        }
        while (f != NULL) {
            struct frame *next = f->next;
            /* An empty frame marks a reply lost to a failed allocation;
             * closing tells its caller at once. */
            if (!c->closed && (f->len == 0 || !conn_out_append(c, f->data, f->len)))
                conn_close(c, AUTHD_LOG_WARN, "out of memory");
            authd_wipe(f->data, f->len);
            free(f);
            f = next;
        }
        conn_flush(c);
        conn_unref(c); /* the queue's */
    }
    lp->lops->inbox(lp, true);
}

/* loop_bury drops the "open" reference of the connections closed this
 * iteration. */
static void loop_bury(struct loop *lp)
{
    while (lp->dead != NULL) {
        struct conn *c = lp->dead;
        lp->dead = c->next;
        c->next = NULL;
        conn_unref(c);
    }
}

/* conn_event: an epoll event on c's socket. */
static void conn_event(struct conn *c, uint32_t ev)
{
    if (c->closed)
        return;
    if (c->state == ST_HANDSHAKE) {
        c->lp->lops->handshake(c);
        return;
    }
    if ((ev & EPOLLOUT) && c->want_write) {
        c->want_write = false;
        conn_flush(c);
    }
    if (!c->closed && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
        conn_read(c);
}

/* run_ready gives every connection queued by mark_ready one more turn;
 * those that still have more go to the back of the list for the next
 * iteration (which then does not sleep in epoll_wait). */
static void run_ready(struct loop *lp)
{
    struct conn *list = lp->ready;

    lp->ready = lp->ready_tail = NULL;
    while (list != NULL) {
        struct conn *c = list;
        list = c->ready_next;
        c->ready_next = NULL;
        c->ready = false;
        if (!c->closed)
            conn_read(c);
        conn_unref(c);
    }
}

/* loop_main: see net/loop.h. */
void *loop_main(void *arg)
{
    struct loop *lp = arg;
    struct epoll_event evs[MAX_EVENTS];

    tl_loop = lp;
    lp->lops->thread_start(lp);
    lp->now = authd_monotonic_ns();
    lp->next_sweep = lp->now + (uint64_t)SWEEP_MS * 1000000u;
    while (!atomic_load(lp->stop)) {
        int n = epoll_wait(lp->ep, evs, MAX_EVENTS, lp->ready != NULL ? 0 : SWEEP_MS);
        lp->now = authd_monotonic_ns();
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == NULL) {
                lp->lops->listener(lp);
            } else if (p == lp) {
                take_posted(lp);
            } else {
                conn_event(p, evs[i].events);
            }
        }
        run_ready(lp);
        uint64_t now = authd_monotonic_ns();
        if (now >= lp->next_sweep) {
            atomic_store_explicit(&lp->beat, now, memory_order_relaxed);
            lp->lops->sweep(lp, now);
        }
        loop_bury(lp);
    }
    /* Stopping: close every connection of this loop. */
    take_posted(lp);
    lp->lops->inbox(lp, false);
    while (lp->conns != NULL)
        conn_close(lp->conns, AUTHD_LOG_DEBUG, "server closing");
    run_ready(lp); /* only drops references now */
    loop_bury(lp);
    lp->proto->loop_end(lp);
    lp->lops->thread_stop(lp);
    return NULL;
}
