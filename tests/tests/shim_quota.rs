//! The VRAM quota under `libvgpu.so`, family by family, with the views checked at every step:
//! `cuMemGetInfo_v2` (in the allocating process) against NVML's `nvmlDeviceGetMemoryInfo` and
//! `_v2` (in an observer process of the same container), and against simgpu's physical view
//! (NVML without the shim), which must never show the container above its quota.
//!
//! simgpu charges every context `SIMGPU_CONTEXT_MEMORY`; the tests pin it to 64 MiB, and the
//! shim must charge exactly that (it measures the driver's own `used` around the creation).
use std::process::{Command, Stdio};
use std::time::Duration;

use vgpu_tests::{Background, Rec, Sim, build_c_helper, c_programs, field, records, run, text, u};

const MIB: u64 = 1 << 20;
const CONTEXT: u64 = 64 * MIB;

/// The allocation families, in the order `alloc_families --family all` runs them.
const FAMILIES: [&str; 9] = vgpu_tests::ALLOC_FAMILIES;

/// Families whose allocation is exactly `--size` bytes when the size is a multiple of 2 MiB
/// (the arrays are shaped, so their byte counts only come close).
const LINEAR: [&str; 6] =
    ["cuMemAlloc_v2", "cuMemAllocPitch_v2", "cuMemAllocManaged", "cuMemAllocAsync", "cuMemAllocFromPoolAsync", "cuMemCreate"];

/// The records of one family with operation `op`.
fn of<'a>(recs: &'a [Rec], family: &str, op: &str) -> Vec<&'a Rec> {
    recs.iter().filter(|r| field(r, "family") == family && field(r, "op") == op).collect()
}

/// NVML's memory views of device `index` (v1 then v2), from the probe run as `cmd`.
fn nvml_views(cmd: &mut Command, index: u32) -> Vec<Rec> {
    let out = run(cmd.args([format!("nvml={index}")]), Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{cmd:?}: {}\n{stdout}\n{}", out.status, text(&out.stderr));
    let recs = records(&stdout, "op");
    let init: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "nvml_init").collect();
    assert_eq!(field(init[0], "rc"), "0", "nvmlInit_v2: {stdout}");
    let views: Vec<Rec> = recs.into_iter().filter(|r| field(r, "op") == "nvml").collect();
    assert_eq!(views.len(), 2, "{stdout}");
    for v in &views {
        assert_eq!(field(v, "rc"), "0", "{v:?}");
        assert_eq!(u(v, "used") + u(v, "free"), u(v, "total"), "used + free == total: {v:?}");
    }
    views
}

