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
//! | `SIMGPU_TIMESLICE` | time-slice the device between processes' contexts with this quantum (`2ms`, `500us`); `off`: one FIFO timeline | `2ms` |
//! | `SIMGPU_CONTEXT_SWITCH` | time lost per switch between contexts when time-slicing | `25us` |
//! | `SIMGPU_KERNEL_COSTS` | cost per wave of kernels whose names contain a text: `text=duration`, comma-separated (`add_one=200us,saxpy=1ms`); the first match wins, before the name's `_<N>us` suffix (for third-party kernels, whose names a compiler mangles) | none |
//! | `SIMGPU_NVML_PERIOD` | NVML's utilisation sample period, `1/6s` to `1s` (`167ms`, `500ms`, `1s`, `250000us`), or `ideal` | `1/6s` |
//!
//! NVIDIA documents the utilisation sample period as "between 1 second and 1/6 second depending
//! on the product being queried" (NVML API Reference, `nvmlUtilization_t`:
//! <https://docs.nvidia.com/deploy/nvml-api/structnvmlUtilization__t.html>), so those are the
//! bounds; the default is the shortest, as on current data-centre parts. `ideal` is not a
//! driver's behaviour: NVML then answers exactly for any window, at the instant of the call
//! (for experiments only).
//!
//! Where each default comes from, and how a device check is to measure it on a real GPU, is
//! `simgpu/CALIBRATION.md` (until a GPU has been lent: documentation or an assumption, each
//! row says which).
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
    /// NVML's utilisation sample period in nanoseconds; 0 for the `ideal` mode.
    pub nvml_period_ns: u64,
    /// Time-slicing between processes' contexts (`SIMGPU_TIMESLICE`, 2 ms by default); `None`
    /// (`off`): one FIFO timeline for every process.
    pub timeslice: Option<crate::timeslice::Params>,
    /// Cost per wave of kernels whose names contain a text (`SIMGPU_KERNEL_COSTS`), in order.
    pub kernel_costs: Vec<(String, u64)>,
}

/// Parses `SIMGPU_KERNEL_COSTS`: `text=duration` pairs, comma-separated.
pub fn parse_kernel_costs(v: &str) -> Result<Vec<(String, u64)>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (text, d) = p
                .split_once('=')
                .ok_or_else(|| format!("SIMGPU_KERNEL_COSTS={v:?}: {p:?} is not text=duration (such as add_one=200us)"))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("SIMGPU_KERNEL_COSTS={v:?}: {p:?} names no kernel text"));
            }
            Ok((text.to_string(), parse_duration("SIMGPU_KERNEL_COSTS", d, 1, 10_000_000_000)?))
        })
        .collect()
}

/// Parses a duration of `name`: a number with a unit `s`, `ms`, `us` or `ns`, from `lo` to `hi`
/// ns. Returns nanoseconds.
pub fn parse_duration(name: &str, v: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let t = v.trim();
    let bad = || format!("{name}={v:?}: expected a duration from {lo} ns to {hi} ns with a unit, such as `2ms`, `500us`, `25us`");
    let (num, unit_ns) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e9)
    } else {
        return Err(bad());
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    let ns = (x * unit_ns).round();
    if !ns.is_finite() || ns < lo as f64 || ns > hi as f64 {
        return Err(bad());
    }
    Ok(ns as u64)
}

/// Time lost switching the device from one process's context to another's, unless
/// `SIMGPU_CONTEXT_SWITCH` says otherwise. NVIDIA does not publish it; 25 µs is an assumption
/// of the order of saving and restoring a context's state.
pub const DEFAULT_SWITCH_NS: u64 = 25_000;
/// The time-slice quantum when `SIMGPU_TIMESLICE` is unset: 2 ms, the "short" timeslice as
/// Red Hat's GPU-sharing workshop gives it (NVIDIA publishes only the names).
pub const DEFAULT_QUANTUM_NS: u64 = 2_000_000;

/// The shortest utilisation sample period NVIDIA documents: 1/6 s, in nanoseconds.
pub const NVML_PERIOD_MIN_NS: u64 = 166_666_667;
/// The longest utilisation sample period NVIDIA documents: 1 s, in nanoseconds.
pub const NVML_PERIOD_MAX_NS: u64 = 1_000_000_000;

