//! Modules and functions. Images are PTX text (kernels are its `.entry` directives) or ELF
//! cubins (kernels are its `STT_FUNC` symbols); kernels never run, they take simulated time
//! by the cost convention of `simgpu::cost`.
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use cuda_sys::driver::{CUfunction, CUfunction_attribute as FA, CUjit_option, CUmodule, CUresult};

use crate::state::{self, Func, Module, driver, handle, id};
use crate::{exports, out};
use CUresult as R;

/// Kernel names in a PTX module: the identifier after each `.entry`.
fn ptx_entries(text: &str) -> Result<Vec<String>, R> {
    if !text.contains(".version") || !text.contains(".target") {
        return Err(R::CUDA_ERROR_INVALID_PTX);
    }
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(".entry") {
        rest = &rest[i + ".entry".len()..];
        if !rest.starts_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let name: String = rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$').collect();
        if name.is_empty() {
            return Err(R::CUDA_ERROR_INVALID_PTX);
        }
        names.push(name);
    }
    Ok(names)
}

/// Function symbols of a 64-bit little-endian ELF image (a cubin).
fn elf_functions(img: &[u8]) -> Result<Vec<String>, R> {
    let bad = R::CUDA_ERROR_INVALID_IMAGE;
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or(bad);
    let u32_at = |o: usize| img.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).ok_or(bad);
    let u64_at = |o: usize| img.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).ok_or(bad);
    if img.get(4) != Some(&2) || img.get(5) != Some(&1) {
        return Err(bad);
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let mut names = Vec::new();
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        if u32_at(sh + 4)? != 2 {
            continue; // not SHT_SYMTAB
        }
        let (off, size, link, entsize) =
            (u64_at(sh + 0x18)? as usize, u64_at(sh + 0x20)? as usize, u32_at(sh + 0x28)? as usize, u64_at(sh + 0x38)? as usize);
        let strtab = u64_at(shoff + link * shentsize + 0x18)? as usize;
        for s in (off..off + size).step_by(entsize.max(24)) {
            if img.get(s + 4).ok_or(bad)? & 0xf != 2 {
                continue; // not STT_FUNC
            }
            let start = strtab + u32_at(s)? as usize;
            let name = img.get(start..).and_then(|b| CStr::from_bytes_until_nul(b).ok()).ok_or(bad)?;
            names.push(name.to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

/// Loads an image (PTX or cubin) into the current context.
///
/// # Safety
/// `image` points to a NUL-terminated PTX string or a complete ELF image, as the API requires.
unsafe fn load(module: *mut CUmodule, image: *const c_void) -> Result<(), R> {
    let d = driver()?;
    if module.is_null() || image.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    let mut inner = d.lock();
    let ctx = state::current(&inner)?;
    // SAFETY: per this function's contract the image is readable; an ELF header is 64 bytes.
    let head = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), 4) };
    let kernels = if head == b"\x7fELF" {
        // SAFETY: an ELF image is at least its header long; the section table tells the rest.
        let hdr = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), 64) };
        let shoff = u64::from_le_bytes(hdr[0x28..0x30].try_into().expect("8 bytes")) as usize;
        let len = shoff + usize::from(u16::from_le_bytes([hdr[0x3a], hdr[0x3b]])) * usize::from(u16::from_le_bytes([hdr[0x3c], hdr[0x3d]]));
        // SAFETY: the section headers end the image of a cubin as the linker writes it.
        elf_functions(unsafe { std::slice::from_raw_parts(image.cast::<u8>(), len) })?
    } else if u32::from_le_bytes(head.try_into().expect("4 bytes")) == 0xBA55_ED50 {
        return Err(R::CUDA_ERROR_NO_BINARY_FOR_GPU);
    } else {
        // SAFETY: PTX is NUL-terminated text per the API contract.
        let text = unsafe { CStr::from_ptr(image.cast::<c_char>()) };
        ptx_entries(&text.to_string_lossy())?
    };
    let h = d.new_id();
    inner.modules.insert(h, Module { ctx, kernels });
    // SAFETY: checked non-null above.
    unsafe { out(module, handle(h)) }
}

exports! {
    fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) { load(module, image) }

    /// JIT options are accepted and ignored.
    fn cuModuleLoadDataEx(module: *mut CUmodule, image: *const c_void, _n: c_uint, _opts: *mut CUjit_option, _vals: *mut *mut c_void) {
        load(module, image)
    }

    fn cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) {
        let d = driver()?;
        if hfunc.is_null() || name.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let mut inner = d.lock();
        let m = inner.modules.get(&id(hmod)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        if !m.kernels.contains(&name) {
            return Err(R::CUDA_ERROR_NOT_FOUND);
        }
        let ctx = m.ctx;
        let existing = inner.functions.iter().find(|(_, f)| f.module == id(hmod) && f.name == name).map(|(h, _)| *h);
        let h = match existing {
            Some(h) => h,
            None => {
                let h = d.new_id();
                let wave_ns = simgpu::cost::wave_cost_ns(&name);
                inner.functions.insert(h, Func { module: id(hmod), ctx, name, wave_ns });
                h
            }
        };
        out(hfunc, handle(h))
    }

    fn cuModuleUnload(hmod: CUmodule) {
        let d = driver()?;
        let mut inner = d.lock();
        inner.modules.remove(&id(hmod)).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
        inner.functions.retain(|_, f| f.module != id(hmod));
        Ok(())
    }

    fn cuFuncGetAttribute(pi: *mut c_int, attrib: FA, hfunc: CUfunction) {
        let d = driver()?;
        if !d.lock().functions.contains_key(&id(hfunc)) {
            return Err(R::CUDA_ERROR_INVALID_HANDLE);
        }
        let v = match attrib {
            FA::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
            FA::CU_FUNC_ATTRIBUTE_NUM_REGS => 32,
            FA::CU_FUNC_ATTRIBUTE_PTX_VERSION | FA::CU_FUNC_ATTRIBUTE_BINARY_VERSION => 90,
            FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => 49152,
            FA::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES | FA::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES | FA::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES => 0,
            _ => return Err(R::CUDA_ERROR_INVALID_VALUE),
        };
        out(pi, v)
    }
}

#[cfg(test)]
mod tests {
    use super::ptx_entries;

    #[test]
    fn ptx_entries_are_found() {
        let ptx =
            ".version 7.0\n.target sm_70\n.address_size 64\n.visible .entry spin_10us(\n.param .u64 p)\n{ ret; }\n.entry k2() { ret; }";
        assert_eq!(ptx_entries(ptx).unwrap(), vec!["spin_10us".to_string(), "k2".to_string()]);
        assert!(ptx_entries("garbage").is_err());
    }
}
