//! The engine of the threshold-tuning lab: failure profiles, breaker
//! settings, a deterministic replay of one through the other in paused
//! time, and the ranking. It prints nothing; `main.rs` does, and
//! `tests/tune_lab.rs` checks it.
//!
//! # What the numbers mean
//!
//! A profile is a list of segments, each a whole number of seconds of
//! traffic at one call rate, error share and latency. A second is
//! **unhealthy** when its error share is at least
//! [`Lab::unhealthy_error_share`] (0.5) or its latency is above
//! [`Lab::slow_limit`] (500 ms); it is healthy otherwise, background errors
//! and all (a 25% brownout is healthy by this rule: most calls still work,
//! and a breaker that trips on it refuses them). An **episode** is a run of
//! unhealthy seconds.
//!
//! The lab reads the breaker's state as each call is admitted and again as
//! each call ends: a breaker changes state only then (the open duration
//! elapsing is noticed by the next call), so these readings see every
//! change at the virtual instant it happened.
//!
//! - **Time to detect**: from an episode's first second to the first
//!   reading of the breaker not closed (open or half-open), looked for until
//!   the episode ends plus [`Lab::timeout`] (a call made in its last second
//!   can end that late), and before the next episode starts. Zero when the
//!   breaker was already open; none when it never tripped (a miss).
//! - **Time to recover**: from the episode's end (the first healthy second)
//!   to the first reading of the breaker closed after both that end and the
//!   trip, before the next episode. None when it stayed open until then
//!   (stuck), or when the profile ends unhealthy.
//! - **Calls failed before tripping**: calls made in the episode that
//!   failed, timed out or took longer than the slow limit, and ended no
//!   later than the trip (the tripping call included); for a miss, every
//!   such call of the episode.
//! - **False trips**: calls refused (short-circuited) in healthy seconds,
//!   except those refused while recovering from an episode (that cost is
//!   the time to recover already).
//! - **Fallback share**: answers the fallback gave (for refusals, failures
//!   and timeouts alike) over all calls made.
//!
//! # The score
//!
//! Lower is better; per profile, summed over the profiles:
//!
//! ```text
//! score = Σ episodes (time to detect, or the episode's length for a miss)
//!       + Σ detected episodes (time to recover, or the time left until the
//!         next episode or the profile's end when stuck)
//!       + FALSE_TRIP_COST (1 s) × false trips
//! ```
//!
//! A false trip costs a whole second per refused call: refusing calls that
//! would have worked is what makes people turn breakers off, so a setting
//! that trips on noise ranks below one that detects a little later. Ties
//! are broken by the setting's label.
//!
//! # The simulation
//!
//! Each replay runs on a fresh current-thread tokio runtime with paused
//! time: the clock jumps to the next timer whenever nothing is runnable, so
//! an hour of traffic takes a fraction of a second. Calls are made at even
//! spacing (call `m` of a segment at `m / rate` seconds into it) through a
//! seawall [`Policy`] (the breaker under test on [`Clock::tokio`], a
//! [`Lab::timeout`] and a fallback value) over a `service_fn` upstream that
//! sleeps the segment's latency and fails as the call plan says. Which
//! calls fail is fixed before the replay ([`Pattern`]), the same for every
//! setting, and refused calls do not change it. Exponential open durations
//! are replayed without jitter (seawall's jitter is random per process), so
//! every run of the lab gives the same numbers.

use std::fmt::{self, Write as _};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use seawall::circuit_breaker::{
    CircuitBreaker, CircuitBreakerBuilder, OpenDuration, Preset, State,
};
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::window::Window;
use seawall::{Clock, Error};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// What one false-tripped call adds to a score.
pub const FALSE_TRIP_COST: Duration = Duration::from_secs(1);

/// The most calls one profile may plan: a bound on a replay's memory and
/// time, for profiles read from files.
pub const MAX_CALLS: u64 = 5_000_000;

/// The longest profile: a day.
pub const MAX_SECONDS: u64 = 86_400;

/// Calls per block of the [`Pattern::Shuffled`] pattern: long enough that
/// failures bunch about as often as independent draws would (at 10%, three
/// in a row come a few times in 6,000 calls; blocks of 20 all but ruled
/// that out, flattering consecutive-failure rules).
pub const BLOCK: usize = 100;

/// Keeps floors of `calls × share` from landing one below a whole number
/// by rounding (`0.1 × 30` is 3.0000000000000004, `0.7 × 10` 6.999...).
const EPSILON: f64 = 1e-9;

/// One stretch of a profile: `seconds` of traffic at one rate, error share
/// and latency.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// How long the stretch lasts, in whole seconds (at least 1).
    pub seconds: u32,
    /// Calls per second (0 and fractions allowed: 0.5 is a call every 2 s).
    pub rate: f64,
    /// The share of calls that fail, 0 to 1.
    pub error_share: f64,
    /// How long each call takes the upstream, failed or not.
    pub latency: Duration,
}

impl Segment {
    /// A segment; checked when it goes into a [`Profile`].
    pub fn new(seconds: u32, rate: f64, error_share: f64, latency: Duration) -> Segment {
        Segment {
            seconds,
            rate,
            error_share,
            latency,
        }
    }

    /// Whether its seconds are healthy by `lab`'s rule (see the module's notes).
    pub fn healthy(&self, lab: &Lab) -> bool {
        self.error_share < lab.unhealthy_error_share && self.latency <= lab.slow_limit
    }
}

/// A failure profile: segments of traffic, one after the other.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// What the tables call it.
    pub name: String,
    /// The segments, in order.
    pub segments: Vec<Segment>,
}

