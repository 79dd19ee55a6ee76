//! The shim's failure policy. A configuration value that does not parse, or an unusable
//! region file, gives one clear line on stderr naming the variable or the file, and then every
//! CUDA call fails with `CUDA_ERROR_INVALID_VALUE` and NVML's init with
//! `NVML_ERROR_INVALID_ARGUMENT` (fail closed: a typo must not lift a quota), while the process
//! itself runs on and exits with its own status. `CUDA_DISABLE_CONTROL=true`, or no limit at
//! all, is pure pass-through. A missing real driver is `CUDA_ERROR_NO_DEVICE` from `cuInit`,
//! never a crash.
use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use vgpu_tests::{Rec, Sim, build_c_helper, c_programs, field, records, run, shim_path, text};

const GIB: u64 = 1 << 30;

/// Hooked calls whose refusal is what failing closed means: initialisation, every allocation
/// path the probe reaches, the views and context creation.
const MUST_REFUSE: &[&str] = &[
    "cuInit",
    "cuMemGetInfo_v2",
    "cuDeviceTotalMem_v2",
    "cuDevicePrimaryCtxRetain",
    "cuCtxCreate_v2",
    "cuMemAlloc_v2",
    "cuMemAllocManaged",
    "cuMemAllocPitch_v2",
    "cuMemAllocAsync",
    "cuArrayCreate_v2",
];

/// (exit code, records, stdout, stderr) of a finished probe or example.
fn finish(cmd: &mut Command) -> (Option<i32>, Vec<Rec>, String, String) {
    let out: Output = run(cmd, Duration::from_secs(30));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    (out.status.code(), records(&stdout, "op"), stdout, stderr)
}

/// The rc of each `op=hooked` line, by function.
fn hooked_rcs(recs: &[Rec]) -> HashMap<String, String> {
    recs.iter().filter(|r| field(r, "op") == "hooked").map(|r| (field(r, "fn").to_string(), field(r, "rc").to_string())).collect()
}

/// Runs the probe with a bad configuration and checks the whole failure policy: one stderr
/// line containing each of `mention`, the must-refuse calls refused, NVML refused, the
/// process's own exit status. Returns the rc of every hooked call.
fn fails_closed(sim: &Sim, configure: impl Fn(&mut Command), mention: &[&str]) -> HashMap<String, String> {
    let probe = build_c_helper("probe", false);
    let mut cmd = sim.shimmed(&probe);
    cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "256m");
    configure(&mut cmd);
    let (code, recs, stdout, stderr) = finish(cmd.args(["hooked", "nvml", "exit=42"]));
    let what = format!("{mention:?}:\n{stdout}\n{stderr}");
    assert_eq!(code, Some(42), "the process exits with its own status, {what}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, {what}");
    assert!(lines[0].starts_with("vgpu: error: "), "{what}");
    for m in mention {
        assert!(lines[0].contains(m), "the line names {m:?}: {what}");
    }
    let rcs = hooked_rcs(&recs);
    for f in MUST_REFUSE {
        assert_eq!(rcs.get(*f).map(String::as_str), Some("1"), "{f} is refused with CUDA_ERROR_INVALID_VALUE, {what}");
    }
    let init: Vec<&Rec> = recs.iter().filter(|r| field(r, "op") == "nvml_init").collect();
    assert_eq!(field(init[0], "rc"), "2", "nvmlInit_v2: NVML_ERROR_INVALID_ARGUMENT, {what}");

    // A linked program stops at cuInit with its own error handling, not a crash.
    let mut cmd = sim.shimmed(c_programs().join("alloc_families"));
    cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "256m");
    configure(&mut cmd);
    let (code, _, stdout, stderr) = finish(&mut cmd);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("error step=cuInit rc=1 "), "{stdout}\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    rcs
}

#[test]
fn a_bad_configuration_value_fails_closed_with_one_line_naming_it() {
    let bad = [
        ("CUDA_DEVICE_MEMORY_LIMIT", "garbage"),
        ("CUDA_DEVICE_MEMORY_LIMIT", "-1g"),
        ("CUDA_DEVICE_MEMORY_LIMIT_0", "4x"),
        ("CUDA_DEVICE_MEMORY_LIMIT_X", "1g"),
        ("CUDA_DEVICE_SM_LIMIT", "150"),
        ("CUDA_DEVICE_SM_LIMIT", "half"),
        ("CUDA_VISIBLE_DEVICES", "0,0"),
        ("CUDA_VISIBLE_DEVICES", "GPU-not-a-uuid"),
        ("CUDA_DISABLE_CONTROL", "yes"),
        ("LIBCUDA_LOG_LEVEL", "9"),
    ];
    let sim = Sim::new();
    for (var, value) in bad {
        fails_closed(
            &sim,
            |c| {
                c.env(var, value);
            },
            &[var, value],
        );
    }
}

