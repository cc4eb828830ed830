//! The durable outbox: what a notifier diverted survives the process
//! dying, and a flusher sends it once the broker is back.
#![cfg(feature = "durable-outbox")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use seawall::messaging::{
    InMemory, MemoryStore, Message, Notified, Notifier, Outbox, OutboxStore, Publisher, RedbStore,
};
use seawall::policy::Policy;
use seawall::retry::{Backoff, Jitter};
use tower::{Layer, Service, ServiceExt};

const CHILD: &str = "SEAWALL_OUTBOX_CHILD";

fn text(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seawall-outbox-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.redb")
}

/// In the child: the broker is down, 20 notifications are diverted to the
/// outbox on disk (each answered `Diverted` to its caller, its id
/// printed), and the process aborts at once.
fn divert_then_abort(path: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let broker = InMemory::new();
        broker.set_down(true);
        let policy = Policy::builder()
            .name("events")
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let outbox = Outbox::open(path, 1_000).unwrap();
        let mut notifier = Notifier::new(policy.layer(Publisher::new(broker)), outbox);
        for n in 0..20 {
            let sent = notifier
                .ready()
                .await
                .unwrap()
                .call(Message::new("events", n.to_string()).with_id(format!("event-{n}")))
                .await
                .unwrap();
            assert!(matches!(sent, Notified::Diverted(_)));
            println!("diverted event-{n}");
        }
    });
    std::process::abort()
}

/// Every notification the child was told was diverted is in the outbox
/// after it aborted, once each and in order, and reaches the broker on the
/// next flush. An outbox in memory lost all 20.
#[test]
fn diverted_notifications_survive_the_process_aborting() {
    if let Some(path) = std::env::var_os(CHILD) {
        divert_then_abort(Path::new(&path));
    }
    let path = scratch("abort");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "diverted_notifications_survive_the_process_aborting",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    assert!(!child.status.success(), "the child aborted");
    let told: Vec<String> = String::from_utf8_lossy(&child.stdout)
        .lines()
        // The harness may print on the same line before the first one.
        .filter_map(|line| Some(line[line.find("diverted ")?..]["diverted ".len()..].to_owned()))
        .collect();
    assert_eq!(told.len(), 20, "{}", String::from_utf8_lossy(&child.stderr));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let outbox = Outbox::open(&path, 1_000).unwrap();
        assert_eq!(outbox.len(), 20);
        let broker = InMemory::new();
        let mut received = broker.subscribe_now("events");
        let mut publisher = Publisher::new(broker.clone());
        assert_eq!(outbox.flush(&mut publisher).await.unwrap(), 20);
        assert!(outbox.is_empty());
        let mut ids = Vec::new();
        for n in 0..20 {
            let delivery = received.next().await.unwrap();
            assert_eq!(text(delivery.message()), n.to_string(), "in order");
            ids.push(delivery.message().id.clone().unwrap());
        }
        assert_eq!(ids, told, "the same messages, each once");
    });
    // And nothing is sent twice after another restart.
    assert!(Outbox::open(&path, 1_000).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A flusher sends what the notifier diverted as soon as the broker is
/// back, each message once, without anyone calling `flush`; a failing
/// flush is tried again after the backoff.
#[tokio::test(start_paused = true)]
async fn a_flusher_sends_what_was_kept_once_the_broker_is_back() {
    let path = scratch("flusher");
    let broker = InMemory::new();
    broker.set_down(true);
    let received = Arc::new(Mutex::new(Vec::new()));
    {
        let mut subscription = broker.subscribe_now("events");
        let sink = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(delivery) = subscription.next().await {
                sink.lock()
                    .unwrap()
                    .push(delivery.message().id.clone().unwrap());
            }
        });
    }
    let policy = Policy::builder()
        .name("events")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let outbox = Outbox::open(&path, 1_000).unwrap();
    let _flusher = outbox.spawn_flusher(
        policy.layer(Publisher::new(broker.clone())),
        Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::None),
    );
    let mut notifier = Notifier::new(policy.layer(Publisher::new(broker.clone())), outbox.clone());
    for n in 0..10 {
        let sent = notifier
            .ready()
            .await
            .unwrap()
            .call(Message::new("events", n.to_string()).with_id(format!("e{n}")))
            .await
            .unwrap();
        assert!(!sent.is_published());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(outbox.len(), 10, "nothing leaves while the broker is down");
    broker.set_down(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(outbox.is_empty());
    let got = received.lock().unwrap().clone();
    assert_eq!(got, (0..10).map(|n| format!("e{n}")).collect::<Vec<_>>());
    assert_eq!(outbox.figures().flushed, 10);
    // A message kept later is sent without waiting for a backoff.
    outbox
        .push(Message::new("events", "late").with_id("late"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(received.lock().unwrap().last().unwrap(), "late");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Both stores keep the same promises: order, capacity, removal by number
/// (a flush removes what it sent, even if another message came first
/// meanwhile), draining.
#[test]
fn the_stores_keep_the_same_promises() {
    let path = scratch("stores");
    let stores: [Box<dyn OutboxStore>; 2] = [
        Box::new(MemoryStore::default()),
        Box::new(RedbStore::open(&path).unwrap()),
    ];
    for store in stores {
        for n in 0..3 {
            assert!(store.append(&Message::new("s", n.to_string()), 3).unwrap());
        }
        assert!(!store.append(&Message::new("s", "full"), 3).unwrap());
        assert_eq!(store.len().unwrap(), 3);
        let (first, message) = store.first().unwrap().unwrap();
        assert_eq!(text(&message), "0");
        store.remove(first).unwrap();
        store.remove(first).unwrap(); // gone already: nothing else goes
        assert_eq!(store.len().unwrap(), 2);
        let (second, _) = store.first().unwrap().unwrap();
        assert!(second > first, "numbers only grow");
        let drained: BTreeSet<String> = store.drain().unwrap().iter().map(text).collect();
        assert_eq!(drained, ["1", "2"].map(String::from).into());
        assert!(store.is_empty().unwrap());
        assert!(store.first().unwrap().is_none());
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
