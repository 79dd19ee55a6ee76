//! Conformance of `cuda-sys` with NVIDIA's own `cuda.h` and `nvml.h`.
//!
//! `conformance_with_nvidia_headers` fetches the headers with `tools/nvidia-headers.sh` (PyPI
//! wheels, cached under the cargo target directory), writes a C program from the tables below,
//! compiles it against the headers, runs it, and compares every number it prints with the Rust
//! side: struct sizes, alignments, field offsets, field sizes and types, enum sizes, constant
//! values, type aliases and the full prototype of every entry point in `SIGNATURES`. Every
//! mismatch is listed; any mismatch fails the test. Without the headers (no network, no pip) or
//! without a C compiler it prints `SKIPPED: ...` and returns, unless `CI=true` and
//! `VGPU_REQUIRE_HEADERS=1`, where it fails instead.
//!
//! `every_declared_item_is_checked` needs no headers: it reads `cuda-sys/src/*.rs` and fails
//! when a `#[repr(C)]` struct, an `int_newtype!`, a top-level `pub const` or `pub type`, or an
//! opaque handle is declared there but missing from the tables here.
//!
//! Adding an item to cuda-sys: add it to the matching table below. The table entries are
//! checked by the Rust compiler too: a struct entry must name every field of the struct with its
//! exact Rust type, an alias entry its exact target, a constant entry its exact type.
#![allow(non_camel_case_types, non_snake_case)]

use core::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use cuda_sys::Signature;
use cuda_sys::driver::{self, *};
use cuda_sys::nvml::{self, *};

// ---------------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------------

/// A `#[repr(C)]` struct whose layout is checked field by field.
struct Struct {
    /// Rust name.
    rust: &'static str,
    /// C type name, or a C type expression for an anonymous member type.
    c: &'static str,
    size: usize,
    align: usize,
    fields: Vec<Field>,
}

struct Field {
    /// Rust name; the C name is the same without a trailing `_` (`type_` is C's `type`).
    rust: &'static str,
    offset: usize,
    size: usize,
    /// Rust spelling of the field's type (verified by the compiler, see `structs!`).
    ty: &'static str,
    /// The C type expected instead of the mapping of `ty`, where the two deliberately differ.
    c_override: Option<&'static str>,
}

impl Field {
    fn c_name(&self) -> &'static str {
        self.rust.strip_suffix('_').unwrap_or(self.rust)
    }
}

/// Builds the [`Struct`] table. Each entry is `module::Type [= "C type"] { field: Type, ... }`
/// and must list every field, in any order, with its exact Rust type: the struct pattern below
/// has no `..`, and the `fn(&T) -> &F` coercion only compiles when `F` is the field's type.
macro_rules! structs {
    ($( $m:ident :: $ty:ident $(= $c:literal)? {
        $( $field:ident : $fty:ty $(as $fc:literal)? ),* $(,)?
    } )*) => {
        vec![$({
            let _every_field_listed = |v: &$m::$ty| {
                let $m::$ty { $($field: _),* } = v;
            };
            Struct {
                rust: stringify!($ty),
                c: [$($c,)? stringify!($ty)][0],
                size: size_of::<$m::$ty>(),
                align: align_of::<$m::$ty>(),
                fields: vec![$({
                    let _field_type: fn(&$m::$ty) -> &$fty = |s| &s.$field;
                    Field {
                        rust: stringify!($field),
                        offset: offset_of!($m::$ty, $field),
                        size: size_of::<$fty>(),
                        ty: stringify!($fty),
                        c_override: [$(Some($fc),)? None][0],
                    }
                }),*],
            }
        }),*]
    };
}

