//! What an allocation path charges, as pure functions over plain numbers: the shim's hook
//! bodies ask these and only carry out the answer. Nothing here touches the region, the
//! driver or a clock.
//!
//! * pitched allocations: the worst case reserved before the driver pads the rows, and what
//!   stays charged after;
//! * virtual memory management: a physical handle stays charged while any reference to it
//!   (its creation, each retain) or any mapping of it lives;
//! * memory pools: a pool is charged what it reserves on the device, cached blocks included;
//! * contexts: what creating one cost, from NVML's figures around the creation.

use std::collections::HashMap;

/// Widest row alignment a driver uses for pitched allocations: the worst case reserved
/// before `cuMemAllocPitch` is called.
pub const PITCH_ALIGN: u64 = 512;

/// Bytes to reserve before a pitched allocation of `height` rows of `width` bytes: each row
/// padded to [`PITCH_ALIGN`]. `None` when that overflows (the allocation cannot fit).
pub fn pitch_worst_case(width: u64, height: u64) -> Option<u64> {
    width.checked_next_multiple_of(PITCH_ALIGN)?.checked_mul(height)
}

/// What a pitched allocation keeps charged once the driver has chosen `pitch`: exactly
/// pitch × height, or `None` when the driver padded beyond the `reserved` worst case (the
/// allocation is then undone and refused: it was never inside the quota).
pub fn pitch_charge(pitch: u64, height: u64, reserved: u64) -> Option<u64> {
    pitch.checked_mul(height).filter(|actual| *actual <= reserved)
}

/// VMM physical handles in one process: their references and live mappings. The driver frees a
/// handle's memory once every reference is released (one from `cuMemCreate`, one per
/// `cuMemRetainAllocationHandle`) and every mapping unmapped; its charge ends then, not before.
#[derive(Default, Debug)]
pub struct VmmBook {
    /// Live mappings per handle.
    mapped: HashMap<u64, u32>,
    /// Mapping start address → handle.
    by_address: HashMap<u64, u64>,
    /// References not yet released, per handle this process saw created, retained or released.
    refs: HashMap<u64, u32>,
}

impl VmmBook {
    /// `handle` was created (one reference).
    pub fn created(&mut self, handle: u64) {
        self.refs.insert(handle, 1);
    }

    /// `handle` was retained (`cuMemRetainAllocationHandle`): one more reference. A handle this
    /// process did not create is assumed to hold its creator's reference as well.
    pub fn retained(&mut self, handle: u64) {
        *self.refs.entry(handle).or_insert(1) += 1;
    }

    /// `handle` was mapped at `address`.
    pub fn mapped(&mut self, address: u64, handle: u64) {
        *self.mapped.entry(handle).or_default() += 1;
        self.by_address.insert(address, handle);
    }

    /// `handle` was released: true when its charge ends now (no reference and no mapping left),
    /// false while a reference or a mapping keeps the memory alive.
    pub fn released(&mut self, handle: u64) -> bool {
        let refs = self.refs.entry(handle).or_insert(1);
        *refs = refs.saturating_sub(1);
        let ended = *refs == 0 && self.mappings(handle) == 0;
        if ended {
            self.refs.remove(&handle);
        }
        ended
    }

    /// `[address, address + size)` was unmapped: the handles whose charge ends now (every
    /// reference released earlier, and this was their last mapping).
    pub fn unmapped(&mut self, address: u64, size: u64) -> Vec<u64> {
        let end = address.saturating_add(size);
        let starts: Vec<u64> = self.by_address.keys().copied().filter(|a| (address..end).contains(a)).collect();
        let mut ended = Vec::new();
        for a in starts {
            let Some(handle) = self.by_address.remove(&a) else { continue };
            let left = self.mapped.get_mut(&handle).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left == Some(0) {
                self.mapped.remove(&handle);
                if self.refs.get(&handle) == Some(&0) {
                    self.refs.remove(&handle);
                    ended.push(handle);
                }
            }
        }
        ended
    }

    /// Live mappings of `handle`.
    pub fn mappings(&self, handle: u64) -> u32 {
        self.mapped.get(&handle).copied().unwrap_or(0)
    }
}

/// A change to a charge: what to add to or take from the container's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// Charge this many more bytes (the driver has already taken them).
    Charge(u64),
    /// Give this many bytes back.
    Uncharge(u64),
    /// Nothing changes.
    None,
}

