//! `vgpu ps`: who uses what, read from accounting regions without disturbing them.
//!
//! The regions are opened with [`Observer`] (read-only: no registration, no reaping, no
//! locks taken), so a tool can look at a running container's region at any time.
//!
//! # Which files, and their container names
//!
//! * Each `PATH` given on the command line is one region; its container is the file's stem
//!   (`/run/vgpu/web.cache` → `web`).
//! * `--dir DIR` takes every regular file (or symbolic link, reported as refused) directly
//!   in `DIR`, whose container is its stem, and every one in a subdirectory of `DIR` one level
//!   deep (`DIR/<pod>/<file>`: HAMi's per-container layout), whose container is the
//!   subdirectory's name; when a subdirectory holds several files, each is named
//!   `<subdirectory>/<stem>`. Nothing deeper is read.
//! * Should two regions still end up with the same name, each of them is named by its full
//!   path instead.
//!
//! # Which devices
//!
//! A device is listed when it is in use (bytes held or ever held, refusals, a process's
//! bytes, a known SM share) or has a quota. When every index has the same quota (the
//! all-devices `CUDA_DEVICE_MEMORY_LIMIT`), the region cannot tell which indices exist, so
//! then only device 0 and the devices in use are listed. Process rows show the region's
//! listed devices and any other device the process holds bytes on.
//!
//! # `--json` schema (version 1)
//!
//! ```text
//! {
//!   "schema": 1,
//!   "regions": [ {
//!     "container": "web",              // see above
//!     "path": "/run/vgpu/web.cache",
//!     "devices": [ {                   // see "Which devices" below
//!       "device": 0,                   // the index the container's applications see
//!       "quota_bytes": 1073741824,     // null: unlimited
//!       "used_bytes": 335544320,       // live processes and dead ones not yet reaped
//!       "free_bytes": 738197504,       // quota - used (0 when unlimited)
//!       "peak_bytes": 335544320,
//!       "oom_refusals": 0,             // allocations refused for the quota
//!       "unattributed_bytes": 0,       // counted, but held by no process slot
//!       "uuid": "GPU-8932f937-…",       // null until a process made a context on it
//!       "unhooked_bytes": 0,           // of used: what the driver holds for the container's
//!                                      // processes beyond what their hooks charged
//!       "sm_limit_percent": null,      // null: unknown or no SM limit
//!       "sm_achieved_percent": null
//!     } ],
//!     "processes": [ {
//!       "pid": 4242,                   // as the container sees it
//!       "host_pid": 91234,             // as the driver (and the host) knows it; null: not found
//!       "slot": 0,
//!       "generation": 1,
//!       "state": "alive",              // or "dead" (exited, bytes not yet reaped)
//!       "used": [ { "device": 0, "bytes": 335544320 } ]  // listed devices and nonzero ones
//!     } ]
//!   } ],
//!   "skipped": [ { "path": "/run/vgpu/junk", "container": "junk", "reason": "one line" } ],
//!   "priority": [ {                    // the node-wide priority board; [] when there is none
//!     "device_key": "0x1b2c…",         // hash of the device's UUID (the board's key)
//!     "busy": 1,                       // high-priority processes with work in flight now
//!     "entries": 2,                    // entries held by high-priority processes
//!     "waiting": 0                     // low-priority launches waiting, as the board says
//!   } ]
//! }
//! ```
//!
//! The board is written by every tenant, so `ps` reads a copy of it (never maps it) and shows
//! what it says; a tenant can make it say anything, and nothing it says can stall or crash
//! `ps`.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use vgpu_limiter::region::layout::{MAX_DEVICES, SmBucket};
use vgpu_limiter::region::{DeviceView, Observer};

/// The version of the `--json` document; bumped on any incompatible change.
pub const JSON_SCHEMA: u32 = 1;

