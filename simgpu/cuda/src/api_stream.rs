//! Streams and events.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{c_int, c_uint};

use cuda_sys::driver::{CU_EVENT_DISABLE_TIMING, CUevent, CUresult, CUstream};
use simgpu::machine::Point;

use crate::api_memory::trim_pools;
use crate::state::{self, Event, Stream, StreamRef, driver, handle, id};
use crate::{exports, out};
use CUresult as R;

fn create_stream(ph: *mut CUstream, flags: c_uint) -> Result<(), R> {
    let d = driver()?;
    if ph.is_null() || flags > 1 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let ctx = state::current(&inner)?;
    let h = d.new_id();
    inner.streams.insert(h, Stream { ctx, state: Default::default() });
    // SAFETY: checked non-null above.
    unsafe { out(ph, handle(h)) }
}

/// Waits for a stream's queued work, then lets pools release memory above their thresholds.
fn synchronize(stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    let (dev, until) = {
        let mut inner = d.lock();
        let s = inner.stream(stream)?;
        let dev = inner.contexts[&inner.stream_ctx(s)].dev;
        let st = inner.stream_state(s);
        if st.capture.is_some() {
            return Err(R::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        (dev, st.last)
    };
    d.machine.wait(dev, until);
    let mut inner = d.lock();
    if let Ok(s) = inner.stream(stream) {
        inner.stream_state(s).pending.clear();
    }
    trim_pools(d, &mut inner, None);
    Ok(())
}

fn query(stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let dev = inner.contexts[&inner.stream_ctx(s)].dev;
    let last = inner.stream_state(s).last;
    if d.machine.reached(dev, last).is_none() { Err(R::CUDA_ERROR_NOT_READY) } else { Ok(()) }
}

fn wait_event(stream: CUstream, event: CUevent, flags: c_uint) -> Result<(), R> {
    let d = driver()?;
    if flags > 1 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let t = inner.events.get(&id(event)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?.point.unwrap_or_default();
    let st = inner.stream_state(s);
    st.last = st.last.later(t);
    Ok(())
}

/// Records an event: it completes when the device reaches it (after the stream's queued work
/// and everything queued on the device before it).
fn record(event: CUevent, stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let ectx = inner.events.get(&id(event)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?.ctx;
    if ectx != inner.stream_ctx(s) {
        return Err(R::CUDA_ERROR_INVALID_HANDLE);
    }
    let dev = inner.contexts.get(&ectx).ok_or(R::CUDA_ERROR_INVALID_CONTEXT)?.dev;
    let st = inner.stream_state(s);
    if st.capture.is_some() {
        // An event record node; the replay's timing is not observable through it here.
        return Ok(());
    }
    // The device reaches the event after the stream's own work and, since it runs work in one
    // order, after everything queued on it before (other processes' kernels included): an
    // event recorded before a kernel completes when that kernel starts, so an elapsed time
    // between events around a kernel is the kernel's own time, not the queue in front of it.
    // The stream's later work, and a synchronize of the stream or its context, come after it.
    // On a time-sliced machine the event is reached when this process's work queued before
    // it has run (processes' work is not ordered with each other's there).
    let t = d.machine.mark(dev, st.last);
    st.last = t;
    if let Some(c) = inner.contexts.get_mut(&ectx) {
        c.last = c.last.later(t);
    }
    let ev = inner.events.get_mut(&id(event)).expect("checked above");
    ev.point = Some(t);
    ev.recorded_ns = simgpu::now_ns();
    Ok(())
}

/// An event's device and point (`None` until recorded).
fn event_point(d: &crate::state::Driver, e: CUevent) -> Result<(u32, Option<Point>), R> {
    let inner = d.lock();
    let ev = inner.events.get(&id(e)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    let dev = inner.contexts.get(&ev.ctx).map_or(0, |c| c.dev);
    Ok((dev, ev.point))
}

fn elapsed(ms: *mut f32, start: CUevent, end: CUevent) -> Result<(), R> {
    let d = driver()?;
    let inner = d.lock();
    let time = |e: CUevent| -> Result<u64, R> {
        let ev = inner.events.get(&id(e)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        if ev.flags & CU_EVENT_DISABLE_TIMING != 0 {
            return Err(R::CUDA_ERROR_INVALID_HANDLE);
        }
        let p = ev.point.ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        let dev = inner.contexts.get(&ev.ctx).ok_or(R::CUDA_ERROR_INVALID_CONTEXT)?.dev;
        d.machine.reached(dev, p).map(|t| t.max(ev.recorded_ns)).ok_or(R::CUDA_ERROR_NOT_READY)
    };
    let (t0, t1) = (time(start)?, time(end)?);
    // SAFETY: the API contract makes `ms` valid for a write when non-null.
    unsafe { out(ms, (t1 as f64 - t0 as f64) as f32 / 1e6) }
}

exports! {
    fn cuStreamCreate(ph: *mut CUstream, flags: c_uint) { create_stream(ph, flags) }

    /// Priorities are accepted and do not change scheduling here.
    fn cuStreamCreateWithPriority(ph: *mut CUstream, flags: c_uint, _priority: c_int) { create_stream(ph, flags) }

    fn cuStreamDestroy_v2(h: CUstream) {
        let d = driver()?;
        let mut inner = d.lock();
        match inner.stream(h)? {
            StreamRef::Created(s) => {
                inner.streams.remove(&s);
                Ok(())
            }
            StreamRef::Null(_) => Err(R::CUDA_ERROR_INVALID_HANDLE),
        }
    }

    fn cuStreamSynchronize(h: CUstream) { synchronize(h) }
    fn cuStreamSynchronize_ptsz(h: CUstream) { synchronize(h) }
    fn cuStreamQuery(h: CUstream) { query(h) }
    fn cuStreamQuery_ptsz(h: CUstream) { query(h) }
    fn cuStreamWaitEvent(h: CUstream, e: CUevent, flags: c_uint) { wait_event(h, e, flags) }
    fn cuStreamWaitEvent_ptsz(h: CUstream, e: CUevent, flags: c_uint) { wait_event(h, e, flags) }

    fn cuEventCreate(ph: *mut CUevent, flags: c_uint) {
        let d = driver()?;
        if ph.is_null() || flags & !0xf != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut inner = d.lock();
        let ctx = state::current(&inner)?;
        let h = d.new_id();
        inner.events.insert(h, Event { ctx, flags, point: None, recorded_ns: 0 });
        out(ph, handle(h))
    }

    fn cuEventDestroy_v2(e: CUevent) {
        let d = driver()?;
        d.lock().events.remove(&id(e)).map(|_| ()).ok_or(R::CUDA_ERROR_INVALID_HANDLE)
    }

    fn cuEventRecord(e: CUevent, s: CUstream) { record(e, s) }
    fn cuEventRecord_ptsz(e: CUevent, s: CUstream) { record(e, s) }

    fn cuEventQuery(e: CUevent) {
        let d = driver()?;
        let (dev, p) = event_point(d, e)?;
        match p {
            Some(p) if d.machine.reached(dev, p).is_none() => Err(R::CUDA_ERROR_NOT_READY),
            _ => Ok(()),
        }
    }

    fn cuEventSynchronize(e: CUevent) {
        let d = driver()?;
        let (dev, p) = event_point(d, e)?;
        if let Some(p) = p {
            d.machine.wait(dev, p);
        }
        trim_pools(d, &mut d.lock(), None);
        Ok(())
    }

    fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) { elapsed(ms, start, end) }
    fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) { elapsed(ms, start, end) }
}
