//! Every export of simgpu's `libnvidia-ml.so.1`, and the pointer helpers they share (see the
//! crate's documentation for what each answers).
#![allow(unsafe_code)] // no_mangle entry points reading and writing the caller's pointers

use core::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use cuda_sys::nvml::*;
use simgpu::identity;

use crate::{state, views};

type NvmlResult = Result<(), nvmlReturn_t>;

/// PCI device and vendor id of an H100 SXM5 80GB (`0x2330`, NVIDIA `0x10DE`).
const PCI_DEVICE_ID: c_uint = 0x2330_10DE;
/// PCI subsystem id of an H100 SXM5 80GB.
const PCI_SUBSYSTEM_ID: c_uint = 0x16C1_10DE;
/// MIG instance id meaning "not a MIG device".
const NO_INSTANCE: c_uint = 0xFFFF_FFFF;

/// Runs an export's body, turning a panic into `NVML_ERROR_UNKNOWN`.
fn guard(body: impl FnOnce() -> NvmlResult) -> nvmlReturn_t {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => nvmlReturn_t::NVML_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => nvmlReturn_t::NVML_ERROR_UNKNOWN,
    }
}

/// Writes `value` through a caller's output pointer.
///
/// # Safety
/// `p` is NULL or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, value: T) -> NvmlResult {
    if p.is_null() {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null and, by the caller's contract, valid for a write of T.
    unsafe { p.write_unaligned(value) };
    Ok(())
}

/// Copies `s` and a NUL into a caller's buffer of `length` bytes.
///
/// # Safety
/// `dst` is NULL or valid for writes of `length` bytes.
unsafe fn put_str(dst: *mut c_char, length: c_uint, s: &str) -> NvmlResult {
    if dst.is_null() {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    if s.len() + 1 > length as usize {
        return Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `dst` holds `length >= s.len() + 1` bytes; the regions cannot overlap (`s` is ours).
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), dst.cast::<u8>(), s.len());
        dst.add(s.len()).write(0);
    }
    Ok(())
}

/// Copies `s` into a fixed C array, truncated to leave room for its NUL.
fn fill_array<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (d, b) in out.iter_mut().zip(s.bytes().take(N - 1)) {
        *d = b as c_char;
    }
    out
}

/// Reads a caller's NUL-terminated string as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn get_str<'a>(p: *const c_char) -> Result<&'a str, nvmlReturn_t> {
    if p.is_null() {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT)
}

/// Writes a process list with NVML's size protocol: `*count` is the capacity of `infos` on
/// entry and the number written (or needed, with `NVML_ERROR_INSUFFICIENT_SIZE`) on return;
/// `infos` may be NULL when nothing is to be written.
///
/// # Safety
/// `count` is NULL or valid for reads and writes; `infos` is NULL or valid for `*count` writes.
unsafe fn put_list<T: Copy>(count: *mut c_uint, infos: *mut T, items: &[T]) -> NvmlResult {
    if count.is_null() {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    let needed = c_uint::try_from(items.len()).unwrap_or(c_uint::MAX);
    // SAFETY: non-null and valid by the caller's contract.
    let capacity = unsafe { count.read_unaligned() };
    if capacity < needed {
        // SAFETY: as above.
        unsafe { count.write_unaligned(needed) };
        return Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE);
    }
    if needed > 0 && infos.is_null() {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    for (i, item) in items.iter().enumerate() {
        // SAFETY: i < needed <= capacity, the number of elements `infos` holds.
        unsafe { infos.add(i).write_unaligned(*item) };
    }
    // SAFETY: as above.
    unsafe { count.write_unaligned(needed) };
    Ok(())
}

/// The machine and the index of `device`, validated.
fn device(device: nvmlDevice_t) -> Result<(&'static simgpu::machine::Machine, u32), nvmlReturn_t> {
    let machine = state::machine()?;
    let index = state::device_index(machine, device)?;
    Ok((machine, index))
}

/// The index of the device whose NVML UUID is `uuid` (case-insensitive).
fn index_by_uuid(uuid: &str, devices: u32) -> Result<u32, nvmlReturn_t> {
    let b = uuid.as_bytes();
    let well_formed = b.len() == 40
        && b[..4].eq_ignore_ascii_case(b"GPU-")
        && b[4..].iter().copied().enumerate().all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() });
    if !well_formed {
        return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
    }
    (0..devices).find(|&i| identity::uuid_string(i).eq_ignore_ascii_case(uuid)).ok_or(nvmlReturn_t::NVML_ERROR_NOT_FOUND)
}

