//! `configd.toml`: the listener, the config database, the secrets key and the tokens.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use deskmail_config::{DatabaseConfig, MetricsConfig, Port, Secret, Validate, prefixed};
use deskmail_runtime::{DaemonConfig, LogConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Logging. See `config/configd.example.toml`.
    #[serde(default)]
    pub log: LogConfig,
    /// Where the gRPC service listens.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The config database. Default a SQLite file `var/configd.db`.
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    /// The key that encrypts mailbox passwords and tokens at rest. Required.
    pub secrets: SecretsConfig,
    /// The bearer tokens of the two roles. Required.
    pub auth: AuthConfig,
    /// The `/metrics`, `/healthz`, `/readyz` listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[listen]`: the gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to bind. Default `127.0.0.1`.
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// Port. Default 50051.
    #[serde(default = "default_port")]
    pub port: Port,
    /// PEM certificate chain; with `key_file`, the listener serves TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { bind: default_bind(), port: default_port(), cert_file: None, key_file: None }
    }
}

/// `[secrets]`: the at-rest encryption key (AES-256-GCM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A file holding the 32-byte key as 64 hex characters (or base64). Either this or
    /// `key` is required.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The key itself (hex or base64), for environments that inject secrets as variables
    /// (`DESKMAIL_SECRETS__KEY`).
    #[serde(default)]
    pub key: Option<Secret>,
    /// During a key rotation: the key being replaced, as a file. Values it sealed are still
    /// read, and re-sealed with `key_file`/`key` when configd starts; remove it afterwards.
    #[serde(default)]
    pub previous_key_file: Option<PathBuf>,
    /// The previous key itself (`DESKMAIL_SECRETS__PREVIOUS_KEY`).
    #[serde(default)]
    pub previous_key: Option<Secret>,
}

/// `[auth]`: bearer tokens. Admins may do everything; daemons may read the snapshot, watch,
/// report status and take leases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The admin role's token (deskmailctl, automation). At least 16 characters.
    pub admin_token: Secret,
    /// The daemon role's token (fetcher, router, sender). At least 16 characters.
    pub daemon_token: Secret,
    /// During a token rotation: the old admin token, still accepted until removed.
    #[serde(default)]
    pub previous_admin_token: Option<Secret>,
    /// During a token rotation: the old daemon token, still accepted until removed.
    #[serde(default)]
    pub previous_daemon_token: Option<Secret>,
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::sqlite_in("var", "configd")
}
fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn default_port() -> Port {
    Port::from_const(50051)
}

impl Validate for ListenConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems.push(("key_file".into(), "is required with cert_file".into())),
            (None, Some(_)) => problems.push(("cert_file".into(), "is required with key_file".into())),
            _ => {}
        }
        for (key, path) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if let Some(p) = path
                && !p.is_file()
            {
                problems.push((key.into(), format!("{} is not a readable file", p.display())));
            }
        }
        problems
    }
}

impl Validate for SecretsConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = match (&self.key_file, &self.key) {
            (None, None) => vec![(
                "key_file".into(),
                "is required (or key): configd will not store secrets without an encryption key".into(),
            )],
            (Some(_), Some(_)) => vec![("key".into(), "give key_file or key, not both".into())],
            (Some(p), None) if !p.is_file() => {
                vec![("key_file".into(), format!("{} is not a readable file", p.display()))]
            }
            _ => Vec::new(),
        };
        match (&self.previous_key_file, &self.previous_key) {
            (Some(_), Some(_)) => {
                problems
                    .push(("previous_key".into(), "give previous_key_file or previous_key, not both".into()));
            }
            (Some(p), None) if !p.is_file() => {
                problems
                    .push(("previous_key_file".into(), format!("{} is not a readable file", p.display())));
            }
            _ => {}
        }
        if self.previous_key.is_some() && self.previous_key == self.key {
            problems.push(("previous_key".into(), "is the same as key: nothing to rotate".into()));
        }
        if self.previous_key_file.is_some() && self.previous_key_file == self.key_file {
            problems
                .push(("previous_key_file".into(), "is the same file as key_file: nothing to rotate".into()));
        }
        problems
    }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, token) in [("admin_token", &self.admin_token), ("daemon_token", &self.daemon_token)] {
            if token.expose().chars().count() < 16 {
                problems.push((key.into(), "must be at least 16 characters".into()));
            }
        }
        if self.admin_token == self.daemon_token {
            problems.push(("daemon_token".into(), "must differ from admin_token".into()));
        }
        for (key, token) in [
            ("previous_admin_token", &self.previous_admin_token),
            ("previous_daemon_token", &self.previous_daemon_token),
        ] {
            let Some(token) = token else { continue };
            if token.expose().chars().count() < 16 {
                problems.push((key.into(), "must be at least 16 characters".into()));
            }
        }
        // A token must never be valid for both roles.
        let admins = [Some(&self.admin_token), self.previous_admin_token.as_ref()];
        let daemons = [Some(&self.daemon_token), self.previous_daemon_token.as_ref()];
        if admins.iter().flatten().any(|a| daemons.iter().flatten().any(|d| a == d)) {
            problems.push((
                "previous_daemon_token".into(),
                "an admin token and a daemon token are the same".into(),
            ));
        }
        problems
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = prefixed("log", self.log.validate());
        problems.extend(prefixed("listen", self.listen.validate()));
        problems.extend(prefixed("database", self.database.validate()));
        problems.extend(prefixed("secrets", self.secrets.validate()));
        problems.extend(prefixed("auth", self.auth.validate()));
        problems.extend(prefixed("metrics", self.metrics.validate()));
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
    use super::*;

    fn example_with_key(key_line: &str) -> Result<Config, deskmail_config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/configd.example.toml"),
        )
        .unwrap()
        .replace("key_file = \"var/configd.key\"", key_line);
        let path = dir.path().join("configd.toml");
        std::fs::write(&path, text).unwrap();
        deskmail_config::load(Some(&path))
    }

    #[test]
    fn example_config_loads_with_its_key_file() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let config = example_with_key(&format!("key_file = {:?}", key.path())).unwrap();
        assert_eq!(config.listen.port.get(), 50051);
    }

    #[test]
    fn missing_key_is_refused_with_the_key_named() {
        let err = example_with_key("key_file = \"/nonexistent/configd.key\"").unwrap_err().to_string();
        assert!(
            err.contains("configd.toml: secrets.key_file: /nonexistent/configd.key is not a readable file"),
            "{err}"
        );
        let err = example_with_key("").unwrap_err().to_string();
        assert!(err.contains("secrets.key_file: is required"), "{err}");
    }
}
