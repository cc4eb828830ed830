//! The messaging styles over a real RabbitMQ node of the test's own (its
//! own epmd, ports and data directory on loopback), including the node
//! killed mid-stream and started again. Skips (with a reason) without
//! RabbitMQ, except in CI.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use seawall::budget::Budget;
use seawall::circuit_breaker::{CircuitBreaker, OpenDuration};
use seawall::messaging::amqp::{AmqpError, AmqpTransport};
use seawall::messaging::{
    Consumer, Correlator, Message, Notified, Notifier, NotifyError, Outbox, Publisher, Transport,
};
use seawall::policy::Policy;
use seawall::{BoxError, Invalid};
use support::jobs::Jobs;
use support::rabbitmq::RabbitMq;
use tokio::time::{sleep, timeout};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn text(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).unwrap()
}

/// A transport in the queue group `workers`, whose broker answers: the
/// node listens a little before it takes connections.
async fn connect(rabbit: &RabbitMq) -> AmqpTransport {
    ready(AmqpTransport::new(rabbit.uri()).queue_group("workers")).await
}

async fn ready(amqp: AmqpTransport) -> AmqpTransport {
    timeout(Duration::from_secs(30), async {
        while amqp.declare("seawall.ready").await.is_err() {
            sleep(ms(100)).await;
        }
    })
    .await
    .expect("the broker takes connections");
    amqp
}

/// Runs a consumer over `subject` until it has handled `count` messages
/// (or 20 s passed), and returns their payloads.
async fn drain(amqp: &AmqpTransport, subject: &str, count: usize) -> Vec<u64> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    let handler = service_fn(move |message: Message| {
        let sink = Arc::clone(&sink);
        async move {
            sink.lock().unwrap().push(text(&message).parse::<u64>()?);
            Ok::<_, BoxError>(())
        }
    });
    let policy = Policy::builder().name("drain").build().unwrap();
    let subscription = amqp.subscribe(subject).await.unwrap();
    let done = {
        let received = Arc::clone(&received);
        async move {
            let _ = timeout(Duration::from_secs(20), async {
                while received.lock().unwrap().len() < count {
                    sleep(ms(20)).await;
                }
            })
            .await;
        }
    };
    let figures = Consumer::new(policy.layer(handler))
        .concurrency(10)
        .run_until(subscription, done)
        .await;
    assert_eq!(figures.unsettled, 0);
    let received = received.lock().unwrap().clone();
    received
}

