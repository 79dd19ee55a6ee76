//! Graph memory: allocation and free nodes, and the per-device graph memory they draw on,
//! modelled on NVIDIA's descriptions (CUDA Programming Guide, "Graph Memory Nodes"; driver
//! API, "Graph Management": `cuGraphAddMemAllocNode`, `cuGraphAddMemFreeNode`,
//! `cuGraphInstantiateWithFlags`, `cuGraphLaunch`, `cuGraphUpload`, `cuDeviceGraphMemTrim`,
//! `cuDeviceGetGraphMemAttribute`,
//! <https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__GRAPH.html>):
//!
//! * an allocation node (made by `cuGraphAddMemAllocNode`, or by `cuMemAllocAsync` on a
//!   capturing stream) gets its virtual address when it is created, fixed for the node's
//!   lifetime; nothing is taken from the device then;
//! * an executable graph's physical memory is mapped when it is uploaded, or at its first
//!   launch; the device's graph allocator takes from the device only what its cached memory
//!   cannot cover (`RESERVED_MEM_CURRENT` grows), and the graph's share counts as used
//!   (`USED_MEM_CURRENT`);
//! * the memory stays mapped to the executable graph across launches; destroying it, or
//!   `cuDeviceGraphMemTrim` while it is idle, returns its share to the allocator's cache, and
//!   trimming hands the cache back to the device;
//! * an allocation is live from its allocation node until a free node, `cuMemFreeAsync` or
//!   `cuMemFree`; relaunching a graph whose allocations are still live fails with
//!   `CUDA_ERROR_INVALID_VALUE` unless it was instantiated with
//!   `CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`; destroying the graph does not free a
//!   live allocation (its bytes stay in use until it is freed).
//!
//! Not modelled: the real allocator may let allocations with disjoint lifetimes share
//! physical memory, so its footprint can be smaller than the sum of the graph's allocations
//! that simgpu maps; accesses outside an allocation's lifetime do not fault; "currently
//! executing" graphs are not distinguished from idle ones at a trim (a graph's memory effects
//! happen at its launch call).

use cuda_sys::driver::CUresult;

use crate::state::{Driver, GraphVa, Inner, Node, map_anonymous, rounded};
use CUresult as R;

/// An allocation node's address range for graph `g`: mapped now (lazily, costing the device
/// nothing), allocated when a launch reaches the node.
pub(crate) fn new_alloc_node(inner: &mut Inner, g: u64, bytes: usize, dev: u32) -> Result<(u64, Node), R> {
    if bytes == 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    if !inner.graphs.contains_key(&g) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let len = rounded(bytes).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
    let addr = map_anonymous(len).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
    inner.graph_vas.insert(addr, GraphVa { len, dev, graph: g, live: false, held_alone: false });
    Ok((addr, Node::Alloc { addr, len, dev }))
}

/// Checks a free node for `addr` in graph `g`, as `cuGraphAddMemFreeNode` documents:
/// `CUDA_ERROR_INVALID_VALUE` for an address no allocation node returned, or an allocation
/// already freed in its owning graph or in this one.
pub(crate) fn check_free_node(inner: &Inner, g: u64, addr: u64) -> Result<Node, R> {
    let va = inner.graph_vas.get(&addr).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    let frees =
        |graph: u64| inner.graphs.get(&graph).is_some_and(|x| x.nodes.iter().any(|n| matches!(n, Node::Free { addr: a } if *a == addr)));
    if frees(g) || (va.graph != g && frees(va.graph)) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(Node::Free { addr })
}

/// Graph memory a graph's allocations need, per physical device.
pub(crate) fn footprint(nodes: &[Node]) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    for n in nodes {
        if let Node::Alloc { len, dev, .. } = n {
            match out.iter_mut().find(|(d, _)| d == dev) {
                Some((_, b)) => *b += *len as u64,
                None => out.push((*dev, *len as u64)),
            }
        }
    }
    out
}

