//! Shared pieces of vgpu's benchmarks: the quotas every benchmark process agrees on, what the
//! helper processes report in their records, and where the built libraries are. The control
//! file ([`Ctl`]: helpers released together by one futex wake), the clocks and the helper
//! processes that die with the bench come from `vgpu-test-support`, shared with the limiter's
//! multi-process tests. The helper processes themselves are this crate's `hammer` and `cuinit`.
#![deny(unsafe_code)]

use std::path::Path;

use vgpu_limiter::region::layout::MAX_DEVICES;
pub use vgpu_test_support::{Ctl, RECORD_WORDS, Workers as Helpers, now_ns, percentile, thread_cpu_ns, word};

/// Quota of device 0 in every benchmark region: large enough never to refuse.
pub const QUOTA: u64 = 1 << 60;

/// The quotas every benchmark process opens its region with.
pub fn quotas() -> [Option<u64>; MAX_DEVICES] {
    let mut q = [None; MAX_DEVICES];
    q[0] = Some(QUOTA);
    q
}

/// Record words.
pub mod rec {
    /// Operations done so far (a hammer) or 1 once done (an opener).
    pub const OPS: usize = 0;
    /// When the opener started `Region::open` (CLOCK_MONOTONIC ns).
    pub const T0: usize = 1;
    /// When it returned.
    pub const T1: usize = 2;
    /// 1 when `open` succeeded, 2 when it failed.
    pub const OK: usize = 3;
}

/// `target/<profile>`: where cargo put the running bench, the shim and simgpu.
pub fn artifacts_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("benches live in target/<profile>/deps").to_path_buf()
}

/// simgpu's libraries under their SONAMEs in `<scratch>/lib` (simgpu's own layout).
pub fn sim_lib_dir(art: &Path, scratch: &Path) -> std::path::PathBuf {
    simgpu::layout::layout(art, &scratch.join("lib"))
        .unwrap_or_else(|e| panic!("{e}: build the shim and simgpu in this profile first (cargo build --release --workspace)"))
}