#[tokio::test]
async fn every_style_over_rabbitmq() {
    let Some(rabbit) = RabbitMq::start() else {
        return;
    };
    let amqp = connect(&rabbit).await;

    // Notification with the broker's confirm; a message no queue takes is
    // an error, not a silent drop.
    amqp.declare("orders").await.unwrap();
    let mut publisher = Publisher::new(amqp.clone());
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
    let nowhere = publisher
        .ready()
        .await
        .unwrap()
        .call(Message::new("nowhere", "x"))
        .await;
    assert!(
        matches!(nowhere, Err(AmqpError::Unroutable { .. })),
        "{nowhere:?}"
    );

    // The consumer acks what it handles and rejects the poison message.
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
            let order = text(&order).parse::<u64>().map_err(Invalid::new)?;
            sink.lock().unwrap().insert(order);
            Ok::<_, BoxError>(())
        }
    }));
    let subscription = amqp.subscribe("orders").await.unwrap();
    let watched = Arc::clone(&handled);
    let figures = Consumer::new(handler)
        .run_until(subscription, async move {
            let _ = timeout(Duration::from_secs(10), async {
                while watched.lock().unwrap().len() < 19 {
                    sleep(ms(10)).await;
                }
            })
            .await;
        })
        .await;
    assert_eq!(
        *handled.lock().unwrap(),
        (0..20).filter(|n| *n != 7).collect()
    );
    assert_eq!(
        (figures.acked, figures.rejected, figures.unsettled),
        (19, 1, 0)
    );
    // Nothing left on the queue: acked and rejected messages are gone.
    assert!(drain(&amqp, "orders", 1).await.is_empty());

    // Request/async response through a private reply queue.
    amqp.declare("rpc").await.unwrap();
    let mut requests = amqp.subscribe("rpc").await.unwrap();
    let responder = amqp.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let (message, settle) = request.into_parts();
            responder
                .publish(message.reply(format!("{}!", text(&message))).unwrap())
                .await
                .unwrap();
            settle
                .send(seawall::messaging::Decision::Ack)
                .await
                .unwrap();
        }
    });
    let correlator = Correlator::builder(amqp.clone())
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let calls = (0..20).map(|n| {
        correlator
            .clone()
            .oneshot(Message::new("rpc", n.to_string()))
    });
    for (n, reply) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(text(&reply.unwrap()), format!("{n}!"));
    }
    assert_eq!(correlator.figures().unmatched, 0);

    // Deadlines cross the broker: a job that expired in the queue is
    // dropped and counted; the next runs with its deadline current.
    amqp.declare("jobs").await.unwrap();
    let mut publisher = Publisher::new(amqp.clone());
    let expired = Message::new("jobs", "late").with_deadline(Budget::new(Duration::ZERO));
    let sent = Budget::new(Duration::from_secs(60));
    let fresh = Message::new("jobs", "fresh").with_deadline(sent);
    for job in [expired, fresh] {
        publisher.ready().await.unwrap().call(job).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let handler = service_fn(move |job: Message| {
        let current = Budget::current().map(|budget| budget.deadline());
        assert!(job.id.is_some(), "the publisher gave it an id: {job:?}");
        sink.lock()
            .unwrap()
            .push((text(&job), job.deadline.map(|b| b.deadline()), current));
        std::future::ready(Ok::<_, seawall::Error<BoxError>>(()))
    });
    let watched = Arc::clone(&seen);
    let figures = Consumer::new(handler)
        .run_until(amqp.subscribe("jobs").await.unwrap(), async move {
            let _ = timeout(Duration::from_secs(10), async {
                while watched.lock().unwrap().is_empty() {
                    sleep(ms(10)).await;
                }
            })
            .await;
        })
        .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (job, deadline, current) = &seen[0];
    assert_eq!(job, "fresh");
    assert_eq!(deadline, current);
    // Sent as whole milliseconds: never later than it was.
    assert!(deadline.unwrap() <= sent.deadline(), "{seen:?}");
    assert_eq!((figures.handled, figures.expired, figures.acked), (1, 1, 2));
}

