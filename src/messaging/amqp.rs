//! AMQP 0-9-1 (RabbitMQ), through [`lapin`]: confirmed publishes, durable
//! queues, and deliveries acknowledged, requeued or rejected as the
//! [`Consumer`](super::Consumer) decides.
//!
//! A subject is a queue's name on the default exchange: [`Transport::publish`]
//! sends to it (persistent, mandatory, and waits for the broker's confirm:
//! a message no queue takes is an error, not a silent drop), and
//! [`Transport::subscribe`] declares the queue (durable by default) and
//! consumes from it, with the transport's prefetch. Subscribers of one
//! subject compete for its messages.
//!
//! The connection is made on first use and made again on the next use after
//! it is lost, so traffic resumes when the broker is back; subscriptions end
//! with the connection (a [`Consumer`](super::Consumer)'s `run` returns,
//! and a [`Correlator`](super::Correlator) subscribes again by itself).
//! Replies go to private queues (named `seawall.reply.…`: exclusive,
//! deleted with the connection, not acknowledged).
//!
//! ```no_run
//! use seawall::messaging::amqp::AmqpTransport;
//! use seawall::messaging::{Message, Publisher};
//! use tower::{Service, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let amqp = AmqpTransport::new("amqp://127.0.0.1:5672/%2f");
//! amqp.declare("orders").await?;
//! let mut publisher = Publisher::new(amqp);
//! publisher.ready().await?.call(Message::new("orders", "42")).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::transport::unique_subject;
use super::{Acknowledge, BoxFuture, Decision, Delivery, Message, Transport};
use crate::budget::Budget;
use crate::BoxError;

/// Subjects with this prefix are private reply queues.
const REPLY_PREFIX: &str = "seawall.reply";

/// What went wrong talking to the AMQP broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The client failed: connection, channel, protocol.
    #[error(transparent)]
    Client(#[from] lapin::Error),
    /// The broker took the message, but no queue was bound to take it.
    #[error("no queue takes messages to {subject}")]
    Unroutable {
        /// The subject.
        subject: String,
    },
    /// The broker refused the message (a full queue that rejects, say).
    #[error("the broker refused the message to {subject}")]
    Refused {
        /// The subject.
        subject: String,
    },
}

crate::leaf_error!(AmqpError);

/// An AMQP broker as a [`Transport`]. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

struct Shared {
    uri: String,
    durable: bool,
    prefetch: u16,
    /// The connection and its publishing channel (with confirms on), while
    /// they last.
    link: Mutex<Option<(Arc<Connection>, Channel)>>,
}

impl fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("durable", &self.shared.durable)
            .field("prefetch", &self.shared.prefetch)
            .finish_non_exhaustive()
    }
}

impl AmqpTransport {
    /// A transport for the broker at `uri` (`amqp://host:port/%2f`);
    /// it connects on first use. Durable queues and persistent messages;
    /// a prefetch of 10.
    pub fn new(uri: impl Into<String>) -> AmqpTransport {
        AmqpTransport::with(uri.into(), true, 10)
    }

    fn with(uri: String, durable: bool, prefetch: u16) -> AmqpTransport {
        AmqpTransport {
            shared: Arc::new(Shared {
                uri,
                durable,
                prefetch,
                link: Mutex::new(None),
            }),
        }
    }

    /// Whether queues it declares survive a broker restart, with the
    /// messages it publishes. Default `true`.
    pub fn durable(self, durable: bool) -> Self {
        AmqpTransport::with(self.shared.uri.clone(), durable, self.shared.prefetch)
    }

    /// How many unacknowledged messages a subscription holds at most.
    /// Default 10; match the [`Consumer`](super::Consumer)'s concurrency.
    pub fn prefetch(self, prefetch: u16) -> Self {
        AmqpTransport::with(self.shared.uri.clone(), self.shared.durable, prefetch)
    }

    /// The publishing channel, connecting first if there is no live one.
    async fn channel(&self) -> Result<(Arc<Connection>, Channel), lapin::Error> {
        let mut link = self.shared.link.lock().await;
        if let Some((connection, channel)) = link.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok((Arc::clone(connection), channel.clone()));
            }
        }
        *link = None;
        let connection =
            Arc::new(Connection::connect(&self.shared.uri, ConnectionProperties::default()).await?);
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *link = Some((Arc::clone(&connection), channel.clone()));
        Ok((connection, channel))
    }

    /// Declares the queue `subject` (durable unless configured otherwise),
    /// so messages published to it before anyone subscribes are kept.
    pub async fn declare(&self, subject: &str) -> Result<(), AmqpError> {
        let (_, channel) = self.channel().await?;
        channel
            .queue_declare(
                subject.into(),
                self.queue_options(subject),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    fn queue_options(&self, subject: &str) -> QueueDeclareOptions {
        if subject.starts_with(REPLY_PREFIX) {
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            }
        } else {
            QueueDeclareOptions {
                durable: self.shared.durable,
                ..QueueDeclareOptions::default()
            }
        }
    }
}

