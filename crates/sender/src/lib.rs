//! deskmail-sender: consumes `<prefix>.outbound.jobs` and sends each job through the right SMTP
//! box (job, contract, company, system default), retrying temporary failures through the
//! retry queues and dead-lettering permanent ones with the server's reply.
//!
//! - [`job`]: reading and checking a job (pure).
//! - [`boxes`]: box resolution and a box's settings from configd's snapshot (pure).
//! - [`message`]: building the mail with lettre's builder (pure).
//! - [`sentlog`]: the sent-jobs log (sea-orm; SQLite or PostgreSQL), for idempotency.
//! - `pool`: per-box SMTP sessions (mailconn's TCP_NODELAY `SmtpSender`), OAuth2 tokens,
//!   rate limits, status reports.
//! - `worker`: one job from delivery to disposition; `consume`: the consumer loop on one
//!   connection (batched acks, graceful drain); `run`: startup, and reconnecting to RabbitMQ
//!   in-process when the connection is lost.
//! - `encode`: text and HTML bodies encoded in one pass (lettre's rules, faster).
//! - `health`: the `/readyz` checks (`rabbitmq`, `configd`, `database`); the metrics are
//!   `deskmail-telemetry`'s sender helpers, called where things happen.
//!
//! Must not depend on another daemon, nor on configd's store.

pub mod boxes;
mod config;
mod consume;
mod encode;
pub mod events;
mod health;
pub mod job;
mod lane;
pub mod message;
mod pool;
pub mod sentlog;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, RetryConfig, SmtpConfig};
use deskmail_configclient::{ConfigClient, ConfigWatcher};
use deskmail_mq::{MqError, Publisher};
use deskmail_runtime::CancellationToken;
use tracing::{info, warn};
pub use worker::{LAST_ERROR_HEADER, RETRIES_HEADER};

use crate::worker::Shared;

