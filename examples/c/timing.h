/*
 * timing.h - what the cost programs (bench/sm/c/launch_cost.c, bench/compare/c/alloc_cost.c)
 * time calls with: CLOCK_MONOTONIC in nanoseconds, and an ascending order for qsort.
 */
#ifndef VGPU_TIMING_H
#define VGPU_TIMING_H

#include <time.h>

static inline unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static inline int cmp_u64(const void *a, const void *b) {
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

#endif
