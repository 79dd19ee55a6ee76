//! Why a region could not be opened, and why an allocation was refused.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::layout::{MAX_SLOTS, UNLIMITED};

/// Why a region could not be opened.
#[derive(Debug)]
pub enum RegionError {
    /// A system call failed.
    Io { path: PathBuf, op: &'static str, err: io::Error },
    /// The path is a symbolic link (never followed).
    Symlink { path: PathBuf },
    /// The path is not a regular file.
    NotRegular { path: PathBuf },
    /// The file belongs to another user.
    WrongOwner { path: PathBuf, owner: u32, me: u32 },
    /// The file is not a vgpu region.
    BadMagic { path: PathBuf },
    /// The region was written by a vgpu of another layout version.
    VersionMismatch { path: PathBuf, found: u32, expected: u32 },
    /// The file has the wrong size (truncated, or another layout).
    WrongSize { path: PathBuf, found: u64, expected: u64 },
    /// Its creator never finished initialising it.
    NotReady { path: PathBuf },
    /// Live processes use the region with another quota.
    QuotaMismatch { path: PathBuf, device: usize, region: u64, requested: u64 },
    /// Every process slot is taken by a live process.
    SlotsExhausted { path: PathBuf },
}

fn quota_text(q: u64) -> String {
    if q == UNLIMITED { "unlimited".into() } else { format!("{q} bytes") }
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RegionError::*;
        match self {
            Io { path, op, err } => write!(f, "accounting region {}: {op} failed: {err}", path.display()),
            Symlink { path } => write!(f, "accounting region {} is a symbolic link; refusing to follow it", path.display()),
            NotRegular { path } => write!(f, "accounting region {} is not a regular file", path.display()),
            WrongOwner { path, owner, me } => {
                write!(f, "accounting region {} belongs to uid {owner}, not to this process's uid {me}", path.display())
            }
            BadMagic { path } => write!(f, "{} is not a vgpu accounting region (bad magic)", path.display()),
            VersionMismatch { path, found, expected } => write!(
                f,
                "accounting region {} has layout version {found}, this vgpu reads version {expected}; stop its processes and remove it",
                path.display()
            ),
            WrongSize { path, found, expected } => {
                write!(f, "accounting region {} is {found} bytes, expected {expected} (truncated or foreign)", path.display())
            }
            NotReady { path } => write!(f, "accounting region {} was never initialised by its creator", path.display()),
            QuotaMismatch { path, device, region, requested } => write!(
                f,
                "accounting region {} gives device {device} a quota of {}, but this process is configured for {}; live processes use it",
                path.display(),
                quota_text(*region),
                quota_text(*requested)
            ),
            SlotsExhausted { path } => write!(f, "accounting region {}: all {MAX_SLOTS} process slots are in use", path.display()),
        }
    }
}

impl std::error::Error for RegionError {}

/// An allocation refused because it does not fit the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The device's quota.
    pub quota: u64,
    /// What the container held when refused.
    pub used: u64,
    /// What was asked for.
    pub requested: u64,
}
