//! Reconciliation: whatever no hook saw must still count. The driver's own figure for this
//! process (NVML's per-process used memory on each device) is compared with what this
//! process's hooks charged; what the driver holds beyond that (past rounding,
//! `accounting::UNHOOKED_SLACK`) is charged as "unhooked" bytes, shown per device in
//! `vgpu ps`, `--json` and the exporter, and given back when the driver's figure comes down.
//! It catches what no call names: the driver's stack growth at launch, lazily loaded code, a
//! path no hook covers.
//!
//! When it runs: before a view answers (at most every [`VIEW_PERIOD_NS`] per device), after a
//! refusal, and on a period of [`PERIOD_NS`] driven by the allocation hooks. It needs NVML to
//! list this process by its PID: under another PID namespace (before the host-PID mapping) it
//! charges nothing, and says so once at the debug log level.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use vgpu_limiter::accounting;
use vgpu_limiter::config::MAX_DEVICES;
use vgpu_limiter::sm::{Clock, MonotonicClock};

use super::{Driver, Enforce};
use crate::log;

/// Views reconcile at most this often per device (NVML's process query is not free).
pub const VIEW_PERIOD_NS: u64 = 100_000_000;
/// Allocations reconcile at most this often per device.
pub const PERIOD_NS: u64 = 1_000_000_000;

/// When each device was last reconciled (ns, `CLOCK_MONOTONIC`).
#[derive(Default)]
pub struct Reconciled {
    last_ns: [AtomicU64; MAX_DEVICES],
}

impl Reconciled {
    /// Forgets the times (a child after `fork` has charged nothing yet).
    pub fn clear(&self) {
        for t in &self.last_ns {
            t.store(0, Relaxed);
        }
    }
}

/// Brings this process's unhooked bytes on `device` in line with the driver's figure now.
pub fn reconcile<D: Driver>(e: &Enforce<D>, device: usize) {
    let driver_says = match super::hostpid::usage(e, device as i32) {
        Some((_, Some(mine))) => mine,
        Some((_, None)) => {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Relaxed) {
                log::debug(format_args!(
                    "device {device}: NVML does not list this process by its host PID: memory no hook saw is not reconciled"
                ));
            }
            return;
        }
        None => return,
    };
    let hooks_charged = e.region.my_usage(device).saturating_sub(e.region.my_unhooked(device));
    e.region.set_unhooked(device, accounting::unhooked(driver_says, hooks_charged));
}

/// [`reconcile`], unless `device` was reconciled less than `period_ns` ago.
pub fn at_most_every<D: Driver>(e: &Enforce<D>, device: usize, period_ns: u64) {
    let Some(last) = e.shim.reconciled.last_ns.get(device) else { return };
    let now = MonotonicClock.now_ns();
    let then = last.load(Relaxed);
    if now.saturating_sub(then) < period_ns || last.compare_exchange(then, now, AcqRel, Relaxed).is_err() {
        return;
    }
    reconcile(e, device);
}
