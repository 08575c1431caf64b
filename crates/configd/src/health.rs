//! configd's own observability: the `database` readiness check and the configd gauges
//! (config revision, mailboxes by state), refreshed by one query round every few seconds.

use std::time::Duration;

use deskmail_runtime::CancellationToken;
use deskmail_telemetry::ReadyFlag;

use crate::state::AppState;

/// How often the store is checked and the gauges refreshed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Checks the store now and then every [`CHECK_INTERVAL`] until `shutdown`: `database` is
/// ready while the store answers, unready with the error while it does not.
pub fn spawn_store_check(
    state: AppState,
    database: ReadyFlag,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    database.spawn_probe(CHECK_INTERVAL, shutdown, move || {
        let state = state.clone();
        async move {
            check(&state).await.map_err(|e| {
                tracing::warn!(error = %e, "The config store does not answer.");
                e.to_string()
            })
        }
    })
}

async fn check(state: &AppState) -> Result<(), crate::store::StoreError> {
    let revision = state.store.revision().await?;
    deskmail_telemetry::configd::config_revision(revision);
    let mut inbound = [0u64; 4];
    let mut outbound = [0u64; 4];
    for s in state.store.statuses().await? {
        let counts = if s.direction == deskmail_proto::v1::Direction::Outbound as i32 {
            &mut outbound
        } else {
            &mut inbound
        };
        if let Some(slot) = usize::try_from(s.state).ok().and_then(|i| counts.get_mut(i)) {
            *slot += 1;
        }
    }
    deskmail_telemetry::configd::mailboxes("inbound", inbound);
    deskmail_telemetry::configd::mailboxes("outbound", outbound);
    Ok(())
}
