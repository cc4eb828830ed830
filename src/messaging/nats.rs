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
//! Core NATS delivers at most once: its deliveries are
//! [unacknowledged](super::Delivery::unacknowledged), so a
//! [`Consumer`](super::Consumer)'s decisions change nothing on the broker.
//! What the consumer still does is stop pulling while the circuit is open;
//! the client buffers what arrives meanwhile, up to its subscription
//! capacity (`async_nats::ConnectOptions::subscription_capacity`), and
//! drops the rest as a slow consumer.
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

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Delivery, Message, Transport};

/// The header carrying a message's correlation id.
pub const CORRELATION_ID: &str = "Seawall-Correlation-Id";

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
}

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
pub type NatsSubscription =
    futures_util::stream::Map<async_nats::Subscriber, fn(async_nats::Message) -> Delivery>;

fn delivery(message: async_nats::Message) -> Delivery {
    let correlation_id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(CORRELATION_ID))
        .map(|id| id.as_str().to_owned());
    Delivery::unacknowledged(Message {
        subject: message.subject.to_string(),
        payload: message.payload,
        reply_to: message.reply.map(|reply| reply.to_string()),
        correlation_id,
    })
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
            } = message;
            let payload: Bytes = payload;
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = correlation_id {
                headers.insert(CORRELATION_ID, id.as_str());
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
        let subject = subject.to_owned();
        async move {
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
            Ok(subscriber.map(delivery as fn(async_nats::Message) -> Delivery))
        }
    }

    fn reply_subject(&self) -> String {
        self.client.new_inbox()
    }
}
