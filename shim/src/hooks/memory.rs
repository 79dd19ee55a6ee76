//! Every allocation family: the bytes are reserved in the region before the driver is called,
//! committed under the allocation's address or handle if it succeeded, rolled back if not.
//! Frees take the allocation out of the books, call the driver, and give the bytes back only
//! if the driver freed it. A pointer or handle we never charged goes to the driver untouched.
//! What each path charges is decided in `vgpu_limiter::accounting`.

use std::ffi::c_uint;

use cuda_sys::driver::*;
use vgpu_limiter::accounting::{self, PITCH_ALIGN};

use super::args::Out;
use super::{Driver, Enforce, device_index, pools};
use crate::log;

use CUresult as R;

/// Reserves `bytes` of `device`, runs the driver call, and commits under `key()` on success.
pub(super) fn charged<D: Driver>(e: &Enforce<D>, device: usize, bytes: u64, call: impl FnOnce() -> R, key: impl FnOnce() -> u64) -> R {
    // Before refusing, let pools that released memory at a synchronisation say so.
    let free_more = || pools::resync_all(e);
    let reservation = match e.region.reserve_or(device, bytes, free_more) {
        Ok(r) => r,
        Err(refused) => {
            log::warn(format_args!(
                "device {device}: out of quota: refusing {} bytes ({} of {} bytes in use)",
                refused.requested, refused.used, refused.quota
            ));
            super::reconcile::at_most_every(e, device, super::reconcile::VIEW_PERIOD_NS);
            return R::CUDA_ERROR_OUT_OF_MEMORY;
        }
    };
    let rc = call();
    if rc == R::CUDA_SUCCESS {
        reservation.commit(key());
        super::reconcile::at_most_every(e, device, super::reconcile::PERIOD_NS);
    }
    rc
}

/// Shared body of the hooks that allocate on the current device.
pub(super) fn on_current_device<D: Driver, P: Copy + Into<u64>>(e: &Enforce<D>, bytes: u64, out: Out<P>, call: impl FnOnce() -> R) -> R {
    if out.is_null() || bytes == 0 {
        return call(); // the driver reports the bad argument
    }
    let device = match e.current_device() {
        Ok(d) => d,
        Err(rc) => return rc,
    };
    charged(e, device, bytes, call, || out.written().map_or(0, Into::into))
}

/// Shared body of the hooks that free by key: the allocation leaves the books before the
/// driver call and its bytes go back only if the driver freed it. A key never charged on its
/// own may be pool memory: the pools' charges are brought in line after the driver has it back.
pub(super) fn free_key<D: Driver>(e: &Enforce<D>, key: u64, call: impl FnOnce() -> R) -> R {
    match e.region.take(key) {
        Some(held) => {
            let rc = call();
            if rc == R::CUDA_SUCCESS {
                held.release()
            } else {
                held.keep()
            }
            rc
        }
        None => {
            let rc = call();
            let _ = pools::resync_all(e);
            rc
        }
    }
}

/// `cuMemAlloc_v2`.
pub fn mem_alloc<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dptr: Out<CUdeviceptr>, bytesize: usize) -> R {
    on_current_device(e, bytesize as u64, dptr, call)
}

/// `cuMemAllocPitch_v2`: reserves the worst case (rows padded to [`PITCH_ALIGN`]), then keeps
/// exactly pitch × height. A driver that padded more is refused after the fact (freed, OOM).
pub fn mem_alloc_pitch<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    dptr: Out<CUdeviceptr>,
    pitch: Out<usize>,
    width: usize,
    height: usize,
    _elem: c_uint,
) -> R {
    let written = || (dptr.written().unwrap_or(0), pitch.written().map_or(u64::MAX, |p| p as u64));
    pitched(e, call, dptr.is_null() || pitch.is_null(), width as u64, height as u64, written)
}

