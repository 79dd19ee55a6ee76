//! The launch fast path. With no SM limit and no high-priority work on the process's devices,
//! a launch hook decides nothing: it only forwards. Once a first launch has gone the whole
//! way (the mode, region, limits and priority sections are known), the kernel-launch exports
//! check one process-local word and each device's priority hint on the board, and forward.
//! With an SM limit on the one device a process sees, they charge the kept bucket
//! (`hooks::launch`), and go the whole way only to wait, to time a launch, to read finished
//! timings, or while a stream is captured.
//!
//! Why it exists: measured as a whole process (a program preloaded or not, each launch timed),
//! every cache line and branch the hook touches is cold again by the next launch, because the
//! driver's own launch work evicts it; the full path touched about twenty lines across the
//! shim's state for what is, in this case, a plain call. This path touches two: [`FAST`] and
//! the hint word.
//!
//! Armed only from the whole path, by a low-priority (default) process; never in a
//! high-priority one (its launches publish on the board). Disarmed for good when a device's
//! section on the board changes (a tenant rewrote its key: the whole path looks it up again).
//! In a child after `fork` the first launch goes the whole way, renewing the region; a child
//! whose parent had kept a bucket (in the parent's region) stays on the whole path.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::*};

use vgpu_limiter::config::{MAX_DEVICES, Priority};
use vgpu_limiter::sm::{Bucket, CostModel};

use super::{Driver, Enforce};
use crate::share::SmState;

/// Not armed yet: launches take the whole path.
const OFF: u8 = 0;
/// No SM limit: launches are forwarded when every hint is quiet.
const ARMED: u8 = 1;
/// An SM limit on the one device the process sees: launches are charged to the kept bucket.
const SM_ARMED: u8 = 2;
/// Never again in this process (a section changed, high priority, or a child after `fork`
/// that had kept its parent's bucket).
const NEVER: u8 = 3;

/// What the SM-limited fast path needs, found once.
pub struct SmFast {
    /// The process's SM state (its capture count).
    pub sm: &'static SmState,
    /// The bucket of the one device.
    pub bucket: Bucket<'static>,
    /// The learned costs.
    pub model: &'static CostModel,
}

/// The fast path's state, in one cache line: whether it is armed, and the hint words a launch
/// must find quiet (the first device's, and the others' if the process sees several).
#[repr(C, align(64))]
struct Fast {
    state: AtomicU8,
    /// The hints are this process's sections' (the SM-limited path checks them too).
    known: AtomicBool,
    first: OnceLock<&'static AtomicU64>,
    rest: OnceLock<&'static [&'static AtomicU64]>,
    sm: OnceLock<SmFast>,
}

static FAST: Fast =
    Fast { state: AtomicU8::new(OFF), known: AtomicBool::new(false), first: OnceLock::new(), rest: OnceLock::new(), sm: OnceLock::new() };

/// Whether a kernel launch may be forwarded at once (the exports' first check).
#[inline(always)]
pub fn forward_at_once() -> bool {
    FAST.state.load(Acquire) == ARMED && hints_quiet()
}

/// The kept bucket, when a launch may be charged to it on the fast path.
#[inline(always)]
pub fn throttle() -> Option<&'static SmFast> {
    if FAST.state.load(Acquire) == SM_ARMED && hints_quiet() { FAST.sm.get() } else { None }
}

/// Whether the kept hints are known and quiet: a low-priority launch waits for nothing (the
/// priority hooks' first check, SM limit or not).
#[inline(always)]
pub(super) fn quiet_known() -> bool {
    FAST.known.load(Acquire) && hints_quiet()
}

#[inline(always)]
fn hints_quiet() -> bool {
    FAST.first.get().is_none_or(|w| w.load(Acquire) == 0) && FAST.rest.get().is_none_or(|r| r.is_empty() || all_quiet(r))
}

/// Whether every one of several devices' hints is quiet.
#[cold]
fn all_quiet(words: &[&AtomicU64]) -> bool {
    words.iter().all(|w| w.load(Acquire) == 0)
}

/// After a launch that went the whole way: keeps this process's hint words, and arms the fast
/// path if it has no SM limit (once; later calls cost two loads). Never in a high-priority
/// process (its launches publish on the board).
pub(super) fn arm<D: Driver>(e: &Enforce<'static, D>) {
    if FAST.known.load(Relaxed) || FAST.state.load(Relaxed) == NEVER {
        return;
    }
    let p = &e.shim.priority;
    if p.priority() == Priority::High {
        never();
        return;
    }
    let Some(count) = e.driver.device_count().and_then(|n| usize::try_from(n).ok()) else { return };
    if FAST.first.get().is_none() && FAST.rest.get().is_none() {
        let mut words = (0..count.min(MAX_DEVICES)).filter_map(|device| p.hint_word(&e.driver, device));
        if let Some(first) = words.next() {
            let _ = FAST.first.set(first);
        }
        let rest: Vec<&'static AtomicU64> = words.collect();
        if !rest.is_empty() {
            let _ = FAST.rest.set(Vec::leak(rest));
        }
    }
    // A child after `fork` keeps its parent's hints (the same board mapping); a process whose
    // sections changed meanwhile is `NEVER` and stays so.
    if FAST.state.load(Acquire) == NEVER {
        return;
    }
    FAST.known.store(true, Release);
    let sm = &e.shim.sm;
    if !sm.limited() {
        let _ = FAST.state.compare_exchange(OFF, ARMED, AcqRel, Relaxed);
    } else if sm.single_device() && sm.limit(0).is_some() && sm.started(0) {
        let kept = FAST.sm.get_or_init(|| SmFast { sm, bucket: Bucket::new(e.region.sm_bucket(0)), model: sm.model() });
        // Only this process's own region's bucket (a child after `fork` never comes here).
        if std::ptr::eq(kept.sm, sm) {
            let _ = FAST.state.compare_exchange(OFF, SM_ARMED, AcqRel, Relaxed);
        }
    }
}

/// A device's section on the board changed: the kept hints may be the wrong ones.
pub(super) fn never() {
    FAST.state.store(NEVER, Release);
    FAST.known.store(false, Release);
}

/// In a child right after `fork` (async-signal-safe: one store): its first launch goes the
/// whole way, renewing the region.
pub fn after_fork_in_child() {
    let _ = FAST.state.compare_exchange(ARMED, OFF, AcqRel, Relaxed);
    // The kept bucket is in the parent's region: the child renews its own, and its launches
    // take the whole path.
    let _ = FAST.state.compare_exchange(SM_ARMED, NEVER, AcqRel, Relaxed);
    FAST.known.store(false, Release);
}