fn structs() -> Vec<Struct> {
    structs! {
        driver::CUuuid { bytes: [c_char; 16] }
        // C: a union of many members with `char pad[64]`; Rust keeps the raw bytes as `u8` on
        // purpose (read through accessors). Same size; the union's alignment is checked.
        driver::CUlaunchAttributeValue { pad: [u8; 64] as "char[64]" }
        driver::CUlaunchAttribute {
            id: CUlaunchAttributeID,
            pad: [c_char; 4],
            value: CUlaunchAttributeValue,
        }
        driver::CUlaunchConfig {
            gridDimX: c_uint,
            gridDimY: c_uint,
            gridDimZ: c_uint,
            blockDimX: c_uint,
            blockDimY: c_uint,
            blockDimZ: c_uint,
            sharedMemBytes: c_uint,
            hStream: CUstream,
            attrs: *mut CUlaunchAttribute,
            numAttrs: c_uint,
        }
        driver::CUDA_ARRAY_DESCRIPTOR {
            Width: usize,
            Height: usize,
            Format: CUarray_format,
            NumChannels: c_uint,
        }
        driver::CUDA_ARRAY3D_DESCRIPTOR {
            Width: usize,
            Height: usize,
            Depth: usize,
            Format: CUarray_format,
            NumChannels: c_uint,
            Flags: c_uint,
        }
        driver::CUDA_ARRAY_DESCRIPTOR_v1 {
            Width: c_uint,
            Height: c_uint,
            Format: CUarray_format,
            NumChannels: c_uint,
        }
        driver::CUDA_ARRAY3D_DESCRIPTOR_v1 {
            Width: c_uint,
            Height: c_uint,
            Depth: c_uint,
            Format: CUarray_format,
            NumChannels: c_uint,
            Flags: c_uint,
        }
        driver::CUdevResource { type_: CUdevResourceType, _internal_padding: [u8; 92] as "unsigned char[92]", _oversize: [u8; 48] as "unsigned char[48]" }
        driver::CUmemLocation { type_: CUmemLocationType, id: c_int }
        // C declares `allocFlags` as a member of anonymous struct type: name it through the member.
        driver::CUmemAllocationProp_allocFlags = "__typeof__(((CUmemAllocationProp *)0)->allocFlags)" {
            compressionType: u8,
            gpuDirectRDMACapable: u8,
            usage: u16,
            reserved: [u8; 4],
        }
        driver::CUmemAllocationProp {
            type_: CUmemAllocationType,
            requestedHandleTypes: u32,
            location: CUmemLocation,
            win32HandleMetaData: *mut c_void,
            allocFlags: CUmemAllocationProp_allocFlags,
        }
        driver::CUmemAccessDesc { location: CUmemLocation, flags: CUmemAccess_flags }
        driver::CUmemPoolProps {
            allocType: CUmemAllocationType,
            handleTypes: u32,
            location: CUmemLocation,
            win32SecurityAttributes: *mut c_void,
            maxSize: usize,
            usage: u16,
            reserved: [u8; 54],
        }
        driver::CUDA_MEM_ALLOC_NODE_PARAMS {
            poolProps: CUmemPoolProps,
            accessDescs: *const CUmemAccessDesc,
            accessDescCount: usize,
            bytesize: usize,
            dptr: CUdeviceptr,
        }
        driver::CUgraphEdgeData { from_port: u8 as "unsigned char", to_port: u8 as "unsigned char", type_: u8 as "unsigned char", reserved: [u8; 5] as "unsigned char[5]" }
        driver::CUDA_GRAPH_INSTANTIATE_PARAMS {
            flags: u64,
            hUploadStream: CUstream,
            hErrNode_out: CUgraphNode,
            result_out: CUgraphInstantiateResult,
        }
        nvml::nvmlMemory_t { total: c_ulonglong, free: c_ulonglong, used: c_ulonglong }
        nvml::nvmlMemory_v2_t {
            version: c_uint,
            total: c_ulonglong,
            reserved: c_ulonglong,
            free: c_ulonglong,
            used: c_ulonglong,
        }
        nvml::nvmlUtilization_t { gpu: c_uint, memory: c_uint }
        nvml::nvmlProcessInfo_v1_t { pid: c_uint, usedGpuMemory: c_ulonglong }
        nvml::nvmlProcessInfo_t {
            pid: c_uint,
            usedGpuMemory: c_ulonglong,
            gpuInstanceId: c_uint,
            computeInstanceId: c_uint,
        }
        nvml::nvmlProcessUtilizationSample_t {
            pid: c_uint,
            timeStamp: c_ulonglong,
            smUtil: c_uint,
            memUtil: c_uint,
            encUtil: c_uint,
            decUtil: c_uint,
        }
        nvml::nvmlPciInfo_t {
            busIdLegacy: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE],
            domain: c_uint,
            bus: c_uint,
            device: c_uint,
            pciDeviceId: c_uint,
            pciSubSystemId: c_uint,
            busId: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE],
        }
    }
}

/// A `#[repr(C)]` struct with no fields on the Rust side: an incomplete type behind a handle
/// or pointer. Only its C name is checked (through the aliases and signatures that use it).
struct Opaque {
    rust: &'static str,
    c: &'static str,
}

macro_rules! opaques {
    ($( $m:ident :: $ty:ident = $c:literal ),* $(,)?) => {
        vec![$({
            let _exists: Option<&$m::$ty> = None;
            Opaque { rust: stringify!($ty), c: $c }
        }),*]
    };
}

fn opaques() -> Vec<Opaque> {
    opaques! {
        driver::CUctx_st = "struct CUctx_st",
        driver::CUmod_st = "struct CUmod_st",
        driver::CUfunc_st = "struct CUfunc_st",
        driver::CUstream_st = "struct CUstream_st",
        driver::CUevent_st = "struct CUevent_st",
        driver::CUarray_st = "struct CUarray_st",
        driver::CUmipmappedArray_st = "struct CUmipmappedArray_st",
        driver::CUmemPoolHandle_st = "struct CUmemPoolHandle_st",
        driver::CUgraph_st = "struct CUgraph_st",
        driver::CUgraphExec_st = "struct CUgraphExec_st",
        driver::CUgraphNode_st = "struct CUgraphNode_st",
        driver::CUlib_st = "struct CUlib_st",
        driver::CUlinkState_st = "struct CUlinkState_st",
        driver::CUkern_st = "struct CUkern_st",
        driver::CUgreenCtx_st = "struct CUgreenCtx_st",
        driver::CUdevResourceDesc_st = "struct CUdevResourceDesc_st",
        // Complete types in C that Rust only ever passes by pointer.
        driver::CUexecAffinityParam = "CUexecAffinityParam",
        driver::CUctxCreateParams = "CUctxCreateParams",
        nvml::nvmlDevice_st = "struct nvmlDevice_st",
    }
}

