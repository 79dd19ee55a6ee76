#!/usr/bin/env bash
# Checks cuda_min.h against NVIDIA's cuda.h (which is not in this repository):
#   1. every prototype between BEGIN/END PROTOTYPES names a function the real header declares,
#      and re-declaring it after the real header compiles (so the signatures agree); the
#      _ptsz/_ptds variants are checked in a -DCUDA_API_PER_THREAD_DEFAULT_STREAM build;
#   2. sizes, field offsets and constant values agree (a probe built against each header).
# usage: check_layouts.sh CUDA_INCLUDE_DIR   (the directory holding cuda.h, e.g. from the
#        PyPI wheel nvidia-cuda-runtime-cu12: nvidia/cuda_runtime/include)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
inc="${1:?usage: check_layouts.sh CUDA_INCLUDE_DIR}"
[[ -f "$inc/cuda.h" ]] || { echo "no cuda.h in $inc" >&2; exit 1; }
cc="${CC:-gcc}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

protos="$(sed -n '/BEGIN PROTOTYPES/,/END PROTOTYPES/p' "$here/cuda_min.h" | sed '1d;$d')"
names="$(printf '%s\n' "$protos" | grep -o 'cu[A-Za-z0-9_]*(' | tr -d '(')"

for mode in default ptds; do
    def=()
    if [[ $mode == ptds ]]; then
        def=(-DCUDA_API_PER_THREAD_DEFAULT_STREAM)
        sel="$(printf '%s\n' "$names" | grep -E '_(ptsz|ptds)$' || true)"
    else
        sel="$(printf '%s\n' "$names" | grep -vE '_(ptsz|ptds)$')"
    fi
    {
        echo '#include <cuda.h>'
        echo 'void probe(void);'
        echo 'void probe(void) {'
        for n in $sel; do echo "    (void)&$n;"; done
        echo '}'
        if [[ $mode == ptds ]]; then
            # In this mode cuda.h renames the base names; re-declare only the variants.
            printf '%s\n' "$protos" | tr '\n' ' ' | sed 's/;/;\n/g' | grep -E 'cu[A-Za-z0-9_]*_(ptsz|ptds)\(' || true
        else
            printf '%s\n' "$protos"
        fi
    } > "$tmp/protos_$mode.c"
    "$cc" -std=gnu11 -fsyntax-only -Wall -Werror "${def[@]}" -I"$inc" "$tmp/protos_$mode.c"
    echo "prototypes ($mode): $(printf '%s\n' "$sel" | wc -l) checked"
done

