//! A broker in this process, for tests and examples.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;

use super::{Acknowledge, BoxFuture, Decision, Delivery, Message, Transport};
use crate::BoxError;

/// A broker in this process: every subscriber of a subject gets every
/// message published to it after it subscribed, acknowledges it, and a
/// requeued message is published again. It can be taken down and slowed
/// down, so tests of the messaging services run under
/// `tokio::time::pause()`, exact and fast. Clones share the broker.
#[derive(Clone, Default)]
pub struct InMemory {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    subscribers: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Delivery>>>>,
    down: AtomicBool,
    latency_ms: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    requeued: AtomicU64,
    rejected: AtomicU64,
}

/// The in-memory broker is down.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the in-memory broker is down")]
pub struct Down;

crate::leaf_error!(Down);

/// What an [`InMemory`] broker has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InMemoryFigures {
    /// Messages published (requeued ones not counted again).
    pub published: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries requeued.
    pub requeued: u64,
    /// Deliveries rejected.
    pub rejected: u64,
}

impl InMemory {
    /// An empty broker, up, with no latency.
    pub fn new() -> InMemory {
        InMemory::default()
    }

    /// Takes the broker down (publishing fails with [`Down`]) or brings it
    /// back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Makes every publish take this long (on tokio's clock).
    pub fn set_latency(&self, latency: Duration) {
        let millis = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(millis, Ordering::Relaxed);
    }

    /// What it has seen.
    pub fn figures(&self) -> InMemoryFigures {
        InMemoryFigures {
            published: self.shared.published.load(Ordering::Relaxed),
            acked: self.shared.acked.load(Ordering::Relaxed),
            requeued: self.shared.requeued.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
        }
    }

    /// Subscribes at once (no `await`).
    pub fn subscribe_now(&self, subject: &str) -> InMemorySubscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers()
            .entry(subject.to_owned())
            .or_default()
            .push(sender);
        InMemorySubscription(receiver)
    }

    /// Hands `message` to the subject's subscribers at once, up or down (a
    /// responder's reply, in tests).
    pub fn send(&self, message: Message) {
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        self.deliver(message);
    }

    fn subscribers(&self) -> MutexGuard<'_, HashMap<String, Vec<mpsc::UnboundedSender<Delivery>>>> {
        self.shared
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, mut message: Message) {
        let before = message.deliveries.unwrap_or(0);
        message.deliveries = Some(before + 1);
        message.redelivered = before > 0;
        let mut subscribers = self.subscribers();
        let Some(list) = subscribers.get_mut(&message.subject) else {
            return;
        };
        list.retain(|subscriber| {
            let acker = Acker {
                broker: self.clone(),
                message: message.clone(),
            };
            subscriber
                .send(Delivery::new(message.clone(), acker))
                .is_ok()
        });
    }
}

impl std::fmt::Debug for InMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemory")
            .field("down", &self.shared.down.load(Ordering::Relaxed))
            .field("figures", &self.figures())
            .finish_non_exhaustive()
    }
}

struct Acker {
    broker: InMemory,
    message: Message,
}

impl Acknowledge for Acker {
    fn settle(self: Box<Self>, decision: Decision) -> BoxFuture<Result<(), BoxError>> {
        let shared = &self.broker.shared;
        let counter = match decision {
            Decision::Ack => &shared.acked,
            Decision::Requeue => &shared.requeued,
            Decision::Reject => &shared.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if decision == Decision::Requeue {
            self.broker.deliver(self.message);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The messages an [`InMemory`] subscriber receives.
#[derive(Debug)]
pub struct InMemorySubscription(mpsc::UnboundedReceiver<Delivery>);

impl Stream for InMemorySubscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.0.poll_recv(cx)
    }
}

impl Transport for InMemory {
    type Error = Down;
    type Subscription = InMemorySubscription;

    fn publish(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), Down>> + Send + 'static {
        let broker = self.clone();
        async move {
            let latency = broker.shared.latency_ms.load(Ordering::Relaxed);
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            if broker.shared.down.load(Ordering::Relaxed) {
                return Err(Down);
            }
            broker.send(message);
            Ok(())
        }
    }

    fn subscribe(
        &self,
        subject: &str,
    ) -> impl std::future::Future<Output = Result<InMemorySubscription, Down>> + Send + 'static
    {
        let subscribed = if self.shared.down.load(Ordering::Relaxed) {
            Err(Down)
        } else {
            Ok(self.subscribe_now(subject))
        };
        std::future::ready(subscribed)
    }
}
