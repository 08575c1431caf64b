//! `deskmailctl mailbox ...`: CRUD, provider presets, connection tests and test mail.

use clap::{Subcommand, ValueEnum};
use comfy_table::Cell;
use deskmail_proto::v1 as pb;

use crate::crud::{self, Ctx, DeleteArgs, ListArgs, Names, Page, Resource, resource_calls};
use crate::fail::{CallContext, Fail};
use crate::mailbox_fields::MailboxFields;
use crate::proto::{self, short_enum};

impl Resource for pb::Mailbox {
    const KIND: &'static str = "mailbox";
    const ITEMS: &'static str = "mailboxes";
    const HEADER: &'static [&'static str] = &["NAME", "ENABLED", "INBOUND", "OUTBOUND", "QUEUE", "ID"];

    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn row(&self, names: &Names) -> Vec<Cell> {
        let inbound = self.inbound.as_ref().map_or_else(
            || "-".to_owned(),
            |i| {
                let protocol = short_enum(i.protocol().as_str_name(), "Protocol");
                let security = short_enum(i.security().as_str_name(), "Security");
                format!("{protocol}/{security} {}@{}:{}", i.username, i.host, i.port)
            },
        );
        let outbound = self.outbound.as_ref().map_or_else(
            || "-".to_owned(),
            |o| {
                let security = short_enum(o.security().as_str_name(), "Security");
                let dry = if o.dry_run { " (dry run)" } else { "" };
                format!("smtp/{security} {}:{} from {}{dry}", o.host, o.port, o.from_address)
            },
        );
        let queue = self.inbound.as_ref().map_or_else(
            || "-".to_owned(),
            |i| match i.dispatch_mode() {
                pb::DispatchMode::ByRecipient => {
                    format!("by recipient, else {}", names.queue(&i.fallback_queue_id))
                }
                _ => names.queue(&i.queue_id),
            },
        );
        vec![
            Cell::new(&self.name),
            crud::yes_no_cell(self.enabled.unwrap_or(true)),
            Cell::new(inbound),
            Cell::new(outbound),
            Cell::new(queue),
            Cell::new(&self.id),
        ]
    }
    resource_calls!(
        mailboxes,
        list_mailboxes,
        mailboxes,
        get_mailbox,
        create_mailbox,
        CreateMailboxRequest,
        update_mailbox,
        UpdateMailboxRequest,
        mailbox,
        delete_mailbox
    );
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DirectionArg {
    Inbound,
    Outbound,
}

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// List the mailboxes.
    List(ListArgs),
    /// Show one mailbox (secrets never: has_password says whether one is stored).
    Get {
        /// Id or name.
        name: String,
    },
    /// Create a mailbox: an inbound part, an outbound part, or both.
    Create(Box<MailboxFields>),
    /// Change the fields whose flags are given (and only those: the update mask names them).
    Update {
        /// Id or name.
        #[arg(value_name = "NAME")]
        target: String,
        #[command(flatten)]
        fields: Box<MailboxFields>,
    },
    /// Delete a mailbox (refused while contracts, companies or the settings send through it,
    /// unless --force: then they fall back to the next box).
    Delete(DeleteArgs),
    /// The provider presets and what they fill in.
    Presets,
    /// Test the connection: log in and open the folder (inbound), EHLO/TLS/AUTH (outbound);
    /// nothing is downloaded or sent. Exit 1 when a part fails.
    Test {
        /// Id or name.
        name: String,
        /// Test one part only (default: every part the mailbox has).
        #[arg(long, value_enum)]
        direction: Option<DirectionArg>,
    },
    /// Send one test mail through the mailbox's outbound part. Exit 1 when it fails.
    SendTest {
        /// Id or name.
        name: String,
        /// Recipient.
        #[arg(long, value_name = "ADDR")]
        to: String,
        /// Subject (default "deskmail test message").
        #[arg(long, value_name = "TEXT")]
        subject: Option<String>,
        /// Body (default a short text naming the mailbox).
        #[arg(long, value_name = "TEXT")]
        body: Option<String>,
    },
}

impl MailboxCommand {
    /// Connection tests wait for remote servers (20 s per part on configd's side).
    pub fn is_slow(&self) -> bool {
        matches!(self, MailboxCommand::Test { .. } | MailboxCommand::SendTest { .. })
    }
}

pub async fn run(ctx: &Ctx, command: MailboxCommand) -> Result<u8, Fail> {
    match command {
        MailboxCommand::List(args) => crud::list::<pb::Mailbox>(ctx, &args).await,
        MailboxCommand::Get { name } => crud::get::<pb::Mailbox>(ctx, &name).await,
        MailboxCommand::Create(fields) => crud::create(ctx, fields.patch(&ctx.api).await?).await,
        MailboxCommand::Update { target, fields } => {
            crud::update(ctx, &target, fields.patch(&ctx.api).await?).await
        }
        MailboxCommand::Delete(args) => crud::delete::<pb::Mailbox>(ctx, &args).await,
        MailboxCommand::Presets => presets(ctx).await,
        MailboxCommand::Test { name, direction } => test(ctx, name, direction).await,
        MailboxCommand::SendTest { name, to, subject, body } => {
            let request = pb::SendTestEmailRequest {
                id: name.clone(),
                to,
                subject: subject.unwrap_or_default(),
                body: body.unwrap_or_default(),
            };
            send_test(ctx, request).await
        }
    }
}

