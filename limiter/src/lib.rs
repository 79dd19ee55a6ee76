//! vgpu's decisions, in pure Rust: what a configuration means, whether an allocation fits,
//! when a launch may run. This crate never calls CUDA; it knows the driver only through
//! `cuda-sys` types.
//!
//! Today it holds the size syntax shared by the quotas and by simgpu's `SIMGPU_MEMORY`; the
//! configuration, the shared accounting region and the token bucket are built on it.
#![deny(unsafe_code)]

pub mod size;
