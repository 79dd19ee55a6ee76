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
# env: CC (default gcc), CFLAGS (appended), VGPU_SKIP_LINKED=1 to build only the _nolink pair
#   when no libcuda is available.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: build.sh OUT_DIR [LIBCUDA_DIR]}"
libdir="${2:-${SIMGPU_LIB_DIR:-}}"
cc="${CC:-gcc}"
mkdir -p "$out"

flags=(-std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIE -pie -I"$here")
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
    if [[ -n "$sys" ]]; then
        link=(-L"$(dirname "$sys")" -l:libcuda.so.1)
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
