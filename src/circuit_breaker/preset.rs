//! Starting points for common shapes of traffic, and the settings that
//! cannot work at a given call rate.

use std::fmt;
use std::time::Duration;

use super::{CircuitBreakerBuilder, OpenDuration};
use crate::window::Window;

/// A breaker's settings for a common shape of traffic: a starting point to
/// tune from (`examples/tune_thresholds` replays failure profiles through
/// these and other settings). Apply one with
/// [`CircuitBreakerBuilder::preset`]; every setting can still be changed
/// after it.
///
/// | preset | window | minimum calls | error % | consecutive failures | open |
/// |---|---|---|---|---|---|
/// | Hystrix's defaults (seawall's) | 10 s, 10 buckets | 20 | 50 | – | 5 s |
/// | resilience4j's defaults | last 100 calls | 100 | 50 | – | 60 s |
/// | [`LowRateRpc`](Preset::LowRateRpc) | 30 s, 10 buckets | 10 | 50 | 5 | 5 s |
/// | [`HighRateApi`](Preset::HighRateApi) | 10 s, 10 buckets | 100 | 50 | – | 5 s, 5 probes |
/// | [`Consumer`](Preset::Consumer) | last 100 calls | 50 | 50 | – | 5 s, doubling to 120 s |
///
/// What the lab measured (`cargo run --example tune_thresholds -- --profile
/// NAME`, 35 settings; detect and recover in seconds, false trips in calls
/// refused while the dependency was healthy):
///
/// | profile | Hystrix's defaults | `LowRateRpc` | `HighRateApi` | `Consumer` |
/// |---|---|---|---|---|
/// | low-rate (1 call/s, an outage) | misses it (rank 27) | detect 4, recover 4 (rank 7) | misses it | detect 49, recover 6 |
/// | outage (100 calls/s) | detect 4.9, recover 0.4 | detect 0.2, recover 0.8 (rank 2) | detect 4.9, recover 1.6 | detect 2.5, recover 17.7 |
/// | brownout (25% errors, 100 calls/s) | no trip | 500 false trips | no trip | no trip |
/// | flaky background (5–10% errors) | no trip | no trip | no trip | no trip |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// An internal RPC at one to a few calls a second. Hystrix's 20 calls in
    /// 10 s are never reached below 2 calls a second, so such a breaker
    /// never trips: a 30 s window reaches its 10 calls at a call every 3 s,
    /// 5 failures in a row trip it in seconds when the dependency is down,
    /// and a fixed 5 s open period lets a probe find it back as soon. Not
    /// for high rates: with a quarter of calls failing at 100 a second, 5
    /// in a row come every few seconds (the lab's 500 false trips).
    LowRateRpc,
    /// An API at a hundred calls a second or more: Hystrix's window, but 100
    /// calls before judging, so that a few unlucky calls in a quiet second
    /// do not trip it, and 5 probes to close on more than one success.
    HighRateApi,
    /// A queue consumer or a batch job: bursts, then nothing. A count
    /// window judges the last 100 messages whenever they came; an open
    /// breaker backs off to two minutes, since the messages can wait.
    Consumer,
}

impl Preset {
    pub(super) fn apply(self, builder: CircuitBreakerBuilder) -> CircuitBreakerBuilder {
        match self {
            Preset::LowRateRpc => builder
                .window(Window::time(Duration::from_secs(30), 10))
                .minimum_calls(10)
                .error_threshold(50.0)
                .consecutive_failures(5)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(5)))
                .half_open_probes(1),
            Preset::HighRateApi => builder
                .window(Window::time(Duration::from_secs(10), 10))
                .minimum_calls(100)
                .error_threshold(50.0)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(5)))
                .half_open_probes(5),
            Preset::Consumer => builder
                .window(Window::count(100))
                .minimum_calls(50)
                .error_threshold(50.0)
                .open_duration(OpenDuration::exponential(
                    Duration::from_secs(5),
                    Duration::from_secs(120),
                ))
                .half_open_probes(1),
        }
    }
}

