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

/// A client's own timer for the caller's deadline (tonic's channel enforcing
/// `grpc-timeout`) may fire before seawall's: its error is the caller's
/// deadline all the same, and is reported as one. An error before the
/// deadline stays the call's own.
#[tokio::test(start_paused = true)]
async fn an_inner_timer_for_the_callers_deadline_is_the_callers_deadline() {
    use seawall::classify::{ByKind, Classify, Verdict};
    use seawall::policy::Policy;

    // Fails with its own "timeout expired" when the caller's budget ends,
    // or at once when told to.
    let client = service_fn(|(own, fail_now): (Duration, bool)| async move {
        if !fail_now {
            sleep(own).await;
        }
        Err::<(), _>("the client's own timer expired")
    });
    let own = |(own, _): &(Duration, bool)| Some(*own);
    let timeout = TimeoutLayer::new(ms(5_000))
        .per_request_deadline(own)
        .layer(client);
    let policy = Policy::builder()
        .name("client")
        .timeout(ms(5_000))
        .per_request_deadline(own)
        .build()
        .unwrap();
    let guarded = policy.layer(client);

    let error = timeout.clone().oneshot((ms(300), false)).await.unwrap_err();
    assert!(
        matches!(&error, Error::Timeout(e) if e.is_callers_deadline()),
        "{error:?}"
    );
    let error = timeout.oneshot((ms(300), true)).await.unwrap_err();
    assert!(matches!(&error, Error::Inner(_)), "{error:?}");

    let start = Instant::now();
    let error = guarded.clone().oneshot((ms(300), false)).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(300));
    assert_eq!(
        ByKind.classify(&Err::<(), _>(error)),
        Verdict::CallerDeadline
    );
    guarded.oneshot((ms(300), true)).await.unwrap_err();
    let lifetime = policy.breaker().lifetime().counts;
    assert_eq!((lifetime.caller_deadline, lifetime.failure), (1, 1));
}

/// A server's own enforcement of the caller's deadline (tonic's, for
/// `grpc-timeout`) drops the call rather than letting seawall answer: a call
/// dropped once the caller's deadline has passed is counted as the
/// caller's deadline, and one dropped before it as configured
/// (not counted, by default).
#[tokio::test(start_paused = true)]
async fn a_call_dropped_after_the_callers_deadline_counts_as_the_callers_deadline() {
    use seawall::policy::Policy;

    let policy = Policy::builder()
        .name("server")
        .clock(Clock::tokio())
        .timeout(ms(5_000))
        .per_request_deadline(|own: &Duration| Some(*own))
        .build()
        .unwrap();
    let mut server = policy.layer(service_fn(|_: Duration| {
        std::future::pending::<Result<(), Infallible>>()
    }));
    for (dropped_after, callers) in [(ms(100), 0), (ms(300), 1), (ms(400), 2)] {
        let call = server.ready().await.unwrap().call(ms(300));
        advance(dropped_after).await;
        drop(call);
        let lifetime = policy.breaker().lifetime().counts;
        assert_eq!(
            (lifetime.caller_deadline, lifetime.calls()),
            (callers, 0),
            "dropped after {dropped_after:?}"
        );
    }
}
