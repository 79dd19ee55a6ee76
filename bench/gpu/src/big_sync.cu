// big_sync - one big kernel, then a synchronize, in a loop for --seconds: the workload a
// launch-count throttle cannot hold (a handful of long launches, each waited for). The grid
// defaults to 4 blocks per SM of 256 threads, all resident at once, so a launch takes about
// --kernel-us of GPU time; the kernels measure it themselves (common.cuh).
//
//   big_sync [--seconds 3] [--kernel-us 2000] [--grid 0 (= 4 x SM count)] [--block 256]
//            [--sample-ms 100] [--device 0]
//
// Output: sample lines, then
//   program=big_sync launches=<n> completions=<n> blocks=<n> busy_ms=.. wall_ms=.. share=..
//     kernel_us=.. grid=.. block=.. sms=.. device=..
#include "common.cuh"

int main(int argc, char **argv) {
    static const char *const known[] = {"--seconds", "--kernel-us", "--grid", "--block", "--sample-ms", "--device"};
    Args a{argc, argv, "big_sync [--seconds S] [--kernel-us N] [--grid N] [--block N] [--sample-ms N] [--device I]"};
    a.only(known, sizeof known / sizeof known[0]);
    double seconds = a.real("--seconds", 3.0);
    long long kernel_us = a.integer("--kernel-us", 2000);
    int device = (int)a.integer("--device", 0);
    CHECK(cudaSetDevice(device));
    int sms = sm_count(device);
    unsigned grid = (unsigned)a.integer("--grid", 0);
    if (grid == 0) grid = 4u * (unsigned)sms;
    unsigned block = (unsigned)a.integer("--block", 256);
    unsigned long long ns = (unsigned long long)kernel_us * 1000ULL;

    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    Counters *counters = nullptr;
    CHECK(cudaMalloc((void **)&counters, sizeof(Counters)));
    reset_counters(counters);

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
        CHECK(cudaGetLastError());
        CHECK(cudaStreamSynchronize(stream));
        launches++;
        sampler.poll(now_ms());
    }
    double stop = now_ms();
    Counters c = read_counters(counters);
    sampler.finish(stop, c);

    double wall = stop - start;
    double busy = (double)c.busy_ns / 1e6;
    printf("program=big_sync launches=%llu completions=%llu blocks=%llu busy_ms=%.3f wall_ms=%.3f share=%.4f "
           "kernel_us=%lld grid=%u block=%u sms=%d device=%s\n",
           launches, c.completions, c.blocks, busy, wall, wall > 0 ? busy / wall : 0.0, kernel_us, grid, block, sms,
           device_name(device).c_str());
    CHECK(cudaFree(counters));
    CHECK(cudaStreamDestroy(stream));
    return c.completions == launches ? 0 : 1;
}