/// Bringing a charge of `before` bytes in line with `now`.
pub fn resync(before: u64, now: u64) -> Delta {
    match now.cmp(&before) {
        std::cmp::Ordering::Greater => Delta::Charge(now - before),
        std::cmp::Ordering::Less => Delta::Uncharge(before - now),
        std::cmp::Ordering::Equal => Delta::None,
    }
}

/// Whether a stream-ordered allocation of `bytes` from a pool reserving `reserved` bytes with
/// `used` of them live needs room in the quota first (its cached blocks cannot serve it).
pub fn pool_needs_room(reserved: u64, used: u64, bytes: u64) -> bool {
    reserved.saturating_sub(used) < bytes
}

/// What a pool's successful allocation changes, given the pool's charge `before` the call,
/// what it reserves `now`, and the bytes `held` in a reservation made for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGrowth {
    /// Bytes the pool grew by.
    pub grew: u64,
    /// Bytes the pool shrank by (it released cached memory meanwhile).
    pub shrank: u64,
    /// Growth beyond the reservation, which must fit the quota on its own (fragmentation,
    /// allocation granularity) or the allocation is undone.
    pub extra: u64,
    /// What the reservation keeps once the growth is known.
    pub kept: u64,
}

/// See [`PoolGrowth`].
pub fn pool_growth(before: u64, now: u64, held: u64) -> PoolGrowth {
    let grew = now.saturating_sub(before);
    PoolGrowth { grew, shrank: before.saturating_sub(now), extra: grew.saturating_sub(held), kept: grew.min(held) }
}

/// A context costing more than this is a measurement disturbed by another process.
pub const MAX_PLAUSIBLE_CONTEXT_COST: u64 = 8 << 30;

/// NVML's figures for one device: all processes' usage, and this process's if NVML lists it.
pub type NvmlUsage = (u64, Option<u64>);

