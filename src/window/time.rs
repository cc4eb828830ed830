//! The time-based window: a ring of buckets, each a set of counters for
//! the calls of one stretch of time (an *epoch*: `now / bucket`).
//!
//! A slot of the ring is reused, `buckets` epochs later, by a newer bucket,
//! and its counters must then start again from zero while other threads
//! may still be counting into them. Zeroing a counter races with the
//! increments around it, and copying counters to subtract them later (the
//! obvious alternatives) loses or double-counts the calls made meanwhile.
//! So each counter carries, in its top bits, the epoch it counts for:
//! `epoch << count_bits | count`, which grows with the epoch.
//!
//! - A call adds one with `fetch_add`: one atomic operation, as a plain
//!   counter would.
//! - A slot is started for a new epoch with one `fetch_max(epoch << count_bits)`
//!   per counter before the slot is announced: a counter of an older epoch
//!   becomes this epoch's zero; one already counting for this epoch (another
//!   thread started the bucket first and calls are counting) is left as it
//!   is. Any number of threads may start a bucket at once.
//! - A count that leaves a counter (replaced by a newer epoch's zero, or by
//!   a reset) is added to the *retired* counters, so the totals since the
//!   window was made are exact: retired counts plus every counter's count.
//! - A call that read the clock long ago (more than the span) and counts
//!   only after its slot was taken by a newer bucket is counted in that
//!   bucket: once, as every call.
//!
//! Readers sum, over the slots whose epoch is inside the span, the counters
//! that count for that epoch: O(buckets), never O(calls).
//!
//! `count_bits` is `log2(bucket in ns)`, so the epoch bits hold any epoch of
//! a 64-bit nanosecond clock, and a counter of a bucket holds a quarter of a
//! call per nanosecond of it (262,144 calls of one outcome in a 1 ms bucket),
//! more than one atomic counter can take in real time. In paused tokio time
//! a test can go past it: the calls beyond go to the totals only.

use std::sync::OnceLock;
use std::time::Duration;

use super::{latency, Outcome, SLOTS, SLOW};
use crate::sync::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

/// More buckets than this buys precision nobody can see, at a cost on every
/// read.
pub(crate) const MAX_BUCKETS: u32 = 1000;

/// Bits of the newest bucket's word that hold its slot index.
const INDEX_BITS: u32 = 10;

pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: u32,
    /// Low bits of a counter that count; the epoch is above them.
    count_bits: u32,
    /// Counters per slot: the slot's epoch word, one per outcome, the slow
    /// calls, and with latency tracking the histogram's.
    per_slot: usize,
    /// Every slot's words in a row, then the retired counters laid out like
    /// one more slot. Made by the first call: a registry may hold a million
    /// windows that never see one.
    words: OnceLock<Box<[AtomicU64]>>,
    /// The newest bucket started, as `(epoch << INDEX_BITS | slot) + 1`;
    /// zero before the first. Lets a call find its bucket without a
    /// division.
    newest: AtomicU64,
    /// Calls of epochs before this one are forgotten (a reset).
    floor: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(span: Duration, buckets: u32, track_latency: bool) -> TimeWindow {
        // `Window::validate` guarantees a whole number of nanoseconds, at
        // least a millisecond.
        let bucket_nanos = u64::try_from(span.as_nanos() / u128::from(buckets)).unwrap_or(u64::MAX);
        let latency = if track_latency { latency::BUCKETS } else { 0 };
        let window = TimeWindow {
            bucket_nanos,
            buckets,
            count_bits: bucket_nanos.ilog2(),
            per_slot: 1 + SLOTS + latency,
            words: OnceLock::new(),
            newest: AtomicU64::new(0),
            floor: AtomicU64::new(0),
        };
        // loom cannot see the synchronization of std's `OnceLock`: under its
        // models the words are made at once.
        #[cfg(seawall_loom)]
        window.words();
        window
    }

    /// Bytes a window of this shape allocates with its first call.
    pub(crate) fn storage_bytes(buckets: u32, track_latency: bool) -> usize {
        let latency = if track_latency { latency::BUCKETS } else { 0 };
        (buckets as usize + 1) * (1 + SLOTS + latency) * std::mem::size_of::<u64>()
    }

    fn words(&self) -> &[AtomicU64] {
        self.words.get_or_init(|| {
            let len = (self.buckets as usize + 1) * self.per_slot;
            (0..len).map(|_| AtomicU64::new(0)).collect()
        })
    }

    #[inline]
    fn epoch_of(&self, word: u64) -> u64 {
        word >> self.count_bits
    }

    #[inline]
    fn count_of(&self, word: u64) -> u64 {
        word & ((1 << self.count_bits) - 1)
    }

    /// A counter counting past this takes its call back out (see the
    /// module's notes): half the count bits, so that no number of threads
    /// adding at once can carry into the epoch.
    #[inline]
    fn full(&self) -> u64 {
        1 << (self.count_bits - 1)
    }

    /// Records one call at `now`; returns the count its outcome's counter
    /// held before (for sampling: it is zero at the first call of a bucket
    /// and every so many calls after).
    #[inline]
    pub(crate) fn record(
        &self,
        now: u64,
        outcome: Outcome,
        slow: bool,
        latency_bucket: Option<usize>,
    ) -> u64 {
        let words = self.words();
        let base = self.bucket_at(now, words);
        let prior = self.add(words, base, 1 + outcome as usize);
        if slow {
            self.add(words, base, 1 + SLOW);
        }
        if let Some(bucket) = latency_bucket.filter(|_| self.per_slot > 1 + SLOTS) {
            self.add(words, base, 1 + SLOTS + bucket);
        }
        prior
    }

    /// Counts one call in the lifetime totals only.
    pub(crate) fn record_retired(&self, outcome: Outcome, slow: bool, latency_bucket: Option<usize>) {
        let words = self.words();
        self.retire(words, 1 + outcome as usize, 1);
        if slow {
            self.retire(words, 1 + SLOW, 1);
        }
        if let Some(bucket) = latency_bucket.filter(|_| self.per_slot > 1 + SLOTS) {
            self.retire(words, 1 + SLOTS + bucket, 1);
        }
    }

    /// The first word of the slot of `now`'s bucket, started if it is new.
    #[inline]
    fn bucket_at(&self, now: u64, words: &[AtomicU64]) -> usize {
        // Acquire: a bucket is announced here only once its slot is ready.
        let newest = self.newest.load(Acquire);
        if newest != 0 {
            let epoch = (newest - 1) >> INDEX_BITS;
            // One comparison for both ends: before the bucket's start wraps.
            if now.wrapping_sub(epoch.wrapping_mul(self.bucket_nanos)) < self.bucket_nanos {
                let index = ((newest - 1) & ((1 << INDEX_BITS) - 1)) as usize;
                return index * self.per_slot;
            }
        }
        self.start_bucket(now, words)
    }

    #[cold]
    #[inline(never)]
    fn start_bucket(&self, now: u64, words: &[AtomicU64]) -> usize {
        let epoch = now / self.bucket_nanos;
        let index = epoch % u64::from(self.buckets);
        let base = index as usize * self.per_slot;
        if words[base].load(Acquire) <= epoch {
            let zero = epoch << self.count_bits;
            for i in 1..self.per_slot {
                let before = words[base + i].fetch_max(zero, AcqRel);
                if before < zero {
                    self.retire(words, i, self.count_of(before));
                }
            }
            words[base].fetch_max(epoch + 1, AcqRel);
        }
        self.newest
            .fetch_max(((epoch << INDEX_BITS) | index) + 1, AcqRel);
        base
    }

    /// Counts one call in counter `i` of the slot at `base`; returns the
    /// count before.
    #[inline]
    fn add(&self, words: &[AtomicU64], base: usize, i: usize) -> u64 {
        let counter = &words[base + i];
        let before = self.count_of(counter.fetch_add(1, Relaxed));
        if before >= self.full() {
            self.take_back(words, counter, i);
        }
        before
    }

    /// Takes a call back out of a counter that is full, into the totals;
    /// unless the count was retired meanwhile (by a newer bucket or a reset),
    /// taking it along.
    #[cold]
    fn take_back(&self, words: &[AtomicU64], counter: &AtomicU64, i: usize) {
        let mut word = counter.load(Relaxed);
        while self.count_of(word) >= self.full() {
            match counter.compare_exchange_weak(word, word - 1, Relaxed, Relaxed) {
                Ok(_) => return self.retire(words, i, 1),
                Err(actual) => word = actual,
            }
        }
    }

    /// Keeps `n` calls in the lifetime totals that left counter `i`.
    fn retire(&self, words: &[AtomicU64], i: usize, n: u64) {
        if n > 0 {
            words[self.buckets as usize * self.per_slot + i].fetch_add(n, Relaxed);
        }
    }

    /// Runs `f` on the first word and the epoch of every slot inside the
    /// span at `now` (and after the last reset).
    fn live_slots(&self, now: u64, mut f: impl FnMut(&[AtomicU64], usize, u64)) {
        let Some(words) = self.words.get() else {
            return;
        };
        let current = now / self.bucket_nanos;
        let oldest = (current + 1)
            .saturating_sub(u64::from(self.buckets))
            .max(self.floor.load(Acquire));
        for index in 0..self.buckets as usize {
            let base = index * self.per_slot;
            let Some(epoch) = words[base].load(Acquire).checked_sub(1) else {
                continue;
            };
            if (oldest..=current).contains(&epoch) {
                f(words, base, epoch);
            }
        }
    }

    /// Sums, over the window at `now`, each slot's counters from `first` on
    /// into `sums`.
    fn sum(&self, now: u64, first: usize, sums: &mut [u64]) {
        self.live_slots(now, |words, base, epoch| {
            for (i, sum) in sums.iter_mut().enumerate() {
                let word = words[base + first + i].load(Relaxed);
                if self.epoch_of(word) == epoch {
                    *sum += self.count_of(word);
                }
            }
        });
    }

    pub(crate) fn counts(&self, now: u64) -> [u64; SLOTS] {
        let mut counts = [0; SLOTS];
        self.sum(now, 1, &mut counts);
        counts
    }

    pub(crate) fn snapshot(&self, now: u64) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let latency = (self.per_slot > 1 + SLOTS).then(|| {
            let mut latency = vec![0; latency::BUCKETS];
            self.sum(now, 1 + SLOTS, &mut latency);
            latency
        });
        (self.counts(now), latency)
    }

    /// Every call ever recorded, by outcome: never reset.
    pub(crate) fn totals(&self) -> ([u64; SLOTS], Option<Vec<u64>>) {
        let mut all = vec![0; self.per_slot - 1];
        if let Some(words) = self.words.get() {
            for slot in 0..=self.buckets as usize {
                let retired = slot == self.buckets as usize;
                for (i, sum) in all.iter_mut().enumerate() {
                    let word = words[slot * self.per_slot + 1 + i].load(Relaxed);
                    *sum += if retired { word } else { self.count_of(word) };
                }
            }
        }
        let latency = (self.per_slot > 1 + SLOTS).then(|| all.split_off(SLOTS));
        (std::array::from_fn(|i| all[i]), latency)
    }

    /// Forgets the calls recorded before `now`: the older buckets by the
    /// floor, the current one by zeroing its counters (retiring their counts).
    pub(crate) fn reset(&self, now: u64) {
        let current = now / self.bucket_nanos;
        self.floor.fetch_max(current, AcqRel);
        let Some(words) = self.words.get() else {
            return;
        };
        let base = (current % u64::from(self.buckets)) as usize * self.per_slot;
        if words[base].load(Acquire) != current + 1 {
            return;
        }
        let zero = current << self.count_bits;
        for i in 1..self.per_slot {
            let counter = &words[base + i];
            let mut word = counter.load(Acquire);
            while self.epoch_of(word) == current && word != zero {
                match counter.compare_exchange_weak(word, zero, AcqRel, Acquire) {
                    Ok(_) => {
                        self.retire(words, i, self.count_of(word));
                        break;
                    }
                    Err(actual) => word = actual,
                }
            }
        }
    }
}

