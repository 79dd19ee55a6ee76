//! The driver as the bodies see it: the functions they call besides the one they forward,
//! as safe methods over plain values. [`Real`] is the real driver (and NVML); unit tests give
//! the bodies a fake one. Every method passes only pointers it owns, or handles the program
//! gave the driver in the call being hooked (forwarding the caller's arguments, as the
//! driver's contract allows).
#![allow(unsafe_code)]

use std::ptr;

use cuda_sys::driver::{
    CU_STREAM_PER_THREAD, CUcontext, CUdevice, CUdevice_attribute, CUevent, CUgraph, CUgraphMem_attribute, CUlimit, CUmemPool_attribute,
    CUmemoryPool, CUresult, CUstream, CUstreamCaptureStatus,
};
use std::ffi::c_uint;

use cuda_sys::nvml::{nvmlDevice_t, nvmlMemory_t, nvmlProcessInfo_t, nvmlProcessUtilizationSample_t, nvmlReturn_t};
use vgpu_limiter::hostpid::Snapshot;

use crate::table::real;

use CUresult as R;

/// The driver calls a body may make.
pub trait Driver {
    /// `cuCtxGetDevice`: the ordinal of the calling thread's current context.
    fn ctx_device(&self) -> Result<CUdevice, R>;
    /// `cuMemFree_v2`.
    fn mem_free(&self, ptr: u64) -> R;
    /// `cuDeviceGetUuid_v2`: the device's UUID (`None` where the driver cannot tell).
    fn device_uuid(&self, _dev: CUdevice) -> Option<[u8; 16]> {
        None
    }
    /// `cuMemFreeAsync` on the program's stream.
    fn mem_free_async(&self, ptr: u64, stream: CUstream) -> R;
    /// `cuDeviceGetMemPool`: the current pool of device `dev`.
    fn device_mem_pool(&self, dev: usize) -> Option<u64>;
    /// `cuMemPoolGetAttribute` of a byte-count attribute.
    fn pool_attribute(&self, pool: u64, attr: CUmemPool_attribute) -> Option<u64>;
    /// `cuMemPoolTrimTo`.
    fn pool_trim(&self, pool: u64, keep: u64) -> R;
    /// `cuStreamGetCaptureInfo_v2`: the graph `stream` is capturing into, if it is capturing
    /// (`per_thread`: the caller's NULL stream is its per-thread default stream).
    fn capture_graph(&self, stream: CUstream, per_thread: bool) -> Option<u64>;
    /// `cuDeviceGetGraphMemAttribute` of a byte-count attribute.
    fn graph_mem_attribute(&self, dev: usize, attr: CUgraphMem_attribute) -> Option<u64>;
    /// `cuCtxGetCurrent`: the calling thread's current context.
    fn current_context(&self) -> Option<u64>;
    /// `cuCtxGetLimit` of the current context.
    fn ctx_limit(&self, limit: CUlimit) -> Option<u64>;
    /// `cuCtxSetLimit` of the current context (to undo a refused change).
    fn set_ctx_limit(&self, limit: CUlimit, value: u64) -> R;
    /// Resident threads of device `dev`: its SMs × maximum threads per SM.
    fn resident_threads(&self, dev: usize) -> Option<u64>;
    /// `cuModuleUnload` (to undo a load refused after the fact).
    fn module_unload(&self, module: u64) -> R;
    /// `cuLibraryUnload` (likewise).
    fn library_unload(&self, library: u64) -> R;
    /// What NVML says of device `dev`: memory used by all processes, and its process list.
    fn nvml_list(&self, dev: CUdevice) -> Option<Snapshot>;
    /// Allocates `bytes` in context `ctx` (made current for the call, then restored): a probe
    /// that tells this process's host PID apart, freed with [`Driver::probe_free`].
    fn probe_alloc(&self, ctx: CUcontext, bytes: u64) -> Option<u64>;
    /// Frees a probe of [`Driver::probe_alloc`].
    fn probe_free(&self, ctx: CUcontext, ptr: u64);
    /// The inode of this process's PID namespace (`/proc/self/ns/pid`), if `/proc` tells.
    fn pid_namespace(&self) -> Option<u64>;
    /// `cuDeviceGetCount`.
    fn device_count(&self) -> Option<i32>;
    /// `cuEventCreate` with default flags (timing enabled).
    fn event_create(&self) -> Option<CUevent>;
    /// `cuEventRecord` on the program's stream.
    fn event_record(&self, event: CUevent, stream: CUstream) -> R;
    /// `cuEventQuery`.
    fn event_query(&self, event: CUevent) -> R;

