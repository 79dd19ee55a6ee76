//! The shared state file of one simulated machine, and every operation on it.
//!
//! Layout (all little-endian, `#[repr(C)]`, atomics only; nothing in it is a pointer):
//!
//! ```text
//! [0, 4096)            Header: magic, version, shape, ready flag
//! [DEV_OFF, ...)       DeviceState × devices: timeline lock, tail, busy total, memory used, ring head
//! [RING_OFF, ...)      Interval × RING_LEN × devices: recent busy spans (start, end, pid)
//! [SLOT_OFF, ...)      ProcSlot × MAX_PROCS: one per live process (memory, contexts, busy time)
//! ```
//!
//! The file follows the same protocol as vgpu's accounting region (`vgpu-shmfile`). Creation is
//! race-free: the file is built and its header written under a temporary name, then published
//! at its path with `link(2)`; a process that loses the race opens the winner's. A blank file
//! found at the path (written by something else, or by an older simgpu that created in place)
//! is initialised under an open-file-description lock on byte 0, or refused.
//!
//! Each live process owns a slot and holds an OFD lock on the slot's first byte; the kernel
//! drops the lock when the process dies, so [`Machine::reap`] can tell a dead process from a
//! live one without trusting PIDs, and gives the dead one's memory back exactly once. The
//! timeline lock names its holder by slot for the same reason.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use crate::config::{MAX_DEVICES, SimConfig};
use crate::timeslice::{self, Device, Params};
use crate::{now_ns, sleep_until};

/// Where a piece of work completes: at a time (a FIFO machine knows it when the work is
/// queued), or when the queuing process's completed work on the device reaches a total (a
/// time-sliced machine knows that only as the device runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// At this `CLOCK_MONOTONIC` time (ns).
    At(u64),
    /// When the process's completed work (ns) reaches this.
    Work(u64),
}

impl Default for Point {
    fn default() -> Point {
        Point::At(0)
    }
}

impl Point {
    /// The later of two points of one machine.
    pub fn later(self, other: Point) -> Point {
        match (self, other) {
            (Point::At(a), Point::At(b)) => Point::At(a.max(b)),
            (Point::Work(a), Point::Work(b)) => Point::Work(a.max(b)),
            // A default (nothing queued yet) against a real point.
            (Point::At(0), p) | (p, Point::At(0)) => p,
            (a, _) => a,
        }
    }

    fn time(self) -> u64 {
        if let Point::At(t) = self { t } else { 0 }
    }

    fn work(self) -> u64 {
        if let Point::Work(w) = self { w } else { 0 }
    }
}

const MAGIC: u64 = u64::from_le_bytes(*b"SIMGPU\0\x01");
const VERSION: u32 = 3;
/// Process slots per machine.
pub const MAX_PROCS: u32 = 1024;
/// Busy intervals remembered per device.
pub const RING_LEN: u64 = 1 << 16;
const HEADER_LEN: usize = 4096;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    devices: AtomicU32,
    sms: AtomicU32,
    max_procs: AtomicU32,
    memory: AtomicU64,
    file_size: AtomicU64,
    ready: AtomicU32,
    /// Highest slot index ever claimed + 1: scans stop there.
    slots_high: AtomicU32,
    _pad: AtomicU32,
    /// Inode of the machine's host PID namespace (see [`crate::pids`]); 0 if unknown.
    pidns: AtomicU64,
    /// The time-slice quantum in ns; 0: one FIFO timeline (see [`crate::timeslice`]).
    quantum_ns: AtomicU64,
    /// The context-switch time in ns, when time-slicing.
    switch_ns: AtomicU64,
}

#[repr(C, align(64))]
struct DeviceState {
    /// Slot + 1 of the process appending to the timeline, 0 when free. A holder is known by
    /// its slot, whose lock says whether it lives, never by a PID (PIDs are reused, and differ
    /// between PID namespaces).
    lock: AtomicU32,
    _pad: u32,
    /// When the last queued kernel ends (ns, CLOCK_MONOTONIC).
    tail: AtomicU64,
    /// Sum of all kernel durations ever queued.
    busy_total: AtomicU64,
    /// Device memory in use by all processes.
    used: AtomicU64,
    /// Number of intervals ever appended to the ring.
    ring_head: AtomicU64,
    /// Time-slicing: how far the device has been simulated (ns).
    ts_now: AtomicU64,
    /// Time-slicing: slot + 1 of the process whose context has the device, 0 for none.
    ts_current: AtomicU64,
    /// Time-slicing: what is left of its quantum, and of a switch to it (ns).
    ts_slice_left: AtomicU64,
    ts_switch_left: AtomicU64,
}

#[repr(C)]
struct Interval {
    /// `2*index+1` while being written, `2*index+2` once complete.
    seq: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
    pid: AtomicU64,
    /// Time-slicing: the process's completed work (ns) at `end`, so a point in its work can be
    /// dated (0 on a FIFO machine).
    work_end: AtomicU64,
}

#[repr(C, align(64))]
struct ProcSlot {
    pid: AtomicU32,
    _pad: u32,
    started: AtomicU64,
    contexts: [AtomicU32; MAX_DEVICES as usize],
    used: [AtomicU64; MAX_DEVICES as usize],
    busy: [AtomicU64; MAX_DEVICES as usize],
    /// Time-slicing: work queued and not yet run, all work ever queued, all work ever run (ns).
    pending: [AtomicU64; MAX_DEVICES as usize],
    submitted: [AtomicU64; MAX_DEVICES as usize],
    completed: [AtomicU64; MAX_DEVICES as usize],
}

