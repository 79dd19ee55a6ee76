//! The SM share in this process: which devices have a limit, the cost model, which streams
//! are capturing, and the controller thread. The thread exists only when an SM limit is set
//! (and the policy is not `disable`); without one, nothing here runs and the launch hooks
//! forward at once.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

use cuda_sys::nvml::nvmlProcessInfo_t;
use vgpu_limiter::config::{Config, MAX_DEVICES, UtilizationPolicy};
use vgpu_limiter::region::Region;
use vgpu_limiter::sm::controller::{Controller, Reading, UtilEntry, container_share};
use vgpu_limiter::sm::tsc::{Calibrator, LAUNCH_CLOCK};
use vgpu_limiter::sm::{Bucket, Clock, CostModel, MonotonicClock};

use crate::hooks::context::nvml_device;
use crate::hooks::driver::{read_list, read_samples};
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
    pub fn launch_device<D: crate::hooks::Driver>(&self, driver: &D) -> Result<usize, cuda_sys::driver::CUresult> {
        let current = || crate::hooks::device_index(driver.ctx_device()?);
        match self.devices.load(Relaxed) {
            1 => return Ok(0),
            2 => return current(),
            _ => {}
        }
        let one = driver.device_count() == Some(1);
        self.devices.store(if one { 1 } else { 2 }, Relaxed);
        current()
    }

    /// In a child after `fork`: no controller thread exists and the buckets need configuring
    /// again from this process.
    pub fn after_fork(&self) {
        self.thread.store(false, Release);
        for c in &self.configured {
            c.store(false, Release);
        }
    }

    /// Whether the process sees one device (known after its first launch).
    pub fn single_device(&self) -> bool {
        self.devices.load(Relaxed) == 1
    }

    /// Whether `device`'s bucket was configured and the controller started ([`SmState::start`]).
    pub fn started(&self, device: usize) -> bool {
        self.configured.get(device).is_some_and(|c| c.load(Acquire)) && self.thread.load(Acquire)
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

    /// Whether any stream of this process is being captured (in the global capture mode,
    /// event queries and records from other threads would break the capture).
    pub fn any_capture(&self) -> bool {
        self.captures.load(Acquire) > 0
    }

    /// Marks `stream` as capturing or not: whether that changed anything.
    pub fn set_capturing(&self, stream: *mut cuda_sys::driver::CUstream_st, on: bool) -> bool {
        let key = stream as u64 + 1;
        let (from, to) = if on { (0, key) } else { (key, 0) };
        let changed = self.capturing.iter().any(|s| s.compare_exchange(from, to, AcqRel, Acquire).is_ok());
        if changed {
            if on {
                self.captures.fetch_add(1, AcqRel);
            } else {
                self.captures.fetch_sub(1, AcqRel);
            }
        }
        changed
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

/// The controller: every tick, for each limited device whose lease it holds, reads NVML's
/// per-process utilisation and lets the limiter's [`Controller`] decide the bucket's factor.
/// What to change lives in `vgpu_limiter::sm::controller`; this loop only reads and writes.
fn controller(shim: &'static crate::state::Shim) {
    let clock = MonotonicClock;
    let mut controllers: [Controller; MAX_DEVICES] = std::array::from_fn(|_| Controller::default());
    let mut last_tick = clock.now_ns();
    // The launch path's clock is calibrated here, renewed every tick (`vgpu_limiter::sm::tsc`).
    let mut calibrator = Calibrator::default();
    calibrator.tick(&LAUNCH_CLOCK);
    loop {
        std::thread::sleep(TICK);
        calibrator.tick(&LAUNCH_CLOCK);
        // A thread stalled past its lease may have lost and regained leadership unseen: what
        // it knew is stale.
        let now = clock.now_ns();
        if now.saturating_sub(last_tick) > LEASE_NS {
            controllers.iter_mut().for_each(|c| *c = Controller::default());
        }
        last_tick = now;
        let Some(region) = shim.region() else { continue };
        let (slot, generation) = region.me();
        let me = (generation << 12) | slot as u64;
        for (d, ctl) in controllers.iter_mut().enumerate() {
            if shim.sm.limit(d).is_none() {
                continue;
            }
            let bucket = Bucket::new(region.sm_bucket(d));
            if !shim.sm.configured[d].load(Acquire) || !bucket.lead(me, clock.now_ns(), LEASE_NS) {
                // Another process leads: whatever this one knew is stale when it leads again.
                *ctl = Controller::default();
                continue;
            }
            // NVML knows the container's processes by their host PIDs; one that has not found
            // its own (see hooks::hostpid) cannot be measured, and with none found the share is
            // not measured at all: the bucket then holds its factor (open loop) rather than
            // reading a share of 0 and drifting.
            let pids = vgpu_limiter::hostpid::host_pids(&region.processes());
            if pids.is_empty() {
                continue;
            }
            let since = ctl.read_since(clock.now_ns(), wall_us());
            let Some((reading, others)) = measure(d as i32, &pids, since) else { continue };
            let decision = ctl.tick(bucket, clock.now_ns(), reading, shim.sm.policy, others);
            if let Reading::Samples(s) = reading {
                log::debug(format_args!(
                    "device {d}: share {:.1}% over {} ms, target {:.1}%, factor {:.3}, enforcing {}",
                    s.share * 100.0,
                    s.covered_us / 1000,
                    bucket.limit_permille().unwrap_or(0) as f64 / 10.0,
                    bucket.scale(),
                    decision.enforce
                ));
            }
        }
    }
}

/// Now on NVML's clock: its stamps are the wall clock's microseconds (0 if before 1970).
fn wall_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Reads NVML for device `dev`: the container's share since `last_seen_us` (processes `pids`),
/// and whether NVML lists processes outside the container on the device.
fn measure(dev: i32, pids: &[u32], last_seen_us: u64) -> Option<(Reading, bool)> {
    let h = nvml_device(dev)?;
    real::nvmlDeviceGetProcessUtilization()?;
    let reading = match read_samples(h, last_seen_us) {
        Ok(samples) => {
            let entries: Vec<UtilEntry> =
                samples.iter().map(|s| UtilEntry { pid: s.pid, sm_util: s.smUtil, stamp_us: s.timeStamp }).collect();
            container_share(&entries, pids, last_seen_us).map_or(Reading::NoNews, Reading::Samples)
        }
        Err(_) => Reading::Failed,
    };
    let listed = read_list(real::nvmlDeviceGetComputeRunningProcesses_v3()?, h)
        .is_ok_and(|procs: Vec<nvmlProcessInfo_t>| procs.iter().any(|p| !pids.contains(&p.pid)));
    Some((reading, listed))
}
