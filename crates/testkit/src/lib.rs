//! Dev-only test kit: every test gets its own real, isolated services and tears them down.
//!
//! - [`rabbit::Vhost`]: a RabbitMQ vhost of its own on the local broker (management HTTP API),
//!   or on a [`broker::PrivateBroker`] for the tests that stop and start the broker itself.
//! - [`pg::Database`]: a PostgreSQL database of its own on the local server.
//! - [`process::DaemonProcess`]: a daemon binary run as its own process (logs, signals).
//! - [`samples`]: realistic test mails from a seed (charsets, attachments, follow-ups).
//! - [`mail::MailStack`]: private Dovecot (IMAP, IMAPS, POP3, POP3S) and Postfix (SMTP with
//!   AUTH over STARTTLS and implicit TLS) instances on free high ports.
//!
//! Nothing here is a fake: a test that cannot reach a service fails with an error saying
//! which one and how to start it (`make services`). Never skip.
//! Must not be a dependency of any daemon crate (dev-dependencies only).

pub mod broker;
pub mod mail;
pub mod pg;
pub mod process;
pub mod rabbit;
pub mod samples;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this process and call, safe for vhosts, databases and queue prefixes:
/// `deskmail-test-<prefix>-<pid>-<counter>-<random>` with only `[a-z0-9_-]`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    format!("deskmail-test-{clean}-{}-{n}-{:x}", std::process::id(), nanos & 0xffff)
}

/// `GET http://127.0.0.1:<port><path>` over HTTP/1.0 (a daemon's `/metrics`, `/healthz`,
/// `/readyz`): the status code and the body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port} for GET {path}"))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").with_context(|| format!("GET {path}: no HTTP header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: bad status line {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The value of the Prometheus sample `name{labels}` (labels exactly as rendered, e.g.
/// `direction="inbound",state="active"`; empty for none) in a `/metrics` body, if present.
pub fn metric_value(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let wanted = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == wanted).then(|| value.parse().ok()).flatten()
    })
}
