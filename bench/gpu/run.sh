#!/usr/bin/env bash
# vgpu's real-GPU harness: one command, one JSON and one markdown report.
#
#   bench/gpu/run.sh [--dry] [--shim PATH] [--out DIR] [--artifacts DIR] [--no-build]
#                    [--budget SECONDS] [--strict]
#
# On a machine with an NVIDIA GPU (driver, nvcc, PyTorch): builds the shim
# (cargo build --release -p vgpu-shim -p vgpu-cli) unless --shim names one (or, without cargo,
# uses target/release/libvgpu.so when present), builds the driver-API C examples against the
# real libcuda (examples/c/build.sh), compiles bench/gpu/src/*.cu with nvcc, and runs
# bench/gpu/harness.py: quota checks (driver API, NVML, nvidia-smi, PyTorch), SM share accuracy
# at 10..90 %, cudart programs and end-to-end PyTorch overhead, each with and without the shim.
#
# --dry (what CI runs; no GPU, nvcc or PyTorch needed): uses the debug build (target/debug, or
# --artifacts), lays simgpu out, runs the driver-API quota checks and the SM workloads with the
# C examples against simgpu, checks that the .cu files parse (check_cu.sh --syntax), and marks
# the sections that need nvcc, PyTorch or nvidia-smi as skipped.
#
# --out DIR      where report.json and report.md go (default bench/gpu/out); DIR/work holds the
#                builds and logs of this run and is recreated each time
# --artifacts    cargo's output directory to take libvgpu.so, simgpu and nvml_client from
#                (default target/debug with --dry, target/release otherwise)
# --no-build     do not run cargo: use what --artifacts / --shim hold
# --budget S     the whole run's time budget in seconds (default 300 on a GPU, 55 with --dry);
#                sections left when it is spent are reported as skipped
# --strict       exit 1 when a section failed, errored or timed out (default: 0 once the
#                report is written; the report says what failed)
# env: VGPU_BENCH_SM_SECONDS, VGPU_BENCH_CALIBRATION_SECONDS (per SM run), VGPU_BENCH_PYTHON
#      (python with torch, default python3), VGPU_BENCH_OVERHEAD_SECONDS/_PAIRS, NVCC, NVCC_ARCH,
#      CUDA_INCLUDE (NVIDIA headers for the --dry syntax check; see check_cu.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
started="$(date +%s.%N)"
command_line="bench/gpu/run.sh $*"

dry=0 shim="" out="$here/out" artifacts="" build=1 budget="" strict=0
usage() { sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
    --dry) dry=1 ;;
    --shim) shim="${2:?--shim needs a path}" && shift ;;
    --out) out="${2:?--out needs a directory}" && shift ;;
    --artifacts) artifacts="${2:?--artifacts needs a directory}" && shift ;;
    --no-build) build=0 ;;
    --budget) budget="${2:?--budget needs seconds}" && shift ;;
    --strict) strict=1 ;;
    -h | --help) usage && exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2 && usage >&2 && exit 2 ;;
    esac
    shift
done
if [[ -n "$shim" && ! -f "$shim" ]]; then
    echo "run.sh: --shim $shim: no such file" >&2
    exit 2
fi
[[ -n "$shim" ]] && shim="$(cd "$(dirname "$shim")" && pwd)/$(basename "$shim")"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$out/work"
marker=.vgpu-gpu-harness-work
if [[ -e "$work" && ! -f "$work/$marker" ]]; then
    echo "run.sh: $work exists and was not made by run.sh: choose another --out" >&2
    exit 2
fi
rm -rf "$work"
mkdir -p "$work"
touch "$work/$marker"
steps="$work/build.tsv"
: >"$steps"

