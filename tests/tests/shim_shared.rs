//! Several processes of one container share one accounting region: together they cannot
//! exceed the quota, whatever the race; a SIGKILLed process's bytes come back to the others;
//! a forked child accounts for itself and its bytes go when it does.
use std::process::Stdio;
use std::time::{Duration, Instant};

use vgpu_tests::{Background, Rec, Sim, build_c_helper, field, records, run, text, u};

const MIB: u64 = 1 << 20;
const CONTEXT: u64 = 64 * MIB;

fn ops<'a>(recs: &'a [Rec], op: &str) -> Vec<&'a Rec> {
    recs.iter().filter(|r| field(r, "op") == op).collect()
}

/// NVML's `used` of device 0 from a probe process: the container's view under the shim
/// (`quota` set), simgpu's physical view without it.
fn nvml_used(sim: &Sim, quota: Option<&str>) -> u64 {
    let probe = build_c_helper("probe", false);
    let mut cmd = match quota {
        Some(q) => {
            let mut c = sim.shimmed(&probe);
            c.env("CUDA_DEVICE_MEMORY_LIMIT", q);
            c
        }
        None => sim.command(&probe),
    };
    let out = run(cmd.arg("nvml"), Duration::from_secs(30));
    let stdout = text(&out.stdout);
    let recs = records(&stdout, "op");
    let views = ops(&recs, "nvml");
    assert_eq!(views.len(), 2, "{stdout}\n{}", text(&out.stderr));
    assert_eq!(u(views[0], "used"), u(views[1], "used"), "v1 and v2 agree: {stdout}");
    u(views[0], "used")
}

#[test]
fn four_processes_cannot_jointly_exceed_the_quota() {
    // Each of 4 processes wants its 64 MiB context and 12 x 32 MiB (448 MiB, more than a
    // quarter of 1 GiB); they start allocating at the same moment.
    let sim = Sim::with_64m_contexts();
    let quota = 1024 * MIB;
    let probe = build_c_helper("probe", false);
    // The contexts are created one process at a time (a context created while another is
    // being created is mischarged: see contexts_are_charged_what_they_cost_...).
    let mut procs: Vec<Background> = Vec::new();
    for _ in 0..4 {
        let mut cmd = sim.shimmed(&probe);
        cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "1g")
            .args(["init", "ctx", "wait"])
            .args(std::iter::repeat_n("alloc=32m", 12))
            .args(["info", "wait", "freeall"])
            .stdin(Stdio::piped());
        let mut p = Background::spawn(&mut cmd);
        let ctx = p.wait_for("op=ctx", Duration::from_secs(30));
        assert!(ctx.contains("rc=0"), "{ctx}");
        procs.push(p);
    }
    for p in &mut procs {
        p.send_line("go");
    }
    let mut held = 4 * CONTEXT;
    let mut refused = 0;
    for p in &mut procs {
        p.wait_for("op=info", Duration::from_secs(30));
        let recs = records(p.stdout_so_far(), "op");
        for a in ops(&recs, "alloc") {
            match field(a, "rc") {
                "0" => held += u(a, "bytes"),
                "2" => refused += 1,
                rc => panic!("rc {rc}: {a:?}"),
            }
        }
    }
    let container = nvml_used(&sim, Some("1g"));
    let physical = nvml_used(&sim, None);
    for p in &mut procs {
        p.send_line("done");
    }
    for p in &mut procs {
        let (status, out, err) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{out}\n{err}");
    }
    assert!(held <= quota, "{held} bytes held under a {quota}-byte quota");
    assert!(refused > 0, "1792 MiB asked of 1 GiB, nothing refused");
    assert!(quota - held < 32 * MIB, "refusals only when a block did not fit: {held} of {quota} held");
    assert!(physical <= quota, "simgpu holds {physical} bytes for the container");
    assert_eq!(physical, held, "the device holds exactly what was granted");
    assert_eq!(container, physical, "the container's NVML view is what the device holds (contexts charged once each)");
}

