/* bench.h -- timing helpers shared by the bench/ harnesses. */
#ifndef TM_BENCH_H
#define TM_BENCH_H

#include <stdlib.h>
#include <time.h>

#define BENCH_MAX_RUNS 101

/* Monotonic wall clock in milliseconds. */
static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0..runs) (so v[0] is the min, v[runs - 1] the max) and returns
 * its median. */
static inline double bench_median(double *v, int runs)
{
    qsort(v, (size_t)runs, sizeof *v, bench_cmp_double);
    return runs % 2 ? v[runs / 2] : 0.5 * (v[runs / 2 - 1] + v[runs / 2]);
}

#endif
