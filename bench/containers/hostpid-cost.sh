#!/bin/sh
# What host-PID discovery costs a process in a container, on simgpu: N processes, each in its
# own PID namespace (unshare --pid --fork --mount-proc, as Kubernetes runs pods), start at once
# under libvgpu.so and create their first context; each reports (at LIBCUDA_LOG_LEVEL=4) how
# long its discovery took: the two NVML process lists read around the context's creation plus
# any probes (when several processes' contexts appear together). Needs root (unshare --pid) and
# a built workspace (cargo build --release --workspace, or PROFILE=debug).
#
# usage: bench/containers/hostpid-cost.sh [N ...]    (default: 1 64)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
profile=${PROFILE:-release}
target="$root/target/$profile"
for f in libvgpu.so libcuda.so libnvidia_ml.so simgpud; do
    [ -e "$target/$f" ] || { echo "missing $target/$f: run cargo build --$profile --workspace" >&2; exit 2; }
done
work=$(mktemp -d /tmp/vgpu-hostpid-XXXXXX)
trap 'kill $svc 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/lib"
cp "$target/libcuda.so" "$work/lib/libcuda.so.1"
cp "$target/libnvidia_ml.so" "$work/lib/libnvidia-ml.so.1"
gcc -O2 -o "$work/probe" "$root/tests/c/probe.c" -ldl
export SIMGPU_STATE="$work/machine" LD_LIBRARY_PATH="$work/lib"
"$target/simgpud" > "$work/svc.out" 2>&1 &
svc=$!
while ! grep -q ready "$work/svc.out"; do sleep 0.05; done
for n in ${*:-1 64}; do
    rm -f "$work"/log.* "$work/region"
    i=0
    pids=""
    while [ $i -lt "$n" ]; do
        CUDA_DEVICE_MEMORY_LIMIT=8g CUDA_DEVICE_MEMORY_SHARED_CACHE="$work/region" LIBCUDA_LOG_LEVEL=4 \
            LD_PRELOAD="$target/libvgpu.so" unshare --pid --fork --kill-child --mount-proc \
            "$work/probe" init ctx sleep=1000 > /dev/null 2> "$work/log.$i" &
        pids="$pids $!"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086
    wait $pids
    cat "$work"/log.* | sed -n 's/.*host PID [0-9]* found in \([0-9]*\) us (\([0-9]*\) probe.*/\1 \2/p' | sort -n > "$work/found"
    found=$(wc -l < "$work/found")
    awk -v n="$n" -v found="$found" '
        { us[NR] = $1; probes += $2; if ($2 > 0) probed++ }
        END {
            if (NR == 0) { printf "N=%d: no process reported a discovery\n", n; exit }
            p95 = us[int((NR - 1) * 0.95) + 1]
            printf "N=%d: %d found their host PID; discovery p50 %d us, p95 %d us, max %d us; %d needed probes (%d probes in all)\n",
                n, found, us[int((NR + 1) / 2)], p95, us[NR], probed, probes
        }' "$work/found"
done