/// Shared body of the pitched allocations (the current and the 32-bit ABI): `null` when an
/// out-pointer is NULL; `written` reads (address, pitch) after the call.
pub(super) fn pitched<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    null: bool,
    width: u64,
    height: u64,
    written: impl FnOnce() -> (u64, u64),
) -> R {
    if null || width == 0 || height == 0 {
        return call();
    }
    let device = match e.current_device() {
        Ok(d) => d,
        Err(rc) => return rc,
    };
    let Some(worst) = accounting::pitch_worst_case(width, height) else {
        return R::CUDA_ERROR_OUT_OF_MEMORY;
    };
    let mut reservation = match e.region.reserve(device, worst) {
        Ok(r) => r,
        Err(_) => return R::CUDA_ERROR_OUT_OF_MEMORY,
    };
    let rc = call();
    if rc != R::CUDA_SUCCESS {
        return rc;
    }
    let (ptr, chosen) = written();
    let Some(actual) = accounting::pitch_charge(chosen, height, reservation.bytes()) else {
        log::error(format_args!("cuMemAllocPitch padded rows beyond {PITCH_ALIGN} bytes; refusing the allocation"));
        e.driver.mem_free(ptr);
        return R::CUDA_ERROR_OUT_OF_MEMORY;
    };
    reservation.shrink_to(actual);
    reservation.commit(ptr);
    rc
}

/// `cuMemAllocManaged`: managed memory is charged in full to the current device when it is
/// allocated, wherever its pages later migrate (a tenant cannot exceed its quota by
/// allocating managed memory instead of device memory).
pub fn mem_alloc_managed<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    dptr: Out<CUdeviceptr>,
    bytesize: usize,
    _flags: c_uint,
) -> R {
    on_current_device(e, bytesize as u64, dptr, call)
}

/// `cuMemFree_v2`.
pub fn mem_free<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dptr: CUdeviceptr) -> R {
    free_key(e, dptr, call)
}

/// Shared body of the stream-ordered allocations: charged as the pool's growth (see
/// [`pools`]); the pool is the given one, or the current pool of the current device.
fn stream_ordered<D: Driver, const PER_THREAD: bool>(
    e: &Enforce<D>,
    dptr: Out<CUdeviceptr>,
    bytesize: usize,
    pool: Option<CUmemoryPool>,
    stream: CUstream,
    call: impl FnOnce() -> R,
) -> R {
    if dptr.is_null() || bytesize == 0 {
        return call(); // the driver reports the bad argument
    }
    let known = pool.and_then(|p| e.shim.pools.device(p as u64));
    let device = match known.map_or_else(|| e.current_device(), Ok) {
        Ok(d) => d,
        Err(rc) => return rc,
    };
    // On a capturing stream it becomes an allocation node of the graph: nothing is taken now;
    // the graph's first launch or upload maps it (see `graphs`).
    if let Some(graph) = e.driver.capture_graph(stream, PER_THREAD) {
        let rc = call();
        if rc == R::CUDA_SUCCESS {
            e.shim.graphs.allocation_node(graph, device, bytesize as u64);
        }
        return rc;
    }
    let pool = pool.map(|p| p as u64).or_else(|| e.driver.device_mem_pool(device));
    let mut call = Some(call);
    if let Some(p) = pool {
        let forward = || call.take().map_or(R::CUDA_ERROR_UNKNOWN, |f| f());
        let undo = || {
            let _ = e.driver.mem_free_async(dptr.written().unwrap_or(0), stream);
        };
        if let Some(rc) = pools::allocate(e, p, device, bytesize as u64, forward, undo) {
            return rc;
        }
    }
    // The pool cannot be accounted as a whole: charge the allocation itself. (`allocate`
    // answers None only before calling; a panic here would abort the host process.)
    let Some(call) = call.take() else { return R::CUDA_ERROR_UNKNOWN };
    charged(e, device, bytesize as u64, call, || dptr.written().unwrap_or(0))
}