/// The node is shut down mid-stream and started again (its durable queue
/// and persistent messages survive): every notification was published
/// (confirmed), kept in the outbox, or handed back; after recovery the
/// outbox sends what it kept, and the queue holds every message at least
/// once.
#[tokio::test]
async fn notifications_survive_the_broker_going_away() {
    let Some(mut rabbit) = RabbitMq::start() else {
        return;
    };
    let amqp = connect(&rabbit).await;
    amqp.declare("events").await.unwrap();

    // Generous: a probe after the restart makes a new connection, and the
    // other test's node may be booting on the same two cores.
    let policy = Policy::builder()
        .name("events")
        .timeout(Duration::from_secs(2))
        .circuit_breaker(
            CircuitBreaker::builder()
                .consecutive_failures(3)
                .open_duration(OpenDuration::Fixed(ms(200))),
        )
        .build()
        .unwrap();
    let outbox = Outbox::new(1000).unwrap();
    let mut notifier = Notifier::new(policy.layer(Publisher::new(amqp.clone())), outbox.clone());

    let (mut published, mut diverted) = (BTreeSet::new(), BTreeSet::new());
    let mut handed_back = BTreeSet::<u64>::new();
    for n in 0..90u64 {
        if n == 30 {
            // An orderly shutdown: killed outright (SIGKILL) a moment after
            // the queue was declared, the node can lose the declaration
            // with its queue and messages (its metadata log is written
            // lazily), which is the broker's durability window, not what
            // this test is about.
            rabbit.shut_down();
        }
        if n == 60 {
            rabbit.restart().unwrap();
            // The node takes its time to boot on a loaded machine: wait
            // until it takes connections and the notifier's own transport
            // has its link back, then for the breaker's open time, so that
            // the next call is a probe that can succeed (not one more
            // refusal because the node was still booting). The queue of the
            // test is left alone: the node recovers it as it boots.
            connect(&rabbit).await;
            timeout(Duration::from_secs(60), async {
                while amqp.declare("seawall.ready").await.is_err() {
                    sleep(ms(100)).await;
                }
            })
            .await
            .expect("the notifier's transport has its link back within 60 s");
            sleep(ms(250)).await;
        }
        match notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", n.to_string()))
            .await
        {
            Ok(Notified::Published) => published.insert(n),
            Ok(Notified::Diverted(_)) => diverted.insert(n),
            Err(NotifyError { message, .. }) => handed_back.insert(text(&message).parse().unwrap()),
        };
    }
    assert!((0..30).all(|n| published.contains(&n)), "{published:?}");
    assert!((30..60).all(|n| diverted.contains(&n)), "{diverted:?}");
    // Traffic flows again from the probe on.
    assert!((60..90).all(|n| published.contains(&n)), "{published:?}");
    assert!(handed_back.is_empty());
    assert_eq!(published.len() + diverted.len(), 90);

    let mut publisher = Publisher::new(amqp.clone());
    assert_eq!(outbox.flush(&mut publisher).await.unwrap(), diverted.len());

    // Counted, not just compared as sets: none lost, and a copy sent twice
    // can only be one the outbox kept after the broker had taken it (its
    // confirm lost with the node): at most one per diverted message.
    let mut events = amqp.subscribe("events").await.unwrap();
    let mut received = Vec::new();
    while let Ok(Some(delivery)) = timeout(Duration::from_secs(3), events.next()).await {
        received.push(text(delivery.message()).parse::<u64>().unwrap());
        delivery
            .settle(seawall::messaging::Decision::Ack)
            .await
            .unwrap();
    }
    let distinct: BTreeSet<u64> = received.iter().copied().collect();
    assert_eq!(distinct, (0..90).collect(), "none lost");
    let duplicates = received.len() - distinct.len();
    assert!(
        duplicates <= diverted.len(),
        "{duplicates} duplicates, {} diverted",
        diverted.len()
    );
}

