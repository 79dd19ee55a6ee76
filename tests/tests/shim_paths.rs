//! Every way a program reaches the driver ends in the shim's hooks: linked symbols, `dlopen` +
//! `dlsym(handle)`, `dlsym(RTLD_DEFAULT)`, and `cuGetProcAddress_v2` with the default and the
//! per-thread-default-stream flags, each handing out exactly the ABI variant the driver would
//! (`_v2`, `_ptsz`, ...). A second `LD_PRELOAD` interposer, loaded after the shim or before it,
//! still gets correct `dlsym(RTLD_NEXT)` answers: no recursion, no crash, quota enforced.
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vgpu_tests::{Rec, Sim, build_c_helper, c_programs, field, records, run, shim_path, text};

const MIB: u64 = 1 << 20;

/// Functions the shim must intercept, by the base name the example programs resolve.
const MUST_HOOK: &[&str] = &[
    "cuGetProcAddress",
    "cuInit",
    "cuDeviceTotalMem",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease",
    "cuCtxCreate",
    "cuCtxDestroy",
    "cuMemGetInfo",
    "cuMemAlloc",
    "cuMemAllocPitch",
    "cuMemAllocManaged",
    "cuMemFree",
    "cuMemAllocAsync",
    "cuMemFreeAsync",
    "cuMemAllocFromPoolAsync",
    "cuMemCreate",
    "cuMemRelease",
    "cuArrayCreate",
    "cuArray3DCreate",
    "cuArrayDestroy",
    "cuMipmappedArrayCreate",
    "cuMipmappedArrayDestroy",
];

/// The dynamic symbols `lib` defines (`nm -D --defined-only`).
fn exports(lib: &Path) -> HashSet<String> {
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(lib).output().expect("run nm (binutils)");
    assert!(out.status.success(), "nm {}: {}", lib.display(), text(&out.stderr));
    text(&out.stdout).lines().filter_map(|l| l.split_whitespace().nth(2)).map(|s| s.split('@').next().unwrap_or(s).to_string()).collect()
}

/// `resolved fn=<base> at=<file>!<symbol>` lines of an example program, by base name.
fn resolved(stdout: &str) -> BTreeMap<String, (String, String)> {
    let recs: Vec<Rec> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("resolved "))
        .map(|l| l.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .collect();
    assert!(!recs.is_empty(), "no `resolved` lines in:\n{stdout}");
    recs.iter()
        .map(|r| {
            let (file, sym) = field(r, "at").split_once('!').unwrap_or_else(|| panic!("bad at= in {r:?}"));
            (field(r, "fn").to_string(), (file.to_string(), sym.to_string()))
        })
        .collect()
}

fn alloc_rcs(stdout: &str, family: &str) -> Vec<String> {
    records(stdout, "family")
        .iter()
        .filter(|r| field(r, "family") == family && field(r, "op") == "alloc")
        .map(|r| field(r, "rc").to_string())
        .collect()
}

#[test]
fn every_call_path_and_flag_reaches_the_hooks_with_the_drivers_abi_variant() {
    let ours = exports(&shim_path());
    let sim = Sim::with_64m_contexts();
    // The last two: simgpu's cuGetProcAddress answers with addresses that are not its exports
    // (SIMGPU_PROC_ADDRESS=private, as a driver or an injected profiler may): the hooks must
    // be found by name, version and flags instead of by address.
    let configs = [
        ("alloc_families", "linked", false, false),
        ("alloc_families", "linked", true, false),
        ("alloc_families_nolink", "dlopen", false, false),
        ("alloc_families_nolink", "dlopen", true, false),
        ("alloc_families_nolink", "gpa", false, false),
        ("alloc_families_nolink", "gpa", true, false),
        ("alloc_families_nolink", "gpa", false, true),
        ("alloc_families_nolink", "gpa", true, true),
    ];
    for (program, path, ptsz, private) in configs {
        let what = format!("--path {path}{}{}", if ptsz { " --ptsz" } else { "" }, if private { " (private addresses)" } else { "" });
        let args = |c: &mut Command| {
            // 320 MiB: the context and two 100 MiB blocks fit, the third does not.
            c.args(["--path", path, "--family", "all", "--size", "100m", "--hold", "3"]).args(["--no-copy", "--resolve-all"]);
            if ptsz {
                c.arg("--ptsz");
            }
        };
        let program = c_programs().join(program);

        let mut plain = sim.command(&program);
        args(&mut plain);
        let out = run(&mut plain, Duration::from_secs(30));
        let plain_out = text(&out.stdout);
        assert!(out.status.success(), "{what} without the shim:\n{plain_out}");
        assert!(plain_out.contains("resolver=libcuda.so.1!cuMemAlloc_v2"), "{what}: {plain_out}");
        let driver = resolved(&plain_out);

        let mut shimmed = sim.shimmed(&program);
        shimmed.env("CUDA_DEVICE_MEMORY_LIMIT", "320m");
        if private {
            shimmed.env("SIMGPU_PROC_ADDRESS", "private");
        }
        args(&mut shimmed);
        let out = run(&mut shimmed, Duration::from_secs(30));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("resolver=libvgpu.so!cuMemAlloc_v2"), "{what}: {stdout}");
        let hooked = resolved(&stdout);
        assert_eq!(hooked.keys().collect::<Vec<_>>(), driver.keys().collect::<Vec<_>>(), "{what}");
        for (base, (file, sym)) in &hooked {
            let (driver_file, driver_sym) = &driver[base];
            assert_eq!(driver_file, "libcuda.so.1", "{what}: {base} without the shim");
            if !ours.contains(driver_sym) && private {
                continue; // the driver's own private address: no export names it
            }
            assert_eq!(sym, driver_sym, "{what}: {base} must be the ABI variant the driver hands out");
            let want = if ours.contains(sym) { "libvgpu.so" } else { "libcuda.so.1" };
            assert_eq!(file, want, "{what}: {base} resolved to {file}!{sym}");
        }
        for base in MUST_HOOK {
            assert_eq!(hooked[*base].0, "libvgpu.so", "{what}: {base} is not hooked");
        }
        for family in vgpu_tests::ALLOC_FAMILIES {
            assert_eq!(alloc_rcs(&stdout, family), ["0", "0", "2"], "{what}: {family} over the quota through this path:\n{stdout}");
        }
    }
}

