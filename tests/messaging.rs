//! The messaging styles over the in-memory broker, with tokio's clock
//! paused: exact and fast. The same services run over real brokers in
//! tests/nats.rs and tests/amqp.rs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration, State};
use seawall::messaging::{
    Consumer, Correlator, InMemory, Message, Notified, Notifier, NotifyError, Outbox, Publisher,
    RequestError,
};
use seawall::policy::Policy;
use seawall::{BoxError, Error, Invalid};
use tokio::time::{sleep, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn text(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).unwrap()
}

/// A breaker that opens after 3 failures in a row, for 1 s.
fn quick_breaker() -> seawall::circuit_breaker::CircuitBreakerBuilder {
    CircuitBreaker::builder()
        .consecutive_failures(3)
        .open_duration(OpenDuration::Fixed(Duration::from_secs(1)))
}

/// Takes every message published to `subject` so far (and keeps listening).
fn collect(broker: &InMemory, subject: &str) -> Arc<std::sync::Mutex<Vec<String>>> {
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut subscription = broker.subscribe_now(subject);
    let sink = Arc::clone(&received);
    tokio::spawn(async move {
        while let Some(delivery) = subscription.next().await {
            sink.lock().unwrap().push(text(delivery.message()));
        }
    });
    received
}

#[tokio::test(start_paused = true)]
async fn a_notification_is_published_diverted_or_handed_back() {
    let broker = InMemory::new();
    let received = collect(&broker, "events");
    let policy = Policy::builder()
        .name("events")
        .timeout(ms(100))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let outbox = Outbox::new(8).unwrap();
    let mut notifier = Notifier::new(policy.layer(Publisher::new(broker.clone())), outbox.clone());

    let mut published = BTreeSet::new();
    let mut diverted = BTreeSet::new();
    let mut handed_back = BTreeSet::new();
    for n in 0..40 {
        // Up for the first 10, down for 20, up again.
        broker.set_down((10..30).contains(&n));
        let message = Message::new("events", n.to_string());
        match notifier.ready().await.unwrap().call(message).await {
            Ok(Notified::Published) => published.insert(n),
            Ok(Notified::Diverted(_)) => diverted.insert(n),
            Err(NotifyError { message, .. }) => handed_back.insert(text(&message).parse().unwrap()),
        };
        if n == 29 {
            // The breaker waits 1 s before trying the broker again.
            sleep(Duration::from_secs(1)).await;
        }
    }
    // The outbox took 8 while the broker was down; the other 12 came back.
    assert_eq!(diverted, (10..18).collect());
    assert_eq!(handed_back, (18..30).collect());
    assert_eq!(published, (0..10).chain(30..40).collect());
    assert_eq!(policy.breaker().state(), State::Closed);
    let figures = notifier.clone().figures();
    assert_eq!(
        (figures.published, figures.diverted, figures.handed_back),
        (20, 8, 12),
        "the notifier's own count, shared by its clones"
    );

    // Back up: the outbox sends what it kept, oldest first.
    let mut publisher = Publisher::new(broker.clone());
    assert_eq!(outbox.flush(&mut publisher).await.unwrap(), 8);
    assert!(outbox.is_empty());
    tokio::task::yield_now().await;
    let received: BTreeSet<u64> = received
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(received, published.union(&diverted).copied().collect());
    let figures = outbox.figures();
    assert_eq!((figures.kept, figures.refused, figures.flushed), (8, 12, 8));
}

