//! Deterministic unit tests of the region's rules. Cross-process races and crashes are in
//! `limiter/tests/` (real processes).
use super::*;

pub(crate) fn tempdir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!("vgpu-region-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quotas(q0: Option<u64>) -> [Option<u64>; MAX_DEVICES] {
    let mut q = [None; MAX_DEVICES];
    q[0] = q0;
    q
}

impl Region {
    /// Vanishes like a killed process: mapping and descriptor gone, slot untouched.
    fn die(self) {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: our own mapping and descriptor.
        unsafe {
            libc::munmap(me.base.cast(), FILE_SIZE);
            libc::close(me.fd);
        }
    }
}

#[test]
fn reserve_commit_release_within_the_quota() {
    let path = tempdir().join("r");
    let r = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    let a = r.reserve(0, 600).unwrap();
    a.commit(0x1000);
    assert_eq!(r.reserve(0, 401).err(), Some(Refused { quota: 1000, used: 600, requested: 401 }));
    let b = r.reserve(0, 400).unwrap();
    assert_eq!(r.usage(0), (1000, 0, Some(1000)));
    drop(b);
    assert_eq!(r.usage(0), (600, 400, Some(1000)), "a dropped reservation rolls back");
    assert_eq!(r.release(0x1000), Some((0, 600)));
    assert_eq!(r.release(0x1000), None, "released once");
    assert_eq!(r.release(0x2000), None, "a pointer we never saw is not ours");
    assert_eq!(r.usage(0), (0, 1000, Some(1000)));
    let v = r.device_view(0);
    assert_eq!((v.used + v.free, v.refusals, v.peak, v.unattributed), (1000, 1, 1000, 0));
}

#[test]
fn shrink_returns_the_surplus() {
    let path = tempdir().join("r");
    let r = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    let mut a = r.reserve(0, 800).unwrap();
    a.shrink_to(500);
    a.commit(7 << 12);
    assert_eq!(r.usage(0).0, 500);
    assert_eq!(r.release(7 << 12), Some((0, 500)));
    assert_eq!(r.my_usage(0), 0);
}

#[test]
fn unlimited_devices_count_but_never_refuse() {
    let path = tempdir().join("r");
    let r = Region::open(&path, &quotas(None), 0o600).unwrap();
    let a = r.reserve(3, u64::MAX / 2).unwrap();
    assert_eq!(r.quota(3), None);
    assert_eq!(r.usage(3), (u64::MAX / 2, 0, None));
    drop(a);
}

#[test]
fn processes_share_the_quota_and_the_dead_give_back_once() {
    let path = tempdir().join("r");
    let a = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    let b = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    a.reserve(0, 700).unwrap().commit(0x10000);
    assert!(b.reserve(0, 400).is_err(), "700 + 400 > 1000 across processes");
    assert_eq!(b.processes().iter().filter(|p| p.alive).count(), 2);
    a.die();
    // b's reservation would fail: the lazy reap finds a dead, returns its 700, and retries.
    b.reserve(0, 400).unwrap().commit(0x20000);
    assert_eq!(b.usage(0), (400, 600, Some(1000)));
    assert_eq!(b.reap(), 0, "nothing left to reap: a dead process is reaped exactly once");
    assert_eq!(b.processes().len(), 1);
}

#[test]
fn a_new_process_reaps_the_dead() {
    let path = tempdir().join("r");
    let a = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    a.reserve(0, 900).unwrap().commit(0x1000);
    a.die();
    let c = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    assert_eq!(c.usage(0), (0, 1000, Some(1000)));
}

