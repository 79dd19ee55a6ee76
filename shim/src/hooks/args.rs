//! The caller's arguments, checked at the edge. The generated export hands each argument to
//! its body through [`FromCaller`]; the body's parameter type says what it wants: the value
//! unchanged, an [`Out`] for an out-pointer, `Option<&T>` for an in-pointer (`Option<&CStr>`
//! for a string). Every pointer the driver API takes is, by its contract, null or valid for the
//! duration of the call, which is the one thing the edge's `unsafe` relies on; the bodies stay
//! safe.
#![allow(unsafe_code)]

use std::marker::PhantomData;

/// Turns one raw argument of a hooked call into what its body takes.
pub trait FromCaller<Raw> {
    /// Converts the caller's argument.
    ///
    /// # Safety
    /// A pointer argument is null or valid (for reads, and for writes where it is `*mut`) for
    /// the whole hooked call, as the driver's own contract requires of the caller.
    unsafe fn from_caller(raw: Raw) -> Self;
}

impl<X> FromCaller<X> for X {
    #[inline(always)]
    unsafe fn from_caller(raw: X) -> X {
        raw
    }
}

impl<T> FromCaller<*const T> for Option<&T> {
    #[inline(always)]
    unsafe fn from_caller(raw: *const T) -> Self {
        // SAFETY: null or valid for reads for the call, per this trait's contract.
        unsafe { raw.as_ref() }
    }
}

impl FromCaller<*const std::ffi::c_char> for Option<&std::ffi::CStr> {
    #[inline(always)]
    unsafe fn from_caller(raw: *const std::ffi::c_char) -> Self {
        // SAFETY: null, or a NUL-terminated string valid for the call (a symbol name), per
        // this trait's contract.
        (!raw.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(raw) })
    }
}

impl<'a, T> FromCaller<*mut T> for Out<'a, T> {
    #[inline(always)]
    unsafe fn from_caller(raw: *mut T) -> Self {
        Out { ptr: raw, _call: PhantomData }
    }
}

/// A caller's out-pointer, live for one hooked call: null, or valid for reads and writes of
/// a `T` (which holds whatever the caller left there until the driver writes it).
pub struct Out<'a, T> {
    ptr: *mut T,
    _call: PhantomData<&'a mut T>,
}

impl<T> Clone for Out<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<'_, T> {}

impl<'a, T: Copy> Out<'a, T> {
    /// An out-pointer over a cell of this program: the unit tests' callers, whose fake
    /// driver writes the same cell.
    #[cfg(test)]
    pub fn cell(value: &'a std::cell::Cell<T>) -> Self {
        Out { ptr: value.as_ptr(), _call: PhantomData }
    }

    /// Whether the caller passed null.
    #[inline]
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }

    /// What the pointer holds: read it only after the driver has written it (a successful call).
    #[inline]
    pub fn written(&self) -> Option<T> {
        // SAFETY: non-null means valid for reads for this call (see `FromCaller`); the driver
        // has initialised it when the body reads.
        (!self.ptr.is_null()).then(|| unsafe { self.ptr.read() })
    }

    /// Replaces what the driver wrote (a view that shows the quota). False when null.
    #[inline]
    pub fn overwrite(&self, value: T) -> bool {
        if self.ptr.is_null() {
            return false;
        }
        // SAFETY: non-null means valid for writes for this call (see `FromCaller`).
        unsafe { self.ptr.write(value) };
        true
    }
}

impl<'a, T> Out<'a, *mut T> {
    /// The same out-pointer to a handle, with the handle's type erased.
    pub fn erased(self) -> Out<'a, *mut std::ffi::c_void> {
        // `*mut T` and `*mut c_void` have one size and alignment: the pointer stays valid.
        Out { ptr: self.ptr.cast(), _call: PhantomData }
    }
}

/// A caller's array out-pointer of NVML's list protocol, live for one hooked call: null, or
/// valid for as many writes of `T` as the call's count argument said on entry.
pub struct OutList<'a, T> {
    ptr: *mut T,
    _call: PhantomData<&'a mut T>,
}

impl<'a, T> FromCaller<*mut T> for OutList<'a, T> {
    #[inline(always)]
    unsafe fn from_caller(raw: *mut T) -> Self {
        OutList { ptr: raw, _call: PhantomData }
    }
}

/// How an [`OutList`] write went, in NVML's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Every item written, and the count set to their number.
    Written,
    /// The capacity was too small (or the list null): the count says how many are needed.
    TooSmall,
    /// The count pointer was null.
    NoCount,
}

impl<T: Copy> OutList<'_, T> {
    /// Writes `items` with NVML's size protocol: `count` holds the capacity on entry and the
    /// number written (or needed) on return.
    pub fn write(&self, count: Out<'_, std::ffi::c_uint>, items: &[T]) -> Listed {
        let Some(capacity) = count.written() else { return Listed::NoCount };
        let needed = std::ffi::c_uint::try_from(items.len()).unwrap_or(std::ffi::c_uint::MAX);
        count.overwrite(needed);
        if needed > capacity || (needed > 0 && self.ptr.is_null()) {
            return Listed::TooSmall;
        }
        for (i, item) in items.iter().enumerate() {
            // SAFETY: i < needed <= capacity, which the caller's contract makes valid for writes.
            unsafe { self.ptr.add(i).write_unaligned(*item) };
        }
        Listed::Written
    }
}