    /// `cuEventElapsedTime` in milliseconds.
    fn event_elapsed_ms(&self, start: CUevent, end: CUevent) -> Result<f32, R>;
    /// `cuEventDestroy_v2`.
    fn event_destroy(&self, event: CUevent);
}

/// The real driver and NVML, resolved through the hook table's slots.
#[derive(Clone, Copy, Default)]
pub struct Real;

impl Driver for Real {
    fn ctx_device(&self) -> Result<CUdevice, R> {
        let f = real::cuCtxGetDevice().ok_or(R::CUDA_ERROR_NOT_INITIALIZED)?;
        let mut dev = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { f(&mut dev) } {
            R::CUDA_SUCCESS => Ok(dev),
            rc => Err(rc),
        }
    }

    fn mem_free(&self, ptr: u64) -> R {
        // SAFETY: an allocation the driver gave this process.
        real::cuMemFree_v2().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(ptr) })
    }

    fn mem_free_async(&self, ptr: u64, stream: CUstream) -> R {
        // SAFETY: an allocation the driver just made on the program's stream.
        real::cuMemFreeAsync().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(ptr, stream) })
    }

    fn device_mem_pool(&self, dev: usize) -> Option<u64> {
        let f = real::cuDeviceGetMemPool()?;
        let mut p: CUmemoryPool = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and a device index the driver gave us.
        (unsafe { f(&mut p, dev as CUdevice) } == R::CUDA_SUCCESS).then_some(p as u64)
    }

    fn pool_attribute(&self, pool: u64, attr: CUmemPool_attribute) -> Option<u64> {
        let f = real::cuMemPoolGetAttribute()?;
        let mut v = 0u64;
        // SAFETY: a pool handle the driver gave the program and an 8-byte out-value, as the
        // driver documents for the byte-count attributes.
        (unsafe { f(pool as CUmemoryPool, attr, (&mut v as *mut u64).cast()) } == R::CUDA_SUCCESS).then_some(v)
    }

    fn pool_trim(&self, pool: u64, keep: u64) -> R {
        // SAFETY: a pool handle the driver gave the program.
        real::cuMemPoolTrimTo().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(pool as CUmemoryPool, keep as usize) })
    }

    fn capture_graph(&self, stream: CUstream, per_thread: bool) -> Option<u64> {
        let stream = if per_thread && stream.is_null() { CU_STREAM_PER_THREAD } else { stream };
        let mut status = CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        let mut graph: CUgraph = std::ptr::null_mut();
        // `_v2` (CUDA 11.3+), or `_v3` (12.3+) from a driver that no longer exports `_v2`.
        let rc = match (real::cuStreamGetCaptureInfo_v2(), real::cuStreamGetCaptureInfo_v3()) {
            // SAFETY: the program's stream, valid out-pointers, and NULL for the optional outputs.
            (Some(f), _) => unsafe { f(stream, &mut status, ptr::null_mut(), &mut graph, ptr::null_mut(), ptr::null_mut()) },
            // SAFETY: as above.
            (None, Some(f)) => unsafe {
                f(stream, &mut status, ptr::null_mut(), &mut graph, ptr::null_mut(), ptr::null_mut(), ptr::null_mut())
            },
            (None, None) => return None,
        };
        (rc == R::CUDA_SUCCESS && status == CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE && !graph.is_null())
            .then_some(graph as u64)
    }

    fn graph_mem_attribute(&self, dev: usize, attr: CUgraphMem_attribute) -> Option<u64> {
        let f = real::cuDeviceGetGraphMemAttribute()?;
        let mut v = 0u64;
        // SAFETY: a device index the driver gave us and an 8-byte out-value, as the driver
        // documents for these attributes.
        (unsafe { f(dev as CUdevice, attr, (&mut v as *mut u64).cast()) } == R::CUDA_SUCCESS).then_some(v)
    }

    fn current_context(&self) -> Option<u64> {
        let f = real::cuCtxGetCurrent()?;
        let mut c: CUcontext = std::ptr::null_mut();
        // SAFETY: a valid out-pointer.
        (unsafe { f(&mut c) } == R::CUDA_SUCCESS && !c.is_null()).then_some(c as u64)
    }

    fn ctx_limit(&self, limit: CUlimit) -> Option<u64> {
        let f = real::cuCtxGetLimit()?;
        let mut v = 0usize;
        // SAFETY: a valid out-pointer.
        (unsafe { f(&mut v, limit) } == R::CUDA_SUCCESS).then_some(v as u64)
    }

    fn set_ctx_limit(&self, limit: CUlimit, value: u64) -> R {
        // SAFETY: plain values.
        real::cuCtxSetLimit().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(limit, value as usize) })
    }

    fn resident_threads(&self, dev: usize) -> Option<u64> {
        let f = real::cuDeviceGetAttribute()?;
        let attr = |a: CUdevice_attribute| -> Option<u64> {
            let mut v = 0;
            // SAFETY: a valid out-pointer and a device index the driver gave us.
            if unsafe { f(&mut v, a, dev as CUdevice) } != R::CUDA_SUCCESS {
                return None;
            }
            u64::try_from(v).ok()
        };
        let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        Some(sms * attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?)
    }

    fn module_unload(&self, module: u64) -> R {
        // SAFETY: a module the driver just loaded for the program.
        real::cuModuleUnload().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(module as cuda_sys::driver::CUmodule) })
    }

    fn library_unload(&self, library: u64) -> R {
        // SAFETY: a library the driver just loaded for the program.
        real::cuLibraryUnload().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(library as cuda_sys::driver::CUlibrary) })
    }

    fn device_uuid(&self, dev: CUdevice) -> Option<[u8; 16]> {
        let f = real::cuDeviceGetUuid_v2()?;
        let mut uuid = cuda_sys::driver::CUuuid::default();
        // SAFETY: a valid out-pointer.
        (unsafe { f(&mut uuid, dev) } == R::CUDA_SUCCESS).then(|| uuid.bytes.map(|b| b as u8))
    }

    fn device_count(&self) -> Option<i32> {
        let f = real::cuDeviceGetCount()?;
        let mut n = 0;
        // SAFETY: a valid out-pointer.
        (unsafe { f(&mut n) } == R::CUDA_SUCCESS).then_some(n)
    }

    fn event_create(&self) -> Option<CUevent> {
        let f = real::cuEventCreate()?;
        let mut ev: CUevent = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and default flags.
        (unsafe { f(&mut ev, 0) } == R::CUDA_SUCCESS && !ev.is_null()).then_some(ev)
    }

    fn event_record(&self, event: CUevent, stream: CUstream) -> R {
        // SAFETY: an event this process created and the program's own stream.
        real::cuEventRecord().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(event, stream) })
    }

    fn event_query(&self, event: CUevent) -> R {
        // SAFETY: an event this process created and has not destroyed.
        real::cuEventQuery().map_or(R::CUDA_ERROR_NOT_INITIALIZED, |f| unsafe { f(event) })
    }

    fn event_elapsed_ms(&self, start: CUevent, end: CUevent) -> Result<f32, R> {
        let f = real::cuEventElapsedTime().ok_or(R::CUDA_ERROR_NOT_INITIALIZED)?;
        let mut ms = 0f32;
        // SAFETY: a valid out-pointer and two events this process created.
        match unsafe { f(&mut ms, start, end) } {
            R::CUDA_SUCCESS => Ok(ms),
            rc => Err(rc),
        }
    }

    fn event_destroy(&self, event: CUevent) {
        if let Some(f) = real::cuEventDestroy_v2() {
            // SAFETY: an event this process created, destroyed once.
            unsafe { f(event) };
        }
    }

    fn nvml_list(&self, dev: CUdevice) -> Option<Snapshot> {
        let h = super::context::nvml_device(dev)?;
        let mut m = nvmlMemory_t::default();
        // SAFETY: a handle NVML gave us and a valid out-pointer.
        if unsafe { real::nvmlDeviceGetMemoryInfo()?(h, &mut m) } != nvmlReturn_t::NVML_SUCCESS {
            return None;
        }
        // No list is not an empty one (every process would look new after a creation).
        let listed = read_list(real::nvmlDeviceGetComputeRunningProcesses_v3()?, h).ok()?;
        Some((m.used, listed.iter().map(|p: &nvmlProcessInfo_t| (p.pid, p.usedGpuMemory)).collect()))
    }

    fn probe_alloc(&self, ctx: CUcontext, bytes: u64) -> Option<u64> {
        let (push, pop, alloc) = (real::cuCtxPushCurrent_v2()?, real::cuCtxPopCurrent_v2()?, real::cuMemAlloc_v2()?);
        let mut ptr = 0u64;
        let mut popped: CUcontext = ptr::null_mut();
        // SAFETY: a context the hooked call just created, pushed and popped around one
        // allocation with a valid out-pointer.
        unsafe {
            if push(ctx) != R::CUDA_SUCCESS {
                return None;
            }
            let rc = alloc(&mut ptr, bytes as usize);
            pop(&mut popped);
            (rc == R::CUDA_SUCCESS).then_some(ptr)
        }
    }

    fn pid_namespace(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
    }

    fn probe_free(&self, ctx: CUcontext, ptr: u64) {
        let (Some(push), Some(pop), Some(free)) = (real::cuCtxPushCurrent_v2(), real::cuCtxPopCurrent_v2(), real::cuMemFree_v2()) else {
            return;
        };
        let mut popped: CUcontext = ptr::null_mut();
        // SAFETY: as in probe_alloc: the probe's own context and pointer. If the context cannot
        // be pushed, the free is tried in whatever context is current (the pointer identifies
        // the allocation): a probe is never left allocated on purpose.
        unsafe {
            if push(ctx) == R::CUDA_SUCCESS {
                free(ptr);
                pop(&mut popped);
            } else {
                free(ptr);
            }
        }
    }
}

