//! sea-orm entities of the tickets database (see `migration.rs`).

pub mod ticket {
    use sea_orm::entity::prelude::*;

    /// The state of a ticket the router opens.
    pub const STATE_NEW: &str = "new";
    /// The state a follow-up gives a closed ticket (any state starting with `closed`).
    pub const STATE_OPEN: &str = "open";

    /// A ticket: one customer request, with its number.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tickets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub number: String,
        pub queue_id: Option<String>,
        pub state: String,
        pub priority: i32,
        pub title: String,
        pub customer_address: String,
        pub customer_name: String,
        pub company_id: Option<String>,
        pub mailbox_id: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod article {
    use sea_orm::entity::prelude::*;

    /// One mail of a ticket (`direction` `in`), with its raw bytes. Address lists are newline-separated.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "articles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub ticket_id: String,
        pub direction: String,
        pub source_id: Option<String>,
        pub message_id: Option<String>,
        pub in_reply_to: String,
        pub references: String,
        pub from_address: String,
        pub from_name: String,
        pub to_addresses: String,
        pub cc_addresses: String,
        pub subject: String,
        pub body_text: String,
        pub body_html: Option<String>,
        pub raw: Vec<u8>,
        pub parse_error: Option<String>,
        pub is_auto_response: bool,
        pub is_bounce: bool,
        pub bounce_info: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attachment {
    use sea_orm::entity::prelude::*;

    /// A part of an article's mail that is not its body.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attachments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub article_id: String,
        pub position: i32,
        pub filename: String,
        pub content_type: String,
        pub size: i64,
        pub content_id: Option<String>,
        pub inline: bool,
        pub kind: String,
        pub sha256: String,
        pub content: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod processed {
    use sea_orm::entity::prelude::*;

    /// The processed-source log: one row per source id ever handled, written in the same
    /// transaction as its article (`outcome` `article`) or instead of one (`ignored`, with the raw mail).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "processed_sources")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub source_id: String,
        pub mailbox_id: Option<String>,
        pub outcome: String,
        pub article_id: Option<String>,
        pub note: Option<String>,
        pub raw: Option<Vec<u8>>,
        pub processed_at: i64,
        /// SHA-256 (hex) of the mailbox id and the raw mail: unique, so the same bytes
        /// fetched again under a new source id (a server that lost its UIDs) are a duplicate.
        pub content_key: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod auto_reply_log {
    use sea_orm::entity::prelude::*;

    /// Auto-replies counted per sender address (lowercased) and UTC day (`YYYYMMDD`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auto_reply_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub address: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: i32,
        pub count: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod counter {
    use sea_orm::entity::prelude::*;

    /// Ticket-number counters: `auto` and `date:YYYYMMDD`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// Messages (events, auto-reply jobs) committed with an article and not yet confirmed by
    /// the broker. `target` is `events` or `outbound`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub source_id: String,
        pub target: String,
        pub routing_key: String,
        pub message_id: String,
        pub payload: Vec<u8>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
