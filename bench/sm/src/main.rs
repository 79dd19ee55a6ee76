//! `sm-harness`: how well vgpu holds a container's SM share.
//!
//! For each target share it runs the example program `launch` (examples/c/launch.c, the same
//! program on simgpu and on a real GPU) under `libvgpu.so` and measures what the device
//! actually did:
//!
//! | workload | what runs |
//! |---|---|
//! | a | open-loop stream of small kernels (`--mode open`, `spin_100us`) |
//! | b | big kernel + sync loop (`--mode sync`, `spin_1000us` over 10 × SMs blocks: 10 ms on simgpu) |
//! | c | CUDA graph replay loop (`--mode graph`, 10 × `spin_100us` per replay) |
//! | d | 8 processes of (a) in one container (one region, one bucket) |
//! | e | two containers (two regions) at 30/70 and 10/90, open-loop and big-kernel |
//! | f | the target changed mid-run by writing the bucket line, then the time to settle |
//! | g | the four cases NVML's sampling used to break: 30 % alone, 30 % beside an uncapped tenant, 3 processes of one 30 % container, 30 % + 60 % side by side |
//! | cost | the launch hook's added CPU time (`bench/sm/c/launch_cost.c`), tokens available |
//!
//! Busy time per process comes from simgpu's shared device timeline (`--measure timeline`,
//! ground truth) or from NVML's per-process utilisation (`--measure nvml`, what a real GPU
//! offers; on simgpu it exercises the same path against simgpu's NVML). Shares are taken per
//! 100 ms window over the steady part of each run (after a warm-up), per container (the sum
//! over its processes). Output: `report.json` and `report.md` in the output directory
//! (`target/sm-harness` by default).
//!
//! On simgpu, `--nvml-period` sets NVML's sample period for every program of the run (and for
//! `--measure nvml`): `167ms` (simgpu's default, 1/6 s) to `1s`, as NVIDIA documents the range,
//! or `ideal` (exact answers at any instant: an experiment, not a driver).
//!
//! ```text
//! cargo build --release --workspace && target/release/sm-harness            # full, a few minutes
//! cargo build --workspace && target/debug/sm-harness --quick                # CI smoke, ~30 s
//! target/release/sm-harness --nvml-period 1s --only g                       # NVML at its slowest
//! target/release/sm-harness --driver system --measure nvml                  # on a real GPU
//! ```
#![deny(unsafe_code)]
mod metrics;
mod sampler;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vgpu_limiter::config::MAX_DEVICES;
use vgpu_limiter::region::Region;
use vgpu_limiter::sm::Bucket;

use metrics::{Sample, Stats, settle_ns, stats, windows};
use sampler::{SLOT_NS, Sampler, Source};

const MS: u64 = 1_000_000;
/// Width of a measurement window.
const WINDOW_NS: u64 = 100 * MS;
/// The end of a run left out (launch loops end at slightly different times).
const TAIL_NS: u64 = 150 * MS;
/// A run's programs are killed this long after their launch loops should have ended.
const KILL_AFTER_S: f64 = 10.0;
/// SMs of the simulated device (an H100's).
const SIM_SMS: u32 = 132;

/// Which driver the programs run against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    /// simgpu, laid out from the build's artifacts.
    Sim,
    /// The system's libcuda (a real GPU).
    System,
}

/// Which signal the shares are measured from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Measure {
    Timeline,
    Nvml,
}

struct Opts {
    quick: bool,
    targets: Vec<u8>,
    only: Vec<String>,
    seconds: f64,
    warmup: f64,
    driver: Driver,
    measure: Measure,
    split_policy: String,
    /// `SIMGPU_NVML_PERIOD` for the run (sim driver), `None`: simgpu's default.
    nvml_period: Option<String>,
    out: PathBuf,
    shim: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: sm-harness [--quick] [--targets 10,30,50,70,90] [--only a,b,c,d,e,f,cost] [--seconds S] [--warmup S]\n\
         \x20                 [--driver sim|system] [--measure timeline|nvml] [--split-policy default|force]\n\
         \x20                 [--nvml-period 167ms|1s|ideal]\n\
         \x20                 [--out DIR] [--shim PATH/libvgpu.so]"
    );
    std::process::exit(2)
}

