//! The launch fast path. With no SM limit and no high-priority work on the process's devices,
//! a launch hook decides nothing: it only forwards. Once a first launch has gone the whole
//! way (the mode, region, limits and priority sections are known), the kernel-launch exports
//! check one process-local word and each device's priority hint on the board, and forward;
//! so do the graph-launch exports while no executable graph is left to map graph memory.
//! With an SM limit on the one device a process sees, a launch of a shape whose cost is kept
//! is paid from the process's prepaid GPU time ([`Credit`], leases taken from the container's
//! bucket): the last shape's in the same line, others' one word of the credit's table away;
//! a shape not kept, a new lease, a wait, a timed launch, finished timings to read, or a
//! stream being captured take the kept bucket's path (`hooks::launch`) or the whole one.
//!
//! Why it exists: measured as a whole process (a program preloaded or not, each launch timed),
//! every cache line and branch the hook touches is cold again by the next launch, because the
//! driver's own launch work evicts it; the full path touched about twenty lines across the
//! shim's state for what is, in this case, a plain call. This path touches two: the first
//! line of [`FAST`] (with the credit) and the hint word; three for a kept shape other than
//! the last (one word of the credit's table).
//!
//! Armed only from the whole path, by a low-priority (default) process; never in a
//! high-priority one (its launches publish on the board). Disarmed for good when a device's
//! section on the board changes (a tenant rewrote its key: the whole path looks it up again).
//! In a child after `fork` the first launch goes the whole way, renewing the region; a child
//! whose parent had kept a bucket (in the parent's region) stays on the whole path.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering::*};

use vgpu_limiter::config::{MAX_DEVICES, Priority};
use vgpu_limiter::priority::board::Hint;
use vgpu_limiter::sm::credit::Credit;
use vgpu_limiter::sm::{Bucket, CostModel};

use super::{Driver, Enforce};

/// Not armed yet: launches take the whole path.
const OFF: u8 = 0;
/// No SM limit: launches are forwarded when every hint is quiet.
const ARMED: u8 = 1;
/// An SM limit on the one device the process sees: launches are charged to the kept bucket.
const SM_ARMED: u8 = 2;
/// Never again in this process (a section changed, high priority, or a child after `fork`
/// whose parent had kept a bucket: it is in the parent's region mapping).
const NEVER: u8 = 3;

/// What the SM-limited fast path needs, found once.
pub struct SmFast {
    /// The bucket of the one device.
    pub bucket: Bucket<'static>,
    /// The learned costs.
    pub model: &'static CostModel,
}

/// The hint words a launch must find quiet: the first device's, and the others' when the
/// process sees several (published together, so no launch sees half of them).
struct Hints {
    first: Option<Hint<'static>>,
    rest: &'static [Hint<'static>],
}

/// The fast path's state: whether it is armed, the hint words and the prepaid GPU time with
/// the last shape's cost (the first line), then the credit's table of shapes, then the kept
/// bucket.
#[repr(C, align(64))]
struct Fast {
    state: AtomicU8,
    /// The hints are this process's sections' (the SM-limited path checks them too).
    known: AtomicBool,
    /// How many of this process's executable graphs would map graph memory at their next
    /// launch (published by the graph hooks after each change): while any would, graph
    /// launches take the whole path.
    graphs_to_map: AtomicU32,
    hints: OnceLock<Hints>,
    credit: Credit,
    sm: OnceLock<SmFast>,
}

// What a launch of the last shape reads is in the first line (a launch of another kept shape
// reads one word of the credit's table besides). It fills the line exactly today (hints at 8,
// the credit's head at 40..64): anything added before the table fails the build here.
const _: () = assert!(std::mem::offset_of!(Fast, credit) + Credit::HEAD <= 64);

static FAST: Fast = Fast {
    state: AtomicU8::new(OFF),
    known: AtomicBool::new(false),
    graphs_to_map: AtomicU32::new(0),
    hints: OnceLock::new(),
    credit: Credit::new(),
    sm: OnceLock::new(),
};

/// Whether a kernel launch may be forwarded at once (the exports' first check).
#[inline(always)]
pub fn forward_at_once() -> bool {
    FAST.state.load(Acquire) == ARMED && hints_quiet()
}

/// Whether a graph launch may be forwarded at once: no SM limit, every hint quiet, and no
/// executable graph of this process left to map graph memory (else the whole path maps it).
#[inline(always)]
pub fn forward_graph() -> bool {
    forward_at_once() && graphs_to_map() == 0
}