/// A `pub type` alias: the C typedef of the same name must be the C spelling of its target.
struct Alias {
    name: &'static str,
    target: &'static str,
}

macro_rules! aliases {
    ($( $m:ident :: $name:ident = $target:ty ),* $(,)?) => {
        vec![$({
            // Compiles only if the alias is exactly the target type.
            let _same_type: fn($m::$name) -> $target = |v| v;
            Alias { name: stringify!($name), target: stringify!($target) }
        }),*]
    };
}

fn aliases() -> Vec<Alias> {
    aliases! {
        driver::CUdevice = c_int,
        driver::CUdeviceptr = c_ulonglong,
        driver::CUdeviceptr_v1 = c_uint,
        driver::CUmemGenericAllocationHandle = c_ulonglong,
        driver::CUcontext = *mut CUctx_st,
        driver::CUmodule = *mut CUmod_st,
        driver::CUfunction = *mut CUfunc_st,
        driver::CUstream = *mut CUstream_st,
        driver::CUevent = *mut CUevent_st,
        driver::CUarray = *mut CUarray_st,
        driver::CUmipmappedArray = *mut CUmipmappedArray_st,
        driver::CUmemoryPool = *mut CUmemPoolHandle_st,
        driver::CUgraph = *mut CUgraph_st,
        driver::CUgraphExec = *mut CUgraphExec_st,
        driver::CUgraphNode = *mut CUgraphNode_st,
        driver::CUlibrary = *mut CUlib_st,
        driver::CUlinkState = *mut CUlinkState_st,
        driver::CUkernel = *mut CUkern_st,
        driver::CUgreenCtx = *mut CUgreenCtx_st,
        driver::CUdevResourceDesc = *mut CUdevResourceDesc_st,
        nvml::nvmlDevice_t = *mut nvmlDevice_st,
    }
}

/// An `int_newtype!`: its size and alignment must be the C enum's, and every constant in its
/// `ALL` table must have the C enumerator's value.
struct Newtype {
    name: &'static str,
    /// Rust spelling of the wrapped integer type.
    inner: &'static str,
    size: usize,
    align: usize,
    values: Vec<(&'static str, i128)>,
}

macro_rules! newtypes {
    ($( $m:ident :: $ty:ident ( $inner:ty ) ),* $(,)?) => {
        vec![$({
            let _inner_type: fn($m::$ty) -> $inner = |v| v.0;
            Newtype {
                name: stringify!($ty),
                inner: stringify!($inner),
                size: size_of::<$m::$ty>(),
                align: align_of::<$m::$ty>(),
                values: $m::$ty::ALL.iter().map(|&(n, v)| (n, v.0.to_i128())).collect(),
            }
        }),*]
    };
}

fn newtypes() -> Vec<Newtype> {
    newtypes! {
        driver::CUresult(u32),
        driver::CUdevice_attribute(c_int),
        driver::CUfunction_attribute(c_int),
        driver::CUarray_format(u32),
        driver::CUlaunchAttributeID(u32),
        driver::CUmemAllocationType(u32),
        driver::CUmemLocationType(u32),
        driver::CUmemAllocationGranularity_flags(u32),
        driver::CUmemAccess_flags(u32),
        driver::CUmemPool_attribute(u32),
        driver::CUstreamCaptureStatus(u32),
        driver::CUstreamCaptureMode(u32),
        driver::CUdriverProcAddressQueryResult(u32),
        driver::CUgraphMem_attribute(u32),
        driver::CUlimit(u32),
        driver::CUlibraryOption(u32),
        driver::CUdevResourceType(u32),
        driver::CUgraphInstantiateResult(u32),
        driver::CUdriverProcAddress_flags(u32),
        driver::CUjit_option(u32),
        driver::CUjitInputType(u32),
        nvml::nvmlReturn_t(u32),
    }
}

/// A plain `pub const`: the C macro's value, converted to the Rust constant's type.
struct Const {
    rust: &'static str,
    c: &'static str,
    ty: &'static str,
    value: i128,
}

/// Entries are `module::NAME: Type [= "C name"]`; the C name defaults to the Rust name.
macro_rules! consts {
    ($( $m:ident :: $name:ident : $ty:ty $(= $c:literal)? ),* $(,)?) => {
        vec![$({
            let value: $ty = $m::$name;
            Const {
                rust: stringify!($name),
                c: [$($c,)? stringify!($name)][0],
                ty: stringify!($ty),
                value: value.to_i128(),
            }
        }),*]
    };
}

fn consts() -> Vec<Const> {
    consts! {
        driver::CU_STREAM_LEGACY: CUstream,
        driver::CU_STREAM_PER_THREAD: CUstream,
        driver::CU_MEMHOSTALLOC_PORTABLE: c_uint,
        driver::CU_MEM_ATTACH_GLOBAL: c_uint,
        driver::CU_MEM_ATTACH_HOST: c_uint,
        driver::CU_CTX_SCHED_AUTO: c_uint,
        driver::CU_STREAM_NON_BLOCKING: c_uint,
        driver::CU_EVENT_DISABLE_TIMING: c_uint,
        driver::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH: c_ulonglong,
        driver::CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD: c_ulonglong,
        driver::CU_GREEN_CTX_DEFAULT_STREAM: c_uint,
        // C defines these as `((void*)N)`; Rust keeps the integer.
        driver::CU_LAUNCH_PARAM_END_AS_INT: usize = "CU_LAUNCH_PARAM_END",
        driver::CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT: usize = "CU_LAUNCH_PARAM_BUFFER_POINTER",
        driver::CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT: usize = "CU_LAUNCH_PARAM_BUFFER_SIZE",
        nvml::NVML_DEVICE_UUID_V2_BUFFER_SIZE: usize,
        nvml::NVML_DEVICE_NAME_V2_BUFFER_SIZE: usize,
        nvml::NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE: usize,
        nvml::NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE: usize,
        nvml::NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE: usize,
        // C: `(-1)`; assigned to a 64-bit field it is ULLONG_MAX, which is what Rust declares.
        nvml::NVML_VALUE_NOT_AVAILABLE: c_ulonglong,
        nvml::nvmlMemory_v2: c_uint,
    }
}

/// Every declared entry point of both modules.
fn signatures() -> impl Iterator<Item = &'static Signature> {
    driver::SIGNATURES.iter().chain(nvml::SIGNATURES)
}

