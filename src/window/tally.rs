//! A set of per-outcome counters, with an optional latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::latency;
use super::{Outcome, SLOTS, SLOW};

/// One counter per outcome kind plus the slow-call counter.
pub(crate) struct Tally {
    counts: [AtomicU64; SLOTS],
    latency: Option<Box<[AtomicU64]>>,
}

/// Keeps the tally that every call writes on cache lines of its own, away
/// from the breaker's state and from the rarely written marks.
#[repr(align(128))]
pub(crate) struct Hot(pub(crate) Tally);

impl std::ops::Deref for Hot {
    type Target = Tally;

    fn deref(&self) -> &Tally {
        &self.0
    }
}

impl Tally {
    pub(crate) fn new(track_latency: bool) -> Tally {
        Tally {
            counts: Default::default(),
            latency: track_latency.then(latency::new_counters),
        }
    }

    #[inline]
    pub(crate) fn add(&self, outcome: Outcome, slow: bool, latency_bucket: Option<usize>) {
        self.counts[outcome as usize].fetch_add(1, Relaxed);
        if slow {
            self.counts[SLOW].fetch_add(1, Relaxed);
        }
        if let (Some(hist), Some(bucket)) = (&self.latency, latency_bucket) {
            hist[bucket].fetch_add(1, Relaxed);
        }
    }

    /// Undoes an `add`; counters wrap, and readers of a tally that is added
    /// to and taken from read them as signed (see `load_signed`).
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

    /// Makes this tally a copy of `other` (counter by counter, not as one
    /// atomic step).
    pub(crate) fn copy_from(&self, other: &Tally) {
        for (to, from) in self.counts.iter().zip(&other.counts) {
            to.store(from.load(Relaxed), Relaxed);
        }
        if let (Some(to), Some(from)) = (&self.latency, &other.latency) {
            for (to, from) in to.iter().zip(from.iter()) {
                to.store(from.load(Relaxed), Relaxed);
            }
        }
    }
}
