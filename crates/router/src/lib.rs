//! deskmail-router: consumes `<prefix>.inbound.raw`, parses each mail and applies the dispatch
//! rules of the design, writing tickets, articles and attachments exactly once.
//!
//! Status: the foundation only. It connects to RabbitMQ (with backoff), declares the
//! topology, and stops cleanly on SIGTERM; routing lands with the router issue.

mod config;

pub use config::Config;
use deskmail_runtime::CancellationToken;

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] deskmail_mq::MqError),
}

/// Runs the router until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RouterError> {
    let (connection, topology) =
        match deskmail_mq::connect_and_declare(&config.amqp, "deskmail-router", &shutdown).await {
            Ok(ready) => ready,
            Err(deskmail_mq::MqError::Cancelled) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    tracing::info!(amqp = %config.amqp.redacted_url(), prefix = topology.prefix(), "Ready.");
    shutdown.cancelled().await;
    let _ = connection.close(200, "shutdown".into()).await;
    Ok(())
}