#[test]
fn dlsym_rtld_default_and_by_handle_reach_the_hooks() {
    let ours = exports(&shim_path());
    let probe = build_c_helper("probe", false);
    let sim = Sim::with_64m_contexts();
    for lookup in ["default", "handle"] {
        let out = run(
            sim.shimmed(&probe)
                .env("CUDA_DEVICE_MEMORY_LIMIT", "512m")
                .args(["--lookup", lookup, "resolve", "init", "ctx", "total"])
                .args(["alloc=200m", "alloc=200m", "alloc=200m", "freeall", "info"]),
            Duration::from_secs(30),
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{lookup}: {stdout}\n{}", text(&out.stderr));
        let recs = records(&stdout, "op");
        for r in recs.iter().filter(|r| field(r, "op") == "resolved") {
            let name = field(r, "fn");
            let want = if ours.contains(name) { "libvgpu.so" } else { "libcuda.so.1" };
            assert_eq!(field(r, "at"), format!("{want}!{name}"), "dlsym({lookup}) of {name}");
        }
        let ops = |op: &str| -> Vec<&Rec> { recs.iter().filter(|r| field(r, "op") == op).collect() };
        assert_eq!(field(ops("total")[0], "bytes"), (512 * MIB).to_string());
        let rcs: Vec<&str> = ops("alloc").iter().map(|r| field(r, "rc")).collect();
        assert_eq!(rcs, ["0", "0", "2"], "dlsym({lookup}): {stdout}");
        assert_eq!(field(ops("info")[0], "free"), (448 * MIB).to_string(), "{stdout}");
    }
}

#[test]
fn cu_get_proc_address_answers_not_found_with_null_with_the_shim_as_without() {
    let probe = build_c_helper("probe", false);
    let sim = Sim::with_64m_contexts();
    let ops = ["init", "gpa=cuMemAlloc", "gpa=cuNoSuchFunction", "gpa=cuMemAlloc_v2", "gpa=cuMemAllocAsync@11000"];
    let bare = run(sim.command(&probe).args(ops), Duration::from_secs(30));
    let shimmed = run(sim.shimmed(&probe).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args(ops), Duration::from_secs(30));
    for (what, out, lib) in [("without the shim", &bare, "libcuda.so.1"), ("with the shim", &shimmed, "libvgpu.so")] {
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{what}: {stdout}\n{}", text(&out.stderr));
        let recs = records(&stdout, "op");
        let gpa: Vec<(&str, &str, &str)> =
            recs.iter().filter(|r| field(r, "op") == "gpa").map(|r| (field(r, "rc"), field(r, "status"), field(r, "pfn"))).collect();
        let found = format!("{lib}!cuMemAlloc_v2");
        // CUDA 12 ABI: success, NULL, and the reason in symbolStatus (1 not found, 2 version).
        let want = [("0", "0", found.as_str()), ("0", "1", "NULL"), ("0", "1", "NULL"), ("0", "2", "NULL")];
        assert_eq!(gpa, want, "{what}: {stdout}");
    }
}

/// Output lines of the interposer (`interposer: key=value ...`) on stderr.
fn interposer_events(stderr: &str) -> Vec<Rec> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("interposer: "))
        .map(|l| l.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .collect()
}