/// Parses a PCI bus id in the forms NVML accepts (hex): `domain:bus:device.function`,
/// `domain:bus:device`, `bus:device.function`. Returns (domain, bus, device, function).
fn parse_pci_bus_id(s: &str) -> Option<(u32, u32, u32, u32)> {
    let hex = |t: &str| {
        if t.is_empty() || t.len() > 8 { None } else { u32::from_str_radix(t, 16).ok() }
    };
    let parts: Vec<&str> = s.trim().split(':').collect();
    match parts[..] {
        [domain, bus, rest] => {
            let (dev, func) = match rest.split_once('.') {
                Some((d, f)) => (hex(d)?, hex(f)?),
                None => (hex(rest)?, 0),
            };
            Some((hex(domain)?, hex(bus)?, dev, func))
        }
        [bus, rest] => {
            let (d, f) = rest.split_once('.')?;
            Some((0, hex(bus)?, hex(d)?, hex(f)?))
        }
        _ => None,
    }
}

/// The index of the device at PCI bus id `id`.
fn index_by_pci_bus_id(id: &str, devices: u32) -> Result<u32, nvmlReturn_t> {
    let (domain, bus, dev, func) = parse_pci_bus_id(id).ok_or(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT)?;
    (0..devices).find(|&i| (domain, dev, func) == (0, 0, 0) && bus == identity::pci_bus(i)).ok_or(nvmlReturn_t::NVML_ERROR_NOT_FOUND)
}

/// The name NVML gives process `pid`: its `argv[0]`, else its `comm`.
fn process_name(pid: c_uint) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    if !argv0.is_empty() {
        return Some(String::from_utf8_lossy(argv0).into_owned());
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

fn init() -> nvmlReturn_t {
    guard(|| match state::init(simgpu::config::from_env) {
        nvmlReturn_t::NVML_SUCCESS => Ok(()),
        code => Err(code),
    })
}

/// `nvmlInit`: the legacy initialisation; the same as [`nvmlInit_v2`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInit() -> nvmlReturn_t {
    init()
}
const _: pfn::nvmlInit = nvmlInit;

/// `nvmlInit_v2`: opens the simulated machine (reference-counted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    init()
}
const _: pfn::nvmlInit_v2 = nvmlInit_v2;

/// `nvmlInitWithFlags`: [`nvmlInit_v2`]; the flags (`NO_GPUS`, `NO_ATTACH`) change nothing here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    init()
}
const _: pfn::nvmlInitWithFlags = nvmlInitWithFlags;

/// `nvmlShutdown`: drops one initialisation reference.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guard(|| match state::shutdown() {
        nvmlReturn_t::NVML_SUCCESS => Ok(()),
        code => Err(code),
    })
}
const _: pfn::nvmlShutdown = nvmlShutdown;

static MESSAGES: OnceLock<Vec<(nvmlReturn_t, std::ffi::CString)>> = OnceLock::new();

/// `nvmlErrorString`: NVML's description of `result` (a static string; works before init).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    let lookup = || {
        let table = MESSAGES.get_or_init(|| {
            nvmlReturn_t::ALL.iter().map(|&(_, code)| (code, std::ffi::CString::new(code.description()).unwrap_or_default())).collect()
        });
        table.iter().find(|(code, _)| *code == result).map_or(c"Unknown Error".as_ptr(), |(_, s)| s.as_ptr())
    };
    catch_unwind(lookup).unwrap_or(c"Unknown Error".as_ptr())
}
const _: pfn::nvmlErrorString = nvmlErrorString;

