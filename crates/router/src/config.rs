//! `router.toml`: what the router needs to start. Queues, addresses, filters and settings
//! come from configd.

use std::time::Duration;

use deskmail_config::{ConfigServiceConfig, DatabaseConfig, MetricsConfig, Validate, prefixed};
use deskmail_mq::AmqpConfig;
use deskmail_runtime::{DaemonConfig, LogConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Logging. See `config/router.example.toml`.
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
    /// The tickets store. Default a SQLite file `var/router.db`.
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    /// How long mail in flight may take to be committed after SIGTERM. Default `30s`.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most mails committed in one database transaction. Default 500. Keep
    /// `amqp.prefetch` at least twice this, so one batch is collected while another commits.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most bytes of raw mail in one batch; a batch ends at `batch_size` mails or this many
    /// bytes, whichever comes first. Bounds the memory of large mail. Default 4 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// How long a batch waits for more mail once it has one. Default `20ms`.
    #[serde(default = "default_batch_wait", with = "humantime_serde")]
    pub batch_wait: Duration,
    /// The largest raw mail stored, in bytes; larger mail is dead-lettered to
    /// `<prefix>.inbound.dead` with the reason. Default 50 MiB.
    #[serde(default = "default_max_mail_size")]
    pub max_mail_size: usize,
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::sqlite_in("var", "router")
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_batch_size() -> usize {
    500
}
fn default_batch_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_batch_wait() -> Duration {
    Duration::from_millis(20)
}
fn default_max_mail_size() -> usize {
    50 * 1024 * 1024
}

impl Validate for Config {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = prefixed("log", self.log.validate());
        problems.extend(prefixed("amqp", self.amqp.validate()));
        problems.extend(prefixed("config_service", self.config_service.validate()));
        problems.extend(prefixed("metrics", self.metrics.validate()));
        problems.extend(prefixed("database", self.database.validate()));
        if !(1..=5000).contains(&self.batch_size) {
            problems.push(("batch_size".into(), format!("{} is not between 1 and 5000", self.batch_size)));
        }
        if self.batch_bytes < 64 * 1024 {
            problems
                .push(("batch_bytes".into(), format!("{} is too small (at least 65536)", self.batch_bytes)));
        }
        if self.batch_wait > Duration::from_secs(10) {
            problems.push(("batch_wait".into(), "must be at most 10s".into()));
        }
        if self.max_mail_size < 1024 {
            problems.push((
                "max_mail_size".into(),
                format!("{} bytes is too small (at least 1024)", self.max_mail_size),
            ));
        }
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
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/router.example.toml");
        let config: Config = deskmail_config::load(Some(&path)).unwrap();
        assert_eq!(config.config_service.token.expose(), "change-me-daemon-token");
        assert!(config.metrics.port.is_some());
        assert_eq!(config.batch_size, 500);
        assert_eq!(config.batch_wait, Duration::from_millis(20));
    }
}
