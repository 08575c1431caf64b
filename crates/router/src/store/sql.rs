//! The statements of a batch that are more than a plain insert: the dedup insert, the
//! counter bump and the auto-reply count (all `INSERT ... ON CONFLICT ... RETURNING`, on
//! SQLite and PostgreSQL alike), and chunked multi-row inserts.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IdenStatic, Iterable, Statement,
};

use super::batch::Item;
use super::entity::{auto_reply_log, counter, outbox, processed};
use crate::dispatch::Plan;

fn sql(e: sea_orm::sea_query::error::Error) -> DbErr {
    DbErr::Custom(e.to_string())
}

/// Inserts the processed-source rows; returns the source ids that were new. A row whose
/// source id or content key is already there is left out (`ON CONFLICT DO NOTHING` without a
/// target covers both unique keys).
pub(super) async fn insert_processed(
    tx: &DatabaseTransaction,
    items: &[Item],
    candidates: &[usize],
    article_ids: &[Option<String>],
    content_keys: &[String],
    now: i64,
) -> Result<HashSet<String>, DbErr> {
    use processed::Column as C;
    let mut fresh = HashSet::new();
    for chunk in candidates.chunks(200) {
        let mut stmt = Query::insert();
        stmt.into_table(processed::Entity).columns([
            C::SourceId,
            C::MailboxId,
            C::Outcome,
            C::ArticleId,
            C::Note,
            C::Raw,
            C::ProcessedAt,
            C::ContentKey,
        ]);
        for &i in chunk {
            let it = &items[i];
            let (outcome, note, raw): (&str, Option<String>, Option<Vec<u8>>) = match &it.plan {
                Plan::Article(_) => ("article", None, None),
                Plan::Ignore { reason } | Plan::Dead { reason } => {
                    ("ignored", Some(reason.clone()), Some(it.raw.to_vec()))
                }
            };
            stmt.values([
                it.source_id.clone().into(),
                it.mailbox_id.clone().into(),
                outcome.into(),
                article_ids[i].clone().into(),
                note.into(),
                raw.into(),
                now.into(),
                content_keys[i].clone().into(),
            ])
            .map_err(sql)?;
        }
        stmt.on_conflict(OnConflict::new().do_nothing().to_owned()).returning_col(C::SourceId);
        for row in tx.query_all(&stmt).await? {
            fresh.insert(row.try_get::<String>("", "source_id")?);
        }
    }
    Ok(fresh)
}

/// Adds `k` to a counter (creating it at `k`) and returns the new value. The row stays
/// locked until the transaction ends, so concurrent routers draw disjoint ranges.
pub(super) async fn bump_counter(tx: &DatabaseTransaction, name: &str, k: i64) -> Result<i64, DbErr> {
    use counter::Column as C;
    let mut stmt = Query::insert();
    stmt.into_table(counter::Entity)
        .columns([C::Name, C::Value])
        .values([name.into(), k.into()])
        .map_err(sql)?
        .on_conflict(
            OnConflict::column(C::Name)
                .value(C::Value, Expr::col((counter::Entity, C::Value)).add(k))
                .to_owned(),
        )
        .returning_col(C::Value);
    let row =
        tx.query_one(&stmt).await?.ok_or_else(|| DbErr::Custom("counter update returned no row".into()))?;
    row.try_get::<i64>("", "value")
}

/// How many auto-replies each sender may still get today: locks (or creates at 0) each
/// sender's row for `day` and returns `limit - sent so far`, at most what is wanted. The rows
/// stay locked until the transaction ends, so concurrent routers do not both use the last
/// one. [`record_auto_replies`] then adds what is actually sent.
pub(super) async fn count_auto_replies(
    tx: &DatabaseTransaction,
    wanted: &HashMap<String, i32>,
    day: i32,
    limit: u32,
) -> Result<HashMap<String, i32>, DbErr> {
    use auto_reply_log::Column as C;
    let mut allowed = HashMap::new();
    let senders: Vec<(&String, &i32)> = wanted.iter().collect();
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    for chunk in senders.chunks(300) {
        let mut stmt = Query::insert();
        stmt.into_table(auto_reply_log::Entity).columns([C::Address, C::Day, C::Count]);
        for (sender, _) in chunk {
            stmt.values([(*sender).clone().into(), day.into(), 0i32.into()]).map_err(sql)?;
        }
        // A no-op update, so the existing row is returned (and locked).
        stmt.on_conflict(
            OnConflict::columns([C::Address, C::Day])
                .value(C::Count, Expr::col((auto_reply_log::Entity, C::Count)))
                .to_owned(),
        )
        .returning(Query::returning().columns([C::Address, C::Count]));
        for row in tx.query_all(&stmt).await? {
            let address: String = row.try_get("", "address")?;
            let sent: i32 = row.try_get("", "count")?;
            let n = wanted.get(&address).copied().unwrap_or(0);
            allowed.insert(address, (limit - sent).clamp(0, n));
        }
    }
    Ok(allowed)
}

