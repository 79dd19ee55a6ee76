//! The shim's per-process state: read once on the first hooked call (never in a library
//! constructor), and renewed in a child after `fork`.
//!
//! * **Enforce**: limits are configured; allocations go through the container's region.
//! * **Forward**: `CUDA_DISABLE_CONTROL=true`, or nothing to enforce: every hook forwards.
//! * **Refuse**: the configuration or the region is unusable: one line on stderr, then every
//!   hooked call fails closed (a typo must not lift a tenant's quota).
//!
//! The hooks see this through `hooks::gate`, which names the same three states.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Mutex, OnceLock};

use vgpu_limiter::accounting::{LimitBook, VmmBook};
use vgpu_limiter::config::{self, Config, MAX_DEVICES};
use vgpu_limiter::region::Region;

use crate::log;

/// What the shim does in this process (one value per process, so its size is no concern).
#[allow(clippy::large_enum_variant)]
pub enum Mode {
    /// Enforcing limits.
    Enforce(Shim),
    /// Forwarding everything.
    Forward,
    /// Refusing everything (bad configuration or region).
    Refuse,
}

/// The enforcing state.
pub struct Shim {
    /// The configuration read at start.
    pub config: Config,
    region: AtomicPtr<Region>,
    broken: AtomicBool,
    /// Contexts per device, and what creating them cost.
    pub contexts: ContextBook,
    /// Memory pools and the device each belongs to.
    pub pools: crate::hooks::pools::PoolTable,
    /// Context limits raised by the program, and what they are charged (not a hot path).
    pub limits: parking_lot::Mutex<LimitBook>,
    /// When each device's unhooked bytes were last reconciled with the driver's figure.
    pub reconciled: crate::hooks::reconcile::Reconciled,
    /// Graph memory: what graphs will map, and what is charged.
    pub graphs: crate::hooks::graphs::GraphMemory,
    /// Physical VMM handles mapped into address ranges (not a hot path: a lock is fine).
    pub vmm: parking_lot::Mutex<VmmBook>,
    /// The SM share.
    pub sm: crate::share::SmState,
    /// Host-PID discovery: serialised, and once per device.
    pub discovery: crate::hooks::hostpid::Discovery,
    /// `CUDA_TASK_PRIORITY`: this process's side of the node-wide priority board.
    pub priority: crate::hooks::priority::PriorityState,
}

/// Live contexts per device in this process and the memory their creation took.
#[derive(Default)]
pub struct ContextBook {
    /// Live contexts (primary counted once while retained) per device.
    pub live: [AtomicU32; MAX_DEVICES],
    /// Retains of each device's primary context.
    pub primary_refs: [AtomicU32; MAX_DEVICES],
    /// Bytes charged for each device's primary context.
    pub primary_cost: [AtomicU64; MAX_DEVICES],
    /// Created contexts: handle → (device, bytes charged).
    pub created: parking_lot::Mutex<HashMap<usize, (usize, u64)>>,
}

impl ContextBook {
    /// Forgets every context: only in a child's renewal after `fork`.
    fn reset(&self) {
        for d in 0..MAX_DEVICES {
            self.live[d].store(0, Relaxed);
            self.primary_refs[d].store(0, Relaxed);
            self.primary_cost[d].store(0, Relaxed);
        }
        // A parent thread may have held the lock at fork: it does not exist here to unlock.
        if self.created.is_locked() {
            // SAFETY: only in a child's renewal, which every hook of this process waits for
            // before taking this lock, so a holder can only be a parent thread that fork left
            // behind; the map is cleared right after.
            unsafe { self.created.force_unlock() };
        }
        self.created.lock().clear();
    }
}

static MODE: OnceLock<Mode> = OnceLock::new();
static FORKED: AtomicBool = AtomicBool::new(false);

/// The shim's mode, initialised on first use.
pub fn mode() -> &'static Mode {
    MODE.get_or_init(init)
}

/// The descriptor of this process's region (closed in a child right after `fork`).
static INHERITED_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Runs in the child right after `fork`, before any other code: async-signal-safe work only.
/// Closing the inherited descriptor drops the child's reference to the parent's open file
/// description, so the parent's slot lock dies with the parent even while children live.
extern "C" fn after_fork_in_child() {
    let fd = INHERITED_FD.swap(-1, AcqRel);
    if fd >= 0 {
        // SAFETY: close(2) is async-signal-safe; the inherited Region never uses it again.
        unsafe { libc::close(fd) };
    }
    FORKED.store(true, Release);
    crate::hooks::fast::after_fork_in_child();
    vgpu_limiter::sm::tsc::LAUNCH_CLOCK.reset_after_fork();
}

fn default_region_path() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    PathBuf::from(format!("/tmp/vgpu-{}.region", unsafe { libc::geteuid() }))
}

/// KAI Scheduler's isolator's region path (`config::kai_region_path`), when its variables
/// are set and the directory can be made (else the default path, as HAMi-core falls back to
/// /tmp).
fn kai_region_path() -> Option<PathBuf> {
    let var = |k| std::env::var(k).ok();
    let path = config::kai_region_path(&var("CONTAINER_VGPU_MOUNT")?, &var("POD_UID")?, &var("CONTAINER_NAME")?)?;
    std::fs::create_dir_all(path.parent()?).ok()?;
    Some(path)
}

