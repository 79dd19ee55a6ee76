//! Third-party Python clients against simgpu: NVIDIA's `cuda-bindings` (`cuda.bindings.driver`,
//! which dlopens libcuda.so.1 and resolves every function with `cuGetProcAddress_v2`) and
//! `pynvml` (nvidia-ml-py). The scripts live in `tests/python/`; their packages are installed
//! into a virtual environment at `<artifacts>/pyenv` (pinned by `tests/python/requirements.txt`)
//! on first use.
//!
//! Without Python or PyPI the tests print `SKIPPED: <reason>` and pass, unless
//! `VGPU_REQUIRE_PYTHON=1` (CI), where that is a failure.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vgpu_tests::{Background, Rec, Sim, busy_cudarc_client, field, num, op, records, repo_root, run_ok};

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

/// The venv's python, or `None` after printing why the test is skipped.
fn python() -> Option<&'static Path> {
    vgpu_tests::python_venv()
}

/// A command running one of `tests/python/*.py` on `sim` with the venv's python.
fn script(sim: &Sim, python: &Path, name: &str) -> Command {
    let mut c = sim.command(python);
    c.arg(repo_root().join("tests/python").join(name))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM");
    c
}

fn all<'a>(recs: &'a [Rec], op: &str) -> Vec<&'a Rec> {
    recs.iter().filter(|r| r.get("op").map(String::as_str) == Some(op)).collect()
}

/// The export `cuGetProcAddress_v2` handed out for `symbol`, as the script identified it.
fn resolved<'a>(recs: &'a [Rec], symbol: &str) -> &'a str {
    let r = all(recs, "proc_address").into_iter().find(|r| field(r, "symbol") == symbol);
    let r = r.unwrap_or_else(|| panic!("no proc_address record for {symbol} in {recs:#?}"));
    assert_eq!(field(r, "status"), "CU_GET_PROC_ADDRESS_SUCCESS", "{r:?}");
    field(r, "resolved")
}

/// driver_client.py's full run (alloc 64 MiB, round trip, module, 10 launches, free) on a
/// 4 GiB machine, checked number by number; returns its records.
fn full_driver_run(python: &Path, ptds: bool, context: &str) -> Vec<Rec> {
    let sim = Sim::new().with("SIMGPU_MEMORY", "4g");
    let mut cmd = script(&sim, python, "driver_client.py");
    cmd.args(["--alloc-mib", "64", "--kernels", "10", "--kernel", "spin_100us", "--context", context]);
    if ptds {
        cmd.env("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM", "1");
    }
    let recs = records(&run_ok(&mut cmd), "client");

    let init = op(&recs, "init", None);
    assert_eq!(num(init, "driver_version"), 12080.0, "{init:?}");
    assert_eq!(field(init, "ptds"), if ptds { "1" } else { "0" });
    assert_eq!(num(op(&recs, "device", None), "total_mem"), 4.0 * GIB);
    assert_eq!(field(op(&recs, "context", None), "kind"), context);

    let before = op(&recs, "mem_get_info", Some("before"));
    assert_eq!(num(before, "total"), 4.0 * GIB);
    let after = op(&recs, "mem_get_info", Some("after_alloc"));
    assert_eq!(num(before, "free") - num(after, "free"), 64.0 * MIB, "free drops by exactly the allocation");
    let copy = op(&recs, "copy", None);
    assert_eq!((num(copy, "bytes"), field(copy, "ok")), (64.0 * MIB, "1"), "HtoD/DtoH round trip");
    assert_eq!(num(op(&recs, "module", None), "functions"), 7.0, "every kernel of spin.ptx resolves");
    let launch = op(&recs, "launch", None);
    assert_eq!((num(launch, "kernels"), field(launch, "ok")), (10.0, "1"));
    assert!(num(launch, "elapsed_us") >= 1000.0, "10 x spin_100us took {launch:?}");
    let freed = op(&recs, "mem_get_info", Some("after_free"));
    assert_eq!(num(freed, "free"), num(before, "free"), "cuMemFree gives every byte back");
    assert_eq!(field(op(&recs, "done", None), "ok"), "1");
    recs
}

#[test]
fn cuda_bindings_driver_client_round_trip() {
    let Some(py) = python() else { return };
    let recs = full_driver_run(py, false, "primary");
    assert_eq!(resolved(&recs, "cuMemAlloc"), "cuMemAlloc_v2");
    assert_eq!(resolved(&recs, "cuMemcpyHtoD"), "cuMemcpyHtoD_v2");
    assert_eq!(resolved(&recs, "cuLaunchKernel"), "cuLaunchKernel");
}

