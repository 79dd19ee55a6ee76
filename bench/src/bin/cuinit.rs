//! Helper process of the start-up benchmark (`benches/startup.rs`).
//!
//! `cuinit CTL ID`: `dlopen`s `libcuda.so.1` and looks up `cuInit` (with `libvgpu.so`
//! preloaded, that lookup hands out the shim's hook), parks until the benchmark releases phase
//! 1, times `cuInit(0)` alone (where the shim reads its configuration and opens or creates the
//! region), records it (elapsed and CPU time) in record `ID` of the control file, and stays
//! alive until phase 2, so that all the processes of a storm are alive together, as in a real
//! start.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint};
use std::path::PathBuf;
use std::sync::atomic::Ordering::*;

use vgpu_bench::{Ctl, now_ns, rec, thread_cpu_ns, word};

/// The record word (one [`rec`] leaves free) where the call's CPU time goes (ns).
const CPU_NS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, ctl, id] = args.as_slice() else {
        eprintln!("usage: cuinit CTL ID");
        std::process::exit(2);
    };
    let ctl = Ctl::open(&PathBuf::from(ctl));
    let id: usize = id.parse().expect("ID");
    let record = ctl.record(id);

    // SAFETY: dlopen with a NUL-terminated name.
    let handle = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "cuinit {id}: dlopen(libcuda.so.1) failed");
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, c"cuInit".as_ptr()) };
    assert!(!p.is_null(), "cuinit {id}: no cuInit");
    // SAFETY: `cuInit` has this C signature.
    let cu_init = unsafe { std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(c_uint) -> c_int>(p) };

    ctl.wait_phase(1);
    let (t0, c0) = (now_ns(), thread_cpu_ns());
    // SAFETY: cuInit with its only valid flags.
    let rc = unsafe { cu_init(0) };
    let (t1, c1) = (now_ns(), thread_cpu_ns());
    record[CPU_NS].store(c1 - c0, Relaxed);
    record[rec::T0].store(t0, Relaxed);
    record[rec::T1].store(t1, Relaxed);
    if rc != 0 {
        eprintln!("cuinit {id}: cuInit returned {rc}");
    }
    record[rec::OK].store(if rc == 0 { 1 } else { 2 }, Release);
    ctl.bump(word::DONE);
    ctl.wait_phase(2);
}
