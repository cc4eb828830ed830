//! NATS, through [`async_nats`]: publish, subscribe, queue groups, and
//! JetStream receipts.
//!
//! # What "published" means
//!
//! By default [`Transport::publish`] resolves once the client has written
//! the message to the server's socket (a flush). That catches a server that
//! is gone for a while (the client buffers, the flush waits, a timeout and
//! then the breaker see it), but core NATS gives no receipt: a message
//! written just before the server dies is lost. For notifications that must
//! not be, use [`NatsTransport::jetstream`]: each publish then waits for the
//! server's acknowledgement that a stream stored it, so a message is
//! published, or its publish fails (and a [`Notifier`](super::Notifier)
//! keeps it). A stream must capture the subjects.
//!
//! # Consuming
//!
//! Core NATS delivers at most once: its deliveries are
//! [unacknowledged](super::Delivery::unacknowledged), so a
//! [`Consumer`](super::Consumer)'s decisions change nothing on the broker,
//! and while it stops pulling the client buffers what arrives, up to its
//! subscription capacity, then drops the rest as a slow consumer. With
//! [`NatsTransport::jetstream`], subscribing to a subject a stream captures
//! makes a JetStream pull consumer instead, set up by
//! [`ConsumerSettings`]: deliveries are acknowledged (`+ACK`), requeued
//! (`-NAK`, with a delay for a redelivery backoff) or rejected (`+TERM`) as
//! the consumer decides, and messages wait in the stream while it does not
//! pull. Subjects no stream captures (reply inboxes) stay core
//! subscriptions.
//!
//! JetStream delivers at least once. Each delivery carries the server's
//! count of its [deliveries](super::Message::deliveries) (and so
//! [`redelivered`](super::Message::redelivered)), which a
//! [`Consumer`](super::Consumer) caps with its
//! [`max_deliveries`](super::Consumer::max_deliveries).
//!
//! ## What "acked" means
//!
//! Settling a JetStream delivery (ack, requeue or reject) waits for the
//! server's confirmation (a double ack): a settle that succeeds means the
//! server has the decision. A settle that fails (the server did not
//! confirm within [`ConsumerSettings::ack_timeout`], or the connection is
//! gone), which a [`Consumer`](super::Consumer) counts in
//! [`ConsumerFigures::unsettled`](super::ConsumerFigures::unsettled), means
//! it may not: the message is delivered again after `ack_wait`, unless the
//! client still gets the buffered decision through after a reconnect.
//! Either way nothing is lost; a failed ack can mean a duplicate, never a
//! loss.
//!
//! ## Redeliveries without faults
//!
//! The server redelivers a message that is not settled within
//! [`ack_wait`](ConsumerSettings::ack_wait), whether its handler is slow or
//! it waits in this process's buffer. The pull batch and, by default, the
//! consumer's `max_ack_pending` are the
//! [`prefetch`](ConsumerSettings::prefetch) (10 by default): set it to the
//! [`Consumer`](super::Consumer)'s
//! [`concurrency`](super::Consumer::concurrency), so no message waits in
//! the buffer behind a slow handler until the server sends it again. A
//! message requeued with a delay waits on the server, not in the consumer,
//! but still holds a `max_ack_pending` place
//! ([`ConsumerSettings::max_ack_pending`]).
//!
//! # Replies
//!
//! The correlation id travels in the `Seawall-Correlation-Id` header. A
//! request goes out as a core NATS message whose reply subject is its
//! reply address, so a plain NATS responder that copies the header back
//! answers a [`Correlator`](super::Correlator); the address also travels in
//! the `Seawall-Reply-To` header, because a JetStream delivery's reply
//! subject is the server's ack subject: a request to a subject a stream
//! captures is answered through the header. Replies (messages with a
//! correlation id and no reply address) go out as core NATS messages, also
//! on a JetStream transport: reply inboxes are not stream subjects. The
//! stream's own publish acknowledgement of a captured request, which the
//! server sends to the reply subject too, is dropped by the subscription
//! rather than counted as an unmatched reply.
//!
//! ## No responders
//!
//! When nobody subscribes to a request's subject, the server answers at
//! once with a "no responders" status (503) on the request's reply
//! subject. The status carries no headers, so it names its request by the
//! subject alone: a request whose reply address `R` is an inbox of this
//! transport ([`Transport::reply_subject`], as a
//! [`Correlator`](super::Correlator) uses by default) and whose correlation
//! id `C` is made of valid subject tokens goes out with the NATS reply
//! subject `R.C` (the [`REPLY_TO`] header still says `R`), and a
//! subscription to `R` also listens on `R.>`. A status arriving on `R.C`
//! becomes a [`Message`] to `R` with correlation id `C`, no payload and
//! [`no_responders`](super::Message::no_responders) set: the correlator
//! fails the request at once instead of waiting out its time limit. Replies
//! arriving on `R.C` (a plain NATS responder answers the reply subject)
//! are delivered as sent to `R`, and take `C` as their correlation id if
//! they carry none. A status on a reply address that is not such an inbox
//! (a [`CorrelatorBuilder::reply_subject`](super::CorrelatorBuilder::reply_subject)
//! of your own) names no request and is dropped; the request times out.
//!
//! ```no_run
//! use std::time::Duration;
//! use seawall::messaging::nats::NatsTransport;
//! use seawall::messaging::{Correlator, Message};
//! use tower::{Service, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("127.0.0.1:4222").await?;
//! let nats = NatsTransport::new(client);
//! let mut prices = Correlator::builder(nats).timeout(Duration::from_secs(1)).build().await?;
//! let price = prices.ready().await?.call(Message::new("prices.SWL", "")).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::{Acknowledge, BoxFuture, Decision, Delivery, Message, Transport};
use crate::budget::Budget;
use crate::BoxError;

