//! Modules and functions. Images are PTX text (kernels are its `.entry` directives) or ELF
//! cubins (kernels are its `STT_FUNC` symbols); kernels never run, they take simulated time
//! by the cost convention of `simgpu::cost`.
//!
//! A module's global variables take device memory while it is loaded, as the CUDA Programming
//! Guide describes `__device__`/`__constant__` variables (device memory, the lifetime of the
//! module): PTX `.global` and `.const` variables declared at module scope (not `.extern`), and a
//! cubin's `.nv.global*` sections, are charged to the device at load (`CUDA_ERROR_OUT_OF_MEMORY`
//! when it cannot give them) and given back at unload or when the context goes. Not modelled:
//! the memory of the code itself, the driver's allocation granularity, `__managed__` variables
//! as managed memory (charged as device memory), and lazy loading (`CUDA_MODULE_LOADING=LAZY`
//! defers the driver's work to first use; simgpu loads eagerly).
#![allow(unsafe_code)] // exported driver entry points (no_mangle) over the caller's pointers
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use cuda_sys::driver::{CUfunction, CUfunction_attribute as FA, CUjit_option, CUmodule, CUresult};

use crate::state::{self, Driver, Func, Inner, Module, driver, handle, id};
use crate::{exports, out};
use CUresult as R;

/// Kernel names in a PTX module: the identifier after each `.entry`.
fn ptx_entries(text: &str) -> Result<Vec<String>, R> {
    if !text.contains(".version") || !text.contains(".target") {
        return Err(R::CUDA_ERROR_INVALID_PTX);
    }
    let names: Vec<String> = entries(text).map(|(name, _)| name).collect();
    if names.iter().any(String::is_empty) {
        return Err(R::CUDA_ERROR_INVALID_PTX);
    }
    Ok(names)
}

/// Each `.entry` of a PTX text: its name, and its body (empty if it has none).
fn entries(text: &str) -> impl Iterator<Item = (String, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            let i = rest.find(".entry")?;
            rest = &rest[i + ".entry".len()..];
            if !rest.starts_with(|c: char| c.is_whitespace()) {
                continue;
            }
            let name: String = rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$').collect();
            // The body: from the first `{` to its matching `}` (none before the next entry).
            let next = rest.find(".entry").unwrap_or(rest.len());
            let Some(open) = rest[..next].find('{') else { return Some((name, "")) };
            let mut depth = 0usize;
            let mut end = rest.len();
            for (j, c) in rest[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &rest[open + 1..end];
            rest = &rest[end..];
            return Some((name, body));
        }
    })
}

