//! Futures polled again after a panic, and every permit accounted for
//! afterwards.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::policy::Policy;
use tower::{service_fn, Layer, Service, ServiceExt};

/// A service whose call panics for request 0, and answers any other at once.
fn panics_on_zero() -> impl Service<
    u32,
    Response = u32,
    Error = std::io::Error,
    Future = std::future::Ready<Result<u32, std::io::Error>>,
> + Clone {
    service_fn(|n: u32| {
        assert_ne!(n, 0, "the inner call panicked");
        std::future::ready(Ok(n))
    })
}

/// Polls once, catching a panic: `Err` if it panicked.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Result<Poll<F::Output>, ()> {
    let mut cx = Context::from_waker(Waker::noop());
    catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *future).poll(&mut cx))).map_err(|_| ())
}

/// The queued call's inner `call` panics when its permit comes; polling it
/// again must not mint a second permit.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_queued_call_polled_again_after_its_call_panicked_takes_no_second_permit() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent(1)
        .queue(4, Duration::from_secs(1))
        .build()
        .unwrap();
    let mut service = bulkhead.layer().layer(panics_on_zero());
    let held = bulkhead.layer().layer(service_fn(|_: ()| {
        std::future::pending::<Result<(), std::io::Error>>()
    }));
    let mut first = Box::pin(held.oneshot(()));
    assert!(poll_once(&mut first).unwrap().is_pending());
    let mut queued = Box::pin(service.ready().await.unwrap().call(0));
    assert!(poll_once(&mut queued).unwrap().is_pending());
    drop(first);
    assert!(poll_once(&mut queued).is_err(), "the inner call panicked");
    for _ in 0..3 {
        let _ = poll_once(&mut queued);
    }
    drop(queued);
    assert_eq!(bulkhead.figures().in_flight, 0);
    assert_eq!(service.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(bulkhead.figures().in_flight, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_queued_policy_call_polled_again_after_its_call_panicked_takes_no_second_permit() {
    let policy = Policy::builder()
        .name("queue")
        .bulkhead(
            Bulkhead::builder()
                .max_concurrent(1)
                .queue(4, Duration::from_secs(1)),
        )
        .build()
        .unwrap();
    let mut service = policy.layer(panics_on_zero());
    let mut held = policy.layer(service_fn(|_: u32| {
        std::future::pending::<Result<u32, std::io::Error>>()
    }));
    let mut first = Box::pin(held.ready().await.unwrap().call(1));
    assert!(poll_once(&mut first).unwrap().is_pending());
    let mut queued = Box::pin(service.ready().await.unwrap().call(0));
    assert!(poll_once(&mut queued).unwrap().is_pending());
    drop(first);
    assert!(poll_once(&mut queued).is_err(), "the inner call panicked");
    for _ in 0..3 {
        let _ = poll_once(&mut queued);
    }
    drop(queued);
    assert_eq!(policy.bulkhead().unwrap().in_flight, 0);
    assert_eq!(service.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(policy.bulkhead().unwrap().in_flight, 0);
}
