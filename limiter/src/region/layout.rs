//! The bytes of an accounting region. Everything in it is an atomic integer: no pointers, no
//! locks, nothing whose layout depends on the C library.
//!
//! ```text
//! [0, 4096)                 Header
//! [4096, +16 × 64)          DeviceLedger × MAX_DEVICES
//! [.., +16 × 64)            SmBucket × MAX_DEVICES (one cache line each, for the SM limiter)
//! [SLOTS_OFF, +1024 × 448)  Slot × MAX_SLOTS
//! ```
use std::sync::atomic::{AtomicU32, AtomicU64};

/// "VGPUREG" and a NUL: the first 8 bytes of every region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VGPUREG\0");
/// Layout version; a region of another version is refused, never reinterpreted.
pub const LAYOUT_VERSION: u32 = 2;
/// Devices a region accounts for (device indices as the application sees them).
pub use crate::config::MAX_DEVICES;
/// Process slots: processes of one container using the GPU at once.
pub const MAX_SLOTS: usize = 1024;
/// Quota of a device with no limit.
pub const UNLIMITED: u64 = u64::MAX;

/// The header, in the region's first page.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`] once initialised (written before `ready`).
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU32,
    /// [`MAX_DEVICES`].
    pub devices: AtomicU32,
    /// [`MAX_SLOTS`].
    pub slots: AtomicU32,
    /// 1 once the creator has finished initialising (the publication point).
    pub ready: AtomicU32,
    /// Size of the file in bytes.
    pub file_size: AtomicU64,
    /// Highest slot index ever claimed + 1: scans stop there.
    pub slots_high: AtomicU32,
    /// Reserved.
    pub _pad: AtomicU32,
    /// Source of slot generations: each claim takes the next value.
    pub generation: AtomicU64,
}

/// Memory accounting of one device, shared by every process of the container.
#[repr(C, align(64))]
pub struct DeviceLedger {
    /// Bytes the container may hold ([`UNLIMITED`] when unlimited).
    pub quota: AtomicU64,
    /// Bytes held by the container's processes, live or not yet reaped.
    pub used: AtomicU64,
    /// Highest `used` seen.
    pub peak: AtomicU64,
    /// Allocations refused for the quota.
    pub refusals: AtomicU64,
    /// The device's UUID (16 bytes, little-endian words) as the driver reports it, written by
    /// the container's processes at their first context there; 0 until then (node tools label
    /// metrics with it). Was reserved (zero) in earlier regions of this version.
    pub uuid: [AtomicU64; 2],
    /// Reserved.
    pub _pad: [AtomicU64; 2],
}

/// One cache line per device for the container's SM token bucket.
#[repr(C, align(64))]
pub struct SmBucket {
    /// The bucket's state words (owned by the SM limiter).
    pub words: [AtomicU64; 8],
}

/// Slot states.
pub mod state {
    /// Nobody owns the slot.
    pub const FREE: u32 = 0;
    /// A live process owns it (and holds the lock on its first byte).
    pub const LIVE: u32 = 1;
}

/// One process's share of the accounting.
#[repr(C, align(64))]
pub struct Slot {
    /// [`state::FREE`] or [`state::LIVE`].
    pub state: AtomicU32,
    /// The owner's PID as the container sees it (informational only: liveness is the lock).
    pub pid: AtomicU32,
    /// Which claim of this slot this is (distinguishes a slot's successive owners).
    pub generation: AtomicU64,
    /// When the owner claimed it (ns, CLOCK_MONOTONIC).
    pub started_ns: AtomicU64,
    /// The owner's PID in the host's namespace, as the GPU driver knows it (0 until found;
    /// see `hostpid`).
    pub host_pid: AtomicU32,
    /// Reserved.
    pub _pad: AtomicU32,
    /// Keeps `used` off the line every reaper scan reads (`state`): the owner's update right
    /// after a reservation then hits its own cache line, which keeps the crash window short.
    pub _line: [AtomicU64; 4],
    /// Bytes this process holds, per device.
    pub used: [AtomicU64; MAX_DEVICES],
    /// Allocations of this process refused for the quota, per device.
    pub refusals: [AtomicU64; MAX_DEVICES],
    /// Of `used`, the bytes no hook charged: what the driver attributes to this process beyond
    /// what its hooks charged (reconciliation), per device.
    pub unhooked: [AtomicU64; MAX_DEVICES],
}

/// Offset of the device ledgers.
pub const LEDGERS_OFF: usize = 4096;
/// Offset of the SM buckets.
pub const BUCKETS_OFF: usize = LEDGERS_OFF + MAX_DEVICES * size_of::<DeviceLedger>();
/// Offset of the slots.
pub const SLOTS_OFF: usize = (BUCKETS_OFF + MAX_DEVICES * size_of::<SmBucket>()).next_multiple_of(4096);
/// Size of a region file.
pub const FILE_SIZE: usize = (SLOTS_OFF + MAX_SLOTS * size_of::<Slot>()).next_multiple_of(4096);

const _: () = assert!(size_of::<Header>() <= LEDGERS_OFF);
const _: () = assert!(size_of::<DeviceLedger>() == 64);
const _: () = assert!(size_of::<SmBucket>() == 64);
const _: () = assert!(SLOTS_OFF.is_multiple_of(64));
