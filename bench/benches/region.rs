//! Benchmarks of the accounting region, with real processes for the contention.
//!
//! * `reserve_commit_release/{wall,cpu}/N`: one reserve + commit + release of 4 KiB on device 0
//!   while N other processes (`hammer`) do the same on the same device of the same region. `wall` is criterion's usual elapsed time; `cpu` is this thread's CPU time (it
//!   leaves out time spent preempted, which on a machine with fewer cores than processes
//!   would otherwise dominate). N = 0 is the uncontended case.
//! * `open_register/{existing,new}`: `Region::open` of an existing region (validation, reap,
//!   slot claim) and of a new one (creation and initialisation too).
//! * After criterion: per-operation latency percentiles at each N (each operation timed on its
//!   own), the hammers' own throughput, and a start-up storm of 256 processes opening a region
//!   at once, new and existing. A summary table is printed at the end (bench/README.md).
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use vgpu_bench::{Ctl, Helpers, now_ns, percentile, quotas, rec, thread_cpu_ns, word};
use vgpu_limiter::region::Region;

const HAMMERS: [usize; 5] = [0, 1, 8, 32, 64];
const STORM: usize = 256;

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vgpu-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn helper(mode: &str, region: &Path, ctl: &Path, id: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hammer"))
        .args([mode, &region.display().to_string(), &ctl.display().to_string(), &id.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn hammer")
}

/// The operation measured: what an allocation and its free cost the limiter.
#[inline]
fn op(r: &Region, key: u64) {
    let res = r.reserve(0, black_box(4096)).expect("never refused");
    res.commit(key);
    black_box(r.release(key));
}

struct Row {
    hammers: usize,
    wall_ns: f64,
    cpu_ns: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    hammer_mops: f64,
}

fn contended(c: &mut Criterion, dir: &Path, rows: &mut Vec<Row>) {
    let region_path = dir.join("contended");
    let ctl_path = dir.join("contended.ctl");
    let r = Region::open(&region_path, &quotas(), 0o600).expect("open region");
    let key = 0x7e00_0000_0000u64;
    let mut group = c.benchmark_group("reserve_commit_release");
    for n in HAMMERS {
        let ctl = Ctl::create(&ctl_path, n.max(1));
        let hammers = Helpers((0..n).map(|i| helper("hammer", &region_path, &ctl_path, i)).collect());
        let deadline = Instant::now() + Duration::from_secs(60);
        while (0..n).any(|i| ctl.record(i)[rec::OPS].load(Acquire) == 0) {
            assert!(Instant::now() < deadline, "hammers did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        if n == 0 {
            // With other processes on few cores, elapsed time mostly measures the scheduler;
            // the CPU-time variant below is the per-operation cost at every N.
            group.bench_function(BenchmarkId::new("wall", n), |b| b.iter(|| op(&r, key)));
        }
        // Criterion's time budget is in the measured unit, CPU time here: with many hammers
        // on few cores this thread gets a small share, so keep the budget small.
        group.measurement_time(Duration::from_millis(if n >= 8 { 300 } else { 1000 }));
        group.warm_up_time(Duration::from_millis(if n >= 8 { 100 } else { 300 }));
        eprintln!("region bench: {n} hammers running");
        group.bench_function(BenchmarkId::new("cpu", n), |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for _ in 0..iters {
                    op(&r, key);
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        });

        // Our own figures for the summary: means over 200 k operations, then 100 k operations
        // timed one by one (the clock read, ~20 ns, is included).
        let hammer_ops = |ctl: &Ctl| (0..n).map(|i| ctl.record(i)[rec::OPS].load(Relaxed)).sum::<u64>();
        let (h0, w0, c0) = (hammer_ops(&ctl), now_ns(), thread_cpu_ns());
        const MEAN_OPS: u64 = 200_000;
        for _ in 0..MEAN_OPS {
            op(&r, key);
        }
        let (h1, w1, c1) = (hammer_ops(&ctl), now_ns(), thread_cpu_ns());
        let mut lat: Vec<u64> = (0..100_000)
            .map(|_| {
                let t = now_ns();
                op(&r, key);
                now_ns() - t
            })
            .collect();
        lat.sort_unstable();
        rows.push(Row {
            hammers: n,
            wall_ns: (w1 - w0) as f64 / MEAN_OPS as f64,
            cpu_ns: (c1 - c0) as f64 / MEAN_OPS as f64,
            p50: percentile(&lat, 50.0),
            p99: percentile(&lat, 99.0),
            p999: percentile(&lat, 99.9),
            hammer_mops: (h1 - h0) as f64 / ((w1 - w0) as f64 / 1e9) / 1e6,
        });
        drop(hammers);
        r.reap();
    }
    group.finish();
}

fn open_register(c: &mut Criterion, dir: &Path) {
    let existing = dir.join("existing");
    let holder = Region::open(&existing, &quotas(), 0o600).expect("open region");
    let mut group = c.benchmark_group("open_register");
    group.bench_function("existing", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let r = Region::open(&existing, &quotas(), 0o600).expect("open");
                total += t.elapsed();
                drop(r);
            }
            total
        })
    });
    let mut n = 0u64;
    group.bench_function("new", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let p = dir.join(format!("new-{n}"));
                let t = Instant::now();
                let r = Region::open(&p, &quotas(), 0o600).expect("create");
                total += t.elapsed();
                drop(r);
                let _ = std::fs::remove_file(&p);
            }
            total
        })
    });
    group.finish();
    drop(holder);
}

