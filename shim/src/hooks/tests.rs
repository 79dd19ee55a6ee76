//! The hook bodies in-process, against a fake driver and a real region file: what each
//! allocation path charges, refuses and gives back, with no CUDA library loaded. The same
//! paths run end to end, through the generated exports and simgpu, in `tests/`.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use cuda_sys::driver::*;
use vgpu_limiter::accounting::NvmlUsage;
use vgpu_limiter::config::{Config, MAX_DEVICES};
use vgpu_limiter::hostpid::Snapshot;
use vgpu_limiter::region::Region;

use super::args::Out;
use super::{Driver, Enforce, context, graphs, launch, memory, proc_address};
use crate::state::Shim;

use CUresult as R;

const MIB: u64 = 1 << 20;
/// The host PID the fake NVML lists this process by.
const ME: u32 = 4242;
/// The handle the fake driver gives for the device's current pool.
const POOL: u64 = 0x9000;

/// A driver whose answers a test sets and whose calls it records.
#[derive(Default)]
struct Fake {
    freed: RefCell<Vec<u64>>,
    /// Pool attributes: (reserved, used).
    pool: Cell<(u64, u64)>,
    trimmed: RefCell<Vec<(u64, u64)>>,
    /// NVML's answers, one per call, in order: (device used, this process's usage as [`ME`]).
    nvml: RefCell<Vec<Option<NvmlUsage>>>,
    /// NVML's process lists, one per call (the last repeats), when set: they take precedence.
    lists: RefCell<Vec<Snapshot>>,
    /// The PID whose usage shows a live probe, and the probe's size.
    probe_shows_as: Cell<Option<u32>>,
    probe: Cell<u64>,
    /// The PID namespace the fake `/proc` names (default: a container's).
    pid_namespace: Cell<Option<u64>>,
    /// Events: the next handle, those recorded (event, stream), those destroyed.
    next_event: Cell<usize>,
    recorded: RefCell<Vec<(usize, usize)>>,
    destroyed: RefCell<Vec<usize>>,
    /// What `cuEventQuery` and `cuEventElapsedTime` answer.
    event_done: Cell<bool>,
    elapsed_ms: Cell<f32>,
    /// The graph every stream is capturing into, if any.
    capturing: Cell<Option<u64>>,
    /// Graph memory attributes of device 0: (reserved, used).
    graph_mem: Cell<(u64, u64)>,
    /// The current context's stack size limit, and the values `set_ctx_limit` was given.
    stack: Cell<u64>,
    limit_sets: RefCell<Vec<u64>>,
}

