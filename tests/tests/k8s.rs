//! The Kubernetes examples (`examples/k8s/`), checked without a cluster:
//!
//! * every object validates against the Kubernetes OpenAPI schemas of the oldest and newest
//!   release we claim (strict: an unknown or misspelt field is an error), with
//!   `kubernetes-validate` from PyPI, which bundles the schemas (pinned by
//!   `tests/python/k8s-requirements.txt`, installed into `<artifacts>/pyenv-k8s`);
//! * the plain pod's variables, given to a program under `libvgpu.so` on simgpu, produce the
//!   quota the manifest promises, in a region laid out where the exporter looks;
//! * the exporter DaemonSet's own command line, run against that directory, serves the
//!   container's quota.
//!
//! Without Python or PyPI the schema test prints `SKIPPED: <reason>` and passes, unless
//! `VGPU_REQUIRE_PYTHON=1` (CI), where that is a failure.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vgpu_tests::{Background, Sim, c_programs, cargo_program, or_skip, records, repo_root, run, run_ok, shim_path, text, venv_with};

/// The Kubernetes releases the manifests must be valid for: the oldest still commonly run and
/// the newest the pinned validator knows.
const K8S_VERSIONS: &str = "1.29.0,1.37.0";

fn k8s_dir() -> PathBuf {
    repo_root().join("examples/k8s")
}

fn manifest(name: &str) -> String {
    let p = k8s_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let setup = venv_with("pyenv-k8s", &repo_root().join("tests/python/k8s-requirements.txt"));
    let Some(python) = or_skip("the Kubernetes schema validator", &setup) else { return };
    let out = run(
        std::process::Command::new(python)
            .arg(repo_root().join("tests/python/k8s_validate.py"))
            .args(["--versions", K8S_VERSIONS])
            .arg(k8s_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONNOUSERSITE", "1")
            .env_remove("PYTHONPATH"),
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "invalid manifests ({}):\n{stdout}\n{}", out.status, text(&out.stderr));
    let recs = records(&stdout, "k8s");
    let valid = |file: &str, kind: &str, name: &str| {
        let versions: Vec<&str> = recs
            .iter()
            .filter(|r| r["k8s"] == "object" && r["file"] == file && r["kind"] == kind && r["name"] == name && r["ok"] == "1")
            .map(|r| r["version"].as_str())
            .collect();
        assert_eq!(versions.join(","), K8S_VERSIONS, "{kind}/{name} in {file} validated for every version:\n{stdout}");
    };
    valid("hami/test-pod.yaml", "Pod", "vgpu-hami-test");
    valid("plain-pod.yaml", "Pod", "vgpu-plain");
    valid("node-installer.yaml", "DaemonSet", "vgpu-node-installer");
    valid("exporter.yaml", "DaemonSet", "vgpu-exporter");
    valid("exporter.yaml", "Service", "vgpu-exporter");
    valid("kai/pod.yaml", "Pod", "vgpu-kai-half");
    valid("volcano/vgpu-job.yaml", "Pod", "vgpu-job/worker");
    let values = recs.iter().find(|r| r["k8s"] == "helm-values" && r["file"] == "hami/values-vgpu.yaml");
    let values = values.unwrap_or_else(|| panic!("no record for the Helm values:\n{stdout}"));
    assert_eq!(values["ok"], "1");
    assert!(values["keys"].split(',').any(|k| k == "devicePlugin"), "{values:?}");
    let summary = recs.iter().find(|r| r["k8s"] == "summary").unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert_eq!(summary["failures"], "0", "{stdout}");
    println!("{}", stdout.lines().last().unwrap_or_default());
}

/// The `name: X` / `value: Y` pairs of a manifest's `env:` lists (plain values only).
fn env_values(yaml: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut name: Option<String> = None;
    for line in yaml.lines() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("- name: ") {
            name = Some(n.trim().to_string());
        } else if let (Some(v), Some(n)) = (t.strip_prefix("value: "), name.take()) {
            out.insert(n, v.trim().trim_matches('"').to_string());
        }
    }
    out
}

