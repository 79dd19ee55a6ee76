//! nvml_client: a third-party NVML user, through nvml-wrapper 0.13 (as `vgpu ps`, Prometheus
//! exporters and schedulers' node agents read a GPU).
//!
//! `Nvml::init()` loads `libnvidia-ml.so.1` by name and resolves every function it knows. The
//! program then reads device `--device` (default 0) and prints `client=nvml op=<op> ...` lines:
//! `op=init devices= driver=`, `op=device index= name= uuid=` (spaces in the name become `_`),
//! `op=memory total= used= free= reserved=` (`nvmlDeviceGetMemoryInfo_v2`),
//! `op=process pid= used=` per running compute process then `op=processes count=`
//! (`nvmlDeviceGetComputeRunningProcesses_v3`), `op=utilization gpu= memory=`, `op=done ok=1`.
//! A failing call prints `op=<op> ok=0 err=<NvmlError>` and the program exits 1.
use std::process::ExitCode;

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

const USAGE: &str = "usage: nvml_client [--device I]";

/// Tags an NVML error with the step it broke.
fn at<T>(r: Result<T, NvmlError>, op: &'static str) -> Result<T, (&'static str, String)> {
    r.map_err(|e| (op, format!("{e:?}").replace(char::is_whitespace, "_")))
}

fn run(index: u32) -> Result<(), (&'static str, String)> {
    let nvml = at(Nvml::init(), "init")?;
    let count = at(nvml.device_count(), "init")?;
    let driver = at(nvml.sys_driver_version(), "init")?;
    println!("client=nvml op=init devices={count} driver={driver}");

    let dev = at(nvml.device_by_index(index), "device")?;
    let name = at(dev.name(), "device")?.replace(' ', "_");
    let uuid = at(dev.uuid(), "device")?;
    println!("client=nvml op=device index={index} name={name} uuid={uuid}");

    let m = at(dev.memory_info(), "memory")?;
    println!("client=nvml op=memory total={} used={} free={} reserved={}", m.total, m.used, m.free, m.reserved);

    let procs = at(dev.running_compute_processes(), "processes")?;
    for p in &procs {
        let used = match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => b.to_string(),
            UsedGpuMemory::Unavailable => "unavailable".into(),
        };
        println!("client=nvml op=process pid={} used={used}", p.pid);
    }
    println!("client=nvml op=processes count={}", procs.len());

    let u = at(dev.utilization_rates(), "utilization")?;
    println!("client=nvml op=utilization gpu={} memory={}", u.gpu, u.memory);
    println!("client=nvml op=done ok=1");
    Ok(())
}

fn main() -> ExitCode {
    let mut index = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|v| v.parse::<u32>())) {
            ("--device", Some(Ok(i))) => index = i,
            _ => {
                eprintln!("nvml_client: bad arguments\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match run(index) {
        Ok(()) => ExitCode::SUCCESS,
        Err((op, err)) => {
            println!("client=nvml op={op} ok=0 err={err}");
            ExitCode::FAILURE
        }
    }
}
