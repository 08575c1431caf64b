//! deskmail-sender against real services: RabbitMQ (a vhost per test), configd (in-process,
//! SQLite), and the test kit's private Postfix and Dovecot. Mail is read back over IMAP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic: that is the failure

mod chained;
mod cli;
mod crash;
mod delivery;
mod failures;
mod harness;
mod integrator;
mod lifecycle;
mod malformed;
mod nagle;
mod observability;
mod resolution;
mod schema;
mod sentlog;
