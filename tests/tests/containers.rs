//! Tenants as Kubernetes runs them: each container in its own PID namespace with its own
//! `/proc` (`unshare --pid --fork --mount-proc`), on one simulated device whose driver knows
//! processes by their host PIDs (simgpu's `simgpud` tells a namespaced process its host PID,
//! as the kernel does for the real driver). CI runs as root, so these run there; elsewhere they
//! skip when `unshare` cannot make namespaces.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use vgpu_tests::{
    Background, Rec, Sim, artifacts_dir, build_c_helper, c_programs, cargo_program, descendants_of, field, in_container,
    namespaces_available, num, records, repo_root, run, text, u, with_file_lock,
};

const MIB: u64 = 1 << 20;
const CONTEXT: u64 = 64 * MIB;

/// A machine with 64 MiB contexts, its PID service running in this (the host's) namespace,
/// and the probe; `None` where PID namespaces cannot be made.
fn machine() -> Option<(Sim, Background, std::path::PathBuf)> {
    if !namespaces_available() {
        return None;
    }
    let sim = Sim::with_64m_contexts();
    let svc = sim.pid_service();
    Some((sim, svc, build_c_helper("probe", false)))
}

/// The `op=procs api=API` line of a probe's output.
fn procs<'a>(recs: &'a [Rec], api: &str) -> &'a Rec {
    recs.iter().find(|r| field(r, "op") == "procs" && field(r, "api") == api).unwrap_or_else(|| panic!("no op=procs api={api}: {recs:?}"))
}

/// `PID:VALUE,...` of a `list=` field, as pairs.
fn pairs(rec: &Rec) -> Vec<(u32, u64)> {
    let list = field(rec, "list");
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|p| {
            let (pid, v) = p.split_once(':').expect("PID:VALUE");
            (pid.parse().expect("pid"), v.parse().expect("value"))
        })
        .collect()
}

/// The host PIDs of the processes running `program` (by its file name) under `root`.
fn running(root: u32, program: &str) -> Vec<u32> {
    descendants_of(root)
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e.file_name().is_some_and(|n| n.to_string_lossy() == program))
        })
        .collect()
}

