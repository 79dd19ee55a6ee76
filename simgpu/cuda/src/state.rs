//! The process-local half of the simulated driver: devices visible to this process, and every
//! object handed out (contexts, streams, events, modules, allocations, pools, graphs).
//!
//! Handles are opaque integers looked up in maps, never dereferenced, so a stale or forged
//! handle is an error code, not a crash. All objects live behind one mutex; nothing sleeps
//! while holding it.
#![allow(unsafe_code)]

use simgpu::machine::Point;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cuda_sys::driver::{CUcontext, CUresult, CUstream};
use simgpu::config::SimConfig;
use simgpu::machine::Machine;

use CUresult as R;

/// The initialised driver of this process.
pub struct Driver {
    /// The machine's configuration.
    pub cfg: SimConfig,
    /// The shared machine.
    pub machine: Machine,
    /// Physical device index of each ordinal this process sees (after `CUDA_VISIBLE_DEVICES`).
    pub visible: Vec<u32>,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

static DRIVER: OnceLock<Result<Driver, R>> = OnceLock::new();

thread_local! {
    /// This thread's context stack; the top is the current context.
    static CTX_STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Initialises the driver once (what `cuInit` does); later calls return the first outcome.
pub fn init() -> Result<&'static Driver, R> {
    DRIVER.get_or_init(build).as_ref().map_err(|e| *e)
}

/// The driver, or `CUDA_ERROR_NOT_INITIALIZED` before a successful `cuInit`.
pub fn driver() -> Result<&'static Driver, R> {
    match DRIVER.get() {
        Some(Ok(d)) => Ok(d),
        _ => Err(R::CUDA_ERROR_NOT_INITIALIZED),
    }
}

fn build() -> Result<Driver, R> {
    let cfg = simgpu::config::from_env().map_err(|e| {
        eprintln!("simgpu: {e}");
        R::CUDA_ERROR_NO_DEVICE
    })?;
    let visible = parse_visible(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(), cfg.devices);
    if visible.is_empty() {
        return Err(R::CUDA_ERROR_NO_DEVICE);
    }
    let machine = Machine::open(&cfg).map_err(|e| {
        eprintln!("simgpu: {e}");
        R::CUDA_ERROR_NO_DEVICE
    })?;
    let n = visible.len();
    Ok(Driver {
        cfg,
        machine,
        visible,
        inner: Mutex::new(Inner { primary: vec![Primary::default(); n], pools_by_device: vec![None; n], ..Inner::default() }),
        next_id: AtomicU64::new(1),
    })
}

/// Devices named by `CUDA_VISIBLE_DEVICES`, as the real driver reads it: a comma-separated
/// list of indices or `GPU-<uuid prefix>`; the list ends at the first entry that names no
/// device (or repeats one). Unset means every device.
pub fn parse_visible(var: Option<&str>, devices: u32) -> Vec<u32> {
    let Some(list) = var else {
        return (0..devices).collect();
    };
    let mut out = Vec::new();
    for tok in list.split(',').map(str::trim) {
        let idx = if let Ok(i) = tok.parse::<u32>() {
            (i < devices).then_some(i)
        } else if let Some(prefix) = tok.strip_prefix("GPU-") {
            let matches: Vec<u32> = (0..devices)
                .filter(|&i| {
                    let uuid = simgpu::identity::uuid_string(i);
                    !prefix.is_empty() && uuid["GPU-".len()..].starts_with(prefix)
                })
                .collect();
            (matches.len() == 1).then(|| matches[0])
        } else {
            None
        };
        match idx {
            Some(i) if !out.contains(&i) => out.push(i),
            _ => break,
        }
    }
    out
}

/// Work queued on one stream.
#[derive(Default)]
pub struct StreamState {
    /// Where the stream's last queued work completes.
    pub last: Point,
    /// Where launches still pending complete, oldest first (bounded by the queue depth).
    pub pending: VecDeque<Point>,
    /// The graph being captured into, if capturing.
    pub capture: Option<u64>,
}

/// A context.
pub struct Ctx {
    /// Ordinal as this process sees it.
    pub ordinal: u32,
    /// Physical device on the machine.
    pub dev: u32,
    /// Whether this is the device's primary context.
    pub primary: bool,
    /// The context's default (NULL/legacy/per-thread) stream.
    pub null_stream: StreamState,
    /// Where the context's last queued work completes.
    pub last: Point,
    /// Its `cuCtxSetLimit` limits.
    pub limits: Limits,
}

