//! Every exchange, queue and binding of deskmail, named from the configured prefix
//! (see the RabbitMQ topology table in `docs/design.md`), and their idempotent declaration.
//!
//! Queues are durable quorum queues. The broker never changes an existing queue's arguments:
//! re-declaring with the same arguments succeeds, with different ones (another delivery limit,
//! another retry delay) it closes the channel with `406 PRECONDITION_FAILED - inequivalent arg
//! ...`, surfaced as [`MqError::Declare`] with the queue name and the broker's text. Migrate by
//! deleting the (drained) queue or with a policy.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use tracing::info;

use crate::config::{AmqpConfig, valid_prefix};
use crate::error::MqError;

/// Routing keys of the design table.
pub mod routing_keys {
    /// Raw inbound mail, `<p>.inbound` -> `<p>.inbound.raw`.
    pub const MAIL_RAW: &str = "mail.raw";
    /// Outbound jobs, `<p>.outbound` -> `<p>.outbound.jobs`.
    pub const MAIL_SEND: &str = "mail.send";
    /// Dead inbound mail, `<p>.dead` -> `<p>.inbound.dead`.
    pub const DEAD_INBOUND: &str = "inbound";
    /// Dead outbound jobs, `<p>.dead` -> `<p>.outbound.dead`.
    pub const DEAD_OUTBOUND: &str = "outbound";
    /// Event: a ticket was created (`<p>.events`, topic).
    pub const TICKET_CREATED: &str = "ticket.created";
    /// Event: a follow-up article was added.
    pub const TICKET_FOLLOWUP: &str = "ticket.followup";
    /// Event: an outbound job was sent.
    pub const MAIL_SENT: &str = "mail.sent";
    /// Event: an outbound job failed for good.
    pub const MAIL_FAILED: &str = "mail.failed";
    /// Event: a mailbox's status changed.
    pub const MAILBOX_STATUS: &str = "mailbox.status";
}

/// Header carrying why a message was dead-lettered.
pub const ERROR_HEADER: &str = "x-deskmail-error";

/// Header with the time (AMQP timestamp, Unix seconds) a consumer dead-lettered a message.
pub const DEAD_AT_HEADER: &str = "x-deskmail-dead-at";

/// Retry delays of the outbound retry queues: 30 s, 2 min, 10 min, 1 h.
pub const DEFAULT_RETRY_DELAYS: [Duration; 4] =
    [Duration::from_secs(30), Duration::from_secs(120), Duration::from_secs(600), Duration::from_secs(3600)];

/// Where a message goes when a consumer dead-letters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    /// `<p>.dead`.
    pub exchange: String,
    /// `inbound` or `outbound`.
    pub routing_key: String,
}

/// One TTL queue that holds outbound jobs for `delay`, then dead-letters them back to
/// `<p>.outbound` with routing key `mail.send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryQueue {
    /// How long a job waits.
    pub delay: Duration,
    /// `30s`, `2m`, `10m`, `1h`, ...
    pub suffix: String,
    /// `<p>.outbound.retry.<suffix>`.
    pub queue: String,
    /// `outbound.<suffix>`, on `<p>.retry`.
    pub routing_key: String,
}

/// A queue with its declaration arguments and its binding.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// `x-queue-type`, `x-delivery-limit`, dead-lettering, TTL, ...
    pub arguments: FieldTable,
    /// Exchange it is bound to.
    pub exchange: String,
    /// Binding key.
    pub routing_key: String,
}

/// All names of the deskmail topology for one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
    retries: Vec<RetryQueue>,
}

impl Topology {
    /// The topology for `prefix` (`[A-Za-z0-9_.-]+`), delivery limit 20, default retry delays.
    pub fn new(prefix: &str) -> Result<Topology, MqError> {
        if !valid_prefix(prefix) || prefix.len() > 200 {
            return Err(MqError::Invalid {
                what: "prefix",
                reason: format!("{prefix:?} must match [A-Za-z0-9_.-]{{1,200}}"),
            });
        }
        let t = Topology { prefix: prefix.to_owned(), delivery_limit: 20, retries: Vec::new() };
        t.with_retry_delays(&DEFAULT_RETRY_DELAYS)
    }

    /// From `[amqp]`: prefix and delivery limit.
    pub fn from_config(cfg: &AmqpConfig) -> Result<Topology, MqError> {
        Ok(Topology::new(&cfg.prefix)?.with_delivery_limit(cfg.delivery_limit))
    }

