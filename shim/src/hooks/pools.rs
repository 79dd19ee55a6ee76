//! Stream-ordered memory (`cuMemAllocAsync`, `cuMemAllocFromPoolAsync`) is charged as what it
//! really holds on the device: each memory pool's *reserved* bytes. A pool keeps freed blocks
//! for reuse (up to its release threshold, which a program may set to "never release"); those
//! bytes are the container's as much as live ones, so freeing into the pool gives nothing back
//! until the pool itself releases memory (a trim, a synchronisation below the threshold).
//!
//! Each pool's charge is brought in line with its `CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT` after
//! every stream-ordered allocation, after frees and trims, before the views answer, and before
//! an allocation is refused.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use cuda_sys::driver::{CUmemPool_attribute, CUresult};
use vgpu_limiter::accounting::{self, Delta};

use super::{Driver, Enforce};

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

fn reserved<D: Driver>(e: &Enforce<D>, pool: u64) -> Option<u64> {
    e.driver.pool_attribute(pool, CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
}

/// Applies a change to device `device`'s charge.
fn apply<D: Driver>(e: &Enforce<D>, device: usize, delta: Delta) {
    match delta {
        Delta::Charge(n) => e.region.force_charge(device, n),
        Delta::Uncharge(n) => e.region.uncharge(device, n),
        Delta::None => {}
    }
}

/// Brings a pool's charge in line with what it reserves now; true when that gave memory back.
fn resync<D: Driver>(e: &Enforce<D>, entry: &PoolEntry) -> bool {
    let Some(now) = reserved(e, entry.pool.load(Acquire)) else { return false };
    let delta = accounting::resync(entry.charged.swap(now, AcqRel), now);
    apply(e, entry.device.load(Acquire) as usize, delta);
    matches!(delta, Delta::Uncharge(_))
}

/// Brings every known pool's charge, and the graph allocators' (see `graphs`), in line
/// (before views answer and before a refusal).
/// True when that gave any memory back.
pub fn resync_all<D: Driver>(e: &Enforce<D>) -> bool {
    let mut freed = super::graphs::resync_all(e);
    for entry in e.shim.pools.live() {
        freed |= resync(e, entry);
    }
    freed
}

/// A pool is gone: its charge goes back.
pub fn forget<D: Driver>(e: &Enforce<D>, pool: u64) {
    if let Some(entry) = e.shim.pools.entries.iter().find(|x| x.pool.load(Acquire) == pool) {
        e.region.uncharge(entry.device.load(Acquire) as usize, entry.charged.swap(0, AcqRel));
        entry.pool.store(0, Release);
    }
}

/// Brings the charge of `pool` in line (after a trim).
pub fn resync_pool<D: Driver>(e: &Enforce<D>, pool: u64) {
    if let Some(entry) = e.shim.pools.live().find(|x| x.pool.load(Acquire) == pool) {
        let _ = resync(e, entry);
    }
}

/// A stream-ordered allocation of `bytes` from `pool` on `device`: if the pool has not that
/// much cached, room for `bytes` is reserved first (refused at the quota); after the call the
/// pool's growth is what stays charged. `None` when the pool cannot be accounted as a whole
/// (unknown attributes, full table): the caller charges the allocation itself.
pub fn allocate<D: Driver>(
    e: &Enforce<D>,
    pool: u64,
    device: usize,
    bytes: u64,
    forward: impl FnOnce() -> R,
    undo: impl FnOnce(),
) -> Option<R> {
    let entry = e.shim.pools.record(pool, device)?;
    let used = e.driver.pool_attribute(pool, CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
    let before_call = reserved(e, pool)?;
    let mut reservation = None;
    if accounting::pool_needs_room(before_call, used, bytes) {
        match e.region.reserve_or(device, bytes, || resync_all(e)) {
            Ok(r) => reservation = Some(r),
            Err(_) => return Some(R::CUDA_ERROR_OUT_OF_MEMORY),
        }
    }
    let rc = forward();
    if rc != R::CUDA_SUCCESS {
        return Some(rc); // the reservation rolls back
    }
    let now = reserved(e, pool).unwrap_or(entry.charged.load(Acquire) + bytes);
    let before = entry.charged.swap(now, AcqRel);
    let held = reservation.as_ref().map_or(0, |r| r.bytes());
    let growth = accounting::pool_growth(before, now, held);
    if growth.shrank > 0 {
        e.region.uncharge(device, growth.shrank);
    }
    // What the pool took is charged through the reservation; growth beyond it must fit the
    // quota too, or the allocation is undone and refused.
    let extra_ok = growth.extra == 0 || e.region.reserve_or(device, growth.extra, || false).map(|r| r.keep()).is_ok();
    if !extra_ok {
        undo();
        // The pool keeps what it held before the call.
        let _ = e.driver.pool_trim(pool, before_call);
        entry.charged.fetch_sub(growth.grew.min(entry.charged.load(Acquire)), AcqRel);
        let _ = resync(e, entry);
        return Some(R::CUDA_ERROR_OUT_OF_MEMORY); // the reservation rolls back
    }
    if let Some(mut r) = reservation {
        r.shrink_to(growth.kept);
        r.keep();
    }
    Some(rc)
}
