//! vgpu's decisions, in pure Rust: what a configuration means, whether an allocation fits,
//! when a launch may run. This crate never calls CUDA; it knows the driver only through
//! `cuda-sys` types.
//!
//! * [`config`]: the HAMi contract read from the environment, every bad value a clear error.
//! * [`size`]: the size syntax shared by the quotas and by simgpu's `SIMGPU_MEMORY`.
//! * [`region`]: the container's shared accounting region: quotas, usage, process slots.
//! * [`allocations`]: the lock-free map of this process's allocations.
//! * [`sm`]: the SM share: the token bucket of GPU time, the cost model, the controller.
#![deny(unsafe_code)]

pub mod allocations;
pub mod config;
pub mod region;
pub mod size;
pub mod sm;
