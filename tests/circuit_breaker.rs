//! The breaker's behaviour, with tokio's clock paused: every duration below
//! is exact.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use seawall::circuit_breaker::{
    CircuitBreaker, DroppedCall, OpenDuration, Reason, State, Transitions,
};
use seawall::classify::Verdict;
use seawall::window::Window;
use seawall::{BoxError, Error};
use tokio::time::{advance, sleep};
use tower::{service_fn, Layer, Service, ServiceExt};

/// What the test service does with a request.
#[derive(Clone, Copy, Debug)]
enum Act {
    Succeed,
    Fail,
    /// Succeeds after this long.
    Take(Duration),
    /// Never answers.
    Hang,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<&'static str, &'static str>> + Send>>;

/// A service that does what it is told and counts how often it was called.
fn dependency(
    calls: Arc<AtomicUsize>,
) -> impl Service<Act, Response = &'static str, Error = &'static str, Future = BoxFuture> + Clone {
    service_fn(move |act: Act| {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match act {
                Act::Succeed => Ok("ok"),
                Act::Fail => Err("boom"),
                Act::Take(d) => {
                    sleep(d).await;
                    Ok("slow ok")
                }
                Act::Hang => std::future::pending().await,
            }
        }) as BoxFuture
    })
}

struct Harness<S> {
    breaker: CircuitBreaker,
    service: S,
    inner_calls: Arc<AtomicUsize>,
    events: Transitions,
}

fn harness(
    breaker: CircuitBreaker,
) -> Harness<impl Service<Act, Response = &'static str, Error = Error<&'static str>> + Clone> {
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let service = breaker.layer().layer(dependency(inner_calls.clone()));
    let events = breaker.subscribe();
    Harness {
        breaker,
        service,
        inner_calls,
        events,
    }
}

impl<S> Harness<S>
where
    S: Service<Act, Response = &'static str, Error = Error<&'static str>>,
{
    async fn call(&mut self, act: Act) -> Result<&'static str, Error<&'static str>> {
        self.service.ready().await?.call(act).await
    }

    async fn calls(&mut self, act: Act, n: usize) {
        for _ in 0..n {
            let _ = self.call(act).await;
        }
    }

    fn inner_calls(&self) -> usize {
        self.inner_calls.load(Ordering::SeqCst)
    }

    fn next_event(&mut self) -> Option<(State, State, Reason)> {
        let next = self.events.try_recv().map(|t| (t.from, t.to, t.reason));
        assert_eq!(self.events.missed(), 0, "no transition lost");
        next
    }
}

