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
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::sqlite_in("var", "router")
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}

impl Validate for Config {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = prefixed("log", self.log.validate());
        problems.extend(prefixed("amqp", self.amqp.validate()));
        problems.extend(prefixed("config_service", self.config_service.validate()));
        problems.extend(prefixed("metrics", self.metrics.validate()));
        problems.extend(prefixed("database", self.database.validate()));
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
    }
}
