//! What the driver says about memory, seen through the quota: total = quota, free = quota −
//! the container's usage (never below zero, never above what the device really has free).
//! Devices without a quota show the physical figures.
#![allow(unsafe_code)]

use cuda_sys::driver::{CUdevice, CUresult};

use super::{Gate, NO_DRIVER, REFUSED, current_device, device_index, gate};
use crate::table::real;

/// (total, free) of a device with quota `quota` and usage `used`, given the physical figures.
pub fn quota_view(quota: u64, used: u64, phys_total: u64, phys_free: u64) -> (u64, u64) {
    let total = quota.min(phys_total);
    let free = total.saturating_sub(used).min(phys_free);
    (total, free)
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
        Gate::Enforce(_, region) => {
            let rc = forward();
            if rc != CUresult::CUDA_SUCCESS || free.is_null() || total.is_null() {
                return rc;
            }
            let Ok(d) = current_device() else { return rc };
            let (used, _, quota) = region.usage(d);
            if let Some(q) = quota {
                // SAFETY: the driver just wrote both.
                let (t, fr) = unsafe { quota_view(q, used, *total as u64, *free as u64) };
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

#[cfg(test)]
mod tests {
    use super::quota_view;

    #[test]
    fn views_clamp() {
        assert_eq!(quota_view(4 << 30, 1 << 30, 80 << 30, 70 << 30), (4 << 30, 3 << 30));
        assert_eq!(quota_view(4 << 30, 5 << 30, 80 << 30, 70 << 30), (4 << 30, 0), "usage above the quota");
        assert_eq!(quota_view(4 << 30, 0, 80 << 30, 1 << 30), (4 << 30, 1 << 30), "the device is fuller");
        assert_eq!(quota_view(100 << 30, 0, 80 << 30, 80 << 30), (80 << 30, 80 << 30), "quota above the card");
    }
}
