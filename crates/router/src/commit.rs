//! The committer: a planned batch into the store, then its messages to the broker, then one
//! multiple-ack. Nothing is acked before it is committed and everything it caused (events,
//! auto-reply jobs, dead letters) is confirmed by the broker.
//!
//! When the database is down the batch is held (its deliveries stay unacked, so the broker
//! sends no more than the prefetch) and retried with backoff: no requeue loop that would
//! count toward the delivery limit. When the database is up but refuses the batch, the
//! mails are committed one by one and a mail it refuses alone is dead-lettered with the
//! database's reason.

use std::time::{Duration, Instant};

use deskmail_mq::{Acker, Delivery, MqError, OutgoingMessage, Publisher, Topology};
use deskmail_runtime::CancellationToken;
use deskmail_telemetry::ReadyFlag;
use deskmail_telemetry::router::{self as metrics, AutoReplySuppressed};
use tracing::Instrument;

use crate::dispatch::Plan;
use crate::events::{TARGET_EVENTS, TARGET_OUTBOUND};
use crate::observe::{self, Phases};
use crate::store::{BatchOutcome, Item, Outcome, Store, entity::outbox};
use crate::worker::Batch;
use crate::{RouterError, mail_span, now_micros};

/// Counters for the logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub created: u64,
    pub followups: u64,
    pub ignored: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub auto_replies_over_limit: u64,
    /// Where the time went.
    pub phases: Phases,
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
    /// The `database` readiness check: unready while a batch waits for the database.
    pub database: ReadyFlag,
    /// Outbox rows the broker confirmed, deleted in the next batch's transaction.
    pub published: Vec<String>,
}

/// The batch could not be settled now; its deliveries stay unacked and go back to the queue.
#[derive(Debug)]
pub struct Abandoned;

/// What the metrics need of one stored mail once its batch is acked.
struct Meta {
    source_id: String,
    mailbox_id: Option<String>,
    arrived: Instant,
    no_auto_reply: Option<&'static str>,
}

