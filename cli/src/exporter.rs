//! `vgpu exporter`: Prometheus metrics of the accounting regions and of the devices.
//!
//! A small HTTP/1.1 server (std::net): `GET /metrics` (and `HEAD`) answers the text
//! exposition format 0.0.4, everything else a 404 (405 for other methods, 400 for a request
//! that does not parse). Each connection has its own thread, read and write timeouts, and at
//! most [`MAX_CONNECTIONS`] are served at once (more are closed unanswered). Regions are read
//! on every scrape, read-only ([`crate::ps`]), so the figures are never stale and the
//! exporter holds nothing open between scrapes. SIGTERM and SIGINT stop it with status 0.
//!
//! # Why no HTTP or Prometheus crate here
//!
//! Both were tried and measured (tiny_http 0.12.0, prometheus-client 0.24.1), and both fail a
//! node daemon exposed on the cluster network:
//!
//! * tiny_http serves each connection on a thread of its own, with no cap, no read timeout and
//!   no limit on the request head: 400 clients that send half a request line and stop left
//!   the process at 326 threads, held for as long as the clients keep the sockets; a 1 MiB
//!   header was read whole and answered 200. Here: at most [`MAX_CONNECTIONS`] at once, 3 s
//!   to send a request, a 16 KiB head (431 beyond), tested by
//!   `the_exporter_survives_slow_oversized_malformed_and_many_requests` (tests/tests/ops.rs).
//! * prometheus-client's text encoder writes label values unescaped (`a="b"c"` for the value
//!   `b"c`, a raw newline for `\n`; prometheus/client_rust#151, open), and a single bad line
//!   makes Prometheus reject the whole scrape. Container and pod names come from file names
//!   and Kubernetes, so escaping is not optional. The format here is the text format 0.0.4,
//!   escaped as its specification says, and unit-tested.
//!
//! # Metrics
//!
//! Container label: as `vgpu ps` names regions (file stem, or the per-container subdirectory
//! of `--dir`; see [`crate::ps`]). Device label of the region metrics: the index the
//! container's applications see. Device label of the `vgpu_device_*` metrics: NVML's index on
//! the node.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vgpu_memory_quota_bytes` | gauge | container, device (limited devices only) |
//! | `vgpu_memory_used_bytes` | gauge | container, device |
//! | `vgpu_memory_unhooked_bytes` | gauge | container, device |
//! | `vgpu_memory_free_bytes` | gauge | container, device (limited devices only) |
//! | `vgpu_memory_peak_bytes` | gauge | container, device |
//! | `vgpu_memory_oom_refusals_total` | counter | container, device |
//! | `vgpu_process_memory_used_bytes` | gauge | container, device, pid, state |
//! | `vgpu_processes` | gauge | container, state=`alive`/`dead` |
//! | `vgpu_sm_limit_ratio`, `vgpu_sm_achieved_ratio` | gauge | container, device (when known) |
//! | `vgpu_sm_throttled_seconds_total` | counter | container, device (when recorded) |
//! | `vgpu_region_errors` | gauge | container: 1 when its file was skipped, else 0 |
//! | `vgpu_device_memory_total_bytes`, `vgpu_device_memory_used_bytes` | gauge | device, uuid |
//! | `vgpu_device_utilization_ratio` | gauge | device, uuid |
//!
//! # HAMi's metrics (`--hami-compat`)
//!
//! The names, labels and units of HAMi's node monitor (vGPUmonitor, HAMi v2.10 and the legacy
//! names of v2.8 and earlier, which its `--legacy-metrics` still serves and dashboard 21833
//! and older WebUIs query), every one with HAMi's `zone="vGPU"`. Containers are regions in
//! HAMi's layout, `<dir>/<pod uid>_<container>/…`; a container's namespace and pod come from
//! the kubelet's `/var/log/pods/<namespace>_<pod>_<uid>` (`--pods-dir`), and, as in HAMi, a
//! container whose pod is not known there yields no series. `vdevice_index` is the index the
//! container sees; `device_uuid` the UUID its processes recorded in the region.
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `hami_vgpu_memory_used_bytes`, `hami_container_device_memory_bytes`, `vGPU_device_memory_usage_in_bytes` | namespace, pod, container, vdevice_index, device_uuid (legacy: podnamespace, podname, ctrname, vdeviceid, deviceuuid) | bytes used |
//! | `hami_vgpu_memory_limit_bytes`, `vGPU_device_memory_limit_in_bytes` | same | quota (limited devices) |
//! | `Device_memory_desc_of_container` | legacy + context, module, data, offset | bytes used (`data` = used, the others 0: vgpu does not split them) |
//! | `hami_container_device_utilization_ratio`, `Device_utilization_desc_of_container` | same | SM share achieved, 0–100 (containers with an SM limit) |
//! | `hami_host_gpu_memory_used_bytes`, `HostGPUMemoryUsage` | node, device_index, device_uuid, device_type (legacy: nodeid, deviceidx, deviceuuid, devicetype) | NVML used bytes |
//! | `hami_host_gpu_utilization_ratio`, `HostCoreUtilization` | same | NVML utilisation, 0–100 |
//! | `hami_host_gpu_memory_controller_utilization_ratio` | device_index, device_uuid, device_type | NVML memory utilisation, 0–100 |
//!
//! Not served: `hami_container_last_kernel_elapsed_seconds` / `Device_last_kernel_of_container`
//! and the context/module/buffer split (vgpu records neither), and the scheduler's metrics
//! (HAMi's scheduler serves those, not the node monitor).
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use nvml_wrapper::Nvml;

