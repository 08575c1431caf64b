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
//! - `worker`: one job from delivery to disposition; `run`: the consumer loop.
//!
//! Must not depend on another daemon, nor on configd's store.

pub mod boxes;
mod config;
pub mod events;
pub mod job;
pub mod message;
mod pool;
pub mod sentlog;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, RetryConfig, SmtpConfig};
use deskmail_configclient::{ConfigClient, ConfigWatcher};
use deskmail_mq::{Consumer, ConsumerOptions, Delivery, MqError, Publisher};
use deskmail_runtime::CancellationToken;
use tokio::sync::mpsc;
use tracing::{info, warn};
pub use worker::{LAST_ERROR_HEADER, RETRIES_HEADER};

use crate::worker::{Outcome, Shared};

/// Why the sender stopped.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] MqError),
    #[error("{0}")]
    SentLog(#[from] sentlog::SentLogError),
    #[error("{0}")]
    ConfigService(#[from] deskmail_configclient::ConfigClientError),
}

/// Runs the sender until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SenderError> {
    let (connection, topology) =
        match deskmail_mq::connect_and_declare(&config.amqp, "deskmail-sender", &shutdown).await {
            Ok(ready) => ready,
            Err(MqError::Cancelled) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    let delays = config.retry.durations();
    let topology = if delays != topology.retry_queues().iter().map(|r| r.delay).collect::<Vec<_>>() {
        let t = topology.with_retry_delays(&delays)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|source| MqError::Amqp { op: "channel.open", source: Box::new(source) })?;
        t.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        t
    } else {
        topology
    };
    let outcome = serve(&config, &connection, topology, &shutdown).await;
    let _ = connection.close(200, "shutdown".into()).await;
    outcome
}