/// The container's view from an NVML observer under the shim (same region, same quota).
fn container_view(sim: &Sim, quota: &str) -> Vec<Rec> {
    let probe = build_c_helper("probe", false);
    nvml_views(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", quota), 0)
}

/// simgpu's physical view: NVML without the shim.
fn physical_used(sim: &Sim) -> u64 {
    let probe = build_c_helper("probe", false);
    u(&nvml_views(&mut sim.command(&probe), 0)[0], "used")
}

/// Checks the `alloc` records of one family run (in order) against the quota: each allocation
/// succeeds exactly when it fits in what `cuMemGetInfo` said was free before it, and moves
/// `free` by exactly its bytes; refusals are `CUDA_ERROR_OUT_OF_MEMORY` and move nothing.
/// Returns `free` after the last one.
fn check_allocs(allocs: &[&Rec], quota: u64, mut free: u64) -> u64 {
    for a in allocs {
        assert_eq!(u(a, "total"), quota, "cuMemGetInfo total is the quota: {a:?}");
        let bytes = u(a, "bytes");
        if bytes <= free {
            assert_eq!(field(a, "rc"), "0", "{bytes} bytes fit in {free} free: {a:?}");
            free -= bytes;
        } else {
            assert_eq!(field(a, "rc"), "2", "{bytes} bytes do not fit in {free} free: CUDA_ERROR_OUT_OF_MEMORY: {a:?}");
        }
        assert_eq!(u(a, "free"), free, "free moves by exactly the allocation: {a:?}");
    }
    free
}

#[test]
fn every_family_is_held_to_the_quota_and_the_views_agree_at_every_step() {
    // 320 MiB: the 64 MiB context and two 100 MiB blocks fit, a third does not.
    let sim = Sim::with_64m_contexts();
    let quota = 320 * MIB;
    let mut holder = Background::spawn(
        sim.shimmed(c_programs().join("alloc_families"))
            .env("CUDA_DEVICE_MEMORY_LIMIT", "320m")
            .args(["--family", "all", "--size", "100m", "--hold", "3"])
            .args(["--wait-stdin", "--no-copy"])
            .stdin(Stdio::piped()),
    );
    let mut free = quota - CONTEXT;
    for family in FAMILIES {
        holder.wait_for(&format!("family={family} op=hold"), Duration::from_secs(30));
        let recs = records(holder.stdout_so_far(), "family");
        let allocs = of(&recs, family, "alloc");
        assert_eq!(allocs.len(), 3, "{family}: {allocs:?}");
        let held_free = check_allocs(&allocs, quota, free);
        let (ok, refused): (Vec<&&Rec>, Vec<&&Rec>) = allocs.iter().partition(|a| field(a, "rc") == "0");
        assert_eq!((ok.len(), refused.len()), (2, 1), "{family}: {allocs:?}");
        let held: u64 = ok.iter().map(|a| u(a, "bytes")).sum();
        let hold = of(&recs, family, "hold")[0];
        assert_eq!((u(hold, "bytes"), field(hold, "rc")), (held, "2"), "{hold:?}");

        // NVML in another process of the container: the same numbers, v1 and v2.
        for v in container_view(&sim, "320m") {
            assert_eq!(u(&v, "total"), quota, "{family}: {v:?}");
            assert_eq!(u(&v, "free"), held_free, "{family}: NVML and cuMemGetInfo agree: {v:?}");
            assert_eq!(u(&v, "used"), CONTEXT + held, "{family}: {v:?}");
        }
        // And the device itself never holds more than the quota for the container.
        let physical = physical_used(&sim);
        assert!(physical <= quota, "{family}: simgpu holds {physical} bytes for a {quota}-byte quota");

        holder.send_line("free");
        // The frees give back exactly what the allocations took, in cuMemGetInfo.
        let next = FAMILIES.iter().position(|f| *f == family).and_then(|i| FAMILIES.get(i + 1));
        if let Some(next) = next {
            holder.wait_for(&format!("family={next} op=alloc"), Duration::from_secs(30));
            let recs = records(holder.stdout_so_far(), "family");
            let frees = of(&recs, family, "free");
            assert_eq!(frees.len(), 2, "{family}: {frees:?}");
            assert_eq!(u(frees[1], "free"), quota - CONTEXT, "{family}: {frees:?}");
        }
        free = quota - CONTEXT;
    }
    let (status, out, err) = holder.finish(Duration::from_secs(30));
    // Every family was refused once; nothing else failed.
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("done failures=9"), "{out}\n{err}");
    let recs = records(&out, "family");
    let last = of(&recs, "cuMipmappedArrayCreate", "free");
    assert_eq!(u(last[1], "free"), quota - CONTEXT, "everything came back: {last:?}");
}