use crate::ps::{self, Sources};

/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Arguments of `vgpu exporter`.
#[derive(Args, Debug, Clone)]
pub struct ExporterArgs {
    /// Address to listen on (e.g. 0.0.0.0:9394; port 0 picks a free one, printed on stdout).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The regions to read.
    #[command(flatten)]
    pub sources: Sources,
    /// Device figures from simgpu's NVML (the machine named by SIMGPU_STATE).
    #[arg(long)]
    pub sim: bool,
    /// Also serve HAMi's node-monitor metrics (its `hami_*` names and the legacy names its
    /// Grafana dashboard and WebUI query), so they work unchanged for vgpu's containers.
    #[arg(long)]
    pub hami_compat: bool,
    /// The node label of the HAMi metrics (default: $NODE_NAME, as HAMi's chart sets it).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where the kubelet keeps `<namespace>_<pod>_<uid>/` (pod names for the HAMi metrics).
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pods_dir: PathBuf,
}

/// What the HAMi-compatible metrics need besides the regions.
#[derive(Debug, Clone, Default)]
pub struct HamiCompat {
    /// The node label.
    pub node: String,
    /// The kubelet's pod log directory.
    pub pods_dir: PathBuf,
}

/// Pod namespace and name by pod UID, from the kubelet's `<namespace>_<pod>_<uid>` directories
/// (neither a namespace nor a pod name can hold `_`). Unreadable: empty.
pub fn pods_by_uid(dir: &Path) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '_');
        if let (Some(ns), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next())
            && !ns.is_empty()
            && !pod.is_empty()
            && !uid.is_empty()
        {
            out.insert(uid.to_string(), (ns.to_string(), pod.to_string()));
        }
    }
    out
}

/// A region's pod UID and container name from HAMi's `<pod uid>_<container>` directory name
/// (as `vgpu ps --dir` names it; a second file in the directory adds `/<stem>`).
pub fn pod_and_container(container: &str) -> Option<(&str, &str)> {
    let dir = container.split('/').next()?;
    let (uid, ctr) = dir.split_once('_')?;
    (!uid.is_empty() && !ctr.is_empty()).then_some((uid, ctr))
}

/// A metric family being built.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<String>,
}

/// The exposition text, family by family, in a fixed order.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s += "\\\\",
            '"' => s += "\\\"",
            '\n' => s += "\\n",
            c => s.push(c),
        }
    }
    s
}

