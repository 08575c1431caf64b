//! The config database: resources, encrypted secrets, mailbox status, fetch leases and the
//! config revision, on SQLite (the embedded default) or PostgreSQL, one migration set.

pub mod entity;
mod leases;
mod migration;
mod status;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use entity::{resource, secret};
pub use leases::LeaseGrant;
pub use status::StatusRecord;

use crate::secrets::Sealed;
use deskmail_config::DatabaseConfig;

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
    #[error("{kind} named {name:?} exists already")]
    Duplicate { kind: String, name: String },
    #[error("secrets: re-sealing with the new key failed: {0}")]
    Reseal(crate::secrets::SecretsError),
}

/// One write in a [`Store::apply`] batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a resource; `secrets` sets (`Some`) or removes (`None`) the named
    /// secret fields, others are left as they are.
    Put { row: resource::Model, secrets: Vec<(String, Option<Sealed>)> },
    /// Remove a resource with its secrets, status and lease.
    Delete { id: String },
}

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// SQLite only: one write transaction at a time in this process. SQLite has one writer;
    /// a deferred transaction that must upgrade to write while another commits gets
    /// `database is locked` at once (the busy timeout does not apply), so writers queue here.
    sqlite_writes: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

const REVISION_KEY: &str = "revision";

impl Store {
    /// Connects (creating a SQLite file's directory when needed) and migrates.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let url = config.url.expose();
        config.create_sqlite_dir().map_err(|(path, source)| StoreError::Directory { path, source })?;
        let mut options = ConnectOptions::new(url.to_owned());
        options.max_connections(config.max_connections).sqlx_logging(false);
        let db = Database::connect(options).await?;
        if config.is_sqlite() {
            // WAL lets readers (snapshots) run beside a writer; the busy timeout makes a
            // second writer wait instead of failing.
            db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;").await?;
        }
        migration::Migrator::up(&db, None).await?;
        let sqlite_writes = config.is_sqlite().then(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self { db, sqlite_writes })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Held for the length of a write (see `sqlite_writes`); `None` on PostgreSQL.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite_writes {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    /// The config revision: bumped by every change to resources or secrets.
    pub async fn revision(&self) -> Result<u64, StoreError> {
        let row = entity::meta::Entity::find_by_id(REVISION_KEY.to_owned()).one(&self.db).await?;
        Ok(row.map(|r| u64::try_from(r.value).unwrap_or(0)).unwrap_or(0))
    }

    /// Applies the writes in one transaction and bumps the revision; returns the new one.
    pub async fn apply(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let tx = self.db.begin().await?;
        for op in ops {
            match op {
                Op::Put { row, secrets } => put(&tx, row, secrets).await?,
                Op::Delete { id } => delete(&tx, &id).await?,
            }
        }
        let revision = bump_revision(&tx).await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// Every resource of one kind, in order.
    pub async fn all(&self, kind: &str) -> Result<Vec<resource::Model>, StoreError> {
        use resource::Column as C;
        Ok(resource::Entity::find()
            .filter(C::Kind.eq(kind))
            .order_by_asc(C::SortKey)
            .order_by_asc(C::Id)
            .all(&self.db)
            .await?)
    }

    /// A resource of `kind` by id or by name.
    pub async fn find(&self, kind: &str, id_or_name: &str) -> Result<Option<resource::Model>, StoreError> {
        use resource::Column as C;
        Ok(resource::Entity::find()
            .filter(C::Kind.eq(kind))
            .filter(C::Id.eq(id_or_name).or(C::Name.eq(id_or_name)))
            .order_by_asc(C::Id)
            .one(&self.db)
            .await?)
    }

    /// Key rotation: re-seals with `secrets`' current key every stored secret that opens only
    /// with its previous key, in one transaction (the revision is bumped when any changed).
    /// Returns (re-sealed, unreadable with either key).
    pub async fn reseal_secrets(
        &self,
        secrets: &crate::secrets::SecretBox,
    ) -> Result<(usize, usize), StoreError> {
        use crate::secrets::OpenedWith;
        let _turn = self.write_turn().await;
        let tx = self.db.begin().await?;
        let (mut resealed, mut unreadable) = (0, 0);
        for row in secret::Entity::find().all(&tx).await? {
            let sealed = Sealed { nonce: row.nonce.clone(), ciphertext: row.ciphertext.clone() };
            match secrets.open_with(&row.owner_id, &row.field, &sealed) {
                Ok((_, OpenedWith::Current)) => {}
                Ok((value, OpenedWith::Previous)) => {
                    let fresh =
                        secrets.seal(&row.owner_id, &row.field, &value).map_err(StoreError::Reseal)?;
                    let mut active: secret::ActiveModel = row.into();
                    active.nonce = Set(fresh.nonce);
                    active.ciphertext = Set(fresh.ciphertext);
                    active.update(&tx).await?;
                    resealed += 1;
                }
                Err(_) => unreadable += 1,
            }
        }
        if resealed > 0 {
            bump_revision(&tx).await?;
        }
        tx.commit().await?;
        Ok((resealed, unreadable))
    }

    /// The sealed secrets of one owner.
    pub async fn secrets_of(&self, owner: &str) -> Result<Vec<secret::Model>, StoreError> {
        Ok(secret::Entity::find().filter(secret::Column::OwnerId.eq(owner)).all(&self.db).await?)
    }

    /// The revision, every resource and every sealed secret, read in one transaction so
    /// that the revision names exactly the data read with it (a snapshot built from a later
    /// write must not carry an earlier revision).
    pub async fn consistent_read(
        &self,
    ) -> Result<(u64, Vec<resource::Model>, Vec<secret::Model>), StoreError> {
        use sea_orm::{AccessMode, IsolationLevel};
        let (isolation, access) = match self.db.get_database_backend() {
            // SQLite transactions are serializable already and refuse both clauses.
            sea_orm::DbBackend::Sqlite => (None, None),
            _ => (Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)),
        };
        let tx = self.db.begin_with_config(isolation, access).await?;
        let revision = entity::meta::Entity::find_by_id(REVISION_KEY.to_owned())
            .one(&tx)
            .await?
            .map(|r| u64::try_from(r.value).unwrap_or(0))
            .unwrap_or(0);
        let rows = resource::Entity::find()
            .order_by_asc(resource::Column::SortKey)
            .order_by_asc(resource::Column::Id)
            .all(&tx)
            .await?;
        let secrets = secret::Entity::find().all(&tx).await?;
        tx.commit().await?;
        Ok((revision, rows, secrets))
    }
}

async fn put(
    tx: &DatabaseTransaction,
    row: resource::Model,
    secrets: Vec<(String, Option<Sealed>)>,
) -> Result<(), StoreError> {
    use resource::Column as C;
    let (kind, name, id) = (row.kind.clone(), row.name.clone(), row.id.clone());
    let clash = resource::Entity::find()
        .filter(C::Kind.eq(&kind))
        .filter(C::Name.eq(&name))
        .filter(C::Id.ne(&id))
        .count(tx)
        .await?;
    if clash > 0 {
        return Err(StoreError::Duplicate { kind, name });
    }
    let active = resource::ActiveModel {
        id: Set(row.id),
        kind: Set(row.kind),
        name: Set(row.name),
        sort_key: Set(row.sort_key),
        data: Set(row.data),
        created_at: Set(row.created_at),
        updated_at: Set(row.updated_at),
    };
    resource::Entity::insert(active)
        .on_conflict(
            OnConflict::column(C::Id).update_columns([C::Name, C::SortKey, C::Data, C::UpdatedAt]).to_owned(),
        )
        .exec(tx)
        .await
        .map_err(|e| duplicate_or(e, &kind, &name))?;
    for (field, sealed) in secrets {
        secret::Entity::delete_many()
            .filter(secret::Column::OwnerId.eq(&id))
            .filter(secret::Column::Field.eq(&field))
            .exec(tx)
            .await?;
        if let Some(sealed) = sealed {
            secret::Entity::insert(secret::ActiveModel {
                owner_id: Set(id.clone()),
                field: Set(field),
                nonce: Set(sealed.nonce),
                ciphertext: Set(sealed.ciphertext),
            })
            .exec(tx)
            .await?;
        }
    }
    Ok(())
}

/// A unique-index violation on (kind, name) from a concurrent writer.
fn duplicate_or(e: DbErr, kind: &str, name: &str) -> StoreError {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("unique") || text.contains("duplicate") {
        StoreError::Duplicate { kind: kind.to_owned(), name: name.to_owned() }
    } else {
        StoreError::Db(e)
    }
}

async fn delete(tx: &DatabaseTransaction, id: &str) -> Result<(), StoreError> {
    resource::Entity::delete_by_id(id.to_owned()).exec(tx).await?;
    secret::Entity::delete_many().filter(secret::Column::OwnerId.eq(id)).exec(tx).await?;
    entity::status::Entity::delete_many().filter(entity::status::Column::MailboxId.eq(id)).exec(tx).await?;
    entity::lease::Entity::delete_by_id(id.to_owned()).exec(tx).await?;
    Ok(())
}

async fn bump_revision(tx: &DatabaseTransaction) -> Result<u64, StoreError> {
    use entity::meta;
    meta::Entity::insert(meta::ActiveModel { key: Set(REVISION_KEY.to_owned()), value: Set(1) })
        .on_conflict(
            OnConflict::column(meta::Column::Key)
                .value(meta::Column::Value, Expr::col((meta::Entity, meta::Column::Value)).add(1))
                .to_owned(),
        )
        .exec(tx)
        .await?;
    let row = meta::Entity::find_by_id(REVISION_KEY.to_owned()).one(tx).await?;
    Ok(row.map(|r| u64::try_from(r.value).unwrap_or(0)).unwrap_or(0))
}
