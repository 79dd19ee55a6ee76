//! Helpers shared by the multi-process tests (`race`, `crash`, `storm`).
//!
//! * Workers are **real processes**: the test binary re-executes itself
//!   (`current_exe --exact worker --nocapture`) with [`ROLE`] in its environment; the `worker`
//!   test of each file returns at once when that variable is absent.
//! * `Ctl`, `Workers`, clocks and the PRNG come from `vgpu-test-support` (shared with the
//!   benches).
//! * [`RawView`] maps a region file read-only and reads its words directly, so that the tests
//!   check the bytes in the file, not only what the `Region` API says about them.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::*;

use vgpu_limiter::region::layout::{self, DeviceLedger, Header, Slot};
pub use vgpu_test_support::*;

/// Environment variable naming a worker's role; absent in the parent.
pub const ROLE: &str = "VGPU_WORKER_ROLE";

/// The role this process was started with, if it is a worker.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// A worker's parameter `VGPU_P_<name>`, parsed.
pub fn param<T: std::str::FromStr>(name: &str) -> T {
    let v = std::env::var(format!("VGPU_P_{name}")).unwrap_or_else(|_| panic!("worker parameter {name} missing"));
    v.parse().unwrap_or_else(|_| panic!("worker parameter {name}={v} does not parse"))
}

/// Serialises the tests of one binary: each of them starts dozens or hundreds of processes and
/// they must not compete for the machine's few cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts this test binary again as a worker running the test `worker` with `role` and the
/// given `VGPU_P_*` parameters. Its stdout (the harness's chatter) is discarded; its stderr is
/// inherited, so a worker's panic message shows in the test's output.
pub fn spawn_worker(role: &str, params: &[(&str, String)]) -> Child {
    let mut c = Command::new(std::env::current_exe().expect("current_exe"));
    c.args(["--exact", "worker", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in params {
        c.env(format!("VGPU_P_{k}"), v);
    }
    c.spawn().expect("spawn worker")
}

/// A read-only mapping of a region file, read word by word without the `Region` API.
pub struct RawView {
    base: *mut u8,
}

impl RawView {
    /// Maps the region at `path` read-only.
    pub fn open(path: &Path) -> RawView {
        RawView { base: map_file(path, layout::FILE_SIZE, false) }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is FILE_SIZE bytes and page-aligned; atomic loads of read-only
        // memory are sound for these lock-free widths.
        unsafe { &*self.base.cast::<Header>() }
    }

    /// Device `d`'s ledger.
    pub fn ledger(&self, d: usize) -> &DeviceLedger {
        assert!(d < layout::MAX_DEVICES);
        // SAFETY: in bounds and aligned, as laid out by `layout`.
        unsafe { &*self.base.add(layout::LEDGERS_OFF).cast::<DeviceLedger>().add(d) }
    }

    /// Slot `i`.
    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < layout::MAX_SLOTS);
        // SAFETY: in bounds and aligned, as laid out by `layout`.
        unsafe { &*self.base.add(layout::SLOTS_OFF).cast::<Slot>().add(i) }
    }

    /// The raw (unclamped) `used` word of device `d`.
    pub fn used(&self, d: usize) -> u64 {
        self.ledger(d).used.load(Acquire)
    }

    /// The `quota` word of device `d`.
    pub fn quota(&self, d: usize) -> u64 {
        self.ledger(d).quota.load(Acquire)
    }

    /// `(slot, pid, generation, used[d])` of every slot in state LIVE (alive or not).
    pub fn live_slots(&self, d: usize) -> Vec<(usize, u32, u64, u64)> {
        let high = (self.header().slots_high.load(Acquire) as usize).min(layout::MAX_SLOTS);
        (0..high)
            .filter_map(|i| {
                let s = self.slot(i);
                (s.state.load(Acquire) == layout::state::LIVE)
                    .then(|| (i, s.pid.load(Relaxed), s.generation.load(Relaxed), s.used[d].load(Acquire)))
            })
            .collect()
    }
}

impl Drop for RawView {
    fn drop(&mut self) {
        // SAFETY: our own mapping of FILE_SIZE bytes.
        unsafe { libc::munmap(self.base.cast(), layout::FILE_SIZE) };
    }
}

/// Quotas with `q` on device 0 and no limit elsewhere.
pub fn quota0(q: u64) -> [Option<u64>; layout::MAX_DEVICES] {
    let mut a = [None; layout::MAX_DEVICES];
    a[0] = Some(q);
    a
}