/// Bytes of one PTX data type (`.b8` … `.f64`, `.pred`), if it is one.
fn ptx_type_bytes(t: &str) -> Option<u64> {
    Some(match t {
        ".b8" | ".u8" | ".s8" | ".pred" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

/// Bytes of device memory a PTX module's variables take: each module-scope `.global` or
/// `.const` declaration that is not `.extern`, its type × vector width × array extents (an
/// unsized array counts 0).
fn ptx_globals(text: &str) -> u64 {
    // Comments out, then statements at brace depth 0 (module scope).
    let mut clean = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            clean.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let mut total = 0u64;
    let (mut depth, mut stmt) = (0usize, String::new());
    for c in clean.chars() {
        match c {
            '{' if stmt.contains('=') && depth == 0 => stmt.push(c), // an initializer, not a body
            '{' => {
                depth += 1;
                stmt.clear();
            }
            '}' if depth > 0 => {
                depth -= 1;
                stmt.clear();
            }
            ';' if depth == 0 => {
                total = total.saturating_add(ptx_declaration_bytes(&stmt));
                stmt.clear();
            }
            _ if depth == 0 => stmt.push(c),
            _ => {}
        }
    }
    total
}

/// Bytes of one module-scope PTX statement if it declares a `.global` or `.const` variable.
fn ptx_declaration_bytes(stmt: &str) -> u64 {
    declared_bytes(stmt, &[".global", ".const"])
}

/// Bytes of one PTX statement if it declares a variable in one of `spaces` (not `.extern`).
fn declared_bytes(stmt: &str, spaces: &[&str]) -> u64 {
    let decl = stmt.split('=').next().unwrap_or("");
    let words: Vec<&str> = decl.split_whitespace().collect();
    if !words.iter().any(|w| spaces.contains(w)) || words.contains(&".extern") {
        return 0;
    }
    let mut elem = 0u64;
    let mut vector = 1u64;
    let mut name_at = None;
    for (i, w) in words.iter().enumerate() {
        if let Some(b) = ptx_type_bytes(w) {
            elem = b;
            name_at = Some(i + 1);
        } else if *w == ".v2" {
            vector = 2;
        } else if *w == ".v4" {
            vector = 4;
        }
    }
    let Some(name) = name_at.map(|i| words[i..].concat()) else { return 0 };
    let mut count = 1u64;
    for dim in name.split('[').skip(1) {
        let n = dim.split(']').next().unwrap_or("").trim();
        count = count.saturating_mul(n.parse::<u64>().unwrap_or(0));
    }
    elem.saturating_mul(vector).saturating_mul(count)
}

/// Per-thread local memory (the stack frame) of each PTX kernel: the `.local` declarations in
/// its body, which is how nvcc's PTX declares a kernel's frame (`__local_depot`).
fn ptx_entry_locals(text: &str) -> Vec<(String, u64)> {
    entries(text)
        .map(|(name, body)| {
            (name, body.split([';', '{', '}']).map(|stmt| declared_bytes(stmt, &[".local"])).fold(0u64, u64::saturating_add))
        })
        .collect()
}

/// Bytes of a cubin's global variables: its `.nv.global` sections (`.nv.global`,
/// `.nv.global.init`, ...).
fn elf_globals(img: &[u8]) -> Result<u64, R> {
    let bad = R::CUDA_ERROR_INVALID_IMAGE;
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or(bad);
    let u32_at = |o: usize| img.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).ok_or(bad);
    let u64_at = |o: usize| img.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).ok_or(bad);
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let names = u64_at(shoff + shstrndx * shentsize + 0x18)? as usize;
    let mut total = 0u64;
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let start = names + u32_at(sh)? as usize;
        let name = img.get(start..).and_then(|b| CStr::from_bytes_until_nul(b).ok()).ok_or(bad)?;
        let name = name.to_bytes();
        if name == b".nv.global" || name.starts_with(b".nv.global.") {
            total = total.saturating_add(u64_at(sh + 0x20)?);
        }
    }
    Ok(total)
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

/// A copy of the image at `image`: PTX text with its NUL, or a cubin up to the end of its
/// section table. `CUDA_ERROR_NO_BINARY_FOR_GPU` for a fatbin (not simulated).
///
/// # Safety
/// `image` points to a NUL-terminated PTX string or a complete ELF image, as the API requires.
pub(crate) unsafe fn image_bytes(image: *const c_void) -> Result<Vec<u8>, R> {
    if image.is_null() {
        return Err(R::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: per this function's contract the image is readable for at least 4 bytes.
    let head = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), 4) };
    if head == b"\x7fELF" {
        // SAFETY: an ELF image is at least its header long; the section table tells the rest.
        let hdr = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), 64) };
        let shoff = u64::from_le_bytes(hdr[0x28..0x30].try_into().expect("8 bytes")) as usize;
        let len = shoff + usize::from(u16::from_le_bytes([hdr[0x3a], hdr[0x3b]])) * usize::from(u16::from_le_bytes([hdr[0x3c], hdr[0x3d]]));
        // SAFETY: the section headers end the image of a cubin as the linker writes it.
        Ok(unsafe { std::slice::from_raw_parts(image.cast::<u8>(), len) }.to_vec())
    } else if u32::from_le_bytes(head.try_into().expect("4 bytes")) == 0xBA55_ED50 {
        Err(R::CUDA_ERROR_NO_BINARY_FOR_GPU)
    } else {
        // SAFETY: PTX is NUL-terminated text per the API contract.
        Ok(unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_bytes_with_nul().to_vec())
    }
}

/// What an image holds: kernel names, bytes of global variables, and each kernel's per-thread
/// local memory where the image says it (PTX; a cubin's kernels count 0).
pub(crate) type Parsed = (Vec<String>, u64, HashMap<String, u64>);

/// Parses an image (see [`Parsed`]).
pub(crate) fn parse(img: &[u8]) -> Result<Parsed, R> {
    if img.starts_with(b"\x7fELF") {
        Ok((elf_functions(img)?, elf_globals(img)?, HashMap::new()))
    } else {
        let text = String::from_utf8_lossy(img.strip_suffix(b"\0").unwrap_or(img));
        Ok((ptx_entries(&text)?, ptx_globals(&text), ptx_entry_locals(&text).into_iter().collect()))
    }
}

