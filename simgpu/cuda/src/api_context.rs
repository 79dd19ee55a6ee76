//! Primary and created contexts, the context stack, context synchronisation.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{c_int, c_uint};

use cuda_sys::driver::{CUcontext, CUctxCreateParams, CUdevice, CUexecAffinityParam, CUlimit as L, CUresult};

use crate::api_memory::{free_alloc, trim_pools};
use crate::state::{self, Ctx, Driver, Inner, Limits, driver, handle};
use crate::{exports, out};
use CUresult as R;

/// Creates a context on `ordinal`, charging the device a context's memory.
pub(crate) fn create_ctx(d: &Driver, inner: &mut Inner, ordinal: c_int, primary: bool) -> Result<u64, R> {
    let dev = d.physical(ordinal)?;
    if !d.machine.charge(dev, d.cfg.context_memory) {
        return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
    }
    d.machine.context_created(dev);
    let c = d.new_id();
    let limits = Default::default();
    inner
        .contexts
        .insert(c, Ctx { ordinal: ordinal as u32, dev, primary, null_stream: Default::default(), last: Default::default(), limits });
    Ok(c)
}

/// Destroys a context and everything it owns, as the real driver does: its allocations are
/// freed and its streams, events, modules and arrays become invalid handles.
pub(crate) fn destroy_ctx(d: &Driver, inner: &mut Inner, c: u64) {
    let Some(ctx) = inner.contexts.remove(&c) else {
        return;
    };
    let addrs: Vec<u64> = inner.allocs.iter().filter(|(_, a)| a.ctx == c).map(|(k, _)| *k).collect();
    for a in addrs {
        free_alloc(d, inner, a);
    }
    inner.streams.retain(|_, s| s.ctx != c);
    inner.events.retain(|_, e| e.ctx != c);
    let globals: u64 = inner.modules.values().filter(|m| m.ctx == c).map(|m| m.globals).sum();
    d.machine.uncharge(ctx.dev, globals);
    inner.modules.retain(|_, m| m.ctx != c);
    for lib in inner.libraries.values_mut() {
        lib.modules.remove(&c);
    }
    inner.functions.retain(|_, f| f.ctx != c);
    let arrays: Vec<u64> = inner.arrays.iter().filter(|(_, a)| a.ctx == c).map(|(k, _)| *k).collect();
    for a in arrays {
        if let Some(arr) = inner.arrays.remove(&a) {
            d.machine.uncharge(arr.dev, arr.bytes);
        }
    }
    d.machine.uncharge(ctx.dev, d.cfg.context_memory + limits_extra(d, &ctx.limits));
    d.machine.context_destroyed(ctx.dev);
    state::forget_current(c);
}

/// Resident threads of a device: its SMs × 2048 (`MAX_THREADS_PER_MULTIPROCESSOR`), each of
/// which the driver gives a stack.
fn resident_threads(d: &Driver) -> u64 {
    u64::from(d.cfg.sms) * 2048
}

/// Memory a context's limits take beyond the defaults (which its creation's
/// `SIMGPU_CONTEXT_MEMORY` covers).
fn limits_extra(d: &Driver, l: &Limits) -> u64 {
    let threads = resident_threads(d);
    l.bytes(threads).saturating_sub(Limits::default().bytes(threads))
}

/// `cuCtxSetLimit` on the current context, as NVIDIA documents each limit: the stack size is
/// rounded up to 16 bytes (the driver "is free to modify the requested value"; `cuCtxGetLimit`
/// tells what was set); memory a larger stack, heap or FIFO needs is taken from the device
/// (`CUDA_ERROR_OUT_OF_MEMORY`, limit unchanged, when it cannot give it) and a smaller one
/// gives it back; the device-runtime sync depth is not supported at compute capability 9.0
/// (`CUDA_ERROR_UNSUPPORTED_LIMIT`); the CIG shared-memory size and enablement are read-only.
/// Not modelled: the memory a larger pending-launch count reserves, and the rule that the heap
/// and FIFO must be set before a kernel using them runs.
fn set_limit(limit: L, value: usize) -> Result<(), R> {
    let d = driver()?;
    let mut inner = d.lock();
    let c = state::current(&inner)?;
    let mut new = inner.contexts[&c].limits;
    let v = value as u64;
    match limit {
        L::CU_LIMIT_STACK_SIZE => new.stack = v.checked_next_multiple_of(16).ok_or(R::CUDA_ERROR_INVALID_VALUE)?,
        L::CU_LIMIT_PRINTF_FIFO_SIZE => new.printf_fifo = v,
        L::CU_LIMIT_MALLOC_HEAP_SIZE => new.malloc_heap = v,
        L::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT => new.pending_launches = v,
        L::CU_LIMIT_MAX_L2_FETCH_GRANULARITY => new.l2_fetch = v.min(128),
        L::CU_LIMIT_PERSISTING_L2_CACHE_SIZE => new.persisting_l2 = v,
        L::CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED => new.cig_fallback = u64::from(v != 0),
        L::CU_LIMIT_SHMEM_SIZE | L::CU_LIMIT_CIG_ENABLED => return Err(R::CUDA_ERROR_INVALID_VALUE),
        _ => return Err(R::CUDA_ERROR_UNSUPPORTED_LIMIT),
    }
    change_limits(d, &mut inner, c, new)
}

