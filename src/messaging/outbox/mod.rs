//! Where notifications wait while the broker is away: an [`Outbox`], in
//! memory or on disk, and the task that sends what it keeps.

#[cfg(feature = "durable-outbox")]
mod durable;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tower_service::Service;

use super::notify::ready_call;
use super::Message;
use crate::error::{Leaf, Refusal};
use crate::retry::Backoff;
use crate::BoxError;

#[cfg(feature = "durable-outbox")]
pub use durable::RedbStore;

/// Where an [`Outbox`] keeps its messages: in memory ([`MemoryStore`]), in
/// an embedded database ([`RedbStore`], feature `durable-outbox`), or
/// anywhere of yours (a table of the database your service writes to, so
/// that a message is kept in the same transaction as the change it
/// announces).
///
/// Messages are numbered as they are appended, and the numbers only grow:
/// [`Outbox::flush`] sends the first, then removes it by its number, so a
/// flush cut short removes nothing it did not send.
pub trait OutboxStore: Send + Sync + 'static {
    /// Keeps `message` after the others, unless `capacity` messages are
    /// kept already: then it answers `false`. One step, so that two
    /// appends at once never pass the capacity.
    fn append(&self, message: &Message, capacity: usize) -> Result<bool, BoxError>;

    /// The oldest message kept, with its number.
    fn first(&self) -> Result<Option<(u64, Message)>, BoxError>;

    /// Removes the message numbered `number`, if it is still kept.
    fn remove(&self, number: u64) -> Result<(), BoxError>;

    /// How many messages it keeps.
    fn len(&self) -> Result<usize, BoxError>;

    /// Whether it keeps none.
    fn is_empty(&self) -> Result<bool, BoxError> {
        Ok(self.len()? == 0)
    }

    /// Takes every message out, oldest first.
    fn drain(&self) -> Result<Vec<Message>, BoxError>;
}

/// An [`OutboxStore`] in this process's memory: it survives a broker
/// outage, not the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The kept messages, each with its number.
    messages: Mutex<VecDeque<(u64, Message)>>,
    next: AtomicU64,
}

impl MemoryStore {
    fn messages(&self) -> MutexGuard<'_, VecDeque<(u64, Message)>> {
        // A panic elsewhere cannot leave a VecDeque half-changed.
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OutboxStore for MemoryStore {
    fn append(&self, message: &Message, capacity: usize) -> Result<bool, BoxError> {
        let mut messages = self.messages();
        if messages.len() >= capacity {
            return Ok(false);
        }
        // Taken under the lock: numbers follow the order of the queue.
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        messages.push_back((number, message.clone()));
        Ok(true)
    }

    fn first(&self) -> Result<Option<(u64, Message)>, BoxError> {
        Ok(self.messages().front().cloned())
    }

    fn remove(&self, number: u64) -> Result<(), BoxError> {
        let mut messages = self.messages();
        if messages.front().is_some_and(|(first, _)| *first == number) {
            messages.pop_front();
        } else {
            messages.retain(|(kept, _)| *kept != number);
        }
        Ok(())
    }

    fn len(&self) -> Result<usize, BoxError> {
        Ok(self.messages().len())
    }

    fn drain(&self) -> Result<Vec<Message>, BoxError> {
        Ok(self
            .messages()
            .drain(..)
            .map(|(_, message)| message)
            .collect())
    }
}

/// The outbox could not keep a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// It holds as many messages as it may.
    #[error("the outbox is full ({capacity} messages)")]
    Full {
        /// How many messages it holds at most.
        capacity: usize,
    },
    /// Its store failed (a disk, a database).
    #[error("the outbox's store failed: {0}")]
    Store(#[source] BoxError),
}

impl Leaf for OutboxError {
    fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self)
    }

    fn refusal(&self) -> Option<Refusal> {
        match self {
            OutboxError::Full { .. } => Some(Refusal::Overloaded),
            OutboxError::Store(_) => None,
        }
    }
}

/// Why a [`flush`](Outbox::flush) stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError<E> {
    /// The publisher failed; the message stays first in the outbox.
    #[error("publishing a kept message failed: {0}")]
    Publish(#[source] E),
    /// The outbox's store failed.
    #[error("the outbox's store failed: {0}")]
    Store(#[source] BoxError),
}

/// A bounded outbox: the messages a [`Notifier`](super::Notifier) could not
/// publish, in order, until [`flush`](Outbox::flush) (or the task of
/// [`spawn_flusher`](Outbox::spawn_flusher)) sends them. Clones share the
/// messages.
///
/// Kept in memory by default ([`Outbox::new`]): that survives a broker
/// outage, not a restart of this process. [`Outbox::open`] (feature
/// `durable-outbox`) keeps them in a file, committed to disk before the
/// notifier answers [`Diverted`](super::Notified::Diverted), so that
/// "diverted" means "will be published" even if the process dies;
/// [`Outbox::with_store`] takes any [`OutboxStore`].
pub struct Outbox<S = MemoryStore> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    store: S,
    capacity: usize,
    /// Held by the flush in progress.
    flushing: tokio::sync::Mutex<()>,
    /// Told of every message kept, for the flusher.
    kept_one: Notify,
    kept: AtomicU64,
    refused: AtomicU64,
    flushed: AtomicU64,
}