/// `nvmlSystemGetDriverVersion`: the simulated driver's version string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard(|| {
        state::machine()?;
        // SAFETY: the caller passes a buffer of `length` bytes or NULL.
        unsafe { put_str(version, length, identity::DRIVER_VERSION) }
    })
}
const _: pfn::nvmlSystemGetDriverVersion = nvmlSystemGetDriverVersion;

/// `nvmlSystemGetNVMLVersion`: this library's version string (works before init).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    // SAFETY: the caller passes a buffer of `length` bytes or NULL.
    guard(|| unsafe { put_str(version, length, identity::NVML_VERSION) })
}
const _: pfn::nvmlSystemGetNVMLVersion = nvmlSystemGetNVMLVersion;

/// `nvmlSystemGetCudaDriverVersion`: the CUDA driver API version (works before init).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(cuda_driver_version: *mut c_int) -> nvmlReturn_t {
    // SAFETY: the caller passes a valid pointer or NULL.
    guard(|| unsafe { put(cuda_driver_version, identity::CUDA_DRIVER_VERSION) })
}
const _: pfn::nvmlSystemGetCudaDriverVersion = nvmlSystemGetCudaDriverVersion;

/// `nvmlSystemGetCudaDriverVersion_v2`: the same as [`nvmlSystemGetCudaDriverVersion`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(cuda_driver_version: *mut c_int) -> nvmlReturn_t {
    // SAFETY: the caller passes a valid pointer or NULL.
    guard(|| unsafe { put(cuda_driver_version, identity::CUDA_DRIVER_VERSION) })
}
const _: pfn::nvmlSystemGetCudaDriverVersion_v2 = nvmlSystemGetCudaDriverVersion_v2;

/// `nvmlSystemGetProcessName`: process `pid`'s `argv[0]` (or `comm`), cropped to `length`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetProcessName(pid: c_uint, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard(|| {
        state::machine()?;
        if name.is_null() || length == 0 {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        let mut full = process_name(pid).ok_or(nvmlReturn_t::NVML_ERROR_NOT_FOUND)?;
        let mut cut = full.len().min(length as usize - 1);
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        full.truncate(cut);
        // SAFETY: the caller passes a buffer of `length` bytes; `full` now fits with its NUL.
        unsafe { put_str(name, length, &full) }
    })
}
const _: pfn::nvmlSystemGetProcessName = nvmlSystemGetProcessName;

/// `nvmlDeviceGetCount`: the number of simulated devices (`SIMGPU_DEVICES`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount(device_count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: forwards the caller's pointer under the same contract.
    unsafe { nvmlDeviceGetCount_v2(device_count) }
}
const _: pfn::nvmlDeviceGetCount = nvmlDeviceGetCount;

/// `nvmlDeviceGetCount_v2`: the number of simulated devices (`SIMGPU_DEVICES`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) -> nvmlReturn_t {
    guard(|| {
        let machine = state::machine()?;
        // SAFETY: the caller passes a valid pointer or NULL.
        unsafe { put(device_count, machine.devices()) }
    })
}
const _: pfn::nvmlDeviceGetCount_v2 = nvmlDeviceGetCount_v2;

/// `nvmlDeviceGetHandleByIndex`: the same as [`nvmlDeviceGetHandleByIndex_v2`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    // SAFETY: forwards the caller's pointer under the same contract.
    unsafe { nvmlDeviceGetHandleByIndex_v2(index, device) }
}
const _: pfn::nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex;

/// `nvmlDeviceGetHandleByIndex_v2`: the handle of device `index` (0-based, all devices).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard(|| {
        let machine = state::machine()?;
        if index >= machine.devices() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller passes a valid pointer or NULL.
        unsafe { put(device, state::handle(index)) }
    })
}
const _: pfn::nvmlDeviceGetHandleByIndex_v2 = nvmlDeviceGetHandleByIndex_v2;

