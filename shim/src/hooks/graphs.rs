//! Graph memory: allocation nodes (stream-ordered allocations captured into a graph, and
//! `cuGraphAddMemAllocNode`) take device memory when their executable graph is uploaded or
//! first launched, from the device's graph allocator, which keeps it cached until
//! `cuDeviceGraphMemTrim`. Like a memory pool, the container is charged what that allocator
//! *reserves* on the device (`CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT`), brought in line after
//! each upload, launch, destruction and trim, before views answer and before a refusal.
//!
//! A launch cannot be undone, so room is found *before* it: the shim learns what each graph's
//! allocation nodes need (at capture and node creation), carries it to the executable graph
//! at instantiation, and the first launch or upload reserves what the allocator's cache cannot
//! cover, refused with `CUDA_ERROR_OUT_OF_MEMORY` at the quota with nothing forwarded. Graph
//! memory the shim did not see being declared (a graph built in a way it does not hook) is
//! not refused before its launch: the allocator's figure brings it in at the next resync when
//! this process has declared graph memory before, and reconciliation (`reconcile`) otherwise;
//! the next allocation past the quota is then refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use cuda_sys::driver::{CUgraphMem_attribute as GA, CUresult};
use vgpu_limiter::accounting::{self, GraphBook, PerDevice};
use vgpu_limiter::config::MAX_DEVICES;

use super::{Driver, Enforce};
use crate::log;

use CUresult as R;

/// This process's graph memory: what its graphs will need, and what is charged per device.
#[derive(Default)]
pub struct GraphMemory {
    /// Graph and executable-graph needs (a lock, taken only by processes that use graph
    /// memory: `any` is checked first).
    pub book: parking_lot::Mutex<GraphBook>,
    /// Set once any graph memory is seen; until then no graph hook takes the lock.
    any: AtomicBool,
    /// Bytes of each device's graph allocator charged to the container.
    charged: [AtomicU64; MAX_DEVICES],
    /// Devices whose graph allocator this process has used.
    seen: [AtomicBool; MAX_DEVICES],
}

impl GraphMemory {
    /// Whether this process has declared any graph memory.
    #[inline]
    pub fn any(&self) -> bool {
        self.any.load(Relaxed)
    }

    /// Records an allocation node of `bytes` on `device` in `graph`.
    pub fn allocation_node(&self, graph: u64, device: usize, bytes: u64) {
        self.any.store(true, Relaxed);
        self.seen[device].store(true, Relaxed);
        self.book.lock().allocation_node(graph, device, bytes);
    }

    /// Changes the book under its lock, and publishes how many executable graphs are left to
    /// map (to the launch fast path, which graph launches read first).
    fn edit<T>(&self, change: impl FnOnce(&mut GraphBook) -> T) -> T {
        let mut book = self.book.lock();
        let out = change(&mut book);
        super::fast::set_graphs_to_map(book.unmapped());
        out
    }

    /// Forgets everything (a child after `fork` holds none of its parent's graphs).
    pub fn clear(&self) {
        if self.book.is_locked() {
            // SAFETY: only in a child's renewal after `fork`, which every hook waits for: the
            // holder is a parent thread that does not exist here; the book is replaced next.
            #[allow(unsafe_code)]
            unsafe {
                self.book.force_unlock()
            };
        }
        self.edit(|book| *book = GraphBook::default());
        self.any.store(false, Relaxed);
        for d in 0..MAX_DEVICES {
            self.charged[d].store(0, Relaxed);
            self.seen[d].store(false, Relaxed);
        }
    }
}

fn attribute<D: Driver>(e: &Enforce<D>, device: usize, attr: GA) -> Option<u64> {
    e.driver.graph_mem_attribute(device, attr)
}

