//! Start-up storm: 256 processes open a region that does not exist yet, released together by
//! one futex wake.
//!
//! All must succeed; exactly one initialises the region; none may see a half-written header.
//! The API does not say whether `open` created or initialised the region, so the test infers
//! what it can:
//! * creation is `O_CREAT | O_EXCL`, so at most one process creates the file, and every
//!   worker reports the same inode; the file has the requested mode;
//! * a half-written header makes an opener fail (`BadMagic`, `NotReady`, `WrongSize`,
//!   `QuotaMismatch`): every `open` succeeds, and every worker reads back exactly the
//!   requested quotas on all 16 devices (odd devices unlimited, even ones distinct sizes), as
//!   does the file once everyone is in;
//! * registration is exact: the slot generations handed out are exactly 1..=256 (each claim
//!   took the next value of the header's counter, none lost or repeated), the 256 slots are
//!   distinct, and the bytes each worker then reserves add up in the device's `used`;
//! * a second initialisation after anyone registered is visible: an opener that finds the
//!   region unpublished initialises it with no limits before adopting its own quotas, so in
//!   the watched variant every registered worker keeps reading its quotas until all 256 are in,
//!   and none may ever see them change. (A second initialisation *before* anyone registered
//!   leaves no trace this test can see; it stores the same values.)
//!
//! A last test does the same on an empty file left by a creator that died before sizing it
//! (every opener may try to initialise it). The tests print p50 / p99 of open + registration.
mod common;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use common::*;
use vgpu_limiter::region::Region;
use vgpu_limiter::region::layout::{self, MAX_DEVICES};

const PROCESSES: usize = 256;

// Worker record words.
const R_PID: usize = 0;
const R_OK: usize = 1;
const R_T0: usize = 2;
const R_T1: usize = 3;
const R_GENERATION: usize = 4;
const R_SLOT: usize = 5;
const R_QUOTAS_OK: usize = 6;
const R_INO: usize = 7;
const R_OFF_QUOTAS: usize = 8;

const OK: u64 = 1;
const FAILED: u64 = 2;

/// Distinct quotas: even devices `(d + 1)` GiB + `d` bytes, odd devices unlimited.
fn quotas() -> [Option<u64>; MAX_DEVICES] {
    std::array::from_fn(|d| (d % 2 == 0).then_some((d as u64 + 1) * (1 << 30) + d as u64))
}

/// Worker entry point: does nothing unless started by a parent test with `VGPU_WORKER_ROLE`.
#[test]
fn worker() {
    match role().as_deref() {
        None => {}
        Some("open") => open_worker(),
        Some(other) => panic!("unknown worker role {other}"),
    }
}

fn open_worker() {
    let region: PathBuf = param("REGION");
    let ctl = Ctl::open(&param::<PathBuf>("CTL"));
    let id: usize = param("ID");
    let rec = ctl.record(id);
    rec[R_PID].store(u64::from(std::process::id()), Release);
    let q = quotas();
    ctl.wait_phase(1);
    let t0 = now_ns();
    let opened = Region::open(&region, &q, 0o600);
    let t1 = now_ns();
    rec[R_T0].store(t0, Relaxed);
    rec[R_T1].store(t1, Relaxed);
    let r = match opened {
        Ok(r) => r,
        Err(e) => {
            eprintln!("storm worker {id}: {e}");
            rec[R_OK].store(FAILED, Release);
            ctl.bump(word::DONE);
            ctl.wait_phase(2);
            return;
        }
    };
    let (slot, generation) = r.me();
    rec[R_SLOT].store(slot as u64, Relaxed);
    rec[R_GENERATION].store(generation, Relaxed);
    rec[R_QUOTAS_OK].store(u64::from((0..MAX_DEVICES).all(|d| r.quota(d) == q[d])), Relaxed);
    rec[R_INO].store(std::fs::metadata(&region).map(|m| m.ino()).unwrap_or(0), Relaxed);
    r.reserve(0, id as u64 + 1).expect("a few bytes fit").commit(0x1000);
    rec[R_OK].store(OK, Release);
    ctl.bump(word::DONE);
    if param::<u8>("WATCH") == 1 {
        let (n, done) = (param::<u32>("N"), ctl.word(word::DONE));
        let mut off = 0;
        while done.load(Acquire) < n {
            off += u64::from((0..MAX_DEVICES).any(|d| r.quota(d) != q[d]));
            std::thread::yield_now();
        }
        rec[R_OFF_QUOTAS].store(off, Relaxed);
    }
    // Hold the slot until the parent has looked at everyone.
    ctl.wait_phase(2);
}

