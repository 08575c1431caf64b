//! deskmail end to end: every daemon as its own process, started the way an operator starts
//! them, against the real broker, database and mail servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod faults;
mod run_script;
mod the_loop;
