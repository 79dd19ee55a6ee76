//! Injection as HAMi's device plugin does it: `/etc/ld.so.preload` names
//! `/usr/local/vgpu/libvgpu.so`, so the dynamic loader puts the shim into *every* process of the
//! container — shells, Python, setuid programs, `vgpu` itself — with the plugin's variables
//! (`CUDA_DEVICE_MEMORY_LIMIT_0=3000m`, `CUDA_DEVICE_SM_LIMIT=30`, the region under
//! `/usr/local/vgpu/containers/`). Each test builds that node in a private mount namespace
//! (and a PID namespace): `/etc` and `/usr/local` are overlaid with a scratch layer holding the
//! preload file and the plugin's directory, so the machine's own `/etc/ld.so.preload` is never
//! written. Programs that never touch CUDA must be unaffected (no region, no thread, no
//! output); those that do are counted as under `LD_PRELOAD`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use vgpu_tests::{Sim, build_c_helper, cargo_program, field, namespaces_available, records, run, shim_path, text, u};

const MIB: u64 = 1 << 20;
/// The region's path inside the container, as the plugin lays it out.
const CACHE: &str = "/usr/local/vgpu/containers/pod_cuda/vgpu.cache";

/// Sets up the node inside the namespaces, then runs the command given after it. `$1` is the
/// scratch directory, `$2` the shim to install.
const NODE: &str = r#"
set -e
scratch=$1 shim=$2
shift 2
mount --make-rprivate /
mkdir -p "$scratch/t"
mount -t tmpfs node-scratch "$scratch/t"
layer() { # overlay a writable scratch layer on directory $1
    up="$scratch/t/up$(echo "$1" | tr / _)" work="$scratch/t/work$(echo "$1" | tr / _)"
    mkdir -p "$up" "$work"
    if ! mount -t overlay overlay -o "lowerdir=$1,upperdir=$up,workdir=$work" "$1" 2>/dev/null; then
        # No overlayfs here: a copy of the directory on the scratch tmpfs, bound over it.
        copy="$scratch/t/copy$(echo "$1" | tr / _)"
        mkdir -p "$copy" && cp -a "$1/." "$copy/" 2>/dev/null || true
        mount --bind "$copy" "$1"
    fi
}
layer /etc
layer /usr/local
mkdir -p /usr/local/vgpu/containers/pod_cuda
cp "$shim" /usr/local/vgpu/libvgpu.so
echo /usr/local/vgpu/libvgpu.so > /etc/ld.so.preload
exec "$@"
"#;

/// `args` run inside a fresh node of `sim` (its own mount and PID namespaces), with the
/// plugin's environment and no `LD_PRELOAD`.
fn in_node(sim: &Sim, args: &[&str]) -> Output {
    let scratch = sim.dir().join("node");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut c = sim.command("unshare");
    c.args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--", "sh", "-c", NODE, "node"])
        .arg(&scratch)
        .arg(shim_path())
        .args(args)
        .env("CUDA_DEVICE_MEMORY_LIMIT_0", "3000m")
        .env("CUDA_DEVICE_SM_LIMIT", "30")
        .env("CUDA_DEVICE_MEMORY_SHARED_CACHE", CACHE)
        .env_remove("LIBCUDA_LOG_LEVEL")
        .env_remove("CUDA_DISABLE_CONTROL");
    run(&mut c, Duration::from_secs(60))
}

/// The stdout of a successful run whose stderr has only lines `expected` allows.
fn ok_with(out: &Output, what: &str, expected: impl Fn(&str) -> bool) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{what}: {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stderr.lines().all(expected), "{what} printed on stderr under the preload: {stderr}");
    stdout
}

/// The stdout of a successful run that printed nothing on stderr.
fn ok(out: &Output, what: &str) -> String {
    ok_with(out, what, |_| false)
}

#[test]
fn programs_that_never_touch_cuda_are_unaffected() {
    if !namespaces_available() {
        return;
    }
    let sim = Sim::new();
    // A shell, Python and coreutils, each with the shim mapped (or the test would prove
    // nothing): no thread of the shim's, no region, no output.
    let script = format!(
        "grep -c libvgpu.so /proc/$$/maps; \
         python3 -c 'import os; m = open(\"/proc/self/maps\").read(); print(\"python\", \"libvgpu.so\" in m, len(os.listdir(\"/proc/self/task\")))'; \
         /bin/true; ls /usr/local/vgpu/containers/pod_cuda | wc -l; test ! -e {CACHE} && echo no-region"
    );
    let stdout = ok(&in_node(&sim, &["sh", "-c", &script]), "sh, python3, true");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].parse::<u32>().is_ok_and(|n| n >= 1), "the shell has the shim mapped: {stdout}");
    assert_eq!(lines[1..], ["python True 1", "0", "no-region"], "{stdout}");
}

