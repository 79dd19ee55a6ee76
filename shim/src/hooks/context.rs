//! Contexts. A context costs device memory of its own (hundreds of MiB on a real GPU); that
//! cost is measured as the change in the device's NVML `used` around the driver's creation
//! call and charged to the container (above the quota if need be: the driver has already
//! taken it, and the views clamp). When a device's last context in this process goes, the
//! driver frees every allocation made in it, and their charges go with it.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::*;

use cuda_sys::driver::*;
use cuda_sys::nvml::{nvmlDevice_t, nvmlMemory_t, nvmlProcessInfo_t, nvmlReturn_t};
use vgpu_limiter::region::Region;

use super::{Gate, NO_DRIVER, REFUSED, device_index, gate};
use crate::state::Shim;
use crate::table::real;

use CUresult as R;

/// A context costing more than this is a measurement disturbed by another process.
const MAX_PLAUSIBLE_COST: u64 = 8 << 30;

/// The UUID of a CUDA device as NVML spells it (`GPU-xxxxxxxx-xxxx-…`).
pub fn uuid_string(dev: c_int) -> Option<String> {
    let f = real::cuDeviceGetUuid_v2()?;
    let mut uuid = CUuuid::default();
    // SAFETY: a valid out-pointer.
    if unsafe { f(&mut uuid, dev) } != R::CUDA_SUCCESS {
        return None;
    }
    let b: Vec<String> = uuid.bytes.iter().map(|x| format!("{:02x}", *x as u8)).collect();
    Some(format!("GPU-{}-{}-{}-{}-{}", b[0..4].concat(), b[4..6].concat(), b[6..8].concat(), b[8..10].concat(), b[10..16].concat()))
}

/// The real NVML's handle for CUDA device `dev` (matched by UUID), initialising the real NVML
/// on first use; `None` if NVML cannot be had.
pub fn nvml_device(dev: c_int) -> Option<nvmlDevice_t> {
    static NVML_UP: OnceLock<bool> = OnceLock::new();
    let up = *NVML_UP.get_or_init(|| {
        // SAFETY: initialising the real NVML (reference-counted; harmless to the program).
        real::nvmlInit_v2().is_some_and(|f| unsafe { f() } == nvmlReturn_t::NVML_SUCCESS)
    });
    if !up {
        return None;
    }
    let uuid = std::ffi::CString::new(uuid_string(dev)?).ok()?;
    let mut h: nvmlDevice_t = std::ptr::null_mut();
    // SAFETY: a NUL-terminated UUID and a valid out-pointer.
    (unsafe { real::nvmlDeviceGetHandleByUUID()?(uuid.as_ptr(), &mut h) } == nvmlReturn_t::NVML_SUCCESS).then_some(h)
}

/// What the real NVML says device `dev` holds: (all processes, this process if listed).
fn nvml_usage(dev: c_int) -> Option<(u64, Option<u64>)> {
    let h = nvml_device(dev)?;
    let mut m = nvmlMemory_t::default();
    // SAFETY: a handle NVML gave us and a valid out-pointer.
    if unsafe { real::nvmlDeviceGetMemoryInfo()?(h, &mut m) } != nvmlReturn_t::NVML_SUCCESS {
        return None;
    }
    let mine = real::nvmlDeviceGetComputeRunningProcesses_v3().and_then(|f| {
        let mut infos = [nvmlProcessInfo_t::default(); 64];
        let mut n = infos.len() as u32;
        // SAFETY: a buffer of `n` entries and a valid count pointer.
        if unsafe { f(h, &mut n, infos.as_mut_ptr()) } != nvmlReturn_t::NVML_SUCCESS {
            return None;
        }
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() } as u32;
        infos[..(n as usize).min(infos.len())].iter().find(|p| p.pid == me).map(|p| p.usedGpuMemory)
    });
    Some((m.used, mine))
}

/// Runs a context-creating driver call and charges what it cost: the growth of this process's
/// own NVML usage when NVML lists it (unaffected by other processes), else the growth of the
/// device's (when NVML reports another PID namespace's numbers). Returns (rc, bytes charged).
fn create_charged(region: &Region, dev: c_int, call: impl FnOnce() -> R) -> (R, u64) {
    let Ok(d) = device_index(dev) else { return (call(), 0) };
    let before = nvml_usage(dev);
    let rc = call();
    if rc != R::CUDA_SUCCESS {
        return (rc, 0);
    }
    let grown = match (before, nvml_usage(dev)) {
        (Some((_, mine_before)), Some((_, Some(mine_after)))) => mine_after.checked_sub(mine_before.unwrap_or(0)),
        (Some((device_before, _)), Some((device_after, None))) => device_after.checked_sub(device_before),
        _ => None,
    };
    let cost = grown.filter(|c| *c <= MAX_PLAUSIBLE_COST).unwrap_or(0);
    region.force_charge(d, cost);
    (rc, cost)
}

/// A context of device `d` is gone: its cost and, with the last one, its allocations return.
fn context_gone(shim: &Shim, region: &Region, d: usize, cost: u64) {
    region.uncharge(d, cost);
    let prev = shim.contexts.live[d].fetch_update(AcqRel, Acquire, |n| n.checked_sub(1)).unwrap_or(0);
    if prev == 1 {
        region.release_device(d);
    }
}

