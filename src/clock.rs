//! The clock seawall reads: cheap on the hot path, and driven by
//! `tokio::time::pause()` in tests.

use std::sync::OnceLock;
use std::time::Duration;

/// Where seawall reads the time.
///
/// Reading a precise clock (`Instant::now()`, ~24 ns here) would cost more
/// than everything else a closed breaker does, so the default reads a coarse
/// clock kept up to date by a background thread (~2 ns a read, at most about
/// a millisecond stale). That clock cannot follow tokio's paused time, so
/// [`Clock::tokio`] reads `tokio::time::Instant` instead, which follows
/// `tokio::time::pause()` and `advance` exactly.
///
/// [`Clock::default`] picks for you: when it is created inside a tokio runtime
/// whose time is paused (a `#[tokio::test(start_paused = true)]`, say), it is
/// [`Clock::tokio`]; otherwise [`Clock::coarse`]. Pass one explicitly when a
/// breaker is built outside the test's runtime.
///
/// Latencies (for slow-call rules and percentiles) are always measured with
/// a precise clock: the TSC with the coarse clock, tokio's with the tokio one.
///
/// ```
/// use seawall::Clock;
/// use seawall::circuit_breaker::CircuitBreaker;
///
/// // In a test with paused time, make the breaker follow it explicitly:
/// let breaker = CircuitBreaker::builder().clock(Clock::tokio()).build().unwrap();
/// # drop(breaker);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    Coarse { origin: quanta::Instant },
    Tokio { origin: tokio::time::Instant },
}

/// How often the coarse clock's background thread updates the time.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(1);

impl Clock {
    /// The coarse, cheap clock (the default outside paused tests).
    ///
    /// The first call starts one process-wide background thread
    /// (`quanta-upkeep`) that refreshes the time every millisecond; if it
    /// cannot start, reads fall back to the precise TSC clock.
    pub fn coarse() -> Clock {
        static UPKEEP: OnceLock<Option<quanta::Handle>> = OnceLock::new();
        UPKEEP.get_or_init(|| quanta::Upkeep::new(UPKEEP_INTERVAL).start().ok());
        Clock {
            source: Source::Coarse {
                origin: quanta::Instant::now(),
            },
        }
    }

    /// `tokio::time::Instant`: follows `tokio::time::pause()` and `advance`.
    pub fn tokio() -> Clock {
        Clock {
            source: Source::Tokio {
                origin: tokio::time::Instant::now(),
            },
        }
    }

    /// Whether this clock follows tokio's time.
    pub fn is_tokio(&self) -> bool {
        matches!(self.source, Source::Tokio { .. })
    }

    /// Nanoseconds since this clock was created, from the cheap clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.source {
            Source::Coarse { origin } => {
                nanos(quanta::Instant::recent().saturating_duration_since(*origin))
            }
            Source::Tokio { origin } => {
                nanos(tokio::time::Instant::now().saturating_duration_since(*origin))
            }
        }
    }

    /// Nanoseconds since this clock was created, from the precise clock.
    #[inline]
    pub(crate) fn precise(&self) -> u64 {
        match &self.source {
            Source::Coarse { origin } => {
                nanos(quanta::Instant::now().saturating_duration_since(*origin))
            }
            Source::Tokio { origin } => {
                nanos(tokio::time::Instant::now().saturating_duration_since(*origin))
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        if tokio_time_is_paused() {
            Clock::tokio()
        } else {
            Clock::coarse()
        }
    }
}

/// A paused tokio clock does not move between two reads; a running one always
/// does (it has nanosecond resolution and a read takes longer than that).
fn tokio_time_is_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    tokio::time::Instant::now() == tokio::time::Instant::now()
}

#[inline]
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
