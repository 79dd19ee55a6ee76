//! `cuInit`: the first hooked call of most programs, where the configuration is read (by the
//! edge's gate). A missing driver answers "no device", as a machine without one does.

use std::ffi::c_uint;
use std::sync::atomic::{AtomicBool, Ordering::*};

use cuda_sys::driver::CUresult;

use super::{Driver, Enforce};

/// Set once the real `cuInit` has succeeded in this (enforcing) process.
pub static CUDA_READY: AtomicBool = AtomicBool::new(false);

/// `cuInit`.
pub fn cu_init<D: Driver>(_e: &Enforce<D>, call: impl FnOnce() -> CUresult, _flags: c_uint) -> CUresult {
    let rc = call();
    if rc == CUresult::CUDA_SUCCESS {
        CUDA_READY.store(true, Release);
    }
    rc
}