#[test]
fn an_allocation_of_exactly_free_succeeds_and_one_byte_more_is_refused() {
    // TensorFlow sizes its arena from cuMemGetInfo's free and allocates it in one go.
    let sim = Sim::with_64m_contexts();
    let quota = 256 * MIB;
    let free = quota - CONTEXT; // 192 MiB
    let alloc_families = c_programs().join("alloc_families");
    let out = run(
        sim.shimmed(&alloc_families).env("CUDA_DEVICE_MEMORY_LIMIT", "256m").args([
            "--family",
            "all",
            "--size",
            "192m",
            "--hold",
            "2",
            "--no-copy",
        ]),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    let recs = records(&stdout, "family");
    for family in FAMILIES {
        let allocs = of(&recs, family, "alloc");
        assert_eq!(allocs.len(), 2, "{family}: {stdout}");
        check_allocs(&allocs, quota, free);
        if LINEAR.contains(&family) {
            assert_eq!((field(allocs[0], "rc"), u(allocs[0], "free")), ("0", 0), "{family}: all of free in one allocation: {allocs:?}");
        }
        if let Some(last) = of(&recs, family, "free").last() {
            assert_eq!(u(last, "free"), free, "{family}: every byte came back: {last:?}");
        }
    }

    let out = run(
        sim.shimmed(&alloc_families)
            .env("CUDA_DEVICE_MEMORY_LIMIT", "256m")
            .args(["--family", "cuMemAlloc_v2", "--no-copy", "--size"])
            .arg((free + 1).to_string()),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    let recs = records(&stdout, "family");
    let alloc = of(&recs, "cuMemAlloc_v2", "alloc");
    assert_eq!(field(alloc[0], "rc"), "2", "one byte over: {stdout}");
    assert_eq!(u(alloc[0], "free"), free, "{stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("out of quota"), "the refusal is logged at the default level: {stderr}");
}

#[test]
fn a_quota_smaller_than_a_context_clamps_the_views_and_refuses_everything() {
    // HAMi reports errors (or 17 TB) here; the views must stay consistent and never fail.
    let sim = Sim::with_64m_contexts();
    let quota = 32 * MIB;
    let probe = build_c_helper("probe", false);
    let out = run(
        sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "32m").args(["init", "ctx", "info", "total", "alloc=1m", "info", "nvml"]),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let recs = records(&stdout, "op");
    let get = |op: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == op).collect() };
    assert_eq!(field(get("ctx")[0], "rc"), "0", "the context is created: {stdout}");
    for info in get("info") {
        assert_eq!((field(info, "rc"), u(info, "free"), u(info, "total")), ("0", 0, quota), "{stdout}");
    }
    let total = get("total")[0];
    assert_eq!((field(total, "rc"), u(total, "bytes")), ("0", quota));
    assert_eq!(field(get("alloc")[0], "rc"), "2", "{stdout}");
    for v in get("nvml") {
        assert_eq!(field(v, "rc"), "0", "{v:?}");
        assert_eq!((u(v, "total"), u(v, "free"), u(v, "used")), (quota, 0, quota), "{v:?}");
    }
}

#[test]
fn quotas_are_per_device_by_the_index_the_application_sees() {
    // Two devices; the application sees only physical device 1, as its device 0.
    let sim = Sim::with_64m_contexts().with("SIMGPU_DEVICES", "2");
    let probe = build_c_helper("probe", false);
    let alloc_families = c_programs().join("alloc_families");
    let limits = |c: &mut Command| {
        c.env("CUDA_DEVICE_MEMORY_LIMIT_0", "256m").env("CUDA_DEVICE_MEMORY_LIMIT_1", "512m");
    };

    // Without CUDA_VISIBLE_DEVICES each device has its own quota.
    for (device, quota) in [("0", 256 * MIB), ("1", 512 * MIB)] {
        let mut cmd = sim.shimmed(&alloc_families);
        limits(&mut cmd);
        let out =
            run(cmd.args(["--family", "cuMemAlloc_v2", "--size", "100m", "--no-copy"]).args(["--device", device]), Duration::from_secs(30));
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        let alloc = &records(&stdout, "family")[0];
        assert_eq!(u(alloc, "total"), quota, "device {device}: {stdout}");
        assert_eq!(u(alloc, "free"), quota - CONTEXT - 100 * MIB, "{stdout}");
    }

    // With CUDA_VISIBLE_DEVICES=1, _0 is the quota of physical device 1.
    let mut cmd = sim.shimmed(&alloc_families);
    limits(&mut cmd);
    let out = run(
        cmd.env("CUDA_VISIBLE_DEVICES", "1").args(["--family", "cuMemAlloc_v2", "--size", "100m", "--no-copy"]),
        Duration::from_secs(30),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(u(&records(&stdout, "family")[0], "total"), 256 * MIB, "{stdout}");

    // NVML ignores CUDA_VISIBLE_DEVICES: its index 1 is the application's device 0, whether or
    // not CUDA is initialised in the process; its index 0 is not the container's device.
    for ops in [vec![], vec!["init"]] {
        let mut cmd = sim.shimmed(&probe);
        limits(&mut cmd);
        cmd.env("CUDA_VISIBLE_DEVICES", "1").args(&ops);
        let views = nvml_views(&mut cmd, 1);
        for v in &views {
            assert_eq!(u(v, "total"), 256 * MIB, "NVML index 1 after {ops:?}: {v:?}");
        }
    }
}

#[test]
fn memory_a_pool_keeps_after_a_stream_ordered_free_still_counts_against_the_quota() {
    // PyTorch's cudaMallocAsync backend sets the pool's release threshold to UINT64_MAX, so
    // freed blocks stay reserved by the pool (on the device) instead of going back to it.
    let sim = Sim::with_64m_contexts();
    let quota = 256 * MIB;
    let probe = build_c_helper("probe", false);
    let mut holder = Background::spawn(
        sim.shimmed(&probe)
            .env("CUDA_DEVICE_MEMORY_LIMIT", "256m")
            .args(["init", "ctx", "keep_pool", "async=150m", "free", "alloc=150m"])
            .args(["wait", "freeall", "trim_pool"])
            .stdin(Stdio::piped()),
    );
    let alloc = holder.wait_for("op=alloc", Duration::from_secs(30));
    let physical = physical_used(&sim);
    let view = container_view(&sim, "256m");
    holder.send_line("done");
    let (status, out, err) = holder.finish(Duration::from_secs(30));
    assert!(status.success(), "{out}\n{err}");
    assert!(
        physical <= quota,
        "the device holds {physical} bytes for the container (context, 150 MiB kept by the \
         default pool after cuMemFreeAsync, then `{alloc}`), over its {quota}-byte quota:\n{out}"
    );
    assert_eq!(u(&view[0], "used"), physical, "the container's NVML view matches what the device holds:\n{out}");
}

#[test]
fn a_virtual_memory_handle_released_while_mapped_is_charged_until_its_last_unmap() {
    // cuMemRelease on a mapped handle is legal and frees nothing: the mapping keeps the
    // memory until cuMemUnmap. The charge must last exactly as long.
    let sim = Sim::with_64m_contexts();
    let quota = 512 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "vmm=256m", "alloc=256m", "vmm_unmap", "alloc=256m", "freeall", "info"];
    let out = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    let vmm = op("vmm");
    assert_eq!((field(vmm[0], "rc"), field(vmm[0], "release_rc")), ("0", "0"), "{stdout}");
    assert_eq!(u(vmm[0], "free"), quota - CONTEXT - 256 * MIB, "released but mapped: still charged: {stdout}");
    let allocs = op("alloc");
    assert_eq!(field(allocs[0], "rc"), "2", "the mapping still holds 256 MiB, so 256 MiB more cannot fit: {stdout}");
    let unmap = op("vmm_unmap");
    assert_eq!(field(unmap[0], "rc"), "0", "{stdout}");
    assert_eq!(u(unmap[0], "free"), quota - CONTEXT, "the last unmap ends the charge: {stdout}");
    assert_eq!(field(allocs[1], "rc"), "0", "{stdout}");
    assert_eq!(u(op("info")[0], "free"), quota - CONTEXT, "{stdout}");
}

#[test]
fn a_retained_virtual_memory_handle_is_charged_until_its_last_release() {
    // create → map → release (the creator's reference) → retain (by an address inside the
    // mapping) → unmap: the driver still holds the memory for the retained reference, so the
    // charge stays until that reference is released too. Checked against simgpu's own figures.
    let sim = Sim::with_64m_contexts();
    let quota = 512 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "vmm=256m", "vmm_retain", "vmm_unmap", "alloc=256m", "vmm_release", "alloc=256m", "info"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    let device_free = |out: &std::process::Output, op: &str| -> u64 {
        let stdout = text(&out.stdout);
        let recs = records(&stdout, "op");
        u(recs.iter().find(|r| field(r, "op") == op).unwrap_or_else(|| panic!("no {op}: {stdout}")), "free")
    };
    // Without the shim: the device frees the memory at the last release, not at the unmap.
    let held = device_free(&bare, "vmm");
    assert_eq!(device_free(&bare, "vmm_unmap"), held, "unmapped but retained: the device still holds it");
    let after_alloc = device_free(&bare, "alloc"); // no quota without the shim: it fits
    assert_eq!(device_free(&bare, "vmm_release"), after_alloc + 256 * MIB, "the last reference frees it");
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    assert_eq!((field(op("vmm_retain")[0], "rc"), field(op("vmm_retain")[0], "same")), ("0", "1"), "{stdout}");
    assert_eq!(u(op("vmm_unmap")[0], "free"), quota - CONTEXT - 256 * MIB, "retained: still charged after the unmap: {stdout}");
    let allocs = op("alloc");
    assert_eq!(field(allocs[0], "rc"), "2", "the retained 256 MiB leave no room for 256 MiB more: {stdout}");
    assert_eq!(u(op("vmm_release")[0], "free"), quota - CONTEXT, "the last release ends the charge: {stdout}");
    assert_eq!(field(allocs[1], "rc"), "0", "{stdout}");
}

#[test]
fn graph_memory_is_charged_when_its_graph_first_runs_and_refused_past_the_quota() {
    // A captured cuMemAllocAsync (graph=) and a cuGraphAddMemAllocNode (gnode=) are graph
    // memory: taken from the device when the executable graph first launches, kept by the
    // device's graph allocator (across launches, after the graph frees it) until a trim.
    let sim = Sim::with_64m_contexts();
    let quota = 1024 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "graph=512m", "gnode=512m", "alloc=512m", "graph_trim", "alloc=512m", "info"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(ops), Duration::from_secs(30));
    // Without the shim both graphs run and the allocator holds both until the trim.
    let stdout = text(&bare.stdout);
    let recs = records(&stdout, "op");
    let op = |name: &str| -> &Rec { recs.iter().find(|r| field(r, "op") == name).unwrap_or_else(|| panic!("no {name}: {stdout}")) };
    assert_eq!((field(op("graph"), "rc"), u(op("graph"), "reserved")), ("0", 512 * MIB), "{stdout}");
    assert_eq!((field(op("gnode"), "rc"), u(op("gnode"), "reserved")), ("0", 1024 * MIB), "{stdout}");
    assert_eq!((field(op("graph_trim"), "rc"), u(op("graph_trim"), "reserved")), ("0", 0), "{stdout}");
    // Under a 1 GiB quota the second graph's launch is refused before it reaches the driver.
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    let graph = op("graph")[0];
    assert_eq!((field(graph, "rc"), u(graph, "free")), ("0", quota - CONTEXT - 512 * MIB), "charged at launch: {stdout}");
    let gnode = op("gnode")[0];
    assert_eq!((field(gnode, "rc"), field(gnode, "step")), ("2", "launch"), "OUT_OF_MEMORY at its launch: {stdout}");
    assert_eq!((u(gnode, "reserved"), u(gnode, "free")), (512 * MIB, quota - CONTEXT - 512 * MIB), "nothing taken: {stdout}");
    let allocs = op("alloc");
    assert_eq!(field(allocs[0], "rc"), "2", "the graph allocator's 512 MiB stay charged after the graph freed them: {stdout}");
    let trim = op("graph_trim")[0];
    assert_eq!((field(trim, "rc"), u(trim, "reserved"), u(trim, "free")), ("0", 0, quota - CONTEXT), "{stdout}");
    assert_eq!(field(allocs[1], "rc"), "0", "{stdout}");
}

