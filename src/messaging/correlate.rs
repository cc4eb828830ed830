//! Request/async response: a request published with a reply address and a
//! correlation id, its reply matched back to the caller.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::replies::{Replies, ReplyFigures};
use super::{BoxFuture, Message, ScatterGather, Transport};
use crate::error::{Leaf, Refusal};
use crate::ConfigError;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError<E> {
    /// The request could not be published.
    #[error("publishing the request failed: {0}")]
    Publish(#[source] E),
    /// As many requests as allowed wait for replies already; this one was
    /// not sent.
    #[error("{limit} requests wait for replies already")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// No reply came within the correlator's own time limit.
    #[error("no reply within {after:?}")]
    NoReply {
        /// The limit.
        after: Duration,
    },
    /// The broker said at once that nobody subscribes to the request's
    /// subject (NATS's "no responders"), so no reply will come: the
    /// dependency is absent, which counts against it as a missing reply
    /// does, without waiting for the time limit.
    #[error("nobody subscribes to {subject}")]
    NoResponders {
        /// The request's subject.
        subject: String,
    },
}

impl<E: Leaf + std::error::Error + 'static> Leaf for RequestError<E> {
    fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Publish(error) => Some(error),
            _ => None,
        }
    }

    fn refusal(&self) -> Option<Refusal> {
        match self {
            RequestError::Publish(error) => error.refusal(),
            RequestError::TooManyPending { .. } => Some(Refusal::Overloaded),
            RequestError::NoReply { .. } => Some(Refusal::Timeout),
            // The dependency's failure, as a missing reply is.
            RequestError::NoResponders { .. } => None,
        }
    }
}

/// Why a correlator or scatter-gather could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError<E> {
    /// A setting was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Subscribing to the reply subject failed.
    #[error("subscribing to the reply subject failed: {0}")]
    Subscribe(#[source] E),
}

/// Request/async response as a `Service<Message, Response = Message>`.
///
/// Each call publishes the request with the correlator's reply subject and
/// a fresh correlation id, and resolves with the reply carrying that id. One
/// subscription to the reply subject serves every call, and is made again
/// if the transport loses it.
///
/// * Waiting requests are bounded ([`max_pending`](CorrelatorBuilder::max_pending)):
///   past the bound a call fails at once with
///   [`RequestError::TooManyPending`], so a dead responder cannot grow
///   memory.
/// * Each waits at most its time limit; a [`Policy`](crate::policy::Policy)
///   or [`TimeoutLayer`](crate::timeout::TimeoutLayer) above it usually
///   sets a shorter one. Either way, a request that stops waiting leaves the
///   table at once.
/// * Replies nobody waits for (late, unknown, duplicates) are dropped and
///   counted in [`ReplyFigures::unmatched`].
/// * Where the broker tells that nobody subscribes to the request's subject
///   (NATS's "no responders"; see [`Message::no_responders`]), the call
///   fails at once with [`RequestError::NoResponders`] rather than waiting
///   out its time limit; a breaker counts it as a failure.
///
/// ```
/// use std::time::Duration;
/// use seawall::messaging::{Correlator, InMemory, Message, Publisher};
/// use futures_util::StreamExt;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = InMemory::new();
///
/// // A responder: doubles the number it is sent.
/// let mut requests = broker.subscribe_now("double");
/// let responder = broker.clone();
/// tokio::spawn(async move {
///     while let Some(delivery) = requests.next().await {
///         let n: u64 = std::str::from_utf8(&delivery.message().payload).unwrap().parse().unwrap();
///         responder.send(delivery.message().reply((2 * n).to_string()).unwrap());
///     }
/// });
///
/// let mut correlator = Correlator::builder(broker).timeout(Duration::from_secs(1)).build().await?;
/// let reply = correlator.ready().await?.call(Message::new("double", "21")).await?;
/// assert_eq!(reply.payload, "42");
/// # Ok(())
/// # }
/// ```
pub struct Correlator<T> {
    replies: Arc<Replies<T>>,
    timeout: Duration,
}

impl<T> Clone for Correlator<T> {
    fn clone(&self) -> Self {
        Correlator {
            replies: Arc::clone(&self.replies),
            timeout: self.timeout,
        }
    }
}

