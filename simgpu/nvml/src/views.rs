//! What NVML reports, computed from the shared machine: utilisation samples and process lists.
//!
//! Utilisation is sampled the way NVIDIA's driver samples it (NVML API Reference:
//! `nvmlUtilization_t`, <https://docs.nvidia.com/deploy/nvml-api/structnvmlUtilization__t.html>,
//! and `nvmlDeviceGetProcessUtilization` in "Device Queries",
//! <https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html>):
//!
//! * time is cut into **sample periods** of `SIMGPU_NVML_PERIOD` (1/6 s to 1 s; period `k`
//!   covers `[(k-1)·P, k·P)` of the machine's `CLOCK_MONOTONIC`, so every process of a machine
//!   sees the same periods, as every client of one driver does);
//! * a period is handed out only once it has **ended**, its value a **whole percent** of the
//!   period, its timestamp the **wall-clock** (`CLOCK_REALTIME`) microsecond at which it ended
//!   ("the CPU timestamp at which the samples were recorded");
//! * `nvmlDeviceGetProcessUtilization` returns the samples "with timestamp greater than
//!   `lastSeenTimeStamp`" (0: everything in the driver's buffer), and `NVML_ERROR_NOT_FOUND`
//!   when there are none: when no period has ended since `lastSeenTimeStamp`, or no process
//!   used the device in those that have. simgpu returns **one entry per process**, the average
//!   of its whole-percent samples over the periods returned, stamped with the newest period's
//!   end (what `nvidia-smi pmon` and nvtop show). A real driver may return one entry per process
//!   and period instead; clients must not add those up twice (vgpu's controller averages them).
//! * `nvmlDeviceGetUtilizationRates`: `gpu` is the whole percent of the last ended period
//!   during which any kernel ran.
//!
//! Not modelled: the size of the driver's sample buffer is not documented; simgpu keeps the
//! periods that ended in the last [`BUFFER_NS`] (at least one). `memUtil`, `encUtil`,
//! `decUtil` and `memory` are 0 (no memory-bandwidth, encoder or decoder model).
//!
//! `SIMGPU_NVML_PERIOD=ideal` is an experiment, not a driver: samples are exact at the instant
//! of the call for any window (per process: `[max(lastSeen, now - 1 s), now]`; device: the last
//! 500 ms), still in whole percents with wall-clock stamps.
use cuda_sys::nvml::{nvmlProcessUtilizationSample_t, nvmlUtilization_t};
use simgpu::machine::{Machine, ProcessUsage};

/// Window of `nvmlDeviceGetUtilizationRates` in the ideal mode: the last 500 ms.
pub const DEVICE_WINDOW_NS: u64 = 500_000_000;
/// Longest window of `nvmlDeviceGetProcessUtilization` in the ideal mode: the last second.
pub const PROCESS_WINDOW_NS: u64 = 1_000_000_000;
/// How far back the driver's sample buffer reaches (whole periods, at least one).
pub const BUFFER_NS: u64 = 2_000_000_000;

/// How utilisation is sampled: the period (0: ideal) and the wall clock's lead over the
/// machine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// Sample period in ns, 0 for the ideal mode.
    pub period_ns: u64,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns, read once per process.
    pub wall_offset_ns: u64,
}

impl Sampling {
    /// The wall-clock microsecond of machine time `mono_ns`.
    pub fn wall_us(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_add(self.wall_offset_ns) / 1000
    }

    /// The timestamp of period `k` (the wall-clock µs at which it ended).
    fn stamp(&self, k: u64) -> u64 {
        self.wall_us(k * self.period_ns)
    }

    /// The periods a query at `now` with `last_seen_us` is answered from: the first and last
    /// ended period with a timestamp after `last_seen_us`, within the buffer; `None` when no
    /// such period exists (NOT_FOUND). Periodic sampling only.
    pub fn periods(&self, now: u64, last_seen_us: u64) -> Option<(u64, u64)> {
        let p = self.period_ns;
        let last = now / p;
        if last == 0 || self.stamp(last) <= last_seen_us {
            return None;
        }
        let oldest = last.saturating_sub((BUFFER_NS / p).max(1) - 1).max(1);
        // The first period stamped after last_seen: estimate, then step to the exact one.
        let seen_mono = (u128::from(last_seen_us) * 1000).saturating_sub(u128::from(self.wall_offset_ns));
        let mut first = ((seen_mono / u128::from(p)) as u64).clamp(oldest, last);
        while first > oldest && self.stamp(first - 1) > last_seen_us {
            first -= 1;
        }
        while self.stamp(first) <= last_seen_us {
            first += 1;
        }
        Some((first, last))
    }
}

