//! List, get, create, update and delete, written once for every resource kind; paging,
//! names for ids in tables, and resolving names given in flags to ids.

use std::collections::HashMap;

use clap::Args;
use comfy_table::Cell;
use deskmail_proto::v1 as pb;
use tonic::{Code, Status};

use crate::client::Api;
use crate::fail::{CallContext, Fail};
use crate::output::Out;
use crate::patch::Patch;
use crate::proto::{self, Proto};

/// What every command gets: the connection and the output settings.
pub struct Ctx {
    pub api: Api,
    pub out: Out,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
    pub total_size: i32,
}

/// A resource kind with the usual List/Get/Create/Update/Delete calls.
pub trait Resource: Proto {
    /// Singular, for messages (`system address`).
    const KIND: &'static str;
    /// The list field of its List response (`system_addresses`), for paged JSON.
    const ITEMS: &'static str;
    /// The list table's columns.
    const HEADER: &'static [&'static str];

    fn id(&self) -> &str;
    fn set_id(&mut self, id: String);
    fn row(&self, names: &Names) -> Vec<Cell>;

    async fn list(api: &Api, request: pb::ListRequest) -> Result<Page<Self>, Status>;
    async fn get(api: &Api, id: String) -> Result<Self, Status>;
    async fn create(api: &Api, item: Self) -> Result<Self, Status>;
    async fn update(api: &Api, item: Self, paths: Vec<String>) -> Result<Self, Status>;
    async fn delete(api: &Api, id: String, force: bool) -> Result<(), Status>;
}

/// The calls of a `Resource` impl, from the service's method names.
macro_rules! resource_calls {
    ($client:ident, $list:ident, $items:ident, $get:ident, $create:ident, $CreateReq:ident,
     $update:ident, $UpdateReq:ident, $field:ident, $delete:ident) => {
        async fn list(
            api: &$crate::client::Api,
            request: pb::ListRequest,
        ) -> Result<Page<Self>, tonic::Status> {
            let r = api.$client().$list(request).await?.into_inner();
            Ok(Page { items: r.$items, next_page_token: r.next_page_token, total_size: r.total_size })
        }
        async fn get(api: &$crate::client::Api, id: String) -> Result<Self, tonic::Status> {
            Ok(api.$client().$get(pb::GetRequest { id }).await?.into_inner())
        }
        async fn create(api: &$crate::client::Api, item: Self) -> Result<Self, tonic::Status> {
            Ok(api.$client().$create(pb::$CreateReq { $field: Some(item) }).await?.into_inner())
        }
        async fn update(
            api: &$crate::client::Api,
            item: Self,
            paths: Vec<String>,
        ) -> Result<Self, tonic::Status> {
            let request =
                pb::$UpdateReq { $field: Some(item), update_mask: Some(prost_types::FieldMask { paths }) };
            Ok(api.$client().$update(request).await?.into_inner())
        }
        async fn delete(api: &$crate::client::Api, id: String, force: bool) -> Result<(), tonic::Status> {
            api.$client().$delete(pb::DeleteRequest { id, force }).await?;
            Ok(())
        }
    };
}
pub(crate) use resource_calls;

/// `--page-size` / `--page-token`: one page instead of all.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Fetch one page of at most N (default: follow the page tokens and list everything).
    #[arg(long, value_name = "N")]
    pub page_size: Option<i32>,
    /// Fetch the page after this token (printed after a paged listing).
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Id or name.
    pub name: String,
    /// Delete even when other resources use it (they fall back as documented).
    #[arg(long)]
    pub force: bool,
}

