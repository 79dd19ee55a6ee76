//! The release tarball, end to end: `tools/release.sh` builds it (against glibc 2.28 with
//! cargo-zigbuild and PyPI's zig, tools installed under `target/tools` on first use), the tests
//! unpack it into a temporary directory and
//!
//! * run `bin/vgpu demo --sim` from there with a clean environment (nothing of `target/` on
//!   any path), which must find its library and simgpu through `../lib` and show both
//!   tenants refused at their quotas;
//! * check every shipped ELF file needs no glibc newer than 2.28 (`tools/glibc-floor.sh`),
//!   and that the check does reject a newer floor;
//! * check the layout, the symbolic links, the checksums and the install note.
//!
//! A cold run (no `target/tools`) compiles cargo-zigbuild and downloads zig: 2.5 minutes or more
//! on two cores; later runs rebuild only what changed. Without crates.io or PyPI the tests
//! print `SKIPPED: <reason>` and pass, unless `VGPU_REQUIRE_PYTHON=1` (CI).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vgpu_tests::{artifacts_dir, or_skip, repo_root, run, text, with_file_lock};

/// The glibc every shipped file must load on (UBI 8).
const GLIBC_FLOOR: &str = "2.28";

/// The unpacked release: `<tmp>/vgpu-<version>`.
struct Unpacked {
    root: PathBuf,
    tarball: PathBuf,
    version: String,
}

fn workspace_version() -> String {
    let toml = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("read Cargo.toml");
    let package = toml.split("[workspace.package]").nth(1).expect("a [workspace.package] table");
    let line = package.lines().find(|l| l.trim_start().starts_with("version")).expect("a version");
    line.split('"').nth(1).expect("a quoted version").to_string()
}

/// Runs tools/release.sh once per test process (and one at a time across processes) and
/// unpacks its tarball. `Err` only when its tools cannot be installed here (exit status 3);
/// any other failure panics.
fn build_and_unpack() -> Result<Unpacked, String> {
    let repo = repo_root();
    let out = with_file_lock(&artifacts_dir().join(".release.lock"), || {
        let mut cmd = Command::new("bash");
        cmd.arg(repo.join("tools/release.sh")).current_dir(&repo);
        // cargo test puts target/ on the library path; the build must not see it.
        cmd.env_remove("LD_LIBRARY_PATH").env_remove("LD_PRELOAD").env_remove("CARGO_TARGET_DIR");
        run(&mut cmd, Duration::from_secs(600))
    });
    let stderr = text(&out.stderr);
    if out.status.code() == Some(3) {
        let why = stderr.lines().rev().find(|l| l.starts_with("tools/release.sh:")).unwrap_or("a tool is missing");
        return Err(why.to_string());
    }
    assert!(out.status.success(), "tools/release.sh failed ({}):\n{stderr}", out.status);
    eprintln!("{}", stderr.lines().filter(|l| l.starts_with("==") || l.contains("GLIBC")).collect::<Vec<_>>().join("\n"));
    let tarball = PathBuf::from(text(&out.stdout).trim());
    let version = workspace_version();
    assert_eq!(
        tarball.file_name().and_then(|n| n.to_str()),
        Some(format!("vgpu-{version}-x86_64-linux.tar.gz").as_str()),
        "the tarball's name"
    );
    assert!(tarball.starts_with(repo.join("target/release-pkg")), "{}", tarball.display());

    remove_stale_scratch();
    let tmp = scratch();
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let untar = run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&tmp), Duration::from_secs(60));
    assert!(untar.status.success(), "tar -xzf: {}", text(&untar.stderr));
    Ok(Unpacked { root: tmp.join(format!("vgpu-{version}")), tarball, version })
}

fn unpacked() -> Option<&'static Unpacked> {
    static U: OnceLock<Result<Unpacked, String>> = OnceLock::new();
    let u = U.get_or_init(build_and_unpack);
    // or_skip wants a clonable value: hand it the reference.
    or_skip("the release build (cargo-zigbuild from crates.io, zig from PyPI)", &u.as_ref().map_err(String::clone))
}

