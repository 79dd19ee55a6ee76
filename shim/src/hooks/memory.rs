//! Every allocation family: the bytes are reserved in the region before the driver is called,
//! committed under the allocation's address or handle if it succeeded, rolled back if not.
//! Frees take the allocation out of the books, call the driver, and give the bytes back only
//! if the driver freed it. A pointer or handle we never charged goes to the driver untouched.
#![allow(unsafe_code)]

use std::ffi::c_uint;

use cuda_sys::driver::*;
use vgpu_limiter::region::Region;

use super::{Gate, NO_DRIVER, REFUSED, current_device, device_index, gate, pools};
use crate::log;
use crate::table::real;

use CUresult as R;

/// Reserves `bytes` of `device`, runs the driver call, and commits under `key()` on success.
fn charged(region: &Region, device: usize, bytes: u64, call: impl FnOnce() -> R, key: impl FnOnce() -> u64) -> R {
    // Before refusing, let pools that released memory at a synchronisation say so.
    let free_more = || matches!(crate::state::mode(), crate::state::Mode::Active(shim) if pools::resync_all(&shim.pools, region));
    let reservation = match region.reserve_or(device, bytes, free_more) {
        Ok(r) => r,
        Err(refused) => {
            log::warn(format_args!(
                "device {device}: out of quota: refusing {} bytes ({} of {} bytes in use)",
                refused.requested, refused.used, refused.quota
            ));
            return R::CUDA_ERROR_OUT_OF_MEMORY;
        }
    };
    let rc = call();
    if rc == R::CUDA_SUCCESS {
        reservation.commit(key());
    }
    rc
}

/// Shared body of the hooks that allocate on the current device.
///
/// # Safety
/// `out` is null or valid for reads after a successful `call`.
unsafe fn on_current_device(bytes: usize, out: *const CUdeviceptr, forward: impl FnOnce() -> R) -> R {
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(_, region) => {
            if out.is_null() || bytes == 0 {
                return forward(); // the driver reports the bad argument
            }
            let device = match current_device() {
                Ok(d) => d,
                Err(rc) => return rc,
            };
            // SAFETY: read only after the driver wrote it.
            charged(region, device, bytes as u64, forward, || unsafe { *out })
        }
    }
}

/// Shared body of the hooks that free by key: the allocation leaves the books before the
/// driver call and its bytes go back only if the driver freed it. A key never charged on its
/// own may be pool memory: the pools' charges are brought in line after the driver has it back.
fn free_key(key: u64, forward: impl FnOnce() -> R) -> R {
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => match region.take(key) {
            Some(held) => {
                let rc = forward();
                if rc == R::CUDA_SUCCESS {
                    held.release()
                } else {
                    held.keep()
                }
                rc
            }
            None => {
                let rc = forward();
                let _ = pools::resync_all(&shim.pools, region);
                rc
            }
        },
    }
}

/// `cuMemAlloc_v2`.
pub unsafe fn mem_alloc(dptr: *mut CUdeviceptr, bytesize: usize) -> R {
    let Some(f) = real::cuMemAlloc_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { on_current_device(bytesize, dptr, || f(dptr, bytesize)) }
}

/// Widest pitch alignment a driver uses: the worst case reserved before the call.
const PITCH_ALIGN: usize = 512;