/// `cuMemAllocAsync` (and `_ptsz`).
pub fn mem_alloc_async<D: Driver, const PER_THREAD: bool>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    dptr: Out<CUdeviceptr>,
    bytesize: usize,
    stream: CUstream,
) -> R {
    stream_ordered::<D, PER_THREAD>(e, dptr, bytesize, None, stream, call)
}

/// `cuMemAllocFromPoolAsync` (and `_ptsz`).
pub fn mem_alloc_from_pool<D: Driver, const PER_THREAD: bool>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    dptr: Out<CUdeviceptr>,
    bytesize: usize,
    pool: CUmemoryPool,
    stream: CUstream,
) -> R {
    stream_ordered::<D, PER_THREAD>(e, dptr, bytesize, Some(pool), stream, call)
}

/// `cuMemFreeAsync`: memory charged one by one comes back now; pool memory when the pool
/// releases it.
pub fn mem_free_async<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dptr: CUdeviceptr, _stream: CUstream) -> R {
    free_key(e, dptr, call)
}

/// `cuMemPoolTrimTo`: what the pool releases stops being charged.
pub fn pool_trim<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pool: CUmemoryPool, _keep: usize) -> R {
    let rc = call();
    pools::resync_pool(e, pool as u64);
    rc
}

/// `cuMemPoolDestroy`: the pool's charge goes back.
pub fn pool_destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pool: CUmemoryPool) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS {
        pools::forget(e, pool as u64);
    }
    rc
}

/// Records a pool's device once the driver has made or named the pool.
fn remember_pool<D: Driver>(e: &Enforce<D>, rc: R, pool: Out<CUmemoryPool>, device: i32) -> R {
    if rc == R::CUDA_SUCCESS
        && let (Some(p), Ok(d)) = (pool.written(), device_index(device))
    {
        let _ = e.shim.pools.record(p as u64, d);
    }
    rc
}

/// `cuMemPoolCreate`: remembers which device the pool allocates on.
pub fn pool_create<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pool: Out<CUmemoryPool>, props: Option<&CUmemPoolProps>) -> R {
    let rc = call();
    let device = props.map_or(-1, |p| p.location.id);
    remember_pool(e, rc, pool, device)
}

/// `cuDeviceGetDefaultMemPool`.
pub fn device_default_pool<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pool: Out<CUmemoryPool>, dev: CUdevice) -> R {
    remember_pool(e, call(), pool, dev)
}

/// `cuDeviceGetMemPool`.
pub fn device_pool<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pool: Out<CUmemoryPool>, dev: CUdevice) -> R {
    remember_pool(e, call(), pool, dev)
}

/// `cuMemCreate`: physical memory is charged to the device it lives on (address
/// reservations and mappings cost nothing: they are not memory).
pub fn mem_create<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    handle: Out<CUmemGenericAllocationHandle>,
    size: usize,
    prop: Option<&CUmemAllocationProp>,
    _flags: u64,
) -> R {
    let Some(prop) = prop.filter(|_| !handle.is_null() && size > 0) else {
        return call();
    };
    if prop.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
        return call(); // host memory is not the GPU's
    }
    let Ok(device) = device_index(prop.location.id) else {
        return call();
    };
    let rc = charged(e, device, size as u64, call, || handle.written().unwrap_or(0));
    if rc == R::CUDA_SUCCESS
        && let Some(h) = handle.written()
    {
        e.shim.vmm.lock().created(h);
    }
    rc
}

/// `cuMemRetainAllocationHandle`: one more reference the driver holds on the handle, so its
/// charge outlives the creator's `cuMemRelease` and the last unmap until this one is released.
pub fn mem_retain<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    handle: Out<CUmemGenericAllocationHandle>,
    _addr: *mut std::ffi::c_void,
) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS
        && let Some(h) = handle.written()
    {
        e.shim.vmm.lock().retained(h);
    }
    rc
}

