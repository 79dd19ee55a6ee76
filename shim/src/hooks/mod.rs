//! Hook bodies, grouped as NVIDIA's documentation groups the functions. Each one asks the
//! limiter, calls the real function, and tells the limiter what happened; no decision is
//! made here.
#![allow(unsafe_code)]

pub mod context;
pub mod init;
pub mod launch;
pub mod memory;
pub mod nvml;
pub mod pools;
pub mod proc_address;
pub mod views;

use cuda_sys::driver::CUresult;
use vgpu_limiter::config::MAX_DEVICES;
use vgpu_limiter::region::Region;

use crate::state::{Mode, Shim, mode};
use crate::table::real;

/// What a hook does with this call.
pub enum Gate<'a> {
    /// Enforce limits through the region.
    Enforce(&'a Shim, &'a Region),
    /// Forward untouched.
    Forward,
    /// Refuse (fail closed).
    Refuse,
}

/// The gate for the current call.
pub fn gate() -> Gate<'static> {
    match mode() {
        Mode::Active(shim) => match shim.region() {
            Some(r) => Gate::Enforce(shim, r),
            None => Gate::Refuse,
        },
        Mode::PassThrough => Gate::Forward,
        Mode::Failed => Gate::Refuse,
    }
}

/// What a refused CUDA call returns.
pub const REFUSED: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
/// What a CUDA hook returns when the real driver is missing.
pub const NO_DRIVER: CUresult = CUresult::CUDA_ERROR_NOT_INITIALIZED;

/// The device of the calling thread's current context, as an index into the region.
pub fn current_device() -> Result<usize, CUresult> {
    let f = real::cuCtxGetDevice().ok_or(NO_DRIVER)?;
    let mut dev = 0;
    // SAFETY: a valid out-pointer.
    let rc = unsafe { f(&mut dev) };
    if rc != CUresult::CUDA_SUCCESS {
        return Err(rc);
    }
    device_index(dev)
}

/// A driver ordinal as a region index (the region accounts for [`MAX_DEVICES`] devices).
pub fn device_index(dev: i32) -> Result<usize, CUresult> {
    usize::try_from(dev).ok().filter(|d| *d < MAX_DEVICES).ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
}
