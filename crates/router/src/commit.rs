//! The committer: a planned batch into the store, then its messages to the broker, then one
//! multiple-ack. Nothing is acked before it is committed and everything it caused (events,
//! auto-reply jobs, dead letters) is confirmed by the broker.
//!
//! When the database is down the batch is held (its deliveries stay unacked, so the broker
//! sends no more than the prefetch) and retried with backoff: no requeue loop that would
//! count toward the delivery limit. When the database is up but refuses the batch, the
//! mails are committed one by one and a mail it refuses alone is dead-lettered with the
//! database's reason.

use std::time::Duration;

use deskmail_mq::{Acker, Delivery, MqError, OutgoingMessage, Publisher, Topology};
use deskmail_runtime::CancellationToken;

use crate::dispatch::Plan;
use crate::events::{TARGET_EVENTS, TARGET_OUTBOUND};
use crate::store::{BatchOutcome, Item, Outcome, Store, entity::outbox};
use crate::worker::Batch;
use crate::{RouterError, now_micros};

/// Counters for the logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub created: u64,
    pub followups: u64,
    pub ignored: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub auto_replies_over_limit: u64,
}

/// Settles batches on one channel pair.
pub struct Committer<'a> {
    pub store: &'a Store,
    pub publisher: &'a Publisher,
    pub acker: Acker,
    pub topology: &'a Topology,
    /// Cancelled: give up waiting for a database that is down (the batch goes back unacked).
    pub shutdown: CancellationToken,
    pub stats: Stats,
}

/// The batch could not be settled now; its deliveries stay unacked and go back to the queue.
#[derive(Debug)]
pub struct Abandoned;

