//! Third-party Rust clients against simgpu: cudarc 0.19 (driver API through `dlopen` +
//! `dlsym`, both of its allocation paths) and nvml-wrapper 0.13 (NVML views of what cudarc
//! processes do on the same machine). The programs live in `tests/clients/cudarc-client`.
use std::time::Duration;

use vgpu_tests::{Background, Rec, Sim, busy_cudarc_client, cargo_program, field, num, op, records, run_ok};

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

fn cudarc(sim: &Sim, args: &[&str]) -> Vec<Rec> {
    records(&run_ok(sim.command(cargo_program("cudarc_client")).args(args)), "client")
}

fn nvml(sim: &Sim) -> Vec<Rec> {
    records(&run_ok(&mut sim.command(cargo_program("nvml_client"))), "client")
}

/// A full cudarc run (alloc 64 MiB, zero check, round trip, module, 10 launches, free) on a
/// 4 GiB machine, checked number by number. `pools` is what the device reports for
/// `CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED`, which decides cudarc's allocation path.
fn full_run(pools: bool) {
    let sim = Sim::new().with("SIMGPU_MEMORY", "4g").with("SIMGPU_MEMORY_POOLS", if pools { "1" } else { "0" });
    let recs = cudarc(&sim, &["--alloc-mib", "64", "--kernels", "10", "--kernel", "spin_100us"]);
    assert_eq!(field(op(&recs, "init", None), "pools"), if pools { "1" } else { "0" });

    let before = op(&recs, "mem_get_info", Some("before"));
    assert_eq!(num(before, "total"), 4.0 * GIB, "cuMemGetInfo total is the machine's memory");
    assert!(num(before, "free") < num(before, "total"), "the context itself costs memory: {before:?}");

    let alloc = op(&recs, "alloc", None);
    assert_eq!((num(alloc, "bytes"), field(alloc, "ok")), (64.0 * MIB, "1"));
    let after = op(&recs, "mem_get_info", Some("after_alloc"));
    assert_eq!(num(before, "free") - num(after, "free"), 64.0 * MIB, "free drops by exactly the allocation");

    assert_eq!(field(op(&recs, "zeros", None), "ok"), "1", "alloc_zeros reads back as zeros");
    let copy = op(&recs, "copy", None);
    assert_eq!((num(copy, "bytes"), field(copy, "ok")), (64.0 * MIB, "1"), "host -> device -> host round trip");
    assert_eq!(num(op(&recs, "module", None), "functions"), 7.0, "every kernel of spin.ptx resolves");

    let launch = op(&recs, "launch", None);
    assert_eq!((num(launch, "kernels"), field(launch, "ok")), (10.0, "1"));
    // simgpu charges 100 us of device time per 1-block spin_100us; the stream sync waits for it.
    assert!(num(launch, "elapsed_us") >= 1000.0, "10 x spin_100us took {launch:?}");

    let freed = op(&recs, "mem_get_info", Some("after_free"));
    assert_eq!(num(freed, "free"), num(before, "free"), "dropping the slices gives every byte back");
    assert_eq!(field(op(&recs, "done", None), "ok"), "1");
}

#[test]
fn cudarc_allocates_copies_and_launches_through_memory_pools() {
    // Pools on: cudarc allocates with cuMemAllocAsync and frees with cuMemFreeAsync.
    full_run(true);
}

#[test]
fn cudarc_allocates_copies_and_launches_through_cumemalloc() {
    // Pools off: simgpu's cuMemAllocAsync would fail with CUDA_ERROR_NOT_SUPPORTED, so a
    // successful run proves cudarc took cuMemAlloc_v2 / cuMemFree_v2.
    full_run(false);
}

#[test]
fn cudarc_sees_out_of_memory_as_a_driver_error() {
    for pools in ["1", "0"] {
        let sim = Sim::new().with("SIMGPU_MEMORY", "1g").with("SIMGPU_MEMORY_POOLS", pools);
        let recs = cudarc(&sim, &["--alloc-too-much"]);
        assert_eq!(field(op(&recs, "init", None), "pools"), pools);
        let oom = op(&recs, "oom", None);
        assert!(num(oom, "bytes") > GIB, "{oom:?}");
        assert_eq!(field(oom, "err"), "CUDA_ERROR_OUT_OF_MEMORY", "pools={pools}");
    }
}

