//! The C programs build warning-free (`-Wall -Wextra -Werror`) and parse their arguments.
//! Needs gcc and bash: without them the test prints `SKIPPED: ...` and passes. Running the
//! programs against a driver is the end-to-end tests' job (they need simgpu or a GPU).
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn build_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-c")
}

/// Runs build.sh once per test binary run; returns the output directory.
fn build() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !have("gcc") || !have("bash") {
                println!("SKIPPED: gcc or bash not available");
                return None;
            }
            let out = build_dir();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/build.sh");
            let o = Command::new("bash").arg(&script).arg(&out).env("VGPU_SKIP_LINKED", "1").output().expect("run build.sh");
            assert!(o.status.success(), "build.sh failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            Some(out)
        })
        .clone()
}

fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin).args(args).env("LD_LIBRARY_PATH", "/nonexistent").output().expect("run program");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn c_programs_build_and_parse_arguments() {
    let Some(out) = build() else { return };
    let alloc = out.join("alloc_families_nolink");
    let launch = out.join("launch_nolink");

    let (rc, stdout, _) = run(&alloc, &["--help"]);
    assert_eq!(rc, 0);
    for fam in ["cuMemAlloc_v2", "cuMemAllocFromPoolAsync", "cuMemCreate", "cuMipmappedArrayCreate"] {
        assert!(stdout.contains(fam), "--help lists {fam}: {stdout}");
    }
    let (rc, stdout, _) = run(&launch, &["--help"]);
    assert_eq!(rc, 0);
    assert!(stdout.contains("spin_1000us") && stdout.contains("noop"), "{stdout}");

    for bad in [&["--size", "12x"][..], &["--family", "nope"], &["--hold", "0"], &["--path", "nope"], &["--bogus"]] {
        assert_eq!(run(&alloc, bad).0, 2, "alloc_families {bad:?}");
    }
    for bad in [&["--mode", "nope"][..], &["--count", "0"], &["--grid", "x"], &["--bogus"]] {
        assert_eq!(run(&launch, bad).0, 2, "launch {bad:?}");
    }
    // The _nolink builds have no linked path.
    let (rc, _, stderr) = run(&alloc, &["--path", "linked"]);
    assert_eq!(rc, 1);
    assert!(stderr.contains("VGPU_LINKED"), "{stderr}");
}

#[test]
fn spin_ptx_assembles_when_ptxas_is_available() {
    if !have("ptxas") {
        println!("SKIPPED: ptxas not on PATH (PyPI: nvidia-cuda-nvcc-cu12)");
        return;
    }
    let ptx = Path::new(env!("CARGO_MANIFEST_DIR")).join("ptx/spin.ptx");
    for arch in ["sm_70", "sm_80", "sm_90"] {
        let cubin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("spin_{arch}.cubin"));
        let o = Command::new("ptxas").args(["-Werror", "-arch", arch, "-o"]).arg(&cubin).arg(&ptx).output().expect("run ptxas");
        assert!(o.status.success(), "ptxas {arch}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