/// What creating a context cost, from NVML before and after: the growth of this process's own
/// usage when NVML lists it (other processes cannot disturb it), else the growth of the
/// device's (NVML reports another PID namespace's numbers); 0 when unknown, shrinking, or
/// implausibly large (another process allocated meanwhile).
pub fn context_cost(before: Option<NvmlUsage>, after: Option<NvmlUsage>) -> u64 {
    let grown = match (before, after) {
        (Some((_, mine_before)), Some((_, Some(mine_after)))) => mine_after.checked_sub(mine_before.unwrap_or(0)),
        (Some((device_before, _)), Some((device_after, None))) => device_after.checked_sub(device_before),
        _ => None,
    };
    grown.filter(|c| *c <= MAX_PLAUSIBLE_CONTEXT_COST).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn pitch_reserves_rows_padded_to_the_widest_alignment() {
        assert_eq!(pitch_worst_case(1, 10), Some(5120));
        assert_eq!(pitch_worst_case(512, 3), Some(1536));
        assert_eq!(pitch_worst_case(513, 2), Some(2048));
        assert_eq!(pitch_worst_case(u64::MAX, 1), None, "padding overflows");
        assert_eq!(pitch_worst_case(4096, u64::MAX), None, "rows overflow");
    }

    #[test]
    fn pitch_keeps_exactly_what_the_driver_chose_or_refuses_more_than_reserved() {
        let reserved = pitch_worst_case(1000, 100).unwrap();
        assert_eq!(pitch_charge(1024, 100, reserved), Some(102_400));
        assert_eq!(pitch_charge(1000, 100, reserved), Some(100_000), "an unpadded pitch keeps less");
        assert_eq!(pitch_charge(2048, 100, reserved), None, "padding beyond 512 was never reserved");
        assert_eq!(pitch_charge(u64::MAX, 2, u64::MAX), None);
    }

    #[test]
    fn a_released_handle_stays_charged_until_its_last_mapping_goes() {
        let mut b = VmmBook::default();
        b.mapped(0x1000, 7);
        b.mapped(0x9000, 7);
        assert!(!b.released(7), "two mappings keep it");
        assert_eq!(b.unmapped(0x1000, 0x1000), Vec::<u64>::new(), "one mapping remains");
        assert_eq!(b.mappings(7), 1);
        assert_eq!(b.unmapped(0x9000, 0x1000), vec![7], "the last unmap ends the charge");
        assert_eq!(b.mappings(7), 0);
        assert_eq!(b.unmapped(0x9000, 0x1000), Vec::<u64>::new(), "an unmap of nothing changes nothing");
    }

    #[test]
    fn an_unmapped_handle_ends_its_charge_at_release_and_unmaps_cover_ranges() {
        let mut b = VmmBook::default();
        assert!(b.released(3), "never mapped: ends at once");
        b.mapped(0x10_000, 4);
        b.mapped(0x20_000, 5);
        b.mapped(0x30_000, 6);
        assert!(!b.released(4));
        assert!(!b.released(6));
        let mut ended = b.unmapped(0x10_000, 0x10_000 + 1);
        ended.sort();
        assert_eq!(ended, vec![4], "5 was never released; 6 starts past the range");
        assert!(b.released(5), "its mapping went with the range");
        assert_eq!(b.unmapped(0, u64::MAX), vec![6], "a range to the end of the address space saturates");
    }

    #[test]
    fn a_mapping_made_again_after_release_is_counted_again() {
        let mut b = VmmBook::default();
        b.mapped(0x1000, 9);
        assert!(!b.released(9));
        b.mapped(0x2000, 9);
        assert_eq!(b.unmapped(0x1000, 1), Vec::<u64>::new());
        assert_eq!(b.unmapped(0x2000, 1), vec![9]);
    }

    #[test]
    fn a_retained_handle_stays_charged_until_every_reference_is_released() {
        let mut b = VmmBook::default();
        b.created(5);
        b.mapped(0x1000, 5);
        b.retained(5);
        assert!(!b.released(5), "the retain's reference and the mapping remain");
        assert_eq!(b.unmapped(0x1000, 1), Vec::<u64>::new(), "unmapped, but the driver still holds a reference");
        assert!(b.released(5), "the last reference, with no mapping: the charge ends");
        b.created(6);
        b.retained(6);
        assert!(!b.released(6));
        assert!(b.released(6), "references counted, not flags");
    }

    #[test]
    fn resync_moves_a_charge_either_way() {
        assert_eq!(resync(10, 25), Delta::Charge(15));
        assert_eq!(resync(25, 10), Delta::Uncharge(15));
        assert_eq!(resync(7, 7), Delta::None);
    }

    #[test]
    fn a_pool_needs_room_only_when_its_cache_cannot_serve() {
        assert!(!pool_needs_room(64 * MIB, 32 * MIB, 32 * MIB), "32 MiB cached serves 32 MiB");
        assert!(pool_needs_room(64 * MIB, 32 * MIB, 32 * MIB + 1));
        assert!(pool_needs_room(0, 0, 1), "an empty pool");
        assert!(!pool_needs_room(10, 20, 0), "a driver reporting used above reserved is not cache");
    }

    #[test]
    fn pool_growth_beyond_the_reservation_is_extra_and_shrinking_is_given_back() {
        let g = pool_growth(64 * MIB, 96 * MIB, 32 * MIB);
        assert_eq!(g, PoolGrowth { grew: 32 * MIB, shrank: 0, extra: 0, kept: 32 * MIB });
        let g = pool_growth(64 * MIB, 128 * MIB, 32 * MIB);
        assert_eq!((g.extra, g.kept), (32 * MIB, 32 * MIB), "fragmentation: 32 MiB beyond the request");
        let g = pool_growth(64 * MIB, 64 * MIB, 32 * MIB);
        assert_eq!((g.grew, g.kept), (0, 0), "served from cache: the reservation rolls back");
        let g = pool_growth(64 * MIB, 16 * MIB, 0);
        assert_eq!((g.grew, g.shrank, g.extra), (0, 48 * MIB, 0));
    }

    #[test]
    fn context_cost_prefers_the_process_own_figure_and_rejects_the_implausible() {
        let gib = 1 << 30;
        assert_eq!(context_cost(Some((gib, None)), Some((gib + 300 * MIB, Some(300 * MIB)))), 300 * MIB);
        assert_eq!(
            context_cost(Some((gib, Some(100 * MIB))), Some((5 * gib, Some(400 * MIB)))),
            300 * MIB,
            "another process's 4 GiB on the device does not count"
        );
        assert_eq!(context_cost(Some((gib, None)), Some((gib + 500 * MIB, None))), 500 * MIB, "device-wide fallback");
        assert_eq!(context_cost(Some((gib, None)), Some((gib + 9 * gib, None))), 0, "implausible: disturbed");
        assert_eq!(context_cost(Some((2 * gib, None)), Some((gib, None))), 0, "the device shrank");
        assert_eq!(context_cost(None, Some((gib, Some(MIB)))), 0, "no figure before");
        assert_eq!(context_cost(Some((gib, None)), None), 0, "no figure after");
    }
}