/// `cuMemAllocPitch_v2`: reserves the worst case (rows padded to [`PITCH_ALIGN`]), then keeps
/// exactly pitch × height. A driver that padded more is refused after the fact (freed, OOM).
pub unsafe fn mem_alloc_pitch(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, elem: c_uint) -> R {
    let Some(f) = real::cuMemAllocPitch_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(dptr, pitch, width, height, elem) };
    let (region, device) = match gate() {
        Gate::Forward => return forward(),
        Gate::Refuse => return REFUSED,
        Gate::Enforce(_, region) => {
            if dptr.is_null() || pitch.is_null() || width == 0 || height == 0 {
                return forward();
            }
            match current_device() {
                Ok(d) => (region, d),
                Err(rc) => return rc,
            }
        }
    };
    let Some(worst) = width.checked_next_multiple_of(PITCH_ALIGN).and_then(|w| w.checked_mul(height)) else {
        return R::CUDA_ERROR_OUT_OF_MEMORY;
    };
    let mut reservation = match region.reserve(device, worst as u64) {
        Ok(r) => r,
        Err(_) => return R::CUDA_ERROR_OUT_OF_MEMORY,
    };
    let rc = forward();
    if rc != R::CUDA_SUCCESS {
        return rc;
    }
    // SAFETY: the driver wrote both on success.
    let (ptr, actual) = unsafe { (*dptr, (*pitch).saturating_mul(height)) };
    if actual as u64 > reservation.bytes() {
        log::error(format_args!("cuMemAllocPitch_v2 padded rows beyond {PITCH_ALIGN} bytes; refusing the allocation"));
        if let Some(free) = real::cuMemFree_v2() {
            // SAFETY: freeing what the driver just gave us.
            unsafe { free(ptr) };
        }
        return R::CUDA_ERROR_OUT_OF_MEMORY;
    }
    reservation.shrink_to(actual as u64);
    reservation.commit(ptr);
    rc
}

/// `cuMemAllocManaged`: managed memory is charged in full to the current device when it is
/// allocated, wherever its pages later migrate (a tenant cannot exceed its quota by
/// allocating managed memory instead of device memory).
pub unsafe fn mem_alloc_managed(dptr: *mut CUdeviceptr, bytesize: usize, flags: c_uint) -> R {
    let Some(f) = real::cuMemAllocManaged() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { on_current_device(bytesize, dptr, || f(dptr, bytesize, flags)) }
}

/// `cuMemFree_v2`.
pub unsafe fn mem_free(dptr: CUdeviceptr) -> R {
    let Some(f) = real::cuMemFree_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's argument.
    free_key(dptr, || unsafe { f(dptr) })
}

/// Shared body of the stream-ordered allocations: charged as the pool's growth (see
/// [`pools`]); the pool is the given one, or the current pool of the current device.
///
/// # Safety
/// `dptr` is null or valid for reads after a successful `forward`.
unsafe fn stream_ordered(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: Option<CUmemoryPool>,
    stream: CUstream,
    forward: impl FnOnce() -> R,
) -> R {
    let (shim, region) = match gate() {
        Gate::Forward => return forward(),
        Gate::Refuse => return REFUSED,
        Gate::Enforce(shim, region) => (shim, region),
    };
    if dptr.is_null() || bytesize == 0 {
        return forward(); // the driver reports the bad argument
    }
    let known = pool.and_then(|p| shim.pools.device(p as u64));
    let device = match known.map_or_else(current_device, Ok) {
        Ok(d) => d,
        Err(rc) => return rc,
    };
    let pool = pool.or_else(|| {
        let f = real::cuDeviceGetMemPool()?;
        let mut p: CUmemoryPool = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and a device index the driver gave us.
        (unsafe { f(&mut p, device as CUdevice) } == R::CUDA_SUCCESS).then_some(p)
    });
    let mut forward = Some(forward);
    if let Some(p) = pool {
        let call = || forward.take().map_or(R::CUDA_ERROR_UNKNOWN, |f| f());
        let undo = || {
            if let Some(free) = real::cuMemFreeAsync() {
                // SAFETY: the allocation the driver just made on this stream.
                unsafe { free(*dptr, stream) };
            }
        };
        if let Some(rc) = pools::allocate(&shim.pools, region, p as u64, device, bytesize as u64, call, undo) {
            return rc;
        }
    }
    // The pool cannot be accounted as a whole: charge the allocation itself. (`allocate`
    // answers None only before calling; a panic here would abort the host process.)
    let Some(forward) = forward.take() else { return R::CUDA_ERROR_UNKNOWN };
    // SAFETY: read only after the driver wrote it.
    charged(region, device, bytesize as u64, forward, || unsafe { *dptr })
}

