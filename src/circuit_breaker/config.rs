//! Building a breaker: every setting, its default, and its validation.

use std::sync::Arc;
use std::time::Duration;

use smol_str::SmolStr;

use super::CircuitBreaker;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::window::Window;

/// How long a breaker stays open before letting probes through.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum OpenDuration {
    /// Always the same (Hystrix's sleep window; 5 s by default).
    Fixed(Duration),
    /// Growing with each trip in a row (a probe that fails reopens for
    /// longer): `initial × multiplier^(trips − 1)`, capped at `max`, then
    /// shortened by a random fraction of up to `jitter` so that many
    /// breakers tripped together do not probe together. A close resets it.
    Exponential {
        /// The first trip's duration.
        initial: Duration,
        /// The growth per trip; at least 1.
        multiplier: f64,
        /// The cap.
        max: Duration,
        /// Up to which fraction (0 to 1) of the duration is taken off at
        /// random.
        jitter: f64,
    },
}

impl OpenDuration {
    /// Exponential backoff from `initial`, doubling, up to `max`, with 10% jitter.
    pub fn exponential(initial: Duration, max: Duration) -> OpenDuration {
        OpenDuration::Exponential {
            initial,
            multiplier: 2.0,
            max,
            jitter: 0.1,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            OpenDuration::Fixed(d) if d.is_zero() => Err(ConfigError::new(
                "open_duration",
                d,
                "must be longer than zero",
            )),
            OpenDuration::Fixed(_) => Ok(()),
            OpenDuration::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => {
                if initial.is_zero() {
                    return Err(ConfigError::new(
                        "open_duration.initial",
                        initial,
                        "must be longer than zero",
                    ));
                }
                if !(multiplier >= 1.0 && multiplier.is_finite()) {
                    return Err(ConfigError::new(
                        "open_duration.multiplier",
                        multiplier,
                        "must be a finite number >= 1",
                    ));
                }
                if max < initial {
                    return Err(ConfigError::new(
                        "open_duration.max",
                        max,
                        "must be at least the initial duration",
                    ));
                }
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(ConfigError::new(
                        "open_duration.jitter",
                        jitter,
                        "must be a fraction in 0..=1",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The duration of the `trips`-th trip in a row (from 1), with `random`
    /// uniform in `0..1` for the jitter.
    pub(crate) fn for_trip(&self, trips: u32, random: f64) -> Duration {
        match *self {
            OpenDuration::Fixed(d) => d,
            OpenDuration::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => {
                let exponent = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
                let grown = initial.as_secs_f64() * multiplier.powi(exponent);
                let capped = if grown.is_finite() {
                    grown.min(max.as_secs_f64())
                } else {
                    max.as_secs_f64()
                };
                // Too long for a `Duration` (a cap near `Duration::MAX`): the cap.
                Duration::try_from_secs_f64(capped * (1.0 - jitter * random)).unwrap_or(max)
            }
        }
    }
}

/// What a call whose response future is dropped before it finished counts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DroppedCall {
    /// Nothing: the caller gave up, the dependency is not to blame. A probe
    /// slot it held is given back. The default.
    #[default]
    Ignore,
    /// A failure (for callers that drop futures on their own timeout).
    CountAsFailure,
}

/// What a breaker was built with, as dashboards show it: from
/// [`CircuitBreaker::settings`](super::CircuitBreaker::settings).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// The rolling window.
    pub window: Window,
    /// Calls the window must hold before percentages may trip it.
    pub minimum_calls: u64,
    /// The error percentage that trips it, if that rule is on.
    pub error_threshold: Option<f64>,
    /// The slow-call rule, if on: slower than this, and the percentage.
    pub slow_calls: Option<(Duration, f64)>,
    /// Failures in a row that trip it, if that rule is on.
    pub consecutive_failures: Option<u32>,
    /// How long it stays open.
    pub open_duration: OpenDuration,
    /// Probes let through when half-open.
    pub half_open_probes: u32,
}

impl Config {
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            window: self.window,
            minimum_calls: self.minimum_calls,
            error_threshold: self.error_threshold,
            slow_calls: self
                .slow_call
                .map(|slow| (Duration::from_nanos(slow.nanos), slow.threshold)),
            consecutive_failures: self.consecutive_failures,
            open_duration: self.open_duration,
            half_open_probes: self.half_open_probes,
        }
    }
}

/// The validated settings of a breaker.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u64,
    pub(crate) error_threshold: Option<f64>,
    pub(crate) slow_call: Option<SlowCall>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_duration: OpenDuration,
    pub(crate) half_open_probes: u32,
    pub(crate) dropped_call: DroppedCall,
    pub(crate) track_latency: bool,
    pub(crate) listener: Option<super::listener::SharedListener>,
    pub(crate) clock: Option<Clock>,
    /// Where the breaker starts and where `reset` takes it.
    pub(crate) resting: super::State,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct SlowCall {
    pub(crate) nanos: u64,
    pub(crate) threshold: f64,
}

/// Half-open probes are counted in 10 bits of the breaker's state word.
pub(crate) const MAX_PROBES: u32 = 1000;

/// Builds a [`CircuitBreaker`]. Start from [`CircuitBreaker::builder`]; each
/// setter documents its default, and [`build`](CircuitBreakerBuilder::build) checks them all.
///
/// ```
/// use std::time::Duration;
/// use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
/// use seawall::window::Window;
///
/// let breaker = CircuitBreaker::builder()
///     .name("payments")
///     .window(Window::time(Duration::from_secs(30), 30))
///     .minimum_calls(50)
///     .error_threshold(25.0)
///     .slow_calls(Duration::from_millis(500), 80.0)
///     .open_duration(OpenDuration::exponential(Duration::from_secs(1), Duration::from_secs(60)))
///     .half_open_probes(3)
///     .build()?;
/// # drop(breaker);
/// # Ok::<(), seawall::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CircuitBreakerBuilder {
    config: Config,
    /// Whether `name` was called: a Policy names an unnamed breaker after
    /// itself.
    named: bool,
    error_threshold: f64,
    slow_call: Option<(Duration, f64)>,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            named: false,
            config: Config {
                name: Arc::from("circuit_breaker"),
                window: Window::default(),
                minimum_calls: 20,
                error_threshold: Some(50.0),
                slow_call: None,
                consecutive_failures: None,
                open_duration: OpenDuration::Fixed(Duration::from_secs(5)),
                half_open_probes: 1,
                dropped_call: DroppedCall::Ignore,
                track_latency: false,
                listener: None,
                clock: None,
                resting: super::State::Closed,
            },
            error_threshold: 50.0,
            slow_call: None,
        }
    }
}

