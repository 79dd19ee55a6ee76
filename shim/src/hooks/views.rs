//! What the driver says about memory, seen through the quota: total = quota, free = quota −
//! the container's usage (never below zero, never above what the device really has free).
//! Devices without a quota show the physical figures.

use cuda_sys::driver::{CUdevice, CUresult};

use vgpu_limiter::region::quota_view;

use super::args::Out;
use super::{Driver, Enforce, device_index};

/// (total, free) of device `d` as the container sees it, given the device's physical figures;
/// `None` when the device has no quota. Every view (driver and NVML) answers through this. Not
/// a hot path: dead processes' memory is reaped, pool charges are brought in line and this
/// process's unhooked bytes reconciled first, so a view never shows memory that is already
/// back, nor misses memory the driver holds for us.
pub fn container_view<D: Driver>(e: &Enforce<D>, d: usize, phys_total: u64, phys_free: u64) -> Option<(u64, u64)> {
    e.region.reap();
    let _ = super::pools::resync_all(e);
    super::reconcile::at_most_every(e, d, super::reconcile::VIEW_PERIOD_NS);
    let (used, _, quota) = e.region.usage(d);
    Some(quota_view(quota?, used, phys_total, phys_free))
}

/// `cuMemGetInfo_v2`: the current device through its quota.
pub fn mem_get_info<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> CUresult, free: Out<usize>, total: Out<usize>) -> CUresult {
    let rc = call();
    if rc != CUresult::CUDA_SUCCESS {
        return rc;
    }
    let (Some(phys_free), Some(phys_total)) = (free.written(), total.written()) else { return rc };
    let Ok(d) = e.current_device() else { return rc };
    if let Some((t, f)) = container_view(e, d, phys_total as u64, phys_free as u64) {
        total.overwrite(t as usize);
        free.overwrite(f as usize);
    }
    rc
}

/// `cuDeviceTotalMem_v2`: at most the quota.
pub fn device_total_mem<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> CUresult, bytes: Out<usize>, dev: CUdevice) -> CUresult {
    let rc = call();
    if rc != CUresult::CUDA_SUCCESS {
        return rc;
    }
    if let (Some(b), Some(q)) = (bytes.written(), device_index(dev).ok().and_then(|d| e.region.quota(d))) {
        bytes.overwrite((b as u64).min(q) as usize);
    }
    rc
}
