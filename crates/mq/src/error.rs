//! The crate's one error type.

use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// Everything that can go wrong talking to RabbitMQ. URLs in messages are always redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqError {
    /// The AMQP URL cannot be used (bad scheme, unparsable).
    #[error("invalid AMQP URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Connecting failed and the connect deadline passed.
    #[error("could not connect to RabbitMQ at {url} within {timeout:?} ({attempts} attempts): {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The overall deadline.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Box<lapin::Error>,
    },
    /// Connecting was still failing (or never finished) at the deadline, with no error to show.
    #[error(
        "could not connect to RabbitMQ at {url} within {timeout:?} ({attempts} attempts, the last one timed out)"
    )]
    ConnectTimeout {
        /// The URL, password redacted.
        url: String,
        /// The overall deadline.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The operation was cancelled through its `CancellationToken`.
    #[error("cancelled")]
    Cancelled,
    /// Declaring an exchange, queue or binding failed. A `406 PRECONDITION_FAILED -
    /// inequivalent arg ...` here means the entity exists with other arguments: the broker
    /// never changes an existing queue's arguments; delete it or migrate with a policy.
    #[error("declaring {kind} '{name}' failed: {source}")]
    Declare {
        /// `exchange`, `queue` or `binding`.
        kind: &'static str,
        /// The entity's name.
        name: String,
        /// Broker or connection error (carries the broker's reply text).
        #[source]
        source: Box<lapin::Error>,
    },
    /// A channel or connection operation failed (open, qos, consume, ack, close, ...).
    #[error("AMQP {op} failed: {source}")]
    Amqp {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<lapin::Error>,
    },
    /// The message could not be handed to the broker, or its confirm never came (channel or
    /// connection closed, e.g. `404 NOT_FOUND` for a missing exchange). Not confirmed: the
    /// broker may or may not hold it.
    #[error("publish to exchange '{exchange}' with routing key '{routing_key}' failed: {source}")]
    Publish {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// The underlying error.
        #[source]
        source: Box<lapin::Error>,
    },
    /// The broker refused responsibility for the message (`basic.nack`).
    #[error("broker nacked the message published to exchange '{exchange}' with routing key '{routing_key}'")]
    Nacked {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// No queue is bound for the routing key: the broker returned the mandatory message.
    #[error("message to exchange '{exchange}' with routing key '{routing_key}' is unroutable: {reply_text}")]
    Unroutable {
        /// Target exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// The broker's reply text (`NO_ROUTE`).
        reply_text: String,
    },
    /// The broker answered without a publisher confirm (the channel is not in confirm mode).
    #[error("no publisher confirm for the message to exchange '{exchange}' (confirm mode is off)")]
    NotConfirmed {
        /// Target exchange.
        exchange: String,
    },
    /// A name or header does not fit AMQP (e.g. a short string over 255 bytes).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The broker cancelled the consumer (queue deleted, node down) or the delivery stream ended.
    #[error("consumer on queue '{queue}' was cancelled by the broker")]
    ConsumerCancelled {
        /// The queue consumed.
        queue: String,
    },
}

impl MqError {
    /// True when retrying later (after reconnecting) may succeed: connection loss, broker
    /// restarts, nacks, timeouts. False for configuration and topology problems (missing
    /// exchange, inequivalent queue arguments, unroutable messages, access refused).
    pub fn is_transient(&self) -> bool {
        match self {
            // Bad credentials or a missing vhost are not going to fix themselves.
            MqError::Connect { source, .. } => !is_refused(source),
            MqError::ConnectTimeout { .. } | MqError::Nacked { .. } => true,
            MqError::ConsumerCancelled { .. } => true,
            MqError::Declare { source, .. }
            | MqError::Amqp { source, .. }
            | MqError::Publish { source, .. } => lapin_is_transient(source),
            MqError::InvalidUrl { .. }
            | MqError::Cancelled
            | MqError::Unroutable { .. }
            | MqError::NotConfirmed { .. }
            | MqError::Invalid { .. } => false,
        }
    }
}

/// The broker refused us (credentials, permissions, vhost): retrying cannot help.
pub(crate) fn is_refused(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if is_access_error(p.kind()))
        || matches!(e.kind(), lapin::ErrorKind::AuthProviderError(_))
}

fn is_access_error(kind: &AMQPErrorKind) -> bool {
    matches!(
        kind,
        AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH)
    )
}

/// Connection-level trouble is transient; channel errors the broker raised because of what we
/// asked (404, 406, 403) are not.
pub(crate) fn lapin_is_transient(e: &lapin::Error) -> bool {
    use lapin::ErrorKind as K;
    match e.kind() {
        K::IOError(_)
        | K::InvalidChannelState(..)
        | K::InvalidConnectionState(_)
        | K::InvalidChannel(_)
        | K::MissingHeartbeatError
        | K::ChannelsLimitReached => true,
        K::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(s) => matches!(s, AMQPSoftError::RESOURCELOCKED),
            AMQPErrorKind::Hard(h) => {
                matches!(
                    h,
                    AMQPHardError::CONNECTIONFORCED
                        | AMQPHardError::RESOURCEERROR
                        | AMQPHardError::INTERNALERROR
                )
            }
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPError;

    fn proto(kind: AMQPErrorKind) -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::new(kind, "x".into())).into()
    }

    #[test]
    fn transient_classification() {
        let io: lapin::Error = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        let cases = [
            (io, true),
            (proto(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)), true),
            (proto(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)), false),
            (proto(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)), false),
            (proto(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)), false),
        ];
        for (e, want) in cases {
            let err = MqError::Publish { exchange: "x".into(), routing_key: "k".into(), source: Box::new(e) };
            assert_eq!(err.is_transient(), want, "{err}");
        }
        let unroutable = MqError::Unroutable {
            exchange: "x".into(),
            routing_key: "k".into(),
            reply_text: "NO_ROUTE".into(),
        };
        assert!(!unroutable.is_transient());
        assert!(MqError::Nacked { exchange: "x".into(), routing_key: "k".into() }.is_transient());
    }
}