/// The header carrying a message's correlation id.
pub const CORRELATION_ID: &str = "Seawall-Correlation-Id";

/// The header carrying a message's id: JetStream's own, which it
/// deduplicates on.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";

/// The header carrying a message's deadline, in milliseconds since the
/// Unix epoch.
pub const DEADLINE: &str = "Seawall-Deadline";

/// The header carrying a request's reply address, which a JetStream
/// delivery cannot carry as its reply subject (the server's ack subject
/// takes that place).
pub const REPLY_TO: &str = "Seawall-Reply-To";

/// Where a JetStream consumer starts in its stream; see
/// [`ConsumerSettings::deliver_policy`].
pub use async_nats::jetstream::consumer::DeliverPolicy;

/// A NATS connection as a [`Transport`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NatsTransport {
    client: async_nats::Client,
    queue_group: Option<String>,
    jetstream: Option<async_nats::jetstream::Context>,
    consumer: ConsumerSettings,
    inboxes: Inboxes,
}

/// The reply inboxes a [`NatsTransport`] (and its clones) handed out: the
/// subjects on which it maps "no responders" statuses to their requests.
/// One per [`Correlator`](super::Correlator), kept while the transport
/// lives.
#[derive(Clone, Default)]
struct Inboxes(Arc<Mutex<HashSet<String>>>);

impl Inboxes {
    fn add(&self, inbox: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(inbox.to_owned());
    }

    fn contains(&self, subject: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(subject)
    }
}

impl fmt::Debug for Inboxes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_tuple("Inboxes").field(&count).finish()
    }
}

/// How a [`NatsTransport`] sets up the JetStream pull consumers it
/// subscribes with ([`NatsTransport::consumer_settings`]).
///
/// A queue group's members share a durable consumer named after the group.
/// If it exists already (made by an operator, or by an earlier run) it is
/// used as it is, whatever these settings say, unless
/// [`reconfigure`](ConsumerSettings::reconfigure) asks to update it: a
/// subscription never silently resets what someone configured. Without a
/// queue group, each subscription makes an ephemeral consumer, which the
/// server removes a while after it stops pulling.
///
/// ```
/// use std::time::Duration;
/// use seawall::messaging::nats::ConsumerSettings;
///
/// // A slow handler, one message at a time: one in flight, and a failing
/// // message given up by the server after its fifth delivery.
/// let settings = ConsumerSettings::new()
///     .prefetch(1)
///     .ack_wait(Duration::from_secs(10))
///     .max_deliver(5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    prefetch: usize,
    max_ack_pending: Option<usize>,
    ack_wait: Duration,
    max_deliver: Option<u32>,
    backoff: Vec<Duration>,
    deliver_policy: Option<DeliverPolicy>,
    ack_timeout: Duration,
    reconfigure: bool,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            prefetch: 10,
            max_ack_pending: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            backoff: Vec::new(),
            deliver_policy: None,
            ack_timeout: Duration::from_secs(5),
            reconfigure: false,
        }
    }
}

