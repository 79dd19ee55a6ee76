//! `simgpud`: the simulated machine's PID service. Run it in the machine's host PID namespace
//! (before tenants start); processes in other namespaces learn their host PID from it, as the
//! kernel driver knows them (see `simgpu::pids`).
//!
//! Usage: `simgpud [--state PATH]`, with the `SIMGPU_*` variables libcuda reads. Prints
//! `ready <socket>` on stdout once it answers, then serves until killed.
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut state = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--state" => match args.next() {
                Some(p) => state = Some(p),
                None => return fail("--state needs a path"),
            },
            "-h" | "--help" => {
                println!("usage: simgpud [--state PATH]   (SIMGPU_DEVICES, SIMGPU_MEMORY, SIMGPU_SMS, SIMGPU_STATE as libcuda reads them)");
                return ExitCode::SUCCESS;
            }
            other => return fail(&format!("unknown argument {other:?} (usage: simgpud [--state PATH])")),
        }
    }
    let mut config = match simgpu::config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(p) = state {
        config.state_path = p.into();
    }
    let machine = match simgpu::machine::Machine::observe(&config) {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    machine.claim_namespace();
    let socket = simgpu::pids::socket_path(&config.state_path);
    let listener = match simgpu::pids::bind(&socket) {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen at {}: {e}", socket.display())),
    };
    println!("ready {}", socket.display());
    let _ = std::io::stdout().flush();
    match simgpu::pids::serve(&listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("accept on {}: {e}", socket.display())),
    }
}

fn fail(what: &str) -> ExitCode {
    eprintln!("simgpud: {what}");
    ExitCode::from(2)
}
