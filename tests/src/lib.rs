//! deskmail's end-to-end suite: fixtures that run every daemon as its own process against
//! real RabbitMQ, PostgreSQL, Dovecot and Postfix, used by the `e2e` test binary and the
//! `pipeline` benchmark.
//!
//! - [`system::System`]: `scripts/run.sh` (the entry point of `make run`) in a directory, a
//!   vhost and a port range of its own.
//! - [`desk::Desk`]: configd, fetcher, router (PostgreSQL) and sender as processes, configured
//!   over gRPC, with a private mail stack.
//!
//! Test support only: it panics on failure, which is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod desk;
pub mod system;
