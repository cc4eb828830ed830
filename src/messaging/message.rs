//! What travels: a [`Message`], and a received message with its
//! acknowledgement, a [`Delivery`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::budget::Budget;
use crate::BoxError;

/// A message: where it goes, what it carries, and where an answer should go.
///
/// `subject` is the broker's address: a NATS subject, an AMQP routing key
/// (the queue's name on the default exchange). `reply_to` and
/// `correlation_id` are set by the [`Correlator`](super::Correlator) and
/// [`ScatterGather`](super::ScatterGather); a responder answers with
/// [`Message::reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Where the message goes.
    pub subject: String,
    /// What it carries; seawall never looks inside.
    pub payload: Bytes,
    /// Where answers should be sent, for request/reply styles.
    pub reply_to: Option<String>,
    /// Which request an answer belongs to.
    pub correlation_id: Option<String>,
    /// What makes this message itself: the same on every copy of it, so
    /// that a broker or a consumer can tell a second delivery from a new
    /// message. The styles set one when it is `None` (unique in this
    /// process and, by a random prefix, across processes). It travels as
    /// `Nats-Msg-Id` on NATS (JetStream drops a repeat within its
    /// duplicate window) and as AMQP's `message_id`; a
    /// [`Deduplicate`](super::Deduplicate) handler skips repeats.
    pub id: Option<String>,
    /// When the work it asks for stops being worth doing: the
    /// [budget](crate::budget) of the request that sent it. The styles set
    /// it from the current budget when it is `None`; a
    /// [`Consumer`](super::Consumer) drops a message whose deadline passed
    /// while it was queued. Across a broker it travels as milliseconds
    /// since the Unix epoch.
    pub deadline: Option<Budget>,
    /// How many times the broker has delivered this message, this delivery
    /// included, on a received message whose transport can tell
    /// (JetStream, AMQP quorum queues, [`InMemory`](super::InMemory));
    /// `None` otherwise, and on messages being sent (brokers count, not
    /// senders). A [`Consumer`](super::Consumer) dead-letters a message
    /// that failed this many times.
    pub deliveries: Option<u32>,
    /// Whether the broker delivered this message before (AMQP's
    /// `redelivered` flag; a count above one elsewhere): a handler whose
    /// effects are not idempotent may check what it did last time.
    pub redelivered: bool,
    /// Whether this is the broker's word, rather than a reply, that nobody
    /// subscribes to a request's subject (NATS's "no responders" status,
    /// 503). A transport sets it on a message arriving on a reply subject;
    /// such a message carries the request's `correlation_id` and no
    /// payload. A [`Correlator`](super::Correlator) then fails the request
    /// at once with [`RequestError::NoResponders`](super::RequestError::NoResponders)
    /// instead of waiting out its time limit, and a
    /// [`ScatterGather`](super::ScatterGather) ends its gather. `false` on
    /// every message a transport receives otherwise, and on messages being
    /// sent.
    pub no_responders: bool,
}

impl Message {
    /// A message to `subject`, with no reply address.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Message {
        Message {
            subject: subject.into(),
            payload: payload.into(),
            reply_to: None,
            correlation_id: None,
            id: None,
            deadline: None,
            deliveries: None,
            redelivered: false,
            no_responders: false,
        }
    }

    /// This message with `id` as its identity.
    pub fn with_id(mut self, id: impl Into<String>) -> Message {
        self.id = Some(id.into());
        self
    }

    /// This message with `deadline`, unless it has an earlier one.
    pub fn with_deadline(mut self, deadline: Budget) -> Message {
        self.deadline = Some(self.deadline.map_or(deadline, |own| own.min(deadline)));
        self
    }

    /// What every style does to a message before it sends it: gives it an
    /// id if it has none, and the current budget as its deadline if that is
    /// earlier than its own.
    pub(crate) fn stamped(mut self) -> Message {
        if self.id.is_none() {
            self.id = Some(new_id());
        }
        match Budget::current() {
            Some(budget) => self.with_deadline(budget),
            None => self,
        }
    }

    /// The answer to this message: sent to its `reply_to`, carrying its
    /// `correlation_id`. `None` if nobody asked for an answer.
    pub fn reply(&self, payload: impl Into<Bytes>) -> Option<Message> {
        let reply_to = self.reply_to.clone()?;
        Some(Message {
            subject: reply_to,
            payload: payload.into(),
            reply_to: None,
            correlation_id: self.correlation_id.clone(),
            id: None,
            deadline: None,
            deliveries: None,
            redelivered: false,
            no_responders: false,
        })
    }
}

