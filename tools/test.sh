#!/usr/bin/env bash
# vgpu's whole test suite: the README's test command, and what .ci/run calls.
#
# Builds every crate (the cdylibs and binaries the end-to-end tests start as child processes
# are only produced by a build, never by `cargo test`), checks formatting and lints, then runs
# every test. First runs fetch NVIDIA's headers and the Python clients from PyPI into target/,
# the Kubernetes schema validator (PyPI kubernetes-validate) into target/debug/pyenv-k8s, and,
# for the release tarball test, cargo-zigbuild (crates.io) and zig (PyPI ziglang) into
# target/tools: a cold run adds about 2.5 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "tools/test.sh: '$1' is required: $2" >&2; exit 1; }
}
need cargo "install Rust (rustup)"
need gcc "apt-get install gcc"
need readelf "apt-get install binutils"   # tools/glibc-floor.sh (the release test)
need strip "apt-get install binutils"
need python3 "apt-get install python3 python3-venv"
python3 -m venv --help >/dev/null 2>&1 || { echo "tools/test.sh: python3 lacks venv: apt-get install python3-venv" >&2; exit 1; }

# In CI nothing may be skipped silently: the header conformance test and the Python clients
# must run for real.
if [[ "${CI:-}" == "true" ]]; then
    export VGPU_REQUIRE_HEADERS=1 VGPU_REQUIRE_PYTHON=1
fi

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "build"
cargo build --workspace --all-targets --locked
step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "test"
cargo test --workspace --locked -- --skip conformance_with_nvidia_headers
step "bench smoke"
cargo test -p vgpu-bench --benches --locked
step "header conformance"
cargo test -p cuda-sys --test conformance --locked -- --nocapture conformance_with_nvidia_headers
step "C examples' header (examples/c/cuda_min.h) against NVIDIA's cuda.h"
# The script prints two lines; take the first after it has finished (`| head -n 1` under
# pipefail can kill it with SIGPIPE before its second line, which failed CI once).
if headers=$(tools/nvidia-headers.sh) && cuda_inc=${headers%%$'\n'*} && [[ -n $cuda_inc ]]; then
    bash examples/c/check_layouts.sh "$cuda_inc"
elif [[ "${CI:-}" == "true" ]]; then
    echo "tools/test.sh: NVIDIA's headers could not be fetched; in CI this check may not be skipped" >&2
    exit 1
else
    echo "skipped: NVIDIA's headers could not be fetched (PyPI unreachable?)"
fi
