//! The SM share, end to end: `launch` (examples/c/launch.c) under `libvgpu.so` on simgpu, its
//! share measured on the simulated device's timeline (ground truth: what the device did, not the
//! program's own wall time), over the steady part of each run.
//!
//! The bounds are loose on purpose (a noisy 2-core machine runs these next to other tests);
//! the harness `sm-harness` (bench/sm) measures the same things closely.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use simgpu::machine::Machine;
use vgpu_tests::{Sim, c_programs, num, records, text};

const MS: u64 = 1_000_000;

/// Open-loop stream of 100 µs kernels.
const OPEN: &[&str] = &["--mode", "open", "--kernel", "spin_100us"];
/// 50 ms kernels (50 waves of 132 blocks of spin_1000us), each followed by a synchronize (long
/// enough that a CPU-starved process's late wake-ups do not show as idle device time).
const SYNC: &[&str] = &["--mode", "sync", "--kernel", "spin_1000us", "--grid", "6600"];
/// Replays of a graph of 10 × 100 µs kernels.
const GRAPH: &[&str] = &["--mode", "graph", "--graph-kernels", "10", "--kernel", "spin_100us"];

fn launch() -> std::path::PathBuf {
    c_programs().join("launch")
}

/// `launch` with `args` for `seconds`, under the shim with `CUDA_DEVICE_SM_LIMIT=limit`
/// (policy `force`), or under the shim with no SM limit.
fn launch_cmd(sim: &Sim, limit: Option<u8>, args: &[&str], seconds: f64) -> Command {
    let mut c = sim.shimmed(launch());
    c.args(args).args(["--duration", &seconds.to_string()]);
    if let Some(l) = limit {
        c.env("CUDA_DEVICE_SM_LIMIT", l.to_string()).env("GPU_CORE_UTILIZATION_POLICY", "force");
    }
    c
}

/// First time (ns) after `from` at which any of `pids` kept the device busy, scanning 10 ms
/// steps up to `to`.
fn first_busy(m: &Machine, pids: &[u32], from: u64, to: u64) -> Option<u64> {
    (from..to).step_by(10 * MS as usize).find(|&t| pids.iter().any(|p| m.busy_between(0, t, t + 10 * MS, Some(*p)) > 0))
}

