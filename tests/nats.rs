//! The messaging styles over a real NATS server of the test's own
//! (`nats-server` on a free loopback port), including the server going away
//! mid-stream and a responder that is absent. Skips (with a reason) without
//! `nats-server`, except in CI.
//!
//! Subscribers and publishers of a test share one connection: the server
//! applies a connection's commands in order, so a message published after a
//! subscription is made always meets it. (Across connections a message can
//! overtake a subscription on its way to the server, as NATS documents.)

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use futures_util::StreamExt;
use seawall::circuit_breaker::{self, CircuitBreaker, OpenDuration};
use seawall::messaging::nats::NatsTransport;
use seawall::messaging::{
    Consumer, Correlator, Message, Notified, Notifier, NotifyError, Outbox, Publisher, Transport,
};
use seawall::policy::Policy;
use seawall::{BoxError, Error};
use support::nats::NatsServer;
use tokio::time::{sleep, timeout};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn text(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).unwrap()
}

async fn connect(server: &NatsServer) -> NatsTransport {
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| ms(50))
        .connect(server.address())
        .await
        .unwrap();
    NatsTransport::new(client)
}

/// Waits (at most 10 s) until `nats` is connected again.
async fn reconnected(nats: &NatsTransport) {
    timeout(Duration::from_secs(10), async {
        while nats.client().connection_state() != State::Connected {
            sleep(ms(20)).await;
        }
    })
    .await
    .expect("reconnected within 10 s");
}

/// Answers every request on `subject` with `"<payload><suffix>"`.
async fn respond(nats: NatsTransport, subject: &str, suffix: &'static str) -> Arc<Mutex<u64>> {
    let answered = Arc::new(Mutex::new(0));
    let mut requests = nats.subscribe(subject).await.unwrap();
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let reply = request
                .message()
                .reply(format!("{}{suffix}", text(request.message())));
            nats.publish(reply.unwrap()).await.unwrap();
            *count.lock().unwrap() += 1;
        }
    });
    answered
}

/// A breaker that opens after 3 failures in a row, for 300 ms.
fn quick_breaker() -> circuit_breaker::CircuitBreakerBuilder {
    CircuitBreaker::builder()
        .consecutive_failures(3)
        .open_duration(OpenDuration::Fixed(ms(300)))
}

#[tokio::test]
async fn requests_get_their_own_replies() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    respond(nats.clone(), "echo", "!").await;

    let correlator = Correlator::builder(nats)
        .timeout(ms(2000))
        .build()
        .await
        .unwrap();
    let calls = (0..50).map(|n| {
        correlator
            .clone()
            .oneshot(Message::new("echo", n.to_string()))
    });
    let replies = futures_util::future::join_all(calls).await;
    for (n, reply) in replies.into_iter().enumerate() {
        assert_eq!(text(&reply.unwrap()), format!("{n}!"));
    }
    let figures = correlator.figures();
    assert_eq!(
        (figures.matched, figures.unmatched, figures.pending),
        (50, 0, 0)
    );
}

#[tokio::test]
async fn a_queue_group_shares_the_requests() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let first = respond(nats.clone().queue_group("workers"), "work", "a").await;
    let second = respond(nats.clone().queue_group("workers"), "work", "b").await;
    let correlator = Correlator::builder(nats).build().await.unwrap();

    for n in 0..100 {
        let reply = correlator
            .clone()
            .oneshot(Message::new("work", n.to_string()))
            .await
            .unwrap();
        assert!(text(&reply).starts_with(&n.to_string()));
    }
    // Each request went to one member of the group: no duplicate replies.
    let (first, second) = (*first.lock().unwrap(), *second.lock().unwrap());
    assert_eq!(first + second, 100);
    assert!(
        first > 0 && second > 0,
        "both members served ({first}, {second})"
    );
    assert_eq!(correlator.figures().unmatched, 0);
}

#[tokio::test]
async fn a_gather_collects_every_responder_and_names_the_missing() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    for suffix in ["a", "b", "c"] {
        respond(nats.clone(), "quote", suffix).await;
    }
    let correlator = Correlator::builder(nats).build().await.unwrap();

    let mut all = correlator.scatter_gather(Some(3), Duration::from_secs(5));
    let gathered = all
        .ready()
        .await
        .unwrap()
        .call(Message::new("quote", "q"))
        .await
        .unwrap();
    let replies: BTreeSet<String> = gathered.replies.iter().map(text).collect();
    assert_eq!(replies, ["qa", "qb", "qc"].map(String::from).into());

    // A fourth responder is expected but absent.
    let mut four = correlator.scatter_gather(Some(4), ms(300));
    let gathered = four
        .ready()
        .await
        .unwrap()
        .call(Message::new("quote", "q"))
        .await
        .unwrap();
    assert_eq!(gathered.replies.len(), 3);
    assert_eq!(gathered.missing(), Some(1));
}

