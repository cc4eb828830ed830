//! What a circuit breaker adds to a call, next to its peers and to tower's
//! own middleware, on the same machine in the same run.
//!
//! Every variant guards the same always-ready inner service, so the numbers
//! are the middleware's own cost. Futures are polled once with a no-op waker
//! instead of through a runtime: the inner future is ready at once, and a
//! runtime's scheduling would cost more than the thing being measured.
//!
//! Run with `cargo bench -p seawall-benches --bench circuit_breaker`.

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use recloser::{AsyncRecloser, Recloser, RecloserFuture};
use seawall::circuit_breaker::CircuitBreaker;
use seawall::circuit_breaker::OpenDuration;
use seawall::classify::Verdict;
use seawall::window::Window;
use tower::{Layer, Service};

mod support;
use support::*;

/// Asserts that a call was refused at once, so an open-state number is the
/// rejection path.
fn assert_refused<S: Service<u64>>(service: &mut S) {
    assert!(
        matches!(drive(service, 7), Poll::Ready(Err(_))),
        "an open breaker must refuse the call"
    );
}

/// A breaker built like a user would, on the default (coarse) clock.
fn seawall_breaker(builder: seawall::circuit_breaker::CircuitBreakerBuilder) -> CircuitBreaker {
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

/// Trips a recloser the only way it offers: by failing enough calls.
fn trip_recloser(recloser: &Recloser) {
    for _ in 0..200 {
        let _ = recloser.call(|| Err::<(), ()>(()));
    }
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

criterion_group!(benches, closed, open, shared);
criterion_main!(benches);
