//! The allocations this process holds: key (a device pointer or handle) → (device, bytes).
//!
//! Allocation and free are hot paths, so the map takes no lock: a fixed open-addressing table
//! of atomic words, linearly probed. A key is claimed by one compare-and-swap, published after
//! its value is written, and removed by one compare-and-swap to a tombstone, so exactly one
//! `remove` wins for a key. A run of collisions longer than [`MAX_PROBE`] (practically never)
//! spills into a locked overflow map instead of failing. The table is zero-filled virtual
//! memory: untouched pages cost nothing.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = u64::MAX;
const CLAIMED: u64 = u64::MAX - 1;
/// Longest probe run before an insert spills into the overflow map.
pub const MAX_PROBE: usize = 128;
const DEVICE_SHIFT: u32 = 56;

#[repr(C)]
struct Entry {
    key: AtomicU64,
    /// `device << 56 | bytes`.
    value: AtomicU64,
}

/// A lock-free map of live allocations.
pub struct AllocationMap {
    table: *mut Entry,
    mask: usize,
    len: AtomicUsize,
    overflow: Mutex<HashMap<u64, u64>>,
}

// SAFETY: the table is only accessed through atomics; the overflow map through its mutex.
unsafe impl Send for AllocationMap {}
// SAFETY: as above.
unsafe impl Sync for AllocationMap {}

impl Drop for AllocationMap {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with this exact layout.
        unsafe { dealloc(self.table.cast(), Self::layout(self.mask + 1)) };
    }
}

fn pack(device: u32, bytes: u64) -> u64 {
    (u64::from(device) << DEVICE_SHIFT) | (bytes & ((1 << DEVICE_SHIFT) - 1))
}

fn unpack(v: u64) -> (u32, u64) {
    ((v >> DEVICE_SHIFT) as u32, v & ((1 << DEVICE_SHIFT) - 1))
}

impl AllocationMap {
    /// A map with room for `capacity` entries (rounded up to a power of two).
    pub fn with_capacity(capacity: usize) -> AllocationMap {
        let n = capacity.next_power_of_two().max(MAX_PROBE * 2);
        let layout = Self::layout(n);
        // SAFETY: a non-zero-sized layout; zeroed memory is a valid table (all EMPTY).
        let table = unsafe { alloc_zeroed(layout) }.cast::<Entry>();
        if table.is_null() {
            handle_alloc_error(layout);
        }
        AllocationMap { table, mask: n - 1, len: AtomicUsize::new(0), overflow: Mutex::new(HashMap::new()) }
    }

    fn layout(n: usize) -> Layout {
        Layout::array::<Entry>(n).expect("table size fits")
    }