/// Integer (or address) value of a constant, for comparison with what C prints.
trait ToI128 {
    fn to_i128(self) -> i128;
}

macro_rules! to_i128_lossless {
    ($($t:ty),*) => {$(
        impl ToI128 for $t {
            fn to_i128(self) -> i128 {
                i128::from(self)
            }
        }
    )*};
}
to_i128_lossless!(i8, u8, i16, u16, i32, u32, i64, u64);

impl ToI128 for usize {
    fn to_i128(self) -> i128 {
        i128::try_from(self).expect("usize fits in i128")
    }
}

impl<T> ToI128 for *mut T {
    fn to_i128(self) -> i128 {
        self.addr().to_i128()
    }
}

// ---------------------------------------------------------------------------------------------
// Rust type spellings -> C type names
// ---------------------------------------------------------------------------------------------

/// Maps the Rust spelling of a type (as `stringify!` writes it) to a C type name.
struct CTypes {
    /// Rust names that stand for a C type: newtypes, structs, opaque structs, aliases.
    named: BTreeMap<&'static str, &'static str>,
}

impl CTypes {
    fn new(structs: &[Struct], opaques: &[Opaque], aliases: &[Alias], newtypes: &[Newtype]) -> Self {
        let mut named = BTreeMap::new();
        named.extend(structs.iter().map(|s| (s.rust, s.c)));
        named.extend(opaques.iter().map(|o| (o.rust, o.c)));
        named.extend(aliases.iter().map(|a| (a.name, a.name)));
        named.extend(newtypes.iter().map(|n| (n.name, n.name)));
        Self { named }
    }

    /// The C spelling of a Rust type, or an error naming the spelling that has none.
    fn c(&self, rust: &str) -> Result<String, String> {
        let t = rust.trim();
        // Pointers: `*mut T` is `T*`, `*const T` is `T const*` (postfix `const` composes for
        // any depth: `*mut *const c_char` is `char const**`).
        if let Some(rest) = t.strip_prefix("*mut") {
            return Ok(format!("{}*", self.c(rest)?));
        }
        if let Some(rest) = t.strip_prefix("*const") {
            return Ok(format!("{} const*", self.c(rest)?));
        }
        // Arrays: `[T; N]` is `T[N]`, N a number or a constant C also defines.
        if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let (elem, len) = inner.rsplit_once(';').ok_or_else(|| format!("unsupported Rust type spelling `{rust}`"))?;
            let (elem, len) = (self.c(elem)?, len.trim());
            if !len.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("unsupported array length in `{rust}`"));
            }
            // `[[T; 2]; 3]` is `T[3][2]`: the outer dimension goes first.
            return Ok(match elem.find('[') {
                Some(i) => format!("{}[{len}]{}", &elem[..i], &elem[i..]),
                None => format!("{elem}[{len}]"),
            });
        }
        let name = t.rsplit("::").next().unwrap_or(t).trim();
        let base = match name {
            "()" => "void",
            "c_void" => "void",
            "c_char" => "char",
            "c_schar" => "signed char",
            "c_uchar" => "unsigned char",
            "c_short" => "short",
            "c_ushort" => "unsigned short",
            "c_int" => "int",
            "c_uint" => "unsigned int",
            "c_long" => "long",
            "c_ulong" => "unsigned long",
            "c_longlong" => "long long",
            "c_ulonglong" => "unsigned long long",
            "c_float" | "f32" => "float",
            "c_double" | "f64" => "double",
            "bool" => "_Bool",
            "i8" => "signed char",
            "u8" => "unsigned char",
            "i16" => "short",
            "u16" => "unsigned short",
            "i32" => "int",
            "u32" => "unsigned int",
            // The <stdint.h> types: `cuuint64_t` is `uint64_t`, which on LP64 is `unsigned long`,
            // a different C type from `unsigned long long` although the same size. Spell
            // `c_ulonglong` where the header says `unsigned long long`, `u64` for `cuuint64_t`.
            "i64" => "int64_t",
            "u64" => "uint64_t",
            "isize" => "ptrdiff_t",
            "usize" => "size_t",
            other => match self.named.get(other) {
                Some(c) => c,
                None => {
                    return Err(format!(
                        "no C spelling for the Rust type `{other}` (in `{t}`): add it to the \
                         type table in cuda-sys/tests/conformance.rs"
                    ));
                }
            },
        };
        Ok(base.to_owned())
    }

    /// The C type of a function pointer with these Rust parameter and return spellings.
    fn fn_ptr(&self, sig: &Signature) -> Result<String, String> {
        let params: Vec<String> = sig.params.iter().map(|p| self.c(p)).collect::<Result<_, _>>()?;
        let params = if params.is_empty() { "void".to_owned() } else { params.join(", ") };
        Ok(format!("{} (*)({params})", self.c(sig.ret)?))
    }
}

