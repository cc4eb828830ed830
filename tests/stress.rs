//! Threads released together by a barrier on fresh windows, breakers and
//! registry keys, thousands of times over, with exact totals. Not timed: each
//! round waits for all of its threads, however loaded the machine.
//!
//! The races guarded against need threads that really run at once, so each
//! round hands a fresh target to long-lived threads and releases them
//! together; a round's threads never wait for anything but the barrier.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::{CircuitBreaker, Registry};
use seawall::classify::Verdict;
use seawall::policy::Policy;
use seawall::timeout::TimeoutLayer;
use seawall::window::{Outcome, RollingWindow, Window};
use seawall::{Clock, Error};
use tower::{service_fn, Layer, Service, ServiceExt};

const THREADS: usize = 8;
const CALLS: usize = 50;
const ROUNDS: usize = 2_000;

/// Runs `rounds` rounds: each makes a fresh target with `make`, lets
/// `THREADS` threads run `work(target, thread)` on it at once, then checks
/// it with `check`.
fn rounds<T: Send + Sync + 'static>(
    rounds: usize,
    make: impl Fn(usize) -> T,
    work: impl Fn(&T, usize) + Send + Sync + 'static,
    check: impl Fn(&T, usize),
) {
    let target: Arc<Mutex<Option<Arc<T>>>> = Arc::new(Mutex::new(None));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    // A thread whose work panics still comes to the barrier, and the round
    // fails with its message rather than leaving the others waiting.
    let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (target, start, done, failed, work) = (
                target.clone(),
                start.clone(),
                done.clone(),
                failed.clone(),
                work.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    start.wait();
                    let current = target.lock().unwrap().clone().unwrap();
                    let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        work(&current, thread)
                    }));
                    drop(current);
                    if let Err(panic) = worked {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|m| m.to_string()));
                        *failed.lock().unwrap() = Some(message.unwrap_or_default());
                    }
                    done.wait();
                }
            })
        })
        .collect();
    for round in 0..rounds {
        let current = Arc::new(make(round));
        *target.lock().unwrap() = Some(current.clone());
        start.wait();
        done.wait();
        if let Some(message) = failed.lock().unwrap().take() {
            panic!("round {round}: a thread failed: {message}");
        }
        check(&current, round);
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

fn outcome_of(thread: usize, call: usize) -> Outcome {
    if (thread + call).is_multiple_of(4) {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

const FAILURES: u64 = (THREADS * CALLS / 4) as u64;
const SUCCESSES: u64 = (THREADS * CALLS) as u64 - FAILURES;

#[test]
fn fresh_time_windows_count_every_call_of_a_burst() {
    rounds(
        ROUNDS,
        |_| {
            RollingWindow::new(
                Window::time(Duration::from_secs(600), 10),
                Clock::coarse(),
                false,
            )
            .unwrap()
        },
        |window, thread| {
            for call in 0..CALLS {
                window.record(outcome_of(thread, call), None, false);
            }
        },
        |window, round| {
            let counts = window.counts();
            assert_eq!(
                (counts.success, counts.failure),
                (SUCCESSES, FAILURES),
                "round {round}"
            );
        },
    );
}

#[test]
fn fresh_count_windows_count_every_call_of_a_burst() {
    rounds(
        ROUNDS,
        |_| {
            RollingWindow::new(
                Window::count((THREADS * CALLS) as u32),
                Clock::coarse(),
                true,
            )
            .unwrap()
        },
        |window, thread| {
            for call in 0..CALLS {
                let latency = Duration::from_micros((thread * call) as u64);
                window.record(outcome_of(thread, call), Some(latency), call % 2 == 0);
            }
        },
        |window, round| {
            let snapshot = window.snapshot();
            let counts = snapshot.counts;
            assert_eq!(
                (counts.success, counts.failure, counts.slow),
                (SUCCESSES, FAILURES, (THREADS * CALLS / 2) as u64),
                "round {round}"
            );
            assert_eq!(snapshot.latency.unwrap().count(), (THREADS * CALLS) as u64);
        },
    );
}

#[test]
fn fresh_breakers_count_every_call_of_a_burst() {
    rounds(
        ROUNDS,
        |_| {
            let breaker = CircuitBreaker::builder()
                .clock(Clock::coarse())
                .track_latency(true)
                .build()
                .unwrap();
            breaker.force_closed();
            breaker
        },
        |breaker, thread| {
            for call in 0..CALLS {
                let verdict = match outcome_of(thread, call) {
                    Outcome::Failure => Verdict::Failure,
                    _ => Verdict::Success,
                };
                breaker.try_acquire().unwrap().record(verdict);
            }
        },
        |breaker, round| {
            let counts = breaker.counts();
            assert_eq!(
                (counts.success, counts.failure),
                (SUCCESSES, FAILURES),
                "round {round}"
            );
            let lifetime = breaker.lifetime();
            assert_eq!(lifetime.counts, counts);
            assert_eq!(lifetime.latency.unwrap().count(), (THREADS * CALLS) as u64);
        },
    );
}

/// Fresh policies (breaker, bulkhead and timeout) called from every thread
/// at once, each thread holding two calls at a time: every call counted
/// once, every bulkhead slot given back, and none admitted past the limit.
#[test]
fn fresh_policies_count_every_call_of_a_burst() {
    const HELD: usize = 2;
    rounds(
        ROUNDS,
        |_| {
            let policy = Policy::builder()
                .clock(Clock::coarse())
                .timeout(Duration::from_secs(60))
                .bulkhead(Bulkhead::builder().max_concurrent(THREADS * HELD))
                .circuit_breaker(CircuitBreaker::builder())
                .build()
                .unwrap();
            policy.breaker().force_closed();
            policy
        },
        |policy, thread| {
            let mut service = policy.layer(service_fn(|outcome: Outcome| {
                ready(match outcome {
                    Outcome::Failure => Err("failed"),
                    _ => Ok(()),
                })
            }));
            let mut cx = Context::from_waker(Waker::noop());
            for pair in 0..CALLS / HELD {
                let calls: [_; HELD] = std::array::from_fn(|i| {
                    assert!(service.poll_ready(&mut cx).is_ready());
                    (
                        Box::pin(service.call(outcome_of(thread, pair * HELD + i))),
                        outcome_of(thread, pair * HELD + i),
                    )
                });
                for (mut call, outcome) in calls {
                    match call.as_mut().poll(&mut cx) {
                        Poll::Ready(Ok(())) => assert_eq!(outcome, Outcome::Success),
                        Poll::Ready(Err(Error::Inner("failed"))) => {
                            assert_eq!(outcome, Outcome::Failure)
                        }
                        other => panic!("a ready call ended {other:?}"),
                    }
                }
            }
        },
        |policy, round| {
            let counts = policy.breaker().counts();
            assert_eq!(
                (counts.success, counts.failure, counts.rejected),
                (SUCCESSES, FAILURES, 0),
                "round {round}"
            );
            let bulkhead = policy.bulkhead().unwrap();
            assert_eq!(
                (bulkhead.in_flight, bulkhead.admitted, bulkhead.rejected),
                (0, (THREADS * CALLS) as u64, 0),
                "round {round}"
            );
            assert!(
                bulkhead.max_in_flight_seen <= THREADS * HELD,
                "round {round}"
            );
        },
    );
}

/// Fresh cached fallbacks, their keys' hashes all equal (one slot of the
/// table of entries kept lately, taken in turns by sixteen keys): every
/// failure answered with its own key's answer, and no answer kept twice
/// while fresh.
#[cfg(feature = "cache")]
#[test]
fn fresh_cached_fallbacks_serve_every_failure_and_keep_one_answer_per_key() {
    use seawall::fallback::{Fallback, FallbackCache};

    const KEYS: u8 = 16;
    #[derive(PartialEq, Eq)]
    struct Colliding(u8);
    impl std::hash::Hash for Colliding {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            0u8.hash(state);
        }
    }
    let answer = |key: u8| u64::from(key) * 10;
    let upstream =
        move |(key, fail): (u8, bool)| ready(if fail { Err("failed") } else { Ok(answer(key)) });
    rounds(
        ROUNDS / 4,
        |_| {
            let cache = FallbackCache::<Colliding, u64>::builder()
                .clock(Clock::coarse())
                .refresh_after(Duration::from_secs(3_600))
                .build()
                .unwrap();
            let policy = Policy::builder()
                .clock(Clock::coarse())
                .circuit_breaker(CircuitBreaker::builder())
                .fallback(Fallback::keyed(|r: &(u8, bool)| Colliding(r.0)).cache(cache.clone()))
                .build()
                .unwrap();
            policy.breaker().force_closed();
            let mut service = policy.layer(service_fn(upstream));
            let mut cx = Context::from_waker(Waker::noop());
            for key in 0..KEYS {
                assert!(service.poll_ready(&mut cx).is_ready());
                let call = std::pin::pin!(service.call((key, false)));
                assert!(matches!(call.poll(&mut cx), Poll::Ready(Ok(_))));
            }
            (policy, cache)
        },
        move |(policy, _), thread| {
            let mut service = policy.layer(service_fn(upstream));
            let mut cx = Context::from_waker(Waker::noop());
            for call in 0..CALLS {
                let key = ((thread + call) % usize::from(KEYS)) as u8;
                let fail = outcome_of(thread, call) == Outcome::Failure;
                assert!(service.poll_ready(&mut cx).is_ready());
                let pending = std::pin::pin!(service.call((key, fail)));
                match pending.poll(&mut cx) {
                    Poll::Ready(Ok(got)) => assert_eq!(got, answer(key), "key {key}"),
                    other => panic!("key {key}, failing {fail}: {other:?}"),
                }
            }
        },
        |(policy, cache), round| {
            let figures = cache.figures();
            assert_eq!(
                (figures.stored, figures.hits, figures.misses),
                (u64::from(KEYS), FAILURES, 0),
                "round {round}"
            );
            assert_eq!(
                policy.breaker().counts().cache_hit,
                FAILURES,
                "round {round}"
            );
        },
    );
}

/// A registry builds a fresh breaker for each new key, under whatever burst
/// the key arrives with: every thread of a round calls through the same
/// new key.
#[test]
fn new_registry_keys_count_every_call_of_a_burst() {
    let registry = Registry::<usize>::builder(
        CircuitBreaker::builder()
            .clock(Clock::coarse())
            .minimum_calls(1_000_000),
    )
    .max_keys(100_000)
    .build()
    .unwrap();
    let for_threads = registry.clone();
    rounds(
        ROUNDS,
        |round| round,
        move |key, thread| {
            for call in 0..CALLS {
                let verdict = match outcome_of(thread, call) {
                    Outcome::Failure => Verdict::Failure,
                    _ => Verdict::Success,
                };
                for_threads.get(*key).try_acquire().unwrap().record(verdict);
            }
        },
        |key, round| {
            let counts = registry.get(*key).counts();
            assert_eq!(
                (counts.success, counts.failure),
                (SUCCESSES, FAILURES),
                "round {round}"
            );
        },
    );
}

/// Calls under timeouts with the coarse clock, whose deadlines seawall's
/// own alarms keep, made by threads released together: half never answer
/// (2 ms timeout) and half answer after a yield (a timeout of a minute,
/// which no load reaches). In every round each call ends as it should,
/// and none is left waiting (a lost wakeup would leave it for the 20 s
/// guard). A thread that finds a wrong ending says so after the round, and
/// every thread stops there, so that none is left at the barrier.
#[test]
fn pending_calls_on_many_threads_each_end_as_they_should() {
    const ALARM_ROUNDS: usize = 200;
    let service = |timeout| {
        TimeoutLayer::new(timeout)
            .clock(Clock::coarse())
            .layer(service_fn(|hang: bool| async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(())
            }))
    };
    let hangs = service(Duration::from_millis(2));
    let answers = service(Duration::from_secs(60));
    let start = Arc::new(Barrier::new(THREADS));
    let done = Arc::new(Barrier::new(THREADS));
    let failed = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (hangs, answers) = (hangs.clone(), answers.clone());
            let (start, done, failed) = (start.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                let mut wrong = Vec::new();
                for round in 0..ALARM_ROUNDS {
                    start.wait();
                    let ended = runtime.block_on(async {
                        let mut calls = tokio::task::JoinSet::new();
                        for call in 0..CALLS {
                            let hang = (thread + call + round) % 2 == 0;
                            let service = if hang { hangs.clone() } else { answers.clone() };
                            calls.spawn(async move {
                                tokio::select! {
                                    biased;
                                    () = tokio::time::sleep(Duration::from_secs(20)) => None,
                                    ended = service.oneshot(hang) => Some((hang, ended)),
                                }
                            });
                        }
                        let mut ended = Vec::new();
                        while let Some(call) = calls.join_next().await {
                            ended.push(call.unwrap());
                        }
                        ended
                    });
                    let (mut timed_out, mut answered) = (0, 0);
                    for call in ended {
                        match call {
                            Some((true, Err(Error::Timeout(_)))) => timed_out += 1,
                            Some((false, Ok(()))) => answered += 1,
                            other => wrong.push(format!("round {round}: {other:?}")),
                        }
                    }
                    if (timed_out, answered) != (CALLS / 2, CALLS / 2) {
                        wrong.push(format!(
                            "round {round}: {timed_out} timed out, {answered} answered"
                        ));
                    }
                    if !wrong.is_empty() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    done.wait();
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                }
                wrong
            })
        })
        .collect();
    let wrong: Vec<String> = threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
