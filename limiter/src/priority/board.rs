//! The node-wide priority board: one file every container maps (`VGPU_PRIORITY_BOARD`), written
//! only through atomics.
//!
//! ```text
//! header   64 B   magic "VGPUPRIO", version, sections, entries
//! section  × 32   key (hash of the device UUID), hint (latest busy-until written), wake
//!                 (futex word), waiters, then 64 entries of { owner token, busy until }
//! ```
//!
//! **Nothing on the board is trusted.** Any tenant can map the file and write any bytes into
//! it, so every reader treats it as a suggestion with bounds ([`super`]): an entry counts only
//! if it ends within one hold from now, a low-priority launch never waits longer than
//! [`super::MAX_WAIT_NS`], a reader's scan is a fixed 64 entries, a section it cannot find or
//! claim turns priority off for that device (never on), and the header is checked once at open.
//! A process's *own* priority comes from its environment, never from the board: writing the
//! board cannot make one's own launches skip a wait.
//!
//! A tenant can also shrink the file, and a process touching a mapping past the end of its
//! file gets `SIGBUS`. So every process that maps the board installs a `SIGBUS` handler that,
//! for a fault inside the board's mapping only, maps zeros over it (the process then runs as if
//! no high-priority work existed) and chains every other fault to the handler that was there
//! before. Node tools never map the board: [`snapshot`] reads a copy.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use shmfile::{Created, Untrusted};

use super::{busy_until, counts, needs_refresh, reusable};

/// The board's path: `VGPU_PRIORITY_BOARD` when given; else in HAMi's `/tmp/vgpulock`, which
/// HAMi's device plugin mounts into every GPU container of a node, when that directory exists;
/// else `/tmp/vgpu-priority.board`.
pub fn path(configured: Option<&Path>) -> std::path::PathBuf {
    use crate::config::{DEFAULT_PRIORITY_BOARD, HAMI_LOCK_DIR};
    match configured {
        Some(p) => p.to_path_buf(),
        None if Path::new(HAMI_LOCK_DIR).is_dir() => Path::new(HAMI_LOCK_DIR).join("vgpu-priority.board"),
        None => std::path::PathBuf::from(DEFAULT_PRIORITY_BOARD),
    }
}

/// "VGPUPRIO" read as a little-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VGPUPRIO");
/// Layout version.
pub const VERSION: u32 = 1;
/// Devices one board describes (a node's GPUs, each by UUID).
pub const SECTIONS: usize = 32;
/// High-priority processes per device at once.
pub const ENTRIES: usize = 64;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    sections: AtomicU32,
    entries: AtomicU32,
    _reserved: [u32; 11],
}

/// A section's hint word: the latest busy-until a high-priority process wrote, 0 once readers
/// found nothing counting.
#[derive(Clone, Copy)]
pub struct Hint<'a>(&'a AtomicU64);

impl Hint<'_> {
    /// Whether nothing of high priority was active since readers last cleared the hint: one
    /// load.
    #[inline(always)]
    pub fn quiet(self) -> bool {
        self.0.load(Acquire) == 0
    }
}

#[repr(C)]
struct Entry {
    owner: AtomicU64,
    until: AtomicU64,
}

#[repr(C, align(64))]
struct Section {
    key: AtomicU64,
    hint: AtomicU64,
    wake: AtomicU32,
    waiters: AtomicU32,
    _reserved: [u64; 5],
    entries: [Entry; ENTRIES],
}

#[repr(C)]
struct Layout {
    header: Header,
    sections: [Section; SECTIONS],
}

/// The board file's size in bytes.
pub const FILE_SIZE: usize = std::mem::size_of::<Layout>();
const _: () = assert!(std::mem::size_of::<Header>() == 64);
const _: () = assert!(std::mem::size_of::<Section>() == 64 + ENTRIES * 16);

/// Why the board cannot be used (priority is then off in this process; one line says so).
#[derive(Debug)]
pub enum BoardError {
    /// A system call failed.
    Io(&'static str, io::Error),
    /// Not a regular file.
    NotRegular,
    /// The file is not a board of this layout (size, magic, version or shape).
    Foreign(String),
}

impl std::fmt::Display for BoardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoardError::Io(op, e) => write!(f, "{op} failed: {e}"),
            BoardError::NotRegular => f.write_str("not a regular file"),
            BoardError::Foreign(why) => write!(f, "not a vgpu priority board of version {VERSION} ({why})"),
        }
    }
}

