//! NVML (`nvml.h`): return codes, the device handle, structures and entry points.
use core::ffi::{c_char, c_int, c_uint, c_ulonglong};

use crate::{entry_points, int_newtype};

int_newtype! {
    /// `nvmlReturn_t`: the status every NVML entry point returns.
    nvmlReturn_t(u32) {
        NVML_SUCCESS = 0,
        NVML_ERROR_UNINITIALIZED = 1,
        NVML_ERROR_INVALID_ARGUMENT = 2,
        NVML_ERROR_NOT_SUPPORTED = 3,
        NVML_ERROR_NO_PERMISSION = 4,
        NVML_ERROR_ALREADY_INITIALIZED = 5,
        NVML_ERROR_NOT_FOUND = 6,
        NVML_ERROR_INSUFFICIENT_SIZE = 7,
        NVML_ERROR_DRIVER_NOT_LOADED = 9,
        NVML_ERROR_TIMEOUT = 10,
        NVML_ERROR_LIBRARY_NOT_FOUND = 12,
        NVML_ERROR_FUNCTION_NOT_FOUND = 13,
        NVML_ERROR_GPU_IS_LOST = 15,
        NVML_ERROR_OPERATING_SYSTEM = 17,
        NVML_ERROR_MEMORY = 20,
        NVML_ERROR_NO_DATA = 21,
        NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
        NVML_ERROR_UNKNOWN = 999,
    }
}

impl nvmlReturn_t {
    /// True for `NVML_SUCCESS`.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// NVML's description of this code (what `nvmlErrorString` returns).
    pub fn description(self) -> &'static str {
        match self {
            Self::NVML_SUCCESS => "Success",
            Self::NVML_ERROR_UNINITIALIZED => "Uninitialized",
            Self::NVML_ERROR_INVALID_ARGUMENT => "Invalid Argument",
            Self::NVML_ERROR_NOT_SUPPORTED => "Not Supported",
            Self::NVML_ERROR_NO_PERMISSION => "Insufficient Permissions",
            Self::NVML_ERROR_ALREADY_INITIALIZED => "Already Initialized",
            Self::NVML_ERROR_NOT_FOUND => "Not Found",
            Self::NVML_ERROR_INSUFFICIENT_SIZE => "Insufficient Size",
            Self::NVML_ERROR_DRIVER_NOT_LOADED => "Driver Not Loaded",
            Self::NVML_ERROR_TIMEOUT => "Timeout",
            Self::NVML_ERROR_LIBRARY_NOT_FOUND => "NVML Shared Library Not Found",
            Self::NVML_ERROR_FUNCTION_NOT_FOUND => "Function Not Found",
            Self::NVML_ERROR_GPU_IS_LOST => "GPU is lost",
            Self::NVML_ERROR_OPERATING_SYSTEM => "The operating system has blocked the request.",
            Self::NVML_ERROR_MEMORY => "Insufficient Memory",
            Self::NVML_ERROR_NO_DATA => "No data",
            Self::NVML_ERROR_ARGUMENT_VERSION_MISMATCH => "Argument version mismatch",
            _ => "Unknown Error",
        }
    }
}

/// Opaque object behind `nvmlDevice_t`.
#[repr(C)]
pub struct nvmlDevice_st {
    _private: [u8; 0],
}
/// `nvmlDevice_t`: an opaque device handle.
pub type nvmlDevice_t = *mut nvmlDevice_st;