/// Waits until `n` processes run `program` under `root`; their host PIDs.
fn await_running(root: u32, program: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = running(root, program);
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "{n} × {program} never ran under {root} (found {found:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `vgpu ps --json REGION`: the region's processes.
fn region_processes(sim: &Sim, region: &std::path::Path) -> Vec<serde_json::Value> {
    let ps = run(sim.command(cargo_program("vgpu")).args(["ps", "--json"]).arg(region), Duration::from_secs(30));
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps --json is JSON");
    doc["regions"][0]["processes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn simgpu_lists_a_containers_process_by_its_host_pid_as_the_driver_does() {
    let Some((sim, _svc, probe)) = machine() else { return };
    let mut tenant =
        Background::spawn(&mut in_container(sim.command(&probe).args(["init", "ctx", "alloc=10m", "procs", "sleep=5000"]), false));
    tenant.wait_for("api=rates", Duration::from_secs(30));
    let host_pid = await_running(tenant.pid(), "probe", 1)[0];
    let recs = records(tenant.stdout_so_far(), "op");
    assert_eq!(field(procs(&recs, "self"), "pid"), "1", "the tenant is its namespace's first process");
    for api in ["v1", "v2", "v3"] {
        assert_eq!(pairs(procs(&recs, api)), [(host_pid, CONTEXT + 10 * MIB)], "NVML in the container lists the host PID ({api})");
    }
    // The host's NVML says the same.
    let host = run(sim.command(&probe).arg("procs"), Duration::from_secs(30));
    let recs = records(&text(&host.stdout), "op");
    assert_eq!(pairs(procs(&recs, "v3")), [(host_pid, CONTEXT + 10 * MIB)]);
}

#[test]
fn a_tenant_sees_its_own_processes_by_container_pid_with_vgpus_charge_and_no_neighbour() {
    let Some((sim, _svc, probe)) = machine() else { return };
    // The neighbour: another container, another region, holding 100 MiB.
    let mut b = sim.shimmed(&probe);
    b.env("CUDA_DEVICE_MEMORY_LIMIT", "2g").env("CUDA_DEVICE_MEMORY_SHARED_CACHE", sim.dir().join("b")).args([
        "init",
        "ctx",
        "alloc=100m",
        "sleep=8000",
    ]);
    let b = Background::spawn(&mut in_container(&b, false));
    let b_host = await_running(b.pid(), "probe", 1);
    // The tenant: a shell (its PID 1), a process holding 10 MiB, and one that looks.
    let script = format!("{p} init ctx alloc=10m sleep=6000 & sleep 1; {p} init ctx procs; wait", p = probe.display());
    let mut a = sim.shimmed("sh");
    a.env("CUDA_DEVICE_MEMORY_LIMIT", "1g").env("CUDA_DEVICE_MEMORY_SHARED_CACHE", sim.dir().join("a")).args(["-c", &script]);
    let mut a = Background::spawn(&mut in_container(&a, false));
    a.wait_for("api=rates", Duration::from_secs(30));
    let recs = records(a.stdout_so_far(), "op");
    let me: u32 = field(procs(&recs, "self"), "pid").parse().unwrap();
    for api in ["v1", "v2", "v3"] {
        let mut got = pairs(procs(&recs, api));
        got.sort_by_key(|p| p.1);
        assert_eq!(got.len(), 2, "{api}: the tenant's two CUDA processes and nobody else's: {got:?}");
        assert_eq!(got[0], (me, CONTEXT), "{api}: itself, by container PID, with its context's charge");
        assert_eq!(got[1].1, CONTEXT + 10 * MIB, "{api}: its sibling with vgpu's charge");
        assert!(got.iter().all(|p| p.0 < 100 && !b_host.contains(&p.0)), "{api}: container PIDs only: {got:?}");
    }
    assert_eq!((field(procs(&recs, "graphics"), "rc"), field(procs(&recs, "graphics"), "n")), ("0", "0"));
    // The region names each process by both PIDs; the host PIDs are the real ones.
    let a_host: HashSet<u32> = running(a.pid(), "probe").into_iter().collect();
    let listed = region_processes(&sim, &sim.dir().join("a"));
    let alive: Vec<&serde_json::Value> = listed.iter().filter(|p| p["state"] == "alive").collect();
    assert!(!alive.is_empty(), "{listed:?}");
    for p in alive {
        let host = p["host_pid"].as_u64().expect("a live process found its host PID") as u32;
        assert!(a_host.contains(&host), "host PID {host} is one of the tenant's probes {a_host:?}: {p}");
        assert_ne!(p["pid"].as_u64(), Some(u64::from(host)), "the container PID differs from the host PID");
    }
}

#[test]
fn memory_no_hook_saw_is_reconciled_for_a_process_in_a_pid_namespace() {
    // As in shim_quota's reconciliation test, in a container: the driver grows the context's
    // stack at a launch (132 SMs × 2048 threads × 3 KiB more), NVML lists that under the host
    // PID, and the shim, knowing its host PID, charges it and refuses what no longer fits.
    if !namespaces_available() {
        return;
    }
    let sim = Sim::with_64m_contexts();
    let _svc = sim.pid_service();
    let grown = 132 * 2048 * 3 * 1024;
    let probe = build_c_helper("probe", false);
    let mut c = sim.shimmed(&probe);
    c.env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(["init", "ctx", "deep=4k", "info", "alloc=200m", "alloc=100m"]);
    let out = run(&mut in_container(&c, false), Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let recs = records(&stdout, "op");
    let info = recs.iter().find(|r| field(r, "op") == "info").expect("info");
    assert_eq!(u(info, "free"), 1024 * MIB - CONTEXT - grown, "the view charges what the driver holds: {stdout}");
    let rcs: Vec<&str> = recs.iter().filter(|r| field(r, "op") == "alloc").map(|r| field(r, "rc")).collect();
    assert_eq!(rcs, ["2", "0"], "200 MiB does not fit beside the unhooked stack, 100 MiB does: {stdout}");
}

#[test]
fn sixty_four_containers_starting_at_once_each_find_their_own_host_pid() {
    // 64 processes, each in its own PID namespace (each is PID 1 there), create their first
    // context at the same moment in one region: every one must find its own host PID, none
    // another's, though NVML shows many new processes at once (probes tell them apart).
    let Some((sim, _svc, probe)) = machine() else { return };
    let tenants: Vec<Background> = (0..64)
        .map(|_| {
            let mut c = sim.shimmed(&probe);
            c.env("CUDA_DEVICE_MEMORY_LIMIT", "15g").args(["init", "ctx", "procs", "sleep=3000"]);
            Background::spawn(&mut in_container(&c, false))
        })
        .collect();
    let mut tenants = tenants;
    let mut host_of = Vec::new();
    for t in &mut tenants {
        t.wait_for("api=rates", Duration::from_secs(60));
        host_of.push(await_running(t.pid(), "probe", 1)[0]);
    }
    let listed = region_processes(&sim, &sim.region());
    let found: Vec<u32> =
        listed.iter().filter(|p| p["state"] == "alive").filter_map(|p| p["host_pid"].as_u64()).map(|p| p as u32).collect();
    let mut want = host_of.clone();
    want.sort_unstable();
    let mut got = found.clone();
    got.sort_unstable();
    assert_eq!(got, want, "every process found exactly its own host PID");
    // Each one's view lists itself alone?  No: all 64 share the region, so each lists all 64,
    // every one as PID 1 (each its own namespace's first process).
    for t in &tenants {
        let recs = records(t.stdout_so_far(), "op");
        let v3 = pairs(procs(&recs, "v3"));
        assert!(v3.iter().all(|p| p.0 == 1), "{v3:?}");
        assert!(v3.iter().any(|p| p.1 == CONTEXT), "{v3:?}");
    }
}

#[test]
fn a_fork_pool_and_a_spawn_pool_share_one_quota_in_a_container() {
    // DataLoader-style pools: 4 workers each take a context (64 MiB) and 300 MiB, all held at
    // once, against a 1 GiB quota: 4 × 64 + 2 × 300 fits, a third 300 MiB does not.
    if !namespaces_available() {
        return;
    }
    for method in ["fork", "spawn"] {
        let sim = Sim::with_64m_contexts();
        let _svc = sim.pid_service();
        let mut c = sim.shimmed("python3");
        c.env("CUDA_DEVICE_MEMORY_LIMIT", "1g").arg(repo_root().join("tests/python/fork_pool.py")).args([method, "4", "300"]);
        let out = run(&mut in_container(&c, false), Duration::from_secs(120));
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{method}: {stdout}{}", text(&out.stderr));
        let recs = records(&stdout, "worker");
        assert_eq!(recs.len(), 4, "{method}: {stdout}");
        assert!(recs.iter().all(|r| field(r, "ctx_rc") == "0"), "{method}: {stdout}");
        let ok = recs.iter().filter(|r| field(r, "alloc_rc") == "0").count();
        let refused = recs.iter().filter(|r| field(r, "alloc_rc") == "2").count();
        assert_eq!((ok, refused), (2, 2), "{method}: the pool shares one 1 GiB quota: {stdout}");
    }
}

#[test]
fn a_30_percent_container_holds_its_share_beside_an_uncapped_neighbour_in_pid_namespaces() {
    // The default utilisation policy, NVML sampled as a driver samples it, each tenant in its
    // own PID namespace: the controller must match NVML's host PIDs to its container's
    // processes, or it measures nothing. While they run, the capped tenant's NVML shows only
    // its own process, by its container PID, and its own share as the utilisation.
    if !namespaces_available() {
        return;
    }
    with_file_lock(&artifacts_dir().join(".sm-sampled.lock"), || {
        let sim = Sim::new();
        let _svc = sim.pid_service();
        let seconds = 6.0;
        let (launch_bin, probe) = (c_programs().join("launch"), build_c_helper("probe", false));
        let launch = |region: &str, limit: Option<&str>| {
            let mut c = sim.shimmed(&launch_bin);
            c.args(["--mode", "open", "--kernel", "spin_100us", "--duration", &seconds.to_string()]);
            c.env("CUDA_DEVICE_MEMORY_SHARED_CACHE", sim.dir().join(region));
            if let Some(l) = limit {
                c.env("CUDA_DEVICE_SM_LIMIT", l);
            }
            c
        };
        let m = sim.timeline();
        let t0 = simgpu::now_ns();
        let mut a = Background::spawn(&mut in_container(&launch("a", Some("30")), false));
        let mut b = Background::spawn(&mut in_container(&launch("b", None), false));
        let a_host = await_running(a.pid(), "launch", 1)[0];
        let b_host = await_running(b.pid(), "launch", 1)[0];
        // Three seconds in, a tool in the capped container looks (another process of its
        // region, in a namespace of its own, where the launch loop is PID 1 too).
        std::thread::sleep(Duration::from_secs(3));
        let mut look = sim.shimmed(&probe);
        look.env("CUDA_DEVICE_SM_LIMIT", "30").env("CUDA_DEVICE_MEMORY_SHARED_CACHE", sim.dir().join("a")).arg("procs");
        let seen = run(&mut in_container(&look, false), Duration::from_secs(30));
        let seen_out = text(&seen.stdout);
        let (sa, oa, ea) = a.finish(Duration::from_secs(60));
        let (sb, ob, eb) = b.finish(Duration::from_secs(60));
        assert!(sa.success() && sb.success(), "{oa}{ea}{ob}{eb}");
        let t1 = simgpu::now_ns();
        for o in [&oa, &ob] {
            let rec = records(o, "mode");
            assert!(rec.len() == 1 && num(&rec[0], "rc") == 0.0, "{o}");
        }
        // The steady part: 2 s after the start to 0.2 s before the end.
        let (from, to) = (t0 + 2_000_000_000, (t0 + (seconds * 1e9) as u64).min(t1) - 200_000_000);
        let share = |pid| 100.0 * m.busy_between(0, from, to, Some(pid)) as f64 / (to - from) as f64;
        let (sa, sb) = (share(a_host), share(b_host));
        println!("capped {sa:.1} %, uncapped {sb:.1} % (host PIDs {a_host}, {b_host})");
        assert!((sa - 30.0).abs() <= 5.0, "the 30 % container took {sa:.1} % (± 5 points)");
        assert!(sb > 55.0, "the uncapped neighbour took only {sb:.1} %");
        let recs = records(&seen_out, "op");
        let util = pairs(procs(&recs, "util"));
        assert!(!util.is_empty() && util.iter().all(|p| p.0 == 1), "only the tenant's launch loop, as PID 1: {seen_out}");
        let gpu = u(procs(&recs, "rates"), "gpu");
        assert!((15..=45).contains(&gpu), "the tenant's utilisation is its own share, not the device's: {seen_out}");
    });
}

#[test]
fn without_the_pid_service_a_namespaced_process_says_so_once_and_still_runs() {
    // simgpu's stated fallback: no simgpud, a process outside the machine's namespace is
    // listed by its own PID (a real driver would not), said once on stderr.
    if !namespaces_available() {
        return;
    }
    let sim = Sim::with_64m_contexts();
    // Boot the machine in this namespace first (the state file records it).
    let _ = run(sim.command(build_c_helper("probe", false)).args(["init"]), Duration::from_secs(30));
    let probe = build_c_helper("probe", false);
    let out = run(&mut in_container(sim.command(&probe).args(["init", "ctx", "procs"]), false), Duration::from_secs(30));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stderr.matches("simgpud").count(), 1, "one line naming the fix: {stderr}");
    let recs = records(&stdout, "op");
    assert_eq!(pairs(procs(&recs, "v3")), [(1, CONTEXT)], "{stdout}");
}

#[test]
fn a_user_namespace_tenant_without_real_root_finds_its_host_pid() {
    // A rootless runtime: the tenant is root only in its own user namespace.
    let Some((sim, _svc, probe)) = machine() else { return };
    let mut c = sim.shimmed(&probe);
    c.env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(["init", "ctx", "alloc=10m", "procs", "sleep=2000"]);
    let mut t = Background::spawn(&mut in_container(&c, true));
    t.wait_for("api=rates", Duration::from_secs(30));
    let host = await_running(t.pid(), "probe", 1)[0];
    let recs = records(t.stdout_so_far(), "op");
    assert_eq!(pairs(procs(&recs, "v3")), [(1, CONTEXT + 10 * MIB)], "its own view, by container PID");
    let listed = region_processes(&sim, &sim.region());
    assert!(listed.iter().any(|p| p["host_pid"].as_u64() == Some(u64::from(host))), "{listed:?}");
}

#[test]
fn a_container_restarted_with_a_new_quota_adopts_its_region_and_the_dead_ones_bytes_go() {
    // The container's only process is killed (SIGKILL, the namespace with it) holding 300 MiB;
    // the container restarts on the same region path with a larger quota: the newcomer adopts
    // the region, under its own quota, with the dead process's bytes given back.
    let Some((sim, _svc, probe)) = machine() else { return };
    let mut first = sim.shimmed(&probe);
    first.env("CUDA_DEVICE_MEMORY_LIMIT", "1g").args(["init", "ctx", "alloc=300m", "info", "sleep=30000"]);
    let mut first = Background::spawn(&mut in_container(&first, false));
    first.wait_for("op=info", Duration::from_secs(30));
    first.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running(first.pid(), "probe").is_empty() || region_processes(&sim, &sim.region()).iter().any(|p| p["state"] == "alive") {
        assert!(Instant::now() < deadline, "the killed container's process is gone");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = sim.shimmed(&probe);
    second.env("CUDA_DEVICE_MEMORY_LIMIT", "2g").args(["init", "ctx", "info"]);
    let out = run(&mut in_container(&second, false), Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let recs = records(&stdout, "op");
    let info = recs.iter().find(|r| field(r, "op") == "info").expect("info");
    assert_eq!((u(info, "total"), u(info, "free")), (2048 * MIB, 2048 * MIB - CONTEXT), "{stdout}");
}

#[test]
fn a_process_that_cannot_find_its_host_pid_says_so_once_and_still_enforces_its_quota() {
    // No NVML to read (a broken driver install): the shim cannot tell its host PID. It says so
    // once, however many contexts it creates, and the quota still holds on what the hooks
    // charge.
    let Some((sim, _svc, probe)) = machine() else { return };
    let mut c = sim.shimmed(&probe);
    c.env("VGPU_REAL_LIBNVML", "/nonexistent/libnvidia-ml.so.1")
        .env("CUDA_DEVICE_MEMORY_LIMIT", "1g")
        .env("CUDA_DEVICE_SM_LIMIT", "50")
        .args(["init", "ctx", "alloc=600m", "alloc=600m", "info", "release", "ctx", "release", "ctx"]);
    let out = run(&mut in_container(&c, false), Duration::from_secs(30));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stderr.matches("cannot tell this process's host PID").count(), 1, "said once: {stderr}");
    let recs = records(&stdout, "op");
    let allocs: Vec<&str> = recs.iter().filter(|r| field(r, "op") == "alloc").map(|r| field(r, "rc")).collect();
    assert_eq!(allocs, ["0", "2"], "the quota holds: {stdout}");
    let info = recs.iter().find(|r| field(r, "op") == "info").expect("info");
    assert_eq!(u(info, "total"), 1024 * MIB, "{stdout}");
}
