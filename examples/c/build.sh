#!/usr/bin/env bash
# Builds the C example programs into OUT_DIR:
#   alloc_families, launch                 linked with -lcuda (-DVGPU_LINKED): paths linked|dlopen|gpa
#   alloc_families_nolink, launch_nolink   not linked with libcuda: paths dlopen|gpa only
#
# usage: build.sh OUT_DIR [LIBCUDA_DIR]
#   LIBCUDA_DIR (or env SIMGPU_LIB_DIR): directory holding libcuda.so (or libcuda.so.1) to
#   link against, e.g. simgpu's. Without it the system's libcuda is used (ldconfig's).
#   The programs find libcuda at run time through the usual search (LD_LIBRARY_PATH, ...);
#   no rpath is set.
#   Without either: ldconfig's libcuda.so.1, else the first of /usr/local/nvidia/lib64 and
#   /usr/local/nvidia/lib (where GPU containers mount the driver), /usr/lib/x86_64-linux-gnu,
#   /usr/lib/aarch64-linux-gnu, /usr/lib64, and the toolkit's link stub
#   ($CUDA_HOME/lib64/stubs, /usr/local/cuda/lib64/stubs) that holds one.
# env: CC (default gcc), CFLAGS (appended), VGPU_SKIP_LINKED=1 to build only the _nolink pair
#   when no libcuda is available, VGPU_WERROR=0 to let warnings pass (an unknown compiler, as
#   on a lent GPU machine; the test suite keeps -Werror).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: build.sh OUT_DIR [LIBCUDA_DIR]}"
libdir="${2:-${SIMGPU_LIB_DIR:-}}"
cc="${CC:-gcc}"
mkdir -p "$out"

flags=(-std=gnu11 -O2 -g -Wall -Wextra -fPIE -pie -I"$here")
if [[ "${VGPU_WERROR:-1}" != 0 ]]; then
    flags+=(-Werror)
fi
# shellcheck disable=SC2206
extra=(${CFLAGS:-})
common=("$here/driver.c")

build() { # name, then extra arguments
    local name="$1"
    shift
    "$cc" "${flags[@]}" "${extra[@]}" -o "$out/$name" "$@"
}

build alloc_families_nolink "$here/alloc_families.c" "${common[@]}" -ldl
build launch_nolink "$here/launch.c" "${common[@]}" -ldl

link=()
if [[ -n "$libdir" ]]; then
    if [[ -e "$libdir/libcuda.so" ]]; then
        link=(-L"$libdir" -lcuda)
    elif [[ -e "$libdir/libcuda.so.1" ]]; then
        link=(-L"$libdir" -l:libcuda.so.1)
    else
        echo "build.sh: no libcuda.so or libcuda.so.1 in $libdir" >&2
        exit 1
    fi
else
    sys="$( (/sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null || true) |
        awk '/libcuda\.so\.1 .*x86-64|libcuda\.so\.1 .*AArch64/ {print $NF; exit}')"
    if [[ -z "$sys" ]]; then
        for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 \
            "${CUDA_HOME:-/nonexistent}/lib64/stubs" /usr/local/cuda/lib64/stubs; do
            for f in "$d/libcuda.so.1" "$d/libcuda.so"; do
                if [[ -e "$f" ]]; then
                    sys="$f"
                    break 2
                fi
            done
        done
    fi
    if [[ -n "$sys" ]]; then
        link=(-L"$(dirname "$sys")" "-l:$(basename "$sys")")
    elif [[ "${VGPU_SKIP_LINKED:-0}" == 1 ]]; then
        echo "build.sh: no libcuda found; built only the _nolink programs" >&2
        exit 0
    else
        echo "build.sh: no libcuda found: pass LIBCUDA_DIR (or SIMGPU_LIB_DIR), or set VGPU_SKIP_LINKED=1" >&2
        exit 1
    fi
fi

build alloc_families -DVGPU_LINKED "$here/alloc_families.c" "${common[@]}" -Wl,--no-as-needed "${link[@]}" -ldl
build launch -DVGPU_LINKED "$here/launch.c" "${common[@]}" -Wl,--no-as-needed "${link[@]}" -ldl
echo "built alloc_families launch alloc_families_nolink launch_nolink in $out"
