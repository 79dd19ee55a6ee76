//! Gives libvgpu.so its SONAME. No version script and no -Bsymbolic: rustc already exports
//! exactly the `#[no_mangle]` symbols, unversioned, which is what interposition needs.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvgpu.so");
    println!("cargo:rerun-if-changed=build.rs");
}
