//! Dashboards against what the exporter serves: every query of HAMi's dashboards and WebUI
//! that reads HAMi's node monitor finds a series in `vgpu exporter --hami-compat`'s scrape of a
//! vgpu container (examples/grafana/hami-queries.txt), and vgpu's own dashboard
//! (examples/grafana/vgpu-dashboard.json) is valid, each expression parses, and every metric it
//! names is one the exporter serves.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use vgpu_tests::*;

const POD_UID: &str = "5b3c8f0e-1d2a-4c6b-9e7f-0a1b2c3d4e5f";
const NAMESPACE: &str = "team-a";
const POD: &str = "infer-7d9f";
const CONTAINER: &str = "cuda";
const NODE: &str = "gpu-node-1";

/// A running exporter; killed when dropped.
struct Exporter {
    child: Child,
    addr: String,
}

impl Exporter {
    fn start(sim: &Sim, args: &[&std::ffi::OsStr]) -> Exporter {
        let mut child = sim
            .command(cargo_program("vgpu"))
            .args(["exporter", "--listen", "127.0.0.1:0", "--sim"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the exporter");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let addr = line.trim().strip_prefix("listening on http://").and_then(|a| a.strip_suffix("/metrics")).map(str::to_string);
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("the exporter did not say where it listens: {line:?}");
        };
        Exporter { child, addr }
    }

    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        body.to_string()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of a scrape.
struct Series {
    name: String,
    labels: HashMap<String, String>,
}

/// Parses a scrape with a Prometheus text-format parser (a line it cannot read fails the test).
fn parse_scrape(text: &str) -> Vec<Series> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a valid exposition");
    scrape
        .samples
        .into_iter()
        .map(|s| Series { name: s.metric, labels: s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
        .collect()
}

/// Every vector selector of `expr`: (metric name, matchers).
fn selectors(expr: &Expr, out: &mut Vec<(String, Vec<promql_parser::label::Matcher>)>) {
    match expr {
        Expr::VectorSelector(v) => out.push((v.name.clone().unwrap_or_default(), v.matchers.matchers.clone())),
        Expr::MatrixSelector(m) => out.push((m.vs.name.clone().unwrap_or_default(), m.vs.matchers.matchers.clone())),
        Expr::Aggregate(a) => selectors(&a.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Unary(u) => selectors(&u.expr, out),
        _ => {}
    }
}

/// Whether `series` satisfies every matcher (a missing label is the empty string).
fn matches(series: &Series, matchers: &[promql_parser::label::Matcher]) -> bool {
    matchers.iter().all(|m| {
        let v = series.labels.get(&m.name).map(String::as_str).unwrap_or("");
        match &m.op {
            MatchOp::Equal => v == m.value,
            MatchOp::NotEqual => v != m.value,
            MatchOp::Re(r) => r.is_match(v),
            MatchOp::NotRe(r) => !r.is_match(v),
        }
    })
}

/// Metric names a PromQL expression reads.
fn metric_names(query: &str) -> Vec<String> {
    let expr = parser::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut sel = Vec::new();
    selectors(&expr, &mut sel);
    sel.into_iter().map(|(n, _)| n).collect()
}

#[test]
fn hamis_dashboards_and_webui_find_a_series_for_a_vgpu_container() {
    let sim = Sim::new();
    let containers = sim.dir().join("containers");
    let ctr_dir = containers.join(format!("{POD_UID}_{CONTAINER}"));
    std::fs::create_dir_all(&ctr_dir).expect("mkdir");
    let pods = sim.dir().join("pods");
    std::fs::create_dir_all(pods.join(format!("{NAMESPACE}_{POD}_{POD_UID}")).join(CONTAINER)).expect("mkdir pods");
    // The container: a program at --sm 50 launching kernels (so its SM share is measured) in a
    // region laid out as HAMi's device plugin lays it out.
    let region = ctr_dir.join("3f1d.cache");
    let mut run = sim.command(cargo_program("vgpu"));
    run.args(["run", "--sim", "--memory", "1g", "--sm", "50", "--region"])
        .arg(&region)
        .arg("--")
        .arg(c_programs().join("launch"))
        .args(["--mode", "open", "--kernel", "spin_100us", "--duration", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut tenant = Background::spawn(&mut run);
    let exp = Exporter::start(
        &sim,
        &[
            "--hami-compat".as_ref(),
            "--node-name".as_ref(),
            NODE.as_ref(),
            "--pods-dir".as_ref(),
            pods.as_os_str(),
            "--dir".as_ref(),
            containers.as_os_str(),
        ],
    );
    // Wait until the scrape has the container's SM share (the controller measures it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = exp.scrape();
        if body.contains("Device_utilization_desc_of_container{") {
            break body;
        }
        assert!(Instant::now() < deadline, "no SM share for the container in\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    tenant.kill9();
    let mut series = parse_scrape(&body);
    // What HAMi's documented scrape config adds to every series of the node.
    for s in &mut series {
        s.labels.insert("node_name".into(), NODE.into());
    }
    let uuid = series
        .iter()
        .find(|s| s.name == "hami_vgpu_memory_used_bytes")
        .and_then(|s| s.labels.get("device_uuid").cloned())
        .unwrap_or_else(|| panic!("no hami_vgpu_memory_used_bytes in\n{body}"));
    assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "HAMi's 40-character UUID: {uuid:?}");
    for s in series.iter().filter(|s| s.name.starts_with("hami_") || s.name.starts_with("vGPU_") || s.name.starts_with("Device_")) {
        assert_eq!(s.labels.get("zone").map(String::as_str), Some("vGPU"), "{} lacks HAMi's zone label", s.name);
    }

    let queries = std::fs::read_to_string(repo_root().join("examples/grafana/hami-queries.txt")).expect("the query list");
    let mut checked = 0;
    for line in queries.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let query = line
            .replace("${node_name}", ".*")
            .replace("${uuid}", ".*")
            .replace("$namespace", ".*")
            .replace("{uuid}", &uuid)
            .replace("{namespace}", NAMESPACE)
            .replace("{pod}", POD)
            .replace("{container}", CONTAINER);
        if let Some(metric) = query.strip_prefix("label_values: ") {
            assert!(series.iter().any(|s| s.name == metric), "variable query over {metric}: no series");
            checked += 1;
            continue;
        }
        let expr = parser::parse(&query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let mut sel = Vec::new();
        selectors(&expr, &mut sel);
        assert!(!sel.is_empty(), "{query}: no selector");
        for (name, matchers) in sel {
            assert!(
                series.iter().any(|s| s.name == name && matches(s, &matchers)),
                "{query}\n  finds no series of {name} matching {matchers:?} in\n{body}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} queries checked");
    println!("{checked} HAMi queries find vgpu's series");
}

#[test]
fn vgpus_dashboard_is_valid_and_reads_only_what_the_exporter_serves() {
    let text = std::fs::read_to_string(repo_root().join("examples/grafana/vgpu-dashboard.json")).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string() && dash["panels"].is_array(), "a Grafana dashboard");
    // The metric names the exporter declares (its module documentation is the list).
    let source = std::fs::read_to_string(repo_root().join("cli/src/exporter.rs")).expect("exporter source");
    let served: Vec<String> = source
        .split("e.family(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next().map(str::to_string))
        .collect();
    assert!(served.len() > 10, "{served:?}");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push((p["title"].as_str().unwrap_or("").to_string(), e.to_string()));
            }
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str())
            && let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')).map(|(m, _)| m.to_string())
        {
            exprs.push((format!("variable {}", v["name"]), inner));
        }
    }
    assert!(exprs.len() >= 10, "panels with expressions: {}", exprs.len());
    for (title, e) in &exprs {
        let q = e.replace("$__rate_interval", "1m").replace("$container", ".*").replace("$device", ".*").replace("$node", ".*");
        for name in metric_names(&q) {
            assert!(served.contains(&name), "panel {title:?} reads {name}, which the exporter does not serve");
        }
    }
}
