//! What seawall lets a user see: lifetime totals and history that survive
//! resets, a listener told of every call, a catalogue's report, health,
//! and the `metrics` facade.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use seawall::blocking::BlockingPool;
use seawall::bulkhead::Bulkhead;
#[cfg(feature = "registry")]
use seawall::circuit_breaker::Registry;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, State};
use seawall::classify::Verdict;
use seawall::observe::{CallEvent, Catalogue, Listener, Status};
use seawall::window::{Outcome, Window};
use seawall::Clock;

/// Counts every event by outcome, and checks each names its breaker.
#[derive(Default)]
struct Tally {
    by_outcome: [AtomicU64; 11],
    late: AtomicU64,
    timed: AtomicU64,
}

impl Tally {
    fn of(&self, outcome: Outcome) -> u64 {
        self.by_outcome[outcome as usize].load(Relaxed)
    }
}

impl Listener for Tally {
    fn on_call(&self, event: &CallEvent<'_>) {
        assert!(event.part.starts_with("tallied"), "{}", event.part);
        self.by_outcome[event.outcome as usize].fetch_add(1, Relaxed);
        self.late.fetch_add(u64::from(event.late), Relaxed);
        self.timed
            .fetch_add(u64::from(event.latency.is_some()), Relaxed);
    }
}

fn call(breaker: &CircuitBreaker, verdict: Verdict) -> bool {
    match breaker.try_acquire() {
        Ok(permit) => {
            permit.record(verdict);
            true
        }
        Err(_) => false,
    }
}

