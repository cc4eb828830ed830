//! Faults on demand, in paused time: what each fault does to a call and to
//! the service below, switching at runtime, and a Policy's breaker tripping
//! on injected errors and closing again once they stop.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, State};
use seawall::fault::{FaultKind, FaultLayer, Faults};
use seawall::policy::Policy;
use seawall::timeout::TimeoutLayer;
use seawall::{BoxError, Error};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A dependency that answers its request after `delay`, counting calls
/// (made) and answers (finished).
fn dependency(
    delay: Duration,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
) {
    let (calls, answers) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, a) = (Arc::clone(&calls), Arc::clone(&answers));
    let service = service_fn(move |n: u32| {
        c.fetch_add(1, SeqCst);
        let a = Arc::clone(&a);
        async move {
            tokio::time::sleep(delay).await;
            a.fetch_add(1, SeqCst);
            Ok::<_, BoxError>(n)
        }
    });
    (calls, answers, service)
}

fn injected() -> Result<u32, BoxError> {
    Err("injected".into())
}

fn is_injected(result: &Result<u32, Error<BoxError>>) -> bool {
    matches!(result, Err(Error::Inner(e)) if e.to_string() == "injected")
}

#[tokio::test(start_paused = true)]
async fn each_fault_does_what_it_says_to_the_caller_and_to_the_service_below() {
    let (calls, answers, slow) = dependency(ms(10));
    let only = |kind: FaultKind| {
        let faults = Faults::builder().outcome(0.0, injected).build().unwrap();
        faults.set_probability(kind, 1.0).unwrap();
        faults
    };

    // An outcome: the service is not called.
    let service = FaultLayer::new(only(FaultKind::Outcome)).layer(slow.clone());
    assert!(is_injected(&service.oneshot(1).await));
    assert_eq!(calls.load(SeqCst), 0);

    // An abort: the request goes out, its answer is lost.
    let service = FaultLayer::new(only(FaultKind::Abort)).layer(slow.clone());
    assert!(is_injected(&service.oneshot(2).await));
    assert_eq!((calls.load(SeqCst), answers.load(SeqCst)), (1, 0));

    // A hang: nothing, until a timeout above ends it; nothing is called.
    let hanging = FaultLayer::new(only(FaultKind::Hang)).layer(slow.clone());
    let service = TimeoutLayer::new(ms(500)).layer(hanging);
    let started = Instant::now();
    assert!(matches!(service.oneshot(3).await, Err(Error::Timeout(_))));
    assert_eq!(started.elapsed(), ms(500));
    assert_eq!(calls.load(SeqCst), 1);

    // Latency: the real answer, the delay later.
    let faults = Faults::builder().latency(1.0, ms(300)).build().unwrap();
    let service = FaultLayer::new(faults.clone()).layer(slow);
    let started = Instant::now();
    assert_eq!(service.oneshot(4).await.unwrap(), 4);
    assert_eq!(started.elapsed(), ms(310));
    assert_eq!((calls.load(SeqCst), answers.load(SeqCst)), (2, 1));
    assert_eq!(faults.figures().latencies, 1);
}

#[tokio::test(start_paused = true)]
async fn switches_take_effect_at_the_next_call_and_only_selected_requests_draw() {
    let (calls, _, fast) = dependency(Duration::ZERO);
    let faults = Faults::builder().outcome(1.0, injected).build().unwrap();
    let mut service = FaultLayer::new(faults.clone())
        .only(|n: &u32| n.is_multiple_of(2))
        .layer(fast);
    assert!(is_injected(&service.ready().await.unwrap().call(2).await));
    assert_eq!(service.ready().await.unwrap().call(3).await.unwrap(), 3);
    faults.set_enabled(false);
    assert_eq!(service.ready().await.unwrap().call(4).await.unwrap(), 4);
    faults.set_enabled(true);
    faults.set_probability(FaultKind::Outcome, 0.0).unwrap();
    assert_eq!(service.ready().await.unwrap().call(6).await.unwrap(), 6);
    faults.set_probability(FaultKind::Outcome, 1.0).unwrap();
    assert!(is_injected(&service.ready().await.unwrap().call(8).await));
    // Draws: 2, 6 and 8 (3 was not selected, 4 came while switched off).
    let seen = faults.figures();
    assert_eq!((seen.calls, seen.outcomes), (3, 2));
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_policys_breaker_trips_on_injected_errors_and_closes_when_they_stop() {
    let (calls, _, fast) = dependency(ms(1));
    let faults = Faults::builder()
        .seed(3)
        .outcome(0.5, injected)
        .build()
        .unwrap();
    let policy = Policy::builder()
        .name("checkout")
        .timeout(ms(100))
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(5)
                .open_duration(OpenDuration::Fixed(ms(1_000))),
        )
        .faults(faults.clone())
        .build()
        .unwrap();
    let mut service = policy.layer(fast);
    let mut refused = 0;
    for n in 0..200 {
        if let Err(Error::CircuitOpen(_)) = service.ready().await.unwrap().call(n).await {
            refused += 1;
        }
    }
    assert_eq!(policy.breaker().state(), State::Open);
    assert!(refused > 0);
    // Every call that reached the fault layer was counted, as the
    // dependency's success or failure.
    let counts = policy.breaker().lifetime_counts();
    let seen = faults.figures();
    assert_eq!(counts.failure, seen.outcomes);
    assert_eq!(counts.success, seen.calls - seen.outcomes);
    assert_eq!(counts.success, calls.load(SeqCst));

    faults.set_enabled(false);
    tokio::time::advance(ms(1_000)).await;
    for n in 0..10 {
        assert_eq!(service.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    assert_eq!(policy.breaker().state(), State::Closed);
}

/// A Policy's fault stage sits under its timeout: an injected hang is cut
/// and counted as the dependency's timeout; only the calls the stage's
/// layer selects get faults.
#[tokio::test(start_paused = true)]
async fn a_policys_fault_stage_is_cut_by_its_timeout_and_selects_its_calls() {
    let (calls, _, fast) = dependency(ms(1));
    let faults = Faults::builder().hang(1.0).build().unwrap();
    let policy = Policy::builder()
        .timeout(ms(100))
        .faults(FaultLayer::new(faults.clone()).only(|n: &u32| *n >= 100))
        .build()
        .unwrap();
    let service = policy.layer(fast);
    assert_eq!(service.clone().oneshot(7).await.unwrap(), 7, "not selected");
    let started = Instant::now();
    let hung = service.clone().oneshot(100).await;
    assert!(matches!(hung, Err(Error::Timeout(_))), "{hung:?}");
    assert_eq!(started.elapsed(), ms(100));
    faults.set_enabled(false);
    assert_eq!(service.oneshot(100).await.unwrap(), 100, "switched off");
    let counts = policy.breaker().lifetime_counts();
    assert_eq!((counts.success, counts.timeout), (2, 1));
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(faults.figures().hangs, 1);
}
