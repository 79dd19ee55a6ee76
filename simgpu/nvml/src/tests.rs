//! Unit tests of the exports, called directly in this process against a private machine.
use super::*;
use core::ptr::{null, null_mut};
use simgpu::machine::Machine;

const OK: nvmlReturn_t = nvmlReturn_t::NVML_SUCCESS;
const INVALID: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
const SMALL: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE;
const UNINIT: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_UNINITIALIZED;

fn config() -> simgpu::config::SimConfig {
    let dir = std::env::temp_dir().join(format!("simgpu-nvml-test-{}-{}", std::process::id(), simgpu::now_ns()));
    std::fs::create_dir_all(&dir).unwrap();
    simgpu::config::from_lookup(|k| match k {
        "SIMGPU_STATE" => Some(dir.join("state").display().to_string()),
        "SIMGPU_DEVICES" => Some("2".into()),
        "SIMGPU_MEMORY" => Some("1Gi".into()),
        _ => None,
    })
    .unwrap()
}

fn c_string(buf: &[c_char]) -> String {
    // SAFETY: the buffers passed here were NUL-terminated by the export under test.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn handle(i: u32) -> nvmlDevice_t {
    let mut h = null_mut();
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { nvmlDeviceGetHandleByIndex_v2(i, &mut h) }, OK);
    h
}

