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

/// `vgpu run` with its runtime directory in `xdg`, running `sh -c script` in the background.
/// The forwarded signals start at their defaults: a test run started as a background job of a
/// non-interactive shell inherits SIGINT and SIGQUIT ignored, under `nohup` SIGHUP, and a shell
/// cannot trap a signal ignored on entry.
fn run_in_background(sim: &Sim, xdg: &std::path::Path, script: &str) -> vgpu_tests::Background {
    use std::os::unix::process::CommandExt;
    let vgpu = cargo_program("vgpu");
    let mut cmd = sim.command(&vgpu);
    cmd.env("XDG_RUNTIME_DIR", xdg).args(["run", "--sim", "--memory", "1g", "--", "sh", "-c", script]);
    // SAFETY: signal(2) is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    vgpu_tests::Background::spawn(&mut cmd)
}

/// Regions left in `xdg`'s runtime directory.
fn regions_left(xdg: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(xdg.join("vgpu"))
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".region")).collect()
        })
        .unwrap_or_default()
}

#[test]
fn vgpu_run_forwards_term_and_int_to_its_command_and_removes_its_region() {
    let sim = Sim::new();
    for (signal, code) in [(libc::SIGTERM, 7), (libc::SIGINT, 8), (libc::SIGHUP, 9)] {
        let xdg = sim.dir().join(format!("xdg-{signal}"));
        std::fs::create_dir_all(&xdg).unwrap();
        let script = format!("trap 'echo got-signal; exit {code}' {signal}; echo ready; while :; do sleep 0.05; done");
        let mut bg = run_in_background(&sim, &xdg, &script);
        bg.wait_for("ready", Duration::from_secs(30));
        // SAFETY: signalling the vgpu process this test started.
        unsafe { libc::kill(bg.pid() as libc::pid_t, signal) };
        let (status, stdout, stderr) = bg.finish(Duration::from_secs(30));
        assert_eq!(status.code(), Some(code), "signal {signal}: the command's own exit status\n{stdout}\n{stderr}");
        assert!(stdout.contains("got-signal"), "signal {signal} reached the command:\n{stdout}");
        assert_eq!(regions_left(&xdg), Vec::<String>::new(), "the run's region is removed");
    }
}

#[test]
fn the_command_dies_with_a_killed_vgpu_run() {
    let sim = Sim::new();
    let xdg = sim.dir().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let mut bg = run_in_background(&sim, &xdg, "echo pid=$$; exec sleep 77");
    let line = bg.wait_for("pid=", Duration::from_secs(30));
    let pid: i32 = line.lines().find_map(|l| l.strip_prefix("pid=")).and_then(|p| p.trim().parse().ok()).expect("the command's pid");
    bg.kill9();
    // The death signal arrives at once; poll for the process to be gone (not a timing bound:
    // the limit only ends a test that failed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            break; // dead, waiting for its new parent to reap it
        }
        assert!(std::time::Instant::now() < deadline, "the command (pid {pid}) outlived vgpu run's SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vgpu_run_refuses_an_sm_share_outside_1_to_100() {
    let sim = Sim::new();
    for bad in ["0", "101", "30%", "x"] {
        let out = run(sim.command(cargo_program("vgpu")).args(["run", "--sim", "--sm", bad, "--", "true"]), Duration::from_secs(30));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--sm {bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("--sm"), "{stderr}");
    }
}

#[test]
fn no_process_of_the_command_outlives_vgpu_run_killed_or_signalled_and_its_region_goes() {
    // The command is a shell that starts a CUDA process (which makes the region) and a
    // grandchild that ignores TERM, then waits. Whether `vgpu run` is SIGKILLed or sent TERM
    // (which the shell handles by exiting), nothing of the command is left afterwards and the
    // region is removed.
    let sim = Sim::new();
    let probe = vgpu_tests::build_c_helper("probe", false);
    for how in [libc::SIGKILL, libc::SIGTERM] {
        let xdg = sim.dir().join(format!("xdg-all-{how}"));
        std::fs::create_dir_all(&xdg).unwrap();
        let script = format!(
            "{} init ctx alloc=10m sleep=60000 & sh -c 'trap \"\" TERM; exec sleep 300' & trap 'exit 5' TERM; echo ready; wait",
            probe.display()
        );
        let mut bg = run_in_background(&sim, &xdg, &script);
        bg.wait_for("ready", Duration::from_secs(30));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // vgpu, its keeper, the shell, the probe, the inner shell's sleep.
        let mut all = vgpu_tests::descendants_of(bg.pid());
        while regions_left(&xdg).is_empty() || all.len() < 4 {
            assert!(std::time::Instant::now() < deadline, "the command never started its processes: {all:?}");
            std::thread::sleep(Duration::from_millis(20));
            all = vgpu_tests::descendants_of(bg.pid());
        }
        if how == libc::SIGKILL {
            bg.kill9();
        } else {
            // SAFETY: signalling the vgpu process this test started.
            unsafe { libc::kill(bg.pid() as libc::pid_t, how) };
            let (status, stdout, stderr) = bg.finish(Duration::from_secs(30));
            assert_eq!(status.code(), Some(5), "the shell's own exit status:\n{stdout}\n{stderr}");
        }
        let alive = |pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
        };
        while all.iter().any(alive) || !regions_left(&xdg).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "signal {how}: still alive {:?}, regions left {:?}",
                all.iter().filter(|p| alive(p)).collect::<Vec<_>>(),
                regions_left(&xdg)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
