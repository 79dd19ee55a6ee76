//! The one table of hooks. Each line names the real library, the exported symbol with its C
//! signature, and the safe body that implements it. From that one line the macro makes:
//!
//! * the `#[no_mangle]` export: the whole unsafe edge, the only place that does this. It
//!   resolves the real function (missing: the library's "not loaded" code, or the line's own),
//!   applies the gate once, before any driver call (fail closed: refused with nothing
//!   forwarded; pass-through: a plain tail call), converts the caller's arguments to the
//!   body's checked types ([`crate::hooks::args`]) and runs the body; a panic returns the
//!   library's "unknown error", never unwinds into C. Its signature is pinned to `cuda_sys`'s
//!   function-pointer type, itself checked against NVIDIA's headers;
//! * a typed slot for the real function, resolved lazily in the real library
//!   (`real::cuMemAlloc_v2()`);
//! * an entry of [`HOOKS`], which the `dlsym` and `cuGetProcAddress` hooks consult.
//!
//! A line may name a `fast` path (the kernel launches: [`crate::hooks::fast`]), tried before the
//! gate: first whether the launch is paid already (no SM limit, or paid from the process's
//! prepaid GPU time), then, in a function of its own, the charge on the SM bucket.
//!
//! `uses` lines make only the typed real slot: functions the hooks call but do not replace.
//!
//! Every export forwards the caller's arguments to the real function unchanged: the edge's
//! `unsafe` relies only on the caller keeping the driver's own contract for them.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};
use std::sync::atomic::AtomicPtr;

use cuda_sys::driver::*;
use cuda_sys::nvml::*;

use crate::hooks::args::FromCaller;
use crate::hooks::{Codes, Gate, context, gate, graphs, init, launch, legacy, memory, modules, nvml, priority, proc_address, views};
use crate::real::Lib;

/// Runs an export's edge, turning a panic into the library's error code.
#[inline(always)]
pub fn guard<R: Codes>(body: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(R::ON_PANIC)
}

/// One hooked symbol.
pub struct Hook {
    /// Exported name.
    pub name: &'static str,
    /// Exported name, NUL-terminated.
    pub cname: &'static std::ffi::CStr,
    /// Library it replaces a function of.
    pub lib: Lib,
    /// Our export.
    pub export: *const (),
    /// The real function's slot (null until resolved).
    pub real: &'static AtomicPtr<c_void>,
}

// SAFETY: the table is immutable; `export` is a function address.
unsafe impl Sync for Hook {}

macro_rules! pfn {
    (Cuda, $n:ident) => {
        cuda_sys::driver::pfn::$n
    };
    (Nvml, $n:ident) => {
        cuda_sys::nvml::pfn::$n
    };
}

/// An export's body. When its line names a fast path (`paid`: whether the launch may be
/// forwarded now; `fast`: `Some` when handled there, `None` when nothing was done), the export
/// tries them first, once the symbol's slot is resolved (loads, a clock read and atomic
/// operations, nothing that panics; what continues on the whole path's code has its own
/// guard). What follows `paid` is a separate function, so a paid launch sets up no frame for
/// it, and the whole path another.
macro_rules! export_body {
    (; $lib:ident, $name:ident; $($arg:ident : $ty:ty),*; $ret:ty; $slow:block) => {
        $slow
    };
    ($paid:path, $fast:path; $lib:ident, $name:ident; $($arg:ident : $ty:ty),*; $ret:ty; $slow:block) => {{
        let p = slots::$name.load(std::sync::atomic::Ordering::Relaxed);
        let paid = || {
            $paid($(
                // SAFETY: each pointer is null or valid for this call, as the caller's contract
                // with the driver requires (see `FromCaller`).
                unsafe { FromCaller::from_caller($arg) }
            ),*)
        };
        if !p.is_null() && paid() {
            // SAFETY: the slot holds the real library's symbol of this name, which has this C
            // signature.
            let real = unsafe { std::mem::transmute::<*mut c_void, pfn!($lib, $name)>(p) };
            // SAFETY: the caller's arguments, passed on unchanged.
            return unsafe { real($($arg),*) };
        }
        /// The fast path past the credit, then the whole path (the same arguments).
        #[inline(never)]
        unsafe extern "C" fn charged($($arg: $ty),*) -> $ret {
            let p = slots::$name.load(std::sync::atomic::Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: as above.
                let real = unsafe { std::mem::transmute::<*mut c_void, pfn!($lib, $name)>(p) };
                // SAFETY: the caller's arguments, passed on unchanged.
                let call = move || unsafe { real($($arg),*) };
                // SAFETY: as above.
                if let Some(rc) = $fast(call, $( unsafe { FromCaller::from_caller($arg) } ),*) {
                    return rc;
                }
            }
            #[inline(never)]
            unsafe extern "C" fn slow($($arg: $ty),*) -> $ret $slow
            // SAFETY: the caller's arguments, passed on unchanged (the same contract).
            unsafe { slow($($arg),*) }
        }
        // SAFETY: the caller's arguments, passed on unchanged (the same contract).
        unsafe { charged($($arg),*) }
    }};
}

