//! The driver-API function table of the Rust examples, filled through `dlopen` or `gpa`.
#![allow(unsafe_code)] // calling the driver through the function pointers it hands out
use core::ffi::{CStr, c_char, c_int, c_ulonglong, c_void};
use core::ptr;

use cuda_sys::driver::{CUcontext, CUdevice, CUdriverProcAddress_flags, CUdriverProcAddressQueryResult, CUresult, pfn};

/// How the table is filled (see the crate documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `dlsym` of each exact ABI name on a `dlopen("libcuda.so.1")` handle.
    Dlopen,
    /// `dlsym` of `cuGetProcAddress_v2` only, then `cuGetProcAddress_v2` of each base name.
    Gpa,
}

impl Path {
    /// Parses `dlopen` / `gpa`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dlopen" => Some(Self::Dlopen),
            "gpa" => Some(Self::Gpa),
            _ => None,
        }
    }

    /// The name printed on the `path=` line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dlopen => "dlopen",
            Self::Gpa => "gpa",
        }
    }
}

/// One entry as the loader sees it: base name, ABI name, per-thread ABI name (all
/// NUL-terminated) and the `cudaVersion` to ask `cuGetProcAddress_v2` for.
struct Entry {
    base: &'static str,
    abi: &'static str,
    abi_ptsz: &'static str,
    version: c_int,
}

macro_rules! driver_table {
    ($( $field:ident : $abi:ident, $pt:ident, $ver:literal; )*) => {
        /// The driver entry points the Rust examples call, one per base name; `None` when the
        /// driver did not provide it. Each points at the ABI variant named in the table
        /// (`cuMemAlloc` at `cuMemAlloc_v2`, with `--ptsz` `cuLaunchKernel` at
        /// `cuLaunchKernel_ptsz`, ...).
        #[allow(non_snake_case)]
        #[derive(Default)]
        pub struct Driver {
            $( #[doc = concat!("`", stringify!($abi), "` / `", stringify!($pt), "`")]
               pub $field: Option<pfn::$abi>, )*
        }

        impl Driver {
            const ENTRIES: &'static [Entry] = &[
                $( Entry {
                    base: concat!(stringify!($field), "\0"),
                    abi: concat!(stringify!($abi), "\0"),
                    abi_ptsz: concat!(stringify!($pt), "\0"),
                    version: $ver,
                }, )*
            ];

            /// Fills the table with `resolve(entry)`, entries in `ENTRIES` order.
            fn fill(mut resolve: impl FnMut(&Entry) -> *mut c_void) -> Self {
                let mut d = Driver::default();
                let mut entries = Self::ENTRIES.iter();
                $(
                    let p = resolve(entries.next().expect("one entry per field"));
                    if !p.is_null() {
                        // SAFETY: `p` is the driver's address for this entry point, and
                        // `pfn::$abi` is its C signature (the `_ptsz`/`_ptds` variant, when
                        // asked for, has the same one). Function and data pointers have the
                        // same size and representation on the platforms CUDA supports.
                        d.$field = Some(unsafe { core::mem::transmute::<*mut c_void, pfn::$abi>(p) });
                    }
                )*
                d
            }

            /// (base name, address) of every entry, for `--resolve-all`.
            pub fn entries(&self) -> Vec<(&'static str, *const c_void)> {
                vec![ $( (stringify!($field), self.$field.map_or(ptr::null(), |f| f as *const c_void)), )* ]
            }
        }
    };
}

