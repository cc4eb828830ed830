//! Publish/subscribe, consumer side: a subscriber's handler as a `Service`,
//! and what becomes of each message it handles.

use std::future::Future;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tower_service::Service;

use super::{Decision, Delivery, Message, Settle};
use crate::Error;

/// How a handler's result becomes a [`Decision`], and whether to stop
/// pulling messages for a while.
pub trait Decide<R, E> {
    /// What to tell the broker about the message.
    fn decide(&self, result: &Result<R, E>) -> Decision;

    /// How long to stop pulling messages after this result, if at all.
    fn pause(&self, result: &Result<R, E>) -> Option<Duration> {
        let _ = result;
        None
    }
}

/// A function of the result decides, and never pauses: for handlers whose
/// errors say themselves whether a message is poison or its failure
/// passing.
impl<R, E, F> Decide<R, E> for F
where
    F: Fn(&Result<R, E>) -> Decision,
{
    fn decide(&self, result: &Result<R, E>) -> Decision {
        self(result)
    }
}

/// Decides [`ByOutcome`] for everything but the handler's own failures,
/// which `failure` decides: a poison message rejected, a passing failure
/// requeued. Made by [`ByOutcome::on_failure_with`].
#[derive(Clone, Copy, Debug)]
pub struct ByFailure<F> {
    outcome: ByOutcome,
    failure: F,
}

impl<R, E, F> Decide<R, Error<E>> for ByFailure<F>
where
    F: Fn(&E) -> Decision,
{
    fn decide(&self, result: &Result<R, Error<E>>) -> Decision {
        match result {
            Err(Error::Inner(error)) => (self.failure)(error),
            other => self.outcome.decide(other),
        }
    }

    fn pause(&self, result: &Result<R, Error<E>>) -> Option<Duration> {
        self.outcome.pause(result)
    }
}

/// The decisions for a handler under seawall's layers, by outcome:
///
/// | outcome | decision | pulling |
/// |---|---|---|
/// | handled | ack | goes on |
/// | the handler failed | reject (dead-letter: the message is poison) | goes on |
/// | timed out | requeue | goes on |
/// | timed out on its caller's deadline (the message's [deadline](Message::deadline), or another the caller set) | ack: nobody waits for it | goes on |
/// | bulkhead full | requeue | goes on |
/// | circuit open | requeue | stops until the breaker may let a probe through |
///
/// The last row is the point: while the dependency is down, the consumer
/// leaves messages on the broker instead of pulling them only to burn them
/// into a dead-letter queue. Each row can be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByOutcome {
    failure: Decision,
    timeout: Decision,
    rejected: Decision,
    open_pause: Duration,
}

impl Default for ByOutcome {
    fn default() -> Self {
        ByOutcome {
            failure: Decision::Reject,
            timeout: Decision::Requeue,
            rejected: Decision::Requeue,
            open_pause: Duration::from_secs(1),
        }
    }
}

impl ByOutcome {
    /// The defaults of the table above.
    pub fn new() -> ByOutcome {
        ByOutcome::default()
    }

    /// The decision when the handler itself failed. Default: reject.
    pub fn on_failure(mut self, decision: Decision) -> Self {
        self.failure = decision;
        self
    }

    /// Decides on the handler's own failures with `failure`, which sees the
    /// error: reject what will never succeed, requeue what may.
    pub fn on_failure_with<F>(self, failure: F) -> ByFailure<F> {
        ByFailure {
            outcome: self,
            failure,
        }
    }

    /// The decision when the handler timed out. Default: requeue.
    pub fn on_timeout(mut self, decision: Decision) -> Self {
        self.timeout = decision;
        self
    }

    /// The decision when a full bulkhead refused the message. Default:
    /// requeue.
    pub fn on_bulkhead_full(mut self, decision: Decision) -> Self {
        self.rejected = decision;
        self
    }

    /// How long to stop pulling when the circuit is open and says nothing
    /// of when it may close (forced open, or half-open with its probes out).
    /// Default 1 s.
    pub fn open_pause(mut self, pause: Duration) -> Self {
        self.open_pause = pause;
        self
    }
}