async fn open_sent_log(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<sentlog::SentLog>, SenderError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match sentlog::SentLog::open(&config.sent_log).await {
            Ok(log) => return Ok(Some(log)),
            Err(sentlog::SentLogError::Directory { path, source }) => {
                return Err(sentlog::SentLogError::Directory { path, source }.into());
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "Cannot open the sent-jobs log; not consuming until it works.")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn serve(
    config: &Config,
    connection: &deskmail_mq::lapin::Connection,
    topology: deskmail_mq::Topology,
    shutdown: &CancellationToken,
) -> Result<(), SenderError> {
    let Some(sent_log) = open_sent_log(config, shutdown).await? else { return Ok(()) };
    let client = ConfigClient::new(&config.config_service)?;
    let watcher = ConfigWatcher::spawn(client.clone(), shutdown.clone());
    info!(configd = client.url(), "Waiting for configd's config before consuming.");
    let Some(first) = watcher.first_snapshot(shutdown).await else { return Ok(()) };
    info!(
        revision = first.revision,
        boxes = first.mailboxes.iter().filter(|m| m.outbound.is_some()).count(),
        "Config received."
    );
    let publisher = Publisher::new(connection).await?.with_window(config.amqp.publish_window);
    let reporter = deskmail_configclient::holder_id("deskmail-sender");
    let pools = pool::Pools::new(config.smtp.clone(), client, reporter);
    let shared = Arc::new(Shared::new(
        topology.clone(),
        publisher,
        sent_log,
        watcher,
        pools,
        shutdown.clone(),
        config.shutdown_grace,
    ));
    let max = config.smtp.max_in_flight.max(1);
    // The broker may push more than is handled at once; the loop takes only `max` at a time.
    let prefetch = config.amqp.prefetch.max(u16::try_from(max).unwrap_or(u16::MAX));
    let options =
        ConsumerOptions::new(topology.outbound_queue(), topology.outbound_dead_letter()).prefetch(prefetch);
    let mut consumer = Consumer::new(connection, options).await?;
    info!(
        amqp = %config.amqp.redacted_url(),
        prefix = topology.prefix(),
        queue = consumer.queue(),
        max_in_flight = max,
        retry_delays = ?topology.retry_queues().iter().map(|r| r.delay).collect::<Vec<_>>(),
        "Ready."
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let mut l = Loop { tx, rx, in_flight: 0, acks: AckWindow::default() };
    let result = consume(&mut consumer, &shared, max, shutdown, &mut l).await;
    let drained = drain(consumer, &shared, &mut l, result.is_ok()).await;
    shared.pools.close_all().await;
    if let Err(e) = shared.publisher.close().await {
        warn!(error = %e, "Closing the publisher failed.");
    }
    result?;
    drained?;
    Ok(())
}

type Settled = (Delivery, Outcome);

struct Loop {
    tx: mpsc::UnboundedSender<Settled>,
    rx: mpsc::UnboundedReceiver<Settled>,
    in_flight: usize,
    acks: AckWindow,
}

/// Acks held back to go out as one `basic.ack multiple`. Every delivery taken is here until
/// it is settled; a job that ended in `Ack` is marked ready. The ready deliveries at the
/// front (lowest tags, nothing unsettled before them) are acked with one frame; ready ones
/// behind a job still running wait, but never more than [`ACK_HOLD`] of them.
#[derive(Debug, Default)]
struct AckWindow {
    /// Delivery tag -> ready to ack.
    pending: std::collections::BTreeMap<u64, bool>,
    held: usize,
}

/// Most ready acks held behind an unsettled job before they are acked one by one.
const ACK_HOLD: usize = 64;

impl AckWindow {
    fn taken(&mut self, tag: u64) {
        self.pending.insert(tag, false);
    }
    fn ready(&mut self, tag: u64) {
        if let Some(r) = self.pending.get_mut(&tag) {
            *r = true;
            self.held += 1;
        }
    }
    fn forget(&mut self, tag: u64) {
        if self.pending.remove(&tag) == Some(true) {
            self.held -= 1;
        }
    }
    /// Sends the acks that can go: the ready front with one multiple ack, and, when too many
    /// wait behind an unsettled job (or `all`), the others one by one.
    async fn flush(&mut self, acker: &deskmail_mq::Acker, all: bool) -> Result<(), MqError> {
        let mut last = None;
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
            self.held -= 1;
        }
        if let Some(tag) = last {
            acker.ack_up_to(tag).await?;
        }
        if all || self.held > ACK_HOLD {
            let ready: Vec<u64> = self.pending.iter().filter(|(_, r)| **r).map(|(t, _)| *t).collect();
            for tag in ready {
                acker.ack(tag).await?;
                self.forget(tag);
            }
        }
        Ok(())
    }
}

/// The consumer loop: up to `max` jobs at once, each settled here when its task is done.
async fn consume(
    consumer: &mut Consumer,
    shared: &Arc<Shared>,
    max: usize,
    shutdown: &CancellationToken,
    l: &mut Loop,
) -> Result<(), MqError> {
    let acker = consumer.acker();
    loop {
        tokio::select! {
            biased;
            Some((d, outcome)) = l.rx.recv() => {
                l.in_flight -= 1;
                settle(consumer, &acker, &mut l.acks, &d, outcome).await?;
                // Whatever else finished meanwhile, then one multiple ack for all of it.
                while let Ok((d, outcome)) = l.rx.try_recv() {
                    l.in_flight -= 1;
                    settle(consumer, &acker, &mut l.acks, &d, outcome).await?;
                }
                l.acks.flush(&acker, false).await?;
            }
            () = shutdown.cancelled() => return Ok(()),
            next = consumer.next_delivery(), if l.in_flight < max => match next {
                Some(Ok(d)) => {
                    l.in_flight += 1;
                    l.acks.taken(d.delivery_tag());
                    let (shared, tx) = (shared.clone(), l.tx.clone());
                    tokio::spawn(async move {
                        let outcome = worker::handle(shared, d.clone()).await;
                        let _ = tx.send((d, outcome));
                    });
                }
                Some(Err(e)) => return Err(e),
                None => return Err(MqError::ConsumerCancelled { queue: consumer.queue().to_owned() }),
            },
        }
    }
}

/// Settles one finished job: an ack is only marked (sent by [`AckWindow::flush`]), a requeue
/// or dead letter goes out at once.
async fn settle(
    consumer: &Consumer,
    acker: &deskmail_mq::Acker,
    acks: &mut AckWindow,
    d: &Delivery,
    outcome: Outcome,
) -> Result<(), MqError> {
    if outcome == Outcome::Ack {
        acks.ready(d.delivery_tag());
        return Ok(());
    }
    acks.forget(d.delivery_tag());
    match outcome {
        Outcome::Ack => Ok(()),
        Outcome::Requeue => acker.nack(d.delivery_tag(), true).await,
        Outcome::DeadLetter(reason) => match consumer.dead_letter(d, &reason).await {
            Ok(()) => {
                warn!(job_id = d.message_id().unwrap_or(""), %reason, "Dead-lettered.");
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "Dead-lettering failed; requeued.");
                acker.nack(d.delivery_tag(), true).await
            }
        },
    }
}

/// Graceful stop: no new deliveries, the jobs in flight finish (within the grace period)
/// and are settled, prefetched ones go back to the queue, the channels close.
async fn drain(mut consumer: Consumer, shared: &Shared, l: &mut Loop, healthy: bool) -> Result<(), MqError> {
    let acker = consumer.acker();
    let mut result = Ok(());
    if healthy && let Err(e) = consumer.cancel().await {
        warn!(error = %e, "basic.cancel failed.");
    }
    if l.in_flight > 0 {
        info!(in_flight = l.in_flight, grace = ?shared.grace, "Stopping: letting the jobs in flight finish.");
    }
    let deadline = tokio::time::Instant::now() + shared.grace;
    while l.in_flight > 0 {
        tokio::select! {
            Some((d, outcome)) = l.rx.recv() => {
                l.in_flight -= 1;
                if healthy && result.is_ok() {
                    result = settle(&consumer, &acker, &mut l.acks, &d, outcome).await;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                warn!(in_flight = l.in_flight, "Grace period over with jobs still in flight; they go back to the queue.");
                break;
            }
        }
    }
    if healthy && result.is_ok() {
        result = l.acks.flush(&acker, true).await;
    }
    if healthy && result.is_ok() {
        let mut returned = 0u64;
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_secs(2), consumer.next_delivery()).await
        {
            returned += 1;
            if let Err(e) = acker.nack(d.delivery_tag(), true).await {
                warn!(error = %e, "Returning a prefetched job failed; closing the channel returns it.");
                break;
            }
        }
        if returned > 0 {
            info!(returned, "Returned prefetched jobs to the queue unhandled.");
        }
    }
    if let Err(e) = consumer.close().await {
        warn!(error = %e, "Closing the consumer failed.");
    }
    result
}
