//! What `libvgpu.so` adds to a driver call, measured as an A/B inside one process: this
//! bench re-runs itself as a child with the shim preloaded (a library must be preloaded to
//! interpose; `dlopen`ing it would not), and there calls each function both ways in the same
//! run: through the pointer the program would get (the shim's hook, or the driver's own where
//! the shim does not hook), and through the driver's real function, whose address is read from
//! simgpu's ELF symbol table, which no `dlsym` can hand out any more. The summary gives both
//! medians, the difference and the ratio (the method is in bench/README.md).
//!
//! * `hook/alloc_free`: `cuMemAlloc_v2` (2 MiB) + `cuMemFree_v2`, with a quota set;
//! * `hook/mem_get_info`: `cuMemGetInfo_v2`;
//! * `hook/nvml_mem_info`: `nvmlDeviceGetMemoryInfo_v2` (from `libnvidia-ml.so.1`);
//! * `hook/launch`: `cuLaunchKernel` of a 1 ns kernel with no SM limit set: the shim may add
//!   at most 20 ns;
//! * `hook/launch_sm`: the same launch in a second child that runs with
//!   `CUDA_DEVICE_SM_LIMIT=99 GPU_CORE_UTILIZATION_POLICY=force`, so every launch through the
//!   shim is charged to the container's SM bucket while tokens stay available (the kernel
//!   costs nothing); at most 50 ns added. Afterwards the bench reads the bucket from the region
//!   and reports whether any launch waited (its THROTTLED word);
//! * `hook/dlsym_{hooked,unhooked}`: `dlsym(handle, "cuMemAlloc_v2" | "cuLaunchKernel")`,
//!   the shim's exported `dlsym` against libc's own (found with `dlvsym`);
//! * `hook/gpa_{hooked,hooked_ptds,unhooked}`: `cuGetProcAddress_v2` of `cuMemAlloc`,
//!   `cuMemAllocAsync` with the per-thread-default-stream flag, and `cuLaunchKernel`.
//!
//! Needs the shim and simgpu built in the bench's profile: `cargo build --release --workspace`
//! (or `cargo bench --workspace`, which builds them).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion};
use vgpu_bench::{artifacts_dir, sim_lib_dir};

/// Set in a child, which runs under `LD_PRELOAD=libvgpu.so` and measures: `plain` (a memory
/// quota, no SM limit: every benchmark but `launch_sm`) or `sm` (an SM limit too: `launch_sm`).
const CHILD_VAR: &str = "VGPU_BENCH_SHIM_CHILD";
/// Where the child writes its paired estimates (`paired <name> direct_ns= added_ns=` lines).
const PAIRED_VAR: &str = "VGPU_BENCH_SHIM_PAIRED";
/// Benchmarks, with the most the shim may add to each (ns), where the issue sets one.
const BENCHES: [(&str, Option<f64>); 12] = [
    ("alloc_free", Some(1000.0)),
    ("async_alloc_free", None),
    ("graph_launch", None),
    ("mem_get_info", None),
    ("nvml_mem_info", None),
    ("launch", Some(20.0)),
    ("launch_sm", Some(50.0)),
    ("dlsym_hooked", None),
    ("dlsym_unhooked", None),
    ("gpa_hooked", None),
    ("gpa_hooked_ptds", None),
    ("gpa_unhooked", None),
];

/// A 1 ns kernel (simgpu reads the cost from the name) that does nothing on a real GPU.
const PTX: &str = ".version 7.0\n.target sm_70\n.address_size 64\n.visible .entry bench_1ns()\n{\n\tret;\n}\n\0";