impl ConsumerSettings {
    /// The defaults: prefetch 10 (and `max_ack_pending` 10), `ack_wait` 30 s, no `max_deliver` (the
    /// [`Consumer`](super::Consumer)'s
    /// [`max_deliveries`](super::Consumer::max_deliveries) caps failures),
    /// no server backoff, new messages only without a queue group (all of
    /// the stream for a group's new durable consumer), 5 s for an ack's
    /// confirmation, and existing durable consumers left as they are.
    pub fn new() -> ConsumerSettings {
        ConsumerSettings::default()
    }

    /// How many messages may be delivered and not yet settled (at least
    /// 1): the pull batch, and the consumer's `max_ack_pending`. Default 10,
    /// like the AMQP transport's prefetch. Match it to the
    /// [`Consumer`](super::Consumer)'s
    /// [`concurrency`](super::Consumer::concurrency): a message pulled
    /// beyond it waits in this process while its `ack_wait` runs, and a
    /// slow handler makes the server send it again.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// How many messages the server lets be delivered and not yet settled
    /// (its `max_ack_pending`; at least the prefetch). Default: the
    /// prefetch. A message requeued with a delay (a
    /// [`Consumer`](super::Consumer)'s redelivery backoff) stays pending on
    /// the server while it waits, so it holds one of these places: raise it
    /// above the prefetch to keep the consumer busy with other messages
    /// while failing ones wait. Messages beyond the prefetch are not pulled
    /// into this process, so they do not wait out their `ack_wait` here.
    pub fn max_ack_pending(mut self, max_ack_pending: usize) -> Self {
        self.max_ack_pending = Some(max_ack_pending);
        self
    }

    /// How long the server waits for a delivery to be settled before it
    /// delivers the message again. Default 30 s. Longer than the handler's
    /// timeout, or a slow handling is duplicated while it runs.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How many times the server delivers a message at most (at least 1);
    /// after the last it stops, without a `+TERM`. Default: no limit on the
    /// server, and the [`Consumer`](super::Consumer) rejects a message
    /// whose [`max_deliveries`](super::Consumer::max_deliveries)th delivery
    /// failed. Set it as a backstop above the consumer's maximum, since a
    /// redelivery after `ack_wait` counts too.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = Some(max_deliver.max(1));
        self
    }

    /// The server's waits before each redelivery of a message that was not
    /// settled in time (its `backoff`): the first replaces `ack_wait`, the
    /// last repeats. It needs a [`max_deliver`](ConsumerSettings::max_deliver)
    /// greater than its length. Requeues by a
    /// [`Consumer`](super::Consumer) wait out the consumer's own
    /// [redelivery backoff](super::Consumer::redelivery_backoff) instead,
    /// which the server applies (`-NAK` with a delay). Default: none.
    pub fn backoff(mut self, backoff: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = backoff.into_iter().collect();
        self
    }

    /// Where a new consumer starts in its stream. Default:
    /// [`DeliverPolicy::New`] without a queue group (a subscriber hears
    /// what is published from now on, as a core subscriber does, rather
    /// than the whole stream again), [`DeliverPolicy::All`] for a queue
    /// group's durable consumer (the group works through the stream's
    /// backlog, once).
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = Some(policy);
        self
    }

    /// How long settling a delivery waits for the server's confirmation
    /// before it fails. Default 5 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Updates a queue group's existing durable consumer to these settings
    /// when subscribing, instead of using it as it is. Settings the server
    /// cannot change on an existing consumer (its deliver policy) make the
    /// subscription fail.
    pub fn reconfigure(mut self) -> Self {
        self.reconfigure = true;
        self
    }

    /// The consumer configuration for `subject`, durable for `group`.
    fn config(&self, subject: &str, group: Option<String>) -> Result<pull::Config, NatsError> {
        let max_deliver = self.max_deliver.map_or(-1, i64::from);
        if !self.backoff.is_empty()
            && usize::try_from(max_deliver).map_or(true, |max| max <= self.backoff.len())
        {
            return Err(NatsError::Consumer(
                format!(
                    "a backoff of {} delays needs max_deliver above {}",
                    self.backoff.len(),
                    self.backoff.len()
                )
                .into(),
            ));
        }
        let deliver_policy = self.deliver_policy.unwrap_or(match group {
            Some(_) => DeliverPolicy::All,
            None => DeliverPolicy::New,
        });
        Ok(pull::Config {
            durable_name: group,
            filter_subject: subject.to_owned(),
            deliver_policy,
            ack_wait: self.ack_wait,
            max_deliver,
            max_ack_pending: i64::try_from(
                self.max_ack_pending
                    .unwrap_or(self.prefetch)
                    .max(self.prefetch),
            )
            .unwrap_or(i64::MAX),
            backoff: self.backoff.clone(),
            ..pull::Config::default()
        })
    }
}