say() { echo "run.sh: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
now() { date +%s.%N; }
# step NAME STATUS START DETAIL: one line of the build section
step() {
    local secs
    secs="$(awk -v a="$3" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')"
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$secs" "${4//$'\t'/ }" >>"$steps"
    say "$1: $2${4:+ ($4)}"
}
# with_timeout SECONDS CMD...: runs CMD, killed after SECONDS when `timeout` exists
with_timeout() {
    local t="$1"
    shift
    if have timeout; then timeout --kill-after=10 "$t" "$@"; else "$@"; fi
}
last_line() { tail -n 1 "$1" 2>/dev/null | tr '\t' ' ' | cut -c1-300; }

profile=release
((dry)) && profile=debug
artifacts="${artifacts:-$repo/target/$profile}"
shim_source=given
cargo_ok=0
if ((build)) && have cargo; then cargo_ok=1; fi

# ---- 1. the shim (and, dry, simgpu and nvml_client) ----------------------------------------
if ((dry)); then
    t="$(now)"
    if ((cargo_ok)); then
        if (cd "$repo" && cargo build -q -p vgpu-shim -p simgpu-cuda -p simgpu-nvml -p vgpu-cudarc-client) >"$work/cargo.log" 2>&1; then
            step cargo_build pass "$t" "debug: vgpu-shim simgpu-cuda simgpu-nvml vgpu-cudarc-client"
        else
            step cargo_build fail "$t" "$(last_line "$work/cargo.log")"
        fi
    else
        step cargo_build skipped "$t" "using $artifacts"
    fi
    if [[ -z "$shim" ]]; then
        shim="$artifacts/libvgpu.so"
        shim_source="$artifacts"
    fi
    t="$(now)"
    simlib="$work/simgpu-lib"
    if ((cargo_ok)) && (cd "$repo" && cargo run -q -p simgpu --example layout "$simlib") >"$work/layout.log" 2>&1; then
        step simgpu_layout pass "$t" "cargo run -p simgpu --example layout: $simlib"
    elif [[ -f "$artifacts/libcuda.so" && -f "$artifacts/libnvidia_ml.so" ]]; then
        # The same layout as simgpu::layout, without cargo.
        mkdir -p "$simlib"
        cp "$artifacts/libcuda.so" "$simlib/libcuda.so.1" && ln -sf libcuda.so.1 "$simlib/libcuda.so"
        cp "$artifacts/libnvidia_ml.so" "$simlib/libnvidia-ml.so.1" && ln -sf libnvidia-ml.so.1 "$simlib/libnvidia-ml.so"
        step simgpu_layout pass "$t" "copied from $artifacts: $simlib"
    else
        step simgpu_layout fail "$t" "no libcuda.so / libnvidia_ml.so in $artifacts: cargo build --workspace first"
        simlib=""
    fi
else
    simlib=""
    t="$(now)"
    if [[ -n "$shim" ]]; then
        step shim given "$t" "$shim"
    elif ((cargo_ok)) && (cd "$repo" && with_timeout 300 cargo build --release -p vgpu-shim -p vgpu-cli) >"$work/cargo.log" 2>&1; then
        shim="$repo/target/release/libvgpu.so"
        shim_source="cargo build --release"
        step cargo_build pass "$t" "release: vgpu-shim vgpu-cli"
    else
        why="no cargo"
        if ((cargo_ok)); then why="cargo failed: $(last_line "$work/cargo.log")"; fi
        if [[ -f "$artifacts/libvgpu.so" ]]; then
            shim="$artifacts/libvgpu.so"
            shim_source="found in $artifacts"
            step cargo_build skipped "$t" "$why; using $shim"
        else
            step cargo_build fail "$t" "$why, and no $artifacts/libvgpu.so: pass --shim PATH"
        fi
    fi
fi
nvml_client=""
[[ -x "$artifacts/nvml_client" ]] && nvml_client="$artifacts/nvml_client"

# ---- 2. the driver-API C examples --------------------------------------------------------
t="$(now)"
cbin="$work/cbin"
if ((dry)) && [[ -z "$simlib" ]]; then
    step examples_c fail "$t" "no simgpu to link against"
    cbin=""
elif VGPU_WERROR="$dry" bash "$repo/examples/c/build.sh" "$cbin" ${simlib:+"$simlib"} >"$work/examples-c.log" 2>&1; then
    step examples_c pass "$t" "examples/c/build.sh $cbin${simlib:+ $simlib}"
elif ! ((dry)) && VGPU_WERROR=0 VGPU_SKIP_LINKED=1 bash "$repo/examples/c/build.sh" "$cbin" >>"$work/examples-c.log" 2>&1 &&
    [[ -x "$cbin/alloc_families_nolink" ]]; then
    # No libcuda to link against (ldconfig does not list it): the dlopen/gpa programs still run.
    step examples_c pass "$t" "only the _nolink programs (no libcuda.so.1 to link with): $cbin"
else
    step examples_c fail "$t" "$(last_line "$work/examples-c.log")"
    cbin=""
fi

# The probe (tests/c/probe.c): module globals, the malloc heap, NVML's per-process view and
# cuGetProcAddress beside dlsym, for the quota_modules and calibration sections.
if [[ -n "$cbin" ]]; then
    t="$(now)"
    werror=()
    ((dry)) && werror=(-Werror)
    if "${CC:-gcc}" -std=gnu11 -O2 -Wall "${werror[@]}" -o "$cbin/probe" "$repo/tests/c/probe.c" -ldl >"$work/probe.log" 2>&1; then
        step probe pass "$t" "gcc tests/c/probe.c: $cbin/probe"
    else
        step probe fail "$t" "$(last_line "$work/probe.log")"
    fi
fi

# ---- 3. the CUDA programs ----------------------------------------------------------------
t="$(now)"
cubin=""
if ((dry)); then
    if bash "$here/check_cu.sh" --syntax "$work/cu" >"$work/cu-check.log" 2>&1; then
        step cu_check pass "$t" "$(last_line "$work/cu-check.log")"
    else
        step cu_check fail "$t" "$(last_line "$work/cu-check.log")"
    fi
else
    with_timeout 240 bash "$here/check_cu.sh" --nvcc "$work/cubin" >"$work/cu-check.log" 2>&1 || true
    line="$(last_line "$work/cu-check.log")"
    case "$line" in
    *status=pass*) cubin="$work/cubin" && step nvcc pass "$t" "$line" ;;
    *status=skipped*) step nvcc skipped "$t" "no nvcc" ;;
    *) step nvcc fail "$t" "${line:-check_cu.sh gave no result}" ;;
    esac
fi

# ---- 4. the sections ---------------------------------------------------------------------
if [[ -z "$budget" ]]; then
    budget=300
    ((dry)) && budget=55
fi
set +e
python3 "$here/harness.py" --mode "$( ((dry)) && echo dry || echo gpu)" --out "$out" --work "$work" \
    --shim "$shim" --shim-source "$shim_source" --cbin "$cbin" --cubin "$cubin" --simlib "$simlib" \
    --nvml-client "$nvml_client" --steps "$steps" --started "$started" --budget "$budget" --command "$command_line" \
    | tee "$work/summary.txt"
rc="${PIPESTATUS[0]}"
set -e
if [[ "$rc" != 0 ]]; then
    say "harness.py failed (exit $rc)"
    exit "$rc"
fi
if ((strict)) && ! grep -q '^runtime_s=.* ok=1$' "$work/summary.txt"; then
    say "--strict: a section failed, errored or timed out (see $out/report.md)"
    exit 1
fi
