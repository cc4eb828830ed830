//! The count-based window: the outcomes of the last N calls, in a ring.
//!
//! Each slot of the ring holds one call's outcome as a byte. Recording a call
//! swaps its byte into the next slot and, only when the byte it pushes out is
//! different, moves one count from the old outcome to the new one. The
//! running counts therefore always describe exactly the calls in the ring:
//! after 10,000 successes a failure pushes out a success, so 50 failures make
//! half of a window of 100. (A window that only counts up until it is "full"
//! and then resets, or that never forgets, gets this wrong.) Every swap is
//! atomic, so each byte pushed out is exactly one byte pushed in before: the
//! counts balance whatever the interleaving, also when the ring wraps under
//! a call that claimed its slot a lap ago.
//!
//! Short-circuited calls never reached the dependency, and fallback and
//! cache outcomes describe what was done about a call, not the call: they do
//! not take a slot (they would push real outcomes out); the window counts
//! them since its last reset.
//!
//! The ring is made by the first call that needs it: a registry may hold a
//! million windows that are only looked up.

use std::sync::OnceLock;

use super::tally::{Hot, Tally};
use super::{latency, Outcome, SLOTS};
use crate::sync::{AtomicU16, AtomicU32, AtomicU8};
use std::sync::atomic::Ordering::Relaxed;

/// Larger rings cost memory (one byte a call, three with latency) and a
/// slower reset; beyond a million calls a time window says more.
pub(crate) const MAX_CALLS: u32 = 1_000_000;

const EMPTY: u8 = 0;
const SLOW_BIT: u8 = 0x80;

pub(crate) struct CountWindow {
    calls: u32,
    track_latency: bool,
    ring: OnceLock<Ring>,
    cursor: AtomicU32,
    /// The calls in the ring, and every call ever recorded.
    tallies: Hot,
    /// The totals of outcomes that take no slot, at the last reset.
    baseline: Tally,
}

struct Ring {
    /// Per slot: `EMPTY`, or `1 + outcome`, with `SLOW_BIT` for a slow call.
    codes: Box<[AtomicU8]>,
    /// Per slot, with latency tracking: `1 + latency bucket`, or zero.
    latencies: Option<Box<[AtomicU16]>>,
}

fn encode(outcome: Outcome, slow: bool) -> u8 {
    (1 + outcome as u8) | if slow { SLOW_BIT } else { 0 }
}

fn decode(code: u8) -> Option<(Outcome, bool)> {
    let outcome = Outcome::ALL.get(usize::from((code & !SLOW_BIT).checked_sub(1)?))?;
    Some((*outcome, code & SLOW_BIT != 0))
}

impl CountWindow {
    pub(crate) fn new(calls: u32, track_latency: bool) -> CountWindow {
        let window = CountWindow {
            calls,
            track_latency,
            ring: OnceLock::new(),
            cursor: AtomicU32::new(0),
            tallies: Hot::new(track_latency),
            baseline: Tally::new(false),
        };
        // loom cannot see the synchronization of std's `OnceLock`: under its
        // models the ring is made at once.
        #[cfg(seawall_loom)]
        window.ring();
        window
    }

    /// Bytes a window of this shape allocates with its first call.
    #[cfg(feature = "registry")]
    pub(crate) fn storage_bytes(calls: u32, track_latency: bool) -> usize {
        calls as usize * if track_latency { 3 } else { 1 }
    }

    /// Inlined: the ring is made once, and every call reads it.
    #[inline]
    fn ring(&self) -> &Ring {
        self.ring.get_or_init(|| Ring {
            codes: (0..self.calls).map(|_| AtomicU8::new(EMPTY)).collect(),
            latencies: self
                .track_latency
                .then(|| (0..self.calls).map(|_| AtomicU16::new(0)).collect()),
        })
    }

    /// Claims the next slot. A compare-and-swap that wraps, rather than a
    /// counter taken modulo the length: no division on the hot path.
    #[inline]
    fn next_slot(&self) -> usize {
        let mut slot = self.cursor.load(Relaxed);
        loop {
            let next = if slot + 1 >= self.calls { 0 } else { slot + 1 };
            match self
                .cursor
                .compare_exchange_weak(slot, next, Relaxed, Relaxed)
            {
                Ok(_) => return slot as usize,
                Err(actual) => slot = actual,
            }
        }
    }

    /// Records one call; returns how many calls of its outcome were recorded
    /// before, ever (for sampling).
    #[inline]
    pub(crate) fn record(
        &self,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) -> u64 {
        let Hot { in_ring, total } = &self.tallies;
        let prior = total.add(outcome, slow, latency_bucket);
        if !outcome.is_call() {
            return prior;
        }
        let ring = self.ring();
        let slot = self.next_slot();
        let code = encode(outcome, slow);
        let old = ring.codes[slot].swap(code, Relaxed);
        if old != code {
            if let Some((outcome, slow)) = decode(old) {
                in_ring.remove(outcome, slow, None);
            }
            in_ring.add(outcome, slow, None);
        }
        if let (Some(latencies), Some(bucket)) = (&ring.latencies, latency_bucket) {
            // Buckets number a few hundred: they fit in 16 bits.
            let new = bucket as u16 + 1;
            let old = latencies[slot].swap(new, Relaxed);
            if old != new {
                move_latency(in_ring, old, new);
            }
        }
        prior
    }

