//! launch_rs: the essential subset of `examples/c/launch.c` in Rust.
//!
//! Launches a kernel of `examples/ptx/spin.ptx` in mode `open` (back to back, one sync),
//! `sync` (sync after each) or `graph` (capture `--graph-kernels` launches, launch the graph
//! `--count` times), times the run with events and prints the same line as the C program:
//! `mode=<m> kernels=<n> wall_ms=<host> gpu_ms=<events> rc=<first error or 0> kernel=...`.
#![deny(unsafe_code)]
use core::ffi::{c_uint, c_void};
use std::ffi::CString;
use std::time::{Duration, Instant};

use cuda_sys::driver::*;
use vgpu_examples::driver::{self, Path};
use vgpu_examples::{Args, SPIN_KERNELS, SPIN_PTX, cu};

const USAGE: &str = "usage: launch_rs [--mode open|sync|graph] [--count N] [--graph-kernels N] [--kernel NAME]\n\
                     \x20                [--grid N] [--block N] [--duration S] [--stream default|created]\n\
                     \x20                [--path dlopen|gpa] [--ptsz] [--device I] [--resolve-all]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Sync,
    Graph,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::Sync => "sync",
            Mode::Graph => "graph",
        }
    }
}

struct Opts {
    mode: Mode,
    count: u64,
    graph_kernels: u32,
    kernel: String,
    grid: c_uint,
    block: c_uint,
    duration: Option<Duration>,
    created_stream: bool,
    path: Path,
    ptsz: bool,
    device: i32,
    resolve_all: bool,
}

fn parse_args() -> Opts {
    let mut a = Args::from_env(USAGE);
    let mut o = Opts {
        mode: Mode::Open,
        count: 100,
        graph_kernels: 10,
        kernel: "spin_100us".into(),
        grid: 1,
        block: 32,
        duration: None,
        created_stream: true,
        path: Path::Dlopen,
        ptsz: false,
        device: 0,
        resolve_all: false,
    };
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--mode" => {
                o.mode = match a.value(&flag).as_str() {
                    "open" => Mode::Open,
                    "sync" => Mode::Sync,
                    "graph" => Mode::Graph,
                    m => a.fail(&format!("unknown mode {m} (open|sync|graph)")),
                }
            }
            "--count" => o.count = a.positive(&flag),
            "--graph-kernels" => o.graph_kernels = a.positive(&flag),
            "--kernel" => o.kernel = a.value(&flag),
            "--grid" => o.grid = a.positive(&flag),
            "--block" => o.block = a.positive(&flag),
            "--duration" => {
                let s: f64 = a.positive(&flag);
                o.duration = Some(Duration::from_secs_f64(s));
            }
            "--stream" => {
                o.created_stream = match a.value(&flag).as_str() {
                    "default" => false,
                    "created" => true,
                    _ => a.fail("--stream default|created"),
                }
            }
            "--path" => {
                let v = a.value(&flag);
                o.path = Path::parse(&v).unwrap_or_else(|| a.fail(&format!("unknown path {v} (dlopen|gpa)")));
            }
            "--ptsz" => o.ptsz = true,
            "--device" => o.device = a.parsed(&flag),
            "--resolve-all" => o.resolve_all = true,
            _ => a.fail(&format!("unknown argument {flag}; kernels: {}", SPIN_KERNELS.join(" "))),
        }
    }
    o
}

