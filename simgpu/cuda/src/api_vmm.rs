//! Virtual memory management: physical handles (`cuMemCreate`, charged until released and
//! unmapped), address reservations, and mappings of one into the other. Physical memory is a
//! memfd, so two mappings of one handle share their bytes as on a GPU.
//!
//! A handle is reference-counted as NVIDIA's "Virtual Memory Management" section documents
//! (<https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VA.html>):
//! `cuMemRetainAllocationHandle` returns the handle behind any address of a mapping and "must be
//! released with corresponding number of calls to cuMemRelease"; the memory is freed once every
//! reference is released and every mapping unmapped. A handle with no reference left cannot be
//! mapped again.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{c_ulonglong, c_void};

use cuda_sys::driver::{
    CUdeviceptr, CUmemAccessDesc, CUmemAllocationGranularity_flags, CUmemAllocationProp, CUmemAllocationType, CUmemGenericAllocationHandle,
    CUmemLocationType, CUresult,
};

use crate::state::{Driver, Inner, Phys, Reservation, driver};
use crate::{exports, out, read};
use CUresult as R;

/// Allocation granularity (minimum and recommended), as on current GPUs.
const GRANULARITY: usize = 2 << 20;

fn prop_device(d: &Driver, prop: *const CUmemAllocationProp) -> Result<u32, R> {
    // SAFETY: the API contract makes `prop` valid for a read when non-null.
    let p = unsafe { read(prop)? };
    if p.type_ != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED || p.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    d.physical(p.location.id).map_err(|_| R::CUDA_ERROR_INVALID_DEVICE)
}

/// Frees a physical allocation once every reference is released and every mapping unmapped.
fn maybe_free(d: &Driver, inner: &mut Inner, h: u64) {
    if inner.phys.get(&h).is_some_and(|p| p.refs == 0 && p.mapped == 0) {
        let p = inner.phys.remove(&h).expect("checked above");
        // SAFETY: the fd is ours and no mapping of it remains.
        unsafe { libc::close(p.fd) };
        d.machine.uncharge(p.dev, p.size as u64);
    }
}

/// Replaces `[addr, addr+len)` with inaccessible reserved address space.
fn protect_none(addr: u64, len: usize) {
    // SAFETY: the range lies inside a reservation this process made; MAP_FIXED replaces it.
    unsafe {
        libc::mmap(
            addr as usize as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        );
    }
}

