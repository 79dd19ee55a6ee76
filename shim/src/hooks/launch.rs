//! Every launch path draws on the container's SM bucket: `cuLaunchKernel`,
//! `cuLaunchKernelEx`, `cuLaunchCooperativeKernel`, their `_ptsz` forms, and `cuGraphLaunch`
//! (charged per replay at the graph's learned cost). Launches into a stream being captured are
//! not charged: the replay is. With no SM limit a launch is forwarded after the priority check
//! (`hooks::priority`: one load when nothing of higher priority is active).
//!
//! A launch is charged its learned GPU time (a default until measured). Some launches are
//! timed with a pair of events; when a timing completes, the cost model learns from it and
//! the bucket is corrected by what the estimate missed, so one big kernel followed by a sync
//! is paid for before the next launch, not after many.
#![allow(clippy::too_many_arguments)] // the driver's own signatures

use std::cell::RefCell;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use cuda_sys::driver::*;
use vgpu_limiter::sm::credit::Credit;
use vgpu_limiter::sm::tsc::LAUNCH_CLOCK;
use vgpu_limiter::sm::{self, Admission, Bucket, Clock, Launch};

use super::{Driver, Enforce};

use CUresult as R;

/// The stream a call really names: under `_ptsz` (`per_thread`) the null stream is the
/// per-thread default stream (used for timing launches and by the priority hooks).
pub(super) fn named_stream(stream: CUstream, per_thread: bool) -> CUstream {
    if per_thread && stream.is_null() { CU_STREAM_PER_THREAD } else { stream }
}

/// One timed launch whose events have not been read yet.
#[derive(Clone, Copy)]
struct Sample {
    key: u64,
    device: usize,
    /// What the launch was charged, `None` when it was the default (corrected in bulk).
    charged: Option<u64>,
    /// Whether launches were being charged at all (no correction otherwise).
    enforced: bool,
    default: u64,
    start: CUevent,
    end: CUevent,
}

const PENDING: usize = 16;

/// A thread's timings not read yet. A thread that ends with some destroys their events and
/// takes them off [`PENDING_COUNT`] (else the fast path would wait for them for good).
struct Pending([Option<Sample>; PENDING]);

impl Drop for Pending {
    fn drop(&mut self) {
        for s in self.0.iter_mut().filter_map(Option::take) {
            super::Real.event_destroy(s.start);
            super::Real.event_destroy(s.end);
            count_pending(false);
        }
    }
}

thread_local! {
    static PENDING_SAMPLES: RefCell<Pending> = const { RefCell::new(Pending([None; PENDING])) };
}

/// How many timings the process's threads have pending: the hot path skips [`poll`] when
/// none, without touching a thread-local (a call into the loader in a shared library).
static PENDING_COUNT: AtomicU32 = AtomicU32::new(0);

/// One more (`true`) or one fewer timing pending: counted here and on the fast path's line.
fn count_pending(on: bool) {
    if on {
        PENDING_COUNT.fetch_add(1, Relaxed);
    } else {
        PENDING_COUNT.fetch_sub(1, Relaxed);
    }
    super::fast::divert(on);
}

/// Reads every finished timing of this thread: the model learns, the bucket is corrected.
pub(super) fn poll<D: Driver>(e: &Enforce<D>, now: u64) {
    if PENDING_COUNT.load(Relaxed) == 0 {
        return;
    }
    PENDING_SAMPLES.with(|p| {
        let Ok(mut pending) = p.try_borrow_mut() else { return };
        for slot in pending.0.iter_mut() {
            let Some(s) = *slot else { continue };
            let rc = e.driver.event_query(s.end);
            if rc == R::CUDA_ERROR_NOT_READY {
                continue;
            }
            if rc == R::CUDA_SUCCESS
                && let Ok(ms) = e.driver.event_elapsed_ms(s.start, s.end)
                && ms >= 0.0
            {
                let measured = (f64::from(ms) * 1e6) as u64;
                let (learned, defaulted) = e.shim.sm.model().observe(s.key, measured);
                let learned = learned as i64;
                // Every launch charged the default before the first measurement owes the
                // difference; a launch charged an estimate owes its own error. Both against the
                // learned estimate, which a timing inflated by queueing barely moves.
                let delta = i64::from(defaulted) * (learned - s.default as i64) + s.charged.map_or(0, |c| learned - c as i64);
                if s.enforced {
                    Bucket::new(e.region.sm_bucket(s.device)).correct(now, delta);
                }
            }
            e.driver.event_destroy(s.start);
            e.driver.event_destroy(s.end);
            *slot = None;
            count_pending(false);
        }
    });
}

