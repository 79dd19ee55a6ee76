//! What an allocation path charges, as pure functions over plain numbers: the shim's hook
//! bodies ask these and only carry out the answer. Nothing here touches the region, the
//! driver or a clock.
//!
//! * pitched allocations: the worst case reserved before the driver pads the rows, and what
//!   stays charged after;
//! * virtual memory management: a physical handle stays charged while any reference to it
//!   (its creation, each retain) or any mapping of it lives;
//! * memory pools: a pool is charged what it reserves on the device, cached blocks included;
//! * contexts: what creating one cost, from NVML's figures around the creation;
//! * graph memory: what each graph's allocation nodes will need, carried to its executable
//!   graphs, and the room a first launch or upload must find in the quota;
//! * context limits: what a stack size, device heap or `printf` FIFO reserves, charged above
//!   what the context had when the program first changed it;
//! * reconciliation: what the driver attributes to a process beyond what its hooks charged.

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

/// Room a graph mapping `need` bytes must find in the quota when the device's graph allocator
/// holds `reserved` bytes with `used` of them mapped: what its cache cannot cover.
pub fn graph_room(reserved: u64, used: u64, need: u64) -> u64 {
    need.saturating_sub(reserved.saturating_sub(used))
}

/// Graph memory per device: `(device, bytes)`, one entry per device.
pub type PerDevice = Vec<(usize, u64)>;

fn add_to(v: &mut PerDevice, device: usize, bytes: u64) {
    match v.iter_mut().find(|(d, _)| *d == device) {
        Some((_, b)) => *b = b.saturating_add(bytes),
        None => v.push((device, bytes)),
    }
}

/// What the shim knows of a process's graphs: the bytes of each graph's allocation nodes
/// (captured stream-ordered allocations, `cuGraphAddMemAllocNode`), carried to an executable
/// graph when it is instantiated, and whether that executable graph's memory is mapped (from
/// its upload or first launch until it is destroyed, or a trim of its device unmaps it).
#[derive(Debug, Default)]
pub struct GraphBook {
    graphs: HashMap<u64, PerDevice>,
    execs: HashMap<u64, (PerDevice, bool)>,
}

impl GraphBook {
    /// Graph `graph` gained an allocation node of `bytes` on `device`.
    pub fn allocation_node(&mut self, graph: u64, device: usize, bytes: u64) {
        add_to(self.graphs.entry(graph).or_default(), device, bytes);
    }

    /// What graph `graph`'s allocation nodes need (empty: none known).
    pub fn graph_need(&self, graph: u64) -> PerDevice {
        self.graphs.get(&graph).cloned().unwrap_or_default()
    }

    /// Graph `graph` was destroyed (its executable graphs keep what they were given).
    pub fn graph_destroyed(&mut self, graph: u64) {
        self.graphs.remove(&graph);
    }

    /// Executable graph `exec` was instantiated from `graph`.
    pub fn instantiated(&mut self, graph: u64, exec: u64) {
        let need = self.graph_need(graph);
        if !need.is_empty() {
            self.execs.insert(exec, (need, false));
        }
    }

    /// What launching or uploading `exec` maps now: empty when it needs no graph memory or
    /// its memory is already mapped.
    pub fn to_map(&self, exec: u64) -> PerDevice {
        match self.execs.get(&exec) {
            Some((need, false)) => need.clone(),
            _ => Vec::new(),
        }
    }

    /// `exec`'s memory is mapped (it was uploaded or launched).
    pub fn mapped(&mut self, exec: u64) {
        if let Some((_, m)) = self.execs.get_mut(&exec) {
            *m = true;
        }
    }

    /// Executable graph `exec` was destroyed.
    pub fn exec_destroyed(&mut self, exec: u64) {
        self.execs.remove(&exec);
    }

    /// How many executable graphs would map memory at their next launch (0: every launch
    /// only forwards).
    pub fn unmapped(&self) -> usize {
        self.execs.values().filter(|(_, m)| !m).count()
    }

    /// A trim of `device`'s graph memory may have unmapped any executable graph using it: the
    /// next launch of each must find room again.
    pub fn trimmed(&mut self, device: usize) {
        for (need, m) in self.execs.values_mut() {
            if need.iter().any(|(d, _)| *d == device) {
                *m = false;
            }
        }
    }

    /// Whether any graph or executable graph with graph memory is known.
    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty() && self.execs.is_empty()
    }
}

/// A context limit that reserves device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Stack bytes per GPU thread: reserved for every resident thread of the device.
    Stack,
    /// The device `malloc` heap.
    MallocHeap,
    /// The device `printf` FIFO.
    PrintfFifo,
}

/// Device memory a limit of `value` reserves on a device with `resident_threads` resident
/// threads (SMs × maximum threads per SM).
pub fn limit_bytes(kind: LimitKind, value: u64, resident_threads: u64) -> u64 {
    match kind {
        LimitKind::Stack => value.saturating_mul(resident_threads),
        LimitKind::MallocHeap | LimitKind::PrintfFifo => value,
    }
}

