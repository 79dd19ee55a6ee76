//! Puts load on a simulated machine without libcuda, to look at it through NVML.
//!
//! `cargo run -p simgpu-nvml --example sim_load -- <device> <MiB> <busy-percent> <seconds>`
//! registers this process on the machine `SIMGPU_*` names, holds one context and `<MiB>` of
//! memory on `<device>`, and keeps that device's timeline busy `<busy-percent>` of the time (in
//! 10 ms periods) for `<seconds>`. It prints `ready pid=<pid>` once the memory is held.

use std::io::Write;

use simgpu::machine::Machine;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("arguments are whole numbers")).collect();
    let [dev, mib, percent, seconds] = args[..] else {
        eprintln!("usage: sim_load <device> <MiB> <busy-percent> <seconds>");
        std::process::exit(2);
    };
    let cfg = simgpu::config::from_env().unwrap_or_else(|e| panic!("{e}"));
    let machine = Machine::open(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let dev = dev as u32;
    machine.context_created(dev);
    assert!(machine.charge(dev, mib << 20), "{mib} MiB do not fit on device {dev}");
    println!("ready pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    const PERIOD: u64 = 10_000_000;
    let end = simgpu::now_ns() + seconds * 1_000_000_000;
    let mut next = simgpu::now_ns();
    while next < end {
        if percent > 0 {
            machine.enqueue(dev, PERIOD * percent.min(100) / 100);
        }
        next += PERIOD;
        simgpu::sleep_until(next);
    }
    machine.uncharge(dev, mib << 20);
    machine.context_destroyed(dev);
}