macro_rules! hook_table {
    (
        hooks { $( $lib:ident fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty => $body:path $(, missing $missing:expr)? $(, fast $paid:path, $fast:path)?; )* }
        uses { $( $ulib:ident fn $uname:ident; )* }
    ) => {
        /// Cached addresses of the real functions, one per hooked or used symbol.
        pub mod slots {
            #![allow(non_upper_case_globals)]
            use std::sync::atomic::AtomicPtr;
            $( #[doc = concat!("Real `", stringify!($name), "`.")] pub static $name: AtomicPtr<std::ffi::c_void> = AtomicPtr::new(std::ptr::null_mut()); )*
            $( #[doc = concat!("Real `", stringify!($uname), "`.")] pub static $uname: AtomicPtr<std::ffi::c_void> = AtomicPtr::new(std::ptr::null_mut()); )*
        }

        /// The real functions, typed, resolved on first use; `None` if the real library (or
        /// the symbol) is missing.
        pub mod real {
            #![allow(non_snake_case)]
            use crate::real::{Lib, resolve};
            $(
                #[doc = concat!("Real `", stringify!($name), "`.")]
                #[inline]
                pub fn $name() -> Option<pfn!($lib, $name)> {
                    // SAFETY: the name literal is NUL-terminated.
                    let name = unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()) };
                    let p = resolve(Lib::$lib, name, &super::slots::$name);
                    // SAFETY: the real library's symbol of this name has this C signature.
                    (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut std::ffi::c_void, pfn!($lib, $name)>(p) })
                }
            )*
            $(
                #[doc = concat!("Real `", stringify!($uname), "`.")]
                #[inline]
                pub fn $uname() -> Option<pfn!($ulib, $uname)> {
                    // SAFETY: the name literal is NUL-terminated.
                    let name = unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(concat!(stringify!($uname), "\0").as_bytes()) };
                    let p = resolve(Lib::$ulib, name, &super::slots::$uname);
                    // SAFETY: the real library's symbol of this name has this C signature.
                    (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut std::ffi::c_void, pfn!($ulib, $uname)>(p) })
                }
            )*
        }

        $(
            #[doc = concat!("Hooked `", stringify!($name), "`.")]
            ///
            /// # Safety
            /// The driver's own contract for this function: pointers null or valid for the call.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                export_body!($($paid, $fast)?; $lib, $name; $($arg: $ty),*; $ret; {
                guard(|| {
                    let Some(real) = real::$name() else {
                        #[allow(unused_variables)]
                        let missing = <$ret as Codes>::NOT_LOADED;
                        $( let missing = $missing; )?
                        return missing;
                    };
                    // SAFETY: the caller's arguments, passed on unchanged.
                    let call = move || unsafe { real($($arg),*) };
                    match gate() {
                        Gate::Forward => call(),
                        Gate::Refuse => <$ret as Codes>::FAIL_CLOSED,
                        // SAFETY: each pointer is null or valid for this call, as the caller's
                        // contract with the driver requires (see `FromCaller`).
                        Gate::Enforce(e) => $body(&e, call, $( unsafe { FromCaller::from_caller($arg) } ),*),
                    }
                })
                })
            }
            const _: pfn!($lib, $name) = $name;
        )*

        /// Every hooked symbol.
        pub static HOOKS: &[Hook] = &[
            $( Hook {
                name: stringify!($name),
                // SAFETY: the name literal is NUL-terminated.
                cname: unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes()) },
                lib: Lib::$lib,
                export: $name as *const (),
                real: &slots::$name,
            }, )*
        ];
    };
}

