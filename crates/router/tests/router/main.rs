//! deskmail-router against real RabbitMQ, a real configd, and SQLite and PostgreSQL stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic: that is the failure

mod corpus;
mod dispatch;
mod exactly_once;
mod fuzz;
mod harness;
mod loops;
mod observability;
mod process;
