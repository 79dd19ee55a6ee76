//! NVML: initialisation fails closed on a bad configuration, and memory information shows the
//! container's quota for the device the application sees under that NVML handle (matched by
//! UUID, never by assuming NVML's and CUDA's indices agree).
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_uint};

use cuda_sys::nvml::{NVML_DEVICE_UUID_V2_BUFFER_SIZE, nvmlDevice_t, nvmlMemory_t, nvmlMemory_v2_t, nvmlReturn_t};
use vgpu_limiter::config::VisibleDevice;

use super::args::Out;
use super::context::uuid_string;
use super::init::CUDA_READY;
use super::{Driver, Enforce};
use crate::state::Shim;
use crate::table::real;

use nvmlReturn_t as N;
use std::sync::atomic::Ordering::Acquire;

/// `nvmlInit_v2`: exists for the gate (fails closed on a bad configuration).
pub fn init_v2<D: Driver>(_e: &Enforce<D>, call: impl FnOnce() -> N) -> N {
    call()
}

/// `nvmlInitWithFlags`: as `nvmlInit_v2`.
pub fn init_with_flags<D: Driver>(_e: &Enforce<D>, call: impl FnOnce() -> N, _flags: c_uint) -> N {
    call()
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
fn quota_figures<D: Driver>(e: &Enforce<D>, device: nvmlDevice_t, phys_total: u64, phys_free: u64) -> Option<(u64, u64, u64)> {
    let (total, free) = super::views::container_view(e, ordinal_of(e.shim, device)?, phys_total, phys_free)?;
    Some((total, free, total - free))
}

/// `nvmlDeviceGetMemoryInfo`.
pub fn memory_info<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> N, device: nvmlDevice_t, memory: Out<nvmlMemory_t>) -> N {
    let rc = call();
    if rc == N::NVML_SUCCESS
        && let Some(mut m) = memory.written()
        && let Some((total, free, used)) = quota_figures(e, device, m.total, m.free)
    {
        (m.total, m.free, m.used) = (total, free, used);
        memory.overwrite(m);
    }
    rc
}

/// `nvmlDeviceGetMemoryInfo_v2` (NVML checks the version word itself).
pub fn memory_info_v2<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> N, device: nvmlDevice_t, memory: Out<nvmlMemory_v2_t>) -> N {
    let rc = call();
    if rc == N::NVML_SUCCESS
        && let Some(mut m) = memory.written()
        && let Some((total, free, used)) = quota_figures(e, device, m.total, m.free)
    {
        (m.total, m.free, m.used, m.reserved) = (total, free, used, 0);
        memory.overwrite(m);
    }
    rc
}