#[tokio::test(start_paused = true)]
async fn a_slow_broker_costs_the_timeout_then_nothing_while_open() {
    let broker = InMemory::new();
    broker.set_latency(Duration::from_secs(10));
    let policy = Policy::builder()
        .name("events")
        .timeout(ms(100))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let outbox = Outbox::new(100).unwrap();
    let mut notifier = Notifier::new(policy.layer(Publisher::new(broker)), outbox.clone());

    let started = Instant::now();
    for n in 0..3 {
        let sent = notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", n.to_string()));
        match sent.await.unwrap() {
            Notified::Diverted(Error::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert_eq!(
        started.elapsed(),
        ms(300),
        "each waited the timeout, no more"
    );
    let open = Instant::now();
    for n in 3..10 {
        let sent = notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", n.to_string()));
        assert!(matches!(
            sent.await.unwrap(),
            Notified::Diverted(Error::CircuitOpen(_))
        ));
    }
    assert_eq!(open.elapsed(), Duration::ZERO, "refused at once while open");
    assert_eq!(outbox.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn flushing_stops_at_the_first_failure_and_keeps_the_order() {
    let broker = InMemory::new();
    let received = collect(&broker, "events");
    let outbox = Outbox::new(10).unwrap();
    for n in 0..5 {
        outbox.push(Message::new("events", n.to_string())).unwrap();
    }
    broker.set_down(true);
    let mut publisher = Publisher::new(broker.clone());
    assert!(outbox.flush(&mut publisher).await.is_err());
    assert_eq!(outbox.len(), 5, "nothing lost by a failed flush");
    broker.set_down(false);
    assert_eq!(outbox.flush(&mut publisher).await.unwrap(), 5);
    tokio::task::yield_now().await;
    assert_eq!(*received.lock().unwrap(), ["0", "1", "2", "3", "4"]);
}

/// A publisher that takes 100 ms per message and records what it sent;
/// a message whose payload is `"refused"` it refuses.
fn slow_publisher() -> (
    impl Service<Message, Response = (), Error = BoxError, Future: Send + 'static> + Clone + Send,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let publisher = {
        let sent = sent.clone();
        service_fn(move |message: Message| {
            let sent = sent.clone();
            async move {
                sleep(ms(100)).await;
                if text(&message) == "refused" {
                    return Err(BoxError::from("the broker refused it"));
                }
                sent.lock().unwrap().push(text(&message));
                Ok(())
            }
        })
    };
    (publisher, sent)
}

/// A caller that stops waiting for its notification (a timeout around the
/// call, a cancelled request) does not take the message with it: the
/// notifier still publishes it, or diverts it to the outbox when
/// publishing fails.
#[tokio::test(start_paused = true)]
async fn a_notification_whose_caller_left_is_still_published_or_diverted() {
    let outbox = Outbox::new(10).unwrap();
    let (slow, sent) = slow_publisher();
    let mut notifier = Notifier::new(slow, outbox.clone());
    for payload in ["kept", "refused"] {
        let call = notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", payload));
        // The caller gives up halfway through the publish.
        assert!(tokio::time::timeout(ms(50), call).await.is_err());
    }
    sleep(ms(200)).await;
    assert_eq!(*sent.lock().unwrap(), ["kept"], "published");
    let diverted: Vec<String> = outbox.drain().unwrap().iter().map(text).collect();
    assert_eq!(diverted, ["refused"], "diverted");
}

/// A flush cut short (`timeout(flush)` on a slow broker) while a message is
/// being published keeps that message: the next flush sends it. Before,
/// it was taken out first and lost with the cancelled publish.
#[tokio::test(start_paused = true)]
async fn a_cancelled_flush_loses_nothing() {
    let outbox = Outbox::new(10).unwrap();
    for n in 0..5 {
        outbox.push(Message::new("events", n.to_string())).unwrap();
    }
    let (mut slow, sent) = slow_publisher();
    // Two sent, the third cut short.
    assert!(tokio::time::timeout(ms(250), outbox.flush(&mut slow))
        .await
        .is_err());
    assert_eq!(outbox.len(), 3, "the message being sent is still kept");
    assert_eq!(outbox.flush(&mut slow).await.unwrap(), 3);
    assert_eq!(*sent.lock().unwrap(), ["0", "1", "2", "3", "4"]);
    assert_eq!(outbox.figures().flushed, 5);
}

/// `drain` while a flush is sending: the flush removes only the message it
/// sent, never one kept after the drain.
#[tokio::test(start_paused = true)]
async fn draining_during_a_flush_loses_nothing_kept_after() {
    let outbox = Outbox::new(10).unwrap();
    for n in 0..3 {
        outbox.push(Message::new("events", n.to_string())).unwrap();
    }
    let (mut slow, sent) = slow_publisher();
    let flushing = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.flush(&mut slow).await })
    };
    sleep(ms(50)).await;
    let drained: Vec<String> = outbox.drain().unwrap().iter().map(text).collect();
    assert_eq!(drained, ["0", "1", "2"]);
    outbox.push(Message::new("events", "later")).unwrap();
    assert_eq!(flushing.await.unwrap().unwrap(), 2);
    assert_eq!(*sent.lock().unwrap(), ["0", "later"]);
    assert!(outbox.is_empty());
}

/// A responder that answers `"<payload>!"` after `delay`; requests whose
/// payload is `"ignore"` get no answer.
fn responder(broker: &InMemory, subject: &str, delay: Duration, answer: &'static str) {
    let mut requests = broker.subscribe_now(subject);
    let broker = broker.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let request = request.message().clone();
            if text(&request) == "ignore" {
                continue;
            }
            let broker = broker.clone();
            tokio::spawn(async move {
                sleep(delay).await;
                broker.send(
                    request
                        .reply(format!("{}{answer}", text(&request)))
                        .unwrap(),
                );
            });
        }
    });
}