/// What went wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] async_nats::PublishError),
    /// The server did not confirm it has what was published.
    #[error(transparent)]
    Flush(#[from] async_nats::client::FlushError),
    /// Subscribing failed.
    #[error(transparent)]
    Subscribe(#[from] async_nats::SubscribeError),
    /// JetStream did not acknowledge the message.
    #[error(transparent)]
    JetStream(#[from] async_nats::jetstream::context::PublishError),
    /// A JetStream consumer could not be set up.
    #[error("setting up a JetStream consumer failed: {0}")]
    Consumer(#[source] BoxError),
}

crate::leaf_error!(NatsError);

impl NatsTransport {
    /// Uses `client`: every publish waits for the client to write it out
    /// (a flush); no queue group.
    pub fn new(client: async_nats::Client) -> NatsTransport {
        NatsTransport {
            client,
            queue_group: None,
            jetstream: None,
            consumer: ConsumerSettings::default(),
            inboxes: Inboxes::default(),
        }
    }

    /// Subscribes in this queue group: each message goes to one member of
    /// the group (competing consumers) instead of to every subscriber.
    pub fn queue_group(mut self, group: impl Into<String>) -> Self {
        self.queue_group = Some(group.into());
        self
    }

    /// Publishes through JetStream and waits for the server's
    /// acknowledgement that a stream stored the message: a receipt. A
    /// stream must capture the subjects published to. Messages with a reply
    /// address (requests) still go out as core NATS messages, since a
    /// JetStream publish uses the reply address for its acknowledgement.
    ///
    /// Subscribing to a subject a stream captures then makes a pull
    /// consumer on it (durable, named after the queue group, if there is
    /// one; otherwise ephemeral), whose deliveries are acknowledged; see
    /// [`ConsumerSettings`].
    pub fn jetstream(mut self) -> Self {
        self.jetstream = Some(async_nats::jetstream::new(self.client.clone()));
        self
    }

    /// Sets up the JetStream consumers it subscribes with by `settings`.
    pub fn consumer_settings(mut self, settings: ConsumerSettings) -> Self {
        self.consumer = settings;
        self
    }

    /// The client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Subscriptions of a [`NatsTransport`].
pub type NatsSubscription = BoxStream<'static, Delivery>;

/// The message in a core NATS delivery: its reply address is NATS's reply
/// subject, so plain NATS requesters are answered.
fn message(message: &async_nats::Message) -> Message {
    let reply_to = message.reply.as_ref().map(|reply| reply.to_string());
    Message {
        reply_to,
        ..message_without_reply(message)
    }
}

/// The message in a JetStream delivery, whose reply subject is the
/// server's ack subject: its reply address is only the one the publisher
/// put in the [`REPLY_TO`] header.
fn jetstream_message(received: &async_nats::jetstream::Message) -> Message {
    let reply_to = received
        .headers
        .as_ref()
        .and_then(|headers| headers.get(REPLY_TO))
        .map(|reply| reply.as_str().to_owned());
    // The count is in the ack subject; a delivery without one (not from a
    // JetStream consumer) has no count rather than a made-up one.
    let deliveries = received
        .info()
        .ok()
        .and_then(|info| u32::try_from(info.delivered).ok());
    Message {
        reply_to,
        deliveries,
        redelivered: deliveries.is_some_and(|n| n > 1),
        ..message_without_reply(&received.message)
    }
}

/// Whether a core delivery is a JetStream publish acknowledgement (the
/// server's answer to a core publish with a reply subject that a stream
/// stored), which arrives on the requester's reply subject next to the
/// replies and is nobody's reply.
fn is_publish_ack(message: &async_nats::Message) -> bool {
    let correlated = message
        .headers
        .as_ref()
        .is_some_and(|headers| headers.get(CORRELATION_ID).is_some());
    !correlated
        && message.status.is_none()
        && message.payload.starts_with(br#"{"stream":"#)
        && message.payload.windows(6).any(|part| part == br#""seq":"#)
}

/// Whether a core delivery is the server's "no responders" status (503),
/// sent to a request's reply subject when nobody subscribes to the
/// request's subject. It carries no headers: only a reply subject of the
/// form `inbox.<correlation id>` names its request ([`inbox_delivery`]);
/// elsewhere it is nobody's reply, and dropped.
fn is_no_responders(message: &async_nats::Message) -> bool {
    message.status == Some(async_nats::StatusCode::NO_RESPONDERS)
}

/// Whether `id` can follow an inbox in a subject: one or more non-empty
/// tokens of printable ASCII without wildcards.
fn is_subject_tokens(id: &str) -> bool {
    !id.is_empty()
        && id.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        })
}

/// What a core delivery on `inbox` or `inbox.>` is: `None` for what is
/// nobody's reply (a stream's publish acknowledgement, a "no responders"
/// status on the inbox itself). On `inbox.<id>`, a "no responders" status
/// becomes a [`Message::no_responders`] for request `<id>`, and a reply is
/// delivered as sent to `inbox`, with `<id>` as its correlation id if it
/// carries none.
fn inbox_delivery(inbox: &str, received: &async_nats::Message) -> Option<Message> {
    if is_publish_ack(received) {
        return None;
    }
    let correlation_id = received
        .subject
        .as_str()
        .strip_prefix(inbox)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|id| !id.is_empty());
    let Some(correlation_id) = correlation_id else {
        return (!is_no_responders(received)).then(|| message(received));
    };
    if is_no_responders(received) {
        return Some(Message {
            correlation_id: Some(correlation_id.to_owned()),
            no_responders: true,
            ..Message::new(inbox, Bytes::new())
        });
    }
    let mut reply = message(received);
    reply.subject = inbox.to_owned();
    if reply.correlation_id.is_none() {
        reply.correlation_id = Some(correlation_id.to_owned());
    }
    Some(reply)
}

/// One stream of what `first` and `second` deliver, which ends as soon as
/// either ends (the connection went), so that a lost subscription is seen
/// and made again whole.
fn merged<S>(first: S, second: S) -> BoxStream<'static, S::Item>
where
    S: futures_util::Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let end = || futures_util::stream::once(std::future::ready(None));
    futures_util::stream::select(first.map(Some).chain(end()), second.map(Some).chain(end()))
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(std::future::ready)
        .boxed()
}

fn message_without_reply(message: &async_nats::Message) -> Message {
    let correlation_id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(CORRELATION_ID))
        .map(|id| id.as_str().to_owned());
    let id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(MESSAGE_ID))
        .map(|id| id.as_str().to_owned());
    let deadline = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(DEADLINE))
        .and_then(|millis| millis.as_str().parse().ok())
        .map(Budget::from_unix_millis);
    Message {
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        reply_to: None,
        correlation_id,
        id,
        deadline,
        deliveries: None,
        redelivered: false,
        no_responders: false,
    }
}

