//! What a timeout and a bulkhead add to a call, next to tower's own
//! `Timeout` and `ConcurrencyLimit`, on the same machine in the same run.
//!
//! Run with `cargo bench -p seawall-benches --bench isolation`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::task::noop_waker_ref;
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::timeout::TimeoutLayer;
use seawall::{Clock, Error};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

mod support;
use support::*;

/// A future that is pending once (waking itself) and then ready: the
/// shape of any call that really waits, which makes a timeout arm its timer.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(Ok(1))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn pending_once(
) -> impl Service<u64, Response = u64, Error = Infallible, Future = PendingOnce> + Clone {
    tower::service_fn(|_: u64| PendingOnce(false))
}

/// Polls a call until it answers.
fn drive_to_end<S: Service<u64>>(service: &mut S, request: u64) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = pin!(service.call(request));
    loop {
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            return result;
        }
    }
}

fn bench_to_end<S: Service<u64, Response = u64>>(
    group: &mut Measured<'_>,
    name: &str,
    mut service: S,
) {
    assert!(drive_to_end(&mut service, 1).is_ok(), "{name} must answer");
    group.bench_function(name, |b| {
        b.iter(|| black_box(answer(drive_to_end(&mut service, black_box(1)))))
    });
}

/// Timeouts on an answer ready at once, and on one that waits once.
fn timeout(c: &mut Criterion) {
    // Timers need a runtime's time driver to register with.
    let runtime = timer_runtime();
    let _entered = runtime.enter();
    let second = Duration::from_secs(1);
    let mut group = c.benchmark_group("timeout");
    configure(&mut group);

    bench_to_end(&mut group, "bare", inner());
    let seawall = TimeoutLayer::new(second).clock(Clock::coarse());
    bench_to_end(&mut group, "seawall", seawall.layer(inner()));
    bench_to_end(
        &mut group,
        "tower",
        tower::timeout::Timeout::new(inner(), second),
    );

    bench_to_end(&mut group, "bare_pending_once", pending_once());
    bench_to_end(
        &mut group,
        "seawall_pending_once",
        seawall.layer(pending_once()),
    );
    bench_to_end(
        &mut group,
        "tower_pending_once",
        tower::timeout::Timeout::new(pending_once(), second),
    );
    group.finish();
}

/// A bulkhead with free permits, and a full one refusing.
fn bulkhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulkhead");
    configure(&mut group);

    bench_to_end(&mut group, "bare", inner());
    let free = Bulkhead::builder().max_concurrent(100).build().unwrap();
    bench_to_end(&mut group, "seawall", free.layer().layer(inner()));
    bench_to_end(
        &mut group,
        "tower_concurrency_limit",
        tower::limit::ConcurrencyLimit::new(inner(), 100),
    );

    // Full: one permit, held by a call that never ends.
    let full = Bulkhead::builder().max_concurrent(1).build().unwrap();
    let mut service = full.layer().layer(pending_once());
    let mut cx = Context::from_waker(noop_waker_ref());
    let _held = {
        assert!(service.poll_ready(&mut cx).is_ready());
        service.call(0)
    };
    let mut refusing = full.layer().layer(inner());
    assert!(matches!(
        drive_to_end(&mut refusing, 1),
        Err(Error::BulkheadFull(_))
    ));
    group.bench_function("seawall_full", |b| {
        b.iter(|| black_box(drive_to_end(&mut refusing, black_box(1)).is_err()))
    });
    group.finish();

    let mut group = c.benchmark_group("bulkhead_two_threads");
    configure(&mut group);
    bench_shared(&mut group, "bare", inner());
    bench_shared(&mut group, "seawall", free.layer().layer(inner()));
    // ConcurrencyLimit's clones share one semaphore, like the bulkhead.
    let limit = tower::limit::ConcurrencyLimitLayer::new(100);
    bench_shared(&mut group, "tower_concurrency_limit", limit.layer(inner()));
    group.finish();
}

/// Timeout, bulkhead and breaker stacked, next to tower's timeout and
/// concurrency limit stacked (tower has no breaker).
fn stack(c: &mut Criterion) {
    let runtime = timer_runtime();
    let _entered = runtime.enter();
    let second = Duration::from_secs(1);
    let mut group = c.benchmark_group("stack");
    configure(&mut group);

    let breaker = CircuitBreaker::builder()
        .clock(Clock::coarse())
        .build()
        .unwrap();
    let bulkhead = Bulkhead::builder().max_concurrent(100).build().unwrap();
    let seawall = ServiceBuilder::new()
        .layer(breaker.layer())
        .layer(bulkhead.layer())
        .layer(TimeoutLayer::new(second).clock(Clock::coarse()))
        .service(inner())
        .map_err(|_| ());
    bench_to_end(&mut group, "seawall_breaker_bulkhead_timeout", seawall);
    let tower = ServiceBuilder::new()
        .concurrency_limit(100)
        .timeout(second)
        .service(inner())
        .map_err(|_| ());
    bench_to_end(&mut group, "tower_concurrency_limit_timeout", tower);
    group.finish();
}

criterion_group!(benches, timeout, bulkhead, stack);
criterion_main!(benches);