#[test]
fn graph_memory_is_charged_even_once_launches_are_forwarded_at_once() {
    // Kernel launches first (the launch fast path arms: graph launches too are forwarded
    // without the whole path), then graphs with graph memory: their first launch must still
    // map it through the quota.
    let sim = Sim::with_64m_contexts();
    let quota = 1024 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "module=1m", "launch=3", "graph=512m", "gnode=512m", "info"];
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(ops), Duration::from_secs(30));
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> &Rec { recs.iter().find(|r| field(r, "op") == name).unwrap_or_else(|| panic!("no {name}: {stdout}")) };
    assert_eq!(field(op("launch"), "rc"), "0", "{stdout}");
    let graph = op("graph");
    assert_eq!((field(graph, "rc"), u(graph, "free")), ("0", quota - CONTEXT - MIB - 512 * MIB), "charged at launch: {stdout}");
    let gnode = op("gnode");
    assert_eq!((field(gnode, "rc"), field(gnode, "step")), ("2", "launch"), "OUT_OF_MEMORY at its launch: {stdout}");
}

#[test]
fn a_raised_context_limit_is_charged_and_refused_past_the_quota() {
    // The stack limit is reserved for every resident thread (simgpu: 132 SMs × 2048), so each
    // KiB of stack is 264 MiB; the heap is its own size. Charged above what the context had.
    let sim = Sim::with_64m_contexts();
    let quota = 1024 * MIB;
    let per_kib = 132 * 2048 * 1024;
    let probe = build_c_helper("probe", false);
    let ops = [
        "init",
        "ctx",
        "limit=stack:2k",
        "limit=stack:4k",
        "limit=stack:8k",
        "limit=heap:100m",
        "alloc=100m",
        "limit=stack:1k",
        "alloc=100m",
    ];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let stdout = text(&bare.stdout);
    let recs = records(&stdout, "op");
    let limits: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "limit").collect();
    assert!(limits.iter().all(|r| field(r, "rc") == "0"), "without the shim each fits the device: {stdout}");
    assert_eq!(u(limits[1], "free") - u(limits[2], "free"), 4 * per_kib, "simgpu takes 8 KiB - 4 KiB of stack per thread: {stdout}");
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(ops), Duration::from_secs(30));
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let limits: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "limit").collect();
    let allocs: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "alloc").collect();
    let free0 = quota - CONTEXT;
    assert_eq!((field(limits[0], "rc"), u(limits[0], "value"), u(limits[0], "free")), ("0", 2048, free0 - per_kib), "{stdout}");
    assert_eq!((field(limits[1], "rc"), u(limits[1], "free")), ("0", free0 - 3 * per_kib), "{stdout}");
    assert_eq!((field(limits[2], "rc"), u(limits[2], "value")), ("2", 4096), "8 KiB of stack does not fit: refused, unchanged: {stdout}");
    assert_eq!((field(limits[3], "rc"), u(limits[3], "free")), ("0", free0 - 3 * per_kib - 92 * MIB), "heap above its 8 MiB: {stdout}");
    assert_eq!(field(allocs[0], "rc"), "2", "{stdout}");
    assert_eq!((field(limits[4], "rc"), u(limits[4], "free")), ("0", free0 - 92 * MIB), "lowered: given back: {stdout}");
    assert_eq!(field(allocs[1], "rc"), "0", "{stdout}");
}

