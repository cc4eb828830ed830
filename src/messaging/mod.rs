//! Messaging: every interaction style as a resilient `tower::Service`, over
//! any broker (feature `messaging`).
//!
//! Use this module when services talk through a broker rather than call
//! each other directly: notifications, request/reply over queues,
//! publish/subscribe, scatter-gather. Each becomes a service that a
//! [`Policy`](crate::policy::Policy) guards like any call, and none loses a
//! message silently when the broker is slow or gone.
//!
//! Services talk one-to-one or one-to-many, synchronously or not. Each
//! style has a service shape here, so seawall's timeout, bulkhead, breaker
//! and fallback wrap it like any other call:
//!
//! | style | seawall type | `Service<Message>` answering |
//! |---|---|---|
//! | request/response (synchronous) | any client under a [`Policy`](crate::policy::Policy) | the response |
//! | notification (one-way) | [`Publisher`], and [`Notifier`] with an [`Outbox`] | [`Notified`]: published or diverted |
//! | request/async response | [`Correlator`] | the reply [`Message`] |
//! | publish/subscribe | [`Publisher`] to publish; [`Consumer`] runs a handler service over a subscription | each message acked, requeued or rejected |
//! | publish/async responses | [`ScatterGather`] | [`Gathered`]: the replies, and how many are missing |
//!
//! Brokers come in through [`Transport`] (publish and subscribe): NATS
//! ([`nats`], feature `nats`), AMQP/RabbitMQ ([`amqp`], feature `amqp`),
//! [`InMemory`] for tests, or your own client. A synchronous client fits by
//! running its calls on a [`BlockingPool`](crate::blocking::BlockingPool).
//!
//! # Nothing vanishes
//!
//! A [`Notifier`] accounts for every message: the broker took it, the
//! outbox took it, or the caller gets it back in the error. An [`Outbox`]
//! on disk ([`Outbox::open`], feature `durable-outbox`) keeps what it took
//! through a crash, and its [flusher](Outbox::spawn_flusher) sends it when
//! the broker is back: "diverted" means "will be published". A
//! [`Correlator`] bounds its waiting requests and counts replies that come
//! too late, and duplicates once. A [`Consumer`] tells the broker about
//! every message it pulled, redelivers a failed one after a backoff up to
//! a maximum, then dead-letters it, and stops pulling while the circuit is
//! open, so messages wait on the broker instead of being burnt into a
//! dead-letter queue. Fallbacks do not answer for a notifier or a consumer
//! (see [`fallback`](crate::fallback#where-fallbacks-do-not-answer)).
//!
//! # What each style promises, on each broker
//!
//! "At least once": nothing is lost, and a fault can deliver a message
//! twice. "Effectively once": at least once, with the second copy dropped
//! by its [id](Message::id) (JetStream's duplicate window for what is
//! published; a [`DeduplicateLayer`] under the consumer for what is
//! handled, within its memory of the last ids). "At most once": nothing
//! twice, and a fault can lose it.
//!
//! | style | core NATS | JetStream | RabbitMQ |
//! |---|---|---|---|
//! | notification: [`Notifier`] + in-memory [`Outbox`] | at most once (no receipt: a server that dies with a message on its socket loses it) | effectively once, through broker outages; at most once through this process dying | at least once (publisher confirms), through broker outages; at most once through this process dying |
//! | notification: [`Notifier`] + [`Outbox::open`] (on disk) | as above | effectively once, also through this process dying | at least once, also through this process dying |
//! | [`Consumer`] (pub/sub, work queues) | at most once (no acknowledgements) | at least once (acked after handling, the ack confirmed); effectively once behind a [`DeduplicateLayer`] | at least once (acked after handling, quorum queues count deliveries); effectively once behind a [`DeduplicateLayer`] |
//! | [`Correlator`] and [`ScatterGather`]: replies | at most once; a repeated reply is dropped, counted in [`ReplyFigures::duplicates`] | the same (replies travel as core messages) | the same (reply queues are not acknowledged) |
//!
//! What backs each row (every count exact; the brokers are real ones on
//! loopback, killed with SIGKILL unless said otherwise):
//!
//! - Notification, JetStream: 150 notifications, the server killed and
//!   restarted mid-stream; the stream holds each exactly once
//!   (`tests/nats.rs`, `notifications_survive_the_server_going_away`).
//! - Notification, RabbitMQ: 90 notifications, the broker shut down and
//!   restarted mid-stream; each published, kept or handed back, and every
//!   one in the queue after the outbox's flush (`tests/amqp.rs`).
//! - Notification, on disk: a process aborted with 20 notifications
//!   diverted; all 20 on disk, in order, and published once by the next
//!   flush (`tests/outbox.rs`).
//! - Consumer, JetStream and RabbitMQ: 100 jobs, the broker killed after
//!   30: none lost, each job's work done once behind a `DeduplicateLayer`,
//!   every repeat counted (`tests/nats_faults.rs`, `tests/amqp.rs`); a slow
//!   handler gets no duplicates without a fault; a failing message is
//!   delivered exactly its maximum number of times, then dead-lettered.
//! - Replies: a duplicate reply counts once, late ones are counted and
//!   dropped (`tests/messaging.rs`); a missing responder opens the breaker
//!   (`tests/nats.rs`).
//!
//! # Every message has an identity, and a deadline
//!
//! Every style gives each message it sends an [id](Message::id) (unless it
//! has one) that every copy keeps: a message the [`Notifier`] diverted to
//! its outbox, then sent again, is the same message. NATS carries it as
//! `Nats-Msg-Id`, so that JetStream stores a repeat within its duplicate
//! window once; AMQP as `message_id`. Over an at-least-once transport, a
//! [`DeduplicateLayer`] under the [`Consumer`] skips what was handled
//! already. The current [budget](crate::budget) travels as the message's
//! [deadline](Message::deadline), and a [`Consumer`] drops messages that
//! expired in the queue.
//!
//! The services box their futures (one allocation per message, next to the
//! broker client's own): a transport's futures are `async` code that has no
//! name to put in `Service::Future`.

mod consume;
mod correlate;
mod dedup;
mod memory;
mod message;
mod notify;
mod outbox;
mod replies;
mod scatter;
mod transport;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "nats")]
pub mod nats;

pub use consume::{ByFailure, ByOutcome, Consumer, ConsumerFigures, Decide};
pub use correlate::{Correlator, CorrelatorBuilder, RequestError, StartError};
pub use dedup::{Deduplicate, DeduplicateFigures, DeduplicateFuture, DeduplicateLayer};
pub use memory::{Down, InMemory, InMemoryFigures, InMemorySubscription};
pub use message::{Acknowledge, BoxFuture, Decision, Delivery, Message, Settle};
pub use notify::{Notified, Notifier, NotifierFigures, NotifyError, Publisher};
#[cfg(feature = "durable-outbox")]
pub use outbox::RedbStore;
pub use outbox::{
    FlushError, Flusher, MemoryStore, Outbox, OutboxError, OutboxFigures, OutboxStore,
};
pub use replies::ReplyFigures;
pub use scatter::{AtLeast, Gathered, ScatterGather};
pub use transport::Transport;
