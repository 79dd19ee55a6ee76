/*
 * launch - launch kernels of examples/ptx/spin.ptx through one launch path of the CUDA driver
 * API and time the run with events. Prints, after the resolver line:
 *
 *   mode=<m> kernels=<launched> wall_ms=<host time> gpu_ms=<event elapsed> rc=<first error or 0>
 *     kernel=<name> grid=<g> block=<b> stream=<default|created> sms=<SM count>
 *     counter=<blocks counted by the kernels> blocks=<blocks launched>
 *
 * (one line). On a real GPU counter == blocks once the run is done; simgpu does not execute
 * kernels, so there counter stays 0.
 *
 * modes: open   --count launches back to back on one stream, then one synchronize
 *        sync   launch + cuStreamSynchronize, --count times
 *        graph  capture --graph-kernels launches into a graph, then cuGraphLaunch it --count times
 *        coop   cuLaunchCooperativeKernel, --count times, then one synchronize
 *        ex     cuLaunchKernelEx (with --coop-attr: the cooperative attribute), then one synchronize
 *        request  a latency-sensitive client: --request-kernels launches + cuStreamSynchronize
 *               per request, --gap-us of host work (a busy CPU) between a request's launches
 *               (the work between layers), and idle host time between requests drawn uniformly from
 *               0 to 2 x --think-us (a fixed seed: runs are comparable) (closed loop); adds
 *               requests=<n> p50_us= p99_us= p999_us= max_us= to the line, and --latencies FILE
 *               writes every request's latency in microseconds, one per line
 * --duration S runs until S seconds of wall time have passed instead of --count iterations.
 * --inflight D (open mode) keeps at most D launches in flight: a saturating neighbour with a
 *   bounded queue, as frameworks keep one (each launch waits for the one D before it).
 * --shapes N (open and sync modes) cycles through N kernel shapes: launch i has a grid of
 *   --grid x (1 + i mod N) blocks, so with --grid at the SM count, 1 to N waves (a program
 *   cycling through its kernels, each with its own cost).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "spin_ptx.h"

enum mode { M_OPEN, M_SYNC, M_GRAPH, M_COOP, M_EX, M_REQUEST };
static const char *const MODE_NAMES[] = {"open", "sync", "graph", "coop", "ex", "request"};
#define N_MODES 6
#define MAX_INFLIGHT 64

static struct {
    int mode;
    unsigned long long count;
    unsigned graph_kernels;
    const char *kernel;
    unsigned grid, block;
    double duration;
    int created_stream;
    int coop_attr;
    const char *ptx_file;
    int path, ptsz, device, ctx_create, resolve_all;
    unsigned request_kernels, think_us, gap_us, inflight, shapes;
    const char *latencies;
} O;

static void usage(FILE *f) {
    fprintf(f, "usage: launch [--mode open|sync|graph|coop|ex|request] [--count N] [--graph-kernels N]\n"
               "              [--request-kernels N] [--think-us N] [--gap-us N] [--latencies FILE]\n"
               "              [--inflight D] [--shapes N]\n"
               "              [--kernel NAME] [--grid N] [--block N] [--duration S]\n"
               "              [--stream default|created] [--coop-attr] [--ptx FILE]\n"
               "              [--path linked|dlopen|gpa] [--ptsz] [--device I] [--ctx-create]\n"
               "              [--resolve-all]\n"
               "kernels:");
    for (size_t i = 0; i < sizeof SPIN_KERNELS / sizeof SPIN_KERNELS[0]; i++) fprintf(f, " %s", SPIN_KERNELS[i]);
    fprintf(f, "\n");
}

static unsigned parse_uint(const char *flag, const char *v) {
    char *end = NULL;
    unsigned long x = strtoul(v, &end, 10);
    if (!*v || *end || x == 0 || x > 0x7fffffffUL) {
        fprintf(stderr, "error: %s needs a positive integer, got %s\n", flag, v);
        exit(2);
    }
    return (unsigned)x;
}

static void parse_args(int argc, char **argv) {
    O.mode = M_OPEN;
    O.count = 100;
    O.graph_kernels = 10;
    O.kernel = "spin_100us";
    O.grid = 1;
    O.block = 32;
    O.created_stream = 1;
    O.path = drv_default_path();
    O.request_kernels = 4;
    O.shapes = 1;
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
        if (strcmp(a, "--mode") == 0) {
            NEED_VALUE();
            O.mode = -1;
            for (int m = 0; m < N_MODES; m++)
                if (strcmp(v, MODE_NAMES[m]) == 0) O.mode = m;
            if (O.mode < 0) {
                fprintf(stderr, "error: unknown mode %s\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--count") == 0) {
            NEED_VALUE();
            O.count = parse_uint(a, v);
        } else if (strcmp(a, "--graph-kernels") == 0) {
            NEED_VALUE();
            O.graph_kernels = parse_uint(a, v);
        } else if (strcmp(a, "--request-kernels") == 0) {
            NEED_VALUE();
            O.request_kernels = parse_uint(a, v);
        } else if (strcmp(a, "--think-us") == 0) {
            NEED_VALUE();
            O.think_us = strcmp(v, "0") == 0 ? 0 : parse_uint(a, v);
        } else if (strcmp(a, "--gap-us") == 0) {
            NEED_VALUE();
            O.gap_us = strcmp(v, "0") == 0 ? 0 : parse_uint(a, v);
        } else if (strcmp(a, "--latencies") == 0) {
            NEED_VALUE();
            O.latencies = v;
        } else if (strcmp(a, "--inflight") == 0) {
            NEED_VALUE();
            O.inflight = parse_uint(a, v);
            if (O.inflight > MAX_INFLIGHT) {
                fprintf(stderr, "error: --inflight is at most %d\n", MAX_INFLIGHT);
                exit(2);
            }
        } else if (strcmp(a, "--shapes") == 0) {
            NEED_VALUE();
            O.shapes = parse_uint(a, v);
            if (O.shapes < 1) {
                fprintf(stderr, "error: --shapes is at least 1\n");
                exit(2);
            }
        } else if (strcmp(a, "--kernel") == 0) {
            NEED_VALUE();
            O.kernel = v;
        } else if (strcmp(a, "--grid") == 0) {
            NEED_VALUE();
            O.grid = parse_uint(a, v);
        } else if (strcmp(a, "--block") == 0) {
            NEED_VALUE();
            O.block = parse_uint(a, v);
        } else if (strcmp(a, "--duration") == 0) {
            NEED_VALUE();
            O.duration = atof(v);
            if (O.duration <= 0) {
                fprintf(stderr, "error: --duration needs seconds > 0\n");
                exit(2);
            }
        } else if (strcmp(a, "--stream") == 0) {
            NEED_VALUE();
            if (strcmp(v, "default") == 0) O.created_stream = 0;
            else if (strcmp(v, "created") == 0) O.created_stream = 1;
            else {
                fprintf(stderr, "error: --stream default|created\n");
                exit(2);
            }
        } else if (strcmp(a, "--coop-attr") == 0) {
            O.coop_attr = 1;
        } else if (strcmp(a, "--ptx") == 0) {
            NEED_VALUE();
            O.ptx_file = v;
        } else if (strcmp(a, "--path") == 0) {
            NEED_VALUE();
            O.path = drv_parse_path(v);
            if (O.path < 0) {
                fprintf(stderr, "error: unknown path %s (linked|dlopen|gpa)\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--ptsz") == 0) {
            O.ptsz = 1;
        } else if (strcmp(a, "--device") == 0) {
            NEED_VALUE();
            O.device = atoi(v);
        } else if (strcmp(a, "--ctx-create") == 0) {
            O.ctx_create = 1;
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
    if (O.shapes > 1 && O.mode != M_OPEN && O.mode != M_SYNC) {
        fprintf(stderr, "error: --shapes is for --mode open and sync\n");
        exit(2);
    }
    if ((unsigned long long)O.grid * O.shapes > 0x7fffffffull) {
        fprintf(stderr, "error: --grid x --shapes is more than a grid's 2^31 - 1 blocks\n");
        exit(2);
    }
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

static CUresult fatal(const char *what, CUresult rc) {
    if (rc != CUDA_SUCCESS) {
        printf("error step=%s rc=%d name=%s\n", what, rc, drv_err_name(rc));
        fflush(stdout);
    }
    return rc;
}

static CUfunction fn;
static CUstream stream;
static CUdeviceptr counter;
/* Launches made and their blocks (with --shapes, grids differ from one launch to the next). */
static unsigned long long launches_made, blocks_made;

