//! `vgpu smi`: what NVML reports, device by device (through nvml-wrapper).
use std::path::PathBuf;

use clap::Args;
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;

use crate::paths;
use crate::tenant::human;

/// Arguments of `vgpu smi`.
#[derive(Args, Debug, Clone)]
pub struct SmiArgs {
    /// Ask simgpu's NVML (the simulated machine named by SIMGPU_STATE) instead of the real one.
    #[arg(long)]
    pub sim: bool,
}

/// NVML: the real library, or simgpu's with `sim`.
pub fn nvml(sim: bool) -> Result<Nvml, String> {
    let init = if sim {
        let lib: PathBuf = paths::simgpu_lib()?.join("libnvidia-ml.so.1");
        Nvml::builder().lib_path(lib.as_os_str()).init()
    } else {
        Nvml::init()
    };
    init.map_err(|e| format!("NVML: {e}"))
}

/// The device table as text.
pub fn report(sim: bool) -> Result<String, String> {
    let nvml = nvml(sim)?;
    let mut out = String::new();
    let count = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
    for i in 0..count {
        let dev = nvml.device_by_index(i).map_err(|e| format!("NVML device {i}: {e}"))?;
        let name = dev.name().unwrap_or_else(|_| "?".into());
        let mem = dev.memory_info().map_err(|e| format!("NVML memory of device {i}: {e}"))?;
        let util = dev.utilization_rates().map(|u| format!("{}%", u.gpu)).unwrap_or_else(|_| "n/a".into());
        out += &format!(
            "GPU {i}: {name}\n  memory: {} used of {} ({} free), utilisation {util}\n",
            human(mem.used),
            human(mem.total),
            human(mem.free)
        );
        for p in dev.running_compute_processes().unwrap_or_default() {
            let used = match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => human(b),
                UsedGpuMemory::Unavailable => "n/a".into(),
            };
            out += &format!("  process {}: {used}\n", p.pid);
        }
    }
    Ok(out)
}

/// Runs `vgpu smi`.
pub fn smi(args: SmiArgs) -> i32 {
    match report(args.sim) {
        Ok(r) => {
            print!("{r}");
            0
        }
        Err(e) => {
            eprintln!("vgpu smi: {e}");
            1
        }
    }
}
