//! Third-party clients under `libvgpu.so`: cudarc (with simgpu's memory pools on and off, so
//! both its `cuMemAllocAsync` and its `cuMemAlloc_v2` paths), NVIDIA's `cuda-bindings`
//! (`cuGetProcAddress_v2` for everything, also with per-thread default streams), and NVML
//! through nvml-wrapper and pynvml. Each sees the quota as the device's memory and gets
//! `CUDA_ERROR_OUT_OF_MEMORY` one MiB past it.
//!
//! The Python tests print `SKIPPED: <reason>` and pass when Python or PyPI is unavailable,
//! unless `VGPU_REQUIRE_PYTHON=1`.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vgpu_tests::{Background, Rec, Sim, cargo_program, field, op, python_venv, records, repo_root, run, text, u};

const MIB: u64 = 1 << 20;
const QUOTA: u64 = 512 * MIB;
/// What is free in a fresh process: the quota less its 64 MiB context.
const FREE: u64 = QUOTA - 64 * MIB;

/// Runs a client to completion: (exit code, its `client=` records, stdout + stderr).
fn client(cmd: &mut Command) -> (Option<i32>, Vec<Rec>, String) {
    let out = run(cmd, Duration::from_secs(120));
    let stdout = text(&out.stdout);
    let all = format!("{stdout}\n{}", text(&out.stderr));
    (out.status.code(), records(&stdout, "client"), all)
}

fn shimmed(sim: &Sim, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = sim.shimmed(program);
    c.env("CUDA_DEVICE_MEMORY_LIMIT", "512m");
    c
}

/// The checks every driver client's run shares: it sees the quota, its allocation moves
/// `free` by exactly its size, and the free gives it all back.
fn check_views(recs: &[Rec], bytes: u64, all: &str) {
    let before = op(recs, "mem_get_info", Some("before"));
    assert_eq!((u(before, "total"), u(before, "free")), (QUOTA, FREE), "{all}");
    let after = op(recs, "mem_get_info", Some("after_alloc"));
    assert_eq!((u(after, "total"), u(after, "free")), (QUOTA, FREE - bytes), "{all}");
    if let Some(freed) = recs.iter().find(|r| r.get("stage").map(String::as_str) == Some("after_free")) {
        assert_eq!(u(freed, "free"), FREE, "{all}");
    }
}

#[test]
fn cudarc_with_and_without_memory_pools_sees_the_quota_and_gets_oom_at_it() {
    let cudarc = cargo_program("cudarc_client");
    for pools in ["1", "0"] {
        let sim = Sim::with_64m_contexts().with("SIMGPU_MEMORY_POOLS", pools);

        // A full run: alloc, zero check, round trip, module, launches, free.
        let (code, recs, all) = client(shimmed(&sim, &cudarc).args(["--alloc-mib", "64", "--kernels", "3", "--kernel", "spin_10us"]));
        assert_eq!(code, Some(0), "pools={pools}: {all}");
        assert_eq!(field(op(&recs, "init", None), "pools"), pools);
        check_views(&recs, 64 * MIB, &all);
        assert_eq!(field(op(&recs, "done", None), "ok"), "1", "{all}");

        // All of free in one allocation, then one MiB more.
        let free_mib = (FREE / MIB).to_string();
        let (code, recs, all) = client(shimmed(&sim, &cudarc).args(["--alloc-mib", &free_mib, "--hold-ms", "0"]));
        assert_eq!(code, Some(0), "pools={pools}: {all}");
        check_views(&recs, FREE, &all);
        let over = (FREE / MIB + 1).to_string();
        let (code, recs, all) = client(shimmed(&sim, &cudarc).args(["--alloc-mib", &over]));
        assert_eq!(code, Some(1), "pools={pools}: {all}");
        let alloc = op(&recs, "alloc", None);
        assert_eq!((field(alloc, "ok"), field(alloc, "err")), ("0", "CUDA_ERROR_OUT_OF_MEMORY"), "pools={pools}: {all}");

        let (code, recs, all) = client(shimmed(&sim, &cudarc).arg("--alloc-too-much"));
        assert_eq!(code, Some(0), "pools={pools}: {all}");
        let oom = op(&recs, "oom", None);
        assert_eq!(u(oom, "bytes"), QUOTA + (1 << 30), "{all}");
        assert_eq!(field(oom, "err"), "CUDA_ERROR_OUT_OF_MEMORY", "{all}");
    }
}