impl From<io::Error> for BoardError {
    fn from(e: io::Error) -> Self {
        BoardError::Io("create", e)
    }
}

/// The key of a device's section: a hash of its UUID, never 0 (0 is a free section).
pub fn device_key(uuid: &[u8; 16]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uuid {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

fn check_header(h: &Header) -> Result<(), BoardError> {
    let (magic, version) = (h.magic.load(Acquire), h.version.load(Acquire));
    let (sections, entries) = (h.sections.load(Acquire), h.entries.load(Acquire));
    if magic != MAGIC {
        return Err(BoardError::Foreign(format!("magic {magic:#018x}")));
    }
    if version != VERSION || sections as usize != SECTIONS || entries as usize != ENTRIES {
        return Err(BoardError::Foreign(format!("version {version}, {sections} sections of {entries} entries")));
    }
    Ok(())
}

/// The board, mapped (never unmapped: a process keeps it for its life).
pub struct Board {
    layout: &'static Layout,
    writable: bool,
}

impl Board {
    /// Opens the board at `path`, creating it (mode 0666: every container's user writes it) if
    /// there is none. A board this process may not write is mapped read-only: it then obeys
    /// high-priority work but cannot publish its own.
    pub fn open(path: &Path) -> Result<Board, BoardError> {
        for _ in 0..4 {
            let (fd, writable) = match shmfile::open_nofollow(path, libc::O_RDWR) {
                Ok(Some(fd)) => (fd, true),
                Ok(None) => {
                    let made = shmfile::create_published::<BoardError>(path, FILE_SIZE, 0o666, |base| {
                        // SAFETY: a fresh zeroed mapping of FILE_SIZE bytes nobody else sees yet.
                        let h = unsafe { &*base.cast::<Header>() };
                        h.sections.store(SECTIONS as u32, Relaxed);
                        h.entries.store(ENTRIES as u32, Relaxed);
                        h.version.store(VERSION, Relaxed);
                        h.magic.store(MAGIC, Release);
                        Ok(())
                    })?;
                    match made {
                        Created::Ours { fd, base } => {
                            // SAFETY: the descriptor is no longer needed: the mapping stays.
                            unsafe { libc::close(fd) };
                            return Ok(Self::adopt(base, true));
                        }
                        Created::Theirs => continue,
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EROFS) => {
                    match shmfile::open_nofollow(path, libc::O_RDONLY) {
                        Ok(Some(fd)) => (fd, false),
                        Ok(None) => continue,
                        Err(e) => return Err(BoardError::Io("open", e)),
                    }
                }
                Err(e) => return Err(BoardError::Io("open", e)),
            };
            let mapped = Self::map_checked(fd, writable);
            // SAFETY: our own descriptor; the mapping (if any) outlives it.
            unsafe { libc::close(fd) };
            return mapped;
        }
        Err(BoardError::Foreign("it kept appearing and disappearing".into()))
    }

    fn map_checked(fd: libc::c_int, writable: bool) -> Result<Board, BoardError> {
        match shmfile::check_regular(fd, false) {
            Ok(()) => {}
            Err(Untrusted::NotRegular) => return Err(BoardError::NotRegular),
            Err(Untrusted::Io(e)) => return Err(BoardError::Io("fstat", e)),
            Err(Untrusted::WrongOwner { .. }) => unreachable!("ownership is not checked"),
        }
        let size = shmfile::file_size(fd);
        if size != FILE_SIZE as u64 {
            return Err(BoardError::Foreign(format!("{size} bytes, expected {FILE_SIZE}")));
        }
        let base = shmfile::map(fd, FILE_SIZE, writable).map_err(|e| BoardError::Io("mmap", e))?;
        let board = Self::adopt(base, writable);
        // The file may have been shrunk since fstat: the handler is in place, so a fault here
        // only zeroes the mapping, and the zeroed header then fails the check.
        // On failure the mapping stays (zeroed or foreign): a few pages, never touched again.
        check_header(&board.layout.header)?;
        Ok(board)
    }

    fn adopt(base: *mut u8, writable: bool) -> Board {
        guard_mapping(base as usize, FILE_SIZE);
        // SAFETY: a shared mapping of FILE_SIZE bytes, never unmapped, of atomics only (any bit
        // pattern is valid); a shrunk file's pages are replaced by zeros by the SIGBUS guard.
        let layout = unsafe { &*base.cast::<Layout>() };
        Board { layout, writable }
    }

    /// Whether this process can publish on the board.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The section of the device with `key`, claiming a free one if this is the first process to
    /// look (a writable board only). `None`: no room (priority is then off for that device).
    pub fn section(&self, key: u64) -> Option<usize> {
        let sections = &self.layout.sections;
        if let Some(i) = sections.iter().position(|s| s.key.load(Acquire) == key) {
            return Some(i);
        }
        if !self.writable {
            return None;
        }
        for (i, s) in sections.iter().enumerate() {
            match s.key.compare_exchange(0, key, AcqRel, Acquire) {
                Ok(_) => return Some(i),
                Err(k) if k == key => return Some(i),
                Err(_) => {}
            }
        }
        None
    }

    /// Whether section `sec` still belongs to `key` (a tenant may have rewritten it).
    pub fn owns(&self, sec: usize, key: u64) -> bool {
        self.layout.sections.get(sec).is_some_and(|s| s.key.load(Acquire) == key)
    }

    /// An entry of section `sec` for the process with `token` (non-zero): its own if it has one,
    /// else a free or stale one. `None`: the section is full.
    pub fn claim(&self, sec: usize, token: u64, now: u64) -> Option<usize> {
        let s = self.layout.sections.get(sec)?;
        if !self.writable || token == 0 {
            return None;
        }
        if let Some(i) = s.entries.iter().position(|e| e.owner.load(Acquire) == token) {
            return Some(i);
        }
        for (i, e) in s.entries.iter().enumerate() {
            let owner = e.owner.load(Acquire);
            if (owner == 0 || reusable(e.until.load(Acquire), now)) && e.owner.compare_exchange(owner, token, AcqRel, Acquire).is_ok() {
                e.until.store(0, Release);
                return Some(i);
            }
        }
        None
    }

    /// Marks the process owning entry `entry` busy at `now` (written only when its busy period
    /// needs extending). False when the entry is no longer this process's (claim again).
    pub fn busy(&self, sec: usize, entry: usize, token: u64, now: u64) -> bool {
        let Some(e) = self.layout.sections.get(sec).and_then(|s| s.entries.get(entry)) else {
            return false;
        };
        if e.owner.load(Acquire) != token {
            return false;
        }
        if needs_refresh(e.until.load(Relaxed), now) {
            let until = busy_until(now);
            e.until.store(until, Release);
            self.layout.sections[sec].hint.fetch_max(until, AcqRel);
        }
        true
    }

    /// Marks the process owning entry `entry` idle, waking low-priority launches that wait.
    pub fn idle(&self, sec: usize, entry: usize, token: u64) {
        let Some(s) = self.layout.sections.get(sec) else { return };
        let Some(e) = s.entries.get(entry) else { return };
        let now = super::now_ns();
        if e.owner.load(Acquire) != token || !counts(e.until.load(Relaxed), now) {
            return;
        }
        // Idle since now: expired at once for readers, and not taken by another process
        // until it has been unused for a while (see `reusable`).
        e.until.store(now, Release);
        if s.waiters.load(Acquire) != 0 {
            s.wake.fetch_add(1, AcqRel);
            futex_wake(&s.wake);
        }
    }

    /// Section `sec`'s hint, for a caller that keeps it instead of finding the section on every
    /// launch (the launch fast path).
    pub fn hint(&self, sec: usize) -> Option<Hint<'_>> {
        self.layout.sections.get(sec).map(|s| Hint(&s.hint))
    }

    /// Whether section `sec` has had no high-priority work since readers last cleared it: one
    /// load, no clock (the launch path's fast check).
    pub fn quiet(&self, sec: usize) -> bool {
        self.hint(sec).is_none_or(Hint::quiet)
    }

    /// The latest instant a counting entry of section `sec` is busy until at `now`, if any.
    /// When nothing counts and the section's hint has expired (or is garbage), the hint is
    /// cleared so later launches take the fast path again.
    pub fn busy_until(&self, sec: usize, now: u64) -> Option<u64> {
        let s = self.layout.sections.get(sec)?;
        let hint = s.hint.load(Acquire);
        if hint == 0 {
            return None;
        }
        let latest = s.entries.iter().map(|e| e.until.load(Acquire)).filter(|&u| counts(u, now)).max();
        if self.writable && latest.is_none() && (hint <= now || !counts(hint, now)) {
            // A writer raising the hint meanwhile changes it, so this cannot erase a new claim
            // (an honest writer's hint is never beyond one hold; see the module's note).
            let _ = s.hint.compare_exchange(hint, 0, AcqRel, Relaxed);
        }
        latest
    }

    /// Waits on section `sec` for a wake-up (a high-priority process going idle) or `ns`,
    /// whichever first; `still_busy` is asked after registering, so a wake-up is never missed.
    pub fn wait(&self, sec: usize, ns: u64, still_busy: impl FnOnce() -> bool) {
        let Some(s) = self.layout.sections.get(sec) else { return };
        if !self.writable {
            std::thread::sleep(std::time::Duration::from_nanos(ns));
            return;
        }
        s.waiters.fetch_add(1, AcqRel);
        let seen = s.wake.load(Acquire);
        if still_busy() {
            futex_wait(&s.wake, seen, ns);
        }
        s.waiters.fetch_sub(1, AcqRel);
    }

    /// Overwrites `len` bytes at `offset` of the mapping (tests: a tenant scribbling). Bytes
    /// past the end are ignored.
    pub fn scribble(&self, offset: usize, bytes: &[u8]) {
        let base = self.layout as *const Layout as *mut u8;
        for (i, b) in bytes.iter().enumerate() {
            let at = offset.wrapping_add(i);
            if at < FILE_SIZE && self.writable {
                // SAFETY: inside our writable shared mapping; every field is an atomic of
                // plain integers, for which any byte is a valid value (a torn write is what a
                // scribbling tenant does).
                unsafe { std::ptr::write_volatile(base.add(at), *b) };
            }
        }
    }
}

fn futex_wait(word: &AtomicU32, seen: u32, ns: u64) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
    // SAFETY: FUTEX_WAIT (shared: the word is in a file mapping other processes wake) on a live
    // atomic, with a relative timeout; it returns at once if the word no longer holds `seen`.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, seen, &ts as *const libc::timespec) };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live atomic of a shared mapping; it touches no memory.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// What a node tool sees of one device's section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionView {
    /// The device key ([`device_key`] of its UUID).
    pub key: u64,
    /// High-priority processes busy now (entries that count).
    pub busy: usize,
    /// Entries owned by some process.
    pub owned: usize,
    /// Low-priority launches waiting (as the board says; a tenant may have written it).
    pub waiters: u32,
}

/// Reads a copy of the board at `path` (never mapped: a tenant shrinking the file cannot fault
/// the tool), at `now`. `Ok(None)`: no board. Only the file's first [`FILE_SIZE`] bytes are read.
pub fn snapshot(path: &Path, now: u64) -> Result<Option<Vec<SectionView>>, BoardError> {
    let Some(fd) = shmfile::open_nofollow(path, libc::O_RDONLY).map_err(|e| BoardError::Io("open", e))? else {
        return Ok(None);
    };
    let mut buf = vec![0u64; FILE_SIZE / 8];
    let mut got = 0usize;
    let bytes = buf.as_mut_ptr().cast::<u8>();
    let regular = shmfile::check_regular(fd, false);
    while regular.is_ok() && got < FILE_SIZE {
        // SAFETY: pread into the rest of our own buffer of FILE_SIZE bytes.
        let n = unsafe { libc::pread(fd, bytes.add(got).cast(), FILE_SIZE - got, got as libc::off_t) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    if regular.is_err() {
        return Err(BoardError::NotRegular);
    }
    if got < FILE_SIZE {
        return Err(BoardError::Foreign(format!("{got} bytes, expected {FILE_SIZE}")));
    }
    // SAFETY: the buffer is FILE_SIZE bytes, 8-aligned, and Layout is atomics of plain integers
    // (any bit pattern valid), aligned to 64: copied into an aligned box first.
    let layout: Box<Layout> = unsafe {
        let b = Box::<Layout>::new_zeroed();
        let mut b = b.assume_init();
        std::ptr::copy_nonoverlapping(bytes, (&mut *b as *mut Layout).cast::<u8>(), FILE_SIZE);
        b
    };
    check_header(&layout.header)?;
    Ok(Some(
        layout
            .sections
            .iter()
            .filter(|s| s.key.load(Relaxed) != 0)
            .map(|s| SectionView {
                key: s.key.load(Relaxed),
                busy: s.entries.iter().filter(|e| counts(e.until.load(Relaxed), now)).count(),
                owned: s.entries.iter().filter(|e| e.owner.load(Relaxed) != 0).count(),
                waiters: s.waiters.load(Relaxed),
            })
            .collect(),
    ))
}

// ---- the SIGBUS guard ----

/// Mappings guarded at once (a process maps one board; tests map several).
const GUARDS: usize = 16;
static GUARD_START: [AtomicUsize; GUARDS] = [const { AtomicUsize::new(0) }; GUARDS];
static GUARD_LEN: [AtomicUsize; GUARDS] = [const { AtomicUsize::new(0) }; GUARDS];
static GUARD_INSTALLED: AtomicBool = AtomicBool::new(false);
static GUARD_FIRED: AtomicBool = AtomicBool::new(false);
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// Whether a shrunk board file was replaced by zeros in this process (priority is then off).
pub fn guard_fired() -> bool {
    GUARD_FIRED.load(Relaxed)
}

/// Installs the `SIGBUS` guard (once) and adds the mapping at `start` to the guarded ones
/// (beyond [`GUARDS`] mappings, a new one replaces the oldest slot).
fn guard_mapping(start: usize, len: usize) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, AcqRel) % GUARDS;
    GUARD_START[i].store(0, Release);
    GUARD_LEN[i].store(len, Release);
    GUARD_START[i].store(start, Release);
    if GUARD_INSTALLED.swap(true, AcqRel) {
        return;
    }
    // SAFETY: a zeroed sigaction is a valid "default" action to fill; sigaction(2) installs our
    // handler and reports the previous one into a leaked box the handler chains to.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut act.sa_mask);
        let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
        if libc::sigaction(libc::SIGBUS, &act, old) == 0 {
            PREVIOUS.store(old, Release);
        }
    }
}

