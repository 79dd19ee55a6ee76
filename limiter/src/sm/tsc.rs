//! The launch path's clock: the CPU's time-stamp counter, read in one instruction and
//! converted to `CLOCK_MONOTONIC` nanoseconds with a calibration the SM controller renews on
//! every tick. `clock_gettime` costs about twice as much on the machines measured (40 ns
//! against 21 ns in a KVM guest), and an SM-limited launch reads the clock once.
//!
//! Used only where the counter is invariant and the kernel trusts it (x86-64 with
//! `constant_tsc` and `nonstop_tsc`, and `tsc` as the kernel's clocksource, which the kernel
//! keeps only while the cores' counters agree). The clock is `clock_gettime` itself until two
//! samples at least [`MIN_SPAN_NS`] apart give a plausible rate; whenever a renewal finds the
//! converted counter more than [`MAX_DRIFT_NS`] away from `clock_gettime` (a migrated virtual
//! machine, a counter that stopped), until the next good pair; and whenever the calibration
//! in use is more than [`MAX_AGE_NS`] old (the controller stalled). Buckets are shared between
//! processes, each with its own calibration: they agree to within the drift bound, far below
//! the bucket's 8 ms burst.

use std::sync::atomic::{AtomicU64, Ordering::*};

use super::{Clock, MonotonicClock};

/// Farthest the converted counter may be from `clock_gettime` at a renewal.
pub const MAX_DRIFT_NS: u64 = 50_000;
/// Shortest interval two samples must span to calibrate from.
pub const MIN_SPAN_NS: u64 = 1_000_000;
/// Oldest a calibration may be when read (the controller renews it every 100 ms).
pub const MAX_AGE_NS: u64 = 1_000_000_000;

/// A conversion from counter ticks to nanoseconds: `ns + (tsc' - tsc) * mult / 2^32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// The anchor's counter value.
    pub tsc: u64,
    /// The anchor's time.
    pub ns: u64,
    /// Nanoseconds per tick, times 2^32.
    pub mult: u64,
}

impl Calibration {
    /// From two (counter, time) samples, `b` after `a`: `None` when they span too little
    /// time, run backwards, or give a rate no CPU has (below 50 MHz or above 20 GHz).
    pub fn between(a: (u64, u64), b: (u64, u64)) -> Option<Calibration> {
        let ticks = b.0.checked_sub(a.0).filter(|t| *t > 0)?;
        let ns = b.1.checked_sub(a.1).filter(|n| *n >= MIN_SPAN_NS)?;
        let mult = u64::try_from((u128::from(ns) << 32) / u128::from(ticks)).ok()?;
        // 20 GHz is 0.05 ns per tick; 50 MHz is 20 ns.
        let (lo, hi) = ((1u64 << 32) / 20, 20u64 << 32);
        (lo..=hi).contains(&mult).then_some(Calibration { tsc: b.0, ns: b.1, mult })
    }

    /// The time at counter value `tsc` (a counter before the anchor gives the anchor's time).
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let ticks = tsc.saturating_sub(self.tsc);
        self.ns.saturating_add(((u128::from(ticks) * u128::from(self.mult)) >> 32) as u64)
    }

    /// Whether the conversion still agrees with `clock_gettime`'s `ns` at counter `tsc`.
    pub fn agrees(&self, tsc: u64, ns: u64) -> bool {
        self.ns_at(tsc).abs_diff(ns) <= MAX_DRIFT_NS
    }
}

/// The published calibration (a sequence lock over three words; `mult` 0: none).
pub struct TscClock {
    seq: AtomicU64,
    tsc: AtomicU64,
    ns: AtomicU64,
    mult: AtomicU64,
}

/// The process's launch clock.
pub static LAUNCH_CLOCK: TscClock = TscClock::new();

impl Default for TscClock {
    fn default() -> Self {
        TscClock::new()
    }
}

impl TscClock {
    /// Not calibrated: `clock_gettime`.
    pub const fn new() -> TscClock {
        TscClock { seq: AtomicU64::new(0), tsc: AtomicU64::new(0), ns: AtomicU64::new(0), mult: AtomicU64::new(0) }
    }

