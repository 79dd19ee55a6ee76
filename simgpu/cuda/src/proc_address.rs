//! `cuGetProcAddress` and `cuGetProcAddress_v2` with the real driver's semantics: the caller
//! names a *base* symbol (`"cuMemAlloc"`), the CUDA version it was compiled for and whether it
//! wants per-thread default-stream semantics; the driver returns the matching ABI variant
//! (`cuMemAlloc_v2`, `cuLaunchKernel_ptsz`, ...). Versioned names are not base names and are
//! not found. Variants this simulation does not implement (older ABIs of functions other than
//! the legacy ones in `api_legacy`) are reported as not found.
//!
//! `SIMGPU_PROC_ADDRESS=private` makes it answer with addresses no exported symbol has (see
//! `private_addresses`), so an interposer that recognises the driver's answers by address is
//! tested against a driver that does not hand out its exports.
//!
//! What "not found" looks like differs between the two ABIs, as NVIDIA documents them:
//! `cuGetProcAddress_v2` (the CUDA 12 ABI, "Driver Entry Point Access",
//! <https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__DRIVER__ENTRY__POINT.html>)
//! "will return CUDA_SUCCESS and set the returned pfn to NULL if the requested driver function
//! is not supported on the platform, no ABI compatible driver function exists for the specified
//! cudaVersion or if the driver symbol is invalid", with `symbolStatus` saying which
//! (`CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND`, `_VERSION_NOT_SUFFICIENT`). The CUDA 11.3 ABI
//! (`cuGetProcAddress`, which has no status out-parameter) reports it as an error,
//! `CUDA_ERROR_NOT_FOUND`, with `*pfn` set to NULL, matching the 11.x runtime's documented
//! `cudaErrorSymbolNotFound` for its `cudaGetDriverEntryPoint`.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{CStr, c_char, c_int, c_ulonglong, c_void};

use cuda_sys::driver::{CUdriverProcAddressQueryResult as Q, CUresult};

use crate::{exports, out};
use CUresult as R;

/// A base name: its ABI variants by minimum CUDA version, and its per-thread variant.
struct Entry {
    base: &'static str,
    /// (minimum cudaVersion, exported symbol), ascending.
    versions: &'static [(c_int, &'static str)],
    /// (minimum cudaVersion, exported symbol) of the per-thread default-stream variant.
    ptds: Option<(c_int, &'static str)>,
}

macro_rules! table {
    ($( $base:literal => [$($v:literal : $sym:ident),*] $(ptds $pv:literal : $psym:ident)? ;)*) => {
        /// Every base name this driver resolves.
        static TABLE: &[Entry] = &[ $( Entry {
            base: $base,
            versions: &[$(($v, stringify!($sym))),*],
            ptds: table!(@ptds $($pv, $psym)?),
        } ),* ];

        /// The address of an exported symbol by exact name.
        fn exported(name: &str) -> Option<*mut c_void> {
            match name {
                $( $(stringify!($sym) => Some(crate::$sym as *mut c_void),)* $(stringify!($psym) => Some(crate::$psym as *mut c_void),)? )*
                _ => None,
            }
        }

        /// The same entry point at an address no exported symbol has.
        fn private(name: &str) -> Option<*mut c_void> {
            match name {
                $( $(stringify!($sym) => Some(crate::$sym::private as *mut c_void),)* $(stringify!($psym) => Some(crate::$psym::private as *mut c_void),)? )*
                _ => None,
            }
        }
    };
    (@ptds $pv:literal, $psym:ident) => { Some(($pv, stringify!($psym))) };
    (@ptds) => { None };
}

// Re-export every symbol at the crate root so the table can name them.
pub(crate) use crate::api_context::*;
pub(crate) use crate::api_device::*;
pub(crate) use crate::api_graph::*;
pub(crate) use crate::api_green::*;
pub(crate) use crate::api_launch::*;
pub(crate) use crate::api_legacy::*;
pub(crate) use crate::api_library::*;
pub(crate) use crate::api_link::*;
pub(crate) use crate::api_memory::*;
pub(crate) use crate::api_module::*;
pub(crate) use crate::api_stream::*;
pub(crate) use crate::api_vmm::*;

