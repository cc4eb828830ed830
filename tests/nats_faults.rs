//! A JetStream consumer whose server is killed (SIGKILL) mid-stream and
//! started again: nothing lost, and behind a `DeduplicateLayer` each
//! message's work done once. Skips (with a reason) without `nats-server`,
//! except in CI.

mod support;

use std::time::Duration;

use seawall::messaging::nats::{ConsumerSettings, NatsTransport};
use support::jobs::Jobs;
use support::nats::NatsServer;
use tokio::time::timeout;

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
    let jobs = Jobs::new(100);
    jobs.publish(nats.clone(), "jobs").await;

    let worker = jobs.spawn_worker(nats.clone(), "jobs");
    jobs.wait_for(30).await;
    server.stop(); // SIGKILL
    server.restart().unwrap();
    timeout(Duration::from_secs(60), worker)
        .await
        .expect("every job done within a minute of the restart")
        .unwrap();

    jobs.assert_each_done_once();
}