/// A context's limits (`cuCtxSetLimit`), starting at the driver's documented defaults: a
/// 1 KiB stack per thread, an 8 MiB device `malloc` heap, a 1 MiB `printf` FIFO, 2048 pending
/// device-runtime launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `CU_LIMIT_STACK_SIZE`: bytes of stack per GPU thread.
    pub stack: u64,
    /// `CU_LIMIT_PRINTF_FIFO_SIZE`.
    pub printf_fifo: u64,
    /// `CU_LIMIT_MALLOC_HEAP_SIZE`.
    pub malloc_heap: u64,
    /// `CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT`.
    pub pending_launches: u64,
    /// `CU_LIMIT_MAX_L2_FETCH_GRANULARITY` (a hint, 0 to 128 bytes).
    pub l2_fetch: u64,
    /// `CU_LIMIT_PERSISTING_L2_CACHE_SIZE` (a hint).
    pub persisting_l2: u64,
    /// `CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED`.
    pub cig_fallback: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stack: 1024,
            printf_fifo: 1 << 20,
            malloc_heap: 8 << 20,
            pending_launches: 2048,
            l2_fetch: 64,
            persisting_l2: 0,
            cig_fallback: 1,
        }
    }
}

impl Limits {
    /// Device memory these limits reserve for a device running `threads` resident threads: a
    /// stack for every one of them, the heap and the FIFO.
    pub fn bytes(&self, threads: u64) -> u64 {
        self.stack.saturating_mul(threads).saturating_add(self.printf_fifo).saturating_add(self.malloc_heap)
    }
}

/// A primary context's bookkeeping.
#[derive(Default, Clone)]
pub struct Primary {
    /// The context while it exists.
    pub ctx: Option<u64>,
    /// Retain count.
    pub refs: u32,
    /// Flags set with `cuDevicePrimaryCtxSetFlags`.
    pub flags: u32,
}

/// A created stream.
pub struct Stream {
    /// Owning context.
    pub ctx: u64,
    /// Queued work.
    pub state: StreamState,
}

/// An event.
pub struct Event {
    /// Owning context.
    pub ctx: u64,
    /// `CU_EVENT_*` flags.
    pub flags: u32,
    /// Where the GPU reaches it, once recorded.
    pub point: Option<Point>,
    /// When it was last recorded: the GPU cannot reach it earlier (on a time-sliced machine
    /// its point is a work total, which an idle process may have reached long before).
    pub recorded_ns: u64,
}

/// A loaded module.
pub struct Module {
    /// Owning context.
    pub ctx: u64,
    /// Kernel names it contains.
    pub kernels: Vec<String>,
    /// Bytes of its global variables, charged to the context's device while it is loaded.
    pub globals: u64,
    /// Per-thread local memory (stack frame) of each kernel, where the image says it.
    pub locals: HashMap<String, u64>,
}

/// A library (`cuLibraryLoadData`): its image, and its module in each context it is loaded in.
pub struct Library {
    /// The image (PTX with its NUL, or a cubin).
    pub image: Vec<u8>,
    /// Kernel names it contains.
    pub kernels: Vec<String>,
    /// Context → the library's module there.
    pub modules: HashMap<u64, u64>,
}

/// A kernel function.
pub struct Func {
    /// Owning module.
    pub module: u64,
    /// Owning context.
    pub ctx: u64,
    /// Kernel name.
    pub name: String,
    /// Simulated cost of one wave of blocks.
    pub wave_ns: u64,
    /// Per-thread local memory (stack frame) it needs.
    pub local_bytes: u64,
}

/// What kind of allocation a device address belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AllocKind {
    /// `cuMemAlloc`.
    Device,
    /// `cuMemAllocPitch`.
    Pitch,
    /// `cuMemAllocManaged`.
    Managed,
    /// Stream-ordered, from a pool.
    Pool(u64),
}

/// A live device allocation backed by an anonymous mapping.
pub struct Alloc {
    /// Bytes requested (or pitch × height).
    pub size: usize,
    /// Bytes of the mapping (also what the device was charged).
    pub map_len: usize,
    /// Owning context (pool allocations: the pool's device's context at allocation time).
    pub ctx: u64,
    /// Physical device charged.
    pub dev: u32,
    /// Family.
    pub kind: AllocKind,
}

