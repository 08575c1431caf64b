//! Follows configd's `Watch` stream: the whole config, then again after every change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deskmail_proto::v1 as pb;
use deskmail_runtime::CancellationToken;
use tokio::sync::watch;

use crate::ConfigClient;

/// A config snapshot as the daemons share it.
pub type Snapshot = Arc<pb::ConfigSnapshot>;

/// The last good config from configd, kept current by a background task.
///
/// While configd is away the last snapshot stays (the daemons go on with it); the task
/// reconnects with exponential backoff (0.2 s doubling to 10 s) and resumes from the revision
/// it has, so a reconnect to an unchanged configd sends nothing new.
#[derive(Clone)]
pub struct ConfigWatcher {
    rx: watch::Receiver<Option<Snapshot>>,
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("revision", &self.current().map(|s| s.revision))
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl ConfigWatcher {
    /// configd as a readiness check sees it: `Ok` while the Watch stream is open and a
    /// snapshot is in, else why not. `working` says what the daemon does on its last snapshot
    /// meanwhile ("polling", "routing", "sending").
    pub fn readiness(&self, working: &str) -> Result<(), String> {
        match (self.is_connected(), self.current().is_some()) {
            (true, true) => Ok(()),
            (_, false) => Err("no config from configd yet".to_owned()),
            (false, true) => Err(format!("config watch disconnected; {working} on the last snapshot")),
        }
    }

    /// Starts following configd until `shutdown` is cancelled.
    pub fn spawn(client: ConfigClient, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(None);
        let connected = Arc::new(AtomicBool::new(false));
        tokio::spawn(follow(client, tx, connected.clone(), shutdown));
        Self { rx, connected }
    }

    /// The last snapshot, if one ever arrived.
    pub fn current(&self) -> Option<Snapshot> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every new snapshot (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<Option<Snapshot>> {
        self.rx.clone()
    }

    /// True while the Watch stream is open.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Waits for the first snapshot; `None` when `shutdown` came first.
    pub async fn first_snapshot(&self, shutdown: &CancellationToken) -> Option<Snapshot> {
        let mut rx = self.rx.clone();
        tokio::select! {
            _ = shutdown.cancelled() => None,
            r = rx.wait_for(Option::is_some) => r.ok().and_then(|s| s.clone()),
        }
    }
}

const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(10);

async fn follow(
    client: ConfigClient,
    tx: watch::Sender<Option<Snapshot>>,
    connected: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut delay = FIRST_DELAY;
    let mut warned = false;
    loop {
        let known = tx.borrow().as_ref().map(|s| s.revision).unwrap_or(0);
        let mut watch_client = client.watch_client();
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch_client.watch(pb::WatchRequest { known_revision: known }) => r,
        };
        match opened {
            Ok(response) => {
                let mut stream = response.into_inner();
                connected.store(true, Ordering::Relaxed);
                if warned {
                    tracing::info!(configd = client.url(), "configd is back; following its config again.");
                }
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        n = stream.message() => n,
                    };
                    match next {
                        Ok(Some(snapshot)) => {
                            delay = FIRST_DELAY;
                            tracing::debug!(revision = snapshot.revision, "Config snapshot.");
                            tx.send_replace(Some(Arc::new(snapshot)));
                        }
                        Ok(None) => {
                            tracing::warn!(
                                configd = client.url(),
                                "configd closed the Watch stream; reconnecting."
                            );
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(
                                configd = client.url(),
                                code = ?status.code(),
                                error = status.message(),
                                "configd Watch stream failed; reconnecting and keeping the last config."
                            );
                            break;
                        }
                    }
                }
                connected.store(false, Ordering::Relaxed);
                warned = true;
            }
            Err(status) => {
                connected.store(false, Ordering::Relaxed);
                if status.code() == tonic::Code::Unauthenticated
                    || status.code() == tonic::Code::PermissionDenied
                {
                    tracing::error!(
                        configd = client.url(),
                        error = status.message(),
                        "configd refused config_service.token; retrying."
                    );
                } else if !warned {
                    tracing::warn!(
                        configd = client.url(),
                        code = ?status.code(),
                        error = status.message(),
                        "Cannot reach configd; retrying (the last config stays in use)."
                    );
                }
                warned = true;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}
