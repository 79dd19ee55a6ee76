//! alloc_rs: the essential subset of `examples/c/alloc_families.c` in Rust.
//!
//! Allocates, touches and frees device memory through `cuMemAlloc_v2`, `cuMemAllocAsync` and
//! `cuMemCreate`, printing the same lines as the C program:
//! `family=<name> op=<alloc|copy|hold|free|step> bytes=<n> rc=<CUresult> free=<f> total=<t>`.
//! Exit status 0 when every call that should succeed did, 1 otherwise, 2 for bad arguments.
#![deny(unsafe_code)]
use core::ffi::c_void;
use std::time::Duration;

use cuda_sys::driver::*;
use vgpu_examples::driver::{self, Driver, Path};
use vgpu_examples::{Args, cu, parse_size};

const USAGE: &str = "usage: alloc_rs [--family cuMemAlloc_v2|cuMemAllocAsync|cuMemCreate|all] [--size BYTES]\n\
                     \x20               [--hold N] [--device I] [--path dlopen|gpa] [--ptsz]\n\
                     \x20               [--stream default|created] [--no-copy] [--wait SECONDS] [--resolve-all]";

/// Bytes copied at each end of a block by the copy check.
const COPY_WINDOW: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Alloc,
    Async,
    Create,
}

impl Family {
    const ALL: [Family; 3] = [Family::Alloc, Family::Async, Family::Create];

    fn name(self) -> &'static str {
        match self {
            Family::Alloc => "cuMemAlloc_v2",
            Family::Async => "cuMemAllocAsync",
            Family::Create => "cuMemCreate",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cuMemAlloc_v2" | "cuMemAlloc" => Family::Alloc,
            "cuMemAllocAsync" => Family::Async,
            "cuMemCreate" => Family::Create,
            _ => return None,
        })
    }
}

struct Opts {
    families: Vec<Family>,
    size: u64,
    hold: Option<usize>,
    device: i32,
    path: Path,
    ptsz: bool,
    created_stream: bool,
    copy: bool,
    wait: f64,
    resolve_all: bool,
}

fn parse_args() -> Opts {
    let mut a = Args::from_env(USAGE);
    let mut o = Opts {
        families: Family::ALL.to_vec(),
        size: 64 << 20,
        hold: None,
        device: 0,
        path: Path::Dlopen,
        ptsz: false,
        created_stream: true,
        copy: true,
        wait: 0.0,
        resolve_all: false,
    };
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--family" => {
                let v = a.value(&flag);
                o.families = if v == "all" {
                    Family::ALL.to_vec()
                } else {
                    vec![Family::parse(&v).unwrap_or_else(|| a.fail(&format!("unknown family {v}")))]
                };
            }
            "--size" => {
                let v = a.value(&flag);
                o.size = parse_size(&v).unwrap_or_else(|| a.fail(&format!("bad --size {v}")));
            }
            "--hold" => {
                let n: usize = a.parsed(&flag);
                if n == 0 {
                    a.fail("--hold needs N >= 1");
                }
                o.hold = Some(n);
            }
            "--device" => o.device = a.parsed(&flag),
            "--path" => {
                let v = a.value(&flag);
                o.path = Path::parse(&v).unwrap_or_else(|| a.fail(&format!("unknown path {v} (dlopen|gpa)")));
            }
            "--ptsz" => o.ptsz = true,
            "--stream" => {
                o.created_stream = match a.value(&flag).as_str() {
                    "default" => false,
                    "created" => true,
                    _ => a.fail("--stream default|created"),
                }
            }
            "--no-copy" => o.copy = false,
            "--wait" => o.wait = a.parsed(&flag),
            "--resolve-all" => o.resolve_all = true,
            _ => a.fail(&format!("unknown argument {flag}")),
        }
    }
    o
}

/// One allocation of any family.
#[derive(Default)]
struct Block {
    live: bool,
    bytes: usize,
    ptr: CUdeviceptr,
    handle: CUmemGenericAllocationHandle,
    reserved: bool,
    mapped: bool,
}

struct Run {
    d: Driver,
    o: Opts,
    dev: CUdevice,
    stream: CUstream,
    granularity: usize,
    failures: u32,
}

