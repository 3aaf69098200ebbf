/*
** bench_hist.h — authbench's latency histogram: log-linear buckets over
** nanoseconds (exact below 256 ns, then 128 buckets per power of two:
** under 0.8 % relative error up to 2^40 ns, about 18 minutes), fixed size,
** so recording a sample is a few instructions and never allocates.
**
** One histogram per recording thread (no locks, no atomics); merge them
** after the threads have stopped recording.
*/
#ifndef AUTHD_BENCH_HIST_H
#define AUTHD_BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB      (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_MAX_BITS 40
#define BENCH_HIST_BUCKETS  ((BENCH_HIST_MAX_BITS - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

typedef struct bench_hist {
    uint64_t n; /* samples */
    uint64_t sum_ns; /* for the mean */
    uint64_t min_ns; /* exact; UINT64_MAX while empty */
    uint64_t max_ns; /* exact */
    uint64_t counts[BENCH_HIST_BUCKETS];
} bench_hist;

/* bench_hist_init empties h. */
void bench_hist_init(bench_hist *h);

/* bench_hist_record adds one sample of ns nanoseconds (clamped to the range). */
void bench_hist_record(bench_hist *h, uint64_t ns);

/* bench_hist_merge adds every sample of src to dst. */
void bench_hist_merge(bench_hist *dst, const bench_hist *src);

/*
** bench_hist_quantile returns the q-quantile (0 < q <= 1) in nanoseconds:
** the middle of the bucket holding the ceil(q*n)-th smallest sample,
** clamped to [min, max]. 0 for an empty histogram.
*/
double bench_hist_quantile(const bench_hist *h, double q);

/* bench_hist_mean returns the mean in nanoseconds, 0 when empty. */
double bench_hist_mean(const bench_hist *h);

#endif /* AUTHD_BENCH_HIST_H */