/// Maps an executable graph's memory (at upload or launch), taking from the device what the
/// graph allocator's cache cannot cover. `CUDA_ERROR_OUT_OF_MEMORY`, with nothing taken, when
/// the device cannot give it.
pub(crate) fn map(d: &Driver, inner: &mut Inner, exec: u64) -> Result<(), R> {
    let x = inner.execs.get(&exec).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    if x.mapped {
        return Ok(());
    }
    let footprint = x.footprint.clone();
    let mut taken: Vec<(u32, u64, u64)> = Vec::new(); // (device, grown, used)
    for &(dev, bytes) in &footprint {
        let gm = inner.graph_mem.entry(dev).or_default();
        let grow = bytes.saturating_sub(gm.reserved.saturating_sub(gm.used));
        if grow > 0 && !d.machine.charge(dev, grow) {
            for (dev, grown, used) in taken {
                let gm = inner.graph_mem.entry(dev).or_default();
                gm.reserved -= grown;
                gm.used -= used;
                d.machine.uncharge(dev, grown);
            }
            return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
        }
        gm.reserved += grow;
        gm.used += bytes;
        gm.reserved_high = gm.reserved_high.max(gm.reserved);
        gm.used_high = gm.used_high.max(gm.used);
        taken.push((dev, grow, bytes));
    }
    inner.execs.get_mut(&exec).expect("checked above").mapped = true;
    Ok(())
}

/// Returns an executable graph's memory to the graph allocator's cache, but for its live
/// allocations, whose bytes stay in use on their own until they are freed.
pub(crate) fn unmap(inner: &mut Inner, exec: u64) {
    let Some(x) = inner.execs.get_mut(&exec) else { return };
    if !x.mapped {
        return;
    }
    x.mapped = false;
    let (graph, footprint) = (x.graph, x.footprint.clone());
    for (dev, bytes) in footprint {
        let mut live = 0u64;
        for va in inner.graph_vas.values_mut().filter(|v| v.graph == graph && v.dev == dev && v.live && !v.held_alone) {
            va.held_alone = true;
            live += va.len as u64;
        }
        let gm = inner.graph_mem.entry(dev).or_default();
        gm.used = gm.used.saturating_sub(bytes.saturating_sub(live));
    }
}

/// Frees a graph allocation (a free node, `cuMemFreeAsync`, `cuMemFree`, or an auto-free at
/// relaunch). `None`: not a graph allocation; `Some(false)`: not live.
pub(crate) fn free(inner: &mut Inner, addr: u64) -> Option<bool> {
    let va = inner.graph_vas.get_mut(&addr)?;
    if !va.live {
        return Some(false);
    }
    va.live = false;
    if std::mem::take(&mut va.held_alone) {
        let (dev, len) = (va.dev, va.len as u64);
        let gm = inner.graph_mem.entry(dev).or_default();
        gm.used = gm.used.saturating_sub(len);
    }
    Some(true)
}

/// Addresses of graph `g`'s allocations that are live now.
pub(crate) fn live_of(inner: &Inner, g: u64) -> Vec<u64> {
    inner.graph_vas.iter().filter(|(_, v)| v.graph == g && v.live).map(|(a, _)| *a).collect()
}

/// `cuDeviceGraphMemTrim`: idle executable graphs (none of their allocations live) give their
/// memory back to the cache, and the cache goes back to the device.
pub(crate) fn trim(d: &Driver, inner: &mut Inner, dev: u32) {
    let idle: Vec<u64> = inner
        .execs
        .iter()
        .filter(|(_, x)| x.mapped && x.footprint.iter().any(|(fd, _)| *fd == dev))
        .filter(|(_, x)| !inner.graph_vas.values().any(|v| v.graph == x.graph && v.live))
        .map(|(h, _)| *h)
        .collect();
    for h in idle {
        unmap(inner, h);
    }
    let gm = inner.graph_mem.entry(dev).or_default();
    let spare = gm.reserved.saturating_sub(gm.used);
    gm.reserved -= spare;
    d.machine.uncharge(dev, spare);
}
