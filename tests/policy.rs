//! The Policy and its fallbacks, with tokio's clock paused.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, State};
use seawall::classify::{ByKind, Classify, Verdict};
#[cfg(feature = "cache")]
use seawall::fallback::FallbackCache;
use seawall::fallback::{Cause, Causes, Fallback, Provenance};
use seawall::policy::Policy;
use seawall::Error;
use tokio::time::{advance, sleep, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Request {
    tenant: &'static str,
    item: u32,
    /// How the upstream treats this call.
    act: Act,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Act {
    Answer,
    Fail,
    Take(u64),
}

fn req(tenant: &'static str, item: u32, act: Act) -> Request {
    Request { tenant, item, act }
}

/// An upstream that answers `"{tenant}/{item}@{version}"`, and counts calls.
#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl Upstream {
    fn service(
        &self,
    ) -> impl Service<Request, Response = String, Error = &'static str, Future = impl Send> + Clone
    {
        let upstream = self.clone();
        service_fn(move |r: Request| {
            let upstream = upstream.clone();
            async move {
                let n = upstream.calls.fetch_add(1, SeqCst);
                upstream.in_flight.fetch_add(1, SeqCst);
                let result = match r.act {
                    Act::Answer => Ok(format!("{}/{}@{n}", r.tenant, r.item)),
                    Act::Fail => Err("upstream failed"),
                    Act::Take(t) => {
                        sleep(ms(t)).await;
                        Ok(format!("{}/{}@{n}", r.tenant, r.item))
                    }
                };
                upstream.in_flight.fetch_sub(1, SeqCst);
                result
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

#[cfg(feature = "cache")]
fn cache(max_stale: Option<Duration>) -> FallbackCache<(&'static str, u32), String> {
    // Every good answer replaces the kept one, so the tests can tell which
    // call's answer is served.
    let mut builder = FallbackCache::builder()
        .max_entries(100)
        .refresh_after(Duration::ZERO);
    if let Some(max) = max_stale {
        builder = builder.max_stale(max);
    }
    builder.build().unwrap()
}

#[cfg(feature = "cache")]
fn keyed_by_tenant() -> impl Fn(&Request) -> (&'static str, u32) + Send + Sync + 'static {
    |r: &Request| (r.tenant, r.item)
}

#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn every_cause_falls_back_to_the_last_good_answer() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(3)
                .disable_error_threshold(),
        )
        .bulkhead(Bulkhead::builder().max_concurrent(1))
        .timeout(ms(100))
        .fallback(Fallback::keyed(keyed_by_tenant()).cache(cache(None)))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    let call = |act| service.clone().oneshot(req("acme", 1, act));

    assert_eq!(
        call(Act::Answer).await.unwrap(),
        "acme/1@0",
        "fresh, and now cached"
    );
    assert_eq!(call(Act::Fail).await.unwrap(), "acme/1@0", "failure");
    assert_eq!(call(Act::Take(500)).await.unwrap(), "acme/1@0", "timeout");

    // The bulkhead's one permit is taken by a slow call.
    let busy = tokio::spawn(service.clone().oneshot(req("acme", 1, Act::Take(50))));
    tokio::task::yield_now().await;
    assert_eq!(
        call(Act::Answer).await.unwrap(),
        "acme/1@0",
        "bulkhead full"
    );
    assert_eq!(busy.await.unwrap().unwrap(), "acme/1@3");

    assert_eq!(
        policy.breaker().state(),
        State::Open,
        "failure, timeout, refusal in a row"
    );
    assert_eq!(
        call(Act::Fail).await.unwrap(),
        "acme/1@3",
        "the slow call's answer was kept"
    );
    let before = upstream.calls();
    assert_eq!(call(Act::Answer).await.unwrap(), "acme/1@3", "circuit open");
    assert_eq!(
        upstream.calls(),
        before,
        "an open circuit never calls upstream"
    );

    let c = policy.breaker().counts();
    // The slow call was admitted before the trip: its success is not counted.
    assert_eq!(
        (
            c.success,
            c.failure,
            c.timeout,
            c.rejected,
            c.short_circuited
        ),
        (1, 1, 1, 1, 2)
    );
    assert_eq!((c.cache_hit, c.cache_miss), (5, 0));
}

#[tokio::test(start_paused = true)]
async fn only_the_chosen_causes_fall_back() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .timeout(ms(100))
        .fallback(
            Fallback::builder()
                .value("default".to_owned())
                .on(Causes::only(&[Cause::Timeout])),
        )
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    assert_eq!(
        service
            .clone()
            .oneshot(req("a", 1, Act::Take(500)))
            .await
            .unwrap(),
        "default"
    );
    let err = service.oneshot(req("a", 1, Act::Fail)).await.unwrap_err();
    assert_eq!(
        err.into_inner(),
        Some("upstream failed"),
        "a failure is not a chosen cause"
    );
}

#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn stale_answers_are_not_served() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .fallback(Fallback::keyed(keyed_by_tenant()).cache(cache(Some(ms(60_000)))))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    service
        .clone()
        .oneshot(req("acme", 1, Act::Answer))
        .await
        .unwrap();
    advance(ms(60_000)).await;
    assert_eq!(
        service
            .clone()
            .oneshot(req("acme", 1, Act::Fail))
            .await
            .unwrap(),
        "acme/1@0"
    );
    advance(ms(1)).await;
    let err = service
        .oneshot(req("acme", 1, Act::Fail))
        .await
        .unwrap_err();
    assert_eq!(
        err.into_inner(),
        Some("upstream failed"),
        "60.001 s old: too stale"
    );
    assert_eq!(policy.breaker().counts().cache_miss, 1);
}

#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn a_tenant_never_gets_another_tenants_answer() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .fallback(Fallback::keyed(keyed_by_tenant()).cache(cache(None)))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    service
        .clone()
        .oneshot(req("acme", 1, Act::Answer))
        .await
        .unwrap();
    assert!(service
        .clone()
        .oneshot(req("globex", 1, Act::Fail))
        .await
        .is_err());
    assert_eq!(
        service.oneshot(req("acme", 1, Act::Fail)).await.unwrap(),
        "acme/1@0"
    );
}

#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded() {
    let cache = cache(None);
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .fallback(Fallback::keyed(keyed_by_tenant()).cache(cache.clone()))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    for item in 0..1_000 {
        service
            .clone()
            .oneshot(req("acme", item, Act::Answer))
            .await
            .unwrap();
    }
    assert!(cache.len() <= 100, "{} entries kept", cache.len());
    assert!(cache.len() >= 50, "{} entries kept", cache.len());
}

#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn a_cache_miss_goes_on_to_the_source_and_a_failing_source_gives_the_original_error() {
    let upstream = Upstream::default();
    let source_called = Arc::new(AtomicUsize::new(0));
    let called = source_called.clone();
    let policy = Policy::builder()
        .name("catalog")
        .fallback(
            Fallback::keyed(keyed_by_tenant())
                .cache(cache(None))
                .function(
                    move |key: &(&'static str, u32), error: &Error<&'static str>| {
                        called.fetch_add(1, SeqCst);
                        assert_eq!(error.inner(), Some(&"upstream failed"));
                        Err::<String, _>(format!("no default for {key:?}"))
                    },
                ),
        )
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    let err = service
        .oneshot(req("acme", 1, Act::Fail))
        .await
        .unwrap_err();
    assert_eq!(source_called.load(SeqCst), 1);
    assert_eq!(
        err.into_inner(),
        Some("upstream failed"),
        "the original error, not the fallback's"
    );
    let c = policy.breaker().counts();
    assert_eq!((c.cache_miss, c.fallback_failure), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn slow_or_crowded_fallbacks_are_bounded() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .fallback(
            Fallback::builder()
                .function_async(|_: &(), _: &Error<&'static str>| async {
                    sleep(ms(1_000)).await;
                    Ok::<_, std::io::Error>("late default".to_owned())
                })
                .timeout(ms(200))
                .max_concurrent(2),
        )
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    let start = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(req("a", 1, Act::Fail))))
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap_err().into_inner(),
            Some("upstream failed")
        );
    }
    assert_eq!(start.elapsed(), ms(200), "the fallback's own time limit");
    let c = policy.breaker().counts();
    assert_eq!((c.fallback_failure, c.fallback_rejected), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_secondary_service_answers_and_answers_are_marked() {
    let upstream = Upstream::default();
    let secondary =
        service_fn(
            |r: Request| async move { Ok::<_, std::io::Error>(format!("secondary {}", r.item)) },
        );
    let policy = Policy::builder()
        .name("catalog")
        .fallback(
            Fallback::keyed(|r: &Request| r.clone())
                .service(secondary)
                .mark(|answer: &mut String, provenance| {
                    assert_eq!(provenance, Provenance::Fallback);
                    answer.push_str(" (fallback)");
                }),
        )
        .build()
        .unwrap();
    let answer = policy
        .layer(upstream.service())
        .oneshot(req("a", 9, Act::Fail))
        .await
        .unwrap();
    assert_eq!(answer, "secondary 9 (fallback)");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_never_touches_the_bulkhead_or_the_service() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .circuit_breaker(CircuitBreaker::builder())
        .bulkhead(Bulkhead::builder().max_concurrent(1))
        .timeout(ms(100))
        .build()
        .unwrap();
    policy.breaker().force_open();
    let service = policy.layer(upstream.service());
    let err = service.oneshot(req("a", 1, Act::Answer)).await.unwrap_err();
    assert!(err.is_circuit_open());
    assert_eq!(upstream.calls(), 0);
    let bulkhead = policy.bulkhead().unwrap();
    assert_eq!((bulkhead.max_in_flight_seen, bulkhead.rejected), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_refusal_is_not_also_a_timeout() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .bulkhead(Bulkhead::builder().max_concurrent(1).queue(5, ms(300)))
        .timeout(ms(100))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    let busy = tokio::spawn(service.clone().oneshot(req("a", 1, Act::Take(1_000))));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let waited = service.clone().oneshot(req("a", 2, Act::Answer)).await;
    // The busy call times out at 100 ms, freeing the permit: the waiting
    // call gets in then, with a fresh 100 ms of its own.
    assert_eq!(waited.unwrap(), "a/2@1");
    assert_eq!(start.elapsed(), ms(100));
    assert!(busy.await.unwrap().unwrap_err().is_timeout());
    // Both calls over, the one that waited in line gave its permit back.
    let f = policy.bulkhead().unwrap();
    assert_eq!((f.in_flight, f.queued), (0, 0));

    // Now a refusal after waiting: the queue's max wait, not the timeout.
    let busy = tokio::spawn(service.clone().oneshot(req("a", 1, Act::Take(90))));
    let also_busy = tokio::spawn(service.clone().oneshot(req("a", 1, Act::Take(90))));
    tokio::task::yield_now().await;
    let _ = (busy, also_busy);
    let c = policy.breaker().counts();
    assert_eq!((c.timeout, c.rejected), (1, 0));
    let f = policy.bulkhead().unwrap();
    assert_eq!(f.in_flight + f.queued, 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_in_flight_gives_its_slot_back_with_or_without_statistics() {
    let upstream = Upstream::default();
    // The builders' types differ (without statistics is a stage).
    macro_rules! drop_in_flight {
        ($builder:expr) => {{
            let policy = $builder
                .bulkhead(Bulkhead::builder().max_concurrent(1))
                .build()
                .unwrap();
            let mut service = policy.layer(upstream.service());
            let call = service
                .ready()
                .await
                .unwrap()
                .call(req("a", 1, Act::Take(1_000)));
            assert_eq!(policy.bulkhead().unwrap().in_flight, 1);
            drop(call);
            assert_eq!(policy.bulkhead().unwrap().in_flight, 0);
        }};
    }
    drop_in_flight!(Policy::builder().name("catalog"));
    // Without statistics a call holds no breaker ticket: the slot alone.
    drop_in_flight!(Policy::builder().name("catalog").without_statistics());
}

#[tokio::test(start_paused = true)]
async fn queued_policy_calls_time_out_only_once_they_run() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .bulkhead(Bulkhead::builder().max_concurrent(1).queue(5, ms(50)))
        .timeout(ms(1_000))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    let busy = tokio::spawn(service.clone().oneshot(req("a", 1, Act::Take(500))));
    tokio::task::yield_now().await;
    let start = Instant::now();
    match service
        .clone()
        .oneshot(req("a", 2, Act::Answer))
        .await
        .unwrap_err()
    {
        Error::BulkheadFull(full) => assert_eq!(full.waited(), Some(ms(50))),
        other => panic!("{other:?}"),
    }
    assert_eq!(start.elapsed(), ms(50));
    busy.await.unwrap().unwrap();
    let c = policy.breaker().counts();
    assert_eq!((c.success, c.timeout, c.rejected), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_rejections_can_be_left_out_of_the_breakers_count() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(1)
                .disable_error_threshold(),
        )
        .timeout(ms(10))
        .classify(
            |result: &Result<String, Error<&'static str>>| match ByKind.classify(result) {
                Verdict::Timeout | Verdict::Rejected => Verdict::Ignore,
                verdict => verdict,
            },
        )
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    for _ in 0..5 {
        assert!(service
            .clone()
            .oneshot(req("a", 1, Act::Take(100)))
            .await
            .unwrap_err()
            .is_timeout());
    }
    assert_eq!(policy.breaker().state(), State::Closed);
    let counts = policy.breaker().counts();
    assert_eq!((counts.calls(), counts.ignored), (0, 5));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_policy_call_anywhere_gives_everything_back() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(1)
                .disable_error_threshold(),
        )
        .bulkhead(Bulkhead::builder().max_concurrent(1).queue(5, ms(10_000)))
        .build()
        .unwrap();
    let mut service = policy.layer(upstream.service());
    let figures = |p: &Policy| {
        let f = p.bulkhead().unwrap();
        (f.in_flight, f.queued)
    };
    // Running, then queued behind it; both dropped.
    let running = service
        .ready()
        .await
        .unwrap()
        .call(req("a", 1, Act::Take(1_000)));
    let queued = service
        .ready()
        .await
        .unwrap()
        .call(req("a", 1, Act::Answer));
    let _ = tokio::time::timeout(ms(5), running).await;
    drop(queued);
    assert_eq!(figures(&policy), (0, 0));

    // A half-open probe dropped returns its slot.
    service
        .clone()
        .oneshot(req("a", 1, Act::Fail))
        .await
        .unwrap_err();
    advance(Duration::from_secs(5)).await;
    let probe = service
        .ready()
        .await
        .unwrap()
        .call(req("a", 1, Act::Take(1_000)));
    drop(probe);
    assert_eq!(policy.breaker().state(), State::HalfOpen);
    service.oneshot(req("a", 1, Act::Answer)).await.unwrap();
    assert_eq!(policy.breaker().state(), State::Closed);
}

#[test]
fn bad_stage_settings_are_refused_by_the_policy() {
    let err = Policy::builder()
        .bulkhead(Bulkhead::builder().max_concurrent(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_concurrent");
    let err = Policy::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeout");
    let err = Policy::builder()
        .circuit_breaker(CircuitBreaker::builder().error_threshold(101.0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "error_threshold");
    let err = Policy::builder()
        .fallback(
            Fallback::<(), u8, std::io::Error>::builder()
                .value(1)
                .max_concurrent(0),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_concurrent");
}

#[tokio::test(start_paused = true)]
async fn the_fallback_is_a_layer_of_its_own_too() {
    use seawall::fallback::FallbackLayer;

    let upstream = Upstream::default();
    let breaker = CircuitBreaker::builder().build().unwrap();
    let fallback = Fallback::builder()
        .value("from the fallback".to_owned())
        .on(Causes::only(&[Cause::CircuitOpen]))
        .build()
        .unwrap();
    let service = FallbackLayer::new(fallback)
        .stats(&breaker)
        .layer(breaker.layer().layer(upstream.service()));

    assert_eq!(
        service
            .clone()
            .oneshot(req("a", 1, Act::Answer))
            .await
            .unwrap(),
        "a/1@0"
    );
    let err = service
        .clone()
        .oneshot(req("a", 1, Act::Fail))
        .await
        .unwrap_err();
    assert_eq!(
        err.into_inner(),
        Some("upstream failed"),
        "failures are not a chosen cause"
    );
    breaker.force_open();
    assert_eq!(
        service.oneshot(req("a", 1, Act::Answer)).await.unwrap(),
        "from the fallback"
    );
    let c = breaker.counts();
    assert_eq!((c.short_circuited, c.fallback_success), (1, 1));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_can_carry_a_shorter_deadline_capped_by_the_policy() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .timeout(ms(1_000))
        .per_request_deadline(|r: &Request| (r.item > 0).then(|| ms(u64::from(r.item))))
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    for (item, expected) in [(30, ms(30)), (5_000, ms(1_000)), (0, ms(1_000))] {
        let start = Instant::now();
        match service
            .clone()
            .oneshot(req("a", item, Act::Take(10_000)))
            .await
            .unwrap_err()
        {
            Error::Timeout(elapsed) => assert_eq!(elapsed.after(), expected),
            other => panic!("{other:?}"),
        }
        assert_eq!(start.elapsed(), expected);
    }
}

/// The recipe from the `policy` docs, on a client whose calls can hang and
/// fail: the Policy applies to it like to any service.
#[tokio::test(start_paused = true)]
async fn any_async_client_fits_through_service_fn_and_an_arc() {
    struct Client {
        calls: AtomicUsize,
    }
    impl Client {
        async fn send(&self, message: &str) -> Result<String, std::io::Error> {
            match self.calls.fetch_add(1, SeqCst) {
                0 => Ok(format!("sent {message}")),
                1 => std::future::pending().await,
                _ => Err(std::io::Error::other("connection reset")),
            }
        }
    }
    let client = Arc::new(Client {
        calls: AtomicUsize::new(0),
    });
    let send = service_fn(move |message: String| {
        let client = Arc::clone(&client);
        async move { client.send(&message).await }
    });
    let policy = Policy::builder()
        .name("client")
        .timeout(ms(100))
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(2)
                .disable_error_threshold(),
        )
        .build()
        .unwrap();
    let service = policy.layer(send);
    assert_eq!(service.clone().oneshot("a".into()).await.unwrap(), "sent a");
    assert!(service
        .clone()
        .oneshot("b".into())
        .await
        .unwrap_err()
        .is_timeout());
    assert!(service
        .clone()
        .oneshot("c".into())
        .await
        .unwrap_err()
        .inner()
        .is_some());
    assert!(service
        .oneshot("d".into())
        .await
        .unwrap_err()
        .is_circuit_open());
}

#[tokio::test(start_paused = true)]
async fn a_policy_without_a_breaker_never_trips_even_after_a_reset() {
    let upstream = Upstream::default();
    let policy = Policy::builder().name("stats-only").build().unwrap();
    let service = policy.layer(upstream.service());
    assert_eq!(policy.breaker().state(), State::ForcedClosed);
    policy.breaker().reset();
    assert_eq!(policy.breaker().state(), State::ForcedClosed);
    for _ in 0..50 {
        let _ = service.clone().oneshot(req("a", 1, Act::Fail)).await;
    }
    assert_eq!(policy.breaker().state(), State::ForcedClosed);
    assert_eq!(policy.breaker().counts().failure, 50, "still counting");
}

#[cfg(feature = "cache")]
#[test]
fn a_cache_time_to_live_that_would_overflow_is_refused() {
    let err = FallbackCache::<u8, u8>::builder()
        .time_to_live(Duration::MAX)
        .build()
        .err()
        .unwrap();
    assert_eq!(err.field(), "time_to_live");
}

/// Without statistics, every other stage still runs: the bulkhead refuses,
/// the timeout cuts, the fallback answers for both, the retry tries again;
/// and nothing is counted or catalogued.
#[tokio::test(start_paused = true)]
async fn a_policy_without_statistics_runs_every_stage_it_was_given() {
    let upstream = Upstream::default();
    let policy = Policy::builder()
        .name("catalog")
        .bulkhead(Bulkhead::builder().max_concurrent(1))
        .timeout(ms(100))
        .fallback(Fallback::builder().value("fallback".to_owned()))
        .without_statistics()
        .build()
        .unwrap();
    let service = policy.layer(upstream.service());
    let busy = tokio::spawn(service.clone().oneshot(req("a", 1, Act::Take(1_000))));
    tokio::task::yield_now().await;
    let refused = service.clone().oneshot(req("a", 2, Act::Answer)).await;
    assert_eq!(refused.unwrap(), "fallback", "refused by the bulkhead");
    assert_eq!(policy.bulkhead().unwrap().rejected, 1);
    let start = Instant::now();
    assert_eq!(busy.await.unwrap().unwrap(), "fallback", "timed out");
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(
        service.oneshot(req("a", 3, Act::Answer)).await.unwrap(),
        "a/3@1"
    );
    let catalogue = seawall::observe::Catalogue::new();
    catalogue.add(&policy);
    let report = catalogue.report();
    assert!(report.breakers.is_empty(), "{:?}", report.breakers);
    assert_eq!(report.bulkheads[0].policy.as_deref(), Some("catalog"));

    let only_bulkhead = Policy::builder()
        .bulkhead(Bulkhead::builder().max_concurrent(1))
        .without_statistics()
        .build()
        .unwrap()
        .layer(upstream.service());
    let busy = tokio::spawn(only_bulkhead.clone().oneshot(req("a", 1, Act::Take(10))));
    tokio::task::yield_now().await;
    let refused = only_bulkhead.oneshot(req("a", 2, Act::Answer)).await;
    assert!(refused.unwrap_err().is_bulkhead_full());
    assert!(busy.await.unwrap().is_ok());

    let retry = seawall::retry::Retry::builder()
        .max_attempts(3)
        .build()
        .unwrap();
    let retrying = Policy::builder()
        .retry(retry.clone())
        .without_statistics()
        .build()
        .unwrap();
    let failing = Upstream::default();
    let result = retrying
        .layer(failing.service())
        .oneshot(req("a", 1, Act::Fail))
        .await;
    assert!(result.unwrap_err().inner().is_some());
    assert_eq!((failing.calls(), retry.figures().retries), (3, 2));
}

/// With nothing but a timeout and no statistics, a Policy answers as the
/// timeout layer does, call for call: an answer, a timeout, the caller's
/// shorter deadline, and no call at all once the caller's budget is spent.
#[tokio::test(start_paused = true)]
async fn a_policy_with_only_a_timeout_and_no_statistics_is_the_timeout_layer() {
    use seawall::timeout::TimeoutLayer;
    let own = |r: &Request| (r.item < 10).then(|| ms(u64::from(r.item) * 10));
    let policy = Policy::builder()
        .timeout(ms(100))
        .per_request_deadline(own)
        .without_statistics()
        .build()
        .unwrap();
    let timeout = TimeoutLayer::new(ms(100)).per_request_deadline(own);
    let requests = [
        req("a", 20, Act::Answer),
        req("a", 20, Act::Fail),
        req("a", 20, Act::Take(1_000)),
        req("a", 3, Act::Take(1_000)),
        req("a", 0, Act::Answer),
    ];
    for request in requests {
        let by_policy =
            answered(|upstream| policy.layer(upstream.service()).oneshot(request.clone()));
        let by_timeout =
            answered(|upstream| timeout.layer(upstream.service()).oneshot(request.clone()));
        assert_eq!(by_policy.await, by_timeout.await, "{request:?}");
    }
}

/// What a call made on a fresh upstream said, how long it took, and how
/// many calls reached the upstream.
async fn answered<Fut: std::future::Future>(
    call: impl FnOnce(&Upstream) -> Fut,
) -> (String, Duration, usize)
where
    Fut::Output: std::fmt::Debug,
{
    let upstream = Upstream::default();
    let start = Instant::now();
    let said = format!("{:?}", call(&upstream).await);
    (said, start.elapsed(), upstream.calls())
}