type CUresult = c_int;
type Ptr = *mut c_void;
type DlsymFn = unsafe extern "C" fn(Ptr, *const c_char) -> Ptr;
type MemAllocFn = unsafe extern "C" fn(*mut u64, usize) -> CUresult;
type MemFreeFn = unsafe extern "C" fn(u64) -> CUresult;
type MemGetInfoFn = unsafe extern "C" fn(*mut usize, *mut usize) -> CUresult;
type LaunchFn = unsafe extern "C" fn(Ptr, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Ptr, *mut Ptr, *mut Ptr) -> CUresult;
type GpaFn = unsafe extern "C" fn(*const c_char, *mut Ptr, c_int, u64, *mut c_int) -> CUresult;
type MemAllocAsyncFn = unsafe extern "C" fn(*mut u64, usize, Ptr) -> CUresult;
type MemFreeAsyncFn = unsafe extern "C" fn(u64, Ptr) -> CUresult;
type GraphLaunchFn = unsafe extern "C" fn(Ptr, Ptr) -> CUresult;
type NvmlMemFn = unsafe extern "C" fn(Ptr, *mut NvmlMemoryV2) -> c_int;

/// NVML's `nvmlMemory_v2_t`.
#[repr(C)]
#[derive(Default)]
struct NvmlMemoryV2 {
    version: c_uint,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}
/// NVML's `nvmlMemory_v2`: the struct's size and version 2.
const NVML_MEMORY_V2: c_uint = std::mem::size_of::<NvmlMemoryV2>() as c_uint | (2 << 24);

/// One side of the comparison: the functions the benchmarks call.
#[derive(Clone, Copy)]
struct Side {
    dlsym: DlsymFn,
    mem_alloc: MemAllocFn,
    mem_free: MemFreeFn,
    mem_get_info: MemGetInfoFn,
    launch: LaunchFn,
    gpa: GpaFn,
    mem_alloc_async: MemAllocAsyncFn,
    mem_free_async: MemFreeAsyncFn,
    graph_launch: GraphLaunchFn,
}

/// Panics with the call's name on a driver error.
fn check(what: &str, rc: CUresult) {
    assert_eq!(rc, 0, "{what} failed with CUresult {rc}");
}

/// The file an address lies in (`dladdr`).
fn object_of(p: Ptr) -> String {
    // SAFETY: Dl_info is plain data; zero is a valid start.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address.
    if unsafe { libc::dladdr(p, &mut info) } == 0 || info.dli_fname.is_null() {
        return "?".into();
    }
    // SAFETY: dladdr's file name is NUL-terminated.
    unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned()
}

/// An address as the function pointer type `F`.
///
/// # Safety
/// `p` is a function whose C signature is `F` (as in NVIDIA's `cuda.h`).
unsafe fn as_fn<F>(p: Ptr) -> F {
    assert!(!p.is_null());
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<Ptr>());
    // SAFETY: a function's address, as the function pointer type the caller vouches for.
    unsafe { std::mem::transmute_copy::<Ptr, F>(&p) }
}

/// `dlsym(handle, name)` as the program sees it (through the shim's exported `dlsym`).
fn sym(handle: Ptr, name: &str) -> Ptr {
    let c = CString::new(name).expect("no NUL");
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    assert!(!p.is_null(), "dlsym({name}) found nothing");
    p
}

/// `dlopen(name)`, which must succeed.
fn open(name: &CStr) -> Ptr {
    // SAFETY: dlopen with a NUL-terminated name.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen({name:?}) failed: is simgpu on LD_LIBRARY_PATH?");
    handle
}

/// A library's real functions, by name, read from the ELF symbol table of the loaded file
/// (plus its load address): what `dlsym` would return without the shim, obtained without
/// asking `dlsym`.
struct ElfSymbols {
    file: String,
    bias: usize,
    symbols: std::collections::HashMap<String, u64>,
}

impl ElfSymbols {
    fn of_loaded(soname_suffix: &str) -> ElfSymbols {
        struct Found {
            suffix: String,
            hit: Option<(usize, PathBuf)>,
        }
        unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
            // SAFETY: dl_iterate_phdr passes a valid info and our own `data`.
            let (info, found) = unsafe { (&*info, &mut *data.cast::<Found>()) };
            if info.dlpi_name.is_null() {
                return 0;
            }
            // SAFETY: a NUL-terminated path.
            let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned();
            if name.ends_with(&found.suffix) {
                found.hit = Some((info.dlpi_addr as usize, PathBuf::from(name)));
                return 1;
            }
            0
        }
        let mut found = Found { suffix: soname_suffix.to_string(), hit: None };
        // SAFETY: the callback only reads the info and writes `found`.
        unsafe { libc::dl_iterate_phdr(Some(visit), (&mut found as *mut Found).cast()) };
        let (bias, path) = found.hit.unwrap_or_else(|| panic!("no loaded object ends in {soname_suffix}"));
        let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        ElfSymbols { file: path.display().to_string(), bias, symbols: dynsym(&elf) }
    }

    fn get(&self, name: &str) -> Ptr {
        let v = self.symbols.get(name).unwrap_or_else(|| panic!("{name} is not in the .dynsym of {}", self.file));
        (self.bias + *v as usize) as Ptr
    }
}

