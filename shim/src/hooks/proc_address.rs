//! `cuGetProcAddress` and `_v2`. The real driver answers first; if the pointer it returned
//! is the real function behind one of our hooks, the caller gets the hook instead. Matching
//! the returned pointer (not the requested name) hands out exactly the ABI variant the driver
//! chose for (name, version, flags): `_v2`, `_v3`, `_ptsz`, `_ptds`, never a guess.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering::*};

use cuda_sys::driver::{CUdriverProcAddressQueryResult, CUresult};

use super::{Gate, NO_DRIVER, REFUSED, gate};
use crate::real::{Lib, resolve};
use crate::table::{HOOKS, real};

/// Our hook for the real driver function at `p`, if we hook it.
fn hook_for_real(p: *mut c_void) -> Option<*mut c_void> {
    static RESOLVED: AtomicBool = AtomicBool::new(false);
    if !RESOLVED.load(Acquire) {
        for h in HOOKS.iter().filter(|h| h.lib == Lib::Cuda) {
            resolve(Lib::Cuda, h.cname, h.real);
        }
        RESOLVED.store(true, Release);
    }
    HOOKS.iter().find(|h| h.lib == Lib::Cuda && h.real.load(Acquire) == p).map(|h| h.export as *mut c_void)
}

/// Swaps a successful answer for our hook where we have one.
///
/// # Safety
/// `pfn` is null or valid for reads and writes.
unsafe fn swap(rc: CUresult, pfn: *mut *mut c_void) -> CUresult {
    if rc == CUresult::CUDA_SUCCESS && !pfn.is_null() {
        // SAFETY: per this function's contract.
        unsafe {
            if let Some(hook) = hook_for_real(*pfn) {
                *pfn = hook;
            }
        }
    }
    rc
}

/// `cuGetProcAddress` (CUDA 11.3 ABI).
pub unsafe fn get_proc_address(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64) -> CUresult {
    let Some(f) = real::cuGetProcAddress() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's arguments, then fixing up what the driver wrote.
    unsafe { swap(f(symbol, pfn, version, flags), pfn) }
}

/// `cuGetProcAddress_v2` (CUDA 12 ABI).
pub unsafe fn get_proc_address_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    let Some(f) = real::cuGetProcAddress_v2() else {
        return NO_DRIVER;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's arguments, then fixing up what the driver wrote.
    unsafe { swap(f(symbol, pfn, version, flags, status), pfn) }
}