#[tokio::test]
async fn an_absent_responder_opens_the_breaker_and_traffic_resumes_when_it_is_back() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let correlator = Correlator::builder(nats.clone()).build().await.unwrap();
    let policy = Policy::builder()
        .name("prices")
        .timeout(ms(200))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let mut prices = policy.layer(correlator.clone());

    // Nobody answers: three timeouts, then refusals at once.
    for _ in 0..3 {
        let asked = prices
            .ready()
            .await
            .unwrap()
            .call(Message::new("price", "SWL"))
            .await;
        assert!(matches!(asked, Err(Error::Timeout(_))), "{asked:?}");
    }
    for _ in 0..10 {
        let asked = prices
            .ready()
            .await
            .unwrap()
            .call(Message::new("price", "SWL"))
            .await;
        assert!(matches!(asked, Err(Error::CircuitOpen(_))), "{asked:?}");
    }
    assert_eq!(
        correlator.figures().pending,
        0,
        "abandoned requests left nothing behind"
    );

    // The responder comes; once the breaker lets a probe through, answers flow.
    respond(nats, "price", "=42").await;
    // Twice the open time: the breaker reads a coarse clock, which a loaded
    // machine can leave a little behind tokio's.
    sleep(ms(600)).await;
    for _ in 0..10 {
        let asked = prices
            .ready()
            .await
            .unwrap()
            .call(Message::new("price", "SWL"))
            .await;
        assert_eq!(text(&asked.unwrap()), "SWL=42");
    }
}

#[tokio::test]
async fn a_consumer_handles_every_message_of_a_subscription() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let subscription = nats.subscribe("orders").await.unwrap();
    let publisher = nats.clone();
    for n in 0..50 {
        publisher
            .publish(Message::new("orders", n.to_string()))
            .await
            .unwrap();
    }
    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = Arc::clone(&handled);
    let policy = Policy::builder()
        .name("orders")
        .timeout(ms(500))
        .build()
        .unwrap();
    let handler = policy.layer(service_fn(move |order: Message| {
        let sink = Arc::clone(&sink);
        async move {
            sink.lock().unwrap().insert(text(&order).parse::<u64>()?);
            Ok::<_, BoxError>(())
        }
    }));
    let figures = Consumer::new(handler)
        .concurrency(4)
        .run_until(subscription, async {
            timeout(Duration::from_secs(10), async {
                while sink_len(&handled) < 50 {
                    sleep(ms(10)).await;
                }
            })
            .await
            .ok();
        })
        .await;
    assert_eq!(*handled.lock().unwrap(), (0..50).collect());
    assert_eq!((figures.handled, figures.acked), (50, 50));
}

fn sink_len(set: &Mutex<BTreeSet<u64>>) -> usize {
    set.lock().unwrap().len()
}

