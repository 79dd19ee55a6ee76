//! The `vgpu` command as a user runs it: `vgpu demo`, `vgpu run`, `vgpu smi`.
use vgpu_tests::{Sim, c_programs, cargo_program, records, run, run_ok, text};

use std::time::Duration;

#[test]
fn the_demo_stops_each_tenant_at_its_own_quota() {
    let out = run_ok(std::process::Command::new(cargo_program("vgpu")).args(["demo", "--sim"]).env_remove("LD_PRELOAD"));
    assert!(out.contains("tenant-a: cuMemGetInfo says total 2.00 GiB"), "{out}");
    assert!(out.contains("tenant-b: cuMemGetInfo says total 5.00 GiB"), "{out}");
    assert!(out.contains("tenant-a: REFUSED allocation #4 of 512 MiB: CUDA_ERROR_OUT_OF_MEMORY"), "{out}");
    assert!(out.contains("tenant-b: REFUSED allocation #10 of 512 MiB: CUDA_ERROR_OUT_OF_MEMORY"), "{out}");
    assert!(out.contains("memory: 6.12 GiB used of 8.00 GiB"), "the device sees both tenants:\n{out}");
}

#[test]
fn vgpu_run_applies_the_quota_to_a_program() {
    let sim = Sim::new();
    let vgpu = cargo_program("vgpu");
    let out = run(
        sim.command(&vgpu).args(["run", "--sim", "--memory", "1g", "--"]).arg(c_programs().join("alloc_families_nolink")).args([
            "--path",
            "gpa",
            "--family",
            "cuMemAlloc_v2",
            "--size",
            "256m",
            "--hold",
            "4",
            "--no-copy",
        ]),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("resolver=libvgpu.so!cuMemAlloc_v2"), "{stdout}");
    let allocs: Vec<_> = records(&stdout, "family").into_iter().filter(|r| r["op"] == "alloc").collect();
    // 1 GiB quota, a 64 MiB context: three blocks of 256 MiB fit, the fourth does not.
    let rcs: Vec<&str> = allocs.iter().map(|r| r["rc"].as_str()).collect();
    assert_eq!(rcs, ["0", "0", "0", "2"], "{stdout}");
    assert!(allocs.iter().all(|r| r["total"] == "1073741824"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "the program's own exit code comes back");
}

#[test]
fn vgpu_run_refuses_bad_limits_before_running_anything() {
    let out = run(std::process::Command::new(cargo_program("vgpu")).args(["run", "--memory", "4x", "--", "true"]), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("CUDA_DEVICE_MEMORY_LIMIT=\"4x\"") && err.lines().count() == 1, "{err}");
}

#[test]
fn vgpu_smi_reads_the_simulated_machine() {
    let sim = Sim::new().with("SIMGPU_DEVICES", "2").with("SIMGPU_MEMORY", "4g");
    let out = run_ok(sim.command(cargo_program("vgpu")).args(["smi", "--sim"]));
    assert!(out.contains("GPU 1: NVIDIA H100 80GB HBM3 (simgpu)") && out.contains("0 MiB used of 4.00 GiB"), "{out}");
}
