//! Harness for vgpu's end-to-end tests: every test starts real child processes (C programs
//! built with gcc, Rust programs built by cargo, third-party clients) against simgpu.
//!
//! `cargo test` does not build other crates' cdylibs or binaries, so the workspace must be
//! built first (`cargo build --workspace`); the harness says so when an artifact is missing.
//! Each test gets its own simulated machine ([`Sim`]), so tests run in parallel without
//! sharing memory or a timeline unless they mean to.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cargo output directory of the profile the tests were built with (`target/debug`).
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Runs `f` while holding an exclusive lock on `path` (serialises one-time setup across the
/// test binaries cargo runs in parallel).
pub fn with_file_lock<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("open lock file");
    // SAFETY: flock on an fd we own; released when `file` drops.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    f()
}

/// The directory holding simgpu's libraries under their SONAMEs (laid out on first use).
pub fn sim_lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let art = artifacts_dir();
        let out = art.join("simgpu-lib");
        with_file_lock(&art.join(".simgpu-lib.lock"), || {
            simgpu::layout::layout(&art, &out).unwrap_or_else(|e| panic!("laying out simgpu: {e}"))
        })
    })
}

/// The directory holding the C example programs, built with gcc on first use.
pub fn c_programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let art = artifacts_dir();
        let out = art.join("examples-c");
        let lib = sim_lib_dir();
        with_file_lock(&art.join(".examples-c.lock"), || {
            let status = Command::new("bash")
                .arg(repo_root().join("examples/c/build.sh"))
                .arg(&out)
                .arg(lib)
                .status()
                .expect("run examples/c/build.sh");
            assert!(status.success(), "building the C examples failed");
        });
        out
    })
}

/// A program built by cargo into the artifacts directory (e.g. `alloc_rs`).
pub fn cargo_program(name: &str) -> PathBuf {
    let p = artifacts_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// A fresh simulated machine: its own state file, shape and environment.
pub struct Sim {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// A 1-device, 16 GiB, 132-SM machine of its own.
    pub fn new() -> Sim {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vgpu-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create sim dir");
        let env = vec![(
            "SIMGPU_STATE".to_string(),
            dir.join("machine").display().to_string(),
        )];
        Sim { dir, env }
    }

    /// Sets a `SIMGPU_*` (or any other) variable for every process started on this machine.
    pub fn with(mut self, key: &str, value: &str) -> Sim {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The machine's scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command for `program` on this machine: simgpu on `LD_LIBRARY_PATH`, no preload, no
    /// inherited device selection.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("LD_LIBRARY_PATH", sim_lib_dir())
            .env_remove("LD_PRELOAD")
            .env_remove("CUDA_VISIBLE_DEVICES")
            .env_remove("SIMGPU_DEVICES")
            .env_remove("SIMGPU_MEMORY")
            .env_remove("SIMGPU_SMS");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command to completion, killing it after `limit`. Panics with its output on timeout.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{cmd:?} ran past {limit:?}\nstdout:\n{}\nstderr:\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a command that must succeed; returns its stdout. Panics with both streams otherwise.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Lossy UTF-8 of a byte buffer.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `key=value` pairs of every output line that has `key0=value0` as its first pair.
pub fn records(stdout: &str, first_key: &str) -> Vec<HashMap<String, String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{first_key}=")))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// A numeric field of a record.
pub fn num(rec: &HashMap<String, String>, key: &str) -> f64 {
    rec.get(key)
        .unwrap_or_else(|| panic!("no {key} in {rec:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {rec:?}"))
}

/// Compiles one C source file with gcc into the artifacts directory (once per test binary).
pub fn build_c(source: &Path, name: &str) -> PathBuf {
    let art = artifacts_dir();
    let out = art.join("c-tests").join(name);
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    with_file_lock(&art.join(".c-tests.lock"), || {
        let status = Command::new("gcc")
            .args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&out)
            .arg(source)
            .arg("-ldl")
            .status()
            .expect("run gcc");
        assert!(status.success(), "gcc {} failed", source.display());
    });
    out
}

/// A child process running in the background whose stdout is read line by line, so a test can
/// act at a point the child announces (e.g. "memory is allocated") while it keeps running.
/// Dropping it kills the child.
pub struct Background {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    /// Starts `cmd` with stdout and stderr piped.
    pub fn spawn(cmd: &mut Command) -> Background {
        use std::io::{BufRead, Read};
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Background {
            child,
            lines,
            seen: String::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits until a stdout line contains `needle` and returns that line. Panics, with the
    /// output so far, if the child closes stdout first or `limit` passes.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with {needle:?} from the background child ({e:?}); stdout so far:\n{}",
                        self.seen
                    )
                }
            }
        }
    }

    /// The stdout lines read so far.
    pub fn stdout_so_far(&self) -> &str {
        &self.seen
    }

    /// Waits for the child to exit (killing it after `limit`) and returns its status, its whole
    /// stdout and its stderr.
    pub fn finish(&mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The reader thread ends at EOF, once the child (and anything it forked) has exited.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, self.seen.clone(), stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
