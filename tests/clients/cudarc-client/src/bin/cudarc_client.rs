//! cudarc_client: a third-party Rust CUDA user, written the way cudarc's users write code.
//!
//! It never touches `cuda-sys` or raw driver calls: everything goes through cudarc 0.19's safe
//! API (`CudaContext`, `CudaStream`, `CudaSlice`, `CudaModule`, `LaunchConfig`), so the calls
//! the driver sees are exactly cudarc's (`dlopen("libcuda.so")` + `dlsym` per symbol;
//! `cuMemAllocAsync` when the device reports memory-pool support, `cuMemAlloc_v2` otherwise).
//!
//! Output: `client=cudarc op=<op> ...` lines, one per step:
//! `op=init pools=<0|1>`, `op=mem_get_info stage=<before|after_alloc|after_free> free= total=`,
//! `op=alloc bytes= ok=1`, `op=zeros ok=1`, `op=copy bytes= ok=1`, `op=module functions= ok=1`,
//! `op=launch kernel= kernels= grid= elapsed_us= counter= ok=1`, `op=free ok=1`, `op=done ok=1`.
//! A failing step prints `ok=0 err=<CUresult name>` and the program exits 1.
//!
//! Modes: `--alloc-too-much` asks for more than the device has and prints
//! `op=oom err=<CUresult name>` (exit 0 when that is `CUDA_ERROR_OUT_OF_MEMORY`);
//! `--hold-ms MS` allocates, prints `op=hold pid= bytes=`, sleeps and exits without the rest.
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

/// The example kernels: every one takes one `u64*` (a block counter, or 0).
const SPIN_PTX: &str = include_str!("../../../../../examples/ptx/spin.ptx");

/// Every kernel `SPIN_PTX` defines.
const KERNELS: &[&str] = &["spin_10us", "spin_50us", "spin_100us", "spin_200us", "spin_500us", "spin_1000us", "noop"];

const USAGE: &str = "usage: cudarc_client [--device I] [--alloc-mib N] [--kernels N] [--kernel NAME] [--grid BLOCKS]\n\
                     \x20                    [--hold-ms MS] [--alloc-too-much]";

const MIB: usize = 1 << 20;

struct Opts {
    device: usize,
    alloc_mib: usize,
    kernels: u32,
    kernel: String,
    grid: u32,
    hold_ms: Option<u64>,
    too_much: bool,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("cudarc_client: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts { device: 0, alloc_mib: 64, kernels: 3, kernel: "spin_100us".into(), grid: 1, hold_ms: None, too_much: false };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |what: &str| -> u64 {
            let v = args.next().unwrap_or_else(|| usage_exit(&format!("{flag} needs {what}")));
            v.parse().unwrap_or_else(|_| usage_exit(&format!("{flag} {v}: expected {what}")))
        };
        match flag.as_str() {
            "--device" => o.device = value("a device index") as usize,
            "--alloc-mib" => o.alloc_mib = value("a number of MiB") as usize,
            "--kernels" => o.kernels = value("a number of launches") as u32,
            "--grid" => o.grid = value("a number of blocks") as u32,
            "--hold-ms" => o.hold_ms = Some(value("milliseconds")),
            "--kernel" => {
                o.kernel = args.next().unwrap_or_else(|| usage_exit("--kernel needs a name"));
                if !KERNELS.contains(&o.kernel.as_str()) {
                    usage_exit(&format!("--kernel {}: expected one of {KERNELS:?}", o.kernel));
                }
            }
            "--alloc-too-much" => o.too_much = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => usage_exit(&format!("unknown argument {flag}")),
        }
    }
    if o.alloc_mib == 0 || o.grid == 0 {
        usage_exit("--alloc-mib and --grid must be positive");
    }
    o
}

/// A failed step: which one, and the driver's error.
struct Failure {
    op: &'static str,
    err: String,
}