/// The delivery (its payload taken out) holds what acknowledges it.
struct Acker(lapin::message::Delivery);

impl Acknowledge for Acker {
    fn settle(self: Box<Self>, decision: Decision) -> BoxFuture<Result<(), BoxError>> {
        Box::pin(async move {
            let acker = self.0;
            match decision {
                Decision::Ack => acker.ack(BasicAckOptions::default()).await,
                Decision::Requeue => {
                    acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
                Decision::Reject => acker.reject(BasicRejectOptions { requeue: false }).await,
            }
            .map(drop)
            .map_err(BoxError::from)
        })
    }
}

/// The header carrying a message's deadline, in milliseconds since the
/// Unix epoch (a long).
pub const DEADLINE: &str = "seawall-deadline";

fn deadline_of(properties: &BasicProperties) -> Option<Budget> {
    // Only the long seawall writes: an AMQP timestamp counts seconds, and
    // read as milliseconds it would expire the message at once.
    let AMQPValue::LongLongInt(millis) = properties.headers().as_ref()?.inner().get(DEADLINE)?
    else {
        return None;
    };
    let millis = u64::try_from(*millis).ok()?;
    Some(Budget::from_unix_millis(millis))
}

fn message(delivery: &mut lapin::message::Delivery) -> Message {
    let properties = &delivery.properties;
    Message {
        id: properties.message_id().as_ref().map(|id| id.to_string()),
        deadline: deadline_of(properties),
        subject: delivery.routing_key.to_string(),
        payload: std::mem::take(&mut delivery.data).into(),
        reply_to: properties.reply_to().as_ref().map(|to| to.to_string()),
        correlation_id: properties
            .correlation_id()
            .as_ref()
            .map(|id| id.to_string()),
    }
}

impl Transport for AmqpTransport {
    type Error = AmqpError;
    type Subscription = BoxStream<'static, Delivery>;

    fn publish(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), AmqpError>> + Send + 'static {
        let transport = self.clone();
        async move {
            let (_, channel) = transport.channel().await?;
            let mut properties = BasicProperties::default();
            if transport.shared.durable {
                // 2: persistent.
                properties = properties.with_delivery_mode(2);
            }
            if let Some(id) = message.correlation_id {
                properties = properties.with_correlation_id(id.into());
            }
            if let Some(id) = message.id {
                properties = properties.with_message_id(id.into());
            }
            if let Some(reply_to) = message.reply_to {
                properties = properties.with_reply_to(reply_to.into());
            }
            if let Some(deadline) = message.deadline {
                let millis = i64::try_from(deadline.to_unix_millis()).unwrap_or(i64::MAX);
                let mut headers = FieldTable::default();
                headers.insert(DEADLINE.into(), AMQPValue::LongLongInt(millis));
                properties = properties.with_headers(headers);
            }
            let confirmation = async {
                channel
                    .basic_publish(
                        "".into(),
                        message.subject.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &message.payload,
                        properties,
                    )
                    .await?
                    .await
            }
            .await;
            let confirmation = match confirmation {
                Ok(confirmation) => confirmation,
                Err(error) => {
                    // The channel (or its connection) is broken: the next
                    // publish makes new ones rather than failing on it too.
                    transport.shared.link.lock().await.take();
                    return Err(error.into());
                }
            };
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(_)) => Err(AmqpError::Unroutable {
                    subject: message.subject,
                }),
                Confirmation::Nack(_) => Err(AmqpError::Refused {
                    subject: message.subject,
                }),
            }
        }
    }

    fn subscribe(
        &self,
        subject: &str,
    ) -> impl std::future::Future<Output = Result<Self::Subscription, AmqpError>> + Send + 'static
    {
        let transport = self.clone();
        let subject = subject.to_owned();
        async move {
            let (connection, _) = transport.channel().await?;
            // A channel of its own, so its prefetch is its own.
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(transport.shared.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .queue_declare(
                    subject.as_str().into(),
                    transport.queue_options(&subject),
                    FieldTable::default(),
                )
                .await?;
            let replies = subject.starts_with(REPLY_PREFIX);
            let consumer = channel
                .basic_consume(
                    subject.as_str().into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: replies,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            // The stream owns the channel, and ends at the first error
            // (the connection or the channel is gone).
            let deliveries = stream::unfold(
                (consumer, channel),
                move |(mut consumer, channel)| async move {
                    match consumer.next().await {
                        Some(Ok(mut delivery)) => {
                            let message = message(&mut delivery);
                            let delivery = if replies {
                                Delivery::unacknowledged(message)
                            } else {
                                Delivery::new(message, Acker(delivery))
                            };
                            Some((delivery, (consumer, channel)))
                        }
                        Some(Err(error)) => {
                            tracing::debug!(target: "seawall::messaging", %error, "AMQP subscription ended");
                            None
                        }
                        None => None,
                    }
                },
            );
            Ok(deliveries.boxed())
        }
    }

    fn reply_subject(&self) -> String {
        unique_subject(REPLY_PREFIX)
    }
}