/// The built-in profiles' names, in the order the lab runs them.
pub const BUILTIN_PROFILES: [&str; 5] =
    ["outage", "brownout", "slow", "low-rate", "flaky-background"];

/// Built-in profiles the default run leaves out, to stay fast: give them
/// with `--profile` (the presets' docs quote them).
pub const MORE_PROFILES: [&str; 2] = ["high-rate", "bursty"];

impl Profile {
    /// A profile, if its segments make sense and its replay stays within
    /// [`MAX_SECONDS`] and [`MAX_CALLS`].
    pub fn new(name: impl Into<String>, segments: Vec<Segment>) -> Result<Profile, String> {
        let name = name.into();
        if segments.is_empty() {
            return Err(format!("profile {name:?} has no segments"));
        }
        let mut seconds = 0u64;
        let mut calls = 0f64;
        for (i, segment) in segments.iter().enumerate() {
            let at = |what: &str| format!("profile {name:?}, segment {}: {what}", i + 1);
            if segment.seconds == 0 {
                return Err(at("seconds must be at least 1"));
            }
            if !(segment.rate.is_finite() && segment.rate >= 0.0) {
                return Err(at("rate must be a number >= 0"));
            }
            if !(0.0..=1.0).contains(&segment.error_share) {
                return Err(at("error_share must be in 0..=1"));
            }
            if segment.latency > Duration::from_secs(3600) {
                return Err(at("latency must be at most an hour"));
            }
            seconds += u64::from(segment.seconds);
            calls += segment.rate * f64::from(segment.seconds);
        }
        if seconds > MAX_SECONDS {
            return Err(format!(
                "profile {name:?} lasts {seconds} s: at most {MAX_SECONDS} s"
            ));
        }
        if calls > MAX_CALLS as f64 {
            return Err(format!(
                "profile {name:?} makes {calls:.0} calls: at most {MAX_CALLS}"
            ));
        }
        Ok(Profile { name, segments })
    }

    /// A built-in profile, by name (see [`BUILTIN_PROFILES`]).
    ///
    /// Healthy stretches carry 1% background errors at 20 ms, as real
    /// dependencies do; a breaker that trips on those is tuned too tight.
    pub fn builtin(name: &str) -> Option<Profile> {
        let ms = Duration::from_millis;
        let healthy = |seconds, rate| Segment::new(seconds, rate, 0.01, ms(20));
        let segments = match name {
            // Refusing connections: fast failures.
            "outage" => vec![
                healthy(60, 20.0),
                Segment::new(60, 20.0, 1.0, ms(5)),
                healthy(60, 20.0),
            ],
            // A quarter of calls failing for a minute and a half: healthy by
            // the lab's rule, so any trip is a false trip.
            "brownout" => vec![
                healthy(60, 20.0),
                Segment::new(90, 20.0, 0.25, ms(20)),
                healthy(60, 20.0),
            ],
            // Latency climbing: 300 ms is still healthy, 800 ms is past the
            // slow limit (only a slow-call rule sees it), 2 s is past the
            // timeout (every rule sees the timeouts).
            "slow" => vec![
                healthy(60, 20.0),
                Segment::new(30, 20.0, 0.01, ms(300)),
                Segment::new(60, 20.0, 0.01, ms(800)),
                Segment::new(30, 20.0, 0.01, ms(2000)),
                healthy(60, 20.0),
            ],
            // One call a second: Hystrix's 20 calls in 10 s are never there.
            "low-rate" => vec![
                healthy(120, 1.0),
                Segment::new(60, 1.0, 1.0, ms(5)),
                healthy(120, 1.0),
            ],
            // No outage at all, errors always: any trip is a false trip.
            "flaky-background" => vec![
                Segment::new(60, 20.0, 0.05, ms(20)),
                Segment::new(60, 20.0, 0.10, ms(20)),
                Segment::new(60, 20.0, 0.07, ms(20)),
                Segment::new(60, 20.0, 0.10, ms(20)),
                Segment::new(60, 20.0, 0.05, ms(20)),
            ],
            // Not in the default run (see `MORE_PROFILES`): an API at 200
            // calls a second with a 3% background, down for half a minute.
            "high-rate" => vec![
                Segment::new(30, 200.0, 0.03, ms(20)),
                Segment::new(30, 200.0, 1.0, ms(5)),
                Segment::new(30, 200.0, 0.03, ms(20)),
            ],
            // A consumer: bursts of 50 messages a second for 10 s, a message
            // every 5 s between them; the handler's store is down through a
            // quiet spell and the burst after it.
            "bursty" => vec![
                Segment::new(10, 50.0, 0.01, ms(20)),
                Segment::new(50, 0.2, 0.01, ms(20)),
                Segment::new(10, 50.0, 0.01, ms(20)),
                Segment::new(50, 0.2, 1.0, ms(5)),
                Segment::new(10, 50.0, 1.0, ms(5)),
                Segment::new(50, 0.2, 0.01, ms(20)),
                Segment::new(10, 50.0, 0.01, ms(20)),
            ],
            _ => return None,
        };
        Profile::new(name, segments).ok()
    }

