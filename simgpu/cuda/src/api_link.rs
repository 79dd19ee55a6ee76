//! The JIT linker: `cuLinkCreate_v2`, `cuLinkAddData_v2`, `cuLinkAddFile_v2`, `cuLinkComplete`
//! and `cuLinkDestroy`, as the CUDA Driver API reference describes them (Module Management:
//! <https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MODULE.html>).
//!
//! Modelled: a link state is created in the current context (`CUDA_ERROR_INVALID_CONTEXT`
//! without one) and owned by the caller until `cuLinkDestroy`; inputs are copied at
//! `cuLinkAddData` (the caller keeps its data); PTX inputs are checked as `cuModuleLoadData`
//! checks them (`CUDA_ERROR_INVALID_PTX`); `cuLinkComplete` returns an image owned by the state
//! (valid until it is destroyed) that `cuModuleLoadData`/`Ex` and `cuLibraryLoadData` load,
//! with every input's kernels and global variables; the info and error log buffers given to
//! `cuLinkCreate` (`CU_JIT_INFO_LOG_BUFFER`, `CU_JIT_ERROR_LOG_BUFFER` and their sizes) are
//! filled, NUL-terminated, and their sizes written back into the caller's option values (the
//! reference: those arrays must stay valid for the state's life when output options are used).
//!
//! Not modelled: the image is not a cubin. Linked PTX inputs are the inputs' texts one after
//! another (what simgpu's module loader reads); one cubin input alone is passed through. Other
//! input kinds (fatbinaries, host objects, libraries such as `libcudadevrt.a`, NVVM IR) and a
//! cubin beside other inputs are refused with `CUDA_ERROR_NOT_SUPPORTED` and a line in the
//! error log, since simgpu cannot hold their code. `.extern` references between inputs are
//! not resolved (an undefined function links), and compiler options are accepted and ignored.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_uint, c_void};
use std::sync::Mutex;

use cuda_sys::driver::{CUjit_option, CUjitInputType as T, CUlinkState, CUresult};

use crate::api_module::parse;
use crate::state::{self, driver};
use crate::{exports, out};
use CUresult as R;

/// A log buffer the caller gave: where to write, its size, and where to put back how much
/// was written (the option value's slot).
#[derive(Clone, Copy)]
struct Log {
    buf: *mut c_char,
    size: usize,
    size_slot: *mut *mut c_void,
}

/// One pending link.
struct Link {
    ptx: Vec<u8>,
    cubin: Option<Vec<u8>>,
    inputs: usize,
    image: Option<Vec<u8>>,
    info: Option<Log>,
    error: Option<Log>,
}

// SAFETY: the log pointers are the caller's, used only inside the API calls on this state, as
// the reference's contract for them allows from any thread.
unsafe impl Send for Link {}

static LINKS: Mutex<Option<HashMap<u64, Link>>> = Mutex::new(None);

fn with_links<X>(f: impl FnOnce(&mut HashMap<u64, Link>) -> X) -> X {
    let mut g = LINKS.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// Writes `text` into `log` (truncated, NUL-terminated) and its length back into the size
/// option's value.
///
/// # Safety
/// The log's buffer is writable for its size and its size slot is the caller's option value,
/// both valid for the state's life (the reference's contract).
unsafe fn write_log(log: Option<Log>, text: &str) {
    let Some(l) = log else { return };
    if l.buf.is_null() || l.size == 0 {
        return;
    }
    let n = text.len().min(l.size - 1);
    // SAFETY: per this function's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), l.buf, n);
        *l.buf.add(n) = 0;
        if !l.size_slot.is_null() {
            *l.size_slot = (n + 1) as *mut c_void;
        }
    }
}

