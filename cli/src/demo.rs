//! `vgpu demo`: two tenants with different quotas share one GPU. Each is an ordinary
//! driver-API program that allocates until refused; vgpu holds each to its quota and shows
//! each its own quota as the size of the GPU, while the device itself sees both.
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use clap::Args;

use crate::paths;
use crate::run::{self, RunArgs};

/// Arguments of `vgpu demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Use simgpu even if a real GPU is present.
    #[arg(long)]
    pub sim: bool,
}

/// A tenant: name, quota, allocation size.
const TENANTS: [(&str, &str, &str); 2] = [("tenant-a", "2g", "512m"), ("tenant-b", "5g", "512m")];
/// The simulated GPU's memory.
const SIM_MEMORY: &str = "8g";

fn real_gpu() -> bool {
    nvml_wrapper::Nvml::init().and_then(|n| n.device_count()).is_ok_and(|c| c > 0)
}

/// Starts a tenant under its quota; returns it once it has allocated all it could, with the
/// lines it printed.
fn start(sim: bool, machine: &std::path::Path, name: &str, quota: &str, chunk: &str) -> Result<(Child, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find vgpu itself: {e}"))?;
    let region = machine.parent().unwrap_or(machine).join(format!("{name}.region"));
    let args = RunArgs {
        sim,
        memory: Some(quota.into()),
        sm: None,
        region: Some(region),
        priority: None,
        command: vec![exe.into(), "tenant".into(), "--name".into(), name.into(), "--chunk".into(), chunk.into()],
    };
    let (mut cmd, _) = run::command(&args)?;
    if sim {
        cmd.env("SIMGPU_STATE", machine).env("SIMGPU_MEMORY", SIM_MEMORY);
    }
    // The tenant's stdout and stderr (where vgpu explains a refusal) in one stream, in order.
    let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let err_writer = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let child = cmd.stdin(Stdio::piped()).stdout(writer).stderr(err_writer).spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
    drop(cmd);
    let mut lines = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|e| format!("{name}: {e}"))?;
        println!("  {line}");
        let done = line.ends_with(": ready") || line.contains(": error:");
        lines.push(line);
        if done {
            break;
        }
    }
    Ok((child, lines))
}

fn body(args: &DemoArgs) -> Result<(), String> {
    let sim = args.sim || !real_gpu();
    let dir = paths::runtime_dir().join(format!("demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let machine = dir.join("machine");
    if sim {
        println!("vgpu demo on simgpu: one simulated GPU with {SIM_MEMORY} of memory, two tenants.");
    } else {
        println!("vgpu demo on the real GPU 0: two tenants.");
    }
    let mut children = Vec::new();
    let mut ok = true;
    for (name, quota, chunk) in TENANTS {
        println!("\n{name}: quota {quota}, allocating {chunk} at a time");
        let (child, lines) = start(sim, &machine, name, quota, chunk)?;
        ok &= lines.iter().any(|l| l.contains("REFUSED") && l.contains("CUDA_ERROR_OUT_OF_MEMORY"));
        children.push(child);
    }
    println!("\nThe GPU itself, as NVML reports it without vgpu (both tenants together):");
    match device_view(sim, &machine) {
        Ok(r) => print!("{}", r.lines().map(|l| format!("  {l}\n")).collect::<String>()),
        Err(e) => println!("  (cannot ask NVML: {e})"),
    }
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        println!("\nEach tenant was refused with CUDA_ERROR_OUT_OF_MEMORY at its own quota, and saw its quota as the GPU's size.");
        Ok(())
    } else {
        Err("a tenant was not stopped at its quota".into())
    }
}

/// `vgpu smi` in a child without the shim: the device's own view (on simgpu, of this
/// demo's machine, which the child finds through its environment).
fn device_view(sim: bool, machine: &std::path::Path) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("smi").env_remove("LD_PRELOAD");
    if sim {
        cmd.arg("--sim").env("SIMGPU_STATE", machine).env("SIMGPU_MEMORY", SIM_MEMORY);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `vgpu demo`.
pub fn demo(args: DemoArgs) -> i32 {
    match body(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vgpu demo: {e}");
            1
        }
    }
}
