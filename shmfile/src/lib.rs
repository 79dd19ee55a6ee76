//! A file that processes share through `mmap`, the way vgpu's accounting region and simgpu's
//! simulated machine both are. What they have in common lives here once:
//!
//! * **Publication.** [`create_published`] builds the file under a temporary name beside its
//!   path, lets the caller initialise the mapping, and publishes it with `link(2)`, which fails
//!   if another process published first. A file at the path is therefore always complete, and
//!   a creator that dies leaves nothing there.
//! * **Opening.** [`open_nofollow`] never follows a symlink; [`check_regular`] refuses what is
//!   not a regular file (and, where the caller asks, a file of another user).
//! * **Liveness.** A process holds an open-file-description lock on a byte of its own
//!   ([`lock`]); the kernel drops it when the process dies, however it dies, and
//!   [`held_elsewhere`] asks whether it still stands. Nothing here trusts a PID: PIDs are
//!   reused and differ between PID namespaces. (The lock belongs to the open file description,
//!   which a mapping of the file keeps alive as much as a descriptor does.)
//! * **Time.** [`now_ns`]: `CLOCK_MONOTONIC`, the one clock every process on a machine agrees on.
//!
//! The typed header each user validates (magic, version, sizes) stays with that user: only the
//! user knows its layout.
#![allow(unsafe_code)] // system calls over file descriptors and mappings

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Nanoseconds of `CLOCK_MONOTONIC`: comparable across the processes of one machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `path` as a C string; a NUL byte in it is an error, not a truncation.
pub fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens `path` with `flags` (plus `O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK`, so a FIFO planted at
/// the path cannot block the caller): `None` when there is no file. A
/// symlink at the path is the error `ELOOP`.
pub fn open_nofollow(path: &Path, flags: libc::c_int) -> io::Result<Option<libc::c_int>> {
    let c = cpath(path)?;
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd >= 0 {
        return Ok(Some(fd));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) { Ok(None) } else { Err(err) }
}

/// Why an open file cannot be trusted.
#[derive(Debug)]
pub enum Untrusted {
    /// `fstat` failed.
    Io(io::Error),
    /// Not a regular file.
    NotRegular,
    /// Owned by another user (`owner`, while this process runs as `me`).
    WrongOwner {
        /// The file's owner.
        owner: u32,
        /// This process's effective user.
        me: u32,
    },
}

/// Checks that `fd` is a regular file and, when `own`, that this user owns it.
pub fn check_regular(fd: libc::c_int, own: bool) -> Result<(), Untrusted> {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Untrusted::Io(io::Error::last_os_error()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Untrusted::NotRegular);
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if own && st.st_uid != me {
        return Err(Untrusted::WrongOwner { owner: st.st_uid, me });
    }
    Ok(())
}

/// The size of the file behind `fd` (0 if `fstat` fails).
pub fn file_size(fd: libc::c_int) -> u64 {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_size as u64
}

/// Maps `len` bytes of `fd`, shared, writable or read-only. The caller has checked that the
/// file is at least that long.
pub fn map(fd: libc::c_int, len: usize, writable: bool) -> io::Result<*mut u8> {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: a shared mapping of an open file; touching pages beyond its end would fault, so
    // callers map only what the file holds.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(p.cast()) }
}

/// What [`create_published`] made.
pub enum Created {
    /// This process published the file: its descriptor and writable mapping of `len` bytes.
    Ours {
        /// The descriptor (open read-write).
        fd: libc::c_int,
        /// The mapping.
        base: *mut u8,
    },
    /// Another process published first: open theirs.
    Theirs,
}

/// Builds a file of `len` bytes with `mode` under a temporary name beside `path`, maps it,
/// runs `init` over the mapping, and publishes it at `path` with `link(2)`. The temporary name
/// is removed whatever happens. `init` runs before anyone else can see the file, so it needs no
/// lock; an error it returns abandons the file.
pub fn create_published<E: From<io::Error>>(
    path: &Path,
    len: usize,
    mode: u32,
    init: impl FnOnce(*mut u8) -> Result<(), E>,
) -> Result<Created, E> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // SAFETY: getpid cannot fail.
    let tmp = path.with_file_name(format!(".{name}.{}.{}.tmp", unsafe { libc::getpid() }, now_ns()));
    let ctmp = cpath(&tmp)?;
    let cfinal = cpath(path)?;
    // SAFETY: open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(ctmp.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let abandon = |base: Option<*mut u8>| {
        // SAFETY: our own temporary name, mapping and descriptor, used no more.
        unsafe {
            libc::unlink(ctmp.as_ptr());
            if let Some(b) = base {
                libc::munmap(b.cast(), len);
            }
            libc::close(fd);
        }
    };
    // The exact mode asked for, whatever the umask.
    // SAFETY: fchmod and ftruncate on our own new file.
    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 || unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
        let e = io::Error::last_os_error();
        abandon(None);
        return Err(e.into());
    }
    let base = match map(fd, len, true) {
        Ok(b) => b,
        Err(e) => {
            abandon(None);
            return Err(e.into());
        }
    };
    if let Err(e) = init(base) {
        abandon(Some(base));
        return Err(e);
    }
    // SAFETY: link(2) with NUL-terminated paths: publishes the complete file, or fails with
    // EEXIST if another process published one first.
    let linked = unsafe { libc::link(ctmp.as_ptr(), cfinal.as_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: removing our own temporary name (the published name stays).
    unsafe { libc::unlink(ctmp.as_ptr()) };
    if linked == 0 {
        return Ok(Created::Ours { fd, base });
    }
    // SAFETY: our own mapping and descriptor of a file nobody will see.
    unsafe {
        libc::munmap(base.cast(), len);
        libc::close(fd);
    }
    if err.raw_os_error() == Some(libc::EEXIST) { Ok(Created::Theirs) } else { Err(err.into()) }
}

fn flock_at(kind: libc::c_int, offset: i64) -> libc::flock {
    // SAFETY: plain data; zero is a valid start.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Takes the open-file-description write lock on the byte at `offset`; `wait` blocks for it.
/// True when held.
pub fn lock(fd: libc::c_int, offset: i64, wait: bool) -> bool {
    let fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: fcntl with a valid flock on the caller's descriptor.
    unsafe { libc::fcntl(fd, if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK }, &fl) == 0 }
}

/// Takes the open-file-description read (shared) lock on the byte at `offset`, which any
/// number of descriptions may hold at once and a write lock excludes; `wait` blocks for it.
/// True when held.
pub fn lock_shared(fd: libc::c_int, offset: i64, wait: bool) -> bool {
    let fl = flock_at(libc::F_RDLCK, offset);
    // SAFETY: fcntl with a valid flock on the caller's descriptor.
    unsafe { libc::fcntl(fd, if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK }, &fl) == 0 }
}