#[tokio::test(start_paused = true)]
async fn replies_find_their_requests() {
    let broker = InMemory::new();
    responder(&broker, "echo", ms(10), "!");
    let correlator = Correlator::builder(broker).build().await.unwrap();
    // Concurrent requests, each gets its own answer.
    let calls = (0..20).map(|n| {
        let correlator = correlator.clone();
        async move {
            correlator
                .oneshot(Message::new("echo", n.to_string()))
                .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    for (n, reply) in replies.into_iter().enumerate() {
        assert_eq!(text(&reply.unwrap()), format!("{n}!"));
    }
    let figures = correlator.figures();
    assert_eq!(
        (figures.pending, figures.matched, figures.unmatched),
        (0, 20, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_bounded_and_leave_when_they_give_up() {
    let broker = InMemory::new();
    responder(&broker, "slow", Duration::from_secs(2), "!");
    let correlator = Correlator::builder(broker)
        .max_pending(2)
        .timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let first = tokio::spawn(correlator.clone().oneshot(Message::new("slow", "1")));
    let second = tokio::spawn(correlator.clone().oneshot(Message::new("slow", "2")));
    tokio::task::yield_now().await;
    assert_eq!(correlator.figures().pending, 2);
    let third = correlator.clone().oneshot(Message::new("slow", "3")).await;
    assert!(matches!(
        third,
        Err(RequestError::TooManyPending { limit: 2 })
    ));

    // No reply in time: both give up, and their places are free.
    for call in [first, second] {
        assert!(matches!(
            call.await.unwrap(),
            Err(RequestError::NoReply { .. })
        ));
    }
    assert_eq!(correlator.figures().pending, 0);
    // A caller's own timeout (a Policy's) frees the place just the same.
    let policy = Policy::builder()
        .name("slow")
        .timeout(ms(100))
        .build()
        .unwrap();
    let gave_up = policy
        .layer(correlator.clone())
        .oneshot(Message::new("slow", "4"))
        .await;
    assert!(matches!(gave_up, Err(Error::Timeout(_))));
    assert_eq!(correlator.figures().pending, 0);

    // The late replies arrive, and are counted and dropped.
    sleep(Duration::from_secs(3)).await;
    let figures = correlator.figures();
    assert_eq!((figures.matched, figures.unmatched), (0, 3));
}

#[tokio::test(start_paused = true)]
async fn a_gather_returns_what_arrived_and_what_is_missing() {
    let broker = InMemory::new();
    responder(&broker, "quote", ms(10), "a");
    responder(&broker, "quote", ms(20), "b");
    responder(&broker, "quote", Duration::from_secs(5), "late");
    let correlator = Correlator::builder(broker).build().await.unwrap();

    let started = Instant::now();
    let mut three = correlator.scatter_gather(Some(3), ms(100));
    let gathered = three
        .ready()
        .await
        .unwrap()
        .call(Message::new("quote", "q"))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), ms(100), "waited until the deadline");
    let replies: Vec<_> = gathered.replies.iter().map(text).collect();
    assert_eq!(replies, ["qa", "qb"]);
    assert_eq!(gathered.missing(), Some(1));

    let started = Instant::now();
    let mut two = correlator.scatter_gather(Some(2), ms(100));
    let gathered = two
        .ready()
        .await
        .unwrap()
        .call(Message::new("quote", "q"))
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        ms(20),
        "returned when the count was reached"
    );
    assert!(gathered.is_complete());

    let mut any = correlator.scatter_gather(None, Duration::from_secs(10));
    let gathered = any
        .ready()
        .await
        .unwrap()
        .call(Message::new("quote", "q"))
        .await
        .unwrap();
    assert_eq!(gathered.replies.len(), 3);
    assert_eq!(gathered.missing(), None);

    // The late replies to the first two gathers were counted and dropped.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(correlator.figures().unmatched, 2);
    assert_eq!(correlator.figures().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_decides_by_outcome() {
    let broker = InMemory::new();
    let deliveries = broker.subscribe_now("orders");
    for payload in ["1", "poison", "2"] {
        broker.send(Message::new("orders", payload));
    }
    let policy = Policy::builder()
        .name("orders")
        .timeout(Duration::from_secs(1))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let handler = policy.layer(service_fn(|order: Message| async move {
        text(&order).parse::<u64>().map_err(Invalid::new)?;
        Ok::<_, BoxError>(())
    }));
    let consumer = Consumer::new(handler);
    let figures = consumer.run_until(deliveries, sleep(ms(10))).await;
    assert_eq!(
        (figures.acked, figures.rejected, figures.requeued),
        (2, 1, 0)
    );
    let broker_saw = broker.figures();
    assert_eq!((broker_saw.acked, broker_saw.rejected), (2, 1));

    // Forced open: the message goes back to the broker, and the consumer
    // stops pulling for the breaker's pause (1 s when forced open).
    let deliveries = broker.subscribe_now("orders");
    broker.send(Message::new("orders", "3"));
    policy.breaker().force_open();
    let release = {
        let breaker = policy.breaker().clone();
        tokio::spawn(async move {
            sleep(ms(2500)).await;
            breaker.reset();
        })
    };
    let started = Instant::now();
    let figures =
        Consumer::new(policy.layer(service_fn(|_: Message| async { Ok::<_, BoxError>(()) })))
            .run_until(deliveries, sleep(Duration::from_secs(10)))
            .await;
    release.await.unwrap();
    // Pulled at 0 s, 1 s and 2 s (refused: requeued), then at 3 s (handled).
    assert_eq!(figures.requeued, 3);
    assert_eq!(figures.pauses, 3);
    assert_eq!(figures.acked, 1);
    assert_eq!(figures.handled, 4);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_consumer_stops_pulling_while_its_dependency_is_down() {
    let broker = InMemory::new();
    let deliveries = broker.subscribe_now("orders");
    for n in 0..30 {
        let payload = if n == 3 {
            "poison".to_owned()
        } else {
            n.to_string()
        };
        broker.send(Message::new("orders", payload));
    }

    // The handler's dependency goes down after the 10th order, for 5 s.
    let down_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let policy = Policy::builder()
        .name("orders")
        .timeout(Duration::from_secs(1))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let handler = {
        let (down_until, handled) = (Arc::clone(&down_until), Arc::clone(&handled));
        service_fn(move |order: Message| {
            let (down_until, handled) = (Arc::clone(&down_until), Arc::clone(&handled));
            async move {
                if down_until
                    .lock()
                    .unwrap()
                    .is_some_and(|until| Instant::now() < until)
                {
                    return Err(Failure::DependencyDown);
                }
                let n: u64 = text(&order).parse().map_err(|_| Failure::Poison)?;
                handled.lock().unwrap().push(n);
                if n == 9 {
                    *down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(5));
                }
                Ok(())
            }
        })
    };
    // Poison is rejected; a failure of the dependency is the message's
    // bad luck, not its fault: requeued.
    let decide =
        seawall::messaging::ByOutcome::new().on_failure_with(|failure: &Failure| match failure {
            Failure::Poison => seawall::messaging::Decision::Reject,
            Failure::DependencyDown => seawall::messaging::Decision::Requeue,
        });
    // No redelivery backoff: the breaker's pauses alone must keep the
    // consumer from spinning on requeued messages.
    let figures = Consumer::new(policy.layer(handler))
        .decide(decide)
        .redelivery_backoff(seawall::retry::Backoff::none())
        .run_until(deliveries, sleep(Duration::from_secs(30)))
        .await;

    // Every good order handled exactly once; the poison one rejected.
    let mut orders = handled.lock().unwrap().clone();
    orders.sort_unstable();
    assert_eq!(orders, (0..30).filter(|n| *n != 3).collect::<Vec<_>>());
    let broker_saw = broker.figures();
    assert_eq!((broker_saw.acked, broker_saw.rejected), (29, 1));
    assert_eq!(broker_saw.requeued, figures.requeued);
    assert_eq!(figures.unsettled, 0);
    // While the breaker was open the consumer did not pull: over the 5 s
    // outage, 3 failures to open it, then about one refusal and one probe
    // per second of open breaker. Without the pauses a requeued message
    // comes straight back, and this would never end.
    assert!(figures.pauses >= 2, "{figures:?}");
    assert!(figures.handled <= 30 + 3 + 2 * 5, "{figures:?}");
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("not an order")]
    Poison,
    #[error("the dependency is down")]
    DependencyDown,
}

seawall::leaf_error!(Failure);

/// Every message a style sends has an id, which every copy keeps: the copy
/// the Notifier diverted and the outbox sent again is the same message, and
/// a `DeduplicateLayer` under the consumer handles it once.
#[tokio::test(start_paused = true)]
async fn copies_of_a_message_keep_its_id_and_an_idempotent_consumer_handles_it_once() {
    use seawall::messaging::DeduplicateLayer;

    let broker = InMemory::new();
    let events = broker.subscribe_now("events");
    // A publisher whose broker takes the message but whose answer is lost:
    // the caller sees a failure, as after a publish timeout.
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let lossy = {
        let (broker, sent) = (broker.clone(), Arc::clone(&sent));
        service_fn(move |message: Message| {
            let (mut publisher, sent) = (Publisher::new(broker.clone()), Arc::clone(&sent));
            async move {
                sent.lock().unwrap().push(message.id.clone());
                publisher.call(message).await?;
                Err::<(), BoxError>("the receipt was lost".into())
            }
        })
    };
    let outbox = Outbox::new(8).unwrap();
    let mut notifier = Notifier::new(lossy, outbox.clone());
    let diverted = notifier
        .ready()
        .await
        .unwrap()
        .call(Message::new("events", "once"))
        .await
        .unwrap();
    assert!(matches!(diverted, Notified::Diverted(_)));
    let kept = outbox.drain().unwrap();
    assert_eq!(kept.len(), 1);
    let id = kept[0].id.clone();
    assert!(id.is_some());
    assert_eq!(sent.lock().unwrap().as_slice(), std::slice::from_ref(&id));
    // The outbox sends its copy: the broker now holds the message twice.
    for copy in kept {
        Publisher::new(broker.clone()).call(copy).await.unwrap();
    }
    // Another message with the same payload is another message.
    Publisher::new(broker.clone())
        .call(Message::new("events", "once"))
        .await
        .unwrap();

    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&handled);
    let dedup = DeduplicateLayer::new(100).unwrap();
    let handler = dedup.layer(service_fn(move |event: Message| {
        sink.lock().unwrap().push(event.id.clone());
        std::future::ready(Ok::<_, Error<BoxError>>(()))
    }));
    let figures = Consumer::new(handler)
        .run_until(events, sleep(ms(100)))
        .await;
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert_eq!(handled[0], id);
    assert_ne!(handled[1], id);
    assert_eq!((figures.handled, figures.acked), (3, 3));
    assert_eq!(dedup.figures().duplicates, 1);
}

/// A handler that fails on every delivery of one message: the message
/// comes back after 1, 2, 4 and 8 s (the default backoff, doubling), each
/// time with its delivery count, and its fifth failure rejects it; the
/// other messages go on meanwhile. Before redelivery had a backoff and a
/// maximum, a requeued failure came straight back for ever.
#[tokio::test(start_paused = true)]
async fn a_failing_message_comes_back_after_a_backoff_and_is_dead_lettered_at_its_maximum() {
    let broker = InMemory::new();
    let deliveries = broker.subscribe_now("orders");
    broker.send(Message::new("orders", "fails"));
    for n in 0..3 {
        broker.send(Message::new("orders", n.to_string()));
    }
    let start = Instant::now();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = {
        let seen = Arc::clone(&seen);
        service_fn(move |order: Message| {
            let seen = Arc::clone(&seen);
            async move {
                if text(&order) != "fails" {
                    return Ok(());
                }
                seen.lock().unwrap().push((
                    start.elapsed().as_secs(),
                    order.deliveries,
                    order.redelivered,
                ));
                Err::<(), BoxError>("the dependency said no".into())
            }
        })
    };
    let policy = Policy::builder()
        .name("orders")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let consumer = Consumer::new(policy.layer(handler)).concurrency(4);
    let watch = consumer.clone();
    let figures = consumer
        .run_until(deliveries, sleep(Duration::from_secs(60)))
        .await;

    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, Some(1), false),
            (1, Some(2), true),
            (3, Some(3), true),
            (7, Some(4), true),
            (15, Some(5), true),
        ]
    );
    assert_eq!(
        (figures.handled, figures.redelivered, figures.acked),
        (8, 4, 3)
    );
    assert_eq!(
        (figures.requeued, figures.rejected, figures.exhausted),
        (4, 1, 1)
    );
    assert_eq!(watch.figures(), figures, "clones share the figures");
    let broker_saw = broker.figures();
    assert_eq!(
        (broker_saw.acked, broker_saw.requeued, broker_saw.rejected),
        (3, 4, 1)
    );
}

