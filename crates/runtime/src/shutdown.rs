use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Registers SIGTERM and SIGINT handlers and returns a token that the first signal cancels.
/// A second signal exits the process at once (exit code 130), for an operator who does not
/// want to wait for the drain. Must be called inside a tokio runtime.
///
/// Returns an error when the handlers cannot be installed (no signal support).
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "Shutdown requested; finishing work in flight.");
        cancel.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "Second signal: exiting at once.");
        std::process::exit(130);
    });
    Ok(token)
}

/// Waits until the token is cancelled. A named helper so daemons read as what they do.
pub async fn wait_for_shutdown(token: &CancellationToken) {
    token.cancelled().await;
}