/// A setting that cannot work as meant at the call rate given to
/// [`CircuitBreakerBuilder::check`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Warning {
    /// A time window never holds `minimum_calls` calls at this rate: the
    /// error threshold never applies, and the breaker never trips on it.
    MinimumNeverReached {
        /// Calls the window holds at the rate given.
        calls_in_window: f64,
        /// The minimum the breaker waits for.
        minimum_calls: u64,
    },
    /// The window judges so few calls that each moves the error share by
    /// `percent_per_call` points: a threshold between two steps is the
    /// next step up, and a couple of unlucky calls trip it.
    CoarseThreshold {
        /// The calls the breaker judges at least (its minimum).
        calls: u64,
        /// How far one call moves the error share.
        percent_per_call: f64,
    },
    /// A count window this long takes `seconds` to fill at this rate: its
    /// oldest calls tell of the dependency as it was that long ago.
    StaleCountWindow {
        /// The window's size.
        calls: u32,
        /// How long it takes to fill at the rate given.
        seconds: f64,
    },
    /// Calls come less often than once a bucket: most buckets are empty,
    /// and the window slides in steps coarser than it looks.
    EmptyBuckets {
        /// The length of a bucket.
        bucket: Duration,
        /// The time between two calls at the rate given.
        between_calls: Duration,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::MinimumNeverReached {
                calls_in_window,
                minimum_calls,
            } => write!(
                f,
                "the window holds about {calls_in_window:.1} calls at this rate, fewer than \
                 minimum_calls ({minimum_calls}): the error threshold never applies"
            ),
            Warning::CoarseThreshold {
                calls,
                percent_per_call,
            } => write!(
                f,
                "with {calls} calls judged, one call moves the error share by \
                 {percent_per_call:.1} points: raise minimum_calls"
            ),
            Warning::StaleCountWindow { calls, seconds } => write!(
                f,
                "a count window of {calls} calls spans about {seconds:.0} s at this rate: \
                 it remembers the dependency as it was that long ago"
            ),
            Warning::EmptyBuckets {
                bucket,
                between_calls,
            } => write!(
                f,
                "buckets of {bucket:?} with a call every {between_calls:?}: most buckets \
                 are empty; use fewer buckets"
            ),
        }
    }
}

/// Below this many calls judged, one call moves the error share by more
/// than 10 points.
const MEANINGFUL_CALLS: u64 = 10;
/// A count window that takes longer than this to fill is stale.
const STALE_AFTER_SECONDS: f64 = 300.0;

/// The warnings of settings at `calls_per_second`.
pub(super) fn check(
    window: Window,
    minimum_calls: u64,
    error_threshold: bool,
    calls_per_second: f64,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if !(calls_per_second.is_finite() && calls_per_second > 0.0) {
        return warnings;
    }
    let judged = match window {
        Window::Time { span, buckets } => {
            let calls_in_window = calls_per_second * span.as_secs_f64();
            if error_threshold && calls_in_window < minimum_calls as f64 {
                warnings.push(Warning::MinimumNeverReached {
                    calls_in_window,
                    minimum_calls,
                });
            }
            let bucket = span / buckets.max(1);
            let between_calls = Duration::from_secs_f64(1.0 / calls_per_second);
            if between_calls > bucket {
                warnings.push(Warning::EmptyBuckets {
                    bucket,
                    between_calls,
                });
            }
            minimum_calls
        }
        Window::Count { calls } => {
            let seconds = f64::from(calls) / calls_per_second;
            if seconds > STALE_AFTER_SECONDS {
                warnings.push(Warning::StaleCountWindow { calls, seconds });
            }
            minimum_calls
        }
    };
    if error_threshold && judged < MEANINGFUL_CALLS {
        warnings.push(Warning::CoarseThreshold {
            calls: judged,
            percent_per_call: 100.0 / judged as f64,
        });
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::CircuitBreaker;

    #[test]
    fn hystrixs_defaults_never_trip_below_two_calls_a_second() {
        let warnings = CircuitBreaker::builder().check(1.0);
        assert_eq!(
            warnings,
            [Warning::MinimumNeverReached {
                calls_in_window: 10.0,
                minimum_calls: 20
            }]
        );
        assert!(CircuitBreaker::builder().check(2.0).is_empty());
        assert!(warnings[0].to_string().contains("never applies"));
    }

    #[test]
    fn each_preset_fits_its_traffic_and_warns_outside_it() {
        let low = CircuitBreaker::builder().preset(Preset::LowRateRpc);
        assert_eq!(low.check(0.5), []);
        let api = CircuitBreaker::builder().preset(Preset::HighRateApi);
        assert_eq!(api.check(200.0), []);
        assert!(matches!(
            api.check(1.0)[..],
            [Warning::MinimumNeverReached { .. }]
        ));
        let consumer = CircuitBreaker::builder().preset(Preset::Consumer);
        assert_eq!(consumer.check(5.0), []);
        assert!(matches!(
            consumer.check(0.1)[..],
            [Warning::StaleCountWindow { calls: 100, .. }]
        ));
        for preset in [Preset::LowRateRpc, Preset::HighRateApi, Preset::Consumer] {
            CircuitBreaker::builder().preset(preset).build().unwrap();
        }
    }

    #[test]
    fn few_calls_and_sparse_buckets_are_named() {
        let coarse = CircuitBreaker::builder()
            .window(Window::count(10))
            .minimum_calls(5)
            .check(10.0);
        assert_eq!(
            coarse,
            [Warning::CoarseThreshold {
                calls: 5,
                percent_per_call: 20.0
            }]
        );
        let sparse = CircuitBreaker::builder()
            .window(Window::time(Duration::from_secs(60), 60))
            .minimum_calls(20)
            .check(0.5);
        assert!(sparse.contains(&Warning::EmptyBuckets {
            bucket: Duration::from_secs(1),
            between_calls: Duration::from_secs(2),
        }));
        assert!(CircuitBreaker::builder().check(f64::NAN).is_empty());
    }
}
