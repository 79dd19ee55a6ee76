//! `four-axes`: how well tenants sharing one GPU are isolated, on the four axes of GPU
//! sharing (memory, compute, fault, latency), with and without vgpu, on simgpu's time-sliced
//! device (2 ms quantum, 25 µs per switch: the model in simgpu's documentation).
//!
//! | axis | what runs | measured |
//! |---|---|---|
//! | memory | a greedy tenant asks for 16 × 256 MiB on a 4 GiB device, then a neighbour asks for 6 × 256 MiB | what each got; with vgpu both have 2 GiB quotas |
//! | compute | two containers, open-loop 100 µs kernels, SM limits 30 % / 70 % | achieved shares (simgpu's device timeline) |
//! | fault | a tenant holding 1 GiB is SIGKILLed mid-kernel beside a running neighbour | the neighbour's share before/after, its errors, when the memory came back |
//! | latency | a closed-loop tenant (4 × 100 µs kernels, 150 µs host work between them, a synchronise; 0–6 ms think time) beside a saturating neighbour (1 ms kernels, two in flight) | request P50/P99/P99.9 alone, beside the neighbour with no vgpu, neighbour at `--sm 50`, neighbour at low priority; the neighbour's use of the idle time |
//! | burst | a tenant at `--sm 30` under the default policy; a second container runs in the middle | share over time: how fast it gives the device back and bursts again |
//!
//! Configurations alternate within each round, so the ratios compare like with like.
//! Output in `--out` (default `target/four-axes`): `report.md` (the table in bench/README.md),
//! `report.json` (every figure, every latency), `axes.svg` (latency CDFs, share over time).
//!
//! ```text
//! cargo build --release --workspace && target/release/four-axes          # ~2 minutes
//! cargo build --workspace && target/debug/four-axes --quick               # CI smoke, ~40 s
//! ```
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use simgpu::machine::Machine;

mod plot;

const MS: u64 = 1_000_000;
const MIB: u64 = 1 << 20;
/// The time-slice quantum of the simulated device.
const QUANTUM: &str = "2ms";

struct Opts {
    out: PathBuf,
    shim: PathBuf,
    quick: bool,
    rounds: u32,
}

fn usage() -> ! {
    eprintln!("usage: four-axes [--quick] [--rounds N] [--out DIR] [--shim PATH]");
    std::process::exit(2)
}

fn parse_opts(exe_dir: &Path) -> Opts {
    let mut o = Opts { out: repo_root().join("target/four-axes"), shim: exe_dir.join("libvgpu.so"), quick: false, rounds: 2 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = value().parse().ok().filter(|r| *r > 0).unwrap_or_else(|| usage()),
            "--out" => o.out = PathBuf::from(value()),
            "--shim" => o.shim = PathBuf::from(value()),
            _ => usage(),
        }
    }
    if o.quick {
        o.rounds = 1;
    }
    o
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("four-axes: {what}");
    std::process::exit(1)
}

/// The programs, the libraries and the scratch space.
struct Env {
    opts: Opts,
    lib: PathBuf,
    launch: PathBuf,
    alloc: PathBuf,
    scratch: PathBuf,
    n: std::cell::Cell<u32>,
}

/// One simulated machine (a fresh state file) for one run.
struct Sim {
    state: PathBuf,
    dir: PathBuf,
    memory: &'static str,
    machine: Machine,
}

/// How a tenant runs: without vgpu, or under it with these variables.
#[derive(Clone)]
struct Tenant {
    name: &'static str,
    vars: Vec<(&'static str, String)>,
    shim: bool,
}

impl Tenant {
    fn bare(name: &'static str) -> Tenant {
        Tenant { name, vars: Vec::new(), shim: false }
    }
    fn vgpu(name: &'static str, vars: &[(&'static str, &str)]) -> Tenant {
        Tenant { name, vars: vars.iter().map(|(k, v)| (*k, v.to_string())).collect(), shim: true }
    }
}