/// Releases the lock on the byte at `offset`.
pub fn unlock(fd: libc::c_int, offset: i64) {
    let fl = flock_at(libc::F_UNLCK, offset);
    // SAFETY: fcntl with a valid flock on the caller's descriptor.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
}

/// True when another open file description holds the lock on the byte at `offset` (its
/// process is alive). A lock held through `fd` itself does not count.
pub fn held_elsewhere(fd: libc::c_int, offset: i64) -> bool {
    let mut fl = flock_at(libc::F_WRLCK, offset);
    // SAFETY: fcntl with a valid flock on the caller's descriptor.
    let rc = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    rc != 0 || fl.l_type != libc::F_UNLCK as libc::c_short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vgpu-shmfile-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_first_creator_publishes_and_the_second_finds_theirs() {
        let d = dir();
        let path = d.join("f");
        let first = create_published::<io::Error>(&path, 4096, 0o640, |base| {
            // SAFETY: the mapping is 4096 writable bytes.
            unsafe { *base = 7 };
            Ok(())
        })
        .unwrap();
        let Created::Ours { fd, base } = first else { panic!("nobody had published") };
        assert!(matches!(create_published::<io::Error>(&path, 4096, 0o600, |_| Ok(())).unwrap(), Created::Theirs));
        assert_eq!(file_size(fd), 4096);
        let other = open_nofollow(&path, libc::O_RDONLY).unwrap().unwrap();
        let seen = map(other, 4096, false).unwrap();
        // SAFETY: both mappings are 4096 bytes of the same file.
        assert_eq!(unsafe { (*seen, *base) }, (7, 7));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("f")], "no temporary name is left behind");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_init_error_publishes_nothing_and_symlinks_are_not_followed() {
        let d = dir();
        let path = d.join("f");
        let r = create_published(&path, 4096, 0o600, |_| Err(io::Error::other("no")));
        assert!(r.is_err());
        assert!(open_nofollow(&path, libc::O_RDONLY).unwrap().is_none());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert_eq!(open_nofollow(&path, libc::O_RDONLY).err().and_then(|e| e.raw_os_error()), Some(libc::ELOOP));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_lock_is_seen_from_another_description_and_not_from_its_own() {
        let d = dir();
        let path = d.join("f");
        std::fs::write(&path, [0u8; 64]).unwrap();
        let a = open_nofollow(&path, libc::O_RDWR).unwrap().unwrap();
        let b = open_nofollow(&path, libc::O_RDWR).unwrap().unwrap();
        assert!(lock(a, 3, false));
        assert!(held_elsewhere(b, 3));
        assert!(!held_elsewhere(a, 3), "its own lock does not conflict");
        assert!(!lock(b, 3, false));
        assert!(lock(b, 4, false), "one byte each");
        unlock(a, 3);
        assert!(!held_elsewhere(b, 3));
        // SAFETY: our own descriptors.
        unsafe {
            libc::close(b);
        }
        assert!(!held_elsewhere(a, 4), "closing the only reference drops the lock");
        let _ = std::fs::remove_dir_all(&d);
    }
}
