/*
 * driver.h - the driver-API function table of the vgpu example programs.
 *
 * One table, filled at run time through one of three paths:
 *   linked  the addresses of the symbols linked with -lcuda (only when built with
 *           -DVGPU_LINKED); what the dynamic linker bound them to, so a preloaded shim wins;
 *   dlopen  dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL) + dlsym of each exact ABI name
 *           (cuMemAlloc_v2, cuLaunchKernel, ...), as cudarc and most bindings do;
 *   gpa     dlopen + dlsym of "cuGetProcAddress_v2" only, then cuGetProcAddress_v2 of each
 *           BASE name ("cuMemAlloc", "cuLaunchKernel", ...), as cudart does.
 * With ptsz set, the per-thread-default-stream variants are taken: the _ptsz/_ptds names
 * (linked, dlopen) or flags CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM (gpa).
 */
#ifndef VGPU_DRIVER_H
#define VGPU_DRIVER_H

#include "cuda_min.h"

/*
 * X(field, abi, abi_ptsz, gpa_version, params)
 *   field        member of struct drv, named by the BASE name cuGetProcAddress takes;
 *   abi          exact exported symbol (legacy default stream);
 *   abi_ptsz     exact exported symbol of the per-thread variant (same as abi if none);
 *   gpa_version  cudaVersion passed to cuGetProcAddress_v2 for the base name;
 *   params       the parameter list of the ABI the member points to.
 *
 * gpa_version is 12000 everywhere except cuCtxCreate: the driver maps a base name to the
 * newest variant at or below the version asked for, and "cuCtxCreate" at 11040..12049 is
 * cuCtxCreate_v3 (with CUexecAffinityParam), another signature. We want cuCtxCreate_v2,
 * introduced in 3020, so that is what we ask for (cudart and cuda-python do the same: they
 * pass the version of the signature they expect, per symbol).
 */