// ---------------------------------------------------------------------------------------------
// The C program
// ---------------------------------------------------------------------------------------------

/// One number the C program prints, and what the Rust side says it must be.
struct Check {
    category: &'static str,
    /// The item checked, or (for a type check) what a mismatch means.
    what: String,
    /// The value Rust expects; `None`: a type-compatibility check, which C answers 1 when it holds.
    expected: Option<i128>,
}

/// The C program being written, and the checks whose answers it prints.
#[derive(Default)]
struct Program {
    source: String,
    checks: Vec<Check>,
    /// Items that could not be turned into C (an unmapped Rust type spelling).
    errors: Vec<String>,
}

impl Program {
    /// Makes the program print the value of `c_expr`, which must equal `expected`.
    fn check_eq(&mut self, category: &'static str, what: String, c_expr: &str, expected: i128) {
        self.push(category, what, c_expr, Some(expected));
    }

    /// Makes the program print `c_expr`, a type-compatibility test that must be 1.
    fn check_true(&mut self, category: &'static str, what: String, c_expr: &str) {
        self.push(category, what, c_expr, None);
    }

    fn push(&mut self, category: &'static str, what: String, c_expr: &str, expected: Option<i128>) {
        // The key is the check's index: C prints `index value`.
        let key = self.checks.len();
        writeln!(self.source, "    EMIT(\"{key}\", {c_expr});").unwrap();
        self.checks.push(Check { category, what, expected });
    }

    /// Makes the program print `c_expr` under a name of its own, for information.
    fn print(&mut self, key: &str, c_expr: &str) {
        writeln!(self.source, "    EMIT(\"{key}\", {c_expr});").unwrap();
    }
}

/// The program's preamble: how the headers are included, and the printers.
const C_PREAMBLE: &str = r#"/* Generated by cuda-sys/tests/conformance.rs: do not edit. */

/* cuda.h declares each entry point under one name only, chosen by macros: by default
 * `cuMemAlloc` is `#define`d to `cuMemAlloc_v2` and the per-thread-stream variants
 * (`_ptsz`, `_ptds`) are not declared at all; with CUDA_API_PER_THREAD_DEFAULT_STREAM the plain
 * stream-ordered names disappear instead. __CUDA_API_VERSION_INTERNAL is the mode NVIDIA builds
 * its own driver in: every `_v2`, `_ptsz` and `_ptds` name is declared through those macros,
 * and at the end of the header the macros are #undef'd and the legacy unsuffixed names are
 * declared with their own (old) prototypes. So every exported symbol is a declared function
 * under its real name, and `&symbol` has its real prototype. (cudaTypedefs.h's PFN_* typedefs
 * would work as well, but are named by introducing version, e.g. PFN_cuMemAlloc_v3020, which the
 * Rust side does not know.) The program checks below that none of the names is still a macro. */
#define __CUDA_API_VERSION_INTERNAL 1
/* nvml.h likewise `#define`s `nvmlInit` to `nvmlInit_v2` and so on. With this documented switch
 * it does not, and declares the legacy names with their own prototypes instead: both the
 * versioned and the legacy symbols are then checked against their own prototypes, no #undef. */
#define NVML_NO_UNVERSIONED_FUNC_DEFS 1

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cuda.h>
#include <nvml.h>

#define VGPU_STR(x) #x
#define VGPU_XSTR(x) VGPU_STR(x)
/* 1 when `name` is not a macro, or a macro expanding to itself. */
#define VGPU_NOT_RENAMED(name) (strcmp(VGPU_XSTR(name), #name) == 0)

