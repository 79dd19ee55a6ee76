#!/usr/bin/env bash
# The main job: builds vgpu and runs the two-tenant demo (on simgpu when no GPU is present).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo >/dev/null 2>&1 || { echo "tools/demo.sh: 'cargo' is required: install Rust (rustup)" >&2; exit 1; }
cargo build --workspace --quiet
exec target/debug/vgpu demo "$@"
