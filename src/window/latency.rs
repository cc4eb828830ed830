//! A lock-free log-linear latency histogram.
//!
//! Recording is one relaxed `fetch_add` on a fixed array: 8 sub-buckets per
//! power of two of microseconds, so a reported percentile is within 6.25% of
//! the true value, from 0 µs to about 19 hours (longer calls are clamped).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::sync::AtomicU64;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// The highest power of two of microseconds kept apart from the others.
const MAX_MSB: u32 = 35;
/// How many counters a histogram has.
pub(crate) const BUCKETS: usize = ((MAX_MSB - SUB_BITS + 2) as u64 * SUB) as usize;

/// The counter a latency of `nanos` falls into.
#[inline]
pub(crate) fn bucket_of(nanos: u64) -> usize {
    let micros = (nanos / 1_000).min((1 << (MAX_MSB + 1)) - 1);
    if micros < SUB {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros();
    let shift = msb - SUB_BITS;
    ((u64::from(shift) + 1) * SUB + ((micros >> shift) - SUB)) as usize
}

/// The middle of a counter's range, in microseconds.
fn midpoint_of(bucket: usize) -> u64 {
    let low = low_of(bucket);
    low + (low_of(bucket + 1) - low - 1) / 2
}

/// A fresh histogram of zeroed counters.
pub(crate) fn new_counters() -> Box<[AtomicU64]> {
    (0..BUCKETS).map(|_| AtomicU64::new(0)).collect()
}

/// Loads every counter.
pub(crate) fn load(counters: &[AtomicU64]) -> Vec<u64> {
    counters.iter().map(|c| c.load(Relaxed)).collect()
}

/// The lower bound of a counter's range, in microseconds.
fn low_of(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB {
        return bucket;
    }
    let shift = bucket / SUB - 1;
    (bucket % SUB + SUB) << shift
}

/// Latency percentiles over a window.
///
/// Values are accurate to within 6.25% (log-linear buckets of
/// microseconds); [`buckets`](Self::buckets) gives the counts themselves,
/// for a histogram of your own (a metrics exporter's, say).
#[derive(Clone)]
pub struct LatencySnapshot {
    counts: Vec<u64>,
    total: u64,
}

/// Short: the count and a few percentiles, not every bucket.
impl std::fmt::Debug for LatencySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencySnapshot")
            .field("count", &self.total)
            .field("p50", &self.p50())
            .field("p99", &self.p99())
            .field("max", &self.max())
            .finish()
    }
}

impl LatencySnapshot {
    pub(crate) fn from_counts(counts: Vec<u64>) -> LatencySnapshot {
        let total = counts.iter().sum();
        LatencySnapshot { counts, total }
    }

    /// How many latencies the window holds.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency at quantile `q` (0.0 to 1.0, clamped): the smallest
    /// latency at least that share of the calls took no longer than. Zero
    /// for an empty window.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the call at quantile q, counting from 1.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(midpoint_of(bucket));
            }
        }
        self.max()
    }

    /// The median latency.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// The 90th percentile.
    pub fn p90(&self) -> Duration {
        self.quantile(0.90)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The 99.9th percentile.
    pub fn p999(&self) -> Duration {
        self.quantile(0.999)
    }

    /// The mean latency (each call taken at its bucket's middle).
    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let sum: u128 = self
            .counts
            .iter()
            .enumerate()
            .map(|(bucket, &n)| u128::from(midpoint_of(bucket)) * u128::from(n))
            .sum();
        Duration::from_micros((sum / u128::from(self.total)) as u64)
    }

    /// The highest latency (to the bucket's precision).
    pub fn max(&self) -> Duration {
        let top = self.counts.iter().rposition(|&n| n > 0);
        Duration::from_micros(top.map_or(0, midpoint_of))
    }

    /// The non-empty buckets, fastest first: each bucket's range of
    /// latencies (from, to: `to` excluded) and how many calls fell in it.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(bucket, &n)| {
                let from = Duration::from_micros(low_of(bucket));
                let to = Duration::from_micros(low_of(bucket + 1));
                (from, to, n)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let mut last = 0;
        for micros in 0..100_000u64 {
            let b = bucket_of(micros * 1_000);
            assert!(b == last || b == last + 1, "gap at {micros} µs");
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn midpoints_fall_in_their_own_bucket_within_precision() {
        for bucket in 0..BUCKETS {
            let mid = midpoint_of(bucket);
            assert_eq!(bucket_of(mid * 1_000), bucket);
        }
        for bucket in 0..BUCKETS - 1 {
            assert!(low_of(bucket) <= midpoint_of(bucket));
            assert!(midpoint_of(bucket) < low_of(bucket + 1));
            assert_eq!(bucket_of(low_of(bucket) * 1_000), bucket);
        }
        for micros in [9u64, 100, 1_234, 98_765, 5_000_000] {
            let mid = midpoint_of(bucket_of(micros * 1_000)) as f64;
            assert!(
                (mid - micros as f64).abs() / micros as f64 <= 0.0625,
                "{micros}"
            );
        }
    }

    #[test]
    fn quantiles_walk_the_counts() {
        let empty = LatencySnapshot::from_counts(vec![0; BUCKETS]);
        assert_eq!(
            (empty.count(), empty.p99(), empty.max()),
            (0, Duration::ZERO, Duration::ZERO)
        );

        // 90 calls of 1 ms, 9 of 10 ms, 1 of 100 ms.
        let mut counts = vec![0; BUCKETS];
        counts[bucket_of(1_000_000)] += 90;
        counts[bucket_of(10_000_000)] += 9;
        counts[bucket_of(100_000_000)] += 1;
        let snapshot = LatencySnapshot::from_counts(counts);
        let near = |d: Duration, ms: u64| {
            let ms = ms as f64;
            (d.as_secs_f64() * 1e3 - ms).abs() / ms <= 0.0625
        };
        assert_eq!(snapshot.count(), 100);
        assert!(near(snapshot.p50(), 1) && near(snapshot.p90(), 1));
        assert!(near(snapshot.quantile(0.91), 10) && near(snapshot.p99(), 10));
        assert!(near(snapshot.p999(), 100) && near(snapshot.max(), 100));
        assert!(near(snapshot.quantile(f64::NAN), 1) && near(snapshot.quantile(7.0), 100));
        let buckets: Vec<_> = snapshot.buckets().map(|(_, _, n)| n).collect();
        assert_eq!(buckets, [90, 9, 1]);
        for (from, to, _) in snapshot.buckets() {
            assert!(from < to);
        }
    }
}