    fn entry(&self, i: usize) -> &Entry {
        // SAFETY: `i & mask` is within the table allocated for `mask + 1` entries.
        unsafe { &*self.table.add(i & self.mask) }
    }

    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize
    }

    /// Records that `key` holds `bytes` of `device` (`bytes` < 2^56, `device` < 256). Keys are
    /// unique while live; 0 and the two top values are reserved and refused (returns false).
    pub fn insert(&self, key: u64, device: u32, bytes: u64) -> bool {
        if key == EMPTY || key >= CLAIMED || bytes >= 1 << DEVICE_SHIFT || device > 255 {
            return false;
        }
        let h = self.home(key);
        for i in 0..MAX_PROBE {
            let e = self.entry(h + i);
            let k = e.key.load(Acquire);
            if (k == EMPTY || k == TOMBSTONE) && e.key.compare_exchange(k, CLAIMED, AcqRel, Acquire).is_ok() {
                e.value.store(pack(device, bytes), Relaxed);
                e.key.store(key, Release);
                self.len.fetch_add(1, Relaxed);
                return true;
            }
        }
        self.overflow.lock().unwrap_or_else(|e| e.into_inner()).insert(key, pack(device, bytes));
        self.len.fetch_add(1, Relaxed);
        true
    }

    /// Removes `key`, returning its (device, bytes); `None` for a key never inserted or
    /// already removed (exactly one concurrent remove of a key succeeds).
    pub fn remove(&self, key: u64) -> Option<(u32, u64)> {
        if key == EMPTY || key >= CLAIMED {
            return None;
        }
        let h = self.home(key);
        for i in 0..MAX_PROBE {
            let e = self.entry(h + i);
            let k = e.key.load(Acquire);
            if k == key {
                let v = e.value.load(Relaxed);
                if e.key.compare_exchange(key, TOMBSTONE, AcqRel, Acquire).is_ok() {
                    self.len.fetch_sub(1, Relaxed);
                    return Some(unpack(v));
                }
                return None;
            }
            if k == EMPTY {
                break;
            }
        }
        if self.len.load(Relaxed) == 0 {
            return None;
        }
        let v = self.overflow.lock().unwrap_or_else(|e| e.into_inner()).remove(&key)?;
        self.len.fetch_sub(1, Relaxed);
        Some(unpack(v))
    }

    /// The (device, bytes) of a live key, without removing it.
    pub fn get(&self, key: u64) -> Option<(u32, u64)> {
        let h = self.home(key);
        for i in 0..MAX_PROBE {
            let e = self.entry(h + i);
            let k = e.key.load(Acquire);
            if k == key {
                return Some(unpack(e.value.load(Relaxed)));
            }
            if k == EMPTY {
                break;
            }
        }
        self.overflow.lock().unwrap_or_else(|e| e.into_inner()).get(&key).map(|v| unpack(*v))
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// True when no allocation is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry of `device`, returning their total bytes (a context's allocations
    /// die with it in the driver).
    pub fn drain_device(&self, device: u32) -> u64 {
        let mut total = 0;
        for i in 0..=self.mask {
            let e = self.entry(i);
            let k = e.key.load(Acquire);
            if k == EMPTY || k >= CLAIMED {
                continue;
            }
            let (d, bytes) = unpack(e.value.load(Relaxed));
            if d == device && e.key.compare_exchange(k, TOMBSTONE, AcqRel, Acquire).is_ok() {
                self.len.fetch_sub(1, Relaxed);
                total += bytes;
            }
        }
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        overflow.retain(|_, v| {
            let (d, bytes) = unpack(*v);
            if d == device {
                total += bytes;
                self.len.fetch_sub(1, Relaxed);
            }
            d != device
        });
        total
    }

    /// Removes every entry (after `fork`, the child holds none of its parent's allocations).
    pub fn clear(&self) {
        for i in 0..=self.mask {
            let e = self.entry(i);
            e.key.store(EMPTY, Relaxed);
            e.value.store(0, Relaxed);
        }
        self.overflow.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.len.store(0, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn insert_get_remove() {
        let m = AllocationMap::with_capacity(1024);
        assert!(m.insert(0x7f00_0000_1000, 3, 4096));
        assert_eq!(m.get(0x7f00_0000_1000), Some((3, 4096)));
        assert_eq!(m.remove(0x7f00_0000_1000), Some((3, 4096)));
        assert_eq!(m.remove(0x7f00_0000_1000), None, "a second free is not ours");
        assert_eq!(m.remove(0xdead), None);
        assert!(!m.insert(0, 0, 1));
        assert!(m.is_empty());
    }

    #[test]
    fn collisions_spill_and_come_back() {
        let m = AllocationMap::with_capacity(256);
        // More keys than the table has slots: some land in the overflow map.
        let keys: Vec<u64> = (1..=2000u64).map(|i| i * 512).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(m.insert(*k, (i % 16) as u32, i as u64));
        }
        assert_eq!(m.len(), 2000);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.remove(*k), Some(((i % 16) as u32, i as u64)), "key {k}");
        }
        assert!(m.is_empty());
    }

    #[test]
    fn concurrent_inserts_and_removes_are_exact() {
        let m = Arc::new(AllocationMap::with_capacity(1 << 16));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    let mut removed = 0u64;
                    for round in 0..20u64 {
                        for i in 0..1000u64 {
                            let key = ((t << 40) | (round << 20) | (i + 1)) * 256;
                            assert!(m.insert(key, t as u32, i + 1));
                        }
                        for i in 0..1000u64 {
                            let key = ((t << 40) | (round << 20) | (i + 1)) * 256;
                            removed += m.remove(key).expect("present").1;
                        }
                    }
                    removed
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 4 * 20 * (1000 * 1001 / 2));
        assert!(m.is_empty());
    }
}
