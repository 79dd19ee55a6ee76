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
use cuda_sys::nvml::{nvmlDevice_t, nvmlReturn_t};
use vgpu_limiter::{accounting, hostpid};

use super::args::Out;
use super::{Driver, Enforce, device_index};
use crate::log;
use crate::table::real;

use CUresult as R;

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

/// Runs a context-creating driver call and charges what it cost (see
/// [`accounting::context_cost`]); the first creation also finds this process's host PID
/// ([`super::hostpid`]), `ctx` giving the new context for its probes. Returns (rc, bytes charged).
fn create_charged<D: Driver>(e: &Enforce<D>, dev: c_int, ctx: impl FnOnce() -> Option<CUcontext>, call: impl FnOnce() -> R) -> (R, u64) {
    let Ok(d) = device_index(dev) else { return (call(), 0) };
    let known = super::hostpid::without_nvml(e);
    let ((rc, before, after, listed), may_discover) = super::hostpid::creating(e, d, || {
        let listing = std::time::Instant::now();
        let before = e.driver.nvml_list(dev);
        let listed_before = listing.elapsed();
        let rc = call();
        if rc != R::CUDA_SUCCESS {
            return (rc, None, None, listed_before);
        }
        let listing = std::time::Instant::now();
        let after = e.driver.nvml_list(dev);
        (rc, before, after, listed_before + listing.elapsed())
    });
    if rc != R::CUDA_SUCCESS {
        return (rc, 0);
    }
    let me = known
        .or_else(|| super::hostpid::known(e))
        .or_else(|| may_discover.then(|| super::hostpid::discover(e, dev, ctx(), before.as_ref(), after.as_ref(), listed)).flatten());
    let cost = accounting::context_cost(hostpid::usage(before.as_ref(), me), hostpid::usage(after.as_ref(), me));
    e.region.force_charge(d, cost);
    if e.region.device_uuid(d).is_none()
        && let Some(uuid) = e.driver.device_uuid(dev)
    {
        e.region.set_device_uuid(d, uuid); // for the node tools' labels
    }
    (rc, cost)
}

/// A context of device `d` is gone: its cost and, with the last one, its allocations return.
fn context_gone<D: Driver>(e: &Enforce<D>, d: usize, cost: u64) {
    e.shim.priority.context_gone(d);
    e.region.uncharge(d, cost);
    let prev = e.shim.contexts.live[d].fetch_update(AcqRel, Acquire, |n| n.checked_sub(1)).unwrap_or(0);
    if prev == 1 {
        e.region.release_device(d);
    }
}

/// `cuDevicePrimaryCtxRetain`: the first retain creates the context.
pub fn primary_retain<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pctx: Out<CUcontext>, dev: CUdevice) -> R {
    let Ok(d) = device_index(dev) else {
        return call();
    };
    let book = &e.shim.contexts;
    if book.primary_refs[d].load(Acquire) > 0 {
        let rc = call();
        if rc == R::CUDA_SUCCESS {
            book.primary_refs[d].fetch_add(1, AcqRel);
        }
        return rc;
    }
    let (rc, cost) = create_charged(e, dev, || pctx.written(), call);
    if rc == R::CUDA_SUCCESS {
        if book.primary_refs[d].fetch_add(1, AcqRel) == 0 {
            book.primary_cost[d].store(cost, Release);
            book.live[d].fetch_add(1, AcqRel);
        } else {
            e.region.uncharge(d, cost); // another thread created it first
        }
    }
    rc
}

/// The primary context of `d` was destroyed by the driver.
fn primary_gone<D: Driver>(e: &Enforce<D>, d: usize) {
    let refunds = e.shim.limits.lock().primary_gone(d);
    refund(e, refunds);
    let cost = e.shim.contexts.primary_cost[d].swap(0, AcqRel);
    context_gone(e, d, cost);
}

/// `cuDevicePrimaryCtxRelease_v2`: the last release destroys the context.
pub fn primary_release<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dev: CUdevice) -> R {
    let rc = call();
    if let (R::CUDA_SUCCESS, Ok(d)) = (rc, device_index(dev)) {
        let prev = e.shim.contexts.primary_refs[d].fetch_update(AcqRel, Acquire, |n| n.checked_sub(1)).unwrap_or(0);
        if prev == 1 {
            primary_gone(e, d);
        }
    }
    rc
}

/// `cuDevicePrimaryCtxReset_v2`: destroys the primary context whatever its count.
pub fn primary_reset<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, dev: CUdevice) -> R {
    let rc = call();
    if let (R::CUDA_SUCCESS, Ok(d)) = (rc, device_index(dev))
        && e.shim.contexts.primary_refs[d].swap(0, AcqRel) > 0
    {
        primary_gone(e, d);
    }
    rc
}

/// Shared body of the `cuCtxCreate` variants (`is_context`: the handle is a `CUcontext`, which
/// a host-PID probe may use; a green context's is not).
fn create<D: Driver, T>(e: &Enforce<D>, pctx: Out<*mut T>, dev: CUdevice, is_context: bool, call: impl FnOnce() -> R) -> R {
    let (rc, cost) = create_charged(e, dev, || pctx.written().filter(|_| is_context).map(|c| c.cast()), call);
    if rc == R::CUDA_SUCCESS
        && let (Some(ctx), Ok(d)) = (pctx.written(), device_index(dev))
    {
        e.shim.contexts.created.lock().insert(ctx as usize, (d, cost));
        e.shim.contexts.live[d].fetch_add(1, AcqRel);
    }
    rc
}

/// `cuCtxCreate_v2`.
pub fn create_v2<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, pctx: Out<CUcontext>, _flags: c_uint, dev: CUdevice) -> R {
    create(e, pctx, dev, true, call)
}

