//! The I/O shell: deliveries in, batches out.
//!
//! Two stages joined by a channel of one batch, so one batch is collected and parsed while
//! the previous one commits:
//! - the collector takes up to `batch_size` deliveries (waiting at most `batch_wait` once it
//!   has one), parses and plans them on the blocking pool, and hands the batch on;
//! - the committer (`commit.rs`) writes the batch in one transaction, publishes its events,
//!   jobs and dead letters, waits for the broker's confirms, then acks the whole batch with
//!   one multiple-ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deskmail_configclient::ConfigWatcher;
use deskmail_mailparse::Limits;
use deskmail_mq::{Consumer, Delivery, MqError};
use deskmail_runtime::CancellationToken;
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::dispatch::{self, Plan};
use crate::rules::Rules;
use crate::store::Item;

/// One delivery, planned.
#[derive(Debug)]
pub struct Planned {
    pub delivery: Delivery,
    pub item: Item,
    /// When the delivery reached the router (for the processing-time histogram).
    pub arrived: Instant,
}

/// A batch for the committer: the deliveries in tag order and the rules they were planned with.
#[derive(Debug)]
pub struct Batch {
    pub mails: Vec<Planned>,
    pub rules: Arc<Rules>,
    /// The highest delivery tag: `basic.ack multiple` up to it settles the whole batch.
    pub last_tag: u64,
    /// Where the collector's time went for this batch.
    pub timing: CollectTiming,
}

/// The collector's share of a batch's time.
#[derive(Debug, Default, Clone, Copy)]
pub struct CollectTiming {
    /// From the first delivery of the batch to the cut (waiting for more mail included).
    pub collect: Duration,
    /// Parsing, summed over the mails (CPU time on the blocking pool).
    pub parse: Duration,
    /// Applying the rules, summed over the mails.
    pub dispatch: Duration,
    /// Wall time of parsing and planning the batch in parallel.
    pub plan_wall: Duration,
}

/// Rules of the latest snapshot, rebuilt only when the revision changes.
pub struct RulesCache {
    watcher: ConfigWatcher,
    current: Arc<Rules>,
}

impl RulesCache {
    pub fn new(watcher: ConfigWatcher) -> Self {
        let mut me = Self { watcher, current: Arc::new(Rules::default()) };
        me.refresh();
        me
    }

    pub fn refresh(&mut self) -> Arc<Rules> {
        if let Some(s) = self.watcher.current()
            && (s.revision != self.current.revision || self.current.revision == 0)
        {
            let rules = Rules::from_snapshot(&s);
            if !rules.broken_filters.is_empty() {
                tracing::warn!(filters = ?rules.broken_filters, "Filters with a pattern that does not compile are skipped.");
            }
            tracing::info!(revision = rules.revision, "Dispatch rules loaded.");
            self.current = Arc::new(rules);
        }
        self.current.clone()
    }
}

/// The stable source id of a delivery: its `message_id`, else a hash of the mail.
pub fn source_id_of(d: &Delivery) -> String {
    match d.message_id().map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.to_owned(),
        None => format!("sha256:{}", crate::sha256_hex(d.body())),
    }
}

/// How batches are cut and mail is parsed.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most mails in a batch.
    pub size: usize,
    /// Most raw bytes in a batch.
    pub bytes: usize,
    /// Longest wait for more mail once a batch has one.
    pub wait: Duration,
    /// The parser's limits.
    pub parse: Limits,
}

/// Collects batches until `shutdown`; returns the consumer for the caller to close after the
/// committer has settled what it was given.
pub async fn collect(
    mut consumer: Consumer,
    out: mpsc::Sender<Batch>,
    mut rules: RulesCache,
    limits: BatchLimits,
    shutdown: CancellationToken,
) -> (Consumer, Result<(), MqError>) {
    loop {
        let (deliveries, collect) = match next_batch(&mut consumer, &limits, &shutdown).await {
            Ok(Some(d)) => d,
            Ok(None) => return (consumer, Ok(())),
            Err(e) => return (consumer, Err(e)),
        };
        let current = rules.refresh();
        let started = Instant::now();
        let (mails, parse, dispatch) = match plan_parallel(deliveries, &current, limits.parse).await {
            Ok(m) => m,
            Err(e) => {
                // Never expected (the parser does not panic); the deliveries go back unacked.
                tracing::error!(error = %e, "Parsing a batch failed; its mail goes back to the queue.");
                let queue = consumer.queue().to_owned();
                return (consumer, Err(MqError::ConsumerCancelled { queue }));
            }
        };
        let timing = CollectTiming { collect, parse, dispatch, plan_wall: started.elapsed() };
        let last_tag = mails.iter().map(|m| m.delivery.delivery_tag()).max().unwrap_or(0);
        if out.send(Batch { mails, rules: current, last_tag, timing }).await.is_err() {
            return (consumer, Ok(()));
        }
    }
}