/// `.dynsym` of a little-endian ELF64 file: defined symbol name -> value.
fn dynsym(elf: &[u8]) -> std::collections::HashMap<String, u64> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().expect("2 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes"));
    assert!(elf.starts_with(b"\x7fELF\x02\x01"), "not a little-endian ELF64 file");
    let (shoff, shentsize, shnum) = (u64_at(0x28) as usize, u16_at(0x3a) as usize, u16_at(0x3c) as usize);
    let section = |i: usize| shoff + i * shentsize;
    let dynsym = (0..shnum).map(section).find(|&s| u32_at(s + 4) == 11).expect("an SHT_DYNSYM section");
    let (off, size, link) = (u64_at(dynsym + 24) as usize, u64_at(dynsym + 32) as usize, u32_at(dynsym + 40) as usize);
    let strtab = u64_at(section(link) + 24) as usize;
    let mut out = std::collections::HashMap::new();
    for sym in (off..off + size).step_by(24) {
        let (name, shndx, value) = (u32_at(sym) as usize, u16_at(sym + 6), u64_at(sym + 8));
        if shndx == 0 || value == 0 {
            continue; // undefined
        }
        let start = strtab + name;
        let end = start + elf[start..].iter().position(|&b| b == 0).expect("NUL-terminated");
        out.insert(String::from_utf8_lossy(&elf[start..end]).into_owned(), value);
    }
    out
}

