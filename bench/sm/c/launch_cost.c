/*
 * launch_cost - what one kernel launch costs the calling thread, as the caller sees it.
 *
 * Launches the tiny kernel `noop` (grid 1, block 32) --count times after --warmup untimed
 * launches, one every --period-us microseconds, so that the device is never the bottleneck:
 * a launch never waits for queue space, and under an SM limit the bucket always has tokens.
 * Each cuLaunchKernel call is timed on its own with CLOCK_MONOTONIC. Prints one line:
 *
 *   launch_cost count=<n> period_us=<p> p50_ns=<..> p90_ns=<..> p99_ns=<..> mean_ns=<..> rc=<first error or 0>
 *
 * The same program runs on simgpu and on a real GPU (it loads examples/ptx/spin.ptx, embedded).
 * Built by sm-harness from this file and examples/c/driver.c; it reaches the driver through
 * `--path` (default dlopen), so no libcuda is needed at build time.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver.h"
#include "spin_ptx.h"

static unsigned long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

static CUresult check(const char *what, CUresult rc) {
    if (rc != CUDA_SUCCESS) printf("error step=%s rc=%d name=%s\n", what, rc, drv_err_name(rc));
    return rc;
}

int main(int argc, char **argv) {
    unsigned long count = 20000, warmup = 2000, period_us = 40;
    int path = DRV_PATH_DLOPEN;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: launch_cost [--count N] [--warmup N] [--period-us P] [--path linked|dlopen|gpa]\n");
            return 2;
        }
        if (strcmp(argv[i], "--count") == 0) count = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--warmup") == 0) warmup = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--period-us") == 0) period_us = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--path") == 0) path = drv_parse_path(v);
        else {
            fprintf(stderr, "error: unknown argument %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (count == 0 || path < 0) {
        fprintf(stderr, "error: --count must be positive and --path linked|dlopen|gpa\n");
        return 2;
    }
    if (drv_load(path, 0) != 0) return 1;

    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    CUstream stream;
    if (check("cuInit", CU(cuInit, 0)) || check("cuDeviceGet", CU(cuDeviceGet, &dev, 0)) ||
        check("cuDevicePrimaryCtxRetain", CU(cuDevicePrimaryCtxRetain, &ctx, dev)) ||
        check("cuCtxSetCurrent", CU(cuCtxSetCurrent, ctx)) ||
        check("cuModuleLoadData", CU(cuModuleLoadData, &mod, SPIN_PTX)) ||
        check("cuModuleGetFunction", CU(cuModuleGetFunction, &fn, mod, "noop")) ||
        check("cuStreamCreate", CU(cuStreamCreate, &stream, CU_STREAM_DEFAULT)))
        return 1;

    unsigned long long *ns = calloc(count, sizeof *ns);
    if (!ns) return 1;
    unsigned long long zero = 0;
    void *params[] = {&zero};
    CUresult first = CUDA_SUCCESS;
    unsigned long long next = now_ns();
    for (unsigned long i = 0; i < warmup + count && first == CUDA_SUCCESS; i++) {
        while (now_ns() < next) {
        }
        unsigned long long t0 = now_ns();
        CUresult rc = CU(cuLaunchKernel, fn, 1, 1, 1, 32, 1, 1, 0, stream, params, NULL);
        unsigned long long t1 = now_ns();
        if (rc != CUDA_SUCCESS) first = rc;
        if (i >= warmup) ns[i - warmup] = t1 - t0;
        next = t0 + period_us * 1000ULL;
    }
    if (first == CUDA_SUCCESS) first = CU(cuStreamSynchronize, stream);

    double sum = 0;
    for (unsigned long i = 0; i < count; i++) sum += (double)ns[i];
    qsort(ns, count, sizeof *ns, cmp_u64);
    printf("launch_cost count=%lu period_us=%lu p50_ns=%llu p90_ns=%llu p99_ns=%llu mean_ns=%.1f rc=%d\n", count,
           period_us, ns[count / 2], ns[count * 9 / 10], ns[count * 99 / 100], sum / (double)count, first);
    free(ns);
    CU(cuStreamDestroy, stream);
    CU(cuModuleUnload, mod);
    CU(cuDevicePrimaryCtxRelease, dev);
    return first == CUDA_SUCCESS ? 0 : 1;
}
