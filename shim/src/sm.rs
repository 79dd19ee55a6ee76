//! The SM share in this process: which devices have a limit, the cost model, which streams
//! are capturing, and the controller thread. The thread exists only when an SM limit is set
//! (and the policy is not `disable`); without one, nothing here runs and the launch hooks
//! forward at once.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

use cuda_sys::nvml::{nvmlProcessInfo_t, nvmlProcessUtilizationSample_t, nvmlReturn_t};
use vgpu_limiter::config::{Config, MAX_DEVICES, UtilizationPolicy};
use vgpu_limiter::region::Region;
use vgpu_limiter::sm::{Bucket, Clock, CostModel, MonotonicClock, next_scale};

use crate::hooks::context::nvml_device;
use crate::log;
use crate::table::real;

/// Controller period.
const TICK: Duration = Duration::from_millis(100);
/// How long a controller's lease outlives its last tick.
const LEASE_NS: u64 = 500_000_000;
const CAPTURE_SLOTS: usize = 64;

/// This process's SM state.
pub struct SmState {
    limits: [Option<u8>; MAX_DEVICES],
    policy: UtilizationPolicy,
    any: bool,
    /// Learned GPU time per kernel shape and graph (built on the first limited launch).
    model: std::sync::OnceLock<CostModel>,
    configured: [AtomicBool; MAX_DEVICES],
    thread: AtomicBool,
    capturing: [AtomicU64; CAPTURE_SLOTS],
    captures: AtomicU32,
    /// 0 unknown, 1 the process sees one device, 2 several.
    devices: std::sync::atomic::AtomicU8,
}

