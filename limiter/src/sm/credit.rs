//! A process's prepaid GPU time: the SM-limited launch path without the container's bucket.
//!
//! Charging every launch to the bucket (`super::Bucket`) costs a clock read, the bucket's
//! shared line and the cost model's slot, all cold again by the next launch (the driver's own
//! launch work evicts them). A process instead takes GPU time from the bucket in leases of
//! about [`LEASE_WALL_NS`] of wall time at its share, and spends it launch by launch from
//! [`Credit`], a few words its launch path keeps in one line with the rest of its state. The
//! cost of the last kernel shape launched is kept there too, so a launch of the same shape
//! reads nothing else; the costs of [`SHAPES`] more shapes follow in a table read one word at
//! a time (one more cache line), so a program cycling through dozens of kernels (a training
//! step, a decoder layer) pays most launches from the credit too.
//!
//! What a lease changes: a process is charged up to one lease before it launches, so the
//! container may run one lease per process ahead of its share, on top of the bucket's
//! [`super::BURST_NS`]; a process that exits with credit left has paid for GPU time it did
//! not use (at most one lease). Credit is bought at the share and controller factor of its
//! lease and spent at that price: a share lowered (or a factor raised) takes effect once the
//! credit in hand is spent, so a process may run its last lease's GPU time at the new price
//! (an operator's 100 % → 10 % lets 1 ms of GPU through in what is now 10 ms of share; the
//! controller moves its factor at most 2× a tick); NVML's measured share then corrects it.
//! While the bucket is not enforcing, a lease is free (nothing charged) and the flag is read
//! again when it runs out.
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, Ordering::*};

use super::{Admission, Bucket, TIME_ONE_IN};

/// Wall time (at the container's share) one lease buys.
pub const LEASE_WALL_NS: u64 = 1_000_000;
/// The longest kernel whose cost the cache keeps (its cost word is 32 bits).
const CACHE_MAX_NS: u64 = u32::MAX as u64;
/// How many shapes' costs the table beside the last one keeps (direct-mapped by the key's
/// bits below its tag; a shape evicts another that maps to its word).
pub const SHAPES: usize = 256;

/// A process's prepaid GPU time, its last launched shape's cost and a table of more shapes'.
/// The first words ([`Credit::HEAD`] bytes) are meant to sit in one cache line with the rest of
/// a launch path's state; the table follows.
#[derive(Debug)]
#[repr(C)]
pub struct Credit {
    /// How many reasons launches must take the whole path now (streams being captured,
    /// timings not read yet).
    divert: AtomicU32,
    /// Launches paid from the credit, modulo 2^16 (for 1-in-[`TIME_ONE_IN`] timing).
    launches: AtomicU16,
    /// The next launch charged past the credit is to be timed.
    due: AtomicBool,
    /// Prepaid GPU time left (ns).
    gpu_ns: AtomicI64,
    /// The last shape's key (high 32 bits) and cost in ns (low 32); 0: none.
    cached: AtomicU64,
    /// More shapes' words, as `cached`, each at the index [`index`] gives its key.
    shapes: [AtomicU64; SHAPES],
}

impl Default for Credit {
    fn default() -> Credit {
        Credit::new()
    }
}

/// The table's index of a key: bits the 32-bit tag does not hold (bit 0 is always set), so
/// two shapes are taken for one only when 40 bits of their keys match.
#[inline(always)]
fn index(key: u64) -> usize {
    (key >> 1) as usize % SHAPES
}

impl Credit {
    /// The bytes before the table: what a launch of the last shape reads.
    pub const HEAD: usize = std::mem::offset_of!(Credit, shapes);

    /// A credit with nothing prepaid.
    pub const fn new() -> Credit {
        Credit {
            divert: AtomicU32::new(0),
            launches: AtomicU16::new(0),
            due: AtomicBool::new(false),
            gpu_ns: AtomicI64::new(0),
            cached: AtomicU64::new(0),
            shapes: [const { AtomicU64::new(0) }; SHAPES],
        }
    }

