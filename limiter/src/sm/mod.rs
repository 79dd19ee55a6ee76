//! The SM share: how much GPU time a container's launches may take.
//!
//! * [`Bucket`]: a GCRA token bucket of **GPU time** in the container's region, one cache line
//!   per device, drawn by every process of the container (N processes never get N shares). A
//!   launch is charged its estimated GPU time scaled by the controller's factor and divided by
//!   the share; the state is one word (the theoretical arrival time), so admitting a launch is
//!   one compare-and-swap when tokens are available.
//! * [`CostModel`]: per process, the GPU time of each kernel (function and grid) or graph,
//!   learned from sampled event timings: the lowest timing seen (queueing behind other work,
//!   or other containers' kernels between the events, only inflate a timing).
//! * [`controller`]: the controller. As NVML's samples arrive it compares the container's
//!   measured share with the target and corrects the factor by which estimates are charged, so
//!   errors in the estimates (or work the estimates never see) do not become errors in the
//!   share.
//!
//! Everything here is a pure function of its inputs and an injected [`Clock`]: the unit tests
//! run time forwards without sleeping.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use crate::region::layout::SmBucket;

pub mod controller;
pub mod credit;
pub mod tsc;
pub use controller::next_scale;

/// A source of nanoseconds on a clock every process of the machine shares.
pub trait Clock {
    /// Now, in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// `CLOCK_MONOTONIC`: shared by every process on a host.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        #[allow(unsafe_code)]
        // SAFETY: clock_gettime writes one timespec.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts)
        };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct FakeClock {
    now: AtomicU64,
}

impl FakeClock {
    /// A clock reading `start_ns`.
    pub fn new(start_ns: u64) -> FakeClock {
        FakeClock { now: AtomicU64::new(start_ns) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, ns: u64) {
        self.now.fetch_add(ns, AcqRel);
    }
}

impl Clock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Acquire)
    }
}

/// Indices of the bucket line's words.
pub mod word {
    /// Theoretical arrival time (ns): when the charged GPU time will have been paid for.
    pub const TAT: usize = 0;
    /// The share in permille (0: no limit set).
    pub const LIMIT: usize = 1;
    /// Controller factor applied to estimates, fixed point with [`super::SCALE_ONE`] = 1.0.
    pub const SCALE: usize = 2;
    /// Last measured share of the container, permille + 1 (0: never measured).
    pub const ACHIEVED: usize = 3;
    /// Total time launches waited for tokens (ns).
    pub const THROTTLED: usize = 4;
    /// Identity of the process running the controller.
    pub const LEADER: usize = 5;
    /// Until when (ns) the leader's lease runs.
    pub const LEASE_UNTIL: usize = 6;
    /// Whether the limit is enforced, three-valued: 0 never configured, [`super::ENFORCING`]
    /// (another container uses the device, or policy "force"), [`super::IDLE`] (the controller
    /// found the device to itself under the "default" policy). `configure` turns only 0 into
    /// enforcing, so a bucket the controller has set is left as it is.
    pub const ENFORCE: usize = 7;
}

/// [`word::ENFORCE`]: launches are throttled.
pub const ENFORCING: u64 = 1;
/// [`word::ENFORCE`]: the controller lifted throttling (nobody else uses the device).
pub const IDLE: u64 = 2;

/// 1.0 in the controller factor's fixed point.
pub const SCALE_ONE: u64 = 1 << 16;
/// How far ahead of its share a container may run (wall time): a burst of this much is free.
pub const BURST_NS: u64 = 8_000_000;
/// Most debt a correction may create (wall ns ahead of now).
pub const MAX_DEBT_NS: u64 = 1_000_000_000;
/// Longest single wait of a throttled launch: it re-checks at least this often.
pub const MAX_WAIT_STEP_NS: u64 = 2_000_000;

/// What the bucket says about a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go: the cost was charged.
    Admitted,
    /// Not yet: try again after this many nanoseconds (at most [`MAX_WAIT_STEP_NS`]).
    Wait(u64),
}

/// A container's bucket on one device (a view of its region line).
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    w: &'a [AtomicU64; 8],
}

