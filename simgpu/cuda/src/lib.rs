//! simgpu's `libcuda.so.1`: the CUDA driver API, simulated.
//!
//! Every entry point validates its arguments the way the real driver does and returns the real
//! driver's error code for a bad handle, a null pointer, a freed pointer or a missing context;
//! nothing here may crash the host process (each export catches panics and returns
//! `CUDA_ERROR_UNKNOWN`). Device memory is host memory mapped lazily, so a 16 GiB device costs
//! nothing until touched; kernels do not execute but take simulated time on the machine's
//! shared timeline (see the `simgpu` crate).
//!
//! Modules: [`state`] holds the process-local driver objects; the `api_*` modules are the
//! exports, grouped as NVIDIA's documentation groups them; [`proc_address`] is
//! `cuGetProcAddress`.
#![deny(unsafe_code)]
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use cuda_sys::driver::CUresult;

mod api_context;
mod api_device;
mod api_graph;
mod api_green;
mod api_launch;
mod api_legacy;
mod api_library;
mod api_link;
mod api_memory;
mod api_module;
mod api_stream;
mod api_vmm;
mod graph_mem;
mod proc_address;
pub use proc_address::*;
mod state;

/// Runs an entry point's body: `Ok` is `CUDA_SUCCESS`, `Err(code)` is returned as is, and a
/// panic becomes `CUDA_ERROR_UNKNOWN` instead of unwinding into C.
fn guard(body: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUresult::CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => CUresult::CUDA_ERROR_UNKNOWN,
    }
}

/// Declares exported driver entry points. Each body returns `Result<(), CUresult>` and runs
/// inside [`guard`]; the signature is pinned to `cuda_sys::driver::pfn::<name>`, which the
/// conformance test checks against NVIDIA's `cuda.h`.
///
/// Bodies run in an `unsafe` block: the caller of a driver entry point guarantees that its
/// pointer arguments are valid for the documented accesses, as the CUDA API requires; bodies
/// check them for null before use.
macro_rules! exports {
    ($( $(#[$m:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $body:block )*) => {$(
        $(#[$m])*
        #[unsafe(no_mangle)]
        #[allow(unused_unsafe)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> cuda_sys::driver::CUresult {
            // SAFETY: the driver API's contract: pointers are valid as documented, checked for
            // null before use by the body.
            crate::guard(move || unsafe { $body })
        }
        const _: cuda_sys::driver::pfn::$name = $name;

        #[doc = concat!("`", stringify!($name), "` at an address no symbol names (see `proc_address`).")]
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;
            /// Calls the exported entry point (unused for an export no `cuGetProcAddress`
            /// answer names, such as a superseded per-thread variant).
            #[inline(never)]
            #[allow(dead_code)]
            pub(crate) unsafe extern "C" fn private($($arg: $ty),*) -> cuda_sys::driver::CUresult {
                // SAFETY: the caller's arguments, forwarded unchanged under the same contract.
                unsafe { super::$name($($arg),*) }
            }
        }
    )*};
}
pub(crate) use exports;

mod ffi;
use ffi::{out, read};
