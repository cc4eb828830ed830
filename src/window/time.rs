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

use super::tally::{Hot, Tally};
use super::SLOTS;

/// More buckets than this buys precision nobody can see, at a copy cost.
pub(crate) const MAX_BUCKETS: u32 = 1000;

pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    /// Every call ever recorded.
    totals: Hot,
    /// `totals` as it was when the latest reset happened.
    baseline: Tally,
    /// One mark per bucket of the span, indexed by epoch modulo their count.
    /// Made by the first call: they are most of a window's memory, and a
    /// registry may hold a million breakers that never see a call.
    marks: OnceLock<Box<[Mark]>>,
    buckets: u32,
    track_latency: bool,
    /// When the newest bucket ends: the next call at or after it starts one.
    next_boundary: AtomicU64,
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
            totals: Hot(Tally::new(track_latency)),
            baseline: Tally::new(track_latency),
            marks: OnceLock::new(),
            buckets,
            track_latency,
            next_boundary: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn record(
        &self,
        now: u64,
        outcome: super::Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) {
        if now >= self.next_boundary.load(Ordering::Relaxed) {
            self.start_bucket(now);
        }
        self.totals.add(outcome, slow, latency_bucket);
    }

    #[cold]
    fn start_bucket(&self, now: u64) {
        let epoch = now / self.bucket_nanos;
        let end = (epoch + 1).saturating_mul(self.bucket_nanos);
        if self.next_boundary.fetch_max(end, Ordering::AcqRel) >= end {
            // Another call started this bucket (or a later one) first.
            return;
        }
        let marks = self.marks.get_or_init(|| {
            (0..self.buckets)
                .map(|_| Mark {
                    epoch: AtomicU64::new(0),
                    at_start: Tally::new(self.track_latency),
                })
                .collect()
        });
        let mark = &marks[(epoch % u64::from(self.buckets)) as usize];
        mark.epoch.store(0, Ordering::Release);
        mark.at_start.copy_from(&self.totals);
        mark.epoch.store(epoch + 1, Ordering::Release);
    }

    /// The mark of the oldest bucket still inside the span at `now`, if any
    /// bucket inside the span saw a call.
    fn oldest_mark(&self, now: u64) -> Option<&Mark> {
        let current = now / self.bucket_nanos;
        let oldest = (current + 1).saturating_sub(u64::from(self.buckets));
        self.marks
            .get()?
            .iter()
            .filter_map(|mark| {
                let tag = mark.epoch.load(Ordering::Acquire);
                let epoch = tag.checked_sub(1)?;
                (oldest..=current).contains(&epoch).then_some((epoch, mark))
            })
            .min_by_key(|(epoch, _)| *epoch)
            .map(|(_, mark)| mark)
    }

    pub(crate) fn counts(&self, now: u64) -> [u64; SLOTS] {
        match self.oldest_mark(now) {
            None => [0; SLOTS],
            Some(mark) => {
                let since = max_each(mark.at_start.counts(), self.baseline.counts());
                minus(&self.totals.counts(), &since)
            }
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let Some(mark) = self.oldest_mark(now) else {
            let empty = self.totals.latency().map(|l| vec![0; l.len()]);
            return ([0; SLOTS], empty);
        };
        let since = max_each(mark.at_start.counts(), self.baseline.counts());
        let counts = minus(&self.totals.counts(), &since);
        let latency = match (
            self.totals.latency(),
            mark.at_start.latency(),
            self.baseline.latency(),
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

    pub(crate) fn reset(&self) {
        self.baseline.copy_from(&self.totals);
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
