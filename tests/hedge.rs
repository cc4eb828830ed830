//! Hedged requests in paused time: the p99 of a service with a slow tail
//! cut, hedges bounded by their budget and by the bulkhead below, the
//! loser cancelled, failures waited out.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::hedge::{Hedge, HedgeLayer};
use seawall::policy::Policy;
use seawall::retry::RetryBudget;
use seawall::BoxError;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts futures dropped before they finished.
struct Cancelled(Arc<AtomicU64>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, SeqCst);
        }
    }
}

/// A replica whose every `slow_every`-th call takes a second and the rest
/// 20 ms; it counts calls and calls dropped unfinished.
#[allow(clippy::type_complexity)]
fn slow_tail(
    slow_every: u64,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
) {
    let (calls, cancelled) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (seen, dropped) = (Arc::clone(&calls), Arc::clone(&cancelled));
    let service = service_fn(move |n: u32| {
        let call = seen.fetch_add(1, SeqCst);
        let guard = Cancelled(Arc::clone(&dropped), false);
        async move {
            let mut guard = guard;
            let delay = if call.is_multiple_of(slow_every) {
                ms(1000)
            } else {
                ms(20)
            };
            tokio::time::sleep(delay).await;
            guard.1 = true;
            Ok::<_, BoxError>(n)
        }
    });
    (calls, cancelled, service)
}

async fn p99<S>(service: S, requests: u32) -> Duration
where
    S: Service<u32, Response = u32> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut latencies = Vec::new();
    for n in 0..requests {
        let started = Instant::now();
        service.clone().oneshot(n).await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

#[tokio::test(start_paused = true)]
async fn hedging_cuts_the_p99_of_a_slow_tail_and_cancels_the_loser() {
    let (_, _, replica) = slow_tail(20);
    assert_eq!(
        p99(replica, 1000).await,
        ms(1000),
        "one call in 20 takes a second"
    );

    let (calls, cancelled, replica) = slow_tail(20);
    let hedge = Hedge::builder().delay(ms(50)).build().unwrap();
    let hedged = HedgeLayer::new(hedge.clone()).layer(replica);
    assert_eq!(
        p99(hedged, 1000).await,
        ms(70),
        "hedged at 50 ms, answered 20 ms later"
    );
    let figures = hedge.figures();
    assert_eq!(figures.requests, 1000);
    assert_eq!(calls.load(SeqCst), 1000 + figures.hedged);
    assert_eq!(
        figures.hedged, figures.hedge_won,
        "every hedge beat a one-second call"
    );
    assert!((45..=55).contains(&figures.hedged), "{figures:?}");
    assert_eq!(
        cancelled.load(SeqCst),
        figures.hedged,
        "each slow call was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn hedges_never_exceed_their_budget() {
    // Every call is slow: each request would be hedged.
    let (calls, _, replica) = slow_tail(1);
    let budget = RetryBudget::builder()
        .ratio(0.05)
        .min_per_second(0)
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let hedge = Hedge::builder()
        .delay(ms(50))
        .budget(budget.clone())
        .build()
        .unwrap();
    let hedged = HedgeLayer::new(hedge.clone()).layer(replica);
    for n in 0..200 {
        hedged.clone().oneshot(n).await.unwrap();
    }
    let figures = hedge.figures();
    assert_eq!(figures.hedged, 10, "5% of 200 requests");
    assert_eq!(figures.budget_refused, 190);
    assert_eq!(calls.load(SeqCst), 210);
    assert_eq!(budget.figures().withdrawn, 10);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_refuses_the_hedge_and_the_first_attempt_answers() {
    let (calls, _, replica) = slow_tail(1);
    let policy = Policy::builder()
        .bulkhead(Bulkhead::builder().max_concurrent(1))
        .build()
        .unwrap();
    let hedge = Hedge::builder().delay(ms(50)).build().unwrap();
    let service = HedgeLayer::new(hedge.clone()).layer(policy.layer(replica));
    let started = Instant::now();
    assert_eq!(service.oneshot(7).await.unwrap(), 7);
    assert_eq!(started.elapsed(), ms(1000));
    assert_eq!(calls.load(SeqCst), 1, "the hedge never reached the replica");
    let figures = hedge.figures();
    assert_eq!(
        (figures.hedged, figures.hedge_refused, figures.hedge_won),
        (1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_waits_for_the_other_and_a_fast_failure_is_not_hedged() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&calls);
    // The first attempt fails after 100 ms; the hedge succeeds at 50 + 80.
    let replica = service_fn(move |n: u32| {
        let call = seen.fetch_add(1, SeqCst);
        async move {
            if call == 0 {
                tokio::time::sleep(ms(100)).await;
                Err::<u32, BoxError>("reset".into())
            } else {
                tokio::time::sleep(ms(80)).await;
                Ok(n)
            }
        }
    });
    let hedge = Hedge::builder().delay(ms(50)).build().unwrap();
    let service = HedgeLayer::new(hedge.clone()).layer(replica);
    let started = Instant::now();
    assert_eq!(service.oneshot(1).await.unwrap(), 1);
    assert_eq!(started.elapsed(), ms(130));

    let failing = service_fn(|_: u32| async { Err::<u32, BoxError>("refused".into()) });
    let hedge = Hedge::builder().delay(ms(50)).build().unwrap();
    let result = HedgeLayer::new(hedge.clone())
        .layer(failing)
        .oneshot(1)
        .await;
    assert!(result.is_err());
    assert_eq!(hedge.figures().hedged, 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_go_to_another_service_and_only_for_selected_requests() {
    let (primary_calls, _, primary) = slow_tail(1);
    let (other_calls, _, other) = slow_tail(1_000_000);
    // The other replica's first call would be slow: use it up.
    other_calls.fetch_add(1, SeqCst);
    let hedge = Hedge::builder().delay(ms(50)).build().unwrap();
    let service = HedgeLayer::new(hedge.clone())
        .only(|n: &u32| *n != 0)
        .to(other)
        .layer(primary);
    let started = Instant::now();
    assert_eq!(service.clone().oneshot(1).await.unwrap(), 1);
    assert_eq!(started.elapsed(), ms(70));
    assert_eq!(other_calls.load(SeqCst), 2);
    let started = Instant::now();
    assert_eq!(service.oneshot(0).await.unwrap(), 0);
    assert_eq!(started.elapsed(), ms(1000), "not selected: not hedged");
    assert_eq!(primary_calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_percentile_delay_follows_the_breakers_latency() {
    let breaker = CircuitBreaker::builder()
        .track_latency(true)
        .build()
        .unwrap();
    let hedge = Hedge::builder()
        .percentile(&breaker, 0.95, 50, ms(200))
        .build()
        .unwrap();
    assert_eq!(
        hedge.delay(),
        ms(200),
        "too few calls measured: the fallback delay"
    );
    let (_, _, replica) = slow_tail(1_000_000);
    let measured = Policy::builder().circuit_breaker(breaker).build().unwrap();
    let service = measured.layer(replica);
    // The first call takes a second; 99 more take 20 ms.
    for n in 0..100 {
        service.clone().oneshot(n).await.unwrap();
    }
    tokio::time::advance(ms(150)).await;
    let delay = hedge.delay();
    assert!(
        delay > ms(15) && delay < ms(30),
        "p95 of 20 ms calls: {delay:?}"
    );
    let error = Hedge::builder()
        .percentile(measured.breaker(), 1.5, 1, ms(1))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "percentile");
}
