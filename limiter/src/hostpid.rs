//! How a process finds the PID the GPU driver knows it by.
//!
//! NVIDIA's driver knows processes by their PIDs in the host's PID namespace, and NVML reports
//! those, whatever namespace asks. A process in a container's namespace has another PID and
//! cannot read the host's `/proc`; but it can watch NVML. When it creates its first context,
//! the driver starts listing it: the PIDs NVML lists after the creation and not before are its
//! candidates, less those its co-tenants have already claimed in the region. One candidate is
//! the answer. Several (processes of other containers created contexts in the same instant)
//! are told apart by a probe: the process allocates a size of its own choosing and takes the
//! candidate whose usage grew by exactly that much.
//!
//! No lock is taken (a process killed half-way leaves nothing held), and the cost is two NVML
//! process lists around the first context creation, which the context charge reads anyway,
//! plus a few probes only when starts collide. A process in the host's own namespace needs
//! none of it: its `getpid()` is the answer.

use crate::region::ProcessView;

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel's
/// `include/linux/proc_ns.h`): a process whose `/proc/self/ns/pid` has it is in the host's
/// namespace.
pub const INIT_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

/// One entry of NVML's process list: (host PID, bytes NVML says it uses).
pub type Listed = (u32, u64);

/// NVML's figures for one device: all processes' usage, and its process list.
pub type Snapshot = (u64, Vec<Listed>);

/// The figures of `me` in `snapshot`: (device usage, `me`'s usage if listed).
pub fn usage(snapshot: Option<&Snapshot>, me: Option<u32>) -> Option<crate::accounting::NvmlUsage> {
    snapshot.map(|(used, list)| (*used, me.and_then(|pid| list.iter().find(|p| p.0 == pid).map(|p| p.1))))
}

/// The driver's allocation granularity on current GPUs: a probe is a multiple of it, and a
/// candidate's growth is matched to within it.
pub const GRANULARITY: u64 = 2 << 20;
/// Probe sizes are 1 to this many granules.
pub const PROBE_GRANULES: u64 = 16;
/// Probes tried before giving up for this context creation.
pub const PROBE_ROUNDS: u32 = 4;

/// What a comparison of NVML's lists says about this process's host PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// This is it.
    Pid(u32),
    /// One of these (a probe tells them apart).
    Among(Vec<u32>),
    /// No candidate: NVML does not list this process.
    Nothing,
}

/// Candidates after a context creation: PIDs in `after` and not in `before`, less `claimed`
/// (the host PIDs the container's other live processes found).
pub fn after_creation(before: &[Listed], after: &[Listed], claimed: &[u32]) -> Found {
    let mut new: Vec<u32> =
        after.iter().map(|p| p.0).filter(|pid| *pid != 0 && !before.iter().any(|b| b.0 == *pid) && !claimed.contains(pid)).collect();
    new.sort_unstable();
    new.dedup();
    decide(new)
}

/// Of `candidates`, those whose usage grew by `probe` bytes (to within [`GRANULARITY`]) between
/// `before` and `after`, NVML's lists around this process's probe allocation.
pub fn after_probe(candidates: &[u32], before: &[Listed], after: &[Listed], probe: u64) -> Found {
    let used = |list: &[Listed], pid: u32| list.iter().find(|p| p.0 == pid).map(|p| p.1);
    let grown: Vec<u32> = candidates
        .iter()
        .copied()
        .filter(|pid| match (used(before, *pid), used(after, *pid)) {
            (Some(b), Some(a)) => a.checked_sub(b).is_some_and(|g| g >= probe && g < probe + GRANULARITY),
            _ => false,
        })
        .collect();
    decide(grown)
}

/// A probe size from a number that differs between processes (a seed of time and PID):
/// 1 to [`PROBE_GRANULES`] granules.
pub fn probe_size(seed: u64) -> u64 {
    // splitmix64's finaliser: neighbouring seeds give unrelated sizes.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % PROBE_GRANULES + 1) * GRANULARITY
}

