//! The accounting region: one memory-mapped file per container, shared by every process of
//! the container, holding each device's quota and usage and one slot per live process.
//!
//! * **Creation** is race-free: a region is built and initialised under a temporary name
//!   (mode `0600`, or the caller's), then published at its path with `link(2)`, which fails if
//!   another process published first (that one is then opened). Openers therefore never wait
//!   for a creator, and a creator that dies leaves nothing at the path. (An empty file found at
//!   the path is initialised in place under an open-file-description lock on byte 0.) A file
//!   of another magic, version or size, a symlink, a non-regular file or a file owned by another
//!   user is refused with a [`RegionError`], never reinterpreted.
//! * **Reservation** is one compare-and-swap on the device's `used` that never goes above the
//!   quota, then attribution to this process's slot; no lock and no scan on that path.
//! * **Liveness** is an OFD lock on the first byte of each process's slot, which the kernel
//!   drops when the process dies. [`Region::reap`] (run lazily when an allocation would fail
//!   and when a process registers) returns a dead process's bytes exactly once.
//!
//! Crash windows: a process killed between the device's compare-and-swap and its slot's
//! update (or, on release, between the slot's update and the device's) leaves those bytes
//! counted but unattributed: the region then under-commits, it never over-commits. The views
//! report such bytes as `unattributed`, and when the last process of the region is gone the
//! next one to register forgets them. (Measured: about 1 % of SIGKILLs of a process in a tight
//! allocate/free loop on a loaded 2-core machine land in the window, i.e. while it was
//! preempted just there.)
#![allow(unsafe_code)]

pub mod layout;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::*;

use layout::*;

use crate::allocations::AllocationMap;

/// Why a region could not be opened.
#[derive(Debug)]
pub enum RegionError {
    /// A system call failed.
    Io { path: PathBuf, op: &'static str, err: io::Error },
    /// The path is a symbolic link (never followed).
    Symlink { path: PathBuf },
    /// The path is not a regular file.
    NotRegular { path: PathBuf },
    /// The file belongs to another user.
    WrongOwner { path: PathBuf, owner: u32, me: u32 },
    /// The file is not a vgpu region.
    BadMagic { path: PathBuf },
    /// The region was written by a vgpu of another layout version.
    VersionMismatch { path: PathBuf, found: u32, expected: u32 },
    /// The file has the wrong size (truncated, or another layout).
    WrongSize { path: PathBuf, found: u64, expected: u64 },
    /// Its creator never finished initialising it.
    NotReady { path: PathBuf },
    /// Live processes use the region with another quota.
    QuotaMismatch { path: PathBuf, device: usize, region: u64, requested: u64 },
    /// Every process slot is taken by a live process.
    SlotsExhausted { path: PathBuf },
}

fn quota_text(q: u64) -> String {
    if q == UNLIMITED { "unlimited".into() } else { format!("{q} bytes") }
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RegionError::*;
        match self {
            Io { path, op, err } => write!(f, "accounting region {}: {op} failed: {err}", path.display()),
            Symlink { path } => write!(f, "accounting region {} is a symbolic link; refusing to follow it", path.display()),
            NotRegular { path } => write!(f, "accounting region {} is not a regular file", path.display()),
            WrongOwner { path, owner, me } => {
                write!(f, "accounting region {} belongs to uid {owner}, not to this process's uid {me}", path.display())
            }
            BadMagic { path } => write!(f, "{} is not a vgpu accounting region (bad magic)", path.display()),
            VersionMismatch { path, found, expected } => write!(
                f,
                "accounting region {} has layout version {found}, this vgpu reads version {expected}; stop its processes and remove it",
                path.display()
            ),
            WrongSize { path, found, expected } => {
                write!(f, "accounting region {} is {found} bytes, expected {expected} (truncated or foreign)", path.display())
            }
            NotReady { path } => write!(f, "accounting region {} was never initialised by its creator", path.display()),
            QuotaMismatch { path, device, region, requested } => write!(
                f,
                "accounting region {} gives device {device} a quota of {}, but this process is configured for {}; live processes use it",
                path.display(),
                quota_text(*region),
                quota_text(*requested)
            ),
            SlotsExhausted { path } => write!(f, "accounting region {}: all {MAX_SLOTS} process slots are in use", path.display()),
        }
    }
}

