//! deskmail-fetcher: polls the inbound mailboxes configd leases to it (IMAP or POP3, password
//! or OAuth2) and publishes each raw mail to `<prefix>.inbound` (routing key `mail.raw`,
//! `message_id` = the source id), removing or flagging it on the server only after the broker
//! confirmed it. It owns nothing persistent: config and leases come from configd, mail state
//! from the mail server. It must not depend on another daemon crate.
//!
//! - [`supervisor`]: leases + the config snapshot -> one task per mailbox.
//! - [`worker`]: a mailbox's loop: poll, report status, IDLE or wait, back off on errors.
//! - [`imap`] / [`pop3`]: one poll of each protocol.
//! - [`publish`]: the raw-mail message and the confirm pipeline, bounded by count and bytes.

mod config;
mod imap;
mod poll;
mod pop3;
mod publish;
mod settings;
mod supervisor;
mod worker;

use std::sync::Arc;

pub use config::{Config, FetchConfig};
use deskmail_configclient::{ConfigClient, ConfigWatcher, holder_id};
use deskmail_runtime::CancellationToken;
pub use imap::OVERSIZED_FOLDER;

use crate::publish::Broker;
use crate::supervisor::Supervisor;
use crate::worker::Shared;

/// Why the fetcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] deskmail_mq::MqError),
    #[error("{0}")]
    ConfigService(#[from] deskmail_configclient::ConfigClientError),
    #[error("RabbitMQ connection lost")]
    BrokerLost,
}

/// Runs the fetcher until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), FetcherError> {
    let client = ConfigClient::new(&config.config_service)?;
    let (connection, topology) =
        match deskmail_mq::connect_and_declare(&config.amqp, "deskmail-fetcher", &shutdown).await {
            Ok(ready) => ready,
            Err(deskmail_mq::MqError::Cancelled) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    let publisher = deskmail_mq::Publisher::new(&connection).await?;
    let holder = holder_id("deskmail-fetcher");
    tracing::info!(
        amqp = %config.amqp.redacted_url(),
        prefix = topology.prefix(),
        configd = client.url(),
        holder = %holder,
        "Ready."
    );
    let shared = Arc::new(Shared {
        broker: Broker::new(publisher, topology, config.fetch.max_inflight_bytes),
        client: client.clone(),
        holder,
        window: config.amqp.publish_window.max(1),
        polls: tokio::sync::Semaphore::new(config.fetch.max_concurrent_mailboxes as usize),
        fetch: config.fetch.clone(),
    });
    let watcher = ConfigWatcher::spawn(client, shutdown.clone());
    let mut snapshots = watcher.subscribe();
    let mut supervisor = Supervisor::new(shared.clone());
    let ttl = config.fetch.lease_ttl;
    let mut renew = tokio::time::interval(ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = renew.tick() => {
                if !connection.status().connected() {
                    // Without a broker nothing can be fetched safely: stop (mail stays on the
                    // servers) and let the service manager restart us.
                    tracing::error!("Lost the RabbitMQ connection; stopping.");
                    supervisor.stop(config.shutdown_grace).await;
                    return Err(FetcherError::BrokerLost);
                }
                if !shared.broker.publisher.is_open() {
                    shared.broker.publisher.reopen(&connection).await?;
                }
                if watcher.current().is_some() {
                    supervisor.renew_leases(ttl).await;
                    supervisor.reconcile(watcher.current().as_ref());
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                // A new or re-enabled box needs a lease before it can be polled.
                supervisor.renew_leases(ttl).await;
                let snapshot = snapshots.borrow_and_update().clone();
                supervisor.reconcile(snapshot.as_ref());
            }
        }
    }
    tracing::info!("Stopping: letting polls in flight finish.");
    supervisor.stop(config.shutdown_grace).await;
    let _ = shared.broker.publisher.close().await;
    let _ = connection.close(200, "shutdown".into()).await;
    Ok(())
}
