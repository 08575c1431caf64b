//! deskmail-fetcher against real services: RabbitMQ, an in-process configd, and the test
//! kit's private Dovecot + Postfix. The fetcher runs as its own process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic: that is the failure

mod drain;
mod failures;
mod harness;
mod idle;
mod leases;
mod lifecycle;
mod oauth2;
mod observability;
mod oversized;
mod protocols;