table! {
    "cuInit" => [2000: cuInit];
    "cuDriverGetVersion" => [2020: cuDriverGetVersion];
    "cuGetErrorName" => [6000: cuGetErrorName];
    "cuGetErrorString" => [6000: cuGetErrorString];
    "cuGetProcAddress" => [11030: cuGetProcAddress, 12000: cuGetProcAddress_v2];
    "cuGetExportTable" => [3000: cuGetExportTable];
    "cuDeviceGetCount" => [2000: cuDeviceGetCount];
    "cuDeviceGet" => [2000: cuDeviceGet];
    "cuDeviceGetName" => [2000: cuDeviceGetName];
    "cuDeviceGetUuid" => [9020: cuDeviceGetUuid, 11040: cuDeviceGetUuid_v2];
    "cuDeviceGetAttribute" => [2000: cuDeviceGetAttribute];
    "cuDeviceTotalMem" => [2000: cuDeviceTotalMem, 3020: cuDeviceTotalMem_v2];
    "cuDeviceGetPCIBusId" => [4010: cuDeviceGetPCIBusId];
    "cuDeviceGetDefaultMemPool" => [11020: cuDeviceGetDefaultMemPool];
    "cuDeviceGetMemPool" => [11020: cuDeviceGetMemPool];
    "cuDeviceSetMemPool" => [11020: cuDeviceSetMemPool];
    "cuDevicePrimaryCtxRetain" => [7000: cuDevicePrimaryCtxRetain];
    "cuDevicePrimaryCtxRelease" => [7000: cuDevicePrimaryCtxRelease, 11000: cuDevicePrimaryCtxRelease_v2];
    "cuDevicePrimaryCtxReset" => [7000: cuDevicePrimaryCtxReset, 11000: cuDevicePrimaryCtxReset_v2];
    "cuDevicePrimaryCtxGetState" => [7000: cuDevicePrimaryCtxGetState];
    "cuDevicePrimaryCtxSetFlags" => [11000: cuDevicePrimaryCtxSetFlags_v2];
    "cuCtxCreate" => [2000: cuCtxCreate, 3020: cuCtxCreate_v2, 11040: cuCtxCreate_v3, 12050: cuCtxCreate_v4];
    "cuCtxDestroy" => [2000: cuCtxDestroy, 4000: cuCtxDestroy_v2];
    "cuCtxSetCurrent" => [4000: cuCtxSetCurrent];
    "cuCtxGetCurrent" => [4000: cuCtxGetCurrent];
    "cuCtxPushCurrent" => [4000: cuCtxPushCurrent_v2];
    "cuCtxPopCurrent" => [4000: cuCtxPopCurrent_v2];
    "cuCtxGetDevice" => [2000: cuCtxGetDevice];
    "cuCtxSynchronize" => [2000: cuCtxSynchronize];
    "cuStreamCreate" => [2000: cuStreamCreate];
    "cuStreamCreateWithPriority" => [5050: cuStreamCreateWithPriority];
    "cuStreamDestroy" => [4000: cuStreamDestroy_v2];
    "cuStreamSynchronize" => [2000: cuStreamSynchronize] ptds 7000: cuStreamSynchronize_ptsz;
    "cuStreamQuery" => [2000: cuStreamQuery] ptds 7000: cuStreamQuery_ptsz;
    "cuStreamWaitEvent" => [3020: cuStreamWaitEvent] ptds 7000: cuStreamWaitEvent_ptsz;
    "cuEventCreate" => [2000: cuEventCreate];
    "cuEventDestroy" => [4000: cuEventDestroy_v2];
    "cuEventRecord" => [2000: cuEventRecord] ptds 7000: cuEventRecord_ptsz;
    "cuEventSynchronize" => [2000: cuEventSynchronize];
    "cuEventQuery" => [2000: cuEventQuery];
    "cuEventElapsedTime" => [2000: cuEventElapsedTime, 12080: cuEventElapsedTime_v2];
    "cuModuleLoadData" => [2000: cuModuleLoadData];
    "cuModuleLoadDataEx" => [2010: cuModuleLoadDataEx];
    "cuModuleGetFunction" => [2000: cuModuleGetFunction];
    "cuModuleUnload" => [2000: cuModuleUnload];
    "cuLinkCreate" => [6050: cuLinkCreate_v2];
    "cuLinkAddData" => [6050: cuLinkAddData_v2];
    "cuLinkAddFile" => [6050: cuLinkAddFile_v2];
    "cuLinkComplete" => [5050: cuLinkComplete];
    "cuLinkDestroy" => [5050: cuLinkDestroy];
    "cuFuncGetAttribute" => [2020: cuFuncGetAttribute];
    "cuKernelGetAttribute" => [12000: cuKernelGetAttribute];
    "cuMemGetInfo" => [2000: cuMemGetInfo, 3020: cuMemGetInfo_v2];
    "cuMemAlloc" => [2000: cuMemAlloc, 3020: cuMemAlloc_v2];
    "cuMemAllocPitch" => [2000: cuMemAllocPitch, 3020: cuMemAllocPitch_v2];
    "cuMemAllocManaged" => [6000: cuMemAllocManaged];
    "cuMemFree" => [2000: cuMemFree, 3020: cuMemFree_v2];
    "cuMemGetAddressRange" => [3020: cuMemGetAddressRange_v2];
    "cuMemAllocHost" => [3020: cuMemAllocHost_v2];
    "cuMemHostAlloc" => [2020: cuMemHostAlloc];
    "cuMemFreeHost" => [2000: cuMemFreeHost];
    "cuMemAllocAsync" => [11020: cuMemAllocAsync] ptds 11020: cuMemAllocAsync_ptsz;
    "cuMemFreeAsync" => [11020: cuMemFreeAsync] ptds 11020: cuMemFreeAsync_ptsz;
    "cuMemAllocFromPoolAsync" => [11020: cuMemAllocFromPoolAsync] ptds 11020: cuMemAllocFromPoolAsync_ptsz;
    "cuMemPoolCreate" => [11020: cuMemPoolCreate];
    "cuMemPoolDestroy" => [11020: cuMemPoolDestroy];
    "cuMemPoolTrimTo" => [11020: cuMemPoolTrimTo];
    "cuMemPoolGetAttribute" => [11020: cuMemPoolGetAttribute];
    "cuMemPoolSetAttribute" => [11020: cuMemPoolSetAttribute];
    "cuMemGetAllocationGranularity" => [10020: cuMemGetAllocationGranularity];
    "cuMemCreate" => [10020: cuMemCreate];
    "cuMemRelease" => [10020: cuMemRelease];
    "cuMemRetainAllocationHandle" => [11000: cuMemRetainAllocationHandle];
    "cuMemAddressReserve" => [10020: cuMemAddressReserve];
    "cuMemAddressFree" => [10020: cuMemAddressFree];
    "cuMemMap" => [10020: cuMemMap];
    "cuMemUnmap" => [10020: cuMemUnmap];
    "cuMemSetAccess" => [10020: cuMemSetAccess];
    "cuArrayCreate" => [2000: cuArrayCreate, 3020: cuArrayCreate_v2];
    "cuArray3DCreate" => [2000: cuArray3DCreate, 3020: cuArray3DCreate_v2];
    "cuArrayDestroy" => [2000: cuArrayDestroy];
    "cuMipmappedArrayCreate" => [5000: cuMipmappedArrayCreate];
    "cuMipmappedArrayDestroy" => [5000: cuMipmappedArrayDestroy];
    "cuMemcpy" => [4000: cuMemcpy] ptds 7000: cuMemcpy_ptds;
    "cuMemcpyAsync" => [4000: cuMemcpyAsync] ptds 7000: cuMemcpyAsync_ptsz;
    "cuMemcpyHtoD" => [3020: cuMemcpyHtoD_v2] ptds 7000: cuMemcpyHtoD_v2_ptds;
    "cuMemcpyDtoH" => [3020: cuMemcpyDtoH_v2] ptds 7000: cuMemcpyDtoH_v2_ptds;
    "cuMemcpyDtoD" => [3020: cuMemcpyDtoD_v2] ptds 7000: cuMemcpyDtoD_v2_ptds;
    "cuMemcpyHtoDAsync" => [3020: cuMemcpyHtoDAsync_v2] ptds 7000: cuMemcpyHtoDAsync_v2_ptsz;
    "cuMemcpyDtoHAsync" => [3020: cuMemcpyDtoHAsync_v2] ptds 7000: cuMemcpyDtoHAsync_v2_ptsz;
    "cuMemcpyDtoDAsync" => [3020: cuMemcpyDtoDAsync_v2] ptds 7000: cuMemcpyDtoDAsync_v2_ptsz;
    "cuMemsetD8" => [3020: cuMemsetD8_v2] ptds 7000: cuMemsetD8_v2_ptds;
    "cuMemsetD32" => [3020: cuMemsetD32_v2] ptds 7000: cuMemsetD32_v2_ptds;
    "cuMemsetD8Async" => [3020: cuMemsetD8Async] ptds 7000: cuMemsetD8Async_ptsz;
    "cuMemsetD32Async" => [3020: cuMemsetD32Async] ptds 7000: cuMemsetD32Async_ptsz;
    "cuLaunchKernel" => [4000: cuLaunchKernel] ptds 7000: cuLaunchKernel_ptsz;
    "cuLaunchKernelEx" => [11060: cuLaunchKernelEx] ptds 11060: cuLaunchKernelEx_ptsz;
    "cuLaunchCooperativeKernel" => [9000: cuLaunchCooperativeKernel] ptds 9000: cuLaunchCooperativeKernel_ptsz;
    "cuStreamBeginCapture" => [10010: cuStreamBeginCapture_v2] ptds 10010: cuStreamBeginCapture_v2_ptsz;
    "cuStreamEndCapture" => [10000: cuStreamEndCapture] ptds 10000: cuStreamEndCapture_ptsz;
    "cuStreamIsCapturing" => [10000: cuStreamIsCapturing] ptds 10000: cuStreamIsCapturing_ptsz;
    "cuGraphCreate" => [10000: cuGraphCreate];
    "cuGraphDestroy" => [10000: cuGraphDestroy];
    "cuGraphInstantiate" => [12000: cuGraphInstantiateWithFlags];
    "cuGraphInstantiateWithFlags" => [11040: cuGraphInstantiateWithFlags];
    "cuGraphExecDestroy" => [10000: cuGraphExecDestroy];
    "cuGraphLaunch" => [10000: cuGraphLaunch] ptds 10000: cuGraphLaunch_ptsz;
    "cuCtxSetLimit" => [3010: cuCtxSetLimit];
    "cuModuleLoad" => [2000: cuModuleLoad];
    "cuDeviceGetDevResource" => [12040: cuDeviceGetDevResource];
    "cuDevSmResourceSplitByCount" => [12040: cuDevSmResourceSplitByCount];
    "cuDevResourceGenerateDesc" => [12040: cuDevResourceGenerateDesc];
    "cuGreenCtxCreate" => [12040: cuGreenCtxCreate];
    "cuGreenCtxDestroy" => [12040: cuGreenCtxDestroy];
    "cuCtxFromGreenCtx" => [12040: cuCtxFromGreenCtx];
    "cuLibraryLoadData" => [12000: cuLibraryLoadData];
    "cuLibraryLoadFromFile" => [12000: cuLibraryLoadFromFile];
    "cuLibraryUnload" => [12000: cuLibraryUnload];
    "cuLibraryGetKernel" => [12000: cuLibraryGetKernel];
    "cuLibraryGetModule" => [12000: cuLibraryGetModule];
    "cuKernelGetFunction" => [12000: cuKernelGetFunction];
    "cuCtxGetLimit" => [3010: cuCtxGetLimit];
    "cuGraphInstantiateWithParams" => [12000: cuGraphInstantiateWithParams] ptds 12000: cuGraphInstantiateWithParams_ptsz;
    "cuGraphUpload" => [11010: cuGraphUpload] ptds 11010: cuGraphUpload_ptsz;
    "cuStreamGetCaptureInfo" => [12000: cuStreamGetCaptureInfo_v2, 12030: cuStreamGetCaptureInfo_v3] ptds 12030: cuStreamGetCaptureInfo_v3_ptsz;
    "cuGraphAddMemAllocNode" => [11040: cuGraphAddMemAllocNode];
    "cuGraphAddMemFreeNode" => [11040: cuGraphAddMemFreeNode];
    "cuDeviceGraphMemTrim" => [11040: cuDeviceGraphMemTrim];
    "cuDeviceGetGraphMemAttribute" => [11040: cuDeviceGetGraphMemAttribute];
    "cuDeviceSetGraphMemAttribute" => [11040: cuDeviceSetGraphMemAttribute];
}

