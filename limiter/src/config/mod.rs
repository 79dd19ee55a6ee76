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
//! | `CUDA_TASK_PRIORITY` | `0` high, `1` low (HAMi's default): low-priority launches wait while a high-priority container has work on the device |
//! | `VGPU_PRIORITY_FLOOR` | percent of time low-priority launches still pass while high-priority work is in flight (default 0: they wait) |
//! | `VGPU_PRIORITY_BOARD` | absolute path of the node-wide priority board every container maps (default: in HAMi's `/tmp/vgpulock` when it exists, else `/tmp/vgpu-priority.board`) |
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

/// The container's priority (HAMi's contract: 0 high, 1 low).
pub const VAR_TASK_PRIORITY: &str = "CUDA_TASK_PRIORITY";
/// The share low-priority launches keep while high-priority work is in flight.
pub const VAR_PRIORITY_FLOOR: &str = "VGPU_PRIORITY_FLOOR";
/// The node-wide priority board.
pub const VAR_PRIORITY_BOARD: &str = "VGPU_PRIORITY_BOARD";
/// The board's path when `VGPU_PRIORITY_BOARD` is unset and HAMi's lock directory is absent.
pub const DEFAULT_PRIORITY_BOARD: &str = "/tmp/vgpu-priority.board";
/// The directory HAMi's device plugin (and KAI's and Koordinator's) creates on every node and
/// mounts into every GPU container: a board in it is node-wide with no extra mount.
pub const HAMI_LOCK_DIR: &str = "/tmp/vgpulock";
/// The largest `VGPU_PRIORITY_FLOOR`: above half, "low priority" would no longer mean anything.
pub const MAX_PRIORITY_FLOOR: u8 = 50;

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
/// Accepted priorities, for error messages.
pub const PRIORITY_SYNTAX: &str = "0 (high priority) or 1 (low priority, the default)";
/// Accepted priority floors, for error messages.
pub const FLOOR_SYNTAX: &str = "a whole percentage from 0 to 50, such as 5 (0: low-priority launches wait)";
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

/// A container's priority on its devices (`CUDA_TASK_PRIORITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// `0`: its work in flight holds low-priority containers' launches back.
    High,
    /// `1`, HAMi's default: waits while high-priority work is in flight.
    #[default]
    Low,
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
    /// `CUDA_TASK_PRIORITY`; `None` when unset (low, as HAMi's default).
    pub priority: Option<Priority>,
    /// `VGPU_PRIORITY_FLOOR`, percent 0..=50; 0 when unset.
    pub priority_floor: u8,
    /// `VGPU_PRIORITY_BOARD`; `None` when unset (`priority::board::path`).
    pub priority_board: Option<PathBuf>,
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
            priority: None,
            priority_floor: 0,
            priority_board: None,
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

    /// The container's priority: low unless `CUDA_TASK_PRIORITY` says high.
    pub fn task_priority(&self) -> Priority {
        self.priority.unwrap_or_default()
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

/// Where the region goes under KAI Scheduler's resource isolator, which sets no
/// `CUDA_DEVICE_MEMORY_SHARED_CACHE` but `CONTAINER_VGPU_MOUNT` (the node's shared directory,
/// absolute), `POD_UID` and `CONTAINER_NAME`: HAMi-core's per-container layout,
/// `<mount>/containers/<pod uid>_<container>/usage.cache`. `None` unless all three are usable
/// (no separators or dot names that would leave the layout).
pub fn kai_region_path(mount: &str, pod_uid: &str, container: &str) -> Option<PathBuf> {
    let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
    (mount.starts_with('/') && plain(pod_uid) && plain(container))
        .then(|| PathBuf::from(mount).join("containers").join(format!("{pod_uid}_{container}")).join("usage.cache"))
}

/// Parses `CUDA_TASK_PRIORITY`: `0` (high) or `1` (low).
pub fn parse_priority(text: &str) -> Result<Priority, ValueError> {
    match text.trim() {
        "" => Err(ValueError::new("empty", PRIORITY_SYNTAX)),
        "0" => Ok(Priority::High),
        "1" => Ok(Priority::Low),
        _ => Err(ValueError::new("not a priority", PRIORITY_SYNTAX)),
    }
}

/// Parses `VGPU_PRIORITY_FLOOR`: a whole percentage 0..=50.
pub fn parse_priority_floor(text: &str) -> Result<u8, ValueError> {
    parse_small(text, MAX_PRIORITY_FLOOR, FLOOR_SYNTAX)
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
    config.priority = read(get, VAR_TASK_PRIORITY, parse_priority)?;
    config.priority_floor = read(get, VAR_PRIORITY_FLOOR, parse_priority_floor)?.unwrap_or(0);
    config.priority_board = read(get, VAR_PRIORITY_BOARD, parse_region_path)?;
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
mod tests;