hook_table! {
    hooks {
        Cuda fn cuInit(flags: c_uint) -> CUresult => init::cu_init, missing CUresult::CUDA_ERROR_NO_DEVICE;
        Cuda fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64) -> CUresult => proc_address::get_proc_address;
        Cuda fn cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64, status: *mut CUdriverProcAddressQueryResult) -> CUresult => proc_address::get_proc_address_v2;

        Cuda fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult => context::primary_retain;
        Cuda fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult => context::primary_release;
        Cuda fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult => context::primary_reset;
        Cuda fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult => context::create_v2;
        Cuda fn cuCtxCreate_v3(pctx: *mut CUcontext, params: *mut CUexecAffinityParam, num: c_int, flags: c_uint, dev: CUdevice) -> CUresult => context::create_v3;
        Cuda fn cuCtxCreate_v4(pctx: *mut CUcontext, params: *mut CUctxCreateParams, flags: c_uint, dev: CUdevice) -> CUresult => context::create_v4;
        Cuda fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult => context::destroy;
        Cuda fn cuGreenCtxCreate(green: *mut CUgreenCtx, desc: CUdevResourceDesc, dev: CUdevice, flags: c_uint) -> CUresult => context::green_create;
        Cuda fn cuGreenCtxDestroy(green: CUgreenCtx) -> CUresult => context::green_destroy;
        Cuda fn cuCtxSetLimit(limit: CUlimit, value: usize) -> CUresult => context::set_limit;

        Cuda fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult => memory::mem_alloc;
        Cuda fn cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, elem: c_uint) -> CUresult => memory::mem_alloc_pitch;
        Cuda fn cuMemAllocManaged(dptr: *mut CUdeviceptr, bytesize: usize, flags: c_uint) -> CUresult => memory::mem_alloc_managed;
        Cuda fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult => memory::mem_free;
        Cuda fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) -> CUresult => memory::mem_alloc_async::<_, false>;
        Cuda fn cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) -> CUresult => memory::mem_alloc_async::<_, true>;
        Cuda fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> CUresult => memory::mem_free_async;
        Cuda fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, stream: CUstream) -> CUresult => memory::mem_free_async;
        Cuda fn cuMemAllocFromPoolAsync(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream) -> CUresult => memory::mem_alloc_from_pool::<_, false>;
        Cuda fn cuMemAllocFromPoolAsync_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream) -> CUresult => memory::mem_alloc_from_pool::<_, true>;
        Cuda fn cuMemPoolTrimTo(pool: CUmemoryPool, keep: usize) -> CUresult => memory::pool_trim;
        Cuda fn cuMemPoolDestroy(pool: CUmemoryPool) -> CUresult => memory::pool_destroy;
        Cuda fn cuMemPoolCreate(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) -> CUresult => memory::pool_create;
        Cuda fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult => memory::device_default_pool;
        Cuda fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult => memory::device_pool;
        Cuda fn cuMemCreate(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: c_ulonglong) -> CUresult => memory::mem_create;
        Cuda fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult => memory::mem_release;
        Cuda fn cuMemRetainAllocationHandle(handle: *mut CUmemGenericAllocationHandle, addr: *mut c_void) -> CUresult => memory::mem_retain;
        Cuda fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: c_ulonglong) -> CUresult => memory::mem_map;
        Cuda fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult => memory::mem_unmap;
        Cuda fn cuArrayCreate_v2(handle: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) -> CUresult => memory::array_create;
        Cuda fn cuArray3DCreate_v2(handle: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR) -> CUresult => memory::array3d_create;
        Cuda fn cuArrayDestroy(handle: CUarray) -> CUresult => memory::array_destroy;
        Cuda fn cuMipmappedArrayCreate(handle: *mut CUmipmappedArray, desc: *const CUDA_ARRAY3D_DESCRIPTOR, levels: c_uint) -> CUresult => memory::mipmapped_create;
        Cuda fn cuMipmappedArrayDestroy(handle: CUmipmappedArray) -> CUresult => memory::mipmapped_destroy;

        Cuda fn cuLaunchKernel(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult => launch::launch_kernel::<false>, fast launch::paid_kernel::<false>, launch::fast_kernel::<false>;
        Cuda fn cuLaunchKernel_ptsz(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult => launch::launch_kernel::<true>, fast launch::paid_kernel::<true>, launch::fast_kernel::<true>;
        Cuda fn cuLaunchKernelEx(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult => launch::launch_kernel_ex::<false>, fast launch::paid_kernel_ex::<false>, launch::fast_kernel_ex::<false>;
        Cuda fn cuLaunchKernelEx_ptsz(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult => launch::launch_kernel_ex::<true>, fast launch::paid_kernel_ex::<true>, launch::fast_kernel_ex::<true>;
        Cuda fn cuLaunchCooperativeKernel(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void) -> CUresult => launch::launch_cooperative::<false>, fast launch::paid_cooperative::<false>, launch::fast_cooperative::<false>;
        Cuda fn cuLaunchCooperativeKernel_ptsz(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void) -> CUresult => launch::launch_cooperative::<true>, fast launch::paid_cooperative::<true>, launch::fast_cooperative::<true>;
        Cuda fn cuGraphLaunch(exec: CUgraphExec, stream: CUstream) -> CUresult => launch::graph_launch::<false>, fast launch::paid_graph, launch::fast_graph;
        Cuda fn cuGraphLaunch_ptsz(exec: CUgraphExec, stream: CUstream) -> CUresult => launch::graph_launch::<true>, fast launch::paid_graph, launch::fast_graph;
        Cuda fn cuCtxSynchronize() -> CUresult => priority::ctx_synchronize;
        Cuda fn cuStreamSynchronize(stream: CUstream) -> CUresult => priority::stream_synchronize::<false>;
        Cuda fn cuStreamSynchronize_ptsz(stream: CUstream) -> CUresult => priority::stream_synchronize::<true>;
        Cuda fn cuStreamBeginCapture_v2(stream: CUstream, mode: CUstreamCaptureMode) -> CUresult => launch::begin_capture;
        Cuda fn cuStreamBeginCapture_v2_ptsz(stream: CUstream, mode: CUstreamCaptureMode) -> CUresult => launch::begin_capture;
        Cuda fn cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph) -> CUresult => launch::end_capture;
        Cuda fn cuStreamEndCapture_ptsz(stream: CUstream, graph: *mut CUgraph) -> CUresult => launch::end_capture;
        Cuda fn cuGraphAddMemAllocNode(node: *mut CUgraphNode, graph: CUgraph, deps: *const CUgraphNode, num_deps: usize, params: *mut CUDA_MEM_ALLOC_NODE_PARAMS) -> CUresult => graphs::add_mem_alloc_node;
        Cuda fn cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, flags: c_ulonglong) -> CUresult => graphs::instantiate_with_flags;
        Cuda fn cuGraphInstantiateWithParams(exec: *mut CUgraphExec, graph: CUgraph, params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) -> CUresult => graphs::instantiate_with_params;
        Cuda fn cuGraphInstantiateWithParams_ptsz(exec: *mut CUgraphExec, graph: CUgraph, params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) -> CUresult => graphs::instantiate_with_params;
        Cuda fn cuGraphUpload(exec: CUgraphExec, stream: CUstream) -> CUresult => graphs::upload;
        Cuda fn cuGraphUpload_ptsz(exec: CUgraphExec, stream: CUstream) -> CUresult => graphs::upload;
        Cuda fn cuGraphExecDestroy(exec: CUgraphExec) -> CUresult => graphs::exec_destroy;
        Cuda fn cuGraphDestroy(graph: CUgraph) -> CUresult => graphs::graph_destroy;
        Cuda fn cuDeviceGraphMemTrim(device: CUdevice) -> CUresult => graphs::trim;

        Cuda fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) -> CUresult => modules::load;
        Cuda fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult => modules::load_data;
        Cuda fn cuModuleLoadDataEx(module: *mut CUmodule, image: *const c_void, n: c_uint, options: *mut CUjit_option, values: *mut *mut c_void) -> CUresult => modules::load_data_ex;
        Cuda fn cuModuleUnload(module: CUmodule) -> CUresult => modules::unload;
        Cuda fn cuLibraryLoadData(library: *mut CUlibrary, code: *const c_void, jit_options: *mut CUjit_option, jit_values: *mut *mut c_void, num_jit: c_uint, options: *mut CUlibraryOption, values: *mut *mut c_void, num_options: c_uint) -> CUresult => modules::library_load;
        Cuda fn cuLibraryLoadFromFile(library: *mut CUlibrary, file: *const c_char, jit_options: *mut CUjit_option, jit_values: *mut *mut c_void, num_jit: c_uint, options: *mut CUlibraryOption, values: *mut *mut c_void, num_options: c_uint) -> CUresult => modules::library_load;
        Cuda fn cuLibraryUnload(library: CUlibrary) -> CUresult => modules::library_unload;

        Cuda fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult => views::mem_get_info;
        Cuda fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult => views::device_total_mem;

        // The legacy ABI (see `hooks::legacy`).
        Cuda fn cuCtxCreate(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult => context::create_v2;
        Cuda fn cuCtxDestroy(ctx: CUcontext) -> CUresult => context::destroy;
        Cuda fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> CUresult => context::primary_release;
        Cuda fn cuDevicePrimaryCtxReset(dev: CUdevice) -> CUresult => context::primary_reset;
        Cuda fn cuMemGetInfo(free: *mut c_uint, total: *mut c_uint) -> CUresult => legacy::mem_get_info;
        Cuda fn cuDeviceTotalMem(bytes: *mut c_uint, dev: CUdevice) -> CUresult => legacy::device_total_mem;
        Cuda fn cuMemAlloc(dptr: *mut CUdeviceptr_v1, bytesize: c_uint) -> CUresult => legacy::mem_alloc;
        Cuda fn cuMemAllocPitch(dptr: *mut CUdeviceptr_v1, pitch: *mut c_uint, width: c_uint, height: c_uint, elem: c_uint) -> CUresult => legacy::mem_alloc_pitch;
        Cuda fn cuMemFree(dptr: CUdeviceptr_v1) -> CUresult => legacy::mem_free;
        Cuda fn cuArrayCreate(handle: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR_v1) -> CUresult => legacy::array_create;
        Cuda fn cuArray3DCreate(handle: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR_v1) -> CUresult => legacy::array3d_create;

        Nvml fn nvmlInit_v2() -> nvmlReturn_t => nvml::init_v2;
        Nvml fn nvmlInitWithFlags(flags: c_uint) -> nvmlReturn_t => nvml::init_with_flags;
        Nvml fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t => nvml::memory_info;
        Nvml fn nvmlDeviceGetMemoryInfo_v2(device: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> nvmlReturn_t => nvml::memory_info_v2;
        Nvml fn nvmlDeviceGetComputeRunningProcesses(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t => nvml::compute_processes;
        Nvml fn nvmlDeviceGetComputeRunningProcesses_v2(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t => nvml::compute_processes_v2;
        Nvml fn nvmlDeviceGetComputeRunningProcesses_v3(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t => nvml::compute_processes_v3;
        Nvml fn nvmlDeviceGetGraphicsRunningProcesses(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t => nvml::graphics_processes;
        Nvml fn nvmlDeviceGetGraphicsRunningProcesses_v2(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t => nvml::graphics_processes_v2;
        Nvml fn nvmlDeviceGetGraphicsRunningProcesses_v3(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t => nvml::graphics_processes_v3;
        Nvml fn nvmlDeviceGetMPSComputeRunningProcesses(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t => nvml::mps_processes;
        Nvml fn nvmlDeviceGetMPSComputeRunningProcesses_v2(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t => nvml::mps_processes_v2;
        Nvml fn nvmlDeviceGetMPSComputeRunningProcesses_v3(device: nvmlDevice_t, count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t => nvml::mps_processes_v3;
        Nvml fn nvmlDeviceGetProcessUtilization(device: nvmlDevice_t, utilization: *mut nvmlProcessUtilizationSample_t, count: *mut c_uint, last_seen: c_ulonglong) -> nvmlReturn_t => nvml::process_utilization;
        Nvml fn nvmlDeviceGetUtilizationRates(device: nvmlDevice_t, utilization: *mut nvmlUtilization_t) -> nvmlReturn_t => nvml::utilization_rates;
    }
    uses {
        Cuda fn cuCtxGetDevice;
        Cuda fn cuCtxPushCurrent_v2;
        Cuda fn cuCtxPopCurrent_v2;
        Cuda fn cuCtxGetCurrent;
        Cuda fn cuCtxGetLimit;
        Cuda fn cuDeviceGetAttribute;
        Cuda fn cuDeviceGetCount;
        Cuda fn cuDeviceGetUuid_v2;
        Nvml fn nvmlDeviceGetUUID;
        Nvml fn nvmlDeviceGetCount_v2;
        Nvml fn nvmlDeviceGetHandleByIndex_v2;
        Nvml fn nvmlDeviceGetIndex;
        Nvml fn nvmlDeviceGetHandleByUUID;
        Cuda fn cuMemPoolGetAttribute;
        Cuda fn cuStreamGetCaptureInfo_v2;
        Cuda fn cuStreamGetCaptureInfo_v3;
        Cuda fn cuDeviceGetGraphMemAttribute;
        Cuda fn cuEventCreate;
        Cuda fn cuEventRecord;
        Cuda fn cuEventQuery;
        Cuda fn cuEventElapsedTime;
        Cuda fn cuEventDestroy_v2;
    }
}

/// Our export of a hooked symbol, by exact name.
pub fn export_of(name: &str) -> Option<*const ()> {
    HOOKS.iter().find(|h| h.name == name).map(|h| h.export)
}

/// The hook for a NUL-terminated symbol name (no allocation: the `dlsym` path).
pub fn hook_for(name: &[u8]) -> Option<&'static Hook> {
    if !(name.starts_with(b"cu") || name.starts_with(b"nvml")) {
        return None;
    }
    HOOKS.iter().find(|h| h.name.as_bytes() == name)
}
