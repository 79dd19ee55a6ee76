//! Harness for vgpu's end-to-end tests: every test starts real child processes (C programs
//! built with gcc, Rust programs built by cargo, third-party clients) against simgpu.
//!
//! `cargo test` does not build other crates' cdylibs or binaries, so the workspace must be
//! built first (`cargo build --workspace`); the harness says so when an artifact is missing.
//! Each test gets its own simulated machine ([`Sim`]), so tests run in parallel without
//! sharing memory or a timeline unless they mean to.
#![deny(unsafe_code)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The cargo output directory of the profile the tests were built with (`target/debug`).
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test binary>
    exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").to_path_buf()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository root").to_path_buf()
}

/// Runs `f` while holding an exclusive lock on `path` (serialises one-time setup across the
/// test binaries cargo runs in parallel).
#[allow(unsafe_code)] // flock(2) on a file this function opened
pub fn with_file_lock<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).expect("open lock file");
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
    assert!(p.is_file(), "{} is missing: run `cargo build --workspace` before the tests", p.display());
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
    /// [`Sim::new`] with every context costing 64 MiB, the figure the shim tests assert on.
    pub fn with_64m_contexts() -> Sim {
        Sim::new().with("SIMGPU_CONTEXT_MEMORY", "64m")
    }

    /// A 1-device, 16 GiB, 132-SM machine of its own.
    pub fn new() -> Sim {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vgpu-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create sim dir");
        let mut env = vec![("SIMGPU_STATE".to_string(), dir.join("machine").display().to_string())];
        // The scheduler model is the suite's choice: machines are time-sliced (simgpu's default);
        // `SIMGPU_TIMESLICE=off tools/test.sh` runs every machine on one FIFO.
        for k in ["SIMGPU_TIMESLICE", "SIMGPU_CONTEXT_SWITCH"] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.to_string(), v));
            }
        }
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
            .env_remove("SIMGPU_SMS")
            .env_remove("SIMGPU_NVML_PERIOD");
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
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!("{cmd:?} ran past {limit:?}\nstdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a command that must succeed; returns its stdout. Panics with both streams otherwise.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Lossy UTF-8 of a byte buffer.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One output line's `key=value` pairs.
pub type Rec = HashMap<String, String>;

/// A field of a record (panics naming the record when it is missing).
pub fn field<'a>(rec: &'a Rec, key: &str) -> &'a str {
    rec.get(key).unwrap_or_else(|| panic!("no {key} in {rec:?}"))
}

/// A numeric field of a record as an unsigned integer (bytes, counts; negatives read 0).
pub fn u(rec: &Rec, key: &str) -> u64 {
    num(rec, key) as u64
}

/// The one record with `op` (and, if given, `stage`); panics listing them all otherwise.
pub fn op<'a>(recs: &'a [Rec], op: &str, stage: Option<&str>) -> &'a Rec {
    let found: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.get("op").map(String::as_str) == Some(op))
        .filter(|r| stage.is_none() || r.get("stage").map(String::as_str) == stage)
        .collect();
    assert_eq!(found.len(), 1, "expected one op={op} stage={stage:?} record in {recs:#?}");
    found[0]
}

/// The `key=value` pairs of every output line that has `key0=value0` as its first pair.
pub fn records(stdout: &str, first_key: &str) -> Vec<HashMap<String, String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{first_key}=")))
        .map(|l| l.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .collect()
}

/// A numeric field of a record.
pub fn num(rec: &HashMap<String, String>, key: &str) -> f64 {
    rec.get(key).unwrap_or_else(|| panic!("no {key} in {rec:?}")).parse().unwrap_or_else(|_| panic!("{key} is not a number in {rec:?}"))
}

/// Compiles one C source file (outside `tests/c`, e.g. simgpu's own smoke test) into the
/// artifacts directory as the program `name`, as [`build_c_helper`] does.
pub fn build_c(source: &Path, name: &str) -> PathBuf {
    compile_c(source, &artifacts_dir().join("c-tests").join(name), false);
    artifacts_dir().join("c-tests").join(name)
}

