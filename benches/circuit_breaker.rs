//! What a circuit breaker adds to a call, next to its peers and to tower's
//! own middleware, on the same machine in the same run.
//!
//! Every variant guards the same always-ready inner service, so the numbers
//! are the middleware's own cost. Futures are polled once with a no-op waker
//! instead of through a runtime: the inner future is ready at once, and a
//! runtime's scheduling would cost more than the thing being measured.
//!
//! Run with `cargo bench --bench circuit_breaker`.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use futures::task::noop_waker_ref;
use recloser::{AsyncRecloser, Recloser, RecloserFuture};
use seawall::circuit_breaker::CircuitBreaker;
use seawall::circuit_breaker::OpenDuration;
use seawall::classify::Verdict;
use seawall::window::Window;
use tower::{Layer, Service};

type Measured<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The service every variant guards: ready at once, answers at once, never
/// fails, so only the wrapper's work differs between variants.
fn inner(
) -> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
       + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(|x: u64| std::future::ready(Ok::<u64, Infallible>(x)))
}

/// One whole tower call, `poll_ready` included, as a caller makes it: a
/// service that needs a permit per call (`ConcurrencyLimit`) pays for it
/// here, and everything the response future drops is dropped inside.
#[inline(always)]
fn drive<S: Service<u64>>(service: &mut S, request: u64) -> Poll<Result<S::Response, S::Error>> {
    let mut cx = Context::from_waker(noop_waker_ref());
    if !matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        // A pending service would make every later number meaningless.
        panic!("the benchmarked service must be ready at once");
    }
    let future = pin!(service.call(request));
    future.poll(&mut cx)
}

/// The answer as one word. Handing the optimizer the whole 16-byte `Poll`
/// instead made it store it as two words and reload it as one, a
/// store-forwarding stall: the bare service measured ~8 ns instead of ~1.
#[inline(always)]
fn settle<E>(poll: Poll<Result<u64, E>>) -> u64 {
    match poll {
        Poll::Ready(result) => answer(result),
        Poll::Pending => u64::MAX - 1,
    }
}

/// An answer or an error as one word (see [`settle`]).
#[inline(always)]
fn answer<E>(result: Result<u64, E>) -> u64 {
    result.unwrap_or(u64::MAX)
}

/// Asserts that a call answered at once with `Ok`, so a closed-state number
/// cannot come from a refused or pending call.
fn assert_passes<S: Service<u64>>(service: &mut S) {
    assert!(
        matches!(drive(service, 7), Poll::Ready(Ok(_))),
        "a closed breaker must let the call through"
    );
}

/// Asserts that a call was refused at once, so an open-state number is the
/// rejection path.
fn assert_refused<S: Service<u64>>(service: &mut S) {
    assert!(
        matches!(drive(service, 7), Poll::Ready(Err(_))),
        "an open breaker must refuse the call"
    );
}

/// A breaker built like a user would, on the default (coarse) clock.
fn seawall_breaker(builder: seawall::circuit_breaker::Builder) -> CircuitBreaker {
    let breaker = builder.clock(seawall::Clock::coarse()).build().unwrap();
    // The time window starts a bucket on the first call; do it before
    // measuring so the first sample does not pay for it.
    let _ = breaker.counts();
    breaker
}

/// breaker 2.0.2 with its documented preset; its tower layer is its
/// intended use with tower.
fn breaker_crate() -> breaker::CircuitBreaker {
    breaker::CircuitBreaker::new(breaker::CircuitBreakerConfig::standard())
}

/// recloser 1.4 with the settings resilience4j users know: 50% over the last
/// 100 calls (its defaults too). The open wait is long so a tripped one stays
/// open for the whole run.
fn recloser() -> Recloser {
    Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .open_wait(Duration::from_secs(3600))
        .build()
}

/// recloser has no tower layer; this is the least a user would write to get
/// one from its future-aware `AsyncRecloser`.
#[derive(Clone)]
struct RecloserService<S> {
    recloser: AsyncRecloser,
    inner: S,
}

impl<S: Service<u64>> Service<u64> for RecloserService<S> {
    type Response = S::Response;
    type Error = recloser::Error<S::Error>;
    type Future = RecloserFuture<S::Future, recloser::AnyError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(recloser::Error::Inner)
    }

    fn call(&mut self, request: u64) -> Self::Future {
        self.recloser.call(self.inner.call(request))
    }
}

/// recloser's own entry point is a synchronous closure: the closure makes
/// the same tower call the other variants make, so only recloser's work
/// differs.
#[inline(always)]
fn recloser_call<S: Service<u64>>(
    recloser: &Recloser,
    service: &mut S,
    request: u64,
) -> Result<S::Response, recloser::Error<S::Error>> {
    recloser.call(|| match drive(service, request) {
        Poll::Ready(result) => result,
        Poll::Pending => unreachable!("the inner service answers at once"),
    })
}

/// Trips a recloser the only way it offers: by failing enough calls.
fn trip_recloser(recloser: &Recloser) {
    for _ in 0..200 {
        let _ = recloser.call(|| Err::<(), ()>(()));
    }
}

/// Measures one service's calls.
fn bench_service<S: Service<u64, Response = u64>>(
    group: &mut Measured<'_>,
    name: &str,
    mut service: S,
) {
    group.bench_function(name, |b| {
        b.iter(|| black_box(settle(drive(&mut service, black_box(1)))))
    });
}