/// A memory pool.
pub struct Pool {
    /// Ordinal the pool belongs to.
    pub ordinal: u32,
    /// Physical device charged.
    pub dev: u32,
    /// `CU_MEMPOOL_ATTR_RELEASE_THRESHOLD`.
    pub release_threshold: u64,
    /// Bytes held from the device (in use + cached).
    pub reserved: u64,
    /// Bytes handed out.
    pub used: u64,
    /// High-water marks.
    pub reserved_high: u64,
    /// High-water mark of `used`.
    pub used_high: u64,
    /// Freed blocks kept for reuse: (address, mapping length).
    pub cached: Vec<(u64, usize)>,
    /// The three `REUSE_*` attributes.
    pub reuse: [i32; 3],
}

/// A physical allocation made by `cuMemCreate`.
pub struct Phys {
    /// Physical device charged.
    pub dev: u32,
    /// Bytes.
    pub size: usize,
    /// memfd backing it, mapped into reservations by `cuMemMap`.
    pub fd: i32,
    /// Live mappings of it.
    pub mapped: u32,
    /// References to the handle: 1 from `cuMemCreate`, one more per
    /// `cuMemRetainAllocationHandle`, one less per `cuMemRelease`. Freed when no reference and
    /// no mapping remains.
    pub refs: u32,
}

/// An address range reserved by `cuMemAddressReserve`.
pub struct Reservation {
    /// Bytes.
    pub size: usize,
    /// Mapped ranges: start → (length, physical handle, accessible).
    pub maps: BTreeMap<u64, (usize, u64, bool)>,
}

/// A CUDA array (or mipmapped array): charged, never touched.
pub struct Array {
    /// Owning context.
    pub ctx: u64,
    /// Physical device charged.
    pub dev: u32,
    /// Bytes charged.
    pub bytes: u64,
}

/// One node of a graph.
#[derive(Clone, Debug)]
pub enum Node {
    /// A kernel taking this long.
    Kernel(u64),
    /// A device-to-device, host-to-device or device-to-host copy, done at replay.
    Copy { dst: u64, src: u64, len: usize },
    /// A memset of `count` elements of `elem` bytes, done at replay.
    Memset { dst: u64, value: u32, elem: usize, count: usize },
    /// A graph allocation of `len` bytes on physical device `dev` at `addr` (fixed for the
    /// node's lifetime); live from here until a free.
    Alloc { addr: u64, len: usize, dev: u32 },
    /// A free of a graph allocation.
    Free { addr: u64 },
}

/// A graph.
#[derive(Clone, Default)]
pub struct Graph {
    /// Nodes in order.
    pub nodes: Vec<Node>,
    /// The executable graph instantiated from it while one exists (tracked only for graphs
    /// with memory nodes, which may have one at a time).
    pub exec: Option<u64>,
}

impl Graph {
    /// Whether the graph has allocation or free nodes.
    pub fn has_memory_nodes(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n, Node::Alloc { .. } | Node::Free { .. }))
    }
}

/// An executable graph.
#[derive(Clone)]
pub struct Exec {
    /// The graph it was instantiated from (which may since have been destroyed).
    pub graph: u64,
    /// Its nodes, copied at instantiation.
    pub nodes: Vec<Node>,
    /// `CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH`.
    pub auto_free: bool,
    /// Graph memory its allocations need, per physical device: (device, bytes).
    pub footprint: Vec<(u32, u64)>,
    /// Whether that memory is mapped to it now (from its upload or first launch until it is
    /// destroyed or trimmed while idle).
    pub mapped: bool,
}

/// The address range of a graph allocation node.
pub struct GraphVa {
    /// Bytes (rounded).
    pub len: usize,
    /// Physical device.
    pub dev: u32,
    /// The graph whose allocation node made it.
    pub graph: u64,
    /// Allocated now: a launch reached its allocation node and nothing has freed it since.
    pub live: bool,
    /// Its bytes are counted in the device's graph memory on their own: its executable graph
    /// was destroyed or trimmed while it was live.
    pub held_alone: bool,
}

