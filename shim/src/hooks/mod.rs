//! Hook bodies, grouped as NVIDIA's documentation groups the functions.
//!
//! A body runs only when the shim enforces limits: the generated edge in [`crate::table`] has
//! already resolved the real function, applied the gate (forward untouched, or fail closed
//! with nothing forwarded) and checked the caller's pointers. A body is a safe function of
//! ([`Enforce`], the forwarding call, the checked arguments): it asks the limiter, makes the
//! call, and tells the limiter what happened. What to charge or refuse is decided by pure
//! functions (`vgpu_limiter::accounting`, the SM controller), tested without a driver; the
//! driver a body talks to besides the forwarded call is the [`Driver`] it is given, so the
//! bodies themselves run in unit tests against a fake one.

pub mod args;
pub mod context;
pub mod driver;
pub mod fast;
pub mod graphs;
pub mod hostpid;
pub mod init;
pub mod launch;
pub mod legacy;
pub mod memory;
pub mod modules;
pub mod nvml;
pub mod pools;
pub mod priority;
pub mod proc_address;
pub mod reconcile;
pub mod variants;
pub mod views;

#[cfg(test)]
mod tests;

use cuda_sys::driver::CUresult;
use cuda_sys::nvml::nvmlReturn_t;
use vgpu_limiter::config::MAX_DEVICES;
use vgpu_limiter::region::Region;

pub use driver::{Driver, Real};

use crate::state::{Mode, Shim, mode};

/// What an enforcing body is given: the process's limiter state and the driver.
pub struct Enforce<'a, D = Real> {
    /// The shim's state in this process.
    pub shim: &'a Shim,
    /// The container's shared region.
    pub region: &'a Region,
    /// The driver's functions a body calls besides the one it forwards.
    pub driver: D,
}

/// The mode as one call sees it: [`Mode`] with the region resolved (a child whose renewal
/// after `fork` failed refuses, like a bad configuration).
pub enum Gate {
    /// Enforce limits: the body runs.
    Enforce(Enforce<'static, Real>),
    /// Forward untouched (a plain tail call).
    Forward,
    /// Fail closed: nothing reaches the driver.
    Refuse,
}

/// The gate for the current call.
#[inline]
pub fn gate() -> Gate {
    match mode() {
        Mode::Enforce(shim) => match shim.region() {
            Some(region) => Gate::Enforce(Enforce { shim, region, driver: Real }),
            None => Gate::Refuse,
        },
        Mode::Forward => Gate::Forward,
        Mode::Refuse => Gate::Refuse,
    }
}

/// The codes the edge answers with, per library. Two kinds of "no" are kept apart: a call
/// refused because the shim fails closed ([`Codes::FAIL_CLOSED`]: the configuration or region
/// is unusable) and an allocation refused at the quota (`CUDA_ERROR_OUT_OF_MEMORY`, decided
/// by the bodies).
pub trait Codes: Copy {
    /// The real library (or the symbol) is missing.
    const NOT_LOADED: Self;
    /// The shim fails closed.
    const FAIL_CLOSED: Self;
    /// The body panicked.
    const ON_PANIC: Self;
}

impl Codes for CUresult {
    const NOT_LOADED: Self = CUresult::CUDA_ERROR_NOT_INITIALIZED;
    const FAIL_CLOSED: Self = CUresult::CUDA_ERROR_INVALID_VALUE;
    const ON_PANIC: Self = CUresult::CUDA_ERROR_UNKNOWN;
}

impl Codes for nvmlReturn_t {
    const NOT_LOADED: Self = nvmlReturn_t::NVML_ERROR_LIBRARY_NOT_FOUND;
    const FAIL_CLOSED: Self = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
    const ON_PANIC: Self = nvmlReturn_t::NVML_ERROR_UNKNOWN;
}

/// A driver ordinal as a region index (the region accounts for [`MAX_DEVICES`] devices).
pub fn device_index(dev: i32) -> Result<usize, CUresult> {
    usize::try_from(dev).ok().filter(|d| *d < MAX_DEVICES).ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
}

impl<D: Driver> Enforce<'_, D> {
    /// The device of the calling thread's current context, as an index into the region.
    pub fn current_device(&self) -> Result<usize, CUresult> {
        device_index(self.driver.ctx_device()?)
    }
}
