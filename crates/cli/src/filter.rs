//! `deskmailctl filter ...`: postmaster filters, listed in evaluation order.

use clap::{Args, Subcommand};
use comfy_table::Cell;
use deskmail_proto::v1 as pb;

use crate::client::Api;
use crate::crud::{self, Ctx, DeleteArgs, ListArgs, Names, Page, Resource, resource_calls};
use crate::fail::Fail;
use crate::patch::{JsonArg, Patch, boolish};

impl Resource for pb::Filter {
    const KIND: &'static str = "filter";
    const ITEMS: &'static str = "filters";
    const HEADER: &'static [&'static str] =
        &["POSITION", "NAME", "ENABLED", "HEADER", "PATTERN", "ACTION", "STOP", "ID"];

    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn row(&self, names: &Names) -> Vec<Cell> {
        let mut action = Vec::new();
        if let Some(a) = &self.action {
            if !a.set_queue_id.is_empty() {
                action.push(format!("queue={}", names.queue(&a.set_queue_id)));
            }
            if a.set_priority != 0 {
                action.push(format!("priority={}", a.set_priority));
            }
            if a.ignore {
                action.push("ignore".to_owned());
            }
        }
        vec![
            Cell::new(self.position),
            Cell::new(&self.name),
            crud::yes_no_cell(self.enabled.unwrap_or(true)),
            Cell::new(&self.header),
            Cell::new(&self.pattern),
            Cell::new(if action.is_empty() { "-".to_owned() } else { action.join(" ") }),
            crud::yes_no_cell(self.stop),
            Cell::new(&self.id),
        ]
    }
    resource_calls!(
        filters,
        list_filters,
        filters,
        get_filter,
        create_filter,
        CreateFilterRequest,
        update_filter,
        UpdateFilterRequest,
        filter,
        delete_filter
    );
}

#[derive(Debug, Subcommand)]
pub enum FilterCommand {
    /// List the filters in evaluation order (position, then name).
    List(ListArgs),
    /// Show one filter.
    Get {
        /// Id or name.
        name: String,
    },
    /// Create a filter: when HEADER matches PATTERN, apply the action.
    Create(FilterFields),
    /// Change the fields whose flags are given (and only those).
    Update {
        /// Id or name.
        #[arg(value_name = "NAME")]
        target: String,
        #[command(flatten)]
        fields: FilterFields,
    },
    /// Delete a filter.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct FilterFields {
    /// The filter's unique name.
    #[arg(long)]
    name: Option<String>,
    /// Evaluation order; lower runs first.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    position: Option<i32>,
    /// Header name to match (Subject, From, X-Spam-Flag).
    #[arg(long, value_name = "NAME")]
    header: Option<String>,
    /// Regular expression (Rust regex syntax) matched against the decoded header value.
    #[arg(long, value_name = "REGEX")]
    pattern: Option<String>,
    /// Action: move the mail to this queue (name or id; '' to not set one).
    #[arg(long, value_name = "QUEUE")]
    set_queue: Option<String>,
    /// Action: set the priority (1-5; 0 leaves it).
    #[arg(long, value_name = "N")]
    set_priority: Option<u32>,
    /// Action: drop the mail (no ticket). `--ignore=false` to turn off.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish())]
    ignore: Option<bool>,
    /// Stop evaluating further filters after a match. `--stop=false` to turn off.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish())]
    stop: Option<bool>,
    /// Whether the filter runs (default true on create).
    #[arg(long, value_name = "BOOL", value_parser = boolish())]
    enabled: Option<bool>,
    #[command(flatten)]
    json: JsonArg,
}

impl FilterFields {
    async fn patch(self, api: &Api) -> Result<Patch<pb::Filter>, Fail> {
        let mut p = Patch::<pb::Filter>::new(&self.json)?;
        p.set("name", self.name, |f, v| f.name = v);
        p.set("position", self.position, |f, v| f.position = v);
        p.set("header", self.header, |f, v| f.header = v);
        p.set("pattern", self.pattern, |f, v| f.pattern = v);
        p.set("stop", self.stop, |f, v| f.stop = v);
        p.set("enabled", self.enabled, |f, v| f.enabled = Some(v));
        if let Some(q) = self.set_queue {
            let id = crud::resolve::<pb::Queue>(api, "--set-queue", &q).await?;
            p.set("action.set_queue_id", Some(id), |f, v| f.action.get_or_insert_default().set_queue_id = v);
        }
        p.set("action.set_priority", self.set_priority, |f, v| {
            f.action.get_or_insert_default().set_priority = v;
        });
        p.set("action.ignore", self.ignore, |f, v| f.action.get_or_insert_default().ignore = v);
        Ok(p)
    }
}

pub async fn run_filter(ctx: &Ctx, command: FilterCommand) -> Result<u8, Fail> {
    match command {
        FilterCommand::List(args) => crud::list::<pb::Filter>(ctx, &args).await,
        FilterCommand::Get { name } => crud::get::<pb::Filter>(ctx, &name).await,
        FilterCommand::Create(fields) => crud::create(ctx, fields.patch(&ctx.api).await?).await,
        FilterCommand::Update { target, fields } => {
            crud::update(ctx, &target, fields.patch(&ctx.api).await?).await
        }
        FilterCommand::Delete(args) => crud::delete::<pb::Filter>(ctx, &args).await,
    }
}