    /// Reads a profile from CSV text: the header
    /// `seconds,rate,error_share,latency_ms`, then one segment a row. Blank
    /// lines and lines starting with `#` are skipped.
    pub fn from_csv(name: impl Into<String>, text: &str) -> Result<Profile, String> {
        let name = name.into();
        let mut rows = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
        let header: Vec<&str> = match rows.next() {
            Some((_, line)) => line.split(',').map(str::trim).collect(),
            None => return Err(format!("{name}: empty: expected the header {CSV_HEADER:?}")),
        };
        if header != CSV_HEADER.split(',').collect::<Vec<_>>() {
            return Err(format!(
                "{name}: the first line must be the header {CSV_HEADER:?}"
            ));
        }
        let mut segments = Vec::new();
        for (line, row) in rows {
            let fields: Vec<&str> = row.split(',').map(str::trim).collect();
            let [seconds, rate, error_share, latency_ms] = fields[..] else {
                return Err(format!(
                    "{name}, line {line}: expected 4 fields, found {}",
                    fields.len()
                ));
            };
            let number = |field: &str, what: &str| {
                field
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| format!("{name}, line {line}: {what} {field:?} is not a number"))
            };
            let seconds: u32 = seconds.parse().map_err(|_| {
                format!("{name}, line {line}: seconds {seconds:?} is not a whole number")
            })?;
            let latency_ms = number(latency_ms, "latency_ms")?;
            if !(0.0..=3_600_000.0).contains(&latency_ms) {
                return Err(format!(
                    "{name}, line {line}: latency_ms must be in 0..=3600000"
                ));
            }
            segments.push(Segment::new(
                seconds,
                number(rate, "rate")?,
                number(error_share, "error_share")?,
                Duration::from_micros((latency_ms * 1000.0).round() as u64),
            ));
        }
        Profile::new(name, segments)
    }

    /// How long the profile lasts.
    pub fn length(&self) -> Duration {
        Duration::from_secs(self.segments.iter().map(|s| u64::from(s.seconds)).sum())
    }

    /// The unhealthy runs of seconds, by `lab`'s rule, in order.
    pub fn episodes(&self, lab: &Lab) -> Vec<Episode> {
        let mut episodes: Vec<Episode> = Vec::new();
        let mut at = Duration::ZERO;
        for segment in &self.segments {
            let end = at + Duration::from_secs(u64::from(segment.seconds));
            if !segment.healthy(lab) {
                match episodes.last_mut() {
                    Some(last) if last.end == at => last.end = end,
                    _ => episodes.push(Episode { start: at, end }),
                }
            }
            at = end;
        }
        episodes
    }

    /// Every call the replay makes, in order: when, whether the upstream
    /// fails it, how long it takes, and whether its second is healthy.
    pub fn plan(&self, lab: &Lab) -> Vec<PlannedCall> {
        let mut calls = Vec::new();
        let mut offset = Duration::ZERO;
        for (index, segment) in self.segments.iter().enumerate() {
            let length_nanos = u64::from(segment.seconds) * 1_000_000_000;
            let mut times = Vec::new();
            if segment.rate > 0.0 {
                // Exact for whole-number rates: m × 1e9 is exact in an f64
                // well past these counts, and so is its quotient when whole.
                for m in 0u64.. {
                    let nanos = (m as f64 * 1e9 / segment.rate).round() as u64;
                    if nanos >= length_nanos {
                        break;
                    }
                    times.push(nanos);
                }
            }
            let failing = lab.pattern.failing(times.len(), segment.error_share, index);
            let healthy = segment.healthy(lab);
            calls.extend(
                times
                    .into_iter()
                    .zip(failing)
                    .map(|(nanos, fail)| PlannedCall {
                        at: offset + Duration::from_nanos(nanos),
                        fail,
                        latency: segment.latency,
                        healthy,
                    }),
            );
            offset += Duration::from_nanos(length_nanos);
        }
        calls
    }
}

/// The header of a profile's CSV.
pub const CSV_HEADER: &str = "seconds,rate,error_share,latency_ms";

/// A run of unhealthy seconds: `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Episode {
    /// Its first unhealthy second.
    pub start: Duration,
    /// Its first healthy second after it (or the profile's end).
    pub end: Duration,
}

/// One call of a replay, decided before it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedCall {
    /// When it is made, from the profile's start.
    pub at: Duration,
    /// Whether the upstream fails it.
    pub fail: bool,
    /// How long the upstream takes over it.
    pub latency: Duration,
    /// Whether its second is healthy.
    pub healthy: bool,
}

/// Which calls of a segment fail: always exactly `error share × calls`
/// (rounded down) of every prefix of whole blocks, so that every setting
/// sees the same failures and a share means that share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Evenly spread: call `m` fails when `⌊(m+1)·share⌋ > ⌊m·share⌋` (at
    /// 20%, calls 4, 9, 14...). Never two failures in a row below 50%, so
    /// consecutive-failure rules never trip on background noise: easy to
    /// reason about, kind to those rules.
    Even,
    /// The even count of failures per block of [`BLOCK`] calls, placed in the block
    /// by a hash of `seed`, the segment and the call: failures bunch up now
    /// and then, as real ones do.
    Shuffled {
        /// The hash's seed.
        seed: u64,
    },
}

impl Pattern {
    /// Which of `calls` calls of segment `segment` fail at `share`.
    pub fn failing(&self, calls: usize, share: f64, segment: usize) -> Vec<bool> {
        let failures_before = |m: usize| (m as f64 * share + EPSILON).floor() as usize;
        match *self {
            Pattern::Even => (0..calls)
                .map(|m| failures_before(m + 1) > failures_before(m))
                .collect(),
            Pattern::Shuffled { seed } => {
                let mut failing = vec![false; calls];
                for start in (0..calls).step_by(BLOCK) {
                    let end = (start + BLOCK).min(calls);
                    let failures = failures_before(end) - failures_before(start);
                    let mut order: Vec<usize> = (start..end).collect();
                    order.sort_by_key(|&m| mix(mix(mix(seed) ^ segment as u64) ^ m as u64));
                    for &m in &order[..failures] {
                        failing[m] = true;
                    }
                }
                failing
            }
        }
    }
}