/// A device's graph memory: what the graph allocator holds from the device, and how much of
/// it graphs use.
#[derive(Default, Clone, Copy)]
pub struct GraphMem {
    /// `CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT`: bytes taken from the device.
    pub reserved: u64,
    /// `CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT`: bytes mapped to executable graphs or live
    /// allocations.
    pub used: u64,
    /// `CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH`.
    pub reserved_high: u64,
    /// `CU_GRAPH_MEM_ATTR_USED_MEM_HIGH`.
    pub used_high: u64,
}

/// Every object of this process.
#[derive(Default)]
pub struct Inner {
    /// Contexts by handle.
    pub contexts: HashMap<u64, Ctx>,
    /// Primary context per ordinal.
    pub primary: Vec<Primary>,
    /// Streams by handle.
    pub streams: HashMap<u64, Stream>,
    /// Events by handle.
    pub events: HashMap<u64, Event>,
    /// Modules by handle.
    pub modules: HashMap<u64, Module>,
    /// Functions by handle.
    pub functions: HashMap<u64, Func>,
    /// Libraries by handle.
    pub libraries: HashMap<u64, Library>,
    /// Library kernels by handle: (library, name).
    pub kernels: HashMap<u64, (u64, String)>,
    /// Green contexts by handle → their context.
    pub green: HashMap<u64, u64>,
    /// Resource descriptors by handle → their SM count.
    pub resource_descs: HashMap<u64, u32>,
    /// Device allocations by base address.
    pub allocs: BTreeMap<u64, Alloc>,
    /// Pinned host allocations by address → length.
    pub host: HashMap<u64, usize>,
    /// Pools by handle.
    pub pools: HashMap<u64, Pool>,
    /// (default pool, current pool) per ordinal, created on first use.
    pub pools_by_device: Vec<Option<(u64, u64)>>,
    /// Physical allocations by handle.
    pub phys: HashMap<u64, Phys>,
    /// Address reservations by start address.
    pub reservations: BTreeMap<u64, Reservation>,
    /// Arrays and mipmapped arrays by handle.
    pub arrays: HashMap<u64, Array>,
    /// Graphs by handle.
    pub graphs: HashMap<u64, Graph>,
    /// Executable graphs by handle.
    pub execs: HashMap<u64, Exec>,
    /// Graph allocation address ranges by start address.
    pub graph_vas: BTreeMap<u64, GraphVa>,
    /// Graph memory per physical device.
    pub graph_mem: HashMap<u32, GraphMem>,
}

/// Which stream a `CUstream` argument names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRef {
    /// A context's default stream.
    Null(u64),
    /// A created stream.
    Created(u64),
}

impl Driver {
    /// Locks the object maps.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh handle value (never 0, never reused, never a valid address).
    pub fn new_id(&self) -> u64 {
        0x5100_0000_0000 + self.next_id.fetch_add(1, Ordering::Relaxed) * 16
    }

    /// Physical device of an ordinal, or `CUDA_ERROR_INVALID_DEVICE`.
    pub fn physical(&self, ordinal: i32) -> Result<u32, R> {
        usize::try_from(ordinal).ok().and_then(|o| self.visible.get(o).copied()).ok_or(R::CUDA_ERROR_INVALID_DEVICE)
    }
}

/// The current context's handle, or `CUDA_ERROR_INVALID_CONTEXT`.
pub fn current(inner: &Inner) -> Result<u64, R> {
    let top = CTX_STACK.with(|s| s.borrow().last().copied());
    match top {
        Some(c) if inner.contexts.contains_key(&c) => Ok(c),
        _ => Err(R::CUDA_ERROR_INVALID_CONTEXT),
    }
}

/// The current context handle without validation (what `cuCtxGetCurrent` reports).
pub fn current_raw() -> Option<u64> {
    CTX_STACK.with(|s| s.borrow().last().copied())
}

/// Replaces the top of this thread's context stack (`None` pops it).
pub fn set_current(ctx: Option<u64>) {
    CTX_STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if let Some(c) = ctx {
            s.push(c);
        }
    });
}

/// Pushes a context onto this thread's stack.
pub fn push_current(ctx: u64) {
    CTX_STACK.with(|s| s.borrow_mut().push(ctx));
}

/// Pops this thread's current context.
pub fn pop_current() -> Option<u64> {
    CTX_STACK.with(|s| s.borrow_mut().pop())
}

/// Removes a destroyed context from this thread's stack.
pub fn forget_current(ctx: u64) {
    CTX_STACK.with(|s| s.borrow_mut().retain(|c| *c != ctx));
}

