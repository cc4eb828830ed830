//! A lock-free log-linear latency histogram, read out through hdrhistogram.
//!
//! Recording is one relaxed `fetch_add` on a fixed array: 8 sub-buckets per
//! power of two of microseconds, so a reported percentile is within 6.25% of
//! the true value, from 0 µs to about 19 hours (longer calls are clamped).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hdrhistogram::Histogram;

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
    let bucket = bucket as u64;
    if bucket < SUB {
        return bucket;
    }
    let shift = bucket / SUB - 1;
    let low = (bucket % SUB + SUB) << shift;
    low + ((1 << shift) - 1) / 2
}

/// A fresh histogram of zeroed counters.
pub(crate) fn new_counters() -> Box<[AtomicU64]> {
    (0..BUCKETS).map(|_| AtomicU64::new(0)).collect()
}

/// Loads every counter.
pub(crate) fn load(counters: &[AtomicU64]) -> Vec<u64> {
    counters.iter().map(|c| c.load(Relaxed)).collect()
}

/// Latency percentiles over a window.
///
/// Values are accurate to within 6.25% (log-linear buckets of microseconds).
/// The full [`Histogram`] is there for any other quantile.
#[derive(Clone, Debug)]
pub struct LatencySnapshot {
    histogram: Histogram<u64>,
}

impl LatencySnapshot {
    pub(crate) fn from_counts(counts: &[u64]) -> LatencySnapshot {
        // Two significant figures are finer than the buckets they come from.
        let mut histogram = Histogram::new(2).expect("2 significant figures is a valid precision");
        for (bucket, &n) in counts.iter().enumerate() {
            if n > 0 {
                // Auto-resizing histograms accept any u64.
                let _ = histogram.record_n(midpoint_of(bucket), n);
            }
        }
        LatencySnapshot { histogram }
    }

    /// How many latencies the window holds.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at quantile `q` (0.0 to 1.0); zero for an empty window.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.histogram.value_at_quantile(q))
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

    /// The highest latency (to the bucket's precision).
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.histogram.max())
    }

    /// The histogram itself, values in microseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
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
        for micros in [9u64, 100, 1_234, 98_765, 5_000_000] {
            let mid = midpoint_of(bucket_of(micros * 1_000)) as f64;
            assert!(
                (mid - micros as f64).abs() / micros as f64 <= 0.0625,
                "{micros}"
            );
        }
    }
}
