#!/usr/bin/env python3
"""What PyTorch sees of a VRAM quota (bench/gpu/harness.py runs this with and without the shim).

    python3 torch_quota.py --quota BYTES [--chunk-mib 256] [--device 0]

`--quota` is the quota the harness set (CUDA_DEVICE_MEMORY_LIMIT), or the one it *would* set on
the run without the shim, where every step below is expected to succeed instead. The allocator
configuration comes from PYTORCH_CUDA_ALLOC_CONF, as in any PyTorch program. Steps, one
`key=value` line each (the first key is `step`):

    step=init        torch and CUDA versions, the allocator backend
    step=mem_get_info torch.cuda.mem_get_info(): free, total (cudaMemGetInfo)
    step=props       get_device_properties().total_memory (cuDeviceTotalMem)
    step=within      a tensor of a quarter of the quota: must succeed
    step=past        one tensor of quota + 1 GiB: under the shim torch.OutOfMemoryError
    step=chunks      --chunk-mib tensors until an OOM or quota + 1 GiB allocated: the caching
                     allocator's free-and-retry path; the bytes held when it stopped
    step=recover     everything freed, empty_cache(), then half the quota again: must succeed
    step=graph       a CUDA graph whose capture allocates a quarter of the quota and fills it,
                     replayed once: must succeed (with backend:cudaMallocAsync the allocation is
                     graph memory, reserved when the graph first runs)
    step=graph_past  the same graph allocating quota + 1 GiB: under the shim it must not run
                     (refused at capture or at its first replay), ok=0 with the error
    step=done        ok=1 when the script itself ran to the end

Only the standard library and torch are used.
"""

import argparse
import os
import sys
import time

MIB = 1 << 20
GIB = 1 << 30


def emit(step, **kv):
    parts = [f"step={step}"] + [f"{k}={str(v).replace(' ', '_')}" for k, v in kv.items()]
    print(" ".join(parts), flush=True)


def oom_types(torch):
    types = []
    for name in ("OutOfMemoryError",):
        t = getattr(torch, name, None) or getattr(torch.cuda, name, None)
        if t is not None:
            types.append(t)
    return tuple(types) or (RuntimeError,)


def attempt(torch, nbytes, device):
    """Allocates one uint8 tensor of nbytes; returns (tensor or None, error class name or '')."""
    try:
        t = torch.empty(nbytes, dtype=torch.uint8, device=device)
        torch.cuda.synchronize(device)
        return t, ""
    except oom_types(torch) as e:  # noqa: PERF203 - one attempt
        return None, type(e).__name__
    except RuntimeError as e:
        return None, type(e).__name__ + ":" + str(e).split("\n")[0][:80].replace(" ", "_")


def graph_run(torch, nbytes, device):
    """Captures a graph that allocates nbytes and fills them, replays it once; (ok, error)."""
    err = ""
    try:
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            with torch.cuda.graph(g):
                t = torch.empty(nbytes, dtype=torch.uint8, device=device)
                t.fill_(1)
        g.replay()
        torch.cuda.synchronize(device)
        del t, g
    except Exception as e:  # noqa: BLE001 - any refusal is the result
        err = type(e).__name__ + ":" + str(e).split("\n")[0][:80].replace(" ", "_")
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001
        err = err or ("after:" + type(e).__name__)
    return not err, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quota", type=int, required=True)
    ap.add_argument("--chunk-mib", type=int, default=256)
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    t0 = time.monotonic()
    import torch  # noqa: PLC0415 - timed on purpose

    dev = torch.device("cuda", args.device)
    torch.cuda.init()
    backend = torch.cuda.get_allocator_backend() if hasattr(torch.cuda, "get_allocator_backend") else "native"
    emit(
        "init",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        backend=backend,
        alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") or "-",
        import_s=f"{time.monotonic() - t0:.2f}",
    )

    free, total = torch.cuda.mem_get_info(dev)
    emit("mem_get_info", free=free, total=total)
    emit("props", total_memory=torch.cuda.get_device_properties(dev).total_memory)

    q = args.quota
    t, err = attempt(torch, q // 4, dev)
    emit("within", bytes=q // 4, ok=int(t is not None), error=err or "-")
    del t

    t, err = attempt(torch, q + GIB, dev)
    emit("past", bytes=q + GIB, ok=int(t is not None), error=err or "-")
    del t
    torch.cuda.empty_cache()

    held, chunks, err = [], args.chunk_mib * MIB, ""
    while len(held) * chunks < q + GIB:
        t, err = attempt(torch, chunks, dev)
        if t is None:
            break
        held.append(t)
    free_c, total_c = torch.cuda.mem_get_info(dev)
    emit(
        "chunks",
        chunk=chunks,
        held=len(held) * chunks,
        stopped_by=err or "cap",
        reserved=torch.cuda.memory_reserved(dev),
        free=free_c,
        total=total_c,
    )
    del held
    torch.cuda.empty_cache()

    t, err = attempt(torch, q // 2, dev)
    free_r, total_r = torch.cuda.mem_get_info(dev)
    emit("recover", bytes=q // 2, ok=int(t is not None), error=err or "-", free=free_r, total=total_r)
    del t
    torch.cuda.empty_cache()

    # Last: a failed capture must not disturb the steps above.
    ok, err = graph_run(torch, q // 4, dev)
    emit("graph", bytes=q // 4, ok=int(ok), error=err or "-")
    ok, err = graph_run(torch, q + GIB, dev)
    emit("graph_past", bytes=q + GIB, ok=int(ok), error=err or "-")
    emit("done", ok=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