/// A script through closing, tripping, refusing, probing, closing (which
/// empties the window), forcing and resetting: the lifetime totals, the
/// history (time in each state exact in paused time) and the listener all
/// agree with what was sent.
#[tokio::test(start_paused = true)]
async fn lifetime_totals_and_history_survive_resets_and_reopenings() {
    let tally = Arc::new(Tally::default());
    let breaker = CircuitBreaker::builder()
        .name("tallied")
        .clock(Clock::tokio())
        .window(Window::count(10))
        .minimum_calls(10)
        .error_threshold(50.0)
        .open_duration(OpenDuration::Fixed(Duration::from_secs(5)))
        .listener(tally.clone())
        .build()
        .unwrap();
    let (mut sent_success, mut sent_failure, mut refused) = (0, 0, 0);
    for round in 0..3 {
        // Closed for 2 s: 5 successes, then 5 failures trip it.
        for _ in 0..5 {
            assert!(call(&breaker, Verdict::Success));
            sent_success += 1;
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..5 {
            assert!(call(&breaker, Verdict::Failure));
            sent_failure += 1;
        }
        assert_eq!(breaker.state(), State::Open, "round {round}");
        // Open for 5 s: every call refused.
        for _ in 0..7 {
            assert!(!call(&breaker, Verdict::Success));
            refused += 1;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // The probe goes through after 5 s and closes the breaker, which
        // empties its window.
        assert!(call(&breaker, Verdict::Success));
        sent_success += 1;
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.counts().calls(), 0);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    breaker.force_open();
    assert!(!call(&breaker, Verdict::Success));
    refused += 1;
    tokio::time::advance(Duration::from_secs(3)).await;
    breaker.reset();

    let lifetime = breaker.lifetime().counts;
    assert_eq!(
        (lifetime.success, lifetime.failure, lifetime.short_circuited),
        (sent_success, sent_failure, refused)
    );
    assert_eq!(
        (
            tally.of(Outcome::Success),
            tally.of(Outcome::Failure),
            tally.of(Outcome::ShortCircuited)
        ),
        (sent_success, sent_failure, refused)
    );
    assert_eq!(tally.timed.load(Relaxed), sent_success + sent_failure);

    let history = breaker.history();
    assert_eq!(history.transitions(State::Closed, State::Open), 3);
    assert_eq!(history.transitions(State::Open, State::HalfOpen), 3);
    assert_eq!(history.transitions(State::HalfOpen, State::Closed), 3);
    assert_eq!(history.transitions(State::Closed, State::ForcedOpen), 1);
    assert_eq!(history.transitions(State::ForcedOpen, State::Closed), 1);
    assert_eq!(history.total_transitions(), 11);
    assert_eq!(history.time_in(State::Open), Duration::from_secs(15));
    assert_eq!(history.time_in(State::ForcedOpen), Duration::from_secs(3));
    assert_eq!(history.time_in(State::HalfOpen), Duration::ZERO);
    assert_eq!(history.time_in(State::Closed), Duration::from_secs(7));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        breaker.history().time_in(State::Closed),
        Duration::from_secs(11),
        "the current stay counts up to the read"
    );
}

/// Threads released together record through one breaker with a listener:
/// the listener sees exactly every call, as do the lifetime totals.
#[test]
fn a_listener_sees_every_call_of_threads_released_together() {
    const THREADS: usize = 8;
    const CALLS: u64 = 2_000;
    for round in 0..20 {
        let tally = Arc::new(Tally::default());
        let breaker = CircuitBreaker::builder()
            .name(format!("tallied-{round}"))
            .window(Window::time(Duration::from_secs(600), 10))
            .disable_error_threshold()
            .listener(tally.clone())
            .build()
            .unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (breaker, barrier) = (breaker.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..CALLS {
                        let verdict = match (thread as u64 + i) % 3 {
                            0 => Verdict::Failure,
                            1 => Verdict::Ignore,
                            _ => Verdict::Success,
                        };
                        assert!(call(&breaker, verdict));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let lifetime = breaker.lifetime().counts;
        let all = THREADS as u64 * CALLS;
        assert_eq!(
            tally.of(Outcome::Success) + tally.of(Outcome::Failure) + tally.of(Outcome::Ignored),
            all
        );
        assert_eq!(
            (lifetime.success, lifetime.failure, lifetime.ignored),
            (
                tally.of(Outcome::Success),
                tally.of(Outcome::Failure),
                tally.of(Outcome::Ignored)
            ),
            "round {round}"
        );
        assert_eq!(tally.late.load(Relaxed), 0);
    }
}

/// A registry of 50 keys, key `k` called `k + 1` times: the report names
/// the 5 busiest, busiest first, and sums the other 45 exactly.
#[cfg(feature = "registry")]
#[test]
fn a_registry_reports_its_busiest_keys_and_sums_the_rest() {
    let registry: Registry<u32> = Registry::builder(CircuitBreaker::builder().name("tenants"))
        .build()
        .unwrap();
    for key in 0..50u32 {
        let breaker = registry.get(key);
        for _ in 0..=key {
            assert!(call(&breaker, Verdict::Success));
        }
    }
    registry.get(3).force_open();
    registry.get(4).force_open();
    let catalogue = Catalogue::new();
    catalogue.top_keys(5).add(&registry);
    let report = catalogue.report();
    let tenants = &report.registries[0];
    assert_eq!(tenants.name, "tenants");
    assert_eq!((tenants.keys, tenants.open_keys), (50, 2));
    let top: Vec<(&str, u64)> = tenants
        .top
        .iter()
        .map(|key| (key.name.as_str(), key.lifetime.counts.success))
        .collect();
    assert_eq!(
        top,
        [
            ("tenants:49", 50),
            ("tenants:48", 49),
            ("tenants:47", 48),
            ("tenants:46", 47),
            ("tenants:45", 46)
        ]
    );
    let others: u64 = (1..=45).sum();
    assert_eq!(tenants.others_lifetime.success, others);
    assert_eq!(tenants.others_window.success, others);
    assert_eq!(tenants.others_lifetime.short_circuited, 0);

    let health = catalogue.health();
    assert_eq!(health.status, Status::Degraded);
    assert_eq!(
        health.reasons[0].to_string(),
        "registry tenants: 2 of 50 keys open"
    );
}

/// A policy's breaker and bulkhead are reported as the policy's; a full
/// bulkhead and a busy pool degrade health; a policy whose breaker and the
/// only other breaker are open is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_reports_policies_bulkheads_and_pools() {
    use seawall::policy::Policy;
    let policy = Policy::builder()
        .name("checkout")
        .circuit_breaker(CircuitBreaker::builder())
        .bulkhead(Bulkhead::builder().max_concurrent(1))
        .build()
        .unwrap();
    let pool = BlockingPool::builder()
        .name("legacy")
        .threads(1)
        .build()
        .unwrap();
    let catalogue = Catalogue::new();
    catalogue.add(&policy).add(&pool);
    let report = catalogue.report();
    assert_eq!(report.breakers[0].name, "checkout");
    assert_eq!(report.breakers[0].policy.as_deref(), Some("checkout"));
    assert_eq!(report.bulkheads[0].policy.as_deref(), Some("checkout"));
    assert_eq!(report.pools[0].name, "legacy");
    assert_eq!(catalogue.health().status, Status::Healthy);

    // A call holding the pool's only thread.
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let mut service = seawall::blocking::BlockingService::new(pool.clone(), move |(): ()| {
        started_tx.send(()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
        Ok::<_, std::io::Error>(())
    });
    use tower::{Service, ServiceExt};
    let held = service.ready().await.unwrap().call(());
    let held = tokio::spawn(held);
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    let health = catalogue.health();
    assert_eq!(health.status, Status::Degraded);
    assert_eq!(
        health.reasons[0].to_string(),
        "pool legacy: every thread busy (0 queued)"
    );
    release_tx.send(()).unwrap();
    held.await.unwrap().unwrap();

    policy.breaker().force_open();
    assert_eq!(catalogue.health().status, Status::Down);
}

#[cfg(feature = "json")]
#[test]
fn health_as_json() {
    let breaker = CircuitBreaker::builder().name("a\"b").build().unwrap();
    let catalogue = Catalogue::new();
    catalogue.add(&breaker);
    breaker.force_open();
    let json: serde_json::Value = serde_json::from_str(&catalogue.health().to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "status": "down",
            "reasons": [{"kind": "breaker", "part": "a\"b", "detail": "forced open"}],
        })
    );
}

#[cfg(feature = "metrics")]
mod metrics_facade {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use seawall::observe::metrics::{publish, MetricsListener};

    type Captured = Vec<(String, Vec<(String, String)>, DebugValue)>;

    fn captured(recorder: &DebuggingRecorder) -> Captured {
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels = key
                    .labels()
                    .map(|label| (label.key().to_owned(), label.value().to_owned()))
                    .collect();
                (key.name().to_owned(), labels, value)
            })
            .collect()
    }

    fn find<'a>(captured: &'a Captured, name: &str, labels: &[(&str, &str)]) -> &'a DebugValue {
        captured
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {captured:#?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_and_hedges_are_reported_and_published_under_their_own_names() {
        use seawall::hedge::Hedge;
        use seawall::policy::Policy;
        use seawall::retry::{Backoff, Retry, RetryBudget};
        use tower::{service_fn, Layer, ServiceExt};

        // Half a token a request: every second request's failure is retried.
        let budget = RetryBudget::builder()
            .ratio(0.5)
            .min_per_second(0)
            .build()
            .unwrap();
        let retry = Retry::builder()
            .name("reads")
            .max_attempts(2)
            .backoff(Backoff::none())
            .budget(budget)
            .build()
            .unwrap();
        let policy = Policy::builder()
            .name("inventory")
            .retry(retry)
            .build()
            .unwrap();
        let failing = service_fn(|_: u32| async {
            Err::<u32, std::io::Error>(std::io::Error::other("down"))
        });
        let service = policy.layer(failing);
        for n in 0..4 {
            let _ = service.clone().oneshot(n).await;
        }
        let hedge = Hedge::builder().name("replicas").build().unwrap();
        let catalogue = Catalogue::new();
        catalogue.add(&policy).add(&hedge);
        let report = catalogue.report();
        assert_eq!(report.retries.len(), 1);
        assert_eq!(report.retries[0].policy.as_deref(), Some("inventory"));
        assert_eq!(report.retries[0].figures, policy.retry().figures());
        assert_eq!(report.hedges[0].name, "replicas");

        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || publish(&report));
        let captured = captured(&recorder);
        let counter = |name, labels: &[(&str, &str)]| match find(&captured, name, labels) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name}: {other:?}"),
        };
        let rule = [("retry", "reads"), ("policy", "inventory")];
        assert_eq!(counter("seawall_retry_requests_total", &rule), 4);
        assert_eq!(counter("seawall_retry_attempts_total", &rule), 6);
        assert_eq!(counter("seawall_retry_retries_total", &rule), 2);
        let stopped = |reason| {
            counter(
                "seawall_retry_stopped_total",
                &[rule[0], rule[1], ("reason", reason)],
            )
        };
        assert_eq!((stopped("budget"), stopped("attempts_exhausted")), (2, 2));
        assert_eq!(counter("seawall_retry_budget_withdrawn_total", &rule), 2);
        assert_eq!(
            counter("seawall_hedge_requests_total", &[("hedge", "replicas")]),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn publish_and_the_listener_through_a_capturing_recorder() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            let breaker = CircuitBreaker::builder()
                .name("payments")
                .clock(Clock::tokio())
                .window(Window::count(20))
                .minimum_calls(4)
                .track_latency(true)
                .listener(MetricsListener::new("payments"))
                .build()
                .unwrap();
            for _ in 0..6 {
                call(&breaker, Verdict::Success);
            }
            for _ in 0..6 {
                call(&breaker, Verdict::Failure);
            }
            assert_eq!(breaker.state(), State::Open);
            let catalogue = Catalogue::new();
            catalogue.add(&breaker);
            #[cfg(feature = "registry")]
            {
                let registry: Registry<&str> =
                    Registry::builder(CircuitBreaker::builder().name("hosts"))
                        .build()
                        .unwrap();
                for (host, calls) in [("a", 3), ("b", 1), ("c", 2)] {
                    for _ in 0..calls {
                        call(&registry.get(host), Verdict::Failure);
                    }
                }
                catalogue.top_keys(1).add(&registry);
            }
            publish(&catalogue.report());
        });
        let captured = captured(&recorder);
        let counter = |name, labels: &[(&str, &str)]| match find(&captured, name, labels) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name}: {other:?}"),
        };
        let gauge = |name, labels: &[(&str, &str)]| match find(&captured, name, labels) {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name}: {other:?}"),
        };
        let labels = |outcome| {
            [
                ("breaker", "payments"),
                ("policy", ""),
                ("outcome", outcome),
            ]
        };
        assert_eq!(
            counter("seawall_breaker_calls_total", &labels("success")),
            6
        );
        // The breaker tripped at 50%: on the 6th failure, 6 of 12 calls.
        assert_eq!(
            counter("seawall_breaker_calls_total", &labels("failure")),
            6
        );
        assert_eq!(
            counter(
                "seawall_breaker_transitions_total",
                &[("breaker", "payments"), ("from", "closed"), ("to", "open")]
            ),
            1
        );
        assert_eq!(
            gauge(
                "seawall_breaker_state",
                &[("breaker", "payments"), ("state", "open")]
            ),
            1.0
        );
        assert_eq!(
            gauge(
                "seawall_breaker_state",
                &[("breaker", "payments"), ("state", "closed")]
            ),
            0.0
        );
        let histogram = |outcome| match find(
            &captured,
            "seawall_call_duration_seconds",
            &[("breaker", "payments"), ("outcome", outcome)],
        ) {
            DebugValue::Histogram(values) => values.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!((histogram("success"), histogram("failure")), (6, 6));
        #[cfg(feature = "registry")]
        {
            let key = |key| [("registry", "hosts"), ("key", key), ("outcome", "failure")];
            assert_eq!(counter("seawall_registry_calls_total", &key("\"a\"")), 3);
            assert_eq!(counter("seawall_registry_calls_total", &key("other")), 3);
            assert_eq!(
                gauge("seawall_registry_keys", &[("registry", "hosts")]),
                3.0
            );
        }
    }
}

