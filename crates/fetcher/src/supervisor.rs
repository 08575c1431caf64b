//! Which mailboxes this fetcher polls: those configd leases to it that are enabled inbound
//! boxes in the last config snapshot. One task per box; a changed box is restarted (and so
//! polled at once), a removed, disabled or lost one is stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deskmail_configclient::Snapshot;
use deskmail_proto::v1 as pb;
use deskmail_runtime::{CancellationToken, TaskTracker};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings::{is_fetchable, refresh_token_of, restart_key};
use crate::worker::{Shared, run_mailbox};

struct Running {
    key: pb::Mailbox,
    cancel: CancellationToken,
    refresh: watch::Sender<Option<String>>,
    handle: JoinHandle<()>,
}

/// The set of running mailbox tasks.
pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    running: HashMap<String, Running>,
    leased: HashSet<String>,
}

impl Supervisor {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, tracker: TaskTracker::new(), running: HashMap::new(), leased: HashSet::new() }
    }

    /// Renews and takes leases; keeps the old set when configd cannot be reached (its
    /// leases cannot be handed to anyone else while it is away either).
    pub(crate) async fn renew_leases(&mut self, ttl: Duration) -> bool {
        match self.shared.client.acquire_leases(&self.shared.holder, ttl, 0).await {
            Ok(leases) => {
                let now: HashSet<String> = leases.into_iter().map(|l| l.mailbox_id).collect();
                if now != self.leased {
                    tracing::info!(leases = now.len(), "Fetch leases changed.");
                }
                self.leased = now;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, held = self.leased.len(), "Could not renew fetch leases; keeping the ones held.");
                false
            }
        }
    }

    /// Starts, restarts and stops tasks to match the snapshot and the leases.
    pub(crate) fn reconcile(&mut self, snapshot: Option<&Snapshot>) {
        let Some(snapshot) = snapshot else { return };
        let wanted: HashMap<&str, &pb::Mailbox> = snapshot
            .mailboxes
            .iter()
            .filter(|m| is_fetchable(m) && self.leased.contains(&m.id))
            .map(|m| (m.id.as_str(), m))
            .collect();
        let gone: Vec<String> =
            self.running.keys().filter(|id| !wanted.contains_key(id.as_str())).cloned().collect();
        for id in gone {
            if let Some(r) = self.running.remove(&id) {
                tracing::info!(mailbox_id = %id, "Mailbox no longer ours (lease, disabled or deleted); stopping it.");
                r.cancel.cancel();
            }
        }
        for (id, mailbox) in wanted {
            let key = restart_key(mailbox);
            let token = refresh_token_of(mailbox);
            let previous = match self.running.remove(id) {
                Some(r) if r.key == key => {
                    r.refresh.send_if_modified(|t| {
                        let changed = *t != token;
                        t.clone_from(&token);
                        changed
                    });
                    self.running.insert(id.to_owned(), r);
                    continue;
                }
                Some(r) => {
                    tracing::info!(mailbox = %mailbox.name, "Mailbox settings changed; restarting it.");
                    r.cancel.cancel();
                    Some(r.handle)
                }
                None => None,
            };
            let cancel = CancellationToken::new();
            let (tx, rx) = watch::channel(token);
            let handle = self.tracker.spawn(run_mailbox(
                self.shared.clone(),
                mailbox.clone(),
                rx,
                cancel.clone(),
                previous,
            ));
            self.running.insert(id.to_owned(), Running { key, cancel, refresh: tx, handle });
        }
    }

    /// Stops every task (each finishes what it published), waiting at most `grace`; then
    /// gives the leases back so another fetcher takes the boxes at once.
    pub(crate) async fn stop(mut self, grace: Duration) {
        for (_, r) in self.running.drain() {
            r.cancel.cancel();
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                "Mailbox tasks did not finish within the shutdown grace; stopping anyway."
            );
        }
        match self.shared.client.release_leases(&self.shared.holder, Vec::new()).await {
            Ok(()) => tracing::info!("Released the fetch leases."),
            Err(e) => {
                tracing::warn!(error = %e, "Could not release the fetch leases; they expire on their own.")
            }
        }
    }
}