impl Committer<'_> {
    /// Commits, publishes and acks one batch, inside a `batch` span.
    pub async fn settle(&mut self, batch: Batch) -> Result<(), RouterError> {
        let span = tracing::info_span!("batch", mails = batch.mails.len(), last_tag = batch.last_tag);
        self.settle_inner(batch).instrument(span).await
    }

    async fn settle_inner(&mut self, batch: Batch) -> Result<(), RouterError> {
        let Batch { mails, rules, last_tag, timing } = batch;
        let n = mails.len() as u64;
        // (delivery, reason, mailbox id)
        let mut dead: Vec<(Delivery, String, Option<String>)> = Vec::new();
        let mut deliveries = Vec::with_capacity(mails.len());
        let mut items = Vec::with_capacity(mails.len());
        let mut meta = Vec::with_capacity(mails.len());
        for m in mails {
            match &m.item.plan {
                Plan::Dead { reason } => {
                    let reason = reason.clone();
                    dead.push((m.delivery, reason, m.item.mailbox_id));
                }
                plan => {
                    meta.push(Meta {
                        source_id: m.item.source_id.clone(),
                        mailbox_id: m.item.mailbox_id.clone(),
                        arrived: m.arrived,
                        no_auto_reply: match plan {
                            Plan::Article(p) => p.no_auto_reply,
                            _ => None,
                        },
                    });
                    deliveries.push(m.delivery);
                    items.push(m.item);
                }
            }
        }
        let (outcome, refused) = match self.commit_resilient(&items, &rules).await {
            Ok(r) => r,
            Err(Abandoned) => return Err(RouterError::Abandoned),
        };
        // The rows are written: the batch's bytes are no longer needed.
        drop(items);
        // A mail the database refused alone is a dead letter, not an outcome.
        let mut counted = vec![true; meta.len()];
        for (i, why) in refused {
            if let (Some(d), Some(m)) = (deliveries.get(i), meta.get(i)) {
                let reason = format!("the tickets database refused this mail: {why}");
                dead.push((d.clone(), reason, m.mailbox_id.clone()));
            }
            if let Some(c) = counted.get_mut(i) {
                *c = false;
            }
        }
        self.count(&outcome, &meta, &counted);

        // Events are published not-mandatory: nobody may be listening, and that is fine.
        let publish_start = Instant::now();
        let mut messages: Vec<(OutgoingMessage, bool)> =
            outcome.outbox.iter().map(|row| (self.message(row), row.target == TARGET_EVENTS)).collect();
        for (d, reason, ..) in &dead {
            messages.push((dead_letter(self.topology, d, reason), false));
        }
        self.publish_confirmed(messages).await?;
        let publish_time = publish_start.elapsed();
        for (d, reason, mailbox) in &dead {
            let span = mail_span(&crate::worker::source_id_of(d), mailbox.as_deref(), d.redelivered());
            span.in_scope(|| tracing::warn!(%reason, "Dead-lettered."));
        }
        self.stats.dead_lettered += dead.len() as u64;
        self.published.extend(outcome.outbox.iter().map(|r| r.id.clone()));
        let ack_start = Instant::now();
        if last_tag > 0 {
            self.acker.ack_up_to(last_tag).await?;
        }
        let ack_time = ack_start.elapsed();

        // Acked: now the mails count as routed.
        let jobs = outcome.outbox.iter().filter(|r| r.target == TARGET_OUTBOUND).count();
        for _ in 0..jobs {
            metrics::auto_reply_sent();
        }
        for _ in 0..outcome.auto_replies_over_limit {
            metrics::auto_reply_suppressed(AutoReplySuppressed::DailyLimit);
        }
        for ((o, m), _) in outcome.outcomes.iter().zip(&meta).zip(&counted).filter(|(_, c)| **c) {
            if let (Outcome::Created { .. }, Some(reason)) =
                (o, m.no_auto_reply.and_then(observe::suppressed_reason))
            {
                metrics::auto_reply_suppressed(reason);
            }
            observe::mail_routed(observe::route_outcome(o), m.mailbox_id.as_deref(), m.arrived.elapsed());
        }
        for _ in &dead {
            metrics::mail_dead_lettered();
        }

        let p = &mut self.stats.phases;
        p.batches += 1;
        p.mails += n;
        p.collect += timing.collect;
        p.parse += timing.parse;
        p.dispatch += timing.dispatch;
        p.plan_wall += timing.plan_wall;
        p.insert += outcome.write_time;
        p.commit += outcome.commit_time;
        p.publish += publish_time;
        p.ack += ack_time;
        for (t, d) in p.steps.iter_mut().zip(outcome.steps) {
            *t += d;
        }
        tracing::debug!(
            mails = n,
            insert_ms = outcome.write_time.as_millis(),
            commit_ms = outcome.commit_time.as_millis(),
            publish_ms = publish_time.as_millis(),
            "Batch settled."
        );
        Ok(())
    }

    /// Deletes the outbox rows of confirmed messages not yet deleted with a later batch
    /// (at the end of a session). A failure only leaves rows a later redelivery republishes.
    pub async fn flush_published(&mut self) {
        let ids = std::mem::take(&mut self.published);
        if let Err(e) = self.store.outbox_done(&ids).await {
            tracing::warn!(error = %e, "Could not clear the outbox after publishing.");
        }
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

    fn count(&mut self, o: &BatchOutcome, meta: &[Meta], counted: &[bool]) {
        for ((outcome, m), _) in o.outcomes.iter().zip(meta).zip(counted).filter(|(_, c)| **c) {
            match outcome {
                Outcome::Created { .. } => self.stats.created += 1,
                Outcome::FollowUp { .. } => self.stats.followups += 1,
                Outcome::Ignored { reason } => {
                    let span = mail_span(&m.source_id, m.mailbox_id.as_deref(), false);
                    span.in_scope(|| tracing::info!(%reason, "Mail ignored (no ticket)."));
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

    /// Commits the batch (with the deletion of the outbox rows published before), waiting
    /// out a database outage; when the database refuses the batch, commits the mails one by
    /// one. Returns the merged outcome and the indices of the mails the database refused on
    /// their own.
    async fn commit_resilient(
        &mut self,
        items: &[Item],
        rules: &crate::rules::Rules,
    ) -> Result<(BatchOutcome, Vec<(usize, String)>), Abandoned> {
        if items.is_empty() {
            return Ok((BatchOutcome::default(), Vec::new()));
        }
        loop {
            match self.store.commit_with(items, rules, now_micros(), &self.published).await {
                Ok(o) => {
                    self.published.clear();
                    return Ok((o, Vec::new()));
                }
                Err(e) => {
                    if self.wait_for_database().await? {
                        continue;
                    }
                    tracing::warn!(error = %e, mails = items.len(), "The database refused the batch; committing its mails one by one.");
                    break;
                }
            }
        }
        self.flush_published().await;
        let mut merged = BatchOutcome::default();
        let mut refused = Vec::new();
        for (i, item) in items.iter().enumerate() {
            loop {
                match self.store.commit(std::slice::from_ref(item), rules, now_micros()).await {
                    Ok(o) => {
                        merged.outcomes.extend(o.outcomes);
                        merged.outbox.extend(o.outbox);
                        merged.auto_replies_over_limit += o.auto_replies_over_limit;
                        merged.write_time += o.write_time;
                        merged.commit_time += o.commit_time;
                        for (t, d) in merged.steps.iter_mut().zip(o.steps) {
                            *t += d;
                        }
                        break;
                    }
                    Err(e) => {
                        if self.wait_for_database().await? {
                            continue;
                        }
                        let span = mail_span(&item.source_id, item.mailbox_id.as_deref(), false);
                        span.in_scope(|| tracing::error!(error = %e, "The database refused this mail; dead-lettering it."));
                        refused.push((i, e.to_string()));
                        merged.outcomes.push(Outcome::Duplicate);
                        break;
                    }
                }
            }
        }
        Ok((merged, refused))
    }

    /// `Ok(false)` when the database answers; otherwise waits (backoff 0.5 s to 10 s) until it
    /// does (`Ok(true)`) or shutdown comes (`Err`). The `database` check is unready meanwhile.
    async fn wait_for_database(&self) -> Result<bool, Abandoned> {
        if self.store.ping().await {
            return Ok(false);
        }
        self.database.set_unready("the tickets database does not answer");
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
                self.database.set_ready();
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
