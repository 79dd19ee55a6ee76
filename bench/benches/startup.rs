//! What `libvgpu.so` adds to `cuInit`, the call where it reads its configuration and opens
//! (or creates) the container's region: one process alone, and 256 processes starting at once.
//!
//! Each process is the `cuinit` helper of this crate: it `dlopen`s simgpu's `libcuda.so.1`,
//! parks on a futex in a shared control file, and once released (all together, one wake) times
//! its own `cuInit(0)`. Three configurations, interleaved round by round:
//!
//! * `direct`: no shim;
//! * `shim, existing region`: `LD_PRELOAD=libvgpu.so`, a memory limit set (so the shim opens
//!   the region), the region created beforehand by an earlier process;
//! * `shim, new region`: the same with a region file that does not exist yet: one process of
//!   the storm creates it while the others wait for it to be published (a container's first
//!   start).
//!
//! A plain timing program (`harness = false`, not criterion): percentiles over every process
//! of every storm. `cargo bench -p vgpu-bench --bench startup` runs 256-process storms and
//! 100 single starts per configuration; without `--bench` (`cargo test --benches`, the CI
//! smoke) it runs 8-process storms and 3 single starts, to prove the bench still works.
//!
//! Needs the shim and simgpu built in the bench's profile: `cargo build --release --workspace`.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

use vgpu_bench::{Ctl, Helpers, artifacts_dir, now_ns, percentile, rec, sim_lib_dir, word};

/// The record word where `cuinit` puts the call's CPU time (ns).
const CPU_NS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Direct,
    ShimExisting,
    ShimNew,
}

impl Config {
    const ALL: [Config; 3] = [Config::Direct, Config::ShimExisting, Config::ShimNew];

    fn name(self) -> &'static str {
        match self {
            Config::Direct => "direct (no shim)",
            Config::ShimExisting => "shim, existing region",
            Config::ShimNew => "shim, new region",
        }
    }
}

/// Where everything lives.
struct Setup {
    cuinit: PathBuf,
    dir: PathBuf,
    lib: PathBuf,
    shim: PathBuf,
    storms: u32,
}

/// One storm's figures: each process's `cuInit`, elapsed and CPU (ns), and release → last
/// return (ns).
struct Storm {
    cu_init: Vec<u64>,
    cpu: Vec<u64>,
    all_done: u64,
}

/// Starts `n` helpers in `config`, waits until all are parked, releases them together and
/// collects their timings.
fn storm(s: &mut Setup, config: Config, n: usize) -> Storm {
    s.storms += 1;
    let ctl_path = s.dir.join("storm.ctl");
    let ctl = Ctl::create(&ctl_path, n);
    let region = match config {
        Config::ShimNew => s.dir.join(format!("region-new-{}", s.storms)),
        _ => s.dir.join("region-existing"),
    };
    let mut helpers = Helpers(Vec::with_capacity(n));
    for id in 0..n {
        let mut cmd = Command::new(&s.cuinit);
        cmd.args([ctl_path.display().to_string(), id.to_string()]).stdin(Stdio::null()).stdout(Stdio::null());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CUDA_")
                || k.starts_with("SIMGPU_")
                || k.starts_with("VGPU_")
                || k == "LD_PRELOAD"
                || k == "GPU_CORE_UTILIZATION_POLICY"
                || k == "LIBCUDA_LOG_LEVEL"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env("LD_LIBRARY_PATH", &s.lib)
            .env("SIMGPU_STATE", s.dir.join("machine"))
            .env("CUDA_DEVICE_MEMORY_LIMIT", "8g")
            .env("CUDA_DEVICE_MEMORY_SHARED_CACHE", &region);
        if config != Config::Direct {
            cmd.env("LD_PRELOAD", &s.shim);
        }
        helpers.0.push(cmd.spawn().expect("spawn cuinit"));
    }
    ctl.await_count(word::ARRIVED, n as u32, Duration::from_secs(300), || {});
    let released = now_ns();
    ctl.release(1);
    ctl.await_count(word::DONE, n as u32, Duration::from_secs(300), || {});
    let mut cu_init = Vec::with_capacity(n);
    let mut cpu = Vec::with_capacity(n);
    let mut last = released;
    for id in 0..n {
        let r = ctl.record(id);
        assert_eq!(r[rec::OK].load(Acquire), 1, "{}: process {id}'s cuInit failed (its stderr is above)", config.name());
        let (t0, t1) = (r[rec::T0].load(Relaxed), r[rec::T1].load(Relaxed));
        cu_init.push(t1 - t0);
        cpu.push(r[CPU_NS].load(Relaxed));
        last = last.max(t1);
    }
    ctl.release(2);
    for mut c in std::mem::take(&mut helpers.0) {
        let status = c.wait().expect("wait cuinit");
        assert!(status.success(), "cuinit exited with {status}");
    }
    if config == Config::ShimNew {
        let _ = std::fs::remove_file(&region);
    }
    Storm { cu_init, cpu, all_done: last - released }
}