#[test]
fn every_hooked_call_fails_closed_under_a_bad_configuration() {
    let sim = Sim::new();
    let rcs = fails_closed(
        &sim,
        |c| {
            c.env("CUDA_DEVICE_MEMORY_LIMIT", "garbage");
        },
        &["CUDA_DEVICE_MEMORY_LIMIT"],
    );
    let forwarded: Vec<String> = rcs.iter().filter(|(_, rc)| rc.as_str() != "1").map(|(f, rc)| format!("{f} returned {rc}")).collect();
    assert!(forwarded.is_empty(), "hooked calls forwarded to the driver instead of refused: {forwarded:?}");
}

#[test]
fn an_unusable_region_file_fails_closed_with_one_line_naming_it() {
    let sim = Sim::new();
    let dir = sim.dir().to_path_buf();
    let target = dir.join("elsewhere");
    std::os::unix::fs::symlink(&target, dir.join("dangling")).expect("symlink");
    std::fs::write(dir.join("file"), b"").expect("write");
    std::os::unix::fs::symlink(dir.join("file"), dir.join("link")).expect("symlink");
    std::fs::create_dir(dir.join("a-directory")).expect("mkdir");
    std::fs::write(dir.join("not-a-region"), vec![0x5a; 8192]).expect("write");
    for (name, why) in [
        ("dangling", "symbolic link"),
        ("link", "symbolic link"),
        ("a-directory", "not a regular file"),
        ("not-a-region", "8192 bytes"),
        ("missing-dir/region", "No such file or directory"),
    ] {
        let path = dir.join(name);
        let shown = path.display().to_string();
        fails_closed(
            &sim,
            |c| {
                c.env("CUDA_DEVICE_MEMORY_SHARED_CACHE", &path);
            },
            &[shown.as_str(), why],
        );
    }
    assert!(!target.exists(), "a symlink's target is never created");
    assert_eq!(std::fs::read(dir.join("file")).expect("read"), b"", "never written through a link");
}

