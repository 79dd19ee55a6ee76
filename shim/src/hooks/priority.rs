//! `CUDA_TASK_PRIORITY` on the launch path: a high-priority process marks its device busy on
//! the node-wide board when it launches and idle when a synchronisation covering its work
//! returns; a low-priority process's launch waits while the board shows high-priority work on
//! its device. What counts, how long to wait and when to stop are decided in
//! `vgpu_limiter::priority`; the board (and why nothing on it is trusted) is
//! `vgpu_limiter::priority::board`.
//!
//! A GPU time-slices between processes' contexts and cannot preempt one process's queued work
//! for another's, so work a low-priority process queued before the high-priority request came
//! still shares the device with it. To keep that short, a low-priority process keeps at most
//! one launch in flight while a high-priority container is present on its device (the board's
//! hint is set: one wrote within the last hold): each launch waits for the previous one to
//! finish (an event recorded after it) before the busy check. The floor a request then sees
//! is the remainder of one low-priority launch.
//!
//! Cost when nothing of higher priority is active: one load of the device's hint word after
//! the cached board and section are found. No lock and no system call; the clock is read only
//! when the hint says some high-priority process wrote since readers last cleared it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::*};

use cuda_sys::driver::{CUresult, CUstream};
use vgpu_limiter::config::{Config, MAX_DEVICES, Priority};
use vgpu_limiter::priority::board::{Board, Hint, device_key, guard_fired};
use vgpu_limiter::priority::{Gate, MAX_WAIT_NS, Streams, Synced, gate, idle_after, now_ns};

use super::{Driver, Enforce};
use crate::log;

use CUresult as R;

const UNKNOWN: u32 = 0;
const NONE: u32 = u32::MAX;

/// This process's side of the priority board.
pub struct PriorityState {
    priority: Priority,
    floor: u8,
    path: PathBuf,
    board: OnceLock<Option<Board>>,
    /// Identifies this process's entries (renewed in a child after `fork`).
    token: AtomicU64,
    /// Per application device: its section + 1 ([`UNKNOWN`], [`NONE`]: priority off there).
    sections: [AtomicU32; MAX_DEVICES],
    /// The section's key, to notice a tenant rewriting it.
    keys: [AtomicU64; MAX_DEVICES],
    /// Per device (high priority): this process's entry + 1.
    entries: [AtomicU32; MAX_DEVICES],
    /// Per device (high priority): where launches went since the last idle point ([`Streams`]).
    streams: [AtomicU64; MAX_DEVICES],
    /// Launches so far (high priority), to tell whether one happened during a synchronisation.
    launches: AtomicU64,
    /// Per device (low priority): the event recorded after the last launch while a
    /// high-priority container was present (null: none yet).
    events: [AtomicPtr<cuda_sys::driver::CUevent_st>; MAX_DEVICES],
    /// Per device (low priority): whether that event was recorded since it last completed.
    armed: [AtomicBool; MAX_DEVICES],
    warned: AtomicBool,
}

fn new_token() -> u64 {
    let mut x = now_ns() ^ (u64::from(std::process::id()) << 32) ^ (&ANCHOR as *const u8 as u64);
    // splitmix64: spreads the bits; never 0.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) | 1
}
/// Its address differs between runs (ASLR): one more source of difference between tokens.
static ANCHOR: u8 = 0;

impl PriorityState {
    /// From the configuration.
    pub fn new(config: &Config) -> PriorityState {
        PriorityState {
            priority: config.task_priority(),
            floor: config.priority_floor,
            path: vgpu_limiter::priority::board::path(config.priority_board.as_deref()),
            board: OnceLock::new(),
            token: AtomicU64::new(new_token()),
            sections: std::array::from_fn(|_| AtomicU32::new(UNKNOWN)),
            keys: std::array::from_fn(|_| AtomicU64::new(0)),
            entries: std::array::from_fn(|_| AtomicU32::new(0)),
            streams: std::array::from_fn(|_| AtomicU64::new(0)),
            launches: AtomicU64::new(0),
            events: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            armed: std::array::from_fn(|_| AtomicBool::new(false)),
            warned: AtomicBool::new(false),
        }
    }

