//! deskmail-fetcher: polls the inbound mailboxes configd assigns it (IMAP or POP3, password or
//! OAuth2) and publishes each raw mail to `<prefix>.inbound`, removing or flagging it on the
//! server only after the broker confirmed it.
//!
//! Status: the foundation only. It connects to RabbitMQ (with backoff), declares the
//! topology, and stops cleanly on SIGTERM; polling lands with the fetcher issue.

mod config;

pub use config::Config;
use deskmail_runtime::CancellationToken;

/// Why the fetcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] deskmail_mq::MqError),
}

/// Runs the fetcher until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), FetcherError> {
    let (connection, topology) =
        match deskmail_mq::connect_and_declare(&config.amqp, "deskmail-fetcher", &shutdown).await {
            Ok(ready) => ready,
            Err(deskmail_mq::MqError::Cancelled) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    tracing::info!(amqp = %config.amqp.redacted_url(), prefix = topology.prefix(), "Ready.");
    shutdown.cancelled().await;
    let _ = connection.close(200, "shutdown".into()).await;
    Ok(())
}
