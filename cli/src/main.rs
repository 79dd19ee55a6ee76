//! `vgpu`: run programs under a VRAM quota and SM share, and see what the GPU is doing.
//!
//! * `vgpu run [--sim] [--memory SIZE | --memory IDX=SIZE,...] [--sm PCT] [--region PATH] -- CMD ARGS...`
//! * `vgpu demo [--sim]`: two tenants with different quotas on one GPU.
//! * `vgpu smi [--sim]`: devices, memory and processes as NVML reports them.
//! * `vgpu ps [PATH...] [--dir DIR] [--json]`: quota, usage and processes of each region.
//! * `vgpu top [PATH...] [--dir DIR] [--interval SECS]`: the same, refreshed in place.
//! * `vgpu exporter --listen ADDR [PATH...] [--dir DIR] [--sim]`: Prometheus metrics.
#![deny(unsafe_code)]

mod demo;
mod exporter;
mod paths;
mod ps;
mod run;
mod smi;
mod supervise;
mod tenant;
mod top;

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
    /// Show each container's quota, usage and processes, read from accounting regions.
    Ps(ps::PsArgs),
    /// The `ps` view, refreshed in place until Ctrl-C.
    Top(top::TopArgs),
    /// Serve Prometheus metrics of the accounting regions and the devices over HTTP.
    Exporter(exporter::ExporterArgs),
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
        Command::Ps(a) => ps::ps(a),
        Command::Top(a) => top::top(a),
        Command::Exporter(a) => exporter::exporter(a),
        Command::Tenant(a) => tenant::tenant(a),
    };
    std::process::exit(code);
}
