//! NVML: initialisation fails closed on a bad configuration, and memory information shows the
//! container's quota for the device the application sees under that NVML handle (matched by
//! UUID, never by assuming NVML's and CUDA's indices agree). Process lists, per-process
//! utilisation and utilisation rates show the container's own processes only, by their PIDs
//! in the container (the driver lists host PIDs; see `hostpid`), with the memory vgpu charges
//! each.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_uint};

use cuda_sys::nvml::{
    NVML_DEVICE_UUID_V2_BUFFER_SIZE, nvmlDevice_t, nvmlMemory_t, nvmlMemory_v2_t, nvmlProcessInfo_t, nvmlProcessInfo_v1_t,
    nvmlProcessUtilizationSample_t, nvmlReturn_t, nvmlUtilization_t,
};
use vgpu_limiter::config::VisibleDevice;
use vgpu_limiter::hostpid;
use vgpu_limiter::sm::controller::{UtilEntry, container_share};

use super::args::{Listed, Out, OutList};
use super::context::uuid_string;
use super::driver::{ListFn, read_list, read_samples};
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

/// An entry of one of NVML's process lists (v1, or v2/v3 with MIG instance ids).
pub trait ProcessEntry: Copy + Default {
    /// The process's PID.
    fn pid(&self) -> u32;
    /// The same entry for PID `pid` using `bytes`.
    fn shown_as(self, pid: u32, bytes: u64) -> Self;
}

impl ProcessEntry for nvmlProcessInfo_v1_t {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn shown_as(self, pid: u32, bytes: u64) -> Self {
        nvmlProcessInfo_v1_t { pid, usedGpuMemory: bytes }
    }
}

impl ProcessEntry for nvmlProcessInfo_t {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn shown_as(self, pid: u32, bytes: u64) -> Self {
        nvmlProcessInfo_t { pid, usedGpuMemory: bytes, ..self }
    }
}

/// Shared body of the process lists: the real list (from `real`, the same variant), narrowed
/// to the container's own processes, each shown by its container PID with the memory vgpu
/// charges it. On a device the application cannot see, the container has no process: the
/// list is empty (never the real one, which names other tenants' processes).
fn own_list<D: Driver, T: ProcessEntry>(
    e: &Enforce<D>,
    call: impl FnOnce() -> N,
    real: Option<ListFn<T>>,
    device: nvmlDevice_t,
    count: Out<c_uint>,
    infos: OutList<T>,
) -> N {
    let Some(real) = real else { return call() };
    let ordinal = ordinal_of(e.shim, device);
    let listed = match read_list(real, device) {
        Ok(l) => l,
        Err(rc) => return rc,
    };
    let pids: Vec<u32> = listed.iter().map(|p| p.pid()).collect();
    let ours = if ordinal.is_some() { e.region.processes() } else { Vec::new() };
    let shown: Vec<T> = hostpid::own_processes(&pids, &ours, ordinal.unwrap_or(0))
        .into_iter()
        .map(|(i, pid, bytes)| listed[i].shown_as(pid, bytes))
        .collect();
    match infos.write(count, &shown) {
        Listed::Written => N::NVML_SUCCESS,
        Listed::TooSmall => N::NVML_ERROR_INSUFFICIENT_SIZE,
        Listed::NoCount => N::NVML_ERROR_INVALID_ARGUMENT,
    }
}

