//! Priority between containers on one device (`CUDA_TASK_PRIORITY`, HAMi's contract: 0 high,
//! 1 low and the default).
//!
//! While a high-priority container has work in flight on a device, low-priority containers'
//! launches on that device wait (or, with a floor, pass only in the first `floor` percent of
//! every [`WINDOW_NS`]), and pass again at once when it goes idle. Containers live in
//! different regions, so what "in flight" means is published node-wide on the [`board`]: one
//! file every container maps, one section per device (keyed by the device's UUID), one entry
//! per high-priority process holding the instant until which it counts as busy.
//!
//! A high-priority process is busy from its launch until a synchronisation that covers its
//! work returns, and never longer than [`HOLD_NS`] after its last launch: a process that dies
//! or hangs idle holds the others back for at most that long. No low-priority launch waits
//! more than [`MAX_WAIT_NS`], whatever the board says.
//!
//! Everything here is a pure function over plain values; the file is in [`board`].

pub mod board;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock every entry on the board is written in.
pub use shmfile::now_ns;

/// How long after its last launch a high-priority process counts as busy at most.
pub const HOLD_NS: u64 = 100_000_000;
/// A busy entry is refreshed when less than this is left of its hold (so a launch stream
/// writes the board about once per this long, not on every launch).
pub const REFRESH_NS: u64 = HOLD_NS / 2;
/// The longest one low-priority launch waits, whatever the board says.
pub const MAX_WAIT_NS: u64 = 1_000_000_000;
/// The window the floor share is measured in.
pub const WINDOW_NS: u64 = 100_000_000;
/// How long waiting sleeps at most before it looks again (a wake-up usually comes first).
pub const POLL_NS: u64 = 2_000_000;
/// An entry unused for this long may be taken by another process.
pub const STALE_NS: u64 = 10_000_000_000;

/// How far a reader's clock may lag a writer's: a reader that read the clock just before a
/// claim was written sees it a little more than one hold ahead.
pub const CLOCK_SLACK_NS: u64 = 10_000_000;

/// Whether an entry busy until `until` counts at `now`: in the future, and no further than one
/// hold (and the clock slack; a claim beyond that was not written by an honest process: it is
/// ignored, not obeyed).
pub fn counts(until: u64, now: u64) -> bool {
    until > now && until - now <= HOLD_NS + CLOCK_SLACK_NS
}

/// The instant a high-priority process that launches at `now` is busy until.
pub fn busy_until(now: u64) -> u64 {
    now.saturating_add(HOLD_NS)
}

/// Whether a high-priority process's entry (busy until `until`) must be written at `now`.
pub fn needs_refresh(until: u64, now: u64) -> bool {
    !counts(until, now) || until - now < REFRESH_NS
}

/// Whether an entry (owned, busy until `until`, or idle since `until`) may be taken over at
/// `now`: never used, or unused for [`STALE_NS`] (its process is gone or has stopped using the
/// GPU), or holding a value no honest process writes. An entry its process marked idle a
/// moment ago is not taken: the process may launch again at once.
pub fn reusable(until: u64, now: u64) -> bool {
    until == 0 || until.saturating_add(STALE_NS) < now || !counts(until, now) && until > now
}

/// Whether `now` is in the floor part of its window (the first `floor` percent).
pub fn in_floor(now: u64, floor: u8) -> bool {
    floor > 0 && now % WINDOW_NS < WINDOW_NS / 100 * u64::from(floor.min(100))
}

/// What a low-priority launch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Launch now.
    Go,
    /// Look again after at most this many nanoseconds (a wake-up may come first).
    Wait(u64),
}

/// The decision for a low-priority launch at `now` that has waited `waited` so far, when the
/// latest counting high-priority entry on its device is busy until `busy` (`None`: none).
pub fn gate(busy: Option<u64>, now: u64, waited: u64, floor: u8) -> Gate {
    let Some(until) = busy.filter(|&u| counts(u, now)) else { return Gate::Go };
    if waited >= MAX_WAIT_NS || in_floor(now, floor) {
        return Gate::Go;
    }
    let to_floor = if floor > 0 { WINDOW_NS - now % WINDOW_NS } else { u64::MAX };
    Gate::Wait((until - now).min(POLL_NS).min(MAX_WAIT_NS - waited).min(to_floor).max(1))
}

/// Where a high-priority process's launches went since it was last idle: which streams, so
/// that a synchronisation that covers them all can end the busy period at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// Nothing launched since the last idle point.
    None,
    /// Everything went to this stream.
    One(u64),
    /// Several streams.
    Many,
}

impl Streams {
    /// Packs into one word: 0 none, `u64::MAX` many, else the stream + 1.
    pub fn pack(self) -> u64 {
        match self {
            Streams::None => 0,
            Streams::One(s) => s.wrapping_add(1).clamp(1, u64::MAX - 1),
            Streams::Many => u64::MAX,
        }
    }

    /// Unpacks [`Streams::pack`]'s word (any word is some state).
    pub fn unpack(word: u64) -> Streams {
        match word {
            0 => Streams::None,
            u64::MAX => Streams::Many,
            w => Streams::One(w - 1),
        }
    }

    /// The state after a launch on `stream`.
    pub fn after_launch(self, stream: u64) -> Streams {
        match self {
            Streams::None => Streams::One(stream),
            Streams::One(s) if s == stream => self,
            _ => Streams::Many,
        }
    }
}

