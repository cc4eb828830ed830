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
/// | resilience4j's defaults | last 100 calls | 100 | 50 | – | 60 s, 10 probes |
/// | [`LowRateRpc`](Preset::LowRateRpc) | 30 s, 10 buckets | 10 | 50 | 5 | 5 s |
/// | [`HighRateApi`](Preset::HighRateApi) | last 200 calls | 100 | 50 | – | 5 s, 5 probes |
/// | [`Consumer`](Preset::Consumer) | 60 s, 12 buckets | 10 | 50 | 5 | 5 s, doubling to 60 s |
///
/// What the lab measured (`cargo run --example tune_thresholds -- --profile
/// NAME`, 35 settings ranked; detect and recover in seconds):
///
/// | profile | Hystrix's defaults | resilience4j's | the preset for it |
/// |---|---|---|---|
/// | `low-rate`: 1 call/s, down 60 s | never trips | – | `LowRateRpc`: detect 4, recover 4 (rank 7) |
/// | `high-rate`: 200 calls/s, 3% background, down 30 s | detect 4.7, recover 4.8 (rank 25) | stays open past the end (rank 34) | `HighRateApi`: detect 0.5, recover 0.6 (rank 12) |
/// | `bursty`: 50 calls/s for 10 s, then one every 5 s; down through a quiet spell and a burst | detect 50.4, recover 5 (rank 22) | detect 50.8, recover 51 (rank 35) | `Consumer`: detect 20, recover 10 (rank 6) |
///
/// Each fits its traffic, not every traffic: at 20 calls a second with a
/// quarter of calls failing (the `brownout` profile, a dependency still
/// mostly working), `LowRateRpc` and `Consumer` trip on 5 failures in a
/// row and refuse 400 to 500 calls of it, where Hystrix's defaults and
/// `HighRateApi` refuse none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// An internal RPC at one to a few calls a second. Hystrix's 20 calls in
    /// 10 s are never reached below 2 calls a second, so such a breaker
    /// never trips: a 30 s window reaches its 10 calls at a call every 3 s,
    /// 5 failures in a row trip it in seconds when the dependency is down,
    /// and a fixed 5 s open period lets a probe find it back as soon.
    LowRateRpc,
    /// An API at a hundred calls a second or more: the last 200 calls (a
    /// second or two of traffic) judged once 100 are in, so that an outage
    /// shows within half a second and a few unlucky calls do not trip it;
    /// 5 probes to close on more than one success.
    HighRateApi,
    /// A queue consumer or a batch job: bursts, then a trickle. A minute's
    /// window judges the bursts and the trickle together, 5 failures in a
    /// row catch an outage that starts in the trickle, and an open breaker
    /// backs off to a minute, since the messages can wait.
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
                .window(Window::count(200))
                .minimum_calls(100)
                .error_threshold(50.0)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(5)))
                .half_open_probes(5),
            Preset::Consumer => builder
                .window(Window::time(Duration::from_secs(60), 12))
                .minimum_calls(10)
                .error_threshold(50.0)
                .consecutive_failures(5)
                .open_duration(OpenDuration::exponential(
                    Duration::from_secs(5),
                    Duration::from_secs(60),
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
    /// error and slow-call thresholds never apply, and the breaker never
    /// trips on them.
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
                 minimum_calls ({minimum_calls}): the error and slow-call thresholds never apply"
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
    share_rules: bool,
    calls_per_second: f64,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if !(calls_per_second.is_finite() && calls_per_second > 0.0) {
        return warnings;
    }
    let judged = match window {
        Window::Time { span, buckets } => {
            let calls_in_window = calls_per_second * span.as_secs_f64();
            if share_rules && calls_in_window < minimum_calls as f64 {
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
    if share_rules && judged < MEANINGFUL_CALLS {
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
        assert!(warnings[0].to_string().contains("never apply"));
    }

    #[test]
    fn each_preset_fits_its_traffic_and_warns_outside_it() {
        let low = CircuitBreaker::builder().preset(Preset::LowRateRpc);
        assert_eq!(low.check(0.5), []);
        let api = CircuitBreaker::builder().preset(Preset::HighRateApi);
        assert_eq!(api.check(200.0), []);
        let slow_only = CircuitBreaker::builder()
            .disable_error_threshold()
            .slow_calls(Duration::from_millis(500), 50.0);
        assert!(matches!(
            slow_only.check(1.0)[..],
            [Warning::MinimumNeverReached { .. }]
        ));
        let consumer = CircuitBreaker::builder().preset(Preset::Consumer);
        assert_eq!(consumer.check(0.2), []);
        assert!(api.check(0.1).contains(&Warning::StaleCountWindow {
            calls: 200,
            seconds: 2000.0
        }));
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
