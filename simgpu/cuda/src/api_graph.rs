//! Stream capture and graphs. Capture records kernels, copies, memsets and stream-ordered
//! allocations and frees in order; an executable graph replays them: allocations, frees,
//! copies and memsets happen at launch, and the kernels' total time is queued on the timeline
//! as one span. Graph memory (allocation and free nodes) is modelled in `graph_mem`.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{c_uint, c_ulonglong, c_void};

use cuda_sys::driver::{
    CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH, CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD, CUDA_GRAPH_INSTANTIATE_PARAMS,
    CUDA_MEM_ALLOC_NODE_PARAMS, CUdevice, CUdeviceptr, CUgraph, CUgraphEdgeData, CUgraphExec, CUgraphInstantiateResult,
    CUgraphMem_attribute as GA, CUgraphNode, CUmemLocationType, CUresult, CUstream, CUstreamCaptureMode, CUstreamCaptureStatus,
};

use crate::api_launch::enqueue_work;
use crate::api_memory::fill;
use crate::graph_mem;
use crate::state::{Driver, Exec, Graph, Inner, Node, StreamRef, driver, handle, id};
use crate::{exports, out, read};
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

/// `CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH`.
const FLAG_DEVICE_LAUNCH: c_ulonglong = 4;
/// `CUDA_GRAPH_INSTANTIATE_FLAG_USE_NODE_PRIORITY`.
const FLAG_USE_NODE_PRIORITY: c_ulonglong = 8;

/// Instantiates `graph`. A graph with memory nodes may have one executable graph at a time
/// (the documented restriction; the error code for a second one is not documented, simgpu
/// answers `CUDA_ERROR_INVALID_VALUE`).
fn instantiate(d: &Driver, inner: &mut Inner, graph: CUgraph, flags: c_ulonglong) -> Result<u64, R> {
    let known =
        CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH | CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD | FLAG_DEVICE_LAUNCH | FLAG_USE_NODE_PRIORITY;
    let auto_free = flags & CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH != 0;
    if flags & !known != 0 || (auto_free && flags & FLAG_DEVICE_LAUNCH != 0) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let g = id(graph);
    let source = inner.graphs.get(&g).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    let memory = source.has_memory_nodes();
    if memory && source.exec.is_some_and(|x| inner.execs.contains_key(&x)) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let nodes = source.nodes.clone();
    let h = d.new_id();
    let footprint = graph_mem::footprint(&nodes);
    inner.execs.insert(h, Exec { graph: g, nodes, auto_free, footprint, mapped: false });
    if memory {
        inner.graphs.get_mut(&g).expect("checked above").exec = Some(h);
    }
    Ok(h)
}

/// `cuGraphUpload`: maps the executable graph's memory now, so its launches take none.
fn upload(exec: CUgraphExec, stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    let mut inner = d.lock();
    inner.stream(stream)?;
    if !inner.execs.contains_key(&id(exec)) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    graph_mem::map(d, &mut inner, id(exec))
}

