//! The driver's ABI versioning of every hooked function, as `cuGetProcAddress` applies it: a
//! base name, asked for with a CUDA version and flags, means one exported variant. NVIDIA
//! publishes the mapping as the `PFN_<base>_v<version>[_ptsz]` typedefs of `cudaTypedefs.h`
//! (each variant's first version), and the header's `#define PFN_<base>` names the newest.
//!
//! The shim recognises the driver's answer by its address first (the exported variant the
//! driver chose, whatever it is); this table is the fallback for a driver, or an injected
//! profiler, that answers with addresses other than its exports, so the quota does not depend
//! on pointer identity.

use std::ffi::c_int;

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
const PER_THREAD: u64 = 2;

/// (base name, [(first version, export)] ascending, per-thread (first version, export)).
type Variants = (&'static str, &'static [(c_int, &'static str)], Option<(c_int, &'static str)>);

/// Every hooked base name (the legacy ABI's variants first: see `legacy`).
pub static VARIANTS: &[Variants] = &[
    ("cuInit", &[(2000, "cuInit")], None),
    ("cuGetProcAddress", &[(11030, "cuGetProcAddress"), (12000, "cuGetProcAddress_v2")], None),
    ("cuDevicePrimaryCtxRetain", &[(7000, "cuDevicePrimaryCtxRetain")], None),
    ("cuDevicePrimaryCtxRelease", &[(7000, "cuDevicePrimaryCtxRelease"), (11000, "cuDevicePrimaryCtxRelease_v2")], None),
    ("cuDevicePrimaryCtxReset", &[(7000, "cuDevicePrimaryCtxReset"), (11000, "cuDevicePrimaryCtxReset_v2")], None),
    ("cuCtxCreate", &[(2000, "cuCtxCreate"), (3020, "cuCtxCreate_v2"), (11040, "cuCtxCreate_v3"), (12050, "cuCtxCreate_v4")], None),
    ("cuCtxDestroy", &[(2000, "cuCtxDestroy"), (4000, "cuCtxDestroy_v2")], None),
    ("cuCtxSetLimit", &[(3010, "cuCtxSetLimit")], None),
    ("cuGreenCtxCreate", &[(12040, "cuGreenCtxCreate")], None),
    ("cuGreenCtxDestroy", &[(12040, "cuGreenCtxDestroy")], None),
    ("cuMemAlloc", &[(2000, "cuMemAlloc"), (3020, "cuMemAlloc_v2")], None),
    ("cuMemAllocPitch", &[(2000, "cuMemAllocPitch"), (3020, "cuMemAllocPitch_v2")], None),
    ("cuMemAllocManaged", &[(6000, "cuMemAllocManaged")], None),
    ("cuMemFree", &[(2000, "cuMemFree"), (3020, "cuMemFree_v2")], None),
    ("cuMemAllocAsync", &[(11020, "cuMemAllocAsync")], Some((11020, "cuMemAllocAsync_ptsz"))),
    ("cuMemFreeAsync", &[(11020, "cuMemFreeAsync")], Some((11020, "cuMemFreeAsync_ptsz"))),
    ("cuMemAllocFromPoolAsync", &[(11020, "cuMemAllocFromPoolAsync")], Some((11020, "cuMemAllocFromPoolAsync_ptsz"))),
    ("cuMemPoolTrimTo", &[(11020, "cuMemPoolTrimTo")], None),
    ("cuMemPoolDestroy", &[(11020, "cuMemPoolDestroy")], None),
    ("cuMemPoolCreate", &[(11020, "cuMemPoolCreate")], None),
    ("cuDeviceGetDefaultMemPool", &[(11020, "cuDeviceGetDefaultMemPool")], None),
    ("cuDeviceGetMemPool", &[(11020, "cuDeviceGetMemPool")], None),
    ("cuMemCreate", &[(10020, "cuMemCreate")], None),
    ("cuMemRelease", &[(10020, "cuMemRelease")], None),
    ("cuMemRetainAllocationHandle", &[(11000, "cuMemRetainAllocationHandle")], None),
    ("cuMemMap", &[(10020, "cuMemMap")], None),
    ("cuMemUnmap", &[(10020, "cuMemUnmap")], None),
    ("cuArrayCreate", &[(2000, "cuArrayCreate"), (3020, "cuArrayCreate_v2")], None),
    ("cuArray3DCreate", &[(2000, "cuArray3DCreate"), (3020, "cuArray3DCreate_v2")], None),
    ("cuArrayDestroy", &[(2000, "cuArrayDestroy")], None),
    ("cuMipmappedArrayCreate", &[(5000, "cuMipmappedArrayCreate")], None),
    ("cuMipmappedArrayDestroy", &[(5000, "cuMipmappedArrayDestroy")], None),
    ("cuLaunchKernel", &[(4000, "cuLaunchKernel")], Some((7000, "cuLaunchKernel_ptsz"))),
    ("cuLaunchKernelEx", &[(11060, "cuLaunchKernelEx")], Some((11060, "cuLaunchKernelEx_ptsz"))),
    ("cuLaunchCooperativeKernel", &[(9000, "cuLaunchCooperativeKernel")], Some((9000, "cuLaunchCooperativeKernel_ptsz"))),
    ("cuGraphLaunch", &[(10000, "cuGraphLaunch")], Some((10000, "cuGraphLaunch_ptsz"))),
    ("cuCtxSynchronize", &[(2000, "cuCtxSynchronize")], None),
    ("cuStreamSynchronize", &[(2000, "cuStreamSynchronize")], Some((7000, "cuStreamSynchronize_ptsz"))),
    ("cuStreamBeginCapture", &[(10010, "cuStreamBeginCapture_v2")], Some((10010, "cuStreamBeginCapture_v2_ptsz"))),
    ("cuStreamEndCapture", &[(10000, "cuStreamEndCapture")], Some((10000, "cuStreamEndCapture_ptsz"))),
    ("cuGraphAddMemAllocNode", &[(11040, "cuGraphAddMemAllocNode")], None),
    ("cuGraphInstantiate", &[(12000, "cuGraphInstantiateWithFlags")], None),
    ("cuGraphInstantiateWithFlags", &[(11040, "cuGraphInstantiateWithFlags")], None),
    ("cuGraphInstantiateWithParams", &[(12000, "cuGraphInstantiateWithParams")], Some((12000, "cuGraphInstantiateWithParams_ptsz"))),
    ("cuGraphUpload", &[(11010, "cuGraphUpload")], Some((11010, "cuGraphUpload_ptsz"))),
    ("cuGraphExecDestroy", &[(10000, "cuGraphExecDestroy")], None),
    ("cuGraphDestroy", &[(10000, "cuGraphDestroy")], None),
    ("cuDeviceGraphMemTrim", &[(11040, "cuDeviceGraphMemTrim")], None),
    ("cuModuleLoad", &[(2000, "cuModuleLoad")], None),
    ("cuModuleLoadData", &[(2000, "cuModuleLoadData")], None),
    ("cuModuleLoadDataEx", &[(2010, "cuModuleLoadDataEx")], None),
    ("cuModuleUnload", &[(2000, "cuModuleUnload")], None),
    ("cuLibraryLoadData", &[(12000, "cuLibraryLoadData")], None),
    ("cuLibraryLoadFromFile", &[(12000, "cuLibraryLoadFromFile")], None),
    ("cuLibraryUnload", &[(12000, "cuLibraryUnload")], None),
    ("cuMemGetInfo", &[(2000, "cuMemGetInfo"), (3020, "cuMemGetInfo_v2")], None),
    ("cuDeviceTotalMem", &[(2000, "cuDeviceTotalMem"), (3020, "cuDeviceTotalMem_v2")], None),
];

/// The exported variant that (`base`, `version`, `flags`) names, if we hook its base name.
/// Below the first variant's version nothing is named.
pub fn variant(base: &str, version: c_int, flags: u64) -> Option<&'static str> {
    let (_, versions, ptds) = VARIANTS.iter().find(|(b, _, _)| *b == base)?;
    if flags & PER_THREAD != 0
        && let Some((v, sym)) = ptds
        && version >= *v
    {
        return Some(sym);
    }
    versions.iter().rev().find(|(v, _)| version >= *v).map(|(_, sym)| *sym)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HOOKS;

    #[test]
    fn every_variant_is_a_hook_and_every_cuda_hook_has_a_base_name() {
        let named: Vec<&str> = VARIANTS.iter().flat_map(|(_, v, p)| v.iter().chain(p.iter()).map(|(_, s)| *s)).collect();
        for s in &named {
            assert!(HOOKS.iter().any(|h| h.name == *s), "{s} is not hooked");
        }
        for h in HOOKS.iter().filter(|h| h.lib == crate::real::Lib::Cuda) {
            assert!(named.contains(&h.name), "{} has no base name", h.name);
        }
    }

    #[test]
    fn versions_and_flags_pick_the_variant() {
        assert_eq!(variant("cuMemAlloc", 12000, 0), Some("cuMemAlloc_v2"));
        assert_eq!(variant("cuMemAlloc", 3010, 0), Some("cuMemAlloc"), "the 32-bit ABI");
        assert_eq!(variant("cuMemAlloc", 1000, 0), None, "before any variant");
        assert_eq!(variant("cuCtxCreate", 11040, 0), Some("cuCtxCreate_v3"));
        assert_eq!(variant("cuCtxCreate", 12080, 0), Some("cuCtxCreate_v4"));
        assert_eq!(variant("cuLaunchKernel", 12000, PER_THREAD), Some("cuLaunchKernel_ptsz"));
        assert_eq!(variant("cuLaunchKernel", 6050, PER_THREAD), Some("cuLaunchKernel"));
        assert_eq!(variant("cuLaunchKernel", 12000, 1), Some("cuLaunchKernel"));
        assert_eq!(variant("cuMemAlloc_v2", 12000, 0), None, "not a base name");
        assert_eq!(variant("cuMemcpy", 12000, 0), None, "not hooked");
    }
}
