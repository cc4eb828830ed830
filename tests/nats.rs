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
use async_nats::jetstream::consumer::pull;
use futures_util::StreamExt;
use seawall::circuit_breaker::{self, CircuitBreaker, OpenDuration};
use seawall::messaging::nats::{ConsumerSettings, NatsTransport};
use seawall::messaging::{
    AtLeast, Consumer, Correlator, Decision, Message, Notified, Notifier, NotifyError, Outbox,
    Publisher, RequestError, Transport,
};
use seawall::policy::Policy;
use seawall::retry::{Backoff, Jitter};
use seawall::{BoxError, Error, Invalid};
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

    // Nobody subscribes: the server says so at once, three times, then
    // the breaker refuses at once.
    for _ in 0..3 {
        let asked = prices
            .ready()
            .await
            .unwrap()
            .call(Message::new("price", "SWL"))
            .await;
        assert!(
            matches!(asked, Err(Error::Inner(RequestError::NoResponders { .. }))),
            "{asked:?}"
        );
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
    // The server's "no responders" statuses are nobody's replies.
    let figures = correlator.figures();
    assert_eq!(
        (figures.matched, figures.unmatched, figures.no_responders),
        (0, 0, 3)
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

/// Defect 6 of issue 20: a request to a subject nobody subscribes to ends
/// on the server's "no responders" status, not after the correlator's
/// time limit (5 s here; each call is given 2 s).
#[tokio::test]
async fn a_request_nobody_subscribes_to_is_refused_at_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let correlator = Correlator::builder(nats)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut refused = 0;
    let mut other = Vec::new();
    for n in 0..10 {
        let asked = timeout(
            Duration::from_secs(2),
            correlator
                .clone()
                .oneshot(Message::new("nobody.home", n.to_string())),
        )
        .await;
        match asked {
            Ok(Err(RequestError::NoResponders { subject })) => {
                assert_eq!(subject, "nobody.home");
                refused += 1;
            }
            other_outcome => other.push(format!("{other_outcome:?}")),
        }
    }
    assert_eq!(refused, 10, "other outcomes: {other:?}");
    let figures = correlator.figures();
    assert_eq!(
        (
            figures.matched,
            figures.unmatched,
            figures.no_responders,
            figures.pending
        ),
        (0, 0, 10, 0)
    );
}

/// The refusals count against the dependency: a breaker over the
/// correlator (no Policy timeout) opens on them.
#[tokio::test]
async fn no_responders_open_the_breaker() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let correlator = Correlator::builder(nats)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let policy = Policy::builder()
        .name("absent")
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
        .build()
        .unwrap();
    let absent = policy.layer(correlator.clone());
    let (mut refused, mut open, mut other) = (0, 0, Vec::new());
    for _ in 0..10 {
        let asked = timeout(
            Duration::from_secs(2),
            absent.clone().oneshot(Message::new("absent", "?")),
        )
        .await;
        match asked {
            Ok(Err(Error::Inner(RequestError::NoResponders { .. }))) => refused += 1,
            Ok(Err(Error::CircuitOpen(_))) => open += 1,
            other_outcome => other.push(format!("{other_outcome:?}")),
        }
    }
    assert_eq!((refused, open), (3, 7), "other outcomes: {other:?}");
    assert_eq!(
        policy.breaker().state(),
        seawall::circuit_breaker::State::Open
    );
    assert_eq!(correlator.figures().no_responders, 3);
}

/// A gather over a subject nobody subscribes to ends at once, empty, with
/// every expected reply missing; [`AtLeast`] counts it as a failure.
#[tokio::test]
async fn a_gather_nobody_subscribes_to_ends_at_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let correlator = Correlator::builder(nats).build().await.unwrap();
    for expected in [Some(3), None] {
        let gather = correlator.scatter_gather(expected, Duration::from_secs(5));
        let gathered = timeout(
            Duration::from_secs(2),
            gather.oneshot(Message::new("quote.none", "q")),
        )
        .await
        .expect("ended within 2 s, not after 5")
        .unwrap();
        assert!(gathered.replies.is_empty());
        assert_eq!(gathered.missing(), expected);
    }

    let policy = Policy::builder()
        .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
        .classify(AtLeast(1))
        .build()
        .unwrap();
    let quotes = policy.layer(correlator.scatter_gather(Some(3), Duration::from_secs(5)));
    let mut ended = 0;
    for _ in 0..3 {
        let gathered = timeout(
            Duration::from_secs(2),
            quotes.clone().oneshot(Message::new("quote.none", "q")),
        )
        .await;
        if matches!(gathered, Ok(Ok(ref gathered)) if gathered.replies.is_empty()) {
            ended += 1;
        }
    }
    assert_eq!(ended, 3);
    assert_eq!(
        policy.breaker().state(),
        seawall::circuit_breaker::State::Open
    );
    let figures = correlator.figures();
    assert_eq!((figures.matched, figures.no_responders), (0, 5));
}

