//! The region's file: built under a temporary name and published at its path with `link(2)`,
//! checked before it is trusted (a regular file of this user, of the full size), mapped, and
//! the open-file-description locks that say who is alive (the kernel drops them with the
//! process, however it dies). The ledger and the slots, in `mod.rs`, never touch the file
//! other than through these.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::layout::*;
use super::{Region, RegionError};
use crate::allocations::AllocationMap;

pub(super) fn io_err(path: &Path, op: &'static str) -> RegionError {
    RegionError::Io { path: path.to_path_buf(), op, err: io::Error::last_os_error() }
}

/// `path` as a C string (a NUL byte in it is an error, not a truncation).
fn cpath(path: &Path) -> Result<CString, RegionError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RegionError::Io {
        path: path.to_path_buf(),
        op: "open",
        err: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// Opens `path` with `flags`, never following a symlink: `None` when there is no file.
pub(super) fn open_file(path: &Path, flags: libc::c_int) -> Result<Option<libc::c_int>, RegionError> {
    let cpath = cpath(path)?;
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(cpath.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd >= 0 {
        return Ok(Some(fd));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(None),
        Some(libc::ELOOP) => Err(RegionError::Symlink { path: path.to_path_buf() }),
        Some(libc::EISDIR) => Err(RegionError::NotRegular { path: path.to_path_buf() }),
        _ => Err(RegionError::Io { path: path.to_path_buf(), op: "open", err }),
    }
}

/// Checks that `fd` is a regular file, and, when `own`, that it belongs to this user.
pub(super) fn check_file(path: &Path, fd: libc::c_int, own: bool) -> Result<(), RegionError> {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io_err(path, "fstat"));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(RegionError::NotRegular { path: path.to_path_buf() });
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if own && st.st_uid != me {
        return Err(RegionError::WrongOwner { path: path.to_path_buf(), owner: st.st_uid, me });
    }
    Ok(())
}

/// Maps a file known to be `FILE_SIZE` bytes, shared, writable or read-only.
pub(super) fn map_file(path: &Path, fd: libc::c_int, writable: bool) -> Result<*mut u8, RegionError> {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: a shared mapping of a file of FILE_SIZE bytes.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), FILE_SIZE, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(io_err(path, "mmap"));
    }
    Ok(p.cast())
}

impl Region {
    /// Opens the region at `path` (creating it with `mode` if absent) for a process whose
    /// configuration gives these per-device quotas, and registers this process in a slot.
    pub fn open(path: &Path, quotas: &[Option<u64>; MAX_DEVICES], mode: u32) -> Result<Region, RegionError> {
        // A region appears at `path` only complete: it is built under a temporary name and
        // published with link(2), which fails if another process published first. So openers
        // never wait for a creator, and a creator that dies leaves nothing at `path`.
        for _ in 0..8 {
            if let Some(r) = Self::open_existing(path, quotas)? {
                return Ok(r);
            }
            // Only one process builds: the others wait for it here, then open its region
            // (without this, a start-up storm builds a region per process).
            let _creating = creation_lock(path);
            if let Some(r) = Self::open_existing(path, quotas)? {
                return Ok(r);
            }
            if let Some(r) = Self::create(path, quotas, mode)? {
                return Ok(r);
            }
        }
        Err(RegionError::NotReady { path: path.to_path_buf() })
    }

    /// Opens the region at `path` if there is one (`None`: there is no file).
    fn open_existing(path: &Path, quotas: &[Option<u64>; MAX_DEVICES]) -> Result<Option<Region>, RegionError> {
        let Some(fd) = open_file(path, libc::O_RDWR)? else { return Ok(None) };
        let base = match Self::map(path, fd, false) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: our own fd, not yet owned by a Region.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        let mut r = Region::unclaimed(base, fd, path);
        r.validate()?;
        r.adopt_quotas(quotas)?;
        r.claim_slot()?;
        Ok(Some(r))
    }

    /// A writable handle on a mapping, before it has a slot (its drop closes `fd`).
    fn unclaimed(base: *mut u8, fd: libc::c_int, path: &Path) -> Region {
        Region { base, fd, path: path.to_path_buf(), slot: usize::MAX, generation: 0, allocations: AllocationMap::with_capacity(1 << 18) }
    }

