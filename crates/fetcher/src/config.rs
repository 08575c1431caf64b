//! `fetcher.toml`: what the fetcher needs to start. The mailboxes come from configd.

use std::time::Duration;

use deskmail_config::{ConfigServiceConfig, MetricsConfig, Validate, prefixed};
use deskmail_mq::AmqpConfig;
use deskmail_runtime::{DaemonConfig, LogConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Logging. See `config/fetcher.example.toml`.
    #[serde(default)]
    pub log: LogConfig,
    /// RabbitMQ connection and topology prefix.
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// How to reach configd. `token` is required.
    pub config_service: ConfigServiceConfig,
    /// The `/metrics`, `/healthz`, `/readyz` listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Polling limits.
    #[serde(default)]
    pub fetch: FetchConfig,
    /// How long a poll in flight may take to finish after SIGTERM. Default `30s`.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `[fetch]`: limits that apply to every inbound mailbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Most mailboxes polled at the same time. Default 64.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_mailboxes: u32,
    /// Most mails taken from one mailbox in one poll, so one flooded box cannot starve the
    /// others. Default 500.
    #[serde(default = "default_per_poll")]
    pub max_messages_per_poll: u32,
    /// Time for one IMAP/POP3 command to be answered. Default `60s`.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long a fetch lease lasts at configd; renewed every third of it. A fetcher that
    /// dies has its mailboxes taken over by another within about this long. Default `30s`,
    /// at least `5s`.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// First wait after a failed poll; doubled on each further failure. Default `1s`.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between retries of a failing mailbox. Default `5m`.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Most bytes of mail fetched but not yet confirmed by the broker, over all mailboxes
    /// together; bounds the fetcher's memory. A single mail larger than this is fetched
    /// alone. Default 33554432 (32 MiB).
    #[serde(default = "default_inflight_bytes")]
    pub max_inflight_bytes: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_concurrent_mailboxes: default_concurrency(),
            max_messages_per_poll: default_per_poll(),
            command_timeout: default_command_timeout(),
            lease_ttl: default_lease_ttl(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            max_inflight_bytes: default_inflight_bytes(),
        }
    }
}

fn default_concurrency() -> u32 {
    64
}
fn default_per_poll() -> u32 {
    500
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_inflight_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}

impl Validate for FetchConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.max_concurrent_mailboxes == 0 {
            problems.push(("max_concurrent_mailboxes".into(), "must be at least 1".into()));
        }
        if self.max_messages_per_poll == 0 {
            problems.push(("max_messages_per_poll".into(), "must be at least 1".into()));
        }
        if self.command_timeout.is_zero() {
            problems.push(("command_timeout".into(), "must be more than 0s".into()));
        }
        if self.lease_ttl < Duration::from_secs(5) {
            problems.push(("lease_ttl".into(), "must be at least 5s".into()));
        }
        if self.retry_initial.is_zero() {
            problems.push(("retry_initial".into(), "must be more than 0s".into()));
        }
        if self.retry_max < self.retry_initial {
            problems.push(("retry_max".into(), "must not be less than retry_initial".into()));
        }
        if self.max_inflight_bytes < 65_536 {
            problems.push(("max_inflight_bytes".into(), "must be at least 65536".into()));
        }
        problems
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = prefixed("log", self.log.validate());
        problems.extend(prefixed("amqp", self.amqp.validate()));
        problems.extend(prefixed("config_service", self.config_service.validate()));
        problems.extend(prefixed("metrics", self.metrics.validate()));
        problems.extend(prefixed("fetch", self.fetch.validate()));
        problems
    }
}

impl DaemonConfig for Config {
    fn log_mut(&mut self) -> &mut LogConfig {
        &mut self.log
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/fetcher.example.toml");
        let config: Config = deskmail_config::load(Some(&path)).unwrap();
        assert_eq!(config.config_service.token.expose(), "change-me-daemon-token");
        assert!(config.metrics.port.is_some());
    }
}