/// Which region files to read (shared by `ps`, `top` and `exporter`).
#[derive(Args, Debug, Clone, Default)]
pub struct Sources {
    /// Region files to read.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Read every region in DIR and in its subdirectories one level deep. With neither PATH
    /// nor DIR: `vgpu run`'s runtime directory and /usr/local/vgpu/containers (HAMi's).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Arguments of `vgpu ps`.
#[derive(Args, Debug, Clone)]
pub struct PsArgs {
    /// The regions to read.
    #[command(flatten)]
    pub sources: Sources,
    /// Print one JSON document (schema 1, documented in cli/src/ps.rs).
    #[arg(long)]
    pub json: bool,
    /// The node-wide priority board to summarise (default: $VGPU_PRIORITY_BOARD, else the
    /// shim's default: /tmp/vgpulock/vgpu-priority.board where HAMi's directory exists, else
    /// /tmp/vgpu-priority.board).
    #[arg(long, value_name = "PATH")]
    pub priority_board: Option<PathBuf>,
}

/// The board `ps` reads: the flag, else the variable the shim reads, else the shim's default.
fn board_path(flag: &Option<PathBuf>) -> PathBuf {
    let configured = flag.clone().or_else(|| std::env::var_os(vgpu_limiter::config::VAR_PRIORITY_BOARD).map(PathBuf::from));
    vgpu_limiter::priority::board::path(configured.as_deref())
}

/// The board's sections as `ps` shows them, or one line saying why it cannot be read.
fn board_views(path: &Path) -> Result<Vec<vgpu_limiter::priority::board::SectionView>, String> {
    match vgpu_limiter::priority::board::snapshot(path, vgpu_limiter::priority::now_ns()) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(e) => Err(format!("priority board {}: {e}", path.display())),
    }
}

fn board_json(views: &[vgpu_limiter::priority::board::SectionView]) -> Value {
    Value::Array(
        views
            .iter()
            .map(|v| json!({"device_key": format!("{:#018x}", v.key), "busy": v.busy, "entries": v.owned, "waiting": v.waiters}))
            .collect(),
    )
}

fn render_board(views: &[vgpu_limiter::priority::board::SectionView]) -> String {
    if views.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> =
        views.iter().map(|v| vec![format!("{:#018x}", v.key), v.busy.to_string(), v.owned.to_string(), v.waiters.to_string()]).collect();
    format!("\npriority board\n{}", table(&["DEVICE KEY", "HIGH BUSY", "HIGH ENTRIES", "LOW WAITING"], &rows))
}

/// A file to read and the container it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The file.
    pub path: PathBuf,
    /// Its container's name (see the module's rule).
    pub container: String,
}