/// `nvmlDeviceGetHandleByUUID`: the handle of the device with UUID `uuid` (`GPU-…`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard(|| {
        let machine = state::machine()?;
        if device.is_null() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let uuid = unsafe { get_str(uuid) }?;
        let index = index_by_uuid(uuid, machine.devices())?;
        // SAFETY: checked non-null above; valid by the caller's contract.
        unsafe { put(device, state::handle(index)) }
    })
}
const _: pfn::nvmlDeviceGetHandleByUUID = nvmlDeviceGetHandleByUUID;

/// `nvmlDeviceGetHandleByPciBusId_v2`: the handle of the device at PCI bus id `pci_bus_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard(|| {
        let machine = state::machine()?;
        if device.is_null() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller passes a NUL-terminated string or NULL.
        let id = unsafe { get_str(pci_bus_id) }?;
        let index = index_by_pci_bus_id(id, machine.devices())?;
        // SAFETY: checked non-null above; valid by the caller's contract.
        unsafe { put(device, state::handle(index)) }
    })
}
const _: pfn::nvmlDeviceGetHandleByPciBusId_v2 = nvmlDeviceGetHandleByPciBusId_v2;

/// `nvmlDeviceGetIndex`: the index of `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    guard(|| {
        let (_, dev) = self::device(device)?;
        // SAFETY: the caller passes a valid pointer or NULL.
        unsafe { put(index, dev) }
    })
}
const _: pfn::nvmlDeviceGetIndex = nvmlDeviceGetIndex;

/// `nvmlDeviceGetName`: the product name of `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard(|| {
        self::device(device)?;
        // SAFETY: the caller passes a buffer of `length` bytes or NULL.
        unsafe { put_str(name, length, identity::name()) }
    })
}
const _: pfn::nvmlDeviceGetName = nvmlDeviceGetName;

/// `nvmlDeviceGetUUID`: the UUID of `device` as `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard(|| {
        let (_, dev) = self::device(device)?;
        // SAFETY: the caller passes a buffer of `length` bytes or NULL.
        unsafe { put_str(uuid, length, &identity::uuid_string(dev)) }
    })
}
const _: pfn::nvmlDeviceGetUUID = nvmlDeviceGetUUID;

/// `nvmlDeviceGetPciInfo_v3`: the PCI location and ids of `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    guard(|| {
        let (_, dev) = self::device(device)?;
        let bus = identity::pci_bus(dev);
        let info = nvmlPciInfo_t {
            busIdLegacy: fill_array(&format!("0000:{bus:02X}:00.0")),
            domain: 0,
            bus,
            device: 0,
            pciDeviceId: PCI_DEVICE_ID,
            pciSubSystemId: PCI_SUBSYSTEM_ID,
            busId: fill_array(&identity::pci_bus_id(dev)),
        };
        // SAFETY: the caller passes a valid pointer or NULL.
        unsafe { put(pci, info) }
    })
}
const _: pfn::nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo_v3;

/// `nvmlDeviceGetMinorNumber`: the `/dev/nvidia<N>` minor number of `device` (its index).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(device: nvmlDevice_t, minor_number: *mut c_uint) -> nvmlReturn_t {
    guard(|| {
        let (_, dev) = self::device(device)?;
        // SAFETY: the caller passes a valid pointer or NULL.
        unsafe { put(minor_number, dev) }
    })
}
const _: pfn::nvmlDeviceGetMinorNumber = nvmlDeviceGetMinorNumber;

