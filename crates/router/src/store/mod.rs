//! The tickets database: tickets, articles, attachments, the processed-source log, the
//! auto-reply log, ticket-number counters and the outbox, on SQLite (the embedded default) or
//! PostgreSQL, one migration set. Written only by the router (no other daemon reads it).

mod batch;
pub mod entity;
mod migration;
mod number;
mod sql;
mod steps;

use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use batch::{BatchOutcome, Item, Outcome};
pub use number::{civil_day, format_number};
pub use steps::WRITE_STEPS;

use deskmail_config::DatabaseConfig;

/// What went wrong with the tickets database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("database.url: cannot create the directory {path}: {source}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The tickets store. Cheap to clone (a pool).
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects (creating a SQLite file's directory when needed) and migrates.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let url = config.url.expose();
        config.create_sqlite_dir().map_err(|(path, source)| StoreError::Directory { path, source })?;
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(config.max_connections)
            .connect_timeout(std::time::Duration::from_secs(5))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .sqlx_logging(false);
        // On every pooled connection (connect options, not a one-off PRAGMA): WAL, so readers
        // go beside the writer and a second writer (another router on the same file) waits up
        // to the busy timeout instead of failing; synchronous=NORMAL, the durable setting for
        // WAL (a commit survives a crash of the process; only a power loss may undo the last
        // commits, never corrupt the file), instead of an fsync per commit.
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(30))
                // sqlx keeps 100 prepared statements per connection by default, and SQLite's
                // compiled multi-row inserts are large (tens of KiB each, one per row count):
                // measured 7.6 MiB of the router's heap at its peak. The batch's statements
                // repeat at a few row counts under a backlog, which a smaller cache still holds.
                .statement_cache_capacity(24)
        });
        let db = connect(options).await?;
        migrate(&db).await?;
        Ok(Self { db })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Whether the database answers (`SELECT 1`).
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// The outbox rows of these source ids (messages committed but maybe never published).
    pub async fn outbox_of(&self, source_ids: &[String]) -> Result<Vec<entity::outbox::Model>, StoreError> {
        let mut rows = Vec::new();
        for chunk in source_ids.chunks(500) {
            rows.extend(
                entity::outbox::Entity::find()
                    .filter(entity::outbox::Column::SourceId.is_in(chunk.iter().cloned()))
                    .all(&self.db)
                    .await?,
            );
        }
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }

    /// Forgets outbox rows once the broker confirmed them.
    pub async fn outbox_done(&self, ids: &[String]) -> Result<(), StoreError> {
        sql::delete_outbox(&self.db, ids).await?;
        Ok(())
    }
}

/// Connects. A SQLite file another process is creating or switching to WAL at this moment
/// answers "database is locked" to the connection's own PRAGMAs (the busy timeout does not
/// cover the journal-mode switch): tried again for up to 10 s, like the migrations below.
async fn connect(options: ConnectOptions) -> Result<DatabaseConnection, DbErr> {
    let mut attempt = 0;
    loop {
        match Database::connect(options.clone()).await {
            Err(e) if attempt < 100 && is_sqlite_busy(&e) => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "SQLite file busy at connect; trying again.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), the answers of a file another connection holds.
fn is_sqlite_busy(e: &DbErr) -> bool {
    let sqlx = match e {
        DbErr::Conn(sea_orm::RuntimeErr::SqlxError(s)) | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(s)) => s,
        _ => return false,
    };
    match sqlx.as_database_error() {
        Some(d) => matches!(d.code().as_deref(), Some("5" | "6" | "261" | "517" | "773")),
        None => false,
    }
}

/// Runs the migrations. On PostgreSQL inside a transaction holding an advisory lock, so
/// routers starting together on one database migrate one after the other (SQLite serialises
/// writers by itself).
async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        // Another process may be migrating the same file: its tables appear under us (a
        // lock upgrade refused, "already exists"). Each migration runs in a transaction, so
        // trying again sees it applied.
        let mut attempt = 0;
        loop {
            match migration::Migrator::up(db, None).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "Migration raced another process; trying again.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let tx = db.begin().await?;
    tx.execute_unprepared("SELECT pg_advisory_xact_lock(7301946115)").await?;
    migration::Migrator::up(&tx, None).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routers starting together on a new SQLite file: every one connects and migrates
    /// (the busy answers of the journal-mode switch and of the migrations are waited out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routers_opening_one_new_sqlite_file_together_all_succeed() {
        for round in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/tickets.db?mode=rwc", dir.path().display());
            let opens = (0..6).map(|_| {
                let cfg =
                    DatabaseConfig { url: deskmail_config::Secret::new(url.clone()), max_connections: 2 };
                tokio::spawn(async move { Store::open(&cfg).await.map(|_| ()) })
            });
            for open in futures::future::join_all(opens).await {
                open.expect("task").unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }
}
