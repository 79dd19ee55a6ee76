//! Reading and writing the caller's pointer arguments, null-checked as the driver checks them.
#![allow(unsafe_code)] // raw reads and writes through the caller's pointers

use cuda_sys::driver::CUresult;

/// Writes `v` through an out-parameter, or fails with `CUDA_ERROR_INVALID_VALUE` on null.
///
/// # Safety
/// `p` is null or valid for a write of `T`.
pub(crate) unsafe fn out<T>(p: *mut T, v: T) -> Result<(), CUresult> {
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid per this function's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Reads an in-parameter, or fails with `CUDA_ERROR_INVALID_VALUE` on null.
///
/// # Safety
/// `p` is null or valid for a read of `T`.
pub(crate) unsafe fn read<T: Copy>(p: *const T) -> Result<T, CUresult> {
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid per this function's contract.
    Ok(unsafe { p.read_unaligned() })
}