/// A JetStream message, which the stream waits to hear about.
struct JetStreamAcker {
    message: async_nats::jetstream::Message,
    /// How long to wait for the server's confirmation of a decision.
    timeout: Duration,
}

impl JetStreamAcker {
    /// Sends `kind` and waits for the server to confirm it: a decision is
    /// settled only once the server has it (see the module docs on what
    /// "acked" means).
    fn send(self, kind: AckKind) -> BoxFuture<Result<(), BoxError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.message.double_ack_with(kind)).await {
                Ok(sent) => sent,
                Err(_) => Err(format!(
                    "the server did not confirm the {} within {:?}",
                    ack_name(kind),
                    self.timeout
                )
                .into()),
            }
        })
    }
}

fn ack_name(kind: AckKind) -> &'static str {
    match kind {
        AckKind::Ack => "ack",
        AckKind::Nak(_) => "nak",
        AckKind::Term => "term",
        AckKind::Progress => "progress",
        AckKind::Next => "next",
    }
}

impl Acknowledge for JetStreamAcker {
    fn settle(self: Box<Self>, decision: Decision) -> BoxFuture<Result<(), BoxError>> {
        let kind = match decision {
            Decision::Ack => AckKind::Ack,
            Decision::Requeue => AckKind::Nak(None),
            Decision::Reject => AckKind::Term,
        };
        self.send(kind)
    }

