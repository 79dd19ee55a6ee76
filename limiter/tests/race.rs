//! Racing processes on one device's quota: zero over-quota successes, whatever the race.
//!
//! N real processes (N = 2, 8, 32, 64) share one region. Each round they are released
//! together by one futex wake and, in a *fill* round, each reserves and commits fixed-size
//! chunks (sizes differ between workers) until it is refused; in a *mixed* round each does a
//! random run of reserve / commit / shrink / rollback / release. Then every worker reports what
//! it holds, and the parent checks, reading the region file's own words:
//!
//! * the bytes held by all workers together never exceed the quota (the over-quota count is 0),
//!   and `used` never exceeded the quota at any sampled moment during the round;
//! * the device's `used` equals the sum of what the workers hold, and each worker's slot holds
//!   exactly what that worker says it holds;
//! * a fill round leaves less free than the smallest chunk (no spurious refusals);
//! * after the release phase of every round `used` is 0 again.
mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use common::*;
use vgpu_limiter::region::Region;

/// Smallest chunk; worker `i` uses `BASE * (1 + i % 4) + i % 3`.
const BASE: u64 = 12_289;
/// Random operations per worker in a churn phase.
const CHURN_OPS: u32 = 200;
/// Chunks of `BASE` bytes in the quota per worker (a fill round averages 2.5 `BASE` a chunk).
const BASES_PER_WORKER: u64 = 400;

// Worker record words.
const R_PID: usize = 0;
const R_HELD: usize = 1;
const R_OK: usize = 2;
const R_REFUSED: usize = 3;
const R_T0: usize = 4;
const R_T1: usize = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Fill,
    Churn,
}

fn chunk_of(i: usize) -> u64 {
    BASE * (1 + i as u64 % 4) + i as u64 % 3
}

/// Worker entry point: does nothing unless started by a parent test with `VGPU_WORKER_ROLE`.
#[test]
fn worker() {
    match role().as_deref() {
        None => {}
        Some("race") => race_worker(),
        Some(other) => panic!("unknown worker role {other}"),
    }
}

fn race_worker() {
    let region: PathBuf = param("REGION");
    let ctl = Ctl::open(&param::<PathBuf>("CTL"));
    let id: usize = param("ID");
    let rounds: u32 = param("ROUNDS");
    let quota: u64 = param("QUOTA");
    let chunk = chunk_of(id);
    let r = Region::open(&region, &quota0(quota), 0o600).unwrap_or_else(|e| panic!("worker {id}: {e}"));
    let rec = ctl.record(id);
    rec[R_PID].store(u64::from(std::process::id()), Release);
    let mut rng = Rng::new(((id as u64) << 32) ^ u64::from(std::process::id()));
    let mut held: Vec<(u64, u64)> = Vec::new();
    let mut next_key = (id as u64 + 1) << 40;
    let mut phase = 0;
    for _round in 1..=rounds {
        for kind in [Phase::Fill, Phase::Churn] {
            phase += 1;
            ctl.wait_phase(phase);
            let (mut ok, mut refused) = (0u64, 0u64);
            rec[R_T0].store(now_ns(), Relaxed);
            match kind {
                // Chunk after chunk until refused; nobody releases during this phase. The
                // occasional yield lets many more processes than cores be mid-fill at once.
                Phase::Fill => loop {
                    if rng.below(8) == 0 {
                        std::thread::yield_now();
                    }
                    match r.reserve(0, chunk) {
                        Ok(res) => {
                            next_key += 4096;
                            res.commit(next_key);
                            held.push((next_key, chunk));
                            ok += 1;
                        }
                        Err(_) => {
                            refused += 1;
                            break;
                        }
                    }
                },
                // Starting full: random reserve / commit / shrink / rollback / release at the
                // quota's edge, every release raced for by the others.
                Phase::Churn => {
                    for _ in 0..CHURN_OPS {
                        if rng.below(8) == 0 {
                            std::thread::yield_now();
                        }
                        if held.is_empty() || rng.below(2) == 0 {
                            let bytes = chunk * (1 + rng.below(2)) + rng.below(4096);
                            match r.reserve(0, bytes) {
                                Ok(mut res) => {
                                    let keep = match rng.below(8) {
                                        0 => {
                                            drop(res); // rolled back
                                            continue;
                                        }
                                        1 => {
                                            res.shrink_to(bytes / 2 + 1);
                                            bytes / 2 + 1
                                        }
                                        _ => bytes,
                                    };
                                    next_key += 4096;
                                    res.commit(next_key);
                                    held.push((next_key, keep));
                                    ok += 1;
                                }
                                Err(_) => refused += 1,
                            }
                        } else {
                            let (k, b) = held.swap_remove(rng.below(held.len() as u64) as usize);
                            assert_eq!(r.release(k), Some((0, b)), "worker {id}: release of key {k:#x}");
                        }
                    }
                }
            }
            rec[R_T1].store(now_ns(), Relaxed);
            rec[R_HELD].store(held.iter().map(|h| h.1).sum(), Release);
            rec[R_OK].store(ok, Release);
            rec[R_REFUSED].store(refused, Release);
            assert_eq!(r.my_usage(0), rec[R_HELD].load(Relaxed), "worker {id}: my slot disagrees with my allocations");
            ctl.bump(word::DONE);
        }

        phase += 1;
        ctl.wait_phase(phase);
        for (k, b) in held.drain(..) {
            assert_eq!(r.release(k), Some((0, b)), "worker {id}: release of key {k:#x}");
        }
        rec[R_HELD].store(0, Release);
        ctl.bump(word::DONE);
    }
}

