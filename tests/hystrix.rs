//! The Hystrix event stream, read back as a dashboard reads it: SSE frames
//! of JSON objects, with exact counts in paused time.

use std::time::Duration;

use axum::body::Body;
use axum::{routing::get, Router};
use futures::StreamExt;
use seawall::blocking::BlockingPool;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::classify::Verdict;
use seawall::observe::{hystrix, Catalogue};
use seawall::policy::Policy;
use seawall::window::Window;
use seawall::Clock;
use serde_json::Value;
use tower::ServiceExt;

/// One tick's frames: every `data:` line's JSON, in order.
async fn next_tick(
    body: &mut (impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin),
) -> Vec<Value> {
    let chunk = body.next().await.unwrap().unwrap();
    let text = std::str::from_utf8(&chunk).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let json = frame
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{frame:?}"));
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

/// Ten calls of 100 ms each, `failures` of them failed.
async fn calls(breaker: &CircuitBreaker, successes: u32, failures: u32) {
    for n in 0..successes + failures {
        let permit = breaker.try_acquire().unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        permit.record(if n < successes {
            Verdict::Success
        } else {
            Verdict::Failure
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_dashboard_reads_commands_and_thread_pools() {
    let policy = Policy::builder()
        .name("checkout")
        .clock(Clock::tokio())
        .circuit_breaker(
            CircuitBreaker::builder()
                .window(Window::time(Duration::from_secs(60), 10))
                .minimum_calls(20)
                .open_duration(OpenDuration::Fixed(Duration::from_secs(7)))
                .track_latency(true),
        )
        .bulkhead(Bulkhead::builder().max_concurrent(12))
        .build()
        .unwrap();
    let pool = BlockingPool::builder()
        .name("legacy")
        .threads(3)
        .queue(5)
        .build()
        .unwrap();
    let catalogue = Catalogue::new();
    catalogue.add(&policy).add(&pool);
    let app: Router = Router::new().route("/hystrix.stream", get(hystrix::stream(catalogue)));

    calls(policy.breaker(), 7, 3).await;
    let response = app
        .oneshot(
            http::Request::get("/hystrix.stream?delay=1000")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream;charset=UTF-8"
    );
    let mut body = response.into_body().into_data_stream();

    let frames = next_tick(&mut body).await;
    assert_eq!(frames.len(), 2);
    let command = &frames[0];
    assert_eq!(command["type"], "HystrixCommand");
    assert_eq!(command["name"], "checkout");
    assert_eq!(command["group"], "checkout");
    assert_eq!(command["requestCount"], 10);
    assert_eq!(command["errorCount"], 3);
    assert_eq!(command["errorPercentage"], 30);
    assert_eq!(command["rollingCountSuccess"], 7);
    assert_eq!(command["rollingCountFailure"], 3);
    assert_eq!(command["rollingCountShortCircuited"], 0);
    assert_eq!(command["isCircuitBreakerOpen"], false);
    assert_eq!(
        command["propertyValue_circuitBreakerRequestVolumeThreshold"],
        20
    );
    assert_eq!(
        command["propertyValue_circuitBreakerSleepWindowInMilliseconds"],
        7000
    );
    assert_eq!(
        command["propertyValue_circuitBreakerErrorThresholdPercentage"],
        50
    );
    assert_eq!(
        command["propertyValue_metricsRollingStatisticalWindowInMilliseconds"],
        60000
    );
    assert_eq!(
        command["propertyValue_executionIsolationSemaphoreMaxConcurrentRequests"],
        12
    );
    // Every call took 100 ms; percentiles are within 6.25%.
    for percentile in ["0", "50", "99", "100"] {
        let millis = command["latencyExecute"][percentile].as_u64().unwrap();
        assert!((94..=106).contains(&millis), "p{percentile}: {millis}");
    }
    let pool = &frames[1];
    assert_eq!(pool["type"], "HystrixThreadPool");
    assert_eq!(pool["name"], "legacy");
    assert_eq!(pool["currentPoolSize"], 3);
    assert_eq!(pool["currentQueueSize"], 0);

    // The next frame, a second later, after the breaker was forced open and
    // refused two calls.
    policy.breaker().force_open();
    for _ in 0..2 {
        assert!(policy.breaker().try_acquire().is_err());
    }
    let frames = next_tick(&mut body).await;
    let command = &frames[0];
    assert_eq!(command["isCircuitBreakerOpen"], true);
    assert_eq!(command["propertyValue_circuitBreakerForceOpen"], true);
    assert_eq!(command["rollingCountShortCircuited"], 2);
    assert_eq!(command["requestCount"], 10);
}

#[tokio::test(start_paused = true)]
async fn an_empty_catalogue_pings() {
    let app: Router = Router::new().route("/s", get(hystrix::stream(Catalogue::new())));
    let response = app
        .oneshot(http::Request::get("/s").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body().into_data_stream();
    for _ in 0..3 {
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"ping: \n\n");
    }
}