/// Runs `call` between two recorded events on `stream` and keeps the pair for [`poll`].
pub(super) fn timed<D: Driver>(
    e: &Enforce<D>,
    stream: CUstream,
    sample: (u64, usize, Option<u64>, u64, bool),
    call: impl FnOnce() -> R,
) -> R {
    let start = e.driver.event_create();
    let end = start.and_then(|_| e.driver.event_create());
    let (Some(start), Some(end)) = (start, end) else {
        if let Some(ev) = start {
            e.driver.event_destroy(ev);
        }
        return call();
    };
    if e.driver.event_record(start, stream) != R::CUDA_SUCCESS {
        e.driver.event_destroy(start);
        e.driver.event_destroy(end);
        return call();
    }
    let rc = call();
    let recorded = rc == R::CUDA_SUCCESS && e.driver.event_record(end, stream) == R::CUDA_SUCCESS;
    let (key, device, charged, default, enforced) = sample;
    let kept = recorded
        && PENDING_SAMPLES.with(|p| {
            let Ok(mut pending) = p.try_borrow_mut() else { return false };
            match pending.0.iter_mut().find(|s| s.is_none()) {
                Some(slot) => {
                    *slot = Some(Sample { key, device, charged, enforced, default, start, end });
                    count_pending(true);
                    true
                }
                None => false,
            }
        });
    if !kept {
        e.driver.event_destroy(start);
        e.driver.event_destroy(end);
    }
    rc
}

/// Charges a launch of `key` to the current device's bucket (waiting for tokens in steps of
/// at most 2 ms), then runs it, timing some launches.
fn throttled<D: Driver>(
    e: &Enforce<'static, D>,
    stream: CUstream,
    per_thread: bool,
    key: impl FnOnce() -> u64,
    default_ns: u64,
    call: impl FnOnce() -> R,
) -> R {
    let (shim, region) = (e.shim, e.region);
    if shim.sm.capturing(stream) {
        return call(); // recorded into a graph, not run: its replay waits and is charged
    }
    let ticket = super::priority::before_launch(e, stream, per_thread);
    let call = move || {
        let rc = call();
        super::priority::after_launch(e, ticket, stream, per_thread, rc);
        rc
    };
    if !shim.sm.limited() {
        let rc = call();
        super::fast::arm(e);
        return rc;
    }
    let Ok(device) = shim.sm.launch_device(&e.driver) else { return call() };
    let Some(limit) = shim.sm.limit(device) else { return call() };
    shim.sm.start(shim, region, device, limit);
    let bucket = Bucket::new(region.sm_bucket(device));
    let started = LAUNCH_CLOCK.now_ns();
    poll(e, started);
    let enforcing = bucket.enforcing();
    let key = key();
    let launch = shim.sm.model().launch(key, default_ns);
    let charge = Charge { device, key, launch, default_ns, started, enforcing, admitted: false };
    let rc = admit_and_run(e, bucket, charge, named_stream(stream, per_thread), call);
    super::fast::arm(e);
    rc
}

/// A launch's charge, once its cost is looked up.
#[derive(Clone, Copy)]
struct Charge {
    device: usize,
    key: u64,
    launch: Launch,
    default_ns: u64,
    /// When the launch came.
    started: u64,
    /// Whether the bucket throttles now.
    enforcing: bool,
    /// Whether the bucket already admitted it.
    admitted: bool,
}

/// Waits for the bucket to admit the launch (unless it already did), then runs it, timing it
/// if the model picked it. `stream` is the one the launch really names.
fn admit_and_run<D: Driver>(e: &Enforce<'static, D>, bucket: Bucket, c: Charge, stream: CUstream, call: impl FnOnce() -> R) -> R {
    if c.enforcing && !c.admitted {
        let mut now = c.started;
        while let Admission::Wait(ns) = bucket.admit(now, c.launch.cost) {
            std::thread::sleep(std::time::Duration::from_nanos(ns));
            now = LAUNCH_CLOCK.now_ns();
            poll(e, now);
        }
        if now > c.started {
            bucket.add_throttled(now - c.started);
        }
    }
    if c.launch.timed {
        let charged = if !c.enforcing || c.launch.defaulted { None } else { Some(c.launch.cost) };
        timed(e, stream, (c.key, c.device, charged, c.default_ns, c.enforcing), call)
    } else {
        call()
    }
}

/// The kernel-launch exports' fast path (`hooks::fast`), its second part: `Some` when the
/// launch was handled here, `None` (nothing done) for the whole path. With an SM limit, a
/// launch the credit did not pay for ([`paid`]): the cost model, then the credit or a lease.
#[inline(always)]
fn fast_launch(key: impl FnOnce() -> u64, stream: CUstream, per_thread: bool, default_ns: u64, call: impl FnOnce() -> R) -> Option<R> {
    let credit = super::fast::credit()?;
    fast_charge(credit, key(), stream, per_thread, default_ns, call)
}

