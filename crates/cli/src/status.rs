//! `deskmailctl status`, `snapshot` and `health`.

use clap::Args;
use comfy_table::Cell;
use deskmail_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::config::CliConfig;
use crate::crud::{Ctx, Resource};
use crate::fail::{CallContext, Fail};
use crate::output::Out;
use crate::proto::{self, short_enum};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One mailbox (id or name); default every mailbox.
    name: Option<String>,
    /// Exit 1 when any mailbox is in error (for monitoring scripts); without it the exit
    /// code only says whether the status could be read.
    #[arg(long)]
    fail_on_error: bool,
}

const HEADER: [&str; 8] =
    ["NAME", "DIRECTION", "STATE", "REASON", "MESSAGE", "LAST SUCCESS", "LAST ERROR", "MESSAGES"];

pub async fn status(ctx: &Ctx, args: StatusArgs) -> Result<u8, Fail> {
    let mut statuses = ctx
        .api
        .status()
        .list_status(pb::ListRequest::default())
        .await
        .what(|| "list mailbox status".to_owned())?
        .into_inner()
        .statuses;
    if let Some(name) = &args.name {
        let mailbox =
            pb::Mailbox::get(&ctx.api, name.clone()).await.what(|| format!("get mailbox {name:?}"))?;
        statuses.retain(|s| s.mailbox_id == mailbox.id());
    }
    let in_error =
        statuses.iter().any(|s| s.status.as_ref().is_some_and(|m| m.state == pb::MailboxState::Error as i32));
    if ctx.out.json() {
        ctx.out.print_json(&proto::list_json(&statuses)?)?;
    } else {
        let mut table = ctx.out.table(&HEADER);
        for view in &statuses {
            let s = view.status.clone().unwrap_or_default();
            let state = short_enum(s.state().as_str_name(), "MailboxState");
            table.add_row(vec![
                Cell::new(&view.mailbox_name),
                Cell::new(short_enum(view.direction().as_str_name(), "Direction")),
                ctx.out.state_cell(&state),
                Cell::new(short_enum(s.reason().as_str_name(), "StatusReason")),
                Cell::new(if s.message.is_empty() { "-" } else { &s.message }),
                Cell::new(proto::timestamp(s.last_success.as_ref())),
                Cell::new(proto::timestamp(s.last_error.as_ref())),
                Cell::new(s.messages_total),
            ]);
        }
        ctx.out.print_table(table)?;
    }
    Ok(if args.fail_on_error && in_error { crate::EXIT_FAILED } else { 0 })
}

pub async fn snapshot(ctx: &Ctx) -> Result<u8, Fail> {
    let snap = ctx
        .api
        .watch()
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .what(|| "get the config snapshot".to_owned())?
        .into_inner();
    if ctx.out.json() {
        return ctx.out.print_json(&proto::to_json(&snap)?).map(|()| 0);
    }
    fn names(items: impl Iterator<Item = String>) -> String {
        let all: Vec<String> = items.collect();
        if all.is_empty() { "0".to_owned() } else { format!("{}: {}", all.len(), all.join(", ")) }
    }
    let mut table = ctx.out.table(&[]);
    table.add_row(vec!["revision".to_owned(), snap.revision.to_string()]);
    table.add_row(vec!["time".to_owned(), proto::timestamp(snap.time.as_ref())]);
    table.add_row(vec!["mailboxes".to_owned(), names(snap.mailboxes.iter().map(|m| m.name.clone()))]);
    table.add_row(vec!["queues".to_owned(), names(snap.queues.iter().map(|q| q.name.clone()))]);
    table.add_row(vec![
        "system_addresses".to_owned(),
        names(snap.system_addresses.iter().map(|a| a.address.clone())),
    ]);
    table.add_row(vec!["companies".to_owned(), names(snap.companies.iter().map(|c| c.name.clone()))]);
    table.add_row(vec!["contracts".to_owned(), names(snap.contracts.iter().map(|c| c.name.clone()))]);
    table.add_row(vec!["filters".to_owned(), names(snap.filters.iter().map(|f| f.name.clone()))]);
    if let Some(s) = &snap.settings {
        for (path, value) in proto::flatten(s)? {
            table.add_row(vec![format!("settings.{path}"), value]);
        }
    }
    ctx.out.print_table(table)?;
    Ok(0)
}

/// grpc.health.v1 Check; needs no token. Exit 1 when configd is not serving.
pub async fn health(config: &CliConfig, out: Out) -> Result<u8, Fail> {
    let channel = crate::client::channel(config, config.timeout).await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .what(|| "health check".to_owned())?
        .into_inner();
    let serving = reply.status() == ServingStatus::Serving;
    let status = reply.status().as_str_name();
    if out.json() {
        out.print_json(&serde_json::json!({"endpoint": config.endpoint.as_str(), "status": status}))?;
    } else {
        out.write(&format!("{}: {status}\n", config.endpoint))?;
    }
    Ok(if serving { 0 } else { crate::EXIT_FAILED })
}