/// `cuDevicePrimaryCtxRetain`: the first retain creates the context.
pub unsafe fn primary_retain(pctx: *mut CUcontext, dev: CUdevice) -> R {
    let Some(f) = real::cuDevicePrimaryCtxRetain() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(pctx, dev) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            let Ok(d) = device_index(dev) else {
                return forward();
            };
            if shim.contexts.primary_refs[d].load(Acquire) > 0 {
                let rc = forward();
                if rc == R::CUDA_SUCCESS {
                    shim.contexts.primary_refs[d].fetch_add(1, AcqRel);
                }
                return rc;
            }
            let (rc, cost) = create_charged(region, dev, forward);
            if rc == R::CUDA_SUCCESS {
                if shim.contexts.primary_refs[d].fetch_add(1, AcqRel) == 0 {
                    shim.contexts.primary_cost[d].store(cost, Release);
                    shim.contexts.live[d].fetch_add(1, AcqRel);
                } else {
                    region.uncharge(d, cost); // another thread created it first
                }
            }
            rc
        }
    }
}

/// The primary context of `d` was destroyed by the driver.
fn primary_gone(shim: &Shim, region: &Region, d: usize) {
    let cost = shim.contexts.primary_cost[d].swap(0, AcqRel);
    context_gone(shim, region, d, cost);
}

/// `cuDevicePrimaryCtxRelease_v2`: the last release destroys the context.
pub unsafe fn primary_release(dev: CUdevice) -> R {
    let Some(f) = real::cuDevicePrimaryCtxRelease_v2() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's argument.
    let rc = unsafe { f(dev) };
    if let (R::CUDA_SUCCESS, Gate::Enforce(shim, region), Ok(d)) = (rc, gate(), device_index(dev)) {
        let prev = shim.contexts.primary_refs[d].fetch_update(AcqRel, Acquire, |n| n.checked_sub(1)).unwrap_or(0);
        if prev == 1 {
            primary_gone(shim, region, d);
        }
    }
    rc
}

/// `cuDevicePrimaryCtxReset_v2`: destroys the primary context whatever its count.
pub unsafe fn primary_reset(dev: CUdevice) -> R {
    let Some(f) = real::cuDevicePrimaryCtxReset_v2() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's argument.
    let rc = unsafe { f(dev) };
    if let (R::CUDA_SUCCESS, Gate::Enforce(shim, region), Ok(d)) = (rc, gate(), device_index(dev))
        && shim.contexts.primary_refs[d].swap(0, AcqRel) > 0
    {
        primary_gone(shim, region, d);
    }
    rc
}

/// Shared body of the `cuCtxCreate` variants.
///
/// # Safety
/// `pctx` is null or valid for reads after a successful `forward`.
unsafe fn create(pctx: *mut CUcontext, dev: CUdevice, forward: impl FnOnce() -> R) -> R {
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            let (rc, cost) = create_charged(region, dev, forward);
            if rc == R::CUDA_SUCCESS
                && !pctx.is_null()
                && let Ok(d) = device_index(dev)
            {
                // SAFETY: the driver wrote it.
                let ctx = unsafe { *pctx } as usize;
                shim.contexts.created.lock().insert(ctx, (d, cost));
                shim.contexts.live[d].fetch_add(1, AcqRel);
            }
            rc
        }
    }
}

/// `cuCtxCreate_v2`.
pub unsafe fn create_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> R {
    let Some(f) = real::cuCtxCreate_v2() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { create(pctx, dev, || f(pctx, flags, dev)) }
}

/// `cuCtxCreate_v3`.
pub unsafe fn create_v3(pctx: *mut CUcontext, params: *mut CUexecAffinityParam, num: c_int, flags: c_uint, dev: CUdevice) -> R {
    let Some(f) = real::cuCtxCreate_v3() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { create(pctx, dev, || f(pctx, params, num, flags, dev)) }
}

/// `cuCtxCreate_v4`.
pub unsafe fn create_v4(pctx: *mut CUcontext, params: *mut CUctxCreateParams, flags: c_uint, dev: CUdevice) -> R {
    let Some(f) = real::cuCtxCreate_v4() else {
        return NO_DRIVER;
    };
    // SAFETY: forwarding the caller's arguments.
    unsafe { create(pctx, dev, || f(pctx, params, flags, dev)) }
}

/// `cuCtxDestroy_v2`.
pub unsafe fn destroy(ctx: CUcontext) -> R {
    let Some(f) = real::cuCtxDestroy_v2() else {
        return NO_DRIVER;
    };
    match gate() {
        // SAFETY: forwarding the caller's argument.
        Gate::Forward => unsafe { f(ctx) },
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, region) => {
            let entry = shim.contexts.created.lock().remove(&(ctx as usize));
            // SAFETY: forwarding the caller's argument.
            let rc = unsafe { f(ctx) };
            match entry {
                Some((d, cost)) if rc == R::CUDA_SUCCESS => context_gone(shim, region, d, cost),
                Some(e) => {
                    shim.contexts.created.lock().insert(ctx as usize, e);
                }
                None => {}
            }
            rc
        }
    }
}
