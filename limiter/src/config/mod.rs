//! The configuration, read once from the environment: HAMi-core's variable contract, parsed
//! strictly.
//!
//! | variable | meaning |
//! |---|---|
//! | `CUDA_DISABLE_CONTROL` | `true`: pure pass-through; no other variable is read |
//! | `CUDA_DEVICE_MEMORY_LIMIT`, `CUDA_DEVICE_MEMORY_LIMIT_<i>` | quota in bytes ([`crate::size`] syntax) |
//! | `CUDA_DEVICE_SM_LIMIT`, `CUDA_DEVICE_SM_LIMIT_<i>` | SM share in percent |
//! | `CUDA_DEVICE_MEMORY_SHARED_CACHE` | absolute path of the accounting region |
//! | `GPU_CORE_UTILIZATION_POLICY` | `default` / `force` / `disable` |
//! | `LIBCUDA_LOG_LEVEL` | 0..=4 |
//! | `CUDA_VISIBLE_DEVICES` | which physical devices the application sees, in order |
//!
//! Semantics follow HAMi-core where HAMi's meaning is well defined (research `hami-core.md`
//! §3.1 and HAMi-core's `do_init_device_memory_limits` / `do_init_device_sm_limits`):
//!
//! - a limit of `0` means "no limit"; in an indexed variable it means "not set here", so
//!   device `i` falls back to the unindexed variable (HAMi uses `_<i>` only when it is > 0);
//! - an SM share of 100 (the whole device) is no limit, as HAMi's rate limiter treats
//!   `sm_limit >= 100`; an indexed 100 lifts the unindexed share for that device only;
//! - `LIBCUDA_LOG_LEVEL` defaults to 2 (warnings), HAMi's default.
//!
//! Where HAMi fails open, we refuse: HAMi turns an unparsable, overflowing or empty value into
//! "no limit" (a typo lifts a quota), reads `1Gi` as one byte and `1.5g` as 1 GiB, ignores
//! `CUDA_DEVICE_MEMORY_LIMIT_16` and `CUDA_DEVICE_MEMORY_LIMIT_01`, and maps UUIDs in
//! `CUDA_VISIBLE_DEVICES` to device 0. Here every such value is a [`ConfigError`] naming the
//! variable, the value and what was expected, and the shim fails closed. In particular a
//! variable that is set but empty is an error (HAMi treats it as unset): `LIMIT=${UNSET}` in a
//! manifest must not silently mean "unlimited". The one exception is `CUDA_VISIBLE_DEVICES`,
//! where empty means "no devices", as for the CUDA driver.
//!
//! Reading never panics, whatever the environment holds.
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::size::{SIZE_SYNTAX, parse_size};

/// The most devices the configuration (and the accounting region) can describe, as HAMi's
/// `CUDA_DEVICE_MAX_COUNT`.
pub const MAX_DEVICES: usize = 16;

/// `true`/`false`: whether the shim is a pure pass-through.
pub const VAR_DISABLE_CONTROL: &str = "CUDA_DISABLE_CONTROL";
/// The memory quota for every device; `_<i>` suffixed for one device.
pub const VAR_MEMORY_LIMIT: &str = "CUDA_DEVICE_MEMORY_LIMIT";
/// The SM share for every device; `_<i>` suffixed for one device.
pub const VAR_SM_LIMIT: &str = "CUDA_DEVICE_SM_LIMIT";
/// The path of the container's accounting region.
pub const VAR_REGION_PATH: &str = "CUDA_DEVICE_MEMORY_SHARED_CACHE";
/// The SM-limit enforcement policy.
pub const VAR_POLICY: &str = "GPU_CORE_UTILIZATION_POLICY";
/// The log verbosity.
pub const VAR_LOG_LEVEL: &str = "LIBCUDA_LOG_LEVEL";
/// The devices the application sees.
pub const VAR_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// HAMi-core's log level when `LIBCUDA_LOG_LEVEL` is unset (2: warnings and messages).
pub const DEFAULT_LOG_LEVEL: u8 = 2;
/// The most verbose log level (debug).
pub const MAX_LOG_LEVEL: u8 = 4;
/// The region path HAMi-core uses when `CUDA_DEVICE_MEMORY_SHARED_CACHE` is unset.
pub const HAMI_DEFAULT_REGION_PATH: &str = "/tmp/cudevshr.cache";

/// Accepted spellings of a boolean, for error messages.
pub const BOOL_SYNTAX: &str = "true or false (as Go's strconv.ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)";
/// Accepted SM shares, for error messages.
pub const PERCENT_SYNTAX: &str = "a whole percentage from 0 to 100, such as 30 (0 and 100 mean no limit)";
/// Accepted policies, for error messages.
pub const POLICY_SYNTAX: &str = "default, force or disable (any case)";
/// Accepted log levels, for error messages.
pub const LOG_LEVEL_SYNTAX: &str = "a log level from 0 (errors only) to 4 (debug)";
/// Accepted region paths, for error messages.
pub const PATH_SYNTAX: &str = "an absolute path such as /tmp/cudevshr.cache";
/// Accepted `CUDA_VISIBLE_DEVICES` lists, for error messages.
pub const VISIBLE_DEVICES_SYNTAX: &str = "a comma-separated list of distinct device indices (0,1), GPU UUIDs or UUID prefixes (GPU-8932f937-d72c-4106-c12f-20bd9faed9f6, GPU-8932f937) or MIG UUIDs (MIG-<uuid>, MIG-GPU-<uuid>/<gi>/<ci>); empty or -1 for no devices";

/// How an SM limit is enforced (`GPU_CORE_UTILIZATION_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UtilizationPolicy {
    /// HAMi's default: enforce while the region's utilization switch is on (the host monitor
    /// turns it off when no other container shares the GPU; on without a monitor).
    #[default]
    Default,
    /// Always enforce the SM limit.
    Force,
    /// Never enforce the SM limit.
    Disable,
}

/// One entry of `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VisibleDevice {
    /// A physical device index, as the driver enumerates devices.
    Index(u32),
    /// `GPU-…`: a full GPU UUID or a prefix of one, as given.
    Uuid(String),
    /// `MIG-…`: a MIG instance, `MIG-<uuid>` or the older `MIG-GPU-<uuid>/<gi>/<ci>`, as given.
    Mig(String),
}

