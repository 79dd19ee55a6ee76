//! Kernel launches: queued on the machine's shared timeline, asynchronous, bounded by the
//! stream's queue depth (a launch into a full queue blocks until the oldest pending kernel
//! finishes, as on a real GPU).
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{c_uint, c_void};

use cuda_sys::driver::{CUfunction, CUlaunchAttributeID, CUlaunchConfig, CUresult, CUstream};

use crate::api_context::grow_stack;
use crate::state::{self, Node, driver, id};
use crate::{exports, read};
use CUresult as R;

/// Queues `ns` of GPU time on `stream` (or, if the stream is capturing, records `node`).
pub(crate) fn enqueue_work(stream: CUstream, ns: u64, node: Node) -> Result<(), R> {
    let d = driver()?;
    loop {
        let mut inner = d.lock();
        let s = inner.stream(stream)?;
        let ctx = inner.stream_ctx(s);
        let dev = inner.contexts[&ctx].dev;
        let st = inner.stream_state(s);
        if let Some(g) = st.capture {
            inner.graphs.get_mut(&g).ok_or(R::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)?.nodes.push(node);
            return Ok(());
        }
        while st.pending.front().is_some_and(|p| d.machine.reached(dev, *p).is_some()) {
            st.pending.pop_front();
        }
        if st.pending.len() >= d.cfg.queue_depth as usize {
            let oldest = st.pending.front().copied().unwrap_or_default();
            drop(inner);
            d.machine.wait(dev, oldest);
            continue;
        }
        if ns == 0 {
            return Ok(());
        }
        let done = d.machine.submit(dev, ns);
        st.pending.push_back(done);
        st.last = st.last.later(done);
        let c = inner.contexts.get_mut(&ctx).expect("live context");
        c.last = c.last.later(done);
        return Ok(());
    }
}

/// One launch's shape.
struct Shape {
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared: c_uint,
    cooperative: bool,
}

/// Validates a launch as the driver does, grows the context's stack for the kernel's frame if
/// it needs more, and returns its simulated duration.
fn duration(f: CUfunction, stream: CUstream, shape: &Shape) -> Result<u64, R> {
    let d = driver()?;
    let mut inner = d.lock();
    state::current(&inner)?;
    let f = crate::api_library::launched_function(d, &mut inner, id(f))?;
    let func = inner.functions.get(&f).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    let s = inner.stream(stream)?;
    if func.ctx != inner.stream_ctx(s) {
        return Err(R::CUDA_ERROR_INVALID_HANDLE);
    }
    let [gx, gy, gz] = shape.grid;
    let [bx, by, bz] = shape.block;
    if gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || gx > i32::MAX as u32 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
    if threads == 0 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024 || shape.shared > 232_448 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let blocks = u64::from(gx) * u64::from(gy) * u64::from(gz);
    if shape.cooperative {
        let per_sm = (2048 / threads).clamp(1, 32);
        if blocks > per_sm * u64::from(d.cfg.sms) {
            return Err(R::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
        }
    }
    let (wave_ns, ctx, local) = (func.wave_ns, func.ctx, func.local_bytes);
    grow_stack(d, &mut inner, ctx, local)?;
    Ok(simgpu::cost::kernel_ns(wave_ns, blocks, d.cfg.sms))
}

fn launch(f: CUfunction, shape: Shape, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void) -> Result<(), R> {
    if !params.is_null() && !extra.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let ns = duration(f, stream, &shape)?;
    enqueue_work(stream, ns, Node::Kernel(ns))
}

/// Reads a `CUlaunchConfig` (and its cooperative attribute) into a shape.
///
/// # Safety
/// `config` is null or a valid config whose `attrs` holds `numAttrs` entries.
unsafe fn launch_ex(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) -> Result<(), R> {
    // SAFETY: per this function's contract.
    let c = unsafe { read(config)? };
    if c.numAttrs > 0 && c.attrs.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut cooperative = false;
    for i in 0..c.numAttrs as usize {
        // SAFETY: `attrs` holds `numAttrs` entries per this function's contract.
        let a = unsafe { &*c.attrs.add(i) };
        if a.id == CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE {
            cooperative = a.value.as_int() != 0;
        }
    }
    let shape = Shape {
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared: c.sharedMemBytes,
        cooperative,
    };
    launch(f, shape, c.hStream, params, extra)
}

exports! {
    fn cuLaunchKernel(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void) {
        launch(f, Shape { grid: [gx, gy, gz], block: [bx, by, bz], shared, cooperative: false }, stream, params, extra)
    }

    fn cuLaunchKernel_ptsz(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void, extra: *mut *mut c_void) {
        launch(f, Shape { grid: [gx, gy, gz], block: [bx, by, bz], shared, cooperative: false }, stream, params, extra)
    }

    fn cuLaunchCooperativeKernel(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void) {
        launch(f, Shape { grid: [gx, gy, gz], block: [bx, by, bz], shared, cooperative: true }, stream, params, std::ptr::null_mut())
    }

    fn cuLaunchCooperativeKernel_ptsz(f: CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: CUstream, params: *mut *mut c_void) {
        launch(f, Shape { grid: [gx, gy, gz], block: [bx, by, bz], shared, cooperative: true }, stream, params, std::ptr::null_mut())
    }

    fn cuLaunchKernelEx(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) {
        launch_ex(config, f, params, extra)
    }

    fn cuLaunchKernelEx_ptsz(config: *const CUlaunchConfig, f: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) {
        launch_ex(config, f, params, extra)
    }
}
