//! vgpu's decisions: what a configuration means, whether an allocation fits, when a launch may
//! run, how the SM share is corrected. This crate never calls CUDA; it knows the driver only
//! through `cuda-sys` types. Its only contact with the system is the shared region file (mmap,
//! OFD locks) and the monotonic clock, each confined to the files that allow `unsafe`.
//!
//! * [`config`]: the HAMi contract read from the environment, every bad value a clear error.
//! * [`size`]: the size syntax shared by the quotas and by simgpu's `SIMGPU_MEMORY`.
//! * [`region`]: the container's shared accounting region: quotas, usage, process slots.
//! * [`allocations`]: the lock-free map of this process's allocations.
//! * [`accounting`]: what each allocation path charges (pitch, VMM, pools, contexts).
//! * [`hostpid`]: how a process in a container finds the PID the driver knows it by.
//! * [`priority`]: high- and low-priority containers on one device, through the node-wide board.
//! * [`sm`]: the SM share: the token bucket of GPU time, the cost model, the controller.
#![deny(unsafe_code)]

pub mod accounting;
pub mod allocations;
pub mod config;
pub mod hostpid;
pub mod priority;
pub mod region;
pub mod size;
pub mod sm;
