//! Shared parts of the Rust driver-API example programs (`alloc_rs`, `launch_rs`).
//!
//! The programs call the CUDA driver through a table of function pointers filled at run time
//! through one of two paths, exactly like the C programs in `examples/c/`:
//!
//! - `dlopen`: `dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)` and `dlsym` of each exact ABI
//!   name (`cuMemAlloc_v2`, `cuLaunchKernel`, ...);
//! - `gpa`: `dlsym` of `cuGetProcAddress_v2` only, then `cuGetProcAddress_v2` of each base
//!   name (`cuMemAlloc`, ...) with `cudaVersion` 12000, as cudart does.
//!
//! `libc::dlopen`/`dlsym` are called directly (not libloading), so a preloaded shim that
//! exports `dlsym` sees these lookups exactly as it sees a C program's.
#![deny(unsafe_code)]

pub mod driver;

/// `examples/ptx/spin.ptx`: the `spin_<N>us` and `noop` kernels, NUL-terminated for
/// `cuModuleLoadData`.
pub const SPIN_PTX: &str = concat!(include_str!("../ptx/spin.ptx"), "\0");

/// The allocation families `examples/c/alloc_families.c` knows, in the order
/// `alloc_families --family all` runs them (the tests and the compare bench go through them).
pub const ALLOC_FAMILIES: [&str; 9] = [
    "cuMemAlloc_v2",
    "cuMemAllocPitch_v2",
    "cuMemAllocManaged",
    "cuMemAllocAsync",
    "cuMemAllocFromPoolAsync",
    "cuMemCreate",
    "cuArrayCreate_v2",
    "cuArray3DCreate_v2",
    "cuMipmappedArrayCreate",
];

/// Kernels in [`SPIN_PTX`].
pub const SPIN_KERNELS: &[&str] = &["spin_10us", "spin_50us", "spin_100us", "spin_200us", "spin_500us", "spin_1000us", "noop"];

/// Parses a byte count: plain digits, or with a `k`/`m`/`g`/`t` suffix (powers of 1024,
/// optionally followed by `i` and/or `b`: `64m`, `64MiB`, `1g`).
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let value: u64 = s[..digits].parse().ok()?;
    let rest = s[digits..].to_ascii_lowercase();
    let shift = match rest.as_bytes().first() {
        None => return Some(value),
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(_) => return None,
    };
    match &rest[1..] {
        "" | "i" | "b" | "ib" => {}
        _ => return None,
    }
    value.checked_mul(1u64 << shift)
}

/// Minimal `--flag value` command-line reader shared by the programs.
pub struct Args {
    args: std::vec::IntoIter<String>,
    usage: &'static str,
}

impl Args {
    /// The process arguments (without the program name); `usage` is printed on errors.
    pub fn from_env(usage: &'static str) -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Self { args: args.into_iter(), usage }
    }

    /// The next flag, or `None` at the end.
    pub fn next_flag(&mut self) -> Option<String> {
        let flag = self.args.next()?;
        if flag == "--help" || flag == "-h" {
            println!("{}", self.usage);
            std::process::exit(0);
        }
        Some(flag)
    }

    /// The value that follows `flag`; exits with status 2 when it is missing.
    pub fn value(&mut self, flag: &str) -> String {
        self.args.next().unwrap_or_else(|| self.fail(&format!("{flag} needs a value")))
    }

    /// The value that follows `flag`, parsed; exits with status 2 when it does not parse.
    pub fn parsed<T: std::str::FromStr>(&mut self, flag: &str) -> T {
        let v = self.value(flag);
        v.parse().unwrap_or_else(|_| self.fail(&format!("bad value for {flag}: {v}")))
    }

    /// The value that follows `flag`, parsed, and greater than zero; exits with status 2
    /// otherwise.
    pub fn positive<T: std::str::FromStr + PartialOrd + Default>(&mut self, flag: &str) -> T {
        let v: T = self.parsed(flag);
        if v <= T::default() {
            self.fail(&format!("{flag} needs a value greater than 0"));
        }
        v
    }

    /// Prints `msg` and the usage on stderr and exits with status 2.
    pub fn fail(&self, msg: &str) -> ! {
        eprintln!("error: {msg}\n{}", self.usage);
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("2k"), Some(2048));
        assert_eq!(parse_size("1Gb"), Some(1 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("m"), None);
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_size("1gx"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_size("17179869184g"), None);
    }

    /// Undoes the C string-literal encoding that `examples/ptx/gen.sh` applies.
    fn decode_c_literal_lines(header: &str) -> String {
        let start = header.find("SPIN_PTX[] =").expect("SPIN_PTX in spin_ptx.h");
        let mut out = String::new();
        for line in header[start..].lines().skip(1) {
            let line = line.trim();
            if line == ";" {
                break;
            }
            let body = line.strip_prefix('"').and_then(|l| l.strip_suffix('"')).expect("a string literal line");
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    other => panic!("unexpected escape {other:?}"),
                }
            }
        }
        out
    }

    #[test]
    fn c_header_matches_ptx_file() {
        let header = include_str!("../c/spin_ptx.h");
        let ptx = include_str!("../ptx/spin.ptx");
        assert_eq!(decode_c_literal_lines(header), ptx, "examples/c/spin_ptx.h is stale: run examples/ptx/gen.sh");
        for k in SPIN_KERNELS {
            assert!(ptx.contains(&format!(".visible .entry {k}(")), "{k} missing from spin.ptx");
            assert!(header.contains(&format!("\"{k}\"")), "{k} missing from SPIN_KERNELS in spin_ptx.h");
        }
        assert_eq!(ptx.matches(".visible .entry ").count(), SPIN_KERNELS.len(), "SPIN_KERNELS does not list every kernel of spin.ptx");
    }

    #[test]
    fn kernel_durations_match_names() {
        // spin_<N>us must wait N * 1000 ns: the simulator charges by the name, a GPU by the code.
        let ptx = include_str!("../ptx/spin.ptx");
        for k in SPIN_KERNELS.iter().filter(|k| k.starts_with("spin_")) {
            let us: u64 = k.trim_start_matches("spin_").trim_end_matches("us").parse().unwrap();
            let body = &ptx[ptx.find(&format!(".entry {k}(")).unwrap()..];
            let body = &body[..body.find("\n}\n").unwrap()];
            assert!(body.contains(&format!("add.u64 \t%rd2, %rd1, {};", us * 1000)), "{k} does not wait {us} us");
        }
    }
}
