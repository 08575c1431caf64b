use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::load::Validate;
use crate::values::{Port, Secret};

/// `[config_service]`: how a daemon reaches configd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigServiceConfig {
    /// configd's gRPC endpoint. Default `http://127.0.0.1:50051`; use `https://` when configd
    /// serves TLS. Env `DESKMAIL_CONFIG_SERVICE__URL`.
    #[serde(default = "default_config_service_url")]
    pub url: Url,
    /// The daemon bearer token configd was given (`auth.daemon_token`). Required.
    /// Env `DESKMAIL_CONFIG_SERVICE__TOKEN`.
    pub token: Secret,
    /// A PEM file with the CA that signed configd's certificate, when it is not in the
    /// system roots. Optional. Env `DESKMAIL_CONFIG_SERVICE__CA_FILE`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long one connection attempt may take. Default `5s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[allow(clippy::expect_used)] // A constant literal: it parses, or no test would pass.
fn default_config_service_url() -> Url {
    Url::parse("http://127.0.0.1:50051").expect("constant URL parses")
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Validate for ConfigServiceConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !matches!(self.url.scheme(), "http" | "https") {
            problems
                .push(("url".into(), format!("{:?} is not an http:// or https:// URL", self.url.as_str())));
        }
        if self.token.is_empty() {
            problems.push(("token".into(), "must not be empty".into()));
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            problems.push(("ca_file".into(), format!("{} is not a readable file", ca.display())));
        }
        if self.connect_timeout.is_zero() {
            problems.push(("connect_timeout".into(), "must be more than 0s".into()));
        }
        problems
    }
}

/// `[metrics]`: the Prometheus `/metrics`, `/healthz` and `/readyz` listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to bind. Default `127.0.0.1` (set `0.0.0.0` in containers).
    /// Env `DESKMAIL_METRICS__BIND`.
    #[serde(default = "default_metrics_bind")]
    pub bind: IpAddr,
    /// Port to listen on; no port, no listener. Env `DESKMAIL_METRICS__PORT`.
    #[serde(default)]
    pub port: Option<Port>,
}

fn default_metrics_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { bind: default_metrics_bind(), port: None }
    }
}

impl Validate for MetricsConfig {
    fn validate(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// `[database]`: a SQLite file (the embedded default) or a PostgreSQL server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://var/NAME.db?mode=rwc` or `postgres://user:pass@host:5432/db`. It may hold a
    /// password, so it is treated as a secret. Env `DESKMAIL_DATABASE__URL`.
    pub url: Secret,
    /// Most connections in the pool. Default 8.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

impl DatabaseConfig {
    /// A SQLite database file under `dir` (created when missing).
    pub fn sqlite_in(dir: &str, name: &str) -> Self {
        Self {
            url: Secret::new(format!("sqlite://{dir}/{name}.db?mode=rwc")),
            max_connections: default_max_connections(),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.expose().starts_with("sqlite:")
    }

    /// The file of a `sqlite:` URL (`None` for other databases and `:memory:`).
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        let url = self.url.expose();
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| std::path::Path::new(path))
    }

    /// Creates the directory of a SQLite file when it is missing; on failure, the directory
    /// and the reason, for an error that names `database.url`.
    pub fn create_sqlite_dir(&self) -> Result<(), (String, std::io::Error)> {
        match self.sqlite_file().and_then(std::path::Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => {
                std::fs::create_dir_all(dir).map_err(|e| (dir.display().to_string(), e))
            }
            _ => Ok(()),
        }
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let url = self.url.expose();
        let scheme = url.split(':').next().unwrap_or("");
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            // The scheme only: the rest of the URL may carry a password.
            problems.push(("url".into(), format!("scheme {scheme:?} is not sqlite: or postgres://")));
        }
        if self.max_connections == 0 {
            problems.push(("max_connections".into(), "must be at least 1".into()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_and_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let config = DatabaseConfig::sqlite_in(nested.to_str().unwrap(), "router");
        assert_eq!(config.sqlite_file(), Some(nested.join("router.db").as_path()));
        config.create_sqlite_dir().unwrap();
        assert!(nested.is_dir());
        for url in ["sqlite::memory:", "postgres://u@h/db"] {
            let other = DatabaseConfig { url: Secret::new(url), max_connections: 1 };
            assert_eq!(other.sqlite_file(), None, "{url}");
            other.create_sqlite_dir().unwrap();
        }
    }
}