/// `busy` nanoseconds out of `window`, as a whole percent rounded to nearest, at most 100.
pub fn percent(busy: u64, window: u64) -> u32 {
    if window == 0 {
        return 0;
    }
    let p = (u128::from(busy) * 100 + u128::from(window) / 2) / u128::from(window);
    p.min(100) as u32
}

/// A busy span of the device's timeline: (start, end, pid), ns of machine time.
pub type Span = (u64, u64, u32);

/// Spans of `dev` overlapping `[t0, t1)`, clipped to it.
fn spans(machine: &Machine, dev: u32, t0: u64, t1: u64) -> Vec<Span> {
    let mut out = Vec::new();
    machine.busy_spans(dev, t0, t1, |s, e, p| out.push((s, e, p)));
    out
}

/// Busy ns within `[t0, t1)` of the spans (of `pid`, or of everyone).
fn busy(spans: &[Span], t0: u64, t1: u64, pid: Option<u32>) -> u64 {
    spans.iter().filter(|s| pid.is_none_or(|p| p == s.2)).map(|&(s, e, _)| e.min(t1).saturating_sub(s.max(t0))).sum()
}

/// Device utilisation at `now`: `gpu` is the whole percent of the last ended period (ideal
/// mode: of the last [`DEVICE_WINDOW_NS`]) during which any process ran a kernel.
pub fn utilization(machine: &Machine, dev: u32, sampling: Sampling, now: u64) -> nvmlUtilization_t {
    let (t0, t1) = match sampling.period_ns {
        0 => (now.saturating_sub(DEVICE_WINDOW_NS), now),
        p => ((now / p).saturating_sub(1) * p, now / p * p),
    };
    let gpu = if t1 > t0 { percent(busy(&spans(machine, dev, t0, t1), t0, t1, None), t1 - t0) } else { 0 };
    nvmlUtilization_t { gpu, memory: 0 }
}

/// Per-process samples of `dev` at `now` for a caller that last saw samples at
/// `last_seen_us` (wall-clock µs; 0 = the whole buffer), sorted by pid; empty for NOT_FOUND.
pub fn process_samples(
    machine: &Machine,
    dev: u32,
    sampling: Sampling,
    now: u64,
    last_seen_us: u64,
) -> Vec<nvmlProcessUtilizationSample_t> {
    match sampling.period_ns {
        0 => {
            let seen =
                u64::try_from((u128::from(last_seen_us) * 1000).saturating_sub(u128::from(sampling.wall_offset_ns))).unwrap_or(u64::MAX);
            let t0 = seen.max(now.saturating_sub(PROCESS_WINDOW_NS));
            ideal_samples(&spans(machine, dev, t0, now), t0, now, sampling)
        }
        p => match sampling.periods(now, last_seen_us) {
            None => Vec::new(),
            Some((first, last)) => period_samples(&spans(machine, dev, (first - 1) * p, last * p), first, last, sampling),
        },
    }
}

/// Ideal mode: each process's share of `[t0, now)` exactly, stamped `now`.
pub fn ideal_samples(spans: &[Span], t0: u64, now: u64, sampling: Sampling) -> Vec<nvmlProcessUtilizationSample_t> {
    if t0 >= now {
        return Vec::new();
    }
    let mut pids: Vec<u32> = spans.iter().map(|s| s.2).collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter().map(|pid| sample(pid, percent(busy(spans, t0, now, Some(pid)), now - t0), sampling.wall_us(now))).collect()
}

/// Periodic sampling: for each process that ran in periods `first..=last`, the average of its
/// whole-percent samples over those periods, stamped with period `last`'s end.
pub fn period_samples(spans: &[Span], first: u64, last: u64, sampling: Sampling) -> Vec<nvmlProcessUtilizationSample_t> {
    let p = sampling.period_ns;
    let (t0, t1) = ((first - 1) * p, last * p);
    let mut pids: Vec<u32> = spans.iter().filter(|&&(s, e, _)| e.min(t1) > s.max(t0)).map(|s| s.2).collect();
    pids.sort_unstable();
    pids.dedup();
    let n = last - first + 1;
    pids.into_iter()
        .map(|pid| {
            let sum: u64 = (first..=last).map(|k| u64::from(percent(busy(spans, (k - 1) * p, k * p, Some(pid)), p))).sum();
            sample(pid, ((sum + n / 2) / n) as u32, sampling.stamp(last))
        })
        .collect()
}

