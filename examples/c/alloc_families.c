/*
 * alloc_families - allocate, touch and free device memory through every allocation family
 * of the CUDA driver API, printing one machine-readable line per operation:
 *
 *   family=<name> op=<alloc|free> bytes=<n> rc=<CUresult> free=<cuMemGetInfo free> total=<total>
 *
 * (plus op=copy lines with match=<0|1> for the families that memcpy can reach, op=hold when
 * --hold is given, and op=<step> lines for a failing intermediate step). A nonzero rc is
 * data, not a crash: every failure is printed and the program goes on; the exit status is
 * 1 if any call that should have succeeded did not.
 *
 * usage: alloc_families [--family NAME|all] [--size BYTES] [--hold N] [--device I]
 *                       [--path linked|dlopen|gpa] [--ptsz] [--ctx-create]
 *                       [--stream default|created] [--no-copy] [--wait SECONDS]
 *                       [--wait-stdin] [--resolve-all]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

enum family {
    F_ALLOC,
    F_PITCH,
    F_MANAGED,
    F_ASYNC,
    F_POOL,
    F_CREATE,
    F_ARRAY,
    F_ARRAY3D,
    F_MIPMAP,
    F_COUNT
};

/* Printed name (the exported ABI symbol) and the base name accepted as an alias. */
static const char *const FAMILY_NAMES[F_COUNT][2] = {
    {"cuMemAlloc_v2", "cuMemAlloc"},
    {"cuMemAllocPitch_v2", "cuMemAllocPitch"},
    {"cuMemAllocManaged", "cuMemAllocManaged"},
    {"cuMemAllocAsync", "cuMemAllocAsync"},
    {"cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync"},
    {"cuMemCreate", "cuMemCreate"},
    {"cuArrayCreate_v2", "cuArrayCreate"},
    {"cuArray3DCreate_v2", "cuArray3DCreate"},
    {"cuMipmappedArrayCreate", "cuMipmappedArrayCreate"},
};

#define COPY_WINDOW ((size_t)1 << 20) /* bytes copied at each end of a linear block */
#define MIPMAP_LEVELS 3u

struct opts {
    int family; /* -1: all */
    unsigned long long size;
    int hold; /* 0: not given (one block) */
    int device;
    int path;
    int ptsz;
    int ctx_create;
    int created_stream;
    int copy;
    double wait_s;
    int wait_stdin;
    int resolve_all;
};

struct block {
    int live;
    size_t bytes; /* what the family actually asked the driver for */
    CUdeviceptr ptr;
    CUmemGenericAllocationHandle handle;
    CUarray array;
    CUmipmappedArray mipmap;
    int reserved, mapped; /* cuMemCreate: which mapping steps succeeded */
};

static struct opts O;
static CUdevice dev;
static CUstream stream;   /* for the stream-ordered families */
static CUmemoryPool pool; /* F_POOL's own pool */
static int failures;

static void usage(FILE *f) {
    fprintf(f,
            "usage: alloc_families [--family NAME|all] [--size BYTES] [--hold N] [--device I]\n"
            "                      [--path linked|dlopen|gpa] [--ptsz] [--ctx-create]\n"
            "                      [--stream default|created] [--no-copy] [--wait SECONDS]\n"
            "                      [--wait-stdin] [--resolve-all]\n"
            "families:");
    for (int i = 0; i < F_COUNT; i++) fprintf(f, " %s", FAMILY_NAMES[i][0]);
    fprintf(f, "\n");
}

static void print_line(int fam, const char *op, unsigned long long bytes, CUresult rc, const char *extra) {
    size_t fr = 0, tot = 0;
    CUresult mrc = CU(cuMemGetInfo, &fr, &tot);
    if (mrc == CUDA_SUCCESS)
        printf("family=%s op=%s bytes=%llu rc=%d free=%zu total=%zu%s%s\n", FAMILY_NAMES[fam][0], op, bytes,
               rc, fr, tot, extra ? " " : "", extra ? extra : "");
    else
        printf("family=%s op=%s bytes=%llu rc=%d free=-1 total=-1 meminfo_rc=%d%s%s\n", FAMILY_NAMES[fam][0],
               op, bytes, rc, mrc, extra ? " " : "", extra ? extra : "");
    fflush(stdout);
}