/// Subscribers without a group each get every message (before subjects were
/// exchanges' routing keys, each subject was one queue, and a gather over
/// three responders got one reply); members of a group share the messages,
/// each exactly once; a queue made before with other arguments is used as
/// it is (it failed with PRECONDITION_FAILED).
#[tokio::test]
async fn subscribers_fan_out_and_groups_share() {
    let Some(rabbit) = RabbitMq::start() else {
        return;
    };
    let amqp = ready(AmqpTransport::new(rabbit.uri())).await;

    // Scatter-gather: three responders, three replies.
    for suffix in ["a", "b", "c"] {
        let mut requests = amqp.subscribe("quote").await.unwrap();
        let responder = amqp.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let reply = request
                    .message()
                    .reply(format!("{}{suffix}", text(request.message())));
                responder.publish(reply.unwrap()).await.unwrap();
            }
        });
    }
    let correlator = Correlator::builder(amqp.clone()).build().await.unwrap();
    let gathered = correlator
        .scatter_gather(Some(3), Duration::from_secs(10))
        .oneshot(Message::new("quote", "q"))
        .await
        .unwrap();
    let replies: BTreeSet<String> = gathered.replies.iter().map(text).collect();
    assert_eq!(replies, ["qa", "qb", "qc"].map(String::from).into());
    assert_eq!(gathered.missing(), Some(0));

    // Publish/subscribe: two subscribers, each gets all 20, once.
    let (first, second) = (
        amqp.subscribe("news").await.unwrap(),
        amqp.subscribe("news").await.unwrap(),
    );
    let mut publisher = Publisher::new(amqp.clone());
    for n in 0..20 {
        publisher
            .ready()
            .await
            .unwrap()
            .call(Message::new("news", n.to_string()))
            .await
            .unwrap();
    }
    for subscription in [first, second] {
        let got: Vec<String> = subscription
            .take(20)
            .then(|delivery| async move {
                let (message, settle) = delivery.into_parts();
                settle
                    .send(seawall::messaging::Decision::Ack)
                    .await
                    .unwrap();
                text(&message)
            })
            .collect()
            .await;
        assert_eq!(got, (0..20).map(|n| n.to_string()).collect::<Vec<_>>());
    }

    // A group: two members share 40 messages, each handled exactly once.
    let group = AmqpTransport::new(rabbit.uri()).queue_group("billing");
    group.declare("work").await.unwrap();
    for n in 0..40 {
        publisher
            .ready()
            .await
            .unwrap()
            .call(Message::new("work", n.to_string()))
            .await
            .unwrap();
    }
    let handled = Arc::new(Mutex::new(Vec::new()));
    let member = |subscription| {
        let sink = Arc::clone(&handled);
        let handler = service_fn(move |message: Message| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .unwrap()
                    .push(text(&message).parse::<u64>().unwrap());
                sleep(ms(5)).await;
                Ok::<_, seawall::Error<BoxError>>(())
            }
        });
        let watched = Arc::clone(&handled);
        Consumer::new(handler).run_until(subscription, async move {
            let _ = timeout(Duration::from_secs(20), async {
                while watched.lock().unwrap().len() < 40 {
                    sleep(ms(10)).await;
                }
            })
            .await;
            sleep(ms(200)).await;
        })
    };
    let (one, two) = tokio::join!(
        member(group.subscribe("work").await.unwrap()),
        member(group.subscribe("work").await.unwrap())
    );
    let mut all = handled.lock().unwrap().clone();
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<_>>(), "each exactly once");
    assert!(one.acked > 0 && two.acked > 0, "both members took a share");
    assert_eq!(one.acked + two.acked, 40);

    // A queue that exists with other arguments (classic, where the default
    // is quorum) is used as it is.
    let classic = AmqpTransport::new(rabbit.uri())
        .queue_group("audit")
        .classic_queues();
    classic.declare("ledger").await.unwrap();
    let quorum = AmqpTransport::new(rabbit.uri()).queue_group("audit");
    quorum.declare("ledger").await.unwrap();
    let mut ledger = quorum.subscribe("ledger").await.unwrap();
    publisher
        .ready()
        .await
        .unwrap()
        .call(Message::new("ledger", "entry"))
        .await
        .unwrap();
    let entry = timeout(Duration::from_secs(10), ledger.next())
        .await
        .unwrap();
    assert_eq!(text(entry.unwrap().message()), "entry");
}