/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`.
pub const NVML_DEVICE_UUID_V2_BUFFER_SIZE: usize = 96;
/// `NVML_DEVICE_NAME_V2_BUFFER_SIZE`.
pub const NVML_DEVICE_NAME_V2_BUFFER_SIZE: usize = 96;
/// `NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE`.
pub const NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE: usize = 80;
/// `NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE`.
pub const NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE: usize = 32;
/// `NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE`.
pub const NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE: usize = 16;
/// `NVML_VALUE_NOT_AVAILABLE` for 64-bit fields.
pub const NVML_VALUE_NOT_AVAILABLE: c_ulonglong = c_ulonglong::MAX;

/// `nvmlMemory_t` (v1): total, free and used device memory in bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlMemory_t {
    /// Total device memory.
    pub total: c_ulonglong,
    /// Unallocated device memory.
    pub free: c_ulonglong,
    /// Reserved plus allocated device memory.
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2_t`: adds a version word and the system-reserved amount.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlMemory_v2_t {
    /// Must be [`nvmlMemory_v2`].
    pub version: c_uint,
    /// Total device memory.
    pub total: c_ulonglong,
    /// Memory reserved for the driver and firmware.
    pub reserved: c_ulonglong,
    /// Unallocated device memory.
    pub free: c_ulonglong,
    /// Allocated device memory.
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2`: `NVML_STRUCT_VERSION(Memory, 2)`, the version word `_v2` callers set.
pub const nvmlMemory_v2: c_uint = core::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);

/// `nvmlUtilization_t`: percent of the last sample period the GPU and its memory were busy.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlUtilization_t {
    /// Kernel-busy percent.
    pub gpu: c_uint,
    /// Memory-busy percent.
    pub memory: c_uint,
}

/// `nvmlProcessInfo_v1_t`: a process using the GPU and its memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlProcessInfo_v1_t {
    /// Process id.
    pub pid: c_uint,
    /// Device memory used by the process.
    pub usedGpuMemory: c_ulonglong,
}

/// `nvmlProcessInfo_t` (= `nvmlProcessInfo_v2_t`): adds MIG instance ids.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlProcessInfo_t {
    /// Process id.
    pub pid: c_uint,
    /// Device memory used by the process.
    pub usedGpuMemory: c_ulonglong,
    /// MIG GPU instance, or `0xFFFFFFFF`.
    pub gpuInstanceId: c_uint,
    /// MIG compute instance, or `0xFFFFFFFF`.
    pub computeInstanceId: c_uint,
}

/// `nvmlProcessUtilizationSample_t`: one process's utilisation at one sample time.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlProcessUtilizationSample_t {
    /// Process id.
    pub pid: c_uint,
    /// CPU timestamp of the sample in microseconds.
    pub timeStamp: c_ulonglong,
    /// SM utilisation percent.
    pub smUtil: c_uint,
    /// Frame-buffer utilisation percent.
    pub memUtil: c_uint,
    /// Encoder utilisation percent.
    pub encUtil: c_uint,
    /// Decoder utilisation percent.
    pub decUtil: c_uint,
}

/// `nvmlPciInfo_t`: PCI location of a device.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlPciInfo_t {
    /// Legacy `domain:bus:device.function` string.
    pub busIdLegacy: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE],
    /// PCI domain.
    pub domain: c_uint,
    /// PCI bus.
    pub bus: c_uint,
    /// PCI device.
    pub device: c_uint,
    /// Combined device and vendor id.
    pub pciDeviceId: c_uint,
    /// Subsystem id.
    pub pciSubSystemId: c_uint,
    /// `domain:bus:device.function` string.
    pub busId: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE],
}

entry_points! { SIGNATURES;
    fn nvmlInit() -> nvmlReturn_t;
    fn nvmlInit_v2() -> nvmlReturn_t;
    fn nvmlInitWithFlags(flags: c_uint) -> nvmlReturn_t;
    fn nvmlShutdown() -> nvmlReturn_t;
    fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char;
    fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t;
    fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t;
    fn nvmlSystemGetCudaDriverVersion(cudaDriverVersion: *mut c_int) -> nvmlReturn_t;
    fn nvmlSystemGetCudaDriverVersion_v2(cudaDriverVersion: *mut c_int) -> nvmlReturn_t;
    fn nvmlSystemGetProcessName(pid: c_uint, name: *mut c_char, length: c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetCount(deviceCount: *mut c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetCount_v2(deviceCount: *mut c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetHandleByIndex(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t;
    fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t;
    fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t;
    fn nvmlDeviceGetHandleByPciBusId_v2(pciBusId: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t;
    fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t;
    fn nvmlDeviceGetMinorNumber(device: nvmlDevice_t, minorNumber: *mut c_uint) -> nvmlReturn_t;
    fn nvmlDeviceGetCudaComputeCapability(device: nvmlDevice_t, major: *mut c_int, minor: *mut c_int) -> nvmlReturn_t;
    fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t;
    fn nvmlDeviceGetMemoryInfo_v2(device: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> nvmlReturn_t;
    fn nvmlDeviceGetUtilizationRates(device: nvmlDevice_t, utilization: *mut nvmlUtilization_t) -> nvmlReturn_t;
    fn nvmlDeviceGetProcessUtilization(device: nvmlDevice_t, utilization: *mut nvmlProcessUtilizationSample_t, processSamplesCount: *mut c_uint, lastSeenTimeStamp: c_ulonglong) -> nvmlReturn_t;
    fn nvmlDeviceGetComputeRunningProcesses(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t;
    fn nvmlDeviceGetComputeRunningProcesses_v2(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
    fn nvmlDeviceGetComputeRunningProcesses_v3(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
    fn nvmlDeviceGetMPSComputeRunningProcesses(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t;
    fn nvmlDeviceGetMPSComputeRunningProcesses_v2(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
    fn nvmlDeviceGetMPSComputeRunningProcesses_v3(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
    fn nvmlDeviceGetGraphicsRunningProcesses(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t;
    fn nvmlDeviceGetGraphicsRunningProcesses_v2(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
    fn nvmlDeviceGetGraphicsRunningProcesses_v3(device: nvmlDevice_t, infoCount: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
}