#[test]
fn a_sigkilled_process_gives_its_memory_back() {
    let sim = Sim::with_64m_contexts();
    let probe = build_c_helper("probe", false);
    let shimmed = |ops: &[&str]| {
        let mut c = sim.shimmed(&probe);
        c.env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops).stdin(Stdio::piped());
        c
    };
    // A holds 400 MiB (464 MiB with its context) and is killed without a chance to free.
    let mut a = Background::spawn(&mut shimmed(&["init", "ctx", "alloc=400m", "wait"]));
    let line = a.wait_for("op=alloc", Duration::from_secs(30));
    assert!(line.contains("rc=0"), "{line}");
    let mut b = Background::spawn(&mut shimmed(&["init", "ctx", "alloc=300m", "wait", "alloc=300m", "info"]));
    let line = b.wait_for("op=alloc", Duration::from_secs(30));
    assert!(line.contains("rc=2"), "no room while A lives: {line}");

    let status = a.kill9();
    assert!(!status.success());
    let killed = Instant::now();
    // A process that starts now sees A's bytes gone (it reaps the dead on registering).
    assert_eq!(nvml_used(&sim, Some("512m")), CONTEXT, "only B's context is left");
    b.send_line("go");
    let line = b.wait_for("op=alloc", Duration::from_secs(30));
    let waited = killed.elapsed();
    assert!(line.contains("rc=0"), "A's 464 MiB came back: {line}");
    let info = b.wait_for("op=info", Duration::from_secs(30));
    let info = &records(&info, "op")[0];
    assert_eq!(u(info, "free"), 512 * MIB - CONTEXT - 300 * MIB, "{info:?}");
    assert!(waited < Duration::from_secs(1), "{waited:?} from SIGKILL to the allocation");
    let (status, out, err) = b.finish(Duration::from_secs(30));
    assert!(status.success(), "{out}\n{err}");
}

#[test]
fn a_forked_child_accounts_for_itself_and_its_bytes_go_with_it() {
    let sim = Sim::with_64m_contexts();
    let quota = 512 * MIB;
    let free0 = quota - CONTEXT - 100 * MIB;
    let probe = build_c_helper("probe", false);
    #[rustfmt::skip]
    let ops = [
        "init", "ctx", "alloc=100m",
        // A child that frees what it allocated.
        "fork", "info", "alloc=50m", "free", "exit=0",
        "info",
        // A child that exits holding 100 MiB.
        "fork", "alloc=100m", "exit=0",
        // What free said before the children: the parent's 100 MiB and context only.
        &format!("alloc={free0}"),
        "freeall", "info",
    ];
    let out = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let recs = records(&stdout, "op");
    let by = |who: &str, op: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "who") == who && field(r, "op") == op).collect() };
    let parent_allocs = by("parent", "alloc");
    assert_eq!(u(parent_allocs[0], "free"), free0, "{stdout}");

    // The first child sees the parent's usage, and its own comes and goes.
    let child_info = by("child", "info");
    assert_eq!(u(child_info[0], "free"), free0, "the child sees the container: {stdout}");
    let child_allocs = by("child", "alloc");
    assert_eq!((field(child_allocs[0], "rc"), u(child_allocs[0], "free")), ("0", free0 - 50 * MIB), "{stdout}");
    let child_frees = by("child", "free");
    assert_eq!(u(child_frees[0], "free"), free0, "{stdout}");
    let waits = by("parent", "wait");
    assert_eq!(waits.len(), 2, "{stdout}");
    for w in &waits {
        assert_eq!((field(w, "exited"), field(w, "status"), field(w, "signaled")), ("1", "0", "0"), "children exit normally: {stdout}");
    }
    assert_eq!(u(by("parent", "info")[0], "free"), free0, "{stdout}");

    // The second child's 100 MiB are gone once it has exited: the parent gets all of free0.
    assert_eq!((field(child_allocs[1], "rc"), u(child_allocs[1], "free")), ("0", free0 - 100 * MIB), "{stdout}");
    let last = parent_allocs[1];
    assert_eq!((field(last, "rc"), u(last, "free")), ("0", 0), "the exited child's bytes came back: {stdout}");
    let infos = by("parent", "info");
    assert_eq!(u(infos[1], "free"), quota - CONTEXT, "{stdout}");
}

