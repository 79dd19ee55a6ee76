//! Which PID the simulated driver knows a process by: its PID in the machine's *host* PID
//! namespace, as NVIDIA's kernel driver does.
//!
//! NVIDIA's driver does not support PID namespaces: NVML lists, samples and accounts processes
//! by their PIDs in the host's namespace, whichever namespace the caller is in, so
//! `nvidia-smi` in a container lists host PIDs it cannot resolve ("The nvidia-driver itself
//! does not support pid-namespaces, so anytime you query it for the set of processes that are
//! using GPUs, you will always get the host pids, not the container pids", NVIDIA's maintainer
//! in <https://github.com/NVIDIA/nvidia-docker/issues/1483>; also
//! <https://github.com/NVIDIA/nvidia-docker/issues/179>).
//!
//! A simulated machine's host namespace is the one it was booted in: the namespace of the
//! process that created its state file, or of `simgpud`, the machine's PID service, which
//! claims the machine for its own namespace when it starts. A process in that namespace is
//! known by `getpid()`. A process in another one (a tenant under `unshare --pid`, a Kubernetes
//! pod) cannot name its host PID itself — its `/proc` is its own — so it asks the service over a
//! Unix socket beside the state file, and the kernel answers: `SO_PEERCRED` gives the service
//! the peer's PID translated into the *service's* namespace (socket(7)). That is the kernel's
//! own translation, not a file the tenant could forge or a `/proc` it cannot see.
//!
//! Not modelled: a process that changes namespace after it registered (the driver would keep
//! its PID; so does simgpu). Without the service, a process outside the machine's namespace is
//! known by its own PID, which a real driver would not do; simgpu says so once on stderr.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The PID service's socket for the machine whose state file is `state`.
pub fn socket_path(state: &Path) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".pids");
    PathBuf::from(s)
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid`), which names it across
/// namespaces; `None` when `/proc` is not mounted.
pub fn my_namespace() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// This process's PID in the host namespace, asked of the service at `socket`.
pub fn ask(socket: &Path) -> io::Result<u32> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    match u32::from_le_bytes(b) {
        0 => Err(io::Error::other("the PID service could not see this process (it is in no namespace below the service's)")),
        pid => Ok(pid),
    }
}

/// The PID of `stream`'s peer in this process's namespace, as the kernel translates it
/// (0 when the peer is not visible from here).
pub fn peer_pid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a connected socket we own, a valid out-buffer and its length.
    let rc = unsafe { libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.pid.max(0) as u32)
}

/// Binds the service's socket at `socket` (replacing a stale one), world-connectable: a tenant
/// of any user may ask who it is.
pub fn bind(socket: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(socket)?;
    }
    let l = UnixListener::bind(socket)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Answers every connection on `listener` with the peer's PID in this namespace, for as long
/// as the process runs: a failed accept (a client that hung up, no descriptor left for a
/// moment) is said on stderr and the service goes on. One answer is a `getsockopt` and a
/// 4-byte write: no thread per client is needed.
pub fn serve(listener: &UnixListener) -> io::Result<()> {
    loop {
        let (mut s, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("simgpud: accept: {e}; still serving");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let pid = peer_pid(&s).unwrap_or(0);
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = s.write_all(&pid.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_answers_with_the_callers_pid_in_its_namespace() {
        let dir = std::env::temp_dir().join(format!("simgpu-pids-{}-{}", std::process::id(), crate::now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = socket_path(&dir.join("state"));
        assert!(sock.ends_with("state.pids"));
        let l = bind(&sock).unwrap();
        std::thread::spawn(move || serve(&l));
        // Same namespace: the answer is our own PID.
        assert_eq!(ask(&sock).unwrap(), std::process::id());
        // A stale socket file is replaced by the next bind.
        assert!(bind(&sock).is_ok());
        assert!(my_namespace().is_some());
    }

    #[test]
    fn no_service_is_an_error_not_a_guess() {
        let err = ask(Path::new("/nonexistent/simgpu.pids")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
