//! Lays simgpu's built libraries out under their SONAMEs and prints the directory to put on
//! `LD_LIBRARY_PATH`: `cargo build --workspace && cargo run -p simgpu --example layout`.
use std::path::PathBuf;

fn main() {
    // target/<profile>/examples/layout -> target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    let artifacts: PathBuf = exe.parent().and_then(|p| p.parent()).expect("target/<profile>/examples").to_path_buf();
    let out = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| artifacts.join("simgpu-lib"));
    match simgpu::layout::layout(&artifacts, &out) {
        Ok(dir) => println!("{}", dir.display()),
        Err(e) => {
            eprintln!("simgpu layout: {e}");
            std::process::exit(1);
        }
    }
}