/// A failure that passes is not a loss: every third order fails once
/// (a dependency's hiccup), and every order ends handled; none rejected.
#[tokio::test(start_paused = true)]
async fn a_passing_failure_loses_nothing() {
    let broker = InMemory::new();
    let deliveries = broker.subscribe_now("orders");
    for n in 0..30 {
        broker.send(Message::new("orders", n.to_string()));
    }
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = {
        let handled = Arc::clone(&handled);
        service_fn(move |order: Message| {
            let handled = Arc::clone(&handled);
            async move {
                let n: u64 = text(&order).parse().map_err(Invalid::new)?;
                if n.is_multiple_of(3) && !order.redelivered {
                    return Err::<(), BoxError>("hiccup".into());
                }
                handled.lock().unwrap().push(n);
                Ok(())
            }
        })
    };
    let figures = Consumer::new(handler)
        .concurrency(4)
        .decide(|result: &Result<(), BoxError>| match result {
            Ok(()) => seawall::messaging::Decision::Ack,
            Err(_) => seawall::messaging::Decision::Requeue,
        })
        .run_until(deliveries, sleep(Duration::from_secs(30)))
        .await;
    let mut orders = handled.lock().unwrap().clone();
    orders.sort_unstable();
    assert_eq!(orders, (0..30).collect::<Vec<_>>());
    assert_eq!(
        (figures.acked, figures.requeued, figures.rejected),
        (30, 10, 0)
    );
}