#[test]
fn cuda_bindings_per_thread_default_stream_and_created_context() {
    let Some(py) = python() else { return };
    // cuda-bindings now asks cuGetProcAddress_v2 for the per-thread-default-stream variants.
    let recs = full_driver_run(py, true, "created");
    assert_eq!(resolved(&recs, "cuMemAlloc"), "cuMemAlloc_v2");
    assert_eq!(resolved(&recs, "cuMemcpyHtoD"), "cuMemcpyHtoD_v2_ptds");
    assert_eq!(resolved(&recs, "cuLaunchKernel"), "cuLaunchKernel_ptsz");
}

#[test]
fn cuda_bindings_sees_out_of_memory() {
    let Some(py) = python() else { return };
    let sim = Sim::new().with("SIMGPU_MEMORY", "1g");
    let recs = records(&run_ok(script(&sim, py, "driver_client.py").arg("--alloc-too-much")), "client");
    let oom = op(&recs, "oom", None);
    assert!(num(oom, "bytes") > GIB, "{oom:?}");
    assert_eq!(field(oom, "err"), "CUDA_ERROR_OUT_OF_MEMORY");
}

#[test]
fn pynvml_sees_a_python_process_holding_memory() {
    let Some(py) = python() else { return };
    let sim = Sim::new().with("SIMGPU_MEMORY", "2g");
    let mut holder = Background::spawn(script(&sim, py, "driver_client.py").args(["--alloc-mib", "256", "--hold-ms", "2000"]));
    holder.wait_for("op=hold", Duration::from_secs(60));
    let held = records(holder.stdout_so_far(), "client");
    let pid = field(op(&held, "hold", None), "pid").to_string();
    let cuda_free = num(op(&held, "mem_get_info", Some("after_alloc")), "free");

    let recs = records(&run_ok(&mut script(&sim, py, "nvml_client.py")), "client");
    assert_eq!(num(op(&recs, "init", None), "devices"), 1.0);
    assert!(field(op(&recs, "device", None), "uuid").starts_with("GPU-"));
    let mems = all(&recs, "memory");
    assert_eq!(mems.len(), 2, "v1 and v2: {mems:?}");
    for m in &mems {
        assert_eq!(num(m, "total"), 2.0 * GIB, "{m:?}");
        assert_eq!(num(m, "used") + num(m, "free"), num(m, "total"), "used + free == total: {m:?}");
        assert!(num(m, "used") >= 256.0 * MIB, "NVML used includes the 256 MiB held: {m:?}");
        assert_eq!(num(m, "free"), cuda_free, "NVML and cuMemGetInfo agree: {m:?}");
    }
    assert_eq!(num(mems[0], "used"), num(mems[1], "used"), "nvmlDeviceGetMemoryInfo and _v2 agree");

    let procs = all(&recs, "process");
    assert_eq!(num(op(&recs, "processes", None), "count"), procs.len() as f64);
    let mine = procs.iter().find(|r| field(r, "pid") == pid);
    let mine = mine.unwrap_or_else(|| panic!("pid {pid} not among running compute processes: {procs:?}"));
    assert!(num(mine, "used") >= 256.0 * MIB, "{mine:?}");
    assert_eq!(field(op(&recs, "done", None), "ok"), "1");

    let (status, out, err) = holder.finish(Duration::from_secs(30));
    assert!(status.success(), "holder failed: {status}\n{out}\n{err}");
}

#[test]
fn pynvml_sees_cudarc_kernels_busy() {
    let Some(py) = python() else { return };
    // About a second of device time from a Rust client; the Python client watches it.
    let sim = Sim::new().with("SIMGPU_MEMORY", "2g").with("SIMGPU_SMS", "132");
    let mut busy = busy_cudarc_client(&sim);
    let init = busy.wait_for("op=init", Duration::from_secs(30));
    let pid = field(&records(&init, "client")[0], "pid").to_string();
    busy.wait_for("op=module", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(550));

    let recs = records(&run_ok(&mut script(&sim, py, "nvml_client.py")), "client");
    let util = op(&recs, "utilization", None);
    assert!(num(util, "gpu") >= 50.0, "utilisation while cudarc's kernels run: {util:?}");
    let samples = all(&recs, "process_sample");
    let mine = samples.iter().find(|r| field(r, "pid") == pid);
    let mine = mine.unwrap_or_else(|| panic!("no utilisation sample for cudarc pid {pid}: {recs:#?}"));
    assert!(num(mine, "sm") > 0.0, "{mine:?}");

    let (status, out, err) = busy.finish(Duration::from_secs(30));
    assert!(status.success(), "busy client failed: {status}\n{out}\n{err}");
}
