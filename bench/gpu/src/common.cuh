// common.cuh - what the harness's CUDA programs share: argument parsing, error checks,
// host timing, and the spin kernel with its device-side completion counter.
//
// Every program prints its results as one line of `key=value` pairs that starts with
// `program=<name>` (plus `sample ...` lines for the SM workloads), so the harness only has to
// split lines. A failing CUDA call prints `error rc=<n> name=<cudaError...> line=<n> call=<expr>`
// and exits 1; bad arguments exit 2.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#define CHECK(call)                                                                            \
    do {                                                                                       \
        cudaError_t check_rc_ = (call);                                                        \
        if (check_rc_ != cudaSuccess) {                                                        \
            printf("error rc=%d name=%s line=%d call=%s\n", (int)check_rc_,                    \
                   cudaGetErrorName(check_rc_), __LINE__, #call);                              \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                      \
                    cudaGetErrorString(check_rc_));                                            \
            fflush(stdout);                                                                    \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

// ---- arguments: `--name value` pairs only -------------------------------------------------

struct Args {
    int argc;
    char **argv;
    const char *usage;

    // The value after `--name`, or nullptr when the flag is absent.
    const char *raw(const char *name) const {
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], name) == 0) {
                if (i + 1 >= argc) bad(name, "(missing)");
                return argv[i + 1];
            }
        }
        return nullptr;
    }
    double real(const char *name, double dflt) const {
        const char *v = raw(name);
        if (!v) return dflt;
        char *end = nullptr;
        double x = strtod(v, &end);
        if (!*v || *end || x < 0) bad(name, v);
        return x;
    }
    long long integer(const char *name, long long dflt) const {
        const char *v = raw(name);
        if (!v) return dflt;
        char *end = nullptr;
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || x < 0) bad(name, v);
        return x;
    }
    // Rejects flags the program does not know (every flag takes a value).
    void only(const char *const *known, int n) const {
        for (int i = 1; i < argc; i += 2) {
            bool ok = false;
            for (int k = 0; k < n; k++) ok = ok || strcmp(argv[i], known[k]) == 0;
            if (!ok || i + 1 >= argc) bad(argv[i], i + 1 < argc ? argv[i + 1] : "(missing)");
        }
    }
    [[noreturn]] void bad(const char *name, const char *value) const {
        fprintf(stderr, "error: bad argument %s %s\nusage: %s\n", name, value, usage);
        exit(2);
    }
};

static inline double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// The device's name with spaces replaced, so it stays one `key=value` token.
static inline std::string device_name(int device) {
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, device));
    std::string name(prop.name);
    for (char &c : name)
        if (c == ' ' || c == '=') c = '_';
    return name;
}

static inline int sm_count(int device) {
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
}

// ---- the spin kernel and its device-side counters ----------------------------------------

// Kept in device memory. The kernels of one stream run one after another, so one set of
// per-launch fields (first_start, last_end, done) serves every launch: the last block of a
// launch folds them into the totals and resets them before the next launch starts.
struct Counters {
    unsigned long long completions;  // launches whose every block has finished
    unsigned long long busy_ns;      // sum over launches of (last block's end - first block's start)
    unsigned long long blocks;       // blocks finished
    unsigned long long first_start;  // of the running launch; ~0 between launches
    unsigned long long last_end;     // of the running launch
    unsigned long long done;         // blocks of the running launch that have finished
};

// The GPU's global nanosecond timer (%globaltimer).
__device__ __forceinline__ unsigned long long global_ns() {
#if defined(__CUDA_ARCH__)
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#else
    return 0;
#endif
}

// Every block busy-waits `ns` nanoseconds (all its threads spin), then thread 0 counts the
// block; the last block of the launch adds the launch's span to busy_ns and counts it.
__global__ void spin_kernel(Counters *c, unsigned long long ns) {
    __shared__ unsigned long long t0;
    if (threadIdx.x == 0) {
        t0 = global_ns();
        atomicMin(&c->first_start, t0);
    }
    __syncthreads();
    while (global_ns() - t0 < ns) {
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        atomicMax(&c->last_end, global_ns());
        atomicAdd(&c->blocks, 1ULL);
        __threadfence();
        unsigned long long total = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
        if (atomicAdd(&c->done, 1ULL) == total - 1) {
            // Every other block of this launch has published its start and end.
            __threadfence();
            unsigned long long start = atomicAdd(&c->first_start, 0ULL);
            unsigned long long end = atomicAdd(&c->last_end, 0ULL);
            c->busy_ns += end > start ? end - start : 0;
            c->completions += 1;
            c->first_start = ~0ULL;
            c->last_end = 0;
            c->done = 0;
            __threadfence();
        }
    }
}

static inline void reset_counters(Counters *dev) {
    Counters zero;
    memset(&zero, 0, sizeof zero);
    zero.first_start = ~0ULL;
    CHECK(cudaMemcpy(dev, &zero, sizeof zero, cudaMemcpyHostToDevice));
}

static inline Counters read_counters(const Counters *dev) {
    Counters c;
    CHECK(cudaMemcpy(&c, dev, sizeof c, cudaMemcpyDeviceToHost));
    return c;
}

// Prints `sample t_ms=<since start> completions=<n> busy_ns=<n>` every `period_ms` of host time,
// reading the counters with a copy on a stream of its own: it runs beside the kernels, so the
// workload is not synchronised by it. The harness turns these into 100 ms windows.
struct Sampler {
    double period_ms, start_ms, next_ms;
    cudaStream_t side;
    Counters *host;
    const Counters *dev;

    Sampler(const Counters *counters, double period) : period_ms(period), start_ms(0), next_ms(0), side(nullptr), host(nullptr), dev(counters) {
        if (period_ms <= 0) return;
        CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
        CHECK(cudaMallocHost((void **)&host, sizeof(Counters)));
    }
    void begin(double t) {
        start_ms = t;
        next_ms = t + period_ms;
        if (period_ms > 0) printf("sample t_ms=0.000 completions=0 busy_ns=0\n");
    }
    void poll(double t) {
        if (period_ms <= 0 || t < next_ms) return;
        CHECK(cudaMemcpyAsync(host, dev, 2 * sizeof(unsigned long long), cudaMemcpyDeviceToHost, side));
        CHECK(cudaStreamSynchronize(side));
        double at = now_ms();
        printf("sample t_ms=%.3f completions=%llu busy_ns=%llu\n", at - start_ms, host->completions, host->busy_ns);
        while (next_ms <= at) next_ms += period_ms;
    }
    // The closing sample, from the counters read after the final synchronize.
    void finish(double t, const Counters &c) const {
        if (period_ms > 0) printf("sample t_ms=%.3f completions=%llu busy_ns=%llu\n", t - start_ms, c.completions, c.busy_ns);
    }
    ~Sampler() {
        if (host) cudaFreeHost(host);
        if (side) cudaStreamDestroy(side);
    }
};
