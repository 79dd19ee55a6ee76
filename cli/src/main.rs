//! `vgpu`: run programs under a VRAM quota and SM share, and see what the GPU is doing.
//!
//! * `vgpu run [--sim] [--memory SIZE | --memory IDX=SIZE,...] [--sm PCT] [--region PATH] -- CMD ARGS...`
//! * `vgpu demo [--sim]`: two tenants with different quotas on one GPU.
//! * `vgpu smi [--sim]`: devices, memory and processes as NVML reports them.
#![deny(unsafe_code)]

mod demo;
mod paths;
mod run;
mod smi;
mod tenant;

use clap::{Parser, Subcommand};

/// vgpu: share one GPU between tenants with a VRAM quota and an SM share each.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command with libvgpu.so preloaded and the given limits.
    Run(run::RunArgs),
    /// Two tenants with different quotas on one GPU (simulated unless a real one is present).
    Demo(demo::DemoArgs),
    /// Show devices, memory and processes as NVML reports them.
    Smi(smi::SmiArgs),
    /// One demo tenant (started by `vgpu demo`).
    #[command(hide = true)]
    Tenant(tenant::TenantArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Demo(a) => demo::demo(a),
        Command::Smi(a) => smi::smi(a),
        Command::Tenant(a) => tenant::tenant(a),
    };
    std::process::exit(code);
}
