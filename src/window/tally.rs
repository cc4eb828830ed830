//! A set of per-outcome counters, with an optional latency histogram.

use std::sync::atomic::Ordering::Relaxed;

use super::latency;
use super::{Outcome, SLOTS, SLOW};
use crate::sync::AtomicU64;

/// One counter per outcome kind plus the slow-call counter.
pub(crate) struct Tally {
    counts: [AtomicU64; SLOTS],
    latency: Option<Box<[AtomicU64]>>,
}

/// The count window's tallies that every call writes.
pub(crate) struct Hot {
    /// The calls in the ring.
    pub(crate) in_ring: Tally,
    /// Every call ever recorded.
    pub(crate) total: Tally,
}

impl Hot {
    pub(crate) fn new(track_latency: bool) -> Hot {
        Hot {
            in_ring: Tally::new(track_latency),
            total: Tally::new(track_latency),
        }
    }
}

impl Tally {
    pub(crate) fn new(track_latency: bool) -> Tally {
        Tally {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: track_latency.then(latency::new_counters),
        }
    }

    /// Counts one call; returns the outcome's count before.
    #[inline]
    pub(crate) fn add(&self, outcome: Outcome, slow: bool, latency_bucket: Option<usize>) -> u64 {
        let prior = self.counts[outcome as usize].fetch_add(1, Relaxed);
        if slow {
            self.counts[SLOW].fetch_add(1, Relaxed);
        }
        if let (Some(hist), Some(bucket)) = (&self.latency, latency_bucket) {
            hist[bucket].fetch_add(1, Relaxed);
        }
        prior
    }

    /// Undoes an `add`; counters wrap, and readers of a tally that is added
    /// to and taken from read them as signed (see `counts_signed`).
    #[inline]
    pub(crate) fn remove(&self, outcome: Outcome, slow: bool, latency_bucket: Option<usize>) {
        self.counts[outcome as usize].fetch_sub(1, Relaxed);
        if slow {
            self.counts[SLOW].fetch_sub(1, Relaxed);
        }
        if let (Some(hist), Some(bucket)) = (&self.latency, latency_bucket) {
            hist[bucket].fetch_sub(1, Relaxed);
        }
    }

    #[inline]
    pub(crate) fn latency_counter(&self, bucket: usize) -> Option<&AtomicU64> {
        self.latency.as_ref().map(|h| &h[bucket])
    }

    pub(crate) fn counts(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| self.counts[i].load(Relaxed))
    }

    /// Counts of a tally that is both added to and taken from: a removal can
    /// land before the add it undoes, so a counter may be briefly "negative".
    pub(crate) fn counts_signed(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| (self.counts[i].load(Relaxed) as i64).max(0) as u64)
    }

    pub(crate) fn latency(&self) -> Option<Vec<u64>> {
        self.latency.as_deref().map(latency::load)
    }

    /// Makes this tally's counts a copy of `other`'s (counter by counter,
    /// not as one atomic step).
    pub(crate) fn copy_from(&self, other: &Tally) {
        for (to, from) in self.counts.iter().zip(&other.counts) {
            to.store(from.load(Relaxed), Relaxed);
        }
    }
}