#[test]
fn nvml_wrapper_sees_a_cudarc_process_holding_memory() {
    let sim = Sim::new().with("SIMGPU_MEMORY", "2g");
    let mut holder = Background::spawn(sim.command(cargo_program("cudarc_client")).args(["--alloc-mib", "512", "--hold-ms", "2000"]));
    holder.wait_for("op=hold", Duration::from_secs(30));
    let held = records(holder.stdout_so_far(), "client");
    let pid = field(op(&held, "hold", None), "pid").to_string();
    let cuda_free = num(op(&held, "mem_get_info", Some("after_alloc")), "free");

    let recs = nvml(&sim);
    let init = op(&recs, "init", None);
    assert_eq!(num(init, "devices"), 1.0);
    let dev = op(&recs, "device", None);
    assert!(!field(dev, "name").is_empty());
    assert!(field(dev, "uuid").starts_with("GPU-"), "{dev:?}");

    let mem = op(&recs, "memory", None);
    assert_eq!(num(mem, "total"), 2.0 * GIB);
    assert_eq!(num(mem, "used") + num(mem, "free"), num(mem, "total"), "used + free == total: {mem:?}");
    assert!(num(mem, "used") >= 512.0 * MIB, "NVML used includes the 512 MiB held: {mem:?}");
    assert_eq!(num(mem, "free"), cuda_free, "NVML and cuMemGetInfo agree on free memory");

    let procs: Vec<&Rec> = recs.iter().filter(|r| r.get("op").map(String::as_str) == Some("process")).collect();
    assert_eq!(num(op(&recs, "processes", None), "count"), procs.len() as f64);
    let mine = procs
        .iter()
        .find(|r| field(r, "pid") == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not among the running compute processes: {procs:?}"));
    assert!(num(mine, "used") >= 512.0 * MIB, "{mine:?}");
    let util = op(&recs, "utilization", None);
    assert!(num(util, "gpu") <= 100.0 && num(util, "memory") <= 100.0, "{util:?}");
    assert_eq!(field(op(&recs, "done", None), "ok"), "1");

    let (status, out, err) = holder.finish(Duration::from_secs(30));
    assert!(status.success(), "holder failed: {status}\n{out}\n{err}");

    // Once the holder has exited its memory is back and it is off the list.
    let after = nvml(&sim);
    let mem_after = op(&after, "memory", None);
    assert!(num(mem_after, "used") <= num(mem, "used") - 512.0 * MIB, "{mem_after:?}");
    assert!(!after.iter().any(|r| r.get("op").map(String::as_str) == Some("process") && field(r, "pid") == pid));
}

#[test]
fn nvml_wrapper_sees_cudarc_kernels_keep_the_gpu_busy() {
    // 1000 one-wave spin_1000us launches: about a second of device time.
    let sim = Sim::new().with("SIMGPU_MEMORY", "2g").with("SIMGPU_SMS", "132");
    let mut busy = busy_cudarc_client(&sim);
    busy.wait_for("op=module", Duration::from_secs(30));
    // Past the first half second the whole 500 ms utilisation window lies inside the busy run.
    std::thread::sleep(Duration::from_millis(550));
    let recs = nvml(&sim);
    let util = op(&recs, "utilization", None);
    assert!(num(util, "gpu") >= 50.0, "utilisation while cudarc's kernels run: {util:?}");

    let (status, out, err) = busy.finish(Duration::from_secs(30));
    assert!(status.success(), "busy client failed: {status}\n{out}\n{err}");
    let launch = op(&records(&out, "client"), "launch", None).clone();
    assert_eq!(field(&launch, "ok"), "1");
    assert!(num(&launch, "elapsed_us") >= 1_000_000.0, "1000 x 1 ms waves: {launch:?}");
}