    /// A launch of `key`: `true` when it was paid from the credit (a shape whose cost is kept,
    /// enough left, nothing diverting, not the one launch in [`TIME_ONE_IN`] to time). Touches
    /// only this struct: its head for the last shape, one word of the table for another.
    /// Otherwise nothing was charged: the launch goes to [`Credit::charge`] or the bucket, and
    /// is timed if [`Credit::timing_due`] says so.
    #[inline(always)]
    pub fn spend(&self, key: u64) -> bool {
        let mut c = self.cached.load(Relaxed);
        if c == 0 || c >> 32 != key >> 32 {
            c = self.shapes[index(key)].load(Relaxed);
            if c == 0 || c >> 32 != key >> 32 {
                return false;
            }
            self.cached.store(c, Relaxed);
        }
        if self.divert.load(Relaxed) != 0 {
            return false;
        }
        // A plain load and store: two threads racing may count one launch, which only moves
        // which launch is timed.
        let n = self.launches.load(Relaxed).wrapping_add(1);
        self.launches.store(n, Relaxed);
        if u32::from(n).is_multiple_of(TIME_ONE_IN) {
            // Timed past the credit; its timing may lower the estimate: look it up again.
            self.cached.store(0, Relaxed);
            self.shapes[index(key)].store(0, Relaxed);
            self.due.store(true, Relaxed);
            return false;
        }
        let cost = (c & 0xFFFF_FFFF) as i64;
        if self.gpu_ns.fetch_sub(cost, Relaxed) >= cost {
            return true;
        }
        self.gpu_ns.fetch_add(cost, Relaxed);
        false
    }

    /// Whether [`Credit::spend`] picked this launch to be timed (once).
    pub fn timing_due(&self) -> bool {
        self.due.load(Relaxed) && self.due.swap(false, Relaxed)
    }

    /// Pays `cost` GPU ns from the credit, if enough is left.
    pub fn take(&self, cost: u64) -> bool {
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        if self.gpu_ns.fetch_sub(cost, Relaxed) >= cost {
            return true;
        }
        self.gpu_ns.fetch_add(cost, Relaxed);
        false
    }

    /// Keeps `cost` as the cost of `key`'s shape (a learned estimate, not a default): the
    /// last shape's, and in the table.
    pub fn remember(&self, key: u64, cost: u64) {
        let word = if (1..=CACHE_MAX_NS).contains(&cost) { (key >> 32) << 32 | cost } else { 0 };
        self.cached.store(word, Relaxed);
        self.shapes[index(key)].store(word, Relaxed);
    }

    /// Charges a launch costing `cost` GPU ns at `now`: from the credit if enough is left,
    /// else by a new lease from `bucket` (a lease covers at least the launch). `Wait` when the
    /// bucket has no lease to give yet (nothing charged: the caller waits on the bucket for
    /// the launch alone). A bucket that is not enforcing gives a lease for free.
    ///
    /// Never more than one lease prepaid: threads that ran dry together each take a lease, and
    /// what the last of them finds above one lease goes back to the bucket (or, free, is not
    /// kept).
    pub fn charge(&self, bucket: &Bucket<'_>, now: u64, cost: u64) -> Admission {
        if self.take(cost) {
            return Admission::Admitted;
        }
        self.lease(bucket, now, cost)
    }

    /// [`Credit::charge`] once the credit was found short (by this thread; others may have
    /// found it short at the same moment and be here too).
    fn lease(&self, bucket: &Bucket<'_>, now: u64, cost: u64) -> Admission {
        let lease = bucket.gpu_worth(LEASE_WALL_NS).max(cost);
        let (lease_i, rest) = (i64::try_from(lease).unwrap_or(i64::MAX / 2), i64::try_from(lease - cost).unwrap_or(i64::MAX / 2));
        if !bucket.enforcing() {
            // Free while idle: topped up to one lease, never piled up.
            let _ = self.gpu_ns.fetch_update(Relaxed, Relaxed, |g| Some(g.max(rest)));
            return Admission::Admitted;
        }
        if let wait @ Admission::Wait(_) = bucket.admit(now, lease) {
            return wait;
        }
        let excess = self.gpu_ns.fetch_add(rest, Relaxed).saturating_add(rest) - lease_i;
        if excess > 0 {
            self.gpu_ns.fetch_sub(excess, Relaxed);
            bucket.correct(now, -excess);
        }
        Admission::Admitted
    }