impl<'a> Bucket<'a> {
    /// The bucket stored in `line`.
    pub fn new(line: &'a SmBucket) -> Bucket<'a> {
        Bucket { w: &line.words }
    }

    /// Sets the share (percent, 1..=100) and, on first use, a neutral controller factor and
    /// enforcement on (until the controller decides otherwise).
    /// A process that is not `alone` in the container keeps the limit the line already has
    /// (set by the container's first process, or changed at run time by an operator).
    pub fn configure(&self, limit_pct: u8, alone: bool) {
        let limit = u64::from(limit_pct.clamp(1, 100)) * 10;
        if alone {
            self.w[word::LIMIT].store(limit, Release);
        } else {
            let _ = self.w[word::LIMIT].compare_exchange(0, limit, AcqRel, Acquire);
        }
        let _ = self.w[word::SCALE].compare_exchange(0, SCALE_ONE, AcqRel, Acquire);
        let _ = self.w[word::ENFORCE].compare_exchange(0, ENFORCING, AcqRel, Acquire);
    }

    /// The share in permille, or `None` when no limit is set.
    pub fn limit_permille(&self) -> Option<u64> {
        Some(self.w[word::LIMIT].load(Acquire)).filter(|l| *l > 0)
    }

    /// Changes the share at run time (e.g. by an operator): takes effect at the next launch.
    pub fn set_limit_permille(&self, permille: u64) {
        self.w[word::LIMIT].store(permille.clamp(1, 1000), Release);
    }

    /// Wall nanoseconds that `gpu_ns` of GPU time costs at this share and factor.
    fn wall_cost(&self, gpu_ns: u64) -> u64 {
        let limit = self.w[word::LIMIT].load(Relaxed).max(1);
        let scale = self.w[word::SCALE].load(Relaxed).max(1);
        // In 64 bits when nothing overflows (a launch's cost always fits): a 128-bit division
        // is a library call on the launch path.
        if let Some(p) = gpu_ns.checked_mul(scale)
            && let Some(q) = (p >> 16).checked_mul(1000)
        {
            return (q / limit).min(u64::MAX / 4);
        }
        let scaled = (u128::from(gpu_ns) * u128::from(scale)) >> 16;
        (scaled * 1000 / u128::from(limit)).min(u128::from(u64::MAX / 4)) as u64
    }

    /// GPU nanoseconds that `wall_ns` of wall time buys at this share and factor (the inverse
    /// of the charge).
    pub fn gpu_worth(&self, wall_ns: u64) -> u64 {
        let limit = self.w[word::LIMIT].load(Relaxed).max(1);
        let scale = self.w[word::SCALE].load(Relaxed).max(1);
        let gpu = u128::from(wall_ns) * u128::from(limit) * u128::from(SCALE_ONE) / (1000 * u128::from(scale));
        u64::try_from(gpu).unwrap_or(u64::MAX / 4).max(1)
    }

    /// Admits a launch costing `gpu_ns` of GPU time at `now`, or says how long to wait.
    /// One load and one compare-and-swap when tokens are available.
    pub fn admit(&self, now: u64, gpu_ns: u64) -> Admission {
        let inc = self.wall_cost(gpu_ns);
        let tat = &self.w[word::TAT];
        let mut cur = tat.load(Acquire);
        loop {
            let start = cur.max(now);
            if start - now > BURST_NS {
                return Admission::Wait((start - now - BURST_NS).clamp(1, MAX_WAIT_STEP_NS));
            }
            match tat.compare_exchange_weak(cur, start + inc, AcqRel, Acquire) {
                Ok(_) => return Admission::Admitted,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Corrects an earlier charge once the launch's real GPU time is known: `delta_gpu_ns` is
    /// measured minus estimated (negative gives time back).
    ///
    /// The debt a correction can create is capped at [`MAX_DEBT_NS`] ahead of now: a timing
    /// inflated by queueing behind another container's work must not stall this one for
    /// seconds (the controller corrects what the cap leaves out).
    pub fn correct(&self, now: u64, delta_gpu_ns: i64) {
        let wall = self.wall_cost(delta_gpu_ns.unsigned_abs());
        let _ = self.w[word::TAT].fetch_update(AcqRel, Acquire, |t| {
            Some(if delta_gpu_ns >= 0 { t.max(now).saturating_add(wall).min(now + MAX_DEBT_NS).max(t) } else { t.saturating_sub(wall) })
        });
    }

    /// How far ahead of `now` the container has been charged (its debt), in wall ns.
    pub fn ahead(&self, now: u64) -> u64 {
        self.w[word::TAT].load(Acquire).saturating_sub(now)
    }

    /// Records time a launch spent waiting for tokens.
    pub fn add_throttled(&self, ns: u64) {
        self.w[word::THROTTLED].fetch_add(ns, Relaxed);
    }

    /// Total time launches waited for tokens.
    pub fn throttled_ns(&self) -> u64 {
        self.w[word::THROTTLED].load(Relaxed)
    }

    /// The controller's factor (1.0 = estimates charged as they are).
    pub fn scale(&self) -> f64 {
        self.w[word::SCALE].load(Acquire) as f64 / SCALE_ONE as f64
    }

    /// Sets the controller's factor.
    pub fn set_scale(&self, scale: f64) {
        self.w[word::SCALE].store(((scale * SCALE_ONE as f64) as u64).max(1), Release);
    }

    /// The container's last measured share in permille, if measured.
    pub fn achieved_permille(&self) -> Option<u64> {
        self.w[word::ACHIEVED].load(Acquire).checked_sub(1)
    }

    /// Records the container's measured share.
    pub fn set_achieved_permille(&self, permille: u64) {
        self.w[word::ACHIEVED].store(permille + 1, Release);
    }

    /// Whether launches are throttled now.
    pub fn enforcing(&self) -> bool {
        self.w[word::ENFORCE].load(Relaxed) == ENFORCING
    }

    /// Turns enforcement on or off (the "default" policy: only while others use the device).
    pub fn set_enforcing(&self, on: bool) {
        self.w[word::ENFORCE].store(if on { ENFORCING } else { IDLE }, Release);
    }

    /// Takes or renews the controller lease for `me` (non-zero) until `now + lease_ns`: true
    /// when `me` is the leader. A leader that dies stops renewing and loses the lease.
    pub fn lead(&self, me: u64, now: u64, lease_ns: u64) -> bool {
        let leader = self.w[word::LEADER].load(Acquire);
        let until = self.w[word::LEASE_UNTIL].load(Acquire);
        if leader != me && until > now {
            return false;
        }
        if leader != me && self.w[word::LEADER].compare_exchange(leader, me, AcqRel, Acquire).is_err() {
            return false;
        }
        self.w[word::LEASE_UNTIL].store(now + lease_ns, Release);
        true
    }
}

/// What [`CostModel::launch`] says about one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// GPU time to charge.
    pub cost: u64,
    /// Whether `cost` is the default (no measurement yet).
    pub defaulted: bool,
    /// Whether to time this launch.
    pub timed: bool,
}

/// GPU time assumed for a kernel never measured: charged, then corrected once measured. It
/// errs high (most kernels are shorter): a new kernel's first launches are held back a little
/// and refunded when its timings come in, rather than let through in a burst and paid for
/// afterwards.
pub const DEFAULT_KERNEL_NS: u64 = 1_000_000;
/// GPU time assumed for a graph never measured.
pub const DEFAULT_GRAPH_NS: u64 = 5_000_000;
/// The process's launches past the first four of their kernel (for 1-in-N timing). A plain
/// load and store, not a read-modify-write: two threads racing may count one launch, which
/// only moves which launch is timed (a thread-local costs a call into the loader per launch
/// in a shared library).
static LAUNCHES: AtomicU32 = AtomicU32::new(0);

/// After its first four launches, about one launch of a kernel in this many is timed.
pub const TIME_ONE_IN: u32 = 128;
const TABLE: usize = 4096;
const PROBE: usize = 32;

/// One kernel shape's (or graph's) place in the [`CostModel`]: what a launch reads is in one
/// cache line.
#[derive(Default)]
#[repr(C, align(32))]
struct Slot {
    key: AtomicU64,
    estimate: AtomicU64,
    launches: AtomicU32,
    /// Launches charged the default before the first measurement came back.
    defaulted: AtomicU32,
    /// Timings learned from.
    observed: AtomicU32,
}

/// Learned GPU time per kernel shape or graph, and which launches to time. Lock-free.
pub struct CostModel {
    slots: Box<[Slot]>,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel { slots: (0..TABLE).map(|_| Slot::default()).collect() }
    }
}

/// A key for a kernel launch: the function and its grid and block shape. Computed on every
/// launch: three independent multiplications and one to mix (a chain of six would be the
/// longest part of a launch's charge).
#[inline]
pub fn kernel_key(function: u64, grid: [u32; 3], block: [u32; 3]) -> u64 {
    let pair = |lo: u32, hi: u32, k: u64| (u64::from(lo) | u64::from(hi) << 32).wrapping_mul(k);
    let a = pair(grid[0], grid[1], 0x9E37_79B9_7F4A_7C15);
    let b = pair(grid[2], block[0], 0xC2B2_AE3D_27D4_EB4F);
    let c = pair(block[1], block[2], 0x1656_67B1_9E37_79F9);
    let h = (function ^ a.rotate_left(21) ^ b.rotate_left(42) ^ c).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (h ^ h >> 29) | 1
}

/// A key for a graph replay.
pub fn graph_key(exec: u64) -> u64 {
    (exec.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0xA5A5) | 1
}

impl CostModel {
    /// The slot of `key` (claiming a free one if `insert`).
    fn slot(&self, key: u64, insert: bool) -> Option<usize> {
        let home = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize;
        for i in 0..PROBE {
            let s = (home + i) % TABLE;
            let k = self.slots[s].key.load(Acquire);
            if k == key {
                return Some(s);
            }
            if k == 0 {
                if !insert {
                    return None;
                }
                match self.slots[s].key.compare_exchange(0, key, AcqRel, Acquire) {
                    Ok(_) => return Some(s),
                    Err(k) if k == key => return Some(s),
                    Err(_) => continue,
                }
            }
        }
        None
    }

    /// The learned GPU time of `key`, if measured.
    pub fn estimate(&self, key: u64) -> Option<u64> {
        let s = self.slot(key, false)?;
        Some(self.slots[s].estimate.load(Acquire)).filter(|e| *e > 0)
    }

    /// A launch of `key`: what to charge (its estimate, or `default`, remembered so that the
    /// first measurement corrects every launch charged before it), whether that was the
    /// default, and whether to time this launch (the first few of each key, then one in
    /// [`TIME_ONE_IN`]).
    /// One probe of the table.
    pub fn launch(&self, key: u64, default: u64) -> Launch {
        let Some(s) = self.slot(key, true) else {
            // No slot (its neighbourhood of the table is full): the default, never measured
            // or corrected, and never kept as a learned cost by the launch path's cache.
            return Launch { cost: default, defaulted: true, timed: false };
        };
        // The first four launches of a key are counted exactly (and timed); after that a
        // process-wide counter picks one in TIME_ONE_IN, sparing the launch a shared
        // read-modify-write.
        let timed = if self.slots[s].launches.load(Relaxed) < 4 {
            self.slots[s].launches.fetch_add(1, Relaxed) < 4
        } else {
            let n = LAUNCHES.load(Relaxed).wrapping_add(1);
            LAUNCHES.store(n, Relaxed);
            n.is_multiple_of(TIME_ONE_IN)
        };
        match self.slots[s].estimate.load(Acquire) {
            0 => {
                self.slots[s].defaulted.fetch_add(1, AcqRel);
                Launch { cost: default, defaulted: true, timed }
            }
            e => Launch { cost: e, defaulted: false, timed },
        }
    }

    /// Learns from a timing of `key`: the estimate is the lowest timing seen. A timing only
    /// over-states a kernel (it includes whatever else the device ran between the events:
    /// queueing, other containers' kernels); one that really grew is the controller's to
    /// correct.
    /// Returns the estimate after learning (what corrections should use: a timing inflated
    /// by queueing behind someone else barely moves it) and how many launches were charged
    /// the default before this (each handed out once). Those are handed out only from the
    /// second timing on: the first launch of a burst is the one that waited behind everything
    /// already queued on the device, the next ones show the kernel's own time.
    pub fn observe(&self, key: u64, measured_ns: u64) -> (u64, u32) {
        let Some(s) = self.slot(key, true) else { return (measured_ns, 0) };
        let measured = measured_ns.max(1);
        let prev =
            self.slots[s].estimate.fetch_update(AcqRel, Acquire, |e| Some(if e == 0 { measured } else { e.min(measured) })).unwrap_or(0);
        let now = if prev == 0 { measured } else { prev.min(measured) };
        let seen = self.slots[s].observed.fetch_add(1, AcqRel) + 1;
        (now, if seen >= 2 { self.slots[s].defaulted.swap(0, AcqRel) } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_line(limit_pct: u8) -> Box<SmBucket> {
        let line = Box::new(SmBucket { words: std::array::from_fn(|_| AtomicU64::new(0)) });
        Bucket::new(&line).configure(limit_pct, true);
        line
    }

    /// Launches `cost_ns` kernels as fast as the bucket allows for `wall_ns`; returns the
    /// GPU time admitted.
    fn drive(b: Bucket<'_>, clock: &FakeClock, cost_ns: u64, wall_ns: u64) -> u64 {
        let end = clock.now_ns() + wall_ns;
        let mut admitted = 0;
        while clock.now_ns() < end {
            match b.admit(clock.now_ns(), cost_ns) {
                Admission::Admitted => admitted += cost_ns,
                Admission::Wait(ns) => {
                    assert!(ns <= MAX_WAIT_STEP_NS, "waits in steps of at most 2 ms");
                    clock.advance(ns);
                }
            }
        }
        admitted
    }

    #[test]
    fn a_share_admits_that_fraction_of_gpu_time() {
        for pct in [10u8, 30, 50, 70, 90] {
            let line = bucket_line(pct);
            let clock = FakeClock::new(1_000_000_000);
            let admitted = drive(Bucket::new(&line), &clock, 50_000, 10_000_000_000);
            let share = admitted as f64 / 10e9;
            assert!((share - f64::from(pct) / 100.0).abs() < 0.002, "{pct}%: {share}");
        }
    }

    #[test]
    fn one_big_kernel_is_paid_for_before_the_next() {
        let line = bucket_line(25);
        let b = Bucket::new(&line);
        let clock = FakeClock::new(5_000_000_000);
        assert_eq!(b.admit(clock.now_ns(), 100_000_000), Admission::Admitted);
        // 100 ms of GPU at 25 % costs 400 ms of wall: the next launch waits until 400 ms
        // minus the burst allowance have passed.
        let mut waited = 0;
        while let Admission::Wait(ns) = b.admit(clock.now_ns(), 1_000) {
            clock.advance(ns);
            waited += ns;
        }
        assert_eq!(waited, 400_000_000 - BURST_NS);
    }

    #[test]
    fn corrections_charge_what_the_estimate_missed() {
        let line = bucket_line(50);
        let b = Bucket::new(&line);
        let clock = FakeClock::new(1_000_000_000);
        assert_eq!(b.admit(clock.now_ns(), DEFAULT_KERNEL_NS), Admission::Admitted);
        // It really took 40 ms: 80 ms of wall at 50 %.
        b.correct(clock.now_ns(), 40_000_000 - DEFAULT_KERNEL_NS as i64);
        assert!(matches!(b.admit(clock.now_ns(), 1_000), Admission::Wait(_)));
        clock.advance(80_000_000 - BURST_NS);
        assert_eq!(b.admit(clock.now_ns(), 1_000), Admission::Admitted);
    }

    #[test]
    fn processes_share_one_bucket() {
        // Two "processes" drawing on one line get one share between them.
        let line = bucket_line(40);
        let clock = FakeClock::new(1_000_000_000);
        let (a, b) = (Bucket::new(&line), Bucket::new(&line));
        let mut admitted = 0;
        let end = clock.now_ns() + 5_000_000_000;
        while clock.now_ns() < end {
            let mut waits = Vec::new();
            for p in [a, b] {
                match p.admit(clock.now_ns(), 100_000) {
                    Admission::Admitted => admitted += 100_000,
                    Admission::Wait(ns) => waits.push(ns),
                }
            }
            if waits.len() == 2 {
                clock.advance(*waits.iter().min().unwrap());
            }
        }
        let share = admitted as f64 / 5e9;
        assert!((share - 0.4).abs() < 0.003, "{share}");
    }

    #[test]
    fn the_controller_converges_on_a_misestimated_workload() {
        // Estimates are half the truth: without correction the share would be double.
        let line = bucket_line(30);
        let b = Bucket::new(&line);
        let clock = FakeClock::new(1_000_000_000);
        let (true_ns, estimate) = (200_000u64, 100_000u64);
        let mut last = 0.0;
        for _tick in 0..60 {
            let end = clock.now_ns() + 100_000_000;
            let (mut busy, mut throttled) = (0, false);
            while clock.now_ns() < end {
                match b.admit(clock.now_ns(), estimate) {
                    Admission::Admitted => busy += true_ns,
                    Admission::Wait(ns) => {
                        throttled = true;
                        clock.advance(ns);
                    }
                }
            }
            last = busy as f64 / 100e6;
            b.set_scale(next_scale(b.scale(), 0.3, last, throttled, 0.1, 1));
        }
        assert!((last - 0.3).abs() < 0.02, "settled at {last}");
    }

    #[test]
    fn the_cost_model_keeps_the_lowest_timing() {
        let m = CostModel::default();
        let k = kernel_key(0x1234, [132, 1, 1], [256, 1, 1]);
        assert_ne!(k, kernel_key(0x1234, [264, 1, 1], [256, 1, 1]));
        // Every dimension and the function count, in the high half too (the launch path's
        // cache of shapes compares it).
        let shapes = [
            ([132, 1, 1], [256, 1, 1]),
            ([1, 132, 1], [256, 1, 1]),
            ([1, 1, 132], [256, 1, 1]),
            ([132, 1, 1], [1, 256, 1]),
            ([132, 1, 1], [1, 1, 256]),
        ];
        let mut highs: Vec<u64> =
            shapes.iter().flat_map(|(g, b)| [kernel_key(0x1234, *g, *b), kernel_key(0x1238, *g, *b)]).map(|k| k >> 32).collect();
        highs.sort_unstable();
        highs.dedup();
        assert_eq!(highs.len(), 2 * shapes.len());
        assert_eq!(m.estimate(k), None);
        let first = m.launch(k, 20_000);
        assert_eq!(first, Launch { cost: 20_000, defaulted: true, timed: true });
        m.launch(k, 20_000);
        assert_eq!(m.observe(k, 90_000), (90_000, 0), "the first timing may have queued: no bulk yet");
        assert_eq!(m.observe(k, 1000), (1000, 2), "two launches were charged the default");
        let timed: Vec<bool> = (0..2 * TIME_ONE_IN).map(|_| m.launch(k, 20_000).timed).collect();
        let n = timed.iter().filter(|t| **t).count();
        assert!((3..=4).contains(&n), "the first four (two left here), then about 1 in 128: {n}");
        assert_eq!(m.launch(k, 20_000).cost, 1000);
        assert_eq!(m.observe(k, 5000), (1000, 0), "queued behind someone else: does not move the estimate");
        assert_eq!(m.observe(k, 900), (900, 0));
        assert_eq!(m.estimate(k), Some(900));
    }

    #[test]
    fn corrections_cannot_stall_a_container_for_more_than_a_second() {
        let line = bucket_line(10);
        let b = Bucket::new(&line);
        let now = 1_000_000_000;
        b.correct(now, 10_000_000_000); // a timing inflated by a neighbour's 10 s queue
        assert_eq!(b.ahead(now), MAX_DEBT_NS);
    }

    #[test]
    fn a_run_time_limit_survives_a_new_process() {
        let line = bucket_line(30);
        let b = Bucket::new(&line);
        b.set_limit_permille(700);
        b.configure(30, false);
        assert_eq!(b.limit_permille(), Some(700), "a second process keeps the operator's change");
        b.configure(30, true);
        assert_eq!(b.limit_permille(), Some(300), "a container starting afresh takes its own limit");
    }

    #[test]
    fn one_leader_at_a_time_and_a_dead_one_is_replaced() {
        let line = bucket_line(50);
        let b = Bucket::new(&line);
        assert!(b.lead(7, 1_000, 500));
        assert!(!b.lead(9, 1_200, 500));
        assert!(b.lead(7, 1_400, 500), "the leader renews");
        assert!(b.lead(9, 2_000, 500), "the lease ran out: someone else leads");
    }
}
