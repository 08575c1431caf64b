//! Metrics every daemon shares: the depth of the queue it consumes (consumer lag), sampled
//! with a passive `queue.declare`, and `deskmail_build_info`.

use std::borrow::Borrow;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Gauge `{queue}`: messages ready for delivery in the queue (not yet delivered to a
/// consumer): the consumer lag.
pub const MESSAGES_READY: &str = "deskmail_queue_messages_ready";
/// Gauge `{queue}`: consumers on the queue, as the broker counts them.
pub const CONSUMERS: &str = "deskmail_queue_consumers";
/// Counter `{queue}`: failed samples (channel closed, queue missing, broker away).
pub const SAMPLE_ERRORS_TOTAL: &str = "deskmail_queue_sample_errors_total";
/// Gauge `{daemon, version}`: always 1; says which daemon and version this process runs.
pub const BUILD_INFO: &str = "deskmail_build_info";

/// Label key of the queue's full name (with the configured prefix).
pub const QUEUE: &str = "queue";

/// One sample of a queue, from the broker's answer to a passive declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready for delivery.
    pub messages_ready: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Asks the broker for `queue`'s depth with a passive `queue.declare` (exact, unlike the
/// management API's statistics) and sets [`MESSAGES_READY`] and [`CONSUMERS`].
///
/// A missing queue is a `404 NOT_FOUND` channel error: the broker closes `channel`.
pub async fn sample(channel: &Channel, queue: &str) -> Result<QueueDepth, lapin::Error> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let depth = QueueDepth { messages_ready: q.message_count(), consumers: q.consumer_count() };
    gauge!(MESSAGES_READY, QUEUE => queue.to_owned()).set(f64::from(depth.messages_ready));
    gauge!(CONSUMERS, QUEUE => queue.to_owned()).set(f64::from(depth.consumers));
    Ok(depth)
}

/// Samples `queue` on `channel` every `every` until `shutdown`, updating the gauges.
///
/// Give it a channel of its own: a failed passive declare (queue deleted) closes the channel.
/// A failed sample counts in [`SAMPLE_ERRORS_TOTAL`] (WARN on the first of a run of failures,
/// INFO when sampling works again); the gauges keep their last value. Once the channel is
/// closed for good the task ends with a WARN; [`spawn_consumer_lag_on`] reopens instead.
pub fn spawn_consumer_lag(
    channel: Channel,
    queue: impl Into<String>,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    spawn_loop(Source::Channel(channel), queue.into(), every, shutdown)
}

/// Like [`spawn_consumer_lag`] but owns its channel on `connection` (an
/// `Arc<lapin::Connection>` the daemon shares, or a `Connection` of its own): opens one, and
/// opens a new one whenever the broker closed it (a deleted queue), so sampling resumes by
/// itself.
pub fn spawn_consumer_lag_on<C>(
    connection: C,
    queue: impl Into<String>,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    C: Borrow<Connection> + Send + Sync + 'static,
{
    spawn_loop(
        Source::Connection { connection: Box::new(connection), channel: None },
        queue.into(),
        every,
        shutdown,
    )
}

/// Anything that lends a [`Connection`]: `Connection`, `Arc<Connection>`.
trait ConnectionRef: Send + Sync {
    fn connection(&self) -> &Connection;
}

impl<C: Borrow<Connection> + Send + Sync> ConnectionRef for C {
    fn connection(&self) -> &Connection {
        self.borrow()
    }
}

enum Source {
    Channel(Channel),
    Connection { connection: Box<dyn ConnectionRef>, channel: Option<Channel> },
}

impl Source {
    /// The channel to sample on: `Ok(None)` when a borrowed channel is gone for good.
    async fn channel(&mut self) -> Result<Option<&Channel>, lapin::Error> {
        match self {
            Source::Channel(ch) => {
                let status = ch.status();
                Ok((status.connected() || status.reconnecting()).then_some(&*ch))
            }
            Source::Connection { connection, channel } => {
                let usable =
                    channel.as_ref().is_some_and(|c| c.status().connected() || c.status().reconnecting());
                if !usable {
                    *channel = Some(connection.connection().create_channel().await?);
                }
                Ok(channel.as_ref())
            }
        }
    }
}

fn spawn_loop(
    mut source: Source,
    queue: String,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let result = match source.channel().await {
                Ok(None) => {
                    warn!(queue = %queue, "Channel closed; consumer lag of this queue is no longer sampled.");
                    break;
                }
                Ok(Some(channel)) => sample(channel, &queue).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(depth) => {
                    if failing {
                        info!(queue = %queue, "Sampling the queue's depth works again.");
                        failing = false;
                    }
                    debug!(queue = %queue, ready = depth.messages_ready, consumers = depth.consumers, "Queue sampled.");
                }
                Err(e) => {
                    counter!(SAMPLE_ERRORS_TOTAL, QUEUE => queue.clone()).increment(1);
                    if !failing {
                        warn!(queue = %queue, error = %e, "Cannot sample the queue's depth; will retry.");
                        failing = true;
                    }
                }
            }
        }
    })
}

/// Sets `deskmail_build_info{daemon, version} 1`.
pub fn build_info(daemon: &str) {
    gauge!(BUILD_INFO, "daemon" => daemon.to_owned(), "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

pub(crate) fn describe() {
    describe_gauge!(MESSAGES_READY, "Messages ready for delivery in the consumed queue (consumer lag).");
    describe_gauge!(CONSUMERS, "Consumers on the consumed queue.");
    describe_counter!(SAMPLE_ERRORS_TOTAL, "Failed samples of the consumed queue's depth.");
    describe_gauge!(BUILD_INFO, "Always 1: which daemon and version this process runs.");
}