    fn delays_redelivery(&self) -> bool {
        true
    }

    /// A `-NAK` with a delay: the server holds the message, and the
    /// consumer's place for it is free at once.
    fn requeue_after(self: Box<Self>, delay: Duration) -> BoxFuture<Result<(), BoxError>> {
        self.send(AckKind::Nak(Some(delay)))
    }
}

/// A pull consumer on the stream that captures `subject`, or `None` if no
/// stream does. Members of a queue group share one durable consumer, named
/// after the group: they compete for its messages.
async fn jetstream_subscription(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    group: Option<String>,
    settings: &ConsumerSettings,
) -> Result<Option<NatsSubscription>, NatsError> {
    let Ok(stream) = jetstream.stream_by_subject(subject).await else {
        return Ok(None);
    };
    let config = settings.config(subject, group.clone())?;
    let stream = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| NatsError::Consumer(e.into()))?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = match group {
        // Looked up first: creating over an existing durable consumer
        // would update it to these settings (JetStream's create is
        // create-or-update), resetting what its owner configured.
        Some(durable) if !settings.reconfigure => stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| NatsError::Consumer(e.into()))?,
        _ => stream
            .create_consumer(config)
            .await
            .map_err(|e| NatsError::Consumer(e.into()))?,
    };
    // The batch stays within the consumer's own bounds (an existing one
    // may have smaller ones than these settings), since the server refuses
    // a pull for more than its max_ack_pending or max_batch.
    let limits = &consumer.cached_info().config;
    let batch = [limits.max_ack_pending, limits.max_batch]
        .into_iter()
        .filter_map(|limit| usize::try_from(limit).ok().filter(|limit| *limit > 0))
        .fold(settings.prefetch, usize::min);
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .map_err(|e| NatsError::Consumer(e.into()))?;
    let timeout = settings.ack_timeout;
    // Ends at the first error (the connection went), as subscriptions of
    // the AMQP transport do.
    let deliveries = messages
        .take_while(|next| std::future::ready(next.is_ok()))
        .filter_map(move |next| {
            std::future::ready(next.ok().map(|received| {
                let message = jetstream_message(&received);
                Delivery::new(
                    message,
                    JetStreamAcker {
                        message: received,
                        timeout,
                    },
                )
            }))
        });
    Ok(Some(deliveries.boxed()))
}

impl Transport for NatsTransport {
    type Error = NatsError;
    type Subscription = NatsSubscription;

