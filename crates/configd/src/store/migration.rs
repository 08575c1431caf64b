//! The config database's schema. One migration set for SQLite and PostgreSQL.
//!
//! Resources (mailboxes, queues, addresses, companies, contracts, filters, settings) are
//! stored as their protobuf encoding in one table, with the columns that are looked up or
//! ordered by (kind, name, sort key) beside it: configd's data is small, admin-written, and
//! read whole into snapshots, and one generic table keeps every resource on one tested path.
//! Secrets never enter that encoding; they live encrypted in `secrets`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, blob, integer, string, text};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial)]
    }
}

#[derive(DeriveMigrationName)]
struct Initial;

#[derive(DeriveIden)]
enum Resources {
    Table,
    Id,
    Kind,
    Name,
    SortKey,
    Data,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Secrets {
    Table,
    OwnerId,
    Field,
    Nonce,
    Ciphertext,
}

#[derive(DeriveIden)]
enum MailboxStatus {
    Table,
    MailboxId,
    Direction,
    State,
    Reason,
    Message,
    LastSuccess,
    LastError,
    MessagesTotal,
    ConsecutiveErrors,
    Reporter,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    MailboxId,
    Holder,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum LeaseHolders {
    Table,
    Holder,
    SeenAt,
}

#[derive(DeriveIden)]
enum Meta {
    Table,
    Key,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Resources::Table)
                .col(string(Resources::Id).primary_key())
                .col(string(Resources::Kind))
                .col(string(Resources::Name))
                .col(string(Resources::SortKey))
                .col(blob(Resources::Data))
                .col(big_integer(Resources::CreatedAt))
                .col(big_integer(Resources::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("resources_kind_name")
                .table(Resources::Table)
                .col(Resources::Kind)
                .col(Resources::Name)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("resources_kind_order")
                .table(Resources::Table)
                .col(Resources::Kind)
                .col(Resources::SortKey)
                .col(Resources::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Secrets::Table)
                .col(string(Secrets::OwnerId))
                .col(string(Secrets::Field))
                .col(blob(Secrets::Nonce))
                .col(blob(Secrets::Ciphertext))
                .primary_key(Index::create().col(Secrets::OwnerId).col(Secrets::Field))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(MailboxStatus::Table)
                .col(string(MailboxStatus::MailboxId))
                .col(integer(MailboxStatus::Direction))
                .col(integer(MailboxStatus::State))
                .col(integer(MailboxStatus::Reason))
                .col(text(MailboxStatus::Message))
                .col(big_integer(MailboxStatus::LastSuccess))
                .col(big_integer(MailboxStatus::LastError))
                .col(big_integer(MailboxStatus::MessagesTotal))
                .col(integer(MailboxStatus::ConsecutiveErrors))
                .col(string(MailboxStatus::Reporter))
                .col(big_integer(MailboxStatus::UpdatedAt))
                .primary_key(Index::create().col(MailboxStatus::MailboxId).col(MailboxStatus::Direction))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Leases::Table)
                .col(string(Leases::MailboxId).primary_key())
                .col(string(Leases::Holder))
                .col(big_integer(Leases::ExpiresAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(LeaseHolders::Table)
                .col(string(LeaseHolders::Holder).primary_key())
                .col(big_integer(LeaseHolders::SeenAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Meta::Table)
                .col(string(Meta::Key).primary_key())
                .col(big_integer(Meta::Value))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["meta", "lease_holders", "leases", "mailbox_status", "secrets", "resources"] {
            m.drop_table(Table::drop().table(Alias::new(table)).to_owned()).await?;
        }
        Ok(())
    }
}
