//! How long to wait before each retry.

use std::time::Duration;

use crate::error::ConfigError;

/// How a retry's delay is spread, so that callers who failed together do
/// not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the exponential delay: `base × 2^(retry - 1)`, capped.
    None,
    /// Anywhere from zero to the exponential delay ("full jitter" in AWS's
    /// study of backoff): the fewest calls in a storm, the default.
    #[default]
    Full,
    /// From `base` to three times the previous delay, capped ("decorrelated
    /// jitter"): grows like the exponential, and never waits less than
    /// `base`.
    Decorrelated,
}

/// Exponential backoff with a cap and jitter.
///
/// ```
/// use std::time::Duration;
/// use seawall::retry::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(1))
///     .jitter(Jitter::None);
/// let delays: Vec<_> = (1..=5).map(|retry| backoff.delay(retry, Duration::ZERO, 0)).collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000].map(Duration::from_millis));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max_delay: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// Doubling from `base`, up to 30 s, with [full](Jitter::Full) jitter.
    pub fn exponential(base: Duration) -> Backoff {
        Backoff {
            base,
            max_delay: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }

    /// No delay between attempts: for hedging-like retries of calls that
    /// fail fast.
    pub fn none() -> Backoff {
        Backoff {
            base: Duration::ZERO,
            max_delay: Duration::ZERO,
            jitter: Jitter::None,
        }
    }

    /// The longest delay. Default 30 s.
    pub fn max_delay(mut self, max_delay: Duration) -> Backoff {
        self.max_delay = max_delay;
        self
    }

    /// How delays are spread. Default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// The delay before retry number `retry` (1 for the first), given the
    /// previous delay (for [decorrelated](Jitter::Decorrelated) jitter) and
    /// a uniformly drawn `draw`.
    pub fn delay(&self, retry: u32, previous: Duration, draw: u64) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(31))
            .min(self.max_delay);
        match self.jitter {
            Jitter::None => exponential,
            Jitter::Full => fraction(exponential, draw),
            Jitter::Decorrelated => {
                let low = self.base.min(self.max_delay);
                let high = previous.max(low).saturating_mul(3).min(self.max_delay);
                low + fraction(high.saturating_sub(low), draw)
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.base > self.max_delay {
            return Err(ConfigError::new(
                "backoff",
                self,
                "its base must not be longer than its max_delay",
            ));
        }
        Ok(())
    }
}

/// `draw / 2^64` of `of`, to the nanosecond.
fn fraction(of: Duration, draw: u64) -> Duration {
    let nanos = (of.as_nanos() * u128::from(draw)) >> 64;
    Duration::from_nanos(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_jitter_stays_under_the_exponential_delay() {
        let backoff = Backoff::exponential(100 * MS).max_delay(1000 * MS);
        assert_eq!(backoff.delay(3, Duration::ZERO, 0), Duration::ZERO);
        assert_eq!(
            backoff.delay(3, Duration::ZERO, u64::MAX / 2),
            200 * MS - Duration::from_nanos(1)
        );
        assert!(backoff.delay(30, Duration::ZERO, u64::MAX) < 1000 * MS);
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_base_within_the_cap() {
        let backoff = Backoff::exponential(100 * MS)
            .max_delay(1000 * MS)
            .jitter(Jitter::Decorrelated);
        assert_eq!(backoff.delay(1, Duration::ZERO, 0), 100 * MS);
        let high = backoff.delay(2, 200 * MS, u64::MAX);
        assert!(high > 590 * MS && high <= 600 * MS, "{high:?}");
        assert!(backoff.delay(9, 900 * MS, u64::MAX) <= 1000 * MS);
    }

    #[test]
    fn a_base_past_the_cap_is_refused() {
        let error = Backoff::exponential(2000 * MS)
            .max_delay(MS)
            .validate()
            .unwrap_err();
        assert_eq!(error.field(), "backoff");
    }
}
