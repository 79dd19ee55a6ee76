//! `compare`: the same driver-API workloads on simgpu under no library, under vgpu, and under
//! any other `libvgpu.so` given by path (HAMi-core built by the user), configurations
//! alternating within each round so the ratios compare like with like. One markdown table.
//!
//! | row | workload |
//! |---|---|
//! | quota race | 32 processes of one container (one region, quota 1 GiB, contexts free) each take 100 MiB blocks until refused, all at once; a round is over the quota when they hold more than 1 GiB together |
//! | launch added | `launch_cost` (bench/sm/c): p50 of 20 000 timed `cuLaunchKernel` calls, a whole process, minus the same without a library |
//! | launch added, paired | `launch_cost --pair`: in one process, the library's entry and the driver's own function alternate; median difference (the process-to-process noise taken out) |
//! | alloc+free added | `alloc_cost` (bench/compare/c): p50 of 5 000 timed `cuMemAlloc_v2` + `cuMemFree_v2` pairs of 2 MiB, minus the same without |
//! | contention p99 | 8 `alloc_cost` processes of one container at once: the worst process's p99 |
//! | killed during start-up | a process SIGKILLed 0-15 ms into its start-up (`cuInit`, context, a first allocation), then another starts: the slowest follower, and how many waited more than 20 s |
//! | views past the quota | three processes hold contexts of 257 MiB, a fourth makes one (1028 MiB of a 1 GiB quota): what `cuMemGetInfo` and NVML tell it |
//! | SM share at 30 % | `launch --mode open` of 1 ms kernels (one wave of 132 blocks) at `CUDA_DEVICE_SM_LIMIT=30`, policy force: the device timeline's share over the steady part; `--mode graph` (graphs of ten 1 ms kernels); and, once for 20 s, 1 ms kernels of 100 waves of 10 µs blocks (a limiter that counts blocks sees 100× as many) |
//! | allocation families | `alloc_families`: each of nine families asks for 6 × 256 MiB under a 1 GiB quota; held when it got no more than the quota |
//!
//! ```text
//! cargo build --release --workspace && target/release/compare --lib hami=/path/to/HAMi-core/build/libvgpu.so
//! cargo build --workspace && target/debug/compare --quick          # vgpu alone, the CI smoke
//! ```
//! Output: the table on stdout and in `--out` (default `target/compare`) as `report.md`.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;
const MS: u64 = 1_000_000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("compare: {what}");
    std::process::exit(1)
}

/// A configuration: a name and the library preloaded (`None`: the bare driver).
struct Config {
    name: String,
    lib: Option<PathBuf>,
}

struct Env {
    lib_dir: PathBuf,
    bin: PathBuf,
    scratch: PathBuf,
    n: std::cell::Cell<u32>,
}