struct StormRow {
    what: &'static str,
    p50: u64,
    p99: u64,
    max: u64,
    all_in: u64,
}

/// `STORM` processes parked on one futex, released together, each timing its own
/// `Region::open`.
fn storm(dir: &Path, what: &'static str, new: bool, run: usize) -> StormRow {
    let region = dir.join(format!("storm-{what}-{run}"));
    let ctl_path = dir.join(format!("storm-{what}-{run}.ctl"));
    let holder = (!new).then(|| Region::open(&region, &quotas(), 0o600).expect("open region"));
    let ctl = Ctl::create(&ctl_path, STORM);
    let mut helpers = Helpers((0..STORM).map(|i| helper("open", &region, &ctl_path, i)).collect());
    ctl.await_count(word::ARRIVED, STORM as u32, Duration::from_secs(120), || {});
    let released = now_ns();
    ctl.release(1);
    ctl.await_count(word::DONE, STORM as u32, Duration::from_secs(120), || {});
    let all_in = now_ns() - released;
    let failed = (0..STORM).filter(|&i| ctl.record(i)[rec::OK].load(Acquire) != 1).count();
    assert_eq!(failed, 0, "{failed} opens failed");
    let mut lat: Vec<u64> = (0..STORM).map(|i| ctl.record(i)[rec::T1].load(Acquire) - ctl.record(i)[rec::T0].load(Acquire)).collect();
    lat.sort_unstable();
    ctl.release(2);
    for c in &mut helpers.0 {
        let _ = c.wait();
    }
    helpers.0.clear();
    drop(holder);
    StormRow { what, p50: percentile(&lat, 50.0), p99: percentile(&lat, 99.0), max: *lat.last().unwrap(), all_in }
}

fn main() {
    let dir = tempdir();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    let mut rows = Vec::new();
    contended(&mut c, &dir, &mut rows);
    open_register(&mut c, &dir);
    c.final_summary();
    let storms: Vec<StormRow> =
        (0..3).flat_map(|run| [storm(&dir, "new region", true, run), storm(&dir, "existing region", false, run)]).collect();

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut clock: Vec<u64> = (0..100_000)
        .map(|_| {
            let t = now_ns();
            now_ns() - t
        })
        .collect();
    clock.sort_unstable();
    println!("\n(one clock read, included in the percentiles: p50 {} ns)", percentile(&clock, 50.0));
    println!("\nreserve + commit + release of 4 KiB on one device, N hammering processes ({cores} cores):\n");
    println!("| other processes | wall ns/op | CPU ns/op | p50 ns | p99 ns | p99.9 ns | hammers' Mops/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.0} | {:.0} | {} | {} | {} | {:.2} |", r.hammers, r.wall_ns, r.cpu_ns, r.p50, r.p99, r.p999, r.hammer_mops);
    }
    println!("\n{STORM} processes opening a region at once (open + validation + slot registration, µs):\n");
    println!("| region | p50 | p99 | max | all registered after |");
    println!("|---|---:|---:|---:|---:|");
    for s in &storms {
        let us = |ns: u64| ns as f64 / 1000.0;
        println!("| {} | {:.0} | {:.0} | {:.0} | {:.0} |", s.what, us(s.p50), us(s.p99), us(s.max), us(s.all_in));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