/// Every item, following `next_page_token`.
pub async fn list_all<T: Resource>(api: &Api) -> Result<Vec<T>, Fail> {
    let mut items = Vec::new();
    let mut token = String::new();
    // A bound, in case a server hands out the same token forever.
    for _ in 0..100_000 {
        let request = pb::ListRequest { page_size: 500, page_token: token.clone() };
        let page = T::list(api, request).await.what(|| format!("list {}", plural(T::KIND)))?;
        items.extend(page.items);
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    Ok(items)
}

fn plural(kind: &str) -> String {
    match kind.strip_suffix('y') {
        Some(stem) if !kind.ends_with("ey") => format!("{stem}ies"),
        _ if kind.ends_with("ss") || kind.ends_with('x') => format!("{kind}es"),
        _ => format!("{kind}s"),
    }
}

pub async fn list<T: Resource>(ctx: &Ctx, args: &ListArgs) -> Result<u8, Fail> {
    if args.page_size.is_none() && args.page_token.is_none() {
        let items = list_all::<T>(&ctx.api).await?;
        return print_list(ctx, &items).await;
    }
    let request = pb::ListRequest {
        page_size: args.page_size.unwrap_or(0),
        page_token: args.page_token.clone().unwrap_or_default(),
    };
    let page = T::list(&ctx.api, request).await.what(|| format!("list {}", plural(T::KIND)))?;
    if ctx.out.json() {
        let mut object = serde_json::Map::new();
        object.insert(T::ITEMS.to_owned(), proto::list_json(&page.items)?);
        object.insert("next_page_token".to_owned(), page.next_page_token.into());
        object.insert("total_size".to_owned(), page.total_size.into());
        return ctx.out.print_json(&serde_json::Value::Object(object)).map(|()| 0);
    }
    print_list(ctx, &page.items).await?;
    if !page.next_page_token.is_empty() {
        eprintln!(
            "{} of {} shown; next page: --page-token {}",
            page.items.len(),
            page.total_size,
            page.next_page_token
        );
    }
    Ok(0)
}

async fn print_list<T: Resource>(ctx: &Ctx, items: &[T]) -> Result<u8, Fail> {
    if ctx.out.json() {
        return ctx.out.print_json(&proto::list_json(items)?).map(|()| 0);
    }
    let names = Names::load(ctx).await;
    let mut table = ctx.out.table(T::HEADER);
    for item in items {
        table.add_row(item.row(&names));
    }
    ctx.out.print_table(table).map(|()| 0)
}

pub async fn get<T: Resource>(ctx: &Ctx, name: &str) -> Result<u8, Fail> {
    let item = T::get(&ctx.api, name.to_owned()).await.what(|| format!("get {} {name:?}", T::KIND))?;
    show(ctx, &item).await
}

pub async fn show<T: Proto>(ctx: &Ctx, item: &T) -> Result<u8, Fail> {
    let names = Names::load(ctx).await;
    ctx.out.print_message(item, &names).map(|()| 0)
}

pub async fn create<T: Resource>(ctx: &Ctx, patch: Patch<T>) -> Result<u8, Fail> {
    let item = T::create(&ctx.api, patch.message).await.what(|| format!("create {}", T::KIND))?;
    show(ctx, &item).await
}

pub async fn update<T: Resource>(ctx: &Ctx, name: &str, mut patch: Patch<T>) -> Result<u8, Fail> {
    patch.require_changes()?;
    patch.message.set_id(name.to_owned());
    let item = T::update(&ctx.api, patch.message, patch.paths)
        .await
        .what(|| format!("update {} {name:?}", T::KIND))?;
    show(ctx, &item).await
}

pub async fn delete<T: Resource>(ctx: &Ctx, args: &DeleteArgs) -> Result<u8, Fail> {
    let name = &args.name;
    T::delete(&ctx.api, name.clone(), args.force).await.what(|| format!("delete {} {name:?}", T::KIND))?;
    if ctx.out.json() {
        return ctx.out.print_json(&proto::to_json(&pb::DeleteResponse {})?).map(|()| 0);
    }
    ctx.out.write(&format!("deleted {} {name:?}\n", T::KIND)).map(|()| 0)
}

/// The id of the `T` a flag names (by id or name); empty stays empty (clears the reference).
pub async fn resolve<T: Resource>(api: &Api, flag: &str, value: &str) -> Result<String, Fail> {
    if value.is_empty() {
        return Ok(String::new());
    }
    match T::get(api, value.to_owned()).await {
        Ok(item) => Ok(item.id().to_owned()),
        Err(status) if status.code() == Code::NotFound => Err(Fail::Invalid {
            what: format!("unknown {}", T::KIND),
            problems: vec![(flag.to_owned(), status.message().to_owned())],
        }),
        Err(status) => Err(Fail::Call { what: format!("look up {} {value:?} for {flag}", T::KIND), status }),
    }
}

/// Names of queues, mailboxes and companies by id, to show references readably in tables.
/// Empty for JSON output, and when they cannot be listed (the ids are shown then).
#[derive(Debug, Default)]
pub struct Names {
    queues: HashMap<String, String>,
    mailboxes: HashMap<String, String>,
    companies: HashMap<String, String>,
}

impl Names {
    pub async fn load(ctx: &Ctx) -> Self {
        if ctx.out.json() {
            return Self::default();
        }
        async fn map<T: Resource>(api: &Api, name: fn(&T) -> String) -> HashMap<String, String> {
            let items = list_all::<T>(api).await.unwrap_or_default();
            items.iter().map(|i| (i.id().to_owned(), name(i))).collect()
        }
        Self {
            queues: map::<pb::Queue>(&ctx.api, |q| q.name.clone()).await,
            mailboxes: map::<pb::Mailbox>(&ctx.api, |m| m.name.clone()).await,
            companies: map::<pb::Company>(&ctx.api, |c| c.name.clone()).await,
        }
    }

    fn name(map: &HashMap<String, String>, id: &str) -> String {
        if id.is_empty() {
            return "-".to_owned();
        }
        map.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }

    pub fn queue(&self, id: &str) -> String {
        Self::name(&self.queues, id)
    }
    pub fn mailbox(&self, id: &str) -> String {
        Self::name(&self.mailboxes, id)
    }
    pub fn company(&self, id: &str) -> String {
        Self::name(&self.companies, id)
    }

    /// For a detail row: the name behind a reference field's id.
    pub fn lookup(&self, path: &str, id: &str) -> Option<&str> {
        let map = if path.ends_with("queue_id") {
            &self.queues
        } else if path.ends_with("mailbox_id") {
            &self.mailboxes
        } else if path.ends_with("company_id") {
            &self.companies
        } else {
            return None;
        };
        map.get(id).map(String::as_str)
    }
}

/// A yes/no cell.
pub fn yes_no_cell(value: bool) -> Cell {
    Cell::new(proto::yes_no(value))
}

#[cfg(test)]
mod tests {
    #[test]
    fn plurals() {
        assert_eq!(super::plural("company"), "companies");
        assert_eq!(super::plural("system address"), "system addresses");
        assert_eq!(super::plural("queue"), "queues");
        assert_eq!(super::plural("mailbox"), "mailboxes");
    }
}
