//! AMQP 0-9-1 (RabbitMQ), through [`lapin`]: confirmed publishes through
//! a topic exchange, a queue per subscriber or per group, and deliveries
//! acknowledged, requeued or rejected as the [`Consumer`](super::Consumer)
//! decides.
//!
//! # Topology
//!
//! Subjects are routing keys on one topic exchange (`seawall` by default,
//! durable, declared on connecting; [`AmqpTransport::exchange`]), so that
//! subscribing means what it means on NATS:
//!
//! - **Without a queue group**, each subscriber gets its own queue
//!   (server-named, exclusive, gone with the connection) bound to the
//!   subject: every subscriber receives every message (publish/subscribe,
//!   scatter-gather).
//! - **In a queue group** ([`AmqpTransport::queue_group`]), the group's
//!   members share one durable queue, `<subject>.<group>`: each message goes
//!   to one of them (work queues, request/reply responders), and messages
//!   wait there while no member runs. [`AmqpTransport::declare`] makes it
//!   ahead of the first subscriber. It is a quorum queue unless told
//!   otherwise ([`AmqpTransport::classic_queues`]): RabbitMQ counts its
//!   deliveries (`x-delivery-count`), which a
//!   [`Consumer`](super::Consumer)'s [maximum](super::Consumer::max_deliveries)
//!   needs. With [`AmqpTransport::dead_letter_exchange`], what a consumer
//!   rejects goes there.
//! - A queue that exists already is used as it is, whatever its arguments
//!   (dead-lettering, type, length limits): the transport looks before it
//!   declares, instead of failing on arguments that differ.
//!
//! [`Transport::publish`] sends to the exchange (persistent, mandatory,
//! and waits for the broker's confirm: a message no queue takes is an
//! error, not a silent drop). Replies go to private queues (named
//! `seawall.reply.…`: exclusive, deleted with the connection, not
//! acknowledged) through the default exchange, as RabbitMQ's own RPC does;
//! so does any message to a server-named (`amq.gen-…`) queue, so that a
//! plain AMQP requester's `reply_to` works too.
//!
//! The connection is made on first use and made again on the next use after
//! it is lost, so traffic resumes when the broker is back; subscriptions end
//! with the connection (a [`Consumer`](super::Consumer)'s `run` returns,
//! and a [`Correlator`](super::Correlator) subscribes again by itself).
//!
//! ```no_run
//! use seawall::messaging::amqp::AmqpTransport;
//! use seawall::messaging::{Message, Publisher};
//! use tower::{Service, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let amqp = AmqpTransport::new("amqp://127.0.0.1:5672/%2f").queue_group("billing");
//! amqp.declare("orders").await?; // the queue `orders.billing`, bound to `orders`
//! let mut publisher = Publisher::new(amqp);
//! publisher.ready().await?.call(Message::new("orders", "42")).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
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

#[derive(Clone, Debug)]
struct Settings {
    uri: String,
    durable: bool,
    prefetch: u16,
    exchange: String,
    group: Option<String>,
    quorum: bool,
    dead_letter_exchange: Option<String>,
}

struct Shared {
    settings: Settings,
    /// The connection and its publishing channel (with confirms on), while
    /// they last.
    link: Mutex<Option<(Arc<Connection>, Channel)>>,
}

impl fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.shared.settings;
        f.debug_struct("AmqpTransport")
            .field("exchange", &settings.exchange)
            .field("group", &settings.group)
            .field("durable", &settings.durable)
            .field("quorum", &settings.quorum)
            .field("dead_letter_exchange", &settings.dead_letter_exchange)
            .field("prefetch", &settings.prefetch)
            .finish_non_exhaustive()
    }
}

impl AmqpTransport {
    /// A transport for the broker at `uri` (`amqp://host:port/%2f`);
    /// it connects on first use. The exchange `seawall`, no queue group,
    /// durable queues and persistent messages, quorum queues for groups, a
    /// prefetch of 10.
    pub fn new(uri: impl Into<String>) -> AmqpTransport {
        AmqpTransport::with(Settings {
            uri: uri.into(),
            durable: true,
            prefetch: 10,
            exchange: "seawall".to_owned(),
            group: None,
            quorum: true,
            dead_letter_exchange: None,
        })
    }