impl fmt::Display for VisibleDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VisibleDevice::Index(i) => write!(f, "{i}"),
            VisibleDevice::Uuid(s) | VisibleDevice::Mig(s) => f.write_str(s),
        }
    }
}

/// The configuration of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `CUDA_DISABLE_CONTROL` is true: pass everything through; nothing else was read.
    pub control_disabled: bool,
    /// Quota in bytes per device index as the application sees it; `None` = no limit.
    pub memory_limits: [Option<u64>; MAX_DEVICES],
    /// SM share in percent (1..=99) per application device index; `None` = no limit.
    pub sm_limits: [Option<u8>; MAX_DEVICES],
    /// The unindexed `CUDA_DEVICE_MEMORY_LIMIT` (`None` when unset or 0).
    pub default_memory_limit: Option<u64>,
    /// The unindexed `CUDA_DEVICE_SM_LIMIT` (`None` when unset, 0 or 100).
    pub default_sm_limit: Option<u8>,
    /// `CUDA_DEVICE_MEMORY_SHARED_CACHE`; `None` when unset (HAMi would use [`HAMI_DEFAULT_REGION_PATH`]).
    pub region_path: Option<PathBuf>,
    /// `GPU_CORE_UTILIZATION_POLICY`; [`UtilizationPolicy::Default`] when unset.
    pub policy: UtilizationPolicy,
    /// `LIBCUDA_LOG_LEVEL`, 0..=4; [`DEFAULT_LOG_LEVEL`] when unset.
    pub log_level: u8,
    /// `CUDA_VISIBLE_DEVICES`, in order; `None` when unset, `Some(vec![])` for no devices.
    pub visible_devices: Option<Vec<VisibleDevice>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control_disabled: false,
            memory_limits: [None; MAX_DEVICES],
            sm_limits: [None; MAX_DEVICES],
            default_memory_limit: None,
            default_sm_limit: None,
            region_path: None,
            policy: UtilizationPolicy::Default,
            log_level: DEFAULT_LOG_LEVEL,
            visible_devices: None,
        }
    }
}

impl Config {
    /// The quota of application device `device` in bytes, `None` = no limit.
    ///
    /// For `device >= MAX_DEVICES` this is the unindexed limit: the region has no room for such
    /// a device, so the caller must refuse it rather than read `None` as "unlimited".
    pub fn memory_limit(&self, device: usize) -> Option<u64> {
        match self.memory_limits.get(device) {
            Some(limit) => *limit,
            None => self.default_memory_limit,
        }
    }

    /// The SM share of application device `device` in percent (1..=99), `None` = no limit.
    ///
    /// For `device >= MAX_DEVICES` this is the unindexed share (see [`Config::memory_limit`]).
    pub fn sm_limit(&self, device: usize) -> Option<u8> {
        match self.sm_limits.get(device) {
            Some(limit) => *limit,
            None => self.default_sm_limit,
        }
    }

    /// Whether any device has an SM limit (before the policy is applied).
    pub fn any_sm_limit(&self) -> bool {
        self.sm_limits.iter().any(Option::is_some)
    }
}

/// Why a value was refused, before it is tied to a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// What was wrong, one line (user text in it is quoted and escaped).
    pub problem: String,
    /// What was expected instead.
    pub expected: &'static str,
}

impl ValueError {
    fn new(problem: impl Into<String>, expected: &'static str) -> Self {
        ValueError { problem: problem.into(), expected }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; expected {}", self.problem, self.expected)
    }
}

impl std::error::Error for ValueError {}

/// A configuration variable that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name.
    pub var: String,
    /// Its value, as set (lossily decoded if it was not UTF-8).
    pub value: String,
    /// What was wrong with it.
    pub problem: String,
    /// What was expected instead.
    pub expected: String,
}

impl ConfigError {
    fn new(var: &str, value: &str, err: ValueError) -> Self {
        ConfigError { var: var.to_string(), value: value.to_string(), problem: err.problem, expected: err.expected.to_string() }
    }
}

/// The longest value shown in full in an error message; longer ones are cut.
const SHOWN_VALUE_CHARS: usize = 120;

impl fmt::Display for ConfigError {
    /// One line: `NAME="value": problem; expected …`, control characters escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.var.escape_debug())?;
        if self.value.chars().count() > SHOWN_VALUE_CHARS {
            let head: String = self.value.chars().take(SHOWN_VALUE_CHARS).collect();
            write!(f, "{head:?}... ({} bytes)", self.value.len())?;
        } else {
            write!(f, "{:?}", self.value)?;
        }
        write!(f, ": {}; expected {}", self.problem, self.expected)
    }
}

impl std::error::Error for ConfigError {}

fn first_char_is_minus(s: &str) -> bool {
    s.starts_with('-')
}

/// Parses a boolean exactly as Go's `strconv.ParseBool` (what HAMi's device plugin uses for
/// `CUDA_DISABLE_CONTROL`), so the plugin and the shim never disagree; no trimming.
pub fn parse_bool(text: &str) -> Result<bool, ValueError> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        "" => Err(ValueError::new("empty", BOOL_SYNTAX)),
        _ => Err(ValueError::new("not a boolean", BOOL_SYNTAX)),
    }
}

/// Parses a small whole number no larger than `max`, surrounding whitespace allowed.
fn parse_small(text: &str, max: u8, expected: &'static str) -> Result<u8, ValueError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ValueError::new("empty", expected));
    }
    if first_char_is_minus(s) {
        return Err(ValueError::new("negative", expected));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::new("not a whole number", expected));
    }
    let significant = s.trim_start_matches('0');
    // At most three significant digits fit the ranges we parse; more is out of range, however long.
    let value: u16 = if significant.is_empty() {
        0
    } else if significant.len() > 3 {
        u16::MAX
    } else {
        significant.parse().unwrap_or(u16::MAX)
    };
    if value > u16::from(max) {
        return Err(ValueError::new(format!("{} is out of range", shorten(s)), expected));
    }
    Ok(value as u8)
}