#[test]
fn the_legacy_32_bit_symbols_are_charged_and_viewed_through_the_quota() {
    // A program built against the pre-3.2 ABI: cuMemAlloc / cuMemFree / cuMemGetInfo by their
    // plain names (32-bit sizes and pointers), and cuGetProcAddress asked for version 3010.
    let sim = Sim::with_64m_contexts();
    let quota = 512 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "info32", "alloc32=200m", "alloc32=200m", "alloc32=200m", "free", "info32", "gpa=cuMemAlloc@3010"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let stdout = text(&bare.stdout);
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    assert!(op("alloc32").iter().all(|r| field(r, "rc") == "0"), "without the shim all fit: {stdout}");
    assert_eq!(u(op("info32")[0], "total"), u64::from(u32::MAX), "a 16 GiB device in 32 bits: {stdout}");
    assert!(field(op("gpa")[0], "pfn").ends_with("libcuda.so.1!cuMemAlloc"), "{stdout}");
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    let (info, allocs) = (op("info32"), op("alloc32"));
    assert_eq!((u(info[0], "total"), u(info[0], "free")), (quota, quota - CONTEXT), "{stdout}");
    let rcs: Vec<&str> = allocs.iter().map(|r| field(r, "rc")).collect();
    assert_eq!(rcs, ["0", "0", "2"], "the third 200 MiB passes the quota: {stdout}");
    assert_eq!(u(info[1], "free"), quota - CONTEXT - 200 * MIB, "the legacy cuMemFree gave one back: {stdout}");
    assert!(field(op("gpa")[0], "pfn").ends_with("libvgpu.so!cuMemAlloc"), "{stdout}");
}

