//! Refusals are cooperative: a caller looping over a service that refuses
//! at once (an open breaker, a full bulkhead, a Policy refusing) still lets
//! the runtime's other tasks run, as tokio's own primitives do. Without it,
//! tasks that loop on refusals starve the tasks that hold the bulkhead's
//! slots, so the slots never come back and the breaker's probes are refused
//! in turn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use seawall::bulkhead::{Bulkhead, BulkheadLayer};
use seawall::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use seawall::policy::Policy;
use seawall::Error;
use tower::{service_fn, Layer, Service, ServiceExt};

const CALLS: usize = 10_000;

#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}
seawall::leaf_error!(Failed);

fn answering() -> impl Service<u32, Response = u32, Error = Failed, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move { Ok::<_, Failed>(n) })
}

/// Loops up to `CALLS` refused calls on a current-thread runtime while
/// another task waits its turn, which must come before the loop ends.
async fn others_run_between_refusals<S>(service: S)
where
    S: Service<u32, Response = u32, Error = Error<Failed>> + Clone,
{
    let ran = Arc::new(AtomicBool::new(false));
    let other = tokio::spawn({
        let ran = Arc::clone(&ran);
        async move { ran.store(true, Ordering::Relaxed) }
    });
    let mut before = CALLS;
    for call in 0..CALLS {
        if ran.load(Ordering::Relaxed) {
            before = call;
            break;
        }
        let refused = service.clone().oneshot(1).await;
        assert!(refused.is_err(), "every call is refused: {refused:?}");
    }
    other.await.unwrap();
    assert!(
        before < CALLS,
        "the other task waited for all {CALLS} refusals"
    );
}

#[tokio::test]
async fn an_open_breaker_lets_other_tasks_run() {
    let breaker = CircuitBreaker::builder().build().unwrap();
    breaker.force_open();
    let service = CircuitBreakerLayer::new(breaker).layer(answering());
    others_run_between_refusals(service).await;
}

#[tokio::test]
async fn a_full_bulkhead_lets_other_tasks_run() {
    let layer = BulkheadLayer::new(Bulkhead::builder().max_concurrent(1).build().unwrap());
    let held = layer.layer(service_fn(|n: u32| async move {
        std::future::pending::<()>().await;
        Ok::<_, Failed>(n)
    }));
    // One call holds the only slot for ever.
    let holder = tokio::spawn(held.clone().oneshot(0));
    tokio::task::yield_now().await;
    others_run_between_refusals(held).await;
    holder.abort();
}

#[tokio::test]
async fn a_refusing_policy_lets_other_tasks_run() {
    let policy = Policy::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    policy.breaker().force_open();
    others_run_between_refusals(policy.layer(answering())).await;
}
