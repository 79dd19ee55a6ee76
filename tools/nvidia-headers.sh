#!/usr/bin/env bash
# Fetch NVIDIA's own driver-API and NVML headers (cuda.h, cudaTypedefs.h, nvml.h, ...) from the
# PyPI wheels `nvidia-cuda-runtime-cu12` and `nvidia-nvml-dev-cu12`, cache them, and print the
# two include directories, one a line: first the one holding cuda.h, then the one holding nvml.h.
#
#   tools/nvidia-headers.sh [CACHE_DIR]
#
# CACHE_DIR defaults to "${CARGO_TARGET_DIR:-<repo>/target}/nvidia-headers". The headers land in
# CACHE_DIR/<version>/ and are reused when already there. A fetch happens in a private temporary
# directory that is renamed into place only once complete, so concurrent callers never see a
# half-unpacked tree. VGPU_NVIDIA_HEADERS_VERSION picks another wheel version (default below).
#
# The headers are NVIDIA's: never commit them. On failure the script exits non-zero with the
# reason as the last line on stderr (callers such as cuda-sys/tests/conformance.rs show it).
set -euo pipefail

version=${VGPU_NVIDIA_HEADERS_VERSION:-12.9.79}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${1:-${CARGO_TARGET_DIR:-$repo/target}/nvidia-headers}
dest=$base/$version
cuda_inc=$dest/nvidia/cuda_runtime/include
nvml_inc=$dest/nvidia/nvml_dev/include

fail() {
    echo "nvidia-headers.sh: $*" >&2
    exit 1
}

have_headers() {
    [[ -f $cuda_inc/cuda.h && -f $cuda_inc/cudaTypedefs.h && -f $nvml_inc/nvml.h ]]
}

if ! have_headers; then
    command -v python3 >/dev/null || fail "python3 not found"
    python3 -m pip --version >/dev/null 2>&1 || fail "python3 -m pip not available"
    mkdir -p "$base"
    tmp=$(mktemp -d "$base/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT

    # Short timeout and one retry: without network this should fail in seconds, not minutes.
    if ! PIP_NO_INPUT=1 python3 -m pip download --no-deps --only-binary=:all: \
        --disable-pip-version-check --quiet --timeout 20 --retries 1 --dest "$tmp/wheels" \
        "nvidia-cuda-runtime-cu12==$version" "nvidia-nvml-dev-cu12==$version" >"$tmp/pip.log" 2>&1; then
        tail -n 5 "$tmp/pip.log" >&2
        fail "pip download of nvidia-cuda-runtime-cu12/nvidia-nvml-dev-cu12 $version failed (no network?)"
    fi

    # Unpack only the headers (nvidia/<component>/include/...), not the shared libraries.
    python3 - "$tmp/wheels" "$tmp/tree" <<'EOF' || fail "unpacking the wheels failed"
import pathlib, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            parts = name.split("/")
            if len(parts) > 3 and parts[0] == "nvidia" and parts[2] == "include" and not name.endswith("/"):
                z.extract(name, out)
EOF

    # rename(2) of a directory is atomic; if another caller won the race, keep its tree.
    if ! mv -T "$tmp/tree" "$dest" 2>/dev/null && ! have_headers; then
        fail "could not move the headers into $dest"
    fi
    have_headers || fail "the wheels did not contain cuda.h, cudaTypedefs.h and nvml.h"
fi

echo "$cuda_inc"
echo "$nvml_inc"