/// gcc, warnings as errors, once per test binary and only when the source (or a header beside
/// it) is newer than the output. The output is written under a temporary name and renamed into
/// place, so a program that another test is running is never rewritten under it.
fn compile_c(source: &Path, out: &Path, shared: bool) {
    use std::sync::Mutex;
    static BUILT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|p| p == out) {
        return;
    }
    let dir = out.parent().expect("an output directory");
    std::fs::create_dir_all(dir).expect("mkdir c-tests");
    with_file_lock(&artifacts_dir().join(".c-tests.lock"), || {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let headers = std::fs::read_dir(source.parent().expect("a source directory"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "h"));
        let newest = std::iter::once(source.to_path_buf()).chain(headers).filter_map(|p| mtime(&p)).max();
        if matches!((mtime(out), newest), (Some(o), Some(s)) if o >= s) {
            return;
        }
        let name = out.file_name().expect("an output name").to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut gcc = Command::new("gcc");
        gcc.args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror"]);
        if shared {
            gcc.args(["-shared", "-fPIC"]);
        }
        let status = gcc.arg("-o").arg(&tmp).arg(source).arg("-ldl").status().expect("run gcc");
        assert!(status.success(), "gcc {} failed", source.display());
        std::fs::rename(&tmp, out).expect("rename the built program into place");
    });
    built.push(out.to_path_buf());
}

pub use vgpu_examples::ALLOC_FAMILIES;

/// Waits (bounded) until `alloc_families`, writing to `stdout`, has made `blocks` successful
/// allocations; its stdout keeps being drained afterwards, so it never dies of SIGPIPE. False
/// when it did not within `limit`.
pub fn await_allocations(stdout: std::process::ChildStdout, blocks: u32, limit: Duration) -> bool {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("family=") && line.contains("op=alloc") && line.contains("rc=0") {
                held += 1;
                if held == blocks {
                    let _ = tx.send(());
                }
            }
        }
    });
    rx.recv_timeout(limit).is_ok()
}

/// `cudarc_client` keeping a 132-SM simulated device busy for about a second: 1000 one-wave
/// launches of `spin_1000us` on 1 MiB, in the background.
pub fn busy_cudarc_client(sim: &Sim) -> Background {
    let args = ["--alloc-mib", "1", "--kernel", "spin_1000us", "--kernels", "1000", "--grid", "132"];
    Background::spawn(sim.command(cargo_program("cudarc_client")).args(args))
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
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
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
        Background { child, lines, seen: String::new(), stderr: Some(stderr) }
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
                    panic!("no line with {needle:?} from the background child ({e:?}); stdout so far:\n{}", self.seen)
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
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
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

// ---- Running programs under the shim (libvgpu.so) -----------------------------------------

/// `libvgpu.so` of the profile the tests were built with (`target/<profile>/libvgpu.so`).
/// Panics, saying how to build it, when it is missing.
pub fn shim_path() -> PathBuf {
    let p = artifacts_dir().join("libvgpu.so");
    assert!(p.is_file(), "{} is missing: run `cargo build --workspace` before the tests", p.display());
    p
}

/// The variables of the shim's contract (and its overrides) that a test must not inherit from
/// the environment it runs in: every `CUDA_DEVICE_*`, plus these.
const SHIM_VARIABLES: &[&str] = &[
    "CUDA_DISABLE_CONTROL",
    "GPU_CORE_UTILIZATION_POLICY",
    "LIBCUDA_LOG_LEVEL",
    "VGPU_REAL_LIBCUDA",
    "VGPU_REAL_LIBNVML",
    "CUDA_TASK_PRIORITY",
    "VGPU_PRIORITY_FLOOR",
];

impl Sim {
    /// The accounting region of this machine's container (`<dir>/region`), which
    /// [`Sim::shimmed`] commands share.
    pub fn region(&self) -> PathBuf {
        self.dir.join("region")
    }

    /// The node-wide priority board of this machine (`<dir>/priority.board`), which every
    /// [`Sim::shimmed`] command maps: tests never share the default board in /tmp.
    pub fn priority_board(&self) -> PathBuf {
        self.dir.join("priority.board")
    }

    /// A command for `program` on this machine with `libvgpu.so` preloaded, the region at
    /// [`Sim::region`] and the board at [`Sim::priority_board`]; no limit is set (the test sets
    /// `CUDA_DEVICE_MEMORY_LIMIT` & co.) and no shim variable is inherited from the test's own
    /// environment.
    pub fn shimmed(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.command(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CUDA_DEVICE_") {
                c.env_remove(&k);
            }
        }
        for k in SHIM_VARIABLES {
            c.env_remove(k);
        }
        c.env("LD_PRELOAD", shim_path())
            .env("CUDA_DEVICE_MEMORY_SHARED_CACHE", self.region())
            .env("VGPU_PRIORITY_BOARD", self.priority_board());
        c
    }
}

