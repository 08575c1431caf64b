//! deskmail-sender: consumes `<prefix>.outbound.jobs` and sends each job through the right SMTP
//! box (job, contract, company, system default), retrying temporary failures and
//! dead-lettering permanent ones with the server's reply.
//!
//! Status: the foundation only. It connects to RabbitMQ (with backoff), declares the
//! topology, and stops cleanly on SIGTERM; sending lands with the sender issue.

mod config;

pub use config::Config;
use deskmail_runtime::CancellationToken;

/// Why the sender stopped.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] deskmail_mq::MqError),
}

/// Runs the sender until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SenderError> {
    let (connection, topology) =
        match deskmail_mq::connect_and_declare(&config.amqp, "deskmail-sender", &shutdown).await {
            Ok(ready) => ready,
            Err(deskmail_mq::MqError::Cancelled) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    tracing::info!(amqp = %config.amqp.redacted_url(), prefix = topology.prefix(), "Ready.");
    shutdown.cancelled().await;
    let _ = connection.close(200, "shutdown".into()).await;
    Ok(())
}
