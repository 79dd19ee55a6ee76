//! CUDA driver API (`cuda.h`, CUDA 12 ABI): codes, handles, structures and entry points.
use core::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};

use crate::{entry_points, int_newtype};

int_newtype! {
    /// `CUresult`: the status every driver entry point returns.
    CUresult(u32) {
        CUDA_SUCCESS = 0,
        CUDA_ERROR_INVALID_VALUE = 1,
        CUDA_ERROR_OUT_OF_MEMORY = 2,
        CUDA_ERROR_NOT_INITIALIZED = 3,
        CUDA_ERROR_DEINITIALIZED = 4,
        CUDA_ERROR_STUB_LIBRARY = 34,
        CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
        CUDA_ERROR_NO_DEVICE = 100,
        CUDA_ERROR_INVALID_DEVICE = 101,
        CUDA_ERROR_INVALID_IMAGE = 200,
        CUDA_ERROR_INVALID_CONTEXT = 201,
        CUDA_ERROR_CONTEXT_ALREADY_CURRENT = 202,
        CUDA_ERROR_MAP_FAILED = 205,
        CUDA_ERROR_UNMAP_FAILED = 206,
        CUDA_ERROR_ALREADY_MAPPED = 208,
        CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
        CUDA_ERROR_NOT_MAPPED = 211,
        CUDA_ERROR_UNSUPPORTED_LIMIT = 215,
        CUDA_ERROR_INVALID_PTX = 218,
        CUDA_ERROR_INVALID_SOURCE = 300,
        CUDA_ERROR_FILE_NOT_FOUND = 301,
        CUDA_ERROR_OPERATING_SYSTEM = 304,
        CUDA_ERROR_INVALID_HANDLE = 400,
        CUDA_ERROR_ILLEGAL_STATE = 401,
        CUDA_ERROR_NOT_FOUND = 500,
        CUDA_ERROR_NOT_READY = 600,
        CUDA_ERROR_ILLEGAL_ADDRESS = 700,
        CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
        CUDA_ERROR_LAUNCH_TIMEOUT = 702,
        CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE = 708,
        CUDA_ERROR_CONTEXT_IS_DESTROYED = 709,
        CUDA_ERROR_LAUNCH_FAILED = 719,
        CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720,
        CUDA_ERROR_NOT_PERMITTED = 800,
        CUDA_ERROR_NOT_SUPPORTED = 801,
        CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
        CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
        CUDA_ERROR_STREAM_CAPTURE_UNMATCHED = 903,
        CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908,
        CUDA_ERROR_TIMEOUT = 909,
        CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE = 910,
        CUDA_ERROR_UNKNOWN = 999,
    }
}

impl CUresult {
    /// True for `CUDA_SUCCESS`.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The driver's one-line description of this code (what `cuGetErrorString` returns).
    pub fn description(self) -> Option<&'static str> {
        Some(match self {
            Self::CUDA_SUCCESS => "no error",
            Self::CUDA_ERROR_INVALID_VALUE => "invalid argument",
            Self::CUDA_ERROR_OUT_OF_MEMORY => "out of memory",
            Self::CUDA_ERROR_NOT_INITIALIZED => "initialization error",
            Self::CUDA_ERROR_DEINITIALIZED => "driver shutting down",
            Self::CUDA_ERROR_STUB_LIBRARY => "CUDA driver is a stub library",
            Self::CUDA_ERROR_DEVICE_UNAVAILABLE => "CUDA-capable device(s) is/are busy or unavailable",
            Self::CUDA_ERROR_NO_DEVICE => "no CUDA-capable device is detected",
            Self::CUDA_ERROR_INVALID_DEVICE => "invalid device ordinal",
            Self::CUDA_ERROR_INVALID_IMAGE => "device kernel image is invalid",
            Self::CUDA_ERROR_INVALID_CONTEXT => "invalid device context",
            Self::CUDA_ERROR_CONTEXT_ALREADY_CURRENT => "context already current",
            Self::CUDA_ERROR_MAP_FAILED => "mapping of buffer object failed",
            Self::CUDA_ERROR_UNMAP_FAILED => "unmapping of buffer object failed",
            Self::CUDA_ERROR_ALREADY_MAPPED => "resource already mapped",
            Self::CUDA_ERROR_NO_BINARY_FOR_GPU => "no kernel image is available for execution on the device",
            Self::CUDA_ERROR_NOT_MAPPED => "resource not mapped",
            Self::CUDA_ERROR_INVALID_PTX => "a PTX JIT compilation failed",
            Self::CUDA_ERROR_INVALID_SOURCE => "device kernel image is invalid",
            Self::CUDA_ERROR_FILE_NOT_FOUND => "file not found",
            Self::CUDA_ERROR_OPERATING_SYSTEM => "OS call failed or operation not supported on this OS",
            Self::CUDA_ERROR_INVALID_HANDLE => "invalid resource handle",
            Self::CUDA_ERROR_ILLEGAL_STATE => "the operation cannot be performed in the present state",
            Self::CUDA_ERROR_UNSUPPORTED_LIMIT => "limit is not supported on this architecture",
            Self::CUDA_ERROR_NOT_FOUND => "named symbol not found",
            Self::CUDA_ERROR_NOT_READY => "device not ready",
            Self::CUDA_ERROR_ILLEGAL_ADDRESS => "an illegal memory access was encountered",
            Self::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => "too many resources requested for launch",
            Self::CUDA_ERROR_LAUNCH_TIMEOUT => "the launch timed out and was terminated",
            Self::CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE => "primary context active",
            Self::CUDA_ERROR_CONTEXT_IS_DESTROYED => "context is destroyed",
            Self::CUDA_ERROR_LAUNCH_FAILED => "unspecified launch failure",
            Self::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE => "too many blocks in cooperative launch",
            Self::CUDA_ERROR_NOT_PERMITTED => "operation not permitted",
            Self::CUDA_ERROR_NOT_SUPPORTED => "operation not supported",
            Self::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED => "operation not permitted when stream is capturing",
            Self::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED => "operation failed due to a previous error during capture",
            Self::CUDA_ERROR_STREAM_CAPTURE_UNMATCHED => "capture was not initiated in this stream",
            Self::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD => "attempt to terminate a thread-local capture sequence from another thread",
            Self::CUDA_ERROR_TIMEOUT => "wait operation timed out",
            Self::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE => {
                "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update"
            }
            Self::CUDA_ERROR_UNKNOWN => "unknown error",
            _ => return None,
        })
    }
}

