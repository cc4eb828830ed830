//! The Hystrix dashboard's event stream (feature `hystrix-stream`): existing
//! Hystrix dashboards and Turbine watch a seawall service.
//!
//! [`stream`] is an axum handler serving `text/event-stream`: every `delay`
//! (500 ms, or `?delay=` in milliseconds, as Hystrix's servlet takes it) one
//! `data:` frame per command and per thread pool, or a `ping:` frame when
//! the catalogue is empty. [`frames`] gives the same JSON objects for any
//! other transport.
//!
//! # What is filled, and from where
//!
//! A **`HystrixCommand`** per breaker (named after its policy when it has
//! one, `group` the policy's or breaker's name) and per named key of a
//! registry (`group` the registry's name). From the breaker's rolling
//! window:
//!
//! | field | value |
//! |---|---|
//! | `requestCount`, `errorCount`, `errorPercentage` | calls with a verdict, failures + timeouts + rejections, their percentage (short-circuited calls are in neither, as in Hystrix 1.5) |
//! | `rollingCountSuccess`, `rollingCountFailure`, `rollingCountTimeout`, `rollingCountShortCircuited` | the outcomes of the same names |
//! | `rollingCountSemaphoreRejected` | calls refused by a bulkhead or pool (`rollingCountThreadPoolRejected` is 0: seawall counts both as rejected) |
//! | `rollingCountFallbackSuccess`, `rollingCountFallbackFailure`, `rollingCountFallbackRejection` | fallback outcomes |
//! | `rollingCountResponsesFromCache` | answers from the fallback cache |
//! | `rollingCountBadRequests` | calls the classifier ignored (Hystrix's bad requests are not errors either) |
//! | `isCircuitBreakerOpen` | open, half-open or forced open |
//! | `latencyExecute`, `latencyTotal` (and `_mean`) | window percentiles in ms, when the breaker tracks latency; 0 otherwise |
//! | `currentConcurrentExecutionCount`, `rollingMaxConcurrentExecutionCount` | the policy's bulkhead's figures, when it has one: `in_flight` and `max_in_flight_seen` (the most permits handed out at once, never less than the most calls in flight) |
//! | `propertyValue_circuitBreakerRequestVolumeThreshold`, `_SleepWindowInMilliseconds`, `_ErrorThresholdPercentage`, `_ForceOpen`, `_ForceClosed` | the breaker's settings and state (the first open duration for exponential ones) |
//! | `propertyValue_metricsRollingStatisticalWindowInMilliseconds` | the time window's span (0 for a count window) |
//! | `propertyValue_executionIsolationSemaphoreMaxConcurrentRequests` | the bulkhead's limit |
//!
//! Hystrix fields seawall has no counterpart for (`rollingCountEmit`,
//! `rollingCountCollapsedRequests`, `rollingCountExceptionsThrown`,
//! `rollingCountFallbackMissing`, ...) are sent as 0 or false, so that
//! dashboards that expect them still draw.
//!
//! A **`HystrixThreadPool`** per [`BlockingPool`](crate::blocking::BlockingPool):
//! `currentActiveCount` (busy threads), `currentPoolSize`,
//! `currentCorePoolSize` and `currentMaximumPoolSize` (its threads),
//! `currentQueueSize`, `currentCompletedTaskCount` and
//! `rollingCountThreadsExecuted` (calls run, since the start: seawall's
//! pools keep no window), `rollingCountCommandRejections` (refused).
//!
//! ```
//! use axum::{routing::get, Router};
//! use seawall::observe::{hystrix, Catalogue};
//!
//! let catalogue = Catalogue::new();
//! let app: Router = Router::new().route("/hystrix.stream", get(hystrix::stream(catalogue)));
//! # drop(app);
//! ```

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_core::body::Body;
use axum_core::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, Uri};
use serde_json::{json, Map, Value};

use super::{BreakerReport, BulkheadReport, Catalogue, PoolReport, Report};
use crate::circuit_breaker::{OpenDuration, State};
use crate::window::{LatencySnapshot, Window};