/// A cache tells hits, misses and answers too old to serve apart; the
/// breaker counts a stale answer as a miss, and the catalogue reports the
/// cache.
#[cfg(feature = "cache")]
#[tokio::test(start_paused = true)]
async fn a_cache_counts_hits_misses_and_stale_refusals() {
    use seawall::fallback::{Fallback, FallbackCache};
    use seawall::policy::Policy;
    use tower::{service_fn, Layer, ServiceExt};
    let cache = FallbackCache::<u32, u32>::builder()
        .name("prices")
        .clock(Clock::tokio())
        .max_stale(Duration::from_secs(10))
        .build()
        .unwrap();
    let policy = Policy::builder()
        .name("pricing")
        .clock(Clock::tokio())
        .circuit_breaker(CircuitBreaker::builder())
        .fallback(Fallback::keyed(|sku: &u32| *sku).cache(cache.clone()))
        .build()
        .unwrap();
    let prices = policy.layer(service_fn(|sku: u32| async move {
        Ok::<_, std::io::Error>(sku * 10)
    }));
    assert_eq!(prices.clone().oneshot(1).await.unwrap(), 10); // stored
    policy.breaker().force_open();
    assert_eq!(prices.clone().oneshot(1).await.unwrap(), 10); // a hit
    prices.clone().oneshot(2).await.unwrap_err(); // a miss
    tokio::time::advance(Duration::from_secs(11)).await;
    prices.clone().oneshot(1).await.unwrap_err(); // too old
    let figures = cache.figures();
    assert_eq!(
        (
            figures.stored,
            figures.hits,
            figures.misses,
            figures.stale_refused
        ),
        (1, 1, 1, 1)
    );
    let lifetime = policy.breaker().lifetime().counts;
    assert_eq!((lifetime.cache_hit, lifetime.cache_miss), (1, 2));
    let catalogue = Catalogue::new();
    catalogue.add(&cache);
    let report = catalogue.report();
    assert_eq!(report.caches[0].name, "prices");
    assert_eq!(report.caches[0].figures.stale_refused, 1);
}
