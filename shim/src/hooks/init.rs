//! `cuInit`: the first hooked call of most programs, where the configuration is read.
#![allow(unsafe_code)]

use std::ffi::c_uint;
use std::sync::atomic::{AtomicBool, Ordering::*};

use cuda_sys::driver::CUresult;

use super::{Gate, REFUSED, gate};
use crate::table::real;

/// Set once the real `cuInit` has succeeded in this process.
pub static CUDA_READY: AtomicBool = AtomicBool::new(false);

/// `cuInit`: fails closed on a bad configuration; a missing driver is "no device".
pub unsafe fn cu_init(flags: c_uint) -> CUresult {
    let Some(f) = real::cuInit() else {
        return CUresult::CUDA_ERROR_NO_DEVICE;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's argument.
    let rc = unsafe { f(flags) };
    if rc == CUresult::CUDA_SUCCESS {
        CUDA_READY.store(true, Release);
    }
    rc
}
