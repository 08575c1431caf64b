//! Handling one job: parse, check, skip if already sent, pick the box, build, send, record,
//! publish the outcome, and decide the delivery's fate (ack, retry queue, dead letter).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deskmail_configclient::ConfigWatcher;
use deskmail_mq::topology::routing_keys;
use deskmail_mq::{Delivery, OutgoingMessage, Publisher, Topology};
use deskmail_runtime::CancellationToken;
use deskmail_telemetry::sender::{self as metrics, DeadLetterReason};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::boxes::{self, ResolveError};
use crate::events::MailEvent;
use crate::health::Database;
use crate::job::{self, ValidJob};
use crate::message::{self, Built};
use crate::pool::{BoxEntry, Pools};
use crate::sentlog::{SentLog, SentRecord};

/// Header counting the retries a job has had (absent = none).
pub const RETRIES_HEADER: &str = "x-deskmail-retries";
/// Longest a job waits in hand for its box's rate limit before it is deferred.
const RATE_WAIT: Duration = Duration::from_secs(10);

/// Header with the last temporary failure of a job waiting in a retry queue.
pub const LAST_ERROR_HEADER: &str = "x-deskmail-last-error";

/// What to do with a delivery once its job was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, recorded, skipped as a duplicate, or moved to a retry queue.
    Ack,
    /// Never sendable: to `<prefix>.outbound.dead` with this reason (and its metric code).
    DeadLetter(String, DeadLetterReason),
    /// Back to the queue (the sender is stopping, or a retry could not be queued).
    Requeue,
}

/// What every job task shares.
pub struct Shared {
    pub topology: Topology,
    pub publisher: Publisher,
    pub sent_log: SentLog,
    pub watcher: ConfigWatcher,
    pub pools: Pools,
    pub shutdown: CancellationToken,
    pub grace: Duration,
    /// The `database` readiness check, told about every sent-log operation.
    pub database: Arc<Database>,
    in_flight: Mutex<HashSet<String>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topology: Topology,
        publisher: Publisher,
        sent_log: SentLog,
        watcher: ConfigWatcher,
        pools: Pools,
        shutdown: CancellationToken,
        grace: Duration,
        database: Arc<Database>,
    ) -> Self {
        Self {
            topology,
            publisher,
            sent_log,
            watcher,
            pools,
            shutdown,
            grace,
            database,
            in_flight: Mutex::new(HashSet::new()),
        }
    }
}

/// Removes a job id from the in-flight set when dropped.
struct Claim<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = self.shared.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        set.remove(&self.id);
    }
}

