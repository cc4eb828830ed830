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
//! makes a JetStream pull consumer instead: deliveries are acknowledged
//! (`+ACK`), requeued (`-NAK`) or rejected (`+TERM`) as the consumer
//! decides, and messages wait in the stream while it does not pull.
//! Subjects no stream captures (reply inboxes) stay core subscriptions.
//!
//! The correlation id travels in the `Seawall-Correlation-Id` header; the
//! reply address is NATS's own reply subject, so a plain NATS responder
//! that copies the header back answers a [`Correlator`](super::Correlator).
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

/// A NATS connection as a [`Transport`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NatsTransport {
    client: async_nats::Client,
    queue_group: Option<String>,
    jetstream: Option<async_nats::jetstream::Context>,
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
    /// one; otherwise ephemeral), whose deliveries are acknowledged.
    pub fn jetstream(mut self) -> Self {
        self.jetstream = Some(async_nats::jetstream::new(self.client.clone()));
        self
    }

    /// The client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Subscriptions of a [`NatsTransport`].
pub type NatsSubscription = BoxStream<'static, Delivery>;

fn message(message: &async_nats::Message) -> Message {
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
        reply_to: message.reply.as_ref().map(|reply| reply.to_string()),
        correlation_id,
        id,
        deadline,
        deliveries: None,
        redelivered: false,
    }
}

/// A JetStream message, which the stream waits to hear about.
struct JetStreamAcker(async_nats::jetstream::Message);

impl Acknowledge for JetStreamAcker {
    fn settle(self: Box<Self>, decision: Decision) -> BoxFuture<Result<(), BoxError>> {
        Box::pin(async move {
            let kind = match decision {
                Decision::Ack => AckKind::Ack,
                Decision::Requeue => AckKind::Nak(None),
                Decision::Reject => AckKind::Term,
            };
            self.0.ack_with(kind).await
        })
    }
}

/// A pull consumer on the stream that captures `subject`, or `None` if no
/// stream does. Members of a queue group share one durable consumer, named
/// after the group: they compete for its messages.
async fn jetstream_subscription(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    group: Option<String>,
) -> Result<Option<NatsSubscription>, NatsError> {
    let Ok(stream) = jetstream.stream_by_subject(subject).await else {
        return Ok(None);
    };
    let consumer = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| NatsError::Consumer(e.into()))?
        .create_consumer(pull::Config {
            durable_name: group,
            filter_subject: subject.to_owned(),
            ..pull::Config::default()
        })
        .await
        .map_err(|e| NatsError::Consumer(e.into()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| NatsError::Consumer(e.into()))?;
    // Ends at the first error (the connection went), as subscriptions of
    // the AMQP transport do.
    let deliveries = messages
        .take_while(|next| std::future::ready(next.is_ok()))
        .filter_map(|next| {
            std::future::ready(next.ok().map(|received| {
                let message = message(&received.message);
                Delivery::new(message, JetStreamAcker(received))
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
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = correlation_id {
                headers.insert(CORRELATION_ID, id.as_str());
            }
            if let Some(id) = id {
                headers.insert(MESSAGE_ID, id.as_str());
            }
            if let Some(deadline) = deadline {
                headers.insert(DEADLINE, deadline.to_unix_millis().to_string().as_str());
            }
            match (reply_to, jetstream) {
                (None, Some(jetstream)) => {
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
                (None, None) => {
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
        let subject = subject.to_owned();
        async move {
            if let Some(jetstream) = jetstream {
                if let Some(deliveries) =
                    jetstream_subscription(&jetstream, &subject, group.clone()).await?
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
                .map(|received| Delivery::unacknowledged(message(&received)))
                .boxed())
        }
    }

    fn reply_subject(&self) -> String {
        self.client.new_inbox()
    }
}