/// The guarded mapping holding `addr`, if any.
fn guarded(addr: usize) -> Option<(usize, usize)> {
    (0..GUARDS).find_map(|i| {
        let (start, len) = (GUARD_START[i].load(Acquire), GUARD_LEN[i].load(Acquire));
        (start != 0 && addr >= start && addr < start + len).then_some((start, len))
    })
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a real fault (BUS_ADRERR: past the end of the file) in a board; a `kill -BUS` or a
    // fault elsewhere goes to whoever handled SIGBUS before us.
    if code == libc::BUS_ADRERR
        && let Some((start, len)) = guarded(addr)
    {
        // SAFETY: mmap is async-signal-safe; MAP_FIXED replaces exactly that board mapping
        // with private zero pages, so the faulting access retries and reads 0.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            GUARD_FIRED.store(true, Relaxed);
            return;
        }
    }
    let prev = PREVIOUS.load(Acquire);
    // SAFETY: `prev` is the leaked sigaction that stood before ours (or null); calling a handler
    // the process installed with its own flags, or restoring the default so the fault, re-run
    // on return, takes the default action as it would have without us.
    unsafe {
        if !prev.is_null() {
            let p = &*prev;
            let h = p.sa_sigaction;
            if h != libc::SIG_DFL && h != libc::SIG_IGN {
                if p.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
                    f(sig);
                }
                return;
            }
        }
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests;
