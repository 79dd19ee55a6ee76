//! Stream capture and graphs. Capture records kernels, copies and memsets in order; an
//! executable graph replays them: copies and memsets happen at launch, and the kernels' total
//! time is queued on the timeline as one span.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{c_uint, c_ulonglong};

use cuda_sys::driver::{CUgraph, CUgraphExec, CUresult, CUstream, CUstreamCaptureMode, CUstreamCaptureStatus};

use crate::api_launch::enqueue_work;
use crate::api_memory::fill;
use crate::state::{Graph, Node, StreamRef, driver, handle, id};
use crate::{exports, out};
use CUresult as R;

fn begin(stream: CUstream, mode: CUstreamCaptureMode) -> Result<(), R> {
    let d = driver()?;
    if mode.0 > 2 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    // The legacy NULL stream cannot be captured.
    if matches!(s, StreamRef::Null(_)) && id(stream) != 2 {
        return Err(R::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    }
    if inner.stream_state(s).capture.is_some() {
        return Err(R::CUDA_ERROR_ILLEGAL_STATE);
    }
    let g = d.new_id();
    inner.graphs.insert(g, Graph::default());
    inner.stream_state(s).capture = Some(g);
    Ok(())
}

fn end(stream: CUstream, graph: *mut CUgraph) -> Result<(), R> {
    let d = driver()?;
    if graph.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let g = inner.stream_state(s).capture.take().ok_or(R::CUDA_ERROR_ILLEGAL_STATE)?;
    // SAFETY: checked non-null above.
    unsafe { out(graph, handle(g)) }
}

fn is_capturing(stream: CUstream, status: *mut CUstreamCaptureStatus) -> Result<(), R> {
    let d = driver()?;
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let active = inner.stream_state(s).capture.is_some();
    let v =
        if active { CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE } else { CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE };
    // SAFETY: the API contract makes `status` valid for a write when non-null.
    unsafe { out(status, v) }
}

fn launch(exec: CUgraphExec, stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    let nodes = {
        let mut inner = d.lock();
        let g = inner.execs.get(&id(exec)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?.clone();
        let s = inner.stream(stream)?;
        if inner.stream_state(s).capture.is_some() {
            return Err(R::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        for n in &g.nodes {
            match n {
                Node::Copy { dst, src, len } => {
                    inner.check_device_range(*dst, *len).or_else(|_| inner.check_device_range(*src, *len))?;
                }
                Node::Memset { dst, elem, count, .. } => inner.check_device_range(*dst, elem * count)?,
                Node::Kernel(_) => {}
            }
        }
        g.nodes
    };
    let mut kernel_ns = 0u64;
    for n in nodes {
        match n {
            Node::Kernel(ns) => kernel_ns = kernel_ns.saturating_add(ns),
            // SAFETY: validated above against live mappings (host sides are the caller's).
            Node::Copy { dst, src, len } => unsafe { std::ptr::copy(src as usize as *const u8, dst as usize as *mut u8, len) },
            Node::Memset { dst, value, elem, count } => fill(dst, value, elem, count),
        }
    }
    enqueue_work(stream, kernel_ns, Node::Kernel(kernel_ns))
}

exports! {
    fn cuStreamBeginCapture_v2(stream: CUstream, mode: CUstreamCaptureMode) { begin(stream, mode) }
    fn cuStreamBeginCapture_v2_ptsz(stream: CUstream, mode: CUstreamCaptureMode) { begin(stream, mode) }
    fn cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph) { end(stream, graph) }
    fn cuStreamEndCapture_ptsz(stream: CUstream, graph: *mut CUgraph) { end(stream, graph) }
    fn cuStreamIsCapturing(stream: CUstream, status: *mut CUstreamCaptureStatus) { is_capturing(stream, status) }
    fn cuStreamIsCapturing_ptsz(stream: CUstream, status: *mut CUstreamCaptureStatus) { is_capturing(stream, status) }

    fn cuGraphCreate(graph: *mut CUgraph, flags: c_uint) {
        let d = driver()?;
        if graph.is_null() || flags != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let g = d.new_id();
        d.lock().graphs.insert(g, Graph::default());
        out(graph, handle(g))
    }

    fn cuGraphDestroy(graph: CUgraph) {
        let d = driver()?;
        d.lock().graphs.remove(&id(graph)).map(|_| ()).ok_or(R::CUDA_ERROR_INVALID_VALUE)
    }

    fn cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, _flags: c_ulonglong) {
        let d = driver()?;
        if exec.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut inner = d.lock();
        let g = inner.graphs.get(&id(graph)).ok_or(R::CUDA_ERROR_INVALID_VALUE)?.clone();
        let h = d.new_id();
        inner.execs.insert(h, g);
        out(exec, handle(h))
    }

    fn cuGraphExecDestroy(exec: CUgraphExec) {
        let d = driver()?;
        d.lock().execs.remove(&id(exec)).map(|_| ()).ok_or(R::CUDA_ERROR_INVALID_VALUE)
    }

    fn cuGraphLaunch(exec: CUgraphExec, stream: CUstream) { launch(exec, stream) }
    fn cuGraphLaunch_ptsz(exec: CUgraphExec, stream: CUstream) { launch(exec, stream) }
}
