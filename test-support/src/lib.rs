//! What vgpu's multi-process tests and benchmarks share (the limiter's `race`, `crash` and
//! `storm` tests, the benches and their helper processes):
//!
//! * [`Ctl`]: a small shared file mapped by a parent and its child processes: a futex phase
//!   word that releases every parked child with one wake (a cross-process barrier), counters,
//!   a pause, and one record per child through which children report what they hold;
//! * [`Workers`]: child processes killed and reaped when dropped, so a failing test or bench
//!   never leaves any behind;
//! * clocks comparable across processes ([`now_ns`]), percentiles and a small PRNG.
#![allow(unsafe_code)] // mapping shared files, futexes, signals: all of it is system calls

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// A fresh directory for one test's files.
pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!("vgpu-mp-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Children killed (SIGKILL) and waited for when dropped, so that a failing assertion in the
/// parent never leaves workers behind.
#[derive(Default)]
pub struct Workers(pub Vec<Child>);

impl Workers {
    /// Waits (bounded) for every child to exit and asserts they all succeeded.
    pub fn join(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for c in &mut self.0 {
            loop {
                match c.try_wait().expect("try_wait") {
                    Some(st) => {
                        assert!(st.success(), "worker {} exited with {st}", c.id());
                        break;
                    }
                    None if Instant::now() > deadline => {
                        panic!("worker {} did not exit within {timeout:?}", c.id())
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends SIGKILL to `pid`.
pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a PID of our own child, which we have not waited for yet (so the PID
    // cannot have been reused).
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill({pid})");
}

/// Nanoseconds of CLOCK_MONOTONIC: comparable across processes, unlike `Instant`.
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

/// Lowers this process's scheduling priority (busy workers, so that the orchestrating parent
/// still gets the CPU promptly on a machine with few cores).
pub fn be_nice(inc: i32) {
    // SAFETY: nice(2) only changes our own priority.
    unsafe { libc::nice(inc) };
}

/// SplitMix64: a small deterministic PRNG (no dependency needed).
pub struct Rng(pub u64);

impl Rng {
    /// Seeds from a value (e.g. the worker id and the PID).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `p`-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout: Option<&libc::timespec>) -> libc::c_long {
    let ts = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT/FUTEX_WAKE on a valid, aligned 32-bit word of a shared mapping (not
    // FUTEX_PRIVATE: the waiters are other processes); the timeout, if any, outlives the call.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, ts, std::ptr::null::<u32>(), 0) }
}

/// Blocks while `word == current` (or until woken, or 50 ms pass).
fn futex_wait(word: &AtomicU32, current: u32) {
    let ts = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
    futex(word, libc::FUTEX_WAIT, current, Some(&ts));
}

/// Wakes every process blocked on `word`.
fn futex_wake_all(word: &AtomicU32) {
    futex(word, libc::FUTEX_WAKE, i32::MAX as u32, None);
}

/// Words per worker record.
pub const RECORD_WORDS: usize = 16;
const CTL_RECORDS_OFF: usize = 4096;

/// The shared control page of one test: phase barrier, counters and worker records.
pub struct Ctl {
    base: *mut u8,
    len: usize,
    records: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Ctl {}
// SAFETY: as above.
unsafe impl Sync for Ctl {}

/// Indices of the control page's header words.
pub mod word {
    /// The phase the parent has released (futex).
    pub const GO: usize = 0;
    /// Incremented by a worker each time it parks for a phase.
    pub const ARRIVED: usize = 1;
    /// Incremented by a worker each time it finishes a phase.
    pub const DONE: usize = 2;
    /// Set to 1 by the parent: stop looping.
    pub const STOP: usize = 3;
    /// Incremented by a worker once it has stopped and published its final record.
    pub const STOPPED: usize = 4;
    /// Pause generation, odd while the parent asks workers to park between two operations.
    pub const PAUSE: usize = 5;
    /// Incremented by a worker each time it parks for `PAUSE`.
    pub const PAUSED: usize = 6;
}

impl Ctl {
    /// Creates the control file for up to `records` workers and maps it.
    pub fn create(path: &Path, records: usize) -> Ctl {
        let len = CTL_RECORDS_OFF + records * RECORD_WORDS * 8;
        let f = std::fs::File::create(path).expect("create ctl");
        f.set_len(len as u64).expect("size ctl");
        drop(f);
        Ctl::open(path)
    }

    /// Maps an existing control file (in a worker).
    pub fn open(path: &Path) -> Ctl {
        let len = std::fs::metadata(path).expect("ctl metadata").len() as usize;
        let base = map_file(path, len, true);
        Ctl { base, len, records: (len - CTL_RECORDS_OFF) / (RECORD_WORDS * 8) }
    }

    /// One of the header words (see [`word`]).
    pub fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < 1024);
        // SAFETY: within the first page of the mapping, 4-byte aligned.
        unsafe { &*self.base.cast::<AtomicU32>().add(i) }
    }

    /// Worker `i`'s record.
    pub fn record(&self, i: usize) -> &[AtomicU64; RECORD_WORDS] {
        assert!(i < self.records, "worker record {i} out of range");
        // SAFETY: within the mapping (sized for `records` records), 8-byte aligned.
        unsafe { &*self.base.add(CTL_RECORDS_OFF + i * RECORD_WORDS * 8).cast::<[AtomicU64; RECORD_WORDS]>() }
    }

    /// In a worker: parks until the parent releases phase `p` (counting itself in `ARRIVED`).
    pub fn wait_phase(&self, p: u32) {
        self.bump(word::ARRIVED);
        let go = self.word(word::GO);
        loop {
            let g = go.load(Acquire);
            if g >= p {
                return;
            }
            futex_wait(go, g);
        }
    }

    /// In the parent: releases every worker parked for phase `p`, all with one wake.
    pub fn release(&self, p: u32) {
        let go = self.word(word::GO);
        go.store(p, Release);
        futex_wake_all(go);
    }

    /// In a worker, between two operations: if the parent asked for a pause, counts itself in
    /// `PAUSED` and parks until that pause is lifted. Returns whether it parked.
    pub fn pause_point(&self) -> bool {
        // PAUSE is a generation: odd while a pause is asked for. Parking on the generation (not
        // on "paused or not") means a resume followed at once by another pause is never missed.
        let pause = self.word(word::PAUSE);
        let g = pause.load(Acquire);
        if g.is_multiple_of(2) {
            return false;
        }
        self.bump(word::PAUSED);
        while pause.load(Acquire) == g {
            futex_wait(pause, g);
        }
        true
    }

    /// In the parent: asks every worker to park at its next [`Ctl::pause_point`] and waits
    /// until `PAUSED` reaches `until` (calling `tick` meanwhile).
    pub fn pause(&self, until: u32, timeout: Duration, tick: impl FnMut()) {
        let g = self.word(word::PAUSE).fetch_add(1, AcqRel);
        assert!(g.is_multiple_of(2), "already paused");
        self.await_count(word::PAUSED, until, timeout, tick);
    }

    /// In the parent: lifts a pause.
    pub fn resume(&self) {
        let pause = self.word(word::PAUSE);
        let g = pause.fetch_add(1, AcqRel);
        assert!(g % 2 == 1, "not paused");
        futex_wake_all(pause);
    }

    /// Increments a counter word and wakes whoever waits on it.
    pub fn bump(&self, w: usize) {
        let word = self.word(w);
        word.fetch_add(1, AcqRel);
        futex_wake_all(word);
    }

    /// Blocks until counter word `w` reaches `n`, calling `tick` between checks (at least every
    /// 50 ms); panics after `timeout`.
    pub fn await_count(&self, w: usize, n: u32, timeout: Duration, mut tick: impl FnMut()) {
        let deadline = Instant::now() + timeout;
        let word = self.word(w);
        loop {
            let v = word.load(Acquire);
            if v >= n {
                return;
            }
            assert!(Instant::now() < deadline, "control word {w} stuck at {v}, waiting for {n} (a worker hung or died)");
            tick();
            futex_wait(word, v);
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Maps `len` bytes of the file at `path`, shared (the descriptor is closed once mapped).
pub fn map_file(path: &Path, len: usize, write: bool) -> *mut u8 {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), if write { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {}: {}", path.display(), std::io::Error::last_os_error());
    let prot = if write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: a shared mapping of an open file of at least `len` bytes; the fd may be closed
    // once mapped.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    assert!(p != libc::MAP_FAILED, "mmap {}: {}", path.display(), std::io::Error::last_os_error());
    p.cast()
}
