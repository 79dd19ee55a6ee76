//! The SM controller's decisions: from NVML's per-process utilisation to a correction of the
//! factor by which the bucket charges estimates.
//!
//! NVML does not answer at the instant it is asked. A driver samples utilisation in periods of
//! 1/6 s to 1 s, hands a period out only once it has ended, in whole percents, and answers
//! `NVML_ERROR_NOT_FOUND` when no period has ended since the caller's last timestamp. So:
//!
//! * a `NOT_FOUND` is **no news**, never "idle": the controller waits for the next period;
//! * every correction is **weighted by the time its samples cover** (a reading of one second
//!   moves the factor as far as ten readings of 100 ms), so the loop's gain per second does not
//!   depend on the driver's period;
//! * entries repeated for one process (one per period, or duplicates) are **not summed twice**:
//!   [`container_share`] counts the periods a read spans and averages over them;
//! * a container under its share **wanted more** only if its launches waited for tokens a
//!   quarter of the time the read covers (a single wait after one big kernel does not count,
//!   nor does a wait before the last read);
//! * one second of samples corrects 70 % of the relative error ([`next_scale`]), up or down;
//!   readings that keep asking for the same direction count for more (up to [`MAX_BOOST`]
//!   times their time, never more than a second's worth each), and the reading after a
//!   boosted correction is only measured: an estimate that is off by a steady factor (timings
//!   under time slicing include the neighbours' slices) is corrected about twice as fast,
//!   noise, which flips direction, keeps the plain gain, and a share that shows a change late
//!   (up to half a second) still settles rather than swings.
//!
//! Everything here is a pure function of plain values: the shim's controller thread reads NVML
//! and the bucket each tick, calls [`Controller::step`], and writes back what it says.
use crate::config::UtilizationPolicy;

use super::Bucket;

/// A reading older than this is stale: the container is taken as idle (NVML answers
/// `NOT_FOUND` when no process used the device; the longest period is 1 s).
pub const STALE_NS: u64 = 3_000_000_000;
/// The time a reading must cover to count fully; shorter ones count in proportion.
pub const HORIZON_US: u64 = 1_000_000;
/// Stamps closer than this are of one sample period (the shortest period NVIDIA documents is
/// 1/6 s).
pub const SAME_PERIOD_US: u64 = 50_000;
/// The part of a reading's time the container's launches must have waited for tokens for it
/// to count as wanting more than it got (1 in this many).
pub const WANTED_MORE_ONE_IN: u64 = 4;
/// After enforcement turns on again (policy `default`: another container appeared while this
/// one burst), readings are measured but not acted on for as long as it was off, up to this
/// long. They still show the burst (NVML is a period behind) and then the device queue it
/// filled draining at the time slice's pace, both of which read as overshoot: acting on them
/// raised the factor to ~1.3 and held a 30 % container near 23 % for seconds after (measured
/// on simgpu, four-axes' burst scenario).
pub const SETTLE_NS: u64 = 1_000_000_000;
/// Most times its covered time a reading counts for (a power of two): the third reading in a
/// row that asks for a correction the same way counts twice, each next one twice as much up to
/// this. The reading after a boosted correction is measured, not acted on: it still partly
/// shows the factor before, and acting on it as well is how a lagging loop overshoots.
pub const MAX_BOOST: u32 = 4;
const _: () = assert!(MAX_BOOST.is_power_of_two());
/// The longest run of same-way readings counted: the one whose boost reaches [`MAX_BOOST`].
const MAX_RUN: i32 = 2 + MAX_BOOST.trailing_zeros() as i32;

/// One entry of `nvmlDeviceGetProcessUtilization`, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtilEntry {
    /// The process.
    pub pid: u32,
    /// `smUtil`, percent of the sample period.
    pub sm_util: u32,
    /// `timeStamp`, the driver's microseconds (wall clock on a real driver).
    pub stamp_us: u64,
}

/// The container's share in one successful read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    /// Fraction of the device the container's processes used.
    pub share: f64,
    /// The newest timestamp of the read (the caller's next `lastSeenTimeStamp`).
    pub newest_us: u64,
    /// Microseconds the read covers (0: unknown, the first read; only a baseline).
    pub covered_us: u64,
    /// Whether a process outside the container used the device.
    pub others: bool,
}

/// What one read of NVML said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// Samples arrived.
    Samples(Share),
    /// `NVML_ERROR_NOT_FOUND`: no period ended since the last read, or nobody used the device.
    NoNews,
    /// The call failed otherwise.
    Failed,
}

