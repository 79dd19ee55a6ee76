/*
 * alloc_cost - what one cuMemAlloc_v2 + cuMemFree_v2 pair costs the calling thread.
 *
 * --count pairs of --size bytes (default 2 MiB) after --warmup untimed ones, each pair timed
 * on its own with CLOCK_MONOTONIC. Prints one line:
 *
 *   alloc_cost count=<n> size=<bytes> p50_ns=<..> p99_ns=<..> mean_ns=<..> rc=<first error or 0>
 *
 * Reaches the driver through examples/c/driver.c (--path, default dlopen), like launch_cost.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver.h"
#include "timing.h"

int main(int argc, char **argv) {
    unsigned long count = 5000, warmup = 500, size = 2ul << 20;
    int path = DRV_PATH_DLOPEN;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: alloc_cost [--count N] [--warmup N] [--size BYTES] [--path linked|dlopen|gpa]\n");
            return 2;
        }
        if (strcmp(argv[i], "--count") == 0) count = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--warmup") == 0) warmup = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--size") == 0) size = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--path") == 0) path = drv_parse_path(v);
        else {
            fprintf(stderr, "error: unknown argument %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (count == 0 || size == 0 || path < 0) {
        fprintf(stderr, "error: --count and --size must be positive and --path linked|dlopen|gpa\n");
        return 2;
    }
    if (drv_load(path, 0) != 0) return 1;
    CUdevice dev;
    CUcontext ctx;
    if (CU(cuInit, 0) || CU(cuDeviceGet, &dev, 0) || CU(cuDevicePrimaryCtxRetain, &ctx, dev) || CU(cuCtxSetCurrent, ctx)) {
        printf("alloc_cost error=setup\n");
        return 1;
    }
    unsigned long long *ns = calloc(count, sizeof *ns);
    if (!ns) return 1;
    CUresult first = CUDA_SUCCESS;
    for (unsigned long i = 0; i < warmup + count && first == CUDA_SUCCESS; i++) {
        CUdeviceptr p = 0;
        unsigned long long t0 = now_ns();
        CUresult rc = CU(cuMemAlloc, &p, size);
        if (rc == CUDA_SUCCESS) rc = CU(cuMemFree, p);
        unsigned long long t1 = now_ns();
        if (rc != CUDA_SUCCESS) first = rc;
        if (i >= warmup) ns[i - warmup] = t1 - t0;
    }
    double sum = 0;
    for (unsigned long i = 0; i < count; i++) sum += (double)ns[i];
    qsort(ns, count, sizeof *ns, cmp_u64);
    printf("alloc_cost count=%lu size=%lu p50_ns=%llu p99_ns=%llu mean_ns=%.1f rc=%d\n", count, size, ns[count / 2],
           ns[count * 99 / 100], sum / (double)count, first);
    free(ns);
    CU(cuDevicePrimaryCtxRelease, dev);
    return first == CUDA_SUCCESS ? 0 : 1;
}
