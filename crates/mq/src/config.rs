//! `[amqp]` settings shared by every daemon that talks to RabbitMQ.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// How a daemon reaches RabbitMQ and names its topology. Every field has a default, so an
/// empty `[amqp]` table is valid.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL, `amqp://` or `amqps://`, vhost URL-encoded in the path (`%2f` for `/`).
    /// Holds the password: never logged (see [`AmqpConfig::redacted_url`]).
    /// Default `amqp://guest:guest@127.0.0.1:5672/%2f`. Env: `DESKMAIL_AMQP__URL`.
    #[serde(default = "default_url")]
    pub url: Url,
    /// Prefix of every exchange and queue name (`<prefix>.inbound`, ...), `[A-Za-z0-9_.-]+`.
    /// Default `deskmail`. Env: `DESKMAIL_AMQP__PREFIX`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Unacknowledged deliveries the broker may push to each consumer (`basic.qos`), in
    /// messages, greater than 0. Default 256. Env: `DESKMAIL_AMQP__PREFETCH`.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Overall deadline for connecting, retries with exponential backoff included, as a
    /// humantime duration (`10s`, `1m`). Default `10s`. Env: `DESKMAIL_AMQP__CONNECT_TIMEOUT`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Most published messages awaiting their broker confirm at once, per publisher, in
    /// messages, greater than 0. Default 512. Env: `DESKMAIL_AMQP__PUBLISH_WINDOW`.
    #[serde(default = "default_publish_window")]
    pub publish_window: usize,
    /// Deliveries of one message (the first plus requeues) after which a quorum queue
    /// dead-letters it (`x-delivery-limit`), greater than 0. Changing it on an existing queue
    /// is refused by the broker (406). Default 20. Env: `DESKMAIL_AMQP__DELIVERY_LIMIT`.
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
}

#[allow(clippy::expect_used)] // A constant, covered by `defaults_are_valid_and_documented_values`.
fn default_url() -> Url {
    Url::parse("amqp://guest:guest@127.0.0.1:5672/%2f").expect("constant URL parses")
}

fn default_prefix() -> String {
    "deskmail".to_owned()
}
fn default_prefetch() -> u16 {
    256
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_publish_window() -> usize {
    512
}
fn default_delivery_limit() -> u32 {
    20
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: default_url(),
            prefix: default_prefix(),
            prefetch: default_prefetch(),
            connect_timeout: default_connect_timeout(),
            publish_window: default_publish_window(),
            delivery_limit: default_delivery_limit(),
        }
    }
}

impl AmqpConfig {
    /// Every problem found, as (key relative to `[amqp]`, message); empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, msg: String| problems.push((key.to_owned(), msg));
        if !matches!(self.url.scheme(), "amqp" | "amqps") {
            bad("url", format!("scheme must be amqp or amqps, not {:?}", self.url.scheme()));
        }
        if self.url.host_str().is_none_or(str::is_empty) {
            bad("url", "has no host".to_owned());
        }
        if !valid_prefix(&self.prefix) {
            bad("prefix", format!("{:?} must match [A-Za-z0-9_.-]+", self.prefix));
        } else if self.prefix.len() > 200 {
            bad("prefix", "is longer than 200 bytes (queue names are limited to 255)".to_owned());
        }
        if self.prefetch == 0 {
            bad("prefetch", "must be greater than 0".to_owned());
        }
        if self.connect_timeout.is_zero() {
            bad("connect_timeout", "must be greater than 0".to_owned());
        }
        if self.publish_window == 0 {
            bad("publish_window", "must be greater than 0".to_owned());
        }
        if self.delivery_limit == 0 {
            bad("delivery_limit", "must be greater than 0".to_owned());
        }
        problems
    }

    /// The URL with its password replaced by `***`, safe for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// `url` with its password replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() && u.set_password(Some("***")).is_err() {
        return format!("{}://<redacted>", url.scheme());
    }
    u.to_string()
}

pub(crate) fn valid_prefix(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_window", &self.publish_window)
            .field("delivery_limit", &self.delivery_limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(v: serde_json::Value) -> Result<AmqpConfig, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = from_json(serde_json::json!({})).unwrap();
        assert_eq!(c, AmqpConfig::default());
        assert_eq!(c.url.as_str(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(c.prefix, "deskmail");
        assert_eq!((c.prefetch, c.publish_window, c.delivery_limit), (256, 512, 20));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn parses_humantime_and_rejects_unknown_fields() {
        let c = from_json(serde_json::json!({"connect_timeout": "1m 5s", "prefetch": 10})).unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(65));
        assert!(from_json(serde_json::json!({"prefecth": 10})).is_err());
    }

    #[test]
    fn validate_reports_every_problem() {
        let cases: &[(serde_json::Value, &[&str])] = &[
            (serde_json::json!({"prefix": "a b"}), &["prefix"]),
            (serde_json::json!({"prefix": ""}), &["prefix"]),
            (serde_json::json!({"prefix": "ok.Name-1_x"}), &[]),
            (
                serde_json::json!({"prefetch": 0, "publish_window": 0, "delivery_limit": 0, "connect_timeout": "0s"}),
                &["prefetch", "connect_timeout", "publish_window", "delivery_limit"],
            ),
            (serde_json::json!({"url": "http://h/"}), &["url"]),
        ];
        for (input, want) in cases {
            let got: Vec<String> =
                from_json(input.clone()).unwrap().validate().into_iter().map(|(k, _)| k).collect();
            assert_eq!(got, *want, "{input}");
        }
    }

    #[test]
    fn never_prints_the_password() {
        let c = from_json(serde_json::json!({"url": "amqp://bob:s3cret@mq.example:5672/prod"})).unwrap();
        assert_eq!(c.redacted_url(), "amqp://bob:***@mq.example:5672/prod");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