const DEV_OFF: usize = HEADER_LEN;
fn ring_off(devices: u32) -> usize {
    (DEV_OFF + devices as usize * size_of::<DeviceState>()).next_multiple_of(4096)
}
fn slot_off(devices: u32) -> usize {
    (ring_off(devices) + devices as usize * RING_LEN as usize * size_of::<Interval>()).next_multiple_of(4096)
}
fn file_len(devices: u32) -> usize {
    (slot_off(devices) + MAX_PROCS as usize * size_of::<ProcSlot>()).next_multiple_of(4096)
}

/// A process using the simulated device, as NVML reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// Process id.
    pub pid: u32,
    /// Device memory the process holds.
    pub used: u64,
    /// Contexts the process has on the device.
    pub contexts: u32,
}

/// One process's view of a mapped machine.
pub struct Machine {
    base: *mut u8,
    len: usize,
    fd: libc::c_int,
    devices: u32,
    memory: u64,
    sms: u32,
    pid: u32,
    slot: u32,
}

// SAFETY: the mapping is only accessed through atomics, and the fd is only used for fcntl locks.
unsafe impl Send for Machine {}
// SAFETY: as above; every shared field is an atomic.
unsafe impl Sync for Machine {}

impl Drop for Machine {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `open`, and `fd` is ours.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
            libc::close(self.fd);
        }
    }
}

fn os_err(what: &str, path: &Path) -> String {
    format!("{what} {}: {}", path.display(), io::Error::last_os_error())
}

impl Machine {
    /// Opens (creating if needed) the machine described by `config` and registers this process
    /// as a user of its devices (what libcuda does).
    pub fn open(config: &SimConfig) -> Result<Machine, String> {
        Self::open_as(config, true)
    }

    /// Opens the machine without registering this process: an observer (what NVML does). An
    /// observer may read and reap, but must not charge memory, count contexts or launch.
    pub fn observe(config: &SimConfig) -> Result<Machine, String> {
        Self::open_as(config, false)
    }

