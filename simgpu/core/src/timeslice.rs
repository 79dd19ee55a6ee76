//! How a GPU without MPS shares itself between contexts: time-slicing, as a pure model over
//! plain values (no clock, no shared memory), for the machine's timeline to drive.
//!
//! The device runs one context at a time. Contexts with pending work take turns in round-robin
//! order, each for at most one *quantum*; when the quantum ends and another context has work,
//! the running one is preempted (compute preemption at the slice boundary, on Pascal and
//! later) and its unfinished kernel resumes at its next turn; switching to another context
//! costs a fixed *switch time* during which nothing runs. A context alone on the device runs
//! without interruption, and one that runs out of work yields at once. Within a context, work
//! runs in submission order (streams of one context are not overlapped: not modelled).
//!
//! A context's work is one number, what it has pending; a kernel of it is done when the
//! context's completed total reaches the kernel's place in its submitted total (its *ticket*).
//! [`advance`] moves the device from its last time to a later one and reports every span a
//! context ran; [`finish_time`] says when a ticket would complete if no more work arrived.

/// The scheduler's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Longest a context runs while another waits, in ns.
    pub quantum_ns: u64,
    /// Time lost switching from one context to another, in ns.
    pub switch_ns: u64,
}

/// The device's scheduling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Device {
    /// How far the device has been simulated (ns).
    pub now: u64,
    /// The context that has the device, if any.
    pub current: Option<usize>,
    /// What is left of the current context's quantum (ns).
    pub slice_left: u64,
    /// What is left of a switch in progress to `current` (ns).
    pub switch_left: u64,
}

/// What each context has pending (ns of work), indexed by context.
pub type Pending = [u64];

/// The next context with work after `after` in round-robin order (`after` itself last).
fn next_with_work(pending: &Pending, after: Option<usize>) -> Option<usize> {
    let n = pending.len();
    let start = after.map_or(0, |a| a + 1);
    (0..n).map(|k| (start + k) % n).find(|&i| pending[i] > 0)
}

/// Simulates the device from `dev.now` to `to`: takes work off `pending` as it runs and calls
/// `ran(context, start, end)` for every span a context ran. New work must be added to
/// `pending` only after the device has been advanced to the time it arrives.
pub fn advance(dev: &mut Device, pending: &mut Pending, to: u64, p: Params, mut ran: impl FnMut(usize, u64, u64)) {
    while dev.now < to {
        // Whose turn: the current context keeps the device while its quantum lasts and it has
        // work, or while nobody else has any.
        let cur = dev.current.filter(|&c| c < pending.len() && pending[c] > 0);
        let others = next_with_work(pending, cur).filter(|&n| Some(n) != cur);
        let keep = cur.is_some() && (dev.slice_left > 0 || others.is_none());
        if !keep {
            let Some(next) = (if cur.is_some() { others } else { next_with_work(pending, dev.current) }) else {
                // Idle: nothing to run until new work arrives.
                dev.now = to;
                dev.slice_left = 0;
                dev.switch_left = 0;
                return;
            };
            // Only a change of context costs a switch: not the first context a device runs,
            // nor one that keeps the device (its quantum renewed).
            dev.switch_left = if dev.current.is_none_or(|c| c == next) { 0 } else { p.switch_ns };
            dev.current = Some(next);
            dev.slice_left = p.quantum_ns.max(1);
        }
        if dev.switch_left > 0 {
            let step = dev.switch_left.min(to - dev.now);
            dev.switch_left -= step;
            dev.now += step;
            continue;
        }
        let c = dev.current.expect("a context holds the device here");
        let mut step = pending[c].min(to - dev.now);
        if next_with_work(pending, Some(c)).is_some_and(|n| n != c) {
            step = step.min(dev.slice_left);
        }
        if step == 0 {
            dev.slice_left = 0;
            continue;
        }
        ran(c, dev.now, dev.now + step);
        pending[c] -= step;
        dev.slice_left = dev.slice_left.saturating_sub(step);
        dev.now += step;
    }
}