/// Escapes HELP text: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

impl Exposition {
    fn family(&mut self, name: &'static str, kind: &'static str, help: &'static str) {
        self.families.push(Family { name, help, kind, samples: Vec::new() });
    }

    /// Adds a sample to the family `name` (declared before).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let f = self.families.iter_mut().find(|f| f.name == name).expect("metric family declared");
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
        let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        f.samples.push(format!("{name}{labels} {value}\n"));
    }

    /// The text; families without samples are left out.
    fn text(&self) -> String {
        let mut out = String::new();
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            out += &format!("# HELP {} {}\n", f.name, escape_help(f.help));
            out += &format!("# TYPE {} {}\n", f.name, f.kind);
            for s in &f.samples {
                out += s;
            }
        }
        out
    }
}

/// A float as the exposition format writes it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The region metrics of a snapshot.
fn region_metrics(e: &mut Exposition, snap: &ps::Snapshot) {
    e.family("vgpu_memory_quota_bytes", "gauge", "VRAM quota of the container on the device (absent when unlimited).");
    e.family("vgpu_memory_used_bytes", "gauge", "VRAM held by the container's processes on the device, live or not yet reaped.");
    e.family(
        "vgpu_memory_unhooked_bytes",
        "gauge",
        "Of used: VRAM the driver holds for the container's processes beyond what their hooks charged (reconciliation).",
    );
    e.family("vgpu_memory_free_bytes", "gauge", "Quota minus used (absent when unlimited).");
    e.family("vgpu_memory_peak_bytes", "gauge", "Highest VRAM use of the container on the device.");
    e.family("vgpu_memory_oom_refusals_total", "counter", "Allocations refused because they did not fit the quota.");
    e.family("vgpu_sm_limit_ratio", "gauge", "SM share the container is limited to (0..1).");
    e.family("vgpu_sm_achieved_ratio", "gauge", "SM share the container achieved recently (0..1).");
    e.family("vgpu_sm_throttled_seconds_total", "counter", "Time the container's kernel launches waited for SM tokens.");
    e.family("vgpu_process_memory_used_bytes", "gauge", "VRAM held by one process of the container (state dead: exited, not yet reaped).");
    e.family("vgpu_processes", "gauge", "Process slots of the container, alive or dead-not-yet-reaped.");
    e.family("vgpu_region_errors", "gauge", "1 when the container's accounting region could not be read (skipped), else 0.");
    for r in &snap.regions {
        let c = r.container.as_str();
        for d in &r.devices {
            let v = &d.view;
            let dev = v.device.to_string();
            let l = [("container", c), ("device", dev.as_str())];
            if let Some(q) = v.quota {
                e.sample("vgpu_memory_quota_bytes", &l, q);
                e.sample("vgpu_memory_free_bytes", &l, v.free);
            }
            e.sample("vgpu_memory_used_bytes", &l, v.used);
            e.sample("vgpu_memory_unhooked_bytes", &l, v.unhooked);
            e.sample("vgpu_memory_peak_bytes", &l, v.peak);
            e.sample("vgpu_memory_oom_refusals_total", &l, v.refusals);
            if let Some((limit, achieved)) = d.sm {
                e.sample("vgpu_sm_limit_ratio", &l, float(limit / 100.0));
                e.sample("vgpu_sm_achieved_ratio", &l, float(achieved / 100.0));
            }
            if let Some(t) = d.throttled_seconds {
                e.sample("vgpu_sm_throttled_seconds_total", &l, float(t));
            }
        }
        let (mut alive, mut dead) = (0, 0);
        for p in &r.processes {
            let state = if p.alive { "alive" } else { "dead" };
            if p.alive {
                alive += 1;
            } else {
                dead += 1;
            }
            let pid = p.pid.to_string();
            for (d, b) in &p.used {
                let dev = d.to_string();
                e.sample("vgpu_process_memory_used_bytes", &[("container", c), ("device", &dev), ("pid", &pid), ("state", state)], b);
            }
        }
        e.sample("vgpu_processes", &[("container", c), ("state", "alive")], alive);
        e.sample("vgpu_processes", &[("container", c), ("state", "dead")], dead);
        e.sample("vgpu_region_errors", &[("container", c)], 0);
    }
    for k in &snap.skipped {
        e.sample("vgpu_region_errors", &[("container", &k.container)], 1);
    }
}