/// `CUdevice`: a device ordinal as the driver hands it out.
pub type CUdevice = c_int;
/// `CUdeviceptr` (`CUdeviceptr_v2`): a device address.
pub type CUdeviceptr = c_ulonglong;
/// `CUdeviceptr_v1`: a device address of the 32-bit legacy ABI (`cuMemAlloc` and friends,
/// CUDA versions below 3.2).
pub type CUdeviceptr_v1 = c_uint;
/// `CUmemGenericAllocationHandle`: a physical allocation made by `cuMemCreate`.
pub type CUmemGenericAllocationHandle = c_ulonglong;

macro_rules! opaque_handles {
    ($( $handle:ident => $st:ident ),* $(,)?) => {$(
        #[doc = concat!("Opaque driver object behind `", stringify!($handle), "`.")]
        #[repr(C)]
        pub struct $st { _private: [u8; 0] }
        #[doc = concat!("`", stringify!($handle), "`: an opaque driver handle.")]
        pub type $handle = *mut $st;
    )*};
}
opaque_handles! {
    CUcontext => CUctx_st,
    CUmodule => CUmod_st,
    CUfunction => CUfunc_st,
    CUstream => CUstream_st,
    CUevent => CUevent_st,
    CUarray => CUarray_st,
    CUmipmappedArray => CUmipmappedArray_st,
    CUmemoryPool => CUmemPoolHandle_st,
    CUgraph => CUgraph_st,
    CUgraphExec => CUgraphExec_st,
    CUgraphNode => CUgraphNode_st,
    CUlibrary => CUlib_st,
    CUkernel => CUkern_st,
    CUgreenCtx => CUgreenCtx_st,
    CUdevResourceDesc => CUdevResourceDesc_st,
    CUlinkState => CUlinkState_st,
}

/// `CUexecAffinityParam`: an execution-affinity request of `cuCtxCreate_v3` (never read here).
#[repr(C)]
pub struct CUexecAffinityParam {
    _private: [u8; 0],
}

/// `CUctxCreateParams`: the creation parameters of `cuCtxCreate_v4` (never read here).
#[repr(C)]
pub struct CUctxCreateParams {
    _private: [u8; 0],
}

/// `CU_STREAM_LEGACY`: the legacy default stream, usable from any context.
pub const CU_STREAM_LEGACY: CUstream = 0x1 as CUstream;
/// `CU_STREAM_PER_THREAD`: the per-thread default stream.
pub const CU_STREAM_PER_THREAD: CUstream = 0x2 as CUstream;

/// `CUuuid`: 16 raw bytes identifying a device.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CUuuid {
    /// The UUID's bytes.
    pub bytes: [c_char; 16],
}

int_newtype! {
    /// `CUdevice_attribute`: the attributes `cuDeviceGetAttribute` answers (subset).
    CUdevice_attribute(c_int) {
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X = 2,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y = 3,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z = 4,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X = 5,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y = 6,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z = 7,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8,
        CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY = 9,
        CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10,
        CU_DEVICE_ATTRIBUTE_MAX_PITCH = 11,
        CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK = 12,
        CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13,
        CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT = 14,
        CU_DEVICE_ATTRIBUTE_GPU_OVERLAP = 15,
        CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
        CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT = 17,
        CU_DEVICE_ATTRIBUTE_INTEGRATED = 18,
        CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY = 19,
        CU_DEVICE_ATTRIBUTE_COMPUTE_MODE = 20,
        CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS = 31,
        CU_DEVICE_ATTRIBUTE_ECC_ENABLED = 32,
        CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33,
        CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34,
        CU_DEVICE_ATTRIBUTE_TCC_DRIVER = 35,
        CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36,
        CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37,
        CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38,
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR = 39,
        CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT = 40,
        CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING = 41,
        CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
        CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED = 78,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81,
        CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR = 82,
        CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY = 83,
        CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS = 89,
        CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH = 95,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
        CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR = 106,
        CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED = 115,
        CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES = 119,
        CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH = 120,
        CU_DEVICE_ATTRIBUTE_MPS_ENABLED = 133,
    }
}

int_newtype! {
    /// `CUfunction_attribute` (subset).
    CUfunction_attribute(c_int) {
        CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0,
        CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1,
        CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES = 2,
        CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3,
        CU_FUNC_ATTRIBUTE_NUM_REGS = 4,
        CU_FUNC_ATTRIBUTE_PTX_VERSION = 5,
        CU_FUNC_ATTRIBUTE_BINARY_VERSION = 6,
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
    }
}

int_newtype! {
    /// `CUarray_format`: element formats of CUDA arrays (subset).
    CUarray_format(u32) {
        CU_AD_FORMAT_UNSIGNED_INT8 = 0x01,
        CU_AD_FORMAT_UNSIGNED_INT16 = 0x02,
        CU_AD_FORMAT_UNSIGNED_INT32 = 0x03,
        CU_AD_FORMAT_SIGNED_INT8 = 0x08,
        CU_AD_FORMAT_SIGNED_INT16 = 0x09,
        CU_AD_FORMAT_SIGNED_INT32 = 0x0a,
        CU_AD_FORMAT_HALF = 0x10,
        CU_AD_FORMAT_FLOAT = 0x20,
    }
}

impl CUarray_format {
    /// Bytes of one channel of one element, for the formats declared here.
    pub const fn channel_bytes(self) -> Option<usize> {
        match self.0 {
            0x01 | 0x08 => Some(1),
            0x02 | 0x09 | 0x10 => Some(2),
            0x03 | 0x0a | 0x20 => Some(4),
            _ => None,
        }
    }
}

/// `CUDA_ARRAY_DESCRIPTOR` (`_v2`): shape of a 1D/2D CUDA array.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUDA_ARRAY_DESCRIPTOR {
    /// Width in elements.
    pub Width: usize,
    /// Height in elements (0 for 1D).
    pub Height: usize,
    /// Element format.
    pub Format: CUarray_format,
    /// Channels per element: 1, 2 or 4.
    pub NumChannels: c_uint,
}