impl std::error::Error for RegionError {}

/// An allocation refused because it does not fit the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The device's quota.
    pub quota: u64,
    /// What the container held when refused.
    pub used: u64,
    /// What was asked for.
    pub requested: u64,
}

/// Bytes reserved on a device, not yet committed: dropped, they go back.
#[must_use = "a reservation is rolled back when dropped"]
pub struct Reservation<'r> {
    region: &'r Region,
    device: usize,
    bytes: u64,
}

impl Reservation<'_> {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back the part of the reservation above `actual` (e.g. a pitched allocation that
    /// needed less than its worst case). `actual` above the reservation is ignored.
    pub fn shrink_to(&mut self, actual: u64) {
        if actual < self.bytes {
            self.region.give_back(self.device, self.bytes - actual);
            self.bytes = actual;
        }
    }

    /// Keeps the bytes charged without recording an allocation: memory the caller accounts
    /// for as a whole (a memory pool's reservation) and gives back with [`Region::uncharge`].
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// Keeps the bytes and remembers them under `key` (the allocation's address or handle),
    /// so that [`Region::release`] of that key returns them.
    pub fn commit(self, key: u64) {
        let me = std::mem::ManuallyDrop::new(self);
        me.region.allocations.insert(key, me.device as u32, me.bytes);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.region.give_back(self.device, self.bytes);
    }
}

/// An allocation taken out of the books by [`Region::take`], not yet given back.
#[must_use = "release or keep it"]
pub struct Held<'r> {
    region: &'r Region,
    key: u64,
    device: usize,
    bytes: u64,
}

impl Held<'_> {
    /// Its device and bytes.
    pub fn device_bytes(&self) -> (usize, u64) {
        (self.device, self.bytes)
    }

    /// The driver freed it: its bytes go back to the device.
    pub fn release(self) {
        self.region.give_back(self.device, self.bytes);
    }

    /// The driver did not free it: it stays recorded under its key.
    pub fn keep(self) {
        self.region.allocations.insert(self.key, self.device as u32, self.bytes);
    }
}

/// One device's figures as the shim and the CLI show them; `used + free == quota` always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// Device index.
    pub device: usize,
    /// The quota, `None` when unlimited.
    pub quota: Option<u64>,
    /// Bytes held (clamped to the quota).
    pub used: u64,
    /// `quota - used` (0 when unlimited).
    pub free: u64,
    /// Highest `used` seen.
    pub peak: u64,
    /// Allocations refused for the quota.
    pub refusals: u64,
    /// Bytes counted on the device but held by no slot (see the module's crash windows).
    pub unattributed: u64,
}

/// One process's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessView {
    /// Slot index.
    pub slot: usize,
    /// PID as its container sees it.
    pub pid: u32,
    /// Claim generation of the slot.
    pub generation: u64,
    /// Whether the process is alive (it holds its slot's lock).
    pub alive: bool,
    /// Bytes held per device.
    pub used: [u64; MAX_DEVICES],
}

/// A read-only view of a region, for tools (`vgpu ps`, the exporter): it never registers,
/// reaps, writes or waits, so it cannot disturb the processes using the region.
pub struct Observer {
    inner: Region,
}

