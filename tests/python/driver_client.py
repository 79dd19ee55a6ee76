#!/usr/bin/env python3
"""driver_client.py: a third-party Python CUDA user, through NVIDIA's cuda-bindings.

`from cuda.bindings import driver as cuda` dlopens libcuda.so.1 and resolves every driver
function with cuGetProcAddress_v2 (with CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM=1 it asks
for the per-thread-default-stream variants). The script does what such a user does: init,
context, cuMemGetInfo, cuMemAlloc, an HtoD/DtoH round trip, cuModuleLoadData with the example
PTX, cuLaunchKernel with a real parameter, cuStreamSynchronize, cuMemFree.

Output: `client=python-driver op=<op> ...` lines (`op=init`, `op=mem_get_info stage=...
free= total=`, `op=alloc bytes= ok=1`, `op=copy`, `op=module`, `op=launch`, `op=free`,
`op=done ok=1`). Any unexpected driver error prints `op=<op> ok=0 err=<CUresult name>` and
exits 1. `--alloc-too-much` prints `op=oom err=<name>` (exit 0 when that is
CUDA_ERROR_OUT_OF_MEMORY); `--hold-ms MS` allocates, prints `op=hold pid= bytes=`, sleeps,
frees and exits; `--graph-mib N` builds a graph with an N MiB memory allocation node
(cuGraphAddMemAllocNode + cuGraphAddMemFreeNode), launches it twice, prints `op=graph
reserved=` and the views, then destroys it and trims the device's graph memory.
"""
import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

from cuda.bindings import driver as cuda

CLIENT = "client=python-driver"
MIB = 1 << 20
KERNELS = ["spin_10us", "spin_50us", "spin_100us", "spin_200us", "spin_500us", "spin_1000us", "noop"]
DEFAULT_PTX = Path(__file__).resolve().parents[2] / "examples" / "ptx" / "spin.ptx"


def emit(op, **fields):
    parts = [CLIENT, f"op={op}"] + [f"{k}={v}" for k, v in fields.items()]
    print(" ".join(parts), flush=True)


def check(op, result):
    """Unpacks a cuda-bindings result tuple; exits 1 on any error but CUDA_SUCCESS."""
    err, *rest = result
    if err != cuda.CUresult.CUDA_SUCCESS:
        emit(op, ok=0, err=err.name)
        sys.exit(1)
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def resolve(symbol, version, flags):
    """cuGetProcAddress_v2 for `symbol`, and which libcuda.so.1 export the pointer is."""
    pfn, status = check("proc_address", cuda.cuGetProcAddress(symbol.encode(), version, flags))
    lib = ctypes.CDLL("libcuda.so.1")  # the library cuda-bindings already loaded
    for suffix in ["", "_v2", "_v3", "_ptsz", "_ptds", "_v2_ptsz", "_v2_ptds"]:
        try:
            addr = ctypes.cast(getattr(lib, symbol + suffix), ctypes.c_void_p).value
        except AttributeError:
            continue
        if addr == int(pfn):
            return symbol + suffix, status
    return "unknown", status


def mem_info(stage):
    free, total = check("mem_get_info", cuda.cuMemGetInfo())
    emit("mem_get_info", stage=stage, free=free, total=total)
    return free, total


