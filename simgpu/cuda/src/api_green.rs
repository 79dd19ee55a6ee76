//! Green contexts (CUDA 12.4), as the driver API's Green Contexts page describes them: a
//! device's SM resource (`cuDeviceGetDevResource`) is split into groups
//! (`cuDevSmResourceSplitByCount`), a descriptor is generated from groups
//! (`cuDevResourceGenerateDesc`), and a green context is created on it (`cuGreenCtxCreate`,
//! `CU_GREEN_CTX_DEFAULT_STREAM` required) and used through its `CUcontext`
//! (`cuCtxFromGreenCtx`). In simgpu a green context is a created context (it costs
//! `SIMGPU_CONTEXT_MEMORY` like one) whose SM count is recorded, not enforced: kernels still
//! run on the whole device. Splits keep groups symmetrical in multiples of 8 SMs (2 with
//! `CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING`), simgpu's choice: NVIDIA documents that
//! alignment and granularity apply without giving numbers.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::c_uint;

use cuda_sys::driver::{
    CU_GREEN_CTX_DEFAULT_STREAM, CUcontext, CUdevResource, CUdevResourceDesc, CUdevResourceType, CUdevice, CUgreenCtx, CUresult,
};

use crate::api_context::{create_ctx, destroy_ctx};
use crate::state::{driver, handle, id};
use crate::{exports, out, read};
use CUresult as R;

/// `CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING`.
const IGNORE_SM_COSCHEDULING: c_uint = 0x1;

/// The SM count of an SM resource (`CUDA_ERROR_INVALID_VALUE` for another kind).
fn sm_count(r: &CUdevResource) -> Result<c_uint, R> {
    if r.type_ != CUdevResourceType::CU_DEV_RESOURCE_TYPE_SM {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(r.sm_count())
}

exports! {
    fn cuDeviceGetDevResource(device: CUdevice, resource: *mut CUdevResource, kind: CUdevResourceType) {
        let d = driver()?;
        d.physical(device)?;
        if kind != CUdevResourceType::CU_DEV_RESOURCE_TYPE_SM {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        out(resource, CUdevResource::sm(d.cfg.sms))
    }

    fn cuDevSmResourceSplitByCount(
        result: *mut CUdevResource,
        groups: *mut c_uint,
        input: *const CUdevResource,
        remaining: *mut CUdevResource,
        flags: c_uint,
        min_count: c_uint,
    ) {
        driver()?;
        let total = sm_count(&read(input)?)?;
        let asked = read(groups)?;
        if min_count > total || flags & !(IGNORE_SM_COSCHEDULING | 0x2) != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let granule = if flags & IGNORE_SM_COSCHEDULING != 0 { 2 } else { 8 };
        let per_group = min_count.max(1).next_multiple_of(granule);
        let possible = total / per_group;
        let made = if result.is_null() { possible } else { possible.min(asked) };
        for i in 0..made as usize {
            if !result.is_null() {
                out(result.add(i), CUdevResource::sm(per_group))?;
            }
        }
        if !remaining.is_null() {
            out(remaining, CUdevResource::sm(total - made * per_group))?;
        }
        out(groups, made)
    }

    fn cuDevResourceGenerateDesc(desc: *mut CUdevResourceDesc, resources: *mut CUdevResource, count: c_uint) {
        let d = driver()?;
        if desc.is_null() || resources.is_null() || count == 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut sms = 0u32;
        for i in 0..count as usize {
            sms = sms.saturating_add(sm_count(&read(resources.add(i))?)?);
        }
        let h = d.new_id();
        d.lock().resource_descs.insert(h, sms);
        out(desc, handle(h))
    }

    fn cuGreenCtxCreate(green: *mut CUgreenCtx, desc: CUdevResourceDesc, dev: CUdevice, flags: c_uint) {
        let d = driver()?;
        if green.is_null() || flags != CU_GREEN_CTX_DEFAULT_STREAM {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut inner = d.lock();
        if !inner.resource_descs.contains_key(&id(desc)) {
            return Err(R::CUDA_ERROR_INVALID_HANDLE);
        }
        let c = create_ctx(d, &mut inner, dev, false)?;
        let g = d.new_id();
        inner.green.insert(g, c);
        out(green, handle(g))
    }

    fn cuCtxFromGreenCtx(ctx: *mut CUcontext, green: CUgreenCtx) {
        let d = driver()?;
        let c = *d.lock().green.get(&id(green)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        out(ctx, handle(c))
    }

    fn cuGreenCtxDestroy(green: CUgreenCtx) {
        let d = driver()?;
        let mut inner = d.lock();
        let c = inner.green.remove(&id(green)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        destroy_ctx(d, &mut inner, c);
        Ok(())
    }
}
