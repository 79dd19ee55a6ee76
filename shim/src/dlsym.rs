//! The exported `dlsym`. Callers that resolve driver functions by handle (cudarc, NVML users,
//! cudart's one lookup of `cuGetProcAddress_v2`) reach our hooks only through it.
//!
//! It is a naked trampoline: `dlsym(RTLD_NEXT, …)` must be answered relative to the *caller*,
//! which glibc finds from the return address, so that call tail-jumps into libc's `dlsym`
//! with the caller's frame untouched. Any other handle goes to [`dlsym_hook`].
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::ptr::null_mut;

use crate::real::real_dlsym;
use crate::table;

/// Answers `dlsym` for every handle but `RTLD_NEXT`: the real answer, replaced by our hook
/// when the symbol is one we hook and the handle really provides it.
unsafe extern "C" fn dlsym_hook(handle: *mut c_void, symbol: *const c_char) -> *mut c_void {
    let Some(real) = real_dlsym() else {
        return null_mut();
    };
    // SAFETY: the caller's arguments, passed on unchanged.
    let r = unsafe { real(handle, symbol) };
    if r.is_null() || symbol.is_null() {
        return r;
    }
    // SAFETY: dlsym's contract: `symbol` is a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(symbol) }.to_bytes();
    match table::hook_for(name) {
        Some(h) => h.export as *mut c_void,
        None => r,
    }
}

/// The exported `dlsym` (x86_64).
///
/// # Safety
/// libc's contract: `handle` is a handle from `dlopen` or a pseudo-handle, `symbol` a
/// NUL-terminated name.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlsym(_handle: *mut c_void, _symbol: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "cmp rdi, -1",       // RTLD_NEXT is (void *)-1
        "je 2f",
        "jmp {hook}",
        "2:",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 3f",
        "jmp rax",           // tail-jump: libc sees our caller's return address
        "3:",
        "push rdi",
        "push rsi",
        "sub rsp, 8",        // keep the stack 16-byte aligned for the call
        "call {find}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 4f",
        "jmp rax",
        "4:",
        "xor eax, eax",
        "ret",
        hook = sym dlsym_hook,
        real = sym crate::real::REAL_DLSYM,
        find = sym crate::real::real_dlsym_ptr,
    );
}

/// The exported `dlsym` (aarch64). Written to the same plan as the x86_64 one but
/// UNTESTED: no aarch64 machine has run it yet.
///
/// # Safety
/// As for the x86_64 one.
#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlsym(_handle: *mut c_void, _symbol: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "cmn x0, #1",        // RTLD_NEXT is (void *)-1
        "b.eq 2f",
        "b {hook}",
        "2:",
        "adrp x16, {real}",
        "ldr x16, [x16, :lo12:{real}]",
        "cbz x16, 3f",
        "br x16",            // tail-jump: libc sees our caller's link register
        "3:",
        "stp x29, x30, [sp, #-32]!",
        "stp x0, x1, [sp, #16]",
        "bl {find}",
        "mov x16, x0",
        "ldp x0, x1, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        "cbz x16, 4f",
        "br x16",
        "4:",
        "mov x0, #0",
        "ret",
        hook = sym dlsym_hook,
        real = sym crate::real::REAL_DLSYM,
        find = sym crate::real::real_dlsym_ptr,
    );
}