/// splitmix64's finalizer: a fixed, well-spread hash.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The lab's fixed parts: the health rule, the Policy's timeout, and how
/// failures are placed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lab {
    /// A second whose latency is above this is unhealthy, and a call slower
    /// than this counts as failed (its caller waited too long). The grid's
    /// slow-call rules use the same limit.
    pub slow_limit: Duration,
    /// The Policy's timeout: slower calls end as timeouts, which every rule
    /// counts as errors.
    pub timeout: Duration,
    /// A second whose error share is at least this is unhealthy.
    pub unhealthy_error_share: f64,
    /// Which calls fail.
    pub pattern: Pattern,
}

impl Default for Lab {
    fn default() -> Lab {
        Lab {
            slow_limit: SLOW_LIMIT,
            timeout: Duration::from_secs(1),
            unhealthy_error_share: 0.5,
            pattern: Pattern::Shuffled { seed: 2026 },
        }
    }
}

/// The slow limit of [`Lab::default`] and of the grid's slow-call rules.
pub const SLOW_LIMIT: Duration = Duration::from_millis(500);

/// One breaker setting of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The preset (or other well-known defaults) it comes from, for its label.
    pub origin: Option<&'static str>,
    /// The rolling window.
    pub window: Window,
    /// Calls the window must hold before percentages may trip it.
    pub minimum_calls: u64,
    /// The error percentage that trips it; `None` turns the rule off.
    pub error_threshold: Option<f64>,
    /// The slow-call rule: slower than this, and the percentage.
    pub slow_calls: Option<(Duration, f64)>,
    /// Failures in a row that trip it.
    pub consecutive_failures: Option<u32>,
    /// How long it stays open (exponential ones without jitter: see the
    /// module's notes).
    pub open_duration: OpenDuration,
    /// Probes let through when half-open.
    pub half_open_probes: u32,
}

impl Setting {
    /// Seawall's defaults, which are Hystrix's: 20 calls in 10 s (10
    /// buckets), 50% errors, open 5 s, one probe.
    pub fn hystrix() -> Setting {
        Setting {
            origin: None,
            window: Window::time(Duration::from_secs(10), 10),
            minimum_calls: 20,
            error_threshold: Some(50.0),
            slow_calls: None,
            consecutive_failures: None,
            open_duration: OpenDuration::Fixed(Duration::from_secs(5)),
            half_open_probes: 1,
        }
    }

    /// A seawall [`Preset`], read back from a breaker built with it (so the
    /// lab follows the preset as the crate defines it), its open duration's
    /// jitter taken out.
    pub fn preset(preset: Preset, name: &'static str) -> Result<Setting, String> {
        // The tokio clock, even outside a runtime: the default clock would
        // start seawall's clock thread for a breaker that never takes a call.
        let built = CircuitBreaker::builder()
            .preset(preset)
            .clock(Clock::tokio())
            .build()
            .map_err(|e| format!("preset {name}: {e}"))?;
        let settings = built.settings();
        Ok(Setting {
            origin: Some(name),
            window: settings.window,
            minimum_calls: settings.minimum_calls,
            error_threshold: settings.error_threshold,
            slow_calls: settings.slow_calls,
            consecutive_failures: settings.consecutive_failures,
            open_duration: without_jitter(settings.open_duration),
            half_open_probes: settings.half_open_probes,
        })
    }

    /// A builder with these settings (and nothing else set).
    pub fn builder(&self) -> CircuitBreakerBuilder {
        let mut builder = CircuitBreaker::builder()
            .window(self.window)
            .minimum_calls(self.minimum_calls)
            .open_duration(self.open_duration)
            .half_open_probes(self.half_open_probes);
        builder = match self.error_threshold {
            Some(percent) => builder.error_threshold(percent),
            None => builder.disable_error_threshold(),
        };
        if let Some((slower_than, percent)) = self.slow_calls {
            builder = builder.slow_calls(slower_than, percent);
        }
        if let Some(failures) = self.consecutive_failures {
            builder = builder.consecutive_failures(failures);
        }
        builder
    }

    /// A short name that says every setting: `time 10s/10 min20 50% open 5s`.
    pub fn label(&self) -> String {
        let mut label = String::new();
        if let Some(origin) = self.origin {
            let _ = write!(label, "{origin}: ");
        }
        match self.window {
            Window::Time { span, buckets } => {
                let _ = write!(label, "time {}/{buckets}", Short(span));
            }
            Window::Count { calls } => {
                let _ = write!(label, "count {calls}");
            }
            other => {
                let _ = write!(label, "{other:?}");
            }
        }
        let _ = write!(label, " min{}", self.minimum_calls);
        match self.error_threshold {
            Some(percent) => {
                let _ = write!(label, " {percent}%");
            }
            None => label.push_str(" no-err%"),
        }
        if let Some((slower_than, percent)) = self.slow_calls {
            let _ = write!(label, " slow>{}:{percent}%", Short(slower_than));
        }
        if let Some(failures) = self.consecutive_failures {
            let _ = write!(label, " consec{failures}");
        }
        match self.open_duration {
            OpenDuration::Fixed(d) => {
                let _ = write!(label, " open {}", Short(d));
            }
            OpenDuration::Exponential {
                initial,
                multiplier,
                max,
                ..
            } => {
                let _ = write!(label, " open {}..{}", Short(initial), Short(max));
                if multiplier != 2.0 {
                    let _ = write!(label, " x{multiplier}");
                }
            }
            other => {
                let _ = write!(label, " open {other:?}");
            }
        }
        if self.half_open_probes != 1 {
            let _ = write!(label, " probes{}", self.half_open_probes);
        }
        label
    }

