//! Where vgpu's files are: `libvgpu.so` and simgpu's libraries ship beside the `vgpu` binary
//! (in a build: `target/<profile>/`; in a release tarball: its `lib/` or the same directory).
use std::path::{Path, PathBuf};

/// The directory of the running `vgpu` binary.
pub fn exe_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."))
}

/// Candidate directories for shipped libraries: beside the binary, then `../lib`.
fn lib_dirs() -> Vec<PathBuf> {
    let dir = exe_dir();
    vec![dir.clone(), dir.join("../lib")]
}

/// `libvgpu.so`, or a one-line reason it cannot be found.
pub fn shim() -> Result<PathBuf, String> {
    lib_dirs()
        .into_iter()
        .map(|d| d.join("libvgpu.so"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("libvgpu.so is not beside {} (build it: cargo build --workspace)", exe_dir().display()))
}

/// The directory holding simgpu's `libcuda.so.1` and `libnvidia-ml.so.1` under their SONAMEs,
/// laid out from the build artifacts if needed.
pub fn simgpu_lib() -> Result<PathBuf, String> {
    for d in lib_dirs() {
        let laid = d.join("simgpu-lib");
        if laid.join("libcuda.so.1").is_file() && d.join("libcuda.so").is_file() {
            // A build directory: refresh the layout so it matches the current build.
            return simgpu::layout::layout(&d, &laid).map_err(|e| format!("laying out simgpu: {e}"));
        }
        if laid.join("libcuda.so.1").is_file() {
            return Ok(laid);
        }
        if d.join("libcuda.so").is_file() && d.join("libnvidia_ml.so").is_file() {
            return simgpu::layout::layout(&d, &laid).map_err(|e| format!("laying out simgpu: {e}"));
        }
    }
    Err(format!("simgpu's libraries are not beside {} (build them: cargo build --workspace)", exe_dir().display()))
}

/// A per-user runtime directory for regions and simulated machines.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("vgpu"),
        _ => std::env::temp_dir().join(format!("vgpu-{}", whoami())),
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "user".into())
}
