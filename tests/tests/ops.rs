//! Operating vgpu: `vgpu ps`, `vgpu top` and `vgpu exporter` reading regions that real
//! processes under the shim write, without disturbing them.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use vgpu_tests::{Sim, await_allocations, c_programs, cargo_program, run, text};

const MIB: u64 = 1 << 20;
/// What a holder of 4 blocks holds: 4 × 64 MiB and simgpu's 64 MiB context.
const HELD_4: u64 = 5 * 64 * MIB;

fn vgpu() -> PathBuf {
    cargo_program("vgpu")
}

/// A program under `vgpu run` holding `blocks` × 64 MiB until its stdin closes.
struct Holder {
    run: Child,
}

impl Holder {
    fn start(sim: &Sim, memory: &str, region: &Path, blocks: u32) -> Holder {
        let mut run = sim
            .command(vgpu())
            .args(["run", "--sim", "--memory", memory, "--region"])
            .arg(region)
            .arg("--")
            .arg(c_programs().join("alloc_families"))
            .args(["--family", "cuMemAlloc_v2", "--size", "64m", "--hold", &blocks.to_string(), "--no-copy", "--wait-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vgpu run");
        let stdout = run.stdout.take().expect("stdout");
        let held = await_allocations(stdout, blocks, Duration::from_secs(30));
        let mut h = Holder { run };
        if !held {
            h.stop();
            panic!("the holder did not allocate its {blocks} blocks");
        }
        h
    }

    /// Waits (bounded) for `vgpu run` to exit; true if it did.
    fn wait(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.run.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Closes its stdin (it frees and exits), killing `vgpu run` if it lingers.
    fn stop(&mut self) {
        drop(self.run.stdin.take());
        if !self.wait(Duration::from_secs(15)) {
            let _ = self.run.kill();
            let _ = self.run.wait();
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `vgpu ps --json ARGS...`, parsed; panics unless it exits 0.
fn ps_json(sim: &Sim, args: &[&std::ffi::OsStr]) -> Value {
    let out = run(sim.command(vgpu()).arg("ps").arg("--json").args(args), Duration::from_secs(30));
    assert!(out.status.success(), "vgpu ps failed: {}\n{}", out.status, text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ps --json is not JSON ({e}):\n{}", text(&out.stdout)))
}

fn region<'a>(doc: &'a Value, container: &str) -> &'a Value {
    doc["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .find(|r| r["container"] == container)
        .unwrap_or_else(|| panic!("no region {container} in {doc:#}"))
}

fn device(region: &Value, d: u64) -> &Value {
    region["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|x| x["device"] == d)
        .unwrap_or_else(|| panic!("no device {d} in {region:#}"))
}

fn only_process(region: &Value) -> &Value {
    let procs = region["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 1, "{region:#}");
    &procs[0]
}

fn process_bytes(p: &Value, d: u64) -> u64 {
    p["used"]
        .as_array()
        .expect("used")
        .iter()
        .find(|u| u["device"] == d)
        .and_then(|u| u["bytes"].as_u64())
        .unwrap_or_else(|| panic!("no device {d} in {p:#}"))
}

#[test]
fn ps_shows_a_holder_alive_then_dead_and_still_counted() {
    let sim = Sim::new();
    let path = sim.dir().join("ctr-a.cache");
    let mut holder = Holder::start(&sim, "1g", &path, 4);

    let doc = ps_json(&sim, &[path.as_os_str()]);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["skipped"].as_array().map(Vec::len), Some(0), "{doc:#}");
    let r = region(&doc, "ctr-a");
    assert_eq!(r["path"], path.display().to_string());
    // The all-devices quota is on every index; only device 0 is listed.
    assert_eq!(r["devices"].as_array().map(Vec::len), Some(1), "{r:#}");
    let d = device(r, 0);
    assert_eq!(d["quota_bytes"], 1u64 << 30);
    assert_eq!(d["used_bytes"], HELD_4);
    assert_eq!(d["free_bytes"], (1u64 << 30) - HELD_4);
    assert_eq!(d["peak_bytes"], HELD_4);
    assert_eq!(d["oom_refusals"], 0);
    assert_eq!(d["unattributed_bytes"], 0);
    assert!(d["sm_limit_percent"].is_null() && d["sm_achieved_percent"].is_null());
    let p = only_process(r);
    assert_eq!(p["state"], "alive", "{p:#}");
    assert_eq!(process_bytes(p, 0), HELD_4);
    let pid = p["pid"].as_u64().expect("pid") as i32;
    assert_ne!(pid, holder.run.id() as i32, "the pid is the program's, not vgpu run's");

    let human = run(sim.command(vgpu()).arg("ps").arg(&path), Duration::from_secs(30));
    let table = text(&human.stdout);
    assert!(human.status.success(), "{}", text(&human.stderr));
    assert!(table.contains("CONTAINER") && table.contains("320 MiB") && table.contains("alive"), "{table}");
    assert!(table.contains(&format!("ctr-a      {pid}")), "{table}");

    // SIGKILL: the process can free nothing; nobody reaps (tools only read), so its bytes
    // stay counted and it shows as dead.
    // SAFETY: kill(2) on a child process of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(holder.wait(Duration::from_secs(15)), "vgpu run did not exit");
    let doc = ps_json(&sim, &[path.as_os_str()]);
    let r = region(&doc, "ctr-a");
    let p = only_process(r);
    assert_eq!(p["state"], "dead", "{p:#}");
    assert_eq!(p["pid"], pid);
    assert_eq!(process_bytes(p, 0), HELD_4);
    assert_eq!(device(r, 0)["used_bytes"], HELD_4);
    // Reading it twice changes nothing.
    assert_eq!(ps_json(&sim, &[path.as_os_str()]), doc);
}

#[test]
fn ps_dir_lists_every_container_and_skips_corrupt_files() {
    let sim = Sim::new();
    let dir = sim.dir().join("regions");
    std::fs::create_dir_all(dir.join("pod-b")).expect("mkdir");
    let a = dir.join("ctr-a.cache");
    let b = dir.join("pod-b").join("vgpu.cache");
    let _ha = Holder::start(&sim, "1g", &a, 4);
    let _hb = Holder::start(&sim, "0=2Gi", &b, 2);
    // A truncated file and a file of the right size but another magic.
    std::fs::write(dir.join("junk.cache"), b"not a region").expect("write junk");
    let mut foreign = std::fs::read(&a).expect("read region");
    foreign[..8].copy_from_slice(b"NOTVGPU\0");
    std::fs::write(dir.join("foreign.cache"), foreign).expect("write foreign");

    let doc = ps_json(&sim, &["--dir".as_ref(), dir.as_os_str()]);
    let names: Vec<&str> =
        doc["regions"].as_array().expect("regions").iter().map(|r| r["container"].as_str().expect("container")).collect();
    assert_eq!(names, ["ctr-a", "pod-b"], "{doc:#}");
    assert_eq!(device(region(&doc, "ctr-a"), 0)["used_bytes"], HELD_4);
    let pb = region(&doc, "pod-b");
    assert_eq!(device(pb, 0)["quota_bytes"], 2u64 << 30);
    assert_eq!(device(pb, 0)["used_bytes"], 3 * 64 * MIB);
    assert_eq!(only_process(pb)["state"], "alive");

    let skipped = doc["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 2, "{doc:#}");
    let reason = |name: &str| {
        skipped
            .iter()
            .find(|s| s["container"] == name)
            .and_then(|s| s["reason"].as_str())
            .unwrap_or_else(|| panic!("{name} not skipped: {doc:#}"))
            .to_string()
    };
    assert!(reason("junk").contains("12 bytes"), "{}", reason("junk"));
    assert!(reason("foreign").contains("bad magic"), "{}", reason("foreign"));

    // Human mode: the same tables on stdout, one line per skipped file on stderr, status 0.
    let out = run(sim.command(vgpu()).arg("ps").arg("--dir").arg(&dir), Duration::from_secs(30));
    assert!(out.status.success());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains("ctr-a") && stdout.contains("pod-b") && stdout.contains("2 GiB"), "{stdout}");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(stderr.lines().all(|l| l.starts_with("skipped ") && l.contains(dir.to_str().unwrap())), "{stderr}");
}

#[test]
fn ps_counts_refusals_and_fails_only_without_sources() {
    let sim = Sim::new();
    let path = sim.dir().join("tight.cache");
    let out = run(
        sim.command(vgpu())
            .args(["run", "--sim", "--memory", "256m", "--region"])
            .arg(&path)
            .arg("--")
            .arg(c_programs().join("alloc_families"))
            .args(["--family", "cuMemAlloc_v2", "--size", "512m", "--no-copy"]),
        Duration::from_secs(60),
    );
    assert!(text(&out.stdout).contains("rc=2"), "{}", text(&out.stdout));
    let doc = ps_json(&sim, &[path.as_os_str()]);
    let r = region(&doc, "tight");
    assert_eq!(device(r, 0)["oom_refusals"], 1, "{r:#}");
    // The program exited normally; its slot waits for a reaper, holding nothing.
    let p = only_process(r);
    assert_eq!((p["state"].as_str(), process_bytes(p, 0)), (Some("dead"), 0));

    // With no PATH and no --dir, `vgpu ps` reads vgpu run's runtime directory (and HAMi's
    // /usr/local/vgpu/containers, absent here).
    let xdg = sim.dir().join("xdg");
    std::fs::create_dir_all(xdg.join("vgpu")).unwrap();
    std::fs::copy(&path, xdg.join("vgpu/run-7.region")).unwrap();
    let out = run(sim.command(vgpu()).args(["ps", "--json"]).env("XDG_RUNTIME_DIR", &xdg), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(device(region(&doc, "run-7"), 0)["oom_refusals"], 1, "{doc:#}");
    let missing = run(sim.command(vgpu()).args(["ps", "--dir"]).arg(sim.dir().join("absent")), Duration::from_secs(30));
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read"));
}

#[test]
fn top_refreshes_in_place_and_stops_after_its_iterations() {
    let sim = Sim::new();
    let path = sim.dir().join("ctr-a.cache");
    let _h = Holder::start(&sim, "1g", &path, 4);
    let start = Instant::now();
    let out = run(sim.command(vgpu()).args(["top", "--iterations", "2", "--interval", "0.2"]).arg(&path), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert_eq!(screen.matches("\x1b[H\x1b[2J").count(), 2, "{screen:?}");
    assert_eq!(screen.matches("vgpu top: every 0.2s").count(), 2, "{screen}");
    assert_eq!(screen.matches(" alive ").count(), 2, "{screen}");
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// A running exporter; killed when dropped.
struct Exporter {
    child: Child,
    addr: String,
    _stdout: Receiver<String>,
}

impl Exporter {
    fn start(sim: &Sim, sources: &[&std::ffi::OsStr]) -> Exporter {
        let mut child = sim
            .command(vgpu())
            .args(["exporter", "--listen", "127.0.0.1:0", "--sim"])
            .args(sources)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn exporter");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        let Some(addr) = line
            .as_ref()
            .ok()
            .and_then(|l| l.strip_prefix("listening on http://").and_then(|a| a.strip_suffix("/metrics")).map(str::to_string))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the exporter did not say where it listens: {line:?}");
        };
        Exporter { child, addr, _stdout: rx }
    }

    /// Sends `request` raw and returns the whole response.
    fn raw(&self, request: &[u8]) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.set_write_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(request).expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read response");
        resp
    }

    fn get(&self, path: &str) -> String {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr).as_bytes())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_exporter_serves_prometheus_metrics_over_loopback() {
    let sim = Sim::new();
    let dir = sim.dir().join("regions");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("ctr-a.cache");
    let _h = Holder::start(&sim, "1g", &path, 4);
    std::fs::write(dir.join("junk.cache"), b"junk").expect("write junk");
    let pid = only_process(region(&ps_json(&sim, &[path.as_os_str()]), "ctr-a"))["pid"].as_u64().expect("pid");

    let mut exp = Exporter::start(&sim, &["--dir".as_ref(), dir.as_os_str()]);
    let resp = exp.get("/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    let lines: Vec<&str> = body.lines().collect();
    for want in [
        "# TYPE vgpu_memory_quota_bytes gauge".to_string(),
        "vgpu_memory_quota_bytes{container=\"ctr-a\",device=\"0\"} 1073741824".into(),
        format!("vgpu_memory_used_bytes{{container=\"ctr-a\",device=\"0\"}} {HELD_4}"),
        format!("vgpu_memory_peak_bytes{{container=\"ctr-a\",device=\"0\"}} {HELD_4}"),
        "# TYPE vgpu_memory_oom_refusals_total counter".into(),
        "vgpu_memory_oom_refusals_total{container=\"ctr-a\",device=\"0\"} 0".into(),
        format!("vgpu_process_memory_used_bytes{{container=\"ctr-a\",device=\"0\",pid=\"{pid}\",state=\"alive\"}} {HELD_4}"),
        "vgpu_processes{container=\"ctr-a\",state=\"alive\"} 1".into(),
        "vgpu_processes{container=\"ctr-a\",state=\"dead\"} 0".into(),
        "vgpu_region_errors{container=\"ctr-a\"} 0".into(),
        "vgpu_region_errors{container=\"junk\"} 1".into(),
    ] {
        assert!(lines.contains(&want.as_str()), "no {want:?} in\n{body}");
    }
    // simgpu's NVML: one 16 GiB device, the holder's bytes among its used memory.
    let total = lines
        .iter()
        .find(|l| l.starts_with("vgpu_device_memory_total_bytes{device=\"0\",uuid=\"GPU-"))
        .unwrap_or_else(|| panic!("no device total in\n{body}"));
    assert!(total.ends_with(" 17179869184"), "{total}");
    let used: u64 = lines
        .iter()
        .find(|l| l.starts_with("vgpu_device_memory_used_bytes{device=\"0\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no device used in\n{body}"));
    assert!(used >= HELD_4, "{used}");
    assert!(lines.iter().any(|l| l.starts_with("vgpu_device_utilization_ratio{device=\"0\"")), "{body}");
    // No SM figures until the SM limiter records them; every sample's family is declared.
    assert!(!body.contains("vgpu_sm_"), "{body}");
    for l in lines.iter().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap_or("");
        assert!(body.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
    }

    // Anything else: 404, 405, 400; the server keeps serving.
    assert!(exp.get("/").starts_with("HTTP/1.1 404 "));
    assert!(exp.raw(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(exp.raw(b"\x00\xffgarbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    drop(TcpStream::connect(&exp.addr).expect("connect and hang up"));
    assert!(exp.get("/metrics?x=1").starts_with("HTTP/1.1 200 OK"));

    // SIGTERM stops it with status 0.
    // SAFETY: kill(2) on our child.
    assert_eq!(unsafe { libc::kill(exp.child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = exp.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the exporter ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_exporter_survives_slow_oversized_malformed_and_many_requests() {
    // A node daemon on the cluster network: slow clients (slowloris), a huge request head,
    // binary garbage and more connections than it serves at once must not stop it answering.
    let sim = Sim::new();
    let exp = Exporter::start(&sim, &["--dir".as_ref(), sim.dir().as_os_str()]);
    // Random bytes, many times.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let mut junk = Vec::new();
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push(x as u8);
        }
        junk.extend_from_slice(b"\r\n\r\n");
        let r = exp.raw(&junk);
        assert!(r.starts_with("HTTP/1.1 400 ") || r.starts_with("HTTP/1.1 405 ") || r.starts_with("HTTP/1.1 404 "), "{r}");
    }
    // A 1 MiB request head: answered 431 without reading it all.
    let mut big = TcpStream::connect(&exp.addr).expect("connect");
    big.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let head = format!("GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n\r\n", "a".repeat(1 << 20));
    let _ = big.write_all(head.as_bytes()); // may fail once the server has answered and closed
    let mut resp = String::new();
    let _ = big.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 431 "), "{}", &resp[..resp.len().min(200)]);
    // 300 clients that send half a request line and then nothing (more than the 256 served
    // at once): each is dropped after the read timeout, or refused at the cap.
    let mut slow = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = TcpStream::connect(&exp.addr) {
            let _ = s.write_all(b"GET /metr");
            slow.push(s);
        }
    }
    // Once the slow clients time out (3 s), a scrape is answered; it is retried while the cap
    // still holds (the connection is then closed unanswered).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(&exp.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        if r.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the exporter stopped answering: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(slow);
    assert!(exp.get("/metrics").starts_with("HTTP/1.1 200 OK"));
}