    /// This process's priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// `device`'s hint word on the board, for the launch fast path (`None`: priority has no
    /// effect on that device).
    pub(super) fn hint_word<D: Driver>(&'static self, driver: &D, device: usize) -> Option<Hint<'static>> {
        let (board, sec) = self.section(driver, device)?;
        board.hint(sec)
    }

    /// In a child after `fork`: its own token and entries (the parent's stay the parent's).
    pub fn after_fork(&self) {
        self.token.store(new_token(), Relaxed);
        for d in 0..MAX_DEVICES {
            self.entries[d].store(0, Relaxed);
            self.streams[d].store(0, Relaxed);
            // The parent's events belong to its contexts, which the child does not have.
            self.events[d].store(std::ptr::null_mut(), Relaxed);
            self.armed[d].store(false, Relaxed);
        }
    }

    /// A context on `device` was destroyed: the event kept there may have gone with it (it is
    /// forgotten, never used again), and a high-priority process's work there is over.
    pub fn context_gone(&self, device: usize) {
        let Some(d) = (device < MAX_DEVICES).then_some(device) else { return };
        self.events[d].store(std::ptr::null_mut(), Release);
        self.armed[d].store(false, Release);
        if self.priority == Priority::High
            && self.streams[d].swap(0, AcqRel) != 0
            && let Some(board) = self.board.get().and_then(Option::as_ref)
            && let s = self.sections[d].load(Acquire)
            && s != UNKNOWN
            && s != NONE
            && let e @ 1.. = self.entries[d].load(Acquire)
        {
            board.idle((s - 1) as usize, (e - 1) as usize, self.token.load(Relaxed));
        }
    }

    fn warn_once(&self, what: std::fmt::Arguments<'_>) {
        if !self.warned.swap(true, Relaxed) {
            log::warn(format_args!("priority board {}: {what}; CUDA_TASK_PRIORITY has no effect in this process", self.path.display()));
        }
    }

    fn board(&self) -> Option<&Board> {
        self.board
            .get_or_init(|| match Board::open(&self.path) {
                Ok(b) => {
                    if !b.writable() && self.priority == Priority::High {
                        self.warn_once(format_args!("read-only here"));
                    }
                    Some(b)
                }
                Err(e) => {
                    self.warn_once(format_args!("{e}"));
                    None
                }
            })
            .as_ref()
    }

    /// The board and `device`'s section on it (found once per device).
    fn section<D: Driver>(&self, driver: &D, device: usize) -> Option<(&Board, usize)> {
        let board = self.board()?;
        let cached = self.sections[device].load(Acquire);
        match cached {
            NONE => return None,
            UNKNOWN => {}
            s => return Some((board, (s - 1) as usize)),
        }
        let found = driver.device_uuid(device as i32).map(|u| device_key(&u)).and_then(|key| {
            self.keys[device].store(key, Relaxed);
            board.section(key)
        });
        match found {
            Some(s) => {
                self.sections[device].store(s as u32 + 1, Release);
                Some((board, s))
            }
            None => {
                self.sections[device].store(NONE, Release);
                self.warn_once(format_args!("no section for device {device} (full, or its UUID unknown)"));
                None
            }
        }
    }

    /// High priority: this process's work on `device` is in flight from `now`.
    fn mark_busy(&self, board: &Board, sec: usize, device: usize, stream: u64) {
        self.launches.fetch_add(1, AcqRel);
        let was = self.streams[device].load(Acquire);
        let next = Streams::unpack(was).after_launch(stream).pack();
        if next != was {
            self.streams[device].store(next, Release);
        }
        let token = self.token.load(Relaxed);
        let now = now_ns();
        for _ in 0..2 {
            let entry = match self.entries[device].load(Acquire) {
                0 => match board.claim(sec, token, now) {
                    Some(e) => {
                        self.entries[device].store(e as u32 + 1, Release);
                        e
                    }
                    None => {
                        self.warn_once(format_args!("no free entry for device {device}"));
                        return;
                    }
                },
                e => (e - 1) as usize,
            };
            if board.busy(sec, entry, token, now) {
                return;
            }
            // Taken over (a tenant wrote it, or it looked stale): claim again.
            self.entries[device].store(0, Release);
        }
    }

    /// Low priority: waits for its previous launch and while high-priority work is in flight
    /// on the device. `Some(device)`: a high-priority container is present, so the launch is
    /// followed by an event ([`after_launch`]).
    fn hold_back<D: Driver>(&self, driver: &D, board: &Board, sec: usize, device: usize) -> Option<usize> {
        if board.quiet(sec) {
            return None;
        }
        if !board.owns(sec, self.keys[device].load(Relaxed)) {
            // A tenant rewrote the section's key: look it up again next time (the fast path's
            // kept hint may be the wrong one now).
            self.sections[device].store(UNKNOWN, Release);
            super::fast::never();
            return None;
        }
        let start = now_ns();
        if self.armed[device].swap(false, AcqRel) {
            let ev = self.events[device].load(Acquire);
            // Polled, not `cuEventSynchronize`: the wait is bounded like every other (a kernel
            // may wait for something the host does later). An error (its context is gone)
            // ends it as well as completion does.
            while !ev.is_null() && driver.event_query(ev) == R::CUDA_ERROR_NOT_READY && now_ns() - start < MAX_WAIT_NS {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        self.wait_while_busy(board, sec, start);
        Some(device)
    }

    /// Low priority during a stream capture: the busy wait alone.
    fn hold_back_only(&self, board: &Board, sec: usize, device: usize) {
        if !board.quiet(sec) && board.owns(sec, self.keys[device].load(Relaxed)) {
            self.wait_while_busy(board, sec, now_ns());
        }
    }

    /// Waits while a high-priority process is busy on the section (bounded from `start`).
    fn wait_while_busy(&self, board: &Board, sec: usize, start: u64) {
        let mut now = now_ns();
        loop {
            match gate(board.busy_until(sec, now), now, now.saturating_sub(start), self.floor) {
                Gate::Go => break,
                Gate::Wait(ns) => board.wait(sec, ns, || board.busy_until(sec, now_ns()).is_some()),
            }
            now = now_ns();
        }
        if guard_fired() {
            self.warn_once(format_args!("the file was shrunk by another process"));
        }
    }

    /// Low priority, after a launch made while a high-priority container was present: records
    /// the event the next launch waits for.
    fn recorded<D: Driver>(&self, driver: &D, device: usize, stream: CUstream) {
        let mut ev = self.events[device].load(Acquire);
        if ev.is_null() {
            let Some(made) = driver.event_create() else { return };
            match self.events[device].compare_exchange(std::ptr::null_mut(), made, AcqRel, Acquire) {
                Ok(_) => ev = made,
                Err(theirs) => {
                    driver.event_destroy(made);
                    ev = theirs;
                }
            }
        }
        if driver.event_record(ev, stream) == R::CUDA_SUCCESS {
            self.armed[device].store(true, Release);
        }
    }
}

/// The stream a launch or synchronisation names, as a key.
fn stream_key(stream: CUstream, per_thread: bool) -> u64 {
    super::launch::named_stream(stream, per_thread) as u64
}

/// What [`after_launch`] must do: record the completion event on this device.
#[derive(Clone, Copy)]
pub(super) struct Ticket(Option<usize>);

/// Before a launch on `stream`: publish (high) or wait (low).
pub(super) fn before_launch<D: Driver>(e: &Enforce<D>, stream: CUstream, per_thread: bool) -> Ticket {
    let p = &e.shim.priority;
    if p.priority == Priority::Low && super::fast::quiet_known() {
        return Ticket(None); // the kept hints: nothing of higher priority is active
    }
    let Ok(device) = e.shim.sm.launch_device(&e.driver) else { return Ticket(None) };
    let Some((board, sec)) = p.section(&e.driver, device) else { return Ticket(None) };
    match p.priority {
        Priority::High => {
            p.mark_busy(board, sec, device, stream_key(stream, per_thread));
            Ticket(None)
        }
        // While a stream is captured (global mode), no event may be queried or recorded:
        // the launch only waits for high-priority work, without the one-in-flight rule.
        Priority::Low if e.shim.sm.any_capture() => {
            p.hold_back_only(board, sec, device);
            Ticket(None)
        }
        Priority::Low => Ticket(p.hold_back(&e.driver, board, sec, device)),
    }
}

/// After a launch that returned `rc`: in a low-priority process beside a high-priority
/// container, the event its next launch waits for.
pub(super) fn after_launch<D: Driver>(e: &Enforce<D>, ticket: Ticket, stream: CUstream, per_thread: bool, rc: R) {
    if let Ticket(Some(device)) = ticket
        && rc == R::CUDA_SUCCESS
    {
        e.shim.priority.recorded(&e.driver, device, super::launch::named_stream(stream, per_thread));
    }
}

/// A synchronisation: forwarded; then, in a high-priority process, if it covered every launch
/// since the last idle point, the device is idle on the board at once.
fn synced<D: Driver>(e: &Enforce<D>, what: Synced, call: impl FnOnce() -> R) -> R {
    let p = &e.shim.priority;
    if p.priority != Priority::High {
        return call();
    }
    let Ok(device) = e.shim.sm.launch_device(&e.driver) else { return call() };
    let before = p.streams[device].load(Acquire);
    if before != Streams::None.pack()
        && let Some((board, sec)) = p.section(&e.driver, device)
        && let e @ 1.. = p.entries[device].load(Acquire)
    {
        // Busy for one more hold from now: the wait may be long, and it is work in flight.
        board.busy(sec, (e - 1) as usize, p.token.load(Relaxed), now_ns());
    }
    let launches = p.launches.load(Acquire);
    let rc = call();
    if rc == R::CUDA_SUCCESS
        && idle_after(what, before, p.launches.load(Acquire) != launches)
        && p.streams[device].compare_exchange(before, 0, AcqRel, Relaxed).is_ok()
        && let Some((board, sec)) = p.section(&e.driver, device)
        && let e @ 1.. = p.entries[device].load(Acquire)
    {
        board.idle(sec, (e - 1) as usize, p.token.load(Relaxed));
    }
    rc
}

/// `cuCtxSynchronize`.
pub fn ctx_synchronize<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R) -> R {
    synced(e, Synced::Context, call)
}

/// `cuStreamSynchronize`, and `_ptsz` (`PER_THREAD`: the null stream is the per-thread one).
pub fn stream_synchronize<const PER_THREAD: bool>(e: &Enforce<impl Driver>, call: impl FnOnce() -> R, stream: CUstream) -> R {
    synced(e, Synced::Stream(stream_key(stream, PER_THREAD)), call)
}