impl Committer<'_> {
    /// Commits, publishes and acks one batch.
    pub async fn settle(&mut self, batch: Batch) -> Result<(), RouterError> {
        let Batch { mails, rules, last_tag } = batch;
        let mut dead: Vec<(Delivery, String)> = Vec::new();
        let mut deliveries = Vec::with_capacity(mails.len());
        let mut items = Vec::with_capacity(mails.len());
        for m in mails {
            match &m.item.plan {
                Plan::Dead { reason } => dead.push((m.delivery, reason.clone())),
                _ => {
                    deliveries.push(m.delivery);
                    items.push(m.item);
                }
            }
        }
        let (outcome, refused) = match self.commit_resilient(items, &rules).await {
            Ok(r) => r,
            Err(Abandoned) => return Err(RouterError::Abandoned),
        };
        for (i, why) in refused {
            if let Some(d) = deliveries.get(i) {
                dead.push((d.clone(), format!("the tickets database refused this mail: {why}")));
            }
        }
        self.count(&outcome);

        // Events are published not-mandatory: nobody may be listening, and that is fine.
        let mut messages: Vec<(OutgoingMessage, bool)> =
            outcome.outbox.iter().map(|row| (self.message(row), row.target == TARGET_EVENTS)).collect();
        for (d, reason) in &dead {
            messages.push((dead_letter(self.topology, d, reason), false));
        }
        self.publish_confirmed(messages).await?;
        for (d, reason) in &dead {
            tracing::warn!(msg_id = d.message_id().unwrap_or(""), %reason, "Dead-lettered.");
        }
        self.stats.dead_lettered += dead.len() as u64;
        let ids: Vec<String> = outcome.outbox.iter().map(|r| r.id.clone()).collect();
        if let Err(e) = self.store.outbox_done(&ids).await {
            // Published already: a leftover row only means a second copy on a later redelivery.
            tracing::warn!(error = %e, "Could not clear the outbox after publishing.");
        }
        if last_tag > 0 {
            self.acker.ack_up_to(last_tag).await?;
        }
        Ok(())
    }

    /// Publishes with at most the publisher's window of confirms in flight; every confirm
    /// is awaited, the first failure is returned.
    async fn publish_confirmed(&self, messages: Vec<(OutgoingMessage, bool)>) -> Result<(), MqError> {
        let window = self.publisher.window();
        let mut inflight = std::collections::VecDeque::with_capacity(window.min(messages.len()));
        let mut failure = None;
        for (message, optional) in messages {
            let published = if optional {
                self.publisher.publish_optional(message).await
            } else {
                self.publisher.publish(message).await
            };
            match published {
                Ok(p) => inflight.push_back(p),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if inflight.len() >= window
                && let Some(oldest) = inflight.pop_front()
                && let Err(e) = oldest.await
            {
                failure.get_or_insert(e);
            }
        }
        for pending in inflight {
            if let Err(e) = pending.await {
                failure.get_or_insert(e);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn count(&mut self, o: &BatchOutcome) {
        for outcome in &o.outcomes {
            match outcome {
                Outcome::Created { .. } => self.stats.created += 1,
                Outcome::FollowUp { .. } => self.stats.followups += 1,
                Outcome::Ignored { reason } => {
                    tracing::info!(%reason, "Mail ignored (no ticket).");
                    self.stats.ignored += 1;
                }
                Outcome::Duplicate => self.stats.duplicates += 1,
            }
        }
        self.stats.auto_replies_over_limit += o.auto_replies_over_limit as u64;
    }

    fn message(&self, row: &outbox::Model) -> OutgoingMessage {
        let exchange = if row.target == TARGET_OUTBOUND {
            self.topology.outbound_exchange()
        } else {
            self.topology.events_exchange()
        };
        OutgoingMessage::new(exchange, row.routing_key.clone(), row.payload.clone())
            .content_type("application/json")
            .message_id(row.message_id.clone())
    }

    /// Commits the batch, waiting out a database outage; when the database refuses the
    /// batch, commits the mails one by one. Returns the merged outcome and the indices of the
    /// mails the database refused on their own.
    async fn commit_resilient(
        &self,
        items: Vec<Item>,
        rules: &crate::rules::Rules,
    ) -> Result<(BatchOutcome, Vec<(usize, String)>), Abandoned> {
        if items.is_empty() {
            return Ok((BatchOutcome::default(), Vec::new()));
        }
        loop {
            match self.store.commit(&items, rules, now_micros()).await {
                Ok(o) => return Ok((o, Vec::new())),
                Err(e) => {
                    if self.wait_for_database().await? {
                        continue;
                    }
                    tracing::warn!(error = %e, mails = items.len(), "The database refused the batch; committing its mails one by one.");
                    break;
                }
            }
        }
        let mut merged = BatchOutcome::default();
        let mut refused = Vec::new();
        for (i, item) in items.iter().enumerate() {
            loop {
                match self.store.commit(std::slice::from_ref(item), rules, now_micros()).await {
                    Ok(o) => {
                        merged.outcomes.extend(o.outcomes);
                        merged.outbox.extend(o.outbox);
                        merged.auto_replies_over_limit += o.auto_replies_over_limit;
                        break;
                    }
                    Err(e) => {
                        if self.wait_for_database().await? {
                            continue;
                        }
                        tracing::error!(error = %e, source_id = %item.source_id, "The database refused this mail; dead-lettering it.");
                        refused.push((i, e.to_string()));
                        break;
                    }
                }
            }
        }
        Ok((merged, refused))
    }

    /// `Ok(false)` when the database answers; otherwise waits (backoff 0.5 s to 10 s) until it
    /// does (`Ok(true)`) or shutdown comes (`Err`).
    async fn wait_for_database(&self) -> Result<bool, Abandoned> {
        if self.store.ping().await {
            return Ok(false);
        }
        tracing::warn!("Tickets database unreachable; holding the batch (not consuming) and retrying.");
        let mut delay = Duration::from_millis(500);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    tracing::warn!("Stopping with the database down; the batch goes back to the queue.");
                    return Err(Abandoned);
                }
                () = tokio::time::sleep(delay) => {}
            }
            if self.store.ping().await {
                tracing::info!("Tickets database is back.");
                return Ok(true);
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// A copy of the delivery for `<prefix>.dead` (routing key `inbound`) with the reason in
/// `x-deskmail-error`.
fn dead_letter(topology: &Topology, d: &Delivery, reason: &str) -> OutgoingMessage {
    let target = topology.inbound_dead_letter();
    let mut m = OutgoingMessage::new(target.exchange, target.routing_key, d.payload())
        .content_type(d.content_type().unwrap_or("message/rfc822"))
        .header(deskmail_mq::topology::ERROR_HEADER, reason);
    if let Some(id) = d.message_id() {
        m = m.message_id(id);
    }
    for h in ["x-mailbox-id", "x-fetched-at", "x-deskmail-trace-id"] {
        if let Some(v) = d.header_str(h) {
            m = m.header(h, v);
        }
    }
    m
}
