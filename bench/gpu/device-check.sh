#!/usr/bin/env bash
# The prepared device check: one call on a lent GPU machine (no cargo there), under 6 minutes,
# from the binaries bench/gpu/make-carry.sh built here and the call carried (bench/gpu/carry).
# The exact call is in bench/gpu/README.md, "The device check".
#
#   bench/gpu/device-check.sh [--dry [--artifacts DIR]] [--budget SECONDS]
#
# Writes into $OUT (default bench/gpu/out-device), at most 8 files, each as soon as it exists:
#   environment.txt   the machine: kernel, sandbox hints, driver, nvcc, Python, PyTorch
#   sandbox.json      what the shim's region relies on (OFD locks, link, memfd, shared mmap,
#                     futex), checked first (sandbox_check.py)
#   report.json       the harness's report, rewritten after every section
#   report.md         the same, for people
#   logs.tar.gz       the run's logs and per-section output (work/ without the builds)
#   verdict.txt       one line: FAIL / PASS … and what was skipped
# --dry: the same on simgpu with this repository's debug build (what the test suite runs;
# --artifacts DIR takes that build from DIR without running cargo).
# Exits 0 once the verdict is written (the verdict says what failed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dry=0 budget="" artifacts=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --dry) dry=1 ;;
    --budget) budget="${2:?--budget needs seconds}" && shift ;;
    --artifacts) artifacts="${2:?--artifacts needs a directory}" && shift ;;
    *) echo "device-check.sh: unknown argument $1" >&2 && exit 2 ;;
    esac
    shift
done
out="${OUT:-$here/out-device}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/vgpu-device-check.XXXXXX")"
trap 'rm -rf "$run_dir"' EXIT

# ---- 1. the machine, in the first seconds -------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    echo "uname: $(uname -a)"
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || echo unknown)"
    echo "cpus: $(nproc) memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
    # gVisor reports kernel 4.4.0 and a Sentry in dmesg; Firecracker a virtio-mmio machine.
    echo "sandbox hints: $(dmesg 2>/dev/null | grep -m1 -i -E 'gvisor|sentry|firecracker' || echo none seen)"
    echo "seccomp: $(awk '/Seccomp:/ {print $2}' /proc/self/status)"
    echo "libcuda: $( (ldconfig -p 2>/dev/null | grep -m1 'libcuda.so.1') || ls /usr/local/nvidia/lib64/libcuda.so.1 2>/dev/null || echo 'not found')"
    echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -1 || echo none)"
    echo "nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo none)"
    echo "python: $(python3 --version 2>&1)"
    echo "torch: $(timeout 30 python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1)"
    echo "carry: $(cat "$here/carry/commit" 2>/dev/null || echo 'none (run bench/gpu/make-carry.sh here first)')"
} >"$out/environment.txt" 2>&1

# ---- 2. the sandbox -----------------------------------------------------------------------
python3 "$here/sandbox_check.py" --json "$out/sandbox.json" >"$run_dir/sandbox.log" 2>&1 || true

# ---- 3. the harness, from the carried binaries --------------------------------------------
args=(--out "$run_dir/run")
if ((dry)); then
    args+=(--dry)
    [[ -n "$artifacts" ]] && args+=(--no-build --artifacts "$artifacts")
else
    if [[ ! -f "$here/carry/libvgpu.so" ]]; then
        echo "FAIL: no carried binaries in $here/carry (run bench/gpu/make-carry.sh, and carry bench/gpu/carry)" >"$out/verdict.txt"
        cat "$out/verdict.txt"
        exit 0
    fi
    args+=(--no-build --artifacts "$here/carry")
fi
[[ -n "$budget" ]] && args+=(--budget "$budget")
# The harness keeps its own budget (300 s on a GPU, its builds included); this bounds it
# whatever happens, so the whole check stays under 6 minutes (environment 30 s at most).
rc=0
timeout -k 5 305 bash "$here/run.sh" "${args[@]}" >"$run_dir/run.log" 2>&1 || rc=$?
for f in report.json report.md; do
    [[ -f "$run_dir/run/$f" ]] && cp "$run_dir/run/$f" "$out/$f"
done

# ---- 4. the logs, and the verdict ---------------------------------------------------------
# Only text travels (logs, the sections' output); builds, libraries and region files stay.
(cd "$run_dir" && find sandbox.log run.log run -type f -size -4M \
    \( -name '*.log' -o -name '*.txt' -o -name '*.json' -o -name '*.md' -o -name '*.tsv' -o -name '*.csv' -o -name '*.out' -o -name '*.err' \) \
    -print0 2>/dev/null | tar -czf "$out/logs.tar.gz" --null -T - 2>/dev/null) || true
verdict="$(python3 - "$out" "$rc" <<'PY'
import json, os, sys
out, rc = sys.argv[1], int(sys.argv[2])
try:
    sb = json.load(open(os.path.join(out, "sandbox.json")))
    bad = [k for k, v in sb.items() if isinstance(v, dict) and v.get("ok") is False]
    sandbox = "sandbox ok" if not bad else "SANDBOX: " + ", ".join(f"{k} ({sb[k]['detail']})" for k in bad)
except Exception as e:  # noqa: BLE001
    sandbox = f"sandbox check missing ({e})"
try:
    rep = json.load(open(os.path.join(out, "report.json")))
    v = rep.get("verdict") or ("PASS" if rep.get("ok") else "FAIL")
except Exception as e:  # noqa: BLE001
    v = f"FAIL: no report ({e}; run.sh exited {rc})"
if rc in (124, 137):
    v += f" (run.sh was stopped at its 305 s bound: rc {rc})"
print(f"{v}; {sandbox}")
PY
)"
echo "$verdict" >"$out/verdict.txt"
echo "device-check: $verdict"
echo "device-check: files in $out: $(ls "$out" | tr '\n' ' ')"
