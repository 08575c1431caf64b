//! deskmail-router: consumes `<prefix>.inbound.raw`, parses each mail and applies the dispatch
//! rules of the design, writing tickets, articles and attachments exactly once, and publishing
//! `ticket.created` / `ticket.followup` events and auto-reply jobs after the commit.
//!
//! It owns the tickets store (`store`); it takes its rules from configd's `Watch` stream and
//! never reads another daemon's tables. Modules: `dispatch` and `autoreply` are pure (mail and
//! rules in, a plan out), `store` is the database, `worker` and `commit` the I/O shell.

pub mod autoreply;
mod commit;
mod config;
pub mod dispatch;
pub mod events;
pub mod rules;
pub mod store;
mod worker;

use std::time::Duration;

pub use commit::Stats;
pub use config::Config;
use deskmail_configclient::{ConfigClient, ConfigWatcher};
use deskmail_mq::{Consumer, ConsumerOptions, MqError, Publisher, Topology};
use deskmail_runtime::CancellationToken;
use sha2::Digest;
use tokio::sync::mpsc;

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] MqError),
    #[error("tickets store: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    ConfigService(#[from] deskmail_configclient::ConfigClientError),
    /// A batch was left unacked at shutdown (the database was down); the broker has it again.
    #[error("stopped with a batch unsettled (database down); its mail went back to the queue")]
    Abandoned,
}

impl RouterError {
    /// Worth reconnecting to the broker and going on.
    fn is_transient(&self) -> bool {
        match self {
            RouterError::Broker(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Unix time in microseconds.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Opens the store, retrying with backoff while the database is unreachable.
async fn open_store(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<store::Store>, RouterError> {
    let mut delay = Duration::from_millis(500);
    loop {
        match store::Store::open(&config.database).await {
            Ok(s) => return Ok(Some(s)),
            Err(e @ store::StoreError::Directory { .. }) => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "Cannot open the tickets database; retrying."),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Runs the router until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RouterError> {
    let Some(store) = open_store(&config, &shutdown).await? else { return Ok(()) };
    tracing::info!(sqlite = config.database.is_sqlite(), "Tickets database ready.");
    let client = ConfigClient::new(&config.config_service)?;
    let watcher = ConfigWatcher::spawn(client, shutdown.child_token());
    let mut delay = Duration::from_millis(500);
    loop {
        let (connection, topology) =
            match deskmail_mq::connect_and_declare(&config.amqp, "deskmail-router", &shutdown).await {
                Ok(ready) => ready,
                Err(MqError::Cancelled) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
        tracing::info!(amqp = %config.amqp.redacted_url(), prefix = topology.prefix(), "Ready.");
        if watcher.current().is_none() {
            tracing::info!("Waiting for the first config from configd before consuming.");
        }
        if watcher.first_snapshot(&shutdown).await.is_none() {
            let _ = connection.close(200, "shutdown".into()).await;
            return Ok(());
        }
        let result = session(&config, &connection, &topology, &store, &watcher, &shutdown).await;
        let _ = connection.close(200, "shutdown".into()).await;
        match result {
            Ok(stats) => {
                tracing::info!(
                    created = stats.created,
                    followups = stats.followups,
                    ignored = stats.ignored,
                    duplicates = stats.duplicates,
                    dead_lettered = stats.dead_lettered,
                    "Router stopped."
                );
                return Ok(());
            }
            Err(RouterError::Abandoned) if shutdown.is_cancelled() => return Ok(()),
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, ?delay, "Broker connection lost; reconnecting. Unacked mail goes back to the queue and is deduplicated.");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Consumes until shutdown or a broker error.
async fn session(
    config: &Config,
    connection: &deskmail_mq::lapin::Connection,
    topology: &Topology,
    store: &store::Store,
    watcher: &ConfigWatcher,
    shutdown: &CancellationToken,
) -> Result<Stats, RouterError> {
    let publisher = Publisher::new(connection).await?.with_window(config.amqp.publish_window);
    let options = ConsumerOptions::new(topology.inbound_queue(), topology.inbound_dead_letter())
        .prefetch(config.amqp.prefetch);
    let consumer = Consumer::new(connection, options).await?;
    let acker = consumer.acker();
    let (tx, mut rx) = mpsc::channel(1);
    let limits = worker::BatchLimits {
        size: config.batch_size,
        bytes: config.batch_bytes,
        wait: config.batch_wait,
        parse: deskmail_mailparse::Limits { max_bytes: config.max_mail_size, ..Default::default() },
    };
    let collecting = shutdown.child_token();
    let collector = tokio::spawn(worker::collect(
        consumer,
        tx,
        worker::RulesCache::new(watcher.clone()),
        limits,
        collecting.clone(),
    ));
    let mut committer = commit::Committer {
        store,
        publisher: &publisher,
        acker,
        topology,
        shutdown: shutdown.clone(),
        stats: Stats::default(),
    };
    let mut failure = None;
    while let Some(batch) = rx.recv().await {
        if let Err(e) = committer.settle(batch).await {
            failure = Some(e);
            break;
        }
    }
    // Stop collecting; let the batch in flight (if any) be settled within the grace period.
    collecting.cancel();
    if failure.is_none() {
        let drain = async {
            while let Some(batch) = rx.recv().await {
                committer.settle(batch).await?;
            }
            Ok::<(), RouterError>(())
        };
        match tokio::time::timeout(config.shutdown_grace, drain).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => {
                tracing::warn!(grace = ?config.shutdown_grace, "Grace period over; unsettled mail goes back to the queue.")
            }
        }
    }
    drop(rx);
    let collected = collector.await;
    if let Ok((consumer, result)) = collected {
        if let Err(e) = consumer.close().await {
            tracing::warn!(error = %e, "Closing the consumer failed.");
        }
        if failure.is_none()
            && let Err(e) = result
        {
            failure = Some(e.into());
        }
    }
    let _ = publisher.close().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(committer.stats),
    }
}