/// `nvmlDeviceGetCudaComputeCapability`: the compute capability of `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(device: nvmlDevice_t, major: *mut c_int, minor: *mut c_int) -> nvmlReturn_t {
    guard(|| {
        self::device(device)?;
        if major.is_null() || minor.is_null() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        let (ma, mi) = identity::COMPUTE_CAPABILITY;
        // SAFETY: both checked non-null; valid by the caller's contract.
        unsafe { put(major, ma).and_then(|()| put(minor, mi)) }
    })
}
const _: pfn::nvmlDeviceGetCudaComputeCapability = nvmlDeviceGetCudaComputeCapability;

/// `nvmlDeviceGetMemoryInfo`: total, free and used memory of `device`, all processes counted.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t {
    guard(|| {
        let (machine, dev) = self::device(device)?;
        let (total, used) = (machine.memory(), machine.used(dev));
        // SAFETY: the caller passes a valid pointer or NULL.
        unsafe { put(memory, nvmlMemory_t { total, free: total - used, used }) }
    })
}
const _: pfn::nvmlDeviceGetMemoryInfo = nvmlDeviceGetMemoryInfo;

/// `nvmlDeviceGetMemoryInfo_v2`: as [`nvmlDeviceGetMemoryInfo`] with `reserved` (always 0);
/// `memory->version` must be `nvmlMemory_v2`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(device: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> nvmlReturn_t {
    guard(|| {
        let (machine, dev) = self::device(device)?;
        if memory.is_null() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: non-null; the caller passes a valid nvmlMemory_v2_t.
        let version = unsafe { std::ptr::addr_of!((*memory).version).read_unaligned() };
        if version != nvmlMemory_v2 {
            return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let (total, used) = (machine.memory(), machine.used(dev));
        let info = nvmlMemory_v2_t { version, total, reserved: 0, free: total - used, used };
        // SAFETY: as above.
        unsafe { put(memory, info) }
    })
}
const _: pfn::nvmlDeviceGetMemoryInfo_v2 = nvmlDeviceGetMemoryInfo_v2;

/// `nvmlDeviceGetUtilizationRates`: percent of the last ended sample period during which
/// `device` ran kernels (`memory` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(device: nvmlDevice_t, utilization: *mut nvmlUtilization_t) -> nvmlReturn_t {
    guard(|| {
        let (machine, dev) = self::device(device)?;
        if utilization.is_null() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        let rates = views::utilization(machine, dev, state::sampling()?, simgpu::now_ns());
        // SAFETY: non-null; valid by the caller's contract.
        unsafe { put(utilization, rates) }
    })
}
const _: pfn::nvmlDeviceGetUtilizationRates = nvmlDeviceGetUtilizationRates;

/// `nvmlDeviceGetProcessUtilization`: one sample per process that ran kernels on `device` in
/// the sample periods stamped after `last_seen_time_stamp` (wall-clock µs; 0: the buffer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    process_samples_count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> nvmlReturn_t {
    guard(|| {
        let (machine, dev) = self::device(device)?;
        if process_samples_count.is_null() {
            return Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        }
        let samples = views::process_samples(machine, dev, state::sampling()?, simgpu::now_ns(), last_seen_time_stamp);
        if samples.is_empty() {
            // SAFETY: non-null; valid by the caller's contract.
            unsafe { process_samples_count.write_unaligned(0) };
            return Err(nvmlReturn_t::NVML_ERROR_NOT_FOUND);
        }
        if utilization.is_null() {
            let needed = c_uint::try_from(samples.len()).unwrap_or(c_uint::MAX);
            // SAFETY: as above.
            unsafe { process_samples_count.write_unaligned(needed) };
            return Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE);
        }
        // SAFETY: `utilization` holds `*process_samples_count` samples by the caller's contract.
        unsafe { put_list(process_samples_count, utilization, &samples) }
    })
}
const _: pfn::nvmlDeviceGetProcessUtilization = nvmlDeviceGetProcessUtilization;

