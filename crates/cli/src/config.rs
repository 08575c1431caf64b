use std::path::PathBuf;
use std::time::Duration;

use deskmail_config::{Secret, Validate};
use deskmail_mq::AmqpConfig;
use serde::Deserialize;
use url::Url;

/// `deskmailctl.toml` (or `DESKMAILCTL_*` variables): where configd is and the admin token, and
/// (for `deskmailctl dead`) where RabbitMQ is.
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
    /// RabbitMQ, for `deskmailctl dead`: the daemons' `[amqp]` section (same keys, same
    /// defaults; only `url`, `prefix` and `connect_timeout` matter here). Env
    /// `DESKMAILCTL_AMQP__URL`, `DESKMAILCTL_AMQP__PREFIX`, ...
    #[serde(default)]
    pub amqp: AmqpConfig,
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
        for (key, problem) in self.amqp.validate() {
            problems.push((format!("amqp.{key}"), problem));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/deskmailctl.example.toml");
        let config: CliConfig = deskmail_config::load_with_env_prefix(Some(&path), "DESKMAILCTL_").unwrap();
        assert_eq!(config.token.as_ref().map(Secret::expose), Some("change-me-admin-token"));
        assert_eq!(config.amqp, AmqpConfig::default(), "the example spells out the defaults");
    }

    #[test]
    fn amqp_problems_are_named_under_amqp() {
        let mut config: CliConfig =
            deskmail_config::load_with_env_prefix(None, "DESKMAILCTL_TEST_UNSET_").unwrap();
        config.amqp.prefix = "bad prefix".into();
        let keys: Vec<String> = config.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["amqp.prefix"]);
    }
}