/// The container's share in a read of `entries` made with `last_seen_us`, `ours` being the
/// container's processes; `None` when there are no entries.
///
/// Stamps closer together than [`SAME_PERIOD_US`] belong to one sample period (a driver may
/// stamp processes' samples of one period a little apart); an entry of one process counts once
/// per period. With several periods in a read (a driver returning one entry per process and
/// period), the read spans `max(periods seen, covered / shortest gap between periods)` periods
/// and each process's entries are summed and divided by that: periods in which nobody ran have
/// no entries but still count.
pub fn container_share(entries: &[UtilEntry], ours: &[u32], last_seen_us: u64) -> Option<Share> {
    let newest = entries.iter().map(|e| e.stamp_us).max()?;
    let covered = if last_seen_us > 0 { newest.saturating_sub(last_seen_us) } else { 0 };
    let mut stamps: Vec<u64> = entries.iter().map(|e| e.stamp_us).collect();
    stamps.sort_unstable();
    // The start of each period's cluster of stamps.
    let mut starts: Vec<u64> = Vec::with_capacity(stamps.len());
    for t in stamps {
        if starts.last().is_none_or(|s| t - s >= SAME_PERIOD_US) {
            starts.push(t);
        }
    }
    let period_of = |t: u64| starts.partition_point(|s| *s <= t).saturating_sub(1);
    let gap = starts.windows(2).map(|w| w[1] - w[0]).min();
    let periods = match gap {
        Some(g) if covered > 0 => ((covered as f64 / g as f64).round() as usize).max(starts.len()),
        _ => starts.len(),
    };
    let mut seen: Vec<(u32, usize)> = Vec::with_capacity(entries.len());
    let mut sum = 0u64;
    let mut others = false;
    for e in entries {
        if !ours.contains(&e.pid) {
            others = true;
            continue;
        }
        let key = (e.pid, period_of(e.stamp_us));
        if !seen.contains(&key) {
            seen.push(key);
            sum += u64::from(e.sm_util.min(100));
        }
    }
    let share = (sum as f64 / 100.0 / periods as f64).min(1.0);
    Some(Share { share, newest_us: newest, covered_us: covered, others })
}

/// The next factor by which estimates are charged, from the target and the measured share
/// (fractions of the device) over a reading that counts `weight` (0..=1, its covered time over
/// [`HORIZON_US`]) `boost` times (1..=[`MAX_BOOST`]; never more than one full reading), and
/// whether launches waited for tokens in it (the container wanted more than it got).
///
/// Above target the factor rises in proportion to the overshoot; below target it falls only if
/// the container was throttled (a container that has no more work must not be handed a cheaper
/// rate it would later spend in a burst). Within a dead band nothing changes. One full-weight
/// reading corrects 70 % of the relative error, and moves the factor at most ×2 or ÷2. The
/// gain is the same both ways: whole-percent readings are noisy, and a loop that rose faster
/// than it fell would drift towards under-delivery on that noise.
pub fn next_scale(scale: f64, target: f64, achieved: f64, throttled: bool, weight: f64, boost: u32) -> f64 {
    const DEAD_BAND: f64 = 0.005;
    const GAIN: f64 = 0.7;
    /// Largest factor by which one full-weight reading raises or lowers the price.
    const MAX_STEP: f64 = 2.0;
    const MIN: f64 = 0.2;
    const MAX: f64 = 8.0;
    if target <= 0.0 || !achieved.is_finite() || !weight.is_finite() {
        return scale;
    }
    let w = (weight.clamp(0.0, 1.0) * f64::from(boost.clamp(1, MAX_BOOST))).min(1.0);
    let err = achieved - target;
    if !(err > DEAD_BAND || (err < -DEAD_BAND && throttled)) {
        return scale;
    }
    const { assert!(MAX_STEP == 2.0, "two_to_the is 2^w") };
    let bound = two_to_the(w);
    let factor = (1.0 + GAIN * w * err / target).clamp(1.0 / bound, bound);
    (scale * factor).clamp(MIN, MAX)
}

/// 2^`w` for `w` in [0, 1], to within 1e-9, without libm: `f64::powf` would make `libvgpu.so`
/// need `libm.so.6`, which the loader would then map into every process of a container that
/// preloads the shim, CUDA or not.
fn two_to_the(w: f64) -> f64 {
    // The ends exactly (a full-weight reading's bound is 2, not 2 less an ulp).
    if w >= 1.0 {
        return 2.0;
    }
    if w.is_nan() || w <= 0.0 {
        return 1.0;
    }
    // e^x for x = w ln 2 in (0, ln 2): Taylor terms up to x^18 leave less than an ulp.
    let x = w * std::f64::consts::LN_2;
    let (mut term, mut sum) = (1.0, 1.0);
    for k in 1..=18 {
        term *= x / f64::from(k);
        sum += term;
    }
    sum
}

/// What the bucket and NVML said in one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// Now (ns, the bucket's clock).
    pub now_ns: u64,
    /// This tick's read of NVML.
    pub reading: Reading,
    /// The bucket's total time launches waited for tokens.
    pub throttled_total_ns: u64,
    /// The bucket's share in permille (`None`: no limit).
    pub limit_permille: Option<u64>,
    /// The bucket's factor now.
    pub scale: f64,
    /// The container's policy.
    pub policy: UtilizationPolicy,
    /// Whether processes outside the container use the device (from the process list; a
    /// sample of another process counts too).
    pub others: bool,
}

