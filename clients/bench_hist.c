/*
** bench_hist.c — the log-linear latency histogram of bench_hist.h.
**
** Bucket index of a value v: v itself below 2*SUB; above, with e the index
** of v's top bit and shift = e - SUB_BITS, (shift + 1) * SUB plus the SUB_BITS
** bits below the top one. So each power of two from 2*SUB up is split into
** SUB equal buckets, and the index grows monotonically with v.
*/
#include "bench_hist.h"

#include <string.h>

static unsigned bucket_of(uint64_t v)
{
    unsigned e, shift;

    if (v < 2 * BENCH_HIST_SUB) {
        return (unsigned)v;
    }
    if (v >= ((uint64_t)1 << BENCH_HIST_MAX_BITS)) {
        return BENCH_HIST_BUCKETS - 1;
    }
    e = 63u - (unsigned)__builtin_clzll(v);
    shift = e - BENCH_HIST_SUB_BITS;
    return (shift + 1) * BENCH_HIST_SUB + (unsigned)((v >> shift) - BENCH_HIST_SUB);
}

/* bucket_range gives the lowest value of bucket i and its width. */
static void bucket_range(unsigned i, uint64_t *lo, uint64_t *width)
{
    unsigned shift;

    if (i < 2 * BENCH_HIST_SUB) {
        *lo = i;
        *width = 1;
        return;
    }
    shift = i / BENCH_HIST_SUB - 1;
    *lo = ((uint64_t)(i % BENCH_HIST_SUB) + BENCH_HIST_SUB) << shift;
    *width = (uint64_t)1 << shift;
}

void bench_hist_init(bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ns = UINT64_MAX;
}

void bench_hist_record(bench_hist *h, uint64_t ns)
{
    h->counts[bucket_of(ns)]++;
    h->n++;
    h->sum_ns += ns;
    if (ns < h->min_ns) {
        h->min_ns = ns;
    }
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
}

void bench_hist_merge(bench_hist *dst, const bench_hist *src)
{
    if (src->n == 0) {
        return;
    }
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        dst->counts[i] += src->counts[i];
    }
    dst->n += src->n;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns) {
        dst->min_ns = src->min_ns;
    }
    if (src->max_ns > dst->max_ns) {
        dst->max_ns = src->max_ns;
    }
}

double bench_hist_quantile(const bench_hist *h, double q)
{
    uint64_t rank, seen = 0;
    double v;

    if (h->n == 0) {
        return 0;
    }
    if (q <= 0) {
        return (double)h->min_ns;
    }
    rank = (uint64_t)(q * (double)h->n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->n) {
        rank = h->n;
    }
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, width;
            bucket_range(i, &lo, &width);
            v = (double)lo + (double)(width - 1) / 2.0;
            if (v < (double)h->min_ns) {
                v = (double)h->min_ns;
            }
            if (v > (double)h->max_ns) {
                v = (double)h->max_ns;
            }
            return v;
        }
    }
    return (double)h->max_ns;
}

double bench_hist_mean(const bench_hist *h)
{
    return h->n == 0 ? 0 : (double)h->sum_ns / (double)h->n;
}
