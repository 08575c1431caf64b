//! [`Consumer::run`]: the handler loop with batched acks and a graceful stop.

use std::future::Future;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::consumer::{Acker, Consumer};
use crate::delivery::Delivery;
use crate::error::MqError;

/// What to do with a handled delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done and durable: acknowledge (batched).
    Ack,
    /// Put it back for another try (counts toward the queue's delivery limit).
    Requeue,
    /// Cannot ever be handled: publish it to the dead-letter exchange with `x-deskmail-error`,
    /// then ack it. If that publish is not confirmed, the message is requeued instead.
    DeadLetter {
        /// Why, for the operator (the `x-deskmail-error` header).
        reason: String,
    },
}

/// What a [`Consumer::run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Deliveries acknowledged after [`Disposition::Ack`].
    pub acked: u64,
    /// Deliveries requeued ([`Disposition::Requeue`] or a failed dead-letter publish).
    pub requeued: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
    /// Prefetched deliveries never given to the handler, returned to the queue at stop.
    pub returned_unhandled: u64,
    /// The grace period ran out with the handler still busy; its delivery went back to the
    /// queue when the channel closed.
    pub abandoned: bool,
}

/// Acks collected for one `basic.ack multiple`.
struct AckBatch {
    highest: Option<u64>,
    pending: usize,
    limit: usize,
}

impl AckBatch {
    fn push(&mut self, tag: u64) -> bool {
        self.highest = Some(tag);
        self.pending += 1;
        self.pending >= self.limit
    }

    async fn flush(&mut self, acker: &Acker) -> Result<(), MqError> {
        if let Some(tag) = self.highest.take() {
            self.pending = 0;
            acker.ack_up_to(tag).await?;
        }
        Ok(())
    }
}

impl Consumer {
    /// Hands every delivery to `handler`, one at a time, and settles it by the returned
    /// [`Disposition`] until `shutdown` is cancelled.
    ///
    /// Acks are batched: an [`Disposition::Ack`] is sent as one `basic.ack multiple` when
    /// `ack_batch` are pending, when no further delivery is ready at once, before any requeue
    /// or dead-letter, and before stopping.
    ///
    /// On cancellation: `basic.cancel` (no new deliveries), the handler in progress finishes
    /// (it is never interrupted unless `grace`, counted from the cancellation, runs out),
    /// pending acks are flushed, prefetched deliveries not yet handled are nacked back to the
    /// queue (counted in [`RunReport::returned_unhandled`], logged at WARN), and both channels
    /// close. Returns an error if the channel or connection fails, or the broker cancels the
    /// consumer; unacked deliveries then go back to the queue.
    pub async fn run<H, F>(
        mut self,
        mut handler: H,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<RunReport, MqError>
    where
        H: FnMut(Delivery) -> F,
        F: Future<Output = Disposition>,
    {
        let mut report = RunReport::default();
        let mut batch = AckBatch { highest: None, pending: 0, limit: self.ack_batch };
        let acker = self.acker();
        let outcome = async {
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let item = match self.stream.next().now_or_never() {
                    Some(item) => item,
                    None => {
                        batch.flush(&acker).await?;
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => return Ok(()),
                            item = self.stream.next() => item,
                        }
                    }
                };
                let delivery = match item {
                    Some(Ok(d)) => Delivery::from_lapin(d, &self.queue),
                    Some(Err(source)) => return Err(MqError::Amqp { op: "basic.deliver", source: Box::new(source) }),
                    None => return Err(MqError::ConsumerCancelled { queue: self.queue.to_string() }),
                };
                let tag = delivery.delivery_tag();
                debug!(queue = %self.queue, tag, msg_id = delivery.message_id().unwrap_or(""), redelivered = delivery.redelivered(), "Delivery.");

                let work = handler(delivery.clone());
                tokio::pin!(work);
                let first = tokio::select! {
                    biased;
                    d = &mut work => Some(d),
                    () = shutdown.cancelled() => None,
                };
                let disposition = match first {
                    Some(d) => d,
                    None => {
                        info!(queue = %self.queue, tag, ?grace, "Stopping: letting the message in hand finish.");
                        if let Err(e) = self.cancel().await {
                            warn!(error = %e, "basic.cancel failed.");
                        }
                        match tokio::time::timeout(grace, &mut work).await {
                            Ok(d) => d,
                            Err(_) => {
                                warn!(queue = %self.queue, tag, ?grace, "Grace period over with the handler still busy; its message goes back to the queue.");
                                report.abandoned = true;
                                return Ok(());
                            }
                        }
                    }
                };
                match disposition {
                    Disposition::Ack => {
                        if batch.push(tag) {
                            batch.flush(&acker).await?;
                        }
                        report.acked += 1;
                    }
                    Disposition::Requeue => {
                        batch.flush(&acker).await?;
                        acker.nack(tag, true).await?;
                        report.requeued += 1;
                        warn!(queue = %self.queue, tag, delivery_count = delivery.delivery_count(), "Requeued.");
                    }
                    Disposition::DeadLetter { reason } => {
                        batch.flush(&acker).await?;
                        match self.publish_dead_letter(&delivery, &reason).await {
                            Ok(()) => {
                                acker.ack(tag).await?;
                                report.dead_lettered += 1;
                                warn!(queue = %self.queue, tag, msg_id = delivery.message_id().unwrap_or(""), %reason, "Dead-lettered.");
                            }
                            Err(e) => {
                                acker.nack(tag, true).await?;
                                report.requeued += 1;
                                warn!(queue = %self.queue, tag, error = %e, "Dead-lettering failed; requeued.");
                            }
                        }
                    }
                }
            }
        }
        .await;

        let stopped = self.stop(&mut batch, &acker, &mut report, outcome.is_ok()).await;
        outcome?;
        stopped?;
        Ok(report)
    }

    /// Cancels, flushes acks, returns prefetched deliveries, closes. `healthy` is false after a
    /// channel error: then there is nothing left to do but close.
    async fn stop(
        mut self,
        batch: &mut AckBatch,
        acker: &Acker,
        report: &mut RunReport,
        healthy: bool,
    ) -> Result<(), MqError> {
        let queue = self.queue.clone();
        let mut result = Ok(());
        if healthy && self.channel.status().connected() {
            if let Err(e) = self.cancel().await {
                warn!(error = %e, "basic.cancel failed.");
            }
            result = batch.flush(acker).await;
            // After cancel-ok the stream ends once the prefetched deliveries are out.
            let mut highest = None;
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), self.stream.next()).await
            {
                highest = Some(d.delivery_tag);
                report.returned_unhandled += 1;
            }
            if let Some(tag) = highest
                && let Err(e) = acker.nack_up_to(tag, true).await
            {
                warn!(error = %e, "Returning prefetched deliveries failed; closing the channel returns them.");
            }
            if report.returned_unhandled > 0 {
                warn!(queue = %queue, count = report.returned_unhandled, "Returned prefetched deliveries to the queue unhandled.");
            }
        }
        if let Err(e) = self.close().await {
            warn!(error = %e, "Closing the consumer channel failed.");
        }
        info!(
            queue = %queue, acked = report.acked, requeued = report.requeued, dead_lettered = report.dead_lettered,
            returned_unhandled = report.returned_unhandled, abandoned = report.abandoned, "Consumer stopped."
        );
        result
    }
}