impl Observer {
    /// Opens `path` read-only. The file must be a complete, published region of this layout
    /// (any owner: a node's tools read every container's region).
    pub fn open(path: &Path) -> Result<Observer, RegionError> {
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| RegionError::Io {
            path: path.to_path_buf(),
            op: "open",
            err: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        })?;
        // SAFETY: open(2) with a NUL-terminated path.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ELOOP) => RegionError::Symlink { path: path.to_path_buf() },
                _ => RegionError::Io { path: path.to_path_buf(), op: "open", err },
            });
        }
        let fail = |e: RegionError| {
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
            Err(e)
        };
        // SAFETY: fstat into a zeroed buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return fail(io_err(path, "fstat"));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return fail(RegionError::NotRegular { path: path.to_path_buf() });
        }
        if st.st_size as u64 != FILE_SIZE as u64 {
            return fail(RegionError::WrongSize { path: path.to_path_buf(), found: st.st_size as u64, expected: FILE_SIZE as u64 });
        }
        // SAFETY: a read-only shared mapping of a file of exactly FILE_SIZE bytes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), FILE_SIZE, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return fail(io_err(path, "mmap"));
        }
        let inner = Region {
            base: p.cast(),
            fd,
            path: path.to_path_buf(),
            slot: usize::MAX,
            generation: 0,
            allocations: AllocationMap::with_capacity(0),
        };
        let h = inner.header();
        if h.magic.load(Acquire) != MAGIC {
            return Err(RegionError::BadMagic { path: path.to_path_buf() });
        }
        let version = h.version.load(Acquire);
        if version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch { path: path.to_path_buf(), found: version, expected: LAYOUT_VERSION });
        }
        if h.ready.load(Acquire) != 1 {
            return Err(RegionError::NotReady { path: path.to_path_buf() });
        }
        Ok(Observer { inner })
    }

    /// The device's figures; `used + free == quota`.
    pub fn device_view(&self, device: usize) -> DeviceView {
        self.inner.device_view(device)
    }

    /// Every claimed slot, live or dead-not-yet-reaped.
    pub fn processes(&self) -> Vec<ProcessView> {
        self.inner.processes()
    }

    /// The SM bucket line of `device` (read-only).
    pub fn sm_bucket(&self, device: usize) -> &SmBucket {
        self.inner.sm_bucket(device)
    }

    /// The region's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// This process's handle on a region: the mapping, its slot, and its allocations.
pub struct Region {
    base: *mut u8,
    fd: libc::c_int,
    path: PathBuf,
    slot: usize,
    generation: u64,
    allocations: AllocationMap,
}

// SAFETY: the mapping is accessed only through atomics; the fd only through fcntl.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        self.unregister();
        // SAFETY: our own mapping and fd.
        unsafe {
            libc::munmap(self.base.cast(), FILE_SIZE);
            libc::close(self.fd);
        }
    }
}

fn io_err(path: &Path, op: &'static str) -> RegionError {
    RegionError::Io { path: path.to_path_buf(), op, err: io::Error::last_os_error() }
}

/// What a device with quota `quota` and container usage `used` looks like to the application,
/// given the device's physical (total, free): total = the quota (never more than the card),
/// free = what is left of it (never below zero, never more than the card has free). The
/// application's `used` is `total - free`, so `used + free == total` holds in every view.
pub fn quota_view(quota: u64, used: u64, phys_total: u64, phys_free: u64) -> (u64, u64) {
    let total = quota.min(phys_total);
    let free = total.saturating_sub(used).min(phys_free);
    (total, free)
}

