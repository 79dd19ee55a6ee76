//! numba-cuda, a Python GPU library no one here wrote, end to end on simgpu: `@cuda.jit`
//! compiles with NVVM from PyPI, links through the driver's JIT linker (`cuLinkCreate_v2` …
//! `cuLinkComplete`), loads with `cuLibraryLoadData` and launches the `CUkernel` through
//! `cuLaunchKernelEx`. The program (`tests/python/numba_client.py`) allocates, copies, launches
//! and synchronises, bare and under `vgpu run --sim --memory 1g --sm 30`. Its kernel's name is
//! mangled by numba, so its simulated cost comes from `SIMGPU_KERNEL_COSTS` (1 ms per wave).
//!
//! Not run on simgpu: the kernels themselves (simgpu executes no device code, so the array the
//! kernel adds one to comes back unchanged; numba reports no error either way). numba's
//! `cuda.nvjitlink` path (LTO-IR) needs NVIDIA's nvJitLink, not the driver, and is not used.
//!
//! The environment (`tests/python/numba-requirements.txt`, ~700 MB) is installed into
//! `<artifacts>/pyenv-numba` on first use; without Python or PyPI the tests print
//! `SKIPPED: <reason>` and pass, unless `VGPU_REQUIRE_PYTHON=1` (CI).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vgpu_tests::{Rec, Sim, cargo_program, field, num, or_skip, records, repo_root, run, text, venv_with};

const MIB: f64 = (1u64 << 20) as f64;

fn python() -> Option<PathBuf> {
    static ENV: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let setup = ENV.get_or_init(|| venv_with("pyenv-numba", &repo_root().join("tests/python/numba-requirements.txt")));
    or_skip("numba-cuda", setup)
}

/// `numba_client.py ARGS` on `sim`, under `vgpu run --sim` with `vgpu_args` when given.
fn client(sim: &Sim, python: &Path, xdg: &Path, vgpu_args: Option<&[&str]>, args: &[&str]) -> Command {
    let script = repo_root().join("tests/python/numba_client.py");
    let mut c = match vgpu_args {
        Some(v) => {
            let mut c = sim.command(cargo_program("vgpu"));
            c.arg("run").arg("--sim").args(v).arg("--").arg(python).arg(&script);
            c
        }
        None => {
            let mut c = sim.command(python);
            c.arg(&script);
            c
        }
    };
    c.args(args)
        .env("XDG_RUNTIME_DIR", xdg)
        .env("SIMGPU_KERNEL_COSTS", "vgpu_add_one=1ms")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("NUMBA_CACHE_DIR", xdg.join("numba-cache"))
        .env_remove("PYTHONPATH");
    c
}

fn op<'a>(recs: &'a [Rec], name: &str) -> Vec<&'a Rec> {
    recs.iter().filter(|r| field(r, "op") == name).collect()
}

fn xdg() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vgpu-numba-{}-{}", std::process::id(), simgpu::now_ns()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