    /// Counts one call in the lifetime totals only.
    pub(crate) fn record_retired(
        &self,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) {
        self.tallies.total.add(outcome, slow, latency_bucket);
    }

    pub(crate) fn counts(&self) -> [u64; SLOTS] {
        let Hot { in_ring, total } = &self.tallies;
        let mut counts = in_ring.counts_signed();
        let (total, baseline) = (total.counts(), self.baseline.counts());
        for outcome in Outcome::ALL.into_iter().filter(|o| !o.is_call()) {
            let i = outcome as usize;
            counts[i] = total[i].saturating_sub(baseline[i]);
        }
        counts
    }

    pub(crate) fn snapshot(&self) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let latency = self
            .tallies
            .in_ring
            .latency()
            .map(|l| l.into_iter().map(|n| (n as i64).max(0) as u64).collect());
        (self.counts(), latency)
    }

    pub(crate) fn totals(&self) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let total = &self.tallies.total;
        (total.counts(), total.latency())
    }

    pub(crate) fn total_counts(&self) -> [u64; SLOTS] {
        self.tallies.total.counts()
    }

    /// Empties the ring slot by slot, so calls recorded meanwhile still
    /// balance the counts. O(calls): a reset is rare (a breaker closing).
    pub(crate) fn reset(&self) {
        let in_ring = &self.tallies.in_ring;
        if let Some(ring) = self.ring.get() {
            for code in ring.codes.iter() {
                if let Some((outcome, slow)) = decode(code.swap(EMPTY, Relaxed)) {
                    in_ring.remove(outcome, slow, None);
                }
            }
            if let Some(latencies) = &ring.latencies {
                for latency in latencies.iter() {
                    move_latency(in_ring, latency.swap(0, Relaxed), 0);
                }
            }
        }
        self.baseline.copy_from(&self.tallies.total);
    }
}

/// Moves one call in the ring's latency histogram from bucket `old` to
/// bucket `new` (each one more than the bucket, zero for none).
fn move_latency(in_ring: &Tally, old: u16, new: u16) {
    if let Some(counter) = old
        .checked_sub(1)
        .and_then(|b| in_ring.latency_counter(b.into()))
    {
        counter.fetch_sub(1, Relaxed);
    }
    if let Some(counter) = new
        .checked_sub(1)
        .and_then(|b| in_ring.latency_counter(b.into()))
    {
        counter.fetch_add(1, Relaxed);
    }
}

impl std::fmt::Debug for CountWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountWindow")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

/// Latency buckets fit the ring's 16-bit slots.
const _: () = assert!(latency::BUCKETS < u16::MAX as usize);

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for outcome in Outcome::ALL {
            for slow in [false, true] {
                assert_eq!(decode(encode(outcome, slow)), Some((outcome, slow)));
            }
        }
        assert_eq!(decode(EMPTY), None);
    }

    #[test]
    fn the_ring_is_made_by_the_first_call_that_takes_a_slot() {
        let window = CountWindow::new(1_000_000, true);
        window.record(Outcome::ShortCircuited, false, None);
        assert!(window.ring.get().is_none());
        window.record(Outcome::Success, false, Some(3));
        assert!(window.ring.get().is_some());
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    /// Two calls wrap a ring of one slot under each other while a third
    /// thread resets it: the counts always end as the ring's content says.
    #[test]
    fn the_ring_balances_under_wrapping_and_reset() {
        loom::model(|| {
            let w = Arc::new(CountWindow::new(1, false));
            w.record(Outcome::Failure, false, None);
            let a = {
                let w = w.clone();
                thread::spawn(move || {
                    w.record(Outcome::Success, false, None);
                })
            };
            let b = {
                let w = w.clone();
                thread::spawn(move || {
                    w.record(Outcome::Timeout, false, None);
                })
            };
            a.join().unwrap();
            b.join().unwrap();
            let counts = w.counts();
            let in_ring = counts[Outcome::Success as usize]
                + counts[Outcome::Failure as usize]
                + counts[Outcome::Timeout as usize];
            assert_eq!(in_ring, 1, "one slot holds one call");
            assert_eq!(counts[Outcome::Failure as usize], 0, "pushed out");
            w.reset();
            assert_eq!(w.counts(), [0; SLOTS]);
            let totals = w.totals().0;
            assert_eq!(totals[Outcome::Success as usize], 1);
            assert_eq!(totals[Outcome::Timeout as usize], 1);
            assert_eq!(totals[Outcome::Failure as usize], 1);
        });
    }

    /// Two calls take the two slots of a ring at once: each lands in its own.
    #[test]
    fn concurrent_calls_take_distinct_slots() {
        loom::model(|| {
            let w = Arc::new(CountWindow::new(2, false));
            let threads: Vec<_> = [Outcome::Success, Outcome::Failure]
                .into_iter()
                .map(|outcome| {
                    let w = w.clone();
                    thread::spawn(move || {
                        w.record(outcome, false, None);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let counts = w.counts();
            assert_eq!(
                (
                    counts[Outcome::Success as usize],
                    counts[Outcome::Failure as usize]
                ),
                (1, 1)
            );
        });
    }
}
