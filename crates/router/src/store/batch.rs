//! One transaction per batch of mails: dedup, follow-up lookups, ticket numbers, the
//! auto-reply count, and every row (tickets, articles, attachments, outbox) in multi-row
//! inserts. Either the whole batch is committed or none of it.
//!
//! Exactly one article per source id: the first statement inserts the processed-source rows
//! with `ON CONFLICT DO NOTHING RETURNING source_id`; only the ids it returns are new. A
//! concurrent router inserting the same id blocks on the key until this transaction ends and
//! then sees it as a duplicate. On SQLite that first write also takes the write lock at once,
//! so two routers on one file queue up instead of failing on a lock upgrade.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};

use super::entity::{article, attachment, outbox, processed, ticket};
use super::number::{civil_day, counter_name, format_number};
use super::sql::{bump_counter, count_auto_replies, insert_chunked, insert_processed, record_auto_replies};
use super::steps::{StepClock, WRITE_STEPS};
use super::{Store, StoreError};
use crate::dispatch::{ArticlePlan, Plan, kind_name};
use crate::events;
use crate::rules::Rules;

/// One mail for the store. `plan` is [`Plan::Article`] or [`Plan::Ignore`].
#[derive(Debug)]
pub struct Item {
    pub source_id: String,
    pub mailbox_id: Option<String>,
    pub raw: Bytes,
    pub plan: Plan,
}

impl Item {
    /// SHA-256 (hex) of the mailbox id and the raw mail: the second dedup key. The same
    /// bytes in the same mailbox under a new source id are a re-fetch (a server that lost its
    /// UID assignments, a restored mailbox), not a new mail: every delivery an MTA makes
    /// carries its own `Received:` trace and queue id, so two real mails never share it.
    pub fn content_key(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.mailbox_id.as_deref().unwrap_or("").as_bytes());
        h.update([0u8]);
        h.update(&self.raw);
        hex::encode(h.finalize())
    }
}

/// What became of one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created {
        article_id: String,
        ticket_number: String,
    },
    FollowUp {
        article_id: String,
        ticket_number: String,
    },
    Ignored {
        reason: String,
    },
    /// Processed before (or earlier in the same batch): nothing written.
    Duplicate,
}

/// The result of a committed batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One per item, in order.
    pub outcomes: Vec<Outcome>,
    /// Messages to publish now: this batch's events and jobs, and those still in the outbox
    /// for duplicates (a router that crashed between commit and publish).
    pub outbox: Vec<outbox::Model>,
    /// Auto-replies not sent because the sender reached the daily limit.
    pub auto_replies_over_limit: usize,
    /// Time spent on the batch's statements (dedup, lookups, inserts), before the commit.
    pub write_time: std::time::Duration,
    /// Time the commit itself took (the WAL flush).
    pub commit_time: std::time::Duration,
    /// `write_time` by step, see [`WRITE_STEPS`].
    pub steps: [std::time::Duration; WRITE_STEPS.len()],
}

#[derive(Debug, Clone)]
struct TicketRef {
    id: String,
    number: Option<String>,
    queue_id: Option<String>,
}

enum Decision {
    FollowUp(String),
    New(String),
    Ignored(String),
}

/// A new id: UUIDv7, so ids sort by creation.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Store {
    /// Writes a batch in one transaction (see the module docs). `now_us`: Unix microseconds.
    pub async fn commit(
        &self,
        items: &[Item],
        rules: &Rules,
        now_us: i64,
    ) -> Result<BatchOutcome, StoreError> {
        self.commit_with(items, rules, now_us, &[]).await
    }

    /// [`Store::commit`], also deleting the outbox rows `published` (messages of earlier
    /// batches the broker confirmed) in the same transaction: no round trip and no commit of
    /// their own.
    pub async fn commit_with(
        &self,
        items: &[Item],
        rules: &Rules,
        now_us: i64,
        published: &[String],
    ) -> Result<BatchOutcome, StoreError> {
        let start = std::time::Instant::now();
        let tx = self.db.begin().await?;
        let result = async {
            super::sql::delete_outbox(&tx, published).await?;
            write(&tx, items, rules, now_us).await
        }
        .await;
        match result {
            Ok(mut outcome) => {
                let written = std::time::Instant::now();
                tx.commit().await?;
                outcome.write_time = written - start;
                outcome.commit_time = written.elapsed();
                Ok(outcome)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e.into())
            }
        }
    }
}

