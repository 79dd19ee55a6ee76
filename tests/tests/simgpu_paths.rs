//! The example driver-API programs on simgpu, through every path that reaches the driver:
//! linked with `-lcuda`, `dlopen` + `dlsym`, and `cuGetProcAddress_v2` (default and
//! per-thread-stream flags), in C and in Rust.
use std::time::Duration;

use vgpu_tests::{Sim, c_programs, cargo_program, num, records, run, run_ok, text};

const MIB: f64 = 1048576.0;

/// Every family allocated, copied through and freed; `cuMemGetInfo` moves by what was taken.
fn check_alloc_output(stdout: &str, memory: f64, expect_families: usize) {
    assert!(stdout.contains("resolver=libcuda.so.1!"), "cuMemAlloc_v2 must resolve into simgpu's libcuda.so.1:\n{stdout}");
    let recs = records(stdout, "family");
    let allocs: Vec<_> = recs.iter().filter(|r| r["op"] == "alloc").collect();
    assert_eq!(allocs.len(), expect_families, "families:\n{stdout}");
    for r in &recs {
        assert_eq!(r["rc"], "0", "{r:?}");
        assert_eq!(num(r, "total"), memory, "total is the device's memory: {r:?}");
        if let Some(m) = r.get("match") {
            assert_eq!(m, "1", "data must round-trip: {r:?}");
        }
    }
    for pair in recs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a["op"] == "alloc" && b["op"] != "alloc" {
            let taken = num(a, "bytes");
            let free_after_alloc = num(a, "free");
            let free_after_free = num(recs.iter().find(|r| r["family"] == a["family"] && r["op"] == "free").expect("free line"), "free");
            let delta = free_after_free - free_after_alloc;
            assert!(delta >= taken && delta <= taken + 2.0 * MIB, "{}: free rose by {delta} after freeing {taken}", a["family"]);
        }
    }
}

#[test]
fn c_allocation_families_through_every_path() {
    let sim = Sim::new().with("SIMGPU_MEMORY", "4g");
    let bin = c_programs();
    for (prog, path, extra) in [
        ("alloc_families", "linked", None),
        ("alloc_families", "dlopen", None),
        ("alloc_families", "gpa", None),
        ("alloc_families", "gpa", Some("--ptsz")),
        ("alloc_families_nolink", "dlopen", None),
        ("alloc_families_nolink", "gpa", None),
    ] {
        let mut cmd = sim.command(bin.join(prog));
        cmd.args(["--path", path, "--size", "64m"]);
        cmd.args(extra);
        let out = run_ok(&mut cmd);
        check_alloc_output(&out, 4.0 * 1024.0 * MIB, 9);
    }
}

#[test]
fn rust_allocation_families_through_dlopen_and_gpa() {
    let sim = Sim::new().with("SIMGPU_MEMORY", "2g");
    for path in ["dlopen", "gpa"] {
        let out = run_ok(sim.command(cargo_program("alloc_rs")).args(["--path", path, "--size", "32m"]));
        check_alloc_output(&out, 2.0 * 1024.0 * MIB, 3);
    }
}

