//! The region's file, through `vgpu-shmfile` (the protocol simgpu's machine file shares): built
//! under a temporary name and published at its path with `link(2)`, checked before it is
//! trusted (a regular file of this user, of the full size), mapped, and the open-file-description
//! locks that say who is alive. Here the file's failures become [`RegionError`]s; the ledger and
//! the slots, in `mod.rs`, never touch the file other than through these.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;

use shmfile::{Created, Untrusted};
pub(super) use shmfile::{file_size, held_elsewhere as lock_held, lock, lock_shared, now_ns, unlock};

use super::layout::*;
use super::{Region, RegionError};
use crate::allocations::AllocationMap;

pub(super) fn io_err(path: &Path, op: &'static str) -> RegionError {
    RegionError::Io { path: path.to_path_buf(), op, err: io::Error::last_os_error() }
}

/// Opens `path` with `flags`, never following a symlink: `None` when there is no file.
pub(super) fn open_file(path: &Path, flags: libc::c_int) -> Result<Option<libc::c_int>, RegionError> {
    shmfile::open_nofollow(path, flags).map_err(|err| match err.raw_os_error() {
        Some(libc::ELOOP) => RegionError::Symlink { path: path.to_path_buf() },
        Some(libc::EISDIR) => RegionError::NotRegular { path: path.to_path_buf() },
        _ => RegionError::Io { path: path.to_path_buf(), op: "open", err },
    })
}

/// Checks that `fd` is a regular file, and, when `own`, that it belongs to this user.
pub(super) fn check_file(path: &Path, fd: libc::c_int, own: bool) -> Result<(), RegionError> {
    shmfile::check_regular(fd, own).map_err(|e| match e {
        Untrusted::Io(err) => RegionError::Io { path: path.to_path_buf(), op: "fstat", err },
        Untrusted::NotRegular => RegionError::NotRegular { path: path.to_path_buf() },
        Untrusted::WrongOwner { owner, me } => RegionError::WrongOwner { path: path.to_path_buf(), owner, me },
    })
}

/// Maps a file known to be `FILE_SIZE` bytes, shared, writable or read-only.
pub(super) fn map_file(path: &Path, fd: libc::c_int, writable: bool) -> Result<*mut u8, RegionError> {
    shmfile::map(fd, FILE_SIZE, writable).map_err(|err| RegionError::Io { path: path.to_path_buf(), op: "mmap", err })
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
        r.join(quotas)?;
        Ok(Some(r))
    }

    /// A writable handle on a mapping, before it has a slot (its drop closes `fd`).
    fn unclaimed(base: *mut u8, fd: libc::c_int, path: &Path) -> Region {
        Region { base, fd, path: path.to_path_buf(), slot: usize::MAX, generation: 0, allocations: AllocationMap::with_capacity(1 << 18) }
    }

    /// Builds a region under a temporary name beside `path` and publishes it there. `None`
    /// when another process published one first (the caller then opens that one).
    fn create(path: &Path, quotas: &[Option<u64>; MAX_DEVICES], mode: u32) -> Result<Option<Region>, RegionError> {
        let made = shmfile::create_published(path, FILE_SIZE, mode, |base| {
            // SAFETY: a fresh writable mapping of FILE_SIZE bytes that no other process can
            // see before it is published.
            unsafe { write_header(base, quotas) };
            Ok::<(), io::Error>(())
        });
        match made.map_err(|err| RegionError::Io { path: path.to_path_buf(), op: "create", err })? {
            Created::Theirs => Ok(None),
            Created::Ours { fd, base } => {
                let mut r = Region::unclaimed(base, fd, path);
                // Joined like any other opener: a newcomer of another quota may have opened the
                // region since it was published, found nobody and adopted it.
                r.join(quotas)?;
                Ok(Some(r))
            }
        }
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
    let lock_path = shmfile::cpath(&path.with_file_name(format!(".{name}.lock"))).ok()?;
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

/// Writes a region's header and quotas into a mapping and publishes it within the file (the
/// ready flag, written last).
///
/// # Safety
/// `base` is a writable mapping of `FILE_SIZE` bytes.
pub(super) unsafe fn write_header(base: *mut u8, quotas: &[Option<u64>; MAX_DEVICES]) {
    use std::sync::atomic::Ordering::{Relaxed, Release};
    // SAFETY: the caller's mapping is FILE_SIZE bytes, page-aligned: the header and every
    // ledger are in bounds and aligned.
    let (h, ledgers) =
        unsafe { (&*base.cast::<Header>(), std::slice::from_raw_parts(base.add(LEDGERS_OFF).cast::<DeviceLedger>(), MAX_DEVICES)) };
    h.version.store(LAYOUT_VERSION, Relaxed);
    h.devices.store(MAX_DEVICES as u32, Relaxed);
    h.slots.store(MAX_SLOTS as u32, Relaxed);
    h.file_size.store(FILE_SIZE as u64, Relaxed);
    for (l, q) in ledgers.iter().zip(quotas) {
        l.quota.store(super::quota_word(*q), Relaxed);
    }
    h.magic.store(MAGIC, Relaxed);
    // The publication point: everything above is visible to whoever sees ready == 1.
    h.ready.store(1, Release);
}