async fn write(
    tx: &DatabaseTransaction,
    items: &[Item],
    rules: &Rules,
    now: i64,
) -> Result<BatchOutcome, DbErr> {
    let n = items.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let article_ids: Vec<Option<String>> =
        items.iter().map(|it| matches!(it.plan, Plan::Article(_)).then(new_id)).collect();

    // 1. Dedup, by source id and by content key: first occurrence in the batch, then the
    //    processed-source log.
    let content_keys: Vec<String> = items.iter().map(Item::content_key).collect();
    let mut seen = HashSet::new();
    let mut seen_content = HashSet::new();
    let mut candidates = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if seen.insert(it.source_id.as_str()) && seen_content.insert(content_keys[i].as_str()) {
            candidates.push(i);
        } else {
            outcomes[i] = Some(Outcome::Duplicate);
        }
    }
    let mut clock = StepClock::new();
    let fresh = insert_processed(tx, items, &candidates, &article_ids, &content_keys, now).await?;
    clock.mark(0);
    let mut duplicates = Vec::new();
    let mut work = Vec::new();
    for i in candidates {
        if fresh.contains(&items[i].source_id) {
            work.push(i);
        } else {
            outcomes[i] = Some(Outcome::Duplicate);
            duplicates.push(items[i].source_id.clone());
        }
    }

    // 5. Follow-up lookups for the whole batch.
    let plans: Vec<(usize, &ArticlePlan)> = work
        .iter()
        .filter_map(|&i| match &items[i].plan {
            Plan::Article(p) => Some((i, p.as_ref())),
            _ => None,
        })
        .collect();
    let numbers: Vec<String> = plans.iter().filter_map(|(_, p)| p.followup_number.clone()).collect();
    let thread_ids: Vec<String> = plans.iter().flat_map(|(_, p)| p.thread_ids.iter().cloned()).collect();
    let mut by_id: HashMap<String, TicketRef> = HashMap::new();
    let mut by_number: HashMap<String, String> = HashMap::new();
    for chunk in numbers.chunks(500) {
        for t in
            ticket::Entity::find().filter(ticket::Column::Number.is_in(chunk.iter().cloned())).all(tx).await?
        {
            by_number.insert(t.number.clone(), t.id.clone());
            by_id.insert(t.id.clone(), TicketRef { id: t.id, number: Some(t.number), queue_id: t.queue_id });
        }
    }
    let mut by_message_id: HashMap<String, String> = HashMap::new();
    for chunk in thread_ids.chunks(500) {
        let rows: Vec<(String, Option<String>)> = article::Entity::find()
            .select_only()
            .column(article::Column::TicketId)
            .column(article::Column::MessageId)
            .filter(article::Column::MessageId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(tx)
            .await?;
        for (ticket_id, mid) in rows {
            if let Some(mid) = mid {
                by_message_id.entry(mid).or_insert(ticket_id);
            }
        }
    }
    let unknown: Vec<String> = by_message_id.values().filter(|t| !by_id.contains_key(*t)).cloned().collect();
    for chunk in unknown.chunks(500) {
        for t in
            ticket::Entity::find().filter(ticket::Column::Id.is_in(chunk.iter().cloned())).all(tx).await?
        {
            by_id.insert(t.id.clone(), TicketRef { id: t.id, number: Some(t.number), queue_id: t.queue_id });
        }
    }

    // Decide, in order, so a reply later in the batch finds a ticket opened earlier in it.
    let mut decisions: HashMap<usize, Decision> = HashMap::new();
    let mut new_tickets: Vec<String> = Vec::new();
    for &(i, p) in &plans {
        let found = p
            .followup_number
            .as_ref()
            .and_then(|num| by_number.get(num))
            .or_else(|| p.thread_ids.iter().find_map(|m| by_message_id.get(m)))
            .cloned();
        let decision = match found {
            Some(ticket_id) => Decision::FollowUp(ticket_id),
            None => match &p.ignore_if_new {
                Some(reason) => Decision::Ignored(reason.clone()),
                None => {
                    let id = new_id();
                    by_id.insert(
                        id.clone(),
                        TicketRef { id: id.clone(), number: None, queue_id: p.queue_id.clone() },
                    );
                    new_tickets.push(id.clone());
                    Decision::New(id)
                }
            },
        };
        if let (Some(mid), Decision::FollowUp(t) | Decision::New(t)) = (&p.message_id, &decision) {
            by_message_id.entry(mid.clone()).or_insert_with(|| t.clone());
        }
        decisions.insert(i, decision);
    }

    clock.mark(1);
    // Ticket numbers: one counter update for the whole batch, inside this transaction.
    let day = civil_day(now);
    let settings = &rules.settings;
    if !new_tickets.is_empty() {
        let k = i64::try_from(new_tickets.len()).unwrap_or(i64::MAX);
        let last = bump_counter(tx, &counter_name(settings.number_format, day), k).await?;
        for (j, id) in new_tickets.iter().enumerate() {
            let value = last - k + 1 + i64::try_from(j).unwrap_or(0);
            if let Some(t) = by_id.get_mut(id) {
                t.number = Some(format_number(settings.number_format, day, settings.system_id, value));
            }
        }
    }

    // 7. Auto-replies within the daily limit per sender.
    let mut wanted: HashMap<String, i32> = HashMap::new();
    for &(i, p) in &plans {
        if let (Some(Decision::New(_)), Some(d)) = (decisions.get(&i), &p.auto_reply) {
            *wanted.entry(d.sender.clone()).or_default() += 1;
        }
    }
    let mut allowed = count_auto_replies(tx, &wanted, day, settings.auto_reply_limit_per_day).await?;
    let mut sent: HashMap<String, i32> = HashMap::new();
    let mut over_limit = 0;

    clock.mark(2);
    // Rows.
    let mut tickets = Vec::new();
    let mut articles = Vec::new();
    let mut attachments = Vec::new();
    let mut outbox_rows = Vec::new();
    let mut touched = Vec::new();
    let mut ignored = Vec::new();
    for &i in &work {
        let it = &items[i];
        let p = match &it.plan {
            Plan::Article(p) => p.as_ref(),
            Plan::Ignore { reason } | Plan::Dead { reason } => {
                outcomes[i] = Some(Outcome::Ignored { reason: reason.clone() });
                continue;
            }
        };
        let article_id = article_ids[i].clone().unwrap_or_else(new_id);
        let (ticket, created) = match decisions.remove(&i) {
            Some(Decision::FollowUp(t)) => (by_id.get(&t).cloned(), false),
            Some(Decision::New(t)) => (by_id.get(&t).cloned(), true),
            other => {
                let reason = match other {
                    Some(Decision::Ignored(r)) => r,
                    _ => reason_of(p),
                };
                ignored.push((it.source_id.clone(), reason.clone(), it.raw.clone()));
                outcomes[i] = Some(Outcome::Ignored { reason });
                continue;
            }
        };
        let Some(ticket) = ticket else {
            return Err(DbErr::Custom(format!("ticket of {} vanished within the batch", it.source_id)));
        };
        let number = ticket.number.clone().unwrap_or_default();
        if created {
            tickets.push(ticket::Model {
                id: ticket.id.clone(),
                number: number.clone(),
                queue_id: ticket.queue_id.clone(),
                state: ticket::STATE_NEW.to_owned(),
                priority: p.priority.unwrap_or(3),
                title: if p.subject.is_empty() { "(no subject)".to_owned() } else { p.subject.clone() },
                customer_address: p.customer_address.to_lowercase(),
                customer_name: p.customer_name.clone(),
                company_id: p.company_id.clone(),
                mailbox_id: it.mailbox_id.clone(),
                created_at: now,
                updated_at: now,
            });
        } else {
            touched.push(ticket.id.clone());
        }
        // The rows' bytes (attachment content, bodies, raw mail) are copied in only when
        // their statement is built, below: a batch's blobs are never all copied at once.
        for (pos, a) in p.attachments.iter().enumerate() {
            let row = attachment::Model {
                id: new_id(),
                article_id: article_id.clone(),
                position: i32::try_from(pos).unwrap_or(i32::MAX),
                filename: crate::dispatch::clean(a.filename.as_deref().unwrap_or("")),
                content_type: crate::dispatch::clean(&a.content_type),
                size: i64::try_from(a.size).unwrap_or(i64::MAX),
                content_id: a.content_id.as_deref().map(crate::dispatch::clean),
                inline: a.inline,
                kind: kind_name(a.kind).to_owned(),
                sha256: a.sha256.clone(),
                content: Vec::new(),
            };
            attachments.push((row, i, pos));
        }
        let queue_name = ticket.queue_id.as_ref().and_then(|q| rules.queues.get(q)).map(|q| q.name.clone());
        let event = events::TicketEvent {
            event: if created { events::CREATED } else { events::FOLLOWUP },
            ticket_id: &ticket.id,
            ticket_number: &number,
            queue_id: ticket.queue_id.as_deref(),
            queue: queue_name.as_deref(),
            article_id: &article_id,
            from: &p.from_address,
            from_name: &p.from_name,
            subject: &p.subject,
            source_id: &it.source_id,
            mailbox_id: it.mailbox_id.as_deref(),
            is_bounce: p.is_bounce,
            is_auto_response: p.is_auto_response,
        };
        outbox_rows.push(outbox::Model {
            id: new_id(),
            source_id: it.source_id.clone(),
            target: events::TARGET_EVENTS.to_owned(),
            routing_key: event.event.to_owned(),
            message_id: format!("{}:{article_id}", event.event),
            payload: event.to_json(),
            created_at: now,
        });
        if created && let Some(d) = &p.auto_reply {
            let left = allowed.entry(d.sender.clone()).or_default();
            if *left > 0 {
                *left -= 1;
                *sent.entry(d.sender.clone()).or_default() += 1;
                let job = crate::autoreply::build_job(d, &number, &settings.ticket_hook, &it.source_id);
                outbox_rows.push(outbox::Model {
                    id: new_id(),
                    source_id: it.source_id.clone(),
                    target: events::TARGET_OUTBOUND.to_owned(),
                    routing_key: deskmail_mq::topology::routing_keys::MAIL_SEND.to_owned(),
                    message_id: job.job_id.clone(),
                    payload: serde_json::to_vec(&job).map_err(|e| DbErr::Custom(e.to_string()))?,
                    created_at: now,
                });
            } else {
                over_limit += 1;
            }
        }
        let row = article::Model {
            id: article_id.clone(),
            ticket_id: ticket.id.clone(),
            direction: "in".to_owned(),
            source_id: Some(it.source_id.clone()),
            message_id: p.message_id.clone(),
            in_reply_to: p.in_reply_to.join("\n"),
            references: p.references.join("\n"),
            from_address: p.from_address.clone(),
            from_name: p.from_name.clone(),
            to_addresses: p.to.join("\n"),
            cc_addresses: p.cc.join("\n"),
            subject: p.subject.clone(),
            body_text: String::new(),
            body_html: None,
            raw: Vec::new(),
            parse_error: p.parse_error.clone(),
            is_auto_response: p.is_auto_response,
            is_bounce: p.is_bounce,
            bounce_info: p.bounce_info.clone(),
            created_at: now,
        };
        articles.push((row, i));
        outcomes[i] = Some(if created {
            Outcome::Created { article_id, ticket_number: number }
        } else {
            Outcome::FollowUp { article_id, ticket_number: number }
        });
    }

    clock.mark(3);
    // Statements of at most 1 MiB of blobs (or one bigger row): a few round trips per
    // batch, while the copies of a statement's values (ours, sea-orm's for sqlx, the
    // driver's) stay small.
    const BLOB_BYTES: usize = 1024 * 1024;
    insert_chunked::<ticket::Entity, _>(
        tx,
        tickets.into_iter().map(|t| Ok((ticket::ActiveModel::from(t), 0))),
        200,
        BLOB_BYTES,
    )
    .await?;
    clock.mark(4);
    insert_chunked::<article::Entity, _>(
        tx,
        articles.into_iter().map(|(mut a, i)| {
            let p = article_plan(&items[i])?;
            a.body_text.clone_from(&p.body_text);
            a.body_html.clone_from(&p.body_html);
            a.raw = items[i].raw.to_vec();
            let size = a.raw.len() + a.body_text.len() + a.body_html.as_ref().map_or(0, String::len);
            Ok((article::ActiveModel::from(a), size))
        }),
        100,
        BLOB_BYTES,
    )
    .await?;
    clock.mark(5);
    insert_chunked::<attachment::Entity, _>(
        tx,
        attachments.into_iter().map(|(mut a, i, pos)| {
            let file = article_plan(&items[i])?.attachments.get(pos).ok_or_else(|| {
                DbErr::Custom(format!("attachment {pos} of {} vanished within the batch", items[i].source_id))
            })?;
            a.content.clone_from(&file.content);
            let size = a.content.len();
            Ok((attachment::ActiveModel::from(a), size))
        }),
        100,
        BLOB_BYTES,
    )
    .await?;
    clock.mark(6);
    insert_chunked::<outbox::Entity, _>(
        tx,
        outbox_rows.iter().cloned().map(|o| Ok((outbox::ActiveModel::from(o), 0))),
        200,
        BLOB_BYTES,
    )
    .await?;
    record_auto_replies(tx, &sent, day).await?;
    // A follow-up touches its ticket and reopens it when it was closed.
    touched.sort();
    touched.dedup();
    for chunk in touched.chunks(500) {
        let state = Expr::case(Expr::col(ticket::Column::State).like("closed%"), ticket::STATE_OPEN)
            .finally(Expr::col(ticket::Column::State));
        let stmt = Query::update()
            .table(ticket::Entity)
            .value(ticket::Column::UpdatedAt, now)
            .value(ticket::Column::State, state)
            .and_where(ticket::Column::Id.is_in(chunk.iter().cloned()))
            .to_owned();
        tx.execute(&stmt).await?;
    }
    for (source_id, reason, raw) in ignored {
        let stmt = Query::update()
            .table(processed::Entity)
            .value(processed::Column::Outcome, "ignored")
            .value(processed::Column::ArticleId, Option::<String>::None)
            .value(processed::Column::Note, reason)
            .value(processed::Column::Raw, raw.to_vec())
            .and_where(processed::Column::SourceId.eq(source_id))
            .to_owned();
        tx.execute(&stmt).await?;
    }

    clock.mark(7);
    // Messages a crashed run committed and never saw confirmed.
    let mut pending = Vec::new();
    for chunk in duplicates.chunks(500) {
        pending.extend(
            outbox::Entity::find()
                .filter(outbox::Column::SourceId.is_in(chunk.iter().cloned()))
                .all(tx)
                .await?,
        );
    }
    pending.sort_by(|a, b| a.id.cmp(&b.id));
    pending.extend(outbox_rows);

    Ok(BatchOutcome {
        outcomes: outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Duplicate)).collect(),
        outbox: pending,
        auto_replies_over_limit: over_limit,
        steps: clock.done(),
        ..BatchOutcome::default()
    })
}

/// The article plan of a mail that has an article row (an error, not an empty row, if not).
fn article_plan(item: &Item) -> Result<&ArticlePlan, DbErr> {
    match &item.plan {
        Plan::Article(p) => Ok(p),
        _ => Err(DbErr::Custom(format!("the plan of {} is not an article", item.source_id))),
    }
}

fn reason_of(p: &ArticlePlan) -> String {
    p.ignore_if_new.clone().unwrap_or_else(|| "ignored".to_owned())
}
