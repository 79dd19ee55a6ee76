// vector_add - C = A + B on --n floats, --iters times, then the result is checked on the host.
// Also prints what cudaMemGetInfo says (the runtime's view of the memory: under the vgpu shim,
// total is the quota), and exits 1 with an `error ... name=cudaErrorMemoryAllocation` line when
// the three arrays do not fit (the harness uses that for the over-quota check through cudart).
//
//   vector_add [--n 16777216] [--iters 1000] [--device 0]
//
// Output:
//   program=vector_add n=.. bytes=<3 arrays> iters=.. completions=.. wall_ms=.. kernel_ms=..
//     gbps=.. verify=ok|fail mismatches=.. mem_free=.. mem_total=.. device=..
#include "common.cuh"

#include <vector>

__global__ void vector_add(const float *a, const float *b, float *c, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (; i < n; i += stride) c[i] = a[i] + b[i];
}

int main(int argc, char **argv) {
    static const char *const known[] = {"--n", "--iters", "--device"};
    Args a{argc, argv, "vector_add [--n N] [--iters N] [--device I]"};
    a.only(known, sizeof known / sizeof known[0]);
    size_t n = (size_t)a.integer("--n", 1 << 24);
    long long iters = a.integer("--iters", 1000);
    int device = (int)a.integer("--device", 0);
    if (n == 0 || iters == 0) a.bad("--n/--iters", "0");
    CHECK(cudaSetDevice(device));
    int sms = sm_count(device);

    size_t free_b = 0, total_b = 0;
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    printf("meminfo free=%zu total=%zu\n", free_b, total_b);
    fflush(stdout);

    // Device memory first: past a quota the program fails here, before touching host memory.
    size_t bytes = n * sizeof(float);
    float *da = nullptr, *db = nullptr, *dc = nullptr;
    CHECK(cudaMalloc((void **)&da, bytes));
    CHECK(cudaMalloc((void **)&db, bytes));
    CHECK(cudaMalloc((void **)&dc, bytes));
    std::vector<float> ha(n), hb(n), hc(n);
    for (size_t i = 0; i < n; i++) {
        ha[i] = (float)(i % 1000) * 0.5f;
        hb[i] = 2.0f - (float)(i % 77);
    }
    CHECK(cudaMemcpy(da, ha.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, hb.data(), bytes, cudaMemcpyHostToDevice));

    unsigned block = 256;
    unsigned grid = (unsigned)sms * 8;
    vector_add<<<grid, block>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());

    double start = now_ms();
    for (long long it = 0; it < iters; it++) vector_add<<<grid, block>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    double wall = now_ms() - start;

    CHECK(cudaMemcpy(hc.data(), dc, bytes, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += hc[i] != ha[i] + hb[i];
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    double kernel_ms = wall / (double)iters;
    printf("program=vector_add n=%zu bytes=%zu iters=%lld completions=%lld wall_ms=%.3f kernel_ms=%.4f gbps=%.1f "
           "verify=%s mismatches=%zu mem_free=%zu mem_total=%zu device=%s\n",
           n, 3 * bytes, iters, iters, wall, kernel_ms, 3.0 * (double)bytes / (kernel_ms * 1e6), bad ? "fail" : "ok",
           bad, free_b, total_b, device_name(device).c_str());
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    return bad ? 1 : 0;
}
