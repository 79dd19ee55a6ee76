//! `CUDA_TASK_PRIORITY` end to end: containers (each its own region) on one time-sliced
//! simulated GPU, sharing the node-wide priority board, measured on simgpu's device timeline.
//!
//! Shares are compared, not times: the machines are shared and noisy, so no assertion here
//! depends on how fast anything ran.
use std::process::{Command, Stdio};
use std::time::Duration;

use vgpu_tests::*;

const MS: u64 = 1_000_000;

fn launch() -> std::path::PathBuf {
    c_programs().join("launch")
}

/// A saturating neighbour: open loop, 1 ms kernels, at most two in flight.
const SATURATE: &[&str] = &["--mode", "open", "--kernel", "spin_1000us", "--grid", "132", "--inflight", "2"];
/// The high-priority tenant: the same with eight in flight, so a late wake-up of its own
/// launch loop (a loaded 2-core machine) does not leave the device idle.
const SATURATE_DEEP: &[&str] = &["--mode", "open", "--kernel", "spin_1000us", "--grid", "132", "--inflight", "8"];

fn sliced() -> Sim {
    Sim::new().with("SIMGPU_TIMESLICE", "2ms")
}

/// A shimmed command in a container of its own (its own region) with `priority` (`None`:
/// unset, HAMi's default low) and a memory limit (so the shim enforces).
fn tenant(sim: &Sim, name: &str, priority: Option<&str>) -> Command {
    let mut c = sim.shimmed(launch());
    c.env("CUDA_DEVICE_MEMORY_SHARED_CACHE", sim.dir().join(format!("{name}.region"))).env("CUDA_DEVICE_MEMORY_LIMIT", "4g");
    if let Some(p) = priority {
        c.env("CUDA_TASK_PRIORITY", p);
    }
    c
}

/// The same tenant started as a user would: `vgpu run --sim --priority LEVEL`.
fn vgpu_run_tenant(sim: &Sim, _name: &str, priority: Option<&str>) -> Command {
    let mut c = sim.command(cargo_program("vgpu"));
    c.env("VGPU_PRIORITY_BOARD", sim.priority_board()).args(["run", "--sim", "--memory", "4g"]);
    if let Some(p) = priority {
        c.args(["--priority", if p == "0" { "high" } else { "low" }]);
    }
    c.arg("--").arg(launch());
    c
}

/// Runs `low` for 3 s and `high` (also saturating) for 1.5 s in its middle; the share of the
/// device each had while both ran, in percent.
fn shares(low_priority: Option<&str>, high_priority: Option<&str>) -> (f64, f64) {
    shares_with(tenant, low_priority, high_priority)
}

