"""A numba-cuda program, as its users write one: device arrays, copies, a @cuda.jit kernel,
synchronisation. Prints one `client=numba op=... key=value ...` line per step (the tests parse
them); every CUDA error is reported as a line, never hidden.

usage: numba_client.py [--alloc-mib N] [--allocs K] [--launches L] [--seconds S] [--blocks B]

--allocs K device arrays of N MiB are taken (and kept) one after another; --launches L runs of
`vgpu_add_one` over a 1 Mi-element array (B blocks of 256 threads), or as many as fit in S
seconds when --seconds is given, then one cuda.synchronize().
"""
import argparse
import sys
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")  # numba's occupancy and version notes are not the client's output
from numba import cuda  # noqa: E402


def line(op, **kv):
    print("client=numba op=%s %s" % (op, " ".join("%s=%s" % (k, v) for k, v in kv.items())), flush=True)


@cuda.jit
def vgpu_add_one(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] += 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--alloc-mib", type=int, default=0)
    p.add_argument("--allocs", type=int, default=0)
    p.add_argument("--launches", type=int, default=10)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--blocks", type=int, default=132)
    a = p.parse_args()

    free, total = cuda.current_context().get_memory_info()
    line("info", free=free, total=total)
    kept = []
    for i in range(a.allocs):
        try:
            kept.append(cuda.device_array(a.alloc_mib << 18, dtype=np.float32))
            line("alloc", i=i, mib=a.alloc_mib, rc="ok")
        except Exception as e:  # the driver's out-of-memory, as numba raises it
            line("alloc", i=i, mib=a.alloc_mib, rc="error", error=type(e).__name__, oom=int("OUT_OF_MEMORY" in str(e)))

    host = np.arange(1 << 20, dtype=np.float32)
    d = cuda.to_device(host)
    back = d.copy_to_host()
    line("copy", bytes=host.nbytes, same=int(bool((back == host).all())))

    t0 = time.monotonic()
    start_ns = time.monotonic_ns()  # CLOCK_MONOTONIC, the clock of simgpu's device timeline
    n = 0
    try:
        while (a.seconds > 0 and time.monotonic() - t0 < a.seconds) or (a.seconds <= 0 and n < a.launches):
            vgpu_add_one[a.blocks, 256](d)
            n += 1
        end_ns = time.monotonic_ns()
        cuda.synchronize()
        line("launch", n=n, seconds="%.3f" % (time.monotonic() - t0), start_ns=start_ns, end_ns=end_ns, rc="ok")
    except Exception as e:
        line("launch", n=n, rc="error", error=("%s: %s" % (type(e).__name__, e)).replace(" ", "_"))
        return 1
    free, total = cuda.current_context().get_memory_info()
    line("done", free=free, total=total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
