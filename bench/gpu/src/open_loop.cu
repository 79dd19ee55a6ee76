// open_loop - an open-loop stream of small kernels: the host launches spin kernels back to back
// on one stream for --seconds, never waiting for them, then synchronises once. The kernels count
// their own completions and GPU time in device memory (common.cuh); the host reads the counters
// at the end (and, every --sample-ms, from a second stream for the windowed figures).
//
//   open_loop [--seconds 3] [--kernel-us 50] [--grid 0 (= SM count)] [--block 128]
//             [--sample-ms 100] [--device 0]
//
// Output: sample lines, then
//   program=open_loop launches=<n> completions=<n> blocks=<n> busy_ms=<device-measured>
//     wall_ms=<first launch to end of sync> share=<busy/wall> kernel_us=.. grid=.. block=.. sms=..
#include "common.cuh"

int main(int argc, char **argv) {
    static const char *const known[] = {"--seconds", "--kernel-us", "--grid", "--block", "--sample-ms", "--device"};
    Args a{argc, argv, "open_loop [--seconds S] [--kernel-us N] [--grid N] [--block N] [--sample-ms N] [--device I]"};
    a.only(known, sizeof known / sizeof known[0]);
    double seconds = a.real("--seconds", 3.0);
    long long kernel_us = a.integer("--kernel-us", 50);
    int device = (int)a.integer("--device", 0);
    CHECK(cudaSetDevice(device));
    int sms = sm_count(device);
    unsigned grid = (unsigned)a.integer("--grid", 0);
    if (grid == 0) grid = (unsigned)sms;
    unsigned block = (unsigned)a.integer("--block", 128);
    unsigned long long ns = (unsigned long long)kernel_us * 1000ULL;

    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    Counters *counters = nullptr;
    CHECK(cudaMalloc((void **)&counters, sizeof(Counters)));
    reset_counters(counters);

    // Warm-up: loads the module and lets a shim see its first launch; not counted.
    spin_kernel<<<grid, block, 0, stream>>>(counters, ns);
    CHECK(cudaGetLastError());
    CHECK(cudaStreamSynchronize(stream));
    reset_counters(counters);

    Sampler sampler(counters, a.real("--sample-ms", 100.0));
    unsigned long long launches = 0;
    double start = now_ms();
    double end = start + seconds * 1000.0;
    sampler.begin(start);
    for (double t = start; t < end; t = now_ms()) {
        spin_kernel<<<grid, block, 0, stream>>>(counters, ns);
        launches++;
        if ((launches & 63) == 0) CHECK(cudaGetLastError());
        sampler.poll(t);
    }
    CHECK(cudaGetLastError());
    CHECK(cudaStreamSynchronize(stream));
    double stop = now_ms();
    Counters c = read_counters(counters);
    sampler.finish(stop, c);

    double wall = stop - start;
    double busy = (double)c.busy_ns / 1e6;
    printf("program=open_loop launches=%llu completions=%llu blocks=%llu busy_ms=%.3f wall_ms=%.3f share=%.4f "
           "kernel_us=%lld grid=%u block=%u sms=%d device=%s\n",
           launches, c.completions, c.blocks, busy, wall, wall > 0 ? busy / wall : 0.0, kernel_us, grid, block, sms,
           device_name(device).c_str());
    CHECK(cudaFree(counters));
    CHECK(cudaStreamDestroy(stream));
    return c.completions == launches ? 0 : 1;
}
