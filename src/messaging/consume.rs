//! Publish/subscribe, consumer side: a subscriber's handler as a `Service`,
//! and what becomes of each message it handles.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tower_service::Service;

use super::{BoxFuture, Decision, Delivery, Message, Settle};
use crate::fallback::withhold;
use crate::retry::{Backoff, Jitter};
use crate::{BoxError, Error, Leaf, Refusal};

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

    /// Whether the handling failed, so that a requeue waits out the
    /// consumer's [redelivery backoff](Consumer::redelivery_backoff) and
    /// counts towards its [`max_deliveries`](Consumer::max_deliveries).
    /// Every error by default.
    fn failed(&self, result: &Result<R, E>) -> bool {
        result.is_err()
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

impl<R, E: Leaf, F> Decide<R, Error<E>> for ByFailure<F>
where
    F: Fn(&E) -> Decision,
{
    fn decide(&self, result: &Result<R, Error<E>>) -> Decision {
        match result {
            Err(Error::Inner(error)) if error.refusal() != Some(Refusal::Invalid) => {
                (self.failure)(error)
            }
            other => self.outcome.decide(other),
        }
    }

    fn pause(&self, result: &Result<R, Error<E>>) -> Option<Duration> {
        self.outcome.pause(result)
    }

    fn failed(&self, result: &Result<R, Error<E>>) -> bool {
        self.outcome.failed(result)
    }
}

/// The decisions for a handler under seawall's layers, by outcome:
///
/// | outcome | decision | pulling |
/// |---|---|---|
/// | handled | ack | goes on |
/// | the handler failed | requeue, after the [redelivery backoff](Consumer::redelivery_backoff); reject (dead-letter) once it failed [`max_deliveries`](Consumer::max_deliveries) times | goes on |
/// | the handler said the message is [`Invalid`](crate::Invalid) (poison) | reject (dead-letter) at once | goes on |
/// | timed out | requeue, as a failure | goes on |
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
            failure: Decision::Requeue,
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

    /// The decision when the handler itself failed (not on an
    /// [`Invalid`](crate::Invalid) message, which is rejected). Default:
    /// requeue, within the consumer's
    /// [`max_deliveries`](Consumer::max_deliveries).
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

impl<R, E: Leaf> Decide<R, Error<E>> for ByOutcome {
    fn decide(&self, result: &Result<R, Error<E>>) -> Decision {
        match result {
            Ok(_) => Decision::Ack,
            Err(Error::Inner(error)) if error.refusal() == Some(Refusal::Invalid) => {
                Decision::Reject
            }
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

    /// The handler's own errors and timeouts; not a refusal by this
    /// process's bulkhead or breaker, which says nothing of the message.
    fn failed(&self, result: &Result<R, Error<E>>) -> bool {
        matches!(result, Err(Error::Inner(_) | Error::Timeout(_)))
    }
}

/// What a consumer did: read live with [`Consumer::figures`], and returned
/// when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerFigures {
    /// Messages handed to the handler.
    pub handled: u64,
    /// Of those, messages the broker had delivered before
    /// ([`Message::redelivered`]).
    pub redelivered: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Requeued.
    pub requeued: u64,
    /// Rejected (dead-lettered, where the broker has a dead-letter
    /// exchange or stream).
    pub rejected: u64,
    /// Of those, messages rejected because they failed on their last
    /// allowed delivery ([`Consumer::max_deliveries`]).
    pub exhausted: u64,
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

/// The live counts behind [`ConsumerFigures`], shared by a consumer's
/// clones.
#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    requeued: AtomicU64,
    rejected: AtomicU64,
    exhausted: AtomicU64,
    unsettled: AtomicU64,
    pauses: AtomicU64,
    expired: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    fn figures(&self) -> ConsumerFigures {
        ConsumerFigures {
            handled: self.handled.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
            acked: self.acked.load(Relaxed),
            requeued: self.requeued.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            exhausted: self.exhausted.load(Relaxed),
            unsettled: self.unsettled.load(Relaxed),
            pauses: self.pauses.load(Relaxed),
            expired: self.expired.load(Relaxed),
        }
    }
}

/// Runs a subscription's messages through a handler service, tells the
/// broker what became of each, and stops pulling while the handler's
/// dependency is down.
///
/// The handler is any `Service<Message>`, typically the user's function
/// under a [`Policy`](crate::policy::Policy). Before each pull the consumer
/// waits for the handler to be ready (so a bulkhead in backpressure mode
/// holds messages on the broker), for a free slot (at most
/// [`concurrency`](Consumer::concurrency) messages in hand, until the broker
/// has heard what became of them), and for any pause to end.
///
/// # Redelivery
///
/// A message requeued because its handling failed comes back after a
/// [backoff](Consumer::redelivery_backoff) that grows with its
/// [deliveries](Message::deliveries), and a message that failed on its
/// [last allowed delivery](Consumer::max_deliveries) is rejected: the broker
/// dead-letters it where a dead-letter exchange or stream is set, and a
/// poison message cannot loop for ever. An [`Invalid`](crate::Invalid)
/// error is rejected at once. Where the broker delays redeliveries itself
/// (JetStream) it is asked to; elsewhere the consumer holds the message for
/// the delay, its place in the prefetch taken. Where the broker does not
/// count deliveries (AMQP classic queues: use a quorum queue), the backoff
/// holds but the maximum cannot.
///
/// Clones share their [figures](Consumer::figures).
///
/// ```
/// use std::time::Duration;
/// use seawall::messaging::{Consumer, InMemory, Message};
/// use seawall::policy::Policy;
/// use seawall::Invalid;
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
///     // Malformed: no delivery will ever handle it.
///     let text = std::str::from_utf8(&order.payload).map_err(Invalid::new)?;
///     text.parse::<u64>().map_err(Invalid::new)?;
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
    max_deliveries: u32,
    backoff: Backoff,
    accept_fallbacks: bool,
    counters: Arc<Counters>,
}

impl<S> Consumer<S> {
    /// Runs messages through `handler`, one at a time, deciding
    /// [`ByOutcome`]; a failed message comes back after 1 s, 2 s, 4 s and
    /// 8 s, and is rejected when its fifth delivery fails.
    pub fn new(handler: S) -> Consumer<S> {
        Consumer {
            handler,
            decide: ByOutcome::default(),
            concurrency: 1,
            expired: Decision::Ack,
            max_deliveries: 5,
            backoff: Backoff::exponential(Duration::from_secs(1))
                .max_delay(Duration::from_secs(60))
                .jitter(Jitter::None),
            accept_fallbacks: false,
            counters: Arc::default(),
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
            max_deliveries: self.max_deliveries,
            backoff: self.backoff,
            accept_fallbacks: self.accept_fallbacks,
            counters: self.counters,
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

    /// Rejects, instead of requeueing, a message whose handling failed on
    /// its `max_deliveries`th delivery (at least 1; 1 never requeues a
    /// failure). Default 5. Counted from the broker's
    /// [`deliveries`](Message::deliveries), so it holds across consumers and
    /// restarts; where the broker does not count, it cannot apply.
    pub fn max_deliveries(mut self, max_deliveries: u32) -> Self {
        self.max_deliveries = max_deliveries.max(1);
        self
    }

    /// How long a failed message waits before it is delivered again: the
    /// backoff's delay for retry number `deliveries` (its base for a
    /// message the broker does not count). Default: 1 s, doubling, at most
    /// 60 s, no jitter. Requeues while the circuit is open do not wait: the
    /// consumer stops pulling instead.
    pub fn redelivery_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Lets fallbacks answer for the handler, and acknowledges a message
    /// they answered for as handled. By default they are withheld (see
    /// [`fallback`](crate::fallback#where-fallbacks-do-not-answer)): a
    /// fallback's answer is not the message handled, and acknowledging it
    /// would make the broker forget a message nobody handled. Accept them
    /// where the fallback does the work another way (a secondary store,
    /// say).
    pub fn accept_fallbacks(mut self) -> Self {
        self.accept_fallbacks = true;
        self
    }

    /// What the consumer (and its clones) did so far, while it runs.
    pub fn figures(&self) -> ConsumerFigures {
        self.counters.figures()
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
    /// then stops pulling, finishes the messages in hand (requeueing at
    /// once those held for a redelivery backoff) and returns.
    pub async fn run_until<St, F>(mut self, mut deliveries: St, stop: F) -> ConsumerFigures
    where
        S: Service<Message>,
        D: Decide<S::Response, S::Error>,
        St: Stream<Item = Delivery> + Unpin,
        F: Future,
    {
        let mut in_hand = FuturesUnordered::new();
        let mut settling = FuturesUnordered::new();
        let (stopping, stopped) = watch::channel(false);
        let mut paused_until: Option<tokio::time::Instant> = None;
        let mut pulling = true;
        // Polled only while `pulling`, so never again once it resolved.
        let mut stop = std::pin::pin!(stop);
        loop {
            if !pulling {
                stopping.send_replace(true);
            }
            let may_pull = pulling
                && paused_until.is_none()
                && in_hand.len() + settling.len() < self.concurrency;
            tokio::select! {
                biased;
                _ = &mut stop, if pulling => pulling = false,
                Some(settled) = settling.next(), if !settling.is_empty() => {
                    if let Err(error) = settled {
                        Counters::add(&self.counters.unsettled);
                        tracing::debug!(target: "seawall::messaging", %error, "could not settle a message");
                    }
                }
                Some((result, settle, delivered)) = in_hand.next(), if !in_hand.is_empty() => {
                    let Some(result) = result else {
                        Counters::add(&self.counters.expired);
                        settling.push(self.settle(settle, self.expired, None, &stopped));
                        continue;
                    };
                    let mut decision = self.decide.decide(&result);
                    if let Some(pause) = self.decide.pause(&result) {
                        Counters::add(&self.counters.pauses);
                        let until = tokio::time::Instant::now() + pause;
                        paused_until = Some(paused_until.map_or(until, |paused| paused.max(until)));
                        tracing::debug!(target: "seawall::messaging", ?pause, "circuit open: not pulling");
                    }
                    let redelivery: Option<Delivered> = self.decide.failed(&result).then_some(delivered);
                    if decision == Decision::Requeue
                        && redelivery.is_some_and(|delivered| {
                            delivered.deliveries.is_some_and(|n| n >= self.max_deliveries)
                        })
                    {
                        Counters::add(&self.counters.exhausted);
                        decision = Decision::Reject;
                    }
                    settling.push(self.settle(settle, decision, redelivery, &stopped));
                }
                _ = sleep_until(paused_until), if paused_until.is_some() => paused_until = None,
                next = next_delivery(&mut self.handler, &mut deliveries), if may_pull => match next {
                    Ok(Some(delivery)) => {
                        let (message, settle) = delivery.into_parts();
                        let delivered = Delivered { deliveries: message.deliveries };
                        let budget = message.deadline;
                        let handling = if budget.is_some_and(|budget| budget.is_spent()) {
                            None
                        } else {
                            Counters::add(&self.counters.handled);
                            if message.redelivered {
                                Counters::add(&self.counters.redelivered);
                            }
                            let handler = &mut self.handler;
                            let withheld = !self.accept_fallbacks;
                            let call = || withhold::call(withheld, || handler.call(message));
                            let handling = match budget {
                                Some(budget) => budget.enter(call),
                                None => call(),
                            };
                            let handling = withhold::run(!self.accept_fallbacks, handling);
                            Some(crate::budget::scoped(budget, handling))
                        };
                        in_hand.push(async move {
                            let result = match handling {
                                Some(handling) => Some(handling.await),
                                None => None,
                            };
                            (result, settle, delivered)
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
                else => return self.counters.figures(),
            }
        }
    }

    /// Counts `decision` and tells the broker; a requeue after a failure
    /// (`redelivery` is `Some`) waits out the backoff first, held here
    /// unless the broker waits by itself, and cut short by `stopped`.
    fn settle(
        &self,
        settle: Settle,
        decision: Decision,
        redelivery: Option<Delivered>,
        stopped: &watch::Receiver<bool>,
    ) -> BoxFuture<Result<(), BoxError>> {
        Counters::add(match decision {
            Decision::Ack => &self.counters.acked,
            Decision::Requeue => &self.counters.requeued,
            Decision::Reject => &self.counters.rejected,
        });
        let delay = match (decision, redelivery) {
            (Decision::Requeue, Some(delivered)) => {
                let retry = delivered.deliveries.unwrap_or(1);
                let draw = crate::draw::mix(self.counters.requeued.load(Relaxed));
                self.backoff.delay(retry, Duration::ZERO, draw)
            }
            _ => Duration::ZERO,
        };
        if delay.is_zero() {
            return Box::pin(settle.send(decision));
        }
        if settle.delays_redelivery() {
            return Box::pin(settle.requeue_after(delay));
        }
        let mut stopped = stopped.clone();
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped.wait_for(|stopped| *stopped) => {}
            }
            settle.send(Decision::Requeue).await
        })
    }
}

/// What a consumer keeps of a message it handed to its handler.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    deliveries: Option<u32>,
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
