//! Library state: the reference-counted initialisation, the observed machine, device handles.
//!
//! `nvmlInit*` opens the machine as an *observer* (no process slot) on the first reference and
//! publishes it through an atomic pointer; every other call loads that pointer and fails with
//! `NVML_ERROR_UNINITIALIZED` while it is null. A machine, once opened, is never unmapped: a
//! shutdown only unpublishes it, so a thread still inside a query after another thread's last
//! `nvmlShutdown` reads valid memory. A later initialisation with the same configuration reuses
//! it; one with another configuration (the environment changed) opens another, so at most one
//! mapping is kept per distinct configuration the process ever used.
#![allow(unsafe_code)] // the published machine behind an atomic pointer
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

use cuda_sys::nvml::{nvmlDevice_st, nvmlDevice_t, nvmlReturn_t};
use simgpu::config::{MAX_DEVICES, SimConfig};
use simgpu::machine::Machine;

/// An opened machine and the configuration it was opened with.
struct Live {
    config: SimConfig,
    machine: Machine,
}

/// Number of successful initialisations not yet shut down.
static REFS: Mutex<u32> = Mutex::new(0);
/// The machine published while `REFS > 0`, else null.
static CURRENT: AtomicPtr<Live> = AtomicPtr::new(ptr::null_mut());
/// Every machine ever opened by this process (leaked on purpose, see the module comment).
static OPENED: Mutex<Vec<&'static Live>> = Mutex::new(Vec::new());

/// Takes one initialisation reference; the first opens (or reuses) the machine `config` names.
/// A configuration or state-file problem is printed as one line on stderr and reported as
/// `NVML_ERROR_DRIVER_NOT_LOADED`, what the real library returns when there is no usable driver.
pub(crate) fn init(config: impl FnOnce() -> Result<SimConfig, String>) -> nvmlReturn_t {
    let mut refs = REFS.lock().unwrap_or_else(|e| e.into_inner());
    if *refs > 0 {
        *refs = refs.saturating_add(1);
        return nvmlReturn_t::NVML_SUCCESS;
    }
    let live = match config().and_then(open) {
        Ok(live) => live,
        Err(problem) => {
            eprintln!("simgpu libnvidia-ml: nvmlInit failed: {problem}");
            return nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED;
        }
    };
    CURRENT.store(ptr::from_ref(live).cast_mut(), Ordering::Release);
    *refs = 1;
    nvmlReturn_t::NVML_SUCCESS
}

fn open(config: SimConfig) -> Result<&'static Live, String> {
    let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = opened.iter().find(|l| l.config == config) {
        return Ok(live);
    }
    let machine = Machine::observe(&config)?;
    let live: &'static Live = Box::leak(Box::new(Live { config, machine }));
    opened.push(live);
    Ok(live)
}

/// Drops one initialisation reference; the last one unpublishes the machine.
pub(crate) fn shutdown() -> nvmlReturn_t {
    let mut refs = REFS.lock().unwrap_or_else(|e| e.into_inner());
    if *refs == 0 {
        return nvmlReturn_t::NVML_ERROR_UNINITIALIZED;
    }
    *refs -= 1;
    if *refs == 0 {
        CURRENT.store(ptr::null_mut(), Ordering::Release);
    }
    nvmlReturn_t::NVML_SUCCESS
}

/// The published machine and its configuration, or `NVML_ERROR_UNINITIALIZED`.
fn live() -> Result<&'static Live, nvmlReturn_t> {
    let p = CURRENT.load(Ordering::Acquire);
    if p.is_null() {
        return Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
    }
    // SAFETY: non-null values of CURRENT come from `Box::leak` in `open` and are never freed.
    Ok(unsafe { &*p })
}

/// The machine, or `NVML_ERROR_UNINITIALIZED`.
pub(crate) fn machine() -> Result<&'static Machine, nvmlReturn_t> {
    live().map(|l| &l.machine)
}

/// How utilisation is sampled: the configured period, and the wall clock's lead over the
/// machine's `CLOCK_MONOTONIC` (read once per process, so that the stamps this process hands
/// out and reads back never move).
pub(crate) fn sampling() -> Result<crate::views::Sampling, nvmlReturn_t> {
    static OFFSET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let period_ns = live()?.config.nvml_period_ns;
    Ok(crate::views::Sampling { period_ns, wall_offset_ns: *OFFSET.get_or_init(simgpu::wall_offset_ns) })
}

/// What an `nvmlDevice_t` points to: one static record per possible device index.
#[repr(C)]
struct DeviceRecord {
    index: u32,
}

static DEVICES: [DeviceRecord; MAX_DEVICES as usize] = {
    let mut records = [const { DeviceRecord { index: 0 } }; MAX_DEVICES as usize];
    let mut i = 0;
    while i < records.len() {
        records[i].index = i as u32;
        i += 1;
    }
    records
};

/// The handle of device `index` (the caller checks `index` against the machine).
pub(crate) fn handle(index: u32) -> nvmlDevice_t {
    ptr::from_ref(&DEVICES[index as usize]).cast::<nvmlDevice_st>().cast_mut()
}

/// The index behind `device` if it is one of our handles and names a device of `machine`;
/// `NVML_ERROR_INVALID_ARGUMENT` otherwise. The pointer is compared, never dereferenced.
pub(crate) fn device_index(machine: &Machine, device: nvmlDevice_t) -> Result<u32, nvmlReturn_t> {
    let offset = (device as usize).wrapping_sub(DEVICES.as_ptr() as usize);
    let size = size_of::<DeviceRecord>();
    let slot = offset / size;
    if !offset.is_multiple_of(size) || slot >= DEVICES.len() {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    let index = DEVICES[slot].index;
    if index < machine.devices() { Ok(index) } else { Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT) }
}