/// Cuts a digit run for a message.
fn shorten(s: &str) -> String {
    if s.len() > 24 { format!("a {}-digit number", s.len()) } else { s.to_string() }
}

/// Parses an SM share: a whole percentage 0..=100 (0 and 100 are read as "no limit" by [`from_lookup`]).
pub fn parse_percent(text: &str) -> Result<u8, ValueError> {
    parse_small(text, 100, PERCENT_SYNTAX)
}

/// Parses `LIBCUDA_LOG_LEVEL`: a whole number 0..=4.
pub fn parse_log_level(text: &str) -> Result<u8, ValueError> {
    parse_small(text, MAX_LOG_LEVEL, LOG_LEVEL_SYNTAX)
}

/// Parses `GPU_CORE_UTILIZATION_POLICY`: `default`, `force` or `disable`, any case.
pub fn parse_policy(text: &str) -> Result<UtilizationPolicy, ValueError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ValueError::new("empty", POLICY_SYNTAX));
    }
    if s.eq_ignore_ascii_case("default") {
        Ok(UtilizationPolicy::Default)
    } else if s.eq_ignore_ascii_case("force") {
        Ok(UtilizationPolicy::Force)
    } else if s.eq_ignore_ascii_case("disable") {
        Ok(UtilizationPolicy::Disable)
    } else {
        Err(ValueError::new("unknown policy", POLICY_SYNTAX))
    }
}

/// Parses a memory quota in [`crate::size`] syntax into bytes (0 is read as "no limit" by [`from_lookup`]).
pub fn parse_memory_limit(text: &str) -> Result<u64, ValueError> {
    parse_size(text).map_err(|e| ValueError::new(e.to_string(), SIZE_SYNTAX))
}

/// Parses `CUDA_DEVICE_MEMORY_SHARED_CACHE`: a non-empty absolute path, taken as is (no trimming).
///
/// A relative path is refused: processes with different working directories would open
/// different regions, each granting the full quota.
pub fn parse_region_path(text: &str) -> Result<PathBuf, ValueError> {
    if text.is_empty() {
        return Err(ValueError::new("empty", PATH_SYNTAX));
    }
    if !text.starts_with('/') {
        return Err(ValueError::new("not an absolute path", PATH_SYNTAX));
    }
    Ok(PathBuf::from(text))
}

/// Where the dashes of a canonical UUID (`8-4-4-4-12` hex digits) are.
const UUID_DASHES: [usize; 4] = [8, 13, 18, 23];
/// The length of a canonical UUID.
const UUID_LEN: usize = 36;

/// Whether `s` is a non-empty prefix of a canonical UUID with at least one hex digit.
fn is_uuid_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= UUID_LEN
        && s.bytes().enumerate().all(|(i, b)| if UUID_DASHES.contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
        && s.bytes().any(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is a whole canonical UUID.
fn is_full_uuid(s: &str) -> bool {
    s.len() == UUID_LEN && is_uuid_prefix(s)
}

/// Whether `s` is a decimal number that fits `u32` (MIG instance ids).
fn is_u32(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok()
}

/// Parses one `CUDA_VISIBLE_DEVICES` entry (already trimmed).
fn parse_visible_token(token: &str, position: usize) -> Result<VisibleDevice, ValueError> {
    let e = |what: String| ValueError::new(what, VISIBLE_DEVICES_SYNTAX);
    if token.is_empty() {
        return Err(e(format!("entry {position} is empty")));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return token.parse::<u32>().map(VisibleDevice::Index).map_err(|_| e(format!("entry {position} is an index too large")));
    }
    if let Some(rest) = token.strip_prefix("MIG-GPU-") {
        // Old form: MIG-GPU-<uuid>/<gpu instance>/<compute instance>.
        let mut parts = rest.split('/');
        let ok = matches!(
            (parts.next(), parts.next(), parts.next(), parts.next()),
            (Some(uuid), Some(gi), Some(ci), None) if is_full_uuid(uuid) && is_u32(gi) && is_u32(ci)
        );
        return if ok {
            Ok(VisibleDevice::Mig(token.to_string()))
        } else {
            Err(e(format!("entry {position} ({token:?}) is not MIG-GPU-<full uuid>/<gi>/<ci>")))
        };
    }
    if let Some(rest) = token.strip_prefix("MIG-") {
        return if is_full_uuid(rest) {
            Ok(VisibleDevice::Mig(token.to_string()))
        } else {
            Err(e(format!("entry {position} ({token:?}) is not a full MIG UUID")))
        };
    }
    if let Some(rest) = token.strip_prefix("GPU-") {
        return if is_uuid_prefix(rest) {
            Ok(VisibleDevice::Uuid(token.to_string()))
        } else {
            Err(e(format!("entry {position} ({token:?}) is not a GPU UUID or a prefix of one")))
        };
    }
    if first_char_is_minus(token) {
        return Err(e(format!("entry {position} ({token:?}) is negative (only a lone -1 means no devices)")));
    }
    Err(e(format!("entry {position} ({token:?}) is not an index, GPU- or MIG- UUID")))
}

/// Whether two entries may name the same device: equal indices, equal MIG UUIDs, or GPU UUIDs
/// one of which is a prefix of the other (hex compared case-insensitively).
fn may_alias(a: &VisibleDevice, b: &VisibleDevice) -> bool {
    match (a, b) {
        (VisibleDevice::Index(x), VisibleDevice::Index(y)) => x == y,
        (VisibleDevice::Mig(x), VisibleDevice::Mig(y)) => x.eq_ignore_ascii_case(y),
        (VisibleDevice::Uuid(x), VisibleDevice::Uuid(y)) => {
            let n = x.len().min(y.len());
            x.as_bytes()[..n].eq_ignore_ascii_case(&y.as_bytes()[..n])
        }
        _ => false,
    }
}

/// Parses `CUDA_VISIBLE_DEVICES` into its entries, refusing anything the driver would not read as
/// intended.
///
/// Entries are separated by commas, with whitespace around them allowed; each is a decimal index,
/// `GPU-` followed by a UUID or a prefix of one, `MIG-<uuid>` or `MIG-GPU-<uuid>/<gi>/<ci>`.
/// An empty (or blank) value and the common idiom `-1` mean no devices. The driver silently stops
/// at the first invalid entry; we refuse the whole value instead, because a typo must not change
/// which devices a tenant gets. Entries that may name the same device twice (equal indices or
/// UUIDs, or one GPU UUID a prefix of another) are refused too: that device would get two
/// application indices, each with its own quota. At most [`MAX_DEVICES`] entries.
pub fn parse_visible_devices(text: &str) -> Result<Vec<VisibleDevice>, ValueError> {
    let s = text.trim();
    if s.is_empty() || s == "-1" {
        return Ok(Vec::new());
    }
    let mut devices: Vec<VisibleDevice> = Vec::new();
    for (position, token) in s.split(',').enumerate() {
        if devices.len() == MAX_DEVICES {
            return Err(ValueError::new(format!("more than {MAX_DEVICES} devices"), VISIBLE_DEVICES_SYNTAX));
        }
        let device = parse_visible_token(token.trim(), position)?;
        if let Some(earlier) = devices.iter().position(|d| may_alias(d, &device)) {
            return Err(ValueError::new(
                format!("entry {position} ({device}) may name the same device as entry {earlier}"),
                VISIBLE_DEVICES_SYNTAX,
            ));
        }
        devices.push(device);
    }
    Ok(devices)
}

/// A raw value from the environment: text, or the lossy text of a value that is not UTF-8.
type Raw = Result<String, String>;

/// Reads one variable: `Ok(None)` when unset, the error when not UTF-8.
fn fetch(get: &dyn Fn(&str) -> Option<Raw>, var: &str) -> Result<Option<String>, ConfigError> {
    match get(var) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(lossy)) => Err(ConfigError::new(var, &lossy, ValueError::new("not valid UTF-8", "UTF-8 text"))),
    }
}

