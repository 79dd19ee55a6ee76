//! The legacy ABI: the unversioned names `libcuda` still exports for programs built against
//! CUDA before 3.2 (32-bit sizes and device pointers), reached by linking, by `dlsym` of the
//! plain name, or by `cuGetProcAddress` with an old version. Each is charged and viewed as its
//! current variant is, within its types: the 32-bit views clamp at `u32::MAX`. The context
//! functions of this ABI (`cuCtxCreate`, `cuCtxDestroy`, `cuDevicePrimaryCtxRelease`,
//! `_Reset`) share the current variants' bodies: their signatures are the same.

use std::ffi::c_uint;

use cuda_sys::driver::{CUDA_ARRAY_DESCRIPTOR_v1, CUDA_ARRAY3D_DESCRIPTOR_v1, CUarray, CUdevice, CUdeviceptr_v1, CUresult};

use super::args::Out;
use super::memory::{array, array_bytes, free_key, on_current_device, pitched};
use super::views::container_view;
use super::{Driver, Enforce, device_index};

use CUresult as R;

/// A size as the 32-bit ABI reports it.
fn clamp32(v: u64) -> c_uint {
    c_uint::try_from(v).unwrap_or(c_uint::MAX)
}

/// `cuMemGetInfo` (32-bit): the quota's view, clamped.
pub fn mem_get_info<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, free: Out<c_uint>, total: Out<c_uint>) -> R {
    let rc = call();
    if rc != R::CUDA_SUCCESS {
        return rc;
    }
    let (Some(phys_free), Some(phys_total)) = (free.written(), total.written()) else { return rc };
    let Ok(d) = e.current_device() else { return rc };
    if let Some((t, f)) = container_view(e, d, u64::from(phys_total), u64::from(phys_free)) {
        total.overwrite(clamp32(t));
        free.overwrite(clamp32(f));
    }
    rc
}

/// `cuDeviceTotalMem` (32-bit): at most the quota.
pub fn device_total_mem<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, bytes: Out<c_uint>, dev: CUdevice) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS
        && let (Some(b), Some(q)) = (bytes.written(), device_index(dev).ok().and_then(|d| e.region.quota(d)))
    {
        bytes.overwrite(clamp32(u64::from(b).min(q)));
    }
    rc
}

/// `cuMemAlloc` (32-bit): charged before the call, as `cuMemAlloc_v2`.
pub fn mem_alloc<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dptr: Out<CUdeviceptr_v1>, bytesize: c_uint) -> R {
    on_current_device(e, u64::from(bytesize), dptr, call)
}

/// `cuMemAllocPitch` (32-bit): the worst case reserved, pitch × height kept, as
/// `cuMemAllocPitch_v2`.
pub fn mem_alloc_pitch<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    dptr: Out<CUdeviceptr_v1>,
    pitch: Out<c_uint>,
    width: c_uint,
    height: c_uint,
    _elem: c_uint,
) -> R {
    let written = || (dptr.written().map_or(0, u64::from), pitch.written().map_or(u64::MAX, u64::from));
    pitched(e, call, dptr.is_null() || pitch.is_null(), u64::from(width), u64::from(height), written)
}

/// `cuMemFree` (32-bit).
pub fn mem_free<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dptr: CUdeviceptr_v1) -> R {
    free_key(e, u64::from(dptr), call)
}

/// `cuArrayCreate` (32-bit extents).
pub fn array_create<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    handle: Out<CUarray>,
    desc: Option<&CUDA_ARRAY_DESCRIPTOR_v1>,
) -> R {
    array(e, desc.map_or(0, |d| array_bytes(&(*d).into())), handle.erased(), call)
}

/// `cuArray3DCreate` (32-bit extents).
pub fn array3d_create<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    handle: Out<CUarray>,
    desc: Option<&CUDA_ARRAY3D_DESCRIPTOR_v1>,
) -> R {
    array(e, desc.map_or(0, |d| array_bytes(&(*d).into())), handle.erased(), call)
}