/// Runs the probe's view-and-allocate sequence; returns (info, total, alloc, nvml v1).
fn views(cmd: &mut Command) -> (Rec, Rec, Rec, Rec) {
    let (code, recs, stdout, stderr) = finish(cmd.args(["init", "ctx", "info", "total", "alloc=1g", "nvml", "freeall"]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let one = |op: &str| -> Rec { recs.iter().find(|r| field(r, "op") == op).cloned().unwrap_or_else(|| panic!("no op={op}: {stdout}")) };
    (one("info"), one("total"), one("alloc"), one("nvml"))
}

#[test]
fn disabled_control_or_no_limit_is_pure_pass_through() {
    let probe = build_c_helper("probe", false);
    for disable in [true, false] {
        let sim = Sim::new();
        let mut cmd = sim.shimmed(&probe);
        if disable {
            // A 256 MiB "quota" that must not apply.
            cmd.env("CUDA_DISABLE_CONTROL", "true").env("CUDA_DEVICE_MEMORY_LIMIT", "256m");
        }
        let (info, total, alloc, nvml) = views(&mut cmd);
        let physical = (16 * GIB).to_string();
        assert_eq!(field(&info, "total"), physical, "disable={disable}: {info:?}");
        assert_eq!(field(&total, "bytes"), physical, "{total:?}");
        assert_eq!(field(&alloc, "rc"), "0", "no OOM at the quota: {alloc:?}");
        assert_eq!(field(&nvml, "total"), physical, "{nvml:?}");
        assert!(!sim.region().exists(), "pass-through never creates the region");
    }
}

#[test]
fn a_missing_driver_is_no_device_not_a_crash() {
    let sim = Sim::new();
    let probe = build_c_helper("probe", false);
    let empty = sim.dir().join("no-libraries");
    std::fs::create_dir(&empty).expect("mkdir");
    // No libcuda anywhere: only the preloaded shim answers dlsym(RTLD_DEFAULT, "cuInit").
    for quota in [Some("256m"), None] {
        let mut cmd = sim.shimmed(&probe);
        if let Some(q) = quota {
            cmd.env("CUDA_DEVICE_MEMORY_LIMIT", q);
        }
        let (code, recs, stdout, stderr) =
            finish(cmd.env("LD_LIBRARY_PATH", &empty).args(["--lookup", "global", "init", "ctx", "info", "alloc=1m", "total", "exit=7"]));
        let what = format!("quota {quota:?}:\n{stdout}\n{stderr}");
        assert_eq!(code, Some(7), "{what}");
        let rc = |op: &str| field(recs.iter().find(|r| field(r, "op") == op).expect(op), "rc").to_string();
        assert_eq!(rc("init"), "100", "cuInit: CUDA_ERROR_NO_DEVICE, {what}");
        for op in ["ctx", "info", "alloc", "total"] {
            assert_eq!(rc(op), "3", "{op}: CUDA_ERROR_NOT_INITIALIZED, {what}");
        }
        assert!(stderr.contains("cannot load the real libcuda.so.1"), "{what}");
    }

    // simgpu is there, but VGPU_REAL_LIBCUDA points elsewhere.
    let shim = shim_path().display().to_string();
    for (real, says) in [
        ("/nonexistent/libcuda.so.1", "cannot load the real /nonexistent/libcuda.so.1"),
        ("libcuda.so.1", "expected an absolute path"),
        (shim.as_str(), "resolved to libvgpu itself"),
    ] {
        let (code, _, stdout, stderr) =
            finish(sim.shimmed(c_programs().join("alloc_families")).env("CUDA_DEVICE_MEMORY_LIMIT", "256m").env("VGPU_REAL_LIBCUDA", real));
        assert_eq!(code, Some(1), "{real}: {stdout}\n{stderr}");
        assert!(stdout.contains("error step=cuInit rc=100 "), "{real}: {stdout}");
        assert!(stderr.contains(says), "{real}: {stderr}");
        assert!(stderr.contains("VGPU_REAL_LIBCUDA") || !says.contains("absolute"), "{stderr}");
    }
}

/// Under a bad configuration the shim answers before the driver is reached: `cuMemMap`,
/// `cuMemUnmap` and NVML's memory queries, which once forwarded first and refused after (the
/// mapping took effect, then a refusal was reported). A spy stands in for the real libraries
/// and writes down every call it gets; the control run (pass-through) shows it does.
#[test]
fn under_a_bad_configuration_map_unmap_and_nvml_memory_reach_nothing_of_the_driver() {
    let sim = Sim::new();
    let spy = build_c_helper("spy_driver", true);
    let probe = build_c_helper("probe", false);
    let run_probe = |name: &str, configure: &dyn Fn(&mut Command)| {
        let log = sim.dir().join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = sim.shimmed(&probe);
        cmd.env("CUDA_DEVICE_MEMORY_LIMIT", "256m").env("VGPU_REAL_LIBCUDA", &spy).env("VGPU_REAL_LIBNVML", &spy).env("SPY_LOG", &log);
        configure(&mut cmd);
        let (code, recs, stdout, stderr) = finish(cmd.arg("unguarded"));
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let rcs: Vec<(String, String)> = recs
            .iter()
            .filter(|r| field(r, "op") == "unguarded")
            .map(|r| (field(r, "fn").to_string(), field(r, "rc").to_string()))
            .collect();
        assert_eq!(rcs.len(), 4, "{stdout}\n{stderr}");
        (rcs, std::fs::read_to_string(&log).unwrap_or_default())
    };
    let calls = ["cuMemMap", "cuMemUnmap", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2"];

    let (rcs, seen) = run_probe("control", &|c| {
        c.env("CUDA_DISABLE_CONTROL", "true");
    });
    assert!(rcs.iter().all(|(_, rc)| rc == "0"), "pass-through forwards to the spy: {rcs:?}");
    assert_eq!(seen.lines().collect::<Vec<_>>(), calls, "the spy sees every forwarded call");

    let (rcs, seen) = run_probe("bad", &|c| {
        c.env("CUDA_DEVICE_MEMORY_LIMIT", "garbage");
    });
    assert_eq!(seen, "", "a bad configuration must refuse before the driver is reached; the driver saw:\n{seen}");
    let want = [("cuMemMap", "1"), ("cuMemUnmap", "1"), ("nvmlDeviceGetMemoryInfo", "2"), ("nvmlDeviceGetMemoryInfo_v2", "2")];
    let want: Vec<(String, String)> = want.iter().map(|(f, rc)| (f.to_string(), rc.to_string())).collect();
    assert_eq!(rcs, want, "refused: CUDA_ERROR_INVALID_VALUE, NVML_ERROR_INVALID_ARGUMENT");
}