/// The one flow sequence `key: ["a", "b"]` of a manifest, as strings.
fn flow_list(yaml: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}: [");
    let lines: Vec<&str> = yaml.lines().map(str::trim).filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "expected one `{key}: [...]` line, found {lines:?}");
    let inner = lines[0].strip_prefix(&prefix).and_then(|l| l.strip_suffix(']')).expect("a one-line flow sequence");
    inner.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect()
}

/// One HTTP GET over loopback; the body.
fn scrape(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    assert!(resp.starts_with("HTTP/1.1 200"), "GET {path}: {resp}");
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[test]
fn plain_pod_environment_gives_its_quota_and_the_exporter_manifest_serves_it() {
    // The plain pod's variables, as a program in that pod would get them; its region where
    // the pod's subPathExpr puts it on the node: <regions>/<pod uid>_<container>/.
    let env = env_values(&manifest("plain-pod.yaml"));
    for var in ["CUDA_DEVICE_MEMORY_LIMIT", "CUDA_DEVICE_SM_LIMIT", "CUDA_DEVICE_MEMORY_SHARED_CACHE", "LD_PRELOAD"] {
        assert!(env.contains_key(var), "plain-pod.yaml sets {var}: {env:?}");
    }
    assert_eq!(env["LD_PRELOAD"], "/usr/local/vgpu/libvgpu.so", "the path node-installer.yaml and HAMi use");
    let pod_yaml = manifest("plain-pod.yaml");
    assert!(pod_yaml.contains("nvidia.com/gpu: 1"), "the pod asks the device plugin for a GPU");
    assert!(pod_yaml.contains("subPathExpr: $(POD_UID)_cuda"), "one region directory per container");

    let sim = Sim::new().with("SIMGPU_MEMORY", "16g");
    let regions = sim.dir().join("containers");
    let container = "0b8f6c1e-5d3a-4f7e-9c2b-7a1d2e3f4a5b_cuda";
    std::fs::create_dir_all(regions.join(container)).expect("mkdir region dir");
    let region_name = Path::new(&env["CUDA_DEVICE_MEMORY_SHARED_CACHE"]).file_name().expect("a file name").to_owned();
    let region = regions.join(container).join(region_name);

    let mut smi = sim.command(cargo_program("vgpu"));
    smi.args(["smi", "--sim"]);
    for (k, v) in &env {
        if k.starts_with("CUDA_DEVICE_") || k == "LIBCUDA_LOG_LEVEL" {
            smi.env(k, v);
        }
    }
    smi.env("CUDA_DEVICE_MEMORY_SHARED_CACHE", &region).env("LD_PRELOAD", shim_path());
    // In a PID namespace of its own, as the pod's container runs (where the machine allows).
    let mut smi = if vgpu_tests::namespaces_available() { vgpu_tests::in_container(&smi, false) } else { smi };
    let out = run(&mut smi, Duration::from_secs(60));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "vgpu smi under the pod's variables failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("of 4.00 GiB"), "NVML shows the pod's 4Gi quota as the GPU's size:\n{stdout}");
    let head = std::fs::read(&region).unwrap_or_else(|e| panic!("the region at {}: {e}", region.display()));
    assert!(head.starts_with(b"VGPUREG"), "the README's check tells vgpu's region by its magic, VGPUREG");

    // The exporter exactly as exporter.yaml starts it, with the address and the host
    // directory swapped for this test's.
    let exporter_yaml = manifest("exporter.yaml");
    let command = flow_list(&exporter_yaml, "command");
    assert_eq!(command, ["/opt/vgpu/bin/vgpu"], "the path examples/k8s/Dockerfile installs");
    let args = flow_list(&exporter_yaml, "args");
    assert!(args.windows(2).any(|w| w == ["--listen", "0.0.0.0:9400"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--dir", "/usr/local/vgpu/containers"]), "{args:?}");
    assert!(exporter_yaml.contains("path: /usr/local/vgpu/containers"), "the hostPath HAMi uses");
    assert!(exporter_yaml.contains("prometheus.io/scrape: \"true\""), "scrape annotations");
    let local: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "0.0.0.0:9400" => "127.0.0.1:0".to_string(),
            "/usr/local/vgpu/containers" => regions.display().to_string(),
            _ => a.clone(),
        })
        .collect();
    let mut exporter = Background::spawn(sim.command(cargo_program("vgpu")).args(&local));
    let line = exporter.wait_for("listening on http://", Duration::from_secs(30));
    let addr = line.trim().trim_start_matches("listening on http://").trim_end_matches("/metrics").to_string();
    let metrics = scrape(&addr, "/metrics");
    let quota = format!("vgpu_memory_quota_bytes{{container=\"{container}\",device=\"0\"}} {}", 4u64 << 30);
    assert!(metrics.lines().any(|l| l == quota), "no `{quota}` in the exporter's metrics:\n{metrics}");
    assert!(
        metrics.lines().any(|l| l == format!("vgpu_region_errors{{container=\"{container}\"}} 0")),
        "the region reads cleanly:\n{metrics}"
    );
}

#[test]
fn hami_recipe_replaces_the_library_the_device_plugin_installs() {
    let dockerfile = manifest("hami/Dockerfile");
    // HAMi's image keeps libvgpu.so.<version> in /k8s-vgpu/lib/nvidia/, which its postStart
    // (vgpu-init.sh) copies to ${HOOK_PATH}/vgpu/ and its Allocate mounts; every copy there
    // must be ours.
    assert!(dockerfile.contains("cd /k8s-vgpu/lib/nvidia"), "{dockerfile}");
    assert!(dockerfile.contains("for f in libvgpu.so libvgpu.so.*"), "{dockerfile}");
    assert!(dockerfile.contains("COPY lib/libvgpu.so"), "built from the unpacked release");
    let values = manifest("hami/values-vgpu.yaml");
    for key in ["devicePlugin:", "image:", "registry:", "repository:", "tag:"] {
        assert!(values.contains(key), "values-vgpu.yaml sets {key}");
    }
    let readme = manifest("README.md");
    for needle in ["values-vgpu.yaml", "nvidia-smi", "/etc/ld.so.preload", "HOOK_PATH", "libvgpu.so.<version>"] {
        assert!(readme.contains(needle), "examples/k8s/README.md explains {needle}");
    }
}

#[test]
fn under_kais_isolator_the_region_goes_where_hami_core_puts_it_and_a_missing_limit_is_said() {
    // KAI's resource isolator sets CONTAINER_VGPU_MOUNT, POD_UID and CONTAINER_NAME and
    // CUDA_DEVICE_MEMORY_LIMIT (from its binder), but no CUDA_DEVICE_MEMORY_SHARED_CACHE.
    let sim = Sim::new();
    let mount = sim.dir().join("usr-local-vgpu");
    std::fs::create_dir_all(mount.join("containers")).expect("mkdir");
    let kai = |limit: Option<&str>| {
        let mut c = sim.shimmed(c_programs().join("alloc_families"));
        c.env_remove("CUDA_DEVICE_MEMORY_SHARED_CACHE")
            .env("CONTAINER_VGPU_MOUNT", &mount)
            .env("POD_UID", "9f8e7d6c-0000-4000-8000-000000000001")
            .env("CONTAINER_NAME", "cuda")
            .args(["--family", "cuMemAlloc_v2", "--size", "256m", "--hold", "5", "--no-copy"]);
        if let Some(l) = limit {
            c.env("CUDA_DEVICE_MEMORY_LIMIT", l);
        }
        c
    };
    let out = run(&mut kai(Some("1024m")), Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let rcs: Vec<String> = records(&stdout, "family").into_iter().filter(|r| r["op"] == "alloc").map(|r| r["rc"].clone()).collect();
    assert_eq!(rcs, ["0", "0", "0", "2", "2"], "the 1 GiB quota holds: {stdout}");
    let region = mount.join("containers/9f8e7d6c-0000-4000-8000-000000000001_cuda/usage.cache");
    assert!(region.is_file(), "the region is in HAMi-core's per-container layout under KAI");
    let ps = run_ok(sim.command(cargo_program("vgpu")).args(["ps", "--dir"]).arg(mount.join("containers")));
    assert!(ps.contains("9f8e7d6c-0000-4000-8000-000000000001_cuda"), "{ps}");
    // No limit (KAI's binder could not compute one): nothing is limited, and one line says so.
    let out = run(&mut kai(None), Duration::from_secs(60));
    let err = text(&out.stderr);
    assert_eq!(err.lines().filter(|l| l.contains("nothing is limited")).count(), 1, "{err}");
}
