//! List, get, create, update and delete, written once for every resource kind.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deskmail_proto::v1 as pb;
use tonic::Status;

use super::errors::{bad_request, store_error};
use crate::fieldmask;
use crate::resource::{Kind, Resource, Violation, quote};
use crate::state::{AppState, now_micros, timestamp};
use crate::store::{Op, resource};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
    pub total_size: i32,
}

/// Reads are served from the current snapshot, which every write refreshes before it
/// answers (and which follows writes of other configd instances within a second): no
/// database round trip on the hot read path.
pub async fn list<T: Resource>(state: &AppState, req: &pb::ListRequest) -> Result<Page<T>, Status> {
    if req.page_size < 0 {
        return Err(bad_request(vec![("page_size".into(), "must not be negative".into())]));
    }
    let size = match usize::try_from(req.page_size).unwrap_or(0) {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let after = if req.page_token.is_empty() { None } else { Some(decode_token(&req.page_token)?) };
    let snapshot = state.snapshots.borrow().clone();
    let all = T::in_snapshot(&snapshot.admin);
    let start = match &after {
        None => 0,
        Some((sort_key, id)) => all.partition_point(|item| {
            (item.sort_key().as_str(), item.id()) <= (sort_key.as_str(), id.as_str())
        }),
    };
    let items: Vec<T> = all[start..].iter().take(size).cloned().collect();
    let more = all.len() > start + items.len();
    let next_page_token = match (more, items.last()) {
        (true, Some(last)) => encode_token(&last.sort_key(), last.id()),
        _ => String::new(),
    };
    Ok(Page { items, next_page_token, total_size: i32::try_from(all.len()).unwrap_or(i32::MAX) })
}

pub async fn get<T: Resource>(state: &AppState, key: &str) -> Result<T, Status> {
    let snapshot = state.snapshots.borrow().clone();
    let all = T::in_snapshot(&snapshot.admin);
    all.iter()
        .find(|item| item.id() == key)
        .or_else(|| all.iter().find(|item| item.name() == key))
        .cloned()
        .ok_or_else(|| not_found::<T>(key))
}

fn not_found<T: Resource>(key: &str) -> Status {
    Status::not_found(format!("no {} with id or name {}", T::KIND.as_str(), quote(key)))
}

/// No id or name contains NUL (ids are UUIDs, names refuse control characters), and
/// PostgreSQL refuses NUL in text parameters: such a key is not looked up.
fn can_exist(key: &str) -> bool {
    !key.contains('\0')
}

pub async fn create<T: Resource>(state: &AppState, mut item: T) -> Result<T, Status> {
    item.defaults();
    let id = if T::KIND == Kind::Settings { "settings".to_owned() } else { uuid::Uuid::now_v7().to_string() };
    item.set_id(id.clone());
    let mut violations = prefixed::<T>(item.validate());
    violations.extend(check_references(state, &item).await?);
    if !violations.is_empty() {
        return Err(bad_request(violations));
    }
    let secrets = seal_secrets(state, &id, &mut item)?;
    let now = now_micros();
    item.set_times(timestamp(now), timestamp(now));
    write(state, vec![Op::Put { row: row_of(&item, now, now), secrets }]).await?;
    get(state, &id).await
}

pub async fn update<T: Resource>(
    state: &AppState,
    patch: T,
    mask: Option<prost_types::FieldMask>,
) -> Result<T, Status> {
    let key = if T::KIND == Kind::Settings { "settings" } else { patch.id() };
    if key.is_empty() {
        return Err(bad_request(vec![(format!("{}.id", T::FIELD), "is required".into())]));
    }
    let row = find_row::<T>(state, key).await?;
    let stored = admin_view::<T>(state, &row).await?;
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    let mut merged = fieldmask::apply(&stored, &patch, &paths).map_err(bad_request)?;
    merged.set_id(row.id.clone());
    // Secrets: a named path (or a parent of it) sets or clears; without a mask, a value sets.
    let mut patch = patch;
    let changes: Vec<(&'static str, Option<String>)> = patch
        .secret_fields()
        .into_iter()
        .filter_map(|(path, value)| {
            let named = paths.iter().any(|p| path == p || path.starts_with(&format!("{p}.")));
            match (named, value.is_empty()) {
                (true, true) => Some((path, None)),
                (_, false) if named || paths.is_empty() => Some((path, Some(std::mem::take(value)))),
                _ => None,
            }
        })
        .collect();
    for (path, value) in &changes {
        merged.mark_secret(path, value.is_some());
    }
    for (_, value) in merged.secret_fields() {
        value.clear();
    }
    let mut violations = prefixed::<T>(merged.validate());
    violations.extend(check_references(state, &merged).await?);
    if !violations.is_empty() {
        return Err(bad_request(violations));
    }
    let mut secrets = Vec::new();
    for (path, value) in changes {
        let sealed = match value {
            Some(v) => {
                Some(state.secrets.seal(&row.id, path, &v).map_err(|e| Status::internal(e.to_string()))?)
            }
            None => None,
        };
        secrets.push((path.to_owned(), sealed));
    }
    let now = now_micros();
    merged.set_times(timestamp(row.created_at), timestamp(now));
    write(state, vec![Op::Put { row: row_of(&merged, row.created_at, now), secrets }]).await?;
    get(state, &row.id).await
}

/// Finds a resource row by id or name, or `NOT_FOUND` naming the kind.
pub async fn find_row<T: Resource>(state: &AppState, key: &str) -> Result<resource::Model, Status> {
    if !can_exist(key) {
        return Err(not_found::<T>(key));
    }
    state.store.find(T::KIND.as_str(), key).await.map_err(store_error)?.ok_or_else(|| not_found::<T>(key))
}

pub fn decode<T: Resource>(row: &resource::Model) -> Result<T, Status> {
    T::decode(row.data.as_slice())
        .map_err(|e| Status::internal(format!("stored {} {} does not decode: {e}", row.kind, row.id)))
}

/// The resource as admins see it: no secret values, `has_*` flags set.
pub async fn admin_view<T: Resource>(state: &AppState, row: &resource::Model) -> Result<T, Status> {
    let mut item: T = decode(row)?;
    let present: HashSet<String> =
        state.store.secrets_of(&row.id).await.map_err(store_error)?.into_iter().map(|s| s.field).collect();
    mark_all(&mut item, &present);
    item.set_times(timestamp(row.created_at), timestamp(row.updated_at));
    Ok(item)
}

pub fn mark_all<T: Resource>(item: &mut T, present: &HashSet<String>) {
    let paths: Vec<&'static str> = item.secret_fields().into_iter().map(|(p, _)| p).collect();
    for path in paths {
        item.mark_secret(path, present.contains(path));
    }
}

pub fn row_of<T: Resource>(item: &T, created: i64, updated: i64) -> resource::Model {
    let mut clean = item.clone();
    for (_, value) in clean.secret_fields() {
        value.clear();
    }
    clean.set_times(None, None);
    mark_all(&mut clean, &HashSet::new());
    resource::Model {
        id: item.id().to_owned(),
        kind: T::KIND.as_str().to_owned(),
        name: item.name().to_owned(),
        sort_key: item.sort_key(),
        data: prost::Message::encode_to_vec(&clean),
        created_at: created,
        updated_at: updated,
    }
}

fn seal_secrets<T: Resource>(
    state: &AppState,
    id: &str,
    item: &mut T,
) -> Result<Vec<(String, Option<crate::secrets::Sealed>)>, Status> {
    let mut out = Vec::new();
    for (path, value) in item.secret_fields() {
        if !value.is_empty() {
            let sealed = state.secrets.seal(id, path, value).map_err(|e| Status::internal(e.to_string()))?;
            out.push((path.to_owned(), Some(sealed)));
            value.clear();
        }
    }
    Ok(out)
}

async fn check_references<T: Resource>(state: &AppState, item: &T) -> Result<Vec<Violation>, Status> {
    let mut violations = Vec::new();
    for r in item.references() {
        let found = if can_exist(&r.id) {
            state.store.find(r.kind.as_str(), &r.id).await.map_err(store_error)?
        } else {
            None
        };
        if found.is_none_or(|row| row.id != r.id) {
            violations.push((
                format!("{}.{}", T::FIELD, r.field),
                format!("no {} with id {}", r.kind.as_str(), quote(&r.id)),
            ));
        }
    }
    Ok(violations)
}

fn prefixed<T: Resource>(violations: Vec<Violation>) -> Vec<Violation> {
    violations.into_iter().map(|(f, d)| (format!("{}.{f}", T::FIELD), d)).collect()
}

/// Applies the writes and publishes the new snapshot before answering, so that a client
/// which reads after writing sees its change, and watchers get it at once.
pub async fn write(state: &AppState, ops: Vec<Op>) -> Result<(), Status> {
    state.store.apply(ops).await.map_err(store_error)?;
    super::snapshot::refresh(state).await
}

fn encode_token(sort_key: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{sort_key}\u{0}{id}"))
}

fn decode_token(token: &str) -> Result<(String, String), Status> {
    let invalid = || bad_request(vec![("page_token".into(), "is not a token this service gave out".into())]);
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (sort_key, id) = text.split_once('\u{0}').ok_or_else(invalid)?;
    Ok((sort_key.to_owned(), id.to_owned()))
}
