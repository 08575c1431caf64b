//! A received message, cheap to clone and share with a handler.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};

/// One delivery from a queue. Cloning shares the body (no copy). `Debug` shows the body's size,
/// never its content. Acknowledge through the [`crate::Consumer`] that produced it.
#[derive(Clone)]
pub struct Delivery(Arc<Inner>);

struct Inner {
    tag: u64,
    exchange: ShortString,
    routing_key: ShortString,
    redelivered: bool,
    properties: BasicProperties,
    body: Bytes,
    queue: Arc<str>,
}

impl Delivery {
    pub(crate) fn from_lapin(d: lapin::message::Delivery, queue: &Arc<str>) -> Delivery {
        let lapin::message::Delivery {
            delivery_tag,
            exchange,
            routing_key,
            redelivered,
            properties,
            mut data,
            ..
        } = d;
        // lapin grows a body of several frames by doubling: give the slack back (a shrink is
        // done in place, or by `mremap` for a big block, not by a copy).
        data.shrink_to_fit();
        Delivery(Arc::new(Inner {
            tag: delivery_tag,
            exchange,
            routing_key,
            redelivered,
            properties,
            body: Bytes::from(data),
            queue: queue.clone(),
        }))
    }

    /// The channel-scoped delivery tag (for [`crate::Acker`]).
    pub fn delivery_tag(&self) -> u64 {
        self.0.tag
    }
    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.0.body
    }
    /// The body as shared bytes (no copy).
    pub fn payload(&self) -> Bytes {
        self.0.body.clone()
    }
    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.0.queue
    }
    /// The exchange it was published to (empty for the default exchange).
    pub fn exchange(&self) -> &str {
        self.0.exchange.as_str()
    }
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.0.routing_key.as_str()
    }
    /// Whether the broker delivered it before (to any consumer).
    pub fn redelivered(&self) -> bool {
        self.0.redelivered
    }
    /// Earlier deliveries of this message: the quorum queue's `x-delivery-count` header,
    /// absent (0) on the first delivery. Each requeue and each consumer that went away holding
    /// it adds one; at the queue's `x-delivery-limit` it is dead-lettered.
    pub fn delivery_count(&self) -> u64 {
        self.header_i64("x-delivery-count").and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
    }
    /// The `message_id` property.
    pub fn message_id(&self) -> Option<&str> {
        self.0.properties.message_id().as_ref().map(ShortString::as_str)
    }
    /// The `correlation_id` property.
    pub fn correlation_id(&self) -> Option<&str> {
        self.0.properties.correlation_id().as_ref().map(ShortString::as_str)
    }
    /// The `content_type` property.
    pub fn content_type(&self) -> Option<&str> {
        self.0.properties.content_type().as_ref().map(ShortString::as_str)
    }
    /// The `timestamp` property (Unix seconds).
    pub fn timestamp(&self) -> Option<u64> {
        *self.0.properties.timestamp()
    }
    /// All AMQP properties, headers included.
    pub fn properties(&self) -> &BasicProperties {
        &self.0.properties
    }
    /// A string header (short or long string, UTF-8), `None` if absent or of another type.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        match self.header(name)? {
            AMQPValue::ShortString(s) => Some(s.as_str()),
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }
    /// An integer header of any width, `None` if absent or not an integer.
    pub fn header_i64(&self, name: &str) -> Option<i64> {
        Some(match self.header(name)? {
            AMQPValue::ShortShortInt(v) => i64::from(*v),
            AMQPValue::ShortShortUInt(v) => i64::from(*v),
            AMQPValue::ShortInt(v) => i64::from(*v),
            AMQPValue::ShortUInt(v) => i64::from(*v),
            AMQPValue::LongInt(v) => i64::from(*v),
            AMQPValue::LongUInt(v) => i64::from(*v),
            AMQPValue::LongLongInt(v) => *v,
            AMQPValue::Timestamp(v) => i64::try_from(*v).ok()?,
            _ => return None,
        })
    }
    /// A boolean header.
    pub fn header_bool(&self, name: &str) -> Option<bool> {
        match self.header(name)? {
            AMQPValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }
    /// A raw header value.
    pub fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.0.properties.headers().as_ref()?.inner().get(name)
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("tag", &self.0.tag)
            .field("queue", &self.queue())
            .field("routing_key", &self.routing_key())
            .field("message_id", &self.message_id())
            .field("redelivered", &self.0.redelivered)
            .field("body_len", &self.0.body.len())
            .finish()
    }
}