// field: ABI name, per-thread ABI name, cudaVersion for cuGetProcAddress_v2.
driver_table! {
    cuGetProcAddress: cuGetProcAddress_v2, cuGetProcAddress_v2, 12000;
    cuInit: cuInit, cuInit, 12000;
    cuGetErrorName: cuGetErrorName, cuGetErrorName, 12000;
    cuDeviceGet: cuDeviceGet, cuDeviceGet, 12000;
    cuDeviceGetAttribute: cuDeviceGetAttribute, cuDeviceGetAttribute, 12000;
    cuDevicePrimaryCtxRetain: cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, 12000;
    cuDevicePrimaryCtxRelease: cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRelease_v2, 12000;
    cuCtxSetCurrent: cuCtxSetCurrent, cuCtxSetCurrent, 12000;
    cuMemGetInfo: cuMemGetInfo_v2, cuMemGetInfo_v2, 12000;
    cuMemAlloc: cuMemAlloc_v2, cuMemAlloc_v2, 12000;
    cuMemFree: cuMemFree_v2, cuMemFree_v2, 12000;
    cuMemAllocAsync: cuMemAllocAsync, cuMemAllocAsync_ptsz, 12000;
    cuMemFreeAsync: cuMemFreeAsync, cuMemFreeAsync_ptsz, 12000;
    cuMemGetAllocationGranularity: cuMemGetAllocationGranularity, cuMemGetAllocationGranularity, 12000;
    cuMemCreate: cuMemCreate, cuMemCreate, 12000;
    cuMemRelease: cuMemRelease, cuMemRelease, 12000;
    cuMemAddressReserve: cuMemAddressReserve, cuMemAddressReserve, 12000;
    cuMemAddressFree: cuMemAddressFree, cuMemAddressFree, 12000;
    cuMemMap: cuMemMap, cuMemMap, 12000;
    cuMemUnmap: cuMemUnmap, cuMemUnmap, 12000;
    cuMemSetAccess: cuMemSetAccess, cuMemSetAccess, 12000;
    cuMemcpyHtoD: cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, 12000;
    cuMemcpyDtoH: cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, 12000;
    cuMemsetD8: cuMemsetD8_v2, cuMemsetD8_v2_ptds, 12000;
    cuStreamCreate: cuStreamCreate, cuStreamCreate, 12000;
    cuStreamDestroy: cuStreamDestroy_v2, cuStreamDestroy_v2, 12000;
    cuStreamSynchronize: cuStreamSynchronize, cuStreamSynchronize_ptsz, 12000;
    cuEventCreate: cuEventCreate, cuEventCreate, 12000;
    cuEventDestroy: cuEventDestroy_v2, cuEventDestroy_v2, 12000;
    cuEventRecord: cuEventRecord, cuEventRecord_ptsz, 12000;
    cuEventSynchronize: cuEventSynchronize, cuEventSynchronize, 12000;
    cuEventElapsedTime: cuEventElapsedTime, cuEventElapsedTime, 12000;
    cuModuleLoadData: cuModuleLoadData, cuModuleLoadData, 12000;
    cuModuleGetFunction: cuModuleGetFunction, cuModuleGetFunction, 12000;
    cuModuleUnload: cuModuleUnload, cuModuleUnload, 12000;
    cuLaunchKernel: cuLaunchKernel, cuLaunchKernel_ptsz, 12000;
    cuStreamBeginCapture: cuStreamBeginCapture_v2, cuStreamBeginCapture_v2_ptsz, 12000;
    cuStreamEndCapture: cuStreamEndCapture, cuStreamEndCapture_ptsz, 12000;
    cuGraphInstantiateWithFlags: cuGraphInstantiateWithFlags, cuGraphInstantiateWithFlags, 12000;
    cuGraphLaunch: cuGraphLaunch, cuGraphLaunch_ptsz, 12000;
    cuGraphExecDestroy: cuGraphExecDestroy, cuGraphExecDestroy, 12000;
    cuGraphDestroy: cuGraphDestroy, cuGraphDestroy, 12000;
}

/// Calls a table entry: `cu!(drv, cuMemAlloc(&mut p, n))`. A missing entry is reported on
/// stderr and yields `CUDA_ERROR_NOT_FOUND`. The arguments are evaluated outside the `unsafe`
/// block and coerced to the C signature's parameter types (`&mut x` to `*mut T`, ...). Callers
/// pass pointers to live values of the types the C signature names: the macro is the one
/// place the example programs call into C.
#[macro_export]
macro_rules! cu {
    ($d:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $d.$f {
            Some(f) => {
                let args = $crate::driver::args_for(&f, ($($arg,)*));
                // SAFETY: `f` is the driver's entry point with exactly this signature (checked
                // against cuda.h by cuda-sys's conformance test), and every call site passes
                // pointers to live locals of the types that signature names.
                unsafe { $crate::driver::CFn::call(f, args) }
            }
            None => $crate::driver::missing(stringify!($f)),
        }
    };
}