fn stem(p: &Path) -> String {
    p.file_stem().or_else(|| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// The entries of `dir`, sorted, without the `libvgpu.so*` mount points HAMi's device plugin
/// leaves in each container's directory (as HAMi's own monitor skips them) and without
/// dot-files (a region's creation lock and temporary build files).
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, std::fs::FileType)>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut v: Vec<_> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // HAMi's libvgpu.so mount points; vgpu's own .<region>.lock and build files.
            !name.contains("libvgpu.so") && !name.starts_with('.')
        })
        .filter_map(|e| e.file_type().ok().map(|t| (e.path(), t)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// The files named by `sources` (with neither paths nor `--dir`: those in [`default_dirs`]),
/// each with its container name. An unreadable `--dir` is an error; an unreadable
/// subdirectory or default directory is left out.
pub fn discover(sources: &Sources) -> Result<Vec<Candidate>, String> {
    let mut out: Vec<Candidate> = sources.paths.iter().map(|p| Candidate { path: p.clone(), container: stem(p) }).collect();
    let dirs: Vec<PathBuf> = match &sources.dir {
        Some(d) => vec![d.clone()],
        None if sources.paths.is_empty() => default_dirs().into_iter().filter(|d| d.is_dir()).collect(),
        None => Vec::new(),
    };
    for dir in &dirs {
        // An unreadable --dir is an error; an unreadable default directory is just empty.
        let entries = if sources.dir.is_some() { sorted_entries(dir)? } else { sorted_entries(dir).unwrap_or_default() };
        for (path, t) in entries {
            if t.is_file() || t.is_symlink() {
                out.push(Candidate { container: stem(&path), path });
            } else if t.is_dir() {
                let sub = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let files: Vec<PathBuf> = sorted_entries(&path)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, t)| t.is_file() || t.is_symlink())
                    .map(|(p, _)| p)
                    .collect();
                let several = files.len() > 1;
                for f in files {
                    out.push(Candidate { container: if several { format!("{sub}/{}", stem(&f)) } else { sub.clone() }, path: f });
                }
            }
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in &out {
        *seen.entry(c.container.clone()).or_default() += 1;
    }
    for c in &mut out {
        if seen[&c.container] > 1 {
            c.container = c.path.display().to_string();
        }
    }
    Ok(out)
}

/// The SM limit and achieved share of a device, in percent, from its bucket line (see
/// `vgpu_limiter::sm::word`); `None` until a limit is set and the container's controller has
/// measured a share.
pub fn sm_share(bucket: &SmBucket) -> Option<(f64, f64)> {
    let b = vgpu_limiter::sm::Bucket::new(bucket);
    let limit = b.limit_permille()? as f64 / 10.0;
    let achieved = b.achieved_permille()? as f64 / 10.0;
    Some((limit, achieved))
}

/// Seconds launches of a device have waited for tokens, from its bucket line; `None` when no
/// SM limit was ever set on it.
pub fn sm_throttled_seconds(bucket: &SmBucket) -> Option<f64> {
    let b = vgpu_limiter::sm::Bucket::new(bucket);
    b.limit_permille()?;
    Some(b.throttled_ns() as f64 / 1e9)
}

/// One device of a region as the tools show it.
#[derive(Debug, Clone)]
pub struct DeviceSnap {
    /// The ledger's figures.
    pub view: DeviceView,
    /// `(limit %, achieved %)` when known.
    pub sm: Option<(f64, f64)>,
    /// Throttled time in seconds when the bucket records it.
    pub throttled_seconds: Option<f64>,
}

/// One process slot of a region.
#[derive(Debug, Clone)]
pub struct ProcessSnap {
    /// Slot index.
    pub slot: usize,
    /// PID as the container sees it.
    pub pid: u32,
    /// PID as the driver knows it (0: not found).
    pub host_pid: u32,
    /// Claim generation of the slot.
    pub generation: u64,
    /// Holds its slot's lock (false: dead, not yet reaped).
    pub alive: bool,
    /// `(device, bytes)` for the region's listed devices and any other nonzero one.
    pub used: Vec<(usize, u64)>,
}

/// One region read.
#[derive(Debug, Clone)]
pub struct RegionSnap {
    /// Container name.
    pub container: String,
    /// The file.
    pub path: PathBuf,
    /// The listed devices (see the module's rule).
    pub devices: Vec<DeviceSnap>,
    /// Claimed slots, live or dead-not-yet-reaped.
    pub processes: Vec<ProcessSnap>,
}

/// A file that could not be read as a region.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Container name.
    pub container: String,
    /// One line.
    pub reason: String,
}

/// Everything read in one pass.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Regions read, in discovery order.
    pub regions: Vec<RegionSnap>,
    /// Files skipped, with their reasons.
    pub skipped: Vec<Skipped>,
}

/// Reads one region.
pub fn read_region(c: &Candidate) -> Result<RegionSnap, String> {
    let obs = Observer::open(&c.path).map_err(|e| e.to_string())?;
    let processes_raw = obs.processes();
    let views: Vec<DeviceView> = (0..MAX_DEVICES).map(|d| obs.device_view(d)).collect();
    // One quota on every index is the all-devices variable: the region cannot tell which
    // indices exist, so only device 0 and the devices in use are listed then.
    let uniform = views[0].quota.is_some() && views.iter().all(|v| v.quota == views[0].quota);
    let mut devices = Vec::new();
    for (d, view) in views.into_iter().enumerate() {
        let bucket = obs.sm_bucket(d);
        let sm = sm_share(bucket);
        let held_by_process = processes_raw.iter().any(|p| p.used[d] > 0);
        let in_use = view.used > 0 || view.peak > 0 || view.refusals > 0 || view.unattributed > 0 || held_by_process || sm.is_some();
        let listed = in_use || (view.quota.is_some() && (!uniform || d == 0));
        if listed {
            devices.push(DeviceSnap { view, sm, throttled_seconds: sm_throttled_seconds(bucket) });
        }
    }
    let processes = processes_raw
        .into_iter()
        .map(|p| ProcessSnap {
            slot: p.slot,
            pid: p.pid,
            host_pid: p.host_pid,
            generation: p.generation,
            alive: p.alive,
            used: (0..MAX_DEVICES)
                .filter(|d| p.used[*d] > 0 || devices.iter().any(|x| x.view.device == *d))
                .map(|d| (d, p.used[d]))
                .collect(),
        })
        .collect();
    Ok(RegionSnap { container: c.container.clone(), path: c.path.clone(), devices, processes })
}