/// The exported symbol for (base name, CUDA version, flags), or why there is none.
fn resolve(name: &str, version: c_int, flags: u64) -> Result<&'static str, Q> {
    let e = TABLE.iter().find(|e| e.base == name).ok_or(Q::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND)?;
    let per_thread = flags & 2 != 0;
    if per_thread
        && let Some((v, sym)) = e.ptds
        && version >= v
    {
        return Ok(sym);
    }
    match e.versions.iter().rev().find(|(v, _)| version >= *v) {
        Some((_, sym)) => Ok(sym),
        None => Err(Q::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT),
    }
}

/// `SIMGPU_PROC_ADDRESS=private`: answer with addresses other than the exported symbols'
/// (each a function that calls the export), as a driver whose entry points are internal
/// functions, or an injected profiler's wrappers, may. Read once; any other value (or unset)
/// answers with the exports.
fn private_addresses() -> bool {
    static PRIVATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRIVATE.get_or_init(|| std::env::var_os("SIMGPU_PROC_ADDRESS").is_some_and(|v| v == "private"))
}

/// Which entry point was called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// `cuGetProcAddress` (CUDA 11.3).
    V1,
    /// `cuGetProcAddress_v2` (CUDA 12).
    V2,
}

/// Shared body of both entry points.
///
/// # Safety
/// `symbol` is null or NUL-terminated; `pfn` and `status` are null or valid for writes.
unsafe fn get_proc_address(
    abi: Abi,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: c_ulonglong,
    status: *mut Q,
) -> Result<(), R> {
    if symbol.is_null() || pfn.is_null() || flags > 2 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: per this function's contract.
    let name = unsafe { CStr::from_ptr(symbol) }.to_str().unwrap_or("");
    let lookup = if private_addresses() { private } else { exported };
    let found = resolve(name, version, flags).and_then(|sym| lookup(sym).ok_or(Q::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND));
    let (ptr, st, rc) = match found {
        Ok(p) => (p, Q::CU_GET_PROC_ADDRESS_SUCCESS, Ok(())),
        // The CUDA 12 ABI: success, a NULL pointer, and the reason in symbolStatus.
        Err(q) if abi == Abi::V2 => (std::ptr::null_mut(), q, Ok(())),
        // The CUDA 11.3 ABI: an error.
        Err(q) => (std::ptr::null_mut(), q, Err(R::CUDA_ERROR_NOT_FOUND)),
    };
    // SAFETY: per this function's contract.
    unsafe {
        out(pfn, ptr)?;
        if !status.is_null() {
            out(status, st)?;
        }
    }
    rc
}

