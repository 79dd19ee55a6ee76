// timeslice - how long the GPU runs one context before switching to another (the time slice
// simgpu models), seen from inside a kernel. Run two at once: each launches one single-thread
// kernel that reads %globaltimer in a loop for --seconds; while the other process's context
// holds the GPU this kernel is not running, so the timer jumps. Each jump longer than
// --threshold-us is a gap (the other context's slice); the time between gaps is this
// context's own slice.
//
//   timeslice [--seconds 1.5] [--threshold-us 20] [--device 0]
//
// Output, one line:
//   program=timeslice gaps=<n> span_ms=.. gap_p50_us=.. gap_max_us=.. run_p50_us=.. run_max_us=..
//     gaps_us=<first 32 gap lengths, comma-separated> device=..
// With no other context busy, gaps=0 (or a few short ones: the GPU's own housekeeping).
#include "common.cuh"

#include <algorithm>
#include <vector>

static const int MAX_GAPS = 4096;

// out[0]: gaps seen, out[1]: the span watched (ns); then per gap (up to MAX_GAPS): its start
// (ns after the kernel began) and its length (ns).
__global__ void watch(unsigned long long span_ns, unsigned long long threshold_ns, unsigned long long *out) {
    unsigned long long start = global_ns(), prev = start, now = start;
    unsigned long long n = 0;
    while (now - start < span_ns) {
        now = global_ns();
        if (now - prev > threshold_ns) {
            if (n < MAX_GAPS) {
                out[2 + 2 * n] = prev - start;
                out[3 + 2 * n] = now - prev;
            }
            n++;
        }
        prev = now;
    }
    out[0] = n;
    out[1] = now - start;
}

static double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[(size_t)(p * (double)(v.size() - 1))];
}

int main(int argc, char **argv) {
    static const char *const known[] = {"--seconds", "--threshold-us", "--device"};
    Args a{argc, argv, "timeslice [--seconds S] [--threshold-us N] [--device I]"};
    a.only(known, sizeof known / sizeof known[0]);
    double seconds = a.real("--seconds", 1.5);
    long long threshold_us = a.integer("--threshold-us", 20);
    int device = (int)a.integer("--device", 0);
    CHECK(cudaSetDevice(device));
    const size_t words = 2 + 2 * (size_t)MAX_GAPS;
    unsigned long long *out = nullptr;
    CHECK(cudaMalloc((void **)&out, words * sizeof *out));
    CHECK(cudaMemset(out, 0, words * sizeof *out));
    watch<<<1, 1>>>((unsigned long long)(seconds * 1e9), (unsigned long long)threshold_us * 1000ULL, out);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    std::vector<unsigned long long> host(words);
    CHECK(cudaMemcpy(host.data(), out, words * sizeof *out, cudaMemcpyDeviceToHost));
    unsigned long long n = host[0], span = host[1];
    size_t kept = (size_t)std::min<unsigned long long>(n, MAX_GAPS);
    std::vector<double> gaps, runs;
    unsigned long long run_from = 0;
    for (size_t i = 0; i < kept; i++) {
        unsigned long long at = host[2 + 2 * i], len = host[3 + 2 * i];
        gaps.push_back((double)len / 1e3);
        // The first run is cut by the kernel's start, not a switch: only runs between gaps.
        if (i > 0) runs.push_back((double)(at - run_from) / 1e3);
        run_from = at + len;
    }
    std::string first;
    for (size_t i = 0; i < kept && i < 32; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%s%.0f", i ? "," : "", gaps[i]);
        first += buf;
    }
    printf("program=timeslice gaps=%llu span_ms=%.1f gap_p50_us=%.1f gap_max_us=%.1f run_p50_us=%.1f run_max_us=%.1f gaps_us=%s device=%s\n",
           n, (double)span / 1e6, percentile(gaps, 0.5), percentile(gaps, 1.0), percentile(runs, 0.5), percentile(runs, 1.0),
           first.empty() ? "-" : first.c_str(), device_name(device).c_str());
    CHECK(cudaFree(out));
    return 0;
}