/// Reads every candidate; the ones that fail are listed as skipped.
pub fn snapshot_of(candidates: &[Candidate]) -> Snapshot {
    let mut s = Snapshot::default();
    for c in candidates {
        match read_region(c) {
            Ok(r) => s.regions.push(r),
            Err(reason) => s.skipped.push(Skipped { path: c.path.clone(), container: c.container.clone(), reason }),
        }
    }
    s
}

/// Discovers and reads the regions of `sources`.
pub fn snapshot(sources: &Sources) -> Result<Snapshot, String> {
    Ok(snapshot_of(&discover(sources)?))
}

/// Bytes for people: `0 B`, `512 KiB`, `64 MiB`, `1.50 GiB`.
pub fn bytes(b: u64) -> String {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;
    const T: u64 = 1 << 40;
    let (unit, name) = match b {
        _ if b >= T => (T, "TiB"),
        _ if b >= G => (G, "GiB"),
        _ if b >= M => (M, "MiB"),
        _ if b >= K => (K, "KiB"),
        _ => return format!("{b} B"),
    };
    if b.is_multiple_of(unit) { format!("{} {name}", b / unit) } else { format!("{:.2} {name}", b as f64 / unit as f64) }
}

fn pct(v: f64) -> String {
    format!("{v:.1}%")
}

/// Aligns rows under a header (columns separated by two spaces; the last is not padded).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l += c;
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out += l.trim_end();
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// The human view: a device table and a process table, each with a CONTAINER column.
pub fn render(s: &Snapshot) -> String {
    let mut dev_rows = Vec::new();
    let mut proc_rows = Vec::new();
    for r in &s.regions {
        for d in &r.devices {
            let v = &d.view;
            dev_rows.push(vec![
                r.container.clone(),
                v.device.to_string(),
                v.quota.map(bytes).unwrap_or_else(|| "unlimited".into()),
                bytes(v.used),
                bytes(v.unhooked),
                if v.quota.is_some() { bytes(v.free) } else { "-".into() },
                bytes(v.peak),
                v.refusals.to_string(),
                d.sm.map(|s| pct(s.0)).unwrap_or_else(|| "-".into()),
                d.sm.map(|s| pct(s.1)).unwrap_or_else(|| "-".into()),
            ]);
        }
        for p in &r.processes {
            let used: Vec<String> = p.used.iter().map(|(d, b)| format!("{d}:{}", bytes(*b))).collect();
            proc_rows.push(vec![
                r.container.clone(),
                p.pid.to_string(),
                if p.host_pid == 0 { "-".into() } else { p.host_pid.to_string() },
                p.slot.to_string(),
                if p.alive { "alive" } else { "dead" }.to_string(),
                if used.is_empty() { "-".into() } else { used.join(" ") },
            ]);
        }
    }
    let mut out = String::new();
    if s.regions.is_empty() {
        out += "no regions\n";
        return out;
    }
    out += &table(&["CONTAINER", "DEVICE", "QUOTA", "USED", "UNHOOKED", "FREE", "PEAK", "REFUSALS", "SM LIMIT", "SM ACHIEVED"], &dev_rows);
    out.push('\n');
    if proc_rows.is_empty() {
        out += "no processes\n";
    } else {
        out += &table(&["CONTAINER", "PID", "HOST PID", "SLOT", "STATE", "USED"], &proc_rows);
    }
    out
}

/// The skipped files, one line each.
pub fn render_skipped(s: &Snapshot) -> String {
    s.skipped.iter().map(|k| format!("skipped {}: {}\n", k.path.display(), k.reason)).collect()
}

