//! Two processes on one simulated machine share its memory and its timeline, as processes
//! sharing one GPU do.
use std::process::Stdio;
use std::time::Duration;

use vgpu_tests::{Sim, await_allocations, c_programs, num, records, run_ok};

/// Starts a process holding `blocks` × 64 MiB until its stdin closes; returns it once the
/// memory is held. Its stdout keeps being drained so it never dies of SIGPIPE.
fn holder(sim: &Sim, blocks: u32) -> std::process::Child {
    let mut child = sim
        .command(c_programs().join("alloc_families"))
        .args(["--family", "cuMemAlloc_v2", "--size", "64m", "--hold", &blocks.to_string(), "--no-copy", "--wait-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let stdout = child.stdout.take().expect("stdout");
    assert!(await_allocations(stdout, blocks, Duration::from_secs(30)), "holder did not allocate its blocks");
    child
}

#[test]
fn processes_see_each_others_memory() {
    let sim = Sim::new().with("SIMGPU_MEMORY", "2g");
    let mut a = holder(&sim, 8); // 512 MiB + a 64 MiB context
    let out = run_ok(sim.command(c_programs().join("alloc_families")).args(["--family", "cuMemAlloc_v2", "--size", "64m", "--no-copy"]));
    let first = &records(&out, "family")[0];
    // B sees A's 576 MiB, its own context (64 MiB) and its own 64 MiB block.
    assert_eq!(num(first, "free"), ((2048 - 576 - 64 - 64) as f64) * 1048576.0, "{out}");
    drop(a.stdin.take());
    a.wait().expect("holder exits");
    // A is gone (its slot is reaped): the whole device is free again for a new process.
    let out = run_ok(sim.command(c_programs().join("alloc_families")).args(["--family", "cuMemAlloc_v2", "--size", "64m", "--no-copy"]));
    let first = &records(&out, "family")[0];
    assert_eq!(num(first, "free"), ((2048 - 64 - 64) as f64) * 1048576.0, "{out}");
}

#[test]
fn a_killed_process_returns_its_memory() {
    let sim = Sim::new().with("SIMGPU_MEMORY", "1g");
    let mut a = holder(&sim, 12);
    a.kill().expect("SIGKILL");
    a.wait().expect("reap");
    let out = run_ok(sim.command(c_programs().join("alloc_families")).args(["--family", "cuMemAlloc_v2", "--size", "512m", "--no-copy"]));
    assert_eq!(records(&out, "family")[0]["rc"], "0", "a dead process's 768 MiB must come back:\n{out}");
}

/// B's one 10 µs kernel, synchronised, beside A's 1.5 s of queued work, on a machine whose
/// `SIMGPU_TIMESLICE` is `timeslice`: B's wall time in ms.
fn beside_a_long_queue(timeslice: &str) -> f64 {
    let sim = Sim::new().with("SIMGPU_TIMESLICE", timeslice);
    let mut a = sim
        .command(c_programs().join("launch"))
        .args(["--mode", "open", "--kernel", "spin_1000us", "--count", "1500"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn A");
    std::thread::sleep(Duration::from_millis(300));
    let out = run_ok(sim.command(c_programs().join("launch")).args(["--mode", "sync", "--kernel", "spin_10us", "--count", "1"]));
    let _ = a.kill();
    let _ = a.wait();
    num(&records(&out, "mode")[0], "wall_ms")
}

#[test]
fn on_a_time_sliced_device_a_short_kernel_waits_a_turn_not_the_queue() {
    // Time-slicing: A's queue is A's; B's kernel runs at B's turn, after at most A's quantum
    // (2 ms) and a switch, not after A's 1.5 s.
    let wall = beside_a_long_queue("2ms");
    assert!(wall < 300.0, "B's kernel waits a turn, not A's whole queue: {wall} ms");
}

#[test]
fn a_kernel_of_one_process_delays_another() {
    // One FIFO for every process (SIMGPU_TIMESLICE=off).
    assert!(beside_a_long_queue("off") > 300.0, "B's kernel must queue behind A's 1.5 s of work");
}

#[test]
fn nvml_sees_every_process_memory_and_the_shared_timeline() {
    let smoke = vgpu_tests::build_c(&vgpu_tests::repo_root().join("simgpu/nvml/tests/smoke.c"), "nvml_smoke");
    let sim = Sim::new().with("SIMGPU_MEMORY", "4g");
    let mut a = holder(&sim, 8); // 512 MiB + 64 MiB of context
    let mut b = sim
        .command(c_programs().join("launch"))
        .args(["--mode", "open", "--kernel", "spin_1000us", "--count", "3000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn B");
    std::thread::sleep(Duration::from_millis(700));
    let out = run_ok(&mut sim.command(&smoke));
    assert!(out.trim_end().ends_with("ok"), "{out}");
    let used: f64 = out
        .lines()
        .find(|l| l.starts_with("dev0 memory"))
        .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("used=")))
        .and_then(|v| v.parse().ok())
        .expect("memory line");
    // A: 512 MiB + a context; B: a context and its counter buffer.
    assert!(used >= (576 + 64) as f64 * 1048576.0, "{out}");
    let pid_a = a.id().to_string();
    let pid_b = b.id().to_string();
    assert!(out.contains(&format!("proc pid={pid_a} used={}", 576u64 << 20)), "A's memory per process:\n{out}");
    assert!(out.contains(&format!("proc pid={pid_b} ")), "B has a context:\n{out}");
    let util: f64 = out
        .lines()
        .find(|l| l.starts_with("dev0 util"))
        .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("gpu=")))
        .and_then(|v| v.parse().ok())
        .expect("util line");
    assert!(util >= 90.0, "B keeps the device busy:\n{out}");
    assert!(out.contains(&format!("sample pid={pid_b} sm=")), "B's utilisation sample:\n{out}");
    drop(a.stdin.take());
    a.wait().expect("A");
    b.kill().ok();
    b.wait().ok();
}
