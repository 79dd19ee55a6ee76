//! The simulated GPU machine behind simgpu's `libcuda.so.1` and `libnvidia-ml.so.1`.
//!
//! One *machine* is a state file (`SIMGPU_STATE`) mapped by every process that uses it. It
//! holds, per simulated device, the memory in use and a **timeline**: kernels of all processes
//! queue on it in launch order and take simulated time, so a kernel of one process delays
//! another's, and utilisation is what the timeline says. Per process it holds a slot with that
//! process's memory and busy time; a slot's owner holds an open-file-description lock on it, so
//! a process that dies (even by SIGKILL) is noticed and its memory returned, as a real driver
//! frees a dead process's memory.
//!
//! * [`config`]: `SIMGPU_*` variables, read once.
//! * [`machine`]: the shared state file and every operation on it.
//! * [`cost`]: how long a kernel takes, from its name and grid.
//! * [`identity`]: names, UUIDs and PCI ids the devices report.
//! * [`timeslice`]: how a GPU time-slices between contexts, as a pure model; the machine runs it
//!   when `SIMGPU_TIMESLICE` is set (else one FIFO timeline for all processes).
//! * [`pids`]: host PIDs, as the kernel driver knows processes, and `simgpud` which tells them.
//! * [`layout`]: puts the built libraries under their SONAMEs in one directory.
#![deny(unsafe_code)]

pub mod config;
pub mod cost;
pub mod identity;
pub mod layout;
pub mod machine;
pub mod pids;
pub mod timeslice;

/// Nanoseconds of `CLOCK_MONOTONIC`, the time base every process of a machine shares.
pub use shmfile::now_ns;

/// How far the wall clock (`CLOCK_REALTIME`, what NVML stamps samples with) runs ahead of
/// [`now_ns`], in nanoseconds, read now.
pub fn wall_offset_ns() -> u64 {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    wall.saturating_sub(now_ns())
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (returns at once if it already has).
///
/// The last stretch is spun rather than slept: a timed sleep overshoots by the kernel's timer
/// slack (about 50 µs), which would make every short synchronisation far slower than a GPU's.
#[allow(unsafe_code)]
pub fn sleep_until(deadline_ns: u64) {
    const SPIN_NS: u64 = 150_000;
    loop {
        let now = now_ns();
        if now >= deadline_ns {
            return;
        }
        if deadline_ns - now > SPIN_NS {
            let wake = deadline_ns - SPIN_NS / 2;
            let ts = libc::timespec { tv_sec: (wake / 1_000_000_000) as libc::time_t, tv_nsec: (wake % 1_000_000_000) as libc::c_long };
            // SAFETY: an absolute sleep on a valid timespec; an early return (EINTR) loops.
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
        } else {
            std::thread::yield_now();
        }
    }
}