/// Compute processes of `device`, each made into NVML's struct `T` by `make`.
///
/// # Safety
/// As [`put_list`].
unsafe fn compute_processes<T: Copy>(
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut T,
    make: impl Fn(&simgpu::machine::ProcessUsage) -> T,
) -> nvmlReturn_t {
    guard(|| {
        let (machine, dev) = self::device(device)?;
        let list: Vec<T> = views::processes(machine, dev).iter().map(make).collect();
        // SAFETY: the caller's contract is put_list's.
        unsafe { put_list(count, infos, &list) }
    })
}

fn info_v2(p: &simgpu::machine::ProcessUsage) -> nvmlProcessInfo_t {
    nvmlProcessInfo_t { pid: p.pid, usedGpuMemory: p.used, gpuInstanceId: NO_INSTANCE, computeInstanceId: NO_INSTANCE }
}

/// `nvmlDeviceGetComputeRunningProcesses`: processes with a context on `device` (v1 struct).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v1_t,
) -> nvmlReturn_t {
    // SAFETY: forwards the caller's pointers under the same contract.
    unsafe { compute_processes(device, info_count, infos, |p| nvmlProcessInfo_v1_t { pid: p.pid, usedGpuMemory: p.used }) }
}
const _: pfn::nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetComputeRunningProcesses;

/// `nvmlDeviceGetComputeRunningProcesses_v2`: processes with a context on `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    // SAFETY: forwards the caller's pointers under the same contract.
    unsafe { compute_processes(device, info_count, infos, info_v2) }
}
const _: pfn::nvmlDeviceGetComputeRunningProcesses_v2 = nvmlDeviceGetComputeRunningProcesses_v2;

/// `nvmlDeviceGetComputeRunningProcesses_v3`: processes with a context on `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    // SAFETY: forwards the caller's pointers under the same contract.
    unsafe { compute_processes(device, info_count, infos, info_v2) }
}
const _: pfn::nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses_v3;

/// Graphics or MPS processes of `device`: always none (simgpu has neither graphics nor MPS).
///
/// # Safety
/// As [`put_list`].
unsafe fn no_processes<T: Copy>(device: nvmlDevice_t, info_count: *mut c_uint, infos: *mut T) -> nvmlReturn_t {
    guard(|| {
        self::device(device)?;
        // SAFETY: the caller's contract is put_list's.
        unsafe { put_list(info_count, infos, &[]) }
    })
}

/// The process lists that are always empty here, each checked against its declaration.
macro_rules! no_process_lists {
    ($( $(#[$doc:meta])* $name:ident => $entry:ty; )*) => {$(
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(device: nvmlDevice_t, info_count: *mut c_uint, infos: *mut $entry) -> nvmlReturn_t {
            // SAFETY: forwards the caller's pointers under the same contract.
            unsafe { no_processes(device, info_count, infos) }
        }
        const _: pfn::$name = $name;
    )*};
}

no_process_lists! {
    /// `nvmlDeviceGetGraphicsRunningProcesses`: always no processes (v1 struct).
    nvmlDeviceGetGraphicsRunningProcesses => nvmlProcessInfo_v1_t;
    /// `nvmlDeviceGetGraphicsRunningProcesses_v2`: always no processes.
    nvmlDeviceGetGraphicsRunningProcesses_v2 => nvmlProcessInfo_t;
    /// `nvmlDeviceGetGraphicsRunningProcesses_v3`: always no processes.
    nvmlDeviceGetGraphicsRunningProcesses_v3 => nvmlProcessInfo_t;
    /// `nvmlDeviceGetMPSComputeRunningProcesses`: always no processes (no MPS server; v1 struct).
    nvmlDeviceGetMPSComputeRunningProcesses => nvmlProcessInfo_v1_t;
    /// `nvmlDeviceGetMPSComputeRunningProcesses_v2`: always no processes (no MPS server).
    nvmlDeviceGetMPSComputeRunningProcesses_v2 => nvmlProcessInfo_t;
    /// `nvmlDeviceGetMPSComputeRunningProcesses_v3`: always no processes (no MPS server).
    nvmlDeviceGetMPSComputeRunningProcesses_v3 => nvmlProcessInfo_t;
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