/// One configuration at one storm size: every process's figures, sorted.
struct Row {
    n: usize,
    storms: usize,
    config: Config,
    cu: Vec<u64>,
    cpu: Vec<u64>,
    done: Vec<u64>,
}

impl Default for Row {
    fn default() -> Row {
        Row { n: 0, storms: 0, config: Config::Direct, cu: Vec::new(), cpu: Vec::new(), done: Vec::new() }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or("?".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    // (processes per storm, storms per configuration)
    let plan: [(usize, usize); 2] = if full { [(1, 100), (256, 5)] } else { [(1, 3), (8, 1)] };

    let art = artifacts_dir();
    let shim = art.join("libvgpu.so");
    assert!(shim.is_file(), "{} is missing: cargo build --release --workspace", shim.display());
    let dir = std::env::temp_dir().join(format!("vgpu-bench-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let lib = sim_lib_dir(&art, &dir);
    // The helper beside this bench's artifacts (a copied target directory), else where cargo built it.
    let cuinit = Some(art.join("cuinit")).filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cuinit")));
    let mut s = Setup { cuinit, dir, lib, shim, storms: 0 };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("cuInit start-up bench: {cores} cores, load average {} at start", load_average());

    // Warm up (page cache, simgpu's machine file) and create the existing region.
    storm(&mut s, Config::Direct, 1);
    storm(&mut s, Config::ShimExisting, 1);

    let mut rows = Vec::new();
    for (n, storms) in plan {
        let mut per: Vec<Row> = Config::ALL.into_iter().map(|config| Row { n, storms, config, ..Row::default() }).collect();
        for _ in 0..storms {
            for (i, config) in Config::ALL.into_iter().enumerate() {
                let st = storm(&mut s, config, n);
                per[i].cu.extend(st.cu_init);
                per[i].cpu.extend(st.cpu);
                per[i].done.push(st.all_done);
            }
        }
        for mut r in per {
            r.cu.sort_unstable();
            r.cpu.sort_unstable();
            r.done.sort_unstable();
            rows.push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&s.dir);

    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "\ncuInit, µs: elapsed as each process timed its own call, and its CPU time; 'all done': release to the last return, median over storms:\n"
    );
    println!("| processes at once | configuration | storms | samples | p50 | p99 | max | CPU p50 | CPU p99 | all done |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.n,
            r.config.name(),
            r.storms,
            r.cu.len(),
            us(percentile(&r.cu, 50.0)),
            us(percentile(&r.cu, 99.0)),
            us(*r.cu.last().unwrap_or(&0)),
            us(percentile(&r.cpu, 50.0)),
            us(percentile(&r.cpu, 99.0)),
            us(percentile(&r.done, 50.0))
        );
    }
    println!("\nadded by libvgpu.so (shim − direct), µs; target: ≤ 5000 µs p99 (elapsed) with 256 processes at once:\n");
    println!("| processes at once | configuration | p50 added | p99 added | CPU p50 added | CPU p99 added | target |");
    println!("|---:|---|---:|---:|---:|---:|---|");
    for r in rows.iter().filter(|r| r.config != Config::Direct) {
        let d = rows.iter().find(|d| d.n == r.n && d.config == Config::Direct).expect("a direct row");
        let added = |shim: &[u64], direct: &[u64], p: f64| us(percentile(shim, p)) - us(percentile(direct, p));
        let p99 = added(&r.cu, &d.cu, 99.0);
        let verdict = match (r.n >= 256, p99 <= 5000.0) {
            (false, _) => "",
            (true, true) => "met",
            (true, false) => "MISSED",
        };
        println!(
            "| {} | {} | {:.0} | {p99:.0} | {:.0} | {:.0} | {verdict} |",
            r.n,
            r.config.name(),
            added(&r.cu, &d.cu, 50.0),
            added(&r.cpu, &d.cpu, 50.0),
            added(&r.cpu, &d.cpu, 99.0)
        );
    }
    if !full {
        println!("\n(smoke run: 8-process storms; `cargo bench -p vgpu-bench --bench startup` runs 256)");
    }
    println!("\nload average {} at the end", load_average());
}
