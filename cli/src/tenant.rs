//! One tenant of `vgpu demo`: a plain driver-API program that allocates until its quota
//! refuses, as any CUDA program would. It knows nothing of vgpu: the limits come from
//! `libvgpu.so`, which `vgpu demo` preloads.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::io::Read;

use clap::Args;
use cuda_sys::driver::{CUcontext, CUdeviceptr, CUresult, pfn};

/// Arguments of a demo tenant.
#[derive(Args, Debug)]
pub struct TenantArgs {
    /// The tenant's name in the output.
    #[arg(long)]
    pub name: String,
    /// Bytes per allocation.
    #[arg(long, default_value = "512m")]
    pub chunk: String,
}

struct Driver {
    init: pfn::cuInit,
    device_get: pfn::cuDeviceGet,
    retain: pfn::cuDevicePrimaryCtxRetain,
    set_current: pfn::cuCtxSetCurrent,
    mem_get_info: pfn::cuMemGetInfo_v2,
    alloc: pfn::cuMemAlloc_v2,
    free: pfn::cuMemFree_v2,
    error_name: pfn::cuGetErrorName,
}

/// Looks a driver function up the way cudarc and most bindings do: dlsym on a handle.
fn sym<T>(h: *mut c_void, name: &CStr) -> Result<T, String> {
    // SAFETY: dlsym on a live handle with a NUL-terminated name.
    let p = unsafe { libc::dlsym(h, name.as_ptr()) };
    if p.is_null() {
        return Err(format!("libcuda.so.1 has no {name:?}"));
    }
    // SAFETY: the driver's symbol of this name has the signature T (cuda-sys checks it
    // against cuda.h); T is a function-pointer type of the same size as a pointer.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

fn load() -> Result<Driver, String> {
    // SAFETY: dlopen with a NUL-terminated name.
    let h = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err("cannot load libcuda.so.1".into());
    }
    Ok(Driver {
        init: sym(h, c"cuInit")?,
        device_get: sym(h, c"cuDeviceGet")?,
        retain: sym(h, c"cuDevicePrimaryCtxRetain")?,
        set_current: sym(h, c"cuCtxSetCurrent")?,
        mem_get_info: sym(h, c"cuMemGetInfo_v2")?,
        alloc: sym(h, c"cuMemAlloc_v2")?,
        free: sym(h, c"cuMemFree_v2")?,
        error_name: sym(h, c"cuGetErrorName")?,
    })
}

impl Driver {
    fn name(&self, rc: CUresult) -> String {
        let mut s: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: a valid out-pointer; the driver returns a static string.
        if unsafe { (self.error_name)(rc, &mut s) } != CUresult::CUDA_SUCCESS || s.is_null() {
            return format!("CUresult {}", rc.0);
        }
        // SAFETY: a NUL-terminated static string from the driver.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }

    fn check(&self, what: &str, rc: CUresult) -> Result<(), String> {
        if rc == CUresult::CUDA_SUCCESS { Ok(()) } else { Err(format!("{what}: {}", self.name(rc))) }
    }

    fn info(&self) -> Result<(u64, u64), String> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers.
        self.check("cuMemGetInfo", unsafe { (self.mem_get_info)(&mut free, &mut total) })?;
        Ok((free as u64, total as u64))
    }
}

/// Human-readable bytes.
pub fn human(b: u64) -> String {
    if b >= 1 << 30 { format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64) } else { format!("{} MiB", b >> 20) }
}

fn body(args: &TenantArgs) -> Result<(), String> {
    let chunk = vgpu_limiter::size::parse_size(&args.chunk).map_err(|e| format!("--chunk {:?}: {e}", args.chunk))? as usize;
    let d = load()?;
    let n = &args.name;
    // SAFETY: the driver API, called with valid arguments and out-pointers throughout.
    unsafe {
        d.check("cuInit", (d.init)(0))?;
        let mut dev = 0;
        d.check("cuDeviceGet", (d.device_get)(&mut dev, 0))?;
        let mut ctx: CUcontext = std::ptr::null_mut();
        d.check("cuDevicePrimaryCtxRetain", (d.retain)(&mut ctx, dev))?;
        d.check("cuCtxSetCurrent", (d.set_current)(ctx))?;
    }
    let (free, total) = d.info()?;
    println!("{n}: cuMemGetInfo says total {}, free {} (its context already uses {})", human(total), human(free), human(total - free));
    let mut held: Vec<CUdeviceptr> = Vec::new();
    loop {
        let mut p: CUdeviceptr = 0;
        // SAFETY: a valid out-pointer.
        let rc = unsafe { (d.alloc)(&mut p, chunk) };
        if rc != CUresult::CUDA_SUCCESS {
            println!("{n}: REFUSED allocation #{} of {}: {}", held.len() + 1, human(chunk as u64), d.name(rc));
            break;
        }
        held.push(p);
        println!(
            "{n}: allowed allocation #{} of {} (holding {})",
            held.len(),
            human(chunk as u64),
            human(held.len() as u64 * chunk as u64)
        );
        if held.len() >= 256 {
            break;
        }
    }
    let (free, total) = d.info()?;
    println!("{n}: holding {}; cuMemGetInfo says free {} of {}", human(held.len() as u64 * chunk as u64), human(free), human(total));
    println!("{n}: ready");
    // Hold the memory until the demo has shown the device, then free it.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    for p in held {
        // SAFETY: freeing what we allocated.
        d.check("cuMemFree", unsafe { (d.free)(p) })?;
    }
    Ok(())
}

/// Runs a tenant; returns its exit code.
pub fn tenant(args: TenantArgs) -> i32 {
    match body(&args) {
        Ok(()) => 0,
        Err(e) => {
            println!("{}: error: {e}", args.name);
            1
        }
    }
}
