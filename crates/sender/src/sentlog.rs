//! The sent-jobs log: job id -> Message-ID, box, time, the server's reply. A job whose id is
//! here is not sent again (idempotency across redeliveries, restarts and several senders).
//! sea-orm on SQLite (default, a file under `var/`) or PostgreSQL, one migration set.

use deskmail_config::DatabaseConfig;
use sea_orm::ActiveValue::Set;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, EntityTrait};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{mpsc, oneshot};

/// The `sent_jobs` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sent_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: String,
        pub message_id: String,
        pub mailbox_id: String,
        /// Microseconds since the Unix epoch.
        pub sent_at: i64,
        /// The server's reply (or `dry-run`).
        pub reply: String,
        pub dry_run: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::{big_integer, boolean, string, text};

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(Initial)]
        }
        fn migration_table_name() -> DynIden {
            "sender_migrations".into_iden()
        }
    }

    #[derive(DeriveMigrationName)]
    struct Initial;

    #[derive(DeriveIden)]
    enum SentJobs {
        Table,
        JobId,
        MessageId,
        MailboxId,
        SentAt,
        Reply,
        DryRun,
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Initial {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.create_table(
                Table::create()
                    .table(SentJobs::Table)
                    .if_not_exists()
                    .col(string(SentJobs::JobId).primary_key())
                    .col(string(SentJobs::MessageId))
                    .col(string(SentJobs::MailboxId))
                    .col(big_integer(SentJobs::SentAt))
                    .col(text(SentJobs::Reply))
                    .col(boolean(SentJobs::DryRun))
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .if_not_exists()
                    .name("sent_jobs_sent_at")
                    .table(SentJobs::Table)
                    .col(SentJobs::SentAt)
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(SentJobs::Table).to_owned()).await
        }
    }
}

/// What went wrong with the sent-jobs log.
#[derive(Debug, thiserror::Error)]
pub enum SentLogError {
    #[error("sent_log: cannot create directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("sent_log: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A batched write or lookup failed (the text of the database's error), or its task is gone.
    #[error("sent_log: {0}")]
    Write(String),
}

/// One sent job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    pub job_id: String,
    pub message_id: String,
    pub mailbox_id: String,
    pub sent_at_micros: i64,
    pub reply: String,
    pub dry_run: bool,
}

type WriteRequest = (SentRecord, oneshot::Sender<Result<(), String>>);
type FindRequest = (String, oneshot::Sender<Result<Option<SentRecord>, String>>);

/// Most job ids looked up in one query.
const FIND_BATCH: usize = 256;

/// Most records written in one statement (6 parameters each, far below SQLite's limit).
const WRITE_BATCH: usize = 512;

/// The log, shared by every send task (cheap to clone). Records are written by one task in
/// batches (group commit): one writer, so SQLite never has two writers waiting on its lock,
/// and one statement and commit for every record that arrived meanwhile.
#[derive(Debug, Clone)]
pub struct SentLog {
    db: DatabaseConnection,
    writer: mpsc::Sender<WriteRequest>,
    finder: mpsc::Sender<FindRequest>,
}

fn from_model(m: entity::Model) -> SentRecord {
    SentRecord {
        job_id: m.job_id,
        message_id: m.message_id,
        mailbox_id: m.mailbox_id,
        sent_at_micros: m.sent_at,
        reply: m.reply,
        dry_run: m.dry_run,
    }
}

/// Answers lookups in batches: one `WHERE job_id IN (...)` for every lookup that arrived
/// meanwhile (the prefetched deliveries), instead of one query each.
async fn find_batches(db: DatabaseConnection, mut rx: mpsc::Receiver<FindRequest>) {
    use sea_orm::{ColumnTrait, QueryFilter};
    let mut batch = Vec::with_capacity(FIND_BATCH);
    while rx.recv_many(&mut batch, FIND_BATCH).await > 0 {
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let found = entity::Entity::find().filter(entity::Column::JobId.is_in(ids)).all(&db).await;
        match found {
            Ok(rows) => {
                let rows: std::collections::HashMap<String, entity::Model> =
                    rows.into_iter().map(|m| (m.job_id.clone(), m)).collect();
                for (id, reply) in batch.drain(..) {
                    let _ = reply.send(Ok(rows.get(&id).cloned().map(from_model)));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(text.clone()));
                }
            }
        }
    }
}

/// Writes what arrives, in batches, until every `SentLog` is dropped.
async fn write_batches(db: DatabaseConnection, mut rx: mpsc::Receiver<WriteRequest>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let rows = batch.iter().map(|(r, _)| entity::ActiveModel {
            job_id: Set(r.job_id.clone()),
            message_id: Set(r.message_id.clone()),
            mailbox_id: Set(r.mailbox_id.clone()),
            sent_at: Set(r.sent_at_micros),
            reply: Set(r.reply.clone()),
            dry_run: Set(r.dry_run),
        });
        let outcome = entity::Entity::insert_many(rows)
            .on_conflict_do_nothing_on([entity::Column::JobId])
            .exec(&db)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(outcome.clone());
        }
    }
}

impl SentLog {
    /// Connects (creating a SQLite file's directory) and migrates.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, SentLogError> {
        let url = config.url.expose();
        config.create_sqlite_dir().map_err(|(path, source)| SentLogError::Directory { path, source })?;
        let mut options = ConnectOptions::new(url.to_owned());
        options.max_connections(config.max_connections).sqlx_logging(false);
        // On every pooled connection (connect options, not a one-off PRAGMA on whichever
        // connection the pool lends): WAL, so lookups go beside the writer and a second sender
        // on the same file waits up to the busy timeout instead of failing; synchronous=NORMAL,
        // the durable setting for WAL (a commit survives a crash of the process; only a power
        // loss may undo the last commits), instead of an fsync per commit.
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(5))
        });
        let db = Database::connect(options).await?;
        migration::Migrator::up(&db, None).await?;
        let (writer, rx) = mpsc::channel(WRITE_BATCH * 4);
        tokio::spawn(write_batches(db.clone(), rx));
        let (finder, rx) = mpsc::channel(FIND_BATCH * 4);
        tokio::spawn(find_batches(db.clone(), rx));
        Ok(Self { db, writer, finder })
    }

    /// The record of `job_id`, if it was sent.
    /// Lookups that arrive together are answered by one query.
    pub async fn find(&self, job_id: &str) -> Result<Option<SentRecord>, SentLogError> {
        let (tx, rx) = oneshot::channel();
        self.finder
            .send((job_id.to_owned(), tx))
            .await
            .map_err(|_| SentLogError::Write("the lookup task stopped".into()))?;
        rx.await
            .map_err(|_| SentLogError::Write("the lookup task stopped".into()))?
            .map_err(SentLogError::Write)
    }

    /// Records a sent job (durably, when this returns `Ok`); a second record of the same id
    /// keeps the first.
    pub async fn record(&self, r: &SentRecord) -> Result<(), SentLogError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((r.clone(), tx))
            .await
            .map_err(|_| SentLogError::Write("the writer stopped".into()))?;
        rx.await.map_err(|_| SentLogError::Write("the writer stopped".into()))?.map_err(SentLogError::Write)
    }

    /// Whether the database answers (`SELECT 1`), for the `database` readiness check.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// The pooled connection, for inspection (tests check every pooled connection's settings).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// How many jobs are recorded.
    pub async fn count(&self) -> Result<u64, SentLogError> {
        use sea_orm::PaginatorTrait;
        Ok(entity::Entity::find().count(&self.db).await?)
    }
}