/// Malformed messages are poison, not the dependency's failure: marked
/// [`Invalid`], they are rejected on their first delivery and leave the
/// breaker closed, however many there are (here 6 in 10), so the good
/// messages keep flowing.
#[tokio::test(start_paused = true)]
async fn poison_messages_are_rejected_at_once_and_do_not_open_the_breaker() {
    let broker = InMemory::new();
    let deliveries = broker.subscribe_now("orders");
    for n in 0..100 {
        let payload = if n % 10 < 6 {
            format!("garbage {n}")
        } else {
            n.to_string()
        };
        broker.send(Message::new("orders", payload));
    }
    let policy = Policy::builder()
        .name("orders")
        .timeout(Duration::from_secs(1))
        .circuit_breaker(quick_breaker())
        .build()
        .unwrap();
    let handler = policy.layer(service_fn(|order: Message| async move {
        text(&order).parse::<u64>().map_err(Invalid::new)?;
        Ok::<_, BoxError>(())
    }));
    let figures = Consumer::new(handler)
        .run_until(deliveries, sleep(Duration::from_secs(10)))
        .await;
    assert_eq!(
        (figures.handled, figures.acked, figures.rejected),
        (100, 40, 60)
    );
    assert_eq!(
        (figures.requeued, figures.pauses, figures.exhausted),
        (0, 0, 0)
    );
    assert_eq!(policy.breaker().state(), State::Closed);
    assert_eq!(policy.breaker().lifetime_counts().failure, 0);
}

