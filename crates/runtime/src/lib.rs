//! What every deskmail daemon needs around its work: logging set-up ([`init_tracing`]),
//! the shutdown signal ([`shutdown_on_signals`]) and the logging section of its config
//! ([`LogConfig`]) and the shared `main` of every daemon ([`daemon_main`]: arguments, config
//! load and `--check-config`, exit codes). Owns no domain logic; depends only on `deskmail-config`.

mod daemon;
mod log;
pub mod notify;
mod shutdown;

pub use daemon::{DaemonArgs, DaemonConfig, daemon_main};
pub use log::{LogConfig, LogFormat, init_tracing};
pub use shutdown::{shutdown_on_signals, wait_for_shutdown};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
