//! Notification (one-way): publish and forget, with nothing silently lost.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::{BoxFuture, Message, Transport};
use crate::error::Leaf;
use crate::fallback::withhold;

/// A transport's `publish` as a `Service<Message, Response = ()>`: the
/// innermost service of a notification stack, under a
/// [`Policy`](crate::policy::Policy)'s timeout, bulkhead and breaker.
#[derive(Clone, Debug)]
pub struct Publisher<T> {
    transport: T,
}

impl<T: Transport> Publisher<T> {
    /// Publishes through `transport`.
    pub fn new(transport: T) -> Publisher<T> {
        Publisher { transport }
    }
}

impl<T: Transport> Service<Message> for Publisher<T> {
    type Response = ();
    type Error = T::Error;
    type Future = BoxFuture<Result<(), T::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Message) -> Self::Future {
        Box::pin(self.transport.publish(message.stamped()))
    }
}

/// What became of a notification.
#[derive(Debug)]
pub enum Notified<E> {
    /// The broker has it.
    Published,
    /// Publishing failed with this error, and the outbox took the message.
    Diverted(E),
}

impl<E> Notified<E> {
    /// Whether the broker has it.
    pub fn is_published(&self) -> bool {
        matches!(self, Notified::Published)
    }
}

/// Neither the broker nor the outbox took the message: here it is back.
#[derive(Debug, thiserror::Error)]
#[error("notification to {} not published ({publish}) and not kept ({outbox})", .message.subject)]
#[non_exhaustive]
pub struct NotifyError<E, O> {
    /// The message, to keep or drop as the caller sees fit.
    pub message: Message,
    /// Why publishing failed.
    pub publish: E,
    /// Why the outbox refused it.
    pub outbox: O,
}

/// A notification service that accounts for every message: it is either
/// [published](Notified::Published), handed to the outbox
/// ([diverted](Notified::Diverted)), or returned to the caller inside a
/// [`NotifyError`].
///
/// A caller who stops waiting (a timeout around the call, a cancelled
/// request) does not take the message with it: each notification runs as a
/// task of its own on the current tokio runtime (so `call` must be made
/// within one), and still ends published or in the outbox; only handing
/// it back needs the caller.
///
/// The publisher is any `Service<Message>`, usually a [`Publisher`] under a
/// [`Policy`](crate::policy::Policy) (so a slow or dead broker costs a
/// timeout at most, then nothing while the breaker is open). Fallbacks
/// do not answer for it: only the broker can say a message is published,
/// so a failed publish goes to the outbox even under a Policy with a
/// fallback. The outbox is an [`Outbox`](super::Outbox) (in memory, or on disk with
/// [`Outbox::open`](super::Outbox::open)) or any `Service<Message>` of yours: another broker,
/// say.
///
/// ```
/// use std::time::Duration;
/// use seawall::messaging::{InMemory, Message, Notifier, Outbox, Publisher};
/// use seawall::policy::Policy;
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let broker = InMemory::new();
/// let policy = Policy::builder().name("orders.events").timeout(Duration::from_millis(200)).build().unwrap();
/// let outbox = Outbox::new(1_000).unwrap();
/// let mut notifier = Notifier::new(policy.layer(Publisher::new(broker.clone())), outbox.clone());
///
/// broker.set_down(true); // the broker is gone
/// let sent = notifier.ready().await.unwrap().call(Message::new("orders.created", "42")).await.unwrap();
/// assert!(!sent.is_published());
/// assert_eq!(outbox.len(), 1);
///
/// broker.set_down(false); // back: send what was kept
/// let mut publisher = Publisher::new(broker.clone());
/// assert_eq!(outbox.flush(&mut publisher).await.unwrap(), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct Notifier<S: Service<Message>, O> {
    publisher: S,
    outbox: O,
    /// The publisher's error from `poll_ready`, for the next message.
    unready: Option<S::Error>,
    counters: Arc<Counters>,
}

/// What a [`Notifier`] (and its clones) did with the notifications it was
/// given, so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifierFigures {
    /// The broker took them.
    pub published: u64,
    /// The outbox took them.
    pub diverted: u64,
    /// Neither did: handed back to the caller in a [`NotifyError`].
    pub handed_back: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    diverted: AtomicU64,
    handed_back: AtomicU64,
}

impl<S: Service<Message>, O> Notifier<S, O> {
    /// Publishes through `publisher`, diverting to `outbox` when it fails.
    pub fn new(publisher: S, outbox: O) -> Notifier<S, O> {
        Notifier {
            publisher,
            outbox,
            unready: None,
            counters: Arc::default(),
        }
    }

    /// What it and its clones did so far: every notification they
    /// finished is in exactly one of the three counts.
    pub fn figures(&self) -> NotifierFigures {
        let counters = &self.counters;
        NotifierFigures {
            published: counters.published.load(Relaxed),
            diverted: counters.diverted.load(Relaxed),
            handed_back: counters.handed_back.load(Relaxed),
        }
    }
}

impl<S: Service<Message> + Clone, O: Clone> Clone for Notifier<S, O> {
    fn clone(&self) -> Self {
        Notifier {
            publisher: self.publisher.clone(),
            outbox: self.outbox.clone(),
            unready: None,
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<S, O> Service<Message> for Notifier<S, O>
where
    S: Service<Message>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    O: Service<Message, Response = ()> + Clone + Send + 'static,
    O::Future: Send,
    O::Error: Send + 'static,
{
    type Response = Notified<S::Error>;
    type Error = NotifyError<S::Error, O::Error>;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.unready.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A publisher that fails to get ready has not got the message, and
        // there is no message yet to hand back: keep its error, and divert
        // the next message with it as the reason.
        match self.publisher.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                self.unready = Some(error);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, message: Message) -> Self::Future {
        // Stamped here, so that a copy diverted to the outbox keeps its id
        // and deadline.
        let message = message.stamped();
        let publishing = match self.unready.take() {
            Some(error) => Err(error),
            // A fallback's answer would report the message published.
            None => Ok(withhold::call(true, || {
                self.publisher.call(message.clone())
            })),
        };
        let mut outbox = self.outbox.clone();
        let counters = Arc::clone(&self.counters);
        let subject = message.subject.clone();
        // A task of its own, so that a caller who stops waiting does not
        // take the message with it: it is still published or diverted.
        let notifying = tokio::spawn(async move {
            let publish = match publishing {
                Ok(publishing) => match withhold::run(true, publishing).await {
                    Ok(_) => {
                        counters.published.fetch_add(1, Relaxed);
                        return Ok(Notified::Published);
                    }
                    Err(error) => error,
                },
                Err(error) => error,
            };
            match ready_call(&mut outbox, message.clone()).await {
                Ok(()) => {
                    counters.diverted.fetch_add(1, Relaxed);
                    Ok(Notified::Diverted(publish))
                }
                Err(outbox) => {
                    counters.handed_back.fetch_add(1, Relaxed);
                    Err(NotifyError {
                        message,
                        publish,
                        outbox,
                    })
                }
            }
        });
        Box::pin(async move {
            match notifying.await {
                Ok(notified) => notified,
                Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
                // The runtime is shutting down with the message unsent.
                Err(_) => panic!("notification to {subject} cancelled by the runtime's shutdown"),
            }
        })
    }
}

/// Waits for `service` to be ready, then calls it (tower's
/// `ServiceExt::oneshot` on a borrowed service, without tower's `util`
/// feature).
pub(super) async fn ready_call<S: Service<Message>>(
    service: &mut S,
    message: Message,
) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(message).await
}

impl<E: Leaf, O: Leaf> Leaf for NotifyError<E, O> {}