/// What a synchronisation that returned covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The whole context (`cuCtxSynchronize`).
    Context,
    /// One stream.
    Stream(u64),
}

/// Whether the process is idle after `synced` returned, given where its launches went since it
/// was last idle (`streams`, packed, read when the synchronisation started): only if nothing
/// was launched meanwhile and the synchronisation covered every stream used.
pub fn idle_after(synced: Synced, streams: u64, launched_meanwhile: bool) -> bool {
    if launched_meanwhile || streams == Streams::None.pack() {
        return false;
    }
    match synced {
        Synced::Context => true,
        Synced::Stream(s) => streams == Streams::One(s).pack(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T: u64 = 1_000 * WINDOW_NS + 50 * MS; // mid-window

    #[test]
    fn only_honest_entries_count() {
        assert!(counts(T + HOLD_NS, T));
        assert!(counts(T + 1, T));
        assert!(!counts(T, T), "expired");
        assert!(!counts(0, T));
        assert!(counts(T + HOLD_NS + CLOCK_SLACK_NS, T), "a reader's clock may lag the writer's");
        assert!(!counts(T + HOLD_NS + CLOCK_SLACK_NS + 1, T), "beyond one hold: not written by an honest process");
        assert!(!counts(u64::MAX, T));
    }

    #[test]
    fn refresh_happens_about_once_per_half_hold() {
        let until = busy_until(T);
        assert!(!needs_refresh(until, T + REFRESH_NS - 1));
        assert!(needs_refresh(until, T + REFRESH_NS + 1));
        assert!(needs_refresh(0, T));
        assert!(needs_refresh(u64::MAX, T), "a scribbled entry is rewritten");
    }

    #[test]
    fn stale_or_garbage_entries_are_reusable() {
        assert!(reusable(0, T));
        assert!(reusable(T - STALE_NS - 1, T));
        assert!(!reusable(T - 1, T), "recently busy: its process may come back");
        assert!(!reusable(T + HOLD_NS, T));
        assert!(!reusable(T - 1_000, T), "idle a moment ago: its process may launch again");
        assert!(reusable(T + HOLD_NS + CLOCK_SLACK_NS + 1, T));
    }

    #[test]
    fn low_priority_goes_when_nothing_counts() {
        assert_eq!(gate(None, T, 0, 0), Gate::Go);
        assert_eq!(gate(Some(T - 1), T, 0, 0), Gate::Go);
        assert_eq!(gate(Some(u64::MAX), T, 0, 0), Gate::Go, "a claim nobody honest writes is ignored");
        assert_eq!(gate(Some(T + HOLD_NS + CLOCK_SLACK_NS + 1), T, 0, 0), Gate::Go);
    }

    #[test]
    fn low_priority_waits_while_high_is_busy_in_short_looks() {
        assert_eq!(gate(Some(T + MS), T, 0, 0), Gate::Wait(MS));
        assert_eq!(gate(Some(T + HOLD_NS), T, 0, 0), Gate::Wait(POLL_NS));
    }

    #[test]
    fn no_launch_waits_longer_than_the_bound() {
        assert_eq!(gate(Some(T + HOLD_NS), T, MAX_WAIT_NS - 1, 0), Gate::Wait(1));
        assert_eq!(gate(Some(T + HOLD_NS), T, MAX_WAIT_NS, 0), Gate::Go);
    }

    #[test]
    fn the_floor_lets_launches_through_at_the_start_of_each_window() {
        let start = 1_000 * WINDOW_NS;
        assert!(in_floor(start, 5));
        assert!(in_floor(start + 5 * MS - 1, 5));
        assert!(!in_floor(start + 5 * MS, 5));
        assert!(!in_floor(start, 0));
        assert_eq!(gate(Some(start + HOLD_NS), start + MS, 0, 5), Gate::Go);
        // Outside the floor: wait, but no longer than to the next window.
        let late = start + WINDOW_NS - MS / 2;
        assert_eq!(gate(Some(late + HOLD_NS), late, 0, 5), Gate::Wait(MS / 2));
    }

    #[test]
    fn streams_track_where_work_went() {
        let s = Streams::None.after_launch(7);
        assert_eq!(s, Streams::One(7));
        assert_eq!(s.after_launch(7), Streams::One(7));
        assert_eq!(s.after_launch(8), Streams::Many);
        assert_eq!(Streams::Many.after_launch(7), Streams::Many);
        assert_eq!(Streams::None.pack(), 0);
        assert_eq!(Streams::One(0).pack(), 1, "the null stream is a stream");
        assert_ne!(Streams::One(u64::MAX).pack(), 0);
        assert_ne!(Streams::One(u64::MAX - 1).pack(), Streams::Many.pack());
        for s in [Streams::None, Streams::One(0), Streams::One(0x7f00_1234), Streams::Many] {
            assert_eq!(Streams::unpack(s.pack()), s);
        }
    }

    #[test]
    fn a_covering_sync_ends_the_busy_period() {
        let one = Streams::One(7).pack();
        let many = Streams::Many.pack();
        assert!(idle_after(Synced::Stream(7), one, false));
        assert!(!idle_after(Synced::Stream(8), one, false), "another stream's work may still run");
        assert!(!idle_after(Synced::Stream(7), many, false));
        assert!(idle_after(Synced::Context, many, false));
        assert!(!idle_after(Synced::Context, many, true), "launched meanwhile");
        assert!(!idle_after(Synced::Context, 0, false), "nothing to end");
    }
}
