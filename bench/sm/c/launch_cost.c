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
 * --pair (under a preloaded library): every period makes two launches, one through the entry
 * the program resolved (the library's) and one through the driver's own function (found with
 * libc's versioned dlsym, which no library interposes), in alternating order, each timed.
 * Both see the same process, caches and driver state, so their difference is the library's
 * cost with the noise between processes taken out. Adds to the line:
 *
 *   pair_p50_ns=<..> direct_p50_ns=<driver's p50> pair_mean_ns=<mean of (library - driver)>
 *
 * pair_p50_ns compares like with like: the library's median minus the driver's median among
 * the periods where the library's call came first, and the same where it came second, averaged
 * (the first call of a period is the slower one, so a median of per-period differences would
 * land between the two orders' modes).
 *
 * --shapes N: period i launches grid 1 + (i mod N) instead of always 1, so consecutive launches
 * are of different shapes (a library that keeps the last shape's cost sees a miss every time,
 * as with a real workload's mix of kernels).
 *
 * The same program runs on simgpu and on a real GPU (it loads examples/ptx/spin.ptx, embedded).
 * Built by sm-harness from this file and examples/c/driver.c; it reaches the driver through
 * `--path` (default dlopen), so no libcuda is needed at build time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver.h"
#include "timing.h"
#include "spin_ptx.h"

static CUresult check(const char *what, CUresult rc) {
    if (rc != CUDA_SUCCESS) printf("error step=%s rc=%d name=%s\n", what, rc, drv_err_name(rc));
    return rc;
}

int main(int argc, char **argv) {
    unsigned long count = 20000, warmup = 2000, period_us = 40, shapes = 1;
    int path = DRV_PATH_DLOPEN, pair = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pair") == 0) {
            pair = 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: launch_cost [--count N] [--warmup N] [--period-us P] [--path linked|dlopen|gpa] [--pair] [--shapes N]\n");
            return 2;
        }
        if (strcmp(argv[i], "--count") == 0) count = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--warmup") == 0) warmup = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--period-us") == 0) period_us = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--shapes") == 0) shapes = strtoul(v, NULL, 10);
        else if (strcmp(argv[i], "--path") == 0) path = drv_parse_path(v);
        else {
            fprintf(stderr, "error: unknown argument %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (count < (pair ? 2ul : 1ul) || shapes < 1 || path < 0) {
        fprintf(stderr, "error: --count must be positive (2 or more with --pair), --shapes 1 or more, and --path linked|dlopen|gpa\n");
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

    typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  CUstream, void **, void **);
    launch_fn direct = NULL;
    if (pair) {
        /* libc's own dlsym, by version: a library that interposes dlsym does not see this. */
        void *(*libc_dlsym)(void *, const char *) = (void *(*)(void *, const char *))dlvsym(RTLD_DEFAULT, "dlsym", "GLIBC_2.34");
        if (!libc_dlsym) libc_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_DEFAULT, "dlsym", "GLIBC_2.2.5");
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (libc_dlsym && h) direct = (launch_fn)libc_dlsym(h, "cuLaunchKernel");
        if (!direct) {
            printf("launch_cost error=pair (the driver's own cuLaunchKernel not found)\n");
            return 1;
        }
    }
    unsigned long long *ns = calloc(count, sizeof *ns), *dns = calloc(count, sizeof *dns), *lib_ns = calloc(count, sizeof *lib_ns);
    if (!ns || !dns || !lib_ns) return 1;
    unsigned long long zero = 0;
    void *params[] = {&zero};
    CUresult first = CUDA_SUCCESS;
    unsigned long long next = now_ns();
    for (unsigned long i = 0; i < warmup + count && first == CUDA_SUCCESS; i++) {
        while (now_ns() < next) {
        }
        unsigned long long t0 = 0, t1 = 0, d0 = 0, d1 = 0;
        unsigned grid = 1 + (unsigned)(i % shapes);
        CUresult rc = CUDA_SUCCESS, drc = CUDA_SUCCESS;
        if (pair && (i & 1)) {
            d0 = now_ns();
            drc = direct(fn, grid, 1, 1, 32, 1, 1, 0, stream, params, NULL);
            d1 = now_ns();
        }
        t0 = now_ns();
        rc = CU(cuLaunchKernel, fn, grid, 1, 1, 32, 1, 1, 0, stream, params, NULL);
        t1 = now_ns();
        if (pair && !(i & 1)) {
            d0 = now_ns();
            drc = direct(fn, grid, 1, 1, 32, 1, 1, 0, stream, params, NULL);
            d1 = now_ns();
        }
        if (rc != CUDA_SUCCESS) first = rc;
        else if (drc != CUDA_SUCCESS) first = drc;
        if (i >= warmup) {
            ns[i - warmup] = lib_ns[i - warmup] = t1 - t0;
            dns[i - warmup] = d1 - d0;
        }
        next = (pair && (i & 1) ? d0 : t0) + period_us * 1000ULL;
    }
    if (first == CUDA_SUCCESS) first = CU(cuStreamSynchronize, stream);

    double sum = 0, dsum = 0;
    for (unsigned long i = 0; i < count; i++) sum += (double)ns[i], dsum += (double)ns[i] - (double)dns[i];
    qsort(ns, count, sizeof *ns, cmp_u64);
    printf("launch_cost count=%lu period_us=%lu shapes=%lu p50_ns=%llu p90_ns=%llu p99_ns=%llu mean_ns=%.1f", count, period_us,
           shapes, ns[count / 2], ns[count * 9 / 10], ns[count * 99 / 100], sum / (double)count);
    if (pair) {
        /* By order: i odd, the driver's call came first. Re-derived from the unsorted times. */
        unsigned long half = (count + 1) / 2;
        unsigned long long *lf = calloc(half, sizeof *lf), *ls = calloc(half, sizeof *ls), *df = calloc(half, sizeof *df),
                           *ds = calloc(half, sizeof *ds);
        if (!lf || !ls || !df || !ds) return 1;
        unsigned long nf = 0, ns2 = 0;
        for (unsigned long i = 0; i < count; i++) {
            unsigned long k = i + warmup; /* the iteration's number decides the order */
            if (k & 1) ls[ns2] = lib_ns[i], df[ns2++] = dns[i];
            else lf[nf] = lib_ns[i], ds[nf++] = dns[i];
        }
        qsort(lf, nf, sizeof *lf, cmp_u64);
        qsort(ds, nf, sizeof *ds, cmp_u64);
        qsort(ls, ns2, sizeof *ls, cmp_u64);
        qsort(df, ns2, sizeof *df, cmp_u64);
        /* Each median over its own set: the library's calls made first against the driver's
         * calls made first, and the same for second. */
        double lib_first = (double)lf[nf / 2] - (double)df[ns2 / 2], lib_second = (double)ls[ns2 / 2] - (double)ds[nf / 2];
        qsort(dns, count, sizeof *dns, cmp_u64);
        printf(" pair_p50_ns=%.1f direct_p50_ns=%llu pair_mean_ns=%.1f", (lib_first + lib_second) / 2, dns[count / 2], dsum / (double)count);
        free(lf);
        free(ls);
        free(df);
        free(ds);
    }
    printf(" rc=%d\n", first);
    free(ns);
    free(dns);
    free(lib_ns);
    CU(cuStreamDestroy, stream);
    CU(cuModuleUnload, mod);
    CU(cuDevicePrimaryCtxRelease, dev);
    return first == CUDA_SUCCESS ? 0 : 1;
}
