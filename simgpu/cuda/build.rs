//! Links libcuda.so with the driver's SONAME, and with -Bsymbolic so that the pointers this
//! library hands out (cuGetProcAddress) are its own even when a shim is preloaded: otherwise
//! a missing hook in the shim would be masked by the shim's own symbol.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    println!("cargo:rerun-if-changed=build.rs");
}
