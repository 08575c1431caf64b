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
    /// The batch committed last, not yet published and acked.
    pub pending: Option<Committed>,
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

/// A committed batch whose messages are not yet confirmed and whose deliveries are not
/// yet acked.
pub struct Committed {
    outcome: BatchOutcome,
    meta: Vec<Meta>,
    counted: Vec<bool>,
    // (delivery, reason, mailbox id)
    dead: Vec<(Delivery, String, Option<String>)>,
    last_tag: u64,
    timing: crate::worker::CollectTiming,
    n: u64,
    span: tracing::Span,
}

impl Committer<'_> {
    /// Commits `batch` while the batch committed before it (if any) is published and acked,
    /// then keeps `batch` as the one to publish next ([`Committer::flush`] publishes it).
    /// Acks stay in order and each only follows its own batch's commit and confirms.
    pub async fn settle(&mut self, batch: Batch) -> Result<(), RouterError> {
        let span = tracing::info_span!("batch", mails = batch.mails.len(), last_tag = batch.last_tag);
        let previous = self.pending.take();
        let Committer { store, publisher, acker, topology, shutdown, database, published, .. } = self;
        let outlet = Outlet { publisher, acker, topology };
        let writer = Writer { store, shutdown, database };
        let commit = writer.commit(batch, published, span);
        let publish = async {
            match &previous {
                Some(c) => outlet.publish_and_ack(c).await.map(Some),
                None => Ok(None),
            }
        };
        let (committed, settled) = tokio::join!(commit, publish);
        let settled = settled?;
        let mut committed = match committed {
            Ok(c) => c,
            Err(e) => {
                if let (Some(c), Some(times)) = (previous, settled) {
                    self.finish(c, times);
                }
                return Err(e);
            }
        };
        if let (Some(c), Some(times)) = (previous, settled) {
            // A duplicate in this batch of a mail of the previous one found its outbox rows
            // while they were being published: they are confirmed now, not to be sent twice.
            let done: std::collections::HashSet<&str> =
                c.outcome.outbox.iter().map(|r| r.id.as_str()).collect();
            committed.outcome.outbox.retain(|r| !done.contains(r.id.as_str()));
            self.finish(c, times);
        }
        self.pending = Some(committed);
        Ok(())
    }

    /// Publishes and acks the batch committed last, if any.
    pub async fn flush(&mut self) -> Result<(), RouterError> {
        if let Some(c) = self.pending.take() {
            let outlet = Outlet { publisher: self.publisher, acker: &self.acker, topology: self.topology };
            let times = outlet.publish_and_ack(&c).await?;
            self.finish(c, times);
        }
        Ok(())
    }

    /// Whether a committed batch waits for its publish and ack.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Books a batch that is committed, published and acked.
    fn finish(&mut self, c: Committed, (publish_time, ack_time): (Duration, Duration)) {
        let Committed { outcome, meta, counted, dead, timing, n, span, .. } = c;
        let _entered = span.enter();
        self.stats.dead_lettered += dead.len() as u64;
        self.published.extend(outcome.outbox.iter().map(|r| r.id.clone()));
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
        self.count(&outcome, &meta, &counted);

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
    }

    /// Deletes the outbox rows of confirmed messages not yet deleted with a later batch
    /// (at the end of a session). A failure only leaves rows a later redelivery republishes.
    pub async fn flush_published(&mut self) {
        flush_published(self.store, &mut self.published).await;
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
}

/// The broker side of settling: publishing with confirms and acking.
struct Outlet<'b> {
    publisher: &'b Publisher,
    acker: &'b Acker,
    topology: &'b Topology,
}

impl Outlet<'_> {
    /// Publishes a committed batch's messages (events not mandatory: nobody may be
    /// listening, and that is fine) and dead letters, waits for every confirm, then acks the
    /// batch. Returns the publish and ack times.
    async fn publish_and_ack(&self, c: &Committed) -> Result<(Duration, Duration), RouterError> {
        self.publish_and_ack_inner(c).instrument(c.span.clone()).await
    }

    async fn publish_and_ack_inner(&self, c: &Committed) -> Result<(Duration, Duration), RouterError> {
        let publish_start = Instant::now();
        let mut messages: Vec<(OutgoingMessage, bool)> =
            c.outcome.outbox.iter().map(|row| (self.message(row), row.target == TARGET_EVENTS)).collect();
        for (d, reason, ..) in &c.dead {
            messages.push((dead_letter(self.topology, d, reason), false));
        }
        self.publish_confirmed(messages).await?;
        let publish_time = publish_start.elapsed();
        for (d, reason, mailbox) in &c.dead {
            let span = mail_span(&crate::worker::source_id_of(d), mailbox.as_deref(), d.redelivered());
            span.in_scope(|| tracing::warn!(%reason, "Dead-lettered."));
        }
        let ack_start = Instant::now();
        if c.last_tag > 0 {
            self.acker.ack_up_to(c.last_tag).await?;
        }
        Ok((publish_time, ack_start.elapsed()))
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
}

/// The database side of settling.
struct Writer<'b> {
    store: &'b Store,
    shutdown: &'b CancellationToken,
    database: &'b ReadyFlag,
}

impl Writer<'_> {
    /// Commits one batch (deleting the outbox rows in `published` with it); the mails the
    /// database refused alone become dead letters.
    async fn commit(
        &self,
        batch: Batch,
        published: &mut Vec<String>,
        span: tracing::Span,
    ) -> Result<Committed, RouterError> {
        let Batch { mails, rules, last_tag, timing } = batch;
        let n = mails.len() as u64;
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
        let (outcome, refused) =
            match self.commit_resilient(&items, &rules, published).instrument(span.clone()).await {
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
        Ok(Committed { outcome, meta, counted, dead, last_tag, timing, n, span })
    }

    /// Commits the batch (with the deletion of the outbox rows published before), waiting
    /// out a database outage; when the database refuses the batch, commits the mails one by
    /// one. Returns the merged outcome and the indices of the mails the database refused on
    /// their own.
    async fn commit_resilient(
        &self,
        items: &[Item],
        rules: &crate::rules::Rules,
        published: &mut Vec<String>,
    ) -> Result<(BatchOutcome, Vec<(usize, String)>), Abandoned> {
        if items.is_empty() {
            return Ok((BatchOutcome::default(), Vec::new()));
        }
        loop {
            match self.store.commit_with(items, rules, now_micros(), published).await {
                Ok(o) => {
                    published.clear();
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
        flush_published(self.store, published).await;
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

/// Deletes the outbox rows of confirmed messages; a failure only leaves rows a later
/// redelivery republishes.
async fn flush_published(store: &Store, published: &mut Vec<String>) {
    let ids = std::mem::take(published);
    if let Err(e) = store.outbox_done(&ids).await {
        tracing::warn!(error = %e, "Could not clear the outbox after publishing.");
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