impl Driver for &Fake {
    fn ctx_device(&self) -> Result<CUdevice, R> {
        Ok(0)
    }
    fn mem_free(&self, ptr: u64) -> R {
        self.freed.borrow_mut().push(ptr);
        R::CUDA_SUCCESS
    }
    fn mem_free_async(&self, ptr: u64, _stream: CUstream) -> R {
        self.mem_free(ptr)
    }
    fn device_mem_pool(&self, _dev: usize) -> Option<u64> {
        Some(POOL)
    }
    fn pool_attribute(&self, _pool: u64, attr: CUmemPool_attribute) -> Option<u64> {
        let (reserved, used) = self.pool.get();
        match attr {
            CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT => Some(reserved),
            CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT => Some(used),
            _ => None,
        }
    }
    fn pool_trim(&self, pool: u64, keep: u64) -> R {
        self.trimmed.borrow_mut().push((pool, keep));
        R::CUDA_SUCCESS
    }
    fn device_count(&self) -> Option<i32> {
        Some(1)
    }
    fn module_unload(&self, module: u64) -> R {
        self.freed.borrow_mut().push(module);
        R::CUDA_SUCCESS
    }
    fn library_unload(&self, library: u64) -> R {
        self.freed.borrow_mut().push(library);
        R::CUDA_SUCCESS
    }
    fn current_context(&self) -> Option<u64> {
        Some(0xC0)
    }
    fn ctx_limit(&self, limit: CUlimit) -> Option<u64> {
        (limit == CUlimit::CU_LIMIT_STACK_SIZE).then(|| self.stack.get())
    }
    fn set_ctx_limit(&self, _limit: CUlimit, value: u64) -> R {
        self.limit_sets.borrow_mut().push(value);
        self.stack.set(value);
        R::CUDA_SUCCESS
    }
    fn resident_threads(&self, _dev: usize) -> Option<u64> {
        Some(1000)
    }
    fn capture_graph(&self, _stream: CUstream, _per_thread: bool) -> Option<u64> {
        self.capturing.get()
    }
    fn graph_mem_attribute(&self, _dev: usize, attr: CUgraphMem_attribute) -> Option<u64> {
        let (reserved, used) = self.graph_mem.get();
        match attr {
            CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT => Some(reserved),
            CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT => Some(used),
            _ => None,
        }
    }
    fn event_create(&self) -> Option<CUevent> {
        self.next_event.set(self.next_event.get() + 1);
        Some(self.next_event.get() as CUevent)
    }
    fn event_record(&self, event: CUevent, stream: CUstream) -> R {
        self.recorded.borrow_mut().push((event as usize, stream as usize));
        R::CUDA_SUCCESS
    }
    fn event_query(&self, _event: CUevent) -> R {
        if self.event_done.get() { R::CUDA_SUCCESS } else { R::CUDA_ERROR_NOT_READY }
    }
    fn event_elapsed_ms(&self, _start: CUevent, _end: CUevent) -> Result<f32, R> {
        Ok(self.elapsed_ms.get())
    }
    fn event_destroy(&self, event: CUevent) {
        self.destroyed.borrow_mut().push(event as usize);
    }
    fn nvml_list(&self, _dev: CUdevice) -> Option<Snapshot> {
        let mut lists = self.lists.borrow_mut();
        if !lists.is_empty() {
            let (used, mut list) = if lists.len() > 1 { lists.remove(0) } else { lists[0].clone() };
            for p in list.iter_mut().filter(|p| Some(p.0) == self.probe_shows_as.get()) {
                p.1 += self.probe.get();
            }
            return Some((used, list));
        }
        let mut answers = self.nvml.borrow_mut();
        let answer = if answers.is_empty() { None } else { answers.remove(0) };
        answer.map(|(used, mine)| (used, mine.map(|m| vec![(ME, m)]).unwrap_or_default()))
    }
    fn probe_alloc(&self, _ctx: CUcontext, bytes: u64) -> Option<u64> {
        self.probe.set(bytes);
        Some(0xBEEF)
    }
    fn pid_namespace(&self) -> Option<u64> {
        Some(self.pid_namespace.get().unwrap_or(4026532000))
    }
    fn probe_free(&self, _ctx: CUcontext, ptr: u64) {
        assert_eq!(ptr, 0xBEEF);
        self.probe.set(0);
    }
}

/// A fresh region with a quota on device 0, and a shim with no state yet.
struct World {
    shim: Shim,
    region: Region,
    dir: PathBuf,
}

impl World {
    fn new(quota: u64) -> World {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("vgpu-shim-unit-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut quotas = [None; MAX_DEVICES];
        quotas[0] = Some(quota);
        let region = Region::open(&dir.join("region"), &quotas, 0o600).unwrap();
        region.claim_host_pid(ME);
        World { shim: Shim::for_tests(Config::default()), region, dir }
    }

    fn enforce<'a>(&'a self, driver: &'a Fake) -> Enforce<'a, &'a Fake> {
        Enforce { shim: &self.shim, region: &self.region, driver }
    }

