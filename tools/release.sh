#!/usr/bin/env bash
# Builds vgpu's release tarball: target/release-pkg/vgpu-<version>-x86_64-linux.tar.gz
#
#   tools/release.sh           the release: built against glibc 2.28 (cargo-zigbuild + zig),
#                              every shipped ELF file checked to need nothing newer
#   tools/release.sh --quick   a development package from a plain `cargo build --release`,
#                              named ...-x86_64-linux-dev.tar.gz; its glibc floor is the build
#                              machine's, printed but not enforced. No tools are installed.
#
# Prints the tarball's path on stdout (everything else goes to stderr). Exit status 3 means a
# build tool could not be installed (crates.io or PyPI unreachable).
#
# Why zig: a plain build links against the build machine's glibc (2.36 here) and takes the
# newest symbol versions it offers (dlopen@GLIBC_2.34, stat64@GLIBC_2.33, ...), so the library
# would not load in CUDA images on UBI 8 (glibc 2.28) or Ubuntu 20.04 (2.31). cargo-zigbuild
# links with zig's linker against glibc 2.28's symbol versions instead, for the same Rust
# target (`x86_64-unknown-linux-gnu.2.28`: no other standard library needed).
#
# The tools are pinned and installed on first use under target/tools/ (cargo-zigbuild from
# crates.io, zig from PyPI's `ziglang` in a venv), so later runs reuse them. A cold first run
# compiles cargo-zigbuild (about a minute on two cores) and downloads zig (about 60 MB).
#
# Layout of the tarball (the `vgpu` command finds its libraries from bin/ through ../lib):
#   vgpu-<version>/bin/vgpu
#   vgpu-<version>/lib/libvgpu.so
#   vgpu-<version>/lib/simgpu-lib/{libcuda.so.1,libcuda.so,libnvidia-ml.so.1,libnvidia-ml.so}
#   vgpu-<version>/INSTALL.md, BUILDINFO, SHA256SUMS
#   vgpu-<version>/examples/k8s/...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
GLIBC_FLOOR=2.28
RUST_TARGET=x86_64-unknown-linux-gnu
PACKAGES=(-p vgpu-shim -p vgpu-cli -p simgpu-cuda -p simgpu-nvml)

quick=0
out="$root/target/release-pkg"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1 ;;
        --out) out="${2:?--out needs a directory}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "tools/release.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '== %s\n' "$*" >&2; }
# Exit status 3: a build tool could not be installed (no registry here); anything else that
# fails is a failure of the build itself.
unavailable() { echo "tools/release.sh: $*" >&2; exit 3; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "tools/release.sh: '$1' is required: $2" >&2; exit 1; }; }
need cargo "install Rust (rustup)"
need tar "apt-get install tar"
need gzip "apt-get install gzip"
need sha256sum "apt-get install coreutils"
need readelf "apt-get install binutils"
need strip "apt-get install binutils"