/* One launch through the path of the selected mode (open/sync/coop/ex; graph capture too). */
static CUresult launch_one(CUstream s) {
    void *params[] = {&counter};
    if (O.shapes > 1) {
        unsigned grid = O.grid * (1 + (unsigned)(launches_made++ % O.shapes));
        CUresult rc = CU(cuLaunchKernel, fn, grid, 1, 1, O.block, 1, 1, 0, s, params, NULL);
        if (rc == CUDA_SUCCESS) blocks_made += grid;
        return rc;
    }
    switch (O.mode) {
    case M_COOP: return CU(cuLaunchCooperativeKernel, fn, O.grid, 1, 1, O.block, 1, 1, 0, s, params);
    case M_EX: {
        CUlaunchAttribute attr;
        memset(&attr, 0, sizeof attr);
        attr.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
        attr.value.cooperative = 1;
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = O.grid;
        cfg.gridDimY = 1;
        cfg.gridDimZ = 1;
        cfg.blockDimX = O.block;
        cfg.blockDimY = 1;
        cfg.blockDimZ = 1;
        cfg.sharedMemBytes = 0;
        cfg.hStream = s;
        cfg.attrs = O.coop_attr ? &attr : NULL;
        cfg.numAttrs = O.coop_attr ? 1 : 0;
        return CU(cuLaunchKernelEx, &cfg, fn, params, NULL);
    }
    default: return CU(cuLaunchKernel, fn, O.grid, 1, 1, O.block, 1, 1, 0, s, params, NULL);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of n sorted values (nearest rank). */
static double quantile(const double *v, size_t n, double q) {
    if (n == 0) return 0.0;
    size_t k = (size_t)(q * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

/* Host work between a request's launches: the CPU is busy (a sleep would measure the
 * scheduler's wake-up latency instead). */
static void spin_us(unsigned us) {
    double end = now_s() + us * 1e-6;
    while (now_s() < end) {
    }
}

static void sleep_us(unsigned us) {
    struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    if (drv_load(O.path, O.ptsz) != 0) return 1;
    drv_print_resolver(O.path);
    if (O.resolve_all) drv_print_all_resolved();

    CUdevice dev;
    CUcontext ctx = NULL;
    CUmodule mod = NULL;
    if (fatal("cuInit", CU(cuInit, 0))) return 1;
    if (fatal("cuDeviceGet", CU(cuDeviceGet, &dev, O.device))) return 1;
    if (O.ctx_create) {
        if (fatal("cuCtxCreate_v2", CU(cuCtxCreate, &ctx, 0, dev))) return 1;
    } else {
        if (fatal("cuDevicePrimaryCtxRetain", CU(cuDevicePrimaryCtxRetain, &ctx, dev))) return 1;
        if (fatal("cuCtxSetCurrent", CU(cuCtxSetCurrent, ctx))) return 1;
    }
    int sms = 0;
    if (fatal("cuDeviceGetAttribute", CU(cuDeviceGetAttribute, &sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)))
        return 1;

    char *image = NULL;
    if (O.ptx_file && !(image = read_file(O.ptx_file))) return 1;
    if (fatal("cuModuleLoadData", CU(cuModuleLoadData, &mod, image ? image : SPIN_PTX))) return 1;
    free(image);
    if (fatal("cuModuleGetFunction", CU(cuModuleGetFunction, &fn, mod, O.kernel))) return 1;

    if (fatal("cuMemAlloc_v2", CU(cuMemAlloc, &counter, sizeof(unsigned long long)))) return 1;
    if (fatal("cuMemsetD8_v2", CU(cuMemsetD8, counter, 0, sizeof(unsigned long long)))) return 1;
    /* A memset of device memory may return before it is done, and under --ptsz it runs on
     * the per-thread stream, which does not order with a created stream: wait for it. */
    if (fatal("cuStreamSynchronize", CU(cuStreamSynchronize, NULL))) return 1;

    stream = NULL;
    if (O.created_stream && fatal("cuStreamCreate", CU(cuStreamCreate, &stream, CU_STREAM_DEFAULT))) return 1;

    CUevent ev_start = NULL, ev_stop = NULL;
    if (fatal("cuEventCreate", CU(cuEventCreate, &ev_start, CU_EVENT_DEFAULT))) return 1;
    if (fatal("cuEventCreate", CU(cuEventCreate, &ev_stop, CU_EVENT_DEFAULT))) return 1;

    /* Graph mode: capture once, before the timed run. The legacy default stream cannot be
     * captured, so capture happens on a created stream; the graph is launched on `stream`. */
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;
    CUresult first = CUDA_SUCCESS;
#define NOTE(rc)                                                                                    \
    do {                                                                                            \
        CUresult r_ = (rc);                                                                         \
        if (r_ != CUDA_SUCCESS && first == CUDA_SUCCESS) first = r_;                                \
    } while (0)
    if (O.mode == M_GRAPH) {
        CUstream cs = stream;
        if (!cs && fatal("cuStreamCreate", CU(cuStreamCreate, &cs, CU_STREAM_NON_BLOCKING))) return 1;
        CUresult rc = CU(cuStreamBeginCapture, cs, CU_STREAM_CAPTURE_MODE_GLOBAL);
        NOTE(rc);
        if (rc == CUDA_SUCCESS) {
            for (unsigned k = 0; rc == CUDA_SUCCESS && k < O.graph_kernels; k++) {
                rc = launch_one(cs);
                NOTE(rc);
            }
            /* End the capture even after a failed launch, so the stream is usable again. */
            NOTE(CU(cuStreamEndCapture, cs, &graph));
        }
        if (first == CUDA_SUCCESS) NOTE(CU(cuGraphInstantiateWithFlags, &exec, graph, 0ULL));
        if (cs != stream) NOTE(CU(cuStreamDestroy, cs));
    }

    /* --inflight: a ring of events, one recorded after each launch. */
    CUevent ring[MAX_INFLIGHT];
    unsigned ring_n = O.mode == M_OPEN ? O.inflight : 0;
    for (unsigned k = 0; k < ring_n; k++)
        if (fatal("cuEventCreate", CU(cuEventCreate, &ring[k], CU_EVENT_DISABLE_TIMING))) return 1;
    unsigned seed = 1;
    size_t lat_cap = 0, lat_n = 0;
    double *lat = NULL;

    unsigned long long kernels = 0;
    double t0 = now_s(), deadline = t0 + O.duration;
    if (first == CUDA_SUCCESS) NOTE(CU(cuEventRecord, ev_start, stream));
    for (unsigned long long it = 0; first == CUDA_SUCCESS; it++) {
        if (O.duration > 0 ? now_s() >= deadline : it >= O.count) break;
        CUresult rc = CUDA_SUCCESS;
        if (O.mode == M_GRAPH) {
            rc = CU(cuGraphLaunch, exec, stream);
            if (rc == CUDA_SUCCESS) kernels += O.graph_kernels;
        } else if (O.mode == M_REQUEST) {
            double r0 = now_s();
            for (unsigned k = 0; rc == CUDA_SUCCESS && k < O.request_kernels; k++) {
                if (k && O.gap_us) spin_us(O.gap_us);
                rc = launch_one(stream);
                if (rc == CUDA_SUCCESS) kernels++;
            }
            if (rc == CUDA_SUCCESS) rc = CU(cuStreamSynchronize, stream);
            if (rc == CUDA_SUCCESS) {
                if (lat_n == lat_cap) {
                    lat_cap = lat_cap ? lat_cap * 2 : 4096;
                    double *nl = realloc(lat, lat_cap * sizeof *lat);
                    if (!nl) {
                        fprintf(stderr, "error: out of host memory\n");
                        return 1;
                    }
                    lat = nl;
                }
                lat[lat_n++] = (now_s() - r0) * 1e6;
            }
            if (rc == CUDA_SUCCESS && O.think_us) sleep_us((unsigned)(rand_r(&seed) % (2u * O.think_us + 1u)));
        } else {
            if (ring_n && it >= ring_n) rc = CU(cuEventSynchronize, ring[it % ring_n]);
            if (rc == CUDA_SUCCESS) rc = launch_one(stream);
            if (rc == CUDA_SUCCESS) kernels++;
            if (rc == CUDA_SUCCESS && ring_n) rc = CU(cuEventRecord, ring[it % ring_n], stream);
            if (rc == CUDA_SUCCESS && O.mode == M_SYNC) rc = CU(cuStreamSynchronize, stream);
        }
        NOTE(rc);
    }
    CUresult rec = CU(cuEventRecord, ev_stop, stream);
    NOTE(rec);
    NOTE(CU(cuStreamSynchronize, stream));
    if (rec == CUDA_SUCCESS) NOTE(CU(cuEventSynchronize, ev_stop));
    double wall_ms = (now_s() - t0) * 1e3;
    float gpu_ms = -1.0f;
    if (rec == CUDA_SUCCESS && CU(cuEventElapsedTime, &gpu_ms, ev_start, ev_stop) != CUDA_SUCCESS) gpu_ms = -1.0f;

    unsigned long long done = 0;
    NOTE(CU(cuMemcpyDtoH, &done, counter, sizeof done));

    printf("mode=%s kernels=%llu wall_ms=%.3f gpu_ms=%.3f rc=%d kernel=%s grid=%u block=%u stream=%s sms=%d "
           "counter=%llu blocks=%llu",
           MODE_NAMES[O.mode], kernels, wall_ms, (double)gpu_ms, first, O.kernel, O.grid, O.block,
           O.created_stream ? "created" : "default", sms, done, O.shapes > 1 ? blocks_made : kernels * O.grid);
    if (O.mode == M_REQUEST) {
        if (O.latencies) {
            FILE *lf = fopen(O.latencies, "w");
            if (!lf) perror(O.latencies);
            for (size_t k = 0; lf && k < lat_n; k++) fprintf(lf, "%.3f\n", lat[k]);
            if (lf) fclose(lf);
        }
        qsort(lat, lat_n, sizeof *lat, cmp_double);
        printf(" requests=%zu p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f", lat_n, quantile(lat, lat_n, 0.5),
               quantile(lat, lat_n, 0.99), quantile(lat, lat_n, 0.999), lat_n ? lat[lat_n - 1] : 0.0);
    }
    printf("\n");
    free(lat);
    for (unsigned k = 0; k < ring_n; k++) CU(cuEventDestroy, ring[k]);
    fflush(stdout);
    if (first != CUDA_SUCCESS) fprintf(stderr, "error: first failure rc=%d (%s)\n", first, drv_err_name(first));

    /* Teardown: failures here are reported but do not change the run's rc. */
    if (exec) CU(cuGraphExecDestroy, exec);
    if (graph) CU(cuGraphDestroy, graph);
    CU(cuEventDestroy, ev_start);
    CU(cuEventDestroy, ev_stop);
    if (stream) CU(cuStreamDestroy, stream);
    CU(cuMemFree, counter);
    CU(cuModuleUnload, mod);
    if (O.ctx_create) CU(cuCtxDestroy, ctx);
    else CU(cuDevicePrimaryCtxRelease, dev);
    return first == CUDA_SUCCESS ? 0 : 1;
}