/// A child: the driver set up once, then every benchmark of its kind (`plain` or `sm`, see
/// [`CHILD_VAR`]) both ways.
fn child(kind: &str) {
    let sm = kind == "sm";
    let handle = open(c"libcuda.so.1");
    let elf = ElfSymbols::of_loaded("/libcuda.so.1");
    // The ELF route finds exactly what dlsym finds for a function the shim leaves alone.
    assert_eq!(elf.get("cuDriverGetVersion"), sym(handle, "cuDriverGetVersion"));

    // SAFETY: libc's own dlsym, which dlvsym finds by its version (never interposed).
    let libc_dlsym = unsafe { libc::dlvsym(libc::RTLD_DEFAULT, c"dlsym".as_ptr(), c"GLIBC_2.34".as_ptr()) };
    let libc_dlsym = if libc_dlsym.is_null() {
        // SAFETY: as above, for glibc < 2.34.
        unsafe { libc::dlvsym(libc::RTLD_DEFAULT, c"dlsym".as_ptr(), c"GLIBC_2.2.5".as_ptr()) }
    } else {
        libc_dlsym
    };
    let names = [
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuMemGetInfo_v2",
        "cuLaunchKernel",
        "cuGetProcAddress_v2",
        "cuMemAllocAsync",
        "cuMemFreeAsync",
        "cuGraphLaunch",
    ];
    // SAFETY: every pointer is the named function (or libc's dlsym), of the matching type.
    let (program, direct) = unsafe {
        let side = |p: &dyn Fn(&str) -> Ptr, dlsym: Ptr| Side {
            dlsym: as_fn(dlsym),
            mem_alloc: as_fn(p(names[0])),
            mem_free: as_fn(p(names[1])),
            mem_get_info: as_fn(p(names[2])),
            launch: as_fn(p(names[3])),
            gpa: as_fn(p(names[4])),
            mem_alloc_async: as_fn(p(names[5])),
            mem_free_async: as_fn(p(names[6])),
            graph_launch: as_fn(p(names[7])),
        };
        (side(&|n| sym(handle, n), libc::dlsym as Ptr), side(&|n| elf.get(n), libc_dlsym))
    };
    for n in names {
        eprintln!("shim bench: {n}: the program gets {}, the real one is in {}", object_of(sym(handle, n)), object_of(elf.get(n)));
    }
    assert!(object_of(program.mem_alloc as Ptr).ends_with("libvgpu.so"), "the shim is not preloaded");
    assert!(object_of(direct.mem_alloc as Ptr).ends_with("libcuda.so.1"));

    // Context, stream and kernel, made through the real driver (the shim charges the context
    // and sees the primary context retained through its hook).
    // SAFETY: each function is called with its C signature's arguments and valid out-pointers.
    let (function, stream) = unsafe {
        let init: unsafe extern "C" fn(c_uint) -> CUresult = as_fn(sym(handle, "cuInit"));
        let retain: unsafe extern "C" fn(*mut Ptr, c_int) -> CUresult = as_fn(sym(handle, "cuDevicePrimaryCtxRetain"));
        let set_current: unsafe extern "C" fn(Ptr) -> CUresult = as_fn(sym(handle, "cuCtxSetCurrent"));
        let stream_create: unsafe extern "C" fn(*mut Ptr, c_uint) -> CUresult = as_fn(sym(handle, "cuStreamCreate"));
        let module_load: unsafe extern "C" fn(*mut Ptr, *const c_void) -> CUresult = as_fn(sym(handle, "cuModuleLoadData"));
        let get_function: unsafe extern "C" fn(*mut Ptr, Ptr, *const c_char) -> CUresult = as_fn(sym(handle, "cuModuleGetFunction"));
        check("cuInit", init(0));
        let mut ctx = std::ptr::null_mut();
        check("cuDevicePrimaryCtxRetain", retain(&mut ctx, 0));
        check("cuCtxSetCurrent", set_current(ctx));
        let mut stream = std::ptr::null_mut();
        check("cuStreamCreate", stream_create(&mut stream, 0));
        let mut module = std::ptr::null_mut();
        check("cuModuleLoadData", module_load(&mut module, PTX.as_ptr().cast()));
        let mut function = std::ptr::null_mut();
        check("cuModuleGetFunction", get_function(&mut function, module, c"bench_1ns".as_ptr()));
        (function, stream)
    };
    // An executable graph of one kernel, captured through the real driver.
    // SAFETY: as above.
    let graph_exec = unsafe {
        let begin: unsafe extern "C" fn(Ptr, c_uint) -> CUresult = as_fn(elf.get("cuStreamBeginCapture_v2"));
        let end: unsafe extern "C" fn(Ptr, *mut Ptr) -> CUresult = as_fn(elf.get("cuStreamEndCapture"));
        let instantiate: unsafe extern "C" fn(*mut Ptr, Ptr, u64) -> CUresult = as_fn(elf.get("cuGraphInstantiateWithFlags"));
        let launch: LaunchFn = as_fn(elf.get("cuLaunchKernel"));
        let null = std::ptr::null_mut();
        check("cuStreamBeginCapture_v2", begin(stream, 2));
        check("cuLaunchKernel", launch(function, 1, 1, 1, 32, 1, 1, 0, stream, null, null));
        let mut graph = std::ptr::null_mut();
        check("cuStreamEndCapture", end(stream, &mut graph));
        let mut exec = std::ptr::null_mut();
        check("cuGraphInstantiateWithFlags", instantiate(&mut exec, graph, 0));
        exec
    };

    // One operation per benchmark and side; `true` marks the ones worth 1000 calls a batch.
    type Op<'a> = Box<dyn Fn() + 'a>;
    let mut ops: Vec<(&str, [Op; 2], bool)> = Vec::new();
    let sides = [direct, program];
    if sm {
        // The only benchmark of this child: every launch through the shim is charged to the
        // SM bucket. Each side counts its launches (the same cost on both sides); the count of
        // the shim's goes to the paired file, beside the bucket's throttled time.
        let counts = [std::cell::Cell::new(0u64), std::cell::Cell::new(0u64)];
        let counts = &*Box::leak(Box::new(counts));
        ops.push((
            "launch_sm",
            [0, 1].map(|i| -> Op {
                let s = sides[i];
                Box::new(move || {
                    let null = std::ptr::null_mut();
                    // SAFETY: a kernel without parameters on a live stream.
                    black_box(unsafe { (s.launch)(function, 1, 1, 1, 32, 1, 1, 0, stream, null, null) });
                    counts[i].set(counts[i].get() + 1);
                })
            }),
            true,
        ));
        measure(&ops, &|| format!("launches_through_shim {}\n", counts[1].get()));
        return;
    }
    ops.push((
        "alloc_free",
        sides.map(|s| -> Op {
            Box::new(move || {
                let mut p = 0u64;
                // SAFETY: a valid out-pointer; the block is freed at once.
                unsafe {
                    check("cuMemAlloc_v2", (s.mem_alloc)(&mut p, black_box(2 << 20)));
                    check("cuMemFree_v2", (s.mem_free)(p));
                }
            })
        }),
        false,
    ));
    ops.push((
        "mem_get_info",
        sides.map(|s| -> Op {
            Box::new(move || {
                let (mut free, mut total) = (0usize, 0usize);
                // SAFETY: valid out-pointers.
                black_box(unsafe { (s.mem_get_info)(&mut free, &mut total) });
                black_box((free, total));
            })
        }),
        true,
    ));
    // NVML: the library a monitoring tool or PyTorch opens, initialised through the shim.
    let nvml = open(c"libnvidia-ml.so.1");
    let nvml_elf = ElfSymbols::of_loaded("/libnvidia-ml.so.1");
    assert_eq!(nvml_elf.get("nvmlDeviceGetName"), sym(nvml, "nvmlDeviceGetName"));
    let nvml_sides: [NvmlMemFn; 2] = {
        let name = "nvmlDeviceGetMemoryInfo_v2";
        eprintln!(
            "shim bench: {name}: the program gets {}, the real one is in {}",
            object_of(sym(nvml, name)),
            object_of(nvml_elf.get(name))
        );
        // SAFETY: both pointers are nvmlDeviceGetMemoryInfo_v2.
        unsafe { [as_fn(nvml_elf.get(name)), as_fn(sym(nvml, name))] }
    };
    assert!(object_of(nvml_sides[1] as Ptr).ends_with("libvgpu.so"), "the shim does not hook nvmlDeviceGetMemoryInfo_v2");
    // SAFETY: NVML's initialisation and device lookup with a valid out-pointer.
    let device = unsafe {
        let init: unsafe extern "C" fn() -> c_int = as_fn(sym(nvml, "nvmlInit_v2"));
        let by_index: unsafe extern "C" fn(c_uint, *mut Ptr) -> c_int = as_fn(sym(nvml, "nvmlDeviceGetHandleByIndex_v2"));
        assert_eq!(init(), 0, "nvmlInit_v2");
        let mut device = std::ptr::null_mut();
        assert_eq!(by_index(0, &mut device), 0, "nvmlDeviceGetHandleByIndex_v2");
        device
    };
    let mut shown = [0u64; 2];
    for (i, f) in nvml_sides.iter().enumerate() {
        let mut m = NvmlMemoryV2 { version: NVML_MEMORY_V2, ..Default::default() };
        // SAFETY: a device handle and a versioned struct.
        assert_eq!(unsafe { f(device, &mut m) }, 0, "nvmlDeviceGetMemoryInfo_v2");
        shown[i] = m.total;
    }
    eprintln!("shim bench: NVML total memory: {} bytes from simgpu, {} bytes through the shim (the quota)", shown[0], shown[1]);
    ops.push((
        "nvml_mem_info",
        nvml_sides.map(|f| -> Op {
            Box::new(move || {
                let mut m = NvmlMemoryV2 { version: NVML_MEMORY_V2, ..Default::default() };
                // SAFETY: a device handle and a versioned struct.
                black_box(unsafe { f(device, &mut m) });
                black_box(m.free);
            })
        }),
        true,
    ));
    ops.push((
        "async_alloc_free",
        sides.map(|s| -> Op {
            Box::new(move || {
                let mut p = 0u64;
                // SAFETY: a valid out-pointer on a live stream; the block is freed at once.
                unsafe {
                    check("cuMemAllocAsync", (s.mem_alloc_async)(&mut p, black_box(2 << 20), stream));
                    check("cuMemFreeAsync", (s.mem_free_async)(p, stream));
                }
            })
        }),
        true,
    ));
    ops.push((
        "graph_launch",
        sides.map(|s| -> Op {
            Box::new(move || {
                // SAFETY: a live executable graph on a live stream.
                black_box(unsafe { (s.graph_launch)(graph_exec, stream) });
            })
        }),
        true,
    ));
    ops.push((
        "launch",
        sides.map(|s| -> Op {
            Box::new(move || {
                let null = std::ptr::null_mut();
                // SAFETY: a kernel without parameters on a live stream.
                black_box(unsafe { (s.launch)(function, 1, 1, 1, 32, 1, 1, 0, stream, null, null) });
            })
        }),
        true,
    ));
    for (name, symbol) in [("dlsym_hooked", c"cuMemAlloc_v2"), ("dlsym_unhooked", c"cuLaunchKernel")] {
        ops.push((
            name,
            sides.map(|s| -> Op {
                Box::new(move || {
                    // SAFETY: a live handle and a NUL-terminated name.
                    black_box(unsafe { (s.dlsym)(handle, black_box(symbol).as_ptr()) });
                })
            }),
            true,
        ));
    }
    for (name, symbol, flags) in
        [("gpa_hooked", c"cuMemAlloc", 0), ("gpa_hooked_ptds", c"cuMemAllocAsync", 2), ("gpa_unhooked", c"cuLaunchKernel", 0)]
    {
        ops.push((
            name,
            sides.map(|s| -> Op {
                Box::new(move || {
                    let (mut p, mut status) = (std::ptr::null_mut(), 0);
                    // SAFETY: a NUL-terminated name and valid out-pointers.
                    let rc = unsafe { (s.gpa)(black_box(symbol).as_ptr(), &mut p, 12000, flags, &mut status) };
                    black_box((rc, p));
                })
            }),
            true,
        ));
    }

    measure(&ops, &String::new);
}