impl std::fmt::Debug for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeWindow")
            .field("bucket", &Duration::from_nanos(self.bucket_nanos))
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use std::sync::atomic::AtomicU64 as Clock;
    use std::sync::{Arc, Barrier};

    use super::*;

    const MS: u64 = 1_000_000;

    fn window(buckets: u32) -> TimeWindow {
        TimeWindow::new(Duration::from_millis(u64::from(buckets)), buckets, false)
    }

    fn count(counts: [u64; SLOTS], outcome: Outcome) -> u64 {
        counts[outcome as usize]
    }

    #[test]
    fn a_bucket_counts_from_its_first_call_to_the_span() {
        let w = window(10);
        w.record(0, Outcome::Failure, false, None);
        w.record(3 * MS + 7, Outcome::Success, true, None);
        assert_eq!(count(w.counts(9 * MS + 999_999), Outcome::Failure), 1);
        let later = w.counts(10 * MS);
        assert_eq!(
            (
                count(later, Outcome::Failure),
                count(later, Outcome::Success),
                later[SLOW]
            ),
            (0, 1, 1)
        );
        assert_eq!(w.counts(13 * MS), [0; SLOTS]);
        assert_eq!(count(w.totals().0, Outcome::Failure), 1);
    }

    #[test]
    fn a_late_call_counts_once_in_the_bucket_it_lands_in() {
        let w = window(2);
        w.record(0, Outcome::Success, false, None);
        w.record(2 * MS, Outcome::Success, false, None); // takes slot 0 over
        w.record(0, Outcome::Failure, false, None); // read the clock at 0, landed late
        let counts = w.counts(2 * MS);
        assert_eq!(
            (count(counts, Outcome::Success), count(counts, Outcome::Failure)),
            (1, 1)
        );
        let totals = w.totals().0;
        assert_eq!(
            (count(totals, Outcome::Success), count(totals, Outcome::Failure)),
            (2, 1)
        );
    }

    /// Threads released together record at the times of a clock that a
    /// driver moves forward half a bucket at a time; returns the epoch of
    /// each call.
    fn concurrent_calls(w: &Arc<TimeWindow>, steps: usize) -> (Vec<(u64, Outcome)>, u64) {
        const THREADS: usize = 4;
        const CALLS: usize = 2_000;
        let clock = Arc::new(Clock::new(0));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (w, clock, start) = (w.clone(), clock.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..CALLS)
                        .map(|i| {
                            let now = clock.load(Relaxed);
                            let outcome = if (i + t) % 3 == 0 {
                                Outcome::Failure
                            } else {
                                Outcome::Success
                            };
                            w.record(now, outcome, false, None);
                            (now / MS, outcome)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        start.wait();
        for _ in 0..steps {
            clock.fetch_add(MS / 2, Relaxed);
            std::thread::yield_now();
        }
        let calls = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (calls, clock.load(Relaxed))
    }

    fn calls_of(calls: &[(u64, Outcome)], outcome: Outcome, upto: u64) -> u64 {
        calls
            .iter()
            .filter(|(epoch, o)| *o == outcome && *epoch <= upto)
            .count() as u64
    }

    /// Buckets start under concurrent calls, many of them, no slot reused:
    /// read at the end of each epoch, the window holds exactly the calls
    /// made up to it.
    #[test]
    fn buckets_started_under_concurrent_calls_count_exactly() {
        for round in 0..20 {
            let w = Arc::new(window(1000));
            let (calls, now) = concurrent_calls(&w, 60);
            for upto in 0..=now / MS {
                let counts = w.counts(upto * MS + MS - 1);
                for outcome in [Outcome::Success, Outcome::Failure] {
                    assert_eq!(
                        count(counts, outcome),
                        calls_of(&calls, outcome, upto),
                        "{outcome:?} up to epoch {upto}, round {round}"
                    );
                }
            }
        }
    }

    /// Slots taken over by newer buckets under concurrent calls, many laps
    /// of small rings: every call is in the totals once, and once the span
    /// has passed nothing of the laps is left in the window.
    #[test]
    fn rotations_under_concurrent_calls_lose_and_leave_nothing() {
        for round in 0..40 {
            let buckets = [1u32, 2, 3, 10][round % 4];
            let w = Arc::new(window(buckets));
            let (calls, now) = concurrent_calls(&w, 50);
            let totals = w.totals().0;
            for outcome in [Outcome::Success, Outcome::Failure] {
                assert_eq!(
                    count(totals, outcome),
                    calls_of(&calls, outcome, u64::MAX),
                    "{outcome:?} in the totals, round {round}"
                );
            }
            let later = now + u64::from(buckets) * MS;
            w.record(later, Outcome::Timeout, false, None);
            let counts = w.counts(later);
            assert_eq!(
                (
                    count(counts, Outcome::Success),
                    count(counts, Outcome::Failure),
                    count(counts, Outcome::Timeout)
                ),
                (0, 0, 1),
                "round {round}"
            );
        }
    }

    #[test]
    fn reset_forgets_the_current_bucket_but_keeps_the_totals() {
        let w = window(10);
        w.record(MS, Outcome::Failure, false, None);
        w.record(2 * MS, Outcome::Failure, false, None);
        w.reset(2 * MS + 5);
        assert_eq!(w.counts(2 * MS + 6), [0; SLOTS]);
        w.record(2 * MS + 7, Outcome::Success, false, None);
        let counts = w.counts(2 * MS + 8);
        assert_eq!(
            (count(counts, Outcome::Success), count(counts, Outcome::Failure)),
            (1, 0)
        );
        assert_eq!(count(w.totals().0, Outcome::Failure), 2);
    }

    #[test]
    fn a_full_bucket_counts_on_in_the_totals() {
        let w = window(1);
        let full = 1u64 << (MS.ilog2() - 1);
        for _ in 0..full + 10 {
            w.record(0, Outcome::Success, false, None);
        }
        assert_eq!(count(w.counts(0), Outcome::Success), full);
        assert_eq!(count(w.totals().0, Outcome::Success), full + 10);
        w.record(MS, Outcome::Failure, false, None);
        let counts = w.counts(MS);
        assert_eq!(
            (count(counts, Outcome::Success), count(counts, Outcome::Failure)),
            (0, 1),
            "the full counter's epoch bits are intact"
        );
    }
}

#[cfg(all(test, seawall_loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    const MS: u64 = 1_000_000;

    fn window(buckets: u32) -> TimeWindow {
        TimeWindow::new(Duration::from_millis(u64::from(buckets)), buckets, false)
    }

    /// Two calls start the same fresh bucket together: both are counted
    /// (the race that lost calls at a bucket's start).
    #[test]
    fn two_calls_starting_a_bucket_are_both_counted() {
        loom::model(|| {
            let w = Arc::new(window(2));
            let other = {
                let w = w.clone();
                thread::spawn(move || w.record(5 * MS, Outcome::Success, false, None))
            };
            w.record(5 * MS, Outcome::Success, false, None);
            other.join().unwrap();
            assert_eq!(w.counts(5 * MS)[Outcome::Success as usize], 2);
            assert_eq!(w.totals().0[Outcome::Success as usize], 2);
        });
    }

    /// A reader while a bucket starts never sees more calls than were made.
    #[test]
    fn a_read_while_a_bucket_starts() {
        loom::model(|| {
            let w = Arc::new(window(2));
            let other = {
                let w = w.clone();
                thread::spawn(move || w.record(5 * MS, Outcome::Success, false, None))
            };
            assert!(w.counts(5 * MS)[Outcome::Success as usize] <= 1);
            other.join().unwrap();
            assert_eq!(w.counts(5 * MS)[Outcome::Success as usize], 1);
        });
    }

    /// A call of the current bucket and a late one of the bucket whose slot
    /// it takes over race: the late call is counted once, in whichever
    /// bucket it lands (the totals keep it either way).
    #[test]
    fn a_slot_taken_over_under_a_late_call_loses_nothing() {
        loom::model(|| {
            let w = Arc::new(window(1));
            w.record(0, Outcome::Failure, false, None);
            let late = {
                let w = w.clone();
                thread::spawn(move || w.record(0, Outcome::Failure, false, None))
            };
            w.record(MS, Outcome::Success, false, None);
            late.join().unwrap();
            let counts = w.counts(MS);
            assert_eq!(counts[Outcome::Success as usize], 1);
            assert!(counts[Outcome::Failure as usize] <= 1);
            let totals = w.totals().0;
            assert_eq!(totals[Outcome::Success as usize], 1);
            assert_eq!(totals[Outcome::Failure as usize], 2);
        });
    }

    /// A reset racing a call: the call is forgotten with the rest or counted
    /// after, never half; the totals keep it either way.
    #[test]
    fn a_reset_racing_a_call() {
        loom::model(|| {
            let w = Arc::new(window(2));
            w.record(0, Outcome::Failure, false, None);
            let call = {
                let w = w.clone();
                thread::spawn(move || w.record(0, Outcome::Failure, false, None))
            };
            w.reset(0);
            call.join().unwrap();
            assert!(w.counts(0)[Outcome::Failure as usize] <= 1);
            assert_eq!(w.totals().0[Outcome::Failure as usize], 2);
        });
    }
}
