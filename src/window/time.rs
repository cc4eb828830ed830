//! The time-based window.
//!
//! Rather than N buckets that must be zeroed as time moves on (a zeroing
//! that races with concurrent increments and loses counts), the window keeps
//! one cumulative tally that only ever grows, and for each of the last N
//! bucket boundaries a mark: a copy of the tally taken when the first call of
//! that bucket arrived. The window's counts are the tally minus the mark of
//! the oldest bucket still inside the span. A bucket with no calls has no
//! mark, and needs none: nothing changed during it. Once every mark is older
//! than the span, the window is empty, however long it sat idle.
//!
//! Recording is one relaxed load (is it time to start a new bucket?) and the
//! tally's increments. Starting a bucket copies the tally once per bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::tally::Tally;
use super::SLOTS;

/// More buckets than this buys precision nobody can see, at a copy cost.
pub(crate) const MAX_BUCKETS: u32 = 1000;

/// The window's own state; the tally of every call ever recorded (the
/// "totals") is the [`RollingWindow`](super::RollingWindow)'s, passed in.
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    /// Made by the first call: the marks are most of a window's memory, and
    /// a registry may hold a million breakers that never see a call.
    marks: OnceLock<Box<Marks>>,
    buckets: u32,
    track_latency: bool,
    /// When the newest bucket ends: the next call at or after it starts one.
    next_boundary: AtomicU64,
}

struct Marks {
    /// The totals as they were when the latest reset happened.
    baseline: Tally,
    /// One mark per bucket of the span, indexed by epoch modulo their count.
    each: Box<[Mark]>,
}

struct Mark {
    /// The epoch (bucket number since the clock's origin) plus one; zero
    /// while empty or being written.
    epoch: AtomicU64,
    at_start: Tally,
}

impl TimeWindow {
    pub(crate) fn new(span: Duration, buckets: u32, track_latency: bool) -> TimeWindow {
        // `Window::validate` guarantees a whole, non-zero number of nanoseconds.
        let bucket_nanos = u64::try_from(span.as_nanos() / u128::from(buckets)).unwrap_or(u64::MAX);
        TimeWindow {
            bucket_nanos,
            marks: OnceLock::new(),
            buckets,
            track_latency,
            next_boundary: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn record(
        &self,
        totals: &Tally,
        now: u64,
        outcome: super::Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) {
        if now >= self.next_boundary.load(Ordering::Relaxed) {
            self.start_bucket(totals, now);
        }
        totals.add(outcome, slow, latency_bucket);
    }

    fn marks(&self) -> &Marks {
        self.marks.get_or_init(|| {
            Box::new(Marks {
                baseline: Tally::new(self.track_latency),
                each: (0..self.buckets)
                    .map(|_| Mark {
                        epoch: AtomicU64::new(0),
                        at_start: Tally::new(self.track_latency),
                    })
                    .collect(),
            })
        })
    }

    #[cold]
    fn start_bucket(&self, totals: &Tally, now: u64) {
        let epoch = now / self.bucket_nanos;
        let end = (epoch + 1).saturating_mul(self.bucket_nanos);
        if self.next_boundary.fetch_max(end, Ordering::AcqRel) >= end {
            // Another call started this bucket (or a later one) first.
            return;
        }
        let mark = &self.marks().each[(epoch % u64::from(self.buckets)) as usize];
        mark.epoch.store(0, Ordering::Release);
        mark.at_start.copy_from(totals);
        mark.epoch.store(epoch + 1, Ordering::Release);
    }

    /// The baseline and the mark of the oldest bucket still inside the span
    /// at `now`, if any bucket inside the span saw a call.
    fn oldest_mark(&self, now: u64) -> Option<(&Tally, &Mark)> {
        let marks = self.marks.get()?;
        let current = now / self.bucket_nanos;
        let oldest = (current + 1).saturating_sub(u64::from(self.buckets));
        marks
            .each
            .iter()
            .filter_map(|mark| {
                let tag = mark.epoch.load(Ordering::Acquire);
                let epoch = tag.checked_sub(1)?;
                (oldest..=current).contains(&epoch).then_some((epoch, mark))
            })
            .min_by_key(|(epoch, _)| *epoch)
            .map(|(_, mark)| (&marks.baseline, mark))
    }

    pub(crate) fn counts(&self, totals: &Tally, now: u64) -> [u64; SLOTS] {
        match self.oldest_mark(now) {
            None => [0; SLOTS],
            Some((baseline, mark)) => {
                let since = max_each(mark.at_start.counts(), baseline.counts());
                minus(&totals.counts(), &since)
            }
        }
    }

    pub(crate) fn snapshot(&self, totals: &Tally, now: u64) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let Some((baseline, mark)) = self.oldest_mark(now) else {
            let empty = totals.latency().map(|l| vec![0; l.len()]);
            return ([0; SLOTS], empty);
        };
        let since = max_each(mark.at_start.counts(), baseline.counts());
        let counts = minus(&totals.counts(), &since);
        let latency = match (
            totals.latency(),
            mark.at_start.latency(),
            baseline.latency(),
        ) {
            (Some(totals), Some(at_start), Some(baseline)) => {
                let since = at_start.iter().zip(&baseline).map(|(a, b)| *a.max(b));
                Some(
                    totals
                        .iter()
                        .zip(since)
                        .map(|(t, s)| t.saturating_sub(s))
                        .collect(),
                )
            }
            _ => None,
        };
        (counts, latency)
    }

    pub(crate) fn reset(&self, totals: &Tally) {
        self.marks().baseline.copy_from(totals);
    }
}

fn max_each(a: [u64; SLOTS], b: [u64; SLOTS]) -> [u64; SLOTS] {
    std::array::from_fn(|i| a[i].max(b[i]))
}

/// `totals - since`, counter by counter; a mark copied while calls were
/// recorded can be a little ahead of the totals read before it.
fn minus(totals: &[u64; SLOTS], since: &[u64; SLOTS]) -> [u64; SLOTS] {
    std::array::from_fn(|i| totals[i].saturating_sub(since[i]))
}

impl std::fmt::Debug for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeWindow")
            .field("bucket", &Duration::from_nanos(self.bucket_nanos))
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}
