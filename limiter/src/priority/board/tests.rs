//! The board under honest use, and under a tenant that writes anything into it.
use super::*;
use crate::priority::{Gate, HOLD_NS, MAX_WAIT_NS, gate};

const MS: u64 = 1_000_000;
const UUID: [u8; 16] = *b"GPU-0123456789ab";

fn fresh() -> (tempfile_dir::Dir, std::path::PathBuf) {
    let d = tempfile_dir::Dir::new();
    let p = d.path().join("board");
    (d, p)
}

/// A directory removed when dropped (no extra crate for one helper).
mod tempfile_dir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "vgpu-board-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn a_high_process_holds_low_ones_until_it_goes_idle() {
    let (_d, path) = fresh();
    let high = Board::open(&path).unwrap();
    let low = Board::open(&path).unwrap();
    let key = device_key(&UUID);
    let (hs, ls) = (high.section(key).unwrap(), low.section(key).unwrap());
    assert_eq!(hs, ls, "one section per device, whoever looks first");
    assert!(low.quiet(ls), "nothing high-priority ever ran");

    let now = shmfile::now_ns();
    let e = high.claim(hs, 42, now).unwrap();
    assert!(high.busy(hs, e, 42, now));
    assert!(!low.quiet(ls));
    assert_eq!(low.busy_until(ls, now + MS), Some(now + HOLD_NS));
    assert!(matches!(gate(low.busy_until(ls, now + MS), now + MS, 0, 0), Gate::Wait(_)));

    high.idle(hs, e, 42);
    assert_eq!(low.busy_until(ls, now + MS), None, "idle at once");
    assert!(!low.quiet(ls), "the hint stays until it expires (a writer may be raising it)");
    assert_eq!(low.busy_until(ls, now + HOLD_NS + 1), None);
    assert!(low.quiet(ls), "an expired hint is cleared: the fast path again");
}

#[test]
fn a_dead_high_process_holds_for_one_hold_at_most() {
    let (_d, path) = fresh();
    let b = Board::open(&path).unwrap();
    let s = b.section(device_key(&UUID)).unwrap();
    let now = shmfile::now_ns();
    let e = b.claim(s, 7, now).unwrap();
    b.busy(s, e, 7, now);
    // The process dies here: nobody marks it idle.
    assert!(b.busy_until(s, now + HOLD_NS - 1).is_some());
    assert_eq!(b.busy_until(s, now + HOLD_NS), None);
    // Its entry is taken over once stale.
    assert_eq!(b.claim(s, 8, now + 1), Some(e + 1), "not while it may come back");
    assert_eq!(b.claim(s, 9, now + HOLD_NS + STALE + 1), Some(e), "stale: reused");
}

const STALE: u64 = crate::priority::STALE_NS;

#[test]
fn refreshes_are_amortised() {
    let (_d, path) = fresh();
    let b = Board::open(&path).unwrap();
    let s = b.section(device_key(&UUID)).unwrap();
    let now = shmfile::now_ns();
    let e = b.claim(s, 1, now).unwrap();
    b.busy(s, e, 1, now);
    b.busy(s, e, 1, now + MS);
    assert_eq!(b.busy_until(s, now + 2 * MS), Some(now + HOLD_NS), "not rewritten 1 ms later");
    b.busy(s, e, 1, now + HOLD_NS / 2 + MS);
    assert_eq!(b.busy_until(s, now + HOLD_NS), Some(now + HOLD_NS / 2 + MS + HOLD_NS));
}

#[test]
fn a_full_board_turns_priority_off_never_on() {
    let (_d, path) = fresh();
    let b = Board::open(&path).unwrap();
    for i in 0..SECTIONS as u64 {
        assert!(b.section(1000 + 2 * i + 1).is_some());
    }
    assert_eq!(b.section(device_key(&UUID)), None);
    let s = b.section(1001).unwrap();
    let now = shmfile::now_ns();
    for t in 1..=ENTRIES as u64 {
        let e = b.claim(s, t, now).unwrap();
        b.busy(s, e, t, now);
    }
    assert_eq!(b.claim(s, 999, now), None, "no room: this process cannot publish");
}

#[test]
fn a_foreign_or_short_file_is_refused() {
    let (_d, path) = fresh();
    std::fs::write(&path, vec![0u8; FILE_SIZE]).unwrap();
    assert!(matches!(Board::open(&path), Err(BoardError::Foreign(_))), "zero magic");
    std::fs::write(&path, b"short").unwrap();
    let e = Board::open(&path).err().unwrap();
    assert!(e.to_string().contains("5 bytes"), "{e}");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
    assert!(Board::open(&path).is_err(), "a symlink is never followed");
    assert!(snapshot(&path, 0).is_err());
}