/// Why the sender stopped.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] MqError),
    #[error("{0}")]
    SentLog(#[from] sentlog::SentLogError),
    #[error("{0}")]
    ConfigService(#[from] deskmail_configclient::ConfigClientError),
    #[error("{0}")]
    Telemetry(#[from] deskmail_telemetry::TelemetryError),
}

/// First wait before reconnecting to RabbitMQ after the connection was lost; it doubles up
/// to [`RECONNECT_MAX`] while the broker stays away.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Runs the sender until `shutdown` is cancelled: telemetry (`[metrics]`: `/metrics`,
/// `/healthz`, `/readyz`), the sent-jobs log, configd's snapshot, then RabbitMQ, reconnecting
/// in-process whenever the connection is lost. Tells systemd READY once it consumes the first
/// time, STOPPING when shutdown begins, and pings its watchdog when asked to.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SenderError> {
    let telemetry =
        deskmail_telemetry::Telemetry::start(&config.metrics, "deskmail-sender", &shutdown).await?;
    deskmail_telemetry::sender::init();
    let flags = health::Flags::register(telemetry.readiness());
    let _watchdog = deskmail_runtime::notify::spawn_watchdog(shutdown.clone());
    let finished = CancellationToken::new();
    deskmail_runtime::notify::spawn_stopping_on(shutdown.clone(), finished.clone());
    let outcome = serve(&config, &shutdown, flags).await;
    finished.cancel();
    telemetry.stop().await;
    outcome
}

async fn open_sent_log(
    config: &Config,
    shutdown: &CancellationToken,
    database: &health::Database,
) -> Result<Option<sentlog::SentLog>, SenderError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match sentlog::SentLog::open(&config.sent_log).await {
            Ok(log) => {
                database.worked();
                return Ok(Some(log));
            }
            Err(sentlog::SentLogError::Directory { path, source }) => {
                return Err(sentlog::SentLogError::Directory { path, source }.into());
            }
            Err(e) => {
                database.failed(&e);
                warn!(error = %e, retry_in = ?delay, "Cannot open the sent-jobs log; not consuming until it works.")
            }
        }
        if sleep_or_stop(delay, shutdown).await {
            return Ok(None);
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Sleeps `delay`; true when `shutdown` came first.
async fn sleep_or_stop(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// Connects to RabbitMQ (retrying until `shutdown`) and declares the topology with this
/// sender's retry delays.
async fn connect(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(deskmail_mq::lapin::Connection, deskmail_mq::Topology), MqError> {
    let (connection, topology) =
        deskmail_mq::connect_and_declare(&config.amqp, "deskmail-sender", shutdown).await?;
    let delays = config.retry.durations();
    if delays == topology.retry_queues().iter().map(|r| r.delay).collect::<Vec<_>>() {
        return Ok((connection, topology));
    }
    let t = topology.with_retry_delays(&delays)?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|source| MqError::Amqp { op: "channel.open", source: Box::new(source) })?;
    t.declare(&channel).await?;
    let _ = channel.close(200, "declared".into()).await;
    Ok((connection, t))
}

async fn serve(
    config: &Config,
    shutdown: &CancellationToken,
    mut flags: health::Flags,
) -> Result<(), SenderError> {
    let Some(sent_log) = open_sent_log(config, shutdown, &flags.database).await? else { return Ok(()) };
    flags.database.spawn_ping(sent_log.clone(), shutdown.clone());
    let client = ConfigClient::new(&config.config_service)?;
    let watcher = ConfigWatcher::spawn(client.clone(), shutdown.clone());
    if let Some(flag) = flags.configd.take() {
        health::spawn_configd(&watcher, flag, shutdown.clone());
    }
    info!(configd = client.url(), "Waiting for configd's config before consuming.");
    let Some(first) = watcher.first_snapshot(shutdown).await else { return Ok(()) };
    info!(
        revision = first.revision,
        boxes = first.mailboxes.iter().filter(|m| m.outbound.is_some()).count(),
        "Config received."
    );
    let reporter = deskmail_configclient::holder_id("deskmail-sender");
    let pools = pool::Pools::new(config.smtp.clone(), client, reporter);
    let (connection, topology) = match connect(config, shutdown).await {
        Ok(c) => c,
        Err(MqError::Cancelled) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let publisher = Publisher::new(&connection).await?.with_window(config.amqp.publish_window);
    let shared = Arc::new(Shared::new(
        topology,
        publisher,
        sent_log,
        watcher,
        pools,
        shutdown.clone(),
        config.shutdown_grace,
        flags.database.clone(),
    ));
    let mut connection = Some(connection);
    let mut delay = RECONNECT_FIRST;
    let mut announced = false;
    // The first connection is the one made above; later ones are made here.
    let result = loop {
        let conn = match connection.take() {
            Some(c) => c,
            None => match connect(config, shutdown).await {
                Ok((c, _)) => c,
                Err(MqError::Cancelled) => break Ok(()),
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "Reconnecting to RabbitMQ failed; trying again.");
                    flags.rabbitmq.set_unready(format!("reconnecting: {e}"));
                    if sleep_or_stop(delay, shutdown).await {
                        break Ok(());
                    }
                    delay = (delay * 2).min(RECONNECT_MAX);
                    continue;
                }
            },
        };
        let conn = Arc::new(conn);
        let since = std::time::Instant::now();
        let outcome = consume::consume_on(config, &conn, &shared, &flags, shutdown, &mut announced).await;
        let _ = conn.close(200, "shutdown".into()).await;
        let Err(e) = outcome else { break Ok(()) };
        // A connection that worked for a while starts the backoff over; one that fails at
        // once (a queue the broker refuses) backs off further.
        delay =
            if since.elapsed() > RECONNECT_MAX { RECONNECT_FIRST } else { (delay * 2).min(RECONNECT_MAX) };
        warn!(error = %e, retry_in = ?delay, "Lost RabbitMQ; reconnecting (jobs not yet acked go back to the queue).");
        flags.rabbitmq.set_unready(format!("connection lost, reconnecting: {e}"));
        if sleep_or_stop(delay, shutdown).await {
            break Ok(());
        }
    };
    shared.pools.close_all().await;
    if let Err(e) = shared.publisher.close().await {
        warn!(error = %e, "Closing the publisher failed.");
    }
    result
}