    /// The calibration in use, if any.
    pub fn calibration(&self) -> Option<Calibration> {
        for _ in 0..4 {
            let s = self.seq.load(Acquire);
            if s & 1 == 1 {
                continue;
            }
            let c = Calibration { tsc: self.tsc.load(Acquire), ns: self.ns.load(Acquire), mult: self.mult.load(Acquire) };
            if self.seq.load(Acquire) == s {
                return (c.mult != 0).then_some(c);
            }
        }
        None
    }

    /// In a child right after `fork` (async-signal-safe): back to `clock_gettime`, with the
    /// sequence even again (the parent's controller may have been mid-publication).
    pub fn reset_after_fork(&self) {
        self.mult.store(0, Release);
        self.seq.store(0, Release);
    }

    /// Publishes `c` (`None`: back to `clock_gettime`). One writer at a time (the controller).
    pub fn publish(&self, c: Option<Calibration>) {
        let c = c.unwrap_or(Calibration { tsc: 0, ns: 0, mult: 0 });
        self.seq.fetch_add(1, AcqRel);
        self.tsc.store(c.tsc, Release);
        self.ns.store(c.ns, Release);
        self.mult.store(c.mult, Release);
        self.seq.fetch_add(1, AcqRel);
    }
}

impl Clock for TscClock {
    fn now_ns(&self) -> u64 {
        if let (Some(c), Some(tsc)) = (self.calibration(), counter()) {
            let ns = c.ns_at(tsc);
            if ns - c.ns <= MAX_AGE_NS {
                return ns;
            }
        }
        MonotonicClock.now_ns()
    }
}

/// The counter, where it can be used at all.
#[inline(always)]
pub fn counter() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(unsafe_code)]
        // SAFETY: RDTSC has no operands and no effect but its result; every x86-64 CPU has it.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether the CPU says its counter is invariant, from `/proc/cpuinfo`'s flags.
pub fn invariant(cpuinfo: &str) -> bool {
    cpuinfo.lines().find(|l| l.starts_with("flags")).is_some_and(|l| {
        let has = |f: &str| l.split_whitespace().any(|x| x == f);
        has("constant_tsc") && has("nonstop_tsc")
    })
}

/// The controller's side: samples the counter against `clock_gettime` each tick and
/// publishes a calibration when two samples agree.
#[derive(Default)]
pub struct Calibrator {
    usable: Option<bool>,
    last: Option<(u64, u64)>,
}

impl Calibrator {
    /// One tick: a new sample, compared with the calibration in use, and a renewed one.
    pub fn tick(&mut self, clock: &TscClock) {
        let usable = *self.usable.get_or_insert_with(|| {
            counter().is_some()
                && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| invariant(&s))
                && std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                    .is_ok_and(|s| s.trim() == "tsc")
        });
        if !usable {
            return;
        }
        let Some(sample) = sample() else { return };
        if let Some(c) = clock.calibration()
            && !c.agrees(sample.0, sample.1)
        {
            // The counter and the clock parted: start again from this sample.
            clock.publish(None);
            self.last = Some(sample);
            return;
        }
        match self.last.map(|a| (a, Calibration::between(a, sample))) {
            Some((_, Some(c))) => clock.publish(Some(c)),
            // Too short a span yet: keep the older sample.
            Some((a, None)) if sample.0 > a.0 && sample.1 >= a.1 && sample.1 - a.1 < MIN_SPAN_NS => return,
            // A rate no CPU has (the counter stopped or jumped): withdraw, start again here.
            Some((_, None)) => clock.publish(None),
            None => {}
        }
        self.last = Some(sample);
    }
}