version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[[ -n "$version" ]] || { echo "tools/release.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }

# The environment a test harness may leave behind must not leak into the build.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET LD_PRELOAD

tools="$root/target/tools"
if [[ $quick == 1 ]]; then
    say "quick build (cargo build --release; no glibc floor)"
    cargo build --release --locked "${PACKAGES[@]}" >&2
    built="$root/target/release"
    name="vgpu-$version-x86_64-linux-dev"
else
    need python3 "apt-get install python3 python3-venv"
    mkdir -p "$tools"
    zigbuild="$tools/bin/cargo-zigbuild"
    if [[ "$("$zigbuild" --version 2>/dev/null || true)" != "cargo-zigbuild $ZIGBUILD_VERSION" ]]; then
        say "installing cargo-zigbuild $ZIGBUILD_VERSION into target/tools (compiles it once)"
        cargo install --quiet --locked --force --root "$tools" --version "=$ZIGBUILD_VERSION" cargo-zigbuild >&2 ||
            unavailable "cannot install cargo-zigbuild from crates.io"
    fi
    venv="$tools/pyenv"
    stamp="$venv/ziglang.version"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$ZIGLANG_VERSION" || ! -x "$venv/bin/python" ]]; then
        say "installing zig (PyPI ziglang==$ZIGLANG_VERSION) into target/tools/pyenv"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2 || unavailable "python3 -m venv failed (apt-get install python3-venv)"
        "$venv/bin/pip" install --disable-pip-version-check --no-input --quiet --timeout 60 \
            "ziglang==$ZIGLANG_VERSION" >&2 || unavailable "cannot install ziglang from PyPI"
        echo "$ZIGLANG_VERSION" >"$stamp"
    fi
    # cargo-zigbuild runs `$CARGO_ZIGBUILD_PYTHON_PATH -m ziglang`; its wrappers and zig's
    # caches stay under target/tools as well.
    export CARGO_ZIGBUILD_PYTHON_PATH="$venv/bin/python"
    export CARGO_ZIGBUILD_CACHE_DIR="$tools/zigbuild-cache"
    export ZIG_GLOBAL_CACHE_DIR="$tools/zig-cache"
    say "building against glibc $GLIBC_FLOOR (cargo-zigbuild, target $RUST_TARGET.$GLIBC_FLOOR)"
    CARGO_TARGET_DIR="$root/target/release-zig" "$zigbuild" build --release --locked \
        --target "$RUST_TARGET.$GLIBC_FLOOR" "${PACKAGES[@]}" >&2
    built="$root/target/release-zig/$RUST_TARGET/release"
    name="vgpu-$version-x86_64-linux"
fi

for f in libvgpu.so vgpu libcuda.so libnvidia_ml.so; do
    [[ -f "$built/$f" ]] || { echo "tools/release.sh: the build made no $built/$f" >&2; exit 1; }
done

say "assembling $name"
mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg="$stage/vgpu-$version"
mkdir -p "$pkg/bin" "$pkg/lib/simgpu-lib" "$pkg/examples"
# Debug info stays in the build; the symbol table stays for backtraces.
strip --strip-debug -o "$pkg/bin/vgpu" "$built/vgpu"
strip --strip-debug -o "$pkg/lib/libvgpu.so" "$built/libvgpu.so"
strip --strip-debug -o "$pkg/lib/simgpu-lib/libcuda.so.1" "$built/libcuda.so"
strip --strip-debug -o "$pkg/lib/simgpu-lib/libnvidia-ml.so.1" "$built/libnvidia_ml.so"
ln -s libcuda.so.1 "$pkg/lib/simgpu-lib/libcuda.so"
ln -s libnvidia-ml.so.1 "$pkg/lib/simgpu-lib/libnvidia-ml.so"
chmod 0755 "$pkg/bin/vgpu" "$pkg/lib/libvgpu.so" "$pkg/lib/simgpu-lib/"*.so.1
cp -R examples/k8s "$pkg/examples/k8s"

say "glibc floor of the shipped files"
elves=("$pkg/bin/vgpu" "$pkg/lib/libvgpu.so" "$pkg/lib/simgpu-lib/libcuda.so.1" "$pkg/lib/simgpu-lib/libnvidia-ml.so.1")
if [[ $quick == 1 ]]; then
    floor_report=$(tools/glibc-floor.sh "${elves[@]}")
else
    floor_report=$(tools/glibc-floor.sh --max "$GLIBC_FLOOR" "${elves[@]}") || {
        echo "$floor_report" >&2
        echo "tools/release.sh: a shipped file needs a glibc newer than $GLIBC_FLOOR" >&2
        exit 1
    }
fi
floor_report=${floor_report//"$pkg/"/}
echo "$floor_report" >&2
lib_floor=$(sed -n 's/^lib\/libvgpu\.so: \(GLIBC_[0-9.]*\).*/\1/p' <<<"$floor_report")

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null || true)   # only tested for non-empty
cat >"$pkg/BUILDINFO" <<EOF
name: vgpu
version: $version
commit: $commit${dirty:+ (with uncommitted changes)}
build: $(if [[ $quick == 1 ]]; then echo "cargo build --release (development package)"; else echo "cargo-zigbuild $ZIGBUILD_VERSION, zig $ZIGLANG_VERSION, target $RUST_TARGET.$GLIBC_FLOOR"; fi)
rustc: $(rustc -V 2>/dev/null || echo unknown)
glibc floor:
$(sed 's/^/  /' <<<"$floor_report")
EOF

if [[ $quick == 1 ]]; then
    glibc_note=" (a development package: tools/release.sh without --quick builds for glibc $GLIBC_FLOOR)."
else
    glibc_note=": UBI 8, Ubuntu 20.04 and every later CUDA base image."
fi
cat >"$pkg/INSTALL.md" <<EOF
# vgpu $version

\`libvgpu.so\` enforces per-container GPU memory quotas and SM shares for CUDA programs
(a drop-in for HAMi-core's library: same environment variables).
It needs x86-64 Linux with glibc ${lib_floor#GLIBC_} or newer$glibc_note

| file | what |
|---|---|
| \`bin/vgpu\` | the command: \`run\`, \`demo\`, \`smi\`, \`ps\`, \`top\`, \`exporter\` |
| \`lib/libvgpu.so\` | the library every process of a limited container loads |
| \`lib/simgpu-lib/\` | simgpu, a simulated GPU driver, for trying vgpu without a GPU |
| \`examples/k8s/\` | Kubernetes manifests: HAMi, KAI Scheduler, Volcano, plain pods, the metrics exporter |

## Try it (no GPU needed)

\`\`\`sh
tar -xzf $name.tar.gz
vgpu-$version/bin/vgpu demo --sim
\`\`\`

Two tenants with 2 GiB and 5 GiB quotas share one simulated 8 GiB GPU; each is refused
at its own quota.

## Install on a node

\`\`\`sh
sudo tar -C /opt -xzf $name.tar.gz
sudo ln -sfn /opt/vgpu-$version /opt/vgpu
sudo ln -sf /opt/vgpu/bin/vgpu /usr/local/bin/vgpu
# The library at the path HAMi's device plugin and the examples mount. Replace it with a
# rename, never in place: running containers keep the file they mapped.
sudo mkdir -p /usr/local/vgpu
sudo cp /opt/vgpu/lib/libvgpu.so /usr/local/vgpu/.libvgpu.so.new
sudo mv -f /usr/local/vgpu/.libvgpu.so.new /usr/local/vgpu/libvgpu.so
\`\`\`

## Run a program under limits

\`\`\`sh
vgpu run --memory 4g --sm 50 -- python train.py    # real GPU: 4 GiB, half the SMs
vgpu run --sim --memory 2g -- ./my-cuda-app         # on simgpu
vgpu smi                                            # what NVML reports
\`\`\`

Without the command, set the variables yourself:

\`\`\`sh
export CUDA_DEVICE_MEMORY_LIMIT=4g                  # or 4Gi, 4096m; _0, _1 ... per device
export CUDA_DEVICE_SM_LIMIT=50                      # percent of the GPU's compute time
mkdir -p /tmp/vgpu                                  # the region's directory must exist
export CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/vgpu/job.region   # one file per container
export LD_PRELOAD=/usr/local/vgpu/libvgpu.so
python train.py
\`\`\`

Every process that names the same region shares one quota.

## Kubernetes

See \`examples/k8s/README.md\`: HAMi's device plugin with this library in place of
HAMi-core's, a plain pod spec for clusters without HAMi, and \`vgpu exporter\` as a
DaemonSet with Prometheus scrape annotations.
EOF

(cd "$pkg" && find . -type f ! -name SHA256SUMS -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$pkg/SHA256SUMS"

# Reproducible: sorted names, fixed owners, the commit's time, no gzip timestamp.
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tarball="$out/$name.tar.gz"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -cf - "vgpu-$version" | gzip -n -9 >"$tarball.tmp"
mv -f "$tarball.tmp" "$tarball"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
say "wrote $tarball ($(du -h "$tarball" | cut -f1)) in ${SECONDS}s; libvgpu.so needs ${lib_floor:-?}"
echo "$tarball"