#[test]
fn nvml_wrapper_sees_the_quota_and_what_a_cudarc_process_holds() {
    let sim = Sim::with_64m_contexts();
    let mut holder = Background::spawn(shimmed(&sim, cargo_program("cudarc_client")).args(["--alloc-mib", "256", "--hold-ms", "1500"]));
    holder.wait_for("op=hold", Duration::from_secs(60));
    let held = records(holder.stdout_so_far(), "client");
    let cuda_free = u(op(&held, "mem_get_info", Some("after_alloc")), "free");
    assert_eq!(cuda_free, FREE - 256 * MIB);

    let (code, recs, all) = client(&mut shimmed(&sim, cargo_program("nvml_client")));
    assert_eq!(code, Some(0), "{all}");
    let mem = op(&recs, "memory", None);
    assert_eq!(u(mem, "total"), QUOTA, "{all}");
    assert_eq!(u(mem, "used") + u(mem, "free"), QUOTA, "{all}");
    assert_eq!(u(mem, "free"), cuda_free, "NVML and cuMemGetInfo agree: {all}");

    // Outside the container the physical card shows.
    let (code, recs, all) = client(&mut sim.command(cargo_program("nvml_client")));
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(u(op(&recs, "memory", None), "total"), 16 << 30, "{all}");

    let (status, out, err) = holder.finish(Duration::from_secs(30));
    assert!(status.success(), "{out}\n{err}");
}

/// A command running `tests/python/<name>` with the venv's python under the shim.
fn script(sim: &Sim, python: &Path, name: &str) -> Command {
    let mut c = shimmed(sim, python);
    c.arg(repo_root().join("tests/python").join(name))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM");
    c
}

#[test]
fn cuda_bindings_sees_the_quota_and_gets_oom_at_it() {
    let Some(py) = python_venv() else { return };
    let sim = Sim::with_64m_contexts();
    for (ptds, context) in [("0", "primary"), ("1", "created")] {
        let mut cmd = script(&sim, py, "driver_client.py");
        cmd.env("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM", ptds)
            .args(["--alloc-mib", "64", "--kernels", "2", "--kernel", "spin_10us"])
            .args(["--context", context]);
        let (code, recs, all) = client(&mut cmd);
        assert_eq!(code, Some(0), "ptds={ptds}: {all}");
        assert_eq!(field(op(&recs, "init", None), "ptds"), ptds);
        assert_eq!(u(op(&recs, "device", None), "total_mem"), QUOTA, "cuDeviceTotalMem: {all}");
        check_views(&recs, 64 * MIB, &all);
        let alloc =
            recs.iter().find(|r| field(r, "op") == "proc_address" && field(r, "symbol") == "cuMemAlloc").unwrap_or_else(|| panic!("{all}"));
        assert_eq!(field(alloc, "resolved"), "cuMemAlloc_v2", "{all}");
        assert_eq!(field(op(&recs, "done", None), "ok"), "1", "{all}");
    }

    let over = (FREE / MIB + 1).to_string();
    let (code, recs, all) = client(script(&sim, py, "driver_client.py").args(["--alloc-mib", &over]));
    assert_eq!(code, Some(1), "{all}");
    let alloc = op(&recs, "alloc", None);
    assert_eq!((field(alloc, "ok"), field(alloc, "err")), ("0", "CUDA_ERROR_OUT_OF_MEMORY"), "{all}");

    let (code, recs, all) = client(script(&sim, py, "driver_client.py").arg("--alloc-too-much"));
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(field(op(&recs, "oom", None), "err"), "CUDA_ERROR_OUT_OF_MEMORY", "{all}");
}