/// Reads and parses one variable, `Ok(None)` when unset.
fn read<T>(get: &dyn Fn(&str) -> Option<Raw>, var: &str, parse: impl Fn(&str) -> Result<T, ValueError>) -> Result<Option<T>, ConfigError> {
    match fetch(get, var)? {
        None => Ok(None),
        Some(value) => parse(&value).map(Some).map_err(|e| ConfigError::new(var, &value, e)),
    }
}

/// The indexed-variable prefixes (`CUDA_DEVICE_MEMORY_LIMIT_`, `CUDA_DEVICE_SM_LIMIT_`) and the
/// expectation for their suffix.
const INDEXED: [(&str, &str); 2] = [
    ("CUDA_DEVICE_MEMORY_LIMIT_", "a name CUDA_DEVICE_MEMORY_LIMIT_<i> with i from 0 to 15 in decimal without leading zeros"),
    ("CUDA_DEVICE_SM_LIMIT_", "a name CUDA_DEVICE_SM_LIMIT_<i> with i from 0 to 15 in decimal without leading zeros"),
];

/// Refuses an indexed variable whose suffix is not a device index `0..MAX_DEVICES` written as
/// HAMi writes it (`_0` … `_15`): such a variable would otherwise be silently ignored.
pub fn check_variable_name(name: &str, value: &str) -> Result<(), ConfigError> {
    for (prefix, expected) in INDEXED {
        let Some(suffix) = name.strip_prefix(prefix) else {
            continue;
        };
        let problem = if suffix.is_empty() {
            Some("no device index after the underscore".to_string())
        } else if !suffix.bytes().all(|b| b.is_ascii_digit()) {
            Some("the device index is not a number".to_string())
        } else if suffix.len() > 1 && suffix.starts_with('0') {
            Some("the device index has a leading zero".to_string())
        } else if suffix.len() > 2 || suffix.parse::<usize>().map_or(true, |i| i >= MAX_DEVICES) {
            Some(format!("the device index is not below {MAX_DEVICES}"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ConfigError { var: name.to_string(), value: value.to_string(), problem, expected: expected.to_string() });
        }
    }
    Ok(())
}

/// Builds the configuration from a variable lookup; `names` (all variables set, with values) are
/// checked by [`check_variable_name`] when the source can enumerate them.
fn build(get: &dyn Fn(&str) -> Option<Raw>, names: Option<&mut dyn Iterator<Item = (String, String)>>) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    if read(get, VAR_DISABLE_CONTROL, parse_bool)? == Some(true) {
        // Pure pass-through: the other variables mean nothing, so none of them can break it.
        config.control_disabled = true;
        return Ok(config);
    }
    if let Some(names) = names {
        let mut all: Vec<(String, String)> = names.collect();
        all.sort();
        for (name, value) in &all {
            check_variable_name(name, value)?;
        }
    }

    // Memory: `_<i>` wins when > 0; 0 or unset falls back to the unindexed value; 0 there is no limit.
    let fallback = read(get, VAR_MEMORY_LIMIT, parse_memory_limit)?.filter(|&b| b > 0);
    config.default_memory_limit = fallback;
    for (i, slot) in config.memory_limits.iter_mut().enumerate() {
        let var = format!("{VAR_MEMORY_LIMIT}_{i}");
        *slot = match read(get, &var, parse_memory_limit)? {
            Some(bytes) if bytes > 0 => Some(bytes),
            _ => fallback,
        };
    }

    // SM: the same fallback rule; 100 (the whole device) is no limit, also when it overrides.
    let as_limit = |p: u8| (p > 0 && p < 100).then_some(p);
    let fallback = read(get, VAR_SM_LIMIT, parse_percent)?.and_then(as_limit);
    config.default_sm_limit = fallback;
    for (i, slot) in config.sm_limits.iter_mut().enumerate() {
        let var = format!("{VAR_SM_LIMIT}_{i}");
        *slot = match read(get, &var, parse_percent)? {
            Some(0) | None => fallback,
            Some(p) => as_limit(p),
        };
    }

    config.region_path = read(get, VAR_REGION_PATH, parse_region_path)?;
    config.policy = read(get, VAR_POLICY, parse_policy)?.unwrap_or_default();
    config.log_level = read(get, VAR_LOG_LEVEL, parse_log_level)?.unwrap_or(DEFAULT_LOG_LEVEL);
    config.visible_devices = read(get, VAR_VISIBLE_DEVICES, parse_visible_devices)?;
    Ok(config)
}

