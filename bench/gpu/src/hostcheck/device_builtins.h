// Force-included by bench/gpu/check_cu.sh --syntax, which parses the .cu files with the host
// C++ compiler (g++ -fsyntax-only) where no nvcc is installed. It declares, for the host compiler
// only, the device built-ins the kernels use; check_cu.sh rewrites `k<<<g, b, s, q>>>(args)`
// into `(vgpu_launch_check(g, b, s, q), k)(args)`. Nothing here is compiled into a program.
#pragma once
#if defined(__CUDACC__)
#error "device_builtins.h is for the host-compiler syntax check only"
#endif

#if defined(VGPU_REAL_CUDA_HEADERS)
#include <cuda_runtime.h>
#include <device_launch_parameters.h>
#endif

unsigned long long atomicAdd(unsigned long long *address, unsigned long long val);
unsigned long long atomicMin(unsigned long long *address, unsigned long long val);
unsigned long long atomicMax(unsigned long long *address, unsigned long long val);
void __syncthreads();
void __threadfence();

template <class... T>
inline int vgpu_launch_check(T...) {
    return 0;
}