/// Parses `SIMGPU_NVML_PERIOD`: `ideal` (0), `1/6s`, or a number with a unit `s`, `ms` or `us`,
/// within NVIDIA's documented 1/6 s to 1 s. Returns nanoseconds.
pub fn parse_nvml_period(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let bad = || format!("SIMGPU_NVML_PERIOD={v:?}: expected `ideal` or a period from 1/6s to 1s, such as `167ms`, `500ms`, `1s`");
    if t.eq_ignore_ascii_case("ideal") {
        return Ok(0);
    }
    if t == "1/6s" {
        return Ok(NVML_PERIOD_MIN_NS);
    }
    // 167 ms is what people write for 1/6 s; anything rounding to it counts.
    let ns = parse_duration("SIMGPU_NVML_PERIOD", t, NVML_PERIOD_MIN_NS - 1_000_000, NVML_PERIOD_MAX_NS).map_err(|_| bad())?;
    Ok(ns.max(NVML_PERIOD_MIN_NS))
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
    let nvml_period_ns = get("SIMGPU_NVML_PERIOD").map_or(Ok(NVML_PERIOD_MIN_NS), |v| parse_nvml_period(&v))?;
    let timeslice = match get("SIMGPU_TIMESLICE") {
        Some(v) if v.trim() == "off" => None,
        v => Some(crate::timeslice::Params {
            quantum_ns: match v {
                None => DEFAULT_QUANTUM_NS,
                Some(v) => parse_duration("SIMGPU_TIMESLICE", &v, 10_000, 1_000_000_000)?,
            },
            switch_ns: match get("SIMGPU_CONTEXT_SWITCH") {
                None => DEFAULT_SWITCH_NS,
                Some(s) => parse_duration("SIMGPU_CONTEXT_SWITCH", &s, 0, 100_000_000)?,
            },
        }),
    };
    let kernel_costs = get("SIMGPU_KERNEL_COSTS").map_or(Ok(Vec::new()), |v| parse_kernel_costs(&v))?;
    let state_path = match get("SIMGPU_STATE") {
        Some(p) if p.trim().is_empty() => {
            return Err("SIMGPU_STATE is empty: expected a file path".into());
        }
        Some(p) => PathBuf::from(p),
        None => default_state_dir(&get).join(format!("machine-{devices}x{memory}-{sms}sm")),
    };
    Ok(SimConfig { devices, memory, sms, state_path, context_memory, memory_pools, queue_depth, nvml_period_ns, timeslice, kernel_costs })
}

#[allow(unsafe_code)]
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
    fn kernel_costs_are_read_in_order_or_refused_in_one_line() {
        assert_eq!(cfg(&[]).unwrap().kernel_costs, Vec::new());
        assert_eq!(
            cfg(&[("SIMGPU_KERNEL_COSTS", "add_one=200us, saxpy = 1ms,")]).unwrap().kernel_costs,
            vec![("add_one".to_string(), 200_000), ("saxpy".to_string(), 1_000_000)]
        );
        for v in ["add_one", "=5us", "add_one=5", "add_one=0us", "a=5us,b"] {
            let e = cfg(&[("SIMGPU_KERNEL_COSTS", v)]).unwrap_err();
            assert!(e.starts_with("SIMGPU_KERNEL_COSTS=") && !e.contains('\n'), "{v}: {e}");
        }
    }

    #[test]
    fn time_slicing_is_configured_or_refused_in_one_line() {
        use crate::timeslice::Params;
        assert_eq!(
            cfg(&[]).unwrap().timeslice,
            Some(Params { quantum_ns: DEFAULT_QUANTUM_NS, switch_ns: DEFAULT_SWITCH_NS }),
            "time-sliced by default, as a GPU without MPS"
        );
        assert_eq!(cfg(&[("SIMGPU_TIMESLICE", "off")]).unwrap().timeslice, None);
        assert_eq!(
            cfg(&[("SIMGPU_TIMESLICE", "2ms")]).unwrap().timeslice,
            Some(Params { quantum_ns: 2_000_000, switch_ns: DEFAULT_SWITCH_NS })
        );
        assert_eq!(
            cfg(&[("SIMGPU_TIMESLICE", "500us"), ("SIMGPU_CONTEXT_SWITCH", "0us")]).unwrap().timeslice,
            Some(Params { quantum_ns: 500_000, switch_ns: 0 })
        );
        for (k, v) in [("SIMGPU_TIMESLICE", "2"), ("SIMGPU_TIMESLICE", "1us"), ("SIMGPU_TIMESLICE", "5s"), ("SIMGPU_CONTEXT_SWITCH", "x")] {
            let e = cfg(&[("SIMGPU_TIMESLICE", "2ms"), (k, v)]).unwrap_err();
            assert!(e.contains(k) && !e.contains('\n'), "{k}={v}: {e}");
        }
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
    fn nvml_periods_are_bounded_by_nvidias_documentation() {
        assert_eq!(cfg(&[]).unwrap().nvml_period_ns, NVML_PERIOD_MIN_NS, "the default is 1/6 s");
        for (v, ns) in [
            ("1/6s", NVML_PERIOD_MIN_NS),
            ("167ms", 167_000_000),
            ("166ms", NVML_PERIOD_MIN_NS),
            ("0.5s", 500_000_000),
            (" 1s ", 1_000_000_000),
            ("250000us", 250_000_000),
            ("ideal", 0),
            ("IDEAL", 0),
        ] {
            assert_eq!(parse_nvml_period(v), Ok(ns), "{v}");
        }
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
            ("SIMGPU_NVML_PERIOD", "50ms"),
            ("SIMGPU_NVML_PERIOD", "2s"),
            ("SIMGPU_NVML_PERIOD", "fast"),
            ("SIMGPU_NVML_PERIOD", "ms"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert!(e.contains(k), "{e}");
        }
    }
}
