//! Consuming one queue with manual acknowledgements.
//!
//! Two ways to use a [`Consumer`]: [`Consumer::run`] (see `run.rs`) drives a handler that
//! returns a [`crate::Disposition`] per message, with batched acks and a graceful stop; or
//! [`Consumer::next_delivery`] plus an [`Acker`] for callers with their own loop (e.g. the
//! router commits 100 mails in one transaction, then `ack_up_to` the last tag).

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};
use tracing::{info, warn};

use crate::delivery::Delivery;
use crate::error::MqError;
use crate::publisher::Publisher;
use crate::topology::{DEAD_AT_HEADER, DeadLetterTarget, ERROR_HEADER};

/// Default prefetch (`basic.qos`), in messages.
pub const DEFAULT_PREFETCH: u16 = 256;
/// Default number of acks [`Consumer::run`] collects before one `multiple` ack.
pub const DEFAULT_ACK_BATCH: usize = 64;

/// What to consume and how.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Queue name.
    pub queue: String,
    /// Unacked deliveries the broker may push to this consumer (> 0).
    pub prefetch: u16,
    /// Acks collected before [`Consumer::run`] sends one `basic.ack multiple` (>= 1).
    pub ack_batch: usize,
    /// Where [`crate::Disposition::DeadLetter`] publishes (`<p>.dead` + `inbound`/`outbound`).
    pub dead_letter: DeadLetterTarget,
}

impl ConsumerOptions {
    /// Defaults: prefetch 256, acks batched by 64.
    pub fn new(queue: impl Into<String>, dead_letter: DeadLetterTarget) -> ConsumerOptions {
        ConsumerOptions {
            queue: queue.into(),
            prefetch: DEFAULT_PREFETCH,
            ack_batch: DEFAULT_ACK_BATCH,
            dead_letter,
        }
    }
    /// Sets the prefetch (0 is raised to 1).
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> ConsumerOptions {
        self.prefetch = prefetch.max(1);
        self
    }
    /// Sets the ack batch (0 is raised to 1).
    #[must_use]
    pub fn ack_batch(mut self, n: usize) -> ConsumerOptions {
        self.ack_batch = n.max(1);
        self
    }
}

/// A consumer of one queue on its own channel, manual acks.
#[derive(Debug)]
pub struct Consumer {
    pub(crate) channel: Channel,
    pub(crate) stream: lapin::Consumer,
    pub(crate) queue: Arc<str>,
    pub(crate) dead: Publisher,
    pub(crate) dead_letter: DeadLetterTarget,
    pub(crate) ack_batch: usize,
    pub(crate) cancelled: bool,
}