fn parse_opts(exe_dir: &Path) -> Opts {
    let mut o = Opts {
        quick: false,
        targets: vec![10, 30, 50, 70, 90],
        only: ["a", "b", "c", "d", "e", "f", "g", "cost"].map(String::from).to_vec(),
        seconds: 3.0,
        warmup: 0.5,
        driver: Driver::Sim,
        measure: Measure::Timeline,
        split_policy: "default".into(),
        nvml_period: None,
        out: exe_dir.parent().unwrap_or(exe_dir).join("sm-harness"),
        shim: exe_dir.join("libvgpu.so"),
    };
    let (mut targets, mut seconds, mut measure) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => o.quick = true,
            "--targets" => targets = Some(val().split(',').map(|t| t.trim().parse::<u8>().unwrap_or_else(|_| usage())).collect::<Vec<_>>()),
            "--only" => o.only = val().split(',').map(|s| s.trim().to_string()).collect(),
            "--seconds" => seconds = Some(val().parse::<f64>().unwrap_or_else(|_| usage())),
            "--warmup" => o.warmup = val().parse().unwrap_or_else(|_| usage()),
            "--driver" => {
                o.driver = match val().as_str() {
                    "sim" => Driver::Sim,
                    "system" => Driver::System,
                    _ => usage(),
                }
            }
            "--measure" => {
                measure = Some(match val().as_str() {
                    "timeline" => Measure::Timeline,
                    "nvml" => Measure::Nvml,
                    _ => usage(),
                })
            }
            "--split-policy" => o.split_policy = val(),
            "--nvml-period" => {
                let v = val();
                if let Err(e) = simgpu::config::parse_nvml_period(&v) {
                    eprintln!("sm-harness: --nvml-period: {e}");
                    std::process::exit(2);
                }
                o.nvml_period = Some(v);
            }
            "--out" => o.out = PathBuf::from(val()),
            "--shim" => o.shim = PathBuf::from(val()),
            _ => usage(),
        }
    }
    if o.quick {
        o.targets = vec![30];
        o.seconds = 1.5;
    }
    // Region paths handed to the shim must be absolute (a relative --out would fail every run).
    o.out = std::path::absolute(&o.out).unwrap_or(o.out);
    o.targets = targets.unwrap_or(o.targets);
    o.seconds = seconds.unwrap_or(o.seconds);
    o.measure = measure.unwrap_or(if o.driver == Driver::System { Measure::Nvml } else { Measure::Timeline });
    if o.driver == Driver::System && o.nvml_period.is_some() {
        eprintln!("sm-harness: --nvml-period sets simgpu's NVML; a real driver samples at its own period");
        std::process::exit(2);
    }
    if o.driver == Driver::System && o.measure == Measure::Timeline {
        eprintln!("sm-harness: a real GPU has no simgpu timeline: use --measure nvml");
        std::process::exit(2);
    }
    if o.targets.iter().any(|t| !(1..=100).contains(t)) || o.seconds <= o.warmup + 0.5 {
        usage();
    }
    o
}

/// The programs and libraries a run needs.
struct Env {
    opts: Opts,
    /// simgpu's libraries under their SONAMEs (sim driver only).
    sim_lib: Option<PathBuf>,
    /// The simulated machine's state file (sim driver only).
    state: Option<PathBuf>,
    launch: PathBuf,
    launch_cost: PathBuf,
    sms: u32,
    source: Source,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check_status(what: &str, status: std::io::Result<std::process::ExitStatus>) {
    match status {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("sm-harness: {what} failed: {other:?}");
            std::process::exit(1)
        }
    }
}