    fn used(&self) -> u64 {
        self.region.usage(0).0
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fake driver call that writes `value` to `slot` and answers `rc`, counting its calls.
fn writes<'a, T: Copy>(slot: &'a Cell<T>, value: T, rc: R, calls: &'a Cell<u32>) -> impl FnOnce() -> R + 'a {
    move || {
        calls.set(calls.get() + 1);
        if rc == R::CUDA_SUCCESS {
            slot.set(value);
        }
        rc
    }
}

#[test]
fn an_allocation_over_the_quota_never_reaches_the_driver() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let ptr = Cell::new(0u64);
    let rc = memory::mem_alloc(&e, writes(&ptr, 0x1000, R::CUDA_SUCCESS, &calls), Out::cell(&ptr), (48 * MIB) as usize);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 48 * MIB));
    let rc = memory::mem_alloc(&e, writes(&ptr, 0x2000, R::CUDA_SUCCESS, &calls), Out::cell(&ptr), (17 * MIB) as usize);
    assert_eq!(rc, R::CUDA_ERROR_OUT_OF_MEMORY);
    assert_eq!(calls.get(), 1, "the refused allocation was not forwarded");
    assert_eq!(w.used(), 48 * MIB);
    assert_eq!(memory::mem_free(&e, || R::CUDA_SUCCESS, 0x1000), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn a_failed_allocation_or_free_changes_nothing() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let ptr = Cell::new(0u64);
    let rc = memory::mem_alloc(&e, writes(&ptr, 0x1000, R::CUDA_ERROR_OUT_OF_MEMORY, &calls), Out::cell(&ptr), MIB as usize);
    assert_eq!((rc, w.used()), (R::CUDA_ERROR_OUT_OF_MEMORY, 0), "the reservation rolled back");
    let rc = memory::mem_alloc(&e, writes(&ptr, 0x2000, R::CUDA_SUCCESS, &calls), Out::cell(&ptr), MIB as usize);
    assert_eq!(rc, R::CUDA_SUCCESS);
    assert_eq!(memory::mem_free(&e, || R::CUDA_ERROR_INVALID_VALUE, 0x2000), R::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(w.used(), MIB, "the driver kept it: so does the quota");
    assert_eq!(memory::mem_free(&e, || R::CUDA_SUCCESS, 0x2000), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn a_pitched_allocation_keeps_exactly_pitch_times_height() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let (ptr, pitch) = (Cell::new(0u64), Cell::new(0usize));
    let call = || {
        pitch.set(512);
        writes(&ptr, 0x3000, R::CUDA_SUCCESS, &calls)()
    };
    let rc = memory::mem_alloc_pitch(&e, call, Out::cell(&ptr), Out::cell(&pitch), 500, 1000, 4);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 512 * 1000));
    assert!(fake.freed.borrow().is_empty());
    assert_eq!(memory::mem_free(&e, || R::CUDA_SUCCESS, 0x3000), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn a_pitch_padded_beyond_the_worst_case_is_freed_and_refused() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let (ptr, pitch) = (Cell::new(0u64), Cell::new(0usize));
    let call = || {
        pitch.set(2048); // more than any real driver's 512-byte alignment
        writes(&ptr, 0x4000, R::CUDA_SUCCESS, &calls)()
    };
    let rc = memory::mem_alloc_pitch(&e, call, Out::cell(&ptr), Out::cell(&pitch), 500, 1000, 4);
    assert_eq!(rc, R::CUDA_ERROR_OUT_OF_MEMORY);
    assert_eq!(*fake.freed.borrow(), vec![0x4000], "the driver's allocation was given back");
    assert_eq!(w.used(), 0);
}

#[test]
fn a_released_vmm_handle_stays_charged_until_its_last_unmap() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let handle = Cell::new(0u64);
    let mut prop: CUmemAllocationProp = pinned_prop();
    prop.location = CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: 0 };
    let rc = memory::mem_create(&e, writes(&handle, 77, R::CUDA_SUCCESS, &calls), Out::cell(&handle), (8 * MIB) as usize, Some(&prop), 0);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 8 * MIB));
    assert_eq!(memory::mem_map(&e, || R::CUDA_SUCCESS, 0x10_0000, (8 * MIB) as usize, 0, 77, 0), R::CUDA_SUCCESS);
    assert_eq!(memory::mem_map(&e, || R::CUDA_ERROR_INVALID_VALUE, 0x90_0000, (8 * MIB) as usize, 0, 77, 0), R::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(memory::mem_release(&e, || R::CUDA_SUCCESS, 77), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 8 * MIB, "mapped: the driver still holds it");
    assert_eq!(memory::mem_unmap(&e, || R::CUDA_ERROR_INVALID_VALUE, 0x10_0000, (8 * MIB) as usize), R::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(w.used(), 8 * MIB, "a failed unmap ends nothing");
    assert_eq!(memory::mem_unmap(&e, || R::CUDA_SUCCESS, 0x10_0000, (8 * MIB) as usize), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0, "the last unmap of a released handle");
}

#[test]
fn host_memory_from_mem_create_is_not_the_gpus() {
    let (w, fake, calls) = (World::new(MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let handle = Cell::new(0u64);
    let mut prop: CUmemAllocationProp = pinned_prop();
    prop.location = CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST, id: 0 };
    let rc = memory::mem_create(&e, writes(&handle, 5, R::CUDA_SUCCESS, &calls), Out::cell(&handle), (8 * MIB) as usize, Some(&prop), 0);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 0));
}