    fn with(&self, change: impl FnOnce(&mut Setting)) -> Setting {
        let mut setting = self.clone();
        change(&mut setting);
        setting
    }
}

/// Exponential open durations doubling from `initial` to `max`, without
/// jitter.
pub fn exponential(initial: Duration, max: Duration) -> OpenDuration {
    without_jitter(OpenDuration::exponential(initial, max))
}

fn without_jitter(open: OpenDuration) -> OpenDuration {
    match open {
        OpenDuration::Exponential {
            initial,
            multiplier,
            max,
            ..
        } => OpenDuration::Exponential {
            initial,
            multiplier,
            max,
            jitter: 0.0,
        },
        other => other,
    }
}

/// A duration as a label says it: `10s`, `500ms`.
struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{d:?}")
        }
    }
}

/// The windows the grids try: Hystrix's, a shorter and a longer time
/// window, and a short and a long count window.
fn grid_windows() -> [Window; 5] {
    let s = Duration::from_secs;
    [
        Window::time(s(10), 10),
        Window::time(s(5), 5),
        Window::time(s(30), 10),
        Window::count(20),
        Window::count(100),
    ]
}

/// seawall's presets and resilience4j's defaults, as settings.
fn well_known() -> Vec<Setting> {
    let mut settings: Vec<Setting> = [
        (Preset::LowRateRpc, "LowRateRpc"),
        (Preset::HighRateApi, "HighRateApi"),
        (Preset::Consumer, "Consumer"),
    ]
    .into_iter()
    .filter_map(|(preset, name)| Setting::preset(preset, name).ok())
    .collect();
    settings.push(Setting {
        origin: Some("resilience4j"),
        window: Window::count(100),
        minimum_calls: 100,
        error_threshold: Some(50.0),
        slow_calls: None,
        consecutive_failures: None,
        open_duration: OpenDuration::Fixed(Duration::from_secs(60)),
        half_open_probes: 10,
    });
    settings
}

/// The default grid, 35 settings: each window with 5 or 20 minimum calls
/// and a 25% or 50% error threshold; Hystrix's defaults changed one thing
/// at a time (open duration, backoff, probes, consecutive failures, the
/// slow-call rule); one setting combining those; and the well-known
/// presets.
pub fn default_grid() -> Vec<Setting> {
    let s = Duration::from_secs;
    let hystrix = Setting::hystrix();
    let mut grid = Vec::new();
    for window in grid_windows() {
        for minimum_calls in [5, 20] {
            for percent in [25.0, 50.0] {
                grid.push(hystrix.with(|x| {
                    x.window = window;
                    x.minimum_calls = minimum_calls;
                    x.error_threshold = Some(percent);
                }));
            }
        }
    }
    grid.extend([
        hystrix.with(|x| x.open_duration = OpenDuration::Fixed(s(1))),
        hystrix.with(|x| x.open_duration = OpenDuration::Fixed(s(15))),
        hystrix.with(|x| x.open_duration = exponential(s(1), s(30))),
        hystrix.with(|x| x.open_duration = exponential(s(5), s(120))),
        hystrix.with(|x| x.half_open_probes = 3),
        hystrix.with(|x| x.half_open_probes = 10),
        hystrix.with(|x| x.consecutive_failures = Some(5)),
        hystrix.with(|x| {
            x.error_threshold = None;
            x.consecutive_failures = Some(3);
        }),
        hystrix.with(|x| x.slow_calls = Some((SLOW_LIMIT, 50.0))),
        hystrix.with(|x| x.slow_calls = Some((SLOW_LIMIT, 80.0))),
        hystrix.with(|x| {
            x.minimum_calls = 5;
            x.slow_calls = Some((SLOW_LIMIT, 50.0));
            x.consecutive_failures = Some(5);
            x.open_duration = exponential(s(1), s(30));
            x.half_open_probes = 3;
        }),
    ]);
    grid.extend(well_known());
    dedup(grid)
}