/// The quota word for an optional limit.
pub fn quota_word(limit: Option<u64>) -> u64 {
    limit.unwrap_or(UNLIMITED)
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

    fn cpath(path: &Path) -> Result<CString, RegionError> {
        CString::new(path.as_os_str().as_bytes()).map_err(|_| RegionError::Io {
            path: path.to_path_buf(),
            op: "open",
            err: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        })
    }

    /// Opens the region at `path` if there is one (`None`: there is no file).
    fn open_existing(path: &Path, quotas: &[Option<u64>; MAX_DEVICES]) -> Result<Option<Region>, RegionError> {
        let cpath = Self::cpath(path)?;
        // SAFETY: open(2) with a NUL-terminated path.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ELOOP) => Err(RegionError::Symlink { path: path.to_path_buf() }),
                Some(libc::EISDIR) => Err(RegionError::NotRegular { path: path.to_path_buf() }),
                _ => Err(RegionError::Io { path: path.to_path_buf(), op: "open", err }),
            };
        }
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
        let ctmp = Self::cpath(&tmp)?;
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
        let cpath = Self::cpath(path)?;
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
        if st.st_uid != me {
            return Err(RegionError::WrongOwner { path: path.to_path_buf(), owner: st.st_uid, me });
        }
        if !created {
            Self::await_size(path, fd)?;
        }
        // SAFETY: a shared mapping of a file now known to be FILE_SIZE bytes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), FILE_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io_err(path, "mmap"));
        }
        Ok(p.cast())
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

    fn header(&self) -> &Header {
        // SAFETY: the mapping is FILE_SIZE bytes, page-aligned.
        unsafe { &*self.base.cast::<Header>() }
    }

    fn ledger(&self, device: usize) -> &DeviceLedger {
        assert!(device < MAX_DEVICES, "device index {device} out of range");
        // SAFETY: in bounds and aligned.
        unsafe { &*self.base.add(LEDGERS_OFF).cast::<DeviceLedger>().add(device) }
    }

    /// The SM bucket cache line of `device` (for the SM limiter).
    pub fn sm_bucket(&self, device: usize) -> &SmBucket {
        assert!(device < MAX_DEVICES, "device index {device} out of range");
        // SAFETY: in bounds and aligned.
        unsafe { &*self.base.add(BUCKETS_OFF).cast::<SmBucket>().add(device) }
    }

    fn slot_at(&self, i: usize) -> &Slot {
        assert!(i < MAX_SLOTS);
        // SAFETY: in bounds and aligned.
        unsafe { &*self.base.add(SLOTS_OFF).cast::<Slot>().add(i) }
    }

    fn my_slot(&self) -> &Slot {
        self.slot_at(self.slot)
    }

    fn slot_lock_offset(i: usize) -> i64 {
        (SLOTS_OFF + i * size_of::<Slot>()) as i64
    }

    fn initialise(&self, quotas: &[Option<u64>; MAX_DEVICES]) {
        let h = self.header();
        h.version.store(LAYOUT_VERSION, Relaxed);
        h.devices.store(MAX_DEVICES as u32, Relaxed);
        h.slots.store(MAX_SLOTS as u32, Relaxed);
        h.file_size.store(FILE_SIZE as u64, Relaxed);
        for (d, q) in quotas.iter().enumerate() {
            self.ledger(d).quota.store(quota_word(*q), Relaxed);
        }
        h.magic.store(MAGIC, Relaxed);
        // The publication point: everything above is visible to whoever sees ready == 1.
        h.ready.store(1, Release);
        unlock(self.fd, 0);
    }

    /// Waits for the creator to publish the region, initialising it if the creator died.
    fn validate(&self) -> Result<(), RegionError> {
        let h = self.header();
        let deadline = now_ns() + 2_000_000_000;
        while h.ready.load(Acquire) != 1 {
            if lock(self.fd, 0, false) {
                if h.ready.load(Acquire) != 1 && h.magic.load(Relaxed) == 0 {
                    // Nobody is initialising an empty region: its creator died. Initialise
                    // it with unlimited quotas; `adopt_quotas` then sets ours (no process can
                    // be live in a region that was never published).
                    self.initialise(&[None; MAX_DEVICES]);
                    break;
                }
                unlock(self.fd, 0);
                if h.ready.load(Acquire) != 1 {
                    break;
                }
            }
            if now_ns() > deadline {
                return Err(RegionError::NotReady { path: self.path.clone() });
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        if h.magic.load(Relaxed) != MAGIC {
            return Err(RegionError::BadMagic { path: self.path.clone() });
        }
        let version = h.version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch { path: self.path.clone(), found: version, expected: LAYOUT_VERSION });
        }
        if h.ready.load(Acquire) != 1 {
            return Err(RegionError::NotReady { path: self.path.clone() });
        }
        let size = h.file_size.load(Relaxed);
        if size != FILE_SIZE as u64 || h.devices.load(Relaxed) != MAX_DEVICES as u32 || h.slots.load(Relaxed) != MAX_SLOTS as u32 {
            return Err(RegionError::WrongSize { path: self.path.clone(), found: size, expected: FILE_SIZE as u64 });
        }
        Ok(())
    }

    /// Makes the region's quotas ours: equal is fine; different is an error while other
    /// processes live in the region, and an update when none does.
    fn adopt_quotas(&self, quotas: &[Option<u64>; MAX_DEVICES]) -> Result<(), RegionError> {
        let differs = |r: &Region| (0..MAX_DEVICES).find(|&d| r.ledger(d).quota.load(Acquire) != quota_word(quotas[d]));
        let Some(d) = differs(self) else {
            return Ok(());
        };
        self.reap();
        if self.live_slots() == 0 {
            for (d, q) in quotas.iter().enumerate() {
                self.ledger(d).quota.store(quota_word(*q), Release);
            }
            return Ok(());
        }
        Err(RegionError::QuotaMismatch {
            path: self.path.clone(),
            device: d,
            region: self.ledger(d).quota.load(Acquire),
            requested: quota_word(quotas[d]),
        })
    }

    fn live_slots(&self) -> usize {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        (0..high).filter(|&i| i != self.slot && self.slot_at(i).state.load(Acquire) == state::LIVE).count()
    }

    fn claim_slot(&mut self) -> Result<(), RegionError> {
        self.reap();
        self.forget_leaks_if_idle();
        for i in 0..MAX_SLOTS {
            let s = self.slot_at(i);
            if s.state.load(Acquire) != state::FREE || !lock(self.fd, Self::slot_lock_offset(i), false) {
                continue;
            }
            // Holding the slot's lock: nobody else can claim it, and a reaper sees it alive.
            if s.state.compare_exchange(state::FREE, state::LIVE, AcqRel, Acquire).is_err() {
                unlock(self.fd, Self::slot_lock_offset(i));
                continue;
            }
            let generation = self.header().generation.fetch_add(1, AcqRel) + 1;
            s.generation.store(generation, Relaxed);
            // SAFETY: getpid cannot fail.
            s.pid.store(unsafe { libc::getpid() } as u32, Relaxed);
            s.started_ns.store(now_ns(), Relaxed);
            self.header().slots_high.fetch_max(i as u32 + 1, AcqRel);
            self.slot = i;
            self.generation = generation;
            return Ok(());
        }
        Err(RegionError::SlotsExhausted { path: self.path.clone() })
    }

    /// With no process left in the region, whatever the devices still count was left by a
    /// process killed between its two updates (see the module's crash windows): it is no
    /// one's, and is forgotten. A process that registers meanwhile can only change `used` by
    /// reserving, which makes the compare-and-swap fail and the bytes wait for the next time.
    fn forget_leaks_if_idle(&self) {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        let anyone = || (0..high).any(|i| self.slot_at(i).state.load(Acquire) != state::FREE);
        if anyone() {
            return;
        }
        for d in 0..MAX_DEVICES {
            let used = &self.ledger(d).used;
            let u = used.load(Acquire);
            // A process reserves only after its slot is LIVE, so if `u` includes a reservation,
            // the scan after the load sees its owner; one that comes after the load makes the
            // compare-and-swap fail.
            if u != 0 && !anyone() {
                let _ = used.compare_exchange(u, 0, AcqRel, Acquire);
            }
        }
    }

    /// Gives this process's bytes back and frees its slot (what dying does, done politely).
    fn unregister(&mut self) {
        if self.slot == usize::MAX {
            return;
        }
        Self::drain_slot(self, self.slot_at(self.slot));
        self.my_slot().state.store(state::FREE, Release);
        unlock(self.fd, Self::slot_lock_offset(self.slot));
        self.slot = usize::MAX;
    }

    /// Returns every byte a slot holds to its devices, each exactly once.
    fn drain_slot(&self, s: &Slot) {
        for d in 0..MAX_DEVICES {
            let bytes = s.used[d].swap(0, AcqRel);
            if bytes > 0 {
                sub_saturating(&self.ledger(d).used, bytes);
            }
            s.refusals[d].store(0, Relaxed);
        }
    }

    /// Returns the bytes of every dead process to its devices. Returns how many processes
    /// were reaped.
    pub fn reap(&self) -> usize {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        let mut reaped = 0;
        for i in 0..high {
            if i == self.slot {
                continue;
            }
            let s = self.slot_at(i);
            if s.state.load(Acquire) != state::LIVE || lock_held(self.fd, Self::slot_lock_offset(i)) {
                continue;
            }
            // The owner is gone. Taking its lock makes us the only reaper of this slot.
            if !lock(self.fd, Self::slot_lock_offset(i), false) {
                continue;
            }
            if s.state.load(Acquire) == state::LIVE {
                self.drain_slot(s);
                s.pid.store(0, Relaxed);
                s.state.store(state::FREE, Release);
                reaped += 1;
            }
            unlock(self.fd, Self::slot_lock_offset(i));
        }
        reaped
    }

    /// Reserves `bytes` of `device` if the container's usage stays within its quota; one
    /// compare-and-swap, plus a reap and one retry when it would not fit.
    pub fn reserve(&self, device: usize, bytes: u64) -> Result<Reservation<'_>, Refused> {
        self.reserve_or(device, bytes, || false)
    }

    /// [`Region::reserve`], with one more chance before refusing: `free_more` may give back
    /// memory the caller holds but no longer needs charged (a memory pool that released its
    /// cache); when it says it did, the reservation is tried once more. One refusal is counted.
    pub fn reserve_or(&self, device: usize, bytes: u64, free_more: impl FnOnce() -> bool) -> Result<Reservation<'_>, Refused> {
        let l = self.ledger(device);
        let quota = l.quota.load(Acquire);
        let attempt = || l.used.fetch_update(AcqRel, Acquire, |u| u.checked_add(bytes).filter(|n| *n <= quota));
        let before = match attempt() {
            Ok(u) => u,
            Err(_) => {
                let reaped = self.reap() > 0;
                let freed = free_more();
                match if reaped || freed { attempt().ok() } else { None } {
                    Some(u) => u,
                    None => return Err(self.refuse(device, quota, l.used.load(Acquire), bytes)),
                }
            }
        };
        self.my_slot().used[device].fetch_add(bytes, AcqRel);
        if before + bytes > l.peak.load(Relaxed) {
            l.peak.fetch_max(before + bytes, Relaxed);
        }
        Ok(Reservation { region: self, device, bytes })
    }

    fn refuse(&self, device: usize, quota: u64, used: u64, requested: u64) -> Refused {
        self.ledger(device).refusals.fetch_add(1, Relaxed);
        self.my_slot().refusals[device].fetch_add(1, Relaxed);
        Refused { quota, used, requested }
    }

    /// Returns bytes this process holds on `device` (slot first, then device: a crash between
    /// the two leaves bytes counted, never bytes double-freed).
    fn give_back(&self, device: usize, bytes: u64) {
        let taken = take_at_most(&self.my_slot().used[device], bytes);
        sub_saturating(&self.ledger(device).used, taken);
    }

    /// Releases the allocation committed under `key`: its bytes go back to its device.
    /// Returns (device, bytes), or `None` for a key this process never committed (such a
    /// free is not ours to account).
    pub fn release(&self, key: u64) -> Option<(usize, u64)> {
        let (device, bytes) = self.allocations.remove(key)?;
        self.give_back(device as usize, bytes);
        Some((device as usize, bytes))
    }

    /// Takes the allocation committed under `key` out of the books without returning its
    /// bytes yet: the caller frees it in the driver, then [`Held::release`]s it (or
    /// [`Held::keep`]s it if the driver refused). Between the two the key is unknown, so an
    /// address the driver hands out again cannot be confused with this one.
    pub fn take(&self, key: u64) -> Option<Held<'_>> {
        let (device, bytes) = self.allocations.remove(key)?;
        Some(Held { region: self, key, device: device as usize, bytes })
    }

    /// Charges `bytes` of `device` whether or not they fit the quota (what the driver has
    /// already taken, such as a context's own memory). Views clamp at the quota.
    pub fn force_charge(&self, device: usize, bytes: u64) {
        let l = self.ledger(device);
        let before = l.used.fetch_add(bytes, AcqRel);
        self.my_slot().used[device].fetch_add(bytes, AcqRel);
        l.peak.fetch_max(before.saturating_add(bytes), Relaxed);
    }

    /// Releases every allocation this process recorded on `device` (its contexts there are
    /// gone, and the driver freed their memory with them). Returns the bytes given back.
    pub fn release_device(&self, device: usize) -> u64 {
        let bytes = self.allocations.drain_device(device as u32);
        self.give_back(device, bytes);
        bytes
    }

    /// The (device, bytes) committed under `key`, if any.
    pub fn allocation(&self, key: u64) -> Option<(usize, u64)> {
        self.allocations.get(key).map(|(d, b)| (d as usize, b))
    }

    /// Charges `bytes` of `device` that are not an allocation (e.g. a context's overhead),
    /// subject to the quota like any reservation.
    pub fn charge(&self, device: usize, bytes: u64) -> Result<(), Refused> {
        let r = self.reserve(device, bytes)?;
        std::mem::forget(r);
        Ok(())
    }

    /// Returns bytes charged with [`Region::charge`].
    pub fn uncharge(&self, device: usize, bytes: u64) {
        self.give_back(device, bytes);
    }

    /// The quota of `device`, `None` when unlimited.
    pub fn quota(&self, device: usize) -> Option<u64> {
        Some(self.ledger(device).quota.load(Acquire)).filter(|q| *q != UNLIMITED)
    }

    /// The device's figures; `used + free == quota`.
    pub fn device_view(&self, device: usize) -> DeviceView {
        let l = self.ledger(device);
        let quota = l.quota.load(Acquire);
        let raw = l.used.load(Acquire);
        let used = raw.min(quota);
        let attributed: u64 = self.processes().iter().map(|p| p.used[device]).sum();
        DeviceView {
            device,
            quota: (quota != UNLIMITED).then_some(quota),
            used,
            free: if quota == UNLIMITED { 0 } else { quota - used },
            peak: l.peak.load(Relaxed),
            refusals: l.refusals.load(Relaxed),
            unattributed: raw.saturating_sub(attributed),
        }
    }

    /// The device's `(used, free, quota)` without a scan (for `cuMemGetInfo`-style views):
    /// `used + free == quota`.
    pub fn usage(&self, device: usize) -> (u64, u64, Option<u64>) {
        let l = self.ledger(device);
        let quota = l.quota.load(Acquire);
        let used = l.used.load(Acquire).min(quota);
        let free = if quota == UNLIMITED { 0 } else { quota - used };
        (used, free, (quota != UNLIMITED).then_some(quota))
    }

    /// Every claimed slot: live processes and dead ones not yet reaped.
    pub fn processes(&self) -> Vec<ProcessView> {
        let high = (self.header().slots_high.load(Acquire) as usize).min(MAX_SLOTS);
        (0..high)
            .filter_map(|i| {
                let s = self.slot_at(i);
                (s.state.load(Acquire) == state::LIVE).then(|| ProcessView {
                    slot: i,
                    pid: s.pid.load(Relaxed),
                    generation: s.generation.load(Relaxed),
                    alive: i == self.slot || lock_held(self.fd, Self::slot_lock_offset(i)),
                    used: std::array::from_fn(|d| s.used[d].load(Relaxed)),
                })
            })
            .collect()
    }

    /// This process's slot index and generation.
    pub fn me(&self) -> (usize, u64) {
        (self.slot, self.generation)
    }

    /// Bytes this process holds on `device`.
    pub fn my_usage(&self, device: usize) -> u64 {
        self.my_slot().used[device].load(Acquire)
    }

    /// The region's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor this handle holds the region (and its slot lock) through.
    pub fn raw_fd(&self) -> libc::c_int {
        self.fd
    }

    /// For a child after `fork`: the inherited handle shares the parent's open file
    /// description (and so its slot lock), so the child opens the file anew, with the quotas
    /// this region holds, and claims a slot of its own. The inherited handle is left as it is:
    /// other threads may still read through its mapping, and its descriptor ([`Self::raw_fd`])
    /// is the caller's to close (from an atfork handler, before anything can use it).
    pub fn reopen_after_fork(&self) -> Result<Region, RegionError> {
        let quotas: [Option<u64>; MAX_DEVICES] = std::array::from_fn(|d| self.quota(d));
        Region::open(&self.path, &quotas, 0o600)
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

fn sub_saturating(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(AcqRel, Acquire, |v| Some(v.saturating_sub(n)));
}

/// Subtracts up to `n` from `a`; returns how much was subtracted.
fn take_at_most(a: &AtomicU64, n: u64) -> u64 {
    match a.fetch_update(AcqRel, Acquire, |v| Some(v.saturating_sub(n))) {
        Ok(prev) | Err(prev) => prev.min(n),
    }
}

/// Nanoseconds of CLOCK_MONOTONIC.
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn file_size(fd: libc::c_int) -> u64 {
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
fn lock(fd: libc::c_int, offset: i64, wait: bool) -> bool {
    let fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: fcntl with a valid flock on our fd.
    unsafe { libc::fcntl(fd, if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK }, &fl) == 0 }
}

fn unlock(fd: libc::c_int, offset: i64) {
    let fl = flock_at(libc::F_UNLCK, offset);
    // SAFETY: fcntl with a valid flock on our fd.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
}

/// True when another open file description holds the lock on that byte.
fn lock_held(fd: libc::c_int, offset: i64) -> bool {
    let mut fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: fcntl with a valid flock on our fd.
    let rc = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    rc != 0 || fl.l_type != libc::F_UNLCK as libc::c_short
}

#[cfg(test)]
mod tests;