/// A C function pointer returning `CUresult`, callable with its arguments as one tuple.
pub trait CFn: Copy {
    /// The parameter types, as a tuple.
    type Args;
    /// Calls the function.
    ///
    /// # Safety
    /// `self` must point at a function with this exact signature, and `args` must satisfy
    /// that function's contract (valid pointers, sizes, handles).
    unsafe fn call(self, args: Self::Args) -> CUresult;
}

macro_rules! impl_cfn {
    ($($a:ident),*) => {
        impl<$($a),*> CFn for unsafe extern "C" fn($($a),*) -> CUresult {
            type Args = ($($a,)*);
            #[allow(non_snake_case, clippy::unused_unit)]
            unsafe fn call(self, ($($a,)*): Self::Args) -> CUresult {
                // SAFETY: the caller upholds the signature and the contract (see the trait).
                unsafe { self($($a),*) }
            }
        }
    };
}
impl_cfn!();
impl_cfn!(A);
impl_cfn!(A, B);
impl_cfn!(A, B, C);
impl_cfn!(A, B, C, D);
impl_cfn!(A, B, C, D, E);
impl_cfn!(A, B, C, D, E, F);
impl_cfn!(A, B, C, D, E, F, G);
impl_cfn!(A, B, C, D, E, F, G, H);
impl_cfn!(A, B, C, D, E, F, G, H, I);
impl_cfn!(A, B, C, D, E, F, G, H, I, J);
impl_cfn!(A, B, C, D, E, F, G, H, I, J, K);

/// Returns `args` typed as `f`'s parameter tuple, so that each argument is coerced to its
/// parameter type (used by [`cu!`]).
pub fn args_for<F: CFn>(_f: &F, args: F::Args) -> F::Args {
    args
}

/// Reports an entry the driver did not provide; returns `CUDA_ERROR_NOT_FOUND`.
pub fn missing(name: &str) -> CUresult {
    eprintln!("error: {name} is not available from the driver");
    CUresult::CUDA_ERROR_NOT_FOUND
}

fn dlerror_string() -> String {
    // SAFETY: dlerror has no preconditions; it returns null or a NUL-terminated string owned
    // by libc, which is copied out before any other dl* call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dl error".to_owned()
    } else {
        // SAFETY: non-null dlerror results are valid NUL-terminated strings.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

fn cstr_ptr(nul_terminated: &'static str) -> *const c_char {
    debug_assert!(nul_terminated.ends_with('\0'));
    nul_terminated.as_ptr().cast()
}

/// Fills the table through `path`; with `ptsz`, the per-thread-default-stream variants.
/// Entries the driver lacks stay `None` and are named on stderr.
pub fn load(path: Path, ptsz: bool) -> Result<Driver, String> {
    // SAFETY: a NUL-terminated library name and valid flags.
    let h = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err(format!("dlopen(libcuda.so.1): {}", dlerror_string()));
    }
    match path {
        Path::Dlopen => Ok(Driver::fill(|e| {
            let name = if ptsz { e.abi_ptsz } else { e.abi };
            // SAFETY: `h` is a live handle and `name` is NUL-terminated.
            let p = unsafe { libc::dlsym(h, cstr_ptr(name)) };
            if p.is_null() {
                eprintln!("warning: driver entry {} not resolved (dlsym)", name.trim_end_matches('\0'));
            }
            p
        })),
        Path::Gpa => {
            // SAFETY: as above.
            let p = unsafe { libc::dlsym(h, c"cuGetProcAddress_v2".as_ptr()) };
            if p.is_null() {
                return Err(format!("dlsym(cuGetProcAddress_v2): {}", dlerror_string()));
            }
            // SAFETY: the driver's cuGetProcAddress_v2 has exactly this signature.
            let gpa = unsafe { core::mem::transmute::<*mut c_void, pfn::cuGetProcAddress_v2>(p) };
            let flags = if ptsz {
                CUdriverProcAddress_flags::CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
            } else {
                CUdriverProcAddress_flags::CU_GET_PROC_ADDRESS_DEFAULT
            };
            Ok(Driver::fill(|e| {
                let mut p: *mut c_void = ptr::null_mut();
                let mut status = CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
                // SAFETY: a NUL-terminated name and pointers to live locals.
                let rc = unsafe { gpa(cstr_ptr(e.base), &mut p, e.version, flags.0 as c_ulonglong, &mut status) };
                if rc.is_success() && status == CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS {
                    p
                } else {
                    eprintln!(
                        "warning: driver entry {} not resolved (cuGetProcAddress_v2 rc={} status={} version={})",
                        e.base.trim_end_matches('\0'),
                        rc.0,
                        status.0,
                        e.version
                    );
                    ptr::null_mut()
                }
            }))
        }
    }
}