/// The NVML device metrics; what NVML cannot say is left out.
fn device_metrics(e: &mut Exposition, nvml: &Nvml) {
    e.family("vgpu_device_memory_total_bytes", "gauge", "Physical memory of the device as NVML reports it.");
    e.family("vgpu_device_memory_used_bytes", "gauge", "Memory in use on the device (all containers) as NVML reports it.");
    e.family("vgpu_device_utilization_ratio", "gauge", "Fraction of recent time a kernel ran on the device, as NVML reports it (0..1).");
    let Ok(count) = nvml.device_count() else {
        return;
    };
    for i in 0..count {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        let uuid = dev.uuid().unwrap_or_default();
        let idx = i.to_string();
        let l = [("device", idx.as_str()), ("uuid", uuid.as_str())];
        if let Ok(m) = dev.memory_info() {
            e.sample("vgpu_device_memory_total_bytes", &l, m.total);
            e.sample("vgpu_device_memory_used_bytes", &l, m.used);
        }
        if let Ok(u) = dev.utilization_rates() {
            e.sample("vgpu_device_utilization_ratio", &l, float(f64::from(u.gpu) / 100.0));
        }
    }
}

/// HAMi's zone label, on every metric of its node monitor.
const ZONE: (&str, &str) = ("zone", "vGPU");

/// HAMi's node-monitor metrics for vgpu's regions (containers whose pod is known) and the
/// devices, current and legacy names, labelled as HAMi labels them.
fn hami_metrics(e: &mut Exposition, snap: &ps::Snapshot, nvml: Option<&Nvml>, compat: &HamiCompat) {
    e.family("hami_vgpu_memory_used_bytes", "gauge", "vGPU device memory usage in bytes");
    e.family("hami_vgpu_memory_limit_bytes", "gauge", "vGPU device memory limit in bytes");
    e.family("hami_container_device_memory_bytes", "gauge", "Container device memory usage in bytes");
    e.family("hami_container_device_utilization_ratio", "gauge", "Container device SM utilization ratio");
    e.family("vGPU_device_memory_usage_in_bytes", "gauge", "vGPU device usage");
    e.family("vGPU_device_memory_limit_in_bytes", "gauge", "vGPU device limit");
    e.family("Device_memory_desc_of_container", "gauge", "Container device memory description");
    e.family("Device_utilization_desc_of_container", "gauge", "Container device utilization description");
    e.family("hami_host_gpu_memory_used_bytes", "gauge", "GPU device memory usage in bytes");
    e.family("hami_host_gpu_utilization_ratio", "gauge", "GPU core utilization ratio (0-100)");
    e.family("hami_host_gpu_memory_controller_utilization_ratio", "gauge", "GPU memory controller utilization ratio (0-100)");
    e.family("HostGPUMemoryUsage", "gauge", "GPU device memory usage");
    e.family("HostCoreUtilization", "gauge", "GPU core utilization");
    let pods = pods_by_uid(&compat.pods_dir);
    for r in &snap.regions {
        let Some((uid, ctr)) = pod_and_container(&r.container) else { continue };
        // As HAMi's monitor: a container whose pod is not known yields no series.
        let Some((ns, pod)) = pods.get(uid) else { continue };
        for d in &r.devices {
            let v = &d.view;
            let idx = v.device.to_string();
            let uuid = v.uuid.as_ref().map(vgpu_limiter::region::uuid_string).unwrap_or_default();
            let now = [
                ("namespace", ns.as_str()),
                ("pod", pod.as_str()),
                ("container", ctr),
                ("vdevice_index", &idx),
                ("device_uuid", &uuid),
                ZONE,
            ];
            let old = [
                ("podnamespace", ns.as_str()),
                ("podname", pod.as_str()),
                ("ctrname", ctr),
                ("vdeviceid", &idx),
                ("deviceuuid", &uuid),
                ZONE,
            ];
            e.sample("hami_vgpu_memory_used_bytes", &now, v.used);
            e.sample("hami_container_device_memory_bytes", &now, v.used);
            e.sample("vGPU_device_memory_usage_in_bytes", &old, v.used);
            let used = v.used.to_string();
            let mut desc = old.to_vec();
            desc.extend([("context", "0"), ("module", "0"), ("data", used.as_str()), ("offset", "0")]);
            e.sample("Device_memory_desc_of_container", &desc, v.used);
            if let Some(q) = v.quota {
                e.sample("hami_vgpu_memory_limit_bytes", &now, q);
                e.sample("vGPU_device_memory_limit_in_bytes", &old, q);
            }
            if let Some((_, achieved)) = d.sm {
                e.sample("hami_container_device_utilization_ratio", &now, float(achieved));
                e.sample("Device_utilization_desc_of_container", &old, float(achieved));
            }
        }
    }
    let Some(nvml) = nvml else { return };
    let Ok(count) = nvml.device_count() else { return };
    for i in 0..count {
        let Ok(dev) = nvml.device_by_index(i) else { continue };
        let uuid = dev.uuid().unwrap_or_default();
        let kind = format!("NVIDIA-{}", dev.name().unwrap_or_default());
        let idx = i.to_string();
        let node = compat.node.as_str();
        let now = [("node", node), ("device_index", &idx), ("device_uuid", &uuid), ("device_type", &kind), ZONE];
        let old = [("nodeid", node), ("deviceidx", &idx), ("deviceuuid", &uuid), ("devicetype", &kind), ZONE];
        if let Ok(m) = dev.memory_info() {
            e.sample("hami_host_gpu_memory_used_bytes", &now, m.used);
            e.sample("HostGPUMemoryUsage", &old, m.used);
        }
        if let Ok(u) = dev.utilization_rates() {
            e.sample("hami_host_gpu_utilization_ratio", &now, u.gpu);
            e.sample("HostCoreUtilization", &old, u.gpu);
            e.sample("hami_host_gpu_memory_controller_utilization_ratio", &now[1..], u.memory);
        }
    }
}

