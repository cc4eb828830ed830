//! A JetStream consumer whose server is killed (SIGKILL) mid-stream and
//! started again: nothing lost, and behind a `DeduplicateLayer` each
//! message's work done once. Skips (with a reason) without `nats-server`,
//! except in CI.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::messaging::nats::{ConsumerSettings, NatsTransport};
use seawall::messaging::{Consumer, DeduplicateLayer, Message, Publisher, Transport};
use seawall::BoxError;
use support::nats::NatsServer;
use tokio::time::{sleep, timeout};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn a_jetstream_consumer_loses_nothing_and_repeats_nothing_when_the_server_is_killed() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| ms(50))
        .connect(server.address())
        .await
        .unwrap();
    let nats = NatsTransport::new(client.clone())
        .jetstream()
        .queue_group("workers")
        .consumer_settings(
            ConsumerSettings::new()
                .prefetch(4)
                .ack_wait(Duration::from_secs(2)),
        );
    async_nats::jetstream::new(client.clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "JOBS".into(),
            subjects: vec!["jobs".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut publisher = Publisher::new(nats.clone());
    for n in 0..100 {
        publisher
            .ready()
            .await
            .unwrap()
            .call(Message::new("jobs", n.to_string()).with_id(format!("job-{n}")))
            .await
            .unwrap();
    }

    let delivered = Arc::new(Mutex::new(0usize));
    let done = Arc::new(Mutex::new(Vec::new()));
    let dedup = DeduplicateLayer::new(1_000).unwrap();
    let handler = {
        let (delivered, done) = (Arc::clone(&delivered), Arc::clone(&done));
        dedup
            .layer(service_fn(move |job: Message| {
                let done = Arc::clone(&done);
                async move {
                    sleep(ms(20)).await;
                    done.lock().unwrap().push(job.id.clone().unwrap());
                    Ok::<_, seawall::Error<BoxError>>(())
                }
            }))
            .map_request(move |job: Message| {
                *delivered.lock().unwrap() += 1;
                job
            })
    };
    let worker = {
        let (nats, done) = (nats.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let all_done = || {
                let done = Arc::clone(&done);
                async move {
                    while done.lock().unwrap().len() < 100 {
                        sleep(ms(10)).await;
                    }
                }
            };
            while done.lock().unwrap().len() < 100 {
                let Ok(subscription) = nats.subscribe("jobs").await else {
                    sleep(ms(100)).await;
                    continue;
                };
                Consumer::new(handler.clone())
                    .concurrency(4)
                    .run_until(subscription, all_done())
                    .await;
            }
        })
    };
    timeout(Duration::from_secs(30), async {
        while done.lock().unwrap().len() < 30 {
            sleep(ms(5)).await;
        }
    })
    .await
    .expect("30 jobs done before the kill");
    server.stop(); // SIGKILL
    server.restart().unwrap();
    timeout(Duration::from_secs(60), worker)
        .await
        .expect("every job done within a minute of the restart")
        .unwrap();

    let done = done.lock().unwrap().clone();
    let distinct: BTreeSet<&String> = done.iter().collect();
    assert_eq!(distinct.len(), 100, "none lost");
    assert_eq!(done.len(), 100, "each job's work done once: {done:?}");
    let delivered = *delivered.lock().unwrap();
    assert_eq!(
        dedup.figures().duplicates as usize,
        delivered - 100,
        "every repeat delivery counted and skipped"
    );
}
