//! The config snapshot daemons watch: built from the store after every change (and when
//! another configd instance changed the shared database), published on a watch channel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deskmail_proto::v1 as pb;
use tonic::Status;

use super::crud::{decode, mark_all};
use super::errors::store_error;
use crate::resource::{Resource, default_settings};
use crate::state::{AppState, Snapshots, now_micros, timestamp};
use crate::store::resource;

/// Rebuilds the snapshots from the store and publishes them when the revision moved.
pub async fn refresh(state: &AppState) -> Result<(), Status> {
    let revision = state.store.revision().await.map_err(store_error)?;
    if revision <= state.snapshots.borrow().revision {
        return Ok(());
    }
    let snapshots = build(state).await?;
    state.snapshots.send_if_modified(|current| {
        // Concurrent refreshes: only ever move forward.
        if snapshots.revision > current.revision {
            *current = Arc::new(snapshots);
            true
        } else {
            false
        }
    });
    Ok(())
}

/// Polls the shared database's revision, for changes made through another configd.
pub async fn follow_store(state: AppState, shutdown: deskmail_runtime::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = refresh(&state).await {
                    tracing::warn!(error = %e.message(), "Cannot refresh the config snapshot.");
                }
            }
        }
    }
}

/// Builds both views of the config from one consistent read of the store.
pub async fn build(state: &AppState) -> Result<Snapshots, Status> {
    let (revision, rows, sealed) = state.store.consistent_read().await.map_err(store_error)?;
    let mut secrets: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for s in sealed {
        let sealed = crate::secrets::Sealed { nonce: s.nonce, ciphertext: s.ciphertext };
        match state.secrets.open(&s.owner_id, &s.field, &sealed) {
            Ok(value) => secrets.entry(s.owner_id).or_default().push((s.field, value)),
            Err(e) => tracing::error!(error = %e, "A stored secret does not decrypt; is this the right key?"),
        }
    }
    let (mut admin, mut daemon) = (pb::ConfigSnapshot::default(), pb::ConfigSnapshot::default());
    admin.mailboxes = kind::<pb::Mailbox>(&rows, &secrets, false)?;
    daemon.mailboxes = kind::<pb::Mailbox>(&rows, &secrets, true)?;
    let settings =
        kind::<pb::Settings>(&rows, &secrets, false)?.into_iter().next().unwrap_or_else(default_settings);
    for snap in [&mut admin, &mut daemon] {
        snap.revision = revision;
        snap.time = timestamp(now_micros());
        snap.queues = kind(&rows, &secrets, false)?;
        snap.system_addresses = kind(&rows, &secrets, false)?;
        snap.companies = kind(&rows, &secrets, false)?;
        snap.contracts = kind(&rows, &secrets, false)?;
        snap.filters = kind(&rows, &secrets, false)?;
        snap.settings = Some(settings.clone());
    }
    Ok(Snapshots { revision, admin, daemon })
}

fn kind<T: Resource>(
    rows: &[resource::Model],
    secrets: &HashMap<String, Vec<(String, String)>>,
    with_secrets: bool,
) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.kind == T::KIND.as_str()) {
        let mut item: T = decode(row)?;
        let mine = secrets.get(&row.id).map(Vec::as_slice).unwrap_or(&[]);
        let present: HashSet<String> = mine.iter().map(|(f, _)| f.clone()).collect();
        if with_secrets {
            fill_secrets(&mut item, mine);
        }
        mark_all(&mut item, &present);
        if with_secrets {
            fill_secrets(&mut item, mine);
        }
        item.set_times(timestamp(row.created_at), timestamp(row.updated_at));
        out.push(item);
    }
    // List order is decided here, not by the database's collation, so that page tokens
    // compare the same way everywhere.
    out.sort_by(|a, b| (a.sort_key(), a.id()).cmp(&(b.sort_key(), b.id())));
    Ok(out)
}

/// Secret paths whose parent message is absent (an OAuth2 block never given) are created
/// by `mark_secret`; filling twice (before and after marking) reaches both kinds of path.
fn fill_secrets<T: Resource>(item: &mut T, values: &[(String, String)]) {
    for (path, slot) in item.secret_fields() {
        if let Some((_, v)) = values.iter().find(|(p, _)| p == path) {
            *slot = v.clone();
        }
    }
}