/// A message whose handler always fails is delivered exactly
/// `max_deliveries` times (RabbitMQ's quorum queue counts them), then
/// dead-lettered; a poison one is dead-lettered on its first delivery.
/// Before, a requeued failure came straight back (7,410 deliveries of one
/// message in 3 s) and a rejected one was dropped.
#[tokio::test]
async fn failing_messages_are_redelivered_a_bounded_number_of_times_then_dead_lettered() {
    let Some(rabbit) = RabbitMq::start() else {
        return;
    };
    let amqp = ready(
        AmqpTransport::new(rabbit.uri())
            .queue_group("billing")
            .dead_letter_exchange("seawall.dead"),
    )
    .await;
    let dead = AmqpTransport::new(rabbit.uri())
        .exchange("seawall.dead")
        .queue_group("morgue");
    dead.declare("invoices").await.unwrap();
    amqp.declare("invoices").await.unwrap();
    let mut publisher = Publisher::new(amqp.clone());
    for payload in ["fails", "poison", "1"] {
        publisher
            .ready()
            .await
            .unwrap()
            .call(Message::new("invoices", payload))
            .await
            .unwrap();
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let handler = service_fn(move |invoice: Message| {
        let sink = Arc::clone(&sink);
        async move {
            let payload = text(&invoice);
            sink.lock()
                .unwrap()
                .push((payload.clone(), invoice.deliveries));
            match payload.as_str() {
                "fails" => Err(BoxError::from("the ledger is locked")),
                "poison" => Err(Invalid::new("not an invoice").into()),
                _ => Ok(()),
            }
        }
    });
    let policy = Policy::builder().name("invoices").build().unwrap();
    let watched = Arc::clone(&seen);
    let figures = Consumer::new(policy.layer(handler))
        .concurrency(4)
        .max_deliveries(3)
        .redelivery_backoff(
            seawall::retry::Backoff::exponential(ms(50)).jitter(seawall::retry::Jitter::None),
        )
        .run_until(amqp.subscribe("invoices").await.unwrap(), async move {
            let _ = timeout(Duration::from_secs(20), async {
                while watched.lock().unwrap().len() < 5 {
                    sleep(ms(10)).await;
                }
            })
            .await;
            sleep(ms(500)).await;
        })
        .await;

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("1".to_owned(), Some(1)),
            ("fails".to_owned(), Some(1)),
            ("fails".to_owned(), Some(2)),
            ("fails".to_owned(), Some(3)),
            ("poison".to_owned(), Some(1)),
        ]
    );
    assert_eq!(
        (
            figures.acked,
            figures.requeued,
            figures.rejected,
            figures.exhausted
        ),
        (1, 2, 2, 1)
    );
    assert_eq!(figures.unsettled, 0);

    // Both rejected messages wait in the dead-letter queue, once each.
    let mut morgue = dead.subscribe("invoices").await.unwrap();
    let mut buried = Vec::new();
    while let Ok(Some(delivery)) = timeout(ms(1000), morgue.next()).await {
        buried.push(text(delivery.message()));
        delivery
            .settle(seawall::messaging::Decision::Ack)
            .await
            .unwrap();
    }
    buried.sort();
    assert_eq!(buried, ["fails", "poison"]);
}

/// The broker is killed (SIGKILL) while a consumer is working through 100
/// jobs, and started again: nothing is lost (every job is delivered at
/// least once), the jobs in hand when it died come again (their acks died
/// with it), and an idempotent consumer (`DeduplicateLayer`) does each
/// job's work exactly once, counting every repeat it skipped.
#[tokio::test]
async fn a_consumer_loses_nothing_and_repeats_nothing_when_the_broker_is_killed() {
    let Some(mut rabbit) = RabbitMq::start() else {
        return;
    };
    let amqp = connect(&rabbit).await;
    amqp.declare("jobs").await.unwrap();
    let jobs = Jobs::new(100);
    jobs.publish(amqp.clone(), "jobs").await;
    // Let the node write the queue's declaration down (it does so lazily;
    // a kill right after a declaration can lose it, which is the broker's
    // window, not this test's subject).
    sleep(Duration::from_secs(2)).await;

    let worker = jobs.spawn_worker(amqp.clone(), "jobs");
    jobs.wait_for(30).await;
    rabbit.stop(); // SIGKILL
    rabbit.restart().unwrap();
    let runs = timeout(Duration::from_secs(120), worker)
        .await
        .expect("every job done within 2 minutes of the restart")
        .unwrap();
    assert!(runs >= 2, "the consumer subscribed again after the kill");

    jobs.assert_each_done_once();
}