impl Shared {
    /// Waits until no other task of this process handles the same job id (a job published
    /// twice at once), then claims it.
    async fn claim(&self, id: &str) -> Claim<'_> {
        loop {
            {
                let mut set = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if set.insert(id.to_owned()) {
                    return Claim { shared: self, id: id.to_owned() };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Handles one delivery of `<prefix>.outbound.jobs`.
pub async fn handle(shared: Arc<Shared>, delivery: Delivery) -> Outcome {
    let span = info_span!(
        "job",
        job_id = delivery.message_id().unwrap_or(""),
        redelivered = delivery.redelivered(),
        retries = delivery.header_i64(RETRIES_HEADER).unwrap_or(0)
    );
    handle_inner(&shared, &delivery).instrument(span).await
}

async fn handle_inner(shared: &Shared, delivery: &Delivery) -> Outcome {
    let retries = u32::try_from(delivery.header_i64(RETRIES_HEADER).unwrap_or(0).max(0)).unwrap_or(u32::MAX);
    let fallback_id = delivery.message_id().unwrap_or("").to_owned();
    let valid = match job::parse(delivery.body()).and_then(job::validate) {
        Ok(v) => v,
        Err(e) => {
            let reason = format!("invalid job: {e}");
            let mut ev =
                MailEvent::new(routing_keys::MAIL_FAILED, &fallback_id, delivery.correlation_id(), now_ms());
            ev.error = Some(reason.clone());
            ev.retries = retries;
            publish_event(shared, ev).await;
            return Outcome::DeadLetter(reason, DeadLetterReason::InvalidJob);
        }
    };
    let job_id = valid.job.job_id.clone();
    let _claim = shared.claim(&job_id).await;
    match with_db_retries(shared, "look up the job in the sent-jobs log", || shared.sent_log.find(&job_id))
        .await
    {
        Some(Some(done)) => {
            info!(message_id = %done.message_id, mailbox_id = %done.mailbox_id, "Job was already sent; not sending it again.");
            // Its `mail.sent` may have been lost with the connection that carried the first
            // delivery: publish it again (events are at least once, like the jobs).
            publish_event(shared, sent_event(&valid, &done, retries)).await;
            return Outcome::Ack;
        }
        Some(None) => {}
        None => return Outcome::Requeue,
    }
    if shared.shutdown.is_cancelled() {
        return Outcome::Requeue;
    }
    let Some(snapshot) = shared.watcher.current() else { return Outcome::Requeue };
    let failed = |reason: String, entry: Option<&BoxEntry>| {
        let mut ev =
            MailEvent::new(routing_keys::MAIL_FAILED, &job_id, valid.job.correlation_id.as_deref(), now_ms());
        if let Some(e) = entry {
            ev.mailbox_id = Some(e.settings.id.clone());
            ev.mailbox = Some(e.settings.name.clone());
        }
        ev.error = Some(reason);
        ev.retries = retries;
        ev
    };
    let entry = match boxes::resolve(&valid.job, &snapshot).and_then(|(m, via)| {
        debug!(mailbox = %m.name, via = via.as_str(), "Box chosen.");
        shared.pools.entry(m, snapshot.revision)
    }) {
        Ok(e) => e,
        Err(e) => {
            let reason = match e {
                ResolveError::NoBox => format!("no box: {e}"),
                _ => format!("box: {e}"),
            };
            publish_event(shared, failed(reason.clone(), None)).await;
            return Outcome::DeadLetter(reason, DeadLetterReason::NoBox);
        }
    };
    let hook = snapshot.settings.as_ref().map_or("", |s| s.ticket_hook.as_str());
    let built = match message::build(
        &valid,
        &entry.settings,
        hook,
        message::message_id_for(&job_id, &entry.settings),
        SystemTime::now(),
    ) {
        Ok(b) => b,
        Err(e) => {
            let reason = format!("message: {e}");
            publish_event(shared, failed(reason.clone(), Some(&entry))).await;
            return Outcome::DeadLetter(reason, DeadLetterReason::InvalidJob);
        }
    };
    if let Some(login) = &built.sender_header
        && entry.first_sender_header()
    {
        warn!(mailbox = %entry.settings.name, login = %login, "From differs from the box's login: adding a Sender: header (logged once per box).");
    }
    if entry.settings.dry_run {
        info!(mailbox = %entry.settings.name, message_id = %built.message_id, to = built.envelope.to().len(), subject = %built.subject, "Dry-run box: recorded, not sent.");
        record_and_report(shared, &valid, &entry, &built, "dry-run".into(), true, retries).await;
        metrics::job_dry_run(&entry.settings.id);
        return Outcome::Ack;
    }
    if !entry.pace(RATE_WAIT).await {
        // Over the box's rate for longer than a worker should wait: back to the first retry
        // queue without counting a retry, so other boxes' jobs are not held up.
        let next = shared.topology.retry_queues().first().map(|q| q.routing_key.clone()).unwrap_or_default();
        let msg = OutgoingMessage::new(shared.topology.retry_exchange(), next, delivery.payload())
            .content_type("application/json")
            .message_id(job_id.clone())
            .header(RETRIES_HEADER, i64::from(retries))
            .header(LAST_ERROR_HEADER, format!("rate limit of box {:?}", entry.settings.name));
        return match shared.publisher.publish_confirmed(msg).await {
            Ok(()) => {
                debug!(mailbox = %entry.settings.name, "Box over its rate limit; job deferred.");
                Outcome::Ack
            }
            Err(_) => Outcome::Requeue,
        };
    }
    match shared.pools.send(&entry, &built).await {
        Ok(reply) => {
            shared.pools.sent_ok(&entry);
            debug!(mailbox = %entry.settings.name, message_id = %built.message_id, reply = %reply, "Sent.");
            record_and_report(shared, &valid, &entry, &built, reply.to_string(), false, retries).await;
            Outcome::Ack
        }
        Err(e) if e.is_permanent() => {
            let reason =
                format!("SMTP refused the mail for good via box {:?}: {}", entry.settings.name, e.text());
            let mut ev = failed(reason.clone(), Some(&entry));
            ev.smtp_reply = e.reply().map(ToString::to_string);
            ev.message_id = Some(built.message_id.clone());
            publish_event(shared, ev).await;
            Outcome::DeadLetter(reason, DeadLetterReason::Rejected)
        }
        Err(e) => {
            if let Some(reason) = e.mailbox_reason() {
                metrics::box_error(&entry.settings.id, reason);
                shared.pools.box_failed(&entry, reason, e.text());
            }
            let text = format!("temporary failure via box {:?}: {}", entry.settings.name, e.text());
            let queues = shared.topology.retry_queues();
            let Some(next) = queues.get(retries as usize) else {
                let reason = format!("gave up after {retries} retries; last: {text}");
                let mut ev = failed(reason.clone(), Some(&entry));
                ev.smtp_reply = e.reply().map(ToString::to_string);
                publish_event(shared, ev).await;
                return Outcome::DeadLetter(reason, DeadLetterReason::RetriesExhausted);
            };
            let mut msg = OutgoingMessage::new(
                shared.topology.retry_exchange(),
                next.routing_key.clone(),
                delivery.payload(),
            )
            .content_type("application/json")
            .message_id(job_id.clone())
            .header(RETRIES_HEADER, i64::from(retries) + 1)
            .header(LAST_ERROR_HEADER, text.chars().take(1000).collect::<String>());
            if let Some(c) = delivery.correlation_id() {
                msg = msg.correlation_id(c);
            }
            match shared.publisher.publish_confirmed(msg).await {
                Ok(()) => {
                    metrics::job_retried(&entry.settings.id);
                    warn!(error = %text, retry_in = ?next.delay, retry = retries + 1, "Send failed; retrying later.");
                    Outcome::Ack
                }
                Err(pe) => {
                    warn!(error = %text, publish_error = %pe, "Send failed and the retry could not be queued; requeued.");
                    Outcome::Requeue
                }
            }
        }
    }
}

/// Records the sent job (retrying the database, since a lost record means a second mail on
/// redelivery) and publishes `mail.sent`.
async fn record_and_report(
    shared: &Shared,
    valid: &ValidJob,
    entry: &BoxEntry,
    built: &Built,
    reply: String,
    dry_run: bool,
    retries: u32,
) {
    let record = SentRecord {
        job_id: valid.job.job_id.clone(),
        message_id: built.message_id.clone(),
        mailbox_id: entry.settings.id.clone(),
        sent_at_micros: i64::try_from(now_ms()).unwrap_or(i64::MAX).saturating_mul(1000),
        reply,
        dry_run,
    };
    if with_db_retries(shared, "record the sent job", || shared.sent_log.record(&record)).await.is_none() {
        error!(message_id = %built.message_id, "The mail was sent but could not be recorded in the sent-jobs log; a redelivery would send it again.");
    }
    let mut ev = sent_event(valid, &record, retries);
    ev.mailbox = Some(entry.settings.name.clone());
    publish_event(shared, ev).await;
}

/// The `mail.sent` event of a sent (or dry-run) job, from its sent-jobs record.
fn sent_event(valid: &ValidJob, record: &SentRecord, retries: u32) -> MailEvent {
    let mut ev = MailEvent::new(
        routing_keys::MAIL_SENT,
        &valid.job.job_id,
        valid.job.correlation_id.as_deref(),
        now_ms(),
    );
    ev.mailbox_id = Some(record.mailbox_id.clone());
    ev.message_id = Some(record.message_id.clone());
    ev.smtp_reply = Some(record.reply.clone());
    ev.dry_run = record.dry_run;
    ev.retries = retries;
    ev
}

/// Runs a sent-log operation until it works; `None` when the sender stopped (and the grace
/// period ran out) first. While the database is away the job waits here, holding its
/// delivery, so nothing is requeued in a loop toward the delivery limit.
async fn with_db_retries<T, F, Fut>(shared: &Shared, what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::sentlog::SentLogError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut warned = false;
    loop {
        match op().await {
            Ok(v) => {
                shared.database.worked();
                if warned {
                    info!("The sent-jobs log works again.");
                }
                return Some(v);
            }
            Err(e) => {
                shared.database.failed(&e);
                if !warned {
                    warn!(error = %e, "Cannot {what}; retrying (the job waits).");
                    warned = true;
                }
            }
        }
        let stop = async {
            shared.shutdown.cancelled().await;
            tokio::time::sleep(shared.grace).await;
        };
        tokio::select! {
            () = stop => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Publishes an event and waits for the broker's confirm; a failure is logged, not fatal
/// (the mail's fate is already decided).
async fn publish_event(shared: &Shared, ev: MailEvent) {
    let body = match serde_json::to_vec(&ev) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "Event could not be encoded.");
            return;
        }
    };
    let msg = OutgoingMessage::new(shared.topology.events_exchange(), ev.event, body)
        .content_type("application/json")
        .correlation_id(ev.correlation_id.chars().take(255).collect::<String>())
        .timestamp(ev.time_ms / 1000)
        .message_id(uuid::Uuid::now_v7().simple().to_string());
    match shared.publisher.publish_confirmed(msg).await {
        Ok(()) => {}
        // Nobody has bound a queue to the events exchange: nobody is listening.
        Err(deskmail_mq::MqError::Unroutable { .. }) => {
            debug!(event = ev.event, "Event unroutable: no queue bound.")
        }
        Err(e) => warn!(event = ev.event, error = %e, "Event not published."),
    }
}