    fn with(settings: Settings) -> AmqpTransport {
        AmqpTransport {
            shared: Arc::new(Shared {
                settings,
                link: Mutex::new(None),
            }),
        }
    }

    /// A transport like this one (with a connection of its own) but for
    /// `change` made to its settings.
    fn changed(&self, change: impl FnOnce(&mut Settings)) -> AmqpTransport {
        let mut settings = self.shared.settings.clone();
        change(&mut settings);
        AmqpTransport::with(settings)
    }

    /// Whether the exchange and the group queues it declares survive a
    /// broker restart, with the messages it publishes. Default `true`.
    /// Quorum queues are always durable: with `durable(false)`, group
    /// queues stay durable unless the transport also uses
    /// [`classic_queues`](AmqpTransport::classic_queues).
    pub fn durable(self, durable: bool) -> Self {
        self.changed(|settings| settings.durable = durable)
    }

    /// How many unacknowledged messages a subscription holds at most.
    /// Default 10; match the [`Consumer`](super::Consumer)'s concurrency.
    pub fn prefetch(self, prefetch: u16) -> Self {
        self.changed(|settings| settings.prefetch = prefetch)
    }

    /// The topic exchange subjects are routing keys on. Default `seawall`.
    pub fn exchange(self, exchange: impl Into<String>) -> Self {
        let exchange = exchange.into();
        self.changed(|settings| settings.exchange = exchange)
    }

    /// Subscribes in this queue group: members share the durable queue
    /// `<subject>.<group>`, and each message goes to one of them, instead
    /// of to every subscriber.
    pub fn queue_group(self, group: impl Into<String>) -> Self {
        let group = group.into();
        self.changed(|settings| settings.group = Some(group))
    }

    /// Declares group queues as classic queues rather than quorum queues:
    /// RabbitMQ then only says whether a message was delivered before,
    /// not how often, so a [`Consumer`](super::Consumer)'s
    /// [maximum](super::Consumer::max_deliveries) cannot apply.
    pub fn classic_queues(self) -> Self {
        self.changed(|settings| settings.quorum = false)
    }

    /// Sends what consumers reject (poison, and messages out of
    /// deliveries) to this exchange, with their routing key: it is declared
    /// (a durable topic exchange, like the transport's own), and the group
    /// queues this transport declares carry `x-dead-letter-exchange`. A
    /// transport on that exchange (`.exchange(name)`) subscribes to what
    /// was dead-lettered.
    pub fn dead_letter_exchange(self, exchange: impl Into<String>) -> Self {
        let exchange = exchange.into();
        self.changed(|settings| settings.dead_letter_exchange = Some(exchange))
    }

    /// The publishing channel, connecting first (and declaring the
    /// exchanges) if there is no live one.
    async fn channel(&self) -> Result<(Arc<Connection>, Channel), lapin::Error> {
        let mut link = self.shared.link.lock().await;
        if let Some((connection, channel)) = link.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok((Arc::clone(connection), channel.clone()));
            }
        }
        *link = None;
        let settings = &self.shared.settings;
        let connection =
            Arc::new(Connection::connect(&settings.uri, ConnectionProperties::default()).await?);
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let exchanges = std::iter::once(&settings.exchange).chain(&settings.dead_letter_exchange);
        for exchange in exchanges {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: settings.durable,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        *link = Some((Arc::clone(&connection), channel.clone()));
        Ok((connection, channel))
    }

    /// Declares this transport's group queue for `subject` and binds it,
    /// so that messages published before its first member subscribes wait
    /// there. Without a queue group there is nothing durable to declare
    /// (each subscriber's queue comes with it): it declares the exchange.
    pub async fn declare(&self, subject: &str) -> Result<(), AmqpError> {
        let (connection, channel) = self.channel().await?;
        if self.shared.settings.group.is_some() {
            self.queue_for(&connection, &channel, subject).await?;
        }
        Ok(())
    }

    /// The queue a subscription to `subject` consumes: the reply queue
    /// itself, the group's queue, or a queue of its own, declared (unless
    /// it exists) and bound.
    async fn queue_for(
        &self,
        connection: &Connection,
        channel: &Channel,
        subject: &str,
    ) -> Result<String, lapin::Error> {
        let settings = &self.shared.settings;
        if is_direct(subject) {
            let options = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(subject.into(), options, FieldTable::default())
                .await?;
            return Ok(subject.to_owned());
        }
        let queue = match &settings.group {
            Some(group) => {
                let name = format!("{subject}.{group}");
                if !exists(connection, &name).await? {
                    let options = QueueDeclareOptions {
                        durable: settings.durable || settings.quorum,
                        ..QueueDeclareOptions::default()
                    };
                    channel
                        .queue_declare(name.as_str().into(), options, self.group_arguments())
                        .await?;
                }
                name
            }
            None => {
                let options = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                };
                let queue = channel
                    .queue_declare("".into(), options, FieldTable::default())
                    .await?;
                queue.name().to_string()
            }
        };
        channel
            .queue_bind(
                queue.as_str().into(),
                settings.exchange.as_str().into(),
                subject.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(queue)
    }

    fn group_arguments(&self) -> FieldTable {
        let settings = &self.shared.settings;
        let mut arguments = FieldTable::default();
        if settings.quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        if let Some(exchange) = &settings.dead_letter_exchange {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(exchange.as_str().into()),
            );
        }
        arguments
    }
}

