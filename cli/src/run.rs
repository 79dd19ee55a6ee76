//! `vgpu run`: sets HAMi's contract variables and `LD_PRELOAD`, then runs the command as a
//! wrapper should (see `supervise`): signals forwarded, the command and everything it started
//! die with it, its exit status passed on, the region it made removed once no process uses it.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use clap::Args;
use vgpu_limiter::config;

use crate::paths;

/// Arguments of `vgpu run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run on simgpu, the simulated GPU, instead of the real driver.
    #[arg(long)]
    pub sim: bool,
    /// VRAM quota: one SIZE for every device (4g, 512Mi, 1073741824), or IDX=SIZE,... per device.
    #[arg(long, value_name = "SIZE|IDX=SIZE,...")]
    pub memory: Option<String>,
    /// SM share in percent, 1 to 100.
    #[arg(long, value_name = "PCT")]
    pub sm: Option<String>,
    /// Accounting region shared by the command's processes (default: a new one for this run).
    #[arg(long, value_name = "PATH")]
    pub region: Option<PathBuf>,
    /// Priority beside other containers on the device (HAMi's CUDA_TASK_PRIORITY): while a
    /// high-priority command has work in flight, low-priority ones' launches wait.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub priority: Option<PriorityArg>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `--priority`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityArg {
    /// `CUDA_TASK_PRIORITY=0`.
    High,
    /// `CUDA_TASK_PRIORITY=1` (the default of HAMi's contract).
    Low,
}

/// The contract's variables for these limits, validated exactly as the shim will read them.
pub fn limits_env(memory: Option<&str>, sm: Option<&str>, region: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    match memory {
        None => {}
        Some(m) if m.contains('=') => {
            for part in m.split(',') {
                let (idx, size) = part.split_once('=').ok_or_else(|| format!("--memory {m:?}: expected IDX=SIZE, got {part:?}"))?;
                let idx: usize = idx.trim().parse().map_err(|_| format!("--memory {m:?}: {idx:?} is not a device index"))?;
                if idx >= config::MAX_DEVICES {
                    return Err(format!("--memory {m:?}: device {idx} is beyond the {} devices vgpu accounts for", config::MAX_DEVICES));
                }
                env.push((format!("{}_{idx}", config::VAR_MEMORY_LIMIT), size.trim().to_string()));
            }
        }
        Some(m) => env.push((config::VAR_MEMORY_LIMIT.to_string(), m.trim().to_string())),
    }
    if let Some(s) = sm {
        match s.trim().parse::<u32>() {
            Ok(1..=100) => {}
            _ => return Err(format!("--sm {s:?}: expected a percentage from 1 to 100")),
        }
        env.push((config::VAR_SM_LIMIT.to_string(), s.trim().to_string()));
    }
    env.push((config::VAR_REGION_PATH.to_string(), region.display().to_string()));
    config::from_vars(env.clone()).map_err(|e| e.to_string())?;
    Ok(env)
}

/// Prepends `item` to a colon-separated path variable.
fn prepend(var: &str, item: &std::path::Path) -> OsString {
    let mut v = OsString::from(item);
    if let Some(old) = std::env::var_os(var).filter(|o| !o.is_empty()) {
        v.push(if var == "LD_PRELOAD" { " " } else { ":" });
        v.push(old);
    }
    v
}

/// The command line ready to run (for `vgpu run` and the demo).
pub fn command(args: &RunArgs) -> Result<(Command, Option<PathBuf>), String> {
    let shim = paths::shim()?;
    let (region, ours) = match &args.region {
        Some(r) => (std::path::absolute(r).map_err(|e| format!("--region {}: {e}", r.display()))?, None),
        None => {
            let dir = paths::runtime_dir();
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let r = dir.join(format!("run-{}.region", std::process::id()));
            (r.clone(), Some(r))
        }
    };
    let env = limits_env(args.memory.as_deref(), args.sm.as_deref(), &region)?;
    let (program, rest) = args.command.split_first().ok_or("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(p) = args.priority {
        cmd.env(config::VAR_TASK_PRIORITY, if p == PriorityArg::High { "0" } else { "1" });
    }
    cmd.env("LD_PRELOAD", prepend("LD_PRELOAD", &shim));
    if args.sim {
        cmd.env("LD_LIBRARY_PATH", prepend("LD_LIBRARY_PATH", &paths::simgpu_lib()?));
    }
    Ok((cmd, ours))
}

/// Removes the region this run made, and the creation lock the limiter keeps beside it,
/// unless a live process still uses it (the command left one running).
fn remove_if_unused(r: &std::path::Path) {
    if let Ok(o) = vgpu_limiter::region::Observer::open(r)
        && o.processes().iter().any(|p| p.alive)
    {
        eprintln!("vgpu run: {} is still in use by a process of the command; left in place", r.display());
        return;
    }
    if let Some(name) = r.file_name().map(|n| n.to_string_lossy().into_owned()) {
        let _ = std::fs::remove_file(r.with_file_name(format!(".{name}.lock")));
    }
    let _ = std::fs::remove_file(r);
}

/// Runs `vgpu run`; returns the command's exit code.
pub fn run(args: RunArgs) -> i32 {
    let (mut cmd, ours) = match command(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vgpu run: {e}");
            return 2;
        }
    };
    let code = crate::supervise::run(&mut cmd, || {
        if let Some(r) = &ours {
            remove_if_unused(r);
        }
    });
    match code {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vgpu run: cannot start {:?}: {e}", args.command[0]);
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limits_env;
    use std::path::Path;

    #[test]
    fn limits_become_the_contract() {
        let env = limits_env(Some("4g"), Some("30"), Path::new("/r")).unwrap();
        assert!(env.contains(&("CUDA_DEVICE_MEMORY_LIMIT".into(), "4g".into())));
        assert!(env.contains(&("CUDA_DEVICE_SM_LIMIT".into(), "30".into())));
        assert!(env.contains(&("CUDA_DEVICE_MEMORY_SHARED_CACHE".into(), "/r".into())));
        let env = limits_env(Some("0=1g, 1=2Gi"), None, Path::new("/r")).unwrap();
        assert!(env.contains(&("CUDA_DEVICE_MEMORY_LIMIT_1".into(), "2Gi".into())));
    }

    #[test]
    fn bad_limits_are_refused_before_anything_runs() {
        for (m, s) in [
            (Some("4x"), None),
            (Some("0=4g,x=1g"), None),
            (Some("99=1g"), None),
            (None, Some("120")),
            (None, Some("0")),
            (None, Some("30%")),
            (Some("-1g"), None),
        ] {
            assert!(limits_env(m, s, Path::new("/r")).is_err(), "{m:?} {s:?}");
        }
        assert!(limits_env(None, None, Path::new("relative")).is_err(), "the region path must be absolute");
    }
}