/// `cuMemAllocAsync`.
pub unsafe fn mem_alloc_async(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) -> R {
    let Some(f) = real::cuMemAllocAsync() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    unsafe { stream_ordered(dptr, bytesize, None, stream, || f(dptr, bytesize, stream)) }
}

/// `cuMemAllocAsync_ptsz`.
pub unsafe fn mem_alloc_async_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) -> R {
    let Some(f) = real::cuMemAllocAsync_ptsz() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    unsafe { stream_ordered(dptr, bytesize, None, stream, || f(dptr, bytesize, stream)) }
}

/// `cuMemAllocFromPoolAsync`.
pub unsafe fn mem_alloc_from_pool(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream) -> R {
    let Some(f) = real::cuMemAllocFromPoolAsync() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    unsafe { stream_ordered(dptr, bytesize, Some(pool), stream, || f(dptr, bytesize, pool, stream)) }
}

/// `cuMemAllocFromPoolAsync_ptsz`.
pub unsafe fn mem_alloc_from_pool_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream) -> R {
    let Some(f) = real::cuMemAllocFromPoolAsync_ptsz() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    unsafe { stream_ordered(dptr, bytesize, Some(pool), stream, || f(dptr, bytesize, pool, stream)) }
}

/// `cuMemFreeAsync`: memory charged one by one comes back now; pool memory when the pool
/// releases it.
pub unsafe fn mem_free_async(dptr: CUdeviceptr, stream: CUstream) -> R {
    let Some(f) = real::cuMemFreeAsync() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    free_key(dptr, || unsafe { f(dptr, stream) })
}

/// `cuMemFreeAsync_ptsz`.
pub unsafe fn mem_free_async_ptsz(dptr: CUdeviceptr, stream: CUstream) -> R {
    let Some(f) = real::cuMemFreeAsync_ptsz() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    free_key(dptr, || unsafe { f(dptr, stream) })
}

/// `cuMemPoolTrimTo`: what the pool releases stops being charged.
pub unsafe fn pool_trim(pool: CUmemoryPool, keep: usize) -> R {
    let Some(f) = real::cuMemPoolTrimTo() else { return NO_DRIVER };
    match gate() {
        // SAFETY: forwarding the caller's arguments.
        Gate::Forward => unsafe { f(pool, keep) },
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            // SAFETY: forwarding the caller's arguments.
            let rc = unsafe { f(pool, keep) };
            pools::resync_pool(&shim.pools, region, pool as u64);
            rc
        }
    }
}

/// `cuMemPoolDestroy`: the pool's charge goes back.
pub unsafe fn pool_destroy(pool: CUmemoryPool) -> R {
    let Some(f) = real::cuMemPoolDestroy() else { return NO_DRIVER };
    match gate() {
        // SAFETY: forwarding the caller's argument.
        Gate::Forward => unsafe { f(pool) },
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            // SAFETY: forwarding the caller's argument.
            let rc = unsafe { f(pool) };
            if rc == R::CUDA_SUCCESS {
                pools::forget(&shim.pools, region, pool as u64);
            }
            rc
        }
    }
}

/// Records a pool's device once the driver has made or named the pool.
///
/// # Safety
/// `pool` is null or valid for reads after a successful call.
unsafe fn remember_pool(rc: R, pool: *mut CUmemoryPool, device: i32) -> R {
    if rc == R::CUDA_SUCCESS
        && !pool.is_null()
        && let (Gate::Enforce(shim, _), Ok(d)) = (gate(), device_index(device))
    {
        // SAFETY: the driver wrote it.
        let _ = shim.pools.record(unsafe { *pool } as u64, d);
    }
    rc
}