impl<R, E> Decide<R, Error<E>> for ByOutcome {
    fn decide(&self, result: &Result<R, Error<E>>) -> Decision {
        match result {
            Ok(_) => Decision::Ack,
            Err(Error::Inner(_)) => self.failure,
            Err(Error::Timeout(elapsed)) if elapsed.is_callers_deadline() => Decision::Ack,
            Err(Error::Timeout(_)) => self.timeout,
            Err(Error::BulkheadFull(_)) => self.rejected,
            Err(Error::CircuitOpen(_)) => Decision::Requeue,
        }
    }

    fn pause(&self, result: &Result<R, Error<E>>) -> Option<Duration> {
        match result {
            Err(Error::CircuitOpen(open)) => Some(open.retry_after().unwrap_or(self.open_pause)),
            _ => None,
        }
    }
}

/// What a consumer did, when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerFigures {
    /// Messages handed to the handler.
    pub handled: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Requeued.
    pub requeued: u64,
    /// Rejected.
    pub rejected: u64,
    /// Decisions the broker could not be told (the connection was lost: it
    /// will deliver those messages again).
    pub unsettled: u64,
    /// Times it stopped pulling because the circuit was open.
    pub pauses: u64,
    /// Messages not handed to the handler because their
    /// [deadline](Message::deadline) had passed while they were queued:
    /// work nobody waits for any more. Acked (or rejected, with
    /// [`dead_letter_expired`](Consumer::dead_letter_expired)), and counted
    /// there too.
    pub expired: u64,
}

/// Runs a subscription's messages through a handler service, tells the
/// broker what became of each, and stops pulling while the handler's
/// dependency is down.
///
/// The handler is any `Service<Message>`, typically the user's function
/// under a [`Policy`](crate::policy::Policy). Before each pull the consumer
/// waits for the handler to be ready (so a bulkhead in backpressure mode
/// holds messages on the broker), for a free slot (at most
/// [`concurrency`](Consumer::concurrency) messages in hand), and for any
/// pause to end.
///
/// ```
/// use std::time::Duration;
/// use seawall::circuit_breaker::CircuitBreaker;
/// use seawall::messaging::{Consumer, InMemory, Message, Transport};
/// use seawall::policy::Policy;
/// use tower::{service_fn, Layer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let broker = InMemory::new();
/// let orders = broker.subscribe_now("orders");
/// broker.send(Message::new("orders", "42"));
/// broker.send(Message::new("orders", "not a number"));
///
/// let policy = Policy::builder().name("orders").timeout(Duration::from_secs(1)).build().unwrap();
/// let handler = policy.layer(service_fn(|order: Message| async move {
///     std::str::from_utf8(&order.payload)?.parse::<u64>()?;
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// }));
/// let consumer = Consumer::new(handler);
/// let figures = consumer.run_until(orders, tokio::time::sleep(Duration::from_secs(1))).await;
/// assert_eq!((figures.acked, figures.rejected), (1, 1));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Consumer<S, D = ByOutcome> {
    handler: S,
    decide: D,
    concurrency: usize,
    expired: Decision,
}

impl<S> Consumer<S> {
    /// Runs messages through `handler`, one at a time, deciding
    /// [`ByOutcome`].
    pub fn new(handler: S) -> Consumer<S> {
        Consumer {
            handler,
            decide: ByOutcome::default(),
            concurrency: 1,
            expired: Decision::Ack,
        }
    }
}

impl<S, D> Consumer<S, D> {
    /// Decides with `decide` instead.
    pub fn decide<D2>(self, decide: D2) -> Consumer<S, D2> {
        Consumer {
            handler: self.handler,
            decide,
            concurrency: self.concurrency,
            expired: self.expired,
        }
    }

    /// Rejects a message whose deadline passed before it was handled (the
    /// broker dead-letters it, where a dead-letter exchange is set), to
    /// keep a record of it. By default it is acked: dropped, since nobody
    /// waits for its answer. (Requeueing it is not offered: its deadline
    /// stays passed, and it would come straight back for ever.)
    pub fn dead_letter_expired(mut self) -> Self {
        self.expired = Decision::Reject;
        self
    }