impl Env {
    #[allow(unsafe_code)] // set_var before any other thread exists
    fn setup(opts: Opts, exe_dir: &Path) -> Env {
        std::fs::create_dir_all(&opts.out).expect("create the output directory");
        if !opts.shim.is_file() {
            eprintln!("sm-harness: {} is missing: build the workspace first (cargo build --workspace)", opts.shim.display());
            std::process::exit(1);
        }
        let root = repo_root();
        let bin = opts.out.join("bin");
        let (sim_lib, state) = match opts.driver {
            Driver::Sim => {
                let lib = simgpu::layout::layout(exe_dir, &opts.out.join("lib")).unwrap_or_else(|e| {
                    eprintln!("sm-harness: laying out simgpu from {}: {e} (cargo build --workspace first)", exe_dir.display());
                    std::process::exit(1)
                });
                let state = opts.out.join("machine");
                let _ = std::fs::remove_file(&state);
                (Some(lib), Some(state))
            }
            Driver::System => (None, None),
        };
        let mut build = Command::new("bash");
        build.arg(root.join("examples/c/build.sh")).arg(&bin).stdout(Stdio::null());
        if let Some(lib) = &sim_lib {
            build.arg(lib);
        }
        check_status("examples/c/build.sh", build.status());
        let launch_cost = bin.join("launch_cost");
        let ex = root.join("examples/c");
        check_status(
            "gcc launch_cost.c",
            Command::new(std::env::var("CC").unwrap_or_else(|_| "gcc".into()))
                .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
                .arg(&ex)
                .arg("-o")
                .arg(&launch_cost)
                .arg(root.join("bench/sm/c/launch_cost.c"))
                .arg(ex.join("driver.c"))
                .arg("-ldl")
                .status(),
        );
        let source = match opts.measure {
            Measure::Timeline => {
                let state = state.clone().expect("the timeline needs simgpu");
                let cfg = simgpu::config::from_lookup(|k| match k {
                    "SIMGPU_STATE" => Some(state.display().to_string()),
                    "SIMGPU_SMS" => Some(SIM_SMS.to_string()),
                    _ => None,
                })
                .expect("simgpu configuration");
                Source::Timeline(Arc::new(simgpu::machine::Machine::observe(&cfg).expect("open the simulated machine")))
            }
            Measure::Nvml => {
                if let Some(state) = &state {
                    // simgpu's NVML, loaded into this process, finds the machine through these.
                    // SAFETY: no other thread runs yet (the sampler starts with the first run).
                    unsafe {
                        std::env::set_var("SIMGPU_STATE", state);
                        std::env::set_var("SIMGPU_SMS", SIM_SMS.to_string());
                        match &opts.nvml_period {
                            Some(p) => std::env::set_var("SIMGPU_NVML_PERIOD", p),
                            None => std::env::remove_var("SIMGPU_NVML_PERIOD"),
                        }
                    }
                }
                let path = match &sim_lib {
                    Some(lib) => lib.join("libnvidia-ml.so.1").display().to_string(),
                    None => "libnvidia-ml.so.1".to_string(),
                };
                Source::Nvml(Arc::new(sampler::Nvml::load(&path).unwrap_or_else(|e| {
                    eprintln!("sm-harness: NVML: {e}");
                    std::process::exit(1)
                })))
            }
        };
        let mut env = Env { opts, sim_lib, state, launch: bin.join("launch"), launch_cost, sms: SIM_SMS, source };
        // Probe: the device's SM count (and that the programs run at all), without the shim.
        let out = env.command(&env.launch, None).args(["--count", "1", "--kernel", "noop"]).output().expect("run launch");
        let text = String::from_utf8_lossy(&out.stdout);
        env.sms = field(&text, "sms").and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            eprintln!("sm-harness: the probe run of launch failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1)
        });
        env
    }

    /// A command for `program` on the machine, under the shim with `container`'s settings
    /// (`None`: without the shim). Nothing of the caller's shim or device settings leaks in.
    fn command(&self, program: &Path, shim: Option<(&Container, &Path)>) -> Command {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CUDA_DEVICE_") || k.starts_with("SIMGPU_") {
                c.env_remove(&*k);
            }
        }
        for k in ["CUDA_VISIBLE_DEVICES", "GPU_CORE_UTILIZATION_POLICY", "LD_PRELOAD", "CUDA_DISABLE_CONTROL", "LIBCUDA_LOG_LEVEL"] {
            c.env_remove(k);
        }
        if let (Some(lib), Some(state)) = (&self.sim_lib, &self.state) {
            c.env("LD_LIBRARY_PATH", lib).env("SIMGPU_STATE", state).env("SIMGPU_SMS", SIM_SMS.to_string());
            if let Some(p) = &self.opts.nvml_period {
                c.env("SIMGPU_NVML_PERIOD", p);
            }
        }
        if let Some((ct, region)) = shim {
            c.env("LD_PRELOAD", &self.opts.shim).env("CUDA_DEVICE_MEMORY_SHARED_CACHE", region);
            if let Some(l) = ct.limit {
                c.env("CUDA_DEVICE_SM_LIMIT", l.to_string()).env("GPU_CORE_UTILIZATION_POLICY", ct.policy);
            }
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }
}

/// The value of `key=` in a `key=value` line.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// A workload program's kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Open-loop small kernels.
    Open,
    /// Big kernel + synchronize.
    Sync,
    /// Graph replays.
    Graph,
}

impl Kind {
    fn args(self, sms: u32, seconds: f64) -> Vec<String> {
        let d = format!("{seconds:.3}");
        let v: Vec<String> = match self {
            Kind::Open => vec!["--mode".into(), "open".into(), "--kernel".into(), "spin_100us".into()],
            // 10 waves of 1 ms on simgpu; on a real GPU (2 blocks of 1024 threads per SM) ~5 ms.
            Kind::Sync => ["--mode", "sync", "--kernel", "spin_1000us", "--block", "1024", "--grid"]
                .into_iter()
                .map(String::from)
                .chain([(10 * sms).to_string()])
                .collect(),
            Kind::Graph => ["--mode", "graph", "--graph-kernels", "10", "--kernel", "spin_100us"].into_iter().map(String::from).collect(),
        };
        v.into_iter().chain(["--duration".into(), d]).collect()
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Open => "open-loop spin_100us",
            Kind::Sync => "10 ms kernel + sync",
            Kind::Graph => "graph of 10 × spin_100us",
        }
    }
}

/// One container of a run: a region of its own.
#[derive(Clone, Debug)]
struct Container {
    label: String,
    limit: Option<u8>,
    policy: &'static str,
    kind: Kind,
    procs: usize,
    /// Seconds after the run starts that this container's processes start.
    delay_s: f64,
}

/// One run: containers started together, optionally a target change.
#[derive(Clone, Debug)]
struct RunSpec {
    workload: &'static str,
    name: String,
    containers: Vec<Container>,
    seconds: f64,
    /// Seconds after the device first turns busy, and the new limit (percent) of container 0.
    change: Option<(f64, u8)>,
}

/// What a run left.
struct RunOutcome {
    samples: Vec<Sample>,
    pids: Vec<Vec<u32>>,
    t_first: u64,
    /// When the first process exited.
    first_exit: u64,
    changed_at: Option<u64>,
    failures: Vec<String>,
}

fn now() -> u64 {
    simgpu::now_ns()
}

