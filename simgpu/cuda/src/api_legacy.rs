//! The legacy ABI: the unversioned names `libcuda` still exports for programs built against
//! CUDA before 3.2 (32-bit sizes and device pointers: `cuMemAlloc`, `cuMemAllocPitch`,
//! `cuMemFree`, `cuMemGetInfo`, `cuDeviceTotalMem`, `cuArrayCreate`, `cuArray3DCreate`, and
//! `cuCtxCreate`), 4.0 (`cuCtxDestroy`) and 11.0 (`cuDevicePrimaryCtxRelease`, `_Reset`).
//! Their declarations are cuda.h's (visible with `__CUDA_API_VERSION_INTERNAL`); each behaves
//! as its current variant, within its types:
//!
//! * sizes wider than 32 bits are clamped to `u32::MAX` in `cuMemGetInfo` and
//!   `cuDeviceTotalMem` (what programs using these names on large GPUs observe);
//! * a 32-bit device pointer must hold the allocation's address, so `cuMemAlloc` and
//!   `cuMemAllocPitch` map below 4 GiB (x86-64; elsewhere they answer out of memory). Where
//!   the real driver places such allocations is not documented.
//!
//! `cuGetProcAddress` hands these out for versions below the current variant's (see
//! `proc_address`).
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::c_uint;

use cuda_sys::driver::{CUDA_ARRAY_DESCRIPTOR_v1, CUDA_ARRAY3D_DESCRIPTOR_v1, CUarray, CUcontext, CUdevice, CUdeviceptr_v1, CUresult};

use crate::api_memory::{alloc_device_at, array_bytes, create_array, free_alloc};
use crate::state::{self, AllocKind, driver, handle, map_low32};
use crate::{exports, out, read};
use CUresult as R;

/// A size as the 32-bit ABI reports it.
fn clamp32(v: usize) -> c_uint {
    c_uint::try_from(v).unwrap_or(c_uint::MAX)
}

/// Allocates `bytes` below 4 GiB for a `CUdeviceptr_v1`.
fn alloc_low(bytes: usize, kind: AllocKind) -> Result<CUdeviceptr_v1, R> {
    let d = driver()?;
    let addr = alloc_device_at(d, &mut d.lock(), bytes, kind, map_low32)?;
    Ok(CUdeviceptr_v1::try_from(addr).expect("mapped below 4 GiB"))
}

exports! {
    fn cuDeviceTotalMem(bytes: *mut c_uint, dev: CUdevice) {
        let mut wide = 0usize;
        match crate::cuDeviceTotalMem_v2(&mut wide, dev) {
            R::CUDA_SUCCESS => out(bytes, clamp32(wide)),
            rc => Err(rc),
        }
    }

    fn cuMemGetInfo(free: *mut c_uint, total: *mut c_uint) {
        let (mut f, mut t) = (0usize, 0usize);
        match crate::cuMemGetInfo_v2(&mut f, &mut t) {
            R::CUDA_SUCCESS => {
                out(free, clamp32(f))?;
                out(total, clamp32(t))
            }
            rc => Err(rc),
        }
    }

    fn cuCtxCreate(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) {
        match crate::cuCtxCreate_v2(pctx, flags, dev) {
            R::CUDA_SUCCESS => Ok(()),
            rc => Err(rc),
        }
    }

    fn cuCtxDestroy(ctx: CUcontext) {
        match crate::cuCtxDestroy_v2(ctx) {
            R::CUDA_SUCCESS => Ok(()),
            rc => Err(rc),
        }
    }

    fn cuDevicePrimaryCtxRelease(dev: CUdevice) {
        match crate::cuDevicePrimaryCtxRelease_v2(dev) {
            R::CUDA_SUCCESS => Ok(()),
            rc => Err(rc),
        }
    }

    fn cuDevicePrimaryCtxReset(dev: CUdevice) {
        match crate::cuDevicePrimaryCtxReset_v2(dev) {
            R::CUDA_SUCCESS => Ok(()),
            rc => Err(rc),
        }
    }

    fn cuMemAlloc(dptr: *mut CUdeviceptr_v1, bytesize: c_uint) {
        if dptr.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        out(dptr, alloc_low(bytesize as usize, AllocKind::Device)?)
    }

    /// As `cuMemAllocPitch_v2`: the pitch is the row width rounded up to 512 bytes.
    fn cuMemAllocPitch(dptr: *mut CUdeviceptr_v1, p_pitch: *mut c_uint, width: c_uint, height: c_uint, element_size: c_uint) {
        if dptr.is_null() || p_pitch.is_null() || width == 0 || height == 0 || !matches!(element_size, 4 | 8 | 16) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let pitch = width.checked_next_multiple_of(512).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        let bytes = (pitch as usize).checked_mul(height as usize).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
        out(dptr, alloc_low(bytes, AllocKind::Pitch)?)?;
        out(p_pitch, pitch)
    }

    fn cuMemFree(dptr: CUdeviceptr_v1) {
        let d = driver()?;
        let mut inner = d.lock();
        state::current(&inner)?;
        if free_alloc(d, &mut inner, u64::from(dptr)) { Ok(()) } else { Err(R::CUDA_ERROR_INVALID_VALUE) }
    }

    fn cuArrayCreate(p_handle: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR_v1) {
        let d = driver()?;
        let desc = read(desc)?;
        if p_handle.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        out(p_handle, handle(create_array(d, array_bytes(&desc.into())?)?))
    }

    fn cuArray3DCreate(p_handle: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR_v1) {
        let d = driver()?;
        let desc = read(desc)?;
        if p_handle.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        out(p_handle, handle(create_array(d, array_bytes(&desc.into())?)?))
    }
}