/// Brings device `device`'s graph memory charge in line with what its allocator reserves;
/// true when that gave memory back.
fn resync<D: Driver>(e: &Enforce<D>, device: usize) -> bool {
    let g = &e.shim.graphs;
    let Some(now) = attribute(e, device, GA::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT) else {
        return false;
    };
    match accounting::resync(g.charged[device].swap(now, AcqRel), now) {
        accounting::Delta::Charge(n) => e.region.force_charge(device, n),
        accounting::Delta::Uncharge(n) => {
            e.region.uncharge(device, n);
            return true;
        }
        accounting::Delta::None => {}
    }
    false
}

/// Brings every used device's graph memory charge in line (before views and refusals).
pub fn resync_all<D: Driver>(e: &Enforce<D>) -> bool {
    let g = &e.shim.graphs;
    if !g.any() {
        return false;
    }
    let mut freed = false;
    for d in (0..MAX_DEVICES).filter(|d| g.seen[*d].load(Relaxed)) {
        freed |= resync(e, d);
    }
    freed
}

/// Runs `forward` (an upload, a launch, an instantiation that uploads) that maps `need` of
/// graph memory: first reserves in the quota what each device's graph allocator cannot cover
/// from its cache (refused: `CUDA_ERROR_OUT_OF_MEMORY`, nothing forwarded); after a success
/// the allocator's growth is what stays charged. Growth beyond the reservation cannot be
/// undone (the work is queued): it is charged, and later allocations see it.
pub fn mapping<D: Driver>(e: &Enforce<D>, need: &PerDevice, forward: impl FnOnce() -> R) -> R {
    if need.is_empty() {
        return forward();
    }
    let g = &e.shim.graphs;
    let mut reservations = Vec::with_capacity(need.len());
    for &(device, bytes) in need {
        g.seen[device].store(true, Relaxed);
        g.any.store(true, Relaxed);
        let _ = resync(e, device);
        let reserved = attribute(e, device, GA::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT).unwrap_or(0);
        let used = attribute(e, device, GA::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT).unwrap_or(0);
        let room = accounting::graph_room(reserved, used, bytes);
        if room == 0 {
            continue;
        }
        match e.region.reserve_or(device, room, || super::pools::resync_all(e)) {
            Ok(r) => reservations.push((device, r)),
            Err(refused) => {
                log::warn(format_args!(
                    "device {device}: out of quota: refusing a graph needing {} bytes of graph memory ({} of {} bytes in use)",
                    refused.requested, refused.used, refused.quota
                ));
                return R::CUDA_ERROR_OUT_OF_MEMORY; // earlier reservations roll back
            }
        }
    }
    let rc = forward();
    if rc != R::CUDA_SUCCESS {
        return rc;
    }
    for &(device, _) in need {
        let held = reservations.iter().find(|(d, _)| *d == device).map_or(0, |(_, r)| r.bytes());
        let Some(now) = attribute(e, device, GA::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT) else { continue };
        let before = g.charged[device].swap(now, AcqRel);
        let growth = accounting::pool_growth(before, now, held);
        if growth.shrank > 0 {
            e.region.uncharge(device, growth.shrank);
        }
        if growth.extra > 0 {
            e.region.force_charge(device, growth.extra);
        }
        if let Some(i) = reservations.iter().position(|(d, _)| *d == device) {
            let (_, mut r) = reservations.swap_remove(i);
            r.shrink_to(growth.kept);
            r.keep();
        }
    }
    rc
}

/// `cuGraphAddMemAllocNode`: the node's bytes are what the graph's executable graphs will map.
pub fn add_mem_alloc_node<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    _node: *mut cuda_sys::driver::CUgraphNode,
    graph: cuda_sys::driver::CUgraph,
    _deps: *const cuda_sys::driver::CUgraphNode,
    _num_deps: usize,
    params: super::args::Out<cuda_sys::driver::CUDA_MEM_ALLOC_NODE_PARAMS>,
) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS
        && let Some(p) = params.written()
        && let Ok(device) = super::device_index(p.poolProps.location.id)
    {
        e.shim.graphs.allocation_node(graph as u64, device, p.bytesize as u64);
    }
    rc
}