impl Env {
    fn run(&self, spec: &RunSpec) -> RunOutcome {
        let dir = self.opts.out.join("runs").join(&spec.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the run directory");
        let regions: Vec<PathBuf> = (0..spec.containers.len()).map(|i| dir.join(format!("c{i}.region"))).collect();
        // To change the target, the harness holds the container's region itself (it takes a
        // slot of its own, as any process of the container would).
        let operator = spec.change.map(|_| {
            Region::open(&regions[0], &[None; MAX_DEVICES], 0o600).unwrap_or_else(|e| panic!("open {}: {e}", regions[0].display()))
        });
        let start = now();
        let sampler = Sampler::start(self.source.clone(), start);
        let mut children: Vec<(usize, Child, Option<u64>)> = Vec::new();
        let most = spec.containers.iter().map(|c| c.procs).max().unwrap_or(0);
        let mut delays: Vec<f64> = spec.containers.iter().map(|c| c.delay_s).collect();
        delays.sort_by(f64::total_cmp);
        delays.dedup();
        for delay in delays {
            std::thread::sleep(Duration::from_nanos((start + (delay * 1e9) as u64).saturating_sub(now())));
            for p in 0..most {
                for (i, c) in spec.containers.iter().enumerate().filter(|(_, c)| p < c.procs && c.delay_s == delay) {
                    let child = self
                        .command(&self.launch, Some((c, &regions[i])))
                        .args(c.kind.args(self.sms, spec.seconds))
                        .spawn()
                        .unwrap_or_else(|e| panic!("spawn {}: {e}", self.launch.display()));
                    children.push((i, child, None));
                }
            }
        }
        let deadline = start + ((spec.seconds + KILL_AFTER_S) * 1e9) as u64;
        let mut changed_at = None;
        let mut failures = Vec::new();
        loop {
            let t = now();
            if let (Some((at, to)), Some(first), None, Some(r)) = (spec.change, sampler.first_busy(), changed_at, &operator)
                && t >= first + (at * 1e9) as u64
            {
                Bucket::new(r.sm_bucket(0)).set_limit_permille(u64::from(to) * 10);
                changed_at = Some(now());
            }
            for (_, c, exit) in children.iter_mut().filter(|(_, _, e)| e.is_none()) {
                if let Ok(Some(_)) = c.try_wait() {
                    *exit = Some(t);
                }
            }
            if children.iter().all(|(_, _, e)| e.is_some()) {
                break;
            }
            if t > deadline && failures.is_empty() {
                failures.push(format!("{}: ran past {} s, killed", spec.name, spec.seconds + KILL_AFTER_S));
                for (_, c, _) in &mut children {
                    let _ = c.kill();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let end = now();
        let samples = sampler.finish(end + SLOT_NS);
        let mut pids = vec![Vec::new(); spec.containers.len()];
        let mut first_exit = u64::MAX;
        for (i, c, exit) in children {
            pids[i].push(c.id());
            first_exit = first_exit.min(exit.unwrap_or(end));
            let out = c.wait_with_output().expect("collect a child's output");
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || field(&stdout, "rc") != Some("0") {
                failures.push(format!("{} (container {i}): {} {stdout}{}", spec.name, out.status, String::from_utf8_lossy(&out.stderr)));
            }
        }
        let t_first = samples.iter().find(|s| s.busy.iter().any(|(_, b)| *b > 0)).map_or(start, |s| s.t0);
        drop(operator);
        RunOutcome { samples, pids, t_first, first_exit, changed_at, failures }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
struct Row {
    workload: &'static str,
    case: String,
    target: Option<f64>,
    stats: Stats,
    notes: String,
    json: Value,
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "windows": s.windows, "achieved_pct": s.achieved, "min_pct": s.min, "max_pct": s.max,
        "mean_abs_err_pts": s.mean_abs_err, "p95_abs_err_pts": s.p95_abs_err,
        "overshoot_pts": s.overshoot, "under_delivery_pts": s.under, "throughput_pct_of_ideal": s.throughput_pct,
    })
}

impl Env {
    /// The steady part of a run: from the warm-up (after the last container started) to the
    /// end of the launch loops.
    fn steady(&self, o: &RunOutcome, spec: &RunSpec) -> (u64, u64) {
        let delay = spec.containers.iter().map(|c| c.delay_s).fold(0.0, f64::max);
        let from = o.t_first + ((self.opts.warmup + delay) * 1e9) as u64;
        let to = (o.t_first + (spec.seconds * 1e9) as u64).saturating_sub(TAIL_NS).min(o.first_exit);
        (from, to)
    }

    fn shares(&self, o: &RunOutcome, pids: &[u32], from: u64, to: u64) -> Vec<f64> {
        windows(&o.samples, pids, from, to, WINDOW_NS, WINDOW_NS).into_iter().map(|(_, s)| s).collect()
    }

    /// Runs `spec` and turns it into report rows.
    fn measure(&self, spec: &RunSpec) -> (Vec<Row>, Value) {
        eprintln!("sm-harness: {} ...", spec.name);
        let o = self.run(spec);
        let mut rows = Vec::new();
        let mut containers_json = Vec::new();
        let (from, to) = self.steady(&o, spec);
        for (i, c) in spec.containers.iter().enumerate() {
            let pids = &o.pids[i];
            let series = windows(&o.samples, pids, o.t_first.saturating_sub(WINDOW_NS), o.first_exit, WINDOW_NS, WINDOW_NS);
            containers_json.push(json!({
                "label": c.label, "limit_pct": c.limit, "policy": c.policy, "workload": c.kind.name(), "processes": c.procs, "pids": pids,
                "windows_100ms": series.iter().map(|(end, s)| json!([(*end as f64 - o.t_first as f64) / 1e6, s * 100.0])).collect::<Vec<_>>(),
            }));
            let target = c.limit.map(f64::from);
            match (spec.change, i) {
                (Some((_, to_pct)), 0) => {
                    let Some(tc) = o.changed_at else {
                        rows.push(Row {
                            workload: spec.workload,
                            case: c.label.clone(),
                            target: Some(f64::from(to_pct)),
                            stats: Stats::default(),
                            notes: "the change was never made (device never busy?)".into(),
                            json: json!({"error": "no change"}),
                        });
                        continue;
                    };
                    let before = stats(&self.shares(&o, pids, from, tc), target);
                    let step = if matches!(self.source, Source::Timeline(_)) { SLOT_NS } else { WINDOW_NS };
                    let sliding = windows(&o.samples, pids, tc, to, WINDOW_NS, step);
                    let new = f64::from(to_pct);
                    let s3 = settle_ns(&sliding, WINDOW_NS, tc, new, 3.0);
                    let s5 = settle_ns(&sliding, WINDOW_NS, tc, new, 5.0);
                    let after = stats(&self.shares(&o, pids, tc + 500 * MS, to), Some(new));
                    let ms = |s: Option<u64>| s.map_or("never".to_string(), |n| format!("{} ms", n / MS));
                    rows.push(Row {
                        workload: spec.workload,
                        case: format!("{} → {}", c.limit.unwrap_or(0), to_pct),
                        target: Some(new),
                        stats: after,
                        notes: format!("settle ±3: {}, ±5: {}; before: {:.1}%", ms(s3), ms(s5), before.achieved),
                        json: json!({
                            "from_pct": c.limit, "to_pct": to_pct, "changed_after_ms": (tc - o.t_first) / MS,
                            "settle_3pts_ms": s3.map(|n| n / MS), "settle_5pts_ms": s5.map(|n| n / MS),
                            "before": stats_json(&before), "after_from_500ms": stats_json(&after),
                        }),
                    });
                }
                _ => {
                    let st = stats(&self.shares(&o, pids, from, to), target);
                    rows.push(Row {
                        workload: spec.workload,
                        case: c.label.clone(),
                        target,
                        stats: st,
                        notes: String::new(),
                        json: json!({"stats": stats_json(&st)}),
                    });
                }
            }
        }
        // A split: completed work of A : B against the ratio of their shares.
        if spec.workload == "e" && rows.len() == 2 {
            let (aa, ba) = (rows[0].stats.achieved, rows[1].stats.achieved);
            // A tenant without a limit is entitled to the rest of the device.
            if let Some(ta) = rows[0].target {
                let tb = rows[1].target.unwrap_or(100.0 - ta);
                let err = (ba > 0.0).then(|| 100.0 * ((aa / ba) / (ta / tb) - 1.0));
                for r in &mut rows {
                    r.notes = format!("split {aa:.1}:{ba:.1}, ratio error {}", err.map_or("∞".into(), |e| format!("{e:+.1} %")));
                    r.json["split_ratio_err_pct"] = json!(err);
                }
            }
        }
        for f in &o.failures {
            eprintln!("sm-harness: FAILED {f}");
        }
        for r in &mut rows {
            if !o.failures.is_empty() {
                r.notes = format!("{} FAILED: {}", r.notes, o.failures.len());
            }
            r.json["failures"] = json!(o.failures);
        }
        let run = json!({
            "name": spec.name, "workload": spec.workload, "seconds": spec.seconds, "steady_from_ms": (from - o.t_first) / MS,
            "steady_to_ms": to.saturating_sub(o.t_first) / MS, "containers": containers_json,
        });
        (rows, run)
    }
}

/// The runs, in order.
fn plan(o: &Opts) -> Vec<RunSpec> {
    let want = |w: &str| o.only.iter().any(|x| x == w);
    let s = o.seconds;
    let one =
        |label: String, limit: Option<u8>, kind: Kind, procs: usize| Container { label, limit, policy: "force", kind, procs, delay_s: 0.0 };
    let mut runs = Vec::new();
    for (w, kind) in [("a", Kind::Open), ("b", Kind::Sync), ("c", Kind::Graph)] {
        if !want(w) {
            continue;
        }
        let mut limits: Vec<Option<u8>> = o.targets.iter().copied().map(Some).collect();
        if !o.quick {
            limits.push(None);
        }
        for l in limits {
            let label = l.map_or("no SM limit".into(), |l| format!("{l}"));
            runs.push(RunSpec {
                workload: w,
                name: format!("{w}-{}", l.map_or("none".into(), |l| l.to_string())),
                containers: vec![one(label, l, kind, 1)],
                seconds: s,
                change: None,
            });
        }
    }
    if want("d") {
        for &t in &o.targets {
            runs.push(RunSpec {
                workload: "d",
                name: format!("d-{t}"),
                containers: vec![one(format!("{t}, 8 processes"), Some(t), Kind::Open, 8)],
                seconds: s,
                change: None,
            });
        }
    }
    if want("e") {
        // The last pair: a capped container next to a tenant with no SM limit (the case the
        // `default` policy enforces in).
        let pairs: &[(u8, Option<u8>)] = if o.quick { &[(30, Some(70))] } else { &[(30, Some(70)), (10, Some(90)), (30, None)] };
        let kinds: &[Kind] = if o.quick { &[Kind::Open] } else { &[Kind::Open, Kind::Sync] };
        for &(x, y) in pairs {
            let ys = y.map_or("none".to_string(), |y| y.to_string());
            for &kind in kinds {
                let kn = if kind == Kind::Open { "open" } else { "big+sync" };
                let c = |label: &str, l: Option<u8>| Container {
                    label: format!("{x}/{ys} {label}: {} ({kn})", l.map_or("no limit".to_string(), |l| l.to_string())),
                    limit: l,
                    policy: if o.split_policy == "force" { "force" } else { "default" },
                    kind,
                    procs: 1,
                    // A capped container joining a device the other tenant already keeps busy.
                    delay_s: if y.is_none() && label == "A" { 0.3 } else { 0.0 },
                };
                runs.push(RunSpec {
                    workload: "e",
                    name: format!("e-{x}-{ys}-{}", if kind == Kind::Open { "open" } else { "sync" }),
                    containers: vec![c("A", Some(x)), c("B", y)],
                    seconds: s,
                    change: None,
                });
            }
        }
    }
    if want("g") {
        // The cases of a sampled NVML (policy force where alone, default beside a neighbour).
        let c = |label: &str, limit: Option<u8>, procs: usize, policy: &'static str| Container {
            label: label.to_string(),
            limit,
            policy,
            kind: Kind::Open,
            procs,
            delay_s: 0.0,
        };
        let cases: Vec<(&str, Vec<Container>)> = vec![
            ("g-alone", vec![c("30 alone", Some(30), 1, "force")]),
            (
                "g-uncapped",
                vec![c("30 beside uncapped: 30", Some(30), 1, "default"), c("30 beside uncapped: no limit", None, 1, "default")],
            ),
            ("g-three", vec![c("30, 3 processes", Some(30), 3, "force")]),
            ("g-30-60", vec![c("30 + 60: 30", Some(30), 1, "default"), c("30 + 60: 60", Some(60), 1, "default")]),
        ];
        for (name, containers) in cases {
            runs.push(RunSpec { workload: "g", name: name.into(), containers, seconds: s, change: None });
        }
    }
    if want("f") {
        let at = if o.quick { 1.0 } else { 1.5 };
        for &t in &o.targets {
            let from = if t <= 50 { t + 40 } else { t - 40 };
            runs.push(RunSpec {
                workload: "f",
                name: format!("f-{from}-{t}"),
                containers: vec![one(format!("{from}"), Some(from), Kind::Open, 1)],
                seconds: at + s,
                change: Some((at, t)),
            });
        }
    }
    runs
}

/// The launch hook's added cost: `launch_cost` without the shim, with it and no SM limit, and
/// with SM limits that always have tokens (`noop` every 40 µs is 12.5 % of the device). A limit
/// of 100 % is no limit (the shim takes 1..=99), so the limited variants use 90 and 50 %. The
/// variants alternate within each repeat, so a change in the machine's load hits them alike.
fn launch_cost(env: &Env) -> (Vec<Value>, String) {
    let (count, repeats) = if env.opts.quick { ("5000", 1) } else { ("20000", 5) };
    let variants: [(&str, Option<u8>); 4] = [
        ("no shim", None),
        ("shim, no SM limit", None),
        ("shim, SM limit 90 %, force", Some(90)),
        ("shim, SM limit 50 %, force", Some(50)),
    ];
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); variants.len()];
    for r in 0..repeats {
        for (i, (name, limit)) in variants.iter().enumerate() {
            eprintln!("sm-harness: launch cost, {name} ({}/{repeats}) ...", r + 1);
            let region = env.opts.out.join("runs").join(format!("cost-{i}-{r}.region"));
            let _ = std::fs::create_dir_all(env.opts.out.join("runs"));
            let _ = std::fs::remove_file(&region);
            let ct = Container { label: String::new(), limit: *limit, policy: "force", kind: Kind::Open, procs: 1, delay_s: 0.0 };
            let mut cmd = env.command(&env.launch_cost, if i == 0 { None } else { Some((&ct, &region)) });
            let out = cmd.args(["--count", count]).output().expect("run launch_cost");
            let text = String::from_utf8_lossy(&out.stdout);
            let get = |k: &str| field(&text, k).and_then(|v| v.parse::<f64>().ok());
            match (get("p50_ns"), get("p99_ns"), get("mean_ns")) {
                (Some(a), Some(b), Some(c)) if out.status.success() => runs[i].push((a, b, c)),
                _ => eprintln!("sm-harness: launch_cost ({name}) failed: {text}{}", String::from_utf8_lossy(&out.stderr)),
            }
        }
    }
    let med = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let results: Vec<(f64, f64, f64)> = runs
        .into_iter()
        .map(|r| (med(r.iter().map(|x| x.0).collect()), med(r.iter().map(|x| x.1).collect()), med(r.iter().map(|x| x.2).collect())))
        .collect();
    let base = results[0];
    let mut md = String::from("| launch through | p50 ns | p99 ns | mean ns | added p50 ns | added p99 ns |\n|---|---|---|---|---|---|\n");
    let mut js = Vec::new();
    for ((name, limit), (p50, p99, mean)) in variants.iter().zip(&results) {
        md += &format!("| {name} | {p50:.0} | {p99:.0} | {mean:.0} | {:+.0} | {:+.0} |\n", p50 - base.0, p99 - base.1);
        js.push(json!({"variant": name, "sm_limit_pct": limit, "p50_ns": p50, "p99_ns": p99, "mean_ns": mean,
            "added_p50_ns": p50 - base.0, "added_p99_ns": p99 - base.1}));
    }
    (js, md)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |t| format!("{t:.0}"))
}