/// `CUDA_ARRAY3D_DESCRIPTOR` (`_v2`): shape of a 1D/2D/3D or layered CUDA array.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUDA_ARRAY3D_DESCRIPTOR {
    /// Width in elements.
    pub Width: usize,
    /// Height in elements (0 for 1D).
    pub Height: usize,
    /// Depth in elements, or layers (0 for 1D/2D).
    pub Depth: usize,
    /// Element format.
    pub Format: CUarray_format,
    /// Channels per element: 1, 2 or 4.
    pub NumChannels: c_uint,
    /// `CUDA_ARRAY3D_*` flags.
    pub Flags: c_uint,
}

/// `CUDA_ARRAY_DESCRIPTOR_v1`: `cuArrayCreate`'s legacy descriptor (32-bit extents).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUDA_ARRAY_DESCRIPTOR_v1 {
    /// Width in elements.
    pub Width: c_uint,
    /// Height in elements (0 for 1D).
    pub Height: c_uint,
    /// Element format.
    pub Format: CUarray_format,
    /// Channels per element: 1, 2 or 4.
    pub NumChannels: c_uint,
}

/// `CUDA_ARRAY3D_DESCRIPTOR_v1`: `cuArray3DCreate`'s legacy descriptor (32-bit extents).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUDA_ARRAY3D_DESCRIPTOR_v1 {
    /// Width in elements.
    pub Width: c_uint,
    /// Height in elements (0 for 1D).
    pub Height: c_uint,
    /// Depth in elements, or layers (0 for 1D/2D).
    pub Depth: c_uint,
    /// Element format.
    pub Format: CUarray_format,
    /// Channels per element: 1, 2 or 4.
    pub NumChannels: c_uint,
    /// `CUDA_ARRAY3D_*` flags.
    pub Flags: c_uint,
}

impl From<CUDA_ARRAY_DESCRIPTOR> for CUDA_ARRAY3D_DESCRIPTOR {
    /// A 1D/2D descriptor as the 3D one (depth 0, no flags), as the driver reads it.
    fn from(d: CUDA_ARRAY_DESCRIPTOR) -> Self {
        CUDA_ARRAY3D_DESCRIPTOR { Width: d.Width, Height: d.Height, Depth: 0, Format: d.Format, NumChannels: d.NumChannels, Flags: 0 }
    }
}

impl From<CUDA_ARRAY_DESCRIPTOR_v1> for CUDA_ARRAY3D_DESCRIPTOR {
    /// The legacy 1D/2D descriptor, widened.
    fn from(d: CUDA_ARRAY_DESCRIPTOR_v1) -> Self {
        CUDA_ARRAY3D_DESCRIPTOR {
            Width: d.Width as usize,
            Height: d.Height as usize,
            Depth: 0,
            Format: d.Format,
            NumChannels: d.NumChannels,
            Flags: 0,
        }
    }
}

impl From<CUDA_ARRAY3D_DESCRIPTOR_v1> for CUDA_ARRAY3D_DESCRIPTOR {
    /// The legacy 3D descriptor, widened.
    fn from(d: CUDA_ARRAY3D_DESCRIPTOR_v1) -> Self {
        CUDA_ARRAY3D_DESCRIPTOR {
            Width: d.Width as usize,
            Height: d.Height as usize,
            Depth: d.Depth as usize,
            Format: d.Format,
            NumChannels: d.NumChannels,
            Flags: d.Flags,
        }
    }
}

int_newtype! {
    /// `CUlaunchAttributeID` (subset).
    CUlaunchAttributeID(u32) {
        CU_LAUNCH_ATTRIBUTE_IGNORE = 0,
        CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW = 1,
        CU_LAUNCH_ATTRIBUTE_COOPERATIVE = 2,
        CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY = 3,
        CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4,
        CU_LAUNCH_ATTRIBUTE_PRIORITY = 8,
    }
}

/// `CUlaunchAttributeValue`: a 64-byte union; read it through the accessor for its id.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct CUlaunchAttributeValue {
    /// The raw bytes of the union.
    pub pad: [u8; 64],
}

impl CUlaunchAttributeValue {
    /// The union read as its leading `int` (`cooperative`, `priority`, ...).
    pub fn as_int(&self) -> c_int {
        c_int::from_ne_bytes([self.pad[0], self.pad[1], self.pad[2], self.pad[3]])
    }

    /// A value whose leading `int` is `v` and whose remaining bytes are zero.
    pub fn from_int(v: c_int) -> Self {
        let mut pad = [0u8; 64];
        pad[..4].copy_from_slice(&v.to_ne_bytes());
        Self { pad }
    }
}

/// `CUlaunchAttribute`: one attribute of a `cuLaunchKernelEx` launch.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUlaunchAttribute {
    /// Which attribute this is.
    pub id: CUlaunchAttributeID,
    /// Padding to 8 bytes, as in the header.
    pub pad: [c_char; 4],
    /// The attribute's value.
    pub value: CUlaunchAttributeValue,
}

/// `CUlaunchConfig`: grid, block, stream and attributes of a `cuLaunchKernelEx` launch.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUlaunchConfig {
    /// Grid width in blocks.
    pub gridDimX: c_uint,
    /// Grid height in blocks.
    pub gridDimY: c_uint,
    /// Grid depth in blocks.
    pub gridDimZ: c_uint,
    /// Block width in threads.
    pub blockDimX: c_uint,
    /// Block height in threads.
    pub blockDimY: c_uint,
    /// Block depth in threads.
    pub blockDimZ: c_uint,
    /// Dynamic shared memory per block in bytes.
    pub sharedMemBytes: c_uint,
    /// Stream to launch into.
    pub hStream: CUstream,
    /// Attribute list (may be null when `numAttrs` is 0).
    pub attrs: *mut CUlaunchAttribute,
    /// Number of attributes in `attrs`.
    pub numAttrs: c_uint,
}

int_newtype! {
    /// `CUmemAllocationType`.
    CUmemAllocationType(u32) {
        CU_MEM_ALLOCATION_TYPE_INVALID = 0,
        CU_MEM_ALLOCATION_TYPE_PINNED = 1,
    }
}

