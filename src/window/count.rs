//! The count-based window: the outcomes of the last N calls, in a ring.
//!
//! Each slot of the ring holds one call's outcome as a byte. Recording a call
//! swaps its byte into the next slot and, only when the byte it pushes out is
//! different, moves one count from the old outcome to the new one. The
//! running counts therefore always describe exactly the calls in the ring:
//! after 10,000 successes a failure pushes out a success, so 50 failures make
//! half of a window of 100. (A window that only counts up until it is "full"
//! and then resets, or that never forgets, gets this wrong.)
//!
//! Short-circuited calls never reached the dependency, and fallback and
//! cache outcomes describe what was done about a call, not the call: they do
//! not take a slot (they would push real outcomes out) and are counted
//! apart, since the last reset.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use super::tally::Tally;
use super::{Outcome, SLOTS};

/// Larger rings cost memory (one byte a call, three with latency) and a
/// slower reset; beyond a million calls a time window says more.
pub(crate) const MAX_CALLS: u32 = 1_000_000;

const EMPTY: u8 = 0;
const SLOW_BIT: u8 = 0x80;

pub(crate) struct CountWindow {
    /// Per slot: `EMPTY`, or `1 + outcome`, with `SLOW_BIT` for a slow call.
    codes: Box<[AtomicU8]>,
    /// Per slot, with latency tracking: `1 + latency bucket`, or zero.
    latencies: Option<Box<[AtomicU16]>>,
    cursor: AtomicU32,
    /// Outcomes that are not a call's own, by outcome. Boxed: rarely
    /// written, and inline they made every breaker's window a cache line
    /// longer.
    apart: Box<[AtomicU64; SLOTS]>,
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
        CountWindow {
            codes: (0..calls).map(|_| AtomicU8::new(EMPTY)).collect(),
            latencies: track_latency.then(|| (0..calls).map(|_| AtomicU16::new(0)).collect()),
            cursor: AtomicU32::new(0),
            apart: Default::default(),
        }
    }

    /// Claims the next slot. A compare-and-swap that wraps, rather than a
    /// counter taken modulo the length: no division on the hot path.
    #[inline]
    fn next_slot(&self) -> usize {
        let len = self.codes.len() as u32;
        let mut slot = self.cursor.load(Relaxed);
        loop {
            let next = if slot + 1 >= len { 0 } else { slot + 1 };
            match self
                .cursor
                .compare_exchange_weak(slot, next, Relaxed, Relaxed)
            {
                Ok(_) => return slot as usize,
                Err(actual) => slot = actual,
            }
        }
    }

    #[inline]
    pub(crate) fn record(
        &self,
        in_ring: &Tally,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) {
        if !outcome.is_call() {
            self.apart[outcome as usize].fetch_add(1, Relaxed);
            return;
        }
        let slot = self.next_slot();
        let code = encode(outcome, slow);
        let old = self.codes[slot].swap(code, Relaxed);
        if old != code {
            if let Some((outcome, slow)) = decode(old) {
                in_ring.remove(outcome, slow, None);
            }
            in_ring.add(outcome, slow, None);
        }
        if let (Some(latencies), Some(bucket)) = (&self.latencies, latency_bucket) {
            // Buckets number a few hundred: they fit in 16 bits.
            let new = bucket as u16 + 1;
            let old = latencies[slot].swap(new, Relaxed);
            if old != new {
                move_latency(in_ring, old, new);
            }
        }
    }

    pub(crate) fn counts(&self, in_ring: &Tally) -> [u64; SLOTS] {
        let mut counts = in_ring.counts_signed();
        for outcome in Outcome::ALL.into_iter().filter(|o| !o.is_call()) {
            counts[outcome as usize] = self.apart[outcome as usize].load(Relaxed);
        }
        counts
    }

    pub(crate) fn snapshot(&self, in_ring: &Tally) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let latency = in_ring
            .latency()
            .map(|l| l.into_iter().map(|n| (n as i64).max(0) as u64).collect());
        (self.counts(in_ring), latency)
    }

    /// Empties the ring slot by slot, so calls recorded meanwhile still
    /// balance the counts. O(calls): a reset is rare (a breaker closing).
    pub(crate) fn reset(&self, in_ring: &Tally) {
        for code in self.codes.iter() {
            if let Some((outcome, slow)) = decode(code.swap(EMPTY, Relaxed)) {
                in_ring.remove(outcome, slow, None);
            }
        }
        if let Some(latencies) = &self.latencies {
            for latency in latencies.iter() {
                move_latency(in_ring, latency.swap(0, Relaxed), 0);
            }
        }
        for counter in self.apart.iter() {
            counter.store(0, Relaxed);
        }
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
            .field("calls", &self.codes.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
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
}