#[test]
fn quotas_follow_the_configuration_only_when_nobody_lives() {
    let path = tempdir().join("r");
    let a = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    match Region::open(&path, &quotas(Some(2000)), 0o600) {
        Err(RegionError::QuotaMismatch { device: 0, region: 1000, requested: 2000, .. }) => {}
        other => panic!("{:?}", other.err()),
    }
    drop(a);
    let b = Region::open(&path, &quotas(Some(2000)), 0o600).unwrap();
    assert_eq!(b.quota(0), Some(2000));
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempdir();
    let q = quotas(Some(1));
    std::fs::write(dir.join("junk"), vec![0xabu8; FILE_SIZE]).unwrap();
    assert!(matches!(Region::open(&dir.join("junk"), &q, 0o600), Err(RegionError::BadMagic { .. })));
    std::fs::write(dir.join("short"), b"VGPUREG\0 and then nothing").unwrap();
    assert!(matches!(Region::open(&dir.join("short"), &q, 0o600), Err(RegionError::WrongSize { .. })));
    std::fs::write(dir.join("long"), vec![0u8; FILE_SIZE + 1]).unwrap();
    assert!(matches!(Region::open(&dir.join("long"), &q, 0o600), Err(RegionError::WrongSize { .. })));
    std::os::unix::fs::symlink(dir.join("junk"), dir.join("link")).unwrap();
    assert!(matches!(Region::open(&dir.join("link"), &q, 0o600), Err(RegionError::Symlink { .. })));
    std::fs::create_dir(dir.join("dir")).unwrap();
    assert!(matches!(Region::open(&dir.join("dir"), &q, 0o600), Err(RegionError::NotRegular { .. })));
    assert!(matches!(Region::open(Path::new("/nonexistent-dir/r"), &q, 0o600), Err(RegionError::Io { .. })));
    // Another layout version.
    let v = Region::open(&dir.join("v"), &q, 0o600).unwrap();
    v.header().version.store(99, Relaxed);
    match Region::open(&dir.join("v"), &q, 0o600) {
        Err(e @ RegionError::VersionMismatch { found: 99, .. }) => {
            assert!(e.to_string().contains("version 99"))
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_file_of_another_user_is_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to give a file away");
        return;
    }
    let dir = tempdir();
    let p = dir.join("theirs");
    drop(Region::open(&p, &quotas(Some(1)), 0o600).unwrap());
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    assert!(matches!(Region::open(&p, &quotas(Some(1)), 0o600), Err(RegionError::WrongOwner { owner: 65534, .. })));
}

#[test]
fn a_region_whose_creator_died_before_publishing_is_initialised_by_the_next() {
    let dir = tempdir();
    let p = dir.join("r");
    // A creator that made the file and died before sizing or initialising it.
    std::fs::File::create(&p).unwrap();
    let r = Region::open(&p, &quotas(Some(5)), 0o600).unwrap();
    assert_eq!(r.quota(0), Some(5));
    r.reserve(0, 5).unwrap().commit(0x1000);
}

#[test]
fn errors_are_one_line_and_name_the_file() {
    let e = RegionError::QuotaMismatch { path: "/x/r".into(), device: 2, region: 10, requested: UNLIMITED };
    let s = e.to_string();
    assert!(s.contains("/x/r") && s.contains("device 2") && s.contains("unlimited") && !s.contains('\n'), "{s}");
}

#[test]
fn take_then_release_or_keep() {
    let path = tempdir().join("r");
    let r = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    r.reserve(0, 300).unwrap().commit(0x4000);
    let h = r.take(0x4000).unwrap();
    assert_eq!(h.device_bytes(), (0, 300));
    assert!(r.take(0x4000).is_none(), "taken once");
    h.keep();
    assert_eq!(r.usage(0).0, 300);
    r.take(0x4000).unwrap().release();
    assert_eq!(r.usage(0).0, 0);
    r.force_charge(0, 5000);
    assert_eq!(r.usage(0), (1000, 0, Some(1000)), "views clamp at the quota");
    assert!(r.reserve(0, 1).is_err());
    r.uncharge(0, 5000);
    assert_eq!(r.usage(0), (0, 1000, Some(1000)));
}

#[test]
fn observers_see_without_touching() {
    let path = tempdir().join("r");
    let a = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    a.reserve(0, 250).unwrap().commit(0x1000);
    let o = Observer::open(&path).unwrap();
    let v = o.device_view(0);
    assert_eq!((v.quota, v.used, v.free), (Some(1000), 250, 750));
    let procs = o.processes();
    assert_eq!(procs.len(), 1);
    assert!(procs[0].alive);
    assert_eq!(procs[0].used[0], 250);
    a.die();
    let procs = o.processes();
    assert!(!procs[0].alive, "dead, not yet reaped: the observer reports it and reaps nothing");
    assert_eq!(o.device_view(0).used, 250);
    std::fs::write(path.with_extension("junk"), b"x").unwrap();
    assert!(matches!(Observer::open(&path.with_extension("junk")), Err(RegionError::WrongSize { .. })));
}

#[test]
fn quota_views_clamp() {
    assert_eq!(quota_view(4 << 30, 1 << 30, 80 << 30, 70 << 30), (4 << 30, 3 << 30));
    assert_eq!(quota_view(4 << 30, 5 << 30, 80 << 30, 70 << 30), (4 << 30, 0), "usage above the quota");
    assert_eq!(quota_view(4 << 30, 0, 80 << 30, 1 << 30), (4 << 30, 1 << 30), "the device is fuller");
    assert_eq!(quota_view(100 << 30, 0, 80 << 30, 80 << 30), (80 << 30, 80 << 30), "quota above the card");
}

#[test]
fn unhooked_bytes_are_charged_shown_and_reaped_with_their_process() {
    let path = tempdir().join("r");
    let observer = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    let r = Region::open(&path, &quotas(Some(1000)), 0o600).unwrap();
    r.reserve(0, 300).unwrap().commit(0x1000);
    assert_eq!(r.set_unhooked(0, 200), 0);
    assert_eq!((r.usage(0).0, r.my_usage(0), r.my_unhooked(0)), (500, 500, 200));
    assert_eq!(observer.device_view(0).unhooked, 200);
    assert_eq!(r.set_unhooked(0, 50), 200, "the driver's figure went down: given back");
    assert_eq!((r.usage(0).0, r.my_unhooked(0)), (350, 50));
    assert_eq!(observer.reserve(0, 651).err().map(|e| e.used), Some(350), "the unhooked bytes count against the quota");
    r.die();
    observer.reap();
    let v = observer.device_view(0);
    assert_eq!((v.used, v.unhooked), (0, 0), "reaped with the process");
}

/// Three newcomers of quotas 1000, 2000 and 3000 open `path` at once; asserts that somebody
/// joins and that nobody runs under a quota it was not given.
fn race_three_quotas(path: &Path, round: u32) {
    let barrier = std::sync::Barrier::new(3);
    let joined: Vec<(u64, Option<Region>)> = std::thread::scope(|s| {
        let handles: Vec<_> = [1000, 2000, 3000]
            .into_iter()
            .map(|q| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    (q, Region::open(path, &quotas(Some(q)), 0o600).ok())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<u64> = joined.iter().filter(|(_, r)| r.is_some()).map(|(q, _)| *q).collect();
    assert!(!winners.is_empty(), "round {round}: somebody joins");
    for (q, r) in &joined {
        if let Some(r) = r {
            assert_eq!(r.quota(0), Some(*q), "round {round}: a process runs under a quota it was not given ({winners:?} joined)");
        }
    }
}

#[test]
fn newcomers_of_different_quotas_racing_into_a_dead_container_never_both_win() {
    // A container restarted with a new quota while the old one's last process has just died:
    // newcomers of different configurations arrive together. Whoever joins must run under the
    // quota it was configured with: at most one configuration wins, the others fail closed.
    for round in 0..200 {
        let path = tempdir().join("r");
        Region::open(&path, &quotas(Some(1000)), 0o600).unwrap().die();
        race_three_quotas(&path, round);
    }
}

#[test]
fn newcomers_of_different_quotas_racing_to_create_a_region_never_both_win() {
    // The same race with no region yet: one creates and publishes it, the others open it at
    // once; the creator is held to the same rule.
    for round in 0..200 {
        race_three_quotas(&tempdir().join("r"), round);
    }
}