    fn open_as(config: &SimConfig, register: bool) -> Result<Machine, String> {
        let path = &config.state_path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        }
        let len = file_len(config.devices);
        // A machine file appears at its path only complete: it is built under a temporary
        // name and published with link(2) (see vgpu-shmfile), so openers never see a half-made
        // one and a creator that dies leaves nothing behind.
        let mut opened = None;
        for _ in 0..8 {
            if let Some(fd) =
                shmfile::open_nofollow(path, libc::O_RDWR).map_err(|e| format!("cannot open simgpu state file {}: {e}", path.display()))?
            {
                opened = Some((fd, None));
                break;
            }
            let made = shmfile::create_published(path, len, 0o600, |base| {
                // SAFETY: a fresh writable mapping of `len` bytes nobody else sees yet.
                unsafe { write_header(base, config, len) };
                Ok::<(), std::io::Error>(())
            });
            match made.map_err(|e| format!("cannot create simgpu state file {}: {e}", path.display()))? {
                shmfile::Created::Ours { fd, base } => {
                    opened = Some((fd, Some(base)));
                    break;
                }
                shmfile::Created::Theirs => continue,
            }
        }
        let Some((fd, made)) = opened else {
            return Err(format!("simgpu state file {}: appeared and vanished repeatedly", path.display()));
        };
        let created = made.is_some();
        let map_len = if created { len } else { file_size(fd).max(HEADER_LEN) };
        let base = match made {
            Some(base) => base,
            // The length is checked against the header (in `await_ready`) before anything past
            // the header is touched.
            None => match shmfile::map(fd, map_len, true) {
                Ok(base) => base,
                Err(e) => {
                    // SAFETY: closing our own fd.
                    unsafe { libc::close(fd) };
                    return Err(format!("cannot map simgpu state file {}: {e}", path.display()));
                }
            },
        };
        let mut m = Machine {
            base: base.cast(),
            len: map_len,
            fd,
            devices: config.devices,
            memory: config.memory,
            sms: config.sms,
            // SAFETY: getpid cannot fail.
            pid: unsafe { libc::getpid() } as u32,
            slot: u32::MAX,
        };
        if !created {
            m.await_ready(config, len)?;
        }
        if register {
            m.pid = m.host_pid(path);
            m.slot = m.claim_slot().ok_or_else(|| format!("simgpu state {}: all {MAX_PROCS} process slots are taken", path.display()))?;
        }
        Ok(m)
    }

    /// This process's PID in the machine's host namespace: `getpid()` inside it, else the PID
    /// service's answer (see [`crate::pids`]); its own PID, said once, when neither can be had.
    fn host_pid(&self, path: &Path) -> u32 {
        let own = self.pid;
        let host_ns = self.header().pidns.load(Relaxed);
        if host_ns != 0 && crate::pids::my_namespace() == Some(host_ns) {
            return own;
        }
        let socket = crate::pids::socket_path(path);
        match crate::pids::ask(&socket) {
            Ok(pid) => pid,
            Err(e) if host_ns == 0 && e.kind() == io::ErrorKind::NotFound => own,
            Err(e) => {
                eprintln!(
                    "simgpu: process {own} is outside the machine's PID namespace and its PID service ({}) did not answer ({e}): NVML will list it by its own PID, which a real driver would not; start `simgpud --state {}` in the machine's namespace",
                    socket.display(),
                    path.display()
                );
                own
            }
        }
    }

    /// Makes this process's PID namespace the machine's host namespace (what `simgpud` does
    /// when it starts: the machine is booted where its service runs).
    pub fn claim_namespace(&self) {
        self.header().pidns.store(crate::pids::my_namespace().unwrap_or(0), Release);
    }

    /// This process's PID as the machine knows it (its host PID once registered).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned.
        unsafe { &*(self.base as *const Header) }
    }

    /// Initialises a blank file in place (its creator died before writing the header: a file
    /// of an older simgpu that created in place), under the lock on byte 0.
    fn initialise(&self, config: &SimConfig, len: usize) {
        // SAFETY: our writable mapping, remapped to `len` bytes by the caller.
        unsafe { write_header(self.base, config, len) };
        shmfile::unlock(self.fd, 0);
    }

    fn await_ready(&mut self, config: &SimConfig, len: usize) -> Result<(), String> {
        let path = &config.state_path;
        let deadline = now_ns() + 5_000_000_000;
        loop {
            if file_size(self.fd) >= HEADER_LEN && self.header().ready.load(Acquire) == 1 {
                break;
            }
            // Nobody initialising it (the creator died, or the file is foreign and empty):
            // take the init lock and do it ourselves if it is still not ready.
            if shmfile::lock(self.fd, 0, false) {
                // The header may not be readable yet (a creator that has not sized the file):
                // read it only once the file covers it.
                let size = file_size(self.fd);
                let blank = size < HEADER_LEN || (self.header().ready.load(Acquire) != 1 && self.header().magic.load(Relaxed) == 0);
                if blank && size <= len {
                    // SAFETY: ftruncate on our own fd, then remap to the full length.
                    if unsafe { libc::ftruncate(self.fd, len as libc::off_t) } != 0 {
                        shmfile::unlock(self.fd, 0);
                        return Err(os_err("cannot size simgpu state file", path));
                    }
                    self.remap(len).map_err(|e| format!("cannot map simgpu state file {}: {e}", path.display()))?;
                    self.initialise(config, len);
                    break;
                }
                shmfile::unlock(self.fd, 0);
                // Nobody is initialising it and it is not ours to initialise: a foreign or
                // stale file; validation below says which.
                break;
            }
            if now_ns() > deadline {
                return Err(format!("simgpu state file {} never became ready (not a simgpu state file?)", path.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let h = self.header();
        let shape = (h.magic.load(Relaxed), h.version.load(Relaxed));
        if shape.0 != MAGIC {
            return Err(format!("{} is not a simgpu state file (bad magic)", path.display()));
        }
        if shape.1 != VERSION {
            return Err(format!(
                "simgpu state file {} has layout version {}, this simgpu reads {VERSION}: remove it",
                path.display(),
                shape.1
            ));
        }
        let (d, mem, sms) = (h.devices.load(Relaxed), h.memory.load(Relaxed), h.sms.load(Relaxed));
        if (d, mem, sms) != (config.devices, config.memory, config.sms) {
            return Err(format!(
                "simgpu state file {} is a machine of {d} device(s) x {mem} bytes x {sms} SMs, but SIMGPU_DEVICES/SIMGPU_MEMORY/SIMGPU_SMS ask for {} x {} x {}: use another SIMGPU_STATE",
                path.display(),
                config.devices,
                config.memory,
                config.sms
            ));
        }
        let scheduler = (h.quantum_ns.load(Relaxed), h.switch_ns.load(Relaxed));
        let wanted = config.timeslice.map_or((0, 0), |p| (p.quantum_ns.max(1), p.switch_ns));
        if scheduler != wanted {
            return Err(format!(
                "simgpu state file {} time-slices with a quantum of {} ns and {} ns switches (0: FIFO), but SIMGPU_TIMESLICE/SIMGPU_CONTEXT_SWITCH ask for {} and {}: use another SIMGPU_STATE",
                path.display(),
                scheduler.0,
                scheduler.1,
                wanted.0,
                wanted.1
            ));
        }
        if h.file_size.load(Relaxed) != len as u64 || file_size(self.fd) < len || h.max_procs.load(Relaxed) != MAX_PROCS {
            return Err(format!("simgpu state file {} has the wrong size: remove it", path.display()));
        }
        if self.len < len {
            self.remap(len).map_err(|e| format!("cannot map simgpu state file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    fn remap(&mut self, len: usize) -> io::Result<()> {
        // SAFETY: a fresh shared mapping of our fd; the old one is unmapped only after success.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, self.fd, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the old mapping is ours and nothing borrows it across this call (&mut self).
        unsafe { libc::munmap(self.base.cast(), self.len) };
        self.base = base.cast();
        self.len = len;
        Ok(())
    }

    fn device(&self, dev: u32) -> &DeviceState {
        assert!(dev < self.devices, "device {dev} out of range");
        // SAFETY: in bounds of the validated mapping, 64-byte aligned.
        unsafe { &*(self.base.add(DEV_OFF).cast::<DeviceState>().add(dev as usize)) }
    }

    fn interval(&self, dev: u32, index: u64) -> &Interval {
        let i = dev as usize * RING_LEN as usize + (index % RING_LEN) as usize;
        // SAFETY: in bounds of the validated mapping.
        unsafe { &*(self.base.add(ring_off(self.devices)).cast::<Interval>().add(i)) }
    }

    fn slot_at(&self, i: u32) -> &ProcSlot {
        assert!(i < MAX_PROCS);
        // SAFETY: in bounds of the validated mapping, 64-byte aligned.
        unsafe { &*(self.base.add(slot_off(self.devices)).cast::<ProcSlot>().add(i as usize)) }
    }

    fn slot_byte(&self, i: u32) -> i64 {
        (slot_off(self.devices) + i as usize * size_of::<ProcSlot>()) as i64
    }

    fn my_slot(&self) -> &ProcSlot {
        assert!(self.slot != u32::MAX, "an observer has no process slot");
        self.slot_at(self.slot)
    }

    fn claim_slot(&self) -> Option<u32> {
        self.reap();
        for i in 0..MAX_PROCS {
            let s = self.slot_at(i);
            if s.pid.load(Acquire) != 0 || !shmfile::lock(self.fd, self.slot_byte(i), false) {
                continue;
            }
            if s.pid.compare_exchange(0, self.pid, AcqRel, Relaxed).is_err() {
                shmfile::unlock(self.fd, self.slot_byte(i));
                continue;
            }
            s.started.store(now_ns(), Relaxed);
            for d in 0..MAX_DEVICES as usize {
                s.pending[d].store(0, Relaxed);
                s.submitted[d].store(0, Relaxed);
                s.completed[d].store(0, Relaxed);
            }
            self.header().slots_high.fetch_max(i + 1, AcqRel);
            return Some(i);
        }
        None
    }

    /// Returns the memory of every dead process to its device, exactly once. Returns how many
    /// slots were reclaimed.
    pub fn reap(&self) -> u32 {
        let high = self.header().slots_high.load(Acquire).min(MAX_PROCS);
        let mut reaped = 0;
        for i in 0..high {
            if i == self.slot {
                continue;
            }
            let s = self.slot_at(i);
            if s.pid.load(Acquire) == 0 || shmfile::held_elsewhere(self.fd, self.slot_byte(i)) {
                continue;
            }
            // Take the slot's lock: only one reaper wins, and a live owner cannot hold it.
            if !shmfile::lock(self.fd, self.slot_byte(i), false) {
                continue;
            }
            if s.pid.load(Acquire) != 0 {
                for d in 0..self.devices {
                    // A timeline lock the dead process held is free again before its slot is.
                    let _ = self.device(d).lock.compare_exchange(i + 1, 0, AcqRel, Relaxed);
                    let bytes = s.used[d as usize].swap(0, AcqRel);
                    sub_saturating(&self.device(d).used, bytes);
                    s.contexts[d as usize].store(0, Relaxed);
                    s.busy[d as usize].store(0, Relaxed);
                    // A dead process's queued work never runs (its contexts are gone).
                    s.pending[d as usize].store(0, Relaxed);
                }
                s.pid.store(0, Release);
                reaped += 1;
            }
            shmfile::unlock(self.fd, self.slot_byte(i));
        }
        reaped
    }

    /// Number of devices.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// Bytes of memory per device.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// SMs per device.
    pub fn sms(&self) -> u32 {
        self.sms
    }

    /// Memory in use on `dev` by every process of the machine.
    pub fn used(&self, dev: u32) -> u64 {
        self.device(dev).used.load(Acquire).min(self.memory)
    }

    /// Charges `bytes` of `dev` to this process if they fit; false is out of memory.
    pub fn charge(&self, dev: u32, bytes: u64) -> bool {
        let d = self.device(dev);
        let fits = |d: &DeviceState| d.used.fetch_update(AcqRel, Acquire, |u| u.checked_add(bytes).filter(|n| *n <= self.memory)).is_ok();
        if !fits(d) && (self.reap() == 0 || !fits(d)) {
            return false;
        }
        self.my_slot().used[dev as usize].fetch_add(bytes, AcqRel);
        true
    }

    /// Returns `bytes` of `dev` charged earlier by this process.
    pub fn uncharge(&self, dev: u32, bytes: u64) {
        sub_saturating(&self.my_slot().used[dev as usize], bytes);
        sub_saturating(&self.device(dev).used, bytes);
    }

    /// Counts a context of this process on `dev` (NVML lists processes that have one).
    pub fn context_created(&self, dev: u32) {
        self.my_slot().contexts[dev as usize].fetch_add(1, AcqRel);
    }

    /// Forgets a context of this process on `dev`.
    pub fn context_destroyed(&self, dev: u32) {
        let _ = self.my_slot().contexts[dev as usize].fetch_update(AcqRel, Acquire, |c| c.checked_sub(1));
    }

    /// Processes with a context or memory on `dev`, after reaping the dead.
    pub fn processes(&self, dev: u32) -> Vec<ProcessUsage> {
        self.reap();
        let high = self.header().slots_high.load(Acquire).min(MAX_PROCS);
        (0..high)
            .filter_map(|i| {
                let s = self.slot_at(i);
                let pid = s.pid.load(Acquire);
                let used = s.used[dev as usize].load(Acquire);
                let contexts = s.contexts[dev as usize].load(Acquire);
                (pid != 0 && (used > 0 || contexts > 0)).then_some(ProcessUsage { pid, used, contexts })
            })
            .collect()
    }

    /// Queues `duration_ns` of work on `dev`'s timeline after everything queued before, by any
    /// process. Returns (start, end) in `CLOCK_MONOTONIC` nanoseconds.
    pub fn enqueue(&self, dev: u32, duration_ns: u64) -> (u64, u64) {
        let d = self.device(dev);
        self.lock_timeline(d);
        let start = now_ns().max(d.tail.load(Relaxed));
        let end = start.saturating_add(duration_ns);
        d.tail.store(end, Release);
        d.busy_total.fetch_add(duration_ns, Relaxed);
        self.record_interval(dev, d, start, end);
        d.lock.store(0, Release);
        self.my_slot().busy[dev as usize].fetch_add(duration_ns, Relaxed);
        (start, end)
    }

    /// When the last kernel queued on `dev` (by anyone) ends.
    pub fn tail(&self, dev: u32) -> u64 {
        self.device(dev).tail.load(Acquire)
    }

    /// Total simulated GPU time this process has queued on `dev`.
    pub fn my_busy_ns(&self, dev: u32) -> u64 {
        self.my_slot().busy[dev as usize].load(Relaxed)
    }

    fn record_interval(&self, dev: u32, d: &DeviceState, start: u64, end: u64) {
        self.record_span(dev, d, self.pid, start, end, 0);
    }

    /// Appends `[start, end)` run by `pid` (whose completed work is then `work_end`) to the
    /// ring, extending the newest interval when it is the same process's and ends at `start`.
    fn record_span(&self, dev: u32, d: &DeviceState, pid: u32, start: u64, end: u64, work_end: u64) {
        let head = d.ring_head.load(Relaxed);
        if head > 0 {
            let last = self.interval(dev, head - 1);
            if last.pid.load(Relaxed) == u64::from(pid) && last.end.load(Relaxed) == start {
                last.work_end.store(work_end, Relaxed);
                last.end.store(end, Release);
                return;
            }
        }
        let e = self.interval(dev, head);
        e.seq.store(2 * head + 1, Release);
        e.start.store(start, Relaxed);
        e.end.store(end, Relaxed);
        e.pid.store(u64::from(pid), Relaxed);
        e.work_end.store(work_end, Relaxed);
        e.seq.store(2 * head + 2, Release);
        d.ring_head.store(head + 1, Release);
    }

    /// The time-slicing parameters, if this machine time-slices.
    pub fn timeslice(&self) -> Option<Params> {
        let h = self.header();
        match h.quantum_ns.load(Relaxed) {
            0 => None,
            q => Some(Params { quantum_ns: q, switch_ns: h.switch_ns.load(Relaxed) }),
        }
    }

    /// Brings a time-sliced device's schedule up to now (the device's lock held by the caller):
    /// runs the processes' pending work in turns and records what ran.
    fn advance_locked(&self, dev: u32, d: &DeviceState, p: Params, to: u64) {
        let high = self.header().slots_high.load(Acquire).min(MAX_PROCS) as usize;
        let di = dev as usize;
        // A slot nobody owns has nothing to run, whatever its counter says.
        let mut pending = self.pending_work(di, high);
        let mut state = self.ts_state(d);
        if state.now == 0 {
            state.now = to; // never run: idle until now
        }
        let mut ran = vec![0u64; high];
        timeslice::advance(&mut state, &mut pending, to, p, |c, start, end| {
            let s = self.slot_at(c as u32);
            let work_end = s.completed[di].fetch_add(end - start, AcqRel) + (end - start);
            s.busy[di].fetch_add(end - start, Relaxed);
            d.busy_total.fetch_add(end - start, Relaxed);
            ran[c] += end - start;
            self.record_span(dev, d, s.pid.load(Relaxed), start, end, work_end);
        });
        for (i, r) in ran.iter().enumerate().filter(|(_, r)| **r > 0) {
            sub_saturating(&self.slot_at(i as u32).pending[di], *r);
        }
        d.ts_now.store(state.now, Relaxed);
        d.ts_current.store(state.current.map_or(0, |c| c as u64 + 1), Relaxed);
        d.ts_slice_left.store(state.slice_left, Relaxed);
        d.ts_switch_left.store(state.switch_left, Relaxed);
        d.tail.store(state.now.max(d.tail.load(Relaxed)), Relaxed);
    }

    /// Every slot's pending work on device `di` (0 for a slot nobody owns, whatever its
    /// counter says).
    fn pending_work(&self, di: usize, high: usize) -> Vec<u64> {
        (0..high)
            .map(|i| {
                let s = self.slot_at(i as u32);
                if s.pid.load(Acquire) == 0 { 0 } else { s.pending[di].load(Acquire) }
            })
            .collect()
    }

    /// The time-slice scheduler's state of device `d`.
    fn ts_state(&self, d: &DeviceState) -> Device {
        Device {
            now: d.ts_now.load(Relaxed),
            current: d.ts_current.load(Relaxed).checked_sub(1).map(|c| c as usize),
            slice_left: d.ts_slice_left.load(Relaxed),
            switch_left: d.ts_switch_left.load(Relaxed),
        }
    }

    /// Queues `duration_ns` of this process's work on `dev`: on a FIFO machine after everything
    /// queued before (see [`Machine::enqueue`]); on a time-sliced one, in this process's own
    /// queue, run in turns with the others'. Returns when it completes, as a [`Point`].
    pub fn submit(&self, dev: u32, duration_ns: u64) -> Point {
        let Some(p) = self.timeslice() else { return Point::At(self.enqueue(dev, duration_ns).1) };
        let d = self.device(dev);
        self.lock_timeline(d);
        self.advance_locked(dev, d, p, now_ns());
        let me = self.my_slot();
        me.pending[dev as usize].fetch_add(duration_ns, AcqRel);
        let work = me.submitted[dev as usize].fetch_add(duration_ns, AcqRel) + duration_ns;
        d.lock.store(0, Release);
        Point::Work(work)
    }

    /// A point after everything this process has queued on `dev` (and, on a FIFO machine,
    /// after everything anyone queued there, and after `after`).
    pub fn mark(&self, dev: u32, after: Point) -> Point {
        match self.timeslice() {
            None => Point::At(after.time().max(now_ns()).max(self.tail(dev))),
            Some(_) => Point::Work(self.my_slot().submitted[dev as usize].load(Acquire).max(after.work())),
        }
    }

    /// When `point` was reached on `dev`, if it has been (0 for a work total reached before
    /// anything the ring remembers).
    pub fn reached(&self, dev: u32, point: Point) -> Option<u64> {
        match point {
            Point::At(t) => (t <= now_ns()).then_some(t),
            Point::Work(w) => {
                self.refresh(dev);
                // A total the ring no longer dates (or 0, reached before any work) was reached
                // long ago: the caller's own floor (an event's record time) applies.
                (self.my_slot().completed[dev as usize].load(Acquire) >= w).then(|| self.time_of_work(dev, w).unwrap_or(0))
            }
        }
    }

    /// Waits until `point` is reached on `dev`.
    pub fn wait(&self, dev: u32, point: Point) {
        match point {
            Point::At(t) => sleep_until(t),
            Point::Work(w) => loop {
                if self.reached(dev, point).is_some() {
                    return;
                }
                // When it would complete if nothing more arrived; others' new work can only
                // delay it, so wake then (at most 2 ms from now) and look again.
                let eta = self.eta(dev, w);
                sleep_until(eta.min(now_ns() + 2_000_000));
            },
        }
    }

    /// When this process's work on `dev` reaches `work`, if no more work arrives.
    fn eta(&self, dev: u32, work: u64) -> u64 {
        let Some(p) = self.timeslice() else { return now_ns() };
        let d = self.device(dev);
        self.lock_timeline(d);
        self.advance_locked(dev, d, p, now_ns());
        let di = dev as usize;
        let high = self.header().slots_high.load(Acquire).min(MAX_PROCS) as usize;
        let pending = self.pending_work(di, high);
        let state = self.ts_state(d);
        d.lock.store(0, Release);
        let done = self.my_slot().completed[di].load(Acquire);
        timeslice::finish_time(&state, &pending, self.slot as usize, work.saturating_sub(done), p)
    }

    /// On a time-sliced machine, brings `dev`'s schedule up to now (before reading its busy
    /// spans, or a process's progress). Returns now.
    pub fn refresh(&self, dev: u32) -> u64 {
        let now = now_ns();
        if let Some(p) = self.timeslice() {
            let d = self.device(dev);
            self.lock_timeline(d);
            self.advance_locked(dev, d, p, now);
            d.lock.store(0, Release);
        }
        now
    }

    /// When this process's completed work on `dev` reached `work`, from the ring.
    fn time_of_work(&self, dev: u32, work: u64) -> Option<u64> {
        let mut found = None;
        let head = self.device(dev).ring_head.load(Acquire);
        let oldest = head.saturating_sub(RING_LEN - 1);
        let mut i = head;
        while i > oldest && found.is_none() {
            i -= 1;
            let iv = self.interval(dev, i);
            if iv.pid.load(Relaxed) != u64::from(self.pid) {
                continue;
            }
            let (s, e, w_end) = (iv.start.load(Relaxed), iv.end.load(Acquire), iv.work_end.load(Relaxed));
            let w_start = w_end.saturating_sub(e - s);
            if w_end < work {
                break;
            }
            // The first moment the total reached `work`: inside this span, or at the end of an
            // older one when `work` is where this span began.
            if w_start < work {
                found = Some(s + (work - w_start));
            }
        }
        found
    }

    /// Who holds a timeline lock, as its word says: slot + 1 for a process, `u32::MAX` for an
    /// observer (NVML bringing a time-sliced schedule up to date), whose liveness no slot lock
    /// tells: it holds the lock for microseconds, and is taken over after 50 ms like a dead one.
    fn holder_id(&self) -> u32 {
        if self.slot == u32::MAX { u32::MAX } else { self.slot + 1 }
    }

    fn lock_timeline(&self, d: &DeviceState) {
        let mut spins = 0u32;
        let mut since = 0u64;
        loop {
            let holder = d.lock.load(Relaxed);
            if holder == 0 {
                if d.lock.compare_exchange_weak(0, self.holder_id(), Acquire, Relaxed).is_ok() {
                    return;
                }
                continue;
            }
            spins += 1;
            if spins < 200 {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
            // The lock is held for nanoseconds; a holder that has sat on it for 50 ms and whose
            // slot lock is gone died inside: take it over. (Another thread of this process is
            // alive by definition; the slot lock cannot tell, since it is our own.)
            let now = now_ns();
            if since == 0 {
                since = now;
            } else if now - since > 50_000_000
                && holder != self.holder_id()
                && (holder > MAX_PROCS || !shmfile::held_elsewhere(self.fd, self.slot_byte(holder - 1)))
            {
                if d.lock.compare_exchange(holder, self.holder_id(), Acquire, Relaxed).is_ok() {
                    return;
                }
                since = 0;
            }
        }
    }

    /// Busy nanoseconds of `dev` within `[t0, t1)`, for all processes or one `pid`, read from
    /// the recent-interval ring (older history than the ring holds is not counted).
    pub fn busy_between(&self, dev: u32, t0: u64, t1: u64, pid: Option<u32>) -> u64 {
        let mut total = 0;
        self.busy_spans(dev, t0, t1, |s, e, p| {
            if pid.is_none_or(|want| want == p) {
                total += e - s;
            }
        });
        total
    }

    /// Busy nanoseconds per process of `dev` within `[t0, t1)`.
    pub fn busy_by_process(&self, dev: u32, t0: u64, t1: u64) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        self.busy_spans(dev, t0, t1, |s, e, p| match out.iter_mut().find(|(q, _)| *q == p) {
            Some(entry) => entry.1 += e - s,
            None => out.push((p, e - s)),
        });
        out
    }

    /// Visits every busy span of `dev` that overlaps `[t0, t1)`, clipped to it, as
    /// `(start, end, pid)`, newest first (from the recent-interval ring).
    pub fn busy_spans(&self, dev: u32, t0: u64, t1: u64, mut f: impl FnMut(u64, u64, u32)) {
        // A time-sliced schedule is run lazily: bring it up to now before reading what ran.
        self.refresh(dev);
        self.for_intervals(dev, t0, |s, e, p| {
            let (s, e) = (s.max(t0), e.min(t1));
            if e > s {
                f(s, e, p as u32);
            }
        });
    }

    fn for_intervals(&self, dev: u32, t0: u64, mut f: impl FnMut(u64, u64, u64)) {
        let head = self.device(dev).ring_head.load(Acquire);
        let oldest = head.saturating_sub(RING_LEN - 1);
        let mut i = head;
        while i > oldest {
            i -= 1;
            let e = self.interval(dev, i);
            let seq = e.seq.load(Acquire);
            let (s, end, p) = (e.start.load(Relaxed), e.end.load(Acquire), e.pid.load(Relaxed));
            if seq != 2 * i + 2 || e.seq.load(Acquire) != seq {
                continue;
            }
            if end <= t0 {
                break;
            }
            f(s, end, p);
        }
    }
}

/// Writes a machine's header, the ready flag last.
///
/// # Safety
/// `base` is a writable mapping of at least `HEADER_LEN` bytes.
unsafe fn write_header(base: *mut u8, config: &SimConfig, len: usize) {
    // SAFETY: the caller's mapping covers the header and is page-aligned.
    let h = unsafe { &*(base as *const Header) };
    h.version.store(VERSION, Relaxed);
    h.devices.store(config.devices, Relaxed);
    h.sms.store(config.sms, Relaxed);
    h.max_procs.store(MAX_PROCS, Relaxed);
    h.memory.store(config.memory, Relaxed);
    h.file_size.store(len as u64, Relaxed);
    h.pidns.store(crate::pids::my_namespace().unwrap_or(0), Relaxed);
    if let Some(p) = config.timeslice {
        h.quantum_ns.store(p.quantum_ns.max(1), Relaxed);
        h.switch_ns.store(p.switch_ns, Relaxed);
    }
    h.magic.store(MAGIC, Relaxed);
    h.ready.store(1, Release);
}

fn sub_saturating(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(AcqRel, Acquire, |v| Some(v.saturating_sub(n)));
}

/// The size of the file behind `fd`, in bytes.
fn file_size(fd: libc::c_int) -> usize {
    shmfile::file_size(fd) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, memory: u64) -> SimConfig {
        crate::config::from_lookup(|k| match k {
            "SIMGPU_STATE" => Some(dir.join("state").display().to_string()),
            "SIMGPU_MEMORY" => Some(memory.to_string()),
            "SIMGPU_DEVICES" => Some("2".into()),
            _ => None,
        })
        .unwrap()
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("simgpu-test-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn memory_is_shared_and_bounded() {
        let dir = tempdir();
        let cfg = config(&dir, 1000);
        let a = Machine::open(&cfg).unwrap();
        let b = Machine::open(&cfg).unwrap();
        assert!(a.charge(0, 600));
        assert!(!b.charge(0, 500), "the device is shared: 600 + 500 > 1000");
        assert!(b.charge(0, 400));
        assert_eq!(a.used(0), 1000);
        assert_eq!(a.used(1), 0);
        a.uncharge(0, 600);
        assert_eq!(b.used(0), 400);
    }

    #[test]
    fn timeline_is_fifo_across_openers() {
        let dir = tempdir();
        let cfg = config(&dir, 1 << 30);
        let a = Machine::open(&cfg).unwrap();
        let b = Machine::open(&cfg).unwrap();
        let (s1, e1) = a.enqueue(0, 10_000_000);
        let (s2, e2) = b.enqueue(0, 1_000);
        assert!(s2 >= e1, "b's kernel waits for a's");
        assert_eq!(e2 - s2, 1_000);
        assert_eq!(a.busy_between(0, s1, e2, None), 10_001_000);
        assert_eq!(a.tail(0), e2);
    }

    #[test]
    fn a_timeline_lock_held_by_a_dead_process_is_taken_over_or_freed_by_its_reaper() {
        let dir = tempdir();
        let cfg = config(&dir, 1 << 30);
        let a = Machine::open(&cfg).unwrap();
        // A holder whose slot nobody holds (a process that died inside the lock).
        a.device(0).lock.store(10, Release);
        let (s, e) = a.enqueue(0, 1_000);
        assert_eq!(e - s, 1_000, "taken over after the holder was found dead");
        assert_eq!(a.device(0).lock.load(Acquire), 0);
        // A process that dies holding it: its reaper frees it with its slot.
        let b = Machine::open(&cfg).unwrap();
        a.device(1).lock.store(b.slot + 1, Release);
        let b = std::mem::ManuallyDrop::new(b);
        // SAFETY: b's own mapping and descriptor, never used again (the mapping holds the open
        // file description, and with it the slot lock, as much as the descriptor does).
        unsafe {
            libc::munmap(b.base.cast(), b.len);
            libc::close(b.fd);
        }
        assert_eq!(a.reap(), 1);
        assert_eq!(a.device(1).lock.load(Acquire), 0);
        let (s, e) = a.enqueue(1, 1_000);
        assert_eq!(e - s, 1_000);
    }

    #[test]
    fn a_time_sliced_device_alternates_two_processes_at_the_quantum() {
        let dir = tempdir();
        let cfg = crate::config::from_lookup(|k| match k {
            "SIMGPU_STATE" => Some(dir.join("state").display().to_string()),
            "SIMGPU_TIMESLICE" => Some("2ms".into()),
            "SIMGPU_CONTEXT_SWITCH" => Some("50us".into()),
            _ => None,
        })
        .unwrap();
        let a = Machine::open(&cfg).unwrap();
        let b = Machine::open(&cfg).unwrap();
        let t0 = now_ns();
        let pa = a.submit(0, 10_000_000);
        let pb = b.submit(0, 10_000_000);
        assert!(matches!(pa, Point::Work(10_000_000)) && matches!(pb, Point::Work(10_000_000)));
        assert_eq!(a.reached(0, pa), None, "10 ms of work is not done at once");
        a.wait(0, pa);
        b.wait(0, pb);
        let (ta, tb) = (a.reached(0, pa).unwrap(), b.reached(0, pb).unwrap());
        let mut spans = Vec::new();
        a.busy_spans(0, t0, now_ns(), |s, e, p| spans.push((s, e, p)));
        spans.reverse();
        // Both "processes" are this one (one PID): their turns show as spans separated by the
        // switch. a ran first (alone until b's work arrived, within microseconds), then turns
        // of one quantum alternate, each after a 50 us switch.
        assert!(spans.len() >= 8, "20 ms of work in 2 ms turns: {spans:?}");
        for w in spans.windows(2) {
            assert_eq!(w[1].0 - w[0].1, 50_000, "a switch costs 50 us between turns: {spans:?}");
        }
        for s in &spans[1..spans.len() - 1] {
            assert_eq!(s.1 - s.0, 2_000_000, "a turn is one quantum while both have work: {spans:?}");
        }
        let busy: u64 = spans.iter().map(|s| s.1 - s.0).sum();
        assert_eq!(busy, 20_000_000, "all the work ran, once");
        assert!(ta.max(tb) >= t0 + 20_000_000, "both finish after 20 ms of work and the switches");
        assert!(ta.abs_diff(tb) <= 2_100_000, "they finish within a turn of each other: {ta} {tb}");
        // A process's event-like mark after its work is reached when its work is.
        assert_eq!(a.mark(0, Point::default()), Point::Work(10_000_000));
    }

    #[test]
    fn a_fifo_and_a_time_sliced_machine_do_not_share_a_state_file() {
        let dir = tempdir();
        let _fifo = Machine::open(&config(&dir, 1 << 30)).unwrap();
        let mut sliced = config(&dir, 1 << 30);
        sliced.timeslice = Some(Params { quantum_ns: 2_000_000, switch_ns: 0 });
        assert!(Machine::open(&sliced).err().unwrap().contains("use another SIMGPU_STATE"));
    }

    #[test]
    fn wrong_shape_is_refused() {
        let dir = tempdir();
        let _a = Machine::open(&config(&dir, 1000)).unwrap();
        let err = Machine::open(&config(&dir, 2000)).err().unwrap();
        assert!(err.contains("use another SIMGPU_STATE"), "{err}");
        std::fs::write(dir.join("junk"), vec![7u8; 8192]).unwrap();
        let mut c = config(&dir, 1000);
        c.state_path = dir.join("junk");
        assert!(Machine::open(&c).err().unwrap().contains("not a simgpu state file"));
    }
}
