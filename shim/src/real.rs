//! Finding the real things: libc's `dlsym`, and the real driver and NVML libraries.
//!
//! Nothing here resolves a symbol by name through `dlsym` (that is our own hook): libc's
//! `dlsym` is found with `dlvsym(RTLD_NEXT, "dlsym", <version>)`, which is never interposed,
//! and every real function is resolved with it on a handle from `dlopen` of the real library.
//! The handle is checked not to be this library itself (an install that put the shim in place
//! of `libcuda.so.1`). `VGPU_REAL_LIBCUDA` / `VGPU_REAL_LIBNVML` give absolute paths instead.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering::*};

/// Signature of `dlsym`.
pub type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

/// libc's `dlsym`, once found (read by the `dlsym` trampoline).
pub(crate) static REAL_DLSYM: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// libc's `dlsym`, found without going through any `dlsym` (so without recursion).
pub fn real_dlsym() -> Option<DlsymFn> {
    let mut p = REAL_DLSYM.load(Acquire);
    if p.is_null() {
        for version in [c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17"] {
            // SAFETY: dlvsym with valid NUL-terminated strings; it is not interposed.
            p = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), version.as_ptr()) };
            if !p.is_null() {
                break;
            }
        }
        if p.is_null() {
            return None;
        }
        // A benign race: every thread stores the same value.
        REAL_DLSYM.store(p, Release);
    }
    // SAFETY: p is libc's dlsym.
    Some(unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(p) })
}

/// Called by the trampoline when `REAL_DLSYM` is not yet set: returns libc's `dlsym`.
pub(crate) extern "C" fn real_dlsym_ptr() -> *mut c_void {
    real_dlsym().map_or(null_mut(), |f| f as *mut c_void)
}

/// The real libraries the shim forwards to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lib {
    /// `libcuda.so.1`.
    Cuda,
    /// `libnvidia-ml.so.1`.
    Nvml,
}

const UNTRIED: u8 = 0;
const OPEN: u8 = 1;
const MISSING: u8 = 2;

static HANDLES: [AtomicPtr<c_void>; 2] = [AtomicPtr::new(null_mut()), AtomicPtr::new(null_mut())];
static STATUS: [AtomicU8; 2] = [AtomicU8::new(UNTRIED), AtomicU8::new(UNTRIED)];

impl Lib {
    fn index(self) -> usize {
        self as usize
    }

    fn default_name(self) -> &'static CStr {
        match self {
            Lib::Cuda => c"libcuda.so.1",
            Lib::Nvml => c"libnvidia-ml.so.1",
        }
    }

    fn override_var(self) -> &'static str {
        match self {
            Lib::Cuda => "VGPU_REAL_LIBCUDA",
            Lib::Nvml => "VGPU_REAL_LIBNVML",
        }
    }

    /// A symbol the real library must export and that this library exports too: if the
    /// handle's copy is ours, the handle is the shim.
    fn probe(self) -> &'static CStr {
        match self {
            Lib::Cuda => c"cuMemAlloc_v2",
            Lib::Nvml => c"nvmlDeviceGetMemoryInfo",
        }
    }
}

/// The real library's handle, opened on first use; `None` if it cannot be had (the reason is
/// logged once).
pub fn handle(lib: Lib) -> Option<*mut c_void> {
    match STATUS[lib.index()].load(Acquire) {
        OPEN => return Some(HANDLES[lib.index()].load(Acquire)),
        MISSING => return None,
        _ => {}
    }
    let opened = open(lib);
    match opened {
        Ok(h) => {
            if HANDLES[lib.index()].compare_exchange(null_mut(), h, AcqRel, Acquire).is_err() {
                // Another thread won: drop our reference (dlclose only decrements a count).
                // SAFETY: h came from our own dlopen.
                unsafe { libc::dlclose(h) };
            }
            STATUS[lib.index()].store(OPEN, Release);
            Some(HANDLES[lib.index()].load(Acquire))
        }
        Err(why) => {
            if STATUS[lib.index()].swap(MISSING, AcqRel) != MISSING {
                crate::log::error(format_args!("{why}"));
            }
            None
        }
    }
}

fn open(lib: Lib) -> Result<*mut c_void, String> {
    let path: CString = match std::env::var_os(lib.override_var()) {
        Some(p) => {
            use std::os::unix::ffi::OsStrExt;
            if !p.as_bytes().starts_with(b"/") {
                return Err(format!("{}={:?}: expected an absolute path to the real library", lib.override_var(), p));
            }
            CString::new(p.as_bytes()).map_err(|_| format!("{} contains a NUL byte", lib.override_var()))?
        }
        None => lib.default_name().to_owned(),
    };
    // SAFETY: dlopen with a NUL-terminated path.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a thread-local string or null.
        let err = unsafe { libc::dlerror() };
        let why = if err.is_null() {
            "unknown error".into()
        } else {
            // SAFETY: a non-null dlerror result is a NUL-terminated string.
            unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
        };
        return Err(format!("cannot load the real {}: {why}", path.to_string_lossy()));
    }
    let real = real_dlsym().ok_or("libc's dlsym not found")?;
    // SAFETY: dlsym on a live handle with a NUL-terminated name.
    let theirs = unsafe { real(h, lib.probe().as_ptr()) };
    let ours = crate::table::export_of(lib.probe().to_str().unwrap_or_default());
    if !theirs.is_null() && Some(theirs as *const ()) == ours {
        // SAFETY: our own handle.
        unsafe { libc::dlclose(h) };
        return Err(format!("{} resolved to libvgpu itself; point {} at the real library", path.to_string_lossy(), lib.override_var()));
    }
    Ok(h)
}

/// Resolves `name` in the real library and caches it in `slot`; null if unavailable.
pub fn resolve(lib: Lib, name: &CStr, slot: &AtomicPtr<c_void>) -> *mut c_void {
    let p = slot.load(Acquire);
    if !p.is_null() {
        return p;
    }
    let (Some(h), Some(real)) = (handle(lib), real_dlsym()) else {
        return null_mut();
    };
    // SAFETY: dlsym on a live handle with a NUL-terminated name.
    let p = unsafe { real(h, name.as_ptr()) };
    slot.store(p, Release);
    p
}
