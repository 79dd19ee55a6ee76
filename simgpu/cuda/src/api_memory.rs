//! Device memory: every allocation family but VMM (see `api_vmm`), memory pools, arrays,
//! memcpy and memset.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{c_uint, c_void};

use cuda_sys::driver::{
    CU_MEM_ATTACH_GLOBAL, CU_MEM_ATTACH_HOST, CUDA_ARRAY_DESCRIPTOR, CUDA_ARRAY3D_DESCRIPTOR, CUarray, CUdevice, CUdeviceptr,
    CUmemAllocationType, CUmemLocationType, CUmemPool_attribute as PA, CUmemPoolProps, CUmemoryPool, CUmipmappedArray, CUresult, CUstream,
};

use crate::api_context::synchronize_ctx;
use crate::graph_mem;
use crate::state::{
    self, Alloc, AllocKind, Array, Driver, Inner, Node, Pool, StreamRef, driver, handle, id, map_anonymous, rounded, unmap,
};
use crate::{exports, out, read};
use CUresult as R;

/// Allocates `bytes` of device memory in the current context, charging the device.
fn alloc_device(d: &Driver, inner: &mut Inner, bytes: usize, kind: AllocKind) -> Result<u64, R> {
    alloc_device_at(d, inner, bytes, kind, map_anonymous)
}