/* Reports a failing step that has no line of its own. Returns rc. */
static CUresult step(int fam, const char *op, unsigned long long bytes, CUresult rc) {
    if (rc != CUDA_SUCCESS) {
        failures++;
        print_line(fam, op, bytes, rc, NULL);
    }
    return rc;
}

static size_t round_up(size_t v, size_t to) { return to ? (v + to - 1) / to * to : v; }

static size_t isqrt_ceil(size_t n) {
    size_t r = 1;
    while (r * r < n) r++;
    return r;
}

static size_t icbrt_ceil(size_t n) {
    size_t r = 1;
    while (r * r * r < n) r++;
    return r;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* 2D shape of about `n` floats: width a multiple of 32. */
static void shape_2d(size_t n, size_t *w, size_t *h) {
    if (n == 0) n = 1;
    *w = round_up(isqrt_ceil(n), 32);
    *h = (n + *w - 1) / *w;
}

static void shape_3d(size_t n, size_t *w, size_t *h, size_t *d) {
    if (n == 0) n = 1;
    *w = round_up(icbrt_ceil(n), 32);
    *h = *w;
    *d = (n + *w * *h - 1) / (*w * *h);
}

/* ---- linear memory round trip ------------------------------------------------------ */

static unsigned char pattern_byte(size_t off, unsigned seed) {
    return (unsigned char)((off * 131u + seed * 17u + (off >> 12)) & 0xffu);
}

static void copy_check(int fam, const struct block *b, unsigned seed) {
    size_t win = b->bytes < COPY_WINDOW ? b->bytes : COPY_WINDOW;
    size_t offs[2] = {0, b->bytes - win};
    int nwin = (b->bytes > win) ? 2 : 1;
    unsigned char *src = malloc(win), *dst = malloc(win);
    CUresult rc = CUDA_SUCCESS;
    int match = 1;
    if (!src || !dst) {
        fprintf(stderr, "error: out of host memory\n");
        exit(1);
    }
    for (int k = 0; k < nwin && rc == CUDA_SUCCESS; k++) {
        for (size_t i = 0; i < win; i++) src[i] = pattern_byte(offs[k] + i, seed);
        rc = CU(cuMemcpyHtoD, b->ptr + offs[k], src, win);
    }
    for (int k = 0; k < nwin && rc == CUDA_SUCCESS; k++) {
        memset(dst, 0, win);
        rc = CU(cuMemcpyDtoH, dst, b->ptr + offs[k], win);
        for (size_t i = 0; rc == CUDA_SUCCESS && i < win; i++)
            if (dst[i] != pattern_byte(offs[k] + i, seed)) {
                match = 0;
                break;
            }
    }
    if (rc != CUDA_SUCCESS) match = 0;
    if (!match) failures++;
    char extra[32];
    snprintf(extra, sizeof extra, "match=%d", match);
    print_line(fam, "copy", (unsigned long long)(win * (size_t)nwin), rc, extra);
    free(src);
    free(dst);
}

static int is_linear(int fam) { return fam != F_ARRAY && fam != F_ARRAY3D && fam != F_MIPMAP; }

/* ---- per-family allocate / free ---------------------------------------------------- */

static size_t granularity;

static CUmemAllocationProp device_prop(void) {
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = dev;
    return p;
}

/* Allocates one block; prints the op=alloc line. Returns the family's allocation rc. */
static CUresult do_alloc(int fam, struct block *b) {
    size_t size = (size_t)O.size;
    CUresult rc = CUDA_SUCCESS;
    memset(b, 0, sizeof *b);
    switch (fam) {
    case F_ALLOC:
        b->bytes = size;
        rc = CU(cuMemAlloc, &b->ptr, size);
        break;
    case F_PITCH: {
        size_t width = size >= 4096 ? 4096 : round_up(max_sz(size, 4), 4);
        size_t height = (size + width - 1) / width;
        size_t pitch = 0;
        if (height == 0) height = 1;
        rc = CU(cuMemAllocPitch, &b->ptr, &pitch, width, height, 4);
        b->bytes = rc == CUDA_SUCCESS ? pitch * height : width * height;
        break;
    }
    case F_MANAGED:
        b->bytes = size;
        rc = CU(cuMemAllocManaged, &b->ptr, size, CU_MEM_ATTACH_GLOBAL);
        break;
    case F_ASYNC:
        b->bytes = size;
        rc = CU(cuMemAllocAsync, &b->ptr, size, stream);
        if (rc == CUDA_SUCCESS) step(fam, "stream_sync", size, CU(cuStreamSynchronize, stream));
        break;
    case F_POOL:
        b->bytes = size;
        rc = CU(cuMemAllocFromPoolAsync, &b->ptr, size, pool, stream);
        if (rc == CUDA_SUCCESS) step(fam, "stream_sync", size, CU(cuStreamSynchronize, stream));
        break;
    case F_CREATE: {
        CUmemAllocationProp prop = device_prop();
        b->bytes = round_up(size ? size : 1, granularity);
        rc = CU(cuMemCreate, &b->handle, b->bytes, &prop, 0ULL);
        if (rc != CUDA_SUCCESS) break;
        /* The mapping steps are reported on lines of their own if they fail. */
        print_line(fam, "alloc", b->bytes, rc, NULL);
        b->live = 2; /* handle held, mapping not complete yet: no copy */
        if (step(fam, "reserve", b->bytes, CU(cuMemAddressReserve, &b->ptr, b->bytes, 0, 0ULL, 0ULL)) != CUDA_SUCCESS)
            return rc;
        b->reserved = 1;
        if (step(fam, "map", b->bytes, CU(cuMemMap, b->ptr, b->bytes, 0, b->handle, 0ULL)) != CUDA_SUCCESS)
            return rc;
        b->mapped = 1;
        CUmemAccessDesc acc;
        memset(&acc, 0, sizeof acc);
        acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        acc.location.id = dev;
        acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        if (step(fam, "set_access", b->bytes, CU(cuMemSetAccess, b->ptr, b->bytes, &acc, 1)) != CUDA_SUCCESS)
            return rc;
        b->live = 1; /* fully usable: the copy check may run */
        return rc;
    }
    case F_ARRAY: {
        CUDA_ARRAY_DESCRIPTOR d;
        memset(&d, 0, sizeof d);
        shape_2d((size + 3) / 4, &d.Width, &d.Height);
        d.Format = CU_AD_FORMAT_FLOAT;
        d.NumChannels = 1;
        b->bytes = d.Width * d.Height * 4;
        rc = CU(cuArrayCreate, &b->array, &d);
        break;
    }
    case F_ARRAY3D: {
        CUDA_ARRAY3D_DESCRIPTOR d;
        memset(&d, 0, sizeof d);
        shape_3d((size + 3) / 4, &d.Width, &d.Height, &d.Depth);
        d.Format = CU_AD_FORMAT_FLOAT;
        d.NumChannels = 1;
        b->bytes = d.Width * d.Height * d.Depth * 4;
        rc = CU(cuArray3DCreate, &b->array, &d);
        break;
    }
    case F_MIPMAP: {
        CUDA_ARRAY3D_DESCRIPTOR d;
        memset(&d, 0, sizeof d);
        /* 3 levels hold 1 + 1/4 + 1/16 = 21/16 of the base level. */
        shape_2d((size + 3) / 4 * 16 / 21, &d.Width, &d.Height);
        d.Format = CU_AD_FORMAT_FLOAT;
        d.NumChannels = 1;
        b->bytes = 0;
        for (unsigned l = 0; l < MIPMAP_LEVELS; l++)
            b->bytes += max_sz(d.Width >> l, 1) * max_sz(d.Height >> l, 1) * 4;
        rc = CU(cuMipmappedArrayCreate, &b->mipmap, &d, MIPMAP_LEVELS);
        break;
    }
    default: break;
    }
    if (rc == CUDA_SUCCESS) b->live = 1;
    print_line(fam, "alloc", b->bytes, rc, NULL);
    return rc;
}

/* Frees one block; prints the op=free line. */
static void do_free(int fam, struct block *b) {
    CUresult rc = CUDA_SUCCESS;
    if (!b->live) return;
    switch (fam) {
    case F_ALLOC:
    case F_PITCH:
    case F_MANAGED: rc = CU(cuMemFree, b->ptr); break;
    case F_ASYNC:
    case F_POOL:
        rc = CU(cuMemFreeAsync, b->ptr, stream);
        if (rc == CUDA_SUCCESS) rc = CU(cuStreamSynchronize, stream);
        if (rc == CUDA_SUCCESS && fam == F_POOL) rc = CU(cuMemPoolTrimTo, pool, 0);
        break;
    case F_CREATE: {
        if (b->mapped) step(fam, "unmap", b->bytes, CU(cuMemUnmap, b->ptr, b->bytes));
        rc = CU(cuMemRelease, b->handle);
        if (b->reserved) step(fam, "address_free", b->bytes, CU(cuMemAddressFree, b->ptr, b->bytes));
        break;
    }
    case F_ARRAY:
    case F_ARRAY3D: rc = CU(cuArrayDestroy, b->array); break;
    case F_MIPMAP: rc = CU(cuMipmappedArrayDestroy, b->mipmap); break;
    default: break;
    }
    if (rc != CUDA_SUCCESS) failures++;
    b->live = 0;
    print_line(fam, "free", b->bytes, rc, NULL);
}

/* ---- per-family setup ------------------------------------------------------------- */

static int family_setup(int fam) {
    if (fam == F_POOL) {
        CUmemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
        props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        props.location.id = dev;
        pool = NULL;
        if (step(fam, "pool_create", 0, CU(cuMemPoolCreate, &pool, &props)) != CUDA_SUCCESS) return -1;
    }
    if (fam == F_CREATE && granularity == 0) {
        CUmemAllocationProp prop = device_prop();
        size_t g = 0;
        if (step(fam, "granularity", 0, CU(cuMemGetAllocationGranularity, &g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)) !=
            CUDA_SUCCESS)
            return -1;
        granularity = g ? g : 1;
    }
    return 0;
}

static void family_teardown(int fam) {
    if (fam == F_POOL && pool) {
        step(fam, "pool_destroy", 0, CU(cuMemPoolDestroy, pool));
        pool = NULL;
    }
}

static void wait_phase(void) {
    if (O.wait_s > 0) {
        double end = now_s() + O.wait_s;
        while (now_s() < end) {
            double left = end - now_s();
            usleep(left > 0.1 ? 100000 : (useconds_t)(left * 1e6) + 1);
        }
    }
    if (O.wait_stdin) {
        char buf[256];
        (void)!fgets(buf, sizeof buf, stdin); /* a line or EOF */
    }
}

static void run_family(int fam) {
    int n = O.hold > 0 ? O.hold : 1;
    struct block *blocks = calloc((size_t)n, sizeof *blocks);
    if (!blocks) {
        fprintf(stderr, "error: out of host memory\n");
        exit(1);
    }
    if (family_setup(fam) == 0) {
        unsigned long long held = 0;
        int nheld = 0;
        CUresult first_rc = CUDA_SUCCESS;
        for (int i = 0; i < n; i++) {
            CUresult rc = do_alloc(fam, &blocks[i]);
            if (rc != CUDA_SUCCESS) {
                failures++;
                if (first_rc == CUDA_SUCCESS) first_rc = rc;
                continue;
            }
            held += blocks[i].bytes;
            nheld++;
            if (O.copy && is_linear(fam) && blocks[i].live == 1 && blocks[i].bytes > 0) copy_check(fam, &blocks[i], (unsigned)i + 1);
        }
        if (O.hold > 0) {
            char extra[64];
            snprintf(extra, sizeof extra, "blocks=%d requested=%d", nheld, n);
            print_line(fam, "hold", held, first_rc, extra);
        }
        wait_phase();
        for (int i = 0; i < n; i++) do_free(fam, &blocks[i]);
    }
    family_teardown(fam);
    free(blocks);
}

/* ---- main --------------------------------------------------------------------------- */

static int parse_family(const char *s) {
    if (strcmp(s, "all") == 0) return -1;
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(s, FAMILY_NAMES[i][0]) == 0 || strcmp(s, FAMILY_NAMES[i][1]) == 0) return i;
    return -2;
}

