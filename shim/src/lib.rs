//! `libvgpu.so`: loaded into every process of a container (`LD_PRELOAD` or
//! `/etc/ld.so.preload`), it intercepts the CUDA driver API and NVML and makes the limiter's
//! decisions real: a VRAM quota no allocation path gets past, and views that show the quota.
//!
//! The export layer is thin. [`table`] declares every hook once and generates its whole unsafe
//! edge (real function, gate, checked arguments, panic guard); [`dlsym`] and
//! `cuGetProcAddress` (in `hooks::proc_address`) hand those hooks to callers that resolve by
//! handle or by version; the safe bodies in `hooks::*` ask the limiter (`vgpu-limiter`) before
//! the real call and tell it after. Nothing runs in a library constructor: the configuration is
//! read on the first hooked call, and a child after `fork` renews its state on its first call.
#![deny(unsafe_code)]

pub mod dlsym;
mod hooks;
mod log;
pub mod real;
mod share;
mod state;
pub mod table;