impl<T> fmt::Debug for Correlator<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Correlator")
            .field("reply_subject", &self.replies.subject)
            .field("timeout", &self.timeout)
            .field("figures", &self.replies.router.figures())
            .finish()
    }
}

impl<T: Transport> Correlator<T> {
    /// A builder: replies on `transport`'s fresh reply subject, at most
    /// 1,024 waiting requests, 30 s at most per request.
    pub fn builder(transport: T) -> CorrelatorBuilder<T> {
        CorrelatorBuilder {
            transport,
            reply_subject: None,
            max_pending: 1024,
            timeout: Duration::from_secs(30),
        }
    }

    /// Where replies are sent.
    pub fn reply_subject(&self) -> &str {
        &self.replies.subject
    }

    /// What came back so far.
    pub fn figures(&self) -> ReplyFigures {
        self.replies.router.figures()
    }

    /// A scatter-gather sharing this correlator's reply subscription and
    /// table of waiting requests: it publishes once and gathers every
    /// reply until `expected` came back (`None`: no count) or `within` has
    /// passed, whichever is first.
    pub fn scatter_gather(&self, expected: Option<usize>, within: Duration) -> ScatterGather<T> {
        ScatterGather::new(Arc::clone(&self.replies), expected, within)
    }
}

impl<T: Transport> Service<Message> for Correlator<T> {
    type Response = Message;
    type Error = RequestError<T::Error>;
    type Future = BoxFuture<Result<Message, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Message) -> Self::Future {
        let mut request = request.stamped();
        let mut waiting = match self.replies.ask(&mut request, 1) {
            Ok(waiting) => waiting,
            Err(refused) => return Box::pin(std::future::ready(Err(refused))),
        };
        let subject = request.subject.clone();
        let publishing = self.replies.transport.publish(request);
        let timeout = self.timeout;
        Box::pin(async move {
            publishing.await.map_err(RequestError::Publish)?;
            match tokio::time::timeout(timeout, waiting.replies.recv()).await {
                Ok(Some(reply)) if reply.no_responders => {
                    Err(RequestError::NoResponders { subject })
                }
                Ok(Some(reply)) => Ok(reply),
                // The sender lives in the table until `waiting` is dropped,
                // so the channel cannot close under us; a closed channel
                // would be a reply that never comes, which is what this is.
                Ok(None) | Err(_) => Err(RequestError::NoReply { after: timeout }),
            }
        })
    }
}

/// Settings of a [`Correlator`].
#[derive(Debug)]
pub struct CorrelatorBuilder<T> {
    transport: T,
    reply_subject: Option<String>,
    max_pending: usize,
    timeout: Duration,
}

impl<T: Transport> CorrelatorBuilder<T> {
    /// Receives replies on this subject rather than a fresh one (a queue
    /// your broker's permissions allow, say). No one else may use it.
    pub fn reply_subject(mut self, subject: impl Into<String>) -> Self {
        self.reply_subject = Some(subject.into());
        self
    }

    /// At most this many requests wait for replies; more fail at once.
    /// Default 1,024.
    pub fn max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// The longest a request waits for its reply. Default 30 s: a safety
    /// net; set the timeout you mean on a Policy above.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings, subscribes to the reply subject, and starts
    /// routing replies (on a task of the current tokio runtime).
    pub async fn build(self) -> Result<Correlator<T>, StartError<T::Error>> {
        if self.max_pending == 0 {
            return Err(ConfigError::new(
                "max_pending",
                self.max_pending,
                "must let at least one request wait",
            )
            .into());
        }
        if self.timeout.is_zero() {
            return Err(
                ConfigError::new("timeout", self.timeout, "must be longer than zero").into(),
            );
        }
        let subject = self
            .reply_subject
            .unwrap_or_else(|| self.transport.reply_subject());
        let replies = Replies::start(self.transport, subject, self.max_pending)
            .await
            .map_err(StartError::Subscribe)?;
        Ok(Correlator {
            replies: Arc::new(replies),
            timeout: self.timeout,
        })
    }
}
