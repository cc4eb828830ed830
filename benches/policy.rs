//! The whole Policy on a healthy call (timeout, bulkhead, breaker and a
//! fallback armed) next to the same stack built from tower's own layers and
//! the `breaker` crate's layer (the peer breaker with a tower layer), in one
//! run. Also prints heap allocations per call for each.
//!
//! Run with `cargo bench -p seawall-benches --bench policy`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use seawall::bulkhead::Bulkhead;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::fallback::Fallback;
use seawall::policy::Policy;
use seawall::Clock;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

mod support;
use support::*;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Prints how many allocations one call makes, over many calls.
fn report_allocations<S: Service<u64, Response = u64>>(name: &str, service: &mut S) {
    let per_call = allocations_per_call(10_000, |i| {
        black_box(settle(drive(service, i)));
    });
    println!("allocations per call, {name}: {per_call}");
}

fn stacks(c: &mut Criterion) {
    let runtime = timer_runtime();
    let _entered = runtime.enter();
    let second = Duration::from_secs(1);

    let policy = Policy::builder()
        .name("bench")
        .clock(Clock::coarse())
        .timeout(second)
        .bulkhead(Bulkhead::builder().max_concurrent(100))
        .circuit_breaker(CircuitBreaker::builder())
        .fallback(Fallback::builder().value(0u64))
        .build()
        .unwrap();
    let mut seawall = policy.layer(inner()).map_err(|_| ());
    let mut tower_peer = ServiceBuilder::new()
        .layer(breaker::tower::BreakerLayer::new(
            breaker::CircuitBreaker::new(breaker::CircuitBreakerConfig::standard()),
        ))
        .concurrency_limit(100)
        .timeout(second)
        .service(inner())
        .map_err(|_| ());
    let mut tower_only = ServiceBuilder::new()
        .concurrency_limit(100)
        .timeout(second)
        .service(inner())
        .map_err(|_| ());
    for (name, passes) in [
        (
            "seawall policy",
            matches!(drive(&mut seawall, 1), std::task::Poll::Ready(Ok(1))),
        ),
        (
            "tower + breaker",
            matches!(drive(&mut tower_peer, 1), std::task::Poll::Ready(Ok(1))),
        ),
        (
            "tower",
            matches!(drive(&mut tower_only, 1), std::task::Poll::Ready(Ok(1))),
        ),
    ] {
        assert!(passes, "{name} must answer at once");
    }
    report_allocations("seawall policy", &mut seawall);
    report_allocations(
        "tower timeout + concurrency limit + breaker 2.0.2",
        &mut tower_peer,
    );
    report_allocations("tower timeout + concurrency limit", &mut tower_only);

    let mut group = c.benchmark_group("policy");
    configure(&mut group);
    bench_service(&mut group, "bare", inner());
    bench_service(&mut group, "seawall_policy", seawall);
    bench_service(&mut group, "tower_timeout_limit_breaker_crate", tower_peer);
    bench_service(&mut group, "tower_timeout_limit", tower_only);
    group.finish();

    let mut group = c.benchmark_group("policy_two_threads");
    configure(&mut group);
    bench_shared(
        &mut group,
        "seawall_policy",
        policy.layer(inner()).map_err(|_| ()),
    );
    group.finish();
}

criterion_group!(benches, stacks);
criterion_main!(benches);