static void emit_s(const char *key, long long v) { printf("%s %lld\n", key, v); }
static void emit_u(const char *key, unsigned long long v) { printf("%s %llu\n", key, v); }
static void emit_c(const char *key, char v) {
    if (CHAR_MIN < 0) emit_s(key, v); else emit_u(key, (unsigned char)v);
}
static void emit_p(const char *key, const void *v) {
    printf("%s %llu\n", key, (unsigned long long)(uintptr_t)v);
}
/* Prints an integer (with its signedness) or a pointer's address. */
#define EMIT(key, x) _Generic((x), \
    char: emit_c, signed char: emit_s, short: emit_s, int: emit_s, long: emit_s, long long: emit_s, \
    _Bool: emit_u, unsigned char: emit_u, unsigned short: emit_u, unsigned int: emit_u, \
    unsigned long: emit_u, unsigned long long: emit_u, default: emit_p)(key, (x))
#define VGPU_SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)

int main(void) {
"#;

/// Writes the C program and the list of checks it answers.
fn generate() -> Result<Program, Vec<String>> {
    let (structs, opaques, aliases, newtypes, consts) = (structs(), opaques(), aliases(), newtypes(), consts());
    let types = CTypes::new(&structs, &opaques, &aliases, &newtypes);
    let mut p = Program { source: C_PREAMBLE.to_owned(), ..Program::default() };
    p.print("version.cuda", "CUDA_VERSION");
    p.print("version.nvml", "NVML_API_VERSION");

    for s in &structs {
        let (rust, ct) = (s.rust, s.c);
        let what = format!("size_of::<{rust}>()");
        p.check_eq("struct sizes", what, &format!("sizeof({ct})"), s.size as i128);
        let what = format!("align_of::<{rust}>()");
        p.check_eq("struct alignments", what, &format!("_Alignof({ct})"), s.align as i128);
        for f in &s.fields {
            let (fr, fc) = (f.rust, f.c_name());
            let member = format!("((({ct} *)0)->{fc})");
            let what = format!("offset_of!({rust}, {fr})");
            p.check_eq("field offsets", what, &format!("offsetof({ct}, {fc})"), f.offset as i128);
            let what = format!("size of {rust}.{fr} ({})", f.ty);
            p.check_eq("field sizes", what, &format!("sizeof{member}"), f.size as i128);
            let want = match f.c_override.map(str::to_owned).map_or_else(|| types.c(f.ty), Ok) {
                Ok(t) => t,
                Err(e) => {
                    p.errors.push(format!("{rust}.{fr}: {e}"));
                    continue;
                }
            };
            let what = format!("{rust}.{fr}: the header's type is not Rust `{}` (C `{want}`)", f.ty);
            p.check_true("field types", what, &format!("VGPU_SAME_TYPE(__typeof__{member}, {want})"));
        }
    }
    for o in &opaques {
        // Fails to compile if the C name does not exist (vacuous for a struct tag: the aliases
        // and signatures that use them are the real check).
        writeln!(p.source, "    (void)sizeof({} *); /* {} */", o.c, o.rust).unwrap();
    }
    for a in &aliases {
        match types.c(a.target) {
            Ok(t) => {
                let what = format!("typedef {}: the header's is not Rust `{}` (C `{t}`)", a.name, a.target);
                p.check_true("type aliases", what, &format!("VGPU_SAME_TYPE({}, {t})", a.name));
            }
            Err(e) => p.errors.push(format!("alias {}: {e}", a.name)),
        }
    }
    for n in &newtypes {
        let name = n.name;
        let what = format!("size_of::<{name}>()");
        p.check_eq("enum sizes", what, &format!("sizeof({name})"), n.size as i128);
        let what = format!("align_of::<{name}>()");
        p.check_eq("enum alignments", what, &format!("_Alignof({name})"), n.align as i128);
        match types.c(n.inner) {
            Ok(inner) => {
                for &(cname, value) in &n.values {
                    let what = format!("{name}::{cname}");
                    p.check_eq("constants", what, &format!("({inner})({cname})"), value);
                }
            }
            Err(e) => p.errors.push(format!("{name}: {e}")),
        }
    }
    for k in &consts {
        match types.c(k.ty) {
            Ok(t) => p.check_eq("constants", k.rust.to_owned(), &format!("({t})({})", k.c), k.value),
            Err(e) => p.errors.push(format!("const {}: {e}", k.rust)),
        }
    }
    for s in signatures() {
        let name = s.name;
        match types.fn_ptr(s) {
            Ok(fn_ptr) => {
                let rust = format!("fn({}) -> {}", s.params.join(", "), s.ret);
                let what = format!("{name}: the header's prototype is not Rust `{rust}` (C `{fn_ptr}`)");
                p.check_true("signatures", what, &format!("VGPU_SAME_TYPE(__typeof__(&{name}), {fn_ptr})"));
            }
            Err(e) => p.errors.push(format!("fn {name}: {e}")),
        }
        // Guards the check above against a header macro that renames the symbol (it would then
        // check another function's prototype); compared separately, not counted as an item.
        p.print(&format!("renamed.{name}"), &format!("!VGPU_NOT_RENAMED({name})"));
    }
    p.source.push_str("    return 0;\n}\n");
    if p.errors.is_empty() { Ok(p) } else { Err(p.errors) }
}

// ---------------------------------------------------------------------------------------------
// Headers, compiler, skipping
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cuda-sys sits in the workspace").to_owned()
}

