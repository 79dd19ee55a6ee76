"""A DataLoader-style pool of worker processes that each use the GPU through the driver API
(ctypes on libcuda.so.1, so it runs on simgpu and on a real GPU alike).

usage: fork_pool.py START_METHOD WORKERS MIB

Every worker retains the primary context, waits for all the others to have one, allocates MIB
MiB, waits again (so every allocation is held at once), and reports. The parent never touches
CUDA itself (CUDA does not survive fork in a process that initialised it). Prints one line per
worker: `worker=<i> pid=<pid> ctx_rc=<rc> alloc_rc=<rc>`.
"""
import ctypes
import multiprocessing as mp
import os
import sys


def init(barrier):
    global BARRIER
    BARRIER = barrier


def work(args):
    index, mib = args
    cuda = ctypes.CDLL("libcuda.so.1")
    dev = ctypes.c_int(0)
    ctx = ctypes.c_void_p()
    rc = cuda.cuInit(0)
    rc = rc or cuda.cuDeviceGet(ctypes.byref(dev), 0)
    rc = rc or cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)
    rc = rc or cuda.cuCtxSetCurrent(ctx)
    BARRIER.wait(60)
    ptr = ctypes.c_uint64(0)
    alloc_rc = cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(mib << 20)) if rc == 0 else -1
    BARRIER.wait(60)
    return f"worker={index} pid={os.getpid()} ctx_rc={rc} alloc_rc={alloc_rc}"


def main():
    method, workers, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mp_ctx = mp.get_context(method)
    barrier = mp_ctx.Barrier(workers)
    with mp_ctx.Pool(workers, initializer=init, initargs=(barrier,)) as pool:
        for line in pool.map(work, [(i, mib) for i in range(workers)], chunksize=1):
            print(line, flush=True)


if __name__ == "__main__":
    main()
