//! Reproducible draws: a counter hashed with a seed, for the faults a
//! [`Faults`](crate::fault::Faults) injects and the jitter of retries.

/// A 64-bit mix (Steele, Lea and Flood's SplitMix64 finaliser): consecutive
/// counters map to unrelated numbers.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
