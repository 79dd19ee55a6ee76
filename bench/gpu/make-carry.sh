#!/usr/bin/env bash
# Builds what the device check carries to a lent GPU machine (which has no cargo): the release
# libvgpu.so, vgpu and nvml_client, stripped, into bench/gpu/carry/ (ignored by git). Run here,
# before the one `run` call that bench/gpu/README.md gives ("The device check").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
carry="$here/carry"
(cd "$repo" && cargo build --release --locked -q -p vgpu-shim -p vgpu-cli -p vgpu-cudarc-client)
rm -rf "$carry"
mkdir -p "$carry"
for f in libvgpu.so vgpu nvml_client; do
    cp "$repo/target/release/$f" "$carry/$f"
    strip "$carry/$f"
done
git -C "$repo" rev-parse HEAD >"$carry/commit" 2>/dev/null || echo unknown >"$carry/commit"
size=$(du -sb "$carry" | cut -f1)
if ((size > 60 * 1024 * 1024)); then
    echo "make-carry.sh: $carry is $size bytes: over the 64 MiB a run may carry" >&2
    exit 1
fi
echo "make-carry.sh: $carry ready ($((size / 1024)) KiB): $(ls "$carry" | tr '\n' ' ')"
