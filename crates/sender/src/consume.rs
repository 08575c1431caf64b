//! Consuming `<prefix>.outbound.jobs` on one RabbitMQ connection: up to `max_in_flight` jobs
//! at once, acks held back and sent as one `basic.ack multiple`, and a graceful drain when the
//! sender stops or the connection breaks.

use std::sync::Arc;
use std::time::Duration;

use deskmail_mq::{Consumer, ConsumerOptions, Delivery, MqError};
use deskmail_runtime::CancellationToken;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Config;
use crate::health;
use crate::worker::{self, Outcome, Shared};

/// Consumes on one connection until shutdown (`Ok`) or until it breaks (`Err`: reconnect).
/// The jobs in flight finish (within the grace period) before this returns; those whose delivery died with the
/// connection are redelivered, and the sent-jobs log keeps them from going out twice.
pub(crate) async fn consume_on(
    config: &Config,
    connection: &Arc<deskmail_mq::lapin::Connection>,
    shared: &Arc<Shared>,
    flags: &health::Flags,
    shutdown: &CancellationToken,
    announced: &mut bool,
) -> Result<(), MqError> {
    let topology = &shared.topology;
    shared.publisher.reopen(connection).await?;
    let max = config.smtp.max_in_flight.max(1);
    // The broker may push more than is handled at once; the loop takes only `max` at a time.
    let prefetch = config.amqp.prefetch.max(u16::try_from(max).unwrap_or(u16::MAX));
    let options =
        ConsumerOptions::new(topology.outbound_queue(), topology.outbound_dead_letter()).prefetch(prefetch);
    let mut consumer = Consumer::new(connection, options).await?;
    // Per connection: the readiness check follows this connection (a resource alarm makes it
    // unready too) and the consumer lag is sampled on it.
    let watching = shutdown.child_token();
    deskmail_telemetry::rabbitmq::spawn_connection_check(
        connection.clone(),
        flags.readiness.register("rabbitmq"),
        Duration::from_secs(2),
        watching.clone(),
    );
    deskmail_telemetry::queue::spawn_consumer_lag_on(
        connection.clone(),
        consumer.queue().to_owned(),
        Duration::from_secs(5),
        watching.clone(),
    );
    flags.rabbitmq.set_ready();
    if *announced {
        info!(queue = consumer.queue(), "Reconnected to RabbitMQ; consuming again.");
    } else {
        info!(
            amqp = %config.amqp.redacted_url(),
            prefix = topology.prefix(),
            queue = consumer.queue(),
            max_in_flight = max,
            retry_delays = ?topology.retry_queues().iter().map(|r| r.delay).collect::<Vec<_>>(),
            "Ready."
        );
        deskmail_runtime::notify::ready();
        *announced = true;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut l = Loop { tx, rx, in_flight: 0, acks: AckWindow::default() };
    let result = consume(&mut consumer, shared, max, shutdown, &mut l).await;
    let drained = drain(consumer, shared, &mut l, result.is_ok()).await;
    watching.cancel();
    result?;
    drained
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
        Outcome::DeadLetter(reason, kind) => match consumer.dead_letter(d, &reason).await {
            Ok(()) => {
                deskmail_telemetry::sender::job_dead_lettered(kind);
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