/// The starts of the mappings that exactly cover `[ptr, ptr+size)` in `r`.
fn whole_mappings(r: &Reservation, ptr: CUdeviceptr, size: usize) -> Result<Vec<u64>, R> {
    let inside: Vec<u64> = r.maps.range(ptr..ptr + size as u64).map(|(m, _)| *m).collect();
    let covered: u64 = inside.iter().map(|m| r.maps[m].0 as u64).sum();
    if inside.first() != Some(&ptr) || covered != size as u64 {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(inside)
}

exports! {
    fn cuMemGetAllocationGranularity(granularity: *mut usize, prop: *const CUmemAllocationProp, option: CUmemAllocationGranularity_flags) {
        let d = driver()?;
        prop_device(d, prop)?;
        if option.0 > 1 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        out(granularity, GRANULARITY)
    }

    fn cuMemCreate(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: c_ulonglong) {
        let d = driver()?;
        let dev = prop_device(d, prop)?;
        if handle.is_null() || size == 0 || !size.is_multiple_of(GRANULARITY) || flags != 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        if !d.machine.charge(dev, size as u64) {
            return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
        }
        let fd = libc::memfd_create(c"simgpu-vmm".as_ptr(), libc::MFD_CLOEXEC);
        if fd < 0 || libc::ftruncate(fd, size as libc::off_t) != 0 {
            if fd >= 0 {
                libc::close(fd);
            }
            d.machine.uncharge(dev, size as u64);
            return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
        }
        let h = d.new_id();
        d.lock().phys.insert(h, Phys { dev, size, fd, mapped: 0, refs: 1 });
        out(handle, h)
    }

    fn cuMemRelease(handle: CUmemGenericAllocationHandle) {
        let d = driver()?;
        let mut inner = d.lock();
        let p = inner.phys.get_mut(&handle).filter(|p| p.refs > 0).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        p.refs -= 1;
        maybe_free(d, &mut inner, handle);
        Ok(())
    }

    fn cuMemRetainAllocationHandle(handle: *mut CUmemGenericAllocationHandle, addr: *mut c_void) {
        let d = driver()?;
        let mut inner = d.lock();
        let a = addr as u64;
        // Any address inside a mapping, not only its start.
        let h = inner
            .reservations
            .range(..=a)
            .next_back()
            .and_then(|(_, r)| r.maps.range(..=a).next_back().filter(|(m, (l, _, _))| a < *m + *l as u64).map(|(_, (_, h, _))| *h))
            .ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        let p = inner.phys.get_mut(&h).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: the API contract makes `handle` valid for a write when non-null.
        unsafe { out(handle, h)? };
        p.refs += 1;
        Ok(())
    }

    fn cuMemAddressReserve(ptr: *mut CUdeviceptr, size: usize, alignment: usize, _addr: CUdeviceptr, flags: c_ulonglong) {
        let d = driver()?;
        if ptr.is_null() || size == 0 || !size.is_multiple_of(GRANULARITY) || flags != 0 || (alignment != 0 && !alignment.is_power_of_two()) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let align = alignment.max(GRANULARITY);
        // Reserve extra and trim so the start is aligned.
        let span = size + align;
        let base = libc::mmap(std::ptr::null_mut(), span, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0);
        if base == libc::MAP_FAILED {
            return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
        }
        let base = base as usize;
        let start = base.next_multiple_of(align);
        if start > base {
            libc::munmap(base as *mut libc::c_void, start - base);
        }
        let tail = base + span - (start + size);
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
        d.lock().reservations.insert(start as u64, Reservation { size, maps: BTreeMap::new() });
        out(ptr, start as u64)
    }

    fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) {
        let d = driver()?;
        let mut inner = d.lock();
        let r = inner.reservations.get(&ptr).ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        if r.size != size || !r.maps.is_empty() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        inner.reservations.remove(&ptr);
        libc::munmap(ptr as usize as *mut libc::c_void, size);
        Ok(())
    }

    fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: c_ulonglong) {
        let d = driver()?;
        let mut inner = d.lock();
        if flags != 0 || size == 0 || !size.is_multiple_of(GRANULARITY) || !ptr.is_multiple_of(GRANULARITY as u64) || !offset.is_multiple_of(GRANULARITY) {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let fd = {
            let p = inner.phys.get(&handle).filter(|p| p.refs > 0).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
            if offset.checked_add(size).is_none_or(|e| e > p.size) {
                return Err(R::CUDA_ERROR_INVALID_VALUE);
            }
            p.fd
        };
        let (start, r) = inner.reservations.range_mut(..=ptr).next_back().ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        if ptr + size as u64 > start + r.size as u64 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let overlaps = r.maps.range(..ptr + size as u64).next_back().is_some_and(|(m, (l, _, _))| m + *l as u64 > ptr);
        if overlaps {
            return Err(R::CUDA_ERROR_ALREADY_MAPPED);
        }
        let p = libc::mmap(ptr as usize as *mut libc::c_void, size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_FIXED, fd, offset as libc::off_t);
        if p == libc::MAP_FAILED {
            return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
        }
        r.maps.insert(ptr, (size, handle, false));
        inner.phys.get_mut(&handle).expect("checked above").mapped += 1;
        Ok(())
    }

    fn cuMemUnmap(ptr: CUdeviceptr, size: usize) {
        let d = driver()?;
        let mut inner = d.lock();
        let (_, r) = inner.reservations.range_mut(..=ptr).next_back().ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        // The range must cover whole mappings exactly.
        let inside = whole_mappings(r, ptr, size)?;
        let handles: Vec<u64> = inside.iter().filter_map(|m| r.maps.remove(m)).map(|(_, h, _)| h).collect();
        protect_none(ptr, size);
        for h in handles {
            if let Some(p) = inner.phys.get_mut(&h) {
                p.mapped -= 1;
            }
            maybe_free(d, &mut inner, h);
        }
        Ok(())
    }

    fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) {
        let d = driver()?;
        if desc.is_null() || count == 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        for i in 0..count {
            let a = read(desc.add(i))?;
            if a.location.type_ != CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE || a.flags.0 > 3 {
                return Err(R::CUDA_ERROR_INVALID_VALUE);
            }
            d.physical(a.location.id).map_err(|_| R::CUDA_ERROR_INVALID_DEVICE)?;
        }
        let mut inner = d.lock();
        let (_, r) = inner.reservations.range_mut(..=ptr).next_back().ok_or(R::CUDA_ERROR_INVALID_VALUE)?;
        let inside = whole_mappings(r, ptr, size)?;
        for m in inside {
            if let Some(e) = r.maps.get_mut(&m) {
                e.2 = true;
            }
        }
        Ok(())
    }
}