/// The log buffers among `cuLinkCreate`'s options.
///
/// # Safety
/// `options` and `values` hold `n` entries each (or are null with `n` 0).
unsafe fn logs(n: c_uint, options: *mut CUjit_option, values: *mut *mut c_void) -> Result<(Option<Log>, Option<Log>), R> {
    if n > 0 && (options.is_null() || values.is_null()) {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let (mut info, mut error) = ((std::ptr::null_mut(), 0, std::ptr::null_mut()), (std::ptr::null_mut(), 0, std::ptr::null_mut()));
    for i in 0..n as usize {
        // SAFETY: per this function's contract.
        let (opt, slot) = unsafe { (*options.add(i), values.add(i)) };
        // SAFETY: as above.
        let v = unsafe { *slot };
        match opt {
            CUjit_option::CU_JIT_INFO_LOG_BUFFER => info.0 = v.cast::<c_char>(),
            CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES => (info.1, info.2) = (v as usize, slot),
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER => error.0 = v.cast::<c_char>(),
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES => (error.1, error.2) = (v as usize, slot),
            _ => {} // compiler options: accepted, ignored
        }
    }
    let log = |(buf, size, size_slot): (*mut c_char, usize, *mut *mut c_void)| (!buf.is_null()).then_some(Log { buf, size, size_slot });
    Ok((log(info), log(error)))
}

/// Adds one input's bytes to link `state`.
fn add(state: CUlinkState, kind: T, data: &[u8], name: &str) -> Result<(), R> {
    driver()?;
    let key = state as u64;
    let (error, refused) = with_links(|links| {
        let link = links.get_mut(&key).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        if link.image.is_some() {
            return Ok((link.error, Some((R::CUDA_ERROR_INVALID_VALUE, format!("simgpu: link already completed; {name} not added")))));
        }
        let refused = match kind {
            T::CU_JIT_INPUT_PTX => {
                let text = data.strip_suffix(b"\0").unwrap_or(data);
                match parse(text) {
                    Ok(_) if !text.starts_with(b"\x7fELF") => {
                        link.ptx.extend_from_slice(text);
                        link.ptx.push(b'\n');
                        link.inputs += 1;
                        None
                    }
                    _ => Some((R::CUDA_ERROR_INVALID_PTX, format!("simgpu: {name}: not PTX (no .version/.target, or an unnamed .entry)"))),
                }
            }
            T::CU_JIT_INPUT_CUBIN if link.inputs > 0 => {
                Some((R::CUDA_ERROR_NOT_SUPPORTED, format!("simgpu: {name}: a cubin beside other inputs cannot be linked by simgpu")))
            }
            T::CU_JIT_INPUT_CUBIN => match parse(data) {
                Ok(_) if data.starts_with(b"\x7fELF") => {
                    link.cubin = Some(data.to_vec());
                    link.inputs += 1;
                    None
                }
                _ => Some((R::CUDA_ERROR_INVALID_IMAGE, format!("simgpu: {name}: not an ELF cubin"))),
            },
            _ if link.cubin.is_some() => {
                Some((R::CUDA_ERROR_NOT_SUPPORTED, format!("simgpu: {name}: nothing can be linked beside a cubin in simgpu")))
            }
            other => {
                Some((R::CUDA_ERROR_NOT_SUPPORTED, format!("simgpu: {name}: input type {} is not modelled (PTX and cubin only)", other.0)))
            }
        };
        Ok((link.error, refused))
    })?;
    match refused {
        None => Ok(()),
        Some((rc, line)) => {
            // SAFETY: the log is the caller's, valid for the state's life.
            unsafe { write_log(error, &line) };
            Err(rc)
        }
    }
}

exports! {
    /// A pending link in the current context.
    fn cuLinkCreate_v2(num_options: c_uint, options: *mut CUjit_option, values: *mut *mut c_void, state_out: *mut CUlinkState) {
        let d = driver()?;
        if state_out.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        state::current(&d.lock())?;
        let (info, error) = logs(num_options, options, values)?;
        let h = d.new_id();
        with_links(|l| l.insert(h, Link { ptx: Vec::new(), cubin: None, inputs: 0, image: None, info, error }));
        out(state_out, h as CUlinkState)
    }

    /// Copies `size` bytes of `data` into the link (compiler options are ignored).
    fn cuLinkAddData_v2(state: CUlinkState, kind: T, data: *mut c_void, size: usize, name: *const c_char, _n: c_uint, _o: *mut CUjit_option, _v: *mut *mut c_void) {
        if data.is_null() || size == 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let name = if name.is_null() { "<input>".to_string() } else { CStr::from_ptr(name).to_string_lossy().into_owned() };
        add(state, kind, std::slice::from_raw_parts(data.cast::<u8>(), size), &name)
    }

    /// Reads the file at `path` and adds it as `cuLinkAddData` does.
    fn cuLinkAddFile_v2(state: CUlinkState, kind: T, path: *const c_char, _n: c_uint, _o: *mut CUjit_option, _v: *mut *mut c_void) {
        if path.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let name = CStr::from_ptr(path).to_string_lossy().into_owned();
        driver()?;
        if !with_links(|l| l.contains_key(&(state as u64))) {
            return Err(R::CUDA_ERROR_INVALID_HANDLE);
        }
        let p = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(CStr::from_ptr(path).to_bytes());
        let data = std::fs::read(p).map_err(|_| R::CUDA_ERROR_FILE_NOT_FOUND)?;
        add(state, kind, &data, &name)
    }

    /// The linked image, owned by the state (valid until `cuLinkDestroy`).
    fn cuLinkComplete(state: CUlinkState, image_out: *mut *mut c_void, size_out: *mut usize) {
        driver()?;
        if image_out.is_null() || size_out.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let done = with_links(|links| {
            let link = links.get_mut(&(state as u64)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
            if link.image.is_none() {
                if link.inputs == 0 {
                    return Ok(Err((link.error, "simgpu: nothing to link (no input was added)")));
                }
                let image = link.cubin.clone().unwrap_or_else(|| {
                    let mut t = link.ptx.clone();
                    t.push(0);
                    t
                });
                link.image = Some(image);
            }
            let image = link.image.as_ref().expect("made above");
            Ok(Ok((image.as_ptr() as *mut c_void, image.len(), link.info, link.inputs)))
        })?;
        match done {
            Ok((p, len, info, inputs)) => {
                write_log(info, &format!("simgpu: linked {inputs} input(s) into a {len}-byte image"));
                out(image_out, p)?;
                out(size_out, len)
            }
            Err((error, line)) => {
                write_log(error, line);
                Err(R::CUDA_ERROR_INVALID_VALUE)
            }
        }
    }

    /// Frees the state and its image.
    fn cuLinkDestroy(state: CUlinkState) {
        driver()?;
        with_links(|l| l.remove(&(state as u64))).map(|_| ()).ok_or(R::CUDA_ERROR_INVALID_HANDLE)
    }
}