/// Starts `cmds` together, waits for them all, checks each one's `rc=0`, and returns the
/// share of the device (percent) they took together between 0.4 s after the device first
/// turned busy and 0.2 s before their `seconds`-long launch loops end.
fn share(sim: &Sim, cmds: Vec<Command>, seconds: f64) -> f64 {
    let m = sim.timeline();
    let t0 = simgpu::now_ns();
    let mut children: Vec<Child> =
        cmds.into_iter().map(|mut c| c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn launch")).collect();
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let limit = Instant::now() + Duration::from_secs_f64(seconds + 60.0);
    while children.iter_mut().any(|c| c.try_wait().expect("try_wait").is_none()) {
        assert!(Instant::now() < limit, "launch ran a minute past its {seconds} s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t1 = simgpu::now_ns();
    for c in children {
        let out = c.wait_with_output().expect("collect output");
        let stdout = text(&out.stdout);
        let rec = records(&stdout, "mode");
        assert!(out.status.success() && rec.len() == 1 && num(&rec[0], "rc") == 0.0, "launch failed: {stdout}{}", text(&out.stderr));
    }
    let first = first_busy(&m, &pids, t0, t1).expect("the device never ran the launches");
    let (from, to) = (first + 400 * MS, first + (seconds * 1e9) as u64 - 200 * MS);
    assert!(to > from && to <= t1, "the run is too short to measure");
    let busy: u64 = pids.iter().map(|p| m.busy_between(0, from, to, Some(*p))).sum();
    let s = 100.0 * busy as f64 / (to - from) as f64;
    println!("{} process(es): {s:.1} % of the device over {:.2} s", pids.len(), (to - from) as f64 / 1e9);
    s
}

#[test]
fn a_30_percent_cap_holds_for_open_loop_small_kernels() {
    let sim = Sim::new();
    let s = share(&sim, vec![launch_cmd(&sim, Some(30), OPEN, 2.5)], 2.5);
    assert!((20.0..=40.0).contains(&s), "open-loop 100 µs kernels at a 30 % cap took {s:.1} %");
}

#[test]
fn a_30_percent_cap_holds_for_big_kernels_and_sync() {
    let sim = Sim::new();
    let s = share(&sim, vec![launch_cmd(&sim, Some(30), SYNC, 2.5)], 2.5);
    assert!((20.0..=40.0).contains(&s), "50 ms kernels + sync at a 30 % cap took {s:.1} %");
}

#[test]
fn a_10_percent_cap_holds_for_graph_replays() {
    let sim = Sim::new();
    let s = share(&sim, vec![launch_cmd(&sim, Some(10), GRAPH, 2.5)], 2.5);
    assert!(s < 20.0, "graph replays at a 10 % cap took {s:.1} %");
    assert!(s > 2.0, "graph replays at a 10 % cap barely ran: {s:.1} %");
}

#[test]
fn without_a_cap_the_same_workloads_saturate_the_device() {
    for (name, args) in [("open-loop", OPEN), ("big kernel + sync", SYNC), ("graph", GRAPH)] {
        let sim = Sim::new();
        let s = share(&sim, vec![launch_cmd(&sim, None, args, 1.5)], 1.5);
        assert!(s > 90.0, "{name} without an SM limit took only {s:.1} %");
    }
}

#[test]
fn four_processes_in_one_container_share_one_25_percent_cap() {
    let sim = Sim::new();
    let cmds = (0..4).map(|_| launch_cmd(&sim, Some(25), OPEN, 2.5)).collect();
    let s = share(&sim, cmds, 2.5);
    assert!(s <= 35.0, "4 processes of one container at 25 % took {s:.1} % together");
    assert!(s >= 10.0, "4 processes of one container at 25 % barely ran: {s:.1} %");
}

/// What /proc shows of a process while it runs a long launch loop: its thread names and
/// whether NVML is mapped.
struct Seen {
    threads: Vec<String>,
    nvml_mapped: bool,
}

/// Runs a 1.5 s open launch loop and looks at /proc/<pid> once the device is busy with it (and
/// again until `until` holds or 2 s pass).
fn observe(sim: &Sim, mut cmd: Command, until: impl Fn(&Seen) -> bool) -> Seen {
    let m = sim.timeline();
    cmd.args(OPEN).args(["--duration", "1.5"]).stdout(Stdio::null()).stderr(Stdio::null());
    let t0 = simgpu::now_ns();
    let mut child = cmd.spawn().expect("spawn launch");
    let pid = child.id();
    let look = || Seen {
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        nvml_mapped: std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default().contains("libnvidia-ml"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.busy_between(0, t0, simgpu::now_ns(), Some(pid)) == 0 {
        assert!(Instant::now() < deadline && child.try_wait().expect("try_wait").is_none(), "launch never used the device");
        std::thread::sleep(Duration::from_millis(5));
    }
    let settle = Instant::now() + Duration::from_secs(2);
    let mut seen = look();
    while !until(&seen) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(20));
        seen = look();
    }
    // A last look after the launch loop has run a while (a thread started late would show).
    std::thread::sleep(Duration::from_millis(300));
    if child.try_wait().expect("try_wait").is_none() {
        seen = look();
    }
    assert!(child.wait().expect("wait").success(), "launch failed");
    seen
}

#[test]
fn no_sm_limit_means_no_thread_and_no_nvml() {
    let sim = Sim::new();
    let base = observe(&sim, sim.command(launch()), |_| true);
    assert!(!base.threads.is_empty(), "could not read /proc/<pid>/task");

    // The shim with nothing configured but the region, and with no variable at all.
    let mut bare = sim.shimmed(launch());
    bare.env_remove("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    for (what, cmd) in [("only a region", sim.shimmed(launch())), ("no variable at all", bare)] {
        let seen = observe(&sim, cmd, |_| true);
        assert_eq!(seen.threads.len(), base.threads.len(), "{what}: threads {:?} vs {:?} without the shim", seen.threads, base.threads);
        assert!(!seen.nvml_mapped, "{what}: libnvidia-ml was loaded without any limit");
    }

    // A memory limit only: the shim may read NVML to charge contexts, but starts no thread.
    let mut mem = sim.shimmed(launch());
    mem.env("CUDA_DEVICE_MEMORY_LIMIT", "1g");
    let seen = observe(&sim, mem, |_| true);
    assert_eq!(seen.threads.len(), base.threads.len(), "memory limit only: threads {:?} vs {:?}", seen.threads, base.threads);
    assert!(!seen.threads.iter().any(|t| t == "vgpu-sm"), "memory limit only: {:?}", seen.threads);

    // The control: with an SM limit the controller thread runs and polls NVML, and this test
    // sees both (so the checks above can fail).
    let mut sm = sim.shimmed(launch());
    sm.env("CUDA_DEVICE_SM_LIMIT", "50");
    let seen = observe(&sim, sm, |s| s.nvml_mapped && s.threads.iter().any(|t| t == "vgpu-sm"));
    assert_eq!(seen.threads.len(), base.threads.len() + 1, "SM limit: threads {:?}", seen.threads);
    assert!(seen.threads.iter().any(|t| t == "vgpu-sm") && seen.nvml_mapped, "SM limit: {:?}, nvml {}", seen.threads, seen.nvml_mapped);
}