fn init() -> Mode {
    let config = match config::from_env() {
        Ok(c) => c,
        Err(e) => {
            log::error(format_args!("{e}; every CUDA and NVML call fails until it is fixed"));
            return Mode::Refuse;
        }
    };
    log::set_level(config.log_level);
    if config.control_disabled {
        log::debug(format_args!("CUDA_DISABLE_CONTROL is set: passing every call through"));
        return Mode::Forward;
    }
    // A priority given explicitly is something to enforce too (HAMi's default, low, is not
    // enough on its own: a process with no limit and no priority passes through).
    let limited = config.priority.is_some() || (0..MAX_DEVICES).any(|d| config.memory_limit(d).is_some() || config.sm_limit(d).is_some());
    if !limited {
        if std::env::var_os("CONTAINER_VGPU_MOUNT").is_some() || std::env::var_os("POD_UID").is_some() {
            // Injected by a platform (KAI's isolator sets these) that gave no limit: say so, since
            // a missing limit there is a misconfiguration, not a choice.
            log::warn(format_args!(
                "loaded into a platform's container without CUDA_DEVICE_MEMORY_LIMIT or CUDA_DEVICE_SM_LIMIT: nothing is limited"
            ));
        } else {
            log::debug(format_args!("no limit configured: passing every call through"));
        }
        return Mode::Forward;
    }
    let region_path = config.region_path.clone().or_else(kai_region_path).unwrap_or_else(default_region_path);
    let quotas: [Option<u64>; MAX_DEVICES] = std::array::from_fn(|d| config.memory_limit(d));
    let region = match Region::open(&region_path, &quotas, 0o600) {
        Ok(r) => r,
        Err(e) => {
            log::error(format_args!("{e}; every CUDA and NVML call fails until it is fixed"));
            return Mode::Refuse;
        }
    };
    INHERITED_FD.store(region.raw_fd(), Release);
    // SAFETY: registering a handler that only closes a descriptor and stores to atomics.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    Mode::Enforce(Shim::new(config, Some(region)))
}

impl Shim {
    /// The enforcing state for `config`, over `region` (leaked: no Region is ever freed). With
    /// no region (the hook bodies' unit tests, which give the bodies one directly) it is broken.
    fn new(config: Config, region: Option<Region>) -> Shim {
        let sm = crate::share::SmState::new(&config);
        let priority = crate::hooks::priority::PriorityState::new(&config);
        Shim {
            priority,
            broken: AtomicBool::new(region.is_none()),
            region: AtomicPtr::new(region.map_or(std::ptr::null_mut(), |r| Box::into_raw(Box::new(r)))),
            contexts: ContextBook::default(),
            config,
            pools: Default::default(),
            graphs: Default::default(),
            reconciled: Default::default(),
            limits: parking_lot::Mutex::new(LimitBook::default()),
            vmm: parking_lot::Mutex::new(VmmBook::default()),
            sm,
            discovery: Default::default(),
        }
    }

    /// A shim with no region of its own, for the hook bodies' unit tests.
    #[cfg(test)]
    pub fn for_tests(config: Config) -> Shim {
        Shim::new(config, None)
    }

    /// The region, renewed first if this process is a child that has not yet done so.
    /// `None` once renewing failed (every call then fails closed).
    pub fn region(&self) -> Option<&Region> {
        if FORKED.load(Acquire) {
            self.renew_after_fork();
        }
        if self.broken.load(Relaxed) {
            return None;
        }
        // SAFETY: the pointer is a leaked Box, replaced only while FORKED is set (every thread
        // waits for the renewal then); no Region is ever freed.
        Some(unsafe { &*self.region.load(Acquire) })
    }

    /// In a child after `fork`: a region of its own (the atfork handler already closed the
    /// inherited descriptor, so the parent's slot lock is not kept alive by the child). Every
    /// thread that sees FORKED waits here until the first has renewed; the inherited mapping
    /// is left in place (a few MiB), so no thread can touch unmapped memory.
    fn renew_after_fork(&self) {
        static RENEW: Mutex<()> = Mutex::new(());
        let _one_at_a_time = RENEW.lock().unwrap_or_else(|e| e.into_inner());
        if !FORKED.load(Acquire) {
            return;
        }
        self.contexts.reset();
        self.discovery.reset();
        self.pools.clear();
        self.graphs.clear();
        self.reconciled.clear();
        if self.vmm.is_locked() {
            // SAFETY: as for `created` in ContextBook::reset: the holder is a parent thread
            // that does not exist in this child; the book is replaced right after.
            unsafe { self.vmm.force_unlock() };
        }
        *self.vmm.lock() = VmmBook::default();
        if self.limits.is_locked() {
            // SAFETY: as for `vmm` above.
            unsafe { self.limits.force_unlock() };
        }
        *self.limits.lock() = LimitBook::default();
        self.sm.after_fork();
        self.priority.after_fork();
        // SAFETY: the inherited handle, never freed; only its mapping is read.
        let inherited = unsafe { &*self.region.load(Acquire) };
        match inherited.reopen_after_fork() {
            Ok(r) => {
                INHERITED_FD.store(r.raw_fd(), Release);
                self.region.store(Box::into_raw(Box::new(r)), Release);
            }
            Err(e) => {
                log::error(format_args!("after fork: {e}; CUDA calls in this child fail"));
                self.broken.store(true, Release);
            }
        }
        FORKED.store(false, Release);
    }
}
