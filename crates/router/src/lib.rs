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
mod observe;
pub mod rules;
pub mod store;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use commit::Stats;
pub use config::Config;
use deskmail_configclient::{ConfigClient, ConfigWatcher};
use deskmail_mq::{Consumer, ConsumerOptions, MqError, Publisher, Topology};
use deskmail_runtime::CancellationToken;
use deskmail_telemetry::{Readiness, ReadyFlag, Telemetry, TelemetryError};
use sha2::Digest;
use tokio::sync::mpsc;

/// How often the readiness checks and the consumer-lag sampler look.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reconnect to the broker.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Why the router stopped.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] MqError),
    #[error("tickets store: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    ConfigService(#[from] deskmail_configclient::ConfigClientError),
    #[error("{0}")]
    Telemetry(#[from] TelemetryError),
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

/// The span of one mail: its source id (the AMQP `message_id`), its inbound mailbox and
/// whether the broker redelivered it. Log lines of the work on this mail carry it.
pub(crate) fn mail_span(source_id: &str, mailbox_id: Option<&str>, redelivered: bool) -> tracing::Span {
    tracing::info_span!("mail", source_id = %source_id, mailbox = mailbox_id.unwrap_or(""), redelivered)
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

/// Opens the store, retrying with backoff while the database is unreachable (the `database`
/// check says so meanwhile).
async fn open_store(
    config: &Config,
    flag: &ReadyFlag,
    shutdown: &CancellationToken,
) -> Result<Option<store::Store>, RouterError> {
    let mut delay = Duration::from_millis(500);
    loop {
        match store::Store::open(&config.database).await {
            Ok(s) => return Ok(Some(s)),
            Err(e @ store::StoreError::Directory { .. }) => return Err(e.into()),
            Err(e) => {
                flag.set_unready("cannot open the tickets database");
                tracing::warn!(error = %e, "Cannot open the tickets database; retrying.");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Runs the router until `shutdown` is cancelled: telemetry (`[metrics]`: `/metrics`,
/// `/healthz`, `/readyz` with the checks `rabbitmq`, `configd`, `database`), systemd
/// notifications, then the store, configd's watch and the broker, reconnecting to the broker
/// in-process whenever the connection is lost.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RouterError> {
    let telemetry = Telemetry::start(&config.metrics, "deskmail-router", &shutdown).await?;
    deskmail_telemetry::router::init();
    let background = CancellationToken::new();
    deskmail_runtime::notify::spawn_watchdog(background.clone());
    deskmail_runtime::notify::spawn_stopping_on(shutdown.clone(), background.clone());
    let result = run_with(&config, &telemetry.readiness(), &shutdown, &background).await;
    background.cancel();
    telemetry.stop().await;
    result
}

async fn run_with(
    config: &Config,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    background: &CancellationToken,
) -> Result<(), RouterError> {
    let rabbit = readiness.register("rabbitmq");
    let database = readiness.register("database");
    let Some(store) = open_store(config, &database, shutdown).await? else { return Ok(()) };
    database.set_ready();
    observe::spawn_database_check(store.clone(), database.clone(), CHECK_EVERY, background.clone());
    tracing::info!(sqlite = config.database.is_sqlite(), "Tickets database ready.");
    let client = ConfigClient::new(&config.config_service)?;
    let watcher = ConfigWatcher::spawn(client, shutdown.child_token());
    // Ready while the config Watch stream is open; routing goes on from the last snapshot.
    let configd = watcher.clone();
    readiness.register("configd").spawn_probe(CHECK_EVERY, background.clone(), move || {
        std::future::ready(configd.readiness("routing"))
    });
    let mut delay = Duration::from_millis(500);
    let mut ever_connected = false;
    let mut notified = false;
    let mut stats = Stats::default();
    loop {
        rabbit.set_unready(if ever_connected { "connection lost, reconnecting" } else { "connecting" });
        let connected = deskmail_mq::connect_and_declare(&config.amqp, "deskmail-router", shutdown).await;
        let (connection, topology) = match connected {
            Ok(ready) => ready,
            Err(MqError::Cancelled) => break,
            // Refused at the first start (credentials, vhost): a config problem. Once it
            // worked, a refusal is the broker's state (a vhost limit, a node starting): wait.
            Err(e) if ever_connected || e.is_transient() => {
                rabbit.set_unready(format!("connect_failed: {e}"));
                tracing::warn!(error = %e, ?delay, "Cannot reconnect to RabbitMQ; retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        ever_connected = true;
        let connection = Arc::new(connection);
        let session_token = background.child_token();
        let checker = deskmail_telemetry::rabbitmq::spawn_connection_check(
            connection.clone(),
            readiness.register("rabbitmq"),
            CHECK_EVERY,
            session_token.clone(),
        );
        deskmail_telemetry::queue::spawn_consumer_lag_on(
            connection.clone(),
            topology.inbound_queue(),
            CHECK_EVERY,
            session_token.clone(),
        );
        tracing::info!(amqp = %config.amqp.redacted_url(), prefix = topology.prefix(), "Ready.");
        if watcher.current().is_none() {
            tracing::info!("Waiting for the first config from configd before consuming.");
        }
        let result = match watcher.first_snapshot(shutdown).await {
            None => Ok(Stats::default()),
            Some(_) => {
                if !notified {
                    deskmail_runtime::notify::ready();
                    notified = true;
                }
                session(config, &connection, &topology, &store, &watcher, &database, shutdown).await
            }
        };
        session_token.cancel();
        let _ = checker.await;
        rabbit.set_unready("connection lost, reconnecting");
        // A connection that already failed may never answer the close: do not wait on it.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.close(200, "shutdown".into())).await;
        match result {
            Ok(s) => {
                add(&mut stats, &s);
                break;
            }
            Err(RouterError::Abandoned) if shutdown.is_cancelled() => break,
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, ?delay, "Broker connection lost; reconnecting. Unacked mail goes back to the queue and is deduplicated.");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!(
        created = stats.created,
        followups = stats.followups,
        ignored = stats.ignored,
        duplicates = stats.duplicates,
        dead_lettered = stats.dead_lettered,
        "Router stopped."
    );
    stats.phases.log();
    Ok(())
}

/// Adds a session's counters to the run's.
fn add(total: &mut Stats, s: &Stats) {
    total.created += s.created;
    total.followups += s.followups;
    total.ignored += s.ignored;
    total.duplicates += s.duplicates;
    total.dead_lettered += s.dead_lettered;
    total.auto_replies_over_limit += s.auto_replies_over_limit;
    total.phases += s.phases;
}

/// Consumes until shutdown or a broker error.
async fn session(
    config: &Config,
    connection: &deskmail_mq::lapin::Connection,
    topology: &Topology,
    store: &store::Store,
    watcher: &ConfigWatcher,
    database: &ReadyFlag,
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
        database: database.clone(),
        published: Vec::new(),
        pending: None,
    };
    let mut failure = None;
    // A committed batch is published and acked while the next one commits; when no batch
    // is ready, it is published and acked at once.
    loop {
        let batch = if committer.has_pending() {
            match rx.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Err(e) = committer.flush().await {
                        failure = Some(e);
                        break;
                    }
                    rx.recv().await
                }
            }
        } else {
            rx.recv().await
        };
        let Some(batch) = batch else { break };
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
            committer.flush().await
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
    committer.flush_published().await;
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