#[test]
fn pynvml_sees_the_quota_and_what_a_python_process_holds() {
    let Some(py) = python_venv() else { return };
    let sim = Sim::with_64m_contexts();
    let mut holder = Background::spawn(script(&sim, py, "driver_client.py").args(["--alloc-mib", "128", "--hold-ms", "2000"]));
    holder.wait_for("op=hold", Duration::from_secs(60));
    let held = records(holder.stdout_so_far(), "client");
    let cuda_free = u(op(&held, "mem_get_info", Some("after_alloc")), "free");
    assert_eq!(cuda_free, FREE - 128 * MIB);

    let (code, recs, all) = client(&mut script(&sim, py, "nvml_client.py"));
    assert_eq!(code, Some(0), "{all}");
    let mems: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "memory").collect();
    assert_eq!(mems.len(), 2, "v1 and v2: {all}");
    for m in mems {
        assert_eq!(u(m, "total"), QUOTA, "{m:?}");
        assert_eq!(u(m, "used") + u(m, "free"), QUOTA, "{m:?}");
        assert_eq!(u(m, "free"), cuda_free, "NVML and cuMemGetInfo agree: {m:?}");
    }
    let (status, out, err) = holder.finish(Duration::from_secs(30));
    assert!(status.success(), "{out}\n{err}");
}

#[test]
fn cuda_bindings_graph_memory_node_is_charged_and_refused_past_the_quota() {
    let Some(py) = python_venv() else { return };
    let sim = Sim::with_64m_contexts();
    // 256 MiB of graph memory: charged while the device's graph allocator holds it (two
    // launches take it once), given back by the trim.
    let (code, recs, all) = client(script(&sim, py, "driver_client.py").args(["--graph-mib", "256"]));
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(u(op(&recs, "graph", None), "reserved"), 256 * MIB, "{all}");
    assert_eq!(u(op(&recs, "mem_get_info", Some("after_graph")), "free"), FREE - 256 * MIB, "{all}");
    assert_eq!(u(op(&recs, "mem_get_info", Some("after_trim")), "free"), FREE, "{all}");
    // More than the quota leaves: refused at the launch, with OUT_OF_MEMORY.
    let over = (FREE / MIB + 1).to_string();
    let (code, recs, all) = client(script(&sim, py, "driver_client.py").args(["--graph-mib", &over]));
    assert_eq!(code, Some(1), "{all}");
    let launch = op(&recs, "graph_launch", None);
    assert_eq!((field(launch, "ok"), field(launch, "err")), ("0", "CUDA_ERROR_OUT_OF_MEMORY"), "{all}");
}

#[test]
fn cuda_bindings_meets_the_quota_when_the_driver_answers_with_private_addresses() {
    // cuda-bindings resolves every function with cuGetProcAddress; here simgpu answers with
    // addresses that are not its exports (SIMGPU_PROC_ADDRESS=private), as a driver or an
    // injected profiler may: the hooks are found by name, and the quota holds on each path.
    let Some(py) = python_venv() else { return };
    let sim = Sim::with_64m_contexts();
    let over = (FREE / MIB + 1).to_string();
    for (args, failing) in [(["--alloc-mib", over.as_str()], "alloc"), (["--graph-mib", over.as_str()], "graph_launch")] {
        let (code, recs, all) = client(script(&sim, py, "driver_client.py").env("SIMGPU_PROC_ADDRESS", "private").args(args));
        assert_eq!(code, Some(1), "{all}");
        assert_eq!(u(op(&recs, "mem_get_info", Some("before")), "free"), FREE, "the view is hooked: {all}");
        let failed = op(&recs, failing, None);
        assert_eq!((field(failed, "ok"), field(failed, "err")), ("0", "CUDA_ERROR_OUT_OF_MEMORY"), "{all}");
    }
}
