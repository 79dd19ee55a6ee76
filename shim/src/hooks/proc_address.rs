//! `cuGetProcAddress` and `_v2`. The real driver answers first; if the pointer it returned
//! is the real function behind one of our hooks, the caller gets the hook instead. Matching
//! the returned pointer (not the requested name) hands out exactly the ABI variant the driver
//! chose for (name, version, flags): `_v2`, `_v3`, `_ptsz`, `_ptds`, never a guess. A driver
//! (or an injected profiler) may answer with addresses that are not its exports: then the
//! variant is found by name, version and flags as the driver's ABI versioning defines them.

use std::ffi::{CStr, c_int, c_void};
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

/// Our hook for the variant that (`symbol`, `version`, `flags`) names by the driver's ABI
/// versioning ([`variants`](super::variants)), for an answer whose address is none of the
/// exports we resolved: a driver or an injected profiler that hands out its own addresses.
/// The hook then calls the exported variant.
fn hook_by_name(symbol: Option<&CStr>, version: c_int, flags: u64) -> Option<*mut c_void> {
    let name = super::variants::variant(symbol?.to_str().ok()?, version, flags)?;
    HOOKS.iter().find(|h| h.name == name).map(|h| h.export as *mut c_void)
}

/// Swaps a successful answer for our hook where we have one: by the address the driver gave
/// (the exported variant it chose), else by name. A NULL answer (the CUDA 12 ABI's "not
/// found") stays NULL: neither lookup runs for it.
fn swap(rc: CUresult, pfn: Out<*mut c_void>, symbol: Option<&CStr>, version: c_int, flags: u64) -> CUresult {
    if rc == CUresult::CUDA_SUCCESS
        && let Some(answer) = pfn.written().filter(|p| !p.is_null())
        && let Some(hook) = hook_for_real(answer).or_else(|| hook_by_name(symbol, version, flags))
    {
        pfn.overwrite(hook);
    }
    rc
}

/// `cuGetProcAddress` (CUDA 11.3 ABI).
pub fn get_proc_address<D: Driver>(
    _e: &Enforce<D>,
    call: impl FnOnce() -> CUresult,
    symbol: Option<&CStr>,
    pfn: Out<*mut c_void>,
    version: c_int,
    flags: u64,
) -> CUresult {
    swap(call(), pfn, symbol, version, flags)
}

/// `cuGetProcAddress_v2` (CUDA 12 ABI).
pub fn get_proc_address_v2<D: Driver>(
    _e: &Enforce<D>,
    call: impl FnOnce() -> CUresult,
    symbol: Option<&CStr>,
    pfn: Out<*mut c_void>,
    version: c_int,
    flags: u64,
    _status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    swap(call(), pfn, symbol, version, flags)
}