#[test]
fn device_memory_runs_out_for_real() {
    // 1 GiB device, a 64 MiB context: 15 blocks of 64 MiB fit, the 16th does not.
    let sim = Sim::new().with("SIMGPU_MEMORY", "1g");
    let out = run(
        sim.command(c_programs().join("alloc_families")).args(["--family", "cuMemAlloc_v2", "--size", "64m", "--hold", "16", "--no-copy"]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "the program reports the refused block as a failure");
    let out = text(&out.stdout);
    let allocs: Vec<_> = records(&out, "family").into_iter().filter(|r| r["op"] == "alloc").collect();
    let ok = allocs.iter().filter(|r| r["rc"] == "0").count();
    let oom = allocs.iter().filter(|r| r["rc"] == "2").count();
    assert_eq!((ok, oom), (15, 1), "{out}");
}

#[test]
fn launches_take_simulated_time_through_every_path_and_mode() {
    let sim = Sim::new();
    let bin = c_programs();
    for (prog, path) in [("launch", "linked"), ("launch", "dlopen"), ("launch_nolink", "gpa")] {
        for mode in ["open", "sync", "graph", "coop", "ex"] {
            let out = run_ok(sim.command(bin.join(prog)).args(["--path", path, "--mode", mode, "--kernel", "spin_500us", "--count", "40"]));
            let r = &records(&out, "mode")[0];
            assert_eq!(r["rc"], "0", "{out}");
            let kernels = num(r, "kernels");
            let gpu_ms = num(r, "gpu_ms");
            // 500 us per kernel: the work cannot finish sooner. (How much later depends on
            // how fast this shared machine lets the host launch and synchronise, so the upper
            // bound only catches launches that take no time at all being counted twice.)
            let ideal = kernels * 0.5;
            assert!(gpu_ms >= ideal * 0.99 && gpu_ms <= ideal * 20.0, "{prog} {path} {mode}: {gpu_ms} ms for {kernels} kernels\n{out}");
        }
    }
}

#[test]
fn per_thread_stream_variants_launch() {
    let sim = Sim::new();
    let out = run_ok(sim.command(c_programs().join("launch_nolink")).args([
        "--path",
        "gpa",
        "--ptsz",
        "--mode",
        "open",
        "--kernel",
        "spin_100us",
        "--grid",
        "264",
        "--count",
        "100",
    ]));
    let r = &records(&out, "mode")[0];
    // 264 blocks on 132 SMs are two waves of 100 us.
    let gpu_ms = num(r, "gpu_ms");
    assert!((19.9..25.0).contains(&gpu_ms), "{out}");
}

#[test]
fn rust_launch_program_through_dlopen_and_gpa() {
    let sim = Sim::new();
    for path in ["dlopen", "gpa"] {
        for mode in ["open", "sync", "graph"] {
            let out = run_ok(sim.command(cargo_program("launch_rs")).args([
                "--path",
                path,
                "--mode",
                mode,
                "--kernel",
                "spin_200us",
                "--count",
                "20",
            ]));
            let r = &records(&out, "mode")[0];
            assert_eq!(r["rc"], "0", "{out}");
            assert!(num(r, "gpu_ms") >= num(r, "kernels") * 0.2 * 0.99, "{out}");
        }
    }
}

/// The driver's JIT linker (what numba-cuda and cuda.core use without nvJitLink): two PTX
/// inputs link into one image that loads with both kernels and both globals; a bad input is
/// refused with the reason in the error log; kinds simgpu cannot hold are refused as not
/// supported; the state's handle dies with `cuLinkDestroy`. Under the shim, the linked
/// module's globals are charged to the quota like any module's.
#[test]
fn the_jit_linker_links_ptx_into_an_image_that_loads() {
    let probe = vgpu_tests::build_c_helper("probe", false);
    for shimmed in [false, true] {
        let sim = Sim::new().with("SIMGPU_MEMORY", "4g").with("SIMGPU_CONTEXT_MEMORY", "0");
        let mut cmd = if shimmed { sim.shimmed(&probe) } else { sim.command(&probe) };
        if shimmed {
            cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "1g");
        }
        let stdout = run_ok(cmd.args(["init", "ctx", "info", "link"]));
        let recs = records(&stdout, "op");
        let step = |s: &str| {
            recs.iter().find(|r| r.get("step").map(String::as_str) == Some(s)).unwrap_or_else(|| panic!("no step {s}:\n{stdout}"))
        };
        let rc = |s: &str| step(s)["rc"].clone();
        for ok in ["create", "add_a", "add_b", "complete", "load", "kernel_a", "kernel_b", "launch", "destroy"] {
            assert_eq!(rc(ok), "0", "{ok} (shimmed {shimmed}):\n{stdout}");
        }
        assert_eq!(rc("add_bad"), "218", "CUDA_ERROR_INVALID_PTX:\n{stdout}");
        assert!(step("add_bad")["error_log"].contains("bad.ptx"), "the error log names the input:\n{stdout}");
        assert!(num(step("add_bad"), "error_size") > 1.0, "the log's size is written back:\n{stdout}");
        assert_eq!(rc("add_fatbin"), "801", "CUDA_ERROR_NOT_SUPPORTED:\n{stdout}");
        assert_eq!(rc("add_missing"), "301", "CUDA_ERROR_FILE_NOT_FOUND:\n{stdout}");
        assert!(step("complete")["info_log"].contains("linked_2_input"), "{stdout}");
        assert_eq!(rc("destroy_again"), "400", "CUDA_ERROR_INVALID_HANDLE:\n{stdout}");
        // Both inputs' globals (1 MiB each) are taken when the image loads.
        let before = num(recs.iter().find(|r| r["op"] == "info").expect("info"), "free");
        assert_eq!(before - num(step("load"), "free"), 2.0 * MIB, "shimmed {shimmed}:\n{stdout}");
    }
}