/// Every combination of: the 5 windows, 5 or 20 minimum calls, 25% or 50%
/// errors, the slow-call rule off or at 50%, consecutive failures off or 5,
/// open 5 s or 1 s doubling to 30 s, 1 or 3 probes (320 settings), and the
/// well-known presets.
pub fn full_grid() -> Vec<Setting> {
    let s = Duration::from_secs;
    let mut grid = Vec::new();
    for window in grid_windows() {
        for minimum_calls in [5, 20] {
            for percent in [25.0, 50.0] {
                for slow_calls in [None, Some((SLOW_LIMIT, 50.0))] {
                    for consecutive_failures in [None, Some(5)] {
                        for open_duration in [OpenDuration::Fixed(s(5)), exponential(s(1), s(30))] {
                            for half_open_probes in [1, 3] {
                                grid.push(Setting {
                                    origin: None,
                                    window,
                                    minimum_calls,
                                    error_threshold: Some(percent),
                                    slow_calls,
                                    consecutive_failures,
                                    open_duration,
                                    half_open_probes,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    grid.extend(well_known());
    dedup(grid)
}

/// The grid without repeated labels (the first kept), so that ties broken
/// by label stay strict.
fn dedup(grid: Vec<Setting>) -> Vec<Setting> {
    let mut seen = std::collections::HashSet::new();
    grid.into_iter()
        .filter(|s| seen.insert(s.label()))
        .collect()
}

/// How one episode of a profile went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpisodeResult {
    /// The episode.
    pub episode: Episode,
    /// Time to detect; `None`: missed.
    pub detect: Option<Duration>,
    /// Time to recover; `None`: missed, stuck open until the next episode
    /// or the end, or the profile ends unhealthy.
    pub recover: Option<Duration>,
    /// Calls failed (or too slow) before the trip.
    pub failed_before_trip: u64,
    /// What a stuck recovery costs: the time from the episode's end to the
    /// next episode or the profile's end.
    pub recover_limit: Duration,
}

impl EpisodeResult {
    /// Its part of the score: time to detect (the episode's length when
    /// missed) and to recover (the limit when stuck).
    pub fn cost(&self) -> Duration {
        match self.detect {
            None => self.episode.end - self.episode.start,
            Some(detect) => detect + self.recover.unwrap_or(self.recover_limit),
        }
    }
}

/// One setting replayed through one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The profile's name.
    pub profile: String,
    /// Each episode's results.
    pub episodes: Vec<EpisodeResult>,
    /// Calls made.
    pub calls: u64,
    /// Calls refused, by the breaker's lifetime counts.
    pub refused: u64,
    /// Calls refused in healthy seconds outside recoveries.
    pub false_trips: u64,
    /// Answers the fallback gave, by the breaker's lifetime counts.
    pub fallbacks: u64,
    /// Times the breaker went from closed to open.
    pub trips: u64,
}

impl Run {
    /// The run's score (see the module's notes): lower is better.
    pub fn score(&self) -> Duration {
        let episodes: Duration = self.episodes.iter().map(EpisodeResult::cost).sum();
        episodes + FALSE_TRIP_COST * u32::try_from(self.false_trips).unwrap_or(u32::MAX)
    }
}

/// How a call ended, as the caller saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The upstream's own answer.
    Fresh,
    /// The fallback's, for a failure.
    Failed,
    /// The fallback's, for a timeout.
    TimedOut,
    /// The fallback's, for a refusal.
    Refused,
}

impl Answer {
    fn of(error: &Error<io::Error>) -> Answer {
        match error {
            Error::CircuitOpen(_) => Answer::Refused,
            Error::Timeout(_) => Answer::TimedOut,
            _ => Answer::Failed,
        }
    }
}

/// A call as the upstream receives it.
#[derive(Clone, Copy, Debug)]
struct Call {
    fail: bool,
    latency: Duration,
}

/// A call as it ended.
#[derive(Clone, Copy, Debug)]
struct Ended {
    planned: PlannedCall,
    /// When it was made, by the runtime's clock (see `replay`).
    issued: Duration,
    ended: Duration,
    answer: Answer,
}

/// What a replay writes down, in the order it happens.
#[derive(Default)]
struct Log {
    /// Readings of the breaker: when, and whether it was not closed.
    readings: Vec<(Duration, bool)>,
    ended: Vec<Ended>,
}

fn tripped(state: State) -> bool {
    matches!(state, State::Open | State::HalfOpen | State::ForcedOpen)
}

/// Replays `profile` through a breaker of `setting`, in paused time on a
/// runtime of its own.
pub fn simulate(profile: &Profile, setting: &Setting, lab: &Lab) -> Result<Run, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(replay(profile, setting, lab))
}

async fn replay(profile: &Profile, setting: &Setting, lab: &Lab) -> Result<Run, String> {
    let label = setting.label();
    // Built at the profile's instant zero: time-window buckets then line up
    // with the profile's seconds.
    let start = Instant::now();
    let breaker = setting
        .builder()
        .name(label.as_str())
        .clock(Clock::tokio())
        .build()
        .map_err(|e| format!("{label}: {e}"))?;
    let fallback = Fallback::<Call, Answer, io::Error>::builder()
        .function(|_: &(), error: &Error<io::Error>| Ok::<_, io::Error>(Answer::of(error)))
        // Answers are made at once; the bound only must not refuse any.
        .max_concurrent(100_000);
    let policy = Policy::builder()
        .name("upstream")
        .circuit_breaker(breaker.clone())
        .timeout(lab.timeout)
        .fallback(fallback)
        .build()
        .map_err(|e| format!("{label}: {e}"))?;
    let upstream = service_fn(|call: Call| async move {
        tokio::time::sleep(call.latency).await;
        if call.fail {
            Err(io::Error::other("upstream failed"))
        } else {
            Ok(Answer::Fresh)
        }
    });
    let mut service = policy.layer(upstream);

    let plan = profile.plan(lab);
    let log = Arc::new(Mutex::new(Log {
        readings: Vec::with_capacity(plan.len() * 2),
        ended: Vec::with_capacity(plan.len()),
    }));
    let mut running = Vec::with_capacity(plan.len());
    for planned in plan {
        tokio::time::sleep_until(start + planned.at).await;
        let ready = service.ready().await.map_err(|e| format!("{label}: {e}"))?;
        let call = ready.call(Call {
            fail: planned.fail,
            latency: planned.latency,
        });
        // The timer wheel wakes on whole milliseconds: a planned instant
        // between two (every third of a second, at 3 calls/s) comes at the
        // next, and the readings say when the call really went.
        let issued = start.elapsed();
        lock(&log).readings.push((issued, tripped(breaker.state())));
        let (log, breaker) = (Arc::clone(&log), breaker.clone());
        running.push(tokio::spawn(async move {
            let answer = match call.await {
                Ok(answer) => answer,
                // The fallback answers every error; kept for a bound hit.
                Err(error) => Answer::of(&error),
            };
            let ended = start.elapsed();
            let mut log = lock(&log);
            log.readings.push((ended, tripped(breaker.state())));
            log.ended.push(Ended {
                planned,
                issued,
                ended,
                answer,
            });
        }));
    }
    for call in running {
        call.await
            .map_err(|e| format!("{label}: a call panicked: {e}"))?;
    }
    let log = std::mem::take(&mut *lock(&log));
    let lifetime = breaker.lifetime_counts();
    let mut run = analyse(profile, lab, &log);
    run.refused = lifetime.short_circuited;
    run.fallbacks = lifetime.fallback_success;
    run.trips = breaker.history().transitions(State::Closed, State::Open);
    Ok(run)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Turns a replay's log into the lab's numbers (see the module's notes).
fn analyse(profile: &Profile, lab: &Lab, log: &Log) -> Run {
    let episodes = profile.episodes(lab);
    let length = profile.length();
    let first_reading = |from: Duration, until: Duration, tripped: bool| {
        log.readings
            .iter()
            .find(|&&(at, t)| at >= from && at < until && t == tripped)
            .map(|&(at, _)| at)
    };
    let bad = |call: &Ended| {
        matches!(call.answer, Answer::Failed | Answer::TimedOut)
            || (call.answer == Answer::Fresh && call.planned.latency > lab.slow_limit)
    };
    let mut results = Vec::new();
    // Healthy time spent recovering: refusals there are not false trips.
    let mut recovering = Vec::new();
    for (i, &episode) in episodes.iter().enumerate() {
        let next = episodes.get(i + 1).map_or(Duration::MAX, |next| next.start);
        let look_until = (episode.end + lab.timeout).min(next);
        let tripped_at = first_reading(episode.start, look_until, true);
        let counted_until = tripped_at.unwrap_or(look_until);
        let failed_before_trip = log
            .ended
            .iter()
            .filter(|call| {
                call.planned.at >= episode.start
                    && call.planned.at < episode.end
                    && call.ended <= counted_until
                    && (tripped_at.is_some() || call.ended < look_until)
                    && bad(call)
            })
            .count() as u64;
        let recover_limit = next.min(length).saturating_sub(episode.end);
        let recovered_at = match tripped_at {
            Some(tripped_at) if episode.end < length => {
                let from = episode.end.max(tripped_at);
                let recovered_at = first_reading(from, next, false);
                recovering.push((episode.end, recovered_at.unwrap_or(next)));
                recovered_at
            }
            _ => None,
        };
        results.push(EpisodeResult {
            episode,
            detect: tripped_at.map(|at| at - episode.start),
            recover: recovered_at.map(|at| at - episode.end),
            failed_before_trip,
            recover_limit,
        });
    }
    let false_trips = log
        .ended
        .iter()
        .filter(|call| {
            call.answer == Answer::Refused
                && call.planned.healthy
                && !recovering
                    .iter()
                    .any(|&(from, until)| call.issued >= from && call.issued < until)
        })
        .count() as u64;
    Run {
        profile: profile.name.clone(),
        episodes: results,
        calls: log.ended.len() as u64,
        refused: 0,
        false_trips,
        fallbacks: 0,
        trips: 0,
    }
}

/// One setting's results over every profile, and its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The setting.
    pub setting: Setting,
    /// Its label.
    pub label: String,
    /// One run per profile, in the profiles' order.
    pub runs: Vec<Run>,
    /// The sum of the runs' scores.
    pub score: Duration,
}

impl Row {
    /// Replays every profile through `setting`.
    pub fn measure(setting: &Setting, profiles: &[Profile], lab: &Lab) -> Result<Row, String> {
        let runs = profiles
            .iter()
            .map(|profile| simulate(profile, setting, lab))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Row {
            setting: setting.clone(),
            label: setting.label(),
            score: runs.iter().map(Run::score).sum(),
            runs,
        })
    }

    fn episodes(&self) -> impl Iterator<Item = &EpisodeResult> {
        self.runs.iter().flat_map(|run| &run.episodes)
    }

    /// Episodes over every profile.
    pub fn episode_count(&self) -> usize {
        self.episodes().count()
    }

    /// The mean time to detect over the episodes detected.
    pub fn detect_mean(&self) -> Option<Duration> {
        mean(self.episodes().filter_map(|e| e.detect))
    }

    /// The mean time to recover over the episodes recovered from.
    pub fn recover_mean(&self) -> Option<Duration> {
        mean(self.episodes().filter_map(|e| e.recover))
    }

    /// Episodes never detected.
    pub fn missed(&self) -> usize {
        self.episodes().filter(|e| e.detect.is_none()).count()
    }

    /// Episodes detected but not recovered from before the next or the
    /// profile's end.
    pub fn stuck(&self) -> usize {
        self.episodes()
            .filter(|e| e.detect.is_some() && e.recover.is_none() && !e.recover_limit.is_zero())
            .count()
    }

    /// Calls failed before tripping, over every episode.
    pub fn failed_before_trip(&self) -> u64 {
        self.episodes().map(|e| e.failed_before_trip).sum()
    }

    /// False trips, over every profile.
    pub fn false_trips(&self) -> u64 {
        self.runs.iter().map(|r| r.false_trips).sum()
    }

    /// Trips, over every profile.
    pub fn trips(&self) -> u64 {
        self.runs.iter().map(|r| r.trips).sum()
    }

    /// Calls made, over every profile.
    pub fn calls(&self) -> u64 {
        self.runs.iter().map(|r| r.calls).sum()
    }

    /// Fallback answers over calls made, 0 to 1.
    pub fn fallback_share(&self) -> f64 {
        let fallbacks: u64 = self.runs.iter().map(|r| r.fallbacks).sum();
        match self.calls() {
            0 => 0.0,
            calls => fallbacks as f64 / calls as f64,
        }
    }

    /// The score's parts: detection (misses at their length), recovery
    /// (stuck ones at their limit), false trips.
    pub fn score_parts(&self) -> (Duration, Duration, Duration) {
        let detect = self
            .episodes()
            .map(|e| e.detect.unwrap_or(e.episode.end - e.episode.start))
            .sum();
        let recover = self
            .episodes()
            .filter(|e| e.detect.is_some())
            .map(|e| e.recover.unwrap_or(e.recover_limit))
            .sum();
        let false_trips = FALSE_TRIP_COST * u32::try_from(self.false_trips()).unwrap_or(u32::MAX);
        (detect, recover, false_trips)
    }
}

fn mean(durations: impl Iterator<Item = Duration>) -> Option<Duration> {
    let (sum, n) = durations.fold((Duration::ZERO, 0u32), |(sum, n), d| (sum + d, n + 1));
    (n > 0).then(|| sum / n)
}

/// Orders rows best first: by score, ties by label.
pub fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| a.score.cmp(&b.score).then_with(|| a.label.cmp(&b.label)));
}

/// Replays every profile through every setting on `threads` threads (each
/// replay on a runtime of its own, so the numbers do not depend on the
/// threads), and ranks the settings.
pub fn rank(
    profiles: &[Profile],
    settings: &[Setting],
    lab: &Lab,
    threads: usize,
) -> Result<Vec<Row>, String> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Row, String>>>> =
        settings.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, settings.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(setting) = settings.get(i) else {
                    break;
                };
                *lock(&results[i]) = Some(Row::measure(setting, profiles, lab));
            });
        }
    });
    let mut rows = results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(|| Err("a setting was not replayed".to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    sort(&mut rows);
    Ok(rows)
}

/// Seconds with one decimal, `-` for none.
pub fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// The ranking as CSV: one row per setting, best first, the columns of the
/// printed table (times in seconds, empty for none).
pub fn to_csv(rows: &[Row]) -> String {
    let mut csv = String::from(
        "rank,setting,detect_s,recover_s,missed,stuck,failed_before_trip,false_trips,trips,fallback_share,score_s\n",
    );
    let secs =
        |d: Option<Duration>| d.map_or_else(String::new, |d| format!("{:.3}", d.as_secs_f64()));
    for (i, row) in rows.iter().enumerate() {
        let _ = writeln!(
            csv,
            "{},\"{}\",{},{},{},{},{},{},{},{:.4},{:.3}",
            i + 1,
            row.label.replace('"', "\"\""),
            secs(row.detect_mean()),
            secs(row.recover_mean()),
            row.missed(),
            row.stuck(),
            row.failed_before_trip(),
            row.false_trips(),
            row.trips(),
            row.fallback_share(),
            row.score.as_secs_f64(),
        );
    }
    csv
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The ranked rows (`(rank, row)`, best first) as an SVG chart: one bar per
/// setting, its score in parts (detection, recovery, false trips).
pub fn to_svg(ranked: &[(usize, &Row)], title: &str) -> String {
    // Monospace at 12 px is about 7.2 px a character; a little more keeps
    // long labels clear of the bars in any monospace font.
    const CHAR: f64 = 7.5;
    const BAR_WIDTH: f64 = 420.0;
    const ROW: f64 = 20.0;
    const TOP: f64 = 58.0;
    let longest_label = ranked
        .iter()
        .map(|(_, row)| row.label.chars().count())
        .max()
        .unwrap_or(0);
    let label_x = 44.0;
    let bars_x = label_x + CHAR * longest_label as f64 + 12.0;
    let parts = [
        ("#e6550d", "time to detect (misses: episode length)"),
        ("#3182bd", "time to recover (stuck: time left)"),
        ("#969696", "false trips (1 s per refused call)"),
    ];
    let legend_width: f64 = parts
        .iter()
        .map(|(_, name)| 16.0 + CHAR * name.len() as f64 + 16.0)
        .sum();
    let width = (bars_x + BAR_WIDTH + 80.0)
        .max(8.0 + legend_width)
        .max(16.0 + CHAR * 1.2 * title.chars().count() as f64)
        .ceil();
    let height = TOP + ROW * ranked.len() as f64 + 12.0;
    let longest = ranked
        .iter()
        .map(|(_, row)| row.score.as_secs_f64())
        .fold(1.0, f64::max);
    let scale = BAR_WIDTH / longest;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="8" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let mut x = 8.0;
    for (color, name) in parts {
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.0}" y="28" width="12" height="12" fill="{color}"/><text x="{:.0}" y="38">{}</text>"#,
            x + 16.0,
            escape(name)
        );
        x += 16.0 + CHAR * name.len() as f64 + 16.0;
    }
    for (i, (rank, row)) in ranked.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{rank}</text><text x="{label_x:.0}" y="{:.0}">{}</text>"#,
            label_x - 8.0,
            y + 14.0,
            y + 14.0,
            escape(&row.label)
        );
        let (detect, recover, false_trips) = row.score_parts();
        let mut x = bars_x;
        for ((color, _), part) in parts.iter().zip([detect, recover, false_trips]) {
            let w = part.as_secs_f64() * scale;
            if w > 0.0 {
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{:.0}" width="{w:.1}" height="14" fill="{color}"/>"#,
                    y + 3.0
                );
            }
            x += w;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.0}">{:.1} s</text>"#,
            x + 6.0,
            y + 14.0,
            row.score.as_secs_f64()
        );
    }
    svg.push_str("</svg>\n");
    svg
}
