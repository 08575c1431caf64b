use std::path::PathBuf;
use std::time::Duration;

use deskmail_config::{Secret, Validate};
use serde::Deserialize;
use url::Url;

/// `deskmailctl.toml` (or `DESKMAILCTL_*` variables): where configd is and the admin token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// configd's gRPC endpoint. Default `http://127.0.0.1:50051`. Env `DESKMAILCTL_ENDPOINT`.
    #[serde(default = "default_endpoint")]
    pub endpoint: Url,
    /// The admin bearer token. Env `DESKMAILCTL_TOKEN`. Required for every call but `health`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// PEM CA for configd's certificate, when not in the system roots. Env `DESKMAILCTL_CA_FILE`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Limit for one call. Default `30s`. Env `DESKMAILCTL_TIMEOUT`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[allow(clippy::expect_used)] // A constant literal.
fn default_endpoint() -> Url {
    Url::parse("http://127.0.0.1:50051").expect("constant URL parses")
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Validate for CliConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !matches!(self.endpoint.scheme(), "http" | "https") {
            problems.push((
                "endpoint".into(),
                format!("{:?} is not an http:// or https:// URL", self.endpoint.as_str()),
            ));
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            problems.push(("ca_file".into(), format!("{} is not a readable file", ca.display())));
        }
        if self.timeout.is_zero() {
            problems.push(("timeout".into(), "must be more than 0s".into()));
        }
        problems
    }
}