/// `cuMemRelease`: a handle still mapped or still retained stays charged until its last unmap
/// and its last release.
pub fn mem_release<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, handle: CUmemGenericAllocationHandle) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS
        && e.shim.vmm.lock().released(handle)
        && let Some(h) = e.region.take(handle)
    {
        h.release();
    }
    rc
}

/// `cuMemMap`: a mapping keeps its physical handle's memory charged.
pub fn mem_map<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    ptr: CUdeviceptr,
    _size: usize,
    _offset: usize,
    handle: CUmemGenericAllocationHandle,
    _flags: u64,
) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS {
        e.shim.vmm.lock().mapped(ptr, handle);
    }
    rc
}

/// `cuMemUnmap`: the last unmap of a handle with no reference left ends its charge.
pub fn mem_unmap<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, ptr: CUdeviceptr, size: usize) -> R {
    let rc = call();
    if rc != R::CUDA_SUCCESS {
        return rc;
    }
    let ended = e.shim.vmm.lock().unmapped(ptr, size as u64);
    for handle in ended {
        if let Some(h) = e.region.take(handle) {
            h.release();
        }
    }
    rc
}

/// Bytes of an array: width × height × depth × channels × element size, with unknown formats
/// counted at the widest element (16 bytes) so they cannot undercharge.
pub(super) fn array_bytes(d: &CUDA_ARRAY3D_DESCRIPTOR) -> u64 {
    let elem = d.Format.channel_bytes().unwrap_or(16) as u64;
    [d.Width as u64, d.Height.max(1) as u64, d.Depth.max(1) as u64, u64::from(d.NumChannels.max(1)), elem]
        .iter()
        .fold(1u64, |acc, x| acc.saturating_mul(*x))
}

/// Shared body of the array creations.
pub(super) fn array<D: Driver>(e: &Enforce<D>, bytes: u64, handle: Out<*mut std::ffi::c_void>, call: impl FnOnce() -> R) -> R {
    if handle.is_null() || bytes == 0 {
        return call();
    }
    let device = match e.current_device() {
        Ok(d) => d,
        Err(rc) => return rc,
    };
    charged(e, device, bytes, call, || handle.written().map_or(0, |h| h as u64))
}

/// `cuArrayCreate_v2`.
pub fn array_create<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, handle: Out<CUarray>, desc: Option<&CUDA_ARRAY_DESCRIPTOR>) -> R {
    array(e, desc.map_or(0, |d| array_bytes(&(*d).into())), handle.erased(), call)
}

/// `cuArray3DCreate_v2`.
pub fn array3d_create<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    handle: Out<CUarray>,
    desc: Option<&CUDA_ARRAY3D_DESCRIPTOR>,
) -> R {
    array(e, desc.map_or(0, array_bytes), handle.erased(), call)
}

/// `cuArrayDestroy`.
pub fn array_destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, handle: CUarray) -> R {
    free_key(e, handle as u64, call)
}

/// `cuMipmappedArrayCreate`: the sum of its levels, each half the previous in every extent.
pub fn mipmapped_create<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    handle: Out<CUmipmappedArray>,
    desc: Option<&CUDA_ARRAY3D_DESCRIPTOR>,
    levels: c_uint,
) -> R {
    let bytes = desc.map_or(0, |d| {
        let mut level = *d;
        let mut total = 0u64;
        for _ in 0..levels.min(32) {
            total = total.saturating_add(array_bytes(&level));
            level.Width = (level.Width / 2).max(1);
            level.Height = if level.Height == 0 { 0 } else { (level.Height / 2).max(1) };
            level.Depth = if level.Depth == 0 { 0 } else { (level.Depth / 2).max(1) };
        }
        total
    });
    array(e, bytes, handle.erased(), call)
}

/// `cuMipmappedArrayDestroy`.
pub fn mipmapped_destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, handle: CUmipmappedArray) -> R {
    free_key(e, handle as u64, call)
}