/// The whole API in one test, because initialisation is process-wide state.
#[test]
fn exports_against_a_shared_machine() {
    // SAFETY: every pointer passed below is a valid local, or NULL on purpose.
    unsafe {
        // Before initialisation.
        let mut n: c_uint = 7;
        assert_eq!(nvmlDeviceGetCount_v2(&mut n), UNINIT);
        assert_eq!(nvmlShutdown(), UNINIT);
        let mut buf = [0 as c_char; 96];
        assert_eq!(nvmlSystemGetNVMLVersion(buf.as_mut_ptr(), 96), OK);
        assert_eq!(c_string(&buf), "12.570.86.15");
        assert_eq!(CStr::from_ptr(nvmlErrorString(INVALID)).to_str().unwrap(), "Invalid Argument");
        assert_eq!(CStr::from_ptr(nvmlErrorString(nvmlReturn_t(12345))).to_str().unwrap(), "Unknown Error");
        assert_eq!(state::init(|| Err("SIMGPU_MEMORY=\"lots\": bad".into())), nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED);
        assert_eq!(nvmlDeviceGetCount_v2(&mut n), UNINIT);

        // A process using device 0: one context, 256 MiB, 100 ms of kernels.
        let cfg = config();
        let user = Machine::open(&cfg).unwrap();
        user.context_created(0);
        assert!(user.charge(0, 256 << 20));
        let (_, work_end) = user.enqueue(0, 100_000_000);
        // Until the sample period holding the end of the work has ended (1/6 s periods).
        let period = simgpu::config::NVML_PERIOD_MIN_NS;
        simgpu::sleep_until(work_end.div_ceil(period) * period + 1_000_000);

        // Reference-counted initialisation.
        assert_eq!(state::init(|| Ok(cfg.clone())), OK);
        assert_eq!(state::init(|| panic!("the second init must not read the configuration")), OK);
        assert_eq!(nvmlShutdown(), OK);
        assert_eq!(nvmlDeviceGetCount_v2(&mut n), OK);
        assert_eq!(n, 2);
        assert_eq!(nvmlDeviceGetCount(null_mut()), INVALID);

        // Handles.
        let (h0, h1) = (handle(0), handle(1));
        let mut h = null_mut();
        assert_eq!(nvmlDeviceGetHandleByIndex_v2(2, &mut h), INVALID);
        assert_eq!(nvmlDeviceGetHandleByIndex(0, null_mut()), INVALID);
        let mut idx = 9;
        assert_eq!(nvmlDeviceGetIndex(h1, &mut idx), OK);
        assert_eq!(idx, 1);
        for bogus in
            [null_mut(), h0.cast::<u8>().wrapping_add(1).cast(), 0x1000 as nvmlDevice_t, handle(1).cast::<u32>().wrapping_add(1).cast()]
        {
            assert_eq!(nvmlDeviceGetIndex(bogus, &mut idx), INVALID, "{bogus:p}");
        }
        assert_eq!(nvmlDeviceGetIndex(h0, null_mut()), INVALID);

        // Identity.
        assert_eq!(nvmlDeviceGetName(h0, buf.as_mut_ptr(), 96), OK);
        assert_eq!(c_string(&buf), "NVIDIA H100 80GB HBM3 (simgpu)");
        assert_eq!(nvmlDeviceGetName(h0, buf.as_mut_ptr(), 10), SMALL);
        assert_eq!(nvmlDeviceGetUUID(h1, buf.as_mut_ptr(), 96), OK);
        let uuid = c_string(&buf);
        assert_eq!(uuid, identity::uuid_string(1));
        let c_uuid = std::ffi::CString::new(uuid.to_uppercase()).unwrap();
        assert_eq!(nvmlDeviceGetHandleByUUID(c_uuid.as_ptr(), &mut h), OK);
        assert_eq!(h, h1);
        assert_eq!(nvmlDeviceGetHandleByUUID(c"GPU-nope".as_ptr(), &mut h), INVALID);
        assert_eq!(
            nvmlDeviceGetHandleByUUID(c"GPU-00000000-0000-4000-8000-000000000000".as_ptr(), &mut h),
            nvmlReturn_t::NVML_ERROR_NOT_FOUND
        );
        assert_eq!(nvmlDeviceGetHandleByUUID(null(), &mut h), INVALID);
        let mut pci = nvmlPciInfo_t::default();
        assert_eq!(nvmlDeviceGetPciInfo_v3(h1, &mut pci), OK);
        assert_eq!(c_string(&pci.busId), "00000000:1B:00.0");
        assert_eq!(c_string(&pci.busIdLegacy), "0000:1B:00.0");
        assert_eq!((pci.domain, pci.bus, pci.device, pci.pciDeviceId), (0, 0x1b, 0, 0x2330_10DE));
        for id in [c"00000000:1B:00.0", c"0000:1b:00.0", c"1B:00.0", c"0:1b:0"] {
            h = null_mut();
            assert_eq!(nvmlDeviceGetHandleByPciBusId_v2(id.as_ptr(), &mut h), OK, "{id:?}");
            assert_eq!(h, h1);
        }
        assert_eq!(nvmlDeviceGetHandleByPciBusId_v2(c"00000000:1C:00.0".as_ptr(), &mut h), nvmlReturn_t::NVML_ERROR_NOT_FOUND);
        assert_eq!(nvmlDeviceGetHandleByPciBusId_v2(c"zz".as_ptr(), &mut h), INVALID);
        let (mut major, mut minor) = (0, 0);
        assert_eq!(nvmlDeviceGetCudaComputeCapability(h0, &mut major, &mut minor), OK);
        assert_eq!((major, minor), (9, 0));
        assert_eq!(nvmlDeviceGetMinorNumber(h1, &mut idx), OK);
        assert_eq!(idx, 1);
        assert_eq!(nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 96), OK);
        assert_eq!(c_string(&buf), "570.86.15");
        assert_eq!(nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 9), SMALL);
        let mut v = 0;
        assert_eq!(nvmlSystemGetCudaDriverVersion_v2(&mut v), OK);
        assert_eq!(v, 12080);
        assert_eq!(nvmlSystemGetProcessName(std::process::id(), buf.as_mut_ptr(), 96), OK);
        assert!(!c_string(&buf).is_empty());
        assert_eq!(nvmlSystemGetProcessName(std::process::id(), buf.as_mut_ptr(), 3), OK);
        assert_eq!(c_string(&buf).len(), 2);

        // Memory, seen from NVML, of the other Machine in this process.
        let mut m = nvmlMemory_t::default();
        assert_eq!(nvmlDeviceGetMemoryInfo(h0, &mut m), OK);
        assert_eq!((m.total, m.used, m.free), (1 << 30, 256 << 20, (1 << 30) - (256 << 20)));
        assert_eq!(nvmlDeviceGetMemoryInfo(h1, &mut m), OK);
        assert_eq!((m.used, m.free), (0, 1 << 30));
        let mut m2 = nvmlMemory_v2_t { version: 1, ..Default::default() };
        assert_eq!(nvmlDeviceGetMemoryInfo_v2(h0, &mut m2), nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        m2.version = nvmlMemory_v2;
        assert_eq!(nvmlDeviceGetMemoryInfo_v2(h0, &mut m2), OK);
        assert_eq!((m2.total, m2.reserved, m2.used, m2.free), (1 << 30, 0, 256 << 20, (1 << 30) - (256 << 20)));

        // Utilisation: 100 ms busy, ending in the last ended 1/6 s period.
        let mut u = nvmlUtilization_t::default();
        assert_eq!(nvmlDeviceGetUtilizationRates(h0, &mut u), OK);
        assert!((1..=60).contains(&u.gpu) && u.memory == 0, "{u:?}");
        assert_eq!(nvmlDeviceGetUtilizationRates(h1, &mut u), OK);
        assert_eq!(u.gpu, 0);
        let mut count: c_uint = 0;
        assert_eq!(nvmlDeviceGetProcessUtilization(h0, null_mut(), &mut count, 0), SMALL);
        assert_eq!(count, 1);
        let mut samples = [nvmlProcessUtilizationSample_t::default(); 4];
        count = 4;
        assert_eq!(nvmlDeviceGetProcessUtilization(h0, samples.as_mut_ptr(), &mut count, 0), OK);
        assert_eq!(count, 1);
        let s = samples[0];
        assert_eq!(s.pid, std::process::id());
        // Averaged over the 2 s buffer (11 whole periods): 100 ms is 60 % of one period at most.
        assert!((1..=5).contains(&s.smUtil), "{s:?}");
        let wall_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
        assert!(s.timeStamp <= wall_us && wall_us - s.timeStamp < 1_000_000, "a wall-clock stamp: {} vs {wall_us}", s.timeStamp);
        count = 4;
        assert_eq!(nvmlDeviceGetProcessUtilization(h0, samples.as_mut_ptr(), &mut count, s.timeStamp), nvmlReturn_t::NVML_ERROR_NOT_FOUND);
        // The next period ends with nobody busy: still nothing to report.
        std::thread::sleep(std::time::Duration::from_nanos(period));
        assert_eq!(nvmlDeviceGetProcessUtilization(h0, samples.as_mut_ptr(), &mut count, s.timeStamp), nvmlReturn_t::NVML_ERROR_NOT_FOUND);
        assert_eq!(nvmlDeviceGetProcessUtilization(h1, null_mut(), &mut count, 0), nvmlReturn_t::NVML_ERROR_NOT_FOUND);
        assert_eq!(nvmlDeviceGetProcessUtilization(h0, null_mut(), null_mut(), 0), INVALID);

        // Running processes, with NVML's size protocol.
        count = 0;
        assert_eq!(nvmlDeviceGetComputeRunningProcesses_v3(h0, &mut count, null_mut()), SMALL);
        assert_eq!(count, 1);
        let mut infos = [nvmlProcessInfo_t::default(); 3];
        count = 3;
        assert_eq!(nvmlDeviceGetComputeRunningProcesses_v3(h0, &mut count, infos.as_mut_ptr()), OK);
        assert_eq!(count, 1);
        assert_eq!(
            infos[0],
            nvmlProcessInfo_t { pid: std::process::id(), usedGpuMemory: 256 << 20, gpuInstanceId: !0, computeInstanceId: !0 }
        );
        count = 3;
        assert_eq!(nvmlDeviceGetComputeRunningProcesses_v3(h0, &mut count, null_mut()), INVALID);
        assert_eq!(nvmlDeviceGetComputeRunningProcesses_v2(h0, null_mut(), infos.as_mut_ptr()), INVALID);
        let mut v1 = [nvmlProcessInfo_v1_t::default(); 1];
        count = 1;
        assert_eq!(nvmlDeviceGetComputeRunningProcesses(h0, &mut count, v1.as_mut_ptr()), OK);
        assert_eq!(v1[0], nvmlProcessInfo_v1_t { pid: std::process::id(), usedGpuMemory: 256 << 20 });
        count = 0;
        assert_eq!(nvmlDeviceGetComputeRunningProcesses_v3(h1, &mut count, null_mut()), OK);
        assert_eq!(count, 0);
        count = 5;
        assert_eq!(nvmlDeviceGetGraphicsRunningProcesses_v3(h0, &mut count, infos.as_mut_ptr()), OK);
        assert_eq!(count, 0);

        // The process's memory leaves with it.
        user.uncharge(0, 256 << 20);
        user.context_destroyed(0);
        count = 0;
        assert_eq!(nvmlDeviceGetComputeRunningProcesses_v3(h0, &mut count, null_mut()), OK);
        assert_eq!(count, 0);

        // Last shutdown.
        assert_eq!(nvmlShutdown(), OK);
        assert_eq!(nvmlShutdown(), UNINIT);
        assert_eq!(nvmlDeviceGetMemoryInfo(h0, &mut m), UNINIT);
        assert_eq!(nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 96), UNINIT);
        // Re-initialising with the same configuration reuses the mapping; handles stay valid.
        assert_eq!(state::init(|| Ok(cfg.clone())), OK);
        assert_eq!(nvmlDeviceGetMemoryInfo(h0, &mut m), OK);
        assert_eq!(nvmlShutdown(), OK);
        let _ = std::fs::remove_file(&cfg.state_path);
        let _ = std::fs::remove_dir(cfg.state_path.parent().unwrap());
    }
}

