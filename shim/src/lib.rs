//! `libvgpu.so`: loaded into every process of a container (`LD_PRELOAD` or
//! `/etc/ld.so.preload`), it intercepts the CUDA driver API and NVML and makes the limiter's
//! decisions real: a VRAM quota no allocation path gets past, and views that show the quota.
//!
//! The export layer is thin. [`table`] declares every hook once; [`dlsym`] and
//! `cuGetProcAddress` (in `hooks::proc_address`) hand those hooks to callers that resolve by
//! handle or by version; `hooks::*` forward to the real functions found by [`real`], asking
//! the limiter (`vgpu-limiter`) before and telling it after. Nothing runs in a library
//! constructor: the configuration is read on the first hooked call, and a child after `fork`
//! renews its state on its first call.
#![deny(unsafe_code)]
#![allow(clippy::missing_safety_doc)]

pub mod dlsym;
mod hooks;
mod log;
pub mod real;
mod sm;
mod state;
pub mod table;