    /// Sets `x-delivery-limit` of the work queues (deliveries before dead-lettering).
    #[must_use]
    pub fn with_delivery_limit(mut self, limit: u32) -> Topology {
        self.delivery_limit = limit;
        self
    }

    /// Replaces the retry delays (each between 1 ms and ~24 days, the TTL is an `i32` of ms).
    pub fn with_retry_delays(mut self, delays: &[Duration]) -> Result<Topology, MqError> {
        let mut retries = Vec::with_capacity(delays.len());
        for &delay in delays {
            let ms = delay.as_millis();
            if ms == 0 || ms > i32::MAX as u128 {
                return Err(MqError::Invalid {
                    what: "retry delay",
                    reason: format!("{delay:?} out of range"),
                });
            }
            let suffix = delay_suffix(delay);
            retries.push(RetryQueue {
                delay,
                queue: format!("{}.outbound.retry.{suffix}", self.prefix),
                routing_key: format!("outbound.{suffix}"),
                suffix,
            });
        }
        self.retries = retries;
        Ok(self)
    }

    /// The name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The work queues' delivery limit.
    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }
    /// `<p>.inbound` (direct).
    pub fn inbound_exchange(&self) -> String {
        format!("{}.inbound", self.prefix)
    }
    /// `<p>.outbound` (direct).
    pub fn outbound_exchange(&self) -> String {
        format!("{}.outbound", self.prefix)
    }
    /// `<p>.retry` (direct).
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    /// `<p>.dead` (direct).
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// `<p>.events` (topic).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// `<p>.inbound.raw`.
    pub fn inbound_queue(&self) -> String {
        format!("{}.inbound.raw", self.prefix)
    }
    /// `<p>.outbound.jobs`.
    pub fn outbound_queue(&self) -> String {
        format!("{}.outbound.jobs", self.prefix)
    }
    /// `<p>.inbound.dead`.
    pub fn inbound_dead_queue(&self) -> String {
        format!("{}.inbound.dead", self.prefix)
    }
    /// `<p>.outbound.dead`.
    pub fn outbound_dead_queue(&self) -> String {
        format!("{}.outbound.dead", self.prefix)
    }
    /// The outbound retry queues, shortest delay first as given.
    pub fn retry_queues(&self) -> &[RetryQueue] {
        &self.retries
    }
    /// Dead-letter target of `<p>.inbound.raw` consumers.
    pub fn inbound_dead_letter(&self) -> DeadLetterTarget {
        DeadLetterTarget {
            exchange: self.dead_exchange(),
            routing_key: routing_keys::DEAD_INBOUND.to_owned(),
        }
    }
    /// Dead-letter target of `<p>.outbound.jobs` consumers.
    pub fn outbound_dead_letter(&self) -> DeadLetterTarget {
        DeadLetterTarget {
            exchange: self.dead_exchange(),
            routing_key: routing_keys::DEAD_OUTBOUND.to_owned(),
        }
    }

    /// Exchanges with their kinds.
    pub fn exchanges(&self) -> Vec<(String, ExchangeKind)> {
        vec![
            (self.inbound_exchange(), ExchangeKind::Direct),
            (self.outbound_exchange(), ExchangeKind::Direct),
            (self.retry_exchange(), ExchangeKind::Direct),
            (self.dead_exchange(), ExchangeKind::Direct),
            (self.events_exchange(), ExchangeKind::Topic),
        ]
    }

    /// Queues with their arguments and bindings, in declaration order.
    pub fn queues(&self) -> Vec<QueueSpec> {
        let limit = i32::try_from(self.delivery_limit).unwrap_or(i32::MAX);
        let work = |name: String, exchange: String, rk: &str, dead_rk: &str| {
            let mut args = quorum();
            args.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
            at_least_once_dlx(&mut args, &self.dead_exchange(), dead_rk);
            QueueSpec { name, arguments: args, exchange, routing_key: rk.to_owned() }
        };
        let mut queues = vec![
            work(
                self.inbound_queue(),
                self.inbound_exchange(),
                routing_keys::MAIL_RAW,
                routing_keys::DEAD_INBOUND,
            ),
            work(
                self.outbound_queue(),
                self.outbound_exchange(),
                routing_keys::MAIL_SEND,
                routing_keys::DEAD_OUTBOUND,
            ),
        ];
        for r in &self.retries {
            let mut args = quorum();
            let ttl = i32::try_from(r.delay.as_millis()).unwrap_or(i32::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
            at_least_once_dlx(&mut args, &self.outbound_exchange(), routing_keys::MAIL_SEND);
            queues.push(QueueSpec {
                name: r.queue.clone(),
                arguments: args,
                exchange: self.retry_exchange(),
                routing_key: r.routing_key.clone(),
            });
        }
        for (name, rk) in [
            (self.inbound_dead_queue(), routing_keys::DEAD_INBOUND),
            (self.outbound_dead_queue(), routing_keys::DEAD_OUTBOUND),
        ] {
            queues.push(QueueSpec {
                name,
                arguments: quorum(),
                exchange: self.dead_exchange(),
                routing_key: rk.to_owned(),
            });
        }
        queues
    }

    /// Declares every exchange, queue and binding; idempotent. Fails on the first refusal with
    /// the entity's name and the broker's reply (the broker closes the channel after it).
    pub async fn declare(&self, channel: &Channel) -> Result<(), MqError> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        for (name, kind) in self.exchanges() {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|source| MqError::Declare {
                    kind: "exchange",
                    name: name.clone(),
                    source: Box::new(source),
                })?;
        }
        let queues = self.queues();
        for q in &queues {
            let opts = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
            channel.queue_declare(q.name.as_str().into(), opts, q.arguments.clone()).await.map_err(
                |source| MqError::Declare { kind: "queue", name: q.name.clone(), source: Box::new(source) },
            )?;
            channel
                .queue_bind(
                    q.name.as_str().into(),
                    q.exchange.as_str().into(),
                    q.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| MqError::Declare {
                    kind: "binding",
                    name: format!("{} -[{}]-> {}", q.exchange, q.routing_key, q.name),
                    source: Box::new(source),
                })?;
        }
        info!(prefix = %self.prefix, queues = queues.len(), delivery_limit = self.delivery_limit, "Declared RabbitMQ topology.");
        Ok(())
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    args
}