/// Builds `tests/c/<name>.c` with gcc into `<artifacts>/c-tests/<name>` (a program) or
/// `<artifacts>/c-tests/lib<name>.so` (with `shared`: `-shared -fPIC`); see `compile_c`.
pub fn build_c_helper(name: &str, shared: bool) -> PathBuf {
    let dir = artifacts_dir().join("c-tests");
    let out = if shared { dir.join(format!("lib{name}.so")) } else { dir.join(name) };
    compile_c(&repo_root().join("tests/c").join(format!("{name}.c")), &out, shared);
    out
}

impl Background {
    /// Writes one line to the child's stdin (the command must have had `stdin(Stdio::piped())`
    /// set before [`Background::spawn`]).
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("the command was spawned with stdin(Stdio::piped())");
        writeln!(stdin, "{line}").expect("write to the child's stdin");
        stdin.flush().expect("flush the child's stdin");
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child with SIGKILL and reaps it (no chance to clean up).
    pub fn kill9(&mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed child")
    }
}

// ---- The Python clients' virtual environment ----------------------------------------------

/// FNV-1a: a stable hash of the requirements file for the venv's stamp.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Runs a setup command; `Err` carries its output's tail.
fn setup_step(what: &str, cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot start {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let all = text(&out.stderr) + &text(&out.stdout);
    let mut why: Vec<&str> = all.lines().filter(|l| l.starts_with("ERROR")).collect();
    if why.is_empty() {
        why = all.lines().rev().take(3).collect();
        why.reverse();
    }
    Err(format!("{what} failed ({}): {}", out.status, why.join(" | ")))
}

/// Creates (or reuses) `<artifacts>/pyenv` with the packages pinned by
/// `tests/python/requirements.txt`; returns its python.
fn setup_venv() -> Result<PathBuf, String> {
    venv_with("pyenv", &repo_root().join("tests/python/requirements.txt"))
}

/// The Python clients' venv python, or `None` after printing `SKIPPED: <reason>` when Python
/// or PyPI is unavailable (a failure instead when `VGPU_REQUIRE_PYTHON=1`, as in CI).
pub fn python_venv() -> Option<&'static Path> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let setup = PYTHON.get_or_init(setup_venv);
    or_skip("the Python clients", setup)?;
    setup.as_deref().ok()
}

// ---- Tool venvs for tests/tests/k8s.rs and tests/tests/release.rs ---------------------------

/// A Python virtual environment at `<artifacts>/<name>` holding the pinned packages of the
/// pip requirements file `requirements`; returns its python. Like the clients' venv above:
/// serialised across test binaries by a file lock, rebuilt only when the file's hash (kept in a
/// stamp) changes. `Err` when Python, venv or PyPI is unavailable.
pub fn venv_with(name: &str, requirements: &Path) -> Result<PathBuf, String> {
    let art = artifacts_dir();
    let venv = art.join(name);
    let wanted = std::fs::read(requirements).map_err(|e| format!("read {}: {e}", requirements.display()))?;
    let hash = format!("{:016x}\n", fnv1a(&wanted));
    let stamp = venv.join("vgpu-requirements.hash");
    let python = venv.join("bin/python");
    with_file_lock(&art.join(format!(".{name}.lock")), || {
        if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
            return Ok(python.clone());
        }
        let _ = std::fs::remove_dir_all(&venv);
        setup_step("python3 -m venv", Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        setup_step(
            "pip install (is PyPI reachable?)",
            Command::new(venv.join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "--no-input", "--quiet", "--timeout", "30", "-r"])
                .arg(requirements),
        )?;
        std::fs::write(&stamp, &hash).map_err(|e| format!("write {}: {e}", stamp.display()))?;
        Ok(python.clone())
    })
}

