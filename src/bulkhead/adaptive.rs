//! Limits that find themselves: a bulkhead whose limit follows what the
//! dependency can take, from the latency and the drops seawall measures.

use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::Duration;

use crate::classify::Verdict;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::sync::{AtomicU64, AtomicUsize, Mutex};

/// How an adaptive bulkhead moves its limit. Give it to
/// [`BulkheadBuilder::adaptive`](super::BulkheadBuilder::adaptive); the
/// bulkhead's `max_concurrent` is where the limit starts.
///
/// Calls are sampled as they end: their latency, and whether they were
/// dropped (a timeout, or a refusal by what is below: the signs of a
/// dependency past its capacity). Every [`window`](Self::window) with at
/// least [`min_samples`](Self::min_samples) calls, one caller moves the
/// limit (a call never waits for it), within
/// [`limits`](Self::limits):
///
/// - [`aimd`](Self::aimd) (additive increase, multiplicative decrease, as
///   TCP and Netflix's `AIMDLimit`): any drop in the window multiplies the
///   limit by `backoff`; a window without drops, in which calls filled at
///   least 90% of the limit, adds one. It needs drops to find the limit:
///   it settles where the dependency starts refusing or timing out (put a
///   timeout under it), just below.
/// - [`vegas`](Self::vegas) (TCP Vegas, after Netflix's `VegasLimit`):
///   from latency alone. The lowest window mean seen is the dependency's
///   latency without load; the calls queued in it are estimated as
///   `limit × (1 − no_load ÷ latency)`. With `l = max(1, log10 limit)`: at
///   most `l` queued, the limit grows by `6 l`; under `3 l`, by `l`; over
///   `6 l`, it shrinks by `l`; a window with drops multiplies it by 0.9. So
///   it settles a few calls above what the dependency serves at once,
///   before latency climbs to a timeout. The no-load latency is the lowest
///   window mean of the last 30 to 60 s, so a dependency whose baseline
///   changes is followed within a minute. A window whose calls used less
///   than half the limit leaves it as it is.
///
/// In both, a window whose calls used less than half the limit does not
/// raise it (the limit was not what held them back), and the new limit
/// moves the old by [`smoothing`](Self::smoothing).
///
/// Vegas learns the latency without load from the windows it sees: started
/// far above the dependency's capacity under full load, it never sees one,
/// and comes down only on drops. Start it low (the limit grows quickly
/// while latency stays flat), and keep a timeout under it.
///
/// ```
/// use std::time::Duration;
/// use seawall::bulkhead::{AdaptiveLimit, Bulkhead};
///
/// let bulkhead = Bulkhead::builder()
///     .max_concurrent(20) // where the limit starts
///     .adaptive(AdaptiveLimit::vegas().limits(5, 200).window(Duration::from_millis(500)))
///     .build()?;
/// assert_eq!(bulkhead.figures().max_concurrent, 20);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveLimit {
    algorithm: Algorithm,
    min_limit: usize,
    max_limit: usize,
    window: Duration,
    min_samples: u64,
    smoothing: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Algorithm {
    Aimd { backoff: f64 },
    Vegas,
}

impl AdaptiveLimit {
    /// Additive increase, multiplicative decrease: `backoff` (at least 0.5,
    /// below 1; Netflix's default 0.9) on a window with drops.
    pub fn aimd(backoff: f64) -> AdaptiveLimit {
        AdaptiveLimit::with(Algorithm::Aimd { backoff })
    }

    /// From latency: TCP Vegas's estimate of the calls queued in the
    /// dependency.
    pub fn vegas() -> AdaptiveLimit {
        AdaptiveLimit::with(Algorithm::Vegas)
    }

    fn with(algorithm: Algorithm) -> AdaptiveLimit {
        AdaptiveLimit {
            algorithm,
            min_limit: 1,
            max_limit: 1000,
            window: Duration::from_millis(100),
            min_samples: 10,
            smoothing: 1.0,
        }
    }

    /// The lowest and highest the limit may go. Default 1 and 1000.
    pub fn limits(mut self, min_limit: usize, max_limit: usize) -> AdaptiveLimit {
        self.min_limit = min_limit;
        self.max_limit = max_limit;
        self
    }

    /// How often the limit may move. Default 100 ms.
    pub fn window(mut self, window: Duration) -> AdaptiveLimit {
        self.window = window;
        self
    }

    /// The calls a window needs before the limit moves. Default 10.
    pub fn min_samples(mut self, min_samples: u64) -> AdaptiveLimit {
        self.min_samples = min_samples;
        self
    }

    /// How far each window's new limit moves the limit (above 0, at most
    /// 1, which takes it whole). Default 1.
    pub fn smoothing(mut self, smoothing: f64) -> AdaptiveLimit {
        self.smoothing = smoothing;
        self
    }

