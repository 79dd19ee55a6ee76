// graph_replay - a CUDA graph replay loop: --graph-kernels spin kernels are captured from a
// stream into a graph once, and the instantiated graph is launched with cudaGraphLaunch in a
// loop for --seconds. No cudaLaunchKernel happens in the loop, so a shim that only throttles
// launches does not see this work. At most --inflight replays are queued at a time (an event
// ring), so the run ends soon after --seconds instead of draining a thousand queued graphs.
//
//   graph_replay [--seconds 3] [--kernel-us 50] [--graph-kernels 20] [--grid 0 (= SM count)]
//                [--block 128] [--inflight 8] [--sample-ms 100] [--device 0]
//
// Output: sample lines, then
//   program=graph_replay replays=<n> launches=<replays x graph-kernels> completions=<kernels done>
//     blocks=.. busy_ms=.. wall_ms=.. share=.. kernel_us=.. graph_kernels=.. grid=.. block=.. sms=..
#include "common.cuh"

#include <vector>

int main(int argc, char **argv) {
    static const char *const known[] = {"--seconds", "--kernel-us", "--graph-kernels", "--grid", "--block",
                                        "--inflight", "--sample-ms", "--device"};
    Args a{argc, argv,
           "graph_replay [--seconds S] [--kernel-us N] [--graph-kernels N] [--grid N] [--block N] [--inflight N] "
           "[--sample-ms N] [--device I]"};
    a.only(known, sizeof known / sizeof known[0]);
    double seconds = a.real("--seconds", 3.0);
    long long kernel_us = a.integer("--kernel-us", 50);
    unsigned graph_kernels = (unsigned)a.integer("--graph-kernels", 20);
    unsigned inflight = (unsigned)a.integer("--inflight", 8);
    if (graph_kernels == 0 || inflight == 0) a.bad("--graph-kernels/--inflight", "0");
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

    // Capture: the launches are recorded into the graph, not run.
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (unsigned k = 0; k < graph_kernels; k++) spin_kernel<<<grid, block, 0, stream>>>(counters, ns);
    CHECK(cudaGetLastError());
    CHECK(cudaStreamEndCapture(stream, &graph));
    CHECK(cudaGraphInstantiateWithFlags(&exec, graph, 0));

    // Warm-up replay (uploads the graph), not counted.
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    reset_counters(counters);

    std::vector<cudaEvent_t> ring(inflight);
    for (auto &e : ring) CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));

    Sampler sampler(counters, a.real("--sample-ms", 100.0));
    unsigned long long replays = 0;
    double start = now_ms();
    double end = start + seconds * 1000.0;
    sampler.begin(start);
    for (double t = start; t < end; t = now_ms()) {
        cudaEvent_t &slot = ring[replays % inflight];
        if (replays >= inflight) CHECK(cudaEventSynchronize(slot));
        CHECK(cudaGraphLaunch(exec, stream));
        CHECK(cudaEventRecord(slot, stream));
        replays++;
        sampler.poll(t);
    }
    CHECK(cudaStreamSynchronize(stream));
    double stop = now_ms();
    Counters c = read_counters(counters);
    sampler.finish(stop, c);

    double wall = stop - start;
    double busy = (double)c.busy_ns / 1e6;
    unsigned long long launches = replays * graph_kernels;
    printf("program=graph_replay replays=%llu launches=%llu completions=%llu blocks=%llu busy_ms=%.3f wall_ms=%.3f "
           "share=%.4f kernel_us=%lld graph_kernels=%u grid=%u block=%u sms=%d device=%s\n",
           replays, launches, c.completions, c.blocks, busy, wall, wall > 0 ? busy / wall : 0.0, kernel_us,
           graph_kernels, grid, block, sms, device_name(device).c_str());
    for (auto &e : ring) CHECK(cudaEventDestroy(e));
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    CHECK(cudaFree(counters));
    CHECK(cudaStreamDestroy(stream));
    return c.completions == launches ? 0 : 1;
}
