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
//! - `run` (here): telemetry (`/metrics`, `/healthz`, `/readyz` with `rabbitmq` and
//!   `configd`), systemd notifications, and the broker session loop, which reconnects
//!   in-process when the AMQP connection is lost (mailbox tasks stop meanwhile).

mod config;
mod imap;
mod poll;
mod pop3;
mod publish;
mod settings;
mod supervisor;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, FetchConfig};
use deskmail_configclient::{ConfigClient, ConfigWatcher, holder_id};
use deskmail_mq::{MqError, Topology};
use deskmail_runtime::CancellationToken;
use deskmail_telemetry::{Readiness, Telemetry, TelemetryError};
pub use imap::OVERSIZED_FOLDER;

use crate::publish::Broker;
use crate::supervisor::Supervisor;
use crate::worker::Shared;

/// How often the readiness checks look, and the session checks its broker connection.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// First wait before reconnecting to RabbitMQ; doubled on each failure up to the max.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Why the fetcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] MqError),
    #[error("{0}")]
    ConfigService(#[from] deskmail_configclient::ConfigClientError),
    #[error("{0}")]
    Telemetry(#[from] TelemetryError),
    #[error("RabbitMQ connection lost")]
    BrokerLost,
}

impl FetcherError {
    /// Worth reconnecting to the broker and going on.
    fn is_transient(&self) -> bool {
        match self {
            FetcherError::Broker(e) => e.is_transient(),
            FetcherError::BrokerLost => true,
            _ => false,
        }
    }
}

/// Runs the fetcher until `shutdown` is cancelled: telemetry (`[metrics]`: `/metrics`,
/// `/healthz`, `/readyz` with the checks `rabbitmq` and `configd`), systemd notifications,
/// configd's watch, then the broker, reconnecting to it in-process whenever the connection is
/// lost (mailbox polling pauses meanwhile; unconfirmed mail stays on the servers).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), FetcherError> {
    let telemetry = Telemetry::start(&config.metrics, "deskmail-fetcher", &shutdown).await?;
    let background = CancellationToken::new();
    let _watchdog = deskmail_runtime::notify::spawn_watchdog(background.clone());
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
) -> Result<(), FetcherError> {
    let rabbit = readiness.register("rabbitmq");
    let client = ConfigClient::new(&config.config_service)?;
    let holder = holder_id("deskmail-fetcher");
    let watcher = ConfigWatcher::spawn(client.clone(), shutdown.clone());
    // Ready while the config Watch stream is open; polling goes on from the last snapshot.
    let configd = watcher.clone();
    readiness.register("configd").spawn_probe(CHECK_EVERY, background.clone(), move || {
        std::future::ready(configd.readiness("polling"))
    });
    let mut delay = FIRST_RECONNECT_DELAY;
    let mut ever_connected = false;
    let mut notified = false;
    loop {
        rabbit.set_unready(if ever_connected { "connection lost, reconnecting" } else { "connecting" });
        let connected = deskmail_mq::connect_and_declare(&config.amqp, "deskmail-fetcher", shutdown).await;
        let (connection, topology) = match connected {
            Ok(ready) => ready,
            Err(MqError::Cancelled) => break,
            // Refused at the first start (credentials, vhost): a config problem. Once it
            // worked, a refusal is the broker's state (a vhost limit, a node starting): wait.
            Err(e) if ever_connected || e.is_transient() => {
                rabbit.set_unready(format!("connect_failed: {e}"));
                tracing::warn!(error = %e, retry_in = ?delay, "Cannot reconnect to RabbitMQ; retrying.");
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
        delay = FIRST_RECONNECT_DELAY;
        let connection = Arc::new(connection);
        let session_token = background.child_token();
        let checker = deskmail_telemetry::rabbitmq::spawn_connection_check(
            connection.clone(),
            readiness.register("rabbitmq"),
            CHECK_EVERY,
            session_token.clone(),
        );
        tracing::info!(
            amqp = %config.amqp.redacted_url(),
            prefix = topology.prefix(),
            configd = client.url(),
            holder = %holder,
            "Ready."
        );
        let result =
            session(config, &connection, topology, &client, &holder, &watcher, shutdown, &mut notified).await;
        session_token.cancel();
        let _ = checker.await;
        rabbit.set_unready("connection lost, reconnecting");
        let _ = connection.close(200, "shutdown".into()).await;
        match result {
            Ok(()) => break,
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?delay, "Lost the RabbitMQ connection; reconnecting. Mailbox polling is paused; mail not confirmed stays on the servers.");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One broker connection's life: mailbox tasks run while it is up. Ends `Ok` on shutdown,
/// with [`FetcherError::BrokerLost`] (or the broker error) when the connection is lost; the
/// mailbox tasks are stopped either way (what they published and had confirmed is flagged or
/// deleted; the rest stays on the servers) and the leases are given back.
#[allow(clippy::too_many_arguments)]
async fn session(
    config: &Config,
    connection: &deskmail_mq::lapin::Connection,
    topology: Topology,
    client: &ConfigClient,
    holder: &str,
    watcher: &ConfigWatcher,
    shutdown: &CancellationToken,
    notified: &mut bool,
) -> Result<(), FetcherError> {
    let publisher = deskmail_mq::Publisher::new(connection).await?;
    let shared = Arc::new(Shared {
        broker: Broker::new(publisher, topology, config.fetch.max_inflight_bytes),
        client: client.clone(),
        holder: holder.to_owned(),
        window: config.amqp.publish_window.max(1),
        polls: tokio::sync::Semaphore::new(config.fetch.max_concurrent_mailboxes as usize),
        fetch: config.fetch.clone(),
    });
    let mut snapshots = watcher.subscribe();
    let mut supervisor = Supervisor::new(shared.clone());
    let ttl = config.fetch.lease_ttl;
    let mut renew = tokio::time::interval(ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = check.tick() => {
                if !connection.status().connected() {
                    // Without a broker nothing can be fetched safely: the mailbox tasks stop
                    // (mail stays on the servers) until the connection is back.
                    break Err(FetcherError::BrokerLost);
                }
                if !shared.broker.publisher.is_open()
                    && let Err(e) = shared.broker.publisher.reopen(connection).await
                {
                    break Err(e.into());
                }
            }
            _ = renew.tick() => {
                if watcher.current().is_some() {
                    supervisor.renew_leases(ttl).await;
                    supervisor.reconcile(watcher.current().as_ref());
                    if !*notified {
                        // Started: broker connected and the first config in hand.
                        deskmail_runtime::notify::ready();
                        *notified = true;
                    }
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                // A new or re-enabled box needs a lease before it can be polled.
                supervisor.renew_leases(ttl).await;
                let snapshot = snapshots.borrow_and_update().clone();
                supervisor.reconcile(snapshot.as_ref());
            }
        }
    };
    if result.is_ok() {
        tracing::info!("Stopping: letting polls in flight finish.");
    } else {
        tracing::error!("Lost the RabbitMQ connection; stopping the mailbox tasks until it is back.");
    }
    supervisor.stop(config.shutdown_grace).await;
    let _ = shared.broker.publisher.close().await;
    result
}