fn race(n: usize, rounds: u32) {
    let _serial = serial();
    let start = Instant::now();
    let dir = tempdir("race");
    let region = dir.join("region");
    let ctl_path = dir.join("ctl");
    // About 160 chunks per worker per fill round; not a multiple of any chunk.
    let quota = n as u64 * BASES_PER_WORKER * BASE + BASE / 2;
    let min_chunk = (0..n).map(chunk_of).min().unwrap();
    let ctl = Ctl::create(&ctl_path, n);
    // The parent's own handle (holds nothing) creates the region; RawView reads its words.
    let observer = Region::open(&region, &quota0(quota), 0o600).unwrap();
    let raw = RawView::open(&region);

    let mut workers = Workers::default();
    for i in 0..n {
        workers.0.push(spawn_worker(
            "race",
            &[
                ("REGION", region.display().to_string()),
                ("CTL", ctl_path.display().to_string()),
                ("ID", i.to_string()),
                ("ROUNDS", rounds.to_string()),
                ("QUOTA", quota.to_string()),
            ],
        ));
    }

    let n32 = n as u32;
    let timeout = Duration::from_secs(60);
    let mut phase = 0u32;
    let (mut over_phases, mut bytes_beyond, mut max_sample, mut samples) = (0u32, 0u64, 0u64, 0u64);
    let (mut successes, mut refusals) = (0u64, 0u64);
    // How many workers were inside a phase's work at one instant (evidence of a real race).
    let (mut overlap_sum, mut overlap_max) = (0usize, 0usize);
    for round in 1..=rounds {
        for kind in [Phase::Fill, Phase::Churn] {
            phase += 1;
            ctl.await_count(word::ARRIVED, n32 * phase, timeout, || {});
            ctl.release(phase);
            ctl.await_count(word::DONE, n32 * phase, timeout, || {
                let u = raw.used(0);
                samples += 1;
                max_sample = max_sample.max(u);
                assert!(u <= quota, "round {round} {kind:?}: used {u} above the quota {quota} while racing");
            });

            // Every worker has reported and is parked: the region is quiescent.
            let held: Vec<u64> = (0..n).map(|i| ctl.record(i)[R_HELD].load(Acquire)).collect();
            let sum: u64 = held.iter().sum();
            successes += (0..n).map(|i| ctl.record(i)[R_OK].load(Acquire)).sum::<u64>();
            refusals += (0..n).map(|i| ctl.record(i)[R_REFUSED].load(Acquire)).sum::<u64>();
            if sum > quota {
                over_phases += 1;
                bytes_beyond += sum - quota;
            }
            let overlap = max_overlap(&ctl, n);
            overlap_sum += overlap;
            overlap_max = overlap_max.max(overlap);
            let used = raw.used(0);
            assert_eq!(used, sum, "round {round} {kind:?}: used {used} != sum held by the workers {sum}");
            let slots = raw.live_slots(0);
            for (i, h) in held.iter().enumerate() {
                let pid = ctl.record(i)[R_PID].load(Acquire) as u32;
                let in_slot: Vec<u64> = slots.iter().filter(|s| s.1 == pid).map(|s| s.3).collect();
                assert_eq!(in_slot, vec![*h], "round {round} {kind:?}: worker {i} (pid {pid}) slot usage vs its report");
            }
            if kind == Phase::Fill {
                assert!(quota - used < min_chunk, "round {round}: a fill stopped with {} free, a chunk is {min_chunk}", quota - used);
            }
        }

        phase += 1;
        ctl.await_count(word::ARRIVED, n32 * phase, timeout, || {});
        ctl.release(phase);
        ctl.await_count(word::DONE, n32 * phase, timeout, || {});
        assert_eq!(raw.used(0), 0, "round {round}: everything released, yet used is {}", raw.used(0));
    }
    workers.join(timeout);

    let v = observer.device_view(0);
    assert_eq!((raw.used(0), v.unattributed), (0, 0));
    assert!(v.peak <= quota, "peak {} above the quota {quota}", v.peak);
    assert_eq!(observer.processes().len(), 1, "every worker left its slot");
    assert_eq!((over_phases, bytes_beyond), (0, 0), "over-quota successes");
    eprintln!(
        "race N={n}: {rounds} rounds of fill + churn, {successes} successes, {refusals} refusals, \
         over-quota phases 0, bytes beyond quota 0, peak {}/{quota}, {samples} mid-phase samples of used (max {max_sample}); \
         workers racing at once: mean {:.1}, max {overlap_max}; {:.2?}",
        v.peak,
        overlap_sum as f64 / f64::from(2 * rounds),
        start.elapsed()
    );
    drop(observer);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The largest number of workers whose work intervals of this round contain one instant.
fn max_overlap(ctl: &Ctl, n: usize) -> usize {
    let mut edges: Vec<(u64, i32)> =
        (0..n).flat_map(|i| [(ctl.record(i)[R_T0].load(Acquire), 1), (ctl.record(i)[R_T1].load(Acquire), -1)]).collect();
    edges.sort_unstable_by_key(|e| (e.0, e.1));
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in edges {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[test]
fn two_processes_never_exceed_the_quota() {
    race(2, 2500);
}

#[test]
fn eight_processes_never_exceed_the_quota() {
    race(8, 1200);
}

#[test]
fn thirty_two_processes_never_exceed_the_quota() {
    race(32, 400);
}

#[test]
fn sixty_four_processes_never_exceed_the_quota() {
    race(64, 200);
}