/// How often frames go out unless the client asks (`?delay=`).
const DEFAULT_DELAY: Duration = Duration::from_millis(500);
/// The shortest `?delay=` honoured, as Hystrix's servlet.
const MIN_DELAY: Duration = Duration::from_millis(100);

/// An axum handler serving the catalogue as a Hystrix event stream.
pub fn stream(
    catalogue: Catalogue,
) -> impl Fn(Uri) -> Ready<Response> + Clone + Send + Sync + 'static {
    move |uri: Uri| ready(response(catalogue.clone(), delay_of(&uri)))
}

fn delay_of(uri: &Uri) -> Duration {
    uri.query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("delay="))
        .and_then(|millis| millis.parse().ok())
        .map_or(DEFAULT_DELAY, |millis| {
            Duration::from_millis(millis).max(MIN_DELAY)
        })
}

fn response(catalogue: Catalogue, delay: Duration) -> Response {
    let frames = futures_util::stream::unfold(
        (catalogue, tokio::time::interval(delay)),
        |(catalogue, mut ticks)| async move {
            ticks.tick().await;
            let frames = frames(&catalogue.report());
            let text = if frames.is_empty() {
                "ping: \n\n".to_owned()
            } else {
                frames
                    .iter()
                    .map(|frame| format!("data: {frame}\n\n"))
                    .collect()
            };
            Some((Ok::<_, Infallible>(Bytes::from(text)), (catalogue, ticks)))
        },
    );
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream;charset=UTF-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The `HystrixCommand` and `HystrixThreadPool` objects of a report, each a
/// JSON object on one line, commands first.
pub fn frames(report: &Report) -> Vec<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let mut frames = Vec::new();
    for breaker in &report.breakers {
        let bulkhead = breaker.policy.as_ref().and_then(|policy| {
            report
                .bulkheads
                .iter()
                .find(|b| b.policy.as_ref() == Some(policy))
        });
        let name = breaker.policy.as_ref().unwrap_or(&breaker.name);
        frames.push(command(breaker, name, name, bulkhead, now));
    }
    for registry in &report.registries {
        for key in &registry.top {
            frames.push(command(key, &key.name, &registry.name, None, now));
        }
    }
    frames.extend(report.pools.iter().map(|pool| thread_pool(pool, now)));
    frames.into_iter().map(|frame| frame.to_string()).collect()
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Hystrix's percentile object, in milliseconds.
fn percentiles(latency: Option<&LatencySnapshot>) -> Value {
    let at = |q: f64| latency.map_or(0, |latency| millis(latency.quantile(q)));
    json!({
        "0": at(0.0), "25": at(0.25), "50": at(0.5), "75": at(0.75), "90": at(0.9),
        "95": at(0.95), "99": at(0.99), "99.5": at(0.995), "100": latency.map_or(0, |l| millis(l.max())),
    })
}

fn command(
    breaker: &BreakerReport,
    name: &str,
    group: &str,
    bulkhead: Option<&BulkheadReport>,
    now: u64,
) -> Value {
    let counts = &breaker.window.counts;
    let latency = breaker.window.latency.as_ref();
    let mean = latency.map_or(0, |latency| millis(latency.mean()));
    let settings = &breaker.settings;
    let sleep_window = match settings.open_duration {
        OpenDuration::Exponential { initial, .. } => initial,
        OpenDuration::Fixed(duration) => duration,
    };
    let window_millis = match settings.window {
        Window::Time { span, .. } => millis(span),
        Window::Count { .. } => 0,
    };
    let (in_flight, max_in_flight, max_concurrent) = bulkhead.map_or((0, 0, 0), |bulkhead| {
        let figures = &bulkhead.figures;
        (
            figures.in_flight,
            figures.max_in_flight_seen,
            figures.max_concurrent,
        )
    });
    let mut fields = Map::new();
    let mut put = |key: &str, value: Value| {
        fields.insert(key.to_owned(), value);
    };
    put("type", json!("HystrixCommand"));
    put("name", json!(name));
    put("group", json!(group));
    put("currentTime", json!(now));
    put(
        "isCircuitBreakerOpen",
        json!(!matches!(
            breaker.state,
            State::Closed | State::ForcedClosed
        )),
    );
    put(
        "errorPercentage",
        json!(counts.error_percentage().unwrap_or(0.0).round() as u64),
    );
    put("errorCount", json!(counts.errors()));
    put("requestCount", json!(counts.calls()));
    for (field, value) in [
        ("rollingCountBadRequests", counts.ignored),
        ("rollingCountCollapsedRequests", 0),
        ("rollingCountEmit", 0),
        ("rollingCountExceptionsThrown", 0),
        ("rollingCountFailure", counts.failure),
        ("rollingCountFallbackEmit", 0),
        ("rollingCountFallbackFailure", counts.fallback_failure),
        ("rollingCountFallbackMissing", 0),
        ("rollingCountFallbackRejection", counts.fallback_rejected),
        ("rollingCountFallbackSuccess", counts.fallback_success),
        ("rollingCountResponsesFromCache", counts.cache_hit),
        ("rollingCountSemaphoreRejected", counts.rejected),
        ("rollingCountShortCircuited", counts.short_circuited),
        ("rollingCountSuccess", counts.success),
        ("rollingCountThreadPoolRejected", 0),
        ("rollingCountTimeout", counts.timeout),
    ] {
        put(field, json!(value));
    }
    put("currentConcurrentExecutionCount", json!(in_flight));
    put("rollingMaxConcurrentExecutionCount", json!(max_in_flight));
    put("latencyExecute_mean", json!(mean));
    put("latencyExecute", percentiles(latency));
    put("latencyTotal_mean", json!(mean));
    put("latencyTotal", percentiles(latency));
    put(
        "propertyValue_circuitBreakerRequestVolumeThreshold",
        json!(settings.minimum_calls),
    );
    put(
        "propertyValue_circuitBreakerSleepWindowInMilliseconds",
        json!(millis(sleep_window)),
    );
    put(
        "propertyValue_circuitBreakerErrorThresholdPercentage",
        json!(settings.error_threshold.unwrap_or(100.0).round() as u64),
    );
    put(
        "propertyValue_circuitBreakerForceOpen",
        json!(breaker.state == State::ForcedOpen),
    );
    put(
        "propertyValue_circuitBreakerForceClosed",
        json!(breaker.state == State::ForcedClosed),
    );
    put("propertyValue_circuitBreakerEnabled", json!(true));
    put(
        "propertyValue_executionIsolationStrategy",
        json!("SEMAPHORE"),
    );
    put(
        "propertyValue_executionIsolationThreadTimeoutInMilliseconds",
        json!(0),
    );
    put("propertyValue_executionTimeoutInMilliseconds", json!(0));
    put(
        "propertyValue_executionIsolationThreadInterruptOnTimeout",
        json!(false),
    );
    put(
        "propertyValue_executionIsolationThreadPoolKeyOverride",
        Value::Null,
    );
    put(
        "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests",
        json!(max_concurrent),
    );
    put(
        "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests",
        json!(0),
    );
    put(
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds",
        json!(window_millis),
    );
    put("propertyValue_requestCacheEnabled", json!(false));
    put("propertyValue_requestLogEnabled", json!(false));
    put("reportingHosts", json!(1));
    put("threadPool", json!(group));
    Value::Object(fields)
}

fn thread_pool(pool: &PoolReport, now: u64) -> Value {
    let figures = &pool.figures;
    json!({
        "type": "HystrixThreadPool",
        "name": pool.name,
        "currentTime": now,
        "currentActiveCount": figures.busy,
        "currentCompletedTaskCount": figures.completed,
        "currentCorePoolSize": figures.threads,
        "currentLargestPoolSize": figures.threads,
        "currentMaximumPoolSize": figures.threads,
        "currentPoolSize": figures.threads_alive,
        "currentQueueSize": figures.queued,
        "currentTaskCount": figures.completed + figures.busy as u64 + figures.queued as u64,
        "rollingCountThreadsExecuted": figures.completed,
        "rollingMaxActiveThreads": figures.busy,
        "rollingCountCommandRejections": figures.rejected,
        "propertyValue_queueSizeRejectionThreshold": figures.queued,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": 0,
        "reportingHosts": 1,
    })
}