impl CircuitBreakerBuilder {
    /// The name in events and tracing (Hystrix's command key). Default
    /// `"circuit_breaker"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = name.into();
        self.named = true;
        self
    }

    /// A Policy's defaults for the breaker it builds: its name and clock,
    /// unless the breaker was given its own.
    pub(crate) fn defaults(mut self, name: &Arc<str>, clock: crate::clock::Clock) -> Self {
        if !self.named {
            self.config.name = Arc::clone(name);
        }
        self.config.clock.get_or_insert(clock);
        self
    }

    /// The rolling window the trip rules look at. Default: 10 seconds in 10
    /// buckets (Hystrix).
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }

    /// How many calls the window must hold before the error and slow-call
    /// percentages may trip the breaker. Default 20 (Hystrix's
    /// `requestVolumeThreshold`). Consecutive failures do not wait for it.
    pub fn minimum_calls(mut self, calls: u64) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// Trip when failures, timeouts and rejections reach this percentage of
    /// the calls in the window. Default 50.
    pub fn error_threshold(mut self, percent: f64) -> Self {
        self.error_threshold = percent;
        self.config.error_threshold = Some(percent);
        self
    }

    /// Never trip on the error percentage (keep the other rules).
    pub fn disable_error_threshold(mut self) -> Self {
        self.config.error_threshold = None;
        self
    }

    /// Trip when calls slower than `slower_than` reach `percent` of the calls
    /// in the window (resilience4j's slow-call rule). Off by default; turning
    /// it on measures every call's latency. A slow probe counts as a failed
    /// probe.
    pub fn slow_calls(mut self, slower_than: Duration, percent: f64) -> Self {
        self.slow_call = Some((slower_than, percent));
        self
    }

    /// Trip after this many failures in a row, whatever the window says. Off
    /// by default.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.config.consecutive_failures = Some(failures);
        self
    }

    /// How long to stay open. Default: fixed 5 seconds (Hystrix's
    /// `sleepWindowInMilliseconds`).
    pub fn open_duration(mut self, duration: OpenDuration) -> Self {
        self.config.open_duration = duration;
        self
    }

    /// How many probe calls go through when half-open; the others are
    /// refused. The breaker reopens as soon as the probes' failures reach
    /// the error threshold (any failure when the error threshold is
    /// disabled), and closes once every probe has reported without that
    /// happening. Default 1 (Hystrix).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// What a call whose future is dropped unfinished counts as. Default
    /// [`DroppedCall::Ignore`].
    pub fn dropped_calls(mut self, dropped: DroppedCall) -> Self {
        self.config.dropped_call = dropped;
        self
    }

    /// Keep a latency histogram in the window, for percentiles in
    /// [`snapshot`](CircuitBreaker::snapshot). Off by default: it measures
    /// every call with the precise clock.
    pub fn track_latency(mut self, track: bool) -> Self {
        self.config.track_latency = track;
        self
    }

    /// A [`Listener`](super::Listener) told of every call the
    /// breaker books: its outcome, latency and the breaker's name. None by
    /// default. With one, every call is timed.
    pub fn listener<L: super::Listener>(mut self, listener: Arc<L>) -> Self {
        self.config.listener = Some(super::listener::SharedListener(listener));
        self
    }

    /// The clock to read. Default [`Clock::default`], decided when `build`
    /// runs.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = Some(clock);
        self
    }

    /// A breaker that keeps statistics and never trips: forced closed from
    /// the start and after every reset.
    pub(crate) fn statistics_only(mut self) -> Self {
        self.config.resting = super::State::ForcedClosed;
        self
    }

    /// Applies a [`Preset`](super::Preset): the settings for a common shape
    /// of traffic, to tune from (later setters change them).
    pub fn preset(self, preset: super::Preset) -> Self {
        preset.apply(self)
    }

    /// What cannot work as meant at `calls_per_second`, the rate the
    /// breaker is expected to see (empty when nothing is amiss; a rate that
    /// is not a positive number says nothing). The builder cannot know the
    /// rate; ask it where you know it (a test, a start-up log).
    ///
    /// ```
    /// use seawall::circuit_breaker::{CircuitBreaker, Preset, Warning};
    ///
    /// // Hystrix's 20 calls in 10 s at one call a second: never judged.
    /// let warnings = CircuitBreaker::builder().check(1.0);
    /// assert!(matches!(warnings[..], [Warning::MinimumNeverReached { .. }]));
    /// assert!(CircuitBreaker::builder().preset(Preset::LowRateRpc).check(1.0).is_empty());
    /// ```
    pub fn check(&self, calls_per_second: f64) -> Vec<super::Warning> {
        super::preset::check(
            self.config.window,
            self.config.minimum_calls,
            self.config.error_threshold.is_some() || self.slow_call.is_some(),
            calls_per_second,
        )
    }

    /// Checks every setting and builds the breaker.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let config = self.validate()?;
        let name = SmolStr::new(&config.name);
        Ok(CircuitBreaker::from_config(Arc::new(config), name, true))
    }

    pub(crate) fn validate(mut self) -> Result<Config, ConfigError> {
        let config = &mut self.config;
        config.window.validate()?;
        if config.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", 0, "must be at least 1"));
        }
        if let Window::Count { calls } = config.window {
            if config.minimum_calls > u64::from(calls) {
                return Err(ConfigError::new(
                    "minimum_calls",
                    config.minimum_calls,
                    "must not exceed the count window's size, or the breaker could never trip",
                ));
            }
        }
        if config.error_threshold.is_some() {
            check_percentage("error_threshold", self.error_threshold)?;
        }
        if let Some((slower_than, percent)) = self.slow_call {
            check_percentage("slow_calls.percent", percent)?;
            if slower_than.is_zero() {
                return Err(ConfigError::new(
                    "slow_calls.slower_than",
                    slower_than,
                    "must be longer than zero",
                ));
            }
            config.slow_call = Some(SlowCall {
                nanos: u64::try_from(slower_than.as_nanos()).unwrap_or(u64::MAX),
                threshold: percent,
            });
        }
        if config.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                0,
                "must be at least 1",
            ));
        }
        config.open_duration.validate()?;
        if !(1..=MAX_PROBES).contains(&config.half_open_probes) {
            return Err(ConfigError::new(
                "half_open_probes",
                config.half_open_probes,
                "must be in 1..=1000",
            ));
        }
        Ok(self.config)
    }
}

fn check_percentage(field: &'static str, percent: f64) -> Result<(), ConfigError> {
    if (0.0..=100.0).contains(&percent) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            Shortest(percent),
            "must be a percentage in 0..=100",
        ))
    }
}

/// Writes a float the way a user typed it: `150`, not `150.0`.
struct Shortest(f64);

impl std::fmt::Debug for Shortest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