    /// Builds a region under a temporary name beside `path` and publishes it there. `None`
    /// when another process published one first (the caller then opens that one).
    fn create(path: &Path, quotas: &[Option<u64>; MAX_DEVICES], mode: u32) -> Result<Option<Region>, RegionError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // SAFETY: getpid cannot fail.
        let tmp = path.with_file_name(format!(".{name}.{}.{}.tmp", unsafe { libc::getpid() }, now_ns()));
        let ctmp = cpath(&tmp)?;
        // SAFETY: open(2) with a NUL-terminated path.
        let fd =
            unsafe { libc::open(ctmp.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600) };
        if fd < 0 {
            return Err(io_err(path, "create"));
        }
        let unlink_tmp = || {
            // SAFETY: removing our own temporary name.
            unsafe { libc::unlink(ctmp.as_ptr()) };
        };
        let fail = |e: RegionError| {
            unlink_tmp();
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
            Err(e)
        };
        // The exact mode asked for, whatever the umask.
        // SAFETY: fchmod and ftruncate on our own new file.
        if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 || unsafe { libc::ftruncate(fd, FILE_SIZE as libc::off_t) } != 0 {
            return fail(io_err(path, "size"));
        }
        let base = match Self::map(path, fd, true) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let mut r = Region::unclaimed(base, fd, path);
        r.initialise(quotas);
        let cpath = cpath(path)?;
        // SAFETY: link(2) with NUL-terminated paths: publishes the complete region, or fails
        // with EEXIST if another process published one first.
        let linked = unsafe { libc::link(ctmp.as_ptr(), cpath.as_ptr()) };
        let err = io::Error::last_os_error();
        unlink_tmp();
        if linked != 0 {
            drop(r); // not registered: unmaps and closes only
            return match err.raw_os_error() {
                Some(libc::EEXIST) => Ok(None),
                _ => Err(RegionError::Io { path: path.to_path_buf(), op: "publish", err }),
            };
        }
        r.claim_slot()?;
        Ok(Some(r))
    }

    /// Maps the file once it is (or, for a new one, has been made) a full-size region.
    fn map(path: &Path, fd: libc::c_int, created: bool) -> Result<*mut u8, RegionError> {
        check_file(path, fd, true)?;
        if !created {
            Self::await_size(path, fd)?;
        }
        map_file(path, fd, true)
    }

    /// Waits (bounded) until an existing file has its full size. A file that is empty with
    /// nobody initialising it (its creator died before sizing it) is sized here and left for
    /// `validate` to initialise.
    fn await_size(path: &Path, fd: libc::c_int) -> Result<(), RegionError> {
        let deadline = now_ns() + 2_000_000_000;
        loop {
            let size = file_size(fd);
            if size == FILE_SIZE as u64 {
                return Ok(());
            }
            if size > FILE_SIZE as u64 {
                return Err(RegionError::WrongSize { path: path.to_path_buf(), found: size, expected: FILE_SIZE as u64 });
            }
            if lock(fd, 0, false) {
                let size = file_size(fd);
                let ok = size == 0 || size == FILE_SIZE as u64;
                // SAFETY: sizing a file nobody is initialising.
                if size == 0 && unsafe { libc::ftruncate(fd, FILE_SIZE as libc::off_t) } != 0 {
                    unlock(fd, 0);
                    return Err(io_err(path, "ftruncate"));
                }
                unlock(fd, 0);
                if ok {
                    return Ok(());
                }
                return Err(RegionError::WrongSize { path: path.to_path_buf(), found: size, expected: FILE_SIZE as u64 });
            }
            if now_ns() > deadline {
                return Err(RegionError::NotReady { path: path.to_path_buf() });
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// Holds `.<name>.lock` beside the region while this process builds the region (the lock is
/// the kernel's: it goes with the descriptor, even if the process dies). Best effort: if the
/// lock file cannot be made, creation goes ahead anyway (link(2) keeps it correct; the lock
/// only saves work).
struct CreationLock(libc::c_int);

impl Drop for CreationLock {
    fn drop(&mut self) {
        // SAFETY: our own descriptor; closing it releases the lock.
        unsafe { libc::close(self.0) };
    }
}

fn creation_lock(path: &Path) -> Option<CreationLock> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let lock_path = CString::new(path.with_file_name(format!(".{name}.lock")).as_os_str().as_bytes()).ok()?;
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(lock_path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return None;
    }
    let guard = CreationLock(fd);
    // Blocking: the waiters sleep in the kernel (a start-up storm of pollers would starve
    // the creator of CPU); the creator holds it for the microseconds a region takes to build,
    // and the kernel releases it if the creator dies.
    lock(fd, 0, true).then_some(guard)
}

/// Nanoseconds of CLOCK_MONOTONIC.
pub(super) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(super) fn file_size(fd: libc::c_int) -> u64 {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_size as u64
}

fn flock_at(kind: i32, offset: i64) -> libc::flock {
    // SAFETY: plain data; zero is a valid start.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Takes the OFD write lock on one byte; `wait` blocks for it. True when held.
pub(super) fn lock(fd: libc::c_int, offset: i64, wait: bool) -> bool {
    let fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: fcntl with a valid flock on our fd.
    unsafe { libc::fcntl(fd, if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK }, &fl) == 0 }
}

pub(super) fn unlock(fd: libc::c_int, offset: i64) {
    let fl = flock_at(libc::F_UNLCK, offset);
    // SAFETY: fcntl with a valid flock on our fd.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
}

/// True when another open file description holds the lock on that byte.
pub(super) fn lock_held(fd: libc::c_int, offset: i64) -> bool {
    let mut fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: fcntl with a valid flock on our fd.
    let rc = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    rc != 0 || fl.l_type != libc::F_UNLCK as libc::c_short
}