fn retry_after(err: Error<&'static str>) -> Option<Duration> {
    match err {
        Error::CircuitOpen(open) => open.retry_after(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn hystrix_defaults() -> CircuitBreaker {
    CircuitBreaker::builder().name("hystrix").build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn hystrix_scenario_trips_at_the_twentieth_failure() {
    let mut h = harness(hystrix_defaults());

    h.calls(Act::Fail, 19).await;
    assert_eq!(
        h.breaker.state(),
        State::Closed,
        "19 calls are below the minimum of 20"
    );
    assert_eq!(h.next_event(), None);

    let twentieth = h.call(Act::Fail).await.unwrap_err();
    assert_eq!(
        twentieth.inner(),
        Some(&"boom"),
        "the tripping call itself went through"
    );
    assert_eq!(h.breaker.state(), State::Open);
    assert_eq!(
        h.next_event(),
        Some((State::Closed, State::Open, Reason::ErrorRate))
    );
    assert_eq!(h.inner_calls(), 20);

    // Open: refused at once, the inner service untouched, the wait exact.
    let refused = h.call(Act::Succeed).await.unwrap_err();
    assert_eq!(retry_after(refused), Some(Duration::from_secs(5)));
    advance(Duration::from_millis(4_999)).await;
    let refused = h.call(Act::Succeed).await.unwrap_err();
    assert_eq!(retry_after(refused), Some(Duration::from_millis(1)));
    assert_eq!(h.inner_calls(), 20);
    assert_eq!(h.breaker.counts().short_circuited, 2);

    // After 5 s one probe goes through and, succeeding, closes the breaker.
    advance(Duration::from_millis(1)).await;
    assert_eq!(h.call(Act::Succeed).await.unwrap(), "ok");
    assert_eq!(h.inner_calls(), 21);
    assert_eq!(
        h.next_event(),
        Some((State::Open, State::HalfOpen, Reason::OpenDurationElapsed))
    );
    assert_eq!(
        h.next_event(),
        Some((State::HalfOpen, State::Closed, Reason::ProbesSucceeded))
    );
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(
        h.breaker.counts().calls(),
        0,
        "closing starts a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_and_only_one_probe_goes_through() {
    let mut h = harness(hystrix_defaults());
    h.calls(Act::Fail, 20).await;
    advance(Duration::from_secs(5)).await;

    // The probe hangs; meanwhile every other call is refused.
    let probe = h.service.ready().await.unwrap().call(Act::Fail);
    assert_eq!(h.breaker.state(), State::HalfOpen);
    let refused = h.call(Act::Succeed).await.unwrap_err();
    match refused {
        Error::CircuitOpen(open) => {
            assert_eq!(open.state(), State::HalfOpen);
            assert_eq!(open.retry_after(), None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.inner_calls(), 21);

    assert_eq!(probe.await.unwrap_err().inner(), Some(&"boom"));
    assert_eq!(h.breaker.state(), State::Open);
    let _ = h.next_event();
    let _ = h.next_event();
    assert_eq!(
        h.next_event(),
        Some((State::HalfOpen, State::Open, Reason::ProbesFailed))
    );
    let refused = h.call(Act::Succeed).await.unwrap_err();
    assert_eq!(retry_after(refused), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn errors_below_the_threshold_do_not_trip() {
    let mut h = harness(hystrix_defaults());
    // 49% errors over 100 calls, failures last.
    h.calls(Act::Succeed, 51).await;
    h.calls(Act::Fail, 49).await;
    assert_eq!(h.breaker.state(), State::Closed);
    // Failures keep landing on the rising edge of the threshold.
    h.calls(Act::Fail, 1).await;
    assert_eq!(h.breaker.state(), State::Closed, "50/101 = 49.5%");
    h.calls(Act::Fail, 1).await;
    assert_eq!(h.breaker.state(), State::Open, "51/102 = 50%");
}

#[tokio::test(start_paused = true)]
async fn count_window_really_slides() {
    let breaker = CircuitBreaker::builder()
        .window(Window::count(100))
        .minimum_calls(100)
        .error_threshold(50.0)
        .build()
        .unwrap();
    let mut h = harness(breaker);
    h.calls(Act::Succeed, 10_000).await;
    h.calls(Act::Fail, 49).await;
    assert_eq!(
        h.breaker.state(),
        State::Closed,
        "49 failures of the last 100 calls"
    );
    h.calls(Act::Fail, 1).await;
    assert_eq!(
        h.breaker.state(),
        State::Open,
        "50 failures of the last 100 calls"
    );
    let event = h.events.try_recv().unwrap();
    assert_eq!((event.counts.success, event.counts.failure), (50, 50));
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_and_a_slow_probe_reopens() {
    let breaker = CircuitBreaker::builder()
        .minimum_calls(4)
        .disable_error_threshold()
        .slow_calls(Duration::from_millis(100), 50.0)
        .build()
        .unwrap();
    let mut h = harness(breaker);
    h.calls(Act::Take(Duration::from_millis(100)), 3).await; // not slower than 100 ms
    h.calls(Act::Take(Duration::from_millis(101)), 1).await;
    assert_eq!(h.breaker.state(), State::Closed, "1 slow of 4 = 25%");
    assert_eq!(h.breaker.counts().slow, 1);
    h.calls(Act::Take(Duration::from_millis(500)), 2).await;
    assert_eq!(h.breaker.state(), State::Open, "3 slow of 6 = 50%");
    assert_eq!(
        h.next_event(),
        Some((State::Closed, State::Open, Reason::SlowCallRate))
    );

    advance(Duration::from_secs(5)).await;
    assert!(h.call(Act::Take(Duration::from_secs(1))).await.is_ok());
    assert_eq!(
        h.breaker.state(),
        State::Open,
        "a successful but slow probe is a failed probe"
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_without_minimum_calls() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(3)
        .disable_error_threshold()
        .build()
        .unwrap();
    let mut h = harness(breaker);
    h.calls(Act::Fail, 2).await;
    h.calls(Act::Succeed, 1).await;
    h.calls(Act::Fail, 2).await;
    assert_eq!(h.breaker.state(), State::Closed, "a success broke the run");
    h.calls(Act::Fail, 1).await;
    assert_eq!(
        h.next_event(),
        Some((State::Closed, State::Open, Reason::ConsecutiveFailures))
    );
}

#[tokio::test(start_paused = true)]
async fn forced_states_override_the_statistics() {
    let mut h = harness(hystrix_defaults());

    h.breaker.force_open();
    let refused = h.call(Act::Succeed).await.unwrap_err();
    match refused {
        Error::CircuitOpen(open) => {
            assert_eq!(open.state(), State::ForcedOpen);
            assert_eq!(open.retry_after(), None);
        }
        other => panic!("{other:?}"),
    }
    advance(Duration::from_secs(3600)).await;
    assert!(
        h.call(Act::Succeed).await.unwrap_err().is_circuit_open(),
        "no timer releases it"
    );
    assert_eq!(h.inner_calls(), 0);

    h.breaker.force_closed();
    h.calls(Act::Fail, 100).await;
    assert_eq!(
        h.breaker.state(),
        State::ForcedClosed,
        "disabled: never trips"
    );
    assert_eq!(h.breaker.counts().failure, 100, "but still records");

    h.breaker.reset();
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.counts().calls(), 0);
    let reasons: Vec<_> = std::iter::from_fn(|| h.next_event()).map(|e| e.2).collect();
    assert_eq!(
        reasons,
        [Reason::ForcedOpen, Reason::ForcedClosed, Reason::Reset]
    );
}

#[tokio::test(start_paused = true)]
async fn open_duration_backs_off_exponentially_up_to_its_cap() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(OpenDuration::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(8),
            jitter: 0.0,
        })
        .build()
        .unwrap();
    let mut h = harness(breaker);
    h.calls(Act::Fail, 1).await;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let wait = retry_after(h.call(Act::Succeed).await.unwrap_err()).unwrap();
        waits.push(wait.as_secs());
        advance(wait).await;
        h.calls(Act::Fail, 1).await; // the probe fails
    }
    assert_eq!(waits, [1, 2, 4, 8, 8]);

    // A successful probe closes and forgets the trips.
    advance(Duration::from_secs(8)).await;
    h.calls(Act::Succeed, 1).await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.calls(Act::Fail, 1).await;
    let wait = retry_after(h.call(Act::Succeed).await.unwrap_err()).unwrap();
    assert_eq!(wait, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_within_its_bound() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_duration(OpenDuration::Exponential {
                initial: Duration::from_secs(10),
                multiplier: 2.0,
                max: Duration::from_secs(10),
                jitter: 0.5,
            })
            .build()
            .unwrap();
        let mut h = harness(breaker);
        h.calls(Act::Fail, 1).await;
        let wait = retry_after(h.call(Act::Succeed).await.unwrap_err()).unwrap();
        assert!(
            (Duration::from_secs(5)..=Duration::from_secs(10)).contains(&wait),
            "{wait:?}"
        );
        seen.insert(wait);
    }
    assert!(seen.len() > 10, "jitter spreads breakers apart: {seen:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let mut h = harness(hystrix_defaults());
    h.calls(Act::Fail, 20).await;
    advance(Duration::from_secs(5)).await;

    // Dropped before it is ever polled...
    let probe = h.service.ready().await.unwrap().call(Act::Hang);
    assert!(h.call(Act::Succeed).await.unwrap_err().is_circuit_open());
    drop(probe);
    // ...and dropped while waiting on the dependency.
    let probe = h.service.ready().await.unwrap().call(Act::Hang);
    let gave_up = tokio::time::timeout(Duration::from_secs(1), probe).await;
    assert!(gave_up.is_err());
    assert_eq!(
        h.breaker.state(),
        State::HalfOpen,
        "a dropped probe decides nothing"
    );

    assert_eq!(
        h.call(Act::Succeed).await.unwrap(),
        "ok",
        "the slot came back"
    );
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_can_count_as_failures() {
    let breaker = CircuitBreaker::builder()
        .minimum_calls(2)
        .dropped_calls(DroppedCall::CountAsFailure)
        .build()
        .unwrap();
    let mut h = harness(breaker);
    for _ in 0..2 {
        let call = h.service.ready().await.unwrap().call(Act::Hang);
        let _ = tokio::time::timeout(Duration::from_millis(10), call).await;
    }
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn an_idle_gap_longer_than_the_window_empties_it() {
    let mut h = harness(hystrix_defaults());
    h.calls(Act::Fail, 15).await;
    advance(Duration::from_secs(5)).await;
    h.calls(Act::Succeed, 4).await;
    assert_eq!(h.breaker.counts().calls(), 19);

    // The first 15 fall out whole once their bucket is 10 s old.
    advance(Duration::from_millis(4_999)).await;
    assert_eq!(h.breaker.counts().calls(), 19);
    advance(Duration::from_millis(1)).await;
    assert_eq!(h.breaker.counts().failure, 0);
    assert_eq!(h.breaker.counts().success, 4);

    // A long idle gap: nothing old comes back, and new calls count alone.
    advance(Duration::from_secs(3_600)).await;
    assert_eq!(h.breaker.counts().calls(), 0);
    h.calls(Act::Fail, 19).await;
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.counts().failure, 19);
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_from_before_a_trip_is_not_counted() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let slow_call = breaker.try_acquire().unwrap();
    breaker.try_acquire().unwrap().record(Verdict::Failure);
    assert_eq!(breaker.state(), State::Open);
    advance(Duration::from_secs(6)).await;
    // The old call succeeds after the open duration: it must not close the
    // breaker (only a probe can), nor count in the new state's window.
    slow_call.record(Verdict::Success);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.counts().success, 0);
    let probe = breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
}

#[tokio::test(start_paused = true)]
async fn a_success_admitted_before_the_breaker_opened_and_closed_again_counts_for_nothing() {
    // Timed or not, a verdict is booked by different code: both.
    for timed in [false, true] {
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(2)
            .track_latency(timed)
            .build()
            .unwrap();
        let old = breaker.try_acquire().unwrap();
        breaker.force_open();
        breaker.reset();
        assert_eq!(breaker.state(), State::Closed);
        breaker.try_acquire().unwrap().record(Verdict::Failure);
        old.record(Verdict::Success);
        assert_eq!(
            breaker.counts().success,
            0,
            "timed: {timed}: counted in the window of a state it was not admitted in"
        );
        assert_eq!(breaker.lifetime_counts().success, 1, "timed: {timed}");
        breaker.try_acquire().unwrap().record(Verdict::Failure);
        assert_eq!(
            breaker.state(),
            State::Open,
            "timed: {timed}: the old call's success broke the new state's run of failures"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn clones_and_layers_share_one_breaker() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let layer = breaker.layer();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut a = layer.layer(dependency(calls.clone()));
    let mut b = layer.layer(dependency(calls.clone())).clone();
    let _ = a.ready().await.unwrap().call(Act::Fail).await;
    assert!(b
        .ready()
        .await
        .unwrap()
        .call(Act::Succeed)
        .await
        .unwrap_err()
        .is_circuit_open());
    assert!(a.breakers().same_as(b.breakers()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn classifier_decides_what_is_a_failure() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let layer = breaker
        .layer()
        .classify(|result: &Result<u16, Error<&str>>| match result {
            Ok(status) if *status >= 500 => Verdict::Failure,
            Ok(status) if *status >= 400 => Verdict::Ignore,
            Ok(_) => Verdict::Success,
            Err(_) => Verdict::Failure,
        });
    let mut service = layer.layer(service_fn(
        |status: u16| async move { Ok::<_, &str>(status) },
    ));
    for status in [404, 404, 404, 200, 503] {
        service.ready().await.unwrap().call(status).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    let counts = breaker.counts();
    assert_eq!((counts.success, counts.failure), (1, 1), "404s are ignored");
    service.ready().await.unwrap().call(500).await.unwrap();
    assert_eq!(
        breaker.state(),
        State::Open,
        "a 5xx is a failure even though Ok"
    );
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_pass_through_and_record_nothing() {
    struct NeverReady;
    impl Service<()> for NeverReady {
        type Response = ();
        type Error = &'static str;
        type Future = std::future::Ready<Result<(), &'static str>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err("not ready"))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let breaker = hystrix_defaults();
    let mut service = breaker.layer().layer(NeverReady);
    let err = service.ready().await.err().unwrap();
    assert_eq!(err.inner(), Some(&"not ready"));
    assert_eq!(breaker.counts().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn errors_convert_into_box_error() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mut service = breaker.layer().layer(service_fn(|_: ()| async {
        Err::<(), BoxError>("upstream".into())
    }));
    let inner: BoxError = service
        .ready()
        .await
        .unwrap()
        .call(())
        .await
        .unwrap_err()
        .into();
    assert_eq!(inner.to_string(), "upstream");
    let open: BoxError = service
        .ready()
        .await
        .unwrap()
        .call(())
        .await
        .unwrap_err()
        .into();
    assert!(open.to_string().starts_with("circuit open"), "{open}");
}

#[test]
fn concurrent_recording_reconciles_exactly() {
    for window in [
        Window::time(Duration::from_secs(600), 1),
        Window::count(1_000_000),
    ] {
        let breaker = CircuitBreaker::builder().window(window).build().unwrap();
        breaker.force_closed();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let breaker = breaker.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        let verdict = if (i + t) % 4 == 0 {
                            Verdict::Failure
                        } else {
                            Verdict::Success
                        };
                        breaker.try_acquire().unwrap().record(verdict);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let counts = breaker.counts();
        assert_eq!(
            (counts.success, counts.failure),
            (60_000, 20_000),
            "{window:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_through_the_service_reconcile_exactly() {
    let breaker = CircuitBreaker::builder().build().unwrap();
    breaker.force_closed();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = breaker.layer().layer(dependency(calls.clone()));
    let tasks: Vec<_> = (0..100)
        .map(|t| {
            let mut service = service.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let act = if (t + i) % 10 == 0 {
                        Act::Fail
                    } else {
                        Act::Succeed
                    };
                    let _ = service.ready().await.unwrap().call(act).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counts = breaker.counts();
    assert_eq!((counts.success, counts.failure), (9_000, 1_000));
    assert_eq!(calls.load(Ordering::SeqCst), 10_000);
}

#[tokio::test(start_paused = true)]
async fn several_probes_decide_by_the_error_threshold() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .error_threshold(50.0)
        .half_open_probes(4)
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().record(Verdict::Failure);
    advance(Duration::from_secs(5)).await;
    let probes: Vec<_> = (0..4).map(|_| breaker.try_acquire().unwrap()).collect();
    assert!(probes.iter().all(|p| p.is_probe()));
    assert!(breaker.try_acquire().is_err(), "only four probes");
    let mut probes = probes.into_iter();
    probes.next().unwrap().record(Verdict::Failure);
    probes.next().unwrap().record(Verdict::Success);
    probes.next().unwrap().record(Verdict::Success);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "undecided until the last probe"
    );
    probes.next().unwrap().record(Verdict::Success);
    assert_eq!(
        breaker.state(),
        State::Closed,
        "1 failure of 4 is below 50%"
    );

    breaker.try_acquire().unwrap().record(Verdict::Failure);
    advance(Duration::from_secs(5)).await;
    let probes: Vec<_> = (0..4).map(|_| breaker.try_acquire().unwrap()).collect();
    let mut probes = probes.into_iter();
    probes.next().unwrap().record(Verdict::Failure);
    probes.next().unwrap().record(Verdict::Failure);
    assert_eq!(
        breaker.state(),
        State::Open,
        "2 failures of 4 reach 50%: no need to wait"
    );
}