/// Closed breakers next to the bare service and tower's own middleware: the
/// price of guarding a healthy dependency, paid on every call.
fn closed(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed");
    configure(&mut group);

    let mut bare = inner();
    assert_passes(&mut bare);
    bench_service(&mut group, "bare", bare);

    let breaker = seawall_breaker(CircuitBreaker::builder());
    let mut service = breaker.layer().layer(inner());
    assert_passes(&mut service);
    bench_service(&mut group, "seawall", service);

    let breaker = seawall_breaker(CircuitBreaker::builder().window(Window::count(100)));
    let mut service = breaker.layer().layer(inner());
    assert_passes(&mut service);
    bench_service(&mut group, "seawall_count_window", service);

    let breaker = seawall_breaker(
        CircuitBreaker::builder()
            .track_latency(true)
            .slow_calls(Duration::from_secs(1), 50.0),
    );
    let mut service = breaker.layer().layer(inner());
    assert_passes(&mut service);
    bench_service(&mut group, "seawall_latency", service);

    let mut service = breaker::tower::BreakerLayer::new(breaker_crate()).layer(inner());
    assert_passes(&mut service);
    bench_service(&mut group, "breaker_crate", service);

    let recloser_sync = recloser();
    let mut service = inner();
    assert!(recloser_call(&recloser_sync, &mut service, 7).is_ok());
    group.bench_function("recloser", |b| {
        b.iter(|| {
            black_box(answer(recloser_call(
                &recloser_sync,
                &mut service,
                black_box(1),
            )))
        })
    });

    let mut service = RecloserService {
        recloser: AsyncRecloser::from(recloser()),
        inner: inner(),
    };
    assert_passes(&mut service);
    bench_service(&mut group, "recloser_async", service);

    // Timeout makes a tokio `Sleep` per call, which needs a runtime with a
    // timer to be entered (it is never polled: the inner future wins).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    {
        let _entered = runtime.enter();
        let mut service = tower::timeout::Timeout::new(inner(), Duration::from_secs(1));
        assert_passes(&mut service);
        bench_service(&mut group, "tower_timeout", service);
    }

    let mut service = tower::limit::ConcurrencyLimit::new(inner(), 100);
    assert_passes(&mut service);
    bench_service(&mut group, "tower_concurrency_limit", service);

    group.finish();
}

/// Open breakers: the rejection path, which is what an outage makes every
/// caller pay, so it must be at least as cheap as the closed path.
fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    configure(&mut group);

    let breaker = seawall_breaker(CircuitBreaker::builder());
    breaker.force_open();
    let mut service = breaker.layer().layer(inner());
    assert_refused(&mut service);
    bench_service(&mut group, "seawall_open", service);

    // Tripped by failures rather than forced: this state reads the clock
    // to say when it will let a probe through.
    let breaker = seawall_breaker(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_duration(OpenDuration::Fixed(Duration::from_secs(3600))),
    );
    breaker.try_acquire().unwrap().record(Verdict::Failure);
    let mut service = breaker.layer().layer(inner());
    assert_refused(&mut service);
    bench_service(&mut group, "seawall_open_tripped", service);

    // breaker 2.0.2 opens for 30 s (`standard`'s backoff) on `trip`, longer
    // than this group runs. Its layer calls the inner service before asking
    // the breaker, so this includes making the inner future.
    let tripped = breaker_crate();
    tripped.trip();
    let mut service = breaker::tower::BreakerLayer::new(tripped).layer(inner());
    assert_refused(&mut service);
    bench_service(&mut group, "breaker_crate_open", service);

    let recloser_sync = recloser();
    trip_recloser(&recloser_sync);
    let mut service = inner();
    assert!(recloser_call(&recloser_sync, &mut service, 7).is_err());
    group.bench_function("recloser_open", |b| {
        b.iter(|| {
            black_box(answer(recloser_call(
                &recloser_sync,
                &mut service,
                black_box(1),
            )))
        })
    });

    group.finish();
}

/// Runs `call` on two threads at once, `iters` times each, and gives the
/// wall time per call of both together: what a shared breaker costs when
/// its cache lines bounce between cores.
fn two_threads<F>(iters: u64, call: F) -> Duration
where
    F: FnMut(u64) + Clone + Send,
{
    // Both workers and the timer start together, so thread start-up is
    // outside the measurement.
    let start = Barrier::new(3);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let mut call = call.clone();
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    for i in 0..iters {
                        call(i);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for worker in workers {
            worker.join().unwrap();
        }
        began.elapsed() / 2
    })
}

/// Measures two threads calling clones of one service.
fn bench_shared<S>(group: &mut Measured<'_>, name: &str, service: S)
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // Each worker gets its own clone (as each connection would);
            // the clones share the breaker.
            let mut service = service.clone();
            two_threads(iters, move |x| {
                black_box(settle(drive(&mut service, black_box(x))));
            })
        })
    });
}

/// One breaker shared by two threads, as one breaker guards a dependency
/// for a whole multi-threaded server.
fn shared(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    configure(&mut group);

    bench_shared(&mut group, "bare", inner());

    let breaker = seawall_breaker(CircuitBreaker::builder());
    bench_shared(&mut group, "seawall", breaker.layer().layer(inner()));

    let breaker = seawall_breaker(CircuitBreaker::builder().window(Window::count(100)));
    bench_shared(
        &mut group,
        "seawall_count_window",
        breaker.layer().layer(inner()),
    );

    bench_shared(
        &mut group,
        "breaker_crate",
        breaker::tower::BreakerLayer::new(breaker_crate()).layer(inner()),
    );

    let shared_recloser = Arc::new(recloser());
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            let recloser = Arc::clone(&shared_recloser);
            let mut service = inner();
            two_threads(iters, move |x| {
                black_box(answer(recloser_call(&recloser, &mut service, black_box(x))));
            })
        })
    });

    group.finish();
}

/// Short enough that the whole run takes about a minute and a half.
fn configure(group: &mut Measured<'_>) {
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
}

criterion_group!(benches, closed, open, shared);
criterion_main!(benches);
