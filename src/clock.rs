//! The clock seawall reads: cheap on the hot path, and driven by
//! `tokio::time::pause()` in tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
    /// `origin` is the coarse time (see [`coarse_now`]) at creation.
    Coarse {
        origin: u64,
    },
    Tokio {
        origin: tokio::time::Instant,
    },
}

/// How often the coarse clock's background thread updates the time.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(1);

/// The process's coarse time: nanoseconds since [`epoch`], stored by
/// seawall's own thread. Not quanta's shared "recent" time: another library
/// may own that, with its own interval, and stopping it freezes the value
/// for good (a frozen clock would keep every open breaker open).
static COARSE_NANOS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> quanta::Instant {
    static EPOCH: OnceLock<quanta::Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| tsc().now())
}

/// The TSC (or the OS's monotonic clock where it has none), calibrated once
/// for the process. Read through a clock of our own rather than
/// `quanta::Instant::now()`, which looks for a mocked clock in a thread-local
/// first and scales every reading.
#[inline]
fn tsc() -> &'static quanta::Clock {
    static TSC: OnceLock<quanta::Clock> = OnceLock::new();
    TSC.get_or_init(quanta::Clock::new)
}

/// Nanoseconds since [`epoch`], by the TSC.
fn precise_now() -> u64 {
    nanos(tsc().now().saturating_duration_since(epoch()))
}

/// Starts the thread that keeps [`COARSE_NANOS`] fresh, once. If it cannot
/// start, the coarse time stays zero and readers use the precise time.
fn start_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        COARSE_NANOS.store(precise_now().max(1), Relaxed);
        let _ = std::thread::Builder::new()
            .name("seawall-clock".into())
            .spawn(|| loop {
                COARSE_NANOS.store(precise_now().max(1), Relaxed);
                std::thread::sleep(UPKEEP_INTERVAL);
            });
    });
}

/// The coarse time, or the precise one if no thread keeps it.
#[inline]
fn coarse_now() -> u64 {
    match COARSE_NANOS.load(Relaxed) {
        0 => precise_now(),
        now => now,
    }
}

impl Clock {
    /// The coarse, cheap clock (the default outside paused tests).
    ///
    /// The first call starts one process-wide background thread
    /// (`seawall-clock`) that refreshes the time every millisecond; if it
    /// cannot start, reads fall back to the precise TSC clock.
    pub fn coarse() -> Clock {
        start_upkeep();
        Clock {
            source: Source::Coarse {
                origin: coarse_now(),
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
    /// Always inlined: the policy's future left it out of line, a call's
    /// worth of instructions for a load and a subtraction.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        match &self.source {
            Source::Coarse { origin } => coarse_now().saturating_sub(*origin),
            Source::Tokio { origin } => {
                nanos(tokio::time::Instant::now().saturating_duration_since(*origin))
            }
        }
    }

    /// A precise reading to time a call from, for [`nanos_since`]: the raw
    /// TSC with the coarse clock (scaled to nanoseconds only once, for the
    /// difference), tokio's time with the tokio one.
    ///
    /// [`nanos_since`]: Clock::nanos_since
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        match &self.source {
            Source::Coarse { .. } => tsc().raw(),
            Source::Tokio { origin } => {
                nanos(tokio::time::Instant::now().saturating_duration_since(*origin))
            }
        }
    }

    /// Nanoseconds since `start` (a reading of [`start`](Clock::start)), by
    /// the precise clock; zero if the clock went backwards.
    #[inline]
    pub(crate) fn nanos_since(&self, start: u64) -> u64 {
        match &self.source {
            Source::Coarse { .. } => tsc().delta_as_nanos(start, tsc().raw()),
            Source::Tokio { .. } => self.now().saturating_sub(start),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_moves_on_its_own() {
        let clock = Clock::coarse();
        let start = clock.now();
        let guard = std::time::Instant::now();
        while clock.now() == start {
            assert!(
                guard.elapsed() < Duration::from_secs(10),
                "the coarse clock is frozen"
            );
            std::thread::yield_now();
        }
        let Source::Coarse { origin } = clock.source else {
            panic!("Clock::coarse made another clock");
        };
        assert!(
            precise_now().saturating_sub(origin) >= clock.now(),
            "the coarse clock never runs ahead"
        );
    }
}