/// One benchmark, both sides: (name, [direct, shim], whether 1000 calls make a batch).
type Bench<'a> = (&'a str, [Box<dyn Fn() + 'a>; 2], bool);

/// Runs `ops` under criterion, then (under `cargo bench`) the paired estimate, and writes the
/// paired lines and what `extra` says after both to the paired file.
fn measure(ops: &[Bench<'_>], extra: &dyn Fn() -> String) {
    let mut c = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).configure_from_args();
    let mut g = c.benchmark_group("hook");
    for (name, [d, s], _) in ops {
        g.bench_function(BenchmarkId::new(*name, "direct"), |b| b.iter(d));
        g.bench_function(BenchmarkId::new(*name, "shim"), |b| b.iter(s));
    }
    g.finish();
    c.final_summary();

    // Criterion measures the two sides seconds apart; on a busy machine that drift can exceed
    // the few nanoseconds in question. The paired estimate alternates batches of the two (in
    // both orders) and takes the median of the per-round differences.
    let args: Vec<String> = std::env::args().collect();
    let mut out = String::new();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test") {
        let filter: Vec<String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).cloned().collect();
        for (name, [d, s], cheap) in ops {
            if !filter.is_empty() && !filter.iter().any(|f| format!("hook/{name}").contains(f.as_str())) {
                continue;
            }
            let batch = if *cheap { 1000 } else { 50 };
            let (added, direct_ns) = paired(d, s, batch, 201);
            out.push_str(&format!("paired {name} direct_ns={direct_ns:.1} added_ns={added:.1}\n"));
        }
    }
    out.push_str(&extra());
    if let Some(path) = std::env::var_os(PAIRED_VAR) {
        std::fs::write(path, out).expect("write the paired results");
    }
}