/// What to write back to the bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the limit is enforced.
    pub enforce: bool,
    /// A new factor, when it changes.
    pub scale: Option<f64>,
    /// The container's measured share to publish, when there is a new one.
    pub achieved: Option<f64>,
}

/// One device's controller, ticked by the process that holds the bucket's lease.
#[derive(Debug, Default, Clone)]
pub struct Controller {
    /// NVML's newest timestamp seen (the next read's `lastSeenTimeStamp`); 0 before the first.
    last_seen_us: u64,
    /// When the last samples arrived (ns), 0 before the first.
    last_news_ns: u64,
    /// The bucket's throttled total when the last samples arrived.
    throttled_ns: u64,
    /// The limit the last samples were measured under (permille); 0 until a first full
    /// period has been measured.
    limit: u64,
    /// When a tick first found enforcement off (ns), since enforcement last began.
    off_since_ns: Option<u64>,
    /// Readings before this (ns) are not acted on: enforcement began again ([`SETTLE_NS`]).
    settle_until_ns: u64,
    /// The corrections in a row that went one way: positive raised the factor, negative
    /// lowered it; 0 after a reading that changed nothing, and whenever readings are not acted
    /// on (a baseline, a new target, enforcement off or settling).
    run: i32,
    /// Whether [`Controller::read_since`] has set the first `lastSeenTimeStamp` (once).
    began: bool,
    /// The last correction was boosted: the next reading, which still partly shows the factor
    /// before it, is measured, not acted on.
    hold: bool,
}

impl Controller {
    /// The `lastSeenTimeStamp` for this tick's read, `wall_us` being now on NVML's clock (the
    /// wall clock, µs; 0 when unknown) and `now_ns` on the bucket's.
    ///
    /// A controller that begins (the process's first throttled launch, it took the lead, or
    /// the container was idle past [`STALE_NS`]) asks only for periods that end from now on:
    /// what the driver buffered before is other processes' history. Its first read then covers
    /// part of the period it began in: measured, not acted on. If no period ever comes (NVML's
    /// clock behind ours), the silence reads as stale after [`STALE_NS`] and the next read,
    /// asking from 0, takes the driver's whole buffer as a baseline.
    pub fn read_since(&mut self, now_ns: u64, wall_us: u64) -> u64 {
        if !self.began && wall_us > 0 {
            self.began = true;
            self.last_seen_us = wall_us;
            self.last_news_ns = now_ns.max(1);
        }
        self.last_seen_us
    }

    /// The `lastSeenTimeStamp` the last read left (0: none yet, or starting over).
    pub fn last_seen_us(&self) -> u64 {
        self.last_seen_us
    }

    /// One tick against a container's `bucket`: reads its counters, decides with
    /// [`Controller::step`], and writes the decision back (enforcement, measured share, factor).
    pub fn tick(&mut self, bucket: Bucket<'_>, now_ns: u64, reading: Reading, policy: UtilizationPolicy, others: bool) -> Decision {
        let d = self.step(Inputs {
            now_ns,
            reading,
            throttled_total_ns: bucket.throttled_ns(),
            limit_permille: bucket.limit_permille(),
            scale: bucket.scale(),
            policy,
            others,
        });
        bucket.set_enforcing(d.enforce);
        if let Some(achieved) = d.achieved {
            bucket.set_achieved_permille((achieved * 1000.0).round() as u64);
        }
        if let Some(scale) = d.scale {
            bucket.set_scale(scale);
        }
        d
    }