fn sample(pid: u32, sm: u32, stamp: u64) -> nvmlProcessUtilizationSample_t {
    nvmlProcessUtilizationSample_t { pid, timeStamp: stamp, smUtil: sm, memUtil: 0, encUtil: 0, decUtil: 0 }
}

/// Processes with a context or memory on `dev` (dead ones reaped first), sorted by pid.
pub fn processes(machine: &Machine, dev: u32) -> Vec<ProcessUsage> {
    let mut list = machine.processes(dev);
    list.sort_by_key(|p| p.pid);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn percent_rounds_and_saturates() {
        assert_eq!(percent(0, 100), 0);
        assert_eq!(percent(1, 200), 1);
        assert_eq!(percent(1, 201), 0);
        assert_eq!(percent(50, 100), 50);
        assert_eq!(percent(150, 100), 100);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    /// A 100 ms period; the wall clock 1e15 ns (about 11.6 days) ahead of the machine's.
    fn s100() -> Sampling {
        Sampling { period_ns: 100 * MS, wall_offset_ns: 1_000_000_000_000_000 }
    }

    #[test]
    fn a_period_is_handed_out_once_and_only_after_it_ends() {
        let s = s100();
        // Period 10 covers [900 ms, 1000 ms).
        assert_eq!(s.periods(999 * MS, 0), Some((1, 9)), "everything ended so far (within the buffer)");
        let t9 = s.stamp(9);
        assert_eq!(t9, s.wall_us(900 * MS));
        assert_eq!(s.periods(999 * MS, t9), None, "period 10 has not ended: NOT_FOUND");
        assert_eq!(s.periods(1000 * MS, t9), Some((10, 10)));
        assert_eq!(s.periods(1_250 * MS, t9), Some((10, 12)), "two more ended: both");
        assert_eq!(s.periods(1_250 * MS, t9 - 1), Some((9, 12)), "strictly after lastSeen");
        assert_eq!(s.periods(1_250 * MS, s.stamp(12)), None);
        // The buffer keeps 2 s: 20 periods.
        assert_eq!(s.periods(10_000 * MS, 0), Some((81, 100)));
        assert_eq!(s.periods(10_000 * MS, s.stamp(3)), Some((81, 100)), "older than the buffer: what the buffer has");
        // A caller passing a timestamp on another clock (small: monotonic µs) gets the buffer.
        assert_eq!(s.periods(10_000 * MS, 5_000_000), Some((81, 100)));
    }

    #[test]
    fn samples_are_whole_percent_averages_per_process() {
        let s = s100();
        // pid 7: 30 ms in period 1, 10 ms in period 2; pid 8: 100 ms across periods 2 and 3,
        // 0.4 ms in period 4 (rounds to 0 %, still listed: it ran).
        let spans = [(0, 30 * MS, 7), (110 * MS, 120 * MS, 7), (150 * MS, 250 * MS, 8), (300 * MS, 300 * MS + 400_000, 8)];
        let got = period_samples(&spans, 1, 2, s);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].pid, got[0].smUtil, got[0].timeStamp), (7, 20, s.stamp(2)), "(30 % + 10 %) / 2");
        assert_eq!((got[1].pid, got[1].smUtil), (8, 25), "(0 % + 50 %) / 2");
        let got = period_samples(&spans, 3, 3, s);
        assert_eq!((got[0].pid, got[0].smUtil), (8, 50));
        let got = period_samples(&spans, 4, 4, s);
        assert_eq!((got[0].pid, got[0].smUtil), (8, 0));
        assert!(period_samples(&[], 5, 6, s).is_empty(), "nobody ran: NOT_FOUND");
    }

    #[test]
    fn the_ideal_mode_answers_exactly_for_any_window() {
        let s = Sampling { period_ns: 0, ..s100() };
        let spans = [(0, 30 * MS, 7), (50 * MS, 60 * MS, 9)];
        let got = ideal_samples(&spans, 0, 40 * MS, s);
        assert_eq!((got[0].pid, got[0].smUtil, got[0].timeStamp), (7, 75, s.wall_us(40 * MS)));
        assert!(ideal_samples(&spans, 40 * MS, 40 * MS, s).is_empty());
    }
}
