//! `cuGetProcAddress` and `_v2`. The real driver answers first; if the pointer it returned
//! is the real function behind one of our hooks, the caller gets the hook instead. Matching
//! the returned pointer (not the requested name) hands out exactly the ABI variant the driver
//! chose for (name, version, flags): `_v2`, `_v3`, `_ptsz`, `_ptds`, never a guess.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering::*};

use cuda_sys::driver::{CUdriverProcAddressQueryResult, CUresult};

use super::args::Out;
use super::{Driver, Enforce};
use crate::real::{Lib, resolve};
use crate::table::HOOKS;

/// Our hook for the real driver function at `p` (not NULL), if we hook it.
fn hook_for_real(p: *mut c_void) -> Option<*mut c_void> {
    if p.is_null() {
        return None;
    }
    static RESOLVED: AtomicBool = AtomicBool::new(false);
    if !RESOLVED.load(Acquire) {
        for h in HOOKS.iter().filter(|h| h.lib == Lib::Cuda) {
            resolve(Lib::Cuda, h.cname, h.real);
        }
        RESOLVED.store(true, Release);
    }
    HOOKS.iter().find(|h| h.lib == Lib::Cuda && h.real.load(Acquire) == p).map(|h| h.export as *mut c_void)
}

/// Swaps a successful answer for our hook where we have one. A NULL answer (the CUDA 12 ABI's
/// "not found") stays NULL: [`hook_for_real`] never matches it to an unresolved slot.
fn swap(rc: CUresult, pfn: Out<*mut c_void>) -> CUresult {
    if rc == CUresult::CUDA_SUCCESS
        && let Some(hook) = pfn.written().and_then(hook_for_real)
    {
        pfn.overwrite(hook);
    }
    rc
}

/// `cuGetProcAddress` (CUDA 11.3 ABI).
pub fn get_proc_address<D: Driver>(
    _e: &Enforce<D>,
    call: impl FnOnce() -> CUresult,
    _symbol: *const c_char,
    pfn: Out<*mut c_void>,
    _version: c_int,
    _flags: u64,
) -> CUresult {
    swap(call(), pfn)
}

/// `cuGetProcAddress_v2` (CUDA 12 ABI).
pub fn get_proc_address_v2<D: Driver>(
    _e: &Enforce<D>,
    call: impl FnOnce() -> CUresult,
    _symbol: *const c_char,
    pfn: Out<*mut c_void>,
    _version: c_int,
    _flags: u64,
    _status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    swap(call(), pfn)
}
