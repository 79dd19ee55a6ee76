#!/usr/bin/env python3
"""How NVML samples a process's utilisation: its sampling period and how old its newest sample
is when read (what simgpu's `SIMGPU_NVML_PERIOD` models, and what vgpu's SM controller reads).

    nvml_sampling.py --pid PID|stdin --seconds S [--spawned-us T] [--poll-ms 10] [--lib PATH]

--pid stdin: once NVML answers, prints "ready" and reads "PID [SPAWNED_US]" from stdin (the
caller starts the load then), so the polls see the device before the load.

Polls `nvmlDeviceGetProcessUtilization` of device 0 every --poll-ms while process PID runs a
steady load, and prints one JSON line:

    {"ok": true, "polls": n, "samples": n, "period_ms": median spacing of PID's distinct sample
     timestamps, "period_p10_ms": .., "period_p90_ms": .., "age_ms": median over polls of (the
     poll's time - the newest timestamp of PID it returned), "age_max_ms": ..,
     "first_busy_ms": first sample of PID with smUtil > 0, after --spawned-us (when given),
     "sm_util_p50": .., "window": {...}, "error": null}

Every other poll asks instead for the last second (lastSeenTimeStamp = now - 1 s, as HAMi-core
asks), to see how the driver answers for several periods at once: "window" gives the most
entries PID had in one answer ("entries_max": 1 when the driver gives one entry per process, more
when it gives one per period), and, from the first answer with PID busy, how long until PID's
utilisation reached 90 % of the most it showed ("ramp_ms": about one period when the driver
answers with the newest period, about the window when it averages the periods, as simgpu does).

Only the standard library (ctypes). Timestamps are NVML's (microseconds, CLOCK_REALTIME).
"""

import argparse
import ctypes
import json
import statistics
import sys
import time

NVML_SUCCESS = 0
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_NOT_FOUND = 6


class Sample(ctypes.Structure):
    """nvmlProcessUtilizationSample_t."""

    _fields_ = [
        ("pid", ctypes.c_uint),
        ("timeStamp", ctypes.c_ulonglong),
        ("smUtil", ctypes.c_uint),
        ("memUtil", ctypes.c_uint),
        ("encUtil", ctypes.c_uint),
        ("decUtil", ctypes.c_uint),
    ]


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[int(p * (len(v) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pid", required=True, help="a pid, or stdin")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--spawned-us", type=int, default=0)
    ap.add_argument("--poll-ms", type=float, default=10.0)
    ap.add_argument("--lib", default="libnvidia-ml.so.1")
    a = ap.parse_args()
    out = {"ok": False, "polls": 0, "samples": 0, "error": None}
    try:
        nvml = ctypes.CDLL(a.lib)
    except OSError as e:
        out["error"] = f"load {a.lib}: {e}"
        print(json.dumps(out))
        return 0
    get = nvml.nvmlDeviceGetProcessUtilization
    get.argtypes = [ctypes.c_void_p, ctypes.POINTER(Sample), ctypes.POINTER(ctypes.c_uint), ctypes.c_ulonglong]
    rc = nvml.nvmlInit_v2()
    if rc != NVML_SUCCESS:
        out["error"] = f"nvmlInit_v2 rc={rc}"
        print(json.dumps(out))
        return 0
    dev = ctypes.c_void_p()
    rc = nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(dev))
    if rc != NVML_SUCCESS:
        out["error"] = f"nvmlDeviceGetHandleByIndex_v2 rc={rc}"
        print(json.dumps(out))
        return 0
    if a.pid == "stdin":
        print("ready", flush=True)
        words = sys.stdin.readline().split()
        if not words:
            out["error"] = "no pid on stdin"
            print(json.dumps(out))
            return 0
        a.pid = int(words[0])
        if len(words) > 1:
            a.spawned_us = int(words[1])
    else:
        a.pid = int(a.pid)
    seen = {}  # timestamp -> smUtil, for --pid
    ages = []
    errors = {}
    window = []  # (poll time in µs, PID's entries' smUtil) for the last-second queries
    end = time.monotonic() + a.seconds
    buf = (Sample * 256)()
    while time.monotonic() < end:
        count = ctypes.c_uint(len(buf))
        out["polls"] += 1
        if out["polls"] % 2 == 0:
            asked_us = time.time_ns() // 1000
            rc = get(dev, buf, ctypes.byref(count), asked_us - 1_000_000)
            if rc == NVML_SUCCESS:
                window.append((asked_us, [s.smUtil for s in buf[: count.value] if s.pid == a.pid]))
            elif rc == NVML_ERROR_NOT_FOUND:
                window.append((asked_us, []))
            else:
                errors[rc] = errors.get(rc, 0) + 1
            time.sleep(a.poll_ms / 1e3)
            continue
        rc = get(dev, buf, ctypes.byref(count), 0)
        now_us = time.time_ns() // 1000
        if rc == NVML_SUCCESS:
            newest = None
            for s in buf[: count.value]:
                if s.pid == a.pid:
                    seen[s.timeStamp] = s.smUtil
                    newest = s.timeStamp if newest is None else max(newest, s.timeStamp)
            if newest is not None:
                ages.append((now_us - newest) / 1e3)
        elif rc != NVML_ERROR_NOT_FOUND:  # NOT_FOUND: no samples yet
            errors[rc] = errors.get(rc, 0) + 1
        time.sleep(a.poll_ms / 1e3)
    nvml.nvmlShutdown()
    stamps = sorted(seen)
    gaps = [(b - x) / 1e3 for x, b in zip(stamps, stamps[1:])]
    busy = [t for t in stamps if seen[t] > 0]
    out.update({
        "samples": len(stamps),
        "period_ms": statistics.median(gaps) if gaps else None,
        "period_p10_ms": pct(gaps, 0.1),
        "period_p90_ms": pct(gaps, 0.9),
        "age_ms": statistics.median(ages) if ages else None,
        "age_max_ms": max(ages) if ages else None,
        "first_busy_ms": (busy[0] - a.spawned_us) / 1e3 if busy and a.spawned_us else None,
        "sm_util_p50": statistics.median([seen[t] for t in stamps]) if stamps else None,
        "errors": {str(k): v for k, v in errors.items()},
    })
    # The last-second answers: how many entries PID had, and how fast its figure rose.
    # The rise is timed only when an answer saw PID idle first (else it started before the
    # first answer, and part of the rise was missed: null).
    top = max((max(u) for _, u in window if u), default=0)
    first_busy = next((i for i, (_, u) in enumerate(window) if u and max(u) > 0), None)
    idle_first = first_busy is not None and first_busy > 0
    busy_at = window[first_busy][0] if idle_first else None
    full_at = next((t for t, u in window if u and top and max(u) >= 0.9 * top), None)
    out["window"] = {
        "polls": len(window),
        "entries_max": max((len(u) for _, u in window), default=0),
        "top_util": top,
        "seen_idle_first": idle_first,
        "ramp_ms": (full_at - busy_at) / 1e3 if busy_at is not None and full_at is not None else None,
    }
    out["ok"] = len(gaps) >= 2
    if not out["ok"]:
        out["error"] = f"too few samples of pid {a.pid}: {len(stamps)} (errors {errors})"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