/// One round of [`contexts_are_charged_what_they_cost_while_other_processes_allocate`]:
/// (what the container's NVML view says is used, what simgpu says).
fn context_round() -> (u64, u64) {
    let sim = Sim::with_64m_contexts();
    let probe = build_c_helper("probe", false);
    let spawn = |ops: Vec<String>| {
        let mut cmd = sim.shimmed(&probe);
        cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "8g").args(ops).stdin(Stdio::piped());
        Background::spawn(&mut cmd)
    };
    let words = |w: &[&str]| -> Vec<String> { w.iter().map(|s| s.to_string()).collect() };
    // Two processes allocate and free 1 MiB 400 times each, ending with 2 MiB held ...
    let mut allocators: Vec<Background> = (0..2)
        .map(|_| {
            let mut ops = words(&["init", "ctx", "wait"]);
            for _ in 0..400 {
                ops.extend(words(&["alloc=1m", "free"]));
            }
            ops.extend(words(&["alloc=2m", "info", "wait"]));
            spawn(ops)
        })
        .collect();
    // ... while 12 others create their contexts, all at once.
    let mut creators: Vec<Background> = (0..12).map(|_| spawn(words(&["init", "wait", "ctx", "wait"]))).collect();
    for p in creators.iter_mut() {
        p.wait_for("op=init", Duration::from_secs(30));
    }
    for p in allocators.iter_mut() {
        p.wait_for("op=ctx", Duration::from_secs(30));
    }
    for p in allocators.iter_mut().chain(creators.iter_mut()) {
        p.send_line("go");
    }
    for c in &mut creators {
        let line = c.wait_for("op=ctx", Duration::from_secs(30));
        assert!(line.contains("rc=0"), "{line}");
    }
    for a in &mut allocators {
        a.wait_for("op=info", Duration::from_secs(30));
    }
    let container = nvml_used(&sim, Some("8g"));
    let physical = nvml_used(&sim, None);
    for p in creators.iter_mut().chain(allocators.iter_mut()) {
        p.send_line("done");
        let (status, out, err) = p.finish(Duration::from_secs(30));
        assert!(status.success(), "{out}\n{err}");
    }
    assert_eq!(physical, 14 * CONTEXT + 4 * MIB, "simgpu's own figure");
    (container, physical)
}

#[test]
fn contexts_are_charged_what_they_cost_while_other_processes_allocate() {
    // The shim measures a context's cost as the device's `used` before and after creating it;
    // another process's context, allocation or free in that window must not change what it
    // charges. Charged too much, the container loses quota (allocations that fit are refused);
    // too little, the device holds more for it than its quota. The race depends on timing: a
    // few rounds make a miss unlikely.
    for round in 0..6 {
        let (container, physical) = context_round();
        assert_eq!(
            container,
            physical,
            "round {round}: region - device = {} MiB (contexts charged what others did meanwhile)",
            (container as i64 - physical as i64) / MIB as i64
        );
    }
}

/// A forked child of an SM-limited process whose launches took the fast path (which keeps the
/// parent's bucket) goes the whole way again: its launches are throttled like the parent's,
/// and neither process is harmed. The same program without a limit is the control.
#[test]
fn a_forked_child_of_a_throttled_process_is_throttled_too() {
    let sim = Sim::with_64m_contexts();
    let probe = build_c_helper("probe", false);
    #[rustfmt::skip]
    let ops_list = ["init", "ctx", "module=1k", "launch=10", "fork", "launch=40", "exit=0", "launch=40"];
    let ms = |limit: Option<&str>| -> (f64, f64, String) {
        let mut cmd = sim.shimmed(&probe);
        cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "1g").env("GPU_CORE_UTILIZATION_POLICY", "force");
        if let Some(l) = limit {
            cmd.env("CUDA_DEVICE_SM_LIMIT", l);
        }
        let out = run(cmd.args(ops_list), Duration::from_secs(60));
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        let recs = records(&stdout, "op");
        let launches = ops(&recs, "launch");
        assert_eq!(launches.len(), 3, "{stdout}");
        assert!(launches.iter().all(|r| field(r, "rc") == "0"), "{stdout}");
        let of = |who: &str| {
            launches
                .iter()
                .filter(|r| field(r, "who") == who && field(r, "n") == "40")
                .map(|r| field(r, "ms").parse::<f64>().unwrap())
                .next()
        };
        (of("child").expect("the child launched"), of("parent").expect("the parent launched again"), stdout)
    };
    let (free_child, free_parent, _) = ms(None);
    let (child, parent, stdout) = ms(Some("20"));
    eprintln!("fork throttle: child {child:.0} ms (free {free_child:.0}), parent {parent:.0} ms (free {free_parent:.0})");
    // 40 launches of 2 ms: 80 ms of GPU time, 400 ms at a 20 % share (less the 8 ms burst).
    assert!(child > 2.5 * free_child && child > 250.0, "child {child} ms throttled vs {free_child} ms free: {stdout}");
    assert!(parent > 2.5 * free_parent && parent > 250.0, "parent {parent} ms throttled vs {free_parent} ms free: {stdout}");
}