fn main() {
    let o = parse_args();
    let (d, dev) = driver::start(o.path, o.ptsz, o.resolve_all, o.device);
    let fatal = |what: &str, rc: CUresult| d.check(what, rc);
    let mut sms = 0;
    fatal(
        "cuDeviceGetAttribute",
        cu!(d, cuDeviceGetAttribute(&mut sms, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)),
    );

    let mut module: CUmodule = core::ptr::null_mut();
    fatal("cuModuleLoadData", cu!(d, cuModuleLoadData(&mut module, SPIN_PTX.as_ptr().cast::<c_void>())));
    let kname = CString::new(o.kernel.clone()).unwrap_or_else(|_| {
        eprintln!("error: kernel name contains NUL");
        std::process::exit(2)
    });
    let mut func: CUfunction = core::ptr::null_mut();
    fatal("cuModuleGetFunction", cu!(d, cuModuleGetFunction(&mut func, module, kname.as_ptr())));

    let mut counter: CUdeviceptr = 0;
    fatal("cuMemAlloc_v2", cu!(d, cuMemAlloc(&mut counter, 8)));
    fatal("cuMemsetD8_v2", cu!(d, cuMemsetD8(counter, 0, 8)));
    // A memset of device memory may return before it is done, and under --ptsz it runs on the
    // per-thread stream, which does not order with a created stream: wait for it.
    fatal("cuStreamSynchronize", cu!(d, cuStreamSynchronize(core::ptr::null_mut())));

    let mut stream: CUstream = core::ptr::null_mut();
    if o.created_stream {
        fatal("cuStreamCreate", cu!(d, cuStreamCreate(&mut stream, 0)));
    }
    let (mut ev_start, mut ev_stop): (CUevent, CUevent) = (core::ptr::null_mut(), core::ptr::null_mut());
    fatal("cuEventCreate", cu!(d, cuEventCreate(&mut ev_start, 0)));
    fatal("cuEventCreate", cu!(d, cuEventCreate(&mut ev_stop, 0)));

    let mut first = CUresult::CUDA_SUCCESS;
    let mut note = |rc: CUresult| {
        if !rc.is_success() && first.is_success() {
            first = rc;
        }
        rc
    };
    let mut counter_arg = counter;
    let mut params = [(&raw mut counter_arg).cast::<c_void>()];
    let launch = |s: CUstream, params: &mut [*mut c_void; 1]| {
        cu!(d, cuLaunchKernel(func, o.grid, 1, 1, o.block, 1, 1, 0, s, params.as_mut_ptr(), core::ptr::null_mut()))
    };

    // Graph mode: capture once before the timed run, on a created stream (the legacy default
    // stream cannot be captured); the graph is then launched on `stream`.
    let mut graph: CUgraph = core::ptr::null_mut();
    let mut exec: CUgraphExec = core::ptr::null_mut();
    if o.mode == Mode::Graph {
        let mut cs = stream;
        if cs.is_null() {
            fatal("cuStreamCreate", cu!(d, cuStreamCreate(&mut cs, CU_STREAM_NON_BLOCKING)));
        }
        let rc = note(cu!(d, cuStreamBeginCapture(cs, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)));
        if rc.is_success() {
            for _ in 0..o.graph_kernels {
                if !note(launch(cs, &mut params)).is_success() {
                    break;
                }
            }
            note(cu!(d, cuStreamEndCapture(cs, &mut graph)));
        }
        if rc.is_success() && !graph.is_null() {
            note(cu!(d, cuGraphInstantiateWithFlags(&mut exec, graph, 0)));
        }
        if cs != stream {
            note(cu!(d, cuStreamDestroy(cs)));
        }
    }

    let mut kernels: u64 = 0;
    let t0 = Instant::now();
    let mut ok = note(cu!(d, cuEventRecord(ev_start, stream))).is_success() && exec_ready(o.mode, exec);
    let mut it: u64 = 0;
    while ok {
        let more = match o.duration {
            Some(dur) => t0.elapsed() < dur,
            None => it < o.count,
        };
        if !more {
            break;
        }
        it += 1;
        let rc = match o.mode {
            Mode::Graph => {
                let rc = cu!(d, cuGraphLaunch(exec, stream));
                if rc.is_success() {
                    kernels += u64::from(o.graph_kernels);
                }
                rc
            }
            Mode::Open | Mode::Sync => {
                let mut rc = launch(stream, &mut params);
                if rc.is_success() {
                    kernels += 1;
                    if o.mode == Mode::Sync {
                        rc = cu!(d, cuStreamSynchronize(stream));
                    }
                }
                rc
            }
        };
        ok = note(rc).is_success();
    }
    let rec = note(cu!(d, cuEventRecord(ev_stop, stream)));
    note(cu!(d, cuStreamSynchronize(stream)));
    if rec.is_success() {
        note(cu!(d, cuEventSynchronize(ev_stop)));
    }
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut gpu_ms: f32 = -1.0;
    if !rec.is_success() || !cu!(d, cuEventElapsedTime(&mut gpu_ms, ev_start, ev_stop)).is_success() {
        gpu_ms = -1.0;
    }
    let mut done: u64 = 0;
    note(cu!(d, cuMemcpyDtoH((&raw mut done).cast::<c_void>(), counter, 8)));
    let first = first;

    println!(
        "mode={} kernels={kernels} wall_ms={wall_ms:.3} gpu_ms={gpu_ms:.3} rc={} kernel={} grid={} block={} stream={} \
         sms={sms} counter={done} blocks={}",
        o.mode.name(),
        first.0,
        o.kernel,
        o.grid,
        o.block,
        if o.created_stream { "created" } else { "default" },
        kernels * u64::from(o.grid)
    );
    if !first.is_success() {
        eprintln!("error: first failure rc={} ({})", first.0, d.err_name(first));
    }

    // Teardown: failures here are reported by the driver calls' own rc only.
    if !exec.is_null() {
        cu!(d, cuGraphExecDestroy(exec));
    }
    if !graph.is_null() {
        cu!(d, cuGraphDestroy(graph));
    }
    cu!(d, cuEventDestroy(ev_start));
    cu!(d, cuEventDestroy(ev_stop));
    if !stream.is_null() {
        cu!(d, cuStreamDestroy(stream));
    }
    cu!(d, cuMemFree(counter));
    cu!(d, cuModuleUnload(module));
    cu!(d, cuDevicePrimaryCtxRelease(dev));
    std::process::exit(i32::from(!first.is_success()));
}

/// Graph mode needs an instantiated graph before the timed loop.
fn exec_ready(mode: Mode, exec: CUgraphExec) -> bool {
    mode != Mode::Graph || !exec.is_null()
}
