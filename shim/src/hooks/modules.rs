//! Module and library loads: a module's global variables (`__device__`, `__constant__`, `__managed__`) and
//! its code take device memory while it is loaded, sized by the program (a bypass if not
//! charged). What a load took is measured, not parsed from the image: the growth of this
//! process's own NVML usage across the call (`accounting::own_growth`), so whatever the driver
//! reserves for the module counts. The load is checked after the fact: past the quota, the
//! module is unloaded and the load refused with `CUDA_ERROR_OUT_OF_MEMORY`. Refunded at unload.
//! Where NVML does not list the process (another PID namespace) nothing is charged here.
//!
//! Libraries (`cuLibraryLoadData`, CUDA 12's context-independent loading) are measured the same
//! way on the current device. What a library takes later (lazy loading, a context created
//! after the load) is not seen by any hook.

use std::ffi::{c_char, c_uint, c_void};

use cuda_sys::driver::{CUjit_option, CUlibrary, CUlibraryOption, CUmodule, CUresult};
use vgpu_limiter::accounting;

use super::args::Out;
use super::memory::free_key;
use super::{Driver, Enforce};
use crate::log;

use CUresult as R;

/// What a load made: a module or a library, to unload if the load is refused.
enum Loaded {
    Module,
    Library,
}

/// Shared body of the loads: `handle` is what the load writes.
fn loaded<D: Driver, T>(e: &Enforce<D>, kind: Loaded, handle: Out<*mut T>, call: impl FnOnce() -> R) -> R {
    let Ok(device) = e.current_device() else { return call() };
    let (before, charged_before) = (super::hostpid::usage(e, device as i32), e.region.my_usage(device));
    let rc = call();
    if rc != R::CUDA_SUCCESS {
        return rc;
    }
    let meanwhile = e.region.my_usage(device).saturating_sub(charged_before);
    let bytes = accounting::own_growth(before, super::hostpid::usage(e, device as i32), meanwhile);
    let Some(m) = handle.written().filter(|m| !m.is_null() && bytes > 0) else { return rc };
    match e.region.reserve_or(device, bytes, || super::pools::resync_all(e)) {
        Ok(r) => {
            r.commit(m as u64);
            rc
        }
        Err(refused) => {
            log::warn(format_args!(
                "device {device}: out of quota: refusing a {} load that took {} bytes ({} of {} bytes in use)",
                match kind {
                    Loaded::Module => "module",
                    Loaded::Library => "library",
                },
                refused.requested,
                refused.used,
                refused.quota
            ));
            let _ = match kind {
                Loaded::Module => e.driver.module_unload(m as u64),
                Loaded::Library => e.driver.library_unload(m as u64),
            };
            R::CUDA_ERROR_OUT_OF_MEMORY
        }
    }
}

/// `cuModuleLoad`.
pub fn load<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, module: Out<CUmodule>, _fname: *const c_char) -> R {
    loaded(e, Loaded::Module, module, call)
}

/// `cuModuleLoadData`.
pub fn load_data<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, module: Out<CUmodule>, _image: *const c_void) -> R {
    loaded(e, Loaded::Module, module, call)
}

/// `cuModuleLoadDataEx`.
pub fn load_data_ex<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    module: Out<CUmodule>,
    _image: *const c_void,
    _n: c_uint,
    _options: *mut CUjit_option,
    _values: *mut *mut c_void,
) -> R {
    loaded(e, Loaded::Module, module, call)
}

/// `cuModuleUnload`: what the load was charged goes back if the driver unloaded it.
pub fn unload<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, module: CUmodule) -> R {
    free_key(e, module as u64, call)
}

/// `cuLibraryLoadData` and `cuLibraryLoadFromFile` (the image, or a file name, as `code`).
#[allow(clippy::too_many_arguments)]
pub fn library_load<D: Driver, C>(
    e: &Enforce<D>,
    call: impl FnOnce() -> R,
    library: Out<CUlibrary>,
    _code: *const C,
    _jit_options: *mut CUjit_option,
    _jit_values: *mut *mut c_void,
    _num_jit: c_uint,
    _options: *mut CUlibraryOption,
    _values: *mut *mut c_void,
    _num_options: c_uint,
) -> R {
    loaded(e, Loaded::Library, library, call)
}

/// `cuLibraryUnload`.
pub fn library_unload<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> R, library: CUlibrary) -> R {
    free_key(e, library as u64, call)
}