/// `cuMemPoolCreate`: remembers which device the pool allocates on.
pub unsafe fn pool_create(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) -> R {
    let Some(f) = real::cuMemPoolCreate() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's arguments.
    let rc = unsafe { f(pool, props) };
    // SAFETY: the driver accepted `props`, so it is readable.
    let device = if props.is_null() { -1 } else { unsafe { (*props).location.id } };
    // SAFETY: as the caller passed it.
    unsafe { remember_pool(rc, pool, device) }
}

/// `cuDeviceGetDefaultMemPool`.
pub unsafe fn device_default_pool(pool: *mut CUmemoryPool, dev: CUdevice) -> R {
    let Some(f) = real::cuDeviceGetDefaultMemPool() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's arguments, then reading what the driver wrote.
    unsafe { remember_pool(f(pool, dev), pool, dev) }
}

/// `cuDeviceGetMemPool`.
pub unsafe fn device_pool(pool: *mut CUmemoryPool, dev: CUdevice) -> R {
    let Some(f) = real::cuDeviceGetMemPool() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's arguments, then reading what the driver wrote.
    unsafe { remember_pool(f(pool, dev), pool, dev) }
}

/// `cuMemCreate`: physical memory is charged to the device it lives on (address
/// reservations and mappings cost nothing: they are not memory).
pub unsafe fn mem_create(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: u64) -> R {
    let Some(f) = real::cuMemCreate() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(handle, size, prop, flags) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(_, region) => {
            if handle.is_null() || prop.is_null() || size == 0 {
                return forward();
            }
            // SAFETY: non-null, per the API contract readable.
            let location = unsafe { (*prop).location };
            if location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
                return forward(); // host memory is not the GPU's
            }
            let device = match device_index(location.id) {
                Ok(d) => d,
                Err(_) => return forward(),
            };
            // SAFETY: read only after the driver wrote it.
            charged(region, device, size as u64, forward, || unsafe { *handle })
        }
    }
}

/// `cuMemRelease`.
pub unsafe fn mem_release(handle: CUmemGenericAllocationHandle) -> R {
    let Some(f) = real::cuMemRelease() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's argument.
    let forward = || unsafe { f(handle) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            let rc = forward();
            if rc == R::CUDA_SUCCESS {
                let mut vmm = shim.vmm.lock();
                if vmm.mapped.get(&handle).is_some_and(|n| *n > 0) {
                    // Still mapped: the driver keeps the memory until the last unmap.
                    vmm.released.insert(handle);
                } else if let Some(h) = region.take(handle) {
                    h.release();
                }
            }
            rc
        }
    }
}

/// `cuMemMap`: a mapping keeps its physical handle's memory charged.
pub unsafe fn mem_map(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: u64) -> R {
    let Some(f) = real::cuMemMap() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(ptr, size, offset, handle, flags) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, _) => {
            let rc = forward();
            if rc == R::CUDA_SUCCESS {
                let mut vmm = shim.vmm.lock();
                *vmm.mapped.entry(handle).or_default() += 1;
                vmm.by_address.insert(ptr, handle);
            }
            rc
        }
    }
}

/// `cuMemUnmap`: the last unmap of a released handle ends its charge.
pub unsafe fn mem_unmap(ptr: CUdeviceptr, size: usize) -> R {
    let Some(f) = real::cuMemUnmap() else { return NO_DRIVER };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(ptr, size) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            let rc = forward();
            if rc != R::CUDA_SUCCESS {
                return rc;
            }
            let mut vmm = shim.vmm.lock();
            let end = ptr.saturating_add(size as u64);
            let starts: Vec<u64> = vmm.by_address.keys().copied().filter(|a| (ptr..end).contains(a)).collect();
            for a in starts {
                let Some(handle) = vmm.by_address.remove(&a) else { continue };
                let left = vmm.mapped.get_mut(&handle).map(|n| {
                    *n = n.saturating_sub(1);
                    *n
                });
                if left == Some(0) {
                    vmm.mapped.remove(&handle);
                    if vmm.released.remove(&handle)
                        && let Some(h) = region.take(handle)
                    {
                        h.release();
                    }
                }
            }
            rc
        }
    }
}