#[test]
fn a_pool_is_charged_its_growth_and_a_refusal_undoes_growth_beyond_the_quota() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let ptr = Cell::new(0u64);
    let stream: CUstream = std::ptr::null_mut();
    // 16 MiB asked; the pool grows by 32 MiB (granularity): all of it is the container's.
    let grow = |to: (u64, u64), at: u64| {
        let (fake, ptr, calls) = (&fake, &ptr, &calls);
        move || {
            fake.pool.set(to);
            writes(ptr, at, R::CUDA_SUCCESS, calls)()
        }
    };
    let rc = memory::mem_alloc_async::<_, false>(&e, grow((32 * MIB, 16 * MIB), 0x100), Out::cell(&ptr), (16 * MIB) as usize, stream);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 32 * MIB));
    // Served from the pool's cache: nothing more.
    let rc = memory::mem_alloc_async::<_, false>(&e, grow((32 * MIB, 32 * MIB), 0x200), Out::cell(&ptr), (16 * MIB) as usize, stream);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 32 * MIB));
    // 16 MiB asked, but the pool would grow by 64 MiB: beyond the quota, undone and refused.
    let rc = memory::mem_alloc_async::<_, false>(&e, grow((96 * MIB, 48 * MIB), 0x300), Out::cell(&ptr), (16 * MIB) as usize, stream);
    assert_eq!(rc, R::CUDA_ERROR_OUT_OF_MEMORY);
    assert_eq!(*fake.freed.borrow(), vec![0x300]);
    assert_eq!(*fake.trimmed.borrow(), vec![(POOL, 32 * MIB)], "trimmed back to what it held");
    // Freeing into the pool gives nothing back until the pool releases memory.
    fake.pool.set((32 * MIB, 16 * MIB));
    assert_eq!(memory::mem_free_async(&e, || R::CUDA_SUCCESS, 0x200, stream), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 32 * MIB);
    fake.pool.set((0, 0));
    assert_eq!(memory::pool_trim(&e, || R::CUDA_SUCCESS, POOL as CUmemoryPool, 0), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn a_context_is_charged_its_own_nvml_growth_and_refunded_at_destroy() {
    let (w, fake, calls) = (World::new(GIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    *fake.nvml.borrow_mut() = vec![Some((GIB, None)), Some((3 * GIB, Some(300 * MIB)))];
    let ctx = Cell::new(std::ptr::null_mut::<CUctx_st>());
    let made = 0x77 as CUcontext;
    let rc = context::create_v2(&e, writes(&ctx, made, R::CUDA_SUCCESS, &calls), Out::cell(&ctx), 0, 0);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 300 * MIB), "another process's 2 GiB is not ours");
    assert_eq!(context::destroy(&e, || R::CUDA_ERROR_INVALID_CONTEXT, made), R::CUDA_ERROR_INVALID_CONTEXT);
    assert_eq!(w.used(), 300 * MIB, "still alive");
    assert_eq!(context::destroy(&e, || R::CUDA_SUCCESS, made), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn the_primary_context_is_charged_once_and_refunded_at_its_last_release() {
    let (w, fake, calls) = (World::new(GIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    *fake.nvml.borrow_mut() = vec![Some((0, Some(0))), Some((500 * MIB, Some(500 * MIB)))];
    let ctx = Cell::new(std::ptr::null_mut::<CUctx_st>());
    for _ in 0..2 {
        let rc = context::primary_retain(&e, writes(&ctx, 0x88 as CUcontext, R::CUDA_SUCCESS, &calls), Out::cell(&ctx), 0);
        assert_eq!(rc, R::CUDA_SUCCESS);
    }
    assert_eq!(w.used(), 500 * MIB);
    assert_eq!(context::primary_release(&e, || R::CUDA_SUCCESS, 0), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 500 * MIB, "one retain left");
    assert_eq!(context::primary_release(&e, || R::CUDA_SUCCESS, 0), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

const GIB: u64 = 1 << 30;

/// A pinned allocation property, its location to be set.
fn pinned_prop() -> CUmemAllocationProp {
    CUmemAllocationProp {
        type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: 0,
        location: CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_INVALID, id: 0 },
        win32HandleMetaData: std::ptr::null_mut(),
        allocFlags: CUmemAllocationProp_allocFlags { compressionType: 0, gpuDirectRDMACapable: 0, usage: 0, reserved: [0; 4] },
    }
}

#[test]
fn a_timed_launch_teaches_the_cost_model_once_its_events_complete() {
    let (w, fake) = (World::new(GIB), Fake::default());
    let e = w.enforce(&fake);
    let (stream, key, default) = (0x55 as CUstream, 42, vgpu_limiter::sm::DEFAULT_KERNEL_NS);
    assert_eq!(launch::timed(&e, stream, (key, 0, None, default, false), || R::CUDA_SUCCESS), R::CUDA_SUCCESS);
    assert_eq!(*fake.recorded.borrow(), vec![(1, 0x55), (2, 0x55)], "start and end around the launch, on its stream");
    launch::poll(&e, 0);
    assert!(fake.destroyed.borrow().is_empty(), "still running: the pair is kept");
    fake.event_done.set(true);
    fake.elapsed_ms.set(2.5);
    launch::poll(&e, 0);
    assert_eq!(*fake.destroyed.borrow(), vec![1, 2], "read once, then destroyed");
    assert_eq!(w.shim.sm.model().launch(key, default).cost, 2_500_000, "the model learned 2.5 ms");
}

#[test]
fn a_failed_launch_keeps_no_timing() {
    let (w, fake) = (World::new(GIB), Fake::default());
    let e = w.enforce(&fake);
    let rc = launch::timed(&e, std::ptr::null_mut(), (7, 0, None, 1000, false), || R::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(rc, R::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(fake.recorded.borrow().len(), 1, "the end event is never recorded");
    assert_eq!(*fake.destroyed.borrow(), vec![1, 2], "both events go at once");
}

#[test]
fn a_null_answer_of_cu_get_proc_address_is_never_swapped_for_a_hook() {
    // No driver is loaded here, so no hook's real function is resolved: every slot is NULL,
    // which a NULL answer must not match.
    let (w, fake, calls) = (World::new(GIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let pfn = Cell::new(std::ptr::dangling_mut::<std::ffi::c_void>());
    let none = std::ptr::null_mut();
    let rc = proc_address::get_proc_address_v2(
        &e,
        writes(&pfn, none, R::CUDA_SUCCESS, &calls),
        Some(c"cuNoSuchFunction"),
        Out::cell(&pfn),
        12000,
        0,
        std::ptr::null_mut(),
    );
    assert_eq!((rc, pfn.get()), (R::CUDA_SUCCESS, none), "not found stays NULL");
}

#[test]
fn an_answer_at_an_address_that_is_no_export_is_recognised_by_name() {
    // A driver (or an injected profiler) answering with its own addresses: the variant the
    // base name, version and flags mean is hooked all the same; what we do not hook stays.
    let (w, fake, calls) = (World::new(GIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let private = 0x1234_5678 as *mut std::ffi::c_void;
    let ask = |name: &std::ffi::CStr, version: i32, flags: u64| {
        let pfn = Cell::new(std::ptr::null_mut());
        let rc =
            proc_address::get_proc_address(&e, writes(&pfn, private, R::CUDA_SUCCESS, &calls), Some(name), Out::cell(&pfn), version, flags);
        (rc, pfn.get())
    };
    let export = |name: &str| crate::table::export_of(name).unwrap() as *mut std::ffi::c_void;
    assert_eq!(ask(c"cuMemAlloc", 12000, 0), (R::CUDA_SUCCESS, export("cuMemAlloc_v2")));
    assert_eq!(ask(c"cuMemAllocAsync", 12000, 2), (R::CUDA_SUCCESS, export("cuMemAllocAsync_ptsz")));
    assert_eq!(ask(c"cuCtxCreate", 12000, 0), (R::CUDA_SUCCESS, export("cuCtxCreate_v3")));
    assert_eq!(ask(c"cuMemcpy", 12000, 0), (R::CUDA_SUCCESS, private), "not hooked: the driver's answer");
    assert_eq!(ask(c"cuMemAlloc", 3000, 0), (R::CUDA_SUCCESS, export("cuMemAlloc")), "the 32-bit ABI's own hook");
}

#[test]
fn a_retained_vmm_handle_stays_charged_until_its_last_release() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let handle = Cell::new(0u64);
    let mut prop = pinned_prop();
    prop.location = CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: 0 };
    let rc = memory::mem_create(&e, writes(&handle, 88, R::CUDA_SUCCESS, &calls), Out::cell(&handle), (8 * MIB) as usize, Some(&prop), 0);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 8 * MIB));
    assert_eq!(memory::mem_map(&e, || R::CUDA_SUCCESS, 0x20_0000, (8 * MIB) as usize, 0, 88, 0), R::CUDA_SUCCESS);
    let retained = Cell::new(0u64);
    let rc = memory::mem_retain(&e, writes(&retained, 88, R::CUDA_SUCCESS, &calls), Out::cell(&retained), std::ptr::null_mut());
    assert_eq!(rc, R::CUDA_SUCCESS);
    assert_eq!(memory::mem_release(&e, || R::CUDA_SUCCESS, 88), R::CUDA_SUCCESS);
    assert_eq!(memory::mem_unmap(&e, || R::CUDA_SUCCESS, 0x20_0000, (8 * MIB) as usize), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 8 * MIB, "the retained reference keeps the memory");
    assert_eq!(memory::mem_release(&e, || R::CUDA_SUCCESS, 88), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0, "the last release ends the charge");
}

#[test]
fn graph_memory_is_charged_at_the_first_launch_and_refused_before_it_past_the_quota() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let (ptr, exec) = (Cell::new(0u64), Cell::new(std::ptr::null_mut::<CUgraphExec_st>()));
    let (graph, stream): (CUgraph, CUstream) = (0x77 as CUgraph, std::ptr::null_mut());
    // A captured stream-ordered allocation takes nothing now.
    fake.capturing.set(Some(graph as u64));
    let rc =
        memory::mem_alloc_async::<_, false>(&e, writes(&ptr, 0x100, R::CUDA_SUCCESS, &calls), Out::cell(&ptr), (40 * MIB) as usize, stream);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 0));
    fake.capturing.set(None);
    let rc = graphs::instantiate_with_flags(&e, writes(&exec, 0x500 as CUgraphExec, R::CUDA_SUCCESS, &calls), Out::cell(&exec), graph, 0);
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 0));
    // The first launch maps 40 MiB (`launching` is what `cuGraphLaunch`'s body runs first): reserved first, then charged as the allocator's growth.
    let launch = |to: (u64, u64)| {
        let (fake, calls) = (&fake, &calls);
        move || {
            calls.set(calls.get() + 1);
            fake.graph_mem.set(to);
            R::CUDA_SUCCESS
        }
    };
    let rc = graphs::launching(&e, exec.get(), launch((40 * MIB, 40 * MIB)));
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 40 * MIB));
    // A relaunch reuses the mapping.
    let rc = graphs::launching(&e, exec.get(), launch((40 * MIB, 40 * MIB)));
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 40 * MIB));
    // A second graph of 40 MiB does not fit beside it: refused, never forwarded.
    let graph2 = 0x78 as CUgraph;
    fake.capturing.set(Some(graph2 as u64));
    let _ =
        memory::mem_alloc_async::<_, false>(&e, writes(&ptr, 0x200, R::CUDA_SUCCESS, &calls), Out::cell(&ptr), (40 * MIB) as usize, stream);
    fake.capturing.set(None);
    let _ = graphs::instantiate_with_flags(&e, writes(&exec, 0x600 as CUgraphExec, R::CUDA_SUCCESS, &calls), Out::cell(&exec), graph2, 0);
    let before = calls.get();
    let rc = graphs::launching(&e, exec.get(), launch((80 * MIB, 80 * MIB)));
    assert_eq!((rc, calls.get(), w.used()), (R::CUDA_ERROR_OUT_OF_MEMORY, before, 40 * MIB));
    // The first graph's executable is destroyed: its memory stays cached (charged) until a trim.
    fake.graph_mem.set((40 * MIB, 0));
    assert_eq!(graphs::exec_destroy(&e, || R::CUDA_SUCCESS, 0x500 as CUgraphExec), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 40 * MIB);
    // Now the second graph fits in the cache: nothing new is reserved or charged.
    let rc = graphs::launching(&e, 0x600 as CUgraphExec, launch((40 * MIB, 40 * MIB)));
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 40 * MIB));
    // A trim that hands everything back.
    fake.graph_mem.set((0, 0));
    assert_eq!(graphs::trim(&e, || R::CUDA_SUCCESS, 0), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
    // After the trim the executable graph must find room again at its next launch.
    let rc = graphs::launching(&e, 0x600 as CUgraphExec, launch((40 * MIB, 40 * MIB)));
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 40 * MIB));
}