/// Gives context `c` the limits `new`, taking from its device what they need beyond the old
/// ones (`CUDA_ERROR_OUT_OF_MEMORY`, nothing changed, when it cannot) or giving back what they
/// no longer need.
pub(crate) fn change_limits(d: &Driver, inner: &mut Inner, c: u64, new: Limits) -> Result<(), R> {
    let ctx = inner.contexts.get_mut(&c).ok_or(R::CUDA_ERROR_INVALID_CONTEXT)?;
    let (before, after) = (limits_extra(d, &ctx.limits), limits_extra(d, &new));
    if after > before && !d.machine.charge(ctx.dev, after - before) {
        return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
    }
    if before > after {
        d.machine.uncharge(ctx.dev, before - after);
    }
    ctx.limits = new;
    Ok(())
}

/// Before a launch of a kernel whose frame needs `local` bytes per thread: the driver "automatically
/// increases the per-thread stack size for each kernel launch as needed" and "this size isn't
/// reset back" (`cuCtxSetLimit`, `CU_LIMIT_STACK_SIZE`). The memory comes from the device; when
/// it cannot give it the launch fails with `CUDA_ERROR_OUT_OF_MEMORY` (the code a real driver
/// answers is not documented).
pub(crate) fn grow_stack(d: &Driver, inner: &mut Inner, c: u64, local: u64) -> Result<(), R> {
    let Some(ctx) = inner.contexts.get(&c) else { return Err(R::CUDA_ERROR_INVALID_CONTEXT) };
    if local <= ctx.limits.stack {
        return Ok(());
    }
    let stack = local.checked_next_multiple_of(16).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
    change_limits(d, inner, c, Limits { stack, ..ctx.limits })
}

fn get_limit(value: *mut usize, limit: L) -> Result<(), R> {
    let d = driver()?;
    let inner = d.lock();
    let l = inner.contexts[&state::current(&inner)?].limits;
    let v = match limit {
        L::CU_LIMIT_STACK_SIZE => l.stack,
        L::CU_LIMIT_PRINTF_FIFO_SIZE => l.printf_fifo,
        L::CU_LIMIT_MALLOC_HEAP_SIZE => l.malloc_heap,
        L::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT => l.pending_launches,
        L::CU_LIMIT_MAX_L2_FETCH_GRANULARITY => l.l2_fetch,
        L::CU_LIMIT_PERSISTING_L2_CACHE_SIZE => l.persisting_l2,
        L::CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED => l.cig_fallback,
        L::CU_LIMIT_SHMEM_SIZE | L::CU_LIMIT_CIG_ENABLED => 0, // not a CIG context
        _ => return Err(R::CUDA_ERROR_UNSUPPORTED_LIMIT),
    };
    // SAFETY: the API contract makes `value` valid for a write when non-null.
    unsafe { out(value, v as usize) }
}

/// Waits until all work queued in context `c` has finished, then lets pools release memory
/// above their thresholds (as the real driver does at synchronisation).
pub(crate) fn synchronize_ctx(d: &Driver, c: u64) {
    let until = d.lock().contexts.get(&c).map(|x| (x.dev, x.last));
    if let Some((dev, last)) = until {
        d.machine.wait(dev, last);
    }
    trim_pools(d, &mut d.lock(), None);
}