/// Whether a launch of `key` may be forwarded now (the fast path's first part): no SM limit
/// and every hint quiet, or paid from the process's credit.
#[inline(always)]
fn paid(key: impl FnOnce() -> u64) -> bool {
    super::fast::forward_at_once() || super::fast::credit().is_some_and(|c| c.spend(key()))
}

/// The SM-limited fast path past the credit: the cost model's estimate paid from the credit,
/// or a lease taken (the clock and the bucket), or, for a launch to time or one of a shape not
/// measured yet, a charge on the bucket alone. Its own function: the first part stays a few
/// instructions.
#[inline(never)]
fn fast_charge(credit: &Credit, key: u64, stream: CUstream, per_thread: bool, default_ns: u64, call: impl FnOnce() -> R) -> Option<R> {
    let s = super::fast::throttle()?;
    if credit.diverted() {
        return None; // which stream is captured, and finished timings: the whole path
    }
    let mut launch = s.model.launch(key, default_ns);
    launch.timed |= credit.timing_due();
    let charged_alone = launch.timed || launch.defaulted;
    if !charged_alone {
        credit.remember(key, launch.cost);
        if credit.take(launch.cost) {
            return Some(call());
        }
    }
    let started = LAUNCH_CLOCK.now_ns();
    let enforcing = s.bucket.enforcing();
    let admitted = if charged_alone {
        // A timing corrects its own charge, a default is corrected in bulk.
        !enforcing || s.bucket.admit(started, launch.cost) == Admission::Admitted
    } else {
        credit.charge(&s.bucket, started, launch.cost) == Admission::Admitted
    };
    if admitted && !launch.timed {
        return Some(call());
    }
    // A refusal means the bucket was enforcing, whatever the first read said: the launch waits.
    let enforcing = enforcing || !admitted;
    Some(continued(Charge { device: 0, key, launch, default_ns, started, enforcing, admitted }, named_stream(stream, per_thread), call))
}

/// A fast-path launch that must wait or be timed: the rest of the whole path.
#[cold]
#[inline(never)]
fn continued(c: Charge, stream: CUstream, call: impl FnOnce() -> R) -> R {
    // Outside the export's own guard (the fast path has none): a panic is the driver's
    // "unknown error" here too, never an unwind into C.
    crate::table::guard(|| match super::gate() {
        super::Gate::Enforce(e) => admit_and_run(&e, Bucket::new(e.region.sm_bucket(c.device)), c, stream, call),
        _ => call(),
    })
}

