//! The simulated machine's configuration, from `SIMGPU_*` variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SIMGPU_DEVICES` | number of devices, 1..=16 | 1 |
//! | `SIMGPU_MEMORY` | bytes per device, quota syntax (`16g`, `80Gi`) | `16g` |
//! | `SIMGPU_SMS` | SMs per device, 1..=1024 | 132 |
//! | `SIMGPU_STATE` | the machine's state file | `$XDG_RUNTIME_DIR/simgpu/<shape>` or `/tmp/simgpu-<uid>/<shape>` |
//! | `SIMGPU_CONTEXT_MEMORY` | device memory each context costs, as a real driver's context does | `64m` |
//! | `SIMGPU_MEMORY_POOLS` | `0` makes `CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED` report 0 | `1` |
//! | `SIMGPU_QUEUE_DEPTH` | launches a stream may have pending before a launch blocks | 1024 |
//!
//! The default state path names the machine's shape, so differently shaped machines never share
//! a file by accident.
use std::path::PathBuf;

use vgpu_limiter::size::{SIZE_SYNTAX, parse_size};

/// Most devices a simulated machine may have.
pub const MAX_DEVICES: u32 = 16;

/// A validated machine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of devices.
    pub devices: u32,
    /// Bytes of memory per device.
    pub memory: u64,
    /// SMs per device.
    pub sms: u32,
    /// The shared state file.
    pub state_path: PathBuf,
    /// Device memory charged per context.
    pub context_memory: u64,
    /// Whether devices report memory-pool support.
    pub memory_pools: bool,
    /// Pending launches per stream before a launch blocks.
    pub queue_depth: u32,
}

/// Reads the configuration from the process environment.
pub fn from_env() -> Result<SimConfig, String> {
    from_lookup(|k| std::env::var(k).ok())
}

/// Reads the configuration through `get` (the environment, or a map in tests).
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<SimConfig, String> {
    let int = |name: &str, default: u32, lo: u32, hi: u32| -> Result<u32, String> {
        match get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(format!("{name}={v:?}: expected a whole number from {lo} to {hi}")),
            },
        }
    };
    let size = |name: &str, default: u64| -> Result<u64, String> {
        match get(name) {
            None => Ok(default),
            Some(v) => parse_size(&v).map_err(|e| format!("{name}={v:?}: {e}; expected {SIZE_SYNTAX}")),
        }
    };
    let devices = int("SIMGPU_DEVICES", 1, 1, MAX_DEVICES)?;
    let memory = size("SIMGPU_MEMORY", 16 << 30)?;
    if memory == 0 {
        return Err("SIMGPU_MEMORY=0: a device needs some memory".into());
    }
    let sms = int("SIMGPU_SMS", 132, 1, 1024)?;
    let context_memory = size("SIMGPU_CONTEXT_MEMORY", 64 << 20)?;
    let memory_pools = int("SIMGPU_MEMORY_POOLS", 1, 0, 1)? == 1;
    let queue_depth = int("SIMGPU_QUEUE_DEPTH", 1024, 1, 1 << 20)?;
    let state_path = match get("SIMGPU_STATE") {
        Some(p) if p.trim().is_empty() => {
            return Err("SIMGPU_STATE is empty: expected a file path".into());
        }
        Some(p) => PathBuf::from(p),
        None => default_state_dir(&get).join(format!("machine-{devices}x{memory}-{sms}sm")),
    };
    Ok(SimConfig { devices, memory, sms, state_path, context_memory, memory_pools, queue_depth })
}

fn default_state_dir(get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    match get("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("simgpu"),
        // SAFETY: getuid cannot fail.
        _ => PathBuf::from(format!("/tmp/simgpu-{}", unsafe { libc::getuid() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<SimConfig, String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let c = cfg(&[("XDG_RUNTIME_DIR", "/run/u")]).unwrap();
        assert_eq!((c.devices, c.memory, c.sms), (1, 16 << 30, 132));
        assert_eq!(c.state_path, PathBuf::from(format!("/run/u/simgpu/machine-1x{}-132sm", 16u64 << 30)));
        let c = cfg(&[("SIMGPU_DEVICES", "2"), ("SIMGPU_MEMORY", "4Gi"), ("SIMGPU_SMS", "8"), ("SIMGPU_STATE", "/x")]).unwrap();
        assert_eq!((c.devices, c.memory, c.sms), (2, 4 << 30, 8));
        assert_eq!(c.state_path, PathBuf::from("/x"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("SIMGPU_DEVICES", "0"),
            ("SIMGPU_DEVICES", "17"),
            ("SIMGPU_MEMORY", "lots"),
            ("SIMGPU_SMS", "-1"),
            ("SIMGPU_MEMORY", "0"),
            ("SIMGPU_STATE", ""),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert!(e.contains(k), "{e}");
        }
    }
}
