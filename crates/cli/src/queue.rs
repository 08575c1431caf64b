//! `deskmailctl queue ...` and `deskmailctl address ...` (system addresses route to queues).

use clap::{Args, Subcommand};
use comfy_table::Cell;
use deskmail_proto::v1 as pb;

use crate::client::Api;
use crate::crud::{self, Ctx, DeleteArgs, ListArgs, Names, Page, Resource, resource_calls};
use crate::fail::Fail;
use crate::patch::{JsonArg, Patch, boolish};

impl Resource for pb::Queue {
    const KIND: &'static str = "queue";
    const ITEMS: &'static str = "queues";
    const HEADER: &'static [&'static str] = &["NAME", "AUTO-REPLY", "AUTO-REPLY SUBJECT", "ID"];

    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn row(&self, _names: &Names) -> Vec<Cell> {
        vec![
            Cell::new(&self.name),
            crud::yes_no_cell(self.auto_reply),
            Cell::new(if self.auto_reply_subject.is_empty() { "-" } else { &self.auto_reply_subject }),
            Cell::new(&self.id),
        ]
    }
    resource_calls!(
        queues,
        list_queues,
        queues,
        get_queue,
        create_queue,
        CreateQueueRequest,
        update_queue,
        UpdateQueueRequest,
        queue,
        delete_queue
    );
}

impl Resource for pb::SystemAddress {
    const KIND: &'static str = "system address";
    const ITEMS: &'static str = "system_addresses";
    const HEADER: &'static [&'static str] = &["ADDRESS", "DISPLAY NAME", "QUEUE", "ID"];

    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn row(&self, names: &Names) -> Vec<Cell> {
        vec![
            Cell::new(&self.address),
            Cell::new(if self.display_name.is_empty() { "-" } else { &self.display_name }),
            Cell::new(names.queue(&self.queue_id)),
            Cell::new(&self.id),
        ]
    }
    resource_calls!(
        addresses,
        list_system_addresses,
        system_addresses,
        get_system_address,
        create_system_address,
        CreateSystemAddressRequest,
        update_system_address,
        UpdateSystemAddressRequest,
        system_address,
        delete_system_address
    );
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List the queues.
    List(ListArgs),
    /// Show one queue.
    Get {
        /// Id or name.
        name: String,
    },
    /// Create a queue.
    Create(QueueFields),
    /// Change the fields whose flags are given (and only those).
    Update {
        /// Id or name.
        #[arg(value_name = "NAME")]
        target: String,
        #[command(flatten)]
        fields: QueueFields,
    },
    /// Delete a queue (refused while mailboxes, addresses or filters use it, even with --force).
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct QueueFields {
    /// The queue's unique name.
    #[arg(long)]
    name: Option<String>,
    /// Answer new tickets with an auto-reply.
    #[arg(long, value_name = "BOOL", value_parser = boolish())]
    auto_reply: Option<bool>,
    /// Auto-reply subject template ({{ticket_number}}, {{subject}}, {{customer_name}}).
    #[arg(long, value_name = "TEXT")]
    auto_reply_subject: Option<String>,
    /// Auto-reply body template (same placeholders).
    #[arg(long, value_name = "TEXT")]
    auto_reply_body: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

impl QueueFields {
    fn patch(self) -> Result<Patch<pb::Queue>, Fail> {
        let mut p = Patch::<pb::Queue>::new(&self.json)?;
        p.set("name", self.name, |q, v| q.name = v);
        p.set("auto_reply", self.auto_reply, |q, v| q.auto_reply = v);
        p.set("auto_reply_subject", self.auto_reply_subject, |q, v| q.auto_reply_subject = v);
        p.set("auto_reply_body", self.auto_reply_body, |q, v| q.auto_reply_body = v);
        Ok(p)
    }
}

pub async fn run_queue(ctx: &Ctx, command: QueueCommand) -> Result<u8, Fail> {
    match command {
        QueueCommand::List(args) => crud::list::<pb::Queue>(ctx, &args).await,
        QueueCommand::Get { name } => crud::get::<pb::Queue>(ctx, &name).await,
        QueueCommand::Create(fields) => crud::create(ctx, fields.patch()?).await,
        QueueCommand::Update { target, fields } => crud::update(ctx, &target, fields.patch()?).await,
        QueueCommand::Delete(args) => crud::delete::<pb::Queue>(ctx, &args).await,
    }
}

#[derive(Debug, Subcommand)]
pub enum AddressCommand {
    /// List the system addresses.
    List(ListArgs),
    /// Show one system address.
    Get {
        /// Id or the address.
        name: String,
    },
    /// Create a system address.
    Create(AddressFields),
    /// Change the fields whose flags are given (and only those).
    Update {
        /// Id or the address.
        #[arg(value_name = "NAME")]
        target: String,
        #[command(flatten)]
        fields: AddressFields,
    },
    /// Delete a system address.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct AddressFields {
    /// The address (support@desk.example); compared case-insensitively.
    #[arg(long)]
    address: Option<String>,
    /// The queue mail to it goes to (name or id).
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// The display name used when replying from it.
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

impl AddressFields {
    async fn patch(self, api: &Api) -> Result<Patch<pb::SystemAddress>, Fail> {
        let mut p = Patch::<pb::SystemAddress>::new(&self.json)?;
        p.set("address", self.address, |a, v| a.address = v);
        p.set("display_name", self.display_name, |a, v| a.display_name = v);
        if let Some(q) = self.queue {
            let id = crud::resolve::<pb::Queue>(api, "--queue", &q).await?;
            p.set("queue_id", Some(id), |a, v| a.queue_id = v);
        }
        Ok(p)
    }
}

pub async fn run_address(ctx: &Ctx, command: AddressCommand) -> Result<u8, Fail> {
    match command {
        AddressCommand::List(args) => crud::list::<pb::SystemAddress>(ctx, &args).await,
        AddressCommand::Get { name } => crud::get::<pb::SystemAddress>(ctx, &name).await,
        AddressCommand::Create(fields) => crud::create(ctx, fields.patch(&ctx.api).await?).await,
        AddressCommand::Update { target, fields } => {
            crud::update(ctx, &target, fields.patch(&ctx.api).await?).await
        }
        AddressCommand::Delete(args) => crud::delete::<pb::SystemAddress>(ctx, &args).await,
    }
}