/// The `--json` document (schema in the module's documentation).
pub fn to_json(s: &Snapshot) -> Value {
    let regions: Vec<Value> = s
        .regions
        .iter()
        .map(|r| {
            let devices: Vec<Value> = r
                .devices
                .iter()
                .map(|d| {
                    let v = &d.view;
                    json!({
                        "device": v.device,
                        "quota_bytes": v.quota,
                        "used_bytes": v.used,
                        "free_bytes": v.free,
                        "peak_bytes": v.peak,
                        "oom_refusals": v.refusals,
                        "unattributed_bytes": v.unattributed,
                        "unhooked_bytes": v.unhooked,
                        "uuid": v.uuid.as_ref().map(vgpu_limiter::region::uuid_string),
                        "sm_limit_percent": d.sm.map(|s| s.0),
                        "sm_achieved_percent": d.sm.map(|s| s.1),
                    })
                })
                .collect();
            let processes: Vec<Value> = r
                .processes
                .iter()
                .map(|p| {
                    json!({
                        "pid": p.pid,
                        "host_pid": (p.host_pid != 0).then_some(p.host_pid),
                        "slot": p.slot,
                        "generation": p.generation,
                        "state": if p.alive { "alive" } else { "dead" },
                        "used": p.used.iter().map(|(d, b)| json!({"device": d, "bytes": b})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "container": r.container,
                "path": r.path.display().to_string(),
                "devices": devices,
                "processes": processes,
            })
        })
        .collect();
    let skipped: Vec<Value> = s
        .skipped
        .iter()
        .map(|k| {
            json!({
                "path": k.path.display().to_string(),
                "container": k.container,
                "reason": k.reason,
            })
        })
        .collect();
    json!({ "schema": JSON_SCHEMA, "regions": regions, "skipped": skipped })
}

/// Where regions are when no PATH or `--dir` names them: `vgpu run`'s runtime directory, and
/// the directory HAMi's device plugin mounts its containers' regions under.
pub fn default_dirs() -> Vec<PathBuf> {
    vec![crate::paths::runtime_dir(), PathBuf::from(HAMI_CONTAINERS_DIR)]
}

/// HAMi's per-container region directory on a node.
pub const HAMI_CONTAINERS_DIR: &str = "/usr/local/vgpu/containers";

/// Runs `vgpu ps`: 0 when it could look (even if files were skipped), 1 when it could not
/// (an unreadable `--dir`).
pub fn ps(args: PsArgs) -> i32 {
    let snap = match snapshot(&args.sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vgpu ps: {e}");
            return 1;
        }
    };
    let board = board_views(&board_path(&args.priority_board));
    if args.json {
        let mut doc = to_json(&snap);
        doc["priority"] = board_json(board.as_deref().unwrap_or_default());
        println!("{doc}");
    } else {
        let table = render(&snap);
        print!("{table}");
        if !table.is_empty() && !table.ends_with('\n') {
            println!();
        }
        if let Ok(views) = &board {
            print!("{}", render_board(views));
        }
        eprint!("{}", render_skipped(&snap));
    }
    if let Err(e) = board {
        eprintln!("vgpu ps: {e}");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.50 GiB");
        assert_eq!(bytes(1 << 30), "1 GiB");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB", "C"], &[vec!["xxx".into(), "y".into(), "z z".into()]]);
        assert_eq!(t, "A    BB  C\nxxx  y   z z\n");
    }

    #[test]
    fn container_names_follow_the_rule() {
        let dir = std::env::temp_dir().join(format!("vgpu-ps-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pod-a")).unwrap();
        std::fs::create_dir_all(dir.join("pod-b/deeper")).unwrap();
        std::fs::write(dir.join("top.cache"), b"").unwrap();
        std::fs::write(dir.join("pod-a/x.cache"), b"").unwrap();
        std::fs::write(dir.join("pod-b/1.cache"), b"").unwrap();
        std::fs::write(dir.join("pod-b/2.cache"), b"").unwrap();
        std::fs::write(dir.join("pod-b/deeper/no.cache"), b"").unwrap();
        let c = discover(&Sources { paths: vec![PathBuf::from("/elsewhere/solo.region")], dir: Some(dir.clone()) }).unwrap();
        let names: Vec<&str> = c.iter().map(|c| c.container.as_str()).collect();
        assert_eq!(names, ["solo", "pod-a", "pod-b/1", "pod-b/2", "top"]);
        let dup = discover(&Sources { paths: vec![PathBuf::from("/a/r.cache"), PathBuf::from("/b/r.cache")], dir: None }).unwrap();
        assert_eq!(dup[0].container, "/a/r.cache");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_all_zero_bucket_has_no_sm_figures() {
        let b = SmBucket { words: Default::default() };
        assert_eq!(sm_share(&b), None);
        assert_eq!(sm_throttled_seconds(&b), None);
    }
}