/// [`alloc_device`] with the mapping made by `map` (the legacy ABI's need addresses below
/// 4 GiB).
pub(crate) fn alloc_device_at(
    d: &Driver,
    inner: &mut Inner,
    bytes: usize,
    kind: AllocKind,
    map: fn(usize) -> Option<u64>,
) -> Result<u64, R> {
    let c = state::current(inner)?;
    if bytes == 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let len = rounded(bytes).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
    let dev = inner.contexts[&c].dev;
    if !d.machine.charge(dev, len as u64) {
        return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let Some(addr) = map(len) else {
        d.machine.uncharge(dev, len as u64);
        return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
    };
    inner.allocs.insert(addr, Alloc { size: bytes, map_len: len, ctx: c, dev, kind });
    Ok(addr)
}

/// Frees an allocation at its base address, returning its memory to the device (and taking it
/// out of its pool's accounting). False when `addr` is not the base of a live allocation.
pub(crate) fn free_alloc(d: &Driver, inner: &mut Inner, addr: u64) -> bool {
    let Some(a) = inner.allocs.remove(&addr) else {
        return false;
    };
    if let AllocKind::Pool(p) = a.kind
        && let Some(pool) = inner.pools.get_mut(&p)
    {
        pool.used = pool.used.saturating_sub(a.map_len as u64);
        pool.reserved = pool.reserved.saturating_sub(a.map_len as u64);
    }
    unmap(addr, a.map_len);
    d.machine.uncharge(a.dev, a.map_len as u64);
    true
}

/// Releases cached pool memory back to the device: every pool down to its release threshold,
/// or one pool down to `keep`.
pub(crate) fn trim_pools(d: &Driver, inner: &mut Inner, only: Option<(u64, u64)>) {
    for (pid, pool) in inner.pools.iter_mut() {
        let keep = match only {
            Some((p, keep)) if p == *pid => keep,
            Some(_) => continue,
            None => pool.release_threshold,
        };
        pool.cached.sort_by_key(|(_, len)| *len);
        while pool.reserved > keep {
            let Some((addr, len)) = pool.cached.pop() else {
                break;
            };
            unmap(addr, len);
            d.machine.uncharge(pool.dev, len as u64);
            pool.reserved = pool.reserved.saturating_sub(len as u64);
        }
    }
}

/// (default pool, current pool) of an ordinal, created on first use.
fn device_pools(d: &Driver, inner: &mut Inner, ordinal: u32) -> (u64, u64) {
    if let Some(p) = inner.pools_by_device[ordinal as usize] {
        return p;
    }
    let p = d.new_id();
    inner.pools.insert(p, new_pool(ordinal, d.visible[ordinal as usize]));
    inner.pools_by_device[ordinal as usize] = Some((p, p));
    (p, p)
}

fn new_pool(ordinal: u32, dev: u32) -> Pool {
    Pool { ordinal, dev, release_threshold: 0, reserved: 0, used: 0, reserved_high: 0, used_high: 0, cached: Vec::new(), reuse: [1, 1, 1] }
}

/// Stream-ordered allocation from `pool`: reuses a cached block when one fits, else takes
/// memory from the device (trimming the pool's cache first if the device is full).
fn pool_alloc(d: &Driver, inner: &mut Inner, pool_id: u64, bytes: usize, s: StreamRef) -> Result<u64, R> {
    if bytes == 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    if !d.cfg.memory_pools {
        return Err(R::CUDA_ERROR_NOT_SUPPORTED);
    }
    let ctx = inner.stream_ctx(s);
    if let Some(g) = inner.stream_state(s).capture {
        // Captured: an allocation node of the graph, on the pool's device.
        let dev = inner.pools.get(&pool_id).ok_or(R::CUDA_ERROR_INVALID_VALUE)?.dev;
        let (addr, node) = graph_mem::new_alloc_node(inner, g, bytes, dev)?;
        inner.graphs.get_mut(&g).ok_or(R::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)?.nodes.push(node);
        return Ok(addr);
    }
    let len = rounded(bytes).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
    let pool = inner.pools.get_mut(&pool_id).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    let dev = pool.dev;
    let reuse = pool.cached.iter().enumerate().filter(|(_, (_, cap))| *cap >= len).min_by_key(|(_, (_, cap))| *cap).map(|(i, _)| i);
    let (addr, cap) = match reuse {
        Some(i) => pool.cached.swap_remove(i),
        None => {
            if !d.machine.charge(dev, len as u64) {
                trim_pools(d, inner, Some((pool_id, 0)));
                if !d.machine.charge(dev, len as u64) {
                    return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
                }
            }
            let Some(addr) = map_anonymous(len) else {
                d.machine.uncharge(dev, len as u64);
                return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
            };
            let pool = inner.pools.get_mut(&pool_id).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
            pool.reserved += len as u64;
            pool.reserved_high = pool.reserved_high.max(pool.reserved);
            (addr, len)
        }
    };
    let pool = inner.pools.get_mut(&pool_id).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    pool.used += cap as u64;
    pool.used_high = pool.used_high.max(pool.used);
    inner.allocs.insert(addr, Alloc { size: bytes, map_len: cap, ctx, dev, kind: AllocKind::Pool(pool_id) });
    Ok(addr)
}

/// Stream-ordered free: pool memory goes back to the pool's cache (released at the next
/// synchronisation above the release threshold); other memory is freed at once.
fn free_async(d: &Driver, inner: &mut Inner, addr: CUdeviceptr, s: CUstream) -> Result<(), R> {
    let s = inner.stream(s)?;
    if let Some(g) = inner.stream_state(s).capture {
        // Captured: a free node, which only a graph allocation may have.
        if !inner.graph_vas.contains_key(&addr) {
            return Err(R::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let node = graph_mem::check_free_node(inner, g, addr)?;
        inner.graphs.get_mut(&g).ok_or(R::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)?.nodes.push(node);
        return Ok(());
    }
    if let Some(freed) = graph_mem::free(inner, addr) {
        return if freed { Ok(()) } else { Err(R::CUDA_ERROR_INVALID_VALUE) };
    }
    let kind = inner.allocs.get(&addr).map(|a| a.kind).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    match kind {
        AllocKind::Pool(p) if inner.pools.contains_key(&p) => {
            let a = inner.allocs.remove(&addr).expect("checked above");
            let pool = inner.pools.get_mut(&p).expect("checked above");
            pool.used = pool.used.saturating_sub(a.map_len as u64);
            pool.cached.push((addr, a.map_len));
        }
        _ => {
            free_alloc(d, inner, addr);
        }
    }
    Ok(())
}

fn alloc_async(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    if dptr.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let ordinal = inner.contexts[&inner.stream_ctx(s)].ordinal;
    let (_, current) = device_pools(d, &mut inner, ordinal);
    let addr = pool_alloc(d, &mut inner, current, bytes, s)?;
    // SAFETY: checked non-null above.
    unsafe { out(dptr, addr) }
}

fn alloc_from_pool(dptr: *mut CUdeviceptr, bytes: usize, pool: CUmemoryPool, stream: CUstream) -> Result<(), R> {
    let d = driver()?;
    if dptr.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let s = inner.stream(stream)?;
    let addr = pool_alloc(d, &mut inner, id(pool), bytes, s)?;
    // SAFETY: checked non-null above.
    unsafe { out(dptr, addr) }
}

/// Bytes of an array of the given shape, or `CUDA_ERROR_INVALID_VALUE`.
pub(crate) fn array_bytes(desc: &CUDA_ARRAY3D_DESCRIPTOR) -> Result<u64, R> {
    let elem = desc.Format.channel_bytes().ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    if !matches!(desc.NumChannels, 1 | 2 | 4) || desc.Width == 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let bytes = [desc.Width, desc.Height.max(1), desc.Depth.max(1), elem, desc.NumChannels as usize]
        .iter()
        .try_fold(1u64, |acc, x| acc.checked_mul(*x as u64))
        .ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    Ok(bytes.next_multiple_of(512))
}

pub(crate) fn create_array(d: &Driver, bytes: u64) -> Result<u64, R> {
    let mut inner = d.lock();
    let c = state::current(&inner)?;
    let dev = inner.contexts[&c].dev;
    if !d.machine.charge(dev, bytes) {
        return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let h = d.new_id();
    inner.arrays.insert(h, Array { ctx: c, dev, bytes });
    Ok(h)
}

fn destroy_array(h: u64) -> Result<(), R> {
    let d = driver()?;
    let a = d.lock().arrays.remove(&h).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    d.machine.uncharge(a.dev, a.bytes);
    Ok(())
}

/// Where a copy's pointers may point.
#[derive(Clone, Copy)]
enum Side {
    Host,
    Device,
    /// Unified addressing: device if it is device memory, host otherwise.
    Any,
}

/// Orders a copy or memset: on a capturing stream it is recorded as `node` (true: nothing
/// more to do); a synchronous one (no stream) first waits for the context's queued work.
fn order(d: &Driver, mut inner: std::sync::MutexGuard<'_, Inner>, ctx: u64, stream: Option<CUstream>, node: Node) -> Result<bool, R> {
    match stream {
        Some(s) => {
            let s = inner.stream(s)?;
            let Some(g) = inner.stream_state(s).capture else { return Ok(false) };
            inner.graphs.get_mut(&g).ok_or(R::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)?.nodes.push(node);
            Ok(true)
        }
        None => {
            drop(inner);
            synchronize_ctx(d, ctx);
            Ok(false)
        }
    }
}

/// Validates a copy and performs it (the data moves at once; the simulated GPU time of copies
/// is not modelled). Synchronous copies first wait for the context's queued work.
fn copy(dst: u64, dst_side: Side, src: u64, src_side: Side, len: usize, stream: Option<CUstream>) -> Result<(), R> {
    let d = driver()?;
    let inner = d.lock();
    let c = state::current(&inner)?;
    for (p, side) in [(dst, dst_side), (src, src_side)] {
        match side {
            Side::Device => inner.check_device_range(p, len)?,
            Side::Host if p == 0 => return Err(R::CUDA_ERROR_INVALID_VALUE),
            Side::Any if p == 0 => return Err(R::CUDA_ERROR_INVALID_VALUE),
            _ => {}
        }
    }
    if len == 0 {
        return Ok(());
    }
    if order(d, inner, c, stream, Node::Copy { dst, src, len })? {
        return Ok(());
    }
    // SAFETY: device ranges were validated against live mappings; host pointers are the
    // caller's, valid for `len` bytes per the API contract.
    unsafe { std::ptr::copy(src as usize as *const u8, dst as usize as *mut u8, len) };
    Ok(())
}

/// Performs a memset of `count` elements of `elem` bytes (or records it into a capture).
fn memset(dst: u64, value: u32, elem: usize, count: usize, stream: Option<CUstream>) -> Result<(), R> {
    let d = driver()?;
    let inner = d.lock();
    let c = state::current(&inner)?;
    if !dst.is_multiple_of(elem as u64) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let len = count.checked_mul(elem).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
    inner.check_device_range(dst, len)?;
    if order(d, inner, c, stream, Node::Memset { dst, value, elem, count })? {
        return Ok(());
    }
    fill(dst, value, elem, count);
    Ok(())
}

/// Writes `count` elements of `elem` bytes of `value` at `dst` (already validated).
pub(crate) fn fill(dst: u64, value: u32, elem: usize, count: usize) {
    // SAFETY: the destination range was validated against a live device mapping.
    unsafe {
        match elem {
            1 => std::ptr::write_bytes(dst as usize as *mut u8, value as u8, count),
            2 => std::slice::from_raw_parts_mut(dst as usize as *mut u16, count).fill(value as u16),
            _ => std::slice::from_raw_parts_mut(dst as usize as *mut u32, count).fill(value),
        }
    }
}

exports! {
    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) {
        let d = driver()?;
        let inner = d.lock();
        let c = state::current(&inner)?;
        let dev = inner.contexts[&c].dev;
        drop(inner);
        d.machine.reap();
        let used = d.machine.used(dev);
        out(free, (d.cfg.memory - used) as usize)?;
        out(total, d.cfg.memory as usize)
    }

    fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) {
        let d = driver()?;
        if dptr.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let addr = alloc_device(d, &mut d.lock(), bytesize, AllocKind::Device)?;
        out(dptr, addr)
    }

    /// The pitch is the row width rounded up to 512 bytes (the texture alignment).
    fn cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, p_pitch: *mut usize, width: usize, height: usize, element_size: c_uint) {
        let d = driver()?;
        if dptr.is_null() || p_pitch.is_null() || width == 0 || height == 0 || !matches!(element_size, 4 | 8 | 16) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let pitch = width.checked_next_multiple_of(512).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        let bytes = pitch.checked_mul(height).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
        let addr = alloc_device(d, &mut d.lock(), bytes, AllocKind::Pitch)?;
        out(dptr, addr)?;
        out(p_pitch, pitch)
    }

    /// Managed memory lives on the device in this simulation (it is charged like `cuMemAlloc`).
    fn cuMemAllocManaged(dptr: *mut CUdeviceptr, bytesize: usize, flags: c_uint) {
        let d = driver()?;
        if dptr.is_null() || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let addr = alloc_device(d, &mut d.lock(), bytesize, AllocKind::Managed)?;
        out(dptr, addr)
    }

    fn cuMemFree_v2(dptr: CUdeviceptr) {
        let d = driver()?;
        let mut inner = d.lock();
        state::current(&inner)?;
        if free_alloc(d, &mut inner, dptr) || graph_mem::free(&mut inner, dptr) == Some(true) {
            Ok(())
        } else {
            Err(R::CUDA_ERROR_INVALID_VALUE)
        }
    }

    fn cuMemGetAddressRange_v2(pbase: *mut CUdeviceptr, psize: *mut usize, dptr: CUdeviceptr) {
        let d = driver()?;
        let inner = d.lock();
        state::current(&inner)?;
        let (base, a) = inner.alloc_containing(dptr, 0).ok_or(R::CUDA_ERROR_NOT_FOUND)?;
        if !pbase.is_null() {
            out(pbase, base)?;
        }
        if !psize.is_null() {
            out(psize, a.size)?;
        }
        Ok(())
    }

    fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) {
        host_alloc(pp, bytesize)
    }

    fn cuMemHostAlloc(pp: *mut *mut c_void, bytesize: usize, _flags: c_uint) {
        host_alloc(pp, bytesize)
    }

    fn cuMemFreeHost(p: *mut c_void) {
        let d = driver()?;
        let len = d.lock().host.remove(&id(p)).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        unmap(id(p), len);
        Ok(())
    }

    fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) {
        alloc_async(dptr, bytesize, stream)
    }

    fn cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) {
        alloc_async(dptr, bytesize, stream)
    }

    fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) {
        let d = driver()?;
        free_async(d, &mut d.lock(), dptr, stream)
    }

    fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, stream: CUstream) {
        let d = driver()?;
        free_async(d, &mut d.lock(), dptr, stream)
    }

    fn cuMemAllocFromPoolAsync(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream) {
        alloc_from_pool(dptr, bytesize, pool, stream)
    }

    fn cuMemAllocFromPoolAsync_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, stream: CUstream) {
        alloc_from_pool(dptr, bytesize, pool, stream)
    }

    fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) {
        let d = driver()?;
        d.physical(dev)?;
        if !d.cfg.memory_pools {
            return Err(R::CUDA_ERROR_NOT_SUPPORTED);
        }
        let (default, _) = device_pools(d, &mut d.lock(), dev as u32);
        out(pool, handle(default))
    }

    fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) {
        let d = driver()?;
        d.physical(dev)?;
        if !d.cfg.memory_pools {
            return Err(R::CUDA_ERROR_NOT_SUPPORTED);
        }
        let (_, current) = device_pools(d, &mut d.lock(), dev as u32);
        out(pool, handle(current))
    }

    fn cuDeviceSetMemPool(dev: CUdevice, pool: CUmemoryPool) {
        let d = driver()?;
        d.physical(dev)?;
        let mut inner = d.lock();
        let p = inner.pools.get(&id(pool)).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        if p.ordinal != dev as u32 {
            return Err(R::CUDA_ERROR_INVALID_DEVICE);
        }
        let (default, _) = device_pools(d, &mut inner, dev as u32);
        inner.pools_by_device[dev as usize] = Some((default, id(pool)));
        Ok(())
    }

    fn cuMemPoolCreate(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) {
        let d = driver()?;
        let props = read(props)?;
        if pool.is_null()
            || props.allocType != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
            || props.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE
        {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let dev = d.physical(props.location.id).map_err(|_| R::CUDA_ERROR_INVALID_VALUE)?;
        if !d.cfg.memory_pools {
            return Err(R::CUDA_ERROR_NOT_SUPPORTED);
        }
        let h = d.new_id();
        d.lock().pools.insert(h, new_pool(props.location.id as u32, dev));
        out(pool, handle(h))
    }

    fn cuMemPoolDestroy(pool: CUmemoryPool) {
        let d = driver()?;
        let mut inner = d.lock();
        let p = id(pool);
        if !inner.pools.contains_key(&p) || inner.pools_by_device.iter().flatten().any(|(def, _)| *def == p) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        // Outstanding allocations stay valid until freed (they then return to the device).
        trim_pools(d, &mut inner, Some((p, 0)));
        for a in inner.allocs.values_mut() {
            if a.kind == AllocKind::Pool(p) {
                a.kind = AllocKind::Device;
            }
        }
        inner.pools.remove(&p);
        for slot in inner.pools_by_device.iter_mut().flatten() {
            if slot.1 == p {
                slot.1 = slot.0;
            }
        }
        Ok(())
    }

    fn cuMemPoolTrimTo(pool: CUmemoryPool, min_bytes_to_keep: usize) {
        let d = driver()?;
        let mut inner = d.lock();
        if !inner.pools.contains_key(&id(pool)) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        trim_pools(d, &mut inner, Some((id(pool), min_bytes_to_keep as u64)));
        Ok(())
    }

    fn cuMemPoolGetAttribute(pool: CUmemoryPool, attr: PA, value: *mut c_void) {
        let d = driver()?;
        let inner = d.lock();
        let p = inner.pools.get(&id(pool)).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        let v64 = match attr {
            PA::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => return out(value.cast::<i32>(), p.reuse[0]),
            PA::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => return out(value.cast::<i32>(), p.reuse[1]),
            PA::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => return out(value.cast::<i32>(), p.reuse[2]),
            PA::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => p.release_threshold,
            PA::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT => p.reserved,
            PA::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH => p.reserved_high,
            PA::CU_MEMPOOL_ATTR_USED_MEM_CURRENT => p.used,
            PA::CU_MEMPOOL_ATTR_USED_MEM_HIGH => p.used_high,
            _ => return Err(R::CUDA_ERROR_INVALID_VALUE),
        };
        out(value.cast::<u64>(), v64)
    }

    fn cuMemPoolSetAttribute(pool: CUmemoryPool, attr: PA, value: *mut c_void) {
        let d = driver()?;
        let mut inner = d.lock();
        let p = inner.pools.get_mut(&id(pool)).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        match attr {
            PA::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => p.reuse[0] = read(value.cast::<i32>())?,
            PA::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => p.reuse[1] = read(value.cast::<i32>())?,
            PA::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => p.reuse[2] = read(value.cast::<i32>())?,
            PA::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => p.release_threshold = read(value.cast::<u64>())?,
            // Only resetting a high-water mark (to 0) is allowed.
            PA::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH if read(value.cast::<u64>())? == 0 => p.reserved_high = p.reserved,
            PA::CU_MEMPOOL_ATTR_USED_MEM_HIGH if read(value.cast::<u64>())? == 0 => p.used_high = p.used,
            _ => return Err(R::CUDA_ERROR_INVALID_VALUE),
        }
        Ok(())
    }

    fn cuArrayCreate_v2(p_handle: *mut CUarray, desc: *const CUDA_ARRAY_DESCRIPTOR) {
        let d = driver()?;
        let desc = read(desc)?;
        if p_handle.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let bytes = array_bytes(&desc.into())?;
        out(p_handle, handle(create_array(d, bytes)?))
    }

    fn cuArray3DCreate_v2(p_handle: *mut CUarray, desc: *const CUDA_ARRAY3D_DESCRIPTOR) {
        let d = driver()?;
        let desc = read(desc)?;
        if p_handle.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        out(p_handle, handle(create_array(d, array_bytes(&desc)?)?))
    }

    fn cuArrayDestroy(h: CUarray) {
        destroy_array(id(h))
    }

    /// A mipmapped array costs the sum of its levels, each half the previous in every extent.
    fn cuMipmappedArrayCreate(p_handle: *mut CUmipmappedArray, desc: *const CUDA_ARRAY3D_DESCRIPTOR, levels: c_uint) {
        let d = driver()?;
        let desc = read(desc)?;
        if p_handle.is_null() || levels == 0 || levels > 32 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut total = 0u64;
        let mut level = desc;
        for _ in 0..levels {
            total = total.checked_add(array_bytes(&level)?).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
            level.Width = (level.Width / 2).max(1);
            level.Height = if level.Height == 0 { 0 } else { (level.Height / 2).max(1) };
            level.Depth = if level.Depth == 0 { 0 } else { (level.Depth / 2).max(1) };
        }
        out(p_handle, handle(create_array(d, total)?))
    }

    fn cuMipmappedArrayDestroy(h: CUmipmappedArray) {
        destroy_array(id(h))
    }

    fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, n: usize) { copy(dst, Side::Any, src, Side::Any, n, None) }
    fn cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, n: usize) { copy(dst, Side::Any, src, Side::Any, n, None) }
    fn cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream) { copy(dst, Side::Any, src, Side::Any, n, Some(s)) }
    fn cuMemcpyAsync_ptsz(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream) { copy(dst, Side::Any, src, Side::Any, n, Some(s)) }
    fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) { copy(dst, Side::Device, id(src.cast_mut()), Side::Host, n, None) }
    fn cuMemcpyHtoD_v2_ptds(dst: CUdeviceptr, src: *const c_void, n: usize) { copy(dst, Side::Device, id(src.cast_mut()), Side::Host, n, None) }
    fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) { copy(id(dst), Side::Host, src, Side::Device, n, None) }
    fn cuMemcpyDtoH_v2_ptds(dst: *mut c_void, src: CUdeviceptr, n: usize) { copy(id(dst), Side::Host, src, Side::Device, n, None) }
    fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) { copy(dst, Side::Device, src, Side::Device, n, None) }
    fn cuMemcpyDtoD_v2_ptds(dst: CUdeviceptr, src: CUdeviceptr, n: usize) { copy(dst, Side::Device, src, Side::Device, n, None) }
    fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, n: usize, s: CUstream) { copy(dst, Side::Device, id(src.cast_mut()), Side::Host, n, Some(s)) }
    fn cuMemcpyHtoDAsync_v2_ptsz(dst: CUdeviceptr, src: *const c_void, n: usize, s: CUstream) { copy(dst, Side::Device, id(src.cast_mut()), Side::Host, n, Some(s)) }
    fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, n: usize, s: CUstream) { copy(id(dst), Side::Host, src, Side::Device, n, Some(s)) }
    fn cuMemcpyDtoHAsync_v2_ptsz(dst: *mut c_void, src: CUdeviceptr, n: usize, s: CUstream) { copy(id(dst), Side::Host, src, Side::Device, n, Some(s)) }
    fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream) { copy(dst, Side::Device, src, Side::Device, n, Some(s)) }
    fn cuMemcpyDtoDAsync_v2_ptsz(dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream) { copy(dst, Side::Device, src, Side::Device, n, Some(s)) }
    fn cuMemsetD8_v2(dst: CUdeviceptr, uc: u8, n: usize) { memset(dst, u32::from(uc), 1, n, None) }
    fn cuMemsetD8_v2_ptds(dst: CUdeviceptr, uc: u8, n: usize) { memset(dst, u32::from(uc), 1, n, None) }
    fn cuMemsetD32_v2(dst: CUdeviceptr, ui: c_uint, n: usize) { memset(dst, ui, 4, n, None) }
    fn cuMemsetD32_v2_ptds(dst: CUdeviceptr, ui: c_uint, n: usize) { memset(dst, ui, 4, n, None) }
    fn cuMemsetD8Async(dst: CUdeviceptr, uc: u8, n: usize, s: CUstream) { memset(dst, u32::from(uc), 1, n, Some(s)) }
    fn cuMemsetD8Async_ptsz(dst: CUdeviceptr, uc: u8, n: usize, s: CUstream) { memset(dst, u32::from(uc), 1, n, Some(s)) }
    fn cuMemsetD32Async(dst: CUdeviceptr, ui: c_uint, n: usize, s: CUstream) { memset(dst, ui, 4, n, Some(s)) }
    fn cuMemsetD32Async_ptsz(dst: CUdeviceptr, ui: c_uint, n: usize, s: CUstream) { memset(dst, ui, 4, n, Some(s)) }
}

fn host_alloc(pp: *mut *mut c_void, bytes: usize) -> Result<(), R> {
    let d = driver()?;
    if pp.is_null() || bytes == 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    state::current(&d.lock())?;
    let addr = map_anonymous(bytes).ok_or(R::CUDA_ERROR_OUT_OF_MEMORY)?;
    d.lock().host.insert(addr, bytes);
    // SAFETY: checked non-null above.
    unsafe { out(pp, addr as usize as *mut c_void) }
}
