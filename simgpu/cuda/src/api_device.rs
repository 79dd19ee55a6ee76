//! Initialisation, version, devices and error strings.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use cuda_sys::driver::{CUdevice, CUdevice_attribute as A, CUresult, CUuuid};
use simgpu::identity;

use crate::state::{driver, init};
use crate::{exports, out};
use CUresult as R;

/// Copies `s` into a caller's buffer of `len` bytes, truncating and NUL-terminating.
///
/// # Safety
/// `buf` is null or valid for `len` bytes.
pub(crate) unsafe fn copy_str(buf: *mut c_char, len: c_int, s: &str) -> Result<(), R> {
    if buf.is_null() || len <= 0 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let n = s.len().min(len as usize - 1);
    // SAFETY: `buf` holds `len` bytes and we write at most `len`.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast(), n);
        *buf.add(n) = 0;
    }
    Ok(())
}

/// The value of a device attribute on a simulated H100, if the attribute is known.
fn attribute(attr: A, sms: u32, pools: bool, dev: u32) -> Option<c_int> {
    Some(match attr {
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X | A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z => 64,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y | A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z => 65535,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK => 49152,
        A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY => 65536,
        A::CU_DEVICE_ATTRIBUTE_WARP_SIZE => 32,
        A::CU_DEVICE_ATTRIBUTE_MAX_PITCH => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK | A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR => 65536,
        A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE => 1_980_000,
        A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT => 512,
        A::CU_DEVICE_ATTRIBUTE_GPU_OVERLAP => 1,
        A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => sms as c_int,
        A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT | A::CU_DEVICE_ATTRIBUTE_INTEGRATED => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY => 1,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE | A::CU_DEVICE_ATTRIBUTE_TCC_DRIVER | A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID => 0,
        A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS | A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED => 1,
        A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID => identity::pci_bus(dev) as c_int,
        A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID => 0,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE => 2_619_000,
        A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH => 5120,
        A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE => 52_428_800,
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR => 2048,
        A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT => 3,
        A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING => 1,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => identity::COMPUTE_CAPABILITY.0,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => identity::COMPUTE_CAPABILITY.1,
        A::CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => 233_472,
        A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY | A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS => 1,
        A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH => 1,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => 232_448,
        A::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR => 32,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED => pools as c_int,
        A::CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES => 0,
        A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH => 1,
        A::CU_DEVICE_ATTRIBUTE_MPS_ENABLED => 0,
        _ => return None,
    })
}

/// NUL-terminated names and descriptions of every result code, built once.
fn error_strings() -> &'static [(u32, CString, CString)] {
    static TABLE: OnceLock<Vec<(u32, CString, CString)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        R::ALL
            .iter()
            .map(|(name, code)| {
                let desc = code.description().unwrap_or("unknown error");
                (code.0, CString::new(*name).unwrap_or_default(), CString::new(desc).unwrap_or_default())
            })
            .collect()
    })
}

exports! {
    fn cuInit(flags: c_uint) {
        if flags != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        init().map(|_| ())
    }

    fn cuDriverGetVersion(version: *mut c_int) {
        out(version, identity::CUDA_DRIVER_VERSION)
    }

    fn cuDeviceGetCount(count: *mut c_int) {
        out(count, driver()?.visible.len() as c_int)
    }

    fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) {
        let d = driver()?;
        if device.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        d.physical(ordinal)?;
        out(device, ordinal)
    }

    fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) {
        driver()?.physical(dev)?;
        copy_str(name, len, identity::name())
    }

    fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) {
        let phys = driver()?.physical(dev)?;
        out(uuid, CUuuid { bytes: identity::uuid_bytes(phys).map(|b| b as c_char) })
    }

    fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) {
        let phys = driver()?.physical(dev)?;
        out(uuid, CUuuid { bytes: identity::uuid_bytes(phys).map(|b| b as c_char) })
    }

    fn cuDeviceGetAttribute(pi: *mut c_int, attrib: A, dev: CUdevice) {
        let d = driver()?;
        let phys = d.physical(dev)?;
        let v = attribute(attrib, d.cfg.sms, d.cfg.memory_pools, phys).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        out(pi, v)
    }

    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) {
        let d = driver()?;
        d.physical(dev)?;
        out(bytes, d.cfg.memory as usize)
    }

    fn cuDeviceGetPCIBusId(bus_id: *mut c_char, len: c_int, dev: CUdevice) {
        let phys = driver()?.physical(dev)?;
        copy_str(bus_id, len, &identity::pci_bus_id(phys))
    }

    fn cuGetErrorName(error: R, p_str: *mut *const c_char) {
        match error_strings().iter().find(|(c, _, _)| *c == error.0) {
            Some((_, name, _)) => out(p_str, name.as_ptr()),
            None => {
                let _ = out(p_str, std::ptr::null());
                Err(R::CUDA_ERROR_INVALID_VALUE)
            }
        }
    }

    fn cuGetErrorString(error: R, p_str: *mut *const c_char) {
        match error_strings().iter().find(|(c, _, _)| *c == error.0) {
            Some((_, _, desc)) => out(p_str, desc.as_ptr()),
            None => {
                let _ = out(p_str, std::ptr::null());
                Err(R::CUDA_ERROR_INVALID_VALUE)
            }
        }
    }

    /// NVIDIA's private export tables (what cudart needs) do not exist here.
    fn cuGetExportTable(table: *mut *const c_void, _id: *const CUuuid) {
        let _ = out(table, std::ptr::null());
        Err(R::CUDA_ERROR_NOT_SUPPORTED)
    }
}