#[test]
fn a_module_or_library_load_is_charged_its_globals_and_refused_past_the_quota() {
    // A PTX module declaring a 300 MiB `.global` array, loaded with cuModuleLoadData and then
    // with CUDA 12's cuLibraryLoadData: the driver (simgpu) takes the memory at load; the shim
    // charges what the load took and refuses the second of each past the quota.
    let sim = Sim::with_64m_contexts();
    let quota = 512 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "module=300m", "module=300m", "module_unload", "library=300m", "library=300m", "library_unload", "info"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let stdout = text(&bare.stdout);
    let recs = records(&stdout, "op");
    let modules: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "module").collect();
    assert!(modules.iter().all(|r| field(r, "rc") == "0"), "without the shim both fit: {stdout}");
    assert_eq!(u(modules[0], "free") - u(modules[1], "free"), 300 * MIB, "simgpu charges the globals: {stdout}");
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    let modules = op("module");
    assert_eq!((field(modules[0], "rc"), u(modules[0], "free")), ("0", quota - CONTEXT - 300 * MIB), "{stdout}");
    assert_eq!((field(modules[1], "rc"), u(modules[1], "free")), ("2", quota - CONTEXT - 300 * MIB), "refused and unloaded: {stdout}");
    let unload = op("module_unload")[0];
    assert_eq!((field(unload, "rc"), u(unload, "free")), ("0", quota - CONTEXT), "{stdout}");
    let libraries = op("library");
    assert_eq!((field(libraries[0], "rc"), field(libraries[0], "kernel_rc")), ("0", "0"), "{stdout}");
    assert_eq!(u(libraries[0], "free"), quota - CONTEXT - 300 * MIB, "{stdout}");
    assert_eq!((field(libraries[1], "rc"), u(libraries[1], "free")), ("2", quota - CONTEXT - 300 * MIB), "{stdout}");
    let unload = op("library_unload")[0];
    assert_eq!((field(unload, "rc"), u(unload, "free")), ("0", quota - CONTEXT), "{stdout}");
}