/// Tags a driver error with the step it broke.
trait Step<T> {
    fn at(self, op: &'static str) -> Result<T, Failure>;
}

impl<T> Step<T> for Result<T, DriverError> {
    fn at(self, op: &'static str) -> Result<T, Failure> {
        self.map_err(|e| Failure { op, err: format!("{:?}", e.0) })
    }
}

fn fail(op: &'static str, err: impl Into<String>) -> Failure {
    Failure { op, err: err.into() }
}

fn mem_info(ctx: &Arc<CudaContext>, stage: &str) -> Result<(usize, usize), Failure> {
    let (free, total) = ctx.mem_get_info().at("mem_get_info")?;
    println!("client=cudarc op=mem_get_info stage={stage} free={free} total={total}");
    Ok((free, total))
}

/// Asks for more than the whole device; the error must come back as a `DriverError`.
fn alloc_too_much(stream: &Arc<CudaStream>, total: usize) -> Result<ExitCode, Failure> {
    let bytes = total + (1 << 30);
    match stream.alloc_zeros::<u8>(bytes) {
        Ok(_) => {
            println!("client=cudarc op=oom bytes={bytes} err=none");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            let name = format!("{:?}", e.0);
            println!("client=cudarc op=oom bytes={bytes} err={name}");
            let ok = name == "CUDA_ERROR_OUT_OF_MEMORY";
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn run(o: &Opts) -> Result<ExitCode, Failure> {
    let ctx = CudaContext::new(o.device).at("init")?;
    let pools = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED).at("init")?;
    println!("client=cudarc op=init device={} pools={pools} pid={}", o.device, std::process::id());
    let stream = ctx.default_stream();
    let (_, total) = mem_info(&ctx, "before")?;
    if o.too_much {
        return alloc_too_much(&stream, total);
    }

    let bytes = o.alloc_mib * MIB;
    let n = bytes / size_of::<f32>();
    let mut buf = stream.alloc_zeros::<f32>(n).at("alloc")?;
    stream.synchronize().at("alloc")?;
    println!("client=cudarc op=alloc bytes={bytes} ok=1");
    mem_info(&ctx, "after_alloc")?;

    if let Some(ms) = o.hold_ms {
        println!("client=cudarc op=hold pid={} bytes={bytes} ms={ms}", std::process::id());
        std::thread::sleep(Duration::from_millis(ms));
        drop(buf);
        stream.synchronize().at("free")?;
        println!("client=cudarc op=done ok=1");
        return Ok(ExitCode::SUCCESS);
    }

    // alloc_zeros went through cuMemsetD8Async: the block must read back as zeros.
    let zeros = stream.clone_dtoh(&buf).at("zeros")?;
    if zeros.iter().any(|&x| x != 0.0) {
        return Err(fail("zeros", "nonzero"));
    }
    println!("client=cudarc op=zeros bytes={bytes} ok=1");

    let host: Vec<f32> = (0..n).map(|i| (i % 1_000_003) as f32 * 0.5 + 1.0).collect();
    stream.memcpy_htod(&host, &mut buf).at("copy")?;
    let back = stream.clone_dtoh(&buf).at("copy")?;
    if let Some(i) = (0..n).find(|&i| back[i] != host[i]) {
        return Err(fail("copy", format!("mismatch_at_{i}")));
    }
    println!("client=cudarc op=copy bytes={bytes} ok=1");

    let module = ctx.load_module(Ptx::from_src(SPIN_PTX)).at("module")?;
    let mut functions = Vec::new();
    for name in KERNELS {
        functions.push((*name, module.load_function(name).at("module")?));
    }
    println!("client=cudarc op=module functions={} ok=1", functions.len());
    let func = &functions.iter().find(|(name, _)| *name == o.kernel).expect("checked in parse_args").1;

    let mut counter = stream.alloc_zeros::<u64>(1).at("launch")?;
    let cfg = LaunchConfig { grid_dim: (o.grid, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
    stream.synchronize().at("launch")?;
    let start = Instant::now();
    for _ in 0..o.kernels {
        let mut launch = stream.launch_builder(func);
        launch.arg(&mut counter);
        // SAFETY: every kernel of spin.ptx takes exactly one u64 pointer, and `counter` is a
        // live device allocation of one u64 that outlives the launch (we synchronize below).
        unsafe { launch.launch(cfg) }.at("launch")?;
    }
    stream.synchronize().at("launch")?;
    let elapsed_us = start.elapsed().as_micros();
    // On a real GPU thread 0 of every block adds 1; simgpu does not execute kernels (0).
    let blocks_done = stream.clone_dtoh(&counter).at("launch")?[0];
    println!(
        "client=cudarc op=launch kernel={} kernels={} grid={} elapsed_us={elapsed_us} counter={blocks_done} ok=1",
        o.kernel, o.kernels, o.grid
    );

    drop(counter);
    drop(buf);
    drop(functions);
    drop(module);
    stream.synchronize().at("free")?;
    println!("client=cudarc op=free bytes={bytes} ok=1");
    mem_info(&ctx, "after_free")?;
    println!("client=cudarc op=done ok=1");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let o = parse_args();
    match run(&o) {
        Ok(code) => code,
        Err(f) => {
            println!("client=cudarc op={} ok=0 err={}", f.op, f.err);
            ExitCode::FAILURE
        }
    }
}