    /// One tick: what to write back.
    pub fn step(&mut self, i: Inputs) -> Decision {
        let others = i.others || matches!(i.reading, Reading::Samples(s) if s.others);
        let enforce = match i.policy {
            UtilizationPolicy::Force => true,
            UtilizationPolicy::Default => others,
            UtilizationPolicy::Disable => false,
        };
        if !enforce {
            self.off_since_ns.get_or_insert(i.now_ns);
        } else if let Some(off) = self.off_since_ns.take() {
            // From bursting to enforcing (never at a start under `force`: nothing to settle).
            // A short burst filled less: it settles as long as it lasted.
            self.settle_until_ns = i.now_ns.saturating_add(SETTLE_NS.min(i.now_ns.saturating_sub(off)));
        }
        let mut d = Decision { enforce, scale: None, achieved: None };
        let s = match i.reading {
            Reading::Failed => return d,
            Reading::NoNews => {
                if self.last_news_ns > 0 && i.now_ns.saturating_sub(self.last_news_ns) > STALE_NS {
                    // Idle, or the driver's clock stepped back past our last stamp: start over
                    // from a new baseline either way.
                    d.achieved = Some(0.0);
                    self.last_seen_us = 0;
                    self.last_news_ns = 0;
                }
                return d;
            }
            Reading::Samples(s) => s,
        };
        if s.newest_us <= self.last_seen_us {
            return d; // nothing newer than what was seen (a driver that ignored lastSeen)
        }
        self.last_seen_us = s.newest_us;
        self.last_news_ns = i.now_ns;
        // Wanting more than it got: launches waited for tokens a good part of the time the
        // samples cover (a moment's wait, e.g. paying off one big kernel, is not enough).
        let waited = i.throttled_total_ns.saturating_sub(self.throttled_ns);
        self.throttled_ns = i.throttled_total_ns;
        let wanted_more = waited.saturating_mul(WANTED_MORE_ONE_IN) >= s.covered_us.saturating_mul(1000) && waited > 0;
        let Some(limit) = i.limit_permille else { return d };
        d.achieved = Some(s.share);
        // Readings acted on: enforced and settled. Any other resets the run of corrections.
        let acting = enforce && i.now_ns >= self.settle_until_ns;
        let baseline = s.covered_us == 0 || s.covered_us > STALE_NS / 1000;
        if baseline || self.limit != limit || !acting {
            (self.run, self.hold) = (0, false);
        }
        if baseline {
            // A read of the driver's whole buffer (the first with NVML's clock unknown, or one
            // after a long silence, which reaches back only as far as the buffer): a baseline.
            // The next one covers the period in which the container started (part of it idle,
            // its first launches charged defaults): measured, not acted on, as for a change of
            // target.
            self.limit = 0;
            return d;
        }
        if self.limit != limit {
            // A new target (an operator's change): these samples straddle it and say nothing
            // about the estimates' error under the new one.
            self.limit = limit;
            return d;
        }
        if !acting || std::mem::take(&mut self.hold) {
            return d; // not enforced, settling, or after a boosted correction: measured only
        }
        let weight = s.covered_us as f64 / HORIZON_US as f64;
        let target = limit as f64 / 1000.0;
        let plain = next_scale(i.scale, target, s.share, wanted_more, weight, 1);
        let way = i32::from(plain > i.scale) - i32::from(plain < i.scale);
        self.run = if way != 0 && way == self.run.signum() { (self.run + way).clamp(-MAX_RUN, MAX_RUN) } else { way };
        // 1, 1, 2, 4, 4, ...: the third reading in a row asking the same way counts twice.
        let boost = 1 << self.run.unsigned_abs().saturating_sub(2);
        let next = if boost > 1 { next_scale(i.scale, target, s.share, wanted_more, weight, boost) } else { plain };
        // Hold only when the boost went further (a reading of a second already counts fully).
        self.hold = next != plain;
        if next != i.scale {
            d.scale = Some(next);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: u32, sm_util: u32, stamp_us: u64) -> UtilEntry {
        UtilEntry { pid, sm_util, stamp_us }
    }

    #[test]
    fn one_averaged_entry_per_process_is_summed_over_the_container() {
        let got = container_share(&[e(1, 10, 500), e(2, 15, 500), e(9, 60, 500)], &[1, 2, 3], 300).unwrap();
        assert_eq!(got, Share { share: 0.25, newest_us: 500, covered_us: 200, others: true });
        assert_eq!(container_share(&[], &[1], 300), None);
        let only_ours = container_share(&[e(1, 30, 500)], &[1], 0).unwrap();
        assert_eq!((only_ours.covered_us, only_ours.others), (0, false), "the first read: a baseline");
    }

    #[test]
    fn repeated_entries_are_not_summed_twice() {
        const P: u64 = 1_000_000; // 1 s periods
        // The same entry twice: counted once.
        let got = container_share(&[e(1, 30, 5 * P), e(1, 30, 5 * P)], &[1], 4 * P).unwrap();
        assert_eq!(got.share, 0.3);
        // One entry per period (periods ending at 5, 6 and 7 s): averaged.
        let per_period = [e(1, 30, 5 * P), e(1, 40, 6 * P), e(1, 20, 7 * P), e(2, 10, 7 * P)];
        let got = container_share(&per_period, &[1, 2], 4 * P).unwrap();
        assert!((got.share - 1.0 / 3.0).abs() < 1e-9, "{got:?}");
        // A period in which nobody ran has no entry, yet counts: 3 s covered, periods of 1 s.
        let got = container_share(&[e(1, 30, 5 * P), e(1, 30, 6 * P)], &[1], 3 * P).unwrap();
        assert!((got.share - 0.2).abs() < 1e-9, "{got:?}");
        // Processes' samples of one period stamped a few µs apart are one period.
        let got = container_share(&[e(1, 30, 5 * P), e(2, 10, 5 * P + 7), e(1, 30, 5 * P + 9)], &[1, 2], 4 * P).unwrap();
        assert!((got.share - 0.4).abs() < 1e-9, "{got:?}");
        assert_eq!(got.newest_us, 5 * P + 9);
    }

    #[test]
    fn the_controller_corrects_both_ways_in_proportion_to_the_time_covered() {
        let s = next_scale(1.0, 0.3, 0.36, false, 1.0, 1);
        assert!((s - 1.14).abs() < 1e-9, "overshoot raises the price in proportion: {s}");
        let s = next_scale(1.0, 0.3, 0.24, true, 1.0, 1);
        assert!((s - 0.86).abs() < 1e-9, "throttled under-delivery lowers it as much: {s}");
        let short = next_scale(1.0, 0.3, 0.36, false, 0.1, 1);
        assert!((short - 1.014).abs() < 1e-9, "a tenth of the time, a tenth of the step: {short}");
        assert_eq!(next_scale(1.0, 0.3, 0.97, false, 1.0, 1), 2.0, "one reading raises it at most ×2");
        assert_eq!(next_scale(1.0, 0.3, 0.0, true, 1.0, 1), 0.5, "or lowers it at most ÷2");
        assert!((next_scale(1.0, 0.3, 0.97, false, 0.1, 1) - 2f64.powf(0.1)).abs() < 1e-9, "less for a shorter reading");
        for i in 0..=100 {
            let w = f64::from(i) / 100.0;
            assert!((super::two_to_the(w) - 2f64.powf(w)).abs() < 1e-9, "2^{w}");
        }
        assert_eq!(next_scale(1.0, 0.3, 0.1, false, 1.0, 1), 1.0, "an idle container keeps its price");
        assert_eq!(next_scale(1.0, 0.3, 0.302, true, 1.0, 1), 1.0, "dead band");
        assert_eq!(next_scale(7.9, 0.1, 0.9, false, 1.0, 1), 8.0, "clamped");
        assert_eq!(next_scale(1.0, 0.3, f64::NAN, false, 1.0, 1), 1.0);
        // A boosted reading counts as if it covered `boost` times its time, up to one second.
        let boosted = next_scale(1.0, 0.3, 0.36, false, 0.1, 4);
        assert!((boosted - 1.056).abs() < 1e-9, "{boosted}");
        assert_eq!(next_scale(1.0, 0.3, 0.36, false, 0.5, 4), next_scale(1.0, 0.3, 0.36, false, 1.0, 1), "at most a second's worth");
        assert_eq!(next_scale(1.0, 0.3, 0.36, false, 0.1, 99), boosted, "boost clamped to MAX_BOOST");
        assert_eq!(next_scale(1.0, 0.3, 0.36, false, 0.1, 0), short, "boost 0 reads as 1");
    }

    /// A tick every 1/6 s with a reading of that period.
    fn sixth(k: u64, share: f64, scale: f64, throttled_ns: u64) -> Inputs {
        Inputs { scale, ..inputs(k * 166_666_667, news(share, 1_000 + k * 166_667, if k == 0 { 0 } else { 166_667 }), throttled_ns) }
    }

    #[test]
    fn readings_that_keep_asking_one_way_count_for_more_and_a_reversal_resets_them() {
        let mut c = Controller::default();
        c.step(sixth(0, 0.3, 1.0, 0)); // baseline
        c.step(sixth(1, 0.3, 1.0, 0)); // the period the container started in
        // Overcharged: it gets 0.6 of its 30 % and waits for tokens throughout.
        let mut scale = 1.0;
        let mut steps = vec![];
        for k in 2..8 {
            let d = c.step(sixth(k, 0.18, scale, k * 100_000_000));
            let next = d.scale.unwrap_or(scale);
            steps.push(scale / next);
            scale = next;
        }
        let plain = 1.0 / (1.0 - 0.7 * 0.166_667 * 0.4);
        let twice = 1.0 / (1.0 - 0.7 * 0.333_333 * 0.4);
        let four = 1.0 / (1.0 - 0.7 * 0.666_667 * 0.4);
        let want = [plain, plain, twice, 1.0, four, 1.0];
        for (got, want) in steps.iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "plain, plain, twice, held, four times, held: {steps:?}");
        }
        // Six readings (1 s) went as far as the plain gain goes in eight (4/3 s).
        assert!(scale < (1.0 - 0.7 * 0.166_667 * 0.4f64).powi(8), "{scale}");
        // A reading the other way is taken at the plain gain, and starts a new run.
        let d = c.step(sixth(8, 0.33, scale, 8 * 100_000_000));
        let up = d.scale.unwrap() / scale;
        assert!((up - (1.0 + 0.7 * 0.166_667 * 0.1)).abs() < 1e-4, "{up}");
        scale = d.scale.unwrap();
        // Noise that flips each reading never builds a boost.
        for k in 9..14 {
            let share = if k % 2 == 0 { 0.33 } else { 0.27 };
            let d = c.step(sixth(k, share, scale, k * 100_000_000));
            let step = d.scale.unwrap() / scale;
            assert!((step - 1.0).abs() < 0.7 * 0.166_667 * 0.1 + 1e-4, "reading {k}: {step}");
            scale = d.scale.unwrap();
        }
        // Two readings one way, one within the dead band: the third that way is a plain step
        // (counted as the third in a row it would count twice).
        for k in 14..16 {
            scale = c.step(sixth(k, 0.33, scale, k * 100_000_000)).scale.unwrap();
        }
        assert_eq!(c.step(sixth(16, 0.3, scale, 16 * 100_000_000)).scale, None, "dead band");
        let d = c.step(sixth(17, 0.33, scale, 17 * 100_000_000));
        assert!((d.scale.unwrap() / scale - (1.0 + 0.7 * 0.166_667 * 0.1)).abs() < 1e-4, "{d:?}");
    }

    /// A container whose estimates are off by `error` and whose share shows a factor change
    /// only `lag` readings later (a queue of work admitted at the old price, or NVML's delay):
    /// the share it gets in each of `n` readings of `period_us`.
    fn lagged(error: f64, lag: usize, period_us: u64, n: u64) -> Vec<f64> {
        let mut c = Controller::default();
        let mut scales = vec![1.0; lag + 1];
        let mut got = vec![];
        for k in 0..n {
            let scale = *scales.last().unwrap();
            let share = (0.3 * error / scales[scales.len() - 1 - lag]).min(1.0);
            let share = (share * 100.0).round() / 100.0; // whole percents
            let reading = news(share, 1_000 + k * period_us, if k == 0 { 0 } else { period_us });
            let d = c.step(Inputs { scale, ..inputs(k * period_us * 1000, reading, k * period_us * 1000) });
            scales.push(d.scale.unwrap_or(scale));
            got.push(share);
        }
        got
    }

    #[test]
    fn a_lagging_share_settles_without_swinging() {
        // Lags of up to half a second (three readings at P = 1/6 s), and one reading at least.
        for period_us in [166_667, 500_000, 1_000_000] {
            for lag in 0..=(500_000usize).div_ceil(period_us as usize) {
                for error in [0.57, 1.6, 3.0] {
                    let got = lagged(error, lag, period_us, 120);
                    let tail = got[90..].iter().map(|s| (s - 0.3).abs()).fold(0.0, f64::max);
                    assert!(tail <= 0.011, "period {period_us} µs, lag {lag}, error {error}: {got:?}");
                }
            }
        }
        // At P = 1 s a reading counts fully already: a boost changes nothing and nothing is held.
        let mut c = Controller::default();
        let mut scale = 1.0;
        c.step(inputs(0, news(0.3, 1_000, 0), 0));
        c.step(inputs(1, news(0.3, 1_001_000, 1_000_000), 0));
        for k in 2..8u64 {
            let d = c.step(Inputs { scale, ..inputs(k, news(0.36, 1_000 + k * 1_000_000, 1_000_000), 0) });
            scale = d.scale.unwrap_or_else(|| panic!("reading {k} acted on"));
        }
        // Without lag, a steady error at P = 1/6 s is within 2 points after the baseline, the
        // period measured only and 9 more (1.5 s; the plain gain alone is at 25 % then).
        let got = lagged(0.57, 0, 166_667, 14);
        assert!(got[11..].iter().all(|s| (s - 0.3).abs() <= 0.02), "{got:?}");
    }

    fn inputs(now_ns: u64, reading: Reading, throttled_total_ns: u64) -> Inputs {
        Inputs {
            now_ns,
            reading,
            throttled_total_ns,
            limit_permille: Some(300),
            scale: 1.0,
            policy: UtilizationPolicy::Force,
            others: false,
        }
    }

    fn news(share: f64, newest_us: u64, covered_us: u64) -> Reading {
        Reading::Samples(Share { share, newest_us, covered_us, others: false })
    }

    #[test]
    fn not_found_is_no_news_and_stale_news_reads_as_idle() {
        let mut c = Controller::default();
        assert_eq!(c.step(inputs(1_000_000_000, news(0.3, 1_000, 0), 0)).scale, None, "baseline");
        assert_eq!(c.last_seen_us(), 1_000);
        // Throttled, then nine ticks of NOT_FOUND: nothing changes, nothing is published.
        for k in 1..10 {
            let d = c.step(inputs(1_000_000_000 + k * 100_000_000, Reading::NoNews, 5_000_000));
            assert_eq!(d, Decision { enforce: true, scale: None, achieved: None });
        }
        // The period ends at 30 %: on target, no change, published.
        let d = c.step(inputs(2_000_000_000, news(0.3, 1_001_000, 1_000_000), 5_000_000));
        assert_eq!((d.scale, d.achieved), (None, Some(0.3)));
        // Under target and the throttling was before the last news: it does not carry over.
        let d = c.step(inputs(3_000_000_000, news(0.2, 2_001_000, 1_000_000), 5_000_000));
        assert_eq!(d.scale, None, "not throttled since the last news");
        // Silence past STALE_NS: the container reads as idle, the factor stays.
        let d = c.step(inputs(6_500_000_000, Reading::NoNews, 5_000_000));
        assert_eq!((d.scale, d.achieved), (None, Some(0.0)));
        assert_eq!(c.step(inputs(6_600_000_000, Reading::Failed, 5_000_000)).achieved, None);
        // ... and starts over from a baseline (a driver clock stepped back cannot freeze it).
        assert_eq!(c.last_seen_us(), 0);
        assert_eq!(c.step(inputs(6_700_000_000, news(0.9, 500, 0), 5_000_000)).scale, None, "a new baseline");
        assert_eq!(c.last_seen_us(), 500);
        // A read reaching back further than any driver buffer is only a baseline too.
        let mut c = Controller::default();
        c.step(inputs(0, news(0.3, 1_000, 0), 0));
        c.step(inputs(1, news(0.3, 1_001_000, 1_000_000), 0));
        assert_eq!(c.step(inputs(2, news(0.9, 61_001_000, 60_000_000), 0)).scale, None);
        assert!(c.step(inputs(3, news(0.9, 62_001_000, 1_000_000), 0)).scale.is_none(), "the period after it is measured only");
        assert!(c.step(inputs(4, news(0.9, 63_001_000, 1_000_000), 0)).scale.unwrap() > 1.0);
    }

    #[test]
    fn the_first_read_asks_only_for_periods_since_the_controller_began() {
        let at = |now_ns: u64, reading: Reading| inputs(now_ns, reading, now_ns / 2);
        // The first read asks from now on NVML's clock, not for the driver's whole buffer.
        let mut c = Controller::default();
        assert_eq!(c.read_since(1, 5_000_000), 5_000_000);
        assert_eq!(c.read_since(2, 9_000_000), 5_000_000, "once");
        assert_eq!(c.step(at(1, Reading::NoNews)).scale, None);
        // The period the container started in: measured only; the next one is acted on.
        let d = c.step(at(2, news(0.1, 5_050_000, 50_000)));
        assert_eq!((d.scale, d.achieved), (None, Some(0.1)));
        assert_eq!(c.read_since(3, 5_300_000), 5_050_000);
        assert!(c.step(at(3, news(0.5, 5_216_667, 166_667))).scale.unwrap() > 1.0, "acted on");
        // After a silence the driver's buffer is read whole: a baseline, then a read measured
        // only, then acted on.
        let stale = 4 * STALE_NS;
        assert_eq!(c.step(at(stale, Reading::NoNews)).achieved, Some(0.0), "idle");
        assert_eq!(c.read_since(stale, 20_000_000), 0);
        assert_eq!(c.step(at(stale + 1, news(0.3, 20_050_000, 0))).scale, None, "baseline");
        assert_eq!(c.step(at(stale + 2, news(0.5, 20_216_667, 166_667))).scale, None, "measured only");
        assert!(c.step(at(stale + 3, news(0.5, 20_383_333, 166_667))).scale.is_some());
        // NVML's clock behind ours: no period ever ends after the start. The silence reads as
        // stale, and the next read takes the whole buffer (it cannot freeze the controller).
        let mut c = Controller::default();
        assert_eq!(c.read_since(1_000, 5_000_000), 5_000_000);
        for k in 1..=30 {
            c.step(at(1_000 + k * 100_000_000, Reading::NoNews));
        }
        assert_eq!(c.step(at(1_000 + 31 * 100_000_000, Reading::NoNews)).achieved, Some(0.0));
        assert_eq!(c.read_since(4_000_000_000, 5_000_000), 0, "the whole buffer");
        // NVML's clock unknown (0): the first read is of the whole buffer, a baseline.
        let mut c = Controller::default();
        assert_eq!(c.read_since(1, 0), 0);
        c.step(at(2, news(0.1, 5_050_000, 0)));
        assert_eq!(c.step(at(3, news(0.5, 5_216_667, 166_667))).scale, None, "measured only");
    }

    #[test]
    fn wanting_more_is_waiting_for_tokens_a_quarter_of_the_time_measured() {
        let mut c = Controller::default();
        c.step(inputs(0, news(0.3, 1_000, 0), 0));
        c.step(inputs(50, news(0.3, 1_001, 1), 0)); // the period the container started in
        // Waits totalling 300 ms come in over ticks of NOT_FOUND, then a 1 s reading.
        c.step(inputs(100, Reading::NoNews, 100_000_000));
        c.step(inputs(200, Reading::NoNews, 300_000_000));
        let d = c.step(inputs(300, news(0.2, 1_001_000, 1_000_000), 300_000_000));
        assert!(d.scale.unwrap() < 1.0, "waited 30 % of the time at 20 % of a 30 % share: {d:?}");
        let d = c.step(inputs(400, news(0.2, 2_001_000, 1_000_000), 300_000_000));
        assert_eq!(d.scale, None, "no waiting since: it had no more work");
        let d = c.step(inputs(500, news(0.2, 3_001_000, 1_000_000), 310_000_000));
        assert_eq!(d.scale, None, "a moment's wait (1 % of the time) is not wanting more");
    }

    #[test]
    fn a_container_that_burst_settles_before_its_factor_moves() {
        // Policy default: alone (bursting, 100 %), then another container appears.
        let mut c = Controller::default();
        let at = |now_ns: u64, share: f64, k: u64, others: bool| Inputs {
            policy: UtilizationPolicy::Default,
            others,
            ..inputs(now_ns, news(share, 1_000 + k * 166_667, if k == 0 { 0 } else { 166_667 }), 0)
        };
        let s = 1_000_000_000;
        for k in 0..6 {
            assert_eq!(c.step(at(s + k * 166_666_667, 1.0, k, false)).scale, None, "not enforced while alone");
        }
        // The burst still shows, then the queue it filled drains: all over the 30 % target.
        let on = s + 6 * 166_666_667;
        for (j, share) in [0.83, 0.49, 0.49, 0.35, 0.33].into_iter().enumerate() {
            let d = c.step(at(on + j as u64 * 166_666_667, share, 6 + j as u64, true));
            assert_eq!((d.enforce, d.scale, d.achieved), (true, None, Some(share)), "settling: measured only");
        }
        // A second later, an overshoot is corrected again.
        let d = c.step(at(on + SETTLE_NS, 0.4, 12, true));
        assert!(d.scale.unwrap() > 1.0, "{d:?}");
        // A neighbour's blip of one tick: it settles one tick's time, not a second.
        let blip = on + SETTLE_NS + 2 * 166_666_667;
        assert!(!c.step(at(blip, 0.3, 13, false)).enforce, "alone again");
        assert_eq!(c.step(at(blip + 166_666_667, 0.6, 14, true)).scale, None, "settling");
        assert!(c.step(at(blip + 2 * 166_666_667, 0.6, 15, true)).scale.is_some(), "settled after the blip's length");
        // Under force, enforcement never began again: nothing to settle.
        let mut c = Controller::default();
        c.step(inputs(0, news(0.3, 1_000, 0), 0));
        c.step(inputs(1, news(0.3, 1_001_000, 1_000_000), 0));
        assert!(c.step(inputs(2, news(0.6, 2_001_000, 1_000_000), 0)).scale.unwrap() > 1.0);
    }

    #[test]
    fn a_new_limit_skips_the_straddling_reading_and_policy_decides_enforcement() {
        let mut c = Controller::default();
        c.step(inputs(0, news(0.3, 1_000, 0), 0));
        let d = c.step(inputs(1, news(0.6, 501_000, 500_000), 0));
        assert_eq!((d.scale, d.achieved), (None, Some(0.6)), "the period the controller started in: measured only");
        let d = c.step(inputs(1, news(0.6, 1_001_000, 500_000), 0));
        assert!(d.scale.unwrap() > 1.0);
        let mut i = inputs(3, news(0.3, 3_001_000, 1_000_000), 0);
        i.limit_permille = Some(100);
        assert_eq!(c.step(i).scale, None, "straddles the change");
        let mut i = inputs(4, news(0.3, 4_001_000, 1_000_000), 0);
        i.limit_permille = Some(100);
        i.policy = UtilizationPolicy::Default;
        let d = c.step(i);
        assert_eq!((d.enforce, d.scale), (false, None), "default policy, alone: not enforced, not corrected");
        let busy_neighbour = Reading::Samples(Share { share: 0.3, newest_us: 4_001_000, covered_us: 1_000_000, others: true });
        assert!(c.clone().step(Inputs { reading: busy_neighbour, ..i }).enforce, "another process's samples count as others");
        i.others = true;
        i.now_ns += SETTLE_NS; // alone for a second, then a neighbour
        i.reading = news(0.3, 5_001_000, 1_000_000);
        let d = c.step(i);
        assert_eq!((d.enforce, d.scale, d.achieved), (true, None, Some(0.3)), "enforced again: measured, not acted on yet");
        i.now_ns += SETTLE_NS;
        i.reading = news(0.3, 6_001_000, 1_000_000);
        let d = c.step(i);
        assert!(d.enforce && d.scale.unwrap() > 1.0, "{d:?}");
        i.policy = UtilizationPolicy::Disable;
        i.reading = news(0.3, 7_001_000, 1_000_000);
        assert_eq!(c.step(i).scale, None);
        assert!(!c.step(i).enforce);
        i.reading = news(0.9, 7_001_000, 1_000_000);
        assert_eq!(c.step(i).achieved, None, "a read no newer than the last is ignored");
    }
}