/// One (counter, time) sample, the time read between two counter reads close together.
fn sample() -> Option<(u64, u64)> {
    for _ in 0..4 {
        let a = counter()?;
        let ns = MonotonicClock.now_ns();
        let b = counter()?;
        if b >= a && b - a < 10_000 {
            return Some((a + (b - a) / 2, ns));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_at_the_measured_rate() {
        // 2.5 GHz: 2.5 ticks per ns.
        let c = Calibration::between((1_000, 10_000_000), (1_000 + 25_000_000, 20_000_000)).unwrap();
        assert_eq!(c.ns_at(1_000 + 25_000_000), 20_000_000);
        // 0.4 ns per tick is not exact in 32 fractional bits: within a nanosecond.
        assert!(c.ns_at(1_000 + 25_000_000 + 2_500).abs_diff(20_001_000) <= 1);
        assert!(c.agrees(1_000 + 25_000_000 + 2_500_000, 21_000_000));
        assert!(!c.agrees(1_000 + 25_000_000 + 2_500_000, 21_100_000));
    }

    #[test]
    fn refuses_samples_no_cpu_gives() {
        assert_eq!(Calibration::between((10, 0), (10, 5_000_000)), None, "no ticks");
        assert_eq!(Calibration::between((10, 5_000_000), (20, 0)), None, "time ran backwards");
        assert_eq!(Calibration::between((0, 0), (1_000_000, 100_000)), None, "too short a span");
        assert_eq!(Calibration::between((0, 0), (10, 10_000_000)), None, "1 Hz");
        assert_eq!(Calibration::between((0, 0), (u64::MAX / 2, 10_000_000)), None, "far too fast");
    }

    #[test]
    fn a_counter_before_the_anchor_gives_the_anchor() {
        let c = Calibration { tsc: 1_000, ns: 5, mult: 1 << 32 };
        assert_eq!(c.ns_at(10), 5);
    }

    #[test]
    fn publication_round_trips_and_withdraws() {
        let clock = TscClock::new();
        assert_eq!(clock.calibration(), None);
        let c = Calibration { tsc: 7, ns: 9, mult: 3 << 31 };
        clock.publish(Some(c));
        assert_eq!(clock.calibration(), Some(c));
        clock.publish(None);
        assert_eq!(clock.calibration(), None);
    }

    #[test]
    fn a_fork_mid_publication_leaves_a_usable_clock() {
        let clock = TscClock::new();
        clock.publish(Some(Calibration { tsc: 7, ns: 9, mult: 1 << 32 }));
        clock.seq.fetch_add(1, AcqRel); // the parent's writer was between its two increments
        clock.reset_after_fork();
        assert_eq!(clock.calibration(), None);
        clock.publish(Some(Calibration { tsc: 1, ns: 2, mult: 1 << 32 }));
        assert_eq!(clock.calibration().map(|c| c.ns), Some(2), "the child's publications are read");
    }

    #[test]
    fn an_old_calibration_is_not_extrapolated() {
        // Anchored an hour before now: the launch clock is clock_gettime, not the counter.
        let clock = TscClock::new();
        let (tsc, ns) = (counter().unwrap_or(0), MonotonicClock.now_ns());
        let hour = 3_600 * 1_000_000_000u64;
        clock.publish(Some(Calibration { tsc: tsc.saturating_sub(hour), ns: ns.saturating_sub(hour), mult: 1 << 31 }));
        let (a, b) = (clock.now_ns(), MonotonicClock.now_ns());
        assert!(b >= a && b - a < 1_000_000_000, "{a} vs {b}");
    }

    #[test]
    fn reads_the_flags() {
        assert!(invariant("processor : 0\nflags : fpu tsc constant_tsc rep_good nonstop_tsc cpuid\n"));
        assert!(!invariant("flags : fpu tsc constant_tsc\n"));
        assert!(!invariant("model name : x\n"));
    }

    #[test]
    fn the_clock_follows_clock_gettime() {
        // Calibrated over a real interval, the launch clock agrees with clock_gettime.
        let clock = TscClock::new();
        let mut cal = Calibrator::default();
        cal.tick(&clock);
        std::thread::sleep(std::time::Duration::from_millis(5));
        cal.tick(&clock);
        let (a, b) = (clock.now_ns(), MonotonicClock.now_ns());
        assert!(a.abs_diff(b) < 5_000_000, "launch clock {a} vs clock_gettime {b}");
    }
}