/// Reads the configuration from the process environment; never panics, also on non-UTF-8 data.
///
/// Besides the variables themselves, every variable name is scanned so that a misspelt indexed
/// variable (`CUDA_DEVICE_MEMORY_LIMIT_X`, `_16`, `_01`) is an error, not silently ignored.
pub fn from_env() -> Result<Config, ConfigError> {
    let lossy = |s: OsString| s.to_string_lossy().into_owned();
    let get = |name: &str| -> Option<Raw> { std::env::var_os(name).map(|v| v.into_string().map_err(lossy)) };
    let mut names = std::env::vars_os().map(|(k, v)| (lossy(k), lossy(v)));
    build(&get, Some(&mut names))
}

/// Reads the configuration through `get` (a variable's value, `None` when unset).
///
/// `get` cannot enumerate names, so only the indices `0..MAX_DEVICES` are looked up: an indexed
/// variable with a bad suffix goes unnoticed here; [`from_env`] and [`from_vars`] catch it.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let get = |name: &str| get(name).map(Ok);
    build(&get, None)
}

/// Reads the configuration from `(name, value)` pairs (the last of duplicate names wins), checking
/// every name like [`from_env`].
pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars.into_iter().collect();
    let get = |name: &str| map.get(name).cloned().map(Ok);
    let mut names = map.iter().map(|(k, v)| (k.clone(), v.clone()));
    build(&get, Some(&mut names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    const UUID: &str = "8932f937-d72c-4106-c12f-20bd9faed9f6";
    const UUID2: &str = "c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f";

    fn vars(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        match vars(pairs) {
            Ok(c) => panic!("{pairs:?} was accepted as {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unset_environment_is_the_default() {
        let c = vars(&[("PATH", "/usr/bin"), ("HOME", "/root")]).unwrap();
        assert_eq!(c, Config::default());
        assert!(!c.control_disabled);
        assert_eq!(c.memory_limits, [None; MAX_DEVICES]);
        assert_eq!(c.sm_limits, [None; MAX_DEVICES]);
        assert_eq!(c.region_path, None);
        assert_eq!(c.policy, UtilizationPolicy::Default);
        assert_eq!(c.log_level, 2, "HAMi's default log level");
        assert_eq!(c.visible_devices, None);
        assert!(!c.any_sm_limit());
        assert_eq!(from_lookup(|_| None).unwrap(), c);
    }

    #[test]
    fn bools_are_go_parsebool() {
        for (text, want) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("true", true),
            ("TRUE", true),
            ("True", true),
            ("0", false),
            ("f", false),
            ("F", false),
            ("false", false),
            ("FALSE", false),
            ("False", false),
        ] {
            assert_eq!(parse_bool(text), Ok(want), "{text:?}");
        }
        for text in ["", " ", "yes", "no", "on", "tRuE", " true", "true ", "2", "-1", "truee"] {
            assert!(parse_bool(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn disable_control() {
        assert!(vars(&[(VAR_DISABLE_CONTROL, "true")]).unwrap().control_disabled);
        assert!(vars(&[(VAR_DISABLE_CONTROL, "1")]).unwrap().control_disabled);
        assert!(!vars(&[(VAR_DISABLE_CONTROL, "false")]).unwrap().control_disabled);
        assert!(!vars(&[(VAR_DISABLE_CONTROL, "0")]).unwrap().control_disabled);
        let e = err(&[(VAR_DISABLE_CONTROL, "yes")]);
        assert_eq!(e.var, VAR_DISABLE_CONTROL);
        let e = err(&[(VAR_DISABLE_CONTROL, "")]);
        assert_eq!(e.problem, "empty");
    }

    #[test]
    fn disabled_control_reads_nothing_else() {
        let c = vars(&[
            (VAR_DISABLE_CONTROL, "true"),
            (VAR_MEMORY_LIMIT, "garbage"),
            ("CUDA_DEVICE_MEMORY_LIMIT_X", "1g"),
            (VAR_LOG_LEVEL, "9"),
        ])
        .unwrap();
        assert_eq!(c, Config { control_disabled: true, ..Config::default() });
        // Disabled = false: everything is read again.
        let e = err(&[(VAR_DISABLE_CONTROL, "false"), (VAR_MEMORY_LIMIT, "garbage")]);
        assert_eq!(e.var, VAR_MEMORY_LIMIT);
    }

    #[test]
    fn memory_limits_and_their_fallback() {
        // (variables, device 0, device 1, device 15, default)
        type Row = (&'static [(&'static str, &'static str)], Option<u64>, Option<u64>, Option<u64>);
        let table: &[Row] = &[
            (&[(VAR_MEMORY_LIMIT, "4g")], Some(4 * GIB), Some(4 * GIB), Some(4 * GIB)),
            (&[(VAR_MEMORY_LIMIT, "4Gi")], Some(4 * GIB), Some(4 * GIB), Some(4 * GIB)),
            (&[(VAR_MEMORY_LIMIT, "1Gi")], Some(GIB), Some(GIB), Some(GIB)),
            (&[(VAR_MEMORY_LIMIT, "4096m")], Some(4 * GIB), Some(4 * GIB), Some(4 * GIB)),
            (&[(VAR_MEMORY_LIMIT, "1024")], Some(1024), Some(1024), Some(1024)),
            (&[(VAR_MEMORY_LIMIT, "0")], None, None, None),
            (&[("CUDA_DEVICE_MEMORY_LIMIT_1", "2048m")], None, Some(2 * GIB), None),
            (&[(VAR_MEMORY_LIMIT, "4g"), ("CUDA_DEVICE_MEMORY_LIMIT_1", "1g")], Some(4 * GIB), Some(GIB), Some(4 * GIB)),
            (
                // An indexed 0 is "not set here": the unindexed limit applies (HAMi).
                &[(VAR_MEMORY_LIMIT, "4g"), ("CUDA_DEVICE_MEMORY_LIMIT_1", "0")],
                Some(4 * GIB),
                Some(4 * GIB),
                Some(4 * GIB),
            ),
            (&[("CUDA_DEVICE_MEMORY_LIMIT_15", "512Mi")], None, None, Some(512 * MIB)),
            (&[("CUDA_DEVICE_MEMORY_LIMIT_0", "1k"), ("CUDA_DEVICE_MEMORY_LIMIT_1", " 2k ")], Some(1024), Some(2048), None),
        ];
        for (pairs, d0, d1, d15) in table {
            let c = vars(pairs).unwrap();
            assert_eq!((c.memory_limit(0), c.memory_limit(1), c.memory_limit(15)), (*d0, *d1, *d15), "{pairs:?}");
            let via_lookup = from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap();
            assert_eq!(via_lookup, c, "{pairs:?}");
        }
    }

    #[test]
    fn devices_beyond_the_table_get_the_unindexed_limits() {
        let c = vars(&[(VAR_MEMORY_LIMIT, "1g"), ("CUDA_DEVICE_MEMORY_LIMIT_0", "2g"), (VAR_SM_LIMIT, "30")]).unwrap();
        assert_eq!(c.memory_limit(MAX_DEVICES), Some(GIB));
        assert_eq!(c.memory_limit(usize::MAX), Some(GIB));
        assert_eq!(c.sm_limit(MAX_DEVICES), Some(30));
        let c = vars(&[("CUDA_DEVICE_MEMORY_LIMIT_0", "2g")]).unwrap();
        assert_eq!(c.memory_limit(MAX_DEVICES), None);
        assert_eq!(c.sm_limit(usize::MAX), None);
    }

    #[test]
    fn bad_memory_limits_are_errors() {
        for (var, value, problem) in [
            (VAR_MEMORY_LIMIT, "", "empty size"),
            (VAR_MEMORY_LIMIT, "  ", "empty size"),
            (VAR_MEMORY_LIMIT, "-1g", "negative size"),
            (VAR_MEMORY_LIMIT, "1.5g", "not a whole number of bytes"),
            (VAR_MEMORY_LIMIT, "0x100", "unknown unit \"x100\""),
            (VAR_MEMORY_LIMIT, "g", "not a whole number of bytes"),
            ("CUDA_DEVICE_MEMORY_LIMIT_1", "4x", "unknown unit \"x\""),
            ("CUDA_DEVICE_MEMORY_LIMIT_3", "99999999999999999999", "size does not fit in 64 bits"),
            ("CUDA_DEVICE_MEMORY_LIMIT_15", "16777216t", "size does not fit in 64 bits"),
        ] {
            let e = err(&[(var, value)]);
            assert_eq!((e.var.as_str(), e.value.as_str()), (var, value));
            assert_eq!(e.problem, problem, "{var}={value:?}");
            assert_eq!(e.expected, SIZE_SYNTAX);
        }
    }

    #[test]
    fn the_error_message_is_one_line_naming_all() {
        let e = err(&[("CUDA_DEVICE_MEMORY_LIMIT_1", "4x")]);
        assert_eq!(e.to_string(), format!("CUDA_DEVICE_MEMORY_LIMIT_1=\"4x\": unknown unit \"x\"; expected {SIZE_SYNTAX}"));
        let e = err(&[(VAR_MEMORY_LIMIT, "4\nx\r\u{2028}")]);
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.contains('\r') && !s.contains('\u{2028}'), "{s}");
        assert!(s.starts_with("CUDA_DEVICE_MEMORY_LIMIT=\"4\\nx"), "{s}");
        let long = "9".repeat(10_000);
        let e = err(&[(VAR_SM_LIMIT, &long)]);
        let s = e.to_string();
        assert!(s.len() < 600, "{s}");
        assert!(s.contains("(10000 bytes)") && s.contains("a 10000-digit number"), "{s}");
        assert_eq!(e.value, long, "the field keeps the whole value");
    }

    #[test]
    fn percents() {
        for (text, want) in
            [("0", 0), ("1", 1), ("50", 50), (" 30 ", 30), ("100", 100), ("007", 7), ("000000000000000000000000000100", 100)]
        {
            assert_eq!(parse_percent(text), Ok(want), "{text:?}");
        }
        for (text, problem) in [
            ("", "empty"),
            ("\t", "empty"),
            ("-5", "negative"),
            ("101", "101 is out of range"),
            ("1000", "1000 is out of range"),
            ("50%", "not a whole number"),
            ("5.5", "not a whole number"),
            ("+5", "not a whole number"),
            ("fifty", "not a whole number"),
            ("٥", "not a whole number"),
        ] {
            assert_eq!(parse_percent(text).map_err(|e| e.problem), Err(problem.to_string()), "{text:?}");
        }
        let huge = "1".repeat(100);
        assert_eq!(parse_percent(&huge).unwrap_err().problem, "a 100-digit number is out of range");
    }

    #[test]
    fn sm_limits_and_their_fallback() {
        type Row = (&'static [(&'static str, &'static str)], [Option<u8>; 3], bool);
        let table: &[Row] = &[
            (&[(VAR_SM_LIMIT, "30")], [Some(30), Some(30), Some(30)], true),
            (&[(VAR_SM_LIMIT, "0")], [None, None, None], false),
            (&[(VAR_SM_LIMIT, "100")], [None, None, None], false),
            (&[("CUDA_DEVICE_SM_LIMIT_1", "20")], [None, Some(20), None], true),
            (&[(VAR_SM_LIMIT, "30"), ("CUDA_DEVICE_SM_LIMIT_1", "20")], [Some(30), Some(20), Some(30)], true),
            (
                // Indexed 0: not set here, the unindexed share applies (HAMi).
                &[(VAR_SM_LIMIT, "30"), ("CUDA_DEVICE_SM_LIMIT_1", "0")],
                [Some(30), Some(30), Some(30)],
                true,
            ),
            (
                // Indexed 100: the whole device, no limit there.
                &[(VAR_SM_LIMIT, "30"), ("CUDA_DEVICE_SM_LIMIT_1", "100")],
                [Some(30), None, Some(30)],
                true,
            ),
            (&[("CUDA_DEVICE_SM_LIMIT_15", "1")], [None, None, Some(1)], true),
        ];
        for (pairs, [d0, d1, d15], any) in table {
            let c = vars(pairs).unwrap();
            assert_eq!([c.sm_limit(0), c.sm_limit(1), c.sm_limit(15)], [*d0, *d1, *d15], "{pairs:?}");
            assert_eq!(c.any_sm_limit(), *any, "{pairs:?}");
        }
        for value in ["101", "-1", "", "30%", "1k"] {
            let e = err(&[("CUDA_DEVICE_SM_LIMIT_2", value)]);
            assert_eq!(e.var, "CUDA_DEVICE_SM_LIMIT_2");
            assert_eq!(e.expected, PERCENT_SYNTAX);
        }
    }

    #[test]
    fn indexed_names_must_be_device_indices() {
        for (name, problem) in [
            ("CUDA_DEVICE_MEMORY_LIMIT_X", "the device index is not a number"),
            ("CUDA_DEVICE_MEMORY_LIMIT_", "no device index after the underscore"),
            ("CUDA_DEVICE_MEMORY_LIMIT_16", "the device index is not below 16"),
            ("CUDA_DEVICE_MEMORY_LIMIT_100", "the device index is not below 16"),
            ("CUDA_DEVICE_MEMORY_LIMIT_99999999999999999999999", "the device index is not below 16"),
            ("CUDA_DEVICE_MEMORY_LIMIT_01", "the device index has a leading zero"),
            ("CUDA_DEVICE_MEMORY_LIMIT_-1", "the device index is not a number"),
            ("CUDA_DEVICE_MEMORY_LIMIT_1 ", "the device index is not a number"),
            ("CUDA_DEVICE_SM_LIMIT_X", "the device index is not a number"),
            ("CUDA_DEVICE_SM_LIMIT_16", "the device index is not below 16"),
            ("CUDA_DEVICE_SM_LIMIT_00", "the device index has a leading zero"),
        ] {
            let e = err(&[(name, "1g")]);
            assert_eq!((e.var.as_str(), e.problem.as_str()), (name, problem));
            assert_eq!(e.value, "1g");
            assert!(e.to_string().starts_with(&format!("{name}=\"1g\": ")), "{e}");
        }
        // Neighbouring names are not ours and stay ignored.
        for name in [
            "CUDA_DEVICE_MEMORY_LIMITX",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE_1",
            "XCUDA_DEVICE_MEMORY_LIMIT_X",
            "cuda_device_memory_limit_x",
            "CUDA_DEVICE_SM_LIMITS",
        ] {
            assert_eq!(vars(&[(name, "junk")]).unwrap(), Config::default(), "{name}");
        }
        // All sixteen indices are fine.
        let names: Vec<String> = (0..MAX_DEVICES).map(|i| format!("CUDA_DEVICE_MEMORY_LIMIT_{i}")).collect();
        let c = from_vars(names.iter().map(|n| (n.clone(), "1m".to_string()))).unwrap();
        assert_eq!(c.memory_limits, [Some(MIB); MAX_DEVICES]);
        // from_lookup cannot enumerate names: a bad suffix goes unseen there.
        let c = from_lookup(|n| (n == "CUDA_DEVICE_MEMORY_LIMIT_X").then(|| "1g".to_string()));
        assert_eq!(c.unwrap(), Config::default());
    }

    #[test]
    fn the_first_bad_name_is_reported_deterministically() {
        for _ in 0..8 {
            let e = err(&[("CUDA_DEVICE_SM_LIMIT_Z", "1"), ("CUDA_DEVICE_MEMORY_LIMIT_Y", "1"), ("CUDA_DEVICE_MEMORY_LIMIT_X", "1")]);
            assert_eq!(e.var, "CUDA_DEVICE_MEMORY_LIMIT_X");
        }
    }

    #[test]
    fn duplicate_names_last_wins() {
        let c = vars(&[(VAR_MEMORY_LIMIT, "garbage"), (VAR_MEMORY_LIMIT, "1g")]).unwrap();
        assert_eq!(c.memory_limit(0), Some(GIB));
    }

    #[test]
    fn region_path() {
        let c = vars(&[(VAR_REGION_PATH, "/usr/local/vgpu/abc.cache")]).unwrap();
        assert_eq!(c.region_path, Some(PathBuf::from("/usr/local/vgpu/abc.cache")));
        for (value, problem) in [
            ("", "empty"),
            ("cudevshr.cache", "not an absolute path"),
            ("./x", "not an absolute path"),
            (" /tmp/x", "not an absolute path"),
        ] {
            let e = err(&[(VAR_REGION_PATH, value)]);
            assert_eq!(e.problem, problem, "{value:?}");
            assert_eq!(e.expected, PATH_SYNTAX);
        }
    }

    #[test]
    fn policies() {
        for (text, want) in [
            ("default", UtilizationPolicy::Default),
            ("DEFAULT", UtilizationPolicy::Default),
            ("force", UtilizationPolicy::Force),
            ("FORCE", UtilizationPolicy::Force),
            ("Force", UtilizationPolicy::Force),
            ("disable", UtilizationPolicy::Disable),
            (" DISABLE\n", UtilizationPolicy::Disable),
        ] {
            assert_eq!(parse_policy(text), Ok(want), "{text:?}");
            assert_eq!(vars(&[(VAR_POLICY, text)]).unwrap().policy, want);
        }
        for text in ["", "forced", "disabled", "on", "0", "ſorce"] {
            assert!(parse_policy(text).is_err(), "{text:?}");
            assert_eq!(err(&[(VAR_POLICY, text)]).expected, POLICY_SYNTAX);
        }
    }

    #[test]
    fn log_levels() {
        for level in 0..=4u8 {
            assert_eq!(parse_log_level(&level.to_string()), Ok(level));
            let c = vars(&[(VAR_LOG_LEVEL, &level.to_string())]).unwrap();
            assert_eq!(c.log_level, level);
        }
        for (text, problem) in
            [("5", "5 is out of range"), ("255", "255 is out of range"), ("-1", "negative"), ("", "empty"), ("debug", "not a whole number")]
        {
            assert_eq!(parse_log_level(text).unwrap_err().problem, problem, "{text:?}");
            let e = err(&[(VAR_LOG_LEVEL, text)]);
            assert_eq!(e.expected, LOG_LEVEL_SYNTAX);
        }
    }

    #[test]
    fn visible_devices_forms() {
        use VisibleDevice::*;
        let gpu = format!("GPU-{UUID}");
        let mig_new = format!("MIG-{UUID2}");
        let mig_old = format!("MIG-GPU-{UUID}/1/0");
        let table: Vec<(String, Vec<VisibleDevice>)> = vec![
            ("".into(), vec![]),
            ("  ".into(), vec![]),
            ("-1".into(), vec![]),
            (" -1 ".into(), vec![]),
            ("0".into(), vec![Index(0)]),
            ("1,0".into(), vec![Index(1), Index(0)]),
            (" 2 , 3 ".into(), vec![Index(2), Index(3)]),
            ("07".into(), vec![Index(7)]),
            (gpu.clone(), vec![Uuid(gpu.clone())]),
            ("GPU-8932f937".into(), vec![Uuid("GPU-8932f937".into())]),
            ("GPU-8932F937-".into(), vec![Uuid("GPU-8932F937-".into())]),
            ("GPU-8".into(), vec![Uuid("GPU-8".into())]),
            (mig_new.clone(), vec![Mig(mig_new.clone())]),
            (mig_old.clone(), vec![Mig(mig_old.clone())]),
            (format!("0, {gpu},{mig_new}"), vec![Index(0), Uuid(gpu.clone()), Mig(mig_new.clone())]),
        ];
        for (text, want) in table {
            assert_eq!(parse_visible_devices(&text), Ok(want.clone()), "{text:?}");
            let c = vars(&[(VAR_VISIBLE_DEVICES, &text)]).unwrap();
            assert_eq!(c.visible_devices, Some(want), "{text:?}");
        }
        let all: Vec<String> = (0..MAX_DEVICES).map(|i| i.to_string()).collect();
        assert_eq!(parse_visible_devices(&all.join(",")).unwrap().len(), MAX_DEVICES);
    }

    #[test]
    fn visible_devices_refusals() {
        let seventeen: Vec<String> = (0..=MAX_DEVICES).map(|i| i.to_string()).collect();
        let seventeen = seventeen.join(",");
        let long_uuid = format!("GPU-{UUID}0");
        let cases: Vec<(String, &str)> = vec![
            ("0,,1".into(), "entry 1 is empty"),
            ("0,1,".into(), "entry 2 is empty"),
            (",".into(), "entry 0 is empty"),
            ("0,-1".into(), "is negative"),
            ("-2".into(), "is negative"),
            ("4294967296".into(), "entry 0 is an index too large"),
            ("0,0".into(), "may name the same device as entry 0"),
            ("1,01".into(), "may name the same device as entry 0"),
            ("GPU-8932f937,GPU-8932F937-d72c".into(), "may name the same device"),
            (format!("GPU-{UUID},GPU-{UUID}"), "may name the same device"),
            (format!("MIG-{UUID2},MIG-{}", UUID2.to_uppercase()), "may name the same device"),
            ("GPU-".into(), "not a GPU UUID"),
            ("GPU--".into(), "not a GPU UUID"),
            ("GPU-xyz".into(), "not a GPU UUID"),
            ("GPU-8932f9370".into(), "not a GPU UUID"),
            (long_uuid, "not a GPU UUID"),
            ("gpu-8932f937".into(), "not an index"),
            ("MIG-8932f937".into(), "not a full MIG UUID"),
            (format!("MIG-GPU-{UUID}"), "not MIG-GPU-"),
            (format!("MIG-GPU-{UUID}/1"), "not MIG-GPU-"),
            (format!("MIG-GPU-{UUID}/1/x"), "not MIG-GPU-"),
            (format!("MIG-GPU-{UUID}/1/0/2"), "not MIG-GPU-"),
            ("MIG-GPU-8932f937/1/0".into(), "not MIG-GPU-"),
            ("0;1".into(), "not an index"),
            ("0 1".into(), "not an index"),
            ("+1".into(), "not an index"),
            ("all".into(), "not an index"),
            ("１".into(), "not an index"),
            (seventeen, "more than 16 devices"),
        ];
        for (text, problem) in cases {
            let e = parse_visible_devices(&text).unwrap_err();
            assert!(e.problem.contains(problem), "{text:?}: {}", e.problem);
            assert_eq!(e.expected, VISIBLE_DEVICES_SYNTAX);
            let ce = err(&[(VAR_VISIBLE_DEVICES, &text)]);
            assert_eq!((ce.var.as_str(), ce.value.as_str()), (VAR_VISIBLE_DEVICES, text.as_str()));
        }
    }

    #[test]
    fn visible_device_display_round_trips() {
        let text = format!("3,GPU-{UUID},MIG-GPU-{UUID2}/7/1");
        let devices = parse_visible_devices(&text).unwrap();
        let back: Vec<String> = devices.iter().map(ToString::to_string).collect();
        assert_eq!(back.join(","), text);
    }

    #[test]
    fn check_order_is_fixed() {
        // Names first, then memory, SM, region, policy, log level, visible devices.
        let e = err(&[
            (VAR_VISIBLE_DEVICES, "x"),
            (VAR_LOG_LEVEL, "x"),
            (VAR_POLICY, "x"),
            (VAR_REGION_PATH, "x"),
            (VAR_SM_LIMIT, "x"),
            (VAR_MEMORY_LIMIT, "x"),
        ]);
        assert_eq!(e.var, VAR_MEMORY_LIMIT);
        let e = err(&[(VAR_VISIBLE_DEVICES, "x"), (VAR_LOG_LEVEL, "x")]);
        assert_eq!(e.var, VAR_LOG_LEVEL);
    }

    #[test]
    fn non_utf8_values_are_errors() {
        let get = |name: &str| -> Option<Raw> { (name == VAR_POLICY).then(|| Err("for\u{FFFD}e".to_string())) };
        let e = build(&get, None).unwrap_err();
        assert_eq!(e.var, VAR_POLICY);
        assert_eq!(e.problem, "not valid UTF-8");
    }

    #[test]
    fn from_env_reads_this_process() {
        // The test environment sets none of these variables unless a developer exported them;
        // in any case reading it must not panic.
        let _ = from_env();
    }
}