    pub(crate) fn validate(&self, initial: usize) -> Result<(), ConfigError> {
        match self.algorithm {
            Algorithm::Aimd { backoff } if !(0.5..1.0).contains(&backoff) => {
                return Err(ConfigError::new(
                    "adaptive",
                    backoff,
                    "an AIMD backoff must be at least 0.5 and below 1",
                ));
            }
            _ => {}
        }
        if self.min_limit == 0
            || self.min_limit > self.max_limit
            || self.max_limit > super::limiter::MAX_LIMIT
        {
            return Err(ConfigError::new(
                "adaptive",
                (self.min_limit, self.max_limit),
                "limits must be 1 <= min <= max <= 1048575",
            ));
        }
        if !(self.min_limit..=self.max_limit).contains(&initial) {
            return Err(ConfigError::new(
                "max_concurrent",
                initial,
                "an adaptive bulkhead's starting limit must be within its limits",
            ));
        }
        if self.window.is_zero() || self.window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "adaptive",
                self.window,
                "the window must be longer than zero, and at most an hour",
            ));
        }
        if !(1..=1_000_000).contains(&self.min_samples) {
            return Err(ConfigError::new(
                "adaptive",
                self.min_samples,
                "min_samples must be from 1 to a million",
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new(
                "adaptive",
                self.smoothing,
                "smoothing must be above 0 and at most 1",
            ));
        }
        Ok(())
    }
}

/// What an adaptive bulkhead measured and decided, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdaptiveFigures {
    /// Windows that moved (or kept) the limit.
    pub windows: u64,
    /// Windows that raised the limit.
    pub increases: u64,
    /// Windows that lowered it.
    pub decreases: u64,
    /// Calls sampled: answered (with their latency) or dropped.
    pub samples: u64,
    /// Calls sampled as dropped (timeouts, refusals below).
    pub drops: u64,
    /// The last window's mean latency.
    pub short_latency: Duration,
    /// The latency without load Vegas compares it with (zero for AIMD).
    pub no_load_latency: Duration,
}

/// What a call's end tells an adaptive limit, by its verdict: a drop (a
/// timeout, a refusal below: the dependency is past its capacity), a
/// latency (a success or a failure, answered), or nothing (the caller's own
/// deadline, an ignored outcome).
pub(crate) fn dropped(verdict: Verdict) -> Option<bool> {
    match verdict {
        Verdict::Timeout | Verdict::Rejected => Some(true),
        Verdict::Success | Verdict::Failure => Some(false),
        _ => None,
    }
}

/// The limit's controller, kept by the bulkhead's limiter.
pub(crate) struct Controller {
    config: AdaptiveLimit,
    clock: Clock,
    /// This window's samples: answered calls in the low half, drops in the
    /// high half, in one word so that a window sees each whole.
    samples: AtomicU64,
    /// The latencies of this window's answered calls. Added before their
    /// count and taken after it: a sample caught between two windows adds
    /// its latency to the earlier, never its count alone (a mean skewed
    /// low would pass for the latency without load).
    latency_sum: AtomicU64,
    peak: AtomicUsize,
    window_start: AtomicU64,
    /// The algorithm's own state: taken (without waiting) by the caller
    /// that closes a window.
    state: Mutex<State>,
    windows: AtomicU64,
    increases: AtomicU64,
    decreases: AtomicU64,
    total_samples: AtomicU64,
    total_drops: AtomicU64,
    short_nanos: AtomicU64,
    no_load_nanos: AtomicU64,
}

const DROP: u64 = 1 << 32;
const ANSWERED: u64 = DROP - 1;

struct State {
    /// The limit with its fraction, as smoothing leaves it.
    limit: f64,
    /// The lowest window mean latency of this stretch of windows, and of
    /// the one before: Vegas's latency without load is the lower of the
    /// two, so an old minimum is forgotten after two stretches.
    lowest: f64,
    lowest_before: f64,
    stretch_started: u64,
}

/// A stretch of Vegas's no-load latency.
const STRETCH_NANOS: u64 = 30_000_000_000;
/// Samples between two checks that the coarse clock still moves.
const CHECK_CLOCK_EVERY: u64 = 64;

impl Controller {
    pub(crate) fn new(config: AdaptiveLimit, initial: usize) -> Controller {
        Controller {
            config,
            clock: Clock::default(),
            samples: AtomicU64::new(0),
            latency_sum: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            window_start: AtomicU64::new(0),
            state: Mutex::new(State {
                limit: initial as f64,
                lowest: f64::INFINITY,
                lowest_before: f64::INFINITY,
                stretch_started: 0,
            }),
            windows: AtomicU64::new(0),
            increases: AtomicU64::new(0),
            decreases: AtomicU64::new(0),
            total_samples: AtomicU64::new(0),
            total_drops: AtomicU64::new(0),
            short_nanos: AtomicU64::new(0),
            no_load_nanos: AtomicU64::new(0),
        }
    }