def graph_memory(dev, nbytes):
    """A graph with a memory allocation node and its free node, instantiated and launched
    twice (the second launch reuses the graph's memory); then the executable graph is
    destroyed and the device's graph memory trimmed."""
    graph = check("graph", cuda.cuGraphCreate(0))
    params = cuda.CUDA_MEM_ALLOC_NODE_PARAMS()
    params.poolProps.allocType = cuda.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    params.poolProps.location.type = cuda.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    params.poolProps.location.id = int(dev)
    params.bytesize = nbytes
    alloc_node = check("graph_alloc_node", cuda.cuGraphAddMemAllocNode(graph, None, 0, params))
    check("graph_free_node", cuda.cuGraphAddMemFreeNode(graph, [alloc_node], 1, params.dptr))
    exec_ = check("graph_instantiate", cuda.cuGraphInstantiate(graph, 0))
    stream = check("graph", cuda.cuStreamCreate(cuda.CUstream_flags.CU_STREAM_NON_BLOCKING))
    for _ in range(2):
        check("graph_launch", cuda.cuGraphLaunch(exec_, stream))
    check("graph_launch", cuda.cuStreamSynchronize(stream))
    reserved = check("graph", cuda.cuDeviceGetGraphMemAttribute(
        dev, cuda.CUgraphMem_attribute.CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT))
    emit("graph", bytes=nbytes, reserved=int(reserved), ok=1)
    mem_info("after_graph")
    check("graph", cuda.cuGraphExecDestroy(exec_))
    check("graph", cuda.cuGraphDestroy(graph))
    check("graph", cuda.cuDeviceGraphMemTrim(dev))
    mem_info("after_trim")
    emit("done", ok=1)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--alloc-mib", type=int, default=64)
    ap.add_argument("--kernels", type=int, default=3)
    ap.add_argument("--kernel", choices=KERNELS, default="spin_100us")
    ap.add_argument("--grid", type=int, default=1)
    ap.add_argument("--context", choices=["primary", "created"], default="primary")
    ap.add_argument("--ptx", type=Path, default=DEFAULT_PTX)
    ap.add_argument("--hold-ms", type=int)
    ap.add_argument("--alloc-too-much", action="store_true")
    ap.add_argument("--graph-mib", type=int)
    o = ap.parse_args()

    check("init", cuda.cuInit(0))
    version = check("init", cuda.cuDriverGetVersion())
    ptds = os.environ.get("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM", "0")
    emit("init", driver_version=version, ptds=ptds, pid=os.getpid())

    dev = check("device", cuda.cuDeviceGet(o.device))
    name = check("device", cuda.cuDeviceGetName(128, dev)).split(b"\0", 1)[0].decode()
    total_mem = check("device", cuda.cuDeviceTotalMem(dev))
    emit("device", index=o.device, name=name.replace(" ", "_"), total_mem=total_mem)

    # What cuda-bindings did for every function, done again by hand for a few, naming the
    # export each resolved to (the ABI variant a shim must hook).
    flags = cuda.CUdriverProcAddress_flags
    mode = flags.CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM if ptds == "1" else flags.CU_GET_PROC_ADDRESS_DEFAULT
    for symbol in ["cuMemAlloc", "cuMemcpyHtoD", "cuLaunchKernel"]:
        export, status = resolve(symbol, version, mode)
        emit("proc_address", symbol=symbol, ptds=ptds, status=status.name, resolved=export)

    if o.context == "primary":
        ctx = check("context", cuda.cuDevicePrimaryCtxRetain(dev))
        check("context", cuda.cuCtxSetCurrent(ctx))
    else:
        ctx = check("context", cuda.cuCtxCreate(0, dev))
    emit("context", kind=o.context, ok=1)

    _, total = mem_info("before")
    if o.graph_mib is not None:
        return graph_memory(dev, o.graph_mib * MIB)
    if o.alloc_too_much:
        nbytes = total + (1 << 30)
        err, _ = cuda.cuMemAlloc(nbytes)
        emit("oom", bytes=nbytes, err="none" if err == cuda.CUresult.CUDA_SUCCESS else err.name)
        return 0 if err == cuda.CUresult.CUDA_ERROR_OUT_OF_MEMORY else 1

    nbytes = o.alloc_mib * MIB
    dptr = check("alloc", cuda.cuMemAlloc(nbytes))
    emit("alloc", bytes=nbytes, ok=1)
    mem_info("after_alloc")

    if o.hold_ms is not None:
        emit("hold", pid=os.getpid(), bytes=nbytes, ms=o.hold_ms)
        time.sleep(o.hold_ms / 1000)
        check("free", cuda.cuMemFree(dptr))
        emit("done", ok=1)
        return 0

    pattern = bytes((i * 7 + 3) & 0xFF for i in range(4096))
    data = pattern * (nbytes // len(pattern)) + pattern[: nbytes % len(pattern)]
    check("copy", cuda.cuMemcpyHtoD(dptr, data, nbytes))
    back = bytearray(nbytes)
    check("copy", cuda.cuMemcpyDtoH(back, dptr, nbytes))
    if back != data:
        first = next(i for i in range(nbytes) if back[i] != data[i])
        emit("copy", ok=0, err=f"mismatch_at_{first}")
        return 1
    emit("copy", bytes=nbytes, ok=1)

    ptx = o.ptx.read_bytes() + b"\0"
    module = check("module", cuda.cuModuleLoadData(ptx))
    functions = {k: check("module", cuda.cuModuleGetFunction(module, k.encode())) for k in KERNELS}
    emit("module", functions=len(functions), ok=1)

    counter = check("launch", cuda.cuMemAlloc(8))
    check("launch", cuda.cuMemsetD8(counter, 0, 8))
    stream = check("launch", cuda.cuStreamCreate(cuda.CUstream_flags.CU_STREAM_NON_BLOCKING))
    # One u64 parameter: the counter's device address.
    params = ((int(counter),), (ctypes.c_void_p,))
    start = time.monotonic()
    for _ in range(o.kernels):
        check("launch", cuda.cuLaunchKernel(functions[o.kernel], o.grid, 1, 1, 32, 1, 1, 0, stream, params, 0))
    check("launch", cuda.cuStreamSynchronize(stream))
    elapsed_us = int((time.monotonic() - start) * 1e6)
    done = bytearray(8)
    check("launch", cuda.cuMemcpyDtoH(done, counter, 8))
    emit("launch", kernel=o.kernel, kernels=o.kernels, grid=o.grid, elapsed_us=elapsed_us,
         counter=int.from_bytes(done, "little"), ok=1)

    check("free", cuda.cuStreamDestroy(stream))
    check("free", cuda.cuModuleUnload(module))
    check("free", cuda.cuMemFree(counter))
    check("free", cuda.cuMemFree(dptr))
    emit("free", bytes=nbytes, ok=1)
    mem_info("after_free")
    if o.context == "primary":
        check("context", cuda.cuDevicePrimaryCtxRelease(dev))
    else:
        check("context", cuda.cuCtxDestroy(ctx))
    emit("done", ok=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as e:  # an exception is a failure of the client, not a crash
        emit("exception", ok=0, err=type(e).__name__)
        print(f"driver_client.py: {e!r}", file=sys.stderr)
        sys.exit(1)