impl Env {
    fn setup(opts: Opts, exe_dir: &Path) -> Env {
        if !opts.shim.is_file() {
            fail(format_args!("{} is missing: build the workspace first (cargo build --workspace)", opts.shim.display()));
        }
        std::fs::create_dir_all(&opts.out).unwrap_or_else(|e| fail(format_args!("create {}: {e}", opts.out.display())));
        let lib = simgpu::layout::layout(exe_dir, &opts.out.join("lib")).unwrap_or_else(|e| fail(format_args!("laying out simgpu: {e}")));
        let bin = opts.out.join("bin");
        let status = Command::new("bash").arg(repo_root().join("examples/c/build.sh")).arg(&bin).arg(&lib).stdout(Stdio::null()).status();
        if !status.is_ok_and(|s| s.success()) {
            fail("examples/c/build.sh failed");
        }
        let scratch = opts.out.join("runs");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap_or_else(|e| fail(format_args!("create {}: {e}", scratch.display())));
        Env { launch: bin.join("launch"), alloc: bin.join("alloc_families"), lib, scratch, opts, n: std::cell::Cell::new(0) }
    }

    /// A fresh simulated machine with `memory` per device.
    fn sim(&self, memory: &'static str) -> Sim {
        let n = self.n.get();
        self.n.set(n + 1);
        let dir = self.scratch.join(format!("run{n}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(format_args!("create {}: {e}", dir.display())));
        let state = dir.join("machine");
        let cfg = simgpu::config::from_lookup(|k| match k {
            "SIMGPU_STATE" => Some(state.display().to_string()),
            "SIMGPU_MEMORY" => Some(memory.to_string()),
            "SIMGPU_TIMESLICE" => Some(QUANTUM.to_string()),
            _ => None,
        })
        .unwrap_or_else(|e| fail(format_args!("simgpu configuration: {e}")));
        let machine = Machine::observe(&cfg).unwrap_or_else(|e| fail(format_args!("open the simulated machine: {e}")));
        Sim { state, dir, memory, machine }
    }

    /// `program` on `sim` as `tenant` (its own region per tenant name).
    fn command(&self, sim: &Sim, program: &Path, tenant: &Tenant) -> Command {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CUDA_") || k.starts_with("SIMGPU_") || k.starts_with("VGPU_") || k.starts_with("GPU_CORE") {
                c.env_remove(&*k);
            }
        }
        c.env_remove("LD_PRELOAD")
            .env("LD_LIBRARY_PATH", &self.lib)
            .env("SIMGPU_STATE", &sim.state)
            .env("SIMGPU_MEMORY", sim.memory)
            .env("SIMGPU_TIMESLICE", QUANTUM);
        if tenant.shim {
            c.env("LD_PRELOAD", &self.opts.shim)
                .env("CUDA_DEVICE_MEMORY_SHARED_CACHE", sim.dir.join(format!("{}.region", tenant.name)))
                .env("VGPU_PRIORITY_BOARD", sim.dir.join("priority.board"));
            for (k, v) in &tenant.vars {
                c.env(k, v);
            }
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn spawn(&self, sim: &Sim, program: &Path, tenant: &Tenant, args: &[&str]) -> Child {
        self.command(sim, program, tenant).args(args).spawn().unwrap_or_else(|e| fail(format_args!("start {}: {e}", program.display())))
    }
}

/// Waits for `child` (killing it after `limit`): its stdout, and whether it succeeded.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child.wait_with_output().unwrap_or_else(|e| fail(format_args!("wait: {e}")));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

/// The value of `key=` in `key=value` output.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Waits until `pid` has run on the device (or 10 s).
fn await_busy(m: &Machine, pid: u32) {
    let t0 = simgpu::now_ns();
    while m.busy_between(0, t0.saturating_sub(10_000 * MS), simgpu::now_ns(), Some(pid)) == 0 && simgpu::now_ns() - t0 < 10_000 * MS {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

// ---- memory ----

fn memory_axis(env: &Env) -> (Vec<Vec<String>>, Value) {
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for with_vgpu in [false, true] {
        let sim = env.sim("4g");
        let quota = [("CUDA_DEVICE_MEMORY_LIMIT", "2g")];
        let (greedy, neighbour) = if with_vgpu {
            (Tenant::vgpu("greedy", &quota), Tenant::vgpu("neighbour", &quota))
        } else {
            (Tenant::bare("greedy"), Tenant::bare("neighbour"))
        };
        let g = env.spawn(
            &sim,
            &env.alloc,
            &greedy,
            &["--family", "cuMemAlloc_v2", "--size", "256m", "--hold", "16", "--no-copy", "--wait", "3"],
        );
        std::thread::sleep(Duration::from_millis(800));
        let (_, nout) = finish(
            env.spawn(&sim, &env.alloc, &neighbour, &["--family", "cuMemAlloc_v2", "--size", "256m", "--hold", "6", "--no-copy"]),
            Duration::from_secs(30),
        );
        let (_, gout) = finish(g, Duration::from_secs(30));
        let got = |out: &str| {
            out.lines()
                .filter(|l| field(l, "op") == Some("alloc") && field(l, "rc") == Some("0"))
                .filter_map(|l| field(l, "bytes")?.parse::<u64>().ok())
                .sum::<u64>()
        };
        let (g_bytes, n_bytes) = (got(&gout), got(&nout));
        let config = if with_vgpu { "vgpu, 2 GiB quota each" } else { "time-slicing, no vgpu" };
        rows.push(vec![
            config.to_string(),
            format!("{} MiB of 4096 asked", g_bytes / MIB),
            format!("{} MiB of 1536 asked", n_bytes / MIB),
            if n_bytes == 1536 * MIB { "yes".into() } else { "**no**".into() },
        ]);
        js.push(json!({"config": config, "greedy_bytes": g_bytes, "neighbour_bytes": n_bytes}));
    }
    (rows, Value::Array(js))
}

// ---- compute ----

fn compute_axis(env: &Env, seconds: f64) -> (Vec<Vec<String>>, Value) {
    let mut rows = Vec::new();
    let mut js = Vec::new();
    let open = ["--mode", "open", "--kernel", "spin_100us", "--duration"];
    for with_vgpu in [false, true] {
        let sim = env.sim("16g");
        let limits = [("30", "a"), ("70", "b")];
        let tenants: Vec<Tenant> = limits
            .iter()
            .map(|(l, name)| {
                let name: &'static str = if *name == "a" { "a" } else { "b" };
                if with_vgpu {
                    Tenant::vgpu(name, &[("CUDA_DEVICE_SM_LIMIT", l), ("GPU_CORE_UTILIZATION_POLICY", "default")])
                } else {
                    Tenant::bare(name)
                }
            })
            .collect();
        let secs = seconds.to_string();
        let args: Vec<&str> = open.iter().copied().chain([secs.as_str()]).collect();
        let t0 = simgpu::now_ns();
        let children: Vec<Child> = tenants.iter().map(|t| env.spawn(&sim, &env.launch, t, &args)).collect();
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        let outs: Vec<(bool, String)> = children.into_iter().map(|c| finish(c, Duration::from_secs_f64(seconds + 30.0))).collect();
        let t1 = simgpu::now_ns();
        // Steady part: from 1 s after the start to 0.3 s before the end.
        let (from, to) = (t0 + 1_000 * MS, t1.saturating_sub(300 * MS).max(t0 + 1_100 * MS));
        let share = |pid| 100.0 * sim.machine.busy_between(0, from, to, Some(pid)) as f64 / (to - from) as f64;
        let (a, b) = (share(pids[0]), share(pids[1]));
        let config = if with_vgpu { "vgpu --sm 30 / --sm 70" } else { "time-slicing, no vgpu (asks 30 / 70)" };
        let ok = outs.iter().all(|(s, _)| *s);
        rows.push(vec![
            config.into(),
            format!("{a:.1} %"),
            format!("{b:.1} %"),
            format!("{:.1}", ((a - 30.0).abs() + (b - 70.0).abs()) / 2.0),
            ok_str(ok),
        ]);
        js.push(json!({"config": config, "share_a": a, "share_b": b, "ok": ok}));
    }
    (rows, Value::Array(js))
}

fn ok_str(ok: bool) -> String {
    if ok { "none".into() } else { "**errors**".into() }
}

// ---- fault ----

fn fault_axis(env: &Env) -> (Vec<Vec<String>>, Value) {
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for with_vgpu in [false, true] {
        let sim = env.sim("16g");
        let quota = [("CUDA_DEVICE_MEMORY_LIMIT", "4g")];
        let (victim, neighbour) = if with_vgpu {
            (Tenant::vgpu("victim", &quota), Tenant::vgpu("neighbour", &quota))
        } else {
            (Tenant::bare("victim"), Tenant::bare("neighbour"))
        };
        let n = env.spawn(
            &sim,
            &env.launch,
            &neighbour,
            &["--mode", "open", "--kernel", "spin_1000us", "--grid", "132", "--inflight", "2", "--duration", "4"],
        );
        await_busy(&sim.machine, n.id());
        let base_used = sim.machine.used(0);
        let mut hold = env.spawn(
            &sim,
            &env.alloc,
            &victim,
            &["--family", "cuMemAlloc_v2", "--size", "1g", "--hold", "1", "--no-copy", "--wait", "30"],
        );
        let mut spin = env.spawn(
            &sim,
            &env.launch,
            &victim,
            &["--mode", "open", "--kernel", "spin_1000us", "--grid", "1320", "--inflight", "2", "--duration", "30"],
        );
        await_busy(&sim.machine, spin.id());
        std::thread::sleep(Duration::from_millis(700));
        let t_kill = simgpu::now_ns();
        let _ = spin.kill();
        let _ = hold.kill();
        let _ = spin.wait();
        let _ = hold.wait();
        // When the device has the victim's memory back (the driver frees a dead process's).
        let back_ns = loop {
            let now = simgpu::now_ns();
            let _ = sim.machine.processes(0); // reaps the dead, as NVML's view does
            if sim.machine.used(0) <= base_used || now - t_kill > 5_000 * MS {
                break now - t_kill;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let n_pid = n.id();
        let (ok, _) = finish(n, Duration::from_secs(30));
        let n_share = |from: u64, to: u64| 100.0 * sim.machine.busy_between(0, from, to, Some(n_pid)) as f64 / (to - from) as f64;
        let before = n_share(t_kill - 500 * MS, t_kill);
        let after = n_share(t_kill + 100 * MS, t_kill + 600 * MS);
        let config = if with_vgpu { "vgpu" } else { "time-slicing, no vgpu" };
        rows.push(vec![
            config.into(),
            format!("{before:.1} %"),
            format!("{after:.1} %"),
            ok_str(ok),
            format!("{:.1} ms", back_ns as f64 / 1e6),
        ]);
        js.push(json!({"config": config, "neighbour_share_before": before, "neighbour_share_after": after, "neighbour_ok": ok, "memory_back_ns": back_ns}));
    }
    (rows, Value::Array(js))
}

// ---- latency ----

/// The latency tenant's request loop.
const REQUEST: &[&str] =
    &["--mode", "request", "--kernel", "spin_100us", "--request-kernels", "4", "--gap-us", "150", "--think-us", "3000"];
/// The saturating neighbour.
const NEIGHBOUR: &[&str] = &["--mode", "open", "--kernel", "spin_1000us", "--grid", "132", "--inflight", "2"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum LatencyConfig {
    Alone,
    TimeSlicing,
    Sm50,
    LowPriority,
}

impl LatencyConfig {
    const ALL: [LatencyConfig; 4] = [LatencyConfig::Alone, LatencyConfig::TimeSlicing, LatencyConfig::Sm50, LatencyConfig::LowPriority];

    fn name(self) -> &'static str {
        match self {
            LatencyConfig::Alone => "alone",
            LatencyConfig::TimeSlicing => "beside the neighbour, no vgpu (time-slicing)",
            LatencyConfig::Sm50 => "neighbour at --sm 50",
            LatencyConfig::LowPriority => "neighbour at low priority (CUDA_TASK_PRIORITY=1, tenant 0)",
        }
    }

    fn tenants(self) -> (Tenant, Option<Tenant>) {
        match self {
            LatencyConfig::Alone => (Tenant::bare("latency"), None),
            LatencyConfig::TimeSlicing => (Tenant::bare("latency"), Some(Tenant::bare("neighbour"))),
            LatencyConfig::Sm50 => (
                Tenant::bare("latency"),
                Some(Tenant::vgpu("neighbour", &[("CUDA_DEVICE_SM_LIMIT", "50"), ("GPU_CORE_UTILIZATION_POLICY", "force")])),
            ),
            LatencyConfig::LowPriority => {
                (Tenant::vgpu("latency", &[("CUDA_TASK_PRIORITY", "0")]), Some(Tenant::vgpu("neighbour", &[("CUDA_TASK_PRIORITY", "1")])))
            }
        }
    }
}

/// One latency run: the request latencies (µs), and the neighbour's device time over the
/// run as a fraction of the time the latency tenant left idle.
struct LatencyRun {
    latencies: Vec<f64>,
    neighbour_share: f64,
    idle_kept: f64,
    ok: bool,
}

fn latency_run(env: &Env, config: LatencyConfig, seconds: f64) -> LatencyRun {
    let sim = env.sim("16g");
    let (tenant, neighbour) = config.tenants();
    let secs = (seconds + 1.0).to_string();
    let n = neighbour.as_ref().map(|t| {
        let args: Vec<&str> = NEIGHBOUR.iter().copied().chain(["--duration", secs.as_str()]).collect();
        let c = env.spawn(&sim, &env.launch, t, &args);
        await_busy(&sim.machine, c.id());
        c
    });
    let file = sim.dir.join("latencies.txt");
    let file_s = file.display().to_string();
    let run_s = seconds.to_string();
    let args: Vec<&str> = REQUEST.iter().copied().chain(["--duration", run_s.as_str(), "--latencies", file_s.as_str()]).collect();
    let t0 = simgpu::now_ns();
    let child = env.spawn(&sim, &env.launch, &tenant, &args);
    let pid = child.id();
    let (ok, _out) = finish(child, Duration::from_secs_f64(seconds + 30.0));
    let t1 = simgpu::now_ns();
    let n_ok = n.map(|c| finish(c, Duration::from_secs_f64(seconds + 30.0)).0).unwrap_or(true);
    let latencies: Vec<f64> = std::fs::read_to_string(&file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    let (from, to) = (t0 + 200 * MS, t1.saturating_sub(100 * MS).max(t0 + 300 * MS));
    let window = (to - from) as f64;
    let mine = sim.machine.busy_between(0, from, to, Some(pid)) as f64;
    let all = sim.machine.busy_between(0, from, to, None) as f64;
    let theirs = (all - mine).max(0.0);
    LatencyRun { latencies, neighbour_share: 100.0 * theirs / window, idle_kept: 100.0 * theirs / (window - mine).max(1.0), ok: ok && n_ok }
}

/// One configuration's runs pooled: latencies, neighbour shares, idle kept, all succeeded.
type Pooled = (LatencyConfig, Vec<f64>, Vec<f64>, Vec<f64>, bool);

// ---- burst ----

/// Share of the capped tenant per 100 ms, while a second container runs from `2 s` to `4 s`.
fn burst(env: &Env, total_s: f64) -> (Vec<(f64, f64)>, Value, Vec<Vec<String>>) {
    let sim = env.sim("16g");
    let capped = Tenant::vgpu("capped", &[("CUDA_DEVICE_SM_LIMIT", "30"), ("GPU_CORE_UTILIZATION_POLICY", "default")]);
    let other = Tenant::vgpu("other", &[("CUDA_DEVICE_SM_LIMIT", "70"), ("GPU_CORE_UTILIZATION_POLICY", "default")]);
    let secs = total_s.to_string();
    let c = env.spawn(&sim, &env.launch, &capped, &["--mode", "open", "--kernel", "spin_100us", "--duration", &secs]);
    await_busy(&sim.machine, c.id());
    let t0 = simgpu::now_ns();
    let (on, off) = (total_s / 3.0, 2.0 * total_s / 3.0);
    std::thread::sleep(Duration::from_secs_f64(on));
    let t_on = simgpu::now_ns();
    let o = env.spawn(&sim, &env.launch, &other, &["--mode", "open", "--kernel", "spin_100us", "--duration", &(off - on).to_string()]);
    let (o_ok, _) = finish(o, Duration::from_secs_f64(total_s + 30.0));
    let t_off = simgpu::now_ns();
    let (c_ok, _) = finish(c, Duration::from_secs_f64(total_s + 30.0));
    let t_end = simgpu::now_ns().min(t0 + (total_s * 1e9) as u64);
    let pid = sim.machine.busy_by_process(0, t0, t_end).into_iter().max_by_key(|(_, b)| *b).map(|(p, _)| p).unwrap_or(0);
    let mut series = Vec::new();
    let mut t = t0;
    while t + 100 * MS <= t_end {
        let s = 100.0 * sim.machine.busy_between(0, t, t + 100 * MS, Some(pid)) as f64 / (100 * MS) as f64;
        series.push(((t + 50 * MS - t0) as f64 / 1e9, s));
        t += 100 * MS;
    }
    let since = |from: u64| (from - t0) as f64 / 1e9;
    let give_back = series.iter().find(|(x, s)| *x >= since(t_on) && *s <= 35.0).map(|(x, _)| x - since(t_on));
    let burst_again = series.iter().find(|(x, s)| *x >= since(t_off) && *s >= 90.0).map(|(x, _)| x - since(t_off));
    let mean = |a: f64, b: f64| {
        let v: Vec<f64> = series.iter().filter(|(x, _)| *x >= a && *x < b).map(|(_, s)| *s).collect();
        if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
    };
    let alone = mean(0.3, since(t_on));
    let shared = mean(since(t_on) + 0.5, since(t_off));
    let fmt_s = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{:.0} ms", v * 1e3));
    let rows = vec![vec![format!("{alone:.1} %"), format!("{shared:.1} %"), fmt_s(give_back), fmt_s(burst_again), ok_str(o_ok && c_ok)]];
    let js = json!({"alone_share": alone, "shared_share": shared, "give_back_s": give_back, "burst_again_s": burst_again, "on_s": since(t_on), "off_s": since(t_off), "series": series});
    (series, js, rows)
}

// ---- report ----

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}|\n", header.join(" | "), header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

fn main() {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| fail("cannot find my own directory"));
    let opts = parse_opts(&exe_dir);
    let (quick, rounds) = (opts.quick, opts.rounds);
    let env = Env::setup(opts, &exe_dir);
    let lat_s = if quick { 1.5 } else { 4.0 };

    eprintln!("four-axes: memory");
    let (mem_rows, mem_js) = memory_axis(&env);
    eprintln!("four-axes: compute");
    let (cpu_rows, cpu_js) = compute_axis(&env, if quick { 2.0 } else { 4.0 });
    eprintln!("four-axes: fault");
    let (fault_rows, fault_js) = fault_axis(&env);

    let mut lat: Vec<Pooled> = LatencyConfig::ALL.iter().map(|c| (*c, Vec::new(), Vec::new(), Vec::new(), true)).collect();
    for round in 0..rounds {
        for entry in lat.iter_mut() {
            eprintln!("four-axes: latency, round {} of {rounds}: {}", round + 1, entry.0.name());
            let r = latency_run(&env, entry.0, lat_s);
            entry.1.extend(r.latencies);
            entry.2.push(r.neighbour_share);
            entry.3.push(r.idle_kept);
            entry.4 &= r.ok;
        }
    }
    let alone_p99 = {
        let mut v = lat[0].1.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.99)
    };
    let mut lat_rows = Vec::new();
    let mut lat_js = Vec::new();
    let mut cdfs = Vec::new();
    for (config, lats, shares, kept, ok) in &lat {
        let mut v = lats.clone();
        v.sort_by(f64::total_cmp);
        let (p50, p99, p999) = (percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 0.999));
        let mean = |x: &[f64]| if x.is_empty() { f64::NAN } else { x.iter().sum::<f64>() / x.len() as f64 };
        let neighbour = *config != LatencyConfig::Alone;
        lat_rows.push(vec![
            config.name().to_string(),
            v.len().to_string(),
            format!("{:.2}", p50 / 1e3),
            format!("{:.2}", p99 / 1e3),
            format!("{:.2}", p999 / 1e3),
            format!("{:.2}×", p99 / alone_p99),
            format!("{:+.2}", (p99 - alone_p99) / 1e3),
            if neighbour { format!("{:.1} %", mean(shares)) } else { "–".into() },
            if neighbour { format!("{:.1} %", mean(kept)) } else { "–".into() },
            ok_str(*ok),
        ]);
        lat_js.push(json!({"config": config.name(), "requests": v.len(), "p50_us": p50, "p99_us": p99, "p999_us": p999,
            "p99_vs_alone": p99 / alone_p99, "neighbour_share": mean(shares), "neighbour_keeps_idle": mean(kept), "ok": ok, "latencies_us": v}));
        cdfs.push((config.name().to_string(), v));
    }
    eprintln!("four-axes: burst");
    let (series, burst_js, burst_rows) = burst(&env, if quick { 3.0 } else { 6.0 });

    let svg = env.opts.out.join("axes.svg");
    if let Err(e) = plot::draw(&svg, &cdfs, &series) {
        eprintln!("four-axes: the picture could not be drawn: {e}");
    }
    let mut md = String::new();
    md.push_str(&format!(
        "simgpu, one 132-SM device time-sliced at {QUANTUM} (25 µs per switch); {rounds} round(s), configurations alternating.\n\n"
    ));
    md.push_str(
        "**Memory** (4 GiB device): a greedy tenant asks for 16 × 256 MiB and holds it; then a neighbour asks for 6 × 256 MiB.\n\n",
    );
    md.push_str(&table(&["", "greedy got", "neighbour got", "neighbour whole"], &mem_rows));
    md.push_str("\n**Compute**: two containers of open-loop 100 µs kernels asking for 30 % and 70 % (shares from the device timeline, steady part).\n\n");
    md.push_str(&table(&["", "A (30 %)", "B (70 %)", "mean |err| (points)", "errors"], &cpu_rows));
    md.push_str(
        "\n**Fault**: a tenant holding 1 GiB and running 10 ms kernels is SIGKILLed beside a neighbour (1 ms kernels, open loop).\n\n",
    );
    md.push_str(&table(&["", "neighbour's share before", "after", "neighbour's errors", "memory back after"], &fault_rows));
    md.push_str(
        "\n**Latency**: a closed-loop tenant (4 × 100 µs kernels, 150 µs of host work between them, a synchronise; \
         0–6 ms between requests) beside a saturating neighbour (1 ms kernels, at most two in flight). \
         Latency in ms; the neighbour's device share over the run, and how much of the time the latency tenant left idle it used.\n\n",
    );
    md.push_str(&table(
        &["", "requests", "P50", "P99", "P99.9", "P99 / alone", "P99 − alone", "neighbour's share", "neighbour keeps of idle", "errors"],
        &lat_rows,
    ));
    md.push_str(
        "\n**Burst** (`GPU_CORE_UTILIZATION_POLICY=default`): a tenant at `--sm 30` alone, then beside a second container at `--sm 70` for the middle third, then alone again.\n\n",
    );
    md.push_str(&table(&["share alone", "share while shared", "gives back within", "bursts again within", "errors"], &burst_rows));
    md.push_str("\nPicture: `axes.svg` (latency CDFs; the capped tenant's share over time).\n");
    let report = json!({"quick": quick, "rounds": rounds, "quantum": QUANTUM, "memory": mem_js, "compute": cpu_js, "fault": fault_js, "latency": lat_js, "burst": burst_js});
    let write = |name: &str, text: String| {
        let p = env.opts.out.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| fail(format_args!("write {}: {e}", p.display())));
    };
    write("report.md", md.clone());
    write("report.json", serde_json::to_string_pretty(&report).unwrap_or_default());
    print!("{md}");
    eprintln!("four-axes: wrote {}, report.json and axes.svg", env.opts.out.join("report.md").display());
    let all_ok = lat.iter().all(|l| l.4);
    std::process::exit(if all_ok { 0 } else { 1 });
}