/// How many executable graphs would map graph memory at their next launch.
#[inline(always)]
pub(super) fn graphs_to_map() -> u32 {
    FAST.graphs_to_map.load(Acquire)
}

/// Publishes the graph book's count of executable graphs left to map (after each change, under
/// the book's lock: an instantiation or a trim is published before the program can launch
/// what it made or trimmed).
pub(super) fn set_graphs_to_map(n: usize) {
    FAST.graphs_to_map.store(u32::try_from(n).unwrap_or(u32::MAX), Release);
}

/// The process's prepaid GPU time, when a launch may be paid from it on the fast path.
#[inline(always)]
pub fn credit() -> Option<&'static Credit> {
    (FAST.state.load(Acquire) == SM_ARMED && hints_quiet()).then_some(&FAST.credit)
}

/// The kept bucket (once [`credit`] said the SM-limited fast path is armed).
#[inline(always)]
pub fn throttle() -> Option<&'static SmFast> {
    FAST.sm.get()
}

/// One more (`true`) or one fewer reason for launches to leave the SM-limited fast path (a
/// stream being captured, a timing not read yet).
pub(super) fn divert(on: bool) {
    FAST.credit.divert(on);
}

/// Whether the kept hints are known and quiet: a low-priority launch waits for nothing (the
/// priority hooks' first check, SM limit or not).
#[inline(always)]
pub(super) fn quiet_known() -> bool {
    FAST.known.load(Acquire) && hints_quiet()
}

#[inline(always)]
fn hints_quiet() -> bool {
    FAST.hints.get().is_some_and(|h| h.first.is_none_or(Hint::quiet) && (h.rest.is_empty() || all_quiet(h.rest)))
}

/// Whether every one of several devices' hints is quiet.
#[cold]
fn all_quiet(hints: &[Hint<'_>]) -> bool {
    hints.iter().all(|h| h.quiet())
}

/// After a launch that went the whole way: keeps this process's hint words, and arms the fast
/// path if it has no SM limit (once; later calls cost two loads). Never in a high-priority
/// process (its launches publish on the board).
pub(super) fn arm<D: Driver>(e: &Enforce<'static, D>) {
    if FAST.known.load(Acquire) || FAST.state.load(Acquire) == NEVER {
        return;
    }
    let p = &e.shim.priority;
    if p.priority() == Priority::High {
        never();
        return;
    }
    let Some(count) = e.driver.device_count().and_then(|n| usize::try_from(n).ok()) else { return };
    // A child after `fork` keeps its parent's hints (the same board mapping).
    FAST.hints.get_or_init(|| {
        let mut words = (0..count.min(MAX_DEVICES)).filter_map(|device| p.hint_word(&e.driver, device));
        Hints { first: words.next(), rest: Vec::leak(words.collect()) }
    });
    // Known, unless a section changed meanwhile (`never` stores the state, then `known`; this
    // stores `known`, then reads the state: one of the two sees the other's first store).
    FAST.known.store(true, SeqCst);
    if FAST.state.load(SeqCst) == NEVER {
        FAST.known.store(false, SeqCst);
        return;
    }
    let sm = &e.shim.sm;
    if !sm.limited() {
        let _ = FAST.state.compare_exchange(OFF, ARMED, AcqRel, Relaxed);
    } else if sm.single_device() && sm.limit(0).is_some() && sm.started(0) {
        // The region is this process's own: a child after `fork` (whose region is renewed)
        // never arms this (`after_fork_in_child`).
        FAST.sm.get_or_init(|| SmFast { bucket: Bucket::new(e.region.sm_bucket(0)), model: sm.model() });
        let _ = FAST.state.compare_exchange(OFF, SM_ARMED, AcqRel, Relaxed);
    }
}

/// A device's section on the board changed: the kept hints may be the wrong ones.
pub(super) fn never() {
    FAST.state.store(NEVER, SeqCst);
    FAST.known.store(false, SeqCst);
}

/// In a child right after `fork` (async-signal-safe: atomic operations only): its first launch
/// goes the whole way, renewing the region. A `fork` while another thread was arming (inside
/// one of the `OnceLock`s) would leave the child's first launch waiting on it; CUDA does not
/// support a child of an initialised parent using the driver at all.
pub fn after_fork_in_child() {
    let _ = FAST.state.compare_exchange(ARMED, OFF, AcqRel, Relaxed);
    // The kept bucket is in the parent's region: the child renews its own, and its launches
    // take the whole path.
    let _ = FAST.state.compare_exchange(SM_ARMED, NEVER, AcqRel, Relaxed);
    FAST.credit.reset();
    FAST.known.store(false, Release);
}
