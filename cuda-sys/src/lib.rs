//! Hand-written FFI declarations of the CUDA driver API and NVML subset that vgpu uses.
//!
//! This crate only *describes*: result codes, handles, structures, enum values and one
//! function-pointer type per entry point. It links nothing and decides nothing. Every item is
//! checked against NVIDIA's own `cuda.h` and `nvml.h` by `tests/conformance.rs`, which compiles a
//! C program against the real headers (installed from PyPI into a temporary directory) and
//! compares sizes, field offsets, constant values and signatures with the Rust side.
//!
//! C status codes and enums are `#[repr(transparent)]` integer newtypes with associated
//! constants, never Rust enums: a driver or application can hand over any value, and an
//! unknown discriminant in a Rust enum is undefined behaviour.
#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
#![deny(unsafe_code)]

pub mod driver;
pub mod nvml;

/// One declared C entry point, as the conformance test reads it.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// Exported symbol name.
    pub name: &'static str,
    /// Rust spelling of each parameter type, in order.
    pub params: &'static [&'static str],
    /// Rust spelling of the return type.
    pub ret: &'static str,
}

/// Declares function-pointer types in a `pfn` module and the matching [`Signature`] table.
macro_rules! entry_points {
    ($table:ident; $( $(#[$m:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; )* ) => {
        /// One function-pointer type per entry point, named exactly like the exported symbol.
        pub mod pfn {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$m])* #[doc = concat!("Pointer to `", stringify!($name), "`.")]
               pub type $name = unsafe extern "C" fn($($arg: $ty),*) -> $ret; )*
        }
        /// Every declared entry point with its parameter and return types.
        pub const $table: &[$crate::Signature] = &[
            $( $crate::Signature { name: stringify!($name), params: &[$(stringify!($ty)),*], ret: stringify!($ret) }, )*
        ];
    };
}
pub(crate) use entry_points;

/// Declares a `#[repr(transparent)]` integer newtype with named constants and a name lookup.
macro_rules! int_newtype {
    ($(#[$m:meta])* $name:ident($int:ty) { $( $(#[$cm:meta])* $c:ident = $v:expr ),* $(,)? }) => {
        $(#[$m])*
        #[repr(transparent)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $int);
        impl $name {
            $( $(#[$cm])* #[doc = concat!("`", stringify!($c), "`")] pub const $c: $name = $name($v); )*
            /// Every named value, as (C name, value), for lookups and the conformance test.
            pub const ALL: &'static [(&'static str, $name)] = &[ $( (stringify!($c), $name($v)) ),* ];
            /// The C name of this value, if it is one we declare.
            pub fn name(self) -> Option<&'static str> {
                let mut i = 0;
                while i < Self::ALL.len() {
                    if Self::ALL[i].1 .0 == self.0 { return Some(Self::ALL[i].0); }
                    i += 1;
                }
                None
            }
        }
    };
}
pub(crate) use int_newtype;
