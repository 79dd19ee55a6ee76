"""A numba-cuda program under vgpu: memory up to the quota, a @cuda.jit kernel under the SM share.

    pip install "numba-cuda[cu12]"          # NVVM, NVRTC and the runtime come from PyPI
    vgpu run --memory 1g --sm 30 -- python examples/numba/add_one.py        # a real GPU
    SIMGPU_KERNEL_COSTS=add_one=1ms \
        vgpu run --sim --memory 1g --sm 30 -- python examples/numba/add_one.py   # simgpu

numba sees the quota as the device's memory (`get_memory_info`), an allocation past it raises
numba's `CudaAPIError` (CUDA_ERROR_OUT_OF_MEMORY) like a full GPU, and its launches are paced to
the share. On simgpu kernels take simulated time and do not run, so the array comes back
unchanged there; `SIMGPU_KERNEL_COSTS` gives numba's mangled kernel a cost (1 ms per wave).
"""
import time

import numpy as np
from numba import cuda
from numba.cuda.cudadrv.driver import CudaAPIError


@cuda.jit
def add_one(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] += 1


free, total = cuda.current_context().get_memory_info()
print(f"device memory as numba sees it: {total >> 20} MiB, {free >> 20} MiB free")

kept = []
for i in range(8):
    try:
        kept.append(cuda.device_array(64 << 20, dtype=np.float32))  # 256 MiB each
        print(f"allocation {i + 1}: 256 MiB ok")
    except CudaAPIError as e:
        print(f"allocation {i + 1}: refused ({e})")
        break
kept.clear()

a = cuda.to_device(np.zeros(1 << 20, dtype=np.float32))
t0 = time.monotonic()
n = 0
while time.monotonic() - t0 < 3:
    add_one[132, 256](a)
    n += 1
cuda.synchronize()
print(f"{n} launches in {time.monotonic() - t0:.1f} s; a[:4] = {a.copy_to_host()[:4]}")