impl<S> Clone for Outbox<S> {
    fn clone(&self) -> Self {
        Outbox {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// An outbox's running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxFigures {
    /// Messages held now (0 if the store cannot say).
    pub held: usize,
    /// Messages taken since this outbox was made or opened.
    pub kept: u64,
    /// Messages refused for want of room, or by a failing store.
    pub refused: u64,
    /// Messages sent on by [`Outbox::flush`].
    pub flushed: u64,
}

impl Outbox {
    /// An outbox in memory, holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Result<Outbox, crate::ConfigError> {
        Outbox::with_store(MemoryStore::default(), capacity)
    }
}

impl<S: OutboxStore> Outbox<S> {
    /// An outbox keeping at most `capacity` messages in `store`.
    pub fn with_store(store: S, capacity: usize) -> Result<Outbox<S>, crate::ConfigError> {
        if capacity == 0 {
            return Err(crate::ConfigError::new(
                "outbox.capacity",
                capacity,
                "must hold at least one message",
            ));
        }
        Ok(Outbox {
            shared: Arc::new(Shared {
                store,
                capacity,
                flushing: tokio::sync::Mutex::new(()),
                kept_one: Notify::new(),
                kept: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
            }),
        })
    }

    /// Its store.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Keeps `message`, or refuses it when full or when the store fails.
    pub fn push(&self, message: Message) -> Result<(), OutboxError> {
        let shared = &self.shared;
        let kept = shared.store.append(&message, shared.capacity);
        let error = match kept {
            Ok(true) => {
                shared.kept.fetch_add(1, Ordering::Relaxed);
                shared.kept_one.notify_one();
                return Ok(());
            }
            Ok(false) => OutboxError::Full {
                capacity: shared.capacity,
            },
            Err(error) => OutboxError::Store(error),
        };
        shared.refused.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }

    /// How many messages it holds (0 if the store cannot say).
    pub fn len(&self) -> usize {
        self.shared.store.len().unwrap_or(0)
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every message out, oldest first.
    pub fn drain(&self) -> Result<Vec<Message>, OutboxError> {
        self.shared.store.drain().map_err(OutboxError::Store)
    }

    /// Its running totals.
    pub fn figures(&self) -> OutboxFigures {
        OutboxFigures {
            held: self.len(),
            kept: self.shared.kept.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            flushed: self.shared.flushed.load(Ordering::Relaxed),
        }
    }

    /// Sends the held messages through `publisher`, oldest first, and says
    /// how many went. At the first failure the error is returned and the
    /// message stays first: call it again once the broker is back. Messages
    /// kept meanwhile wait behind the older ones.
    ///
    /// Cancel-safe: a message leaves the outbox only once the publisher has
    /// taken it, so a flush dropped mid-publish (under a timeout, say)
    /// loses nothing; the next flush sends that message again, which the
    /// broker may then have twice (at least once; the copies share the
    /// message's [id](Message::id), for the broker or the consumer to drop
    /// the second). Flushes take turns: a second one waits for the first,
    /// so no message goes out twice from two flushes at once.
    pub async fn flush<P>(&self, publisher: &mut P) -> Result<usize, FlushError<P::Error>>
    where
        P: Service<Message>,
    {
        let _turn = self.shared.flushing.lock().await;
        let store = &self.shared.store;
        let mut sent = 0;
        loop {
            let Some((number, message)) = store.first().map_err(FlushError::Store)? else {
                return Ok(sent);
            };
            ready_call(publisher, message)
                .await
                .map_err(FlushError::Publish)?;
            store.remove(number).map_err(FlushError::Store)?;
            sent += 1;
            self.shared.flushed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts a task that sends what the outbox keeps through `publisher`
    /// as soon as it keeps it, and after a failure tries again after
    /// `backoff`'s delays (the retry count grows until a flush succeeds),
    /// so that nothing waits in the outbox for someone to call
    /// [`flush`](Outbox::flush). It stops when the [`Flusher`] is dropped.
    ///
    /// Give it the same guarded publisher the notifier has (a
    /// [`Policy`](crate::policy::Policy) over a
    /// [`Publisher`](super::Publisher)): while the breaker is open its
    /// flushes are refused at once, without touching the broker.
    pub fn spawn_flusher<P>(&self, mut publisher: P, backoff: Backoff) -> Flusher
    where
        P: Service<Message> + Send + 'static,
        P::Future: Send,
        P::Error: fmt::Display + Send,
    {
        let outbox = self.clone();
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let kept = outbox.shared.kept_one.notified();
                match outbox.flush(&mut publisher).await {
                    Ok(_) => {
                        failures = 0;
                        kept.await;
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let delay = backoff.delay(
                            failures,
                            Duration::ZERO,
                            crate::draw::mix(u64::from(failures)),
                        );
                        tracing::debug!(target: "seawall::messaging", %error, ?delay, "flushing the outbox failed; trying again");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
        Flusher { task }
    }
}

/// The task of [`Outbox::spawn_flusher`]; dropping it stops the task
/// (between messages, or mid-publish: cancel-safe, as
/// [`flush`](Outbox::flush) is).
#[derive(Debug)]
pub struct Flusher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: OutboxStore> fmt::Debug for Outbox<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.shared.capacity)
            .field("figures", &self.figures())
            .finish()
    }
}

impl<S: OutboxStore> Service<Message> for Outbox<S> {
    type Response = ();
    type Error = OutboxError;
    type Future = std::future::Ready<Result<(), OutboxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Message) -> Self::Future {
        std::future::ready(self.push(message))
    }
}