/// Parses and plans a batch on the blocking pool, in as many slices as there are cores,
/// keeping the delivery order. Returns the planned mails and the summed parse and dispatch
/// times.
async fn plan_parallel(
    deliveries: Vec<(Delivery, Instant)>,
    rules: &Arc<Rules>,
    limits: Limits,
) -> Result<(Vec<Planned>, Duration, Duration), tokio::task::JoinError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let slice = deliveries.len().div_ceil(threads).max(8);
    let mut tasks = Vec::new();
    let mut rest = deliveries;
    while !rest.is_empty() {
        let tail = rest.split_off(slice.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        let rules = rules.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let (mut parse, mut dispatch) = (Duration::ZERO, Duration::ZERO);
            let planned = chunk
                .into_iter()
                .map(|(delivery, arrived)| {
                    let (item, p, d) = plan_one(&delivery, &rules, &limits);
                    parse += p;
                    dispatch += d;
                    Planned { delivery, item, arrived }
                })
                .collect::<Vec<_>>();
            (planned, parse, dispatch)
        }));
    }
    let mut out = Vec::new();
    let (mut parse, mut dispatch) = (Duration::ZERO, Duration::ZERO);
    for t in tasks {
        let (planned, p, d) = t.await?;
        out.extend(planned);
        parse += p;
        dispatch += d;
    }
    Ok((out, parse, dispatch))
}

/// Parses and plans one mail inside its `mail` span (source id, mailbox); what cannot even
/// be planned is a dead letter.
fn plan_one(d: &Delivery, rules: &Rules, limits: &Limits) -> (Item, Duration, Duration) {
    let source_id = source_id_of(d);
    let mailbox_id = d.header_str("x-mailbox-id").map(str::to_owned).filter(|m| !m.is_empty());
    let span = crate::mail_span(&source_id, mailbox_id.as_deref(), d.redelivered());
    let _entered = span.enter();
    let raw: Bytes = d.payload();
    let (plan, parse, dispatch) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch::plan_timed(&raw, mailbox_id.as_deref(), rules, limits)
    })) {
        Ok(p) => p,
        Err(_) => (
            Plan::Dead { reason: "the parser panicked on this mail".to_owned() },
            Duration::ZERO,
            Duration::ZERO,
        ),
    };
    match &plan {
        Plan::Article(p) => tracing::debug!(
            followup_number = p.followup_number.as_deref(),
            queue = p.queue_id.as_deref(),
            auto_reply = p.auto_reply.is_some(),
            "Mail planned."
        ),
        Plan::Ignore { reason } => tracing::debug!(%reason, "Mail planned: ignore."),
        Plan::Dead { reason } => tracing::debug!(%reason, "Mail planned: dead letter."),
    }
    (Item { source_id, mailbox_id, raw, plan }, parse, dispatch)
}

/// The next batch of deliveries, each with its arrival time, and the time from the first
/// delivery to the cut. The batch ends at `limits.size` mails, `limits.bytes` raw bytes, or
/// `limits.wait` after the first delivery.
async fn next_batch(
    consumer: &mut Consumer,
    limits: &BatchLimits,
    shutdown: &CancellationToken,
) -> Result<Option<(Vec<(Delivery, Instant)>, Duration)>, MqError> {
    let (max, max_bytes, wait) = (limits.size, limits.bytes, limits.wait);
    let first = tokio::select! {
        biased;
        () = shutdown.cancelled() => return Ok(None),
        d = consumer.next_delivery() => d,
    };
    let first = match first {
        Some(d) => d?,
        None => return Err(MqError::ConsumerCancelled { queue: consumer.queue().to_owned() }),
    };
    let start = Instant::now();
    let mut bytes = first.body().len();
    let mut batch = vec![(first, start)];
    let deadline = tokio::time::Instant::now() + wait;
    while batch.len() < max && bytes < max_bytes {
        let next = match consumer.next_delivery().now_or_never() {
            Some(Some(d)) => d?,
            Some(None) => break,
            None => match tokio::time::timeout_at(deadline, consumer.next_delivery()).await {
                Ok(Some(d)) => d?,
                Ok(None) | Err(_) => break,
            },
        };
        bytes += next.body().len();
        batch.push((next, Instant::now()));
    }
    Ok(Some((batch, start.elapsed())))
}