/// A reply address of the caller's own is not one of the transport's
/// inboxes: the status there names no request and is dropped, as before,
/// and the request waits out its time limit.
#[tokio::test]
async fn a_reply_subject_of_ones_own_still_waits_for_its_time_limit() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let correlator = Correlator::builder(nats)
        .reply_subject("my.replies")
        .timeout(ms(300))
        .build()
        .await
        .unwrap();
    let asked = timeout(
        Duration::from_secs(2),
        correlator.clone().oneshot(Message::new("nobody.home", "?")),
    )
    .await;
    assert!(
        matches!(asked, Ok(Err(RequestError::NoReply { .. }))),
        "{asked:?}"
    );
    let figures = correlator.figures();
    assert_eq!(
        (figures.matched, figures.unmatched, figures.no_responders),
        (0, 0, 0)
    );
}

/// A plain NATS responder answers the request's NATS reply subject
/// (`inbox.<correlation id>`) without copying the correlation header; the
/// reply is matched by its subject.
#[tokio::test]
async fn a_plain_nats_responder_is_answered_through_the_reply_subject() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await;
    let client = nats.client().clone();
    let mut requests = client.subscribe("plain").await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let reply = request.reply.expect("a reply subject");
            let mut answer = request.payload.to_vec();
            answer.push(b'!');
            client.publish(reply, answer.into()).await.unwrap();
        }
    });
    let correlator = Correlator::builder(nats)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut answered = 0;
    for n in 0..5 {
        let asked = timeout(
            Duration::from_secs(2),
            correlator
                .clone()
                .oneshot(Message::new("plain", n.to_string())),
        )
        .await;
        if let Ok(Ok(reply)) = asked {
            assert_eq!(text(&reply), format!("{n}!"));
            assert_eq!(reply.subject, correlator.reply_subject());
            answered += 1;
        }
    }
    assert_eq!(answered, 5);
    let figures = correlator.figures();
    assert_eq!((figures.matched, figures.unmatched), (5, 0));
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
            // Malformed: poison, rejected at once.
            let order = text(&order).parse::<u64>().map_err(Invalid::new)?;
            sink.lock().unwrap().push(order);
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

