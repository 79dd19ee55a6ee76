#!/usr/bin/env python3
"""JAX, CuPy and Triton under a VRAM quota (bench/gpu/harness.py runs this with the shim, and
JAX also without it).

    python3 frameworks.py --which jax|cupy|triton --quota BYTES [--chunk-mib 256]

Each prints `key=value` lines (the first key is `step`), like torch_quota.py:

  jax     step=init      versions, backend
          step=limit     the BFC allocator's bytes_limit: JAX preallocates a fraction
                         (XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by default) of the memory
                         cuMemGetInfo reports, so under the quota it must be a fraction of the
                         quota, not of the card
          step=compute   a 1024 x 1024 matmul: ok=1 and its checksum is right
          step=past      an array of quota + 1 GiB: must fail (ok=0) under the quota
  cupy    step=init      versions
          step=mem       cupy.cuda.runtime.memGetInfo(): free, total (total must be the quota)
          step=chunks    --chunk-mib arrays from the default memory pool until an OutOfMemoryError
                         or quota + 1 GiB: the bytes held when it stopped
          step=recover   everything freed (free_all_blocks), then half the quota again
  triton  step=init      versions
          step=compute   a Triton vector-add kernel over 16 Mi floats, checked against torch
          step=loop      the kernel launched for 1 s: launches, launches per second (under an SM
                         limit the launches are throttled, not refused)
          step=past      a torch tensor of quota + 1 GiB: must fail under the quota
  all     step=done      ok=1 when the script itself ran to the end

Only the standard library, torch_quota.py's line format and the framework under test are
imported.
"""

import argparse
import sys
import time

from torch_quota import GIB, MIB, emit  # beside this script; it imports torch only in main()


def brief(e):
    return type(e).__name__ + ":" + str(e).split("\n")[0][:100].replace(" ", "_")


def run_jax(quota):
    t0 = time.monotonic()
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    dev = jax.devices()[0]
    emit("init", jax=jax.__version__, backend=jax.default_backend(), device=str(dev.device_kind), import_s=f"{time.monotonic() - t0:.2f}")
    x = jnp.ones((1024, 1024), dtype=jnp.float32)
    y = (x @ x).block_until_ready()
    stats = dev.memory_stats() or {}
    emit("limit", bytes_limit=stats.get("bytes_limit", "-"), bytes_in_use=stats.get("bytes_in_use", "-"),
         bytes_reserved=stats.get("bytes_reserved", "-"))
    emit("compute", ok=int(float(y[0, 0]) == 1024.0))
    try:
        z = jnp.zeros((quota + GIB,), dtype=jnp.uint8).block_until_ready()
        emit("past", bytes=quota + GIB, ok=1, error="-")
        del z
    except Exception as e:  # noqa: BLE001 - the refusal is the result
        emit("past", bytes=quota + GIB, ok=0, error=brief(e))


def run_cupy(quota, chunk_mib):
    t0 = time.monotonic()
    import cupy as cp  # noqa: PLC0415

    emit("init", cupy=cp.__version__, cuda_runtime=cp.cuda.runtime.runtimeGetVersion(), import_s=f"{time.monotonic() - t0:.2f}")
    free, total = cp.cuda.runtime.memGetInfo()
    emit("mem", free=free, total=total)
    pool = cp.get_default_memory_pool()
    held, chunk, err = [], chunk_mib * MIB, ""
    while len(held) * chunk < quota + GIB:
        try:
            a = cp.empty(chunk, dtype=cp.uint8)
            a.fill(1)
            held.append(a)
        except cp.cuda.memory.OutOfMemoryError as e:
            err = type(e).__name__
            break
        except Exception as e:  # noqa: BLE001
            err = brief(e)
            break
    cp.cuda.Device().synchronize()
    emit("chunks", chunk=chunk, held=len(held) * chunk, stopped_by=err or "cap", pool_total=pool.total_bytes())
    del held
    pool.free_all_blocks()
    try:
        a = cp.empty(quota // 2, dtype=cp.uint8)
        a.fill(2)
        cp.cuda.Device().synchronize()
        emit("recover", bytes=quota // 2, ok=1, error="-")
        del a
    except Exception as e:  # noqa: BLE001
        emit("recover", bytes=quota // 2, ok=0, error=brief(e))


def run_triton(quota):
    t0 = time.monotonic()
    import torch  # noqa: PLC0415
    import triton  # noqa: PLC0415
    import triton.language as tl  # noqa: PLC0415

    emit("init", triton=triton.__version__, torch=torch.__version__, import_s=f"{time.monotonic() - t0:.2f}")

    @triton.jit
    def add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)

    n = 1 << 24
    x = torch.rand(n, device="cuda")
    y = torch.rand(n, device="cuda")
    out = torch.empty_like(x)
    grid = (triton.cdiv(n, 1024),)
    add[grid](x, y, out, n, BLOCK=1024)
    torch.cuda.synchronize()
    emit("compute", ok=int(bool(torch.allclose(out, x + y))))
    launches, end = 0, time.monotonic() + 1.0
    start = time.monotonic()
    while time.monotonic() < end:
        add[grid](x, y, out, n, BLOCK=1024)
        launches += 1
    torch.cuda.synchronize()
    wall = time.monotonic() - start
    emit("loop", launches=launches, per_s=f"{launches / wall:.0f}", wall_s=f"{wall:.2f}")
    try:
        t = torch.empty(quota + GIB, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        emit("past", bytes=quota + GIB, ok=1, error="-")
        del t
    except Exception as e:  # noqa: BLE001
        emit("past", bytes=quota + GIB, ok=0, error=brief(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", choices=("jax", "cupy", "triton"), required=True)
    ap.add_argument("--quota", type=int, required=True)
    ap.add_argument("--chunk-mib", type=int, default=256)
    a = ap.parse_args()
    if a.which == "jax":
        run_jax(a.quota)
    elif a.which == "cupy":
        run_cupy(a.quota, a.chunk_mib)
    else:
        run_triton(a.quota)
    emit("done", ok=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
