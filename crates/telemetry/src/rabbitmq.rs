//! A readiness check that follows a RabbitMQ connection's state.

use std::borrow::Borrow;
use std::time::Duration;

use lapin::Connection;
use lapin::ConnectionStatus;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ReadyFlag;

/// Sets `flag` from `connection`'s state every `every` until `shutdown`: ready while it is
/// connected and not blocked by a broker resource alarm, else unready with the state as the
/// reason. `connection` may be an `Arc<Connection>` the daemon shares.
///
/// Meant for a connection that lives as long as the daemon (lapin's auto-recovery keeps the
/// same object). A daemon that reconnects by opening a new `Connection` sets its flag itself.
pub fn spawn_connection_check<C>(
    connection: C,
    flag: ReadyFlag,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    C: Borrow<Connection> + Send + Sync + 'static,
{
    flag.spawn_probe(every, shutdown, move || {
        let state = unready_reason(connection.borrow().status()).map_or(Ok(()), |why| Err(why.to_owned()));
        async move { state }
    })
}

/// Why a connection in this state cannot carry work, or `None` when it can.
fn unready_reason(status: &ConnectionStatus) -> Option<&'static str> {
    if status.connected() {
        status.blocked().then_some("blocked by the broker (resource alarm: memory or disk)")
    } else if status.reconnecting() {
        Some("connection lost, reconnecting")
    } else if status.connecting() {
        Some("connecting")
    } else if status.errored() {
        Some("connection closed on an error")
    } else if status.closing() || status.closed() {
        Some("connection closed")
    } else {
        Some("not connected")
    }
}