fn pattern_byte(off: usize, seed: usize) -> u8 {
    (off.wrapping_mul(131).wrapping_add(seed.wrapping_mul(17)).wrapping_add(off >> 12) & 0xff) as u8
}

fn round_up(v: usize, to: usize) -> usize {
    if to == 0 { v } else { v.div_ceil(to) * to }
}

impl Run {
    fn line(&self, fam: Family, op: &str, bytes: usize, rc: CUresult, extra: &str) {
        let (mut free, mut total) = (0usize, 0usize);
        let mrc = cu!(self.d, cuMemGetInfo(&mut free, &mut total));
        let sep = if extra.is_empty() { "" } else { " " };
        if mrc.is_success() {
            println!("family={} op={op} bytes={bytes} rc={} free={free} total={total}{sep}{extra}", fam.name(), rc.0);
        } else {
            println!("family={} op={op} bytes={bytes} rc={} free=-1 total=-1 meminfo_rc={}{sep}{extra}", fam.name(), rc.0, mrc.0);
        }
    }

    /// Reports a failing intermediate step on a line of its own; returns whether it succeeded.
    fn step(&mut self, fam: Family, op: &str, bytes: usize, rc: CUresult) -> bool {
        if !rc.is_success() {
            self.failures += 1;
            self.line(fam, op, bytes, rc, "");
        }
        rc.is_success()
    }

