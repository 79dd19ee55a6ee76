//! Libraries: CUDA 12's context-independent loading (`cuLibraryLoadData`,
//! `cuLibraryLoadFromFile`, `cuLibraryGetKernel`, `cuKernelGetFunction`,
//! `cuLibraryGetModule`, `cuLibraryUnload`), as the driver API's Library Management page
//! describes it: under eager loading a library "is loaded eagerly into all contexts at the time
//! of the call and future contexts at the time of creation"; under lazy loading only "when a
//! function is needed for that context". simgpu loads into every context the process has at
//! the call, and into a context created later when a function or module of the library is first
//! asked for there (it does not read `CUDA_MODULE_LOADING`). Each context's copy is a module of
//! that context, charged its globals like any module (see `api_module`).
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use cuda_sys::driver::{
    CUdevice, CUfunction, CUfunction_attribute, CUjit_option, CUkernel, CUlibrary, CUlibraryOption, CUmodule, CUresult,
};

use crate::api_module::{function, image_bytes, load_into, parse, unload};
use crate::state::{self, Driver, Inner, Library, driver, handle, id};
use crate::{exports, out};
use CUresult as R;

/// Loads `img` as a library: into every context of the process now.
fn load(d: &Driver, library: *mut CUlibrary, img: Vec<u8>, options: *mut CUlibraryOption, n: c_uint) -> Result<(), R> {
    if library.is_null() || (n > 0 && options.is_null()) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let (kernels, _, _) = parse(&img)?;
    let mut inner = d.lock();
    let contexts: Vec<u64> = inner.contexts.keys().copied().collect();
    let mut lib = Library { image: img, kernels, modules: Default::default() };
    for c in contexts {
        match load_into(d, &mut inner, c, &lib.image) {
            Ok(m) => {
                lib.modules.insert(c, m);
            }
            Err(e) => {
                for m in lib.modules.values() {
                    let _ = unload(d, &mut inner, *m);
                }
                return Err(e);
            }
        }
    }
    let h = d.new_id();
    inner.libraries.insert(h, lib);
    // SAFETY: checked non-null above.
    unsafe { out(library, handle(h)) }
}

/// The module of `library` in the current context, loaded there now if it is not yet.
/// The function a launch names: a `CUfunction`, or a `CUkernel`, which the CUDA 12 driver
/// API accepts in its place (`cuLaunchKernel`: "f - Function CUfunction or Kernel CUkernel to
/// launch"), meaning its function in the current context.
pub(crate) fn launched_function(d: &Driver, inner: &mut Inner, f: u64) -> Result<u64, R> {
    if inner.functions.contains_key(&f) {
        return Ok(f);
    }
    let (library, name) = inner.kernels.get(&f).cloned().ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    let m = module_here(d, inner, library)?;
    function(d, inner, m, &name)
}

fn module_here(d: &Driver, inner: &mut Inner, library: u64) -> Result<u64, R> {
    let ctx = state::current(inner)?;
    let lib = inner.libraries.get(&library).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    if let Some(m) = lib.modules.get(&ctx).filter(|m| inner.modules.contains_key(m)) {
        return Ok(*m);
    }
    let img = lib.image.clone();
    let m = load_into(d, inner, ctx, &img)?;
    inner.libraries.get_mut(&library).expect("checked above").modules.insert(ctx, m);
    Ok(m)
}

exports! {
    /// JIT and library options are accepted and ignored.
    fn cuLibraryLoadData(
        library: *mut CUlibrary,
        code: *const c_void,
        _jit_options: *mut CUjit_option,
        _jit_values: *mut *mut c_void,
        _num_jit: c_uint,
        options: *mut CUlibraryOption,
        _values: *mut *mut c_void,
        num_options: c_uint,
    ) {
        let d = driver()?;
        load(d, library, image_bytes(code)?, options, num_options)
    }

    fn cuLibraryLoadFromFile(
        library: *mut CUlibrary,
        file: *const c_char,
        _jit_options: *mut CUjit_option,
        _jit_values: *mut *mut c_void,
        _num_jit: c_uint,
        options: *mut CUlibraryOption,
        _values: *mut *mut c_void,
        num_options: c_uint,
    ) {
        let d = driver()?;
        if file.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(CStr::from_ptr(file).to_bytes());
        let mut img = std::fs::read(path).map_err(|_| R::CUDA_ERROR_FILE_NOT_FOUND)?;
        if !img.starts_with(b"\x7fELF") {
            img.push(0); // PTX text ends in a NUL
        }
        load(d, library, img, options, num_options)
    }

    fn cuLibraryUnload(library: CUlibrary) {
        let d = driver()?;
        let mut inner = d.lock();
        let lib = inner.libraries.remove(&id(library)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        inner.kernels.retain(|_, (l, _)| *l != id(library));
        for m in lib.modules.values() {
            let _ = unload(d, &mut inner, *m);
        }
        Ok(())
    }

    fn cuLibraryGetKernel(kernel: *mut CUkernel, library: CUlibrary, name: *const c_char) {
        let d = driver()?;
        if kernel.is_null() || name.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let mut inner = d.lock();
        let lib = inner.libraries.get(&id(library)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        if !lib.kernels.contains(&name) {
            return Err(R::CUDA_ERROR_NOT_FOUND);
        }
        let existing = inner.kernels.iter().find(|(_, (l, n))| *l == id(library) && *n == name).map(|(h, _)| *h);
        let h = existing.unwrap_or_else(|| {
            let h = d.new_id();
            inner.kernels.insert(h, (id(library), name));
            h
        });
        out(kernel, handle(h))
    }

    fn cuLibraryGetModule(module: *mut CUmodule, library: CUlibrary) {
        let d = driver()?;
        if module.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let m = module_here(d, &mut d.lock(), id(library))?;
        out(module, handle(m))
    }

    /// The kernel's attribute on device `dev` (every kernel answers alike: see
    /// `cuFuncGetAttribute`).
    fn cuKernelGetAttribute(pi: *mut c_int, attrib: CUfunction_attribute, kernel: CUkernel, dev: CUdevice) {
        let d = driver()?;
        if !d.lock().kernels.contains_key(&id(kernel)) {
            return Err(R::CUDA_ERROR_INVALID_HANDLE);
        }
        if usize::try_from(dev).ok().filter(|i| *i < d.visible.len()).is_none() {
            return Err(R::CUDA_ERROR_INVALID_DEVICE);
        }
        out(pi, crate::api_module::attribute(attrib)?)
    }

    fn cuKernelGetFunction(func: *mut CUfunction, kernel: CUkernel) {
        let d = driver()?;
        if func.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mut inner = d.lock();
        let (library, name) = inner.kernels.get(&id(kernel)).cloned().ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        let m = module_here(d, &mut inner, library)?;
        let f = function(d, &mut inner, m, &name)?;
        out(func, handle(f))
    }
}
