//! How `vgpu run` holds its command, as a container runtime holds a container's processes.
//!
//! `vgpu run` forks a *keeper* before anything else, and the keeper starts the command. The
//! keeper is a child subreaper (`PR_SET_CHILD_SUBREAPER`): every process the command leaves
//! behind is reparented to it, so it can always find them. Then:
//!
//! * the signals a supervisor or a terminal sends `vgpu run` (TERM, INT, HUP, QUIT, USR1, USR2)
//!   are forwarded to the keeper, which forwards them to the command;
//! * when the command exits, whatever it left running is killed (as every process of a
//!   container dies with its first one), the region is removed if no live process uses it, and
//!   the keeper exits as the command did (the same code, or the same signal);
//! * if `vgpu run` dies, even by SIGKILL, the keeper hears it (`PR_SET_PDEATHSIG`, checked
//!   against the parent it was forked from so a death in between is not missed), kills the
//!   command and everything it started, and removes the region the same way.
//!
//! The command itself also dies with the keeper (its own death signal). Out of reach: a
//! process that leaves the keeper's tree on purpose (a double fork under another subreaper, a
//! new PID namespace); the command's descendants if the keeper itself is SIGKILLed (only the
//! command has a death signal); a leftover stuck in uninterruptible sleep (reaped by init,
//! after a bounded wait); and leftovers at all when `/proc` is not this PID namespace's (they
//! are found through it). A signal sent to the whole process group (`kill -- -PGID`, a
//! supervisor's control-group kill) reaches the command directly and once more through
//! `vgpu run`; a terminal's (Ctrl-C) reaches it once.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The signals forwarded to the command.
pub const FORWARDED: [libc::c_int; 6] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

/// The keeper's death signal: `vgpu run` is gone. A real-time signal no one else sends.
fn death_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

fn set_of(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Everything the keeper waits for: the forwarded signals, its children's exits, and its
/// parent's death.
fn keeper_set() -> libc::sigset_t {
    let mut all = FORWARDED.to_vec();
    all.extend([libc::SIGCHLD, death_signal()]);
    set_of(&all)
}

/// Runs `cmd` under a keeper and returns `vgpu run`'s exit code: the command's, or 128 + the
/// signal that ended it. `cleanup` runs in the keeper once no process of the command is left
/// (it removes the region). Call it while this process has no other thread.
pub fn run(cmd: &mut Command, cleanup: impl FnOnce()) -> std::io::Result<i32> {
    let set = keeper_set();
    // SAFETY: blocking signals in this (only) thread; the keeper inherits the mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let mut report = [0 as libc::c_int; 2];
    // SAFETY: a pipe into a valid array; close-on-exec so the command does not inherit it.
    if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork in a single-threaded process; the child continues in this code only.
    let keeper = unsafe { libc::fork() };
    if keeper < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if keeper == 0 {
        // SAFETY: the read end is the parent's.
        unsafe { libc::close(report[0]) };
        keep(cmd, parent, report[1], cleanup);
    }
    // SAFETY: the write end is the keeper's.
    unsafe { libc::close(report[1]) };
    // The keeper writes the errno of a failed start, or closes the pipe once the command runs.
    let mut errno = [0u8; 4];
    // SAFETY: reading into a 4-byte buffer we own from our end of the pipe.
    let got = unsafe { libc::read(report[0], errno.as_mut_ptr().cast(), 4) };
    // SAFETY: our end, read once.
    unsafe { libc::close(report[0]) };
    let started = got != 4;
    if started {
        forward_to(keeper as u32);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(keeper, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(std::io::Error::last_os_error());
        }
    }
    if !started {
        return Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) })
}

/// Whether a signal with this siginfo must be passed on. One the kernel sent a whole process
/// group (a terminal's Ctrl-C or Ctrl-\, a hangup: `SI_KERNEL`) has reached the command
/// directly, which shares `vgpu run`'s group: passing it on would deliver it twice.
fn pass_on(info: &libc::siginfo_t) -> bool {
    info.si_code != libc::SI_KERNEL
}

/// Whether the keeper received this signal from `vgpu run` (its forwarding). A signal sent to
/// the keeper by anyone else was sent to the whole process group (the keeper is nobody's
/// target by name), which the command is in too: it has it already.
fn from_parent(info: &libc::siginfo_t, parent: libc::pid_t) -> bool {
    // SAFETY: si_pid is valid for signals sent by kill/sigqueue; for others it reads a
    // kernel-filled field of the same union, which cannot equal a live parent's PID.
    info.si_code == libc::SI_USER && unsafe { info.si_pid() } == parent
}

