//! configd against real stores (SQLite and PostgreSQL), real gRPC clients, real mail servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic: that is the failure

mod fuzz_sweep;
mod harness;
mod leases;
mod mailboxes;
mod observability;
mod process;
mod python;
mod resources;
mod rotation;
