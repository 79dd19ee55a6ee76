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
//! * [`layout`]: puts the built libraries under their SONAMEs in one directory.

pub mod config;
pub mod cost;
pub mod identity;
pub mod layout;
pub mod machine;

/// Nanoseconds of `CLOCK_MONOTONIC`, the time base every process of a machine shares.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (returns at once if it already has).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: an absolute sleep on a valid timespec; EINTR is retried.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}