/// Makes a stream `name` capturing `subject`, and returns it.
async fn stream(
    nats: &NatsTransport,
    name: &str,
    subject: &str,
) -> async_nats::jetstream::stream::Stream {
    async_nats::jetstream::new(nats.client().clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Publishes `payloads` to `subject`, each stored by the stream.
async fn publish_all(
    nats: &NatsTransport,
    subject: &str,
    payloads: impl IntoIterator<Item = String>,
) {
    for payload in payloads {
        nats.publish(Message::new(subject, payload)).await.unwrap();
    }
}

/// What a handler saw of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    payload: String,
    deliveries: Option<u32>,
    redelivered: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A handler under a policy that logs every delivery, takes `work`, and
/// fails on `"poison"` (a passing failure, not [`Invalid`]: requeued).
fn logging_handler(
    log: &Log,
    work: Duration,
) -> impl Service<Message, Response = (), Error = Error<BoxError>, Future: Send> + Clone + Send + 'static
{
    let policy = Policy::builder()
        .name("jetstream")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let log = Arc::clone(log);
    policy.layer(service_fn(move |message: Message| {
        let log = Arc::clone(&log);
        async move {
            let payload = text(&message);
            log.lock().unwrap().push(Seen {
                payload: payload.clone(),
                deliveries: message.deliveries,
                redelivered: message.redelivered,
            });
            if !work.is_zero() {
                sleep(work).await;
            }
            if payload == "poison" {
                return Err::<(), BoxError>("always fails".into());
            }
            Ok(())
        }
    }))
}

/// Waits (at most `limit`) until `done` holds for the log, then until
/// nothing more arrives for `quiet`, so that deliveries too many are seen
/// and counted.
async fn until(log: &Log, limit: Duration, quiet: Duration, done: impl Fn(&[Seen]) -> bool) {
    let _ = timeout(limit, async {
        while !done(&log.lock().unwrap()) {
            sleep(ms(20)).await;
        }
        loop {
            let seen = log.lock().unwrap().len();
            sleep(quiet).await;
            if log.lock().unwrap().len() == seen {
                break;
            }
        }
    })
    .await;
}

fn count(log: &[Seen], payload: &str) -> usize {
    log.iter().filter(|seen| seen.payload == payload).count()
}

/// A durable consumer an operator made (max_deliver 3, ack_wait 2 s) is
/// used as it is by a queue group subscribing to it, and changed only when
/// the settings ask for it.
#[tokio::test]
async fn a_pre_created_durable_consumer_keeps_its_settings() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream().queue_group("keepers");
    let stream = stream(&nats, "KEEP", "keep").await;
    stream
        .create_consumer(pull::Config {
            durable_name: Some("keepers".into()),
            filter_subject: "keep".into(),
            max_deliver: 3,
            ack_wait: Duration::from_secs(2),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut subscription = nats.subscribe("keep").await.unwrap();
    publish_all(&nats, "keep", ["a".to_owned()]).await;
    let delivery = timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("delivered through the existing consumer")
        .unwrap();
    assert_eq!(text(delivery.message()), "a");
    delivery.into_parts().1.send(Decision::Ack).await.unwrap();
    let config = stream.consumer_info("keepers").await.unwrap().config;
    assert_eq!(
        (config.max_deliver, config.ack_wait),
        (3, Duration::from_secs(2)),
        "subscribing left the consumer as its owner made it"
    );

    // Told to, it updates the consumer to the settings.
    let _updated = nats
        .clone()
        .consumer_settings(
            ConsumerSettings::new()
                .max_deliver(5)
                .ack_wait(Duration::from_secs(4))
                .reconfigure(),
        )
        .subscribe("keep")
        .await
        .unwrap();
    let config = stream.consumer_info("keepers").await.unwrap().config;
    assert_eq!(
        (config.max_deliver, config.ack_wait, config.max_ack_pending),
        (5, Duration::from_secs(4), 10)
    );
}

/// Without a queue group a subscriber hears what is published from now on,
/// like a core subscriber: 25 stored before it subscribed, 25 after; it
/// gets the 25 after, each once.
#[tokio::test]
async fn an_ephemeral_jetstream_subscriber_hears_only_new_messages() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream();
    stream(&nats, "NEWS", "news").await;
    publish_all(&nats, "news", (0..25).map(|n| n.to_string())).await;
    let mut subscription = nats.subscribe("news").await.unwrap();
    publish_all(&nats, "news", (25..50).map(|n| n.to_string())).await;

    let mut received = Vec::new();
    // Until nothing more comes for 500 ms: a replay would come at once.
    while let Ok(Some(delivery)) = timeout(ms(500), subscription.next()).await {
        let (message, settle) = delivery.into_parts();
        received.push(text(&message).parse::<u64>().unwrap());
        settle.send(Decision::Ack).await.unwrap();
    }
    received.sort_unstable();
    assert_eq!(received.len(), 25, "{received:?}");
    assert_eq!(received, (25..50).collect::<Vec<_>>());
}

/// A slow handler (250 ms a message, one at a time) with a short ack_wait
/// (1 s): with the prefetch matching the concurrency, no message waits in
/// the client past its ack_wait, so none is delivered twice.
#[tokio::test]
async fn a_slow_handler_gets_each_message_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server)
        .await
        .jetstream()
        .queue_group("slow")
        .consumer_settings(
            ConsumerSettings::new()
                .prefetch(1)
                .ack_wait(Duration::from_secs(1)),
        );
    stream(&nats, "SLOW", "slow").await;
    publish_all(&nats, "slow", (0..20).map(|n| n.to_string())).await;

    let log = Log::default();
    let consumer = Consumer::new(logging_handler(&log, ms(250))).concurrency(1);
    let watched = Arc::clone(&log);
    let figures = consumer
        .run_until(nats.subscribe("slow").await.unwrap(), async move {
            until(&watched, Duration::from_secs(15), ms(600), |log| {
                (0..20).all(|n| count(log, &n.to_string()) > 0)
            })
            .await;
        })
        .await;
    let log = log.lock().unwrap().clone();
    let duplicates = log.len() - (0..20).filter(|n| count(&log, &n.to_string()) > 0).count();
    assert_eq!((log.len(), duplicates), (20, 0), "{log:?}");
    assert!(log
        .iter()
        .all(|seen| seen.deliveries == Some(1) && !seen.redelivered));
    assert_eq!(
        (
            figures.handled,
            figures.acked,
            figures.redelivered,
            figures.requeued,
            figures.unsettled
        ),
        (20, 20, 0, 0, 0)
    );
}