fn machine_line(env: &Env) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_default();
    let device = match env.opts.driver {
        Driver::Sim => format!("simgpu (1 device, {} SMs)", env.sms),
        Driver::System => format!("system libcuda ({} SMs)", env.sms),
    };
    format!("{device}; host {cpus} CPUs ({model})")
}

/// The host's 1-minute load average (other work on the machine disturbs the launch loops).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok())).unwrap_or(f64::NAN)
}

/// Which of the design targets the rows meet.
fn verdicts(rows: &[Row], cost: &[Value], release: bool) -> Vec<String> {
    let capped: Vec<&Row> = rows.iter().filter(|r| r.target.is_some() && r.stats.windows > 0 && r.workload != "f").collect();
    let worst = |f: &dyn Fn(&Row) -> f64| capped.iter().map(|r| (f(r), *r)).max_by(|a, b| a.0.total_cmp(&b.0));
    let mut v = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| v.push(format!("- {} {name}: {detail}", if ok { "MET" } else { "MISSED" }));
    if let Some((e, r)) = worst(&|r| r.stats.mean_abs_err) {
        check("mean |error| ≤ 3 points at every target and workload", e <= 3.0, format!("worst {e:.1} ({} {})", r.workload, r.case));
    }
    if let Some((e, r)) = worst(&|r| r.stats.p95_abs_err) {
        check("P95 |error| ≤ 8 points", e <= 8.0, format!("worst {e:.1} ({} {})", r.workload, r.case));
    }
    if let Some(r) = capped.iter().min_by(|a, b| a.stats.throughput_pct.total_cmp(&b.stats.throughput_pct)) {
        check(
            "≥ 95 % of ideal throughput",
            r.stats.throughput_pct >= 95.0,
            format!("lowest {:.1} % ({} {})", r.stats.throughput_pct, r.workload, r.case),
        );
    }
    let ten: Vec<&&Row> = capped.iter().filter(|r| r.target == Some(10.0) && (r.workload == "c" || r.workload == "d")).collect();
    if !ten.is_empty() {
        let m = ten.iter().map(|r| r.stats.achieved).fold(0.0, f64::max);
        check("a 10 % cap holds ≤ 12 % for graphs and 8 processes", m <= 12.0, format!("highest {m:.1} %"));
    }
    for (pair, tol) in [("30/70", 5.0), ("10/90", 10.0)] {
        let errs: Vec<f64> = rows
            .iter()
            .filter(|r| r.workload == "e" && r.case.starts_with(pair))
            .map(|r| r.json["split_ratio_err_pct"].as_f64().unwrap_or(f64::INFINITY))
            .collect();
        if let Some(m) = errs.iter().copied().map(f64::abs).max_by(f64::total_cmp) {
            check(&format!("split {pair} within ±{tol} % of ideal"), m <= tol, format!("worst {m:.1} %"));
        }
    }
    let settles: Vec<(Option<u64>, &Row)> =
        rows.iter().filter(|r| r.workload == "f").map(|r| (r.json["settle_3pts_ms"].as_u64(), r)).collect();
    if !settles.is_empty() {
        let never = settles.iter().filter(|(s, _)| s.is_none()).count();
        let m = settles.iter().filter_map(|(s, _)| *s).max().unwrap_or(0);
        check(
            "settle ≤ 300 ms after a change (±3 points)",
            never == 0 && m <= 300,
            if never > 0 {
                format!("{never} of {} never settled; slowest that did: {m} ms", settles.len())
            } else {
                format!("slowest {m} ms")
            },
        );
    }
    let limited: Vec<(f64, String)> = cost
        .iter()
        .filter(|c| c["sm_limit_pct"].is_u64())
        .map(|c| (c["added_p50_ns"].as_f64().unwrap_or(f64::NAN), c["variant"].as_str().unwrap_or("").to_string()))
        .collect();
    if !release && !limited.is_empty() {
        v.push("- (launch cost: not judged, the shim is a debug build)".into());
    } else if let Some((a, name)) = limited.iter().max_by(|x, y| x.0.total_cmp(&y.0)) {
        check("added launch cost ≤ 50 ns p50, limiter on, tokens available", *a <= 50.0, format!("worst {a:.0} ns ({name})"));
    }
    v
}

