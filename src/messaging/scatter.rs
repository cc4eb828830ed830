//! Publish/async responses: publish once, gather replies from many.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::replies::Replies;
use super::{BoxFuture, Message, RequestError, Transport};

/// Replies to one scattered request: what arrived, and how many of those
/// expected did not.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gathered {
    /// The replies, in the order they arrived.
    pub replies: Vec<Message>,
    /// How many were expected, if a count was set.
    pub expected: Option<usize>,
}

impl Gathered {
    /// How many expected replies did not arrive in time (`None` with no
    /// expected count).
    pub fn missing(&self) -> Option<usize> {
        self.expected
            .map(|expected| expected.saturating_sub(self.replies.len()))
    }

    /// Whether every expected reply arrived.
    pub fn is_complete(&self) -> bool {
        self.missing() == Some(0)
    }
}

/// A [classifier](crate::classify) for gathers under a breaker or a
/// Policy: a gather with fewer than this many replies is a failure, so that
/// responders that are gone (an empty gather is an answer, not an error)
/// open the breaker. Other outcomes are judged by [`ByKind`](crate::classify::ByKind).
///
/// ```
/// use std::time::Duration;
/// use seawall::circuit_breaker::{CircuitBreaker, State};
/// use seawall::messaging::{AtLeast, Correlator, InMemory, Message};
/// use seawall::policy::Policy;
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let correlator = Correlator::builder(InMemory::new()).build().await?;
/// let policy = Policy::builder()
///     .circuit_breaker(CircuitBreaker::builder().consecutive_failures(3))
///     .classify(AtLeast(1))
///     .build()?;
/// let quotes = policy.layer(correlator.scatter_gather(None, Duration::from_millis(50)));
/// for _ in 0..3 {
///     let _ = quotes.clone().oneshot(Message::new("quote", "SWL")).await; // nobody answers
/// }
/// assert_eq!(policy.breaker().state(), State::Open);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtLeast(pub usize);

impl<E: crate::Leaf> crate::classify::Classify<Gathered, E> for AtLeast {
    fn classify(&self, result: &Result<Gathered, crate::Error<E>>) -> crate::classify::Verdict {
        match result {
            Ok(gathered) if gathered.replies.len() < self.0 => crate::classify::Verdict::Failure,
            other => crate::classify::ByKind.classify(other),
        }
    }
}

/// Replies a gather keeps when it expects no particular count; more are
/// dropped and counted as unmatched.
const UNCOUNTED_REPLIES: usize = 1024;

/// Publish/async responses as a `Service<Message, Response = Gathered>`:
/// each call publishes the message once, to every subscriber of its subject,
/// and gathers replies until the expected count arrived or the time is up.
/// Running out of time is not an error: the caller gets what arrived and
/// sees what is missing. Where the broker tells that nobody subscribes to
/// the subject (NATS's "no responders"; see [`Message::no_responders`]),
/// the gather ends at once with the replies it has (none): an empty
/// gather, which [`AtLeast`] counts as a failure. Made by [`Correlator::scatter_gather`](super::Correlator::scatter_gather).
///
/// ```
/// use std::time::Duration;
/// use seawall::messaging::{Correlator, InMemory, Message};
/// use futures_util::StreamExt;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = InMemory::new();
/// for price in ["101", "99"] {
///     let mut quotes = broker.subscribe_now("quote");
///     let broker = broker.clone();
///     tokio::spawn(async move {
///         while let Some(request) = quotes.next().await {
///             broker.send(request.message().reply(price).unwrap());
///         }
///     });
/// }
///
/// let correlator = Correlator::builder(broker).build().await?;
/// let mut quotes = correlator.scatter_gather(Some(3), Duration::from_millis(200));
/// let gathered = quotes.ready().await?.call(Message::new("quote", "SWL")).await?;
/// assert_eq!(gathered.replies.len(), 2);
/// assert_eq!(gathered.missing(), Some(1)); // the third quoter never answered
/// # Ok(())
/// # }
/// ```
pub struct ScatterGather<T> {
    replies: Arc<Replies<T>>,
    expected: Option<usize>,
    within: Duration,
}

impl<T> ScatterGather<T> {
    pub(crate) fn new(
        replies: Arc<Replies<T>>,
        expected: Option<usize>,
        within: Duration,
    ) -> ScatterGather<T> {
        ScatterGather {
            replies,
            expected,
            within,
        }
    }
}

impl<T> Clone for ScatterGather<T> {
    fn clone(&self) -> Self {
        ScatterGather::new(Arc::clone(&self.replies), self.expected, self.within)
    }
}

impl<T> fmt::Debug for ScatterGather<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScatterGather")
            .field("expected", &self.expected)
            .field("within", &self.within)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Service<Message> for ScatterGather<T> {
    type Response = Gathered;
    type Error = RequestError<T::Error>;
    type Future = BoxFuture<Result<Gathered, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Message) -> Self::Future {
        let mut request = request.stamped();
        let expected = self.expected;
        let mut waiting = match self
            .replies
            .ask(&mut request, expected.unwrap_or(UNCOUNTED_REPLIES))
        {
            Ok(waiting) => waiting,
            Err(refused) => return Box::pin(std::future::ready(Err(refused))),
        };
        let publishing = self.replies.transport.publish(request);
        let within = self.within;
        Box::pin(async move {
            // The time counts from the call, publishing included.
            let deadline = tokio::time::Instant::now() + within;
            publishing.await.map_err(RequestError::Publish)?;
            let mut replies = Vec::new();
            while expected.is_none_or(|expected| replies.len() < expected) {
                match tokio::time::timeout_at(deadline, waiting.replies.recv()).await {
                    // Nobody subscribes: no reply will come.
                    Ok(Some(reply)) if reply.no_responders => break,
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) | Err(_) => break,
                }
            }
            Ok(Gathered { replies, expected })
        })
    }
}