/// Stopping while a failed message waits out its backoff requeues it at
/// once: the consumer returns when told to, and the broker has it back.
#[tokio::test(start_paused = true)]
async fn stopping_requeues_a_held_message_at_once() {
    let broker = InMemory::new();
    let deliveries = broker.subscribe_now("orders");
    broker.send(Message::new("orders", "1"));
    let consumer = Consumer::new(service_fn(|_: Message| async {
        Err::<(), BoxError>("down".into())
    }))
    .decide(|_: &Result<(), BoxError>| seawall::messaging::Decision::Requeue)
    .redelivery_backoff(seawall::retry::Backoff::exponential(Duration::from_secs(
        600,
    )));
    let start = Instant::now();
    let figures = consumer.run_until(deliveries, sleep(ms(100))).await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!((figures.handled, figures.requeued), (1, 1));
    assert_eq!(broker.figures().requeued, 1);
}

/// A reply that arrives twice (a responder's retry, a broker's redelivery:
/// the same id) counts once: a gather for two replies waits for the second
/// responder instead of taking the first one's copy for it.
#[tokio::test(start_paused = true)]
async fn a_duplicate_reply_counts_once() {
    let broker = InMemory::new();
    let mut requests = broker.subscribe_now("quote");
    {
        let broker = broker.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let request = request.message().clone();
                let reply = request.reply("twice").unwrap().with_id("reply-1");
                broker.send(reply.clone());
                broker.send(reply);
            }
        });
    }
    responder(&broker, "quote", ms(30), "once");
    let correlator = Correlator::builder(broker).build().await.unwrap();

    let started = Instant::now();
    let gathered = correlator
        .scatter_gather(Some(2), ms(100))
        .oneshot(Message::new("quote", "q"))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), ms(30), "waited for the second responder");
    let replies: BTreeSet<String> = gathered.replies.iter().map(text).collect();
    assert_eq!(replies, ["qonce", "twice"].map(String::from).into());
    let figures = correlator.figures();
    assert_eq!(
        (figures.matched, figures.duplicates, figures.unmatched),
        (2, 1, 0)
    );
}

