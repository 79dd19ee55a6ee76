//! Lays the built simgpu libraries out under their SONAMEs.
//!
//! Cargo names the artifacts `libcuda.so` and `libnvidia_ml.so`. Programs need `libcuda.so.1`
//! (the SONAME, what `dlopen` and the dynamic loader ask for) and `libcuda.so` (what `-lcuda`
//! and cudarc's first candidate ask for) side by side in one directory that `LD_LIBRARY_PATH`
//! names. Never point `LD_LIBRARY_PATH` at cargo's own output directory: its `libcuda.so` would
//! shadow a real driver.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// (cargo artifact, SONAME, development symlink) for each library simgpu builds.
pub const LIBRARIES: &[(&str, &str, &str)] =
    &[("libcuda.so", "libcuda.so.1", "libcuda.so"), ("libnvidia_ml.so", "libnvidia-ml.so.1", "libnvidia-ml.so")];

/// Copies the libraries from `artifacts` (e.g. `target/debug`) into `out` under their SONAMEs,
/// with the development symlinks. Each file is replaced atomically, so a process that is
/// loading the old one is not disturbed. Returns `out`.
pub fn layout(artifacts: &Path, out: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(out)?;
    for (artifact, soname, devname) in LIBRARIES {
        let src = artifacts.join(artifact);
        if !src.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing: build the workspace first (cargo build --workspace)", src.display()),
            ));
        }
        let tmp = out.join(format!(".{soname}.{}", std::process::id()));
        fs::copy(&src, &tmp)?;
        fs::rename(&tmp, out.join(soname))?;
        let link = out.join(devname);
        let tmp_link = out.join(format!(".{devname}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(soname, &tmp_link)?;
        fs::rename(&tmp_link, &link)?;
    }
    Ok(out.to_path_buf())
}
