//! Where the busy time comes from, sampled by a thread while a run goes on.
//!
//! * [`Source::Timeline`] (simgpu): the machine's shared device timeline, read with
//!   `Machine::busy_by_process` in 10 ms slots, each read once it is complete (every launch
//!   that overlaps a slot was queued before the slot ended). This is ground truth: the
//!   simulated device did exactly this work, whoever launched it. Reading as the run goes keeps
//!   well inside the ring of recent intervals the machine remembers.
//! * [`Source::Nvml`] (a real GPU, or simgpu's NVML as a check of this path): every 100 ms,
//!   `nvmlDeviceGetProcessUtilization` since the previous reading's newest timestamp; a
//!   process's `smUtil` (averaged over the samples returned for it) times the time the read
//!   covers (from the previous newest timestamp to this one, NVML's wall-clock stamps mapped
//!   onto `CLOCK_MONOTONIC`) is its busy time; `NOT_FOUND` (no sample period ended) adds
//!   nothing. NVML's per-process figures are whole percents over the driver's own sample
//!   period (1/6 s to 1 s), so a 100 ms window is only as good as that: read the per-window
//!   columns as indicative and the run means as the measurement.
#![allow(unsafe_code)] // reading NVML through its C interface
use std::ffi::c_uint;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cuda_sys::nvml::{nvmlDevice_t, nvmlProcessUtilizationSample_t, nvmlReturn_t, pfn};
use simgpu::machine::Machine;

use crate::metrics::Sample;

/// Length of one timeline slot.
pub const SLOT_NS: u64 = 10_000_000;
/// How long after its end a slot is read (launches that overlap it are queued by then).
const LAG_NS: u64 = 2_000_000;
/// NVML polling period.
const NVML_PERIOD: Duration = Duration::from_millis(100);

/// NVML entry points the sampler needs, from a loaded `libnvidia-ml.so.1`.
pub struct Nvml {
    _lib: libloading::Library,
    device: nvmlDevice_t,
    util: pfn::nvmlDeviceGetProcessUtilization,
}

// SAFETY: NVML is thread-safe; the handle is an opaque pointer NVML owns for the library's life.
unsafe impl Send for Nvml {}
// SAFETY: as above.
unsafe impl Sync for Nvml {}

impl Nvml {
    /// Loads NVML from `path` (a file name is searched for as `dlopen` does), initialises it and
    /// takes device 0.
    pub fn load(path: &str) -> Result<Nvml, String> {
        // SAFETY: loading NVML runs its initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("load {path}: {e}"))?;
        // SAFETY: the symbols have these C signatures (cuda-sys's declarations of nvml.h).
        let (init, handle, util) = unsafe {
            let init: pfn::nvmlInit_v2 = *lib.get(b"nvmlInit_v2\0").map_err(|e| e.to_string())?;
            let handle: pfn::nvmlDeviceGetHandleByIndex_v2 = *lib.get(b"nvmlDeviceGetHandleByIndex_v2\0").map_err(|e| e.to_string())?;
            let util: pfn::nvmlDeviceGetProcessUtilization = *lib.get(b"nvmlDeviceGetProcessUtilization\0").map_err(|e| e.to_string())?;
            (init, handle, util)
        };
        // SAFETY: no arguments.
        let rc = unsafe { init() };
        if rc != nvmlReturn_t::NVML_SUCCESS {
            return Err(format!("nvmlInit_v2: {rc:?}"));
        }
        let mut device: nvmlDevice_t = std::ptr::null_mut();
        // SAFETY: a valid out-pointer.
        let rc = unsafe { handle(0, &mut device) };
        if rc != nvmlReturn_t::NVML_SUCCESS {
            return Err(format!("nvmlDeviceGetHandleByIndex_v2(0): {rc:?}"));
        }
        Ok(Nvml { _lib: lib, device, util })
    }

