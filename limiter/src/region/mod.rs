//! The accounting region: one memory-mapped file per container, shared by every process of
//! the container, holding each device's quota and usage and one slot per live process.
//!
//! * **Creation** is race-free: a region is built and initialised under a temporary name
//!   (mode `0600`, or the caller's), then published at its path with `link(2)`, which fails if
//!   another process published first (that one is then opened). Openers therefore never wait
//!   for a creator, and a creator that dies leaves nothing at the path. (An empty file found at
//!   the path is initialised in place under an open-file-description lock on byte 0.) A file
//!   of another magic, version or size, a symlink, a non-regular file or a file owned by another
//!   user is refused with a [`RegionError`], never reinterpreted.
//! * **Reservation** is one compare-and-swap on the device's `used` that never goes above the
//!   quota, then attribution to this process's slot; no lock and no scan on that path.
//! * **Liveness** is an OFD lock on the first byte of each process's slot, which the kernel
//!   drops when the process dies. [`Region::reap`] (run lazily when an allocation would fail
//!   and when a process registers) returns a dead process's bytes exactly once.
//!
//! Crash windows: a process killed between the device's compare-and-swap and its slot's
//! update (or, on release, between the slot's update and the device's) leaves those bytes
//! counted but unattributed: the region then under-commits, it never over-commits. The views
//! report such bytes as `unattributed`, and when the last process of the region is gone the
//! next one to register forgets them. (Measured: about 1 % of SIGKILLs of a process in a tight
//! allocate/free loop on a loaded 2-core machine land in the window, i.e. while it was
//! preempted just there.)
#![allow(unsafe_code)]

mod error;
mod file;
pub mod layout;
mod views;

pub use error::{Refused, RegionError};
pub use views::{DeviceView, Observer, ProcessView, quota_view, uuid_string};

use file::{lock, lock_held, lock_shared, now_ns, unlock};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::*;

use layout::*;

use crate::allocations::AllocationMap;

/// Bytes reserved on a device, not yet committed: dropped, they go back.
#[must_use = "a reservation is rolled back when dropped"]
pub struct Reservation<'r> {
    region: &'r Region,
    device: usize,
    bytes: u64,
}

impl Reservation<'_> {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back the part of the reservation above `actual` (e.g. a pitched allocation that
    /// needed less than its worst case). `actual` above the reservation is ignored.
    pub fn shrink_to(&mut self, actual: u64) {
        if actual < self.bytes {
            self.region.give_back(self.device, self.bytes - actual);
            self.bytes = actual;
        }
    }

    /// Keeps the bytes charged without recording an allocation: memory the caller accounts
    /// for as a whole (a memory pool's reservation) and gives back with [`Region::uncharge`].
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// Keeps the bytes and remembers them under `key` (the allocation's address or handle),
    /// so that [`Region::release`] of that key returns them.
    pub fn commit(self, key: u64) {
        let me = std::mem::ManuallyDrop::new(self);
        me.region.allocations.insert(key, me.device as u32, me.bytes);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.region.give_back(self.device, self.bytes);
    }
}

/// An allocation taken out of the books by [`Region::take`], not yet given back.
#[must_use = "release or keep it"]
pub struct Held<'r> {
    region: &'r Region,
    key: u64,
    device: usize,
    bytes: u64,
}

impl Held<'_> {
    /// Its device and bytes.
    pub fn device_bytes(&self) -> (usize, u64) {
        (self.device, self.bytes)
    }

    /// The driver freed it: its bytes go back to the device.
    pub fn release(self) {
        self.region.give_back(self.device, self.bytes);
    }

    /// The driver did not free it: it stays recorded under its key.
    pub fn keep(self) {
        self.region.allocations.insert(self.key, self.device as u32, self.bytes);
    }
}

/// This process's handle on a region: the mapping, its slot, and its allocations.
pub struct Region {
    base: *mut u8,
    fd: libc::c_int,
    path: PathBuf,
    slot: usize,
    generation: u64,
    allocations: AllocationMap,
}

// SAFETY: the mapping is accessed only through atomics; the fd only through fcntl.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        self.unregister();
        // SAFETY: our own mapping and fd.
        unsafe {
            libc::munmap(self.base.cast(), FILE_SIZE);
            libc::close(self.fd);
        }
    }
}