#define DRV_FUNCS(X)                                                                               \
    X(cuGetProcAddress, cuGetProcAddress_v2, cuGetProcAddress_v2, 12000,                           \
      (const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,                          \
       CUdriverProcAddressQueryResult *symbolStatus))                                              \
    X(cuInit, cuInit, cuInit, 12000, (unsigned int flags))                                         \
    X(cuDriverGetVersion, cuDriverGetVersion, cuDriverGetVersion, 12000, (int *driverVersion))     \
    X(cuGetErrorName, cuGetErrorName, cuGetErrorName, 12000, (CUresult error, const char **pStr))  \
    X(cuGetErrorString, cuGetErrorString, cuGetErrorString, 12000,                                 \
      (CUresult error, const char **pStr))                                                         \
    X(cuDeviceGetCount, cuDeviceGetCount, cuDeviceGetCount, 12000, (int *count))                   \
    X(cuDeviceGet, cuDeviceGet, cuDeviceGet, 12000, (CUdevice * device, int ordinal))              \
    X(cuDeviceGetName, cuDeviceGetName, cuDeviceGetName, 12000, (char *name, int len, CUdevice dev)) \
    X(cuDeviceGetAttribute, cuDeviceGetAttribute, cuDeviceGetAttribute, 12000,                     \
      (int *pi, CUdevice_attribute attrib, CUdevice dev))                                          \
    X(cuDeviceTotalMem, cuDeviceTotalMem_v2, cuDeviceTotalMem_v2, 12000,                           \
      (size_t * bytes, CUdevice dev))                                                              \
    X(cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, 12000,         \
      (CUcontext * pctx, CUdevice dev))                                                            \
    X(cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRelease_v2,       \
      12000, (CUdevice dev))                                                                       \
    X(cuCtxCreate, cuCtxCreate_v2, cuCtxCreate_v2, 3020,                                           \
      (CUcontext * pctx, unsigned int flags, CUdevice dev))                                        \
    X(cuCtxDestroy, cuCtxDestroy_v2, cuCtxDestroy_v2, 12000, (CUcontext ctx))                      \
    X(cuCtxSetCurrent, cuCtxSetCurrent, cuCtxSetCurrent, 12000, (CUcontext ctx))                   \
    X(cuCtxSynchronize, cuCtxSynchronize, cuCtxSynchronize, 12000, (void))                         \
    X(cuMemGetInfo, cuMemGetInfo_v2, cuMemGetInfo_v2, 12000, (size_t * free, size_t * total))      \
    X(cuMemAlloc, cuMemAlloc_v2, cuMemAlloc_v2, 12000, (CUdeviceptr * dptr, size_t bytesize))      \
    X(cuMemAllocPitch, cuMemAllocPitch_v2, cuMemAllocPitch_v2, 12000,                              \
      (CUdeviceptr * dptr, size_t * pPitch, size_t WidthInBytes, size_t Height,                    \
       unsigned int ElementSizeBytes))                                                             \
    X(cuMemAllocManaged, cuMemAllocManaged, cuMemAllocManaged, 12000,                              \
      (CUdeviceptr * dptr, size_t bytesize, unsigned int flags))                                   \
    X(cuMemFree, cuMemFree_v2, cuMemFree_v2, 12000, (CUdeviceptr dptr))                            \
    X(cuMemAllocAsync, cuMemAllocAsync, cuMemAllocAsync_ptsz, 12000,                               \
      (CUdeviceptr * dptr, size_t bytesize, CUstream hStream))                                     \
    X(cuMemFreeAsync, cuMemFreeAsync, cuMemFreeAsync_ptsz, 12000,                                  \
      (CUdeviceptr dptr, CUstream hStream))                                                        \
    X(cuMemAllocFromPoolAsync, cuMemAllocFromPoolAsync, cuMemAllocFromPoolAsync_ptsz, 12000,       \
      (CUdeviceptr * dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream))                  \
    X(cuMemPoolCreate, cuMemPoolCreate, cuMemPoolCreate, 12000,                                    \
      (CUmemoryPool * pool, const CUmemPoolProps *poolProps))                                      \
    X(cuMemPoolDestroy, cuMemPoolDestroy, cuMemPoolDestroy, 12000, (CUmemoryPool pool))            \
    X(cuMemPoolTrimTo, cuMemPoolTrimTo, cuMemPoolTrimTo, 12000,                                    \
      (CUmemoryPool pool, size_t minBytesToKeep))                                                  \
    X(cuMemGetAllocationGranularity, cuMemGetAllocationGranularity,                                \
      cuMemGetAllocationGranularity, 12000,                                                        \
      (size_t * granularity, const CUmemAllocationProp *prop,                                      \
       CUmemAllocationGranularity_flags option))                                                   \
    X(cuMemCreate, cuMemCreate, cuMemCreate, 12000,                                                \
      (CUmemGenericAllocationHandle * handle, size_t size, const CUmemAllocationProp *prop,        \
       unsigned long long flags))                                                                  \
    X(cuMemRelease, cuMemRelease, cuMemRelease, 12000, (CUmemGenericAllocationHandle handle))      \
    X(cuMemAddressReserve, cuMemAddressReserve, cuMemAddressReserve, 12000,                        \
      (CUdeviceptr * ptr, size_t size, size_t alignment, CUdeviceptr addr,                         \
       unsigned long long flags))                                                                  \
    X(cuMemAddressFree, cuMemAddressFree, cuMemAddressFree, 12000, (CUdeviceptr ptr, size_t size)) \
    X(cuMemMap, cuMemMap, cuMemMap, 12000,                                                         \
      (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,           \
       unsigned long long flags))                                                                  \
    X(cuMemUnmap, cuMemUnmap, cuMemUnmap, 12000, (CUdeviceptr ptr, size_t size))                   \
    X(cuMemSetAccess, cuMemSetAccess, cuMemSetAccess, 12000,                                       \
      (CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count))                   \
    X(cuArrayCreate, cuArrayCreate_v2, cuArrayCreate_v2, 12000,                                    \
      (CUarray * pHandle, const CUDA_ARRAY_DESCRIPTOR *pAllocateArray))                            \
    X(cuArray3DCreate, cuArray3DCreate_v2, cuArray3DCreate_v2, 12000,                              \
      (CUarray * pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray))                          \
    X(cuArrayDestroy, cuArrayDestroy, cuArrayDestroy, 12000, (CUarray hArray))                     \
    X(cuMipmappedArrayCreate, cuMipmappedArrayCreate, cuMipmappedArrayCreate, 12000,               \
      (CUmipmappedArray * pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pMipmappedArrayDesc,             \
       unsigned int numMipmapLevels))                                                              \
    X(cuMipmappedArrayDestroy, cuMipmappedArrayDestroy, cuMipmappedArrayDestroy, 12000,            \
      (CUmipmappedArray hMipmappedArray))                                                          \
    X(cuMemcpyHtoD, cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, 12000,                                  \
      (CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount))                              \
    X(cuMemcpyDtoH, cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, 12000,                                  \
      (void *dstHost, CUdeviceptr srcDevice, size_t ByteCount))                                    \
    X(cuMemsetD8, cuMemsetD8_v2, cuMemsetD8_v2_ptds, 12000,                                        \
      (CUdeviceptr dstDevice, unsigned char uc, size_t N))                                         \
    X(cuStreamCreate, cuStreamCreate, cuStreamCreate, 12000, (CUstream * phStream, unsigned int Flags)) \
    X(cuStreamDestroy, cuStreamDestroy_v2, cuStreamDestroy_v2, 12000, (CUstream hStream))          \
    X(cuStreamSynchronize, cuStreamSynchronize, cuStreamSynchronize_ptsz, 12000, (CUstream hStream)) \
    X(cuEventCreate, cuEventCreate, cuEventCreate, 12000, (CUevent * phEvent, unsigned int Flags)) \
    X(cuEventDestroy, cuEventDestroy_v2, cuEventDestroy_v2, 12000, (CUevent hEvent))               \
    X(cuEventRecord, cuEventRecord, cuEventRecord_ptsz, 12000, (CUevent hEvent, CUstream hStream)) \
    X(cuEventSynchronize, cuEventSynchronize, cuEventSynchronize, 12000, (CUevent hEvent))         \
    X(cuEventElapsedTime, cuEventElapsedTime, cuEventElapsedTime, 12000,                           \
      (float *pMilliseconds, CUevent hStart, CUevent hEnd))                                        \
    X(cuModuleLoadData, cuModuleLoadData, cuModuleLoadData, 12000,                                 \
      (CUmodule * module, const void *image))                                                      \
    X(cuModuleGetFunction, cuModuleGetFunction, cuModuleGetFunction, 12000,                        \
      (CUfunction * hfunc, CUmodule hmod, const char *name))                                       \
    X(cuModuleUnload, cuModuleUnload, cuModuleUnload, 12000, (CUmodule hmod))                      \
    X(cuLaunchKernel, cuLaunchKernel, cuLaunchKernel_ptsz, 12000,                                  \
      (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,          \
       unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,                     \
       unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra))          \
    X(cuLaunchKernelEx, cuLaunchKernelEx, cuLaunchKernelEx_ptsz, 12000,                            \
      (const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra))             \
    X(cuLaunchCooperativeKernel, cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, 12000, \
      (CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,          \
       unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,                     \
       unsigned int sharedMemBytes, CUstream hStream, void **kernelParams))                        \
    X(cuStreamBeginCapture, cuStreamBeginCapture_v2, cuStreamBeginCapture_v2_ptsz, 12000,          \
      (CUstream hStream, CUstreamCaptureMode mode))                                                \
    X(cuStreamEndCapture, cuStreamEndCapture, cuStreamEndCapture_ptsz, 12000,                      \
      (CUstream hStream, CUgraph * phGraph))                                                       \
    X(cuGraphInstantiateWithFlags, cuGraphInstantiateWithFlags, cuGraphInstantiateWithFlags,       \
      12000, (CUgraphExec * phGraphExec, CUgraph hGraph, unsigned long long flags))                \
    X(cuGraphLaunch, cuGraphLaunch, cuGraphLaunch_ptsz, 12000,                                     \
      (CUgraphExec hGraphExec, CUstream hStream))                                                  \
    X(cuGraphExecDestroy, cuGraphExecDestroy, cuGraphExecDestroy, 12000, (CUgraphExec hGraphExec)) \
    X(cuGraphDestroy, cuGraphDestroy, cuGraphDestroy, 12000, (CUgraph hGraph))