int_newtype! {
    /// `CUmemLocationType`.
    CUmemLocationType(u32) {
        CU_MEM_LOCATION_TYPE_INVALID = 0,
        CU_MEM_LOCATION_TYPE_DEVICE = 1,
        CU_MEM_LOCATION_TYPE_HOST = 2,
    }
}

int_newtype! {
    /// `CUmemAllocationGranularity_flags`.
    CUmemAllocationGranularity_flags(u32) {
        CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0,
        CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1,
    }
}

int_newtype! {
    /// `CUmemAccess_flags`.
    CUmemAccess_flags(u32) {
        CU_MEM_ACCESS_FLAGS_PROT_NONE = 0,
        CU_MEM_ACCESS_FLAGS_PROT_READ = 1,
        CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
    }
}

int_newtype! {
    /// `CUmemPool_attribute`.
    CUmemPool_attribute(u32) {
        CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES = 1,
        CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC = 2,
        CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES = 3,
        CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4,
        CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT = 5,
        CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH = 6,
        CU_MEMPOOL_ATTR_USED_MEM_CURRENT = 7,
        CU_MEMPOOL_ATTR_USED_MEM_HIGH = 8,
    }
}

/// `CUmemLocation`: where memory lives (a device ordinal, or the host).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemLocation {
    /// Kind of location.
    pub type_: CUmemLocationType,
    /// Device ordinal (or NUMA id) for that kind.
    pub id: c_int,
}

/// The `allocFlags` member of `CUmemAllocationProp`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemAllocationProp_allocFlags {
    /// Compression hint.
    pub compressionType: u8,
    /// GPUDirect RDMA capability hint.
    pub gpuDirectRDMACapable: u8,
    /// Usage bitmask.
    pub usage: u16,
    /// Reserved, must be zero.
    pub reserved: [u8; 4],
}

/// `CUmemAllocationProp`: properties of a `cuMemCreate` physical allocation.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemAllocationProp {
    /// Allocation type (pinned).
    pub type_: CUmemAllocationType,
    /// Requested `CUmemAllocationHandleType` bits.
    pub requestedHandleTypes: u32,
    /// Where the memory lives.
    pub location: CUmemLocation,
    /// Windows-only metadata; null elsewhere.
    pub win32HandleMetaData: *mut c_void,
    /// Allocation hints.
    pub allocFlags: CUmemAllocationProp_allocFlags,
}

/// `CUmemAccessDesc`: an access right granted by `cuMemSetAccess`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemAccessDesc {
    /// Which device gets access.
    pub location: CUmemLocation,
    /// Access granted.
    pub flags: CUmemAccess_flags,
}

/// `CUmemPoolProps`: properties of a `cuMemPoolCreate` pool.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemPoolProps {
    /// Allocation type (pinned).
    pub allocType: CUmemAllocationType,
    /// `CUmemAllocationHandleType` bits.
    pub handleTypes: u32,
    /// Where the pool's memory lives.
    pub location: CUmemLocation,
    /// Windows-only security attributes; null elsewhere.
    pub win32SecurityAttributes: *mut c_void,
    /// Maximum pool size (0: system default).
    pub maxSize: usize,
    /// Usage bitmask.
    pub usage: u16,
    /// Reserved, must be zero.
    pub reserved: [u8; 54],
}

int_newtype! {
    /// `CUstreamCaptureStatus`.
    CUstreamCaptureStatus(u32) {
        CU_STREAM_CAPTURE_STATUS_NONE = 0,
        CU_STREAM_CAPTURE_STATUS_ACTIVE = 1,
        CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2,
    }
}

int_newtype! {
    /// `CUdevResourceType`: the kind of a device resource.
    CUdevResourceType(u32) {
        CU_DEV_RESOURCE_TYPE_INVALID = 0,
        CU_DEV_RESOURCE_TYPE_SM = 1,
    }
}

/// `CUdevResource` (`_v1`): a tagged union of device resources; for
/// `CU_DEV_RESOURCE_TYPE_SM` the union holds `CUdevSmResource { unsigned int smCount; }`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUdevResource {
    /// Which union member is set.
    pub type_: CUdevResourceType,
    /// The driver's own bytes.
    pub _internal_padding: [u8; 92],
    /// The union's bytes (`sm`, or `_oversize`).
    pub _oversize: [u8; 48],
}

impl CUdevResource {
    /// An SM resource of `sm_count` SMs (the driver's own bytes zero).
    pub fn sm(sm_count: c_uint) -> Self {
        let mut r = CUdevResource { type_: CUdevResourceType::CU_DEV_RESOURCE_TYPE_SM, _internal_padding: [0; 92], _oversize: [0; 48] };
        r._oversize[..4].copy_from_slice(&sm_count.to_ne_bytes());
        r
    }

    /// `sm.smCount`.
    pub fn sm_count(&self) -> c_uint {
        c_uint::from_ne_bytes([self._oversize[0], self._oversize[1], self._oversize[2], self._oversize[3]])
    }
}

/// `CU_GREEN_CTX_DEFAULT_STREAM`: required when creating a green context.
pub const CU_GREEN_CTX_DEFAULT_STREAM: c_uint = 0x1;

int_newtype! {
    /// `CUlibraryOption`: an option of `cuLibraryLoadData`.
    CUlibraryOption(u32) {
        CU_LIBRARY_HOST_UNIVERSAL_FUNCTION_AND_DATA_TABLE = 0,
        CU_LIBRARY_BINARY_IS_PRESERVED = 1,
    }
}

int_newtype! {
    /// `CUlimit`: a context limit set by `cuCtxSetLimit`.
    CUlimit(u32) {
        CU_LIMIT_STACK_SIZE = 0x00,
        CU_LIMIT_PRINTF_FIFO_SIZE = 0x01,
        CU_LIMIT_MALLOC_HEAP_SIZE = 0x02,
        CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH = 0x03,
        CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT = 0x04,
        CU_LIMIT_MAX_L2_FETCH_GRANULARITY = 0x05,
        CU_LIMIT_PERSISTING_L2_CACHE_SIZE = 0x06,
        CU_LIMIT_SHMEM_SIZE = 0x07,
        CU_LIMIT_CIG_ENABLED = 0x08,
        CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED = 0x09,
    }
}

