//! What a publisher sends.

use std::fmt;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::error::MqError;

/// A header value: string, integer or boolean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Sent as an AMQP long string.
    Str(String),
    /// Sent as a signed 64-bit integer.
    Int(i64),
    /// Sent as a boolean.
    Bool(bool),
}

impl From<&str> for HeaderValue {
    fn from(v: &str) -> Self {
        HeaderValue::Str(v.to_owned())
    }
}
impl From<String> for HeaderValue {
    fn from(v: String) -> Self {
        HeaderValue::Str(v)
    }
}
impl From<i64> for HeaderValue {
    fn from(v: i64) -> Self {
        HeaderValue::Int(v)
    }
}
impl From<bool> for HeaderValue {
    fn from(v: bool) -> Self {
        HeaderValue::Bool(v)
    }
}

impl HeaderValue {
    pub(crate) fn to_amqp(&self) -> AMQPValue {
        match self {
            HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
            HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
            HeaderValue::Bool(b) => AMQPValue::Boolean(*b),
        }
    }
}

/// A persistent message for [`crate::Publisher`]. `Debug` shows the payload's size, never
/// its content.
#[derive(Clone, Default)]
pub struct OutgoingMessage {
    /// Target exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Body (cheap to clone; the publisher never copies it before lapin frames it).
    pub payload: Bytes,
    /// `content_type` property, e.g. `message/rfc822`, `application/json`.
    pub content_type: Option<String>,
    /// `message_id` property: the source id of raw mail, the job id of outbound jobs.
    pub message_id: Option<String>,
    /// `correlation_id` property.
    pub correlation_id: Option<String>,
    /// Application headers.
    pub headers: Vec<(String, HeaderValue)>,
    /// `timestamp` property, seconds since the Unix epoch.
    pub timestamp: Option<u64>,
}

impl OutgoingMessage {
    /// A message with no properties but persistence.
    pub fn new(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> OutgoingMessage {
        OutgoingMessage {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            payload: payload.into(),
            ..OutgoingMessage::default()
        }
    }

    /// Sets `content_type`.
    #[must_use]
    pub fn content_type(mut self, v: impl Into<String>) -> Self {
        self.content_type = Some(v.into());
        self
    }

    /// Sets `message_id`.
    #[must_use]
    pub fn message_id(mut self, v: impl Into<String>) -> Self {
        self.message_id = Some(v.into());
        self
    }

    /// Sets `correlation_id`.
    #[must_use]
    pub fn correlation_id(mut self, v: impl Into<String>) -> Self {
        self.correlation_id = Some(v.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Sets `timestamp` (Unix seconds).
    #[must_use]
    pub fn timestamp(mut self, unix_seconds: u64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }

    /// The AMQP properties: persistent (delivery mode 2) plus whatever is set.
    pub(crate) fn properties(&self) -> Result<BasicProperties, MqError> {
        let mut p = BasicProperties::default().with_delivery_mode(2);
        if let Some(v) = &self.content_type {
            p = p.with_content_type(short("content_type", v)?);
        }
        if let Some(v) = &self.message_id {
            p = p.with_message_id(short("message_id", v)?);
        }
        if let Some(v) = &self.correlation_id {
            p = p.with_correlation_id(short("correlation_id", v)?);
        }
        if let Some(v) = self.timestamp {
            p = p.with_timestamp(v);
        }
        if !self.headers.is_empty() {
            let mut table = FieldTable::default();
            for (k, v) in &self.headers {
                table.insert(short("header name", k)?, v.to_amqp());
            }
            p = p.with_headers(table);
        }
        Ok(p)
    }
}

/// A short string (at most 255 bytes), as an error instead of lapin's panic.
pub(crate) fn short(what: &'static str, v: &str) -> Result<ShortString, MqError> {
    ShortString::try_new(v).map_err(|e| MqError::Invalid { what, reason: e.to_string() })
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("payload_len", &self.payload.len())
            .field("content_type", &self.content_type)
            .field("message_id", &self.message_id)
            .field("correlation_id", &self.correlation_id)
            .field("headers", &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_persistent_and_typed() {
        let m = OutgoingMessage::new("x", "k", &b"body"[..])
            .message_id("id-1")
            .content_type("application/json")
            .header("x-a", "s")
            .header("x-n", 5i64)
            .header("x-b", true);
        let p = m.properties().unwrap();
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.message_id().as_ref().map(ShortString::as_str), Some("id-1"));
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(h.get("x-n"), Some(&AMQPValue::LongLongInt(5)));
        assert_eq!(h.get("x-b"), Some(&AMQPValue::Boolean(true)));
        assert!(!format!("{m:?}").contains("body"));
    }

    #[test]
    fn over_long_short_strings_are_errors_not_panics() {
        let m = OutgoingMessage::new("x", "k", Bytes::new()).message_id("a".repeat(256));
        assert!(matches!(m.properties(), Err(MqError::Invalid { what: "message_id", .. })));
    }
}
