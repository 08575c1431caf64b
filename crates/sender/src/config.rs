//! `sender.toml`: what the sender needs to start. Outbound boxes, contracts and companies
//! come from configd, not from here.

use std::time::Duration;

use deskmail_config::{ConfigServiceConfig, DatabaseConfig, MetricsConfig, Validate, prefixed};
use deskmail_mq::AmqpConfig;
use deskmail_runtime::{DaemonConfig, LogConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Logging. See `config/sender.example.toml`.
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
    /// The sent-jobs log (job id -> Message-ID, box, time), for idempotent sends.
    /// Default a SQLite file `var/sender.db`.
    #[serde(default = "default_sent_log")]
    pub sent_log: DatabaseConfig,
    /// SMTP client behaviour common to every box.
    #[serde(default)]
    pub smtp: SmtpConfig,
    /// How long sends in flight may take to finish after SIGTERM. Default `30s`.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `[retry]`: the delays of the retry queues.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// `[retry]`: how temporary failures are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait before each retry, one retry queue per delay (`<prefix>.outbound.retry.<delay>`);
    /// after the last, the job is dead-lettered. Default `["30s", "2m", "10m", "1h"]`.
    /// Shorter delays are for tests and staging: each new delay declares a new queue.
    #[serde(default = "default_retry_delays")]
    pub delays: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { delays: default_retry_delays() }
    }
}

fn default_retry_delays() -> Vec<String> {
    ["30s", "2m", "10m", "1h"].iter().map(|s| (*s).to_owned()).collect()
}

impl RetryConfig {
    /// The delays as durations (validated at load).
    pub fn durations(&self) -> Vec<Duration> {
        self.delays.iter().filter_map(|d| humantime::parse_duration(d).ok()).collect()
    }
}

impl Validate for RetryConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.delays.is_empty() {
            problems.push(("delays".into(), "needs at least one delay".into()));
        }
        for (i, d) in self.delays.iter().enumerate() {
            match humantime::parse_duration(d) {
                Ok(v) if v >= Duration::from_millis(1) && v <= Duration::from_secs(24 * 3600) => {}
                Ok(_) => {
                    problems.push((format!("delays[{i}]"), format!("{d:?} must be between 1ms and 24h")))
                }
                Err(e) => problems.push((format!("delays[{i}]"), format!("{d:?} is not a duration: {e}"))),
            }
        }
        problems
    }
}

/// `[smtp]`: limits that apply to every outbound box.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Time to connect, including TLS. Default `30s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for one SMTP command to be answered. Default `60s`.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Most open connections per box. Default 8.
    #[serde(default = "default_pool_size")]
    pub pool_max_per_box: u32,
    /// The name sent in EHLO; default the machine's host name.
    #[serde(default)]
    pub hello_name: Option<String>,
    /// Jobs handled at once (across all boxes). Default 64.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            pool_max_per_box: default_pool_size(),
            hello_name: None,
            max_in_flight: default_max_in_flight(),
        }
    }
}

fn default_sent_log() -> DatabaseConfig {
    DatabaseConfig::sqlite_in("var", "sender")
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_size() -> u32 {
    8
}
fn default_max_in_flight() -> usize {
    64
}

impl Validate for SmtpConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.connect_timeout.is_zero() {
            problems.push(("connect_timeout".into(), "must be more than 0s".into()));
        }
        if self.command_timeout.is_zero() {
            problems.push(("command_timeout".into(), "must be more than 0s".into()));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 4096 {
            problems.push(("max_in_flight".into(), "must be between 1 and 4096".into()));
        }
        if self.pool_max_per_box == 0 {
            problems.push(("pool_max_per_box".into(), "must be at least 1".into()));
        }
        if let Some(name) = &self.hello_name
            && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            problems.push(("hello_name".into(), format!("{name:?} is not a host name")));
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
        problems.extend(prefixed("sent_log", self.sent_log.validate()));
        problems.extend(prefixed("smtp", self.smtp.validate()));
        problems.extend(prefixed("retry", self.retry.validate()));
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
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sender.example.toml");
        let config: Config = deskmail_config::load(Some(&path)).unwrap();
        assert_eq!(config.config_service.token.expose(), "change-me-daemon-token");
        assert!(config.metrics.port.is_some());
    }
}
