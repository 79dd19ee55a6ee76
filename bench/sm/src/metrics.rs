//! From busy-time samples to the figures the report gives: per-window shares, their error
//! against a target (mean, P95, overshoot and under-delivery apart), delivered throughput, and
//! the time a share takes to settle after the target changes.

/// Busy time per process over one stretch of time, `[t0, t1)` in `CLOCK_MONOTONIC` ns.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Start of the stretch.
    pub t0: u64,
    /// End of the stretch.
    pub t1: u64,
    /// (pid, busy ns) for every process that used the device in it.
    pub busy: Vec<(u32, u64)>,
}

/// Busy nanoseconds of `pids` within `[w0, w1)`. A sample that straddles the window counts in
/// proportion to its overlap (work is taken as spread evenly over a sample; the timeline's
/// samples are 10 ms, far shorter than a window).
pub fn busy_in(samples: &[Sample], pids: &[u32], w0: u64, w1: u64) -> f64 {
    samples
        .iter()
        .filter(|s| s.t1 > w0 && s.t0 < w1 && s.t1 > s.t0)
        .map(|s| {
            let overlap = s.t1.min(w1) - s.t0.max(w0);
            let busy: u64 = s.busy.iter().filter(|(p, _)| pids.contains(p)).map(|(_, b)| *b).sum();
            busy as f64 * overlap as f64 / (s.t1 - s.t0) as f64
        })
        .sum()
}

/// The share of the device `pids` took in each window of `width` ns, windows starting every
/// `step` ns from `from` while they end by `to`: (window end, share as a fraction).
pub fn windows(samples: &[Sample], pids: &[u32], from: u64, to: u64, width: u64, step: u64) -> Vec<(u64, f64)> {
    let mut out = Vec::new();
    let mut w0 = from;
    while w0 + width <= to {
        out.push((w0 + width, busy_in(samples, pids, w0, w0 + width) / width as f64));
        w0 += step;
    }
    out
}

/// The `p`-th percentile (0..=100) of `v`, nearest rank; 0 for an empty slice.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Figures of a series of window shares, in percentage points of the device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Windows measured.
    pub windows: usize,
    /// Mean share.
    pub achieved: f64,
    /// Lowest and highest window.
    pub min: f64,
    /// Highest window.
    pub max: f64,
    /// Mean |share − target| over windows (0 without a target).
    pub mean_abs_err: f64,
    /// 95th percentile of |share − target|.
    pub p95_abs_err: f64,
    /// Mean of max(0, share − target): what was taken beyond the share.
    pub overshoot: f64,
    /// Mean of max(0, target − share): what was not delivered.
    pub under: f64,
    /// Delivered GPU time as a percentage of the ideal (target × wall), for a workload that
    /// would use more than its share if let.
    pub throughput_pct: f64,
}

/// The statistics of `shares` (fractions) against `target` (percent, if any).
pub fn stats(shares: &[f64], target: Option<f64>) -> Stats {
    let pts: Vec<f64> = shares.iter().map(|s| s * 100.0).collect();
    let n = pts.len();
    if n == 0 {
        return Stats::default();
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let achieved = mean(&pts);
    let mut st = Stats {
        windows: n,
        achieved,
        min: pts.iter().copied().fold(f64::INFINITY, f64::min),
        max: pts.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ..Stats::default()
    };
    if let Some(t) = target {
        let abs: Vec<f64> = pts.iter().map(|p| (p - t).abs()).collect();
        st.mean_abs_err = mean(&abs);
        st.p95_abs_err = percentile(&abs, 95.0);
        st.overshoot = mean(&pts.iter().map(|p| (p - t).max(0.0)).collect::<Vec<_>>());
        st.under = mean(&pts.iter().map(|p| (t - p).max(0.0)).collect::<Vec<_>>());
        st.throughput_pct = if t > 0.0 { 100.0 * achieved / t } else { 0.0 };
    }
    st
}

/// How long after `t_change` the share settles within `tol` points of `target` (percent):
/// the end of the first window (of `series`, (window end, share) sorted by end, windows
/// starting at or after the change) from which every later window is within the band.
/// `None` when it never settles, or the band holds for less than the last 300 ms.
pub fn settle_ns(series: &[(u64, f64)], width: u64, t_change: u64, target: f64, tol: f64) -> Option<u64> {
    let after: Vec<&(u64, f64)> = series.iter().filter(|(end, _)| end.saturating_sub(width) >= t_change).collect();
    let mut settled_at = None;
    for (end, share) in after.iter().rev() {
        if (share * 100.0 - target).abs() <= tol {
            settled_at = Some(*end);
        } else {
            break;
        }
    }
    // The band must hold for a while (300 ms of windows), not in one lucky last window.
    let last = after.last()?.0;
    let t = settled_at?;
    (last - t >= 300_000_000).then(|| t - t_change)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn sample(t0: u64, t1: u64, pid: u32, busy: u64) -> Sample {
        Sample { t0, t1, busy: vec![(pid, busy)] }
    }

    #[test]
    fn windows_prorate_samples_and_filter_pids() {
        let s = vec![sample(0, 10 * MS, 1, 5 * MS), sample(10 * MS, 20 * MS, 2, 10 * MS), sample(20 * MS, 30 * MS, 1, 10 * MS)];
        assert_eq!(busy_in(&s, &[1], 5 * MS, 25 * MS), 2.5e6 + 5e6);
        assert_eq!(busy_in(&s, &[1, 2], 0, 30 * MS), 25e6);
        let w = windows(&s, &[1], 0, 30 * MS, 10 * MS, 10 * MS);
        assert_eq!(w, vec![(10 * MS, 0.5), (20 * MS, 0.0), (30 * MS, 1.0)]);
    }

    #[test]
    fn errors_are_split_into_overshoot_and_under_delivery() {
        let st = stats(&[0.25, 0.35, 0.30, 0.30], Some(30.0));
        assert!((st.achieved - 30.0).abs() < 1e-9);
        assert!((st.mean_abs_err - 2.5).abs() < 1e-9);
        assert!((st.overshoot - 1.25).abs() < 1e-9 && (st.under - 1.25).abs() < 1e-9);
        assert!((st.p95_abs_err - 5.0).abs() < 1e-9);
        assert!((st.throughput_pct - 100.0).abs() < 1e-9);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
    }

    #[test]
    fn settling_needs_the_band_to_hold_to_the_end() {
        let w = 100 * MS;
        // Change at 1 s; windows end every 10 ms from 1.1 s; share 70 % until 1.3 s, then 30 %.
        let series: Vec<(u64, f64)> =
            (0..150).map(|i| 1_100 * MS + i * 10 * MS).map(|end| (end, if end < 1_300 * MS { 0.7 } else { 0.3 })).collect();
        assert_eq!(settle_ns(&series, w, 1_000 * MS, 30.0, 3.0), Some(300 * MS));
        assert_eq!(settle_ns(&series, w, 1_000 * MS, 70.0, 3.0), None, "it left the band");
        let back: Vec<(u64, f64)> = series.iter().map(|&(e, s)| (e, if e > 2_000 * MS { 0.7 } else { s })).collect();
        assert_eq!(settle_ns(&back, w, 1_000 * MS, 30.0, 3.0), None, "reverted before the end");
    }
}