/// A small deterministic generator (no extra crate).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn scribbled_bytes_never_hold_a_launch_beyond_the_bounds_nor_break_readers() {
    let (_d, path) = fresh();
    let victim = Board::open(&path).unwrap();
    let tenant = Board::open(&path).unwrap();
    let key = device_key(&UUID);
    let s = victim.section(key).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..2000 {
        let now = shmfile::now_ns();
        match round % 4 {
            // random bytes anywhere
            0 => {
                let off = (next(&mut x) as usize) % FILE_SIZE;
                tenant.scribble(off, &next(&mut x).to_le_bytes());
            }
            // values chosen to harm: busy forever, hint forever, waiters huge, key stolen
            1 => tenant.scribble(64 + s * std::mem::size_of::<Section>() + 64 + 8 + 16 * (round % ENTRIES), &u64::MAX.to_le_bytes()),
            2 => tenant.scribble(64 + s * std::mem::size_of::<Section>() + 8, &u64::MAX.to_le_bytes()),
            _ => tenant.scribble(64 + s * std::mem::size_of::<Section>() + 64 + 8 + 16 * (round % ENTRIES), &(now + HOLD_NS).to_le_bytes()),
        }
        let busy = victim.busy_until(s, now);
        if let Some(u) = busy {
            assert!(u > now && u - now <= HOLD_NS, "only claims within one hold count");
        }
        match gate(busy, now, MAX_WAIT_NS, 0) {
            Gate::Go => {}
            g => panic!("a launch that has waited the bound must go: {g:?}"),
        }
        if let Gate::Wait(ns) = gate(busy, now, 0, 0) {
            assert!(ns <= crate::priority::POLL_NS);
        }
        let _ = victim.section(key);
        let _ = victim.claim(s, 5, now).map(|e| victim.busy(s, e, 5, now));
    }
    // The node tools' copy of the same bytes never panics either.
    let _ = snapshot(&path, shmfile::now_ns());
}

#[test]
fn a_waiting_launch_wakes_when_high_goes_idle() {
    let (_d, path) = fresh();
    let high = Board::open(&path).unwrap();
    let low = Board::open(&path).unwrap();
    let key = device_key(&UUID);
    let s = high.section(key).unwrap();
    let now = shmfile::now_ns();
    let e = high.claim(s, 3, now).unwrap();
    high.busy(s, e, 3, now);
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        high.idle(s, e, 3);
    });
    let started = std::time::Instant::now();
    // A long wait is cut short by the wake-up (it would be 1 s otherwise).
    low.wait(s, 1_000_000_000, || low.busy_until(s, shmfile::now_ns()).is_some());
    t.join().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_millis(900), "woken, not timed out: {:?}", started.elapsed());
    assert_eq!(low.busy_until(s, shmfile::now_ns()), None);
}

#[test]
fn a_shrunk_board_reads_as_zeros_instead_of_killing_the_process() {
    let (_d, path) = fresh();
    let b = Board::open(&path).unwrap();
    let s = b.section(device_key(&UUID)).unwrap();
    let now = shmfile::now_ns();
    let e = b.claim(s, 11, now).unwrap();
    b.busy(s, e, 11, now);
    // A tenant truncates the shared file: touching the mapping would raise SIGBUS.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    assert_eq!(b.busy_until(s, now + 1), None, "the guard mapped zeros over the board");
    assert!(guard_fired());
    assert!(b.quiet(s));
    let got = snapshot(&path, now);
    assert!(got.is_err(), "the tools' copy reports a short file: {got:?}");
}

#[test]
fn node_tools_see_who_is_busy() {
    let (_d, path) = fresh();
    assert!(snapshot(&path, 0).unwrap().is_none(), "no board yet");
    let b = Board::open(&path).unwrap();
    let key = device_key(&UUID);
    let s = b.section(key).unwrap();
    let now = shmfile::now_ns();
    let e = b.claim(s, 1, now).unwrap();
    b.busy(s, e, 1, now);
    let v = snapshot(&path, now + 1).unwrap().unwrap();
    assert_eq!(v, vec![SectionView { key, busy: 1, owned: 1, waiters: 0 }]);
}