/// Each delivery carries the server's count; a message whose handling
/// always fails is rejected on its third delivery (the consumer's
/// maximum), after two requeues, and the server has nothing left to send.
#[tokio::test]
async fn a_failing_message_is_delivered_at_most_the_consumers_maximum() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream().queue_group("failing");
    let stream = stream(&nats, "FAILING", "failing").await;
    publish_all(
        &nats,
        "failing",
        ["poison", "1", "2", "3"].map(String::from),
    )
    .await;

    let log = Log::default();
    let consumer = Consumer::new(logging_handler(&log, Duration::ZERO))
        .max_deliveries(3)
        .redelivery_backoff(
            Backoff::exponential(ms(50))
                .max_delay(ms(50))
                .jitter(Jitter::None),
        );
    let watched = Arc::clone(&log);
    let figures = consumer
        .run_until(nats.subscribe("failing").await.unwrap(), async move {
            until(&watched, Duration::from_secs(3), ms(300), |log| {
                count(log, "poison") >= 3 && log.len() >= 6
            })
            .await;
        })
        .await;
    let log = log.lock().unwrap().clone();
    let poison: Vec<_> = log
        .iter()
        .filter(|seen| seen.payload == "poison")
        .map(|seen| (seen.deliveries, seen.redelivered))
        .collect();
    assert_eq!(
        poison,
        [(Some(1), false), (Some(2), true), (Some(3), true)],
        "{} deliveries of the failing message",
        poison.len()
    );
    for good in ["1", "2", "3"] {
        assert_eq!(count(&log, good), 1, "{log:?}");
    }
    assert!(log
        .iter()
        .filter(|seen| seen.payload != "poison")
        .all(|seen| seen.deliveries == Some(1) && !seen.redelivered));
    assert_eq!(
        (
            figures.handled,
            figures.redelivered,
            figures.acked,
            figures.requeued,
            figures.rejected,
            figures.exhausted,
            figures.unsettled
        ),
        (6, 2, 3, 2, 1, 1, 0)
    );
    // Terminated, not left pending: the server will not send it again.
    let info = stream.consumer_info("failing").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
}

/// The server's own maximum holds even where the consumer's does not (a
/// higher one here): a failing message is delivered max_deliver (2) times.
#[tokio::test]
async fn the_server_delivers_a_failing_message_at_most_max_deliver_times() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server)
        .await
        .jetstream()
        .queue_group("capped")
        .consumer_settings(
            ConsumerSettings::new()
                .max_deliver(2)
                .ack_wait(Duration::from_secs(1)),
        );
    let stream = stream(&nats, "CAPPED", "capped").await;
    publish_all(&nats, "capped", ["poison".to_owned()]).await;

    let log = Log::default();
    let consumer = Consumer::new(logging_handler(&log, Duration::ZERO))
        .max_deliveries(100)
        .redelivery_backoff(
            Backoff::exponential(ms(50))
                .max_delay(ms(50))
                .jitter(Jitter::None),
        );
    let watched = Arc::clone(&log);
    let figures = consumer
        .run_until(nats.subscribe("capped").await.unwrap(), async move {
            until(&watched, Duration::from_secs(3), ms(300), |log| {
                count(log, "poison") >= 2
            })
            .await;
            // And past the ack_wait of its last delivery: a third would come.
            sleep(Duration::from_secs(1)).await;
        })
        .await;
    let log = log.lock().unwrap().clone();
    let deliveries: Vec<_> = log.iter().map(|seen| seen.deliveries).collect();
    assert_eq!(deliveries, [Some(1), Some(2)], "{log:?}");
    assert_eq!(
        (figures.handled, figures.requeued, figures.rejected),
        (2, 2, 0)
    );
    let info = stream.consumer_info("capped").await.unwrap();
    assert_eq!(info.num_pending, 0);
}

