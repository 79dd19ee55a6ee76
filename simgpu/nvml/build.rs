//! Links libnvidia_ml.so with NVML's SONAME, and with -Bsymbolic so that the library's own
//! references to its exports bind to itself even when a shim that exports the same names is
//! preloaded (as the real libnvidia-ml behaves).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    println!("cargo:rerun-if-changed=build.rs");
}