fn shares_with(tenant: fn(&Sim, &str, Option<&str>) -> Command, low_priority: Option<&str>, high_priority: Option<&str>) -> (f64, f64) {
    let sim = sliced();
    let mut low = tenant(&sim, "low", low_priority);
    low.args(SATURATE).args(["--duration", "3"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut low = Background::spawn(&mut low);
    let m = sim.timeline();
    let start = simgpu::now_ns();
    while m.busy_between(0, start, simgpu::now_ns(), None) == 0 {
        assert!(simgpu::now_ns() - start < 20_000 * MS, "the low-priority neighbour never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut high = tenant(&sim, "high", high_priority);
    high.args(SATURATE_DEEP).args(["--duration", "1.5"]);
    let t0 = simgpu::now_ns();
    let out = run(&mut high, Duration::from_secs(60));
    let t1 = simgpu::now_ns();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let (status, low_out, low_err) = low.finish(Duration::from_secs(60));
    assert!(status.success(), "{low_out}{low_err}");
    // The steady part: from 0.3 s after the high-priority tenant started to 0.2 s before it ended.
    let (from, to) = (t0 + 300 * MS, t1 - 200 * MS);
    let by = m.busy_by_process(0, from, to);
    // The larger share first (the programs do not print their PIDs; the assertions say which
    // one should have it).
    let mut shares: Vec<f64> = by.iter().map(|(_, b)| 100.0 * *b as f64 / (to - from) as f64).collect();
    shares.sort_by(|a, b| b.partial_cmp(a).unwrap());
    assert!(!shares.is_empty(), "nothing ran in the window");
    (shares[0], shares.get(1).copied().unwrap_or(0.0))
}

#[test]
fn a_high_priority_container_takes_the_device_from_a_low_priority_one() {
    // Control: neither is high priority, so time-slicing splits the device about evenly.
    let (a, b) = shares(None, None);
    println!("no priority: {a:.1} % / {b:.1} %");
    assert!(a < 75.0, "time-slicing alone shares the device: {a:.1} / {b:.1}");
    // With priority the low-priority neighbour keeps at most one launch in flight and waits
    // while the high-priority one has work: the high-priority container has nearly all of it.
    let (hi, lo) = shares(Some("1"), Some("0"));
    println!("high priority beside low: {hi:.1} % / {lo:.1} %");
    assert!(hi > 90.0 && lo < 10.0, "the high-priority container should hold the device: {hi:.1} / {lo:.1}");
}

#[test]
fn vgpu_run_priority_high_holds_a_low_priority_run_back() {
    let (hi, lo) = shares_with(vgpu_run_tenant, Some("1"), Some("0"));
    println!("vgpu run --priority high beside --priority low: {hi:.1} % / {lo:.1} %");
    assert!(hi > 90.0 && lo < 10.0, "the high-priority run should hold the device: {hi:.1} / {lo:.1}");
}

/// Starts a high-priority tenant that keeps the device busy, waits until the board shows it,
/// and returns it.
fn busy_high(sim: &Sim) -> Background {
    let mut high = tenant(sim, "high", Some("0"));
    high.args(SATURATE).args(["--duration", "30"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let bg = Background::spawn(&mut high);
    let start = std::time::Instant::now();
    loop {
        let now = simgpu::now_ns();
        let busy = vgpu_limiter::priority::board::snapshot(&sim.priority_board(), now)
            .ok()
            .flatten()
            .is_some_and(|v| v.iter().any(|s| s.busy > 0));
        if busy {
            return bg;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the high-priority tenant never showed on the board");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A low-priority tenant's short run of `count` launches: it must complete (not be held back
/// for ever).
fn low_run(sim: &Sim, count: u32) -> String {
    let mut low = tenant(sim, "low", Some("1"));
    low.args(["--mode", "sync", "--kernel", "spin_100us", "--count", &count.to_string()]);
    // Each launch waits at most 2 s (its previous launch, then high-priority work): a run that
    // is not held for ever ends within that bound, whatever the machine's load.
    let out = run(&mut low, Duration::from_secs(u64::from(count) * 2 + 30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    stdout
}

#[test]
fn a_killed_high_priority_process_stops_holding_others_back() {
    let sim = sliced();
    let mut high = busy_high(&sim);
    high.kill9();
    // Its entry ends within one hold (100 ms) of its last launch; the low-priority run then
    // has the device. (That bound is the unit tests'; here: the run completes.)
    let out = low_run(&sim, 50);
    println!("after the high-priority process was killed: {out}");
}

#[test]
fn a_stopped_high_priority_process_holds_others_back_for_one_hold_at_most() {
    let sim = sliced();
    let mut high = busy_high(&sim);
    // SIGSTOP: alive, its work done, never launching or synchronising again.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(high.pid() as i32, libc::SIGSTOP) };
    let out = low_run(&sim, 50);
    // SAFETY: as above.
    unsafe { libc::kill(high.pid() as i32, libc::SIGCONT) };
    high.kill9();
    println!("beside a stopped high-priority process: {out}");
}

#[test]
fn a_scribbling_tenant_neither_stalls_others_nor_the_node_tools() {
    let sim = sliced();
    let mut high = busy_high(&sim);
    // A tenant that can write the board writes random bytes, then values chosen to harm
    // (every entry busy a hold from now, the hint at its maximum, the waiter count huge),
    // over and over, while a low-priority tenant runs and `vgpu ps` reads the board.
    let board = sim.priority_board();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scribbler = {
        let stop = stop.clone();
        let board = board.clone();
        std::thread::spawn(move || {
            let tenant = vgpu_limiter::priority::board::Board::open(&board).expect("map the board like a tenant");
            let size = vgpu_limiter::priority::board::FILE_SIZE;
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut rounds = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let now = simgpu::now_ns();
                match rounds % 3 {
                    0 => tenant.scribble((x as usize) % size, &x.to_le_bytes()),
                    1 => {
                        for off in (64..size).step_by(16) {
                            tenant.scribble(off + 8, &(now + 99 * MS).to_le_bytes());
                        }
                    }
                    _ => {
                        for off in (64..size).step_by(1088) {
                            tenant.scribble(off + 8, &u64::MAX.to_le_bytes());
                            tenant.scribble(off + 20, &u32::MAX.to_le_bytes());
                        }
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            rounds
        })
    };
    // Beside a really busy high-priority tenant and forged claims, each launch waits at most
    // the bound (1 s): a few launches, so the test stays short.
    let out = low_run(&sim, 8);
    let mut ps = Command::new(cargo_program("vgpu"));
    ps.args(["ps", "--priority-board"]).arg(&board);
    let listed = run(&mut ps, Duration::from_secs(30));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = scribbler.join().expect("the scribbler");
    high.kill9();
    println!("beside {rounds} scribbles: {out}\nvgpu ps: {}{}", text(&listed.stdout), text(&listed.stderr));
    assert!(listed.status.code().is_some(), "vgpu ps must not die of a signal");
}

#[test]
fn a_bad_priority_is_refused_in_one_line() {
    let sim = Sim::new();
    for bad in ["2", "high", ""] {
        let mut c = tenant(&sim, "bad", Some(bad));
        c.args(["--mode", "sync", "--count", "1"]);
        let out = run(&mut c, Duration::from_secs(30));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "CUDA_TASK_PRIORITY={bad:?} was accepted");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("CUDA_TASK_PRIORITY")).collect();
        assert_eq!(lines.len(), 1, "one line names the variable: {err}");
        assert!(lines[0].contains("0 (high priority) or 1"), "{err}");
    }
}