/// The result of a setup that may be impossible here (no Python, no registry): `Some` when it
/// worked; otherwise prints `SKIPPED: <what>: <reason>` and returns `None`, or panics when
/// `VGPU_REQUIRE_PYTHON=1` (CI, where nothing may be skipped silently).
pub fn or_skip<T: Clone>(what: &str, setup: &Result<T, String>) -> Option<T> {
    match setup {
        Ok(v) => Some(v.clone()),
        Err(reason) if std::env::var("VGPU_REQUIRE_PYTHON").as_deref() == Ok("1") => {
            panic!("VGPU_REQUIRE_PYTHON=1 but {what} cannot run: {reason}")
        }
        Err(reason) => {
            println!("SKIPPED: {what}: {reason}");
            None
        }
    }
}

// ---- The simulated device's timeline (SM share tests) -------------------------------------

impl Sim {
    /// An observer of this machine (it does not register as a process, so it is not a GPU user
    /// of its own): its device timeline (`busy_between`, `busy_by_process`) is the ground truth
    /// of which processes kept the simulated GPU busy, and when. Creates the machine if no
    /// program has yet.
    pub fn timeline(&self) -> simgpu::machine::Machine {
        let cfg = simgpu::config::from_lookup(|k| self.env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()))
            .expect("this machine's simgpu configuration");
        simgpu::machine::Machine::observe(&cfg).expect("observe the simulated machine")
    }
}

// ---- Containers: PID namespaces, as Kubernetes runs tenants --------------------------------

/// Whether this machine lets the tests make PID namespaces (`unshare --pid --fork
/// --mount-proc`, which needs root or a user namespace). In CI (`CI=true`, root) it must:
/// there a missing `unshare` fails the test instead of skipping it.
pub fn namespaces_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root and must be able to run `unshare --pid --fork --mount-proc`"
            );
            eprintln!("skipping: this machine cannot make PID namespaces (unshare --pid needs root)");
        }
        ok
    })
}

/// `cmd` run as a container's process: in a new PID namespace with its own `/proc`
/// (`unshare --pid --fork --kill-child --mount-proc`: killing the `unshare` kills the
/// namespace's first process, and with it every process of the namespace), with `cmd`'s program, arguments, environment and
/// directory. With `user`, also in a new user namespace mapping the caller to root (where the
/// real root is absent, as in a rootless runtime).
pub fn in_container(cmd: &Command, user: bool) -> Command {
    let mut c = Command::new("unshare");
    if user {
        c.args(["--user", "--map-root-user"]);
    }
    c.args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"]).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}

/// The host PIDs of the processes whose parent is `parent` (from this namespace's `/proc`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // The fields after the command's closing parenthesis: state, then the parent's PID.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                let rest = &s[s.rfind(')')? + 2..];
                rest.split(' ').nth(1)?.parse::<u32>().ok()
            }) == Some(parent)
        })
        .collect()
}

/// Every descendant of `root` (children, their children, …), by host PID.
pub fn descendants_of(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

impl Sim {
    /// Starts `simgpud`, the machine's PID service, in this (the host's) namespace, and waits
    /// until it answers: processes in other PID namespaces then get their host PIDs, as the
    /// kernel driver knows them. Dropping it stops the service.
    pub fn pid_service(&self) -> Background {
        let mut svc = Background::spawn(&mut self.command(cargo_program("simgpud")));
        svc.wait_for("ready", Duration::from_secs(30));
        svc
    }
}