/// One limit of one context: its device, whether it is the device's primary context, what the
/// limit reserved when the program first changed it (that much is part of the context's own
/// cost), and what is charged above it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitEntry {
    /// Device index.
    pub device: usize,
    /// Whether the context is the device's primary context.
    pub primary: bool,
    /// Bytes the limit reserved before the program first set it.
    pub baseline: u64,
    /// Bytes charged for it now.
    pub charged: u64,
}

/// The limits a process has raised, per context.
#[derive(Debug, Default)]
pub struct LimitBook {
    entries: HashMap<(u64, LimitKind), LimitEntry>,
}

impl LimitBook {
    /// The entry of (`ctx`, `kind`), made with `baseline` bytes on first sight.
    pub fn entry(&mut self, ctx: u64, kind: LimitKind, device: usize, primary: bool, baseline: u64) -> LimitEntry {
        *self.entries.entry((ctx, kind)).or_insert(LimitEntry { device, primary, baseline, charged: 0 })
    }

    /// Bytes the quota must find before the limit may reserve `want` bytes: its growth above
    /// what is charged and the baseline (0 for a limit never seen).
    pub fn room(&self, ctx: u64, kind: LimitKind, want: u64) -> u64 {
        self.entries.get(&(ctx, kind)).map_or(0, |e| want.saturating_sub(e.baseline).saturating_sub(e.charged))
    }

    /// The limit now reserves `now` bytes: what to charge or give back.
    pub fn set(&mut self, ctx: u64, kind: LimitKind, now: u64) -> Delta {
        let Some(e) = self.entries.get_mut(&(ctx, kind)) else { return Delta::None };
        let charged = now.saturating_sub(e.baseline);
        let delta = resync(e.charged, charged);
        e.charged = charged;
        delta
    }

    /// Context `ctx` is gone: (device, bytes) to give back (nothing for limits charged 0).
    pub fn context_gone(&mut self, ctx: u64) -> Vec<(usize, u64)> {
        let gone: Vec<(u64, LimitKind)> = self.entries.keys().filter(|(c, _)| *c == ctx).copied().collect();
        gone.into_iter().filter_map(|k| self.entries.remove(&k)).filter(|e| e.charged > 0).map(|e| (e.device, e.charged)).collect()
    }

    /// Device `device`'s primary context is gone: (device, bytes) to give back.
    pub fn primary_gone(&mut self, device: usize) -> Vec<(usize, u64)> {
        let gone: Vec<(u64, LimitKind)> = self.entries.iter().filter(|(_, e)| e.primary && e.device == device).map(|(k, _)| *k).collect();
        gone.into_iter().filter_map(|k| self.entries.remove(&k)).filter(|e| e.charged > 0).map(|e| (e.device, e.charged)).collect()
    }
}

/// What a module load took, from NVML before and after: the growth of this process's own usage
/// only (a device-wide figure would count other processes' allocations), less what this
/// process's other hooks charged meanwhile (`charged_meanwhile`: another thread's allocation,
/// charged before its driver call, shows in the same growth); 0 when NVML does not list the
/// process, or the figure shrank.
pub fn own_growth(before: Option<NvmlUsage>, after: Option<NvmlUsage>, charged_meanwhile: u64) -> u64 {
    match (before, after) {
        (Some((_, mine_before)), Some((_, Some(mine_after)))) => {
            mine_after.saturating_sub(mine_before.unwrap_or(0)).saturating_sub(charged_meanwhile)
        }
        _ => 0,
    }
}

/// A difference this small between the driver's figure for a process and what its hooks
/// charged is rounding (the driver's allocation granularity: 2 MiB pages on current GPUs, a few
/// allocations' worth), not memory no hook saw.
pub const UNHOOKED_SLACK: u64 = 8 << 20;

