//! deskmail-mq owns deskmail's RabbitMQ plumbing on top of lapin: the `[amqp]` config, connecting
//! with backoff, the topology (every exchange and queue name, built from the configured prefix,
//! declared idempotently as durable quorum queues), a [`Publisher`] that counts a message as
//! sent only when the broker confirmed it, and a [`Consumer`] with manual, batched acks,
//! dead-lettering and a graceful stop. It must not depend on any other deskmail crate except
//! `deskmail-core`; daemons see lapin types only where they touch this crate.
//!
//! Logging: INFO on connect, declare and stop, WARN on retries and requeues, DEBUG per message.
//! Never payloads, never the password. Note that lapin itself logs a returned (unroutable)
//! message in full at WARN (target `lapin::returned_messages`): filter that target out.

mod config;
mod connection;
mod consumer;
mod delivery;
mod error;
mod message;
mod publisher;
mod run;
pub mod topology;

pub use config::{AmqpConfig, redact};
pub use connection::{connect, connect_and_declare, connect_until_cancelled};
pub use consumer::{Acker, Consumer, ConsumerOptions, DEFAULT_ACK_BATCH, DEFAULT_PREFETCH};
pub use delivery::Delivery;
pub use error::MqError;
pub use message::{HeaderValue, OutgoingMessage};
pub use publisher::{DEFAULT_PUBLISH_WINDOW, PendingConfirm, Publisher};
pub use run::{Disposition, RunReport};
pub use topology::{DeadLetterTarget, Topology};

/// lapin, re-exported so daemons and tests use the same version.
pub use lapin;
