#!/usr/bin/env bash
# Builds or checks the harness's CUDA programs (bench/gpu/src/*.cu).
#
#   check_cu.sh --nvcc OUT_DIR     compile each program with nvcc into OUT_DIR (in parallel)
#   check_cu.sh --syntax OUT_DIR   no nvcc here: parse each .cu with the host C++ compiler
#                                  (g++ -fsyntax-only), kernel launches rewritten into plain calls
#                                  and device built-ins declared by src/hostcheck/. With NVIDIA's
#                                  headers (env CUDA_INCLUDE: directories holding cuda_runtime.h
#                                  and crt/host_config.h, colon-separated) the runtime API calls
#                                  are checked against them; without, against the stand-in
#                                  src/hostcheck/cuda_runtime.h.
#
# The last line on stdout is `cu_check status=pass|fail|skipped mode=<how> files=<n> ...`;
# logs go to OUT_DIR/<name>.log. Exit status: 0 pass or skipped, 1 fail.
# env: NVCC (default nvcc), NVCC_ARCH (default: native, falling back to nvcc's default),
#      NVCC_FLAGS (appended), CXX (default g++), CUDA_INCLUDE.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/src"
how="${1:?usage: check_cu.sh --nvcc|--syntax OUT_DIR}"
out="${2:?usage: check_cu.sh --nvcc|--syntax OUT_DIR}"
mkdir -p "$out"
programs=(vector_add matmul open_loop big_sync graph_replay timeslice)

finish() { # status mode detail...
    echo "cu_check status=$1 mode=$2 files=${#programs[@]} ${*:3}"
    [[ "$1" != fail ]]
}

case "$how" in
--nvcc)
    nvcc="${NVCC:-nvcc}"
    command -v "$nvcc" >/dev/null 2>&1 || { finish skipped nvcc "reason=no_nvcc"; exit 0; }
    # shellcheck disable=SC2206
    extra=(${NVCC_FLAGS:-})
    arch=()
    if [[ -n "${NVCC_ARCH:-}" ]]; then
        arch=("-arch=$NVCC_ARCH")
    elif "$nvcc" -arch=native -o "$out/.probe" -x cu - <<<'int main(){return 0;}' >"$out/.probe.log" 2>&1; then
        arch=(-arch=native)
    fi
    pids=()
    for p in "${programs[@]}"; do
        "$nvcc" -O2 -std=c++17 "${arch[@]}" "${extra[@]}" -o "$out/$p" "$src/$p.cu" >"$out/$p.log" 2>&1 &
        pids+=("$!")
    done
    failed=()
    for i in "${!programs[@]}"; do
        wait "${pids[$i]}" || failed+=("${programs[$i]}")
    done
    version="$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n 1)"
    if ((${#failed[@]})); then
        for p in "${failed[@]}"; do tail -n 20 "$out/$p.log" >&2; done
        finish fail nvcc "nvcc=${version:-?} arch=${arch[*]:-default} failed=$(
            IFS=,
            echo "${failed[*]}"
        )"
        exit 1
    fi
    finish pass nvcc "nvcc=${version:-?} arch=${arch[*]:-default}"
    ;;
--syntax)
    cxx="${CXX:-g++}"
    command -v "$cxx" >/dev/null 2>&1 || { finish skipped syntax "reason=no_host_compiler"; exit 0; }
    inc=()
    mode=syntax-standin
    defs=()
    if [[ -n "${CUDA_INCLUDE:-}" ]]; then
        IFS=: read -r -a dirs <<<"$CUDA_INCLUDE"
        have_runtime=0 have_crt=0
        for d in "${dirs[@]}"; do
            inc+=(-I"$d")
            [[ -f "$d/cuda_runtime.h" ]] && have_runtime=1
            [[ -f "$d/crt/host_config.h" ]] && have_crt=1
        done
        if ((have_runtime && have_crt)); then
            mode=syntax-cuda-headers
            defs=(-DVGPU_REAL_CUDA_HEADERS)
        else
            inc=()
        fi
    fi
    [[ "$mode" == syntax-standin ]] && inc=(-I"$src/hostcheck")
    failed=()
    for p in "${programs[@]}"; do
        # One launch per line; the rewrite keeps line numbers, so errors point at the .cu file.
        if ! sed -E 's/([A-Za-z_][A-Za-z0-9_]*)<<<(.*)>>>\(/(vgpu_launch_check(\2), \1)(/' "$src/$p.cu" |
            "$cxx" -std=c++17 -fsyntax-only -Wall -Wextra -Wno-attributes -Wno-unknown-pragmas "${defs[@]}" \
                "${inc[@]}" -I"$src" -include "$src/hostcheck/device_builtins.h" -x c++ - >"$out/$p.log" 2>&1; then
            sed "s|<stdin>|$src/$p.cu|g" "$out/$p.log" >&2
            failed+=("$p")
        elif [[ -s "$out/$p.log" ]]; then
            # A warning fails the check too: the programs must build warning-free with nvcc.
            sed "s|<stdin>|$src/$p.cu|g" "$out/$p.log" >&2
            failed+=("$p")
        fi
    done
    if ((${#failed[@]})); then
        finish fail "$mode" "failed=$(
            IFS=,
            echo "${failed[*]}"
        )"
        exit 1
    fi
    finish pass "$mode"
    ;;
*)
    echo "usage: check_cu.sh --nvcc|--syntax OUT_DIR" >&2
    exit 2
    ;;
esac