/// Shared body of the instantiations: the executable graph inherits its graph's needs; an
/// instantiation that also uploads maps them, so it finds room first.
fn instantiate<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    exec: super::args::Out<cuda_sys::driver::CUgraphExec>,
    graph: cuda_sys::driver::CUgraph,
    uploads: bool,
) -> R {
    let g = &e.shim.graphs;
    if !g.any() {
        return call();
    }
    let need = if uploads { g.book.lock().graph_need(graph as u64) } else { Vec::new() };
    let rc = mapping(e, &need, call);
    if rc == R::CUDA_SUCCESS
        && let Some(x) = exec.written()
    {
        g.edit(|book| {
            book.instantiated(graph as u64, x as u64);
            if uploads {
                book.mapped(x as u64);
            }
        });
    }
    rc
}

/// `cuGraphInstantiateWithFlags`.
pub fn instantiate_with_flags<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    exec: super::args::Out<cuda_sys::driver::CUgraphExec>,
    graph: cuda_sys::driver::CUgraph,
    _flags: std::ffi::c_ulonglong,
) -> R {
    instantiate(e, call, exec, graph, false)
}

/// `cuGraphInstantiateWithParams` (and `_ptsz`): with `CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD` it
/// uploads too.
pub fn instantiate_with_params<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    exec: super::args::Out<cuda_sys::driver::CUgraphExec>,
    graph: cuda_sys::driver::CUgraph,
    params: super::args::Out<cuda_sys::driver::CUDA_GRAPH_INSTANTIATE_PARAMS>,
) -> R {
    let uploads = params.written().is_some_and(|p| p.flags & cuda_sys::driver::CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD != 0);
    instantiate(e, call, exec, graph, uploads)
}

/// Runs a launch or upload of `exec`: its first one maps its graph memory (see [`mapping`]).
pub fn launching<D: Driver>(e: &Enforce<D>, exec: cuda_sys::driver::CUgraphExec, forward: impl FnOnce() -> R) -> R {
    let g = &e.shim.graphs;
    // Every known graph mapped: a replay takes no lock (the usual case, graphs replayed many
    // times; the fast path forwards those before the gate when nothing is throttled).
    if !g.any() || super::fast::graphs_to_map() == 0 {
        return forward();
    }
    let need = g.book.lock().to_map(exec as u64);
    if need.is_empty() {
        return forward();
    }
    let rc = mapping(e, &need, forward);
    if rc == R::CUDA_SUCCESS {
        g.edit(|book| book.mapped(exec as u64));
    }
    rc
}

/// `cuGraphUpload` (and `_ptsz`).
pub fn upload<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    exec: cuda_sys::driver::CUgraphExec,
    _stream: cuda_sys::driver::CUstream,
) -> R {
    launching(e, exec, call)
}

/// `cuGraphExecDestroy`: its memory goes back to the graph allocator's cache (still charged
/// until a trim gives it back to the device).
pub fn exec_destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, exec: cuda_sys::driver::CUgraphExec) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS && e.shim.graphs.any() {
        e.shim.graphs.edit(|book| book.exec_destroyed(exec as u64));
        let _ = resync_all(e);
    }
    rc
}

/// `cuGraphDestroy`.
pub fn graph_destroy<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, graph: cuda_sys::driver::CUgraph) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS && e.shim.graphs.any() {
        e.shim.graphs.book.lock().graph_destroyed(graph as u64);
    }
    rc
}

/// `cuDeviceGraphMemTrim`: what the allocator hands back stops being charged; executable
/// graphs it unmapped must find room again at their next launch.
pub fn trim<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, device: cuda_sys::driver::CUdevice) -> R {
    let rc = call();
    if let Ok(d) = super::device_index(device)
        && e.shim.graphs.any()
    {
        e.shim.graphs.edit(|book| book.trimmed(d));
        let _ = resync(e, d);
    }
    rc
}
