//! Every interaction style over NATS, each a resilient `tower::Service`.
//!
//! Needs a NATS server with JetStream on loopback, for example:
//!
//! ```text
//! apt-get install nats-server      # ./scripts/test installs it too
//! nats-server -a 127.0.0.1 -p 4222 -js &
//! cargo run --example messaging_nats --features nats,durable-outbox
//! ```
//!
//! `NATS_URL` points it elsewhere (default `127.0.0.1:4222`).

use std::time::Duration;

use futures_util::StreamExt;
use seawall::circuit_breaker::CircuitBreaker;
use seawall::messaging::nats::NatsTransport;
use seawall::messaging::{Consumer, Correlator, Message, Notifier, Outbox, Publisher, Transport};
use seawall::policy::Policy;
use seawall::retry::Backoff;
use seawall::BoxError;
use tower::{service_fn, Layer, Service, ServiceExt};

fn text(message: &Message) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

/// A price service: answers `"<symbol>=<price>"` on `prices`, in a queue
/// group so instances share the requests, and on `quotes`, where every
/// instance answers.
async fn price_service(nats: NatsTransport, price: u32) -> Result<(), BoxError> {
    let shared = nats
        .clone()
        .queue_group("prices")
        .subscribe("prices")
        .await?;
    let every = nats.subscribe("quotes").await?;
    let mut requests = futures_util::stream::select(shared, every);
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let symbol = text(request.message());
            if let Some(reply) = request.message().reply(format!("{symbol}={price}")) {
                let _ = nats.publish(reply).await;
            }
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".into());
    let client = async_nats::connect(&url).await.map_err(|e| {
        format!("no NATS server at {url} ({e}); start one: nats-server -a 127.0.0.1 -p 4222 -js")
    })?;
    let nats = NatsTransport::new(client);
    for price in [101, 102] {
        price_service(nats.clone(), price).await?;
    }

    // Request/async response, under a Policy: timeout, breaker.
    let correlator = Correlator::builder(nats.clone()).build().await?;
    let policy = Policy::builder()
        .name("prices")
        .timeout(Duration::from_millis(500))
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
        .build()?;
    let mut prices = policy.layer(correlator.clone());
    for symbol in ["SWL", "TWR", "TKO"] {
        let reply = prices
            .ready()
            .await?
            .call(Message::new("prices", symbol))
            .await?;
        println!("request/async response: {}", text(&reply));
    }

    // Nobody serves "news": the breaker opens after three timeouts, and
    // later calls are refused at once.
    let news_policy = Policy::builder()
        .name("news")
        .timeout(Duration::from_millis(200))
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
        .build()?;
    let mut news = news_policy.layer(correlator.clone());
    for _ in 0..5 {
        let asked = news
            .ready()
            .await?
            .call(Message::new("news", "latest"))
            .await;
        println!(
            "no responder: {}",
            asked.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }

    // Publish/async responses: every price service answers one request;
    // a third was expected, and is reported missing.
    let mut quotes = correlator.scatter_gather(Some(3), Duration::from_millis(300));
    let gathered = quotes
        .ready()
        .await?
        .call(Message::new("quotes", "SWL"))
        .await?;
    let replies: Vec<String> = gathered.replies.iter().map(text).collect();
    println!(
        "scatter-gather: {replies:?}, {:?} missing",
        gathered.missing()
    );

    // Notification with JetStream receipts, diverted to an outbox if NATS
    // cannot take it.
    let jetstream = async_nats::jetstream::new(nats.client().clone());
    jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "EXAMPLE_EVENTS".into(),
            subjects: vec!["example.events".into()],
            ..Default::default()
        })
        .await?;
    let events = Policy::builder()
        .name("events")
        .timeout(Duration::from_secs(1))
        .build()?;
    // The outbox is on disk: what it keeps survives this process dying,
    // and its flusher sends it once NATS takes messages again. Each
    // message's id travels as `Nats-Msg-Id`, so a copy sent twice is
    // stored once.
    let outbox = Outbox::open(
        std::env::temp_dir().join("seawall-example-outbox.redb"),
        1_000,
    )?;
    let _flusher = outbox.spawn_flusher(
        events.layer(Publisher::new(nats.clone().jetstream())),
        Backoff::exponential(Duration::from_millis(100)),
    );
    let mut notifier = Notifier::new(
        events.layer(Publisher::new(nats.clone().jetstream())),
        outbox.clone(),
    );

    // Publish/subscribe, consumer side: a handler under a Policy.
    let subscription = nats.subscribe("example.events").await?;
    let handler = Policy::builder()
        .name("audit")
        .timeout(Duration::from_secs(1))
        .build()?;
    let consumer = Consumer::new(handler.layer(service_fn(|event: Message| async move {
        println!(
            "consumer: handled {} (id {})",
            text(&event),
            event.id.as_deref().unwrap_or("-")
        );
        Ok::<_, BoxError>(())
    })));
    let consuming = tokio::spawn(
        consumer.run_until(subscription, tokio::time::sleep(Duration::from_millis(500))),
    );
    for n in 1..=3 {
        let sent = notifier
            .ready()
            .await?
            .call(Message::new("example.events", format!("event {n}")))
            .await?;
        println!("notification {n}: published = {}", sent.is_published());
    }
    let figures = consuming.await?;
    println!(
        "consumer: {} acked, outbox holds {}",
        figures.acked,
        outbox.len()
    );
    Ok(())
}