    /// Handles up to this many messages at once (at least one). Default 1.
    /// Match it to the broker's prefetch, so every message pulled is being
    /// handled rather than waiting in this process.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Handles messages until the subscription ends.
    pub async fn run<St>(self, deliveries: St) -> ConsumerFigures
    where
        S: Service<Message>,
        D: Decide<S::Response, S::Error>,
        St: Stream<Item = Delivery> + Unpin,
    {
        self.run_until(deliveries, std::future::pending::<()>())
            .await
    }

    /// Handles messages until the subscription ends or `stop` resolves;
    /// then stops pulling, finishes the messages in hand and returns.
    pub async fn run_until<St, F>(mut self, mut deliveries: St, stop: F) -> ConsumerFigures
    where
        S: Service<Message>,
        D: Decide<S::Response, S::Error>,
        St: Stream<Item = Delivery> + Unpin,
        F: Future,
    {
        let mut figures = ConsumerFigures::default();
        let mut in_hand = FuturesUnordered::new();
        let mut paused_until: Option<tokio::time::Instant> = None;
        let mut pulling = true;
        // Polled only while `pulling`, so never again once it resolved.
        let mut stop = std::pin::pin!(stop);
        loop {
            let may_pull = pulling && paused_until.is_none() && in_hand.len() < self.concurrency;
            tokio::select! {
                biased;
                _ = &mut stop, if pulling => pulling = false,
                Some((result, settle)) = in_hand.next(), if !in_hand.is_empty() => {
                    let Some(result) = result else {
                        figures.expired += 1;
                        settle_and_count(&mut figures, settle, self.expired).await;
                        continue;
                    };
                    let decision = self.decide.decide(&result);
                    if let Some(pause) = self.decide.pause(&result) {
                        figures.pauses += 1;
                        let until = tokio::time::Instant::now() + pause;
                        paused_until = Some(paused_until.map_or(until, |paused| paused.max(until)));
                        tracing::debug!(target: "seawall::messaging", ?pause, "circuit open: not pulling");
                    }
                    settle_and_count(&mut figures, settle, decision).await;
                }
                _ = sleep_until(paused_until), if paused_until.is_some() => paused_until = None,
                next = next_delivery(&mut self.handler, &mut deliveries), if may_pull => match next {
                    Ok(Some(delivery)) => {
                        let (message, settle) = delivery.into_parts();
                        let budget = message.deadline;
                        let handling = if budget.is_some_and(|budget| budget.is_spent()) {
                            None
                        } else {
                            figures.handled += 1;
                            let call = || self.handler.call(message);
                            let handling = match budget {
                                Some(budget) => budget.enter(call),
                                None => call(),
                            };
                            Some(crate::budget::scoped(budget, handling))
                        };
                        in_hand.push(async move {
                            let result = match handling {
                                Some(handling) => Some(handling.await),
                                None => None,
                            };
                            (result, settle)
                        });
                    }
                    Ok(None) => pulling = false,
                    Err(_) => {
                        // A service that failed to get ready is done
                        // (tower's contract): leave the messages on the broker.
                        tracing::warn!(target: "seawall::messaging", "the handler failed; not pulling any more");
                        pulling = false;
                    }
                },
                else => return figures,
            }
        }
    }
}

async fn settle_and_count(figures: &mut ConsumerFigures, settle: Settle, decision: Decision) {
    match decision {
        Decision::Ack => figures.acked += 1,
        Decision::Requeue => figures.requeued += 1,
        Decision::Reject => figures.rejected += 1,
    }
    if let Err(error) = settle.send(decision).await {
        figures.unsettled += 1;
        tracing::debug!(target: "seawall::messaging", %error, "could not settle a message");
    }
}

/// Waits for the handler to be ready, then for a message: a message is
/// pulled only when it can be handled at once.
async fn next_delivery<S, St>(
    handler: &mut S,
    deliveries: &mut St,
) -> Result<Option<Delivery>, S::Error>
where
    S: Service<Message>,
    St: Stream<Item = Delivery> + Unpin,
{
    std::future::poll_fn(|cx| handler.poll_ready(cx)).await?;
    Ok(deliveries.next().await)
}

async fn sleep_until(until: Option<tokio::time::Instant>) {
    if let Some(until) = until {
        tokio::time::sleep_until(until).await;
    }
}