    /// When a call starts, by the precise clock (never zero: zero says a
    /// call is not timed).
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        self.clock.start().max(1)
    }

    /// A call that started at `started` ended, `dropped` or not, with
    /// `in_flight` calls in flight; returns the limit to move from `limit`
    /// to when this call closed a window that moved it.
    pub(crate) fn sample(
        &self,
        started: u64,
        dropped: bool,
        in_flight: usize,
        limit: usize,
    ) -> Option<usize> {
        let added = if dropped {
            DROP
        } else {
            self.latency_sum
                .fetch_add(self.clock.nanos_since(started), Release);
            1
        };
        let samples = self.samples.fetch_add(added, AcqRel) + added;
        // Read first: the peak is reached early in a window, and a write
        // on every call would be one more line every core's calls write.
        if in_flight > self.peak.load(Relaxed) {
            self.peak.fetch_max(in_flight, Relaxed);
        }
        if self
            .total_samples
            .fetch_add(1, Relaxed)
            .is_multiple_of(CHECK_CLOCK_EVERY)
        {
            self.clock.check_moving();
        }
        let now = self.clock.now();
        let start = self.window_start.load(Acquire);
        let window = u64::try_from(self.config.window.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(start) < window
            || (samples & ANSWERED) + (samples >> 32) < self.config.min_samples
            || self
                .window_start
                .compare_exchange(start, now, AcqRel, Relaxed)
                .is_err()
        {
            return None;
        }
        self.close_window(limit, now)
    }

    #[cold]
    fn close_window(&self, limit: usize, now: u64) -> Option<usize> {
        // Windows are closed one at a time, by whoever ended one: never
        // wait for the previous closer.
        let Ok(mut state) = self.state.try_lock() else {
            return None;
        };
        let samples = self.samples.swap(0, AcqRel);
        let sum = self.latency_sum.swap(0, Acquire);
        let (answered, drops) = (samples & ANSWERED, samples >> 32);
        let peak = self.peak.swap(0, Relaxed);
        // Set from outside (`set_max_concurrent`): start from there.
        if state.limit.round() as usize != limit {
            state.limit = limit as f64;
        }
        let short = (answered > 0).then(|| sum as f64 / answered as f64);
        let config = &self.config;
        let old = state.limit;
        let utilised = peak as f64 >= old / 2.0;
        let proposed = match config.algorithm {
            Algorithm::Aimd { backoff } => {
                if drops > 0 {
                    old * backoff
                } else if peak as f64 >= old * 0.9 {
                    old + 1.0
                } else {
                    old
                }
            }
            Algorithm::Vegas => {
                let step = old.log10().max(1.0);
                match short {
                    // Demand, not the dependency, held the calls back:
                    // their latency says nothing of the limit.
                    Some(_) if drops == 0 && !utilised => old,
                    Some(latency) if drops == 0 => {
                        if now.saturating_sub(state.stretch_started) > STRETCH_NANOS {
                            state.stretch_started = now;
                            state.lowest_before = state.lowest;
                            state.lowest = f64::INFINITY;
                        }
                        state.lowest = state.lowest.min(latency);
                        let no_load = state.lowest.min(state.lowest_before);
                        self.no_load_nanos.store(no_load as u64, Relaxed);
                        let queued = old * (1.0 - no_load / latency.max(1.0));
                        if queued <= step {
                            old + 6.0 * step
                        } else if queued < 3.0 * step {
                            old + step
                        } else if queued > 6.0 * step {
                            old - step
                        } else {
                            old
                        }
                    }
                    // Drops: the dependency is past its capacity already.
                    _ => old * 0.9,
                }
            }
        };
        let new = if proposed > old && !utilised {
            old
        } else {
            old * (1.0 - config.smoothing) + proposed * config.smoothing
        };
        let new = new.clamp(config.min_limit as f64, config.max_limit as f64);
        state.limit = new;
        self.windows.fetch_add(1, Relaxed);
        self.total_drops.fetch_add(drops, Relaxed);
        if let Some(short) = short {
            self.short_nanos.store(short as u64, Relaxed);
        }
        let rounded = (new.round() as usize).max(1);
        match rounded.cmp(&limit) {
            std::cmp::Ordering::Greater => self.increases.fetch_add(1, Relaxed),
            std::cmp::Ordering::Less => self.decreases.fetch_add(1, Relaxed),
            std::cmp::Ordering::Equal => return None,
        };
        tracing::debug!(
            target: "seawall::bulkhead",
            from = limit,
            to = rounded,
            drops,
            short_latency_us = short.map_or(0, |short| (short / 1e3) as u64),
            "adaptive limit moved"
        );
        Some(rounded)
    }

    pub(crate) fn figures(&self) -> AdaptiveFigures {
        AdaptiveFigures {
            windows: self.windows.load(Relaxed),
            increases: self.increases.load(Relaxed),
            decreases: self.decreases.load(Relaxed),
            samples: self.total_samples.load(Relaxed),
            drops: self.total_drops.load(Relaxed),
            short_latency: Duration::from_nanos(self.short_nanos.load(Relaxed)),
            no_load_latency: Duration::from_nanos(self.no_load_nanos.load(Relaxed)),
        }
    }
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .field("figures", &self.figures())
            .finish()
    }
}