    /// Prepaid GPU time left (ns; negative never lasts).
    pub fn left_ns(&self) -> i64 {
        self.gpu_ns.load(Relaxed)
    }

    /// One more (`true`) or one fewer reason for launches to take the whole path.
    pub fn divert(&self, on: bool) {
        if on {
            self.divert.fetch_add(1, AcqRel);
        } else {
            self.divert.fetch_sub(1, AcqRel);
        }
    }

    /// Whether launches must take the whole path now.
    pub fn diverted(&self) -> bool {
        self.divert.load(Acquire) != 0
    }

    /// In a child after `fork`: the parent's credit was charged to the parent's region (the
    /// reasons to divert stay: they are released as in the parent).
    pub fn reset(&self) {
        self.gpu_ns.store(0, Relaxed);
        self.cached.store(0, Relaxed);
        for w in &self.shapes {
            w.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Clock, FakeClock, word};
    use super::*;
    use crate::region::layout::SmBucket;

    fn line(limit_pct: u8) -> Box<SmBucket> {
        let line = Box::new(SmBucket { words: std::array::from_fn(|_| AtomicU64::new(0)) });
        Bucket::new(&line).configure(limit_pct, true);
        line
    }

    /// One process launching `cost_ns` kernels through the credit (one kept shape, as the
    /// launch path does) for `wall_ns`: the GPU time launched.
    fn drive(credits: &[&Credit], b: Bucket<'_>, clock: &FakeClock, cost_ns: u64, wall_ns: u64) -> u64 {
        let key = 0xABCD_0000_0000_0001;
        let end = clock.now_ns() + wall_ns;
        let mut launched = 0;
        while clock.now_ns() < end {
            let mut waits = Vec::new();
            for c in credits {
                if c.spend(key) {
                    launched += cost_ns;
                    continue;
                }
                // Timed: charged on the bucket alone, as the launch path does.
                let admission = if c.timing_due() { b.admit(clock.now_ns(), cost_ns) } else { c.charge(&b, clock.now_ns(), cost_ns) };
                match admission {
                    Admission::Admitted => {
                        c.remember(key, cost_ns);
                        launched += cost_ns;
                    }
                    Admission::Wait(ns) => waits.push(ns),
                }
            }
            if waits.len() == credits.len() {
                clock.advance(*waits.iter().min().unwrap());
            }
        }
        launched
    }

    #[test]
    fn launches_paid_from_leases_keep_the_share() {
        for pct in [10u8, 30, 50, 90] {
            let line = line(pct);
            let clock = FakeClock::new(1_000_000_000);
            let credit = Credit::new();
            let launched = drive(&[&credit], Bucket::new(&line), &clock, 20_000, 10_000_000_000);
            let share = launched as f64 / 10e9;
            assert!((share - f64::from(pct) / 100.0).abs() < 0.002, "{pct}%: {share}");
            let lease_gpu = Bucket::new(&line).gpu_worth(LEASE_WALL_NS) as i64;
            assert!(credit.left_ns() <= lease_gpu, "never more than one lease prepaid");
        }
    }

    #[test]
    fn processes_with_their_own_credit_share_one_bucket() {
        let line = line(40);
        let clock = FakeClock::new(1_000_000_000);
        let (a, b) = (Credit::new(), Credit::new());
        let launched = drive(&[&a, &b], Bucket::new(&line), &clock, 50_000, 5_000_000_000);
        let share = launched as f64 / 5e9;
        assert!((share - 0.4).abs() < 0.003, "{share}");
    }

    #[test]
    fn a_launch_of_the_cached_shape_touches_nothing_else() {
        let line = line(50);
        let b = Bucket::new(&line);
        let credit = Credit::new();
        let key = 0x1234_5678_0000_0001;
        assert!(!credit.spend(key), "no shape known yet");
        assert_eq!(credit.charge(&b, 1_000_000, 10_000), Admission::Admitted);
        credit.remember(key, 10_000);
        let tat = line.words[word::TAT].load(Relaxed);
        assert_eq!(tat, 1_000_000 + LEASE_WALL_NS, "one lease: 1 ms of wall at 50 % is 500 µs of GPU");
        assert_eq!(credit.left_ns(), 490_000);
        for _ in 0..49 {
            assert!(credit.spend(key));
        }
        assert_eq!(line.words[word::TAT].load(Relaxed), tat, "the bucket was not touched");
        assert!(!credit.spend(key), "the lease is spent");
        assert!(!credit.timing_due());
        assert!(!credit.spend(0x9999_0000_0000_0001), "another shape");
    }

    #[test]
    fn shapes_launched_in_turn_are_paid_from_the_table() {
        let line = line(50);
        let b = Bucket::new(&line);
        let credit = Credit::new();
        // Forty kernels, as a training step cycles through them; keys as kernel_key makes them,
        // one per word of the table (what shares a word is the next test's).
        let mut words = std::collections::HashSet::new();
        let keys: Vec<u64> = (0..40u64)
            .map(|f| super::super::kernel_key(0x7f00_0000 + f * 64, [f as u32 + 1, 1, 1], [256, 1, 1]))
            .filter(|&k| words.insert(index(k)))
            .collect();
        assert!(keys.len() >= 30, "the key's bits spread forty shapes over the table: {}", keys.len());
        assert_eq!(credit.charge(&b, 1_000_000, 1_000), Admission::Admitted);
        for &k in &keys {
            assert!(!credit.spend(k), "not known yet");
            credit.remember(k, 1_000);
        }
        let tat = line.words[word::TAT].load(Relaxed);
        let (mut paid, mut timed, n) = (0, 0, 5 * keys.len());
        for &k in keys.iter().cycle().take(n) {
            if credit.spend(k) {
                paid += 1;
            } else if credit.timing_due() {
                timed += 1; // the launch path times it on the bucket, and does not keep its cost
            } else {
                credit.remember(k, 1_000); // looked up again in the model
            }
        }
        assert_eq!(timed, n / TIME_ONE_IN as usize, "one in so many is timed");
        assert!(paid >= n - 2 * timed, "every launch but the timed ones and the look-ups after them: {paid} of {n}");
        assert_eq!(line.words[word::TAT].load(Relaxed), tat, "the bucket was not touched");
    }

    #[test]
    fn a_shape_evicts_the_one_at_its_word_and_a_timed_shape_is_looked_up_again() {
        let line = line(100);
        let b = Bucket::new(&line);
        let credit = Credit::new();
        assert_eq!(credit.charge(&b, 1_000_000, 1), Admission::Admitted);
        let (a, same_word, other) = (0x0000_0005_0000_0001, 0x0000_0105_0000_0001, 0x0000_0006_0000_0003);
        assert_eq!(index(a), index(same_word));
        assert_ne!(index(a), index(other));
        credit.remember(a, 7);
        credit.remember(other, 9);
        assert!(credit.spend(a), "from the table");
        assert_eq!(credit.left_ns(), b.gpu_worth(LEASE_WALL_NS) as i64 - 1 - 7);
        credit.remember(same_word, 8);
        credit.remember(other, 9);
        assert!(!credit.spend(a), "its word was taken");
        assert!(credit.spend(same_word));
        // Drive the count to the launch to time: it was of `other`, whose word is cleared.
        while credit.spend(other) {}
        assert!(credit.timing_due());
        assert!(!credit.spend(other), "a timed shape's cost is looked up again");
        assert!(credit.spend(same_word), "the others' stay");
    }

    #[test]
    fn one_launch_in_so_many_is_timed_and_the_cost_looked_up_again() {
        let line = line(100);
        let b = Bucket::new(&line);
        let credit = Credit::new();
        let key = 0x1234_5678_0000_0001;
        assert_eq!(credit.charge(&b, 1_000_000, 1), Admission::Admitted);
        credit.remember(key, 1);
        let unpaid = (0..TIME_ONE_IN).filter(|_| !credit.spend(key)).count();
        assert_eq!(unpaid, 1, "one in so many");
        assert!(credit.timing_due(), "that one is to be timed");
        assert!(!credit.timing_due(), "once");
        assert!(!credit.spend(key), "after a timed launch the shape is read again");
    }

    #[test]
    fn a_kernel_longer_than_a_lease_is_charged_in_full() {
        let line = line(25);
        let b = Bucket::new(&line);
        let credit = Credit::new();
        let now = 5_000_000_000;
        assert_eq!(credit.charge(&b, now, 100_000_000), Admission::Admitted);
        assert_eq!(b.ahead(now), 400_000_000, "100 ms of GPU at 25 %");
        assert_eq!(credit.left_ns(), 0);
        assert!(matches!(credit.charge(&b, now, 1_000), Admission::Wait(_)), "paid for before the next");
        assert_eq!(credit.left_ns(), 0, "a refused lease charges nothing");
    }

    #[test]
    fn an_idle_bucket_gives_free_leases_that_do_not_pile_up() {
        let line = line(30);
        let b = Bucket::new(&line);
        b.set_enforcing(false);
        let credit = Credit::new();
        for _ in 0..1000 {
            assert_eq!(credit.charge(&b, 1_000_000, 5_000), Admission::Admitted);
        }
        assert_eq!(line.words[word::TAT].load(Relaxed), 0, "nothing charged while idle");
        assert!(credit.left_ns() <= b.gpu_worth(LEASE_WALL_NS) as i64);
    }

    #[test]
    fn threads_running_dry_together_keep_one_lease_at_most() {
        for enforcing in [true, false] {
            let line = line(50);
            let b = Bucket::new(&line);
            b.set_enforcing(enforcing);
            let credit = Credit::new();
            let now = 1_000_000_000;
            let lease = b.gpu_worth(LEASE_WALL_NS) as i64;
            // Three threads found the credit short at once: each takes a lease.
            for _ in 0..3 {
                assert_eq!(credit.lease(&b, now, 3_000), Admission::Admitted);
            }
            if enforcing {
                assert_eq!(credit.left_ns(), lease, "one lease kept, the rest given back");
                assert_eq!(b.ahead(now), LEASE_WALL_NS + 3 * 3_000 * 2, "the lease kept and the three launches charged (wall at 50 %)");
            } else {
                assert_eq!(credit.left_ns(), lease - 3_000, "topped up to one lease, less the launch");
                assert_eq!(b.ahead(now), 0, "nothing charged while idle");
            }
        }
    }

    #[test]
    fn diverted_launches_and_odd_costs_are_not_decided_here() {
        let line = line(50);
        let b = Bucket::new(&line);
        let credit = Credit::new();
        let key = 0x1234_5678_0000_0001;
        assert_eq!(credit.charge(&b, 1_000_000, 10), Admission::Admitted);
        credit.remember(key, 10);
        credit.divert(true);
        assert!(!credit.spend(key), "a stream is being captured");
        let other = 0x4321_0000_0000_0003;
        credit.remember(other, 10);
        assert!(!credit.spend(key), "a shape from the table neither, while diverted");
        credit.divert(false);
        assert!(credit.spend(key));
        credit.remember(key, 0);
        assert!(!credit.spend(key), "a zero cost is not cached");
        credit.remember(key, 10_000_000_000);
        assert!(!credit.spend(key), "nor one over 32 bits");
        credit.remember(key, 10);
        credit.reset();
        assert!(!credit.spend(key), "a forked child starts with nothing");
        assert_eq!(credit.left_ns(), 0);
    }
}
