/* driver.c - fills the driver-API table through the linked, dlopen or gpa path. */
#define _GNU_SOURCE
#include "driver.h"

#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct drv D;

#ifdef VGPU_LINKED
/*
 * The per-thread variants are referenced weakly: a driver without one leaves the entry NULL
 * instead of failing the link. The default variants stay strong references, so the link
 * fails loudly when -lcuda is missing and --as-needed never drops libcuda.
 */
#define WEAK(sym) extern __typeof__(sym) sym __attribute__((weak));
WEAK(cuMemAllocAsync_ptsz)
WEAK(cuMemFreeAsync_ptsz)
WEAK(cuMemAllocFromPoolAsync_ptsz)
WEAK(cuMemcpyHtoD_v2_ptds)
WEAK(cuMemcpyDtoH_v2_ptds)
WEAK(cuMemsetD8_v2_ptds)
WEAK(cuStreamSynchronize_ptsz)
WEAK(cuEventRecord_ptsz)
WEAK(cuLaunchKernel_ptsz)
WEAK(cuLaunchKernelEx_ptsz)
WEAK(cuLaunchCooperativeKernel_ptsz)
WEAK(cuStreamBeginCapture_v2_ptsz)
WEAK(cuStreamEndCapture_ptsz)
WEAK(cuGraphLaunch_ptsz)
#undef WEAK
#endif

int drv_parse_path(const char *s) {
    if (strcmp(s, "linked") == 0) return DRV_PATH_LINKED;
    if (strcmp(s, "dlopen") == 0) return DRV_PATH_DLOPEN;
    if (strcmp(s, "gpa") == 0) return DRV_PATH_GPA;
    return -1;
}

const char *drv_path_name(int path) {
    switch (path) {
    case DRV_PATH_LINKED: return "linked";
    case DRV_PATH_DLOPEN: return "dlopen";
    case DRV_PATH_GPA: return "gpa";
    default: return "?";
    }
}

int drv_default_path(void) {
#ifdef VGPU_LINKED
    return DRV_PATH_LINKED;
#else
    return DRV_PATH_DLOPEN;
#endif
}

static void *open_libcuda(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) fprintf(stderr, "error: dlopen(libcuda.so.1): %s\n", dlerror());
    return h;
}

static int missing_count;

static void note_missing(const char *what, const char *detail) {
    missing_count++;
    fprintf(stderr, "warning: driver entry %s not resolved (%s)\n", what, detail);
}

int drv_load(int path, int ptsz) {
    memset(&D, 0, sizeof D);
    missing_count = 0;
    switch (path) {
    case DRV_PATH_LINKED:
#ifdef VGPU_LINKED
#define X(field, abi, abi_ptsz, ver, params)                                                        \
    D.field = ptsz ? &abi_ptsz : &abi;                                                              \
    if (!D.field) note_missing(ptsz ? #abi_ptsz : #abi, "weak symbol not provided by libcuda");
        DRV_FUNCS(X)
#undef X
        return 0;
#else
        (void)ptsz;
        fprintf(stderr, "error: --path linked needs a build with -DVGPU_LINKED and -lcuda\n");
        return -1;
#endif
    case DRV_PATH_DLOPEN: {
        void *h = open_libcuda();
        if (!h) return -1;
#define X(field, abi, abi_ptsz, ver, params)                                                        \
    {                                                                                               \
        const char *name = ptsz ? #abi_ptsz : #abi;                                                 \
        dlerror();                                                                                  \
        D.field = (__typeof__(D.field))dlsym(h, name);                                              \
        if (!D.field) note_missing(name, "dlsym");                                                  \
    }
        DRV_FUNCS(X)
#undef X
        return 0;
    }
    case DRV_PATH_GPA: {
        void *h = open_libcuda();
        if (!h) return -1;
        dlerror();
        __typeof__(D.cuGetProcAddress) gpa =
            (__typeof__(D.cuGetProcAddress))dlsym(h, "cuGetProcAddress_v2");
        if (!gpa) {
            fprintf(stderr, "error: dlsym(cuGetProcAddress_v2): %s\n", dlerror());
            return -1;
        }
        cuuint64_t flags = ptsz ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : CU_GET_PROC_ADDRESS_DEFAULT;
#define X(field, abi, abi_ptsz, ver, params)                                                        \
    {                                                                                               \
        void *p = NULL;                                                                             \
        CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;                   \
        CUresult rc = gpa(#field, &p, ver, flags, &st);                                             \
        if (rc == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS && p) {                         \
            D.field = (__typeof__(D.field))p;                                                       \
        } else {                                                                                    \
            char detail[96];                                                                        \
            snprintf(detail, sizeof detail, "cuGetProcAddress_v2 rc=%d status=%d version=%d",       \
                     rc, (int)st, ver);                                                             \
            note_missing(#field, detail);                                                           \
        }                                                                                           \
    }
        DRV_FUNCS(X)
#undef X
        return 0;
    }
    default:
        fprintf(stderr, "error: unknown path %d\n", path);
        return -1;
    }
}

/* "<file basename>!<symbol>" of a code address, or "none" / "<file>!?" */
static void describe(const void *addr, char *buf, size_t len) {
    Dl_info info;
    if (!addr) {
        snprintf(buf, len, "none");
        return;
    }
    if (!dladdr(addr, &info) || !info.dli_fname) {
        snprintf(buf, len, "?!?");
        return;
    }
    const char *base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    snprintf(buf, len, "%s!%s", base, info.dli_sname ? info.dli_sname : "?");
}

void drv_print_resolver(int path) {
    char where[512];
    describe((const void *)D.cuMemAlloc, where, sizeof where);
    printf("path=%s resolver=%s\n", drv_path_name(path), where);
    fflush(stdout);
}

void drv_print_all_resolved(void) {
    char where[512];
#define X(field, abi, abi_ptsz, ver, params)                                                        \
    describe((const void *)D.field, where, sizeof where);                                           \
    printf("resolved fn=%s at=%s\n", #field, where);
    DRV_FUNCS(X)
#undef X
    fflush(stdout);
}

CUresult drv_missing(const char *name) {
    fprintf(stderr, "error: %s is not available from the driver\n", name);
    return CUDA_ERROR_NOT_FOUND;
}

const char *drv_err_name(CUresult rc) {
    const char *s = NULL;
    if (D.cuGetErrorName && D.cuGetErrorName(rc, &s) == CUDA_SUCCESS && s) return s;
    return "?";
}

int parse_size(const char *s, unsigned long long *out) {
    char *end = NULL;
    if (!s || !isdigit((unsigned char)*s)) return -1;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': shift = 10; end++; break;
    case 'm': shift = 20; end++; break;
    case 'g': shift = 30; end++; break;
    case 't': shift = 40; end++; break;
    default: return -1;
    }
    if (shift) {
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
    }
    if (*end != '\0') return -1;
    if (shift && v > (~0ULL >> shift)) return -1;
    *out = v << shift;
    return 0;
}

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