/// Ends the test without checking, loudly; fails instead where CI insists on the check.
fn skip(reason: &str) {
    println!("SKIPPED: cuda.h/nvml.h not available: {reason}");
    let required = std::env::var("CI").as_deref() == Ok("true") && std::env::var("VGPU_REQUIRE_HEADERS").as_deref() == Ok("1");
    assert!(!required, "CI=true and VGPU_REQUIRE_HEADERS=1, but the conformance check could not run: {reason}");
}

/// Include directories of cuda.h and nvml.h, fetched (once) into the target directory.
fn nvidia_headers() -> Result<(PathBuf, PathBuf), String> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let cache = tmp.parent().unwrap_or(tmp).join("nvidia-headers");
    let script = workspace_root().join("tools/nvidia-headers.sh");
    let out = Command::new("bash").arg(&script).arg(&cache).output().map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(stderr.lines().last().unwrap_or("tools/nvidia-headers.sh failed").to_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines().map(PathBuf::from);
    match (lines.next(), lines.next()) {
        (Some(cuda), Some(nvml)) => Ok((cuda, nvml)),
        _ => Err(format!("tools/nvidia-headers.sh printed no include directories: {stdout:?}")),
    }
}

/// The C compiler: `$CC`, else `gcc` (the program uses GNU C builtins; clang has them too).
fn c_compiler() -> String {
    std::env::var("CC").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "gcc".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn conformance_with_nvidia_headers() {
    let (cuda_inc, nvml_inc) = match nvidia_headers() {
        Ok(dirs) => dirs,
        Err(reason) => return skip(&reason),
    };
    let cc = c_compiler();
    if let Err(e) = Command::new(&cc).arg("--version").output() {
        return skip(&format!("no C compiler to compile them with ({cc}: {e})"));
    }
    let program = generate().unwrap_or_else(|errors| panic!("cannot write the C program:\n  {}", errors.join("\n  ")));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda-sys-conformance-{}", std::process::id()));
    let printed = compile_and_run(&cc, &program.source, &dir, &[&cuda_inc, &nvml_inc]);

    let mut mismatches = Vec::new();
    // Counts per category, in the order the program checks them.
    let mut per_category: Vec<(&str, usize)> = Vec::new();
    for (index, check) in program.checks.iter().enumerate() {
        match per_category.iter_mut().find(|(category, _)| *category == check.category) {
            Some((_, n)) => *n += 1,
            None => per_category.push((check.category, 1)),
        }
        let what = &check.what;
        match (printed.get(&index.to_string()), check.expected) {
            (Some(1), None) => {}
            (Some(_), None) => mismatches.push(what.clone()),
            (Some(&got), Some(want)) if got == want => {}
            (Some(&got), Some(want)) => mismatches.push(format!("{what}: Rust {want} but C {got}")),
            (None, _) => mismatches.push(format!("{what}: the C program printed no check {index}")),
        }
    }
    for s in signatures() {
        if printed.get(&format!("renamed.{}", s.name)) != Some(&0) {
            mismatches.push(format!(
                "{}: still a macro after the headers (renamed to another symbol), so its prototype \
                 cannot be checked under its own name",
                s.name
            ));
        }
    }

    let cuda_version = printed.get("version.cuda").copied().unwrap_or_default();
    let nvml_version = printed.get("version.nvml").copied().unwrap_or_default();
    let breakdown: Vec<String> = per_category.iter().map(|(category, n)| format!("{n} {category}")).collect();
    println!(
        "cuda-sys conformance: checked {} items ({}) against cuda.h {}.{} (CUDA_VERSION \
         {cuda_version}) / nvml.h (NVML_API_VERSION {nvml_version}): {} mismatches",
        program.checks.len(),
        breakdown.join(", "),
        cuda_version / 1000,
        cuda_version % 1000 / 10,
        mismatches.len(),
    );
    assert!(
        mismatches.is_empty(),
        "cuda-sys disagrees with NVIDIA's headers in {} places (C program kept in {}):\n  {}",
        mismatches.len(),
        dir.display(),
        mismatches.join("\n  ")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Compiles `source` in `dir` against the include directories, runs it, and returns what it
/// printed (`key value` lines) as a map.
fn compile_and_run(cc: &str, source: &str, dir: &Path, includes: &[&Path]) -> BTreeMap<String, i128> {
    std::fs::create_dir_all(dir).unwrap();
    let (c_file, binary) = (dir.join("conformance.c"), dir.join("conformance"));
    std::fs::write(&c_file, source).unwrap();
    let mut gcc = Command::new(cc);
    gcc.args(["-std=gnu11", "-Wall", "-Werror", "-o"]).arg(&binary).arg(&c_file);
    for include in includes {
        gcc.arg("-I").arg(include);
    }
    let compiled = gcc.output().unwrap();
    assert!(
        compiled.status.success(),
        "the generated C program does not compile against the headers (a name the headers lack, \
         or a type the mapping got wrong); program kept at {}:\n{}",
        c_file.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&binary).output().unwrap();
    assert!(ran.status.success(), "{} failed: {ran:?}", binary.display());
    String::from_utf8(ran.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let parsed = line.split_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?)));
            parsed.unwrap_or_else(|| panic!("unexpected line from the C program: {line:?}"))
        })
        .collect()
}