/// What reconciliation charges a process on one device: the driver's own figure for it
/// (`driver_says`, NVML's per-process used memory) beyond what its hooks charged
/// (`hooks_charged`), when that is more than rounding ([`UNHOOKED_SLACK`]); else 0. A hook
/// charges before its driver call and refunds after, so in-flight calls only make the
/// difference smaller: what a hook charged is never counted twice.
pub fn unhooked(driver_says: u64, hooks_charged: u64) -> u64 {
    let beyond = driver_says.saturating_sub(hooks_charged);
    if beyond > UNHOOKED_SLACK { beyond } else { 0 }
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
    #[test]
    fn a_raised_limit_is_charged_above_its_first_value_and_refunded_with_its_context() {
        use super::{Delta, LimitBook, LimitKind, limit_bytes};
        let threads = 132 * 2048;
        assert_eq!(limit_bytes(LimitKind::Stack, 1024, threads), 264 << 20, "an H100's default stack");
        assert_eq!(limit_bytes(LimitKind::MallocHeap, 8 << 20, threads), 8 << 20);
        let mut b = LimitBook::default();
        let base = limit_bytes(LimitKind::Stack, 1024, threads);
        b.entry(7, LimitKind::Stack, 0, false, base);
        assert_eq!(b.room(7, LimitKind::Stack, 4 * base), 3 * base, "the growth above the baseline");
        assert_eq!(b.room(8, LimitKind::Stack, 4 * base), 0, "a limit never seen");
        assert_eq!(b.set(7, LimitKind::Stack, limit_bytes(LimitKind::Stack, 4096, threads)), Delta::Charge(3 * base));
        assert_eq!(b.set(7, LimitKind::Stack, limit_bytes(LimitKind::Stack, 2048, threads)), Delta::Uncharge(2 * base));
        assert_eq!(
            b.set(7, LimitKind::Stack, limit_bytes(LimitKind::Stack, 512, threads)),
            Delta::Uncharge(base),
            "below the baseline: nothing charged"
        );
        assert_eq!(b.set(7, LimitKind::Stack, limit_bytes(LimitKind::Stack, 512, threads)), Delta::None);
        b.entry(7, LimitKind::MallocHeap, 0, false, 8 << 20);
        assert_eq!(b.set(7, LimitKind::MallocHeap, 1 << 30), Delta::Charge((1 << 30) - (8 << 20)));
        b.entry(9, LimitKind::PrintfFifo, 1, true, 1 << 20);
        assert_eq!(b.set(9, LimitKind::PrintfFifo, 3 << 20), Delta::Charge(2 << 20));
        assert_eq!(b.context_gone(7), vec![(0, (1 << 30) - (8 << 20))], "the stack's charge is 0 now; the heap's comes back");
        assert_eq!(b.primary_gone(0), vec![]);
        assert_eq!(b.primary_gone(1), vec![(1, 2 << 20)]);
    }

    #[test]
    fn a_load_costs_only_this_process_growth() {
        use super::own_growth;
        assert_eq!(own_growth(Some((1 << 30, Some(100))), Some(((1 << 30) + 500, Some(300))), 0), 200);
        assert_eq!(own_growth(Some((1 << 30, Some(100))), Some(((1 << 30) + 500, Some(300))), 150), 50, "another thread's allocation");
        assert_eq!(own_growth(Some((1 << 30, None)), Some(((1 << 30) + 500, Some(300))), 0), 300, "first listed after the load");
        assert_eq!(own_growth(Some((1 << 30, None)), Some(((1 << 30) + 500, None)), 0), 0, "never the device-wide figure");
        assert_eq!(own_growth(Some((0, Some(300))), Some((0, Some(100))), 0), 0);
        assert_eq!(own_growth(None, Some((0, Some(100))), 0), 0);
    }

    #[test]
    fn unhooked_is_the_drivers_figure_beyond_the_hooks_past_rounding() {
        use super::{UNHOOKED_SLACK, unhooked};
        let gib = 1u64 << 30;
        assert_eq!(unhooked(gib, gib), 0);
        assert_eq!(unhooked(gib + UNHOOKED_SLACK, gib), 0, "rounding");
        assert_eq!(unhooked(gib + 792 * MIB, gib), 792 * MIB);
        assert_eq!(unhooked(gib, 2 * gib), 0, "hooks charged first (in flight): never negative");
    }

    #[test]
    fn graph_room_is_what_the_cache_cannot_cover() {
        use super::graph_room;
        assert_eq!(graph_room(0, 0, 100), 100);
        assert_eq!(graph_room(100, 0, 60), 0);
        assert_eq!(graph_room(100, 70, 60), 30);
        assert_eq!(graph_room(50, 80, 10), 10, "used above reserved (a racing read) leaves no cache");
    }

    #[test]
    fn graph_book_carries_allocation_nodes_to_the_executable_graph_until_it_is_mapped() {
        use super::GraphBook;
        let mut b = GraphBook::default();
        b.allocation_node(1, 0, 100);
        b.allocation_node(1, 0, 50);
        b.allocation_node(1, 2, 10);
        assert_eq!(b.graph_need(1), vec![(0, 150), (2, 10)]);
        b.instantiated(1, 11);
        b.instantiated(7, 17); // a graph without memory nodes: nothing to map
        assert_eq!(b.to_map(17), vec![]);
        assert_eq!(b.to_map(11), vec![(0, 150), (2, 10)]);
        assert_eq!(b.unmapped(), 1);
        b.mapped(11);
        b.mapped(11);
        assert_eq!(b.to_map(11), vec![], "a relaunch reuses its mapping");
        assert_eq!(b.unmapped(), 0, "every launch only forwards now");
        b.graph_destroyed(1);
        assert_eq!(b.to_map(11), vec![], "the executable graph outlives its graph");
        b.trimmed(1);
        assert_eq!(b.to_map(11), vec![], "a trim of another device changes nothing");
        assert_eq!(b.unmapped(), 0);
        b.trimmed(2);
        b.trimmed(2);
        assert_eq!(b.to_map(11), vec![(0, 150), (2, 10)], "after a trim the next launch maps again");
        assert_eq!(b.unmapped(), 1);
        b.exec_destroyed(11);
        assert_eq!(b.to_map(11), vec![]);
        assert_eq!(b.unmapped(), 0);
        assert!(b.is_empty());
    }

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