/// Forwards every forwarded signal that arrives here to `pid`, from a thread of its own.
fn forward_to(pid: u32) {
    let set = set_of(&FORWARDED);
    std::thread::spawn(move || {
        loop {
            let mut info = zeroed_siginfo();
            // SAFETY: a valid set and out-pointer; the signals are blocked in every thread.
            let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
            if sig > 0 && pass_on(&info) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as libc::pid_t, sig) };
            }
        }
    });
}

/// The keeper: starts the command, forwards signals to it, and when it ends or `vgpu run`
/// dies, kills what is left, runs `cleanup` and exits as the command did. Never returns.
fn keep(cmd: &mut Command, parent: libc::pid_t, report: libc::c_int, cleanup: impl FnOnce()) -> ! {
    let set = keeper_set();
    // SAFETY: prctl and getppid have no memory preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, death_signal() as libc::c_ulong, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the command's process between fork and exec and calls only
    // async-signal-safe functions (sigprocmask, prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != me {
                libc::raise(libc::SIGKILL); // the keeper died before the death signal was armed
            }
            Ok(())
        })
    };
    let child = match cmd.spawn() {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::ENOENT).to_ne_bytes();
            // SAFETY: writing 4 bytes we own to our end of the pipe, then exiting.
            unsafe {
                libc::write(report, errno.as_ptr().cast(), 4);
                libc::_exit(127);
            }
        }
    };
    // SAFETY: our end of the pipe; closing it tells the parent the command runs.
    unsafe { libc::close(report) };
    // SAFETY: getppid cannot fail.
    let mut parent_gone = unsafe { libc::getppid() } != parent;
    let mut ended: Option<libc::c_int> = None; // the command's wait status, once it ended
    while ended.is_none() && !parent_gone {
        let mut info = zeroed_siginfo();
        // SAFETY: a valid set and out-pointer.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig == libc::SIGCHLD {
            ended = reap(child);
        } else if sig == death_signal() {
            parent_gone = true;
        } else if sig > 0 && from_parent(&info, parent) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child, sig) };
        }
    }
    kill_descendants(me);
    cleanup();
    match ended {
        Some(status) => exit_as(status),
        // `vgpu run` died: the command was killed with it.
        None => die_by(libc::SIGKILL),
    }
}

fn zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Reaps every exited child without blocking; the wait status of `command` once it is among
/// them.
fn reap(command: libc::pid_t) -> Option<libc::c_int> {
    let mut ended = None;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own children without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return ended;
        }
        if pid == command {
            ended = Some(status);
        }
    }
}

/// Kills every process below this one (the command's leftovers, reparented here) and reaps
/// them, until none is left.
fn kill_descendants(me: libc::pid_t) {
    for _ in 0..1000 {
        let children = children_of(me);
        if children.is_empty() {
            return;
        }
        for c in &children {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(*c, libc::SIGKILL) };
        }
        // Reap what died; one that does not die at once (uninterruptible sleep) is left to
        // init after a bounded wait rather than hang `vgpu run`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut left = children;
        while !left.is_empty() && std::time::Instant::now() < deadline {
            left.retain(|c| {
                let mut status = 0;
                // SAFETY: reaping our own child without blocking.
                unsafe { libc::waitpid(*c, &mut status, libc::WNOHANG) == 0 }
            });
            if !left.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        if !left.is_empty() {
            return;
        }
    }
}

/// The children of `parent`, from `/proc`.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                // After the command name's closing parenthesis: the state, then the parent.
                let rest = s.get(s.rfind(')')? + 2..)?;
                rest.split(' ').nth(1)?.parse::<libc::pid_t>().ok()
            }) == Some(parent)
        })
        .collect()
}

/// Exits with wait status `status`'s meaning: the same code, or the same signal.
fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        die_by(libc::WTERMSIG(status));
    }
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

/// Ends this process by signal `sig` (re-raised with its default action, so the parent sees
/// it as such), or exits with 128 + `sig` if it does not end us.
fn die_by(sig: libc::c_int) -> ! {
    let only = set_of(&[sig]);
    // SAFETY: resetting a disposition, unblocking and raising a signal on ourselves, then
    // exiting if it did not end us.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}