/// The combination that really is at-least-once on RabbitMQ 3.10: without
/// `x-overflow=reject-publish` the broker silently falls back to at-most-once.
fn at_least_once_dlx(args: &mut FieldTable, exchange: &str, routing_key: &str) {
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    args.insert("x-dead-letter-exchange".into(), s(exchange));
    args.insert("x-dead-letter-routing-key".into(), s(routing_key));
    args.insert("x-dead-letter-strategy".into(), s("at-least-once"));
    args.insert("x-overflow".into(), s("reject-publish"));
}

/// `30s`, `2m`, `10m`, `1h`; `1500ms` when not whole seconds.
fn delay_suffix(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match s {
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("acme").unwrap();
        assert_eq!(t.inbound_queue(), "acme.inbound.raw");
        assert_eq!(t.outbound_queue(), "acme.outbound.jobs");
        assert_eq!(t.events_exchange(), "acme.events");
        let retry: Vec<(&str, &str)> =
            t.retry_queues().iter().map(|r| (r.queue.as_str(), r.routing_key.as_str())).collect();
        assert_eq!(
            retry,
            [
                ("acme.outbound.retry.30s", "outbound.30s"),
                ("acme.outbound.retry.2m", "outbound.2m"),
                ("acme.outbound.retry.10m", "outbound.10m"),
                ("acme.outbound.retry.1h", "outbound.1h"),
            ]
        );
        assert!(Topology::new("bad prefix").is_err());
        assert!(Topology::new("").is_err());
    }

    #[test]
    fn suffixes() {
        let cases = [(1, "1s"), (90, "90s"), (120, "2m"), (5400, "90m"), (7200, "2h")];
        for (secs, want) in cases {
            assert_eq!(delay_suffix(Duration::from_secs(secs)), want);
        }
        assert_eq!(delay_suffix(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn work_queue_arguments_are_integers() {
        let t = Topology::new("p").unwrap().with_delivery_limit(7);
        let q = &t.queues()[0];
        assert_eq!(q.arguments.inner().get("x-delivery-limit"), Some(&AMQPValue::LongInt(7)));
        let retry = &t.queues()[2];
        assert_eq!(retry.arguments.inner().get("x-message-ttl"), Some(&AMQPValue::LongInt(30_000)));
    }
}