/// One scrape's text, with HAMi's metrics when `compat` is given.
pub fn scrape(sources: &Sources, nvml: Option<&Nvml>, compat: Option<&HamiCompat>) -> String {
    let mut e = Exposition::default();
    let snap = match ps::snapshot(sources) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("vgpu exporter: {err}");
            ps::Snapshot::default()
        }
    };
    region_metrics(&mut e, &snap);
    if let Some(n) = nvml {
        device_metrics(&mut e, n);
    }
    if let Some(c) = compat {
        hami_metrics(&mut e, &snap, nvml, c);
    }
    e.text()
}

/// What every connection shares.
struct Server {
    sources: Sources,
    nvml: Option<Nvml>,
    compat: Option<HamiCompat>,
    active: AtomicUsize,
}

/// Decrements the active-connection count when a connection's thread ends, even by panic.
struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request head (up to the blank line), or `None` when the client sent nothing usable
/// before closing or timing out. `Err(())` when it is too long.
fn read_head(s: &mut TcpStream) -> Result<Option<String>, ()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Err(());
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                // A closed or silent client: answer what was sent if it is a whole line.
                return Ok((!buf.is_empty() && buf.contains(&b'\n')).then(|| String::from_utf8_lossy(&buf).into_owned()));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What to answer: status, reason, extra headers, body, and whether to send the body.
fn route(head: &str, server: &Server) -> (u16, &'static str, &'static str, String, bool) {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return (400, "Bad Request", "", "bad request\n".into(), true);
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "Bad Request", "", "bad request\n".into(), true);
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n".into(), true);
    }
    if path != "/metrics" {
        return (404, "Not Found", "", "not found; metrics are at /metrics\n".into(), !head_only);
    }
    let body = scrape(&server.sources, server.nvml.as_ref(), server.compat.as_ref());
    (200, "OK", "", body, !head_only)
}