#[test]
fn static_and_setuid_programs_are_unaffected() {
    if !namespaces_available() {
        return;
    }
    let sim = Sim::new();
    // A statically linked program: the loader (and so the preload) never runs.
    let src = sim.dir().join("hello.c");
    std::fs::write(&src, "#include <stdio.h>\nint main(void) { puts(\"static hello\"); return 0; }\n").unwrap();
    let bin = sim.dir().join("hello-static");
    let built = Command::new("gcc").arg("-static").arg("-o").arg(&bin).arg(&src).output().is_ok_and(|o| o.status.success());
    if built {
        assert_eq!(ok(&in_node(&sim, &[bin.to_str().unwrap()]), "a static program"), "static hello\n");
    } else {
        eprintln!("no static C library here: the static program is not tried");
    }
    // A setuid-root program run by an unprivileged user: the loader runs in secure mode and
    // still loads /etc/ld.so.preload's libraries.
    let setuid = ["/usr/bin/mount", "/bin/mount", "/usr/bin/su"].into_iter().map(PathBuf::from).find(|p| is_setuid_root(p));
    let Some(setuid) = setuid else {
        eprintln!("no setuid-root program found: the secure-mode run is not tried");
        return;
    };
    let script = format!("setpriv --reuid=65534 --regid=65534 --clear-groups -- {} --version", setuid.display());
    let stdout = ok(&in_node(&sim, &["sh", "-c", &script]), "a setuid program as nobody");
    assert!(!stdout.is_empty(), "it ran and printed its version");
}

fn is_setuid_root(p: &Path) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.permissions().mode() & 0o4000 != 0)
}

#[test]
fn cuda_programs_are_counted_as_under_ld_preload_and_vgpu_itself_runs() {
    if !namespaces_available() {
        return;
    }
    let sim = Sim::with_64m_contexts();
    let probe = build_c_helper("probe", false);
    let vgpu = cargo_program("vgpu");
    let ops = ["init", "ctx", "alloc=2000m", "alloc=2000m", "info", "nvml"];
    let script = format!("{} {}; {} ps --json {CACHE}", probe.display(), ops.join(" "), vgpu.display());
    let out = in_node(&sim, &["sh", "-c", &script]);
    let stdout = ok_with(&out, "the probe and vgpu ps", |l| l.starts_with("vgpu: device 0: out of quota: refusing 2097152000 bytes"));
    let (probe_out, ps_out) = stdout.split_at(stdout.find('{').expect("vgpu ps printed JSON"));
    // The same program under LD_PRELOAD with the same variables.
    let mut c = sim.shimmed(&probe);
    c.env("CUDA_DEVICE_MEMORY_LIMIT_0", "3000m").env("CUDA_DEVICE_SM_LIMIT", "30").args(ops);
    let preloaded = text(&run(&mut c, Duration::from_secs(30)).stdout);
    let figures = |s: &str| -> Vec<(String, String, u64, u64)> {
        records(s, "op")
            .iter()
            .filter(|r| ["alloc", "info", "nvml"].contains(&field(r, "op")))
            .map(|r| (field(r, "op").to_string(), r.get("rc").cloned().unwrap_or_default(), u_or(r, "free"), u_or(r, "total")))
            .collect()
    };
    assert_eq!(figures(probe_out), figures(&preloaded), "ld.so.preload and LD_PRELOAD count alike:\n{probe_out}\n{preloaded}");
    let recs = records(probe_out, "op");
    let allocs: Vec<&str> = recs.iter().filter(|r| field(r, "op") == "alloc").map(|r| field(r, "rc")).collect();
    assert_eq!(allocs, ["0", "2"], "a 3000 MiB quota holds one 2000 MiB block: {probe_out}");
    let info = recs.iter().find(|r| field(r, "op") == "info").unwrap();
    assert_eq!(u(info, "total"), 3000 * MIB, "{probe_out}");
    let doc: serde_json::Value = serde_json::from_str(ps_out).expect("vgpu ps --json under the preload is JSON");
    assert_eq!(doc["regions"][0]["devices"][0]["quota_bytes"].as_u64(), Some(3000 * MIB), "{doc:#}");
}

fn u_or(r: &vgpu_tests::Rec, k: &str) -> u64 {
    r.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}
