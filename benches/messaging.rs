//! What the messaging services add to a message's trip through a broker,
//! over the in-memory broker (so the broker's own cost is a few hundred
//! nanoseconds, not a network round trip): a raw `Transport::publish`, the
//! `Publisher` service, the `Notifier` under a Policy with an outbox, and a
//! `Correlator` request answered by a task in the same runtime.
//!
//! Each iteration runs one message to completion on a current-thread
//! runtime (`block_on`, whose own cost is in every variant alike).
//!
//! Run with `cargo bench -p seawall-benches --bench messaging --features messaging`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::StreamExt;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::messaging::{Correlator, InMemory, Message, Notifier, Outbox, Publisher, Transport};
use seawall::policy::Policy;
use tower::{Layer, Service, ServiceExt};

fn message(subject: &'static str) -> Message {
    Message::new(subject, Bytes::from_static(b"42"))
}

fn messaging(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let broker = InMemory::new();
    // A subscriber, so every publish is delivered somewhere (and drained).
    let mut events = broker.subscribe_now("events");
    runtime.spawn(async move { while events.next().await.is_some() {} });

    let mut group = c.benchmark_group("messaging");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    group.bench_function("transport_publish", |b| {
        b.iter(|| runtime.block_on(broker.publish(black_box(message("events")))))
    });

    let mut publisher = Publisher::new(broker.clone());
    group.bench_function("publisher", |b| {
        b.iter(|| {
            runtime.block_on(async {
                publisher
                    .ready()
                    .await?
                    .call(black_box(message("events")))
                    .await
            })
        })
    });

    let policy = Policy::builder()
        .name("events")
        .timeout(Duration::from_secs(1))
        .circuit_breaker(CircuitBreaker::builder())
        .build()
        .unwrap();
    let mut notifier = Notifier::new(
        policy.layer(Publisher::new(broker.clone())),
        Outbox::new(1_000).unwrap(),
    );
    group.bench_function("notifier_policy_outbox", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let sent = notifier.ready().await;
                // Only whether it went: the error carries the message back.
                sent.unwrap()
                    .call(black_box(message("events")))
                    .await
                    .is_ok()
            })
        })
    });

    // A responder in the same runtime, answering every request at once.
    let mut requests = broker.subscribe_now("echo");
    let responder = broker.clone();
    runtime.spawn(async move {
        while let Some(request) = requests.next().await {
            responder.send(request.message().reply(Bytes::from_static(b"ok")).unwrap());
        }
    });
    let mut correlator = runtime
        .block_on(Correlator::builder(broker.clone()).build())
        .unwrap();
    group.bench_function("correlator_round_trip", |b| {
        b.iter(|| {
            runtime.block_on(async {
                correlator
                    .ready()
                    .await?
                    .call(black_box(message("echo")))
                    .await
            })
        })
    });
    group.finish();
}

criterion_group!(benches, messaging);
criterion_main!(benches);