static void parse_args(int argc, char **argv) {
    O.family = -1;
    O.size = 64ULL << 20;
    O.path = drv_default_path();
    O.created_stream = 1;
    O.copy = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                                                \
    do {                                                                                            \
        if (!v) {                                                                                   \
            fprintf(stderr, "error: %s needs a value\n", a);                                        \
            exit(2);                                                                                \
        }                                                                                           \
        i++;                                                                                        \
    } while (0)
        if (strcmp(a, "--family") == 0) {
            NEED_VALUE();
            O.family = parse_family(v);
            if (O.family == -2) {
                fprintf(stderr, "error: unknown family %s\n", v);
                usage(stderr);
                exit(2);
            }
        } else if (strcmp(a, "--size") == 0) {
            NEED_VALUE();
            if (parse_size(v, &O.size) != 0) {
                fprintf(stderr, "error: bad --size %s\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--hold") == 0) {
            NEED_VALUE();
            O.hold = atoi(v);
            if (O.hold < 1) {
                fprintf(stderr, "error: --hold needs N >= 1\n");
                exit(2);
            }
        } else if (strcmp(a, "--device") == 0) {
            NEED_VALUE();
            O.device = atoi(v);
        } else if (strcmp(a, "--path") == 0) {
            NEED_VALUE();
            O.path = drv_parse_path(v);
            if (O.path < 0) {
                fprintf(stderr, "error: unknown path %s (linked|dlopen|gpa)\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--ptsz") == 0) {
            O.ptsz = 1;
        } else if (strcmp(a, "--ctx-create") == 0) {
            O.ctx_create = 1;
        } else if (strcmp(a, "--stream") == 0) {
            NEED_VALUE();
            if (strcmp(v, "default") == 0) O.created_stream = 0;
            else if (strcmp(v, "created") == 0) O.created_stream = 1;
            else {
                fprintf(stderr, "error: --stream default|created\n");
                exit(2);
            }
        } else if (strcmp(a, "--no-copy") == 0) {
            O.copy = 0;
        } else if (strcmp(a, "--wait") == 0) {
            NEED_VALUE();
            O.wait_s = atof(v);
        } else if (strcmp(a, "--wait-stdin") == 0) {
            O.wait_stdin = 1;
        } else if (strcmp(a, "--resolve-all") == 0) {
            O.resolve_all = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "error: unknown argument %s\n", a);
            usage(stderr);
            exit(2);
        }
#undef NEED_VALUE
    }
}

