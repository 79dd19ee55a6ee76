//! Stream-ordered memory (`cuMemAllocAsync`, `cuMemAllocFromPoolAsync`) is charged as what it
//! really holds on the device: each memory pool's *reserved* bytes. A pool keeps freed blocks
//! for reuse (up to its release threshold, which a program may set to "never release"); those
//! bytes are the container's as much as live ones, so freeing into the pool gives nothing back
//! until the pool itself releases memory (a trim, a synchronisation below the threshold).
//!
//! Each pool's charge is brought in line with its `CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT` after
//! every stream-ordered allocation, after frees and trims, before the views answer, and before
//! an allocation is refused.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use cuda_sys::driver::{CUmemPool_attribute, CUmemoryPool, CUresult};
use vgpu_limiter::region::Region;

use crate::table::real;

use CUresult as R;

/// One pool seen by this process.
#[derive(Default)]
pub struct PoolEntry {
    pool: AtomicU64,
    device: AtomicU32,
    /// Bytes of the pool charged to the container.
    charged: AtomicU64,
}

/// Pools seen being created or used, their devices and charges: a small lock-free table.
pub struct PoolTable {
    entries: [PoolEntry; 64],
}

impl Default for PoolTable {
    fn default() -> Self {
        PoolTable { entries: std::array::from_fn(|_| PoolEntry::default()) }
    }
}

impl PoolTable {
    /// The entry of `pool`, recording it on `device` if new (`None` when the table is full:
    /// its allocations are then charged one by one).
    pub fn record(&self, pool: u64, device: usize) -> Option<&PoolEntry> {
        if pool == 0 {
            return None;
        }
        for e in &self.entries {
            let cur = e.pool.load(Acquire);
            let mine = cur == pool
                || (cur == 0
                    && match e.pool.compare_exchange(0, pool, AcqRel, Acquire) {
                        Ok(_) => true,
                        Err(winner) => winner == pool, // another thread recorded the same pool here
                    });
            if mine {
                e.device.store(device as u32, Release);
                return Some(e);
            }
        }
        None
    }

    /// The device of `pool`, if recorded.
    pub fn device(&self, pool: u64) -> Option<usize> {
        self.entries.iter().find(|e| e.pool.load(Acquire) == pool).map(|e| e.device.load(Acquire) as usize)
    }

    fn live(&self) -> impl Iterator<Item = &PoolEntry> {
        self.entries.iter().filter(|e| e.pool.load(Acquire) != 0)
    }

    /// Forgets everything (a child after `fork` holds none of its parent's pools).
    pub fn clear(&self) {
        for e in &self.entries {
            e.pool.store(0, Relaxed);
            e.charged.store(0, Relaxed);
        }
    }
}

/// A pool attribute the driver reports as a 64-bit count.
fn attribute(pool: u64, attr: CUmemPool_attribute) -> Option<u64> {
    let f = real::cuMemPoolGetAttribute()?;
    let mut v = 0u64;
    // SAFETY: a pool handle the driver gave the program and an 8-byte out-value, as the
    // driver documents for the byte-count attributes.
    (unsafe { f(pool as CUmemoryPool, attr, (&mut v as *mut u64).cast()) } == R::CUDA_SUCCESS).then_some(v)
}

fn reserved(pool: u64) -> Option<u64> {
    attribute(pool, CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
}

/// Brings a pool's charge in line with what it reserves now; true when that gave memory back.
fn resync(region: &Region, e: &PoolEntry) -> bool {
    let pool = e.pool.load(Acquire);
    let Some(now) = reserved(pool) else { return false };
    let before = e.charged.swap(now, AcqRel);
    let device = e.device.load(Acquire) as usize;
    if now > before {
        region.force_charge(device, now - before);
    } else if before > now {
        region.uncharge(device, before - now);
    }
    before > now
}

/// Brings every known pool's charge in line (before views answer and before a refusal).
/// True when that gave any memory back.
pub fn resync_all(pools: &PoolTable, region: &Region) -> bool {
    let mut freed = false;
    for e in pools.live() {
        freed |= resync(region, e);
    }
    freed
}

/// A pool is gone: its charge goes back.
pub fn forget(pools: &PoolTable, region: &Region, pool: u64) {
    if let Some(e) = pools.entries.iter().find(|e| e.pool.load(Acquire) == pool) {
        region.uncharge(e.device.load(Acquire) as usize, e.charged.swap(0, AcqRel));
        e.pool.store(0, Release);
    }
}

/// Brings the charge of `pool` in line (after a trim).
pub fn resync_pool(pools: &PoolTable, region: &Region, pool: u64) {
    if let Some(e) = pools.live().find(|e| e.pool.load(Acquire) == pool) {
        let _ = resync(region, e);
    }
}

/// A stream-ordered allocation of `bytes` from `pool` on `device`: if the pool has not that
/// much cached, room for `bytes` is reserved first (refused at the quota); after the call the
/// pool's growth is what stays charged. `None` when the pool cannot be accounted as a whole
/// (unknown attributes, full table): the caller charges the allocation itself.
pub fn allocate(
    pools: &PoolTable,
    region: &Region,
    pool: u64,
    device: usize,
    bytes: u64,
    forward: impl FnOnce() -> R,
    undo: impl FnOnce(),
) -> Option<R> {
    let e = pools.record(pool, device)?;
    let used = attribute(pool, CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
    let before_call = reserved(pool)?;
    let cached = before_call.saturating_sub(used);
    let mut reservation = None;
    if cached < bytes {
        match region.reserve_or(device, bytes, || resync_all(pools, region)) {
            Ok(r) => reservation = Some(r),
            Err(_) => return Some(R::CUDA_ERROR_OUT_OF_MEMORY),
        }
    }
    let rc = forward();
    if rc != R::CUDA_SUCCESS {
        return Some(rc); // the reservation rolls back
    }
    let now = reserved(pool).unwrap_or(e.charged.load(Acquire) + bytes);
    let before = e.charged.swap(now, AcqRel);
    let grew = now.saturating_sub(before);
    let shrank = before.saturating_sub(now);
    if shrank > 0 {
        region.uncharge(device, shrank);
    }
    // What the pool took is charged through the reservation; growth beyond it (a cache too
    // fragmented to serve the request, allocation granularity) must fit the quota too, or the
    // allocation is undone and refused.
    let held = reservation.as_ref().map_or(0, |r| r.bytes());
    let extra = grew.saturating_sub(held);
    let extra_ok = extra == 0 || region.reserve_or(device, extra, || false).map(|r| r.keep()).is_ok();
    if !extra_ok {
        undo();
        if let Some(trim) = real::cuMemPoolTrimTo() {
            // SAFETY: the pool the allocation came from; keeps what it held before the call.
            unsafe { trim(pool as CUmemoryPool, before_call as usize) };
        }
        e.charged.fetch_sub(grew.min(e.charged.load(Acquire)), AcqRel);
        let _ = resync(region, e);
        return Some(R::CUDA_ERROR_OUT_OF_MEMORY); // the reservation rolls back
    }
    if let Some(mut r) = reservation {
        r.shrink_to(grew.min(held));
        r.keep();
    }
    Some(rc)
}