/// A new message id: a random prefix for this process, and a count.
fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::OnceLock;

    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        // std's hasher keys are random per process.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    format!("{prefix:016x}-{}", COUNT.fetch_add(1, Relaxed))
}

/// What a consumer does with a message it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Done with: the broker forgets it.
    Ack,
    /// Not handled now: the broker delivers it again (to this consumer or
    /// another).
    Requeue,
    /// Cannot be handled: the broker drops it, or dead-letters it where a
    /// dead-letter exchange is configured.
    Reject,
}

/// A boxed, sendable future, as transports and acknowledgements return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a transport tells its broker what became of a delivery.
pub trait Acknowledge: Send + 'static {
    /// Sends the decision to the broker.
    fn settle(self: Box<Self>, decision: Decision) -> BoxFuture<Result<(), BoxError>>;

    /// Whether the broker itself can wait before delivering a requeued
    /// message again ([`requeue_after`](Acknowledge::requeue_after)).
    /// `false` by default: a [`Consumer`](super::Consumer) then holds the
    /// message for the delay (its place in the prefetch stays taken, which
    /// is what keeps a failing message from coming straight back) and
    /// requeues it after; on stopping, it requeues held messages at once.
    fn delays_redelivery(&self) -> bool {
        false
    }

    /// Asks the broker to deliver the message again no sooner than
    /// `delay` (JetStream's `NAK` with a delay), for brokers whose
    /// [`delays_redelivery`](Acknowledge::delays_redelivery) is `true`.
    /// By default it requeues at once.
    fn requeue_after(self: Box<Self>, delay: Duration) -> BoxFuture<Result<(), BoxError>> {
        let _ = delay;
        self.settle(Decision::Requeue)
    }
}

/// A received message, and the means to acknowledge it.
///
/// Transports without acknowledgements (core NATS: at most once) deliver
/// [`Delivery::unacknowledged`] messages, for which every decision is a
/// no-op.
pub struct Delivery {
    message: Message,
    acker: Option<Box<dyn Acknowledge>>,
}

impl Delivery {
    /// A message the broker waits to hear about.
    pub fn new(message: Message, acker: impl Acknowledge) -> Delivery {
        Delivery {
            message,
            acker: Some(Box::new(acker)),
        }
    }

    /// A message the broker has already forgotten.
    pub fn unacknowledged(message: Message) -> Delivery {
        Delivery {
            message,
            acker: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether the broker waits for a decision on this message.
    pub fn is_acknowledged(&self) -> bool {
        self.acker.is_some()
    }

    /// Splits the message from its acknowledgement.
    pub fn into_parts(self) -> (Message, Settle) {
        (self.message, Settle(self.acker))
    }

    /// Tells the broker `decision` without handling the message.
    pub async fn settle(self, decision: Decision) -> Result<(), BoxError> {
        self.into_parts().1.send(decision).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("acknowledged", &self.acker.is_some())
            .finish()
    }
}

/// The acknowledgement half of a [`Delivery`].
pub struct Settle(Option<Box<dyn Acknowledge>>);

impl Settle {
    /// Tells the broker `decision` (nothing, for unacknowledged deliveries).
    pub async fn send(self, decision: Decision) -> Result<(), BoxError> {
        match self.0 {
            Some(acker) => acker.settle(decision).await,
            None => Ok(()),
        }
    }

    /// Whether the broker waits by itself before delivering this message
    /// again ([`Acknowledge::delays_redelivery`]).
    pub fn delays_redelivery(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|acker| acker.delays_redelivery())
    }

    /// Requeues the message for the broker to deliver again no sooner than
    /// `delay`, where it [can](Settle::delays_redelivery); at once
    /// otherwise. Nothing, for unacknowledged deliveries.
    pub async fn requeue_after(self, delay: Duration) -> Result<(), BoxError> {
        match self.0 {
            Some(acker) => acker.requeue_after(delay).await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Settle").field(&self.0.is_some()).finish()
    }
}