int_newtype! {
    /// `CUgraphMem_attribute`: the device's graph memory figures (all `cuuint64_t`).
    CUgraphMem_attribute(u32) {
        CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT = 0,
        CU_GRAPH_MEM_ATTR_USED_MEM_HIGH = 1,
        CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT = 2,
        CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH = 3,
    }
}

int_newtype! {
    /// `CUgraphInstantiateResult`: why `cuGraphInstantiateWithParams` failed, if it did.
    CUgraphInstantiateResult(u32) {
        CUDA_GRAPH_INSTANTIATE_SUCCESS = 0,
        CUDA_GRAPH_INSTANTIATE_ERROR = 1,
        CUDA_GRAPH_INSTANTIATE_INVALID_STRUCTURE = 2,
        CUDA_GRAPH_INSTANTIATE_NODE_OPERATION_NOT_SUPPORTED = 3,
        CUDA_GRAPH_INSTANTIATE_MULTIPLE_CTXS_NOT_SUPPORTED = 4,
        CUDA_GRAPH_INSTANTIATE_CONDITIONAL_HANDLE_UNUSED = 5,
    }
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS` (`_v1`): a graph allocation node's request; `dptr` is written
/// by `cuGraphAddMemAllocNode`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUDA_MEM_ALLOC_NODE_PARAMS {
    /// Where the allocation lives (`location`); `handleTypes` must be none.
    pub poolProps: CUmemPoolProps,
    /// Peer access descriptors.
    pub accessDescs: *const CUmemAccessDesc,
    /// Number of `accessDescs`.
    pub accessDescCount: usize,
    /// Bytes requested.
    pub bytesize: usize,
    /// Out: the allocation's address, fixed for the node's lifetime.
    pub dptr: CUdeviceptr,
}

/// `CUgraphEdgeData`: the data of a graph edge (only its pointer is passed here).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CUgraphEdgeData {
    /// When the dependency is triggered from the upstream node.
    pub from_port: u8,
    /// What portion of the downstream node depends on it.
    pub to_port: u8,
    /// `CUgraphDependencyType`.
    pub type_: u8,
    /// Zero.
    pub reserved: [u8; 5],
}

/// `CUDA_GRAPH_INSTANTIATE_PARAMS`: `cuGraphInstantiateWithParams`' flags and results.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUDA_GRAPH_INSTANTIATE_PARAMS {
    /// `CUDA_GRAPH_INSTANTIATE_FLAG_*`.
    pub flags: u64,
    /// Stream the graph is uploaded in with `CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD`.
    pub hUploadStream: CUstream,
    /// Out: the node that made instantiation fail.
    pub hErrNode_out: CUgraphNode,
    /// Out: why instantiation failed.
    pub result_out: CUgraphInstantiateResult,
}

int_newtype! {
    /// `CUstreamCaptureMode`.
    CUstreamCaptureMode(u32) {
        CU_STREAM_CAPTURE_MODE_GLOBAL = 0,
        CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1,
        CU_STREAM_CAPTURE_MODE_RELAXED = 2,
    }
}

int_newtype! {
    /// `CUdriverProcAddressQueryResult`: why `cuGetProcAddress_v2` found a symbol or not.
    CUdriverProcAddressQueryResult(u32) {
        CU_GET_PROC_ADDRESS_SUCCESS = 0,
        CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND = 1,
        CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT = 2,
    }
}

int_newtype! {
    /// `CUdriverProcAddress_flags`: which stream semantics `cuGetProcAddress` looks up. A C enum
    /// (4 bytes); the `flags` parameter that carries these bits is a `cuuint64_t`.
    CUdriverProcAddress_flags(u32) {
        CU_GET_PROC_ADDRESS_DEFAULT = 0,
        CU_GET_PROC_ADDRESS_LEGACY_STREAM = 1,
        CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM = 2,
    }
}

int_newtype! {
    /// `CUjit_option`: a JIT compiler or linker option (the log buffers are the ones read).
    CUjit_option(u32) {
        CU_JIT_MAX_REGISTERS = 0,
        CU_JIT_INFO_LOG_BUFFER = 3,
        CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
        CU_JIT_ERROR_LOG_BUFFER = 5,
        CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
        CU_JIT_LOG_VERBOSE = 12,
    }
}

int_newtype! {
    /// `CUjitInputType`: what a `cuLinkAddData` input is.
    CUjitInputType(u32) {
        CU_JIT_INPUT_CUBIN = 0,
        CU_JIT_INPUT_PTX = 1,
        CU_JIT_INPUT_FATBINARY = 2,
        CU_JIT_INPUT_OBJECT = 3,
        CU_JIT_INPUT_LIBRARY = 4,
        CU_JIT_INPUT_NVVM = 5,
    }
}

/// `CU_MEMHOSTALLOC_PORTABLE`.
pub const CU_MEMHOSTALLOC_PORTABLE: c_uint = 0x01;
/// `CU_MEM_ATTACH_GLOBAL`: managed memory accessible from any stream.
pub const CU_MEM_ATTACH_GLOBAL: c_uint = 0x1;
/// `CU_MEM_ATTACH_HOST`: managed memory initially attached to the host.
pub const CU_MEM_ATTACH_HOST: c_uint = 0x2;
/// `CU_CTX_SCHED_AUTO`.
pub const CU_CTX_SCHED_AUTO: c_uint = 0x00;
/// `CU_STREAM_NON_BLOCKING`.
pub const CU_STREAM_NON_BLOCKING: c_uint = 0x1;
/// `CU_EVENT_DISABLE_TIMING`.
pub const CU_EVENT_DISABLE_TIMING: c_uint = 0x2;
/// `CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`: each launch first frees what the last
/// launch's allocation nodes left allocated.
pub const CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH: c_ulonglong = 1;
/// `CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD`: `cuGraphInstantiateWithParams` also uploads the graph.
pub const CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD: c_ulonglong = 2;
/// `CU_LAUNCH_PARAM_END` as an integer.
pub const CU_LAUNCH_PARAM_END_AS_INT: usize = 0x00;
/// `CU_LAUNCH_PARAM_BUFFER_POINTER` as an integer.
pub const CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT: usize = 0x01;
/// `CU_LAUNCH_PARAM_BUFFER_SIZE` as an integer.
pub const CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT: usize = 0x02;

entry_points! { SIGNATURES;
    fn cuInit(flags: c_uint) -> CUresult;
    fn cuDriverGetVersion(driverVersion: *mut c_int) -> CUresult;
    fn cuGetErrorName(error: CUresult, pStr: *mut *const c_char) -> CUresult;
    fn cuGetErrorString(error: CUresult, pStr: *mut *const c_char) -> CUresult;
    fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, cudaVersion: c_int, flags: u64) -> CUresult;
    fn cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, cudaVersion: c_int, flags: u64, symbolStatus: *mut CUdriverProcAddressQueryResult) -> CUresult;
    fn cuGetExportTable(ppExportTable: *mut *const c_void, pExportTableId: *const CUuuid) -> CUresult;

    fn cuDeviceGetCount(count: *mut c_int) -> CUresult;
    fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult;
    fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult;
    fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) -> CUresult;
    fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) -> CUresult;
    fn cuDeviceGetAttribute(pi: *mut c_int, attrib: CUdevice_attribute, dev: CUdevice) -> CUresult;
    fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult;
    fn cuDeviceGetPCIBusId(pciBusId: *mut c_char, len: c_int, dev: CUdevice) -> CUresult;
    fn cuDeviceGetDefaultMemPool(pool_out: *mut CUmemoryPool, dev: CUdevice) -> CUresult;
    fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult;
    fn cuDeviceSetMemPool(dev: CUdevice, pool: CUmemoryPool) -> CUresult;

    fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult;
    fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult;
    fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult;
    fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CUresult;
    fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult;
    fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult;
    fn cuCtxCreate_v3(pctx: *mut CUcontext, paramsArray: *mut CUexecAffinityParam, numParams: c_int, flags: c_uint, dev: CUdevice) -> CUresult;
    fn cuCtxCreate_v4(pctx: *mut CUcontext, ctxCreateParams: *mut CUctxCreateParams, flags: c_uint, dev: CUdevice) -> CUresult;
    fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult;
    fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;
    fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult;
    fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult;
    fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult;
    fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult;
    fn cuCtxSynchronize() -> CUresult;
    fn cuCtxSetLimit(limit: CUlimit, value: usize) -> CUresult;

    // The legacy ABI: what `libcuda` still exports under the unversioned names for programs
    // built before CUDA 3.2 / 4.0 / 11.0 (32-bit sizes and addresses where the types say so).
    fn cuDeviceTotalMem(bytes: *mut c_uint, dev: CUdevice) -> CUresult;
    fn cuCtxCreate(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult;
    fn cuCtxDestroy(ctx: CUcontext) -> CUresult;
    fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> CUresult;
    fn cuDevicePrimaryCtxReset(dev: CUdevice) -> CUresult;
    fn cuMemGetInfo(free: *mut c_uint, total: *mut c_uint) -> CUresult;
    fn cuMemAlloc(dptr: *mut CUdeviceptr_v1, bytesize: c_uint) -> CUresult;
    fn cuMemAllocPitch(dptr: *mut CUdeviceptr_v1, pPitch: *mut c_uint, WidthInBytes: c_uint, Height: c_uint, ElementSizeBytes: c_uint) -> CUresult;
    fn cuMemFree(dptr: CUdeviceptr_v1) -> CUresult;
    fn cuArrayCreate(pHandle: *mut CUarray, pAllocateArray: *const CUDA_ARRAY_DESCRIPTOR_v1) -> CUresult;
    fn cuArray3DCreate(pHandle: *mut CUarray, pAllocateArray: *const CUDA_ARRAY3D_DESCRIPTOR_v1) -> CUresult;
    fn cuCtxGetLimit(pvalue: *mut usize, limit: CUlimit) -> CUresult;

    fn cuStreamCreate(phStream: *mut CUstream, Flags: c_uint) -> CUresult;
    fn cuStreamCreateWithPriority(phStream: *mut CUstream, flags: c_uint, priority: c_int) -> CUresult;
    fn cuStreamDestroy_v2(hStream: CUstream) -> CUresult;
    fn cuStreamSynchronize(hStream: CUstream) -> CUresult;
    fn cuStreamSynchronize_ptsz(hStream: CUstream) -> CUresult;
    fn cuStreamQuery(hStream: CUstream) -> CUresult;
    fn cuStreamQuery_ptsz(hStream: CUstream) -> CUresult;
    fn cuStreamWaitEvent(hStream: CUstream, hEvent: CUevent, Flags: c_uint) -> CUresult;
    fn cuStreamWaitEvent_ptsz(hStream: CUstream, hEvent: CUevent, Flags: c_uint) -> CUresult;
    fn cuEventCreate(phEvent: *mut CUevent, Flags: c_uint) -> CUresult;
    fn cuEventDestroy_v2(hEvent: CUevent) -> CUresult;
    fn cuEventRecord(hEvent: CUevent, hStream: CUstream) -> CUresult;
    fn cuEventRecord_ptsz(hEvent: CUevent, hStream: CUstream) -> CUresult;
    fn cuEventSynchronize(hEvent: CUevent) -> CUresult;
    fn cuEventQuery(hEvent: CUevent) -> CUresult;
    fn cuEventElapsedTime(pMilliseconds: *mut f32, hStart: CUevent, hEnd: CUevent) -> CUresult;
    fn cuEventElapsedTime_v2(pMilliseconds: *mut f32, hStart: CUevent, hEnd: CUevent) -> CUresult;

    fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) -> CUresult;
    fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult;
    fn cuModuleLoadDataEx(module: *mut CUmodule, image: *const c_void, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void) -> CUresult;
    fn cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) -> CUresult;
    fn cuModuleUnload(hmod: CUmodule) -> CUresult;
    fn cuLinkCreate_v2(numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void, stateOut: *mut CUlinkState) -> CUresult;
    fn cuLinkAddData_v2(state: CUlinkState, inputType: CUjitInputType, data: *mut c_void, size: usize, name: *const c_char, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void) -> CUresult;
    fn cuLinkAddFile_v2(state: CUlinkState, inputType: CUjitInputType, path: *const c_char, numOptions: c_uint, options: *mut CUjit_option, optionValues: *mut *mut c_void) -> CUresult;
    fn cuLinkComplete(state: CUlinkState, cubinOut: *mut *mut c_void, sizeOut: *mut usize) -> CUresult;
    fn cuLinkDestroy(state: CUlinkState) -> CUresult;
    fn cuDeviceGetDevResource(device: CUdevice, resource: *mut CUdevResource, type_: CUdevResourceType) -> CUresult;
    fn cuDevSmResourceSplitByCount(result: *mut CUdevResource, nbGroups: *mut c_uint, input: *const CUdevResource, remaining: *mut CUdevResource, useFlags: c_uint, minCount: c_uint) -> CUresult;
    fn cuDevResourceGenerateDesc(phDesc: *mut CUdevResourceDesc, resources: *mut CUdevResource, nbResources: c_uint) -> CUresult;
    fn cuGreenCtxCreate(phCtx: *mut CUgreenCtx, desc: CUdevResourceDesc, dev: CUdevice, flags: c_uint) -> CUresult;
    fn cuGreenCtxDestroy(hCtx: CUgreenCtx) -> CUresult;
    fn cuCtxFromGreenCtx(pContext: *mut CUcontext, hCtx: CUgreenCtx) -> CUresult;
    fn cuLibraryLoadData(library: *mut CUlibrary, code: *const c_void, jitOptions: *mut CUjit_option, jitOptionsValues: *mut *mut c_void, numJitOptions: c_uint, libraryOptions: *mut CUlibraryOption, libraryOptionValues: *mut *mut c_void, numLibraryOptions: c_uint) -> CUresult;
    fn cuLibraryLoadFromFile(library: *mut CUlibrary, fileName: *const c_char, jitOptions: *mut CUjit_option, jitOptionsValues: *mut *mut c_void, numJitOptions: c_uint, libraryOptions: *mut CUlibraryOption, libraryOptionValues: *mut *mut c_void, numLibraryOptions: c_uint) -> CUresult;
    fn cuLibraryUnload(library: CUlibrary) -> CUresult;
    fn cuLibraryGetKernel(pKernel: *mut CUkernel, library: CUlibrary, name: *const c_char) -> CUresult;
    fn cuLibraryGetModule(pMod: *mut CUmodule, library: CUlibrary) -> CUresult;
    fn cuKernelGetFunction(pFunc: *mut CUfunction, kernel: CUkernel) -> CUresult;
    fn cuFuncGetAttribute(pi: *mut c_int, attrib: CUfunction_attribute, hfunc: CUfunction) -> CUresult;
    fn cuKernelGetAttribute(pi: *mut c_int, attrib: CUfunction_attribute, kernel: CUkernel, dev: CUdevice) -> CUresult;

    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult;
    fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult;
    fn cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, pPitch: *mut usize, WidthInBytes: usize, Height: usize, ElementSizeBytes: c_uint) -> CUresult;
    fn cuMemAllocManaged(dptr: *mut CUdeviceptr, bytesize: usize, flags: c_uint) -> CUresult;
    fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult;
    fn cuMemGetAddressRange_v2(pbase: *mut CUdeviceptr, psize: *mut usize, dptr: CUdeviceptr) -> CUresult;
    fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) -> CUresult;
    fn cuMemHostAlloc(pp: *mut *mut c_void, bytesize: usize, Flags: c_uint) -> CUresult;
    fn cuMemFreeHost(p: *mut c_void) -> CUresult;
    fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, hStream: CUstream) -> CUresult;
    fn cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, hStream: CUstream) -> CUresult;
    fn cuMemFreeAsync(dptr: CUdeviceptr, hStream: CUstream) -> CUresult;
    fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, hStream: CUstream) -> CUresult;
    fn cuMemAllocFromPoolAsync(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, hStream: CUstream) -> CUresult;
    fn cuMemAllocFromPoolAsync_ptsz(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, hStream: CUstream) -> CUresult;
    fn cuMemPoolCreate(pool: *mut CUmemoryPool, poolProps: *const CUmemPoolProps) -> CUresult;
    fn cuMemPoolDestroy(pool: CUmemoryPool) -> CUresult;
    fn cuMemPoolTrimTo(pool: CUmemoryPool, minBytesToKeep: usize) -> CUresult;
    fn cuMemPoolGetAttribute(pool: CUmemoryPool, attr: CUmemPool_attribute, value: *mut c_void) -> CUresult;
    fn cuMemPoolSetAttribute(pool: CUmemoryPool, attr: CUmemPool_attribute, value: *mut c_void) -> CUresult;
    fn cuMemGetAllocationGranularity(granularity: *mut usize, prop: *const CUmemAllocationProp, option: CUmemAllocationGranularity_flags) -> CUresult;
    fn cuMemCreate(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: c_ulonglong) -> CUresult;
    fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult;
    fn cuMemRetainAllocationHandle(handle: *mut CUmemGenericAllocationHandle, addr: *mut c_void) -> CUresult;
    fn cuMemAddressReserve(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, flags: c_ulonglong) -> CUresult;
    fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> CUresult;
    fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: c_ulonglong) -> CUresult;
    fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult;
    fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) -> CUresult;
    fn cuArrayCreate_v2(pHandle: *mut CUarray, pAllocateArray: *const CUDA_ARRAY_DESCRIPTOR) -> CUresult;
    fn cuArray3DCreate_v2(pHandle: *mut CUarray, pAllocateArray: *const CUDA_ARRAY3D_DESCRIPTOR) -> CUresult;
    fn cuArrayDestroy(hArray: CUarray) -> CUresult;
    fn cuMipmappedArrayCreate(pHandle: *mut CUmipmappedArray, pMipmappedArrayDesc: *const CUDA_ARRAY3D_DESCRIPTOR, numMipmapLevels: c_uint) -> CUresult;
    fn cuMipmappedArrayDestroy(hMipmappedArray: CUmipmappedArray) -> CUresult;

    fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize) -> CUresult;
    fn cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize) -> CUresult;
    fn cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyAsync_ptsz(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyHtoD_v2(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize) -> CUresult;
    fn cuMemcpyHtoD_v2_ptds(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize) -> CUresult;
    fn cuMemcpyDtoH_v2(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize) -> CUresult;
    fn cuMemcpyDtoH_v2_ptds(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize) -> CUresult;
    fn cuMemcpyDtoD_v2(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: usize) -> CUresult;
    fn cuMemcpyDtoD_v2_ptds(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: usize) -> CUresult;
    fn cuMemcpyHtoDAsync_v2(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyHtoDAsync_v2_ptsz(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyDtoHAsync_v2(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyDtoHAsync_v2_ptsz(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyDtoDAsync_v2(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemcpyDtoDAsync_v2_ptsz(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CUresult;
    fn cuMemsetD8_v2(dstDevice: CUdeviceptr, uc: u8, N: usize) -> CUresult;
    fn cuMemsetD8_v2_ptds(dstDevice: CUdeviceptr, uc: u8, N: usize) -> CUresult;
    fn cuMemsetD32_v2(dstDevice: CUdeviceptr, ui: c_uint, N: usize) -> CUresult;
    fn cuMemsetD32_v2_ptds(dstDevice: CUdeviceptr, ui: c_uint, N: usize) -> CUresult;
    fn cuMemsetD8Async(dstDevice: CUdeviceptr, uc: u8, N: usize, hStream: CUstream) -> CUresult;
    fn cuMemsetD8Async_ptsz(dstDevice: CUdeviceptr, uc: u8, N: usize, hStream: CUstream) -> CUresult;
    fn cuMemsetD32Async(dstDevice: CUdeviceptr, ui: c_uint, N: usize, hStream: CUstream) -> CUresult;
    fn cuMemsetD32Async_ptsz(dstDevice: CUdeviceptr, ui: c_uint, N: usize, hStream: CUstream) -> CUresult;

    fn cuLaunchKernel(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
    fn cuLaunchKernel_ptsz(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
    fn cuLaunchKernelEx(config: *const CUlaunchConfig, f: CUfunction, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
    fn cuLaunchKernelEx_ptsz(config: *const CUlaunchConfig, f: CUfunction, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
    fn cuLaunchCooperativeKernel(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void) -> CUresult;
    fn cuLaunchCooperativeKernel_ptsz(f: CUfunction, gridDimX: c_uint, gridDimY: c_uint, gridDimZ: c_uint, blockDimX: c_uint, blockDimY: c_uint, blockDimZ: c_uint, sharedMemBytes: c_uint, hStream: CUstream, kernelParams: *mut *mut c_void) -> CUresult;

    fn cuStreamBeginCapture_v2(hStream: CUstream, mode: CUstreamCaptureMode) -> CUresult;
    fn cuStreamBeginCapture_v2_ptsz(hStream: CUstream, mode: CUstreamCaptureMode) -> CUresult;
    fn cuStreamEndCapture(hStream: CUstream, phGraph: *mut CUgraph) -> CUresult;
    fn cuStreamEndCapture_ptsz(hStream: CUstream, phGraph: *mut CUgraph) -> CUresult;
    fn cuStreamIsCapturing(hStream: CUstream, captureStatus: *mut CUstreamCaptureStatus) -> CUresult;
    fn cuStreamIsCapturing_ptsz(hStream: CUstream, captureStatus: *mut CUstreamCaptureStatus) -> CUresult;
    fn cuGraphCreate(phGraph: *mut CUgraph, flags: c_uint) -> CUresult;
    fn cuGraphDestroy(hGraph: CUgraph) -> CUresult;
    fn cuGraphInstantiateWithFlags(phGraphExec: *mut CUgraphExec, hGraph: CUgraph, flags: c_ulonglong) -> CUresult;
    fn cuGraphExecDestroy(hGraphExec: CUgraphExec) -> CUresult;
    fn cuGraphLaunch(hGraphExec: CUgraphExec, hStream: CUstream) -> CUresult;
    fn cuGraphLaunch_ptsz(hGraphExec: CUgraphExec, hStream: CUstream) -> CUresult;
    fn cuGraphInstantiateWithParams(phGraphExec: *mut CUgraphExec, hGraph: CUgraph, instantiateParams: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) -> CUresult;
    fn cuGraphInstantiateWithParams_ptsz(phGraphExec: *mut CUgraphExec, hGraph: CUgraph, instantiateParams: *mut CUDA_GRAPH_INSTANTIATE_PARAMS) -> CUresult;
    fn cuGraphUpload(hGraphExec: CUgraphExec, hStream: CUstream) -> CUresult;
    fn cuGraphUpload_ptsz(hGraphExec: CUgraphExec, hStream: CUstream) -> CUresult;
    fn cuStreamGetCaptureInfo_v2(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut u64, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, numDependencies_out: *mut usize) -> CUresult;
    fn cuStreamGetCaptureInfo_v2_ptsz(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut u64, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, numDependencies_out: *mut usize) -> CUresult;
    fn cuStreamGetCaptureInfo_v3(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut u64, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, edgeData_out: *mut *const CUgraphEdgeData, numDependencies_out: *mut usize) -> CUresult;
    fn cuStreamGetCaptureInfo_v3_ptsz(hStream: CUstream, captureStatus_out: *mut CUstreamCaptureStatus, id_out: *mut u64, graph_out: *mut CUgraph, dependencies_out: *mut *const CUgraphNode, edgeData_out: *mut *const CUgraphEdgeData, numDependencies_out: *mut usize) -> CUresult;
    fn cuGraphAddMemAllocNode(phGraphNode: *mut CUgraphNode, hGraph: CUgraph, dependencies: *const CUgraphNode, numDependencies: usize, nodeParams: *mut CUDA_MEM_ALLOC_NODE_PARAMS) -> CUresult;
    fn cuGraphAddMemFreeNode(phGraphNode: *mut CUgraphNode, hGraph: CUgraph, dependencies: *const CUgraphNode, numDependencies: usize, dptr: CUdeviceptr) -> CUresult;
    fn cuDeviceGraphMemTrim(device: CUdevice) -> CUresult;
    fn cuDeviceGetGraphMemAttribute(device: CUdevice, attr: CUgraphMem_attribute, value: *mut c_void) -> CUresult;
    fn cuDeviceSetGraphMemAttribute(device: CUdevice, attr: CUgraphMem_attribute, value: *mut c_void) -> CUresult;
}
