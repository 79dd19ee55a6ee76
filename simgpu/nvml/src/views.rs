//! What NVML reports, computed from the shared machine: utilisation windows and process lists.
use cuda_sys::nvml::{nvmlProcessUtilizationSample_t, nvmlUtilization_t};
use simgpu::machine::{Machine, ProcessUsage};

/// Window of `nvmlDeviceGetUtilizationRates`: the last 500 ms.
pub const DEVICE_WINDOW_NS: u64 = 500_000_000;
/// Longest window of `nvmlDeviceGetProcessUtilization`: the last second.
pub const PROCESS_WINDOW_NS: u64 = 1_000_000_000;

/// `busy` nanoseconds out of `window`, as a whole percent rounded to nearest, at most 100.
pub fn percent(busy: u64, window: u64) -> u32 {
    if window == 0 {
        return 0;
    }
    let p = (u128::from(busy) * 100 + u128::from(window) / 2) / u128::from(window);
    p.min(100) as u32
}

/// Device utilisation at `now`: `gpu` is the percent of the last [`DEVICE_WINDOW_NS`] the
/// device's timeline was busy (any process); `memory` is 0, because simgpu does not model
/// memory bandwidth.
pub fn utilization(machine: &Machine, dev: u32, now: u64) -> nvmlUtilization_t {
    let t0 = now.saturating_sub(DEVICE_WINDOW_NS);
    nvmlUtilization_t { gpu: percent(machine.busy_between(dev, t0, now, None), now - t0), memory: 0 }
}

/// Per-process samples at `now` for a caller that last saw samples at `last_seen_us`
/// (microseconds of `CLOCK_MONOTONIC`, 0 = everything): one per process that kept the device
/// busy within `[max(last_seen, now - 1 s), now]`, with its share of that window as `smUtil`
/// and `now` as the timestamp. Sorted by pid.
pub fn process_samples(machine: &Machine, dev: u32, now: u64, last_seen_us: u64) -> Vec<nvmlProcessUtilizationSample_t> {
    let t0 = last_seen_us.saturating_mul(1000).max(now.saturating_sub(PROCESS_WINDOW_NS));
    if t0 >= now {
        return Vec::new();
    }
    let mut samples: Vec<_> = machine
        .busy_by_process(dev, t0, now)
        .into_iter()
        .filter(|&(_, busy)| busy > 0)
        .map(|(pid, busy)| nvmlProcessUtilizationSample_t {
            pid,
            timeStamp: now / 1000,
            smUtil: percent(busy, now - t0),
            memUtil: 0,
            encUtil: 0,
            decUtil: 0,
        })
        .collect();
    samples.sort_by_key(|s| s.pid);
    samples
}

/// Processes with a context or memory on `dev` (dead ones reaped first), sorted by pid.
pub fn processes(machine: &Machine, dev: u32) -> Vec<ProcessUsage> {
    let mut list = machine.processes(dev);
    list.sort_by_key(|p| p.pid);
    list
}

#[cfg(test)]
mod tests {
    use super::percent;

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
}
