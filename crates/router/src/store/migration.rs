//! The tickets database's schema. One migration set for SQLite and PostgreSQL.
//!
//! Ids of tickets, articles, attachments and outbox rows are UUIDv7 strings made by the
//! router, so a whole batch is written with multi-row inserts and no `RETURNING` round trip.
//! Times are microseconds since the Unix epoch.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, blob, blob_null, boolean, integer, string, string_null, text, text_null,
};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(BlobStorage), Box::new(ContentKey), Box::new(TextCompression)]
    }
}

#[derive(DeriveMigrationName)]
struct Initial;

#[derive(DeriveIden)]
enum Tickets {
    Table,
    Id,
    Number,
    QueueId,
    State,
    Priority,
    Title,
    CustomerAddress,
    CustomerName,
    CompanyId,
    MailboxId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Articles {
    Table,
    Id,
    TicketId,
    Direction,
    SourceId,
    MessageId,
    InReplyTo,
    References,
    FromAddress,
    FromName,
    ToAddresses,
    CcAddresses,
    Subject,
    BodyText,
    BodyHtml,
    Raw,
    ParseError,
    IsAutoResponse,
    IsBounce,
    BounceInfo,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Attachments {
    Table,
    Id,
    ArticleId,
    Position,
    Filename,
    ContentType,
    Size,
    ContentId,
    Inline,
    Kind,
    Sha256,
    Content,
}

#[derive(DeriveIden)]
enum ProcessedSources {
    Table,
    SourceId,
    MailboxId,
    Outcome,
    ArticleId,
    Note,
    Raw,
    ProcessedAt,
    ContentKey,
}

#[derive(DeriveIden)]
enum AutoReplyLog {
    Table,
    Address,
    Day,
    Count,
}

#[derive(DeriveIden)]
enum Counters {
    Table,
    Name,
    Value,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    SourceId,
    Target,
    RoutingKey,
    MessageId,
    Payload,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    /// In a transaction on SQLite too (its DDL is transactional): a crash or a concurrent
    /// migrator never leaves half a schema.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tickets::Table)
                .col(string(Tickets::Id).primary_key())
                .col(string(Tickets::Number))
                .col(string_null(Tickets::QueueId))
                .col(string(Tickets::State))
                .col(integer(Tickets::Priority))
                .col(text(Tickets::Title))
                .col(string(Tickets::CustomerAddress))
                .col(text(Tickets::CustomerName))
                .col(string_null(Tickets::CompanyId))
                .col(string_null(Tickets::MailboxId))
                .col(big_integer(Tickets::CreatedAt))
                .col(big_integer(Tickets::UpdatedAt))
                .to_owned(),
        )
        .await?;
        // The safety net under the counter: two routers can never store the same number.
        m.create_index(
            Index::create()
                .name("tickets_number")
                .table(Tickets::Table)
                .col(Tickets::Number)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Articles::Table)
                .col(string(Articles::Id).primary_key())
                .col(string(Articles::TicketId))
                .col(string(Articles::Direction))
                .col(string_null(Articles::SourceId))
                .col(text_null(Articles::MessageId))
                .col(text(Articles::InReplyTo))
                .col(text(Articles::References))
                .col(text(Articles::FromAddress))
                .col(text(Articles::FromName))
                .col(text(Articles::ToAddresses))
                .col(text(Articles::CcAddresses))
                .col(text(Articles::Subject))
                .col(text(Articles::BodyText))
                .col(text_null(Articles::BodyHtml))
                .col(blob(Articles::Raw))
                .col(text_null(Articles::ParseError))
                .col(boolean(Articles::IsAutoResponse))
                .col(boolean(Articles::IsBounce))
                .col(text_null(Articles::BounceInfo))
                .col(big_integer(Articles::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("articles_ticket").table(Articles::Table).col(Articles::TicketId).to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("articles_message_id")
                .table(Articles::Table)
                .col(Articles::MessageId)
                .to_owned(),
        )
        .await?;
        // Exactly one article per source id, whatever happens above.
        m.create_index(
            Index::create()
                .name("articles_source_id")
                .table(Articles::Table)
                .col(Articles::SourceId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Attachments::Table)
                .col(string(Attachments::Id).primary_key())
                .col(string(Attachments::ArticleId))
                .col(integer(Attachments::Position))
                .col(text(Attachments::Filename))
                .col(string(Attachments::ContentType))
                .col(big_integer(Attachments::Size))
                .col(text_null(Attachments::ContentId))
                .col(boolean(Attachments::Inline))
                .col(string(Attachments::Kind))
                .col(string(Attachments::Sha256))
                .col(blob(Attachments::Content))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("attachments_article")
                .table(Attachments::Table)
                .col(Attachments::ArticleId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ProcessedSources::Table)
                .col(string(ProcessedSources::SourceId).primary_key())
                .col(string_null(ProcessedSources::MailboxId))
                .col(string(ProcessedSources::Outcome))
                .col(string_null(ProcessedSources::ArticleId))
                .col(text_null(ProcessedSources::Note))
                .col(blob_null(ProcessedSources::Raw))
                .col(big_integer(ProcessedSources::ProcessedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AutoReplyLog::Table)
                .col(string(AutoReplyLog::Address))
                .col(integer(AutoReplyLog::Day))
                .col(integer(AutoReplyLog::Count))
                .primary_key(Index::create().col(AutoReplyLog::Address).col(AutoReplyLog::Day))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Counters::Table)
                .col(string(Counters::Name).primary_key())
                .col(big_integer(Counters::Value))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .col(string(Outbox::Id).primary_key())
                .col(string(Outbox::SourceId))
                .col(string(Outbox::Target))
                .col(string(Outbox::RoutingKey))
                .col(string(Outbox::MessageId))
                .col(blob(Outbox::Payload))
                .col(big_integer(Outbox::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("outbox_source").table(Outbox::Table).col(Outbox::SourceId).to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "outbox",
            "counters",
            "auto_reply_log",
            "processed_sources",
            "attachments",
            "articles",
            "tickets",
        ] {
            m.drop_table(Table::drop().table(Alias::new(table)).to_owned()).await?;
        }
        Ok(())
    }
}

/// PostgreSQL: the mail bytes (raw mail, attachment content, raw ignored mail) are stored
/// out of line without compression (`STORAGE EXTERNAL`). They are base64, images, PDFs and
/// archives: pglz spends CPU on every row and rarely wins the 25 % it needs to keep the
/// result. Nothing to do on SQLite.
struct BlobStorage;

impl MigrationName for BlobStorage {
    fn name(&self) -> &str {
        "m2_blob_storage"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for BlobStorage {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        for (table, column) in [("articles", "raw"), ("attachments", "content"), ("processed_sources", "raw")]
        {
            db.execute_unprepared(&format!("ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let db = m.get_connection();
        for (table, column) in [("articles", "raw"), ("attachments", "content"), ("processed_sources", "raw")]
        {
            db.execute_unprepared(&format!("ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED"))
                .await?;
        }
        Ok(())
    }
}

/// The content key of the processed-source log (see `entity::processed`): a nullable column
/// (rows written before it have none, and NULLs never collide) with a unique index.
struct ContentKey;

impl MigrationName for ContentKey {
    fn name(&self) -> &str {
        "m3_processed_content_key"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ContentKey {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ProcessedSources::Table)
                .add_column(string_null(ProcessedSources::ContentKey))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("processed_sources_content_key")
                .table(ProcessedSources::Table)
                .col(ProcessedSources::ContentKey)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop().name("processed_sources_content_key").table(ProcessedSources::Table).to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ProcessedSources::Table)
                .drop_column(ProcessedSources::ContentKey)
                .to_owned(),
        )
        .await
    }
}

/// PostgreSQL 14 or later built with lz4: the mail's text (raw mail, plain and HTML body, raw
/// ignored mail) is compressed with lz4 instead of stored as is (raw mail) or with pglz
/// (bodies). Text mail shrinks to about half, so fewer TOAST chunks and half the WAL per
/// article, for a few microseconds of CPU per mail; lz4 gives up quickly on what does not
/// compress. Attachment content (images, PDFs, archives) stays uncompressed. A server without
/// lz4 keeps the earlier storage; nothing to do on SQLite.
struct TextCompression;

impl MigrationName for TextCompression {
    fn name(&self) -> &str {
        "m4_text_lz4"
    }
}

const TEXT_COLUMNS: [(&str, &str); 4] =
    [("articles", "raw"), ("articles", "body_text"), ("articles", "body_html"), ("processed_sources", "raw")];

async fn has_lz4(m: &SchemaManager<'_>) -> Result<bool, DbErr> {
    if m.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(false);
    }
    let row = m
        .get_connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)",
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0) > 0)
}

#[async_trait::async_trait]
impl MigrationTrait for TextCompression {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if !has_lz4(m).await? {
            return Ok(());
        }
        let db = m.get_connection();
        for (table, column) in TEXT_COLUMNS {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED, ALTER COLUMN {column} SET COMPRESSION lz4"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if !has_lz4(m).await? {
            return Ok(());
        }
        let db = m.get_connection();
        for (table, column) in TEXT_COLUMNS {
            let storage = if column == "raw" { "EXTERNAL" } else { "EXTENDED" };
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {storage}, ALTER COLUMN {column} SET COMPRESSION pglz"
            ))
            .await?;
        }
        Ok(())
    }
}