struct drv {
#define X(field, abi, abi_ptsz, ver, params) CUresult(*field) params;
    DRV_FUNCS(X)
#undef X
};

enum drv_path { DRV_PATH_LINKED, DRV_PATH_DLOPEN, DRV_PATH_GPA };

/* The table every program calls through. */
extern struct drv D;

/* Parses "linked" / "dlopen" / "gpa"; returns -1 for anything else. */
int drv_parse_path(const char *s);
const char *drv_path_name(int path);
/* The default path: linked when built with VGPU_LINKED, dlopen otherwise. */
int drv_default_path(void);

/*
 * Fills D through `path`. Entries the driver does not have are left NULL and named on
 * stderr. Returns 0 when the path itself worked (library and, for gpa, cuGetProcAddress_v2
 * found), -1 otherwise (reason on stderr).
 */
int drv_load(int path, int ptsz);

/* Prints "path=<p> resolver=<file>!<symbol>" for D.cuMemAlloc (via dladdr). */
void drv_print_resolver(int path);
/* Prints one "resolved fn=<base> at=<file>!<symbol>" line per table entry. */
void drv_print_all_resolved(void);

/* Called by CU() for an entry the driver did not provide; returns CUDA_ERROR_NOT_FOUND. */
CUresult drv_missing(const char *name);

/* Calls D.fn(...) if the driver provided fn, else reports it missing (CUDA_ERROR_NOT_FOUND). */
#define CU(fn, ...) (D.fn ? D.fn(__VA_ARGS__) : drv_missing(#fn))

/* "CUDA_ERROR_OUT_OF_MEMORY"-style name of rc, through cuGetErrorName when available. */
const char *drv_err_name(CUresult rc);

/* Parses a byte count: plain digits, or with a k/m/g/t suffix (powers of 1024, optional
 * "i", "b": 64m, 64M, 64MiB, 1g). Returns 0 on success. */
int parse_size(const char *s, unsigned long long *out);

/* Monotonic wall clock in seconds. */
double now_s(void);

#endif /* VGPU_DRIVER_H */
