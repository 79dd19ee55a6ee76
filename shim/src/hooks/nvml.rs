//! NVML: initialisation fails closed on a bad configuration, and memory information shows the
//! container's quota for the device the application sees under that NVML handle (matched by
//! UUID, never by assuming NVML's and CUDA's indices agree).
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_uint};

use cuda_sys::nvml::{NVML_DEVICE_UUID_V2_BUFFER_SIZE, nvmlDevice_t, nvmlMemory_t, nvmlMemory_v2_t, nvmlReturn_t};
use vgpu_limiter::config::VisibleDevice;

use super::context::uuid_string;
use super::init::CUDA_READY;
use super::{Gate, gate};
use crate::state::Shim;
use crate::table::real;

use nvmlReturn_t as N;
use std::sync::atomic::Ordering::Acquire;

/// What a refused NVML call returns.
const REFUSED: N = N::NVML_ERROR_INVALID_ARGUMENT;
/// What an NVML hook returns when the real library is missing.
const NO_LIBRARY: N = N::NVML_ERROR_LIBRARY_NOT_FOUND;

/// `nvmlInit_v2`.
pub unsafe fn init_v2() -> N {
    let Some(f) = real::nvmlInit_v2() else {
        return NO_LIBRARY;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: no arguments.
    unsafe { f() }
}

/// `nvmlInitWithFlags`.
pub unsafe fn init_with_flags(flags: c_uint) -> N {
    let Some(f) = real::nvmlInitWithFlags() else {
        return NO_LIBRARY;
    };
    if let Gate::Refuse = gate() {
        return REFUSED;
    }
    // SAFETY: forwarding the caller's argument.
    unsafe { f(flags) }
}

/// The CUDA ordinal (as this application sees devices) of an NVML device handle.
fn ordinal_of(shim: &Shim, device: nvmlDevice_t) -> Option<usize> {
    let mut buf = [0 as c_char; NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    // SAFETY: a buffer of the size we pass.
    if unsafe { real::nvmlDeviceGetUUID()?(device, buf.as_mut_ptr(), buf.len() as c_uint) } != N::NVML_SUCCESS {
        return None;
    }
    // SAFETY: NVML NUL-terminates within the buffer.
    let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().to_ascii_lowercase();
    if CUDA_READY.load(Acquire) {
        let mut count = 0;
        // SAFETY: a valid out-pointer.
        if unsafe { real::cuDeviceGetCount()?(&mut count) } == cuda_sys::driver::CUresult::CUDA_SUCCESS {
            return (0..count).position(|d| uuid_string(d).is_some_and(|u| u.to_ascii_lowercase() == uuid));
        }
    }
    // CUDA is not initialised in this process (an NVML-only tool): apply
    // CUDA_VISIBLE_DEVICES the way the driver would.
    let mut index = 0;
    // SAFETY: a valid out-pointer.
    let indexed = unsafe { real::nvmlDeviceGetIndex()?(device, &mut index) } == N::NVML_SUCCESS;
    match &shim.config.visible_devices {
        None => indexed.then_some(index as usize),
        Some(list) => list.iter().position(|v| match v {
            VisibleDevice::Index(i) => indexed && *i == index,
            VisibleDevice::Uuid(u) => uuid.starts_with(&u.to_ascii_lowercase()) && unique_prefix(&u.to_ascii_lowercase()),
            VisibleDevice::Mig(_) => false,
        }),
    }
}

/// Whether exactly one NVML device's UUID starts with `prefix` (the driver refuses an
/// ambiguous `CUDA_VISIBLE_DEVICES` entry; it must not map two devices to one index here).
fn unique_prefix(prefix: &str) -> bool {
    let (Some(count), Some(by_index), Some(get_uuid)) =
        (real::nvmlDeviceGetCount_v2(), real::nvmlDeviceGetHandleByIndex_v2(), real::nvmlDeviceGetUUID())
    else {
        return false;
    };
    let mut n = 0;
    // SAFETY: a valid out-pointer.
    if unsafe { count(&mut n) } != N::NVML_SUCCESS {
        return false;
    }
    let matches = (0..n)
        .filter(|&i| {
            let mut h: nvmlDevice_t = std::ptr::null_mut();
            let mut buf = [0 as c_char; NVML_DEVICE_UUID_V2_BUFFER_SIZE];
            // SAFETY: valid out-pointers and a buffer of the size passed.
            unsafe {
                by_index(i, &mut h) == N::NVML_SUCCESS
                    && get_uuid(h, buf.as_mut_ptr(), buf.len() as c_uint) == N::NVML_SUCCESS
                    && CStr::from_ptr(buf.as_ptr()).to_string_lossy().to_ascii_lowercase().starts_with(prefix)
            }
        })
        .count();
    matches == 1
}

/// (total, free, used) through the quota of the device behind `device`, if it has one.
fn quota_figures(shim: &Shim, device: nvmlDevice_t, phys_total: u64, phys_free: u64) -> Option<(u64, u64, u64)> {
    let (total, free) = super::views::container_view(shim, shim.region()?, ordinal_of(shim, device)?, phys_total, phys_free)?;
    Some((total, free, total - free))
}

/// `nvmlDeviceGetMemoryInfo`.
pub unsafe fn memory_info(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> N {
    let Some(f) = real::nvmlDeviceGetMemoryInfo() else {
        return NO_LIBRARY;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(device, memory) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, _) => {
            let rc = forward();
            if rc == N::NVML_SUCCESS && !memory.is_null() {
                // SAFETY: NVML just wrote it.
                let m = unsafe { &mut *memory };
                if let Some((total, free, used)) = quota_figures(shim, device, m.total, m.free) {
                    (m.total, m.free, m.used) = (total, free, used);
                }
            }
            rc
        }
    }
}

/// `nvmlDeviceGetMemoryInfo_v2` (NVML checks the version word itself).
pub unsafe fn memory_info_v2(device: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> N {
    let Some(f) = real::nvmlDeviceGetMemoryInfo_v2() else {
        return NO_LIBRARY;
    };
    // SAFETY: forwarding the caller's arguments.
    let forward = || unsafe { f(device, memory) };
    match gate() {
        Gate::Forward => forward(),
        Gate::Refuse => REFUSED,
        Gate::Enforce(shim, _) => {
            let rc = forward();
            if rc == N::NVML_SUCCESS && !memory.is_null() {
                // SAFETY: NVML just wrote it.
                let m = unsafe { &mut *memory };
                if let Some((total, free, used)) = quota_figures(shim, device, m.total, m.free) {
                    (m.total, m.free, m.used, m.reserved) = (total, free, used, 0);
                }
            }
            rc
        }
    }
}
