//! Shared pieces of vgpu's benchmarks: the quotas every benchmark process agrees on, a
//! monotonic clock comparable across processes, and [`Ctl`], a small shared file through which
//! the benchmark releases its helper processes together (one futex wake) and reads what they
//! report. The helper processes themselves are the `hammer` binary of this crate.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use vgpu_limiter::region::layout::MAX_DEVICES;

/// Quota of device 0 in every benchmark region: large enough never to refuse.
pub const QUOTA: u64 = 1 << 60;

/// The quotas every benchmark process opens its region with.
pub fn quotas() -> [Option<u64>; MAX_DEVICES] {
    let mut q = [None; MAX_DEVICES];
    q[0] = Some(QUOTA);
    q
}

/// Nanoseconds of CLOCK_MONOTONIC (comparable across processes).
pub fn now_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds of CPU time used by the calling thread.
pub fn thread_cpu_ns() -> u64 {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `p`-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// Words per helper record.
pub const RECORD_WORDS: usize = 8;
const RECORDS_OFF: usize = 4096;

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

/// Header words of the control file.
pub mod word {
    /// The phase released by the benchmark (futex).
    pub const GO: usize = 0;
    /// Incremented by a helper each time it parks for a phase.
    pub const ARRIVED: usize = 1;
    /// Incremented by a helper when it finishes a phase.
    pub const DONE: usize = 2;
}

/// The control file shared by a benchmark and its helper processes.
pub struct Ctl {
    base: *mut u8,
    len: usize,
    records: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Ctl {}
// SAFETY: as above.
unsafe impl Sync for Ctl {}

impl Ctl {
    /// Creates (or truncates) a control file with room for `records` helpers and maps it.
    pub fn create(path: &Path, records: usize) -> Ctl {
        let len = RECORDS_OFF + records * RECORD_WORDS * 8;
        let f = std::fs::File::create(path).expect("create control file");
        f.set_len(0).expect("clear control file");
        f.set_len(len as u64).expect("size control file");
        drop(f);
        Ctl::open(path)
    }

    /// Maps an existing control file (in a helper).
    pub fn open(path: &Path) -> Ctl {
        let len = std::fs::metadata(path).expect("control file").len() as usize;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        // SAFETY: open(2) with a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open {}: {}", path.display(), std::io::Error::last_os_error());
        // SAFETY: a shared mapping of `len` bytes of an open file of that size.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        // SAFETY: our own fd; the mapping outlives it.
        unsafe { libc::close(fd) };
        assert!(p != libc::MAP_FAILED, "mmap {}", path.display());
        Ctl { base: p.cast(), len, records: (len - RECORDS_OFF) / (RECORD_WORDS * 8) }
    }

    /// A header word (see [`word`]).
    pub fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < 1024);
        // SAFETY: within the first page of the mapping, aligned.
        unsafe { &*self.base.cast::<AtomicU32>().add(i) }
    }

    /// Helper `i`'s record (see [`rec`]).
    pub fn record(&self, i: usize) -> &[AtomicU64; RECORD_WORDS] {
        assert!(i < self.records, "record {i} out of range");
        // SAFETY: within the mapping, aligned.
        unsafe { &*self.base.add(RECORDS_OFF + i * RECORD_WORDS * 8).cast::<[AtomicU64; RECORD_WORDS]>() }
    }

    /// In a helper: parks until phase `p` is released.
    pub fn wait_phase(&self, p: u32) {
        self.bump(word::ARRIVED);
        let go = self.word(word::GO);
        loop {
            let g = go.load(Acquire);
            if g >= p {
                return;
            }
            futex(go, libc::FUTEX_WAIT, g);
        }
    }

    /// Releases every helper parked for phase `p` with one wake.
    pub fn release(&self, p: u32) {
        let go = self.word(word::GO);
        go.store(p, Release);
        futex(go, libc::FUTEX_WAKE, i32::MAX as u32);
    }

    /// Increments a counter word and wakes its waiters.
    pub fn bump(&self, w: usize) {
        let word = self.word(w);
        word.fetch_add(1, AcqRel);
        futex(word, libc::FUTEX_WAKE, i32::MAX as u32);
    }

    /// Waits until counter word `w` reaches `n`; panics after `timeout`.
    pub fn await_count(&self, w: usize, n: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let word = self.word(w);
        loop {
            let v = word.load(Acquire);
            if v >= n {
                return;
            }
            assert!(Instant::now() < deadline, "control word {w} stuck at {v}, waiting for {n}");
            futex(word, libc::FUTEX_WAIT, v);
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// FUTEX_WAIT (with a 50 ms timeout, so callers re-check their condition) or FUTEX_WAKE on a
/// word of a shared mapping.
fn futex(word: &AtomicU32, op: libc::c_int, val: u32) {
    let ts = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
    let timeout = if op == libc::FUTEX_WAIT { &ts as *const libc::timespec } else { std::ptr::null() };
    // SAFETY: a futex operation on a valid, aligned 32-bit word of a shared mapping (not
    // private: the other parties are other processes); `ts` outlives the call.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, timeout, std::ptr::null::<u32>(), 0) };
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

/// Helper processes, killed (and reaped) when dropped, so a panicking bench leaves none.
pub struct Helpers(pub Vec<std::process::Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