/// Names of the items cuda-sys declares, read from its source text.
#[derive(Default, Debug)]
struct Declared {
    /// `#[repr(C)]` structs with fields.
    structs: BTreeSet<String>,
    /// `#[repr(C)]` structs whose only field is `_private: [u8; 0]`, and `opaque_handles!` targets.
    opaques: BTreeSet<String>,
    newtypes: BTreeSet<String>,
    consts: BTreeSet<String>,
    /// Top-level `pub type`s and `opaque_handles!` handles.
    aliases: BTreeSet<String>,
    /// `#[repr(C...)]` items that are not a `pub struct Name {` the scan can read.
    unreadable: Vec<String>,
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> String {
    s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// Index of the first line after `i` that is not an attribute or a doc comment.
fn next_item(lines: &[&str], i: usize) -> Option<usize> {
    (i + 1..lines.len()).find(|&j| {
        let l = lines[j].trim();
        !l.starts_with("#[") && !l.starts_with("///")
    })
}

/// Scans `cuda-sys/src/*.rs` line by line. It relies on the crate's (rustfmt) layout: items at
/// column 0, `int_newtype! {` / `opaque_handles! {` invocations opening on their own line.
fn declared_items() -> Declared {
    let mut d = Declared::default();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rs")).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim();
            if trimmed.starts_with("#[repr(C") {
                let at = next_item(&lines, i);
                let item = at.map_or("", |at| lines[at].trim());
                match item.strip_prefix("pub struct ") {
                    // A macro's template: its invocations are read below.
                    Some(name) if name.starts_with('$') => {}
                    Some(name) if item.ends_with('{') => {
                        let opaque = at.and_then(|at| lines.get(at + 1)).is_some_and(|l| l.trim().starts_with("_private: [u8; 0]"));
                        let set = if opaque { &mut d.opaques } else { &mut d.structs };
                        set.insert(ident(name));
                    }
                    _ => {
                        let name = file.file_name().unwrap().to_string_lossy();
                        d.unreadable.push(format!("src/{name}:{}: {item}", i + 1));
                    }
                }
            } else if trimmed.ends_with("int_newtype! {") {
                if let Some(at) = next_item(&lines, i) {
                    d.newtypes.insert(ident(lines[at]));
                }
            } else if trimmed.ends_with("opaque_handles! {") {
                let entries = lines[i + 1..].iter().take_while(|l| !l.trim().starts_with('}'));
                for (handle, st) in entries.filter_map(|l| l.split_once("=>")) {
                    d.aliases.insert(ident(handle));
                    d.opaques.insert(ident(st));
                }
            } else if let Some(rest) = line.strip_prefix("pub const ") {
                d.consts.insert(ident(rest));
            } else if let Some(rest) = line.strip_prefix("pub type ") {
                d.aliases.insert(ident(rest));
            }
        }
    }
    d
}

#[test]
fn every_declared_item_is_checked() {
    let declared = declared_items();
    let tabled = Declared {
        structs: structs().iter().map(|s| s.rust.to_owned()).collect(),
        opaques: opaques().iter().map(|o| o.rust.to_owned()).collect(),
        newtypes: newtypes().iter().map(|n| n.name.to_owned()).collect(),
        consts: consts().iter().map(|k| k.rust.to_owned()).collect(),
        aliases: aliases().iter().map(|a| a.name.to_owned()).collect(),
        unreadable: Vec::new(),
    };
    let mut problems: Vec<String> = declared
        .unreadable
        .iter()
        .map(|item| format!("{item}: a #[repr(C)] item the scan cannot read (not `pub struct Name {{`)"))
        .collect();
    let mut compare = |what: &str, declared: &BTreeSet<String>, tabled: &BTreeSet<String>| {
        for missing in declared.difference(tabled) {
            problems.push(format!(
                "{what} `{missing}` is declared in cuda-sys/src but not checked: add it to its \
                 table in tests/conformance.rs"
            ));
        }
        for stale in tabled.difference(declared) {
            problems.push(format!(
                "{what} `{stale}` is in a table of tests/conformance.rs but not declared in \
                 cuda-sys/src (as the scan reads it)"
            ));
        }
    };
    compare("#[repr(C)] struct", &declared.structs, &tabled.structs);
    compare("opaque #[repr(C)] struct", &declared.opaques, &tabled.opaques);
    compare("int_newtype!", &declared.newtypes, &tabled.newtypes);
    compare("pub const", &declared.consts, &tabled.consts);
    compare("pub type", &declared.aliases, &tabled.aliases);
    println!(
        "cuda-sys declares {} #[repr(C)] structs with fields and {} opaque ones; the conformance \
         tables hold {} and {}",
        declared.structs.len(),
        declared.opaques.len(),
        tabled.structs.len(),
        tabled.opaques.len()
    );
    assert!(problems.is_empty(), "conformance tables out of date:\n  {}", problems.join("\n  "));
}