#[test]
fn tarball_demo_runs_from_anywhere() {
    let _using = Using;
    let Some(u) = unpacked() else { return };
    // A clean environment: no target/ on PATH or LD_LIBRARY_PATH, a private temp and runtime
    // directory, from a working directory outside the repository.
    let home = u.root.parent().expect("tmp").join("home");
    std::fs::create_dir_all(home.join("run")).expect("mkdir");
    let mut demo = Command::new(u.root.join("bin/vgpu"));
    demo.args(["demo", "--sim"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("TMPDIR", &home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .current_dir(&home);
    let out = run(&mut demo, Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "vgpu demo --sim from the tarball failed ({}):\n{stdout}\n{}", out.status, text(&out.stderr));
    for (tenant, quota) in [("tenant-a", "2147483648"), ("tenant-b", "5368709120")] {
        assert!(
            stdout.lines().any(|l| l.contains(&format!("{tenant}: REFUSED allocation")) && l.contains("CUDA_ERROR_OUT_OF_MEMORY")),
            "{tenant} refused with CUDA_ERROR_OUT_OF_MEMORY:\n{stdout}"
        );
        assert!(
            stdout.lines().any(|l| l.contains("vgpu: device 0: out of quota") && l.contains(&format!("of {quota} bytes"))),
            "libvgpu.so (the packaged one) refused {tenant} at its {quota}-byte quota:\n{stdout}"
        );
    }
    let target = repo_root().join("target");
    assert!(!stdout.contains(&target.display().to_string()), "nothing from target/ was used:\n{stdout}");
}

fn floor(args: &[&str], files: &[PathBuf]) -> (bool, String) {
    let out = run(Command::new("bash").arg(repo_root().join("tools/glibc-floor.sh")).args(args).args(files), Duration::from_secs(60));
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn shipped_files_load_on_glibc_2_28() {
    let _using = Using;
    let Some(u) = unpacked() else { return };
    let elves: Vec<PathBuf> = ["bin/vgpu", "lib/libvgpu.so", "lib/simgpu-lib/libcuda.so.1", "lib/simgpu-lib/libnvidia-ml.so.1"]
        .iter()
        .map(|f| u.root.join(f))
        .collect();
    let (ok, report) = floor(&["--max", GLIBC_FLOOR], &elves);
    assert!(ok, "a shipped file needs a glibc newer than {GLIBC_FLOOR}:\n{report}");
    let lib = report.lines().find(|l| l.contains("lib/libvgpu.so:")).expect("a line for libvgpu.so");
    assert!(!lib.contains("PRIVATE"), "{lib}");
    println!("release build: {}", lib.rsplit('/').next().unwrap_or(lib));

    // The check itself: the same library against an older floor must fail and name symbols.
    let (ok, report) = floor(&["--max", "2.27"], &elves[1..2]);
    assert!(!ok && report.contains("ABOVE the floor 2.27") && report.contains("@GLIBC_2.28"), "{report}");

    // For the record: the plain build's floor (the build machine's glibc).
    let plain = artifacts_dir().join("libvgpu.so");
    if plain.is_file() {
        let (_, report) = floor(&[], &[plain]);
        println!("default build: {}", report.trim().rsplit('/').next().unwrap_or_default());
    }
}

#[test]
fn tarball_layout_checksums_and_install_note() {
    let _using = Using;
    let Some(u) = unpacked() else { return };
    let listing = run(Command::new("tar").arg("-tvzf").arg(&u.tarball), Duration::from_secs(60));
    let listing = text(&listing.stdout);
    let v = &u.version;
    for link in ["lib/simgpu-lib/libcuda.so -> libcuda.so.1", "lib/simgpu-lib/libnvidia-ml.so -> libnvidia-ml.so.1"] {
        assert!(listing.contains(&format!("vgpu-{v}/{link}")), "{link} in:\n{listing}");
    }
    for line in listing.lines() {
        assert!(line.contains(" root/root ") || line.contains(" 0/0 "), "owned by root in the tarball: {line}");
        // permissions, owner, size, date, time, path [-> target]
        let path = line.split_whitespace().nth(5).unwrap_or_default();
        assert!(path.starts_with(&format!("vgpu-{v}")) && !path.contains(".."), "one top directory: {line}");
    }
    for f in [
        "bin/vgpu",
        "lib/libvgpu.so",
        "INSTALL.md",
        "BUILDINFO",
        "SHA256SUMS",
        "examples/k8s/README.md",
        "examples/k8s/exporter.yaml",
        "examples/k8s/plain-pod.yaml",
        "examples/k8s/hami/Dockerfile",
    ] {
        assert!(u.root.join(f).is_file(), "{f} is in the tarball");
    }
    let check = run(Command::new("sha256sum").args(["--quiet", "-c", "SHA256SUMS"]).current_dir(&u.root), Duration::from_secs(60));
    assert!(check.status.success(), "SHA256SUMS: {}{}", text(&check.stdout), text(&check.stderr));

    let install = std::fs::read_to_string(u.root.join("INSTALL.md")).expect("INSTALL.md");
    for needle in [
        format!("vgpu-{v}/bin/vgpu demo --sim"),
        "/usr/local/vgpu/libvgpu.so".to_string(),
        "vgpu run --memory".to_string(),
        "CUDA_DEVICE_MEMORY_SHARED_CACHE".to_string(),
        "glibc 2.28 or newer".to_string(),
    ] {
        assert!(install.contains(&needle), "INSTALL.md has {needle:?}:\n{install}");
    }
    let buildinfo = std::fs::read_to_string(u.root.join("BUILDINFO")).expect("BUILDINFO");
    assert!(buildinfo.contains(&format!("version: {v}")) && buildinfo.contains(".2.28"), "{buildinfo}");
}

/// The number of tests in this file that use the unpacked release: the last one to finish
/// removes the temporary directory (statics are never dropped).
const USERS: usize = 3;

/// Held by each test that uses the release; the last one dropped (even by a panic) removes the
/// unpacked copy.
struct Using;

impl Drop for Using {
    fn drop(&mut self) {
        static DONE: AtomicUsize = AtomicUsize::new(0);
        if DONE.fetch_add(1, Ordering::AcqRel) + 1 == USERS {
            let _ = std::fs::remove_dir_all(scratch());
        }
    }
}

/// This process's scratch directory for the unpacked release.
fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("vgpu-release-test-{}", std::process::id()))
}

/// Removes the scratch directories of earlier runs whose process is gone (a run filtered to
/// fewer than [`USERS`] tests leaves its own behind).
fn remove_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("vgpu-release-test-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
