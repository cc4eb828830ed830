//! Notification, the pub/sub consumer and request/async response over
//! RabbitMQ (AMQP 0-9-1), each a resilient `tower::Service`.
//!
//! Needs a RabbitMQ broker on loopback, for example:
//!
//! ```text
//! apt-get install rabbitmq-server  # ./scripts/test installs it too
//! RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 /usr/lib/rabbitmq/bin/rabbitmq-server &
//! cargo run --example messaging_amqp --features amqp
//! ```
//!
//! `AMQP_URL` points it elsewhere (default `amqp://127.0.0.1:5672/%2f`).

use std::time::Duration;

use futures_util::StreamExt;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::messaging::amqp::AmqpTransport;
use seawall::messaging::{
    Consumer, Correlator, Decision, Message, Notifier, Outbox, Publisher, Transport,
};
use seawall::policy::Policy;
use seawall::retry::{Backoff, Jitter};
use seawall::{BoxError, Invalid};
use tower::{service_fn, Layer, Service, ServiceExt};

fn text(message: &Message) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    // Workers share the queue `example.orders.workers` (a quorum queue, so
    // RabbitMQ counts deliveries); what they reject goes to the exchange
    // `example.dead`, where the queue `example.orders.morgue` keeps it.
    let amqp = AmqpTransport::new(&url)
        .queue_group("workers")
        .dead_letter_exchange("example.dead");
    let morgue = AmqpTransport::new(&url)
        .exchange("example.dead")
        .queue_group("morgue");
    for (transport, subject) in [(&amqp, "example.orders"), (&morgue, "example.orders")] {
        transport.declare(subject).await.map_err(|e| {
            format!("no AMQP broker at {url} ({e}); start one: see the top of this file")
        })?;
    }

    // Notification: confirmed by the broker, or kept in the outbox.
    let policy = Policy::builder()
        .name("orders.publish")
        .timeout(Duration::from_secs(1))
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
        .build()?;
    let outbox = Outbox::new(1_000)?;
    let mut notifier = Notifier::new(policy.layer(Publisher::new(amqp.clone())), outbox.clone());
    for order in ["1", "2", "not a number", "4"] {
        let sent = notifier
            .ready()
            .await?
            .call(Message::new("example.orders", order))
            .await?;
        println!("order {order:?}: published = {}", sent.is_published());
    }

    // The consumer acks what it handles; an order that is not a number is
    // poison (`Invalid`: rejected at once, and not the dependency's fault,
    // so the breaker ignores it); order 4 fails on its first delivery and
    // comes back after the redelivery backoff.
    let handler = Policy::builder()
        .name("orders.handle")
        .timeout(Duration::from_secs(1))
        .build()?
        .layer(service_fn(|order: Message| async move {
            let n: u64 = text(&order).parse().map_err(Invalid::new)?;
            let id = order.id.as_deref().unwrap_or("-");
            let deliveries = order.deliveries.unwrap_or(0);
            if n == 4 && deliveries < 2 {
                println!("consumer: order {n} (id {id}) failed on delivery {deliveries}");
                return Err(BoxError::from("the warehouse is busy"));
            }
            println!("consumer: handled order {n} (id {id}, delivery {deliveries})");
            Ok(())
        }));
    let orders = amqp.subscribe("example.orders").await?;
    let figures = Consumer::new(handler)
        .concurrency(4)
        .redelivery_backoff(Backoff::exponential(Duration::from_millis(200)).jitter(Jitter::None))
        .run_until(orders, tokio::time::sleep(Duration::from_secs(1)))
        .await;
    println!(
        "consumer: {} acked, {} rejected, {} requeued",
        figures.acked, figures.rejected, figures.requeued
    );
    let mut buried = morgue.subscribe("example.orders").await?;
    if let Ok(Some(dead)) = tokio::time::timeout(Duration::from_secs(1), buried.next()).await {
        println!("dead-lettered: {:?}", text(dead.message()));
        dead.settle(Decision::Ack).await?;
    }

    // Request/async response through a private reply queue; the responders
    // share the group's queue for `example.rpc`.
    amqp.declare("example.rpc").await?;
    let mut requests = amqp.subscribe("example.rpc").await?;
    let responder = amqp.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let (message, settle) = request.into_parts();
            if let Some(reply) = message.reply(text(&message).to_uppercase()) {
                let _ = responder.publish(reply).await;
            }
            let _ = settle.send(Decision::Ack).await;
        }
    });
    let correlator = Correlator::builder(amqp.clone()).build().await?;
    let mut shout = Policy::builder()
        .name("rpc")
        .timeout(Duration::from_secs(2))
        .build()?
        .layer(correlator);
    let reply = shout
        .ready()
        .await?
        .call(Message::new("example.rpc", "hello"))
        .await?;
    println!("request/async response: {}", text(&reply));
    Ok(())
}