static CUresult setup_step(const char *what, CUresult rc) {
    if (rc != CUDA_SUCCESS) {
        printf("error step=%s rc=%d name=%s\n", what, rc, drv_err_name(rc));
        fflush(stdout);
    }
    return rc;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    if (drv_load(O.path, O.ptsz) != 0) return 1;
    drv_print_resolver(O.path);
    if (O.resolve_all) drv_print_all_resolved();

    if (setup_step("cuInit", CU(cuInit, 0))) return 1;
    if (setup_step("cuDeviceGet", CU(cuDeviceGet, &dev, O.device))) return 1;
    CUcontext ctx = NULL;
    if (O.ctx_create) {
        if (setup_step("cuCtxCreate_v2", CU(cuCtxCreate, &ctx, 0, dev))) return 1;
    } else {
        if (setup_step("cuDevicePrimaryCtxRetain", CU(cuDevicePrimaryCtxRetain, &ctx, dev))) return 1;
        if (setup_step("cuCtxSetCurrent", CU(cuCtxSetCurrent, ctx))) return 1;
    }
    stream = NULL;
    if (O.created_stream && setup_step("cuStreamCreate", CU(cuStreamCreate, &stream, CU_STREAM_DEFAULT)))
        return 1;

    for (int f = 0; f < F_COUNT; f++)
        if (O.family == -1 || O.family == f) run_family(f);

    if (stream && CU(cuStreamDestroy, stream) != CUDA_SUCCESS) failures++;
    if (O.ctx_create) {
        if (setup_step("cuCtxDestroy_v2", CU(cuCtxDestroy, ctx))) failures++;
    } else {
        if (setup_step("cuDevicePrimaryCtxRelease_v2", CU(cuDevicePrimaryCtxRelease, dev))) failures++;
    }
    printf("done failures=%d\n", failures);
    return failures ? 1 : 0;
}