/// What a tenant's NVML shows of a device's process list: of `listed` (host PIDs, as the
/// driver lists them), the container's own live processes (`ours`, its region's slots), each
/// as (its index in `listed`, its PID in the container, the bytes vgpu charges it on
/// `device`). Other tenants' processes are left out.
pub fn own_processes(listed: &[u32], ours: &[ProcessView], device: usize) -> Vec<(usize, u32, u64)> {
    listed
        .iter()
        .enumerate()
        .filter_map(|(i, host)| {
            let p = ours.iter().find(|p| p.alive && p.host_pid != 0 && p.host_pid == *host)?;
            Some((i, p.pid, p.used.get(device).copied().unwrap_or(0)))
        })
        .collect()
}

/// The host PIDs of the container's live processes that have found theirs.
pub fn host_pids(ours: &[ProcessView]) -> Vec<u32> {
    ours.iter().filter(|p| p.alive && p.host_pid != 0).map(|p| p.host_pid).collect()
}

fn decide(mut pids: Vec<u32>) -> Found {
    match pids.len() {
        0 => Found::Nothing,
        1 => Found::Pid(pids.remove(0)),
        _ => Found::Among(pids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_new_unclaimed_pid_is_the_answer() {
        let before = [(100, 500), (200, 64)];
        let after = [(100, 500), (200, 64), (300, 64)];
        assert_eq!(after_creation(&before, &after, &[]), Found::Pid(300));
        // A co-tenant that started at the same time and already claimed its PID.
        let after = [(100, 500), (300, 64), (301, 64)];
        assert_eq!(after_creation(&before, &after, &[301]), Found::Pid(300));
        assert_eq!(after_creation(&before, &after, &[]), Found::Among(vec![300, 301]));
        assert_eq!(after_creation(&before, &before, &[]), Found::Nothing, "NVML does not list us");
        assert_eq!(after_creation(&[], &[(0, 1)], &[]), Found::Nothing, "PID 0 is nobody");
    }

    #[test]
    fn a_probe_picks_the_candidate_that_grew_by_its_size() {
        let probe = 6 * GRANULARITY;
        let before = [(300, 64), (301, 64)];
        let after = [(300, 64 + probe), (301, 64 + 3 * GRANULARITY)];
        assert_eq!(after_probe(&[300, 301], &before, &after, probe), Found::Pid(300));
        // Rounded up by the driver, still within a granule.
        let after = [(300, 64 + probe + 4096), (301, 64)];
        assert_eq!(after_probe(&[300, 301], &before, &after, probe), Found::Pid(300));
        // Both grew by the same size (two probes of one size): undecided, probe again.
        let after = [(300, 64 + probe), (301, 64 + probe)];
        assert_eq!(after_probe(&[300, 301], &before, &after, probe), Found::Among(vec![300, 301]));
        // A candidate that left the list is not us.
        assert_eq!(after_probe(&[300, 301], &before, &[(301, 64)], probe), Found::Nothing);
    }

    #[test]
    fn a_tenant_sees_its_own_processes_by_container_pid_with_vgpus_charge() {
        let view = |pid, host_pid, alive, used| ProcessView {
            slot: 0,
            pid,
            host_pid,
            generation: 1,
            alive,
            used: std::array::from_fn(|d| if d == 1 { used } else { 0 }),
            unhooked: [0; crate::config::MAX_DEVICES],
        };
        let ours = [view(7, 4007, true, 300), view(8, 0, true, 50), view(9, 4009, false, 10)];
        // 4001 is another tenant's; 4009 is our dead process's PID, reused by someone else.
        let listed = [4001, 4007, 4009];
        assert_eq!(own_processes(&listed, &ours, 1), vec![(1, 7, 300)]);
        assert_eq!(own_processes(&listed, &ours, 0), vec![(1, 7, 0)]);
        assert_eq!(host_pids(&ours), vec![4007]);
    }

    #[test]
    fn probe_sizes_are_whole_granules_within_bounds_and_vary() {
        let sizes: Vec<u64> = (0..64).map(probe_size).collect();
        assert!(sizes.iter().all(|s| s % GRANULARITY == 0 && *s >= GRANULARITY && *s <= PROBE_GRANULES * GRANULARITY));
        let mut distinct = sizes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 8, "{distinct:?}");
    }
}