cat > "$tmp/probe.c" <<'PROBE'
#include <stddef.h>
#include <stdio.h>
#ifdef REAL
#include <cuda.h>
#else
#include "cuda_min.h"
#endif
#define S(t) printf("sizeof %s %zu align %zu\n", #t, sizeof(t), _Alignof(t));
#define F(t, f) printf("offsetof %s.%s %zu size %zu\n", #t, #f, offsetof(t, f), sizeof(((t *)0)->f));
#define C(c) printf("const %s %lld\n", #c, (long long)(c));
int main(void) {
    S(CUresult) S(CUdevice) S(CUdeviceptr) S(CUmemGenericAllocationHandle) S(CUarray_format)
    S(CUDA_ARRAY_DESCRIPTOR) F(CUDA_ARRAY_DESCRIPTOR, Width) F(CUDA_ARRAY_DESCRIPTOR, Height)
    F(CUDA_ARRAY_DESCRIPTOR, Format) F(CUDA_ARRAY_DESCRIPTOR, NumChannels)
    S(CUDA_ARRAY3D_DESCRIPTOR) F(CUDA_ARRAY3D_DESCRIPTOR, Width) F(CUDA_ARRAY3D_DESCRIPTOR, Height)
    F(CUDA_ARRAY3D_DESCRIPTOR, Depth) F(CUDA_ARRAY3D_DESCRIPTOR, Format)
    F(CUDA_ARRAY3D_DESCRIPTOR, NumChannels) F(CUDA_ARRAY3D_DESCRIPTOR, Flags)
    S(CUmemLocation) F(CUmemLocation, type) F(CUmemLocation, id)
    S(CUmemAllocationProp) F(CUmemAllocationProp, type) F(CUmemAllocationProp, requestedHandleTypes)
    F(CUmemAllocationProp, location) F(CUmemAllocationProp, win32HandleMetaData)
    F(CUmemAllocationProp, allocFlags) F(CUmemAllocationProp, allocFlags.compressionType)
    F(CUmemAllocationProp, allocFlags.gpuDirectRDMACapable) F(CUmemAllocationProp, allocFlags.usage)
    F(CUmemAllocationProp, allocFlags.reserved)
    S(CUmemAccessDesc) F(CUmemAccessDesc, location) F(CUmemAccessDesc, flags)
    S(CUmemPoolProps) F(CUmemPoolProps, allocType) F(CUmemPoolProps, handleTypes) F(CUmemPoolProps, location)
    F(CUmemPoolProps, win32SecurityAttributes) F(CUmemPoolProps, maxSize) F(CUmemPoolProps, usage)
    F(CUmemPoolProps, reserved)
    S(CUlaunchAttributeValue) F(CUlaunchAttributeValue, pad) F(CUlaunchAttributeValue, cooperative)
    F(CUlaunchAttributeValue, priority) F(CUlaunchAttributeValue, clusterDim)
    S(CUlaunchAttribute) F(CUlaunchAttribute, id) F(CUlaunchAttribute, pad) F(CUlaunchAttribute, value)
    S(CUlaunchConfig) F(CUlaunchConfig, gridDimX) F(CUlaunchConfig, gridDimY) F(CUlaunchConfig, gridDimZ)
    F(CUlaunchConfig, blockDimX) F(CUlaunchConfig, blockDimY) F(CUlaunchConfig, blockDimZ)
    F(CUlaunchConfig, sharedMemBytes) F(CUlaunchConfig, hStream) F(CUlaunchConfig, attrs)
    F(CUlaunchConfig, numAttrs)
    S(CUdriverProcAddressQueryResult) S(CUstreamCaptureMode) S(CUlaunchAttributeID)
    C(CUDA_SUCCESS) C(CUDA_ERROR_INVALID_VALUE) C(CUDA_ERROR_OUT_OF_MEMORY) C(CUDA_ERROR_NOT_INITIALIZED)
    C(CUDA_ERROR_NO_DEVICE) C(CUDA_ERROR_INVALID_DEVICE) C(CUDA_ERROR_INVALID_CONTEXT)
    C(CUDA_ERROR_FILE_NOT_FOUND) C(CUDA_ERROR_INVALID_HANDLE) C(CUDA_ERROR_NOT_FOUND)
    C(CUDA_ERROR_NOT_READY) C(CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE) C(CUDA_ERROR_NOT_SUPPORTED)
    C(CUDA_ERROR_UNKNOWN)
    C(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) C(CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)
    C(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) C(CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)
    C(CU_AD_FORMAT_UNSIGNED_INT8) C(CU_AD_FORMAT_UNSIGNED_INT32) C(CU_AD_FORMAT_FLOAT)
    C(CU_MEM_ALLOCATION_TYPE_INVALID) C(CU_MEM_ALLOCATION_TYPE_PINNED)
    C(CU_MEM_HANDLE_TYPE_NONE) C(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
    C(CU_MEM_LOCATION_TYPE_INVALID) C(CU_MEM_LOCATION_TYPE_DEVICE)
    C(CU_MEM_ACCESS_FLAGS_PROT_NONE) C(CU_MEM_ACCESS_FLAGS_PROT_READ) C(CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
    C(CU_MEM_ALLOC_GRANULARITY_MINIMUM) C(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
    C(CU_STREAM_CAPTURE_MODE_GLOBAL) C(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) C(CU_STREAM_CAPTURE_MODE_RELAXED)
    C(CU_LAUNCH_ATTRIBUTE_IGNORE) C(CU_LAUNCH_ATTRIBUTE_COOPERATIVE) C(CU_LAUNCH_ATTRIBUTE_PRIORITY)
    C(CU_GET_PROC_ADDRESS_SUCCESS) C(CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND)
    C(CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT)
    C(CU_GET_PROC_ADDRESS_DEFAULT) C(CU_GET_PROC_ADDRESS_LEGACY_STREAM)
    C(CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
    C(CU_MEM_ATTACH_GLOBAL) C(CU_STREAM_DEFAULT) C(CU_STREAM_NON_BLOCKING) C(CU_EVENT_DEFAULT) C(CU_EVENT_DISABLE_TIMING)
    C((unsigned long long)CU_STREAM_LEGACY) C((unsigned long long)CU_STREAM_PER_THREAD)
    return 0;
}
PROBE
"$cc" -std=gnu11 -Wall -Werror -DREAL -I"$inc" -o "$tmp/probe_real" "$tmp/probe.c"
"$cc" -std=gnu11 -Wall -Werror -I"$here" -o "$tmp/probe_min" "$tmp/probe.c"
"$tmp/probe_real" > "$tmp/real.txt"
"$tmp/probe_min" > "$tmp/min.txt"
if ! diff -u "$tmp/real.txt" "$tmp/min.txt"; then
    echo "cuda_min.h differs from $inc/cuda.h (- real, + ours)" >&2
    exit 1
fi
echo "layouts and constants: $(wc -l < "$tmp/real.txt") items agree"