/// The server is killed mid-stream and started again: every notification
/// is published (with a JetStream receipt), kept in the outbox, or handed
/// back to its caller; none vanish. What reaches the subscriber is
/// everything published and everything the outbox kept, at least once (a
/// message whose receipt was lost with the server may arrive twice).
#[tokio::test]
async fn notifications_survive_the_server_going_away() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    // JetStream receipts: a publish resolves when a stream stored it.
    let nats = connect(&server).await.jetstream();
    // A core subscription on the same connection: it outlives the restart
    // (a JetStream consumer's subscription would end with the connection).
    let mut subscription = NatsTransport::new(nats.client().clone())
        .subscribe("events")
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        while let Some(event) = subscription.next().await {
            sink.lock()
                .unwrap()
                .push(text(event.message()).parse::<u64>().unwrap());
        }
    });

    async_nats::jetstream::new(nats.client().clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let policy = Policy::builder()
        .name("events")
        .timeout(ms(200))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let outbox = Outbox::new(1000).unwrap();
    let mut notifier = Notifier::new(policy.layer(Publisher::new(nats.clone())), outbox.clone());

    let (mut published, mut diverted) = (BTreeSet::new(), BTreeSet::new());
    let mut handed_back = BTreeSet::<u64>::new();
    let mut refused_while_open = 0;
    for n in 0..150u64 {
        if n == 50 {
            server.stop();
        }
        if n == 100 {
            server.restart().unwrap();
            reconnected(&nats).await;
            // Let the breaker let a probe through: twice its open time, as
            // it reads a coarse clock that a loaded machine can leave a
            // little behind tokio's.
            sleep(ms(600)).await;
        }
        match notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", n.to_string()))
            .await
        {
            Ok(Notified::Published) => published.insert(n),
            Ok(Notified::Diverted(error)) => {
                if error.is_circuit_open() {
                    refused_while_open += 1;
                }
                diverted.insert(n)
            }
            Err(NotifyError { message, .. }) => handed_back.insert(text(&message).parse().unwrap()),
        };
        sleep(ms(5)).await;
    }
    // Before the outage everything was published, and after it too.
    assert!((0..50).all(|n| published.contains(&n)), "{published:?}");
    assert!((100..150).all(|n| published.contains(&n)), "{published:?}");
    // During it, everything was diverted, most of it by the open
    // breaker (the first may have been stored just before the server died).
    assert!((51..100).all(|n| diverted.contains(&n)), "{diverted:?}");
    assert_eq!(published.len() + diverted.len(), 150);
    assert!(handed_back.is_empty());
    assert!(
        refused_while_open >= 30,
        "{refused_while_open} refused by the open breaker"
    );

    // The outbox sends what it kept.
    let mut publisher = Publisher::new(nats.clone());
    assert_eq!(outbox.flush(&mut publisher).await.unwrap(), diverted.len());

    let everything: BTreeSet<u64> = (0..150).collect();
    timeout(Duration::from_secs(10), async {
        while received
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            != everything
        {
            sleep(ms(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let got: BTreeSet<u64> = received.lock().unwrap().iter().copied().collect();
        panic!(
            "missing at the subscriber: {:?}",
            everything.difference(&got).collect::<Vec<_>>()
        )
    });
    // The subscriber may see a message twice (a publish the client kept
    // through the outage and sent again, and its copy from the outbox), but
    // the stream stores each once: both carry the message's id.
    let mut stream = async_nats::jetstream::new(nats.client().clone())
        .get_stream("EVENTS")
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 150);
}

/// A message sent twice (the same id) is stored once by JetStream; two
/// messages with the same payload are two messages.
#[tokio::test]
async fn jetstream_stores_a_message_sent_twice_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream();
    let mut stream = async_nats::jetstream::new(nats.client().clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "ONCE".into(),
            subjects: vec!["once".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut publisher = Publisher::new(nats);
    let order = Message::new("once", "order 1").with_id("order-1");
    let orders = [
        order.clone(),
        order,
        Message::new("once", "x"),
        Message::new("once", "x"),
    ];
    for message in orders {
        publisher
            .ready()
            .await
            .unwrap()
            .call(message)
            .await
            .unwrap();
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
}

/// With JetStream, the consumer's decisions reach the stream: the poison
/// message is terminated, messages refused by the open breaker are nak'd
/// and come back, and a second consumer of the same durable (queue group)
/// finds nothing left.
#[tokio::test]
async fn a_jetstream_consumer_acks_requeues_and_rejects() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream().queue_group("workers");
    async_nats::jetstream::new(nats.client().clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut publisher = Publisher::new(nats.clone());
    for n in 0..20 {
        let order = if n == 7 {
            "poison".to_owned()
        } else {
            n.to_string()
        };
        publisher
            .ready()
            .await
            .unwrap()
            .call(Message::new("orders", order))
            .await
            .unwrap();
    }

    // Forced open for the first 1.5 s: refused orders are requeued.
    let policy = Policy::builder()
        .name("orders")
        .timeout(ms(500))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    policy.breaker().force_open();
    let breaker = policy.breaker().clone();
    tokio::spawn(async move {
        sleep(ms(1500)).await;
        breaker.reset();
    });
    let handled = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&handled);
    let handler = policy.layer(service_fn(move |order: Message| {
        let sink = Arc::clone(&sink);
        async move {
            sink.lock().unwrap().push(text(&order).parse::<u64>()?);
            Ok::<_, BoxError>(())
        }
    }));
    let watched = Arc::clone(&handled);
    let figures = Consumer::new(handler)
        .run_until(nats.subscribe("orders").await.unwrap(), async move {
            let _ = timeout(Duration::from_secs(20), async {
                while watched.lock().unwrap().len() < 19 {
                    sleep(ms(20)).await;
                }
            })
            .await;
        })
        .await;
    let mut orders = handled.lock().unwrap().clone();
    orders.sort_unstable();
    assert_eq!(
        orders,
        (0..20).filter(|n| *n != 7).collect::<Vec<_>>(),
        "each once"
    );
    assert_eq!(
        (figures.acked, figures.rejected, figures.unsettled),
        (19, 1, 0)
    );
    assert!(figures.requeued >= 1 && figures.pauses >= 1, "{figures:?}");

    // The same durable consumer has nothing left to deliver.
    let again = Consumer::new(service_fn(|_: Message| async { Ok::<_, BoxError>(()) }))
        .decide(|_: &Result<(), BoxError>| seawall::messaging::Decision::Ack)
        .run_until(nats.subscribe("orders").await.unwrap(), sleep(ms(500)))
        .await;
    assert_eq!(again.handled, 0, "{again:?}");
}