/// `<file basename>!<symbol>` of a code address, via `dladdr`; `none` for 0.
pub fn describe(addr: usize) -> String {
    if addr == 0 {
        return "none".to_owned();
    }
    // SAFETY: Dl_info is plain old data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads `addr` as a number and writes `info`.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return "?!?".to_owned();
    }
    // SAFETY: dladdr filled dli_fname with a NUL-terminated path owned by the loader.
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    let base = file.rsplit('/').next().unwrap_or(&file).to_owned();
    let sym = if info.dli_sname.is_null() {
        "?".into()
    } else {
        // SAFETY: as above, for the symbol name.
        unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy()
    };
    format!("{base}!{sym}")
}

/// What both example programs do first: load the driver through `path` (exiting with a message
/// if it cannot be had), say which library answers, initialise it and make device `device`'s
/// primary context current. Any failure prints an `error step=` line and exits with status 1.
pub fn start(path: Path, ptsz: bool, resolve_all: bool, device: i32) -> (Driver, CUdevice) {
    let d = match load(path, ptsz) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    d.print_resolver(path);
    if resolve_all {
        d.print_all_resolved();
    }
    d.check("cuInit", crate::cu!(d, cuInit(0)));
    let mut dev: CUdevice = 0;
    d.check("cuDeviceGet", crate::cu!(d, cuDeviceGet(&mut dev, device)));
    let mut ctx: CUcontext = ptr::null_mut();
    d.check("cuDevicePrimaryCtxRetain", crate::cu!(d, cuDevicePrimaryCtxRetain(&mut ctx, dev)));
    d.check("cuCtxSetCurrent", crate::cu!(d, cuCtxSetCurrent(ctx)));
    (d, dev)
}

impl Driver {
    /// Exits with an `error step=<what> rc=<code> name=<name>` line unless `rc` is success.
    pub fn check(&self, what: &str, rc: CUresult) {
        if !rc.is_success() {
            println!("error step={what} rc={} name={}", rc.0, self.err_name(rc));
            std::process::exit(1);
        }
    }

    /// Prints `path=<p> resolver=<file>!<symbol>` for `cuMemAlloc`.
    pub fn print_resolver(&self, path: Path) {
        let addr = self.cuMemAlloc.map_or(0, |f| f as usize);
        println!("path={} resolver={}", path.name(), describe(addr));
    }

    /// Prints one `resolved fn=<base> at=<file>!<symbol>` line per entry.
    pub fn print_all_resolved(&self) {
        for (name, addr) in self.entries() {
            println!("resolved fn={name} at={}", describe(addr as usize));
        }
    }

    /// `CUDA_ERROR_...` name of `rc`, through `cuGetErrorName` when available.
    pub fn err_name(&self, rc: CUresult) -> String {
        let mut s: *const c_char = ptr::null();
        let r = crate::cu!(self, cuGetErrorName(rc, &mut s));
        if r.is_success() && !s.is_null() {
            // SAFETY: the driver returned a static NUL-terminated string.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        } else {
            "?".to_owned()
        }
    }
}
