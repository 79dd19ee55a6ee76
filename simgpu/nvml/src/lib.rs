//! simgpu's `libnvidia-ml.so.1`: the NVML views of a simulated machine.
//!
//! NVML here is an *observer* of the machine that `SIMGPU_*` names (see `simgpu::config`): it
//! maps the shared state file without registering as a process, and computes every answer from
//! it, so it sees the memory, contexts and kernels of every process using the same machine.
//!
//! * Memory: `total` is `SIMGPU_MEMORY`, `used` the memory all processes hold, `free = total -
//!   used` (`reserved` is 0 in `nvmlMemory_v2_t`).
//! * Utilisation (`nvmlDeviceGetUtilizationRates`, `nvmlDeviceGetProcessUtilization`) is
//!   sampled as the driver samples it: in periods of `SIMGPU_NVML_PERIOD` (1/6 s by default),
//!   each handed out once ended, in whole percents, stamped in wall-clock microseconds, and
//!   `NVML_ERROR_NOT_FOUND` when no period has ended since `lastSeenTimeStamp`. The model, its
//!   sources and what it leaves out are in `views`.
//! * Running processes: processes with a context or memory on the device, with their memory;
//!   MIG instance ids are `0xFFFFFFFF`; there are never graphics processes.
//! * Identity (name, UUID, PCI ids, versions) comes from `simgpu::identity`, shared with
//!   simgpu's libcuda. Like the real library, NVML ignores `CUDA_VISIBLE_DEVICES`.
//!
//! Every export catches panics (`NVML_ERROR_UNKNOWN`), rejects NULL output pointers and unknown
//! handles with `NVML_ERROR_INVALID_ARGUMENT`, and answers `NVML_ERROR_UNINITIALIZED` before
//! `nvmlInit*` except where the real library documents otherwise (`nvmlErrorString`,
//! `nvmlSystemGetNVMLVersion`, `nvmlSystemGetCudaDriverVersion[_v2]`). Initialisation is
//! reference-counted.
//!
//! Safety of the exports: each one's contract is `nvml.h`'s (every pointer argument is NULL or
//! valid for the documented access), so they carry no `# Safety` sections of their own.
#![deny(unsafe_code)]
#![allow(non_snake_case, clippy::missing_safety_doc)]

mod exports;
mod state;
mod views;

pub use exports::*;