fn handle(mut s: TcpStream, server: &Server) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let (code, reason, extra, body, send_body) = match read_head(&mut s) {
        Ok(Some(head)) => route(&head, server),
        Ok(None) => return,
        Err(()) => (431, "Request Header Fields Too Large", "", "request head too large\n".into(), true),
    };
    let ctype = if code == 200 { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let mut resp =
        format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", body.len())
            .into_bytes();
    if send_body {
        resp.extend_from_slice(body.as_bytes());
    }
    let _ = s.write_all(&resp);
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Write);
}

fn stop_on_signals() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                eprintln!("vgpu exporter: {name}, stopping");
                std::process::exit(0);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// Runs `vgpu exporter` until SIGTERM or SIGINT.
pub fn exporter(args: ExporterArgs) -> i32 {
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vgpu exporter: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    if let Err(e) = stop_on_signals() {
        eprintln!("vgpu exporter: {e}");
        return 1;
    }
    let nvml = match crate::smi::nvml(args.sim) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("vgpu exporter: {e}; device metrics are left out");
            None
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on http://{a}/metrics"),
        Err(_) => println!("listening on http://{}/metrics", args.listen),
    }
    let _ = std::io::stdout().flush();
    let compat = args.hami_compat.then(|| HamiCompat {
        node: args.node_name.clone().or_else(|| std::env::var("NODE_NAME").ok()).unwrap_or_default(),
        pods_dir: args.pods_dir.clone(),
    });
    let server = Arc::new(Server { sources: args.sources, nvml, compat, active: AtomicUsize::new(0) });
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                if server.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    server.active.fetch_sub(1, Ordering::AcqRel);
                    drop(s);
                    continue;
                }
                let srv = Arc::clone(&server);
                let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
                    let _active = Active(&srv.active);
                    handle(s, &srv);
                });
                if spawned.is_err() {
                    server.active.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(e) => {
                // E.g. out of descriptors: do not spin.
                eprintln!("vgpu exporter: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
    }

    #[test]
    fn families_are_written_whole_and_empty_ones_left_out() {
        let mut e = Exposition::default();
        e.family("a_bytes", "gauge", "A.");
        e.family("b_total", "counter", "B.");
        e.sample("a_bytes", &[("container", "x\"y")], 5);
        e.sample("a_bytes", &[], 6);
        assert_eq!(e.text(), "# HELP a_bytes A.\n# TYPE a_bytes gauge\na_bytes{container=\"x\\\"y\"} 5\na_bytes 6\n");
    }

    #[test]
    fn hami_directory_names_give_pod_and_container() {
        assert_eq!(pod_and_container("0f1e2d3c-aaaa-bbbb-cccc-000000000001_cuda"), Some(("0f1e2d3c-aaaa-bbbb-cccc-000000000001", "cuda")));
        assert_eq!(pod_and_container("uid_ctr_with_underscore/x"), Some(("uid", "ctr_with_underscore")));
        assert_eq!(pod_and_container("web"), None);
        assert_eq!(pod_and_container("_x"), None);
    }

    #[test]
    fn requests_are_routed() {
        let server = Server { sources: Sources::default(), nvml: None, compat: None, active: AtomicUsize::new(0) };
        assert_eq!(route("GET /metrics HTTP/1.1\r\n", &server).0, 200);
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n", &server).0, 200);
        assert!(!route("HEAD /metrics HTTP/1.1", &server).4);
        assert_eq!(route("GET / HTTP/1.1", &server).0, 404);
        assert_eq!(route("POST /metrics HTTP/1.1", &server).0, 405);
        assert_eq!(route("garbage", &server).0, 400);
        assert_eq!(route("GET /metrics SMTP/1 extra", &server).0, 400);
        assert_eq!(route("", &server).0, 400);
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), Some(23));
    }
}
