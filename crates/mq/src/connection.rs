//! Connecting with retry and exponential backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AmqpConfig, redact};
use crate::error::{MqError, is_refused};

/// Connects to `cfg.url`, retrying with exponential backoff (100 ms doubling up to 5 s, with
/// jitter) until `cfg.connect_timeout` has passed overall. `name` becomes the connection's
/// `connection_name` client property, which the management UI and API show.
pub async fn connect(cfg: &AmqpConfig, name: &str) -> Result<Connection, MqError> {
    let deadline = Instant::now() + cfg.connect_timeout;
    connect_inner(cfg, name, Some(deadline), None).await
}

/// Like [`connect`] but retries for as long as it takes, until `shutdown` is cancelled
/// (then [`MqError::Cancelled`]). For daemons that must wait out a broker outage at start.
pub async fn connect_until_cancelled(
    cfg: &AmqpConfig,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Connection, MqError> {
    connect_inner(cfg, name, None, Some(shutdown)).await
}

/// What every daemon does first: connect (retrying until `shutdown`), then declare the
/// whole topology of the design under the configured prefix on a short-lived channel.
pub async fn connect_and_declare(
    cfg: &AmqpConfig,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<(Connection, crate::Topology), MqError> {
    let connection = connect_until_cancelled(cfg, name, shutdown).await?;
    let topology = crate::Topology::from_config(cfg)?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|source| MqError::Amqp { op: "channel.open", source: Box::new(source) })?;
    topology.declare(&channel).await?;
    // The channel only served the declarations; a failed close changes nothing.
    let _ = channel.close(200, "declared".into()).await;
    info!(prefix = topology.prefix(), "Topology declared.");
    Ok((connection, topology))
}

/// Turns the URL into lapin's form. Parsed by hand on top of lapin's parser because
/// amq-protocol-uri 10.6 takes the host from `Url::domain()`, which is `None` for IP
/// addresses, and silently falls back to `localhost`.
pub(crate) fn amqp_uri(url: &url::Url) -> Result<AMQPUri, MqError> {
    let invalid = |reason: &str| MqError::InvalidUrl { url: redact(url), reason: reason.to_owned() };
    if !matches!(url.scheme(), "amqp" | "amqps") {
        return Err(invalid("scheme must be amqp or amqps"));
    }
    // lapin's parse errors may quote the whole URL, password included: never pass them on.
    let mut uri: AMQPUri = url.as_str().parse().map_err(|_| invalid("not a valid AMQP URI"))?;
    let host = url.host_str().ok_or_else(|| invalid("no host"))?;
    uri.authority.host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok(uri)
}

async fn connect_inner(
    cfg: &AmqpConfig,
    name: &str,
    deadline: Option<Instant>,
    shutdown: Option<&CancellationToken>,
) -> Result<Connection, MqError> {
    let uri = amqp_uri(&cfg.url)?;
    let url = cfg.redacted_url();
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let attempts = Arc::new(Mutex::new(0u32));
    let last_error: Arc<Mutex<Option<lapin::Error>>> = Arc::default();

    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();

    let attempt = || {
        let (uri, props, attempts) = (uri.clone(), props.clone(), attempts.clone());
        async move {
            if let Ok(mut n) = attempts.lock() {
                *n += 1;
            }
            let remaining = deadline.map_or(Duration::from_secs(30), |d| {
                d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
            });
            // One attempt never outlives the overall deadline (a SYN to a black hole can hang).
            match tokio::time::timeout(remaining, Connection::connect_uri(uri, props)).await {
                Ok(result) => result.map_err(Some),
                Err(_) => Err(None),
            }
        }
    };
    let retry = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        // Wrong credentials or a missing vhost will not fix themselves: fail at once.
        .when(|e: &Option<lapin::Error>| !e.as_ref().is_some_and(is_refused))
        .notify(|e: &Option<lapin::Error>, wait: Duration| {
            match e {
                Some(e) => warn!(url = %url, error = %e, retry_in = ?wait, "Connecting to RabbitMQ failed; retrying."),
                None => warn!(url = %url, retry_in = ?wait, "Connecting to RabbitMQ timed out; retrying."),
            }
            if let (Some(e), Ok(mut last)) = (e, last_error.lock()) {
                *last = Some(e.clone());
            }
        });

    let bounded = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), retry).await.unwrap_or(Err(None)),
            None => retry.await,
        }
    };
    let result = match shutdown {
        Some(token) => tokio::select! {
            biased;
            () = token.cancelled() => return Err(MqError::Cancelled),
            r = bounded => r,
        },
        None => bounded.await,
    };
    let attempts = attempts.lock().map(|n| *n).unwrap_or(0);
    match result {
        Ok(conn) => {
            info!(url = %url, connection_name = name, attempts, "Connected to RabbitMQ.");
            Ok(conn)
        }
        Err(e) => {
            let last = e.or_else(|| last_error.lock().ok().and_then(|mut l| l.take()));
            let timeout = cfg.connect_timeout;
            Err(match last {
                Some(source) => MqError::Connect { url, timeout, attempts, source: Box::new(source) },
                None => MqError::ConnectTimeout { url, timeout, attempts },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ip_hosts_and_vhost() {
        let cases = [
            ("amqp://u:p@127.0.0.1:5673/v%2Fx", "127.0.0.1", 5673, "v/x"),
            ("amqp://u:p@[::1]/%2f", "::1", 5672, "/"),
            ("amqps://u:p@mq.example/prod", "mq.example", 5671, "prod"),
        ];
        for (url, host, port, vhost) in cases {
            let uri = amqp_uri(&url::Url::parse(url).unwrap()).unwrap();
            assert_eq!(
                (uri.authority.host.as_str(), uri.authority.port, uri.vhost.as_str()),
                (host, port, vhost),
                "{url}"
            );
        }
    }

    #[test]
    fn url_errors_never_show_the_password() {
        let err = amqp_uri(&url::Url::parse("http://u:s3cret@h/").unwrap()).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