#[test]
fn a_numba_program_runs_on_simgpu_alone() {
    let Some(python) = python() else { return };
    let sim = Sim::new().with("SIMGPU_MEMORY", "4g");
    let out = run(
        &mut client(&sim, &python, &xdg(), None, &["--alloc-mib", "300", "--allocs", "3", "--launches", "20"]),
        Duration::from_secs(300),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let recs = records(&stdout, "client");
    assert_eq!(num(op(&recs, "info")[0], "total"), 4096.0 * MIB, "{stdout}");
    assert!(op(&recs, "alloc").iter().all(|r| field(r, "rc") == "ok"), "{stdout}");
    assert_eq!(field(op(&recs, "copy")[0], "same"), "1", "{stdout}");
    let launch = op(&recs, "launch")[0];
    assert_eq!((field(launch, "rc"), field(launch, "n")), ("ok", "20"), "{stdout}");
}

#[test]
fn under_vgpu_its_allocations_meet_the_quota_and_its_launches_the_sm_share() {
    let Some(python) = python() else { return };
    let sim = Sim::new().with("SIMGPU_MEMORY", "4g");
    let xdg = xdg();
    let timeline = sim.timeline();
    // Compile once first (the JIT's first run is seconds of CPU), so the measured run's
    // launches start at once.
    let warm = run(&mut client(&sim, &python, &xdg, None, &["--launches", "1"]), Duration::from_secs(300));
    assert!(warm.status.success(), "{}\n{}", text(&warm.stdout), text(&warm.stderr));

    let mut cmd =
        client(&sim, &python, &xdg, Some(&["--memory", "1g", "--sm", "30"]), &["--alloc-mib", "300", "--allocs", "4", "--seconds", "5"]);
    cmd.env("GPU_CORE_UTILIZATION_POLICY", "force").stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = simgpu::now_ns();
    let child = cmd.spawn().expect("spawn vgpu run");
    // While it runs, `vgpu ps` shows the container: its quota, use, refusal and SM limit.
    std::thread::sleep(Duration::from_secs(4));
    let ps = run(sim.command(cargo_program("vgpu")).env("XDG_RUNTIME_DIR", &xdg).args(["ps", "--json"]), Duration::from_secs(30));
    let out = child.wait_with_output().expect("wait for vgpu run");
    let t1 = simgpu::now_ns();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let recs = records(&stdout, "client");

    assert_eq!(num(op(&recs, "info")[0], "total"), 1024.0 * MIB, "numba sees the quota as the device's memory: {stdout}");
    let allocs = op(&recs, "alloc");
    assert!(allocs[..3].iter().all(|r| field(r, "rc") == "ok"), "{stdout}");
    assert_eq!((field(allocs[3], "rc"), field(allocs[3], "oom")), ("error", "1"), "the fourth 300 MiB is out of memory: {stdout}");
    assert_eq!(field(op(&recs, "copy")[0], "same"), "1", "{stdout}");
    assert_eq!(field(op(&recs, "launch")[0], "rc"), "ok", "numba.cuda reports no error: {stdout}");

    // The device's timeline over the steady part of the launch loop (its first second is the
    // bucket's burst and the first launches' compile; its instants are CLOCK_MONOTONIC, the
    // timeline's clock).
    let launch = op(&recs, "launch")[0];
    let (start, end) = (num(launch, "start_ns") as u64, num(launch, "end_ns") as u64);
    assert!(t0 <= start && end <= t1, "{stdout}");
    let (from, to) = (start + 1_000_000_000, end.saturating_sub(200_000_000));
    assert!(to > from, "the run was too short to measure");
    let share = 100.0 * timeline.busy_between(0, from, to, None) as f64 / (to - from) as f64;
    println!("numba under --sm 30: device share {share:.1} %");
    assert!((25.0..=35.0).contains(&share), "the launches hold the 30 % share (± 5 points): {share:.1} %\n{stdout}");

    let ps_text = text(&ps.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&ps_text).unwrap_or_else(|e| panic!("vgpu ps --json: {e}\n{ps_text}\n{}", text(&ps.stderr)));
    let dev = &v["regions"][0]["devices"][0];
    assert_eq!(dev["quota_bytes"].as_u64(), Some(1 << 30), "{ps_text}");
    assert_eq!(dev["sm_limit_percent"].as_f64(), Some(30.0), "{ps_text}");
    let achieved = dev["sm_achieved_percent"].as_f64().unwrap_or(-1.0);
    assert!((25.0..=35.0).contains(&achieved), "vgpu ps counts the launches: {achieved} % achieved\n{ps_text}");
    // numba retries a refused allocation once after flushing its deferred frees.
    assert!(dev["oom_refusals"].as_u64() >= Some(1), "the refused allocation is counted: {ps_text}");
    assert!(dev["used_bytes"].as_u64() >= Some(900 << 20), "{ps_text}");
}
