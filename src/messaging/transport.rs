//! The one thing a broker client has to provide.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use futures_util::Stream;

use super::{Delivery, Message};

/// A broker client, as seawall's messaging services see it: publish a
/// message, subscribe to a subject. Request/reply is built on these two by
/// the [`Correlator`](super::Correlator), so it works on any broker,
/// including ones with no request primitive of their own.
///
/// Implement it for your client to give it every interaction style; a
/// synchronous client fits by running its calls on a
/// [`BlockingPool`](crate::blocking::BlockingPool) inside `publish`.
/// seawall ships [`InMemory`](super::InMemory) (tests), and, behind
/// features, NATS (`nats`) and AMQP (`amqp`) transports.
///
/// Clones must share the connection: every service clones its transport.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The client's error; a [`Leaf`](crate::Leaf), so seawall's layers
    /// over the transport's services return it in one level of
    /// [`Error`](crate::Error).
    type Error: std::error::Error + crate::Leaf + Send + Sync + 'static;
    /// A stream of received messages; it ends when the subscription is lost
    /// (services that keep one, like the correlator, subscribe again).
    type Subscription: Stream<Item = Delivery> + Send + Unpin + 'static;

    /// Publishes `message`. It resolves once the broker has it, as far as
    /// the client can tell (a confirm, a flush), so timeouts and breakers
    /// see a broker that is slow or gone.
    fn publish(
        &self,
        message: Message,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static;

    /// Subscribes to `subject`.
    fn subscribe(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Self::Subscription, Self::Error>> + Send + 'static;

    /// A fresh subject nobody else uses, for replies.
    fn reply_subject(&self) -> String {
        unique_subject("_seawall.reply")
    }
}

/// `prefix.<random>.<counter>`: the random part (drawn once per process)
/// keeps processes on different hosts apart, the counter subjects within one.
pub(crate) fn unique_subject(prefix: &str) -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| RandomState::new().build_hasher().finish());
    format!(
        "{prefix}.{process:016x}.{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