/// Alternates `rounds` batches of `batch` calls of `direct` and of `shim` (switching which
/// goes first each round); returns (median of the per-call differences, median direct time).
fn paired(direct: &dyn Fn(), shim: &dyn Fn(), batch: u32, rounds: usize) -> (f64, f64) {
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        for _ in 0..batch {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(batch)
    };
    for _ in 0..batch {
        direct();
        shim();
    }
    let mut diffs = Vec::with_capacity(rounds);
    let mut directs = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (d, s) = if round % 2 == 0 {
            let d = time(direct);
            (d, time(shim))
        } else {
            let s = time(shim);
            (time(direct), s)
        };
        diffs.push(s - d);
        directs.push(d);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut diffs), median(&mut directs))
}

/// The median (ns) criterion recorded for `hook/<name>/<role>`, if it was measured in this run.
fn median_ns(criterion_home: &Path, name: &str, role: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_home.join("hook").join(name).join(role).join("new/estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let json = std::fs::read_to_string(&path).ok()?;
    let median = &json[json.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find([',', '}']).unwrap_or(value.len());
    value[..end].trim().parse().ok()
}

/// What the SM child's bucket says after its run.
struct BucketReport {
    limit_permille: u64,
    enforcing: bool,
    throttled_ns: u64,
    /// Nanoseconds from the bucket's theoretical arrival time to when it was read (how long
    /// ago the last charge was paid for; 0 or negative: charged ahead of now).
    tat_age_ns: i64,
    launches: Option<u64>,
}

/// Runs one child (`plain` or `sm`) under the shim in its own simulated machine and region;
/// returns its paired lines, and the region's path.
fn run_child(kind: &str, shim: &Path, lib: &Path, scratch: &Path, criterion_home: &Path) -> (String, PathBuf) {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(std::env::args_os().skip(1)).env(CHILD_VAR, kind).env("CRITERION_HOME", criterion_home);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CUDA_")
            || k.starts_with("SIMGPU_")
            || k.starts_with("VGPU_REAL_")
            || k == "LIBCUDA_LOG_LEVEL"
            || k == "GPU_CORE_UTILIZATION_POLICY"
        {
            cmd.env_remove(&k);
        }
    }
    let region = scratch.join(format!("region-{kind}"));
    let paired = scratch.join(format!("paired-{kind}"));
    // A quota, so allocations go through the region.
    // simgpu's one-queue model: the time-slicing model's bookkeeping adds to the driver's side
    // of every call, noise the shim's added cost is measured against.
    cmd.env("LD_LIBRARY_PATH", lib)
        .env("LD_PRELOAD", shim)
        .env("SIMGPU_STATE", scratch.join(format!("machine-{kind}")))
        .env("SIMGPU_TIMESLICE", "off")
        .env("CUDA_DEVICE_MEMORY_LIMIT", "8g")
        .env("CUDA_DEVICE_MEMORY_SHARED_CACHE", &region)
        .env(PAIRED_VAR, &paired);
    if kind == "sm" {
        // Every launch charged (policy force: enforced even with no other tenant), and a share
        // a 1 ns kernel can never exhaust.
        cmd.env("CUDA_DEVICE_SM_LIMIT", "99").env("GPU_CORE_UTILIZATION_POLICY", "force");
    }
    let status = cmd.status().expect("run the bench child");
    assert!(status.success(), "the bench child ({kind}) failed: {status}");
    (std::fs::read_to_string(&paired).unwrap_or_default(), region)
}

/// Reads device 0's SM bucket of `region` (the `sm` child has exited; the file remains).
fn read_bucket(region: &Path, paired: &str) -> Option<BucketReport> {
    use vgpu_limiter::sm::{Bucket, word};
    let observer = vgpu_limiter::region::Observer::open(region).ok()?;
    let line = observer.sm_bucket(0);
    let bucket = Bucket::new(line);
    let tat = line.words[word::TAT].load(std::sync::atomic::Ordering::Acquire);
    let launches = paired.lines().find_map(|l| l.strip_prefix("launches_through_shim ")).and_then(|n| n.trim().parse().ok());
    Some(BucketReport {
        limit_permille: bucket.limit_permille()?,
        enforcing: bucket.enforcing(),
        throttled_ns: bucket.throttled_ns(),
        tat_age_ns: vgpu_bench::now_ns() as i64 - tat as i64,
        launches,
    })
}

/// The parent: runs the children under the shim, then prints the comparison.
fn parent() {
    let started = SystemTime::now();
    let art = artifacts_dir();
    let shim = art.join("libvgpu.so");
    assert!(shim.is_file(), "{} is missing: cargo build --release --workspace", shim.display());
    let scratch = std::env::temp_dir().join(format!("vgpu-bench-shim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let lib = sim_lib_dir(&art, &scratch);
    let criterion_home =
        std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| art.parent().expect("target dir").join("criterion"));

    let (mut paired, _) = run_child("plain", &shim, &lib, &scratch, &criterion_home);
    let (paired_sm, sm_region) = run_child("sm", &shim, &lib, &scratch, &criterion_home);
    let bucket = read_bucket(&sm_region, &paired_sm);
    paired.push_str(&paired_sm);
    let _ = std::fs::remove_dir_all(&scratch);

    let rows: Vec<(&str, f64, f64, Option<f64>)> = BENCHES
        .iter()
        .filter_map(|(name, target)| {
            let direct = median_ns(&criterion_home, name, "direct", started)?;
            let shimmed = median_ns(&criterion_home, name, "shim", started)?;
            Some((*name, direct, shimmed, *target))
        })
        .collect();
    let bucket_line = bucket.as_ref().map(|b| {
        let paid = if b.tat_age_ns >= 0 {
            format!("paid up to {:.1} ms before it was read", b.tat_age_ns as f64 / 1e6)
        } else {
            format!("charged {:.1} ms ahead of when it was read (within the burst)", -b.tat_age_ns as f64 / 1e6)
        };
        let launches = b.launches.map_or("?".to_string(), |n| n.to_string());
        format!(
            "launch_sm: SM bucket of device 0 after the run: limit {} permille, enforcing {}, {paid}; {launches} launches through the \
             shim; time launches waited for tokens (THROTTLED): {:.3} ms{}",
            b.limit_permille,
            b.enforcing,
            b.throttled_ns as f64 / 1e6,
            if b.throttled_ns == 0 { ": no launch waited" } else { ": SOME LAUNCHES WAITED (tokens were not always available)" }
        )
    });
    if rows.is_empty() {
        // Test mode (`cargo test --benches`) or a filter that matched nothing.
        if let Some(line) = bucket_line {
            println!("{line}");
        }
        return;
    }
    let paired_added = |name: &str| -> Option<f64> {
        let line = paired.lines().find(|l| l.split_whitespace().nth(1) == Some(name))?;
        line.split_whitespace().find_map(|kv| kv.strip_prefix("added_ns="))?.parse().ok()
    };
    println!("\nlibvgpu.so's added cost, in one process (direct = simgpu's own function):");
    println!("  criterion: medians of each side; paired: median difference of alternating batches");
    println!(
        "{:<16} {:>10} {:>10} {:>10} {:>7} {:>12}  target (on paired)",
        "benchmark", "direct ns", "shim ns", "added ns", "ratio", "paired added"
    );
    for (name, direct, shimmed, target) in rows {
        let added = shimmed - direct;
        let pair = paired_added(name);
        let judged = pair.unwrap_or(added);
        let verdict = match target {
            Some(t) if judged <= t => format!("<= {t} ns: met"),
            Some(t) => format!("<= {t} ns: MISSED"),
            None => String::new(),
        };
        let pair = pair.map_or("-".to_string(), |p| format!("{p:.1}"));
        println!("{name:<16} {direct:>10.1} {shimmed:>10.1} {added:>10.1} {:>7.3} {pair:>12}  {verdict}", shimmed / direct);
    }
    if let Some(line) = bucket_line {
        println!("\n{line}");
    }
}

fn main() {
    match std::env::var(CHILD_VAR) {
        Ok(kind) => child(&kind),
        Err(_) => parent(),
    }
}
