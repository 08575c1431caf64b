//! `deskmailctl settings get|update`: the system-wide settings.

use clap::{Args, Subcommand, ValueEnum};
use deskmail_proto::v1 as pb;

use crate::crud::{self, Ctx};
use crate::fail::{CallContext, Fail};
use crate::patch::{JsonArg, Patch, boolish};

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the settings.
    Get,
    /// Change the settings whose flags are given (and only those).
    Update(SettingsFields),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NumberFormat {
    /// YYYYMMDD + system id + a counter.
    Date,
    /// A plain counter.
    AutoIncrement,
}

#[derive(Debug, Args)]
pub struct SettingsFields {
    /// The ticket hook in subjects (`Ticket#` gives `[Ticket#2025010110001]`).
    #[arg(long, value_name = "TEXT")]
    ticket_hook: Option<String>,
    /// How ticket numbers are made.
    #[arg(long, value_enum)]
    number_format: Option<NumberFormat>,
    /// The 2-digit system id in date-based numbers (0-99).
    #[arg(long, value_name = "N")]
    system_id: Option<u32>,
    /// The system default outbound mailbox (name or id; '' for none).
    #[arg(long, value_name = "MAILBOX")]
    default_outbound_mailbox: Option<String>,
    /// Auto-replies one sender may get per day.
    #[arg(long, value_name = "N")]
    auto_reply_limit: Option<u32>,
    /// Open no tickets for senders whose domain no company claims.
    #[arg(long, value_name = "BOOL", value_parser = boolish())]
    ignore_unknown_senders: Option<bool>,
    #[command(flatten)]
    json: JsonArg,
}

pub async fn run(ctx: &Ctx, command: SettingsCommand) -> Result<u8, Fail> {
    match command {
        SettingsCommand::Get => {
            let settings = ctx
                .api
                .settings()
                .get_settings(pb::GetSettingsRequest {})
                .await
                .what(|| "get settings".to_owned())?
                .into_inner();
            crud::show(ctx, &settings).await
        }
        SettingsCommand::Update(f) => {
            let mut p = Patch::<pb::Settings>::new(&f.json)?;
            p.set("ticket_hook", f.ticket_hook, |s, v| s.ticket_hook = v);
            let format = f.number_format.map(|n| match n {
                NumberFormat::Date => pb::NumberFormat::Date,
                NumberFormat::AutoIncrement => pb::NumberFormat::AutoIncrement,
            });
            p.set("number_format", format, |s, v| s.number_format = v as i32);
            p.set("system_id", f.system_id, |s, v| s.system_id = v);
            if let Some(m) = f.default_outbound_mailbox {
                let id = crud::resolve::<pb::Mailbox>(&ctx.api, "--default-outbound-mailbox", &m).await?;
                p.set("default_outbound_mailbox_id", Some(id), |s, v| s.default_outbound_mailbox_id = v);
            }
            p.set("auto_reply_limit_per_day", f.auto_reply_limit, |s, v| s.auto_reply_limit_per_day = v);
            p.set("ignore_unknown_senders", f.ignore_unknown_senders, |s, v| s.ignore_unknown_senders = v);
            p.require_changes()?;
            let request = pb::UpdateSettingsRequest {
                settings: Some(p.message),
                update_mask: Some(prost_types::FieldMask { paths: p.paths }),
            };
            let settings = ctx
                .api
                .settings()
                .update_settings(request)
                .await
                .what(|| "update settings".to_owned())?
                .into_inner();
            crud::show(ctx, &settings).await
        }
    }
}