impl Consumer {
    /// Opens a channel, sets the prefetch and starts consuming `opts.queue`. Dead-letters go
    /// out through a second, confirm-mode channel of the same connection.
    pub async fn new(conn: &Connection, opts: ConsumerOptions) -> Result<Consumer, MqError> {
        let channel = conn
            .create_channel()
            .await
            .map_err(|source| MqError::Amqp { op: "channel.open", source: Box::new(source) })?;
        channel
            .basic_qos(opts.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|source| MqError::Amqp { op: "basic.qos", source: Box::new(source) })?;
        let dead = Publisher::new(conn).await?;
        let queue = crate::message::short("queue", &opts.queue)?;
        let stream = channel
            .basic_consume(queue, "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|source| MqError::Amqp { op: "basic.consume", source: Box::new(source) })?;
        info!(queue = %opts.queue, prefetch = opts.prefetch, consumer_tag = %stream.tag(), "Consuming.");
        Ok(Consumer {
            channel,
            stream,
            queue: Arc::from(opts.queue.as_str()),
            dead,
            dead_letter: opts.dead_letter,
            ack_batch: opts.ack_batch.max(1),
            cancelled: false,
        })
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; `None` once the consumer was cancelled (by [`Consumer::cancel`] and
    /// the prefetched deliveries are drained, or by the broker).
    pub async fn next_delivery(&mut self) -> Option<Result<Delivery, MqError>> {
        Some(match self.stream.next().await? {
            Ok(d) => Ok(Delivery::from_lapin(d, &self.queue)),
            Err(source) => Err(MqError::Amqp { op: "basic.deliver", source: Box::new(source) }),
        })
    }

    /// Acknowledges deliveries of this consumer by tag.
    pub fn acker(&self) -> Acker {
        Acker { channel: self.channel.clone() }
    }

    /// Publishes a copy of `delivery` (body, properties, headers; minus `x-delivery-count`)
    /// to the dead-letter exchange with headers `x-deskmail-error: reason` and
    /// `x-deskmail-dead-at` (now, Unix seconds), waits for the
    /// broker's confirm, then acks the original. If the publish fails the original is left
    /// unacked and the error returned: nack it with requeue.
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), MqError> {
        self.publish_dead_letter(delivery, reason).await?;
        self.acker().ack(delivery.delivery_tag()).await
    }

    pub(crate) async fn publish_dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), MqError> {
        let mut headers = delivery.properties().headers().clone().unwrap_or_default();
        let mut inner = headers.inner().clone();
        inner.remove("x-delivery-count");
        headers = FieldTable::from(inner);
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(LongString::from(reason.as_bytes())));
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        headers.insert(DEAD_AT_HEADER.into(), AMQPValue::Timestamp(now));
        let props = delivery.properties().clone().with_headers(headers).with_delivery_mode(2);
        let target = &self.dead_letter;
        self.dead
            .publish_raw(target.exchange.clone(), target.routing_key.clone(), delivery.payload(), props)
            .await?
            .await
    }

    /// Stops new deliveries (`basic.cancel`). Deliveries already prefetched still come out of
    /// [`Consumer::next_delivery`], then it returns `None`.
    pub async fn cancel(&mut self) -> Result<(), MqError> {
        if self.cancelled {
            return Ok(());
        }
        self.cancelled = true;
        self.channel
            .basic_cancel(self.stream.tag(), BasicCancelOptions::default())
            .await
            .map_err(|source| MqError::Amqp { op: "basic.cancel", source: Box::new(source) })
    }

    /// Closes both channels; the broker requeues whatever is still unacked.
    pub async fn close(self) -> Result<(), MqError> {
        if let Err(e) = self.dead.close().await {
            warn!(error = %e, "Closing the dead-letter channel failed.");
        }
        if !self.channel.status().connected() {
            return Ok(());
        }
        self.channel
            .close(200, "consumer closed".into())
            .await
            .map_err(|source| MqError::Amqp { op: "channel.close", source: Box::new(source) })
    }
}

/// Acknowledges deliveries by tag on the consumer's channel. Clone freely.
#[derive(Debug, Clone)]
pub struct Acker {
    channel: Channel,
}

impl Acker {
    /// Acks one delivery.
    pub async fn ack(&self, tag: u64) -> Result<(), MqError> {
        self.send_ack(tag, false).await
    }
    /// Acks every unacked delivery up to and including `tag` (`multiple`).
    pub async fn ack_up_to(&self, tag: u64) -> Result<(), MqError> {
        self.send_ack(tag, true).await
    }
    /// Nacks one delivery; `requeue` puts it back (counts toward the delivery limit), otherwise
    /// the queue dead-letters it with reason `rejected`.
    pub async fn nack(&self, tag: u64, requeue: bool) -> Result<(), MqError> {
        self.send_nack(tag, false, requeue).await
    }
    /// Nacks every unacked delivery up to and including `tag`.
    pub async fn nack_up_to(&self, tag: u64, requeue: bool) -> Result<(), MqError> {
        self.send_nack(tag, true, requeue).await
    }

    async fn send_ack(&self, tag: u64, multiple: bool) -> Result<(), MqError> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple })
            .await
            .map_err(|source| MqError::Amqp { op: "basic.ack", source: Box::new(source) })
    }

    async fn send_nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), MqError> {
        self.channel
            .basic_nack(tag, BasicNackOptions { multiple, requeue })
            .await
            .map_err(|source| MqError::Amqp { op: "basic.nack", source: Box::new(source) })
    }
}
