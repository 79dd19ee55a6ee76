//! This process's host PID, the one NVML knows it by (see `vgpu_limiter::hostpid`): found once,
//! at the first context creation, and kept in the process's region slot, where the SM
//! controller, the context charge, reconciliation and the tenant's NVML views read it.
//!
//! In the host's own PID namespace it is `getpid()`. Elsewhere it is read from NVML's process
//! lists around the creation, with probes when starts collide. A process that cannot find it
//! says so once and goes on: its memory figures fall back to what its hooks charged, and its
//! NVML views and the SM controller's measurement leave it out.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use vgpu_limiter::config::MAX_DEVICES;

use cuda_sys::driver::CUcontext;
use vgpu_limiter::accounting::NvmlUsage;
use vgpu_limiter::hostpid::{self, Found, Snapshot};

use super::{Driver, Enforce, device_index};
use crate::log;

/// The process's discovery state. Discovery compares NVML's lists around a context creation,
/// which says who this process is only if it had no context on that device before: so it runs
/// at most once per device (the first creation there, successful or not), one creation at a
/// time (a second thread's creation would find this process already listed, and could take a
/// neighbour that started meanwhile for itself).
#[derive(Default)]
pub struct Discovery {
    lock: parking_lot::Mutex<()>,
    tried: [AtomicBool; MAX_DEVICES],
}

impl Discovery {
    /// Forgets what was tried: only in a child after `fork` (a new process).
    pub fn reset(&self) {
        if self.lock.is_locked() {
            // SAFETY: the holder is a parent thread that does not exist in this child.
            unsafe { self.lock.force_unlock() };
        }
        for t in &self.tried {
            t.store(false, Relaxed);
        }
    }
}

/// Runs a context creation on device `d` (`create`: NVML's list before, the driver call, NVML's
/// list after) with discovery's lock held when this process has yet to find its host PID, so
/// creations that may discover never overlap. Returns what `create` returned and whether this
/// creation may discover (the first on `d`).
pub fn creating<D: Driver, T>(e: &Enforce<D>, d: usize, create: impl FnOnce() -> T) -> (T, bool) {
    if known(e).is_some() {
        return (create(), false);
    }
    let _one_at_a_time = e.shim.discovery.lock.lock();
    let first_here = !e.shim.discovery.tried[d].swap(true, Relaxed);
    (create(), first_here && known(e).is_none())
}

/// The host PID this process found, if it has.
pub fn known<D: Driver>(e: &Enforce<D>) -> Option<u32> {
    Some(e.region.my_host_pid()).filter(|p| *p != 0)
}

/// The host PID without looking at NVML, if this process is in the host's PID namespace.
pub fn without_nvml<D: Driver>(e: &Enforce<D>) -> Option<u32> {
    if let Some(pid) = known(e) {
        return Some(pid);
    }
    (e.driver.pid_namespace() == Some(hostpid::INIT_PID_NAMESPACE_INODE)).then(|| {
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() } as u32;
        e.region.claim_host_pid(pid);
        pid
    })
}

/// NVML's figures for device `dev` now: (all processes, this process if it is listed).
pub fn usage<D: Driver>(e: &Enforce<D>, dev: c_int) -> Option<NvmlUsage> {
    hostpid::usage(e.driver.nvml_list(dev).as_ref(), known(e))
}

/// After a context creation on `dev` (`ctx`, the new context, for probes): finds this
/// process's host PID from NVML's lists `before` and `after` the creation, records it and
/// returns it; `None`, said once, when it cannot. `listing` is what reading the two lists
/// took (reported with the probes' time at debug level: the cost of discovery).
pub fn discover<D: Driver>(
    e: &Enforce<D>,
    dev: c_int,
    ctx: Option<CUcontext>,
    before: Option<&Snapshot>,
    after: Option<&Snapshot>,
    listing: std::time::Duration,
) -> Option<u32> {
    let started = std::time::Instant::now();
    let (Some((_, before)), Some((_, after))) = (before, after) else {
        return gave_up("NVML cannot be read");
    };
    let mut found = hostpid::after_creation(before, after, &e.region.claimed_host_pids());
    let mut round = 0;
    while let Found::Among(candidates) = &found {
        if round == hostpid::PROBE_ROUNDS {
            return gave_up(&format!("{} processes started with it and probes could not tell them apart", candidates.len()));
        }
        round += 1;
        let Some(ctx) = ctx else {
            return gave_up("several processes started with it and there is no context to probe in");
        };
        found = match probe(e, dev, ctx, candidates, round) {
            Some(f) => f,
            None => return gave_up("a probe allocation failed"),
        };
    }
    match found {
        Found::Pid(pid) => {
            if !e.region.claim_host_pid(pid) {
                return known(e); // found meanwhile (cannot happen under discovery's lock)
            }
            let spent = listing + started.elapsed();
            log::debug(format_args!("host PID {pid} found in {} us ({round} probe(s))", spent.as_micros()));
            Some(pid)
        }
        _ => gave_up("NVML does not list it after its context creation"),
    }
}

/// One probe: allocates a size of this process's choosing in `ctx` and sees which of
/// `candidates` grew by it. `None` when the quota has no room or the allocation fails.
fn probe<D: Driver>(e: &Enforce<D>, dev: c_int, ctx: CUcontext, candidates: &[u32], round: u32) -> Option<Found> {
    let d = device_index(dev).ok()?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos() as u64);
    // SAFETY: getpid cannot fail.
    let seed = nanos ^ (u64::from(unsafe { libc::getpid() } as u32) << 32) ^ u64::from(round);
    let bytes = hostpid::probe_size(seed);
    // The probe is charged while it lives, like any allocation: a full quota has no room for
    // it (looked at first, so that a probe that does not fit is not counted as a refusal).
    if let (_, free, Some(_)) = e.region.usage(d)
        && free < bytes
    {
        return None;
    }
    let reservation = e.region.reserve(d, bytes).ok()?;
    let (_, before) = e.driver.nvml_list(dev)?;
    let ptr = e.driver.probe_alloc(ctx, bytes)?;
    let after = e.driver.nvml_list(dev).map(|(_, l)| l);
    e.driver.probe_free(ctx, ptr);
    drop(reservation);
    Some(hostpid::after_probe(candidates, &before, &after?, bytes))
}

fn gave_up(why: &str) -> Option<u32> {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Relaxed) {
        log::warn(format_args!(
            "cannot tell this process's host PID ({why}): NVML views and the SM controller's measurement leave it out, and its memory figures are its hooks' charges"
        ));
    }
    None
}