impl Env {
    /// A fresh directory with a fresh simulated machine.
    fn fresh(&self) -> PathBuf {
        let n = self.n.get();
        self.n.set(n + 1);
        let d = self.scratch.join(format!("run{n}"));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| fail(format_args!("mkdir {}: {e}", d.display())));
        d
    }

    /// `program` on the machine in `dir` under `config`, with `vars` (the contract) when a
    /// library is preloaded.
    fn command(&self, dir: &Path, config: &Config, program: &str, vars: &[(&str, String)]) -> Command {
        self.command_ctx(dir, config, program, vars, "0")
    }

    /// [`Env::command`] on a machine whose contexts cost `context` (simgpu's size syntax).
    fn command_ctx(&self, dir: &Path, config: &Config, program: &str, vars: &[(&str, String)], context: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CUDA_") || k.starts_with("SIMGPU_") || k.starts_with("VGPU_") || k.starts_with("GPU_CORE") {
                c.env_remove(&*k);
            }
        }
        c.env_remove("LD_PRELOAD")
            .env("LD_LIBRARY_PATH", &self.lib_dir)
            .env("SIMGPU_STATE", dir.join("machine"))
            .env("SIMGPU_CONTEXT_MEMORY", context)
            .env("LIBCUDA_LOG_LEVEL", "0");
        if let Some(lib) = &config.lib {
            c.env("LD_PRELOAD", lib).env("CUDA_DEVICE_MEMORY_SHARED_CACHE", dir.join("region.cache"));
            for (k, v) in vars {
                c.env(k, v);
            }
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        c
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One quota race: bytes the 32 processes held together.
fn quota_race(env: &Env, config: &Config) -> u64 {
    let dir = env.fresh();
    let quota = [("CUDA_DEVICE_MEMORY_LIMIT", "1g".to_string())];
    let children: Vec<_> = (0..32)
        .filter_map(|_| {
            env.command(&dir, config, "alloc_families", &quota)
                .args(["--family", "cuMemAlloc_v2", "--size", "100m", "--hold", "11", "--no-copy", "--wait", "2"])
                .spawn()
                .ok()
        })
        .collect();
    children
        .into_iter()
        .filter_map(|c| c.wait_with_output().ok())
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .filter(|l| field(l, "op") == Some("alloc") && field(l, "rc") == Some("0"))
                .filter_map(|l| field(l, "bytes")?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

use vgpu_examples::ALLOC_FAMILIES as FAMILIES;

/// The families that got more than a 1 GiB quota when asking for 1.5 GiB (`None`: the run
/// failed).
fn families_over(env: &Env, config: &Config) -> Option<Vec<&'static str>> {
    let mut over = Vec::new();
    for f in FAMILIES {
        let dir = env.fresh();
        let out = env
            .command(&dir, config, "alloc_families", &[("CUDA_DEVICE_MEMORY_LIMIT", "1g".to_string())])
            .args(["--family", f, "--size", "256m", "--hold", "6", "--no-copy"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let got: u64 = text
            .lines()
            .filter(|l| field(l, "op") == Some("alloc") && field(l, "rc") == Some("0"))
            .filter_map(|l| field(l, "bytes")?.parse::<u64>().ok())
            .sum();
        if got > 1024 * MIB {
            over.push(f);
        }
    }
    Some(over)
}

/// p50 in ns of a cost program's timed calls.
fn cost(env: &Env, config: &Config, program: &str, args: &[&str]) -> Option<f64> {
    let dir = env.fresh();
    let out = env.command(&dir, config, program, &[("CUDA_DEVICE_MEMORY_LIMIT", "8g".to_string())]).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with(program))?;
    (field(line, "rc") == Some("0")).then(|| field(line, "p50_ns")?.parse().ok()).flatten()
}

/// The worst p99 (ns) of 8 `alloc_cost` processes of one container running at once.
fn contention_p99(env: &Env, config: &Config, count: &str) -> Option<f64> {
    let dir = env.fresh();
    let quota = [("CUDA_DEVICE_MEMORY_LIMIT", "8g".to_string())];
    let children: Vec<_> = (0..8)
        .filter_map(|_| env.command(&dir, config, "alloc_cost", &quota).args(["--count", count, "--warmup", "100"]).spawn().ok())
        .collect();
    let mut worst: Option<f64> = None;
    for c in children {
        let out = c.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with("alloc_cost"))?;
        if field(line, "rc") != Some("0") {
            return None;
        }
        let p99: f64 = field(line, "p99_ns")?.parse().ok()?;
        worst = Some(worst.map_or(p99, |w: f64| w.max(p99)));
    }
    worst
}

/// Waits for `child` at most `limit`; `None` (and the child killed) when it took longer.
fn wait_within(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Rounds of: a process SIGKILLed `delay` into its start-up, then a follower that starts,
/// makes its context and allocates. Returns the slowest follower (ms) among those that
/// finished, how many did not within 20 s, and how many failed.
fn killed_start(env: &Env, config: &Config, rounds: u32) -> (f64, u32, u32) {
    let (mut slowest, mut blocked, mut failed) = (0.0f64, 0, 0);
    let quota = [("CUDA_DEVICE_MEMORY_LIMIT", "1g".to_string())];
    let ops = ["init", "ctx", "alloc=10m"];
    for r in 0..rounds {
        let dir = env.fresh();
        if let Ok(mut leader) = env.command(&dir, config, "probe", &quota).args(ops).spawn() {
            // 0 to 15 ms, spread over the rounds: before, during and after the library's start-up.
            std::thread::sleep(std::time::Duration::from_micros(u64::from(r * 7919 % 16) * 1000));
            let _ = leader.kill();
            let _ = leader.wait();
        }
        let t0 = std::time::Instant::now();
        let Ok(mut follower) = env.command(&dir, config, "probe", &quota).args(ops).spawn() else {
            failed += 1;
            continue;
        };
        match wait_within(&mut follower, std::time::Duration::from_secs(20)) {
            None => blocked += 1,
            Some(status) => {
                let mut out = String::new();
                let _ = std::io::Read::read_to_string(&mut follower.stdout.take().expect("piped"), &mut out);
                let ok = status.success() && out.lines().any(|l| field(l, "op") == Some("alloc") && field(l, "rc") == Some("0"));
                if ok {
                    slowest = slowest.max(t0.elapsed().as_secs_f64() * 1e3);
                } else {
                    failed += 1;
                }
            }
        }
    }
    (slowest, blocked, failed)
}

/// What a fourth process is told when three others hold contexts of 257 MiB each and it makes
/// its own (1028 MiB of a 1 GiB quota): `cuMemGetInfo`'s and NVML's views, as one cell.
fn views_past_quota(env: &Env, config: &Config) -> Option<String> {
    use std::io::BufRead;
    let dir = env.fresh();
    let quota = [("CUDA_DEVICE_MEMORY_LIMIT", "1g".to_string())];
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut c = env.command_ctx(&dir, config, "probe", &quota, "257m");
        let mut child = c.stdin(Stdio::piped()).args(["init", "ctx", "wait"]).spawn().ok()?;
        let mut lines = std::io::BufReader::new(child.stdout.take()?).lines();
        let made = lines.any(|l| l.is_ok_and(|l| field(&l, "op") == Some("ctx")));
        holders.push(child);
        if !made {
            break;
        }
    }
    let out = env.command_ctx(&dir, config, "probe", &quota, "257m").args(["init", "ctx", "info", "nvml"]).output().ok();
    for mut h in holders {
        drop(h.stdin.take());
        let _ = wait_within(&mut h, std::time::Duration::from_secs(10));
    }
    let text = String::from_utf8_lossy(&out?.stdout).into_owned();
    let mib =
        |l: &str, k: &str| field(l, k).and_then(|v| v.parse::<u64>().ok()).map(|v| (v / MIB).to_string()).unwrap_or_else(|| "?".into());
    let info = text.lines().find(|l| field(l, "op") == Some("info"))?;
    let nvml = text.lines().find(|l| field(l, "op") == Some("nvml") && field(l, "version") == Some("2"))?;
    let cu = if field(info, "rc") == Some("0") {
        format!("cuMemGetInfo {} total / {} free", mib(info, "total"), mib(info, "free"))
    } else {
        format!("cuMemGetInfo error {}", field(info, "rc").unwrap_or("?"))
    };
    let nv = if field(nvml, "rc") == Some("0") {
        format!("NVML {} total / {} free MiB", mib(nvml, "total"), mib(nvml, "free"))
    } else {
        format!("NVML error {}", field(nvml, "rc").unwrap_or("?"))
    };
    Some(format!("{cu}; {nv}"))
}

/// The median paired difference (ns) of `launch_cost --pair`: the library's entry against the
/// driver's own function, alternating in one process.
fn pair_cost(env: &Env, config: &Config, count: &str) -> Option<f64> {
    let dir = env.fresh();
    let out = env
        .command(&dir, config, "launch_cost", &[("CUDA_DEVICE_MEMORY_LIMIT", "8g".to_string())])
        .args(["--count", count, "--warmup", "500", "--period-us", "20", "--pair"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("launch_cost"))?;
    (field(line, "rc") == Some("0")).then(|| field(line, "pair_p50_ns")?.parse().ok()).flatten()
}

/// What an SM-share row launches.
#[derive(Clone, Copy)]
enum Load {
    /// An open loop of 1 ms kernels of one wave (132 blocks of 1 ms), 4 in flight.
    Open,
    /// Graph replays of ten such kernels.
    Graph,
    /// An open loop of 1 ms kernels of 100 waves of 10 µs blocks (13 200 blocks), 4 in flight:
    /// a limiter that charges per block, not per unit of GPU time, sees 100× the blocks.
    ShortBlocks,
}

/// The device share of `load` at a 30 % SM limit.
fn sm_share(env: &Env, config: &Config, seconds: f64, load: Load) -> Option<f64> {
    let dir = env.fresh();
    let cfg = simgpu::config::from_lookup(|k| match k {
        "SIMGPU_STATE" => Some(dir.join("machine").display().to_string()),
        "SIMGPU_CONTEXT_MEMORY" => Some("0".into()),
        _ => None,
    })
    .ok()?;
    let m = simgpu::machine::Machine::observe(&cfg).ok()?;
    let vars = [("CUDA_DEVICE_SM_LIMIT", "30".to_string()), ("GPU_CORE_UTILIZATION_POLICY", "force".to_string())];
    let t0 = simgpu::now_ns();
    let mut cmd = env.command(&dir, config, "launch", &vars);
    cmd.args(["--duration", &seconds.to_string()]);
    match load {
        Load::Open => cmd.args(["--kernel", "spin_1000us", "--grid", "132", "--mode", "open", "--inflight", "4"]),
        Load::Graph => cmd.args(["--kernel", "spin_1000us", "--grid", "132", "--mode", "graph", "--graph-kernels", "10"]),
        Load::ShortBlocks => cmd.args(["--kernel", "spin_10us", "--grid", "13200", "--mode", "open", "--inflight", "4"]),
    };
    let out = cmd.output().ok()?;
    let t1 = simgpu::now_ns();
    if !out.status.success() {
        return None;
    }
    let (from, to) = (t0 + 1_000 * MS, t1.saturating_sub(300 * MS));
    (to > from).then(|| 100.0 * m.busy_between(0, from, to, None) as f64 / (to - from) as f64)
}

fn main() {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| fail("where am I"));
    let mut configs =
        vec![Config { name: "no library".into(), lib: None }, Config { name: "vgpu".into(), lib: Some(exe_dir.join("libvgpu.so")) }];
    let (mut quick, mut out_dir) = (false, repo_root().join("target/compare"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out_dir = PathBuf::from(args.next().unwrap_or_else(|| fail("--out needs a directory"))),
            "--lib" => {
                let v = args.next().unwrap_or_else(|| fail("--lib needs NAME=PATH"));
                let (name, path) = v.split_once('=').unwrap_or_else(|| fail(format_args!("--lib {v:?}: expected NAME=PATH")));
                let path = std::path::absolute(path).unwrap_or_else(|e| fail(format_args!("--lib {path}: {e}")));
                if !path.is_file() {
                    fail(format_args!("--lib {name}: {} is not a file", path.display()));
                }
                configs.push(Config { name: name.to_string(), lib: Some(path) });
            }
            _ => fail("usage: compare [--quick] [--out DIR] [--lib NAME=PATH]..."),
        }
    }
    if !exe_dir.join("libvgpu.so").is_file() {
        fail("libvgpu.so is missing beside this binary: cargo build --workspace first");
    }
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| fail(format_args!("mkdir {}: {e}", out_dir.display())));
    let lib_dir = simgpu::layout::layout(&exe_dir, &out_dir.join("lib")).unwrap_or_else(|e| fail(format_args!("laying out simgpu: {e}")));
    let bin = out_dir.join("bin");
    let built = Command::new("bash").arg(repo_root().join("examples/c/build.sh")).arg(&bin).arg(&lib_dir).stdout(Stdio::null()).status();
    if !built.is_ok_and(|s| s.success()) {
        fail("examples/c/build.sh failed");
    }
    // The cost programs reach the driver through examples/c/driver.c; probe needs nothing more.
    let ex = repo_root().join("examples/c");
    for (name, src, driver) in [
        ("launch_cost", "bench/sm/c/launch_cost.c", true),
        ("alloc_cost", "bench/compare/c/alloc_cost.c", true),
        ("probe", "tests/c/probe.c", false),
    ] {
        let src = repo_root().join(src);
        let mut gcc = Command::new(std::env::var("CC").unwrap_or_else(|_| "gcc".into()));
        gcc.args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-I"]).arg(&ex).arg("-o").arg(bin.join(name)).arg(&src);
        if driver {
            gcc.arg(ex.join("driver.c"));
        }
        if !gcc.arg("-ldl").status().is_ok_and(|s| s.success()) {
            fail(format_args!("gcc {}", src.display()));
        }
    }
    let scratch = out_dir.join("runs");
    let _ = std::fs::remove_dir_all(&scratch);
    let env = Env { lib_dir, bin, scratch, n: std::cell::Cell::new(0) };

    let rounds = if quick { 2 } else { 7 };
    let race_rounds = if quick { 3 } else { 30 };
    let (launches, allocs) = if quick { ("3000", "1000") } else { ("20000", "5000") };
    let k = configs.len();
    let (mut over, mut held_max) = (vec![0u32; k], vec![0u64; k]);
    for r in 0..race_rounds {
        for (i, c) in configs.iter().enumerate() {
            let held = quota_race(&env, c);
            held_max[i] = held_max[i].max(held);
            if held > 1024 * MIB {
                over[i] += 1;
            }
        }
        if r % 10 == 9 {
            eprintln!("compare: quota race, {} rounds", r + 1);
        }
    }
    let (mut launch, mut alloc, mut share) = (vec![Vec::new(); k], vec![Vec::new(); k], vec![Vec::new(); k]);
    let (mut paired, mut contention, mut graph_share) = (vec![Vec::new(); k], vec![Vec::new(); k], vec![Vec::new(); k]);
    for r in 0..rounds {
        eprintln!("compare: costs, round {} of {rounds}", r + 1);
        for (i, c) in configs.iter().enumerate() {
            launch[i].extend(cost(&env, c, "launch_cost", &["--count", launches, "--warmup", "500", "--period-us", "20"]));
            paired[i].extend(pair_cost(&env, c, launches));
            alloc[i].extend(cost(&env, c, "alloc_cost", &["--count", allocs, "--warmup", "200"]));
        }
    }
    for r in 0..(if quick { 1 } else { 3 }) {
        eprintln!("compare: contention, round {}", r + 1);
        for (i, c) in configs.iter().enumerate() {
            contention[i].extend(contention_p99(&env, c, if quick { "300" } else { "2000" }));
        }
    }
    let kill_rounds = if quick { 3 } else { 20 };
    eprintln!("compare: killed during start-up, {kill_rounds} rounds");
    let killed: Vec<(f64, u32, u32)> = configs.iter().map(|c| killed_start(&env, c, kill_rounds)).collect();
    eprintln!("compare: views past the quota");
    let views: Vec<Option<String>> = configs.iter().map(|c| views_past_quota(&env, c)).collect();
    for r in 0..(if quick { 1 } else { 2 }) {
        eprintln!("compare: SM share, round {}", r + 1);
        for (i, c) in configs.iter().enumerate() {
            share[i].extend(sm_share(&env, c, if quick { 2.5 } else { 5.0 }, Load::Open));
            graph_share[i].extend(sm_share(&env, c, if quick { 2.5 } else { 5.0 }, Load::Graph));
        }
    }
    // Once, and longer: a limiter that settles slowly (HAMi-core's token bank refills by the
    // block and is first filled for about 6 s of one-wave 1 ms kernels) shows where it settles.
    let short_seconds = if quick { 2.5 } else { 20.0 };
    eprintln!("compare: SM share, short blocks, {short_seconds} s each");
    let mut short_share: Vec<Vec<f64>> =
        configs.iter().map(|c| sm_share(&env, c, short_seconds, Load::ShortBlocks).into_iter().collect()).collect();
    eprintln!("compare: allocation families");
    let families: Vec<Option<Vec<&str>>> = configs.iter().map(|c| families_over(&env, c)).collect();
    let base_launch = median(&mut launch[0].clone());
    let base_alloc = median(&mut alloc[0].clone());
    let mut md = format!(
        "simgpu, {race_rounds} quota-race rounds, {rounds} alternating cost rounds (medians of per-run p50s), configurations alternating.\n\n| measure | {} |\n|---|{}|\n",
        configs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" | "),
        configs.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    let row = |name: &str, cells: Vec<String>| format!("| {name} | {} |\n", cells.join(" | "));
    md += &row(
        "quota race: 32 processes, 1 GiB, rounds over the quota (most held)",
        (0..k)
            .map(|i| {
                if configs[i].lib.is_none() {
                    format!("no limit ({} MiB)", held_max[i] / MIB)
                } else {
                    format!("{}/{race_rounds} ({} MiB)", over[i], held_max[i] / MIB)
                }
            })
            .collect(),
    );
    let delta = |v: &mut Vec<f64>, base: f64, unit: f64, suffix: &str| {
        let m = median(v);
        if m.is_nan() { "failed".to_string() } else { format!("{:.0} {suffix} ({:+.0})", m / unit, (m - base) / unit) }
    };
    md += &row("`cuLaunchKernel`, whole process, p50 (added)", (0..k).map(|i| delta(&mut launch[i], base_launch, 1.0, "ns")).collect());
    md += &row(
        "`cuLaunchKernel` added, same process, paired (median difference)",
        (0..k)
            .map(|i| {
                let m = median(&mut paired[i]);
                if m.is_nan() { "failed".into() } else { format!("{m:+.0} ns") }
            })
            .collect(),
    );
    md += &row("`cuMemAlloc_v2`+`cuMemFree_v2` 2 MiB, p50 (added)", (0..k).map(|i| delta(&mut alloc[i], base_alloc, 1.0, "ns")).collect());
    md += &row(
        "alloc+free p99 with 8 processes of one container at once (worst process)",
        (0..k)
            .map(|i| {
                let m = median(&mut contention[i]);
                if m.is_nan() { "failed".into() } else { format!("{:.1} µs", m / 1e3) }
            })
            .collect(),
    );
    md += &row(
        &format!("a process SIGKILLed during start-up, then another starts: slowest follower ({kill_rounds} rounds)"),
        killed
            .iter()
            .map(|(slowest, blocked, failed)| {
                let mut cell = format!("{slowest:.0} ms");
                if *blocked > 0 {
                    cell += &format!(", {blocked} waited > 20 s");
                }
                if *failed > 0 {
                    cell += &format!(", {failed} failed");
                }
                cell
            })
            .collect(),
    );
    md += &row(
        "views when contexts take 1028 MiB of a 1 GiB quota",
        (0..k)
            .map(|i| match (&views[i], &configs[i].lib) {
                (Some(v), None) => format!("no quota ({v})"),
                (Some(v), _) => v.clone(),
                (None, _) => "failed".into(),
            })
            .collect(),
    );
    let pct = |v: &mut Vec<f64>| {
        let m = median(v);
        if m.is_nan() { "failed".to_string() } else { format!("{m:.1} %") }
    };
    md += &row("SM share at a 30 % cap, open loop of 1 ms kernels", (0..k).map(|i| pct(&mut share[i])).collect());
    md += &row("SM share at a 30 % cap, graph replays (ten 1 ms kernels each)", (0..k).map(|i| pct(&mut graph_share[i])).collect());
    md += &row(
        &format!("SM share at a 30 % cap, open loop of 1 ms kernels of 13 200 short blocks, {short_seconds} s"),
        (0..k).map(|i| pct(&mut short_share[i])).collect(),
    );
    md += &row(
        "allocation families held to the quota (of 9; those that were not)",
        (0..k)
            .map(|i| match (&families[i], &configs[i].lib) {
                (_, None) => "no limit".to_string(),
                (None, _) => "failed".to_string(),
                (Some(o), _) if o.is_empty() => "9 of 9".to_string(),
                (Some(o), _) => format!("{} of 9 (not {})", 9 - o.len(), o.join(", ")),
            })
            .collect(),
    );
    std::fs::write(out_dir.join("report.md"), &md).unwrap_or_else(|e| fail(format_args!("write report: {e}")));
    print!("{md}");
}