/// Adds the auto-replies actually sent today (suppressed ones are not counted) to the log
/// rows [`count_auto_replies`] locked.
pub(super) async fn record_auto_replies(
    tx: &DatabaseTransaction,
    sent: &HashMap<String, i32>,
    day: i32,
) -> Result<(), DbErr> {
    use auto_reply_log::Column as C;
    let senders: Vec<(&String, &i32)> = sent.iter().filter(|(_, n)| **n > 0).collect();
    for chunk in senders.chunks(300) {
        let mut stmt = Query::insert();
        stmt.into_table(auto_reply_log::Entity).columns([C::Address, C::Day, C::Count]);
        for (sender, n) in chunk {
            stmt.values([(*sender).clone().into(), day.into(), (**n).into()]).map_err(sql)?;
        }
        stmt.on_conflict(
            OnConflict::columns([C::Address, C::Day])
                .value(
                    C::Count,
                    Expr::col((auto_reply_log::Entity, C::Count)).add(Expr::cust("excluded.count")),
                )
                .to_owned(),
        );
        tx.execute(&stmt).await?;
    }
    Ok(())
}

/// Multi-row inserts of `(row, bytes)`: one statement per `max_rows` rows or `max_bytes`
/// bytes of blobs, whichever comes first, so a batch of big mail is not copied into one
/// huge statement (the driver holds each statement's values once more while it runs).
/// `rows` is drawn lazily: a row's bytes need to exist only while its statement runs; a row
/// that cannot be built ends the inserts with its error.
pub(super) async fn insert_chunked<E, I>(
    tx: &DatabaseTransaction,
    rows: I,
    max_rows: usize,
    max_bytes: usize,
) -> Result<(), DbErr>
where
    E: EntityTrait,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    I: IntoIterator<Item = Result<(E::ActiveModel, usize), DbErr>>,
{
    let mut buf: Vec<E::ActiveModel> = Vec::with_capacity(max_rows);
    let mut bytes = 0;
    for row in rows {
        let (row, size) = row?;
        buf.push(row);
        bytes += size;
        if buf.len() >= max_rows || bytes >= max_bytes {
            insert_rows::<E>(tx, std::mem::take(&mut buf)).await?;
            bytes = 0;
        }
    }
    if !buf.is_empty() {
        insert_rows::<E>(tx, buf).await?;
    }
    Ok(())
}

/// One `INSERT INTO t (every column) VALUES (...), (...)` of these rows, every column set.
///
/// Written here rather than with `insert_many`: sea-query builds a statement's values by
/// cloning them out of the query (`build` takes `&self`), and sea-orm clones them once more
/// for sqlx, so a mail of several MiB was held four times before the driver's own copy.
/// Moving the values straight into the [`Statement`] drops one of those copies.
async fn insert_rows<E>(tx: &DatabaseTransaction, rows: Vec<E::ActiveModel>) -> Result<(), DbErr>
where
    E: EntityTrait,
    E::ActiveModel: ActiveModelTrait<Entity = E>,
{
    use std::fmt::Write as _;
    let backend = tx.get_database_backend();
    let columns: Vec<E::Column> = E::Column::iter().collect();
    let mut sql = format!("INSERT INTO \"{}\" (", E::default().table_name());
    for (k, c) in columns.iter().enumerate() {
        let sep = if k == 0 { "" } else { ", " };
        let _ = write!(sql, "{sep}\"{}\"", c.as_str());
    }
    sql.push_str(") VALUES ");
    let mut values = Vec::with_capacity(rows.len() * columns.len());
    for (r, mut row) in rows.into_iter().enumerate() {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for (k, c) in columns.iter().enumerate() {
            let value = match row.take(*c) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => v,
                ActiveValue::NotSet => {
                    return Err(DbErr::Custom(format!(
                        "insert into {}: column {} is not set",
                        E::default().table_name(),
                        c.as_str()
                    )));
                }
            };
            values.push(value);
            let sep = if k == 0 { "" } else { ", " };
            match backend {
                DbBackend::Postgres => {
                    let _ = write!(sql, "{sep}${}", values.len());
                }
                _ => {
                    let _ = write!(sql, "{sep}?");
                }
            }
        }
        sql.push(')');
    }
    tx.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    Ok(())
}

/// Deletes outbox rows by id (messages the broker confirmed).
pub(super) async fn delete_outbox<C: ConnectionTrait>(db: &C, ids: &[String]) -> Result<(), DbErr> {
    for chunk in ids.chunks(500) {
        let stmt = Query::delete()
            .from_table(outbox::Entity)
            .and_where(outbox::Column::Id.is_in(chunk.iter().cloned()))
            .to_owned();
        db.execute(&stmt).await?;
    }
    Ok(())
}