    fn device_prop(&self) -> CUmemAllocationProp {
        CUmemAllocationProp {
            type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
            requestedHandleTypes: 0,
            location: CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: self.dev },
            win32HandleMetaData: core::ptr::null_mut(),
            allocFlags: CUmemAllocationProp_allocFlags { compressionType: 0, gpuDirectRDMACapable: 0, usage: 0, reserved: [0; 4] },
        }
    }

    fn alloc(&mut self, fam: Family) -> (CUresult, Block) {
        let size = self.o.size as usize;
        let mut b = Block { bytes: size, ..Block::default() };
        let rc = match fam {
            Family::Alloc => cu!(self.d, cuMemAlloc(&mut b.ptr, size)),
            Family::Async => {
                let rc = cu!(self.d, cuMemAllocAsync(&mut b.ptr, size, self.stream));
                if rc.is_success() {
                    let s = cu!(self.d, cuStreamSynchronize(self.stream));
                    self.step(fam, "stream_sync", size, s);
                }
                rc
            }
            Family::Create => {
                let prop = self.device_prop();
                b.bytes = round_up(size.max(1), self.granularity);
                let rc = cu!(self.d, cuMemCreate(&mut b.handle, b.bytes, &prop, 0));
                if rc.is_success() {
                    self.line(fam, "alloc", b.bytes, rc, "");
                    self.map(fam, &mut b);
                    return (rc, b);
                }
                rc
            }
        };
        b.live = rc.is_success();
        self.line(fam, "alloc", b.bytes, rc, "");
        (rc, b)
    }

    /// cuMemCreate's reserve / map / set-access steps; `b.live` only when all succeeded.
    fn map(&mut self, fam: Family, b: &mut Block) {
        let n = b.bytes;
        let rc = cu!(self.d, cuMemAddressReserve(&mut b.ptr, n, 0, 0, 0));
        if !self.step(fam, "reserve", n, rc) {
            return;
        }
        b.reserved = true;
        let rc = cu!(self.d, cuMemMap(b.ptr, n, 0, b.handle, 0));
        if !self.step(fam, "map", n, rc) {
            return;
        }
        b.mapped = true;
        let acc = CUmemAccessDesc {
            location: CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: self.dev },
            flags: CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        let rc = cu!(self.d, cuMemSetAccess(b.ptr, n, &acc, 1));
        b.live = self.step(fam, "set_access", n, rc);
    }

    fn copy_check(&mut self, fam: Family, b: &Block, seed: usize) {
        let win = b.bytes.min(COPY_WINDOW);
        let offsets: &[usize] = if b.bytes > win { &[0, b.bytes - win] } else { &[0] };
        let mut rc = CUresult::CUDA_SUCCESS;
        let mut matched = true;
        let mut buf = vec![0u8; win];
        for &off in offsets {
            for (i, x) in buf.iter_mut().enumerate() {
                *x = pattern_byte(off + i, seed);
            }
            rc = cu!(self.d, cuMemcpyHtoD(b.ptr + off as u64, buf.as_ptr().cast::<c_void>(), win));
            if !rc.is_success() {
                break;
            }
        }
        for &off in offsets {
            if !rc.is_success() {
                break;
            }
            buf.fill(0);
            rc = cu!(self.d, cuMemcpyDtoH(buf.as_mut_ptr().cast::<c_void>(), b.ptr + off as u64, win));
            matched &= rc.is_success() && buf.iter().enumerate().all(|(i, &x)| x == pattern_byte(off + i, seed));
        }
        matched &= rc.is_success();
        if !matched {
            self.failures += 1;
        }
        self.line(fam, "copy", win * offsets.len(), rc, &format!("match={}", u8::from(matched)));
    }

    fn free(&mut self, fam: Family, b: &mut Block) {
        if !b.live && !b.mapped && b.handle == 0 {
            return;
        }
        let rc = match fam {
            Family::Alloc => cu!(self.d, cuMemFree(b.ptr)),
            Family::Async => {
                let rc = cu!(self.d, cuMemFreeAsync(b.ptr, self.stream));
                if rc.is_success() { cu!(self.d, cuStreamSynchronize(self.stream)) } else { rc }
            }
            Family::Create => {
                if b.mapped {
                    let r = cu!(self.d, cuMemUnmap(b.ptr, b.bytes));
                    self.step(fam, "unmap", b.bytes, r);
                }
                let rc = cu!(self.d, cuMemRelease(b.handle));
                if b.reserved {
                    let r = cu!(self.d, cuMemAddressFree(b.ptr, b.bytes));
                    self.step(fam, "address_free", b.bytes, r);
                }
                rc
            }
        };
        if !rc.is_success() {
            self.failures += 1;
        }
        *b = Block { bytes: b.bytes, ..Block::default() };
        self.line(fam, "free", b.bytes, rc, "");
    }

    fn family(&mut self, fam: Family) {
        if fam == Family::Create && self.granularity == 0 {
            let prop = self.device_prop();
            let mut g = 0usize;
            let rc = cu!(
                self.d,
                cuMemGetAllocationGranularity(&mut g, &prop, CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM)
            );
            if !self.step(fam, "granularity", 0, rc) {
                return;
            }
            self.granularity = g.max(1);
        }
        let n = self.o.hold.unwrap_or(1);
        let mut blocks = Vec::with_capacity(n);
        let mut first_rc = CUresult::CUDA_SUCCESS;
        let (mut held, mut nheld) = (0usize, 0usize);
        for i in 0..n {
            let (rc, b) = self.alloc(fam);
            if rc.is_success() {
                held += b.bytes;
                nheld += 1;
                if self.o.copy && b.live && b.bytes > 0 {
                    self.copy_check(fam, &b, i + 1);
                }
            } else {
                self.failures += 1;
                if first_rc.is_success() {
                    first_rc = rc;
                }
            }
            blocks.push(b);
        }
        if self.o.hold.is_some() {
            self.line(fam, "hold", held, first_rc, &format!("blocks={nheld} requested={n}"));
        }
        if self.o.wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(self.o.wait));
        }
        for b in &mut blocks {
            self.free(fam, b);
        }
    }
}

fn main() {
    let o = parse_args();
    let (d, dev) = driver::start(o.path, o.ptsz, o.resolve_all, o.device);
    let fatal = |what: &str, rc: CUresult| d.check(what, rc);
    let mut stream: CUstream = core::ptr::null_mut();
    if o.created_stream {
        fatal("cuStreamCreate", cu!(d, cuStreamCreate(&mut stream, 0)));
    }

    let families = o.families.clone();
    let mut run = Run { d, o, dev, stream, granularity: 0, failures: 0 };
    for fam in families {
        run.family(fam);
    }
    if !run.stream.is_null() && !cu!(run.d, cuStreamDestroy(run.stream)).is_success() {
        run.failures += 1;
    }
    if !cu!(run.d, cuDevicePrimaryCtxRelease(dev)).is_success() {
        run.failures += 1;
    }
    println!("done failures={}", run.failures);
    std::process::exit(i32::from(run.failures != 0));
}
