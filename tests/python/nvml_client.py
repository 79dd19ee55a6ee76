#!/usr/bin/env python3
"""nvml_client.py: a third-party NVML user through pynvml (nvidia-ml-py), as monitoring agents,
`gpustat` and framework probes read a GPU.

Output: `client=python-nvml op=<op> ...` lines: `op=init devices= driver=`, `op=device index=
name= uuid=` (spaces in the name become `_`), `op=memory api=v1|v2 total= used= free=`
(nvmlDeviceGetMemoryInfo and, with version=nvmlMemory_v2, nvmlDeviceGetMemoryInfo_v2),
`op=process pid= used=` per running compute process then `op=processes count=`,
`op=utilization gpu= memory=`, `op=process_utilization samples=`, `op=done ok=1`.
An NVML error prints `op=<op> ok=0 err=<NVMLError class>` and exits 1.
"""
import argparse
import sys

import pynvml

CLIENT = "client=python-nvml"


def emit(op, **fields):
    print(" ".join([CLIENT, f"op={op}"] + [f"{k}={v}" for k, v in fields.items()]), flush=True)


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", type=int, default=0)
    o = ap.parse_args()

    op = "init"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        driver = text(pynvml.nvmlSystemGetDriverVersion())
        emit("init", devices=count, driver=driver)

        op = "device"
        h = pynvml.nvmlDeviceGetHandleByIndex(o.device)
        name = text(pynvml.nvmlDeviceGetName(h)).replace(" ", "_")
        uuid = text(pynvml.nvmlDeviceGetUUID(h))
        emit("device", index=o.device, name=name, uuid=uuid)

        op = "memory"
        m = pynvml.nvmlDeviceGetMemoryInfo(h)
        emit("memory", api="v1", total=m.total, used=m.used, free=m.free)
        m = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
        emit("memory", api="v2", total=m.total, used=m.used, free=m.free, reserved=m.reserved)

        op = "processes"
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        for p in procs:
            emit("process", pid=p.pid, used="unavailable" if p.usedGpuMemory is None else p.usedGpuMemory)
        emit("processes", count=len(procs))

        op = "utilization"
        u = pynvml.nvmlDeviceGetUtilizationRates(h)
        emit("utilization", gpu=u.gpu, memory=u.memory)

        op = "process_utilization"
        try:
            samples = pynvml.nvmlDeviceGetProcessUtilization(h, 0)
        except pynvml.NVMLError_NotFound:  # what NVML says when no process ran kernels lately
            samples = []
        for s in samples:
            emit("process_sample", pid=s.pid, sm=s.smUtil)
        emit("process_utilization", samples=len(samples))

        op = "shutdown"
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        emit(op, ok=0, err=type(e).__name__)
        print(f"nvml_client.py: {op}: {e}", file=sys.stderr)
        return 1
    emit("done", ok=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