#[test]
fn a_raised_stack_limit_is_charged_per_resident_thread_and_refused_past_the_quota() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    fake.stack.set(1024); // 1000 resident threads: 1 MB is the context's own
    let driver_sets = |v: u64| {
        let (fake, calls) = (&fake, &calls);
        move || {
            calls.set(calls.get() + 1);
            fake.stack.set(v);
            R::CUDA_SUCCESS
        }
    };
    let stack = CUlimit::CU_LIMIT_STACK_SIZE;
    assert_eq!(context::set_limit(&e, driver_sets(16 * 1024), stack, 16 * 1024), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 15 * 1024 * 1000, "charged above the stack the context had");
    // 100 KB per thread is 100 MB: past the quota, never forwarded.
    let before = calls.get();
    assert_eq!(context::set_limit(&e, driver_sets(100 * 1024), stack, 100 * 1024), R::CUDA_ERROR_OUT_OF_MEMORY);
    assert_eq!((calls.get(), fake.stack.get(), w.used()), (before, 16 * 1024, 15 * 1024 * 1000));
    // A driver that rounds far past the request: the old value is restored, and refused.
    assert_eq!(context::set_limit(&e, driver_sets(70 * 1024), stack, 20 * 1024), R::CUDA_ERROR_OUT_OF_MEMORY);
    assert_eq!((fake.limit_sets.borrow().clone(), fake.stack.get(), w.used()), (vec![16 * 1024], 16 * 1024, 15 * 1024 * 1000));
    // Lowered back: the charge goes.
    assert_eq!(context::set_limit(&e, driver_sets(1024), stack, 1024), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
    // Limits that take no memory pass through untouched.
    let l2 = CUlimit::CU_LIMIT_MAX_L2_FETCH_GRANULARITY;
    assert_eq!(context::set_limit(&e, || R::CUDA_SUCCESS, l2, 1 << 40), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn a_module_load_is_charged_what_it_took_and_undone_past_the_quota() {
    let (w, fake, calls) = (World::new(64 * MIB), Fake::default(), Cell::new(0));
    let e = w.enforce(&fake);
    let module = Cell::new(std::ptr::null_mut::<CUmod_st>());
    // NVML before and after each load: this process's usage grows by what the load took.
    *fake.nvml.borrow_mut() =
        vec![Some((GIB, Some(100 * MIB))), Some((GIB, Some(140 * MIB))), Some((GIB, Some(140 * MIB))), Some((GIB, Some(170 * MIB)))];
    let rc =
        super::modules::load_data(&e, writes(&module, 0x4000 as CUmodule, R::CUDA_SUCCESS, &calls), Out::cell(&module), std::ptr::null());
    assert_eq!((rc, w.used()), (R::CUDA_SUCCESS, 40 * MIB));
    // 30 MiB more would pass the quota: unloaded and refused.
    let rc =
        super::modules::load_data(&e, writes(&module, 0x5000 as CUmodule, R::CUDA_SUCCESS, &calls), Out::cell(&module), std::ptr::null());
    assert_eq!((rc, w.used(), fake.freed.borrow().clone()), (R::CUDA_ERROR_OUT_OF_MEMORY, 40 * MIB, vec![0x5000]));
    assert_eq!(super::modules::unload(&e, || R::CUDA_SUCCESS, 0x4000 as CUmodule), R::CUDA_SUCCESS);
    assert_eq!(w.used(), 0);
}

#[test]
fn the_first_context_finds_the_host_pid_from_nvml_and_charges_its_own_growth() {
    let w = World::new(4 * GIB);
    w.region.forget_host_pid();
    let fake = Fake::default();
    // Another process (100) holds 1 GiB; this one appears as 555 with its 64 MiB context,
    // while a co-tenant that already found its PID (777) also grew.
    *fake.lists.borrow_mut() =
        vec![(GIB, vec![(100, GIB), (777, 0)]), (GIB + 96 * MIB, vec![(100, GIB), (555, 64 * MIB), (777, 32 * MIB)])];
    let e = w.enforce(&fake);
    let mut quotas = [None; MAX_DEVICES];
    quotas[0] = Some(4 * GIB);
    let other = Region::open(&w.dir.join("region"), &quotas, 0o600).unwrap();
    other.claim_host_pid(777);
    let ctx = Cell::new(0x10 as CUcontext);
    let rc = context::primary_retain(&e, || R::CUDA_SUCCESS, Out::cell(&ctx), 0);
    assert_eq!(rc, R::CUDA_SUCCESS);
    assert_eq!(w.region.my_host_pid(), 555);
    assert_eq!(w.region.my_usage(0), 64 * MIB, "its own growth, not the device's 96 MiB");
}

#[test]
fn colliding_starts_are_told_apart_by_a_probe() {
    let w = World::new(4 * GIB);
    w.region.forget_host_pid();
    let fake = Fake::default();
    fake.probe_shows_as.set(Some(556));
    *fake.lists.borrow_mut() = vec![(0, vec![]), (128 * MIB, vec![(555, 64 * MIB), (556, 64 * MIB)])];
    let e = w.enforce(&fake);
    let ctx = Cell::new(0x10 as CUcontext);
    assert_eq!(context::primary_retain(&e, || R::CUDA_SUCCESS, Out::cell(&ctx), 0), R::CUDA_SUCCESS);
    assert_eq!(w.region.my_host_pid(), 556);
    assert_eq!(fake.probe.get(), 0, "the probe was freed");
    assert_eq!(w.region.my_usage(0), 64 * MIB, "the probe's charge went back");
}

#[test]
fn in_the_hosts_pid_namespace_the_host_pid_is_getpid() {
    let w = World::new(4 * GIB);
    w.region.forget_host_pid();
    let fake = Fake::default();
    fake.pid_namespace.set(Some(vgpu_limiter::hostpid::INIT_PID_NAMESPACE_INODE));
    let e = w.enforce(&fake);
    assert_eq!(super::hostpid::without_nvml(&e), Some(std::process::id()));
    assert_eq!(w.region.my_host_pid(), std::process::id());
}

#[test]
fn discovery_runs_once_per_device_so_a_neighbour_that_starts_later_is_never_taken() {
    let w = World::new(4 * GIB);
    w.region.forget_host_pid();
    let fake = Fake::default();
    // The first creation: NVML does not list this process (discovery gives up).
    *fake.lists.borrow_mut() = vec![(0, vec![]), (0, vec![])];
    let e = w.enforce(&fake);
    let ctx = Cell::new(0x10 as CUcontext);
    assert_eq!(context::primary_retain(&e, || R::CUDA_SUCCESS, Out::cell(&ctx), 0), R::CUDA_SUCCESS);
    assert_eq!(w.region.my_host_pid(), 0);
    // A second context on the same device while another container's process (555) starts: it
    // is the only new PID, but this process was on the device already, so it is not us.
    *fake.lists.borrow_mut() = vec![(64 * MIB, vec![(4242, 64 * MIB)]), (128 * MIB, vec![(4242, 64 * MIB), (555, 64 * MIB)])];
    let created = Cell::new(std::ptr::null_mut());
    assert_eq!(context::create_v2(&e, || R::CUDA_SUCCESS, Out::cell(&created), 0, 0), R::CUDA_SUCCESS);
    assert_eq!(w.region.my_host_pid(), 0, "a neighbour's PID is never taken for ours");
}