fn main() {
    let exe = std::env::current_exe().expect("current_exe");
    let exe_dir = exe.parent().expect("the harness lives in a directory").to_path_buf();
    let opts = parse_opts(&exe_dir);
    let started = std::time::Instant::now();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let profile = exe_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let env = Env::setup(opts, &exe_dir);
    let load_before = load_average();

    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for spec in plan(&env.opts) {
        let (r, j) = env.measure(&spec);
        rows.extend(r);
        runs.push(j);
    }
    let (cost, cost_md) = if env.opts.only.iter().any(|w| w == "cost") { launch_cost(&env) } else { (Vec::new(), String::new()) };

    let verdicts = verdicts(&rows, &cost, profile == "release");
    let measure = match env.opts.measure {
        Measure::Timeline => "simgpu device timeline (ground truth)",
        Measure::Nvml => "NVML per-process utilisation",
    };
    let period = match (env.opts.driver, &env.opts.nvml_period) {
        (Driver::System, _) => "the driver's own".to_string(),
        (Driver::Sim, None) => "1/6 s (simgpu's default)".to_string(),
        (Driver::Sim, Some(p)) if p.trim().eq_ignore_ascii_case("ideal") => {
            "ideal (exact at any instant: not a driver's behaviour)".to_string()
        }
        (Driver::Sim, Some(p)) => p.clone(),
    };
    let mut md = format!(
        "Command: `{command}` ({profile} build of the shim: {}). Machine: {}. NVML sample period: {period}. Measured from: {measure}. Runs of {:.1} s, \
         first {:.1} s after the device turns busy left out; shares per 100 ms window; points = percentage points of the device. \
         Wall time of the harness: {:.0} s; host load average {load_before:.1} at the start, {:.1} at the end.\n\n",
        env.opts.shim.display(),
        machine_line(&env),
        env.opts.seconds,
        env.opts.warmup,
        started.elapsed().as_secs_f64(),
        load_average()
    );
    md += "| workload | case | target % | achieved % | mean \\|err\\| | P95 \\|err\\| | overshoot | under | throughput % of ideal | notes |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|\n";
    let names = [
        ("a", "a: open-loop spin_100us"),
        ("b", "b: 10 ms kernel + sync"),
        ("c", "c: graph replay (10 × 100 µs)"),
        ("d", "d: 8 processes, one container"),
        ("e", "e: two containers"),
        ("f", "f: target changed"),
        ("g", "g: NVML sampling cases"),
    ];
    for r in &rows {
        let w = names.iter().find(|(k, _)| *k == r.workload).map_or(r.workload, |(_, n)| n);
        let s = &r.stats;
        let (err, tp) = match r.target {
            Some(_) => (
                format!("{:.1} | {:.1} | {:.1} | {:.1}", s.mean_abs_err, s.p95_abs_err, s.overshoot, s.under),
                format!("{:.1}", s.throughput_pct),
            ),
            None => ("— | — | — | —".into(), "—".into()),
        };
        md += &format!("| {w} | {} | {} | {:.1} | {err} | {tp} | {} |\n", r.case, fmt_opt(r.target), s.achieved, r.notes);
    }
    if !cost_md.is_empty() {
        md += "\nLaunch hook cost (`launch_cost`: `noop` kernels, one every 40 µs, each `cuLaunchKernel` timed; median of runs):\n\n";
        md += &cost_md;
    }
    md += "\nDesign targets:\n\n";
    md += &verdicts.join("\n");
    md += "\n";

    let report = json!({
        "command": command, "profile": profile, "shim": env.opts.shim.display().to_string(), "machine": machine_line(&env),
        "measure": measure, "nvml_period": period, "seconds": env.opts.seconds, "warmup_s": env.opts.warmup, "window_ms": WINDOW_NS / MS,
        "rows": rows.iter().map(|r| {
            let mut j = json!({"workload": r.workload, "case": r.case, "target_pct": r.target, "notes": r.notes});
            if let (Some(o), Value::Object(extra)) = (j.as_object_mut(), &r.json) {
                o.extend(extra.clone());
            }
            j["stats"] = stats_json(&r.stats);
            j
        }).collect::<Vec<_>>(),
        "launch_cost": cost, "verdicts": verdicts, "runs": runs, "wall_s": started.elapsed().as_secs_f64(),
        "load_average": [load_before, load_average()],
    });
    let json_path = env.opts.out.join("report.json");
    let md_path = env.opts.out.join("report.md");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report).expect("json")).expect("write report.json");
    std::fs::write(&md_path, &md).expect("write report.md");
    println!("{md}");
    eprintln!("sm-harness: wrote {} and {}", json_path.display(), md_path.display());
    let failed = rows.iter().any(|r| r.json["failures"].as_array().is_some_and(|a| !a.is_empty()));
    std::process::exit(if failed { 1 } else { 0 });
}
