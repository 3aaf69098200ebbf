/*
 * arena.h — a bump allocator over a caller's buffer, for protobuf-c's
 * ProtobufCAllocator: what a decode allocates comes out of one buffer that
 * goes away (or is reused) as a whole, and only what does not fit falls
 * back to malloc, so a decode never fails for want of arena space. Used by
 * the store's record decoders (a stack buffer) and by the transport for a
 * request's envelope, call and input (a buffer inside the request).
 */
#ifndef AUTHD_ARENA_H
#define AUTHD_ARENA_H

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

typedef struct authd_arena {
    unsigned char *buf;
    size_t cap;
    size_t used; /* bytes handed out, alignment included: what to wipe */
} authd_arena;

/* authd_arena_alloc hands out max-aligned slices of the buffer, then
 * malloc's. */
static inline void *authd_arena_alloc(void *data, size_t size)
{
    authd_arena *a = data;
    size_t align = alignof(max_align_t);
    size_t off = (a->used + align - 1) & ~(align - 1);

    if (off <= a->cap && size <= a->cap - off) {
        a->used = off + size;
        return a->buf + off;
    }
    return malloc(size);
}

/* authd_arena_free ignores slices of the buffer (they go with it) and
 * frees what authd_arena_alloc had to malloc. */
static inline void authd_arena_free(void *data, void *p)
{
    authd_arena *a = data;
    uintptr_t u = (uintptr_t)p;
    uintptr_t b = (uintptr_t)a->buf;

    if (p == NULL || (u >= b && u < b + a->cap))
        return;
    free(p);
}

/* authd_arena_allocator is the ProtobufCAllocator of a. */
static inline ProtobufCAllocator authd_arena_allocator(authd_arena *a)
{
    ProtobufCAllocator al = { authd_arena_alloc, authd_arena_free, a };
    return al;
}

#endif
