// matmul - a tiled single-precision matrix multiply (C = A x B, --n x --n), --iters times back
// to back, then one synchronize; 64 entries of C are checked against a double-precision host
// computation. A compute-bound loop of medium-sized kernels: with and without the shim it gives
// the shim's cost on a kernel-heavy cudart program.
//
//   matmul [--n 2048] [--iters 100] [--device 0]
//
// Output:
//   program=matmul n=.. iters=.. completions=.. wall_ms=.. kernel_ms=.. gflops=.. verify=ok|fail
//     max_rel_err=.. device=..
#include "common.cuh"

#include <cmath>
#include <vector>

#define TILE 32

__global__ void matmul(const float *A, const float *B, float *C, int n) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int t = 0; t < n; t += TILE) {
        As[threadIdx.y][threadIdx.x] = (row < n && t + (int)threadIdx.x < n) ? A[(size_t)row * n + t + threadIdx.x] : 0.0f;
        Bs[threadIdx.y][threadIdx.x] = (col < n && t + (int)threadIdx.y < n) ? B[(size_t)(t + threadIdx.y) * n + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; k++) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    if (row < n && col < n) C[(size_t)row * n + col] = acc;
}

int main(int argc, char **argv) {
    static const char *const known[] = {"--n", "--iters", "--device"};
    Args a{argc, argv, "matmul [--n N] [--iters N] [--device I]"};
    a.only(known, sizeof known / sizeof known[0]);
    int n = (int)a.integer("--n", 2048);
    long long iters = a.integer("--iters", 100);
    int device = (int)a.integer("--device", 0);
    if (n == 0 || iters == 0) a.bad("--n/--iters", "0");
    CHECK(cudaSetDevice(device));

    size_t elems = (size_t)n * n;
    std::vector<float> ha(elems), hb(elems), hc(elems);
    unsigned seed = 12345;
    for (size_t i = 0; i < elems; i++) {
        seed = seed * 1103515245u + 12345u;
        ha[i] = (float)((seed >> 16) & 0xff) / 256.0f - 0.5f;
        seed = seed * 1103515245u + 12345u;
        hb[i] = (float)((seed >> 16) & 0xff) / 256.0f - 0.5f;
    }
    size_t bytes = elems * sizeof(float);
    float *dA = nullptr, *dB = nullptr, *dC = nullptr;
    CHECK(cudaMalloc((void **)&dA, bytes));
    CHECK(cudaMalloc((void **)&dB, bytes));
    CHECK(cudaMalloc((void **)&dC, bytes));
    CHECK(cudaMemcpy(dA, ha.data(), bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dB, hb.data(), bytes, cudaMemcpyHostToDevice));

    dim3 block(TILE, TILE);
    dim3 grid((n + TILE - 1) / TILE, (n + TILE - 1) / TILE);
    matmul<<<grid, block>>>(dA, dB, dC, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());

    double start = now_ms();
    for (long long it = 0; it < iters; it++) matmul<<<grid, block>>>(dA, dB, dC, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    double wall = now_ms() - start;

    CHECK(cudaMemcpy(hc.data(), dC, bytes, cudaMemcpyDeviceToHost));
    double max_rel = 0.0;
    for (int s = 0; s < 64; s++) {
        int r = (int)((s * 7919u) % (unsigned)n), c = (int)((s * 104729u + 17u) % (unsigned)n);
        double want = 0.0, scale = 0.0;
        for (int k = 0; k < n; k++) {
            want += (double)ha[(size_t)r * n + k] * (double)hb[(size_t)k * n + c];
            scale += std::fabs((double)ha[(size_t)r * n + k] * (double)hb[(size_t)k * n + c]);
        }
        double rel = std::fabs(want - (double)hc[(size_t)r * n + c]) / (scale > 0 ? scale : 1.0);
        if (rel > max_rel) max_rel = rel;
    }
    bool ok = max_rel < 1e-3;  // fp32 accumulation over n terms, relative to the sum of |products|
    double kernel_ms = wall / (double)iters;
    printf("program=matmul n=%d iters=%lld completions=%lld wall_ms=%.3f kernel_ms=%.4f gflops=%.1f verify=%s "
           "max_rel_err=%.3g device=%s\n",
           n, iters, iters, wall, kernel_ms, 2.0 * n * (double)n * n / (kernel_ms * 1e6), ok ? "ok" : "fail", max_rel,
           device_name(device).c_str());
    CHECK(cudaFree(dA));
    CHECK(cudaFree(dB));
    CHECK(cudaFree(dC));
    return ok ? 0 : 1;
}