/// Bytes of an array: width × height × depth × channels × element size, with unknown formats
/// counted at the widest element (16 bytes) so they cannot undercharge.
fn array_bytes(d: &CUDA_ARRAY3D_DESCRIPTOR) -> u64 {
    let elem = d.Format.channel_bytes().unwrap_or(16) as u64;
    [d.Width as u64, d.Height.max(1) as u64, d.Depth.max(1) as u64, u64::from(d.NumChannels.max(1)), elem]
        .iter()
        .fold(1u64, |acc, x| acc.saturating_mul(*x))
}

/// Shared body of the array creations.
///
/// # Safety
/// `handle` is null or valid for reads after a successful `forward`.
unsafe fn array(bytes: u64, handle: *mut *mut std::ffi::c_void, forward: impl FnOnce() -> R) -> R {
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(_, region) => {
            if handle.is_null() || bytes == 0 {
                return forward();
            }
            let device = match current_device() {
                Ok(d) => d,
                Err(rc) => return rc,
            };
            // SAFETY: read only after the driver wrote it.
            charged(region, device, bytes, forward, || unsafe { *handle } as u64)
        }
    }
}

/// `cuArrayCreate_v2`.
pub unsafe fn array_create(handle: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) -> R {
    let Some(f) = real::cuArrayCreate_v2() else {
        return NO_DRIVER;
    };
    let bytes = if desc.is_null() {
        0
    } else {
        // SAFETY: non-null, per the API contract readable.
        let d = unsafe { *desc };
        array_bytes(&CUDA_ARRAY3D_DESCRIPTOR {
            Width: d.Width,
            Height: d.Height,
            Depth: 0,
            Format: d.Format,
            NumChannels: d.NumChannels,
            Flags: 0,
        })
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { array(bytes, handle.cast(), || f(handle, desc)) }
}

/// `cuArray3DCreate_v2`.
pub unsafe fn array3d_create(handle: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR) -> R {
    let Some(f) = real::cuArray3DCreate_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: non-null, per the API contract readable.
    let bytes = if desc.is_null() { 0 } else { array_bytes(unsafe { &*desc }) };
    // SAFETY: forwarding the caller's arguments.
    unsafe { array(bytes, handle.cast(), || f(handle, desc)) }
}

/// `cuArrayDestroy`.
pub unsafe fn array_destroy(handle: CUarray) -> R {
    let Some(f) = real::cuArrayDestroy() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's argument.
    free_key(handle as u64, || unsafe { f(handle) })
}

/// `cuMipmappedArrayCreate`: the sum of its levels, each half the previous in every extent.
pub unsafe fn mipmapped_create(handle: *mut CUmipmappedArray, desc: *const CUDA_ARRAY3D_DESCRIPTOR, levels: c_uint) -> R {
    let Some(f) = real::cuMipmappedArrayCreate() else {
        return NO_DRIVER;
    };
    let bytes = if desc.is_null() {
        0
    } else {
        // SAFETY: non-null, per the API contract readable.
        let mut level = unsafe { *desc };
        let mut total = 0u64;
        for _ in 0..levels.min(32) {
            total = total.saturating_add(array_bytes(&level));
            level.Width = (level.Width / 2).max(1);
            level.Height = if level.Height == 0 { 0 } else { (level.Height / 2).max(1) };
            level.Depth = if level.Depth == 0 { 0 } else { (level.Depth / 2).max(1) };
        }
        total
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { array(bytes, handle.cast(), || f(handle, desc, levels)) }
}

/// `cuMipmappedArrayDestroy`.
pub unsafe fn mipmapped_destroy(handle: CUmipmappedArray) -> R {
    let Some(f) = real::cuMipmappedArrayDestroy() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's argument.
    free_key(handle as u64, || unsafe { f(handle) })
}