#[test]
fn an_interposer_preloaded_after_the_shim_gets_correct_rtld_next_answers() {
    let interposer = build_c_helper("interposer", true);
    let probe = build_c_helper("probe", false);
    let sim = Sim::with_64m_contexts();
    let preload = format!("{} {}", shim_path().display(), interposer.display());
    let out = run(
        sim.shimmed(&probe)
            .env("LD_PRELOAD", &preload)
            .env("CUDA_DEVICE_MEMORY_LIMIT", "512m")
            .args(["--lookup", "default", "puts", "init", "ctx"])
            .args(["alloc=300m", "alloc=300m", "puts", "freeall", "exit=0"]),
        Duration::from_secs(30),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{}: {stdout}\n{stderr}", out.status);
    assert!(!stderr.contains("RECURSION"), "{stderr}");
    let events = interposer_events(&stderr);
    let load =
        events.iter().find(|e| e.get("event").map(String::as_str) == Some("load")).unwrap_or_else(|| panic!("no load line: {stderr}"));
    // Asked in its constructor, before the shim has looked up libc's dlsym itself.
    assert_eq!(field(load, "next_puts"), "libc.so.6!puts", "{stderr}");
    assert_eq!(field(load, "next_cuMemAlloc_v2"), "NULL", "after the interposer comes libc; libcuda is not loaded yet: {stderr}");
    let unload =
        events.iter().find(|e| e.get("event").map(String::as_str) == Some("unload")).unwrap_or_else(|| panic!("no unload line: {stderr}"));
    assert_eq!(field(unload, "puts_calls"), "2", "both puts went through it: {stderr}");
    assert_eq!(stdout.matches("op=puts who=parent ok=1").count(), 2, "{stdout}");
    let rcs: Vec<String> =
        records(&stdout, "op").iter().filter(|r| field(r, "op") == "alloc").map(|r| field(r, "rc").to_string()).collect();
    assert_eq!(rcs, ["0", "2"], "{stdout}");

    // A linked program: the interposer's RTLD_NEXT for a driver symbol is the driver itself.
    let (stdout, stderr) = two_300m_allocations(&sim, &preload);
    assert!(!stderr.contains("RECURSION"), "{stderr}");
    assert!(stderr.contains("next_cuMemAlloc_v2=libcuda.so.1!cuMemAlloc_v2"), "{stderr}");
    assert!(stdout.contains("resolver=libvgpu.so!cuMemAlloc_v2"), "{stdout}");
    assert_eq!(alloc_rcs(&stdout, "cuMemAlloc_v2"), ["0", "2"], "{stdout}");
}

/// The linked `alloc_families` with `LD_PRELOAD=preload` under a 512 MiB quota, asking for
/// 300 MiB twice (the second must be refused): (stdout, stderr).
fn two_300m_allocations(sim: &Sim, preload: &str) -> (String, String) {
    let out = run(
        sim.shimmed(c_programs().join("alloc_families")).env("LD_PRELOAD", preload).env("CUDA_DEVICE_MEMORY_LIMIT", "512m").args([
            "--family",
            "cuMemAlloc_v2",
            "--size",
            "300m",
            "--hold",
            "2",
            "--no-copy",
        ]),
        Duration::from_secs(30),
    );
    (text(&out.stdout), text(&out.stderr))
}

#[test]
fn an_interposer_preloaded_before_the_shim_wraps_the_hooks() {
    let interposer = build_c_helper("interposer", true);
    let probe = build_c_helper("probe", false);
    let sim = Sim::with_64m_contexts();
    let preload = format!("{} {}", interposer.display(), shim_path().display());

    // Linked: the program calls the interposer, whose RTLD_NEXT is the shim's hook.
    let (stdout, stderr) = two_300m_allocations(&sim, &preload);
    assert!(!stderr.contains("RECURSION"), "{stderr}");
    assert!(stdout.contains("resolver=libinterposer.so!cuMemAlloc_v2"), "{stdout}");
    assert!(stderr.contains("next_cuMemAlloc_v2=libvgpu.so!cuMemAlloc_v2"), "{stderr}");
    assert_eq!(alloc_rcs(&stdout, "cuMemAlloc_v2"), ["0", "2"], "{stdout}");
    let wrapped: Vec<String> = interposer_events(&stderr)
        .iter()
        .filter(|e| e.get("event").map(String::as_str) == Some("cuMemAlloc_v2"))
        .map(|e| field(e, "rc").to_string())
        .collect();
    assert_eq!(wrapped, ["0", "2"], "the interposer saw the shim's answers: {stderr}");

    // By handle and through RTLD_DEFAULT the chain is the same: what a linked call reaches.
    for lookup in ["handle", "default"] {
        let out = run(
            sim.shimmed(&probe)
                .env("LD_PRELOAD", &preload)
                .env("CUDA_DEVICE_MEMORY_LIMIT", "512m")
                .args(["--lookup", lookup, "resolve", "init", "ctx", "alloc=300m"])
                .args(["alloc=300m", "puts", "freeall"]),
            Duration::from_secs(30),
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{lookup}: {stdout}\n{stderr}");
        assert!(!stderr.contains("RECURSION"), "{stderr}");
        assert!(stdout.contains("fn=cuMemAlloc_v2 at=libinterposer.so!cuMemAlloc_v2"), "{lookup}: {stdout}");
        let rcs: Vec<String> =
            records(&stdout, "op").iter().filter(|r| field(r, "op") == "alloc").map(|r| field(r, "rc").to_string()).collect();
        assert_eq!(rcs, ["0", "2"], "{lookup}: {stdout}");
    }
}