/// Loads an image into context `ctx`, charging its device the image's globals.
pub(crate) fn load_into(d: &Driver, inner: &mut Inner, ctx: u64, img: &[u8]) -> Result<u64, R> {
    let (kernels, globals, locals) = parse(img)?;
    let dev = inner.contexts.get(&ctx).ok_or(R::CUDA_ERROR_INVALID_CONTEXT)?.dev;
    if !d.machine.charge(dev, globals) {
        return Err(R::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let h = d.new_id();
    inner.modules.insert(h, Module { ctx, kernels, globals, locals });
    Ok(h)
}

/// Unloads a module: its functions go and its globals go back to the device.
pub(crate) fn unload(d: &Driver, inner: &mut Inner, module: u64) -> Result<(), R> {
    let m = inner.modules.remove(&module).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    inner.functions.retain(|_, f| f.module != module);
    if let Some(ctx) = inner.contexts.get(&m.ctx) {
        d.machine.uncharge(ctx.dev, m.globals);
    }
    Ok(())
}

/// The handle of kernel `name` of `module` (made on first request).
pub(crate) fn function(d: &Driver, inner: &mut Inner, module: u64, name: &str) -> Result<u64, R> {
    let m = inner.modules.get(&module).ok_or(R::CUDA_ERROR_INVALID_HANDLE)?;
    if !m.kernels.iter().any(|k| k == name) {
        return Err(R::CUDA_ERROR_NOT_FOUND);
    }
    let ctx = m.ctx;
    if let Some(h) = inner.functions.iter().find(|(_, f)| f.module == module && f.name == name).map(|(h, _)| *h) {
        return Ok(h);
    }
    let local_bytes = m.locals.get(name).copied().unwrap_or(0);
    let h = d.new_id();
    let wave_ns = simgpu::cost::wave_cost_with(name, &d.cfg.kernel_costs);
    inner.functions.insert(h, Func { module, ctx, name: name.to_owned(), wave_ns, local_bytes });
    Ok(h)
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
    // SAFETY: per this function's contract.
    let img = unsafe { image_bytes(image)? };
    let h = load_into(d, &mut inner, ctx, &img)?;
    // SAFETY: checked non-null above.
    unsafe { out(module, handle(h)) }
}

exports! {
    /// Reads the file (PTX or cubin) and loads it as `cuModuleLoadData` does.
    fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) {
        if fname.is_null() {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(CStr::from_ptr(fname).to_bytes());
        let mut image = std::fs::read(path).map_err(|_| R::CUDA_ERROR_FILE_NOT_FOUND)?;
        image.push(0); // PTX text must end in a NUL
        load(module, image.as_ptr().cast())
    }

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
        let h = function(d, &mut d.lock(), id(hmod), &name)?;
        out(hfunc, handle(h))
    }

    fn cuModuleUnload(hmod: CUmodule) {
        let d = driver()?;
        unload(d, &mut d.lock(), id(hmod))
    }

    fn cuFuncGetAttribute(pi: *mut c_int, attrib: FA, hfunc: CUfunction) {
        let d = driver()?;
        if !d.lock().functions.contains_key(&id(hfunc)) {
            return Err(R::CUDA_ERROR_INVALID_HANDLE);
        }
        out(pi, attribute(attrib)?)
    }
}

/// A kernel's attribute, the same for every kernel (simgpu does not compile them): what
/// `cuFuncGetAttribute` and `cuKernelGetAttribute` answer.
pub(crate) fn attribute(attrib: FA) -> Result<c_int, R> {
    Ok(match attrib {
        FA::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        FA::CU_FUNC_ATTRIBUTE_NUM_REGS => 32,
        FA::CU_FUNC_ATTRIBUTE_PTX_VERSION | FA::CU_FUNC_ATTRIBUTE_BINARY_VERSION => 90,
        FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => 49152,
        FA::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES | FA::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES | FA::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES => 0,
        _ => return Err(R::CUDA_ERROR_INVALID_VALUE),
    })
}

#[cfg(test)]
mod tests {
    use super::ptx_entries;

    #[test]
    fn ptx_globals_count_module_scope_global_and_const_variables() {
        use super::ptx_globals;
        let ptx = ".version 7.0\n.target sm_70\n.address_size 64\n\
            .visible .global .align 4 .b8 buf[1048576];\n\
            .global .f32 x; // 4\n\
            .const .align 8 .u64 table[16][4] = { 1, 2 };\n\
            .global .v4 .u32 quad[2];\n\
            .extern .global .b8 elsewhere[4096];\n\
            /* .global .b8 commented[999]; */\n\
            .global .attribute(.managed) .align 8 .u64 managed;\n\
            .visible .entry k(.param .u64 p)\n{\n .reg .b32 r<4>;\n .local .b8 stack[64];\n ret;\n}\n";
        assert_eq!(ptx_globals(ptx), 1048576 + 4 + 16 * 4 * 8 + 2 * 4 * 4 + 8);
        assert_eq!(ptx_globals(".version 7.0\n.target sm_70\n.entry k() { ret; }"), 0);
    }

    #[test]
    fn a_kernels_local_depot_is_its_stack_frame() {
        use super::ptx_entry_locals;
        let ptx = ".version 7.0\n.target sm_70\n.entry deep(.param .u64 p)\n{\n\t.local .align 8 .b8 __local_depot0[4096];\n\t.reg .b64 %SP;\n\t{ .reg .b32 t; }\n\tret;\n}\n\
            .visible .entry flat()\n{\n\tret;\n}\n";
        assert_eq!(ptx_entry_locals(ptx), vec![("deep".to_string(), 4096), ("flat".to_string(), 0)]);
    }

    #[test]
    fn ptx_entries_are_found() {
        let ptx =
            ".version 7.0\n.target sm_70\n.address_size 64\n.visible .entry spin_10us(\n.param .u64 p)\n{ ret; }\n.entry k2() { ret; }";
        assert_eq!(ptx_entries(ptx).unwrap(), vec!["spin_10us".to_string(), "k2".to_string()]);
        assert!(ptx_entries("garbage").is_err());
    }
}
