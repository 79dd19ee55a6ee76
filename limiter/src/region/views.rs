//! What tools and views read from a region: per-device and per-process figures, the
//! read-only [`Observer`] for `vgpu ps` and the exporter, and how a quota looks to the
//! application.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;

use super::layout::*;
use super::{Region, RegionError, file};
use crate::allocations::AllocationMap;

/// One device's figures as the shim and the CLI show them; `used + free == quota` always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// Device index.
    pub device: usize,
    /// The quota, `None` when unlimited.
    pub quota: Option<u64>,
    /// Bytes held (clamped to the quota).
    pub used: u64,
    /// `quota - used` (0 when unlimited).
    pub free: u64,
    /// Highest `used` seen.
    pub peak: u64,
    /// Allocations refused for the quota.
    pub refusals: u64,
    /// Bytes counted on the device but held by no slot (see the module's crash windows).
    pub unattributed: u64,
    /// Of `used`, the bytes no hook charged: the driver attributes them to the container's
    /// processes beyond what their hooks charged (reconciliation).
    pub unhooked: u64,
    /// The device's UUID once a process of the container has created a context on it.
    pub uuid: Option<[u8; 16]>,
}

/// A UUID as NVIDIA's tools spell it: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", h[0..4].concat(), h[4..6].concat(), h[6..8].concat(), h[8..10].concat(), h[10..16].concat())
}

/// One process's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessView {
    /// Slot index.
    pub slot: usize,
    /// PID as its container sees it.
    pub pid: u32,
    /// PID in the host's namespace, as the GPU driver knows it (0: not found).
    pub host_pid: u32,
    /// Claim generation of the slot.
    pub generation: u64,
    /// Whether the process is alive (it holds its slot's lock).
    pub alive: bool,
    /// Bytes held per device.
    pub used: [u64; MAX_DEVICES],
    /// Of `used`, the bytes no hook charged, per device.
    pub unhooked: [u64; MAX_DEVICES],
}

/// A read-only view of a region, for tools (`vgpu ps`, the exporter): it never registers,
/// reaps, writes or waits, so it cannot disturb the processes using the region.
pub struct Observer {
    inner: Region,
}

impl Observer {
    /// Opens `path` read-only. The file must be a complete, published region of this layout
    /// (any owner: a node's tools read every container's region).
    pub fn open(path: &Path) -> Result<Observer, RegionError> {
        let Some(fd) = file::open_file(path, libc::O_RDONLY)? else {
            let err = io::Error::from_raw_os_error(libc::ENOENT);
            return Err(RegionError::Io { path: path.to_path_buf(), op: "open", err });
        };
        let checked = file::check_file(path, fd, false).and_then(|()| match file::file_size(fd) {
            size if size == FILE_SIZE as u64 => file::map_file(path, fd, false),
            found => Err(RegionError::WrongSize { path: path.to_path_buf(), found, expected: FILE_SIZE as u64 }),
        });
        let base = match checked {
            Ok(base) => base,
            Err(e) => {
                // SAFETY: our own fd, not yet owned by a Region.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        let inner =
            Region { base, fd, path: path.to_path_buf(), slot: usize::MAX, generation: 0, allocations: AllocationMap::with_capacity(0) };
        inner.check_header()?;
        Ok(Observer { inner })
    }

    /// The device's figures; `used + free == quota`.
    pub fn device_view(&self, device: usize) -> DeviceView {
        self.inner.device_view(device)
    }

    /// Every claimed slot, live or dead-not-yet-reaped.
    pub fn processes(&self) -> Vec<ProcessView> {
        self.inner.processes()
    }

    /// The SM bucket line of `device` (read-only).
    pub fn sm_bucket(&self, device: usize) -> &SmBucket {
        self.inner.sm_bucket(device)
    }

    /// The region's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// What a device with quota `quota` and container usage `used` looks like to the application,
/// given the device's physical (total, free): total = the quota (never more than the card),
/// free = what is left of it (never below zero, never more than the card has free). The
/// application's `used` is `total - free`, so `used + free == total` holds in every view.
pub fn quota_view(quota: u64, used: u64, phys_total: u64, phys_free: u64) -> (u64, u64) {
    let total = quota.min(phys_total);
    let free = total.saturating_sub(used).min(phys_free);
    (total, free)
}