    fn publish(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), NatsError>> + Send + 'static {
        let client = self.client.clone();
        let jetstream = self.jetstream.clone();
        let inboxes = self.inboxes.clone();
        async move {
            let Message {
                subject,
                payload,
                reply_to,
                correlation_id,
                id,
                deadline,
                ..
            } = message;
            let payload: Bytes = payload;
            let correlation_id_set = correlation_id.is_some();
            // The NATS reply subject: `inbox.<correlation id>` for a
            // request answered on one of this transport's inboxes, so that
            // the server's "no responders" status names its request.
            let nats_reply = reply_to.as_ref().map(|reply| match &correlation_id {
                Some(id) if is_subject_tokens(id) && inboxes.contains(reply) => {
                    format!("{reply}.{id}")
                }
                _ => reply.clone(),
            });
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = &correlation_id {
                headers.insert(CORRELATION_ID, id.as_str());
            }
            if let Some(id) = id {
                headers.insert(MESSAGE_ID, id.as_str());
            }
            if let Some(deadline) = deadline {
                headers.insert(DEADLINE, deadline.to_unix_millis().to_string().as_str());
            }
            if let Some(reply) = &reply_to {
                headers.insert(REPLY_TO, reply.as_str());
            }
            // A reply goes to an inbox, which no stream captures: a
            // JetStream publish there would wait for a receipt that never
            // comes.
            let is_reply = reply_to.is_none() && correlation_id_set;
            match (nats_reply, jetstream) {
                (None, Some(jetstream)) if !is_reply => {
                    jetstream
                        .publish_with_headers(subject, headers, payload)
                        .await?
                        .await?;
                    return Ok(());
                }
                (Some(reply), _) => {
                    client
                        .publish_with_reply_and_headers(subject, reply, headers, payload)
                        .await?
                }
                (None, _) => {
                    client
                        .publish_with_headers(subject, headers, payload)
                        .await?
                }
            }
            client.flush().await?;
            Ok(())
        }
    }

    fn subscribe(
        &self,
        subject: &str,
    ) -> impl std::future::Future<Output = Result<NatsSubscription, NatsError>> + Send + 'static
    {
        let client = self.client.clone();
        let group = self.queue_group.clone();
        let jetstream = self.jetstream.clone();
        let settings = self.consumer.clone();
        let subject = subject.to_owned();
        let inbox = self.inboxes.contains(&subject);
        async move {
            if inbox {
                // Core subscriptions, never a stream's: the inbox, and the
                // reply subjects of requests answered on it.
                let tokens = format!("{subject}.>");
                let (direct, tokens) = match group {
                    Some(group) => (
                        client
                            .queue_subscribe(subject.clone(), group.clone())
                            .await?,
                        client.queue_subscribe(tokens, group).await?,
                    ),
                    None => (
                        client.subscribe(subject.clone()).await?,
                        client.subscribe(tokens).await?,
                    ),
                };
                client.flush().await?;
                return Ok(merged(direct, tokens)
                    .filter_map(move |received| {
                        std::future::ready(
                            inbox_delivery(&subject, &received).map(Delivery::unacknowledged),
                        )
                    })
                    .boxed());
            }
            if let Some(jetstream) = jetstream {
                if let Some(deliveries) =
                    jetstream_subscription(&jetstream, &subject, group.clone(), &settings).await?
                {
                    return Ok(deliveries);
                }
            }
            let subscriber = match group {
                Some(group) => client.queue_subscribe(subject, group).await?,
                None => client.subscribe(subject).await?,
            };
            // Out on the wire before this resolves. The server applies a
            // connection's commands in order, so what this client publishes
            // next is matched against the subscription; another
            // connection's messages may still overtake it, as always in
            // NATS.
            client.flush().await?;
            Ok(subscriber
                .filter(|received| {
                    std::future::ready(!is_publish_ack(received) && !is_no_responders(received))
                })
                .map(|received| Delivery::unacknowledged(message(&received)))
                .boxed())
        }
    }

    /// A fresh inbox of the client's, remembered as this transport's: a
    /// request answered on it learns at once that nobody subscribes to its
    /// subject (see [the module docs](self#no-responders)).
    fn reply_subject(&self) -> String {
        let inbox = self.client.new_inbox();
        self.inboxes.add(&inbox);
        inbox
    }
}