    /// Per-process `smUtil` (percent, averaged over the samples returned for each process)
    /// since `last_seen` (NVML's own timestamps), and the newest timestamp seen; `None` when
    /// NVML had nothing newer.
    fn read(&self, last_seen: u64) -> Option<(Vec<(u32, f64)>, u64)> {
        let mut buf = [nvmlProcessUtilizationSample_t::default(); 256];
        let mut n = buf.len() as c_uint;
        // SAFETY: a buffer of `n` samples and a valid count pointer.
        let rc = unsafe { (self.util)(self.device, buf.as_mut_ptr(), &mut n, last_seen) };
        if rc != nvmlReturn_t::NVML_SUCCESS {
            return None;
        }
        let got = &buf[..(n as usize).min(buf.len())];
        let mut per: Vec<(u32, f64, u32)> = Vec::new();
        for s in got {
            match per.iter_mut().find(|(p, _, _)| *p == s.pid) {
                Some(e) => {
                    e.1 += f64::from(s.smUtil);
                    e.2 += 1;
                }
                None => per.push((s.pid, f64::from(s.smUtil), 1)),
            }
        }
        let newest = got.iter().map(|s| s.timeStamp).max().unwrap_or(last_seen).max(last_seen);
        Some((per.into_iter().map(|(p, sum, k)| (p, sum / f64::from(k))).collect(), newest))
    }
}

/// Where busy time is read from.
#[derive(Clone)]
pub enum Source {
    /// simgpu's device timeline.
    Timeline(Arc<Machine>),
    /// NVML per-process utilisation.
    Nvml(Arc<Nvml>),
}

/// A sampling thread and what it has read so far.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop_at: Arc<AtomicU64>,
    first_busy: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling device 0 from `start` (ns).
    pub fn start(source: Source, start: u64) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop_at = Arc::new(AtomicU64::new(u64::MAX));
        let first_busy = Arc::new(AtomicU64::new(0));
        let (s, stop, first) = (samples.clone(), stop_at.clone(), first_busy.clone());
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || match source {
                Source::Timeline(m) => timeline_loop(&m, start, &s, &stop, &first),
                Source::Nvml(n) => nvml_loop(&n, start, &s, &stop, &first),
            })
            .expect("spawn the sampler thread");
        Sampler { samples, stop_at, first_busy, thread: Some(thread) }
    }

    /// When the device was first seen busy (ns), or `None` yet.
    pub fn first_busy(&self) -> Option<u64> {
        Some(self.first_busy.load(Acquire)).filter(|t| *t > 0)
    }

    /// Samples up to `end` (ns), then stops; returns every sample.
    pub fn finish(mut self, end: u64) -> Vec<Sample> {
        self.stop_at.store(end, Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn note_first(first: &AtomicU64, sample: &Sample) {
    if first.load(Relaxed) == 0 && sample.busy.iter().any(|(_, b)| *b > 0) {
        first.store(sample.t0, Release);
    }
}

fn timeline_loop(m: &Machine, start: u64, out: &Mutex<Vec<Sample>>, stop_at: &AtomicU64, first: &AtomicU64) {
    let mut next = start;
    loop {
        let now = simgpu::now_ns();
        let stop = stop_at.load(Acquire);
        while next + SLOT_NS + LAG_NS <= now && next < stop {
            let s = Sample { t0: next, t1: next + SLOT_NS, busy: m.busy_by_process(0, next, next + SLOT_NS) };
            note_first(first, &s);
            out.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            next += SLOT_NS;
        }
        if next >= stop {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nvml_loop(n: &Nvml, start: u64, out: &Mutex<Vec<Sample>>, stop_at: &AtomicU64, first: &AtomicU64) {
    // Maps NVML's wall-clock stamps (µs) onto the harness's clock.
    let offset = simgpu::wall_offset_ns() / 1000;
    // The stamp (µs of NVML's clock) the next read starts from: the start of the run.
    let mut last_seen = start / 1000 + offset;
    loop {
        std::thread::sleep(NVML_PERIOD);
        let now = simgpu::now_ns();
        if let Some((util, newest)) = n.read(last_seen) {
            let (t0, t1) = (last_seen.saturating_sub(offset) * 1000, newest.saturating_sub(offset) * 1000);
            last_seen = newest;
            if t1 > t0 {
                let span = (t1 - t0) as f64;
                let s = Sample { t0, t1, busy: util.into_iter().map(|(p, pct)| (p, (pct / 100.0 * span) as u64)).collect() };
                note_first(first, &s);
                out.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            }
        }
        // Samples are handed out once their period ends (up to 1 s later): wait for the one
        // that covers the end, within reason.
        let stop = stop_at.load(Acquire);
        if last_seen.saturating_sub(offset) * 1000 >= stop || now >= stop.saturating_add(1_500_000_000) {
            return;
        }
    }
}