/// The process-list hooks: each narrows the real list of its own variant ([`own_list`]).
macro_rules! own_list_hooks {
    ($( $(#[$doc:meta])* $hook:ident => $real:ident, $entry:ty; )*) => {$(
        $(#[$doc])*
        pub fn $hook<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> N, device: nvmlDevice_t, count: Out<c_uint>, infos: OutList<$entry>) -> N {
            own_list(e, call, real::$real(), device, count, infos)
        }
    )*};
}

own_list_hooks! {
    /// `nvmlDeviceGetComputeRunningProcesses` (v1 entries).
    compute_processes => nvmlDeviceGetComputeRunningProcesses, nvmlProcessInfo_v1_t;
    /// `nvmlDeviceGetComputeRunningProcesses_v2`.
    compute_processes_v2 => nvmlDeviceGetComputeRunningProcesses_v2, nvmlProcessInfo_t;
    /// `nvmlDeviceGetComputeRunningProcesses_v3`.
    compute_processes_v3 => nvmlDeviceGetComputeRunningProcesses_v3, nvmlProcessInfo_t;
    /// `nvmlDeviceGetGraphicsRunningProcesses` (v1 entries).
    graphics_processes => nvmlDeviceGetGraphicsRunningProcesses, nvmlProcessInfo_v1_t;
    /// `nvmlDeviceGetGraphicsRunningProcesses_v2`.
    graphics_processes_v2 => nvmlDeviceGetGraphicsRunningProcesses_v2, nvmlProcessInfo_t;
    /// `nvmlDeviceGetGraphicsRunningProcesses_v3`.
    graphics_processes_v3 => nvmlDeviceGetGraphicsRunningProcesses_v3, nvmlProcessInfo_t;
    /// `nvmlDeviceGetMPSComputeRunningProcesses` (v1 entries).
    mps_processes => nvmlDeviceGetMPSComputeRunningProcesses, nvmlProcessInfo_v1_t;
    /// `nvmlDeviceGetMPSComputeRunningProcesses_v2`.
    mps_processes_v2 => nvmlDeviceGetMPSComputeRunningProcesses_v2, nvmlProcessInfo_t;
    /// `nvmlDeviceGetMPSComputeRunningProcesses_v3`.
    mps_processes_v3 => nvmlDeviceGetMPSComputeRunningProcesses_v3, nvmlProcessInfo_t;
}

/// `nvmlDeviceGetProcessUtilization`: the container's own processes' samples, by container
/// PID; `NOT_FOUND` when none of them has one.
pub fn process_utilization<D: Driver>(
    e: &Enforce<D>,
    call: impl FnOnce() -> N,
    device: nvmlDevice_t,
    utilization: OutList<nvmlProcessUtilizationSample_t>,
    count: Out<c_uint>,
    last_seen_us: std::ffi::c_ulonglong,
) -> N {
    if count.is_null() {
        return call(); // the driver's own answer to a null count (an invalid argument)
    }
    let visible = ordinal_of(e.shim, device).is_some();
    let all = match read_samples(device, last_seen_us) {
        Ok(s) => s,
        Err(rc) => return rc,
    };
    let pids: Vec<u32> = all.iter().map(|s| s.pid).collect();
    let ours = if visible { e.region.processes() } else { Vec::new() };
    let mine: Vec<nvmlProcessUtilizationSample_t> =
        hostpid::own_processes(&pids, &ours, 0).into_iter().map(|(i, pid, _)| nvmlProcessUtilizationSample_t { pid, ..all[i] }).collect();
    if mine.is_empty() {
        count.overwrite(0);
        return N::NVML_ERROR_NOT_FOUND;
    }
    match utilization.write(count, &mine) {
        Listed::Written => N::NVML_SUCCESS,
        Listed::TooSmall => N::NVML_ERROR_INSUFFICIENT_SIZE,
        Listed::NoCount => N::NVML_ERROR_INVALID_ARGUMENT,
    }
}

/// `nvmlDeviceGetUtilizationRates`: the container's share of the device over the last second
/// (its processes' samples, averaged over the sample periods as the SM controller reads them),
/// not the whole device's.
pub fn utilization_rates<D: Driver>(e: &Enforce<D>, call: impl FnOnce() -> N, device: nvmlDevice_t, rates: Out<nvmlUtilization_t>) -> N {
    let rc = call();
    if rc != N::NVML_SUCCESS || rates.is_null() {
        return rc;
    }
    if ordinal_of(e.shim, device).is_none() {
        // A device the application cannot see: the container does not use it.
        rates.overwrite(nvmlUtilization_t { gpu: 0, memory: 0 });
        return rc;
    }
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let since = now_us.saturating_sub(1_000_000);
    let Ok(all) = read_samples(device, since) else { return rc };
    let ours = hostpid::host_pids(&e.region.processes());
    let share = |pick: fn(&nvmlProcessUtilizationSample_t) -> u32| {
        let entries: Vec<UtilEntry> = all.iter().map(|s| UtilEntry { pid: s.pid, sm_util: pick(s), stamp_us: s.timeStamp }).collect();
        container_share(&entries, &ours, since).map_or(0, |s| (s.share * 100.0).round() as u32)
    };
    rates.overwrite(nvmlUtilization_t { gpu: share(|s| s.smUtil), memory: share(|s| s.memUtil) });
    rc
}