/// `cuLaunchKernel`'s first fast check, and `_ptsz`'s: forwarded now (no SM limit) or paid
/// from the credit.
#[inline(always)]
pub fn paid_kernel<const PER_THREAD: bool>(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _shared: c_uint,
    _stream: CUstream,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> bool {
    paid(|| kernel(f, [gx, gy, gz], [bx, by, bz]))
}

/// `cuLaunchCooperativeKernel`'s first fast check, and `_ptsz`'s.
#[inline(always)]
pub fn paid_cooperative<const PER_THREAD: bool>(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _shared: c_uint,
    _stream: CUstream,
    _params: *mut *mut c_void,
) -> bool {
    paid(|| kernel(f, [gx, gy, gz], [bx, by, bz]))
}

/// `cuLaunchKernelEx`'s first fast check, and `_ptsz`'s (no config: not paid).
#[inline(always)]
pub fn paid_kernel_ex<const PER_THREAD: bool>(
    config: Option<&CUlaunchConfig>,
    f: CUfunction,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> bool {
    config.is_some_and(|c| paid(|| kernel(f, [c.gridDimX, c.gridDimY, c.gridDimZ], [c.blockDimX, c.blockDimY, c.blockDimZ])))
}

/// `cuLaunchKernel`'s fast path past the credit, and `_ptsz`'s.
#[inline(always)]
pub fn fast_kernel<const PER_THREAD: bool>(
    call: impl FnOnce() -> R,
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _shared: c_uint,
    stream: CUstream,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> Option<R> {
    fast_launch(|| kernel(f, [gx, gy, gz], [bx, by, bz]), stream, PER_THREAD, sm::DEFAULT_KERNEL_NS, call)
}

/// `cuLaunchCooperativeKernel`'s fast path past the credit, and `_ptsz`'s: a kernel launch's.
#[inline(always)]
pub fn fast_cooperative<const PER_THREAD: bool>(
    call: impl FnOnce() -> R,
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    stream: CUstream,
    params: *mut *mut c_void,
) -> Option<R> {
    fast_kernel::<PER_THREAD>(call, f, gx, gy, gz, bx, by, bz, shared, stream, params, std::ptr::null_mut())
}

/// `cuLaunchKernelEx`'s fast path past the credit, and `_ptsz`'s (no config: the whole path,
/// the driver reports it).
#[inline(always)]
pub fn fast_kernel_ex<const PER_THREAD: bool>(
    call: impl FnOnce() -> R,
    config: Option<&CUlaunchConfig>,
    f: CUfunction,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> Option<R> {
    let c = config?;
    let key = || kernel(f, [c.gridDimX, c.gridDimY, c.gridDimZ], [c.blockDimX, c.blockDimY, c.blockDimZ]);
    fast_launch(key, c.hStream, PER_THREAD, sm::DEFAULT_KERNEL_NS, call)
}

/// The key of a kernel launch: the function and its grid and block shape.
fn kernel(f: CUfunction, grid: [c_uint; 3], block: [c_uint; 3]) -> u64 {
    sm::kernel_key(f as u64, grid, block)
}

/// `cuLaunchKernel`, and `_ptsz` (`PER_THREAD`: the null stream is the per-thread default
/// stream).
pub fn launch_kernel<const PER_THREAD: bool>(
    e: &Enforce<'static, impl Driver>,
    call: impl FnOnce() -> R,
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _shared: c_uint,
    stream: CUstream,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> R {
    throttled(e, stream, PER_THREAD, || kernel(f, [gx, gy, gz], [bx, by, bz]), sm::DEFAULT_KERNEL_NS, call)
}

/// `cuLaunchCooperativeKernel`, and `_ptsz`.
pub fn launch_cooperative<const PER_THREAD: bool>(
    e: &Enforce<'static, impl Driver>,
    call: impl FnOnce() -> R,
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    _shared: c_uint,
    stream: CUstream,
    _params: *mut *mut c_void,
) -> R {
    throttled(e, stream, PER_THREAD, || kernel(f, [gx, gy, gz], [bx, by, bz]), sm::DEFAULT_KERNEL_NS, call)
}

/// `cuLaunchKernelEx`, and `_ptsz`: the shape and stream are in the config.
pub fn launch_kernel_ex<const PER_THREAD: bool>(
    e: &Enforce<'static, impl Driver>,
    call: impl FnOnce() -> R,
    config: Option<&CUlaunchConfig>,
    f: CUfunction,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
) -> R {
    let Some(c) = config else {
        return call(); // the driver reports it
    };
    let key = || kernel(f, [c.gridDimX, c.gridDimY, c.gridDimZ], [c.blockDimX, c.blockDimY, c.blockDimZ]);
    throttled(e, c.hStream, PER_THREAD, key, sm::DEFAULT_KERNEL_NS, call)
}

/// `cuGraphLaunch`'s fast check, and `_ptsz`'s: forwarded at once with no SM limit, every
/// hint quiet and no executable graph left to map graph memory.
#[inline(always)]
pub fn paid_graph(_exec: CUgraphExec, _stream: CUstream) -> bool {
    super::fast::forward_graph()
}

/// `cuGraphLaunch`'s fast path past [`paid_graph`]: none (graphs under an SM limit, or mapping
/// graph memory, take the whole path).
#[inline(always)]
pub fn fast_graph(_call: impl FnOnce() -> R, _exec: CUgraphExec, _stream: CUstream) -> Option<R> {
    None
}

/// `cuGraphLaunch`, and `_ptsz`: a graph is charged as one unit of learned cost.
pub fn graph_launch<const PER_THREAD: bool>(
    e: &Enforce<'static, impl Driver>,
    call: impl FnOnce() -> R,
    exec: CUgraphExec,
    stream: CUstream,
) -> R {
    // The first launch maps the graph's memory: room is found in the quota before anything
    // is throttled or forwarded.
    super::graphs::launching(e, exec, || throttled(e, stream, PER_THREAD, || sm::graph_key(exec as u64), sm::DEFAULT_GRAPH_NS, call))
}

/// `cuStreamBeginCapture_v2` (and `_ptsz`): launches captured into a graph are not run now,
/// so they are not throttled; the graph's launch is.
pub fn begin_capture<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, stream: CUstream, _mode: CUstreamCaptureMode) -> R {
    let rc = call();
    if rc == R::CUDA_SUCCESS && e.shim.sm.set_capturing(stream, true) {
        super::fast::divert(true);
    }
    rc
}

/// `cuStreamEndCapture` (and `_ptsz`): whatever the driver answers, the capture has ended.
pub fn end_capture<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, stream: CUstream, _graph: *mut CUgraph) -> R {
    let rc = call();
    if e.shim.sm.set_capturing(stream, false) {
        super::fast::divert(false);
    }
    rc
}
