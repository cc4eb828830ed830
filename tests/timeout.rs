//! Deadlines, with tokio's clock paused: they fire exactly.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use seawall::timeout::TimeoutLayer;
use seawall::{Clock, Error};
use tokio::time::{advance, sleep, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

async fn takes(d: Duration) -> Result<&'static str, &'static str> {
    sleep(d).await;
    Ok("done")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn fires_exactly_at_the_deadline() {
    let service = TimeoutLayer::new(ms(1_000)).layer(service_fn(takes));

    let start = Instant::now();
    let err = service.clone().oneshot(ms(2_000)).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(1_000));
    match err {
        Error::Timeout(elapsed) => assert_eq!(elapsed.after(), ms(1_000)),
        other => panic!("{other:?}"),
    }

    let start = Instant::now();
    assert_eq!(service.oneshot(ms(999)).await.unwrap(), "done");
    assert_eq!(start.elapsed(), ms(999));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_call_not_from_the_first_poll() {
    let mut service = TimeoutLayer::new(ms(1_000)).layer(service_fn(takes));
    let call = service.ready().await.unwrap().call(ms(5_000));
    advance(ms(600)).await;
    let start = Instant::now();
    assert!(call.await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), ms(400));

    // Not polled until after its deadline: it fails at its first poll.
    let call = service.ready().await.unwrap().call(ms(5_000));
    advance(ms(1_500)).await;
    let start = Instant::now();
    assert!(call.await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_request_deadline_is_capped_by_the_layer() {
    let service = TimeoutLayer::new(ms(1_000))
        .per_request_deadline(|budget: &(Duration, Option<Duration>)| budget.1)
        .layer(service_fn(
            |(takes_for, _): (Duration, Option<Duration>)| takes(takes_for),
        ));

    for (own, expected) in [
        (Some(ms(300)), ms(300)),
        (Some(ms(5_000)), ms(1_000)),
        (None, ms(1_000)),
    ] {
        let start = Instant::now();
        match service
            .clone()
            .oneshot((ms(10_000), own))
            .await
            .unwrap_err()
        {
            Error::Timeout(elapsed) => assert_eq!(elapsed.after(), expected),
            other => panic!("{other:?}"),
        }
        assert_eq!(start.elapsed(), expected, "request deadline {own:?}");
    }
}

#[test]
fn an_answer_ready_at_once_needs_no_timer() {
    // No tokio runtime here: arming a timer would panic.
    let mut service = TimeoutLayer::new(ms(10))
        .clock(Clock::coarse())
        .layer(service_fn(|x: u32| {
            std::future::ready(Ok::<_, Infallible>(x))
        }));
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let call = pin!(service.call(7));
    assert!(matches!(call.poll(&mut cx), Poll::Ready(Ok(7))));
}

#[tokio::test(start_paused = true)]
async fn the_inner_future_is_dropped_when_the_deadline_fires() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let inner = {
        let dropped = dropped.clone();
        service_fn(move |_: ()| {
            let guard = Guard(dropped.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Result<(), Infallible>>().await
            }
        })
    };
    let err = TimeoutLayer::new(ms(50))
        .layer(inner)
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_untouched() {
    let service =
        TimeoutLayer::new(ms(50)).layer(service_fn(|_: ()| async { Err::<(), _>("boom") }));
    assert_eq!(
        service.oneshot(()).await.unwrap_err().into_inner(),
        Some("boom")
    );
}