exports! {
    fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: c_ulonglong) {
        get_proc_address(Abi::V1, symbol, pfn, version, flags, std::ptr::null_mut())
    }

    fn cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: c_ulonglong, status: *mut Q) {
        get_proc_address(Abi::V2, symbol, pfn, version, flags, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_map_by_version_and_flags() {
        assert_eq!(resolve("cuMemAlloc", 12000, 0), Ok("cuMemAlloc_v2"));
        assert_eq!(resolve("cuCtxCreate", 11000, 0), Ok("cuCtxCreate_v2"));
        assert_eq!(resolve("cuCtxCreate", 12000, 0), Ok("cuCtxCreate_v3"));
        assert_eq!(resolve("cuCtxCreate", 12080, 0), Ok("cuCtxCreate_v4"));
        assert_eq!(resolve("cuLaunchKernel", 12000, 2), Ok("cuLaunchKernel_ptsz"));
        assert_eq!(resolve("cuLaunchKernel", 12000, 1), Ok("cuLaunchKernel"));
        assert_eq!(resolve("cuMemcpyHtoD", 12000, 2), Ok("cuMemcpyHtoD_v2_ptds"));
        assert_eq!(resolve("cuGetProcAddress", 12000, 0), Ok("cuGetProcAddress_v2"));
        assert_eq!(resolve("cuGetProcAddress", 11030, 0), Ok("cuGetProcAddress"));
        assert_eq!(resolve("cuMemAlloc_v2", 12000, 0), Err(Q::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND));
        assert_eq!(resolve("cuMemAllocAsync", 11000, 0), Err(Q::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT));
        assert_eq!(resolve("cuMemAlloc", 3010, 0), Ok("cuMemAlloc"), "the 32-bit ABI");
        assert_eq!(resolve("cuCtxDestroy", 3020, 0), Ok("cuCtxDestroy"));
        assert_eq!(resolve("cuDevicePrimaryCtxRelease", 10020, 0), Ok("cuDevicePrimaryCtxRelease"));
        assert_eq!(resolve("", 0, 0), Err(Q::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND));
    }

    #[test]
    fn every_table_symbol_is_exported_and_has_a_private_address() {
        for e in TABLE {
            for (_, s) in e.versions.iter().chain(e.ptds.iter()) {
                assert!(exported(s).is_some(), "{s}");
                assert_ne!(private(s), exported(s), "{s}");
            }
        }
    }
}
