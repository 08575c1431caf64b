//! Deleting a resource others refer to. A mailbox used as an outbound box by contracts,
//! companies or the settings is refused with the users named; with `force` they fall back
//! (contract -> company -> default) because their reference is cleared. A company with
//! contracts is refused; with `force` its contracts go with it. A queue in use is always
//! refused: mail would have nowhere to go, so the admin reassigns first.

use deskmail_proto::v1 as pb;
use tonic::Status;

use super::crud::{decode, find_row, row_of, write};
use super::errors::store_error;
use crate::fieldmask;
use crate::resource::{Kind, Resource, quote};
use crate::state::{AppState, now_micros};
use crate::store::Op;

struct User {
    kind: Kind,
    id: String,
    name: String,
    field: &'static str,
}

/// How many of the resources in the way a refusal names.
const NAMED_USERS: usize = 10;

pub async fn delete<T: Resource>(state: &AppState, req: &pb::DeleteRequest) -> Result<(), Status> {
    let target = find_row::<T>(state, &req.id).await?;
    let users = users_of(state, &target.id).await?;
    let mut ops = Vec::new();
    if !users.is_empty() {
        // The first few users by name: the status goes back in a header of bounded size.
        let mut named = users
            .iter()
            .take(NAMED_USERS)
            .map(|u| format!("{} {} ({})", u.kind.as_str(), quote(&u.name), u.field))
            .collect::<Vec<_>>()
            .join(", ");
        if users.len() > NAMED_USERS {
            named.push_str(&format!(" and {} more", users.len() - NAMED_USERS));
        }
        let refuse = |hint: &str| {
            Status::failed_precondition(format!(
                "{} {:?} is used by {named}; {hint}",
                T::KIND.as_str(),
                target.name
            ))
        };
        match (T::KIND, req.force) {
            (Kind::Queue, _) => return Err(refuse("point them at another queue first")),
            (_, false) => return Err(refuse("pass force to delete anyway")),
            (Kind::Company, true) => {
                ops.extend(users.iter().map(|u| Op::Delete { id: u.id.clone() }));
            }
            (_, true) => {
                for u in &users {
                    ops.push(clear_reference(state, u).await?);
                }
            }
        }
    }
    ops.push(Op::Delete { id: target.id });
    write(state, ops).await
}

async fn users_of(state: &AppState, id: &str) -> Result<Vec<User>, Status> {
    let mut users = Vec::new();
    collect::<pb::Mailbox>(state, id, &mut users).await?;
    collect::<pb::SystemAddress>(state, id, &mut users).await?;
    collect::<pb::Company>(state, id, &mut users).await?;
    collect::<pb::Contract>(state, id, &mut users).await?;
    collect::<pb::Filter>(state, id, &mut users).await?;
    collect::<pb::Settings>(state, id, &mut users).await?;
    Ok(users)
}

async fn collect<T: Resource>(state: &AppState, id: &str, users: &mut Vec<User>) -> Result<(), Status> {
    for row in state.store.all(T::KIND.as_str()).await.map_err(store_error)? {
        let item: T = decode(&row)?;
        for r in item.references().into_iter().filter(|r| r.id == id) {
            users.push(User { kind: T::KIND, id: row.id.clone(), name: row.name.clone(), field: r.field });
        }
    }
    Ok(())
}

async fn clear_reference(state: &AppState, user: &User) -> Result<Op, Status> {
    match user.kind {
        Kind::Company => clear::<pb::Company>(state, user).await,
        Kind::Contract => clear::<pb::Contract>(state, user).await,
        Kind::Settings => clear::<pb::Settings>(state, user).await,
        Kind::Mailbox => clear::<pb::Mailbox>(state, user).await,
        Kind::SystemAddress => clear::<pb::SystemAddress>(state, user).await,
        Kind::Filter => clear::<pb::Filter>(state, user).await,
        Kind::Queue => clear::<pb::Queue>(state, user).await,
    }
}

async fn clear<T: Resource>(state: &AppState, user: &User) -> Result<Op, Status> {
    let row = find_row::<T>(state, &user.id).await?;
    let item: T = decode(&row)?;
    let cleared = fieldmask::apply(&item, &T::default(), &[user.field.to_owned()])
        .map_err(|v| Status::internal(format!("cannot clear {}: {v:?}", user.field)))?;
    Ok(Op::Put { row: row_of(&cleared, row.created_at, now_micros()), secrets: Vec::new() })
}
