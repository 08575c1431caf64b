//! What every service shares: the store, the secrets box, and the snapshot channel that
//! Watch streams follow.

use std::sync::Arc;

use deskmail_proto::v1 as pb;
use tokio::sync::watch;

use crate::secrets::SecretBox;
use crate::store::Store;

/// The config at one revision, as admins see it and as daemons see it (secrets filled in).
#[derive(Debug, Default)]
pub struct Snapshots {
    pub revision: u64,
    pub admin: pb::ConfigSnapshot,
    pub daemon: pb::ConfigSnapshot,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub secrets: SecretBox,
    pub snapshots: watch::Sender<Arc<Snapshots>>,
}

/// Microseconds since the Unix epoch: the one place configd reads the clock.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    (micros > 0).then(|| prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    })
}