fn launch(exec: CUgraphExec, stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    let nodes = {
        let mut inner = d.lock();
        let h = id(exec);
        let x = inner.execs.get(&h).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?.clone();
        let s = inner.stream(stream)?;
        if inner.stream_state(s).capture.is_some() {
            return Err(R::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        // Allocations a previous launch left live: freed first, or the launch fails.
        let live = graph_mem::live_of(&inner, x.graph);
        if !live.is_empty() && x.nodes.iter().any(|n| matches!(n, Node::Alloc { .. })) {
            if !x.auto_free {
                return Err(R::CUDA_ERROR_INVALID_VALUE);
            }
            for a in live {
                graph_mem::free(&mut inner, a);
            }
        }
        for n in &x.nodes {
            match n {
                Node::Copy { dst, src, len } => {
                    inner.check_device_range(*dst, *len).or_else(|_| inner.check_device_range(*src, *len))?;
                }
                Node::Memset { dst, elem, count, .. } => inner.check_device_range(*dst, elem * count)?,
                Node::Kernel(_) | Node::Alloc { .. } | Node::Free { .. } => {}
            }
        }
        graph_mem::map(d, &mut inner, h)?;
        for n in &x.nodes {
            match n {
                Node::Alloc { addr, .. } => {
                    if let Some(va) = inner.graph_vas.get_mut(addr) {
                        va.live = true;
                    }
                }
                Node::Free { addr } => {
                    graph_mem::free(&mut inner, *addr);
                }
                _ => {}
            }
        }
        x.nodes
    };
    let mut kernel_ns = 0u64;
    for n in nodes {
        match n {
            Node::Kernel(ns) => kernel_ns = kernel_ns.saturating_add(ns),
            // SAFETY: validated above against live mappings (host sides are the caller's).
            Node::Copy { dst, src, len } => unsafe { std::ptr::copy(src as usize as *const u8, dst as usize as *mut u8, len) },
            Node::Memset { dst, value, elem, count } => fill(dst, value, elem, count),
            Node::Alloc { .. } | Node::Free { .. } => {}
        }
    }
    enqueue_work(stream, kernel_ns, Node::Kernel(kernel_ns))
}

/// `cuStreamGetCaptureInfo_v2`: the capture's status, id and graph. simgpu does not model
/// cross-stream capture dependencies: the dependency set is reported empty.
fn capture_info(
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
    id_out: *mut u64,
    graph_out: *mut CUgraph,
    deps_out: *mut *const CUgraphNode,
    num_deps_out: *mut usize,
) -> Result<(), R> {
    let d = driver()?;
    if status.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let capture = inner.stream_state(s).capture;
    let v = if capture.is_some() {
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE
    } else {
        CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
    };
    // SAFETY: each out-pointer is written only when non-null, as the API allows.
    unsafe {
        out(status, v)?;
        if let Some(g) = capture {
            if !id_out.is_null() {
                out(id_out, g)?;
            }
            if !graph_out.is_null() {
                out(graph_out, handle(g))?;
            }
            if !deps_out.is_null() {
                out(deps_out, std::ptr::null())?;
            }
            if !num_deps_out.is_null() {
                out(num_deps_out, 0)?;
            }
        }
    }
    Ok(())
}

/// `cuStreamGetCaptureInfo_v3`: `_v2`'s answer, with no edge data (no dependencies).
fn capture_info_v3(
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
    id_out: *mut u64,
    graph_out: *mut CUgraph,
    deps_out: *mut *const CUgraphNode,
    edges_out: *mut *const CUgraphEdgeData,
    num_deps_out: *mut usize,
) -> Result<(), R> {
    capture_info(stream, status, id_out, graph_out, deps_out, num_deps_out)?;
    if !edges_out.is_null() {
        // SAFETY: non-null, valid for a write per the API contract.
        unsafe { out(edges_out, std::ptr::null())? };
    }
    Ok(())
}

/// The physical device of a graph memory call's device ordinal.
fn graph_mem_device(dev: CUdevice) -> Result<(&'static Driver, u32), R> {
    let d = driver()?;
    Ok((d, d.physical(dev)?))
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

    fn cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, flags: c_ulonglong) {
        let d = driver()?;
        if exec.is_null() || flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE); // upload-on-instantiate is WithParams' only
        }
        let h = instantiate(d, &mut d.lock(), graph, flags)?;
        out(exec, handle(h))
    }

    fn cuGraphInstantiateWithParams(exec: *mut CUgraphExec, graph: CUgraph, params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) {
        instantiate_with_params(exec, graph, params)
    }

    fn cuGraphInstantiateWithParams_ptsz(exec: *mut CUgraphExec, graph: CUgraph, params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) {
        instantiate_with_params(exec, graph, params)
    }

    fn cuGraphExecDestroy(exec: CUgraphExec) {
        let d = driver()?;
        let mut inner = d.lock();
        graph_mem::unmap(&mut inner, id(exec));
        let x = inner.execs.remove(&id(exec)).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        if let Some(g) = inner.graphs.get_mut(&x.graph)
            && g.exec == Some(id(exec))
        {
            g.exec = None;
        }
        Ok(())
    }

    fn cuGraphUpload(exec: CUgraphExec, stream: CUstream) { upload(exec, stream) }
    fn cuGraphUpload_ptsz(exec: CUgraphExec, stream: CUstream) { upload(exec, stream) }
    fn cuGraphLaunch(exec: CUgraphExec, stream: CUstream) { launch(exec, stream) }
    fn cuGraphLaunch_ptsz(exec: CUgraphExec, stream: CUstream) { launch(exec, stream) }

    fn cuStreamGetCaptureInfo_v2(
        stream: CUstream,
        status: *mut CUstreamCaptureStatus,
        id_out: *mut u64,
        graph_out: *mut CUgraph,
        deps_out: *mut *const CUgraphNode,
        num_deps_out: *mut usize,
    ) {
        capture_info(stream, status, id_out, graph_out, deps_out, num_deps_out)
    }

    fn cuStreamGetCaptureInfo_v2_ptsz(
        stream: CUstream,
        status: *mut CUstreamCaptureStatus,
        id_out: *mut u64,
        graph_out: *mut CUgraph,
        deps_out: *mut *const CUgraphNode,
        num_deps_out: *mut usize,
    ) {
        capture_info(stream, status, id_out, graph_out, deps_out, num_deps_out)
    }

    fn cuStreamGetCaptureInfo_v3(
        stream: CUstream,
        status: *mut CUstreamCaptureStatus,
        id_out: *mut u64,
        graph_out: *mut CUgraph,
        deps_out: *mut *const CUgraphNode,
        edges_out: *mut *const CUgraphEdgeData,
        num_deps_out: *mut usize,
    ) {
        capture_info_v3(stream, status, id_out, graph_out, deps_out, edges_out, num_deps_out)
    }

    fn cuStreamGetCaptureInfo_v3_ptsz(
        stream: CUstream,
        status: *mut CUstreamCaptureStatus,
        id_out: *mut u64,
        graph_out: *mut CUgraph,
        deps_out: *mut *const CUgraphNode,
        edges_out: *mut *const CUgraphEdgeData,
        num_deps_out: *mut usize,
    ) {
        capture_info_v3(stream, status, id_out, graph_out, deps_out, edges_out, num_deps_out)
    }

    fn cuGraphAddMemAllocNode(
        node: *mut CUgraphNode,
        graph: CUgraph,
        _deps: *const CUgraphNode,
        _num_deps: usize,
        params: *mut CUDA_MEM_ALLOC_NODE_PARAMS,
    ) {
        let d = driver()?;
        if node.is_null() || params.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let p = read(params)?;
        if p.poolProps.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE || p.poolProps.handleTypes != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let dev = d.physical(p.poolProps.location.id)?;
        if !d.cfg.memory_pools {
            return Err(R::CUDA_ERROR_NOT_SUPPORTED);
        }
        let mut inner = d.lock();
        let g = id(graph);
        let (addr, n) = graph_mem::new_alloc_node(&mut inner, g, p.bytesize, dev)?;
        inner.graphs.get_mut(&g).expect("checked by new_alloc_node").nodes.push(n);
        (*params).dptr = addr;
        out(node, handle(d.new_id()))
    }

    fn cuGraphAddMemFreeNode(node: *mut CUgraphNode, graph: CUgraph, _deps: *const CUgraphNode, _num_deps: usize, dptr: CUdeviceptr) {
        let d = driver()?;
        if node.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut inner = d.lock();
        let g = id(graph);
        if !inner.graphs.contains_key(&g) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let n = graph_mem::check_free_node(&inner, g, dptr)?;
        inner.graphs.get_mut(&g).expect("checked above").nodes.push(n);
        out(node, handle(d.new_id()))
    }

    fn cuDeviceGraphMemTrim(device: CUdevice) {
        let (d, dev) = graph_mem_device(device)?;
        graph_mem::trim(d, &mut d.lock(), dev);
        Ok(())
    }

    fn cuDeviceGetGraphMemAttribute(device: CUdevice, attr: GA, value: *mut c_void) {
        let (d, dev) = graph_mem_device(device)?;
        let gm = d.lock().graph_mem.get(&dev).copied().unwrap_or_default();
        let v = match attr {
            GA::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT => gm.used,
            GA::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH => gm.used_high,
            GA::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT => gm.reserved,
            GA::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH => gm.reserved_high,
            _ => return Err(R::CUDA_ERROR_INVALID_VALUE),
        };
        out(value.cast::<u64>(), v)
    }

    fn cuDeviceSetGraphMemAttribute(device: CUdevice, attr: GA, value: *mut c_void) {
        let (d, dev) = graph_mem_device(device)?;
        // Only the high watermarks may be set, and only reset (to zero: they then start over
        // from the current figure).
        if read(value.cast::<u64>())? != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut inner = d.lock();
        let gm = inner.graph_mem.entry(dev).or_default();
        match attr {
            GA::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH => gm.used_high = gm.used,
            GA::CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH => gm.reserved_high = gm.reserved,
            _ => return Err(R::CUDA_ERROR_INVALID_VALUE),
        }
        Ok(())
    }
}

/// `cuGraphInstantiateWithParams`: flags, optional upload, and the result written back.
fn instantiate_with_params(exec: *mut CUgraphExec, graph: CUgraph, params: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) -> Result<(), R> {
    let d = driver()?;
    if exec.is_null() || params.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: checked non-null; the caller's struct, valid per the API contract.
    let p = unsafe { read(params)? };
    let result = (|| {
        let mut inner = d.lock();
        let h = instantiate(d, &mut inner, graph, p.flags)?;
        if p.flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD != 0 {
            let uploaded = inner.stream(p.hUploadStream).and_then(|_| graph_mem::map(d, &mut inner, h));
            if let Err(e) = uploaded {
                inner.execs.remove(&h);
                if let Some(g) = inner.graphs.get_mut(&id(graph)) {
                    g.exec = None;
                }
                return Err(e);
            }
        }
        Ok(h)
    })();
    let verdict = if result.is_ok() {
        CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_SUCCESS
    } else {
        CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_ERROR
    };
    // SAFETY: as above.
    unsafe {
        (*params).result_out = verdict;
        (*params).hErrNode_out = std::ptr::null_mut();
    }
    // SAFETY: checked non-null above.
    unsafe { out(exec, handle(result?)) }
}