/// Whether messages to `subject` go straight to the queue of that name
/// (through the default exchange): seawall's reply queues, and queues the
/// broker named.
fn is_direct(subject: &str) -> bool {
    subject.starts_with(REPLY_PREFIX) || subject.starts_with("amq.gen-")
}

/// Whether the queue `name` exists, asked on a channel of its own: the
/// broker closes a channel whose passive declaration fails.
async fn exists(connection: &Connection, name: &str) -> Result<bool, lapin::Error> {
    let probe = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = probe
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
        .is_ok();
    if found {
        let _ = probe.close(200, "OK".into()).await;
    }
    Ok(found)
}

/// The delivery (its payload taken out) holds what acknowledges it.
struct Acker(lapin::message::Delivery);

impl Acknowledge for Acker {
    fn settle(self: Box<Self>, decision: Decision) -> BoxFuture<Result<(), BoxError>> {
        let settling = Box::pin(async move {
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
        });
        // A connection lost without a word from the socket leaves an
        // acknowledgement waiting for ever; the broker redelivers the
        // message then, so it is unsettled, not stuck.
        Box::pin(async move {
            match tokio::time::timeout(SETTLE_TIMEOUT, settling).await {
                Ok(settled) => settled,
                Err(_) => Err("the broker did not take the decision in time".into()),
            }
        })
    }
}

/// How long telling the broker about a delivery may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a subscription looks whether its channel is still open: a
/// broker killed outright can leave lapin's consumer waiting without an
/// error.
const LIVENESS: Duration = Duration::from_millis(250);

/// Resolves once `channel` is no longer connected.
async fn lost(channel: &Channel) {
    while channel.status().connected() {
        tokio::time::sleep(LIVENESS).await;
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

/// How many times the broker delivered this: a quorum queue counts
/// earlier deliveries in `x-delivery-count`; a classic queue only says
/// whether there were any.
fn deliveries_of(delivery: &lapin::message::Delivery) -> Option<u32> {
    let earlier = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    let earlier = match earlier {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::LongUInt(n)) => Some(n),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::ShortUInt(n)) => Some(u32::from(n)),
        Some(_) => None,
        None if delivery.redelivered => None,
        None => Some(0),
    };
    earlier.map(|n| n.saturating_add(1))
}

fn message(delivery: &mut lapin::message::Delivery) -> Message {
    let deliveries = deliveries_of(delivery);
    let properties = &delivery.properties;
    Message {
        deliveries,
        redelivered: delivery.redelivered,
        no_responders: false,
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
            let settings = &transport.shared.settings;
            let mut properties = BasicProperties::default();
            if settings.durable {
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
                        if is_direct(&message.subject) {
                            "".into()
                        } else {
                            settings.exchange.as_str().into()
                        },
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
                .basic_qos(
                    transport.shared.settings.prefetch,
                    BasicQosOptions::default(),
                )
                .await?;
            let queue = transport.queue_for(&connection, &channel, &subject).await?;
            let replies = subject.starts_with(REPLY_PREFIX);
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
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
                    let next = tokio::select! {
                        next = consumer.next() => next,
                        () = lost(&channel) => {
                            tracing::debug!(target: "seawall::messaging", "AMQP subscription ended: its channel is gone");
                            return None;
                        }
                    };
                    match next {
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
