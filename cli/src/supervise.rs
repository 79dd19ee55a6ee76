//! How `vgpu run` holds its command, as a wrapper should: the signals a supervisor or a
//! terminal sends (TERM, INT, HUP, QUIT, USR1, USR2) are forwarded to the command, and the
//! command is killed if `vgpu run` itself dies, even by SIGKILL (`PR_SET_PDEATHSIG`, set in the
//! child before `exec` and checked against the parent it was forked from, so a parent that died
//! in between is not missed).
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The signals forwarded to the command.
pub const FORWARDED: [libc::c_int; 6] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Starts `cmd` with the forwarded signals blocked in this process (they are then taken by
/// [`forward`]) and restored in the child, which also dies with this process.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let set = forwarded_set();
    // SAFETY: blocking signals in this thread; every thread started afterwards inherits it.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (sigprocmask, prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL); // the parent died before the death signal was armed
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// Forwards every blocked signal that arrives to `child` (pid), from a thread of its own.
pub fn forward(child: u32) {
    let set = forwarded_set();
    std::thread::spawn(move || {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: a valid set and out-pointer; the signals are blocked in every thread.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child as libc::pid_t, sig) };
            }
        }
    });
}