/// A Policy's fallback answers for calls, but not for a publish under a
/// Notifier: only the broker can say a message is published. With the
/// broker down, every notification goes to the outbox (before, the
/// fallback's `()` made all 10 "published", and the outbox stayed empty).
#[tokio::test(start_paused = true)]
async fn a_fallback_cannot_report_a_notification_published() {
    let broker = InMemory::new();
    broker.set_down(true);
    let policy = Policy::builder()
        .name("events")
        .timeout(ms(100))
        .fallback(seawall::fallback::Fallback::builder().value(()))
        .build()
        .unwrap();
    let outbox = Outbox::new(100).unwrap();
    let mut notifier = Notifier::new(policy.layer(Publisher::new(broker.clone())), outbox.clone());
    let mut published = 0;
    for n in 0..10 {
        let sent = notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", n.to_string()))
            .await
            .unwrap();
        published += u32::from(sent.is_published());
    }
    assert_eq!((published, outbox.len()), (0, 10));
    let figures = notifier.figures();
    assert_eq!(
        (figures.published, figures.diverted, figures.handed_back),
        (0, 10, 0)
    );

    // The same Policy's fallback still answers a plain call.
    let mut plain = policy.layer(Publisher::new(broker.clone()));
    let answered = plain
        .ready()
        .await
        .unwrap()
        .call(Message::new("events", "x"))
        .await;
    assert!(answered.is_ok(), "{answered:?}");
}

/// A handler whose every call fails, under a Policy with a fallback: the
/// consumer sees the failures (its messages are redelivered, then
/// dead-lettered), instead of the fallback's answer acknowledging messages
/// nobody handled; unless told the fallback's answer is a real outcome.
#[tokio::test(start_paused = true)]
async fn a_fallback_does_not_acknowledge_a_message_its_handler_failed_on() {
    let run = |accept: bool| async move {
        let broker = InMemory::new();
        let deliveries = broker.subscribe_now("orders");
        for n in 0..5 {
            broker.send(Message::new("orders", n.to_string()));
        }
        let policy = Policy::builder()
            .name("orders")
            .timeout(ms(100))
            .fallback(seawall::fallback::Fallback::builder().value(()))
            .build()
            .unwrap();
        let handler = policy.layer(service_fn(|_: Message| async {
            Err::<(), BoxError>("the database is down".into())
        }));
        let consumer = Consumer::new(handler).max_deliveries(2);
        let consumer = if accept {
            consumer.accept_fallbacks()
        } else {
            consumer
        };
        consumer
            .run_until(deliveries, sleep(Duration::from_secs(60)))
            .await
    };
    let figures = run(false).await;
    assert_eq!(
        (
            figures.acked,
            figures.requeued,
            figures.rejected,
            figures.exhausted
        ),
        (0, 5, 5, 5)
    );
    let figures = run(true).await;
    assert_eq!(
        (figures.acked, figures.requeued, figures.rejected),
        (5, 0, 0)
    );
}