impl SmState {
    /// From the configuration: limits per device, unless the policy disables them.
    pub fn new(config: &Config) -> SmState {
        let policy = config.policy;
        let limits: [Option<u8>; MAX_DEVICES] =
            std::array::from_fn(|d| if policy == UtilizationPolicy::Disable { None } else { config.sm_limit(d) });
        SmState {
            any: limits.iter().any(Option::is_some),
            limits,
            policy,
            model: std::sync::OnceLock::new(),
            configured: std::array::from_fn(|_| AtomicBool::new(false)),
            thread: AtomicBool::new(false),
            capturing: std::array::from_fn(|_| AtomicU64::new(0)),
            captures: AtomicU32::new(0),
            devices: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The cost model.
    pub fn model(&self) -> &CostModel {
        self.model.get_or_init(CostModel::default)
    }

    /// The device a launch of this thread goes to: with one device visible (a container's
    /// usual case) it is 0 without asking the driver on every launch.
    pub fn launch_device(&self) -> Result<usize, cuda_sys::driver::CUresult> {
        match self.devices.load(Relaxed) {
            1 => return Ok(0),
            2 => return crate::hooks::current_device(),
            _ => {}
        }
        let mut n = 0;
        // SAFETY: a valid out-pointer.
        let one = real::cuDeviceGetCount().is_some_and(|f| unsafe { f(&mut n) } == cuda_sys::driver::CUresult::CUDA_SUCCESS && n == 1);
        self.devices.store(if one { 1 } else { 2 }, Relaxed);
        crate::hooks::current_device()
    }

    /// In a child after `fork`: no controller thread exists and the buckets need configuring
    /// again from this process.
    pub fn after_fork(&self) {
        self.thread.store(false, Release);
        for c in &self.configured {
            c.store(false, Release);
        }
    }

    /// Whether any device has a limit.
    pub fn limited(&self) -> bool {
        self.any
    }

    /// The limit of `device`, percent.
    pub fn limit(&self, device: usize) -> Option<u8> {
        self.limits.get(device).copied().flatten()
    }

    /// Whether `stream` is being captured (its launches are recorded, not run).
    pub fn capturing(&self, stream: *mut cuda_sys::driver::CUstream_st) -> bool {
        self.captures.load(Acquire) > 0 && self.capturing.iter().any(|s| s.load(Acquire) == stream as u64 + 1)
    }

    /// Marks `stream` as capturing or not.
    pub fn set_capturing(&self, stream: *mut cuda_sys::driver::CUstream_st, on: bool) {
        let key = stream as u64 + 1;
        let (from, to) = if on { (0, key) } else { (key, 0) };
        if self.capturing.iter().any(|s| s.compare_exchange(from, to, AcqRel, Acquire).is_ok()) {
            if on {
                self.captures.fetch_add(1, AcqRel);
            } else {
                self.captures.fetch_sub(1, AcqRel);
            }
        }
    }

    /// First throttled launch on `device`: writes the limit into the container's bucket and
    /// starts the controller thread (once per process).
    pub fn start(&self, shim: &'static crate::state::Shim, region: &Region, device: usize, limit: u8) {
        if self.configured[device].load(Acquire) {
            return; // the launch hot path: one load
        }
        if !self.configured[device].swap(true, AcqRel) {
            let alone = region.processes().iter().filter(|p| p.alive).count() <= 1;
            Bucket::new(region.sm_bucket(device)).configure(limit, alone);
        }
        if !self.thread.swap(true, AcqRel) {
            let spawned = std::thread::Builder::new().name("vgpu-sm".into()).spawn(move || controller(shim));
            if let Err(e) = spawned {
                log::error(format_args!("cannot start the SM controller: {e}; estimates alone throttle launches"));
            }
        }
    }
}

/// Per-device memory of the controller between ticks.
#[derive(Default, Clone, Copy)]
struct Tick {
    /// NVML's timestamp of the newest sample seen (its own time base); 0 before the first.
    last_seen_us: u64,
    throttled_ns: u64,
    /// The container's share, smoothed over about a second (a big kernel makes single
    /// 100 ms windows all or nothing).
    smoothed: f64,
    /// The limit the last tick worked towards (permille).
    limit: u64,
}

/// The controller: every tick, for each limited device whose lease it holds, measures the
/// container's share from NVML's per-process utilisation and corrects the bucket's factor.
fn controller(shim: &'static crate::state::Shim) {
    let clock = MonotonicClock;
    let mut ticks = [Tick::default(); MAX_DEVICES];
    loop {
        std::thread::sleep(TICK);
        let Some(region) = shim.region() else { continue };
        let (slot, generation) = region.me();
        let me = (generation << 12) | slot as u64;
        for (d, tick) in ticks.iter_mut().enumerate() {
            if shim.sm.limit(d).is_none() {
                continue;
            }
            let bucket = Bucket::new(region.sm_bucket(d));
            if !shim.sm.configured[d].load(Acquire) || !bucket.lead(me, clock.now_ns(), LEASE_NS) {
                continue;
            }
            let pids: Vec<u32> = region.processes().iter().filter(|p| p.alive).map(|p| p.pid).collect();
            let first = tick.last_seen_us == 0;
            let Some((achieved, last_seen, others)) = measure(d as i32, &pids, tick.last_seen_us) else {
                continue;
            };
            tick.last_seen_us = last_seen.max(1);
            if first {
                // The first reading covers time before this controller ran: only a baseline.
                tick.throttled_ns = bucket.throttled_ns();
                continue;
            }
            let throttled_total = bucket.throttled_ns();
            let throttled = throttled_total > tick.throttled_ns;
            tick.throttled_ns = throttled_total;
            bucket.set_enforcing(match shim.sm.policy {
                UtilizationPolicy::Force => true,
                UtilizationPolicy::Default => others,
                UtilizationPolicy::Disable => false,
            });
            // The bucket's limit, not this process's environment: an operator may have changed it.
            let Some(limit) = bucket.limit_permille() else { continue };
            let target = limit as f64 / 1000.0;
            if tick.limit != limit {
                // A new target (an operator's change): what was measured for the old one says
                // nothing about the estimates' error under the new one.
                tick.limit = limit;
                tick.smoothed = 0.0;
                tick.throttled_ns = bucket.throttled_ns();
                continue;
            }
            // Waiting that was only paying off debt says nothing about wanting more.
            let throttled = throttled && bucket.ahead(clock.now_ns()) < 4 * vgpu_limiter::sm::BURST_NS;
            bucket.set_achieved_permille((achieved * 1000.0) as u64);
            tick.smoothed = if tick.smoothed == 0.0 { achieved } else { 0.5 * tick.smoothed + 0.5 * achieved };
            if bucket.enforcing() {
                bucket.set_scale(next_scale(bucket.scale(), target, tick.smoothed, throttled));
            }
            log::debug(format_args!(
                "device {d}: share {:.1}% of {:.1}%, factor {:.3}, throttled {throttled}, enforcing {}",
                achieved * 100.0,
                target * 100.0,
                bucket.scale(),
                bucket.enforcing()
            ));
        }
    }
}

/// The container's share of device `dev` since `last_seen_us` (fraction), the newest sample's
/// timestamp, and whether processes outside the container use the device.
fn measure(dev: i32, pids: &[u32], last_seen_us: u64) -> Option<(f64, u64, bool)> {
    let h = nvml_device(dev)?;
    let util = real::nvmlDeviceGetProcessUtilization()?;
    let mut samples = [nvmlProcessUtilizationSample_t::default(); 64];
    let mut n = samples.len() as u32;
    // SAFETY: a buffer of `n` samples and a valid count pointer.
    let rc = unsafe { util(h, samples.as_mut_ptr(), &mut n, last_seen_us) };
    let (achieved, newest) = match rc {
        nvmlReturn_t::NVML_SUCCESS => {
            let got = &samples[..(n as usize).min(samples.len())];
            let ours: u32 = got.iter().filter(|s| pids.contains(&s.pid)).map(|s| s.smUtil).sum();
            (f64::from(ours.min(100)) / 100.0, got.iter().map(|s| s.timeStamp).max().unwrap_or(last_seen_us))
        }
        nvmlReturn_t::NVML_ERROR_NOT_FOUND => (0.0, last_seen_us),
        _ => return None,
    };
    let procs = real::nvmlDeviceGetComputeRunningProcesses_v3()?;
    let mut infos = [nvmlProcessInfo_t::default(); 64];
    let mut count = infos.len() as u32;
    // SAFETY: a buffer of `count` entries and a valid count pointer.
    let others = unsafe { procs(h, &mut count, infos.as_mut_ptr()) } == nvmlReturn_t::NVML_SUCCESS
        && infos[..(count as usize).min(infos.len())].iter().any(|p| !pids.contains(&p.pid));
    Some((achieved, newest, others))
}