#[test]
fn memory_no_hook_saw_is_charged_by_reconciliation_and_the_next_allocation_refused() {
    // A kernel whose frame needs 4 KiB per thread: at its launch the driver grows the
    // context's stack for every resident thread (132 SMs × 2048 × 3 KiB more = 792 MiB), and no
    // call names that size. Reconciliation sees it in the driver's own per-process figure
    // (NVML), charges it as unhooked bytes at the next view, and the next allocation that does
    // not fit beside it is refused.
    let sim = Sim::with_64m_contexts();
    let quota = 1024 * MIB;
    let grown = 132 * 2048 * 3 * 1024;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "deep=4k", "info", "alloc=200m", "alloc=100m", "info"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let stdout = text(&bare.stdout);
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    assert_eq!((field(op("deep")[0], "rc"), u(op("deep")[0], "stack")), ("0", 4096), "{stdout}");
    assert_eq!(u(op("deep")[0], "total") - u(op("deep")[0], "free"), CONTEXT + grown, "simgpu took the stack: {stdout}");
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(ops), Duration::from_secs(30));
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    assert_eq!(u(op("info")[0], "free"), quota - CONTEXT - grown, "the view charges what the driver holds: {stdout}");
    let rcs: Vec<&str> = op("alloc").iter().map(|r| field(r, "rc")).collect();
    assert_eq!(rcs, ["2", "0"], "200 MiB does not fit beside the unhooked stack, 100 MiB does: {stdout}");
    assert_eq!(u(op("info")[1], "free"), quota - CONTEXT - grown - 100 * MIB, "{stdout}");
    // The tools show it apart: `vgpu ps --json` reads the region (the probe's slot is dead and
    // not yet reaped, so its figures are still there).
    let ps = run(sim.command(vgpu_tests::cargo_program("vgpu")).args(["ps", "--json"]).arg(sim.region()), Duration::from_secs(30));
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps --json is JSON");
    let device = &doc["regions"][0]["devices"][0];
    assert_eq!(
        (device["unhooked_bytes"].as_u64(), device["used_bytes"].as_u64()),
        (Some(grown), Some(CONTEXT + grown + 100 * MIB)),
        "{doc:#}"
    );
}

#[test]
fn a_green_context_is_charged_as_a_context_and_its_allocations_through_the_quota() {
    // CUDA 12.4's green contexts: split the device's SMs, make a descriptor, create the green
    // context, work in its CUcontext. Its creation is charged like a context's (64 MiB here),
    // allocations in it go through the quota, and destroying it gives its cost back.
    let sim = Sim::with_64m_contexts();
    let quota = 512 * MIB;
    let probe = build_c_helper("probe", false);
    let ops = ["init", "ctx", "green=16", "alloc=300m", "alloc=100m", "free", "green_destroy", "ctx", "info"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let stdout = text(&bare.stdout);
    let recs = records(&stdout, "op");
    let green = recs.iter().find(|r| field(r, "op") == "green").unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!((field(green, "rc"), u(green, "sms")), ("0", 16), "{stdout}");
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    let stdout = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{stdout}\n{}", text(&shimmed.stderr));
    let recs = records(&stdout, "op");
    let op = |name: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == name).collect() };
    let green = op("green")[0];
    assert_eq!((field(green, "rc"), u(green, "free")), ("0", quota - 2 * CONTEXT), "two contexts charged: {stdout}");
    let rcs: Vec<&str> = op("alloc").iter().map(|r| field(r, "rc")).collect();
    assert_eq!(rcs, ["0", "2"], "300 MiB fits beside two contexts, 100 MiB more does not: {stdout}");
    assert_eq!(field(op("green_destroy")[0], "rc"), "0", "{stdout}");
    assert_eq!(u(op("info")[0], "free"), quota - CONTEXT, "the green context's cost came back: {stdout}");
}
