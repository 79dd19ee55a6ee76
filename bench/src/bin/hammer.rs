//! Helper process of the region benchmarks.
//!
//! * `hammer hammer REGION CTL ID`: opens the region and loops reserve / commit / release of
//!   4 KiB on device 0 until killed, counting its operations in record `ID` of the control file.
//!   It runs at normal priority: hammers at a lower one starve on a shared machine and then
//!   contend with nothing.
//! * `hammer open REGION CTL ID`: parks until the benchmark releases phase 1, times
//!   `Region::open` (open + validation + slot registration), records it, and holds its slot
//!   until phase 2.
#![deny(unsafe_code)]
use std::path::PathBuf;
use std::sync::atomic::Ordering::*;

use vgpu_bench::{Ctl, now_ns, quotas, rec, word};
use vgpu_limiter::region::Region;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, region, ctl, id] = args.as_slice() else {
        eprintln!("usage: hammer hammer|open REGION CTL ID");
        std::process::exit(2);
    };
    let region = PathBuf::from(region);
    let ctl = Ctl::open(&PathBuf::from(ctl));
    let id: usize = id.parse().expect("ID");
    match mode.as_str() {
        "hammer" => hammer(&region, &ctl, id),
        "open" => open(&region, &ctl, id),
        other => panic!("unknown mode {other}"),
    }
}

fn hammer(region: &std::path::Path, ctl: &Ctl, id: usize) {
    let r = Region::open(region, &quotas(), 0o600).unwrap_or_else(|e| panic!("hammer {id}: {e}"));
    let ops = &ctl.record(id)[rec::OPS];
    let key = 0x7f00_0000_0000 + ((id as u64) << 20);
    let mut n = 0u64;
    loop {
        let res = r.reserve(0, 4096).expect("the benchmark quota never refuses");
        res.commit(key);
        r.release(key);
        n += 1;
        if n.is_multiple_of(256) {
            ops.store(n, Relaxed);
        }
    }
}

fn open(region: &std::path::Path, ctl: &Ctl, id: usize) {
    let record = ctl.record(id);
    ctl.wait_phase(1);
    let t0 = now_ns();
    let r = Region::open(region, &quotas(), 0o600);
    let t1 = now_ns();
    record[rec::T0].store(t0, Relaxed);
    record[rec::T1].store(t1, Relaxed);
    if let Err(e) = &r {
        eprintln!("opener {id}: {e}");
    }
    record[rec::OK].store(if r.is_ok() { 1 } else { 2 }, Release);
    ctl.bump(word::DONE);
    ctl.wait_phase(2);
}