/// A failing message requeued with a backoff waits on the server (a
/// delayed `-NAK`), not in the consumer: with one message at a time, the
/// five behind it are handled before it comes back.
#[tokio::test]
async fn a_requeued_message_waits_on_the_server_and_frees_its_place() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server)
        .await
        .jetstream()
        .queue_group("later")
        // The failing message holds a pending place while it waits.
        .consumer_settings(ConsumerSettings::new().prefetch(1).max_ack_pending(10));
    stream(&nats, "LATER", "later").await;
    publish_all(
        &nats,
        "later",
        ["poison", "0", "1", "2", "3", "4"].map(String::from),
    )
    .await;

    let log = Log::default();
    let consumer = Consumer::new(logging_handler(&log, Duration::ZERO))
        .concurrency(1)
        .max_deliveries(2)
        .redelivery_backoff(
            Backoff::exponential(Duration::from_secs(2))
                .max_delay(Duration::from_secs(2))
                .jitter(Jitter::None),
        );
    let watched = Arc::clone(&log);
    let figures = consumer
        .run_until(nats.subscribe("later").await.unwrap(), async move {
            until(&watched, Duration::from_secs(6), ms(200), |log| {
                log.len() >= 7
            })
            .await;
        })
        .await;
    let log = log.lock().unwrap().clone();
    let order: Vec<&str> = log.iter().map(|seen| seen.payload.as_str()).collect();
    let second_try = order
        .iter()
        .enumerate()
        .filter(|(_, payload)| **payload == "poison")
        .nth(1)
        .map_or(order.len(), |(at, _)| at);
    let before = order[..second_try]
        .iter()
        .filter(|payload| **payload != "poison")
        .count();
    assert_eq!(
        before, 5,
        "handled before the failing message came back: {order:?}"
    );
    assert_eq!(
        (log.len(), figures.acked, figures.requeued, figures.rejected),
        (7, 5, 1, 1)
    );
}

/// Settling waits for the server's confirmation: an ack sent while the
/// server is down is an error, not a success the server never heard of.
#[tokio::test]
async fn an_ack_the_server_did_not_confirm_is_an_error() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server)
        .await
        .jetstream()
        .queue_group("confirm")
        .consumer_settings(ConsumerSettings::new().ack_timeout(ms(300)));
    stream(&nats, "CONFIRM", "confirm").await;
    publish_all(&nats, "confirm", ["a", "b"].map(String::from)).await;
    let mut subscription = nats.subscribe("confirm").await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        let delivery = timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("delivered")
            .unwrap();
        deliveries.push(delivery.into_parts().1);
    }
    let mut deliveries = deliveries.into_iter();
    // Confirmed while the server is up...
    let first = deliveries.next().unwrap().send(Decision::Ack).await;
    assert!(first.is_ok(), "{first:?}");
    // ...not while it is gone.
    server.stop();
    let mut confirmed = 0;
    for settle in deliveries {
        if settle.send(Decision::Ack).await.is_ok() {
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, 0, "acks reported done that the server never got");
}

/// A request to a subject a stream captures reaches its responder through
/// a JetStream consumer, whose reply subject is the server's ack subject;
/// the reply goes to the request's own reply address all the same.
#[tokio::test]
async fn a_request_through_a_stream_gets_its_reply() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream();
    stream(&nats, "ASK", "ask").await;
    let mut requests = nats.subscribe("ask").await.unwrap();
    let responder = nats.clone();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::clone(&failed);
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let (message, settle) = request.into_parts();
            let outcome = match message.reply(format!("{}!", text(&message))) {
                Some(reply) => responder.publish(reply).await.map_err(|e| e.to_string()),
                None => Err(format!("no reply address: {:?}", message.reply_to)),
            };
            if let Err(error) = outcome {
                failures.lock().unwrap().push(error);
            }
            let _ = settle.send(Decision::Ack).await;
        }
    });

    let correlator = Correlator::builder(nats)
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let mut answered = 0;
    for n in 0..3 {
        if let Ok(reply) = correlator
            .clone()
            .oneshot(Message::new("ask", n.to_string()))
            .await
        {
            assert_eq!(text(&reply), format!("{n}!"));
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "responder: {:?}", failed.lock().unwrap());
    let figures = correlator.figures();
    // The stream's publish acknowledgements, sent to the reply subject
    // too, are not counted as replies.
    assert_eq!(
        (figures.matched, figures.unmatched, figures.pending),
        (3, 0, 0)
    );
    assert!(failed.lock().unwrap().is_empty());
}

/// A server backoff needs a max_deliver longer than it: refused when
/// subscribing, with a reason, instead of a consumer that cannot be made.
#[tokio::test]
async fn a_backoff_longer_than_max_deliver_is_refused() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nats = connect(&server).await.jetstream().queue_group("backoff");
    stream(&nats, "BACKOFF", "backoff").await;
    let backoff = [ms(100), ms(200)];
    let refused = nats
        .clone()
        .consumer_settings(ConsumerSettings::new().backoff(backoff).max_deliver(2))
        .subscribe("backoff")
        .await;
    let error = refused.err().expect("refused").to_string();
    assert!(error.contains("max_deliver"), "{error}");
    let accepted = nats
        .consumer_settings(ConsumerSettings::new().backoff(backoff).max_deliver(3))
        .subscribe("backoff")
        .await;
    assert!(accepted.is_ok());
}