#[test]
fn pci_bus_ids_parse_in_every_documented_form() {
    assert_eq!(parse_pci_bus_id("00000000:1A:00.0"), Some((0, 0x1a, 0, 0)));
    assert_eq!(parse_pci_bus_id("0001:1a:02.3"), Some((1, 0x1a, 2, 3)));
    assert_eq!(parse_pci_bus_id("0:1a:2"), Some((0, 0x1a, 2, 0)));
    assert_eq!(parse_pci_bus_id("1a:02.3"), Some((0, 0x1a, 2, 3)));
    for bad in ["", "1a", "1a:02", "x:1a:00.0", "0:1a:00.0:1", "000000000:1a:00.0"] {
        assert_eq!(parse_pci_bus_id(bad), None, "{bad}");
    }
}

#[test]
fn uuids_are_matched_exactly_but_case_insensitively() {
    let u = identity::uuid_string(3);
    assert_eq!(index_by_uuid(&u, 4), Ok(3));
    assert_eq!(index_by_uuid(&u.to_uppercase(), 4), Ok(3));
    assert_eq!(index_by_uuid(&u, 3), Err(nvmlReturn_t::NVML_ERROR_NOT_FOUND));
    assert_eq!(index_by_uuid(&u[..30], 4), Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT));
    assert_eq!(index_by_uuid(&u[4..], 4), Err(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT));
}