fn create(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> Result<(), R> {
    let d = driver()?;
    if pctx.is_null() || flags & !0x1f != 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let c = create_ctx(d, &mut inner, dev, false)?;
    state::push_current(c);
    // SAFETY: checked non-null above; valid per the API contract.
    unsafe { out(pctx, handle(c)) }
}

exports! {
    fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) {
        let d = driver()?;
        if pctx.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        d.physical(dev)?;
        let mut inner = d.lock();
        let c = match inner.primary[dev as usize].ctx {
            Some(c) => c,
            None => {
                let c = create_ctx(d, &mut inner, dev, true)?;
                inner.primary[dev as usize].ctx = Some(c);
                c
            }
        };
        inner.primary[dev as usize].refs += 1;
        out(pctx, handle(c))
    }

    fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) {
        let d = driver()?;
        d.physical(dev)?;
        let mut inner = d.lock();
        let p = &mut inner.primary[dev as usize];
        if p.refs == 0 {
            return Err(R::CUDA_ERROR_INVALID_CONTEXT);
        }
        p.refs -= 1;
        if p.refs == 0
            && let Some(c) = p.ctx.take() {
                destroy_ctx(d, &mut inner, c);
            }
        Ok(())
    }

    fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) {
        let d = driver()?;
        d.physical(dev)?;
        let mut inner = d.lock();
        let p = &mut inner.primary[dev as usize];
        p.refs = 0;
        p.flags = 0;
        if let Some(c) = p.ctx.take() {
            destroy_ctx(d, &mut inner, c);
        }
        Ok(())
    }

    fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) {
        let d = driver()?;
        d.physical(dev)?;
        if flags.is_null() || active.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let inner = d.lock();
        let p = &inner.primary[dev as usize];
        out(flags, p.flags)?;
        out(active, c_int::from(p.ctx.is_some()))
    }

    fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) {
        let d = driver()?;
        d.physical(dev)?;
        if flags & !0x1f != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        d.lock().primary[dev as usize].flags = flags;
        Ok(())
    }

    fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) {
        create(pctx, flags, dev)
    }

    /// Execution-affinity parameters are accepted and ignored (no SM partitioning here).
    fn cuCtxCreate_v3(pctx: *mut CUcontext, params: *mut CUexecAffinityParam, num_params: c_int, flags: c_uint, dev: CUdevice) {
        if num_params < 0 || (num_params > 0 && params.is_null()) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        create(pctx, flags, dev)
    }

    /// Creation parameters (affinity, CIG) are accepted and ignored.
    fn cuCtxCreate_v4(pctx: *mut CUcontext, _params: *mut CUctxCreateParams, flags: c_uint, dev: CUdevice) {
        create(pctx, flags, dev)
    }

    fn cuCtxDestroy_v2(ctx: CUcontext) {
        let d = driver()?;
        let mut inner = d.lock();
        let c = inner.ctx_arg(ctx)?;
        if inner.contexts[&c].primary {
            return Err(R::CUDA_ERROR_INVALID_CONTEXT);
        }
        destroy_ctx(d, &mut inner, c);
        Ok(())
    }

    fn cuCtxSetCurrent(ctx: CUcontext) {
        let d = driver()?;
        if ctx.is_null() {
            state::set_current(None);
            return Ok(());
        }
        let c = d.lock().ctx_arg(ctx)?;
        state::set_current(Some(c));
        Ok(())
    }

    fn cuCtxGetCurrent(pctx: *mut CUcontext) {
        driver()?;
        let live = state::current_raw().filter(|c| driver().is_ok_and(|d| d.lock().contexts.contains_key(c)));
        out(pctx, live.map_or(std::ptr::null_mut(), handle))
    }

    fn cuCtxPushCurrent_v2(ctx: CUcontext) {
        let d = driver()?;
        let c = d.lock().ctx_arg(ctx)?;
        state::push_current(c);
        Ok(())
    }

    fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) {
        let d = driver()?;
        let c = state::current(&d.lock())?;
        state::pop_current();
        if !pctx.is_null() {
            out(pctx, handle(c))?;
        }
        Ok(())
    }

    fn cuCtxGetDevice(device: *mut CUdevice) {
        let d = driver()?;
        let inner = d.lock();
        let c = state::current(&inner)?;
        out(device, inner.contexts[&c].ordinal as CUdevice)
    }

    fn cuCtxSetLimit(limit: L, value: usize) { set_limit(limit, value) }
    fn cuCtxGetLimit(value: *mut usize, limit: L) { get_limit(value, limit) }

    fn cuCtxSynchronize() {
        let d = driver()?;
        let c = state::current(&d.lock())?;
        synchronize_ctx(d, c);
        Ok(())
    }
}
