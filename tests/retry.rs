//! Retries in paused time: exact attempts and delays, no retry while the
//! breaker is open or past the deadline, a budget that bounds what an
//! outage costs the dependency (exactly, however many threads retry at
//! once), and a retry storm that still trips the breaker.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use seawall::budget::Budget;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, State};
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::retry::{Backoff, Jitter, Retry, RetryBudget, RetryLayer};
use seawall::window::Window;
use seawall::{BoxError, Error};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A dependency that fails every call after `delay`, noting when each
/// call was made (since `origin`).
#[allow(clippy::type_complexity)]
fn failing(
    delay: Duration,
) -> (
    Arc<Mutex<Vec<Duration>>>,
    impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone,
) {
    let origin = Instant::now();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let service = service_fn(move |_: u32| {
        seen.lock().unwrap().push(origin.elapsed());
        async move {
            tokio::time::sleep(delay).await;
            Err::<u32, BoxError>("down".into())
        }
    });
    (calls, service)
}

fn exact(base: Duration) -> Backoff {
    Backoff::exponential(base).jitter(Jitter::None)
}

#[tokio::test(start_paused = true)]
async fn attempts_and_backoff_delays_are_exact_as_a_layer_and_in_a_policy() {
    for in_policy in [false, true] {
        let (calls, dependency) = failing(ms(10));
        let retry = Retry::builder()
            .max_attempts(4)
            .backoff(exact(ms(100)))
            .build()
            .unwrap();
        let result = if in_policy {
            let policy = Policy::builder().retry(retry.clone()).build().unwrap();
            policy.layer(dependency).oneshot(1).await
        } else {
            RetryLayer::new(retry.clone())
                .layer(dependency)
                .oneshot(1)
                .await
        };
        assert!(matches!(result, Err(Error::Inner(_))), "{result:?}");
        // Each call fails after 10 ms; the waits double from 100 ms.
        let expected = [0, 110, 320, 730].map(ms);
        assert_eq!(*calls.lock().unwrap(), expected, "in a policy: {in_policy}");
        let figures = retry.figures();
        assert_eq!(
            (figures.requests, figures.attempts, figures.retries),
            (1, 4, 3)
        );
        assert_eq!(figures.attempts_exhausted, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_with_a_seed_replays_and_stays_within_its_bounds() {
    let delays = |seed: u64| async move {
        let (calls, dependency) = failing(Duration::ZERO);
        let retry = Retry::builder()
            .max_attempts(6)
            .backoff(Backoff::exponential(ms(100)).max_delay(ms(1000)))
            .seed(seed)
            .build()
            .unwrap();
        let _ = RetryLayer::new(retry).layer(dependency).oneshot(1).await;
        let calls = calls.lock().unwrap().clone();
        calls.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    };
    let first = delays(7).await;
    assert_eq!(first, delays(7).await, "the same seed, the same waits");
    assert_ne!(first, delays(8).await);
    for (retry, delay) in first.iter().enumerate() {
        let ceiling = ms(100 * (1 << retry)).min(ms(1000));
        assert!(
            *delay <= ceiling,
            "retry {retry}: {delay:?} over {ceiling:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_retries_and_its_refusals_are_not_retried() {
    let (calls, dependency) = failing(Duration::ZERO);
    let retry = Retry::builder()
        .max_attempts(5)
        .backoff(exact(ms(10)))
        .build()
        .unwrap();
    let policy = Policy::builder()
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(2))
        .retry(retry.clone())
        .build()
        .unwrap();
    let service = policy.layer(dependency);
    let first = service.clone().oneshot(1).await;
    assert!(matches!(first, Err(Error::Inner(_))), "{first:?}");
    assert_eq!(policy.breaker().state(), State::Open);
    // The second failure opened the breaker: no third attempt.
    assert_eq!(calls.lock().unwrap().len(), 2);
    let second = service.oneshot(2).await;
    assert!(matches!(second, Err(Error::CircuitOpen(_))), "{second:?}");
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "a short-circuit is not retried"
    );
    let figures = retry.figures();
    assert_eq!(
        (figures.attempts, figures.retries, figures.circuit_open),
        (3, 1, 1)
    );
    let counts = policy.breaker().lifetime_counts();
    assert_eq!((counts.failure, counts.short_circuited), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_layer_consults_the_breaker_it_is_given() {
    let (calls, dependency) = failing(Duration::ZERO);
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(5)
        .backoff(exact(ms(10)))
        .breaker(&breaker)
        .build()
        .unwrap();
    let service = RetryLayer::new(retry.clone()).layer(breaker.layer().layer(dependency));
    let _ = service.oneshot(1).await;
    assert_eq!(calls.lock().unwrap().len(), 2);
    assert_eq!(retry.figures().circuit_open, 1);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_that_the_deadline_cannot_fit() {
    // Attempts take 300 ms and wait 200 ms, then 400 ms: the second ends at
    // 800 ms, and a third would start at 1,200 ms, past the budget's 1 s.
    let (calls, dependency) = failing(ms(300));
    let retry = Retry::builder()
        .max_attempts(5)
        .backoff(exact(ms(200)))
        .build()
        .unwrap();
    let service = Policy::builder()
        .retry(retry.clone())
        .build()
        .unwrap()
        .layer(dependency);
    let result = Budget::new(ms(1000)).scope(service.oneshot(1)).await;
    assert!(matches!(result, Err(Error::Inner(_))), "{result:?}");
    assert_eq!(*calls.lock().unwrap(), [ms(0), ms(500)]);
    assert_eq!(retry.figures().deadline, 1);

    // The same with the rule's own total timeout, as a layer.
    let (calls, dependency) = failing(ms(300));
    let retry = Retry::builder()
        .max_attempts(5)
        .backoff(exact(ms(200)))
        .total_timeout(ms(1000))
        .build()
        .unwrap();
    let _ = RetryLayer::new(retry.clone())
        .layer(dependency)
        .oneshot(1)
        .await;
    assert_eq!(*calls.lock().unwrap(), [ms(0), ms(500)]);
    assert_eq!(retry.figures().deadline, 1);
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_cuts_an_attempt_as_the_callers_deadline() {
    let hung = service_fn(|_: u32| std::future::pending::<Result<u32, BoxError>>());
    let retry = Retry::builder()
        .max_attempts(3)
        .total_timeout(ms(1000))
        .build()
        .unwrap();
    let policy = Policy::builder()
        .timeout(Duration::from_secs(10))
        .retry(retry.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let result = policy.layer(hung).oneshot(1).await;
    let Err(Error::Timeout(elapsed)) = result else {
        panic!("{result:?}")
    };
    assert!(elapsed.is_callers_deadline());
    assert_eq!(started.elapsed(), ms(1000));
    let counts = policy.breaker().lifetime_counts();
    assert_eq!((counts.timeout, counts.caller_deadline), (0, 1));
    assert_eq!(retry.figures().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn refusals_of_this_process_are_never_retried() {
    let bulkhead = Bulkhead::builder().max_concurrent(1).build().unwrap();
    let retry = Retry::builder().max_attempts(3).build().unwrap();
    let slow = service_fn(|n: u32| async move {
        tokio::time::sleep(ms(100)).await;
        Ok::<_, BoxError>(n)
    });
    let policy = Policy::builder()
        .bulkhead(bulkhead)
        .retry(retry.clone())
        .build()
        .unwrap();
    let service = policy.layer(slow);
    let (first, second) = tokio::join!(service.clone().oneshot(1), service.oneshot(2));
    assert_eq!(first.unwrap(), 1);
    assert!(matches!(second, Err(Error::BulkheadFull(_))), "{second:?}");
    assert_eq!(retry.figures().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn requests_the_rule_does_not_select_get_one_attempt() {
    let (calls, dependency) = failing(Duration::ZERO);
    let retry = Retry::builder()
        .max_attempts(3)
        .build()
        .unwrap()
        .only(|n: &u32| n.is_multiple_of(2));
    let service = RetryLayer::new(retry).layer(dependency);
    let _ = service.clone().oneshot(1).await;
    assert_eq!(calls.lock().unwrap().len(), 1, "odd: not idempotent");
    let _ = service.oneshot(2).await;
    assert_eq!(calls.lock().unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_answers_once_the_retries_have_given_up() {
    let (calls, dependency) = failing(Duration::ZERO);
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(exact(ms(1)))
        .build()
        .unwrap();
    let policy = Policy::builder()
        .retry(retry)
        .fallback(Fallback::builder().value(0u32))
        .build()
        .unwrap();
    assert_eq!(policy.layer(dependency).oneshot(1).await.unwrap(), 0);
    assert_eq!(calls.lock().unwrap().len(), 3);
    let counts = policy.breaker().lifetime_counts();
    assert_eq!(
        (counts.failure, counts.fallback_success),
        (3, 1),
        "each attempt counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_budget_of_ten_percent_adds_exactly_ten_percent_in_a_total_outage() {
    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(0)
        .build()
        .unwrap();
    let (calls, dependency) = failing(Duration::ZERO);
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::none())
        .budget(budget.clone())
        .build()
        .unwrap();
    let service = Policy::builder()
        .retry(retry.clone())
        .build()
        .unwrap()
        .layer(dependency);
    for n in 0..1000 {
        let _ = service.clone().oneshot(n).await;
    }
    assert_eq!(
        calls.lock().unwrap().len(),
        1100,
        "the dependency sees 10% more"
    );
    let figures = retry.figures();
    assert_eq!((figures.requests, figures.retries), (1000, 100));
    // Every failure asked: 900 first attempts and the 100 retries.
    assert_eq!(figures.budget_refused, 1000);
    assert_eq!(budget.figures().withdrawn, 100);
}

/// Threads released together withdraw from one budget: exactly the tokens
/// it holds are granted, however the withdrawals interleave.
#[test]
fn concurrent_retries_never_overdraw_the_budget() {
    const THREADS: usize = 4;
    for round in 0..200 {
        let budget = RetryBudget::builder()
            .ratio(0.5)
            .min_per_second(0)
            .build()
            .unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let granted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (budget, barrier, granted) =
                    (budget.clone(), Arc::clone(&barrier), Arc::clone(&granted));
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..50 {
                        budget.deposit();
                        if budget.withdraw() {
                            granted.fetch_add(1, SeqCst);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // 200 deposits of half a token: 100 tokens, every one spent
        // (each thread ends on a withdrawal after its last deposit).
        let figures = budget.figures();
        assert_eq!(granted.load(SeqCst), figures.withdrawn, "round {round}");
        assert!(figures.withdrawn <= 100, "round {round}: {figures:?}");
        assert_eq!(
            figures.withdrawn + figures.balance,
            100,
            "round {round}: {figures:?}"
        );
    }
}

/// 64 callers against a failing dependency, through a Policy that retries
/// up to 3 times. Down: without a budget, retries multiply what the
/// dependency takes until the breaker opens; with a 10% budget, retries
/// are at most a tenth of the requests, and the breaker opens all the
/// same. Failing 3 calls in 10, below the breaker's threshold: without a
/// budget the dependency takes about 1.4 calls per request for as long as
/// it lasts; with one, at most 1.1.
#[tokio::test(start_paused = true)]
async fn a_retry_storm_is_bounded_by_the_budget_and_still_trips_the_breaker() {
    struct Storm {
        requests: u64,
        calls: u64,
        retries: u64,
        breaker: CircuitBreaker,
    }

    async fn storm(failing_in_ten: u64, budget: Option<RetryBudget>) -> Storm {
        let calls = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&calls);
        let dependency = service_fn(move |n: u32| {
            let fails = seen.fetch_add(1, SeqCst) % 10 < failing_in_ten;
            async move {
                tokio::time::sleep(ms(5)).await;
                if fails {
                    Err(std::io::Error::other("down"))
                } else {
                    Ok(n)
                }
            }
        });
        let mut retry = Retry::builder()
            .max_attempts(3)
            .backoff(Backoff::exponential(ms(10)));
        if let Some(budget) = budget {
            retry = retry.budget(budget);
        }
        let retry = retry.build().unwrap();
        let policy = Policy::builder()
            .circuit_breaker(
                CircuitBreaker::builder()
                    .window(Window::Time {
                        span: Duration::from_secs(10),
                        buckets: 10,
                    })
                    .minimum_calls(500)
                    .error_threshold(50.0)
                    .open_duration(OpenDuration::Fixed(Duration::from_secs(60))),
            )
            .retry(retry.clone())
            .build()
            .unwrap();
        let service = policy.layer(dependency);
        let tasks: Vec<_> = (0..64u32)
            .map(|task| {
                let service = service.clone();
                tokio::spawn(async move {
                    for n in 0..20 {
                        let _ = service.clone().oneshot(task * 100 + n).await;
                        tokio::time::sleep(ms(20)).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        Storm {
            requests: 64 * 20,
            calls: calls.load(SeqCst),
            retries: retry.figures().retries,
            breaker: policy.breaker().clone(),
        }
    }

    let unbounded = storm(10, None).await;
    assert_eq!(unbounded.breaker.state(), State::Open);
    let reached = unbounded.calls - unbounded.retries;
    assert!(
        unbounded.retries > reached,
        "without a budget, retries ({}) outnumber the requests that reached the dependency ({reached})",
        unbounded.retries
    );

    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(0)
        .build()
        .unwrap();
    let bounded = storm(10, Some(budget.clone())).await;
    assert_eq!(
        bounded.breaker.state(),
        State::Open,
        "the breaker still opens"
    );
    assert_eq!(bounded.retries, budget.figures().withdrawn);
    assert!(
        bounded.retries * 10 <= bounded.requests,
        "{} retries for {} requests",
        bounded.retries,
        bounded.requests
    );
    // Every call the dependency took was a request's first attempt or a
    // paid-for retry.
    let counts = bounded.breaker.lifetime_counts();
    assert_eq!(counts.failure, bounded.calls);
    assert_eq!(
        counts.failure + counts.short_circuited,
        bounded.requests + bounded.retries
    );

    let brownout = storm(3, None).await;
    assert_eq!(brownout.breaker.state(), State::Closed);
    assert!(
        brownout.calls * 10 > brownout.requests * 13,
        "{} calls",
        brownout.calls
    );
    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(0)
        .build()
        .unwrap();
    let bounded = storm(3, Some(budget)).await;
    assert_eq!(bounded.breaker.state(), State::Closed);
    assert_eq!(bounded.calls, bounded.requests + bounded.retries);
    assert!(
        bounded.calls * 10 <= bounded.requests * 11,
        "{} calls",
        bounded.calls
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_is_the_timeout_of_a_policy_without_one_and_counts_the_wait_in_line() {
    // No timeout of its own: the total stands in, and a hung dependency is
    // the dependency's timeout, which the breaker counts.
    let hung = service_fn(|_: u32| std::future::pending::<Result<u32, BoxError>>());
    let retry = Retry::builder()
        .max_attempts(2)
        .total_timeout(ms(1000))
        .build()
        .unwrap();
    let policy = Policy::builder().retry(retry).build().unwrap();
    let result = policy.layer(hung).oneshot(1).await;
    let Err(Error::Timeout(elapsed)) = result else {
        panic!("{result:?}")
    };
    assert!(!elapsed.is_callers_deadline());
    assert_eq!(policy.breaker().lifetime_counts().timeout, 1);

    // A call that waits 600 ms in the bulkhead's line has 400 ms left.
    let slow = service_fn(|n: u32| async move {
        if n == 0 {
            tokio::time::sleep(ms(600)).await;
            Ok(n)
        } else {
            std::future::pending::<Result<u32, BoxError>>().await
        }
    });
    let retry = Retry::builder()
        .max_attempts(1)
        .total_timeout(ms(1000))
        .build()
        .unwrap();
    let policy = Policy::builder()
        .bulkhead(Bulkhead::builder().queue(1, Duration::from_secs(5)))
        .retry(retry)
        .build()
        .unwrap();
    let service = policy.layer(slow);
    let started = Instant::now();
    let (first, second) = tokio::join!(service.clone().oneshot(0), service.oneshot(1));
    assert_eq!(first.unwrap(), 0);
    assert!(matches!(second, Err(Error::Timeout(_))), "{second:?}");
    assert_eq!(started.elapsed(), ms(1000));
}

#[tokio::test(start_paused = true)]
async fn a_service_that_cannot_get_ready_is_not_retried() {
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Poll};

    /// Fails its calls; after the first, it cannot get ready either.
    #[derive(Clone)]
    struct Broken(Arc<AtomicBool>);

    impl Service<u32> for Broken {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.0.load(SeqCst) {
                Poll::Ready(Err("worker gone".into()))
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, _: u32) -> Self::Future {
            self.0.store(true, SeqCst);
            std::future::ready(Err("reset".into()))
        }
    }

    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(exact(ms(1)))
        .build()
        .unwrap();
    let policy = Policy::builder().retry(retry.clone()).build().unwrap();
    let result = policy
        .layer(Broken(Arc::new(AtomicBool::new(false))))
        .oneshot(1)
        .await;
    let Err(Error::Inner(error)) = result else {
        panic!("{result:?}")
    };
    assert_eq!(error.to_string(), "worker gone");
    let figures = retry.figures();
    assert_eq!((figures.retries, figures.attempts_exhausted), (1, 0));
}

/// tower's own `Retry` can spend a seawall budget: under a total outage,
/// exactly its share of the attempts is retried. (tower asks its policy to
/// clone the request before every attempt that may be retried, retries
/// included, so a deposit there credits retries too: 100 requests and 11
/// retries deposit 11.1 tokens.)
#[cfg(feature = "tower-retry")]
#[tokio::test(start_paused = true)]
async fn towers_retry_spends_a_seawall_budget() {
    #[derive(Clone)]
    struct Budgeted(RetryBudget);

    impl tower::retry::Policy<u32, u32, BoxError> for Budgeted {
        type Future = std::future::Ready<()>;

        fn retry(
            &mut self,
            _: &mut u32,
            result: &mut Result<u32, BoxError>,
        ) -> Option<Self::Future> {
            (result.is_err() && self.0.withdraw()).then(|| std::future::ready(()))
        }

        fn clone_request(&mut self, request: &u32) -> Option<u32> {
            self.0.deposit();
            Some(*request)
        }
    }

    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(0)
        .build()
        .unwrap();
    let (calls, dependency) = failing(Duration::ZERO);
    let service = tower::retry::Retry::new(Budgeted(budget.clone()), dependency);
    for n in 0..100 {
        let _ = service.clone().oneshot(n).await;
    }
    assert_eq!(calls.lock().unwrap().len(), 111);
    assert_eq!(budget.figures().withdrawn, 11);
}