async fn presets(ctx: &Ctx) -> Result<u8, Fail> {
    let presets = ctx
        .api
        .mailboxes()
        .list_presets(pb::ListPresetsRequest {})
        .await
        .what(|| "list presets".to_owned())?
        .into_inner()
        .presets;
    if ctx.out.json() {
        return ctx.out.print_json(&proto::list_json(&presets)?).map(|()| 0);
    }
    let mut table = ctx.out.table(&["PRESET", "NAME", "INBOUND", "OUTBOUND", "OAUTH2 TOKEN URL"]);
    for p in &presets {
        let part = |host: &str, port: u32, security: &str| {
            if host.is_empty() { "-".to_owned() } else { format!("{host}:{port} {security}") }
        };
        table.add_row(vec![
            short_enum(p.preset().as_str_name(), "Preset"),
            p.name.clone(),
            part(
                &p.inbound_host,
                p.inbound_port,
                &short_enum(p.inbound_security().as_str_name(), "Security"),
            ),
            part(
                &p.outbound_host,
                p.outbound_port,
                &short_enum(p.outbound_security().as_str_name(), "Security"),
            ),
            if p.oauth2_token_url.is_empty() { "-".to_owned() } else { p.oauth2_token_url.clone() },
        ]);
    }
    ctx.out.print_table(table).map(|()| 0)
}

async fn test(ctx: &Ctx, name: String, direction: Option<DirectionArg>) -> Result<u8, Fail> {
    let direction = match direction {
        None => pb::Direction::Unspecified,
        Some(DirectionArg::Inbound) => pb::Direction::Inbound,
        Some(DirectionArg::Outbound) => pb::Direction::Outbound,
    };
    let request = pb::TestConnectionRequest { id: name.clone(), mailbox: None, direction: direction as i32 };
    let reply = ctx
        .api
        .mailboxes()
        .test_connection(request)
        .await
        .what(|| format!("test mailbox {name:?}"))?
        .into_inner();
    if reply.results.is_empty() {
        let part = match direction {
            pb::Direction::Unspecified => "inbound or outbound".to_owned(),
            d => short_enum(d.as_str_name(), "Direction"),
        };
        return Err(Fail::Failed(format!("test mailbox {name:?}: it has no {part} part to test")));
    }
    let all_ok = reply.results.iter().all(|r| r.ok);
    if ctx.out.json() {
        ctx.out.print_json(&proto::to_json(&reply)?)?;
    } else {
        let mut table = ctx.out.table(&["DIRECTION", "RESULT", "REASON", "MESSAGES", "TIME", "MESSAGE"]);
        for r in &reply.results {
            let inbound = r.direction() == pb::Direction::Inbound;
            table.add_row(vec![
                Cell::new(short_enum(r.direction().as_str_name(), "Direction")),
                ctx.out.state_cell(if r.ok { "ok" } else { "failed" }),
                Cell::new(short_enum(r.reason().as_str_name(), "StatusReason")),
                Cell::new(if inbound && r.ok { r.message_count.to_string() } else { "-".to_owned() }),
                Cell::new(format!("{} ms", r.duration_ms)),
                Cell::new(if r.message.is_empty() { "-" } else { &r.message }),
            ]);
        }
        ctx.out.print_table(table)?;
    }
    Ok(if all_ok { 0 } else { crate::EXIT_FAILED })
}

async fn send_test(ctx: &Ctx, request: pb::SendTestEmailRequest) -> Result<u8, Fail> {
    let name = request.id.clone();
    let reply = ctx
        .api
        .mailboxes()
        .send_test_email(request)
        .await
        .what(|| format!("send a test mail through mailbox {name:?}"))?
        .into_inner();
    if ctx.out.json() {
        ctx.out.print_json(&proto::to_json(&reply)?)?;
    } else {
        let mut table = ctx.out.table(&[]);
        table.add_row(vec![Cell::new("result"), ctx.out.state_cell(if reply.ok { "ok" } else { "failed" })]);
        if !reply.ok {
            table
                .add_row(vec!["reason".to_owned(), short_enum(reply.reason().as_str_name(), "StatusReason")]);
        }
        table.add_row(vec!["message".to_owned(), reply.message.clone()]);
        if !reply.message_id.is_empty() {
            table.add_row(vec!["message_id".to_owned(), reply.message_id.clone()]);
        }
        ctx.out.print_table(table)?;
    }
    Ok(if reply.ok { 0 } else { crate::EXIT_FAILED })
}