/// `cuCtxCreate_v3`.
pub fn create_v3<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    pctx: Out<CUcontext>,
    _params: *mut CUexecAffinityParam,
    _num: c_int,
    _flags: c_uint,
    dev: CUdevice,
) -> R {
    create(e, pctx, dev, true, call)
}

/// `cuCtxCreate_v4`.
pub fn create_v4<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    pctx: Out<CUcontext>,
    _params: *mut CUctxCreateParams,
    _flags: c_uint,
    dev: CUdevice,
) -> R {
    create(e, pctx, dev, true, call)
}

/// `cuCtxDestroy_v2`.
pub fn destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, ctx: CUcontext) -> R {
    destroy_keyed(e, ctx as usize, call)
}

/// `cuGreenCtxCreate` (CUDA 12.4): charged as a created context, what its creation cost the
/// process, refunded at `cuGreenCtxDestroy`. Allocations in it go through the hooks as in any
/// context (its `CUcontext`, from `cuCtxFromGreenCtx`, is current then).
pub fn green_create<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    green: Out<CUgreenCtx>,
    _desc: CUdevResourceDesc,
    dev: CUdevice,
    _flags: c_uint,
) -> R {
    create(e, green, dev, false, call)
}

/// `cuGreenCtxDestroy`.
pub fn green_destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, green: CUgreenCtx) -> R {
    destroy_keyed(e, green as usize, call)
}

/// Shared body of the destroys: the context (created or green) by its handle.
fn destroy_keyed<D: Driver>(e: &Enforce<D>, key: usize, call: impl FnOnce() -> R) -> R {
    let entry = e.shim.contexts.created.lock().remove(&key);
    let rc = call();
    match entry {
        Some((d, cost)) if rc == R::CUDA_SUCCESS => {
            let refunds = e.shim.limits.lock().context_gone(key as u64);
            refund(e, refunds);
            context_gone(e, d, cost)
        }
        Some(kept) => {
            e.shim.contexts.created.lock().insert(key, kept);
        }
        None => {}
    }
    rc
}

/// Gives back what raised limits of a destroyed context were charged.
fn refund<D: Driver>(e: &Enforce<D>, refunds: Vec<(usize, u64)>) {
    for (d, bytes) in refunds {
        e.region.uncharge(d, bytes);
    }
}

/// The limits that reserve device memory, as vgpu counts them.
fn limit_kind(limit: CUlimit) -> Option<accounting::LimitKind> {
    match limit {
        CUlimit::CU_LIMIT_STACK_SIZE => Some(accounting::LimitKind::Stack),
        CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE => Some(accounting::LimitKind::MallocHeap),
        CUlimit::CU_LIMIT_PRINTF_FIFO_SIZE => Some(accounting::LimitKind::PrintfFifo),
        _ => None,
    }
}

/// `cuCtxSetLimit`: a larger stack (reserved for every resident thread), device heap or
/// `printf` FIFO is device memory. The growth over what the limit reserves now is reserved in
/// the quota first (refused: `CUDA_ERROR_OUT_OF_MEMORY`, nothing forwarded); after the call
/// the value the driver really set (`cuCtxGetLimit`: it may round) decides what stays charged,
/// above what the limit reserved before the program first changed it (that much is part of the
/// context's own cost). A driver that rounded past the quota gets the old value back and the
/// call is refused. Refunded when the context goes.
pub fn set_limit<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, limit: CUlimit, value: usize) -> R {
    let Some(kind) = limit_kind(limit) else { return call() };
    let (Ok(device), Some(ctx), Some(old)) = (e.current_device(), e.driver.current_context(), e.driver.ctx_limit(limit)) else {
        return call(); // no context: the driver reports it
    };
    let Some(threads) = e.driver.resident_threads(device) else { return call() };
    let bytes = |v: u64| accounting::limit_bytes(kind, v, threads);
    let primary = !e.shim.contexts.created.lock().contains_key(&(ctx as usize));
    let want = {
        let mut book = e.shim.limits.lock();
        book.entry(ctx, kind, device, primary, bytes(old));
        book.room(ctx, kind, bytes(value as u64))
    };
    let reservation = match e.region.reserve_or(device, want, || super::pools::resync_all(e)) {
        Ok(r) => r,
        Err(refused) => {
            log::warn(format_args!(
                "device {device}: out of quota: refusing the {kind:?} limit {value} ({} more bytes; {} of {} bytes in use)",
                refused.requested, refused.used, refused.quota
            ));
            return R::CUDA_ERROR_OUT_OF_MEMORY;
        }
    };
    let rc = call();
    if rc != R::CUDA_SUCCESS {
        return rc; // the reservation rolls back
    }
    let now = bytes(e.driver.ctx_limit(limit).unwrap_or(value as u64));
    let held = reservation.bytes();
    let delta = e.shim.limits.lock().set(ctx, kind, now);
    match delta {
        accounting::Delta::Charge(n) => {
            let mut r = reservation;
            r.shrink_to(n.min(held));
            let extra = n.saturating_sub(held);
            if extra > 0 && e.region.reserve(device, extra).map(|x| x.keep()).is_err() {
                drop(r);
                let _ = e.driver.set_ctx_limit(limit, old);
                let _ = e.shim.limits.lock().set(ctx, kind, bytes(old));
                log::warn(format_args!("device {device}: out of quota: the driver set the {kind:?} limit beyond {value}; restored {old}"));
                return R::CUDA_ERROR_OUT_OF_MEMORY;
            }
            r.keep();
        }
        accounting::Delta::Uncharge(n) => e.region.uncharge(device, n),
        accounting::Delta::None => {}
    }
    rc
}