/// With `watch`, every worker, once registered, keeps reading its quotas until all have
/// registered: in a new region nobody but its creator may initialise it, so they must never
/// change (a second initialiser would publish "unlimited" before adopting its own). Watching
/// costs CPU, so the latencies printed are those of a run without it.
fn storm(tag: &str, watch: bool, prepare: impl FnOnce(&Path)) {
    let _serial = serial();
    let start = Instant::now();
    let dir = tempdir(tag);
    let region = dir.join("region");
    let ctl_path = dir.join("ctl");
    let ctl = Ctl::create(&ctl_path, PROCESSES);
    prepare(&region);
    let mut workers = Workers::default();
    for i in 0..PROCESSES {
        workers.0.push(spawn_worker(
            "open",
            &[
                ("REGION", region.display().to_string()),
                ("CTL", ctl_path.display().to_string()),
                ("ID", i.to_string()),
                ("WATCH", u8::from(watch).to_string()),
                ("N", PROCESSES.to_string()),
            ],
        ));
    }
    let n = PROCESSES as u32;
    ctl.await_count(word::ARRIVED, n, Duration::from_secs(120), || {});
    let spawned = start.elapsed();
    let released = now_ns();
    ctl.release(1);
    ctl.await_count(word::DONE, n, Duration::from_secs(60), || {});
    let all_in = now_ns() - released;

    let failed: Vec<usize> = (0..PROCESSES).filter(|&i| ctl.record(i)[R_OK].load(Acquire) != OK).collect();
    assert!(failed.is_empty(), "{} of {PROCESSES} opens failed (workers {failed:?}; their errors are above)", failed.len());
    let rec = |i: usize, w: usize| ctl.record(i)[w].load(Acquire);
    let mut generations: Vec<u64> = (0..PROCESSES).map(|i| rec(i, R_GENERATION)).collect();
    generations.sort_unstable();
    assert_eq!(generations, (1..=PROCESSES as u64).collect::<Vec<_>>(), "slot generations");
    let mut slots: Vec<u64> = (0..PROCESSES).map(|i| rec(i, R_SLOT)).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), PROCESSES, "distinct slots");
    let bad_quotas: Vec<usize> = (0..PROCESSES).filter(|&i| rec(i, R_QUOTAS_OK) != 1).collect();
    assert!(bad_quotas.is_empty(), "workers {bad_quotas:?} read other quotas than those configured");
    let ino = rec(0, R_INO);
    assert!((0..PROCESSES).all(|i| rec(i, R_INO) == ino), "every worker opened the same file");

    let raw = RawView::open(&region);
    let h = raw.header();
    assert_eq!(h.magic.load(Acquire), layout::MAGIC);
    assert_eq!(h.version.load(Acquire), layout::LAYOUT_VERSION);
    assert_eq!(h.ready.load(Acquire), 1);
    assert_eq!(h.generation.load(Acquire), PROCESSES as u64);
    assert_eq!(h.slots_high.load(Acquire), n, "the lowest free slots were taken");
    for (d, want) in quotas().iter().enumerate() {
        assert_eq!(raw.quota(d), want.unwrap_or(layout::UNLIMITED), "device {d}'s quota in the file");
    }
    assert_eq!(raw.used(0), (1..=PROCESSES as u64).sum::<u64>(), "every worker's bytes counted once");
    assert_eq!(raw.live_slots(0).len(), PROCESSES);
    let mode = std::fs::metadata(&region).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "created with the requested mode");

    let off_quotas: u64 = (0..PROCESSES).map(|i| rec(i, R_OFF_QUOTAS)).sum();
    ctl.release(2);
    workers.join(Duration::from_secs(60));
    assert_eq!((raw.used(0), raw.live_slots(0).len()), (0, 0), "everyone left politely");

    let mut open: Vec<u64> = (0..PROCESSES).map(|i| rec(i, R_T1) - rec(i, R_T0)).collect();
    let mut since_release: Vec<u64> = (0..PROCESSES).map(|i| rec(i, R_T1).saturating_sub(released)).collect();
    open.sort_unstable();
    since_release.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    eprintln!(
        "storm ({tag}): {PROCESSES} processes, all opened, one initialisation, generations 1..={PROCESSES}; \
         open+register p50 {:.1} µs p99 {:.1} µs max {:.1} µs; from the release to registered p50 {:.1} µs p99 {:.1} µs; \
         all registered {:.1} µs after the release; {} header reads by registered workers saw other quotas; spawning took {spawned:.2?}, total {:.2?}",
        us(percentile(&open, 50.0)),
        us(percentile(&open, 99.0)),
        us(*open.last().unwrap()),
        us(percentile(&since_release, 50.0)),
        us(percentile(&since_release, 99.0)),
        us(all_in),
        off_quotas,
        start.elapsed()
    );
    if watch {
        assert_eq!(off_quotas, 0, "registered workers saw the quotas change: the region was initialised twice");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_hundred_fifty_six_processes_create_one_region() {
    storm("storm-new", false, |_| {});
}

#[test]
fn a_new_region_is_initialised_once_while_256_processes_watch_it() {
    for _ in 0..3 {
        storm("storm-watched", true, |_| {});
    }
}

#[test]
fn two_hundred_fifty_six_processes_adopt_a_region_whose_creator_died_before_sizing_it() {
    // The first opener to lock the file initialises it with no limits, then adopts its quotas:
    // a transient "unlimited" is expected here.
    storm("storm-orphan", false, |p| {
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p).unwrap();
    });
}