/// Most entries read from one of NVML's lists.
const MAX_LISTED: usize = 16_384;

/// The type of NVML's process-list functions over entries `T`.
pub type ListFn<T> = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut T) -> nvmlReturn_t;

/// The whole list of `f` for `device`, grown until it fits (up to a bound: a list that never
/// fits is an error a caller cannot mistake for "make room").
pub fn read_list<T: Copy + Default>(f: ListFn<T>, device: nvmlDevice_t) -> Result<Vec<T>, nvmlReturn_t> {
    let mut items = vec![T::default(); 64];
    loop {
        let mut n = items.len() as c_uint;
        // SAFETY: a buffer of `n` entries and a valid count pointer; the handle is NVML's.
        match unsafe { f(device, &mut n, items.as_mut_ptr()) } {
            nvmlReturn_t::NVML_SUCCESS => {
                items.truncate(n as usize);
                return Ok(items);
            }
            nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE if items.len() < MAX_LISTED => {
                items.resize((n as usize).max(items.len() * 2).min(MAX_LISTED), T::default())
            }
            nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE => return Err(nvmlReturn_t::NVML_ERROR_UNKNOWN),
            rc => return Err(rc),
        }
    }
}

/// The real per-process utilisation samples of `device` since `last_seen_us`, grown until
/// they fit as [`read_list`] (empty for `NVML_ERROR_NOT_FOUND`: no period ended since).
pub fn read_samples(device: nvmlDevice_t, last_seen_us: u64) -> Result<Vec<nvmlProcessUtilizationSample_t>, nvmlReturn_t> {
    let f = real::nvmlDeviceGetProcessUtilization().ok_or(nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND)?;
    let mut items = vec![nvmlProcessUtilizationSample_t::default(); 64];
    loop {
        let mut n = items.len() as c_uint;
        // SAFETY: a buffer of `n` samples and a valid count pointer; the handle is NVML's.
        match unsafe { f(device, items.as_mut_ptr(), &mut n, last_seen_us) } {
            nvmlReturn_t::NVML_SUCCESS => {
                items.truncate(n as usize);
                return Ok(items);
            }
            nvmlReturn_t::NVML_ERROR_NOT_FOUND => return Ok(Vec::new()),
            nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE if items.len() < MAX_LISTED => {
                items.resize((n as usize).max(items.len() * 2).min(MAX_LISTED), nvmlProcessUtilizationSample_t::default())
            }
            nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE => return Err(nvmlReturn_t::NVML_ERROR_UNKNOWN),
            rc => return Err(rc),
        }
    }
}