/// When context `ctx` would have run `work` more ns (its ticket), if no more work arrived:
/// simulated on copies, from `dev.now`.
pub fn finish_time(dev: &Device, pending: &Pending, ctx: usize, work: u64, p: Params) -> u64 {
    if work == 0 {
        return dev.now;
    }
    let (mut d, mut left) = (*dev, pending.to_vec());
    let mut done = 0u64;
    let mut at = None;
    // Everything pending finishes by now + all work + a switch per quantum of it: a bound to
    // advance to, in steps, until the ticket's work has run.
    let total: u64 = left.iter().sum();
    let horizon = d.now + total + (total / p.quantum_ns.max(1) + left.len() as u64 + 1) * (p.switch_ns + 1);
    advance(&mut d, &mut left, horizon, p, |c, s, e| {
        if c == ctx && at.is_none() {
            if done + (e - s) >= work {
                at = Some(s + (work - done));
            }
            done += e - s;
        }
    });
    at.unwrap_or(horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params { quantum_ns: 2_000, switch_ns: 100 };

    fn spans(dev: &mut Device, pending: &mut [u64], to: u64) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        advance(dev, pending, to, P, |c, s, e| match out.last_mut() {
            Some((lc, _, le)) if *lc == c && *le == s => *le = e,
            _ => out.push((c, s, e)),
        });
        out
    }

    #[test]
    fn a_context_alone_gets_the_whole_device_without_interruption() {
        let mut dev = Device::default();
        let mut pending = [0, 10_000];
        assert_eq!(spans(&mut dev, &mut pending, 50_000), [(1, 0, 10_000)]);
        assert_eq!((pending, dev.now), ([0, 0], 50_000));
    }

    #[test]
    fn two_busy_contexts_alternate_at_the_quantum_and_pay_each_switch() {
        let mut dev = Device::default();
        let mut pending = [5_000, 5_000];
        let got = spans(&mut dev, &mut pending, 100_000);
        assert_eq!(
            got,
            [(0, 0, 2_000), (1, 2_100, 4_100), (0, 4_200, 6_200), (1, 6_300, 8_300), (0, 8_400, 9_400), (1, 9_500, 10_500)],
            "each turn a quantum, a switch between turns; the remainders run to completion"
        );
    }

    #[test]
    fn a_short_kernel_waits_at_most_a_quantum_and_a_switch_behind_a_long_one() {
        let mut dev = Device::default();
        let mut pending = [1_000_000, 0];
        // The long kernel runs alone for a while, the short one arrives mid-quantum.
        assert_eq!(spans(&mut dev, &mut pending, 10_500), [(0, 0, 10_500)]);
        pending[1] = 300;
        let done = finish_time(&dev, &pending, 1, 300, P);
        // Context 0 has run past its quantum (it was alone): the device switches at once.
        assert_eq!(done, 10_500 + P.switch_ns + 300);
        let got = spans(&mut dev, &mut pending, 20_000);
        let short = got.iter().find(|s| s.0 == 1).expect("the short kernel ran");
        assert_eq!(short.2, done, "finish_time predicted it");
        assert_eq!(pending[1], 0);
        assert!(got.iter().any(|s| s.0 == 0 && s.1 > short.2), "the long kernel resumes after: {got:?}");
    }

    #[test]
    fn a_context_that_runs_out_of_work_yields_at_once() {
        let mut dev = Device::default();
        let mut pending = [500, 5_000];
        let got = spans(&mut dev, &mut pending, 100_000);
        assert_eq!(got, [(0, 0, 500), (1, 600, 5_600)]);
    }

    #[test]
    fn advancing_in_small_steps_is_advancing_at_once() {
        let (mut a, mut b) = (Device::default(), Device::default());
        let (mut pa, mut pb) = ([7_000, 3_000, 4_500], [7_000, 3_000, 4_500]);
        let whole = spans(&mut a, &mut pa, 40_000);
        let mut pieces = Vec::new();
        for t in (0..=40_000).step_by(333) {
            pieces.extend(spans(&mut b, &mut pb, t));
        }
        pieces.extend(spans(&mut b, &mut pb, 40_000));
        let mut merged: Vec<(usize, u64, u64)> = Vec::new();
        for s in pieces {
            match merged.last_mut() {
                Some(l) if l.0 == s.0 && l.2 == s.1 => l.2 = s.2,
                _ => merged.push(s),
            }
        }
        assert_eq!(merged, whole);
        assert_eq!((pa, a), (pb, b));
    }

    #[test]
    fn finish_time_is_when_the_ticket_runs_out() {
        let dev = Device::default();
        let pending = [5_000, 5_000];
        assert_eq!(finish_time(&dev, &pending, 0, 2_000, P), 2_000);
        assert_eq!(finish_time(&dev, &pending, 1, 2_000, P), 4_100);
        assert_eq!(finish_time(&dev, &pending, 0, 5_000, P), 9_400);
        assert_eq!(finish_time(&dev, &pending, 1, 0, P), 0);
    }
}