/// Converts a handle to the pointer type the API hands out.
pub fn handle<T>(id: u64) -> *mut T {
    id as usize as *mut T
}

/// Converts an API pointer back to a handle.
pub fn id<T>(p: *mut T) -> u64 {
    p as usize as u64
}

impl Inner {
    /// Resolves a stream argument against the current context.
    pub fn stream(&self, s: CUstream) -> Result<StreamRef, R> {
        let raw = id(s);
        if raw <= 2 {
            // NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD: the current context's default.
            return Ok(StreamRef::Null(current(self)?));
        }
        if self.streams.contains_key(&raw) { Ok(StreamRef::Created(raw)) } else { Err(R::CUDA_ERROR_INVALID_HANDLE) }
    }

    /// The context a stream belongs to.
    pub fn stream_ctx(&self, s: StreamRef) -> u64 {
        match s {
            StreamRef::Null(c) => c,
            StreamRef::Created(id) => self.streams[&id].ctx,
        }
    }

    /// A stream's queue.
    pub fn stream_state(&mut self, s: StreamRef) -> &mut StreamState {
        match s {
            StreamRef::Null(c) => &mut self.contexts.get_mut(&c).expect("live context").null_stream,
            StreamRef::Created(id) => &mut self.streams.get_mut(&id).expect("live stream").state,
        }
    }

    /// The context of a `CUcontext` argument.
    pub fn ctx_arg(&self, c: CUcontext) -> Result<u64, R> {
        let c = id(c);
        if self.contexts.contains_key(&c) { Ok(c) } else { Err(R::CUDA_ERROR_INVALID_CONTEXT) }
    }

    /// The allocation containing `[addr, addr+len)`, if any: (base, allocation).
    pub fn alloc_containing(&self, addr: u64, len: usize) -> Option<(u64, &Alloc)> {
        let (base, a) = self.allocs.range(..=addr).next_back()?;
        let end = base + a.map_len as u64;
        (addr.checked_add(len as u64)? <= end).then_some((*base, a))
    }

    /// Checks that `[addr, addr+len)` is device memory this process may touch.
    pub fn check_device_range(&self, addr: u64, len: usize) -> Result<(), R> {
        if addr == 0 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        if self.alloc_containing(addr, len).is_some() {
            return Ok(());
        }
        // A graph allocation's range (its contents are only meaningful while it is live;
        // simgpu does not fault on an access outside that lifetime).
        if let Some((start, va)) = self.graph_vas.range(..=addr).next_back()
            && addr.checked_add(len as u64).is_some_and(|end| end <= start + va.len as u64)
        {
            return Ok(());
        }
        let Some((start, r)) = self.reservations.range(..=addr).next_back() else {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        };
        if addr + len as u64 > start + r.size as u64 {
            return Err(R::CUDA_ERROR_INVALID_VALUE);
        }
        let mapped = r.maps.range(..=addr).next_back().is_some_and(|(m, (l, _, access))| *access && addr + len as u64 <= m + *l as u64);
        if mapped { Ok(()) } else { Err(R::CUDA_ERROR_ILLEGAL_ADDRESS) }
    }
}

/// Maps `len` bytes of lazily committed, zeroed memory. Returns its address.
pub fn map_anonymous(len: usize) -> Option<u64> {
    // SAFETY: a fresh private anonymous mapping; NORESERVE so untouched pages cost nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as u64)
}

/// Maps `len` bytes of lazily committed, zeroed memory at an address that fits in 32 bits, for
/// the legacy ABI's `CUdeviceptr_v1` (x86-64's `MAP_32BIT`: the first 2 GiB). `None` when no
/// such address is free, or on a platform without the flag.
pub fn map_low32(len: usize) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a fresh private anonymous mapping, as in `map_anonymous`.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED && (p as u64).saturating_add(len as u64) <= u64::from(u32::MAX)).then_some(p as u64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = len;
        None
    }
}

/// Unmaps memory mapped by [`map_anonymous`].
pub fn unmap(addr: u64, len: usize) {
    // SAFETY: the range was mapped by us and is no longer referenced by any allocation.
    unsafe { libc::munmap(addr as usize as *mut libc::c_void, len.max(1)) };
}

/// Rounds an allocation up to the 512-byte alignment the driver guarantees.
pub fn rounded(bytes: usize) -> Option<usize> {
    bytes.checked_next_multiple_of(512)
}
