//! What the driver says about memory, seen through the quota: total = quota, free = quota −
//! the container's usage (never below zero, never above what the device really has free).
//! Devices without a quota show the physical figures.
#![allow(unsafe_code)]

use cuda_sys::driver::{CUdevice, CUresult};

use vgpu_limiter::region::{Region, quota_view};

use super::{Gate, NO_DRIVER, REFUSED, current_device, device_index, gate};
use crate::state::Shim;
use crate::table::real;

/// (total, free) of device `d` as the container sees it, given the device's physical figures;
/// `None` when the device has no quota. Every view (driver and NVML) answers through this. Not
/// a hot path: dead processes' memory is reaped and pool charges are brought in line first,
/// so a view never shows memory that is already back.
pub fn container_view(shim: &Shim, region: &Region, d: usize, phys_total: u64, phys_free: u64) -> Option<(u64, u64)> {
    region.reap();
    let _ = super::pools::resync_all(&shim.pools, region);
    let (used, _, quota) = region.usage(d);
    Some(quota_view(quota?, used, phys_total, phys_free))
}

/// `cuMemGetInfo_v2`.
pub unsafe fn mem_get_info(free: *mut usize, total: *mut usize) -> CUresult {
    let Some(f) = real::cuMemGetInfo_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(free, total) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            let rc = forward();
            if rc != CUresult::CUDA_SUCCESS || free.is_null() || total.is_null() {
                return rc;
            }
            let Ok(d) = current_device() else { return rc };
            // SAFETY: the driver just wrote both.
            let (phys_total, phys_free) = unsafe { (*total as u64, *free as u64) };
            if let Some((t, fr)) = container_view(shim, region, d, phys_total, phys_free) {
                // SAFETY: as above.
                unsafe {
                    *total = t as usize;
                    *free = fr as usize;
                }
            }
            rc
        }
    }
}

/// `cuDeviceTotalMem_v2`.
pub unsafe fn device_total_mem(bytes: *mut usize, dev: CUdevice) -> CUresult {
    let Some(f) = real::cuDeviceTotalMem_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(bytes, dev) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(_, region) => {
            let rc = forward();
            if rc != CUresult::CUDA_SUCCESS || bytes.is_null() {
                return rc;
            }
            if let Some(q) = device_index(dev).ok().and_then(|d| region.quota(d)) {
                // SAFETY: the driver just wrote it.
                unsafe { *bytes = (*bytes as u64).min(q) as usize };
            }
            rc
        }
    }
}