/// The quota word for an optional limit.
pub fn quota_word(limit: Option<u64>) -> u64 {
    limit.unwrap_or(UNLIMITED)
}

impl Region {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is FILE_SIZE bytes, page-aligned.
        unsafe { &*self.base.cast::<Header>() }
    }

    fn ledger(&self, device: usize) -> &DeviceLedger {
        assert!(device < MAX_DEVICES, "device index {device} out of range");
        // SAFETY: in bounds and aligned.
        unsafe { &*self.base.add(LEDGERS_OFF).cast::<DeviceLedger>().add(device) }
    }

    /// The SM bucket cache line of `device` (for the SM limiter).
    pub fn sm_bucket(&self, device: usize) -> &SmBucket {
        assert!(device < MAX_DEVICES, "device index {device} out of range");
        // SAFETY: in bounds and aligned.
        unsafe { &*self.base.add(BUCKETS_OFF).cast::<SmBucket>().add(device) }
    }

    fn slot_at(&self, i: usize) -> &Slot {
        assert!(i < MAX_SLOTS);
        // SAFETY: in bounds and aligned.
        unsafe { &*self.base.add(SLOTS_OFF).cast::<Slot>().add(i) }
    }

    fn my_slot(&self) -> &Slot {
        self.slot_at(self.slot)
    }

    fn slot_lock_offset(i: usize) -> i64 {
        (SLOTS_OFF + i * size_of::<Slot>()) as i64
    }

    fn initialise(&self, quotas: &[Option<u64>; MAX_DEVICES]) {
        // SAFETY: our writable mapping of FILE_SIZE bytes.
        unsafe { file::write_header(self.base, quotas) };
        unlock(self.fd, 0);
    }

    /// Waits for the creator to publish the region, initialising it if the creator died.
    fn validate(&self) -> Result<(), RegionError> {
        let h = self.header();
        let deadline = now_ns() + 2_000_000_000;
        while h.ready.load(Acquire) != 1 {
            if lock(self.fd, 0, false) {
                if h.ready.load(Acquire) != 1 && h.magic.load(Relaxed) == 0 {
                    // Nobody is initialising an empty region: its creator died. Initialise
                    // it with unlimited quotas; `adopt_quotas` then sets ours (no process can
                    // be live in a region that was never published).
                    self.initialise(&[None; MAX_DEVICES]);
                    break;
                }
                unlock(self.fd, 0);
                if h.ready.load(Acquire) != 1 {
                    break;
                }
            }
            if now_ns() > deadline {
                return Err(RegionError::NotReady { path: self.path.clone() });
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.check_header()
    }

    /// Whether the header is a published region of this layout: the magic, the version, the
    /// ready flag and the sizes (the observers' check too).
    fn check_header(&self) -> Result<(), RegionError> {
        let h = self.header();
        if h.magic.load(Acquire) != MAGIC {
            return Err(RegionError::BadMagic { path: self.path.clone() });
        }
        let version = h.version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch { path: self.path.clone(), found: version, expected: LAYOUT_VERSION });
        }
        if h.ready.load(Acquire) != 1 {
            return Err(RegionError::NotReady { path: self.path.clone() });
        }
        let size = h.file_size.load(Relaxed);
        if size != FILE_SIZE as u64 || h.devices.load(Relaxed) != MAX_DEVICES as u32 || h.slots.load(Relaxed) != MAX_SLOTS as u32 {
            return Err(RegionError::WrongSize { path: self.path.clone(), found: size, expected: FILE_SIZE as u64 });
        }
        Ok(())
    }

    /// Joins the region under `quotas`: takes a slot if the region's quotas are these, or
    /// makes them these if no process lives in it (a container restarted with a new
    /// configuration), else fails with a mismatch.
    ///
    /// Joiners hold the membership lock (an OFD lock on byte 1) shared while they compare and
    /// claim, so any number join at once; one that would change the quotas holds it
    /// exclusively, so that "nobody lives here", the new quotas and its own slot are one step
    /// that no other joiner can fall between: a newcomer of the old quota that claimed a slot
    /// just after the check would otherwise run under a quota it was not given. A holder that
    /// dies drops the lock with its descriptor.
    pub(super) fn join(&mut self, quotas: &[Option<u64>; MAX_DEVICES]) -> Result<(), RegionError> {
        const MEMBERSHIP: i64 = 1;
        self.membership(MEMBERSHIP, false)?;
        if self.differing_device(quotas).is_none() {
            let claimed = self.claim_slot();
            unlock(self.fd, MEMBERSHIP);
            return claimed;
        }
        unlock(self.fd, MEMBERSHIP);
        self.membership(MEMBERSHIP, true)?;
        let joined = self.adopt_quotas(quotas).and_then(|()| self.claim_slot());
        unlock(self.fd, MEMBERSHIP);
        joined
    }

    /// Waits for the membership lock at `byte`, shared or `exclusive`; a signal's interruption
    /// retries, any other failure is an error (joining without the lock is never an option).
    fn membership(&self, byte: i64, exclusive: bool) -> Result<(), RegionError> {
        loop {
            if if exclusive { lock(self.fd, byte, true) } else { lock_shared(self.fd, byte, true) } {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(RegionError::Io { path: self.path.clone(), op: "lock", err });
            }
        }
    }

    /// The first device whose quota in the region is not the one in `quotas`.
    fn differing_device(&self, quotas: &[Option<u64>; MAX_DEVICES]) -> Option<usize> {
        (0..MAX_DEVICES).find(|&d| self.ledger(d).quota.load(Acquire) != quota_word(quotas[d]))
    }

    /// Makes the region's quotas ours: equal is fine; different is an error while other
    /// processes live in the region, and an update when none does (under the exclusive
    /// membership lock: see [`Region::join`]).
    fn adopt_quotas(&self, quotas: &[Option<u64>; MAX_DEVICES]) -> Result<(), RegionError> {
        let Some(d) = self.differing_device(quotas) else {
            return Ok(());
        };
        self.reap();
        if self.live_slots() == 0 {
            for (d, q) in quotas.iter().enumerate() {
                self.ledger(d).quota.store(quota_word(*q), Release);
            }
            return Ok(());
        }
        Err(RegionError::QuotaMismatch {
            path: self.path.clone(),
            device: d,
            region: self.ledger(d).quota.load(Acquire),
            requested: quota_word(quotas[d]),
        })
    }

    fn live_slots(&self) -> usize {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        (0..high).filter(|&i| i != self.slot && self.slot_at(i).state.load(Acquire) == state::LIVE).count()
    }

    fn claim_slot(&mut self) -> Result<(), RegionError> {
        self.reap();
        self.forget_leaks_if_idle();
        for i in 0..MAX_SLOTS {
            let s = self.slot_at(i);
            if s.state.load(Acquire) != state::FREE || !lock(self.fd, Self::slot_lock_offset(i), false) {
                continue;
            }
            // Holding the slot's lock: nobody else can claim it, and a reaper sees it alive.
            if s.state.compare_exchange(state::FREE, state::LIVE, AcqRel, Acquire).is_err() {
                unlock(self.fd, Self::slot_lock_offset(i));
                continue;
            }
            let generation = self.header().generation.fetch_add(1, AcqRel) + 1;
            s.generation.store(generation, Relaxed);
            // SAFETY: getpid cannot fail.
            s.pid.store(unsafe { libc::getpid() } as u32, Relaxed);
            s.started_ns.store(now_ns(), Relaxed);
            s.host_pid.store(0, Relaxed);
            self.header().slots_high.fetch_max(i as u32 + 1, AcqRel);
            self.slot = i;
            self.generation = generation;
            return Ok(());
        }
        Err(RegionError::SlotsExhausted { path: self.path.clone() })
    }

    /// With no process left in the region, whatever the devices still count was left by a
    /// process killed between its two updates (see the module's crash windows): it is no
    /// one's, and is forgotten. A process that registers meanwhile can only change `used` by
    /// reserving, which makes the compare-and-swap fail and the bytes wait for the next time.
    fn forget_leaks_if_idle(&self) {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        let anyone = || (0..high).any(|i| self.slot_at(i).state.load(Acquire) != state::FREE);
        if anyone() {
            return;
        }
        for d in 0..MAX_DEVICES {
            let used = &self.ledger(d).used;
            let u = used.load(Acquire);
            // A process reserves only after its slot is LIVE, so if `u` includes a reservation,
            // the scan after the load sees its owner; one that comes after the load makes the
            // compare-and-swap fail.
            if u != 0 && !anyone() {
                let _ = used.compare_exchange(u, 0, AcqRel, Acquire);
            }
        }
    }

    /// Gives this process's bytes back and frees its slot (what dying does, done politely).
    fn unregister(&mut self) {
        if self.slot == usize::MAX {
            return;
        }
        Self::drain_slot(self, self.slot_at(self.slot));
        self.my_slot().host_pid.store(0, Relaxed);
        self.my_slot().state.store(state::FREE, Release);
        unlock(self.fd, Self::slot_lock_offset(self.slot));
        self.slot = usize::MAX;
    }

    /// Returns every byte a slot holds to its devices, each exactly once.
    fn drain_slot(&self, s: &Slot) {
        for d in 0..MAX_DEVICES {
            let bytes = s.used[d].swap(0, AcqRel);
            if bytes > 0 {
                sub_saturating(&self.ledger(d).used, bytes);
            }
            s.refusals[d].store(0, Relaxed);
            s.unhooked[d].store(0, Relaxed);
        }
    }

    /// Returns the bytes of every dead process to its devices. Returns how many processes
    /// were reaped.
    pub fn reap(&self) -> usize {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        let mut reaped = 0;
        for i in 0..high {
            if i == self.slot {
                continue;
            }
            let s = self.slot_at(i);
            if s.state.load(Acquire) != state::LIVE || lock_held(self.fd, Self::slot_lock_offset(i)) {
                continue;
            }
            // The owner is gone. Taking its lock makes us the only reaper of this slot.
            if !lock(self.fd, Self::slot_lock_offset(i), false) {
                continue;
            }
            if s.state.load(Acquire) == state::LIVE {
                self.drain_slot(s);
                s.pid.store(0, Relaxed);
                s.host_pid.store(0, Relaxed);
                s.state.store(state::FREE, Release);
                reaped += 1;
            }
            unlock(self.fd, Self::slot_lock_offset(i));
        }
        reaped
    }

    /// Reserves `bytes` of `device` if the container's usage stays within its quota; one
    /// compare-and-swap, plus a reap and one retry when it would not fit.
    pub fn reserve(&self, device: usize, bytes: u64) -> Result<Reservation<'_>, Refused> {
        self.reserve_or(device, bytes, || false)
    }

    /// [`Region::reserve`], with one more chance before refusing: `free_more` may give back
    /// memory the caller holds but no longer needs charged (a memory pool that released its
    /// cache); when it says it did, the reservation is tried once more. One refusal is counted.
    pub fn reserve_or(&self, device: usize, bytes: u64, free_more: impl FnOnce() -> bool) -> Result<Reservation<'_>, Refused> {
        let l = self.ledger(device);
        let quota = l.quota.load(Acquire);
        let attempt = || l.used.fetch_update(AcqRel, Acquire, |u| u.checked_add(bytes).filter(|n| *n <= quota));
        let before = match attempt() {
            Ok(u) => u,
            Err(_) => {
                let reaped = self.reap() > 0;
                let freed = free_more();
                match if reaped || freed { attempt().ok() } else { None } {
                    Some(u) => u,
                    None => return Err(self.refuse(device, quota, l.used.load(Acquire), bytes)),
                }
            }
        };
        self.my_slot().used[device].fetch_add(bytes, AcqRel);
        if before + bytes > l.peak.load(Relaxed) {
            l.peak.fetch_max(before + bytes, Relaxed);
        }
        Ok(Reservation { region: self, device, bytes })
    }

    fn refuse(&self, device: usize, quota: u64, used: u64, requested: u64) -> Refused {
        self.ledger(device).refusals.fetch_add(1, Relaxed);
        self.my_slot().refusals[device].fetch_add(1, Relaxed);
        Refused { quota, used, requested }
    }

    /// Returns bytes this process holds on `device` (slot first, then device: a crash between
    /// the two leaves bytes counted, never bytes double-freed).
    fn give_back(&self, device: usize, bytes: u64) {
        let taken = take_at_most(&self.my_slot().used[device], bytes);
        sub_saturating(&self.ledger(device).used, taken);
    }

    /// Releases the allocation committed under `key`: its bytes go back to its device.
    /// Returns (device, bytes), or `None` for a key this process never committed (such a
    /// free is not ours to account).
    pub fn release(&self, key: u64) -> Option<(usize, u64)> {
        let (device, bytes) = self.allocations.remove(key)?;
        self.give_back(device as usize, bytes);
        Some((device as usize, bytes))
    }

    /// Takes the allocation committed under `key` out of the books without returning its
    /// bytes yet: the caller frees it in the driver, then [`Held::release`]s it (or
    /// [`Held::keep`]s it if the driver refused). Between the two the key is unknown, so an
    /// address the driver hands out again cannot be confused with this one.
    pub fn take(&self, key: u64) -> Option<Held<'_>> {
        let (device, bytes) = self.allocations.remove(key)?;
        Some(Held { region: self, key, device: device as usize, bytes })
    }

    /// Charges `bytes` of `device` whether or not they fit the quota (what the driver has
    /// already taken, such as a context's own memory). Views clamp at the quota.
    pub fn force_charge(&self, device: usize, bytes: u64) {
        let l = self.ledger(device);
        let before = l.used.fetch_add(bytes, AcqRel);
        self.my_slot().used[device].fetch_add(bytes, AcqRel);
        l.peak.fetch_max(before.saturating_add(bytes), Relaxed);
    }

    /// Releases every allocation this process recorded on `device` (its contexts there are
    /// gone, and the driver freed their memory with them). Returns the bytes given back.
    pub fn release_device(&self, device: usize) -> u64 {
        let bytes = self.allocations.drain_device(device as u32);
        self.give_back(device, bytes);
        bytes
    }

    /// Sets the bytes of `device` that no hook charged for this process (reconciliation with
    /// the driver's own figure): the difference is charged or given back, and the slot shows
    /// the figure. Returns the previous figure.
    pub fn set_unhooked(&self, device: usize, bytes: u64) -> u64 {
        let before = self.my_slot().unhooked[device].swap(bytes, AcqRel);
        match bytes.cmp(&before) {
            std::cmp::Ordering::Greater => self.force_charge(device, bytes - before),
            std::cmp::Ordering::Less => self.give_back(device, before - bytes),
            std::cmp::Ordering::Equal => {}
        }
        before
    }

    /// Bytes of `device` charged to this process by reconciliation, not by a hook.
    pub fn my_unhooked(&self, device: usize) -> u64 {
        self.my_slot().unhooked[device].load(Acquire)
    }

    /// Returns bytes charged with [`Region::force_charge`] (or kept from a reservation).
    pub fn uncharge(&self, device: usize, bytes: u64) {
        self.give_back(device, bytes);
    }

    /// The quota of `device`, `None` when unlimited.
    pub fn quota(&self, device: usize) -> Option<u64> {
        Some(self.ledger(device).quota.load(Acquire)).filter(|q| *q != UNLIMITED)
    }

    /// The device's figures; `used + free == quota`.
    pub fn device_view(&self, device: usize) -> DeviceView {
        let l = self.ledger(device);
        let quota = l.quota.load(Acquire);
        let raw = l.used.load(Acquire);
        let used = raw.min(quota);
        let processes = self.processes();
        let attributed: u64 = processes.iter().map(|p| p.used[device]).sum();
        DeviceView {
            device,
            quota: (quota != UNLIMITED).then_some(quota),
            used,
            free: if quota == UNLIMITED { 0 } else { quota - used },
            peak: l.peak.load(Relaxed),
            refusals: l.refusals.load(Relaxed),
            unattributed: raw.saturating_sub(attributed),
            unhooked: processes.iter().map(|p| p.unhooked[device]).sum(),
            uuid: self.device_uuid(device),
        }
    }

    /// Records `device`'s UUID (every process of the container writes the same bytes).
    pub fn set_device_uuid(&self, device: usize, uuid: [u8; 16]) {
        let l = self.ledger(device);
        let (lo, hi) = uuid.split_at(8);
        l.uuid[0].store(u64::from_le_bytes(lo.try_into().unwrap_or_default()), Release);
        l.uuid[1].store(u64::from_le_bytes(hi.try_into().unwrap_or_default()), Release);
    }

    /// `device`'s UUID, once recorded.
    pub fn device_uuid(&self, device: usize) -> Option<[u8; 16]> {
        let l = self.ledger(device);
        let (lo, hi) = (l.uuid[0].load(Acquire), l.uuid[1].load(Acquire));
        if lo == 0 && hi == 0 {
            return None;
        }
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&lo.to_le_bytes());
        u[8..].copy_from_slice(&hi.to_le_bytes());
        Some(u)
    }

    /// The device's `(used, free, quota)` without a scan (for `cuMemGetInfo`-style views):
    /// `used + free == quota`.
    pub fn usage(&self, device: usize) -> (u64, u64, Option<u64>) {
        let l = self.ledger(device);
        let quota = l.quota.load(Acquire);
        let used = l.used.load(Acquire).min(quota);
        let free = if quota == UNLIMITED { 0 } else { quota - used };
        (used, free, (quota != UNLIMITED).then_some(quota))
    }

    /// Every claimed slot: live processes and dead ones not yet reaped.
    pub fn processes(&self) -> Vec<ProcessView> {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        (0..high)
            .filter_map(|i| {
                let s = self.slot_at(i);
                (s.state.load(Acquire) == state::LIVE).then(|| ProcessView {
                    slot: i,
                    pid: s.pid.load(Relaxed),
                    host_pid: s.host_pid.load(Relaxed),
                    generation: s.generation.load(Relaxed),
                    alive: i == self.slot || lock_held(self.fd, Self::slot_lock_offset(i)),
                    used: std::array::from_fn(|d| s.used[d].load(Relaxed)),
                    unhooked: std::array::from_fn(|d| s.unhooked[d].load(Relaxed)),
                })
            })
            .collect()
    }

    /// Records the PID the driver knows this process by (see `hostpid`), once: false if one
    /// was recorded already.
    pub fn claim_host_pid(&self, pid: u32) -> bool {
        self.my_slot().host_pid.compare_exchange(0, pid, AcqRel, Acquire).is_ok()
    }

    /// Forgets the recorded host PID (tests of discovery only).
    #[doc(hidden)]
    pub fn forget_host_pid(&self) {
        self.my_slot().host_pid.store(0, Release);
    }

    /// The PID the driver knows this process by, 0 until found.
    pub fn my_host_pid(&self) -> u32 {
        self.my_slot().host_pid.load(Acquire)
    }

    /// The host PIDs the container's other live processes have found: not this process's.
    pub fn claimed_host_pids(&self) -> Vec<u32> {
        self.processes().iter().filter(|p| p.alive && p.slot != self.slot && p.host_pid != 0).map(|p| p.host_pid).collect()
    }

    /// This process's slot index and generation.
    pub fn me(&self) -> (usize, u64) {
        (self.slot, self.generation)
    }

    /// Bytes this process holds on `device`.
    pub fn my_usage(&self, device: usize) -> u64 {
        self.my_slot().used[device].load(Acquire)
    }

    /// The region's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor this handle holds the region (and its slot lock) through.
    pub fn raw_fd(&self) -> libc::c_int {
        self.fd
    }

    /// For a child after `fork`: the inherited handle shares the parent's open file
    /// description (and so its slot lock), so the child opens the file anew, with the quotas
    /// this region holds, and claims a slot of its own. The inherited handle is left as it is:
    /// other threads may still read through its mapping, and its descriptor ([`Self::raw_fd`])
    /// is the caller's to close (from an atfork handler, before anything can use it).
    pub fn reopen_after_fork(&self) -> Result<Region, RegionError> {
        let quotas: [Option<u64>; MAX_DEVICES] = std::array::from_fn(|d| self.quota(d));
        Region::open(&self.path, &quotas, 0o600)
    }
}

fn sub_saturating(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(AcqRel, Acquire, |v| Some(v.saturating_sub(n)));
}

/// Subtracts up to `n` from `a`; returns how much was subtracted.
fn take_at_most(a: &AtomicU64, n: u64) -> u64 {
    match a.fetch_update(AcqRel, Acquire, |v| Some(v.saturating_sub(n))) {
        Ok(prev) | Err(prev) => prev.min(n),
    }
}

#[cfg(test)]
mod tests;
